//! `[[destinations]]`: where alerts and failure events go. One flat table per destination,
//! validated per `kind`: a key the kind needs is required, a key it does not use is an error
//! (so a typo or a copy-paste from another kind cannot go unnoticed).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::alerts::config::{SettingError, parse_duration};

/// The TOML shape of one destination.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Unique name, `[A-Za-z0-9_-]{1,64}` (metrics label, outbox key).
    pub name: String,
    /// webhook | slack | teams | pagerduty | syslog | splunk_hec | elasticsearch | sentinel
    pub kind: String,
    /// What it receives: `alerts`, `events` (every failure event; SIEM kinds only) or both.
    /// Default: ["alerts"] for chat/paging kinds and webhooks, ["alerts", "events"] for SIEMs.
    pub records: Option<Vec<String>>,
    /// Only these tenants (default all).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Only these categories (default all).
    #[serde(default)]
    pub categories: Vec<String>,
    /// Lowest alert severity sent: info (resolutions too), warning, critical (default info).
    pub min_severity: Option<String>,
    /// Per-request timeout (default 10s).
    pub timeout: Option<String>,
    /// Longest wait between retries (default 5m); retries back off exponentially from 1 s with
    /// full jitter, forever: nothing is dropped.
    pub max_backoff: Option<String>,
    /// Records per request for batching kinds (splunk_hec, elasticsearch, sentinel; default
    /// 500) and events read per feed page (default 500).
    pub batch_size: Option<usize>,
    /// Where the event feed starts the first time: `now` (default) or `beginning`.
    pub events_from: Option<String>,

    /// HTTP kinds: the endpoint (pagerduty defaults to https://events.pagerduty.com/v2/enqueue;
    /// splunk_hec: the base, e.g. https://splunk:8088; elasticsearch: the base URL; sentinel:
    /// the data collection endpoint).
    pub url: Option<String>,
    /// webhook: HMAC-SHA256 key for `X-Fleetpulse-Signature` (recommended).
    pub secret: Option<String>,
    /// splunk_hec: the HEC token.
    pub token: Option<String>,
    /// splunk_hec / elasticsearch: target index (elasticsearch default `fleetpulse`).
    pub index: Option<String>,
    /// elasticsearch: basic auth.
    pub username: Option<String>,
    pub password: Option<String>,
    /// elasticsearch: `Authorization: ApiKey <api_key>`.
    pub api_key: Option<String>,
    /// pagerduty: the integration's routing key.
    pub routing_key: Option<String>,
    /// sentinel: Entra tenant, app registration and secret, DCR and stream.
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub dcr_immutable_id: Option<String>,
    pub stream: Option<String>,
    /// sentinel: token endpoint (default
    /// https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token).
    pub token_url: Option<String>,

    /// syslog: `udp://host:port`, `tcp://host:port` or `tls://host:port`.
    pub address: Option<String>,
    /// syslog: `cef` (default) or `json`.
    pub format: Option<String>,
    /// syslog: facility number 0..=23 (default 16, local0).
    pub facility: Option<u8>,
    /// syslog: HOSTNAME field (default: this machine's name).
    pub hostname: Option<String>,
    /// syslog: APP-NAME (default `fleetpulse`).
    pub app_name: Option<String>,
    /// syslog: SD-ID of the structured data (default `fleetpulse@32473`).
    pub sd_id: Option<String>,
    /// TLS (syslog tls://, https URLs): PEM file of CAs to trust instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// syslog tls://: server name to verify (default: the address's host).
    pub server_name: Option<String>,
}

/// What a destination is, with the settings its kind needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Webhook {
        url: String,
        secret: Option<String>,
    },
    Slack {
        url: String,
    },
    Teams {
        url: String,
    },
    PagerDuty {
        url: String,
        routing_key: String,
    },
    Syslog {
        transport: SyslogTransport,
        host: String,
        port: u16,
        format: SyslogFormat,
    },
    SplunkHec {
        url: String,
        token: String,
        index: Option<String>,
    },
    Elasticsearch {
        url: String,
        index: String,
        auth: Option<EsAuth>,
    },
    Sentinel {
        url: String,
        token_url: String,
        client_id: String,
        client_secret: String,
        dcr_immutable_id: String,
        stream: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    Cef,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EsAuth {
    Basic(String, String),
    ApiKey(String),
}

/// A validated destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    pub name: String,
    pub kind: Kind,
    pub alerts: bool,
    pub events: bool,
    pub tenants: Vec<String>,
    pub categories: Vec<String>,
    pub min_severity: String,
    pub timeout: Duration,
    pub max_backoff: Duration,
    pub batch_size: usize,
    pub events_from_beginning: bool,
    pub facility: u8,
    pub hostname: String,
    pub app_name: String,
    pub sd_id: String,
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

impl Destination {
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Webhook { .. } => "webhook",
            Kind::Slack { .. } => "slack",
            Kind::Teams { .. } => "teams",
            Kind::PagerDuty { .. } => "pagerduty",
            Kind::Syslog { .. } => "syslog",
            Kind::SplunkHec { .. } => "splunk_hec",
            Kind::Elasticsearch { .. } => "elasticsearch",
            Kind::Sentinel { .. } => "sentinel",
        }
    }
}

pub const KINDS: &[&str] = &[
    "webhook",
    "slack",
    "teams",
    "pagerduty",
    "syslog",
    "splunk_hec",
    "elasticsearch",
    "sentinel",
];

/// Keys each kind may use besides the common ones.
fn kind_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "webhook" => &["url", "secret", "ca_file"],
        "slack" | "teams" => &["url", "ca_file"],
        "pagerduty" => &["url", "routing_key", "ca_file"],
        "syslog" => &[
            "address",
            "format",
            "facility",
            "hostname",
            "app_name",
            "sd_id",
            "ca_file",
            "server_name",
        ],
        "splunk_hec" => &["url", "token", "index", "ca_file"],
        "elasticsearch" => &["url", "index", "username", "password", "api_key", "ca_file"],
        "sentinel" => &[
            "url",
            "tenant_id",
            "client_id",
            "client_secret",
            "dcr_immutable_id",
            "stream",
            "token_url",
            "ca_file",
        ],
        _ => &[],
    }
}

fn set_keys(c: &DestinationConfig) -> Vec<&'static str> {
    let mut k = Vec::new();
    let mut add = |name: &'static str, set: bool| {
        if set {
            k.push(name);
        }
    };
    add("url", c.url.is_some());
    add("secret", c.secret.is_some());
    add("token", c.token.is_some());
    add("index", c.index.is_some());
    add("username", c.username.is_some());
    add("password", c.password.is_some());
    add("api_key", c.api_key.is_some());
    add("routing_key", c.routing_key.is_some());
    add("tenant_id", c.tenant_id.is_some());
    add("client_id", c.client_id.is_some());
    add("client_secret", c.client_secret.is_some());
    add("dcr_immutable_id", c.dcr_immutable_id.is_some());
    add("stream", c.stream.is_some());
    add("token_url", c.token_url.is_some());
    add("address", c.address.is_some());
    add("format", c.format.is_some());
    add("facility", c.facility.is_some());
    add("hostname", c.hostname.is_some());
    add("app_name", c.app_name.is_some());
    add("sd_id", c.sd_id.is_some());
    add("ca_file", c.ca_file.is_some());
    add("server_name", c.server_name.is_some());
    k
}

fn err(i: usize, key: &str, reason: impl Into<String>) -> SettingError {
    SettingError {
        field: format!("destinations[{i}].{key}"),
        reason: reason.into(),
    }
}

fn http_url(i: usize, key: &str, v: &str) -> Result<String, SettingError> {
    if v.starts_with("https://") || v.starts_with("http://") {
        Ok(v.trim_end_matches('/').to_owned())
    } else {
        Err(err(
            i,
            key,
            format!("{v:?} must start with https:// (or http:// inside a trusted network)"),
        ))
    }
}

fn need(i: usize, key: &str, kind: &str, v: &Option<String>) -> Result<String, SettingError> {
    match v {
        Some(s) if !s.is_empty() => Ok(s.clone()),
        _ => Err(err(i, key, format!("required for kind {kind}"))),
    }
}

/// Parses `scheme://host:port` of a syslog address.
pub fn parse_address(a: &str) -> Result<(SyslogTransport, String, u16), String> {
    let (scheme, rest) = a.split_once("://").ok_or_else(|| {
        format!("{a:?} must look like tcp://host:port, udp://host:port or tls://host:port")
    })?;
    let transport = match scheme {
        "udp" => SyslogTransport::Udp,
        "tcp" => SyslogTransport::Tcp,
        "tls" => SyslogTransport::Tls,
        s => return Err(format!("transport {s:?} is not one of udp, tcp, tls")),
    };
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{a:?} has no port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{a:?} has an invalid port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{a:?} has no host"));
    }
    Ok((transport, host.to_owned(), port))
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Validates every destination.
pub fn validate(
    list: &[DestinationConfig],
    categories: &[String],
) -> Result<Vec<Destination>, SettingError> {
    let mut out: Vec<Destination> = Vec::new();
    for (i, c) in list.iter().enumerate() {
        if !valid_name(&c.name) {
            return Err(err(
                i,
                "name",
                "must be 1 to 64 letters, digits, '_' or '-'",
            ));
        }
        if out.iter().any(|d| d.name == c.name) {
            return Err(err(i, "name", format!("{:?} is used twice", c.name)));
        }
        if !KINDS.contains(&c.kind.as_str()) {
            return Err(err(
                i,
                "kind",
                format!("must be one of: {}", KINDS.join(", ")),
            ));
        }
        let allowed = kind_keys(&c.kind);
        if let Some(k) = set_keys(c).into_iter().find(|k| !allowed.contains(k)) {
            return Err(err(i, k, format!("not used by kind {}", c.kind)));
        }
        let siem = matches!(
            c.kind.as_str(),
            "syslog" | "splunk_hec" | "elasticsearch" | "sentinel"
        );
        let records = c.records.clone().unwrap_or_else(|| {
            if siem {
                vec!["alerts".into(), "events".into()]
            } else {
                vec!["alerts".into()]
            }
        });
        let mut alerts = false;
        let mut events = false;
        for r in &records {
            match r.as_str() {
                "alerts" => alerts = true,
                "events" if siem => events = true,
                "events" => {
                    return Err(err(
                        i,
                        "records",
                        format!("kind {} carries alerts only", c.kind),
                    ));
                }
                other => {
                    return Err(err(
                        i,
                        "records",
                        format!("{other:?} is not one of: alerts, events"),
                    ));
                }
            }
        }
        if !alerts && !events {
            return Err(err(i, "records", "must name alerts, events or both"));
        }
        for cat in &c.categories {
            if !categories.contains(cat) {
                return Err(err(i, "categories", format!("unknown category {cat:?}")));
            }
        }
        let min_severity = c.min_severity.clone().unwrap_or_else(|| "info".into());
        if !["info", "warning", "critical"].contains(&min_severity.as_str()) {
            return Err(err(
                i,
                "min_severity",
                "must be one of: info, warning, critical",
            ));
        }
        let dur = |key: &str, v: &Option<String>, default: u64| -> Result<Duration, SettingError> {
            match v {
                None => Ok(Duration::from_secs(default)),
                Some(s) => {
                    let d = parse_duration(s).map_err(|r| err(i, key, r))?;
                    if d.is_zero() || d > Duration::from_secs(3600) {
                        Err(err(i, key, "must be from 1s to 1h"))
                    } else {
                        Ok(d)
                    }
                }
            }
        };
        let timeout = dur("timeout", &c.timeout, 10)?;
        let max_backoff = dur("max_backoff", &c.max_backoff, 300)?;
        let batch_size = c.batch_size.unwrap_or(500);
        if !(1..=10_000).contains(&batch_size) {
            return Err(err(i, "batch_size", "must be from 1 to 10000"));
        }
        let events_from_beginning = match c.events_from.as_deref() {
            None | Some("now") => false,
            Some("beginning") => true,
            Some(_) => return Err(err(i, "events_from", "must be now or beginning")),
        };
        let kind = match c.kind.as_str() {
            "webhook" => Kind::Webhook {
                url: http_url(i, "url", &need(i, "url", &c.kind, &c.url)?)?,
                secret: c.secret.clone(),
            },
            "slack" => Kind::Slack {
                url: http_url(i, "url", &need(i, "url", &c.kind, &c.url)?)?,
            },
            "teams" => Kind::Teams {
                url: http_url(i, "url", &need(i, "url", &c.kind, &c.url)?)?,
            },
            "pagerduty" => Kind::PagerDuty {
                url: http_url(
                    i,
                    "url",
                    c.url
                        .as_deref()
                        .unwrap_or("https://events.pagerduty.com/v2/enqueue"),
                )?,
                routing_key: need(i, "routing_key", &c.kind, &c.routing_key)?,
            },
            "syslog" => {
                let a = need(i, "address", &c.kind, &c.address)?;
                let (transport, host, port) =
                    parse_address(&a).map_err(|r| err(i, "address", r))?;
                let format = match c.format.as_deref() {
                    None | Some("cef") => SyslogFormat::Cef,
                    Some("json") => SyslogFormat::Json,
                    Some(_) => return Err(err(i, "format", "must be cef or json")),
                };
                if transport != SyslogTransport::Tls
                    && (c.ca_file.is_some() || c.server_name.is_some())
                {
                    return Err(err(
                        i,
                        if c.ca_file.is_some() {
                            "ca_file"
                        } else {
                            "server_name"
                        },
                        "only used with tls://",
                    ));
                }
                if c.facility.is_some_and(|f| f > 23) {
                    return Err(err(i, "facility", "must be from 0 to 23"));
                }
                Kind::Syslog {
                    transport,
                    host,
                    port,
                    format,
                }
            }
            "splunk_hec" => Kind::SplunkHec {
                url: http_url(i, "url", &need(i, "url", &c.kind, &c.url)?)?,
                token: need(i, "token", &c.kind, &c.token)?,
                index: c.index.clone(),
            },
            "elasticsearch" => Kind::Elasticsearch {
                url: http_url(i, "url", &need(i, "url", &c.kind, &c.url)?)?,
                index: c.index.clone().unwrap_or_else(|| "fleetpulse".into()),
                auth: match (&c.username, &c.password, &c.api_key) {
                    (None, None, None) => None,
                    (Some(u), Some(p), None) => Some(EsAuth::Basic(u.clone(), p.clone())),
                    (None, None, Some(k)) => Some(EsAuth::ApiKey(k.clone())),
                    _ => return Err(err(i, "api_key", "give username and password, or api_key")),
                },
            },
            _ => {
                let tenant_id = c.tenant_id.clone();
                let token_url = match (&c.token_url, &tenant_id) {
                    (Some(u), _) => http_url(i, "token_url", u)?,
                    (None, Some(t)) => {
                        format!("https://login.microsoftonline.com/{t}/oauth2/v2.0/token")
                    }
                    (None, None) => {
                        return Err(err(
                            i,
                            "tenant_id",
                            "required for kind sentinel (or token_url)",
                        ));
                    }
                };
                Kind::Sentinel {
                    url: http_url(i, "url", &need(i, "url", &c.kind, &c.url)?)?,
                    token_url,
                    client_id: need(i, "client_id", &c.kind, &c.client_id)?,
                    client_secret: need(i, "client_secret", &c.kind, &c.client_secret)?,
                    dcr_immutable_id: need(i, "dcr_immutable_id", &c.kind, &c.dcr_immutable_id)?,
                    stream: need(i, "stream", &c.kind, &c.stream)?,
                }
            }
        };
        out.push(Destination {
            name: c.name.clone(),
            kind,
            alerts,
            events,
            tenants: c.tenants.clone(),
            categories: c.categories.clone(),
            min_severity,
            timeout,
            max_backoff,
            batch_size,
            events_from_beginning,
            facility: c.facility.unwrap_or(16),
            hostname: c.hostname.clone().unwrap_or_else(local_hostname),
            app_name: c.app_name.clone().unwrap_or_else(|| "fleetpulse".into()),
            sd_id: c.sd_id.clone().unwrap_or_else(|| "fleetpulse@32473".into()),
            ca_file: c.ca_file.clone(),
            server_name: c.server_name.clone(),
        });
    }
    Ok(out)
}

/// This machine's host name (`-` when unknown), for syslog's HOSTNAME.
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Vec<Destination>, SettingError> {
        #[derive(Deserialize)]
        struct F {
            destinations: Vec<DestinationConfig>,
        }
        let f: F = toml::from_str(t).unwrap();
        validate(&f.destinations, &["license".to_owned()])
    }

    #[test]
    fn the_issue_example_parses() {
        let d = parse(
            "[[destinations]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9999/hook\"\n\
             [[destinations]]\nname = \"siem\"\nkind = \"syslog\"\naddress = \"tcp://127.0.0.1:5514\"\nformat = \"cef\"\n",
        )
        .unwrap();
        assert_eq!(
            d[0].kind,
            Kind::Webhook {
                url: "http://127.0.0.1:9999/hook".into(),
                secret: None
            }
        );
        assert!(d[0].alerts && !d[0].events);
        assert_eq!(
            d[1].kind,
            Kind::Syslog {
                transport: SyslogTransport::Tcp,
                host: "127.0.0.1".into(),
                port: 5514,
                format: SyslogFormat::Cef
            }
        );
        assert!(d[1].alerts && d[1].events);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[[destinations]]\nname = \"a\"\nkind = \"webhook\"\n").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("destinations[0].url", "required for kind webhook")
        );
        let e = parse("[[destinations]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://x\"\nrouting_key = \"k\"\n").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("destinations[0].routing_key", "not used by kind webhook")
        );
        let e = parse("[[destinations]]\nname = \"a\"\nkind = \"slack\"\nurl = \"http://x\"\nrecords = [\"events\"]\n").unwrap_err();
        assert_eq!(e.field, "destinations[0].records");
        let e =
            parse("[[destinations]]\nname = \"a\"\nkind = \"syslog\"\naddress = \"smtp://x:1\"\n")
                .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            (
                "destinations[0].address",
                "transport \"smtp\" is not one of udp, tcp, tls"
            )
        );
        let e = parse("[[destinations]]\nname = \"a\"\nkind = \"fax\"\n").unwrap_err();
        assert_eq!(e.field, "destinations[0].kind");
    }
}
