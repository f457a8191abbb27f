//! The fingerprint of a batch's contents, used by the ledger to tell a resend (same digest)
//! from a reused sequence number (different digest).
//!
//! Hashing the wire bytes would not do: protobuf encoding is not canonical (map entries come in
//! any order, an agent may re-encode from its spool). So every field is fed to SHA-256 in field
//! order with explicit lengths and presence markers, and attribute maps sorted by key. The
//! encoding is versioned by its first byte; changing it makes in-flight resends look like
//! different contents, so it must stay stable.

use fleetpulse_proto::pbjson_types::Timestamp;
use fleetpulse_proto::v1::{
    DeviceState, EnrollmentEvent, Heartbeat, ReportedError, TelemetryItem, telemetry_item::Kind,
};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

const VERSION: u8 = 1;

/// Buffers small writes so SHA-256 sees large blocks.
struct Canon {
    hasher: Sha256,
    buf: Vec<u8>,
}

impl Canon {
    fn flush_if_full(&mut self) {
        if self.buf.len() >= 16 * 1024 {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
    }
    fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
    }
    fn ts(&mut self, t: Option<&Timestamp>) {
        match t {
            None => self.u8(0),
            Some(t) => {
                self.u8(1);
                self.i64(t.seconds);
                self.i32(t.nanos);
            }
        }
    }
    fn error(&mut self, e: Option<&ReportedError>) {
        match e {
            None => self.u8(0),
            Some(e) => {
                self.u8(1);
                self.u64(u64::from(e.code));
                self.bool(e.has_code);
                self.str(&e.symbol);
                self.str(&e.message);
            }
        }
    }
    fn attrs(&mut self, m: &HashMap<String, String>) {
        self.u64(m.len() as u64);
        let mut entries: Vec<(&String, &String)> = m.iter().collect();
        entries.sort_unstable();
        for (k, v) in entries {
            self.str(k);
            self.str(v);
        }
    }
    fn event(&mut self, e: &EnrollmentEvent) {
        self.u8(1);
        self.str(&e.event_id);
        self.str(&e.agent_id);
        self.str(&e.device_id);
        self.ts(e.occurred_at.as_ref());
        self.i32(e.platform);
        self.str(&e.os_edition);
        self.str(&e.os_version);
        self.i32(e.enrollment_method);
        self.i32(e.stage);
        self.i32(e.outcome);
        self.error(e.error.as_ref());
        match &e.source {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.i32(s.kind);
                self.str(&s.channel);
                self.u64(u64::from(s.event_id));
                self.u64(s.record_id);
            }
        }
        self.str(&e.user_principal_name);
        self.attrs(&e.attributes);
    }
    fn state(&mut self, s: &DeviceState) {
        self.u8(2);
        self.str(&s.agent_id);
        self.str(&s.device_id);
        self.ts(s.captured_at.as_ref());
        self.i32(s.platform);
        self.str(&s.os_edition);
        self.str(&s.os_version);
        self.i32(s.join_state);
        self.bool(s.mdm_enrolled);
        self.str(&s.mdm_url);
        self.str(&s.entra_tenant_id);
        match &s.tpm {
            None => self.u8(0),
            Some(t) => {
                self.u8(1);
                self.bool(t.present);
                self.str(&t.spec_version);
                self.bool(t.ready);
                self.str(&t.manufacturer);
            }
        }
        self.str(&s.primary_user_upn);
        self.ts(s.last_enrollment_attempt_at.as_ref());
        self.i32(s.last_enrollment_outcome);
        self.error(s.last_enrollment_error.as_ref());
        self.i32(s.license_state);
        self.i32(s.enrollment_method);
        self.str(&s.device_name);
        self.attrs(&s.attributes);
    }
    fn heartbeat(&mut self, h: &Heartbeat) {
        self.u8(3);
        self.str(&h.agent_id);
        self.ts(h.sent_at.as_ref());
        self.str(&h.agent_version);
        self.u64(h.spool_depth);
        self.u64(h.spool_bytes);
        self.u64(h.spool_dropped_total);
        self.u64(h.spool_corrupt_total);
        self.str(&h.last_error);
        self.str(&h.device_id);
    }
}

/// Hex SHA-256 of the canonical encoding of `items`.
pub fn batch_digest(items: &[TelemetryItem]) -> String {
    let mut c = Canon {
        hasher: Sha256::new(),
        buf: Vec::with_capacity(32 * 1024),
    };
    c.u8(VERSION);
    c.u64(items.len() as u64);
    for item in items {
        match &item.kind {
            None => c.u8(0),
            Some(Kind::Event(e)) => c.event(e),
            Some(Kind::State(s)) => c.state(s),
            Some(Kind::Heartbeat(h)) => c.heartbeat(h),
        }
        c.flush_if_full();
    }
    c.hasher.update(&c.buf);
    hex::encode(c.hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(attrs: &[(&str, &str)]) -> TelemetryItem {
        TelemetryItem {
            kind: Some(Kind::Event(EnrollmentEvent {
                event_id: "e".into(),
                device_id: "d".into(),
                attributes: attrs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn attribute_order_does_not_matter_but_contents_do() {
        let pairs: Vec<(String, String)> = (0..20)
            .map(|i| (format!("k{i}"), format!("v{i}")))
            .collect();
        let a: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut b = a.clone();
        b.reverse();
        assert_eq!(batch_digest(&[ev(&a)]), batch_digest(&[ev(&b)]));
        assert_ne!(
            batch_digest(&[ev(&[("k", "v")])]),
            batch_digest(&[ev(&[("k", "w")])])
        );
    }

    #[test]
    fn field_boundaries_and_order_matter() {
        // "ab"+"c" and "a"+"bc" must differ: lengths are hashed.
        let x = |id: &str, dev: &str| TelemetryItem {
            kind: Some(Kind::Event(EnrollmentEvent {
                event_id: id.into(),
                device_id: dev.into(),
                ..Default::default()
            })),
        };
        assert_ne!(batch_digest(&[x("ab", "c")]), batch_digest(&[x("a", "bc")]));
        assert_ne!(
            batch_digest(&[x("a", "b"), x("c", "d")]),
            batch_digest(&[x("c", "d"), x("a", "b")])
        );
        assert_ne!(batch_digest(&[TelemetryItem::default()]), batch_digest(&[]));
        assert_eq!(batch_digest(&[x("a", "b")]).len(), 64);
    }
}
