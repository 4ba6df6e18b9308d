//! A block decoded from arbitrary bytes, shape-checked and validated as the next block. The body is `tinychain_fuzz_harness::block_validation`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinychain_fuzz_harness::run("block_validation", data);
});
