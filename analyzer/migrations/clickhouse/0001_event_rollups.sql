-- Analyzer-owned rollups of `{db}.enrollment_events`, maintained by ClickHouse itself through
-- materialized views. They keep the raw signal columns (code, symbol, a bounded message key,
-- platform, stage, source kind) rather than a category, so that a better catalog re-classifies
-- history at query time. Must run on ClickHouse 18.16 and current releases (no TTL, no
-- LowCardinality, no SimpleAggregateFunction).
--
-- `{cutover}` is a Unix time chosen by the migration runner (server clock + 1 s): the views only
-- take rows with `received_at >= cutover`; rows received earlier are copied by the backfill
-- statement (0001_event_rollups_backfill.sql), run once the grace period after the cutover has
-- passed. Every raw row is therefore counted exactly once (see rollups/mod.rs).
--
-- The message key must stay byte-identical to `MESSAGE_KEY_SQL` in src/query/sql.rs: GUIDs and
-- ISO timestamps are masked and the text cut to 200 characters, which bounds cardinality
-- (trace ids, times) while keeping the words the classifier disambiguates on.

CREATE TABLE IF NOT EXISTS {db}.rollup_events_hourly
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

CREATE TABLE IF NOT EXISTS {db}.rollup_events_daily
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

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_events_hourly_mv TO {db}.rollup_events_hourly AS
SELECT
    tenant,
    toStartOfHour(occurred_at) AS bucket,
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

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_events_daily_mv TO {db}.rollup_events_daily AS
SELECT
    tenant,
    toStartOfDay(occurred_at) AS bucket,
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
