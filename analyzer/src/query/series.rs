//! Finalized time-series buckets (`rollup_closed_series`, migration 0004).
//!
//! A time-series point is one bucket's metrics; read from rollup states it costs one merge of
//! every (bucket, key) cell, and an hourly 30-day series merges thousands of HyperLogLog states
//! (about 0.8 s at 10M events, BENCHMARKS.md). Once a bucket is closed its numbers no longer
//! change unless late events arrive, so the [`finalize`] pass stores them as plain numbers,
//! with the bucket's event count, for the whole fleet and per tenant, at every series width.
//!
//! Reading ([`closed_points`]) takes a stored bucket only when its event count equals the
//! rollup's current count for that bucket, computed in the same query. Rollup rows are only
//! ever added (never updated or deleted one by one), so an equal count means the same rows and
//! the same answer; a late event changes the count and the bucket is answered from states
//! again until the next pass finalizes it anew. Finalized numbers are merged from the same
//! states the live path merges, so both give the same values and the same `estimated` flag.

use std::time::Duration;

use clickhouse::Client;
use serde::Deserialize;

use super::QueryError;
use super::engine::{Bind, Bucket, METRICS, Sql};
use super::filters::{Filters, SourceChoice};

/// How often `serve` runs [`finalize`] over the recent buckets.
pub const FINALIZE_EVERY: Duration = Duration::from_secs(60);

/// How far back the periodic pass looks for buckets to (re)finalize; the pass after a start
/// looks at all history. Late events older than this keep their bucket on the states path
/// (correct, slower) until the next start.
pub const RECENT_SECS: u32 = 7 * 86_400;

/// Where one series width is finalized from: the rollup holding per-bucket states for the
/// whole fleet and per tenant, and the function mapping its bucket to the series bucket.
struct WidthSource {
    width: Bucket,
    fleet_table: &'static str,
    tenant_table: &'static str,
    bucket_fn: &'static str,
}

const WIDTHS: [WidthSource; 4] = [
    WidthSource {
        width: Bucket::FiveMinutes,
        fleet_table: "rollup_fleet_outcomes_5m",
        tenant_table: "rollup_outcomes_5m",
        bucket_fn: "toStartOfFiveMinute",
    },
    WidthSource {
        width: Bucket::FifteenMinutes,
        fleet_table: "rollup_fleet_outcomes_5m",
        tenant_table: "rollup_outcomes_5m",
        bucket_fn: "toStartOfFifteenMinutes",
    },
    WidthSource {
        width: Bucket::Hour,
        fleet_table: "rollup_fleet_narrow_hourly",
        tenant_table: "rollup_narrow_hourly",
        bucket_fn: "toStartOfHour",
    },
    WidthSource {
        width: Bucket::Day,
        fleet_table: "rollup_fleet_narrow_daily",
        tenant_table: "rollup_narrow_daily",
        bucket_fn: "toStartOfDay",
    },
];

fn source_for(width: Bucket) -> &'static WidthSource {
    WIDTHS
        .iter()
        .find(|w| w.width == width)
        .unwrap_or(&WIDTHS[0])
}

/// The `INSERT .. SELECT` finalizing, at one width and scope, every closed bucket from
/// `since` on whose stored count differs from the rollup's (or that has none).
fn finalize_sql(db: &str, w: &WidthSource, per_tenant: bool, since: u32) -> Sql {
    let width = w.width.seconds();
    let (table, key, all) = if per_tenant {
        (w.tenant_table, "tenant, ts", 0)
    } else {
        (w.fleet_table, "ts", 1)
    };
    let scope = if per_tenant { "tenant" } else { "'' AS tenant" };
    let ts = format!("{}(bucket) AS ts", w.bucket_fn);
    let mut sql = Sql::default();
    sql.push(&format!(
        "INSERT INTO {db}.rollup_closed_series (width, all_tenants, tenant, bucket, version, events, \
         attempts, failures, affected_devices, affected_users, devices, users) \
         SELECT {width}, {all}, {scope}, {ts}, toUInt32(now()), {METRICS} FROM {db}.{table} \
         WHERE bucket >= toDateTime("
    ))
    .bind(Bind::U32(since))
    .push(&format!(
        ", 'UTC') AND toUInt32(ts) + {width} <= toUInt32(now()) AND ({key}) IN \
         (SELECT {key} FROM (SELECT {scope}, {ts}, countMerge(events) AS n FROM {db}.{table} \
         WHERE bucket >= toDateTime("
    ))
    .bind(Bind::U32(since))
    .push(&format!(
        ", 'UTC') GROUP BY {key}) WHERE ({key}, n) NOT IN (SELECT {}bucket, events \
         FROM {db}.rollup_closed_series WHERE width = {width} AND all_tenants = {all})) \
         GROUP BY {key}",
        if per_tenant { "tenant, " } else { "" }
    ));
    sql
}

/// Stores the metrics of every closed bucket from `since` on (all history when 0) that is not
/// stored yet or whose rollup count changed, at every series width, for the whole fleet and
/// per tenant. Idempotent; safe to run from several analyzers (the table keeps the newest
/// version of a bucket, and readers check the count anyway).
pub async fn finalize(client: &Client, db: &str, since: u32) -> Result<(), QueryError> {
    for w in &WIDTHS {
        for per_tenant in [false, true] {
            finalize_sql(db, w, per_tenant, since)
                .query(client)
                .execute()
                .await?;
        }
    }
    Ok(())
}

/// Runs [`finalize`] over the recent buckets every [`FINALIZE_EVERY`] until `stop` turns true.
pub async fn run_finalizer(
    client: Client,
    db: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FINALIZE_EVERY) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let since = u32::try_from(now)
            .unwrap_or(u32::MAX)
            .saturating_sub(RECENT_SECS);
        if let Err(e) = finalize(&client, &db, since).await {
            tracing::warn!(error = %e, "finalizing closed time-series buckets failed; series read rollup states meanwhile");
        }
    }
}

/// One stored bucket, in the engine's time-series row order.
#[derive(Debug, Deserialize, clickhouse::Row)]
pub(super) struct ClosedRow {
    pub ts: u32,
    pub events: u64,
    pub attempts: u64,
    pub failures: u64,
    pub affected_devices: u64,
    pub affected_users: u64,
    pub devices: u64,
    pub users: u64,
}

/// Whether finalized buckets can answer `f`: rollups allowed, no filter but the tenant (the
/// buckets are stored for the whole fleet and per tenant only).
pub(super) fn applies(f: &Filters) -> bool {
    f.source == SourceChoice::Auto
        && f.platform.is_none()
        && f.method.is_none()
        && f.os_version.is_none()
        && f.stage.is_none()
        && f.outcome.is_none()
        && f.code.is_none()
        && f.side.is_none()
        && f.category.is_none()
}

/// The finalized buckets wholly inside `[from, to)` whose stored count still equals the
/// rollup's, in time order. The caller answers the other buckets from states.
pub(super) async fn closed_points(
    client: &Client,
    db: &str,
    f: &Filters,
    bucket: Bucket,
) -> Result<Vec<ClosedRow>, QueryError> {
    let step = bucket.seconds();
    let (from, to) = (
        f.from.div_ceil(step).saturating_mul(step),
        f.to / step * step,
    );
    if from >= to {
        return Ok(Vec::new());
    }
    let w = source_for(bucket);
    let (table, all) = match &f.tenant {
        Some(_) => (w.tenant_table, 0),
        None => (w.fleet_table, 1),
    };
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT toUInt32(bucket) AS ts, any(events), any(attempts), any(failures), any(affected_devices), \
         any(affected_users), any(devices), any(users) FROM {db}.rollup_closed_series \
         WHERE width = {step} AND all_tenants = {all} AND tenant = "
    ))
    .bind(Bind::Str(f.tenant.clone().unwrap_or_default()))
    .push(" AND bucket >= toDateTime(")
    .bind(Bind::U32(from))
    .push(", 'UTC') AND bucket < toDateTime(")
    .bind(Bind::U32(to))
    .push(&format!(
        ", 'UTC') AND (bucket, events) IN (SELECT {}(bucket) AS b, countMerge(events) FROM {db}.{table} \
         WHERE bucket >= toDateTime(",
        w.bucket_fn
    ))
    .bind(Bind::U32(from))
    .push(", 'UTC') AND bucket < toDateTime(")
    .bind(Bind::U32(to))
    .push(", 'UTC')");
    if let Some(t) = &f.tenant {
        sql.push(" AND tenant = ").bind(Bind::Str(t.clone()));
    }
    sql.push(" GROUP BY b) GROUP BY ts ORDER BY ts");
    Ok(sql.query(client).fetch_all().await?)
}

/// The parts of `[from, to)` not covered by the `step`-wide buckets starting at `covered`
/// (sorted): what the states path still has to answer.
pub(super) fn gaps(from: u32, to: u32, step: u32, covered: &[u32]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut at = from;
    for &ts in covered {
        if ts > at {
            out.push((at, ts.min(to)));
        }
        at = at.max(ts.saturating_add(step));
    }
    if at < to {
        out.push((at, to));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_the_uncovered_parts() {
        assert_eq!(gaps(0, 100, 10, &[]), vec![(0, 100)]);
        assert_eq!(
            gaps(5, 100, 10, &[10, 20, 50]),
            vec![(5, 10), (30, 50), (60, 100)]
        );
        assert_eq!(gaps(10, 30, 10, &[10, 20]), Vec::<(u32, u32)>::new());
    }

    #[test]
    fn finalize_sql_checks_counts_per_scope() {
        let fleet = finalize_sql("db", &WIDTHS[2], false, 7).text;
        assert!(fleet.starts_with("INSERT INTO db.rollup_closed_series"));
        assert!(fleet.contains(
            "SELECT 3600, 1, '' AS tenant, toStartOfHour(bucket) AS ts, toUInt32(now())"
        ));
        assert!(fleet.contains("FROM db.rollup_fleet_narrow_hourly"));
        assert!(fleet.contains("WHERE (ts, n) NOT IN (SELECT bucket, events FROM db.rollup_closed_series WHERE width = 3600 AND all_tenants = 1)"));
        let tenant = finalize_sql("db", &WIDTHS[1], true, 7).text;
        assert!(tenant.contains("SELECT 900, 0, tenant, toStartOfFifteenMinutes(bucket) AS ts"));
        assert!(tenant.contains("FROM db.rollup_outcomes_5m"));
        assert!(tenant.contains("(tenant, ts, n) NOT IN (SELECT tenant, bucket, events"));
        assert!(tenant.ends_with("GROUP BY tenant, ts"));
        assert_eq!(tenant.matches('?').count(), 2);
    }
}
