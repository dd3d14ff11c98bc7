//! What `commit_batch` writes on SQLite, in its one transaction: the receipts (at most once
//! per (device, play)), the rollups, the reject counts and the presence
//! intervals. Must not read for the API or audits, nor open the transaction itself (that
//! is the `Store` impl's, in `mod.rs`).

use std::collections::{HashMap, HashSet};

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::*;
use crate::store::rollups;
use crate::store::sql::bind_all;

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

/// Adds the stored receipts to every rollup: by class for each hour, and for each zone
/// offset kept (`offsets`, from [`covered_offsets`]) by class and by display for each
/// local day; and by play and status.
pub(super) async fn write_rollups(
    c: &mut SqliteConnection,
    stored: &[&ReceiptRow],
    offsets: &[i64],
) -> Result<()> {
    if stored.is_empty() {
        return Ok(());
    }
    let mut deltas: HashMap<(i64, i64, i64, i64, i64), i64> = HashMap::new();
    let mut devices = HashSet::new();
    for r in stored {
        devices.insert(r.device);
        *deltas
            .entry((
                r.started_ms.div_euclid(3_600_000),
                r.device,
                r.slogan,
                r.feed,
                r.status.code(),
            ))
            .or_default() += 1;
    }
    let deltas: Vec<_> = deltas.into_iter().collect();
    let ids = json_list("display keys", &devices.into_iter().collect::<Vec<_>>())?;
    let classes: HashMap<i64, String> = sqlx::query_as(
        "SELECT id, class FROM devices WHERE id IN (SELECT value FROM json_each(?))",
    )
    .bind(ids)
    .fetch_all(&mut *c)
    .await?
    .into_iter()
    .collect();
    let class_of = |d: i64| classes.get(&d).map(String::as_str);
    let plays = rollups::play_upserts(
        stored.iter().map(|r| (r.play, r.status.code())),
        |_| "?".into(),
        false,
    );
    for (sql, binds) in rollups::upserts(&deltas, class_of, offsets, |_| "?".into(), false)
        .into_iter()
        .chain(plays)
    {
        bind_all(sqlx::query(&sql), binds).execute(&mut *c).await?;
    }
    Ok(())
}

/// The zone offsets whose daily rollups are kept, `batch_offset` among them: backfilled
/// from the rest of the rollups the first time it comes. Runs before the batch's receipts
/// are stored, so that the backfill and the batch's own upserts count them once.
pub(super) async fn covered_offsets(
    c: &mut SqliteConnection,
    batch_offset: Option<i64>,
) -> Result<Vec<i64>> {
    let mut offsets: Vec<i64> =
        sqlx::query_scalar("SELECT utc_offset FROM rollup_daily_coverage ORDER BY utc_offset")
            .fetch_all(&mut *c)
            .await?;
    if let Some(off) = batch_offset.filter(|o| !offsets.contains(o)) {
        for sql in rollups::backfill(off, offsets.first().copied(), "receipts") {
            sqlx::query(&sql).execute(&mut *c).await?;
        }
        offsets.push(off);
    }
    Ok(offsets)
}

/// Moves the counts of displays whose class changed (key, former class, new class) from
/// the former class's rollup rows to the new one's, from their receipts: audits by class
/// follow a display's class now, as a GROUP BY over the receipts does.
pub(super) async fn move_classes(
    c: &mut SqliteConnection,
    changed: &[(i64, String, String)],
) -> Result<()> {
    let offsets: Vec<i64> = sqlx::query_scalar("SELECT utc_offset FROM rollup_daily_coverage")
        .fetch_all(&mut *c)
        .await?;
    for (device, former, now) in changed {
        let rows: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT r.started_at / 3600000, p.slogan, COALESCE(p.feed, 0), r.status, COUNT(*)
             FROM receipts r JOIN plays p ON p.id = r.play WHERE r.device = ?
             GROUP BY 1, 2, 3, 4",
        )
        .bind(device)
        .fetch_all(&mut *c)
        .await?;
        let by_hour: Vec<_> = rows
            .into_iter()
            .map(|(h, s, f, st, n)| ((h, *device, s, f, st), n))
            .collect();
        for (sql, binds) in
            rollups::class_move(&by_hour, former, now, &offsets, |_| "?".into(), false)
        {
            bind_all(sqlx::query(&sql), binds).execute(&mut *c).await?;
        }
    }
    for sql in rollups::DROP_EMPTY {
        sqlx::query(sql).execute(&mut *c).await?;
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
