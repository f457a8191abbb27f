//! When enrollments happen: the working day and week in the tenant's time zone, refresh
//! waves, and a growing fleet. Pure functions of time (and the seed), constant within each
//! UTC hour, so the session process can draw exact exponential gaps hour by hour.

use time::{OffsetDateTime, UtcOffset, Weekday};

/// Relative enrollment activity per local hour of a working day: devices are unboxed and
/// re-imaged in office hours, with a dip at lunch and a tail in the evening (the shape of
/// help-desk and provisioning workloads; docs/simulator.md).
pub const WORKDAY_HOURS: [f64; 24] = [
    0.05, 0.03, 0.03, 0.03, 0.05, 0.10, 0.30, 0.90, 1.80, 2.20, 2.00, 1.70, 1.30, 1.80, 1.90, 1.70,
    1.30, 0.80, 0.40, 0.25, 0.20, 0.15, 0.10, 0.07,
];

/// Relative activity per weekday: new hires start on Mondays; weekends are quiet.
pub fn day_factor(day: Weekday) -> f64 {
    match day {
        Weekday::Monday => 1.25,
        Weekday::Tuesday | Weekday::Wednesday | Weekday::Thursday => 1.0,
        Weekday::Friday => 0.85,
        Weekday::Saturday => 0.12,
        Weekday::Sunday => 0.08,
    }
}

/// Mean of `day_factor * WORKDAY_HOURS` over the 168 hours of a week, so that [`season`]
/// averages 1 over a week.
fn weekly_mean() -> f64 {
    let days = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];
    let hours: f64 = WORKDAY_HOURS.iter().sum();
    days.iter().map(|d| day_factor(*d) * hours).sum::<f64>() / 168.0
}

fn local(at: OffsetDateTime, utc_offset_hours: i8) -> OffsetDateTime {
    let offset = UtcOffset::from_hms(utc_offset_hours, 0, 0).unwrap_or(UtcOffset::UTC);
    at.to_offset(offset)
}

/// Activity at `at` relative to the weekly average (1.0), in a tenant at `utc_offset_hours`.
pub fn season(at: OffsetDateTime, utc_offset_hours: i8) -> f64 {
    let local = local(at, utc_offset_hours);
    day_factor(local.weekday()) * WORKDAY_HOURS[usize::from(local.hour())] / weekly_mean()
}

/// Whether `at` falls in the tenant's business hours (weekdays 08:00-18:00 local).
pub fn business_hours(at: OffsetDateTime, utc_offset_hours: i8) -> bool {
    let local = local(at, utc_offset_hours);
    !matches!(local.weekday(), Weekday::Saturday | Weekday::Sunday)
        && (8..18).contains(&local.hour())
}

/// The next business-hours instant at or after `at` (an administrator's fix waits for it).
pub fn next_business_time(at: OffsetDateTime, utc_offset_hours: i8) -> OffsetDateTime {
    let mut t = at;
    for _ in 0..24 * 8 {
        if business_hours(t, utc_offset_hours) {
            return t;
        }
        // Jump to the start of the next hour.
        let into_hour = time::Duration::minutes(i64::from(t.minute()))
            + time::Duration::seconds(i64::from(t.second()))
            + time::Duration::nanoseconds(i64::from(t.nanosecond()));
        t = t - into_hour + time::Duration::hours(1);
    }
    at
}

/// SplitMix64: a tiny, well-known mixing function, for decisions that must be pure
/// functions of (seed, tenant, week) rather than draws from the generator's stream.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A refresh wave's multiplier at `at`: in about 60 % of weeks a tenant runs one on some
/// weekday, from 09:00-11:00 local for 3-6 hours, at 2.5-5.4x the usual activity.
pub fn wave(seed: u64, tenant: usize, at: OffsetDateTime, utc_offset_hours: i8) -> f64 {
    let local = local(at, utc_offset_hours);
    // Weeks counted from a Monday (1970-01-05), in local time.
    let local_secs = at.unix_timestamp() + i64::from(utc_offset_hours) * 3600;
    let week = (local_secs - 4 * 86_400).div_euclid(7 * 86_400);
    let h = mix(seed ^ mix(tenant as u64 ^ mix(week as u64)));
    if h % 100 >= 60 {
        return 1.0;
    }
    let day = (h >> 8) % 5; // Monday..Friday
    let start = 9 + (h >> 16) % 3;
    let length = 3 + (h >> 24) % 4;
    let factor = 2.5 + ((h >> 32) % 30) as f64 / 10.0;
    let weekday = u64::from(local.weekday().number_days_from_monday());
    let hour = u64::from(local.hour());
    if weekday == day && (start..start + length).contains(&hour) {
        factor
    } else {
        1.0
    }
}

/// Size of the fleet at `at` relative to its size at `now` (monthly compound growth): the
/// fleet was smaller in the past.
pub fn growth(at: OffsetDateTime, now: OffsetDateTime, monthly_growth: f64) -> f64 {
    let months = (at - now).as_seconds_f64() / (30.0 * 86_400.0);
    (1.0 + monthly_growth).powf(months)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_week_averages_one_and_business_hours_dominate() {
        let monday = datetime!(2026-11-23 00:00:00 UTC);
        let mut total = 0.0;
        let mut office = 0.0;
        for h in 0..168 {
            let at = monday + time::Duration::hours(h);
            let s = season(at, 0);
            total += s;
            if business_hours(at, 0) {
                office += s;
            }
        }
        assert!((total / 168.0 - 1.0).abs() < 1e-9, "{}", total / 168.0);
        // Weekday office hours (50 of 168 hours) carry most of the week's enrollments.
        assert!(office / total > 0.75, "{}", office / total);
        // Tuesday 10:00 vs 03:00 local, and vs Sunday 10:00.
        let tue10 = season(datetime!(2026-11-24 10:00 UTC), 0);
        assert!(tue10 > 40.0 * season(datetime!(2026-11-24 03:00 UTC), 0));
        assert!(tue10 > 10.0 * season(datetime!(2026-11-29 10:00 UTC), 0));
        // Time zones: 15:00 UTC is 10:00 in New York (UTC-5), 00:00 in Tokyo (UTC+9).
        assert!(
            season(datetime!(2026-11-24 15:00 UTC), -5)
                > 10.0 * season(datetime!(2026-11-24 15:00 UTC), 9)
        );
    }

    #[test]
    fn fixes_wait_for_business_hours() {
        // Friday 19:30 UTC in a UTC+1 tenant: next is Monday 08:00 local = 07:00 UTC.
        assert_eq!(
            next_business_time(datetime!(2026-11-27 19:30 UTC), 1),
            datetime!(2026-11-30 07:00 UTC)
        );
        let open = datetime!(2026-11-24 10:15 UTC);
        assert_eq!(next_business_time(open, 0), open);
    }

    #[test]
    fn waves_are_weekday_bursts_fixed_by_the_seed() {
        let monday = datetime!(2026-11-02 00:00:00 UTC);
        let mut waved_hours = 0;
        let mut weeks_with_waves = 0;
        for week in 0..20 {
            let mut any = false;
            for h in 0..168 {
                let at = monday + time::Duration::hours(week * 168 + h);
                let w = wave(42, 0, at, 0);
                assert_eq!(w, wave(42, 0, at, 0));
                if w > 1.0 {
                    assert!(business_hours(at, 0), "{at}");
                    assert!((2.5..5.5).contains(&w));
                    waved_hours += 1;
                    any = true;
                }
            }
            weeks_with_waves += usize::from(any);
        }
        assert!((6..=18).contains(&weeks_with_waves), "{weeks_with_waves}");
        assert!(waved_hours >= weeks_with_waves * 3);
    }

    #[test]
    fn the_fleet_was_smaller_a_month_ago() {
        let now = datetime!(2026-11-30 00:00 UTC);
        let g = growth(now - time::Duration::days(30), now, 0.03);
        assert!((g - 1.0 / 1.03).abs() < 1e-9, "{g}");
        assert_eq!(growth(now, now, 0.03), 1.0);
    }
}
