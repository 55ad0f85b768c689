#![no_main]
//! `aitrail::fuzz::sse`: see agent/src/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| aitrail::fuzz::sse(data));
