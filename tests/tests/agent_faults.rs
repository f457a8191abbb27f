//! The real `fleetpulse-agent` binary against the real collector and ClickHouse, under faults:
//! kill -9 mid-stream, collector down and back, spool cap reached, a corrupt spool record and a
//! torn spool tail. Every case ends with exact counts in ClickHouse.
//!
//! The agent reads events from an NDJSON import directory (the source that works everywhere);
//! event `n` has the id `00000000-0000-4000-8000-<n as 12 digits>` and `os_version = n`, so a
//! query can tell exactly which events arrived.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fleetpulse_tests::harness::process::{log_tail, signal, spawn_guarded, wait_timeout};
use fleetpulse_tests::harness::{Fixture, collector::workspace_binary, poll_eq, poll_until};

const WAIT: Duration = Duration::from_secs(90);

/// One agent installation: state, spool, import directory, config, log.
struct Agent {
    dir: tempfile::TempDir,
    child: Option<Child>,
    collector_url: String,
    extra: Vec<String>,
}

impl Agent {
    /// Registers a new agent with `tenant`'s token.
    async fn register(fixture: &Fixture, tenant: &str, extra: &[&str]) -> Agent {
        let dir = tempfile::Builder::new()
            .prefix("fleetpulse-agent-e2e-")
            .tempdir()
            .unwrap();
        std::fs::create_dir(dir.path().join("import")).unwrap();
        std::fs::write(
            dir.path().join("agent.toml"),
            "[shipper]\nbackoff_initial_ms = 50\nbackoff_max_ms = 500\nrequest_timeout_secs = 5\n",
        )
        .unwrap();
        let agent = Agent {
            dir,
            child: None,
            collector_url: fixture.collector.grpc_url(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        let token = fixture.collector.token_create(tenant).await.unwrap();
        let out = agent
            .command(&[
                "register",
                "--enrollment-token",
                &token,
                "--device-id",
                "e2e-device",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "register failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        agent
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(workspace_binary("fleetpulse-agent").unwrap());
        command
            .args(args)
            .arg("--config")
            .arg(self.path("agent.toml"))
            .arg("--collector")
            .arg(&self.collector_url)
            .arg("--state-file")
            .arg(self.path("state.json"))
            .arg("--spool-dir")
            .arg(self.path("spool"))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        command
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("agent.log"))
            .unwrap();
        let mut args = vec![
            "run".to_owned(),
            "--import-ndjson".to_owned(),
            self.path("import").display().to_string(),
            "--poll-interval-secs".to_owned(),
            "1".to_owned(),
            "--batch-max-age-ms".to_owned(),
            "20".to_owned(),
        ];
        args.extend(self.extra.iter().cloned());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut command = self.command(&refs);
        command
            .stdout(Stdio::null())
            .stderr(log)
            .env("RUST_LOG", "info");
        self.child = Some(spawn_guarded(command, "fleetpulse-agent").unwrap());
    }

    /// kill -9: no shutdown step of any kind.
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("agent not running");
        signal(&child, libc::SIGKILL);
        let _ = child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("agent not running");
        signal(&child, libc::SIGTERM);
        let status = wait_timeout(&mut child, Duration::from_secs(30)).unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "agent did not exit cleanly ({status:?}); log:\n{}",
            self.log()
        );
    }

    fn log(&self) -> String {
        log_tail(&self.path("agent.log"), 8000)
    }

    /// `fleetpulse-agent status --json`, spool part.
    fn spool_status(&self) -> serde_json::Value {
        let out = self.command(&["status", "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        value["spool"].clone()
    }

    fn spool_field(&self, field: &str) -> u64 {
        self.spool_status()[field].as_u64().unwrap_or(0)
    }

    /// Writes events `range` as a new NDJSON file in the import directory (atomically, so the
    /// agent never sees half a file).
    fn import(&self, name: &str, range: std::ops::Range<u64>) {
        let occurred = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            - 600;
        let mut text = String::new();
        for n in range {
            text.push_str(&format!(
                concat!(
                    "{{\"eventId\":\"00000000-0000-4000-8000-{n:012}\",\"deviceId\":\"dev-{dev}\",",
                    "\"occurredAt\":\"{at}\",\"platform\":\"PLATFORM_WINDOWS\",\"osVersion\":\"{n}\",",
                    "\"stage\":\"ENROLLMENT_STAGE_COMPLETE\",\"outcome\":\"OUTCOME_FAILED\",",
                    "\"error\":{{\"code\":2149056531,\"hasCode\":true,\"symbol\":\"MENROLL_E_DEVICECAPREACHED\",",
                    "\"message\":\"Auto MDM Enroll: Failed (Unknown Win32 Error code: 0x80180013)\"}}}}\n"
                ),
                n = n,
                dev = n % 97,
                at = time_rfc3339(occurred + n % 300),
            ));
        }
        let tmp = self.path(&format!("{name}.part"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.path("import").join(name)).unwrap();
    }

    fn segments(&self) -> Vec<PathBuf> {
        let mut segments: Vec<PathBuf> = std::fs::read_dir(self.path("spool"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "seg"))
            .collect();
        segments.sort();
        segments
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

fn time_rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant), enough for a test's timestamps.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn events(fixture: &Fixture) -> u64 {
    fixture.count("enrollment_events").await.unwrap()
}

async fn distinct_events(fixture: &Fixture) -> u64 {
    fixture
        .ch
        .count(
            &format!(
                "SELECT uniqExact(event_id) FROM {}.enrollment_events",
                fixture.db
            ),
            &[],
        )
        .await
        .unwrap()
}

async fn max_heartbeat(fixture: &Fixture, column: &str) -> u64 {
    fixture
        .ch
        .count(
            &format!(
                "SELECT toUInt64(max({column})) FROM {}.agent_heartbeats",
                fixture.db
            ),
            &[],
        )
        .await
        .unwrap()
}

/// Waits until exactly `expected` events (all distinct) are stored and the agent's spool is
/// empty, then checks the count did not move.
async fn assert_exactly(fixture: &Fixture, agent: &Agent, expected: u64) {
    poll_eq(WAIT, "stored events", expected, || async {
        Ok::<_, ()>(events(fixture).await)
    })
    .await;
    poll_eq(WAIT, "agent spool depth", 0, || async {
        Ok::<_, ()>(agent.spool_field("depth"))
    })
    .await;
    assert_eq!(
        events(fixture).await,
        expected,
        "events after the spool drained"
    );
    assert_eq!(
        distinct_events(fixture).await,
        expected,
        "distinct event ids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_kill_9_mid_stream_then_restart_stores_every_event_exactly_once() {
    let fixture = Fixture::start("agent_kill9").await.unwrap();
    let mut agent = Agent::register(
        &fixture,
        "kill9",
        &[
            "--batch-max-items",
            "25",
            "--heartbeat-interval-secs",
            "3600",
        ],
    )
    .await;
    const N: u64 = 6000;
    agent.import("events.ndjson", 0..N);
    let mut kills = 0;
    let mut stored_at_kill = Vec::new();
    // Kill the agent three times while batches are flowing, restarting it each time.
    for threshold in [200, 1500, 3500] {
        agent.start();
        let stored = poll_until(WAIT, "events flowing", || async {
            let n = events(&fixture).await;
            if n >= threshold { Ok(n) } else { Err(n) }
        })
        .await;
        agent.kill9();
        kills += 1;
        stored_at_kill.push(stored);
    }
    assert_eq!(kills, 3);
    assert!(
        stored_at_kill.iter().all(|n| *n < N),
        "killed after everything was stored: {stored_at_kill:?}"
    );
    agent.start();
    assert_exactly(&fixture, &agent, N).await;
    let status = agent.spool_status();
    assert_eq!(
        (
            status["dropped_total"].as_u64(),
            status["corrupt_total"].as_u64()
        ),
        (Some(0), Some(0)),
        "{status}"
    );
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_collector_down_then_back_delivers_everything_once() {
    let mut fixture = Fixture::start("agent_outage").await.unwrap();
    let mut agent =
        Agent::register(&fixture, "outage", &["--heartbeat-interval-secs", "3600"]).await;
    agent.start();
    agent.import("a.ndjson", 0..300);
    assert_exactly(&fixture, &agent, 300).await;

    fixture.collector.kill();
    agent.import("b.ndjson", 300..1300);
    // Everything is spooled while the collector is away.
    poll_until(WAIT, "events spooled during the outage", || async {
        let depth = agent.spool_field("depth");
        if depth >= 1000 { Ok(depth) } else { Err(depth) }
    })
    .await;
    assert_eq!(events(&fixture).await, 300);
    fixture.collector.start_again().await.unwrap();
    assert_exactly(&fixture, &agent, 1300).await;
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_spool_cap_drops_oldest_counts_them_and_reports_them_in_heartbeats() {
    let mut fixture = Fixture::start("agent_cap").await.unwrap();
    let mut agent = Agent::register(
        &fixture,
        "cap",
        &[
            "--spool-max-bytes",
            "262144",
            "--heartbeat-interval-secs",
            "1",
        ],
    )
    .await;
    fixture.collector.kill();
    agent.start();
    const N: u64 = 4000; // ~1.5 MB of records into a 256 KiB spool
    agent.import("big.ndjson", 0..N);
    poll_until(WAIT, "drops", || async {
        let dropped = agent.spool_field("dropped_total");
        let status = agent.spool_status();
        // All lines imported (import cursor at the end) and some dropped.
        if dropped > 0 && status["depth"].as_u64().unwrap_or(0) > 0 {
            Ok(dropped)
        } else {
            Err(status)
        }
    })
    .await;
    // Let the import finish before the collector comes back.
    poll_until(WAIT, "import finished", || async {
        let log = agent.log();
        if log.contains("imported NDJSON") {
            Ok(())
        } else {
            Err(())
        }
    })
    .await;
    fixture.collector.start_again().await.unwrap();
    poll_eq(WAIT, "agent spool depth", 0, || async {
        Ok::<_, ()>(agent.spool_field("depth"))
    })
    .await;
    let dropped = agent.spool_field("dropped_total");
    let stored = events(&fixture).await;
    assert!(stored > 0 && stored < N, "stored {stored}");
    assert_eq!(distinct_events(&fixture).await, stored);
    // Drop-oldest: what survived is exactly the newest events, without a gap.
    let oldest_kept = fixture
        .ch
        .count(
            &format!(
                "SELECT toUInt64(min(toUInt64(os_version))) FROM {}.enrollment_events",
                fixture.db
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        oldest_kept,
        N - stored,
        "stored events are not the newest {stored}"
    );
    // Heartbeats were dropped too (they share the spool), so events alone are at most the total.
    assert!(
        N - stored <= dropped,
        "lost {} events but only {dropped} drops counted",
        N - stored
    );
    // A heartbeat sent after the drops reports the agent's exact total.
    poll_eq(
        WAIT,
        "spool_dropped_total in agent_heartbeats",
        dropped,
        || async { Ok::<_, ()>(max_heartbeat(&fixture, "spool_dropped_total").await) },
    )
    .await;
    agent.stop();
}

/// Frames of a segment file: (offset, total length, payload).
fn frames(bytes: &[u8]) -> Vec<(usize, usize, &[u8])> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        if pos + 8 + len > bytes.len() {
            break;
        }
        out.push((pos, 8 + len, &bytes[pos + 8..pos + 8 + len]));
        pos += 8 + len;
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Starts an agent with the collector down, spools `n` events, stops the agent.
async fn spool_offline(fixture: &mut Fixture, tenant: &str, n: u64) -> Agent {
    let mut agent = Agent::register(fixture, tenant, &["--heartbeat-interval-secs", "1"]).await;
    fixture.collector.kill();
    agent.start();
    agent.import("events.ndjson", 0..n);
    poll_until(WAIT, "events spooled", || async {
        let depth = agent.spool_field("depth");
        // n events plus at least one heartbeat.
        if depth > n { Ok(depth) } else { Err(depth) }
    })
    .await;
    agent.stop();
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_corrupt_spool_record_is_skipped_counted_and_reported() {
    let mut fixture = Fixture::start("agent_corrupt").await.unwrap();
    let mut agent = spool_offline(&mut fixture, "corrupt", 20).await;
    // Flip a byte inside the payload of event 7's record.
    let segment = agent.segments().pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let target = frames(&bytes)
        .into_iter()
        .find(|(_, _, payload)| contains(payload, b"00000000-0000-4000-8000-000000000007"))
        .map(|(offset, len, _)| offset + len / 2)
        .expect("event 7 in the spool");
    bytes[target] ^= 0x5a;
    std::fs::write(&segment, bytes).unwrap();

    fixture.collector.start_again().await.unwrap();
    agent.start();
    assert_exactly(&fixture, &agent, 19).await;
    let missing = fixture
        .count_where(
            "enrollment_events",
            "event_id = toUUID(?)",
            &["00000000-0000-4000-8000-000000000007"],
        )
        .await
        .unwrap();
    assert_eq!(missing, 0);
    assert_eq!(agent.spool_field("corrupt_total"), 1);
    poll_eq(
        WAIT,
        "spool_corrupt_total in agent_heartbeats",
        1,
        || async { Ok::<_, ()>(max_heartbeat(&fixture, "spool_corrupt_total").await) },
    )
    .await;
    agent.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_torn_spool_tail_is_truncated_and_nothing_else_is_lost() {
    let mut fixture = Fixture::start("agent_torn").await.unwrap();
    let mut agent = spool_offline(&mut fixture, "torn", 20).await;
    // A crash in the middle of an append: a frame header promising 400 bytes, and 37 of them.
    let segment = agent.segments().pop().unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&400u32.to_le_bytes());
    bytes.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    bytes.extend_from_slice(&[0x0a; 37]);
    std::fs::write(&segment, bytes).unwrap();

    fixture.collector.start_again().await.unwrap();
    agent.start();
    assert_exactly(&fixture, &agent, 20).await;
    assert_eq!(agent.spool_field("corrupt_total"), 0);
    assert!(
        agent.log().contains("torn write"),
        "no torn-write warning in the log:\n{}",
        agent.log()
    );
    agent.stop();
}
