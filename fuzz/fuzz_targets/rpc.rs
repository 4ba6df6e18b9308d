//! JSON-RPC bodies and structured calls, parsed and answered from a real node and database. The body is `tinychain_fuzz_harness::rpc`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinychain_fuzz_harness::run("rpc", data);
});
