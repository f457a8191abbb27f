//! App-only access tokens from Entra: the OAuth 2.0 client credentials grant against
//! `{authority}/{directory}/oauth2/v2.0/token` with `scope = {graph}/.default`, proving the
//! application's identity with a client secret or with a certificate (a JWT client assertion
//! signed with the certificate's private key, RFC 7523, header `x5t` = the certificate's SHA-1
//! thumbprint as Microsoft's identity platform documents).
//!
//! Tokens are cached and refreshed ahead of expiry; a Graph 401 forces a refresh
//! ([`TokenProvider::invalidate`]). Secrets are read when a token is requested (so replacing the
//! secret file rotates it without a restart), held only as long as the request, and never
//! logged: errors name the file or variable, never its content.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use sha1::Digest as _;
use tokio::sync::Mutex;

use super::config::{CredentialSource, TenantSettings};

/// Why no token could be obtained.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The credential could not be read or used (file missing, key invalid): fix the config.
    #[error("credential: {0}")]
    Credential(String),
    /// Entra refused the credential (`invalid_client`, `unauthorized_client`, ...).
    #[error("the token endpoint refused the credential: {error}: {description}")]
    Refused { error: String, description: String },
    /// Network trouble or a server error: retry later.
    #[error("token request failed: {0}")]
    Transient(String),
}

impl TokenError {
    /// Whether retrying soon may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct TokenErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// Hands out a valid access token for one tenant, refreshing it when due.
pub struct TokenProvider {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    scope: String,
    credential: CredentialSource,
    cached: Mutex<Option<Cached>>,
    /// Token requests made (for logs and tests).
    pub requests: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
            .finish_non_exhaustive()
    }
}

/// How long before expiry a token is renewed: a tenth of its life, at most 5 minutes.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(300))
}

impl TokenProvider {
    pub fn new(http: reqwest::Client, tenant: &TenantSettings) -> Self {
        Self {
            http,
            token_url: tenant.token_url(),
            client_id: tenant.client_id.clone(),
            scope: tenant.scope(),
            credential: tenant.credential.clone(),
            cached: Mutex::new(None),
            requests: Default::default(),
        }
    }

    /// A token valid for at least the refresh margin.
    pub async fn token(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.token.clone());
        }
        let (token, lifetime) = self.request().await?;
        *cached = Some(Cached {
            token: token.clone(),
            refresh_at: Instant::now() + lifetime - refresh_margin(lifetime),
        });
        Ok(token)
    }

    /// Forgets the cached token (Graph said it expired or is invalid).
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn request(&self) -> Result<(String, Duration), TokenError> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
        ];
        match &self.credential {
            CredentialSource::SecretFile(path) => {
                let secret = std::fs::read_to_string(path).map_err(|err| {
                    TokenError::Credential(format!(
                        "cannot read client secret file {}: {err}",
                        path.display()
                    ))
                })?;
                let secret = secret.trim().to_owned();
                if secret.is_empty() {
                    return Err(TokenError::Credential(format!(
                        "client secret file {} is empty",
                        path.display()
                    )));
                }
                form.push(("client_secret", secret));
            }
            CredentialSource::SecretEnv(var) => {
                let secret = std::env::var(var).unwrap_or_default();
                if secret.trim().is_empty() {
                    return Err(TokenError::Credential(format!(
                        "environment variable {var} (client secret) is not set"
                    )));
                }
                form.push(("client_secret", secret.trim().to_owned()));
            }
            CredentialSource::Certificate {
                certificate_file,
                private_key_file,
            } => {
                let assertion = client_assertion(
                    certificate_file,
                    private_key_file,
                    &self.client_id,
                    &self.token_url,
                    time::OffsetDateTime::now_utc().unix_timestamp(),
                )?;
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ));
                form.push(("client_assertion", assertion));
            }
        }
        let response = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|err| TokenError::Transient(without_url(&err)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|err| TokenError::Transient(without_url(&err)))?;
        if status.is_success() {
            let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|err| {
                TokenError::Transient(format!("token response is not valid JSON: {err}"))
            })?;
            let lifetime = parsed
                .expires_in
                .as_ref()
                .and_then(|v| {
                    v.as_u64()
                        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                })
                .unwrap_or(3599);
            return Ok((parsed.access_token, Duration::from_secs(lifetime.max(1))));
        }
        let error: TokenErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(TokenError::Transient(format!(
                "HTTP {status} {}",
                first_line(&error.error_description)
            )));
        }
        Err(TokenError::Refused {
            error: if error.error.is_empty() {
                format!("HTTP {status}")
            } else {
                error.error
            },
            description: first_line(&error.error_description).to_owned(),
        })
    }
}

/// Entra's error descriptions carry trace ids and timestamps on further lines.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// A reqwest error without the URL's query (never holds secrets here, but keeps logs short).
pub fn without_url(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    if let Some(url) = err.url() {
        text = text.replace(url.as_str(), url.path());
    }
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

#[derive(serde::Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

/// A signed client assertion (RS256) for the certificate credential, valid 10 minutes.
pub fn client_assertion(
    certificate_file: &std::path::Path,
    private_key_file: &std::path::Path,
    client_id: &str,
    token_url: &str,
    now: i64,
) -> Result<String, TokenError> {
    let cert_pem = std::fs::read(certificate_file).map_err(|err| {
        TokenError::Credential(format!(
            "cannot read certificate_file {}: {err}",
            certificate_file.display()
        ))
    })?;
    let cert_der = pem::parse_many(&cert_pem)
        .map_err(|err| {
            TokenError::Credential(format!(
                "certificate_file {} is not PEM: {err}",
                certificate_file.display()
            ))
        })?
        .into_iter()
        .find(|p| p.tag() == "CERTIFICATE")
        .ok_or_else(|| {
            TokenError::Credential(format!(
                "certificate_file {} holds no CERTIFICATE block",
                certificate_file.display()
            ))
        })?;
    let key_pem = std::fs::read(private_key_file).map_err(|err| {
        TokenError::Credential(format!(
            "cannot read private_key_file {}: {err}",
            private_key_file.display()
        ))
    })?;
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&key_pem).map_err(|err| {
        TokenError::Credential(format!(
            "private_key_file {} is not an RSA private key in PEM: {err}",
            private_key_file.display()
        ))
    })?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5t = Some(URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(cert_der.contents())));
    header.x5t_s256 = Some(URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(cert_der.contents())));
    let claims = AssertionClaims {
        aud: token_url,
        iss: client_id,
        sub: client_id,
        jti: uuid::Uuid::new_v4().hyphenated().to_string(),
        nbf: now - 60,
        iat: now,
        exp: now + 600,
    };
    jsonwebtoken::encode(&header, &claims, &key)
        .map_err(|err| TokenError::Credential(format!("cannot sign the client assertion: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_margin_is_a_tenth_capped_at_five_minutes() {
        assert_eq!(
            refresh_margin(Duration::from_secs(3599)),
            Duration::from_secs(300)
        );
        assert_eq!(
            refresh_margin(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn missing_credential_files_are_named_not_printed() {
        let err = client_assertion(
            std::path::Path::new("/nonexistent/cert.pem"),
            std::path::Path::new("/nonexistent/key.pem"),
            "client",
            "https://login/token",
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("credential: cannot read certificate_file /nonexistent/cert.pem"),
            "{err}"
        );
    }
}
