//! The SQLite backend: the default, a file beside the daemon, WAL mode.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use tracing::instrument;

use super::*;
use crate::audit::{GroupKey, RawRow};

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
}

fn play_row(r: &sqlx::sqlite::SqliteRow) -> std::result::Result<PlayRow, sqlx::Error> {
    Ok(PlayRow {
        key: r.try_get("id")?,
        play_id: r.try_get("play_id")?,
        feed: r.try_get("feed")?,
        device: r.try_get("device")?,
        slogan: r.try_get("slogan")?,
        issued_ms: r.try_get("issued_at")?,
        expires_ms: r.try_get("expires_at")?,
    })
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
        for r in sqlx::query("SELECT id, name FROM feeds")
            .fetch_all(&mut *tx)
            .await?
        {
            keys.feeds.insert(r.try_get("name")?, r.try_get("id")?);
        }
        for r in sqlx::query("SELECT id, name FROM devices")
            .fetch_all(&mut *tx)
            .await?
        {
            keys.devices.insert(r.try_get("name")?, r.try_get("id")?);
        }
        // Open memberships now, against what the inventory says.
        let mut open: HashSet<(i64, i64)> = HashSet::new();
        for r in sqlx::query("SELECT device, feed FROM memberships WHERE until IS NULL")
            .fetch_all(&mut *tx)
            .await?
        {
            open.insert((r.try_get("device")?, r.try_get("feed")?));
        }
        let mut want: HashSet<(i64, i64)> = HashSet::new();
        for d in devices {
            let Some(&dk) = keys.devices.get(&d.name) else {
                continue;
            };
            for f in &d.feeds {
                if let Some(&fk) = keys.feeds.get(f) {
                    want.insert((dk, fk));
                }
            }
        }
        let closing: Vec<_> = open.difference(&want).copied().collect();
        let opening: Vec<_> = want.difference(&open).copied().collect();
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
        let rows = sqlx::query("SELECT device, feed, since, until FROM memberships")
            .fetch_all(&self.pool)
            .await?;
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

    async fn feed_state(&self, feed: &str) -> Result<Option<(String, i64)>> {
        let r = sqlx::query("SELECT cursor, last_issued FROM feed_state WHERE feed = ?")
            .bind(feed)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match r {
            Some(r) => Some((r.try_get("cursor")?, r.try_get("last_issued")?)),
            None => None,
        })
    }

    async fn plays_since(&self, since_ms: i64) -> Result<Vec<PlayRow>> {
        let rows = sqlx::query(
            "SELECT id, play_id, feed, device, slogan, issued_at, expires_at FROM plays WHERE issued_at >= ?",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(play_row)
            .collect::<std::result::Result<_, _>>()?)
    }

    async fn play_by_id(&self, play_id: &str) -> Result<Option<PlayRow>> {
        let r = sqlx::query(
            "SELECT id, play_id, feed, device, slogan, issued_at, expires_at FROM plays WHERE play_id = ?",
        )
        .bind(play_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(r.as_ref().map(play_row).transpose()?)
    }

    #[instrument(skip_all, fields(receipts = batch.receipts.len(), rejects = batch.rejects.len()))]
    async fn commit_batch(&self, batch: &Batch) -> Result<Outcome> {
        let mut tx = self.pool.begin().await?;
        let mut stored: Vec<&ReceiptRow> = Vec::with_capacity(batch.receipts.len());
        // A batch may carry the same receipt twice (a redelivery); the first one wins.
        let mut seen = HashSet::with_capacity(batch.receipts.len());
        let unique: Vec<&ReceiptRow> = batch
            .receipts
            .iter()
            .filter(|r| seen.insert((r.device, r.play)))
            .collect();
        let by_key: HashMap<(i64, i64), &ReceiptRow> =
            unique.iter().map(|r| ((r.device, r.play), *r)).collect();
        for chunk in unique.chunks(ROWS_PER_STATEMENT) {
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
            q.push(" ON CONFLICT (device, play) DO NOTHING RETURNING device, play");
            for row in q.build().fetch_all(&mut *tx).await? {
                let k: (i64, i64) = (row.try_get("device")?, row.try_get("play")?);
                if let Some(r) = by_key.get(&k) {
                    stored.push(r);
                }
            }
        }
        // Sum in memory, then one upsert per rollup row.
        let mut roll: HashMap<(i64, i64, i64, i64, i64), i64> = HashMap::new();
        for r in &stored {
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
        for chunk in roll.chunks(ROWS_PER_STATEMENT / 2) {
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
            q.build().execute(&mut *tx).await?;
        }
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
            .execute(&mut *tx)
            .await?;
        }
        for p in &batch.presence {
            let open: Option<i64> = sqlx::query_scalar(
                "SELECT online_from FROM presence WHERE device = ? AND online_until IS NULL",
            )
            .bind(p.device)
            .fetch_optional(&mut *tx)
            .await?;
            match (p.online, open) {
                (true, None) => {
                    sqlx::query(
                        "INSERT OR IGNORE INTO presence (device, online_from) VALUES (?, ?)",
                    )
                    .bind(p.device)
                    .bind(p.at_ms)
                    .execute(&mut *tx)
                    .await?;
                }
                (false, Some(from)) => {
                    sqlx::query(
                        "UPDATE presence SET online_until = ? WHERE device = ? AND online_from = ?",
                    )
                    .bind(p.at_ms.max(from))
                    .bind(p.device)
                    .bind(from)
                    .execute(&mut *tx)
                    .await?;
                }
                _ => {}
            }
        }
        tx.commit().await?;
        Ok(Outcome {
            stored: stored.len(),
            duplicates: batch.receipts.len() - stored.len(),
        })
    }

    #[instrument(skip_all)]
    async fn audit_plays(&self, q: &PlaysQuery) -> Result<Vec<PlaysRow>> {
        let (sql, binds) = audit_sql(q, |_| "?".to_owned());
        let mut query = sqlx::query(&sql);
        for b in binds {
            query = match b {
                Bind::Int(i) => query.bind(i),
                Bind::Text(t) => query.bind(t),
            };
        }
        let rows = query.fetch_all(&self.read).await?;
        Ok(crate::audit::fold(q, raw_rows(q, rows)?))
    }

    async fn reject_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT reason, SUM(count) AS n FROM rejects GROUP BY reason ORDER BY reason",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("reason")?, r.try_get("n")?)))
            .collect()
    }
}

/// A value bound to a query parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Int(i64),
    Text(String),
}

/// The play-count query in SQL both backends speak: from the hourly rollup when the bounds
/// fall on whole hours, else from raw receipts. `ph(n)` writes the n-th placeholder
/// (`?` for SQLite, `$n` for PostgreSQL). The columns come back as the plain keys (text),
/// the hour when asked, then the count.
pub fn audit_sql(q: &PlaysQuery, ph: fn(usize) -> String) -> (String, Vec<Bind>) {
    let rollup = q.rollup_ok();
    let source = if rollup {
        "SELECT hour, device, slogan, feed, status, plays FROM rollup_hourly"
    } else {
        "SELECT r.started_at / 3600000 AS hour, r.device, p.slogan, COALESCE(p.feed, 0) AS feed, r.status, 1 AS plays, r.started_at \
         FROM receipts r JOIN plays p ON p.id = r.play"
    };
    let plain = q.plain_keys();
    let mut cols: Vec<&str> = plain
        .iter()
        .map(|k| match k {
            GroupKey::Slogan => "s.slogan",
            GroupKey::Adset => "s.adset",
            GroupKey::Device => "d.name",
            GroupKey::Class => "d.class",
            _ => "COALESCE(f.name, '')",
        })
        .collect();
    if q.needs_hour() {
        cols.push("x.hour");
    }
    let mut binds = vec![Bind::Int(q.status.code())];
    let mut wh = vec![format!("x.status = {}", ph(1))];
    let cond = |w: &mut Vec<String>, binds: &mut Vec<Bind>, expr: &str, b: Bind| {
        binds.push(b);
        w.push(format!("{expr} {}", ph(binds.len())));
    };
    let (col, scale) = if rollup {
        ("x.hour", 3_600_000)
    } else {
        ("x.started_at", 1)
    };
    if let Some(t) = q.from {
        cond(
            &mut wh,
            &mut binds,
            &format!("{col} >="),
            Bind::Int(t.timestamp_millis() / scale),
        );
    }
    if let Some(t) = q.to {
        cond(
            &mut wh,
            &mut binds,
            &format!("{col} <"),
            Bind::Int(t.timestamp_millis() / scale),
        );
    }
    for (v, expr) in [
        (&q.class, "d.class ="),
        (&q.device, "d.name ="),
        (&q.slogan, "s.slogan ="),
        (&q.feed, "f.name ="),
    ] {
        if let Some(v) = v {
            cond(&mut wh, &mut binds, expr, Bind::Text(v.clone()));
        }
    }
    let mut sql = format!(
        "SELECT {}CAST(SUM(x.plays) AS BIGINT) AS plays FROM ({source}) x \
         JOIN devices d ON d.id = x.device JOIN slogans s ON s.id = x.slogan \
         LEFT JOIN feeds f ON f.id = x.feed WHERE {}",
        cols.iter().map(|c| format!("{c}, ")).collect::<String>(),
        wh.join(" AND ")
    );
    if !cols.is_empty() {
        sql += &format!(" GROUP BY {}", cols.join(", "));
    }
    (sql, binds)
}

/// Turns the query's result rows into `RawRow`s.
pub fn raw_rows<R: Row>(
    q: &PlaysQuery,
    rows: Vec<R>,
) -> std::result::Result<Vec<RawRow>, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let n = q.plain_keys().len();
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let keys = (0..n)
            .map(|i| r.try_get::<String, _>(i))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let hour = if q.needs_hour() {
            Some(r.try_get::<i64, _>(n)?)
        } else {
            None
        };
        // SUM over no rows is NULL.
        let plays: Option<i64> = r.try_get(n + usize::from(q.needs_hour()))?;
        if let Some(plays) = plays.filter(|p| *p > 0) {
            out.push(RawRow { keys, hour, plays });
        }
    }
    Ok(out)
}
