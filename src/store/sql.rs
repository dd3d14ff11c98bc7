//! The SQL both backends speak verbatim: the play-count (audit) statements and their bound
//! values, the column lists and plain statements they share, and the decoding of the rows
//! that come back alike from either database.
//!
//! Owns: statement text that is the same in SQLite and PostgreSQL. Must not touch
//! connections, transactions or anything one dialect says differently (placeholders come
//! in as `ph(n)`); those stay in `sqlite/` and `postgres/`.

use sqlx::Row;

use super::rows::{
    FeedPlay, FeedState, PresenceKeySpan, RejectCount, Retirement, Revision, Role, TokenRow,
};
use super::StoreError;
use crate::core::audit::{GroupKey, PlaysQuery, RawRow};
use crate::core::receipt::PlayRow;

/// The columns of `adset_revisions`, in the order [`revision_row`] reads them by name.
pub const REVISION_COLS: &str = "adset, rev, format, body, origin, uploaded_by, uploaded_token, \
     uploaded_at, approved_by, approved_token, approved_at";
/// The columns of `plays` that [`play_row`] reads.
pub const PLAY_COLS: &str = "id, play_id, feed, device, slogan, issued_at, expires_at";
/// The columns of `tokens` that [`token_row`] reads.
pub const TOKEN_COLS: &str = "id, name, role, created_at, revoked_at";
/// Every token, oldest first.
pub const ALL_TOKENS: &str =
    "SELECT id, name, role, created_at, revoked_at FROM tokens ORDER BY id";
/// The columns of `adset_retired` that [`retirement_row`] reads.
pub const RETIREMENT_COLS: &str = "retired_by, retired_at, through_rev, reason";
/// Every retirement, with its ad set.
pub const ALL_RETIREMENTS: &str =
    "SELECT adset, retired_by, retired_at, through_rev, reason FROM adset_retired";
/// The keys of every feed and display, for `sync_inventory`'s answer.
pub const FEED_KEYS: &str = "SELECT id, name FROM feeds";
pub const DEVICE_KEYS: &str = "SELECT id, name FROM devices";
/// Memberships still open, and all of them.
pub const OPEN_MEMBERSHIPS: &str = "SELECT device, feed FROM memberships WHERE until IS NULL";
pub const ALL_MEMBERSHIPS: &str = "SELECT device, feed, since, until FROM memberships";

/// Binds the values `audit_sql` and `daily_audit_sql` produced, in order.
pub fn bind_all<'q, DB: sqlx::Database>(
    mut query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for b in binds {
        query = match b {
            Bind::Int(i) => query.bind(i),
            Bind::Text(t) => query.bind(t),
        };
    }
    query
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
    build_audit_sql(q, ph, None)
}

/// The play-count query over a daily rollup (`daily::table_for`): one row per answer row,
/// in order, days as local day numbers.
pub fn daily_audit_sql(
    q: &PlaysQuery,
    ph: fn(usize) -> String,
    table: &str,
    off: i64,
) -> (String, Vec<Bind>) {
    let by_device = table == "rollup_daily_device";
    let mut cols: Vec<&str> = q.plain_keys().iter().map(group_col).collect();
    if q.needs_hour() {
        cols.push("x.day");
    }
    let mut binds = vec![Bind::Int(q.status.code())];
    let mut wh = vec![
        format!("x.utc_offset = {off}"),
        format!("x.status = {}", ph(1)),
    ];
    let day = |t: chrono::DateTime<chrono::Utc>| (t.timestamp() + off * 3600).div_euclid(86_400);
    let push = |expr: &str, b: Bind, binds: &mut Vec<Bind>, wh: &mut Vec<String>| {
        binds.push(b);
        wh.push(format!("{expr} {}", ph(binds.len())));
    };
    if let Some(t) = q.from {
        push("x.day >=", Bind::Int(day(t)), &mut binds, &mut wh);
    }
    if let Some(t) = q.to {
        push("x.day <", Bind::Int(day(t)), &mut binds, &mut wh);
    }
    let joins = if by_device {
        for (v, expr) in [(&q.class, "d.class ="), (&q.device, "d.name =")] {
            if let Some(v) = v {
                push(expr, Bind::Text(v.clone()), &mut binds, &mut wh);
            }
        }
        "JOIN devices d ON d.id = x.device"
    } else {
        for (v, expr) in [(&q.slogan, "s.slogan ="), (&q.feed, "f.name =")] {
            if let Some(v) = v {
                push(expr, Bind::Text(v.clone()), &mut binds, &mut wh);
            }
        }
        "JOIN slogans s ON s.id = x.slogan LEFT JOIN feeds f ON f.id = x.feed"
    };
    let mut sql = format!(
        "SELECT {}CAST(SUM(x.plays) AS BIGINT) AS plays FROM {table} x {joins} WHERE {}",
        cols.iter().map(|c| format!("{c}, ")).collect::<String>(),
        wh.join(" AND ")
    );
    if !cols.is_empty() {
        sql += &format!(" GROUP BY {}", cols.join(", "));
        sql += &format!(
            " ORDER BY {}",
            (1..=cols.len())
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    (sql, binds)
}

/// The same query with one row per answer row, in order, for streaming: when days are
/// asked without hours and the zone's offset is fixed (`off` hours), the day is computed
/// in SQL so that nothing is left to fold in memory.
pub fn audit_sql_streaming(q: &PlaysQuery, ph: fn(usize) -> String) -> Option<(String, Vec<Bind>)> {
    let day_only = q.group_by.contains(&GroupKey::Day) && !q.group_by.contains(&GroupKey::Hour);
    let off = if day_only {
        Some(q.fixed_offset_hours()?)
    } else {
        None
    };
    let (mut sql, binds) = build_audit_sql(q, ph, off);
    let n = q.plain_keys().len() + usize::from(q.needs_hour());
    if n > 0 {
        sql += &format!(
            " ORDER BY {}",
            (1..=n)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Some((sql, binds))
}

fn build_audit_sql(
    q: &PlaysQuery,
    ph: fn(usize) -> String,
    day_offset: Option<i64>,
) -> (String, Vec<Bind>) {
    let rollup = q.rollup_ok();
    let source = if rollup {
        "SELECT hour, device, slogan, feed, status, plays FROM rollup_hourly"
    } else {
        "SELECT r.started_at / 3600000 AS hour, r.device, p.slogan, COALESCE(p.feed, 0) AS feed, r.status, 1 AS plays, r.started_at \
         FROM receipts r JOIN plays p ON p.id = r.play"
    };
    let plain = q.plain_keys();
    let mut cols: Vec<&str> = plain.iter().map(group_col).collect();
    let day_col;
    if q.needs_hour() {
        match day_offset {
            // The offset is a number from the code, never user text.
            Some(off) => {
                day_col = format!("((x.hour + {off}) / 24)");
                cols.push(&day_col);
            }
            None => cols.push("x.hour"),
        }
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

/// The column that answers a plain grouping key, in both the rollup and the raw forms.
fn group_col(k: &GroupKey) -> &'static str {
    match k {
        GroupKey::Slogan => "s.slogan",
        GroupKey::Adset => "s.adset",
        GroupKey::Device => "d.name",
        GroupKey::Class => "d.class",
        _ => "COALESCE(f.name, '')",
    }
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
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        out.extend(raw_row(q, &r)?);
    }
    Ok(out)
}

/// One result row; None for the empty sum.
pub fn raw_row<R: Row>(q: &PlaysQuery, r: &R) -> std::result::Result<Option<RawRow>, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let n = q.plain_keys().len();
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
    Ok(plays
        .filter(|p| *p > 0)
        .map(|plays| RawRow { keys, hour, plays }))
}

/// A `tokens` row selected with [`TOKEN_COLS`].
pub fn token_row<R: Row>(r: &R) -> Result<TokenRow, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let role: String = r.try_get("role")?;
    Ok(TokenRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Invalid(format!("stored role {role:?}")))?,
        created_ms: r.try_get("created_at")?,
        revoked_ms: r.try_get("revoked_at")?,
    })
}

/// An `adset_revisions` row selected with [`REVISION_COLS`].
pub fn revision_row<R: Row>(r: &R) -> Result<Revision, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Revision {
        adset: r.try_get("adset")?,
        rev: r.try_get("rev")?,
        format: r.try_get("format")?,
        body: r.try_get("body")?,
        origin: r.try_get("origin")?,
        uploaded_by: r.try_get("uploaded_by")?,
        uploaded_token: r.try_get("uploaded_token")?,
        uploaded_ms: r.try_get("uploaded_at")?,
        approved_by: r.try_get("approved_by")?,
        approved_token: r.try_get("approved_token")?,
        approved_ms: r.try_get("approved_at")?,
    })
}

/// An `adset_retired` row selected with [`RETIREMENT_COLS`].
pub fn retirement_row<R: Row>(r: &R) -> Result<Retirement, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Retirement {
        by: r.try_get("retired_by")?,
        at_ms: r.try_get("retired_at")?,
        through_rev: r.try_get("through_rev")?,
        reason: r.try_get("reason")?,
    })
}

/// A `plays` row selected with [`PLAY_COLS`].
pub fn play_row<R: Row>(r: &R) -> Result<PlayRow, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
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

/// A `(play key, feed name, issued_at, feed key)` row of `ApiStore::feed_plays_between`.
pub fn feed_play_row<R: Row>(r: &R) -> Result<FeedPlay, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(FeedPlay {
        play: r.try_get(0)?,
        feed: r.try_get(1)?,
        issued_ms: r.try_get(2)?,
        feed_key: r.try_get(3)?,
    })
}

/// A `(device key, online_from, online_until)` row of
/// `ApiStore::presence_keys_between`.
pub fn presence_key_span_row<R: Row>(r: &R) -> Result<PresenceKeySpan, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(PresenceKeySpan {
        device: r.try_get(0)?,
        since_ms: r.try_get(1)?,
        until_ms: r.try_get(2)?,
    })
}

/// A `(reason, n)` row of the rejections summed by reason.
pub fn reject_count_row<R: Row>(r: &R) -> Result<RejectCount, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(RejectCount {
        reason: r.try_get("reason")?,
        count: r.try_get("n")?,
    })
}

/// A `feed_state` row (`cursor`, `last_issued`).
pub fn feed_state_row<R: Row>(r: &R) -> Result<FeedState, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(FeedState {
        cursor_json: r.try_get("cursor")?,
        last_played_ms: r.try_get("last_issued")?,
    })
}
