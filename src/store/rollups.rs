//! The rollups (migrations/*/0008_rollups_by_size.sql): what stored receipts add to them,
//! the statements both backends run to keep them, and which of them answers a query.
//!
//! - `rollup_hour`: plays per UTC hour by class, slogan, feed and status, in four cuts
//!   ([`Cut`]): a question reads the rows of the narrowest cut that holds its columns.
//! - `rollup_daily_slogan`: the same per local day, for each covered zone offset.
//! - `rollup_daily_device`: plays per local day by display and status, the day's 24 local
//!   hours in `h00..h23`, for each covered zone offset.
//!
//! None is keyed by display and slogan together: at a city's cadence that is one row per
//! receipt. Questions that need both read the receipts by key range (`Plan::Raw`).
//!
//! Owns: the rollup tables' statement text and the choice of source for a query. Must not
//! touch connections or transactions (the backends run what this returns); the audit SQL
//! over these tables is in `sql.rs`.

use std::collections::BTreeMap;

use super::sql::Bind;
use crate::core::audit::{GroupKey, PlaysQuery};

/// The hour columns of `rollup_daily_device`, local hour 0 first.
pub const HOURS: [&str; 24] = [
    "h00", "h01", "h02", "h03", "h04", "h05", "h06", "h07", "h08", "h09", "h10", "h11", "h12",
    "h13", "h14", "h15", "h16", "h17", "h18", "h19", "h20", "h21", "h22", "h23",
];

/// Which of the class-keyed columns a row of `rollup_hour` or `rollup_daily_slogan` keeps;
/// the others hold -1 ("all"). Stored as the number, first in the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cut {
    /// Class, slogan and feed.
    All = 0,
    Slogan = 1,
    Feed = 2,
    /// Class alone.
    Class = 3,
}

impl Cut {
    pub const EVERY: [Cut; 4] = [Cut::All, Cut::Slogan, Cut::Feed, Cut::Class];

    /// The row of this cut that (slogan, feed) adds to.
    fn project(self, slogan: i64, feed: i64) -> (i64, i64) {
        match self {
            Cut::All => (slogan, feed),
            Cut::Slogan => (slogan, -1),
            Cut::Feed => (-1, feed),
            Cut::Class => (-1, -1),
        }
    }

    /// The narrowest cut that answers a question needing slogans and/or feeds.
    pub fn for_needs(slogan: bool, feed: bool) -> Cut {
        match (slogan, feed) {
            (true, true) => Cut::All,
            (true, false) => Cut::Slogan,
            (false, true) => Cut::Feed,
            (false, false) => Cut::Class,
        }
    }
}

/// One hourly delta: ((UTC hour, display key, slogan key, feed key or 0, status), plays).
/// Plays may be negative: a display's counts moved off its former class.
pub type HourlyDelta = ((i64, i64, i64, i64, i64), i64);

/// The local day and hour (0-23) of a UTC hour at a fixed offset.
fn local(hour: i64, off: i64) -> (i64, usize) {
    let h = hour + off;
    (h.div_euclid(24), h.rem_euclid(24) as usize)
}

/// The upserts that add `deltas` to every rollup: `class_of` names each display's class,
/// `offsets` the zone offsets whose daily tables are kept. `ph(n)` writes the n-th
/// placeholder; `qualify` names the table before a column in `DO UPDATE` where the dialect
/// needs it (PostgreSQL).
pub fn upserts<'c>(
    deltas: &[HourlyDelta],
    class_of: impl Fn(i64) -> Option<&'c str>,
    offsets: &[i64],
    ph: fn(usize) -> String,
    qualify: bool,
) -> Vec<(String, Vec<Bind>)> {
    let mut out = class_upserts(deltas, class_of, offsets, ph, qualify);
    for &off in offsets {
        out.extend(device_upserts(deltas, off, ph, qualify));
    }
    out
}

/// The part of [`upserts`] keyed by class (`rollup_hour`, `rollup_daily_slogan`): all that
/// a display's change of class moves.
pub fn class_upserts<'c>(
    deltas: &[HourlyDelta],
    class_of: impl Fn(i64) -> Option<&'c str>,
    offsets: &[i64],
    ph: fn(usize) -> String,
    qualify: bool,
) -> Vec<(String, Vec<Bind>)> {
    let class = |d: i64| class_of(d).unwrap_or("").to_owned();
    let mut hour: BTreeMap<(i64, i64, String, i64, i64, i64), i64> = BTreeMap::new();
    for ((h, d, s, f, st), n) in deltas {
        let c = class(*d);
        for cut in Cut::EVERY {
            let (s, f) = cut.project(*s, *f);
            *hour
                .entry((cut as i64, *h, c.clone(), s, f, *st))
                .or_default() += n;
        }
    }
    let mut out = Upsert {
        table: "rollup_hour",
        cols: &["cut", "hour", "class", "slogan", "feed", "status", "plays"],
        keys: 6,
    }
    .statements(
        hour.iter()
            .filter(|(_, n)| **n != 0)
            .map(|((cut, h, c, s, f, st), n)| {
                vec![
                    Bind::Int(*cut),
                    Bind::Int(*h),
                    Bind::Text(c.clone()),
                    Bind::Int(*s),
                    Bind::Int(*f),
                    Bind::Int(*st),
                    Bind::Int(*n),
                ]
            })
            .collect(),
        ph,
        qualify,
    );
    for &off in offsets {
        out.extend(daily_slogan_upserts(&hour, off, ph, qualify));
    }
    out
}

/// The upserts that move one display's counts (`by_hour`, from its receipts) from its
/// former class to its class now: subtracted from the one, added to the other.
pub fn class_move(
    by_hour: &[HourlyDelta],
    former: &str,
    now: &str,
    offsets: &[i64],
    ph: fn(usize) -> String,
    qualify: bool,
) -> Vec<(String, Vec<Bind>)> {
    let taken: Vec<HourlyDelta> = by_hour.iter().map(|(k, n)| (*k, -n)).collect();
    let mut out = class_upserts(&taken, |_| Some(former), offsets, ph, qualify);
    out.extend(class_upserts(by_hour, |_| Some(now), offsets, ph, qualify));
    out
}

/// The `rollup_daily_slogan` part of [`class_upserts`] for one offset, from its hourly rows.
fn daily_slogan_upserts(
    hour: &BTreeMap<(i64, i64, String, i64, i64, i64), i64>,
    off: i64,
    ph: fn(usize) -> String,
    qualify: bool,
) -> Vec<(String, Vec<Bind>)> {
    let mut slogan: BTreeMap<(i64, i64, &str, i64, i64, i64), i64> = BTreeMap::new();
    for ((cut, h, c, s, f, st), n) in hour {
        *slogan
            .entry((*cut, local(*h, off).0, c.as_str(), *s, *f, *st))
            .or_default() += n;
    }
    Upsert {
        table: "rollup_daily_slogan",
        cols: &[
            "utc_offset",
            "cut",
            "day",
            "class",
            "slogan",
            "feed",
            "status",
            "plays",
        ],
        keys: 7,
    }
    .statements(
        slogan
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .map(|((cut, day, c, s, f, st), n)| {
                vec![
                    Bind::Int(off),
                    Bind::Int(cut),
                    Bind::Int(day),
                    Bind::Text(c.to_owned()),
                    Bind::Int(s),
                    Bind::Int(f),
                    Bind::Int(st),
                    Bind::Int(n),
                ]
            })
            .collect(),
        ph,
        qualify,
    )
}

/// The `rollup_daily_device` part of [`upserts`] for one offset.
fn device_upserts(
    deltas: &[HourlyDelta],
    off: i64,
    ph: fn(usize) -> String,
    qualify: bool,
) -> Vec<(String, Vec<Bind>)> {
    let mut device: BTreeMap<(i64, i64, i64), [i64; 25]> = BTreeMap::new();
    for ((h, d, _, _, st), n) in deltas {
        let (day, hh) = local(*h, off);
        let row = device.entry((day, *d, *st)).or_insert([0; 25]);
        row[0] += n;
        row[1 + hh] += n;
    }
    let mut cols = vec!["utc_offset", "day", "device", "status", "plays"];
    cols.extend(HOURS);
    Upsert {
        table: "rollup_daily_device",
        cols: &cols,
        keys: 4,
    }
    .statements(
        device
            .into_iter()
            .filter(|(_, v)| v.iter().any(|n| *n != 0))
            .map(|((day, d, st), v)| {
                let mut row = vec![Bind::Int(off), Bind::Int(day), Bind::Int(d), Bind::Int(st)];
                row.extend(v.iter().map(|n| Bind::Int(*n)));
                row
            })
            .collect(),
        ph,
        qualify,
    )
}

/// A multi-row upsert that adds its non-key columns to what is stored.
struct Upsert<'a> {
    table: &'a str,
    cols: &'a [&'a str],
    /// The first `keys` columns are the primary key.
    keys: usize,
}

impl Upsert<'_> {
    fn statements(
        &self,
        rows: Vec<Vec<Bind>>,
        ph: fn(usize) -> String,
        qualify: bool,
    ) -> Vec<(String, Vec<Bind>)> {
        let width = self.cols.len();
        // Both dialects take tens of thousands of parameters; 512 rows of the widest table
        // (29 columns) stay under SQLite's 32,766.
        let sets: Vec<String> = self.cols[self.keys..]
            .iter()
            .map(|c| {
                if qualify {
                    format!("{c} = {}.{c} + excluded.{c}", self.table)
                } else {
                    format!("{c} = {c} + excluded.{c}")
                }
            })
            .collect();
        super::sized_chunks(&rows, 512)
            .into_iter()
            .map(|chunk| {
                let mut binds = Vec::with_capacity(chunk.len() * width);
                let mut values = Vec::with_capacity(chunk.len());
                for r in chunk {
                    let start = binds.len();
                    binds.extend(r.iter().cloned());
                    values.push(format!(
                        "({})",
                        (start + 1..=start + width)
                            .map(ph)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                (
                    format!(
                        "INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) DO UPDATE SET {}",
                        self.table,
                        self.cols.join(", "),
                        values.join(", "),
                        self.cols[..self.keys].join(", "),
                        sets.join(", ")
                    ),
                    binds,
                )
            })
            .collect()
    }
}

/// The upserts that add stored receipts, given as (play key, status code), to
/// `rollup_play` (migrations/*/0014_play_counts.sql). A batch's receipts of one play are
/// summed first: one statement may not touch a row twice.
pub fn play_upserts(
    receipts: impl IntoIterator<Item = (i64, i64)>,
    ph: fn(usize) -> String,
    qualify: bool,
) -> Vec<(String, Vec<Bind>)> {
    let mut counts: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for k in receipts {
        *counts.entry(k).or_default() += 1;
    }
    Upsert {
        table: "rollup_play",
        cols: &["play", "status", "receipts"],
        keys: 2,
    }
    .statements(
        counts
            .into_iter()
            .map(|((p, st), n)| vec![Bind::Int(p), Bind::Int(st), Bind::Int(n)])
            .collect(),
        ph,
        qualify,
    )
}

/// Fills `rollup_play` from receipts already stored (the migration's statement, for a
/// loader that writes receipts by SQL): `receipts` names the table or view to read.
pub fn play_backfill(receipts: &str) -> String {
    format!(
        "INSERT INTO rollup_play (play, status, receipts) \
         SELECT play, status, COUNT(*) FROM {receipts} GROUP BY play, status"
    )
}

/// Rows whose counts a class move brought to zero, removed.
pub const DROP_EMPTY: [&str; 2] = [
    "DELETE FROM rollup_hour WHERE plays = 0",
    "DELETE FROM rollup_daily_slogan WHERE plays = 0",
];

/// Fills the daily tables for offset `off` the first time a batch comes for it: by
/// slogan from `rollup_hour`; by display from the daily table of offset `from` when one
/// is kept (its hours are whole UTC hours, so moving them to another offset is exact),
/// else from `receipts` (the raw receipts of the backend, as rows with `device`, `status`
/// and `started_at`).
pub fn backfill(off: i64, from: Option<i64>, receipts: &str) -> [String; 3] {
    let hours: String = if let Some(o) = from {
        HOURS
            .iter()
            .enumerate()
            .map(|(i, h)| {
                format!(
                    "SELECT day * 24 - {o} + {i} AS hour, device, status, {h} AS n \
                     FROM rollup_daily_device WHERE utc_offset = {o} AND {h} <> 0"
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    } else {
        format!(
            "SELECT started_at / 3600000 AS hour, device, status, COUNT(*) AS n \
             FROM {receipts} GROUP BY started_at / 3600000, device, status"
        )
    };
    let by_hour: String = (0..24)
        .map(|i| format!(", SUM(CASE WHEN (x.hour + {off}) % 24 = {i} THEN x.n ELSE 0 END)"))
        .collect();
    [
        format!(
            "INSERT INTO rollup_daily_slogan (utc_offset, cut, day, class, slogan, feed, status, plays)
             SELECT {off}, cut, (hour + {off}) / 24, class, slogan, feed, status, SUM(plays)
             FROM rollup_hour GROUP BY cut, (hour + {off}) / 24, class, slogan, feed, status"
        ),
        format!(
            "INSERT INTO rollup_daily_device (utc_offset, day, device, status, plays, {})
             SELECT {off}, (x.hour + {off}) / 24, x.device, x.status, SUM(x.n){by_hour}
             FROM ({hours}) x GROUP BY (x.hour + {off}) / 24, x.device, x.status",
            HOURS.join(", ")
        ),
        format!("INSERT INTO rollup_daily_coverage (utc_offset) VALUES ({off})"),
    ]
}

/// Where the answer to a play-count query comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// `rollup_daily_slogan` at this offset and cut: bounds on local midnights, no hours,
    /// nothing about a single display.
    DailySlogan(i64, Cut),
    /// `rollup_daily_device` at this offset: bounds on whole hours, nothing about a slogan
    /// or a feed. `hours`: the answer needs the hour columns (hour grouping, or bounds
    /// inside a day).
    DailyDevice { off: i64, hours: bool },
    /// `rollup_hour` in this cut: bounds on whole hours, nothing about a single display.
    Hour(Cut),
    /// The receipts themselves.
    Raw,
}

/// Chooses the smallest source that answers `q` exactly. `covered(off)`: the daily tables
/// hold all of history for that offset.
pub fn plan(q: &PlaysQuery, covered: impl Fn(i64) -> bool) -> Plan {
    let by = |k| q.group_by.contains(&k);
    let per_display = by(GroupKey::Device) || q.device.is_some();
    let slogans = by(GroupKey::Slogan) || by(GroupKey::Adset) || q.slogan.is_some();
    let feeds = by(GroupKey::Feed) || q.feed.is_some();
    let per_slogan = slogans || feeds;
    let cut = Cut::for_needs(slogans, feeds);
    let on = |t: &Option<chrono::DateTime<chrono::Utc>>, secs: i64, off: i64| {
        t.is_none_or(|t| (t.timestamp() + off * 3600).rem_euclid(secs) == 0)
    };
    let whole_hours = q.rollup_ok();
    let off = q.fixed_offset_hours().filter(|o| covered(*o));
    let midnights = off.is_some_and(|o| on(&q.from, 86_400, o) && on(&q.to, 86_400, o));
    match (per_display, per_slogan, off) {
        (true, true, _) => Plan::Raw,
        (true, false, Some(off)) if whole_hours => Plan::DailyDevice {
            off,
            hours: by(GroupKey::Hour) || !midnights,
        },
        (true, false, _) => Plan::Raw,
        (false, _, Some(off)) if midnights && !by(GroupKey::Hour) => Plan::DailySlogan(off, cut),
        (false, _, _) if whole_hours => Plan::Hour(cut),
        (false, _, _) => Plan::Raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::audit::PlaysParams;

    fn q(group_by: &str, from: &str, to: &str, device: Option<&str>) -> PlaysQuery {
        PlaysQuery::parse(
            &PlaysParams {
                group_by: Some(group_by.into()),
                from: Some(from.into()),
                to: Some(to.into()),
                device: device.map(str::to_owned),
                ..Default::default()
            },
            chrono_tz::Asia::Shanghai,
        )
        .expect("query")
    }

    #[test]
    fn each_question_goes_to_the_smallest_table_that_answers_it() {
        let all = |_| true;
        let day = ("2026-11-01", "2026-11-30");
        assert_eq!(
            plan(&q("slogan,day", day.0, day.1, None), all),
            Plan::DailySlogan(8, Cut::Slogan)
        );
        assert_eq!(
            plan(&q("class,hour", day.0, day.1, None), all),
            Plan::Hour(Cut::Class)
        );
        assert_eq!(
            plan(&q("feed,slogan,hour", day.0, day.1, None), all),
            Plan::Hour(Cut::All)
        );
        assert_eq!(
            plan(&q("class", day.0, day.1, None), all),
            Plan::DailySlogan(8, Cut::Class)
        );
        assert_eq!(
            plan(&q("device", day.0, day.1, None), all),
            Plan::DailyDevice {
                off: 8,
                hours: false
            }
        );
        assert_eq!(
            plan(&q("device,hour", day.0, day.1, None), all),
            Plan::DailyDevice {
                off: 8,
                hours: true
            }
        );
        // Bounds inside a day: the hour columns, still one row per display-day.
        let hours = ("2026-11-01T10:00:00+08:00", "2026-11-01T14:00:00+08:00");
        assert_eq!(
            plan(&q("class", hours.0, hours.1, Some("bus-0001")), all),
            Plan::DailyDevice {
                off: 8,
                hours: true
            }
        );
        assert_eq!(
            plan(&q("slogan", hours.0, hours.1, None), all),
            Plan::Hour(Cut::Slogan)
        );
        // A display and a slogan together: the receipts.
        assert_eq!(
            plan(&q("device,slogan", day.0, day.1, None), all),
            Plan::Raw
        );
        // Bounds off the hour, or no daily table for the zone.
        let odd = ("2026-11-01T10:30:00+08:00", "2026-11-01T14:00:00+08:00");
        assert_eq!(plan(&q("slogan", odd.0, odd.1, None), all), Plan::Raw);
        assert_eq!(plan(&q("device", day.0, day.1, None), |_| false), Plan::Raw);
        assert_eq!(
            plan(&q("slogan,day", day.0, day.1, None), |_| false),
            Plan::Hour(Cut::Slogan)
        );
    }

    #[test]
    fn a_batch_adds_to_every_table_and_its_hours() {
        // Display 7 (class "bus"), 01:00 and 02:00 UTC: local 09:00 and 10:00 at +8.
        let deltas = [((1, 7, 3, 2, 0), 2), ((2, 7, 3, 2, 0), 1)];
        let st = upserts(&deltas, |_| Some("bus"), &[8], |_| "?".into(), false);
        assert_eq!(st.len(), 3);
        assert!(st[0].0.starts_with("INSERT INTO rollup_hour "));
        assert_eq!(st[0].1.len(), 56, "two hours of four cuts, seven columns");
        assert!(st[1].0.starts_with("INSERT INTO rollup_daily_slogan "));
        assert_eq!(st[1].1.len(), 32, "one day of four cuts, eight columns");
        assert_eq!(st[1].1[7], Bind::Int(3));
        assert_eq!(
            &st[1].1[28..32],
            &[Bind::Int(-1), Bind::Int(-1), Bind::Int(0), Bind::Int(3)],
            "the class cut: slogan and feed -1"
        );
        let device = &st[2].1;
        assert_eq!(device.len(), 29);
        assert_eq!(device[4], Bind::Int(3), "the day's total");
        assert_eq!(device[5 + 9], Bind::Int(2), "local 09:00");
        assert_eq!(device[5 + 10], Bind::Int(1), "local 10:00");
        assert!(st[2].0.contains("h23 = h23 + excluded.h23"));
    }
}
