//! Collector configuration: one flat set of keys, layered as TOML file < environment < flags.
//!
//! Every key exists in three spellings: `grpc_listen` in the TOML file,
//! `FLEETPULSE_COLLECTOR_GRPC_LISTEN` in the environment and `--grpc-listen` on the command line.
//! clap resolves flag-over-environment; this module applies the result over the file, so the
//! precedence is file < environment < flag. Unknown TOML keys are an error (a typo must not
//! silently fall back to a default).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::grpc::{
    admission::AdmissionConfig,
    limiter::{Rate, check_rate, parse_rate},
};

/// Default gRPC listen address (agents connect here).
pub const DEFAULT_GRPC_LISTEN: &str = "0.0.0.0:7600";
/// Default HTTP listen address (`/healthz`, `/readyz`, `/metrics`).
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:7601";
/// Default ClickHouse HTTP endpoint.
pub const DEFAULT_CLICKHOUSE_URL: &str = "http://127.0.0.1:8123";
/// Default ClickHouse database (created if missing).
pub const DEFAULT_CLICKHOUSE_DATABASE: &str = "fleetpulse";
/// Default control-plane database: a SQLite file in the working directory, created if missing.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://fleetpulse-collector.db";

/// The collector's settings after layering. See the `--help` text of each flag for meanings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC listen address; port 0 picks a free port. Default 0.0.0.0:7600.
    pub grpc_listen: SocketAddr,
    /// HTTP listen address for health and metrics; port 0 picks a free port. Default 0.0.0.0:7601.
    pub http_listen: SocketAddr,
    /// ClickHouse HTTP URL. Default http://127.0.0.1:8123.
    pub clickhouse_url: String,
    /// ClickHouse database holding the raw tables. Default `fleetpulse`.
    pub clickhouse_database: String,
    /// ClickHouse user; the server's default user when absent.
    pub clickhouse_user: Option<String>,
    /// ClickHouse password; none when absent.
    pub clickhouse_password: Option<String>,
    /// PEM CA bundle that an `https://` `clickhouse_url` must chain to (a private CA); the
    /// built-in Mozilla roots when absent. Certificates are always verified.
    pub clickhouse_ca_file: Option<PathBuf>,
    /// Insert compression: `lz4`, `none`, or `auto` (none when ClickHouse is on a loopback
    /// address, where compressing only costs CPU on both sides; lz4 otherwise). Default auto.
    pub clickhouse_compression: Compression,
    /// ClickHouse cluster mode: the name of a cluster in the servers' `remote_servers`. The raw
    /// tables are then replicated local tables (`*_local`, ReplicatedMergeTree with
    /// `{shard}`/`{replica}` macros) behind Distributed tables of the usual names, created
    /// `ON CLUSTER`, and inserts are synchronous. Single server when absent (the default).
    pub clickhouse_cluster: Option<String>,
    /// Control-plane database (tokens, agents, batch ledger): `sqlite://FILE` or `postgres://...`.
    pub database_url: String,
    /// PEM certificate chain for gRPC TLS; plaintext gRPC when absent.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle; when set, agents must present a client certificate signed by it (mTLS).
    pub tls_client_ca: Option<PathBuf>,
    /// File written atomically once the collector is ready: `{"grpc":"ADDR","http":"ADDR"}`.
    pub ready_file: Option<PathBuf>,
    /// Maximum items in one Push. Default 5000.
    pub max_batch_items: u32,
    /// Maximum encoded bytes of one Push. Default 4 MiB.
    pub max_batch_bytes: u32,
    /// How far in the future a timestamp may be, in seconds. Default 86400 (24 h).
    pub max_future_skew_secs: u32,
    /// Days of data kept in ClickHouse; also the maximum age of an accepted item. Default 90.
    pub retention_days: u32,
    /// The writer flushes once this many rows are pending. Default 100000.
    pub flush_rows: usize,
    /// The writer flushes pending rows at least this often, in milliseconds. Default 200.
    pub flush_interval_ms: u64,
    /// Writer flushes (duplicate lookups plus inserts) in flight at once. Default 2.
    pub concurrent_flushes: u32,
    /// Rows accepted but not yet confirmed by ClickHouse; beyond this Push answers UNAVAILABLE.
    /// Default 400000.
    pub max_pending_rows: usize,
    /// Timeout of one ClickHouse insert or query, in seconds. Default 10.
    pub clickhouse_timeout_secs: u64,
    /// How long a Push owns its batch in the ledger before another attempt may take it over,
    /// in seconds. Must exceed twice the ClickHouse timeout. Default 30.
    pub batch_lease_secs: u64,
    /// Hours a batch's ledger row is kept to answer a resend from the control database; a
    /// later resend is verified against ClickHouse instead (`control::ledger_compaction`).
    /// The ledger holds about pushes/s x this x 3600 rows. 1..=24 x retention_days. Default 24.
    pub ledger_keep_hours: u32,
    /// Open gRPC connections at most; beyond, new connections are closed at once. Default 20000.
    pub grpc_max_connections: usize,
    /// Concurrent streams (calls) per gRPC connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS).
    /// Default 16.
    pub grpc_max_concurrent_streams: u32,
    /// Time for the whole body of a Push to arrive once its headers are in, in seconds; a
    /// stalled or slow stream is answered DEADLINE_EXCEEDED and closed. Default 30.
    pub grpc_body_timeout_secs: u64,
    /// Time for any gRPC call from its headers to its answer, in seconds. Default 90.
    pub grpc_request_timeout_secs: u64,
    /// Interval of HTTP/2 keepalive pings on idle gRPC connections, in seconds. Default 30.
    pub grpc_keepalive_interval_secs: u64,
    /// A connection whose keepalive ping is not answered within this many seconds is closed.
    /// Default 10.
    pub grpc_keepalive_timeout_secs: u64,
    /// Open connections of the HTTP listener (health, metrics) at most. Default 64.
    pub http_max_connections: usize,
    /// Time for an HTTP request's headers to arrive, in seconds; also how long an idle
    /// keep-alive connection waits for its next request. Default 10.
    pub http_header_timeout_secs: u64,
    /// Longest time a revoked agent credential may still be accepted, in milliseconds: verified
    /// credentials are kept in memory while a poll of the revocation counter (every quarter of
    /// this) is younger than this. 0 checks the database on every request. Default 2000.
    pub credential_cache_max_delay_ms: u64,
    /// Agent credentials kept in memory at most. Default 200000.
    pub credential_cache_max_entries: usize,
    /// Registrations per enrollment token: `"RATE:BURST"` per second, `"0"` = off. Default
    /// 50:100 (a 10k-device fleet enrolling at once takes about 3.5 minutes; agents retry after
    /// the hint).
    pub register_token_rate: Rate,
    /// Registrations per source address (IPv6: per /64). Default 50:100.
    pub register_source_rate: Rate,
    /// Pushes per agent. Default 20:100 (an agent sends one batch at a time).
    pub agent_pushes_rate: Rate,
    /// Items per agent; the burst must hold a full batch. Default 50000:100000.
    pub agent_events_rate: Rate,
    /// Pushes per tenant (all its agents). Default 5000:10000.
    pub tenant_pushes_rate: Rate,
    /// Items per tenant; the burst must hold a full batch. Default 500000:1000000.
    pub tenant_events_rate: Rate,
    /// Keys (tokens, sources, agents, tenants) each rate limiter tracks at most; idle ones are
    /// evicted, newcomers beyond share one key. Default 100000.
    pub limiter_max_keys: usize,
    /// Push bodies being read and processed at once, in wire (plus inflated) bytes; beyond,
    /// Push answers UNAVAILABLE with a retry hint. Default 268435456 (256 MiB).
    pub max_inflight_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grpc_listen: parse_default_addr(DEFAULT_GRPC_LISTEN),
            http_listen: parse_default_addr(DEFAULT_HTTP_LISTEN),
            clickhouse_url: DEFAULT_CLICKHOUSE_URL.to_owned(),
            clickhouse_database: DEFAULT_CLICKHOUSE_DATABASE.to_owned(),
            clickhouse_user: None,
            clickhouse_password: None,
            clickhouse_ca_file: None,
            clickhouse_compression: Compression::Auto,
            clickhouse_cluster: None,
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            ready_file: None,
            max_batch_items: 5000,
            max_batch_bytes: 4 * 1024 * 1024,
            max_future_skew_secs: 24 * 3600,
            retention_days: 90,
            flush_rows: 100_000,
            flush_interval_ms: 200,
            concurrent_flushes: 2,
            max_pending_rows: 400_000,
            clickhouse_timeout_secs: 10,
            batch_lease_secs: 30,
            ledger_keep_hours: 24,
            grpc_max_connections: 20_000,
            grpc_max_concurrent_streams: 16,
            grpc_body_timeout_secs: 30,
            grpc_request_timeout_secs: 90,
            grpc_keepalive_interval_secs: 30,
            grpc_keepalive_timeout_secs: 10,
            http_max_connections: 64,
            http_header_timeout_secs: 10,
            credential_cache_max_delay_ms: 2000,
            credential_cache_max_entries: 200_000,
            register_token_rate: Rate::new(50, 100),
            register_source_rate: Rate::new(50, 100),
            agent_pushes_rate: Rate::new(20, 100),
            agent_events_rate: Rate::new(50_000, 100_000),
            tenant_pushes_rate: Rate::new(5_000, 10_000),
            tenant_events_rate: Rate::new(500_000, 1_000_000),
            limiter_max_keys: 100_000,
            max_inflight_bytes: 256 * 1024 * 1024,
        }
    }
}

/// How inserts are compressed on the way to ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// `none` for a loopback ClickHouse URL, `lz4` otherwise.
    Auto,
    Lz4,
    None,
}

impl Compression {
    /// Whether inserts to `url` are LZ4-compressed.
    pub fn use_lz4(self, url: &str) -> bool {
        match self {
            Compression::Lz4 => true,
            Compression::None => false,
            Compression::Auto => {
                let host = url
                    .split_once("://")
                    .map_or(url, |(_, rest)| rest)
                    .split(['/', '?'])
                    .next()
                    .unwrap_or("");
                let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
                let host = if let Some(v6) = host.strip_prefix('[') {
                    v6.split(']').next().unwrap_or("")
                } else {
                    host.split(':').next().unwrap_or("")
                };
                let loopback = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                !loopback
            }
        }
    }
}

/// Parses one of the address constants above; they are literals checked by a unit test.
fn parse_default_addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads `file` (when given) over the defaults, applies `overrides`, then checks the result.
    pub fn load(
        file: Option<&Path>,
        overrides: impl FnOnce(&mut Config),
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::from_toml(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?
            }
            None => Config::default(),
        };
        overrides(&mut config);
        config.check()?;
        Ok(config)
    }

    /// Parses TOML text over the defaults (missing keys keep their default).
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks cross-field rules that serde cannot express.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if let Err(e) = crate::store::validate_identifier(&self.clickhouse_database) {
            return invalid(format!("clickhouse_database: {e}"));
        }
        if let Some(cluster) = &self.clickhouse_cluster
            && let Err(e) = fleetpulse_chcluster::validate_cluster_name(cluster)
        {
            return invalid(format!("clickhouse_cluster: {e}"));
        }
        if !(self.database_url.starts_with("sqlite:")
            || self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://"))
        {
            return invalid(format!(
                "database_url: {:?} is neither sqlite:... nor postgres://...",
                self.database_url
            ));
        }
        if self.max_batch_items == 0 {
            return invalid("max_batch_items: must be at least 1".into());
        }
        if self.max_batch_bytes < 1024 {
            return invalid(format!(
                "max_batch_bytes: {} is below the minimum of 1024",
                self.max_batch_bytes
            ));
        }
        if self.max_batch_bytes > 256 * 1024 * 1024 {
            return invalid(format!(
                "max_batch_bytes: {} is above the maximum of 268435456 (256 MiB)",
                self.max_batch_bytes
            ));
        }
        if self.retention_days == 0 {
            return invalid("retention_days: must be at least 1".into());
        }
        if self.retention_days > 36500 {
            return invalid(format!(
                "retention_days: {} is above the maximum of 36500",
                self.retention_days
            ));
        }
        if self.flush_rows == 0 {
            return invalid("flush_rows: must be at least 1".into());
        }
        if self.flush_interval_ms == 0 {
            return invalid("flush_interval_ms: must be at least 1".into());
        }
        if !(1..=64).contains(&self.concurrent_flushes) {
            return invalid(format!(
                "concurrent_flushes: {} is outside 1..=64",
                self.concurrent_flushes
            ));
        }
        if self.max_pending_rows < self.max_batch_items as usize {
            return invalid(format!(
                "max_pending_rows: {} is below max_batch_items ({}); one batch could never fit",
                self.max_pending_rows, self.max_batch_items
            ));
        }
        if self.clickhouse_timeout_secs == 0 {
            return invalid("clickhouse_timeout_secs: must be at least 1".into());
        }
        if self.batch_lease_secs < 2 * self.clickhouse_timeout_secs + 5 {
            return invalid(format!(
                "batch_lease_secs: {} must be at least 2 * clickhouse_timeout_secs + 5 = {} \
                 (a lease must outlive every write attempt made under it)",
                self.batch_lease_secs,
                2 * self.clickhouse_timeout_secs + 5
            ));
        }
        if self.ledger_keep_hours == 0 {
            return invalid(
                "ledger_keep_hours: must be at least 1 (resends within the hour are the \
                 common case and must be answered from the ledger)"
                    .into(),
            );
        }
        if self.ledger_keep_hours > self.retention_days.saturating_mul(24) {
            return invalid(format!(
                "ledger_keep_hours: {} is above 24 x retention_days = {} (a row is useless \
                 once its items are past the retention)",
                self.ledger_keep_hours,
                self.retention_days.saturating_mul(24)
            ));
        }
        for (name, value) in [
            ("grpc_max_connections", self.grpc_max_connections as u64),
            (
                "grpc_max_concurrent_streams",
                u64::from(self.grpc_max_concurrent_streams),
            ),
            ("grpc_body_timeout_secs", self.grpc_body_timeout_secs),
            (
                "grpc_keepalive_interval_secs",
                self.grpc_keepalive_interval_secs,
            ),
            (
                "grpc_keepalive_timeout_secs",
                self.grpc_keepalive_timeout_secs,
            ),
            ("http_max_connections", self.http_max_connections as u64),
            ("http_header_timeout_secs", self.http_header_timeout_secs),
        ] {
            if value == 0 {
                return invalid(format!("{name}: must be at least 1"));
            }
        }
        if self.grpc_request_timeout_secs <= self.grpc_body_timeout_secs {
            return invalid(format!(
                "grpc_request_timeout_secs: {} must exceed grpc_body_timeout_secs ({}): a call \
                 needs time to be stored after its body arrived",
                self.grpc_request_timeout_secs, self.grpc_body_timeout_secs
            ));
        }
        for (name, rate) in [
            ("register_token_rate", &self.register_token_rate),
            ("register_source_rate", &self.register_source_rate),
            ("agent_pushes_rate", &self.agent_pushes_rate),
            ("agent_events_rate", &self.agent_events_rate),
            ("tenant_pushes_rate", &self.tenant_pushes_rate),
            ("tenant_events_rate", &self.tenant_events_rate),
        ] {
            if let Err(e) = check_rate(rate) {
                return invalid(format!("{name}: {e}"));
            }
        }
        for (name, rate) in [
            ("agent_events_rate", &self.agent_events_rate),
            ("tenant_events_rate", &self.tenant_events_rate),
        ] {
            if !rate.is_off() && rate.burst < self.max_batch_items {
                return invalid(format!(
                    "{name}: the burst {} is below max_batch_items ({}); a full batch could \
                     never pass",
                    rate.burst, self.max_batch_items
                ));
            }
        }
        if self.limiter_max_keys == 0 {
            return invalid("limiter_max_keys: must be at least 1".into());
        }
        let whole_body = self.grpc_decode_limit() + self.max_batch_bytes as usize + 5;
        if self.max_inflight_bytes < whole_body {
            return invalid(format!(
                "max_inflight_bytes: {} is below {whole_body} (the largest body on the wire plus \
                 its inflated copy); one batch could never be read",
                self.max_inflight_bytes
            ));
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return invalid("tls_cert is set but tls_key is not".into()),
            (None, Some(_)) => return invalid("tls_key is set but tls_cert is not".into()),
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return invalid("tls_client_ca requires tls_cert and tls_key (mTLS needs TLS)".into());
        }
        if let Err(e) = fleetpulse_net::ClickHouseRoots::check_url(
            &self.clickhouse_url,
            self.clickhouse_ca_file.as_deref(),
        ) {
            return invalid(format!("clickhouse_ca_file: {e}"));
        }
        Ok(())
    }

    pub fn credential_cache_max_delay(&self) -> Duration {
        Duration::from_millis(self.credential_cache_max_delay_ms)
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    pub fn clickhouse_timeout(&self) -> Duration {
        Duration::from_secs(self.clickhouse_timeout_secs)
    }

    pub fn batch_lease(&self) -> Duration {
        Duration::from_secs(self.batch_lease_secs)
    }

    /// How long ledger rows are kept (see `ledger_keep_hours`).
    pub fn ledger_keep(&self) -> Duration {
        Duration::from_secs(u64::from(self.ledger_keep_hours) * 3600)
    }

    pub fn grpc_body_timeout(&self) -> Duration {
        Duration::from_secs(self.grpc_body_timeout_secs)
    }

    pub fn grpc_request_timeout(&self) -> Duration {
        Duration::from_secs(self.grpc_request_timeout_secs)
    }

    pub fn grpc_keepalive_interval(&self) -> Duration {
        Duration::from_secs(self.grpc_keepalive_interval_secs)
    }

    pub fn grpc_keepalive_timeout(&self) -> Duration {
        Duration::from_secs(self.grpc_keepalive_timeout_secs)
    }

    pub fn http_header_timeout(&self) -> Duration {
        Duration::from_secs(self.http_header_timeout_secs)
    }

    /// The admission control settings.
    pub fn admission(&self) -> AdmissionConfig {
        AdmissionConfig {
            register_per_token: self.register_token_rate,
            register_per_source: self.register_source_rate,
            agent_pushes: self.agent_pushes_rate,
            agent_events: self.agent_events_rate,
            tenant_pushes: self.tenant_pushes_rate,
            tenant_events: self.tenant_events_rate,
            max_keys: self.limiter_max_keys,
            max_inflight_bytes: self.max_inflight_bytes,
            max_pending_rows: self.max_pending_rows,
        }
    }

    /// The oldest accepted timestamp, as an age: the retention.
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(u64::from(self.retention_days) * 86_400)
    }

    /// tonic's decode limit: twice `max_batch_bytes` (at least 1 MiB above it), so an oversized
    /// batch is decoded and answered with our RESOURCE_EXHAUSTED message naming the limit and
    /// the actual size, while a huge one is refused by tonic (OUT_OF_RANGE, naming the limit)
    /// from its length prefix, before it is buffered.
    pub fn grpc_decode_limit(&self) -> usize {
        let max = self.max_batch_bytes as usize;
        max.saturating_mul(2).max(max + 1024 * 1024)
    }
}

/// Flags shared by `serve` and `migrate`: every configuration key.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML file with any of the keys below in snake_case (e.g. `grpc_listen = "0.0.0.0:7600"`).
    /// Precedence: file < environment < flag. Unknown keys are an error.
    #[arg(long, env = "FLEETPULSE_COLLECTOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address the gRPC ingest service listens on; port 0 picks a free port (see --ready-file).
    /// [default: 0.0.0.0:7600]
    #[arg(long, env = "FLEETPULSE_COLLECTOR_GRPC_LISTEN", value_name = "ADDR")]
    pub grpc_listen: Option<SocketAddr>,

    /// Address of the HTTP server for /healthz, /readyz and /metrics; port 0 picks a free port.
    /// [default: 0.0.0.0:7601]
    #[arg(long, env = "FLEETPULSE_COLLECTOR_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,

    /// ClickHouse HTTP interface URL. [default: http://127.0.0.1:8123]
    #[arg(long, env = "FLEETPULSE_COLLECTOR_CLICKHOUSE_URL", value_name = "URL")]
    pub clickhouse_url: Option<String>,

    /// ClickHouse database for the raw tables; created if missing. Letters, digits and `_`,
    /// not starting with a digit. [default: fleetpulse]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_CLICKHOUSE_DATABASE",
        value_name = "NAME"
    )]
    pub clickhouse_database: Option<String>,

    /// ClickHouse user. [default: the server's default user]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_CLICKHOUSE_USER",
        value_name = "USER"
    )]
    pub clickhouse_user: Option<String>,

    /// ClickHouse password (prefer the environment variable over the flag). [default: none]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_CLICKHOUSE_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub clickhouse_password: Option<String>,

    /// PEM CA bundle for an `https://` ClickHouse URL signed by a private CA (e.g. the
    /// organisation's own). [default: the built-in Mozilla roots; certificates are always
    /// verified]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_CLICKHOUSE_CA_FILE",
        value_name = "PEM"
    )]
    pub clickhouse_ca_file: Option<PathBuf>,

    /// Insert compression: `lz4`, `none`, or `auto` = none when ClickHouse is on a loopback
    /// address (compressing only costs CPU on both ends there), lz4 otherwise. [default: auto]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_CLICKHOUSE_COMPRESSION",
        value_name = "MODE"
    )]
    pub clickhouse_compression: Option<Compression>,

    /// ClickHouse cluster mode: NAME of a cluster in the servers' `remote_servers` (2 shards x 2
    /// replicas, say, with ZooKeeper or ClickHouse Keeper and `{shard}`/`{replica}` macros).
    /// Migrations then create replicated `*_local` tables and Distributed tables under the
    /// usual names, `ON CLUSTER`; inserts go through the Distributed tables synchronously.
    /// Every collector and analyzer of a deployment must use the same NAME. [default: none,
    /// a single server]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_CLICKHOUSE_CLUSTER",
        value_name = "NAME"
    )]
    pub clickhouse_cluster: Option<String>,

    /// Control-plane database holding enrollment tokens, agent credentials (hashed) and the batch
    /// ledger: `sqlite://FILE` (created if missing) or `postgres://USER:PASS@HOST/DB`. Several
    /// collectors may share one PostgreSQL database. [default: sqlite://fleetpulse-collector.db]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// PEM certificate chain: serve gRPC over TLS (needs --tls-key). [default: plaintext]
    #[arg(long, env = "FLEETPULSE_COLLECTOR_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key matching --tls-cert.
    #[arg(long, env = "FLEETPULSE_COLLECTOR_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: require every gRPC client to present a certificate signed by it (mTLS).
    /// The agent credential is still required. [default: no client certificate required]
    #[arg(long, env = "FLEETPULSE_COLLECTOR_TLS_CLIENT_CA", value_name = "PEM")]
    pub tls_client_ca: Option<PathBuf>,

    /// Once migrations ran and both listeners are bound, write this file atomically with the
    /// bound addresses as JSON: {"grpc":"127.0.0.1:PORT","http":"127.0.0.1:PORT"}
    /// (an unspecified listen IP is written as the loopback address). [default: not written]
    #[arg(long, env = "FLEETPULSE_COLLECTOR_READY_FILE", value_name = "PATH")]
    pub ready_file: Option<PathBuf>,

    /// Maximum number of items in one Push; larger batches get RESOURCE_EXHAUSTED.
    /// [default: 5000]
    #[arg(long, env = "FLEETPULSE_COLLECTOR_MAX_BATCH_ITEMS", value_name = "N")]
    pub max_batch_items: Option<u32>,

    /// Maximum encoded size of one Push in bytes; larger batches get RESOURCE_EXHAUSTED.
    /// [default: 4194304 (4 MiB)]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_MAX_BATCH_BYTES",
        value_name = "BYTES"
    )]
    pub max_batch_bytes: Option<u32>,

    /// How far ahead of the collector's clock a timestamp may be, in seconds; items beyond are
    /// rejected. [default: 86400 (24 h)]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_MAX_FUTURE_SKEW_SECS",
        value_name = "SECS"
    )]
    pub max_future_skew_secs: Option<u32>,

    /// Days of data kept: daily partitions older than this are dropped hourly, and items older
    /// than this are rejected on Push. [default: 90]
    #[arg(long, env = "FLEETPULSE_COLLECTOR_RETENTION_DAYS", value_name = "DAYS")]
    pub retention_days: Option<u32>,

    /// The ClickHouse writer flushes as soon as this many rows are pending. [default: 100000]
    #[arg(long, env = "FLEETPULSE_COLLECTOR_FLUSH_ROWS", value_name = "ROWS")]
    pub flush_rows: Option<usize>,

    /// The writer flushes pending rows at least this often (also the longest a small Push
    /// waits for its acknowledgement). [default: 200]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_FLUSH_INTERVAL_MS",
        value_name = "MS"
    )]
    pub flush_interval_ms: Option<u64>,

    /// Writer flushes in flight at once (each: the duplicate lookups, then the inserts); more
    /// keep ClickHouse busy while pushes wait on a slow flush. [default: 2]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_CONCURRENT_FLUSHES",
        value_name = "N"
    )]
    pub concurrent_flushes: Option<u32>,

    /// Rows handed to the writer but not yet confirmed by ClickHouse; when full, Push answers
    /// UNAVAILABLE at once instead of buffering. [default: 400000]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_MAX_PENDING_ROWS",
        value_name = "ROWS"
    )]
    pub max_pending_rows: Option<usize>,

    /// Timeout of each ClickHouse insert and query, in seconds. [default: 10]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_CLICKHOUSE_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub clickhouse_timeout_secs: Option<u64>,

    /// How long one Push owns its batch in the ledger before a retry may take it over (after a
    /// crash), in seconds; at least 2 * clickhouse-timeout-secs + 5. [default: 30]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_BATCH_LEASE_SECS",
        value_name = "SECS"
    )]
    pub batch_lease_secs: Option<u64>,

    /// Hours a batch's ledger row is kept to answer a resend from the control database; older
    /// rows are compacted and a later resend is verified against ClickHouse. Size the control
    /// database for about pushes/s x hours x 3600 rows. [default: 24]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_LEDGER_KEEP_HOURS",
        value_name = "HOURS"
    )]
    pub ledger_keep_hours: Option<u32>,

    /// Open gRPC connections at most; a connection beyond is closed at once and the agent
    /// retries with backoff. [default: 20000]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_GRPC_MAX_CONNECTIONS",
        value_name = "N"
    )]
    pub grpc_max_connections: Option<usize>,

    /// Concurrent calls per gRPC connection (HTTP/2 max concurrent streams); an agent needs one.
    /// [default: 16]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_GRPC_MAX_CONCURRENT_STREAMS",
        value_name = "N"
    )]
    pub grpc_max_concurrent_streams: Option<u32>,

    /// Seconds for the body of a Push to arrive after its headers; a stalled or slow stream is
    /// answered DEADLINE_EXCEEDED and its buffer freed. [default: 30]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_GRPC_BODY_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub grpc_body_timeout_secs: Option<u64>,

    /// Seconds for any gRPC call from headers to answer; must exceed --grpc-body-timeout-secs.
    /// [default: 90]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_GRPC_REQUEST_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub grpc_request_timeout_secs: Option<u64>,

    /// Seconds between HTTP/2 keepalive pings on gRPC connections (finds dead peers behind
    /// NATs and load balancers). [default: 30]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_GRPC_KEEPALIVE_INTERVAL_SECS",
        value_name = "SECS"
    )]
    pub grpc_keepalive_interval_secs: Option<u64>,

    /// Seconds a keepalive ping may go unanswered before the connection is closed. [default: 10]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_GRPC_KEEPALIVE_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub grpc_keepalive_timeout_secs: Option<u64>,

    /// Open connections of the HTTP listener (/healthz, /readyz, /metrics) at most.
    /// [default: 64]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_HTTP_MAX_CONNECTIONS",
        value_name = "N"
    )]
    pub http_max_connections: Option<usize>,

    /// Seconds for an HTTP request's headers to arrive (a half-sent request is closed); also
    /// how long an idle keep-alive connection is kept. [default: 10]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_HTTP_HEADER_TIMEOUT_SECS",
        value_name = "SECS"
    )]
    pub http_header_timeout_secs: Option<u64>,

    /// Longest time, in milliseconds, a revoked agent credential may still be accepted by this
    /// collector: verified credentials are kept in memory while the revocation counter in the
    /// control database (polled every quarter of this) is fresh. 0 reads the database on every
    /// request. [default: 2000]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_CREDENTIAL_CACHE_MAX_DELAY_MS",
        value_name = "MS"
    )]
    pub credential_cache_max_delay_ms: Option<u64>,

    /// Agent credentials kept in memory at most (about 250 bytes each). [default: 200000]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_CREDENTIAL_CACHE_MAX_ENTRIES",
        value_name = "N"
    )]
    pub credential_cache_max_entries: Option<usize>,
    /// Registrations per enrollment token, as RATE:BURST per second (`0` = off); beyond, Register
    /// answers RESOURCE_EXHAUSTED with a retry-after-ms hint that agents honour. Checked before
    /// the token's secret. [default: 50:100; 10k devices enrolling at once take ~3.5 min]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_REGISTER_TOKEN_RATE",
        value_name = "RATE:BURST",
        value_parser = parse_rate
    )]
    pub register_token_rate: Option<Rate>,

    /// Registrations per source address (IPv6: per /64), as RATE:BURST per second (`0` = off).
    /// Behind a proxy every agent shares its address: raise it there. [default: 50:100]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_REGISTER_SOURCE_RATE",
        value_name = "RATE:BURST",
        value_parser = parse_rate
    )]
    pub register_source_rate: Option<Rate>,

    /// Pushes per agent, as RATE:BURST per second (`0` = off); beyond, RESOURCE_EXHAUSTED with
    /// retry-after-ms, checked before the body is read. [default: 20:100]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_AGENT_PUSHES_RATE",
        value_name = "RATE:BURST",
        value_parser = parse_rate
    )]
    pub agent_pushes_rate: Option<Rate>,

    /// Items per agent, as RATE:BURST per second (`0` = off; the burst must hold a full batch),
    /// checked before the body is decoded. [default: 50000:100000]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_AGENT_EVENTS_RATE",
        value_name = "RATE:BURST",
        value_parser = parse_rate
    )]
    pub agent_events_rate: Option<Rate>,

    /// Pushes per tenant (all its agents together), as RATE:BURST per second (`0` = off).
    /// [default: 5000:10000]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_TENANT_PUSHES_RATE",
        value_name = "RATE:BURST",
        value_parser = parse_rate
    )]
    pub tenant_pushes_rate: Option<Rate>,

    /// Items per tenant, as RATE:BURST per second (`0` = off; the burst must hold a full
    /// batch): one tenant flooding cannot take the whole collector. [default: 500000:1000000]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_TENANT_EVENTS_RATE",
        value_name = "RATE:BURST",
        value_parser = parse_rate
    )]
    pub tenant_events_rate: Option<Rate>,

    /// Keys each rate limiter tracks at most (tokens, sources, agents, tenants); idle keys are
    /// evicted every 10 s, and newcomers beyond the cap share one key, so memory stays bounded
    /// under a flood of distinct sources. [default: 100000]
    #[arg(long, env = "FLEETPULSE_COLLECTOR_LIMITER_MAX_KEYS", value_name = "N")]
    pub limiter_max_keys: Option<usize>,

    /// Bytes of Push bodies being read and processed at once (wire bytes plus the inflated copy
    /// of gzip bodies); beyond, Push answers UNAVAILABLE with retry-after-ms, so memory stays
    /// bounded under any number of senders. [default: 268435456 (256 MiB)]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_MAX_INFLIGHT_BYTES",
        value_name = "BYTES"
    )]
    pub max_inflight_bytes: Option<usize>,
}

impl ConfigArgs {
    /// Layers file < environment/flags and checks the result.
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.config.as_deref(), |c| self.apply(c))
    }

    fn apply(&self, c: &mut Config) {
        fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        fn set_opt<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
            if src.is_some() {
                dst.clone_from(src);
            }
        }
        set(&mut c.grpc_listen, &self.grpc_listen);
        set(&mut c.http_listen, &self.http_listen);
        set(&mut c.clickhouse_url, &self.clickhouse_url);
        set(&mut c.clickhouse_database, &self.clickhouse_database);
        set_opt(&mut c.clickhouse_user, &self.clickhouse_user);
        set_opt(&mut c.clickhouse_password, &self.clickhouse_password);
        set_opt(&mut c.clickhouse_ca_file, &self.clickhouse_ca_file);
        set(&mut c.clickhouse_compression, &self.clickhouse_compression);
        set_opt(&mut c.clickhouse_cluster, &self.clickhouse_cluster);
        set(&mut c.database_url, &self.database_url);
        set_opt(&mut c.tls_cert, &self.tls_cert);
        set_opt(&mut c.tls_key, &self.tls_key);
        set_opt(&mut c.tls_client_ca, &self.tls_client_ca);
        set_opt(&mut c.ready_file, &self.ready_file);
        set(&mut c.max_batch_items, &self.max_batch_items);
        set(&mut c.max_batch_bytes, &self.max_batch_bytes);
        set(&mut c.max_future_skew_secs, &self.max_future_skew_secs);
        set(&mut c.retention_days, &self.retention_days);
        set(&mut c.flush_rows, &self.flush_rows);
        set(&mut c.flush_interval_ms, &self.flush_interval_ms);
        set(&mut c.concurrent_flushes, &self.concurrent_flushes);
        set(&mut c.max_pending_rows, &self.max_pending_rows);
        set(
            &mut c.clickhouse_timeout_secs,
            &self.clickhouse_timeout_secs,
        );
        set(&mut c.batch_lease_secs, &self.batch_lease_secs);
        set(&mut c.ledger_keep_hours, &self.ledger_keep_hours);
        set(&mut c.grpc_max_connections, &self.grpc_max_connections);
        set(
            &mut c.grpc_max_concurrent_streams,
            &self.grpc_max_concurrent_streams,
        );
        set(&mut c.grpc_body_timeout_secs, &self.grpc_body_timeout_secs);
        set(
            &mut c.credential_cache_max_delay_ms,
            &self.credential_cache_max_delay_ms,
        );
        set(
            &mut c.credential_cache_max_entries,
            &self.credential_cache_max_entries,
        );
        set(
            &mut c.grpc_request_timeout_secs,
            &self.grpc_request_timeout_secs,
        );
        set(
            &mut c.grpc_keepalive_interval_secs,
            &self.grpc_keepalive_interval_secs,
        );
        set(
            &mut c.grpc_keepalive_timeout_secs,
            &self.grpc_keepalive_timeout_secs,
        );
        set(&mut c.http_max_connections, &self.http_max_connections);
        set(
            &mut c.http_header_timeout_secs,
            &self.http_header_timeout_secs,
        );
        set(&mut c.register_token_rate, &self.register_token_rate);
        set(&mut c.register_source_rate, &self.register_source_rate);
        set(&mut c.agent_pushes_rate, &self.agent_pushes_rate);
        set(&mut c.agent_events_rate, &self.agent_events_rate);
        set(&mut c.tenant_pushes_rate, &self.tenant_pushes_rate);
        set(&mut c.tenant_events_rate, &self.tenant_events_rate);
        set(&mut c.limiter_max_keys, &self.limiter_max_keys);
        set(&mut c.max_inflight_bytes, &self.max_inflight_bytes);
    }
}

/// Flags of the administrative commands (`token`, `agent`): only the control database matters.
#[derive(Debug, Clone, Default, Args)]
pub struct ControlArgs {
    /// TOML config file (same format as for `serve`); only `database_url` is used here.
    #[arg(long, env = "FLEETPULSE_COLLECTOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Control-plane database: `sqlite://FILE` (created if missing) or `postgres://...`.
    /// [default: sqlite://fleetpulse-collector.db]
    #[arg(
        long,
        env = "FLEETPULSE_COLLECTOR_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

impl ControlArgs {
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.config.as_deref(), |c| {
            if let Some(url) = &self.database_url {
                c.database_url.clone_from(url);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ConfigArgs,
    }

    #[test]
    fn default_address_constants_parse() {
        assert_eq!(
            DEFAULT_GRPC_LISTEN.parse::<SocketAddr>().unwrap(),
            Config::default().grpc_listen
        );
        assert_eq!(
            DEFAULT_HTTP_LISTEN.parse::<SocketAddr>().unwrap(),
            Config::default().http_listen
        );
        assert_eq!(Config::default().grpc_listen.port(), 7600);
        assert_eq!(Config::default().http_listen.port(), 7601);
    }

    #[test]
    fn defaults_are_documented_values() {
        let c = Config::default();
        assert_eq!(c.clickhouse_url, "http://127.0.0.1:8123");
        assert_eq!(c.clickhouse_database, "fleetpulse");
        assert_eq!(c.database_url, "sqlite://fleetpulse-collector.db");
        assert_eq!(c.max_batch_items, 5000);
        assert_eq!(c.max_batch_bytes, 4_194_304);
        assert_eq!(c.max_future_skew_secs, 86_400);
        assert_eq!(c.retention_days, 90);
        assert_eq!(c.flush_rows, 100_000);
        assert_eq!(c.flush_interval_ms, 200);
        assert_eq!(c.max_pending_rows, 400_000);
        assert_eq!(c.clickhouse_timeout_secs, 10);
        assert_eq!(c.batch_lease_secs, 30);
        assert_eq!(c.ledger_keep_hours, 24);
        assert_eq!(c.grpc_max_connections, 20_000);
        assert_eq!(c.grpc_max_concurrent_streams, 16);
        assert_eq!(c.grpc_body_timeout_secs, 30);
        assert_eq!(c.grpc_request_timeout_secs, 90);
        assert_eq!(c.grpc_keepalive_interval_secs, 30);
        assert_eq!(c.grpc_keepalive_timeout_secs, 10);
        assert_eq!(c.http_max_connections, 64);
        assert_eq!(c.http_header_timeout_secs, 10);
        assert_eq!(c.credential_cache_max_delay_ms, 2000);
        assert_eq!(c.credential_cache_max_entries, 200_000);
        assert_eq!(c.register_token_rate, Rate::new(50, 100));
        assert_eq!(c.register_source_rate, Rate::new(50, 100));
        assert_eq!(c.agent_pushes_rate, Rate::new(20, 100));
        assert_eq!(c.agent_events_rate, Rate::new(50_000, 100_000));
        assert_eq!(c.tenant_pushes_rate, Rate::new(5_000, 10_000));
        assert_eq!(c.tenant_events_rate, Rate::new(500_000, 1_000_000));
        assert_eq!(c.limiter_max_keys, 100_000);
        assert_eq!(c.max_inflight_bytes, 268_435_456);
        c.check().unwrap();
    }

    #[test]
    fn file_then_flags_layering() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "clickhouse_database = \"from_file\"\nflush_rows = 7\nretention_days = 30\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "x",
            "--config",
            path.to_str().unwrap(),
            "--flush-rows",
            "9",
            "--grpc-listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        let c = cli.args.load().unwrap();
        assert_eq!(c.clickhouse_database, "from_file");
        assert_eq!(c.flush_rows, 9, "flag wins over file");
        assert_eq!(c.retention_days, 30, "file wins over default");
        assert_eq!(c.grpc_listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(c.http_listen.port(), 7601, "default kept");
    }

    #[test]
    fn env_sits_between_file_and_flag() {
        // A variable name no other test uses, so parallel tests do not interfere.
        let cmd = <Cli as clap::CommandFactory>::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == "max_pending_rows")
            .unwrap();
        assert_eq!(
            arg.get_env().unwrap(),
            std::ffi::OsStr::new("FLEETPULSE_COLLECTOR_MAX_PENDING_ROWS")
        );
        // Every flag has its FLEETPULSE_COLLECTOR_<UPPER_SNAKE> variable.
        for a in cmd.get_arguments() {
            let Some(long) = a.get_long() else { continue };
            if long == "help" {
                continue;
            }
            let expected = format!(
                "FLEETPULSE_COLLECTOR_{}",
                long.replace('-', "_").to_uppercase()
            );
            assert_eq!(
                a.get_env().map(|e| e.to_str().unwrap().to_owned()),
                Some(expected)
            );
        }
    }

    #[test]
    fn compression_auto_skips_loopback() {
        for url in [
            "http://127.0.0.1:8123",
            "http://localhost:8123/",
            "http://u:p@127.0.0.2:1",
            "http://[::1]:8123",
        ] {
            assert!(!Compression::Auto.use_lz4(url), "{url}");
        }
        assert!(Compression::Auto.use_lz4("http://clickhouse.internal:8123"));
        assert!(Compression::Auto.use_lz4("https://10.0.0.5:8443"));
        assert!(Compression::Lz4.use_lz4("http://127.0.0.1:8123"));
        assert!(!Compression::None.use_lz4("http://ch:8123"));
        assert_eq!(
            Config::from_toml("clickhouse_compression = \"lz4\"\n")
                .unwrap()
                .clickhouse_compression,
            Compression::Lz4
        );
    }

    #[test]
    fn unknown_toml_key_is_rejected_with_its_name() {
        let err = Config::from_toml("grpc_listn = \"0.0.0.0:1\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unknown field `grpc_listn`"), "{text}");
        assert!(text.contains("grpc_listen"), "lists the valid keys: {text}");
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = Config {
            clickhouse_database: "bad-name".into(),
            ..Config::default()
        };
        assert_eq!(
            c.check().unwrap_err().to_string(),
            "invalid configuration: clickhouse_database: \"bad-name\" is not an identifier \
             ([A-Za-z_][A-Za-z0-9_]*, at most 64 characters)"
        );
        c.clickhouse_database = "ok".into();
        c.batch_lease_secs = 10;
        assert_eq!(
            c.check().unwrap_err().to_string(),
            "invalid configuration: batch_lease_secs: 10 must be at least 2 * \
             clickhouse_timeout_secs + 5 = 25 (a lease must outlive every write attempt made \
             under it)"
        );
        c.batch_lease_secs = 30;
        c.ledger_keep_hours = 0;
        assert_eq!(
            c.check().unwrap_err().to_string(),
            "invalid configuration: ledger_keep_hours: must be at least 1 (resends within the \
             hour are the common case and must be answered from the ledger)"
        );
        c.retention_days = 2;
        c.ledger_keep_hours = 49;
        assert_eq!(
            c.check().unwrap_err().to_string(),
            "invalid configuration: ledger_keep_hours: 49 is above 24 x retention_days = 48 (a \
             row is useless once its items are past the retention)"
        );
        c.ledger_keep_hours = 48;
        c.tls_key = Some("k.pem".into());
        assert_eq!(
            c.check().unwrap_err().to_string(),
            "invalid configuration: tls_key is set but tls_cert is not"
        );
        c.tls_key = None;
        c.database_url = "mysql://x".into();
        assert_eq!(
            c.check().unwrap_err().to_string(),
            "invalid configuration: database_url: \"mysql://x\" is neither sqlite:... nor postgres://..."
        );
    }
}
