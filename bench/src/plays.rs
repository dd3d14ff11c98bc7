//! The audit scenario's play-count questions: every grouping and filter of
//! `GET /api/v1/audit/plays` on the synthetic year, each through `Store::audit_plays` beside
//! one naive GROUP BY over raw receipts, answers compared row for row. Both backends build
//! the naive query here and differ only in how they spell it (`Dialect`).
//!
//! Owns: the list of questions, the naive query and its decoding, their timing and the
//! printed table. Must not touch: the store's SQL or any rollup table (the naive side reads
//! only receipts, plays, slogans, devices and feeds, so that it stays an independent
//! reading of the contract while the rollups change).

use std::time::Instant;

use anyhow::Context;
use chrono::Duration;
use chrono_tz::Tz;
use civicast::core::audit::{fold, PlaysParams, PlaysQuery, PlaysRow, RawRow};
use civicast::store::Store;
// The values and their binding only; the naive SQL itself is this file's own.
pub use civicast::store::sql::{bind_all, Bind};
use futures_util::future::BoxFuture;
use sqlx::Row;

use crate::fixture::device_name;
use crate::report::{met, pct};
use crate::synth::LoadOptions;

#[derive(Debug, Clone, Default)]
pub struct QueryReport {
    pub name: String,
    pub rows: usize,
    pub total: i64,
    pub rollup_p50_ms: f64,
    pub rollup_p95_ms: f64,
    pub naive_p50_ms: f64,
    pub naive_p95_ms: f64,
    /// None when the naive query did not run (`--naive-runs 0`).
    pub identical: Option<bool>,
    /// The naive answer's size, to tell how a differing answer differs.
    pub naive_rows: usize,
    pub naive_total: i64,
}

/// One question: its name in the table and its parameters as a URL would give them.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub params: PlaysParams,
}

/// The classes `load` gives the displays (display d has class d % 3).
const CLASSES: [&str; 3] = ["bus_led", "taxi_top", "stop_lcd"];

/// A filter of a question: the parameter's name and its value.
type Filter = Option<(&'static str, String)>;

/// The questions, on the history ending at `o.end` in `tz`: each plain key, day and hour
/// alone and combined, each filter, a status other than played, and bounds off whole hours
/// (what no rollup answers). Names of displays, classes, slogans and feeds are those `load`
/// writes, kept within `o`'s counts.
pub fn cases(o: &LoadOptions, tz: Tz) -> Vec<Case> {
    let end = o.end.with_timezone(&tz);
    let display = device_name(1);
    let class = CLASSES[1].to_owned();
    let slogan = format!("slogan-{:02}", o.slogans.clamp(1, 3));
    let feed = format!("feed-{:02}", o.feeds.clamp(1, 2));
    let asked: [(&str, i64, Filter); 17] = [
        ("slogan,day", 30, None),
        ("adset", 30, None),
        ("feed,day", 30, None),
        ("class,hour", 30, None),
        ("class", 365, None),
        ("day", 365, None),
        ("device", 7, None),
        ("device,day", 30, None),
        ("device,hour", 1, None),
        ("hour", 1, None),
        ("hour", 7, Some(("device", display))),
        ("slogan", 30, Some(("class", class))),
        ("class,day", 30, Some(("slogan", slogan))),
        ("device", 7, Some(("feed", feed))),
        ("slogan", 30, Some(("status", "skipped".into()))),
        ("device,slogan", 1, None),
        ("class,slogan", 30, None),
    ];
    let date = |days: i64| (end - Duration::days(days)).format("%Y-%m-%d").to_string();
    let mut out: Vec<Case> = asked
        .into_iter()
        .map(|(group, days, filter)| days_case(group, days, filter, date(days), date(0)))
        .collect();
    let last_day = end - Duration::days(1);
    let at = |h: i64, m: i64| (last_day + Duration::minutes(h * 60 + m)).to_rfc3339();
    out.push(Case {
        name: "by slogan, 10:30-14:45 of the last day".into(),
        params: PlaysParams {
            group_by: Some("slogan".into()),
            from: Some(at(10, 30)),
            to: Some(at(14, 45)),
            ..Default::default()
        },
    });
    out
}

/// A question over the last `days` whole local days, grouped by `group`, filtered by one
/// parameter or none; named as it is asked.
fn days_case(group: &str, days: i64, filter: Filter, from: String, to: String) -> Case {
    let mut p = PlaysParams {
        group_by: Some(group.into()),
        from: Some(from),
        to: Some(to),
        ..Default::default()
    };
    let Some((field, value)) = filter else {
        return Case {
            name: format!("by {group}, {days} d"),
            params: p,
        };
    };
    let name = format!("by {group}, {days} d, {field}={value}");
    let slot = match field {
        "class" => &mut p.class,
        "device" => &mut p.device,
        "slogan" => &mut p.slogan,
        "feed" => &mut p.feed,
        _ => &mut p.status,
    };
    *slot = Some(value);
    Case { name, params: p }
}

/// How a backend spells the naive query: its relation of every receipt, the join that keeps
/// the scan of it first, its placeholders.
pub struct Dialect {
    pub receipts: &'static str,
    pub join: &'static str,
    pub ph: fn(usize) -> String,
}

fn sqlite_ph(_: usize) -> String {
    "?".to_owned()
}

fn pg_ph(n: usize) -> String {
    format!("${n}")
}

/// SQLite: CROSS JOIN fixes the join order to one scan of `receipts` (left to itself, after
/// ANALYZE, the planner may loop over plays and search receipts, keyed by device first,
/// once per play: 203 s a run at 10 M instead of a scan).
pub const SQLITE: Dialect = Dialect {
    receipts: "receipts",
    join: "CROSS JOIN",
    ph: sqlite_ph,
};

/// PostgreSQL: raw and packed receipts alike through `receipts_all` (its packed branch
/// unnests every packed row: the view cannot skip rows by time).
pub const POSTGRES: Dialect = Dialect {
    receipts: "receipts_all",
    join: "JOIN",
    ph: pg_ph,
};

/// The UTC hour of a receipt. `/` truncates toward zero on both backends and `%` keeps the
/// dividend's sign, so the remainder is made positive first: the floor that `fold` reads
/// (`from_timestamp(hour * 3600)`), before 1970 too. Both operands are integers (bigint on
/// both branches of `receipts_all`), so neither backend divides in fractions.
const HOUR: &str = "(r.started_at - (r.started_at % 3600000 + 3600000) % 3600000) / 3600000";

/// The naive query for any `PlaysQuery`: one GROUP BY over raw receipts joined to their
/// play, slogan, display and feed, with the query's status, half-open bounds on
/// `started_at` and filters; grouped by the plain keys in order, then the UTC hour when a
/// day or an hour is asked (`fold` makes local days and hours of it). A play without a feed
/// (direct to a display) has the feed ''.
pub fn naive_sql(q: &PlaysQuery, d: &Dialect) -> (String, Vec<Bind>) {
    let mut cols: Vec<&str> = q.plain_keys().iter().map(|k| key_col(*k)).collect();
    if q.needs_hour() {
        cols.push(HOUR);
    }
    let mut binds = vec![Bind::Int(q.status.code())];
    let mut wh = vec![format!("r.status = {}", (d.ph)(1))];
    let mut cond = |expr: &str, b: Bind| {
        binds.push(b);
        wh.push(format!("{expr} {}", (d.ph)(binds.len())));
    };
    if let Some(t) = q.from {
        cond("r.started_at >=", Bind::Int(t.timestamp_millis()));
    }
    if let Some(t) = q.to {
        cond("r.started_at <", Bind::Int(t.timestamp_millis()));
    }
    for (v, expr) in [
        (&q.class, "d.class ="),
        (&q.device, "d.name ="),
        (&q.slogan, "s.slogan ="),
        (&q.feed, "f.name ="),
    ] {
        if let Some(v) = v {
            cond(expr, Bind::Text(v.clone()));
        }
    }
    let j = d.join;
    let mut sql = format!(
        "SELECT {}COUNT(*) AS plays FROM {} r {j} plays p ON p.id = r.play \
         {j} slogans s ON s.id = p.slogan {j} devices d ON d.id = r.device \
         LEFT JOIN feeds f ON f.id = p.feed WHERE {}",
        cols.iter().map(|c| format!("{c}, ")).collect::<String>(),
        d.receipts,
        wh.join(" AND ")
    );
    if !cols.is_empty() {
        let n: Vec<String> = (1..=cols.len()).map(|i| i.to_string()).collect();
        sql += &format!(" GROUP BY {}", n.join(", "));
    }
    (sql, binds)
}

/// The column of a plain key, as the contract names them.
fn key_col(k: civicast::core::audit::GroupKey) -> &'static str {
    use civicast::core::audit::GroupKey;
    match k {
        GroupKey::Slogan => "s.slogan",
        GroupKey::Adset => "s.adset",
        GroupKey::Device => "d.name",
        GroupKey::Class => "d.class",
        // Day and hour are never plain keys.
        _ => "COALESCE(f.name, '')",
    }
}

/// The naive query's rows folded into the answer (`fold`, the same formatting step the
/// store ends with); a count of 0 (no GROUP BY over no receipts) is no row, as in the store.
pub fn naive_answer<R: Row>(q: &PlaysQuery, rows: Vec<R>) -> anyhow::Result<Vec<PlaysRow>>
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let n = q.plain_keys().len();
    let mut raw = Vec::with_capacity(rows.len());
    for r in rows {
        let keys = (0..n)
            .map(|i| r.try_get::<String, _>(i))
            .collect::<Result<Vec<_>, _>>()?;
        let hour = match q.needs_hour() {
            true => Some(r.try_get::<i64, _>(n)?),
            false => None,
        };
        let plays: i64 = r.try_get(n + usize::from(q.needs_hour()))?;
        if plays > 0 {
            raw.push(RawRow { keys, hour, plays });
        }
    }
    Ok(fold(q, raw))
}

/// Every question of [`cases`], `runs` times through `Store::audit_plays` and `naive_runs`
/// times through `naive` (none: not compared), for the history `o` in `tz`.
pub(crate) async fn play_count_queries<'a, S: Store>(
    store: &'a S,
    o: &LoadOptions,
    tz: Tz,
    runs: usize,
    naive_runs: usize,
    naive: impl Fn(PlaysQuery) -> BoxFuture<'a, anyhow::Result<Vec<PlaysRow>>>,
) -> anyhow::Result<Vec<QueryReport>> {
    let mut out = Vec::new();
    for c in cases(o, tz) {
        let q = PlaysQuery::parse(&c.params, tz).with_context(|| c.name.clone())?;
        eprintln!(
            "audit: {}: {runs} runs through the store, {naive_runs} naive...",
            c.name
        );
        let mut fast = Vec::with_capacity(runs);
        let mut answer = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            answer = store.audit_plays(&q).await?;
            fast.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mut slow = Vec::with_capacity(naive_runs);
        let mut plain = Vec::new();
        for _ in 0..naive_runs {
            let t = Instant::now();
            plain = naive(q.clone()).await.with_context(|| c.name.clone())?;
            slow.push(t.elapsed().as_secs_f64() * 1e3);
        }
        out.push(QueryReport {
            rows: answer.len(),
            total: answer.iter().map(|r| r.plays).sum(),
            rollup_p50_ms: pct(fast.clone(), 0.5),
            rollup_p95_ms: pct(fast, 0.95),
            naive_p50_ms: pct(slow.clone(), 0.5),
            naive_p95_ms: pct(slow, 0.95),
            identical: (naive_runs > 0).then(|| answer == plain),
            naive_rows: plain.len(),
            naive_total: plain.iter().map(|r| r.plays).sum(),
            name: c.name,
        });
    }
    Ok(out)
}

/// The `identical` column: yes, NO, or not checked (`--naive-runs 0`).
pub(crate) fn identical_text(i: Option<bool>) -> &'static str {
    match i {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "not checked",
    }
}

/// The table of play-count questions, then one line per question against issue 12's
/// targets.
pub fn print_queries(queries: &[QueryReport]) {
    println!("| query | rows | plays | store p50 ms | store p95 ms | naive p50 ms | naive p95 ms | naive/store (p50) | identical |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for q in queries {
        let naive = |ms: f64| match q.identical {
            Some(_) => format!("{ms:.1}"),
            None => "-".into(),
        };
        let speed = match q.identical {
            Some(_) => format!("{:.0}x", q.naive_p50_ms / q.rollup_p50_ms.max(1e-9)),
            None => "-".into(),
        };
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {} | {} | {speed} | {} |",
            q.name,
            q.rows,
            q.total,
            q.rollup_p50_ms,
            q.rollup_p95_ms,
            naive(q.naive_p50_ms),
            naive(q.naive_p95_ms),
            identical_text(q.identical)
        );
    }
    for q in queries {
        let speed = q.naive_p50_ms / q.rollup_p50_ms.max(1e-9);
        let (faster, same) = match q.identical {
            None => ("not checked".to_owned(), "not checked".to_owned()),
            Some(i) => (
                format!("{} ({speed:.0}x)", met(speed >= 100.0)),
                match i {
                    true => met(true).to_owned(),
                    false => format!(
                        "{} (naive: {} rows, {} plays)",
                        met(false),
                        q.naive_rows,
                        q.naive_total
                    ),
                },
            ),
        };
        println!(
            "target {}: p50 <= 50 ms: {} ({:.2} ms); >= 100x naive: {faster}; same answer: {same}",
            q.name,
            met(q.rollup_p50_ms <= 50.0),
            q.rollup_p50_ms,
        );
    }
}
