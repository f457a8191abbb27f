-- Migration 0005: per-device rollups for the insights. Must run on ClickHouse 18.16 and current
-- releases.
--
-- Why (measured at 10M events, BENCHMARKS.md): every insight is a per-device question "as of
-- now". Answered from raw rows, `stale_enrollments` grouped every successful event by device
-- (12x the raw-scan baseline), the Autopilot TPM and auto-enrollment insights scanned the
-- events for a method or an event id, and the insight list ran each of them twice (count and
-- sample): 15x the baseline. Here, one row per device (after merges):
-- * `device_latest`: the latest state snapshot's fields (argMax over captured_at, exactly what
--   the raw query computed) and the time of that snapshot;
-- * `device_facts`: per device, the number and the time of the last successful enrollment
--   event, whether any event used a self-deploying / pre-provisioned Autopilot method, and
--   whether any event was a DeviceManagement-Enterprise-Diagnostics-Provider event 75/76
--   (automatic MDM enrollment ran).
-- The work of an insight then follows the number of devices, not of events or snapshots.
-- Retention drops raw partitions, not these rows: a device whose only success is older than
-- the raw retention still counts as stale here (it vanished from the raw answer), which is
-- what the insight means.
--
-- `{cutover}`: as in 0003 (views take rows received from the cutover on, the backfill the rows
-- before; see rollups/mod.rs).

CREATE TABLE IF NOT EXISTS {db}.device_latest
(
    tenant String,
    device_id String,
    captured AggregateFunction(max, DateTime('UTC')),
    platform AggregateFunction(argMax, String, DateTime('UTC')),
    join_state AggregateFunction(argMax, String, DateTime('UTC')),
    mdm_enrolled AggregateFunction(argMax, UInt8, DateTime('UTC')),
    tpm_present AggregateFunction(argMax, UInt8, DateTime('UTC')),
    tpm_spec_version AggregateFunction(argMax, String, DateTime('UTC')),
    upn AggregateFunction(argMax, String, DateTime('UTC')),
    license_state AggregateFunction(argMax, String, DateTime('UTC')),
    last_attempt_at AggregateFunction(argMax, DateTime('UTC'), DateTime('UTC')),
    state_method AggregateFunction(argMax, String, DateTime('UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant, device_id)
SETTINGS index_granularity = 1024{extra_settings};

CREATE TABLE IF NOT EXISTS {db}.device_facts
(
    tenant String,
    device_id String,
    successes AggregateFunction(countIf, UInt8),
    last_success AggregateFunction(maxIf, DateTime('UTC'), UInt8),
    autopilot_attestation AggregateFunction(max, UInt8),
    auto_enroll_event AggregateFunction(max, UInt8)
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant, device_id)
SETTINGS index_granularity = 1024{extra_settings};

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.device_latest_mv TO {db}.device_latest AS
SELECT
    tenant,
    device_id,
    maxState(captured_at) AS captured,
    argMaxState(platform, captured_at) AS platform,
    argMaxState(join_state, captured_at) AS join_state,
    argMaxState(mdm_enrolled, captured_at) AS mdm_enrolled,
    argMaxState(tpm_present, captured_at) AS tpm_present,
    argMaxState(tpm_spec_version, captured_at) AS tpm_spec_version,
    argMaxState(primary_user_upn, captured_at) AS upn,
    argMaxState(license_state, captured_at) AS license_state,
    argMaxState(last_attempt_at, captured_at) AS last_attempt_at,
    argMaxState(enrollment_method, captured_at) AS state_method
FROM {db}.device_states
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY tenant, device_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.device_facts_mv TO {db}.device_facts AS
SELECT
    tenant,
    device_id,
    countIfState(toUInt8(outcome = 'succeeded')) AS successes,
    maxIfState(occurred_at, toUInt8(outcome = 'succeeded')) AS last_success,
    maxState(toUInt8(enrollment_method IN ('autopilot_self_deploying', 'autopilot_pre_provisioned'))) AS autopilot_attestation,
    maxState(toUInt8(source_event_id IN (75, 76) AND position(source_channel, 'DeviceManagement-Enterprise-Diagnostics-Provider') > 0)) AS auto_enroll_event
FROM {db}.enrollment_events
WHERE received_at >= toDateTime({cutover}, 'UTC')
GROUP BY tenant, device_id;
