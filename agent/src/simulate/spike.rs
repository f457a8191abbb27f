//! Failure spikes: `<category>:x<factor>@<offset>[+<duration>]`, e.g. `license:x20@10m` (from
//! ten minutes into the run until its end, licence failures are twenty times as frequent as
//! normal) or `network:x5@30s+2m`.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::model::Category;
use super::timeline::Timeline;

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

/// Where a spike falls on a run's timeline, in absolute times: what tests compare detection
/// times with (`--spike-report`).
#[derive(Debug, Clone, PartialEq)]
pub struct SpikeWindow {
    pub category: Category,
    pub factor: f64,
    pub start: OffsetDateTime,
    /// `None` when the spike lasts until the run is interrupted.
    pub end: Option<OffsetDateTime>,
}

impl SpikeWindow {
    /// The spike on `timeline`; a spike without a duration, or one longer than the run, ends
    /// with the run.
    pub fn on(spike: &Spike, timeline: &Timeline) -> Self {
        let end = match (spike.duration, timeline.end()) {
            (Some(d), Some(run_end)) => Some((spike.start + d).min(run_end)),
            (Some(d), None) => Some(spike.start + d),
            (None, run_end) => run_end,
        };
        Self {
            category: spike.category,
            factor: spike.factor,
            start: timeline.at(spike.start),
            end: end.map(|e| timeline.at(e)),
        }
    }

    /// One line of `--spike-report`:
    /// `{"category":"license","multiplier":20.0,"start":"...Z","end":"...Z"|null}`.
    pub fn json_line(&self) -> String {
        let fmt = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        serde_json::json!({
            "category": self.category.name(),
            "multiplier": self.factor,
            "start": fmt(self.start),
            "end": self.end.map(fmt),
        })
        .to_string()
    }

    /// The log line announcing the spike.
    pub fn describe(&self) -> String {
        let fmt = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        format!(
            "spike {} x{} from {} to {}",
            self.category.name(),
            self.factor,
            fmt(self.start),
            self.end
                .map_or_else(|| "the end of the run".to_owned(), fmt)
        )
    }
}

/// Writes the `--spike-report` file atomically (temporary file, then rename): one JSON object
/// per spike, one per line.
pub fn write_report(path: &std::path::Path, windows: &[SpikeWindow]) -> std::io::Result<()> {
    let mut text = String::new();
    for window in windows {
        text.push_str(&window.json_line());
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
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
    fn windows_are_absolute_and_end_with_the_run() {
        use time::macros::datetime;
        let timeline = Timeline::fixed(
            datetime!(2026-11-23 00:00:00 UTC),
            Duration::from_secs(86_400),
            Some(Duration::from_secs(3600)),
        );
        let bounded: Spike = "license:x20@23h+30m".parse().unwrap();
        let open: Spike = "network:x4@24h30m".parse().unwrap();
        let window = SpikeWindow::on(&bounded, &timeline);
        assert_eq!(
            window.json_line(),
            r#"{"category":"license","end":"2026-11-23T23:30:00Z","multiplier":20.0,"start":"2026-11-23T23:00:00Z"}"#
        );
        assert_eq!(
            SpikeWindow::on(&open, &timeline).end,
            Some(datetime!(2026-11-24 01:00:00 UTC))
        );
        let forever = Timeline::fixed(timeline.start, Duration::ZERO, None);
        let line = SpikeWindow::on(&open, &forever).json_line();
        assert!(line.contains(r#""end":null"#), "{line}");
        assert_eq!(
            SpikeWindow::on(&bounded, &timeline).describe(),
            "spike license x20 from 2026-11-23T23:00:00Z to 2026-11-23T23:30:00Z"
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
