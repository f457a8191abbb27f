//! Agent configuration: a TOML file (`--config`), overridden by environment variables
//! (`FLEETPULSE_AGENT_*`), overridden by command-line flags. Clap reads flags and environment
//! ([`ConfigArgs`]); [`FileConfig`] is the TOML file; [`Settings::resolve`] merges both over
//! the documented defaults.
//!
//! Example `agent.toml` (every key optional; shown with its default where it has one):
//! ```toml
//! collector = "https://collector.example.com:7600"
//! state_file = "/var/lib/fleetpulse-agent/state.json"
//! spool_dir = "/var/lib/fleetpulse-agent/spool"
//!
//! [tls]
//! ca_cert = "/etc/fleetpulse-agent/ca.pem"      # trust this CA (else the public web roots)
//! client_cert = "/etc/fleetpulse-agent/client.pem" # optional mutual TLS
//! client_key = "/etc/fleetpulse-agent/client.key"
//!
//! [spool]
//! max_bytes = 67108864        # 64 MiB; drop-oldest beyond it
//!
//! [shipper]
//! batch_max_items = 500       # also capped by the collector's advertised limits
//! batch_max_bytes = 1048576
//! batch_max_age_ms = 2000     # send a partial batch after this long
//! heartbeat_interval_secs = 60
//! compression = "gzip"        # or "none"
//! request_timeout_secs = 30
//! backoff_initial_ms = 500
//! backoff_max_ms = 60000
//!
//! [sources]
//! poll_interval_secs = 30
//! import_ndjson = "/var/lib/fleetpulse-agent/import"  # watched directory of *.ndjson files
//!
//! [collect]
//! platform = "auto"           # OS tools of the running OS; "windows", "macos", "none"
//! # tool paths and channels: see crate::collect
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::spool::{DEFAULT_MAX_BYTES, SpoolConfig};

/// Errors loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

/// The TOML configuration file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub collector: Option<String>,
    pub state_file: Option<PathBuf>,
    pub spool_dir: Option<PathBuf>,
    #[serde(default)]
    pub tls: TlsFile,
    #[serde(default)]
    pub spool: SpoolFile,
    #[serde(default)]
    pub shipper: ShipperFile,
    #[serde(default)]
    pub sources: SourcesFile,
    #[serde(default)]
    pub collect: crate::collect::CollectFile,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpoolFile {
    pub max_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ShipperFile {
    pub batch_max_items: Option<u32>,
    pub batch_max_bytes: Option<u32>,
    pub batch_max_age_ms: Option<u64>,
    pub heartbeat_interval_secs: Option<u64>,
    pub compression: Option<Compression>,
    pub request_timeout_secs: Option<u64>,
    pub backoff_initial_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourcesFile {
    pub poll_interval_secs: Option<u64>,
    pub import_ndjson: Option<PathBuf>,
}

/// Compression of Push requests on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (`grpc-encoding: gzip`): telemetry JSON-ish strings compress 5-10x.
    #[default]
    Gzip,
    /// No compression (for collectors that do not accept gzip, or to save CPU).
    None,
}

impl FileConfig {
    /// Reads and parses a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_toml(path)
    }
}

/// Reads and parses a TOML file into `T`, naming the file in errors.
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|err| ConfigError::Parse {
        path: path.to_owned(),
        reason: err.to_string(),
    })
}

/// Flags shared by the commands that talk to a collector or use the spool. Every flag can also
/// be given as an environment variable and as a key of the TOML file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// TOML configuration file (see the `config` module docs for every key).
    #[arg(long, env = "FLEETPULSE_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Collector gRPC URL, e.g. https://collector.example.com:7600 (http:// only for tests).
    #[arg(long, env = "FLEETPULSE_AGENT_COLLECTOR", value_name = "URL")]
    pub collector: Option<String>,
    /// State file holding the agent's registration and credential (created 0600).
    /// Default: fleetpulse-agent/state.json under the platform's state directory.
    #[arg(long, env = "FLEETPULSE_AGENT_STATE_FILE", value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// Spool directory (durable queue of collected telemetry).
    /// Default: fleetpulse-agent/spool under the platform's state directory.
    #[arg(long, env = "FLEETPULSE_AGENT_SPOOL_DIR", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// PEM file of the CA that signed the collector's certificate (default: public web roots).
    #[arg(long, env = "FLEETPULSE_AGENT_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for collectors that require mutual TLS (with --client-key).
    #[arg(
        long,
        env = "FLEETPULSE_AGENT_CLIENT_CERT",
        value_name = "PEM",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "FLEETPULSE_AGENT_CLIENT_KEY",
        value_name = "PEM",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Spool size cap in bytes; when full the oldest unsent data is dropped (and counted).
    /// Default 67108864 (64 MiB).
    #[arg(long, env = "FLEETPULSE_AGENT_SPOOL_MAX_BYTES", value_name = "BYTES")]
    pub spool_max_bytes: Option<u64>,
    /// Most items per Push (also capped by the collector's advertised limit). Default 500.
    #[arg(long, env = "FLEETPULSE_AGENT_BATCH_MAX_ITEMS", value_name = "N")]
    pub batch_max_items: Option<u32>,
    /// Send a partial batch once its oldest item waited this long, in ms. Default 2000.
    #[arg(long, env = "FLEETPULSE_AGENT_BATCH_MAX_AGE_MS", value_name = "MS")]
    pub batch_max_age_ms: Option<u64>,
    /// Seconds between heartbeats (agent liveness and spool health). Default 60.
    #[arg(
        long,
        env = "FLEETPULSE_AGENT_HEARTBEAT_INTERVAL_SECS",
        value_name = "SECS"
    )]
    pub heartbeat_interval_secs: Option<u64>,
    /// Compression of Push requests. Default gzip.
    #[arg(long, env = "FLEETPULSE_AGENT_COMPRESSION", value_enum)]
    pub compression: Option<Compression>,
}

/// Fully resolved TLS settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsSettings {
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// Fully resolved shipper settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ShipperSettings {
    pub batch_max_items: u32,
    pub batch_max_bytes: u32,
    pub batch_max_age: Duration,
    pub heartbeat_interval: Duration,
    pub compression: Compression,
    pub request_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for ShipperSettings {
    fn default() -> Self {
        Self {
            batch_max_items: 500,
            batch_max_bytes: 1024 * 1024,
            batch_max_age: Duration::from_millis(2000),
            heartbeat_interval: Duration::from_secs(60),
            compression: Compression::Gzip,
            request_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Everything a command needs, merged from flags, environment, file and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub collector: Option<String>,
    pub state_file: PathBuf,
    pub spool_dir: PathBuf,
    pub tls: TlsSettings,
    pub spool: SpoolConfig,
    pub shipper: ShipperSettings,
    pub poll_interval: Duration,
    pub import_ndjson: Option<PathBuf>,
    /// Which OS tools to run, with which paths and channels.
    pub collect: crate::collect::CollectSettings,
}

impl Settings {
    /// Merges flags/environment over the config file (if any) over the defaults.
    pub fn resolve(args: &ConfigArgs) -> Result<Self, ConfigError> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, &file)
    }

    /// [`Settings::resolve`] with an already parsed file.
    pub fn merge(args: &ConfigArgs, file: &FileConfig) -> Result<Self, ConfigError> {
        let base = default_state_dir();
        let mut shipper = ShipperSettings::default();
        let f = &file.shipper;
        shipper.batch_max_items = args
            .batch_max_items
            .or(f.batch_max_items)
            .unwrap_or(shipper.batch_max_items);
        shipper.batch_max_bytes = f.batch_max_bytes.unwrap_or(shipper.batch_max_bytes);
        if let Some(ms) = args.batch_max_age_ms.or(f.batch_max_age_ms) {
            shipper.batch_max_age = Duration::from_millis(ms);
        }
        if let Some(secs) = args.heartbeat_interval_secs.or(f.heartbeat_interval_secs) {
            shipper.heartbeat_interval = Duration::from_secs(secs);
        }
        shipper.compression = args.compression.or(f.compression).unwrap_or_default();
        if let Some(secs) = f.request_timeout_secs {
            shipper.request_timeout = Duration::from_secs(secs);
        }
        if let Some(ms) = f.backoff_initial_ms {
            shipper.backoff_initial = Duration::from_millis(ms);
        }
        if let Some(ms) = f.backoff_max_ms {
            shipper.backoff_max = Duration::from_millis(ms);
        }
        if shipper.batch_max_items == 0 {
            return Err(ConfigError::Invalid {
                field: "batch_max_items",
                reason: "must be at least 1".into(),
            });
        }
        if shipper.batch_max_bytes < 1024 {
            return Err(ConfigError::Invalid {
                field: "shipper.batch_max_bytes",
                reason: "must be at least 1024".into(),
            });
        }
        if shipper.heartbeat_interval.is_zero() {
            return Err(ConfigError::Invalid {
                field: "heartbeat_interval_secs",
                reason: "must be at least 1".into(),
            });
        }
        if shipper.backoff_initial.is_zero() || shipper.backoff_max < shipper.backoff_initial {
            return Err(ConfigError::Invalid {
                field: "shipper.backoff_max_ms",
                reason: "backoff_initial_ms must be > 0 and <= backoff_max_ms".into(),
            });
        }
        let max_bytes = args
            .spool_max_bytes
            .or(file.spool.max_bytes)
            .unwrap_or(DEFAULT_MAX_BYTES);
        if max_bytes < 256 * 1024 {
            return Err(ConfigError::Invalid {
                field: "spool_max_bytes",
                reason: format!("{max_bytes} is below the minimum of 262144"),
            });
        }
        let poll_secs = file.sources.poll_interval_secs.unwrap_or(30);
        if poll_secs == 0 {
            return Err(ConfigError::Invalid {
                field: "sources.poll_interval_secs",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            collector: args.collector.clone().or_else(|| file.collector.clone()),
            state_file: args
                .state_file
                .clone()
                .or_else(|| file.state_file.clone())
                .unwrap_or_else(|| base.join("state.json")),
            spool_dir: args
                .spool_dir
                .clone()
                .or_else(|| file.spool_dir.clone())
                .unwrap_or_else(|| base.join("spool")),
            tls: TlsSettings {
                ca_cert: args.ca_cert.clone().or_else(|| file.tls.ca_cert.clone()),
                client_cert: args
                    .client_cert
                    .clone()
                    .or_else(|| file.tls.client_cert.clone()),
                client_key: args
                    .client_key
                    .clone()
                    .or_else(|| file.tls.client_key.clone()),
            },
            spool: SpoolConfig::with_max_bytes(max_bytes),
            shipper,
            poll_interval: Duration::from_secs(poll_secs),
            import_ndjson: file.sources.import_ndjson.clone(),
            collect: crate::collect::CollectSettings::from_file(&file.collect),
        })
    }
}

/// Where the agent keeps its state by default: `%ProgramData%\Fleetpulse\Agent` on Windows,
/// `/Library/Application Support/Fleetpulse/Agent` on macOS, `/var/lib/fleetpulse-agent` else.
pub fn default_state_dir() -> PathBuf {
    if cfg!(windows) {
        let base = std::env::var_os("ProgramData")
            .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from);
        base.join("Fleetpulse").join("Agent")
    } else if cfg!(target_os = "macos") {
        PathBuf::from("/Library/Application Support/Fleetpulse/Agent")
    } else {
        PathBuf::from("/var/lib/fleetpulse-agent")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_override_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            collector = "https://file:7600"
            spool_dir = "/file/spool"
            [shipper]
            batch_max_items = 100
            heartbeat_interval_secs = 15
            compression = "none"
            [spool]
            max_bytes = 1048576
            [sources]
            import_ndjson = "/import"
            "#,
        )
        .unwrap();
        let args = ConfigArgs {
            collector: Some("http://flag:7600".into()),
            batch_max_items: Some(7),
            ..ConfigArgs::default()
        };
        let settings = Settings::merge(&args, &file).unwrap();
        assert_eq!(settings.collector.as_deref(), Some("http://flag:7600"));
        assert_eq!(settings.spool_dir, PathBuf::from("/file/spool"));
        assert_eq!(settings.shipper.batch_max_items, 7);
        assert_eq!(settings.shipper.heartbeat_interval, Duration::from_secs(15));
        assert_eq!(settings.shipper.compression, Compression::None);
        assert_eq!(settings.spool.max_bytes, 1_048_576);
        assert_eq!(settings.spool.segment_bytes, 65_536);
        assert_eq!(settings.import_ndjson, Some(PathBuf::from("/import")));
        assert_eq!(settings.shipper.batch_max_age, Duration::from_millis(2000));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_their_name() {
        let err = toml::from_str::<FileConfig>("[shipper]\nbatch_max_itemz = 3\n").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `batch_max_itemz`"),
            "{err}"
        );
        let args = ConfigArgs {
            batch_max_items: Some(0),
            ..ConfigArgs::default()
        };
        assert_eq!(
            Settings::merge(&args, &FileConfig::default())
                .unwrap_err()
                .to_string(),
            "batch_max_items: must be at least 1"
        );
    }
}
