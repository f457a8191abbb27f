//! A cheap scan of an encoded `PushRequest` that bounds what decoding would materialise, before
//! `prost` allocates anything.
//!
//! Why: on the wire an empty `TelemetryItem` is 2 bytes and an empty attribute map entry is
//! 2 bytes, but each becomes hundreds of bytes in memory once decoded. A 4 MiB body of empty
//! items decoded to about 1 GB. The scan walks the protobuf wire format (tags, varints,
//! lengths) without allocating, counts items and attribute entries, checks that every length
//! stays inside its parent and that unknown groups do not nest deeper than prost would accept,
//! and refuses the batch with a message naming the limit or the item before it is decoded.
//!
//! Only the fields that can multiply memory are interpreted: `PushRequest.items` (2),
//! `TelemetryItem.{event,state,heartbeat}` (1, 2, 3), `EnrollmentEvent.attributes` (14) and
//! `DeviceState.attributes` (19). Every other field is skipped by its wire type; strings and
//! scalars cannot grow beyond their encoded size.

use crate::validate::{BatchError, Rules, limits};

/// prost's recursion limit: deeper unknown groups would fail to decode anyway.
const MAX_DEPTH: u32 = 100;

/// What the scan counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    pub items: usize,
    pub attributes: usize,
}

/// The most attribute entries a batch may carry: a full batch of items at the attribute limit.
pub fn max_batch_attributes(rules: &Rules) -> usize {
    rules.max_batch_items as usize * limits::ATTRIBUTES
}

/// Scans `buf` (an encoded `PushRequest`) and enforces the item and attribute bounds of
/// `rules`. Malformed encodings are INVALID_ARGUMENT naming the item (`items[3]: ...`),
/// excess is RESOURCE_EXHAUSTED naming the limit.
pub fn scan_push_request(buf: &[u8], rules: &Rules) -> Result<Shape, BatchError> {
    let mut shape = Shape::default();
    let mut pos = 0;
    while pos < buf.len() {
        let at = pos;
        let (field, wire) = read_tag(buf, &mut pos)
            .map_err(|r| malformed(&format!("PushRequest (byte {at})"), r))?;
        if field == 2 && wire == WIRE_LEN {
            let item = read_len(buf, &mut pos)
                .map_err(|r| malformed(&format!("items[{}]", shape.items), r))?;
            shape.attributes +=
                scan_item(item).map_err(|r| malformed(&format!("items[{}]", shape.items), r))?;
            shape.items += 1;
        } else {
            skip(buf, &mut pos, field, wire, 0)
                .map_err(|r| malformed(&format!("PushRequest (byte {at})"), r))?;
        }
    }
    if shape.items > rules.max_batch_items as usize {
        return Err(BatchError::ResourceExhausted(format!(
            "items: {} items exceed max_batch_items = {}; split the batch",
            shape.items, rules.max_batch_items
        )));
    }
    let cap = max_batch_attributes(rules);
    if shape.attributes > cap {
        return Err(BatchError::ResourceExhausted(format!(
            "attributes: {} attribute entries in the batch exceed {cap} \
             (max_batch_items x {} per item); send at most {} attributes per item",
            shape.attributes,
            limits::ATTRIBUTES,
            limits::ATTRIBUTES
        )));
    }
    Ok(shape)
}

fn malformed(what: &str, reason: &str) -> BatchError {
    BatchError::InvalidArgument(format!("{what}: malformed protobuf: {reason}"))
}

const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_SGROUP: u8 = 3;
const WIRE_EGROUP: u8 = 4;
const WIRE_I32: u8 = 5;

/// Counts the attribute entries of one `TelemetryItem`.
fn scan_item(buf: &[u8]) -> Result<usize, &'static str> {
    let mut pos = 0;
    let mut attributes = 0;
    while pos < buf.len() {
        let (field, wire) = read_tag(buf, &mut pos)?;
        let attributes_field = match field {
            1 => Some(14), // EnrollmentEvent.attributes
            2 => Some(19), // DeviceState.attributes
            3 => None,     // Heartbeat has no map
            _ => {
                skip(buf, &mut pos, field, wire, 0)?;
                continue;
            }
        };
        if wire != WIRE_LEN {
            return Err("a telemetry kind is not length-delimited");
        }
        let inner = read_len(buf, &mut pos)?;
        attributes += scan_message(inner, attributes_field)?;
    }
    Ok(attributes)
}

/// Walks one message, counting occurrences of the length-delimited field `count_field`.
fn scan_message(buf: &[u8], count_field: Option<u32>) -> Result<usize, &'static str> {
    let mut pos = 0;
    let mut count = 0;
    while pos < buf.len() {
        let (field, wire) = read_tag(buf, &mut pos)?;
        if Some(field) == count_field && wire == WIRE_LEN {
            count += 1;
        }
        skip(buf, &mut pos, field, wire, 0)?;
    }
    Ok(count)
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, &'static str> {
    let mut value = 0u64;
    for shift in 0..10 {
        let Some(&byte) = buf.get(*pos) else {
            return Err("truncated varint");
        };
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (shift * 7);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint longer than 10 bytes")
}

fn read_tag(buf: &[u8], pos: &mut usize) -> Result<(u32, u8), &'static str> {
    let key = read_varint(buf, pos)?;
    let wire = (key & 7) as u8;
    let field = key >> 3;
    if field == 0 || field > u64::from(u32::MAX >> 3) {
        return Err("invalid field number");
    }
    Ok((field as u32, wire))
}

fn read_len<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], &'static str> {
    let len = read_varint(buf, pos)?;
    let len = usize::try_from(len).map_err(|_| "length overflows")?;
    let end = pos.checked_add(len).ok_or("length overflows")?;
    let slice = buf
        .get(*pos..end)
        .ok_or("a length runs past the end of its message")?;
    *pos = end;
    Ok(slice)
}

fn advance(buf: &[u8], pos: &mut usize, n: usize) -> Result<(), &'static str> {
    if buf.len() - *pos < n {
        return Err("a fixed-size value runs past the end of its message");
    }
    *pos += n;
    Ok(())
}

/// Skips one field's value; groups are walked to their end tag with a depth bound.
fn skip(buf: &[u8], pos: &mut usize, field: u32, wire: u8, depth: u32) -> Result<(), &'static str> {
    match wire {
        WIRE_VARINT => read_varint(buf, pos).map(|_| ()),
        WIRE_I64 => advance(buf, pos, 8),
        WIRE_LEN => read_len(buf, pos).map(|_| ()),
        WIRE_I32 => advance(buf, pos, 4),
        WIRE_SGROUP => {
            if depth >= MAX_DEPTH {
                return Err("groups nested too deeply");
            }
            loop {
                if *pos >= buf.len() {
                    return Err("unterminated group");
                }
                let (inner, inner_wire) = read_tag(buf, pos)?;
                if inner_wire == WIRE_EGROUP {
                    if inner != field {
                        return Err("mismatched end of group");
                    }
                    return Ok(());
                }
                skip(buf, pos, inner, inner_wire, depth + 1)?;
            }
        }
        WIRE_EGROUP => Err("unexpected end of group"),
        _ => Err("invalid wire type"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fleetpulse_proto::v1::{EnrollmentEvent, PushRequest, TelemetryItem, telemetry_item::Kind};
    use prost::Message;

    fn rules() -> Rules {
        Rules {
            max_batch_items: 5000,
            max_batch_bytes: 4 * 1024 * 1024,
            max_future_skew_secs: 86_400,
            retention_days: 90,
        }
    }

    fn event_with_attributes(n: usize) -> TelemetryItem {
        TelemetryItem {
            kind: Some(Kind::Event(EnrollmentEvent {
                event_id: "e".into(),
                attributes: (0..n).map(|i| (format!("k{i}"), "v".into())).collect(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn counts_items_and_attributes_of_real_encodings() {
        let req = PushRequest {
            batch_seq: 7,
            items: vec![event_with_attributes(3), event_with_attributes(0)],
            all_or_nothing: true,
        };
        let shape = scan_push_request(&req.encode_to_vec(), &rules()).unwrap();
        assert_eq!(
            shape,
            Shape {
                items: 2,
                attributes: 3
            }
        );
    }

    #[test]
    fn empty_items_beyond_the_limit_are_refused_before_decoding() {
        // The probe of issue 14: batch_seq 1, then 2 bytes per empty item.
        let mut body = b"\x08\x01".to_vec();
        for _ in 0..6000 {
            body.extend_from_slice(b"\x12\x00");
        }
        assert_eq!(
            scan_push_request(&body, &rules()).unwrap_err(),
            BatchError::ResourceExhausted(
                "items: 6000 items exceed max_batch_items = 5000; split the batch".into()
            )
        );
    }

    #[test]
    fn attribute_floods_are_refused_with_the_limit() {
        let mut r = rules();
        r.max_batch_items = 2;
        // One event (field 1 of the item) holding 65 empty map entries (field 14).
        let event: Vec<u8> = std::iter::repeat_n([0x72u8, 0x00], 65).flatten().collect();
        let body = field(2, &field(1, &event));
        assert_eq!(
            scan_push_request(&body, &r).unwrap_err(),
            BatchError::ResourceExhausted(
                "attributes: 65 attribute entries in the batch exceed 64 (max_batch_items x 32 \
                 per item); send at most 32 attributes per item"
                    .into()
            )
        );
    }

    #[test]
    fn malformed_encodings_name_the_item() {
        let good = PushRequest {
            batch_seq: 1,
            items: vec![event_with_attributes(1)],
            all_or_nothing: false,
        }
        .encode_to_vec();
        // A second item whose length runs past the end.
        let mut bad = good.clone();
        bad.extend_from_slice(&[0x12, 0x05, 0x0a]);
        assert_eq!(
            scan_push_request(&bad, &rules()).unwrap_err(),
            BatchError::InvalidArgument(
                "items[1]: malformed protobuf: a length runs past the end of its message".into()
            )
        );
        // Garbage at the top level.
        assert_eq!(
            scan_push_request(&[0xff; 12], &rules()).unwrap_err(),
            BatchError::InvalidArgument(
                "PushRequest (byte 0): malformed protobuf: varint longer than 10 bytes".into()
            )
        );
        // Deeply nested unknown groups inside an event.
        let nested = vec![0x7b; 150]; // field 15, start group, 150 times
        let body = field(2, &field(1, &nested));
        assert_eq!(
            scan_push_request(&body, &rules()).unwrap_err(),
            BatchError::InvalidArgument(
                "items[0]: malformed protobuf: groups nested too deeply".into()
            )
        );
    }

    /// A length-delimited field `number` holding `bytes` (the gate's tests build messages with
    /// it too).
    pub(crate) fn field(number: u32, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, &mut out);
        prost::encoding::encode_varint(bytes.len() as u64, &mut out);
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn unknown_fields_and_groups_are_skipped() {
        // Unknown field 9 (varint), fixed32 field 10, a group field 11 with a varint inside.
        let body = [
            0x48, 0x01, 0x55, 1, 2, 3, 4, 0x5b, 0x08, 0x01, 0x5c, 0x12, 0x00,
        ];
        assert_eq!(
            scan_push_request(&body, &rules()).unwrap(),
            Shape {
                items: 1,
                attributes: 0
            }
        );
    }
}
