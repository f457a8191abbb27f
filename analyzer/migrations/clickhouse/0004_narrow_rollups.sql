-- Migration 0004: narrow rollups for the dashboard's default questions, and finalized counts of
-- closed time-series buckets. Adds to the rollups of 0003 (which stay: drill-down, filtered
-- questions and five-minute grain). Must run on ClickHouse 18.16 and current releases; the
-- statements repeat one pattern per family and grain, as in 0003.
--
-- Why (measured at 10M events, BENCHMARKS.md): a query costs about one uniqCombined state read
-- and merged per (bucket, key) cell in range, and 0003's narrowest all-tenant family still
-- splits every bucket by outcome x platform x method x source (24 cells here) and every failed
-- signal by platform and stage (~200 cells per bucket). Here:
-- * `rollup_fleet_narrow_*` (bucket x outcome) and `rollup_narrow_*` (tenant x bucket x
--   outcome): totals of the whole fleet or of one tenant, the outcome and tenant breakdowns
--   (3 cells per bucket instead of 24);
-- * `rollup_fleet_facets_*` (bucket x facet x value x outcome, one row per dimension value via
--   ARRAY JOIN): a breakdown by platform, method, stage, OS version or side with no other
--   filter reads only that dimension's cells;
-- * `rollup_fleet_cores_*` (bucket x outcome x source x signal core x code): the signal `core`
--   is `sig` without platform and stage. When every signal of every core classifies the same
--   in all its contexts (checked per query against `signal_dictionary` and the catalog, in
--   Rust), category, code and top-code questions read ~10 cores per bucket instead of ~200
--   signals; otherwise the engine uses 0003's signal families, so a better catalog still
--   re-classifies all history.
-- * `rollup_closed_series`: finalized metrics per closed time-series bucket (5 min, 15 min,
--   1 h, 1 day), for the whole fleet and per tenant, computed by the analyzer's finalizer from
--   the rollups' states and stored with the bucket's event count. A series reads these
--   numbers, not states, for every bucket whose stored count still equals the rollup's count
--   (rollup rows are only ever added, so an unchanged count means unchanged contents); late
--   events change the count and send that bucket back to the states until it is finalized
--   again (see query/series.rs).
--
-- `{cutover}`, `{extra_settings}`: as in 0003 (views take rows received from the cutover on,
-- the backfill the rows before; see rollups/mod.rs).

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_narrow_hourly
(
    bucket DateTime('UTC'),
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, outcome)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_narrow_daily
(
    bucket DateTime('UTC'),
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, outcome)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_narrow_weekly
(
    bucket DateTime('UTC'),
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, outcome)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_narrow_hourly
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_narrow_daily
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_narrow_weekly
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (tenant, bucket, outcome)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_facets_hourly
(
    bucket DateTime('UTC'),
    facet String,
    value String,
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, facet, value, outcome)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_facets_daily
(
    bucket DateTime('UTC'),
    facet String,
    value String,
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, facet, value, outcome)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_facets_weekly
(
    bucket DateTime('UTC'),
    facet String,
    value String,
    outcome String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, facet, value, outcome)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_cores_hourly
(
    bucket DateTime('UTC'),
    outcome String,
    source_kind String,
    core UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_cores_daily
(
    bucket DateTime('UTC'),
    outcome String,
    source_kind String,
    core UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_fleet_cores_weekly
(
    bucket DateTime('UTC'),
    outcome String,
    source_kind String,
    core UInt64,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    events AggregateFunction(count),
    devices AggregateFunction(uniqCombined(14), String, String),
    users AggregateFunction(uniqCombinedIf(14), String, String, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol)
SETTINGS index_granularity = 256{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.rollup_closed_series
(
    width UInt32,
    all_tenants UInt8,
    tenant String,
    bucket DateTime('UTC'),
    version UInt32,
    events UInt64,
    attempts UInt64,
    failures UInt64,
    affected_devices UInt64,
    affected_users UInt64,
    devices UInt64,
    users UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(bucket)
ORDER BY (width, all_tenants, tenant, bucket);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_narrow_hourly_mv TO {db}.rollup_fleet_narrow_hourly AS
SELECT
    toStartOfHour(occurred_at) AS bucket, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, outcome;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_narrow_daily_mv TO {db}.rollup_fleet_narrow_daily AS
SELECT
    toStartOfDay(occurred_at) AS bucket, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, outcome;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_narrow_weekly_mv TO {db}.rollup_fleet_narrow_weekly AS
SELECT
    toDateTime(toMonday(occurred_at), 'UTC') AS bucket, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, outcome;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_narrow_hourly_mv TO {db}.rollup_narrow_hourly AS
SELECT
    tenant, toStartOfHour(occurred_at) AS bucket, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, outcome;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_narrow_daily_mv TO {db}.rollup_narrow_daily AS
SELECT
    tenant, toStartOfDay(occurred_at) AS bucket, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, outcome;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_narrow_weekly_mv TO {db}.rollup_narrow_weekly AS
SELECT
    tenant, toDateTime(toMonday(occurred_at), 'UTC') AS bucket, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, outcome;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_facets_hourly_mv TO {db}.rollup_fleet_facets_hourly AS
SELECT
    toStartOfHour(occurred_at) AS bucket, kv.1 AS facet, kv.2 AS value, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
ARRAY JOIN [('platform', platform), ('enrollment_method', enrollment_method), ('stage', stage), ('os_version', os_version), ('source_kind', source_kind)] AS kv
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, facet, value, outcome;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_facets_daily_mv TO {db}.rollup_fleet_facets_daily AS
SELECT
    toStartOfDay(occurred_at) AS bucket, kv.1 AS facet, kv.2 AS value, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
ARRAY JOIN [('platform', platform), ('enrollment_method', enrollment_method), ('stage', stage), ('os_version', os_version), ('source_kind', source_kind)] AS kv
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, facet, value, outcome;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_facets_weekly_mv TO {db}.rollup_fleet_facets_weekly AS
SELECT
    toDateTime(toMonday(occurred_at), 'UTC') AS bucket, kv.1 AS facet, kv.2 AS value, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
ARRAY JOIN [('platform', platform), ('enrollment_method', enrollment_method), ('stage', stage), ('os_version', os_version), ('source_kind', source_kind)] AS kv
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, facet, value, outcome;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_cores_hourly_mv TO {db}.rollup_fleet_cores_hourly AS
SELECT
    toStartOfHour(occurred_at) AS bucket, outcome, source_kind, cityHash64(error_code, error_has_code, error_symbol, {message_key}, source_kind) AS core, error_code, error_has_code, error_symbol,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_cores_daily_mv TO {db}.rollup_fleet_cores_daily AS
SELECT
    toStartOfDay(occurred_at) AS bucket, outcome, source_kind, cityHash64(error_code, error_has_code, error_symbol, {message_key}, source_kind) AS core, error_code, error_has_code, error_symbol,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.rollup_fleet_cores_weekly_mv TO {db}.rollup_fleet_cores_weekly AS
SELECT
    toDateTime(toMonday(occurred_at), 'UTC') AS bucket, outcome, source_kind, cityHash64(error_code, error_has_code, error_symbol, {message_key}, source_kind) AS core, error_code, error_has_code, error_symbol,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol;
