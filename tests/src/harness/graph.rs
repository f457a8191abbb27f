//! A local HTTP server playing Microsoft Graph and the Entra token endpoint, for the Graph
//! connector's end-to-end tests. Responses are shaped like Microsoft's documentation examples:
//!
//! - `POST /{directory}/oauth2/v2.0/token` (client credentials grant): checks the client id,
//!   the scope `{graph}/.default` and the credential — the client secret, or a JWT client
//!   assertion verified with the registered certificate's public key (RS256, `aud` = the token
//!   URL, `iss` = `sub` = client id, `x5t` present); answers `{"token_type":"Bearer",
//!   "expires_in":..,"ext_expires_in":..,"access_token":..}` or Entra's error shape
//!   (`invalid_client`, `AADSTS7000215`).
//! - `GET /{v1.0|beta}/deviceManagement/troubleshootingEvents` and
//!   `GET /beta/deviceManagement/autopilotEvents`: the token's tenant's records, filtered by
//!   `$filter=eventDateTime ge <time>`, `page_size` per page with `@odata.nextLink` carrying a
//!   `$skiptoken`, and `@odata.context`.
//! - `GET /v1.0/users/{id}`: `{"id","userPrincipalName"}` or 404 `Request_ResourceNotFound`.
//!
//! Faults to inject: a page answering 429 with `Retry-After` once, revoking a tenant's tokens
//! after N requests (Graph then answers 401 `InvalidAuthenticationToken`), holding a page's
//! answer until released (to kill the connector mid-run). Every Graph request is logged.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::Notify;

/// How a tenant's app proves itself.
#[derive(Debug, Clone)]
pub enum FakeCredential {
    Secret(String),
    /// PEM public key of the registered certificate.
    Certificate(Vec<u8>),
}

/// One Entra tenant with its app registration and its Intune data.
#[derive(Debug, Clone)]
pub struct FakeTenant {
    pub directory_id: String,
    pub client_id: String,
    pub credential: FakeCredential,
    pub token_lifetime_secs: u64,
    pub troubleshooting: Vec<Value>,
    pub autopilot: Vec<Value>,
    /// Entra user id → UPN.
    pub users: HashMap<String, String>,
}

/// One logged Graph request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub directory_id: String,
    /// `troubleshootingEvents`, `autopilotEvents` or `users`.
    pub resource: String,
    /// Page index (0-based) for collections.
    pub page: usize,
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    tenants: HashMap<String, FakeTenant>,
    /// token → directory id.
    tokens: HashMap<String, String>,
    token_requests: HashMap<String, u32>,
    /// (directory, resource, page) answered 429 once.
    throttle_once: HashSet<(String, String, usize)>,
    /// directory → revoke its tokens when its Graph request count reaches this.
    revoke_at: HashMap<String, usize>,
    graph_requests: HashMap<String, usize>,
    hold: Option<(String, String, usize)>,
    log: Vec<Logged>,
    next_token: u64,
}

/// The running fake.
pub struct FakeGraph {
    pub addr: SocketAddr,
    pub page_size: usize,
    inner: Arc<Mutex<Inner>>,
    release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct AppState {
    inner: Arc<Mutex<Inner>>,
    release: Arc<Notify>,
    base: String,
    page_size: usize,
}

impl FakeGraph {
    /// Starts the server on a free loopback port.
    pub async fn start(tenants: Vec<FakeTenant>, page_size: usize) -> FakeGraph {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake Graph");
        let addr = listener.local_addr().expect("local addr");
        let inner = Arc::new(Mutex::new(Inner {
            tenants: tenants
                .into_iter()
                .map(|t| (t.directory_id.clone(), t))
                .collect(),
            ..Inner::default()
        }));
        let release = Arc::new(Notify::new());
        let state = AppState {
            inner: inner.clone(),
            release: release.clone(),
            base: format!("http://{addr}"),
            page_size,
        };
        let app = Router::new()
            .route("/{directory}/oauth2/v2.0/token", post(token))
            .route("/{version}/deviceManagement/{resource}", get(collection))
            .route("/{version}/users/{id}", get(user))
            .with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGraph {
            addr,
            page_size,
            inner,
            release,
            task,
        }
    }

    /// `http://127.0.0.1:port` (both the authority and the Graph endpoint).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers page `page` of `resource` for `directory` with 429 (`Retry-After: 1`) once.
    pub fn throttle_once(&self, directory: &str, resource: &str, page: usize) {
        self.lock()
            .throttle_once
            .insert((directory.into(), resource.into(), page));
    }

    /// Invalidates every token of `directory` once it made `n` Graph requests.
    pub fn revoke_tokens_after(&self, directory: &str, n: usize) {
        self.lock().revoke_at.insert(directory.into(), n);
    }

    /// Holds the answer to page `page` of `resource` until [`FakeGraph::release`].
    pub fn hold(&self, directory: &str, resource: &str, page: usize) {
        self.lock().hold = Some((directory.into(), resource.into(), page));
    }

    /// Lets held requests go (and stops holding).
    pub fn release(&self) {
        self.lock().hold = None;
        self.release.notify_waiters();
    }

    /// Adds records to a tenant's troubleshooting events.
    pub fn add_troubleshooting(&self, directory: &str, records: Vec<Value>) {
        if let Some(t) = self.lock().tenants.get_mut(directory) {
            t.troubleshooting.extend(records);
        }
    }

    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    /// How often page `page` of `resource` was requested for `directory` (any answer).
    pub fn hits(&self, directory: &str, resource: &str, page: usize) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|l| l.directory_id == directory && l.resource == resource && l.page == page)
            .count()
    }

    pub fn token_requests(&self, directory: &str) -> u32 {
        self.lock()
            .token_requests
            .get(directory)
            .copied()
            .unwrap_or(0)
    }
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
                    "request-id": "5f6d7c2e-0000-4000-8000-000000000000",
                    "client-request-id": "5f6d7c2e-0000-4000-8000-000000000000"
                }
            }
        })),
    )
        .into_response()
}

fn entra_error(error: &str, description: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({
            "error": error,
            "error_description": format!("{description}\r\nTrace ID: 00000000-0000-0000-0000-000000000000\r\nCorrelation ID: 00000000-0000-0000-0000-000000000000\r\nTimestamp: 2025-01-01 00:00:00Z"),
            "error_codes": [7000215],
            "timestamp": "2025-01-01 00:00:00Z",
            "trace_id": "00000000-0000-0000-0000-000000000000",
            "correlation_id": "00000000-0000-0000-0000-000000000000"
        })),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct AssertionClaims {
    aud: String,
    iss: String,
    sub: String,
}

async fn token(
    State(state): State<AppState>,
    Path(directory): Path<String>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let mut inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
    *inner.token_requests.entry(directory.clone()).or_default() += 1;
    let Some(tenant) = inner.tenants.get(&directory).cloned() else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_request", "error_description": "AADSTS90002: Tenant not found."})),
        )
            .into_response();
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if field("grant_type") != "client_credentials" {
        return entra_error(
            "unsupported_grant_type",
            "AADSTS70003: unsupported grant type",
        );
    }
    if field("client_id") != tenant.client_id {
        return entra_error(
            "unauthorized_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    if field("scope") != format!("{}/.default", state.base) {
        return entra_error(
            "invalid_scope",
            "AADSTS70011: The provided value for scope is not valid.",
        );
    }
    let token_url = format!("{}/{}/oauth2/v2.0/token", state.base, directory);
    let ok = match &tenant.credential {
        FakeCredential::Secret(secret) => field("client_secret") == secret,
        FakeCredential::Certificate(public_pem) => {
            field("client_assertion_type")
                == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                && verify_assertion(
                    field("client_assertion"),
                    public_pem,
                    &token_url,
                    &tenant.client_id,
                )
        }
    };
    if !ok {
        return entra_error(
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
        );
    }
    inner.next_token += 1;
    let access_token = format!("eyJ0eXAiOiJKV1Qi.fake-{directory}-{}", inner.next_token);
    inner.tokens.insert(access_token.clone(), directory);
    axum::Json(json!({
        "token_type": "Bearer",
        "expires_in": tenant.token_lifetime_secs,
        "ext_expires_in": tenant.token_lifetime_secs,
        "access_token": access_token,
    }))
    .into_response()
}

fn verify_assertion(jwt: &str, public_pem: &[u8], token_url: &str, client_id: &str) -> bool {
    let Ok(header) = jsonwebtoken::decode_header(jwt) else {
        return false;
    };
    if header.alg != jsonwebtoken::Algorithm::RS256 || header.x5t.is_none() {
        return false;
    }
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(public_pem) else {
        return false;
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[token_url]);
    validation.set_issuer(&[client_id]);
    match jsonwebtoken::decode::<AssertionClaims>(jwt, &key, &validation) {
        Ok(data) => {
            data.claims.sub == client_id
                && data.claims.iss == client_id
                && data.claims.aud == token_url
        }
        Err(_) => false,
    }
}

/// The tenant of the bearer token, if it is a live one.
fn authorize(inner: &Inner, headers: &HeaderMap) -> Option<String> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    inner.tokens.get(token).cloned()
}

/// What Graph answers for an expired or revoked token.
fn unauthorized() -> Response {
    graph_error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        "Access token has expired or is not yet valid.",
    )
}

/// Counts a Graph request of `directory` and revokes its tokens when due.
fn count_request(inner: &mut Inner, directory: &str) {
    let n = {
        let n = inner
            .graph_requests
            .entry(directory.to_owned())
            .or_default();
        *n += 1;
        *n
    };
    if inner.revoke_at.get(directory) == Some(&n) {
        inner.tokens.retain(|_, d| d != directory);
        inner.revoke_at.remove(directory);
    }
}

fn event_time(record: &Value) -> Option<OffsetDateTime> {
    record
        .get("eventDateTime")
        .and_then(Value::as_str)
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

async fn collection(
    State(state): State<AppState>,
    Path((version, resource)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let page: usize = query
        .get("$skiptoken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (directory, hold) = {
        let mut inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(directory) = authorize(&inner, &headers) else {
            inner.log.push(Logged {
                directory_id: String::new(),
                resource: resource.clone(),
                page,
                status: 401,
            });
            return unauthorized();
        };
        count_request(&mut inner, &directory);
        let key = (directory.clone(), resource.clone(), page);
        if inner.throttle_once.remove(&key) {
            inner.log.push(Logged {
                directory_id: directory,
                resource,
                page,
                status: 429,
            });
            let mut response = graph_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Too many requests from Identifier:00000000-0000-0000-0000-000000000000 under category:throttled.",
            );
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            return response;
        }
        inner.log.push(Logged {
            directory_id: directory.clone(),
            resource: resource.clone(),
            page,
            status: 200,
        });
        let hold = inner.hold.as_ref() == Some(&key);
        (directory, hold)
    };
    if hold {
        // Registered before re-checking, so a release in between is not missed.
        let notified = state.release.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let still_held = state
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hold
            .is_some();
        if still_held {
            notified.await;
        }
    }
    let inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
    let Some(tenant) = inner.tenants.get(&directory) else {
        return graph_error(StatusCode::NOT_FOUND, "ResourceNotFound", "no tenant");
    };
    let (records, odata_type) = match (version.as_str(), resource.as_str()) {
        ("v1.0" | "beta", "troubleshootingEvents") => (
            &tenant.troubleshooting,
            "microsoft.graph.enrollmentTroubleshootingEvent",
        ),
        ("beta", "autopilotEvents") => (
            &tenant.autopilot,
            "microsoft.graph.deviceManagementAutopilotEvent",
        ),
        _ => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("Resource not found for the segment '{resource}'."),
            );
        }
    };
    let lower = match query.get("$filter") {
        None => None,
        Some(filter) => match filter
            .strip_prefix("eventDateTime ge ")
            .and_then(|t| OffsetDateTime::parse(t.trim(), &Rfc3339).ok())
        {
            Some(t) => Some(t),
            None => {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &format!("Invalid filter clause: {filter}"),
                );
            }
        },
    };
    // Records with an unreadable time are served too (the connector must cope with them).
    let selected: Vec<&Value> = records
        .iter()
        .filter(|r| match (lower, event_time(r)) {
            (Some(lower), Some(at)) => at >= lower,
            _ => true,
        })
        .collect();
    let start = page * state.page_size;
    let end = (start + state.page_size).min(selected.len());
    let value: Vec<Value> = selected
        .get(start..end)
        .unwrap_or(&[])
        .iter()
        .map(|r| {
            let mut r = (*r).clone();
            if let Some(map) = r.as_object_mut() {
                map.entry("@odata.type")
                    .or_insert_with(|| json!(format!("#{odata_type}")));
            }
            r
        })
        .collect();
    let mut body = json!({
        "@odata.context": format!("{}/{version}/$metadata#deviceManagement/{resource}", state.base),
        "value": value,
    });
    if end < selected.len() {
        let mut next = reqwest_free_url(&state.base, &version, &resource, &query);
        next.push_str(&format!("$skiptoken={}", page + 1));
        body["@odata.nextLink"] = json!(next);
    }
    axum::Json(body).into_response()
}

/// The nextLink of a page: same path and filter, plus `$skiptoken`.
fn reqwest_free_url(
    base: &str,
    version: &str,
    resource: &str,
    query: &HashMap<String, String>,
) -> String {
    let mut url = format!("{base}/{version}/deviceManagement/{resource}?");
    if let Some(filter) = query.get("$filter") {
        url.push_str("$filter=");
        for byte in filter.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                    url.push(byte as char)
                }
                _ => url.push_str(&format!("%{byte:02X}")),
            }
        }
        url.push('&');
    }
    url
}

async fn user(
    State(state): State<AppState>,
    Path((_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut inner = state.inner.lock().unwrap_or_else(|e| e.into_inner());
    let Some(directory) = authorize(&inner, &headers) else {
        inner.log.push(Logged {
            directory_id: String::new(),
            resource: "users".into(),
            page: 0,
            status: 401,
        });
        return unauthorized();
    };
    count_request(&mut inner, &directory);
    inner.log.push(Logged {
        directory_id: directory.clone(),
        resource: "users".into(),
        page: 0,
        status: 200,
    });
    match inner
        .tenants
        .get(&directory)
        .and_then(|t| t.users.get(&id))
    {
        Some(upn) => axum::Json(json!({
            "@odata.context": format!("{}/v1.0/$metadata#users(id,userPrincipalName)/$entity", state.base),
            "id": id,
            "userPrincipalName": upn,
        }))
        .into_response(),
        None => graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            &format!("Resource '{id}' does not exist or one of its queried reference-property objects are not present."),
        ),
    }
}
