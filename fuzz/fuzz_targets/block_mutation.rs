//! A real block with fields changed, roots recomputed and the header signed again, then validated. The body is `tinychain_fuzz_harness::block_mutation`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinychain_fuzz_harness::run("block_mutation", data);
});
