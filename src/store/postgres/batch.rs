//! What `commit_batch` writes, in its one transaction: the receipts (deduplicated, under
//! the shared locks of their play days), the rollups, the reject counts and
//! the presence intervals. Must not read for the API or audits, nor manage partitions or
//! packed days beyond asking [`packing`] which receipts are packed already.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{PgConnection, Row};

use super::packing::packed_duplicates;
use super::*;
use crate::core::tlog::TreeState;
use crate::store::sql::bind_all;
use crate::store::tlog::{self, PgAppended};

impl PgStore {
    /// The batch in one transaction, its log appended from `tip` when given; None when
    /// `tip` was stale (the transaction is rolled back, nothing stored).
    pub(super) async fn commit_once(
        &self,
        batch: &Batch,
        tip: Option<TreeState>,
    ) -> Result<Option<Outcome>> {
        let mut tx = self.pool.begin().await?;
        let offsets = covered_offsets(&mut tx, batch.utc_offset_h).await?;
        // The log's hashing runs while the database inserts: both futures are polled by
        // this task, the hashing to its end as soon as the insert waits on its answer.
        let (stored, ahead) = tokio::join!(self.insert_receipts(&mut tx, batch), async {
            self.log
                .then(|| tlog::leaves_ahead(&batch.receipts, &batch.names))
                .flatten()
        });
        let stored = stored?;
        // Hashed over the whole batch, they are its leaves when every receipt was new.
        let ahead = ahead.filter(|_| stored.len() == batch.receipts.len());
        write_rollups(&mut tx, &stored, &offsets).await?;
        let tree = if self.log && !stored.is_empty() {
            match tlog::pg_append(&mut tx, &stored, &batch.names, tip, ahead).await? {
                PgAppended::Tree(t) => Some(t),
                PgAppended::Moved => return Ok(None),
            }
        } else {
            tip
        };
        write_rejects(&mut tx, batch).await?;
        write_presence(&mut tx, batch).await?;
        tx.commit().await?;
        if let Some(t) = tree {
            self.log_tip.put(t);
        }
        Ok(Some(Outcome {
            stored: stored.len(),
            duplicates: batch.receipts.len() - stored.len(),
        }))
    }

    /// The batch's receipts not stored before (raw or packed), inserted: at most once per
    /// (device, play), under the shared locks of their play days.
    pub(super) async fn insert_receipts<'b>(
        &self,
        c: &mut PgConnection,
        batch: &'b Batch,
    ) -> Result<Vec<&'b ReceiptRow>> {
        let mut stored: Vec<&ReceiptRow> = Vec::with_capacity(batch.receipts.len());
        // A batch may carry the same receipt twice (a redelivery); the first one wins.
        let mut seen = HashSet::with_capacity(batch.receipts.len());
        let mut unique: Vec<&ReceiptRow> = batch
            .receipts
            .iter()
            .filter(|r| seen.insert((r.device, r.play)))
            .collect();
        // One key order for every writer, so concurrent batches cannot deadlock.
        unique.sort_unstable_by_key(|r| (r.device, r.play));
        let days = self.lock_play_days(&mut *c, &unique).await?;
        let day_of = |r: &ReceiptRow| {
            days.get(&r.play)
                .copied()
                .unwrap_or_else(|| day_i32(r.started_ms.div_euclid(MS_PER_DAY)))
        };
        let packed = packed_duplicates(&mut *c, &unique, &day_of).await?;
        if !packed.is_empty() {
            unique.retain(|r| !packed.contains(&(r.device, r.play)));
        }
        let by_key: HashMap<(i64, i64), &ReceiptRow> =
            unique.iter().map(|r| ((r.device, r.play), *r)).collect();
        for chunk in unique.chunks(ROWS_PER_STATEMENT) {
            let n = chunk.len();
            let (mut dev, mut play, mut start, mut dur, mut day, mut st) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            for r in chunk {
                dev.push(r.device);
                play.push(r.play);
                start.push(r.started_ms);
                dur.push(r.duration_ms);
                day.push(day_of(r));
                st.push(r.status.code() as i16);
            }
            let rows = sqlx::query(
                "INSERT INTO receipts (device, play, started_at, duration_ms, play_day, status)
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[],
                                      $5::integer[], $6::smallint[])
                 ON CONFLICT (device, play, play_day) DO NOTHING
                 RETURNING device, play",
            )
            .bind(dev)
            .bind(play)
            .bind(start)
            .bind(dur)
            .bind(day)
            .bind(st)
            .fetch_all(&mut *c)
            .await?;
            for row in rows {
                let k: (i64, i64) = (row.try_get("device")?, row.try_get("play")?);
                if let Some(r) = by_key.get(&k) {
                    stored.push(r);
                }
            }
        }
        Ok(stored)
    }

    /// The play day (partition key) of each receipt's play, taking the shared advisory
    /// lock of every day the batch writes, so that no compaction of those days runs until
    /// this transaction ends. A play the store does not have falls back to the receipt's
    /// own day (the daemon checks plays before; that day is locked too).
    async fn lock_play_days(
        &self,
        tx: &mut PgConnection,
        receipts: &[&ReceiptRow],
    ) -> Result<HashMap<i64, i32>> {
        let mut keys: Vec<i64> = receipts.iter().map(|r| r.play).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut days: HashMap<i64, i32> = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let rows = sqlx::query("SELECT id, issued_at FROM plays WHERE id = ANY($1)")
                .bind(chunk)
                .fetch_all(&mut *tx)
                .await?;
            for r in rows {
                let issued: i64 = r.try_get("issued_at")?;
                days.insert(r.try_get("id")?, day_i32(issued.div_euclid(MS_PER_DAY)));
            }
        }
        let mut wanted: Vec<i32> = receipts
            .iter()
            .map(|r| {
                days.get(&r.play)
                    .copied()
                    .unwrap_or_else(|| day_i32(r.started_ms.div_euclid(MS_PER_DAY)))
            })
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if !wanted.is_empty() {
            sqlx::query(&format!(
                "SELECT pg_advisory_xact_lock_shared({DAY_LOCK_KEY}, d) FROM UNNEST($1::integer[]) AS d"
            ))
            .bind(&wanted)
            .execute(&mut *tx)
            .await?;
        }
        Ok(days)
    }
}

/// Adds the stored receipts to every rollup: by class for each hour, and for each zone
/// offset kept (`offsets`, from [`covered_offsets`]) by class and by display for each
/// local day; and by play and status. The classes are read under the shared class lock.
async fn write_rollups(
    conn: &mut PgConnection,
    stored: &[&ReceiptRow],
    offsets: &[i64],
) -> Result<()> {
    if stored.is_empty() {
        return Ok(());
    }
    let mut deltas: BTreeMap<(i64, i64, i64, i64, i64), i64> = BTreeMap::new();
    let mut devices: Vec<i64> = Vec::with_capacity(stored.len());
    for r in stored {
        devices.push(r.device);
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
    devices.sort_unstable();
    devices.dedup();
    sqlx::query(&format!("SELECT {CLASS_LOCK_SHARED}"))
        .execute(&mut *conn)
        .await?;
    let classes: HashMap<i64, String> =
        sqlx::query_as("SELECT id, class FROM devices WHERE id = ANY($1)")
            .bind(&devices)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect();
    let deltas: Vec<_> = deltas.into_iter().collect();
    let class_of = |d: i64| classes.get(&d).map(String::as_str);
    let plays = rollups::play_upserts(
        stored.iter().map(|r| (r.play, r.status.code())),
        |n| format!("${n}"),
        true,
    );
    for (sql, binds) in rollups::upserts(&deltas, class_of, offsets, |n| format!("${n}"), true)
        .into_iter()
        .chain(plays)
    {
        bind_all(sqlx::query(&sql), binds)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The zone offsets whose daily rollups are kept, `batch_offset` among them: backfilled
/// from the rest of the rollups the first time it comes. Runs before the batch's receipts
/// are stored, so that the backfill and the batch's own upserts count them once (under the exclusive class lock,
/// so that two writers cannot both backfill it).
async fn covered_offsets(c: &mut PgConnection, batch_offset: Option<i64>) -> Result<Vec<i64>> {
    const READ: &str = "SELECT utc_offset FROM rollup_daily_coverage ORDER BY utc_offset";
    let mut offsets: Vec<i64> = sqlx::query_scalar(READ).fetch_all(&mut *c).await?;
    if let Some(off) = batch_offset.filter(|o| !offsets.contains(o)) {
        sqlx::query(&format!("SELECT {CLASS_LOCK}"))
            .execute(&mut *c)
            .await?;
        offsets = sqlx::query_scalar(READ).fetch_all(&mut *c).await?;
        if !offsets.contains(&off) {
            for sql in rollups::backfill(off, offsets.first().copied(), "receipts_all") {
                sqlx::query(&sql).execute(&mut *c).await?;
            }
            offsets.push(off);
        }
    }
    Ok(offsets)
}

/// Moves the counts of displays whose class changed (key, former class, new class) from
/// the former class's rollup rows to the new one's, from their receipts (raw and packed):
/// audits by class follow a display's class now, as a GROUP BY over the receipts does.
/// The caller holds the exclusive class lock.
pub(super) async fn move_classes(
    c: &mut PgConnection,
    changed: &[(i64, String, String)],
) -> Result<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let offsets: Vec<i64> = sqlx::query_scalar("SELECT utc_offset FROM rollup_daily_coverage")
        .fetch_all(&mut *c)
        .await?;
    for (device, former, now) in changed {
        let rows: Vec<(i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT r.started_at / 3600000, p.slogan, COALESCE(p.feed, 0), r.status::bigint, COUNT(*)
             FROM receipts_all r JOIN plays p ON p.id = r.play WHERE r.device = $1
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
            rollups::class_move(&by_hour, former, now, &offsets, |n| format!("${n}"), true)
        {
            bind_all(sqlx::query(&sql), binds).execute(&mut *c).await?;
        }
    }
    for sql in rollups::DROP_EMPTY {
        sqlx::query(sql).execute(&mut *c).await?;
    }
    Ok(())
}

/// Counts the batch's rejections by day and reason, in one statement.
async fn write_rejects(c: &mut PgConnection, batch: &Batch) -> Result<()> {
    let mut rejects: BTreeMap<(i64, &str), i64> = BTreeMap::new();
    for (reason, day) in &batch.rejects {
        *rejects.entry((*day, reason.as_str())).or_default() += 1;
    }
    if !rejects.is_empty() {
        let mut days = Vec::with_capacity(rejects.len());
        let mut reasons = Vec::with_capacity(rejects.len());
        let mut counts = Vec::with_capacity(rejects.len());
        for ((day, reason), n) in rejects {
            days.push(day);
            reasons.push(reason);
            counts.push(n);
        }
        sqlx::query(
            "INSERT INTO rejects (day, reason, count)
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[])
             ON CONFLICT (day, reason) DO UPDATE SET count = rejects.count + excluded.count",
        )
        .bind(days)
        .bind(reasons)
        .bind(counts)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// Opens and closes presence intervals.
async fn write_presence(c: &mut PgConnection, batch: &Batch) -> Result<()> {
    for p in &batch.presence {
        let open: Option<i64> = sqlx::query_scalar(
            "SELECT online_from FROM presence WHERE device = $1 AND online_until IS NULL",
        )
        .bind(p.device)
        .fetch_optional(&mut *c)
        .await?;
        match (p.online, open) {
            (true, None) => {
                sqlx::query(
                    "INSERT INTO presence (device, online_from) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                )
                .bind(p.device)
                .bind(p.at_ms)
                .execute(&mut *c)
                .await?;
            }
            (false, Some(from)) => {
                sqlx::query(
                    "UPDATE presence SET online_until = $1 WHERE device = $2 AND online_from = $3",
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
