//! Query-string filters: parsed and validated into typed values before any SQL is built, with
//! errors naming the field and the reason (served as HTTP 400).

use std::collections::HashSet;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A rejected parameter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

pub const PLATFORMS: &[&str] = &[
    "unspecified",
    "windows",
    "ios",
    "ipados",
    "macos",
    "android",
    "linux",
];
pub const METHODS: &[&str] = &[
    "unspecified",
    "user_driven_byod",
    "entra_join",
    "gpo_auto_enroll",
    "hybrid_join",
    "autopilot_user_driven",
    "autopilot_self_deploying",
    "autopilot_pre_provisioned",
    "bulk_provisioning",
    "apple_ade",
    "apple_user_enrollment",
    "device_enrollment_manager",
    "android_work_profile",
    "android_fully_managed",
    "android_dedicated",
    "co_management",
];
/// Enrollment stages in flow order (the funnel's order).
pub const STAGES: &[&str] = &[
    "discovery",
    "authentication",
    "authorization",
    "certificate_request",
    "dm_client_provisioning",
    "profile_install",
    "enrollment_status_page",
    "device_registration",
    "first_sync",
    "complete",
];
pub const OUTCOMES: &[&str] = &["unspecified", "succeeded", "failed", "in_progress"];
/// Sides of an event: `server` for events read from Microsoft Graph (`source_kind = 'graph'`),
/// `client` for every other source kind.
pub const SIDES: &[&str] = &["client", "server"];
/// Values of the `source` parameter (see [`SourceChoice`]).
pub const SOURCES: &[&str] = &["auto", "raw"];
/// The `source_kind` of server-side events.
pub const SERVER_SOURCE_KIND: &str = "graph";

/// Largest time range a query may span.
pub const MAX_RANGE_SECS: i64 = 400 * 86_400;

/// Where aggregate queries read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceChoice {
    /// The coarsest rollups that answer the question, raw rows for unaligned edges.
    #[default]
    Auto,
    /// Raw events only (diagnostics, benchmarks, cross-checks).
    Raw,
}

/// Validated filters common to aggregate endpoints. `Default` is the empty range with no
/// filter, for building filters in code (`Filters { from, to, ..Default::default() }`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filters {
    pub from: u32,
    pub to: u32,
    pub tenant: Option<String>,
    pub platform: Option<String>,
    pub method: Option<String>,
    pub os_version: Option<String>,
    pub stage: Option<String>,
    pub outcome: Option<String>,
    pub category: Option<String>,
    /// An error code (failed events carrying exactly this code).
    pub code: Option<u32>,
    /// `client` or `server` (see [`SIDES`]).
    pub side: Option<String>,
    pub source: SourceChoice,
}

/// Raw query parameters with helpers that reject unknown or repeated keys.
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self { pairs }
    }

    /// Rejects parameters outside `allowed` and repeated ones.
    pub fn check_known(&self, allowed: &[&str]) -> Result<(), FieldError> {
        let mut seen = HashSet::new();
        for (k, _) in &self.pairs {
            if !allowed.contains(&k.as_str()) {
                return Err(FieldError::new(
                    k,
                    format!("unknown parameter; allowed: {}", allowed.join(", ")),
                ));
            }
            if !seen.insert(k.as_str()) {
                return Err(FieldError::new(k, "given more than once"));
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// An optional value that must be one of `allowed`.
    pub fn one_of(&self, key: &str, allowed: &[&str]) -> Result<Option<String>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if allowed.contains(&v) => Ok(Some(v.to_owned())),
            Some(_) => Err(FieldError::new(
                key,
                format!("must be one of: {}", allowed.join(", ")),
            )),
        }
    }

    /// An optional free-text value of bounded length.
    pub fn text(&self, key: &str, max: usize) -> Result<Option<String>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) if !v.is_empty() && v.len() <= max => Ok(Some(v.to_owned())),
            Some(_) => Err(FieldError::new(
                key,
                format!("must be 1 to {max} bytes long"),
            )),
        }
    }

    /// An optional integer in `min..=max`, `default` when absent.
    pub fn int(&self, key: &str, min: u64, max: u64, default: u64) -> Result<u64, FieldError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(FieldError::new(
                    key,
                    format!("must be an integer from {min} to {max}"),
                )),
            },
        }
    }

    /// An optional RFC 3339 time, as Unix seconds.
    pub fn time(&self, key: &str) -> Result<Option<u32>, FieldError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let t = OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
            FieldError::new(
                key,
                "must be an RFC 3339 timestamp such as 2024-05-01T00:00:00Z",
            )
        })?;
        u32::try_from(t.unix_timestamp()).map(Some).map_err(|_| {
            FieldError::new(
                key,
                "must be between 1970-01-01T00:00:00Z and 2106-02-07T06:28:15Z",
            )
        })
    }
}

/// The parameters [`Filters::parse`] reads.
pub const FILTER_PARAMS: &[&str] = &[
    "from",
    "to",
    "tenant",
    "platform",
    "method",
    "os_version",
    "stage",
    "outcome",
    "category",
    "code",
    "side",
    "source",
];

/// Parses an error code as the API prints it (`0x80180014`) or as a decimal (`2149056532`);
/// negative decimals are HRESULTs as Windows logs often print them (`-2145910764`).
pub fn parse_code(s: &str) -> Option<u32> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || hex.len() > 8 {
            return None;
        }
        return u32::from_str_radix(hex, 16).ok();
    }
    if let Some(neg) = s.strip_prefix('-') {
        return neg
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=0x8000_0000).contains(n))
            .map(|n| n.wrapping_neg());
    }
    s.parse::<u32>().ok()
}

impl Filters {
    /// Parses the common filters. `now` is the default end; the default range is 24 h.
    pub fn parse(p: &Params, categories: &[String], now: u32) -> Result<Self, FieldError> {
        let to = p.time("to")?.unwrap_or(now);
        let from = p.time("from")?.unwrap_or(to.saturating_sub(86_400));
        if from >= to {
            return Err(FieldError::new("to", "must be later than from"));
        }
        if i64::from(to) - i64::from(from) > MAX_RANGE_SECS {
            return Err(FieldError::new(
                "from",
                "the range from..to must not exceed 400 days",
            ));
        }
        let category = match p.get("category") {
            None => None,
            Some(c) if categories.iter().any(|k| k == c) => Some(c.to_owned()),
            Some(_) => {
                return Err(FieldError::new(
                    "category",
                    format!("must be one of: {}", categories.join(", ")),
                ));
            }
        };
        let code = match p.get("code") {
            None => None,
            Some(c) => Some(parse_code(c).ok_or_else(|| {
                FieldError::new(
                    "code",
                    "must be a 32-bit error code in hex (0x80180014) or decimal",
                )
            })?),
        };
        let source = match p.get("source") {
            None | Some("auto") => SourceChoice::Auto,
            Some("raw") => SourceChoice::Raw,
            Some(_) => return Err(FieldError::new("source", "must be one of: auto, raw")),
        };
        Ok(Self {
            from,
            to,
            tenant: p.text("tenant", 128)?,
            platform: p.one_of("platform", PLATFORMS)?,
            method: p.one_of("method", METHODS)?,
            os_version: p.text("os_version", 64)?,
            stage: p.one_of("stage", STAGES)?,
            outcome: p.one_of("outcome", OUTCOMES)?,
            category,
            code,
            side: p.one_of("side", SIDES)?,
            source,
        })
    }
}

/// Formats Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(t: u32) -> String {
    OffsetDateTime::from_unix_timestamp(i64::from(t))
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &[(&str, &str)]) -> Params {
        Params::new(
            q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_and_errors() {
        let cats = vec!["tpm".to_owned()];
        let f = Filters::parse(&params(&[]), &cats, 100_000).unwrap();
        assert_eq!((f.from, f.to), (100_000 - 86_400, 100_000));
        let e = Filters::parse(&params(&[("from", "yesterday")]), &cats, 1).unwrap_err();
        assert_eq!(
            e,
            FieldError::new(
                "from",
                "must be an RFC 3339 timestamp such as 2024-05-01T00:00:00Z"
            )
        );
        let e = Filters::parse(
            &params(&[
                ("from", "2024-01-02T00:00:00Z"),
                ("to", "2024-01-01T00:00:00Z"),
            ]),
            &cats,
            1,
        )
        .unwrap_err();
        assert_eq!(e, FieldError::new("to", "must be later than from"));
        let e = Filters::parse(&params(&[("category", "nope")]), &cats, 100_000).unwrap_err();
        assert_eq!(e, FieldError::new("category", "must be one of: tpm"));
        let e = params(&[("x", "1")])
            .check_known(FILTER_PARAMS)
            .unwrap_err();
        assert_eq!(e.field, "x");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        let f = Filters::parse(&params(&[("code", "0x80180014")]), &cats, 100_000).unwrap();
        assert_eq!(f.code, Some(0x8018_0014));
        let e = Filters::parse(&params(&[("code", "0xZZ")]), &cats, 100_000).unwrap_err();
        assert_eq!(e.field, "code");
    }

    #[test]
    fn error_codes_in_every_spelling() {
        assert_eq!(parse_code("0x80180014"), Some(0x8018_0014));
        assert_eq!(parse_code("0X8018001a"), Some(0x8018_001A));
        assert_eq!(parse_code("2149056532"), Some(0x8018_0014));
        assert_eq!(parse_code("-2145910764"), Some(0x8018_0014));
        assert_eq!(parse_code("0x"), None);
        assert_eq!(parse_code("0x180000000"), None);
        assert_eq!(parse_code("-0"), None);
        assert_eq!(parse_code("4294967296"), None);
        assert_eq!(parse_code("abc"), None);
    }
}
