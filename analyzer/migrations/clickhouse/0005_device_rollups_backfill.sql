-- One-off backfill for 0005, run after `{cutover}` + grace (see rollups/mod.rs): the raw rows
-- received before the cutover, aggregated per device exactly as the views do.

INSERT INTO {db}.device_latest
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
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY tenant, device_id;

INSERT INTO {db}.device_facts
SELECT
    tenant,
    device_id,
    countIfState(toUInt8(outcome = 'succeeded')) AS successes,
    maxIfState(occurred_at, toUInt8(outcome = 'succeeded')) AS last_success,
    maxState(toUInt8(enrollment_method IN ('autopilot_self_deploying', 'autopilot_pre_provisioned'))) AS autopilot_attestation,
    maxState(toUInt8(source_event_id IN (75, 76) AND position(source_channel, 'DeviceManagement-Enterprise-Diagnostics-Provider') > 0)) AS auto_enroll_event
FROM {db}.enrollment_events
WHERE received_at < toDateTime({cutover}, 'UTC')
GROUP BY tenant, device_id;
