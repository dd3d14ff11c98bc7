//! Closed days' played start times as one timeline per display and day
//! (migrations/sqlite/0009_played_days.sql, `store::timeline`): written once a day is closed,
//! kept exact when a receipt for such a day arrives later, and read by compliance.
//!
//! Owns: `played_days` and `played_days_done`. Must not touch the receipts (they stay the
//! record) or the rollups.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;

use sqlx::{Row, SqliteConnection};
use tracing::{info, warn};

use super::*;
use crate::core::wire::Status;
use crate::store::timeline::{self, DAY_MS};

/// Days whose timelines are written: those before the UTC midnight `CLOSED_AFTER_DAYS - 1`
/// days ago, so a day is written within the hour after it ends. The receipts of its last plays
/// that come after that (a few minutes' worth, and displays back from offline) are added
/// to its timeline as they are stored.
pub const CLOSED_AFTER_DAYS: i64 = 1;
/// How often a committing writer looks for closed days to write (ms).
const CHECK_MS: i64 = 3_600_000;
/// Days written per look, newest first: a database upgraded with a long history catches up
/// a month an hour without holding the writer for long.
const DAYS_PER_CHECK: usize = 31;

impl SqliteStore {
    /// Writes the timelines of up to `max_days` closed days before `before_day` that have
    /// none yet, newest first, each in its own transaction; the days written.
    pub async fn compact_played(&self, before_day: i64, max_days: usize) -> Result<Vec<i64>> {
        let first: Option<i64> = sqlx::query_scalar("SELECT MIN(issued_at) FROM plays")
            .fetch_one(&self.read)
            .await?;
        let Some(first) = first else {
            return Ok(Vec::new());
        };
        // Receipts start at most RECEIPT_SLACK_MS before their play.
        let first_day = (first - crate::core::wire::RECEIPT_SLACK_MS).div_euclid(DAY_MS);
        let done: HashSet<i64> =
            sqlx::query_scalar("SELECT day FROM played_days_done WHERE day >= ? AND day < ?")
                .bind(first_day)
                .bind(before_day)
                .fetch_all(&self.read)
                .await?
                .into_iter()
                .collect();
        let days: Vec<i64> = (first_day..before_day)
            .rev()
            .filter(|d| !done.contains(d))
            .take(max_days)
            .collect();
        for &day in &days {
            let (lo, hi) = self.play_keys(day * DAY_MS, (day + 1) * DAY_MS).await?;
            let mut tx = self.pool.begin().await?;
            let rows = sqlx::query(
                "SELECT r.device, group_concat(r.started_at) FROM devices d NOT INDEXED
                   CROSS JOIN receipts r ON r.device = d.id AND r.play BETWEEN ? AND ?
                 WHERE r.status = 0 AND r.started_at >= ? AND r.started_at < ?
                 GROUP BY d.id",
            )
            .bind(lo)
            .bind(hi)
            .bind(day * DAY_MS)
            .bind((day + 1) * DAY_MS)
            .fetch_all(&mut *tx)
            .await?;
            for r in &rows {
                let device: i64 = r.try_get(0)?;
                let joined: String = r.try_get(1)?;
                let starts = joined
                    .split(',')
                    .map(|t| {
                        t.parse::<i64>().map_err(|e| {
                            StoreError::Invalid(format!("time {t:?} in a joined list: {e}"))
                        })
                    })
                    .collect::<Result<Vec<i64>>>()?;
                sqlx::query("INSERT INTO played_days (day, device, starts) VALUES (?, ?, ?)")
                    .bind(day)
                    .bind(device)
                    .bind(timeline::encode(day, &starts))
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("INSERT INTO played_days_done (day) VALUES (?)")
                .bind(day)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Ok(days)
    }

    /// The key range of the plays whose receipts can start in [from, to) (see
    /// `raw_receipts`); (1, 0), an empty range, when there are none.
    pub(super) async fn play_keys(&self, from_ms: i64, to_ms: i64) -> Result<(i64, i64)> {
        let slack = crate::core::wire::RECEIPT_SLACK_MS;
        let (lo, hi): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT MIN(id), MAX(id) FROM plays WHERE expires_at >= ? AND +issued_at < ?",
        )
        .bind(from_ms.saturating_sub(slack))
        .bind(to_ms.saturating_add(slack))
        .fetch_one(&self.read)
        .await?;
        Ok(lo.zip(hi).unwrap_or((1, 0)))
    }

    /// After a commit, at most hourly: writes the timelines of closed days in the
    /// background (one writer at a time).
    pub(super) fn maintain_played(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        let next = self.next_played_check.load(Ordering::Relaxed);
        if now < next
            || self
                .next_played_check
                .compare_exchange(next, now + CHECK_MS, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let before = now.div_euclid(DAY_MS) - CLOSED_AFTER_DAYS + 1;
            match store.compact_played(before, DAYS_PER_CHECK).await {
                Ok(days) if !days.is_empty() => {
                    info!(days = days.len(), "timelines of closed days written")
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "could not write the timelines of closed days; will retry")
                }
            }
        });
    }

    /// Played start times in [from, to) of every display, or of the `keys` ones: the
    /// timelines of the days that have them, the receipts of the rest (one key range per
    /// display, as for raw audits). By display key.
    pub(super) async fn played_by_key(
        &self,
        from_ms: i64,
        to_ms: i64,
        keys: Option<&[i64]>,
    ) -> Result<BTreeMap<i64, Vec<i64>>> {
        let mut by: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        if from_ms >= to_ms {
            return Ok(by);
        }
        let (d0, d1) = (from_ms.div_euclid(DAY_MS), (to_ms - 1).div_euclid(DAY_MS));
        let done: HashSet<i64> =
            sqlx::query_scalar("SELECT day FROM played_days_done WHERE day BETWEEN ? AND ?")
                .bind(d0)
                .bind(d1)
                .fetch_all(&self.read)
                .await?
                .into_iter()
                .collect();
        let list = keys.map(|k| json_list("display keys", &k)).transpose()?;
        let timelines = match &list {
            None => sqlx::query("SELECT day, device, starts FROM played_days WHERE day BETWEEN ? AND ?")
                .bind(d0)
                .bind(d1),
            // Each (day, display) by the key: a day's range would walk every display.
            Some(list) => sqlx::query(
                "WITH RECURSIVE days(day) AS (SELECT ?1 UNION ALL SELECT day + 1 FROM days WHERE day < ?2)
                 SELECT p.day, p.device, p.starts FROM days j CROSS JOIN json_each(?3) k
                 CROSS JOIN played_days p ON p.day = j.day AND p.device = k.value",
            )
            .bind(d0)
            .bind(d1)
            .bind(list.clone()),
        };
        for r in timelines.fetch_all(&self.read).await? {
            let (day, dev): (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
            let bytes: Vec<u8> = r.try_get(2)?;
            let starts = timeline::decode(day, &bytes).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "played_days of display {dev}, day {day}: not a timeline"
                ))
            })?;
            by.entry(dev)
                .or_default()
                .extend(starts.into_iter().filter(|t| (from_ms..to_ms).contains(t)));
        }
        // The days without a timeline, in runs, from the receipts.
        let mut day = d0;
        while day <= d1 {
            if done.contains(&day) {
                day += 1;
                continue;
            }
            let mut end = day;
            while end < d1 && !done.contains(&(end + 1)) {
                end += 1;
            }
            let (f, t) = (from_ms.max(day * DAY_MS), to_ms.min((end + 1) * DAY_MS));
            self.played_raw(f, t, list.as_deref(), &mut by).await?;
            day = end + 1;
        }
        for t in by.values_mut() {
            t.sort_unstable();
        }
        Ok(by)
    }

    /// Played start times in [from, to) from the receipts, added to `by`: of every display,
    /// or of those in `keys` (a JSON list).
    async fn played_raw(
        &self,
        from_ms: i64,
        to_ms: i64,
        keys: Option<&str>,
        by: &mut BTreeMap<i64, Vec<i64>>,
    ) -> Result<()> {
        let (lo, hi) = self.play_keys(from_ms, to_ms).await?;
        let displays = match keys {
            None => "devices d NOT INDEXED",
            Some(_) => "(SELECT value AS id FROM json_each(?5)) d",
        };
        // One row per display, its start times joined: the driver's cost is per row (each
        // crosses from SQLite's thread to this task), and here it was most of the time.
        let sql = format!(
            "SELECT d.id, group_concat(r.started_at) FROM {displays} CROSS JOIN receipts r
               ON r.device = d.id AND r.play BETWEEN ?1 AND ?2
             WHERE r.status = 0 AND r.started_at >= ?3 AND r.started_at < ?4
             GROUP BY d.id"
        );
        let mut q = sqlx::query(&sql)
            .bind(lo)
            .bind(hi)
            .bind(from_ms)
            .bind(to_ms);
        if let Some(k) = keys {
            q = q.bind(k.to_owned());
        }
        let rows = q.fetch_all(&self.read).await?;
        for r in &rows {
            let joined: String = r.try_get(1)?;
            let times = by.entry(r.try_get(0)?).or_default();
            for t in joined.split(',') {
                times.push(t.parse().map_err(|e| {
                    StoreError::Invalid(format!("time {t:?} in a joined list: {e}"))
                })?);
            }
        }
        Ok(())
    }
}

/// Adds the batch's played receipts of days that have their timelines already (a display
/// that kept its receipts while offline for days) to those timelines.
pub(super) async fn add_late(c: &mut SqliteConnection, stored: &[&ReceiptRow]) -> Result<()> {
    let mut by_day: HashMap<i64, Vec<&ReceiptRow>> = HashMap::new();
    for r in stored.iter().filter(|r| r.status == Status::Played) {
        by_day
            .entry(r.started_ms.div_euclid(DAY_MS))
            .or_default()
            .push(r);
    }
    for (day, rows) in by_day {
        let done: Option<i64> =
            sqlx::query_scalar("SELECT day FROM played_days_done WHERE day = ?")
                .bind(day)
                .fetch_optional(&mut *c)
                .await?;
        if done.is_none() {
            continue;
        }
        let mut late: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for r in rows {
            late.entry(r.device).or_default().push(r.started_ms);
        }
        for (device, mut starts) in late {
            let old: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT starts FROM played_days WHERE day = ? AND device = ?")
                    .bind(day)
                    .bind(device)
                    .fetch_optional(&mut *c)
                    .await?;
            if let Some(old) = old {
                starts.extend(timeline::decode(day, &old).ok_or_else(|| {
                    StoreError::Invalid(format!(
                        "played_days of display {device}, day {day}: not a timeline"
                    ))
                })?);
            }
            sqlx::query(
                "INSERT INTO played_days (day, device, starts) VALUES (?, ?, ?)
                 ON CONFLICT (day, device) DO UPDATE SET starts = excluded.starts",
            )
            .bind(day)
            .bind(device)
            .bind(timeline::encode(day, &starts))
            .execute(&mut *c)
            .await?;
        }
    }
    Ok(())
}
