//! Reconciliation: plays planned against played per feed and day, the shortfall by reason.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;

use super::export::{Column, Kind, Sheet};
use super::{bounds, qerr, ReportError};
use crate::core::audit::{members, reconcile};
use crate::core::model::Catalog;
use crate::store::{ApiStore, Db, FeedPlay, PlayRange, Store};

/// Query text of `reconcile`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct ReconcileParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub feed: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconcileAnswer {
    pub from: String,
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed: Option<String>,
    pub rows: Vec<reconcile::Row>,
}

pub async fn reconcile_report(
    store: &Db,
    catalog: &Catalog,
    p: &ReconcileParams,
    now: DateTime<Utc>,
) -> Result<ReconcileAnswer, ReportError> {
    let tz = catalog.timezone;
    let (from, to) = bounds(&p.from, &p.to, tz, now, ChronoDuration::days(1))?;
    let feed = p.feed.clone().filter(|s| !s.is_empty());
    if let Some(f) = &feed {
        if !catalog.feeds.iter().any(|x| x.id.as_str() == f) {
            return Err(qerr("feed", format!("unknown feed {f:?}")));
        }
    }
    let (f, t) = (from.timestamp_millis(), to.timestamp_millis());
    let plays: Vec<FeedPlay> = store
        .feed_plays_between(f, t)
        .await?
        .into_iter()
        .filter(|p| feed.as_ref().is_none_or(|x| *x == p.feed))
        .collect();
    // A receipt may name a play issued just before `to` and arrive later: plays are the unit.
    let mut online: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    for p in store.presence_keys_between(f, t).await? {
        online
            .entry(p.device)
            .or_default()
            .push((p.since_ms, p.until_ms.unwrap_or(i64::MAX)));
    }
    let of: Vec<members::PlayOf> = plays
        .iter()
        .map(|p| members::PlayOf {
            feed: p.feed_key,
            issued_ms: p.issued_ms,
        })
        .collect();
    let memberships = store.memberships().await?;
    let at = members::at_issue(
        &of,
        memberships
            .iter()
            .map(|m| (m.device, m.feed, m.since_ms, m.until_ms)),
        &online,
    );
    let counted = counted_members(store, &plays, &at).await?;
    let mut counts: HashMap<i64, reconcile::StatusCounts> = HashMap::new();
    for c in store.play_counts_between(f, t).await? {
        counts.entry(c.play).or_default()[c.status.code() as usize] +=
            u64::try_from(c.receipts).unwrap_or(0);
    }
    let issued: Vec<reconcile::Issued> = plays
        .iter()
        .map(|p| reconcile::Issued {
            key: p.play,
            feed: &p.feed,
            issued_ms: p.issued_ms,
        })
        .collect();
    let rows = reconcile::reconcile_counted(&issued, &counted, tz, |k| {
        counts.get(&k).copied().unwrap_or_default()
    });
    Ok(ReconcileAnswer {
        from: from.with_timezone(&tz).to_rfc3339(),
        to: to.with_timezone(&tz).to_rfc3339(),
        feed,
        rows,
    })
}

/// Each play's members counted, with the receipts of those offline at issue read by key
/// range and added by status. Counts per play answer every online member; only the
/// offline ones' receipts are read, and those are rare (a display off the network seldom
/// has the play).
async fn counted_members(
    store: &Db,
    plays: &[FeedPlay],
    at: &members::AtIssue,
) -> Result<Vec<reconcile::Counted>, ReportError> {
    let mut counted: Vec<reconcile::Counted> = at
        .counts
        .iter()
        .map(|&(targeted, offline)| reconcile::Counted {
            targeted,
            offline,
            away: [0; 4],
        })
        .collect();
    let index: HashMap<i64, usize> = plays.iter().enumerate().map(|(i, p)| (p.play, i)).collect();
    let mut seen = HashSet::new();
    let ranges = offline_ranges(plays, at);
    tracing::debug!(
        plays = plays.len(),
        offline_spans = at.offline.values().map(Vec::len).sum::<usize>(),
        ranges = ranges.len(),
        "reconcile: receipts of members offline at issue, by key range"
    );
    for r in store.receipts_in_ranges(&ranges).await? {
        let Some(&i) = index.get(&r.play) else {
            continue;
        };
        // A range may hold plays its display was online for, or of another feed.
        let p = &plays[i];
        if at.offline_at(r.device, p.feed_key, p.issued_ms) && seen.insert((r.device, r.play)) {
            counted[i].away[r.status.code() as usize] += 1;
        }
    }
    Ok(counted)
}

/// Key ranges that hold every receipt of a member offline at issue: one per display and
/// span of its membership of a feed in which it was offline, over that feed's plays
/// issued in the span, so a display online in between is not read for the plays it was
/// online for.
fn offline_ranges(plays: &[FeedPlay], at: &members::AtIssue) -> Vec<PlayRange> {
    let mut by_feed: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    for p in plays {
        by_feed
            .entry(p.feed_key)
            .or_default()
            .push((p.issued_ms, p.play));
    }
    for v in by_feed.values_mut() {
        v.sort_unstable();
    }
    let mut out = Vec::new();
    for (&(device, feed), spans) in &at.offline {
        let Some(issued) = by_feed.get(&feed) else {
            continue;
        };
        for &(s, e) in spans {
            let lo = issued.partition_point(|(t, _)| *t < s);
            let hi = issued.partition_point(|(t, _)| *t < e);
            let run = &issued[lo..hi];
            let (Some(first), Some(last)) = (run.first(), run.last()) else {
                continue;
            };
            out.push(PlayRange {
                device,
                lo: run.iter().map(|(_, k)| *k).min().unwrap_or(first.1),
                hi: run.iter().map(|(_, k)| *k).max().unwrap_or(last.1),
                first_issued_ms: first.0,
                last_issued_ms: last.0,
            });
        }
    }
    out.sort_unstable();
    out
}

/// The columns of its downloads and tables, in order: the keys of a row's JSON.
pub const RECONCILE_COLUMNS: [Column; 12] = [
    Column::new("feed", Kind::Text),
    Column::new("day", Kind::Date),
    Column::new("plays", Kind::Integer),
    Column::new("targeted", Kind::Integer),
    Column::new("online", Kind::Integer),
    Column::new("played", Kind::Integer),
    Column::new("shortfall", Kind::Integer),
    Column::new("offline", Kind::Integer),
    Column::new("expired", Kind::Integer),
    Column::new("skipped", Kind::Integer),
    Column::new("failed", Kind::Integer),
    Column::new("no_receipt", Kind::Integer),
];

/// How its downloads state the query.
pub fn reconcile_sheet(a: &ReconcileAnswer, tz: chrono_tz::Tz) -> Sheet {
    Sheet::new("reconcile", &RECONCILE_COLUMNS, a, tz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every member offline at issue lies in one of its display's ranges, by key and by
        /// issue time, and no range holds (by both) a play its display was a member of
        /// and online for.
        #[test]
        fn offline_ranges_hold_each_offline_member_and_no_online_one(
            plays in prop::collection::vec((0i64..2, 0i64..5_000), 0..40),
            memberships in prop::collection::vec(
                (0i64..6, 0i64..2, 0i64..3_000, prop::option::of(2_000i64..6_000)),
                0..12,
            ),
            online in prop::collection::hash_map(
                0i64..6,
                prop::collection::vec((0i64..5_000, 0i64..1_500), 0..4),
                0..6,
            ),
        ) {
            let plays: Vec<FeedPlay> = plays
                .iter()
                .enumerate()
                .map(|(i, &(feed_key, issued_ms))| FeedPlay {
                    play: i as i64 * 3,
                    feed: format!("f{feed_key}"),
                    issued_ms,
                    feed_key,
                })
                .collect();
            let online: HashMap<i64, Vec<(i64, i64)>> = online
                .into_iter()
                .map(|(d, v)| (d, v.into_iter().map(|(s, l)| (s, s + l)).collect()))
                .collect();
            let of: Vec<members::PlayOf> = plays
                .iter()
                .map(|p| members::PlayOf { feed: p.feed_key, issued_ms: p.issued_ms })
                .collect();
            let at = members::at_issue(&of, memberships.iter().copied(), &online);
            let ranges = offline_ranges(&plays, &at);
            for p in &plays {
                for d in 0..6 {
                    let member = memberships.iter().any(|&(m, f, s, u)| {
                        m == d && f == p.feed_key && s <= p.issued_ms && u.is_none_or(|u| p.issued_ms < u)
                    });
                    let on = online
                        .get(&d)
                        .is_some_and(|v| v.iter().any(|(s, e)| *s <= p.issued_ms && p.issued_ms < *e));
                    let within = ranges.iter().any(|r| {
                        r.device == d
                            && (r.lo..=r.hi).contains(&p.play)
                            && (r.first_issued_ms..=r.last_issued_ms).contains(&p.issued_ms)
                    });
                    if member && !on {
                        prop_assert!(within, "display {} offline for play {}, in no range", d, p.play);
                    }
                    if member && on {
                        prop_assert!(!within, "display {} online for play {}, in a range", d, p.play);
                    }
                }
            }
        }
    }
}
