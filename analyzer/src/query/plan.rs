//! Which tables answer a time range: the coarsest rollup family that holds every column the
//! question needs, at the coarsest grain that fits the range (Monday-aligned weeks, then days,
//! then hours), and raw rows for what is not hour-aligned. States from every segment are
//! merged in one `UNION ALL` (one branch per table, segments on the same table OR-ed: see
//! `Engine::union`), so unique counts stay merges of uniq states, never sums. A plan that is
//! a single raw segment is aggregated straight from the rows instead.
//!
//! Why several families and grains: merging uniq states costs about one hash insertion per
//! (device, bucket, key) combination stored, so a coarser key or a longer bucket is what makes
//! a dashboard query cheap, not merely fewer rows.

/// A set of rollup tables sharing one key (see migrations 0001 and 0002).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Every raw signal column (`rollup_events_*`): answers every aggregate question.
    Fine,
    /// tenant x outcome x platform x enrollment method only (`rollup_totals_*`).
    Totals,
}

impl Family {
    /// Columns a `Totals` rollup holds besides `bucket` and the states.
    pub const TOTALS_COLUMNS: &'static [&'static str] =
        &["tenant", "outcome", "platform", "enrollment_method"];

    /// The coarsest family holding every column in `needed`.
    pub fn for_columns<'a>(needed: impl IntoIterator<Item = &'a str>) -> Family {
        let mut needed = needed.into_iter();
        if needed.all(|c| Self::TOTALS_COLUMNS.contains(&c)) {
            Family::Totals
        } else {
            Family::Fine
        }
    }
}

/// A rollup's time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grain {
    Hour,
    Day,
    /// Monday 00:00 UTC (`toMonday`).
    Week,
}

/// A table a segment reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Raw,
    Rollup(Family, Grain),
}

impl Source {
    pub fn table(self) -> &'static str {
        match self {
            Source::Raw => "enrollment_events",
            Source::Rollup(Family::Fine, Grain::Hour) => "rollup_events_hourly",
            Source::Rollup(Family::Fine, Grain::Day) => "rollup_events_daily",
            Source::Rollup(Family::Fine, Grain::Week) => "rollup_events_weekly",
            Source::Rollup(Family::Totals, Grain::Hour) => "rollup_totals_hourly",
            Source::Rollup(Family::Totals, Grain::Day) => "rollup_totals_daily",
            Source::Rollup(Family::Totals, Grain::Week) => "rollup_totals_weekly",
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
    /// Day buckets: daily and hourly rollups plus raw edges.
    Day,
    /// No time buckets (one answer for the range): weekly rollups too.
    Whole,
}

const HOUR: u32 = 3_600;
const DAY: u32 = 86_400;
const WEEK: u32 = 7 * DAY;
/// 1970-01-05T00:00:00Z, the first Monday of Unix time: weeks are aligned to it.
const FIRST_MONDAY: u32 = 4 * DAY;

fn ceil_to(t: u32, step: u32) -> u32 {
    t.div_ceil(step).saturating_mul(step)
}

fn floor_to(t: u32, step: u32) -> u32 {
    t / step * step
}

/// Splits `[from, to)` into segments, coarsest first. `family` None forces raw rows.
pub fn plan(from: u32, to: u32, resolution: Resolution, family: Option<Family>) -> Vec<Segment> {
    let mut out = Vec::new();
    if from >= to {
        return out;
    }
    let Some(family) = family.filter(|_| resolution != Resolution::SubHour) else {
        out.push(Segment {
            source: Source::Raw,
            from,
            to,
        });
        return out;
    };
    match resolution {
        Resolution::Whole => weeks(family, from, to, &mut out),
        Resolution::Day => days(family, from, to, &mut out),
        Resolution::Hour | Resolution::SubHour => hours(family, from, to, &mut out),
    }
    out
}

fn weeks(family: Family, from: u32, to: u32, out: &mut Vec<Segment>) {
    let ws = FIRST_MONDAY
        .max(FIRST_MONDAY.saturating_add(ceil_to(from.saturating_sub(FIRST_MONDAY), WEEK)));
    let we = if to < FIRST_MONDAY {
        0
    } else {
        FIRST_MONDAY + floor_to(to - FIRST_MONDAY, WEEK)
    };
    if from <= ws && ws < we && we <= to {
        out.push(Segment {
            source: Source::Rollup(family, Grain::Week),
            from: ws,
            to: we,
        });
        days(family, from, ws, out);
        days(family, we, to, out);
    } else {
        days(family, from, to, out);
    }
}

fn days(family: Family, from: u32, to: u32, out: &mut Vec<Segment>) {
    if from >= to {
        return;
    }
    let (ds, de) = (ceil_to(from, DAY), floor_to(to, DAY));
    if ds < de {
        out.push(Segment {
            source: Source::Rollup(family, Grain::Day),
            from: ds,
            to: de,
        });
        hours(family, from, ds, out);
        hours(family, de, to, out);
    } else {
        hours(family, from, to, out);
    }
}

fn hours(family: Family, from: u32, to: u32, out: &mut Vec<Segment>) {
    if from >= to {
        return;
    }
    let (hs, he) = (ceil_to(from, HOUR), floor_to(to, HOUR));
    if hs < he {
        out.push(Segment {
            source: Source::Rollup(family, Grain::Hour),
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

    const FINE_DAY: Source = Source::Rollup(Family::Fine, Grain::Day);
    const FINE_HOUR: Source = Source::Rollup(Family::Fine, Grain::Hour);
    /// 2024-03-01T00:00:00Z, a Friday; 2024-03-04 is a Monday.
    const FRI: u32 = 1_709_251_200;
    const MON: u32 = FRI + 3 * DAY;

    fn covered(segs: &[Segment]) -> Vec<(u32, u32)> {
        let mut v: Vec<_> = segs.iter().map(|s| (s.from, s.to)).collect();
        v.sort();
        v
    }

    fn raw(from: u32, to: u32) -> Vec<Segment> {
        vec![Segment {
            source: Source::Raw,
            from,
            to,
        }]
    }

    #[test]
    fn aligned_day_range_is_one_daily_segment() {
        let p = plan(FRI, FRI + 2 * DAY, Resolution::Day, Some(Family::Fine));
        assert_eq!(
            p,
            vec![Segment {
                source: FINE_DAY,
                from: FRI,
                to: FRI + 2 * DAY
            }]
        );
        // Less than a Monday-aligned week: no weekly segment even for a whole-range answer.
        assert_eq!(
            plan(FRI, FRI + 2 * DAY, Resolution::Whole, Some(Family::Fine)),
            p
        );
    }

    #[test]
    fn whole_range_uses_monday_weeks_then_days_hours_and_raw() {
        let from = FRI - HOUR - 10;
        let to = MON + 2 * WEEK + DAY + HOUR + 20;
        let p = plan(from, to, Resolution::Whole, Some(Family::Totals));
        assert_eq!(
            p[0],
            Segment {
                source: Source::Rollup(Family::Totals, Grain::Week),
                from: MON,
                to: MON + 2 * WEEK
            }
        );
        assert_eq!(
            covered(&p),
            vec![
                (from, FRI - HOUR),
                (FRI - HOUR, FRI),
                (FRI, MON),
                (MON, MON + 2 * WEEK),
                (MON + 2 * WEEK, MON + 2 * WEEK + DAY),
                (MON + 2 * WEEK + DAY, MON + 2 * WEEK + DAY + HOUR),
                (MON + 2 * WEEK + DAY + HOUR, to)
            ]
        );
        assert_eq!(FIRST_MONDAY + floor_to(MON - FIRST_MONDAY, WEEK), MON);
        // Ranges before the first Monday of Unix time never read weeks.
        assert!(
            plan(0, 3 * WEEK, Resolution::Whole, Some(Family::Fine))
                .iter()
                .all(|s| s.from >= FIRST_MONDAY
                    || s.source != Source::Rollup(Family::Fine, Grain::Week))
        );
    }

    #[test]
    fn unaligned_range_uses_all_three_and_covers_exactly() {
        let from = FRI - HOUR - 10;
        let to = FRI + 2 * DAY + HOUR + 20;
        let p = plan(from, to, Resolution::Day, Some(Family::Fine));
        assert_eq!(
            covered(&p),
            vec![
                (from, FRI - HOUR),
                (FRI - HOUR, FRI),
                (FRI, FRI + 2 * DAY),
                (FRI + 2 * DAY, FRI + 2 * DAY + HOUR),
                (FRI + 2 * DAY + HOUR, to)
            ]
        );
        assert_eq!(p[0].source, FINE_DAY);
        let h = plan(from, to, Resolution::Hour, Some(Family::Fine));
        assert!(
            h.iter()
                .all(|s| s.source == FINE_HOUR || s.source == Source::Raw)
        );
        assert_eq!(
            covered(&h),
            vec![
                (from, FRI - HOUR),
                (FRI - HOUR, FRI + 2 * DAY + HOUR),
                (FRI + 2 * DAY + HOUR, to)
            ]
        );
        assert_eq!(
            plan(from, to, Resolution::SubHour, Some(Family::Fine)),
            raw(from, to)
        );
        assert_eq!(plan(from, to, Resolution::Whole, None), raw(from, to));
        assert_eq!(
            plan(10, 20, Resolution::Whole, Some(Family::Totals)),
            raw(10, 20)
        );
    }

    #[test]
    fn family_is_the_coarsest_holding_the_columns() {
        assert_eq!(Family::for_columns([]), Family::Totals);
        assert_eq!(
            Family::for_columns(["tenant", "platform", "outcome", "enrollment_method"]),
            Family::Totals
        );
        assert_eq!(Family::for_columns(["tenant", "stage"]), Family::Fine);
        assert_eq!(Family::for_columns(["os_version"]), Family::Fine);
    }
}
