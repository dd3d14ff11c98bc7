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
use chrono::{DateTime, Utc};

use super::rollups::{Plan, HOURS};
use crate::core::audit::{fold, stream_row, GroupKey, PlaysQuery, PlaysRow, RawRow};
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

/// Binds the values `audit_sql` produced, in order.
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

/// How the statement's time column reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeCol {
    /// No time column.
    None,
    /// UTC hours since the epoch: folded in memory (`audit::fold`).
    Hour,
    /// Local days since the epoch, one row per answer row (`audit::stream_row`).
    Day,
    /// Local days, each row followed by its 24 local hours (`Plan::DailyDevice` with hours).
    DayHours,
}

/// The play-count query in SQL both backends speak, over the source `plan` names.
/// `ph(n)` writes the n-th placeholder (`?` for SQLite, `$n` for PostgreSQL); `raw` is the
/// backend's receipts for `Plan::Raw`: a FROM clause that binds `r` (its `device`, `play`,
/// `started_at`, `status`), `d` (the display's `devices` row) and `p` (the play's `plays`
/// row). `ordered`: rows in key order, for streaming. `pinned`: the inner join that keeps
/// the order written (SQLite's CROSS JOIN; left to itself its planner loops over slogans
/// outermost and reads the period's receipts once per slogan). The columns come back as
/// the plain keys (text), the time column (`TimeCol`), then the count(s).
pub fn audit_sql(
    q: &PlaysQuery,
    plan: Plan,
    ph: fn(usize) -> String,
    raw: &str,
    ordered: bool,
    pinned: &'static str,
) -> (String, Vec<Bind>, TimeCol) {
    let mut a = AuditSql {
        q,
        pinned,
        ph,
        binds: vec![Bind::Int(q.status.code())],
        wh: vec![],
    };
    let status = a.ph(1);
    // In streaming order, days without hours are computed in SQL (fixed offsets only).
    let stream_day = ordered && q.needs_hour() && !q.group_by.contains(&GroupKey::Hour);
    let (from, time, joins, counts) = a.source(plan, raw, stream_day, status);
    let class_col = match plan {
        Plan::Hour(_) | Plan::DailySlogan(..) => "x.class",
        _ => "d.class",
    };
    for (v, expr) in [
        (&q.class, format!("{class_col} =")),
        (&q.device, "d.name =".to_owned()),
    ] {
        if let Some(v) = v {
            a.cond(&expr, Bind::Text(v.clone()));
        }
    }
    let time_col = match plan {
        Plan::DailyDevice { hours: true, .. } => TimeCol::DayHours,
        Plan::DailySlogan(..) | Plan::DailyDevice { .. } if q.needs_hour() => TimeCol::Day,
        _ if stream_day && q.fixed_offset_hours().is_some() => TimeCol::Day,
        _ if q.needs_hour() => TimeCol::Hour,
        _ => TimeCol::None,
    };
    let mut cols: Vec<String> = q
        .plain_keys()
        .iter()
        .map(|k| group_col(*k, class_col).to_owned())
        .collect();
    if time_col != TimeCol::None {
        cols.push(time);
    }
    let mut sql = format!(
        "SELECT {}{counts} AS plays FROM {from}{joins} WHERE {}",
        cols.iter().map(|c| format!("{c}, ")).collect::<String>(),
        a.wh.join(" AND ")
    );
    if !cols.is_empty() {
        sql += &format!(" GROUP BY {}", cols.join(", "));
        if ordered {
            sql += &format!(
                " ORDER BY {}",
                (1..=cols.len())
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    (sql, a.binds, time_col)
}

/// The WHERE clause of [`audit_sql`] as it is built.
struct AuditSql<'q> {
    q: &'q PlaysQuery,
    pinned: &'static str,
    ph: fn(usize) -> String,
    binds: Vec<Bind>,
    wh: Vec<String>,
}

impl AuditSql<'_> {
    fn ph(&self, n: usize) -> String {
        (self.ph)(n)
    }
    fn cond(&mut self, expr: &str, b: Bind) {
        self.binds.push(b);
        let p = self.ph(self.binds.len());
        self.wh.push(format!("{expr} {p}"));
    }
    /// The plan's FROM clause, time column, joins and count expression; its own conditions
    /// go into the WHERE clause.
    fn source(
        &mut self,
        plan: Plan,
        raw: &str,
        stream_day: bool,
        status: String,
    ) -> (String, String, String, String) {
        match plan {
            Plan::Raw => {
                self.wh.push(format!("r.status = {status}"));
                self.bounds("r.started_at", |t| t.timestamp_millis());
                let time = match self.q.fixed_offset_hours().filter(|_| stream_day) {
                    Some(off) => format!("((r.started_at / 3600000 + {off}) / 24)"),
                    None => "(r.started_at / 3600000)".to_owned(),
                };
                (
                    raw.to_owned(),
                    time,
                    self.slogan_joins("p.slogan", "p.feed"),
                    "COUNT(*)".to_owned(),
                )
            }
            Plan::Hour(cut) => {
                self.wh
                    .push(format!("x.cut = {} AND x.status = {status}", cut as i64));
                self.bounds("x.hour", |t| t.timestamp_millis() / 3_600_000);
                let time = match self.q.fixed_offset_hours().filter(|_| stream_day) {
                    Some(off) => format!("((x.hour + {off}) / 24)"),
                    None => "x.hour".to_owned(),
                };
                let joins = self.slogan_joins("x.slogan", "x.feed");
                (
                    "rollup_hour x".to_owned(),
                    time,
                    joins,
                    "CAST(SUM(x.plays) AS BIGINT)".to_owned(),
                )
            }
            Plan::DailySlogan(off, cut) => {
                self.wh.push(format!(
                    "x.utc_offset = {off} AND x.cut = {} AND x.status = {status}",
                    cut as i64
                ));
                self.bounds("x.day", |t| (t.timestamp() + off * 3600).div_euclid(86_400));
                let joins = self.slogan_joins("x.slogan", "x.feed");
                (
                    "rollup_daily_slogan x".to_owned(),
                    "x.day".to_owned(),
                    joins,
                    "CAST(SUM(x.plays) AS BIGINT)".to_owned(),
                )
            }
            Plan::DailyDevice { off, hours } => self.daily_device_source(off, hours, status),
        }
    }
    /// [`Self::source`] for `Plan::DailyDevice`.
    fn daily_device_source(
        &mut self,
        off: i64,
        hours: bool,
        status: String,
    ) -> (String, String, String, String) {
        self.wh
            .push(format!("x.utc_offset = {off} AND x.status = {status}"));
        let day = |t: DateTime<Utc>| (t.timestamp() + off * 3600).div_euclid(86_400);
        let counts = if hours {
            // Whole days around the bounds; the hours outside them are left out in
            // `day_hours`.
            if let Some(t) = self.q.from {
                self.cond("x.day >=", Bind::Int(day(t)));
            }
            if let Some(t) = self.q.to {
                self.cond("x.day <=", Bind::Int(day(t - chrono::Duration::hours(1))));
            }
            HOURS
                .iter()
                .map(|h| format!("CAST(SUM(x.{h}) AS BIGINT)"))
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            self.bounds("x.day", day);
            "CAST(SUM(x.plays) AS BIGINT)".to_owned()
        };
        (
            "rollup_daily_device x JOIN devices d ON d.id = x.device".to_owned(),
            "x.day".to_owned(),
            String::new(),
            counts,
        )
    }
    /// The half-open period on `col`, each bound as `unit` reads it.
    fn bounds(&mut self, col: &str, unit: impl Fn(DateTime<Utc>) -> i64) {
        if let Some(t) = self.q.from {
            self.cond(&format!("{col} >="), Bind::Int(unit(t)));
        }
        if let Some(t) = self.q.to {
            self.cond(&format!("{col} <"), Bind::Int(unit(t)));
        }
    }
    /// The joins to slogans and feeds when the answer names theirs, and their filters as
    /// key lists (a filter on a joined name let SQLite's planner move that table outermost).
    fn slogan_joins(&mut self, slogan: &str, feed: &str) -> String {
        let by = |k| self.q.group_by.contains(&k);
        let mut j = String::new();
        if by(GroupKey::Slogan) || by(GroupKey::Adset) {
            j += &format!(" {} slogans s ON s.id = {slogan}", self.pinned);
        }
        if by(GroupKey::Feed) {
            j += &format!(" LEFT JOIN feeds f ON f.id = {feed}");
        }
        if let Some(v) = self.q.slogan.clone() {
            self.cond(
                &format!("{slogan} IN (SELECT id FROM slogans WHERE slogan ="),
                Bind::Text(v),
            );
            self.close_last();
        }
        if let Some(v) = self.q.feed.clone() {
            self.cond(
                &format!("{feed} IN (SELECT id FROM feeds WHERE name ="),
                Bind::Text(v),
            );
            self.close_last();
        }
        j
    }
    fn close_last(&mut self) {
        if let Some(w) = self.wh.last_mut() {
            w.push(')');
        }
    }
}

/// The column that answers a plain grouping key.
fn group_col(k: GroupKey, class_col: &'static str) -> &'static str {
    match k {
        GroupKey::Slogan => "s.slogan",
        GroupKey::Adset => "s.adset",
        GroupKey::Device => "d.name",
        GroupKey::Class => class_col,
        _ => "COALESCE(f.name, '')",
    }
}

/// The rows of a `TimeCol::DayHours` statement as hourly rows (UTC hours), the hours
/// outside the query's period left out.
pub fn day_hour_rows<R: Row>(
    q: &PlaysQuery,
    off: i64,
    rows: Vec<R>,
) -> std::result::Result<Vec<RawRow>, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let n = q.plain_keys().len();
    let lo = q.from.map(|t| t.timestamp_millis().div_euclid(3_600_000));
    let hi = q.to.map(|t| t.timestamp_millis().div_euclid(3_600_000));
    let mut out = Vec::new();
    for r in rows {
        let keys = (0..n)
            .map(|i| r.try_get::<String, _>(i))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let day: i64 = r.try_get(n)?;
        for i in 0..24 {
            let plays: Option<i64> = r.try_get(n + 1 + i)?;
            let hour = day * 24 - off + i as i64;
            let inside = lo.is_none_or(|l| hour >= l) && hi.is_none_or(|h| hour < h);
            if let Some(plays) = plays.filter(|p| *p != 0 && inside) {
                out.push(RawRow {
                    keys: keys.clone(),
                    hour: Some(hour),
                    plays,
                });
            }
        }
    }
    Ok(out)
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

/// The answer of an [`audit_sql`] statement's rows, in the order of `audit::fold`.
pub fn answer<R: Row>(
    q: &PlaysQuery,
    plan: Plan,
    time: TimeCol,
    rows: Vec<R>,
) -> std::result::Result<Vec<PlaysRow>, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(match (time, plan) {
        (TimeCol::DayHours, Plan::DailyDevice { off, .. }) => fold(q, day_hour_rows(q, off, rows)?),
        (TimeCol::Day, _) => {
            let mut out: Vec<PlaysRow> = raw_rows(q, rows)?
                .into_iter()
                .map(|r| stream_row(q, r))
                .collect();
            out.sort_by(|a, b| a.values.cmp(&b.values));
            out
        }
        _ => fold(q, raw_rows(q, rows)?),
    })
}

/// Whether [`audit_sql`]'s ordered rows are the answer's rows one for one (else the
/// backend answers in memory and sends the rows).
pub fn streams_as_is(time: TimeCol) -> bool {
    time != TimeCol::DayHours
}
