#![no_main]
//! `aitrail::fuzz::h2_connection`: see agent/src/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| aitrail::fuzz::h2_connection(data));
