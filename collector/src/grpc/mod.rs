//! The gRPC server: the ingest service, gRPC health (SERVING while ClickHouse answers) and
//! server reflection, optionally over TLS with client certificates.

pub mod admission;
pub mod auth;
pub mod gate;
pub mod limiter;
mod refusals;
pub mod service;

use std::{path::Path, sync::Arc};

use fleetpulse_net::{ConnectionCap, capped_incoming};
use fleetpulse_proto::v1::ingest_service_server::IngestServiceServer;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use gate::{GateLimits, IngestGate};

use crate::{config::Config, store::writer::StoreHealth};
pub use service::{IngestSvc, Shared};

/// Largest header block a client may send (an agent sends a few hundred bytes).
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Errors starting or running the gRPC server.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    #[error("reading {what} {path}: {source}")]
    ReadPem {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(tonic::transport::Error),
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Serve(tonic::transport::Error),
}

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, GrpcError> {
    std::fs::read(path).map_err(|source| GrpcError::ReadPem {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// The TLS settings from the configuration, or None for plaintext.
pub fn tls_config(config: &Config) -> Result<Option<ServerTlsConfig>, GrpcError> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(
        read_pem("TLS certificate", cert)?,
        read_pem("TLS key", key)?,
    );
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read_pem("client CA", ca)?));
    }
    Ok(Some(tls))
}

/// Serves gRPC on `listener` until `shutdown` completes, then waits for in-flight calls.
///
/// Listener limits (see `config.rs` for the defaults): a cap on open connections, a cap on
/// concurrent streams per connection, HTTP/2 keepalive pings, a timeout on every call, and for
/// Push the gate (`gate.rs`): authentication before the body, a body timeout and bounded reads.
pub async fn serve(
    listener: TcpListener,
    svc: IngestSvc,
    shared: Arc<Shared>,
    config: &Config,
    health: Arc<StoreHealth>,
    connections: ConnectionCap,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GrpcError> {
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let mut serving = health.subscribe();
    let follow = tokio::spawn(async move {
        loop {
            let up = *serving.borrow_and_update();
            if up {
                reporter
                    .set_serving::<IngestServiceServer<IngestSvc>>()
                    .await;
                reporter
                    .set_service_status("", tonic_health::ServingStatus::Serving)
                    .await;
            } else {
                reporter
                    .set_not_serving::<IngestServiceServer<IngestSvc>>()
                    .await;
                reporter
                    .set_service_status("", tonic_health::ServingStatus::NotServing)
                    .await;
            }
            if serving.changed().await.is_err() {
                return;
            }
        }
    });
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(fleetpulse_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let ingest = IngestServiceServer::new(svc)
        .max_decoding_message_size(config.grpc_decode_limit())
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let ingest = IngestGate::new(
        ingest,
        shared,
        GateLimits {
            decode_limit: config.grpc_decode_limit(),
            body_timeout: config.grpc_body_timeout(),
        },
    );
    // Flow-control windows sized to a whole batch: a sender streams a full batch without
    // waiting for window updates (hyper's default is 1 MiB). Unauthenticated streams are
    // answered before their body is read, so the window is only filled by known agents.
    let window = u32::try_from(config.grpc_decode_limit()).unwrap_or(u32::MAX);
    let mut builder = Server::builder()
        .initial_stream_window_size(window)
        .initial_connection_window_size(window.saturating_mul(2))
        .max_concurrent_streams(config.grpc_max_concurrent_streams)
        .timeout(config.grpc_request_timeout())
        .http2_keepalive_interval(Some(config.grpc_keepalive_interval()))
        .http2_keepalive_timeout(Some(config.grpc_keepalive_timeout()))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES);
    if let Some(tls) = tls_config(config)? {
        builder = builder.tls_config(tls).map_err(GrpcError::Tls)?;
    }
    let result = builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(ingest)
        .serve_with_incoming_shutdown(capped_incoming(listener, connections), shutdown)
        .await
        .map_err(GrpcError::Serve);
    follow.abort();
    result
}
