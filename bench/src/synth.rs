//! The synthetic year of the audit and storage scenarios, as a formula: plays of every
//! feed spread by a daily shape, and for each display and play whether a receipt exists
//! and its status. The loads (`load`) write receipts from it in SQL and the hourly rollup
//! from it in Rust, independently, so the two can be checked against each other.
//!
//! Owns: the formula and its constants. Must not touch: any database (pure functions; the
//! SQL form of the hash is a constant the loads embed).

use chrono::{DateTime, TimeZone, Utc};
use std::collections::BTreeMap;

/// The synthetic history.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub receipts: u64,
    pub displays: u64,
    pub feeds: u64,
    pub slogans: u64,
    pub days: i64,
    /// The history ends here (exclusive), midnight in Asia/Shanghai.
    pub end: DateTime<Utc>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            receipts: 1_000_000,
            displays: 3_000,
            feeds: 10,
            slogans: 12,
            days: 365,
            end: chrono_tz::Asia::Shanghai
                .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
                .single()
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
        }
    }
}

/// Relative plays per local hour of day: few at night, most in the rush hours.
pub(crate) const DAY_SHAPE: [f64; 24] = [
    0.15, 0.10, 0.08, 0.08, 0.12, 0.30, 0.70, 1.00, 1.00, 0.85, 0.80, 0.80, 0.90, 0.80, 0.80, 0.85,
    0.95, 1.00, 1.00, 0.95, 0.85, 0.65, 0.45, 0.25,
];
/// Shanghai is UTC+8 all year (no summer time since 1991).
pub(crate) const SHANGHAI_MS: i64 = 8 * 3_600_000;
/// Receipts a display does not send (offline), in percent.
pub(crate) const MISSING_PCT: i64 = 3;

/// Deterministic per receipt: whether it exists and its status. The same formula runs in SQL.
pub(crate) fn receipt_hash(device: i64, play: i64) -> i64 {
    (device * 7_919 + play * 104_729) % 100
}
pub(crate) const HASH_SQL: &str = "((m.device * 7919 + p.id * 104729) % 100)";

pub(crate) fn status_of(h: i64) -> i64 {
    match h {
        0 | 1 => 1, // skipped
        2 => 3,     // failed
        _ => 0,     // played
    }
}

pub(crate) fn offset_ms(device: i64) -> i64 {
    (device % 30) * 1_000
}

/// A rollup row's key: hour, device, slogan, feed, status.
pub(crate) type RollKey = (i64, i64, i64, i64, i64);

/// The class of display `d` in the synthetic inventory.
pub(crate) const CLASSES: [&str; 3] = ["bus_led", "taxi_top", "stop_lcd"];

pub(crate) fn class_of(d: i64) -> Option<&'static str> {
    CLASSES.get(d.rem_euclid(3) as usize).copied()
}

/// The history's hourly counts (hour, display, slogan, feed, status) summed from the plays
/// alone, by the formula that decides which receipts exist and not from the receipts:
/// one local day (UTC+8) at a time, each day's rows once its last play is past (a receipt
/// starts at or after its play, within a minute).
pub(crate) struct DayDeltas<'p> {
    plays: &'p [SynthPlay],
    next: usize,
    per_feed: Vec<Vec<i64>>,
    pending: BTreeMap<RollKey, i64>,
}

impl<'p> DayDeltas<'p> {
    pub(crate) fn new(o: &LoadOptions, plays: &'p [SynthPlay]) -> Self {
        let per_feed = (1..=o.feeds as i64)
            .map(|f| {
                (1..=o.displays as i64)
                    .filter(|d| (d - 1) % o.feeds as i64 + 1 == f)
                    .collect()
            })
            .collect();
        DayDeltas {
            plays,
            next: 0,
            per_feed,
            pending: BTreeMap::new(),
        }
    }
}

impl Iterator for DayDeltas<'_> {
    type Item = Vec<(RollKey, i64)>;

    fn next(&mut self) -> Option<Self::Item> {
        let day = |t: i64| (t + SHANGHAI_MS).div_euclid(86_400_000);
        while let Some(p) = self.plays.get(self.next) {
            self.next += 1;
            for &d in &self.per_feed[(p.feed - 1) as usize] {
                let h = receipt_hash(d, p.id);
                if h >= 100 - MISSING_PCT {
                    continue;
                }
                let started = p.issued + offset_ms(d);
                *self
                    .pending
                    .entry((
                        started.div_euclid(3_600_000),
                        d,
                        p.slogan,
                        p.feed,
                        status_of(h),
                    ))
                    .or_default() += 1;
            }
            match self.plays.get(self.next) {
                Some(n) if day(n.issued) == day(p.issued) => {}
                Some(n) => {
                    // Hours before the next play's are complete.
                    let keep =
                        self.pending
                            .split_off(&(n.issued.div_euclid(3_600_000), 0, 0, 0, 0));
                    let done = std::mem::replace(&mut self.pending, keep);
                    return Some(done.into_iter().collect());
                }
                None => break,
            }
        }
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending).into_iter().collect())
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SynthPlay {
    pub(crate) id: i64,
    pub(crate) feed: i64,
    pub(crate) slogan: i64,
    pub(crate) issued: i64,
}

/// Plays of every feed over the year, spread by `DAY_SHAPE`, ids in time order.
pub(crate) fn synth_plays(o: &LoadOptions) -> Vec<SynthPlay> {
    let per_feed = (o.displays / o.feeds).max(1);
    let want_plays =
        (o.receipts as f64 / per_feed as f64 / (1.0 - MISSING_PCT as f64 / 100.0)).ceil() as u64;
    let k = want_plays.div_ceil(o.feeds).max(1);
    let start = o.end.timestamp_millis() - o.days * 86_400_000;
    let hours = (o.days * 24) as usize;
    let weight =
        |h: usize| DAY_SHAPE[(((start + SHANGHAI_MS) / 3_600_000 + h as i64) % 24) as usize];
    let total: f64 = (0..hours).map(weight).sum();
    let mut plays = Vec::with_capacity((k * o.feeds) as usize);
    for f in 0..o.feeds {
        let (mut h, mut acc) = (0usize, 0.0f64);
        for j in 0..k {
            let q = (j as f64 + 0.5 + f as f64 / o.feeds as f64 * 0.5) / k as f64 * total;
            while h + 1 < hours && acc + weight(h) < q {
                acc += weight(h);
                h += 1;
            }
            let frac = ((q - acc) / weight(h)).clamp(0.0, 0.999);
            let issued = start + h as i64 * 3_600_000 + (frac * 3_600_000.0) as i64;
            plays.push(SynthPlay {
                id: 0,
                feed: f as i64 + 1,
                slogan: ((j * 5 + f) % o.slogans) as i64 + 1,
                issued,
            });
        }
    }
    plays.sort_by_key(|p| (p.issued, p.feed));
    for (i, p) in plays.iter_mut().enumerate() {
        p.id = i as i64 + 1;
    }
    plays
}

/// How long each synthetic receipt's play lasts (the `duration_ms` the load writes).
pub(crate) const RECEIPT_MS: i64 = 15_000;
