#![no_main]
//! `aitrail::fuzz::hpack`: see agent/src/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| aitrail::fuzz::hpack(data));
