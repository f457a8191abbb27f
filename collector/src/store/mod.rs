//! ClickHouse: the raw tables, their migrations, the batched writer, recovery queries and
//! retention. Talks HTTP through the official `clickhouse` crate with schema validation off
//! (18.16 lacks `RowBinaryWithNamesAndTypes`), so inserts are plain RowBinary with LZ4.

pub mod dedup;
pub mod event_rowbinary;
pub mod external;
pub mod migrations;
pub mod recovery;
pub mod retention;
pub mod rows;
pub mod writer;

use std::time::Duration;

use crate::config::Config;

/// Errors talking to ClickHouse.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("ClickHouse did not answer within {0:?}")]
    Timeout(Duration),
    #[error("ClickHouse migration {version} ({name}), statement {statement}: {source}")]
    Migration {
        version: u32,
        name: &'static str,
        statement: usize,
        source: clickhouse::error::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("ClickHouse cluster mode: {0}")]
    Cluster(#[from] fleetpulse_chcluster::RenderError),
}

impl StoreError {
    /// Whether ClickHouse could not be reached at all (connection refused or reset, DNS, a
    /// timeout), as opposed to answering with an error: start-up waits for the former and
    /// fails on the latter.
    pub fn is_unreachable(&self) -> bool {
        use clickhouse::error::Error as E;
        match self {
            StoreError::Timeout(_) => true,
            StoreError::ClickHouse(e) | StoreError::Migration { source: e, .. } => {
                matches!(e, E::Network(_) | E::TimedOut)
            }
            StoreError::Invalid(_) | StoreError::Cluster(_) => false,
        }
    }
}

/// Checks that `name` can be spliced into SQL as a database name: `[A-Za-z_][A-Za-z0-9_]*`,
/// at most 64 characters. The only identifier ever formatted into SQL text.
pub fn validate_identifier(name: &str) -> Result<(), String> {
    if fleetpulse_chcluster::is_identifier(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not an identifier ([A-Za-z_][A-Za-z0-9_]*, at most 64 characters)"
        ))
    }
}

/// A handle on the ClickHouse server and database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: clickhouse::Client,
    /// The same server for queries that carry external data (the duplicate lookups).
    lookups: external::ExternalQuery,
    db: String,
    timeout: Duration,
    /// ClickHouse cluster mode: the cluster's name (validated), see `fleetpulse_chcluster`.
    cluster: Option<String>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub fn new(config: &Config) -> Result<Self, StoreError> {
        validate_identifier(&config.clickhouse_database).map_err(StoreError::Invalid)?;
        let compression = if config
            .clickhouse_compression
            .use_lz4(&config.clickhouse_url)
        {
            clickhouse::Compression::Lz4
        } else {
            clickhouse::Compression::None
        };
        let roots = fleetpulse_net::ClickHouseRoots::for_url(
            &config.clickhouse_url,
            config.clickhouse_ca_file.as_deref(),
        )
        .map_err(|e| StoreError::Invalid(format!("clickhouse_ca_file: {e}")))?;
        let connector = fleetpulse_net::clickhouse_connector(&roots)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let session_settings = match &config.clickhouse_cluster {
            Some(_) => fleetpulse_chcluster::SESSION_SETTINGS,
            None => &[],
        };
        let lookups = external::ExternalQuery::new(
            connector.clone(),
            &config.clickhouse_url,
            &config.clickhouse_database,
            config.clickhouse_user.as_deref(),
            config.clickhouse_password.as_deref(),
            session_settings,
        )
        .map_err(|e| StoreError::Invalid(format!("clickhouse_url: {e}")))?;
        let mut client = clickhouse::Client::with_http_client(
            fleetpulse_net::clickhouse_http_builder().build(connector),
        )
        .with_url(&config.clickhouse_url)
        .with_compression(compression)
        .with_validation(false);
        if let Some(user) = &config.clickhouse_user {
            client = client.with_user(user);
        }
        if let Some(password) = &config.clickhouse_password {
            client = client.with_password(password);
        }
        if let Some(cluster) = &config.clickhouse_cluster {
            fleetpulse_chcluster::validate_cluster_name(cluster).map_err(StoreError::Invalid)?;
            for (name, value) in fleetpulse_chcluster::SESSION_SETTINGS {
                client = client.with_setting(*name, *value);
            }
        }
        Ok(Self {
            client,
            lookups,
            db: config.clickhouse_database.clone(),
            timeout: config.clickhouse_timeout(),
            cluster: config.clickhouse_cluster.clone(),
        })
    }

    pub fn client(&self) -> &clickhouse::Client {
        &self.client
    }

    /// Queries with external data (see [`external`]).
    pub fn lookups(&self) -> &external::ExternalQuery {
        &self.lookups
    }

    /// The validated database name.
    pub fn db(&self) -> &str {
        &self.db
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The ClickHouse cluster's name in cluster mode; `None` for a single server.
    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// Runs `fut` under the ClickHouse timeout.
    pub async fn timed<T>(
        &self,
        fut: impl Future<Output = Result<T, clickhouse::error::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// `SELECT 1`, for readiness and recovery probes.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.timed(self.client.query("SELECT 1").execute()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        for ok in ["fleetpulse", "_x", "a1_b2", "A"] {
            validate_identifier(ok).unwrap();
        }
        for bad in ["", "1abc", "a-b", "a.b", "a b", "a`b", "é", &"a".repeat(65)] {
            assert_eq!(
                validate_identifier(bad).unwrap_err(),
                format!(
                    "{bad:?} is not an identifier ([A-Za-z_][A-Za-z0-9_]*, at most 64 characters)"
                )
            );
        }
    }
}
