//! The challenge-response after TLS: raw hello and proof bytes, or an honest exchange with one thing changed. The body is `tinychain_fuzz_harness::handshake`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinychain_fuzz_harness::run("handshake", data);
});
