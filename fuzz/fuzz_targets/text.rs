//! A line a user types: address, amount, allocation, host:port, validator name, log filter. The body is `tinychain_fuzz_harness::text`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinychain_fuzz_harness::run("text", data);
});
