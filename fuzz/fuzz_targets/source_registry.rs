#![no_main]
//! Body: `fleetpulse_agent::fuzz::registry`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetpulse_agent::fuzz::registry(data));
