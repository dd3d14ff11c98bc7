//! The SQLite backend: the default, a file beside the daemon, WAL mode.
//!
//! Owns: the SQLite dialect (connection, migrations/sqlite, the statements SQLite says its
//! own way and the plans they are tuned for). The statements both backends share come from
//! [`sql`](super::sql), the approval rule from `core::approval`. Must not touch MQTT or HTTP.
//!
//! This file holds the [`SqliteStore`] itself: connecting, and the [`Store`] impl. What
//! `commit_batch` writes is in `batch.rs`, the [`ApiStore`] impl in `api.rs`.

mod api;
mod batch;
mod played;

pub use played::CLOSED_AFTER_DAYS;

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tracing::instrument;

use super::rollups::{self, Plan};
use super::sql::{
    answer, audit_sql, bind_all, feed_state_row, play_row, raw_row, reject_count_row,
    streams_as_is, ALL_MEMBERSHIPS, DEVICE_KEYS, FEED_KEYS, OPEN_MEMBERSHIPS, PLAY_COLS,
};
use super::*;
use batch::{
    covered_offsets, insert_receipts, move_classes, write_presence, write_rejects, write_rollups,
};

/// SQLite caps bound parameters per statement; receipts take five each.
const ROWS_PER_STATEMENT: usize = 4_000;

#[derive(Clone)]
pub struct SqliteStore {
    /// One connection: SQLite has one writer anyway, and a second in-process writer would
    /// meet SQLITE_BUSY on lock upgrades instead of waiting its turn.
    pool: SqlitePool,
    /// Readers for audits; WAL lets them run beside the writer.
    read: SqlitePool,
    /// When a commit next looks for closed days without timelines (ms since the epoch).
    next_played_check: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// False only in the benchmark's baseline ([`SqliteStore::without_receipt_log`]).
    log: bool,
}

/// Whether the writer connection goes back to the pool after a use. Not when sqlx still
/// counts a transaction open on it once its queued rollback has run: a COMMIT that failed
/// (SQLITE_FULL on a full disk) leaves a rollback that SQLite refuses, sqlx keeps counting
/// the transaction, and every later `begin` on that connection becomes a SAVEPOINT inside a
/// transaction that never commits: its writes would be acknowledged and never reach the
/// disk. A fresh connection starts clean.
async fn keep_writer(conn: &mut sqlx::SqliteConnection) -> sqlx::Result<bool> {
    use sqlx::Connection;
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // The rollback of a dropped transaction is queued on the connection's worker; a round
    // trip lets it run first.
    conn.ping().await?;
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::warn!("a failed transaction left the SQLite writer unusable; reconnecting");
    }
    Ok(clean)
}

/// `values` as the JSON text that `json_each(?)` reads: how a statement takes a list of
/// any length as one parameter. `what` names the list in the error.
fn json_list(what: &str, values: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string(values).map_err(|e| StoreError::Invalid(format!("{what}: {e}")))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path`).
    pub async fn connect(url: &str) -> Result<SqliteStore> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // A receipt is acknowledged only after its commit: FULL makes that commit
            // survive a power cut, not only a crash of the process.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .after_release(|conn, _| Box::pin(keep_writer(conn)))
            .connect_with(opts.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteStore {
            pool,
            read,
            next_played_check: Default::default(),
            log: true,
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// This store committing batches without appending them to the receipt log: the
    /// benchmark's baseline for the log's cost, never the daemon's. Nothing is hidden by
    /// it: `audit verify` names every receipt so stored as inserted outside the log.
    #[doc(hidden)]
    pub fn without_receipt_log(mut self) -> SqliteStore {
        self.log = false;
        self
    }

    /// The read-only pool, beside the writer.
    pub fn reader(&self) -> &SqlitePool {
        &self.read
    }

    /// Where `q`'s answer comes from, and its statement.
    async fn audit_statement(
        &self,
        q: &PlaysQuery,
        ordered: bool,
    ) -> Result<(Plan, String, Vec<super::sql::Bind>, super::sql::TimeCol)> {
        let covered: Vec<i64> = sqlx::query_scalar("SELECT utc_offset FROM rollup_daily_coverage")
            .fetch_all(&self.read)
            .await?;
        let plan = rollups::plan(q, |o| covered.contains(&o));
        let raw = if plan == Plan::Raw {
            self.raw_receipts(q).await?
        } else {
            String::new()
        };
        let (sql, binds, time) =
            audit_sql(q, plan, |_| "?".to_owned(), &raw, ordered, "CROSS JOIN");
        Ok((plan, sql, binds, time))
    }

    /// The receipts that can start in `q`'s period, as one range of the (device, play) key
    /// per display. The daemon stores a receipt only when it started within its play's
    /// [issued_at, expires_at], give or take RECEIPT_SLACK_MS, so the period's receipts
    /// belong to the plays found here (`+` pins plays_expires, as in `played_between`).
    /// Displays in key order, each searched once: the CROSS JOIN keeps SQLite from
    /// looping over plays and searching receipts (keyed by display first) per play.
    async fn raw_receipts(&self, q: &PlaysQuery) -> Result<String> {
        const JOIN: &str = "devices d NOT INDEXED CROSS JOIN receipts r ON r.device = d.id";
        const PLAYS: &str = " CROSS JOIN plays p ON p.id = r.play";
        if q.from.is_none() && q.to.is_none() {
            return Ok(format!("{JOIN}{PLAYS}"));
        }
        let from = q.from.map_or(i64::MIN, |t| t.timestamp_millis());
        let to = q.to.map_or(i64::MAX, |t| t.timestamp_millis());
        // Numbers from the database, not text from the query.
        let (lo, hi) = self.play_keys(from, to).await?;
        Ok(format!("{JOIN} AND r.play BETWEEN {lo} AND {hi}{PLAYS}"))
    }
}

impl Store for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await?;
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
        for chunk in feeds.chunks(1000) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO feeds (name) ");
            q.push_values(chunk, |mut b, f| {
                b.push_bind(f);
            });
            q.push(" ON CONFLICT (name) DO NOTHING");
            q.build().execute(&mut *tx).await?;
        }
        let changed = class_changes(&mut tx, devices).await?;
        for chunk in devices.chunks(1000) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO devices (name, class) ");
            q.push_values(chunk, |mut b, d| {
                b.push_bind(&d.name).push_bind(&d.class);
            });
            q.push(" ON CONFLICT (name) DO UPDATE SET class = excluded.class");
            q.build().execute(&mut *tx).await?;
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
        for (d, f) in closing {
            sqlx::query(
                "UPDATE memberships SET until = ? WHERE device = ? AND feed = ? AND until IS NULL",
            )
            .bind(now_ms)
            .bind(d)
            .bind(f)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in opening.chunks(ROWS_PER_STATEMENT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO memberships (device, feed, since) ",
            );
            q.push_values(chunk, |mut b, (d, f)| {
                b.push_bind(d).push_bind(f).push_bind(now_ms);
            });
            q.build().execute(&mut *tx).await?;
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
            "INSERT INTO slogans (adset, rev, slogan) VALUES (?, ?, ?)
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
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
                "INSERT INTO feed_state (feed, cursor, last_issued) VALUES (?, ?, ?)
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
        let r = sqlx::query("SELECT cursor, last_issued FROM feed_state WHERE feed = ?")
            .bind(feed)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(feed_state_row).transpose()?)
    }

    async fn plays_since(&self, since_ms: i64) -> Result<Vec<PlayRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {PLAY_COLS} FROM plays WHERE issued_at >= ?"
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
        let r = sqlx::query(&format!("SELECT {PLAY_COLS} FROM plays WHERE play_id = ?"))
            .bind(play_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(r.as_ref().map(play_row).transpose()?)
    }

    #[instrument(skip_all, fields(receipts = batch.receipts.len(), rejects = batch.rejects.len()))]
    async fn commit_batch(&self, batch: &Batch) -> Result<Outcome> {
        let t0 = std::time::Instant::now();
        let mut tx = self.pool.begin().await?;
        let offsets = covered_offsets(&mut tx, batch.utc_offset_h).await?;
        let t1 = t0.elapsed();
        let stored = insert_receipts(&mut tx, batch).await?;
        let t2 = t0.elapsed();
        write_rollups(&mut tx, &stored, &offsets).await?;
        let t3 = t0.elapsed();
        played::add_late(&mut tx, &stored).await?;
        if self.log {
            super::tlog::sqlite_append(&mut tx, &stored, &batch.names).await?;
        }
        write_rejects(&mut tx, batch).await?;
        write_presence(&mut tx, batch).await?;
        let t4 = t0.elapsed();
        tx.commit().await?;
        tracing::debug!(
            receipts = batch.receipts.len(),
            offsets_us = t1.as_micros() as u64,
            receipts_us = (t2 - t1).as_micros() as u64,
            rollups_us = (t3 - t2).as_micros() as u64,
            rest_us = (t4 - t3).as_micros() as u64,
            commit_us = (t0.elapsed() - t4).as_micros() as u64,
            "batch committed"
        );
        self.maintain_played();
        Ok(Outcome {
            stored: stored.len(),
            duplicates: batch.receipts.len() - stored.len(),
        })
    }

    #[instrument(skip_all)]
    async fn audit_plays(&self, q: &PlaysQuery) -> Result<Vec<PlaysRow>> {
        let (plan, sql, binds, time) = self.audit_statement(q, false).await?;
        let rows = bind_all(sqlx::query(&sql), binds)
            .fetch_all(&self.read)
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
        let mut rows = query.fetch(&self.read);
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
        // A play's count goes with its receipts: reconciliation then sees neither, as before
        // the counts were kept.
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "DELETE FROM receipts WHERE play IN (SELECT id FROM plays WHERE issued_at < ?)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM rollup_play WHERE play IN (SELECT id FROM plays WHERE issued_at < ?)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Db::Sqlite(self.clone()).log_mark_pruned(before_ms).await?;
        Ok(r.rows_affected())
    }

    async fn reject_counts(&self) -> Result<Vec<RejectCount>> {
        let rows = sqlx::query(
            "SELECT reason, SUM(count) AS n FROM rejects GROUP BY reason ORDER BY reason",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(reject_count_row)
            .collect::<std::result::Result<_, _>>()?)
    }
}

/// The displays of `devices` already stored under another class: (key, stored class, new
/// class), the last listing of a display winning as in the upsert.
async fn class_changes(
    c: &mut sqlx::SqliteConnection,
    devices: &[DeviceRow],
) -> Result<Vec<(i64, String, String)>> {
    let mut listed: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for d in devices {
        listed.insert(&d.name, &d.class);
    }
    let mut out = Vec::new();
    for r in sqlx::query("SELECT id, name, class FROM devices")
        .fetch_all(&mut *c)
        .await?
    {
        let (name, class): (String, String) = (r.try_get("name")?, r.try_get("class")?);
        if let Some(now) = listed.get(name.as_str()).filter(|now| **now != class) {
            out.push((r.try_get("id")?, class, (*now).to_owned()));
        }
    }
    Ok(out)
}
