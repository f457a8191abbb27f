-- One-off backfill for 0003: copies raw rows received before 0003's cutover into every new
-- rollup and the signal dictionary. Run by the migration runner only after `{cutover}` + grace
-- has passed on the server clock, in the run that created the views (see rollups/mod.rs).
--
-- The raw rows are read twice (plus once more for the failed rows' signals), not once per
-- rollup: they are aggregated into two staging tables at the finest key (hour x every
-- dimension, five minutes x the outcome key), and every rollup is derived from those by
-- merging states (`-MergeState`). The staging tables hold only backfilled rows, so rows the
-- views already wrote are never derived twice; they are dropped at the end (and by a rebuild
-- after an interrupted backfill).

CREATE TABLE IF NOT EXISTS {db}.rollup_backfill_signals AS {db}.rollup_signals_hourly;

INSERT INTO {db}.rollup_backfill_signals
SELECT
    tenant, toStartOfHour(occurred_at) AS bucket, outcome, platform, enrollment_method, stage, os_version, source_kind, cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig, error_code, error_has_code, error_symbol,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, outcome, platform, enrollment_method, stage, os_version, source_kind, sig, error_code, error_has_code, error_symbol;

CREATE TABLE IF NOT EXISTS {db}.rollup_backfill_outcomes AS {db}.rollup_outcomes_5m;

INSERT INTO {db}.rollup_backfill_outcomes
SELECT
    tenant, toStartOfFiveMinute(occurred_at) AS bucket, outcome, platform, enrollment_method, source_kind,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, outcome, platform, enrollment_method, source_kind;

INSERT INTO {db}.rollup_signals_hourly
SELECT
    tenant, bucket AS bucket, outcome, platform, enrollment_method, stage, os_version, source_kind, sig, error_code, error_has_code, error_symbol,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_signals
GROUP BY bucket, tenant, outcome, platform, enrollment_method, stage, os_version, source_kind, sig, error_code, error_has_code, error_symbol;

INSERT INTO {db}.rollup_signals_daily
SELECT
    tenant, toStartOfDay(bucket) AS bucket, outcome, platform, enrollment_method, stage, os_version, source_kind, sig, error_code, error_has_code, error_symbol,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_signals
GROUP BY bucket, tenant, outcome, platform, enrollment_method, stage, os_version, source_kind, sig, error_code, error_has_code, error_symbol;

INSERT INTO {db}.rollup_signals_weekly
SELECT
    tenant, toDateTime(toMonday(bucket), 'UTC') AS bucket, outcome, platform, enrollment_method, stage, os_version, source_kind, sig, error_code, error_has_code, error_symbol,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_signals
GROUP BY bucket, tenant, outcome, platform, enrollment_method, stage, os_version, source_kind, sig, error_code, error_has_code, error_symbol;

INSERT INTO {db}.rollup_outcomes_5m
SELECT
    tenant, bucket AS bucket, outcome, platform, enrollment_method, source_kind,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_outcomes
GROUP BY bucket, tenant, outcome, platform, enrollment_method, source_kind;

INSERT INTO {db}.rollup_outcomes_hourly
SELECT
    tenant, bucket AS bucket, outcome, platform, enrollment_method, source_kind,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_signals
GROUP BY bucket, tenant, outcome, platform, enrollment_method, source_kind;

INSERT INTO {db}.rollup_outcomes_daily
SELECT
    tenant, toStartOfDay(bucket) AS bucket, outcome, platform, enrollment_method, source_kind,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_signals
GROUP BY bucket, tenant, outcome, platform, enrollment_method, source_kind;

INSERT INTO {db}.rollup_outcomes_weekly
SELECT
    tenant, toDateTime(toMonday(bucket), 'UTC') AS bucket, outcome, platform, enrollment_method, source_kind,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_signals
GROUP BY bucket, tenant, outcome, platform, enrollment_method, source_kind;

INSERT INTO {db}.rollup_fleet_signals_hourly
SELECT
    bucket AS bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_signals
GROUP BY bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol;

INSERT INTO {db}.rollup_fleet_signals_daily
SELECT
    toStartOfDay(bucket) AS bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_signals
GROUP BY bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol;

INSERT INTO {db}.rollup_fleet_signals_weekly
SELECT
    toDateTime(toMonday(bucket), 'UTC') AS bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_signals
GROUP BY bucket, outcome, platform, stage, source_kind, sig, error_code, error_has_code, error_symbol;

INSERT INTO {db}.rollup_fleet_outcomes_5m
SELECT
    bucket AS bucket, outcome, platform, enrollment_method, source_kind,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_outcomes
GROUP BY bucket, outcome, platform, enrollment_method, source_kind;

INSERT INTO {db}.rollup_fleet_outcomes_hourly
SELECT
    bucket AS bucket, outcome, platform, enrollment_method, source_kind,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_signals
GROUP BY bucket, outcome, platform, enrollment_method, source_kind;

INSERT INTO {db}.rollup_fleet_outcomes_daily
SELECT
    toStartOfDay(bucket) AS bucket, outcome, platform, enrollment_method, source_kind,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_signals
GROUP BY bucket, outcome, platform, enrollment_method, source_kind;

INSERT INTO {db}.rollup_fleet_outcomes_weekly
SELECT
    toDateTime(toMonday(bucket), 'UTC') AS bucket, outcome, platform, enrollment_method, source_kind,
    countMergeState(events) AS events,
    uniqCombinedMergeState(14)(devices) AS devices,
    uniqCombinedIfMergeState(14)(users) AS users
FROM {db}.rollup_backfill_signals
GROUP BY bucket, outcome, platform, enrollment_method, source_kind;

INSERT INTO {db}.signal_dictionary
SELECT
    cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig,
    error_code, error_has_code, error_symbol, {message_key} AS message_key,
    platform, stage, source_kind
FROM {db}.enrollment_events
WHERE outcome = 'failed' AND received_at < toDateTime({cutover}, 'UTC')
GROUP BY sig, error_code, error_has_code, error_symbol, message_key, platform, stage, source_kind;

DROP TABLE IF EXISTS {db}.rollup_backfill_signals;

DROP TABLE IF EXISTS {db}.rollup_backfill_outcomes;
