//! The ingest gate: a tower service in front of tonic's `IngestServiceServer` that
//! authenticates from the headers before a single body byte is read, then reads the Push body
//! itself under bounds.
//!
//! Why not let tonic decode: tonic reads and decodes the whole message before the handler runs,
//! so a request without a credential could make the collector buffer, inflate and materialise
//! up to the decode limit (issue 14: one unauthenticated 4 KiB gzip request took 1.8 GB). Here,
//! for `Push`:
//!
//! 1. the credential in `authorization` is checked (UNAUTHENTICATED otherwise, logged with the
//!    source address, rate-limited); then admission control (`admission.rs`) may refuse the
//!    push from its headers alone: pushes/s of the agent and tenant (RESOURCE_EXHAUSTED), or
//!    shedding while ClickHouse is down or the writer's queue is full (UNAVAILABLE), both with
//!    `retry-after-ms`;
//! 2. the body is read within `body_timeout` (DEADLINE_EXCEEDED otherwise) and only up to the
//!    announced message length, which must not exceed the decode limit (RESOURCE_EXHAUSTED,
//!    checked from the 5-byte frame header before anything is buffered); the announced length
//!    must fit in what is left of `max_inflight_bytes` (UNAVAILABLE with a hint otherwise);
//! 3. a gzip body is inflated into a buffer capped at `max_batch_bytes` (RESOURCE_EXHAUSTED
//!    beyond: no gzip bomb can inflate further);
//! 4. [`crate::wire::scan_push_request`] bounds items and attribute entries on the wire, and
//!    its item count is charged to the agent's and tenant's events/s limits;
//! 5. the request is decoded once and handed to the handler through the request extensions
//!    ([`GatedPush`]); tonic itself decodes an empty message. Malformed encodings are
//!    INVALID_ARGUMENT naming the item instead of tonic's INTERNAL.
//!
//! `GetLimits` is authenticated here too; `Register` (which carries its own secret in the body)
//! and the health and reflection services pass through under tonic's request timeout.

use std::{
    convert::Infallible,
    io::Read,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Buf, Bytes, BytesMut};
use fleetpulse_proto::v1::TelemetryItem;

use crate::push::DecodedPush;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use prost::Message;
use tokio::sync::OwnedSemaphorePermit;
use tonic::{
    Status,
    body::Body,
    server::NamedService,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use tower::Service;

use super::{admission::Admission, service::Shared};
use crate::{
    control::agents::AgentIdentity,
    validate::{self, BatchError},
    wire,
};

const PUSH_PATH: &str = "/fleetpulse.v1.IngestService/Push";
const GET_LIMITS_PATH: &str = "/fleetpulse.v1.IngestService/GetLimits";
/// A gRPC message frame: compressed flag and big-endian length, then the message.
const FRAME_HEADER: usize = 5;

/// The Push the gate read, bounded and decoded, with the identity that sent it. (Clone is
/// required of request extensions; tonic moves them, it never clones them.)
#[derive(Clone)]
pub struct GatedPush {
    pub identity: AgentIdentity,
    pub request: DecodedPush,
    /// Size of the (inflated) encoded message, for the `max_batch_bytes` check.
    pub encoded_len: usize,
    /// The body's share of `max_inflight_bytes`, held until the push is answered.
    pub body: Option<Arc<OwnedSemaphorePermit>>,
    /// When the gate took the request (its headers), for the `gate` stage.
    pub received: Instant,
}

/// The identity the gate authenticated (GetLimits).
#[derive(Clone)]
pub struct GatedIdentity(pub AgentIdentity);

/// Bounds the gate enforces.
#[derive(Debug, Clone, Copy)]
pub struct GateLimits {
    /// Largest compressed or plain message accepted on the wire (tonic's decode limit).
    pub decode_limit: usize,
    /// How long the whole body of a Push may take to arrive once its headers are in.
    pub body_timeout: Duration,
}

/// Wraps the tonic service; clones share state.
#[derive(Clone)]
pub struct IngestGate<S> {
    inner: S,
    shared: Arc<Shared>,
    limits: GateLimits,
}

impl<S> IngestGate<S> {
    pub fn new(inner: S, shared: Arc<Shared>, limits: GateLimits) -> Self {
        Self {
            inner,
            shared,
            limits,
        }
    }
}

impl<S: NamedService> NamedService for IngestGate<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for IngestGate<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<http::Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone is ready only if polled; swap so the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        let limits = self.limits;
        Box::pin(async move {
            let received = Instant::now();
            let path = req.uri().path();
            let is_push = path == PUSH_PATH;
            if !is_push && path != GET_LIMITS_PATH {
                return inner.call(req).await;
            }
            let peer = peer_addr(req.extensions());
            let identity = match shared.authenticate(req.headers(), peer).await {
                Ok(identity) => identity,
                Err(status) => {
                    if is_push {
                        shared.metrics.batches_received.inc();
                        shared
                            .metrics
                            .batch_rejected(super::service::status_label(status.code()));
                    }
                    return Ok(status.into_http());
                }
            };
            if !is_push {
                let mut req = req;
                req.extensions_mut().insert(GatedIdentity(identity));
                return inner.call(req).await;
            }
            if let Err(status) = shared.admission.admit_push(&identity, &shared.writer) {
                shared.metrics.batches_received.inc();
                shared
                    .metrics
                    .batch_rejected(super::service::status_label(status.code()));
                return Ok(status.into_http());
            }
            let (mut parts, body) = req.into_parts();
            let gzip = match parts.headers.get("grpc-encoding").map(|v| v.as_bytes()) {
                None | Some(b"identity") => false,
                Some(b"gzip") => true,
                Some(other) => {
                    let name = String::from_utf8_lossy(other).into_owned();
                    return Ok(Status::unimplemented(format!(
                        "grpc-encoding {name:?} is not supported; send gzip or uncompressed"
                    ))
                    .into_http());
                }
            };
            let rules = &shared.rules;
            let admit = Admit {
                admission: &shared.admission,
                identity: &identity,
            };
            let read = read_push(body, gzip, limits, rules, peer, admit);
            let (request, encoded_len, permit) = match read.await {
                Ok(read) => read,
                Err(status) => {
                    shared.metrics.batches_received.inc();
                    shared
                        .metrics
                        .batch_rejected(super::service::status_label(status.code()));
                    // Admission refusals (with a retry hint) are logged rate-limited by
                    // admission control; logging each here would let a flood fill the log.
                    if status.metadata().get("retry-after-ms").is_none() {
                        tracing::info!(
                            tenant = %identity.tenant,
                            agent_id = %identity.agent_id,
                            code = ?status.code(),
                            message = status.message(),
                            "push refused before decoding"
                        );
                    }
                    return Ok(status.into_http());
                }
            };
            parts.headers.remove("grpc-encoding");
            parts.extensions.insert(GatedPush {
                identity,
                request,
                encoded_len,
                body: Some(Arc::new(permit)),
                received,
            });
            // tonic decodes an empty message; the handler takes the real one from the
            // extensions.
            let empty = Body::new(http_body_util::Full::new(Bytes::from_static(&[0; 5])));
            inner.call(http::Request::from_parts(parts, empty)).await
        })
    }
}

/// The client's address, over plaintext or TLS.
fn peer_addr(ext: &http::Extensions) -> Option<SocketAddr> {
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|t| t.get_ref().remote_addr())
        })
}

/// Admission checks made while the body is read.
#[derive(Clone, Copy)]
struct Admit<'a> {
    admission: &'a Admission,
    identity: &'a AgentIdentity,
}

/// Reads, inflates, scans and decodes one Push body under the gate's bounds.
async fn read_push(
    body: Body,
    gzip: bool,
    limits: GateLimits,
    rules: &validate::Rules,
    peer: Option<SocketAddr>,
    admit: Admit<'_>,
) -> Result<(DecodedPush, usize, OwnedSemaphorePermit), Status> {
    let read = read_frame(body, limits, admit.admission);
    let (frame, permit) = match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(frame) => frame?,
        Err(_) => {
            tracing::info!(
                ?peer,
                "push body not received within the body timeout; stream closed"
            );
            return Err(Status::deadline_exceeded(format!(
                "the request body did not arrive within {} s (grpc_body_timeout_secs); \
                 retry on a better connection or with smaller batches",
                limits.body_timeout.as_secs()
            )));
        }
    };
    let (compressed, message) = frame;
    let mut permit = permit;
    let (request, encoded_len) =
        decode_message(compressed, gzip, message, rules, |step| match step {
            // The inflated copy counts against the in-flight budget too.
            BodyStep::Inflated(len) => {
                permit.merge(admit.admission.reserve_body(len)?);
                Ok(())
            }
            BodyStep::Scanned(items) => admit.admission.admit_items(admit.identity, items),
        })?;
    Ok((request, encoded_len, permit))
}

/// What the body path has learnt at the points where admission control may refuse it.
#[derive(Clone, Copy, Debug)]
pub enum BodyStep {
    /// A gzip message inflated to this many bytes (within max_batch_bytes).
    Inflated(usize),
    /// The wire scan counted this many items (within max_batch_items).
    Scanned(usize),
}

/// The pure part of the gate's body handling: inflates (when `compressed`), bounds, scans and
/// decodes one Push message read off the wire. Everything a hostile body can reach after the
/// frame header goes through here (and the fuzz targets call it; see `crate::fuzz`). `admit`
/// is asked at each [`BodyStep`] and refuses by returning its status; the gate passes its
/// admission control, the fuzz targets admit everything.
pub fn decode_message(
    compressed: bool,
    gzip: bool,
    message: Bytes,
    rules: &validate::Rules,
    mut admit: impl FnMut(BodyStep) -> Result<(), Status>,
) -> Result<(DecodedPush, usize), Status> {
    let max = rules.max_batch_bytes as usize;
    let message = if compressed {
        if !gzip {
            return Err(Status::invalid_argument(
                "the message is flagged compressed but grpc-encoding names no compression",
            ));
        }
        let inflated = inflate(&message, max)?;
        admit(BodyStep::Inflated(inflated.len()))?;
        inflated
    } else {
        message
    };
    if message.len() > max {
        return Err(batch_status(BatchError::ResourceExhausted(format!(
            "the batch is {} bytes, over max_batch_bytes = {max}; split the batch",
            message.len()
        ))));
    }
    let shape = wire::scan_push_request(&message, rules).map_err(batch_status)?;
    admit(BodyStep::Scanned(shape.items))?;
    let encoded_len = message.len();
    // Events are read (as views) when the handler takes them: `DecodedPush::items`.
    match DecodedPush::decode(message) {
        Ok(request) => Ok((request, encoded_len)),
        Err(reason) => Err(Status::invalid_argument(reason)),
    }
}

fn batch_status(e: BatchError) -> Status {
    match e {
        BatchError::InvalidArgument(m) => Status::invalid_argument(m),
        BatchError::ResourceExhausted(m) => Status::resource_exhausted(m),
        BatchError::PermissionDenied(m) => Status::permission_denied(m),
    }
}

/// Reads exactly one gRPC message frame, refusing one announced over the decode limit, or
/// beyond what is left of the in-flight body budget, before buffering it. Returns (compressed
/// flag, message bytes) and the body's share of the budget.
async fn read_frame(
    mut body: Body,
    limits: GateLimits,
    admission: &Admission,
) -> Result<((bool, Bytes), OwnedSemaphorePermit), Status> {
    let mut buf = BytesMut::new();
    let mut want: Option<(bool, usize)> = None;
    let mut permit: Option<OwnedSemaphorePermit> = None;
    loop {
        if want.is_none() && buf.len() >= FRAME_HEADER {
            let flag = buf[0];
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if flag > 1 {
                return Err(Status::invalid_argument(format!(
                    "invalid gRPC compression flag {flag} (0 or 1)"
                )));
            }
            if len > limits.decode_limit {
                return Err(Status::resource_exhausted(format!(
                    "the message is {len} bytes on the wire, over the limit of {} bytes \
                     (twice max_batch_bytes); split the batch",
                    limits.decode_limit
                )));
            }
            permit = Some(admission.reserve_body(FRAME_HEADER + len)?);
            buf.reserve((FRAME_HEADER + len).saturating_sub(buf.len()));
            want = Some((flag == 1, len));
        }
        if let Some((compressed, len)) = want
            && buf.len() >= FRAME_HEADER + len
            && let Some(permit) = permit.take()
        {
            buf.advance(FRAME_HEADER);
            buf.truncate(len);
            return Ok(((compressed, buf.freeze()), permit));
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                return Err(Status::cancelled(format!(
                    "reading the request failed: {e}"
                )));
            }
            None => {
                return Err(Status::invalid_argument(match want {
                    None => format!(
                        "the request ended after {} bytes, before a message",
                        buf.len()
                    ),
                    Some((_, len)) => format!(
                        "the request ended after {} of the {len} message bytes it announced",
                        buf.len().saturating_sub(FRAME_HEADER)
                    ),
                }));
            }
        }
    }
}

/// Inflates a gzip message into at most `max` bytes.
fn inflate(compressed: &[u8], max: usize) -> Result<Bytes, Status> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(max + 1));
    let mut decoder = flate2::read::GzDecoder::new(compressed).take(max as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| Status::invalid_argument(format!("the gzip message is corrupt: {e}")))?;
    if out.len() > max {
        return Err(Status::resource_exhausted(format!(
            "the gzip message inflates to more than max_batch_bytes = {max} bytes; split the batch"
        )));
    }
    Ok(Bytes::from(out))
}

/// Names the first item that fails to decode, falling back to prost's message for the batch.
/// The wire scan already proved the framing sound, so walking the top level cannot go astray.
pub fn locate_decode_error(message: &[u8], whole: &prost::DecodeError) -> String {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    let mut cursor = message;
    let mut index = 0;
    while !cursor.is_empty() {
        let Ok((field, wire_type)) = decode_key(&mut cursor) else {
            break;
        };
        if field == 2 && wire_type == WireType::LengthDelimited {
            let Some(item) = decode_varint(&mut cursor)
                .ok()
                .and_then(|len| usize::try_from(len).ok())
                .and_then(|len| cursor.get(..len))
            else {
                break;
            };
            if let Err(e) = TelemetryItem::decode(item) {
                return item_decode_error(index, &e);
            }
            cursor = &cursor[item.len()..];
            index += 1;
        } else if skip_field(wire_type, field, &mut cursor, DecodeContext::default()).is_err() {
            break;
        }
    }
    format!("PushRequest: not a valid message: {whole}")
}

/// `items[1].event.error.symbol: invalid string value: data is not UTF-8 encoded` from
/// prost's `failed to decode Protobuf message: ReportedError.symbol: EnrollmentEvent.error:
/// TelemetryItem.kind: invalid string value: ...` (innermost field first): the sender learns
/// which field of which item to fix.
fn item_decode_error(index: usize, e: &prost::DecodeError) -> String {
    let text = e.to_string();
    let mut rest = text
        .strip_prefix("failed to decode Protobuf message: ")
        .unwrap_or(&text);
    let mut fields = Vec::new();
    while let Some((head, tail)) = rest.split_once(": ") {
        let Some((message, field)) = head.split_once('.') else {
            break;
        };
        let is_ident =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !message.starts_with(|c: char| c.is_ascii_uppercase())
            || !is_ident(message)
            || !is_ident(field)
        {
            break;
        }
        fields.push((message, field));
        rest = tail;
    }
    let mut path = format!("items[{index}]");
    for (message, field) in fields.iter().rev() {
        // The oneof of a TelemetryItem is named by its member (`event`, `state`,
        // `heartbeat`), as the proto's JSON mapping and our other messages name it.
        let field = match (*message, *field) {
            ("TelemetryItem", "kind") => match fields.iter().rev().nth(1).map(|(m, _)| *m) {
                Some("EnrollmentEvent") => "event",
                Some("DeviceState") => "state",
                Some("Heartbeat") => "heartbeat",
                _ => "kind",
            },
            (_, f) => f,
        };
        path.push('.');
        path.push_str(field);
    }
    if fields.is_empty() {
        return format!("{path}: not a valid TelemetryItem: {text}");
    }
    format!("{path}: {rest}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::field;

    fn rules() -> validate::Rules {
        validate::Rules {
            max_batch_items: 5000,
            max_batch_bytes: 4 * 1024 * 1024,
            max_future_skew_secs: 86_400,
            retention_days: 90,
        }
    }

    fn push(items: &[Vec<u8>]) -> Bytes {
        let mut m = b"\x08\x01".to_vec();
        for item in items {
            m.extend(field(2, item));
        }
        Bytes::from(m)
    }

    /// The gate's decoding, then the handler's reading of the items (events are read there).
    fn refused(message: Bytes) -> Status {
        match decode_message(false, false, message, &rules(), |_| Ok(())) {
            Ok((push, _)) => match push.items() {
                Ok(_) => panic!("accepted"),
                Err(reason) => Status::invalid_argument(reason),
            },
            Err(status) => status,
        }
    }

    const NOT_UTF8: &[u8] = &[0xff, 0xfe];

    #[test]
    fn non_utf8_strings_are_invalid_argument_naming_the_field() {
        // items[1].event.event_id
        let ok_event = field(1, &field(1, b"e1"));
        let status = refused(push(&[ok_event.clone(), field(1, &field(1, NOT_UTF8))]));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "items[1].event.event_id: invalid string value: data is not UTF-8 encoded"
        );
        // items[0].event.error.symbol (ReportedError.symbol = 3 inside EnrollmentEvent.error = 11)
        let status = refused(push(&[field(1, &field(11, &field(3, NOT_UTF8)))]));
        assert_eq!(
            status.message(),
            "items[0].event.error.symbol: invalid string value: data is not UTF-8 encoded"
        );
        // items[2].state.attributes (a map key; DeviceState.attributes = 19)
        let entry = [field(1, NOT_UTF8), field(2, b"v")].concat();
        let status = refused(push(&[
            ok_event.clone(),
            ok_event,
            field(2, &field(19, &entry)),
        ]));
        assert_eq!(
            status.message(),
            "items[2].state.attributes: invalid string value: data is not UTF-8 encoded"
        );
    }

    #[test]
    fn batches_over_max_batch_bytes_are_resource_exhausted_with_the_limit() {
        let mut m = b"\x08\x01".to_vec();
        let pad = 4 * 1024 * 1024;
        m.extend(field(9, &vec![0; pad]));
        let status = refused(Bytes::from(m.clone()));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.message(),
            format!(
                "the batch is {} bytes, over max_batch_bytes = 4194304; split the batch",
                m.len()
            )
        );
    }
}
