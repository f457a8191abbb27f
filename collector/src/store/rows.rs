//! Row types of the three raw tables and the encoder from validated protocol items.
//!
//! Rows take the decoded strings by move (no copies); the tenant and agent id are shared
//! `Arc<str>`s, and enum columns are `&'static str` names from a table built once, so encoding
//! an item allocates only its attribute vectors. Enum columns hold the protocol value name in
//! lower snake case without its prefix (`PLATFORM_WINDOWS` -> `windows`); numbers this build
//! does not know are kept as `unknown_<n>`, never refused.

use std::{borrow::Cow, collections::HashMap, sync::Arc, sync::OnceLock};

use clickhouse::Row;
use fleetpulse_proto::v1::{
    DeviceState, EnrollmentEvent, EnrollmentMethod, EnrollmentStage, Heartbeat, JoinState,
    LicenseState, Outcome, Platform, ReportedError, SourceKind,
};
use serde::{Serialize, Serializer};
use uuid::Uuid;

fn ser_arc_str<S: Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

/// A row of `enrollment_events`.
#[derive(Debug, Clone, Default, PartialEq, Row, Serialize)]
pub struct EventRow {
    #[serde(serialize_with = "ser_arc_str")]
    pub tenant: Arc<str>,
    #[serde(with = "clickhouse::serde::uuid")]
    pub event_id: Uuid,
    #[serde(serialize_with = "ser_arc_str")]
    pub agent_id: Arc<str>,
    pub batch_seq: u64,
    pub device_id: String,
    pub occurred_at: u32,
    pub occurred_ms: u16,
    pub received_at: u32,
    pub platform: Cow<'static, str>,
    pub os_edition: String,
    pub os_version: String,
    pub enrollment_method: Cow<'static, str>,
    pub stage: Cow<'static, str>,
    pub outcome: Cow<'static, str>,
    pub error_code: u32,
    pub error_has_code: u8,
    pub error_symbol: String,
    pub error_message: String,
    pub source_kind: Cow<'static, str>,
    pub source_channel: String,
    pub source_event_id: u32,
    pub source_record_id: u64,
    pub user_principal_name: String,
    #[serde(rename = "attributes.key")]
    pub attributes_key: Vec<String>,
    #[serde(rename = "attributes.value")]
    pub attributes_value: Vec<String>,
}

/// A row of `device_states`.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
pub struct StateRow {
    #[serde(serialize_with = "ser_arc_str")]
    pub tenant: Arc<str>,
    #[serde(serialize_with = "ser_arc_str")]
    pub agent_id: Arc<str>,
    pub batch_seq: u64,
    pub device_id: String,
    pub captured_at: u32,
    pub received_at: u32,
    pub platform: Cow<'static, str>,
    pub os_edition: String,
    pub os_version: String,
    pub join_state: Cow<'static, str>,
    pub mdm_enrolled: u8,
    pub mdm_url: String,
    pub entra_tenant_id: String,
    pub tpm_present: u8,
    pub tpm_spec_version: String,
    pub tpm_ready: u8,
    pub tpm_manufacturer: String,
    pub primary_user_upn: String,
    pub last_attempt_at: u32,
    pub last_outcome: Cow<'static, str>,
    pub last_error_code: u32,
    pub last_error_has_code: u8,
    pub last_error_symbol: String,
    pub last_error_message: String,
    pub license_state: Cow<'static, str>,
    pub enrollment_method: Cow<'static, str>,
    pub device_name: String,
    #[serde(rename = "attributes.key")]
    pub attributes_key: Vec<String>,
    #[serde(rename = "attributes.value")]
    pub attributes_value: Vec<String>,
}

/// A row of `agent_heartbeats`.
#[derive(Debug, Clone, PartialEq, Row, Serialize)]
pub struct HeartbeatRow {
    #[serde(serialize_with = "ser_arc_str")]
    pub tenant: Arc<str>,
    #[serde(serialize_with = "ser_arc_str")]
    pub agent_id: Arc<str>,
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

/// One event row of an [`EventBatch`]: its identity (for the duplicate checks) and where its
/// RowBinary lies in the batch's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedEvent {
    pub tenant: Arc<str>,
    pub event_id: Uuid,
    pub occurred_at: u32,
    start: usize,
    end: usize,
}

/// The `enrollment_events` rows of one Push, already in RowBinary (written from borrowed
/// events, see [`super::event_rowbinary`]), with each row's identity beside it. Dropping a row
/// (a duplicate) only drops its entry; [`EventBatch::chunks`] sends the bytes of the rows left.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EventBatch {
    bytes: bytes::Bytes,
    rows: Vec<EncodedEvent>,
}

impl std::ops::Deref for EventBatch {
    type Target = [EncodedEvent];
    fn deref(&self) -> &[EncodedEvent] {
        &self.rows
    }
}

impl EventBatch {
    /// Keeps the rows for which `keep` is true.
    pub fn retain(&mut self, keep: impl FnMut(&EncodedEvent) -> bool) {
        self.rows.retain(keep);
    }

    /// The RowBinary of the rows left, as few slices of the batch's bytes as their order
    /// allows (one when nothing was dropped). No copy.
    pub fn chunks(&self) -> impl Iterator<Item = bytes::Bytes> + '_ {
        let mut i = 0;
        std::iter::from_fn(move || {
            let first = self.rows.get(i)?;
            let (start, mut end) = (first.start, first.end);
            i += 1;
            while let Some(next) = self.rows.get(i).filter(|r| r.start == end) {
                end = next.end;
                i += 1;
            }
            Some(self.bytes.slice(start..end))
        })
    }
}

/// Builds an [`EventBatch`], one row at a time.
#[derive(Debug, Default)]
pub struct EventBatchBuilder {
    bytes: bytes::BytesMut,
    rows: Vec<EncodedEvent>,
}

impl EventBatchBuilder {
    /// Room for `rows` rows of about `bytes` bytes in all.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        Self {
            bytes: bytes::BytesMut::with_capacity(bytes),
            rows: Vec::with_capacity(rows),
        }
    }

    /// Appends the row of a validated event (see [`super::event_rowbinary::put_event_row`]).
    pub fn push(
        &mut self,
        ctx: &RowContext,
        e: &crate::event_view::EventView<'_>,
        event_id: Uuid,
        occurred_at: u32,
        occurred_ms: u16,
    ) {
        let start = self.bytes.len();
        super::event_rowbinary::put_event_row(
            &mut self.bytes,
            ctx,
            e,
            event_id,
            occurred_at,
            occurred_ms,
        );
        self.rows.push(EncodedEvent {
            tenant: ctx.tenant.clone(),
            event_id,
            occurred_at,
            start,
            end: self.bytes.len(),
        });
    }

    pub fn finish(self) -> EventBatch {
        EventBatch {
            bytes: self.bytes.freeze(),
            rows: self.rows,
        }
    }
}

/// A batch of default events with these (tenant, id, second)s, for tests of the duplicate
/// checks.
#[cfg(test)]
pub(crate) fn test_events(keys: &[(&str, Uuid, u32)]) -> EventBatch {
    let mut b = EventBatchBuilder::default();
    for (tenant, id, at) in keys {
        let ctx = RowContext {
            tenant: Arc::from(*tenant),
            agent_id: Arc::from("a"),
            batch_seq: 1,
            received_at: 1,
            registered_device_id: String::new(),
        };
        b.push(&ctx, &crate::event_view::EventView::default(), *id, *at, 0);
    }
    b.finish()
}

/// The rows produced by one Push, per table.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Rows {
    pub events: EventBatch,
    pub states: Vec<StateRow>,
    pub heartbeats: Vec<HeartbeatRow>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.events.len() + self.states.len() + self.heartbeats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Values shared by every row of one Push.
#[derive(Debug, Clone)]
pub struct RowContext {
    pub tenant: Arc<str>,
    pub agent_id: Arc<str>,
    pub batch_seq: u64,
    /// Collector clock at receipt, seconds.
    pub received_at: u32,
    /// The device id the agent registered with; used for heartbeats that carry none.
    pub registered_device_id: String,
}

/// Builds (once per enum) the table of lower-snake names indexed by value.
fn names_of(as_str: impl Fn(i32) -> Option<&'static str>, prefix: &str) -> Vec<String> {
    (0..)
        .map_while(as_str)
        .map(|name| {
            name.strip_prefix(prefix)
                .unwrap_or(name)
                .to_ascii_lowercase()
        })
        .collect()
}

fn lookup(table: &'static [String], value: i32) -> Cow<'static, str> {
    match usize::try_from(value).ok().and_then(|i| table.get(i)) {
        Some(name) => Cow::Borrowed(name.as_str()),
        None => Cow::Owned(format!("unknown_{value}")),
    }
}

macro_rules! enum_names {
    ($fn_name:ident, $ty:ty, $prefix:literal) => {
        /// The stored name of a value of this protocol enum.
        pub fn $fn_name(value: i32) -> Cow<'static, str> {
            static TABLE: OnceLock<Vec<String>> = OnceLock::new();
            let table = TABLE.get_or_init(|| {
                names_of(
                    |n| <$ty>::try_from(n).ok().map(|e| e.as_str_name()),
                    $prefix,
                )
            });
            lookup(table, value)
        }
    };
}

enum_names!(platform_name, Platform, "PLATFORM_");
enum_names!(
    enrollment_method_name,
    EnrollmentMethod,
    "ENROLLMENT_METHOD_"
);
enum_names!(stage_name, EnrollmentStage, "ENROLLMENT_STAGE_");
enum_names!(outcome_name, Outcome, "OUTCOME_");
enum_names!(source_kind_name, SourceKind, "SOURCE_KIND_");
enum_names!(join_state_name, JoinState, "JOIN_STATE_");
enum_names!(license_state_name, LicenseState, "LICENSE_STATE_");

fn split_attributes(map: HashMap<String, String>) -> (Vec<String>, Vec<String>) {
    let mut keys = Vec::with_capacity(map.len());
    let mut values = Vec::with_capacity(map.len());
    for (k, v) in map {
        keys.push(k);
        values.push(v);
    }
    (keys, values)
}

/// `(code, has_code, symbol, message)` of an optional error.
fn error_parts(e: Option<ReportedError>) -> (u32, u8, String, String) {
    match e {
        Some(e) => (e.code, u8::from(e.has_code), e.symbol, e.message),
        None => (0, 0, String::new(), String::new()),
    }
}

/// Encodes a validated event. `occurred_at`/`occurred_ms` and `event_id` come from validation.
pub fn event_row(
    ctx: &RowContext,
    e: EnrollmentEvent,
    event_id: Uuid,
    occurred_at: u32,
    occurred_ms: u16,
) -> EventRow {
    let (error_code, error_has_code, error_symbol, error_message) = error_parts(e.error);
    let source = e.source.unwrap_or_default();
    let (attributes_key, attributes_value) = split_attributes(e.attributes);
    EventRow {
        tenant: ctx.tenant.clone(),
        event_id,
        agent_id: ctx.agent_id.clone(),
        batch_seq: ctx.batch_seq,
        device_id: e.device_id,
        occurred_at,
        occurred_ms,
        received_at: ctx.received_at,
        platform: platform_name(e.platform),
        os_edition: e.os_edition,
        os_version: e.os_version,
        enrollment_method: enrollment_method_name(e.enrollment_method),
        stage: stage_name(e.stage),
        outcome: outcome_name(e.outcome),
        error_code,
        error_has_code,
        error_symbol,
        error_message,
        source_kind: source_kind_name(source.kind),
        source_channel: source.channel,
        source_event_id: source.event_id,
        source_record_id: source.record_id,
        user_principal_name: e.user_principal_name,
        attributes_key,
        attributes_value,
    }
}

/// Encodes a validated device state; `last_attempt_at` is 0 when the device reported none.
pub fn state_row(
    ctx: &RowContext,
    s: DeviceState,
    captured_at: u32,
    last_attempt_at: u32,
) -> StateRow {
    let (last_error_code, last_error_has_code, last_error_symbol, last_error_message) =
        error_parts(s.last_enrollment_error);
    let tpm = s.tpm.unwrap_or_default();
    let (attributes_key, attributes_value) = split_attributes(s.attributes);
    StateRow {
        tenant: ctx.tenant.clone(),
        agent_id: ctx.agent_id.clone(),
        batch_seq: ctx.batch_seq,
        device_id: s.device_id,
        captured_at,
        received_at: ctx.received_at,
        platform: platform_name(s.platform),
        os_edition: s.os_edition,
        os_version: s.os_version,
        join_state: join_state_name(s.join_state),
        mdm_enrolled: u8::from(s.mdm_enrolled),
        mdm_url: s.mdm_url,
        entra_tenant_id: s.entra_tenant_id,
        tpm_present: u8::from(tpm.present),
        tpm_spec_version: tpm.spec_version,
        tpm_ready: u8::from(tpm.ready),
        tpm_manufacturer: tpm.manufacturer,
        primary_user_upn: s.primary_user_upn,
        last_attempt_at,
        last_outcome: outcome_name(s.last_enrollment_outcome),
        last_error_code,
        last_error_has_code,
        last_error_symbol,
        last_error_message,
        license_state: license_state_name(s.license_state),
        enrollment_method: enrollment_method_name(s.enrollment_method),
        device_name: s.device_name,
        attributes_key,
        attributes_value,
    }
}

/// Encodes a validated heartbeat; an empty device id becomes the registered one.
pub fn heartbeat_row(ctx: &RowContext, h: Heartbeat, sent_at: u32) -> HeartbeatRow {
    HeartbeatRow {
        tenant: ctx.tenant.clone(),
        agent_id: ctx.agent_id.clone(),
        batch_seq: ctx.batch_seq,
        device_id: if h.device_id.is_empty() {
            ctx.registered_device_id.clone()
        } else {
            h.device_id
        },
        sent_at,
        received_at: ctx.received_at,
        agent_version: h.agent_version,
        spool_depth: h.spool_depth,
        spool_bytes: h.spool_bytes,
        spool_dropped_total: h.spool_dropped_total,
        spool_corrupt_total: h.spool_corrupt_total,
        last_error: h.last_error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::v1::{Source, TpmInfo};

    #[test]
    fn enum_names_follow_the_contract() {
        assert_eq!(platform_name(Platform::Windows as i32), "windows");
        assert_eq!(platform_name(Platform::Ipados as i32), "ipados");
        assert_eq!(platform_name(0), "unspecified");
        assert_eq!(outcome_name(Outcome::Failed as i32), "failed");
        assert_eq!(outcome_name(Outcome::InProgress as i32), "in_progress");
        assert_eq!(
            stage_name(EnrollmentStage::CertificateRequest as i32),
            "certificate_request"
        );
        assert_eq!(source_kind_name(SourceKind::EventLog as i32), "event_log");
        assert_eq!(
            enrollment_method_name(EnrollmentMethod::AutopilotSelfDeploying as i32),
            "autopilot_self_deploying"
        );
        assert_eq!(
            join_state_name(JoinState::HybridJoined as i32),
            "hybrid_joined"
        );
        assert_eq!(
            license_state_name(LicenseState::Unlicensed as i32),
            "unlicensed"
        );
        assert_eq!(platform_name(99), "unknown_99");
        assert_eq!(stage_name(-3), "unknown_-3");
        assert!(
            matches!(platform_name(1), Cow::Borrowed(_)),
            "known names do not allocate"
        );
    }

    fn ctx() -> RowContext {
        RowContext {
            tenant: "contoso".into(),
            agent_id: "a-1".into(),
            batch_seq: 7,
            received_at: 1_700_000_100,
            registered_device_id: "dev-registered".into(),
        }
    }

    #[test]
    fn event_fields_are_mapped() {
        let id = Uuid::new_v4();
        let e = EnrollmentEvent {
            event_id: id.to_string(),
            agent_id: "a-1".into(),
            device_id: "dev-1".into(),
            platform: Platform::Windows as i32,
            os_edition: "Windows 11 Pro".into(),
            os_version: "10.0.22631.4602".into(),
            enrollment_method: EnrollmentMethod::EntraJoin as i32,
            stage: EnrollmentStage::Authorization as i32,
            outcome: Outcome::Failed as i32,
            error: Some(ReportedError {
                code: 0x8018_0014,
                has_code: true,
                symbol: "DeviceCapReached".into(),
                message: "cap".into(),
            }),
            source: Some(Source {
                kind: SourceKind::EventLog as i32,
                channel: "ch".into(),
                event_id: 76,
                record_id: 5,
            }),
            user_principal_name: "joe@contoso.com".into(),
            attributes: HashMap::from([("k".to_owned(), "v".to_owned())]),
            ..Default::default()
        };
        let row = event_row(&ctx(), e, id, 1_700_000_000, 123);
        assert_eq!(&*row.tenant, "contoso");
        assert_eq!(row.event_id, id);
        assert_eq!(row.batch_seq, 7);
        assert_eq!(
            (row.occurred_at, row.occurred_ms, row.received_at),
            (1_700_000_000, 123, 1_700_000_100)
        );
        assert_eq!(row.platform, "windows");
        assert_eq!(row.enrollment_method, "entra_join");
        assert_eq!(row.stage, "authorization");
        assert_eq!(row.outcome, "failed");
        assert_eq!((row.error_code, row.error_has_code), (0x8018_0014, 1));
        assert_eq!(row.error_symbol, "DeviceCapReached");
        assert_eq!(row.source_kind, "event_log");
        assert_eq!((row.source_event_id, row.source_record_id), (76, 5));
        assert_eq!(row.attributes_key, vec!["k"]);
        assert_eq!(row.attributes_value, vec!["v"]);
    }

    #[test]
    fn missing_submessages_become_zero_values() {
        let row = event_row(&ctx(), EnrollmentEvent::default(), Uuid::nil(), 1, 0);
        assert_eq!((row.error_code, row.error_has_code), (0, 0));
        assert_eq!(row.source_kind, "unspecified");
        assert!(row.attributes_key.is_empty());

        let s = state_row(
            &ctx(),
            DeviceState {
                tpm: Some(TpmInfo {
                    present: true,
                    spec_version: "2.0".into(),
                    ready: false,
                    manufacturer: "INTC".into(),
                }),
                join_state: JoinState::EntraJoined as i32,
                mdm_enrolled: true,
                ..Default::default()
            },
            10,
            0,
        );
        assert_eq!((s.tpm_present, s.tpm_ready, s.mdm_enrolled), (1, 0, 1));
        assert_eq!(s.join_state, "entra_joined");
        assert_eq!(s.last_outcome, "unspecified");
        assert_eq!(s.license_state, "unspecified");
    }

    #[test]
    fn heartbeat_without_device_uses_the_registered_one() {
        let h = heartbeat_row(&ctx(), Heartbeat::default(), 5);
        assert_eq!(h.device_id, "dev-registered");
        let h = heartbeat_row(
            &ctx(),
            Heartbeat {
                device_id: "dev-x".into(),
                ..Default::default()
            },
            5,
        );
        assert_eq!(h.device_id, "dev-x");
    }
}
