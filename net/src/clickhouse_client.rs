//! The HTTP client under every ClickHouse connection of the collector and the analyzer.
//!
//! Why here: the `clickhouse` crate's default client speaks plain HTTP only (its TLS features
//! trust a fixed root set and cannot take a private CA), while ClickHouse deployments commonly
//! serve HTTPS on 8443 with a certificate from the organisation's own CA. One client for both
//! binaries: `http://` URLs stay plain, `https://` URLs are verified against the CA file given
//! (`clickhouse_ca_file`) or, without one, against the Mozilla root set (`webpki-roots`, built
//! in, so a container needs no system CA bundle). Certificates are always verified: there is no
//! "insecure" switch.

use std::{path::Path, sync::Arc, time::Duration};

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use rustls_pki_types::{CertificateDer, pem::PemObject};

/// TCP keepalive of ClickHouse connections (the crate's default client uses the same).
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Idle pooled connections are dropped before ClickHouse closes them (its keep-alive timeout
/// is 3 s by default; reusing a socket the server is closing fails the request).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a ClickHouse client could not be built: the CA file and the reason (callers prefix the
/// setting's name).
#[derive(Debug, thiserror::Error)]
pub enum ClickHouseTlsError {
    #[error("{path}: cannot read it: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: holds no PEM certificate")]
    Empty { path: String },
    #[error("{path}: certificate {index} is not usable as a root: {reason}")]
    BadCertificate {
        path: String,
        index: usize,
        reason: String,
    },
    #[error("TLS setup for ClickHouse failed: {0}")]
    Tls(String),
}

/// The CA certificates of a PEM file, read once at startup so that a bad file is reported
/// before anything connects.
#[derive(Clone, Debug, Default)]
pub struct ClickHouseRoots {
    /// Empty: the built-in Mozilla roots.
    certs: Arc<Vec<CertificateDer<'static>>>,
}

impl ClickHouseRoots {
    /// Reads every certificate of the PEM file at `path` (other PEM sections are ignored).
    pub fn from_pem_file(path: &Path) -> Result<Self, ClickHouseTlsError> {
        let shown = path.display().to_string();
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ClickHouseTlsError::Read {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(ClickHouseTlsError::Empty { path: shown });
        }
        // Checked here rather than at the first connection: a certificate rustls refuses as a
        // root should stop the start, not every later request.
        root_store(&certs).map_err(|(index, reason)| ClickHouseTlsError::BadCertificate {
            path: shown,
            index,
            reason,
        })?;
        Ok(Self {
            certs: Arc::new(certs),
        })
    }

    /// Whether a CA file was given (otherwise the built-in roots are trusted).
    pub fn is_custom(&self) -> bool {
        !self.certs.is_empty()
    }
}

fn root_store(
    certs: &[CertificateDer<'static>],
) -> Result<tokio_rustls::rustls::RootCertStore, (usize, String)> {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    if certs.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for (i, c) in certs.iter().enumerate() {
        roots.add(c.clone()).map_err(|e| (i + 1, e.to_string()))?;
    }
    Ok(roots)
}

/// The connector under every ClickHouse connection: plain TCP for `http://`, verified TLS for
/// `https://` (trusting `roots`). The collector also sends requests the `clickhouse` crate
/// cannot (external data for its duplicate lookups) through a client built on it.
pub type ClickHouseConnector = HttpsConnector<HttpConnector>;

/// See [`ClickHouseConnector`].
pub fn clickhouse_connector(
    roots: &ClickHouseRoots,
) -> Result<ClickHouseConnector, ClickHouseTlsError> {
    let store = root_store(&roots.certs).map_err(|(_, reason)| ClickHouseTlsError::Tls(reason))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClickHouseTlsError::Tls(e.to_string()))?
        .with_root_certificates(store)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.set_nodelay(true);
    // The TLS layer below decides by scheme; the plain connector must accept `https`.
    http.enforce_http(false);
    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// A hyper client builder with the pool settings every ClickHouse client uses.
pub fn clickhouse_http_builder() -> hyper_util::client::legacy::Builder {
    let mut builder = HyperClient::builder(TokioExecutor::new());
    builder.pool_idle_timeout(POOL_IDLE_TIMEOUT);
    builder
}

/// A `clickhouse::Client` (no URL, user or settings yet) whose connections are plain for
/// `http://` URLs and verified TLS for `https://` ones, trusting `roots`.
pub fn clickhouse_client(
    roots: &ClickHouseRoots,
) -> Result<clickhouse::Client, ClickHouseTlsError> {
    let connector = clickhouse_connector(roots)?;
    Ok(clickhouse::Client::with_http_client(
        clickhouse_http_builder().build(connector),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_names_the_setting_and_the_path() {
        let err = ClickHouseRoots::from_pem_file(Path::new("/nonexistent/ca.pem")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("/nonexistent/ca.pem: cannot read it: "),
            "{msg}"
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("fp-ch-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = ClickHouseRoots::from_pem_file(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: holds no PEM certificate", path.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_built_in_roots_build_a_client() {
        let roots = ClickHouseRoots::default();
        assert!(!roots.is_custom());
        clickhouse_client(&roots).unwrap();
    }
}
