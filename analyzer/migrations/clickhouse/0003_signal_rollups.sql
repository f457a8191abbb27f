-- Migration 0003: rollups keyed by a signal id, with small distinct-count states. Replaces the
-- rollups of 0001 and 0002 (dropped by the migration runner once these are backfilled).
-- Must run on ClickHouse 18.16 and current releases (no TTL, no LowCardinality). The tables
-- and views below repeat one pattern per family and grain (plain SQL that both servers run as
-- it is); keep their SELECTs identical but for the key columns and the bucket function.
--
-- Why (measured, see BENCHMARKS.md): the old rollups kept `uniq` states (about 200 KB at 200k
-- devices) and every signal column (code, symbol, a 200-character message key), so a 30-day
-- dashboard query merged about as many state elements as there were raw rows. Here:
-- * `sig` = cityHash64 of the classification inputs (code, has_code, symbol, masked message
--   key, platform, stage, source kind) replaces the message key in every rollup key; the
--   `signal_dictionary` maps it back to those inputs. Classification stays at query time: the
--   analyzer classifies the few distinct signals in scope in Rust, so a better catalog still
--   re-classifies all history. `sig` must stay byte-identical to `Col::Sig` in
--   src/query/engine.rs (the raw edges compute it per row).
-- * `uniqCombined(14)` states: exact (a set of 64-bit hashes) up to 1024 distinct values, then
--   a 2^14-cell HyperLogLog of ~12.5 KB, so a state never grows with the fleet; see
--   `query::engine::EXACT_UNIQUE_LIMIT` for the documented error bound.
-- * `index_granularity = 256`: a state column is deserialized for every row of each granule
--   read, so small granules let the key's time range skip the states outside the range.
-- * four families, each at hour, day and Monday-aligned week grain (the two outcome families
--   also at five minutes, for sub-hour time series), so a query reads the fewest
--   (bucket, key) cells that answer it:
--   - `rollup_signals_*`   tenant x outcome x platform x method x stage x OS version x source x
--                          signal: every aggregate question (drill-down);
--   - `rollup_outcomes_*`  tenant x outcome x platform x method x source: totals and time
--                          series of one tenant;
--   - `rollup_fleet_signals_*`, `rollup_fleet_outcomes_*`: the same without the tenant, for
--     all-tenant views. Devices are counted as (tenant, device_id), so a fleet cell's state
--     still counts a device of two tenants twice, as the per-tenant states do.
--
-- `{cutover}` is chosen by the migration runner (server clock + 1 s); the views take rows
-- received from then on, the backfill (0003_signal_rollups_backfill.sql) the rows before, so
-- every raw row is counted exactly once (see rollups/mod.rs). `{extra_settings}` is empty on
-- 18.16 and, on servers that support it, adds `non_replicated_deduplication_window` so that an
-- insert retried with a deduplication token is not counted twice by the views (see
-- rollups/mod.rs).

CREATE TABLE IF NOT EXISTS {db}.signal_dictionary
(
    sig UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    message_key String,
    platform String,
    stage String,
    source_kind String
)
ENGINE = ReplacingMergeTree
ORDER BY sig;

CREATE TABLE IF NOT EXISTS {db}.rollup_signals_hourly
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    stage String,
    os_version String,
    source_kind String,
    sig UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome, platform, enrollment_method, stage, os_version, source_kind, sig, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_signals_daily
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    stage String,
    os_version String,
    source_kind String,
    sig UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome, platform, enrollment_method, stage, os_version, source_kind, sig, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_signals_weekly
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    stage String,
    os_version String,
    source_kind String,
    sig UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome, platform, enrollment_method, stage, os_version, source_kind, sig, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_outcomes_5m
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    source_kind String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome, platform, enrollment_method, source_kind)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_outcomes_hourly
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    source_kind String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome, platform, enrollment_method, source_kind)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_outcomes_daily
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    source_kind String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome, platform, enrollment_method, source_kind)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_outcomes_weekly
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    source_kind String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome, platform, enrollment_method, source_kind)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_signals_hourly
(
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    stage String,
    source_kind String,
    sig UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_signals_daily
(
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    stage String,
    source_kind String,
    sig UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_signals_weekly
(
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    stage String,
    source_kind String,
    sig UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_outcomes_5m
(
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    source_kind String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, outcome, platform, enrollment_method, source_kind)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_outcomes_hourly
(
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    source_kind String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, outcome, platform, enrollment_method, source_kind)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_outcomes_daily
(
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    source_kind String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, outcome, platform, enrollment_method, source_kind)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_outcomes_weekly
(
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    source_kind String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, outcome, platform, enrollment_method, source_kind)
SETTINGS index_granularity = 256{extra_settings};

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_signals_hourly_mv TO {db}.rollup_signals_hourly AS
SELECT
    tenant, toStartOfHour(occurred_at) AS bucket, outcome, platform, enrollment_method, stage, os_version, source_kind, cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig, error_code, error_has_code, error_symbol,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, outcome, platform, enrollment_method, stage, os_version, source_kind, sig, error_code, error_has_code, error_symbol;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_signals_daily_mv TO {db}.rollup_signals_daily AS
SELECT
    tenant, toStartOfDay(occurred_at) AS bucket, outcome, platform, enrollment_method, stage, os_version, source_kind, cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig, error_code, error_has_code, error_symbol,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, outcome, platform, enrollment_method, stage, os_version, source_kind, sig, error_code, error_has_code, error_symbol;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_signals_weekly_mv TO {db}.rollup_signals_weekly AS
SELECT
    tenant, toDateTime(toMonday(occurred_at), 'UTC') AS bucket, outcome, platform, enrollment_method, stage, os_version, source_kind, cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig, error_code, error_has_code, error_symbol,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, outcome, platform, enrollment_method, stage, os_version, source_kind, sig, error_code, error_has_code, error_symbol;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_outcomes_5m_mv TO {db}.rollup_outcomes_5m AS
SELECT
    tenant, toStartOfFiveMinute(occurred_at) AS bucket, outcome, platform, enrollment_method, source_kind,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, outcome, platform, enrollment_method, source_kind;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_outcomes_hourly_mv TO {db}.rollup_outcomes_hourly AS
SELECT
    tenant, toStartOfHour(occurred_at) AS bucket, outcome, platform, enrollment_method, source_kind,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, outcome, platform, enrollment_method, source_kind;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_outcomes_daily_mv TO {db}.rollup_outcomes_daily AS
SELECT
    tenant, toStartOfDay(occurred_at) AS bucket, outcome, platform, enrollment_method, source_kind,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, outcome, platform, enrollment_method, source_kind;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_outcomes_weekly_mv TO {db}.rollup_outcomes_weekly AS
SELECT
    tenant, toDateTime(toMonday(occurred_at), 'UTC') AS bucket, outcome, platform, enrollment_method, source_kind,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, outcome, platform, enrollment_method, source_kind;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_signals_hourly_mv TO {db}.rollup_fleet_signals_hourly AS
SELECT
    toStartOfHour(occurred_at) AS bucket, outcome, platform, stage, source_kind, cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig, error_code, error_has_code, error_symbol,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_signals_daily_mv TO {db}.rollup_fleet_signals_daily AS
SELECT
    toStartOfDay(occurred_at) AS bucket, outcome, platform, stage, source_kind, cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig, error_code, error_has_code, error_symbol,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_signals_weekly_mv TO {db}.rollup_fleet_signals_weekly AS
SELECT
    toDateTime(toMonday(occurred_at), 'UTC') AS bucket, outcome, platform, stage, source_kind, cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig, error_code, error_has_code, error_symbol,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_outcomes_5m_mv TO {db}.rollup_fleet_outcomes_5m AS
SELECT
    toStartOfFiveMinute(occurred_at) AS bucket, outcome, platform, enrollment_method, source_kind,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, outcome, platform, enrollment_method, source_kind;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_outcomes_hourly_mv TO {db}.rollup_fleet_outcomes_hourly AS
SELECT
    toStartOfHour(occurred_at) AS bucket, outcome, platform, enrollment_method, source_kind,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, outcome, platform, enrollment_method, source_kind;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_outcomes_daily_mv TO {db}.rollup_fleet_outcomes_daily AS
SELECT
    toStartOfDay(occurred_at) AS bucket, outcome, platform, enrollment_method, source_kind,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, outcome, platform, enrollment_method, source_kind;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_outcomes_weekly_mv TO {db}.rollup_fleet_outcomes_weekly AS
SELECT
    toDateTime(toMonday(occurred_at), 'UTC') AS bucket, outcome, platform, enrollment_method, source_kind,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, outcome, platform, enrollment_method, source_kind;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.signal_dictionary_mv TO {db}.signal_dictionary AS
SELECT
    cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig,
    error_code, error_has_code, error_symbol, {message_key} AS message_key,
    platform, stage, source_kind
FROM {db}.enrollment_events
WHERE outcome = 'failed' AND received_at >= toDateTime({cutover}, 'UTC')
GROUP BY sig, error_code, error_has_code, error_symbol, message_key, platform, stage, source_kind;
