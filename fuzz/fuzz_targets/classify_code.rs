#![no_main]
//! Body: `fleetpulse_analyzer::fuzz::code`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetpulse_analyzer::fuzz::code(data));
