-- One-off backfill for 0001: copies raw rows received before the views' cutover. Run by the
-- migration runner only after `{cutover}` + grace has passed on the server clock, and only in
-- the same run that created the views (recorded in analyzer_schema_migrations), so it never
-- double counts.

INSERT INTO {db}.rollup_events_hourly
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
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY tenant, bucket, platform, os_version, enrollment_method, stage, outcome, source_kind,
    error_code, error_has_code, error_symbol, message_key;

INSERT INTO {db}.rollup_events_daily
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
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY tenant, bucket, platform, os_version, enrollment_method, stage, outcome, source_kind,
    error_code, error_has_code, error_symbol, message_key;
