//! A wallet file's bytes, checked and, for cheap key-derivation parameters, opened. The body is `tinychain_fuzz_harness::keystore`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinychain_fuzz_harness::run("keystore", data);
});
