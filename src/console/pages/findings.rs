//! Findings (`/findings`): a company's inbox of its own units' findings (open, overdue,
//! rectified, closed), each deadline in the deployment's time zone; one finding with its
//! events and photos (`/findings/{id}`), where the company answers with a note and a photo
//! (`POST /findings/{id}/rectify`, multipart). Inspectors and auditors see every company's.
//! Reading and rectifying are the API's own (`api::inspect::findings::{findings_answer,
//! finding_answer, rectify_finding}`, `api::inspect::{store_photo, photo_for}`): another
//! company's finding is "not found" here exactly as it is there.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::Value;

use super::super::{html, Ctx, Failure};
use super::inspect::{next_part, wall, FindingLine};
use crate::api::inspect::findings::{self as f, ChangeBody};
use crate::api::inspect::{self as insp};
use crate::api::{ApiError, ApiState, Detail};

/// The inbox's tabs, as the API's `state` and `overdue` read them.
pub const TABS: [&str; 4] = ["open", "overdue", "rectified", "closed"];

#[derive(Template)]
#[template(path = "console/findings.html")]
pub struct FindingsPage<'a> {
    pub c: &'a Ctx,
    pub tab: String,
    pub tabs: Vec<(&'static str, usize)>,
    pub lines: Vec<FindingLine>,
    pub company: String,
    pub tz: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ListQuery {
    pub tab: Option<String>,
}

/// Whether `l` belongs on `tab` (overdue: still open past its deadline).
fn on_tab(l: &FindingLine, tab: &str) -> bool {
    match tab {
        "overdue" => l.overdue,
        "open" => l.state == "open" && !l.overdue,
        s => l.state == s,
    }
}

/// `GET /findings?tab=`: the findings the reader may see, as `GET /api/v1/findings`.
pub async fn list(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Query(q): Query<ListQuery>,
) -> Result<Response, Failure> {
    let who = c.require(insp::FINDING_READERS)?.token.clone();
    let answer = f::findings_answer(&st, &who, f::ListParams::default())
        .await
        .map_err(|e| c.api_failure(e))?;
    let all: Vec<FindingLine> = answer["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(FindingLine::of)
        .collect();
    let tab = q
        .tab
        .filter(|t| TABS.contains(&t.as_str()))
        .unwrap_or_else(|| "open".into());
    let tabs = TABS
        .iter()
        .map(|t| (*t, all.iter().filter(|l| on_tab(l, t)).count()))
        .collect();
    let lines = all.into_iter().filter(|l| on_tab(l, &tab)).collect();
    Ok(html(&FindingsPage {
        c: &c,
        tab,
        tabs,
        lines,
        company: answer["company"].as_str().unwrap_or("").to_owned(),
        tz: st.shared.current().timezone.to_string(),
    }))
}

/// One event of a finding.
pub struct EventLine {
    pub kind: String,
    pub at: String,
    pub by: String,
    pub note: String,
    pub photos: Vec<String>,
    pub deadline: String,
}

#[derive(Template)]
#[template(path = "console/finding.html")]
pub struct FindingPage<'a> {
    pub c: &'a Ctx,
    pub f: FindingLine,
    pub display: String,
    pub inspection: String,
    pub events: Vec<EventLine>,
    pub tz: String,
    /// The forms the reader may use: rectify (its company), recheck and confirm (an inspector).
    pub may_rectify: bool,
    pub may_inspect: bool,
    pub error: String,
    pub details: Vec<Detail>,
    pub here: String,
}

fn events_of(v: &Value) -> Vec<EventLine> {
    let s = |x: &Value| x.as_str().unwrap_or("").to_owned();
    v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| EventLine {
            kind: s(&e["kind"]),
            at: wall(&e["at"]),
            by: s(&e["by"]),
            note: s(&e["note"]),
            photos: e["photos"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect(),
            deadline: wall(&e["deadline"]),
        })
        .collect()
}

async fn finding_page<'a>(st: &ApiState, c: &'a Ctx, id: &str) -> Result<FindingPage<'a>, Failure> {
    let who = c.require(insp::FINDING_READERS)?.token.clone();
    let v = f::finding_answer(st, &who, id)
        .await
        .map_err(|e| c.api_failure(e))?;
    let line = FindingLine::of(&v);
    let s = |x: &Value| x.as_str().unwrap_or("").to_owned();
    Ok(FindingPage {
        c,
        may_rectify: c.may(insp::COMPANY) && line.state == "open",
        may_inspect: c.may(insp::INSPECTOR),
        f: line,
        display: s(&v["display"]),
        inspection: s(&v["inspection"]),
        events: events_of(&v),
        tz: st.shared.current().timezone.to_string(),
        error: String::new(),
        details: Vec::new(),
        here: format!("/findings/{id}"),
    })
}

/// `GET /findings/{id}`: 404 for a finding the reader's company does not have.
pub async fn show(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    Ok(html(&finding_page(&st, &c, &id).await?))
}

#[derive(Default)]
struct Fix {
    csrf: String,
    note: String,
    photo: Option<Vec<u8>>,
}

async fn read_fix(c: &Ctx, mut m: Multipart) -> Result<Fix, Failure> {
    let mut fix = Fix::default();
    while let Some(p) = next_part(c, &mut m).await? {
        match p.name.as_str() {
            "csrf" => fix.csrf = p.text(c)?,
            "note" => fix.note = p.text(c)?,
            "photo" if p.is_file() => fix.photo = Some(p.bytes.to_vec()),
            _ => {}
        }
    }
    Ok(fix)
}

/// `POST /findings/{id}/rectify` (multipart: `csrf`, `note`, `photo`): the company's fix, as
/// `POST /api/v1/findings/{id}/rectify` takes it, the photo stored first as the API's.
pub async fn rectify(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
    m: Multipart,
) -> Result<Response, Failure> {
    if !c.same_origin || !c.may(insp::COMPANY) {
        c.require_post(insp::COMPANY, c.csrf())?;
    }
    let fix = read_fix(&c, m).await?;
    let who = c.require_post(insp::COMPANY, &fix.csrf)?.token.clone();
    let done = async {
        let mut photos = Vec::new();
        if let Some(bytes) = &fix.photo {
            let p = insp::store_photo(&st, bytes).await?;
            photos.push(p["sha256"].as_str().unwrap_or("").to_owned());
        }
        let body = ChangeBody {
            note: Some(fix.note.trim().to_owned()),
            photos,
            ..Default::default()
        };
        f::rectify_finding(&st, &who, &id, body).await
    }
    .await;
    match done {
        Ok(_) => Ok(Redirect::to(&format!("/findings/{id}")).into_response()),
        Err(e) => refused(&st, &c, &id, e).await,
    }
}

/// A change the API refused, shown on the finding's page with what it said, under the
/// API's status; a finding the reader may not see stays the API's 404.
pub(super) async fn refused(
    st: &ApiState,
    c: &Ctx,
    id: &str,
    e: ApiError,
) -> Result<Response, Failure> {
    if !e.status.is_client_error() || e.status == StatusCode::NOT_FOUND {
        return Err(c.api_failure(e));
    }
    let mut page = finding_page(st, c, id).await?;
    page.error = e.error;
    page.details = e.details;
    let mut r = html(&page);
    *r.status_mut() = e.status;
    Ok(r)
}

/// `GET /findings/photos/{sha256}`: a photo of a finding, as the API's photo route shows it
/// (a company only its own findings').
pub async fn photo(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(sha): Path<String>,
) -> Result<Response, Failure> {
    let who = c.require(insp::FINDING_READERS)?.token.clone();
    let (media_type, bytes) = insp::photo_for(&st, &who, &sha)
        .await
        .map_err(|e: ApiError| c.api_failure(e))?;
    Ok((
        [
            (header::CONTENT_TYPE, media_type),
            (header::CACHE_CONTROL, "private, max-age=3600".to_owned()),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(state: &str, overdue: bool) -> FindingLine {
        FindingLine {
            id: "f".into(),
            unit: "u".into(),
            company: "c".into(),
            item: "ads".into(),
            state: state.into(),
            deadline: String::new(),
            overdue,
            note: String::new(),
        }
    }

    #[test]
    fn an_overdue_finding_is_on_the_overdue_tab_only() {
        let late = line("open", true);
        assert!(on_tab(&late, "overdue"));
        assert!(!on_tab(&late, "open"));
        let open = line("open", false);
        assert!(on_tab(&open, "open"));
        assert!(!on_tab(&open, "overdue"));
        assert!(on_tab(&line("rectified", false), "rectified"));
        assert!(!on_tab(&line("proposed", false), "open"));
    }
}
