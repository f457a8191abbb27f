//! `fleetpulse-analyzer alerts list|show|ack|silence`: the alert store from the shell, for
//! when the dashboard is not at hand (same database as `serve`, same rules as the API);
//! `alerts backtest`: the evaluator replayed over stored history (nothing sent).

use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Subcommand;
use fleetpulse_analyzer::alerts::backtest;
use fleetpulse_analyzer::alerts::model::{Alert, Matcher};
use fleetpulse_analyzer::alerts::store::{self, AlertStore};
use fleetpulse_analyzer::api::alerts::{SilenceBody, silence_from};
use fleetpulse_analyzer::api::error::ApiError;
use fleetpulse_analyzer::catalog::Catalog;
use fleetpulse_analyzer::config::StorageArgs;
use fleetpulse_analyzer::keys::{self, KeyScope};
use fleetpulse_analyzer::query::catalog_adapter::CatalogClassifier;
use fleetpulse_analyzer::query::classes::ClassCache;
use fleetpulse_analyzer::query::engine::Engine;
use fleetpulse_analyzer::query::filters::rfc3339;
use fleetpulse_analyzer::rollups;

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// List alerts, newest first (tab-separated, or JSON lines with --json).
    List {
        #[command(flatten)]
        storage: StorageArgs,
        /// open (pending, firing, no_data), resolved or all.
        #[arg(long, default_value = "open", value_parser = ["open", "resolved", "all"])]
        status: String,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show one alert as JSON, with its notifications.
    Show {
        #[command(flatten)]
        storage: StorageArgs,
        id: String,
    },
    /// Acknowledge an open alert: no more re-notifications for this episode.
    Ack {
        #[command(flatten)]
        storage: StorageArgs,
        id: String,
        /// Who acknowledges (recorded with the alert).
        #[arg(long)]
        by: String,
    },
    /// Manage silences: notifications of matching alerts are suppressed until they end.
    #[command(subcommand)]
    Silence(SilenceCommand),
    /// Replay the evaluator over stored history: what would have fired, and when.
    ///
    /// Runs the live evaluation code at every tick of the configured cadence (multiples of
    /// `[alerts] evaluation_interval` since the epoch, or --alerts-evaluation-interval) from
    /// --from to --to, with the `[alerts]` settings and TOML rules of --config, against the
    /// stored ClickHouse data. Nothing is sent and the control database is not touched: the
    /// alert state lives in a private in-memory store for the run.
    ///
    /// Prints one line per episode (started, firing, resolved, tenant, rule, key, status,
    /// concentration; `-` for never/still open), then a summary on stderr; --json prints the
    /// whole report as one JSON object instead. Example, the last week at a 60 s cadence:
    ///   fleetpulse-analyzer alerts backtest --config analyzer.toml --from 7d
    Backtest {
        #[command(flatten)]
        storage: StorageArgs,
        /// Start: RFC 3339 (2026-11-23T00:00:00Z) or a span before now (7d, 36h).
        #[arg(long)]
        from: String,
        /// End: RFC 3339 or a span before now [default: now].
        #[arg(long)]
        to: Option<String>,
        /// Cadence, overriding `[alerts] evaluation_interval` (e.g. 15s).
        #[arg(long, env = "FLEETPULSE_ANALYZER_ALERTS_EVALUATION_INTERVAL")]
        alerts_evaluation_interval: Option<String>,
        /// Replay this many consecutive chunks of the range at once (each starts an hour
        /// early so that episodes running into it are known; see the module doc of
        /// `alerts/backtest.rs`). A replay waits on one small query after another, so chunks
        /// in parallel shorten long runs; 1 replays the range in one sequence.
        #[arg(
            long,
            default_value_t = 1,
            env = "FLEETPULSE_ANALYZER_BACKTEST_PARALLEL"
        )]
        parallel: usize,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SilenceCommand {
    /// Add a silence, e.g. `--match tenant=contoso --match category=tpm --duration 2h`.
    Add {
        #[command(flatten)]
        storage: StorageArgs,
        /// NAME=VALUE, NAME one of tenant, category, dimension, dimension_value, rule;
        /// repeat for several (all must match).
        #[arg(long = "match", required = true)]
        matchers: Vec<String>,
        /// How long, e.g. 30m, 2h, 3d (at most 90d).
        #[arg(long)]
        duration: String,
        #[arg(long, default_value = "")]
        comment: String,
        /// Who adds it (recorded with the silence).
        #[arg(long)]
        by: String,
    },
    /// List active silences (all with --include-expired).
    List {
        #[command(flatten)]
        storage: StorageArgs,
        #[arg(long)]
        include_expired: bool,
    },
    /// End a silence now.
    Expire {
        #[command(flatten)]
        storage: StorageArgs,
        id: String,
    },
}

async fn open(storage: &StorageArgs) -> anyhow::Result<AlertStore> {
    let url = storage.resolve()?.database_url;
    let pool = keys::open(&url)
        .await
        .context("opening the control database")?;
    store::migrate(&pool, store::is_postgres(&url)).await?;
    Ok(AlertStore::new(pool))
}

/// `--from`/`--to`: an RFC 3339 time, or a span before `now` such as `7d`.
fn parse_when(field: &str, v: &str, now: i64) -> anyhow::Result<i64> {
    if let Ok(t) = time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    let span = fleetpulse_analyzer::alerts::config::parse_duration(v).map_err(|e| {
        anyhow::anyhow!("invalid --{field}: {e}; give an RFC 3339 time or a span before now")
    })?;
    Ok(now - span.as_secs() as i64)
}

async fn backtest(
    storage: StorageArgs,
    from: String,
    to: Option<String>,
    interval: Option<String>,
    parallel: usize,
    json: bool,
) -> anyhow::Result<()> {
    let (st, settings) = storage.resolve_with_alerts(interval.as_deref())?;
    let now = now();
    let from = parse_when("from", &from, now)?;
    let to = match to {
        Some(t) => parse_when("to", &t, now)?,
        None => now,
    };
    // The planner reads the rollups; creating them (idempotent) lets a backtest run on a
    // database that no analyzer has served yet. Without the migration lease: a backtest never
    // writes to the control database (run it where an analyzer has migrated already when
    // analyzers may be starting at the same time).
    rollups::migrate(
        &st.clickhouse(),
        &st.clickhouse_database,
        st.backfill_grace,
        st.clickhouse_cluster.as_deref(),
    )
    .await
    .context("applying ClickHouse migrations")?;
    let classifier = Arc::new(CatalogClassifier::new(Catalog::embedded()));
    let engine = Arc::new(Engine::new(
        st.clickhouse(),
        st.clickhouse_database.clone(),
        Arc::new(ClassCache::new(classifier)),
    ));
    let started = std::time::Instant::now();
    let mut shown = std::time::Instant::now();
    let report = backtest::run(
        engine,
        Arc::new(settings),
        from,
        to,
        parallel,
        |done, total| {
            if done == total || shown.elapsed() >= std::time::Duration::from_secs(10) {
                shown = std::time::Instant::now();
                let secs = started.elapsed().as_secs_f64();
                eprintln!(
                    "backtest: {done}/{total} evaluations ({secs:.0} s, {:.1} evaluations/s)",
                    done as f64 / secs.max(1e-9)
                );
            }
        },
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        for e in &report.episodes {
            println!("{}", e.line());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "backtest: {} evaluations every {} s from {} to {}: {} episodes, {} fired; {:.0} s, {:.1} evaluations/s",
        report.evaluations,
        report.step,
        rfc3339(u32::try_from(from.max(0)).unwrap_or(0)),
        rfc3339(u32::try_from(to.max(0)).unwrap_or(0)),
        report.episodes.len(),
        report.fired().count(),
        secs,
        report.evaluations as f64 / secs.max(1e-9)
    );
    Ok(())
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn line(a: &Alert) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{}={}\t{}\t{}",
        a.alert_id,
        a.status.as_str(),
        a.tenant,
        a.rule,
        a.dimension,
        a.dimension_value,
        rfc3339(u32::try_from(a.started_at.max(0)).unwrap_or(u32::MAX)),
        a.acknowledged_by.as_deref().unwrap_or("-"),
    )
}

/// Links in CLI output: `FLEETPULSE_ANALYZER_PUBLIC_URL`, else the default listen address.
fn public_url() -> String {
    std::env::var("FLEETPULSE_ANALYZER_PUBLIC_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:7602".to_owned())
}

pub async fn run(cmd: AlertsCommand) -> anyhow::Result<()> {
    match cmd {
        AlertsCommand::List {
            storage,
            status,
            tenant,
            limit,
            json,
        } => {
            let s = open(&storage).await?;
            let open = match status.as_str() {
                "open" => Some(true),
                "resolved" => Some(false),
                _ => None,
            };
            let url = public_url();
            for a in s
                .list(tenant.as_deref(), open, limit.clamp(1, 10_000))
                .await?
            {
                if json {
                    println!("{}", a.to_json(&url));
                } else {
                    println!("{}", line(&a));
                }
            }
        }
        AlertsCommand::Show { storage, id } => {
            let s = open(&storage).await?;
            let Some(a) = s.get(&id).await? else {
                bail!("no alert {id:?}");
            };
            let mut v = a.to_json(&public_url());
            let notes: Vec<serde_json::Value> = s
                .notifications(&id)
                .await?
                .into_iter()
                .map(|(nid, kind, at, silenced_by)| {
                    serde_json::json!({"notification_id": nid, "kind": kind,
                        "created_at": rfc3339(u32::try_from(at.max(0)).unwrap_or(u32::MAX)),
                        "silenced_by": silenced_by})
                })
                .collect();
            if let serde_json::Value::Object(m) = &mut v {
                m.insert("notifications".into(), serde_json::Value::Array(notes));
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        AlertsCommand::Ack { storage, id, by } => {
            let s = open(&storage).await?;
            match s.get(&id).await? {
                None => bail!("no alert {id:?}"),
                Some(a) if !a.status.is_open() => {
                    bail!("alert {id} is resolved; only open alerts can be acknowledged")
                }
                Some(_) => {}
            }
            let a = s.ack(&id, &format!("{by} (cli)"), now()).await?;
            if let Some(a) = a {
                println!("{}", line(&a));
            }
        }
        AlertsCommand::Silence(SilenceCommand::Add {
            storage,
            matchers,
            duration,
            comment,
            by,
        }) => {
            let s = open(&storage).await?;
            let mut ms = Vec::new();
            for m in &matchers {
                let Some((name, value)) = m.split_once('=') else {
                    bail!("--match {m:?}: expected NAME=VALUE");
                };
                ms.push(Matcher {
                    name: name.trim().to_owned(),
                    value: value.trim().to_owned(),
                });
            }
            let body = SilenceBody {
                matchers: ms,
                duration: Some(duration),
                comment,
                created_by: Some(by),
                ..SilenceBody::default()
            };
            let scope = KeyScope {
                key_id: "cli".into(),
                tenant: None,
            };
            let now = now();
            let silence = silence_from(body, &scope, now).map_err(|e| match e {
                ApiError::BadRequest(f) => anyhow::anyhow!("invalid {}: {}", f.field, f.reason),
                other => anyhow::anyhow!("{other:?}"),
            })?;
            s.create_silence(&silence).await?;
            println!("{}", silence.id);
            eprintln!(
                "silence {} active until {}",
                silence.id,
                rfc3339(u32::try_from(silence.ends_at).unwrap_or(u32::MAX))
            );
        }
        AlertsCommand::Silence(SilenceCommand::List {
            storage,
            include_expired,
        }) => {
            let s = open(&storage).await?;
            let now = now();
            for x in s.silences(None, include_expired, now).await? {
                println!("{}", x.to_json(now));
            }
        }
        AlertsCommand::Backtest {
            storage,
            from,
            to,
            alerts_evaluation_interval,
            parallel,
            json,
        } => {
            backtest(
                storage,
                from,
                to,
                alerts_evaluation_interval,
                parallel,
                json,
            )
            .await?
        }
        AlertsCommand::Silence(SilenceCommand::Expire { storage, id }) => {
            let s = open(&storage).await?;
            if !s.expire_silence(&id, None, now()).await? {
                bail!("no active silence {id:?}");
            }
            eprintln!("silence {id} expired");
        }
    }
    Ok(())
}
