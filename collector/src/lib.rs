//! The Fleetpulse collector: receives agent telemetry over gRPC, validates it, and stores every
//! accepted item exactly once in ClickHouse.
//!
//! Entry points: [`server::start`] / [`server::serve`] run the whole collector in-process;
//! [`server::migrate`] applies migrations; [`control::ControlDb`] administers tokens and agents.
//! The exactly-once design is documented in [`control::ledger`].

pub mod config;
pub mod control;
pub mod digest;
pub mod event_view;
pub mod fuzz;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod push;
pub mod server;
pub mod store;
pub mod validate;
pub mod wire;

pub use config::Config;
pub use server::{Collector, ServeError, migrate, serve, start};
