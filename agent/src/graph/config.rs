//! Configuration of the Graph connector: one TOML file (`--config`) listing the tenants to pull,
//! with flags/environment overriding the collector address.
//!
//! ```toml
//! collector = "https://collector.example.com:7600"
//! state_dir = "/var/lib/fleetpulse-graph"   # per tenant: <state_dir>/<name>/{state.json,spool/}
//! poll_interval_secs = 300                  # default 300
//!
//! [tls]                                     # how to trust the *collector* (as for the agent)
//! ca_cert = "/etc/fleetpulse-graph/ca.pem"
//!
//! [shipper]                                 # same keys and defaults as the agent's [shipper]
//! batch_max_age_ms = 2000
//!
//! [[tenant]]
//! name = "contoso"                          # [A-Za-z0-9_-]{1,64}; names the state directory
//! directory_id = "00000000-0000-0000-0000-000000000000"  # Entra tenant id (or verified domain)
//! client_id = "11111111-1111-1111-1111-111111111111"     # app registration (application) id
//! client_secret_file = "/etc/fleetpulse-graph/contoso.secret"  # or client_secret_env = "VAR"
//! # certificate_file = "/etc/fleetpulse-graph/contoso.crt.pem" # certificate credential instead
//! # private_key_file = "/etc/fleetpulse-graph/contoso.key.pem" #   (PKCS#8 or PKCS#1 RSA key)
//! authority = "https://login.microsoftonline.com"   # default; national clouds differ
//! graph_endpoint = "https://graph.microsoft.com"    # default; national clouds differ
//! api_version = "v1.0"                      # troubleshooting events (v1.0 or beta)
//! autopilot_events = true                   # beta /deviceManagement/autopilotEvents
//! resolve_user_principal_names = true       # GET /users/{id} (needs User.Read.All)
//! server_side_filter = true                 # $filter=eventDateTime ge ...
//! requests_per_second = 4.0                 # this tenant's Graph request pace
//! max_retries = 8                           # per request, on 429/5xx/transport errors
//! overlap_secs = 3600                       # re-read window behind the watermark
//! initial_lookback_days = 7                 # how far back the very first poll reaches
//! ```
//!
//! Secrets never appear in this file: a client secret is read from a file (re-read at every
//! token request, so rotating it is replacing the file) or an environment variable; a
//! certificate's private key from a file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigArgs, FileConfig, Settings, ShipperFile, SpoolFile, TlsFile};

/// Default Entra (Azure AD) token authority of the global cloud.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Default Microsoft Graph endpoint of the global cloud.
pub const DEFAULT_GRAPH_ENDPOINT: &str = "https://graph.microsoft.com";

/// Errors in the connector configuration, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum GraphConfigError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error(transparent)]
    Agent(#[from] crate::config::ConfigError),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> GraphConfigError {
    GraphConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The connector's TOML file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GraphFile {
    pub collector: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub poll_interval_secs: Option<u64>,
    #[serde(default)]
    pub tls: TlsFile,
    #[serde(default)]
    pub shipper: ShipperFile,
    #[serde(default)]
    pub spool: SpoolFile,
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantFile>,
}

/// One `[[tenant]]` table.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TenantFile {
    pub name: String,
    pub directory_id: String,
    pub client_id: String,
    pub client_secret_file: Option<PathBuf>,
    pub client_secret_env: Option<String>,
    pub certificate_file: Option<PathBuf>,
    pub private_key_file: Option<PathBuf>,
    pub authority: Option<String>,
    pub graph_endpoint: Option<String>,
    pub api_version: Option<String>,
    pub autopilot_events: Option<bool>,
    pub resolve_user_principal_names: Option<bool>,
    pub server_side_filter: Option<bool>,
    pub requests_per_second: Option<f64>,
    pub max_retries: Option<u32>,
    pub overlap_secs: Option<u64>,
    pub initial_lookback_days: Option<u32>,
}

/// How the connector proves its identity to Entra.
#[derive(Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// Client secret in a file (re-read at every token request: rotation = replace the file).
    SecretFile(PathBuf),
    /// Client secret in an environment variable (rotation needs a restart).
    SecretEnv(String),
    /// Certificate credential: a signed JWT client assertion (RFC 7523).
    Certificate {
        certificate_file: PathBuf,
        private_key_file: PathBuf,
    },
}

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only where the secret lives, never the secret.
        match self {
            Self::SecretFile(path) => write!(f, "SecretFile({})", path.display()),
            Self::SecretEnv(var) => write!(f, "SecretEnv({var})"),
            Self::Certificate {
                certificate_file, ..
            } => write!(f, "Certificate({})", certificate_file.display()),
        }
    }
}

/// One tenant, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantSettings {
    pub name: String,
    pub directory_id: String,
    pub client_id: String,
    pub credential: CredentialSource,
    /// Authority base URL without trailing slash.
    pub authority: String,
    /// Graph base URL without trailing slash.
    pub graph_endpoint: String,
    pub api_version: String,
    pub autopilot_events: bool,
    pub resolve_user_principal_names: bool,
    pub server_side_filter: bool,
    /// Minimum spacing between two Graph requests of this tenant.
    pub request_spacing: Duration,
    pub max_retries: u32,
    pub overlap: Duration,
    pub initial_lookback: Duration,
    pub state_file: PathBuf,
    pub spool_dir: PathBuf,
}

impl TenantSettings {
    /// The token endpoint (`{authority}/{directory}/oauth2/v2.0/token`).
    pub fn token_url(&self) -> String {
        format!("{}/{}/oauth2/v2.0/token", self.authority, self.directory_id)
    }

    /// The OAuth2 scope of app-only Graph access (`{graph}/.default`).
    pub fn scope(&self) -> String {
        format!("{}/.default", self.graph_endpoint)
    }
}

/// Everything `fleetpulse-agent graph` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphSettings {
    /// Collector address, TLS, shipper and spool settings (shared by every tenant).
    pub agent: Settings,
    pub poll_interval: Duration,
    pub tenants: Vec<TenantSettings>,
}

impl GraphFile {
    pub fn load(path: &Path) -> Result<Self, GraphConfigError> {
        Ok(crate::config::load_toml(path)?)
    }
}

/// Default directory of the connector's per-tenant state.
pub fn default_state_dir() -> PathBuf {
    if cfg!(windows) {
        let base = std::env::var_os("ProgramData")
            .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from);
        base.join("Fleetpulse").join("Graph")
    } else {
        PathBuf::from("/var/lib/fleetpulse-graph")
    }
}

impl GraphSettings {
    /// Merges flags/environment (`args`: collector, TLS, shipper knobs) over the file.
    pub fn resolve(args: &ConfigArgs, file: &GraphFile) -> Result<Self, GraphConfigError> {
        let state_dir = file.state_dir.clone().unwrap_or_else(default_state_dir);
        let agent_file = FileConfig {
            collector: file.collector.clone(),
            state_file: None,
            spool_dir: None,
            tls: file.tls.clone(),
            spool: file.spool.clone(),
            shipper: file.shipper.clone(),
            sources: Default::default(),
            collect: Default::default(),
        };
        // The agent's own resolution validates the shipper/spool/TLS knobs; its paths are
        // replaced per tenant below.
        let mut agent_args = args.clone();
        agent_args.config = None;
        agent_args.state_file = None;
        agent_args.spool_dir = None;
        let agent = Settings::merge(&agent_args, &agent_file)?;
        let poll_secs = file.poll_interval_secs.unwrap_or(300);
        if poll_secs == 0 {
            return Err(invalid("poll_interval_secs", "must be at least 1"));
        }
        if file.tenants.is_empty() {
            return Err(invalid(
                "tenant",
                "no [[tenant]] configured: add one table per Entra tenant to pull",
            ));
        }
        let mut tenants = Vec::with_capacity(file.tenants.len());
        for (i, t) in file.tenants.iter().enumerate() {
            let tenant = resolve_tenant(i, t, &state_dir)?;
            if tenants
                .iter()
                .any(|other: &TenantSettings| other.name == tenant.name)
            {
                return Err(invalid(
                    format!("tenant[{i}].name"),
                    format!("{:?} is used by another tenant", tenant.name),
                ));
            }
            tenants.push(tenant);
        }
        Ok(Self {
            agent,
            poll_interval: Duration::from_secs(poll_secs),
            tenants,
        })
    }

    /// The tenant called `name`.
    pub fn tenant(&self, name: &str) -> Result<&TenantSettings, GraphConfigError> {
        self.tenants.iter().find(|t| t.name == name).ok_or_else(|| {
            invalid(
                "--tenant",
                format!(
                    "{name:?} is not configured (configured: {})",
                    self.tenants
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }
}

fn resolve_tenant(
    i: usize,
    t: &TenantFile,
    state_dir: &Path,
) -> Result<TenantSettings, GraphConfigError> {
    let field = |name: &str| format!("tenant[{i}].{name}");
    let valid_name = !t.name.is_empty()
        && t.name.len() <= 64
        && t.name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_name {
        return Err(invalid(
            field("name"),
            "must be 1-64 characters of A-Z, a-z, 0-9, '-' or '_' (it names a directory)",
        ));
    }
    let safe_segment = |value: &str| {
        !value.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    };
    if !safe_segment(&t.directory_id) {
        return Err(invalid(
            field("directory_id"),
            "must be the Entra tenant id (GUID) or a verified domain name",
        ));
    }
    if !safe_segment(&t.client_id) {
        return Err(invalid(
            field("client_id"),
            "must be the application (client) id of the app registration",
        ));
    }
    let credential = match (
        &t.client_secret_file,
        &t.client_secret_env,
        &t.certificate_file,
        &t.private_key_file,
    ) {
        (Some(path), None, None, None) => CredentialSource::SecretFile(path.clone()),
        (None, Some(var), None, None) if !var.is_empty() => {
            CredentialSource::SecretEnv(var.clone())
        }
        (None, None, Some(cert), Some(key)) => CredentialSource::Certificate {
            certificate_file: cert.clone(),
            private_key_file: key.clone(),
        },
        (None, None, Some(_), None) | (None, None, None, Some(_)) => {
            return Err(invalid(
                field("certificate_file"),
                "a certificate credential needs both certificate_file and private_key_file",
            ));
        }
        _ => {
            return Err(invalid(
                field("client_secret_file"),
                "give exactly one credential: client_secret_file, client_secret_env, or certificate_file + private_key_file",
            ));
        }
    };
    let authority = base_url(
        &field("authority"),
        t.authority.as_deref().unwrap_or(DEFAULT_AUTHORITY),
    )?;
    let graph_endpoint = base_url(
        &field("graph_endpoint"),
        t.graph_endpoint
            .as_deref()
            .unwrap_or(DEFAULT_GRAPH_ENDPOINT),
    )?;
    let api_version = t.api_version.clone().unwrap_or_else(|| "v1.0".to_owned());
    if api_version != "v1.0" && api_version != "beta" {
        return Err(invalid(
            field("api_version"),
            "must be \"v1.0\" or \"beta\"",
        ));
    }
    let rps = t.requests_per_second.unwrap_or(4.0);
    if !(rps.is_finite() && rps > 0.0 && rps <= 100.0) {
        return Err(invalid(
            field("requests_per_second"),
            "must be above 0 and at most 100",
        ));
    }
    let max_retries = t.max_retries.unwrap_or(8);
    if max_retries > 100 {
        return Err(invalid(field("max_retries"), "must be at most 100"));
    }
    let lookback_days = t.initial_lookback_days.unwrap_or(7);
    if lookback_days == 0 || lookback_days > 365 {
        return Err(invalid(
            field("initial_lookback_days"),
            "must be between 1 and 365",
        ));
    }
    let overlap_secs = t.overlap_secs.unwrap_or(3600);
    if overlap_secs > 7 * 86_400 {
        return Err(invalid(
            field("overlap_secs"),
            "must be at most 604800 (7 days)",
        ));
    }
    let dir = state_dir.join(&t.name);
    Ok(TenantSettings {
        name: t.name.clone(),
        directory_id: t.directory_id.clone(),
        client_id: t.client_id.clone(),
        credential,
        authority,
        graph_endpoint,
        api_version,
        autopilot_events: t.autopilot_events.unwrap_or(true),
        resolve_user_principal_names: t.resolve_user_principal_names.unwrap_or(true),
        server_side_filter: t.server_side_filter.unwrap_or(true),
        request_spacing: Duration::from_secs_f64(1.0 / rps),
        max_retries,
        overlap: Duration::from_secs(overlap_secs),
        initial_lookback: Duration::from_secs(u64::from(lookback_days) * 86_400),
        state_file: dir.join("state.json"),
        spool_dir: dir.join("spool"),
    })
}

/// Validates a base URL: https, or http to a loopback address only (tests, local proxies), so
/// a secret or token never crosses a network in clear text.
fn base_url(field: &str, value: &str) -> Result<String, GraphConfigError> {
    let url = reqwest::Url::parse(value)
        .map_err(|err| invalid(field, format!("{value:?} is not a URL: {err}")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(invalid(
                field,
                "http:// is allowed only to a loopback address; use https://",
            ));
        }
        other => return Err(invalid(field, format!("scheme {other:?} is not supported"))),
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            field,
            "must be a base URL with a host and no query",
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// Whether the URL's host is a loopback address.
pub fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<GraphSettings, GraphConfigError> {
        let file: GraphFile = toml::from_str(text).map_err(|e| GraphConfigError::Invalid {
            field: "toml".into(),
            reason: e.to_string(),
        })?;
        GraphSettings::resolve(&ConfigArgs::default(), &file)
    }

    const BASE: &str = r#"
        collector = "http://127.0.0.1:7600"
        state_dir = "/state"
        [[tenant]]
        name = "contoso"
        directory_id = "contoso.onmicrosoft.com"
        client_id = "11111111-1111-1111-1111-111111111111"
    "#;

    #[test]
    fn defaults_and_paths() {
        let settings = parse(&format!("{BASE}client_secret_file = \"/s\"\n")).unwrap();
        let t = &settings.tenants[0];
        assert_eq!(t.credential, CredentialSource::SecretFile("/s".into()));
        assert_eq!(
            t.token_url(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(t.scope(), "https://graph.microsoft.com/.default");
        assert_eq!(t.state_file, PathBuf::from("/state/contoso/state.json"));
        assert_eq!(t.spool_dir, PathBuf::from("/state/contoso/spool"));
        assert_eq!(t.request_spacing, Duration::from_millis(250));
        assert_eq!(t.overlap, Duration::from_secs(3600));
        assert!(t.autopilot_events && t.server_side_filter && t.resolve_user_principal_names);
        assert_eq!(settings.poll_interval, Duration::from_secs(300));
    }

    #[test]
    fn credentials_must_be_exactly_one() {
        let err = parse(BASE).unwrap_err().to_string();
        assert!(
            err.starts_with("tenant[0].client_secret_file: give exactly one"),
            "{err}"
        );
        let err = parse(&format!(
            "{BASE}client_secret_file = \"/s\"\nclient_secret_env = \"X\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("exactly one credential"), "{err}");
        let err = parse(&format!("{BASE}certificate_file = \"/c\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs both"), "{err}");
        let ok = parse(&format!(
            "{BASE}certificate_file = \"/c\"\nprivate_key_file = \"/k\"\n"
        ))
        .unwrap();
        assert!(matches!(
            ok.tenants[0].credential,
            CredentialSource::Certificate { .. }
        ));
    }

    #[test]
    fn clear_text_is_loopback_only_and_fields_are_named() {
        let err = parse(&format!(
            "{BASE}client_secret_env = \"X\"\ngraph_endpoint = \"http://graph.example.com\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "tenant[0].graph_endpoint: http:// is allowed only to a loopback address; use https://"
        );
        let ok = parse(&format!(
            "{BASE}client_secret_env = \"X\"\ngraph_endpoint = \"http://127.0.0.1:9/\"\nauthority = \"https://login.microsoftonline.us\"\n"
        ))
        .unwrap();
        assert_eq!(ok.tenants[0].graph_endpoint, "http://127.0.0.1:9");
        assert_eq!(ok.tenants[0].scope(), "http://127.0.0.1:9/.default");
        let err = toml::from_str::<GraphFile>("[[tenant]]\nname=\"a\"\nclientid=\"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `clientid`"), "{err}");
        let err = parse(&format!("{BASE}client_secret_env = \"X\"\nname2 = 1\n"));
        assert!(err.is_err());
        let err = parse(
            "[[tenant]]\nname = \"../x\"\ndirectory_id = \"d\"\nclient_id = \"c\"\nclient_secret_env = \"X\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("tenant[0].name: "), "{err}");
    }
}
