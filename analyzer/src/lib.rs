//! The Fleetpulse analyzer.
//!
//! The collector stores facts; the analyzer interprets them. `catalog` holds the knowledge base
//! of enrollment failure signals (data under `analyzer/catalog/`), `classify` maps raw signals
//! to categories with cause and remediation, and the query/API modules answer fleet-wide
//! questions from ClickHouse rollups.

pub mod catalog;
pub mod classify;
