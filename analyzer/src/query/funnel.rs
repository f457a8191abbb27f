//! The enrollment funnel per method and platform: devices that reached each stage, succeeded
//! or failed there, where non-enrolled devices stopped, and time-to-enroll percentiles.
//!
//! Two plans:
//! - **Raw rows** (`source=raw`, or a range with no whole day): one pass over the range's rows
//!   grouped per device (stage sets kept as bit masks), every count exact, and exact
//!   time-to-enroll percentiles (first event to first success at `complete` or `first_sync`,
//!   per device; exact quantiles: t-digest answers differ between ClickHouse versions, found
//!   by the chDB lane).
//! - **Device-set rollups** (`source=auto`, migrations 0009 and 0010): every count is a union
//!   of device sets held as uniqCombined(14) states per (bucket, [tenant,] method, platform,
//!   stage, outcome), read for whole weeks and days (and hours over all tenants), with states
//!   built from raw rows at the unaligned edges. "Dropped at X" (never enrolled, furthest
//!   stage X) is the difference of two unions, `|reached X or later, or enrolled| - |reached
//!   later than X, or enrolled|`: exact in set terms, so exact below [`EXACT_UNIQUE_LIMIT`]
//!   and otherwise within the sum of
//!   the two unions' error bounds (an absolute bound). Time-to-enroll is per device and cannot
//!   come from these states: see [`Percentiles`].

use serde::{Deserialize, Serialize};

use super::QueryError;
use super::engine::{
    Bind, EXACT_UNIQUE_LIMIT, Engine, Sql, filter_columns, push_filters, push_ranges, tables_of,
};
use super::filters::{Filters, STAGES};
use super::plan::{Family, Resolution, Segment, Source};

/// Stages whose success means "enrolled".
pub const ENROLLED_STAGES: &[&str] = &["complete", "first_sync"];

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FunnelStage {
    pub stage: String,
    /// Devices with any event at this stage.
    pub reached: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Devices that never enrolled and whose furthest stage is this one. From rollups it is
    /// `|devices that reached this stage or a later one, or enrolled| - |devices that reached a
    /// later stage, or enrolled|` (clamped at 0): exact while both sets hold at most
    /// [`EXACT_UNIQUE_LIMIT`] devices, otherwise each term is a HyperLogLog estimate within
    /// ~2.1% and the difference is within ~2.1% of their sum (absolute, not relative to the
    /// count).
    pub dropped: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FunnelGroup {
    pub enrollment_method: String,
    pub platform: String,
    /// Devices with any event in range.
    pub devices: u64,
    /// Devices with a success at `complete` or `first_sync` in range.
    pub enrolled: u64,
    pub time_to_enroll_seconds: Percentiles,
    pub stages: Vec<FunnelStage>,
}

/// Time to enroll per device (first event in range to first success at `complete` or
/// `first_sync`), over the devices that enrolled in range, in seconds. Exact, and only in
/// answers computed from raw rows (`source=raw`, or a range without a whole day): a rollup
/// answer (`"plan": "rollups"`) has all three null, because per-device times cannot come from
/// the distinct-count states, and a per-(day or week, device) rollup of first-event and
/// enrolled times merged per device over 30 days took 1.8-2.6 s at 10M events (~3x the
/// raw-scan baseline; BENCHMARKS.md, issue 7, sixth session). Also null when no device
/// enrolled.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
}

/// One (method, platform) group with its per-stage device counts, indexed like [`STAGES`].
#[derive(Debug, Deserialize, clickhouse::Row)]
struct GroupRow {
    enrollment_method: String,
    platform: String,
    devices: u64,
    enrolled: u64,
    q: Vec<f64>,
    reached: Vec<u64>,
    succeeded: Vec<u64>,
    failed: Vec<u64>,
    dropped: Vec<u64>,
}

/// `[0, 1, ..]`: a stage's bit in the per-device masks is its index in [`STAGES`]; a stage
/// outside the list gets bit `STAGES.len()`, which no count reads.
fn stage_bit(stages: &str, bits: &str) -> String {
    format!(
        "bitShiftLeft(toUInt64(1), transform(stage, [{stages}], [{bits}], {}))",
        STAGES.len()
    )
}

/// Per device (and method, platform): masks of the stages it reached, succeeded and failed at,
/// the furthest stage (1-based, 0 = none of [`STAGES`]), whether it enrolled and its time to
/// enroll.
fn per_device(engine: &Engine, f: &Filters) -> Sql {
    let stages: Vec<String> = STAGES.iter().map(|s| format!("'{s}'")).collect();
    let stages = stages.join(", ");
    let bits: Vec<String> = (0..STAGES.len()).map(|i| i.to_string()).collect();
    let idx: Vec<String> = (1..=STAGES.len()).map(|i| i.to_string()).collect();
    let enrolled: Vec<String> = ENROLLED_STAGES.iter().map(|s| format!("'{s}'")).collect();
    let bit = stage_bit(&stages, &bits.join(", "));
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT enrollment_method, platform, tenant, device_id, \
         groupBitOr({bit}) AS reached_mask, \
         groupBitOrIf({bit}, outcome = 'succeeded') AS ok_mask, \
         groupBitOrIf({bit}, outcome = 'failed') AS failed_mask, \
         max(transform(stage, [{stages}], [{idx}], 0)) AS furthest, \
         countIf(outcome = 'succeeded' AND stage IN ({enrolled})) > 0 AS is_enrolled, \
         toUInt32(minIf(occurred_at, outcome = 'succeeded' AND stage IN ({enrolled}))) - toUInt32(min(occurred_at)) AS ttl \
         FROM {}.enrollment_events WHERE occurred_at >= toDateTime(",
        engine.db(),
        idx = idx.join(", "),
        enrolled = enrolled.join(", "),
    ))
    .bind(Bind::U32(f.from))
    .push(", 'UTC') AND occurred_at < toDateTime(")
    .bind(Bind::U32(f.to))
    .push(", 'UTC')");
    push_filters(&mut sql, f);
    sql.push(" GROUP BY enrollment_method, platform, tenant, device_id");
    sql
}

fn opt(v: Option<&f64>) -> Option<f64> {
    v.copied().filter(|x| x.is_finite())
}

/// `[countIf(<cond(i)>), ..]` over the stages, as one array column.
fn per_stage(cond: impl Fn(usize) -> String) -> String {
    let counts: Vec<String> = (0..STAGES.len())
        .map(|i| format!("countIf({})", cond(i)))
        .collect();
    format!("[{}]", counts.join(", "))
}

/// One (method, platform) group of a rollup plan: unions of device sets, indexed like
/// [`STAGES`]; `from[i]`: the devices that reached stage `i` or a later one, or enrolled
/// (so `from[i] - from[i + 1]`, with `enrolled` after the last stage, is "never enrolled,
/// furthest stage `i`").
#[derive(Debug, Deserialize, clickhouse::Row)]
struct SetRow {
    enrollment_method: String,
    platform: String,
    devices: u64,
    enrolled: u64,
    reached: Vec<u64>,
    succeeded: Vec<u64>,
    failed: Vec<u64>,
    from: Vec<u64>,
}

/// `'a', 'b', ..` of `names` (fixed names, formatted in).
fn quoted(names: &[&str]) -> String {
    let q: Vec<String> = names.iter().map(|s| format!("'{s}'")).collect();
    q.join(", ")
}

/// The (method, platform, stage, outcome) device-set states of the range: whole weeks, days
/// (and hours, for [`Family::FleetFunnel`]) from `family`'s rollups, raw rows at the unaligned
/// edges, built with the same function as the views; one state per key and table read.
fn device_sets(engine: &Engine, f: &Filters, segs: &[Segment]) -> Sql {
    let tables = tables_of(segs);
    let mut sql = Sql::default();
    for (i, (source, ranges)) in tables.iter().enumerate() {
        if i > 0 {
            sql.push(" UNION ALL ");
        }
        let raw = *source == Source::Raw;
        let state = if raw {
            "uniqCombinedState(14)(tenant, device_id)"
        } else {
            "devices"
        };
        sql.push(&format!(
            "SELECT enrollment_method, platform, stage, outcome, {state} AS st FROM {}.{} WHERE (",
            engine.db(),
            source.table()
        ));
        push_ranges(&mut sql, engine.db(), *source, ranges);
        sql.push(")");
        push_filters(&mut sql, f);
        if raw {
            sql.push(" GROUP BY enrollment_method, platform, stage, outcome");
        }
    }
    sql
}

/// The device-set rollups that answer `f`, if any: `source=auto`, filters only on columns
/// they hold, and a range holding a whole UTC day (shorter ranges are cheap from raw rows,
/// which also give exact time-to-enroll percentiles). One tenant's funnel reads
/// `rollup_funnel_*` (migration 0009), the all-tenant funnel `rollup_fleet_funnel_*` (0010:
/// a fifth of the rows at 20 tenants, and hourly rows instead of raw ones at the edges).
fn rollup_family(engine: &Engine, f: &Filters) -> Option<Family> {
    let family = if f.tenant.is_some() {
        Family::Funnel
    } else {
        Family::FleetFunnel
    };
    let held = filter_columns(f).all(|c| family.columns().contains(&c));
    let whole_day = engine
        .segments(f, Resolution::Whole, Family::Funnel)
        .iter()
        .any(|s| s.source != Source::Raw);
    (f.category.is_none() && held && whole_day).then_some(family)
}

/// The funnel's counts per (method, platform) from the device-set rollups: the states of
/// [`device_sets`] are merged per (method, platform, stage, outcome) first (one merge per
/// row read), then each count merges the few resulting states it is the union of.
async fn rollup_groups(
    engine: &Engine,
    f: &Filters,
    family: Family,
) -> Result<Vec<SetRow>, QueryError> {
    let idx: Vec<String> = (1..=STAGES.len()).map(|i| i.to_string()).collect();
    let stage_idx = format!(
        "transform(stage, [{}], [{}], 0)",
        quoted(STAGES),
        idx.join(", ")
    );
    let enrolled = format!(
        "(outcome = 'succeeded' AND stage IN ({}))",
        quoted(ENROLLED_STAGES)
    );
    let per_stage = |cond: &dyn Fn(usize) -> String| {
        let merges: Vec<String> = (0..STAGES.len())
            .map(|i| format!("uniqCombinedMergeIf(14)(st, {})", cond(i)))
            .collect();
        format!("[{}]", merges.join(", "))
    };
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT enrollment_method, platform, uniqCombinedMerge(14)(st) AS devices, \
         uniqCombinedMergeIf(14)(st, {enrolled}) AS enrolled, \
         {} AS reached, {} AS succeeded, {} AS failed, {} AS from \
         FROM (SELECT enrollment_method, platform, stage, outcome, \
         uniqCombinedMergeState(14)(st) AS st FROM (",
        per_stage(&|i| format!("stage = '{}'", STAGES[i])),
        per_stage(&|i| format!("stage = '{}' AND outcome = 'succeeded'", STAGES[i])),
        per_stage(&|i| format!("stage = '{}' AND outcome = 'failed'", STAGES[i])),
        per_stage(&|i| format!("{stage_idx} >= {} OR {enrolled}", i + 1)),
    ));
    let head = sql;
    let segs = engine.segments(f, Resolution::Whole, family);
    engine
        .with_checked_spans(segs, |segs| {
            let mut sql = head.clone();
            sql.append(device_sets(engine, f, &segs));
            sql.push(
                ") GROUP BY enrollment_method, platform, stage, outcome) \
                 GROUP BY enrollment_method, platform \
                 ORDER BY devices DESC, enrollment_method, platform",
            );
            async move { Ok(sql.query(engine.client()).fetch_all().await?) }
        })
        .await
}

/// Which data answered a funnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FunnelPlan {
    /// One pass over raw rows per device: exact counts and time-to-enroll percentiles.
    Raw,
    /// Device-set rollups (migrations 0009, 0010) for whole weeks, days (and hours over all
    /// tenants), raw rows at the edges: counts within the documented bound, no time-to-enroll
    /// percentiles.
    Rollups,
}

/// A funnel answer.
#[derive(Debug, Clone, Serialize)]
pub struct Funnel {
    pub plan: FunnelPlan,
    /// True when a count is a HyperLogLog estimate (a union of more than
    /// [`EXACT_UNIQUE_LIMIT`] devices merged from rollup states, see [`FunnelStage::dropped`]
    /// for the bound of `dropped`); false when all are exact.
    pub estimated: bool,
    pub groups: Vec<FunnelGroup>,
}

/// Funnel per (method, platform): from the device-set rollups when [`rollup_family`] allows,
/// else in one pass over the raw rows of the range. The category and code filters do not
/// apply (they are not per device; the API refuses them).
pub async fn funnel(engine: &Engine, f: &Filters) -> Result<Funnel, QueryError> {
    if let Some(family) = rollup_family(engine, f) {
        let rows = rollup_groups(engine, f, family).await?;
        let estimated = rows.iter().any(|r| {
            r.from
                .iter()
                .chain(&r.reached)
                .chain([&r.devices, &r.enrolled])
                .any(|&n| n > EXACT_UNIQUE_LIMIT)
        });
        return Ok(Funnel {
            plan: FunnelPlan::Rollups,
            estimated,
            groups: rows.into_iter().map(from_sets).collect(),
        });
    }
    Ok(Funnel {
        plan: FunnelPlan::Raw,
        estimated: false,
        groups: raw_funnel(engine, f).await?,
    })
}

/// The `i`th per-stage count, 0 past the end (ClickHouse returns one entry per stage).
fn at(v: &[u64], i: usize) -> u64 {
    v.get(i).copied().unwrap_or(0)
}

/// A group's stages: only those some device reached, in funnel order. Both plans count
/// reached, succeeded and failed the same way; they differ in how `dropped` is obtained.
fn reached_stages(
    reached: &[u64],
    succeeded: &[u64],
    failed: &[u64],
    dropped: impl Fn(usize) -> u64,
) -> Vec<FunnelStage> {
    STAGES
        .iter()
        .enumerate()
        .filter(|(i, _)| at(reached, *i) > 0)
        .map(|(i, st)| FunnelStage {
            stage: (*st).to_owned(),
            reached: at(reached, i),
            succeeded: at(succeeded, i),
            failed: at(failed, i),
            dropped: dropped(i),
        })
        .collect()
}

/// A rollup plan's group: `dropped` is the difference of two unions, clamped at 0 (estimates
/// may cross).
fn from_sets(r: SetRow) -> FunnelGroup {
    let stages = reached_stages(&r.reached, &r.succeeded, &r.failed, |i| {
        at(&r.from, i).saturating_sub(if i + 1 < STAGES.len() {
            at(&r.from, i + 1)
        } else {
            r.enrolled
        })
    });
    FunnelGroup {
        enrollment_method: r.enrollment_method,
        platform: r.platform,
        devices: r.devices,
        enrolled: r.enrolled,
        time_to_enroll_seconds: Percentiles {
            p50: None,
            p90: None,
            p95: None,
        },
        stages,
    }
}

/// Funnel per (method, platform), in one pass over the raw rows of the range (one per-device
/// aggregation, then one count per group and stage). Exact.
async fn raw_funnel(engine: &Engine, f: &Filters) -> Result<Vec<FunnelGroup>, QueryError> {
    let has = |mask: &'static str| move |i: usize| format!("bitAnd({mask}, {}) != 0", 1u64 << i);
    let mut g = Sql::default();
    g.push(&format!(
        "SELECT enrollment_method, platform, count() AS devices, countIf(is_enrolled) AS enrolled, \
         arrayMap(x -> toFloat64(x), quantilesExactIf(0.5, 0.9, 0.95)(toFloat64(ttl), is_enrolled)) AS q, \
         {} AS reached, {} AS succeeded, {} AS failed, {} AS dropped FROM (",
        per_stage(has("reached_mask")),
        per_stage(has("ok_mask")),
        per_stage(has("failed_mask")),
        per_stage(|i| format!("NOT is_enrolled AND furthest = {}", i + 1)),
    ));
    g.append(per_device(engine, f));
    g.push(
        ") GROUP BY enrollment_method, platform ORDER BY devices DESC, enrollment_method, platform",
    );
    let groups: Vec<GroupRow> = g.query(engine.client()).fetch_all().await?;

    Ok(groups
        .into_iter()
        .map(|gr| {
            let stages = reached_stages(&gr.reached, &gr.succeeded, &gr.failed, |i| {
                at(&gr.dropped, i)
            });
            let enrolled = gr.enrolled;
            FunnelGroup {
                time_to_enroll_seconds: Percentiles {
                    p50: if enrolled > 0 {
                        opt(gr.q.first())
                    } else {
                        None
                    },
                    p90: if enrolled > 0 { opt(gr.q.get(1)) } else { None },
                    p95: if enrolled > 0 { opt(gr.q.get(2)) } else { None },
                },
                enrollment_method: gr.enrollment_method,
                platform: gr.platform,
                devices: gr.devices,
                enrolled,
                stages,
            }
        })
        .collect())
}
