#![no_main]
//! Body: `fleetpulse_agent::fuzz::ndjson`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetpulse_agent::fuzz::ndjson(data));
