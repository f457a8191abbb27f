//! Shipper unit tests against a scripted in-process gRPC server (real tonic over loopback;
//! the server's answers are scripted per Push so every error path is exercised exactly).

use super::*;
use crate::spool::SpoolConfig;
use fleetpulse_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use fleetpulse_proto::v1::{ItemRejection, RegisterRequest, RegisterResponse};
use std::collections::VecDeque;
use std::path::Path;
use tonic::transport::server::TcpIncoming;

/// The scripted collector (a newtype over shared state so the test can inspect it).
#[derive(Clone, Default)]
struct Fake(Arc<FakeState>);

impl std::ops::Deref for Fake {
    type Target = FakeState;
    fn deref(&self) -> &FakeState {
        &self.0
    }
}

#[derive(Clone, Debug)]
enum Step {
    Ok,
    Reject(Vec<u32>),
    Fail(Code),
    /// A refusal carrying `retry-after-ms`.
    Hint(Code, u64),
}

#[derive(Default)]
struct FakeState {
    script: Mutex<VecDeque<Step>>,
    seen: Mutex<Vec<PushRequest>>,
    arrivals: Mutex<Vec<std::time::Instant>>,
    auth: Mutex<Vec<String>>,
}

#[tonic::async_trait]
impl IngestService for Fake {
    async fn register(
        &self,
        _request: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<RegisterResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }

    async fn push(
        &self,
        request: tonic::Request<PushRequest>,
    ) -> Result<tonic::Response<PushResponse>, tonic::Status> {
        let auth = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        self.auth.lock().unwrap().push(auth);
        let request = request.into_inner();
        self.seen.lock().unwrap().push(request.clone());
        self.arrivals
            .lock()
            .unwrap()
            .push(std::time::Instant::now());
        let step = self.script.lock().unwrap().pop_front().unwrap_or(Step::Ok);
        match step {
            Step::Ok => Ok(tonic::Response::new(PushResponse {
                batch_seq: request.batch_seq,
                accepted: request.items.len() as u32,
                rejected: vec![],
                duplicate: false,
                ..Default::default()
            })),
            Step::Reject(indexes) => Ok(tonic::Response::new(PushResponse {
                batch_seq: request.batch_seq,
                accepted: (request.items.len() - indexes.len()) as u32,
                rejected: indexes
                    .iter()
                    .map(|i| ItemRejection {
                        index: *i,
                        field: format!("items[{i}].heartbeat.sent_at"),
                        reason: "required".into(),
                    })
                    .collect(),
                duplicate: false,
                ..Default::default()
            })),
            Step::Fail(code) => Err(tonic::Status::new(code, "scripted failure")),
            Step::Hint(code, ms) => {
                let mut status = tonic::Status::new(code, "scripted refusal with a hint");
                status
                    .metadata_mut()
                    .insert("retry-after-ms", ms.to_string().parse().unwrap());
                Err(status)
            }
        }
    }

    async fn get_limits(
        &self,
        _request: tonic::Request<GetLimitsRequest>,
    ) -> Result<tonic::Response<Limits>, tonic::Status> {
        Ok(tonic::Response::new(Limits {
            max_batch_items: 1000,
            max_batch_bytes: 4 << 20,
            max_future_skew_seconds: 86400,
            max_age_seconds: 86400 * 365,
        }))
    }
}

struct Rig {
    fake: Fake,
    spool: SharedSpool,
    stats: Arc<ShipperStats>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ShipperError>>,
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
}

fn state() -> AgentState {
    AgentState {
        format: crate::state::STATE_FORMAT,
        collector_url: String::new(),
        agent_id: "agent-1".into(),
        agent_credential: "fpa_test".into(),
        tenant: "t".into(),
        device_id: "d".into(),
        hostname: "h".into(),
        registered_at: String::new(),
        batch_seq_reserved: 0,
    }
}

fn item(n: usize) -> TelemetryItem {
    TelemetryItem {
        kind: Some(telemetry_item::Kind::Heartbeat(Heartbeat {
            agent_id: format!("item-{n}"),
            ..Heartbeat::default()
        })),
    }
}

async fn rig(script: Vec<Step>, items: usize, max_items: u32, gzip_server: bool) -> Rig {
    let fake = Fake(Arc::new(FakeState {
        script: Mutex::new(script.into()),
        ..FakeState::default()
    }));
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let mut service = IngestServiceServer::new(fake.clone());
    if gzip_server {
        service = service
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
    }
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let spool = SharedSpool::new(Spool::open(&path.join("spool"), SpoolConfig::default()).unwrap());
    spool
        .append((0..items).map(item).collect(), None)
        .await
        .unwrap();
    let settings = ShipperSettings {
        batch_max_items: max_items,
        batch_max_age: Duration::from_millis(10),
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        request_timeout: Duration::from_secs(5),
        ..ShipperSettings::default()
    };
    let channel = client::channel(&format!("http://{addr}"), &Default::default()).unwrap();
    let ingest = client::ingest_client(channel, "fpa_test").unwrap();
    let state_path = path.join("state.json");
    state().store(&state_path).unwrap();
    let stats = Arc::new(ShipperStats::default());
    let shipper = Shipper::new(
        spool.clone(),
        DeadLetter::new(&path.join("spool")),
        ingest,
        settings,
        state(),
        Some(state_path),
        stats.clone(),
    );
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(shipper.run(rx));
    Rig {
        fake,
        spool,
        stats,
        shutdown,
        task,
        _dir: dir,
        dir: path,
    }
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

impl Rig {
    fn seen(&self) -> Vec<(u64, Vec<String>)> {
        self.fake
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let names = r
                    .items
                    .iter()
                    .map(|i| match &i.kind {
                        Some(telemetry_item::Kind::Heartbeat(h)) => h.agent_id.clone(),
                        _ => String::new(),
                    })
                    .collect();
                (r.batch_seq, names)
            })
            .collect()
    }

    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("item-{n}")).collect()
}

fn dead_letters(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("spool").join("deadletter.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn ships_batches_with_the_credential_and_acks_them() {
    let rig = rig(vec![], 5, 3, true).await;
    wait_for("5 acked items", || {
        rig.stats.items_acked.load(Ordering::Relaxed) == 5
    })
    .await;
    assert_eq!(rig.seen(), vec![(1, names(0..3)), (2, names(3..5))]);
    assert!(
        rig.fake
            .auth
            .lock()
            .unwrap()
            .iter()
            .all(|a| a == "Bearer fpa_test")
    );
    let stats = rig.spool.stats().await.unwrap();
    assert_eq!((stats.depth, stats.last_acked_seq), (0, 2));
    // The state reserved sequence numbers ahead of use.
    assert!(
        AgentState::load(&rig.dir.join("state.json"))
            .unwrap()
            .batch_seq_reserved
            > 2
    );
    rig.stop().await;
}

#[tokio::test]
async fn unavailable_is_retried_with_the_same_seq_and_contents() {
    let rig = rig(
        vec![
            Step::Fail(Code::Unavailable),
            Step::Fail(Code::DeadlineExceeded),
            Step::Ok,
        ],
        2,
        10,
        true,
    )
    .await;
    wait_for("acked", || {
        rig.stats.items_acked.load(Ordering::Relaxed) == 2
    })
    .await;
    assert_eq!(
        rig.seen(),
        vec![(1, names(0..2)), (1, names(0..2)), (1, names(0..2))]
    );
    assert_eq!(rig.stats.retries.load(Ordering::Relaxed), 2);
    assert_eq!(rig.stats.last_error(), "");
    rig.stop().await;
}

#[tokio::test]
async fn resource_exhausted_splits_the_batch() {
    let rig = rig(vec![Step::Fail(Code::ResourceExhausted)], 4, 10, true).await;
    wait_for("acked", || {
        rig.stats.items_acked.load(Ordering::Relaxed) == 4
    })
    .await;
    assert_eq!(
        rig.seen(),
        vec![(1, names(0..4)), (2, names(0..2)), (3, names(2..4))]
    );
    rig.stop().await;
}

/// A rate limit (RESOURCE_EXHAUSTED with `retry-after-ms`) and a shed (UNAVAILABLE with one):
/// the same batch is resent, unsplit, no earlier than the hint (the rig's own backoff is at most
/// 5 ms, so only the hint explains the wait).
#[tokio::test]
async fn retry_hints_are_honoured_and_a_rate_limit_never_splits() {
    let rig = rig(
        vec![
            Step::Hint(Code::ResourceExhausted, 300),
            Step::Hint(Code::Unavailable, 200),
            Step::Ok,
        ],
        4,
        10,
        true,
    )
    .await;
    wait_for("acked", || {
        rig.stats.items_acked.load(Ordering::Relaxed) == 4
    })
    .await;
    assert_eq!(
        rig.seen(),
        vec![(1, names(0..4)), (1, names(0..4)), (1, names(0..4))]
    );
    let at = rig.fake.arrivals.lock().unwrap().clone();
    assert!(
        at[1] - at[0] >= Duration::from_millis(300),
        "{:?}",
        at[1] - at[0]
    );
    assert!(
        at[2] - at[1] >= Duration::from_millis(200),
        "{:?}",
        at[2] - at[1]
    );
    rig.stop().await;
}

#[test]
fn hints_are_read_from_metadata_and_capped() {
    let mut status = tonic::Status::resource_exhausted("slow down");
    assert_eq!(retry_after(&status), None);
    assert_eq!(push_disposition(&status), Disposition::Split);
    status
        .metadata_mut()
        .insert("retry-after-ms", "1500".parse().unwrap());
    assert_eq!(retry_after(&status), Some(Duration::from_millis(1500)));
    assert_eq!(push_disposition(&status), Disposition::Retry);
    status
        .metadata_mut()
        .insert("retry-after-ms", "99999999".parse().unwrap());
    assert_eq!(retry_after(&status), Some(Duration::from_secs(600)));
    status
        .metadata_mut()
        .insert("retry-after-ms", "soon".parse().unwrap());
    assert_eq!(retry_after(&status), None);
    let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));
    let mut rng = rand::thread_rng();
    let mut hinted = tonic::Status::unavailable("busy");
    hinted
        .metadata_mut()
        .insert("retry-after-ms", "1000".parse().unwrap());
    for _ in 0..50 {
        let d = retry_delay(&hinted, &mut backoff, &mut rng);
        assert!((1000..=1200).contains(&d.as_millis()), "{d:?}");
    }
    assert!(crate::shipper::client::register_retryable(
        Code::ResourceExhausted
    ));
    assert!(crate::shipper::client::register_retryable(
        Code::Unavailable
    ));
    assert!(!crate::shipper::client::register_retryable(
        Code::PermissionDenied
    ));
    assert!(!crate::shipper::client::register_retryable(
        Code::Unauthenticated
    ));
}

#[tokio::test]
async fn permanent_errors_dead_letter_the_batch_and_shipping_continues() {
    let rig = rig(
        vec![Step::Fail(Code::InvalidArgument), Step::Ok],
        2,
        1,
        true,
    )
    .await;
    wait_for("second batch acked", || {
        rig.stats.items_acked.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(rig.seen(), vec![(1, names(0..1)), (2, names(1..2))]);
    let dead = dead_letters(&rig.dir);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["batch_seq"], 1);
    assert_eq!(dead[0]["reason"], "INVALID_ARGUMENT: scripted failure");
    assert_eq!(rig.stats.items_dead_lettered.load(Ordering::Relaxed), 1);
    rig.stop().await;
}

#[tokio::test]
async fn rejected_items_go_to_the_dead_letter_file() {
    let rig = rig(vec![Step::Reject(vec![1])], 3, 10, true).await;
    wait_for("acked", || {
        rig.stats.batches_acked.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(rig.stats.items_acked.load(Ordering::Relaxed), 2);
    let dead = dead_letters(&rig.dir);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["index"], 1);
    assert_eq!(dead[0]["reason"], "items[1].heartbeat.sent_at: required");
    assert_eq!(dead[0]["item"]["heartbeat"]["agentId"], "item-1");
    rig.stop().await;
}

#[tokio::test]
async fn unauthenticated_stops_shipping_but_keeps_the_spool() {
    let rig = rig(vec![Step::Fail(Code::Unauthenticated)], 2, 10, true).await;
    wait_for("stop", || rig.stats.unauthenticated.load(Ordering::Relaxed)).await;
    assert!(
        rig.stats
            .last_error()
            .contains("the agent was probably revoked"),
        "{}",
        rig.stats.last_error()
    );
    rig.spool.append(vec![item(9)], None).await.unwrap();
    assert_eq!(rig.spool.stats().await.unwrap().depth, 3);
    assert_eq!(rig.seen().len(), 1);
    rig.stop().await;
}

#[tokio::test]
async fn falls_back_to_uncompressed_when_the_collector_refuses_gzip() {
    let rig = rig(vec![], 2, 10, false).await;
    wait_for("acked", || {
        rig.stats.items_acked.load(Ordering::Relaxed) == 2
    })
    .await;
    rig.stop().await;
}

#[test]
fn backoff_grows_exponentially_with_full_jitter_and_a_cap() {
    use rand::SeedableRng;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let ceilings: Vec<u128> = (0..6)
        .map(|_| {
            let ceiling = backoff.ceiling();
            let delay = backoff.next_delay(&mut rng);
            assert!(delay <= ceiling);
            ceiling.as_millis()
        })
        .collect();
    assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
    backoff.reset();
    assert_eq!(backoff.ceiling(), Duration::from_millis(100));
}

#[test]
fn answers_are_classified_as_the_protocol_documents() {
    assert_eq!(disposition(Code::Unavailable), Disposition::Retry);
    assert_eq!(disposition(Code::DeadlineExceeded), Disposition::Retry);
    assert_eq!(disposition(Code::Unknown), Disposition::Retry);
    assert_eq!(disposition(Code::ResourceExhausted), Disposition::Split);
    assert_eq!(disposition(Code::InvalidArgument), Disposition::DeadLetter);
    assert_eq!(
        disposition(Code::FailedPrecondition),
        Disposition::DeadLetter
    );
    assert_eq!(disposition(Code::PermissionDenied), Disposition::DeadLetter);
    assert_eq!(disposition(Code::Unauthenticated), Disposition::Stop);
}
