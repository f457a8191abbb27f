//! Rows of the collector's raw ClickHouse tables, as the contract in
//! `collector/migrations/clickhouse/0001_raw_tables.sql` defines them, and an independent
//! implementation of the wire -> row mapping.
//!
//! Tests compare what the collector stored with [`EnrollmentEventRow::expected`] & co., so the
//! collector is checked against the written contract rather than against its own code. The
//! benchmark uses the same mapping to insert "the same rows" straight into ClickHouse.
//! Field order is the table's column order (RowBinary is positional).

use std::collections::BTreeMap;

use clickhouse::Row;
use fleetpulse_proto::pbjson_types::Timestamp;
use fleetpulse_proto::v1::{
    DeviceState, EnrollmentEvent, EnrollmentMethod, EnrollmentStage, Heartbeat, JoinState,
    LicenseState, Outcome, Platform, ReportedError, SourceKind,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The raw-table DDL, with `{db}` to replace by the database name.
pub const RAW_TABLES_SQL: &str =
    include_str!("../../../collector/migrations/clickhouse/0001_raw_tables.sql");

/// The DDL statements of [`RAW_TABLES_SQL`] for `database`, comments stripped.
pub fn raw_table_statements(database: &str) -> Vec<String> {
    let without_comments: String = RAW_TABLES_SQL
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.replace("{db}", database))
        .collect()
}

/// `PLATFORM_WINDOWS` with prefix `PLATFORM_` -> `windows`; unknown numbers -> `unknown_<n>`.
fn enum_column(name: Option<&str>, prefix: &str, value: i32) -> String {
    match name {
        Some(name) => name
            .strip_prefix(prefix)
            .unwrap_or(name)
            .to_ascii_lowercase(),
        None => format!("unknown_{value}"),
    }
}

/// Column value of a `Platform` number.
pub fn platform_column(v: i32) -> String {
    enum_column(
        Platform::try_from(v).ok().map(|e| e.as_str_name()),
        "PLATFORM_",
        v,
    )
}
/// Column value of an `EnrollmentMethod` number.
pub fn method_column(v: i32) -> String {
    enum_column(
        EnrollmentMethod::try_from(v).ok().map(|e| e.as_str_name()),
        "ENROLLMENT_METHOD_",
        v,
    )
}
/// Column value of an `EnrollmentStage` number.
pub fn stage_column(v: i32) -> String {
    enum_column(
        EnrollmentStage::try_from(v).ok().map(|e| e.as_str_name()),
        "ENROLLMENT_STAGE_",
        v,
    )
}
/// Column value of an `Outcome` number.
pub fn outcome_column(v: i32) -> String {
    enum_column(
        Outcome::try_from(v).ok().map(|e| e.as_str_name()),
        "OUTCOME_",
        v,
    )
}
/// Column value of a `SourceKind` number.
pub fn source_kind_column(v: i32) -> String {
    enum_column(
        SourceKind::try_from(v).ok().map(|e| e.as_str_name()),
        "SOURCE_KIND_",
        v,
    )
}
/// Column value of a `JoinState` number.
pub fn join_state_column(v: i32) -> String {
    enum_column(
        JoinState::try_from(v).ok().map(|e| e.as_str_name()),
        "JOIN_STATE_",
        v,
    )
}
/// Column value of a `LicenseState` number.
pub fn license_state_column(v: i32) -> String {
    enum_column(
        LicenseState::try_from(v).ok().map(|e| e.as_str_name()),
        "LICENSE_STATE_",
        v,
    )
}

/// Seconds and milliseconds of a timestamp (finer digits truncated; absent -> epoch).
pub fn seconds_and_ms(ts: Option<&Timestamp>) -> (u32, u16) {
    match ts {
        Some(ts) => (
            u32::try_from(ts.seconds).unwrap_or(0),
            u16::try_from(ts.nanos / 1_000_000).unwrap_or(0),
        ),
        None => (0, 0),
    }
}

fn error_columns(e: Option<&ReportedError>) -> (u32, u8, String, String) {
    e.map_or((0, 0, String::new(), String::new()), |e| {
        (
            e.code,
            u8::from(e.has_code),
            e.symbol.clone(),
            e.message.clone(),
        )
    })
}

fn sorted_attributes(
    map: &std::collections::HashMap<String, String>,
) -> (Vec<String>, Vec<String>) {
    let sorted: BTreeMap<&String, &String> = map.iter().collect();
    (
        sorted.keys().map(|k| (*k).clone()).collect(),
        sorted.values().map(|v| (*v).clone()).collect(),
    )
}

/// One row of `enrollment_events`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct EnrollmentEventRow {
    pub tenant: String,
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    pub agent_id: String,
    pub batch_seq: u64,
    pub device_id: String,
    /// Seconds since the epoch (`DateTime('UTC')`).
    pub occurred_at: u32,
    pub occurred_ms: u16,
    pub received_at: u32,
    pub platform: String,
    pub os_edition: String,
    pub os_version: String,
    pub enrollment_method: String,
    pub stage: String,
    pub outcome: String,
    pub error_code: u32,
    pub error_has_code: u8,
    pub error_symbol: String,
    pub error_message: String,
    pub source_kind: String,
    pub source_channel: String,
    pub source_event_id: u32,
    pub source_record_id: u64,
    pub user_principal_name: String,
    #[serde(rename = "attributes.key")]
    pub attributes_key: Vec<String>,
    #[serde(rename = "attributes.value")]
    pub attributes_value: Vec<String>,
}

impl EnrollmentEventRow {
    /// The row the contract says `event`, pushed by an agent of `tenant` in batch `batch_seq`,
    /// becomes. Attributes are sorted by key; `received_at` is the caller's choice.
    ///
    /// # Panics
    /// When `event.event_id` is not a UUID (callers pass valid events).
    pub fn expected(
        tenant: &str,
        batch_seq: u64,
        received_at: u32,
        event: &EnrollmentEvent,
    ) -> Self {
        let (occurred_at, occurred_ms) = seconds_and_ms(event.occurred_at.as_ref());
        let (error_code, error_has_code, error_symbol, error_message) =
            error_columns(event.error.as_ref());
        let source = event.source.clone().unwrap_or_default();
        let (attributes_key, attributes_value) = sorted_attributes(&event.attributes);
        Self {
            tenant: tenant.to_owned(),
            event_id: Uuid::parse_str(&event.event_id)
                .unwrap_or_else(|e| panic!("event_id {:?}: {e}", event.event_id)),
            agent_id: event.agent_id.clone(),
            batch_seq,
            device_id: event.device_id.clone(),
            occurred_at,
            occurred_ms,
            received_at,
            platform: platform_column(event.platform),
            os_edition: event.os_edition.clone(),
            os_version: event.os_version.clone(),
            enrollment_method: method_column(event.enrollment_method),
            stage: stage_column(event.stage),
            outcome: outcome_column(event.outcome),
            error_code,
            error_has_code,
            error_symbol,
            error_message,
            source_kind: source_kind_column(source.kind),
            source_channel: source.channel,
            source_event_id: source.event_id,
            source_record_id: source.record_id,
            user_principal_name: event.user_principal_name.clone(),
            attributes_key,
            attributes_value,
        }
    }

    /// The row with attributes sorted by key and `received_at` replaced, for comparing a
    /// stored row (whose attribute order and receive time are the collector's) with
    /// [`Self::expected`].
    pub fn normalized(mut self, received_at: u32) -> Self {
        let pairs: BTreeMap<String, String> = self
            .attributes_key
            .drain(..)
            .zip(self.attributes_value.drain(..))
            .collect();
        self.attributes_key = pairs.keys().cloned().collect();
        self.attributes_value = pairs.into_values().collect();
        self.received_at = received_at;
        self
    }
}

/// One row of `device_states`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct DeviceStateRow {
    pub tenant: String,
    pub agent_id: String,
    pub batch_seq: u64,
    pub device_id: String,
    pub captured_at: u32,
    pub received_at: u32,
    pub platform: String,
    pub os_edition: String,
    pub os_version: String,
    pub join_state: String,
    pub mdm_enrolled: u8,
    pub mdm_url: String,
    pub entra_tenant_id: String,
    pub tpm_present: u8,
    pub tpm_spec_version: String,
    pub tpm_ready: u8,
    pub tpm_manufacturer: String,
    pub primary_user_upn: String,
    pub last_attempt_at: u32,
    pub last_outcome: String,
    pub last_error_code: u32,
    pub last_error_has_code: u8,
    pub last_error_symbol: String,
    pub last_error_message: String,
    pub license_state: String,
    pub enrollment_method: String,
    pub device_name: String,
    #[serde(rename = "attributes.key")]
    pub attributes_key: Vec<String>,
    #[serde(rename = "attributes.value")]
    pub attributes_value: Vec<String>,
}

impl DeviceStateRow {
    /// The row the contract says `state` becomes (see [`EnrollmentEventRow::expected`]).
    pub fn expected(tenant: &str, batch_seq: u64, received_at: u32, state: &DeviceState) -> Self {
        let tpm = state.tpm.clone().unwrap_or_default();
        let (last_error_code, last_error_has_code, last_error_symbol, last_error_message) =
            error_columns(state.last_enrollment_error.as_ref());
        let (attributes_key, attributes_value) = sorted_attributes(&state.attributes);
        Self {
            tenant: tenant.to_owned(),
            agent_id: state.agent_id.clone(),
            batch_seq,
            device_id: state.device_id.clone(),
            captured_at: seconds_and_ms(state.captured_at.as_ref()).0,
            received_at,
            platform: platform_column(state.platform),
            os_edition: state.os_edition.clone(),
            os_version: state.os_version.clone(),
            join_state: join_state_column(state.join_state),
            mdm_enrolled: u8::from(state.mdm_enrolled),
            mdm_url: state.mdm_url.clone(),
            entra_tenant_id: state.entra_tenant_id.clone(),
            tpm_present: u8::from(tpm.present),
            tpm_spec_version: tpm.spec_version,
            tpm_ready: u8::from(tpm.ready),
            tpm_manufacturer: tpm.manufacturer,
            primary_user_upn: state.primary_user_upn.clone(),
            last_attempt_at: seconds_and_ms(state.last_enrollment_attempt_at.as_ref()).0,
            last_outcome: outcome_column(state.last_enrollment_outcome),
            last_error_code,
            last_error_has_code,
            last_error_symbol,
            last_error_message,
            license_state: license_state_column(state.license_state),
            enrollment_method: method_column(state.enrollment_method),
            device_name: state.device_name.clone(),
            attributes_key,
            attributes_value,
        }
    }

    /// Attributes sorted, `received_at` replaced (see [`EnrollmentEventRow::normalized`]).
    pub fn normalized(mut self, received_at: u32) -> Self {
        let pairs: BTreeMap<String, String> = self
            .attributes_key
            .drain(..)
            .zip(self.attributes_value.drain(..))
            .collect();
        self.attributes_key = pairs.keys().cloned().collect();
        self.attributes_value = pairs.into_values().collect();
        self.received_at = received_at;
        self
    }
}

/// One row of `agent_heartbeats`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct HeartbeatRow {
    pub tenant: String,
    pub agent_id: String,
    pub batch_seq: u64,
    pub device_id: String,
    pub sent_at: u32,
    pub received_at: u32,
    pub agent_version: String,
    pub spool_depth: u64,
    pub spool_bytes: u64,
    pub spool_dropped_total: u64,
    pub spool_corrupt_total: u64,
    pub last_error: String,
}

impl HeartbeatRow {
    /// The row the contract says `hb` becomes.
    pub fn expected(tenant: &str, batch_seq: u64, received_at: u32, hb: &Heartbeat) -> Self {
        Self {
            tenant: tenant.to_owned(),
            agent_id: hb.agent_id.clone(),
            batch_seq,
            device_id: hb.device_id.clone(),
            sent_at: seconds_and_ms(hb.sent_at.as_ref()).0,
            received_at,
            agent_version: hb.agent_version.clone(),
            spool_depth: hb.spool_depth,
            spool_bytes: hb.spool_bytes,
            spool_dropped_total: hb.spool_dropped_total,
            spool_corrupt_total: hb.spool_corrupt_total,
            last_error: hb.last_error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_columns_follow_the_contract() {
        assert_eq!(platform_column(Platform::Windows as i32), "windows");
        assert_eq!(outcome_column(Outcome::Failed as i32), "failed");
        assert_eq!(
            stage_column(EnrollmentStage::CertificateRequest as i32),
            "certificate_request"
        );
        assert_eq!(source_kind_column(SourceKind::EventLog as i32), "event_log");
        assert_eq!(
            method_column(EnrollmentMethod::AutopilotSelfDeploying as i32),
            "autopilot_self_deploying"
        );
        assert_eq!(platform_column(0), "unspecified");
        assert_eq!(platform_column(99), "unknown_99");
    }

    #[test]
    fn ddl_splits_into_three_tables() {
        let stmts = raw_table_statements("db1");
        assert_eq!(stmts.len(), 3);
        assert!(stmts[0].starts_with("CREATE TABLE IF NOT EXISTS db1.enrollment_events"));
        assert!(stmts.iter().all(|s| !s.contains("{db}")));
    }

    #[test]
    fn timestamps_truncate_to_milliseconds() {
        let ts = Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_999_999,
        };
        assert_eq!(seconds_and_ms(Some(&ts)), (1_700_000_000, 123));
        assert_eq!(seconds_and_ms(None), (0, 0));
    }
}
