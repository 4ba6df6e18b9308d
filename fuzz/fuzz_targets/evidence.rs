//! Double production, double votes and surround votes built from signed objects, checked and gossiped. The body is `tinychain_fuzz_harness::evidence`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinychain_fuzz_harness::run("evidence", data);
});
