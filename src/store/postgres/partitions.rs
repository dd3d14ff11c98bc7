//! The daily partitions of `receipts`: creating them ahead of time (moving strays out of
//! the DEFAULT partition), dropping old ones for retention, listing them, their names, and
//! the hourly maintenance `commit_batch` triggers (which also starts packing closed days).
//! Must not touch the rows inside a partition beyond moving strays and retention's deletes:
//! packing them is [`packing`]'s, writing them [`batch`]'s.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use sqlx::Row;
use tracing::{info, instrument, warn};

use super::*;

impl PgStore {
    /// Makes sure `receipts` has a partition for each UTC day `from_day ..= from_day +
    /// days_ahead` (days since the epoch), named `receipts_YYYYMMDD`. Rows of those days
    /// that went to the DEFAULT partition meanwhile move into the new partition. Returns how
    /// many partitions were created.
    #[instrument(skip(self))]
    pub async fn ensure_partitions(&self, from_day: i64, days_ahead: u32) -> Result<usize> {
        let existing: HashSet<i64> = self
            .partitions()
            .await?
            .into_iter()
            .map(|(day, _, _)| day)
            .collect();
        let mut missing = Vec::new();
        for day in from_day..=from_day.saturating_add(i64::from(days_ahead)) {
            if !existing.contains(&day) {
                missing.push((day, partition_name(day)?));
            }
        }
        if missing.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin().await?;
        ddl(
            &mut tx,
            &format!("SET LOCAL lock_timeout = '{PARTITION_LOCK_TIMEOUT}'"),
        )
        .await?;
        // Lock the parent first: inserts lock it before any partition, so taking it first
        // cannot deadlock with them, and no row can reach the DEFAULT partition while we
        // look at it.
        ddl(&mut tx, "LOCK TABLE ONLY receipts IN ACCESS EXCLUSIVE MODE").await?;
        let mut created = 0;
        for (day, name) in &missing {
            // Days outside the partition key's range belong to DEFAULT for good.
            let (Ok(lo), Ok(hi)) = (i32::try_from(*day), i32::try_from(day + 1)) else {
                continue;
            };
            let strays: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM receipts_default WHERE play_day >= $1 AND play_day < $2)",
            )
            .bind(lo)
            .bind(hi)
            .fetch_one(&mut *tx)
            .await?;
            if !strays {
                ddl(
                    &mut tx,
                    &format!(
                        "CREATE TABLE IF NOT EXISTS \"{name}\" PARTITION OF receipts FOR VALUES FROM ({lo}) TO ({hi})"
                    ),
                )
                .await?;
                created += 1;
                continue;
            }
            adopt_strays(&mut tx, name, lo, hi).await?;
            created += 1;
        }
        tx.commit().await?;
        info!(created, "receipt partitions created");
        Ok(created)
    }

    /// Retention: drops every daily partition of `receipts` for a day before `day` (days
    /// since the epoch, UTC, by the play's issue day) and deletes such rows from the DEFAULT
    /// partition. Rollups stay, but for the counts per play (`rollup_play`), which go with
    /// their receipts. Returns how many partitions were dropped.
    #[instrument(skip(self))]
    pub async fn drop_partitions_before(&self, day: i64) -> Result<usize> {
        let old: Vec<_> = self
            .partitions()
            .await?
            .into_iter()
            .filter(|(d, _, _)| *d < day)
            .collect();
        let mut tx = self.pool.begin().await?;
        if !old.is_empty() {
            ddl(
                &mut tx,
                &format!("SET LOCAL lock_timeout = '{PARTITION_LOCK_TIMEOUT}'"),
            )
            .await?;
            ddl(&mut tx, "LOCK TABLE ONLY receipts IN ACCESS EXCLUSIVE MODE").await?;
        }
        for (_, schema, name) in &old {
            ddl(
                &mut tx,
                &format!("DROP TABLE IF EXISTS \"{schema}\".\"{name}\""),
            )
            .await?;
        }
        let cut = i32::try_from(day).unwrap_or(if day < 0 { i32::MIN } else { i32::MAX });
        for sql in [
            "DELETE FROM receipts_default WHERE play_day < $1",
            "DELETE FROM receipts_packed WHERE play_day < $1",
            "DELETE FROM receipts_packed_days WHERE day < $1",
        ] {
            sqlx::query(sql).bind(cut).execute(&mut *tx).await?;
        }
        // A play's count goes with its receipts (a receipt's play_day is its play's UTC day).
        sqlx::query(
            "DELETE FROM rollup_play WHERE play IN (SELECT id FROM plays WHERE issued_at < $1)",
        )
        .bind(i64::from(cut) * 86_400_000)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        if !old.is_empty() {
            info!(
                dropped = old.len(),
                before_day = day,
                "receipt partitions dropped"
            );
        }
        Ok(old.len())
    }

    /// The daily partitions of `receipts`: (day, schema, table), by day.
    pub async fn partitions(&self) -> Result<Vec<(i64, String, String)>> {
        let rows = sqlx::query(
            "SELECT n.nspname::text AS schema, c.relname::text AS name
             FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE i.inhparent = 'receipts'::regclass",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let schema: String = r.try_get("schema")?;
            let name: String = r.try_get("name")?;
            if let Some(day) = partition_day(&name) {
                out.push((day, schema, name));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Called from `commit_batch`: once an hour, makes sure partitions exist two weeks
    /// ahead, and starts packing closed days in the background (a day's compaction can take
    /// a while; the batch does not wait for it). Failures are logged, never passed on: the
    /// DEFAULT partition takes the rows, and raw receipts stay readable until packed.
    pub(super) async fn maintain_partitions(&self) {
        let now = chrono::Utc::now().timestamp_millis();
        let next = self.next_partition_check.load(Ordering::Relaxed);
        if now < next
            || self
                .next_partition_check
                .compare_exchange(
                    next,
                    now + PARTITION_CHECK_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        if let Err(e) = self
            .ensure_partitions(now.div_euclid(MS_PER_DAY) - 1, DAYS_AHEAD + 1)
            .await
        {
            warn!(error = %e, "could not create receipt partitions ahead; will retry");
        }
        if self.compacting.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            let before = now.div_euclid(MS_PER_DAY) - COMPACT_AFTER_DAYS;
            if let Err(e) = store.compact_receipts(before).await {
                warn!(error = %e, "could not pack closed days of receipts; will retry");
            }
            store.compacting.store(false, Ordering::Release);
        });
    }
}

/// `receipts_YYYYMMDD` for a day since the epoch.
fn partition_name(day: i64) -> Result<String> {
    let d = day
        .checked_mul(86_400)
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .ok_or_else(|| StoreError::Invalid(format!("day {day} is out of range")))?;
    Ok(format!("receipts_{}", d.format("%Y%m%d")))
}

/// The day of a partition named by `partition_name`.
fn partition_day(name: &str) -> Option<i64> {
    let ymd = name.strip_prefix("receipts_")?;
    if ymd.len() != 8 || !ymd.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let d = chrono::NaiveDate::parse_from_str(ymd, "%Y%m%d").ok()?;
    Some(
        d.and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp()
            .div_euclid(86_400),
    )
}

/// Creates the partition of `[lo, hi)` when rows of its day already sit in DEFAULT (plain
/// creation would fail on them): builds it beside, moves them, then attaches it, which
/// builds the indexes to match.
async fn adopt_strays(c: &mut PgConnection, name: &str, lo: i32, hi: i32) -> Result<()> {
    ddl(
        c,
        &format!(
            "CREATE TABLE \"{name}\" (LIKE receipts INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        ),
    )
    .await?;
    let moved = ddl(
        c,
        &format!(
            "WITH moved AS (
                 DELETE FROM receipts_default WHERE play_day >= {lo} AND play_day < {hi}
                 RETURNING device, play, started_at, duration_ms, play_day, status)
             INSERT INTO \"{name}\" (device, play, started_at, duration_ms, play_day, status)
             SELECT device, play, started_at, duration_ms, play_day, status FROM moved"
        ),
    )
    .await?;
    ddl(
        c,
        &format!(
            "ALTER TABLE receipts ATTACH PARTITION \"{name}\" FOR VALUES FROM ({lo}) TO ({hi})"
        ),
    )
    .await?;
    info!(partition = %name, rows = moved, "moved receipts out of the default partition");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        for day in [0, 19_000, 20_000, 20_454] {
            let name = partition_name(day).unwrap();
            assert_eq!(partition_day(&name), Some(day), "{name}");
        }
        assert_eq!(partition_name(0).unwrap(), "receipts_19700101");
        assert_eq!(partition_day("receipts_default"), None);
        assert_eq!(partition_day("receipts_2024011"), None);
    }
}
