//! Side-by-side with a peer collector (issue 13 section 3): the same enrollment events through
//! our collector (gRPC `Push`) and through rotel (a Rust OpenTelemetry collector from PyPI's
//! `rotel` package, OTLP/HTTP logs in, ClickHouse exporter out), both writing to the same
//! local HTTP endpoint that accepts ClickHouse inserts and counts their rows. The figure is
//! events per collector CPU-second, each collector's CPU read from `/proc/<pid>/stat` over its
//! own phase (first request to the last row counted).
//!
//! ```text
//! python3 -m venv /tmp/rotel && /tmp/rotel/bin/pip install rotel
//! cargo run --release -p fleetpulse-tests --bin peer-bench -- \
//!     --rotel /tmp/rotel/lib/python3.11/site-packages/rotel/rotel-agent --events 200000
//! ```
//! (`ROTEL_AGENT` may name the binary instead of `--rotel`.)
//!
//! The endpoint (the *sink*) answers every `INSERT .. FORMAT RowBinary` itself: it parses each
//! row with the column types (rotel's `otel_logs` types are known here, ours are read from the
//! real table with `DESCRIBE`), counts them and answers 200 without storing anything; every
//! other request (our collector's migrations and duplicate lookups) goes on to a private
//! ClickHouse 18.16, whose tables therefore stay empty. rotel's tables need a newer ClickHouse
//! (Map, LowCardinality, DateTime64 codecs), which is why the rows are counted, not stored.
//! Both collectors send uncompressed RowBinary (ours does on loopback by default; rotel is
//! told `--clickhouse-exporter-compression none`).
//!
//! What each side does per event is not the same work, and the report says so: ours
//! authenticates every push, validates every field, keeps the exactly-once ledger (two
//! control-database writes per push) and looks every event id up in ClickHouse before the
//! insert; rotel decodes OTLP, batches and encodes.
//!
//! The last stdout line is one JSON object with both sides' figures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use fleetpulse_proto::v1::telemetry_item::Kind;
use fleetpulse_proto::v1::{
    EnrollmentEvent, EnrollmentMethod, EnrollmentStage, Outcome, Platform, PushRequest, SourceKind,
    TelemetryItem,
};
use fleetpulse_tests::harness::process::{cpu_time, free_port};
use fleetpulse_tests::harness::synthetic::Synth;
use fleetpulse_tests::harness::{self, Collector, Registered, bearer};
use futures::{StreamExt, TryStreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use tonic::Code;

/// Events per collector CPU-second: our collector and rotel side by side, same events, same
/// counting ClickHouse endpoint.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Path of rotel's collector binary (`rotel-agent`, inside PyPI's `rotel` package).
    #[arg(long, env = "ROTEL_AGENT")]
    rotel: std::path::PathBuf,
    /// Enrollment events sent to each collector.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Concurrent senders (agents), each sending its batches one after the other.
    #[arg(long, default_value_t = 64)]
    agents: usize,
    /// Events per request (a Push for ours, an OTLP export request for rotel).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Rounds; each round runs both collectors (ours first, then rotel).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

type Http = HttpClient<HttpConnector, Full<Bytes>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.events == 0 || args.agents == 0 || args.batch == 0 || args.rounds == 0 {
        bail!("--events, --agents, --batch and --rounds must be at least 1");
    }
    let ch = harness::private().context("start a private ClickHouse")?;
    let http: Http = HttpClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build_http();
    let sink = Arc::new(Sink {
        upstream: ch.url().trim_end_matches('/').to_owned(),
        http: http.clone(),
        rows: Mutex::new(HashMap::new()),
        schemas: Mutex::new(HashMap::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sink_url = format!("http://{}", listener.local_addr()?);
    // No body limit: axum's default of 2 MB answered 413 to every flush of more than ~7,000
    // of our rows, and the collector retried those flushes until the run gave up.
    let app = axum::Router::new()
        .fallback(sink_request)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(sink.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    eprintln!("peer-bench: counting ClickHouse endpoint at {sink_url}");

    let mut ours = Vec::new();
    let mut rotel = Vec::new();
    for round in 1..=args.rounds {
        let db = harness::unique_database("peer_ours");
        let o = run_ours(&args, &sink, &sink_url, &db).await?;
        eprintln!("peer-bench: round {round} ours:  {o}");
        ch.execute(&format!("DROP DATABASE IF EXISTS {db}")).await?;
        ours.push(o);
        let r = run_rotel(&args, &sink, &sink_url, &http).await?;
        eprintln!("peer-bench: round {round} rotel: {r}");
        rotel.push(r);
    }
    let median = |v: &[Phase], f: fn(&Phase) -> f64| {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(f64::total_cmp);
        x[x.len() / 2]
    };
    let summary = |v: &[Phase]| {
        serde_json::json!({
            "events_per_cpu_s_median": median(v, Phase::per_cpu_s).round(),
            "cpu_s_per_million_events_median":
                (median(v, |p| p.cpu_s * 1e6 / p.events as f64) * 1000.0).round() / 1000.0,
            "events_per_s_median": median(v, Phase::per_s).round(),
            "rounds": v.iter().map(|p| serde_json::json!({
                "cpu_s": (p.cpu_s * 1000.0).round() / 1000.0,
                "wall_s": (p.wall_s * 1000.0).round() / 1000.0,
                "events_per_cpu_s": p.per_cpu_s().round(),
            })).collect::<Vec<_>>(),
        })
    };
    let ratio = median(&ours, Phase::per_cpu_s) / median(&rotel, Phase::per_cpu_s);
    eprintln!("peer-bench: events per collector CPU-second, ours / rotel = {ratio:.3}");
    println!(
        "{}",
        serde_json::json!({
            "events": args.events,
            "agents": args.agents,
            "batch": args.batch,
            "fleetpulse": summary(&ours),
            "rotel": summary(&rotel),
            "ours_over_rotel_events_per_cpu_s": (ratio * 1000.0).round() / 1000.0,
        })
    );
    Ok(())
}

/// One collector's run.
struct Phase {
    events: usize,
    cpu_s: f64,
    wall_s: f64,
}

impl Phase {
    fn per_cpu_s(&self) -> f64 {
        self.events as f64 / self.cpu_s.max(1e-9)
    }
    fn per_s(&self) -> f64 {
        self.events as f64 / self.wall_s.max(1e-9)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events in {:.2} s wall, {:.2} CPU-s: {:.0} events per CPU-second ({:.2} CPU-s per million)",
            self.events,
            self.wall_s,
            self.cpu_s,
            self.per_cpu_s(),
            self.cpu_s * 1e6 / self.events as f64
        )
    }
}

/// The events of each agent, split into batches (the same for both collectors).
fn events(args: &Args, agent_ids: &[String]) -> Vec<Vec<Vec<EnrollmentEvent>>> {
    let mut synth = Synth::new(args.seed);
    let start = SystemTime::now() - Duration::from_secs(3_600);
    let per_agent = args.events / agent_ids.len();
    let remainder = args.events % agent_ids.len();
    agent_ids
        .iter()
        .enumerate()
        .map(|(i, agent)| {
            let n = per_agent + usize::from(i < remainder);
            let devices: Vec<String> = (0..50).map(|_| synth.device_id()).collect();
            let step = Duration::from_secs(3_000) / u32::try_from(n.max(1)).unwrap_or(u32::MAX);
            let items = synth.event_items(agent, &devices, n, start, step);
            let events: Vec<EnrollmentEvent> = items
                .into_iter()
                .filter_map(|i| match i.kind {
                    Some(Kind::Event(e)) => Some(e),
                    _ => None,
                })
                .collect();
            events.chunks(args.batch).map(<[_]>::to_vec).collect()
        })
        .collect()
}

async fn run_ours(args: &Args, sink: &Sink, sink_url: &str, db: &str) -> anyhow::Result<Phase> {
    let mut collector = Collector::builder(sink_url, db)
        .arg("--clickhouse-compression")
        .arg("none")
        .without_admission_limits(&[])
        .start()
        .await
        .context("start our collector")?;
    let token = collector.token_create("peer").await?;
    let mut synth = Synth::new(args.seed ^ 1);
    let devices: Vec<String> = (0..args.agents).map(|_| synth.device_id()).collect();
    let agents: Vec<Registered> = futures::stream::iter(&devices)
        .map(|d| collector.register(&token, d))
        .buffered(16)
        .try_collect()
        .await?;
    let ids: Vec<String> = agents.iter().map(|a| a.agent_id.clone()).collect();
    let plans: Vec<Vec<PushRequest>> = events(args, &ids)
        .into_iter()
        .map(|batches| {
            batches
                .into_iter()
                .enumerate()
                .map(|(seq, events)| PushRequest {
                    batch_seq: seq as u64 + 1,
                    items: events
                        .into_iter()
                        .map(|e| TelemetryItem {
                            kind: Some(Kind::Event(e)),
                        })
                        .collect(),
                    all_or_nothing: false,
                })
                .collect()
        })
        .collect();
    let table = format!("{db}.enrollment_events");
    let pid = collector.pid().context("collector pid")?;
    let cpu0 = cpu_time(pid).context("collector CPU time")?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (agent, batches) in agents.into_iter().zip(plans) {
        let client = collector.lazy_client()?;
        tasks.push(tokio::spawn(push_all(client, agent, batches)));
    }
    for t in tasks {
        t.await.context("agent task panicked")??;
    }
    sink.await_rows(&table, args.events as u64).await?;
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_s = cpu_time(pid)
        .context("collector CPU time")?
        .saturating_sub(cpu0)
        .as_secs_f64();
    collector.stop().await?;
    Ok(Phase {
        events: args.events,
        cpu_s,
        wall_s,
    })
}

async fn push_all(
    mut client: fleetpulse_proto::v1::ingest_service_client::IngestServiceClient<
        tonic::transport::Channel,
    >,
    agent: Registered,
    batches: Vec<PushRequest>,
) -> anyhow::Result<()> {
    for batch in batches {
        let mut backoff = Duration::from_millis(20);
        loop {
            match client.push(bearer(&agent.credential, batch.clone())).await {
                Ok(r) if r.get_ref().accepted as usize == batch.items.len() => break,
                Ok(r) => bail!("batch {}: {:?}", batch.batch_seq, r.into_inner()),
                Err(s) if s.code() == Code::Unavailable => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(s) => bail!("batch {}: {s}", batch.batch_seq),
            }
        }
    }
    Ok(())
}

async fn run_rotel(args: &Args, sink: &Sink, sink_url: &str, http: &Http) -> anyhow::Result<Phase> {
    let grpc_port = free_port()?;
    let http_port = free_port()?;
    let log = tempfile::NamedTempFile::new()?;
    let mut child = tokio::process::Command::new(&args.rotel)
        .args([
            "start",
            "--exporter",
            "clickhouse",
            "--clickhouse-exporter-endpoint",
            sink_url,
            "--clickhouse-exporter-compression",
            "none",
            "--otlp-grpc-endpoint",
            &format!("127.0.0.1:{grpc_port}"),
            "--otlp-http-endpoint",
            &format!("127.0.0.1:{http_port}"),
        ])
        .stdout(log.reopen()?)
        .stderr(log.reopen()?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", args.rotel.display()))?;
    let pid = child.id().context("rotel pid")?;
    harness::poll_until(
        Duration::from_secs(20),
        "rotel's OTLP/HTTP port",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", http_port))
                .await
                .map(|_| ())
        },
    )
    .await;
    let ids: Vec<String> = (0..args.agents)
        .map(|i| format!("peer-agent-{i}"))
        .collect();
    // Bodies encoded before the clock starts (an agent sends from its spool).
    let bodies: Vec<Vec<Bytes>> = events(args, &ids)
        .into_iter()
        .zip(&ids)
        .map(|(batches, agent)| {
            batches
                .iter()
                .map(|b| Bytes::from(otlp::request(agent, b).encode_to_vec()))
                .collect()
        })
        .collect();
    let table = "otel.otel_logs";
    let before = sink.count(table);
    let url = format!("http://127.0.0.1:{http_port}/v1/logs");
    let cpu0 = cpu_time(pid).context("rotel CPU time")?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for agent_bodies in bodies {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for body in agent_bodies {
                let mut backoff = Duration::from_millis(20);
                loop {
                    let request = hyper::Request::post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(Full::new(body.clone()))?;
                    let response = http.request(request).await?;
                    let status = response.status();
                    let text = response.into_body().collect().await?.to_bytes();
                    if status.is_success() {
                        break;
                    }
                    if status == StatusCode::TOO_MANY_REQUESTS
                        || status == StatusCode::SERVICE_UNAVAILABLE
                    {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                    bail!(
                        "rotel answered {status}: {}",
                        String::from_utf8_lossy(&text)
                    );
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("sender task panicked")??;
    }
    sink.await_rows(table, before + args.events as u64).await?;
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_s = cpu_time(pid)
        .context("rotel CPU time")?
        .saturating_sub(cpu0)
        .as_secs_f64();
    child.kill().await?;
    Ok(Phase {
        events: args.events,
        cpu_s,
        wall_s,
    })
}

/// A table's columns with their types, in table order.
type Schema = Arc<Vec<(String, rowbinary::Type)>>;

/// The counting ClickHouse endpoint.
struct Sink {
    upstream: String,
    http: Http,
    /// Rows counted per table (`db.table`).
    rows: Mutex<HashMap<String, Arc<AtomicU64>>>,
    /// Column types per table, read once from the upstream server.
    schemas: Mutex<HashMap<String, Schema>>,
}

impl Sink {
    fn counter(&self, table: &str) -> Arc<AtomicU64> {
        let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.entry(table.to_owned()).or_default().clone()
    }

    fn count(&self, table: &str) -> u64 {
        self.counter(table).load(Ordering::Acquire)
    }

    /// Waits until `table` counted exactly `expected` rows (more is an error: duplicates).
    async fn await_rows(&self, table: &str, expected: u64) -> anyhow::Result<()> {
        let counter = self.counter(table);
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let n = counter.load(Ordering::Acquire);
            if n == expected {
                return Ok(());
            }
            if n > expected {
                bail!("{table}: {n} rows counted, more than the {expected} sent");
            }
            if Instant::now() >= deadline {
                bail!("{table}: only {n} of {expected} rows arrived within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn forward(
        &self,
        method: Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: Bytes,
    ) -> anyhow::Result<Response> {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.upstream));
        for (name, value) in headers {
            if !matches!(
                name.as_str(),
                "host" | "content-length" | "transfer-encoding" | "connection"
            ) {
                request = request.header(name, value);
            }
        }
        let response = self.http.request(request.body(Full::new(body))?).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        let mut out = (parts.status, body).into_response();
        for (name, value) in &parts.headers {
            if !matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "connection"
            ) {
                out.headers_mut().insert(name, value.clone());
            }
        }
        Ok(out)
    }

    /// Column types of `table` (as `db.table`), in table order.
    async fn schema(&self, table: &str) -> anyhow::Result<Schema> {
        if let Some(s) = self
            .schemas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(table)
        {
            return Ok(s.clone());
        }
        let columns: Vec<(String, String)> = if table.ends_with(".otel_logs") {
            rowbinary::ROTEL_OTEL_LOGS
                .iter()
                .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
                .collect()
        } else {
            let sql = format!("DESCRIBE TABLE {table} FORMAT TabSeparated");
            let request = hyper::Request::post(format!("{}/", self.upstream))
                .body(Full::new(Bytes::from(sql)))?;
            let response = self.http.request(request).await?;
            let status = response.status();
            let text = response.into_body().collect().await?.to_bytes();
            let text = String::from_utf8_lossy(&text);
            if !status.is_success() {
                bail!("DESCRIBE {table}: {status} {text}");
            }
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split('\t');
                    Some((f.next()?.to_owned(), f.next()?.to_owned()))
                })
                .collect()
        };
        let parsed = columns
            .into_iter()
            .map(|(n, t)| Ok((n, rowbinary::Type::parse(&t)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let parsed = Arc::new(parsed);
        self.schemas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(table.to_owned(), parsed.clone());
        Ok(parsed)
    }

    /// Counts the rows of one RowBinary insert.
    async fn insert(&self, query: &str, database: &str, body: &[u8]) -> anyhow::Result<u64> {
        let (table, columns) = rowbinary::parse_insert(query)?;
        let table = if table.contains('.') {
            table
        } else {
            format!("{database}.{table}")
        };
        let schema = self.schema(&table).await?;
        let types: Vec<&rowbinary::Type> = match &columns {
            None => schema.iter().map(|(_, t)| t).collect(),
            Some(cols) => cols
                .iter()
                .map(|c| {
                    schema
                        .iter()
                        .find(|(n, _)| n == c)
                        .map(|(_, t)| t)
                        .with_context(|| format!("{table}: no column {c}"))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let rows = rowbinary::count_rows(&types, body)?;
        self.counter(&table).fetch_add(rows, Ordering::AcqRel);
        Ok(rows)
    }
}

async fn sink_request(
    State(sink): State<Arc<Sink>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let query = params.get("query").map(String::as_str).unwrap_or("");
    let result = if query
        .trim_start()
        .get(..6)
        .is_some_and(|w| w.eq_ignore_ascii_case("insert"))
    {
        if params.get("decompress").is_some_and(|v| v == "1") {
            return (
                StatusCode::BAD_REQUEST,
                "compressed inserts are not counted",
            )
                .into_response();
        }
        let database = params.get("database").map_or("default", String::as_str);
        sink.insert(query, database, &body)
            .await
            .map(|_| StatusCode::OK.into_response())
    } else {
        sink.forward(method, &uri, &headers, body).await
    };
    result.unwrap_or_else(|e| {
        eprintln!("peer-bench: sink: {e:#}");
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response()
    })
}

/// Just enough RowBinary to walk rows: each value's length from its type.
mod rowbinary {
    use anyhow::{Context, bail};

    /// rotel's `otel_logs` columns (its ClickHouse exporter's schema).
    pub const ROTEL_OTEL_LOGS: &[(&str, &str)] = &[
        ("Timestamp", "DateTime64(9)"),
        ("TraceId", "String"),
        ("SpanId", "String"),
        ("TraceFlags", "UInt8"),
        ("SeverityText", "LowCardinality(String)"),
        ("SeverityNumber", "UInt8"),
        ("ServiceName", "LowCardinality(String)"),
        ("Body", "String"),
        ("ResourceSchemaUrl", "LowCardinality(String)"),
        ("ResourceAttributes", "Map(LowCardinality(String), String)"),
        ("ScopeSchemaUrl", "LowCardinality(String)"),
        ("ScopeName", "String"),
        ("ScopeVersion", "LowCardinality(String)"),
        ("ScopeAttributes", "Map(LowCardinality(String), String)"),
        ("LogAttributes", "Map(LowCardinality(String), String)"),
    ];

    #[derive(Debug)]
    pub enum Type {
        Fixed(usize),
        String,
        Nullable(Box<Type>),
        Array(Box<Type>),
        Map(Box<Type>, Box<Type>),
    }

    impl Type {
        pub fn parse(t: &str) -> anyhow::Result<Type> {
            let t = t.trim();
            let inner = |prefix: &str| {
                t.strip_prefix(prefix)
                    .and_then(|r| r.strip_suffix(')'))
                    .map(str::trim)
            };
            if let Some(i) = inner("LowCardinality(") {
                return Type::parse(i);
            }
            if let Some(i) = inner("Nullable(") {
                return Ok(Type::Nullable(Box::new(Type::parse(i)?)));
            }
            if let Some(i) = inner("Array(") {
                return Ok(Type::Array(Box::new(Type::parse(i)?)));
            }
            if let Some(i) = inner("Map(") {
                let (k, v) = split_top_comma(i).with_context(|| format!("type {t}"))?;
                return Ok(Type::Map(
                    Box::new(Type::parse(k)?),
                    Box::new(Type::parse(v)?),
                ));
            }
            if let Some(n) = inner("FixedString(") {
                return Ok(Type::Fixed(n.parse()?));
            }
            let base = t.split('(').next().unwrap_or(t);
            Ok(match base {
                "String" => Type::String,
                "UInt8" | "Int8" | "Bool" | "Enum8" => Type::Fixed(1),
                "UInt16" | "Int16" | "Date" | "Enum16" => Type::Fixed(2),
                "UInt32" | "Int32" | "Float32" | "DateTime" | "IPv4" | "Date32" => Type::Fixed(4),
                "UInt64" | "Int64" | "Float64" | "DateTime64" => Type::Fixed(8),
                "UInt128" | "Int128" | "UUID" | "IPv6" => Type::Fixed(16),
                _ => bail!("unsupported column type {t}"),
            })
        }
    }

    fn split_top_comma(s: &str) -> Option<(&str, &str)> {
        let mut depth = 0i32;
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => return Some((&s[..i], &s[i + 1..])),
                _ => {}
            }
        }
        None
    }

    fn varint(buf: &[u8], pos: &mut usize) -> anyhow::Result<usize> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *buf.get(*pos).context("truncated varint")?;
            *pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(usize::try_from(v)?);
            }
        }
        bail!("varint too long")
    }

    fn skip(t: &Type, buf: &[u8], pos: &mut usize) -> anyhow::Result<()> {
        match t {
            Type::Fixed(n) => *pos += n,
            Type::String => {
                let n = varint(buf, pos)?;
                *pos += n;
            }
            Type::Nullable(i) => {
                let null = *buf.get(*pos).context("truncated Nullable")?;
                *pos += 1;
                if null == 0 {
                    skip(i, buf, pos)?;
                }
            }
            Type::Array(i) => {
                for _ in 0..varint(buf, pos)? {
                    skip(i, buf, pos)?;
                }
            }
            Type::Map(k, v) => {
                for _ in 0..varint(buf, pos)? {
                    skip(k, buf, pos)?;
                    skip(v, buf, pos)?;
                }
            }
        }
        if *pos > buf.len() {
            bail!("row runs past the end of the body");
        }
        Ok(())
    }

    /// Rows in `body`; the body must end exactly after the last row.
    pub fn count_rows(types: &[&Type], body: &[u8]) -> anyhow::Result<u64> {
        let mut pos = 0;
        let mut rows = 0;
        while pos < body.len() {
            for t in types {
                skip(t, body, &mut pos)?;
            }
            rows += 1;
        }
        Ok(rows)
    }

    /// `INSERT INTO t (a, b) FORMAT RowBinary` -> (`t`, Some([a, b])).
    pub fn parse_insert(query: &str) -> anyhow::Result<(String, Option<Vec<String>>)> {
        let q = query.trim();
        let format_at = q
            .rfind("FORMAT")
            .with_context(|| format!("no FORMAT in {q:.200}"))?;
        if q[format_at + 6..].trim() != "RowBinary" {
            bail!("only RowBinary inserts are counted: {q:.200}");
        }
        let head = q[..format_at].trim();
        let rest = head
            .get(..11)
            .filter(|h| h.eq_ignore_ascii_case("insert into"))
            .map(|_| head[11..].trim())
            .with_context(|| format!("not an INSERT INTO: {q:.200}"))?;
        let clean = |s: &str| s.trim().trim_matches(['`', '"']).to_owned();
        Ok(match rest.split_once('(') {
            Some((table, cols)) => (
                clean(table),
                Some(cols.trim_end_matches(')').split(',').map(clean).collect()),
            ),
            None => (clean(rest), None),
        })
    }
}

/// The OTLP logs messages rotel receives (opentelemetry-proto `logs/v1`, `common/v1`,
/// `resource/v1`, field numbers as published), and our events mapped onto them: every field of
/// the event as a log attribute, the agent as the resource.
mod otlp {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportLogsServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_logs: Vec<ResourceLogs>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceLogs {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_logs: Vec<ScopeLogs>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeLogs {
        #[prost(message, optional, tag = "1")]
        pub scope: Option<InstrumentationScope>,
        #[prost(message, repeated, tag = "2")]
        pub log_records: Vec<LogRecord>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InstrumentationScope {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LogRecord {
        #[prost(fixed64, tag = "1")]
        pub time_unix_nano: u64,
        #[prost(int32, tag = "2")]
        pub severity_number: i32,
        #[prost(string, tag = "3")]
        pub severity_text: String,
        #[prost(message, optional, tag = "5")]
        pub body: Option<AnyValue>,
        #[prost(message, repeated, tag = "6")]
        pub attributes: Vec<KeyValue>,
        #[prost(fixed64, tag = "11")]
        pub observed_time_unix_nano: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "Value", tags = "1, 3")]
        pub value: Option<Value>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(int64, tag = "3")]
        Int(i64),
    }

    fn s(key: &str, v: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(Value::String(v.to_owned())),
            }),
        }
    }
    fn i(key: &str, v: i64) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(Value::Int(v)),
            }),
        }
    }
    fn name<E>(v: i32, f: fn(i32) -> Option<E>, n: fn(&E) -> &'static str) -> &'static str {
        f(v).as_ref().map_or("unknown", n)
    }

    fn record(e: &EnrollmentEvent) -> LogRecord {
        let ts = e.occurred_at.as_ref();
        let nanos = ts.map_or(0, |t| {
            u64::try_from(t.seconds).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.nanos).unwrap_or(0)
        });
        let error = e.error.clone().unwrap_or_default();
        let source = e.source.clone().unwrap_or_default();
        let mut attributes = vec![
            s("event_id", &e.event_id),
            s("device_id", &e.device_id),
            s(
                "platform",
                name(
                    e.platform,
                    |v| Platform::try_from(v).ok(),
                    Platform::as_str_name,
                ),
            ),
            s("os_edition", &e.os_edition),
            s("os_version", &e.os_version),
            s(
                "enrollment_method",
                name(
                    e.enrollment_method,
                    |v| EnrollmentMethod::try_from(v).ok(),
                    EnrollmentMethod::as_str_name,
                ),
            ),
            s(
                "stage",
                name(
                    e.stage,
                    |v| EnrollmentStage::try_from(v).ok(),
                    EnrollmentStage::as_str_name,
                ),
            ),
            s(
                "outcome",
                name(
                    e.outcome,
                    |v| Outcome::try_from(v).ok(),
                    Outcome::as_str_name,
                ),
            ),
            i("error.code", i64::from(error.code)),
            s("error.symbol", &error.symbol),
            s(
                "source.kind",
                name(
                    source.kind,
                    |v| SourceKind::try_from(v).ok(),
                    SourceKind::as_str_name,
                ),
            ),
            s("source.channel", &source.channel),
            i("source.event_id", i64::from(source.event_id)),
            i(
                "source.record_id",
                i64::try_from(source.record_id).unwrap_or(i64::MAX),
            ),
            s("user_principal_name", &e.user_principal_name),
        ];
        let mut extra: Vec<(&String, &String)> = e.attributes.iter().collect();
        extra.sort_unstable();
        attributes.extend(
            extra
                .into_iter()
                .map(|(k, v)| s(&format!("attributes.{k}"), v)),
        );
        let failed = e.outcome == Outcome::Failed as i32;
        LogRecord {
            time_unix_nano: nanos,
            observed_time_unix_nano: nanos,
            severity_number: if failed { 17 } else { 9 },
            severity_text: if failed { "ERROR" } else { "INFO" }.to_owned(),
            body: Some(AnyValue {
                value: Some(Value::String(error.message)),
            }),
            attributes,
        }
    }

    /// One export request: `events` of `agent`.
    pub fn request(agent: &str, events: &[EnrollmentEvent]) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![
                        s("service.name", "fleetpulse-agent"),
                        s("agent_id", agent),
                        s("tenant", "peer"),
                    ],
                }),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "fleetpulse".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                    }),
                    log_records: events.iter().map(record).collect(),
                }],
            }],
        }
    }
}
