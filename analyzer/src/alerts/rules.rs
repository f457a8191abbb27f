//! Plain threshold rules: `failure_rate(category=license) > 20% over 15m`,
//! `count(category=tpm, platform=windows) >= 50 over 1h`. Pure parsing and evaluation.

use std::time::Duration;

use serde::Serialize;

use super::config::parse_duration;
use crate::query::filters::{METHODS, PLATFORMS, STAGES};

/// What a rule measures over its window, per tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Matching failures / the tenant's terminal attempts (with the non-category filters).
    FailureRate,
    /// Matching failures.
    Count,
}

/// A parsed rule expression.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleExpr {
    pub metric: Metric,
    pub category: Option<String>,
    pub platform: Option<String>,
    pub method: Option<String>,
    pub os_version: Option<String>,
    pub stage: Option<String>,
    /// `>=` when true, `>` otherwise.
    pub inclusive: bool,
    /// A fraction for `failure_rate`, a number of failures for `count`.
    pub threshold: f64,
    #[serde(skip)]
    pub window: Duration,
}

impl RuleExpr {
    /// Whether `value` breaches the threshold.
    pub fn breached(&self, value: f64) -> bool {
        if self.inclusive {
            value >= self.threshold
        } else {
            value > self.threshold
        }
    }
}

/// Parses a rule; the error says what is wrong and where.
pub fn parse_rule(text: &str, categories: &[String]) -> Result<RuleExpr, String> {
    let t = text.trim();
    let open = t
        .find('(')
        .ok_or("expected METRIC(filters) OP VALUE over DURATION, e.g. \"count(category=tpm) > 50 over 1h\"")?;
    let metric = match t[..open].trim() {
        "failure_rate" => Metric::FailureRate,
        "count" => Metric::Count,
        m => return Err(format!("unknown metric {m:?}; use failure_rate or count")),
    };
    let close = t[open..]
        .find(')')
        .map(|i| i + open)
        .ok_or("missing ')' after the filters")?;
    let mut e = RuleExpr {
        metric,
        category: None,
        platform: None,
        method: None,
        os_version: None,
        stage: None,
        inclusive: false,
        threshold: 0.0,
        window: Duration::ZERO,
    };
    for part in t[open + 1..close]
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("filter {part:?} is not key=value"))?;
        let (k, v) = (k.trim(), v.trim().trim_matches('"'));
        let check = |allowed: &[&str]| {
            if allowed.contains(&v) {
                Ok(Some(v.to_owned()))
            } else {
                Err(format!("{k} must be one of: {}", allowed.join(", ")))
            }
        };
        match k {
            "category" => {
                if !categories.iter().any(|c| c == v) {
                    return Err(format!("unknown category {v:?}"));
                }
                e.category = Some(v.to_owned());
            }
            "platform" => e.platform = check(PLATFORMS)?,
            "enrollment_method" | "method" => e.method = check(METHODS)?,
            "stage" => e.stage = check(STAGES)?,
            "os_version" if !v.is_empty() && v.len() <= 64 => e.os_version = Some(v.to_owned()),
            _ => {
                return Err(format!(
                    "unknown filter {k:?}; use category, platform, enrollment_method, os_version or stage"
                ));
            }
        }
    }
    let rest = t[close + 1..].trim();
    let (inclusive, rest) = if let Some(r) = rest.strip_prefix(">=") {
        (true, r)
    } else if let Some(r) = rest.strip_prefix('>') {
        (false, r)
    } else {
        return Err("expected '>' or '>=' after the filters".into());
    };
    e.inclusive = inclusive;
    let (value, window) = rest
        .split_once(" over ")
        .ok_or("expected 'over DURATION' after the threshold")?;
    let value = value.trim();
    e.threshold = match metric {
        Metric::FailureRate => {
            let (num, pct) = match value.strip_suffix('%') {
                Some(n) => (n.trim(), true),
                None => (value, false),
            };
            let v: f64 = num
                .parse()
                .map_err(|_| format!("threshold {value:?} is not a number"))?;
            let v = if pct { v / 100.0 } else { v };
            if !(0.0..1.0).contains(&v) {
                return Err("a failure_rate threshold must be from 0% to below 100%".into());
            }
            v
        }
        Metric::Count => value
            .parse::<u64>()
            .map_err(|_| format!("threshold {value:?} is not a whole number"))?
            as f64,
    };
    e.window = parse_duration(window)?;
    if !(60..=7 * 86_400).contains(&e.window.as_secs()) {
        return Err("the window must be from 1m to 7d".into());
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cats() -> Vec<String> {
        vec!["license".into(), "tpm".into()]
    }

    #[test]
    fn parses_the_documented_forms() {
        let e = parse_rule("failure_rate(category=license) > 20% over 15m", &cats()).unwrap();
        assert_eq!(e.metric, Metric::FailureRate);
        assert_eq!(e.category.as_deref(), Some("license"));
        assert!((e.threshold - 0.2).abs() < 1e-12);
        assert_eq!(e.window, Duration::from_secs(900));
        assert!(!e.breached(0.2) && e.breached(0.21));
        let e = parse_rule(
            "count(category=tpm, platform=windows) >= 50 over 1h",
            &cats(),
        )
        .unwrap();
        assert_eq!(
            (e.metric, e.platform.as_deref(), e.inclusive, e.threshold),
            (Metric::Count, Some("windows"), true, 50.0)
        );
        assert!(e.breached(50.0));
    }

    #[test]
    fn errors_name_the_problem() {
        let c = cats();
        assert_eq!(
            parse_rule("rate(category=tpm) > 1 over 1h", &c).unwrap_err(),
            "unknown metric \"rate\"; use failure_rate or count"
        );
        assert_eq!(
            parse_rule("count(category=x) > 1 over 1h", &c).unwrap_err(),
            "unknown category \"x\""
        );
        assert_eq!(
            parse_rule("count(platform=amiga) > 1 over 1h", &c)
                .unwrap_err()
                .split(':')
                .next(),
            Some("platform must be one of")
        );
        assert_eq!(
            parse_rule("count() > 1.5 over 1h", &c).unwrap_err(),
            "threshold \"1.5\" is not a whole number"
        );
        assert_eq!(
            parse_rule("failure_rate() > 120% over 1h", &c).unwrap_err(),
            "a failure_rate threshold must be from 0% to below 100%"
        );
        assert_eq!(
            parse_rule("count() > 1 over 10s", &c).unwrap_err(),
            "the window must be from 1m to 7d"
        );
        assert!(parse_rule("count() < 1 over 1h", &c).is_err());
        assert!(parse_rule("count() > 1", &c).is_err());
    }
}
