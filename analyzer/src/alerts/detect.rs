//! The spike test and the concentration analysis: pure functions over counts.
//!
//! A key (tenant x category, or tenant x code/platform/...) *breaches* when, in the current
//! window, all of these hold:
//! - minimum volume: `attempts >= min_attempts`, `failures >= min_failures` and
//!   `affected_devices >= min_affected_devices` (a 3-device tenant never pages);
//! - a large increase: `rate >= rate_ratio x baseline_rate`;
//! - a real one: a one-sided test of the window's failures against the expected count
//!   `attempts x upper(baseline)` (the Wilson upper bound of the baseline rate at
//!   `baseline_z`) rejects "no increase" at `alpha`, so a 100k-device tenant is not paged for
//!   noise and a thin baseline cannot make a small bump look real. The test is quasi-Poisson:
//!   enrollment failures are clustered (a failing device retries 1-3 times within minutes, a
//!   provisioning wave brings many devices at once, the failure mix moves over the day), so
//!   a window's count varies more than a Poisson count with the same mean. The variance is
//!   taken as `dispersion x mean`, with the dispersion estimated from the key's own recent
//!   history ([`dispersion`]: a moment estimator over window-length bins, at least 1), and
//!   the count is tested as `failures / dispersion ~ Poisson(expected / dispersion)` (the
//!   scaled-Poisson approximation used by outbreak-detection systems such as Farrington et
//!   al. 1996, whose surveillance counts are overdispersed in the same way). With dispersion
//!   1 it is the plain Poisson test.
//!
//! It *recovers* when its rate falls below `resolve_ratio x baseline_rate` (hysteresis: the
//! band between the two ratios keeps the current state), and it has *no data* when the window
//! holds no attempts at all: missing data is never taken for a recovery.

use serde::Serialize;

use super::config::SpikeConfig;

/// Failures of one key against the attempts of its population over some span.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub failures: u64,
    pub attempts: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.failures += other.failures;
        self.attempts += other.attempts;
    }
    pub fn rate(&self) -> f64 {
        if self.attempts == 0 {
            0.0
        } else {
            self.failures as f64 / self.attempts as f64
        }
    }
}

/// Wilson score interval of `x` successes in `n` trials at `z`; (0, 1) when `n == 0`.
pub fn wilson(x: u64, n: u64, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n_f = n as f64;
    let p = (x.min(n)) as f64 / n_f;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_f;
    let centre = p + z2 / (2.0 * n_f);
    let margin = z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    (
        ((centre - margin) / denom).max(0.0),
        ((centre + margin) / denom).min(1.0),
    )
}

/// `ln(k!)`: exact below 20, Stirling's series (error under 1e-10) above.
fn ln_factorial(k: u64) -> f64 {
    if k < 20 {
        return (2..=k).map(|i| (i as f64).ln()).sum();
    }
    let k = k as f64;
    k * k.ln() - k + 0.5 * (2.0 * std::f64::consts::PI * k).ln() + 1.0 / (12.0 * k)
        - 1.0 / (360.0 * k * k * k)
}

/// `P(X >= x)` for `X ~ Poisson(lambda)`: the p-value of observing `x` or more. Summed upward
/// from `x` in log space (terms shrink once `k > lambda`); 1 when `x <= lambda`, where the
/// observation is no evidence of an increase.
pub fn poisson_sf(x: u64, lambda: f64) -> f64 {
    if x == 0 || (x as f64) <= lambda {
        return 1.0;
    }
    if lambda <= 0.0 {
        return 0.0;
    }
    let mut term = (-lambda + x as f64 * lambda.ln() - ln_factorial(x)).exp();
    let mut sum = 0.0;
    let mut k = x;
    for _ in 0..100_000 {
        sum += term;
        k += 1;
        term *= lambda / k as f64;
        if term < sum * 1e-15 {
            break;
        }
    }
    sum.min(1.0)
}

/// The baseline rate used for ratios: smoothed so that a baseline without failures still has
/// a finite, small expectation (half a failure over its attempts).
pub fn baseline_rate(b: Counts) -> f64 {
    (b.failures as f64 + 0.5) / (b.attempts as f64 + 1.0)
}

/// What a key's failures are expected to be in the current window, from its baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expectation {
    /// Expected failure rate (failures / attempts of the window's population).
    pub rate: f64,
    /// The rate the significance test assumes: an upper confidence bound of `rate`, so that
    /// a thin baseline cannot make a small bump look real.
    pub upper_rate: f64,
}

impl Expectation {
    /// From a baseline's counts: [`baseline_rate`] and its Wilson upper bound at `z`.
    pub fn from_baseline(b: Counts, z: f64) -> Self {
        Self {
            rate: baseline_rate(b),
            upper_rate: wilson(b.failures, b.attempts, z).1,
        }
    }

    /// A population that is a mix of parts (tenants), each with its own baseline: the
    /// expected failures are the sum over parts of each part's rate times its current
    /// attempts, so a change in the mix alone (one tenant's working day starts while
    /// another's ends) moves the expectation, not the alarm. `parts` holds (current attempts,
    /// the part's expectation); the rates returned are per attempt of the whole window.
    pub fn mix(parts: &[(u64, Expectation)]) -> Self {
        let n: u64 = parts.iter().map(|(a, _)| a).sum();
        if n == 0 {
            return Self {
                rate: 0.0,
                upper_rate: 0.0,
            };
        }
        let sum = |f: fn(&Expectation) -> f64| {
            parts.iter().map(|(a, e)| *a as f64 * f(e)).sum::<f64>() / n as f64
        };
        Self {
            rate: sum(|e| e.rate),
            upper_rate: sum(|e| e.upper_rate),
        }
    }
}

/// The dispersion of a key's history, binned at the window's length: the moment estimator
/// `sum((x_i - e_i)^2) / sum(e_i) x m / (m - 1)` over the `m` bins whose expected count
/// `e_i` is positive, where `bins` holds `(x_i, e_i)`. Under the model `Var(x_i) =
/// dispersion x e_i` its expectation is the dispersion. It weighs bins by their expectation,
/// unlike Pearson's `sum((x_i - e_i)^2 / e_i) / (m - 1)`, which one retrying device at night
/// (six failures where 0.05 were expected) inflates a hundredfold. The expectation of each bin
/// must come from the same model the test uses (the key's rate over the span times the bin's
/// attempts), so that what the statistic measures is the variation the model does not
/// explain: retries and waves (clustering) and the rate's own movement over the day. At
/// least 1 (the test is never narrower than Poisson); 1 when fewer than two bins have an
/// expectation or the history has fewer than `min_failures` failures (too little to
/// estimate from).
pub fn dispersion(bins: &[(u64, f64)], min_failures: u64) -> f64 {
    let used: Vec<&(u64, f64)> = bins.iter().filter(|(_, e)| *e > 0.0).collect();
    let failures: u64 = used.iter().map(|(x, _)| x).sum();
    let m = used.len();
    if m < 2 || failures < min_failures.max(1) {
        return 1.0;
    }
    let squares: f64 = used
        .iter()
        .map(|(x, e)| {
            let d = *x as f64 - e;
            d * d
        })
        .sum();
    let mean: f64 = used.iter().map(|(_, e)| e).sum();
    (squares / mean * m as f64 / (m - 1) as f64).max(1.0)
}

/// The p-value of `x` failures against `expected` under the quasi-Poisson model with
/// `dispersion` (see the module doc): `P(X >= floor(x / d))` for `X ~ Poisson(expected / d)`.
pub fn quasi_poisson_sf(x: u64, expected: f64, dispersion: f64) -> f64 {
    let d = dispersion.max(1.0);
    poisson_sf((x as f64 / d).floor() as u64, expected / d)
}

/// The outcome of one evaluation of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Large, real and above the volume guards.
    Breach,
    /// Between the resolve and the fire thresholds, or under the volume guards while above the
    /// resolve threshold: keep the current state.
    Hold,
    /// Below `resolve_ratio x baseline`.
    Recovered,
    /// No attempts at all in the window.
    NoData,
}

/// Everything one evaluation measured, kept with the alert.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Assessment {
    pub verdict: Verdict,
    pub observed: Counts,
    pub observed_rate: f64,
    pub expected_rate: f64,
    pub expected_count: f64,
    pub affected_devices: u64,
    /// The dispersion the significance test used (1 = Poisson).
    pub dispersion: f64,
}

/// Assesses a window against its expectation. `dispersion` is the key's overdispersion
/// (1 for a plain Poisson test); it only ever makes a breach harder, so a caller may assess
/// with 1 first and estimate the dispersion only for keys that would breach.
pub fn assess(
    window: Counts,
    affected_devices: u64,
    expected: Expectation,
    dispersion: f64,
    cfg: &SpikeConfig,
    resolve_ratio: f64,
) -> Assessment {
    let expected_rate = expected.rate;
    let rate = window.rate();
    let verdict = if window.attempts == 0 {
        Verdict::NoData
    } else if rate < resolve_ratio * expected_rate {
        Verdict::Recovered
    } else {
        let volume = window.attempts >= cfg.min_attempts
            && window.failures >= cfg.min_failures
            && affected_devices >= cfg.min_affected_devices;
        let large = rate >= cfg.rate_ratio * expected_rate;
        let real = quasi_poisson_sf(
            window.failures,
            window.attempts as f64 * expected.upper_rate,
            dispersion,
        ) < cfg.alpha;
        if volume && large && real {
            Verdict::Breach
        } else {
            Verdict::Hold
        }
    };
    Assessment {
        verdict,
        observed: window,
        observed_rate: rate,
        expected_rate,
        expected_count: expected_rate * window.attempts as f64,
        affected_devices,
        dispersion: dispersion.max(1.0),
    }
}

/// Whether a window that does not breach may still breach on its newest part: it holds
/// (above `resolve_ratio` x baseline) and passes the volume guards as a whole, so a spike that
/// began a moment ago, diluted by the quiet rest of the window, is tested where it is.
pub fn onset_eligible(a: &Assessment, cfg: &SpikeConfig) -> bool {
    a.verdict == Verdict::Hold
        && a.observed.attempts >= cfg.min_attempts
        && a.observed.failures >= cfg.min_failures
        && a.affected_devices >= cfg.min_affected_devices
}

/// The test of the window's newest part (`recent`) against the same expectation and
/// dispersion as the whole window: at least `rate_ratio` x the baseline rate, and its
/// failures significant at `alpha` under the quasi-Poisson model.
pub fn onset_breach(
    recent: Counts,
    expected: Expectation,
    dispersion: f64,
    cfg: &SpikeConfig,
) -> bool {
    recent.attempts > 0
        && recent.rate() >= cfg.rate_ratio * expected.rate
        && quasi_poisson_sf(
            recent.failures,
            recent.attempts as f64 * expected.upper_rate,
            dispersion,
        ) < cfg.alpha
}

/// A dimension value explaining part of the excess failures.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Concentration {
    pub dimension: String,
    pub value: String,
    /// Share of the excess failures (observed - expected) this value accounts for, 0..=1.
    pub share: f64,
    /// The value's share of the baseline population (attempts, or failures for dimensions
    /// that exist only on failures): what `share` would be if the excess were spread evenly.
    pub baseline_share: f64,
}

/// The values of one dimension that explain at least `min_share` of the excess failures
/// *and* are over-represented in it by at least `min_share` compared with their share of the
/// baseline population, most over-represented first.
///
/// `window` holds failures per value in the window; `population` the baseline population per
/// value. A value's expected failures are its population share of `expected_total`; its
/// excess is `observed - expected` (floored at 0); its share is that over the sum of
/// positive excesses. A value every device shares (one enrollment method for the whole
/// tenant) explains everything and says nothing, hence the over-representation test. When
/// the window holds no more failures than expected there is no excess to explain.
pub fn concentration(
    dimension: &str,
    window: &[(String, u64)],
    population: &[(String, u64)],
    expected_total: f64,
    min_share: f64,
) -> Vec<Concentration> {
    let observed: u64 = window.iter().map(|(_, n)| n).sum();
    if observed as f64 <= expected_total {
        return Vec::new();
    }
    let pop_total: u64 = population.iter().map(|(_, n)| n).sum();
    let pop_share = |v: &str| {
        if pop_total == 0 {
            0.0
        } else {
            population
                .iter()
                .find(|(pv, _)| pv == v)
                .map_or(0.0, |(_, n)| *n as f64 / pop_total as f64)
        }
    };
    let excess: Vec<(&String, f64, f64)> = window
        .iter()
        .map(|(v, n)| {
            let ps = pop_share(v);
            (v, (*n as f64 - expected_total * ps).max(0.0), ps)
        })
        .collect();
    let total: f64 = excess.iter().map(|(_, e, _)| e).sum();
    if total <= 0.0 {
        return Vec::new();
    }
    let mut out: Vec<Concentration> = excess
        .into_iter()
        .map(|(v, e, ps)| Concentration {
            dimension: dimension.to_owned(),
            value: v.clone(),
            share: e / total,
            baseline_share: ps,
        })
        .filter(|c| {
            c.share >= min_share && c.share > 0.0 && c.share - c.baseline_share >= min_share
        })
        .collect();
    out.sort_by(|a, b| lift(b).total_cmp(&lift(a)).then(a.value.cmp(&b.value)));
    out
}

/// How much more of the excess a value explains than its share of the population.
pub fn lift(c: &Concentration) -> f64 {
    c.share - c.baseline_share
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn c(failures: u64, attempts: u64) -> Counts {
        Counts { failures, attempts }
    }

    /// The Poisson test (dispersion 1) against a baseline's counts.
    fn assess(
        window: Counts,
        devices: u64,
        base: Counts,
        cfg: &SpikeConfig,
        resolve_ratio: f64,
    ) -> Assessment {
        super::assess(
            window,
            devices,
            Expectation::from_baseline(base, cfg.baseline_z),
            1.0,
            cfg,
            resolve_ratio,
        )
    }

    #[test]
    fn wilson_matches_published_values() {
        // 10 of 100 at z = 1.96: [0.0552, 0.1744] (Newcombe 1998, table I style check).
        let (l, u) = wilson(10, 100, 1.96);
        assert!((l - 0.0552).abs() < 1e-4, "{l}");
        assert!((u - 0.1744).abs() < 1e-4, "{u}");
        assert_eq!(wilson(0, 0, 3.0), (0.0, 1.0));
    }

    #[test]
    fn large_real_spike_breaches_and_guards_hold() {
        let cfg = SpikeConfig::default();
        let base = c(200, 10_000); // 2 %
        let a = assess(c(30, 300), 25, base, &cfg, 1.5); // 10 %
        assert_eq!(a.verdict, Verdict::Breach);
        assert!((a.expected_count - 300.0 * 200.5 / 10_001.0).abs() < 1e-9);
        // Same rate, but only three devices: never pages.
        assert_eq!(
            assess(c(30, 300), 3, base, &cfg, 1.5).verdict,
            Verdict::Hold
        );
        // Large tenant, moderate increase (3.6 % vs 2 %, 1.8x): real but not large.
        let big = assess(c(3_600, 100_000), 2_000, base, &cfg, 1.5);
        assert_eq!(big.verdict, Verdict::Hold);
        // Back to baseline.
        assert_eq!(
            assess(c(6, 300), 6, base, &cfg, 1.5).verdict,
            Verdict::Recovered
        );
        assert_eq!(assess(c(0, 0), 0, base, &cfg, 1.5).verdict, Verdict::NoData);
        // A thin baseline (2 of 40) cannot make 12 of 60 real.
        assert_eq!(
            assess(c(12, 60), 10, c(2, 40), &cfg, 1.5).verdict,
            Verdict::Hold
        );
    }

    #[test]
    fn poisson_tail_matches_known_values() {
        // P(X >= 10 | 3) = 0.001102488 (1 - ppois(9, 3) in R).
        assert!((poisson_sf(10, 3.0) - 0.001_102_488).abs() < 1e-8);
        // P(X >= 1 | 0.5) = 1 - e^-0.5.
        assert!((poisson_sf(1, 0.5) - (1.0 - (-0.5f64).exp())).abs() < 1e-12);
        assert_eq!(poisson_sf(3, 3.0), 1.0);
        // Large counts stay finite and tiny: 2000 observed against 1000 expected.
        let p = poisson_sf(2_000, 1_000.0);
        assert!(p > 0.0 && p < 1e-100, "{p}");
        assert!((ln_factorial(20) - 42.335_616_460_753_485).abs() < 1e-9);
    }

    /// Poisson-ish binomial draws: `n` attempts each failing with `p`.
    fn draw(rng: &mut StdRng, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| rng.gen_bool(p)).count() as u64
    }

    /// Four quiet weeks of 5-minute windows for a mid-size tenant (200 attempts per window in
    /// business hours, 50 at night, 3 % failing), then a fifth week: quiet except for a x5
    /// spike lasting 30 minutes from Tuesday 10:00. No quiet window breaches; the spike
    /// breaches within its first two windows.
    #[test]
    fn generated_series_quiet_weeks_and_a_known_spike() {
        let cfg = SpikeConfig::default();
        let mut rng = StdRng::seed_from_u64(9);
        let windows_per_week = 7 * 24 * 12;
        let attempts = |i: usize| -> u64 {
            let hour = (i / 12) % 24;
            if (8..18).contains(&hour) { 200 } else { 50 }
        };
        let p = 0.03;
        let mut history: Vec<Counts> = Vec::new();
        let mut false_alerts = 0;
        let spike_start = 24 * 12 + 10 * 12;
        let mut first_breach = None;
        for week in 0..5 {
            for i in 0..windows_per_week {
                let n = attempts(i);
                let spike = week == 4 && (spike_start..spike_start + 6).contains(&i);
                let x = draw(&mut rng, n, if spike { p * 5.0 } else { p });
                // Rolling 24 h baseline from history (the seasonal one behaves the same on
                // a stationary series).
                let start = history.len().saturating_sub(288);
                let mut base = Counts::default();
                for h in &history[start..] {
                    base.add(*h);
                }
                let devices = x.min(n); // one failure per device at most in this model
                let v = assess(c(x, n), devices, base, &cfg, 1.5).verdict;
                if v == Verdict::Breach && !spike {
                    false_alerts += 1;
                }
                if spike && v == Verdict::Breach && first_breach.is_none() {
                    first_breach = Some(i - spike_start);
                }
                history.push(c(x, n));
            }
        }
        assert_eq!(false_alerts, 0, "false alerts over 5 simulated weeks");
        assert!(
            matches!(first_breach, Some(0 | 1)),
            "spike detected at window {first_breach:?}"
        );
    }

    /// A window of `sessions` first attempts failing with `p`, where each failing device
    /// retries (and fails again) 0 to `max_retries` times within the window, as auto-enrollment
    /// tasks do: failures come in clusters, and the retries are attempts too.
    fn clustered(rng: &mut StdRng, sessions: u64, p: f64, max_retries: u64) -> Counts {
        let mut w = c(0, sessions);
        for _ in 0..draw(rng, sessions, p) {
            let k = 1 + rng.gen_range(0..=max_retries);
            w.failures += k;
            w.attempts += k - 1;
        }
        w
    }

    /// Rolling baseline of the last `n` windows, and the dispersion of those windows against
    /// their own rate (what the evaluator estimates from the key's history).
    fn rolling(history: &[Counts], n: usize, cfg: &SpikeConfig) -> (Counts, f64) {
        let h = &history[history.len().saturating_sub(n)..];
        let mut base = Counts::default();
        for w in h {
            base.add(*w);
        }
        let r = base.rate();
        let bins: Vec<(u64, f64)> = h
            .iter()
            .map(|w| (w.failures, w.attempts as f64 * r))
            .collect();
        (base, dispersion(&bins, cfg.min_failures))
    }

    #[test]
    fn dispersion_is_one_for_poisson_counts_and_grows_with_clusters() {
        let cfg = SpikeConfig::default();
        let mut rng = StdRng::seed_from_u64(1);
        let plain: Vec<Counts> = (0..288)
            .map(|_| c(draw(&mut rng, 400, 0.03), 400))
            .collect();
        let (_, d) = rolling(&plain, 288, &cfg);
        assert!((1.0..1.3).contains(&d), "{d}");
        // 0-3 retries each: variance/mean = E[K^2]/E[K] = 7.5/2.5 = 3 for the failures.
        let clus: Vec<Counts> = (0..288)
            .map(|_| clustered(&mut rng, 400, 0.03, 3))
            .collect();
        let (_, d) = rolling(&clus, 288, &cfg);
        assert!((2.3..3.7).contains(&d), "{d}");
        // Too little history to estimate from: Poisson.
        assert_eq!(dispersion(&[(1, 0.1), (0, 0.1), (0, 0.1)], 10), 1.0);
        assert_eq!(dispersion(&[(30, 10.0)], 10), 1.0);
        // Scaled test: 40 against 15 is far out for Poisson, less so with dispersion 3.
        assert!(quasi_poisson_sf(40, 15.0, 1.0) < 1e-6);
        assert!(quasi_poisson_sf(40, 15.0, 3.0) > 1e-4);
        assert_eq!(
            quasi_poisson_sf(40, 15.0, 0.5),
            quasi_poisson_sf(40, 15.0, 1.0)
        );
    }

    /// Quiet weeks where every failing device retries up to 5 times (a busy tenant: 600
    /// sessions per 5 minutes in business hours, 150 at night, 2 % failing), then a x5 spike.
    /// The plain Poisson test takes the clusters for spikes; with the dispersion estimated
    /// from the rolling day no quiet window breaches, and the spike still breaches in its
    /// first two windows.
    #[test]
    fn clustered_quiet_weeks_need_the_dispersion() {
        let cfg = SpikeConfig::default();
        let mut rng = StdRng::seed_from_u64(7);
        let per_day = 288;
        let sessions = |i: usize| -> u64 {
            if (8..18).contains(&((i / 12) % 24)) {
                600
            } else {
                150
            }
        };
        let mut history: Vec<Counts> = Vec::new();
        let (mut poisson_false, mut quasi_false) = (0, 0);
        let spike_start = 5 * 7 * per_day - 3 * per_day + 10 * 12;
        let mut first_breach = None;
        for i in 0..5 * 7 * per_day {
            let spike = (spike_start..spike_start + 6).contains(&i);
            let w = clustered(&mut rng, sessions(i), if spike { 0.1 } else { 0.02 }, 5);
            if history.len() >= per_day {
                let (base, d) = rolling(&history, per_day, &cfg);
                let e = Expectation::from_baseline(base, cfg.baseline_z);
                let devices = w.failures / 2;
                let plain = super::assess(w, devices, e, 1.0, &cfg, 1.5).verdict;
                let quasi = super::assess(w, devices, e, d, &cfg, 1.5).verdict;
                if !spike {
                    poisson_false += usize::from(plain == Verdict::Breach);
                    quasi_false += usize::from(quasi == Verdict::Breach);
                } else if quasi == Verdict::Breach && first_breach.is_none() {
                    first_breach = Some(i - spike_start);
                }
            }
            history.push(w);
        }
        assert_eq!(quasi_false, 0, "false alerts with the dispersion");
        assert!(
            poisson_false > 0,
            "the plain Poisson test should be fooled here"
        );
        assert!(
            matches!(first_breach, Some(0 | 1)),
            "spike detected at window {first_breach:?}"
        );
    }

    /// Two tenants in different time zones with different failure rates (1 % and 6 %): the
    /// pooled rate of the two moves with whose working day it is. Against a pooled daily
    /// baseline that alone looks like a spike; against the mix-adjusted expectation (each
    /// tenant's own rate times its current attempts) it does not.
    #[test]
    fn a_moving_tenant_mix_is_not_a_spike() {
        let cfg = SpikeConfig::default();
        let mut rng = StdRng::seed_from_u64(3);
        let busy = |hour: usize| (8..18).contains(&(hour % 24));
        let mut hist: Vec<(Counts, Counts)> = Vec::new();
        let (mut pooled_false, mut mixed_false) = (0, 0);
        for i in 0..7 * 288 {
            let hour = i / 12;
            let na = if busy(hour) { 500 } else { 20 };
            let nb = if busy(hour + 18) { 500 } else { 20 };
            let a = c(draw(&mut rng, na, 0.01), na);
            let b = c(draw(&mut rng, nb, 0.06), nb);
            if hist.len() >= 288 {
                let day = &hist[hist.len() - 288..];
                let (mut ba, mut bb) = (Counts::default(), Counts::default());
                for (x, y) in day {
                    ba.add(*x);
                    bb.add(*y);
                }
                let mut pooled = ba;
                pooled.add(bb);
                let mut w = a;
                w.add(b);
                let z = cfg.baseline_z;
                let e_pooled = Expectation::from_baseline(pooled, z);
                let e_mix = Expectation::mix(&[
                    (a.attempts, Expectation::from_baseline(ba, z)),
                    (b.attempts, Expectation::from_baseline(bb, z)),
                ]);
                let v = |e| super::assess(w, w.failures, e, 1.0, &cfg, 1.5).verdict;
                pooled_false += usize::from(v(e_pooled) == Verdict::Breach);
                mixed_false += usize::from(v(e_mix) == Verdict::Breach);
            }
            hist.push((a, b));
        }
        assert_eq!(mixed_false, 0);
        assert!(
            pooled_false > 0,
            "the pooled baseline should be fooled here"
        );
    }

    #[test]
    fn concentration_names_the_injected_value() {
        let window = vec![("ios".to_owned(), 90), ("windows".to_owned(), 12)];
        let population = vec![("ios".to_owned(), 100), ("windows".to_owned(), 900)];
        let out = concentration("platform", &window, &population, 20.0, 0.2);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].value, "ios");
        // ios expected 2, excess 88; windows expected 18, excess 0.
        assert!((out[0].share - 1.0).abs() < 1e-12);
        assert!((out[0].baseline_share - 0.1).abs() < 1e-12);
        let out = concentration("platform", &window, &population, 200.0, 0.2);
        assert!(out.is_empty(), "no excess, no concentration: {out:?}");
        // Everyone enrolls the same way: that value explains all and says nothing.
        let out = concentration(
            "enrollment_method",
            &[("entra_join".to_owned(), 90)],
            &[("entra_join".to_owned(), 1000)],
            20.0,
            0.2,
        );
        assert!(out.is_empty(), "{out:?}");
    }

    /// A steady key (60 attempts a minute, 2 % failing), evaluated every minute over a
    /// 5-minute window, and x10 spikes starting between two evaluations. Testing the newest
    /// two minutes too (each scale at alpha / 2) fires sooner than the whole window alone at
    /// alpha, and a quiet week raises nothing at either.
    #[test]
    fn the_newest_part_of_the_window_fires_sooner_and_a_quiet_week_stays_quiet() {
        let cfg = SpikeConfig::default();
        let mut split = cfg.clone();
        split.alpha /= 2.0;
        // A day of history: 86,400 attempts, 2 % failing.
        let e = Expectation::from_baseline(c(1_728, 86_400), cfg.baseline_z);
        let sum = |mins: &[Counts]| {
            mins.iter().fold(Counts::default(), |mut t, m| {
                t.add(*m);
                t
            })
        };
        // Whether the evaluation at the end of `mins` fires (failures on distinct devices).
        let fires = |mins: &[Counts], onset: bool| {
            let window = sum(&mins[mins.len() - 5..]);
            let recent = sum(&mins[mins.len() - 2..]);
            let test = if onset { &split } else { &cfg };
            let a = super::assess(window, window.failures, e, 1.0, test, 1.5);
            a.verdict == Verdict::Breach
                || (onset && onset_eligible(&a, test) && onset_breach(recent, e, 1.0, test))
        };
        let mut rng = StdRng::seed_from_u64(11);
        let minute = |rng: &mut StdRng, p: f64| c(draw(rng, 60, p), 60);
        // Quiet week.
        let mut quiet: Vec<Counts> = (0..4).map(|_| minute(&mut rng, 0.02)).collect();
        let (mut plain_false, mut onset_false) = (0, 0);
        for _ in 0..7 * 1440 {
            quiet.push(minute(&mut rng, 0.02));
            plain_false += usize::from(fires(&quiet, false));
            onset_false += usize::from(fires(&quiet, true));
            quiet.remove(0);
        }
        assert_eq!((plain_false, onset_false), (0, 0));
        // 200 spikes: 5 quiet minutes, then x10; the evaluation that fires first (1 = the
        // first evaluation after the spike began).
        let (mut plain, mut onset) = (Vec::new(), Vec::new());
        for _ in 0..200 {
            let mut mins: Vec<Counts> = (0..5).map(|_| minute(&mut rng, 0.02)).collect();
            let (mut p, mut o) = (None, None);
            for tick in 1..=10 {
                mins.push(minute(&mut rng, 0.2));
                if p.is_none() && fires(&mins, false) {
                    p = Some(tick);
                }
                if o.is_none() && fires(&mins, true) {
                    o = Some(tick);
                }
            }
            plain.push(p.unwrap_or(11));
            onset.push(o.unwrap_or(11));
        }
        let within2 = |v: &[i32]| v.iter().filter(|&&t| t <= 2).count();
        let mean = |v: &[i32]| v.iter().sum::<i32>() as f64 / v.len() as f64;
        eprintln!(
            "x10 spikes fired within two evaluations: {}/200 with the newest part tested, {}/200 \
             without; mean evaluation {:.2} vs {:.2}",
            within2(&onset),
            within2(&plain),
            mean(&onset),
            mean(&plain)
        );
        assert!(
            within2(&onset) > within2(&plain) && mean(&onset) < mean(&plain),
            "within two evaluations: onset {} vs plain {}; mean onset {} vs plain {}",
            within2(&onset),
            within2(&plain),
            mean(&onset),
            mean(&plain)
        );
        // Never later: the whole window runs at alpha / 2, which can delay it, but the
        // newest part then fires.
        assert!(
            onset.iter().zip(&plain).all(|(o, p)| o <= p),
            "onset {onset:?}\nplain {plain:?}"
        );
    }
}
