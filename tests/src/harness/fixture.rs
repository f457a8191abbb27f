//! The usual arrangement of an end-to-end test: a collector on the shared ClickHouse with a
//! database of its own, plus shortcuts to enroll agents and count stored rows.

use std::time::{SystemTime, UNIX_EPOCH};

use super::HarnessError;
use super::clickhouse::{ClickHouseServer, shared, unique_database};
use super::collector::{Collector, CollectorBuilder, Registered};

/// A running collector writing to its own database on a ClickHouse server.
pub struct Fixture {
    /// The ClickHouse server (shared per test binary unless built with [`Fixture::on`]).
    pub ch: &'static ClickHouseServer,
    /// The collector's ClickHouse database (unique to this fixture).
    pub db: String,
    /// The collector subprocess.
    pub collector: Collector,
}

impl Fixture {
    /// A default collector on the shared server, database named after `prefix`.
    pub async fn start(prefix: &str) -> Result<Self, HarnessError> {
        Self::start_with(prefix, |b| b).await
    }

    /// Like [`Fixture::start`], with the builder adjusted by `configure` (flags, TLS, ...).
    pub async fn start_with(
        prefix: &str,
        configure: impl FnOnce(CollectorBuilder) -> CollectorBuilder,
    ) -> Result<Self, HarnessError> {
        Self::on(shared(), prefix, configure).await
    }

    /// Like [`Fixture::start_with`] on a given server (e.g. a leaked private one).
    pub async fn on(
        ch: &'static ClickHouseServer,
        prefix: &str,
        configure: impl FnOnce(CollectorBuilder) -> CollectorBuilder,
    ) -> Result<Self, HarnessError> {
        let db = unique_database(prefix);
        let collector = configure(Collector::builder(ch.url(), &db)).start().await?;
        Ok(Self { ch, db, collector })
    }

    /// Creates an enrollment token for `tenant` and registers `device_id` with it.
    pub async fn enroll(&self, tenant: &str, device_id: &str) -> Result<Registered, HarnessError> {
        let token = self.collector.token_create(tenant).await?;
        self.collector.register(&token, device_id).await
    }

    /// `SELECT count() FROM <db>.<table>`.
    pub async fn count(&self, table: &str) -> Result<u64, HarnessError> {
        self.ch
            .count(&format!("SELECT count() FROM {}.{table}", self.db), &[])
            .await
    }

    /// `SELECT count() FROM <db>.<table> WHERE <condition>` with `?` bound to `binds`.
    pub async fn count_where(
        &self,
        table: &str,
        condition: &str,
        binds: &[&str],
    ) -> Result<u64, HarnessError> {
        self.ch
            .count(
                &format!("SELECT count() FROM {}.{table} WHERE {condition}", self.db),
                binds,
            )
            .await
    }
}

/// Seconds since the epoch now, as ClickHouse `DateTime` columns hold them.
pub fn now_secs() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}
