//! Command-line interface of `fleetpulse-collector`.

use clap::{Args, Parser, Subcommand};
use fleetpulse_collector::config::{ConfigArgs, ControlArgs};

/// Fleetpulse collector: receives device-enrollment telemetry from agents over gRPC and stores it
/// exactly once in ClickHouse.
///
/// Every option can also be set in a TOML file (--config, keys in snake_case) or in an
/// environment variable FLEETPULSE_COLLECTOR_<OPTION_IN_UPPER_SNAKE>; flags win over the
/// environment, which wins over the file.
#[derive(Debug, Parser)]
#[command(name = "fleetpulse-collector", version, about, long_about)]
pub struct Cli {
    /// Log line format on stderr: `text` or `json`. The filter comes from RUST_LOG
    /// (default info); OTLP traces are exported when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    #[arg(
        long,
        global = true,
        env = "FLEETPULSE_COLLECTOR_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: fleetpulse_telemetry::LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector: apply migrations, serve gRPC ingest and HTTP health/metrics until
    /// SIGTERM or SIGINT, then drain in-flight pushes and exit 0.
    Serve(ConfigArgs),
    /// Apply the ClickHouse and control-database migrations, then exit.
    Migrate(ConfigArgs),
    /// Manage tenant enrollment tokens (exchanged by agents for credentials in Register).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage registered agents and their credentials.
    #[command(subcommand)]
    Agent(AgentCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an enrollment token for a tenant. Prints the token (fpe_...) alone on the first
    /// line of stdout; it is shown only this once (only its hash is stored).
    Create {
        /// Tenant the token enrolls agents into: 1..=64 ASCII letters, digits, '-', '_', '.'.
        #[arg(long)]
        tenant: String,
        /// Free text to recognise the token by later (where it was handed out).
        #[arg(long, default_value = "")]
        description: String,
        /// Registrations the token allows at most (e.g. the number of devices of a rollout);
        /// then Register answers PERMISSION_DENIED "used up". [default: unlimited]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        max_uses: Option<u32>,
        /// How long the token enrolls, from now: `90m`, `12h`, `7days`, `2w`; then Register
        /// answers PERMISSION_DENIED "expired". [default: never expires]
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// List enrollment tokens (never their secrets), with their use counts, caps and expiry.
    List(ListArgs),
    /// Revoke an enrollment token: registrations with it fail from now on. Agents already
    /// registered with it keep working; revoke them with `agent revoke`.
    Revoke {
        /// The token id: the part after `fpe_` and before the second `_`.
        token_id: String,
        #[command(flatten)]
        control: ControlArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List registered agents.
    List(ListArgs),
    /// Revoke an agent's credential: its next request is refused (UNAUTHENTICATED).
    Revoke {
        /// The agent id (UUID) returned by Register.
        agent_id: String,
        #[command(flatten)]
        control: ControlArgs,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub control: ControlArgs,
}
