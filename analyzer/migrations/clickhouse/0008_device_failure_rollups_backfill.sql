-- One-off backfill for 0008, run after `{cutover}` + grace (see rollups/mod.rs): the failed raw
-- rows received before the cutover, aggregated per grain exactly as the views do.

INSERT INTO {db}.rollup_device_failures_hourly
SELECT
    toStartOfHour(occurred_at) AS bucket, cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig,
    tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol,
    countState() AS failures,
    minState(occurred_at) AS first_failure,
    maxState(occurred_at) AS last_failure
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC') AND outcome = 'failed'
GROUP BY bucket, sig, tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol;

INSERT INTO {db}.rollup_device_failures_daily
SELECT
    toStartOfDay(occurred_at) AS bucket, cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig,
    tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol,
    countState() AS failures,
    minState(occurred_at) AS first_failure,
    maxState(occurred_at) AS last_failure
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC') AND outcome = 'failed'
GROUP BY bucket, sig, tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol;

INSERT INTO {db}.rollup_device_failures_weekly
SELECT
    toDateTime(toMonday(occurred_at), 'UTC') AS bucket, cityHash64(error_code, error_has_code, error_symbol, {message_key}, platform, stage, source_kind) AS sig,
    tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol,
    countState() AS failures,
    minState(occurred_at) AS first_failure,
    maxState(occurred_at) AS last_failure
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC') AND outcome = 'failed'
GROUP BY bucket, sig, tenant, device_id, user_principal_name, os_version, enrollment_method, platform, stage, source_kind, error_code, error_has_code, error_symbol;
