#![no_main]
//! Body: `fleetpulse_collector::fuzz::push_gzip`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fleetpulse_collector::fuzz::push_gzip(data));
