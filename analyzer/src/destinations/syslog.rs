//! RFC 5424 syslog messages and their transports' framing: UDP (RFC 5426, one message per
//! datagram), TCP (RFC 6587 octet counting) and TLS (RFC 5425, octet counting).
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`, with
//! - PRI = facility x 8 + severity (critical alert 2, warning 4, info 6);
//! - HOSTNAME, APP-NAME, PROCID, MSGID: printable US-ASCII without spaces (others become
//!   `_`), cut to 255, 48, 128 and 32 octets, `-` when empty;
//! - one SD element `[fleetpulse@32473 id="..." tenant="..." kind="..."]` whose PARAM-VALUEs
//!   escape `"`, `\` and `]` with a backslash (32473 is the example enterprise number of
//!   RFC 5612; set `sd_id` to your own);
//! - MSG: the CEF or JSON record; a UTF-8 MSG that is not pure ASCII starts with the BOM, as
//!   the RFC requires for MSG-UTF8.

use super::record::{Record, ms_rfc3339, truncate};

/// Settings of the header.
#[derive(Debug, Clone)]
pub struct Header {
    pub facility: u8,
    pub hostname: String,
    pub app_name: String,
    pub sd_id: String,
}

/// Syslog severity of a record.
pub fn severity(r: &Record) -> u8 {
    match r.severity() {
        "critical" => 2,
        "warning" => 4,
        _ => 6,
    }
}

/// A header token: printable ASCII (33..=126) only, at most `max` octets, `-` when empty.
pub fn token(s: &str, max: usize) -> String {
    let t: String = s
        .chars()
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .take(max)
        .collect();
    if t.is_empty() { "-".to_owned() } else { t }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped.
pub fn param(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One RFC 5424 message for `r` at `now_ms`, carrying `msg`.
pub fn message(h: &Header, r: &Record, msg: &str, now_ms: i64) -> Vec<u8> {
    let pri = u16::from(h.facility.min(23)) * 8 + u16::from(severity(r));
    let (msgid, kind) = match r {
        Record::Alert(a, _) => ("alert", a.kind.as_str()),
        Record::Event(_) => ("event", "enrollment_failure"),
    };
    let sd = format!(
        "[{} id=\"{}\" tenant=\"{}\" kind=\"{}\"]",
        token(&h.sd_id, 32).replace(['=', ']', '"', ' '], "_"),
        param(&r.id()),
        param(truncate(r.tenant(), 256)),
        param(kind)
    );
    let mut out = format!(
        "<{pri}>1 {} {} {} - {} {sd} ",
        ms_rfc3339(now_ms),
        token(&h.hostname, 255),
        token(&h.app_name, 48),
        token(msgid, 32),
    )
    .into_bytes();
    if !msg.is_ascii() {
        out.extend_from_slice("\u{feff}".as_bytes());
    }
    out.extend_from_slice(msg.as_bytes());
    out
}

/// RFC 6587 octet counting (TCP and TLS): `MSG-LEN SP SYSLOG-MSG`.
pub fn octet_counted(msg: &[u8]) -> Vec<u8> {
    let mut out = format!("{} ", msg.len()).into_bytes();
    out.extend_from_slice(msg);
    out
}

#[cfg(test)]
mod tests {
    use super::super::record::fixtures;
    use super::*;

    fn h() -> Header {
        Header {
            facility: 16,
            hostname: "analyzer 1".into(),
            app_name: "fleetpulse".into(),
            sd_id: "fleetpulse@32473".into(),
        }
    }

    #[test]
    fn event_message_is_byte_exact() {
        let r = Record::Event(Box::new(fixtures::hostile_event()));
        let m = message(&h(), &r, "{\"a\":\"é\"}", 1_714_557_601_005);
        let want = "<132>1 2024-05-01T10:00:01.005Z analyzer_1 fleetpulse - event \
[fleetpulse@32473 id=\"con|toso=\\\\\\]\\\"/1b4e28ba-2fa1-11d2-883f-0016d3cca427\" \
tenant=\"con|toso=\\\\\\]\\\"\" kind=\"enrollment_failure\"] \u{feff}{\"a\":\"é\"}";
        assert_eq!(String::from_utf8(m).unwrap(), want);
    }

    #[test]
    fn ascii_message_has_no_bom_and_framing_counts_octets() {
        let (a, v) = fixtures::alert();
        let r = Record::Alert(Box::new(a), v);
        let m = message(&h(), &r, "CEF:0|x", 0);
        assert_eq!(
            String::from_utf8(m.clone()).unwrap(),
            "<130>1 1970-01-01T00:00:00.000Z analyzer_1 fleetpulse - alert [fleetpulse@32473 id=\"0b9ef3c2-6a51-5f0e-9d7e-6c1f3b1b2a10\" tenant=\"contoso\" kind=\"firing\"] CEF:0|x"
        );
        let framed = octet_counted("é".as_bytes());
        assert_eq!(framed, b"2 \xc3\xa9");
        assert_eq!(token("", 5), "-");
        assert_eq!(token("abcdefgh", 5), "abcde");
    }
}
