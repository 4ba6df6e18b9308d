//! Arbitrary bytes from an authenticated peer, decoded and stepped into a validator at the tip of a short chain. The body is `tinychain_fuzz_harness::message_step`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinychain_fuzz_harness::run("message_step", data);
});
