//! The end-to-end test harness: real servers as child processes of the test binary.
//!
//! - [`clickhouse`]: [`shared()`](clickhouse::shared) (one ClickHouse per test binary, or
//!   `CLICKHOUSE_URL`), [`private()`](clickhouse::private) (a server a test may stop and
//!   start), [`unique_database`](clickhouse::unique_database).
//! - [`postgres`]: a private PostgreSQL 15 (or `FLEETPULSE_TEST_POSTGRES_URL`) with one fresh
//!   database per call.
//! - [`collector`]: the real `fleetpulse-collector` binary as a subprocess, plus its CLI.
//! - [`fixture`]: a collector on the shared ClickHouse with its own database, in one call.
//! - [`graph`]: a local server playing Microsoft Graph and the Entra token endpoint.
//! - [`tls`]: a throw-away CA with server and client certificates.
//! - [`synthetic`]: deterministic, realistic telemetry; [`rows`]: the raw ClickHouse rows.
//! - [`poll_until`] / [`poll_eq`]: wait for a condition with a deadline (never sleep to
//!   synchronise).
//!
//! Every child process is spawned so the kernel kills it when the test process dies, and every
//! port and directory is private, so tests run in parallel without clashing.

pub mod clickhouse;
pub mod cluster;
pub mod collector;
pub mod fixture;
pub mod graph;
pub mod http;
pub mod postgres;
pub mod process;
pub mod receivers;
pub mod rows;
pub mod synthetic;
pub mod tls;

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

pub use self::clickhouse::{ClickHouseServer, private, shared, unique_database};
pub use self::collector::{
    Collector, CollectorBuilder, Registered, batch, bearer, recent, register_request,
};
pub use self::fixture::{Fixture, now_secs};
pub use self::postgres::Postgres;

/// Everything that can go wrong while setting up or talking to a harness-managed process.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A filesystem or process operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// The program could not be spawned at all.
    #[error("cannot spawn {0}: {1}")]
    Spawn(String, #[source] std::io::Error),
    /// No free port could be found.
    #[error("cannot find a free port: {0}")]
    FreePort(#[source] std::io::Error),
    /// A server lost the race for its probed ports; retried with new ones.
    #[error("ports {ports:?} were taken by another process")]
    PortTaken {
        /// The ports that were probed free but could not be bound.
        ports: Vec<u16>,
    },
    /// A server started but did not become ready, or exited early.
    #[error("{0} did not start: {1}")]
    Start(String, String),
    /// A stop/start was requested on a server the harness does not manage (`CLICKHOUSE_URL`).
    #[error("this ClickHouse server is external (CLICKHOUSE_URL); use clickhouse::private()")]
    NotManaged,
    /// A ClickHouse query failed.
    #[error("ClickHouse query {0:?} failed: {1}")]
    ClickHouse(String, #[source] ::clickhouse::error::Error),
    /// An HTTP request failed.
    #[error("{0}: {1}")]
    Http(String, #[source] std::io::Error),
    /// A binary the harness needs has not been built.
    #[error("{0} not found at {1}: run `cargo build --workspace --bins` first")]
    MissingBinary(String, String),
    /// A CLI command exited unsuccessfully.
    #[error("`{command}` failed with {status}: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// Its standard error.
        stderr: String,
    },
    /// A gRPC call made by the harness failed.
    #[error("{0}: {1}")]
    Grpc(String, #[source] tonic::Status),
    /// A gRPC connection could not be made.
    #[error("cannot connect to {0}: {1}")]
    Connect(String, #[source] tonic::transport::Error),
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>, e: std::io::Error) -> Self {
        Self::Io(what.into(), e)
    }
}

/// Calls `f` every 50 ms until it returns `Ok`, and returns that value.
///
/// # Panics
/// When `timeout` passes first, with `what` and the last error in the message, so a failing
/// test says what it was waiting for and what it saw instead.
pub async fn poll_until<T, E, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(value) => return value,
            Err(e) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last result: {e:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Calls `f` every 50 ms until it returns `Ok(expected)`.
///
/// # Panics
/// When `timeout` passes first, showing the expected and the last value (or error).
pub async fn poll_eq<T, E, F, Fut>(timeout: Duration, what: &str, expected: T, mut f: F)
where
    T: PartialEq + Debug,
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = f().await;
        if matches!(&last, Ok(v) if *v == expected) {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what} to be {expected:?}; last result: {last:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn poll_until_returns_first_ok() {
        let mut n = 0;
        let v = poll_until(Duration::from_secs(5), "n to reach 3", || {
            n += 1;
            let current = n;
            async move {
                if current >= 3 {
                    Ok(current)
                } else {
                    Err(current)
                }
            }
        })
        .await;
        assert_eq!(v, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 100ms waiting for never; last result: \"nope\"")]
    async fn poll_until_panics_with_last_error() {
        poll_until(Duration::from_millis(100), "never", || async {
            Err::<(), _>("nope")
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for count to be 2; last result: Ok(1)")]
    async fn poll_eq_shows_last_value() {
        poll_eq(Duration::from_millis(100), "count", 2, || async {
            Ok::<_, ()>(1)
        })
        .await;
    }
}
