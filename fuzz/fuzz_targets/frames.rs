//! Frames, bare headers and raw bytes cut into pieces, read by the frame decoder and by read_frame. The body is `tinychain_fuzz_harness::frames`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinychain_fuzz_harness::run("frames", data);
});
