//! Insight snapshots (migration 0006): every insight computed for all tenants in the
//! background and stored, so that requests read the answer by key instead of grouping every
//! device of the fleet (0.5-1.2 s per insight at 10M events, BENCHMARKS.md).
//!
//! An insight is an analysis "as of now" (latest state per device, devices per user,
//! staleness), so an answer computed a minute ago is a faithful answer that says when it holds:
//! responses carry `as_of` and `from_snapshot`. [`run_refresher`] computes a new *generation*
//! every `insights_refresh_secs` (default 60 s; 0 turns snapshots off and every request is
//! computed live):
//!
//! 1. each insight's live SQL for all tenants, `INSERT .. SELECT` into `insight_snapshot_rows`
//!    under a new generation id (start second << 20 | 20 random bits: two analyzers refreshing
//!    at once write two generations, never the same rows twice);
//! 2. the per (insight, tenant) row counts into `insight_snapshot_counts`;
//! 3. last, one row into `insight_snapshots` marking the generation complete, with its `as_of`
//!    and the settings it used ([`fingerprint`]);
//! 4. old generations are dropped (`DROP PARTITION`; every table is partitioned by generation):
//!    all but the two newest complete ones, and incomplete ones (a writer that crashed) older
//!    than [`ABANDONED_AFTER_SECS`]. A reader that picked the previous generation just before a
//!    new one completed still finds its rows for a whole refresh interval.
//!
//! Readers ([`latest`]) take the newest complete generation computed with their own settings
//! and at most [`max_age_secs`] old; otherwise (snapshots off, the first refresh not done yet,
//! the refresher failing, another analyzer's different device caps) the request is computed
//! live as before. A per-tenant request reads the tenant's rows of the all-tenant snapshot:
//! every insight groups by tenant, so they are exactly the rows the live SQL returns for that
//! tenant.

use std::time::Duration;

use serde::Deserialize;

use super::{Affected, AffectedCursor, InsightId, InsightSettings, after, insight_sql};
use crate::query::QueryError;
use crate::query::engine::{Bind, Engine, Sql};

/// Default seconds between two refreshes.
pub const DEFAULT_REFRESH_SECS: u64 = 60;

/// An incomplete generation (its writer stopped or crashed mid-way) older than this is dropped.
pub const ABANDONED_AFTER_SECS: u32 = 600;

/// Complete generations kept (the newest is read; the one before serves readers that picked it
/// just before the newest completed).
const KEEP_COMPLETE: usize = 2;

const TABLES: [&str; 3] = [
    "insight_snapshots",
    "insight_snapshot_counts",
    "insight_snapshot_rows",
];

/// A complete generation: its id and the time (unix seconds) its answers hold for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct Snapshot {
    pub generation: u64,
    pub as_of: u32,
}

/// The oldest snapshot readers still use: three refresh intervals, at least five minutes (a
/// refresh at 100M events takes tens of seconds on a loaded machine).
pub fn max_age_secs(refresh_secs: u64) -> u32 {
    u32::try_from(refresh_secs.saturating_mul(3))
        .unwrap_or(u32::MAX)
        .max(300)
}

/// The settings an answer depends on, as stored with each generation: a reader with other
/// settings (another analyzer's device caps or stale days) computes live instead.
pub fn fingerprint(s: &InsightSettings) -> String {
    format!(
        "v1;default_device_cap={};stale_days={};device_caps={}",
        s.default_device_cap,
        s.stale_days,
        serde_json::to_string(&s.device_caps).unwrap_or_default()
    )
}

/// A new generation id for a refresh starting at `now`: ordered by start second, unique
/// between concurrent writers with overwhelming probability (20 random bits per second).
fn new_generation(now: u32) -> u64 {
    (u64::from(now) << 20) | (rand::random::<u64>() & 0xF_FFFF)
}

/// The newest complete generation usable for settings `s` at `now`, if any.
pub async fn latest(
    engine: &Engine,
    s: &InsightSettings,
    now: u32,
) -> Result<Option<Snapshot>, QueryError> {
    if s.refresh_secs == 0 {
        return Ok(None);
    }
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT generation, toUInt32(as_of) AS as_of FROM {}.insight_snapshots WHERE settings = ",
        engine.db()
    ))
    .bind(Bind::Str(fingerprint(s)))
    .push(" AND as_of >= toDateTime(")
    .bind(Bind::U32(now.saturating_sub(max_age_secs(s.refresh_secs))))
    .push(", 'UTC') ORDER BY generation DESC LIMIT 1");
    Ok(sql.query(engine.client()).fetch_optional().await?)
}

/// ` AND tenant = ?` when a tenant is given.
fn and_tenant(sql: &mut Sql, tenant: Option<&str>) {
    if let Some(t) = tenant {
        sql.push(" AND tenant = ").bind(Bind::Str(t.to_owned()));
    }
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct TenantCount {
    tenant: String,
    subjects: u64,
}

/// The number of subjects of insight `id` in generation `g` (one tenant's or all), and one
/// page of them ordered by (tenant, subject) after `cursor`.
///
/// The per-tenant counts come first (a few rows): the page then reads only the tenants it can
/// come from (from the cursor's on, until they hold `limit` rows), so a first page of an
/// insight affecting most of the fleet reads one tenant's key range, not every row (18.16
/// cannot stop reading a sorted range at the LIMIT).
pub async fn count_and_page(
    engine: &Engine,
    g: u64,
    id: InsightId,
    tenant: Option<&str>,
    cursor: Option<&AffectedCursor>,
    limit: u64,
) -> Result<(u64, Vec<Affected>), QueryError> {
    let db = engine.db();
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT tenant, toUInt64(sum(subjects)) AS subjects FROM {db}.insight_snapshot_counts \
         WHERE generation = "
    ))
    .bind(Bind::U64(g))
    .push(" AND insight = ")
    .bind(Bind::Str(id.as_str().to_owned()));
    and_tenant(&mut sql, tenant);
    sql.push(" GROUP BY tenant ORDER BY tenant");
    let counts: Vec<TenantCount> = sql.query(engine.client()).fetch_all().await?;
    let total = counts.iter().map(|c| c.subjects).sum();
    let tenants = page_tenants(&counts, cursor.map(|c| c.tenant.as_str()), limit);
    if tenants.is_empty() || limit == 0 {
        return Ok((total, Vec::new()));
    }
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT tenant, subject, detail FROM {db}.insight_snapshot_rows WHERE generation = "
    ))
    .bind(Bind::U64(g))
    .push(" AND insight = ")
    .bind(Bind::Str(id.as_str().to_owned()))
    .push(" AND tenant IN (SELECT arrayJoin(")
    .bind(Bind::Strs(tenants))
    .push("))");
    if let Some(c) = cursor {
        sql.push(" AND ");
        after(&mut sql, c);
    }
    sql.push(" ORDER BY tenant, subject LIMIT ")
        .bind(Bind::U64(limit));
    Ok((total, sql.query(engine.client()).fetch_all().await?))
}

/// The tenants (in order) a page of `limit` rows after a cursor in tenant `from` can come
/// from: `from` itself (its rows may all lie before the cursor, so they do not count) and the
/// following tenants until they hold `limit` rows.
fn page_tenants(counts: &[TenantCount], from: Option<&str>, limit: u64) -> Vec<String> {
    let mut out = Vec::new();
    let mut held = 0;
    for c in counts
        .iter()
        .filter(|c| from.is_none_or(|f| c.tenant.as_str() >= f))
    {
        if held >= limit {
            break;
        }
        out.push(c.tenant.clone());
        if from != Some(c.tenant.as_str()) {
            held += c.subjects;
        }
    }
    out
}

/// Computes and stores a complete generation of every insight for all tenants as of `now`,
/// then drops old generations (see the module docs). `cluster`: the ClickHouse cluster's name
/// in cluster mode (partitions are dropped from the local tables on every server).
pub async fn refresh(
    engine: &Engine,
    s: &InsightSettings,
    cluster: Option<&str>,
    now: u32,
) -> Result<Snapshot, QueryError> {
    let db = engine.db();
    let g = new_generation(now);
    for id in InsightId::ALL {
        let mut sql = Sql::default();
        sql.push(&format!(
            "INSERT INTO {db}.insight_snapshot_rows (generation, insight, tenant, subject, detail) \
             SELECT "
        ))
        .bind(Bind::U64(g))
        .push(", ")
        .bind(Bind::Str(id.as_str().to_owned()))
        .push(", tenant, subject, detail FROM (");
        sql.append(insight_sql(engine, id, s, None, now));
        sql.push(")");
        sql.query(engine.client()).execute().await?;
    }
    let mut sql = Sql::default();
    sql.push(&format!(
        "INSERT INTO {db}.insight_snapshot_counts (generation, insight, tenant, subjects) \
         SELECT generation, insight, tenant, count() FROM {db}.insight_snapshot_rows \
         WHERE generation = "
    ))
    .bind(Bind::U64(g))
    .push(" GROUP BY generation, insight, tenant");
    sql.query(engine.client()).execute().await?;
    let mut sql = Sql::default();
    sql.push(&format!(
        "INSERT INTO {db}.insight_snapshots (generation, as_of, settings) SELECT "
    ))
    .bind(Bind::U64(g))
    .push(", toDateTime(")
    .bind(Bind::U32(now))
    .push(", 'UTC'), ")
    .bind(Bind::Str(fingerprint(s)));
    sql.query(engine.client()).execute().await?;
    drop_old(engine, cluster, now).await?;
    Ok(Snapshot {
        generation: g,
        as_of: now,
    })
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct GenerationRow {
    generation: u64,
    complete: u8,
}

/// The generations to drop: all complete ones but the [`KEEP_COMPLETE`] newest, and incomplete
/// ones started more than [`ABANDONED_AFTER_SECS`] before `now`.
fn to_drop(mut gens: Vec<(u64, bool)>, now: u32) -> Vec<u64> {
    gens.sort_by_key(|g| std::cmp::Reverse(g.0));
    let mut kept = 0;
    let mut out = Vec::new();
    for (g, complete) in gens {
        let started = u32::try_from(g >> 20).unwrap_or(u32::MAX);
        if complete {
            kept += 1;
            if kept > KEEP_COMPLETE {
                out.push(g);
            }
        } else if started.saturating_add(ABANDONED_AFTER_SECS) < now {
            out.push(g);
        }
    }
    out
}

async fn drop_old(engine: &Engine, cluster: Option<&str>, now: u32) -> Result<(), QueryError> {
    let db = engine.db();
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT generation, toUInt8(max(complete)) AS complete FROM (\
         SELECT generation, 1 AS complete FROM {db}.insight_snapshots \
         UNION ALL SELECT DISTINCT generation, 0 AS complete FROM {db}.insight_snapshot_counts \
         UNION ALL SELECT DISTINCT generation, 0 AS complete FROM {db}.insight_snapshot_rows) \
         GROUP BY generation"
    ));
    let gens: Vec<GenerationRow> = sql.query(engine.client()).fetch_all().await?;
    let gens = gens
        .into_iter()
        .map(|r| (r.generation, r.complete == 1))
        .collect();
    for g in to_drop(gens, now) {
        // The marker first, so that no reader picks a generation whose rows are going.
        for table in TABLES {
            let mut sql = Sql::default();
            // `g` is a number read back from our own table, formatted as the partition literal.
            match cluster {
                None => sql.push(&format!("ALTER TABLE {db}.{table} DROP PARTITION {g}")),
                Some(c) => sql.push(&format!(
                    "ALTER TABLE {db}.{table}{} ON CLUSTER {c} DROP PARTITION {g}",
                    fleetpulse_chcluster::LOCAL_SUFFIX
                )),
            };
            sql.query(engine.client()).execute().await?;
        }
    }
    Ok(())
}

/// Refreshes the snapshots at once and then every `s.refresh_secs` until `stop` turns true
/// (never when `refresh_secs` is 0). A failed refresh is logged; readers keep the previous
/// generation until it is [`max_age_secs`] old, then compute live.
pub async fn run_refresher(
    engine: std::sync::Arc<Engine>,
    s: std::sync::Arc<InsightSettings>,
    cluster: Option<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if s.refresh_secs == 0 {
        return;
    }
    if cluster.is_some() {
        // Measured wrong in a 2x2 cluster (the cluster suite): a generation's unlicensed-users
        // count came out 2 or 5 where the live answer is 6, varying from run to run. Until the
        // cause is found, insights in cluster mode are always computed live.
        tracing::warn!(
            "insight snapshots are off in cluster mode (not yet correct there); insights are computed live"
        );
        return;
    }
    loop {
        let now = u32::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
        let started = std::time::Instant::now();
        // A stop abandons a refresh mid-way: its generation stays incomplete, is never read,
        // and is dropped by a later refresh.
        let result = tokio::select! {
            r = refresh(&engine, &s, cluster.as_deref(), now) => r,
            _ = stop.changed() => return,
        };
        match result {
            Ok(snap) => tracing::info!(
                generation = snap.generation,
                seconds = started.elapsed().as_secs_f64(),
                "insight snapshot refreshed"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "refreshing the insight snapshot failed; insights read the previous one or compute live"
            ),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(s.refresh_secs)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_two_complete_and_recent_incomplete_generations() {
        let now = 10_000;
        let g = |t: u64, r: u64| (t << 20) | r;
        let gens = vec![
            (g(9_000, 1), true),
            (g(9_940, 2), true),
            (g(9_880, 3), true),
            (g(9_990, 4), false), // being written
            (g(9_000, 5), false), // abandoned
            (g(9_500, 6), false), // within ten minutes: may still complete
        ];
        let mut dropped = to_drop(gens, now);
        dropped.sort();
        assert_eq!(dropped, vec![g(9_000, 1), g(9_000, 5)]);
        assert!(to_drop(Vec::new(), now).is_empty());
    }

    #[test]
    fn a_page_reads_only_the_tenants_it_can_come_from() {
        let counts: Vec<TenantCount> = [("a", 3), ("b", 5), ("c", 4), ("d", 9)]
            .iter()
            .map(|(t, n)| TenantCount {
                tenant: (*t).into(),
                subjects: *n,
            })
            .collect();
        assert_eq!(page_tenants(&counts, None, 2), vec!["a"]);
        assert_eq!(page_tenants(&counts, None, 4), vec!["a", "b"]);
        assert_eq!(page_tenants(&counts, None, 100).len(), 4);
        // The cursor's tenant does not count: its rows may all be before the cursor.
        assert_eq!(page_tenants(&counts, Some("b"), 4), vec!["b", "c"]);
        assert_eq!(page_tenants(&counts, Some("b"), 5), vec!["b", "c", "d"]);
        assert_eq!(page_tenants(&counts, Some("bb"), 1), vec!["c"]);
        assert!(page_tenants(&counts, Some("e"), 1).is_empty());
    }

    #[test]
    fn generations_order_by_start_and_differ() {
        let a = new_generation(100);
        let b = new_generation(101);
        assert!(b > a);
        assert_eq!(a >> 20, 100);
    }

    #[test]
    fn fingerprint_follows_the_settings_that_change_answers() {
        let mut s = InsightSettings::default();
        let base = fingerprint(&s);
        s.refresh_secs = 5;
        assert_eq!(fingerprint(&s), base, "the cadence does not change answers");
        s.device_caps.insert("contoso".into(), 10);
        assert_ne!(fingerprint(&s), base);
        assert_eq!(max_age_secs(60), 300);
        assert_eq!(max_age_secs(600), 1800);
    }
}
