-- Migration 0009: the enrollment funnel's device sets, per (bucket, tenant, enrollment method,
-- platform, stage, outcome). Must run on ClickHouse 18.16 and current releases.
--
-- Why (measured at 10M events, BENCHMARKS.md): the funnel was one pass over the raw rows of the
-- range grouped per device (p50 5.8 s, ~15x the raw-scan baseline). Its counts are unions of
-- device sets: devices that reached a stage are the union over outcomes of the stage's rows,
-- succeeded/failed the rows of one outcome, all devices the union of every row, enrolled
-- devices the union of the succeeded rows of the enrolled stages, and "never enrolled,
-- furthest stage X" the difference of two unions (query/funnel.rs). One uniqCombined(14) state
-- per row (the same function on the same arguments as 0004's `devices`, so the same answers
-- and the same documented error bound) answers all of them by merging rows, and the work per
-- query follows the (bucket, tenant, method, platform, stage, outcome) cells in range, not
-- the devices or events. The outcome is a key column rather than three state columns
-- (reached, succeeded, failed) because the unions mix "reached" and "succeeded" sets, and
-- ClickHouse merges states only within one column.
-- No hourly grain: the planner reads raw rows for the partial days at a range's edges (the
-- view work per event stays two uniq updates). Ordered by (bucket, tenant, ..) in 32-row
-- granules, like 0007: a range's edge days are read without the rest, and one tenant's rows of
-- a bucket sit together. `events` (count) lets the chDB lane's double-count trap check the
-- views.
--
-- `{cutover}`, `{extra_settings}`: as in 0003 (views take rows received from the cutover on,
-- the backfill the rows before; see rollups/mod.rs).

CREATE TABLE IF NOT EXISTS {db}.rollup_funnel_daily
(
    tenant String,
    bucket DateTime('UTC'),
    enrollment_method String,
    platform String,
    stage String,
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, tenant, enrollment_method, platform, stage, outcome)
SETTINGS index_granularity = 32{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_funnel_weekly
(
    tenant String,
    bucket DateTime('UTC'),
    enrollment_method String,
    platform String,
    stage String,
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, tenant, enrollment_method, platform, stage, outcome)
SETTINGS index_granularity = 32{extra_settings};

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_funnel_daily_mv TO {db}.rollup_funnel_daily AS
SELECT
    tenant, toStartOfDay(occurred_at) AS bucket, enrollment_method, platform, stage, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, enrollment_method, platform, stage, outcome;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_funnel_weekly_mv TO {db}.rollup_funnel_weekly AS
SELECT
    tenant, toDateTime(toMonday(occurred_at), 'UTC') AS bucket, enrollment_method, platform, stage, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, enrollment_method, platform, stage, outcome;
