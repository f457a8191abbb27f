-- One-off backfill for 0002: copies raw rows received before 0002's own cutover (see
-- 0001_event_rollups_backfill.sql and rollups/mod.rs for the exactly-once argument).

INSERT INTO {db}.rollup_events_weekly
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
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY tenant, bucket, platform, os_version, enrollment_method, stage, outcome, source_kind,
    error_code, error_has_code, error_symbol, message_key;

INSERT INTO {db}.rollup_totals_hourly
SELECT
    tenant,
    toStartOfHour(occurred_at) AS bucket,
    outcome, platform, enrollment_method,
    countState() AS events,
    uniqState(tenant, device_id) AS devices,
    uniqIfState(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY tenant, bucket, outcome, platform, enrollment_method;

INSERT INTO {db}.rollup_totals_daily
SELECT
    tenant,
    toStartOfDay(occurred_at) AS bucket,
    outcome, platform, enrollment_method,
    countState() AS events,
    uniqState(tenant, device_id) AS devices,
    uniqIfState(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY tenant, bucket, outcome, platform, enrollment_method;

INSERT INTO {db}.rollup_totals_weekly
SELECT
    tenant,
    toDateTime(toMonday(occurred_at), 'UTC') AS bucket,
    outcome, platform, enrollment_method,
    countState() AS events,
    uniqState(tenant, device_id) AS devices,
    uniqIfState(tenant, user_principal_name, user_principal_name != '') AS users
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY tenant, bucket, outcome, platform, enrollment_method;
