-- Migration 0007: per-tenant totals with the failed-only unique counts stored as their own
-- states. Must run on ClickHouse 18.16 and current releases.
--
-- Why (measured at 10M events, BENCHMARKS.md, fifth session): the tenant breakdown read
-- `rollup_narrow_*` (tenant x bucket x outcome) and merged every row's two uniqCombined(14)
-- states twice (all outcomes, and failed only through -MergeIf): over 30 days 20 tenants x
-- (3 weeks + 9 days) x 3 outcomes = 720 rows, ~1,900 HyperLogLog merges of 2^14 cells, which
-- were the whole cost (0.17-0.25 s; 0.3-0.5x the raw-scan baseline under load). Here one row
-- per (tenant, bucket) holds the four unique counts the answer needs as four states (devices,
-- failed devices, users, failed users) and the three event counts: each state is merged once,
-- and there is no outcome split, so the same answer merges 240 rows x 4 states.
-- Ordered by (bucket, tenant) in 32-row granules: a breakdown reads every tenant of the
-- buckets in range, and a state column is deserialized for every row of a granule read, so
-- the rows of the range's edge days must sit together (ordered by tenant first, every
-- granule held some edge day and the whole table was read). The engine reads these tables
-- for the tenant breakdown over all tenants with no other filter (query/engine.rs
-- `Engine::tenant_totals_plan`); one tenant's totals and filtered questions still read
-- 0003/0004's families (keyed by tenant first). Same states as 0004 (same functions on the same arguments), so
-- the answers equal `rollup_narrow_*`'s, within the same error bound of the raw answer.
--
-- `{cutover}`, `{extra_settings}`: as in 0003 (views take rows received from the cutover on,
-- the backfill the rows before; see rollups/mod.rs).

CREATE TABLE IF NOT EXISTS {db}.rollup_tenant_totals_hourly
(
    tenant String,
    bucket DateTime('UTC'),
    events AggregateFunction(count),
    attempt_events AggregateFunction(countIf, UInt8),
    failed_events AggregateFunction(countIf, UInt8),
    devices AggregateFunction(uniqCombined(14), String, String),
    failed_devices AggregateFunction(uniqCombinedIf(14), String, String, UInt8),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8),
    failed_users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, tenant)
SETTINGS index_granularity = 32{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_tenant_totals_daily
(
    tenant String,
    bucket DateTime('UTC'),
    events AggregateFunction(count),
    attempt_events AggregateFunction(countIf, UInt8),
    failed_events AggregateFunction(countIf, UInt8),
    devices AggregateFunction(uniqCombined(14), String, String),
    failed_devices AggregateFunction(uniqCombinedIf(14), String, String, UInt8),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8),
    failed_users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, tenant)
SETTINGS index_granularity = 32{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_tenant_totals_weekly
(
    tenant String,
    bucket DateTime('UTC'),
    events AggregateFunction(count),
    attempt_events AggregateFunction(countIf, UInt8),
    failed_events AggregateFunction(countIf, UInt8),
    devices AggregateFunction(uniqCombined(14), String, String),
    failed_devices AggregateFunction(uniqCombinedIf(14), String, String, UInt8),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8),
    failed_users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, tenant)
SETTINGS index_granularity = 32{extra_settings};

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_tenant_totals_hourly_mv TO {db}.rollup_tenant_totals_hourly AS
SELECT
    tenant, toStartOfHour(occurred_at) AS bucket,
    countState() AS events,
    countIfState(toUInt8(outcome IN ('succeeded', 'failed'))) AS attempt_events,
    countIfState(toUInt8(outcome = 'failed')) AS failed_events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, device_id, toUInt8(outcome = 'failed')) AS failed_devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '')) AS users,
    uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '' AND outcome = 'failed')) AS failed_users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_tenant_totals_daily_mv TO {db}.rollup_tenant_totals_daily AS
SELECT
    tenant, toStartOfDay(occurred_at) AS bucket,
    countState() AS events,
    countIfState(toUInt8(outcome IN ('succeeded', 'failed'))) AS attempt_events,
    countIfState(toUInt8(outcome = 'failed')) AS failed_events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, device_id, toUInt8(outcome = 'failed')) AS failed_devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '')) AS users,
    uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '' AND outcome = 'failed')) AS failed_users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_tenant_totals_weekly_mv TO {db}.rollup_tenant_totals_weekly AS
SELECT
    tenant, toDateTime(toMonday(occurred_at), 'UTC') AS bucket,
    countState() AS events,
    countIfState(toUInt8(outcome IN ('succeeded', 'failed'))) AS attempt_events,
    countIfState(toUInt8(outcome = 'failed')) AS failed_events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, device_id, toUInt8(outcome = 'failed')) AS failed_devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '')) AS users,
    uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '' AND outcome = 'failed')) AS failed_users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant;
