//! In-process end-to-end checks of the collector against a real, private ClickHouse server
//! (skipped with a printed reason when `clickhouse-server` is not installed) and a SQLite
//! control database: registration, push, duplicate resend, digest mismatch, partial rejection,
//! recovery of a partially stored batch after a lease takeover, and refusal while ClickHouse
//! is down.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use fleetpulse_collector::{Collector, Config, control::ControlDb};
use fleetpulse_proto::pbjson_types::Timestamp;
use fleetpulse_proto::v1::{
    EnrollmentEvent, GetLimitsRequest, Heartbeat, PushRequest, RegisterRequest, TelemetryItem,
    ingest_service_client::IngestServiceClient, telemetry_item::Kind,
};
use tonic::{Code, Request, transport::Channel};

/// A private ClickHouse server in a temp dir on free ports.
struct PrivateClickHouse {
    child: Child,
    dir: tempfile::TempDir,
    http_port: u16,
    tcp_port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivateClickHouse {
    fn start() -> Option<Self> {
        if Command::new("clickhouse-server")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("skipping: clickhouse-server is not installed");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (http_port, tcp_port) = (free_port(), free_port());
        let mut ch = Self::spawn(dir, http_port, tcp_port);
        ch.wait_ready();
        Some(ch)
    }

    fn spawn(dir: tempfile::TempDir, http_port: u16, tcp_port: u16) -> Self {
        let d = dir.path().display().to_string();
        let config = format!(
            r#"<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/err.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http_port}</http_port>
  <tcp_port>{tcp_port}</tcp_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>536870912</mark_cache_size>
</yandex>"#
        );
        let users = r#"<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>::/0</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>"#;
        std::fs::write(dir.path().join("config.xml"), config).unwrap();
        std::fs::write(dir.path().join("users.xml"), users).unwrap();
        let child = Command::new("clickhouse-server")
            .arg(format!("--config-file={d}/config.xml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            dir,
            http_port,
            tcp_port,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.query("SELECT 1").is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "ClickHouse did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn query(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--fail-with-body",
                &format!("{}/", self.url()),
                "--data-binary",
                sql,
            ])
            .output()
            .map_err(|e| e.to_string())?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(body)
        } else {
            Err(body)
        }
    }

    fn count(&self, sql: &str) -> u64 {
        self.query(sql).unwrap().trim().parse().unwrap()
    }

    fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops and starts again on the same ports and data.
    fn restart(self) -> Self {
        let mut this = self;
        this.stop();
        let dir = std::mem::replace(&mut this.dir, tempfile::tempdir().unwrap());
        let (h, t) = (this.http_port, this.tcp_port);
        std::mem::forget(this);
        let mut ch = Self::spawn(dir, h, t);
        ch.wait_ready();
        ch
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Env {
    ch: PrivateClickHouse,
    _dir: tempfile::TempDir,
    db_path: PathBuf,
    config: Config,
}

fn env(ch: PrivateClickHouse, db: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("control.db");
    let config = Config {
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        http_listen: "127.0.0.1:0".parse().unwrap(),
        clickhouse_url: ch.url(),
        clickhouse_database: db.into(),
        database_url: format!("sqlite://{}", db_path.display()),
        flush_interval_ms: 20,
        clickhouse_timeout_secs: 3,
        batch_lease_secs: 11,
        // No credential cache: every request reads the database, so a revocation applies to
        // the very next push (the cached path and its bound are tested end to end in
        // tests/tests/collector_auth.rs and collector_postgres.rs).
        credential_cache_max_delay_ms: 0,
        ..Config::default()
    };
    Env {
        ch,
        _dir: dir,
        db_path,
        config,
    }
}

async fn client(c: &Collector) -> IngestServiceClient<Channel> {
    IngestServiceClient::connect(format!("http://{}", c.grpc_addr))
        .await
        .unwrap()
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn event(agent: &str, day_offset: i64) -> TelemetryItem {
    TelemetryItem {
        kind: Some(Kind::Event(EnrollmentEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            agent_id: agent.into(),
            device_id: "dev-1".into(),
            occurred_at: Some(Timestamp {
                seconds: now_secs() - day_offset * 86_400,
                nanos: 250_000_000,
            }),
            platform: 1,
            outcome: 2,
            ..Default::default()
        })),
    }
}

fn authed<T>(cred: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {cred}").parse().unwrap());
    r
}

async fn register(c: &mut IngestServiceClient<Channel>, token: &str) -> (String, String) {
    let r = c
        .register(RegisterRequest {
            enrollment_token: token.into(),
            device_id: "dev-1".into(),
            hostname: "host".into(),
            platform: 1,
            agent_version: "0.1.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.tenant, "contoso");
    (r.agent_id, r.agent_credential)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_push_resend_and_recover() {
    let Some(ch) = PrivateClickHouse::start() else {
        return;
    };
    let e = env(ch, "fp_it_main");
    let control = ControlDb::open(&e.config.database_url).await.unwrap();
    let (_, token) = control.create_token("contoso", "").await.unwrap();
    let collector = fleetpulse_collector::start(e.config.clone()).await.unwrap();
    let mut c = client(&collector).await;
    let (agent, cred) = register(&mut c, &token).await;

    // Unauthenticated and foreign-agent pushes are refused.
    let err = c
        .push(PushRequest {
            batch_seq: 1,
            items: vec![event(&agent, 0)],
            all_or_nothing: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = c
        .push(authed(
            &cred,
            PushRequest {
                batch_seq: 1,
                items: vec![event(&agent, 0), event("other-agent", 0)],
                all_or_nothing: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "items[1].event.agent_id: belongs to another agent than the credential"
    );

    // A batch spanning three daily partitions, one invalid item.
    let mut items: Vec<TelemetryItem> = (0..30).map(|i| event(&agent, i % 3)).collect();
    items.push(TelemetryItem {
        kind: Some(Kind::Heartbeat(Heartbeat {
            agent_id: agent.clone(),
            sent_at: Some(Timestamp {
                seconds: now_secs(),
                nanos: 0,
            }),
            spool_depth: 4,
            ..Default::default()
        })),
    });
    items.push(event(&agent, 400));
    let batch = PushRequest {
        batch_seq: 1,
        items,
        all_or_nothing: false,
    };
    let first = c
        .push(authed(&cred, batch.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.accepted, first.duplicate), (31, false));
    assert_eq!(first.rejected.len(), 1);
    assert_eq!(first.rejected[0].index, 31);
    assert_eq!(first.rejected[0].field, "items[31].event.occurred_at");
    let db = "fp_it_main";
    assert_eq!(
        e.ch.count(&format!("SELECT count() FROM {db}.enrollment_events")),
        30
    );
    assert_eq!(e.ch.count(&format!("SELECT count() FROM {db}.agent_heartbeats WHERE device_id = 'dev-1' AND spool_depth = 4")), 1);
    assert_eq!(
        e.ch.query(&format!(
            "SELECT DISTINCT tenant, platform, outcome, occurred_ms FROM {db}.enrollment_events"
        ))
        .unwrap(),
        "contoso\twindows\tfailed\t250\n"
    );

    // Lost ack: the same batch again is a duplicate with the original answer.
    let again = c
        .push(authed(&cred, batch.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.accepted, again.duplicate), (31, true));
    assert_eq!(again.rejected, first.rejected);
    assert_eq!(
        e.ch.count(&format!("SELECT count() FROM {db}.enrollment_events")),
        30
    );

    // Same number, other contents.
    let err = c
        .push(authed(
            &cred,
            PushRequest {
                batch_seq: 1,
                items: vec![event(&agent, 0)],
                all_or_nothing: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // all_or_nothing with an invalid item stores nothing and lists the field.
    let err = c
        .push(authed(
            &cred,
            PushRequest {
                batch_seq: 2,
                items: vec![event(&agent, 0), event(&agent, 400)],
                all_or_nothing: true,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("items[1].event.occurred_at: "),
        "{}",
        err.message()
    );
    assert_eq!(
        e.ch.count(&format!("SELECT count() FROM {db}.enrollment_events")),
        30
    );

    // Recovery: batch 3 was partially stored by an attempt that died (ledger row pending with an
    // expired lease, 4 of its 10 events in ClickHouse). The resend stores exactly the other 6.
    let items: Vec<TelemetryItem> = (0..10).map(|i| event(&agent, i % 2)).collect();
    let batch3 = PushRequest {
        batch_seq: 3,
        items: items.clone(),
        all_or_nothing: false,
    };
    let digest =
        fleetpulse_collector::digest::batch_digest(&fleetpulse_collector::push::items_of(&items));
    let key = fleetpulse_collector::control::ledger::BatchKey {
        tenant: "contoso",
        agent_id: &agent,
        batch_seq: 3,
        digest: &digest,
        item_count: 10,
    };
    let past = fleetpulse_collector::control::now_ms() - 60_000;
    assert!(matches!(
        control.claim_batch(&key, past, 1_000).await.unwrap(),
        fleetpulse_collector::control::ledger::Claim::Fresh { .. }
    ));
    for item in &items[..4] {
        let Some(Kind::Event(ev)) = &item.kind else {
            unreachable!()
        };
        let ts = ev.occurred_at.as_ref().unwrap();
        e.ch.query(&format!(
            "INSERT INTO {db}.enrollment_events (tenant, event_id, agent_id, batch_seq, device_id, occurred_at, received_at) \
             VALUES ('contoso', '{}', '{agent}', 3, 'dev-1', toDateTime({}), now())",
            ev.event_id, ts.seconds
        ))
        .unwrap();
    }
    let r = c
        .push(authed(&cred, batch3.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.accepted, r.duplicate), (10, false));
    assert_eq!(
        e.ch.count(&format!(
            "SELECT count() FROM {db}.enrollment_events WHERE batch_seq = 3"
        )),
        10
    );
    assert_eq!(
        e.ch.count(&format!(
            "SELECT uniqExact(event_id) FROM {db}.enrollment_events WHERE batch_seq = 3"
        )),
        10
    );

    let limits = c
        .get_limits(authed(&cred, GetLimitsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (limits.max_batch_items, limits.max_age_seconds),
        (5000, 90 * 86_400)
    );

    // Revocation applies to the very next push (the credential cache is off here).
    control.revoke_agent(&agent).await.unwrap();
    let err = c
        .push(authed(
            &cred,
            PushRequest {
                batch_seq: 9,
                items: vec![event(&agent, 0)],
                all_or_nothing: false,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), format!("agent {agent} was revoked"));

    collector.shutdown();
    collector_wait(collector).await;
    let _ = e.db_path;
}

async fn collector_wait(c: Collector) {
    tokio::time::timeout(Duration::from_secs(30), c.run_until(std::future::ready(())))
        .await
        .expect("shutdown within 30 s")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_means_unavailable_then_recovery() {
    let Some(ch) = PrivateClickHouse::start() else {
        return;
    };
    let mut e = env(ch, "fp_it_down");
    let control = ControlDb::open(&e.config.database_url).await.unwrap();
    let (_, token) = control.create_token("contoso", "").await.unwrap();
    let collector = fleetpulse_collector::start(e.config.clone()).await.unwrap();
    let mut c = client(&collector).await;
    let (agent, cred) = register(&mut c, &token).await;
    let push = |seq: u64| PushRequest {
        batch_seq: seq,
        items: (0..5).map(|_| event(&agent, 0)).collect(),
        all_or_nothing: false,
    };
    c.push(authed(&cred, push(1))).await.unwrap();

    e.ch.stop();
    let b2 = push(2);
    let err = c.push(authed(&cred, b2.clone())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    // Known down now: refused at once.
    let started = Instant::now();
    let err = c.push(authed(&cred, push(3))).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().starts_with("ClickHouse is unavailable"),
        "{}",
        err.message()
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    e.ch = e.ch.restart();
    // Retry until accepted (the probe notices ClickHouse within a second; a lease may delay).
    let deadline = Instant::now() + Duration::from_secs(30);
    let r = loop {
        match c.push(authed(&cred, b2.clone())).await {
            Ok(r) => break r.into_inner(),
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => panic!("{s:?}"),
        }
    };
    assert_eq!(r.accepted, 5);
    assert_eq!(
        e.ch.count("SELECT count() FROM fp_it_down.enrollment_events"),
        10
    );
    collector.shutdown();
    collector_wait(collector).await;
}
