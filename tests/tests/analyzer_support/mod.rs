//! Shared by the analyzer end-to-end suites: the analyzer binary as a subprocess, a minimal
//! HTTP client with headers and bodies, generated telemetry of known composition, and
//! brute-force aggregation over the generated rows.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fleetpulse_analyzer::catalog::Catalog;
use fleetpulse_analyzer::query::catalog_adapter::CatalogClassifier;
use fleetpulse_analyzer::query::classes::{RawSignal, SignalClassifier};
use fleetpulse_analyzer::query::sql::message_key;
use fleetpulse_tests::harness::collector::workspace_binary;
use fleetpulse_tests::harness::process::{spawn_guarded, terminate};
use fleetpulse_tests::harness::rows::{DeviceStateRow, EnrollmentEventRow};
use fleetpulse_tests::harness::{ClickHouseServer, poll_until};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// 2024-03-01T00:00:00Z.
pub const T0: u32 = 1_709_251_200;
pub const DAY: u32 = 86_400;

/// A running `fleetpulse-analyzer serve`.
pub struct Analyzer {
    child: Child,
    pub addr: SocketAddr,
    pub db_url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Analyzer {
    fn drop(&mut self) {
        let _ = terminate(&mut self.child, Duration::from_secs(10));
    }
}

impl Analyzer {
    pub async fn start(ch: &ClickHouseServer, database: &str, extra: &[&str]) -> Analyzer {
        Self::start_full(ch, database, None, extra, &[]).await
    }

    /// Like [`Self::start`], with the control database at `db_url` (shared by several
    /// analyzers) instead of a private SQLite file.
    pub async fn start_with_db(
        ch: &ClickHouseServer,
        database: &str,
        db_url: Option<&str>,
        extra: &[&str],
    ) -> Analyzer {
        Self::start_full(ch, database, db_url, extra, &[]).await
    }

    /// [`Analyzer::start`] with extra environment variables for the server process.
    pub async fn start_with_env(
        ch: &ClickHouseServer,
        database: &str,
        extra: &[&str],
        env: &[(&str, &std::path::Path)],
    ) -> Analyzer {
        Self::start_full(ch, database, None, extra, env).await
    }

    /// An analyzer recording every SQL statement it sends into `log`
    /// (`FLEETPULSE_ANALYZER_SQL_LOG`), so that a test can tell which tables answered.
    pub async fn start_with_sql_log(
        ch: &ClickHouseServer,
        database: &str,
        log: &std::path::Path,
    ) -> Analyzer {
        Self::start_with_env(
            ch,
            database,
            &[],
            &[(fleetpulse_analyzer::query::engine::sql_log::ENV, log)],
        )
        .await
    }

    async fn start_full(
        ch: &ClickHouseServer,
        database: &str,
        db_url: Option<&str>,
        extra: &[&str],
        env: &[(&str, &std::path::Path)],
    ) -> Analyzer {
        let dir = tempfile::tempdir().expect("tempdir");
        let ready = dir.path().join("ready.json");
        let db_url = db_url.map_or_else(
            || format!("sqlite://{}", dir.path().join("keys.db").display()),
            str::to_owned,
        );
        let bin = workspace_binary("fleetpulse-analyzer").expect("analyzer binary");
        let mut cmd = Command::new(bin);
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--backfill-grace-secs",
            "0",
        ])
        .arg("--ready-file")
        .arg(&ready)
        .args([
            "--clickhouse-url",
            ch.url(),
            "--clickhouse-database",
            database,
            "--database-url",
            &db_url,
        ])
        .args(extra)
        // Insights computed live for every request unless a test turns the background
        // snapshots on (`--insights-refresh-secs N`): most tests insert rows after the start
        // and expect every answer to include them at once.
        .env("FLEETPULSE_ANALYZER_INSIGHTS_REFRESH_SECS", "0")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("log.txt")).expect("log"),
        ));
        let child = spawn_guarded(cmd, "fleetpulse-analyzer").expect("spawn analyzer");
        let ready2 = ready.clone();
        let log = dir.path().join("log.txt");
        let addr = poll_until(
            Duration::from_secs(60),
            "the analyzer ready file",
            move || {
                let ready = ready2.clone();
                let log = log.clone();
                async move {
                    let text = std::fs::read_to_string(&ready).map_err(|e| {
                        format!(
                            "{e}; log: {}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        )
                    })?;
                    let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                    v["http"]
                        .as_str()
                        .and_then(|s| s.parse::<SocketAddr>().ok())
                        .ok_or_else(|| text.clone())
                }
            },
        )
        .await;
        Analyzer {
            child,
            addr,
            db_url,
            _dir: dir,
        }
    }

    /// Runs `fleetpulse-analyzer key ...` against this server's key store.
    pub fn key(&self, args: &[&str]) -> std::process::Output {
        let bin = workspace_binary("fleetpulse-analyzer").expect("analyzer binary");
        let mut all = vec!["key", args[0]];
        all.extend_from_slice(&["--database-url", &self.db_url]);
        all.extend_from_slice(&args[1..]);
        Command::new(bin)
            .args(&all)
            .output()
            .expect("run key command")
    }

    /// Creates a key and returns the token.
    pub fn create_key(&self, scope: &[&str]) -> String {
        let mut args = vec!["create"];
        args.extend_from_slice(scope);
        let out = self.key(&args);
        assert!(
            out.status.success(),
            "key create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        request(self.addr, "GET", path, token, None).await
    }

    /// Completed alert evaluations so far (`fleetpulse_alert_evaluations_total` on /metrics;
    /// 0 before the first one).
    pub async fn evaluations(&self) -> u64 {
        let metrics = fleetpulse_tests::harness::http::get(self.addr, "/metrics")
            .await
            .expect("GET /metrics")
            .body;
        metrics
            .lines()
            .find(|l| l.starts_with("fleetpulse_alert_evaluations_total"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    }

    /// Waits (up to `within`) until `n` more alert evaluations than `since` have completed.
    pub async fn await_evaluations(&self, since: u64, n: u64, within: Duration) {
        poll_until(within, &format!("{n} more alert evaluations"), || async {
            let done = self.evaluations().await;
            if done >= since + n { Ok(()) } else { Err(done) }
        })
        .await;
    }

    /// Waits (up to `within`) until the week span builder completed its first pass
    /// (`fleetpulse_analyzer_week_span_passes_total` >= 1). Questions asked before it read
    /// their days, but the span-backed attempt that runs beside its check is still sent (and
    /// logged, for the chDB lane) against spans that are being written.
    pub async fn await_first_span_pass(&self, within: Duration) {
        poll_until(within, "the week span builder's first pass", || async {
            let m = fleetpulse_tests::harness::http::get(self.addr, "/metrics")
                .await
                .map_err(|e| e.to_string())?;
            match fleetpulse_tests::harness::http::metric_value(
                &m.body,
                "fleetpulse_analyzer_week_span_passes_total",
            ) {
                Some(n) if n >= 1.0 => Ok(()),
                other => Err(format!("passes: {other:?}")),
            }
        })
        .await;
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log.txt")).unwrap_or_default()
    }

    /// GET that must answer 200.
    pub async fn ok(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.get(path, Some(token)).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }
}

/// One HTTP/1.0 request; returns status and JSON body (Value::Null when not JSON).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut raw))
        .await
        .expect("timeout")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

pub const TENANTS: &[&str] = &["contoso", "fabrikam"];
pub const PLATFORMS: &[&str] = &["windows", "ios", "android", "macos"];
pub const METHODS: &[&str] = &[
    "entra_join",
    "autopilot_self_deploying",
    "apple_ade",
    "android_work_profile",
];
pub const STAGES: &[&str] = &[
    "discovery",
    "authentication",
    "authorization",
    "certificate_request",
    "complete",
];
pub const OS: &[&str] = &["10.0.22631.4602", "10.0.19045.5247", "17.5.1", "14"];

/// Signals spanning catalogued codes, symbols, messages with masked parts and unknowns.
pub const SIGNALS: &[(Option<u32>, &str, &str)] = &[
    (
        Some(0x8018_0014),
        "",
        "Device cap reached trace 1b4e28ba-2fa1-11d2-883f-0016d3cca427",
    ),
    (Some(0x8018_0018), "", "The license of user is in bad state"),
    (
        Some(0x801C_03EA),
        "",
        "Registering your device for mobile management at 2024-03-01T10:00:00Z",
    ),
    (None, "DeviceCapReached", ""),
    (
        Some(0x8018_002B),
        "",
        "Auto MDM Enroll: Failed (Unknown Win32 Error code: 0x8018002b)",
    ),
    (Some(0x1234_5678), "", "something nobody documented"),
    (None, "", "no code at all"),
    (Some(0x8007_0005), "", "Access is denied."),
];

/// Deterministic events over [T0, T0 + 3 days): `n` rows, received at `received_at`.
pub fn events(seed: u64, n: usize, received_at: u32) -> Vec<EnrollmentEventRow> {
    events_over(seed, n, received_at, 3)
}

/// Deterministic events over [T0, T0 + `days` days): `n` rows, received at `received_at`.
pub fn events_over(seed: u64, n: usize, received_at: u32, days: u32) -> Vec<EnrollmentEventRow> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let tenant = TENANTS[rng.gen_range(0..TENANTS.len())];
            let p = rng.gen_range(0..PLATFORMS.len());
            let device = rng.gen_range(0..200);
            let user = rng.gen_range(0..90);
            let outcome = ["succeeded", "failed", "failed", "in_progress"][rng.gen_range(0..4)];
            let (code, symbol, message) = if outcome == "failed" {
                SIGNALS[rng.gen_range(0..SIGNALS.len())]
            } else {
                (None, "", "")
            };
            EnrollmentEventRow {
                tenant: tenant.to_owned(),
                event_id: Uuid::from_u128(rng.r#gen()),
                agent_id: format!("agent-{device}"),
                batch_seq: 1,
                device_id: format!("dev-{device:03}"),
                occurred_at: T0 + rng.gen_range(0..days * DAY),
                occurred_ms: rng.gen_range(0..1000),
                received_at,
                platform: PLATFORMS[p].to_owned(),
                os_edition: String::new(),
                os_version: OS[p].to_owned(),
                enrollment_method: METHODS[p].to_owned(),
                stage: STAGES[rng.gen_range(0..STAGES.len())].to_owned(),
                outcome: outcome.to_owned(),
                error_code: code.unwrap_or(0),
                error_has_code: u8::from(code.is_some()),
                error_symbol: symbol.to_owned(),
                error_message: message.to_owned(),
                // One event in six is server side (Microsoft Graph), as wt-11's connector stores them.
                source_kind: if (device + user) % 6 == 0 {
                    "graph".to_owned()
                } else {
                    "simulator".to_owned()
                },
                source_channel: String::new(),
                source_event_id: 0,
                source_record_id: 0,
                // Every seventh user is empty (self-deploying): not a user.
                user_principal_name: if user % 7 == 0 {
                    String::new()
                } else {
                    format!("user{user}@{tenant}.com")
                },
                attributes_key: vec![],
                attributes_value: vec![],
            }
        })
        .collect()
}

pub async fn insert_events(ch: &ClickHouseServer, db: &str, rows: &[EnrollmentEventRow]) {
    let client = ch.client(db);
    let mut insert = client
        .insert::<EnrollmentEventRow>("enrollment_events")
        .await
        .expect("insert");
    for r in rows {
        insert.write(r).await.expect("write row");
    }
    insert.end().await.expect("end insert");
}

pub async fn insert_states(ch: &ClickHouseServer, db: &str, rows: &[DeviceStateRow]) {
    let client = ch.client(db);
    let mut insert = client
        .insert::<DeviceStateRow>("device_states")
        .await
        .expect("insert");
    for r in rows {
        insert.write(r).await.expect("write row");
    }
    insert.end().await.expect("end insert");
}

/// A state snapshot of an enrolled iOS device with a ready TPM.
pub fn state_row(tenant: &str, device: &str, at: u32) -> DeviceStateRow {
    DeviceStateRow {
        tenant: tenant.into(),
        agent_id: format!("agent-{device}"),
        batch_seq: 1,
        device_id: device.into(),
        captured_at: at,
        received_at: at,
        platform: "ios".into(),
        os_edition: String::new(),
        os_version: "17.5".into(),
        join_state: "not_joined".into(),
        mdm_enrolled: 1,
        mdm_url: String::new(),
        entra_tenant_id: String::new(),
        tpm_present: 1,
        tpm_spec_version: "2.0".into(),
        tpm_ready: 1,
        tpm_manufacturer: String::new(),
        primary_user_upn: String::new(),
        last_attempt_at: 0,
        last_outcome: "succeeded".into(),
        last_error_code: 0,
        last_error_has_code: 0,
        last_error_symbol: String::new(),
        last_error_message: String::new(),
        license_state: "licensed".into(),
        enrollment_method: "apple_ade".into(),
        device_name: String::new(),
        attributes_key: vec![],
        attributes_value: vec![],
    }
}

/// Now, in Unix seconds (the time unit of the raw tables).
pub fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(0)
}

/// The licence signal the alert suites inject as a spike, and the device-cap signal of their
/// baseline noise.
pub const LICENSE: (u32, &str) = (0x8018_0018, "The license of user is in bad state");
pub const DEVICE_CAP: (u32, &str) = (0x8018_0014, "Device cap reached");
pub const PLATFORMS4: &[&str] = &["windows", "ios", "android", "macos"];

/// A new database on `ch` holding the collector's raw tables.
pub async fn fresh_db(ch: &ClickHouseServer, prefix: &str) -> String {
    let db = fleetpulse_tests::harness::unique_database(prefix);
    ch.execute(&format!("CREATE DATABASE {db}")).await.unwrap();
    for stmt in fleetpulse_tests::harness::rows::raw_table_statements(&db) {
        ch.execute(&stmt).await.unwrap();
    }
    db
}

/// Unix seconds as RFC 3339.
pub fn iso(t: u32) -> String {
    fleetpulse_analyzer::query::filters::rfc3339(t)
}

/// Brute-force counts of one group.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub events: u64,
    pub attempts: u64,
    pub failures: u64,
    pub affected_devices: u64,
    pub affected_users: u64,
    pub devices: u64,
    pub users: u64,
}

impl Counts {
    pub fn from_json(v: &Value) -> Counts {
        let n = |k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("{k} missing in {v}"))
        };
        Counts {
            events: n("events"),
            attempts: n("attempts"),
            failures: n("failures"),
            affected_devices: n("affected_devices"),
            affected_users: n("affected_users"),
            devices: n("devices"),
            users: n("users"),
        }
    }
}

pub fn classifier() -> CatalogClassifier {
    CatalogClassifier::new(Catalog::embedded())
}

/// The category the server assigns to a failed row (same classifier, same message key).
pub fn category(c: &CatalogClassifier, r: &EnrollmentEventRow) -> String {
    c.classify(&RawSignal {
        code: (r.error_has_code == 1).then_some(r.error_code),
        symbol: r.error_symbol.clone(),
        message: message_key(&r.error_message),
        platform: r.platform.clone(),
        source: r.source_kind.clone(),
        stage: r.stage.clone(),
    })
    .category
}

/// The value of `dim` for a row (None for a code-less row in the code dimension).
pub fn key_of(c: &CatalogClassifier, dim: &str, r: &EnrollmentEventRow) -> Option<String> {
    Some(match dim {
        "category" => category(c, r),
        "code" => return (r.error_has_code == 1).then(|| format!("0x{:08X}", r.error_code)),
        "platform" => r.platform.clone(),
        "os_version" => r.os_version.clone(),
        "enrollment_method" => r.enrollment_method.clone(),
        "tenant" => r.tenant.clone(),
        "stage" => r.stage.clone(),
        "outcome" => r.outcome.clone(),
        "side" => if r.source_kind == "graph" {
            "server"
        } else {
            "client"
        }
        .to_owned(),
        other => panic!("unknown dimension {other}"),
    })
}

/// Brute-force grouping over rows passing `keep`.
pub fn brute(
    rows: &[EnrollmentEventRow],
    keep: impl Fn(&EnrollmentEventRow) -> bool,
    key: impl Fn(&EnrollmentEventRow) -> Option<Option<String>>,
) -> BTreeMap<Option<String>, Counts> {
    type Sets = (
        HashSet<(String, String)>,
        HashSet<(String, String)>,
        HashSet<(String, String)>,
        HashSet<(String, String)>,
    );
    let mut acc: BTreeMap<Option<String>, (Counts, Sets)> = BTreeMap::new();
    for r in rows.iter().filter(|r| keep(r)) {
        let Some(k) = key(r) else { continue };
        let (c, (dev, usr, fdev, fusr)) = acc.entry(k).or_default();
        c.events += 1;
        if r.outcome == "succeeded" || r.outcome == "failed" {
            c.attempts += 1;
        }
        dev.insert((r.tenant.clone(), r.device_id.clone()));
        if !r.user_principal_name.is_empty() {
            usr.insert((r.tenant.clone(), r.user_principal_name.clone()));
        }
        if r.outcome == "failed" {
            c.failures += 1;
            fdev.insert((r.tenant.clone(), r.device_id.clone()));
            if !r.user_principal_name.is_empty() {
                fusr.insert((r.tenant.clone(), r.user_principal_name.clone()));
            }
        }
    }
    acc.into_iter()
        .map(|(k, (mut c, (dev, usr, fdev, fusr)))| {
            c.devices = dev.len() as u64;
            c.users = usr.len() as u64;
            c.affected_devices = fdev.len() as u64;
            c.affected_users = fusr.len() as u64;
            (k, c)
        })
        .collect()
}

pub fn in_range(from: u32, to: u32) -> impl Fn(&EnrollmentEventRow) -> bool {
    move |r| r.occurred_at >= from && r.occurred_at < to
}

/// One generated enrollment attempt of `tenant`'s device `device`, occurring at `at` and received
/// at `received`; failed with `failed` (code, message) when given.
pub fn alert_row(
    tenant: &str,
    device: u32,
    at: u32,
    received: u32,
    platform: &str,
    failed: Option<(u32, &str)>,
    rng: &mut StdRng,
) -> EnrollmentEventRow {
    EnrollmentEventRow {
        tenant: tenant.to_owned(),
        event_id: Uuid::from_u128(rng.r#gen()),
        agent_id: format!("agent-{device}"),
        batch_seq: 1,
        device_id: format!("{tenant}-dev-{device:04}"),
        occurred_at: at,
        occurred_ms: 0,
        received_at: received,
        platform: platform.to_owned(),
        os_edition: String::new(),
        os_version: if platform == "windows" {
            "10.0.22631.4602"
        } else {
            "17.5.1"
        }
        .to_owned(),
        enrollment_method: "entra_join".to_owned(),
        stage: "authorization".to_owned(),
        outcome: if failed.is_some() {
            "failed"
        } else {
            "succeeded"
        }
        .to_owned(),
        error_code: failed.map_or(0, |f| f.0),
        error_has_code: u8::from(failed.is_some()),
        error_symbol: String::new(),
        error_message: failed.map_or("", |f| f.1).to_owned(),
        source_kind: "simulator".to_owned(),
        source_channel: String::new(),
        source_event_id: 0,
        source_record_id: 0,
        user_principal_name: format!("user{}@{tenant}.com", device % 97),
        attributes_key: vec![],
        attributes_value: vec![],
    }
}

/// Steady traffic over [from, to): `per_min` attempts a minute from `devices` devices, 3 %
/// failing with the device-cap signal.
pub fn steady(
    tenant: &str,
    devices: u32,
    per_min: u32,
    from: u32,
    to: u32,
    seed: u64,
) -> Vec<EnrollmentEventRow> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        for _ in 0..per_min {
            let d = rng.gen_range(0..devices);
            let p = PLATFORMS4[rng.gen_range(0..4)];
            let failed = rng.gen_bool(0.03).then_some(DEVICE_CAP);
            let at = t + rng.gen_range(0..60).min(to - t - 1);
            out.push(alert_row(tenant, d, at, at, p, failed, &mut rng));
        }
        t += 60;
    }
    out
}

/// `n` licence failures over [from, to) from `devices` distinct devices on `platform`.
pub fn spike(
    tenant: &str,
    platform: &str,
    devices: u32,
    n: u32,
    from: u32,
    to: u32,
    seed: u64,
) -> Vec<EnrollmentEventRow> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let at = from + i * (to - from) / n;
            alert_row(
                tenant,
                5000 + i % devices,
                at,
                at,
                platform,
                Some(LICENSE),
                &mut rng,
            )
        })
        .collect()
}
