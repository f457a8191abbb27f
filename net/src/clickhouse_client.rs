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
    #[error(
        "set, but clickhouse_url {url} is not https:// (the CA verifies ClickHouse's TLS certificate)"
    )]
    NotHttps { url: String },
    #[error("TLS setup for ClickHouse failed: {0}")]
    Tls(String),
}

/// The roots ClickHouse's certificate must chain to: the CA certificates of a PEM file, read
/// and checked once at startup so that a bad file is reported before anything connects, or
/// the built-in Mozilla roots.
#[derive(Clone, Debug)]
pub struct ClickHouseRoots {
    store: Arc<tokio_rustls::rustls::RootCertStore>,
    custom: bool,
}

impl Default for ClickHouseRoots {
    /// The built-in Mozilla roots.
    fn default() -> Self {
        let mut store = tokio_rustls::rustls::RootCertStore::empty();
        store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self {
            store: Arc::new(store),
            custom: false,
        }
    }
}

impl ClickHouseRoots {
    /// The roots for `clickhouse_url` given the `clickhouse_ca_file` setting: the file's CAs,
    /// or the built-in roots without one. A CA file with a URL that is not `https://` is a
    /// misconfiguration (nothing would be verified), refused here for every binary.
    pub fn for_url(url: &str, ca_file: Option<&Path>) -> Result<Self, ClickHouseTlsError> {
        Self::check_url(url, ca_file)?;
        match ca_file {
            Some(path) => Self::from_pem_file(path),
            None => Ok(Self::default()),
        }
    }

    /// The part of [`Self::for_url`] that reads no file, for configuration checks that run
    /// before anything else starts.
    pub fn check_url(url: &str, ca_file: Option<&Path>) -> Result<(), ClickHouseTlsError> {
        match ca_file {
            Some(_) if !url.starts_with("https://") => Err(ClickHouseTlsError::NotHttps {
                url: url.to_owned(),
            }),
            _ => Ok(()),
        }
    }

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
        let mut store = tokio_rustls::rustls::RootCertStore::empty();
        for (i, c) in certs.into_iter().enumerate() {
            store
                .add(c)
                .map_err(|e| ClickHouseTlsError::BadCertificate {
                    path: shown.clone(),
                    index: i + 1,
                    reason: e.to_string(),
                })?;
        }
        Ok(Self {
            store: Arc::new(store),
            custom: true,
        })
    }

    /// Whether a CA file was given (otherwise the built-in roots are trusted).
    pub fn is_custom(&self) -> bool {
        self.custom
    }
}

/// The connector under every ClickHouse connection: plain TCP for `http://`, verified TLS for
/// `https://` (trusting `roots`). The collector also sends requests the `clickhouse` crate
/// cannot (external data for its duplicate lookups) through a client built on it.
pub type ClickHouseConnector = HttpsConnector<HttpConnector>;

/// See [`ClickHouseConnector`].
pub fn clickhouse_connector(
    roots: &ClickHouseRoots,
) -> Result<ClickHouseConnector, ClickHouseTlsError> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClickHouseTlsError::Tls(e.to_string()))?
        .with_root_certificates(roots.store.clone())
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

    #[test]
    fn a_ca_file_needs_an_https_url() {
        let err =
            ClickHouseRoots::for_url("http://ch:8123", Some(Path::new("/ca.pem"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "set, but clickhouse_url http://ch:8123 is not https:// (the CA verifies \
             ClickHouse's TLS certificate)"
        );
        let roots = ClickHouseRoots::for_url("http://ch:8123", None).unwrap();
        assert!(!roots.is_custom());
        let err =
            ClickHouseRoots::for_url("https://ch:8443", Some(Path::new("/nonexistent/ca.pem")))
                .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/ca.pem: cannot read it: ")
        );
    }

    #[tokio::test]
    async fn the_built_in_roots_build_a_client() {
        let roots = ClickHouseRoots::default();
        assert!(!roots.is_custom());
        clickhouse_client(&roots).unwrap();
    }
}
