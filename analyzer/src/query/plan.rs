//! Which tables answer a time range: the coarsest rollup for the aligned middle, finer ones
//! for the edges, raw rows for what is not hour-aligned. States from every segment are merged
//! in one `UNION ALL`, so unique counts stay merges of uniq states, never sums.

/// A table a segment reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Raw,
    Hourly,
    Daily,
}

impl Source {
    pub fn table(self) -> &'static str {
        match self {
            Source::Raw => "enrollment_events",
            Source::Hourly => "rollup_events_hourly",
            Source::Daily => "rollup_events_daily",
        }
    }
}

/// A half-open range `[from, to)` read from one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub source: Source,
    pub from: u32,
    pub to: u32,
}

/// The finest time resolution the query needs from its sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resolution {
    /// Sub-hour buckets: raw rows only.
    SubHour,
    /// Hour buckets: hourly rollup plus raw edges.
    Hour,
    /// Day buckets or no buckets: any rollup.
    Day,
}

const HOUR: u32 = 3_600;
const DAY: u32 = 86_400;

fn ceil_to(t: u32, step: u32) -> u32 {
    t.div_ceil(step).saturating_mul(step)
}

fn floor_to(t: u32, step: u32) -> u32 {
    t / step * step
}

/// Splits `[from, to)` into segments, coarsest first. `rollups` false forces raw.
pub fn plan(from: u32, to: u32, resolution: Resolution, rollups: bool) -> Vec<Segment> {
    let mut out = Vec::new();
    if from >= to {
        return out;
    }
    if !rollups || resolution == Resolution::SubHour {
        out.push(Segment {
            source: Source::Raw,
            from,
            to,
        });
        return out;
    }
    let (ds, de) = (ceil_to(from, DAY), floor_to(to, DAY));
    if resolution == Resolution::Day && ds < de {
        out.push(Segment {
            source: Source::Daily,
            from: ds,
            to: de,
        });
        hours(from, ds, &mut out);
        hours(de, to, &mut out);
    } else {
        hours(from, to, &mut out);
    }
    out
}

fn hours(from: u32, to: u32, out: &mut Vec<Segment>) {
    if from >= to {
        return;
    }
    let (hs, he) = (ceil_to(from, HOUR), floor_to(to, HOUR));
    if hs < he {
        out.push(Segment {
            source: Source::Hourly,
            from: hs,
            to: he,
        });
        if from < hs {
            out.push(Segment {
                source: Source::Raw,
                from,
                to: hs,
            });
        }
        if he < to {
            out.push(Segment {
                source: Source::Raw,
                from: he,
                to,
            });
        }
    } else {
        out.push(Segment {
            source: Source::Raw,
            from,
            to,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(segs: &[Segment]) -> Vec<(u32, u32)> {
        let mut v: Vec<_> = segs.iter().map(|s| (s.from, s.to)).collect();
        v.sort();
        v
    }

    #[test]
    fn aligned_day_range_is_one_daily_segment() {
        let p = plan(DAY, 3 * DAY, Resolution::Day, true);
        assert_eq!(
            p,
            vec![Segment {
                source: Source::Daily,
                from: DAY,
                to: 3 * DAY
            }]
        );
    }

    #[test]
    fn unaligned_range_uses_all_three_and_covers_exactly() {
        let from = DAY - HOUR - 10;
        let to = 3 * DAY + HOUR + 20;
        let p = plan(from, to, Resolution::Day, true);
        assert_eq!(
            covered(&p),
            vec![
                (from, DAY - HOUR),
                (DAY - HOUR, DAY),
                (DAY, 3 * DAY),
                (3 * DAY, 3 * DAY + HOUR),
                (3 * DAY + HOUR, to)
            ]
        );
        assert_eq!(p[0].source, Source::Daily);
        let h = plan(from, to, Resolution::Hour, true);
        assert!(h.iter().all(|s| s.source != Source::Daily));
        assert_eq!(
            covered(&h),
            vec![
                (from, DAY - HOUR),
                (DAY - HOUR, 3 * DAY + HOUR),
                (3 * DAY + HOUR, to)
            ]
        );
        assert_eq!(
            plan(from, to, Resolution::SubHour, true),
            vec![Segment {
                source: Source::Raw,
                from,
                to
            }]
        );
        assert_eq!(
            plan(from, to, Resolution::Day, false),
            vec![Segment {
                source: Source::Raw,
                from,
                to
            }]
        );
        assert_eq!(
            plan(10, 20, Resolution::Day, true),
            vec![Segment {
                source: Source::Raw,
                from: 10,
                to: 20
            }]
        );
    }
}
