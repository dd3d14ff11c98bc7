//! Planned versus played per feed and local day (contract: `GET /api/v1/audit/reconcile`),
//! with the shortfall split by reason.
//!
//! Owns only the counting. It must not query presence or receipts itself: the caller
//! passes them in as functions, so the store decides how to look them up and this module
//! stays pure (no tokio, no sqlx, no I/O, no clock).
//!
//! Each member of each play lands in exactly one column:
//! - `played` if its receipt says played, even when presence said offline at issue (the
//!   display proved it; presence is the weaker evidence);
//! - else `offline` if it was offline at issue, whatever later receipt arrived (a display
//!   that was not there is not blamed for skipping or expiring);
//! - else by its receipt: `expired`, `skipped`, `failed`, or `no_receipt` when none came.
//!
//! So `shortfall = offline + expired + skipped + failed + no_receipt = targeted - played`.
//! A device listed twice in one play's members was sent that play once and counts once.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::core::wire::Status;

/// One play as issued on a feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Play<'a> {
    pub key: i64,
    pub feed: &'a str,
    pub issued_ms: i64,
    /// Device keys the play was sent to.
    pub members: &'a [i64],
}

/// One feed on one local day.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Row {
    pub feed: String,
    /// Local date (YYYY-MM-DD) of issue in the deployment's time zone.
    pub day: String,
    pub plays: u64,
    /// Plays times members.
    pub targeted: u64,
    /// Targeted members online at issue.
    pub online: u64,
    pub played: u64,
    /// `targeted - played`, the sum of the five reasons after it.
    pub shortfall: u64,
    pub offline: u64,
    pub expired: u64,
    pub skipped: u64,
    pub failed: u64,
    pub no_receipt: u64,
}

/// The local day of an instant. An instant outside chrono's range (the store never holds
/// one) is clamped to that range rather than dropped, so every play stays counted.
fn day_of(ms: i64, tz: Tz) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    t.with_timezone(&tz).format("%Y-%m-%d").to_string()
}

/// `online(device, at_ms)`: whether the device was online at that instant.
/// `receipt(device, play_key)`: the stored receipt's status, if any.
/// Rows are sorted by feed, then day; only feeds and days with plays appear.
pub fn reconcile(
    plays: &[Play],
    tz: Tz,
    online: impl Fn(i64, i64) -> bool,
    receipt: impl Fn(i64, i64) -> Option<Status>,
) -> Vec<Row> {
    let mut rows: BTreeMap<(&str, String), Row> = BTreeMap::new();
    let mut members: Vec<i64> = Vec::new();
    for p in plays {
        let day = day_of(p.issued_ms, tz);
        let row = rows
            .entry((p.feed, day))
            .or_insert_with_key(|(feed, day)| Row {
                feed: (*feed).to_owned(),
                day: day.clone(),
                ..Row::default()
            });
        row.plays += 1;
        members.clear();
        members.extend_from_slice(p.members);
        members.sort_unstable();
        members.dedup();
        for &m in &members {
            row.targeted += 1;
            let on = online(m, p.issued_ms);
            if on {
                row.online += 1;
            }
            let slot = match (receipt(m, p.key), on) {
                (Some(Status::Played), _) => &mut row.played,
                (_, false) => &mut row.offline,
                (Some(Status::Expired), true) => &mut row.expired,
                (Some(Status::Skipped), true) => &mut row.skipped,
                (Some(Status::Failed), true) => &mut row.failed,
                (None, true) => &mut row.no_receipt,
            };
            *slot += 1;
        }
        row.shortfall = row.targeted - row.played;
    }
    rows.into_values().collect()
}

/// A play's stored receipts by status, over all its members (a store keeps one count per
/// play and status: `rollup_play`), indexed by [`Status::code`].
pub type StatusCounts = [u64; 4];

/// One play as [`reconcile_counted`] needs it: no member list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Issued<'a> {
    pub key: i64,
    pub feed: &'a str,
    pub issued_ms: i64,
}

/// One play's members at issue, counted (distinct), and the stored receipts of those
/// offline at issue by status: all [`reconcile_counted`] needs of its members.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counted {
    pub targeted: u64,
    pub offline: u64,
    pub away: StatusCounts,
}

/// The same rows as [`reconcile`], from each play's receipt counts instead of every
/// member's receipt: of its members only how many there were, how many were offline at
/// issue and what those offline reported are needed ([`Counted`]), since a receipt moves
/// such a member from `offline` to `played` and, from an online member, is simply counted
/// by its status. `counts(play_key)` covers the stored receipts of the play, which a store
/// only accepts from its members.
pub fn reconcile_counted(
    plays: &[Issued],
    members: &[Counted],
    tz: Tz,
    counts: impl Fn(i64) -> StatusCounts,
) -> Vec<Row> {
    let mut rows: BTreeMap<(&str, String), Row> = BTreeMap::new();
    for (p, m) in plays.iter().zip(members) {
        let row = rows
            .entry((p.feed, day_of(p.issued_ms, tz)))
            .or_insert_with_key(|(feed, day)| Row {
                feed: (*feed).to_owned(),
                day: day.clone(),
                ..Row::default()
            });
        let all = counts(p.key);
        let away = m.away;
        let of = |st: Status| all[st.code() as usize];
        // What online members reported; saturating only against counts that disagree with
        // the members (a store that accepted a receipt from a non-member), never otherwise.
        let here = |st: Status| of(st).saturating_sub(away[st.code() as usize]);
        let offline = m.offline.min(m.targeted);
        let online = m.targeted - offline;
        let reported = here(Status::Played)
            + here(Status::Expired)
            + here(Status::Skipped)
            + here(Status::Failed);
        row.plays += 1;
        row.targeted += m.targeted;
        row.online += online;
        row.played += of(Status::Played);
        row.offline += offline - away[Status::Played.code() as usize].min(offline);
        row.expired += here(Status::Expired);
        row.skipped += here(Status::Skipped);
        row.failed += here(Status::Failed);
        row.no_receipt += online.saturating_sub(reported);
        row.shortfall = row.targeted.saturating_sub(row.played);
    }
    rows.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    impl<'a> From<&Play<'a>> for Issued<'a> {
        fn from(p: &Play<'a>) -> Issued<'a> {
            Issued {
                key: p.key,
                feed: p.feed,
                issued_ms: p.issued_ms,
            }
        }
    }

    /// One play's members at issue as the definition finds them: listed one by one.
    #[derive(Debug, Clone, Default, PartialEq)]
    struct Split {
        /// Distinct members.
        targeted: u64,
        /// Distinct members offline at issue, ascending.
        offline: Vec<i64>,
    }

    impl Split {
        /// Counted, asking `offline_receipt(device)` for each member offline at issue.
        fn counted(&self, offline_receipt: impl Fn(i64) -> Option<Status>) -> Counted {
            let mut away: StatusCounts = [0; 4];
            for &m in &self.offline {
                if let Some(st) = offline_receipt(m) {
                    away[st.code() as usize] += 1;
                }
            }
            Counted {
                targeted: self.targeted,
                offline: self.offline.len() as u64,
                away,
            }
        }
    }

    /// Each play's distinct members, and those of them offline at issue (`online` as in
    /// [`reconcile`]).
    fn split_members(plays: &[Play], online: impl Fn(i64, i64) -> bool) -> Vec<Split> {
        let mut members: Vec<i64> = Vec::new();
        plays
            .iter()
            .map(|p| {
                members.clear();
                members.extend_from_slice(p.members);
                members.sort_unstable();
                members.dedup();
                Split {
                    targeted: members.len() as u64,
                    offline: members
                        .iter()
                        .copied()
                        .filter(|&m| !online(m, p.issued_ms))
                        .collect(),
                }
            })
            .collect()
    }

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .timestamp_millis()
    }

    #[test]
    fn a_day_with_every_case() {
        let tz = chrono_tz::Asia::Shanghai;
        let members = [1, 2, 3, 4, 5, 6, 7, 8];
        let few = [1, 2, 2];
        let plays = [
            Play {
                key: 10,
                feed: "bus-led-all",
                issued_ms: ms("2026-11-27T20:00:00+08:00"),
                members: &members,
            },
            // 23:59 local is still the 27th; 00:00 local the 28th (16:00 UTC the 27th).
            Play {
                key: 11,
                feed: "bus-led-all",
                issued_ms: ms("2026-11-27T23:59:59+08:00"),
                members: &few,
            },
            Play {
                key: 12,
                feed: "bus-led-all",
                issued_ms: ms("2026-11-28T00:00:00+08:00"),
                members: &few,
            },
            Play {
                key: 13,
                feed: "at-stops",
                issued_ms: ms("2026-11-28T09:00:00+08:00"),
                members: &[],
            },
        ];
        // Devices 1-5 online; 6, 7, 8 offline.
        let online = |d: i64, _at: i64| d <= 5;
        let receipt = |d: i64, play: i64| match (play, d) {
            (10, 1) => Some(Status::Played),
            (10, 2) => Some(Status::Expired),
            (10, 3) => Some(Status::Skipped),
            (10, 4) => Some(Status::Failed),
            (10, 5) => None,
            (10, 6) => Some(Status::Played), // offline at issue, but proved it played
            (10, 7) => Some(Status::Expired), // offline at issue: offline, not expired
            (10, 8) => None,
            (11 | 12, 1) => Some(Status::Played),
            _ => None,
        };
        let rows = reconcile(&plays, tz, online, receipt);
        let row = |feed: &str, day: &str, f: fn(&mut Row)| {
            let mut r = Row {
                feed: feed.into(),
                day: day.into(),
                ..Row::default()
            };
            f(&mut r);
            r
        };
        assert_eq!(
            rows,
            vec![
                row("at-stops", "2026-11-28", |r| r.plays = 1),
                row("bus-led-all", "2026-11-27", |r| {
                    r.plays = 2;
                    r.targeted = 10;
                    r.online = 7;
                    r.played = 3;
                    r.shortfall = 7;
                    r.offline = 2;
                    r.expired = 1;
                    r.skipped = 1;
                    r.failed = 1;
                    r.no_receipt = 2;
                }),
                row("bus-led-all", "2026-11-28", |r| {
                    r.plays = 1;
                    r.targeted = 2;
                    r.online = 2;
                    r.played = 1;
                    r.shortfall = 1;
                    r.no_receipt = 1;
                }),
            ]
        );
    }

    fn status(code: u8) -> Option<Status> {
        Status::from_code(i64::from(code))
    }

    proptest! {
        #[test]
        fn the_shortfall_adds_up(
            plays in prop::collection::vec(
                (0i64..50, 0usize..3, 0i64..4 * 86_400_000, prop::collection::vec(0i64..20, 0..10)),
                0..40,
            ),
            offline in prop::collection::btree_set((0i64..20, 0i64..4 * 86_400_000), 0..30),
            down in prop::collection::btree_set(0i64..20, 0..10),
            receipts in prop::collection::hash_map((0i64..20, 0i64..50), 0u8..5, 0..200),
        ) {
            let feeds = ["a", "b", "c"];
            let plays: Vec<Play> = plays
                .iter()
                .map(|(key, f, at, m)| Play { key: *key, feed: feeds[*f], issued_ms: *at, members: m })
                .collect();
            let offline: &BTreeSet<(i64, i64)> = &offline;
            let receipts: &HashMap<(i64, i64), u8> = &receipts;
            let rows = reconcile(
                &plays,
                chrono_tz::Asia::Shanghai,
                |d, at| !down.contains(&d) && !offline.contains(&(d, at)),
                |d, k| receipts.get(&(d, k)).copied().and_then(status),
            );
            let mut total_plays = 0;
            for r in &rows {
                prop_assert_eq!(
                    r.shortfall,
                    r.offline + r.expired + r.skipped + r.failed + r.no_receipt
                );
                prop_assert_eq!(r.played + r.shortfall, r.targeted);
                prop_assert!(r.online <= r.targeted);
                prop_assert!(r.offline <= r.targeted - r.online);
                total_plays += r.plays;
            }
            prop_assert_eq!(total_plays, plays.len() as u64);
            prop_assert!(rows.windows(2).all(|w| (&w[0].feed, &w[0].day) < (&w[1].feed, &w[1].day)));
        }
    }

    proptest! {
        #[test]
        fn counted_equals_the_definition(
            plays in prop::collection::vec(
                (0usize..3, 0i64..3 * 86_400_000, prop::collection::vec(0i64..12, 0..10)),
                0..30,
            ),
            offline in prop::collection::btree_set((0i64..12, 0i64..3 * 86_400_000), 0..20),
            down in prop::collection::btree_set(0i64..12, 0..6),
            // Each (member, play) may have a receipt: which one is drawn from these codes.
            codes in prop::collection::vec(0u8..6, 400),
        ) {
            let feeds = ["a", "b", "c"];
            let plays: Vec<Play> = plays
                .iter()
                .enumerate()
                .map(|(i, (f, at, m))| Play { key: i as i64, feed: feeds[*f], issued_ms: *at, members: m })
                .collect();
            // Receipts only from members: the store refuses others (`NotSent`).
            let mut receipts: HashMap<(i64, i64), Status> = HashMap::new();
            let mut n = 0;
            for p in &plays {
                for &m in p.members {
                    if let Some(st) = status(codes[n % codes.len()]) {
                        receipts.insert((m, p.key), st);
                    }
                    n += 1;
                }
            }
            let online = |d: i64, at: i64| !down.contains(&d) && !offline.contains(&(d, at));
            let want = reconcile(&plays, chrono_tz::Asia::Shanghai, online, |d, k| {
                receipts.get(&(d, k)).copied()
            });
            let splits = split_members(&plays, online);
            let mut counts: HashMap<i64, StatusCounts> = HashMap::new();
            for ((_, k), st) in &receipts {
                counts.entry(*k).or_default()[st.code() as usize] += 1;
            }
            let asked = std::cell::RefCell::new(Vec::new());
            let members: Vec<Counted> = plays
                .iter()
                .zip(&splits)
                .map(|(p, s)| {
                    s.counted(|d| {
                        asked.borrow_mut().push((d, p.key));
                        receipts.get(&(d, p.key)).copied()
                    })
                })
                .collect();
            let issued: Vec<Issued> = plays.iter().map(Issued::from).collect();
            let got = reconcile_counted(
                &issued,
                &members,
                chrono_tz::Asia::Shanghai,
                |k| counts.get(&k).copied().unwrap_or_default(),
            );
            prop_assert_eq!(got, want);
            // Only members offline at issue were looked up.
            for (d, k) in asked.into_inner() {
                let p = &plays[k as usize];
                prop_assert!(!online(d, p.issued_ms));
            }
        }
    }
}
