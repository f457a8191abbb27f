-- Migration 0010: the enrollment funnel's device sets over all tenants, per (bucket, enrollment
-- method, platform, stage, outcome): 0009 without the tenant, plus an hourly grain. Must run on
-- ClickHouse 18.16 and current releases.
--
-- Why (measured at 10M events, 20 tenants, BENCHMARKS.md, issue 7 sixth session): a 30-day
-- funnel over 0009 merges one HyperLogLog state per (bucket, tenant, method, platform, stage,
-- outcome): 3,600 states of ~10 KB for 12 buckets, 0.19-0.35 s, and 0.2-0.26 s more to build
-- states from the raw rows of the partial edge days. Without the tenant the same answer reads
-- 720 states (0.07-0.11 s), and hourly rows at the edges replace the raw rows (0.11-0.16 s
-- unaligned against 0.21-0.35 s). The states are the same function on the same arguments
-- (uniqCombined(14) of (tenant, device_id)), so unions over tenants are the same sets and
-- the answers equal 0009's. One tenant's funnel keeps reading 0009 (its raw edges are cheap:
-- the raw table is ordered by tenant first).
--
-- `{cutover}`, `{extra_settings}`: as in 0003 (views take rows received from the cutover on,
-- the backfill the rows before; see rollups/mod.rs).

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_funnel_hourly
(
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
ORDER BY (bucket, enrollment_method, platform, stage, outcome)
SETTINGS index_granularity = 32{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_funnel_daily
(
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
ORDER BY (bucket, enrollment_method, platform, stage, outcome)
SETTINGS index_granularity = 32{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_funnel_weekly
(
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
ORDER BY (bucket, enrollment_method, platform, stage, outcome)
SETTINGS index_granularity = 32{extra_settings};

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_funnel_hourly_mv TO {db}.rollup_fleet_funnel_hourly AS
SELECT
    toStartOfHour(occurred_at) AS bucket, enrollment_method, platform, stage, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, enrollment_method, platform, stage, outcome;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_funnel_daily_mv TO {db}.rollup_fleet_funnel_daily AS
SELECT
    toStartOfDay(occurred_at) AS bucket, enrollment_method, platform, stage, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, enrollment_method, platform, stage, outcome;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_funnel_weekly_mv TO {db}.rollup_fleet_funnel_weekly AS
SELECT
    toDateTime(toMonday(occurred_at), 'UTC') AS bucket, enrollment_method, platform, stage, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, enrollment_method, platform, stage, outcome;
