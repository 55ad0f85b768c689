#![no_main]
//! `aitrail::fuzz::connection`: see agent/src/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| aitrail::fuzz::connection(data));
