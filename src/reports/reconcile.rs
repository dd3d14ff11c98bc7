//! Reconciliation: plays planned against played per feed and day, the shortfall by reason.

use std::collections::HashMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;

use super::export::{Column, Kind, Sheet};
use super::{bounds, qerr, ReportError};
use crate::core::audit::reconcile;
use crate::core::model::Catalog;
use crate::core::wire::Status;
use crate::store::{ApiStore, Db, FeedPlay, Membership, PlayRange, Store};

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
    let members = members_at_issue(&plays, store.memberships().await?);
    let list: Vec<reconcile::Play> = plays
        .iter()
        .zip(&members)
        .map(|(p, m)| reconcile::Play {
            key: p.play,
            feed: &p.feed,
            issued_ms: p.issued_ms,
            members: m,
        })
        .collect();
    let mut online: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    for p in store.presence_keys_between(f, t).await? {
        online
            .entry(p.device)
            .or_default()
            .push((p.since_ms, p.until_ms.unwrap_or(i64::MAX)));
    }
    let splits = reconcile::split_members(&list, |d, at| {
        online
            .get(&d)
            .is_some_and(|v| v.iter().any(|(s, e)| *s <= at && at < *e))
    });
    // Counts per play answer every online member; only the offline ones' receipts are read,
    // and those are rare (a display off the network seldom has the play).
    let away: HashMap<(i64, i64), Status> = store
        .receipts_in_ranges(&offline_ranges(&list, &splits))
        .await?
        .into_iter()
        .map(|r| ((r.device, r.play), r.status))
        .collect();
    let mut counts: HashMap<i64, reconcile::StatusCounts> = HashMap::new();
    for c in store.play_counts_between(f, t).await? {
        counts.entry(c.play).or_default()[c.status.code() as usize] +=
            u64::try_from(c.receipts).unwrap_or(0);
    }
    let rows = reconcile::reconcile_counted(
        &list,
        &splits,
        tz,
        |k| counts.get(&k).copied().unwrap_or_default(),
        |d, k| away.get(&(d, k)).copied(),
    );
    Ok(ReconcileAnswer {
        from: from.with_timezone(&tz).to_rfc3339(),
        to: to.with_timezone(&tz).to_rfc3339(),
        feed,
        rows,
    })
}

/// The displays each play was sent to: its feed's members when it was issued.
fn members_at_issue(plays: &[FeedPlay], memberships: Vec<Membership>) -> Vec<Vec<i64>> {
    let mut spans: HashMap<i64, Vec<(i64, i64, Option<i64>)>> = HashMap::new();
    for m in memberships {
        spans
            .entry(m.feed)
            .or_default()
            .push((m.device, m.since_ms, m.until_ms));
    }
    plays
        .iter()
        .map(|p| {
            let issued = p.issued_ms;
            spans
                .get(&p.feed_key)
                .map(|v| {
                    v.iter()
                        .filter(|(_, s, u)| *s <= issued && u.is_none_or(|u| issued < u))
                        .map(|(d, _, _)| *d)
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Key ranges that hold every receipt of a member offline at issue: one per display and run
/// of its consecutive plays (in key order) that found it offline, so a display online in
/// between is not read for the plays it was online for.
fn offline_ranges(plays: &[reconcile::Play], splits: &[reconcile::Split]) -> Vec<PlayRange> {
    let mut open: HashMap<i64, PlayRange> = HashMap::new();
    let mut out = Vec::new();
    for (p, split) in plays.iter().zip(splits) {
        for &m in p.members {
            if split.offline.binary_search(&m).is_err() {
                if let Some(r) = open.remove(&m) {
                    out.push(r);
                }
            }
        }
        for &m in &split.offline {
            let r = open.entry(m).or_insert(PlayRange {
                device: m,
                lo: p.key,
                hi: p.key,
                first_issued_ms: p.issued_ms,
                last_issued_ms: p.issued_ms,
            });
            r.lo = r.lo.min(p.key);
            r.hi = r.hi.max(p.key);
            r.first_issued_ms = r.first_issued_ms.min(p.issued_ms);
            r.last_issued_ms = r.last_issued_ms.max(p.issued_ms);
        }
    }
    out.extend(open.into_values());
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
        /// issue time, and no range holds a play its display was online for.
        #[test]
        fn offline_ranges_hold_each_offline_member_and_no_online_one(
            plays in prop::collection::vec(
                (0i64..5_000, prop::collection::vec(0i64..8, 0..8)),
                0..40,
            ),
            offline in prop::collection::btree_set((0i64..8, 0usize..40), 0..80),
        ) {
            let list: Vec<reconcile::Play> = plays
                .iter()
                .enumerate()
                .map(|(i, (t, m))| reconcile::Play {
                    key: i as i64 * 3,
                    feed: "f",
                    issued_ms: *t,
                    members: m,
                })
                .collect();
            let splits = reconcile::split_members(&list, |d, at| {
                let i = list.iter().position(|p| p.issued_ms == at).unwrap_or(usize::MAX);
                !offline.contains(&(d, i))
            });
            let ranges = offline_ranges(&list, &splits);
            let within = |d: i64, p: &reconcile::Play| {
                ranges.iter().any(|r| {
                    r.device == d
                        && (r.lo..=r.hi).contains(&p.key)
                        && (r.first_issued_ms..=r.last_issued_ms).contains(&p.issued_ms)
                })
            };
            for (p, s) in list.iter().zip(&splits) {
                for &m in p.members {
                    let away = s.offline.binary_search(&m).is_ok();
                    prop_assert_eq!(within(m, p), away, "display {} play {}", m, p.key);
                }
            }
        }
    }
}
