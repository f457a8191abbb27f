//! Analyzer-owned ClickHouse objects (rollup tables and the materialized views feeding them)
//! and their versioned migrations, recorded in `{db}.analyzer_schema_migrations`.
//!
//! # Backfill without double counting
//! A view only sees rows inserted after it exists, so history has to be copied once. Each
//! migration with views picks a cutover `C` = server `now()` + 1 s and creates its views with
//! `WHERE received_at >= C`; rows with `received_at < C` are copied by a backfill
//! `INSERT .. SELECT .. WHERE received_at < C`, run only once the server clock has passed
//! `C + grace`. With collector clocks within the grace of the server's and batches written
//! within the grace of being received, every raw row lands in exactly one of the two paths.
//! The state `backfilling` is recorded before the copy: a run that finds it (a crash
//! mid-copy) drops the rollup objects and rebuilds them with a new cutover, since a partial
//! `INSERT .. SELECT` cannot be told apart from a complete one. Analyzers take a lease in the
//! control database first, so two starting at once migrate one after the other ([`lease`]).
//!
//! # Replacing rollups
//! Migration 0003 replaces the rollups of 0001 and 0002 (see its SQL for why). A database that
//! has them builds the new ones from raw rows with 0003's own cutover and backfill, then drops
//! the old objects; a fresh database never creates them (they are `retired`). Queries only
//! read 0003's tables, so the rollups are rebuilt from raw exactly once.
//!
//! # Cluster mode
//! With a cluster name, every statement is rendered by `fleetpulse_chcluster`: rollups are
//! replicated `*_local` tables on every shard, fed by views on the shard's local raw table
//! (each shard aggregates the rows it stores; a row lives on exactly one shard), and read
//! through Distributed tables of the usual names, so queries merge the states of all shards.
//! The backfill runs through the Distributed tables. A replicated table drops a block it
//! already has (same checksum), and a view's block of a dropped insert is dropped with it, so
//! an insert retried inside the cluster never reaches a rollup twice.
//!
//! The cutover is per shard in effect: a shard's view must exist before the first row with
//! `received_at >= C` reaches that shard. `ON CLUSTER` DDL reaches the servers one statement
//! at a time, so in cluster mode tables are created first, then `C` is chosen with a lead of
//! [`CLUSTER_LEAD_PER_VIEW`] per view, the views are created, and the runner checks that the
//! last one returned (on every server) before `C`; otherwise it drops the migration's objects
//! and rebuilds it with a longer lead (a crash in between leaves state `backfilling`, which the
//! next run rebuilds too).
//!
//! Migrations are serialised across analyzers by a lease in the control database
//! ([`lease`]): the second analyzer waits, then finds the migration applied.

use std::time::Duration;

use clickhouse::Client;
use serde::Deserialize;
use thiserror::Error;

use fleetpulse_chcluster::{ClusterSchema, RenderError};

use crate::query::sql::{MESSAGE_KEY_SQL, valid_identifier};

pub mod lease;
pub mod spans;

/// Cluster mode: how far ahead of the server clock the cutover is placed per view to create,
/// so that every view exists on every server before `C` (see the module docs).
/// (`ON CLUSTER` DDL took ~0.2 s per statement for 2 x 2 servers here.) A run whose views came
/// too late is rebuilt at once with four times the lead, up to [`CLUSTER_ATTEMPTS`] times.
pub const CLUSTER_LEAD_PER_VIEW: Duration = Duration::from_millis(500);
/// Attempts at creating a migration's views before its cutover in cluster mode.
pub const CLUSTER_ATTEMPTS: u32 = 3;

/// The collector's raw tables, created here too (idempotently) so that the analyzer can run
/// against a database the collector has not initialised yet; the views need them.
const RAW_TABLES_SQL: &str =
    include_str!("../../../collector/migrations/clickhouse/0001_raw_tables.sql");

/// One versioned migration.
struct Migration {
    version: u32,
    name: &'static str,
    up: &'static str,
    backfill: Option<&'static str>,
    /// Objects to drop when an interrupted backfill forces a rebuild (views first).
    objects: &'static [&'static str],
    /// Superseded by a later migration that drops its objects: never applied to a database
    /// that does not have it already (a fresh database skips straight to its successor).
    retired: bool,
    /// Objects of earlier migrations this one replaces, dropped once its backfill is done.
    drops: &'static [&'static str],
}

/// The objects of migrations 0001 and 0002, replaced by 0003.
const OLD_ROLLUPS: &[&str] = &[
    "VIEW rollup_events_hourly_mv",
    "VIEW rollup_events_daily_mv",
    "VIEW rollup_events_weekly_mv",
    "VIEW rollup_totals_hourly_mv",
    "VIEW rollup_totals_daily_mv",
    "VIEW rollup_totals_weekly_mv",
    "TABLE rollup_events_hourly",
    "TABLE rollup_events_daily",
    "TABLE rollup_events_weekly",
    "TABLE rollup_totals_hourly",
    "TABLE rollup_totals_daily",
    "TABLE rollup_totals_weekly",
];

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "event_rollups",
        up: include_str!("../../migrations/clickhouse/0001_event_rollups.sql"),
        backfill: Some(include_str!(
            "../../migrations/clickhouse/0001_event_rollups_backfill.sql"
        )),
        objects: &[
            "VIEW rollup_events_hourly_mv",
            "VIEW rollup_events_daily_mv",
            "TABLE rollup_events_hourly",
            "TABLE rollup_events_daily",
        ],
        retired: true,
        drops: &[],
    },
    Migration {
        version: 2,
        name: "coarse_rollups",
        up: include_str!("../../migrations/clickhouse/0002_coarse_rollups.sql"),
        backfill: Some(include_str!(
            "../../migrations/clickhouse/0002_coarse_rollups_backfill.sql"
        )),
        objects: &[
            "VIEW rollup_events_weekly_mv",
            "VIEW rollup_totals_hourly_mv",
            "VIEW rollup_totals_daily_mv",
            "VIEW rollup_totals_weekly_mv",
            "TABLE rollup_events_weekly",
            "TABLE rollup_totals_hourly",
            "TABLE rollup_totals_daily",
            "TABLE rollup_totals_weekly",
        ],
        retired: true,
        drops: &[],
    },
    Migration {
        version: 3,
        name: "signal_rollups",
        up: include_str!("../../migrations/clickhouse/0003_signal_rollups.sql"),
        backfill: Some(include_str!(
            "../../migrations/clickhouse/0003_signal_rollups_backfill.sql"
        )),
        objects: &[
            "VIEW rollup_signals_hourly_mv",
            "VIEW rollup_signals_daily_mv",
            "VIEW rollup_signals_weekly_mv",
            "VIEW rollup_outcomes_5m_mv",
            "VIEW rollup_outcomes_hourly_mv",
            "VIEW rollup_outcomes_daily_mv",
            "VIEW rollup_outcomes_weekly_mv",
            "VIEW rollup_fleet_signals_hourly_mv",
            "VIEW rollup_fleet_signals_daily_mv",
            "VIEW rollup_fleet_signals_weekly_mv",
            "VIEW rollup_fleet_outcomes_5m_mv",
            "VIEW rollup_fleet_outcomes_hourly_mv",
            "VIEW rollup_fleet_outcomes_daily_mv",
            "VIEW rollup_fleet_outcomes_weekly_mv",
            "VIEW signal_dictionary_mv",
            "TABLE rollup_signals_hourly",
            "TABLE rollup_signals_daily",
            "TABLE rollup_signals_weekly",
            "TABLE rollup_outcomes_5m",
            "TABLE rollup_outcomes_hourly",
            "TABLE rollup_outcomes_daily",
            "TABLE rollup_outcomes_weekly",
            "TABLE rollup_fleet_signals_hourly",
            "TABLE rollup_fleet_signals_daily",
            "TABLE rollup_fleet_signals_weekly",
            "TABLE rollup_fleet_outcomes_5m",
            "TABLE rollup_fleet_outcomes_hourly",
            "TABLE rollup_fleet_outcomes_daily",
            "TABLE rollup_fleet_outcomes_weekly",
            "TABLE rollup_backfill_signals",
            "TABLE rollup_backfill_outcomes",
            "TABLE signal_dictionary",
        ],
        retired: false,
        drops: OLD_ROLLUPS,
    },
    Migration {
        version: 4,
        name: "narrow_rollups",
        up: include_str!("../../migrations/clickhouse/0004_narrow_rollups.sql"),
        backfill: Some(include_str!(
            "../../migrations/clickhouse/0004_narrow_rollups_backfill.sql"
        )),
        objects: &[
            "VIEW rollup_fleet_narrow_hourly_mv",
            "VIEW rollup_fleet_narrow_daily_mv",
            "VIEW rollup_fleet_narrow_weekly_mv",
            "VIEW rollup_narrow_hourly_mv",
            "VIEW rollup_narrow_daily_mv",
            "VIEW rollup_narrow_weekly_mv",
            "VIEW rollup_fleet_facets_hourly_mv",
            "VIEW rollup_fleet_facets_daily_mv",
            "VIEW rollup_fleet_facets_weekly_mv",
            "VIEW rollup_fleet_cores_hourly_mv",
            "VIEW rollup_fleet_cores_daily_mv",
            "VIEW rollup_fleet_cores_weekly_mv",
            "TABLE rollup_fleet_narrow_hourly",
            "TABLE rollup_fleet_narrow_daily",
            "TABLE rollup_fleet_narrow_weekly",
            "TABLE rollup_narrow_hourly",
            "TABLE rollup_narrow_daily",
            "TABLE rollup_narrow_weekly",
            "TABLE rollup_fleet_facets_hourly",
            "TABLE rollup_fleet_facets_daily",
            "TABLE rollup_fleet_facets_weekly",
            "TABLE rollup_fleet_cores_hourly",
            "TABLE rollup_fleet_cores_daily",
            "TABLE rollup_fleet_cores_weekly",
            "TABLE rollup_closed_series",
            "TABLE rollup_backfill_narrow",
        ],
        retired: false,
        drops: &[],
    },
    Migration {
        version: 5,
        name: "device_rollups",
        up: include_str!("../../migrations/clickhouse/0005_device_rollups.sql"),
        backfill: Some(include_str!(
            "../../migrations/clickhouse/0005_device_rollups_backfill.sql"
        )),
        objects: &[
            "VIEW device_latest_mv",
            "VIEW device_facts_mv",
            "TABLE device_latest",
            "TABLE device_facts",
        ],
        retired: false,
        drops: &[],
    },
    Migration {
        version: 6,
        name: "insight_snapshots",
        up: include_str!("../../migrations/clickhouse/0006_insight_snapshots.sql"),
        backfill: None,
        objects: &[
            "TABLE insight_snapshot_rows",
            "TABLE insight_snapshot_counts",
            "TABLE insight_snapshots",
        ],
        retired: false,
        drops: &[],
    },
    Migration {
        version: 7,
        name: "tenant_rollups",
        up: include_str!("../../migrations/clickhouse/0007_tenant_rollups.sql"),
        backfill: Some(include_str!(
            "../../migrations/clickhouse/0007_tenant_rollups_backfill.sql"
        )),
        objects: &[
            "VIEW rollup_tenant_totals_hourly_mv",
            "VIEW rollup_tenant_totals_daily_mv",
            "VIEW rollup_tenant_totals_weekly_mv",
            "TABLE rollup_tenant_totals_hourly",
            "TABLE rollup_tenant_totals_daily",
            "TABLE rollup_tenant_totals_weekly",
        ],
        retired: false,
        drops: &[],
    },
    Migration {
        version: 8,
        name: "device_failure_rollups",
        up: include_str!("../../migrations/clickhouse/0008_device_failure_rollups.sql"),
        backfill: Some(include_str!(
            "../../migrations/clickhouse/0008_device_failure_rollups_backfill.sql"
        )),
        objects: &[
            "VIEW rollup_device_failures_hourly_mv",
            "VIEW rollup_device_failures_daily_mv",
            "VIEW rollup_device_failures_weekly_mv",
            "TABLE rollup_device_failures_hourly",
            "TABLE rollup_device_failures_daily",
            "TABLE rollup_device_failures_weekly",
        ],
        retired: false,
        drops: &[],
    },
    Migration {
        version: 9,
        name: "funnel_rollups",
        up: include_str!("../../migrations/clickhouse/0009_funnel_rollups.sql"),
        backfill: Some(include_str!(
            "../../migrations/clickhouse/0009_funnel_rollups_backfill.sql"
        )),
        objects: &[
            "VIEW rollup_funnel_daily_mv",
            "VIEW rollup_funnel_weekly_mv",
            "TABLE rollup_funnel_daily",
            "TABLE rollup_funnel_weekly",
        ],
        retired: false,
        drops: &[],
    },
    Migration {
        version: 10,
        name: "fleet_funnel_rollups",
        up: include_str!("../../migrations/clickhouse/0010_fleet_funnel_rollups.sql"),
        backfill: Some(include_str!(
            "../../migrations/clickhouse/0010_fleet_funnel_rollups_backfill.sql"
        )),
        objects: &[
            "VIEW rollup_fleet_funnel_hourly_mv",
            "VIEW rollup_fleet_funnel_daily_mv",
            "VIEW rollup_fleet_funnel_weekly_mv",
            "TABLE rollup_fleet_funnel_hourly",
            "TABLE rollup_fleet_funnel_daily",
            "TABLE rollup_fleet_funnel_weekly",
        ],
        retired: false,
        drops: &[],
    },
    Migration {
        version: 11,
        name: "week_spans",
        up: include_str!("../../migrations/clickhouse/0011_week_spans.sql"),
        backfill: None,
        objects: &[
            "TABLE rollup_fleet_narrow_heads",
            "TABLE rollup_fleet_narrow_tails",
            "TABLE rollup_fleet_facets_heads",
            "TABLE rollup_fleet_facets_tails",
            "TABLE rollup_fleet_outcomes_heads",
            "TABLE rollup_fleet_outcomes_tails",
            "TABLE rollup_fleet_cores_heads",
            "TABLE rollup_fleet_cores_tails",
            "TABLE rollup_fleet_signals_heads",
            "TABLE rollup_fleet_signals_tails",
            "TABLE rollup_tenant_totals_heads",
            "TABLE rollup_tenant_totals_tails",
            "TABLE rollup_fleet_funnel_heads",
            "TABLE rollup_fleet_funnel_tails",
        ],
        retired: false,
        drops: &[],
    },
    Migration {
        version: 12,
        name: "day_spans",
        up: include_str!("../../migrations/clickhouse/0012_day_spans.sql"),
        backfill: None,
        objects: &[
            "TABLE rollup_fleet_narrow_day_heads",
            "TABLE rollup_fleet_narrow_day_tails",
            "TABLE rollup_fleet_facets_day_heads",
            "TABLE rollup_fleet_facets_day_tails",
            "TABLE rollup_tenant_totals_day_heads",
            "TABLE rollup_tenant_totals_day_tails",
            "TABLE rollup_fleet_cores_day_heads",
            "TABLE rollup_fleet_cores_day_tails",
        ],
        retired: false,
        drops: &[],
    },
];

/// Latest schema version this build knows.
pub fn latest_version() -> u32 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

#[derive(Debug, Error)]
pub enum MigrateError {
    #[error("invalid ClickHouse database name {0:?}: use letters, digits and '_' only")]
    InvalidDatabase(String),
    #[error("ClickHouse migration {version} ({name}) failed: {source}")]
    Statement {
        version: u32,
        name: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
    #[error("ClickHouse bootstrap failed: {0}")]
    Bootstrap(#[source] clickhouse::error::Error),
    #[error("ClickHouse cluster mode: {0}")]
    Cluster(#[from] RenderError),
    #[error(
        "ClickHouse migration {version}: the views reached every server only at {done}, after \
         the cutover {cutover}; rows in between could be missing from the rollups, so the \
         migration stays unfinished and is rebuilt by the next run"
    )]
    LateViews {
        version: u32,
        cutover: u32,
        done: u32,
    },
}

/// Renders migration statements for one server or, in cluster mode, for the cluster.
struct Ddl {
    db: String,
    cluster: Option<ClusterSchema>,
}

impl Ddl {
    fn new(db: &str, cluster: Option<&str>) -> Self {
        Self {
            db: db.to_owned(),
            cluster: cluster.map(|c| ClusterSchema::new(c, db)),
        }
    }

    /// The statements to run for one rendered single-server statement.
    fn render(&mut self, statement: String) -> Result<Vec<String>, MigrateError> {
        match &mut self.cluster {
            None => Ok(vec![statement]),
            Some(schema) => Ok(schema.render(&statement)?),
        }
    }

    fn create_database(&self) -> String {
        match &self.cluster {
            None => format!("CREATE DATABASE IF NOT EXISTS {}", self.db),
            Some(schema) => schema.create_database(),
        }
    }

    /// A bookkeeping table: on every server of a cluster.
    fn bookkeeping(&self, statement: String) -> Result<String, MigrateError> {
        match &self.cluster {
            None => Ok(statement),
            Some(schema) => Ok(schema.render_everywhere(&statement)?),
        }
    }

    /// Drops an object listed as "VIEW name" / "TABLE name".
    fn drop(&self, obj: &str) -> Vec<String> {
        match &self.cluster {
            None => vec![drop_statement(&self.db, obj)],
            Some(schema) => match obj.split_once(' ') {
                Some(("VIEW", name)) => vec![schema.drop_view(name)],
                Some((_, name)) => schema.drop_table(name),
                None => schema.drop_table(obj),
            },
        }
    }
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct StateRow {
    version: u32,
    state: String,
}

/// Outcome of one migration run, for logs and the `migrate` command's output.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrateReport {
    pub applied: Vec<u32>,
    pub rebuilt: Vec<u32>,
}

/// Applies every pending migration. `client` must not have a default database bound to
/// `db` being absent; statements use fully qualified names.
///
/// `cluster`: the ClickHouse cluster's name in cluster mode (validated), see the module docs.
pub async fn migrate(
    client: &Client,
    db: &str,
    grace: Duration,
    cluster: Option<&str>,
) -> Result<MigrateReport, MigrateError> {
    if !valid_identifier(db) {
        return Err(MigrateError::InvalidDatabase(db.to_owned()));
    }
    let mut ddl = Ddl::new(db, cluster);
    client
        .query(&ddl.create_database())
        .execute()
        .await
        .map_err(MigrateError::Bootstrap)?;
    for stmt in statements(RAW_TABLES_SQL) {
        for sql in ddl.render(stmt.replace("{db}", db))? {
            client
                .query(&sql)
                .execute()
                .await
                .map_err(MigrateError::Bootstrap)?;
        }
    }
    client
        .query(&ddl.bookkeeping(format!(
            "CREATE TABLE IF NOT EXISTS {db}.analyzer_schema_migrations \
             (version UInt32, name String, state String, cutover UInt32, seq UInt64, \
              recorded_at DateTime('UTC')) ENGINE = MergeTree ORDER BY (version, seq)"
        ))?)
        .execute()
        .await
        .map_err(MigrateError::Bootstrap)?;

    let states: Vec<StateRow> = client
        .query(&format!(
            "SELECT version, argMax(state, seq) AS state \
             FROM {db}.analyzer_schema_migrations GROUP BY version"
        ))
        .fetch_all()
        .await
        .map_err(MigrateError::Bootstrap)?;

    let extra_settings = extra_settings(client).await?;
    let mut report = MigrateReport::default();
    for m in MIGRATIONS {
        let current = states.iter().find(|s| s.version == m.version);
        match current.map(|s| s.state.as_str()) {
            Some("applied") => continue,
            // Its successor drops whatever an interrupted run of it left behind.
            _ if m.retired => continue,
            Some("backfilling") => {
                tracing::warn!(
                    version = m.version,
                    "interrupted rollup backfill found; rebuilding the rollups"
                );
                drop_objects(client, &ddl, m, m.objects).await?;
                report.rebuilt.push(m.version);
            }
            _ => {}
        }
        let mut per_view = CLUSTER_LEAD_PER_VIEW;
        let mut attempt = 1;
        loop {
            match apply(client, &mut ddl, m, grace, &extra_settings, per_view).await {
                Err(e @ MigrateError::LateViews { .. }) if attempt < CLUSTER_ATTEMPTS => {
                    tracing::warn!(error = %e, "rebuilding the migration with a longer lead");
                    drop_objects(client, &ddl, m, m.objects).await?;
                    per_view *= 4;
                    attempt += 1;
                }
                result => break result?,
            }
        }
        report.applied.push(m.version);
    }
    Ok(report)
}

/// Drops `objects` ("VIEW name" / "TABLE name"; views are dropped as tables in 18.16).
async fn drop_objects(
    client: &Client,
    ddl: &Ddl,
    m: &Migration,
    objects: &[&str],
) -> Result<(), MigrateError> {
    for obj in objects {
        for sql in ddl.drop(obj) {
            run(client, m, &sql).await?;
        }
    }
    Ok(())
}

/// `DROP .. IF EXISTS` for an object listed as "VIEW name" or "TABLE name" (18.16 drops views
/// with `DROP TABLE`).
fn drop_statement(db: &str, obj: &str) -> String {
    let name = obj.split_once(' ').map_or(obj, |(_, name)| name);
    format!("DROP TABLE IF EXISTS {db}.{name}")
}

/// First ClickHouse major version whose MergeTree accepts `non_replicated_deduplication_window`
/// (and with it insert deduplication tokens).
const DEDUP_WINDOW_SINCE_MAJOR: u32 = 21;

/// Table settings added to every rollup on servers that support them, chosen by `version()`.
///
/// On current releases an insert retried with an `insert_deduplication_token` is dropped by a
/// base table that has a deduplication window, but its materialized views still write their
/// block into a target without one: the rollups would count the retry. A window on the rollup
/// tables deduplicates those view blocks too (checked by the chDB lane). 18.16 has neither
/// tokens nor the setting, so nothing is added there.
async fn extra_settings(client: &Client) -> Result<String, MigrateError> {
    let version: String = client
        .query("SELECT version()")
        .fetch_one()
        .await
        .map_err(MigrateError::Bootstrap)?;
    Ok(settings_for_version(&version).to_owned())
}

fn settings_for_version(version: &str) -> &'static str {
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    if major >= DEDUP_WINDOW_SINCE_MAJOR {
        ", non_replicated_deduplication_window = 1000"
    } else {
        ""
    }
}

/// Applies one migration: its tables, then (with the cutover chosen) its views, then, once the
/// server clock passed the cutover plus `grace`, the backfill and the drops of what it replaces.
async fn apply(
    client: &Client,
    ddl: &mut Ddl,
    m: &Migration,
    grace: Duration,
    extra_settings: &str,
    lead_per_view: Duration,
) -> Result<(), MigrateError> {
    let db = ddl.db.clone();
    let (views, tables): (Vec<String>, Vec<String>) = statements(m.up)
        .into_iter()
        .partition(|s| s.trim_start().starts_with("CREATE MATERIALIZED VIEW"));
    // Tables hold no cutover: created before it is chosen (a crash here leaves empty tables
    // that the next run finds with `IF NOT EXISTS`).
    for stmt in &tables {
        for sql in ddl.render(render(stmt, &db, 0, extra_settings))? {
            run(client, m, &sql).await?;
        }
    }
    let lead = if ddl.cluster.is_some() {
        1 + (lead_per_view.as_millis() as u64 * views.len() as u64).div_ceil(1000) as u32
    } else {
        1
    };
    let cutover = server_now(client, m).await? + lead;
    if m.backfill.is_some() {
        record(client, &db, m, "backfilling", cutover).await?;
    }
    for stmt in &views {
        for sql in ddl.render(render(stmt, &db, cutover, extra_settings))? {
            run(client, m, &sql).await?;
        }
    }
    if ddl.cluster.is_some() {
        let done = server_now(client, m).await?;
        if done >= cutover {
            return Err(MigrateError::LateViews {
                version: m.version,
                cutover,
                done,
            });
        }
    }
    if let Some(backfill) = m.backfill {
        wait_for_server_time(client, m, u64::from(cutover) + grace.as_secs()).await?;
        for stmt in statements(backfill) {
            for sql in ddl.render(render(&stmt, &db, cutover, extra_settings))? {
                run(client, m, &sql).await?;
            }
        }
        drop_objects(client, ddl, m, m.drops).await?;
    }
    record(client, &db, m, "applied", cutover).await
}

async fn server_now(client: &Client, m: &Migration) -> Result<u32, MigrateError> {
    client
        .query("SELECT toUInt32(now())")
        .fetch_one()
        .await
        .map_err(|source| MigrateError::Statement {
            version: m.version,
            name: m.name,
            source,
        })
}

/// Fills a migration statement's placeholders (`db` must be a validated identifier).
fn render(sql: &str, db: &str, cutover: u32, extra_settings: &str) -> String {
    sql.replace("{db}", db)
        .replace("{message_key}", MESSAGE_KEY_SQL)
        .replace("{cutover}", &cutover.to_string())
        .replace("{extra_settings}", extra_settings)
}

/// Every statement [`migrate`] runs on a fresh database `db` of a server reporting
/// `server_version`, in order (views, then the backfill of rows received before `cutover`, then
/// the drops), without the bookkeeping in `analyzer_schema_migrations`. For running our
/// migrations where the runner cannot connect: the chDB compatibility lane executes them
/// in-process on a current ClickHouse.
pub fn fresh_database_statements(db: &str, server_version: &str, cutover: u32) -> Vec<String> {
    let extra = settings_for_version(server_version);
    let mut out = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !m.retired) {
        for stmt in statements(m.up)
            .iter()
            .chain(statements(m.backfill.unwrap_or_default()).iter())
        {
            out.push(render(stmt, db, cutover, extra));
        }
        out.extend(m.drops.iter().map(|obj| drop_statement(db, obj)));
    }
    out
}

/// Every statement a fresh cluster-mode migration runs (raw tables, then every migration,
/// retired ones included, each with its up, backfill and drops), rendered for `cluster`. Fails
/// on the first statement the cluster renderer cannot handle.
pub fn cluster_statements(db: &str, cluster: &str) -> Result<Vec<String>, MigrateError> {
    let mut out = Vec::new();
    for m in MIGRATIONS {
        let mut ddl = Ddl::new(db, Some(cluster));
        out.push(ddl.create_database());
        for stmt in statements(RAW_TABLES_SQL) {
            out.extend(ddl.render(stmt.replace("{db}", db))?);
        }
        for stmt in statements(m.up)
            .iter()
            .chain(statements(m.backfill.unwrap_or_default()).iter())
        {
            out.extend(ddl.render(render(stmt, db, 1, ""))?);
        }
        for obj in m.drops.iter().chain(m.objects) {
            out.extend(ddl.drop(obj));
        }
    }
    Ok(out)
}

async fn wait_for_server_time(
    client: &Client,
    m: &Migration,
    target: u64,
) -> Result<(), MigrateError> {
    loop {
        let now: u32 = client
            .query("SELECT toUInt32(now())")
            .fetch_one()
            .await
            .map_err(|source| MigrateError::Statement {
                version: m.version,
                name: m.name,
                source,
            })?;
        if u64::from(now) >= target {
            return Ok(());
        }
        // Polling the server clock, which is what the cutover is defined against.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn record(
    client: &Client,
    db: &str,
    m: &Migration,
    state: &str,
    cutover: u32,
) -> Result<(), MigrateError> {
    let seq = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
    client
        .query(&format!(
            "INSERT INTO {db}.analyzer_schema_migrations (version, name, state, cutover, seq, recorded_at) \
             SELECT ?, ?, ?, ?, ?, now()"
        ))
        .bind(m.version)
        .bind(m.name)
        .bind(state)
        .bind(cutover)
        .bind(seq)
        .execute()
        .await
        .map_err(|source| MigrateError::Statement { version: m.version, name: m.name, source })
}

async fn run(client: &Client, m: &Migration, sql: &str) -> Result<(), MigrateError> {
    client
        .query(sql)
        .execute()
        .await
        .map_err(|source| MigrateError::Statement {
            version: m.version,
            name: m.name,
            source,
        })
}

/// Splits a migration file into statements: comment lines dropped, `;` at a line end ends one.
fn statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
        if trimmed.ends_with(';') {
            let stmt = cur.trim().trim_end_matches(';').to_owned();
            out.push(stmt);
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_has_no_bind_markers() {
        let up = statements(MIGRATIONS[0].up);
        assert_eq!(up.len(), 4);
        assert_eq!(
            statements(MIGRATIONS[0].backfill.unwrap_or_default()).len(),
            2
        );
        assert_eq!(statements(MIGRATIONS[1].up).len(), 8);
        assert_eq!(
            statements(MIGRATIONS[1].backfill.unwrap_or_default()).len(),
            4
        );
        // 0003: the dictionary, 4 families x 3 grains + 2 five-minute tables, their views and
        // the dictionary's view.
        assert_eq!(statements(MIGRATIONS[2].up).len(), 30);
        assert_eq!(
            statements(MIGRATIONS[2].backfill.unwrap_or_default()).len(),
            21
        );
        // 0004: 4 families x 3 grains, the closed-series table, their views; the backfill's
        // staging table, its fill, 12 derivations and its drop.
        assert_eq!(statements(MIGRATIONS[3].up).len(), 25);
        assert_eq!(
            statements(MIGRATIONS[3].backfill.unwrap_or_default()).len(),
            15
        );
        // 0005: two per-device tables and their views; two backfill inserts.
        assert_eq!(statements(MIGRATIONS[4].up).len(), 4);
        assert_eq!(
            statements(MIGRATIONS[4].backfill.unwrap_or_default()).len(),
            2
        );
        // 0006: three snapshot tables, no backfill.
        assert_eq!(statements(MIGRATIONS[5].up).len(), 3);
        assert!(MIGRATIONS[5].backfill.is_none());
        // 0007: per-tenant totals at three grains and their views; one backfill per grain.
        assert_eq!(statements(MIGRATIONS[6].up).len(), 6);
        assert_eq!(
            statements(MIGRATIONS[6].backfill.unwrap_or_default()).len(),
            3
        );
        // 0008: per-device failures at three grains and their views; one backfill per grain.
        assert_eq!(statements(MIGRATIONS[7].up).len(), 6);
        assert_eq!(
            statements(MIGRATIONS[7].backfill.unwrap_or_default()).len(),
            3
        );
        // 0009: the funnel's device sets at two grains (no hourly) and their views; one
        // backfill per grain.
        assert_eq!(statements(MIGRATIONS[8].up).len(), 4);
        assert_eq!(
            statements(MIGRATIONS[8].backfill.unwrap_or_default()).len(),
            2
        );
        // 0010: the all-tenant funnel sets at three grains and their views; one backfill per
        // grain.
        assert_eq!(statements(MIGRATIONS[9].up).len(), 6);
        assert_eq!(
            statements(MIGRATIONS[9].backfill.unwrap_or_default()).len(),
            3
        );
        // 0011: heads and tails of 7 families, built by the analyzer (no views, no backfill).
        assert_eq!(statements(MIGRATIONS[10].up).len(), 14);
        assert!(MIGRATIONS[10].backfill.is_none());
        // 0012: heads and tails of days for 4 families, built by the analyzer.
        assert_eq!(statements(MIGRATIONS[11].up).len(), 8);
        assert!(MIGRATIONS[11].backfill.is_none());
        // 0003 drops every object of the migrations it retires.
        for m in MIGRATIONS.iter().filter(|m| m.retired) {
            for obj in m.objects {
                assert!(MIGRATIONS[2].drops.contains(obj), "{obj} not dropped");
            }
        }
        // Every object a migration creates is listed for the interrupted-backfill rebuild.
        for m in MIGRATIONS {
            for stmt in statements(m.up) {
                let created = stmt
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("{db}."))
                    .unwrap_or_default()
                    .to_owned();
                assert!(
                    m.objects
                        .iter()
                        .any(|o| o.ends_with(&format!(" {created}"))),
                    "{created} missing from objects of migration {}",
                    m.version
                );
            }
        }
        assert_eq!(statements(RAW_TABLES_SQL).len(), 3);
        for m in MIGRATIONS {
            assert!(!m.up.contains('?'), "a '?' would be taken as a bind marker");
            assert!(!m.backfill.unwrap_or_default().contains('?'));
        }
        assert!(!MESSAGE_KEY_SQL.contains('?'));
    }

    /// Every migration renders for a cluster; a form the renderer does not know fails here.
    #[test]
    fn every_migration_renders_for_a_cluster() {
        let out = cluster_statements("fp", "fleet").unwrap();
        // Every DDL statement runs on every server; backfill INSERTs go through Distributed
        // tables.
        for s in &out {
            assert!(
                s.contains(" ON CLUSTER fleet") || s.starts_with("INSERT INTO fp."),
                "{s}"
            );
        }
        assert_eq!(
            out.iter().filter(|s| s.starts_with("INSERT INTO")).count(),
            MIGRATIONS
                .iter()
                .flat_map(|m| statements(m.backfill.unwrap_or_default()))
                .filter(|s| s.starts_with("INSERT INTO"))
                .count()
        );
        // Views read and write local tables only.
        for view in out.iter().filter(|s| s.contains("MATERIALIZED VIEW")) {
            assert!(
                view.contains("FROM fp.enrollment_events_local")
                    || view.contains("FROM fp.device_states_local"),
                "{view}"
            );
            assert!(!view.contains("FROM fp.enrollment_events\n"), "{view}");
            assert!(!view.contains("FROM fp.device_states\n"), "{view}");
            assert!(view.contains("_local AS"), "{view}");
        }
        // Staging tables of the backfill are replicated with their own Keeper path.
        assert!(out.iter().any(|s| s.contains(
            "ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/fp/rollup_backfill_signals_local', '{replica}')"
        )));
        // 0004's finalized series are written at run time through the Distributed table: every
        // version of a bucket goes to one shard, where ReplacingMergeTree keeps the newest.
        assert!(
            out.iter().any(|s| s.ends_with(
                "ENGINE = Distributed(fleet, fp, rollup_closed_series_local, \
                 cityHash64(width, all_tenants, tenant, bucket))"
            )),
            "{:?}",
            out.iter()
                .filter(|s| s.contains("rollup_closed_series"))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn deduplication_window_only_where_supported() {
        assert_eq!(settings_for_version("18.16.1"), "");
        assert_eq!(settings_for_version("20.3.4.1"), "");
        assert_eq!(
            settings_for_version("26.9.2.1"),
            ", non_replicated_deduplication_window = 1000"
        );
        assert_eq!(settings_for_version("garbage"), "");
    }
}
