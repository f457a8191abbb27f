//! Configuration: flags, `FLEETPULSE_ANALYZER_*` environment variables and a TOML file, in
//! that order of precedence, then documented defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;
use thiserror::Error;

use crate::alerts::config::{AlertSettings, AlertsConfig};
use crate::insights::{InsightSettings, MAX_DEVICE_CAP};
use crate::query::sql::valid_identifier;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Alerts(Box<crate::alerts::config::SettingError>),
}

/// Storage flags shared by `serve`, `migrate` and `key`.
#[derive(Debug, Clone, Default, Args)]
pub struct StorageArgs {
    /// TOML configuration file (keys as the long flags, with '_' for '-').
    #[arg(long, env = "FLEETPULSE_ANALYZER_CONFIG")]
    pub config: Option<PathBuf>,
    /// ClickHouse HTTP URL [default: http://127.0.0.1:8123].
    #[arg(long, env = "FLEETPULSE_ANALYZER_CLICKHOUSE_URL")]
    pub clickhouse_url: Option<String>,
    /// ClickHouse database holding the raw tables and the rollups [default: fleetpulse].
    #[arg(long, env = "FLEETPULSE_ANALYZER_CLICKHOUSE_DATABASE")]
    pub clickhouse_database: Option<String>,
    #[arg(long, env = "FLEETPULSE_ANALYZER_CLICKHOUSE_USER")]
    pub clickhouse_user: Option<String>,
    #[arg(
        long,
        env = "FLEETPULSE_ANALYZER_CLICKHOUSE_PASSWORD",
        hide_env_values = true
    )]
    pub clickhouse_password: Option<String>,
    /// PEM CA bundle for an https:// ClickHouse URL signed by a private CA (e.g. the
    /// organisation's own) [default: the built-in Mozilla roots; certificates are always
    /// verified].
    #[arg(
        long,
        env = "FLEETPULSE_ANALYZER_CLICKHOUSE_CA_FILE",
        value_name = "PEM"
    )]
    pub clickhouse_ca_file: Option<PathBuf>,
    /// Control database for API keys: sqlite://FILE (created if missing) or postgres://...
    /// [default: sqlite://fleetpulse-analyzer.db].
    #[arg(long, env = "FLEETPULSE_ANALYZER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Seconds to wait after a rollup's cutover before backfilling history, covering batches
    /// in flight and collector clock skew [default: 5].
    #[arg(long, env = "FLEETPULSE_ANALYZER_BACKFILL_GRACE_SECS")]
    pub backfill_grace_secs: Option<u64>,
    /// ClickHouse cluster mode: NAME of a cluster in the servers' `remote_servers` (the same
    /// NAME as the collectors'). The rollups are then replicated `*_local` tables filled per
    /// shard by views on the local raw tables, read through Distributed tables under the usual
    /// names; migrations run `ON CLUSTER`. [default: none, a single server]
    #[arg(
        long,
        env = "FLEETPULSE_ANALYZER_CLICKHOUSE_CLUSTER",
        value_name = "NAME"
    )]
    pub clickhouse_cluster: Option<String>,
}

/// Flags of `serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// HTTP listen address; port 0 picks a free port [default: 0.0.0.0:7602].
    #[arg(long, env = "FLEETPULSE_ANALYZER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// PEM certificate chain; with --tls-key serves HTTPS.
    #[arg(long, env = "FLEETPULSE_ANALYZER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "FLEETPULSE_ANALYZER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Written atomically as {"http":"127.0.0.1:PORT"} once the server is ready.
    #[arg(long, env = "FLEETPULSE_ANALYZER_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Device enrollment limit assumed for tenants without one in `device_caps` [default: 5].
    #[arg(long, env = "FLEETPULSE_ANALYZER_DEFAULT_DEVICE_CAP")]
    pub default_device_cap: Option<u32>,
    /// Days without success or state after which a device counts as stale [default: 30].
    #[arg(long, env = "FLEETPULSE_ANALYZER_STALE_DAYS")]
    pub stale_days: Option<u32>,
    /// Seconds between two background refreshes of the insight snapshots (every insight
    /// computed for all tenants and stored; requests read it and say `as_of`); 0 computes every
    /// insight request live [default: 60].
    #[arg(long, env = "FLEETPULSE_ANALYZER_INSIGHTS_REFRESH_SECS")]
    pub insights_refresh_secs: Option<u64>,
    /// Seconds between two passes of the span builder (week spans of the last five weeks and
    /// day spans of the last 9 days that are missing or behind their days or hours are
    /// rebuilt, older day spans dropped; the first pass, at start, covers all history's
    /// weeks); 0 runs no builder: questions then read the spans another analyzer built, when
    /// current, and the days and hours otherwise (which days hold day spans is read from the
    /// span tables every minute) [default: 60].
    #[arg(long, env = "FLEETPULSE_ANALYZER_WEEK_SPANS_INTERVAL_SECS")]
    pub week_spans_interval_secs: Option<u64>,
    /// Base URL people open the dashboard at, used for links in alerts
    /// [default: http://<listen address>].
    #[arg(long, env = "FLEETPULSE_ANALYZER_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Alert evaluation cadence, overriding `[alerts] evaluation_interval` (e.g. 15s).
    #[arg(long, env = "FLEETPULSE_ANALYZER_ALERTS_EVALUATION_INTERVAL")]
    pub alerts_evaluation_interval: Option<String>,
    /// Open HTTP connections at most; beyond, new connections are closed at once [default: 1024].
    #[arg(long, env = "FLEETPULSE_ANALYZER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Seconds for a request's headers to arrive (a half-sent request is closed); also how long
    /// an idle keep-alive connection is kept [default: 10].
    #[arg(long, env = "FLEETPULSE_ANALYZER_HEADER_TIMEOUT_SECS")]
    pub header_timeout_secs: Option<u64>,
}

/// The TOML file's shape.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    clickhouse_url: Option<String>,
    clickhouse_database: Option<String>,
    clickhouse_user: Option<String>,
    clickhouse_password: Option<String>,
    clickhouse_ca_file: Option<PathBuf>,
    clickhouse_cluster: Option<String>,
    database_url: Option<String>,
    backfill_grace_secs: Option<u64>,
    listen: Option<SocketAddr>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    ready_file: Option<PathBuf>,
    default_device_cap: Option<u32>,
    stale_days: Option<u32>,
    insights_refresh_secs: Option<u64>,
    week_spans_interval_secs: Option<u64>,
    public_url: Option<String>,
    max_connections: Option<usize>,
    header_timeout_secs: Option<u64>,
    /// Per-tenant device enrollment limits, e.g. `[device_caps] contoso = 10`.
    #[serde(default)]
    device_caps: BTreeMap<String, u32>,
    /// Spike detection, threshold rules and the alert lifecycle.
    #[serde(default)]
    alerts: AlertsConfig,
    /// Seconds a received event settles before feeds and the export API read it.
    feed_settle_secs: Option<u32>,
    /// Where alerts and failure events are delivered.
    #[serde(default)]
    destinations: Vec<crate::destinations::config::DestinationConfig>,
}

/// Resolved storage settings.
#[derive(Debug, Clone)]
pub struct Storage {
    pub clickhouse_url: String,
    pub clickhouse_database: String,
    pub clickhouse_user: Option<String>,
    pub clickhouse_password: Option<String>,
    /// ClickHouse cluster mode: the cluster's name (validated); `None` for a single server.
    pub clickhouse_cluster: Option<String>,
    pub database_url: String,
    pub backfill_grace: Duration,
    /// The HTTP(S) client every ClickHouse connection goes through (TLS roots from
    /// `clickhouse_ca_file`), built once when the settings are resolved.
    clickhouse_base: clickhouse::Client,
}

impl Storage {
    /// A ClickHouse client (row validation off: 18.16 lacks RowBinaryWithNamesAndTypes).
    pub fn clickhouse(&self) -> clickhouse::Client {
        let mut c = self
            .clickhouse_base
            .clone()
            .with_url(&self.clickhouse_url)
            .with_validation(false);
        if let Some(u) = &self.clickhouse_user {
            c = c.with_user(u);
        }
        if let Some(p) = &self.clickhouse_password {
            c = c.with_password(p);
        }
        if self.clickhouse_cluster.is_some() {
            for (name, value) in fleetpulse_chcluster::SESSION_SETTINGS {
                c = c.with_setting(*name, *value);
            }
        }
        c
    }
}

/// Resolved `serve` settings.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub storage: Storage,
    pub listen: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub ready_file: Option<PathBuf>,
    pub insights: InsightSettings,
    /// Cadence of the week span builder; None runs none (`week_spans_interval_secs = 0`).
    pub week_spans_interval: Option<Duration>,
    /// None: `http://<bound address>`.
    pub public_url: Option<String>,
    pub alerts: AlertSettings,
    /// Listener limits: open connections and header-read timeout.
    pub limits: fleetpulse_net::HttpLimits,
    pub destinations: Vec<crate::destinations::config::Destination>,
    /// Seconds a received event settles before feeds and the export API read it (default 30:
    /// above the collector's writer flush age plus its insert timeout).
    pub feed_settle_secs: u32,
}

fn read_file(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let Some(path) = path else {
        return Ok(FileConfig::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.into(),
        source: Box::new(e),
    })
}

fn storage(a: &StorageArgs, f: &FileConfig) -> Result<Storage, ConfigError> {
    let db = a
        .clickhouse_database
        .clone()
        .or_else(|| f.clickhouse_database.clone())
        .unwrap_or_else(|| "fleetpulse".to_owned());
    if !valid_identifier(&db) {
        return Err(ConfigError::Invalid {
            field: "clickhouse_database",
            reason: format!("{db:?} is not a plain identifier (letters, digits, '_')"),
        });
    }
    let cluster = a
        .clickhouse_cluster
        .clone()
        .or_else(|| f.clickhouse_cluster.clone());
    if let Some(name) = &cluster
        && let Err(reason) = fleetpulse_chcluster::validate_cluster_name(name)
    {
        return Err(ConfigError::Invalid {
            field: "clickhouse_cluster",
            reason,
        });
    }
    let url = a
        .clickhouse_url
        .clone()
        .or_else(|| f.clickhouse_url.clone())
        .unwrap_or_else(|| "http://127.0.0.1:8123".to_owned());
    let ca_file = a
        .clickhouse_ca_file
        .as_ref()
        .or(f.clickhouse_ca_file.as_ref());
    let roots = fleetpulse_net::ClickHouseRoots::for_url(&url, ca_file.map(PathBuf::as_path))
        .map_err(|e| ConfigError::Invalid {
            field: "clickhouse_ca_file",
            reason: e.to_string(),
        })?;
    let clickhouse_base =
        fleetpulse_net::clickhouse_client(&roots).map_err(|e| ConfigError::Invalid {
            field: "clickhouse_ca_file",
            reason: e.to_string(),
        })?;
    Ok(Storage {
        clickhouse_base,
        clickhouse_cluster: cluster,
        clickhouse_url: url,
        clickhouse_database: db,
        clickhouse_user: a
            .clickhouse_user
            .clone()
            .or_else(|| f.clickhouse_user.clone()),
        clickhouse_password: a
            .clickhouse_password
            .clone()
            .or_else(|| f.clickhouse_password.clone()),
        database_url: a
            .database_url
            .clone()
            .or_else(|| f.database_url.clone())
            .unwrap_or_else(|| "sqlite://fleetpulse-analyzer.db".to_owned()),
        backfill_grace: Duration::from_secs(
            a.backfill_grace_secs.or(f.backfill_grace_secs).unwrap_or(5),
        ),
    })
}

impl StorageArgs {
    pub fn resolve(&self) -> Result<Storage, ConfigError> {
        storage(self, &read_file(self.config.as_deref())?)
    }

    /// Storage and the validated `[alerts]` section of the same file, the evaluation interval
    /// overridden by `interval` when given (`alerts backtest` evaluates as `serve` would).
    pub fn resolve_with_alerts(
        &self,
        interval: Option<&str>,
    ) -> Result<(Storage, AlertSettings), ConfigError> {
        let f = read_file(self.config.as_deref())?;
        Ok((storage(self, &f)?, alert_settings(&f, interval)?))
    }
}

fn catalog_categories() -> Vec<String> {
    crate::catalog::Catalog::embedded()
        .categories()
        .iter()
        .map(|c| c.id.clone())
        .collect()
}

/// The file's `[alerts]`, with `--alerts-evaluation-interval` applied, validated.
fn alert_settings(f: &FileConfig, interval: Option<&str>) -> Result<AlertSettings, ConfigError> {
    let mut alerts_cfg = f.alerts.clone();
    if let Some(i) = interval {
        alerts_cfg.evaluation_interval =
            crate::alerts::config::parse_duration(i).map_err(|reason| ConfigError::Invalid {
                field: "alerts_evaluation_interval",
                reason,
            })?;
    }
    alerts_cfg
        .validate(&catalog_categories())
        .map_err(|e| ConfigError::Alerts(Box::new(e)))
}

impl ServeArgs {
    pub fn resolve(&self) -> Result<ServeConfig, ConfigError> {
        let f = read_file(self.storage.config.as_deref())?;
        let tls = match (
            self.tls_cert.clone().or(f.tls_cert.clone()),
            self.tls_key.clone().or(f.tls_key.clone()),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    field: "tls_key",
                    reason: "required with tls_cert".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    field: "tls_cert",
                    reason: "required with tls_key".into(),
                });
            }
        };
        let cap = self
            .default_device_cap
            .or(f.default_device_cap)
            .unwrap_or(5);
        let check_cap = |field: &'static str, c: u32| {
            if (1..=MAX_DEVICE_CAP).contains(&c) {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    field,
                    reason: format!("{c} is outside 1..={MAX_DEVICE_CAP}"),
                })
            }
        };
        check_cap("default_device_cap", cap)?;
        for c in f.device_caps.values() {
            check_cap("device_caps", *c)?;
        }
        let stale_days = self.stale_days.or(f.stale_days).unwrap_or(30);
        if stale_days == 0 || stale_days > 3650 {
            return Err(ConfigError::Invalid {
                field: "stale_days",
                reason: format!("{stale_days} is outside 1..=3650"),
            });
        }
        let refresh_secs = self
            .insights_refresh_secs
            .or(f.insights_refresh_secs)
            .unwrap_or(crate::insights::snapshot::DEFAULT_REFRESH_SECS);
        if refresh_secs > 86_400 {
            return Err(ConfigError::Invalid {
                field: "insights_refresh_secs",
                reason: format!("{refresh_secs} is outside 0..=86400"),
            });
        }
        let spans_secs = self
            .week_spans_interval_secs
            .or(f.week_spans_interval_secs)
            .unwrap_or(crate::rollups::spans::BUILD_EVERY.as_secs());
        if spans_secs > 86_400 {
            return Err(ConfigError::Invalid {
                field: "week_spans_interval_secs",
                reason: format!("{spans_secs} is outside 0..=86400"),
            });
        }
        let week_spans_interval = (spans_secs > 0).then(|| Duration::from_secs(spans_secs));
        let public_url = self.public_url.clone().or(f.public_url.clone());
        if let Some(u) = &public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                field: "public_url",
                reason: format!("{u:?} must start with http:// or https://"),
            });
        }
        let alerts = alert_settings(&f, self.alerts_evaluation_interval.as_deref())?;
        let categories = catalog_categories();
        let max_connections = self.max_connections.or(f.max_connections).unwrap_or(1024);
        let header_timeout_secs = self
            .header_timeout_secs
            .or(f.header_timeout_secs)
            .unwrap_or(10);
        if max_connections == 0 {
            return Err(ConfigError::Invalid {
                field: "max_connections",
                reason: "must be at least 1".into(),
            });
        }
        if header_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                field: "header_timeout_secs",
                reason: "must be at least 1".into(),
            });
        }
        let destinations = crate::destinations::config::validate(&f.destinations, &categories)
            .map_err(|e| ConfigError::Alerts(Box::new(e)))?;
        let feed_settle_secs = f.feed_settle_secs.unwrap_or(30);
        if feed_settle_secs > 3600 {
            return Err(ConfigError::Invalid {
                field: "feed_settle_secs",
                reason: format!("{feed_settle_secs} is outside 0..=3600"),
            });
        }
        Ok(ServeConfig {
            week_spans_interval,
            destinations,
            feed_settle_secs,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_owned()),
            alerts,
            limits: fleetpulse_net::HttpLimits {
                max_connections,
                header_timeout: Duration::from_secs(header_timeout_secs),
            },
            storage: storage(&self.storage, &f)?,
            listen: self
                .listen
                .or(f.listen)
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 7602))),
            tls,
            ready_file: self.ready_file.clone().or(f.ready_file),
            insights: InsightSettings {
                default_device_cap: cap,
                device_caps: f.device_caps,
                stale_days,
                refresh_secs,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags_then_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.toml");
        std::fs::write(&path, "clickhouse_database = \"fp2\"\nlisten = \"127.0.0.1:9\"\n[device_caps]\ncontoso = 10\n")
            .unwrap();
        let mut a = ServeArgs::default();
        a.storage.config = Some(path.clone());
        let c = a.resolve().unwrap();
        assert_eq!(c.storage.clickhouse_database, "fp2");
        assert_eq!(c.listen.to_string(), "127.0.0.1:9");
        assert_eq!(c.insights.device_caps.get("contoso"), Some(&10));
        assert_eq!(c.storage.database_url, "sqlite://fleetpulse-analyzer.db");
        assert_eq!(c.insights.refresh_secs, 60);
        a.insights_refresh_secs = Some(0);
        assert_eq!(a.resolve().unwrap().insights.refresh_secs, 0);
        a.insights_refresh_secs = Some(86_401);
        assert!(matches!(
            a.resolve(),
            Err(ConfigError::Invalid {
                field: "insights_refresh_secs",
                ..
            })
        ));
        a.insights_refresh_secs = None;
        assert_eq!(
            a.resolve().unwrap().week_spans_interval,
            Some(Duration::from_secs(60))
        );
        a.week_spans_interval_secs = Some(0);
        assert_eq!(a.resolve().unwrap().week_spans_interval, None);
        a.week_spans_interval_secs = Some(86_401);
        assert!(matches!(
            a.resolve(),
            Err(ConfigError::Invalid {
                field: "week_spans_interval_secs",
                ..
            })
        ));
        a.week_spans_interval_secs = None;
        a.storage.clickhouse_database = Some("bad-name".into());
        assert!(matches!(
            a.resolve(),
            Err(ConfigError::Invalid {
                field: "clickhouse_database",
                ..
            })
        ));
        std::fs::write(&path, "nope = 1\n").unwrap();
        a.storage.clickhouse_database = None;
        assert!(matches!(a.resolve(), Err(ConfigError::Parse { .. })));
        std::fs::write(&path, "[device_caps]\nx = 16\n").unwrap();
        assert!(matches!(
            a.resolve(),
            Err(ConfigError::Invalid {
                field: "device_caps",
                ..
            })
        ));
    }
}
