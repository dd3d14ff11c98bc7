//! What `commit_batch` writes on SQLite, in its one transaction: the receipts (at most once
//! per (device, play)), the hourly and daily rollups, the reject counts and the presence
//! intervals. Must not read for the API or audits, nor open the transaction itself (that
//! is the `Store` impl's, in `mod.rs`).

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::*;

/// The batch's receipts not stored before, inserted: at most once per (device, play).
pub(super) async fn insert_receipts<'b>(
    c: &mut SqliteConnection,
    batch: &'b Batch,
) -> Result<Vec<&'b ReceiptRow>> {
    let mut stored: Vec<&ReceiptRow> = Vec::with_capacity(batch.receipts.len());
    // A batch may carry the same receipt twice (a redelivery); the first one wins.
    let mut seen = HashSet::with_capacity(batch.receipts.len());
    let unique: Vec<&ReceiptRow> = batch
        .receipts
        .iter()
        .filter(|r| seen.insert((r.device, r.play)))
        .collect();
    // Which of them are stored already: usually none, so this returns almost no rows.
    // (RETURNING on the insert named the stored ones instead, but sqlx hands every row
    // back across its worker thread one at a time: most of a batch's commit time.)
    let mut stored_before: HashSet<(i64, i64)> = HashSet::new();
    for chunk in crate::store::sized_chunks(&unique, 512) {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT r.device, r.play FROM receipts r JOIN (");
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.device).push_bind(r.play);
        });
        q.push(") AS k ON r.device = k.column1 AND r.play = k.column2");
        for row in q.build().fetch_all(&mut *c).await? {
            stored_before.insert((row.try_get(0)?, row.try_get(1)?));
        }
    }
    stored.extend(
        unique
            .iter()
            .filter(|r| !stored_before.contains(&(r.device, r.play))),
    );
    for chunk in crate::store::sized_chunks(&stored, 1024) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO receipts (device, play, started_at, duration_ms, status) ",
        );
        q.push_values(chunk, |mut b, r| {
            b.push_bind(r.device)
                .push_bind(r.play)
                .push_bind(r.started_ms)
                .push_bind(r.duration_ms)
                .push_bind(r.status.code());
        });
        q.push(" ON CONFLICT (device, play) DO NOTHING");
        let inserted = q.build().execute(&mut *c).await?.rows_affected();
        // One writer holds the database for the whole transaction, so nothing can slip in
        // between the check and the insert; if it ever did, the rollups would count it
        // twice: refuse the batch (it rolls back and is retried) rather than miscount.
        if inserted != chunk.len() as u64 {
            return Err(StoreError::Invalid(format!(
                "{} of {} receipts were stored by another writer during this batch",
                chunk.len() as u64 - inserted,
                chunk.len()
            )));
        }
    }
    Ok(stored)
}

/// Adds the stored receipts to the hourly rollup, and to the daily ones when the zone's
/// offset is fixed.
pub(super) async fn write_rollups(
    c: &mut SqliteConnection,
    stored: &[&ReceiptRow],
    utc_offset_h: Option<i64>,
) -> Result<()> {
    // Sum in memory, then one upsert per rollup row.
    let mut roll: HashMap<(i64, i64, i64, i64, i64), i64> = HashMap::new();
    for r in stored {
        *roll
            .entry((
                r.started_ms.div_euclid(3_600_000),
                r.device,
                r.slogan,
                r.feed,
                r.status.code(),
            ))
            .or_default() += 1;
    }
    let roll: Vec<_> = roll.into_iter().collect();
    if let Some(off) = utc_offset_h {
        // First batch for this zone: bring the daily tables up to the hourly one.
        let covered: Option<i64> =
            sqlx::query_scalar("SELECT utc_offset FROM rollup_daily_coverage WHERE utc_offset = ?")
                .bind(off)
                .fetch_optional(&mut *c)
                .await?;
        if covered.is_none() {
            for sql in crate::store::daily::backfill(off) {
                sqlx::query(&sql).execute(&mut *c).await?;
            }
        }
        for (sql, binds) in crate::store::daily::upserts(&roll, off, |_| "?".to_owned(), false) {
            let mut q = sqlx::query(&sql);
            for b in binds {
                q = q.bind(b);
            }
            q.execute(&mut *c).await?;
        }
    }
    for chunk in crate::store::sized_chunks(&roll, 512) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO rollup_hourly (hour, device, slogan, feed, status, plays) ",
        );
        q.push_values(chunk, |mut b, ((h, d, s, f, st), n)| {
            b.push_bind(h)
                .push_bind(d)
                .push_bind(s)
                .push_bind(f)
                .push_bind(st)
                .push_bind(n);
        });
        q.push(
            " ON CONFLICT (hour, device, slogan, feed, status) DO UPDATE SET plays = plays + excluded.plays",
        );
        q.build().execute(&mut *c).await?;
    }
    Ok(())
}

/// Counts the batch's rejections by day and reason.
pub(super) async fn write_rejects(c: &mut SqliteConnection, batch: &Batch) -> Result<()> {
    let mut rejects: HashMap<(i64, &str), i64> = HashMap::new();
    for (reason, day) in &batch.rejects {
        *rejects.entry((*day, reason.as_str())).or_default() += 1;
    }
    for ((day, reason), n) in rejects {
        sqlx::query(
            "INSERT INTO rejects (day, reason, count) VALUES (?, ?, ?)
             ON CONFLICT (day, reason) DO UPDATE SET count = count + excluded.count",
        )
        .bind(day)
        .bind(reason)
        .bind(n)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// Opens and closes presence intervals.
pub(super) async fn write_presence(c: &mut SqliteConnection, batch: &Batch) -> Result<()> {
    for p in &batch.presence {
        let open: Option<i64> = sqlx::query_scalar(
            "SELECT online_from FROM presence WHERE device = ? AND online_until IS NULL",
        )
        .bind(p.device)
        .fetch_optional(&mut *c)
        .await?;
        match (p.online, open) {
            (true, None) => {
                sqlx::query("INSERT OR IGNORE INTO presence (device, online_from) VALUES (?, ?)")
                    .bind(p.device)
                    .bind(p.at_ms)
                    .execute(&mut *c)
                    .await?;
            }
            (false, Some(from)) => {
                sqlx::query(
                    "UPDATE presence SET online_until = ? WHERE device = ? AND online_from = ?",
                )
                .bind(p.at_ms.max(from))
                .bind(p.device)
                .bind(from)
                .execute(&mut *c)
                .await?;
            }
            _ => {}
        }
    }
    Ok(())
}
