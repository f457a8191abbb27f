//! `fleetpulse-analyzer`: serve the API, apply migrations, manage API keys, classify signals.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use fleetpulse_analyzer::alerts::evaluator::{AlertRoute, Evaluator};
use fleetpulse_analyzer::alerts::metrics::AlertMetrics;
use fleetpulse_analyzer::alerts::store::{self as alert_store, AlertStore};
use fleetpulse_analyzer::api::{self, AppState};
use fleetpulse_analyzer::catalog::Catalog;
use fleetpulse_analyzer::classify::{self, cli::ClassifyArgs};
use fleetpulse_analyzer::config::{ServeArgs, Storage, StorageArgs};
use fleetpulse_analyzer::destinations::delivery::{DeliveryMetrics, Worker};
use fleetpulse_analyzer::destinations::transport::Sender;
use fleetpulse_analyzer::query::catalog_adapter::CatalogClassifier;
use fleetpulse_analyzer::query::classes::ClassCache;
use fleetpulse_analyzer::query::engine::Engine;
use fleetpulse_analyzer::{keys, rollups};

mod cli_alerts;

/// The Fleetpulse analyzer: interprets enrollment telemetry stored by the collector.
///
/// Every storage flag is also an environment variable FLEETPULSE_ANALYZER_<FLAG> and a key of
/// the --config TOML file (flags win over environment, environment over the file).
#[derive(Debug, Parser)]
#[command(name = "fleetpulse-analyzer", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply migrations, then serve the HTTP API (/api/v1, /healthz, /readyz, /metrics).
    Serve(ServeArgs),
    /// Apply the analyzer's ClickHouse migrations (rollups, with a one-off backfill) and the
    /// control database schema, then exit.
    Migrate(StorageArgs),
    /// Manage API keys (shown once at creation, stored hashed).
    #[command(subcommand)]
    Key(KeyCommand),
    Classify(ClassifyArgs),
    /// Inspect, acknowledge and silence alerts (the same database `serve` uses).
    #[command(subcommand)]
    Alerts(cli_alerts::AlertsCommand),
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a key; prints `fpk_<id>_<secret>` alone on stdout's first line.
    Create {
        #[command(flatten)]
        storage: StorageArgs,
        /// Tenant the key may read (its filter is forced to this tenant).
        #[arg(
            long,
            conflicts_with = "all_tenants",
            required_unless_present = "all_tenants"
        )]
        tenant: Option<String>,
        /// Let the key read every tenant.
        #[arg(long)]
        all_tenants: bool,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        storage: StorageArgs,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id (the part after `fpk_` before the second `_`).
    Revoke {
        #[command(flatten)]
        storage: StorageArgs,
        id: String,
    },
}

fn main() -> anyhow::Result<()> {
    fleetpulse_telemetry::restrict_file_modes();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let _guard =
        fleetpulse_telemetry::init("fleetpulse-analyzer", fleetpulse_telemetry::LogFormat::Text)?;
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => {
            let storage = args.resolve()?;
            migrate(&storage, false).await?;
            println!(
                "migrations applied (schema version {})",
                rollups::latest_version()
            );
            Ok(())
        }
        Command::Key(cmd) => key(cmd).await,
        Command::Alerts(cmd) => cli_alerts::run(cmd).await,
        Command::Classify(args) => {
            let stats =
                classify::cli::run(&args, std::io::stdin().lock(), std::io::stdout().lock())?;
            tracing::debug!(?stats, "classify finished");
            Ok(())
        }
    }
}

/// Opens the control database and applies the ClickHouse migrations (and, for `serve`, the
/// alert tables) under the control database's migration lease, so that analyzers starting at
/// once (sharing the control database) migrate one after the other.
async fn migrate(storage: &Storage, alert_tables: bool) -> anyhow::Result<sqlx::AnyPool> {
    let pool = keys::open(&storage.database_url)
        .await
        .context("opening the control database")?;
    let lease = rollups::lease::acquire(&pool, &storage.clickhouse_database)
        .await
        .context("taking the migration lease in the control database")?;
    let result = async {
        let report = rollups::migrate(
            &storage.clickhouse(),
            &storage.clickhouse_database,
            storage.backfill_grace,
            storage.clickhouse_cluster.as_deref(),
        )
        .await
        .context("applying ClickHouse migrations")?;
        if alert_tables {
            alert_store::migrate(&pool, alert_store::is_postgres(&storage.database_url))
                .await
                .context("creating the alert tables")?;
        }
        anyhow::Ok(report)
    }
    .await;
    if let Err(e) = lease.release().await {
        tracing::warn!(error = %e, "releasing the migration lease failed; it expires by itself");
    }
    let report = result?;
    if !report.applied.is_empty() {
        tracing::info!(applied = ?report.applied, rebuilt = ?report.rebuilt, "ClickHouse migrations applied");
    }
    // Every closed time-series bucket of all history, so that series read numbers from the
    // first request on (serve then keeps the recent ones finalized).
    let started = std::time::Instant::now();
    fleetpulse_analyzer::query::series::finalize(
        &storage.clickhouse(),
        &storage.clickhouse_database,
        0,
    )
    .await
    .context("finalizing closed time-series buckets")?;
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "closed time-series buckets finalized"
    );
    Ok(pool)
}

async fn key(cmd: KeyCommand) -> anyhow::Result<()> {
    match cmd {
        KeyCommand::Create {
            storage,
            tenant,
            all_tenants,
            description,
        } => {
            let pool = keys::open(&storage.resolve()?.database_url).await?;
            let tenant = if all_tenants { None } else { tenant };
            let (info, token) = keys::create(&pool, tenant.as_deref(), &description).await?;
            println!("{token}");
            eprintln!(
                "created API key {} for {}; store it now, it is not shown again",
                info.id,
                info.tenant
                    .as_deref()
                    .map_or("all tenants".to_owned(), |t| format!("tenant {t}"))
            );
        }
        KeyCommand::List { storage, json } => {
            let pool = keys::open(&storage.resolve()?.database_url).await?;
            for k in keys::list(&pool).await? {
                if json {
                    println!("{}", serde_json::to_string(&k)?);
                } else {
                    println!(
                        "{}\t{}\t{}\t{}\t{}",
                        k.id,
                        k.tenant.as_deref().unwrap_or("*"),
                        k.created_at,
                        k.revoked_at.as_deref().unwrap_or("active"),
                        k.description
                    );
                }
            }
        }
        KeyCommand::Revoke { storage, id } => {
            let pool = keys::open(&storage.resolve()?.database_url).await?;
            keys::revoke(&pool, &id).await?;
            eprintln!("revoked API key {id}");
        }
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = args.resolve()?;
    let pool = migrate(&cfg.storage, true).await?;
    let alerts = AlertStore::new(pool.clone());
    let alert_settings = Arc::new(cfg.alerts.clone());
    let classifier = Arc::new(CatalogClassifier::new(Catalog::embedded()));
    let catalog_json = Arc::new(classifier.catalog_json());
    let cache = Arc::new(ClassCache::new(classifier.clone()));
    let engine = Arc::new(Engine::new(
        cfg.storage.clickhouse(),
        cfg.storage.clickhouse_database.clone(),
        cache,
    ));
    let classify_classifier = classifier.clone();
    let tls = match &cfg.tls {
        Some((cert, key)) => Some(api::server::tls_acceptor(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let local = listener.local_addr()?;
    let public_url = cfg.public_url.clone().unwrap_or_else(|| {
        let shown = if local.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], local.port()))
        } else {
            local
        };
        let scheme = if tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{shown}")
    });
    let mut metrics = api::metrics::Metrics::new();
    let alert_metrics = Arc::new(AlertMetrics::new(&mut metrics.registry));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let finalizer = tokio::spawn(fleetpulse_analyzer::query::series::run_finalizer(
        cfg.storage.clickhouse(),
        cfg.storage.clickhouse_database.clone(),
        stop_rx.clone(),
    ));
    let insight_settings = Arc::new(cfg.insights.clone());
    // Insight snapshots: refreshed at once and then on the configured cadence (none when 0).
    let refresher = tokio::spawn(fleetpulse_analyzer::insights::snapshot::run_refresher(
        engine.clone(),
        insight_settings.clone(),
        cfg.storage.clickhouse_cluster.clone(),
        stop_rx.clone(),
    ));
    // Week spans (migration 0011): built at once for all history, then every minute (or as
    // configured; none when turned off).
    let span_metrics = Arc::new(fleetpulse_analyzer::rollups::spans::SpanMetrics::new(
        &mut metrics.registry,
    ));
    // Without a builder, the planner still learns which days another analyzer keeps day spans
    // for, so that older hour edges are read as hours at once.
    let span_builder = match cfg.week_spans_interval {
        Some(every) => tokio::spawn(fleetpulse_analyzer::rollups::spans::run_builder(
            engine.clone(),
            pool.clone(),
            cfg.storage.clickhouse_cluster.clone(),
            every,
            span_metrics.clone(),
            stop_rx.clone(),
        )),
        None => tokio::spawn(fleetpulse_analyzer::rollups::spans::watch_day_spans(
            engine.clone(),
            fleetpulse_analyzer::rollups::spans::BUILD_EVERY,
            stop_rx.clone(),
        )),
    };
    let delivery_metrics = Arc::new(DeliveryMetrics::new(&mut metrics.registry));
    let owner = uuid::Uuid::new_v4().to_string();
    let mut workers = Vec::new();
    let mut wakes = Vec::new();
    for d in &cfg.destinations {
        let sender =
            Sender::new(d.clone()).map_err(|e| anyhow::anyhow!("destination {}: {e}", d.name))?;
        let worker = Arc::new(Worker {
            sender,
            pool: pool.clone(),
            engine: engine.clone(),
            metrics: delivery_metrics.clone(),
            owner: owner.clone(),
            settle_secs: cfg.feed_settle_secs,
            poll: std::time::Duration::from_secs(1),
            wake: Arc::new(tokio::sync::Notify::new()),
        });
        if d.alerts {
            wakes.push(worker.wake.clone());
        }
        tracing::info!(destination = %d.name, kind = d.kind_name(), alerts = d.alerts, events = d.events, "delivery started");
        workers.push(tokio::spawn(worker.run(stop_rx.clone())));
    }
    let routes: Vec<AlertRoute> = cfg
        .destinations
        .iter()
        .filter(|d| d.alerts)
        .map(|d| AlertRoute {
            name: d.name.clone(),
            tenants: d.tenants.clone(),
            categories: d.categories.clone(),
            min_severity: d.min_severity.clone(),
        })
        .collect();
    let evaluator_task = if alert_settings.enabled {
        let evaluator = Arc::new(
            Evaluator::new(
                engine.clone(),
                alerts.clone(),
                alert_settings.clone(),
                public_url.clone(),
                routes,
                alert_metrics,
            )
            .waking(wakes),
        );
        tracing::info!(
            interval = ?alert_settings.evaluation_interval,
            rules = alert_settings.rules.len(),
            "alert evaluation started"
        );
        Some(tokio::spawn(evaluator.run(stop_rx)))
    } else {
        None
    };
    let state = AppState {
        engine,
        keys: pool,
        insights: insight_settings,
        metrics: Arc::new(metrics),
        classify_json: Arc::new(move |v| classify_classifier.classify_values(v)),
        catalog_json,
        alerts,
        alert_settings,
        public_url: Arc::new(public_url),
        feed_settle_secs: cfg.feed_settle_secs,
    };
    tracing::info!(addr = %local, tls = tls.is_some(), "analyzer API listening");
    if let Some(path) = &cfg.ready_file {
        let shown = if local.ip().is_unspecified() {
            std::net::SocketAddr::from(([127, 0, 0, 1], local.port()))
        } else {
            local
        };
        write_ready_file(
            path,
            &serde_json::json!({"http": shown.to_string()}).to_string(),
        )?;
    }
    fleetpulse_net::serve_http(
        listener,
        api::router(state),
        tls,
        cfg.limits,
        "analyzer HTTP",
        shutdown_signal(),
    )
    .await?;
    let _ = stop_tx.send(true);
    if let Some(t) = evaluator_task {
        let _ = t.await;
    }
    for w in workers {
        let _ = w.await;
    }
    let _ = finalizer.await;
    let _ = refresher.await;
    let _ = span_builder.await;
    tracing::info!("analyzer stopped");
    Ok(())
}

/// Writes the ready file atomically (temp file + rename) so a reader never sees half of it.
fn write_ready_file(path: &Path, body: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}
