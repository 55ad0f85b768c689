#![no_main]
//! `aitrail::fuzz::eventstream`: see agent/src/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| aitrail::fuzz::eventstream(data));
