//! A keyed rate limiter with bounded memory, on `governor`'s GCRA (one 8-byte state per key,
//! lock-free updates in a sharded map).
//!
//! Bounds: keys whose state is indistinguishable from a fresh one (idle for a burst's worth of
//! time) are evicted every [`SWEEP_EVERY`]; and when `max_keys` live keys are held anyway (a
//! flood of distinct source addresses or token ids), a new key is not added but shares one
//! overflow key with every other newcomer, so memory stays bounded and the flood limits only
//! itself and other newcomers, never the keys already tracked... until they go idle.
//!
//! Retry hints: a refusal says how long until the key conforms again. For a key shared by many
//! senders (a tenant, a token, a source address) that moment is the same for all of them, so
//! the hint is spread: uniformly up to the time the limiter needs to admit every cell it
//! refused in the last second. A thousand agents refused together then come back over that time
//! instead of all at once.

use std::{
    hash::Hash,
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, Instant},
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock, DefaultClock},
    state::keyed::DefaultKeyedStateStore,
};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How often idle keys are evicted.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// The longest retry hint given (the spread is capped here).
pub const MAX_HINT: Duration = Duration::from_secs(60);

/// A rate: `per_second` cells a second on average, up to `burst` at once. `per_second = 0`
/// switches the limit off. Written `"RATE:BURST"` (or `"RATE"`) in TOML, flags and the
/// environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl TryFrom<String> for Rate {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        parse_rate(&text)
    }
}

impl From<Rate> for String {
    fn from(rate: Rate) -> String {
        format!("{}:{}", rate.per_second, rate.burst)
    }
}

impl Rate {
    pub const fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second, burst }
    }

    pub fn is_off(&self) -> bool {
        self.per_second == 0
    }

    /// `"200/s burst 1000"`, or `"off"`.
    pub fn describe(&self) -> String {
        if self.is_off() {
            "off".into()
        } else {
            format!("{}/s burst {}", self.per_second, self.burst)
        }
    }
}

/// Parses `RATE` or `RATE:BURST` (`200`, `200:1000`, `0` = off); the burst defaults to the
/// rate. For flags and environment variables.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let text = text.trim();
    let (rate, burst) = match text.split_once(':') {
        Some((r, b)) => (r, Some(b)),
        None => (text, None),
    };
    let per_second: u32 = rate
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected RATE or RATE:BURST (whole numbers per second)"))?;
    let burst = match burst {
        Some(b) => b
            .trim()
            .parse()
            .map_err(|_| format!("{text:?}: the burst after ':' must be a whole number"))?,
        None => per_second,
    };
    let rate = Rate::new(per_second, burst);
    check_rate(&rate).map_err(|e| format!("{text:?}: {e}"))?;
    Ok(rate)
}

/// A rate is either off or has a burst of at least one cell.
pub fn check_rate(rate: &Rate) -> Result<(), String> {
    if !rate.is_off() && rate.burst == 0 {
        return Err("the burst must be at least 1 when the rate is on".into());
    }
    Ok(())
}

/// Counts cells refused in the current one-second window, for the hint spread.
#[derive(Debug)]
struct Window {
    started: Instant,
    refused_cells: u64,
}

/// The limiter. Shared by reference (it is internally synchronised).
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>,
    clock: DefaultClock,
    rate: Rate,
    max_keys: usize,
    overflow: K,
    spread: bool,
    last_sweep: Mutex<Instant>,
    window: Mutex<Window>,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// A limiter for `rate`, or `None` when the rate is off. `overflow` is the key newcomers
    /// share once `max_keys` keys are live; `spread` spreads retry hints (keys shared by many
    /// senders).
    pub fn new(rate: Rate, max_keys: usize, overflow: K, spread: bool) -> Option<Self> {
        let per_second = NonZeroU32::new(rate.per_second)?;
        let burst = NonZeroU32::new(rate.burst.max(1))?;
        let clock = DefaultClock::default();
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Some(Self {
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock.clone()),
            clock,
            rate,
            max_keys: max_keys.max(1),
            overflow,
            spread,
            last_sweep: Mutex::new(Instant::now()),
            window: Mutex::new(Window {
                started: Instant::now(),
                refused_cells: 0,
            }),
        })
    }

    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Live keys (an estimate while others update).
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }

    /// Takes `cells` (at least one, at most the burst: a request larger than the burst costs a
    /// whole burst) for `key`; on refusal, how long the sender should wait.
    pub fn check(&self, key: &K, cells: u32) -> Result<(), Duration> {
        self.sweep_if_due(false);
        let key = if self.limiter.len() >= self.max_keys {
            self.sweep_if_due(true);
            if self.limiter.len() >= self.max_keys {
                &self.overflow
            } else {
                key
            }
        } else {
            key
        };
        let cells = cells.clamp(1, self.rate.burst.max(1));
        let Some(n) = NonZeroU32::new(cells) else {
            return Ok(());
        };
        match self.limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.clock.now());
                Err(self.hint(wait, cells))
            }
            // Unreachable after the clamp; treat as "wait a burst's time".
            Err(_) => Err(self.hint(
                Duration::from_secs(
                    u64::from(self.rate.burst) / u64::from(self.rate.per_second.max(1)) + 1,
                ),
                cells,
            )),
        }
    }

    /// The retry hint for a refusal of `cells` that must wait at least `wait`.
    fn hint(&self, wait: Duration, cells: u32) -> Duration {
        let wait = wait.max(Duration::from_millis(1));
        if !self.spread {
            return wait.min(MAX_HINT);
        }
        let refused = match self.window.lock() {
            Ok(mut w) => {
                let now = Instant::now();
                if now.duration_since(w.started) >= Duration::from_secs(1) {
                    *w = Window {
                        started: now,
                        refused_cells: 0,
                    };
                }
                w.refused_cells += u64::from(cells);
                w.refused_cells
            }
            Err(_) => u64::from(cells),
        };
        // Time to admit every cell refused this second.
        let backlog_ms = refused.saturating_mul(1000) / u64::from(self.rate.per_second.max(1));
        let spread_ms = backlog_ms.min(MAX_HINT.as_millis() as u64);
        let extra = rand::thread_rng().gen_range(0..=spread_ms);
        (wait + Duration::from_millis(extra)).min(MAX_HINT)
    }

    /// Evicts idle keys every [`SWEEP_EVERY`], or (when `urgent`) at most once a second.
    fn sweep_if_due(&self, urgent: bool) {
        let every = if urgent {
            Duration::from_secs(1)
        } else {
            SWEEP_EVERY
        };
        let Ok(mut last) = self.last_sweep.try_lock() else {
            return; // another caller sweeps right now
        };
        if last.elapsed() < every {
            return;
        }
        *last = Instant::now();
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_and_without_burst() {
        assert_eq!(parse_rate("200").unwrap(), Rate::new(200, 200));
        assert_eq!(parse_rate("200:1000").unwrap(), Rate::new(200, 1000));
        assert_eq!(parse_rate("0").unwrap(), Rate::new(0, 0));
        assert!(parse_rate("0").unwrap().is_off());
        assert_eq!(
            parse_rate("5:0").unwrap_err(),
            "\"5:0\": the burst must be at least 1 when the rate is on"
        );
        assert_eq!(
            parse_rate("fast").unwrap_err(),
            "\"fast\": expected RATE or RATE:BURST (whole numbers per second)"
        );
        assert_eq!(Rate::new(20, 100).describe(), "20/s burst 100");
        assert_eq!(Rate::new(0, 0).describe(), "off");
    }

    #[test]
    fn off_rate_builds_no_limiter() {
        assert!(KeyedLimiter::new(Rate::new(0, 10), 10, 0u32, false).is_none());
    }

    #[test]
    fn burst_then_refusal_with_a_hint_near_the_refill_time() {
        let l = KeyedLimiter::new(Rate::new(10, 5), 100, 0u32, false).unwrap();
        for _ in 0..5 {
            l.check(&1, 1).unwrap();
        }
        let wait = l.check(&1, 1).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Another key has its own budget.
        l.check(&2, 5).unwrap();
        // Several cells at once: 5 cells at 10/s need up to half a second.
        let wait = l.check(&2, 5).unwrap_err();
        assert!(wait <= Duration::from_millis(500), "{wait:?}");
        // More cells than the burst cost a whole burst, never "impossible".
        let l = KeyedLimiter::new(Rate::new(1000, 10), 100, 0u32, false).unwrap();
        l.check(&1, 50_000).unwrap();
        assert!(l.check(&1, 1).is_err());
    }

    #[test]
    fn keys_are_bounded_and_newcomers_share_the_overflow_key() {
        let l = KeyedLimiter::new(Rate::new(1, 1), 3, 0u32, false).unwrap();
        for key in 1..=3 {
            l.check(&key, 1).unwrap();
        }
        assert_eq!(l.keys(), 3);
        // Full: newcomers share key 0, whose single cell the first one takes.
        l.check(&100, 1).unwrap();
        assert!(l.check(&101, 1).is_err());
        assert!(l.check(&102, 1).is_err());
        assert!(l.keys() <= 4, "{} keys", l.keys());
    }

    #[test]
    fn shared_keys_spread_their_hints_over_the_backlog() {
        let l = KeyedLimiter::new(Rate::new(10, 1), 100, 0u32, true).unwrap();
        l.check(&1, 1).unwrap();
        let hints: Vec<Duration> = (0..200).map(|_| l.check(&1, 1).unwrap_err()).collect();
        let max = hints.iter().max().unwrap();
        // 200 refused at 10/s: the later ones are spread over up to 20 s.
        assert!(*max > Duration::from_secs(2), "{max:?}");
        assert!(hints.iter().all(|h| *h <= MAX_HINT));
    }
}
