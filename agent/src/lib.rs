//! The Fleetpulse device agent.
//!
//! Data flows one way: `sources` (pure parsers over what OS tools print) turn observations into
//! protocol messages, the `spool` keeps them durably on disk, and the `shipper` sends them to a
//! collector and deletes them only after the collector's acknowledgement.

pub mod config;
pub mod inspect;
pub mod shipper;
pub mod simulate;
pub mod sources;
pub mod spool;
