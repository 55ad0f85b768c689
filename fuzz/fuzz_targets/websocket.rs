#![no_main]
//! `aitrail::fuzz::websocket`: see agent/src/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| aitrail::fuzz::websocket(data));
