//! The auditors' reports besides play counts: compliance per display with a day-by-day heat
//! map (`/audit/compliance`), the week's inspection sample, printable on A4
//! (`/audit/sample`), and planned against played (`/audit/reconcile`). Each page takes the
//! query of its API route (`/api/v1/audit/...`), answers it with the same report function
//! (`reports::compliance_report`, `sample_report`, `reconcile_report`) and downloads it with
//! the same `api::download` functions (`?format=csv|xlsx`), so a page, its downloads and the
//! API never differ.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Duration as ChronoDuration, NaiveDate, TimeZone, Utc};
use serde::Deserialize;

use super::super::{html, Ctx, Failure};
use crate::api::{self, download, ApiError, ApiState};
use crate::core::audit::reconcile;
use crate::reports::{
    self, ComplianceAnswer, ComplianceParams, ComplianceRow, Download, ReconcileAnswer,
    ReconcileParams, SampleAnswer, SampleParams,
};

/// Days a heat map shows at most; the table covers the whole period.
pub const HEAT_DAYS: usize = 31;
/// Displays a heat map shows at most (the first by id, as the table orders them).
pub const HEAT_DISPLAYS: usize = 200;

/// Displays per page of the compliance table: a city's thousands of rows would make a page
/// of megabytes; the totals are over all of them, and the downloads hold every row.
pub const TABLE_ROWS: usize = 500;

/// Which page of a long table (`?page=`, from 1).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Paging {
    pub page: Option<usize>,
}

/// The queries of the pages before and after page `at` of `pages` (empty at either end),
/// each `pairs` with its `page`.
fn neighbours(pairs: &[(&str, Option<&str>)], at: usize, pages: usize) -> (String, String) {
    let to_page = |n: usize| {
        let n = n.to_string();
        let mut q = pairs.to_vec();
        q.push(("page", Some(n.as_str())));
        query(&q, None)
    };
    let prev = if at > 1 {
        to_page(at - 1)
    } else {
        String::new()
    };
    let next = if at < pages {
        to_page(at + 1)
    } else {
        String::new()
    };
    (prev, next)
}

/// The rows of page `asked` (from 1, clamped to the last) of `n` rows: (first, end, page,
/// pages).
pub fn page_of(n: usize, asked: Option<usize>, per: usize) -> (usize, usize, usize, usize) {
    let pages = n.div_ceil(per).max(1);
    let page = asked.unwrap_or(1).clamp(1, pages);
    let first = (page - 1) * per;
    (first, (first + per).min(n), page, pages)
}

/// `?format=` of a page: a download instead of the page.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Format {
    pub format: Option<String>,
}

/// The download a page's query asks for, read as the API reads `format` (never `Accept`:
/// a browser's Accept header names HTML).
pub fn wanted(c: &Ctx, f: &Format) -> Result<Option<Download>, Failure> {
    download::wanted(&HeaderMap::new(), f.format.as_deref()).map_err(|e| c.api_failure(e))
}

/// The query string of `pairs` that are set, with `format` when given: a page's own address
/// again, as a download link or a day of the heat map.
pub fn query(pairs: &[(&str, Option<&str>)], format: Option<&str>) -> String {
    let mut v: Vec<(&str, &str)> = pairs
        .iter()
        .filter_map(|(k, v)| v.filter(|s| !s.is_empty()).map(|s| (*k, s)))
        .collect();
    if let Some(f) = format {
        v.push(("format", f));
    }
    serde_urlencoded::to_string(&v).unwrap_or_default()
}

/// A report's bound (RFC 3339, as its answer states it) as the deployment's wall clock.
fn wall(t: &str, tz: chrono_tz::Tz) -> String {
    DateTime::parse_from_rfc3339(t).map_or_else(
        |_| t.to_owned(),
        |t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// A number of seconds as the table shows it: to a tenth.
fn secs(s: f64) -> String {
    format!("{s:.1}")
}

/// One display's row of the compliance table, as text.
pub struct ComplianceLine {
    pub device: String,
    pub class: String,
    pub online_s: String,
    pub plays: u64,
    pub mean_s: String,
    pub gap_s: String,
    pub interval_s: String,
    pub met: bool,
}

fn compliance_line(r: &ComplianceRow) -> ComplianceLine {
    ComplianceLine {
        device: r.device.clone(),
        class: r.class.clone(),
        online_s: secs(r.online_seconds),
        plays: r.plays,
        mean_s: r.mean_interval_s.map(secs).unwrap_or_default(),
        gap_s: secs(r.longest_gap_s),
        interval_s: secs(r.interval_s),
        met: r.met,
    }
}

/// One cell of the heat map: the API's compliance answer for that display on that day.
pub struct HeatCell {
    /// `met`, `missed` (online and not met) or `offline` (no time online that day).
    pub state: &'static str,
    pub plays: u64,
    pub title: String,
}

pub struct HeatRow {
    pub device: String,
    pub cells: Vec<HeatCell>,
}

#[derive(Template)]
#[template(path = "console/compliance.html")]
pub struct CompliancePage<'a> {
    pub c: &'a Ctx,
    pub p: ComplianceParams,
    pub classes: Vec<String>,
    pub error: String,
    pub from: String,
    pub to: String,
    pub factors: String,
    pub rows: Vec<ComplianceLine>,
    pub met: usize,
    pub plays: u64,
    /// (label, query of that day's page) of each day the heat map shows.
    pub days: Vec<(String, String)>,
    pub heat: Vec<HeatRow>,
    /// Whether the period had more days, or the answer more displays, than the map shows.
    pub days_cut: bool,
    pub displays_cut: bool,
    pub csv: String,
    pub xlsx: String,
    /// All displays of the answer; the table shows `rows`, page `page` of `pages`, from row
    /// `first` (from 1); `prev`/`next` are those pages' queries, empty at either end.
    pub total: usize,
    pub first: usize,
    pub page: usize,
    pub pages: usize,
    pub prev: String,
    pub next: String,
}

/// The local days from `from` to `to` (RFC 3339, as the answer states them), each as its
/// date and its bounds in RFC 3339; at most `max`, and whether there were more.
fn days_of(
    from: &str,
    to: &str,
    tz: chrono_tz::Tz,
    max: usize,
) -> (Vec<(NaiveDate, String, String)>, bool) {
    let (Ok(f), Ok(t)) = (
        DateTime::parse_from_rfc3339(from),
        DateTime::parse_from_rfc3339(to),
    ) else {
        return (Vec::new(), false);
    };
    let (f, t) = (f.with_timezone(&tz), t.with_timezone(&tz));
    let mut day = f.date_naive();
    let mut out = Vec::new();
    while out.len() < max {
        let start = tz
            .from_local_datetime(&day.and_time(chrono::NaiveTime::MIN))
            .earliest()
            .map_or(f, |s| s.max(f));
        if start >= t {
            return (out, false);
        }
        let next = day + ChronoDuration::days(1);
        let end = tz
            .from_local_datetime(&next.and_time(chrono::NaiveTime::MIN))
            .earliest()
            .map_or(t, |e| e.min(t));
        out.push((day, start.to_rfc3339(), end.to_rfc3339()));
        day = next;
    }
    let more = tz
        .from_local_datetime(&day.and_time(chrono::NaiveTime::MIN))
        .earliest()
        .is_some_and(|s| s < t);
    (out, more)
}

/// One day of the heat map: its date, its bounds (RFC 3339) and its displays' rows.
struct Day {
    day: NaiveDate,
    from: String,
    to: String,
    rows: Vec<ComplianceRow>,
}

/// The report for `p` and, for each day the heat map shows, the rows of its first
/// displays for that day alone: every cell is what `/api/v1/audit/compliance?from=<day>&
/// to=<next day>` answers, folded from the one read of the period the whole report makes.
async fn compliance_answers(
    st: &Arc<ApiState>,
    p: ComplianceParams,
) -> Result<(ComplianceAnswer, Vec<Day>, bool), ApiError> {
    let (c, now, st2) = (st.shared.current(), st.clock.now(), st.clone());
    st.heavy
        .run_async(async move {
            let tz = c.timezone;
            let mut dates = Vec::new();
            let mut cut = false;
            let parts = |from: DateTime<Utc>, to: DateTime<Utc>| {
                let (days, more) = days_of(&from.to_rfc3339(), &to.to_rfc3339(), tz, HEAT_DAYS);
                cut = more;
                let utc = |s: &str| DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc));
                days.into_iter()
                    .filter_map(|(day, f, t)| {
                        let bounds = (utc(&f).ok()?, utc(&t).ok()?);
                        dates.push(Day {
                            day,
                            from: f,
                            to: t,
                            rows: Vec::new(),
                        });
                        Some(bounds)
                    })
                    .collect()
            };
            let (whole, each) = reports::compliance_report_parts(
                &st2.store,
                &c,
                &p,
                now,
                st2.factors,
                parts,
                HEAT_DISPLAYS,
            )
            .await?;
            for (d, rows) in dates.iter_mut().zip(each) {
                d.rows = rows;
            }
            Ok::<_, ApiError>((whole, dates, cut))
        })
        .await?
}

fn heat_rows(whole: &ComplianceAnswer, each: &[Day]) -> Vec<HeatRow> {
    let by_device: Vec<HashMap<&str, &ComplianceRow>> = each
        .iter()
        .map(|d| d.rows.iter().map(|x| (x.device.as_str(), x)).collect())
        .collect();
    whole
        .rows
        .iter()
        .take(HEAT_DISPLAYS)
        .map(|r| HeatRow {
            device: r.device.clone(),
            cells: each
                .iter()
                .zip(&by_device)
                .map(|(Day { day, .. }, rows)| {
                    let (state, plays) = match rows.get(r.device.as_str()) {
                        Some(x) if x.online_seconds <= 0.0 => ("offline", x.plays),
                        Some(x) if x.met => ("met", x.plays),
                        Some(x) => ("missed", x.plays),
                        None => ("offline", 0),
                    };
                    HeatCell {
                        state,
                        plays,
                        title: format!("{} {day}", r.device),
                    }
                })
                .collect(),
        })
        .collect()
}

/// `GET /audit/compliance?from=&to=&class=&device=[&format=csv|xlsx]`.
pub async fn compliance(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Query(p): Query<ComplianceParams>,
    Query(f): Query<Format>,
    Query(paging): Query<Paging>,
) -> Result<Response, Failure> {
    c.require(api::AUDITOR)?;
    if let Some(d) = wanted(&c, &f)? {
        return download::compliance_download(&st, p, d)
            .await
            .map_err(|e| c.api_failure(e));
    }
    let pairs = [
        ("from", p.from.as_deref()),
        ("to", p.to.as_deref()),
        ("class", p.class.as_deref()),
        ("device", p.device.as_deref()),
    ];
    let mut page = CompliancePage {
        c: &c,
        csv: query(&pairs, Some("csv")),
        xlsx: query(&pairs, Some("xlsx")),
        p: p.clone(),
        classes: st.shared.current().classes.keys().cloned().collect(),
        error: String::new(),
        from: String::new(),
        to: String::new(),
        factors: String::new(),
        rows: Vec::new(),
        met: 0,
        plays: 0,
        days: Vec::new(),
        heat: Vec::new(),
        days_cut: false,
        displays_cut: false,
        total: 0,
        first: 0,
        page: 1,
        pages: 1,
        prev: String::new(),
        next: String::new(),
    };
    match compliance_answers(&st, p.clone()).await {
        Ok((whole, each, cut)) => {
            page.heat = heat_rows(&whole, &each);
            page.days = each
                .iter()
                .map(|Day { day, from, to, .. }| {
                    let q = [
                        ("from", Some(from.as_str())),
                        ("to", Some(to.as_str())),
                        ("class", p.class.as_deref()),
                        ("device", p.device.as_deref()),
                    ];
                    (day.format("%m-%d").to_string(), query(&q, None))
                })
                .collect();
            page.days_cut = cut;
            page.displays_cut = whole.rows.len() > HEAT_DISPLAYS;
            page.met = whole.rows.iter().filter(|r| r.met).count();
            page.plays = whole.rows.iter().map(|r| r.plays).sum();
            let (first, end, at, pages) = page_of(whole.rows.len(), paging.page, TABLE_ROWS);
            page.rows = whole.rows[first..end].iter().map(compliance_line).collect();
            (page.total, page.first, page.page, page.pages) =
                (whole.rows.len(), first + 1, at, pages);
            (page.prev, page.next) = neighbours(&pairs, at, pages);
            page.factors = format!("{} / {}", whole.mean_factor, whole.gap_factor);
            let tz = st.shared.current().timezone;
            page.from = wall(&whole.from, tz);
            page.to = wall(&whole.to, tz);
        }
        Err(e) if e.status.is_client_error() && e.status.as_u16() != 429 => {
            page.error = e.error;
        }
        Err(e) => return Err(c.api_failure(e)),
    }
    Ok(html(&page))
}

/// One sampled display with its evidence, as text.
pub struct SampleLine {
    pub class: String,
    pub device: String,
    pub plays: u64,
    pub gap_s: String,
    pub last_at: String,
    pub last_status: String,
    pub met: bool,
}

#[derive(Template)]
#[template(path = "console/sample.html")]
pub struct SamplePage<'a> {
    pub c: &'a Ctx,
    pub p: SampleParams,
    pub error: String,
    pub a: Option<SampleAnswer>,
    /// The week's bounds on the wall clock.
    pub period: String,
    pub rows: Vec<SampleLine>,
    pub csv: String,
    pub xlsx: String,
}

/// `GET /audit/sample?week=&seed=&per_class=[&format=csv|xlsx]`.
pub async fn sample(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Query(p): Query<SampleParams>,
    Query(f): Query<Format>,
) -> Result<Response, Failure> {
    c.require(api::AUDITOR)?;
    if let Some(d) = wanted(&c, &f)? {
        return download::sample_download(&st, p, d)
            .await
            .map_err(|e| c.api_failure(e));
    }
    let (cat, now, st2, p2) = (st.shared.current(), st.clock.now(), st.clone(), p.clone());
    let tz = cat.timezone;
    let answer = st
        .heavy
        .run_async(
            async move { reports::sample_report(&st2.store, &cat, &p2, now, st2.factors).await },
        )
        .await
        .and_then(|r| r.map_err(ApiError::from));
    let mut page = SamplePage {
        c: &c,
        p: p.clone(),
        error: String::new(),
        a: None,
        period: String::new(),
        rows: Vec::new(),
        csv: String::new(),
        xlsx: String::new(),
    };
    match answer {
        Ok(a) => {
            // The downloads name the week and seed the page drew, so they hold the same rows.
            let per_class = a.per_class.to_string();
            let pairs = [
                ("week", Some(a.week.as_str())),
                ("seed", Some(a.seed.as_str())),
                ("per_class", Some(per_class.as_str())),
            ];
            page.csv = query(&pairs, Some("csv"));
            page.xlsx = query(&pairs, Some("xlsx"));
            page.rows = a
                .rows
                .iter()
                .map(|r| SampleLine {
                    class: r.class.clone(),
                    device: r.device.clone(),
                    plays: r.plays,
                    gap_s: secs(r.longest_gap_s),
                    last_at: r
                        .last_receipt_at
                        .as_deref()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_default(),
                    last_status: r.last_receipt_status.map(|s| c.word(s)).unwrap_or_default(),
                    met: r.met,
                })
                .collect();
            page.period = format!("{} – {}", wall(&a.from, tz), wall(&a.to, tz));
            page.a = Some(a);
        }
        Err(e) if e.status.is_client_error() && e.status.as_u16() != 429 => {
            page.error = e.error;
        }
        Err(e) => return Err(c.api_failure(e)),
    }
    Ok(html(&page))
}

#[derive(Template)]
#[template(path = "console/reconcile.html")]
pub struct ReconcilePage<'a> {
    pub c: &'a Ctx,
    pub p: ReconcileParams,
    pub feeds: Vec<String>,
    pub error: String,
    pub from: String,
    pub to: String,
    pub rows: Vec<reconcile::Row>,
    pub total: reconcile::Row,
    pub csv: String,
    pub xlsx: String,
}

/// The sum of every row's counts: the totals line.
fn reconcile_total(rows: &[reconcile::Row]) -> reconcile::Row {
    let mut t = reconcile::Row::default();
    for r in rows {
        t.plays += r.plays;
        t.targeted += r.targeted;
        t.online += r.online;
        t.played += r.played;
        t.shortfall += r.shortfall;
        t.offline += r.offline;
        t.expired += r.expired;
        t.skipped += r.skipped;
        t.failed += r.failed;
        t.no_receipt += r.no_receipt;
    }
    t
}

async fn reconcile_answer(
    st: &Arc<ApiState>,
    p: ReconcileParams,
) -> Result<ReconcileAnswer, ApiError> {
    let (c, now, st2) = (st.shared.current(), st.clock.now(), st.clone());
    st.heavy
        .run_async(async move { reports::reconcile_report(&st2.store, &c, &p, now).await })
        .await?
        .map_err(ApiError::from)
}

/// `GET /audit/reconcile?from=&to=&feed=[&format=csv|xlsx]`.
pub async fn reconcile(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Query(p): Query<ReconcileParams>,
    Query(f): Query<Format>,
) -> Result<Response, Failure> {
    c.require(api::AUDITOR)?;
    if let Some(d) = wanted(&c, &f)? {
        return download::reconcile_download(&st, p, d)
            .await
            .map_err(|e| c.api_failure(e));
    }
    let pairs = [
        ("from", p.from.as_deref()),
        ("to", p.to.as_deref()),
        ("feed", p.feed.as_deref()),
    ];
    let mut page = ReconcilePage {
        c: &c,
        csv: query(&pairs, Some("csv")),
        xlsx: query(&pairs, Some("xlsx")),
        p: p.clone(),
        feeds: st
            .shared
            .current()
            .feeds
            .iter()
            .map(|f| f.id.to_string())
            .collect(),
        error: String::new(),
        from: String::new(),
        to: String::new(),
        rows: Vec::new(),
        total: reconcile_total(&[]),
    };
    match reconcile_answer(&st, p).await {
        Ok(a) => {
            page.total = reconcile_total(&a.rows);
            let tz = st.shared.current().timezone;
            page.rows = a.rows;
            page.from = wall(&a.from, tz);
            page.to = wall(&a.to, tz);
        }
        Err(e) if e.status.is_client_error() && e.status.as_u16() != 429 => {
            page.error = e.error;
        }
        Err(e) => return Err(c.api_failure(e)),
    }
    Ok(html(&page))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_table_is_paged_and_a_page_past_the_end_is_the_last() {
        assert_eq!(page_of(3149, None, 500), (0, 500, 1, 7));
        assert_eq!(page_of(3149, Some(7), 500), (3000, 3149, 7, 7));
        assert_eq!(page_of(3149, Some(99), 500), (3000, 3149, 7, 7));
        assert_eq!(page_of(3149, Some(0), 500), (0, 500, 1, 7));
        assert_eq!(page_of(0, None, 500), (0, 0, 1, 1));
    }

    #[test]
    fn days_of_a_period_in_local_time_are_capped_and_say_so() {
        let tz = chrono_tz::Asia::Shanghai;
        let (d, more) = days_of(
            "2026-12-01T00:00:00+08:00",
            "2026-12-03T12:00:00+08:00",
            tz,
            31,
        );
        let names: Vec<String> = d.iter().map(|x| x.0.to_string()).collect();
        assert_eq!(names, ["2026-12-01", "2026-12-02", "2026-12-03"]);
        assert_eq!(
            d[2].2, "2026-12-03T12:00:00+08:00",
            "the last day ends with the period"
        );
        assert!(!more);
        let (d, more) = days_of(
            "2026-01-01T00:00:00+08:00",
            "2026-03-01T00:00:00+08:00",
            tz,
            31,
        );
        assert_eq!(d.len(), 31);
        assert!(more);
    }

    #[test]
    fn a_query_keeps_only_what_is_set() {
        let q = query(
            &[
                ("from", Some("2026-12-01")),
                ("class", Some("")),
                ("to", None),
            ],
            Some("csv"),
        );
        assert_eq!(q, "from=2026-12-01&format=csv");
    }
}
