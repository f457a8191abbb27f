//! The alert lifecycle as a pure state machine: pending -> firing -> resolved, with
//! `no_data` as a state of its own, hysteresis on resolution, one notification per episode
//! and a re-notify interval for unacknowledged alerts.

use serde::{Deserialize, Serialize};

use super::config::LifecycleConfig;
use super::detect::Verdict;

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = AlertStatus)]
pub enum Status {
    Pending,
    Firing,
    Resolved,
    /// The key's tenant sent no attempts in the window: we cannot tell, so we say so.
    NoData,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Firing => "firing",
            Self::Resolved => "resolved",
            Self::NoData => "no_data",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "firing" => Self::Firing,
            "resolved" => Self::Resolved,
            "no_data" => Self::NoData,
            _ => return None,
        })
    }
    pub fn is_open(self) -> bool {
        self != Self::Resolved
    }
}

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The episode started firing (once per episode).
    Firing,
    /// Still firing, unacknowledged, `renotify_every` after the last notification.
    Renotify,
    /// The episode ended (only for episodes that fired).
    Resolved,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Renotify => "renotify",
            Self::Resolved => "resolved",
        }
    }
}

/// The lifecycle fields of an open alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phase {
    pub status: Status,
    pub started_at: i64,
    pub firing_at: Option<i64>,
    pub recovering_since: Option<i64>,
    pub last_notified_at: Option<i64>,
    pub acknowledged: bool,
}

/// What to write after one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub phase: Phase,
    pub resolved_at: Option<i64>,
    pub notify: Option<Kind>,
}

/// The next phase of a key given its open alert (None: no open alert) and a verdict;
/// None when nothing is to be written (no open alert and no breach).
pub fn step(cur: Option<Phase>, verdict: Verdict, now: i64, lc: &LifecycleConfig) -> Option<Step> {
    let pending_for = lc.pending_for.as_secs() as i64;
    let resolve_after = lc.resolve_after.as_secs() as i64;
    let Some(cur) = cur.filter(|c| c.status.is_open()) else {
        if verdict != Verdict::Breach {
            return None;
        }
        let fire = pending_for == 0;
        return Some(Step {
            phase: Phase {
                status: if fire {
                    Status::Firing
                } else {
                    Status::Pending
                },
                started_at: now,
                firing_at: fire.then_some(now),
                recovering_since: None,
                last_notified_at: fire.then_some(now),
                acknowledged: false,
            },
            resolved_at: None,
            notify: fire.then_some(Kind::Firing),
        });
    };
    let mut next = cur;
    let mut notify = None;
    let mut resolved_at = None;
    let fired = cur.firing_at.is_some();
    match verdict {
        Verdict::NoData => {
            next.status = Status::NoData;
            next.recovering_since = None;
        }
        Verdict::Breach | Verdict::Hold => {
            next.recovering_since = None;
            if fired {
                next.status = Status::Firing;
                let due = lc.renotify_every.as_secs() as i64;
                if verdict == Verdict::Breach
                    && cur.status == Status::Firing
                    && !cur.acknowledged
                    && due > 0
                    && cur.last_notified_at.is_some_and(|t| now - t >= due)
                {
                    notify = Some(Kind::Renotify);
                    next.last_notified_at = Some(now);
                }
            } else if verdict == Verdict::Breach && now - cur.started_at >= pending_for {
                next.status = Status::Firing;
                next.firing_at = Some(now);
                next.last_notified_at = Some(now);
                notify = Some(Kind::Firing);
            } else {
                next.status = Status::Pending;
            }
        }
        Verdict::Recovered => {
            if fired {
                let since = cur.recovering_since.unwrap_or(now);
                if now - since >= resolve_after {
                    next.status = Status::Resolved;
                    next.recovering_since = None;
                    resolved_at = Some(now);
                    notify = Some(Kind::Resolved);
                } else {
                    next.status = Status::Firing;
                    next.recovering_since = Some(since);
                }
            } else {
                // A pending alert that never fired ends quietly.
                next.status = Status::Resolved;
                resolved_at = Some(now);
            }
        }
    }
    Some(Step {
        phase: next,
        resolved_at,
        notify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn lc() -> LifecycleConfig {
        LifecycleConfig {
            pending_for: Duration::from_secs(60),
            resolve_after: Duration::from_secs(300),
            resolve_ratio: 1.5,
            renotify_every: Duration::from_secs(3600),
        }
    }

    /// Runs a verdict sequence at 60 s steps; returns (status, notification) per step.
    fn run(verdicts: &[Verdict], acked_at: Option<usize>) -> Vec<(Option<Status>, Option<Kind>)> {
        let mut cur: Option<Phase> = None;
        let mut out = Vec::new();
        for (i, v) in verdicts.iter().enumerate() {
            if acked_at == Some(i)
                && let Some(c) = cur.as_mut()
            {
                c.acknowledged = true;
            }
            let s = step(cur, *v, i as i64 * 60, &lc());
            if let Some(s) = s {
                cur = Some(s.phase);
            }
            out.push((cur.map(|c| c.status), s.and_then(|s| s.notify)));
        }
        out
    }

    use Verdict::*;

    #[test]
    fn one_notification_per_episode_with_hysteresis() {
        let seq = [
            Breach, Breach, Hold, Breach, Recovered, Hold, Recovered, Recovered, Recovered,
            Recovered, Recovered, Recovered,
        ];
        let out = run(&seq, None);
        let notes: Vec<Kind> = out.iter().filter_map(|(_, k)| *k).collect();
        assert_eq!(notes, vec![Kind::Firing, Kind::Resolved]);
        assert_eq!(out[0].0, Some(Status::Pending));
        assert_eq!(out[1], (Some(Status::Firing), Some(Kind::Firing)));
        // Recovering at step 4, interrupted by Hold at 5, recovering again from 6: resolved
        // at 6 + 5 = 11.
        assert_eq!(out[10].0, Some(Status::Firing));
        assert_eq!(out[11], (Some(Status::Resolved), Some(Kind::Resolved)));
    }

    #[test]
    fn no_data_is_not_resolved_and_pending_ends_quietly() {
        let out = run(&[Breach, Breach, NoData, NoData, Breach], None);
        assert_eq!(out[2].0, Some(Status::NoData));
        assert_eq!(out[3], (Some(Status::NoData), None));
        assert_eq!(
            out[4],
            (Some(Status::Firing), None),
            "same episode: no second notification"
        );
        let out = run(&[Breach, Recovered], None);
        assert_eq!(out[1], (Some(Status::Resolved), None));
        assert_eq!(run(&[Hold, Recovered, NoData], None), vec![(None, None); 3]);
    }

    #[test]
    fn renotify_until_acknowledged() {
        let mut seq = vec![Breach; 200];
        seq.push(Recovered);
        let out = run(&seq, None);
        let renotes = out
            .iter()
            .filter(|(_, k)| *k == Some(Kind::Renotify))
            .count();
        // Fired at step 1 (60 s), re-notified every 3600 s up to step 199 (11 940 s): 3 times.
        assert_eq!(renotes, 3);
        let out = run(&seq, Some(30));
        assert_eq!(
            out.iter()
                .filter(|(_, k)| *k == Some(Kind::Renotify))
                .count(),
            0
        );
    }
}
