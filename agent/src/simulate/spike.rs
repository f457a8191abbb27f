//! Failure spikes: `<category>:x<factor>@<offset>[+<duration>]`, e.g. `license:x20@10m` (from
//! ten minutes into the run until its end, licence failures are twenty times as frequent as
//! normal) or `network:x5@30s+2m`.

use std::time::Duration;

use super::model::Category;

/// One injected spike.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    pub category: Category,
    /// Multiplier of the category's normal share of events (>= 1).
    pub factor: f64,
    /// Start, relative to the start of the run.
    pub start: Duration,
    /// Length; `None` lasts until the end of the run.
    pub duration: Option<Duration>,
}

impl Spike {
    /// Whether the spike is on at `elapsed` into the run.
    pub fn active_at(&self, elapsed: Duration) -> bool {
        elapsed >= self.start && self.duration.is_none_or(|d| elapsed < self.start + d)
    }
}

impl std::str::FromStr for Spike {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let usage = "expected <category>:x<factor>@<offset>[+<duration>], e.g. license:x20@10m";
        let (category, rest) = spec
            .split_once(':')
            .ok_or_else(|| format!("spike {spec:?}: missing ':' ({usage})"))?;
        let category: Category = category
            .parse()
            .map_err(|e| format!("spike {spec:?}: {e}"))?;
        let rest = rest
            .strip_prefix('x')
            .ok_or_else(|| format!("spike {spec:?}: factor must start with 'x' ({usage})"))?;
        let (factor, when) = rest
            .split_once('@')
            .ok_or_else(|| format!("spike {spec:?}: missing '@offset' ({usage})"))?;
        let factor: f64 = factor
            .parse()
            .map_err(|_| format!("spike {spec:?}: factor {factor:?} is not a number"))?;
        if !(1.0..=1000.0).contains(&factor) {
            return Err(format!(
                "spike {spec:?}: factor {factor} must be between 1 and 1000"
            ));
        }
        let (start, duration) = match when.split_once('+') {
            Some((start, duration)) => (
                start,
                Some(
                    parse_duration(duration)
                        .map_err(|e| format!("spike {spec:?}: duration: {e}"))?,
                ),
            ),
            None => (when, None),
        };
        let start = parse_duration(start).map_err(|e| format!("spike {spec:?}: offset: {e}"))?;
        Ok(Self {
            category,
            factor,
            start,
            duration,
        })
    }
}

/// Parses `90`, `90s`, `10m`, `1h`, `1h30m`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut number = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let value: u64 = number
            .parse()
            .map_err(|_| format!("{text:?}: expected a number before {c:?}"))?;
        number.clear();
        let unit = match c {
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                Duration::from_millis(value)
            }
            's' => Duration::from_secs(value),
            'm' => Duration::from_secs(value * 60),
            'h' => Duration::from_secs(value * 3600),
            'd' => Duration::from_secs(value * 86400),
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?} (use ms, s, m, h, d)"
                ));
            }
        };
        total += unit;
    }
    if !number.is_empty() {
        return Err(format!("{text:?}: number without a unit at the end"));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spikes_parse() {
        let spike: Spike = "license:x20@10m".parse().unwrap();
        assert_eq!(
            spike,
            Spike {
                category: Category::License,
                factor: 20.0,
                start: Duration::from_secs(600),
                duration: None
            }
        );
        let spike: Spike = "device_cap:x2.5@30s+1h30m".parse().unwrap();
        assert_eq!(spike.category, Category::DeviceLimit);
        assert_eq!(spike.duration, Some(Duration::from_secs(5400)));
        assert!(spike.active_at(Duration::from_secs(30)));
        assert!(!spike.active_at(Duration::from_secs(29)));
        assert!(!spike.active_at(Duration::from_secs(5430)));
    }

    #[test]
    fn bad_spikes_are_explained() {
        assert_eq!(
            "license@10m".parse::<Spike>().unwrap_err(),
            "spike \"license@10m\": missing ':' (expected <category>:x<factor>@<offset>[+<duration>], e.g. license:x20@10m)"
        );
        assert!(
            "nope:x2@1m"
                .parse::<Spike>()
                .unwrap_err()
                .contains("unknown category \"nope\"")
        );
        assert!(
            "license:x0.5@1m"
                .parse::<Spike>()
                .unwrap_err()
                .contains("between 1 and 1000")
        );
        assert!(
            "license:x2@5q"
                .parse::<Spike>()
                .unwrap_err()
                .contains("unknown unit 'q'")
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("10").is_ok());
        assert!(parse_duration("m").is_err());
    }
}
