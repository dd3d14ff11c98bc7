//! Play counts for auditors (`/audit/plays`): the query of `GET /api/v1/audit/plays` as a
//! form, its answer as a table with the total. The query is read, checked and answered by
//! the API's own functions (`PlaysQuery::parse`, `reports::check_plays_names`, the store's
//! `audit_plays`, `reports::answer`), so the table, the chart beside it and the API never
//! differ; `?format=csv|xlsx` is `api::download::plays_download`, streamed.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;

use super::audit::{query, wanted, Format};

use super::super::{html, Ctx, Failure};
use crate::api::{self, ApiError, ApiState};
use crate::core::audit::{PlaysParams, PlaysQuery};
use crate::store::Store;

#[derive(Template)]
#[template(path = "console/plays.html")]
pub struct PlaysPage<'a> {
    pub c: &'a Ctx,
    pub p: PlaysParams,
    pub columns: Vec<&'static str>,
    pub rows: Vec<(Vec<String>, i64)>,
    pub total: i64,
    pub error: String,
    pub classes: Vec<String>,
    pub chart: Chart,
    pub csv: String,
    pub xlsx: String,
    /// (grouping, query) of the page grouped each usual way over the same period.
    pub groupings: Vec<(&'static str, String)>,
}

/// Bars a chart draws at most; the table beside it has every row.
pub const CHART_BARS: usize = 60;

/// One bar: its label (the row's values), its count, and its geometry in the SVG.
pub struct Bar {
    pub label: String,
    pub plays: i64,
    pub y: usize,
    pub width: usize,
    pub text_y: usize,
}

/// A horizontal bar chart drawn on the server: readable without JavaScript, and each bar
/// carries `data-label` and `data-plays` for whoever checks it against the API.
pub struct Chart {
    pub bars: Vec<Bar>,
    pub height: usize,
    /// Whether the answer had more rows than the chart draws.
    pub cut: bool,
}

/// Pixels of the chart (the template places bars after a 220-pixel label column): the
/// longest bar, one bar's row.
pub const BAR_W: usize = 420;
const ROW_H: usize = 22;

fn chart(rows: &[(Vec<String>, i64)]) -> Chart {
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let bars = rows
        .iter()
        .take(CHART_BARS)
        .enumerate()
        .map(|(i, (values, n))| Bar {
            label: values.join(" · "),
            plays: *n,
            y: i * ROW_H + 2,
            width: ((*n).max(0) as u128 * BAR_W as u128 / max as u128) as usize,
            text_y: i * ROW_H + 16,
        })
        .collect::<Vec<_>>();
    Chart {
        height: bars.len() * ROW_H + 4,
        bars,
        cut: rows.len() > CHART_BARS,
    }
}

fn text(o: &Option<String>) -> String {
    o.clone().unwrap_or_default()
}

async fn answer(
    st: &ApiState,
    p: &PlaysParams,
) -> Result<(PlaysQuery, Vec<crate::core::audit::PlaysRow>), ApiError> {
    let c = st.shared.current();
    let q = PlaysQuery::parse(p, c.timezone)?;
    crate::reports::check_plays_names(&q, &c)?;
    let store = st.store.clone();
    let q2 = q.clone();
    let rows = st
        .heavy
        .run_async(async move { store.audit_plays(&q2).await })
        .await??;
    Ok((q, rows))
}

pub async fn page(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Query(p): Query<PlaysParams>,
    Query(f): Query<Format>,
) -> Result<Response, Failure> {
    c.require(api::AUDITOR)?;
    // The page groups by class unless told otherwise; its downloads say so too.
    let p = PlaysParams {
        group_by: Some(text(&p.group_by))
            .filter(|g| !g.is_empty())
            .or(Some("class".into())),
        ..p
    };
    if let Some(d) = wanted(&c, &f)? {
        return api::download::plays_download(&st, &p, d)
            .await
            .map_err(|e| c.api_failure(e));
    }
    let pairs = [
        ("from", p.from.as_deref()),
        ("to", p.to.as_deref()),
        ("group_by", p.group_by.as_deref()),
        ("class", p.class.as_deref()),
        ("device", p.device.as_deref()),
        ("slogan", p.slogan.as_deref()),
        ("feed", p.feed.as_deref()),
        ("status", p.status.as_deref()),
    ];
    let (csv, xlsx) = (query(&pairs, Some("csv")), query(&pairs, Some("xlsx")));
    let groupings = ["class", "slogan", "feed", "day", "hour"]
        .into_iter()
        .map(|g| {
            let q = [
                ("group_by", Some(g)),
                ("from", p.from.as_deref()),
                ("to", p.to.as_deref()),
            ];
            (g, query(&q, None))
        })
        .collect();
    let mut page = PlaysPage {
        c: &c,
        p: p.clone(),
        columns: Vec::new(),
        rows: Vec::new(),
        total: 0,
        error: String::new(),
        classes: st.shared.current().classes.keys().cloned().collect(),
        chart: chart(&[]),
        csv,
        xlsx,
        groupings,
    };
    match answer(&st, &page.p).await {
        Ok((q, rows)) => {
            let a = crate::reports::answer(&q, &rows);
            page.columns = a.group_by.clone();
            page.total = a.total;
            page.rows = rows.into_iter().map(|r| (r.values, r.plays)).collect();
            page.chart = chart(&page.rows);
        }
        Err(e) if e.status.is_client_error() && e.status.as_u16() != 429 => page.error = e.error,
        Err(e) => return Err(c.api_failure(e)),
    }
    Ok(html(&page))
}
