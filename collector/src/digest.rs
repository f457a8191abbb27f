//! The fingerprint of a batch's contents, used by the ledger to tell a resend (same digest)
//! from a reused sequence number (different digest).
//!
//! Hashing the wire bytes would not do: protobuf encoding is not canonical (map entries come in
//! any order, an agent may re-encode from its spool). So every field is fed to the hash in field
//! order with explicit lengths and presence markers, and attribute maps sorted by key. The
//! canonical encoding is versioned by its first byte and must stay stable.
//!
//! Two hashes of that encoding exist, told apart by their text:
//! - **v2** (what new claims store): `x3:` and the 32 hex digits of XXH3-128. The ledger keys a
//!   batch by its agent, so only an agent's own batches can collide; a collision crafted by
//!   the holder of an agent's credential makes the collector answer a new batch as a resend of
//!   that agent's earlier one, which that holder could as well have never sent. No other
//!   tenant or agent is reachable, so a cryptographic hash buys nothing here, and SHA-256 was
//!   ~7.6 % of the collector's CPU at batch 5000 (issue 13, `perf`, BENCHMARKS.md).
//! - **v1**: 64 hex digits of SHA-256, what collectors before v2 stored. A batch claimed by one
//!   of them and resent after the upgrade is compared under v1 ([`is_v1`], the claim path in
//!   `grpc::service`), so an upgrade never turns a resend into a "reused sequence number".

use fleetpulse_proto::pbjson_types::Timestamp;
use fleetpulse_proto::v1::{DeviceState, Heartbeat, ReportedError};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use twox_hash::XxHash3_128;

use crate::event_view::{EventView, TimestampView};
use crate::push::Item;

const VERSION: u8 = 1;
/// How a v2 digest's text begins (a v1 digest is bare hex).
const V2_PREFIX: &str = "x3:";

/// A hash fed the canonical encoding in blocks.
trait Sink {
    fn update(&mut self, bytes: &[u8]);
}

impl Sink for Sha256 {
    fn update(&mut self, bytes: &[u8]) {
        Digest::update(self, bytes);
    }
}

impl Sink for XxHash3_128 {
    fn update(&mut self, bytes: &[u8]) {
        self.write(bytes);
    }
}

/// Buffers small writes so the hash sees large blocks.
struct Canon<H> {
    hasher: H,
    buf: Vec<u8>,
}

impl<H: Sink> Canon<H> {
    fn new(hasher: H) -> Self {
        Self {
            hasher,
            buf: Vec::with_capacity(32 * 1024),
        }
    }
    fn flush_if_full(&mut self) {
        if self.buf.len() >= 16 * 1024 {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
    }
    /// Feeds the canonical encoding of `items`, then hands the hash back.
    fn items(mut self, items: &[Item<'_>]) -> H {
        self.u8(VERSION);
        self.u64(items.len() as u64);
        for item in items {
            match item {
                Item::Empty => self.u8(0),
                Item::Event(e) => self.event(e),
                Item::State(s) => self.state(s),
                Item::Heartbeat(h) => self.heartbeat(h),
            }
            self.flush_if_full();
        }
        self.hasher.update(&self.buf);
        self.hasher
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
        self.ts_view(t.map(|t| TimestampView {
            seconds: t.seconds,
            nanos: t.nanos,
        }));
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
        let mut entries: Vec<(&str, &str)> =
            m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.attr_entries(&mut entries);
    }
    /// Map entries (distinct keys) sorted by key.
    fn attr_entries(&mut self, entries: &mut [(&str, &str)]) {
        self.u64(entries.len() as u64);
        entries.sort_unstable();
        for (k, v) in entries.iter() {
            self.str(k);
            self.str(v);
        }
    }
    fn event(&mut self, e: &EventView<'_>) {
        self.u8(1);
        self.str(e.event_id);
        self.str(e.agent_id);
        self.str(e.device_id);
        self.ts_view(e.occurred_at);
        self.i32(e.platform);
        self.str(e.os_edition);
        self.str(e.os_version);
        self.i32(e.enrollment_method);
        self.i32(e.stage);
        self.i32(e.outcome);
        match &e.error {
            None => self.u8(0),
            Some(x) => {
                self.u8(1);
                self.u64(u64::from(x.code));
                self.bool(x.has_code);
                self.str(x.symbol);
                self.str(x.message);
            }
        }
        match &e.source {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.i32(s.kind);
                self.str(s.channel);
                self.u64(u64::from(s.event_id));
                self.u64(s.record_id);
            }
        }
        self.str(e.user_principal_name);
        let mut entries = e.attributes.clone();
        self.attr_entries(&mut entries);
    }
    fn ts_view(&mut self, t: Option<TimestampView>) {
        match t {
            None => self.u8(0),
            Some(t) => {
                self.u8(1);
                self.i64(t.seconds);
                self.i32(t.nanos);
            }
        }
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

/// The digest new claims store (v2): `x3:` and the hex XXH3-128 of the canonical encoding.
pub fn batch_digest(items: &[Item<'_>]) -> String {
    let hash = Canon::new(XxHash3_128::with_seed(0))
        .items(items)
        .finish_128();
    format!("{V2_PREFIX}{hash:032x}")
}

/// The digest collectors before v2 stored: hex SHA-256 of the same canonical encoding.
pub fn batch_digest_v1(items: &[Item<'_>]) -> String {
    hex::encode(Canon::new(Sha256::new()).items(items).finalize())
}

/// Whether a stored digest is v1 (64 hex digits), so a resend must be compared under v1.
pub fn is_v1(stored: &str) -> bool {
    stored.len() == 64 && stored.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::items_of;
    use fleetpulse_proto::v1::{EnrollmentEvent, TelemetryItem, telemetry_item::Kind};

    fn batch_digest(items: &[TelemetryItem]) -> String {
        super::batch_digest(&items_of(items))
    }

    fn batch_digest_v1(items: &[TelemetryItem]) -> String {
        super::batch_digest_v1(&items_of(items))
    }

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
        assert_eq!(batch_digest(&[x("a", "b")]).len(), 35);
        assert_eq!(batch_digest_v1(&[x("a", "b")]).len(), 64);
        assert_ne!(
            batch_digest_v1(&[x("ab", "c")]),
            batch_digest_v1(&[x("a", "bc")])
        );
    }

    /// The canonical encoding and both hashes are frozen: a change would make every batch in
    /// flight across an upgrade look like a reused sequence number. These values were computed
    /// by the v1 code before v2 existed (v1) and when v2 was introduced (v2).
    #[test]
    fn digests_are_stable_across_releases() {
        let items = [
            ev(&[("b", "2"), ("a", "1")]),
            TelemetryItem {
                kind: Some(Kind::Heartbeat(Heartbeat {
                    agent_id: "agent".into(),
                    agent_version: "1.2.3".into(),
                    spool_depth: 7,
                    ..Default::default()
                })),
            },
            TelemetryItem::default(),
        ];
        assert_eq!(batch_digest_v1(&items), V1_FROZEN);
        assert_eq!(batch_digest(&items), V2_FROZEN);
    }

    const V1_FROZEN: &str = "cf5737bae3191cc923b0902a70d9751b3ec20445cfb2a7b2d7bf1242da1ebd0e";
    const V2_FROZEN: &str = "x3:50c657d97000e0d95cea405fb18375a0";

    #[test]
    fn versions_are_told_apart_by_their_text() {
        let items = [ev(&[("k", "v")])];
        assert!(is_v1(&batch_digest_v1(&items)));
        assert!(!is_v1(&batch_digest(&items)));
        assert!(batch_digest(&items).starts_with("x3:"));
        // What fits the ledger's column (VARCHAR(64)).
        assert!(batch_digest(&items).len() <= 64);
    }
}
