//! Week spans (migration 0011): builds each week's heads (Monday to day d) and tails (day d to
//! Sunday), d Tuesday to Saturday, from the daily rollup of the same family, so that a range's
//! edge days are read as at most two states per key instead of up to twelve daily ones.
//!
//! Correctness never depends on this builder: an answer comes from a span only while its event
//! count equals the daily rollup's count for the same days (`Engine::resolve_spans`, run
//! beside the question by `Engine::with_checked_spans`), and from the days otherwise. The
//! builder only makes spans *available*: every [`BUILD_EVERY`] (by default;
//! `week_spans_interval_secs`, 0 for no builder) it compares, per family, each complete span's
//! count with the daily counts, and rebuilds every week holding a span that is missing or
//! behind (late events): `DROP PARTITION` of the week, then one `INSERT .. SELECT` per table
//! merging the week's daily states into every span they belong to. [`SpanMetrics`] says on
//! `/metrics` whether it keeps up. While a week is being rebuilt its spans disagree with the days, so readers take the
//! days. A span is built once its last day is over (a head ending yesterday is built today;
//! a tail once its Sunday is over).
//!
//! Several analyzers sharing one control database take turns through a lease
//! ([`super::lease`]); two that do not share one may rebuild a week at the same time and leave
//! it doubled, which the count check catches (readers take the days) and the next pass
//! rebuilds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clickhouse::Client;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;

use crate::query::QueryError;
use crate::query::engine::{Bind, Engine, Sql};
use crate::query::plan::{Family, Grain, Source};

/// How often `serve` looks for spans to build, unless configured otherwise.
pub const BUILD_EVERY: Duration = Duration::from_secs(60);

/// How far back the periodic pass looks (five weeks: every span a "last 30 days" range reads);
/// the pass after a start looks at all history. Spans of older weeks that late events made
/// stale are read from the days (correct, slower) until the next start.
pub const RECENT_SECS: u32 = 35 * DAY;

const DAY: u32 = 86_400;
const WEEK: u32 = 7 * DAY;
/// 1970-01-05T00:00:00Z, a Monday: weeks are aligned to it (as `toMonday`).
const FIRST_MONDAY: u32 = 4 * DAY;

/// A family with spans: its key columns and, per state column, the `-MergeState` function
/// that merges daily states into a span's.
struct SpanFamily {
    family: Family,
    keys: &'static [&'static str],
    states: &'static [(&'static str, &'static str)],
}

const COUNT: (&str, &str) = ("events", "countMergeState");
const DEVICES: (&str, &str) = ("devices", "uniqCombinedMergeState(14)");
const USERS: (&str, &str) = ("users", "uniqCombinedIfMergeState(14)");

const FAMILIES: [SpanFamily; 7] = [
    SpanFamily {
        family: Family::FleetNarrow,
        keys: &["outcome"],
        states: &[COUNT, DEVICES, USERS],
    },
    SpanFamily {
        family: Family::FleetFacets,
        keys: &["facet", "value", "outcome"],
        states: &[COUNT, DEVICES, USERS],
    },
    SpanFamily {
        family: Family::FleetTotals,
        keys: &["outcome", "platform", "enrollment_method", "source_kind"],
        states: &[COUNT, DEVICES, USERS],
    },
    SpanFamily {
        family: Family::FleetCores,
        keys: &[
            "outcome",
            "source_kind",
            "core",
            "error_code",
            "error_has_code",
            "error_symbol",
        ],
        states: &[COUNT, DEVICES, USERS],
    },
    SpanFamily {
        family: Family::Fleet,
        keys: &[
            "outcome",
            "platform",
            "stage",
            "source_kind",
            "sig",
            "error_code",
            "error_has_code",
            "error_symbol",
        ],
        states: &[COUNT, DEVICES, USERS],
    },
    SpanFamily {
        family: Family::TenantTotals,
        keys: &["tenant"],
        states: &[
            COUNT,
            ("attempt_events", "countIfMergeState"),
            ("failed_events", "countIfMergeState"),
            DEVICES,
            ("failed_devices", "uniqCombinedIfMergeState(14)"),
            ("users", "uniqCombinedIfMergeState(14)"),
            ("failed_users", "uniqCombinedIfMergeState(14)"),
        ],
    },
    SpanFamily {
        family: Family::FleetFunnel,
        keys: &["enrollment_method", "platform", "stage", "outcome"],
        states: &[COUNT, DEVICES],
    },
];

/// The Monday 00:00 UTC of the week holding `t`.
fn monday_of(t: u32) -> u32 {
    if t < FIRST_MONDAY {
        return 0;
    }
    FIRST_MONDAY + (t - FIRST_MONDAY) / WEEK * WEEK
}

/// The spans of week `monday` that are complete at `now`, with the count each should hold
/// given the daily counts: heads (bucket d, days monday..=d) and tails (bucket d, days
/// d..monday + 7), d Tuesday to Saturday.
fn expected(monday: u32, daily: &BTreeMap<u32, u64>, now: u32) -> Vec<(Grain, u32, u64)> {
    let day_count = |d: u32| daily.get(&d).copied().unwrap_or(0);
    let mut out = Vec::new();
    for i in 1..=5 {
        let d = monday + i * DAY;
        if d + DAY <= now {
            let n = (0..=i).map(|k| day_count(monday + k * DAY)).sum();
            out.push((Grain::WeekHead, d, n));
        }
        if monday + WEEK <= now {
            let n = (i..7).map(|k| day_count(monday + k * DAY)).sum();
            out.push((Grain::WeekTail, d, n));
        }
    }
    out
}

/// The weeks (Mondays) from `since` whose complete spans disagree with the daily counts: a
/// span missing (count 0 where the days hold events), behind, or doubled.
fn stale_weeks(
    daily: &BTreeMap<u32, u64>,
    heads: &BTreeMap<u32, u64>,
    tails: &BTreeMap<u32, u64>,
    now: u32,
) -> Vec<u32> {
    let mut weeks: Vec<u32> = daily
        .keys()
        .chain(heads.keys())
        .chain(tails.keys())
        .map(|&d| monday_of(d))
        .collect();
    weeks.sort_unstable();
    weeks.dedup();
    weeks
        .into_iter()
        .filter(|&monday| {
            expected(monday, daily, now)
                .into_iter()
                .any(|(grain, d, n)| {
                    let built = if grain == Grain::WeekHead {
                        heads
                    } else {
                        tails
                    };
                    built.get(&d).copied().unwrap_or(0) != n
                })
        })
        .collect()
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct DayCount {
    day: u32,
    n: u64,
}

/// `bucket -> countMerge(events)` of `table` from `since` on.
async fn counts(
    client: &Client,
    db: &str,
    table: &str,
    since: u32,
) -> Result<BTreeMap<u32, u64>, QueryError> {
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT toUInt32(bucket) AS day, countMerge(events) AS n FROM {db}.{table} \
         WHERE bucket >= toDateTime("
    ))
    .bind(Bind::U32(since))
    .push(", 'UTC') GROUP BY day");
    let rows: Vec<DayCount> = sql.query(client).fetch_all().await?;
    Ok(rows.into_iter().map(|r| (r.day, r.n)).collect())
}

/// For each daily row, the span buckets holding its day, as an `arrayJoin` (a head's bucket is
/// its last day: the row's day to Saturday; a tail's its first: Tuesday to the row's day), and
/// the condition that the span is complete at `now` (bound by the caller).
fn span_of_day(grain: Grain) -> (&'static str, &'static str) {
    if grain == Grain::WeekHead {
        (
            "bucket + 86400 * (greatest(dow, 2) - dow + \
             arrayJoin(range(toUInt32(greatest(0, 7 - greatest(dow, 2))))))",
            "toUInt32(span) + 86400",
        )
    } else {
        (
            "bucket - 86400 * (dow - least(dow, 6) + \
             arrayJoin(range(toUInt32(greatest(0, least(dow, 6) - 1)))))",
            "toUInt32(span) + 86400 * (8 - toDayOfWeek(span))",
        )
    }
}

/// `INSERT .. SELECT` of week `monday`'s complete spans of one kind from the daily states.
fn insert_sql(db: &str, f: &SpanFamily, grain: Grain, monday: u32, now: u32) -> Sql {
    let table = Source::Rollup(f.family, grain).table();
    let daily = Source::Rollup(f.family, Grain::Day).table();
    let keys = f.keys.join(", ");
    let names: Vec<&str> = f.states.iter().map(|(c, _)| *c).collect();
    let merges: Vec<String> = f
        .states
        .iter()
        .map(|(c, m)| format!("{m}({c}) AS {c}"))
        .collect();
    let (span, complete) = span_of_day(grain);
    let mut sql = Sql::default();
    sql.push(&format!(
        "INSERT INTO {db}.{table} (bucket, {keys}, {names}) \
         SELECT span, {keys}, {merges} FROM (SELECT *, {span} AS span FROM \
         (SELECT *, toInt32(toDayOfWeek(bucket)) AS dow FROM {db}.{daily} \
         WHERE bucket >= toDateTime(",
        names = names.join(", "),
        merges = merges.join(", "),
    ))
    .bind(Bind::U32(monday))
    .push(", 'UTC') AND bucket < toDateTime(")
    .bind(Bind::U32(monday + WEEK))
    .push(&format!(", 'UTC'))) WHERE {complete} <= "))
    .bind(Bind::U32(now))
    .push(&format!(" GROUP BY span, {keys}"));
    sql
}

/// Drops week `monday` of `table` (its partition: migration 0011 partitions by week).
fn drop_sql(db: &str, table: &str, cluster: Option<&str>, monday: u32) -> String {
    let day = time::OffsetDateTime::from_unix_timestamp(i64::from(monday))
        .map(|t| t.date().to_string())
        .unwrap_or_default();
    // `day` is a date we computed (YYYY-MM-DD), formatted as the partition literal.
    match cluster {
        None => format!("ALTER TABLE {db}.{table} DROP PARTITION '{day}'"),
        Some(c) => format!(
            "ALTER TABLE {db}.{table}{} ON CLUSTER {c} DROP PARTITION '{day}'",
            fleetpulse_chcluster::LOCAL_SUFFIX
        ),
    }
}

/// Rebuilds, in every family, each week from `since` on whose complete spans disagree with
/// the daily counts at `now`. Returns the number of (family, week) rebuilt.
pub async fn build(
    client: &Client,
    db: &str,
    cluster: Option<&str>,
    since: u32,
    now: u32,
) -> Result<usize, QueryError> {
    // A replicated table (cluster mode) drops a block equal to a recent one: a rebuilt week
    // may re-insert the rows it held before its partition was dropped.
    let client = client.clone().with_setting("insert_deduplicate", "0");
    let since = monday_of(since);
    let mut rebuilt = 0;
    for f in &FAMILIES {
        let daily = counts(
            &client,
            db,
            Source::Rollup(f.family, Grain::Day).table(),
            since,
        )
        .await?;
        let heads = counts(
            &client,
            db,
            Source::Rollup(f.family, Grain::WeekHead).table(),
            since,
        )
        .await?;
        let tails = counts(
            &client,
            db,
            Source::Rollup(f.family, Grain::WeekTail).table(),
            since,
        )
        .await?;
        for monday in stale_weeks(&daily, &heads, &tails, now) {
            for grain in [Grain::WeekHead, Grain::WeekTail] {
                let table = Source::Rollup(f.family, grain).table();
                let mut drop = Sql::default();
                drop.push(&drop_sql(db, table, cluster, monday));
                drop.query(&client).execute().await?;
                insert_sql(db, f, grain, monday, now)
                    .query(&client)
                    .execute()
                    .await?;
            }
            rebuilt += 1;
        }
    }
    Ok(rebuilt)
}

fn unix_now() -> u32 {
    u32::try_from(time::OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0)
}

/// The lease every span builder of database `db` takes for a pass, so that passes of several
/// analyzers (or a test's own) never interleave.
pub fn builder_lease_name(db: &str) -> String {
    format!("{db}/week_spans")
}

/// Prometheus metrics of the span builder. Spans only make questions faster, so an operator
/// needs to see whether the builder keeps up: passes against the interval (a pass slower than
/// `week_spans_interval_secs` means spans lag behind late events and questions read days),
/// how many (family, week) it rebuilds per pass (late events), and failures. Benchmarks also
/// wait for the first pass, so that they time the spans and not the days they replace.
pub struct SpanMetrics {
    pub passes: Counter,
    pub failures: Counter,
    pub rebuilt: Counter,
    pub pass_seconds: Histogram,
}

impl SpanMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            passes: Counter::default(),
            failures: Counter::default(),
            rebuilt: Counter::default(),
            pass_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
        };
        registry.register(
            "fleetpulse_analyzer_week_span_passes",
            "Completed passes of the week span builder (the first covers all history)",
            m.passes.clone(),
        );
        registry.register(
            "fleetpulse_analyzer_week_span_pass_failures",
            "Week span passes that failed or could not take the lease (questions read days meanwhile)",
            m.failures.clone(),
        );
        registry.register(
            "fleetpulse_analyzer_week_spans_rebuilt",
            "(family, week) pairs whose spans a pass rebuilt: new days and late events",
            m.rebuilt.clone(),
        );
        registry.register(
            "fleetpulse_analyzer_week_span_pass_duration_seconds",
            "Duration of one completed week span pass",
            m.pass_seconds.clone(),
        );
        m
    }
}

/// Builds the spans of all history at once, then those of the last [`RECENT_SECS`] every
/// `every`, until `stop` turns true, taking the lease `<db>/week_spans` for each pass.
/// A failed pass is logged and counted; readers take the days meanwhile.
pub async fn run_builder(
    engine: Arc<Engine>,
    pool: sqlx::AnyPool,
    cluster: Option<String>,
    every: Duration,
    metrics: Arc<SpanMetrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut since = 0;
    loop {
        let started = std::time::Instant::now();
        let pass = async {
            let lease = super::lease::acquire(&pool, &builder_lease_name(engine.db())).await?;
            let result = build(
                engine.client(),
                engine.db(),
                cluster.as_deref(),
                since,
                unix_now(),
            )
            .await;
            if let Err(e) = lease.release().await {
                tracing::warn!(error = %e, "releasing the week spans lease failed; it expires on its own");
            }
            Ok::<_, sqlx::Error>(result)
        };
        let result = tokio::select! {
            r = pass => r,
            _ = stop.changed() => return,
        };
        match result {
            Ok(Ok(weeks)) => {
                let seconds = started.elapsed().as_secs_f64();
                tracing::debug!(weeks, seconds, "week spans built");
                metrics.rebuilt.inc_by(weeks as u64);
                metrics.pass_seconds.observe(seconds);
                metrics.passes.inc();
                since = unix_now().saturating_sub(RECENT_SECS);
            }
            Ok(Err(e)) => {
                metrics.failures.inc();
                tracing::warn!(
                    error = %e,
                    "building week spans failed; queries read the days meanwhile"
                );
            }
            Err(e) => {
                metrics.failures.inc();
                tracing::warn!(
                    error = %e,
                    "taking the week spans lease failed; queries read the days meanwhile"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
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

    /// 2024-03-04, a Monday.
    const MON: u32 = 1_709_510_400;

    #[test]
    fn mondays() {
        assert_eq!(monday_of(MON), MON);
        assert_eq!(monday_of(MON + 6 * DAY + 3600), MON);
        assert_eq!(monday_of(MON + WEEK), MON + WEEK);
        assert_eq!(monday_of(MON - 1), MON - WEEK);
    }

    fn week(counts: [u64; 7]) -> BTreeMap<u32, u64> {
        (0..7u32)
            .map(|k| (MON + k * DAY, counts[k as usize]))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    #[test]
    fn expected_heads_and_tails_of_a_past_week() {
        let daily = week([1, 2, 4, 8, 16, 32, 64]);
        let e = expected(MON, &daily, MON + 30 * DAY);
        let heads: Vec<(u32, u64)> = e
            .iter()
            .filter(|x| x.0 == Grain::WeekHead)
            .map(|x| ((x.1 - MON) / DAY, x.2))
            .collect();
        let tails: Vec<(u32, u64)> = e
            .iter()
            .filter(|x| x.0 == Grain::WeekTail)
            .map(|x| ((x.1 - MON) / DAY, x.2))
            .collect();
        // Head ending Tuesday: Monday + Tuesday; ending Saturday: all but Sunday.
        assert_eq!(heads, vec![(1, 3), (2, 7), (3, 15), (4, 31), (5, 63)]);
        // Tail from Tuesday: all but Monday; from Saturday: Saturday + Sunday.
        assert_eq!(tails, vec![(1, 126), (2, 124), (3, 120), (4, 112), (5, 96)]);
    }

    #[test]
    fn only_complete_spans_are_expected() {
        let daily = week([1, 1, 1, 1, 1, 1, 1]);
        // Thursday noon: heads ending Tuesday and Wednesday are complete, no tail is.
        let e = expected(MON, &daily, MON + 3 * DAY + 12 * 3600);
        assert_eq!(
            e,
            vec![
                (Grain::WeekHead, MON + DAY, 2),
                (Grain::WeekHead, MON + 2 * DAY, 3)
            ]
        );
    }

    #[test]
    fn stale_weeks_are_the_ones_with_a_missing_behind_or_doubled_span() {
        let now = MON + 30 * DAY;
        let mut daily = week([1, 2, 4, 8, 16, 32, 64]);
        let heads: BTreeMap<u32, u64> = expected(MON, &daily, now)
            .into_iter()
            .filter(|x| x.0 == Grain::WeekHead)
            .map(|x| (x.1, x.2))
            .collect();
        let tails: BTreeMap<u32, u64> = expected(MON, &daily, now)
            .into_iter()
            .filter(|x| x.0 == Grain::WeekTail)
            .map(|x| (x.1, x.2))
            .collect();
        assert!(stale_weeks(&daily, &heads, &tails, now).is_empty());
        // A late event on Wednesday: the heads ending Wednesday and later and the tails from
        // Tuesday and Wednesday are behind.
        *daily.entry(MON + 2 * DAY).or_default() += 1;
        assert_eq!(stale_weeks(&daily, &heads, &tails, now), vec![MON]);
        daily = week([1, 2, 4, 8, 16, 32, 64]);
        // A doubled tail.
        let mut doubled = tails.clone();
        doubled.insert(MON + DAY, 252);
        assert_eq!(stale_weeks(&daily, &heads, &doubled, now), vec![MON]);
        // Missing spans of another week with events.
        daily.insert(MON + WEEK + 3 * DAY, 5);
        assert_eq!(stale_weeks(&daily, &heads, &tails, now), vec![MON + WEEK]);
    }
}
