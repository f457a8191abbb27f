//! Rate-limited logging of refused authentication (and, through [`RefusalLog::try_line`], of
//! admission refusals), so an operator sees an attack in the log
//! without the log itself becoming the amplifier: at most [`LINES_PER_SECOND`] lines a second,
//! and the next line says how many refusals were not logged in between. Secrets never appear:
//! only the reason (`missing`, `malformed`, `unknown`, `revoked`), the message (which names
//! an agent id at most) and the source address.

use std::{
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use crate::control::tokens::AuthFailure;

/// Log lines per second at most.
pub const LINES_PER_SECOND: u32 = 10;

/// The rate limiter; one per process.
pub struct RefusalLog {
    window: Mutex<(Instant, u32)>,
    suppressed: AtomicU64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            window: Mutex::new((Instant::now(), 0)),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl RefusalLog {
    /// Whether a line may be written now; counts it when so.
    fn admit(&self, now: Instant) -> bool {
        let Ok(mut w) = self.window.lock() else {
            return false;
        };
        if now.duration_since(w.0).as_secs() >= 1 {
            *w = (now, 0);
        }
        if w.1 < LINES_PER_SECOND {
            w.1 += 1;
            true
        } else {
            false
        }
    }

    /// Whether a line may be written now: `Some(lines not written since the last one)`, or
    /// `None` (the refusal is counted as not logged).
    pub fn try_line(&self) -> Option<u64> {
        if !self.admit(Instant::now()) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }

    /// Records one refused authentication.
    pub fn note(&self, peer: Option<SocketAddr>, failure: &AuthFailure) {
        let Some(suppressed) = self.try_line() else {
            return;
        };
        let source = peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string());
        tracing::warn!(
            source = %source,
            reason = failure.reason(),
            message = %failure,
            not_logged_since_last = suppressed,
            "authentication refused"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn admits_a_bounded_number_of_lines_per_second() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        let admitted = (0..100).filter(|_| log.admit(t0)).count();
        assert_eq!(admitted, LINES_PER_SECOND as usize);
        assert!(log.admit(t0 + Duration::from_millis(1500)));
    }
}
