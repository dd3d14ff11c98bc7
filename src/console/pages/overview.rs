//! The overview (`/`): displays online by class, plays and receipts in the last hour,
//! rejections by reason, broker and database health, each feed with its current play. The
//! figures are one fragment (`/overview/live`) that `live.js` fetches again every few
//! seconds; without JavaScript the page is the same, as of its loading. Signed out, `/` is
//! the sign-in page.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::super::i18n::key;
use super::super::{html, local_time, Ctx, Failure};
use super::signin;
use crate::api::{self, ApiState};
use crate::core::audit::{PlaysParams, PlaysQuery};
use crate::core::wire::Status;
use crate::store::{RejectCount, Store};

/// Seconds between refreshes of the live figures.
pub const REFRESH_S: u32 = 5;

pub struct ClassLine {
    pub class: String,
    pub online: i64,
    pub displays: usize,
}

pub struct FeedLine {
    pub id: String,
    pub members: usize,
    /// (adset, rev, slogan, text, issued) of the newest play; None before any.
    pub current: Option<(String, i64, String, String, String)>,
}

/// The live figures.
pub struct Live {
    pub classes: Vec<ClassLine>,
    pub plays_hour: i64,
    /// Receipts of the last hour by status, through the play-count report.
    pub receipts_hour: Vec<(&'static str, i64)>,
    pub rejects: Vec<RejectCount>,
    pub broker: bool,
    pub database: bool,
    pub feeds: Vec<FeedLine>,
    pub as_of: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
pub struct OverviewPage<'a> {
    pub c: &'a Ctx,
    pub live: Live,
    pub refresh_s: u32,
}

#[derive(Template)]
#[template(path = "console/overview_live.html")]
pub struct LiveFragment<'a> {
    pub c: &'a Ctx,
    pub live: Live,
}

/// The last hour's receipts of each status, counted by the same query as
/// `GET /api/v1/audit/plays?from=..&to=..&status=..` answers.
async fn receipts_last_hour(st: &ApiState) -> Result<Vec<(&'static str, i64)>, api::ApiError> {
    let tz = st.shared.current().timezone;
    let now = st.clock.now();
    let from = (now - chrono::TimeDelta::hours(1)).to_rfc3339();
    let mut out = Vec::new();
    for s in Status::ALL {
        let q = PlaysQuery::parse(
            &PlaysParams {
                from: Some(from.clone()),
                to: Some(now.to_rfc3339()),
                status: Some(s.as_str().into()),
                ..Default::default()
            },
            tz,
        )?;
        let (store, q2) = (st.store.clone(), q.clone());
        let rows = st
            .heavy
            .run_async(async move { store.audit_plays(&q2).await })
            .await??;
        out.push((s.as_str(), crate::reports::answer(&q, &rows).total));
    }
    Ok(out)
}

fn classes(st: &ApiState) -> Vec<ClassLine> {
    let c = st.shared.current();
    let online = st
        .shared
        .metrics()
        .online_by_class
        .lock()
        .map(|m| m.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    c.classes
        .keys()
        .map(|class| ClassLine {
            class: class.clone(),
            online: online.get(class).copied().unwrap_or(0),
            displays: c.devices.iter().filter(|d| &*d.class == class).count(),
        })
        .collect()
}

fn feeds(st: &ApiState) -> Vec<FeedLine> {
    let c = st.shared.current();
    let last = st.shared.last_plays();
    c.feeds
        .iter()
        .map(|f| FeedLine {
            id: f.id.to_string(),
            members: c.members(f).count(),
            current: last.get(f.id.as_str()).map(|p| {
                let issued = local_time(p.issued_at.timestamp_millis(), c.timezone);
                (
                    p.adset.clone(),
                    p.rev,
                    p.slogan.clone(),
                    p.text.clone(),
                    issued,
                )
            }),
        })
        .collect()
}

async fn live_figures(st: &ApiState) -> Result<Live, api::ApiError> {
    let now = st.clock.now().timestamp_millis();
    let health = api::health(st).await;
    let mut rejects = st.store.reject_counts().await?;
    rejects.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    Ok(Live {
        classes: classes(st),
        plays_hour: st.store.plays_issued_between(now - 3_600_000, now).await?,
        receipts_hour: receipts_last_hour(st).await?,
        rejects,
        broker: health.broker,
        database: health.database,
        feeds: feeds(st),
        as_of: local_time(now, st.shared.current().timezone),
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Entry {
    token: Option<String>,
}

/// Whether the browser says the address came from no site (typed, pasted, or opened by
/// another program): only then does `/?token=` sign in.
fn from_outside(h: &axum::http::HeaderMap) -> bool {
    h.get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_none_or(|s| s == "none")
}

pub async fn page(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    headers: axum::http::HeaderMap,
    Query(e): Query<Entry>,
) -> Result<Response, Failure> {
    if let Some(token) = e.token.filter(|t| !t.is_empty()) {
        if from_outside(&headers) {
            return Ok(signin::open_session(&st, &c, &token).await);
        }
        return Ok(signin::sign_in_page(
            &c,
            StatusCode::OK,
            key("signin.link_refused"),
        ));
    }
    if c.viewer.is_none() {
        return Ok(signin::sign_in_page(&c, StatusCode::OK, ""));
    }
    // Inspectors and companies have no overview: their first page is their own work.
    if !c.may(api::READERS) {
        if c.may(api::inspect::PLAN_READERS) {
            return Ok(Redirect::to("/inspect").into_response());
        }
        if c.may(api::inspect::FINDING_READERS) {
            return Ok(Redirect::to("/findings").into_response());
        }
    }
    c.require(api::READERS)?;
    let live = live_figures(&st).await.map_err(|e| c.api_failure(e))?;
    Ok(html(&OverviewPage {
        c: &c,
        live,
        refresh_s: REFRESH_S,
    }))
}

/// `GET /overview/live`: the figures alone, for `live.js`.
pub async fn live(State(st): State<Arc<ApiState>>, c: Ctx) -> Result<Response, Failure> {
    c.require(api::READERS)?;
    let live = live_figures(&st).await.map_err(|e| c.api_failure(e))?;
    Ok(html(&LiveFragment { c: &c, live }).into_response())
}
