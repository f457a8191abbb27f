-- Coarser rollups beside 0001's fine ones (same state columns, same `{cutover}` scheme, own
-- cutover and backfill). Dashboard queries merge uniq states, and the cost of that merge grows
-- with the number of (device, bucket, key) combinations stored, not with the number of rows:
-- * `rollup_events_weekly`: 0001's key at Monday-aligned weeks, for the whole-week middle of
--   long ranges that are not bucketed by time (summaries, breakdowns, top codes): a device
--   active every day is one element per week here instead of seven.
-- * `rollup_totals_{hourly,daily,weekly}`: tenant x bucket x outcome x platform x enrollment
--   method only, for questions that filter or group by nothing else (fleet totals, time series,
--   platform/method/tenant/outcome breakdowns): no split by stage, code or message.
-- The query planner (src/query/plan.rs) picks the coarsest family and grain that answers.
-- Weekly buckets are `toMonday`, as DateTime at 00:00 UTC.

CREATE TABLE IF NOT EXISTS {db}.rollup_events_weekly
(
    tenant String,
    bucket DateTime('UTC'),
    platform String,
    os_version String,
    enrollment_method String,
    stage String,
    outcome String,
    source_kind String,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    message_key String,
    events AggregateFunction(count),
    devices AggregateFunction(uniq, String, String),
    users AggregateFunction(uniqIf, String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome, platform, enrollment_method, stage, os_version, error_code, error_has_code, error_symbol, message_key, source_kind);

CREATE TABLE IF NOT EXISTS {db}.rollup_totals_hourly
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    events AggregateFunction(count),
    devices AggregateFunction(uniq, String, String),
    users AggregateFunction(uniqIf, String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome, platform, enrollment_method);

CREATE TABLE IF NOT EXISTS {db}.rollup_totals_daily
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    events AggregateFunction(count),
    devices AggregateFunction(uniq, String, String),
    users AggregateFunction(uniqIf, String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome, platform, enrollment_method);

CREATE TABLE IF NOT EXISTS {db}.rollup_totals_weekly
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    events AggregateFunction(count),
    devices AggregateFunction(uniq, String, String),
    users AggregateFunction(uniqIf, String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome, platform, enrollment_method);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_events_weekly_mv TO {db}.rollup_events_weekly AS
SELECT
    tenant,
    toDateTime(toMonday(occurred_at), 'UTC') AS bucket,
    platform, os_version, enrollment_method, stage, outcome, source_kind,
    error_code, error_has_code, error_symbol,
    {message_key} AS message_key,
    countState() AS events,
    uniqState(tenant, device_id) AS devices,
    uniqIfState(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY tenant, bucket, platform, os_version, enrollment_method, stage, outcome, source_kind,
    error_code, error_has_code, error_symbol, message_key;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_totals_hourly_mv TO {db}.rollup_totals_hourly AS
SELECT
    tenant,
    toStartOfHour(occurred_at) AS bucket,
    outcome, platform, enrollment_method,
    countState() AS events,
    uniqState(tenant, device_id) AS devices,
    uniqIfState(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY tenant, bucket, outcome, platform, enrollment_method;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_totals_daily_mv TO {db}.rollup_totals_daily AS
SELECT
    tenant,
    toStartOfDay(occurred_at) AS bucket,
    outcome, platform, enrollment_method,
    countState() AS events,
    uniqState(tenant, device_id) AS devices,
    uniqIfState(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY tenant, bucket, outcome, platform, enrollment_method;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_totals_weekly_mv TO {db}.rollup_totals_weekly AS
SELECT
    tenant,
    toDateTime(toMonday(occurred_at), 'UTC') AS bucket,
    outcome, platform, enrollment_method,
    countState() AS events,
    uniqState(tenant, device_id) AS devices,
    uniqIfState(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY tenant, bucket, outcome, platform, enrollment_method;
