//! Cron dayparts of feeds: read with the `cron` crate after a check of our own that names the
//! field and its range in words an operator reads (the crate says "Hours must be less than
//! 23" for 24), and a look at the year ahead to tell whether the feed would ever play.
//!
//! Pure: "now" and the feed's grid are passed in. The look ahead asks exactly what the
//! scheduler asks at each slot ([`Daypart::includes`] at the slot instants of
//! [`rotation::next_slot`]), so a daypart `check` passes is one that `serve` plays.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use cron::TimeUnitSpec;

use crate::core::model::{Daypart, Id};
use crate::core::rotation;

/// The fields of a cron daypart in order: name in problems, and the values it takes.
const FIELDS: [(&str, u64, u64); 7] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("weekday", 1, 7),
    ("year", 1970, 2100),
];

const FORM: &str = "6 fields: sec min hour day month weekday, and an optional year";

/// A cron daypart as the scheduler reads it (6 or 7 fields: sec min hour day month weekday
/// [year], or `@daily` and the like), or why not, naming the field and its range.
pub(crate) fn parse_cron(s: &str) -> Result<Daypart, String> {
    let src = s.trim().to_owned();
    if let Err(e) = precheck(&src) {
        return Err(format!("invalid cron daypart {s:?}: {e} ({FORM})"));
    }
    // The crate has not been seen to panic since 0.12 (step 0 did); the guard stays for an
    // input nobody tried, so that one bad file cannot stop the daemon.
    let parsed = std::panic::catch_unwind(|| cron::Schedule::from_str(&src));
    match parsed {
        Ok(Ok(schedule)) => Ok(Daypart {
            source: src,
            schedule,
        }),
        Ok(Err(e)) => {
            // The cron error repeats the expression and a caret on lines of their own.
            let e = e.to_string();
            let reason: Vec<&str> = e
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != src && !l.chars().all(|c| c == '^'))
                .collect();
            let reason = if reason.is_empty() {
                "not a valid expression".to_owned()
            } else {
                reason.join("; ")
            };
            Err(format!("invalid cron daypart {s:?}: {reason} ({FORM})"))
        }
        Err(_) => Err(format!("invalid cron daypart {s:?} ({FORM})")),
    }
}

/// The number of fields and every number in them, against the field's range.
fn precheck(src: &str) -> Result<(), String> {
    if src.starts_with('@') {
        return Ok(());
    }
    let fields: Vec<&str> = src.split_whitespace().collect();
    if !(6..=7).contains(&fields.len()) {
        return Err(format!("{} fields", fields.len()));
    }
    for (text, (name, min, max)) in fields.iter().zip(FIELDS) {
        for item in text.split(',') {
            let (values, step) = match item.split_once('/') {
                Some((v, s)) => (v, Some(s)),
                None => (item, None),
            };
            for v in values.split('-') {
                if let Some(n) = number(v) {
                    if !(min..=max).contains(&n) {
                        return Err(range_message(name, min, max, v));
                    }
                }
            }
            if let Some(step) = step {
                if let Some(n) = number(step) {
                    let most = max - min + 1;
                    if !(1..=most).contains(&n) {
                        return Err(format!(
                            "the step of the {name} field must be 1 to {most}, not {step}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A run of digits as a number (saturating, so that a huge one is still out of range).
fn number(v: &str) -> Option<u64> {
    let v = v.trim();
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse::<u64>().unwrap_or(u64::MAX))
}

fn range_message(name: &str, min: u64, max: u64, v: &str) -> String {
    let names = match name {
        "weekday" => " (1 = Sunday ... 7 = Saturday, or SUN-SAT)",
        "month" => " (or JAN-DEC)",
        _ => "",
    };
    format!("the {name} field must be {min} to {max}{names}, not {v}")
}

/// What a daypart leaves a feed in the year from `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reach {
    /// Whether some day in that year matches the date fields at all.
    pub any_day: bool,
    /// The first slot of the feed's grid that the daypart lets play.
    pub first_play: Option<DateTime<Utc>>,
    /// Seconds of a matching day that match the time fields (hour, minute, second).
    pub open_per_day: u32,
}

/// How far the look ahead goes.
const LOOK_AHEAD_DAYS: u32 = 366;

/// Which slots of the feed's grid (`feed`, `interval`) the daypart lets play in the year from
/// `now`, in time zone `tz`: the first one, if any, and how long a matching day is open.
pub(crate) fn reach(
    daypart: &Daypart,
    feed: &Id,
    interval: Duration,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
) -> Reach {
    let s = &daypart.schedule;
    let open = time_of_day(daypart);
    let open_per_day = u32::try_from(open.iter().filter(|o| **o).count()).unwrap_or(u32::MAX);
    let mut any_day = false;
    // Two whole days of 86,400 s whose midnights fall at the same phase of the grid have
    // their slots at the same times of day: one of them without a slot open says the same of
    // the other (a year's walk on a 2 s grid took 5 s).
    let step_ms = i64::try_from(interval.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    let mut missed_phases = std::collections::HashSet::new();
    let today = now.with_timezone(&tz).date_naive();
    for d in today.iter_days().take(LOOK_AHEAD_DAYS as usize) {
        let date_matches = s.years().includes(d.year().unsigned_abs())
            && s.months().includes(d.month())
            && s.days_of_month().includes(d.day())
            && s.days_of_week().includes(d.weekday().number_from_sunday());
        if !date_matches {
            continue;
        }
        any_day = true;
        if open_per_day == 0 {
            break;
        }
        let phase = match (
            start_of_day(d, tz),
            d.succ_opt().and_then(|n| start_of_day(n, tz)),
        ) {
            (Some(a), Some(b)) if a >= now && (b - a).num_milliseconds() == 86_400_000 => {
                Some(a.timestamp_millis().rem_euclid(step_ms))
            }
            _ => None,
        };
        if phase.is_some_and(|p| missed_phases.contains(&p)) {
            continue;
        }
        match first_slot_on(daypart, &open, feed, interval, tz, d, now) {
            Some(t) => {
                return Reach {
                    any_day,
                    first_play: Some(t),
                    open_per_day,
                }
            }
            None => {
                if let Some(p) = phase {
                    missed_phases.insert(p);
                }
            }
        }
    }
    Reach {
        any_day,
        first_play: None,
        open_per_day,
    }
}

/// For each second of a day, whether the time fields match it.
fn time_of_day(daypart: &Daypart) -> Vec<bool> {
    let s = &daypart.schedule;
    let mut open = vec![false; 86_400];
    for h in s.hours().iter() {
        for m in s.minutes().iter() {
            for sec in s.seconds().iter() {
                let i = (h * 3600 + m * 60 + sec) as usize;
                if let Some(o) = open.get_mut(i) {
                    *o = true;
                }
            }
        }
    }
    open
}

/// The first slot on local day `d` (not before `now`) at which the daypart is open.
fn first_slot_on(
    daypart: &Daypart,
    open: &[bool],
    feed: &Id,
    interval: Duration,
    tz: chrono_tz::Tz,
    d: NaiveDate,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let start = start_of_day(d, tz)?;
    let end = d.succ_opt().and_then(|n| start_of_day(n, tz))?;
    let (start_ms, end_ms) = (start.timestamp_millis(), end.timestamp_millis());
    // A day of 86,400 s at one offset reads the second of the day off the clock; a day with
    // a clock change asks the schedule itself, as the scheduler does.
    let plain = end_ms - start_ms == 86_400_000;
    let from = start.max(now) - chrono::TimeDelta::milliseconds(1);
    let step = chrono::TimeDelta::milliseconds(
        i64::try_from(interval.as_millis())
            .unwrap_or(i64::MAX)
            .max(1),
    );
    let mut t = rotation::next_slot(feed, interval, from);
    while t < end {
        let ok = if plain {
            let sod = (t.timestamp_millis() - start_ms) / 1000;
            usize::try_from(sod)
                .ok()
                .and_then(|i| open.get(i))
                .copied()
                .unwrap_or(false)
        } else {
            daypart.includes(t.with_timezone(&tz))
        };
        if ok {
            return Some(t);
        }
        // The grid is arithmetic (see `next_slot`): the next slot is one step on.
        match t.checked_add_signed(step) {
            Some(next) => t = next,
            None => break,
        }
    }
    None
}

/// Midnight in `tz`, or the first instant of the day when a clock change skips midnight.
fn start_of_day(d: NaiveDate, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    let midnight = d.and_hms_opt(0, 0, 0)?;
    (0..=24 * 4).find_map(|q| {
        let local = midnight + chrono::Duration::minutes(15 * q);
        tz.from_local_datetime(&local)
            .earliest()
            .map(|x| x.with_timezone(&Utc))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    /// Walks every slot of the grid and asks the schedule, as the scheduler would: the
    /// oracle for the faster walk above.
    fn first_play_by_walking(
        d: &Daypart,
        feed: &Id,
        interval: Duration,
        tz: chrono_tz::Tz,
        now: DateTime<Utc>,
        days: i64,
    ) -> Option<DateTime<Utc>> {
        let end = now + chrono::TimeDelta::days(days);
        let mut t = rotation::next_slot(feed, interval, now - chrono::TimeDelta::milliseconds(1));
        while t < end {
            if d.includes(t.with_timezone(&tz)) {
                return Some(t);
            }
            t = rotation::next_slot(feed, interval, t);
        }
        None
    }

    #[test]
    fn the_look_ahead_agrees_with_the_scheduler_slot_by_slot() {
        let tz = chrono_tz::Asia::Shanghai;
        let ny = chrono_tz::America::New_York;
        let now = at("2026-12-01T10:17:03+08:00");
        let cases = [
            ("* * 6-22 * * *", "3m", tz),
            ("0 * * * * *", "7s", tz),
            ("30 15 8 * * *", "1s", tz),
            ("*/10 * 23 * * *", "45s", tz),
            ("* * 2 * * *", "1m", ny),
            ("* 30 1 * * *", "1m", ny),
        ];
        for (expr, every, zone) in cases {
            let d = parse_cron(expr).expect("daypart");
            let feed = Id::parse("bus-led-all").expect("id");
            let interval = humantime::parse_duration(every).expect("interval");
            let r = reach(&d, &feed, interval, zone, now);
            let walked = first_play_by_walking(&d, &feed, interval, zone, now, 3);
            assert_eq!(r.first_play, walked, "{expr} every {every}");
        }
        // Across the spring clock change in New York (8 March 2026): 02:xx does not exist.
        let d = parse_cron("* * 2 * * *").expect("daypart");
        let feed = Id::parse("f").expect("id");
        let before = at("2026-03-08T00:00:00-05:00");
        let walked = first_play_by_walking(&d, &feed, Duration::from_secs(60), ny, before, 2);
        let r = reach(&d, &feed, Duration::from_secs(60), ny, before);
        assert_eq!(r.first_play, walked);
    }

    #[test]
    fn a_year_ahead_agrees_with_the_scheduler_across_clock_changes() {
        // A 90-minute grid in New York: summer and winter midnights fall at other phases.
        let ny = chrono_tz::America::New_York;
        let now = at("2026-01-10T12:00:00-05:00");
        let feed = Id::parse("route-k1").expect("id");
        let every = Duration::from_secs(90 * 60);
        for expr in [
            "* 0-9 0 * 6-8 *",
            "0 * * * * *",
            "* * 13 1 7 *",
            "* 0-2 * * * *",
        ] {
            let d = parse_cron(expr).expect("daypart");
            let walked = first_play_by_walking(&d, &feed, every, ny, now, 366);
            assert_eq!(
                reach(&d, &feed, every, ny, now).first_play,
                walked,
                "{expr}"
            );
        }
        // The one minute of the day where the grid falls in summer (midnight is 04:00 UTC),
        // which winter's grid (midnight 05:00 UTC) misses: it first plays in March.
        let stagger = i64::try_from(rotation::stagger(&feed, every).as_millis()).expect("ms");
        let summer = (stagger - 4 * 3_600_000).rem_euclid(5_400_000);
        let expr = format!("* {} {} * * *", summer / 60_000 % 60, summer / 3_600_000);
        let d = parse_cron(&expr).expect("daypart");
        let walked = first_play_by_walking(&d, &feed, every, ny, now, 366);
        assert!(
            walked.is_some_and(|t| t > at("2026-03-08T00:00:00-05:00")),
            "{expr}: {walked:?}"
        );
        assert_eq!(
            reach(&d, &feed, every, ny, now).first_play,
            walked,
            "{expr}"
        );
    }

    #[test]
    fn dayparts_that_never_play_are_found() {
        let tz = chrono_tz::Asia::Shanghai;
        let now = at("2026-12-01T10:00:00+08:00");
        let feed = Id::parse("bus-led-all").expect("id");
        let three_min = Duration::from_secs(180);

        let feb30 = parse_cron("0 0 0 30 2 *").expect("parses");
        let r = reach(&feb30, &feed, three_min, tz, now);
        assert!(!r.any_day && r.first_play.is_none(), "{r:?}");

        // Second 0 of every minute, on a 3-minute grid whose phase is not on a whole minute.
        let stagger = rotation::stagger(&feed, three_min).as_millis();
        assert!(
            stagger % 60_000 >= 1000,
            "the test needs an off-minute phase"
        );
        let zero = parse_cron("0 * * * * *").expect("parses");
        let r = reach(&zero, &feed, three_min, tz, now);
        assert!(r.any_day && r.first_play.is_none(), "{r:?}");
        assert_eq!(r.open_per_day, 1440);

        let daily = parse_cron("@daily").expect("parses");
        assert_eq!(reach(&daily, &feed, three_min, tz, now).open_per_day, 1);
        let past = parse_cron("* * * * * * 2020").expect("parses");
        assert!(!reach(&past, &feed, three_min, tz, now).any_day);
    }

    #[test]
    fn out_of_range_fields_are_named_with_their_range() {
        for (expr, needle) in [
            ("* * 24 * * *", "the hour field must be 0 to 23, not 24"),
            ("* * 0-99 * * *", "the hour field must be 0 to 23, not 99"),
            ("* 60 * * * *", "the minute field must be 0 to 59, not 60"),
            (
                "* * * 0 * *",
                "the day of month field must be 1 to 31, not 0",
            ),
            (
                "* * * * 13 *",
                "the month field must be 1 to 12 (or JAN-DEC), not 13",
            ),
            (
                "* * * * * 0",
                "the weekday field must be 1 to 7 (1 = Sunday",
            ),
            (
                "* * * * * * 2101",
                "the year field must be 1970 to 2100, not 2101",
            ),
            (
                "* * */0 * * *",
                "the step of the hour field must be 1 to 24, not 0",
            ),
            (
                "* * 99999999999999999999 * * *",
                "must be 0 to 23, not 99999999999999999999",
            ),
            ("* * * * *", "5 fields"),
        ] {
            let e = parse_cron(expr).expect_err(expr);
            assert!(e.contains(needle), "{expr}: {e}");
            assert!(!e.contains("less than"), "{expr}: {e}");
        }
        let e = parse_cron("* * 3-1 * * *").expect_err("reversed");
        assert!(e.contains("Invalid range for Hours: 3-1"), "{e}");
    }
}
