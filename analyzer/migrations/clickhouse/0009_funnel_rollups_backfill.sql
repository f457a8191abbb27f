-- One-off backfill for 0009, run after `{cutover}` + grace (see rollups/mod.rs): the raw rows
-- received before the cutover, aggregated per grain exactly as the views do.

INSERT INTO {db}.rollup_funnel_daily
SELECT
    tenant, toStartOfDay(occurred_at) AS bucket, enrollment_method, platform, stage, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, enrollment_method, platform, stage, outcome;

INSERT INTO {db}.rollup_funnel_weekly
SELECT
    tenant, toDateTime(toMonday(occurred_at), 'UTC') AS bucket, enrollment_method, platform, stage, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY bucket, tenant, enrollment_method, platform, stage, outcome;
