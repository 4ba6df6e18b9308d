//! A genesis file's text, parsed, validated and turned into the genesis state. The body is `tinychain_fuzz_harness::genesis`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinychain_fuzz_harness::run("genesis", data);
});
