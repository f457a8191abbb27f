//! Fleetpulse end-to-end tests and benchmarks.
//!
//! [`harness`] starts real servers (ClickHouse, PostgreSQL, the collector binary) as child
//! processes on private ports and directories; the suites under `tests/tests/` and the
//! benchmarks under `src/bin/` are built on it. See `harness` for the entry points.

pub mod harness;
