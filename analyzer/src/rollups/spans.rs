//! Week spans (migration 0011): builds each week's heads (Monday to day d) and tails (day d to
//! Sunday), d Tuesday to Saturday, from the daily rollup of the same family, so that a range's
//! edge days are read as at most two states per key instead of up to twelve daily ones.
//! Day spans (migration 0012) are the same one level down ([`Level`]): each day's heads
//! (00:00 to the end of hour h) and tails (hour h to 24:00), h 01:00 to 22:00, from the hourly
//! rollup, so that the partial days at the edges of a range ending at an hour (the dashboard's
//! 7-day view) are at most two states per key instead of up to 46 hourly ones. They are built
//! only for the last [`DAY_SPAN_DAYS`] days back from the newest hour holding events (a day
//! of spans holds ~5x its hourly rows), and each pass drops older days' partitions; a head is
//! built [`DAY_SPAN_DELAY`] after its last hour, so that the hour's stragglers are in.
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
use crate::query::plan::{DAY_SPAN_DAYS, DAY_SPAN_DELAY, Family, Grain, Source};

/// How often `serve` looks for spans to build, unless configured otherwise.
pub const BUILD_EVERY: Duration = Duration::from_secs(60);

/// How far back the periodic pass looks (five weeks: every span a "last 30 days" range reads);
/// the pass after a start looks at all history. Spans of older weeks that late events made
/// stale are read from the days (correct, slower) until the next start.
pub const RECENT_SECS: u32 = 35 * DAY;

const HOUR: u32 = 3_600;
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

/// One level of spans: the periods (weeks or days) whose heads and tails are built, from the
/// rows of the next finer unit (days or hours) of the same family.
#[derive(Debug, Clone, Copy)]
struct Level {
    /// Seconds per period (a week, a day).
    period: u32,
    /// Seconds per unit the spans are made of (a day, an hour).
    unit: u32,
    /// The start of the first period (periods are aligned to it: weeks to a Monday).
    origin: u32,
    head: Grain,
    tail: Grain,
    /// The rollup grain of the units (`Grain::Day`, `Grain::Hour`).
    fine: Grain,
    /// Seconds after a span's last unit ends before it is built (late events settle).
    delay: u32,
    /// How many periods back from the newest unit holding events spans are kept; `None`
    /// for all history. Older periods' partitions are dropped.
    keep: Option<u32>,
    /// Which families have spans at this level (`Family::has_spans`,
    /// `Family::has_day_spans`).
    has: fn(Family) -> bool,
}

/// Week spans (migration 0011): heads Monday..d and tails d..Sunday, d Tuesday to Saturday,
/// from the daily rollups, for all history.
const WEEKS: Level = Level {
    period: WEEK,
    unit: DAY,
    origin: FIRST_MONDAY,
    head: Grain::WeekHead,
    tail: Grain::WeekTail,
    fine: Grain::Day,
    delay: 0,
    keep: None,
    has: Family::has_spans,
};

/// Day spans (migration 0012): heads 00:00..h and tails h..24:00, h 01:00 to 22:00, from the
/// hourly rollups, for the last [`DAY_SPAN_DAYS`] days.
const DAYS: Level = Level {
    period: DAY,
    unit: HOUR,
    origin: 0,
    head: Grain::DayHead,
    tail: Grain::DayTail,
    fine: Grain::Hour,
    delay: DAY_SPAN_DELAY,
    keep: Some(DAY_SPAN_DAYS),
    has: Family::has_day_spans,
};

impl Level {
    /// Units per period (7 days, 24 hours); spans are indexed 1..=units - 2.
    fn units(&self) -> u32 {
        self.period / self.unit
    }

    /// The start of the period holding `t`.
    fn start_of(&self, t: u32) -> u32 {
        if t < self.origin {
            return 0;
        }
        self.origin + (t - self.origin) / self.period * self.period
    }

    fn families(&self) -> impl Iterator<Item = &'static SpanFamily> {
        let has = self.has;
        FAMILIES.iter().filter(move |f| has(f.family))
    }

    /// The spans of period `start` that are complete at `now`, with the count each should hold
    /// given the unit counts: heads (bucket of unit i, units 0..=i) and tails (bucket of unit
    /// i, units i..end), i 1 to units - 2.
    fn expected(&self, start: u32, fine: &BTreeMap<u32, u64>, now: u32) -> Vec<(Grain, u32, u64)> {
        let count = |k: u32| fine.get(&(start + k * self.unit)).copied().unwrap_or(0);
        let n = self.units();
        let mut out = Vec::new();
        for i in 1..=n - 2 {
            let d = start + i * self.unit;
            if d + self.unit + self.delay <= now {
                out.push((self.head, d, (0..=i).map(count).sum()));
            }
            if start + self.period + self.delay <= now {
                out.push((self.tail, d, (i..n).map(count).sum()));
            }
        }
        out
    }

    /// The periods whose complete spans disagree with the unit counts: a span missing (count 0
    /// where the units hold events), behind, or doubled.
    fn stale(
        &self,
        fine: &BTreeMap<u32, u64>,
        heads: &BTreeMap<u32, u64>,
        tails: &BTreeMap<u32, u64>,
        now: u32,
    ) -> Vec<u32> {
        let mut periods: Vec<u32> = fine
            .keys()
            .chain(heads.keys())
            .chain(tails.keys())
            .map(|&d| self.start_of(d))
            .collect();
        periods.sort_unstable();
        periods.dedup();
        periods
            .into_iter()
            .filter(|&start| {
                self.expected(start, fine, now)
                    .into_iter()
                    .any(|(grain, d, n)| {
                        let built = if grain == self.head { heads } else { tails };
                        built.get(&d).copied().unwrap_or(0) != n
                    })
            })
            .collect()
    }

    /// The first period whose spans are kept, given the newest unit holding events.
    fn kept_since(&self, newest: Option<u32>) -> u32 {
        match (self.keep, newest) {
            (Some(keep), Some(newest)) => self
                .start_of(newest)
                .saturating_sub((keep - 1) * self.period),
            _ => 0,
        }
    }

    /// For each unit row, the span buckets holding its unit, as an `arrayJoin` over `k`, the
    /// row's unit index in its period (a head's bucket is its last unit: the row's unit to
    /// units - 2; a tail's its first: 1 to the row's unit).
    fn span_of_unit(&self, grain: Grain) -> String {
        let (unit, last) = (self.unit, self.units() - 2);
        if grain == self.head {
            format!(
                "bucket + {unit} * (greatest(k, 1) - k + \
                 arrayJoin(range(toUInt32(greatest(0, {end} - greatest(k, 1))))))",
                end = last + 1
            )
        } else {
            format!(
                "bucket - {unit} * (k - least(k, {last}) + \
                 arrayJoin(range(toUInt32(greatest(0, least(k, {last}))))))"
            )
        }
    }

    /// `INSERT .. SELECT` of period `start`'s complete spans of one kind from the unit
    /// states; `None` when none of that kind is complete.
    fn insert_sql(
        &self,
        db: &str,
        f: &SpanFamily,
        grain: Grain,
        start: u32,
        now: u32,
    ) -> Option<Sql> {
        let last_complete = if grain == self.head {
            // Heads ending with unit i are complete once i + 1 units and the delay are over.
            now.checked_sub(self.delay + self.unit)
        } else if start + self.period + self.delay <= now {
            Some(start + (self.units() - 2) * self.unit)
        } else {
            None
        }?;
        if last_complete < start + self.unit {
            return None;
        }
        let table = Source::Rollup(f.family, grain).table();
        let fine = Source::Rollup(f.family, self.fine).table();
        let keys = f.keys.join(", ");
        let names: Vec<&str> = f.states.iter().map(|(c, _)| *c).collect();
        let merges: Vec<String> = f
            .states
            .iter()
            .map(|(c, m)| format!("{m}({c}) AS {c}"))
            .collect();
        let mut sql = Sql::default();
        sql.push(&format!(
            "INSERT INTO {db}.{table} (bucket, {keys}, {names}) \
             SELECT span, {keys}, {merges} FROM (SELECT *, {span} AS span FROM \
             (SELECT *, toInt32(intDiv(toUInt32(bucket) - ",
            names = names.join(", "),
            merges = merges.join(", "),
            span = self.span_of_unit(grain),
        ))
        .bind(Bind::U32(start))
        .push(&format!(
            ", {unit})) AS k FROM {db}.{fine} WHERE bucket >= toDateTime(",
            unit = self.unit
        ))
        .bind(Bind::U32(start))
        .push(", 'UTC') AND bucket < toDateTime(")
        .bind(Bind::U32(start + self.period))
        .push(", 'UTC'))) WHERE toUInt32(span) <= ")
        .bind(Bind::U32(last_complete))
        .push(&format!(" GROUP BY span, {keys}"));
        Some(sql)
    }
}

/// The Monday 00:00 UTC of the week holding `t`.
#[cfg(test)]
fn monday_of(t: u32) -> u32 {
    WEEKS.start_of(t)
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

#[derive(Debug, Deserialize, clickhouse::Row)]
struct Newest {
    newest: u32,
    rows: u64,
}

/// The newest bucket of `table` holding events, if any.
async fn newest_unit(client: &Client, db: &str, table: &str) -> Result<Option<u32>, QueryError> {
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT toUInt32(max(bucket)) AS newest, count() AS rows FROM {db}.{table}"
    ));
    let row: Newest = sql.query(client).fetch_one().await?;
    Ok((row.rows > 0).then_some(row.newest))
}

/// The first day whose day spans are held, for an analyzer that builds none
/// (`week_spans_interval_secs = 0`) beside one that does: the oldest day of the fleet totals'
/// day heads and tails (the builder builds and drops every family's days together); `None`
/// while they hold none (no builder has run yet).
pub async fn day_spans_held_since(client: &Client, db: &str) -> Result<Option<u32>, QueryError> {
    let mut oldest = None;
    for grain in [DAYS.head, DAYS.tail] {
        let table = Source::Rollup(Family::FleetNarrow, grain).table();
        let mut sql = Sql::default();
        sql.push(&format!(
            "SELECT toUInt32(min(bucket)) AS newest, count() AS rows FROM {db}.{table}"
        ));
        let row: Newest = sql.query(client).fetch_one().await?;
        if row.rows > 0 {
            let day = DAYS.start_of(row.newest);
            oldest = Some(oldest.map_or(day, |d: u32| d.min(day)));
        }
    }
    Ok(oldest)
}

/// For an analyzer without a span builder: every `every`, tells the planner the first day
/// holding day spans ([`day_spans_held_since`]) until `stop` turns true, so that a range's
/// hour edges on older days (dropped by the builder) are read as hours at once instead of
/// failing their span check and being asked again. A failed read keeps the last answer.
pub async fn watch_day_spans(
    engine: Arc<Engine>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match day_spans_held_since(engine.client(), engine.db()).await {
            Ok(Some(since)) => engine.set_day_spans_since(since),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading which days hold day spans failed"),
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

/// Drops the period starting at `start` of `table` (its partition: migration 0011 partitions
/// by week, 0012 by day; both partition keys are the period's first day).
fn drop_sql(db: &str, table: &str, cluster: Option<&str>, start: u32) -> String {
    let day = time::OffsetDateTime::from_unix_timestamp(i64::from(start))
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

/// Runs [`drop_sql`].
async fn drop_period(
    client: &Client,
    db: &str,
    table: &str,
    cluster: Option<&str>,
    start: u32,
) -> Result<(), QueryError> {
    let mut drop = Sql::default();
    drop.push(&drop_sql(db, table, cluster, start));
    drop.query(client).execute().await?;
    Ok(())
}

/// What a build pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Built {
    /// (family, week or day) whose spans were rebuilt.
    pub rebuilt: usize,
    /// (family, day) whose day spans were dropped as older than [`DAY_SPAN_DAYS`].
    pub dropped: usize,
    /// The first day day spans are kept for (`Engine::set_day_spans_since`).
    pub day_spans_since: u32,
}

/// Rebuilds, in every family, each week from `since` on whose complete spans disagree with
/// the daily counts at `now`, and each of the last [`DAY_SPAN_DAYS`] days whose complete day
/// spans disagree with the hourly counts; drops day spans of older days.
pub async fn build(
    client: &Client,
    db: &str,
    cluster: Option<&str>,
    since: u32,
    now: u32,
) -> Result<Built, QueryError> {
    // A replicated table (cluster mode) drops a block equal to a recent one: a rebuilt week
    // may re-insert the rows it held before its partition was dropped.
    let client = client.clone().with_setting("insert_deduplicate", "0");
    let mut built = Built::default();
    for level in [WEEKS, DAYS] {
        let mut since = level.start_of(since);
        // Spans kept from `kept` on (all history for weeks); older ones are dropped, so the
        // span tables are read from 0 to find them.
        let (kept, spans_since) = if level.keep.is_some() {
            let newest = newest_unit(
                &client,
                db,
                Source::Rollup(Family::FleetNarrow, level.fine).table(),
            )
            .await?;
            let kept = level.kept_since(newest);
            since = since.max(kept);
            built.day_spans_since = kept;
            (kept, 0)
        } else {
            (0, since)
        };
        for f in level.families() {
            let table = |g: Grain| Source::Rollup(f.family, g).table();
            let fine = counts(&client, db, table(level.fine), since).await?;
            let heads = counts(&client, db, table(level.head), spans_since).await?;
            let tails = counts(&client, db, table(level.tail), spans_since).await?;
            let mut old: Vec<u32> = heads
                .keys()
                .chain(tails.keys())
                .map(|&d| level.start_of(d))
                .filter(|&d| d < kept)
                .collect();
            old.sort_unstable();
            old.dedup();
            for start in old {
                for grain in [level.head, level.tail] {
                    drop_period(&client, db, table(grain), cluster, start).await?;
                }
                built.dropped += 1;
            }
            let in_range = |m: &BTreeMap<u32, u64>| -> BTreeMap<u32, u64> {
                m.range(since..).map(|(k, v)| (*k, *v)).collect()
            };
            for start in level.stale(&fine, &in_range(&heads), &in_range(&tails), now) {
                for grain in [level.head, level.tail] {
                    drop_period(&client, db, table(grain), cluster, start).await?;
                    if let Some(insert) = level.insert_sql(db, f, grain, start, now) {
                        insert.query(&client).execute().await?;
                    }
                }
                built.rebuilt += 1;
            }
        }
    }
    Ok(built)
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
    pub dropped: Counter,
    pub pass_seconds: Histogram,
}

impl SpanMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            passes: Counter::default(),
            failures: Counter::default(),
            rebuilt: Counter::default(),
            dropped: Counter::default(),
            pass_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 16)),
        };
        registry.register(
            "fleetpulse_analyzer_week_span_passes",
            "Completed passes of the span builder, week and day spans (the first covers all history)",
            m.passes.clone(),
        );
        registry.register(
            "fleetpulse_analyzer_week_span_pass_failures",
            "Span builder passes that failed or could not take the lease (questions read days and hours meanwhile)",
            m.failures.clone(),
        );
        registry.register(
            "fleetpulse_analyzer_week_spans_rebuilt",
            "(family, week) and (family, day) pairs whose spans a pass rebuilt: new days or hours, and late events",
            m.rebuilt.clone(),
        );
        registry.register(
            "fleetpulse_analyzer_day_spans_dropped",
            "(family, day) pairs whose day spans a pass dropped as older than the days kept",
            m.dropped.clone(),
        );
        registry.register(
            "fleetpulse_analyzer_week_span_pass_duration_seconds",
            "Duration of one completed span builder pass (week and day spans)",
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
            Ok(Ok(built)) => {
                let seconds = started.elapsed().as_secs_f64();
                tracing::debug!(
                    rebuilt = built.rebuilt,
                    dropped = built.dropped,
                    seconds,
                    "spans built"
                );
                engine.set_day_spans_since(built.day_spans_since);
                metrics.rebuilt.inc_by(built.rebuilt as u64);
                metrics.dropped.inc_by(built.dropped as u64);
                metrics.pass_seconds.observe(seconds);
                metrics.passes.inc();
                since = unix_now().saturating_sub(RECENT_SECS);
            }
            Ok(Err(e)) => {
                metrics.failures.inc();
                tracing::warn!(
                    error = %e,
                    "building spans failed; queries read the days and hours meanwhile"
                );
            }
            Err(e) => {
                metrics.failures.inc();
                tracing::warn!(
                    error = %e,
                    "taking the span builder's lease failed; queries read the days and hours meanwhile"
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
        let e = WEEKS.expected(MON, &daily, MON + 30 * DAY);
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
        let e = WEEKS.expected(MON, &daily, MON + 3 * DAY + 12 * 3600);
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
        let heads: BTreeMap<u32, u64> = WEEKS
            .expected(MON, &daily, now)
            .into_iter()
            .filter(|x| x.0 == Grain::WeekHead)
            .map(|x| (x.1, x.2))
            .collect();
        let tails: BTreeMap<u32, u64> = WEEKS
            .expected(MON, &daily, now)
            .into_iter()
            .filter(|x| x.0 == Grain::WeekTail)
            .map(|x| (x.1, x.2))
            .collect();
        assert!(WEEKS.stale(&daily, &heads, &tails, now).is_empty());
        // A late event on Wednesday: the heads ending Wednesday and later and the tails from
        // Tuesday and Wednesday are behind.
        *daily.entry(MON + 2 * DAY).or_default() += 1;
        assert_eq!(WEEKS.stale(&daily, &heads, &tails, now), vec![MON]);
        daily = week([1, 2, 4, 8, 16, 32, 64]);
        // A doubled tail.
        let mut doubled = tails.clone();
        doubled.insert(MON + DAY, 252);
        assert_eq!(WEEKS.stale(&daily, &heads, &doubled, now), vec![MON]);
        // Missing spans of another week with events.
        daily.insert(MON + WEEK + 3 * DAY, 5);
        assert_eq!(WEEKS.stale(&daily, &heads, &tails, now), vec![MON + WEEK]);
    }

    /// 2024-03-04 00:00 UTC as a day of day spans.
    const D: u32 = MON;

    #[test]
    fn day_spans_of_a_past_day_and_of_today() {
        let hourly: BTreeMap<u32, u64> = (0..24u32).map(|h| (D + h * HOUR, 1)).collect();
        let e = DAYS.expected(D, &hourly, D + 3 * DAY);
        // 22 heads (00:00 to 01:59 .. 00:00 to 22:59) and 22 tails (01:00 .. 22:00 to 24:00).
        assert_eq!(e.len(), 44);
        assert!(e.contains(&(Grain::DayHead, D + HOUR, 2)));
        assert!(e.contains(&(Grain::DayHead, D + 22 * HOUR, 23)));
        assert!(e.contains(&(Grain::DayTail, D + HOUR, 23)));
        assert!(e.contains(&(Grain::DayTail, D + 22 * HOUR, 2)));
        // Today at 10:04: no head is complete before its hour is over and the delay has
        // passed (the head ending with 08:59 is, the one ending with 09:59 not yet); no tail.
        let e = DAYS.expected(D, &hourly, D + 10 * HOUR + 240);
        assert_eq!(e.last(), Some(&(Grain::DayHead, D + 8 * HOUR, 9)), "{e:?}");
        assert!(e.iter().all(|x| x.0 == Grain::DayHead));
        let e = DAYS.expected(D, &hourly, D + 10 * HOUR + DAY_SPAN_DELAY);
        assert_eq!(e.last(), Some(&(Grain::DayHead, D + 9 * HOUR, 10)));
    }

    #[test]
    fn day_spans_are_kept_for_the_last_days_before_the_newest_hour() {
        assert_eq!(DAYS.kept_since(None), 0);
        assert_eq!(
            DAYS.kept_since(Some(D + 5 * HOUR)),
            D - (DAY_SPAN_DAYS - 1) * DAY
        );
        assert_eq!(WEEKS.kept_since(Some(D)), 0);
        assert_eq!(DAYS.start_of(D + 23 * HOUR + 59), D);
    }

    #[test]
    fn span_rows_cover_exactly_the_spans_holding_their_unit() {
        // The arrayJoin of `span_of_unit`, evaluated by hand: the spans a unit k belongs to.
        let spans = |level: Level, head: bool, k: u32| -> Vec<u32> {
            let last = level.units() - 2;
            if head {
                (k.max(1)..=last).collect()
            } else {
                (1..=k.min(last)).collect()
            }
        };
        for level in [WEEKS, DAYS] {
            let n = level.units();
            for i in 1..=n - 2 {
                for k in 0..n {
                    // Head i holds units 0..=i; tail i holds units i..n.
                    assert_eq!(spans(level, true, k).contains(&i), k <= i);
                    assert_eq!(spans(level, false, k).contains(&i), k >= i);
                }
            }
        }
        let head = DAYS.span_of_unit(Grain::DayHead);
        assert!(
            head.contains("bucket + 3600 * (greatest(k, 1) - k"),
            "{head}"
        );
        assert!(head.contains("greatest(0, 23 - greatest(k, 1))"), "{head}");
        let tail = DAYS.span_of_unit(Grain::DayTail);
        assert!(tail.contains("least(k, 22)"), "{tail}");
    }

    #[test]
    fn nothing_to_insert_before_a_span_is_complete() {
        let f = &FAMILIES[0];
        assert!(
            DAYS.insert_sql("db", f, Grain::DayTail, D, D + DAY)
                .is_none()
        );
        assert!(
            DAYS.insert_sql("db", f, Grain::DayTail, D, D + DAY + DAY_SPAN_DELAY)
                .is_some()
        );
        assert!(
            DAYS.insert_sql("db", f, Grain::DayHead, D, D + HOUR + DAY_SPAN_DELAY)
                .is_none()
        );
        let sql = DAYS
            .insert_sql("db", f, Grain::DayHead, D, D + 2 * HOUR + DAY_SPAN_DELAY)
            .expect("the head ending with 01:59 is complete");
        assert!(sql.text.starts_with(
            "INSERT INTO db.rollup_fleet_narrow_day_heads (bucket, outcome, events, devices, users)"
        ));
        assert!(
            sql.text
                .contains("FROM db.rollup_fleet_narrow_hourly WHERE")
        );
    }
}
