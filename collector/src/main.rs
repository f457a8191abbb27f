//! `fleetpulse-collector`: see `--help`. Errors end the process with status 1 and a message.

mod cli;

use anyhow::{Context, Result};
use clap::Parser;
use fleetpulse_collector::{
    control::{
        ControlDb,
        agents::AgentRecord,
        now_ms,
        tokens::{TokenLimits, TokenRecord},
    },
    validate::fmt_ts,
};
use serde_json::json;

use cli::{AgentCommand, Cli, Command, ListArgs, TokenCommand};

/// mimalloc instead of glibc malloc: a push allocates thousands of small strings on one thread
/// and the writer frees them on another; glibc spent over a third of the collector's CPU in
/// arena locking and `malloc_consolidate` under the ingest benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    fleetpulse_telemetry::restrict_file_modes();
    let cli = Cli::parse();
    let _telemetry = fleetpulse_telemetry::init("fleetpulse-collector", cli.log_format)
        .context("setting up logging")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Serve(args) => {
            let config = args.load()?;
            fleetpulse_collector::serve(config, shutdown_signal()).await?;
            Ok(())
        }
        Command::Migrate(args) => {
            let config = args.load()?;
            let applied = fleetpulse_collector::migrate(&config).await?;
            eprintln!(
                "migrations applied to ClickHouse database {}: {}",
                config.clickhouse_database,
                if applied.is_empty() {
                    "none (already up to date)".to_owned()
                } else {
                    format!("{applied:?}")
                }
            );
            Ok(())
        }
        Command::Token(TokenCommand::Create {
            tenant,
            description,
            max_uses,
            expires_in,
            control,
        }) => {
            let db = open(&control).await?;
            let expires_at_ms = match expires_in {
                Some(d) => {
                    let ms = i64::try_from(d.as_millis())
                        .ok()
                        .and_then(|ms| now_ms().checked_add(ms))
                        .context("--expires-in: too far in the future")?;
                    Some(ms)
                }
                None => None,
            };
            let limits = TokenLimits {
                max_uses,
                expires_at_ms,
            };
            let (record, token) = db.create_token_with(&tenant, &description, limits).await?;
            println!("{token}");
            eprintln!(
                "created enrollment token {} for tenant {} ({}, {}); it is shown only this once",
                record.id,
                record.tenant,
                record.max_uses.map_or_else(
                    || "unlimited uses".to_owned(),
                    |n| format!("at most {n} uses")
                ),
                record.expires_at_ms.map_or_else(
                    || "never expires".to_owned(),
                    |at| format!("expires {}", ms(at))
                )
            );
            Ok(())
        }
        Command::Token(TokenCommand::List(list)) => {
            let db = open(&list.control).await?;
            let tokens = db.list_tokens(list.tenant.as_deref()).await?;
            print_tokens(&list, &tokens);
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { token_id, control }) => {
            let db = open(&control).await?;
            db.revoke_token(&token_id).await?;
            eprintln!("revoked enrollment token {token_id}");
            Ok(())
        }
        Command::Agent(AgentCommand::List(list)) => {
            let db = open(&list.control).await?;
            let agents = db.list_agents(list.tenant.as_deref()).await?;
            print_agents(&list, &agents);
            Ok(())
        }
        Command::Agent(AgentCommand::Revoke { agent_id, control }) => {
            let db = open(&control).await?;
            db.revoke_agent(&agent_id).await?;
            eprintln!("revoked agent {agent_id}");
            Ok(())
        }
    }
}

async fn open(args: &fleetpulse_collector::config::ControlArgs) -> Result<ControlDb> {
    let config = args.load()?;
    Ok(ControlDb::open(&config.database_url).await?)
}

fn ms(at: i64) -> String {
    fmt_ts(at.div_euclid(1000))
}

fn opt_ms(at: Option<i64>) -> serde_json::Value {
    at.map_or(serde_json::Value::Null, |t| json!(ms(t)))
}

fn print_tokens(list: &ListArgs, tokens: &[TokenRecord]) {
    if list.json {
        let rows: Vec<_> = tokens
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "tenant": t.tenant,
                    "description": t.description,
                    "created_at": ms(t.created_at_ms),
                    "revoked_at": opt_ms(t.revoked_at_ms),
                    "uses": t.uses,
                    "max_uses": t.max_uses,
                    "expires_at": opt_ms(t.expires_at_ms),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    println!(
        "{:<16}  {:<20}  {:<20}  {:<20}  {:<20}  {:<13}  DESCRIPTION",
        "ID", "TENANT", "CREATED", "REVOKED", "EXPIRES", "USES"
    );
    for t in tokens {
        let uses = match t.max_uses {
            Some(max) => format!("{}/{max}", t.uses),
            None => t.uses.to_string(),
        };
        println!(
            "{:<16}  {:<20}  {:<20}  {:<20}  {:<20}  {:<13}  {}",
            t.id,
            t.tenant,
            ms(t.created_at_ms),
            t.revoked_at_ms.map_or_else(|| "-".to_owned(), ms),
            t.expires_at_ms.map_or_else(|| "never".to_owned(), ms),
            uses,
            t.description
        );
    }
}

fn print_agents(list: &ListArgs, agents: &[AgentRecord]) {
    if list.json {
        let rows: Vec<_> = agents
            .iter()
            .map(|a| {
                json!({
                    "id": a.id,
                    "tenant": a.tenant,
                    "device_id": a.device_id,
                    "hostname": a.hostname,
                    "platform": a.platform,
                    "agent_version": a.agent_version,
                    "token_id": a.token_id,
                    "created_at": ms(a.created_at_ms),
                    "revoked_at": opt_ms(a.revoked_at_ms),
                    "last_seen_at": opt_ms(a.last_seen_at_ms),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    println!(
        "{:<36}  {:<20}  {:<24}  {:<10}  {:<20}  {:<20}  HOSTNAME",
        "ID", "TENANT", "DEVICE", "PLATFORM", "LAST SEEN", "REVOKED"
    );
    for a in agents {
        println!(
            "{:<36}  {:<20}  {:<24}  {:<10}  {:<20}  {:<20}  {}",
            a.id,
            a.tenant,
            a.device_id,
            a.platform,
            a.last_seen_at_ms.map_or_else(|| "-".to_owned(), ms),
            a.revoked_at_ms.map_or_else(|| "-".to_owned(), ms),
            a.hostname
        );
    }
}

/// Completes on SIGTERM or SIGINT.
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
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
