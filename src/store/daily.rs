//! The daily rollups (see migrations/*/0003_daily.sql): the statements both backends run
//! to keep them, and which questions they answer.
//!
//! Owns: the daily tables' statement text and the choice of table for a query. Must not
//! touch connections or transactions (the backends run what this returns); the audit SQL
//! over these tables is in `sql.rs`, beside the hourly and raw forms.

use std::collections::BTreeMap;

use crate::core::audit::{GroupKey, PlaysQuery};

/// One hourly rollup delta: ((hour, device, slogan, feed, status), plays).
pub type HourlyDelta = ((i64, i64, i64, i64, i64), i64);

/// Upserts of one batch's hourly deltas into the daily tables: (SQL, integer binds).
/// `ph(n)` writes the n-th placeholder; `qualify` names the table before `.plays` where the
/// dialect needs it (PostgreSQL) in `ON CONFLICT ... DO UPDATE`.
pub fn upserts(
    hourly: &[HourlyDelta],
    offset_h: i64,
    ph: fn(usize) -> String,
    qualify: bool,
) -> Vec<(String, Vec<i64>)> {
    let day = |h: i64| (h + offset_h).div_euclid(24);
    let mut by_slogan: BTreeMap<(i64, i64, i64, i64), i64> = BTreeMap::new();
    let mut by_device: BTreeMap<(i64, i64, i64), i64> = BTreeMap::new();
    for ((h, d, s, f, st), n) in hourly {
        *by_slogan.entry((day(*h), *s, *f, *st)).or_default() += n;
        *by_device.entry((day(*h), *d, *st)).or_default() += n;
    }
    let mut out = Vec::new();
    let stmt = |table: &str, cols: &str, key: &str, rows: Vec<Vec<i64>>| {
        let width = rows.first().map_or(0, Vec::len);
        let mut binds = Vec::with_capacity(rows.len() * width);
        let mut values = Vec::with_capacity(rows.len());
        for r in rows {
            let start = binds.len();
            binds.extend(r);
            values.push(format!(
                "({})",
                (start + 1..=start + width)
                    .map(ph)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let prior = if qualify {
            format!("{table}.plays")
        } else {
            "plays".into()
        };
        (
            format!(
                "INSERT INTO {table} ({cols}) VALUES {} ON CONFLICT ({key}) DO UPDATE SET plays = {prior} + excluded.plays",
                values.join(", ")
            ),
            binds,
        )
    };
    let slogan_rows: Vec<Vec<i64>> = by_slogan
        .into_iter()
        .map(|((day, s, f, st), n)| vec![day, offset_h, s, f, st, n])
        .collect();
    for chunk in super::sized_chunks(&slogan_rows, 512) {
        out.push(stmt(
            "rollup_daily_slogan",
            "day, utc_offset, slogan, feed, status, plays",
            "utc_offset, day, slogan, feed, status",
            chunk.to_vec(),
        ));
    }
    let device_rows: Vec<Vec<i64>> = by_device
        .into_iter()
        .map(|((day, d, st), n)| vec![day, offset_h, d, st, n])
        .collect();
    for chunk in super::sized_chunks(&device_rows, 512) {
        out.push(stmt(
            "rollup_daily_device",
            "day, utc_offset, device, status, plays",
            "utc_offset, day, device, status",
            chunk.to_vec(),
        ));
    }
    out
}

/// Fills the daily tables for `offset_h` from the hourly rollup (all of history).
pub fn backfill(offset_h: i64) -> [String; 3] {
    [
        format!(
            "INSERT INTO rollup_daily_slogan (day, utc_offset, slogan, feed, status, plays)
             SELECT (hour + {offset_h}) / 24, {offset_h}, slogan, feed, status, SUM(plays)
             FROM rollup_hourly GROUP BY (hour + {offset_h}) / 24, slogan, feed, status"
        ),
        format!(
            "INSERT INTO rollup_daily_device (day, utc_offset, device, status, plays)
             SELECT (hour + {offset_h}) / 24, {offset_h}, device, status, SUM(plays)
             FROM rollup_hourly GROUP BY (hour + {offset_h}) / 24, device, status"
        ),
        format!("INSERT INTO rollup_daily_coverage (utc_offset) VALUES ({offset_h})"),
    ]
}

/// Which daily table answers `q`, if one does: its bounds on local midnights, its zone's
/// offset fixed, and its columns and filters all in the table.
pub fn table_for(q: &PlaysQuery) -> Option<(&'static str, i64)> {
    let off = q.fixed_offset_hours()?;
    if q.group_by.contains(&GroupKey::Hour) {
        return None;
    }
    let midnight = |t: &Option<chrono::DateTime<chrono::Utc>>| {
        t.is_none_or(|t| (t.timestamp() + off * 3600).rem_euclid(86_400) == 0)
    };
    if !midnight(&q.from) || !midnight(&q.to) {
        return None;
    }
    let cols = |allowed: &[GroupKey]| q.group_by.iter().all(|k| allowed.contains(k));
    let by_slogan = cols(&[
        GroupKey::Slogan,
        GroupKey::Adset,
        GroupKey::Feed,
        GroupKey::Day,
    ]) && q.device.is_none()
        && q.class.is_none();
    let by_device = cols(&[GroupKey::Device, GroupKey::Class, GroupKey::Day])
        && q.slogan.is_none()
        && q.feed.is_none();
    if by_slogan {
        Some(("rollup_daily_slogan", off))
    } else if by_device {
        Some(("rollup_daily_device", off))
    } else {
        None
    }
}
