//! One tenant's pull loop: Graph pages → mapped events → the tenant's spool, each page in one
//! durable append together with the collection's cursor ([`super::cursor`]).
//!
//! Back-pressure: while the spool is more than half full (the collector is down or slow), no
//! further page is read; the cursor simply stays, so nothing is lost and the spool's
//! drop-oldest cap is never reached by a backfill.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

use super::client::{GraphClient, GraphError};
use super::config::TenantSettings;
use super::cursor::Cursor;
use super::map::{self, MapContext, Resource};
use crate::shipper::{SharedSpool, ShipperError};

/// File in the spool directory keeping Graph records that could not become events.
pub const REFUSED_FILE: &str = "graph-refused.ndjson";
/// Size at which [`REFUSED_FILE`] is rotated to `.1`.
const MAX_REFUSED_BYTES: u64 = 16 * 1024 * 1024;
/// Most resolved user names kept in memory per tenant.
const MAX_UPN_CACHE: usize = 200_000;

/// Errors that end one poll of one collection (the cursor stays where it was).
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Spool(#[from] ShipperError),
}

/// What one poll of one collection did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollSummary {
    pub pages: u64,
    /// Events appended to the spool.
    pub events: u64,
    /// Records already spooled by an earlier run (overlap re-reads).
    pub already_seen: u64,
    /// Records that could not become events (kept in [`REFUSED_FILE`]).
    pub refused: u64,
    /// The run reached its last page.
    pub complete: bool,
}

/// The pull loop state of one tenant.
pub struct TenantConnector {
    tenant: TenantSettings,
    client: GraphClient,
    spool: SharedSpool,
    agent_id: String,
    spool_max_bytes: u64,
    refused_path: PathBuf,
    upns: HashMap<String, String>,
    resolve_upns: bool,
}

impl TenantConnector {
    pub fn new(
        tenant: TenantSettings,
        client: GraphClient,
        spool: SharedSpool,
        agent_id: String,
        spool_max_bytes: u64,
    ) -> Self {
        Self {
            refused_path: tenant.spool_dir.join(REFUSED_FILE),
            resolve_upns: tenant.resolve_user_principal_names,
            tenant,
            client,
            spool,
            agent_id,
            spool_max_bytes,
            upns: HashMap::new(),
        }
    }

    pub fn client(&self) -> &GraphClient {
        &self.client
    }

    /// The collections this tenant reads.
    pub fn resources(&self) -> Vec<Resource> {
        let mut resources = vec![Resource::TroubleshootingEvents];
        if self.tenant.autopilot_events {
            resources.push(Resource::AutopilotEvents);
        }
        resources
    }

    /// The first page of a run reading `resource` from `from_ms`.
    pub fn first_url(&self, resource: Resource, from_ms: i64) -> String {
        let version = match resource {
            // Autopilot deployment events exist in the beta API only.
            Resource::AutopilotEvents => "beta",
            Resource::TroubleshootingEvents => self.tenant.api_version.as_str(),
        };
        let base = format!(
            "{}/{}/{}",
            self.tenant.graph_endpoint,
            version,
            resource.path()
        );
        if !self.tenant.server_side_filter {
            return base;
        }
        let from = OffsetDateTime::from_unix_timestamp_nanos(i128::from(from_ms) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned());
        match reqwest::Url::parse_with_params(
            &base,
            &[("$filter", format!("eventDateTime ge {from}"))],
        ) {
            Ok(url) => url.to_string(),
            Err(_) => base,
        }
    }

    /// Polls every collection once. Returns the summaries, or the first error after trying all.
    pub async fn poll(
        &mut self,
        now: OffsetDateTime,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Vec<(Resource, PollSummary)>, ConnectorError> {
        let mut summaries = Vec::new();
        let mut first_error = None;
        for resource in self.resources() {
            match self.poll_resource(resource, now, shutdown).await {
                Ok(summary) => {
                    tracing::info!(
                        tenant = %self.tenant.name,
                        resource = resource.path(),
                        pages = summary.pages,
                        events = summary.events,
                        already_seen = summary.already_seen,
                        refused = summary.refused,
                        complete = summary.complete,
                        "Graph poll done"
                    );
                    summaries.push((resource, summary));
                }
                Err(err) => {
                    tracing::error!(tenant = %self.tenant.name, resource = resource.path(), error = %err, "Graph poll failed; the next poll resumes where this one stopped");
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(summaries),
        }
    }

    async fn load_cursor(&self, resource: Resource) -> Result<Cursor, ConnectorError> {
        let stored = self.spool.source_cursor(resource.cursor_key()).await?;
        Ok(match stored {
            None => Cursor::default(),
            Some(text) => Cursor::parse(&text).unwrap_or_else(|err| {
                tracing::warn!(tenant = %self.tenant.name, resource = resource.path(), error = %err, "stored Graph cursor is unreadable; starting from the initial lookback");
                Cursor::default()
            }),
        })
    }

    async fn spool_has_room(&self) -> Result<bool, ConnectorError> {
        let stats = self.spool.stats().await?;
        Ok(stats.bytes <= self.spool_max_bytes / 2)
    }

    /// Reads one collection from its cursor to the last page (or until shutdown, back-pressure
    /// or an error), appending each page with the advanced cursor.
    pub async fn poll_resource(
        &mut self,
        resource: Resource,
        now: OffsetDateTime,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<PollSummary, ConnectorError> {
        let overlap_ms = i64::try_from(self.tenant.overlap.as_millis()).unwrap_or(i64::MAX);
        let lookback_ms =
            i64::try_from(self.tenant.initial_lookback.as_millis()).unwrap_or(i64::MAX);
        let mut cursor = self.load_cursor(resource).await?;
        if cursor.run.is_none() {
            let from = cursor.next_from(map::unix_ms(now), overlap_ms, lookback_ms);
            let first = self.first_url(resource, from);
            cursor.start_run(from, first);
        }
        let mut summary = PollSummary::default();
        let mut restarted = false;
        let what = resource.path();
        loop {
            if *shutdown.borrow() {
                return Ok(summary);
            }
            if !self.spool_has_room().await? {
                tracing::warn!(tenant = %self.tenant.name, resource = what, "spool over half full (collector unreachable or slow); pausing Graph reads");
                return Ok(summary);
            }
            let Some(run) = cursor.run.clone() else {
                summary.complete = true;
                return Ok(summary);
            };
            let page = match self.client.get_page(&run.next_link, what).await {
                Ok(page) => page,
                Err(GraphError::Refused { status, .. })
                    if !restarted
                        && matches!(status, 400 | 404 | 410)
                        && run.next_link != self.first_url(resource, run.from_ms) =>
                {
                    // Skip tokens expire: read the run again from its bound; the event ids
                    // make the re-sent part harmless.
                    tracing::warn!(tenant = %self.tenant.name, resource = what, status, "Graph refused the stored nextLink; restarting the run from its lower bound");
                    restarted = true;
                    cursor.seen.extend(run.seen);
                    let first = self.first_url(resource, run.from_ms);
                    cursor.start_run(run.from_ms, first);
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            summary.pages += 1;
            if self.resolve_upns && resource == Resource::TroubleshootingEvents {
                self.resolve_user_names(&page.value).await;
            }
            let ctx = MapContext {
                agent_id: &self.agent_id,
                directory_id: &self.tenant.directory_id,
                upns: Some(&self.upns),
            };
            let mut items = Vec::with_capacity(page.value.len());
            let mut refused = Vec::new();
            for record in &page.value {
                match map::map_record(resource, &ctx, record) {
                    Ok(mapped) => {
                        if cursor.accept(&mapped.event_id, mapped.at_ms, run.from_ms, overlap_ms) {
                            items.push(mapped.item);
                        } else {
                            summary.already_seen += 1;
                        }
                    }
                    Err(reason) => refused.push((reason.to_string(), record)),
                }
            }
            if !refused.is_empty() {
                summary.refused += refused.len() as u64;
                self.keep_refused(resource, &refused);
            }
            summary.events += items.len() as u64;
            cursor.page_done(page.next_link, overlap_ms);
            self.spool
                .append(
                    items,
                    Some((resource.cursor_key().to_owned(), cursor.to_json())),
                )
                .await?;
        }
    }

    /// Writes refused records aside (never silently dropped) and logs each with its reason.
    fn keep_refused(&self, resource: Resource, refused: &[(String, &Value)]) {
        let at = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        let mut text = String::new();
        for (reason, record) in refused {
            let id = record.get("id").map(|v| v.to_string()).unwrap_or_default();
            tracing::warn!(tenant = %self.tenant.name, resource = resource.path(), id = %id, reason = %reason, "Graph record cannot become an event; kept in {REFUSED_FILE}");
            let line = serde_json::json!({
                "at": at,
                "resource": resource.path(),
                "reason": reason,
                "record": record,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        if let Err(err) = append_rotating(&self.refused_path, text.as_bytes()) {
            tracing::error!(path = %self.refused_path.display(), error = %err, "cannot write refused Graph records");
        }
    }

    /// Looks up the UPN of user ids not resolved yet (`GET /users/{id}`, User.Read.All). A 403
    /// turns the lookup off for this process with one warning: events then carry the user id
    /// only, and the analyzer cannot join them with agents' events by UPN.
    async fn resolve_user_names(&mut self, records: &[Value]) {
        if self.upns.len() > MAX_UPN_CACHE {
            self.upns.clear();
        }
        for id in map::user_ids(records) {
            if !self.resolve_upns {
                return;
            }
            if self.upns.contains_key(&id) {
                continue;
            }
            let Ok(mut url) = reqwest::Url::parse(&self.tenant.graph_endpoint) else {
                return;
            };
            if let Ok(mut segments) = url.path_segments_mut() {
                segments
                    .pop_if_empty()
                    .extend(["v1.0", "users", id.as_str()]);
            }
            url.query_pairs_mut()
                .append_pair("$select", "id,userPrincipalName");
            match self.client.get_optional(url.as_str(), "users/{id}").await {
                Ok(Some(user)) => {
                    let upn = user
                        .get("userPrincipalName")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned();
                    self.upns.insert(id, upn);
                }
                Ok(None) => {
                    self.upns.insert(id, String::new());
                }
                Err(GraphError::Refused { status: 403, .. }) => {
                    tracing::warn!(tenant = %self.tenant.name, "cannot read users (grant User.Read.All to resolve user principal names); events keep the Entra user id only");
                    self.resolve_upns = false;
                }
                Err(err) => {
                    tracing::warn!(tenant = %self.tenant.name, error = %err, "user lookup failed; the event keeps the Entra user id only");
                }
            }
        }
    }
}

fn append_rotating(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > MAX_REFUSED_BYTES) {
        let mut rotated = path.as_os_str().to_owned();
        rotated.push(".1");
        std::fs::rename(path, rotated)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}
