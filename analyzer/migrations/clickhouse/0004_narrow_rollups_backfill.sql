-- One-off backfill for 0004, run after `{cutover}` + grace (see rollups/mod.rs). The raw rows
-- received before the cutover are read once, into a staging table at hour grain keyed by every
-- column the new families need; each family and grain is derived from it with `-MergeState`.
-- The staging table holds only backfilled rows, so rows the views already wrote are never
-- derived twice. Closed series buckets are finalized afterwards by the analyzer (not here).

CREATE TABLE IF NOT EXISTS {db}.rollup_backfill_narrow
(
    tenant String,
    bucket DateTime('UTC'),
    outcome String,
    platform String,
    enrollment_method String,
    stage String,
    os_version String,
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
ORDER BY (tenant, bucket, outcome, platform, enrollment_method, stage, os_version, source_kind, core, error_code, error_has_code, error_symbol);

INSERT INTO {db}.rollup_backfill_narrow
SELECT
    tenant, toStartOfHour(occurred_at) AS bucket, outcome, platform, enrollment_method, stage, os_version, source_kind, cityHash64(error_code, error_has_code, error_symbol, {message_key}, source_kind) AS core, error_code, error_has_code, error_symbol,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, outcome, platform, enrollment_method, stage, os_version, source_kind, core, error_code, error_has_code, error_symbol;

INSERT INTO {db}.rollup_fleet_narrow_hourly
SELECT
    bucket AS bucket, outcome,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_narrow
GROUP BY bucket, outcome;

INSERT INTO {db}.rollup_fleet_narrow_daily
SELECT
    toStartOfDay(bucket) AS bucket, outcome,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_narrow
GROUP BY bucket, outcome;

INSERT INTO {db}.rollup_fleet_narrow_weekly
SELECT
    toDateTime(toMonday(bucket), 'UTC') AS bucket, outcome,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_narrow
GROUP BY bucket, outcome;

INSERT INTO {db}.rollup_narrow_hourly
SELECT
    tenant, bucket AS bucket, outcome,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_narrow
GROUP BY bucket, tenant, outcome;

INSERT INTO {db}.rollup_narrow_daily
SELECT
    tenant, toStartOfDay(bucket) AS bucket, outcome,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_narrow
GROUP BY bucket, tenant, outcome;

INSERT INTO {db}.rollup_narrow_weekly
SELECT
    tenant, toDateTime(toMonday(bucket), 'UTC') AS bucket, outcome,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_narrow
GROUP BY bucket, tenant, outcome;

INSERT INTO {db}.rollup_fleet_facets_hourly
SELECT
    bucket AS bucket, kv.1 AS facet, kv.2 AS value, outcome,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_narrow
ARRAY JOIN [('platform', platform), ('enrollment_method', enrollment_method), ('stage', stage), ('os_version', os_version), ('source_kind', source_kind)] AS kv
GROUP BY bucket, facet, value, outcome;

INSERT INTO {db}.rollup_fleet_facets_daily
SELECT
    toStartOfDay(bucket) AS bucket, kv.1 AS facet, kv.2 AS value, outcome,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_narrow
ARRAY JOIN [('platform', platform), ('enrollment_method', enrollment_method), ('stage', stage), ('os_version', os_version), ('source_kind', source_kind)] AS kv
GROUP BY bucket, facet, value, outcome;

INSERT INTO {db}.rollup_fleet_facets_weekly
SELECT
    toDateTime(toMonday(bucket), 'UTC') AS bucket, kv.1 AS facet, kv.2 AS value, outcome,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_narrow
ARRAY JOIN [('platform', platform), ('enrollment_method', enrollment_method), ('stage', stage), ('os_version', os_version), ('source_kind', source_kind)] AS kv
GROUP BY bucket, facet, value, outcome;

INSERT INTO {db}.rollup_fleet_cores_hourly
SELECT
    bucket AS bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_narrow
GROUP BY bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol;

INSERT INTO {db}.rollup_fleet_cores_daily
SELECT
    toStartOfDay(bucket) AS bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_narrow
GROUP BY bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol;

INSERT INTO {db}.rollup_fleet_cores_weekly
SELECT
    toDateTime(toMonday(bucket), 'UTC') AS bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_narrow
GROUP BY bucket, outcome, source_kind, core, error_code, error_has_code, error_symbol;

DROP TABLE IF EXISTS {db}.rollup_backfill_narrow;
