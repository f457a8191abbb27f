-- Raw telemetry tables owned by the collector. Facts only: nothing here interprets error codes.
-- `{db}` is replaced by the configured database name (validated as an identifier).
-- Enum-like columns hold the protocol enum's value name in lower snake case without its prefix
-- (PLATFORM_WINDOWS -> 'windows', ENROLLMENT_METHOD_AUTOPILOT_SELF_DEPLOYING ->
-- 'autopilot_self_deploying'); an unknown value is stored as 'unknown_<number>'.
-- Must run on ClickHouse 18.16 and on current releases: no TTL, no LowCardinality, no
-- DateTime64, no Map. Retention drops whole daily partitions.

CREATE TABLE IF NOT EXISTS {db}.enrollment_events
(
    tenant String,
    event_id UUID,
    agent_id String,
    batch_seq UInt64,
    device_id String,
    occurred_at DateTime('UTC'),
    occurred_ms UInt16,
    received_at DateTime('UTC'),
    platform String,
    os_edition String,
    os_version String,
    enrollment_method String,
    stage String,
    outcome String,
    error_code UInt32,
    error_has_code UInt8,
    error_symbol String,
    error_message String,
    source_kind String,
    source_channel String,
    source_event_id UInt32,
    source_record_id UInt64,
    user_principal_name String,
    attributes Nested(key String, value String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(occurred_at)
ORDER BY (tenant, occurred_at, device_id);

CREATE TABLE IF NOT EXISTS {db}.device_states
(
    tenant String,
    agent_id String,
    batch_seq UInt64,
    device_id String,
    captured_at DateTime('UTC'),
    received_at DateTime('UTC'),
    platform String,
    os_edition String,
    os_version String,
    join_state String,
    mdm_enrolled UInt8,
    mdm_url String,
    entra_tenant_id String,
    tpm_present UInt8,
    tpm_spec_version String,
    tpm_ready UInt8,
    tpm_manufacturer String,
    primary_user_upn String,
    last_attempt_at DateTime('UTC'),
    last_outcome String,
    last_error_code UInt32,
    last_error_has_code UInt8,
    last_error_symbol String,
    last_error_message String,
    license_state String,
    enrollment_method String,
    device_name String,
    attributes Nested(key String, value String)
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(captured_at)
ORDER BY (tenant, device_id, captured_at);

CREATE TABLE IF NOT EXISTS {db}.agent_heartbeats
(
    tenant String,
    agent_id String,
    batch_seq UInt64,
    device_id String,
    sent_at DateTime('UTC'),
    received_at DateTime('UTC'),
    agent_version String,
    spool_depth UInt64,
    spool_bytes UInt64,
    spool_dropped_total UInt64,
    spool_corrupt_total UInt64,
    last_error String
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(received_at)
ORDER BY (tenant, agent_id, received_at);
