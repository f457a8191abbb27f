#![no_main]
//! Body: `fleetpulse_analyzer::fuzz::api_query`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetpulse_analyzer::fuzz::api_query(data));
