//! Sending encoded records: HTTP (reqwest with rustls) for webhook, chat, paging and SIEM
//! APIs, and syslog sockets (UDP datagrams; TCP and TLS streams with octet counting).
//! Errors are classified: transient ones (network, timeouts, 408, 429, 5xx) are retried with
//! backoff; permanent ones (other 4xx: a wrong token, a rejected payload) are reported and
//! retried at the longest backoff, since a fixed configuration makes them deliverable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, RootCertStore};

use super::config::{Destination, EsAuth, Kind, SyslogFormat, SyslogTransport};
use super::record::Record;
use super::{cef, ecs, json, pagerduty, sentinel, slack, splunk, syslog, teams, webhook};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("transient: {0}")]
    Transient(String),
    #[error("permanent: {0}")]
    Permanent(String),
}

impl SendError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent(_))
    }
}

/// Largest UDP syslog datagram we send; longer messages are cut (RFC 5426 receivers must
/// take 480 octets and should take 2048; most take 64 KiB).
pub const MAX_UDP: usize = 65_000;

enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// A destination's sender: its HTTP client or syslog connection and its cached token.
pub struct Sender {
    pub dest: Destination,
    http: reqwest::Client,
    stream: Mutex<Option<Stream>>,
    token: Mutex<Option<(String, Instant)>>,
    tls: Option<TlsConnector>,
    version: String,
}

fn load_roots(dest: &Destination) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match &dest.ca_file {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

impl Sender {
    pub fn new(dest: Destination) -> Result<Self, String> {
        let mut http = reqwest::Client::builder()
            .timeout(dest.timeout)
            .user_agent(concat!("fleetpulse-analyzer/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &dest.ca_file
            && !matches!(dest.kind, Kind::Syslog { .. })
        {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| format!("bad ca_file {}: {e}", path.display()))?;
            http = http
                .tls_built_in_root_certs(false)
                .add_root_certificate(cert);
        }
        let http = http
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let tls = match &dest.kind {
            Kind::Syslog {
                transport: SyslogTransport::Tls,
                ..
            } => {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(load_roots(&dest)?)
                    .with_no_client_auth();
                Some(TlsConnector::from(Arc::new(config)))
            }
            _ => None,
        };
        Ok(Self {
            dest,
            http,
            stream: Mutex::new(None),
            token: Mutex::new(None),
            tls,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }

    /// Whether several records go in one request.
    pub fn batches(&self) -> bool {
        matches!(
            self.dest.kind,
            Kind::SplunkHec { .. } | Kind::Elasticsearch { .. } | Kind::Sentinel { .. }
        )
    }

    /// Sends `records` (one unless [`Self::batches`]); Ok means the receiver accepted all.
    pub async fn send(&self, records: &[Record]) -> Result<(), SendError> {
        match &self.dest.kind {
            Kind::Syslog {
                transport,
                host,
                port,
                format,
            } => {
                for r in records {
                    let msg = match format {
                        SyslogFormat::Cef => cef::encode(r, &self.version),
                        SyslogFormat::Json => json::encode(r),
                    };
                    let h = syslog::Header {
                        facility: self.dest.facility,
                        hostname: self.dest.hostname.clone(),
                        app_name: self.dest.app_name.clone(),
                        sd_id: self.dest.sd_id.clone(),
                    };
                    let now_ms =
                        (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
                    let bytes = syslog::message(&h, r, &msg, now_ms);
                    self.syslog(*transport, host, *port, bytes).await?;
                }
                Ok(())
            }
            Kind::Webhook { url, secret } => {
                for r in records {
                    let body = webhook::body(r);
                    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
                    let mut req = self
                        .http
                        .post(url)
                        .header("content-type", "application/json")
                        .header("x-fleetpulse-timestamp", ts.to_string())
                        .header("x-fleetpulse-delivery", r.id());
                    if let Some(s) = secret {
                        req = req.header(
                            "x-fleetpulse-signature",
                            webhook::signature(s.as_bytes(), ts, &body),
                        );
                    }
                    check(req.body(body).send().await).await?;
                }
                Ok(())
            }
            Kind::Slack { url } | Kind::Teams { url } => {
                for r in records {
                    let Record::Alert(a, _) = r else { continue };
                    let body = if matches!(self.dest.kind, Kind::Slack { .. }) {
                        slack::body(a)
                    } else {
                        teams::body(a)
                    };
                    check(self.post_json(url, &body).send().await).await?;
                }
                Ok(())
            }
            Kind::PagerDuty { url, routing_key } => {
                for r in records {
                    let Record::Alert(a, _) = r else { continue };
                    check(
                        self.post_json(url, &pagerduty::body(a, routing_key))
                            .send()
                            .await,
                    )
                    .await?;
                }
                Ok(())
            }
            Kind::SplunkHec { url, token, index } => {
                let body = splunk::batch(records, &self.dest.hostname, index.as_deref());
                let req = self
                    .http
                    .post(format!("{url}/services/collector/event"))
                    .header("authorization", format!("Splunk {token}"))
                    .header("content-type", "application/json")
                    .body(body);
                check(req.send().await).await.map(|_| ())
            }
            Kind::Elasticsearch { url, index, auth } => {
                let mut req = self
                    .http
                    .post(format!("{url}/_bulk"))
                    .header("content-type", "application/x-ndjson")
                    .body(ecs::bulk(records, index));
                req = match auth {
                    Some(EsAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
                    Some(EsAuth::ApiKey(k)) => req.header("authorization", format!("ApiKey {k}")),
                    None => req,
                };
                let body = check(req.send().await).await?;
                bulk_result(&body)
            }
            Kind::Sentinel {
                url,
                dcr_immutable_id,
                stream,
                ..
            } => {
                let token = self.sentinel_token().await?;
                let req = self
                    .http
                    .post(format!(
                        "{url}/dataCollectionRules/{dcr_immutable_id}/streams/{stream}?api-version={}",
                        sentinel::API_VERSION
                    ))
                    .bearer_auth(&token)
                    .header("content-type", "application/json")
                    .body(sentinel::body(records));
                match check(req.send().await).await {
                    Err(SendError::Permanent(e)) if e.starts_with("HTTP 401") => {
                        // An expired or revoked token: fetch a new one next time.
                        *self.token.lock().await = None;
                        Err(SendError::Transient(e))
                    }
                    other => other.map(|_| ()),
                }
            }
        }
    }

    fn post_json(&self, url: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string())
    }

    async fn sentinel_token(&self) -> Result<String, SendError> {
        let Kind::Sentinel {
            token_url,
            client_id,
            client_secret,
            ..
        } = &self.dest.kind
        else {
            return Err(SendError::Permanent("not a sentinel destination".into()));
        };
        let mut cached = self.token.lock().await;
        if let Some((t, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let resp = self
            .http
            .post(token_url)
            .form(&sentinel::token_form(client_id, client_secret))
            .send()
            .await;
        let body = check(resp).await?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| SendError::Permanent(format!("token endpoint answered non-JSON: {e}")))?;
        let token = v["access_token"]
            .as_str()
            .ok_or_else(|| {
                SendError::Permanent("token endpoint answered without access_token".into())
            })?
            .to_owned();
        let ttl = v["expires_in"].as_u64().unwrap_or(3600);
        // Renew a minute early.
        let until = Instant::now() + Duration::from_secs(ttl.saturating_sub(60).max(1));
        *cached = Some((token.clone(), until));
        Ok(token)
    }

    async fn syslog(
        &self,
        transport: SyslogTransport,
        host: &str,
        port: u16,
        msg: Vec<u8>,
    ) -> Result<(), SendError> {
        let io = |e: std::io::Error| SendError::Transient(format!("syslog {host}:{port}: {e}"));
        if transport == SyslogTransport::Udp {
            let sock = UdpSocket::bind(if host.contains(':') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            })
            .await
            .map_err(io)?;
            let mut msg = msg;
            msg.truncate(MAX_UDP);
            sock.send_to(&msg, (host, port)).await.map_err(io)?;
            return Ok(());
        }
        let framed = syslog::octet_counted(&msg);
        let mut guard = self.stream.lock().await;
        if guard.is_none() {
            let tcp = tokio::time::timeout(self.dest.timeout, TcpStream::connect((host, port)))
                .await
                .map_err(|_| {
                    SendError::Transient(format!("syslog {host}:{port}: connect timed out"))
                })?
                .map_err(io)?;
            let _ = tcp.set_nodelay(true);
            *guard = Some(match &self.tls {
                Some(c) => {
                    let name = self
                        .dest
                        .server_name
                        .clone()
                        .unwrap_or_else(|| host.to_owned());
                    let sni =
                        rustls_pki_types::ServerName::try_from(name.clone()).map_err(|e| {
                            SendError::Permanent(format!("invalid TLS server name {name:?}: {e}"))
                        })?;
                    let tls = tokio::time::timeout(self.dest.timeout, c.connect(sni, tcp))
                        .await
                        .map_err(|_| {
                            SendError::Transient(format!(
                                "syslog {host}:{port}: TLS handshake timed out"
                            ))
                        })?
                        .map_err(io)?;
                    Stream::Tls(Box::new(tls))
                }
                None => Stream::Tcp(tcp),
            });
        }
        let write = async {
            match guard.as_mut() {
                Some(Stream::Tcp(s)) => {
                    s.write_all(&framed).await?;
                    s.flush().await
                }
                Some(Stream::Tls(s)) => {
                    s.write_all(&framed).await?;
                    s.flush().await
                }
                None => Ok(()),
            }
        };
        match tokio::time::timeout(self.dest.timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                *guard = None;
                Err(io(e))
            }
            Err(_) => {
                *guard = None;
                Err(SendError::Transient(format!(
                    "syslog {host}:{port}: write timed out"
                )))
            }
        }
    }
}

/// Classifies an HTTP outcome; returns the body of a 2xx answer.
async fn check(resp: Result<reqwest::Response, reqwest::Error>) -> Result<Vec<u8>, SendError> {
    let resp = resp.map_err(|e| SendError::Transient(format!("request failed: {e}")))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| SendError::Transient(format!("reading the answer failed: {e}")))?;
    if status.is_success() {
        return Ok(body.to_vec());
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    let msg = format!("HTTP {}: {text}", status.as_u16());
    if status.as_u16() == 408 || status.as_u16() == 429 || status.is_server_error() {
        Err(SendError::Transient(msg))
    } else {
        Err(SendError::Permanent(msg))
    }
}

/// An Elasticsearch `_bulk` answer: every item created, or already there (409).
fn bulk_result(body: &[u8]) -> Result<(), SendError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| SendError::Transient(format!("_bulk answered non-JSON: {e}")))?;
    if v["errors"].as_bool() != Some(true) {
        return Ok(());
    }
    for item in v["items"].as_array().into_iter().flatten() {
        let status = item["create"]["status"].as_u64().unwrap_or(0);
        if !(status == 201 || status == 200 || status == 409) {
            let reason = item["create"]["error"].to_string();
            return Err(if status == 429 || status >= 500 {
                SendError::Transient(format!("_bulk item {status}: {reason}"))
            } else {
                SendError::Permanent(format!("_bulk item {status}: {reason}"))
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_conflicts_are_success() {
        assert!(bulk_result(br#"{"errors":false,"items":[]}"#).is_ok());
        assert!(bulk_result(br#"{"errors":true,"items":[{"create":{"status":201}},{"create":{"status":409,"error":{"type":"version_conflict_engine_exception"}}}]}"#).is_ok());
        assert!(bulk_result(br#"{"errors":true,"items":[{"create":{"status":400,"error":{"type":"mapper_parsing_exception"}}}]}"#).unwrap_err().is_permanent());
        assert!(
            !bulk_result(br#"{"errors":true,"items":[{"create":{"status":429}}]}"#)
                .unwrap_err()
                .is_permanent()
        );
    }
}
