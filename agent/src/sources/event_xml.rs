//! Windows event log records as XML (or, see [`super::event_text`], Event Viewer's text
//! rendering of them), as exported by `wevtutil qe <channel> /f:xml` (a stream
//! of `<Event>` elements without a root element), the same wrapped in `<Events>`, or
//! `Get-WinEvent ... | ForEach-Object { $_.ToXml() }`. `RenderingInfo` (from
//! `/f:RenderedXml`) is used when present for the message text.
//!
//! Channels mapped to enrollment events:
//! - `Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin`: 75 (auto MDM
//!   enroll succeeded), 76 (failed, `HRESULT`), 52 (server SOAP fault: subcode and reason
//!   text), 71 and 77-84 (HRESULT-only enrollment events), 201/203/204/209 (OMA-DM session
//!   results), 400 (CSP command failure).
//! - `Microsoft-Windows-User Device Registration/Admin`: 201, 220 and 307 (discovery), 204 and
//!   304 (join), 305 (authentication); a 304/305/307 that names its `errorPhase` takes that
//!   stage.
//! - `Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot` (and its pre-1903
//!   name under Provisioning-Diagnostics-Provider): 100-114, 153, 160-164, 171, 172.
//!
//! The outcome follows a rule stated per event id ([`mapping`]) and the level: Warning and
//! Information records are never failed enrollments (Autopilot's "policy not found" warning
//! while the profile is not assigned yet is routine). The failure code is the failing
//! HRESULT of the record, not the first hex number of its message.
//!
//! **Other event ids, and other channels, are skipped** (but still advance the cursor): the
//! Admin channel carries many policy and CSP events that are not enrollment observations, and
//! sending them as enrollment events would drown the real ones in noise. Skipped records are
//! not lost: the raw log stays on the device.
//!
//! Each record is read once: [`parse_events`] skips records whose `EventRecordID` is at or
//! below the per-channel [`Cursor`] and returns the advanced cursor, which the caller persists
//! only after the produced items are safely spooled. The event id is derived from device,
//! channel and record id, so even a re-read produces the same ids.

use std::collections::BTreeMap;

use fleetpulse_proto::v1::{
    EnrollmentEvent, EnrollmentMethod, EnrollmentStage, Outcome, Platform, Source, SourceKind,
};
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    Attributes, MAX_CHANNEL_BYTES, ParseError, Parsed, Skipped, SourceContext, line_col,
    parse_code, reported_error, stable_event_id, timestamp_ms, truncate_bytes,
};

/// The MDM enrollment client's Admin channel.
pub const DM_ADMIN_CHANNEL: &str =
    "Microsoft-Windows-DeviceManagement-Enterprise-Diagnostics-Provider/Admin";
/// Entra device registration (join) events.
pub const DEVICE_REGISTRATION_CHANNEL: &str = "Microsoft-Windows-User Device Registration/Admin";
/// Windows Autopilot diagnostics.
pub const AUTOPILOT_CHANNEL: &str =
    "Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot";
/// Windows Autopilot diagnostics on Windows 10 1803 and 1809 (moved in 1903).
pub const AUTOPILOT_CHANNEL_BEFORE_1903: &str =
    "Microsoft-Windows-Provisioning-Diagnostics-Provider/AutoPilot";

/// The highest `EventRecordID` read per channel. Persist it after the items it produced are
/// spooled; pass it back on the next read.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// Channel name (as printed in the records) -> highest record id read.
    pub channels: BTreeMap<String, u64>,
}

impl Cursor {
    /// The highest record id read on `channel` (0 when none).
    pub fn last(&self, channel: &str) -> u64 {
        self.channels.get(channel).copied().unwrap_or(0)
    }

    fn advance(&mut self, channel: &str, record_id: u64) {
        let entry = self.channels.entry(channel.to_owned()).or_insert(0);
        *entry = (*entry).max(record_id);
    }
}

/// One `<Event>` element, the parts the mapping needs.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub provider: String,
    pub event_id: u32,
    pub level: Option<u8>,
    pub time_created: OffsetDateTime,
    pub record_id: u64,
    pub channel: String,
    pub computer: String,
    /// `EventData/Data` (name, value) in order; `UserData` leaves under their element name.
    pub data: Vec<(String, String)>,
    /// `RenderingInfo/Message`, when the export included it.
    pub message: Option<String>,
    /// 1-based line of the `<Event>` start tag (of the `Log Name:` line in a text rendering).
    pub line: usize,
    /// Read from Event Viewer's text rendering ([`super::event_text`]): `record_id` is a
    /// content hash, not the channel's EventRecordID, so the cursor does not apply.
    pub text_rendering: bool,
    /// The rendering's date was unreadable (a placeholder): `time_created` is the reading time.
    pub time_assumed: bool,
}

impl EventRecord {
    /// The value of the data item called `name` (case-insensitive).
    pub fn data_value(&self, name: &str) -> Option<&str> {
        self.data
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A record being assembled while its element is read.
#[derive(Default)]
struct PartialRecord {
    line: usize,
    provider: String,
    event_id: Option<String>,
    level: Option<String>,
    time_created: Option<String>,
    record_id: Option<String>,
    channel: Option<String>,
    computer: Option<String>,
    data: Vec<(String, String)>,
    message: Option<String>,
}

impl PartialRecord {
    fn finish(self) -> Result<EventRecord, ParseError> {
        let line = self.line;
        let missing =
            |field: &str| ParseError::at_line(line, format!("<Event> is missing {field}"));
        let event_id_text = self.event_id.ok_or_else(|| missing("System/EventID"))?;
        let event_id = event_id_text.trim().parse::<u32>().map_err(|_| {
            ParseError::at_line(
                line,
                format!("System/EventID: \"{event_id_text}\" is not a number"),
            )
        })?;
        let record_text = self
            .record_id
            .ok_or_else(|| missing("System/EventRecordID"))?;
        let record_id = record_text.trim().parse::<u64>().map_err(|_| {
            ParseError::at_line(
                line,
                format!("System/EventRecordID: \"{record_text}\" is not a number"),
            )
        })?;
        let time_text = self
            .time_created
            .ok_or_else(|| missing("System/TimeCreated/@SystemTime"))?;
        let time_created = OffsetDateTime::parse(time_text.trim(), &Rfc3339).map_err(|err| {
            ParseError::at_line(
                line,
                format!("System/TimeCreated/@SystemTime: \"{time_text}\" is not an RFC 3339 time ({err})"),
            )
        })?;
        let channel = self.channel.ok_or_else(|| missing("System/Channel"))?;
        let level = match self.level {
            Some(text) => Some(text.trim().parse::<u8>().map_err(|_| {
                ParseError::at_line(line, format!("System/Level: \"{text}\" is not a number"))
            })?),
            None => None,
        };
        Ok(EventRecord {
            provider: self.provider,
            event_id,
            level,
            time_created,
            record_id,
            channel: channel.trim().to_owned(),
            computer: self.computer.unwrap_or_default().trim().to_owned(),
            data: self.data,
            message: self.message.map(|m| m.trim().to_owned()),
            line,
            text_rendering: false,
            time_assumed: false,
        })
    }
}

fn attribute(
    start: &BytesStart<'_>,
    name: &str,
    text: &str,
    offset: usize,
) -> Result<Option<String>, ParseError> {
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|err| xml_error(text, offset, &err.to_string()))?;
        if attribute.key.local_name().as_ref() == name.as_bytes() {
            let value = attribute
                .unescape_value()
                .map_err(|err| xml_error(text, offset, &err.to_string()))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

fn xml_error(text: &str, offset: usize, reason: &str) -> ParseError {
    let (line, column) = line_col(text, offset);
    ParseError::at(line, column, format!("malformed XML: {reason}"))
}

/// Where the text currently read belongs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    None,
    EventId,
    Level,
    RecordId,
    Channel,
    Computer,
    Data,
    Message,
}

/// Reads every `<Event>` element of an export.
pub fn parse_records(text: &str) -> Result<Vec<EventRecord>, ParseError> {
    parse_records_detailed(text).map(|(records, _)| records)
}

/// Reads every `<Event>` element of an export, and counts the text outside them (prompts,
/// banners and trailers of the shell that ran the export), which is skipped.
pub fn parse_records_detailed(text: &str) -> Result<(Vec<EventRecord>, Skipped), ParseError> {
    let mut skipped = Skipped::default();
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut records = Vec::new();
    // Element names from the document root down to the current element.
    let mut path: Vec<String> = Vec::new();
    let mut current: Option<PartialRecord> = None;
    let mut slot = Slot::None;
    let mut buffer = String::new();
    let mut data_name = String::new();
    loop {
        let before = usize::try_from(reader.buffer_position()).unwrap_or(usize::MAX);
        let event = reader.read_event().map_err(|err| {
            let at = usize::try_from(reader.error_position()).unwrap_or(before);
            xml_error(text, at, &err.to_string())
        })?;
        // Where the event just read ends: its last byte is on the line to report (leading
        // whitespace before `before` was trimmed away).
        let at = usize::try_from(reader.buffer_position())
            .unwrap_or(usize::MAX)
            .saturating_sub(1)
            .max(before);
        let (start, is_empty) = match event {
            Event::Start(start) => (start, false),
            Event::Empty(start) => (start, true),
            Event::Text(content) => {
                let value = content
                    .unescape()
                    .map_err(|err| xml_error(text, before, &err.to_string()))?;
                if current.is_some() && slot != Slot::None {
                    buffer.push_str(&value);
                } else if current.is_none() && !value.trim().is_empty() {
                    let (line, _) = line_col(text, before);
                    skipped.line(line, &value);
                }
                continue;
            }
            Event::CData(content) => {
                if current.is_some() && slot != Slot::None {
                    buffer.push_str(&String::from_utf8_lossy(&content));
                }
                continue;
            }
            Event::End(_) => {
                let Some(name) = path.pop() else { continue };
                if let Some(record) = current.as_mut() {
                    if slot != Slot::None {
                        finish_slot(record, slot, &mut buffer, &data_name);
                        slot = Slot::None;
                    }
                    if name == "Event"
                        && !path.iter().any(|p| p == "Event")
                        && let Some(done) = current.take()
                    {
                        records.push(done.finish()?);
                    }
                }
                continue;
            }
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) | Event::DocType(_) => continue,
        };
        let name = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
        let Some(record) = current.as_mut() else {
            // Outside any <Event>: only an <Events> wrapper at the root may appear.
            match name.as_str() {
                "Event" => {
                    let (line, _) = line_col(text, at);
                    if is_empty {
                        return Err(ParseError::at_line(line, "empty <Event/> element"));
                    }
                    current = Some(PartialRecord {
                        line,
                        ..Default::default()
                    });
                    path.push(name);
                }
                "Events" if path.is_empty() => {
                    if !is_empty {
                        path.push(name);
                    }
                }
                other => {
                    let (line, column) = line_col(text, at);
                    return Err(ParseError::at(
                        line,
                        column,
                        format!("expected <Event> or <Events>, found <{other}>"),
                    ));
                }
            }
            continue;
        };
        let depth = path
            .iter()
            .rposition(|p| p == "Event")
            .map_or(0, |i| path.len() - i);
        let parent = path.last().map(String::as_str).unwrap_or_default();
        slot = Slot::None;
        buffer.clear();
        match (parent, name.as_str()) {
            ("System", "Provider") => {
                record.provider = attribute(&start, "Name", text, before)?.unwrap_or_default();
            }
            ("System", "TimeCreated") => {
                record.time_created = attribute(&start, "SystemTime", text, before)?;
            }
            ("System", "EventID") => slot = Slot::EventId,
            ("System", "Level") => slot = Slot::Level,
            ("System", "EventRecordID") => slot = Slot::RecordId,
            ("System", "Channel") => slot = Slot::Channel,
            ("System", "Computer") => slot = Slot::Computer,
            ("EventData", "Data") => {
                data_name = attribute(&start, "Name", text, before)?
                    .unwrap_or_else(|| format!("{}", record.data.len() + 1));
                slot = Slot::Data;
            }
            ("RenderingInfo", "Message") => slot = Slot::Message,
            // UserData/<provider element>/<field>: the leaves are named data.
            (_, leaf) if depth >= 3 && path.iter().any(|p| p == "UserData") => {
                data_name = leaf.to_owned();
                slot = Slot::Data;
            }
            _ => {}
        }
        if is_empty {
            // `<Data Name="X"/>` is an empty value; other empty elements end here.
            finish_slot(record, slot, &mut buffer, &data_name);
            slot = Slot::None;
        } else {
            path.push(name);
        }
    }
    if let Some(record) = current {
        return Err(ParseError::at_line(
            record.line,
            "truncated input: <Event> element is not closed before end of input",
        ));
    }
    if let Some(open) = path.last() {
        let (line, _) = line_col(text, text.len());
        return Err(ParseError::at_line(
            line,
            format!("truncated input: <{open}> is not closed"),
        ));
    }
    Ok((records, skipped))
}

fn finish_slot(record: &mut PartialRecord, slot: Slot, buffer: &mut String, data_name: &str) {
    let value = std::mem::take(buffer);
    match slot {
        Slot::None => {}
        Slot::EventId => record.event_id = Some(value),
        Slot::Level => record.level = Some(value),
        Slot::RecordId => record.record_id = Some(value),
        Slot::Channel => record.channel = Some(value),
        Slot::Computer => record.computer = Some(value),
        Slot::Data => record.data.push((data_name.to_owned(), value)),
        Slot::Message => record.message = Some(value),
    }
}

/// Parses an export without a cursor (every record is new). Used by `inspect`.
pub fn parse(text: &str, ctx: &SourceContext) -> Result<Parsed, ParseError> {
    parse_events(text, ctx, &Cursor::default()).map(|(parsed, _)| parsed)
}

/// Parses an export, skipping records at or below the cursor, and returns the events with
/// the advanced cursor. On error nothing is returned and the cursor is not advanced, so a
/// bad read never skips records.
pub fn parse_events(
    text: &str,
    ctx: &SourceContext,
    cursor: &Cursor,
) -> Result<(Parsed, Cursor), ParseError> {
    let (records, skipped) = if super::event_text::is_text_rendering(text) {
        super::event_text::parse_text_records(text, ctx.now)?
    } else {
        parse_records_detailed(text)?
    };
    skipped.warn_once("event_log");
    let mut parsed = Parsed::default();
    let mut next = cursor.clone();
    for record in &records {
        // A text rendering has no EventRecordID: its records are always read (a paste is
        // read once, by `inspect`), and never move the channel's cursor.
        if !record.text_rendering {
            if record.record_id <= cursor.last(&record.channel) {
                continue;
            }
            next.advance(&record.channel, record.record_id);
        }
        if let Some(event) = to_event(record, ctx) {
            parsed.push_event(event);
        }
    }
    Ok((parsed, next))
}

/// What an event id means for an enrollment, stated per id in [`mapping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    /// The id reports a failed enrollment step (a failure when logged as Error/Critical).
    Failure,
    /// The id reports a completed enrollment.
    Success,
    /// A step of a deployment that goes on (profile download, policy reads): in progress.
    Progress,
    /// A routine notice by design, such as "Autopilot policy not found" while the profile
    /// is not downloaded yet: never a failure, outcome left unspecified.
    Notice,
    /// The id covers both results; the level and the carried HRESULT decide.
    ByLevel,
}

/// How a known event id maps onto the protocol.
struct Mapping {
    stage: EnrollmentStage,
    method: EnrollmentMethod,
    meaning: Meaning,
}

/// The rule per event id. Whatever the id, the level has the last word: an event logged as
/// Warning or Information is never counted as a failed enrollment (see [`outcome`]).
///
/// DeviceManagement-Enterprise-Diagnostics-Provider/Admin:
/// - 75 auto MDM enrollment succeeded (Success); 76 auto MDM enrollment failed (Failure);
/// - 52 the server answered the enroll request with a SOAP fault (Failure);
/// - 71, 77-84 enrollment client steps, 201/203/204/209 OMA-DM session results (ByLevel);
/// - 400 a CSP command failed during the first sync (Failure).
///
/// User Device Registration/Admin (message texts of the provider's manifest): 200 discovery
/// request send and 201 discovery callback failed, 220 discovery; 202 join request
/// initialization, 203 join request send, 204 join response callback and 205 join response
/// completion failed, 304 automatic registration failed at join; 307 automatic registration
/// failed to look up the registration service (the SCP) in Active Directory, a discovery
/// failure (KB 4480781's 0x801c001d); 305 authentication failures of automatic (hybrid)
/// registration (Failure). The stage of a 304/305/307 is the
/// `errorPhase:` its debug output names when it names one (see [`udr_error_phase`]).
///
/// ModernDeployment-Diagnostics-Provider/Autopilot (and, before Windows 10 1903,
/// Provisioning-Diagnostics-Provider/Autopilot), per Microsoft's "Troubleshoot Autopilot OOBE
/// issues" event table:
/// - 100 "Autopilot policy [name] not found" is a Warning that is "typically a temporary
///   problem, while the device is waiting for an Autopilot profile" (Notice);
/// - 101/103/109/111 policy and settings reads succeeded, 153 profile state changed,
///   160/161/164 profile download steps, 163 already provisioned (Progress);
/// - 102/104/106/108/110/112 the same reads failed: Failure, except HRESULT 0x80070490
///   (element not found) on a policy read, which is the same routine absence as 100
///   (Notice);
/// - 113/114 DLL unloaded with calls outstanding, settings retrieval skipped (Notice);
/// - 171 TPM identity could not be confirmed (attestation) and 172 the profile could not be
///   set available, usually after 171 (Failure).
fn mapping(record: &EventRecord) -> Option<Mapping> {
    let channel = record.channel.as_str();
    let map = |stage, meaning| {
        Some(Mapping {
            stage,
            method: EnrollmentMethod::Unspecified,
            meaning,
        })
    };
    if channel.eq_ignore_ascii_case(DM_ADMIN_CHANNEL) {
        match record.event_id {
            75 => Some(Mapping {
                stage: EnrollmentStage::Complete,
                method: EnrollmentMethod::GpoAutoEnroll,
                meaning: Meaning::Success,
            }),
            76 => Some(Mapping {
                stage: EnrollmentStage::Complete,
                method: EnrollmentMethod::GpoAutoEnroll,
                meaning: Meaning::Failure,
            }),
            52 => map(fault_stage(&fault(record).0), Meaning::Failure),
            71 | 77..=84 => map(EnrollmentStage::Complete, Meaning::ByLevel),
            201 | 203 | 204 | 209 => map(EnrollmentStage::FirstSync, Meaning::ByLevel),
            400 => map(EnrollmentStage::FirstSync, Meaning::Failure),
            _ => None,
        }
    } else if channel.eq_ignore_ascii_case(DEVICE_REGISTRATION_CHANNEL) {
        match record.event_id {
            200 | 201 | 220 => map(EnrollmentStage::Discovery, Meaning::Failure),
            202..=205 => map(EnrollmentStage::DeviceRegistration, Meaning::Failure),
            304 => map(
                udr_error_phase(record).unwrap_or(EnrollmentStage::DeviceRegistration),
                Meaning::Failure,
            ),
            307 => map(
                udr_error_phase(record).unwrap_or(EnrollmentStage::Discovery),
                Meaning::Failure,
            ),
            305 => map(
                udr_error_phase(record).unwrap_or(EnrollmentStage::Authentication),
                Meaning::Failure,
            ),
            _ => None,
        }
    } else if channel.eq_ignore_ascii_case(AUTOPILOT_CHANNEL)
        || channel.eq_ignore_ascii_case(AUTOPILOT_CHANNEL_BEFORE_1903)
    {
        const NOT_FOUND: u32 = 0x8007_0490;
        match record.event_id {
            100 | 113 | 114 => map(EnrollmentStage::Discovery, Meaning::Notice),
            102 | 104 if record_code(record) == Some(NOT_FOUND) => {
                map(EnrollmentStage::Discovery, Meaning::Notice)
            }
            102 | 104 | 106 | 108 | 110 | 112 => map(EnrollmentStage::Discovery, Meaning::Failure),
            101 | 103 | 105 | 107 | 109 | 111 | 153 | 160 | 161 | 163 | 164 => {
                map(EnrollmentStage::Discovery, Meaning::Progress)
            }
            171 | 172 => map(EnrollmentStage::DeviceRegistration, Meaning::Failure),
            _ => None,
        }
    } else {
        None
    }
}

/// The phase a User Device Registration automatic-registration result (304, 305, 307) names
/// in its debug output: `errorPhase: discover | auth | join`, the phases `dsregcmd /status`
/// prints as "Error Phase". It is more exact than the event id: a 304 "failed at join phase"
/// that prints `errorPhase: auth` failed while acquiring the token for the join (a federated
/// tenant's AD FS, ADAL `0xcaa1000e`), not at the join request itself. `None` when the record
/// names no phase or one this code does not know.
fn udr_error_phase(record: &EventRecord) -> Option<EnrollmentStage> {
    let texts = record
        .message
        .iter()
        .map(String::as_str)
        .chain(record.data.iter().map(|(_, value)| value.as_str()));
    let phase = texts
        .flat_map(str::lines)
        .find_map(|line| line.trim().strip_prefix("errorPhase:"))?;
    match phase.trim().to_ascii_lowercase().as_str() {
        "discover" => Some(EnrollmentStage::Discovery),
        "auth" => Some(EnrollmentStage::Authentication),
        "join" => Some(EnrollmentStage::DeviceRegistration),
        _ => None,
    }
}

/// The outcome of a mapped record: the id's meaning, overruled by the level (Warning,
/// Information and Verbose are never failures), with the carried HRESULT deciding only
/// where the id covers both results.
fn outcome(meaning: Meaning, level: Option<u8>, code: Option<u32>) -> Outcome {
    // 1 Critical, 2 Error, 3 Warning, 4 Information, 5 Verbose; 0 is "LogAlways", used
    // by some providers for informational records.
    let not_an_error = matches!(level, Some(0) | Some(3..));
    match meaning {
        Meaning::Notice => Outcome::Unspecified,
        Meaning::Progress => Outcome::InProgress,
        Meaning::Success => Outcome::Succeeded,
        Meaning::Failure if code == Some(0) => Outcome::Succeeded,
        Meaning::Failure if not_an_error => Outcome::Unspecified,
        Meaning::Failure => Outcome::Failed,
        Meaning::ByLevel => match (level, code) {
            (Some(1 | 2), _) => Outcome::Failed,
            (Some(3), _) => Outcome::Unspecified,
            (Some(_), _) => Outcome::Succeeded,
            (None, Some(0)) => Outcome::Succeeded,
            (None, Some(_)) => Outcome::Failed,
            (None, None) => Outcome::Unspecified,
        },
    }
}

/// Stage of a server SOAP fault (event 52) by subcode: authentication faults, certificate
/// request faults, and everything else (device cap, platform, licence, server errors) as the
/// server's authorization of the enroll request.
fn fault_stage(subcode: &str) -> EnrollmentStage {
    let subcode = subcode.rsplit(':').next().unwrap_or(subcode);
    if subcode.eq_ignore_ascii_case("Authentication")
        || subcode.eq_ignore_ascii_case("InvalidSecurity")
    {
        EnrollmentStage::Authentication
    } else if subcode.eq_ignore_ascii_case("CertificateRequest") {
        EnrollmentStage::CertificateRequest
    } else {
        EnrollmentStage::Authorization
    }
}

/// Text between `marker` and the next `)` (`Value=(DeviceCapReached)`), or up to the last
/// `)` when `to_last` (reason texts may contain parentheses).
fn parenthesized<'a>(text: &'a str, marker: &str, to_last: bool) -> Option<&'a str> {
    let start = text.find(marker)? + marker.len();
    let rest = &text[start..];
    let end = if to_last {
        rest.rfind(')')?
    } else {
        rest.find(')')?
    };
    Some(&rest[..end])
}

/// The SOAP fault subcode and reason text of an event 52.
fn fault(record: &EventRecord) -> (String, String) {
    const SUBCODE: &str = "Fault/Code/Subcode/Value=(";
    const REASON: &str = "Fault/Reason/Text=(";
    let full_text = record
        .data
        .iter()
        .map(|(_, v)| v.as_str())
        .chain(record.message.as_deref())
        .find(|v| v.contains(SUBCODE));
    if let Some(full) = full_text {
        let subcode = parenthesized(full, SUBCODE, false).unwrap_or_default();
        let reason = full
            .find(REASON)
            .and_then(|at| parenthesized(&full[at..], REASON, true))
            .unwrap_or_default();
        return (subcode.trim().to_owned(), reason.trim().to_owned());
    }
    // The template's two strings fill the two placeholders of the message.
    (
        record
            .data_value("Message1")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        record
            .data_value("Message2")
            .unwrap_or_default()
            .trim()
            .to_owned(),
    )
}

/// The failure code written in a message: of all `0x…` tokens (1 to 8 hex digits), the first
/// with the HRESULT severity bit set, else the first non-zero one, else zero. Messages often
/// carry a success code before the failure ("Device Credential (0x0), Failed (Unknown Win32
/// Error code: 0x8018002b)"), so the first hex number is not the answer.
fn find_hex_code(text: &str) -> Option<u32> {
    let bytes = text.as_bytes();
    let mut codes = Vec::new();
    let mut from = 0;
    while let Some(found) = text[from..].find("0x").or_else(|| text[from..].find("0X")) {
        let at = from + found;
        let start = at + 2;
        let digits = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let glued_before = at > 0 && bytes[at - 1].is_ascii_alphanumeric();
        let glued_after = bytes
            .get(start + digits)
            .is_some_and(|b| b.is_ascii_alphanumeric());
        if (1..=8).contains(&digits)
            && !glued_before
            && !glued_after
            && let Ok(code) = u32::from_str_radix(&text[start..start + digits], 16)
        {
            codes.push(code);
        }
        from = start;
    }
    codes
        .iter()
        .copied()
        .find(|c| c & 0x8000_0000 != 0)
        .or_else(|| codes.iter().copied().find(|&c| c != 0))
        .or_else(|| codes.first().copied())
}

/// The error code a record carries: the `HRESULT` data item, else a data item whose name
/// says it is a code, else (for event 400) `HexInt1`, else the first 8-digit hex code in the
/// rendered message.
fn record_code(record: &EventRecord) -> Option<u32> {
    if let Some(code) = record.data_value("HRESULT").and_then(parse_code) {
        return Some(code);
    }
    let named = record.data.iter().find_map(|(name, value)| {
        let name = name.to_ascii_lowercase();
        let looks_like_code = name.contains("hresult")
            || name.contains("errorcode")
            || name.contains("exitcode")
            || name == "status"
            || name == "error";
        if looks_like_code {
            parse_code(value)
        } else {
            None
        }
    });
    if named.is_some() {
        return named;
    }
    if record.event_id == 400 && record.channel.eq_ignore_ascii_case(DM_ADMIN_CHANNEL) {
        return record.data_value("HexInt1").and_then(parse_code);
    }
    // A zero in the free text of a message is some field's value (User Device
    // Registration 304 prints "adalResponseCode: 0x0" under a failed join), not the record's
    // result: only a dedicated data item can say that a failure-id record succeeded.
    record
        .message
        .as_deref()
        .and_then(find_hex_code)
        .filter(|&code| code != 0)
}

/// Maps one record to an enrollment event, or `None` when its id is not an enrollment
/// observation (see the module docs).
pub fn to_event(record: &EventRecord, ctx: &SourceContext) -> Option<EnrollmentEvent> {
    let mapping = mapping(record)?;
    let is_fault = record.event_id == 52 && record.channel.eq_ignore_ascii_case(DM_ADMIN_CHANNEL);
    let code = record_code(record);
    let outcome = outcome(mapping.meaning, record.level, code);
    let error = if outcome != Outcome::Failed {
        // Warnings and notices keep their code as an attribute, not as a failure signal.
        None
    } else if is_fault {
        let (subcode, reason) = fault(record);
        Some(reported_error(code, &subcode, &reason))
    } else if outcome == Outcome::Failed {
        Some(reported_error(
            code,
            "",
            record.message.as_deref().unwrap_or_default(),
        ))
    } else {
        None
    };

    let mut attributes = Attributes::new();
    if let Some(level) = record.level {
        attributes.add("level", &level.to_string());
    }
    if error.is_none()
        && let Some(code) = code.filter(|&c| c != 0)
    {
        attributes.add("hresult", &super::format_code(code));
    }
    attributes.add("provider", &record.provider);
    if record.text_rendering {
        attributes.add("rendering", "text");
    }
    if record.time_assumed {
        attributes.add("time_assumed", "true");
    }
    if !record.computer.is_empty() {
        attributes.add("computer", &record.computer);
    }
    if let Some(message) = record.message.as_deref()
        && !is_fault
        && error.is_none()
    {
        attributes.add("message", message);
    }
    for (name, value) in &record.data {
        attributes.add(&format!("data.{name}"), value);
    }

    Some(EnrollmentEvent {
        event_id: stable_event_id(
            "event_log",
            &[
                &ctx.device_id,
                &record.channel.to_ascii_lowercase(),
                &record.record_id.to_string(),
            ],
        ),
        agent_id: ctx.agent_id.clone(),
        device_id: ctx.device_id.clone(),
        occurred_at: Some(timestamp_ms(record.time_created)),
        platform: Platform::Windows as i32,
        enrollment_method: mapping.method as i32,
        stage: mapping.stage as i32,
        outcome: outcome as i32,
        error,
        source: Some(Source {
            kind: SourceKind::EventLog as i32,
            channel: truncate_bytes(&record.channel, MAX_CHANNEL_BYTES),
            event_id: record.event_id,
            record_id: record.record_id,
        }),
        attributes: attributes.into_map(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_codes_are_found_in_messages() {
        assert_eq!(
            find_hex_code("Failed (Unknown Win32 Error code: 0x8018002b)"),
            Some(0x8018_002b)
        );
        assert_eq!(
            find_hex_code("Device Credential (0x1), Failed (0x80180001)"),
            Some(0x8018_0001)
        );
        assert_eq!(
            find_hex_code("Device Credential (0x0), Failed (Unknown Win32 Error code: 0x8018002b)"),
            Some(0x8018_002b)
        );
        assert_eq!(find_hex_code("status 0x0"), Some(0));
        assert_eq!(find_hex_code("guid {0x12ab}x"), Some(0x12ab));
        assert_eq!(find_hex_code("no code here"), None);
    }

    #[test]
    fn a_zero_in_message_text_does_not_turn_a_failed_join_into_success() {
        // User Device Registration 304 as published (Event Viewer text rendering): the only
        // hex number of the message is the ADAL response code 0x0.
        let text = "Log Name: Microsoft-Windows-User Device Registration/Admin\nSource: Microsoft-Windows-User Device Registration\nDate: <Date and Time>\nEvent ID: 304\nLevel: Error\nDescription:\nAutomatic registration failed at join phase.\nExit code: Keyset does not exist\nadalResponseCode: 0x0\n";
        let ctx = SourceContext {
            agent_id: "a".to_owned(),
            device_id: "d".to_owned(),
            platform: Platform::Windows,
            now: time::macros::datetime!(2025-01-01 00:00:00 UTC),
        };
        let parsed = parse(text, &ctx).unwrap();
        let events: Vec<_> = parsed.events().collect();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].outcome, Outcome::Failed as i32);
        assert_eq!(events[0].stage, EnrollmentStage::DeviceRegistration as i32);
        assert!(events[0].error.as_ref().is_some_and(|e| !e.has_code));
        assert_eq!(
            events[0].attributes.get("rendering").map(String::as_str),
            Some("text")
        );
        assert_eq!(
            events[0].attributes.get("time_assumed").map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn udr_join_request_failures_202_to_205_are_registration_failures() {
        let ctx = SourceContext {
            agent_id: "a".to_owned(),
            device_id: "d".to_owned(),
            platform: Platform::Windows,
            now: time::macros::datetime!(2025-01-01 00:00:00 UTC),
        };
        for id in [202, 203, 205] {
            let text = format!(
                "Log Name: Microsoft-Windows-User Device Registration/Admin\nEvent ID: {id}\nLevel: Error\nDescription: The join request failed with exit code: 0x80280036.\n"
            );
            let parsed = parse(&text, &ctx).unwrap();
            let event = parsed.events().next().expect("mapped");
            assert_eq!(event.outcome, Outcome::Failed as i32, "{id}");
            assert_eq!(
                event.stage,
                EnrollmentStage::DeviceRegistration as i32,
                "{id}"
            );
            assert_eq!(event.error.as_ref().map(|e| e.code), Some(0x8028_0036));
        }
        let text = "Log Name: Microsoft-Windows-User Device Registration/Admin\nEvent ID: 200\nLevel: Error\nDescription: x\n";
        let event = parse(text, &ctx)
            .unwrap()
            .events()
            .next()
            .cloned()
            .expect("mapped");
        assert_eq!(event.stage, EnrollmentStage::Discovery as i32);
    }

    #[test]
    fn udr_automatic_registration_stage_follows_its_error_phase() {
        let ctx = SourceContext {
            agent_id: "a".to_owned(),
            device_id: "d".to_owned(),
            platform: Platform::Windows,
            now: time::macros::datetime!(2025-01-01 00:00:00 UTC),
        };
        let stage_of = |id: u32, debug: &str| {
            let text = format!(
                "Log Name: Microsoft-Windows-User Device Registration/Admin\nEvent ID: {id}\nLevel: Error\nDescription:\nAutomatic registration failed at join phase.\nExit code: Unknown HResult Error code: 0xcaa1000e\n{debug}adalResponseCode: 0xcaa1000e\n"
            );
            let parsed = parse(&text, &ctx).unwrap();
            let event = parsed.events().next().cloned().expect("mapped");
            assert_eq!(event.outcome, Outcome::Failed as i32, "{id} {debug}");
            assert_eq!(event.error.as_ref().map(|e| e.code), Some(0xcaa1_000e));
            event.stage
        };
        let auth = EnrollmentStage::Authentication as i32;
        let join = EnrollmentStage::DeviceRegistration as i32;
        let discovery = EnrollmentStage::Discovery as i32;
        assert_eq!(stage_of(304, "errorPhase: auth\n"), auth);
        assert_eq!(stage_of(304, "    errorPhase: discover\n"), discovery);
        assert_eq!(stage_of(304, "errorPhase: join\n"), join);
        assert_eq!(stage_of(307, "errorPhase: AUTH\n"), auth);
        // No phase, or one not known: the id decides.
        assert_eq!(stage_of(304, ""), join);
        assert_eq!(stage_of(304, "errorPhase: undefined\n"), join);
        assert_eq!(stage_of(305, ""), auth);
        assert_eq!(stage_of(307, ""), discovery);
        assert_eq!(stage_of(305, "errorPhase: join\n"), join);
    }

    #[test]
    fn fault_stage_follows_subcode() {
        assert_eq!(
            fault_stage("DeviceCapReached"),
            EnrollmentStage::Authorization
        );
        assert_eq!(
            fault_stage("s:Authentication"),
            EnrollmentStage::Authentication
        );
        assert_eq!(
            fault_stage("CertificateRequest"),
            EnrollmentStage::CertificateRequest
        );
    }
}
