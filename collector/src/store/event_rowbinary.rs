//! Writes an `enrollment_events` row in RowBinary straight from a borrowed event
//! ([`crate::event_view::EventView`]): each string is copied once, from the request's bytes
//! into the insert's body, with no row struct and no `String` in between.
//!
//! The columns and their order are those of [`super::rows::EventRow`], which the `clickhouse`
//! crate serialises for the same table; `tests/tests/collector_rowbinary.rs` inserts the same
//! events both ways into ClickHouse and compares what is stored.

use bytes::{BufMut, BytesMut};
use uuid::Uuid;

use super::{
    external::rowbinary::{put_len, put_str, put_uuid},
    rows::{
        RowContext, enrollment_method_name, outcome_name, platform_name, source_kind_name,
        stage_name,
    },
};
use crate::event_view::EventView;

/// The longest stored enum name (the longest known is 25 bytes, `unknown_-2147483648` 19;
/// checked by a test over every value).
const NAME_MAX: usize = 32;

/// An upper bound of the bytes one row takes, to reserve the buffer once per push.
pub fn row_size_hint(ctx: &RowContext, e: &EventView<'_>) -> usize {
    // UUID, batch_seq, three times, error code and flag, source ids.
    const NUMBERS: usize = 16 + 8 + 4 + 2 + 4 + 4 + 1 + 4 + 8;
    // 17 String lengths and 2 Array lengths, each at most 3 bytes (validated strings are far
    // shorter than 2^21 bytes).
    const LENGTHS: usize = 19 * 3;
    // Five enum names of at most NAME_MAX bytes each.
    const NAMES: usize = 5 * NAME_MAX;
    let strings = ctx.tenant.len()
        + ctx.agent_id.len()
        + e.device_id.len()
        + e.os_edition.len()
        + e.os_version.len()
        + e.error.map_or(0, |x| x.symbol.len() + x.message.len())
        + e.source.map_or(0, |s| s.channel.len())
        + e.user_principal_name.len()
        + e.attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>();
    NUMBERS + LENGTHS + NAMES + strings
}

/// Appends one row of a validated event; `event_id`, `occurred_at` and `occurred_ms` come from
/// validation, as for [`super::rows::event_row`].
pub fn put_event_row(
    out: &mut BytesMut,
    ctx: &RowContext,
    e: &EventView<'_>,
    event_id: Uuid,
    occurred_at: u32,
    occurred_ms: u16,
) {
    put_str(out, &ctx.tenant);
    put_uuid(out, &event_id);
    put_str(out, &ctx.agent_id);
    out.put_u64_le(ctx.batch_seq);
    put_str(out, e.device_id);
    out.put_u32_le(occurred_at);
    out.put_u16_le(occurred_ms);
    out.put_u32_le(ctx.received_at);
    put_str(out, &platform_name(e.platform));
    put_str(out, e.os_edition);
    put_str(out, e.os_version);
    put_str(out, &enrollment_method_name(e.enrollment_method));
    put_str(out, &stage_name(e.stage));
    put_str(out, &outcome_name(e.outcome));
    let error = e.error.unwrap_or_default();
    out.put_u32_le(error.code);
    out.put_u8(u8::from(error.has_code));
    put_str(out, error.symbol);
    put_str(out, error.message);
    let source = e.source.unwrap_or_default();
    put_str(out, &source_kind_name(source.kind));
    put_str(out, source.channel);
    out.put_u32_le(source.event_id);
    out.put_u64_le(source.record_id);
    put_str(out, e.user_principal_name);
    put_len(out, e.attributes.len());
    for (k, _) in &e.attributes {
        put_str(out, k);
    }
    put_len(out, e.attributes.len());
    for (_, v) in &e.attributes {
        put_str(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_enum_name_fits_the_hint() {
        for f in [
            platform_name,
            enrollment_method_name,
            stage_name,
            outcome_name,
            source_kind_name,
        ] {
            for v in (-1..200).chain([i32::MIN, i32::MAX]) {
                assert!(f(v).len() <= NAME_MAX, "{}", f(v));
            }
        }
    }
}
