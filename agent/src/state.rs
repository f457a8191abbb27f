//! The device-local state file: who this agent is for the collector.
//!
//! Written once by `fleetpulse-agent register` (and updated when batch sequence numbers are
//! reserved). It holds the agent credential, so it is created with owner-only permissions
//! (0600 on Unix) before any byte is written, and replaced atomically so a crash never leaves a
//! half-written credential.
//!
//! Batch sequence numbers: the spool counts them, but a spool can be wiped (disk cleanup,
//! reinstall) while the registration survives. The collector deduplicates on
//! `(agent, batch_seq)`, so reusing a number would make new data look like a resend and be
//! silently dropped. The state therefore keeps a reservation `batch_seq_reserved`: every number
//! below it may have been used. The shipper raises it in blocks of [`SEQ_RESERVATION_BLOCK`]
//! before using numbers beyond it (one state write per block, not per batch), and a freshly
//! created spool starts counting at the reservation.
//!
//! Source read positions are *not* kept here: they are committed in the spool together with
//! the records they cover (see `spool::Spool::append_with_cursor`), the only way to make
//! "read" and "stored" one atomic step.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::durable;

/// How many batch sequence numbers one state write reserves.
pub const SEQ_RESERVATION_BLOCK: u64 = 10_000;

/// Current format version of the state file.
pub const STATE_FORMAT: u32 = 1;

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {} is invalid: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "state file {} does not exist: register this agent first (fleetpulse-agent register --collector URL --enrollment-token fpe_...)",
        path.display()
    )]
    NotRegistered { path: PathBuf },
}

/// The agent's registration and counters.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentState {
    pub format: u32,
    /// Collector the agent registered with.
    pub collector_url: String,
    /// Agent id assigned by the collector (UUID).
    pub agent_id: String,
    /// Secret agent credential (`fpa_...`), sent as `authorization: Bearer ...`.
    pub agent_credential: String,
    /// Fleetpulse tenant the enrollment token belonged to.
    pub tenant: String,
    /// Stable device identifier used at registration.
    pub device_id: String,
    pub hostname: String,
    /// RFC 3339 time of registration.
    pub registered_at: String,
    /// Every batch sequence number below this one may have been used.
    pub batch_seq_reserved: u64,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the credential (logs end up in tickets).
        f.debug_struct("AgentState")
            .field("collector_url", &self.collector_url)
            .field("agent_id", &self.agent_id)
            .field("agent_credential", &"<redacted>")
            .field("tenant", &self.tenant)
            .field("device_id", &self.device_id)
            .field("batch_seq_reserved", &self.batch_seq_reserved)
            .finish()
    }
}

impl AgentState {
    /// Reads the state file.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::NotRegistered {
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(StateError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        warn_if_readable_by_others(path);
        let state: Self = serde_json::from_slice(&bytes).map_err(|err| StateError::Invalid {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
        let invalid = |reason: &str| StateError::Invalid {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        if state.format != STATE_FORMAT {
            return Err(invalid(&format!(
                "format {} is not supported (expected {STATE_FORMAT})",
                state.format
            )));
        }
        if state.agent_id.is_empty() {
            return Err(invalid("agent_id is empty"));
        }
        if state.agent_credential.is_empty() {
            return Err(invalid("agent_credential is empty"));
        }
        if state.device_id.is_empty() {
            return Err(invalid("device_id is empty"));
        }
        Ok(state)
    }

    /// Writes the state file atomically with owner-only permissions.
    pub fn store(&self, path: &Path) -> Result<(), StateError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StateError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        let bytes = serde_json::to_vec_pretty(self).map_err(|err| StateError::Invalid {
            path: path.to_owned(),
            reason: err.to_string(),
        })?;
        durable::write_atomic(path, &bytes, true).map_err(|source| StateError::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// Makes sure `next_seq` (and a margin of `ahead` more) is covered by the reservation,
    /// persisting a new reservation block if not. Returns whether the file was written.
    pub fn reserve_seq(
        &mut self,
        path: &Path,
        next_seq: u64,
        ahead: u64,
    ) -> Result<bool, StateError> {
        if next_seq + ahead < self.batch_seq_reserved {
            return Ok(false);
        }
        let mut updated = self.clone();
        updated.batch_seq_reserved = next_seq + ahead + SEQ_RESERVATION_BLOCK;
        updated.store(path)?;
        *self = updated;
        Ok(true)
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "state file holding the agent credential is accessible to other users; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AgentState {
        AgentState {
            format: STATE_FORMAT,
            collector_url: "http://127.0.0.1:7600".into(),
            agent_id: "0b3e5f0e-8c55-4a4e-9d57-3f1f7c1c2a10".into(),
            agent_credential: "fpa_secret".into(),
            tenant: "contoso".into(),
            device_id: "dev-1".into(),
            hostname: "host".into(),
            registered_at: "2025-01-01T00:00:00Z".into(),
            batch_seq_reserved: 1,
        }
    }

    #[test]
    fn round_trips_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        sample().store(&path).unwrap();
        assert_eq!(AgentState::load(&path).unwrap(), sample());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn debug_output_hides_the_credential() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("fpa_secret"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn missing_and_invalid_files_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let err = AgentState::load(&path).unwrap_err();
        assert!(
            err.to_string().contains("register this agent first"),
            "{err}"
        );
        let mut state = sample();
        state.agent_credential.clear();
        state.store(&path).unwrap();
        assert_eq!(
            AgentState::load(&path).unwrap_err().to_string(),
            format!(
                "state file {} is invalid: agent_credential is empty",
                path.display()
            )
        );
    }

    #[test]
    fn reservations_are_written_once_per_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut state = sample();
        state.store(&path).unwrap();
        assert!(state.reserve_seq(&path, 1, 2).unwrap());
        assert_eq!(state.batch_seq_reserved, 3 + SEQ_RESERVATION_BLOCK);
        assert!(!state.reserve_seq(&path, 500, 2).unwrap());
        assert_eq!(
            AgentState::load(&path).unwrap().batch_seq_reserved,
            3 + SEQ_RESERVATION_BLOCK
        );
    }
}
