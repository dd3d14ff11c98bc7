//! The SQLite backend: the default, a file beside the daemon, WAL mode.
//!
//! Owns: the SQLite dialect (connection, migrations/sqlite, the statements SQLite says its
//! own way and the plans they are tuned for). The statements both backends share come from
//! [`sql`](super::sql), the approval rule from `core::approval`. Must not touch MQTT or HTTP.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use tracing::instrument;

use super::sql::{
    audit_sql, audit_sql_streaming, bind_all, daily_audit_sql, play_row, raw_row, raw_rows,
    retirement_row, revision_row, token_row, Bind, ALL_MEMBERSHIPS, ALL_RETIREMENTS, ALL_TOKENS,
    DEVICE_KEYS, FEED_KEYS, OPEN_MEMBERSHIPS, PLAY_COLS, REVISION_COLS, TOKEN_COLS,
};
use super::*;
use crate::core::approval;
use crate::core::wire::Status;

/// SQLite caps bound parameters per statement; receipts take five each.
const ROWS_PER_STATEMENT: usize = 4_000;

#[derive(Clone)]
pub struct SqliteStore {
    /// One connection: SQLite has one writer anyway, and a second in-process writer would
    /// meet SQLITE_BUSY on lock upgrades instead of waiting its turn.
    pool: SqlitePool,
    /// Readers for audits; WAL lets them run beside the writer.
    read: SqlitePool,
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
            .connect_with(opts.clone())
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteStore { pool, read })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The daily-rollup form of `q`, when a daily table answers it and holds all history.
    async fn daily_sql(&self, q: &PlaysQuery) -> Result<Option<(String, Vec<Bind>)>> {
        let Some((table, off)) = super::daily::table_for(q) else {
            return Ok(None);
        };
        let covered: Option<i64> =
            sqlx::query_scalar("SELECT utc_offset FROM rollup_daily_coverage WHERE utc_offset = ?")
                .bind(off)
                .fetch_optional(&self.read)
                .await?;
        Ok(covered.map(|_| daily_audit_sql(q, |_| "?".to_owned(), table, off)))
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
        for chunk in devices.chunks(1000) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO devices (name, class) ");
            q.push_values(chunk, |mut b, d| {
                b.push_bind(&d.name).push_bind(&d.class);
            });
            q.push(" ON CONFLICT (name) DO UPDATE SET class = excluded.class");
            q.build().execute(&mut *tx).await?;
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
        let mut tx = self.pool.begin().await?;
        let stored = insert_receipts(&mut tx, batch).await?;
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
            let rows = bind_all(sqlx::query(&sql), binds)
                .fetch_all(&self.read)
                .await?;
            return Ok(raw_rows(q, rows)?
                .into_iter()
                .map(|r| crate::core::audit::stream_row(q, r))
                .collect());
        }
        let (sql, binds) = audit_sql(q, |_| "?".to_owned());
        let rows = bind_all(sqlx::query(&sql), binds)
            .fetch_all(&self.read)
            .await?;
        Ok(crate::core::audit::fold(q, raw_rows(q, rows)?))
    }

    async fn stream_plays(
        &self,
        q: &PlaysQuery,
        tx: tokio::sync::mpsc::Sender<PlaysRow>,
    ) -> Result<bool> {
        use futures_util::TryStreamExt;
        let daily = self.daily_sql(q).await?;
        let Some((sql, binds)) = daily.or_else(|| audit_sql_streaming(q, |_| "?".to_owned()))
        else {
            return Ok(false);
        };
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
        let r = sqlx::query(
            "DELETE FROM receipts WHERE play IN (SELECT id FROM plays WHERE issued_at < ?)",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn reject_counts(&self) -> Result<Vec<RejectCount>> {
        let rows = sqlx::query(
            "SELECT reason, SUM(count) AS n FROM rejects GROUP BY reason ORDER BY reason",
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

/// The batch's receipts not stored before, inserted: at most once per (device, play).
async fn insert_receipts<'b>(
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
    for chunk in super::sized_chunks(&unique, 512) {
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
    for chunk in super::sized_chunks(&stored, 1024) {
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
async fn write_rollups(
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
            for sql in super::daily::backfill(off) {
                sqlx::query(&sql).execute(&mut *c).await?;
            }
        }
        for (sql, binds) in super::daily::upserts(&roll, off, |_| "?".to_owned(), false) {
            let mut q = sqlx::query(&sql);
            for b in binds {
                q = q.bind(b);
            }
            q.execute(&mut *c).await?;
        }
    }
    for chunk in super::sized_chunks(&roll, 512) {
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
async fn write_rejects(c: &mut SqliteConnection, batch: &Batch) -> Result<()> {
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
async fn write_presence(c: &mut SqliteConnection, batch: &Batch) -> Result<()> {
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

/// One ad set's revisions and retirement, read on `c` (the writer inside an approval, a
/// reader otherwise).
async fn load_history(c: &mut SqliteConnection, adset: &str) -> Result<Option<AdSetHistory>> {
    let revs = sqlx::query(&format!(
        "SELECT {REVISION_COLS} FROM adset_revisions WHERE adset = ? ORDER BY rev"
    ))
    .bind(adset)
    .fetch_all(&mut *c)
    .await?;
    let retired = sqlx::query("SELECT retired_by, retired_at FROM adset_retired WHERE adset = ?")
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

/// A time in ms from a `group_concat` list.
fn ms_of(s: &str) -> Result<i64> {
    s.parse()
        .map_err(|e| StoreError::Invalid(format!("time {s:?} in a joined list: {e}")))
}

impl ApiStore for SqliteStore {
    async fn create_token(&self, name: &str, role: Role, hash: &str, now_ms: i64) -> Result<i64> {
        let r = sqlx::query(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES (?, ?, ?, ?) RETURNING id",
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
            "SELECT {TOKEN_COLS} FROM tokens WHERE hash = ? AND revoked_at IS NULL"
        ))
        .bind(hash)
        .fetch_optional(&self.read)
        .await?;
        r.as_ref().map(token_row).transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(ALL_TOKENS).fetch_all(&self.read).await?;
        rows.iter().map(token_row).collect()
    }

    async fn revoke_token(&self, id_or_name: &str, now_ms: i64) -> Result<u64> {
        let id: i64 = id_or_name.parse().unwrap_or(-1);
        let r = sqlx::query(
            "UPDATE tokens SET revoked_at = ? WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
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
        let next: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(rev), 0) + 1 FROM adset_revisions WHERE adset = ?",
        )
        .bind(&rev.adset)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO adset_revisions (adset, rev, format, body, origin, uploaded_by, uploaded_at, approved_by, approved_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        sqlx::query("DELETE FROM adset_retired WHERE adset = ?")
            .bind(&rev.adset)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(next)
    }

    async fn adset_history(&self, adset: &str) -> Result<Option<AdSetHistory>> {
        let mut c = self.read.acquire().await?;
        load_history(&mut c, adset).await
    }

    async fn adset_histories(&self) -> Result<Vec<AdSetHistory>> {
        let revs = sqlx::query(&format!(
            "SELECT {REVISION_COLS} FROM adset_revisions ORDER BY adset, rev"
        ))
        .fetch_all(&self.read)
        .await?;
        let retired: HashMap<String, Retirement> = sqlx::query(ALL_RETIREMENTS)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("adset")?, retirement_row(r)?)))
            .collect::<std::result::Result<_, sqlx::Error>>()?;
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
        // On the writer: SQLite's one writer serializes this with uploads and retirements.
        let mut tx = self.pool.begin().await?;
        let history = load_history(&mut tx, adset).await?;
        let mut rev = approval::approvable(adset, history.as_ref(), by, admin)?.clone();
        sqlx::query("UPDATE adset_revisions SET approved_by = ?, approved_at = ? WHERE adset = ? AND rev = ?")
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
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT rev FROM adset_revisions WHERE adset = ? LIMIT 1")
                .bind(adset)
                .fetch_optional(&self.pool)
                .await?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO adset_retired (adset, retired_by, retired_at) VALUES (?, ?, ?) ON CONFLICT (adset) DO NOTHING",
        )
        .bind(adset)
        .bind(by)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(true)
    }

    async fn presence_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<PresenceSpan>> {
        // Disjoint parts, each one range of an index, instead of every interval since the
        // start: those opened inside the period (a range of the key per display), and those
        // opened before it and still open at its start (closed after it, or not closed: two
        // ranges of presence_until; one OR would make SQLite look each row up again). One row
        // per display, as in `played_between`. The unary `+` keeps the first part on the key:
        // with bound values and statistics, SQLite 3.4x chose presence_until there instead,
        // once per display (minutes at 100 M receipts).
        let rows = sqlx::query(
            "SELECT d.name, g.spans FROM (
               SELECT device, group_concat(online_from || ':' || IFNULL(online_until, '')) AS spans
               FROM (
                 SELECT p.device, p.online_from, p.online_until FROM devices d CROSS JOIN presence p
                   ON p.device = d.id AND p.online_from >= ?1 AND p.online_from < ?2
                 WHERE +p.online_until > ?1 OR +p.online_until IS NULL
                 UNION ALL
                 SELECT device, online_from, online_until FROM presence
                 WHERE online_until > ?1 AND online_from < ?1
                 UNION ALL
                 SELECT device, online_from, online_until FROM presence
                 WHERE online_until IS NULL AND online_from < ?1
               ) GROUP BY device
             ) g CROSS JOIN devices d ON d.id = g.device",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.read)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let name: String = r.try_get(0)?;
            let spans: String = r.try_get(1)?;
            for span in spans.split(',') {
                let (from, until) = span
                    .split_once(':')
                    .ok_or_else(|| StoreError::Invalid(format!("presence span {span:?}")))?;
                let until = match until {
                    "" => None,
                    u => Some(ms_of(u)?),
                };
                out.push(PresenceSpan {
                    device: name.clone(),
                    since_ms: ms_of(from)?,
                    until_ms: until,
                });
            }
        }
        Ok(out)
    }

    async fn played_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        device: Option<&str>,
    ) -> Result<Vec<PlayedAt>> {
        // `receipts` is keyed by (device, play) and has no index on started_at (one would
        // cost about as much disk as the table). The daemon stores a receipt only when it
        // started within [issued_at, expires_at] of its play, give or take
        // RECEIPT_SLACK_MS, so every receipt of the period belongs to a play in the key range
        // found here: one range of the key per display instead of every receipt ever stored.
        // `+` pins plays_expires: audits ask mostly for recent periods, at its end.
        let slack = crate::core::wire::RECEIPT_SLACK_MS;
        let (lo, hi): (Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT MIN(id), MAX(id) FROM plays WHERE expires_at >= ? AND +issued_at < ?",
        )
        .bind(from_ms.saturating_sub(slack))
        .bind(to_ms.saturating_add(slack))
        .fetch_one(&self.read)
        .await?;
        let (Some(lo), Some(hi)) = (lo, hi) else {
            return Ok(Vec::new());
        };
        // One row per display, its start times joined: the driver's cost is per row (each
        // crosses from SQLite's thread to this task), and here it was most of the time.
        // Displays in key order (no sorter); each one's times are sorted below, where a
        // nearly sorted run costs one pass.
        let rows = sqlx::query(
            "SELECT d.name, group_concat(r.started_at) FROM devices d NOT INDEXED CROSS JOIN receipts r
               ON r.device = d.id AND r.play BETWEEN ? AND ?
             WHERE r.status = 0 AND r.started_at >= ? AND r.started_at < ? AND (? IS NULL OR d.name = ?)
             GROUP BY d.id ORDER BY d.id",
        )
        .bind(lo)
        .bind(hi)
        .bind(from_ms)
        .bind(to_ms)
        .bind(device)
        .bind(device)
        .fetch_all(&self.read)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let name: String = r.try_get(0)?;
            let times: String = r.try_get(1)?;
            let first = out.len();
            for t in times.split(',') {
                out.push(PlayedAt {
                    device: name.clone(),
                    started_ms: ms_of(t)?,
                });
            }
            out[first..].sort_by_key(|p| p.started_ms);
        }
        Ok(out)
    }

    async fn last_receipts(&self, devices: &[String]) -> Result<Vec<LastReceipt>> {
        let mut out = Vec::new();
        for d in devices {
            let r = sqlx::query(
                "SELECT r.started_at, r.status FROM receipts r JOIN devices d ON d.id = r.device
                 WHERE d.name = ? ORDER BY r.started_at DESC LIMIT 1",
            )
            .bind(d)
            .fetch_optional(&self.read)
            .await?;
            if let Some(r) = r {
                let code: i64 = r.try_get(1)?;
                if let Some(st) = Status::from_code(code) {
                    out.push(LastReceipt {
                        device: d.clone(),
                        started_ms: r.try_get(0)?,
                        status: st,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn feed_plays_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<FeedPlay>> {
        let rows = sqlx::query(
            "SELECT p.id, f.name, p.issued_at, f.id FROM plays p JOIN feeds f ON f.id = p.feed
             WHERE p.issued_at >= ? AND p.issued_at < ? ORDER BY p.id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.read)
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
        let rows = sqlx::query(
            "SELECT r.device, r.play, r.status FROM receipts r JOIN plays p ON p.id = r.play
             WHERE p.issued_at >= ? AND p.issued_at < ?",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.read)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let code: i64 = r.try_get(2)?;
            if let Some(st) = Status::from_code(code) {
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
        // The same three disjoint index ranges as `presence_between`, for the same reason:
        // the one-predicate form read every interval ever recorded.
        let rows = sqlx::query(
            "SELECT p.device, p.online_from, p.online_until FROM devices d CROSS JOIN presence p
               ON p.device = d.id AND p.online_from >= ?1 AND p.online_from < ?2
             WHERE +p.online_until > ?1 OR +p.online_until IS NULL
             UNION ALL
             SELECT device, online_from, online_until FROM presence
             WHERE online_until > ?1 AND online_from < ?1
             UNION ALL
             SELECT device, online_from, online_until FROM presence
             WHERE online_until IS NULL AND online_from < ?1",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.read)
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
