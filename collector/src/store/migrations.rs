//! Versioned ClickHouse migrations from `collector/migrations/clickhouse/*.sql`, embedded in the
//! binary and applied at start and by `fleetpulse-collector migrate`.
//!
//! Each file is split into statements on `;` (after dropping `--` comments; the files must not
//! put `;` inside literals), `{db}` is replaced by the validated database name, and the version
//! is recorded in `{db}.schema_migrations` once all its statements ran. Every statement is
//! `IF NOT EXISTS`, so concurrent or interrupted runs are harmless; a version recorded twice by
//! racing collectors is read back as one.

use std::time::Duration;

use clickhouse::Row;
use fleetpulse_chcluster::ClusterSchema;
use serde::Deserialize;

use super::{Store, StoreError};

/// One embedded migration file.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "0001_raw_tables",
    sql: include_str!("../../migrations/clickhouse/0001_raw_tables.sql"),
}];

/// Splits a migration file into statements: drops `--` comments and blank pieces.
pub fn split_statements(sql: &str) -> Vec<String> {
    let without_comments: String = sql
        .lines()
        .map(|line| match line.find("--") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The statements of `m` for database `db` (already validated as an identifier).
pub fn render(m: &Migration, db: &str) -> Vec<String> {
    split_statements(m.sql)
        .into_iter()
        .map(|s| s.replace("{db}", db))
        .collect()
}

/// The statements of `m` for database `db`, rendered for the cluster when `cluster` is given
/// (replicated local tables, Distributed tables, `ON CLUSTER`; see `fleetpulse_chcluster`).
pub fn render_for(
    m: &Migration,
    db: &str,
    cluster: Option<&mut ClusterSchema>,
) -> Result<Vec<String>, StoreError> {
    let statements = render(m, db);
    match cluster {
        None => Ok(statements),
        Some(schema) => {
            let mut out = Vec::new();
            for s in &statements {
                out.extend(schema.render(s)?);
            }
            Ok(out)
        }
    }
}

/// The bookkeeping table of applied versions: on every server of a cluster (replicated to all
/// of them), so collectors connected to different servers agree on what ran.
fn bookkeeping_table(db: &str, cluster: Option<&ClusterSchema>) -> Result<String, StoreError> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {db}.schema_migrations \
         (version UInt32, name String, applied_at DateTime) \
         ENGINE = MergeTree ORDER BY version"
    );
    match cluster {
        None => Ok(sql),
        Some(schema) => Ok(schema.render_everywhere(&sql)?),
    }
}

#[derive(Row, Deserialize)]
struct VersionRow {
    version: u32,
}

/// Creates the database if missing and applies every migration not yet recorded. Returns the
/// versions applied by this call.
///
/// In cluster mode every statement is `ON CLUSTER`: it returns once every server ran it, so
/// statements get the distributed DDL timeout instead of the query timeout. Two collectors
/// migrating at once queue the same `IF NOT EXISTS` statements twice; the second copy is a
/// no-op on every server.
pub async fn run(store: &Store) -> Result<Vec<u32>, StoreError> {
    let db = store.db();
    let client = store.client();
    let mut cluster = store.cluster().map(|c| ClusterSchema::new(c, db));
    let ddl_timeout = if cluster.is_some() {
        Duration::from_secs(fleetpulse_chcluster::DDL_TIMEOUT_SECS + 20)
    } else {
        store.timeout()
    };
    let ddl = |sql: String| async move {
        match tokio::time::timeout(ddl_timeout, client.query(&sql).execute()).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout(ddl_timeout)),
        }
    };
    ddl(match &cluster {
        Some(schema) => schema.create_database(),
        None => format!("CREATE DATABASE IF NOT EXISTS {db}"),
    })
    .await?;
    ddl(bookkeeping_table(db, cluster.as_ref())?).await?;
    let done: Vec<VersionRow> = store
        .timed(
            client
                .query(&format!(
                    "SELECT DISTINCT version FROM {db}.schema_migrations"
                ))
                .fetch_all::<VersionRow>(),
        )
        .await?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        // Rendered even when applied: the cluster renderer learns the tables later
        // migrations refer to.
        let statements = render_for(m, db, cluster.as_mut())?;
        if done.iter().any(|v| v.version == m.version) {
            continue;
        }
        for (i, statement) in statements.iter().enumerate() {
            match tokio::time::timeout(ddl_timeout, client.query(statement).execute()).await {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    return Err(StoreError::Migration {
                        version: m.version,
                        name: m.name,
                        statement: i + 1,
                        source,
                    });
                }
                Err(_) => return Err(StoreError::Timeout(ddl_timeout)),
            }
        }
        store
            .timed(
                client
                    .query(&format!(
                        "INSERT INTO {db}.schema_migrations (version, name, applied_at) \
                         VALUES (?, ?, now())"
                    ))
                    .bind(m.version)
                    .bind(m.name)
                    .execute(),
            )
            .await?;
        tracing::info!(
            version = m.version,
            name = m.name,
            cluster = store.cluster(),
            "applied ClickHouse migration"
        );
        applied.push(m.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_and_drops_comments() {
        let sql =
            "-- header; with a semicolon\nCREATE TABLE a (x UInt8); -- trailing\n\n  ;\nSELECT 1\n";
        assert_eq!(
            split_statements(sql),
            vec!["CREATE TABLE a (x UInt8)", "SELECT 1"]
        );
    }

    #[test]
    fn raw_tables_render_three_create_statements_for_the_database() {
        let statements = render(&MIGRATIONS[0], "fp_test");
        assert_eq!(statements.len(), 3);
        for (s, table) in
            statements
                .iter()
                .zip(["enrollment_events", "device_states", "agent_heartbeats"])
        {
            assert!(
                s.starts_with(&format!("CREATE TABLE IF NOT EXISTS fp_test.{table}")),
                "{s}"
            );
            assert!(!s.contains("{db}"));
            assert!(!s.contains("--"));
        }
    }

    /// Every migration file renders for a cluster: a new statement form the renderer does not
    /// know fails here, not on an operator's cluster.
    #[test]
    fn every_migration_renders_for_a_cluster() {
        let mut schema = ClusterSchema::new("fleet", "fp_test");
        let mut tables = 0;
        for m in MIGRATIONS {
            let statements = render_for(m, "fp_test", Some(&mut schema)).unwrap();
            assert!(statements.iter().all(|s| s.contains(" ON CLUSTER fleet ")));
            tables += statements.len() / 2;
        }
        for table in ["enrollment_events", "device_states", "agent_heartbeats"] {
            assert!(schema.is_distributed(table), "{table}");
        }
        assert_eq!(tables, 3);
        assert!(
            bookkeeping_table("fp_test", Some(&schema))
                .unwrap()
                .contains("ReplicatedMergeTree('/clickhouse/tables/all/fp_test/schema_migrations', '{shard}_{replica}')")
        );
    }

    #[test]
    fn versions_are_increasing() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
    }
}
