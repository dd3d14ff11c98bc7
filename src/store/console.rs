//! What the web console needs of the database beyond the API's reads: its sessions (by a
//! hash of the session id, tied to the token that opened them) and one display's presence
//! and receipts, newest first. Written once for both backends on [`Db`]: the statements are
//! the same but for placeholders (`$n` here, `?n` on SQLite) and PostgreSQL reading receipts
//! through `receipts_all` (raw and packed alike).
//!
//! Owns: the SQL of these reads and writes. Must not touch HTTP, cookies or decisions about
//! who may do what (the console decides; the token's role comes back as stored).

use sqlx::Row;

use super::sql::token_row;
use super::{Db, PresenceSpan, Result, TokenRow};
use crate::core::wire::Status;

/// A session as read back: its token (live, not revoked) and when it ends.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub token: TokenRow,
    pub expires_ms: i64,
}

/// One receipt of a display with the play it answers.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReceipt {
    pub play_id: String,
    /// None for a direct play (`cmd` topic).
    pub feed: Option<String>,
    pub adset: String,
    pub rev: i64,
    pub slogan: String,
    pub started_ms: i64,
    pub duration_ms: i64,
    pub status: Status,
}

/// `sql` with SQLite's placeholders (`?n` for `$n`); the statements here hold no other `$`.
fn lite(sql: &str) -> String {
    sql.replace('$', "?")
}

const SESSION_BY_HASH: &str =
    "SELECT t.id, t.name, t.role, t.created_at, t.revoked_at, s.expires_at
     FROM console_sessions s JOIN tokens t ON t.id = s.token
     WHERE s.hash = $1 AND s.expires_at > $2 AND t.revoked_at IS NULL";

const DEVICE_PRESENCE: &str = "SELECT p.online_from, p.online_until FROM presence p
     JOIN devices d ON d.id = p.device WHERE d.name = $1
     ORDER BY p.online_from DESC LIMIT $2";

/// The receipts source is substituted per backend.
const DEVICE_RECEIPTS: &str = "SELECT p.play_id, f.name AS feed, s.adset, s.rev, s.slogan,
       r.started_at, r.duration_ms, r.status
     FROM devices d JOIN {receipts} r ON r.device = d.id
     JOIN plays p ON p.id = r.play
     JOIN slogans s ON s.id = p.slogan
     LEFT JOIN feeds f ON f.id = p.feed
     WHERE d.name = $1 ORDER BY r.started_at DESC LIMIT $2";

fn session_row<R: Row>(r: &R) -> Result<SessionRow>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(SessionRow {
        token: token_row(r)?,
        expires_ms: r.try_get("expires_at")?,
    })
}

fn receipt_row<R: Row>(r: &R, status: i64) -> Result<Option<DeviceReceipt>>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    // A status this build does not know is skipped, as the other readers do.
    let Some(status) = Status::from_code(status) else {
        return Ok(None);
    };
    Ok(Some(DeviceReceipt {
        play_id: r.try_get("play_id")?,
        feed: r.try_get("feed")?,
        adset: r.try_get("adset")?,
        rev: r.try_get("rev")?,
        slogan: r.try_get("slogan")?,
        started_ms: r.try_get("started_at")?,
        duration_ms: r.try_get("duration_ms")?,
        status,
    }))
}

fn span(device: &str, from: i64, until: Option<i64>) -> PresenceSpan {
    PresenceSpan {
        device: device.to_owned(),
        since_ms: from,
        until_ms: until,
    }
}

impl Db {
    /// Stores a session: `hash` of its id, the token that opened it, when it ends.
    pub async fn create_session(
        &self,
        hash: &str,
        token: i64,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<()> {
        let sql = "INSERT INTO console_sessions (hash, token, created_at, expires_at) VALUES ($1, $2, $3, $4)";
        match self {
            Db::Sqlite(s) => {
                sqlx::query(&lite(sql))
                    .bind(hash)
                    .bind(token)
                    .bind(now_ms)
                    .bind(expires_ms)
                    .execute(s.pool())
                    .await?;
            }
            Db::Postgres(s) => {
                sqlx::query(sql)
                    .bind(hash)
                    .bind(token)
                    .bind(now_ms)
                    .bind(expires_ms)
                    .execute(s.pool())
                    .await?;
            }
        }
        Ok(())
    }

    /// The session with this hash while it lasts and its token is live; None otherwise, so
    /// a revoked token's sessions end with it.
    pub async fn session(&self, hash: &str, now_ms: i64) -> Result<Option<SessionRow>> {
        match self {
            Db::Sqlite(s) => sqlx::query(&lite(SESSION_BY_HASH))
                .bind(hash)
                .bind(now_ms)
                .fetch_optional(s.reader())
                .await?
                .as_ref()
                .map(session_row)
                .transpose(),
            Db::Postgres(s) => sqlx::query(SESSION_BY_HASH)
                .bind(hash)
                .bind(now_ms)
                .fetch_optional(s.pool())
                .await?
                .as_ref()
                .map(session_row)
                .transpose(),
        }
    }

    /// Ends a session; false when there was none with this hash.
    pub async fn delete_session(&self, hash: &str) -> Result<bool> {
        let sql = "DELETE FROM console_sessions WHERE hash = $1";
        let n = match self {
            Db::Sqlite(s) => sqlx::query(&lite(sql))
                .bind(hash)
                .execute(s.pool())
                .await?
                .rows_affected(),
            Db::Postgres(s) => sqlx::query(sql)
                .bind(hash)
                .execute(s.pool())
                .await?
                .rows_affected(),
        };
        Ok(n > 0)
    }

    /// Drops sessions that have ended or whose token was revoked; how many.
    pub async fn prune_sessions(&self, now_ms: i64) -> Result<u64> {
        let sql = "DELETE FROM console_sessions WHERE expires_at <= $1
             OR token IN (SELECT id FROM tokens WHERE revoked_at IS NOT NULL)";
        Ok(match self {
            Db::Sqlite(s) => sqlx::query(&lite(sql))
                .bind(now_ms)
                .execute(s.pool())
                .await?
                .rows_affected(),
            Db::Postgres(s) => sqlx::query(sql)
                .bind(now_ms)
                .execute(s.pool())
                .await?
                .rows_affected(),
        })
    }

    /// The newest `limit` presence intervals of the display named `device`, newest first.
    pub async fn device_presence(&self, device: &str, limit: i64) -> Result<Vec<PresenceSpan>> {
        let rows: Vec<(i64, Option<i64>)> = match self {
            Db::Sqlite(s) => {
                sqlx::query_as(&lite(DEVICE_PRESENCE))
                    .bind(device)
                    .bind(limit)
                    .fetch_all(s.reader())
                    .await?
            }
            Db::Postgres(s) => {
                sqlx::query_as(DEVICE_PRESENCE)
                    .bind(device)
                    .bind(limit)
                    .fetch_all(s.pool())
                    .await?
            }
        };
        Ok(rows.into_iter().map(|(f, u)| span(device, f, u)).collect())
    }

    /// The newest `limit` receipts of the display named `device`, newest first, each with
    /// its play's id, feed and slogan.
    pub async fn device_receipts(&self, device: &str, limit: i64) -> Result<Vec<DeviceReceipt>> {
        let mut out = Vec::new();
        match self {
            Db::Sqlite(s) => {
                let sql = lite(&DEVICE_RECEIPTS.replace("{receipts}", "receipts"));
                let rows = sqlx::query(&sql)
                    .bind(device)
                    .bind(limit)
                    .fetch_all(s.reader())
                    .await?;
                for r in &rows {
                    out.extend(receipt_row(r, r.try_get("status")?)?);
                }
            }
            Db::Postgres(s) => {
                let sql = DEVICE_RECEIPTS.replace("{receipts}", "receipts_all");
                let rows = sqlx::query(&sql)
                    .bind(device)
                    .bind(limit)
                    .fetch_all(s.pool())
                    .await?;
                for r in &rows {
                    let code: i16 = r.try_get("status")?;
                    out.extend(receipt_row(r, i64::from(code))?);
                }
            }
        }
        Ok(out)
    }

    /// Plays issued in [from, to) on feeds and direct alike.
    pub async fn plays_issued_between(&self, from_ms: i64, to_ms: i64) -> Result<i64> {
        let sql = "SELECT COUNT(*) FROM plays WHERE issued_at >= $1 AND issued_at < $2";
        let n: i64 = match self {
            Db::Sqlite(s) => {
                sqlx::query_scalar(&lite(sql))
                    .bind(from_ms)
                    .bind(to_ms)
                    .fetch_one(s.reader())
                    .await?
            }
            Db::Postgres(s) => {
                sqlx::query_scalar(sql)
                    .bind(from_ms)
                    .bind(to_ms)
                    .fetch_one(s.pool())
                    .await?
            }
        };
        Ok(n)
    }
}
