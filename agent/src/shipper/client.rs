//! The gRPC connection to the collector: channel with TLS, bearer-credential interceptor,
//! registration.

use std::time::Duration;

use fleetpulse_proto::v1::ingest_service_client::IngestServiceClient;
use fleetpulse_proto::v1::{Platform, RegisterRequest, RegisterResponse};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::TlsSettings;

/// Errors setting up the connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("collector URL {url:?} is invalid: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("the agent credential contains characters not allowed in a header")]
    Credential,
}

/// Adds `authorization: Bearer <credential>` to every request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Bearer {
    pub fn new(credential: &str) -> Result<Self, ConnectError> {
        format!("Bearer {credential}")
            .parse()
            .map(Self)
            .map_err(|_| ConnectError::Credential)
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The authenticated ingest client.
pub type IngestClient = IngestServiceClient<InterceptedService<Channel, Bearer>>;

/// Builds a lazily connecting channel: a collector that is down at start-up is retried by the
/// shipper's backoff rather than failing the agent. `https://` URLs use TLS, trusting `ca_cert`
/// when given and the public web roots otherwise.
pub fn channel(url: &str, tls: &TlsSettings) -> Result<Channel, ConnectError> {
    let invalid = |reason: String| ConnectError::Url {
        url: url.to_owned(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(Duration::from_secs(10))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .http2_keep_alive_interval(Duration::from_secs(60))
        .keep_alive_while_idle(false);
    let scheme = url
        .split("://")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match scheme.as_str() {
        "https" => {
            let mut config = ClientTlsConfig::new();
            config = match &tls.ca_cert {
                Some(path) => {
                    config.ca_certificate(Certificate::from_pem(read(path, "CA certificate")?))
                }
                None => config.with_webpki_roots(),
            };
            if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
                config = config.identity(Identity::from_pem(
                    read(cert, "client certificate")?,
                    read(key, "client key")?,
                ));
            }
            endpoint = endpoint
                .tls_config(config)
                .map_err(|e| ConnectError::Tls(e.to_string()))?;
        }
        "http" => {
            if tls.ca_cert.is_some() || tls.client_cert.is_some() {
                return Err(invalid(
                    "TLS files were given but the URL is http://; use https://".into(),
                ));
            }
        }
        other => {
            return Err(invalid(format!(
                "scheme {other:?} is not supported (use https:// or http://)"
            )));
        }
    }
    Ok(endpoint.connect_lazy())
}

fn read(path: &std::path::Path, what: &'static str) -> Result<Vec<u8>, ConnectError> {
    std::fs::read(path).map_err(|source| ConnectError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// An authenticated client on `channel`.
pub fn ingest_client(channel: Channel, credential: &str) -> Result<IngestClient, ConnectError> {
    Ok(
        IngestServiceClient::with_interceptor(channel, Bearer::new(credential)?)
            .max_decoding_message_size(16 * 1024 * 1024),
    )
}

/// What `Register` needs to know about the device.
#[derive(Debug, Clone)]
pub struct DeviceIdentity {
    pub device_id: String,
    pub hostname: String,
    pub platform: Platform,
}

/// How long `register` keeps retrying a collector that is overloaded, rate-limiting or
/// unreachable before giving up (the CLI's `--retry-secs` default).
pub const REGISTER_RETRY_FOR: Duration = Duration::from_secs(600);

/// Exchanges an enrollment token for an agent credential (one attempt).
pub async fn register(
    channel: Channel,
    enrollment_token: &str,
    device: &DeviceIdentity,
) -> Result<RegisterResponse, tonic::Status> {
    let mut client = IngestServiceClient::new(channel);
    let mut request = tonic::Request::new(RegisterRequest {
        enrollment_token: enrollment_token.to_owned(),
        device_id: device.device_id.clone(),
        hostname: device.hostname.clone(),
        platform: device.platform as i32,
        agent_version: crate::AGENT_VERSION.to_owned(),
    });
    request.set_timeout(Duration::from_secs(30));
    Ok(client.register(request).await?.into_inner())
}

/// Whether a failed Register may succeed when repeated unchanged: the collector was rate
/// limiting (RESOURCE_EXHAUSTED), overloaded or unreachable (UNAVAILABLE, transport errors,
/// DEADLINE_EXCEEDED). A refused or used-up token, a bad field: never.
pub fn register_retryable(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::ResourceExhausted
            | Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
    )
}

/// [`register`], repeated while the answer is retryable ([`register_retryable`]) for at most
/// `retry_for`: after the collector's `retry-after-ms` hint when it sends one (plus a little
/// jitter, so a fleet enrolling at once does not come back in lockstep), else after a
/// full-jitter exponential backoff (0.5 s doubling to 30 s). A rate limiter on Register
/// therefore slows a fleet enrolling in a burst instead of failing it.
pub async fn register_retrying(
    channel: Channel,
    enrollment_token: &str,
    device: &DeviceIdentity,
    retry_for: Duration,
) -> Result<RegisterResponse, tonic::Status> {
    let started = std::time::Instant::now();
    let mut backoff =
        crate::shipper::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    // StdRng, not thread_rng: the future must stay Send across the awaits below.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_entropy();
    loop {
        let status = match register(channel.clone(), enrollment_token, device).await {
            Ok(response) => return Ok(response),
            Err(status) => status,
        };
        let elapsed = started.elapsed();
        if !register_retryable(status.code()) || elapsed >= retry_for {
            return Err(status);
        }
        let delay =
            crate::shipper::retry_delay(&status, &mut backoff, &mut rng).min(retry_for - elapsed);
        tracing::warn!(
            device_id = %device.device_id,
            code = crate::shipper::code_name(status.code()),
            message = status.message(),
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "registration not accepted yet; will retry"
        );
        tokio::time::sleep(delay).await;
    }
}

/// Registers `device` with the collector at `collector` and writes the state file (owner-only)
/// with the new credential. Batch sequence numbers continue after any spool in `spool_dir` that
/// survived a previous registration, so a resend is never mistaken for new data.
pub async fn register_and_store(
    collector: &str,
    tls: &TlsSettings,
    enrollment_token: &str,
    device: DeviceIdentity,
    spool_dir: &std::path::Path,
    state_file: &std::path::Path,
    retry_for: Duration,
) -> anyhow::Result<crate::state::AgentState> {
    use anyhow::Context as _;
    let response = register_retrying(
        channel(collector, tls)?,
        enrollment_token,
        &device,
        retry_for,
    )
    .await
    .map_err(|status| {
        anyhow::anyhow!(
            "the collector refused the registration: {}: {}",
            crate::shipper::code_name(status.code()),
            status.message()
        )
    })?;
    let reserved = crate::spool::Spool::peek_stats(spool_dir)
        .map(|s| s.next_batch_seq)
        .unwrap_or(1);
    let state = crate::state::AgentState {
        format: crate::state::STATE_FORMAT,
        collector_url: collector.to_owned(),
        agent_id: response.agent_id,
        agent_credential: response.agent_credential,
        tenant: response.tenant,
        device_id: device.device_id,
        hostname: device.hostname,
        registered_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)?,
        batch_seq_reserved: reserved,
    };
    state
        .store(state_file)
        .with_context(|| "storing the registration")?;
    Ok(state)
}

/// The platform this binary was built for.
pub fn this_platform() -> Platform {
    if cfg!(windows) {
        Platform::Windows
    } else if cfg!(target_os = "macos") {
        Platform::Macos
    } else if cfg!(target_os = "linux") {
        Platform::Linux
    } else {
        Platform::Unspecified
    }
}

/// The host name, best effort (informational only).
pub fn hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into a buffer we own.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
        String::new()
    }
    #[cfg(not(unix))]
    {
        std::env::var("COMPUTERNAME").unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_and_tls_mismatches_are_explained() {
        let tls = TlsSettings::default();
        let err = channel("ftp://x:1", &tls).unwrap_err();
        assert_eq!(
            err.to_string(),
            "collector URL \"ftp://x:1\" is invalid: scheme \"ftp\" is not supported (use https:// or http://)"
        );
        let with_ca = TlsSettings {
            ca_cert: Some("/nonexistent.pem".into()),
            ..TlsSettings::default()
        };
        assert!(
            channel("http://127.0.0.1:1", &with_ca)
                .unwrap_err()
                .to_string()
                .contains("use https://")
        );
        let err = channel("https://127.0.0.1:1", &with_ca).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read CA certificate /nonexistent.pem"),
            "{err}"
        );
    }

    #[test]
    fn bearer_rejects_header_breaking_credentials() {
        assert!(Bearer::new("fpa_ok").is_ok());
        assert!(matches!(
            Bearer::new("bad\nvalue"),
            Err(ConnectError::Credential)
        ));
    }
}
