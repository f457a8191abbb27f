//! `fleetpulse.v1.IngestService`: Register, Push and GetLimits.
//!
//! Push is the hot path: authenticate (from the credential cache, else one SELECT), check limits, validate every item, digest,
//! reserve writer room, claim the batch in the ledger (one INSERT), encode rows, write them
//! through the shared writer and wait for ClickHouse, queue the batch's `stored` mark (one
//! UPDATE, committed after the answer), answer. See `control::ledger` for why this stores
//! every accepted item exactly once.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use fleetpulse_proto::v1::{
    GetLimitsRequest, ItemRejection as WireRejection, Limits, PushRequest, PushResponse,
    RegisterRequest, RegisterResponse, ingest_service_server::IngestService,
};
use prost::Message;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::{
    admission::{self, Admission},
    auth,
    gate::{GatedIdentity, GatedPush},
    refusals::RefusalLog,
};
use crate::{
    control::{
        ControlDb, ControlError,
        agents::{AgentIdentity, NewAgent},
        credential_cache::{CredentialCache, Lookup},
        ledger::{BatchKey, Claim, StoredReject, StoredRejects, format_ranges},
        ledger_group::{LedgerGroup, StoredMark},
        now_ms,
        tokens::{AuthError, AuthFailure},
    },
    digest::{batch_digest, batch_digest_v1},
    metrics::{Metrics, Stage},
    push::{DecodedPush, Item},
    store::{
        Store,
        event_rowbinary::row_size_hint,
        recovery::{find_existing, remove_existing},
        rows::{EventBatchBuilder, RowContext, Rows, heartbeat_row, platform_name, state_row},
        writer::{Refusal, WriterHandle},
    },
    validate::{self, BatchError, Checked, ItemRejection, Rules, Validation, limits},
};

/// How often an agent's `last_seen_at` is written at most (it costs a control-DB write).
const LAST_SEEN_EVERY: Duration = Duration::from_secs(60);
/// At most this many offending fields are listed in an INVALID_ARGUMENT message.
const LISTED_REJECTIONS: usize = 20;

/// Everything a request needs.
pub struct Shared {
    pub control: Arc<ControlDb>,
    pub store: Store,
    pub writer: WriterHandle,
    pub metrics: Arc<Metrics>,
    pub rules: Rules,
    pub lease: Duration,
    /// Random per process, in every log line of a push, to tell collectors apart.
    pub collector_id: String,
    /// Verified agent credentials, with a bounded revocation delay.
    pub credentials: Arc<CredentialCache>,
    /// Ledger claims and finishes, committed in groups.
    pub ledger: LedgerGroup,
    /// Rate limits and shedding (`admission.rs`).
    pub admission: Admission,
    last_seen: Mutex<HashMap<Arc<str>, Instant>>,
    refusals: RefusalLog,
}

impl Shared {
    // The request context is wired once at start; a parameter struct would only rename these.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        control: Arc<ControlDb>,
        store: Store,
        writer: WriterHandle,
        metrics: Arc<Metrics>,
        rules: Rules,
        lease: Duration,
        collector_id: String,
        credentials: Arc<CredentialCache>,
    ) -> Self {
        let ledger = LedgerGroup::spawn(control.clone(), metrics.clone());
        Self {
            ledger,
            admission: Admission::off(metrics.clone()),
            control,
            store,
            writer,
            metrics,
            rules,
            lease,
            collector_id,
            credentials,
            last_seen: Mutex::new(HashMap::new()),
            refusals: RefusalLog::default(),
        }
    }

    /// Replaces the admission control (which [`Shared::new`] starts switched off).
    pub fn with_admission(mut self, admission: Admission) -> Self {
        self.admission = admission;
        self
    }
}

/// The tonic service; clones share state.
#[derive(Clone)]
pub struct IngestSvc {
    shared: Arc<Shared>,
}

impl IngestSvc {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn limits(&self) -> Limits {
        let r = &self.shared.rules;
        Limits {
            max_batch_items: r.max_batch_items,
            max_batch_bytes: r.max_batch_bytes,
            max_future_skew_seconds: max_future_skew_secs_u32(r),
            max_age_seconds: u32::try_from(r.max_age_secs()).unwrap_or(u32::MAX),
        }
    }
}

impl Shared {
    /// Checks the bearer credential of a request's headers. Refusals are counted and logged
    /// (rate-limited, with the source address, never the secret).
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<AgentIdentity, Status> {
        let refused = |f: &AuthFailure| {
            self.metrics.auth_failure(f.reason());
            self.refusals.note(peer, f);
            auth::unauthenticated(f)
        };
        let token = auth::bearer(headers).map_err(|f| refused(&f))?;
        match self.credentials.authenticate(&self.control, token).await {
            Ok((identity, lookup)) => {
                let source = match lookup {
                    Lookup::Hit => "cache",
                    Lookup::Miss => "database",
                };
                self.metrics
                    .credential_checks
                    .get_or_create(&crate::metrics::SourceLabel { source })
                    .inc();
                self.note_seen(&identity);
                Ok(identity)
            }
            Err(AuthError::Failure(f)) => Err(refused(&f)),
            Err(AuthError::Db(e)) => Err(control_unavailable(&ControlError::Query(e))),
        }
    }

    /// Updates `last_seen_at` in the background (with the ledger's next group commit), at most
    /// once a minute per agent.
    fn note_seen(&self, identity: &AgentIdentity) {
        let now = Instant::now();
        let due = match self.last_seen.lock() {
            Ok(mut map) => match map.get(&identity.agent_id) {
                Some(at) if now.duration_since(*at) < LAST_SEEN_EVERY => false,
                _ => {
                    map.insert(identity.agent_id.clone(), now);
                    true
                }
            },
            Err(_) => false,
        };
        if due {
            // With the ledger's next group: one writer for SQLite (see `ledger_group`).
            self.ledger.touch(&identity.agent_id, now_ms());
        }
    }
}

/// Whether a claimed batch may already have rows in ClickHouse, and since when.
#[derive(Debug, Clone, Copy)]
enum Recover {
    /// A fresh claim: nothing of the batch can be stored.
    No,
    /// An earlier attempt's lease expired; it was first seen at `first_seen_ms`.
    TakenOver { first_seen_ms: i64 },
    /// The batch's ledger row may have been compacted away (`control::ledger_compaction`):
    /// an attempt of unknown age may have stored it.
    Compacted,
}

impl Recover {
    /// The receipt time from which the recovery looks for stored heartbeats (0: any time), or
    /// None when there is nothing to recover.
    fn first_seen_secs(self) -> Option<u32> {
        match self {
            Self::No => None,
            Self::TakenOver { first_seen_ms } => {
                Some(u32::try_from(first_seen_ms / 1000).unwrap_or(0))
            }
            Self::Compacted => Some(0),
        }
    }
}

fn max_future_skew_secs_u32(r: &Rules) -> u32 {
    u32::try_from(r.max_future_skew_secs).unwrap_or(u32::MAX)
}

fn control_unavailable(e: &ControlError) -> Status {
    tracing::warn!(error = %e, "control database error");
    Status::unavailable(format!("control database unavailable: {e}; retry later"))
}

fn batch_status(e: BatchError) -> Status {
    match e {
        BatchError::InvalidArgument(m) => Status::invalid_argument(m),
        BatchError::ResourceExhausted(m) => Status::resource_exhausted(m),
        BatchError::PermissionDenied(m) => Status::permission_denied(m),
    }
}

pub(crate) fn status_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::InvalidArgument => "invalid_argument",
        Code::Unauthenticated => "unauthenticated",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Unavailable => "unavailable",
        _ => "other",
    }
}

/// Metric label of a rejected field: `items[3].event.attributes["k"]` -> `attributes`.
fn field_label(field: &str) -> &str {
    let after_index = field.split_once("].").map_or(field, |(_, rest)| rest);
    let after_kind = after_index
        .split_once('.')
        .map_or(after_index, |(_, rest)| rest);
    after_kind.split('[').next().unwrap_or(after_kind)
}

/// At most this many rejections are listed with their reasons in an answer and the ledger.
pub const LISTED_REJECTS: usize = 100;
/// Fields and reasons of listed rejections are cut to this many bytes (an attribute key named
/// in a field path can be long).
pub const REJECT_TEXT_BYTES: usize = 256;

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The bounded form of a batch's rejections: count, item ranges, the first few in full.
fn bounded_rejects(rejections: &[ItemRejection]) -> StoredRejects {
    let mut items: Vec<u32> = rejections.iter().map(|r| r.index).collect();
    items.sort_unstable();
    items.dedup();
    StoredRejects {
        total: u32::try_from(rejections.len()).unwrap_or(u32::MAX),
        items: format_ranges(&items),
        listed: rejections
            .iter()
            .take(LISTED_REJECTS)
            .map(|r| StoredReject {
                index: r.index,
                field: truncate(&r.field, REJECT_TEXT_BYTES),
                reason: truncate(&r.reason, REJECT_TEXT_BYTES),
            })
            .collect(),
    }
}

/// The answer fields for `rejects`.
fn rejects_response(
    batch_seq: u64,
    accepted: u32,
    rejects: StoredRejects,
    duplicate: bool,
) -> PushResponse {
    PushResponse {
        batch_seq,
        accepted,
        rejected_total: rejects.total,
        rejected_items: rejects.item_indexes(),
        rejected: rejects
            .listed
            .into_iter()
            .map(|r| WireRejection {
                index: r.index,
                field: r.field,
                reason: r.reason,
            })
            .collect(),
        duplicate,
    }
}

/// Encodes the valid items into rows: events straight into RowBinary from their views.
fn encode(items: &[Item<'_>], validation: &Validation, ctx: &RowContext) -> Rows {
    let events = validation
        .checked
        .iter()
        .flatten()
        .filter(|c| matches!(c, Checked::Event { .. }))
        .count();
    let event_bytes: usize = items
        .iter()
        .zip(&validation.checked)
        .map(|(item, checked)| match (item, checked) {
            (Item::Event(e), Some(Checked::Event { .. })) => row_size_hint(ctx, e),
            _ => 0,
        })
        .sum();
    let mut event_rows = EventBatchBuilder::with_capacity(events, event_bytes);
    let mut rows = Rows::default();
    for (item, checked) in items.iter().zip(&validation.checked) {
        match (item, checked) {
            (
                Item::Event(e),
                Some(Checked::Event {
                    event_id,
                    occurred_at,
                    occurred_ms,
                }),
            ) => event_rows.push(ctx, e, *event_id, *occurred_at, *occurred_ms),
            (
                Item::State(s),
                Some(Checked::State {
                    captured_at,
                    last_attempt_at,
                }),
            ) => rows
                .states
                .push(state_row(ctx, (*s).clone(), *captured_at, *last_attempt_at)),
            (Item::Heartbeat(h), Some(Checked::Heartbeat { sent_at })) => rows
                .heartbeats
                .push(heartbeat_row(ctx, (*h).clone(), *sent_at)),
            _ => {}
        }
    }
    rows.events = event_rows.finish();
    rows
}

fn unix_now() -> (i64, u32) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (
        i64::try_from(secs).unwrap_or(i64::MAX),
        u32::try_from(secs).unwrap_or(u32::MAX),
    )
}

impl IngestSvc {
    async fn push_inner(
        &self,
        identity: AgentIdentity,
        req: DecodedPush,
        encoded_len: usize,
    ) -> Result<PushResponse, Status> {
        let s = &self.shared;
        let m = &s.metrics;
        // Events are read here (as views of the message); a malformed one is refused as the
        // gate refuses what it decodes: INVALID_ARGUMENT naming the item and field.
        let items = req.items().map_err(Status::invalid_argument)?;
        validate::check_batch(&req, encoded_len, &s.rules).map_err(batch_status)?;
        let mut per_kind = [0u64; 3];
        for item in &items {
            match item {
                Item::Event(_) => per_kind[0] += 1,
                Item::State(_) => per_kind[1] += 1,
                Item::Heartbeat(_) => per_kind[2] += 1,
                Item::Empty => {}
            }
        }
        for (kind, n) in ["event", "state", "heartbeat"].iter().zip(per_kind) {
            m.items(&m.items_received, kind, n);
        }

        let (now_secs, received_at) = unix_now();
        let validation = validate::validate_items(&items, &identity.agent_id, &s.rules, now_secs)
            .map_err(batch_status)?;
        let accepted = validation.accepted();
        let invalid_all = req.all_or_nothing && !validation.rejections.is_empty();
        let digest = batch_digest(&items);
        let batch_seq = req.batch_seq;
        let seq = i64::try_from(batch_seq)
            .map_err(|_| Status::invalid_argument("batch_seq: too large"))?;

        // Refuse quickly, before touching the ledger, when the rows could not be written: the
        // queue is full, ClickHouse is down, or the tenant holds more than its share of a busy
        // queue (admission.rs). The share is held until the push is answered.
        let (permit, _share) = if accepted > 0 && !invalid_all {
            let share = s
                .admission
                .take_share(&identity.tenant, accepted, &s.writer)?;
            let permit = s.writer.try_reserve(accepted).map_err(|r| {
                s.metrics.shed(match r {
                    Refusal::ClickHouseDown(_) => "clickhouse_down",
                    Refusal::Overloaded { .. } => "queue_full",
                    Refusal::ShuttingDown => "shutting_down",
                });
                admission::shed_status(&r)
            })?;
            (Some(permit), Some(share))
        } else {
            (None, None)
        };

        let lease_deadline = Instant::now() + s.lease;
        let lease_ms = i64::try_from(s.lease.as_millis()).unwrap_or(i64::MAX);
        let claim_started = Instant::now();
        let claim_with = |digest: String| {
            let (identity, items) = (&identity, items.len() as i64);
            async move {
                let key = BatchKey {
                    tenant: &identity.tenant,
                    agent_id: &identity.agent_id,
                    batch_seq: seq,
                    digest: &digest,
                    item_count: items,
                };
                s.ledger
                    .claim(
                        &key,
                        &identity.agent_id,
                        &identity.tenant,
                        now_ms(),
                        lease_ms,
                    )
                    .await
                    .map_err(|e| control_unavailable(&e))
            }
        };
        let claim = match claim_with(digest).await? {
            // Claimed by a collector from before digest v2: a resend is recognised under v1.
            Claim::DigestMismatch { stored_is_v1: true } => {
                claim_with(batch_digest_v1(&items)).await?
            }
            claim => claim,
        };
        m.stage(Stage::Claim, claim_started.elapsed().as_secs_f64());
        let (owner, recover) = match claim {
            Claim::Duplicate { accepted, rejects } => {
                m.batches_duplicate.inc();
                tracing::info!(accepted, "duplicate batch; nothing stored again");
                return Ok(rejects_response(batch_seq, accepted, rejects, true));
            }
            Claim::DigestMismatch { .. } => {
                return Err(Status::failed_precondition(format!(
                    "batch_seq {batch_seq} was already used for different contents; \
                     give new contents a new sequence number"
                )));
            }
            Claim::Busy { lease_remaining_ms } => {
                return Err(admission::with_retry_hint(
                    tonic::Code::Unavailable,
                    &format!("batch {batch_seq} is being stored by another request"),
                    Duration::from_millis(u64::try_from(lease_remaining_ms.max(1)).unwrap_or(1)),
                ));
            }
            Claim::Fresh { owner } => (owner, Recover::No),
            Claim::TakenOver {
                owner,
                first_seen_ms,
            } => (owner, Recover::TakenOver { first_seen_ms }),
            Claim::Pruned { owner } => {
                m.batches_recovered_compacted.inc();
                (owner, Recover::Compacted)
            }
        };

        if invalid_all {
            // A takeover found the row; a fresh or compacted claim inserted it.
            let result = match recover {
                Recover::No | Recover::Compacted => {
                    s.control
                        .abandon_batch(&identity.agent_id, seq, &owner)
                        .await
                }
                Recover::TakenOver { .. } => {
                    s.control
                        .release_batch(&identity.agent_id, seq, &owner, now_ms())
                        .await
                }
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "releasing the claim of an invalid batch failed");
            }
            for r in &validation.rejections {
                m.item_rejected(items[r.index as usize].kind_name(), field_label(&r.field));
            }
            return Err(Status::invalid_argument(validate::summarize(
                &validation.rejections,
                LISTED_REJECTIONS,
            )));
        }

        // From here on this request owns the batch until `lease_deadline`.
        let rejected_kinds: Vec<(&'static str, usize)> = validation
            .rejections
            .iter()
            .map(|r| (items[r.index as usize].kind_name(), r.index as usize))
            .collect();
        let ctx = RowContext {
            tenant: identity.tenant.clone(),
            agent_id: identity.agent_id.clone(),
            batch_seq,
            received_at,
            registered_device_id: identity.device_id.clone(),
        };
        let mut rows = encode(&items, &validation, &ctx);
        // The rows hold their own copy: the message is not kept while the write is awaited.
        drop(items);
        drop(req);
        let stored_kinds = [rows.events.len(), rows.states.len(), rows.heartbeats.len()];

        let release = |lease_until: i64| {
            let control = s.control.clone();
            let agent = identity.agent_id.clone();
            let owner = owner.clone();
            async move {
                if let Err(e) = control
                    .release_batch(&agent, seq, &owner, lease_until)
                    .await
                {
                    tracing::warn!(error = %e, "releasing the batch lease failed; it expires on its own");
                }
            }
        };

        // Whether a compacted batch's rows were all found: its answer is then a duplicate's.
        let mut all_found = false;
        if let Some(first_seen_secs) = recover.first_seen_secs() {
            let total = rows.len();
            match find_existing(
                &s.store,
                &identity.tenant,
                &identity.agent_id,
                batch_seq,
                &rows,
                first_seen_secs,
            )
            .await
            {
                Ok(existing) => {
                    let removed = remove_existing(&mut rows, existing);
                    all_found = total > 0 && removed == total;
                    tracing::info!(
                        already_stored = removed,
                        to_store = rows.len(),
                        compacted = matches!(recover, Recover::Compacted),
                        "recovering a batch taken over from an earlier attempt"
                    );
                }
                Err(e) => {
                    release(now_ms()).await;
                    s.writer.health().mark_down(&e.to_string());
                    return Err(admission::unavailable(
                        &format!("ClickHouse is unavailable ({e}); keep the batch and retry later"),
                        Duration::from_secs(2),
                    ));
                }
            }
        }

        if !rows.is_empty() {
            let Some(permit) = permit else {
                release(now_ms()).await;
                return Err(Status::internal(
                    "no writer reservation for a batch with rows",
                ));
            };
            let write_started = Instant::now();
            let written = s.writer.write(rows, permit, lease_deadline).await;
            m.stage(Stage::Write, write_started.elapsed().as_secs_f64());
            if let Err(e) = written {
                let settle = if e.uncertain {
                    i64::try_from(s.store.timeout().as_millis()).unwrap_or(i64::MAX)
                } else {
                    0
                };
                release(now_ms() + settle).await;
                return Err(admission::unavailable(
                    &format!("storing the batch failed: {e}; keep the batch and retry later"),
                    Duration::from_secs(1),
                ));
            }
        }

        let rejects = bounded_rejects(&validation.rejections);
        let accepted = u32::try_from(accepted).unwrap_or(u32::MAX);
        // The rows are confirmed: the answer does not wait for the ledger's `stored` mark. It is
        // queued here, before the answer leaves, and committed with the next group (see
        // `ledger_group::LedgerGroup::finish_after_answer` for why every guarantee holds).
        s.ledger
            .finish_after_answer(StoredMark {
                agent_id: &identity.agent_id,
                batch_seq: seq,
                owner: &owner,
                accepted,
                rejects: &rejects,
                now_ms: now_ms(),
            })
            .map_err(|e| control_unavailable(&e))?;

        let duplicate = all_found && matches!(recover, Recover::Compacted);
        if duplicate {
            m.batches_duplicate.inc();
            tracing::info!(
                accepted,
                "compacted batch found stored; nothing stored again"
            );
            return Ok(rejects_response(batch_seq, accepted, rejects, true));
        }
        m.batches_accepted.inc();
        for (kind, n) in ["event", "state", "heartbeat"].iter().zip(stored_kinds) {
            m.items(&m.items_accepted, kind, n as u64);
        }
        for (r, (kind, _)) in validation.rejections.iter().zip(&rejected_kinds) {
            m.item_rejected(kind, field_label(&r.field));
        }
        tracing::debug!(
            accepted,
            rejected = validation.rejections.len(),
            "batch stored"
        );
        Ok(rejects_response(batch_seq, accepted, rejects, false))
    }

    /// The answer to a refused token: PERMISSION_DENIED for an authentic token that is expired
    /// or used up, UNAUTHENTICATED for anything else; counted, never logged with the secret.
    fn register_refused(&self, e: AuthError) -> Status {
        match e {
            AuthError::Failure(f) => {
                self.shared.metrics.auth_failure(f.reason());
                tracing::info!(reason = f.reason(), message = %f, "registration refused");
                if f.is_exhausted() {
                    Status::permission_denied(f.to_string())
                } else {
                    auth::unauthenticated(&f)
                }
            }
            AuthError::Db(e) => control_unavailable(&ControlError::Query(e)),
        }
    }

    async fn register_inner(
        &self,
        req: RegisterRequest,
        peer: Option<SocketAddr>,
    ) -> Result<RegisterResponse, Status> {
        let s = &self.shared;
        // Rate limits first: a flood of registrations costs no database work.
        let token_id = crate::control::secrets::parse_enrollment_token(&req.enrollment_token)
            .ok()
            .map(|(id, _)| id);
        s.admission.admit_register(token_id, peer.map(|p| p.ip()))?;
        let token = match s
            .control
            .verify_enrollment_token(&req.enrollment_token)
            .await
        {
            Ok(t) => t,
            Err(e) => return Err(self.register_refused(e)),
        };
        let check = |field: &str, value: &str, min: usize, max: usize| -> Result<(), Status> {
            if value.len() < min {
                return Err(Status::invalid_argument(format!(
                    "{field}: required ({min}..={max} bytes)"
                )));
            }
            if value.len() > max {
                return Err(Status::invalid_argument(format!(
                    "{field}: is {} bytes; at most {max} allowed",
                    value.len()
                )));
            }
            if value.chars().any(char::is_control) {
                return Err(Status::invalid_argument(format!(
                    "{field}: contains a control character"
                )));
            }
            Ok(())
        };
        check("device_id", &req.device_id, 1, limits::DEVICE_ID)?;
        check("hostname", &req.hostname, 0, limits::HOSTNAME)?;
        check(
            "agent_version",
            &req.agent_version,
            0,
            limits::AGENT_VERSION,
        )?;
        let platform = platform_name(req.platform);
        let (record, credential) = s
            .control
            .register_agent(
                &token,
                &NewAgent {
                    device_id: &req.device_id,
                    hostname: &req.hostname,
                    platform: &platform,
                    agent_version: &req.agent_version,
                },
            )
            .await
            .map_err(|e| self.register_refused(e))?;
        s.metrics.registrations.inc();
        tracing::info!(
            tenant = %record.tenant,
            agent_id = %record.id,
            device_id = %record.device_id,
            token_id = %record.token_id,
            "agent registered"
        );
        Ok(RegisterResponse {
            agent_id: record.id,
            agent_credential: credential,
            tenant: record.tenant,
            limits: Some(self.limits()),
        })
    }
}

#[tonic::async_trait]
impl IngestService for IngestSvc {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let span = tracing::info_span!("register", collector = %self.shared.collector_id);
        let peer = request.remote_addr();
        self.register_inner(request.into_inner(), peer)
            .instrument(span)
            .await
            .map(Response::new)
    }

    async fn push(
        &self,
        mut request: Request<PushRequest>,
    ) -> Result<Response<PushResponse>, Status> {
        let m = &self.shared.metrics;
        m.batches_received.inc();
        // `_body` holds the push's share of `max_inflight_bytes` until it is answered.
        let (identity, req, encoded_len, _body) =
            match request.extensions_mut().remove::<GatedPush>() {
                Some(gated) => {
                    m.stage(Stage::Gate, gated.received.elapsed().as_secs_f64());
                    (gated.identity, gated.request, gated.encoded_len, gated.body)
                }
                // Called without the gate (in-process use of the service): authenticate here.
                None => {
                    let peer = request.remote_addr();
                    let headers = request.metadata().clone().into_headers();
                    match self.shared.authenticate(&headers, peer).await {
                        Ok(i) => {
                            let req = request.into_inner();
                            let len = req.encoded_len();
                            (i, DecodedPush::from_request(req), len, None)
                        }
                        Err(status) => {
                            m.batch_rejected(status_label(status.code()));
                            return Err(status);
                        }
                    }
                }
            };
        let span = tracing::info_span!(
            "push",
            collector = %self.shared.collector_id,
            tenant = %identity.tenant,
            agent_id = %identity.agent_id,
            batch_seq = req.batch_seq,
            items = req.len(),
        );
        let started = Instant::now();
        let answer = self
            .push_inner(identity, req, encoded_len)
            .instrument(span.clone())
            .await;
        m.stage(Stage::Push, started.elapsed().as_secs_f64());
        match answer {
            Ok(resp) => Ok(Response::new(resp)),
            Err(status) => {
                m.batch_rejected(status_label(status.code()));
                // Overload refusals carry a retry hint and are counted (rate_limited, shed);
                // one line each would let a flood fill the log.
                if status.metadata().get("retry-after-ms").is_none() {
                    span.in_scope(|| {
                        tracing::info!(code = ?status.code(), message = status.message(), "push refused")
                    });
                } else {
                    span.in_scope(|| {
                        tracing::debug!(code = ?status.code(), message = status.message(), "push refused")
                    });
                }
                Err(status)
            }
        }
    }

    async fn get_limits(
        &self,
        request: Request<GetLimitsRequest>,
    ) -> Result<Response<Limits>, Status> {
        if request.extensions().get::<GatedIdentity>().is_none() {
            let headers = request.metadata().clone().into_headers();
            self.shared
                .authenticate(&headers, request.remote_addr())
                .await?;
        }
        Ok(Response::new(self.limits()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_are_bounded_in_count_and_text() {
        let rejections: Vec<ItemRejection> = (0..5000u32)
            .flat_map(|i| {
                [0, 1].map(|k| ItemRejection {
                    index: i,
                    field: format!("items[{i}].event.attributes[\"{}{k}\"]", "k".repeat(1000)),
                    reason: "key too long".into(),
                })
            })
            .collect();
        let b = bounded_rejects(&rejections);
        assert_eq!(b.total, 10_000);
        assert_eq!(b.items, "0-4999");
        assert_eq!(b.listed.len(), LISTED_REJECTS);
        assert!(
            b.listed
                .iter()
                .all(|r| r.field.len() == REJECT_TEXT_BYTES + 3)
        );
        let row = serde_json::to_string(&b).unwrap();
        assert!(row.len() < 40_000, "ledger row of {} bytes", row.len());
        let resp = rejects_response(9, 0, b, false);
        assert_eq!(resp.rejected_items.len(), 5000);
        assert_eq!(resp.rejected_total, 10_000);
        assert!(
            resp.encoded_len() < 64 * 1024,
            "{} bytes",
            resp.encoded_len()
        );
        assert_eq!(truncate("héllo", 2), "h...");
    }

    #[test]
    fn field_labels_drop_index_kind_and_keys() {
        assert_eq!(field_label("items[3].event.occurred_at"), "occurred_at");
        assert_eq!(field_label("items[3].event.error.message"), "error.message");
        assert_eq!(
            field_label("items[0].event.attributes[\"k\"]"),
            "attributes"
        );
        assert_eq!(field_label("items[1].kind"), "kind");
    }
}
