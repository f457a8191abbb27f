-- One-off backfill for 0010, run after `{cutover}` + grace (see rollups/mod.rs): the raw rows
-- received before the cutover, aggregated per grain exactly as the views do.

INSERT INTO {db}.rollup_fleet_funnel_hourly
SELECT
    toStartOfHour(occurred_at) AS bucket, enrollment_method, platform, stage, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY bucket, enrollment_method, platform, stage, outcome;

INSERT INTO {db}.rollup_fleet_funnel_daily
SELECT
    toStartOfDay(occurred_at) AS bucket, enrollment_method, platform, stage, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY bucket, enrollment_method, platform, stage, outcome;

INSERT INTO {db}.rollup_fleet_funnel_weekly
SELECT
    toDateTime(toMonday(occurred_at), 'UTC') AS bucket, enrollment_method, platform, stage, outcome,
    countState() AS events,
    uniqCombinedState(14)(tenant, device_id) AS devices
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY bucket, enrollment_method, platform, stage, outcome;
