//! The `[alerts]` section of the analyzer's TOML file: cadence, detection knobs, lifecycle
//! timings and plain threshold rules. Every knob has a documented default (see
//! `deploy/analyzer.toml`), and every value is validated with an error naming the key.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::rules::{RuleExpr, parse_rule};
use crate::query::engine::Dimension;

/// `[alerts]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Evaluate at all (default true).
    pub enabled: bool,
    /// How often rules are evaluated (default 60s, from 5s to 1h).
    #[serde(deserialize_with = "duration")]
    pub evaluation_interval: Duration,
    /// Length of the current window compared with the baseline (default 5m, 1m..=6h).
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// Keys evaluated per tenant besides `category` (default none): any of `code`,
    /// `platform`, `os_version`, `enrollment_method`.
    pub dimensions: Vec<String>,
    /// Also evaluate every key over all tenants together (tenant `*` in alerts), for whoever
    /// runs many tenants: a spike spread thin over tenants shows there, and its concentration
    /// names the tenants that explain it (default false). Only all-tenant API keys see
    /// these alerts, and only destinations without a `tenants` filter receive them. Their
    /// expectation is mix-adjusted (`spike.mix_adjusted`).
    pub all_tenants: bool,
    pub spike: SpikeConfig,
    pub lifecycle: LifecycleConfig,
    /// Plain threshold rules (`[[alerts.rules]]`).
    pub rules: Vec<RuleConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            evaluation_interval: Duration::from_secs(60),
            window: Duration::from_secs(300),
            dimensions: Vec::new(),
            all_tenants: false,
            spike: SpikeConfig::default(),
            lifecycle: LifecycleConfig::default(),
            rules: Vec::new(),
        }
    }
}

/// `[alerts.spike]`: the baseline-aware rate test.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpikeConfig {
    /// Run the spike test at all (default true; threshold rules run either way).
    pub enabled: bool,
    /// Fire only when the window's failure rate is at least this multiple of the baseline
    /// rate (default 2.0).
    pub rate_ratio: f64,
    /// Significance of the one-sided Poisson test of the window's failures against the
    /// baseline's upper rate (default 1e-6: with 288 five-minute windows a day, a steady key
    /// raises a false alert about once in 10 years).
    pub alpha: f64,
    /// z of the Wilson upper bound taken as the baseline's rate in the test, so that a thin
    /// baseline cannot make a small bump look real (default 2.0).
    pub baseline_z: f64,
    /// Minimum terminal attempts (succeeded + failed) in the window (default 20).
    pub min_attempts: u64,
    /// Minimum failures of the key in the window (default 10).
    pub min_failures: u64,
    /// Minimum distinct devices failing on the key in the window (default 5): a tenant with
    /// three devices never pages anyone, however often they retry.
    pub min_affected_devices: u64,
    /// Weeks of same-hour-of-week history used as the seasonal baseline (default 4).
    pub seasonal_weeks: u32,
    /// Weeks with at least `min_baseline_attempts` needed before the seasonal baseline is
    /// used; younger tenants use the rolling baseline (default 2).
    pub seasonal_min_weeks: u32,
    /// Rolling baseline span, ending at the start of the current hour (default 24h).
    #[serde(deserialize_with = "duration")]
    pub rolling: Duration,
    /// Attempts a baseline needs to be trusted; below it the key is not evaluated by the spike
    /// test (threshold rules still are) (default 50).
    pub min_baseline_attempts: u64,
    /// Dimension values reported in `concentration` must explain at least this share of the
    /// excess failures (default 0.2).
    pub min_concentration_share: f64,
    /// Widen the significance test by the key's overdispersion (default true): enrollment
    /// failures come in clusters (retries, provisioning waves) and their rate moves over the
    /// day, so a window's count varies more than a Poisson count. The dispersion is the
    /// variance over the mean of the key's history over the `rolling` span, cut into bins of
    /// the window's length (5-minute bins for windows shorter than 5 minutes), against the
    /// key's rate over that span; at least 1. It is estimated only for keys that would breach without it,
    /// and cached for the hour. `false` is the plain Poisson test.
    pub overdispersion: bool,
    /// Fleet-wide keys (`[alerts] all_tenants`) of category and code expect, for each tenant,
    /// that tenant's own baseline rate times its attempts in the window, summed (default
    /// true): the pooled rate of tenants in different time zones moves with whose working
    /// day it is, which is no spike. `false` compares with the pooled baseline rate.
    /// (Platform, OS version and method keys have their own population and keep the pooled
    /// baseline.)
    pub mix_adjusted: bool,
    /// Also test the newest part of the window, this many evaluation intervals long (default
    /// 2; 0 tests the whole window only), so that a sharp spike fires within two evaluations
    /// of its start instead of once enough of the whole window is spike: a spike that began
    /// 30 s ago fills a quarter of a 2-minute window, and its rate there is diluted fourfold.
    /// A key breaches on the newest part when the whole window passes the volume guards and
    /// is above `lifecycle.resolve_ratio` x baseline, and the newest part is both `rate_ratio`
    /// x baseline and significant, with the same dispersion. Testing two scales
    /// doubles the chances of noise passing, so when the newest part is shorter than the
    /// window each test runs at `alpha / 2` (Bonferroni): the false-alert rate per key stays
    /// `alpha`.
    pub onset_intervals: u32,
}

impl Default for SpikeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rate_ratio: 2.0,
            alpha: 1e-6,
            baseline_z: 2.0,
            min_attempts: 20,
            min_failures: 10,
            min_affected_devices: 5,
            seasonal_weeks: 4,
            seasonal_min_weeks: 2,
            rolling: Duration::from_secs(86_400),
            min_baseline_attempts: 50,
            min_concentration_share: 0.2,
            overdispersion: true,
            mix_adjusted: true,
            onset_intervals: 2,
        }
    }
}

/// `[alerts.lifecycle]`: pending -> firing -> resolved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// How long a breach must last before pending turns firing (default 0s: the statistical
    /// test already rejects noise; raise it to demand persistence).
    #[serde(deserialize_with = "duration")]
    pub pending_for: Duration,
    /// A firing alert resolves once its rate stayed below `resolve_ratio` x baseline for this
    /// long (default 5m): hysteresis against flapping.
    #[serde(deserialize_with = "duration")]
    pub resolve_after: Duration,
    /// Rate multiple below which an alert counts as recovering (default 1.5).
    pub resolve_ratio: f64,
    /// Repeat the notification of an unacknowledged firing alert this often (default 4h;
    /// "0s" never repeats).
    #[serde(deserialize_with = "duration")]
    pub renotify_every: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            pending_for: Duration::ZERO,
            resolve_after: Duration::from_secs(300),
            resolve_ratio: 1.5,
            renotify_every: Duration::from_secs(4 * 3600),
        }
    }
}

/// `[[alerts.rules]]`: a plain threshold rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name, `[A-Za-z0-9_.-]{1,64}`.
    pub name: String,
    /// `failure_rate(category=license) > 20% over 15m` or `count(category=tpm) > 50 over 1h`.
    pub expr: String,
    /// Only this tenant (default: every tenant).
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Validated `[alerts]` settings.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    pub enabled: bool,
    pub evaluation_interval: Duration,
    pub window: Duration,
    pub dimensions: Vec<Dimension>,
    pub all_tenants: bool,
    pub spike: SpikeConfig,
    pub lifecycle: LifecycleConfig,
    pub rules: Vec<Rule>,
}

impl AlertSettings {
    /// The length of the newest part of the window that the spike test also looks at
    /// (`spike.onset_intervals` evaluation intervals), when that is shorter than the window.
    pub fn onset(&self) -> Option<Duration> {
        let onset = self
            .evaluation_interval
            .checked_mul(self.spike.onset_intervals)?;
        (!onset.is_zero() && onset < self.window).then_some(onset)
    }

    /// The spike test's settings as each scale runs them: `alpha` halved when the newest
    /// part of the window is tested too (Bonferroni over the two scales).
    pub fn spike_test(&self) -> SpikeConfig {
        let mut s = self.spike.clone();
        if self.onset().is_some() {
            s.alpha /= 2.0;
        }
        s
    }
}

/// A validated threshold rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub tenant: Option<String>,
    pub expr: RuleExpr,
    pub text: String,
}

/// A rejected setting: the key and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct SettingError {
    pub field: String,
    pub reason: String,
}

fn err(field: &str, reason: impl Into<String>) -> SettingError {
    SettingError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Dimensions that may be evaluated besides `category`.
pub const EXTRA_DIMENSIONS: &[&str] = &["code", "platform", "os_version", "enrollment_method"];

/// Checks a rule name.
pub fn valid_rule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl AlertsConfig {
    /// Validates every knob; `categories` is the catalog's vocabulary.
    pub fn validate(&self, categories: &[String]) -> Result<AlertSettings, SettingError> {
        let secs = self.evaluation_interval.as_secs_f64();
        if !(5.0..=3600.0).contains(&secs) {
            return Err(err("alerts.evaluation_interval", "must be from 5s to 1h"));
        }
        let w = self.window.as_secs();
        if !(60..=6 * 3600).contains(&w) {
            return Err(err("alerts.window", "must be from 1m to 6h"));
        }
        let mut dimensions = Vec::new();
        for d in &self.dimensions {
            match (EXTRA_DIMENSIONS.contains(&d.as_str()), Dimension::parse(d)) {
                (true, Some(dim)) => dimensions.push(dim),
                _ => {
                    return Err(err(
                        "alerts.dimensions",
                        format!("{d:?} is not one of: {}", EXTRA_DIMENSIONS.join(", ")),
                    ));
                }
            }
        }
        let s = &self.spike;
        if !(s.rate_ratio.is_finite() && s.rate_ratio > 1.0) {
            return Err(err("alerts.spike.rate_ratio", "must be greater than 1"));
        }
        if !(s.alpha > 0.0 && s.alpha < 0.5) {
            return Err(err("alerts.spike.alpha", "must be above 0 and below 0.5"));
        }
        if !(s.baseline_z.is_finite() && s.baseline_z >= 0.0 && s.baseline_z <= 10.0) {
            return Err(err("alerts.spike.baseline_z", "must be from 0 to 10"));
        }
        if s.seasonal_weeks > 12 {
            return Err(err("alerts.spike.seasonal_weeks", "must be at most 12"));
        }
        if s.onset_intervals > 1000 {
            return Err(err("alerts.spike.onset_intervals", "must be at most 1000"));
        }
        if s.seasonal_min_weeks > s.seasonal_weeks {
            return Err(err(
                "alerts.spike.seasonal_min_weeks",
                "must not exceed seasonal_weeks",
            ));
        }
        let r = s.rolling.as_secs();
        if !(3600..=30 * 86_400).contains(&r) || !r.is_multiple_of(3600) {
            return Err(err(
                "alerts.spike.rolling",
                "must be whole hours from 1h to 30d",
            ));
        }
        if !(0.0..=1.0).contains(&s.min_concentration_share) {
            return Err(err(
                "alerts.spike.min_concentration_share",
                "must be from 0 to 1",
            ));
        }
        let l = &self.lifecycle;
        if !(l.resolve_ratio.is_finite()
            && l.resolve_ratio >= 1.0
            && l.resolve_ratio <= s.rate_ratio)
        {
            return Err(err(
                "alerts.lifecycle.resolve_ratio",
                "must be from 1 to alerts.spike.rate_ratio",
            ));
        }
        let mut rules: Vec<Rule> = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let field = format!("alerts.rules[{i}]");
            if !valid_rule_name(&r.name) {
                return Err(err(
                    &format!("{field}.name"),
                    "must be 1 to 64 letters, digits, '_', '.' or '-'",
                ));
            }
            if rules.iter().any(|x| x.name == r.name) {
                return Err(err(
                    &format!("{field}.name"),
                    format!("{:?} is used twice", r.name),
                ));
            }
            let expr = parse_rule(&r.expr, categories)
                .map_err(|reason| err(&format!("{field}.expr"), reason))?;
            rules.push(Rule {
                name: r.name.clone(),
                tenant: r.tenant.clone(),
                expr,
                text: r.expr.clone(),
            });
        }
        Ok(AlertSettings {
            enabled: self.enabled,
            evaluation_interval: self.evaluation_interval,
            window: self.window,
            dimensions,
            all_tenants: self.all_tenants,
            spike: self.spike.clone(),
            lifecycle: self.lifecycle.clone(),
            rules,
        })
    }
}

/// Parses `90s`, `15m`, `1h`, `7d` (a whole number and one unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?} has no unit; use s, m, h or d (e.g. \"15m\")"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} does not start with a whole number"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?} has unit {unit:?}; use s, m, h or d")),
    };
    n.checked_mul(mult)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        let cats = vec!["license".to_owned(), "tpm".to_owned()];
        let c: AlertsConfig = toml::from_str("evaluation_interval = \"15s\"").unwrap();
        let s = c.validate(&cats).unwrap();
        assert_eq!(s.evaluation_interval, Duration::from_secs(15));
        assert_eq!(s.window, Duration::from_secs(300));
        assert_eq!(s.spike.rate_ratio, 2.0);
        let c: AlertsConfig = toml::from_str("evaluation_interval = \"4s\"").unwrap();
        assert_eq!(
            c.validate(&cats).unwrap_err(),
            err("alerts.evaluation_interval", "must be from 5s to 1h")
        );
        assert!(toml::from_str::<AlertsConfig>("evaluation_interval = \"15\"").is_err());
        assert!(toml::from_str::<AlertsConfig>("nope = 1").is_err());
        let c: AlertsConfig = toml::from_str(
            "[[rules]]\nname = \"lic\"\nexpr = \"failure_rate(category=license) > 20% over 15m\"\n",
        )
        .unwrap();
        assert_eq!(c.validate(&cats).unwrap().rules.len(), 1);
        let c: AlertsConfig = toml::from_str(
            "[[rules]]\nname = \"x\"\nexpr = \"count(category=nope) > 5 over 1h\"\n",
        )
        .unwrap();
        assert_eq!(c.validate(&cats).unwrap_err().field, "alerts.rules[0].expr");
        let c: AlertsConfig = toml::from_str("dimensions = [\"stage\"]").unwrap();
        assert_eq!(c.validate(&cats).unwrap_err().field, "alerts.dimensions");
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_duration("5 minutes").is_err());
    }
}
