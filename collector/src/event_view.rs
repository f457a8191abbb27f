//! A borrowed decoding of one `EnrollmentEvent`: every string is a slice of the request's
//! bytes, so decoding an event allocates only its attribute list (and nothing when it has
//! none).
//!
//! Why: at batch 5000 the collector spent about half its CPU on a `String` per field per
//! event: prost's decoding (allocate, copy, check UTF-8; 23 % of the samples), building rows
//! from them (6 %), serialising the rows (12 %) and freeing the strings after the insert on
//! another thread (11 %) (issue 13, `perf`, BENCHMARKS.md). A view is read once and written
//! straight into RowBinary ([`crate::store::event_rowbinary`]).
//!
//! Semantics are prost's, so a view and `EnrollmentEvent::decode` always agree (tested here on
//! generated events, and equal on every input the fuzz corpus holds): the last occurrence of a
//! scalar or string wins, repeated sub-messages merge field by field, unknown fields are
//! skipped, map entries with the same key keep the last value. Anything prost would refuse
//! (bad UTF-8, a wrong wire type, a cut-short length) is refused here too, with no reason
//! given: callers decode such an item with prost to get prost's message, which names the field.

use fleetpulse_proto::pbjson_types::Timestamp;
use fleetpulse_proto::v1::{EnrollmentEvent, ReportedError, Source};
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

/// `google.protobuf.Timestamp`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimestampView {
    pub seconds: i64,
    pub nanos: i32,
}

/// `ReportedError`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorView<'a> {
    pub code: u32,
    pub has_code: bool,
    pub symbol: &'a str,
    pub message: &'a str,
}

/// `Source`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceView<'a> {
    pub kind: i32,
    pub channel: &'a str,
    pub event_id: u32,
    pub record_id: u64,
}

/// `EnrollmentEvent`, borrowed from the encoded message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventView<'a> {
    pub event_id: &'a str,
    pub agent_id: &'a str,
    pub device_id: &'a str,
    pub occurred_at: Option<TimestampView>,
    pub platform: i32,
    pub os_edition: &'a str,
    pub os_version: &'a str,
    pub enrollment_method: i32,
    pub stage: i32,
    pub outcome: i32,
    pub error: Option<ErrorView<'a>>,
    pub source: Option<SourceView<'a>>,
    pub user_principal_name: &'a str,
    /// Distinct keys, each with the last value sent for it (sorted by key when decoded, in
    /// the map's order when borrowed from a prost event).
    pub attributes: Vec<(&'a str, &'a str)>,
}

impl<'a> EventView<'a> {
    /// Borrows a prost event (tests and tools that build events as structs).
    pub fn of(e: &'a EnrollmentEvent) -> Self {
        EventView {
            event_id: &e.event_id,
            agent_id: &e.agent_id,
            device_id: &e.device_id,
            occurred_at: e.occurred_at.as_ref().map(|t| TimestampView {
                seconds: t.seconds,
                nanos: t.nanos,
            }),
            platform: e.platform,
            os_edition: &e.os_edition,
            os_version: &e.os_version,
            enrollment_method: e.enrollment_method,
            stage: e.stage,
            outcome: e.outcome,
            error: e.error.as_ref().map(|x| ErrorView {
                code: x.code,
                has_code: x.has_code,
                symbol: &x.symbol,
                message: &x.message,
            }),
            source: e.source.as_ref().map(|x| SourceView {
                kind: x.kind,
                channel: &x.channel,
                event_id: x.event_id,
                record_id: x.record_id,
            }),
            user_principal_name: &e.user_principal_name,
            attributes: e
                .attributes
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        }
    }

    /// The view as an owned prost event.
    pub fn to_owned_event(&self) -> EnrollmentEvent {
        let v = self;
        EnrollmentEvent {
            event_id: v.event_id.into(),
            agent_id: v.agent_id.into(),
            device_id: v.device_id.into(),
            occurred_at: v.occurred_at.map(|t| Timestamp {
                seconds: t.seconds,
                nanos: t.nanos,
            }),
            platform: v.platform,
            os_edition: v.os_edition.into(),
            os_version: v.os_version.into(),
            enrollment_method: v.enrollment_method,
            stage: v.stage,
            outcome: v.outcome,
            error: v.error.map(|e| ReportedError {
                code: e.code,
                has_code: e.has_code,
                symbol: e.symbol.into(),
                message: e.message.into(),
            }),
            source: v.source.map(|s| Source {
                kind: s.kind,
                channel: s.channel.into(),
                event_id: s.event_id,
                record_id: s.record_id,
            }),
            user_principal_name: v.user_principal_name.into(),
            attributes: v
                .attributes
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }
}

/// The encoding is not one prost would accept; decode the item with prost for the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

type Result<T> = std::result::Result<T, Refused>;

/// Reads one field key: (field number, wire type).
fn key(buf: &mut &[u8]) -> Result<(u32, WireType)> {
    decode_key(buf).map_err(|_| Refused)
}

fn varint(buf: &mut &[u8], wire: WireType) -> Result<u64> {
    if wire != WireType::Varint {
        return Err(Refused);
    }
    decode_varint(buf).map_err(|_| Refused)
}

/// A length-delimited field's bytes.
fn bytes<'a>(buf: &mut &'a [u8], wire: WireType) -> Result<&'a [u8]> {
    if wire != WireType::LengthDelimited {
        return Err(Refused);
    }
    let len = usize::try_from(decode_varint(buf).map_err(|_| Refused)?).map_err(|_| Refused)?;
    if len > buf.len() {
        return Err(Refused);
    }
    let (field, rest) = buf.split_at(len);
    *buf = rest;
    Ok(field)
}

fn string<'a>(buf: &mut &'a [u8], wire: WireType) -> Result<&'a str> {
    std::str::from_utf8(bytes(buf, wire)?).map_err(|_| Refused)
}

/// Skips a field this decoder does not read, as prost does (groups included).
fn skip(buf: &mut &[u8], field: u32, wire: WireType) -> Result<()> {
    skip_field(wire, field, buf, DecodeContext::default()).map_err(|_| Refused)
}

/// Decodes one encoded `EnrollmentEvent` (the bytes of `TelemetryItem.event`).
pub fn decode_event(mut buf: &[u8]) -> Result<EventView<'_>> {
    let mut e = EventView::default();
    let buf = &mut buf;
    while !buf.is_empty() {
        let (field, wire) = key(buf)?;
        match field {
            1 => e.event_id = string(buf, wire)?,
            2 => e.agent_id = string(buf, wire)?,
            3 => e.device_id = string(buf, wire)?,
            4 => timestamp(bytes(buf, wire)?, e.occurred_at.get_or_insert_default())?,
            5 => e.platform = varint(buf, wire)? as i32,
            6 => e.os_edition = string(buf, wire)?,
            7 => e.os_version = string(buf, wire)?,
            8 => e.enrollment_method = varint(buf, wire)? as i32,
            9 => e.stage = varint(buf, wire)? as i32,
            10 => e.outcome = varint(buf, wire)? as i32,
            11 => error(bytes(buf, wire)?, e.error.get_or_insert_default())?,
            12 => source(bytes(buf, wire)?, e.source.get_or_insert_default())?,
            13 => e.user_principal_name = string(buf, wire)?,
            14 => e.attributes.push(map_entry(bytes(buf, wire)?)?),
            _ => skip(buf, field, wire)?,
        }
    }
    keep_last_per_key(&mut e.attributes);
    Ok(e)
}

/// Map semantics: one entry per key, the last value sent for it. Sorting keeps this
/// O(n log n): the wire scan allows a single event up to the whole batch's attribute budget
/// (160,000 entries at the defaults), which a search per entry would make quadratic.
fn keep_last_per_key(entries: &mut Vec<(&str, &str)>) {
    if entries.len() < 2 {
        return;
    }
    // Stable: the entries of one key stay in the order they were sent.
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut kept = 0;
    for i in 0..entries.len() {
        let superseded = entries
            .get(i + 1)
            .is_some_and(|next| next.0 == entries[i].0);
        if !superseded {
            entries[kept] = entries[i];
            kept += 1;
        }
    }
    entries.truncate(kept);
}

fn timestamp(mut buf: &[u8], t: &mut TimestampView) -> Result<()> {
    let buf = &mut buf;
    while !buf.is_empty() {
        let (field, wire) = key(buf)?;
        match field {
            1 => t.seconds = varint(buf, wire)? as i64,
            2 => t.nanos = varint(buf, wire)? as i32,
            _ => skip(buf, field, wire)?,
        }
    }
    Ok(())
}

fn error<'a>(mut buf: &'a [u8], e: &mut ErrorView<'a>) -> Result<()> {
    let buf = &mut buf;
    while !buf.is_empty() {
        let (field, wire) = key(buf)?;
        match field {
            1 => e.code = varint(buf, wire)? as u32,
            2 => e.has_code = varint(buf, wire)? != 0,
            3 => e.symbol = string(buf, wire)?,
            4 => e.message = string(buf, wire)?,
            _ => skip(buf, field, wire)?,
        }
    }
    Ok(())
}

fn source<'a>(mut buf: &'a [u8], s: &mut SourceView<'a>) -> Result<()> {
    let buf = &mut buf;
    while !buf.is_empty() {
        let (field, wire) = key(buf)?;
        match field {
            1 => s.kind = varint(buf, wire)? as i32,
            2 => s.channel = string(buf, wire)?,
            3 => s.event_id = varint(buf, wire)? as u32,
            4 => s.record_id = varint(buf, wire)?,
            _ => skip(buf, field, wire)?,
        }
    }
    Ok(())
}

/// One `map<string, string>` entry: key 1, value 2, both empty when absent.
fn map_entry(mut buf: &[u8]) -> Result<(&str, &str)> {
    let (mut k, mut v) = ("", "");
    let buf = &mut buf;
    while !buf.is_empty() {
        let (field, wire) = key(buf)?;
        match field {
            1 => k = string(buf, wire)?,
            2 => v = string(buf, wire)?,
            _ => skip(buf, field, wire)?,
        }
    }
    Ok((k, v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use std::collections::HashMap;

    /// A deterministic generator (no `rand` among the crate's dependencies).
    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn text(&mut self) -> String {
            let len = (self.next() % 24) as usize;
            (0..len)
                .map(|_| ['a', 'Z', '0', 'é', '€', '-', ' ', '😀'][(self.next() % 8) as usize])
                .collect()
        }
        fn opt(&mut self) -> bool {
            !self.next().is_multiple_of(3)
        }
    }

    fn generated(g: &mut Gen) -> EnrollmentEvent {
        EnrollmentEvent {
            event_id: g.text(),
            agent_id: g.text(),
            device_id: g.text(),
            occurred_at: g.opt().then(|| Timestamp {
                seconds: g.next() as i64,
                nanos: g.next() as i32,
            }),
            platform: g.next() as i32 % 9,
            os_edition: g.text(),
            os_version: g.text(),
            enrollment_method: g.next() as i32,
            stage: (g.next() % 20) as i32,
            outcome: (g.next() % 5) as i32,
            error: g.opt().then(|| ReportedError {
                code: g.next() as u32,
                has_code: g.opt(),
                symbol: g.text(),
                message: g.text(),
            }),
            source: g.opt().then(|| Source {
                kind: (g.next() % 7) as i32,
                channel: g.text(),
                event_id: g.next() as u32,
                record_id: g.next(),
            }),
            user_principal_name: g.text(),
            attributes: (0..g.next() % 5).map(|_| (g.text(), g.text())).collect(),
        }
    }

    #[test]
    fn views_equal_prost_on_generated_events() {
        let mut g = Gen(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let e = generated(&mut g);
            let bytes = e.encode_to_vec();
            let view = decode_event(&bytes).unwrap();
            assert_eq!(
                view.to_owned_event(),
                EnrollmentEvent::decode(bytes.as_slice()).unwrap()
            );
            assert_eq!(view.to_owned_event(), e);
        }
    }

    #[test]
    fn repeats_merge_and_the_last_one_wins_as_in_prost() {
        let first = EnrollmentEvent {
            device_id: "first".into(),
            error: Some(ReportedError {
                code: 5,
                symbol: "A".into(),
                ..Default::default()
            }),
            attributes: HashMap::from([("k".into(), "1".into()), ("j".into(), "x".into())]),
            ..Default::default()
        };
        let second = EnrollmentEvent {
            device_id: "second".into(),
            error: Some(ReportedError {
                message: "m".into(),
                ..Default::default()
            }),
            attributes: HashMap::from([("k".into(), "2".into())]),
            ..Default::default()
        };
        let mut bytes = first.encode_to_vec();
        bytes.extend(second.encode_to_vec());
        let view = decode_event(&bytes).unwrap();
        let prost = EnrollmentEvent::decode(bytes.as_slice()).unwrap();
        assert_eq!(view.to_owned_event(), prost);
        assert_eq!(view.device_id, "second");
        let err = view.error.unwrap();
        assert_eq!((err.code, err.symbol, err.message), (5, "A", "m"));
        assert_eq!(view.attributes.len(), 2);
    }

    #[test]
    fn many_attributes_in_one_event_decode_in_n_log_n() {
        // 160,000 entries (the batch's whole attribute budget at the defaults) over 1,000
        // keys: prost's map semantics, without a search per entry.
        let mut bytes = Vec::new();
        for i in 0..160_000u32 {
            let mut entry = Vec::new();
            prost::encoding::string::encode(1, &format!("k{}", i % 1000), &mut entry);
            prost::encoding::string::encode(2, &i.to_string(), &mut entry);
            prost::encoding::encode_key(14, WireType::LengthDelimited, &mut bytes);
            prost::encoding::encode_varint(entry.len() as u64, &mut bytes);
            bytes.extend(entry);
        }
        let view = decode_event(&bytes).unwrap();
        assert_eq!(view.attributes.len(), 1000);
        assert_eq!(
            view.to_owned_event(),
            EnrollmentEvent::decode(bytes.as_slice()).unwrap()
        );
        let k7 = view.attributes.iter().find(|(k, _)| *k == "k7").unwrap();
        assert_eq!(k7.1, "159007");
    }

    #[test]
    fn what_prost_refuses_is_refused() {
        let ok = EnrollmentEvent {
            device_id: "dev".into(),
            ..Default::default()
        }
        .encode_to_vec();
        // Not UTF-8.
        let mut bad = ok.clone();
        let at = bad.len() - 1;
        bad[at] = 0xff;
        assert!(EnrollmentEvent::decode(bad.as_slice()).is_err());
        assert_eq!(decode_event(&bad), Err(Refused));
        // A length past the end.
        let cut = &ok[..ok.len() - 1];
        assert!(EnrollmentEvent::decode(cut).is_err());
        assert_eq!(decode_event(cut), Err(Refused));
        // A string field sent as a varint.
        let wrong = [0x18, 0x01];
        assert!(EnrollmentEvent::decode(&wrong[..]).is_err());
        assert_eq!(decode_event(&wrong), Err(Refused));
        // Unknown fields are skipped by both.
        let mut unknown = ok.clone();
        unknown.extend([0xa8, 0x06, 0x07]); // field 101, varint 7
        assert_eq!(
            decode_event(&unknown).unwrap().to_owned_event(),
            EnrollmentEvent::decode(unknown.as_slice()).unwrap()
        );
    }
}
