//! `fleetpulse-agent run`: sources on a timer -> spool -> shipper, until SIGTERM/Ctrl-C.
//!
//! Sources: the NDJSON import directory everywhere (`sources.import_ndjson`); with the Windows
//! tool set (chosen at run time, `collect.platform`) the event log channels (DM admin, device
//! registration, Autopilot), `dsregcmd /status`, the enrollment registry and the TPM; with the
//! macOS one `profiles`. Each poll's items are appended in one durable write together with the source's
//! new read position, so a crash at any moment neither loses nor repeats a record.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use fleetpulse_proto::v1::{Platform, TelemetryItem, telemetry_item};
use tokio::sync::watch;

use crate::collect::{CollectPlatform, CollectSettings};
use crate::config::Settings;
use crate::shipper::client::{self, this_platform};
use crate::shipper::{SharedSpool, Shipper, ShipperError, ShipperStats, run_heartbeats};
use crate::sources::{SourceContext, ndjson};
use crate::spool::Spool;
use crate::spool::deadletter::DeadLetter;
use crate::state::AgentState;

/// Most lines appended per spool write while importing a large file.
const IMPORT_CHUNK_LINES: usize = 1000;
/// Most bytes read from an import file per chunk.
const IMPORT_CHUNK_BYTES: usize = 1024 * 1024;

/// Imports NDJSON files dropped into a directory. Each `*.ndjson` file is read as it grows
/// (complete lines only); its position is the spool cursor `ndjson:<file name>`.
#[derive(Debug, Clone)]
pub struct NdjsonImport {
    dir: PathBuf,
    chunk_bytes: usize,
}

impl NdjsonImport {
    /// An import of `dir` appending at most about `chunk_bytes` of input per spool write
    /// (callers pass the spool's segment size, so one append always fits the spool's cap).
    pub fn new(dir: PathBuf, chunk_bytes: u64) -> Self {
        let chunk_bytes = usize::try_from(chunk_bytes)
            .unwrap_or(IMPORT_CHUNK_BYTES)
            .clamp(4096, IMPORT_CHUNK_BYTES);
        Self { dir, chunk_bytes }
    }

    /// Imports what is new in every file; returns the number of items appended.
    pub async fn poll(
        &self,
        spool: &SharedSpool,
        ctx: &SourceContext,
    ) -> Result<u64, ShipperError> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "ndjson") && p.is_file())
                .collect(),
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), error = %err, "cannot list the NDJSON import directory");
                return Ok(0);
            }
        };
        files.sort();
        let mut total = 0;
        for path in files {
            total += self.import_file(&path, spool, ctx).await?;
        }
        Ok(total)
    }

    async fn import_file(
        &self,
        path: &Path,
        spool: &SharedSpool,
        ctx: &SourceContext,
    ) -> Result<u64, ShipperError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let key = format!("ndjson:{name}");
        let mut offset: u64 = spool
            .source_cursor(&key)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut imported = 0;
        loop {
            let chunk = match read_complete_lines(path, offset, self.chunk_bytes) {
                Ok(chunk) => chunk,
                Err(err) => {
                    tracing::warn!(file = %path.display(), error = %err, "cannot read import file");
                    return Ok(imported);
                }
            };
            let Some((text, next, restarted)) = chunk else {
                return Ok(imported);
            };
            if restarted {
                tracing::warn!(file = %path.display(), "import file shrank (replaced?): reading it from the start");
            }
            let chunk_offset = if restarted { 0 } else { offset };
            let mut items = Vec::new();
            for (index, line) in text.split('\n').enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match ndjson::parse(line, ctx) {
                    Ok(parsed) => items.extend(
                        parsed
                            .items
                            .into_iter()
                            .map(|item| with_agent(item, &ctx.agent_id)),
                    ),
                    Err(err) => tracing::warn!(
                        file = %path.display(),
                        line_in_chunk = index + 1,
                        chunk_byte_offset = chunk_offset,
                        error = %err,
                        "skipping an invalid NDJSON line"
                    ),
                }
            }
            imported += items.len() as u64;
            spool
                .append(items, Some((key.clone(), next.to_string())))
                .await?;
            offset = next;
        }
    }
}

/// Reads up to [`IMPORT_CHUNK_LINES`] complete lines (about `chunk_bytes`, but always at least
/// one line of up to [`IMPORT_CHUNK_BYTES`]) from `offset`. Returns the text, the offset after
/// it, and whether the file had shrunk below `offset` (then it is read from 0).
fn read_complete_lines(
    path: &Path,
    offset: u64,
    chunk_bytes: usize,
) -> std::io::Result<Option<(String, u64, bool)>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let (offset, restarted) = if len < offset {
        (0, true)
    } else {
        (offset, false)
    };
    if len == offset {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    file.take(IMPORT_CHUNK_BYTES as u64).read_to_end(&mut buf)?;
    let mut end = 0;
    let mut lines = 0;
    for (i, byte) in buf.iter().enumerate() {
        if *byte == b'\n' {
            if end > 0 && i + 1 > chunk_bytes {
                break;
            }
            end = i + 1;
            lines += 1;
            if lines == IMPORT_CHUNK_LINES {
                break;
            }
        }
    }
    if end == 0 {
        if buf.len() == IMPORT_CHUNK_BYTES {
            // One line longer than 1 MiB: far beyond any valid item; skip it whole.
            tracing::warn!(file = %path.display(), offset, "skipping a line longer than 1 MiB");
            return Ok(Some((String::new(), offset + buf.len() as u64, restarted)));
        }
        return Ok(None); // an incomplete last line: wait for its newline
    }
    buf.truncate(end);
    let text = match String::from_utf8(buf) {
        Ok(text) => text,
        Err(err) => {
            tracing::warn!(file = %path.display(), offset, "import chunk is not valid UTF-8; invalid lines are skipped");
            String::from_utf8_lossy(err.as_bytes()).into_owned()
        }
    };
    Ok(Some((text, offset + end as u64, restarted)))
}

/// Sets the item's agent id to ours: the collector refuses items naming another agent.
fn with_agent(mut item: TelemetryItem, agent_id: &str) -> TelemetryItem {
    match &mut item.kind {
        Some(telemetry_item::Kind::Event(e)) => e.agent_id = agent_id.to_owned(),
        Some(telemetry_item::Kind::State(s)) => s.agent_id = agent_id.to_owned(),
        Some(telemetry_item::Kind::Heartbeat(h)) => h.agent_id = agent_id.to_owned(),
        None => {}
    }
    item
}

fn context(state: &AgentState, platform: Platform) -> SourceContext {
    SourceContext {
        agent_id: state.agent_id.clone(),
        device_id: state.device_id.clone(),
        platform,
        now: time::OffsetDateTime::now_utc(),
    }
}

/// The platform the collected data describes: the tool set's, else this binary's.
fn collected_platform(collect: &CollectSettings) -> Platform {
    match collect.platform {
        CollectPlatform::Windows => Platform::Windows,
        CollectPlatform::Macos => Platform::Macos,
        CollectPlatform::None => this_platform(),
    }
}

/// Collects from the OS tools chosen at run time (`collect.platform`).
async fn poll_platform(
    spool: &SharedSpool,
    state: &AgentState,
    collect: &CollectSettings,
) -> Result<(), ShipperError> {
    match collect.platform {
        CollectPlatform::Windows => poll_windows(spool, state, collect).await,
        CollectPlatform::Macos => poll_macos(spool, state, collect).await,
        CollectPlatform::None => Ok(()),
    }
}

/// The spool cursor holding the highest record id read per event log channel.
const EVENTLOG_CURSOR: &str = "eventlog";

/// Windows: each channel's new records (appended with the channel's new cursor in one durable
/// write), then the dsregcmd, registry and TPM snapshots. Tools run on the blocking pool.
async fn poll_windows(
    spool: &SharedSpool,
    state: &AgentState,
    collect: &CollectSettings,
) -> Result<(), ShipperError> {
    use crate::sources::{event_xml, shim};
    let ctx = context(state, Platform::Windows);
    let stored = spool.source_cursor(EVENTLOG_CURSOR).await?;
    let channels = stored
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let mut cursor = event_xml::Cursor { channels };
    for channel in &collect.channels {
        let (tools, channel_name, ctx2, cursor2) = (
            collect.tools.clone(),
            channel.clone(),
            ctx.clone(),
            cursor.clone(),
        );
        let result = tokio::task::spawn_blocking(move || {
            shim::collect_events(&tools, &channel_name, &ctx2, &cursor2)
        })
        .await
        .map_err(|e| ShipperError::Join(e.to_string()))?;
        match result {
            Ok((parsed, next)) => {
                cursor = next;
                let value = serde_json::to_string(&cursor.channels).unwrap_or_default();
                spool
                    .append(parsed.items, Some((EVENTLOG_CURSOR.to_owned(), value)))
                    .await?;
            }
            Err(err) => {
                tracing::warn!(channel = %channel, error = %err, "event log collection failed")
            }
        }
    }
    let (tools, ctx2) = (collect.tools.clone(), ctx.clone());
    let snapshots = tokio::task::spawn_blocking(move || {
        [
            shim::collect_dsregcmd(&tools, &ctx2),
            shim::collect_registry(&tools, &ctx2),
            shim::collect_tpm(&tools, &ctx2),
        ]
    })
    .await
    .map_err(|e| ShipperError::Join(e.to_string()))?;
    let mut items = Vec::new();
    for result in snapshots {
        match result {
            Ok(parsed) => items.extend(parsed.items),
            Err(err) => tracing::warn!(error = %err, "state collection failed"),
        }
    }
    if !items.is_empty() {
        spool.append(items, None).await?;
    }
    poll_mdm_report(spool, &ctx, collect).await
}

/// The spool cursor holding when the MDM diagnostics report was last written (unix seconds).
const MDM_REPORT_CURSOR: &str = "mdm_report";

/// The MDM diagnostics report, at most once per `collect.mdm_report_interval_secs`: the tool
/// takes seconds to tens of seconds and writes a folder of files, too heavy for every poll.
/// The attempt time is kept in the spool (durable, with the report's snapshot when there is
/// one), so restarts do not rerun it and a missing tool is not retried every poll.
async fn poll_mdm_report(
    spool: &SharedSpool,
    ctx: &SourceContext,
    collect: &CollectSettings,
) -> Result<(), ShipperError> {
    let now = ctx.now.unix_timestamp();
    let last = spool
        .source_cursor(MDM_REPORT_CURSOR)
        .await?
        .and_then(|value| value.parse::<i64>().ok());
    let interval = i64::try_from(collect.mdm_report_interval.as_secs()).unwrap_or(i64::MAX);
    if last.is_some_and(|last| (0..interval).contains(&(now - last))) {
        return Ok(());
    }
    let (tools, ctx2) = (collect.tools.clone(), ctx.clone());
    let result = tokio::task::spawn_blocking(move || {
        crate::sources::shim::collect_mdm_diagnostics(&tools, &ctx2)
    })
    .await
    .map_err(|e| ShipperError::Join(e.to_string()))?;
    let items = match result {
        Ok(parsed) => parsed.items,
        Err(err) => {
            tracing::warn!(error = %err, "MDM diagnostics report collection failed");
            Vec::new()
        }
    };
    spool
        .append(items, Some((MDM_REPORT_CURSOR.to_owned(), now.to_string())))
        .await?;
    Ok(())
}

/// macOS: the `profiles` snapshot.
async fn poll_macos(
    spool: &SharedSpool,
    state: &AgentState,
    collect: &CollectSettings,
) -> Result<(), ShipperError> {
    let (tools, ctx) = (collect.tools.clone(), context(state, Platform::Macos));
    let result = tokio::task::spawn_blocking(move || {
        crate::sources::shim::collect_macos_profiles(&tools, &ctx)
    })
    .await
    .map_err(|e| ShipperError::Join(e.to_string()))?;
    match result {
        Ok(parsed) => {
            spool.append(parsed.items, None).await?;
        }
        Err(err) => tracing::warn!(error = %err, "profiles collection failed"),
    }
    Ok(())
}

/// Opens the agent's spool, raising its sequence counter past the state's reservation when
/// the spool is new.
pub fn open_spool(settings: &Settings, state: &AgentState) -> anyhow::Result<Spool> {
    let mut spool = Spool::open(&settings.spool_dir, settings.spool)
        .with_context(|| format!("opening the spool in {}", settings.spool_dir.display()))?;
    if spool.created() {
        spool.ensure_next_seq_at_least(state.batch_seq_reserved)?;
    }
    if spool.truncated_on_open() > 0 {
        tracing::warn!(
            bytes = spool.truncated_on_open(),
            "cut a torn write at the end of the spool (crash during an append)"
        );
    }
    Ok(spool)
}

/// Runs the agent until `shutdown` turns true.
pub async fn run(settings: Settings, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let state = AgentState::load(&settings.state_file)?;
    let collector = settings
        .collector
        .clone()
        .unwrap_or_else(|| state.collector_url.clone());
    let spool = open_spool(&settings, &state)?;
    let dead_letter = DeadLetter::new(spool.dir());
    let stats0 = spool.stats();
    tracing::info!(
        agent_id = %state.agent_id,
        tenant = %state.tenant,
        collector = %collector,
        spool_depth = stats0.depth,
        spool_dropped_total = stats0.dropped_total,
        spool_corrupt_total = stats0.corrupt_total,
        "agent starting"
    );
    let spool = SharedSpool::new(spool);
    let channel = client::channel(&collector, &settings.tls)?;
    let ingest = client::ingest_client(channel, &state.agent_credential)?;
    let stats = Arc::new(ShipperStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let shipper = Shipper::new(
        spool.clone(),
        dead_letter,
        ingest,
        settings.shipper.clone(),
        state.clone(),
        Some(settings.state_file.clone()),
        stats.clone(),
    );
    let shipper_task = tokio::spawn(shipper.run(stop_rx.clone()));
    let heartbeat_task = tokio::spawn(run_heartbeats(
        spool.clone(),
        state.clone(),
        stats.clone(),
        settings.shipper.heartbeat_interval,
        stop_rx.clone(),
    ));

    let import = settings
        .import_ndjson
        .clone()
        .map(|dir| NdjsonImport::new(dir, settings.spool.segment_bytes));
    let mut ticker = tokio::time::interval(settings.poll_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            break;
        }
        if let Some(import) = &import {
            match import
                .poll(
                    &spool,
                    &context(&state, collected_platform(&settings.collect)),
                )
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(items = n, "imported NDJSON"),
                Err(err) => tracing::error!(error = %err, "NDJSON import failed"),
            }
        }
        if let Err(err) = poll_platform(&spool, &state, &settings.collect).await {
            tracing::error!(error = %err, "collection failed");
        }
    }

    tracing::info!(
        "shutting down: sending what is spooled (at most 5 s), the rest stays in the spool"
    );
    let _ = stop_tx.send(true);
    let _ = heartbeat_task.await;
    match tokio::time::timeout(Duration::from_secs(5), shipper_task).await {
        Ok(Ok(result)) => result?,
        Ok(Err(err)) => return Err(anyhow::anyhow!("shipper task failed: {err}")),
        Err(_) => tracing::warn!("shipper did not finish within 5 s; unsent data stays spooled"),
    }
    let left = spool.stats().await?;
    tracing::info!(spool_depth = left.depth, "agent stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_lines_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.ndjson");
        std::fs::write(&path, "one\ntwo\nthr").unwrap();
        let (text, next, restarted) = read_complete_lines(&path, 0, 4096).unwrap().unwrap();
        assert_eq!((text.as_str(), next, restarted), ("one\ntwo\n", 8, false));
        assert_eq!(read_complete_lines(&path, 8, 4096).unwrap(), None);
        // A chunk stops at the byte budget, but always takes at least one line.
        assert_eq!(
            read_complete_lines(&path, 0, 5).unwrap(),
            Some(("one\n".to_owned(), 4, false))
        );
        assert_eq!(
            read_complete_lines(&path, 0, 2).unwrap(),
            Some(("one\n".to_owned(), 4, false))
        );
        std::fs::write(&path, "x\n").unwrap();
        assert_eq!(
            read_complete_lines(&path, 8, 4096).unwrap(),
            Some(("x\n".to_owned(), 2, true))
        );
    }

    #[tokio::test]
    async fn import_appends_items_with_our_agent_and_resumes_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let import_dir = dir.path().join("import");
        std::fs::create_dir(&import_dir).unwrap();
        let line = |n: usize| {
            format!(
                "{{\"eventId\":\"00000000-0000-4000-8000-{n:012}\",\"agentId\":\"someone-else\",\"deviceId\":\"d\",\"occurredAt\":\"2025-01-06T09:00:00Z\",\"stage\":\"ENROLLMENT_STAGE_COMPLETE\",\"outcome\":\"OUTCOME_SUCCEEDED\"}}\n"
            )
        };
        let mut text: String = (0..3).map(line).collect();
        text.push_str("{not json}\n");
        std::fs::write(import_dir.join("a.ndjson"), &text).unwrap();
        let ctx = SourceContext {
            agent_id: "agent-1".into(),
            device_id: "dev".into(),
            platform: fleetpulse_proto::v1::Platform::Linux,
            now: time::OffsetDateTime::now_utc(),
        };
        let import = NdjsonImport::new(import_dir.clone(), 4096);
        {
            let spool = SharedSpool::new(
                Spool::open(&dir.path().join("spool"), Default::default()).unwrap(),
            );
            assert_eq!(import.poll(&spool, &ctx).await.unwrap(), 3);
            assert_eq!(import.poll(&spool, &ctx).await.unwrap(), 0);
            let batch = spool
                .with(|s| s.next_batch(100, 1 << 20))
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let request = spool
                .with(move |s| s.load_batch(batch.seq))
                .await
                .unwrap()
                .unwrap();
            for item in &request.items {
                let Some(telemetry_item::Kind::Event(e)) = &item.kind else {
                    panic!("not an event")
                };
                assert_eq!(e.agent_id, "agent-1");
            }
        }
        // Restart (the spool handle is dropped): only appended lines are imported.
        let mut more = text.clone();
        more.push_str(&line(3));
        std::fs::write(import_dir.join("a.ndjson"), &more).unwrap();
        let spool =
            SharedSpool::new(Spool::open(&dir.path().join("spool"), Default::default()).unwrap());
        assert_eq!(import.poll(&spool, &ctx).await.unwrap(), 1);
        assert_eq!(spool.stats().await.unwrap().depth, 4);
    }
}
