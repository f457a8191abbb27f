//! When simulated events happen (their timestamps) and when they are generated: first the
//! backfill, a span of past history generated as fast as the spool and the collector take it,
//! then the live phase, which follows the clock.
//!
//! Positions are offsets from the run's start (the time of the first simulated event), so the
//! generator, the spikes and this timeline share one axis:
//!
//! ```text
//! start                     start + backfill                 start + backfill + live
//!   |------ backfill ------------|---------- live ---------------|
//!   generated as fast as possible  generated as the clock reaches it
//! ```
//!
//! Without `--start-at`, `start` is the launch time minus the backfill, so the backfill ends at
//! the launch time and live events carry the current time; generation catches up with the
//! clock after the backfill (the catch-up is part of the fast phase), so history has no gap
//! and live events are not late. With `--start-at`, timestamps are fixed (reproducible runs):
//! the live phase starts, on the clock, once the backfill has been generated.

use std::time::{Duration, Instant};

use time::OffsetDateTime;

/// What anchors the live phase to the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    /// Position = wall-clock time minus start (start derived from the launch time).
    Wall,
    /// Position = backfill + time since the backfill was generated (start fixed by the user).
    AfterBackfill(Option<Instant>),
}

/// The run's time axis.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Time of position zero.
    pub start: OffsetDateTime,
    /// Length of the history generated as fast as possible.
    pub backfill: Duration,
    /// Length of the live phase; `None` runs until interrupted.
    pub live: Option<Duration>,
    anchor: Anchor,
}

impl Timeline {
    /// A timeline whose backfill ends at `now` (no `--start-at`).
    pub fn ending_now(now: OffsetDateTime, backfill: Duration, live: Option<Duration>) -> Self {
        Self {
            start: now - backfill,
            backfill,
            live,
            anchor: Anchor::Wall,
        }
    }

    /// A timeline with fixed timestamps starting at `start` (`--start-at`).
    pub fn fixed(start: OffsetDateTime, backfill: Duration, live: Option<Duration>) -> Self {
        Self {
            start,
            backfill,
            live,
            anchor: Anchor::AfterBackfill(None),
        }
    }

    /// The position where the run ends; `None` when it runs until interrupted.
    pub fn end(&self) -> Option<Duration> {
        self.live.map(|live| self.backfill + live)
    }

    /// Timestamp of a position.
    pub fn at(&self, position: Duration) -> OffsetDateTime {
        self.start + position
    }

    /// How far events are due, given whether the backfill has been generated: the backfill at
    /// once, then the live phase as the clock advances; never past the end.
    pub fn due(
        &mut self,
        backfill_generated: bool,
        wall: OffsetDateTime,
        now: Instant,
    ) -> Duration {
        let due = match &mut self.anchor {
            Anchor::Wall => {
                let elapsed = wall - self.start;
                Duration::try_from(elapsed).unwrap_or(Duration::ZERO)
            }
            Anchor::AfterBackfill(began) => {
                if !backfill_generated {
                    self.backfill
                } else {
                    let began = *began.get_or_insert(now);
                    self.backfill + now.saturating_duration_since(began)
                }
            }
        };
        match self.end() {
            Some(end) => due.min(end),
            None => due,
        }
    }
}

/// `--duration`: the live phase's length, or `forever`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveSpan(pub Option<Duration>);

impl std::str::FromStr for LiveSpan {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "forever" | "inf" | "infinite" => Ok(Self(None)),
            _ => super::spike::parse_duration(text).map(|d| Self(Some(d))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn wall_anchored_backfill_ends_now_and_follows_the_clock() {
        let now = datetime!(2026-11-30 06:00:00 UTC);
        let mut t = Timeline::ending_now(
            now,
            Duration::from_secs(7 * 86_400),
            Some(Duration::from_secs(600)),
        );
        assert_eq!(t.start, datetime!(2026-11-23 06:00:00 UTC));
        assert_eq!(t.end(), Some(Duration::from_secs(7 * 86_400 + 600)));
        let i = Instant::now();
        // At launch, the whole week is due at once.
        assert_eq!(t.due(false, now, i), t.backfill);
        // Two minutes later (the backfill took that long), the catch-up is due too.
        assert_eq!(
            t.due(true, now + time::Duration::minutes(2), i),
            t.backfill + Duration::from_secs(120)
        );
        // Never past the end.
        assert_eq!(
            t.due(true, now + time::Duration::hours(1), i),
            t.end().unwrap()
        );
    }

    #[test]
    fn fixed_start_goes_live_after_the_backfill_is_generated() {
        let start = datetime!(2025-01-06 09:00:00 UTC);
        let mut t = Timeline::fixed(start, Duration::from_secs(3600), None);
        let i = Instant::now();
        let wall = datetime!(2030-01-01 00:00:00 UTC);
        assert_eq!(t.due(false, wall, i), Duration::from_secs(3600));
        assert_eq!(
            t.due(false, wall, i + Duration::from_secs(50)),
            Duration::from_secs(3600)
        );
        // The live phase starts when the backfill is done, on the monotonic clock.
        let done = i + Duration::from_secs(60);
        assert_eq!(t.due(true, wall, done), Duration::from_secs(3600));
        assert_eq!(
            t.due(true, wall, done + Duration::from_secs(5)),
            Duration::from_secs(3605)
        );
        assert_eq!(t.end(), None);
        assert_eq!(
            t.at(Duration::from_secs(60)),
            datetime!(2025-01-06 09:01:00 UTC)
        );
    }

    #[test]
    fn no_backfill_is_the_plain_live_run() {
        let now = datetime!(2026-11-30 06:00:00 UTC);
        let mut t = Timeline::ending_now(now, Duration::ZERO, Some(Duration::from_secs(3)));
        let i = Instant::now();
        assert_eq!(t.due(true, now, i), Duration::ZERO);
        assert_eq!(
            t.due(true, now + time::Duration::milliseconds(1500), i),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn live_spans_parse() {
        assert_eq!("forever".parse::<LiveSpan>().unwrap(), LiveSpan(None));
        assert_eq!(
            "0s".parse::<LiveSpan>().unwrap(),
            LiveSpan(Some(Duration::ZERO))
        );
        assert_eq!(
            "10m".parse::<LiveSpan>().unwrap(),
            LiveSpan(Some(Duration::from_secs(600)))
        );
        assert!("soon".parse::<LiveSpan>().is_err());
    }
}
