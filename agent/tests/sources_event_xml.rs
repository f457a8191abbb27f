//! Event log XML parser: wevtutil and Get-WinEvent exports, mapping, cursor, bad input.

#[path = "sources_support/mod.rs"]
mod support;

use fleetpulse_agent::inspect::InputKind;
use fleetpulse_agent::sources::ParseError;
use fleetpulse_agent::sources::event_xml::{
    self, Cursor, DM_ADMIN_CHANNEL, parse_events, parse_records,
};
use fleetpulse_proto::v1::{
    EnrollmentMethod, EnrollmentStage, Outcome, ReportedError, Source, SourceKind,
};
use support::{ctx, fixture};

#[test]
fn wevtutil_stream_without_root_matches_golden() {
    support::assert_golden(InputKind::EventXml, "event_dm_admin_wevtutil.xml");
}

#[test]
fn get_winevent_export_with_rendering_info_matches_golden() {
    support::assert_golden(InputKind::EventXml, "event_get_winevent_rendered.xml");
}

#[test]
fn documented_400_record_is_read_exactly() {
    let records = parse_records(&fixture("event_dm_admin_wevtutil.xml")).expect("parses");
    let record = records
        .iter()
        .find(|r| r.record_id == 17327)
        .expect("record 17327");
    assert_eq!(record.event_id, 400);
    assert_eq!(record.level, Some(2));
    assert_eq!(record.channel, DM_ADMIN_CHANNEL);
    assert_eq!(record.computer, "DESKTOP PC");
    assert_eq!(
        record.provider,
        "Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider"
    );
    assert_eq!(
        record.time_created,
        time::macros::datetime!(2017-06-29 13:18:40.644619600 UTC)
    );
    assert_eq!(
        record.data,
        [
            ("Message1", "9B5DC01F-D64E-488A-BB24-F0E9DA4FBF47"),
            ("Message2", "MDMFull"),
            ("Message3", "RemoteWipe"),
            ("Message4", "CmdType_Execute"),
            ("Message5", "./Vendor/MSFT/RemoteWipe/doWipe"),
            ("HexInt1", "0x80070032"),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
    );
    assert_eq!(record.line, 5);
}

#[test]
fn events_75_76_52_map_to_outcomes_errors_and_sources() {
    let parsed = event_xml::parse(&fixture("event_dm_admin_wevtutil.xml"), &ctx()).expect("parses");
    let events: Vec<_> = parsed.events().collect();
    // 813 is not an enrollment event: skipped.
    assert_eq!(
        events
            .iter()
            .map(|e| e.source.as_ref().map_or(0, |s| s.event_id))
            .collect::<Vec<_>>(),
        [75, 76, 52, 400]
    );

    assert_eq!(events[0].outcome, Outcome::Succeeded as i32);
    assert_eq!(events[0].stage, EnrollmentStage::Complete as i32);
    assert_eq!(
        events[0].enrollment_method,
        EnrollmentMethod::GpoAutoEnroll as i32
    );
    assert_eq!(events[0].error, None);
    assert_eq!(
        events[0].occurred_at,
        Some(fleetpulse_proto::pbjson_types::Timestamp {
            seconds: 1_709_625_731,
            nanos: 123_000_000
        })
    );

    assert_eq!(events[1].outcome, Outcome::Failed as i32);
    assert_eq!(
        events[1].error,
        Some(ReportedError {
            code: 0x8018_002b,
            has_code: true,
            symbol: String::new(),
            message: String::new()
        })
    );
    assert_eq!(
        events[1].source,
        Some(Source {
            kind: SourceKind::EventLog as i32,
            channel: DM_ADMIN_CHANNEL.to_owned(),
            event_id: 76,
            record_id: 17321
        })
    );

    assert_eq!(events[2].stage, EnrollmentStage::Authorization as i32);
    assert_eq!(
        events[2].error,
        Some(ReportedError {
            code: 0,
            has_code: false,
            symbol: "DeviceCapReached".to_owned(),
            message: "The user has reached the maximum number of devices".to_owned(),
        })
    );
}

#[test]
fn event_52_subcode_and_reason_come_from_the_rendered_message() {
    let parsed =
        event_xml::parse(&fixture("event_get_winevent_rendered.xml"), &ctx()).expect("parses");
    let first = parsed.events().next().expect("event 52");
    assert_eq!(
        first.error.as_ref().map(|e| e.symbol.as_str()),
        Some("DeviceNotSupported")
    );
    assert_eq!(
        first.error.as_ref().map(|e| e.message.as_str()),
        Some("Enrollment blocked for AP device by SDM One Time Limit Check")
    );
    // A decimal HRESULT (as Get-WinEvent may render it) is the same code.
    let second = parsed.events().nth(1).expect("event 76");
    assert_eq!(second.error.as_ref().map(|e| e.code), Some(0x8018_0014));
    // User Device Registration 304: join phase, code from the ErrorCode data item.
    let third = parsed.events().nth(2).expect("event 304");
    assert_eq!(third.stage, EnrollmentStage::DeviceRegistration as i32);
    assert_eq!(third.error.as_ref().map(|e| e.code), Some(0x801c_03f2));
}

#[test]
fn cursor_skips_what_was_read_and_advances_over_skipped_ids() {
    let text = fixture("event_dm_admin_wevtutil.xml");
    let (first, cursor) = parse_events(&text, &ctx(), &Cursor::default()).expect("parses");
    assert_eq!(first.events().count(), 4);
    assert_eq!(cursor.last(DM_ADMIN_CHANNEL), 17327);

    // Everything read: nothing again.
    let (again, same) = parse_events(&text, &ctx(), &cursor).expect("parses");
    assert_eq!(again.events().count(), 0);
    assert_eq!(same, cursor);

    // A cursor in the middle (after a restart): only the newer records, same ids as before.
    let mut middle = Cursor::default();
    middle.channels.insert(DM_ADMIN_CHANNEL.to_owned(), 17321);
    let (rest, advanced) = parse_events(&text, &ctx(), &middle).expect("parses");
    let rest_ids: Vec<_> = rest.events().map(|e| e.event_id.clone()).collect();
    let first_ids: Vec<_> = first.events().skip(2).map(|e| e.event_id.clone()).collect();
    assert_eq!(rest_ids, first_ids);
    assert_eq!(advanced.last(DM_ADMIN_CHANNEL), 17327);

    // The cursor survives a serde round trip (it is persisted in the agent's state file).
    let json = serde_json::to_string(&cursor).expect("serializes");
    assert_eq!(
        serde_json::from_str::<Cursor>(&json).expect("deserializes"),
        cursor
    );
}

#[test]
fn empty_export_is_no_events() {
    let (parsed, cursor) = parse_events("", &ctx(), &Cursor::default()).expect("parses");
    assert!(parsed.items.is_empty());
    assert_eq!(cursor, Cursor::default());
    let (parsed, _) =
        parse_events("<Events></Events>", &ctx(), &Cursor::default()).expect("parses");
    assert!(parsed.items.is_empty());
}

#[test]
fn truncated_export_is_an_error_and_does_not_advance() {
    let text = fixture("event_dm_admin_wevtutil.xml");
    let cut = &text[..text
        .find("<EventData>\n    <Data Name=\"Message1\">9B5D")
        .expect("marker")];
    assert_eq!(
        parse_events(cut, &ctx(), &Cursor::default()),
        Err(ParseError::at_line(
            5,
            "truncated input: <Event> element is not closed before end of input"
        ))
    );
    let cut_in_tag = &text[..text.find("<EventRecordID>17321").expect("marker") + 8];
    let err = parse_events(cut_in_tag, &ctx(), &Cursor::default()).expect_err("rejects");
    assert_eq!(err.line, 2);
    assert!(err.message.starts_with("malformed XML"), "{err}");
}

#[test]
fn missing_required_fields_are_named() {
    let xml = r#"<Event><System><EventID>76</EventID><Channel>c</Channel><TimeCreated SystemTime="2024-01-01T00:00:00Z"/></System></Event>"#;
    assert_eq!(
        parse_records(xml),
        Err(ParseError::at_line(
            1,
            "<Event> is missing System/EventRecordID"
        ))
    );
    let xml = r#"<Event><System><EventID>x</EventID></System></Event>"#;
    assert_eq!(
        parse_records(xml),
        Err(ParseError::at_line(
            1,
            "System/EventID: \"x\" is not a number"
        ))
    );
    let xml = "<Html><body/></Html>";
    assert_eq!(
        parse_records(xml),
        Err(ParseError::at(
            1,
            6,
            "expected <Event> or <Events>, found <Html>"
        ))
    );
    let xml = "<Event><System></Event>";
    let err = parse_records(xml).expect_err("mismatched end tag");
    assert!(err.message.starts_with("malformed XML"), "{err}");
}
