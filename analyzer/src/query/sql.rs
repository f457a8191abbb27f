//! SQL fragments shared by the rollup migrations and the query builder. Keeping them in one
//! place is what makes a rollup answer equal to the same question asked of the raw table.

/// The bounded message key stored in the rollups and recomputed over raw rows: GUIDs and ISO
/// timestamps masked, cut to 200 characters. Must not contain `?` (the clickhouse crate binds
/// on `?`).
pub const MESSAGE_KEY_SQL: &str = "substringUTF8(replaceRegexpAll(replaceRegexpAll(error_message, \
'[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}', '<guid>'), \
'[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+){0,1}Z{0,1}', '<time>'), 1, 200)";

/// Applies [`MESSAGE_KEY_SQL`]'s masking in Rust, for signals classified straight from raw
/// events (device event lists): the classifier then sees what the rollups see.
pub fn message_key(message: &str) -> String {
    let masked = mask_timestamps(&mask_guids(message));
    masked.chars().take(200).collect()
}

fn mask_guids(s: &str) -> String {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    'outer: while i < b.len() {
        let mut j = i;
        let mut ok = true;
        for (g, len) in GROUPS.iter().enumerate() {
            if g > 0 {
                if b.get(j) != Some(&b'-') {
                    ok = false;
                    break;
                }
                j += 1;
            }
            for _ in 0..*len {
                match b.get(j) {
                    Some(c) if c.is_ascii_hexdigit() => j += 1,
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                break;
            }
        }
        if ok {
            out.push_str("<guid>");
            i = j;
            continue 'outer;
        }
        let ch_len = utf8_len(b[i]);
        out.push_str(&s[i..i + ch_len]);
        i += ch_len;
    }
    out
}

fn mask_timestamps(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if let Some(end) = timestamp_at(b, i) {
            out.push_str("<time>");
            i = end;
            continue;
        }
        let ch_len = utf8_len(b[i]);
        out.push_str(&s[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Matches `[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?Z?` at `i`.
fn timestamp_at(b: &[u8], i: usize) -> Option<usize> {
    let pattern = b"dddd-dd-ddTdd:dd:dd";
    let mut j = i;
    for p in pattern {
        let c = *b.get(j)?;
        let ok = match p {
            b'd' => c.is_ascii_digit(),
            b'T' => c == b'T' || c == b' ',
            other => c == *other,
        };
        if !ok {
            return None;
        }
        j += 1;
    }
    if b.get(j) == Some(&b'.') && b.get(j + 1).is_some_and(u8::is_ascii_digit) {
        j += 1;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
    }
    if b.get(j) == Some(&b'Z') {
        j += 1;
    }
    Some(j)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// Validates a ClickHouse database name before it is used as an identifier (identifiers
/// cannot be bound).
pub fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_guids_and_timestamps_like_the_sql() {
        assert_eq!(
            message_key(
                "trace 12345678-1234-1234-1234-123456789abc at 2024-01-01T10:00:00.123Z ok"
            ),
            "trace <guid> at <time> ok"
        );
        assert_eq!(message_key("2024-01-01 10:00:00 x"), "<time> x");
        assert_eq!(message_key("héllo"), "héllo");
        assert_eq!(message_key(&"é".repeat(300)).chars().count(), 200);
    }

    #[test]
    fn identifiers() {
        assert!(valid_identifier("fleetpulse_1"));
        assert!(!valid_identifier("1abc"));
        assert!(!valid_identifier("a-b"));
        assert!(!valid_identifier(""));
    }
}
