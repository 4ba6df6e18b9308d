//! Sequences of well-formed peer messages (valid signatures, one field changed where asked),
//! ticks and link changes, stepped into a validator from genesis. The body is
//! `tinychain_fuzz_harness::peer_session`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinychain_fuzz_harness::run("peer_session", data);
});
