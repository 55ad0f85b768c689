#![no_main]
//! `aitrail::fuzz::record`: see agent/src/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| aitrail::fuzz::record(data));
