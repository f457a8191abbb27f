#![no_main]
//! Body: `fleetpulse_agent::fuzz::macos_profiles`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetpulse_agent::fuzz::macos_profiles(data));
