//! ArcSight Common Event Format (CEF:0), mapped so that Microsoft Sentinel's
//! `CommonSecurityLog` and ArcSight parse every field.
//!
//! Escaping follows "Implementing ArcSight Common Event Format (CEF)" (v25):
//! - header fields: `\` -> `\\`, `|` -> `\|`; the header cannot hold line breaks, so CR and
//!   LF become a space;
//! - extension values: `\` -> `\\`, `=` -> `\=`, LF -> `\n`, CR -> `\r` (pipes need no escape);
//! - extension keys are fixed ASCII names from the CEF dictionary.
//!
//! Field map (CEF key -> CommonSecurityLog column):
//! `rt` ReceiptTime, `start` StartTime, `end` EndTime, `msg` Message, `cat` DeviceEventCategory,
//! `outcome` EventOutcome, `reason` Reason, `act` DeviceAction, `dhost` DestinationHostName,
//! `deviceExternalId` DeviceExternalID, `duser` DestinationUserName, `request` RequestURL,
//! `cs1..cs6` + labels DeviceCustomString1..6(+Label), `cn1..cn3` + labels
//! DeviceCustomNumber1..3(+Label), `cfp1..cfp2` + labels DeviceCustomFloatingPoint1..2(+Label),
//! `flexString1` + label FlexString1(+Label). Values are cut to 1023 bytes (CommonSecurityLog's
//! string columns hold 4000; ArcSight's custom strings 1023); numbers are integers.

use super::record::{AlertRecord, EventRecord, Record, rfc3339_ms, truncate};

/// Longest extension value, in bytes.
pub const MAX_VALUE: usize = 1023;

/// Escapes a header field.
pub fn header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escapes an extension value (after cutting it to [`MAX_VALUE`] bytes).
pub fn value(s: &str) -> String {
    let s = truncate(s, MAX_VALUE);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// CEF severity 0..=10 of a record.
pub fn severity(r: &Record) -> u8 {
    match r.severity() {
        "critical" => 9,
        "warning" if matches!(r, Record::Alert(..)) => 7,
        "warning" => 5,
        _ => 3,
    }
}

struct Ext(Vec<(&'static str, String)>);

impl Ext {
    fn s(&mut self, k: &'static str, v: &str) -> &mut Self {
        if !v.is_empty() {
            self.0.push((k, value(v)));
        }
        self
    }
    fn n(&mut self, k: &'static str, v: i64) -> &mut Self {
        self.0.push((k, v.to_string()));
        self
    }
    fn f(&mut self, k: &'static str, v: f64) -> &mut Self {
        self.0.push((k, format!("{v:.6}")));
        self
    }
    fn render(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn event_ext(e: &EventRecord) -> Ext {
    let mut x = Ext(Vec::new());
    x.n("rt", e.received_at * 1000)
        .n("start", e.occurred_at_ms)
        .s("msg", &e.failure_reason)
        .s("cat", &e.category)
        .s("outcome", "failure")
        .s("reason", &e.error_message)
        .s("dhost", &e.device_id)
        .s("deviceExternalId", &e.device_id)
        .s("duser", &e.user_principal_name)
        .s("cs1Label", "tenant")
        .s("cs1", &e.tenant)
        .s("cs2Label", "errorCode")
        .s("cs2", e.error_code.as_deref().unwrap_or(""))
        .s("cs3Label", "platform")
        .s("cs3", &e.platform)
        .s("cs4Label", "enrollmentMethod")
        .s("cs4", &e.enrollment_method)
        .s("cs5Label", "stage")
        .s("cs5", &e.stage)
        .s("cs6Label", "recordId")
        .s("cs6", &format!("{}/{}", e.tenant, e.event_id))
        .s("flexString1Label", "osVersion")
        .s("flexString1", &e.os_version)
        .s("flexString2Label", "remediation")
        .s("flexString2", &e.remediation);
    x
}

fn alert_ext(a: &AlertRecord) -> Ext {
    let mut x = Ext(Vec::new());
    let conc = a
        .concentration
        .iter()
        .map(|c| format!("{}={} ({:.0}%)", c.dimension, c.value, c.share * 100.0))
        .collect::<Vec<_>>()
        .join(", ");
    x.n("rt", rfc3339_ms(&a.sent_at))
        .n("start", rfc3339_ms(&a.window_start))
        .n("end", rfc3339_ms(&a.window_end))
        .s("msg", &a.summary)
        .s("cat", &a.category)
        .s("act", &a.kind)
        .s("outcome", &a.status)
        .s("reason", &a.remediation)
        .s("request", &a.dashboard_url)
        .s("cs1Label", "tenant")
        .s("cs1", &a.tenant)
        .s("cs2Label", "alertId")
        .s("cs2", &a.alert_id)
        .s("cs3Label", "dimension")
        .s("cs3", &format!("{}={}", a.dimension, a.dimension_value))
        .s("cs4Label", "concentration")
        .s("cs4", &conc)
        .s("cs5Label", "rule")
        .s("cs5", &a.rule)
        .s("cs6Label", "recordId")
        .s("cs6", &a.notification_id)
        .s("cn1Label", "observedCount")
        .n("cn1", a.observed_count as i64)
        .s("cn2Label", "affectedDevices")
        .n("cn2", a.affected_devices as i64)
        .s("cn3Label", "affectedUsers")
        .n("cn3", a.affected_users as i64)
        .s("cfp1Label", "observedRate")
        .f("cfp1", a.observed_rate)
        .s("cfp2Label", "expectedRate")
        .f("cfp2", a.expected_rate);
    x
}

/// One CEF line (no trailing newline).
pub fn encode(r: &Record, product_version: &str) -> String {
    let (class, name, ext) = match r {
        Record::Event(e) => (
            "enrollment-failure".to_owned(),
            format!("Enrollment failed: {}", e.category),
            event_ext(e),
        ),
        Record::Alert(a, _) => (
            format!("alert-{}", a.kind),
            format!(
                "Enrollment failure alert {}: {} in {}",
                a.kind, a.category, a.tenant
            ),
            alert_ext(a),
        ),
    };
    format!(
        "CEF:0|Fleetpulse|Fleetpulse|{}|{}|{}|{}|{}",
        header(product_version),
        header(&class),
        header(truncate(&name, 512)),
        severity(r),
        ext.render()
    )
}

#[cfg(test)]
mod tests {
    use super::super::record::fixtures;
    use super::*;

    #[test]
    fn escapes_exactly_as_the_spec_says() {
        assert_eq!(header("a|b\\c=d\ne"), "a\\|b\\\\c=d e");
        assert_eq!(value("a|b\\c=d\ne\rf"), "a|b\\\\c\\=d\\ne\\rf");
        let long = "é".repeat(600);
        assert_eq!(
            value(&long).len(),
            1022,
            "cut on a char boundary under 1023 bytes"
        );
    }

    #[test]
    fn hostile_event_is_byte_exact() {
        let r = Record::Event(Box::new(fixtures::hostile_event()));
        assert_eq!(
            encode(&r, "0.1.0"),
            "CEF:0|Fleetpulse|Fleetpulse|0.1.0|enrollment-failure|Enrollment failed: license|5|\
rt=1714557601000 start=1714557600123 msg=The user has no Intune licence cat=license \
outcome=failure reason=line1\\nline2\\r| a\\=b \\\\ ] \"quoted\" é dhost=DESKTOP-ÆØÅ 01 \
deviceExternalId=DESKTOP-ÆØÅ 01 duser=jörg@contoso.com cs1Label=tenant cs1=con|toso\\=\\\\]\" \
cs2Label=errorCode cs2=0x80180018 cs3Label=platform cs3=windows cs4Label=enrollmentMethod \
cs4=autopilot_user_driven cs5Label=stage cs5=authorization cs6Label=recordId \
cs6=con|toso\\=\\\\]\"/1b4e28ba-2fa1-11d2-883f-0016d3cca427 flexString1Label=osVersion \
flexString1=10.0.22631.4602 flexString2Label=remediation flexString2=Assign an Intune licence"
        );
    }

    #[test]
    fn alert_maps_numbers_and_link() {
        let (a, v) = fixtures::alert();
        let line = encode(&Record::Alert(Box::new(a), v), "0.1.0");
        assert!(line.starts_with(
            "CEF:0|Fleetpulse|Fleetpulse|0.1.0|alert-firing|Enrollment failure alert firing: license in contoso|9|rt=1714557605000 start=1714557300000 end=1714557600000 msg=FIRING: "
        ), "{line}");
        assert!(
            line.contains(" reason=Assign an Intune licence | check \"group\" \\= <all> "),
            "{line}"
        );
        assert!(
            line.contains(" cs4Label=concentration cs4=platform\\=ios (92%) "),
            "{line}"
        );
        assert!(
            line.contains(" cn1Label=observedCount cn1=50 cn2Label=affectedDevices cn2=40 "),
            "{line}"
        );
        assert!(
            line.ends_with(
                " cfp1Label=observedRate cfp1=0.250000 cfp2Label=expectedRate cfp2=0.020000"
            ),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }
}
