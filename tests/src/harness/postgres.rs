//! A private PostgreSQL 15 server for control-plane tests.
//!
//! `initdb` and `postgres` refuse to run as root, so when the tests run as root the server runs
//! as the `postgres` system user (the temp dir is chowned to it). Trust authentication on
//! loopback only; the unix socket lives in the temp dir, so nothing clashes with a system
//! PostgreSQL. Set `FLEETPULSE_TEST_POSTGRES_URL` (e.g. `postgres://user:pw@host:5432`) to use
//! an existing server instead; databases are then created on it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use tempfile::TempDir;

use super::HarnessError;
use super::process::{free_port, log_tail, spawn_guarded, terminate};

/// Where Debian's postgresql-15 package puts its server binaries.
const DEFAULT_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const PORT_ATTEMPTS: usize = 5;

static DB_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A PostgreSQL server: private (killed and removed on drop) or external.
pub struct Postgres {
    /// `postgres://user@host:port` without a database path.
    base_url: String,
    bin_dir: PathBuf,
    host: String,
    port: u16,
    user: String,
    child: Option<Child>,
    dir: Option<TempDir>,
}

/// The uid/gid to run the server as: `postgres` when we are root, ourselves otherwise.
fn server_identity() -> Result<Option<(u32, u32)>, HarnessError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: getpwnam with a NUL-terminated literal; the result is read immediately, before
    // any other call could overwrite the static buffer (tests call this once per server).
    let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if pw.is_null() {
        return Err(HarnessError::Start(
            "postgres".into(),
            "running as root but there is no `postgres` user (apt-get install -y postgresql)"
                .into(),
        ));
    }
    // SAFETY: non-null pointer returned by getpwnam.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

fn chown(path: &Path, ident: Option<(u32, u32)>) -> Result<(), HarnessError> {
    if let Some((uid, gid)) = ident {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| HarnessError::io(format!("chown {}", path.display()), e))?;
    }
    Ok(())
}

impl Postgres {
    /// `FLEETPULSE_TEST_POSTGRES_URL` when set, otherwise a new private server.
    pub fn start() -> Result<Self, HarnessError> {
        let bin_dir = std::env::var_os("FLEETPULSE_TEST_POSTGRES_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(default_bin_dir);
        if let Ok(url) = std::env::var("FLEETPULSE_TEST_POSTGRES_URL")
            && !url.trim().is_empty()
        {
            return Ok(Self::external(url.trim(), bin_dir));
        }
        Self::start_private(bin_dir)
    }

    fn external(url: &str, bin_dir: PathBuf) -> Self {
        let base = url.trim_end_matches('/');
        // postgres://user[:pw]@host:port[/db]
        let without_scheme = base.split_once("://").map_or(base, |(_, r)| r);
        let (userinfo, hostpart) = without_scheme
            .rsplit_once('@')
            .unwrap_or(("postgres", without_scheme));
        let hostport = hostpart.split('/').next().unwrap_or(hostpart);
        let (host, port) = hostport
            .rsplit_once(':')
            .map_or((hostport, 5432), |(h, p)| (h, p.parse().unwrap_or(5432)));
        let user = userinfo.split(':').next().unwrap_or("postgres");
        let scheme_and_auth = base.split_once(hostpart).map_or(base, |(a, _)| a);
        Self {
            base_url: format!("{scheme_and_auth}{hostport}"),
            bin_dir,
            host: host.to_owned(),
            port,
            user: user.to_owned(),
            child: None,
            dir: None,
        }
    }

    fn start_private(bin_dir: PathBuf) -> Result<Self, HarnessError> {
        let ident = server_identity()?;
        let dir = tempfile::Builder::new()
            .prefix("fleetpulse-postgres-")
            .tempdir()
            .map_err(|e| HarnessError::io("create PostgreSQL temp dir", e))?;
        chown(dir.path(), ident)?;
        let data = dir.path().join("data");
        let log = dir.path().join("initdb.log");
        let log_file =
            std::fs::File::create(&log).map_err(|e| HarnessError::io("create initdb log", e))?;
        chown(&log, ident)?;
        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(&data)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(
                log_file
                    .try_clone()
                    .map_err(|e| HarnessError::io("dup log", e))?,
            )
            .stderr(log_file);
        if let Some((uid, gid)) = ident {
            initdb.uid(uid).gid(gid);
        }
        let mut child = spawn_guarded(initdb, &format!("{}/initdb", bin_dir.display()))?;
        let status = child
            .wait()
            .map_err(|e| HarnessError::io("wait for initdb", e))?;
        if !status.success() {
            return Err(HarnessError::Start(
                "initdb".into(),
                format!("exited with {status}:\n{}", log_tail(&log, 4000)),
            ));
        }

        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            match spawn_server(&bin_dir, dir.path(), &data, port, ident) {
                Ok(child) => {
                    return Ok(Self {
                        base_url: format!("postgres://postgres@127.0.0.1:{port}"),
                        bin_dir,
                        host: "127.0.0.1".into(),
                        port,
                        user: "postgres".into(),
                        child: Some(child),
                        dir: Some(dir),
                    });
                }
                Err(e @ HarnessError::PortTaken { .. }) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| HarnessError::Start("postgres".into(), "no free port".into())))
    }

    /// The postmaster's process id (a private server only); its backends are its children.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server URL without a database, e.g. `postgres://postgres@127.0.0.1:41234`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Creates a fresh, uniquely named database and returns its URL
    /// (`postgres://postgres@127.0.0.1:PORT/fp_<pid>_<n>`), for `--database-url`.
    pub fn create_database(&self, prefix: &str) -> Result<String, HarnessError> {
        let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let salt: u32 = rand::random();
        let clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(30)
            .collect();
        let name = format!("{clean}_{}_{n}_{salt:08x}", std::process::id());
        let output = Command::new(self.bin_dir.join("createdb"))
            .args([
                "-h",
                &self.host,
                "-p",
                &self.port.to_string(),
                "-U",
                &self.user,
            ])
            .arg(&name)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| HarnessError::Spawn(format!("{}/createdb", self.bin_dir.display()), e))?;
        if !output.status.success() {
            return Err(HarnessError::Command {
                command: format!("createdb {name}"),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(format!("{}/{name}", self.base_url))
    }
}

/// PostgreSQL 15 (Debian 12) when installed, else the newest `/usr/lib/postgresql/N/bin`
/// (Ubuntu ships other major versions; the control plane works with any supported one).
fn default_bin_dir() -> PathBuf {
    let preferred = PathBuf::from(DEFAULT_BIN_DIR);
    if preferred.join("postgres").is_file() {
        return preferred;
    }
    std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major)
        .map_or(preferred, |(_, bin)| bin)
}

fn spawn_server(
    bin_dir: &Path,
    dir: &Path,
    data: &Path,
    port: u16,
    ident: Option<(u32, u32)>,
) -> Result<Child, HarnessError> {
    let log = dir.join(format!("postgres-{port}.log"));
    let log_file =
        std::fs::File::create(&log).map_err(|e| HarnessError::io("create postgres log", e))?;
    chown(&log, ident)?;
    let mut command = Command::new(bin_dir.join("postgres"));
    command
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-k"])
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=200",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(
            log_file
                .try_clone()
                .map_err(|e| HarnessError::io("dup log", e))?,
        )
        .stderr(log_file);
    if let Some((uid, gid)) = ident {
        command.uid(uid).gid(gid);
    }
    let mut child = spawn_guarded(command, &format!("{}/postgres", bin_dir.display()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| HarnessError::io("wait for postgres", e))?
        {
            let tail = log_tail(&log, 4000);
            if tail.contains("Address already in use") {
                return Err(HarnessError::PortTaken { ports: vec![port] });
            }
            return Err(HarnessError::Start(
                "postgres".into(),
                format!("exited with {status}:\n{tail}"),
            ));
        }
        let ready = Command::new(bin_dir.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .status()
            .map_err(|e| HarnessError::Spawn(format!("{}/pg_isready", bin_dir.display()), e))?;
        if ready.success() {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            let _ = terminate(&mut child, Duration::from_secs(5));
            return Err(HarnessError::Start(
                "postgres".into(),
                format!(
                    "not accepting connections within {START_TIMEOUT:?}:\n{}",
                    log_tail(&log, 4000)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM is PostgreSQL's "smart" shutdown; fsync is off, so it is quick.
            let _ = terminate(&mut child, Duration::from_secs(10));
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_external_urls() {
        let pg = Postgres::external(
            "postgres://app:secret@db.example:6543/ignored",
            PathBuf::from("/x"),
        );
        assert_eq!(pg.base_url(), "postgres://app:secret@db.example:6543");
        assert_eq!(
            (pg.host.as_str(), pg.port, pg.user.as_str()),
            ("db.example", 6543, "app")
        );
    }
}
