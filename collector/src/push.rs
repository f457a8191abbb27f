//! A Push as the collector handles it: the message's bytes, with each event kept as a range of
//! them and read as a borrowed [`EventView`] when handled; device states and heartbeats (a few
//! per device, against many events) are decoded by prost.
//!
//! Why not prost for everything: a `String` per event field cost about half the collector's
//! CPU at batch 5000 (see `event_view`). Behaviour is prost's in every case: whatever this
//! decoder does not read the common way (an item naming two kinds, an event sent in two
//! parts) or refuses is decoded by prost, and refusals carry prost's message located at the
//! item (`grpc::gate::locate_decode_error`).

use std::ops::Range;

use bytes::Bytes;
use fleetpulse_proto::v1::{
    DeviceState, Heartbeat, PushRequest, TelemetryItem, telemetry_item::Kind,
};
use prost::Message;
use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};

use crate::event_view::{EventView, decode_event};

/// One item of a Push, borrowed from a [`DecodedPush`].
// Events are the common item: boxing them would add the allocation per event this type exists
// to avoid.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Item<'a> {
    Event(EventView<'a>),
    State(&'a DeviceState),
    Heartbeat(&'a Heartbeat),
    /// An item with no kind set (refused by validation).
    Empty,
}

impl<'a> Item<'a> {
    /// Borrows a prost item.
    pub fn of(item: &'a TelemetryItem) -> Self {
        match &item.kind {
            Some(Kind::Event(e)) => Item::Event(EventView::of(e)),
            Some(Kind::State(s)) => Item::State(s),
            Some(Kind::Heartbeat(h)) => Item::Heartbeat(h),
            None => Item::Empty,
        }
    }

    /// The kind's name in metrics and messages.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Item::Event(_) => "event",
            Item::State(_) => "state",
            Item::Heartbeat(_) => "heartbeat",
            Item::Empty => "empty",
        }
    }
}

/// Borrows every item of a prost request (tests, tools).
pub fn items_of(items: &[TelemetryItem]) -> Vec<Item<'_>> {
    items.iter().map(Item::of).collect()
}

/// Where an item is kept.
#[derive(Debug, Clone)]
enum Slot {
    /// The bytes of a `TelemetryItem.event`, read as a view when handled.
    Event(Range<usize>),
    /// Decoded by prost (states, heartbeats, irregular events: the rarer items).
    Owned(Box<TelemetryItem>),
}

/// A Push message, its top-level fields read and its items located.
#[derive(Debug, Clone)]
pub struct DecodedPush {
    message: Bytes,
    pub batch_seq: u64,
    pub all_or_nothing: bool,
    slots: Vec<Slot>,
}

/// The common-path reader refused; prost decides.
struct Irregular;

impl DecodedPush {
    /// Decodes an encoded `PushRequest`. Refusals are prost's message naming the item.
    pub fn decode(message: Bytes) -> Result<Self, String> {
        match Self::read(&message) {
            Ok((batch_seq, all_or_nothing, slots)) => Ok(Self {
                message,
                batch_seq,
                all_or_nothing,
                slots,
            }),
            Err(Irregular) => match PushRequest::decode(message.as_ref()) {
                Ok(req) => Ok(Self::from_request(req)),
                Err(e) => Err(crate::grpc::gate::locate_decode_error(&message, &e)),
            },
        }
    }

    /// Wraps a prost request (every item owned).
    pub fn from_request(req: PushRequest) -> Self {
        Self {
            message: Bytes::new(),
            batch_seq: req.batch_seq,
            all_or_nothing: req.all_or_nothing,
            slots: req
                .items
                .into_iter()
                .map(|i| Slot::Owned(Box::new(i)))
                .collect(),
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every item, events read as views. Refusals are prost's message naming the item.
    pub fn items(&self) -> Result<Vec<Item<'_>>, String> {
        let mut items = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            items.push(match slot {
                Slot::Event(range) => match decode_event(&self.message[range.clone()]) {
                    Ok(view) => Item::Event(view),
                    Err(_) => return Err(self.prost_refusal()),
                },
                Slot::Owned(item) => Item::of(item),
            });
        }
        Ok(items)
    }

    /// prost's reason for refusing the message, located at the item.
    fn prost_refusal(&self) -> String {
        match PushRequest::decode(self.message.as_ref()) {
            Err(e) => crate::grpc::gate::locate_decode_error(&self.message, &e),
            // A view refused what prost accepts: a defect of `event_view`, reported as such
            // (the fuzz targets look for exactly this).
            Ok(_) => "an event prost accepts could not be read; please report this".into(),
        }
    }

    /// Reads `PushRequest` fields: batch_seq (1), items (2), all_or_nothing (3).
    fn read(message: &[u8]) -> Result<(u64, bool, Vec<Slot>), Irregular> {
        let mut buf = message;
        let (mut batch_seq, mut all_or_nothing, mut slots) = (0, false, Vec::new());
        while !buf.is_empty() {
            let (field, wire) = decode_key(&mut buf).map_err(|_| Irregular)?;
            match (field, wire) {
                (1, WireType::Varint) => {
                    batch_seq = decode_varint(&mut buf).map_err(|_| Irregular)?;
                }
                (3, WireType::Varint) => {
                    all_or_nothing = decode_varint(&mut buf).map_err(|_| Irregular)? != 0;
                }
                (2, WireType::LengthDelimited) => {
                    let item = length_delimited(&mut buf)?;
                    let item_start = item.as_ptr() as usize - message.as_ptr() as usize;
                    slots.push(Self::read_item(item, item_start)?);
                }
                (1..=3, _) => return Err(Irregular),
                _ => skip_field(wire, field, &mut buf, DecodeContext::default())
                    .map_err(|_| Irregular)?,
            }
        }
        Ok((batch_seq, all_or_nothing, slots))
    }

    /// One `TelemetryItem` at `start` in the message: an event alone is kept as a range;
    /// anything else is decoded by prost.
    fn read_item(item: &[u8], start: usize) -> Result<Slot, Irregular> {
        let mut buf = item;
        let mut event: Option<Range<usize>> = None;
        let mut other = false;
        while !buf.is_empty() {
            let (field, wire) = decode_key(&mut buf).map_err(|_| Irregular)?;
            match (field, wire) {
                (1, WireType::LengthDelimited) => {
                    let body = length_delimited(&mut buf)?;
                    let at = start + (body.as_ptr() as usize - item.as_ptr() as usize);
                    if event.is_some() {
                        // Sent in two parts: prost merges them.
                        other = true;
                    }
                    event = Some(at..at + body.len());
                }
                (2 | 3, WireType::LengthDelimited) => {
                    length_delimited(&mut buf)?;
                    other = true;
                }
                (1..=3, _) => return Err(Irregular),
                _ => skip_field(wire, field, &mut buf, DecodeContext::default())
                    .map_err(|_| Irregular)?,
            }
        }
        match (event, other) {
            (Some(range), false) => Ok(Slot::Event(range)),
            _ => TelemetryItem::decode(item)
                .map(|i| Slot::Owned(Box::new(i)))
                .map_err(|_| Irregular),
        }
    }
}

fn length_delimited<'a>(buf: &mut &'a [u8]) -> Result<&'a [u8], Irregular> {
    let len = usize::try_from(decode_varint(buf).map_err(|_| Irregular)?).map_err(|_| Irregular)?;
    if len > buf.len() {
        return Err(Irregular);
    }
    let (body, rest) = buf.split_at(len);
    *buf = rest;
    Ok(body)
}

/// The owned prost form of a decoded Push (tests compare it with `PushRequest::decode`).
pub fn to_request(push: &DecodedPush) -> Result<PushRequest, String> {
    let items = push.items()?;
    Ok(PushRequest {
        batch_seq: push.batch_seq,
        all_or_nothing: push.all_or_nothing,
        items: items
            .iter()
            .map(|i| TelemetryItem {
                kind: match i {
                    Item::Event(e) => Some(Kind::Event(e.to_owned_event())),
                    Item::State(s) => Some(Kind::State((*s).clone())),
                    Item::Heartbeat(h) => Some(Kind::Heartbeat((*h).clone())),
                    Item::Empty => None,
                },
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetpulse_proto::pbjson_types::Timestamp;
    use fleetpulse_proto::v1::EnrollmentEvent;

    fn event(device: &str) -> TelemetryItem {
        TelemetryItem {
            kind: Some(Kind::Event(EnrollmentEvent {
                device_id: device.into(),
                occurred_at: Some(Timestamp {
                    seconds: 5,
                    nanos: 0,
                }),
                attributes: [("k".to_owned(), device.to_owned())].into(),
                ..Default::default()
            })),
        }
    }

    fn same_as_prost(bytes: &[u8]) {
        let ours = DecodedPush::decode(Bytes::copy_from_slice(bytes)).and_then(|p| to_request(&p));
        match PushRequest::decode(bytes) {
            Ok(req) => assert_eq!(ours.unwrap(), req),
            Err(_) => assert!(ours.is_err()),
        }
    }

    #[test]
    fn a_push_reads_as_prost_reads_it() {
        let req = PushRequest {
            batch_seq: 9,
            all_or_nothing: true,
            items: vec![
                event("a"),
                TelemetryItem {
                    kind: Some(Kind::Heartbeat(Heartbeat {
                        agent_version: "1".into(),
                        ..Default::default()
                    })),
                },
                TelemetryItem::default(),
                TelemetryItem {
                    kind: Some(Kind::State(DeviceState {
                        device_id: "s".into(),
                        ..Default::default()
                    })),
                },
                event("b"),
            ],
        };
        let bytes = req.encode_to_vec();
        let push = DecodedPush::decode(Bytes::from(bytes.clone())).unwrap();
        assert!(matches!(push.slots[0], Slot::Event(_)));
        assert!(matches!(push.slots[4], Slot::Event(_)));
        assert_eq!(to_request(&push).unwrap(), req);
        same_as_prost(&bytes);
    }

    #[test]
    fn views_digest_as_prost_items_do() {
        // The ledger compares digests across resends and across collector versions: reading
        // events as views must not change a batch's digest.
        let req = PushRequest {
            batch_seq: 3,
            items: (0..20)
                .map(|i| {
                    let mut e = event(&format!("dev-{i}"));
                    if let Some(Kind::Event(ev)) = &mut e.kind {
                        ev.attributes.insert(format!("z{i}"), "v".into());
                        ev.error = (i % 2 == 0).then(Default::default);
                    }
                    e
                })
                .collect(),
            ..Default::default()
        };
        let push = DecodedPush::decode(Bytes::from(req.encode_to_vec())).unwrap();
        let views = push.items().unwrap();
        assert!(views.iter().all(|i| matches!(i, Item::Event(_))));
        let owned = items_of(&req.items);
        assert_eq!(
            crate::digest::batch_digest(&views),
            crate::digest::batch_digest(&owned)
        );
        assert_eq!(
            crate::digest::batch_digest_v1(&views),
            crate::digest::batch_digest_v1(&owned)
        );
    }

    #[test]
    fn irregular_items_go_through_prost() {
        // An item whose event comes in two parts, and one naming two kinds.
        let mut two_parts = Vec::new();
        for part in [event("a"), event("b")] {
            two_parts.extend(part.encode_to_vec());
        }
        let mut two_kinds = event("c").encode_to_vec();
        two_kinds.extend(
            TelemetryItem {
                kind: Some(Kind::Heartbeat(Heartbeat::default())),
            }
            .encode_to_vec(),
        );
        for item in [two_parts, two_kinds] {
            let mut msg = vec![0x08, 0x01]; // batch_seq 1
            msg.push(0x12);
            prost::encoding::encode_varint(item.len() as u64, &mut msg);
            msg.extend(&item);
            same_as_prost(&msg);
        }
    }

    #[test]
    fn refusals_are_prosts_located_at_the_item() {
        let mut bytes = PushRequest {
            batch_seq: 1,
            items: vec![event("ok"), event("bad")],
            ..Default::default()
        }
        .encode_to_vec();
        // Corrupt the last attribute value ("bad") into invalid UTF-8.
        let at = bytes.len() - 1;
        bytes[at] = 0xff;
        let message = Bytes::from(bytes.clone());
        let err = DecodedPush::decode(message)
            .and_then(|p| p.items().map(|_| ()))
            .unwrap_err();
        let prost = PushRequest::decode(bytes.as_slice()).unwrap_err();
        assert_eq!(err, crate::grpc::gate::locate_decode_error(&bytes, &prost));
        assert!(err.starts_with("items[1]"), "{err}");
        // Cut short inside the second item.
        let cut = &bytes[..bytes.len() - 3];
        same_as_prost(cut);
    }
}
