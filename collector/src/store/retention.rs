//! Retention: drops whole daily partitions older than `retention_days` from the raw tables and
//! compacts the batch ledger. Runs hourly in `serve`; works on 18.16 (which has no TTL).

use std::{sync::Arc, time::Duration};

use clickhouse::Row;
use serde::Deserialize;

use super::{Store, StoreError};
use crate::control::{ControlDb, ledger_compaction::Compaction};

/// The raw tables, all partitioned by `toYYYYMMDD(..)`.
pub const TABLES: &[&str] = &["enrollment_events", "device_states", "agent_heartbeats"];

#[derive(Row, Deserialize)]
struct PartitionRow {
    partition: String,
}

/// A partition id of a `toYYYYMMDD` partitioning: exactly eight digits.
pub fn parse_day_partition(p: &str) -> Option<u32> {
    if p.len() == 8 && p.bytes().all(|b| b.is_ascii_digit()) {
        p.parse().ok()
    } else {
        None
    }
}

/// The first day (as YYYYMMDD) that is kept, given the current time.
pub fn cutoff_day(now_secs: i64, retention_days: u32) -> u32 {
    let cutoff = now_secs - i64::from(retention_days) * 86_400;
    let date = time::OffsetDateTime::from_unix_timestamp(cutoff)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date();
    date.year().max(0) as u32 * 10_000
        + u32::from(u8::from(date.month())) * 100
        + u32::from(date.day())
}

/// Drops (or, with `dry_run`, only lists) partitions older than the cutoff day.
///
/// In cluster mode the partitions live in the replicated `*_local` tables: they are listed on
/// one replica of every shard (`cluster(..)` over `system.parts`) and dropped `ON CLUSTER`
/// (each shard drops its own; replicas follow through the replication log).
pub async fn drop_old_partitions(
    store: &Store,
    cutoff: u32,
    dry_run: bool,
) -> Result<Vec<(&'static str, u32)>, StoreError> {
    let db = store.db();
    let mut dropped = Vec::new();
    for table in TABLES {
        // Validated identifiers only (the cluster name is checked when the store is built).
        let (parts_source, local, on_cluster) = match store.cluster() {
            Some(c) => (
                format!("cluster('{c}', system, parts)"),
                format!("{table}{}", fleetpulse_chcluster::LOCAL_SUFFIX),
                format!(" ON CLUSTER {c}"),
            ),
            None => (
                "system.parts".to_owned(),
                (*table).to_owned(),
                String::new(),
            ),
        };
        let parts: Vec<PartitionRow> = store
            .timed(
                store
                    .client()
                    .query(&format!(
                        "SELECT DISTINCT partition FROM {parts_source} \
                         WHERE database = ? AND table = ? AND active"
                    ))
                    .bind(db)
                    .bind(local.as_str())
                    .fetch_all::<PartitionRow>(),
            )
            .await?;
        let mut days: Vec<u32> = parts
            .iter()
            .filter_map(|p| parse_day_partition(&p.partition))
            .filter(|day| *day < cutoff)
            .collect();
        days.sort_unstable();
        for day in days {
            if !dry_run {
                // `day` is a number we parsed from eight digits: safe to format into SQL.
                store
                    .timed(
                        store
                            .client()
                            .query(&format!(
                                "ALTER TABLE {db}.{local}{on_cluster} DROP PARTITION {day}"
                            ))
                            .execute(),
                    )
                    .await?;
                tracing::info!(table, partition = day, "dropped partition past retention");
            }
            dropped.push((*table, day));
        }
    }
    Ok(dropped)
}

/// Runs retention now and then every `every` until cancelled: drops the raw tables' partitions
/// past `retention_days` and compacts the batch ledger to `ledger_keep`
/// (`control::ledger_compaction`). Errors are logged and retried on the next round.
pub async fn run_periodically(
    store: Store,
    control: Arc<ControlDb>,
    retention_days: u32,
    ledger_keep: Duration,
    every: Duration,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    let keep_ms = i64::try_from(ledger_keep.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now_ms = crate::control::now_ms();
        let cutoff = cutoff_day(now_ms / 1000, retention_days);
        if let Err(e) = drop_old_partitions(&store, cutoff, false).await {
            tracing::warn!(error = %e, "retention: dropping old partitions failed; retrying next round");
        }
        match control.compact_ledger(now_ms, keep_ms).await {
            Ok(c) if c == Compaction::default() => {}
            Ok(c) => tracing::info!(
                deleted = c.deleted,
                floors_promoted = c.promoted,
                floors_raised = c.raised,
                "retention: compacted batch ledger"
            ),
            Err(e) => tracing::warn!(error = %e, "retention: compacting the batch ledger failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_must_be_eight_digits() {
        assert_eq!(parse_day_partition("20240131"), Some(20_240_131));
        for bad in [
            "2024013",
            "202401311",
            "2024-01-31",
            "tuple()",
            "2024013a",
            "",
        ] {
            assert_eq!(parse_day_partition(bad), None, "{bad}");
        }
    }

    #[test]
    fn cutoff_is_the_day_retention_days_ago() {
        // 2026-01-01T12:00:00Z minus 90 days = 2025-10-03T12:00:00Z.
        assert_eq!(cutoff_day(1_767_268_800, 90), 20_251_003);
        assert_eq!(cutoff_day(1_767_268_800, 1), 20_251_231);
    }
}
