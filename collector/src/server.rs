//! Wiring of `serve`: control database, ClickHouse migrations, writer, gRPC and HTTP servers,
//! background tasks, ready file and graceful shutdown. Usable in-process through [`start`].

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, ConfigError},
    control::{
        ControlDb, ControlError, credential_cache::CredentialCache, ledger_group::LedgerGroup,
    },
    grpc::{self, GrpcError, IngestSvc, Shared, admission::Admission},
    http,
    metrics::Metrics,
    store::{
        Store, StoreError, migrations, retention,
        writer::{self, StoreHealth, WriterConfig},
    },
    validate::Rules,
};

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How often a ClickHouse marked down is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Start-up's wait for an unreachable ClickHouse: first retry, and the cap of the doubling.
const SCHEMA_RETRY_FIRST: Duration = Duration::from_millis(500);
const SCHEMA_RETRY_MAX: Duration = Duration::from_secs(30);

/// Why the collector could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("binding the {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Grpc(#[from] GrpcError),
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("writing the ready file {path}: {source}")]
    ReadyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A running collector.
pub struct Collector {
    /// Where gRPC is served (the bound address; port 0 resolved).
    pub grpc_addr: SocketAddr,
    /// Where HTTP is served.
    pub http_addr: SocketAddr,
    /// Random per process; appears in logs of every push.
    pub collector_id: String,
    cancel: CancellationToken,
    grpc_task: JoinHandle<Result<(), GrpcError>>,
    http_task: JoinHandle<Result<(), std::io::Error>>,
    writer_task: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    control: Arc<ControlDb>,
    /// The ledger's group-commit task: answered pushes' `stored` marks are committed after
    /// their answers, so shutdown waits for them before closing the database.
    ledger: LedgerGroup,
    drain_timeout: Duration,
}

/// Applies control-plane and ClickHouse migrations; returns the ClickHouse versions applied.
pub async fn migrate(config: &Config) -> Result<Vec<u32>, ServeError> {
    let control = ControlDb::open(&config.database_url).await?;
    control.close().await;
    let store = Store::new(config)?;
    Ok(migrations::run(&store).await?)
}

/// Connections the kernel may hold for a listener before `accept` (capped by
/// `net.core.somaxconn`, 4096 on current kernels). Tokio's default of 1024 overflowed when a
/// thousand agents connected at once (issue 16: `TcpExtListenOverflows` rose and each dropped
/// handshake cost its agent a one-second retransmission); a fleet reconnecting after a
/// collector restart does the same.
const LISTEN_BACKLOG: u32 = 4096;

fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }?;
        // As `TcpListener::bind` does: a restarted collector can bind while old connections
        // linger in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|source| ServeError::Bind { what, addr, source })
}

/// The address a local client should dial: an unspecified IP becomes loopback.
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// Writes `{"grpc":"ADDR","http":"ADDR"}` to `path` atomically (temp file + rename).
pub fn write_ready_file(path: &Path, grpc: SocketAddr, http: SocketAddr) -> Result<(), ServeError> {
    let body = serde_json::json!({
        "grpc": dialable(grpc).to_string(),
        "http": dialable(http).to_string(),
    })
    .to_string();
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ready".into());
    let tmp = path.with_file_name(format!(".{file_name}.tmp.{}", std::process::id()));
    let err = |source| ServeError::ReadyFile {
        path: path.to_owned(),
        source,
    };
    std::fs::write(&tmp, body).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Waits for ClickHouse and applies its migrations: while it cannot be reached at all, retries
/// with exponential backoff (0.5 s doubling to 30 s), logging each attempt and reporting the
/// wait on `/readyz`; an error ClickHouse answers with (bad credentials, a failing statement)
/// ends start-up at once.
async fn wait_for_schema(store: &Store, startup: &http::Startup) -> Result<Vec<u32>, ServeError> {
    let mut delay = SCHEMA_RETRY_FIRST;
    let mut attempt = 1u32;
    loop {
        match migrations::run(store).await {
            Ok(applied) => return Ok(applied),
            Err(e) if e.is_unreachable() => {
                tracing::warn!(
                    error = %e,
                    attempt,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    "ClickHouse unreachable at start-up; waiting for it (not ready)"
                );
                startup.waiting(format!(
                    "waiting for ClickHouse to apply migrations (attempt {attempt}): {e}"
                ));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(SCHEMA_RETRY_MAX);
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Starts everything; returns once migrations ran, listeners are bound and the ready file is
/// written. The HTTP listener (health, readiness, metrics) serves from the start, also while
/// an unreachable ClickHouse is awaited; gRPC only once the schema is in place.
pub async fn start(config: Config) -> Result<Collector, ServeError> {
    config.check()?;
    let collector_id = crate::control::secrets::new_token_id()[..8].to_owned();
    let control = Arc::new(ControlDb::open(&config.database_url).await?);
    let store = Store::new(&config)?;

    let grpc_listener = bind("gRPC", config.grpc_listen)?;
    let http_listener = bind("HTTP", config.http_listen)?;
    let grpc_addr = grpc_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            what: "gRPC",
            addr: config.grpc_listen,
            source,
        })?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| ServeError::Bind {
            what: "HTTP",
            addr: config.http_listen,
            source,
        })?;
    // Check TLS files before announcing readiness.
    grpc::tls_config(&config)?;

    let cancel = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let startup = http::Startup::new();
    // Every connection is a file descriptor: make room for the caps (soft limits of 1024 are
    // common; the hard limit is usually far higher).
    let want_fds = (config.grpc_max_connections + config.http_max_connections + 256) as u64;
    match fleetpulse_net::raise_fd_limit(want_fds) {
        Ok(fds) if fds < want_fds => tracing::warn!(
            open_files = fds,
            grpc_max_connections = config.grpc_max_connections,
            "the open-file limit is below the connection caps; raise the hard limit \
             (LimitNOFILE= in systemd, ulimit -Hn)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "raising the open-file limit failed"),
    }
    let grpc_connections = fleetpulse_net::ConnectionCap::new("gRPC", config.grpc_max_connections);
    let http_task = {
        let router = http::router(http::HttpState {
            store: store.clone(),
            control: control.clone(),
            metrics: metrics.clone(),
            startup: startup.clone(),
            grpc_connections: grpc_connections.clone(),
        });
        let cancel = cancel.clone();
        let limits = fleetpulse_net::HttpLimits {
            max_connections: config.http_max_connections,
            header_timeout: config.http_header_timeout(),
        };
        tokio::spawn(fleetpulse_net::serve_http(
            http_listener,
            router,
            None,
            limits,
            "HTTP",
            cancel.cancelled_owned(),
        ))
    };
    // Stops the HTTP server if start-up fails or is abandoned (shutdown while waiting).
    let stop_http_on_failure = cancel.clone().drop_guard();
    let applied = wait_for_schema(&store, &startup).await?;
    tracing::info!(
        collector_id,
        database = store.db(),
        applied = ?applied,
        "ClickHouse schema up to date"
    );
    let health = StoreHealth::new();
    let (writer, writer_task) = writer::spawn(
        store.clone(),
        WriterConfig {
            flush_rows: config.flush_rows,
            flush_interval: config.flush_interval(),
            concurrent_flushes: config.concurrent_flushes,
            max_pending_rows: config.max_pending_rows,
            timeout: config.clickhouse_timeout(),
        },
        health.clone(),
        metrics.clone(),
    );
    let rules = Rules {
        max_batch_items: config.max_batch_items,
        max_batch_bytes: config.max_batch_bytes,
        max_future_skew_secs: i64::from(config.max_future_skew_secs),
        retention_days: config.retention_days,
    };
    let credentials = Arc::new(CredentialCache::new(
        config.credential_cache_max_delay(),
        config.credential_cache_max_entries,
    ));
    let shared = Arc::new(
        Shared::new(
            control.clone(),
            store.clone(),
            writer,
            metrics.clone(),
            rules,
            config.batch_lease(),
            collector_id.clone(),
            credentials.clone(),
        )
        .with_admission(Admission::new(config.admission(), metrics.clone())),
    );
    let svc = IngestSvc::new(shared.clone());
    let ledger = shared.ledger.clone();

    let background = vec![
        {
            let (control, cancel) = (control.clone(), cancel.clone());
            tokio::spawn(async move { credentials.poll_forever(&control, cancel).await })
        },
        tokio::spawn(writer::probe_while_down(
            store.clone(),
            health.clone(),
            PROBE_EVERY,
            cancel.clone(),
        )),
        tokio::spawn(retention::run_periodically(
            store.clone(),
            control.clone(),
            config.retention_days,
            config.ledger_keep(),
            RETENTION_EVERY,
            cancel.clone(),
        )),
    ];

    let grpc_task = {
        let config = config.clone();
        let connections = grpc_connections.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move {
            grpc::serve(
                grpc_listener,
                svc,
                shared,
                &config,
                health,
                connections,
                cancel.cancelled_owned(),
            )
            .await
        })
    };

    if let Some(path) = &config.ready_file {
        write_ready_file(path, grpc_addr, http_addr)?;
    }
    let _http_cancel = stop_http_on_failure.disarm();
    startup.done();
    tracing::info!(
        collector_id,
        grpc = %grpc_addr,
        http = %http_addr,
        tls = config.tls_cert.is_some(),
        mtls = config.tls_client_ca.is_some(),
        "collector ready"
    );
    Ok(Collector {
        grpc_addr,
        http_addr,
        collector_id,
        cancel,
        grpc_task,
        http_task,
        writer_task,
        background,
        control,
        ledger,
        drain_timeout: config.clickhouse_timeout() * 2 + config.flush_interval(),
    })
}

impl Collector {
    /// Asks every server to stop accepting work; `wait` then drains.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Runs until `shutdown` completes or a server fails, then drains: in-flight pushes finish,
    /// the writer flushes, connections close.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let early = tokio::select! {
            () = shutdown => None,
            r = &mut self.grpc_task => Some(("gRPC", r.map(|r| r.map_err(ServeError::from)))),
            r = &mut self.http_task => Some(("HTTP", r.map(|r| r.map_err(ServeError::Http)))),
        };
        if let Some((what, result)) = early {
            tracing::error!(server = what, "a server stopped on its own; shutting down");
            self.cancel.cancel();
            result??;
        }
        tracing::info!("shutting down: draining in-flight pushes");
        self.finish().await
    }

    async fn finish(self) -> Result<(), ServeError> {
        self.cancel.cancel();
        let grpc = if self.grpc_task.is_finished() {
            Ok(Ok(()))
        } else {
            self.grpc_task.await
        };
        let http = if self.http_task.is_finished() {
            Ok(Ok(()))
        } else {
            self.http_task.await
        };
        // The gRPC server dropped the service and with it the last writer handle: the writer
        // flushes what is left and stops.
        if tokio::time::timeout(self.drain_timeout, self.writer_task)
            .await
            .is_err()
        {
            tracing::warn!("the writer did not finish within {:?}", self.drain_timeout);
        }
        for t in self.background {
            let _ = t.await;
        }
        if tokio::time::timeout(self.drain_timeout, self.ledger.settled())
            .await
            .is_err()
        {
            tracing::warn!(
                "the ledger's last stored marks were not committed within {:?}; those batches \
                 stay pending (a resend recovers them and stores nothing twice)",
                self.drain_timeout
            );
        }
        drop(self.ledger);
        self.control.close().await;
        grpc?.map_err(ServeError::from)?;
        http?.map_err(ServeError::Http)?;
        tracing::info!("collector stopped");
        Ok(())
    }
}

/// Runs a collector until `shutdown` completes (also while start-up still waits for
/// ClickHouse: then it exits without having served ingest).
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let collector = tokio::select! {
        started = start(config) => started?,
        () = &mut shutdown => {
            tracing::info!("shutdown requested during start-up; exiting");
            return Ok(());
        }
    };
    collector.run_until(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_file_is_written_atomically_with_dialable_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        write_ready_file(
            &path,
            "0.0.0.0:7600".parse().unwrap(),
            "127.0.0.2:7601".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            r#"{"grpc":"127.0.0.1:7600","http":"127.0.0.2:7601"}"#
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        assert_eq!(
            dialable("[::]:5".parse().unwrap()),
            "[::1]:5".parse().unwrap()
        );
    }
}
