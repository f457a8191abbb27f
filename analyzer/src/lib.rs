//! The Fleetpulse analyzer.
//!
//! The collector stores facts; the analyzer interprets them. `catalog` holds the knowledge base
//! of enrollment failure signals (data under `analyzer/catalog/`), `classify` maps raw signals
//! to categories with cause and remediation, `rollups` owns the ClickHouse rollups and their
//! migrations, `query` answers fleet-wide questions (classification applied at query time),
//! `insights` finds problems before they fail, `alerts` watches for failure spikes and
//! threshold breaches, `keys` holds API keys, `api` serves it all and `web` serves the
//! dashboard (built from `analyzer/web/`, embedded at compile time).

pub mod alerts;
pub mod api;
pub mod catalog;
pub mod classify;
pub mod config;
pub mod destinations;
pub mod fuzz;
pub mod insights;
pub mod keys;
pub mod query;
pub mod rollups;
pub mod web;
