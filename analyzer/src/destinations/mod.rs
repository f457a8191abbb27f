//! Destinations: where alert notifications and failure events go, durably.
//!
//! - [`config`]: `[[destinations]]`, validated per kind.
//! - [`record`]: the two record kinds every encoder reads, with stable ids.
//! - Encoders, pure and one file per format, tested byte-exactly with hostile values:
//!   [`cef`], [`syslog`] (RFC 5424 + RFC 6587 framing), [`json`], [`webhook`] (HMAC-SHA256),
//!   [`slack`], [`teams`], [`pagerduty`], [`splunk`] (HEC), [`ecs`] (`_bulk` NDJSON),
//!   [`sentinel`] (Logs Ingestion API).
//! - [`transport`]: HTTP (reqwest + rustls) and syslog sockets, with error classification.
//! - [`outbox`]: the per-destination outbox and feed cursors in the control database.
//! - [`delivery`]: one worker per destination, with backoff and metrics.

pub mod cef;
pub mod config;
pub mod delivery;
pub mod ecs;
pub mod json;
pub mod outbox;
pub mod pagerduty;
pub mod record;
pub mod sentinel;
pub mod slack;
pub mod splunk;
pub mod syslog;
pub mod teams;
pub mod transport;
pub mod webhook;
