//! Real ClickHouse servers for tests: one shared server per test binary, or private servers a
//! test may stop and start (outage tests).
//!
//! A managed server runs `clickhouse-server` from `PATH` with a copy of the system's
//! `/etc/clickhouse-server/{config,users}.xml` whose data, log and temp paths point into a
//! temporary directory and whose HTTP/TCP ports are free loopback ports. It is killed with the
//! test process (parent-death signal) and removed on drop. Set `CLICKHOUSE_URL` to run the
//! shared-server tests against an existing server instead (private servers are still started).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use clickhouse::{Client, RowOwned, RowRead};
use tempfile::TempDir;

use super::HarnessError;
use super::http;
use super::process::{free_port, log_tail, spawn_guarded, terminate};

/// The template configuration shipped by the distribution package.
const SYSTEM_CONFIG_DIR: &str = "/etc/clickhouse-server";
/// How long a server may take to answer `SELECT 1` after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful stop may take before the server is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Attempts with fresh ports when another process grabbed a port between probe and bind.
const PORT_ATTEMPTS: usize = 5;

/// A ClickHouse server: managed by the harness (private data dir and ports) or external
/// (`CLICKHOUSE_URL`).
pub struct ClickHouseServer {
    url: String,
    http_addr: Option<SocketAddr>,
    managed: Option<Mutex<Managed>>,
}

/// The process side of a harness-managed server.
struct Managed {
    dir: Option<TempDir>,
    config: PathBuf,
    http_port: u16,
    tcp_port: u16,
    child: Option<Child>,
}

static SHARED: OnceLock<ClickHouseServer> = OnceLock::new();

/// The ClickHouse server shared by every test of this test binary: `CLICKHOUSE_URL` when set,
/// otherwise a managed server started on first use and removed when the process exits.
/// Tests sharing it must use [`unique_database`] and must not stop it.
///
/// # Panics
/// When no server can be started; every test using it would fail anyway, and the message
/// says why (missing binary, log tail).
pub fn shared() -> &'static ClickHouseServer {
    SHARED.get_or_init(|| {
        let server = match std::env::var("CLICKHOUSE_URL") {
            Ok(url) if !url.trim().is_empty() => ClickHouseServer::external(url.trim()),
            _ => ClickHouseServer::start_managed()
                .unwrap_or_else(|e| panic!("cannot start the shared ClickHouse server: {e}")),
        };
        // SAFETY: registering a plain `extern "C"` function; it only touches `SHARED`.
        unsafe {
            libc::atexit(remove_shared_at_exit);
        }
        server
    })
}

/// A dedicated managed server (never `CLICKHOUSE_URL`), for tests that stop and restart it.
pub fn private() -> Result<ClickHouseServer, HarnessError> {
    ClickHouseServer::start_managed()
}

/// Kills the shared server and deletes its directory: statics are never dropped.
extern "C" fn remove_shared_at_exit() {
    if let Some(server) = SHARED.get()
        && let Some(managed) = &server.managed
        && let Ok(mut m) = managed.try_lock()
    {
        if let Some(mut child) = m.child.take() {
            let _ = terminate(&mut child, Duration::ZERO);
        }
        if let Some(dir) = m.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Runs `start` with `n` distinct free ports, again with fresh ones while it fails because
/// another process took one between the probe and the bind.
fn on_free_ports<T>(
    n: usize,
    mut start: impl FnMut(&[u16]) -> Result<T, HarnessError>,
) -> Result<T, HarnessError> {
    let mut last_error = None;
    for _ in 0..PORT_ATTEMPTS {
        let ports = (0..n).map(|_| free_port()).collect::<Result<Vec<_>, _>>()?;
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != n {
            continue;
        }
        match start(&ports) {
            Err(e @ HarnessError::PortTaken { .. }) => last_error = Some(e),
            other => return other,
        }
    }
    Err(last_error.unwrap_or_else(|| {
        HarnessError::Start(
            "clickhouse-server".into(),
            "no distinct free ports found".into(),
        )
    }))
}

static DATABASE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A database name no other test (of this or a concurrent run against the same server) uses:
/// `<prefix>_<pid>_<counter>_<random>`, restricted to `[a-z0-9_]` so it is a safe identifier.
pub fn unique_database(prefix: &str) -> String {
    let mut clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if !clean.starts_with(|c: char| c.is_ascii_lowercase()) {
        clean.insert_str(0, "t_");
    }
    let n = DATABASE_COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt: u32 = rand::random();
    format!("{clean}_{}_{n}_{salt:08x}", std::process::id())
}

impl ClickHouseServer {
    fn external(url: &str) -> Self {
        let url = url.trim_end_matches('/').to_owned();
        let http_addr = url
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .and_then(|hostport| std::net::ToSocketAddrs::to_socket_addrs(hostport).ok())
            .and_then(|mut addrs| addrs.next());
        Self {
            url,
            http_addr,
            managed: None,
        }
    }

    fn start_managed() -> Result<Self, HarnessError> {
        on_free_ports(2, |p| Self::start_configured(p[0], p[1], &|c| c))
    }

    /// A private managed server that also serves HTTPS with the PEM certificate and key given
    /// (e.g. [`super::tls::TestPki::server_tls`]); returns it and its HTTPS URL
    /// (`https://127.0.0.1:PORT`, an address the test certificates carry). Plain HTTP stays on
    /// [`Self::url`] for the harness's own checks.
    pub fn start_with_https(
        cert: &Path,
        key: &Path,
    ) -> Result<(ClickHouseServer, String), HarnessError> {
        on_free_ports(3, |p| {
            let (http_port, tcp_port, https_port) = (p[0], p[1], p[2]);
            let (cert, key) = (cert.display().to_string(), key.display().to_string());
            let edit = move |config: String| {
                let config = remove_elements(&config, "dhParamsFile");
                let config =
                    replace_first_element(&config, "certificateFile", &cert).unwrap_or(config);
                let config =
                    replace_first_element(&config, "privateKeyFile", &key).unwrap_or(config);
                config.replacen(
                    "<http_port>",
                    &format!("<https_port>{https_port}</https_port>\n    <http_port>"),
                    1,
                )
            };
            let server = Self::start_configured(http_port, tcp_port, &edit)?;
            Ok((server, format!("https://127.0.0.1:{https_port}")))
        })
    }

    /// A managed server whose configuration is the test template changed by `edit` (the
    /// cluster harness adds `remote_servers`, ZooKeeper and macros). Ports are the caller's.
    pub(crate) fn start_configured(
        http_port: u16,
        tcp_port: u16,
        edit: &dyn Fn(String) -> String,
    ) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("fleetpulse-clickhouse-")
            .tempdir()
            .map_err(|e| HarnessError::io("create ClickHouse temp dir", e))?;
        let config = write_config(dir.path(), http_port, tcp_port, edit)?;
        let mut managed = Managed {
            dir: None,
            config,
            http_port,
            tcp_port,
            child: None,
        };
        managed.spawn_and_wait(dir.path())?;
        managed.dir = Some(dir);
        Ok(Self {
            url: format!("http://127.0.0.1:{http_port}"),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], http_port))),
            managed: Some(Mutex::new(managed)),
        })
    }

    /// Kills the server at once (SIGKILL), as a crash would. Data stays for [`Self::start`].
    pub fn kill(&self) -> Result<(), HarnessError> {
        let mut m = self.lock_managed()?;
        if let Some(mut child) = m.child.take() {
            terminate(&mut child, Duration::ZERO)
                .map_err(|e| HarnessError::io("kill clickhouse-server", e))?;
        }
        Ok(())
    }

    /// The HTTP URL, e.g. `http://127.0.0.1:38123`, as the collector's `--clickhouse-url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The HTTP address (`None` only for an external URL that does not resolve).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The native-protocol TCP port of a managed server (for `clickhouse-client --port`).
    pub fn tcp_port(&self) -> Option<u16> {
        self.lock_managed().ok().map(|m| m.tcp_port)
    }

    /// The server's process id while a managed server runs (for CPU accounting or profiling).
    pub fn pid(&self) -> Option<u32> {
        self.lock_managed()
            .ok()
            .and_then(|m| m.child.as_ref().map(Child::id))
    }

    /// Whether the harness manages this server's process (and it can be stopped/started).
    pub fn is_managed(&self) -> bool {
        self.managed.is_some()
    }

    fn lock_managed(&self) -> Result<MutexGuard<'_, Managed>, HarnessError> {
        self.managed
            .as_ref()
            .ok_or(HarnessError::NotManaged)?
            .lock()
            .map_err(|_| {
                HarnessError::Start("clickhouse-server".into(), "state lock poisoned".into())
            })
    }

    /// Stops the server gracefully (SIGTERM; SIGKILL after 30 s). Data stays for [`Self::start`].
    pub fn stop(&self) -> Result<(), HarnessError> {
        let mut m = self.lock_managed()?;
        if let Some(mut child) = m.child.take() {
            terminate(&mut child, STOP_GRACE)
                .map_err(|e| HarnessError::io("stop clickhouse-server", e))?;
        }
        Ok(())
    }

    /// Starts a stopped server again on the same ports and data directory; returns once it
    /// answers `SELECT 1`. A no-op when it is running.
    pub fn start(&self) -> Result<(), HarnessError> {
        let mut m = self.lock_managed()?;
        if let Some(child) = m.child.as_mut()
            && child
                .try_wait()
                .map_err(|e| HarnessError::io("check clickhouse-server", e))?
                .is_none()
        {
            return Ok(());
        }
        m.child = None;
        let dir = m
            .dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .ok_or(HarnessError::NotManaged)?;
        m.spawn_and_wait(&dir)
    }

    /// Stops a managed server and deletes its data directory now (for statics, which are never
    /// dropped: the shared cluster calls this at exit).
    pub(crate) fn stop_and_remove(&self) {
        if let Some(managed) = &self.managed
            && let Ok(mut m) = managed.try_lock()
        {
            if let Some(mut child) = m.child.take() {
                let _ = terminate(&mut child, STOP_GRACE);
            }
            if let Some(dir) = m.dir.take() {
                let _ = dir.close();
            }
        }
    }

    /// A `clickhouse` crate client for `database`, with row validation off (18.16 lacks
    /// `RowBinaryWithNamesAndTypes`).
    pub fn client(&self, database: &str) -> Client {
        self.admin_client().with_database(database)
    }

    /// A client without a default database (for `CREATE DATABASE` and qualified names).
    pub fn admin_client(&self) -> Client {
        Client::default().with_url(&self.url).with_validation(false)
    }

    /// Runs a statement (DDL or a literal INSERT).
    pub async fn execute(&self, sql: &str) -> Result<(), HarnessError> {
        self.admin_client()
            .query(sql)
            .execute()
            .await
            .map_err(|e| HarnessError::ClickHouse(sql.to_owned(), e))
    }

    /// `SELECT count() ...` (any query returning one UInt64), with `?` placeholders bound to
    /// `binds` in order.
    pub async fn count(&self, sql: &str, binds: &[&str]) -> Result<u64, HarnessError> {
        let mut query = self.admin_client().query(sql);
        for b in binds {
            query = query.bind(*b);
        }
        query
            .fetch_one::<u64>()
            .await
            .map_err(|e| HarnessError::ClickHouse(sql.to_owned(), e))
    }

    /// Fetches typed rows (`SELECT ?fields FROM db.table WHERE x = ?`), binds in order.
    pub async fn query_rows<T>(&self, sql: &str, binds: &[&str]) -> Result<Vec<T>, HarnessError>
    where
        T: RowOwned + RowRead,
    {
        let mut query = self.admin_client().query(sql);
        for b in binds {
            query = query.bind(*b);
        }
        query
            .fetch_all::<T>()
            .await
            .map_err(|e| HarnessError::ClickHouse(sql.to_owned(), e))
    }

    /// Fetches rows as JSON objects (the query must not have a FORMAT clause), binds in order.
    /// Note that 18.16 quotes 64-bit integers in JSON.
    pub async fn query_json(
        &self,
        sql: &str,
        binds: &[&str],
    ) -> Result<Vec<serde_json::Value>, HarnessError> {
        let mut query = self.admin_client().query(sql);
        for b in binds {
            query = query.bind(*b);
        }
        let mut cursor = query
            .fetch_bytes("JSONEachRow")
            .map_err(|e| HarnessError::ClickHouse(sql.to_owned(), e))?;
        let bytes = cursor
            .collect()
            .await
            .map_err(|e| HarnessError::ClickHouse(sql.to_owned(), e))?;
        bytes
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                serde_json::from_slice(line).map_err(|e| {
                    HarnessError::Start("JSONEachRow".into(), format!("bad row from {sql:?}: {e}"))
                })
            })
            .collect()
    }

    /// Whether the server answers `SELECT 1` right now.
    pub fn is_up(&self) -> bool {
        self.http_addr.is_some_and(select_one)
    }
}

impl Drop for ClickHouseServer {
    fn drop(&mut self) {
        if let Some(managed) = self.managed.as_mut() {
            let m = managed
                .get_mut()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(mut child) = m.child.take() {
                let _ = terminate(&mut child, Duration::from_secs(10));
            }
            if let Some(dir) = m.dir.take() {
                let _ = dir.close();
            }
        }
    }
}

impl Managed {
    /// Spawns the server with the written config and waits until `SELECT 1` answers.
    fn spawn_and_wait(&mut self, dir: &Path) -> Result<(), HarnessError> {
        let log_dir = dir.join("log");
        let stdout = std::fs::File::create(log_dir.join("stdout.log"))
            .map_err(|e| HarnessError::io("create ClickHouse stdout log", e))?;
        let stderr = std::fs::File::create(log_dir.join("stderr.log"))
            .map_err(|e| HarnessError::io("create ClickHouse stderr log", e))?;
        let mut command = Command::new("clickhouse-server");
        command
            .arg(format!("--config-file={}", self.config.display()))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let mut child = spawn_guarded(command, "clickhouse-server (is it installed and on PATH?)")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.http_port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| HarnessError::io("wait for clickhouse-server", e))?
            {
                let logs = format!(
                    "{}\n{}",
                    log_tail(&log_dir.join("clickhouse-server.err.log"), 4000),
                    log_tail(&log_dir.join("stderr.log"), 2000)
                );
                if logs.contains("Address already in use") {
                    return Err(HarnessError::PortTaken {
                        ports: vec![self.http_port, self.tcp_port],
                    });
                }
                return Err(HarnessError::Start(
                    "clickhouse-server".into(),
                    format!("exited with {status} before answering; logs:\n{logs}"),
                ));
            }
            if select_one(addr) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = terminate(&mut child, Duration::from_secs(5));
                return Err(HarnessError::Start(
                    "clickhouse-server".into(),
                    format!(
                        "no answer to SELECT 1 on {addr} within {START_TIMEOUT:?}; log:\n{}",
                        log_tail(&log_dir.join("clickhouse-server.err.log"), 4000)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn select_one(addr: SocketAddr) -> bool {
    matches!(http::get_blocking(addr, "/?query=SELECT%201"), Ok(r) if r.status == 200 && r.body.trim() == "1")
}

/// Writes `config.xml` and `users.xml` into `dir`, derived from the system template and then
/// changed by `edit`.
fn write_config(
    dir: &Path,
    http_port: u16,
    tcp_port: u16,
    edit: &dyn Fn(String) -> String,
) -> Result<PathBuf, HarnessError> {
    let template_dir = Path::new(SYSTEM_CONFIG_DIR);
    let read = |name: &str| {
        std::fs::read_to_string(template_dir.join(name)).map_err(|e| {
            HarnessError::io(
                format!(
                    "read {}/{name} (install clickhouse-server: apt-get install -y clickhouse-server)",
                    template_dir.display()
                ),
                e,
            )
        })
    };
    let config = read("config.xml")?;
    let users = read("users.xml")?;
    for sub in ["data", "data/tmp", "data/user_files", "log"] {
        std::fs::create_dir_all(dir.join(sub))
            .map_err(|e| HarnessError::io(format!("create {sub}"), e))?;
    }
    let d = dir.display();
    let mut config = strip_comments(&config);
    for (tag, value) in [
        ("path", format!("{d}/data/")),
        ("tmp_path", format!("{d}/data/tmp/")),
        ("user_files_path", format!("{d}/data/user_files/")),
        ("log", format!("{d}/log/clickhouse-server.log")),
        ("errorlog", format!("{d}/log/clickhouse-server.err.log")),
        ("http_port", http_port.to_string()),
        ("tcp_port", tcp_port.to_string()),
    ] {
        config = replace_first_element(&config, tag, &value).ok_or_else(|| {
            HarnessError::Start(
                "clickhouse-server".into(),
                format!("the template config has no <{tag}> element"),
            )
        })?;
    }
    for tag in [
        "interserver_http_port",
        "format_schema_path",
        "https_port",
        "tcp_port_secure",
        "mysql_port",
        "listen_host",
    ] {
        config = remove_elements(&config, tag);
    }
    config = config.replacen(
        "<http_port>",
        "<listen_host>127.0.0.1</listen_host>\n    <http_port>",
        1,
    );
    let config = edit(config);
    let config_path = dir.join("config.xml");
    std::fs::write(&config_path, config).map_err(|e| HarnessError::io("write config.xml", e))?;
    std::fs::write(dir.join("users.xml"), users)
        .map_err(|e| HarnessError::io("write users.xml", e))?;
    Ok(config_path)
}

/// Removes `<!-- ... -->` comments so commented-out elements cannot be matched.
fn strip_comments(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        match rest[start..].find("-->") {
            Some(end) => rest = &rest[start + end + 3..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Replaces the text of the first `<tag>...</tag>` element (the top-level one in the template:
/// nested namesakes such as `<distributed_ddl><path>` come later in the file).
fn replace_first_element(xml: &str, tag: &str, value: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)?;
    let end = start + xml[start..].find(&close)?;
    Some(format!("{}{open}{value}{}", &xml[..start], &xml[end..]))
}

/// Removes every `<tag ...>...</tag>` or `<tag .../>` element, with or without attributes.
pub(crate) fn remove_elements_with_attributes(xml: &str, tag: &str) -> String {
    let mut out = xml.to_owned();
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut from = 0;
    while let Some(rel) = out[from..].find(&open) {
        let start = from + rel;
        let after = &out[start + open.len()..];
        if !after.starts_with([' ', '>', '/', '\n', '\t']) {
            from = start + open.len();
            continue;
        }
        let Some(gt) = after.find('>') else { break };
        let end = if after[..gt].ends_with('/') {
            start + open.len() + gt + 1
        } else {
            match out[start..].find(&close) {
                Some(c) => start + c + close.len(),
                None => break,
            }
        };
        out.replace_range(start..end, "");
        from = start;
    }
    out
}

/// Removes every `<tag>...</tag>` element.
fn remove_elements(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut out = xml.to_owned();
    while let Some(start) = out.find(&open) {
        let Some(rel_end) = out[start..].find(&close) else {
            break;
        };
        out.replace_range(start..start + rel_end + close.len(), "");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_config_elements() {
        let xml = "<y><!-- <https_port>1</https_port> --><path>/var/lib/clickhouse/</path><listen_host>::1</listen_host><listen_host>127.0.0.1</listen_host><http_port>8123</http_port><d><path>/zk</path></d></y>";
        let xml = strip_comments(xml);
        assert_eq!(
            xml,
            "<y><path>/var/lib/clickhouse/</path><listen_host>::1</listen_host><listen_host>127.0.0.1</listen_host><http_port>8123</http_port><d><path>/zk</path></d></y>"
        );
        let xml = replace_first_element(&xml, "path", "/tmp/x/").unwrap();
        let xml = remove_elements(&xml, "listen_host");
        assert_eq!(
            xml,
            "<y><path>/tmp/x/</path><http_port>8123</http_port><d><path>/zk</path></d></y>"
        );
        assert_eq!(replace_first_element(&xml, "nope", "1"), None);
    }

    #[test]
    fn removes_elements_with_attributes_and_self_closing_ones() {
        let xml = "<y><macros incl=\"macros\" optional=\"true\" /><macrosx>1</macrosx><remote_servers incl=\"r\"><a/></remote_servers><remote_servers>2</remote_servers></y>";
        let xml = remove_elements_with_attributes(xml, "macros");
        let xml = remove_elements_with_attributes(&xml, "remote_servers");
        assert_eq!(xml, "<y><macrosx>1</macrosx></y>");
    }

    #[test]
    fn unique_database_names_are_safe_and_distinct() {
        let a = unique_database("Collector-Test");
        let b = unique_database("Collector-Test");
        assert_ne!(a, b);
        assert!(a.starts_with("collector_test_"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
        assert!(unique_database("9x").starts_with("t_9x_"));
    }
}
