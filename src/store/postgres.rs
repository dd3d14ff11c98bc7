//! The PostgreSQL backend: for fleets whose receipts outgrow one SQLite file.
//!
//! Owns: the PostgreSQL SQL (migrations/postgres), the connection pool, and the daily
//! partitions of `receipts` (creating them ahead of time, dropping old ones for retention).
//! Semantics match [`SqliteStore`](super::SqliteStore) method for method; the statements
//! both speak alike (the audit SQL among them) come from [`sql`](super::sql), the approval
//! rule from `core::approval`. Must not touch MQTT or HTTP.
//!
//! `receipts` is partitioned by `play_day`, the UTC day of the play's issue time, which the
//! store derives from `plays` while inserting: the dedupe key (device, play, play_day) then
//! means exactly (device, play). migrations/postgres/0001_init.sql explains the choice.
//!
//! Closed days are packed ([`PgStore::compact_receipts`], migrations/postgres/0004): one
//! `receipts_packed` row per (day, display) holding arrays, the raw day partition emptied.
//! Every reader of receipts reads raw and packed rows together (`receipts_all` or the same
//! union bounded by time, `receipts_in`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};
use tracing::{info, instrument, warn};

use super::sql::{
    audit_sql, audit_sql_streaming, bind_all, daily_audit_sql, play_row, raw_row, raw_rows,
    retirement_row, revision_row, token_row, Bind, ALL_MEMBERSHIPS, ALL_RETIREMENTS, ALL_TOKENS,
    DEVICE_KEYS, FEED_KEYS, OPEN_MEMBERSHIPS, PLAY_COLS, REVISION_COLS, TOKEN_COLS,
};
use super::*;
use crate::core::approval;
use crate::core::wire::Status;

/// Rows per receipt or rollup statement. Rows travel as one array per column, so this only
/// bounds the size of one message, not the number of parameters.
const ROWS_PER_STATEMENT: usize = 10_000;
const MS_PER_DAY: i64 = 86_400_000;
/// Partitions `migrate()` makes sure of, around today.
const DAYS_BEHIND: i64 = 7;
const DAYS_AHEAD: u32 = 14;
/// How often `commit_batch` checks that partitions exist ahead of time.
const PARTITION_CHECK_MS: i64 = 3_600_000;
/// Creating a partition locks `receipts` briefly; behind a long audit it gives up and
/// retries at the next check rather than holding up receipt writes.
const PARTITION_LOCK_TIMEOUT: &str = "5s";
/// Days whose receipts stay raw: the periodic maintenance packs the receipts of plays
/// issued before UTC midnight `COMPACT_AFTER_DAYS` days ago. Plays expire within minutes,
/// so by then a day only gets the odd late redelivery (which stays correct, just raw until
/// the next compaction).
pub const COMPACT_AFTER_DAYS: i64 = 2;
/// The per-day advisory lock: shared by `commit_batch` for the play days it writes,
/// exclusive for the compaction of one day. First key: the schema (several deployments or
/// tests in one database must not wait for each other), second: the day.
const DAY_LOCK_KEY: &str = "hashtext(current_schema() || '.receipt_day')";

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// When `commit_batch` next checks the partitions (ms since the epoch).
    next_partition_check: Arc<AtomicI64>,
    /// A background compaction is running: the next check does not start another.
    compacting: Arc<AtomicBool>,
}

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
    /// Connects to the database at `url` (`postgres://...`), a pool of 8 connections.
    pub async fn connect(url: &str) -> Result<PgStore> {
        let opts = PgConnectOptions::from_str(url)?;
        Self::connect_with(opts).await
    }

    /// Like [`connect`](Self::connect), with every table in `schema` (created if missing):
    /// for tests, and for several deployments in one database. `schema` is an identifier of
    /// ASCII letters, digits and underscores.
    pub async fn connect_schema(url: &str, schema: &str) -> Result<PgStore> {
        check_ident(schema)?;
        let mut c = PgConnection::connect(url).await?;
        ddl(&mut c, &format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")).await?;
        c.close().await?;
        let opts = PgConnectOptions::from_str(url)?.options([("search_path", schema)]);
        Self::connect_with(opts).await
    }

    async fn connect_with(opts: PgConnectOptions) -> Result<PgStore> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // Short: a database that is down must surface as an error (and in /healthz) within
            // seconds; the daemon retries on its own.
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        Ok(PgStore {
            pool,
            next_partition_check: Arc::new(AtomicI64::new(0)),
            compacting: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

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
            // Creating the partition would fail on rows of its day in DEFAULT: build it
            // beside, move them, then attach (which builds the indexes to match).
            ddl(
                &mut tx,
                &format!(
                    "CREATE TABLE \"{name}\" (LIKE receipts INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                ),
            )
            .await?;
            let moved = ddl(
                &mut tx,
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
                &mut tx,
                &format!(
                    "ALTER TABLE receipts ATTACH PARTITION \"{name}\" FOR VALUES FROM ({lo}) TO ({hi})"
                ),
            )
            .await?;
            info!(partition = %name, rows = moved, "moved receipts out of the default partition");
            created += 1;
        }
        tx.commit().await?;
        info!(created, "receipt partitions created");
        Ok(created)
    }

    /// Retention: drops every daily partition of `receipts` for a day before `day` (days
    /// since the epoch, UTC, by the play's issue day) and deletes such rows from the DEFAULT
    /// partition. Rollups stay. Returns how many partitions were dropped.
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

    /// Called from `commit_batch`: once an hour, makes sure partitions exist two weeks
    /// ahead, and starts packing closed days in the background (a day's compaction can take
    /// a while; the batch does not wait for it). Failures are logged, never passed on: the
    /// DEFAULT partition takes the rows, and raw receipts stay readable until packed.
    async fn maintain_partitions(&self) {
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

/// Which of `receipts` are already stored in a packed row: (device, play). Runs after
/// `lock_play_days`, so no compaction of those days is under way and this statement's
/// snapshot sees every packed row of them. Only receipts of packed days are looked up.
async fn packed_duplicates(
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
fn receipts_in(from: Option<&str>, to: Option<&str>) -> String {
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

/// The shared play-count SQL (`audit_sql`) with its raw-receipts source widened to packed
/// receipts, bounded by the query's times. The rollup forms are returned as they are.
fn with_packed(q: &PlaysQuery, sql: String) -> Result<String> {
    const RAW: &str = "FROM receipts r JOIN plays p";
    if !sql.contains(RAW) {
        if q.rollup_ok() {
            return Ok(sql);
        }
        // The shared SQL changed shape: reading `receipts` alone would miss packed days.
        return Err(StoreError::Invalid(
            "the raw audit SQL no longer reads `FROM receipts r JOIN plays p`".into(),
        ));
    }
    let from = q.from.map(|t| t.timestamp_millis().to_string());
    let to = q.to.map(|t| t.timestamp_millis().to_string());
    Ok(sql.replacen(
        RAW,
        &format!(
            "FROM ({}) r JOIN plays p",
            receipts_in(from.as_deref(), to.as_deref())
        ),
        1,
    ))
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

/// Runs a statement built at run time (DDL, no parameters) without caching it as a
/// prepared statement. Returns the rows affected.
async fn ddl(c: &mut PgConnection, sql: &str) -> Result<u64> {
    Ok(sqlx::query(sql)
        .persistent(false)
        .execute(c)
        .await?
        .rows_affected())
}

fn check_ident(s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{s:?} is not a plain schema name (letters, digits, underscores)"
        )))
    }
}

impl PgStore {
    /// The daily-rollup form of `q`, when a daily table answers it and holds all history.
    async fn daily_sql(&self, q: &PlaysQuery) -> Result<Option<(String, Vec<Bind>)>> {
        let Some((table, off)) = super::daily::table_for(q) else {
            return Ok(None);
        };
        let covered: Option<i64> = sqlx::query_scalar(
            "SELECT utc_offset FROM rollup_daily_coverage WHERE utc_offset = $1",
        )
        .bind(off)
        .fetch_optional(&self.pool)
        .await?;
        Ok(covered.map(|_| daily_audit_sql(q, |n| format!("${n}"), table, off)))
    }

    /// The batch's receipts not stored before (raw or packed), inserted: at most once per
    /// (device, play), under the shared locks of their play days.
    async fn insert_receipts<'b>(
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

impl Store for PgStore {
    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        let today = chrono::Utc::now().timestamp_millis().div_euclid(MS_PER_DAY);
        self.ensure_partitions(today - DAYS_BEHIND, DAYS_BEHIND as u32 + DAYS_AHEAD)
            .await?;
        self.next_partition_check.store(
            chrono::Utc::now().timestamp_millis() + PARTITION_CHECK_MS,
            Ordering::Relaxed,
        );
        Ok(())
    }

    #[instrument(skip_all, fields(devices = devices.len(), feeds = feeds.len()))]
    async fn sync_inventory(
        &self,
        devices: &[DeviceRow],
        feeds: &[String],
        now_ms: i64,
    ) -> Result<Keys> {
        let mut tx = self.pool.begin().await?;
        for chunk in feeds.chunks(ROWS_PER_STATEMENT) {
            sqlx::query(
                "INSERT INTO feeds (name) SELECT * FROM UNNEST($1::text[]) ON CONFLICT (name) DO NOTHING",
            )
            .bind(chunk)
            .execute(&mut *tx)
            .await?;
        }
        // A device listed twice in one statement would hit "cannot affect row a second
        // time"; the last listing wins, as it would row by row.
        let mut class_of: BTreeMap<&str, &str> = BTreeMap::new();
        for d in devices {
            class_of.insert(&d.name, &d.class);
        }
        let names: Vec<&str> = class_of.keys().copied().collect();
        let classes: Vec<&str> = class_of.values().copied().collect();
        for (n, c) in names
            .chunks(ROWS_PER_STATEMENT)
            .zip(classes.chunks(ROWS_PER_STATEMENT))
        {
            sqlx::query(
                "INSERT INTO devices (name, class) SELECT * FROM UNNEST($1::text[], $2::text[])
                 ON CONFLICT (name) DO UPDATE SET class = excluded.class
                 WHERE devices.class IS DISTINCT FROM excluded.class",
            )
            .bind(n)
            .bind(c)
            .execute(&mut *tx)
            .await?;
        }
        let mut keys = Keys::default();
        for r in sqlx::query(FEED_KEYS).fetch_all(&mut *tx).await? {
            keys.feeds.insert(r.try_get("name")?, r.try_get("id")?);
        }
        for r in sqlx::query(DEVICE_KEYS).fetch_all(&mut *tx).await? {
            keys.devices.insert(r.try_get("name")?, r.try_get("id")?);
        }
        // Open memberships now, against what the inventory says.
        let mut open: HashSet<(i64, i64)> = HashSet::new();
        for r in sqlx::query(OPEN_MEMBERSHIPS).fetch_all(&mut *tx).await? {
            open.insert((r.try_get("device")?, r.try_get("feed")?));
        }
        let super::MembershipChanges { closing, opening } =
            super::membership_changes(devices, &keys, &open);
        for chunk in closing.chunks(ROWS_PER_STATEMENT) {
            let (d, f): (Vec<i64>, Vec<i64>) = chunk.iter().copied().unzip();
            sqlx::query(
                "UPDATE memberships m SET until = $1
                 FROM UNNEST($2::bigint[], $3::bigint[]) AS c(device, feed)
                 WHERE m.device = c.device AND m.feed = c.feed AND m.until IS NULL",
            )
            .bind(now_ms)
            .bind(d)
            .bind(f)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in opening.chunks(ROWS_PER_STATEMENT) {
            let (d, f): (Vec<i64>, Vec<i64>) = chunk.iter().copied().unzip();
            sqlx::query(
                "INSERT INTO memberships (device, feed, since)
                 SELECT device, feed, $1 FROM UNNEST($2::bigint[], $3::bigint[]) AS o(device, feed)
                 ON CONFLICT DO NOTHING",
            )
            .bind(now_ms)
            .bind(d)
            .bind(f)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(keys)
    }

    async fn memberships(&self) -> Result<Vec<Membership>> {
        let rows = sqlx::query(ALL_MEMBERSHIPS).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(Membership {
                    device: r.try_get("device")?,
                    feed: r.try_get("feed")?,
                    since_ms: r.try_get("since")?,
                    until_ms: r.try_get("until")?,
                })
            })
            .collect()
    }

    async fn slogan_key(&self, adset: &str, rev: i64, slogan: &str) -> Result<i64> {
        let r = sqlx::query(
            "INSERT INTO slogans (adset, rev, slogan) VALUES ($1, $2, $3)
             ON CONFLICT (adset, rev, slogan) DO UPDATE SET slogan = excluded.slogan
             RETURNING id",
        )
        .bind(adset)
        .bind(rev)
        .bind(slogan)
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get("id")?)
    }

    #[instrument(skip_all, fields(play_id = %play.play_id))]
    async fn record_play(&self, play: &NewPlay, cursor: Option<(&str, &str)>) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "INSERT INTO plays (play_id, feed, device, slogan, issued_at, expires_at, members)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(&play.play_id)
        .bind(play.feed)
        .bind(play.device)
        .bind(play.slogan)
        .bind(play.issued_ms)
        .bind(play.expires_ms)
        .bind(play.members)
        .fetch_one(&mut *tx)
        .await?;
        if let Some((feed, cur)) = cursor {
            sqlx::query(
                "INSERT INTO feed_state (feed, cursor, last_issued) VALUES ($1, $2, $3)
                 ON CONFLICT (feed) DO UPDATE SET cursor = excluded.cursor, last_issued = excluded.last_issued",
            )
            .bind(feed)
            .bind(cur)
            .bind(play.issued_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(r.try_get("id")?)
    }

    async fn feed_state(&self, feed: &str) -> Result<Option<FeedState>> {
        let r = sqlx::query("SELECT cursor, last_issued FROM feed_state WHERE feed = $1")
            .bind(feed)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match r {
            Some(r) => Some(FeedState {
                cursor_json: r.try_get("cursor")?,
                last_played_ms: r.try_get("last_issued")?,
            }),
            None => None,
        })
    }

    async fn plays_since(&self, since_ms: i64) -> Result<Vec<PlayRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {PLAY_COLS} FROM plays WHERE issued_at >= $1"
        ))
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(play_row)
            .collect::<std::result::Result<_, _>>()?)
    }

    async fn play_by_id(&self, play_id: &str) -> Result<Option<PlayRow>> {
        let r = sqlx::query(&format!("SELECT {PLAY_COLS} FROM plays WHERE play_id = $1"))
            .bind(play_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(play_row).transpose()?)
    }

    #[instrument(skip_all, fields(receipts = batch.receipts.len(), rejects = batch.rejects.len()))]
    async fn commit_batch(&self, batch: &Batch) -> Result<Outcome> {
        self.maintain_partitions().await;
        let mut tx = self.pool.begin().await?;
        let stored = self.insert_receipts(&mut tx, batch).await?;
        write_rollups(&mut tx, &stored, batch.utc_offset_h).await?;
        write_rejects(&mut tx, batch).await?;
        write_presence(&mut tx, batch).await?;
        tx.commit().await?;
        Ok(Outcome {
            stored: stored.len(),
            duplicates: batch.receipts.len() - stored.len(),
        })
    }

    #[instrument(skip_all)]
    async fn audit_plays(&self, q: &PlaysQuery) -> Result<Vec<PlaysRow>> {
        if let Some((sql, binds)) = self.daily_sql(q).await? {
            let query = bind_all(sqlx::query(&sql), binds);
            let rows = query.fetch_all(&self.pool).await?;
            return Ok(raw_rows(q, rows)?
                .into_iter()
                .map(|r| crate::core::audit::stream_row(q, r))
                .collect());
        }
        let (sql, binds) = audit_sql(q, |n| format!("${n}"));
        let sql = with_packed(q, sql)?;
        let query = bind_all(sqlx::query(&sql), binds);
        let rows = query.fetch_all(&self.pool).await?;
        Ok(crate::core::audit::fold(q, raw_rows(q, rows)?))
    }

    async fn stream_plays(
        &self,
        q: &PlaysQuery,
        tx: tokio::sync::mpsc::Sender<PlaysRow>,
    ) -> Result<bool> {
        use futures_util::TryStreamExt;
        let daily = self.daily_sql(q).await?;
        let Some((sql, binds)) = (match daily {
            Some(d) => Some(d),
            None => match audit_sql_streaming(q, |n| format!("${n}")) {
                Some((sql, binds)) => Some((with_packed(q, sql)?, binds)),
                None => None,
            },
        }) else {
            return Ok(false);
        };
        let query = bind_all(sqlx::query(&sql), binds);
        let mut rows = query.fetch(&self.pool);
        while let Some(r) = rows.try_next().await? {
            if let Some(raw) = raw_row(q, &r)? {
                if tx
                    .send(crate::core::audit::stream_row(q, raw))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        Ok(true)
    }

    async fn prune_receipts(&self, before_ms: i64) -> Result<u64> {
        // Whole partitions: no row-by-row delete, no bloat.
        let n = self
            .drop_partitions_before(before_ms.div_euclid(86_400_000))
            .await?;
        Ok(n as u64)
    }

    async fn reject_counts(&self) -> Result<Vec<RejectCount>> {
        let rows = sqlx::query(
            "SELECT reason, CAST(SUM(count) AS BIGINT) AS n FROM rejects GROUP BY reason ORDER BY reason",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RejectCount {
                    reason: r.try_get("reason")?,
                    count: r.try_get("n")?,
                })
            })
            .collect()
    }
}

/// A stored `status` (SMALLINT); None for a code this build does not know, which the
/// readers skip, as SQLite's do.
fn status_of(
    r: &sqlx::postgres::PgRow,
    i: usize,
) -> std::result::Result<Option<Status>, sqlx::Error> {
    let code: i16 = r.try_get(i)?;
    Ok(Status::from_code(i64::from(code)))
}

/// First key of the advisory locks that serialize writes to one ad set's revisions (the
/// second key is a hash of the schema and ad set name); an arbitrary constant ("adst").
const ADSET_LOCK_NS: i32 = 0x6164_7374;

/// Takes the transaction-scoped lock of `adset`: `add_revision`, `approve_latest` and
/// `retire` of one ad set run one at a time, as on SQLite's single writer. A hash collision
/// only makes two ad sets wait for each other.
async fn lock_adset(c: &mut PgConnection, adset: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '.' || $2))")
        .bind(ADSET_LOCK_NS)
        .bind(adset)
        .execute(c)
        .await?;
    Ok(())
}

/// Adds the stored receipts to the hourly rollup, and to the daily ones when the zone's
/// offset is fixed.
async fn write_rollups(
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
            for sql in super::daily::backfill(off) {
                sqlx::query(&sql).execute(&mut *conn).await?;
            }
        }
        let wide: Vec<super::daily::HourlyDelta> = roll
            .iter()
            .map(|((h, d, s, f, st), n)| ((*h, *d, *s, *f, i64::from(*st)), *n))
            .collect();
        for (sql, binds) in super::daily::upserts(&wide, off, |n| format!("${n}"), true) {
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

/// One ad set's revisions and retirement, read on `c` (inside an approval's transaction,
/// after its lock, or on any pooled connection for a plain read).
async fn load_history(c: &mut PgConnection, adset: &str) -> Result<Option<AdSetHistory>> {
    let revs = sqlx::query(&format!(
        "SELECT {REVISION_COLS} FROM adset_revisions WHERE adset = $1 ORDER BY rev"
    ))
    .bind(adset)
    .fetch_all(&mut *c)
    .await?;
    let retired = sqlx::query("SELECT retired_by, retired_at FROM adset_retired WHERE adset = $1")
        .bind(adset)
        .fetch_optional(&mut *c)
        .await?;
    let revs = revs
        .iter()
        .map(revision_row)
        .collect::<std::result::Result<_, _>>()?;
    let retired = retired.as_ref().map(retirement_row).transpose()?;
    Ok(approval::history_of(adset, revs, retired))
}

/// Clamps a day number to the range of `play_day` (INTEGER).
fn day_i32(day: i64) -> i32 {
    i32::try_from(day).unwrap_or(if day < 0 { i32::MIN } else { i32::MAX })
}

impl ApiStore for PgStore {
    async fn create_token(&self, name: &str, role: Role, hash: &str, now_ms: i64) -> Result<i64> {
        let r = sqlx::query(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(hash)
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get("id")?)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        let r = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM tokens WHERE hash = $1 AND revoked_at IS NULL"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(token_row).transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(ALL_TOKENS).fetch_all(&self.pool).await?;
        rows.iter().map(token_row).collect()
    }

    async fn revoke_token(&self, id_or_name: &str, now_ms: i64) -> Result<u64> {
        let id: i64 = id_or_name.parse().unwrap_or(-1);
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = $1 WHERE (id = $2 OR name = $3) AND revoked_at IS NULL",
        )
        .bind(now_ms)
        .bind(id)
        .bind(id_or_name)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn add_revision(&self, rev: &Revision, approved: bool) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        // Two uploads of one ad set would otherwise both read the same MAX(rev) and one
        // would fail on the primary key. Under READ COMMITTED the SELECT below takes its
        // snapshot after the lock is granted, so it sees the other upload's revision.
        lock_adset(&mut tx, &rev.adset).await?;
        let next: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(rev), 0) + 1 FROM adset_revisions WHERE adset = $1",
        )
        .bind(&rev.adset)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO adset_revisions (adset, rev, format, body, origin, uploaded_by, uploaded_at, approved_by, approved_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&rev.adset)
        .bind(next)
        .bind(&rev.format)
        .bind(&rev.body)
        .bind(&rev.origin)
        .bind(&rev.uploaded_by)
        .bind(rev.uploaded_ms)
        .bind(approved.then_some(rev.uploaded_by.as_str()))
        .bind(approved.then_some(rev.uploaded_ms))
        .execute(&mut *tx)
        .await?;
        // A new upload of a retired ad set brings it back (pending until approved).
        sqlx::query("DELETE FROM adset_retired WHERE adset = $1")
            .bind(&rev.adset)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(next)
    }

    async fn adset_history(&self, adset: &str) -> Result<Option<AdSetHistory>> {
        let mut c = self.pool.acquire().await?;
        load_history(&mut c, adset).await
    }

    async fn adset_histories(&self) -> Result<Vec<AdSetHistory>> {
        // Byte order of names, as SQLite's BINARY collation sorts them. Revisions and
        // retirements are read in one snapshot.
        let mut tx = self.pool.begin().await?;
        ddl(
            &mut tx,
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
        )
        .await?;
        let revs = sqlx::query(&format!(
            "SELECT {REVISION_COLS} FROM adset_revisions ORDER BY adset COLLATE \"C\", rev"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let retired: HashMap<String, Retirement> = sqlx::query(ALL_RETIREMENTS)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("adset")?, retirement_row(r)?)))
            .collect::<std::result::Result<_, sqlx::Error>>()?;
        tx.commit().await?;
        let revs = revs
            .iter()
            .map(revision_row)
            .collect::<std::result::Result<_, _>>()?;
        Ok(approval::group_histories(revs, retired))
    }

    async fn approve_latest(
        &self,
        adset: &str,
        by: &str,
        admin: bool,
        now_ms: i64,
    ) -> Result<Revision> {
        let mut tx = self.pool.begin().await?;
        // Serialized with uploads and retirements of the same ad set: two approvers cannot
        // both approve, nor approve a revision that a concurrent upload just superseded.
        lock_adset(&mut tx, adset).await?;
        let history = load_history(&mut tx, adset).await?;
        let mut rev = approval::approvable(adset, history.as_ref(), by, admin)?.clone();
        sqlx::query(
            "UPDATE adset_revisions SET approved_by = $1, approved_at = $2 WHERE adset = $3 AND rev = $4",
        )
        .bind(by)
        .bind(now_ms)
        .bind(adset)
        .bind(rev.rev)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        rev.approved_by = Some(by.to_owned());
        rev.approved_ms = Some(now_ms);
        Ok(rev)
    }

    async fn retire(&self, adset: &str, by: &str, now_ms: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        lock_adset(&mut tx, adset).await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM adset_revisions WHERE adset = $1)")
                .bind(adset)
                .fetch_one(&mut *tx)
                .await?;
        if !exists {
            return Ok(false);
        }
        // Retiring twice keeps the first retirement.
        sqlx::query(
            "INSERT INTO adset_retired (adset, retired_by, retired_at) VALUES ($1, $2, $3)
             ON CONFLICT (adset) DO NOTHING",
        )
        .bind(adset)
        .bind(by)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn presence_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<PresenceSpan>> {
        let rows = sqlx::query(
            "SELECT d.name, p.online_from, p.online_until FROM presence p JOIN devices d ON d.id = p.device
             WHERE p.online_from < $1 AND (p.online_until IS NULL OR p.online_until > $2)",
        )
        .bind(to_ms)
        .bind(from_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PresenceSpan {
                    device: r.try_get(0)?,
                    since_ms: r.try_get(1)?,
                    until_ms: r.try_get(2)?,
                })
            })
            .collect()
    }

    async fn played_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        device: Option<&str>,
    ) -> Result<Vec<PlayedAt>> {
        // By started_at, not play_day: no partition pruning, but the BRIN indexes on
        // started_at (raw) and on the packed rows' start bounds limit the scan to the
        // matching blocks. Play breaks ties so raw and packed rows sort alike.
        let rows = sqlx::query(&format!(
            "SELECT d.name, r.started_at FROM ({}) r JOIN devices d ON d.id = r.device
             WHERE r.status = 0 AND ($3::text IS NULL OR d.name = $3)
             ORDER BY r.device, r.started_at, r.play",
            receipts_in(Some("$1"), Some("$2"))
        ))
        .bind(from_ms)
        .bind(to_ms)
        .bind(device)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PlayedAt {
                    device: r.try_get(0)?,
                    started_ms: r.try_get(1)?,
                })
            })
            .collect()
    }

    async fn last_receipts(&self, devices: &[String]) -> Result<Vec<LastReceipt>> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        // One query: the newest receipt per display (DISTINCT ON), returned in the order
        // the names were asked, once per asked name, as SQLite's per-name loop does. Of the
        // packed rows only those holding the display's latest start are unnested; they are
        // found in the primary key alone (it carries max_start).
        let rows = sqlx::query(
            "WITH asked AS (
                 SELECT u.name, u.ord, d.id FROM UNNEST($1::text[]) WITH ORDINALITY AS u(name, ord)
                 JOIN devices d ON d.name = u.name
             ), newest_packed AS (
                 SELECT k.device, k.play_day::bigint * 86400000 + u.start_ms AS started_at,
                        u.play, (u.outcome & 7)::smallint AS status
                 FROM (SELECT DISTINCT id FROM asked) a
                 CROSS JOIN LATERAL (
                     SELECT x.play_day FROM receipts_packed x
                     WHERE x.device = a.id
                       AND x.max_start = (SELECT MAX(y.max_start) FROM receipts_packed y
                                          WHERE y.device = a.id)) top
                 JOIN receipts_packed k ON k.device = a.id AND k.play_day = top.play_day
                 CROSS JOIN LATERAL unnest(k.plays, k.starts, k.outcomes) AS u(play, start_ms, outcome)
             ), last AS (
                 SELECT DISTINCT ON (r.device) r.device, r.started_at, r.status
                 FROM (SELECT device, started_at, play, status FROM receipts
                       WHERE device IN (SELECT id FROM asked)
                       UNION ALL
                       SELECT device, started_at, play, status FROM newest_packed) r
                 ORDER BY r.device, r.started_at DESC, r.play DESC
             )
             SELECT a.name, l.started_at, l.status FROM asked a JOIN last l ON l.device = a.id
             ORDER BY a.ord",
        )
        .bind(devices)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(st) = status_of(r, 2)? {
                out.push(LastReceipt {
                    device: r.try_get(0)?,
                    started_ms: r.try_get(1)?,
                    status: st,
                });
            }
        }
        Ok(out)
    }

    async fn feed_plays_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<FeedPlay>> {
        let rows = sqlx::query(
            "SELECT p.id, f.name, p.issued_at, f.id FROM plays p JOIN feeds f ON f.id = p.feed
             WHERE p.issued_at >= $1 AND p.issued_at < $2 ORDER BY p.id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(FeedPlay {
                    play: r.try_get(0)?,
                    feed: r.try_get(1)?,
                    issued_ms: r.try_get(2)?,
                    feed_key: r.try_get(3)?,
                })
            })
            .collect()
    }

    async fn receipts_for_plays_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PlayReceipt>> {
        // A receipt of a play carries that play's issue day as play_day (see the
        // migration), so bounding play_day by the issue range prunes the partitions (and
        // the packed rows, by their BRIN index) to those days without losing a row.
        let first_day = day_i32(from_ms.div_euclid(MS_PER_DAY));
        let last_day = day_i32(to_ms.saturating_sub(1).div_euclid(MS_PER_DAY));
        let rows = sqlx::query(
            "SELECT r.device, r.play, r.status FROM receipts_all r JOIN plays p ON p.id = r.play
             WHERE p.issued_at >= $1 AND p.issued_at < $2
               AND r.play_day >= $3 AND r.play_day <= $4",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(first_day)
        .bind(last_day)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(st) = status_of(r, 2)? {
                out.push(PlayReceipt {
                    device: r.try_get(0)?,
                    play: r.try_get(1)?,
                    status: st,
                });
            }
        }
        Ok(out)
    }

    async fn presence_keys_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PresenceKeySpan>> {
        let rows = sqlx::query(
            "SELECT device, online_from, online_until FROM presence
             WHERE online_from < $1 AND (online_until IS NULL OR online_until > $2)",
        )
        .bind(to_ms)
        .bind(from_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PresenceKeySpan {
                    device: r.try_get(0)?,
                    since_ms: r.try_get(1)?,
                    until_ms: r.try_get(2)?,
                })
            })
            .collect()
    }
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

    #[test]
    fn raw_audits_read_packed_receipts_too() {
        // Bounds off the hour: the shared SQL reads raw receipts, which must be widened.
        let q = PlaysQuery::parse(
            &crate::core::audit::PlaysParams {
                from: Some("2026-01-01T00:00:00.5Z".into()),
                ..Default::default()
            },
            chrono_tz::Tz::UTC,
        )
        .unwrap();
        assert!(!q.rollup_ok());
        let (sql, _) = audit_sql(&q, |n| format!("${n}"));
        let sql = with_packed(&q, sql).unwrap();
        assert!(sql.contains("FROM receipts_packed k"), "{sql}");
        assert!(sql.contains("k.max_start >= 1767225600500"), "{sql}");
        let (sql, _) = audit_sql_streaming(&q, |n| format!("${n}")).unwrap();
        assert!(with_packed(&q, sql).unwrap().contains("receipts_packed"));
        // The rollup form is left alone.
        let q = PlaysQuery::parse(&Default::default(), chrono_tz::Tz::UTC).unwrap();
        let (sql, _) = audit_sql(&q, |n| format!("${n}"));
        assert_eq!(with_packed(&q, sql.clone()).unwrap(), sql);
    }

    #[test]
    fn schema_names_are_plain() {
        assert!(check_ident("t_01hx").is_ok());
        assert!(check_ident("a\"b").is_err());
        assert!(check_ident("1a").is_err());
        assert!(check_ident("").is_err());
    }
}
