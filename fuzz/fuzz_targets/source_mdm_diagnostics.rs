#![no_main]
//! Body: `fleetpulse_agent::fuzz::mdm_diagnostics`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetpulse_agent::fuzz::mdm_diagnostics(data));
