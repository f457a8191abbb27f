-- Migration 0008: per-device failure rollups for the affected-devices list. Must run on
-- ClickHouse 18.16 and current releases.
--
-- Why (measured at 10M events, BENCHMARKS.md, fifth session): `/affected-devices` grouped the
-- failed raw rows of the range per device and computed each row's signal id (two regexes
-- over the message) to tell its category: 2.5-4x the raw-scan baseline for one category. Here
-- one row per (bucket, signal, tenant, device, user, OS version, method) of the failed events,
-- with their count and the first and last time: a page reads the rows of the category's
-- signals only (`sig` leads the key after the bucket), and no regex runs at request time.
-- Every column a filter, the search or the answer needs is in the key (the signal id fixes
-- code, symbol, platform, stage and source kind), so the answer is exactly the raw one: the
-- failures are a count, the first and last failure a min and a max, and the device's latest
-- failure's fields are those of the row holding the latest time (query/affected.rs).
-- A device's rows stay on one shard in cluster mode (the raw tables are sharded by tenant and
-- device, and these views read the shard's local raw table).
--
-- `{cutover}`, `{extra_settings}`: as in 0003 (views take rows received from the cutover on,
-- the backfill the rows before; see rollups/mod.rs).

CREATE TABLE IF NOT EXISTS {db}.rollup_device_failures_hourly
(
    bucket DateTime('UTC'),
    sig UInt64,
    tenant String,
    device_id String,
    user_principal_name String,
    os_version String,
    enrollment_method String,
    platform String,
    stage String,
    source_kind String,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    failures AggregateFunction(count),
    first_failure AggregateFunction(min, DateTime('UTC')),
    last_failure AggregateFunction(max, DateTime('UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, sig, tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 4096{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_device_failures_daily
(
    bucket DateTime('UTC'),
    sig UInt64,
    tenant String,
    device_id String,
    user_principal_name String,
    os_version String,
    enrollment_method String,
    platform String,
    stage String,
    source_kind String,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    failures AggregateFunction(count),
    first_failure AggregateFunction(min, DateTime('UTC')),
    last_failure AggregateFunction(max, DateTime('UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, sig, tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 4096{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_device_failures_weekly
(
    bucket DateTime('UTC'),
    sig UInt64,
    tenant String,
    device_id String,
    user_principal_name String,
    os_version String,
    enrollment_method String,
    platform String,
    stage String,
    source_kind String,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    failures AggregateFunction(count),
    first_failure AggregateFunction(min, DateTime('UTC')),
    last_failure AggregateFunction(max, DateTime('UTC'))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, sig, tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 4096{extra_settings};

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_device_failures_hourly_mv TO {db}.rollup_device_failures_hourly AS
SELECT
    toStartOfHour(occurred_at) AS bucket, cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig,
    tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol,
    countState() AS failures,
    minState(occurred_at) AS first_failure,
    maxState(occurred_at) AS last_failure
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC') AND outcome = 'failed'
GROUP BY bucket, sig, tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_device_failures_daily_mv TO {db}.rollup_device_failures_daily AS
SELECT
    toStartOfDay(occurred_at) AS bucket, cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig,
    tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol,
    countState() AS failures,
    minState(occurred_at) AS first_failure,
    maxState(occurred_at) AS last_failure
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC') AND outcome = 'failed'
GROUP BY bucket, sig, tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_device_failures_weekly_mv TO {db}.rollup_device_failures_weekly AS
SELECT
    toDateTime(toMonday(occurred_at), 'UTC') AS bucket, cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig,
    tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol,
    countState() AS failures,
    minState(occurred_at) AS first_failure,
    maxState(occurred_at) AS last_failure
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC') AND outcome = 'failed'
GROUP BY bucket, sig, tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol;
