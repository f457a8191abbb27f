//! Fleet-wide questions answered from ClickHouse: rollups for aggregates, raw rows for
//! device-level answers. Classification is applied at query time (see [`classes`]).

pub mod affected;
pub mod catalog_adapter;
pub mod classes;
pub mod cursor;
pub mod devices;
pub mod engine;
pub mod export;
pub mod filters;
pub mod funnel;
pub mod plan;
pub mod series;
pub mod sql;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum QueryError {
    #[error("ClickHouse query failed: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
}
