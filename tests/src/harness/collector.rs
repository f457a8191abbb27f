//! The real `fleetpulse-collector` binary as a subprocess of the test.
//!
//! The binary is taken from the cargo target directory next to the running test executable
//! (`target/<profile>/fleetpulse-collector`), so `cargo build --workspace --bins` must run
//! before the tests. It listens on `127.0.0.1:0` and reports its ports through `--ready-file`,
//! which it writes only once migrations are applied and listeners are bound: a test never races
//! the start-up. Its stderr/stdout go to a log file in a private temp dir; the tail of that log
//! is printed when a test panics, so failures are debuggable.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use fleetpulse_proto::v1::ingest_service_client::IngestServiceClient;
use fleetpulse_proto::v1::{
    GetLimitsRequest, Limits, Platform, PushRequest, PushResponse, RegisterRequest, TelemetryItem,
};
use tempfile::TempDir;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::HarnessError;
use super::http::{self, HttpResponse};
use super::process::{log_tail, signal, spawn_guarded};

/// How long start-up (migrations included) may take before the test fails.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful shutdown (which flushes) may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds a workspace binary built next to the running executable.
///
/// `FLEETPULSE_BIN_DIR` overrides the directory (relative to the current directory when
/// relative). Test executables live in
/// `target/<profile>/deps/`, bench binaries in `target/<profile>/`; both resolve to
/// `target/<profile>/<name>`.
pub fn workspace_binary(name: &str) -> Result<PathBuf, HarnessError> {
    let dir = match std::env::var_os("FLEETPULSE_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe()
                .map_err(|e| HarnessError::io("locate the running executable", e))?;
            let mut dir = exe
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            if dir.file_name().is_some_and(|n| n == "deps") {
                dir.pop();
            }
            dir
        }
    };
    // Absolute, so that a relative `FLEETPULSE_BIN_DIR` still names the binary from the
    // temporary working directories the servers are spawned in.
    let path = std::path::absolute(dir.join(name))
        .map_err(|e| HarnessError::io("resolve the binary's path", e))?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(HarnessError::MissingBinary(
            name.to_owned(),
            path.display().to_string(),
        ))
    }
}

/// Server-side TLS files for `--tls-cert`, `--tls-key` and (mTLS) `--tls-client-ca`.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// PEM certificate chain of the server.
    pub cert: PathBuf,
    /// PEM private key of the server.
    pub key: PathBuf,
    /// PEM CA bundle that client certificates must chain to; `None` disables mTLS.
    pub client_ca: Option<PathBuf>,
}

/// The collector's admission-control flags (rate limits on registrations and pushes).
pub const ADMISSION_LIMIT_FLAGS: [&str; 6] = [
    "--register-token-rate",
    "--register-source-rate",
    "--agent-pushes-rate",
    "--agent-events-rate",
    "--tenant-pushes-rate",
    "--tenant-events-rate",
];

/// Configures a collector before [`CollectorBuilder::start`].
#[must_use]
pub struct CollectorBuilder {
    clickhouse_url: String,
    database: String,
    database_url: Option<String>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    tls: Option<ServerTls>,
    client_tls: Option<ClientTlsConfig>,
}

impl CollectorBuilder {
    /// Control-plane database URL (default: a fresh SQLite file in the collector's temp dir).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.database_url = Some(url.into());
        self
    }

    /// An extra `serve` argument (e.g. `--config`, a limit flag).
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Turns every admission-control limit off (`--<limit> 0`) except those given in `kept`
    /// (arguments such as `--agent-pushes-rate=20:100`): benches measure what the pipeline can
    /// store, not what a rate limit lets through.
    pub fn without_admission_limits(mut self, kept: &[String]) -> Self {
        for limit in ADMISSION_LIMIT_FLAGS {
            if !kept.iter().any(|a| a.starts_with(limit)) {
                self = self.arg(limit).arg("0");
            }
        }
        self
    }

    /// Extra `serve` arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An extra environment variable for the collector process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Serve gRPC over TLS with these files.
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// TLS settings [`Collector::client`] and [`Collector::channel`] use (CA, domain, identity).
    pub fn client_tls(mut self, config: ClientTlsConfig) -> Self {
        self.client_tls = Some(config);
        self
    }

    /// Spawns `fleetpulse-collector serve` and waits until its ready file appears.
    pub async fn start(self) -> Result<Collector, HarnessError> {
        let bin = workspace_binary("fleetpulse-collector")?;
        let dir = tempfile::Builder::new()
            .prefix("fleetpulse-collector-")
            .tempdir()
            .map_err(|e| HarnessError::io("create collector temp dir", e))?;
        let database_url = self
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}/control.db", dir.path().display()));
        let mut serve_args: Vec<OsString> = vec![
            "serve".into(),
            "--clickhouse-url".into(),
            self.clickhouse_url.clone().into(),
            "--clickhouse-database".into(),
            self.database.clone().into(),
            "--database-url".into(),
            database_url.clone().into(),
        ];
        if let Some(tls) = &self.tls {
            serve_args.extend([
                "--tls-cert".into(),
                tls.cert.clone().into_os_string(),
                "--tls-key".into(),
                tls.key.clone().into_os_string(),
            ]);
            if let Some(ca) = &tls.client_ca {
                serve_args.extend(["--tls-client-ca".into(), ca.clone().into_os_string()]);
            }
        }
        let log = dir.path().join("collector.log");
        let mut collector = Collector {
            bin,
            serve_args,
            extra_args: self.args,
            env: self.env,
            database_url,
            clickhouse_url: self.clickhouse_url,
            database: self.database,
            tls: self.tls.is_some(),
            client_tls: self.client_tls,
            log,
            child: None,
            grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        collector.spawn_and_wait().await?;
        Ok(collector)
    }
}

/// A running (or stopped) collector subprocess with its private temp dir.
pub struct Collector {
    bin: PathBuf,
    serve_args: Vec<OsString>,
    extra_args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    database_url: String,
    clickhouse_url: String,
    database: String,
    tls: bool,
    client_tls: Option<ClientTlsConfig>,
    log: PathBuf,
    child: Option<Child>,
    grpc: SocketAddr,
    http: SocketAddr,
    // Last: removed after the child has been killed.
    dir: TempDir,
}

/// What `Register` returned, ready to push with.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The new agent's id; every item it sends must carry it.
    pub agent_id: String,
    /// The agent credential (`fpa_...`), for [`bearer`].
    pub credential: String,
    /// The tenant the collector bound the agent to (from the enrollment token).
    pub tenant: String,
    /// The limits the collector advertised.
    pub limits: Option<Limits>,
}

impl Registered {
    /// Pushes `items` as batch `batch_seq` (partial accept) with this agent's credential.
    pub async fn push(
        &self,
        client: &mut IngestServiceClient<Channel>,
        batch_seq: u64,
        items: Vec<TelemetryItem>,
    ) -> Result<PushResponse, tonic::Status> {
        self.push_request(client, batch(batch_seq, items)).await
    }

    /// Pushes a prepared request with this agent's credential.
    pub async fn push_request(
        &self,
        client: &mut IngestServiceClient<Channel>,
        request: PushRequest,
    ) -> Result<PushResponse, tonic::Status> {
        client
            .push(bearer(&self.credential, request))
            .await
            .map(tonic::Response::into_inner)
    }
}

impl Registered {
    /// Calls `GetLimits` with this agent's credential: an authenticated call without side
    /// effects, to probe whether the credential is still accepted.
    pub async fn get_limits(
        &self,
        client: &mut IngestServiceClient<Channel>,
    ) -> Result<Limits, tonic::Status> {
        client
            .get_limits(bearer(&self.credential, GetLimitsRequest {}))
            .await
            .map(tonic::Response::into_inner)
    }

    /// Waits until the collector behind `client` refuses this (revoked) agent, and checks the
    /// revocation bound on the way: every probe *sent* more than `bound` after `revoked_at`
    /// (when the revocation had committed) must be refused, since the collector can only have
    /// answered it later still. Returns the refusal, after at most `bound` + `slack`.
    ///
    /// # Panics
    /// When a probe sent past the bound is accepted, or no refusal comes in time.
    pub async fn await_refusal(
        &self,
        client: &mut IngestServiceClient<Channel>,
        revoked_at: Instant,
        bound: Duration,
        slack: Duration,
    ) -> tonic::Status {
        loop {
            let sent = Instant::now();
            match self.get_limits(client).await {
                Ok(_) => {
                    let late = sent.duration_since(revoked_at);
                    assert!(
                        late <= bound,
                        "agent {} accepted {late:?} after its revocation, beyond the bound of \
                         {bound:?}",
                        self.agent_id
                    );
                }
                Err(status) => return status,
            }
            assert!(
                revoked_at.elapsed() < bound + slack,
                "agent {} still accepted {:?} after its revocation",
                self.agent_id,
                revoked_at.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A Register request for a Windows device `device_id` with enrollment token `token`.
pub fn register_request(token: &str, device_id: &str) -> RegisterRequest {
    RegisterRequest {
        enrollment_token: token.to_owned(),
        device_id: device_id.to_owned(),
        hostname: format!("{device_id}.test.invalid"),
        platform: Platform::Windows as i32,
        agent_version: "0.1.0-test".to_owned(),
    }
}

/// Ten minutes ago: an event time inside every default skew and retention window.
pub fn recent() -> std::time::SystemTime {
    std::time::SystemTime::now() - Duration::from_secs(600)
}

/// A partial-accept `PushRequest`.
pub fn batch(batch_seq: u64, items: Vec<TelemetryItem>) -> PushRequest {
    PushRequest {
        batch_seq,
        items,
        all_or_nothing: false,
    }
}

/// Wraps `message` in a request carrying `authorization: Bearer <credential>`.
///
/// # Panics
/// When `credential` contains characters that are not valid in HTTP/2 header values (a test
/// bug: real credentials are ASCII).
pub fn bearer<T>(credential: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {credential}")
        .parse()
        .unwrap_or_else(|e| panic!("credential {credential:?} is not a valid header value: {e}"));
    request.metadata_mut().insert("authorization", value);
    request
}

impl Collector {
    /// Starts configuring a collector storing into `database` on `clickhouse_url`.
    pub fn builder(clickhouse_url: &str, database: &str) -> CollectorBuilder {
        CollectorBuilder {
            clickhouse_url: clickhouse_url.to_owned(),
            database: database.to_owned(),
            database_url: None,
            args: Vec::new(),
            env: Vec::new(),
            tls: None,
            client_tls: None,
        }
    }

    /// The gRPC listen address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// The HTTP (health, readiness, metrics) listen address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` when serving TLS.
    pub fn grpc_url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.grpc.port())
        } else {
            format!("http://{}", self.grpc)
        }
    }

    /// The control-plane database URL the collector uses.
    pub fn database_url(&self) -> &str {
        &self.database_url
    }

    /// The ClickHouse database the collector writes to.
    pub fn clickhouse_database(&self) -> &str {
        &self.database
    }

    /// The ClickHouse URL the collector writes to.
    pub fn clickhouse_url(&self) -> &str {
        &self.clickhouse_url
    }

    /// The collector's combined stdout/stderr log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The private temp dir (ready file, SQLite file, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A gRPC endpoint to the collector (TLS settings from the builder applied), unconnected.
    pub fn endpoint(&self) -> Result<Endpoint, HarnessError> {
        let url = self.grpc_url();
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| HarnessError::Connect(url.clone(), e))?
            .connect_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.client_tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| HarnessError::Connect(url, e))?;
        }
        Ok(endpoint)
    }

    /// A connected channel (fails fast when the collector does not answer).
    pub async fn channel(&self) -> Result<Channel, HarnessError> {
        let endpoint = self.endpoint()?;
        endpoint
            .connect()
            .await
            .map_err(|e| HarnessError::Connect(self.grpc_url(), e))
    }

    /// An `IngestService` client over loopback, without message-size limits of its own (so a
    /// test can send an oversized batch and see the *collector's* answer).
    pub async fn client(&self) -> Result<IngestServiceClient<Channel>, HarnessError> {
        Ok(IngestServiceClient::new(self.channel().await?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// A client on a lazily connected channel: survives collector restarts (it reconnects to
    /// the same address), for agents that must retry across an outage.
    pub fn lazy_client(&self) -> Result<IngestServiceClient<Channel>, HarnessError> {
        Ok(IngestServiceClient::new(self.endpoint()?.connect_lazy())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX))
    }

    /// Runs a collector CLI command (`token ...`, `agent ...`, `migrate`) against this
    /// collector's storage (passed as `FLEETPULSE_COLLECTOR_*` environment variables) and
    /// returns its stdout.
    pub async fn cli<I, S>(&self, args: I) -> Result<String, HarnessError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut command = tokio::process::Command::new(&self.bin);
        command
            .args(&args)
            .env("FLEETPULSE_COLLECTOR_DATABASE_URL", &self.database_url)
            .env("FLEETPULSE_COLLECTOR_CLICKHOUSE_URL", &self.clickhouse_url)
            .env("FLEETPULSE_COLLECTOR_CLICKHOUSE_DATABASE", &self.database)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let rendered = format!(
            "fleetpulse-collector {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .map_err(|_| {
                HarnessError::io(
                    rendered.clone(),
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "no exit within 60 s"),
                )
            })?
            .map_err(|e| HarnessError::Spawn(rendered.clone(), e))?;
        if !output.status.success() {
            return Err(HarnessError::Command {
                command: rendered,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        String::from_utf8(output.stdout).map_err(|e| HarnessError::Command {
            command: rendered,
            status: "success".into(),
            stderr: format!("stdout is not UTF-8: {e}"),
        })
    }

    /// `token create --tenant <tenant>`: returns the enrollment token (first stdout line).
    pub async fn token_create(&self, tenant: &str) -> Result<String, HarnessError> {
        let stdout = self.cli(["token", "create", "--tenant", tenant]).await?;
        let token = stdout.lines().next().unwrap_or_default().trim().to_owned();
        if !token.starts_with("fpe_") {
            return Err(HarnessError::Command {
                command: format!("fleetpulse-collector token create --tenant {tenant}"),
                status: "success".into(),
                stderr: format!("first stdout line is not an fpe_ token: {stdout:?}"),
            });
        }
        Ok(token)
    }

    /// The token id of an enrollment token: the part after `fpe_` before the next `_`.
    pub fn token_id(token: &str) -> &str {
        let rest = token.strip_prefix("fpe_").unwrap_or(token);
        rest.split('_').next().unwrap_or(rest)
    }

    /// Registers a device with `token` over gRPC.
    pub async fn register(&self, token: &str, device_id: &str) -> Result<Registered, HarnessError> {
        let mut client = self.client().await?;
        let response = client
            .register(register_request(token, device_id))
            .await
            .map_err(|s| HarnessError::Grpc(format!("Register device {device_id}"), s))?
            .into_inner();
        Ok(Registered {
            agent_id: response.agent_id,
            credential: response.agent_credential,
            tenant: response.tenant,
            limits: response.limits,
        })
    }

    /// `GET path` on the HTTP listener.
    pub async fn http_get(&self, path: &str) -> Result<HttpResponse, HarnessError> {
        http::get(self.http, path).await
    }

    /// The process id while running (for CPU accounting or profiling).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM and wait for exit; the collector must flush and exit 0 within 30 s.
    pub async fn stop(&mut self) -> Result<(), HarnessError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(&child, libc::SIGTERM);
        let status = wait_async(&mut child, STOP_TIMEOUT).await?;
        match status {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(HarnessError::Start(
                "fleetpulse-collector shutdown".into(),
                format!(
                    "exited with {status}; log tail:\n{}",
                    log_tail(&self.log, 6000)
                ),
            )),
            None => {
                signal(&child, libc::SIGKILL);
                let _ = child.wait();
                Err(HarnessError::Start(
                    "fleetpulse-collector shutdown".into(),
                    format!(
                        "still running {STOP_TIMEOUT:?} after SIGTERM (killed); log tail:\n{}",
                        log_tail(&self.log, 6000)
                    ),
                ))
            }
        }
    }

    /// SIGKILL (a crash: nothing is flushed) and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Starts the (stopped or killed) collector again on the same ports, storage and
    /// arguments, so clients keep their address.
    pub async fn start_again(&mut self) -> Result<(), HarnessError> {
        if self.is_running() {
            return Ok(());
        }
        self.child = None;
        self.spawn_and_wait().await
    }

    /// Replaces the builder's extra `serve` arguments for the next (re)start, e.g. to restart
    /// with other flush settings. Storage, TLS and listen addresses stay.
    pub fn set_extra_args<I, S>(&mut self, args: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra_args = args.into_iter().map(Into::into).collect();
    }

    /// Graceful [`stop`](Self::stop) then [`start_again`](Self::start_again).
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop().await?;
        self.start_again().await
    }

    async fn spawn_and_wait(&mut self) -> Result<(), HarnessError> {
        let ready = self.dir.path().join("ready.json");
        match std::fs::remove_file(&ready) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(HarnessError::io("remove old ready file", e)),
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| HarnessError::io("open collector log", e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| HarnessError::io("dup collector log", e))?;
        let mut command = Command::new(&self.bin);
        command
            .args(&self.serve_args)
            .args(&self.extra_args)
            .arg("--grpc-listen")
            .arg(self.grpc.to_string())
            .arg("--http-listen")
            .arg(self.http.to_string())
            .arg("--ready-file")
            .arg(&ready)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            // Plain logs: they are read in failure messages, not on a terminal.
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let mut child = spawn_guarded(command, &self.bin.display().to_string())?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| HarnessError::io("wait for fleetpulse-collector", e))?
            {
                return Err(HarnessError::Start(
                    "fleetpulse-collector".into(),
                    format!(
                        "exited with {status} before becoming ready; log tail:\n{}",
                        log_tail(&self.log, 6000)
                    ),
                ));
            }
            if let Ok(text) = std::fs::read_to_string(&ready)
                && let Ok(addrs) = serde_json::from_str::<ReadyFile>(&text)
            {
                self.grpc = addrs.grpc;
                self.http = addrs.http;
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                signal(&child, libc::SIGKILL);
                let _ = child.wait();
                return Err(HarnessError::Start(
                    "fleetpulse-collector".into(),
                    format!(
                        "no ready file within {READY_TIMEOUT:?}; log tail:\n{}",
                        log_tail(&self.log, 6000)
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

#[derive(serde::Deserialize)]
struct ReadyFile {
    grpc: SocketAddr,
    http: SocketAddr,
}

async fn wait_async(
    child: &mut Child,
    timeout: Duration,
) -> Result<Option<ExitStatus>, HarnessError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| HarnessError::io("wait for fleetpulse-collector", e))?
        {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- fleetpulse-collector log ({}), last 8 KiB ----\n{}\n---- end of collector log ----",
                self.log.display(),
                log_tail(&self.log, 8192)
            );
        }
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_id_is_the_segment_after_the_prefix() {
        assert_eq!(Collector::token_id("fpe_ab12cd_secretpart"), "ab12cd");
        assert_eq!(Collector::token_id("fpe_ab12cd"), "ab12cd");
    }

    #[test]
    fn ready_file_parses() {
        let r: ReadyFile =
            serde_json::from_str(r#"{"grpc":"127.0.0.1:7600","http":"127.0.0.1:7601"}"#).unwrap();
        assert_eq!(r.grpc.port(), 7600);
        assert_eq!(r.http.port(), 7601);
    }
}
