//! Reconciliation: plays planned against played per feed and day, the shortfall by reason.

use std::collections::HashMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;

use super::export::{Column, Kind, Sheet};
use super::{bounds, qerr, ReportError};
use crate::core::audit::reconcile;
use crate::core::model::Catalog;
use crate::core::wire::Status;
use crate::store::{ApiStore, Db, Store};

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
    let plays = store.feed_plays_between(f, t).await?;
    let mut spans: HashMap<i64, Vec<(i64, i64, Option<i64>)>> = HashMap::new();
    for m in store.memberships().await? {
        spans
            .entry(m.feed)
            .or_default()
            .push((m.device, m.since_ms, m.until_ms));
    }
    // A receipt may name a play issued just before `to` and arrive later: plays are the unit.
    let members: Vec<Vec<i64>> = plays
        .iter()
        .map(|p| {
            let issued = &p.issued_ms;
            spans
                .get(&p.feed_key)
                .map(|v| {
                    v.iter()
                        .filter(|(_, s, u)| *s <= *issued && u.is_none_or(|u| *issued < u))
                        .map(|(d, _, _)| *d)
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let list: Vec<reconcile::Play> = plays
        .iter()
        .zip(&members)
        .filter(|(p, _)| feed.as_ref().is_none_or(|x| *x == p.feed))
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
    let receipts: HashMap<(i64, i64), Status> = store
        .receipts_for_plays_between(f, t)
        .await?
        .into_iter()
        .map(|r| ((r.device, r.play), r.status))
        .collect();
    let rows = reconcile::reconcile(
        &list,
        tz,
        |d, at| {
            online
                .get(&d)
                .is_some_and(|v| v.iter().any(|(s, e)| *s <= at && at < *e))
        },
        |d, p| receipts.get(&(d, p)).copied(),
    );
    Ok(ReconcileAnswer {
        from: from.with_timezone(&tz).to_rfc3339(),
        to: to.with_timezone(&tz).to_rfc3339(),
        feed,
        rows,
    })
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
