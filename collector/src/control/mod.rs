//! The control plane: enrollment tokens, agent credentials and the batch ledger, in SQLite or
//! PostgreSQL through `sqlx::AnyPool`.
//!
//! All SQL is written once in the dialect both accept: `$1` placeholders (SQLite reads them as
//! numbered parameters), `BIGINT` millisecond timestamps instead of date types,
//! `INSERT .. ON CONFLICT (..) DO NOTHING`. Verified agent credentials are cached in memory
//! with a bounded revocation delay (`credential_cache`); everything else reads the database.

pub mod agents;
pub mod credential_cache;
pub mod ledger;
pub mod ledger_compaction;
pub mod ledger_group;
pub mod migrations;
pub mod secrets;
pub mod tokens;

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{
    AnyPool, Executor,
    any::{AnyPoolOptions, install_default_drivers},
};

/// Errors of the control database.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control database {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("control database migration {version} ({name}): {source}")]
    Migration {
        version: i64,
        name: &'static str,
        source: sqlx::Error,
    },
    #[error("control database: {0}")]
    Query(#[from] sqlx::Error),
    /// A group-commit transaction failed; every operation of the group shares the error.
    #[error("control database: {0}")]
    Grouped(std::sync::Arc<sqlx::Error>),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
}

/// Which database is behind the pool (a few statements differ: locking, pragmas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool to the control database.
#[derive(Debug, Clone)]
pub struct ControlDb {
    pool: AnyPool,
    backend: Backend,
}

/// Milliseconds since the Unix epoch on this machine's clock. Leases compare these across
/// collectors, so their clocks must agree to well within the lease (NTP is plenty).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Adds `mode=rwc` to a SQLite URL without an explicit mode, so the file is created if missing.
fn sqlite_url_with_create(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

impl ControlDb {
    /// Connects (creating a SQLite file if missing) without running migrations.
    pub async fn connect(url: &str) -> Result<Self, ControlError> {
        install_default_drivers();
        let (backend, url_to_use) = if url.starts_with("sqlite:") {
            (Backend::Sqlite, sqlite_url_with_create(url))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(ControlError::Invalid(format!(
                "database_url: {url:?} is neither sqlite:... nor postgres://..."
            )));
        };
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers (credential checks) run beside the single writer;
                        // NORMAL sync is durable across process crashes and, in WAL mode,
                        // only risks the last transactions on power loss, which the ledger
                        // tolerates (a lost 'stored' mark makes a resend recover, not duplicate).
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            });
        let redacted = redact_url(url);
        let pool = options
            .connect(&url_to_use)
            .await
            .map_err(|source| ControlError::Connect {
                url: redacted,
                source,
            })?;
        Ok(Self { pool, backend })
    }

    /// Connects and applies pending control-plane migrations.
    pub async fn open(url: &str) -> Result<Self, ControlError> {
        let db = Self::connect(url).await?;
        migrations::run(&db).await?;
        Ok(db)
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// `SELECT 1`, for readiness checks.
    pub async fn ping(&self) -> Result<(), ControlError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The URL with any password replaced, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    //! Real databases for the control-plane tests: a SQLite file in a temp dir, and a private
    //! PostgreSQL server when its binaries are installed.

    use super::*;
    use std::{
        path::{Path, PathBuf},
        process::{Child, Command, Stdio},
        time::{Duration, Instant},
    };

    pub async fn sqlite() -> (tempfile::TempDir, ControlDb) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("control.db").display());
        let db = ControlDb::open(&url).await.unwrap();
        (dir, db)
    }

    const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

    /// A private PostgreSQL server run as user `postgres` in a temp dir on a free port.
    pub struct PrivatePostgres {
        child: Child,
        _dir: tempfile::TempDir,
        pub url: String,
    }

    impl Drop for PrivatePostgres {
        fn drop(&mut self) {
            // SIGTERM via kill(1) on our own child's pid only (smart shutdown), then reap.
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(self.child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn run_as_postgres(args: &[&str]) -> bool {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Starts a server, or returns None (with a printed reason) when PostgreSQL is missing.
    pub fn postgres() -> Option<PrivatePostgres> {
        if !Path::new(PG_BIN).join("postgres").exists() {
            eprintln!("skipping PostgreSQL test: {PG_BIN}/postgres not installed");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("fp-collector-pg")
            .tempdir_in("/tmp")
            .unwrap();
        let data: PathBuf = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status();
        let data_s = data.to_str().unwrap();
        assert!(
            run_as_postgres(&[
                &format!("{PG_BIN}/initdb"),
                "-D",
                data_s,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync"
            ]),
            "initdb failed"
        );
        let port = free_port();
        let child = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/postgres"))
            .args([
                "-D",
                data_s,
                "-p",
                &port.to_string(),
                "-k",
                dir.path().to_str().unwrap(),
            ])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pg = PrivatePostgres {
            child,
            _dir: dir,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(pg)
    }

    /// Connects to `url` (no migrations), retrying while the server finishes starting up.
    pub async fn connect_retrying(url: &str) -> ControlDb {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match ControlDb::connect(url).await {
                Ok(db) => return db,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("PostgreSQL not reachable: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_url_gets_create_mode() {
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db"),
            "sqlite://a.db?mode=rwc"
        );
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db?cache=shared"),
            "sqlite://a.db?cache=shared&mode=rwc"
        );
        assert_eq!(
            sqlite_url_with_create("sqlite://a.db?mode=ro"),
            "sqlite://a.db?mode=ro"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }

    #[tokio::test]
    async fn sqlite_file_is_created_in_wal_mode() {
        let (dir, db) = test_support::sqlite().await;
        assert!(dir.path().join("control.db").exists());
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        db.ping().await.unwrap();
    }
}
