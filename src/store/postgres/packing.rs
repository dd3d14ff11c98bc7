//! Packing closed days: [`PgStore::compact_receipts`] moves a day partition's receipts into
//! `receipts_packed` rows (one per display and day), and the readers' side of that layout:
//! which receipts of a batch are packed already, and the SQL that reads raw and packed
//! receipts together. Must not create or drop partitions (that is [`partitions`]'s) nor
//! write new receipts (that is [`batch`]'s).

use std::collections::HashSet;

use sqlx::{PgConnection, Row};
use tracing::{info, instrument};

use super::*;

/// What one [`PgStore::compact_receipts`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Day partitions whose receipts were packed.
    pub days: usize,
    /// Receipts moved into packed rows.
    pub receipts: u64,
    /// Receipts left raw because a start or duration does not fit the packed arrays.
    pub left_raw: u64,
}

impl PgStore {
    /// Packs the receipts of every daily partition of a day before `before_day` (days since
    /// the epoch, UTC, by the play's issue day) into `receipts_packed`, one row per display
    /// and day, and empties the partition. Idempotent: an empty partition is skipped; late
    /// receipts that reached a packed day's partition since are appended to its packed
    /// rows. Safe beside `commit_batch`: each day is packed in its own transaction under
    /// that day's advisory lock, which writers of the day hold shared. The DEFAULT partition
    /// is left as it is. Receipts are never lost on failure (one transaction per day).
    #[instrument(skip(self))]
    pub async fn compact_receipts(&self, before_day: i64) -> Result<Compacted> {
        let mut done = Compacted::default();
        for (day, schema, name) in self.partitions().await? {
            if day >= before_day {
                break;
            }
            let Ok(d) = i32::try_from(day) else {
                continue;
            };
            let table = format!("\"{schema}\".\"{name}\"");
            // Most old days are packed already: skip them without taking any lock.
            let any: bool = sqlx::query_scalar(&format!("SELECT EXISTS (SELECT 1 FROM {table})"))
                .persistent(false)
                .fetch_one(&self.pool)
                .await?;
            if !any {
                continue;
            }
            let (packed, left) = self.compact_day(d, &table).await?;
            if packed > 0 {
                done.days += 1;
            }
            done.receipts += packed;
            done.left_raw += left;
        }
        if done.days > 0 {
            info!(
                days = done.days,
                receipts = done.receipts,
                left_raw = done.left_raw,
                "receipts packed"
            );
        }
        Ok(done)
    }

    /// Packs one day's partition `table`: (receipts packed, receipts left raw).
    async fn compact_day(&self, day: i32, table: &str) -> Result<(u64, u64)> {
        let base = i64::from(day) * MS_PER_DAY;
        // What the packed arrays can hold (see the migration); the rest stays raw.
        let fits = format!(
            "started_at - {base} BETWEEN -2147483648 AND 2147483647 \
             AND duration_ms BETWEEN 0 AND 268435455 AND status BETWEEN 0 AND 7"
        );
        let mut tx = self.pool.begin().await?;
        ddl(
            &mut tx,
            &format!("SET LOCAL lock_timeout = '{PARTITION_LOCK_TIMEOUT}'"),
        )
        .await?;
        // Waits for the batches writing this day; later ones wait for this transaction and
        // then see the packed rows (their dedupe check runs after their lock).
        sqlx::query(&format!("SELECT pg_advisory_xact_lock({DAY_LOCK_KEY}, $1)"))
            .bind(day)
            .execute(&mut *tx)
            .await?;
        let (total, fitting): (i64, i64) = sqlx::query_as(&format!(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE {fits}) FROM {table}"
        ))
        .persistent(false)
        .fetch_one(&mut *tx)
        .await?;
        if fitting == 0 {
            tx.rollback().await?;
            return Ok((0, u64::try_from(total).unwrap_or(0)));
        }
        // Late receipts of a day packed before are appended to its existing rows.
        ddl(
            &mut tx,
            &format!(
                "INSERT INTO receipts_packed AS k
                     (device, play_day, min_start, max_start, plays, starts, outcomes)
                 SELECT device, {day}, MIN(started_at), MAX(started_at),
                        array_agg(play ORDER BY play),
                        array_agg((started_at - {base})::integer ORDER BY play),
                        array_agg((duration_ms * 8 + status)::integer ORDER BY play)
                 FROM {table} WHERE {fits}
                 GROUP BY device
                 ON CONFLICT (device, play_day) DO UPDATE SET
                     min_start = LEAST(k.min_start, excluded.min_start),
                     max_start = GREATEST(k.max_start, excluded.max_start),
                     plays = k.plays || excluded.plays,
                     starts = k.starts || excluded.starts,
                     outcomes = k.outcomes || excluded.outcomes"
            ),
        )
        .await?;
        if fitting == total {
            // TRUNCATE gives the space back at once (a DELETE would leave the index
            // full-sized). It waits for readers of this partition, within lock_timeout.
            ddl(&mut tx, &format!("TRUNCATE {table}")).await?;
        } else {
            ddl(&mut tx, &format!("DELETE FROM {table} WHERE {fits}")).await?;
        }
        sqlx::query("INSERT INTO receipts_packed_days (day) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(day)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((
            u64::try_from(fitting).unwrap_or(0),
            u64::try_from(total - fitting).unwrap_or(0),
        ))
    }
}

/// Which of `receipts` are already stored in a packed row: (device, play). Runs after
/// `lock_play_days`, so no compaction of those days is under way and this statement's
/// snapshot sees every packed row of them. Only receipts of packed days are looked up.
pub(super) async fn packed_duplicates(
    tx: &mut PgConnection,
    receipts: &[&ReceiptRow],
    day_of: &impl Fn(&ReceiptRow) -> i32,
) -> Result<HashSet<(i64, i64)>> {
    let mut days: Vec<i32> = receipts.iter().map(|r| day_of(r)).collect();
    days.sort_unstable();
    days.dedup();
    let mut hits = HashSet::new();
    if days.is_empty() {
        return Ok(hits);
    }
    let packed: HashSet<i32> =
        sqlx::query_scalar("SELECT day FROM receipts_packed_days WHERE day = ANY($1)")
            .bind(&days)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    if packed.is_empty() {
        return Ok(hits);
    }
    let late: Vec<&&ReceiptRow> = receipts
        .iter()
        .filter(|r| packed.contains(&day_of(r)))
        .collect();
    for chunk in late.chunks(ROWS_PER_STATEMENT) {
        let dev: Vec<i64> = chunk.iter().map(|r| r.device).collect();
        let play: Vec<i64> = chunk.iter().map(|r| r.play).collect();
        let day: Vec<i32> = chunk.iter().map(|r| day_of(r)).collect();
        // LATERAL ... LIMIT 1: one primary-key probe per receipt, never a scan of the
        // packed table, whatever the planner thinks of UNNEST's row count.
        let rows = sqlx::query(
            "SELECT v.device, v.play
             FROM UNNEST($1::bigint[], $2::bigint[], $3::integer[]) AS v(device, play, day)
             CROSS JOIN LATERAL (
                 SELECT 1 FROM receipts_packed k
                 WHERE k.device = v.device AND k.play_day = v.day AND v.play = ANY(k.plays)
                 LIMIT 1) hit",
        )
        .bind(dev)
        .bind(play)
        .bind(day)
        .fetch_all(&mut *tx)
        .await?;
        for r in rows {
            hits.insert((r.try_get(0)?, r.try_get(1)?));
        }
    }
    Ok(hits)
}

/// Receipts, raw and packed, as rows (device, play, started_at, duration_ms, play_day,
/// status) with started_at in [from, to) (SQL expressions: placeholders or numbers; None
/// for no bound). The packed branch skips rows by their start bounds (BRIN) before
/// unnesting, which a filter on the `receipts_all` view cannot do.
pub(super) fn receipts_in(from: Option<&str>, to: Option<&str>) -> String {
    const START: &str = "(k.play_day::bigint * 86400000 + u.start_ms)";
    let mut raw = Vec::new();
    let mut packed = Vec::new();
    if let Some(f) = from {
        raw.push(format!("started_at >= {f}"));
        packed.push(format!("k.max_start >= {f}"));
        packed.push(format!("{START} >= {f}"));
    }
    if let Some(t) = to {
        raw.push(format!("started_at < {t}"));
        packed.push(format!("k.min_start < {t}"));
        packed.push(format!("{START} < {t}"));
    }
    let wh = |c: Vec<String>| {
        if c.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", c.join(" AND "))
        }
    };
    format!(
        "SELECT device, play, started_at, duration_ms, play_day, status FROM receipts{} \
         UNION ALL \
         SELECT k.device, u.play, {START}, (u.outcome >> 3)::bigint, k.play_day, \
                (u.outcome & 7)::smallint \
         FROM receipts_packed k \
         CROSS JOIN LATERAL unnest(k.plays, k.starts, k.outcomes) AS u(play, start_ms, outcome){}",
        wh(raw),
        wh(packed)
    )
}
