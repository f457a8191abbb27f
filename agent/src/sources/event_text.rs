//! Event Viewer's text rendering of event records ("Copy > Copy details as text", and what
//! administrators paste into tickets, issues and support articles):
//!
//! ```text
//! Log Name:      Microsoft-Windows-User Device Registration/Admin
//! Source:        Microsoft-Windows-User Device Registration
//! Date:          8/7/2019 8:01:41 PM
//! Event ID:      304
//! Level:         Error
//! Computer:      <Computer name>
//! Description:
//! Automatic registration failed at join phase.
//! Exit code: Unknown HResult Error code: 0x801c03f2
//! ```
//!
//! Several records may follow each other; each starts at its `Log Name:` line. The header
//! labels are Event Viewer's English ones (the published copies are English; a localized
//! Event Viewer translates them and is not read here: such input has no `Log Name:` line and
//! is refused as having no record). The rendering carries no `EventRecordID`, and its `Date`
//! is local time in the viewer's locale, often replaced by a placeholder in published
//! copies; so a record's id is a content hash (the same paste gives the same event ids) and
//! an unreadable date is replaced by the reading time, flagged by `time_assumed`.
//! The records then follow exactly the per-id rules of [`super::event_xml`].

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use super::event_xml::EventRecord;
use super::{ParseError, Skipped};

/// True when `text` is a text rendering rather than XML: no `<Event` element, and at least
/// one `Log Name:` header line.
pub fn is_text_rendering(text: &str) -> bool {
    !text.contains("<Event")
        && text
            .lines()
            .any(|l| l.trim_start().starts_with("Log Name:"))
}

/// A record's header fields and description while it is read.
#[derive(Default)]
struct Block {
    line: usize,
    log_name: String,
    source: String,
    date: String,
    event_id: String,
    level: String,
    computer: String,
    description: Vec<String>,
    in_description: bool,
    /// The normalized lines of the block, hashed into the record id.
    raw: String,
}

/// Reads every record of a text rendering. Lines before the first `Log Name:` and an
/// `Event Xml:` section of a record are skipped (counted).
pub fn parse_text_records(
    text: &str,
    reading_time: OffsetDateTime,
) -> Result<(Vec<EventRecord>, Skipped), ParseError> {
    let mut skipped = Skipped::default();
    let mut blocks: Vec<Block> = Vec::new();
    let mut in_xml = false;
    for (index, raw_line) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw_line.trim();
        if line.starts_with("Log Name:") {
            in_xml = false;
            blocks.push(Block {
                line: number,
                ..Block::default()
            });
        }
        let Some(block) = blocks.last_mut() else {
            if !line.is_empty() {
                skipped.line(number, raw_line);
            }
            continue;
        };
        if in_xml || line.starts_with("Event Xml:") {
            in_xml = true;
            skipped.line(number, raw_line);
            continue;
        }
        block.raw.push_str(line);
        block.raw.push('\n');
        if block.in_description {
            block.description.push(line.to_owned());
            continue;
        }
        let Some((label, value)) = line.split_once(':') else {
            if !line.is_empty() {
                skipped.line(number, raw_line);
            }
            continue;
        };
        let value = value.trim().to_owned();
        match label.trim() {
            "Log Name" => block.log_name = value,
            "Source" => block.source = value,
            "Date" => block.date = value,
            "Event ID" => block.event_id = value,
            "Level" => block.level = value,
            "Computer" => block.computer = value,
            "Description" => {
                block.in_description = true;
                if !value.is_empty() {
                    block.description.push(value);
                }
            }
            "Task Category" | "Keywords" | "User" | "OpCode" => {}
            _ => skipped.line(number, raw_line),
        }
    }
    let records = blocks
        .into_iter()
        .map(|block| finish(block, reading_time))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((records, skipped))
}

fn finish(block: Block, reading_time: OffsetDateTime) -> Result<EventRecord, ParseError> {
    let line = block.line;
    if block.log_name.is_empty() {
        return Err(ParseError::at_line(line, "Log Name: is empty"));
    }
    let event_id = block.event_id.parse::<u32>().map_err(|_| {
        ParseError::at_line(
            line,
            format!(
                "Event ID: \"{}\" is not a number (or the record has no Event ID line)",
                block.event_id
            ),
        )
    })?;
    let parsed_time = parse_viewer_date(&block.date);
    // Provider names print with or without their "Microsoft-Windows-" prefix in Source.
    let provider = if block.source.is_empty() || block.source.starts_with("Microsoft-") {
        block.source
    } else {
        format!("Microsoft-Windows-{}", block.source)
    };
    let mut description = block.description;
    while description.last().is_some_and(String::is_empty) {
        description.pop();
    }
    let message = description.join("\n");
    Ok(EventRecord {
        provider,
        event_id,
        level: level_number(&block.level),
        time_created: parsed_time.unwrap_or(reading_time),
        record_id: fnv1a(&block.raw) >> 1,
        channel: block.log_name,
        computer: block.computer,
        data: Vec::new(),
        message: (!message.is_empty()).then_some(message),
        line,
        text_rendering: true,
        time_assumed: parsed_time.is_none(),
    })
}

/// Event Viewer's English level names.
fn level_number(name: &str) -> Option<u8> {
    match name.to_ascii_lowercase().as_str() {
        "critical" => Some(1),
        "error" => Some(2),
        "warning" => Some(3),
        "information" => Some(4),
        "verbose" => Some(5),
        _ => None,
    }
}

/// `M/D/YYYY h:mm:ss AM|PM` (the en-US viewer) or `YYYY-MM-DD HH:MM:SS`, read as UTC (the
/// rendering has no zone); anything else (placeholders such as `<Date and time>`) is None.
fn parse_viewer_date(text: &str) -> Option<OffsetDateTime> {
    let mut parts = text.split_whitespace();
    let date = parts.next()?;
    let clock = parts.next()?;
    let meridiem = parts.next();
    let numbers = |s: &str, sep: char| -> Option<Vec<u32>> {
        s.split(sep).map(|n| n.parse::<u32>().ok()).collect()
    };
    let (year, month, day) = match (numbers(date, '/'), numbers(date, '-')) {
        (Some(d), _) if d.len() == 3 => (d[2], d[0], d[1]),
        (_, Some(d)) if d.len() == 3 => (d[0], d[1], d[2]),
        _ => return None,
    };
    let hms = numbers(clock, ':').filter(|v| v.len() == 3)?;
    let mut hour = hms[0];
    match meridiem.map(str::to_ascii_uppercase).as_deref() {
        Some("PM") if hour < 12 => hour += 12,
        Some("AM") if hour == 12 => hour = 0,
        Some("AM" | "PM") | None => {}
        Some(_) => return None,
    }
    let date = Date::from_calendar_date(
        i32::try_from(year).ok()?,
        Month::try_from(u8::try_from(month).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    let time = Time::from_hms(
        u8::try_from(hour).ok()?,
        u8::try_from(hms[1]).ok()?,
        u8::try_from(hms[2]).ok()?,
    )
    .ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// FNV-1a, 64 bits: a stable content hash standing in for the missing EventRecordID.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-01-01 00:00:00 UTC);

    #[test]
    fn reads_header_fields_and_multi_line_description() {
        let text = "If you see the event\n\n    Log Name:      Microsoft-Windows-User Device Registration/Admin\n    Source:        Microsoft-Windows-User Device Registration\n    Date:          8/7/2019 8:01:41 PM\n    Event ID:      304\n    Task Category: None\n    Level:         Error\n    Keywords:      \n    User:          SYSTEM\n    Computer:      PC1\n    Description:\n    Automatic registration failed at join phase. \n    Exit code: Unknown HResult Error code: 0x801c03f2 \n";
        let (records, skipped) = parse_text_records(text, NOW).unwrap();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(
            r.channel,
            "Microsoft-Windows-User Device Registration/Admin"
        );
        assert_eq!(r.event_id, 304);
        assert_eq!(r.level, Some(2));
        assert_eq!(r.computer, "PC1");
        assert_eq!(r.time_created, datetime!(2019-08-07 20:01:41 UTC));
        assert!(!r.time_assumed);
        assert_eq!(
            r.message.as_deref(),
            Some(
                "Automatic registration failed at join phase.\nExit code: Unknown HResult Error code: 0x801c03f2"
            )
        );
        assert_eq!(skipped.count, 1, "the prose line before the record");
    }

    #[test]
    fn placeholder_date_is_assumed_and_ids_are_stable_per_content() {
        let one = "Log Name: A/Admin\nSource: S\nDate: <Date and time>\nEvent ID: 1\nLevel: Warning\nDescription: x\n";
        let two = "Log Name: A/Admin\nSource: S\nDate: <Date and time>\nEvent ID: 1\nLevel: Warning\nDescription: y\n";
        let (a, _) = parse_text_records(&format!("{one}{two}"), NOW).unwrap();
        assert_eq!(a.len(), 2);
        assert!(a[0].time_assumed);
        assert_eq!(a[0].time_created, NOW);
        assert_eq!(a[0].level, Some(3));
        assert_ne!(a[0].record_id, a[1].record_id);
        let (again, _) = parse_text_records(one, NOW).unwrap();
        assert_eq!(again[0].record_id, a[0].record_id);
    }

    #[test]
    fn missing_or_bad_event_id_is_an_error_naming_the_field() {
        let err = parse_text_records("Log Name: A/Admin\nEvent ID: abc\n", NOW).unwrap_err();
        assert!(err.to_string().contains("Event ID"), "{err}");
    }

    #[test]
    fn detects_text_rendering_but_not_xml() {
        assert!(is_text_rendering("Log Name: X\nEvent ID: 1\n"));
        assert!(!is_text_rendering(
            "Log Name: X\nEvent Xml:\n<Event xmlns=\"\">"
        ));
        assert!(!is_text_rendering("nothing here"));
    }
}
