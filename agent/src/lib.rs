//! The Fleetpulse device agent.
//!
//! Data flows one way: `sources` (pure parsers over what OS tools print) turn observations into
//! protocol messages, the `spool` keeps them durably on disk, and the `shipper` sends them to a
//! collector and deletes them only after the collector's acknowledgement.

/// The agent version sent at registration and in heartbeats.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

pub mod collect;
pub mod config;
pub mod durable;
pub mod fuzz;
pub mod graph;
pub mod inspect;
pub mod runner;
pub mod service;
pub mod shipper;
pub mod simulate;
pub mod sources;
pub mod spool;
pub mod state;
