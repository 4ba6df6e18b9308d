//! A node's config.toml, parsed, validated and written back. The body is `tinychain_fuzz_harness::config`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinychain_fuzz_harness::run("config", data);
});
