//! The weekly inspection sample (contract: `GET /api/v1/audit/sample`): which ISO week is
//! meant, its bounds as instants, and which displays of each class inspectors look at.
//!
//! Owns only the choice of displays; it must not fetch their plays, gaps or receipts (the
//! store and the HTTP shell add those). Pure: no tokio, no sqlx, no I/O, no clock, no
//! random generator: the draw is a hash, so anyone holding the seed, the week and the
//! inventory can redo it and check that nobody picked the displays by hand.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use sha2::{Digest, Sha256};

/// With no failure found in 59 displays of a class: 95% confidence that at most 5% of that
/// class miss the target (0.95^59 < 0.05).
pub const DEFAULT_PER_CLASS: usize = 59;
pub const DEFAULT_SEED: &str = "civicast";

/// "2026-W48" -> the Monday of that ISO week. The error says what is wrong.
pub fn parse_week(s: &str) -> Result<NaiveDate, String> {
    const SHAPE: &str = "week must look like 2026-W48";
    let s = s.trim();
    let (year, week) = s
        .split_once("-W")
        .ok_or_else(|| format!("{SHAPE}, not {s:?}"))?;
    let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(year, 4) || !digits(week, 2) {
        return Err(format!("{SHAPE}, not {s:?}"));
    }
    let year: i32 = year.parse().map_err(|_| format!("{SHAPE}, not {s:?}"))?;
    let week: u32 = week.parse().map_err(|_| format!("{SHAPE}, not {s:?}"))?;
    if week == 0 {
        return Err(format!("{s:?}: weeks are numbered from W01"));
    }
    NaiveDate::from_isoywd_opt(year, week, Weekday::Mon)
        .ok_or_else(|| format!("{year} has no week {week:02}"))
}

/// The first instant of local date `d` in `tz`: its midnight, or, where a clock change
/// skips midnight, the first local minute that exists that day.
fn start_of_day(d: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let midnight = d.and_time(NaiveTime::MIN);
    (0..24 * 60)
        .find_map(|m| {
            tz.from_local_datetime(&(midnight + Duration::minutes(m)))
                .earliest()
        })
        .map(|t| t.with_timezone(&Utc))
        // Every zone has some minute in every day; this only keeps the function total.
        .unwrap_or_else(|| Utc.from_utc_datetime(&midnight))
}

/// The week's bounds as instants: Monday 00:00 to the next Monday 00:00 in `tz` (half-open).
pub fn week_bounds(monday: NaiveDate, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    let next = monday
        .checked_add_signed(Duration::days(7))
        .unwrap_or(NaiveDate::MAX);
    (start_of_day(monday, tz), start_of_day(next, tz))
}

/// The ISO week containing `t` in `tz`, formatted "2026-W48" (for a default week).
pub fn week_of(t: DateTime<Utc>, tz: Tz) -> String {
    let w = t.with_timezone(&tz).iso_week();
    format!("{:04}-W{:02}", w.year(), w.week())
}

/// Stratified by class: in each class, displays ranked by SHA-256 of "{seed}\n{week}\n{id}"
/// (hex ascending, which is byte order of the digest), the first `min(per_class, class
/// size)` of them. Result sorted by class, then rank, as `(class, id)`.
///
/// The same inputs give the same sample whatever their order; a display listed twice is
/// drawn at most once. Ties between digests (never seen in practice) go to the smaller id.
pub fn draw<'a>(
    displays: &[(&'a str, &'a str)],
    week: &str,
    seed: &str,
    per_class: usize,
) -> Vec<(&'a str, &'a str)> {
    let mut by_class: BTreeMap<&'a str, Vec<([u8; 32], &'a str)>> = BTreeMap::new();
    for &(id, class) in displays {
        let mut h = Sha256::new();
        h.update(seed.as_bytes());
        h.update(b"\n");
        h.update(week.as_bytes());
        h.update(b"\n");
        h.update(id.as_bytes());
        by_class
            .entry(class)
            .or_default()
            .push((h.finalize().into(), id));
    }
    let mut out = Vec::new();
    for (class, mut ranked) in by_class {
        ranked.sort_unstable();
        ranked.dedup();
        out.extend(
            ranked
                .into_iter()
                .take(per_class)
                .map(|(_, id)| (class, id)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fleet() -> Vec<(String, &'static str)> {
        let mut v = Vec::new();
        for i in 0..200 {
            v.push((format!("bus-{i:04}"), "bus_led"));
        }
        for i in 0..30 {
            v.push((format!("taxi-{i:04}"), "taxi_top"));
        }
        v
    }

    fn refs<'a>(v: &'a [(String, &'static str)]) -> Vec<(&'a str, &'a str)> {
        v.iter().map(|(i, c)| (i.as_str(), *c)).collect()
    }

    #[test]
    fn weeks_parse_to_their_monday() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).expect("date");
        assert_eq!(parse_week("2026-W01"), Ok(d(2025, 12, 29)));
        assert_eq!(parse_week("2026-W48"), Ok(d(2026, 11, 23)));
        assert_eq!(parse_week("2020-W53"), Ok(d(2020, 12, 28)));
        // 2026 starts on a Thursday, so it does have a week 53; 2025 and 2027 do not.
        assert_eq!(parse_week("2026-W53"), Ok(d(2026, 12, 28)));
        assert_eq!(parse_week("2025-W53"), Err("2025 has no week 53".into()));
        assert_eq!(parse_week("2027-W53"), Err("2027 has no week 53".into()));
        for bad in [
            "2026-48",
            "W48",
            "2026-W4",
            "2026-W480",
            "26-W48",
            "2026-w48",
            "",
        ] {
            let e = parse_week(bad).expect_err(bad);
            assert!(e.contains("week must look like 2026-W48"), "{bad}: {e}");
        }
        assert!(parse_week("2026-W00").is_err());
        assert!(parse_week("2026-W54").is_err());
    }

    #[test]
    fn bounds_are_local_mondays() {
        let tz = chrono_tz::Asia::Shanghai;
        let (from, to) = week_bounds(parse_week("2026-W48").expect("week"), tz);
        assert_eq!(from.to_rfc3339(), "2026-11-22T16:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2026-11-29T16:00:00+00:00");
        assert_eq!(week_of(from, tz), "2026-W48");
        assert_eq!(week_of(to - Duration::milliseconds(1), tz), "2026-W48");
        assert_eq!(week_of(to, tz), "2026-W49");
        // Late Sunday in UTC is already Monday in Shanghai.
        let t = DateTime::parse_from_rfc3339("2026-01-04T20:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        assert_eq!(week_of(t, tz), "2026-W02");
        assert_eq!(week_of(t, chrono_tz::UTC), "2026-W01");
        // A week with a DST change is an hour short, not shifted.
        let berlin = chrono_tz::Europe::Berlin;
        let (from, to) = week_bounds(parse_week("2026-W13").expect("week"), berlin);
        assert_eq!((to - from).num_hours(), 7 * 24 - 1);
    }

    #[test]
    fn midnight_skipped_by_a_clock_change_starts_at_the_first_real_minute() {
        // Santiago moved clocks from 00:00 to 01:00 on 2024-09-08.
        let tz = chrono_tz::America::Santiago;
        let d = NaiveDate::from_ymd_opt(2024, 9, 8).expect("date");
        assert_eq!(
            start_of_day(d, tz).with_timezone(&tz).to_rfc3339(),
            "2024-09-08T01:00:00-03:00"
        );
    }

    #[test]
    fn capped_at_class_size_and_stratified() {
        let f = fleet();
        let s = draw(&refs(&f), "2026-W48", DEFAULT_SEED, DEFAULT_PER_CLASS);
        assert_eq!(s.len(), 59 + 30);
        assert!(s[..59].iter().all(|(c, _)| *c == "bus_led"));
        assert!(s[59..].iter().all(|(c, _)| *c == "taxi_top"));
        let all = draw(&refs(&f), "2026-W48", DEFAULT_SEED, 1000);
        assert_eq!(all.len(), 230);
        assert!(draw(&refs(&f), "2026-W48", DEFAULT_SEED, 0).is_empty());
        // A smaller sample is the head of a bigger one.
        let five = draw(&refs(&f), "2026-W48", DEFAULT_SEED, 5);
        assert_eq!(&five[..5], &s[..5]);
    }

    #[test]
    fn seeds_and_weeks_change_the_sample() {
        let f = fleet();
        let base = draw(&refs(&f), "2026-W48", DEFAULT_SEED, 59);
        let mut differ = 0;
        for (week, seed) in [
            ("2026-W49", DEFAULT_SEED),
            ("2026-W47", DEFAULT_SEED),
            ("2026-W48", "other"),
            ("2026-W48", "civicast2"),
        ] {
            let other = draw(&refs(&f), week, seed, 59);
            assert_eq!(other.len(), base.len());
            let bus = |v: &[(&str, &str)]| {
                let mut ids: Vec<String> = v
                    .iter()
                    .filter(|(c, _)| *c == "bus_led")
                    .map(|(_, i)| i.to_string())
                    .collect();
                ids.sort();
                ids
            };
            if bus(&other) != bus(&base) {
                differ += 1;
            }
        }
        assert_eq!(differ, 4);
    }

    /// Counts by class of a drawn sample; fails on a display drawn twice in its class (ids
    /// are unique in a catalog; the generated inventories below may reuse one across
    /// classes).
    fn per_class_of<'a>(s: &[(&'a str, &'a str)]) -> BTreeMap<&'a str, usize> {
        let mut seen = std::collections::BTreeSet::new();
        let mut counts = BTreeMap::new();
        for (c, id) in s {
            assert!(seen.insert((*c, *id)), "{id} drawn twice as {c}");
            *counts.entry(*c).or_default() += 1;
        }
        counts
    }

    #[test]
    fn each_class_gets_exactly_the_smaller_of_per_class_and_its_size() {
        let mut f = fleet();
        f.push(("stop-0001".to_owned(), "stop_screen"));
        let pop = refs(&f);
        let class_of: BTreeMap<&str, &str> = pop.iter().copied().collect();
        let sizes = [("bus_led", 200), ("stop_screen", 1), ("taxi_top", 30)];
        for n in [0, 1, 2, 29, 30, 31, 59, 199, 200, 201, 5000] {
            let s = draw(&pop, "2026-W48", DEFAULT_SEED, n);
            let want: BTreeMap<&str, usize> = sizes
                .iter()
                .map(|&(c, size)| (c, n.min(size)))
                .filter(|&(_, k)| k > 0)
                .collect();
            assert_eq!(per_class_of(&s), want, "per_class {n}");
            for (c, id) in &s {
                assert_eq!(class_of.get(id), Some(c), "{id} drawn as {c}");
            }
        }
    }

    /// The rule in the documentation, redone from scratch: in each class, the ids whose
    /// SHA-256 of "{seed}\n{week}\n{id}" is smallest, in that order.
    #[test]
    fn anyone_can_redo_the_draw_from_the_published_rule() {
        let f = fleet();
        let pop = refs(&f);
        for (week, seed, n) in [("2026-W48", "civicast", 59), ("2026-W01", "x", 7)] {
            let mut want = Vec::new();
            for class in ["bus_led", "taxi_top"] {
                let mut ranked: Vec<(String, &str)> = pop
                    .iter()
                    .filter(|(_, c)| *c == class)
                    .map(|(id, _)| {
                        let d = Sha256::digest(format!("{seed}\n{week}\n{id}").as_bytes());
                        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
                        (hex, *id)
                    })
                    .collect();
                ranked.sort();
                want.extend(ranked.into_iter().take(n).map(|(_, id)| (class, id)));
            }
            assert_eq!(draw(&pop, week, seed, n), want, "{week} {seed} {n}");
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_sample_and_another_seed_or_week_another() {
        let f = fleet();
        let pop = refs(&f);
        let base = draw(&pop, "2026-W48", DEFAULT_SEED, 10);
        assert_eq!(base, draw(&pop, "2026-W48", DEFAULT_SEED, 10));
        let mut reversed = pop.clone();
        reversed.reverse();
        assert_eq!(base, draw(&reversed, "2026-W48", DEFAULT_SEED, 10));
        // 10 of 200 buses and 10 of 30 taxis: for this fixed fleet every one of these
        // changes picks other displays in both classes.
        for (week, seed) in [
            ("2026-W49", DEFAULT_SEED),
            ("2025-W48", DEFAULT_SEED),
            ("2026-W48", "civicast2"),
            ("2026-W48", "Civicast"),
        ] {
            let other = draw(&pop, week, seed, 10);
            assert_eq!(per_class_of(&other), per_class_of(&base), "{week} {seed}");
            for class in ["bus_led", "taxi_top"] {
                let ids = |v: &[(&str, &str)]| -> std::collections::BTreeSet<String> {
                    v.iter()
                        .filter(|(c, _)| *c == class)
                        .map(|(_, i)| i.to_string())
                        .collect()
                };
                assert_ne!(ids(&other), ids(&base), "{week} {seed}: {class}");
            }
        }
    }

    #[test]
    fn duplicates_are_drawn_once() {
        let s = draw(&[("a", "x"), ("a", "x"), ("b", "x")], "2026-W48", "s", 5);
        assert_eq!(s.len(), 2);
    }

    proptest! {
        #[test]
        fn the_same_inputs_in_any_order_give_the_same_sample(
            (v, shuffled) in prop::collection::vec((0u32..500, 0u8..4), 0..120)
                .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
            per_class in 0usize..40,
        ) {
            let own = |v: &[(u32, u8)]| -> Vec<(String, String)> {
                v.iter().map(|(i, c)| (format!("d-{i}"), format!("class-{c}"))).collect()
            };
            let (a, b) = (own(&v), own(&shuffled));
            let ra: Vec<(&str, &str)> = a.iter().map(|(i, c)| (i.as_str(), c.as_str())).collect();
            let rb: Vec<(&str, &str)> = b.iter().map(|(i, c)| (i.as_str(), c.as_str())).collect();
            let x = draw(&ra, "2026-W48", DEFAULT_SEED, per_class);
            prop_assert_eq!(&x, &draw(&rb, "2026-W48", DEFAULT_SEED, per_class));
            prop_assert_eq!(&x, &draw(&ra, "2026-W48", DEFAULT_SEED, per_class));
            // Exactly min(per_class, class size) of each class (a display listed twice
            // counts once), each drawn from its own class, sorted by class.
            let mut pop: BTreeMap<&str, std::collections::BTreeSet<&str>> = BTreeMap::new();
            for (i, c) in &ra {
                pop.entry(c).or_default().insert(i);
            }
            let want: BTreeMap<&str, usize> = pop
                .iter()
                .map(|(c, ids)| (*c, ids.len().min(per_class)))
                .filter(|&(_, k)| k > 0)
                .collect();
            prop_assert_eq!(per_class_of(&x), want);
            for (c, id) in &x {
                prop_assert!(pop[c].contains(id), "{} is not a {}", id, c);
            }
            prop_assert!(x.windows(2).all(|w| w[0].0 <= w[1].0));
        }
    }
}
