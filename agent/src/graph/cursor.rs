//! The read position of one Graph collection: pure, serialised into the spool together with the
//! events of each page (one fsynced append), so after a crash the cursor and the spooled events
//! always agree.
//!
//! Graph's troubleshooting and Autopilot collections offer no delta query, so the cursor is a
//! **time watermark with overlap**:
//! - A *run* reads `eventDateTime ge (watermark - overlap)` (the first run reaches back
//!   `initial_lookback`), page by page through `@odata.nextLink`. The link of the next page is
//!   part of the cursor, so a restart resumes at the page after the last spooled one.
//! - When the last page is spooled the watermark advances to the newest `eventDateTime` seen.
//! - Events can reach Graph late; re-reading the overlap catches them. Events re-read in the
//!   overlap are recognised by their event id: `seen` holds the ids of earlier runs inside this
//!   run's window (frozen while the run lasts: Graph's order is unspecified, so any page may
//!   carry them), `run.seen` the ids of this run that a later run can re-read (newer than the
//!   run's newest time minus the overlap). Both stay small: the events of one overlap window.
//!
//! Limit: an event that reaches Graph more than `overlap` after its `eventDateTime` is older than
//! the next run's lower bound and is not read. If Graph refuses a stored `nextLink` (skip tokens
//! can expire), the run restarts from its lower bound; events of the earlier pages that fell out
//! of `seen` are then sent again with the same event ids, which the collector stores once.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A run in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Lower bound of the run (Unix ms): records older than this are not ours.
    pub from_ms: i64,
    /// The page to read next.
    pub next_link: String,
    /// Newest `eventDateTime` seen in this run (Unix ms).
    pub max_ms: i64,
    /// Ids spooled in this run that a later run can re-read.
    #[serde(default)]
    pub seen: BTreeMap<String, i64>,
}

/// The persisted position in one collection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Newest `eventDateTime` of completed runs (Unix ms).
    pub watermark_ms: Option<i64>,
    /// Event ids of completed runs whose time lies in the re-readable window, with their time.
    pub seen: BTreeMap<String, i64>,
    pub run: Option<Run>,
}

impl Cursor {
    /// Parses a stored cursor; a damaged one is reported to the caller, which starts over.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Lower bound of a new run started at `now_ms`.
    pub fn next_from(&self, now_ms: i64, overlap_ms: i64, lookback_ms: i64) -> i64 {
        match self.watermark_ms {
            Some(watermark) => watermark - overlap_ms,
            None => now_ms - lookback_ms,
        }
    }

    /// Whether a record of the current run is new: inside the run's bounds and not spooled
    /// before. Records it as seen when it is.
    pub fn accept(&mut self, event_id: &str, at_ms: i64, from_ms: i64, overlap_ms: i64) -> bool {
        if at_ms < from_ms || self.seen.contains_key(event_id) {
            return false;
        }
        let Some(run) = &mut self.run else {
            return false;
        };
        if run.seen.contains_key(event_id) {
            return false;
        }
        run.max_ms = run.max_ms.max(at_ms);
        run.seen.insert(event_id.to_owned(), at_ms);
        let floor = run.max_ms.saturating_sub(overlap_ms);
        run.seen.retain(|_, at| *at >= floor);
        true
    }

    /// Records the end of a page: `next` is the following page, `None` when the run is done.
    pub fn page_done(&mut self, next: Option<String>, overlap_ms: i64) {
        let Some(run) = &mut self.run else {
            return;
        };
        match next {
            Some(next_link) => run.next_link = next_link,
            None => {
                let Some(run) = self.run.take() else {
                    return;
                };
                if run.max_ms != i64::MIN {
                    self.watermark_ms =
                        Some(self.watermark_ms.map_or(run.max_ms, |w| w.max(run.max_ms)));
                }
                self.seen.extend(run.seen);
                if let Some(watermark) = self.watermark_ms {
                    let floor = watermark.saturating_sub(overlap_ms);
                    self.seen.retain(|_, at| *at >= floor);
                }
            }
        }
    }

    /// Starts a run at `from_ms` whose first page is `first_link`; forgets the ids no record of
    /// this run can carry.
    pub fn start_run(&mut self, from_ms: i64, first_link: String) {
        self.seen.retain(|_, at| *at >= from_ms);
        self.run = Some(Run {
            from_ms,
            next_link: first_link,
            max_ms: i64::MIN,
            seen: BTreeMap::new(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn first_run_then_overlap_rereads_are_recognised() {
        let mut c = Cursor::default();
        let now = 100 * H;
        let from = c.next_from(now, H, 48 * H);
        assert_eq!(from, 52 * H);
        c.start_run(from, "p1".into());
        assert!(c.accept("a", 90 * H, from, H));
        assert!(c.accept("b", 99 * H, from, H));
        assert!(!c.accept("old", 10 * H, from, H), "before the run's bound");
        c.page_done(Some("p2".into()), H);
        assert_eq!(c.run.as_ref().unwrap().next_link, "p2");
        // "a" is older than max - overlap: no later run can read it again.
        assert_eq!(
            c.run.as_ref().unwrap().seen.keys().collect::<Vec<_>>(),
            vec!["b"]
        );
        assert!(c.accept("c", 99 * H + 5, from, H));
        c.page_done(None, H);
        assert_eq!(c.seen.keys().collect::<Vec<_>>(), vec!["b", "c"]);
        assert_eq!(c.watermark_ms, Some(99 * H + 5));
        assert!(c.run.is_none());
        // Next run re-reads the last hour: b and c are known, d is new.
        let from2 = c.next_from(now + H, H, 48 * H);
        assert_eq!(from2, 98 * H + 5);
        c.start_run(from2, "q1".into());
        assert!(!c.accept("b", 99 * H, from2, H));
        assert!(!c.accept("c", 99 * H + 5, from2, H));
        assert!(
            c.accept("d", 99 * H + 1, from2, H),
            "late arrival inside the overlap"
        );
        // A much newer record on the first page does not make older known ids new again.
        assert!(c.accept("e", 120 * H, from2, H));
        assert!(!c.accept("b", 99 * H, from2, H));
        c.page_done(None, H);
        assert_eq!(c.watermark_ms, Some(120 * H));
        assert_eq!(c.seen.keys().collect::<Vec<_>>(), vec!["e"]);
    }

    #[test]
    fn empty_run_keeps_the_watermark_and_round_trips() {
        let mut c = Cursor {
            watermark_ms: Some(5 * H),
            ..Cursor::default()
        };
        c.start_run(4 * H, "x".into());
        c.page_done(None, H);
        assert_eq!(c.watermark_ms, Some(5 * H));
        c.start_run(4 * H, "y".into());
        let json = c.to_json();
        assert_eq!(Cursor::parse(&json).unwrap(), c);
        assert!(Cursor::parse("{bad").is_err());
    }
}
