//! The enrollment funnel per method and platform, from raw rows (it is a per-device question):
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

#[derive(Debug, Deserialize, clickhouse::Row)]
struct GroupRow {
    enrollment_method: String,
    platform: String,
    devices: u64,
    enrolled: u64,
    q: Vec<f64>,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct StageRow {
    enrollment_method: String,
    platform: String,
    stage: String,
    reached: u64,
    succeeded: u64,
    failed: u64,
    dropped: u64,
}

fn per_device(engine: &Engine, f: &Filters) -> Sql {
    let idx: Vec<String> = (1..=STAGES.len()).map(|i| i.to_string()).collect();
    let stages: Vec<String> = STAGES.iter().map(|s| format!("'{s}'")).collect();
    let enrolled: Vec<String> = ENROLLED_STAGES.iter().map(|s| format!("'{s}'")).collect();
    let mut sql = Sql::default();
    sql.push(&format!(
        "SELECT enrollment_method, platform, tenant, device_id, \
         groupUniqArray(stage) AS stages, \
         groupUniqArrayIf(stage, outcome = 'succeeded') AS ok_stages, \
         groupUniqArrayIf(stage, outcome = 'failed') AS failed_stages, \
         max(transform(stage, [{stages}], [{idx}], 0)) AS furthest, \
         countIf(outcome = 'succeeded' AND stage IN ({enrolled})) > 0 AS is_enrolled, \
         toUInt32(minIf(occurred_at, outcome = 'succeeded' AND stage IN ({enrolled}))) - toUInt32(min(occurred_at)) AS ttl \
         FROM {}.enrollment_events WHERE occurred_at >= toDateTime(",
        engine.db(),
        stages = stages.join(", "),
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

/// Funnel per (method, platform). The category filter does not apply (it is not per device).
pub async fn funnel(engine: &Engine, f: &Filters) -> Result<Vec<FunnelGroup>, QueryError> {
    let mut g = Sql::default();
    g.push(
        "SELECT enrollment_method, platform, count() AS devices, countIf(is_enrolled) AS enrolled, \
         arrayMap(x -> toFloat64(x), quantilesExactIf(0.5, 0.9, 0.95)(toFloat64(ttl), is_enrolled)) AS q FROM (",
    );
    g.append(per_device(engine, f));
    g.push(
        ") GROUP BY enrollment_method, platform ORDER BY devices DESC, enrollment_method, platform",
    );
    let groups: Vec<GroupRow> = g.query(engine.client()).fetch_all().await?;

    let stages: Vec<String> = STAGES.iter().map(|s| format!("'{s}'")).collect();
    let mut s = Sql::default();
    s.push(&format!(
        "SELECT enrollment_method, platform, st AS stage, count() AS reached, \
         countIf(has(ok_stages, st)) AS succeeded, countIf(has(failed_stages, st)) AS failed, \
         countIf(NOT is_enrolled AND furthest = transform(st, [{}], [{}], 0)) AS dropped FROM (",
        stages.join(", "),
        (1..=STAGES.len())
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    s.append(per_device(engine, f));
    s.push(") ARRAY JOIN stages AS st GROUP BY enrollment_method, platform, st");
    let stage_rows: Vec<StageRow> = s.query(engine.client()).fetch_all().await?;

    Ok(groups
        .into_iter()
        .map(|gr| {
            let stages = STAGES
                .iter()
                .filter_map(|st| {
                    stage_rows
                        .iter()
                        .find(|r| {
                            r.enrollment_method == gr.enrollment_method
                                && r.platform == gr.platform
                                && r.stage == *st
                        })
                        .map(|r| FunnelStage {
                            stage: r.stage.clone(),
                            reached: r.reached,
                            succeeded: r.succeeded,
                            failed: r.failed,
                            dropped: r.dropped,
                        })
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
