-- One-off backfill for 0007, run after `{cutover}` + grace (see rollups/mod.rs): the raw rows
-- received before the cutover, aggregated per grain exactly as the views do (three passes over
-- the raw rows: a staging table would need as many passes to derive the grains).

INSERT INTO {db}.rollup_tenant_totals_hourly
SELECT
    tenant, toStartOfHour(occurred_at) AS bucket,
    countState() AS events,
    countIfState(toUInt8(outcome IN ('succeeded', 'failed'))) AS attempt_events,
    countIfState(toUInt8(outcome = 'failed')) AS failed_events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, device_id, toUInt8(outcome = 'failed')) AS failed_devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '')) AS users,
    uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '' AND outcome = 'failed')) AS failed_users
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant;

INSERT INTO {db}.rollup_tenant_totals_daily
SELECT
    tenant, toStartOfDay(occurred_at) AS bucket,
    countState() AS events,
    countIfState(toUInt8(outcome IN ('succeeded', 'failed'))) AS attempt_events,
    countIfState(toUInt8(outcome = 'failed')) AS failed_events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, device_id, toUInt8(outcome = 'failed')) AS failed_devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '')) AS users,
    uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '' AND outcome = 'failed')) AS failed_users
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant;

INSERT INTO {db}.rollup_tenant_totals_weekly
SELECT
    tenant, toDateTime(toMonday(occurred_at), 'UTC') AS bucket,
    countState() AS events,
    countIfState(toUInt8(outcome IN ('succeeded', 'failed'))) AS attempt_events,
    countIfState(toUInt8(outcome = 'failed')) AS failed_events,
    uniqCombinedState(14)(tenant, device_id) AS devices,
    uniqCombinedIfState(14)(tenant, device_id, toUInt8(outcome = 'failed')) AS failed_devices,
    uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '')) AS users,
    uniqCombinedIfState(14)(tenant, user_principal_name, toUInt8(user_principal_name != '' AND outcome = 'failed')) AS failed_users
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant;
