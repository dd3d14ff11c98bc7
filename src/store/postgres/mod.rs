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
//!
//! This file holds the [`PgStore`] itself: connecting, the constants the backend shares,
//! the [`Store`] impl and its small helpers. The rest is split by concern: `partitions.rs`
//! (daily partitions and their hourly maintenance), `packing.rs` (packing closed days, and
//! reading raw and packed receipts together), `batch.rs` (what `commit_batch` writes) and
//! `api.rs` (the [`ApiStore`] impl).

mod api;
mod batch;
mod packing;
mod partitions;

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Row};
use tracing::instrument;

use super::rollups::{self, Plan};
use super::sql::{
    answer, audit_sql, bind_all, feed_state_row, play_row, raw_row, reject_count_row,
    streams_as_is, Bind, TimeCol, ALL_MEMBERSHIPS, DEVICE_KEYS, FEED_KEYS, OPEN_MEMBERSHIPS,
    PLAY_COLS,
};
use super::*;
use batch::move_classes;
use packing::receipts_in;

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
/// The class lock: shared by `commit_batch` while it reads its displays' classes and adds
/// to the rollups by class, exclusive for a `sync_inventory` that changes a class and moves
/// that display's counts (so no batch adds to the former class after the move).
const CLASS_LOCK: &str = "pg_advisory_xact_lock(hashtext(current_schema() || '.class'))";
const CLASS_LOCK_SHARED: &str =
    "pg_advisory_xact_lock_shared(hashtext(current_schema() || '.class'))";

pub use packing::Compacted;

#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// When `commit_batch` next checks the partitions (ms since the epoch).
    next_partition_check: Arc<AtomicI64>,
    /// A background compaction is running: the next check does not start another.
    compacting: Arc<AtomicBool>,
    /// False only in the benchmark's baseline ([`PgStore::without_receipt_log`]).
    log: bool,
    log_tip: Arc<super::tlog::LogTip>,
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
            log: true,
            log_tip: Arc::default(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// This store committing batches without appending them to the receipt log: the
    /// benchmark's baseline for the log's cost, never the daemon's. Nothing is hidden by
    /// it: `audit verify` names every receipt so stored as inserted outside the log.
    #[doc(hidden)]
    pub fn without_receipt_log(mut self) -> PgStore {
        self.log = false;
        self
    }
}

/// Adds the feeds not stored yet.
async fn insert_feeds(c: &mut PgConnection, feeds: &[String]) -> Result<()> {
    for chunk in feeds.chunks(ROWS_PER_STATEMENT) {
        sqlx::query(
            "INSERT INTO feeds (name) SELECT * FROM UNNEST($1::text[]) ON CONFLICT (name) DO NOTHING",
        )
        .bind(chunk)
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// The displays listed under another class than the one stored: (key, stored class, new
/// class). When there is any, takes the exclusive class lock first, so that no batch adds
/// to a former class once its counts are moved.
async fn class_changes(
    c: &mut PgConnection,
    names: &[&str],
    classes: &[&str],
) -> Result<Vec<(i64, String, String)>> {
    let changed: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT d.id, d.class, n.class FROM UNNEST($1::text[], $2::text[]) AS n(name, class)
         JOIN devices d ON d.name = n.name WHERE d.class <> n.class",
    )
    .bind(names)
    .bind(classes)
    .fetch_all(&mut *c)
    .await?;
    if !changed.is_empty() {
        sqlx::query(&format!("SELECT {CLASS_LOCK}"))
            .execute(&mut *c)
            .await?;
    }
    Ok(changed)
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
    /// Where `q`'s answer comes from, and its statement. Raw answers read raw and packed
    /// receipts bounded by the period (`receipts_in`).
    async fn audit_statement(
        &self,
        q: &PlaysQuery,
        ordered: bool,
    ) -> Result<(Plan, String, Vec<Bind>, TimeCol)> {
        let covered: Vec<i64> = sqlx::query_scalar("SELECT utc_offset FROM rollup_daily_coverage")
            .fetch_all(&self.pool)
            .await?;
        let plan = rollups::plan(q, |o| covered.contains(&o));
        // Numbers from the code, not text from the query.
        let from = q.from.map(|t| t.timestamp_millis().to_string());
        let to = q.to.map(|t| t.timestamp_millis().to_string());
        let raw = format!(
            "({}) r JOIN devices d ON d.id = r.device JOIN plays p ON p.id = r.play",
            receipts_in(from.as_deref(), to.as_deref())
        );
        let (sql, binds, time) = audit_sql(q, plan, |n| format!("${n}"), &raw, ordered, "JOIN");
        Ok((plan, sql, binds, time))
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
        insert_feeds(&mut tx, feeds).await?;
        // A device listed twice in one statement would hit "cannot affect row a second
        // time"; the last listing wins, as it would row by row.
        let class_of: BTreeMap<&str, &str> = devices
            .iter()
            .map(|d| (d.name.as_str(), d.class.as_str()))
            .collect();
        let names: Vec<&str> = class_of.keys().copied().collect();
        let classes: Vec<&str> = class_of.values().copied().collect();
        let changed = class_changes(&mut tx, &names, &classes).await?;
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
        move_classes(&mut tx, &changed).await?;
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
        Ok(r.as_ref().map(feed_state_row).transpose()?)
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
        if let Some(out) = self.commit_once(batch, self.log_tip.take()).await? {
            return Ok(out);
        }
        // The cached tree was stale: once more from the stored state, under its lock.
        self.commit_once(batch, None).await?.ok_or_else(|| {
            StoreError::Invalid("the receipt log moved while its state row was locked".into())
        })
    }

    #[instrument(skip_all)]
    async fn audit_plays(&self, q: &PlaysQuery) -> Result<Vec<PlaysRow>> {
        let (plan, sql, binds, time) = self.audit_statement(q, false).await?;
        let rows = bind_all(sqlx::query(&sql), binds)
            .fetch_all(&self.pool)
            .await?;
        Ok(answer(q, plan, time, rows)?)
    }

    async fn stream_plays(
        &self,
        q: &PlaysQuery,
        tx: tokio::sync::mpsc::Sender<PlaysRow>,
    ) -> Result<bool> {
        use futures_util::TryStreamExt;
        if !q.streamable() {
            return Ok(false);
        }
        let (_, sql, binds, time) = self.audit_statement(q, true).await?;
        if !streams_as_is(time) {
            for r in self.audit_plays(q).await? {
                if tx.send(r).await.is_err() {
                    break;
                }
            }
            return Ok(true);
        }
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
        // Partitions go by whole days: everything of plays before that day's start.
        let day_start = before_ms.div_euclid(86_400_000) * 86_400_000;
        Db::Postgres(self.clone())
            .log_mark_pruned(day_start)
            .await?;
        Ok(n as u64)
    }

    async fn reject_counts(&self) -> Result<Vec<RejectCount>> {
        let rows = sqlx::query(
            "SELECT reason, CAST(SUM(count) AS BIGINT) AS n FROM rejects GROUP BY reason ORDER BY reason",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(reject_count_row)
            .collect::<std::result::Result<_, _>>()?)
    }
}

/// Clamps a day number to the range of `play_day` (INTEGER).
fn day_i32(day: i64) -> i32 {
    i32::try_from(day).unwrap_or(if day < 0 { i32::MIN } else { i32::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain() {
        assert!(check_ident("t_01hx").is_ok());
        assert!(check_ident("a\"b").is_err());
        assert!(check_ident("1a").is_err());
        assert!(check_ident("").is_err());
    }
}
