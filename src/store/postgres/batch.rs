//! What `commit_batch` writes, in its one transaction: the receipts (deduplicated, under
//! the shared locks of their play days), the hourly and daily rollups, the reject counts and
//! the presence intervals. Must not read for the API or audits, nor manage partitions or
//! packed days beyond asking [`packing`] which receipts are packed already.

use std::collections::{BTreeMap, HashMap, HashSet};

use sqlx::{PgConnection, Row};

use super::packing::packed_duplicates;
use super::*;

impl PgStore {
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

/// Adds the stored receipts to the hourly rollup, and to the daily ones when the zone's
/// offset is fixed.
pub(super) async fn write_rollups(
    conn: &mut PgConnection,
    stored: &[&ReceiptRow],
    utc_offset_h: Option<i64>,
) -> Result<()> {
    // Sum in memory, then one upsert per rollup row, in key order.
    let mut roll: BTreeMap<(i64, i64, i64, i64, i16), i64> = BTreeMap::new();
    for r in stored {
        *roll
            .entry((
                r.started_ms.div_euclid(3_600_000),
                r.device,
                r.slogan,
                r.feed,
                r.status.code() as i16,
            ))
            .or_default() += 1;
    }
    let roll: Vec<_> = roll.into_iter().collect();
    if let Some(off) = utc_offset_h {
        // First batch for this zone: bring the daily tables up to the hourly one.
        let covered: Option<i64> = sqlx::query_scalar(
            "SELECT utc_offset FROM rollup_daily_coverage WHERE utc_offset = $1",
        )
        .bind(off)
        .fetch_optional(&mut *conn)
        .await?;
        if covered.is_none() {
            for sql in crate::store::daily::backfill(off) {
                sqlx::query(&sql).execute(&mut *conn).await?;
            }
        }
        let wide: Vec<crate::store::daily::HourlyDelta> = roll
            .iter()
            .map(|((h, d, s, f, st), n)| ((*h, *d, *s, *f, i64::from(*st)), *n))
            .collect();
        for (sql, binds) in crate::store::daily::upserts(&wide, off, |n| format!("${n}"), true) {
            let mut q = sqlx::query(&sql);
            for b in binds {
                q = q.bind(b);
            }
            q.execute(&mut *conn).await?;
        }
    }
    for chunk in roll.chunks(ROWS_PER_STATEMENT) {
        let n = chunk.len();
        let (mut h, mut d, mut s, mut f, mut st, mut c) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for ((hh, dd, ss, ff, tt), nn) in chunk {
            h.push(*hh);
            d.push(*dd);
            s.push(*ss);
            f.push(*ff);
            st.push(*tt);
            c.push(*nn);
        }
        sqlx::query(
            "INSERT INTO rollup_hourly (hour, device, slogan, feed, status, plays)
             SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::smallint[], $6::bigint[])
             ON CONFLICT (hour, device, slogan, feed, status)
             DO UPDATE SET plays = rollup_hourly.plays + excluded.plays",
        )
        .bind(h)
        .bind(d)
        .bind(s)
        .bind(f)
        .bind(st)
        .bind(c)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Counts the batch's rejections by day and reason, in one statement.
pub(super) async fn write_rejects(c: &mut PgConnection, batch: &Batch) -> Result<()> {
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
pub(super) async fn write_presence(c: &mut PgConnection, batch: &Batch) -> Result<()> {
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
