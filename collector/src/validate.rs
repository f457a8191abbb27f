//! Validation of every field of every pushed item: a pure function of the request, the
//! credential's agent id, the limits and the clock, so it is tested without any server.
//!
//! Policy (see ingest.proto): by default invalid items are rejected one by one and listed in
//! `PushResponse.rejected` (one entry per offending field, so an item may appear more than once)
//! while the valid items are stored; with `all_or_nothing` one invalid item fails the whole
//! batch with INVALID_ARGUMENT. An item naming another agent than the credential's fails the
//! whole push with PERMISSION_DENIED: that is a misbehaving or hostile sender, not bad data.
//!
//! Decisions worth knowing:
//! - A `failed` event without an error is accepted: some sources (event 76 without a code)
//!   really report failures without one, and dropping them would hide failures.
//! - Unknown enum numbers are accepted and stored as `unknown_<n>` (proto compatibility rule).
//! - Ids (event, agent, device) must not contain control characters; free text may.
//! - A heartbeat without a device id is stored under the device the agent registered with.
//! - Timestamps must be present, not more than `max_future_skew` ahead of the collector's clock
//!   and, except `last_enrollment_attempt_at`, not older than the retention.

use fleetpulse_proto::pbjson_types::Timestamp;
use fleetpulse_proto::v1::{DeviceState, Heartbeat, ReportedError};
use uuid::Uuid;

use crate::event_view::EventView;
use crate::push::Item;

/// Byte limits of string fields, as documented in telemetry.proto (and, where the proto is
/// silent, chosen here: URLs 2048, ids 128, short versions 32).
pub mod limits {
    pub const DEVICE_ID: usize = 128;
    pub const AGENT_ID: usize = 64;
    pub const OS_EDITION: usize = 128;
    pub const OS_VERSION: usize = 64;
    pub const ERROR_SYMBOL: usize = 256;
    pub const ERROR_MESSAGE: usize = 4096;
    pub const SOURCE_CHANNEL: usize = 256;
    pub const USER_PRINCIPAL_NAME: usize = 256;
    pub const ATTRIBUTES: usize = 32;
    pub const ATTRIBUTE_KEY: usize = 64;
    pub const ATTRIBUTE_VALUE: usize = 1024;
    pub const MDM_URL: usize = 2048;
    pub const ENTRA_TENANT_ID: usize = 128;
    pub const TPM_SPEC_VERSION: usize = 32;
    pub const TPM_MANUFACTURER: usize = 64;
    pub const DEVICE_NAME: usize = 256;
    pub const AGENT_VERSION: usize = 64;
    pub const LAST_ERROR: usize = 4096;
    pub const HOSTNAME: usize = 256;
}

/// The limits validation enforces (from the configuration).
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub max_batch_items: u32,
    pub max_batch_bytes: u32,
    pub max_future_skew_secs: i64,
    pub retention_days: u32,
}

impl Rules {
    pub fn max_age_secs(&self) -> i64 {
        i64::from(self.retention_days) * 86_400
    }
}

/// Why a whole Push is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    PermissionDenied(String),
}

/// One offending field of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRejection {
    pub index: u32,
    pub field: String,
    pub reason: String,
}

/// What validation derived from a valid item, for the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    Event {
        event_id: Uuid,
        occurred_at: u32,
        occurred_ms: u16,
    },
    State {
        captured_at: u32,
        /// 0 when the device reported no attempt.
        last_attempt_at: u32,
    },
    Heartbeat {
        sent_at: u32,
    },
}

/// Per item: `Some` when valid; plus every rejection, in item order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    pub checked: Vec<Option<Checked>>,
    pub rejections: Vec<ItemRejection>,
}

impl Validation {
    pub fn accepted(&self) -> usize {
        self.checked.iter().filter(|c| c.is_some()).count()
    }
}

/// Batch-level checks, before anything item by item.
pub fn check_batch(
    req: &crate::push::DecodedPush,
    encoded_len: usize,
    rules: &Rules,
) -> Result<(), BatchError> {
    if req.batch_seq == 0 {
        return Err(BatchError::InvalidArgument(
            "batch_seq: must be at least 1".into(),
        ));
    }
    if req.batch_seq > i64::MAX as u64 {
        return Err(BatchError::InvalidArgument(format!(
            "batch_seq: {} is above the maximum of {}",
            req.batch_seq,
            i64::MAX
        )));
    }
    if req.is_empty() {
        return Err(BatchError::InvalidArgument(format!(
            "items: the batch is empty; send 1..={} items",
            rules.max_batch_items
        )));
    }
    if req.len() > rules.max_batch_items as usize {
        return Err(BatchError::ResourceExhausted(format!(
            "items: {} items exceed max_batch_items = {}; split the batch",
            req.len(),
            rules.max_batch_items
        )));
    }
    if encoded_len > rules.max_batch_bytes as usize {
        return Err(BatchError::ResourceExhausted(format!(
            "the batch is {encoded_len} bytes, over max_batch_bytes = {}; split the batch",
            rules.max_batch_bytes
        )));
    }
    Ok(())
}

/// Formats seconds since the epoch as RFC 3339 UTC.
pub fn fmt_ts(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} s after 1970-01-01T00:00:00Z"))
}

/// `86400` -> `24h`, `90` -> `90s`, `120` -> `2m`.
pub fn fmt_duration(secs: i64) -> String {
    if secs != 0 && secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs != 0 && secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Joins rejections into one INVALID_ARGUMENT message, listing at most `cap` of them.
pub fn summarize(rejections: &[ItemRejection], cap: usize) -> String {
    let mut parts: Vec<String> = rejections
        .iter()
        .take(cap)
        .map(|r| format!("{}: {}", r.field, r.reason))
        .collect();
    if rejections.len() > cap {
        parts.push(format!("and {} more", rejections.len() - cap));
    }
    parts.join("; ")
}

fn item_agent_id<'a>(item: &Item<'a>) -> Option<(&'static str, &'a str)> {
    match item {
        Item::Event(e) => Some(("event", e.agent_id)),
        Item::State(s) => Some(("state", &s.agent_id)),
        Item::Heartbeat(h) => Some(("heartbeat", &h.agent_id)),
        Item::Empty => None,
    }
}

/// Validates every item. Fails the whole push only when an item names another agent.
pub fn validate_items(
    items: &[Item<'_>],
    agent_id: &str,
    rules: &Rules,
    now_secs: i64,
) -> Result<Validation, BatchError> {
    for (i, item) in items.iter().enumerate() {
        if let Some((kind, id)) = item_agent_id(item)
            && !id.is_empty()
            && id != agent_id
        {
            return Err(BatchError::PermissionDenied(format!(
                "items[{i}].{kind}.agent_id: belongs to another agent than the credential"
            )));
        }
    }
    let mut rejections = Vec::new();
    let mut checked = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let mut c = ItemCheck {
            index: i,
            kind: "",
            rules,
            now_secs,
            out: &mut rejections,
            bad: false,
        };
        let result = match item {
            Item::Event(e) => c.event(e),
            Item::State(s) => c.state(s),
            Item::Heartbeat(h) => c.heartbeat(h),
            Item::Empty => {
                c.out.push(ItemRejection {
                    index: i as u32,
                    field: format!("items[{i}].kind"),
                    reason: "empty item: set one of event, state, heartbeat".into(),
                });
                None
            }
        };
        checked.push(result);
    }
    Ok(Validation {
        checked,
        rejections,
    })
}

/// Collects the rejections of one item.
struct ItemCheck<'a> {
    index: usize,
    kind: &'static str,
    rules: &'a Rules,
    now_secs: i64,
    out: &'a mut Vec<ItemRejection>,
    bad: bool,
}

/// Shows at most 40 characters of untrusted input in a message.
fn echo(s: &str) -> String {
    let cut: String = s.chars().take(40).collect();
    if cut.len() < s.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

impl ItemCheck<'_> {
    fn reject(&mut self, field: &str, reason: String) {
        self.bad = true;
        self.out.push(ItemRejection {
            index: self.index as u32,
            field: format!("items[{}].{}.{field}", self.index, self.kind),
            reason,
        });
    }

    fn max_len(&mut self, field: &str, s: &str, max: usize) {
        if s.len() > max {
            self.reject(
                field,
                format!("is {} bytes; at most {max} allowed", s.len()),
            );
        }
    }

    /// An identifier: required, bounded, no control characters.
    fn id(&mut self, field: &str, s: &str, max: usize, required: bool) {
        if s.is_empty() {
            if required {
                self.reject(field, format!("required (1..={max} bytes)"));
            }
        } else if s.len() > max {
            self.reject(
                field,
                format!("is {} bytes; at most {max} allowed", s.len()),
            );
        } else if s.chars().any(char::is_control) {
            self.reject(field, "contains a control character".into());
        }
    }

    fn agent_id(&mut self, s: &str) {
        // A non-empty foreign agent id was refused for the whole push already.
        if s.is_empty() {
            self.reject(
                "agent_id",
                "required (the agent id of the credential)".into(),
            );
        }
    }

    /// A timestamp; returns (seconds, milliseconds) when valid.
    fn time(
        &mut self,
        field: &str,
        ts: Option<&Timestamp>,
        required: bool,
        age_limited: bool,
    ) -> Option<(u32, u16)> {
        let Some(ts) = ts else {
            if required {
                self.reject(field, "required".into());
            }
            return None;
        };
        if !(0..=999_999_999).contains(&ts.nanos) {
            self.reject(
                field,
                format!("nanos {} is outside 0..=999999999", ts.nanos),
            );
            return None;
        }
        let skew = self.rules.max_future_skew_secs;
        if ts.seconds > self.now_secs.saturating_add(skew) {
            self.reject(
                field,
                format!(
                    "{} is more than {} in the future",
                    fmt_ts(ts.seconds),
                    fmt_duration(skew)
                ),
            );
            return None;
        }
        if age_limited && ts.seconds < self.now_secs.saturating_sub(self.rules.max_age_secs()) {
            let days = self.rules.retention_days;
            self.reject(
                field,
                format!(
                    "{} is older than the retention of {days} day{}",
                    fmt_ts(ts.seconds),
                    if days == 1 { "" } else { "s" }
                ),
            );
            return None;
        }
        match u32::try_from(ts.seconds) {
            Ok(secs) => Some((secs, (ts.nanos / 1_000_000) as u16)),
            Err(_) => {
                self.reject(
                    field,
                    format!(
                        "{} is outside the storable range 1970-01-01T00:00:00Z..=2106-02-07T06:28:15Z",
                        fmt_ts(ts.seconds)
                    ),
                );
                None
            }
        }
    }

    fn error(&mut self, prefix: &str, e: Option<&ReportedError>) {
        if let Some(e) = e {
            self.error_parts(prefix, &e.symbol, &e.message);
        }
    }

    fn error_parts(&mut self, prefix: &str, symbol: &str, message: &str) {
        self.max_len(&format!("{prefix}.symbol"), symbol, limits::ERROR_SYMBOL);
        self.max_len(&format!("{prefix}.message"), message, limits::ERROR_MESSAGE);
    }

    /// A map's entries (distinct keys), in any order.
    fn attributes<'k>(&mut self, attrs: impl ExactSizeIterator<Item = (&'k str, &'k str)>) {
        if attrs.len() == 0 {
            return;
        }
        if attrs.len() > limits::ATTRIBUTES {
            self.reject(
                "attributes",
                format!(
                    "has {} entries; at most {} allowed",
                    attrs.len(),
                    limits::ATTRIBUTES
                ),
            );
        }
        let first = self.out.len();
        for (k, v) in attrs {
            if k.is_empty() || k.len() > limits::ATTRIBUTE_KEY {
                self.reject(
                    "attributes",
                    format!(
                        "key {} is {} bytes; keys must be 1..={} bytes",
                        echo(k),
                        k.len(),
                        limits::ATTRIBUTE_KEY
                    ),
                );
            } else if k.chars().any(char::is_control) {
                self.reject(
                    "attributes",
                    format!("key {} contains a control character", echo(k)),
                );
            } else if v.len() > limits::ATTRIBUTE_VALUE {
                self.reject(
                    &format!("attributes[{k:?}]"),
                    format!(
                        "value is {} bytes; at most {} allowed",
                        v.len(),
                        limits::ATTRIBUTE_VALUE
                    ),
                );
            }
        }
        // Map order is random; report in a stable order.
        self.out[first..].sort_by(|a, b| (&a.field, &a.reason).cmp(&(&b.field, &b.reason)));
    }

    fn event(&mut self, e: &EventView<'_>) -> Option<Checked> {
        self.kind = "event";
        let event_id = if e.event_id.is_empty() {
            self.reject("event_id", "required (a UUID)".into());
            None
        } else {
            match Uuid::try_parse(e.event_id) {
                Ok(u) if e.event_id.len() == 36 && !u.is_nil() => Some(u),
                Ok(u) if u.is_nil() => {
                    self.reject("event_id", "must not be the nil UUID".into());
                    None
                }
                _ => {
                    self.reject(
                        "event_id",
                        format!(
                            "{} is not a UUID in canonical form (8-4-4-4-12 hex digits)",
                            echo(e.event_id)
                        ),
                    );
                    None
                }
            }
        };
        self.agent_id(e.agent_id);
        self.id("device_id", e.device_id, limits::DEVICE_ID, true);
        let occurred_at = e.occurred_at.map(|t| Timestamp {
            seconds: t.seconds,
            nanos: t.nanos,
        });
        let occurred = self.time("occurred_at", occurred_at.as_ref(), true, true);
        self.max_len("os_edition", e.os_edition, limits::OS_EDITION);
        self.max_len("os_version", e.os_version, limits::OS_VERSION);
        if let Some(x) = &e.error {
            self.error_parts("error", x.symbol, x.message);
        }
        if let Some(s) = &e.source {
            self.max_len("source.channel", s.channel, limits::SOURCE_CHANNEL);
        }
        self.max_len(
            "user_principal_name",
            e.user_principal_name,
            limits::USER_PRINCIPAL_NAME,
        );
        self.attributes(e.attributes.iter().copied());
        match (self.bad, event_id, occurred) {
            (false, Some(event_id), Some((occurred_at, occurred_ms))) => Some(Checked::Event {
                event_id,
                occurred_at,
                occurred_ms,
            }),
            _ => None,
        }
    }

    fn state(&mut self, s: &DeviceState) -> Option<Checked> {
        self.kind = "state";
        self.agent_id(&s.agent_id);
        self.id("device_id", &s.device_id, limits::DEVICE_ID, true);
        let captured = self.time("captured_at", s.captured_at.as_ref(), true, true);
        let last_attempt = self.time(
            "last_enrollment_attempt_at",
            s.last_enrollment_attempt_at.as_ref(),
            false,
            false,
        );
        self.max_len("os_edition", &s.os_edition, limits::OS_EDITION);
        self.max_len("os_version", &s.os_version, limits::OS_VERSION);
        self.max_len("mdm_url", &s.mdm_url, limits::MDM_URL);
        self.max_len(
            "entra_tenant_id",
            &s.entra_tenant_id,
            limits::ENTRA_TENANT_ID,
        );
        if let Some(t) = &s.tpm {
            self.max_len(
                "tpm.spec_version",
                &t.spec_version,
                limits::TPM_SPEC_VERSION,
            );
            self.max_len(
                "tpm.manufacturer",
                &t.manufacturer,
                limits::TPM_MANUFACTURER,
            );
        }
        self.max_len(
            "primary_user_upn",
            &s.primary_user_upn,
            limits::USER_PRINCIPAL_NAME,
        );
        self.error("last_enrollment_error", s.last_enrollment_error.as_ref());
        self.max_len("device_name", &s.device_name, limits::DEVICE_NAME);
        self.attributes(s.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        match (self.bad, captured) {
            (false, Some((captured_at, _))) => Some(Checked::State {
                captured_at,
                last_attempt_at: last_attempt.map_or(0, |(secs, _)| secs),
            }),
            _ => None,
        }
    }

    fn heartbeat(&mut self, h: &Heartbeat) -> Option<Checked> {
        self.kind = "heartbeat";
        self.agent_id(&h.agent_id);
        self.id("device_id", &h.device_id, limits::DEVICE_ID, false);
        let sent = self.time("sent_at", h.sent_at.as_ref(), true, true);
        self.max_len("agent_version", &h.agent_version, limits::AGENT_VERSION);
        self.max_len("last_error", &h.last_error, limits::LAST_ERROR);
        match (self.bad, sent) {
            (false, Some((sent_at, _))) => Some(Checked::Heartbeat { sent_at }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::v1::{
        EnrollmentEvent, PushRequest, Source, TelemetryItem, TpmInfo, telemetry_item::Kind,
    };
    use std::collections::HashMap;

    /// The handler's validation of prost items (as the handler borrows them).
    fn validate_items(
        items: &[TelemetryItem],
        agent_id: &str,
        rules: &Rules,
        now_secs: i64,
    ) -> Result<Validation, BatchError> {
        super::validate_items(&crate::push::items_of(items), agent_id, rules, now_secs)
    }

    fn check_batch(req: &PushRequest, encoded_len: usize, rules: &Rules) -> Result<(), BatchError> {
        super::check_batch(
            &crate::push::DecodedPush::from_request(req.clone()),
            encoded_len,
            rules,
        )
    }

    const AGENT: &str = "6f1c2a8e-1b2c-4d3e-8f4a-5b6c7d8e9f00";
    const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn rules() -> Rules {
        Rules {
            max_batch_items: 5000,
            max_batch_bytes: 4 * 1024 * 1024,
            max_future_skew_secs: 86_400,
            retention_days: 90,
        }
    }

    fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    fn event() -> EnrollmentEvent {
        EnrollmentEvent {
            event_id: "0b6a3c1e-9d7f-4e2a-b5c8-1d2e3f4a5b6c".into(),
            agent_id: AGENT.into(),
            device_id: "dev-1".into(),
            occurred_at: ts(NOW - 60, 123_456_789),
            ..Default::default()
        }
    }

    fn item(kind: Kind) -> TelemetryItem {
        TelemetryItem { kind: Some(kind) }
    }

    fn one(e: EnrollmentEvent) -> Validation {
        validate_items(&[item(Kind::Event(e))], AGENT, &rules(), NOW).unwrap()
    }

    fn reasons(v: &Validation) -> Vec<(String, String)> {
        v.rejections
            .iter()
            .map(|r| (r.field.clone(), r.reason.clone()))
            .collect()
    }

    fn pair(f: &str, r: &str) -> (String, String) {
        (f.to_owned(), r.to_owned())
    }

    #[test]
    fn valid_event_yields_ids_and_millis() {
        let v = one(event());
        assert!(v.rejections.is_empty());
        assert_eq!(
            v.checked,
            vec![Some(Checked::Event {
                event_id: Uuid::parse_str("0b6a3c1e-9d7f-4e2a-b5c8-1d2e3f4a5b6c").unwrap(),
                occurred_at: (NOW - 60) as u32,
                occurred_ms: 123,
            })]
        );
    }

    #[test]
    fn event_id_rules() {
        for (id, reason) in [
            ("", "required (a UUID)"),
            (
                "abc",
                "\"abc\" is not a UUID in canonical form (8-4-4-4-12 hex digits)",
            ),
            (
                "0b6a3c1e9d7f4e2ab5c81d2e3f4a5b6c",
                "\"0b6a3c1e9d7f4e2ab5c81d2e3f4a5b6c\" is not a UUID in canonical form (8-4-4-4-12 hex digits)",
            ),
            (
                "00000000-0000-0000-0000-000000000000",
                "must not be the nil UUID",
            ),
        ] {
            let v = one(EnrollmentEvent {
                event_id: id.into(),
                ..event()
            });
            assert_eq!(
                reasons(&v),
                vec![pair("items[0].event.event_id", reason)],
                "{id}"
            );
            assert_eq!(v.checked, vec![None]);
        }
    }

    #[test]
    fn foreign_agent_fails_the_whole_push() {
        let items = vec![
            item(Kind::Event(event())),
            item(Kind::Heartbeat(Heartbeat {
                agent_id: AGENT.into(),
                sent_at: ts(NOW, 0),
                ..Default::default()
            })),
            item(Kind::Event(EnrollmentEvent {
                agent_id: "someone-else".into(),
                ..event()
            })),
        ];
        assert_eq!(
            validate_items(&items, AGENT, &rules(), NOW).unwrap_err(),
            BatchError::PermissionDenied(
                "items[2].event.agent_id: belongs to another agent than the credential".into()
            )
        );
        let v = one(EnrollmentEvent {
            agent_id: String::new(),
            ..event()
        });
        assert_eq!(
            reasons(&v),
            vec![pair(
                "items[0].event.agent_id",
                "required (the agent id of the credential)"
            )]
        );
    }

    #[test]
    fn device_id_rules() {
        for (id, reason) in [
            (String::new(), "required (1..=128 bytes)".to_owned()),
            (
                "x".repeat(129),
                "is 129 bytes; at most 128 allowed".to_owned(),
            ),
            ("a\nb".to_owned(), "contains a control character".to_owned()),
        ] {
            let v = one(EnrollmentEvent {
                device_id: id,
                ..event()
            });
            assert_eq!(reasons(&v), vec![pair("items[0].event.device_id", &reason)]);
        }
        assert!(
            one(EnrollmentEvent {
                device_id: "x".repeat(128),
                ..event()
            })
            .rejections
            .is_empty()
        );
    }

    #[test]
    fn occurred_at_rules() {
        let cases = [
            (None, "required"),
            (
                ts(3_881_606_400, 0),
                "2093-01-01T00:00:00Z is more than 24h in the future",
            ),
            (
                ts(NOW - 91 * 86_400, 0),
                "2025-10-02T00:00:00Z is older than the retention of 90 days",
            ),
            (ts(NOW, -1), "nanos -1 is outside 0..=999999999"),
            (
                ts(NOW, 1_000_000_000),
                "nanos 1000000000 is outside 0..=999999999",
            ),
        ];
        for (t, reason) in cases {
            let v = one(EnrollmentEvent {
                occurred_at: t,
                ..event()
            });
            assert_eq!(
                reasons(&v),
                vec![pair("items[0].event.occurred_at", reason)]
            );
        }
        // The edges themselves are accepted.
        for t in [NOW + 86_400, NOW - 90 * 86_400] {
            assert!(
                one(EnrollmentEvent {
                    occurred_at: ts(t, 0),
                    ..event()
                })
                .rejections
                .is_empty()
            );
        }
    }

    #[test]
    fn string_limits_are_enforced_per_field() {
        let v = one(EnrollmentEvent {
            os_edition: "e".repeat(129),
            os_version: "v".repeat(65),
            error: Some(ReportedError {
                symbol: "s".repeat(257),
                message: "m".repeat(4097),
                ..Default::default()
            }),
            source: Some(Source {
                channel: "c".repeat(257),
                ..Default::default()
            }),
            user_principal_name: "u".repeat(257),
            ..event()
        });
        assert_eq!(
            reasons(&v),
            vec![
                pair(
                    "items[0].event.os_edition",
                    "is 129 bytes; at most 128 allowed"
                ),
                pair(
                    "items[0].event.os_version",
                    "is 65 bytes; at most 64 allowed"
                ),
                pair(
                    "items[0].event.error.symbol",
                    "is 257 bytes; at most 256 allowed"
                ),
                pair(
                    "items[0].event.error.message",
                    "is 4097 bytes; at most 4096 allowed"
                ),
                pair(
                    "items[0].event.source.channel",
                    "is 257 bytes; at most 256 allowed"
                ),
                pair(
                    "items[0].event.user_principal_name",
                    "is 257 bytes; at most 256 allowed"
                ),
            ]
        );
    }

    #[test]
    fn attribute_rules() {
        let many: HashMap<String, String> =
            (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        let v = one(EnrollmentEvent {
            attributes: many,
            ..event()
        });
        assert_eq!(
            reasons(&v),
            vec![pair(
                "items[0].event.attributes",
                "has 33 entries; at most 32 allowed"
            )]
        );
        let v = one(EnrollmentEvent {
            attributes: HashMap::from([
                (String::new(), "x".into()),
                ("k".repeat(65), "x".into()),
                ("big".into(), "v".repeat(1025)),
                ("tab\t".into(), "x".into()),
                ("ok".into(), "v".repeat(1024)),
            ]),
            ..event()
        });
        assert_eq!(
            reasons(&v),
            vec![
                pair(
                    "items[0].event.attributes",
                    "key \"\" is 0 bytes; keys must be 1..=64 bytes"
                ),
                pair(
                    "items[0].event.attributes",
                    "key \"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"... is 65 bytes; keys must be 1..=64 bytes"
                ),
                pair(
                    "items[0].event.attributes",
                    "key \"tab\\t\" contains a control character"
                ),
                pair(
                    "items[0].event.attributes[\"big\"]",
                    "value is 1025 bytes; at most 1024 allowed"
                ),
            ]
        );
    }

    #[test]
    fn failed_event_without_error_is_accepted_and_unknown_enums_pass() {
        let v = one(EnrollmentEvent {
            outcome: 2,
            platform: 77,
            stage: 1234,
            ..event()
        });
        assert!(v.rejections.is_empty());
        assert_eq!(v.accepted(), 1);
    }

    #[test]
    fn state_rules() {
        let good = DeviceState {
            agent_id: AGENT.into(),
            device_id: "dev".into(),
            captured_at: ts(NOW, 0),
            last_enrollment_attempt_at: ts(1_000, 0),
            tpm: Some(TpmInfo::default()),
            ..Default::default()
        };
        let v = validate_items(&[item(Kind::State(good.clone()))], AGENT, &rules(), NOW).unwrap();
        assert_eq!(
            v.checked,
            vec![Some(Checked::State {
                captured_at: NOW as u32,
                last_attempt_at: 1_000
            })]
        );
        let bad = DeviceState {
            captured_at: None,
            last_enrollment_attempt_at: ts(NOW + 2 * 86_400, 0),
            mdm_url: "u".repeat(2049),
            tpm: Some(TpmInfo {
                manufacturer: "m".repeat(65),
                ..Default::default()
            }),
            last_enrollment_error: Some(ReportedError {
                symbol: "s".repeat(257),
                ..Default::default()
            }),
            ..good
        };
        let v = validate_items(&[item(Kind::State(bad))], AGENT, &rules(), NOW).unwrap();
        assert_eq!(
            reasons(&v),
            vec![
                pair("items[0].state.captured_at", "required"),
                pair(
                    "items[0].state.last_enrollment_attempt_at",
                    "2026-01-03T00:00:00Z is more than 24h in the future"
                ),
                pair(
                    "items[0].state.mdm_url",
                    "is 2049 bytes; at most 2048 allowed"
                ),
                pair(
                    "items[0].state.tpm.manufacturer",
                    "is 65 bytes; at most 64 allowed"
                ),
                pair(
                    "items[0].state.last_enrollment_error.symbol",
                    "is 257 bytes; at most 256 allowed"
                ),
            ]
        );
    }

    #[test]
    fn heartbeat_rules() {
        let good = Heartbeat {
            agent_id: AGENT.into(),
            sent_at: ts(NOW, 0),
            ..Default::default()
        };
        let v =
            validate_items(&[item(Kind::Heartbeat(good.clone()))], AGENT, &rules(), NOW).unwrap();
        assert_eq!(
            v.checked,
            vec![Some(Checked::Heartbeat {
                sent_at: NOW as u32
            })]
        );
        let bad = Heartbeat {
            sent_at: None,
            agent_version: "v".repeat(65),
            device_id: "d\u{0}".into(),
            ..good
        };
        let v = validate_items(&[item(Kind::Heartbeat(bad))], AGENT, &rules(), NOW).unwrap();
        assert_eq!(
            reasons(&v),
            vec![
                pair(
                    "items[0].heartbeat.device_id",
                    "contains a control character"
                ),
                pair("items[0].heartbeat.sent_at", "required"),
                pair(
                    "items[0].heartbeat.agent_version",
                    "is 65 bytes; at most 64 allowed"
                ),
            ]
        );
    }

    #[test]
    fn empty_item_and_mixed_batch_keep_indices() {
        let items = vec![
            item(Kind::Event(event())),
            TelemetryItem { kind: None },
            item(Kind::Event(EnrollmentEvent {
                device_id: String::new(),
                ..event()
            })),
        ];
        let v = validate_items(&items, AGENT, &rules(), NOW).unwrap();
        assert_eq!(v.accepted(), 1);
        assert_eq!(
            v.rejections,
            vec![
                ItemRejection {
                    index: 1,
                    field: "items[1].kind".into(),
                    reason: "empty item: set one of event, state, heartbeat".into()
                },
                ItemRejection {
                    index: 2,
                    field: "items[2].event.device_id".into(),
                    reason: "required (1..=128 bytes)".into()
                },
            ]
        );
    }

    #[test]
    fn batch_level_rules() {
        let r = rules();
        let req = |seq, n| PushRequest {
            batch_seq: seq,
            items: vec![TelemetryItem::default(); n],
            all_or_nothing: false,
        };
        assert_eq!(
            check_batch(&req(0, 1), 10, &r).unwrap_err(),
            BatchError::InvalidArgument("batch_seq: must be at least 1".into())
        );
        assert_eq!(
            check_batch(&req(u64::MAX, 1), 10, &r).unwrap_err(),
            BatchError::InvalidArgument(
                "batch_seq: 18446744073709551615 is above the maximum of 9223372036854775807"
                    .into()
            )
        );
        assert_eq!(
            check_batch(&req(1, 0), 10, &r).unwrap_err(),
            BatchError::InvalidArgument("items: the batch is empty; send 1..=5000 items".into())
        );
        assert_eq!(
            check_batch(&req(1, 5001), 10, &r).unwrap_err(),
            BatchError::ResourceExhausted(
                "items: 5001 items exceed max_batch_items = 5000; split the batch".into()
            )
        );
        assert_eq!(
            check_batch(&req(1, 5000), 4_194_305, &r).unwrap_err(),
            BatchError::ResourceExhausted(
                "the batch is 4194305 bytes, over max_batch_bytes = 4194304; split the batch"
                    .into()
            )
        );
        check_batch(&req(1, 5000), 4_194_304, &r).unwrap();
    }

    #[test]
    fn summary_caps_the_list() {
        let rs: Vec<ItemRejection> = (0..23)
            .map(|i| ItemRejection {
                index: i,
                field: format!("items[{i}].event.device_id"),
                reason: "required".into(),
            })
            .collect();
        let s = summarize(&rs, 20);
        assert!(
            s.starts_with("items[0].event.device_id: required; items[1].event.device_id: required")
        );
        assert!(
            s.ends_with("items[19].event.device_id: required; and 3 more"),
            "{s}"
        );
        assert_eq!(
            summarize(&rs[..1], 20),
            "items[0].event.device_id: required"
        );
    }

    #[test]
    fn durations_format_compactly() {
        assert_eq!(fmt_duration(86_400), "24h");
        assert_eq!(fmt_duration(120), "2m");
        assert_eq!(fmt_duration(90), "90s");
        assert_eq!(fmt_ts(0), "1970-01-01T00:00:00Z");
    }
}
