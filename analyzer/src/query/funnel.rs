//! The enrollment funnel per method and platform, from raw rows in one pass (it is a
//! per-device question; stage sets are kept as bit masks, not string arrays):
//! devices that reached each stage, succeeded or failed there, where non-enrolled devices
//! stopped, and time-to-enroll percentiles (first event to first success at `complete` or
//! `first_sync`, per device; exact quantiles: t-digest answers differ between ClickHouse
//! versions, found by the chDB lane).

use serde::{Deserialize, Serialize};

use super::QueryError;
use super::engine::{Bind, Engine, Sql, push_filters};
use super::filters::{Filters, STAGES};

/// Stages whose success means "enrolled".
pub const ENROLLED_STAGES: &[&str] = &["complete", "first_sync"];

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FunnelStage {
    pub stage: String,
    /// Devices with any event at this stage.
    pub reached: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Devices that never enrolled and whose furthest stage is this one.
    pub dropped: u64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FunnelGroup {
    pub enrollment_method: String,
    pub platform: String,
    pub devices: u64,
    pub enrolled: u64,
    pub time_to_enroll_seconds: Percentiles,
    pub stages: Vec<FunnelStage>,
}

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

/// Funnel per (method, platform), in one pass over the raw rows of the range (one per-device
/// aggregation, then one count per group and stage). The category filter does not apply (it
/// is not per device).
pub async fn funnel(engine: &Engine, f: &Filters) -> Result<Vec<FunnelGroup>, QueryError> {
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
            let at = |v: &[u64], i: usize| v.get(i).copied().unwrap_or(0);
            // Only the stages some device reached, in funnel order.
            let stages = STAGES
                .iter()
                .enumerate()
                .filter(|(i, _)| at(&gr.reached, *i) > 0)
                .map(|(i, st)| FunnelStage {
                    stage: (*st).to_owned(),
                    reached: at(&gr.reached, i),
                    succeeded: at(&gr.succeeded, i),
                    failed: at(&gr.failed, i),
                    dropped: at(&gr.dropped, i),
                })
                .collect();
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
