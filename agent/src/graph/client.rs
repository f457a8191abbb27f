//! Microsoft Graph over HTTPS for one tenant: paced requests, bearer tokens, throttling.
//!
//! - **Pacing** (the tenant's rate limit): requests of one tenant start at least
//!   `1 / requests_per_second` apart. Graph throttles per application and tenant, so pacing
//!   ourselves keeps one tenant's backfill from spending another's budget. A few lines of
//!   `tokio::time` rather than a rate-limiting crate: one limiter per tenant, no bursts wanted.
//! - **Throttling**: `429` and `503` (and other 5xx, transport errors) are retried after the
//!   `Retry-After` the service sent (seconds or an HTTP date, capped at 10 minutes) or, without
//!   one, an exponential backoff with full jitter; at most `max_retries` times per request.
//! - **Tokens**: a `401` makes the provider forget its token and the request is retried once
//!   with a fresh one (tokens can be revoked or expire earlier than announced).
//! - **Safety**: `@odata.nextLink` is followed only on the configured Graph host, so a token is
//!   never sent anywhere else.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::auth::{TokenError, TokenProvider, without_url};
use super::config::TenantSettings;
use crate::shipper::Backoff;

/// The longest `Retry-After` honoured; beyond it we wait this long and try again.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Errors of one Graph request after retries.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The service kept throttling or failing; the cursor stays, the next poll resumes.
    #[error("Graph {what}: still failing after {attempts} attempts: {last}")]
    Exhausted {
        what: String,
        attempts: u32,
        last: String,
    },
    /// A permanent refusal (400, 403, 404 ...): a configuration or permission problem.
    #[error("Graph {what}: HTTP {status}: {code}: {message}")]
    Refused {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The answer is not a Graph collection page.
    #[error("Graph {what}: {reason}")]
    Malformed { what: String, reason: String },
    /// `@odata.nextLink` points to another host than the configured Graph endpoint.
    #[error("Graph returned a nextLink to another host ({0}); refusing to send the token there")]
    ForeignLink(String),
}

/// One page of a Graph collection.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub value: Vec<Value>,
    pub next_link: Option<String>,
}

/// Counters of one tenant's Graph traffic.
#[derive(Debug, Default)]
pub struct GraphStats {
    pub requests: AtomicU64,
    pub throttled: AtomicU64,
    pub retries: AtomicU64,
    pub unauthorized: AtomicU64,
}

/// Graph client of one tenant.
pub struct GraphClient {
    http: reqwest::Client,
    tokens: TokenProvider,
    base: reqwest::Url,
    spacing: Duration,
    max_retries: u32,
    next_slot: Mutex<Instant>,
    pub stats: Arc<GraphStats>,
}

impl GraphClient {
    pub fn new(http: reqwest::Client, tenant: &TenantSettings) -> Result<Self, GraphError> {
        let base =
            reqwest::Url::parse(&tenant.graph_endpoint).map_err(|err| GraphError::Malformed {
                what: "graph_endpoint".into(),
                reason: err.to_string(),
            })?;
        Ok(Self {
            tokens: TokenProvider::new(http.clone(), tenant),
            http,
            base,
            spacing: tenant.request_spacing,
            max_retries: tenant.max_retries,
            next_slot: Mutex::new(Instant::now()),
            stats: Arc::new(GraphStats::default()),
        })
    }

    /// The token provider (its request counter is useful in logs and tests).
    pub fn tokens(&self) -> &TokenProvider {
        &self.tokens
    }

    /// Whether `link` may receive our token: same scheme, host and port as the Graph endpoint.
    pub fn same_origin(&self, link: &reqwest::Url) -> bool {
        link.scheme() == self.base.scheme()
            && link.host_str() == self.base.host_str()
            && link.port_or_known_default() == self.base.port_or_known_default()
    }

    /// Waits for this tenant's next request slot.
    async fn pace(&self) {
        let wait_until = {
            let mut next = self.next_slot.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.spacing;
            slot
        };
        tokio::time::sleep_until(wait_until).await;
    }

    /// GETs a collection page (`value` + `@odata.nextLink`).
    pub async fn get_page(&self, url: &str, what: &str) -> Result<Page, GraphError> {
        let body = self.get_json(url, what).await?;
        let Value::Object(mut map) = body else {
            return Err(GraphError::Malformed {
                what: what.into(),
                reason: "the answer is not a JSON object".into(),
            });
        };
        let value = match map.remove("value") {
            Some(Value::Array(items)) => items,
            _ => {
                return Err(GraphError::Malformed {
                    what: what.into(),
                    reason: "the answer has no `value` array".into(),
                });
            }
        };
        let next_link = match map.remove("@odata.nextLink") {
            Some(Value::String(link)) if !link.is_empty() => Some(link),
            Some(Value::Null) | None => None,
            Some(_) => {
                return Err(GraphError::Malformed {
                    what: what.into(),
                    reason: "`@odata.nextLink` is not a string".into(),
                });
            }
        };
        Ok(Page { value, next_link })
    }

    /// GETs a JSON document; `Ok(None)` for 404 (used for optional lookups).
    pub async fn get_optional(&self, url: &str, what: &str) -> Result<Option<Value>, GraphError> {
        match self.get_json(url, what).await {
            Ok(value) => Ok(Some(value)),
            Err(GraphError::Refused { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn get_json(&self, url: &str, what: &str) -> Result<Value, GraphError> {
        let parsed = reqwest::Url::parse(url).map_err(|err| GraphError::Malformed {
            what: what.into(),
            reason: format!("invalid URL: {err}"),
        })?;
        if !self.same_origin(&parsed) {
            return Err(GraphError::ForeignLink(
                parsed.host_str().unwrap_or("?").to_owned(),
            ));
        }
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut refreshed = false;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            self.pace().await;
            let token = self.tokens.token().await?;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let sent = self
                .http
                .get(parsed.clone())
                .bearer_auth(&token)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await;
            let (delay, last) = match sent {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        let bytes =
                            response
                                .bytes()
                                .await
                                .map_err(|err| GraphError::Malformed {
                                    what: what.into(),
                                    reason: without_url(&err),
                                })?;
                        return serde_json::from_slice(&bytes).map_err(|err| {
                            GraphError::Malformed {
                                what: what.into(),
                                reason: format!("the answer is not valid JSON: {err}"),
                            }
                        });
                    }
                    let retry_after = retry_after(response.headers());
                    let body = response.bytes().await.unwrap_or_default();
                    let (code, message) = graph_error(&body);
                    match status.as_u16() {
                        401 if !refreshed => {
                            // Expired or revoked early: one retry with a fresh token.
                            self.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
                            tracing::info!(what, code = %code, "Graph refused the token; requesting a new one");
                            self.tokens.invalidate().await;
                            refreshed = true;
                            attempts -= 1;
                            continue;
                        }
                        429 | 500 | 502 | 503 | 504 => {
                            if matches!(status.as_u16(), 429 | 503) {
                                self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                            }
                            let delay = retry_after
                                .unwrap_or_else(|| backoff.next_delay(&mut rand::thread_rng()));
                            (delay, format!("HTTP {status}: {code}: {message}"))
                        }
                        _ => {
                            return Err(GraphError::Refused {
                                what: what.into(),
                                status: status.as_u16(),
                                code,
                                message,
                            });
                        }
                    }
                }
                Err(err) => {
                    let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..250));
                    (
                        backoff.next_delay(&mut rand::thread_rng()) + jitter,
                        without_url(&err),
                    )
                }
            };
            if attempts > self.max_retries {
                return Err(GraphError::Exhausted {
                    what: what.into(),
                    attempts,
                    last,
                });
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(what, attempt = attempts, delay_ms = delay.as_millis() as u64, error = %last, "Graph request will be retried");
            tokio::time::sleep(delay).await;
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110), capped.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(value, &format)
        .ok()?
        .assume_utc();
    let delta = at - time::OffsetDateTime::now_utc();
    Some(
        Duration::try_from(delta)
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// Graph's error body `{"error":{"code","message"}}`, best effort.
fn graph_error(body: &[u8]) -> (String, String) {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = &value["error"];
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let code = text(&error["code"]);
    let message = text(&error["message"]);
    if code.is_empty() && message.is_empty() {
        let raw = String::from_utf8_lossy(body);
        return (
            "unknown".into(),
            crate::sources::truncate_bytes(raw.trim(), 200),
        );
    }
    (code, crate::sources::truncate_bytes(&message, 500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_dates_and_caps() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert("retry-after", "86400".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(MAX_RETRY_AFTER));
        headers.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn graph_error_bodies() {
        let (code, message) = graph_error(
            br#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation."}}"#,
        );
        assert_eq!(code, "Authorization_RequestDenied");
        assert_eq!(
            message,
            "Insufficient privileges to complete the operation."
        );
        assert_eq!(
            graph_error(b"<html>bad gateway</html>"),
            ("unknown".to_owned(), "<html>bad gateway</html>".to_owned())
        );
    }
}
