#![no_main]
//! `aitrail::fuzz::llm_exchange`: see agent/src/fuzz.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| aitrail::fuzz::llm_exchange(data));
