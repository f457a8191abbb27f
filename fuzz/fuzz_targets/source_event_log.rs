#![no_main]
//! Body: `fleetpulse_agent::fuzz::event_log`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetpulse_agent::fuzz::event_log(data));
