//! The inspector's page (`/inspect`), laid out for a phone: the week's plan per kind (due,
//! overdue, done), a form to record a visit with the checklist (pass or fail per item, a
//! note, a photo), the findings a company says it fixed (close or reopen), and proposals
//! from receipts (confirm or dismiss). Every figure and every change is the API's own
//! (`api::inspect::{plan_answer, record_visit, store_photo}` and
//! `api::inspect::findings::{findings_answer, recheck_finding, confirm_finding,
//! dismiss_finding, propose_findings}`), so a page never shows or does what the API would not.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;
use serde_json::Value;

use super::super::i18n::key;
use super::super::{html, Ctx, Failure};
use crate::api::inspect::findings::{self as f, ChangeBody};
use crate::api::inspect::{self as insp, PlanParams, VisitBody};
use crate::api::{ApiError, ApiState, Detail};
use crate::core::inspect::ItemResult;

/// Photos a visit's form may carry (one an item); the body limit of its route follows.
pub const VISIT_PHOTOS: usize = 8;
/// The largest visit form: its photos and the framing around them.
pub const VISIT_BODY: usize = VISIT_PHOTOS * crate::core::inspect::photo::MAX_PHOTO + 64 * 1024;

/// An answer's RFC 3339 time (already in the deployment's zone) as its wall clock.
pub fn wall(v: &Value) -> String {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// One unit of the plan.
pub struct PlanLine {
    pub unit: String,
    pub company: String,
    pub display: String,
    pub reasons: String,
    pub required: u64,
    pub visits: u64,
    /// `due`, `overdue` or `done`, as the API says.
    pub status: String,
    pub week: String,
}

/// The plan of one kind of unit.
pub struct KindPlan {
    pub kind: String,
    pub lines: Vec<PlanLine>,
}

/// The plan's rows grouped by kind, in the API's order.
fn plan_by_kind(plan: &Value) -> Vec<KindPlan> {
    let mut out: Vec<KindPlan> = Vec::new();
    for r in plan["rows"].as_array().into_iter().flatten() {
        let kind = text(&r["kind"]);
        let reasons: Vec<String> = r["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        let line = PlanLine {
            unit: text(&r["unit"]),
            company: text(&r["company"]),
            display: text(&r["display"]),
            reasons: reasons.join(", "),
            required: r["required"].as_u64().unwrap_or(0),
            visits: r["visits"].as_u64().unwrap_or(0),
            status: text(&r["status"]),
            week: text(&r["week"]),
        };
        match out.iter_mut().find(|k| k.kind == kind) {
            Some(k) => k.lines.push(line),
            None => out.push(KindPlan {
                kind,
                lines: vec![line],
            }),
        }
    }
    out
}

/// One finding as a list entry.
pub struct FindingLine {
    pub id: String,
    pub unit: String,
    pub company: String,
    pub item: String,
    pub state: String,
    /// The deadline in the deployment's time zone.
    pub deadline: String,
    pub overdue: bool,
    /// The note of its latest event that has one.
    pub note: String,
}

impl FindingLine {
    pub fn of(v: &Value) -> FindingLine {
        let note = v["events"]
            .as_array()
            .into_iter()
            .flatten()
            .rev()
            .find_map(|e| e["note"].as_str().filter(|n| !n.is_empty()))
            .unwrap_or("")
            .to_owned();
        FindingLine {
            id: text(&v["id"]),
            unit: text(&v["unit"]),
            company: text(&v["company"]),
            item: text(&v["item"]),
            state: text(&v["state"]),
            deadline: wall(&v["deadline"]),
            overdue: v["overdue"].as_bool().unwrap_or(false),
            note,
        }
    }
}

/// The checklist item as the form shows it.
pub struct Item {
    pub id: String,
    pub label: String,
    pub days: u64,
}

#[derive(Template)]
#[template(path = "console/inspect.html")]
pub struct InspectPage<'a> {
    pub c: &'a Ctx,
    pub week: String,
    pub tz: String,
    pub due: u64,
    pub overdue: u64,
    pub done: u64,
    pub kinds: Vec<KindPlan>,
    pub units: Vec<String>,
    pub items: Vec<Item>,
    pub recheck: Vec<FindingLine>,
    pub proposed: Vec<FindingLine>,
    /// Whether the reader may change anything (an inspector or an admin).
    pub may_act: bool,
    pub notice: String,
    pub error: String,
    pub details: Vec<Detail>,
    /// The unit the visit form had, to show again after a refusal.
    pub unit: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PageQuery {
    pub week: Option<String>,
    /// The visit just recorded, and how many findings it opened.
    pub recorded: Option<String>,
    pub findings: Option<usize>,
    /// The finding just changed, and its state now.
    pub changed: Option<String>,
    pub state: Option<String>,
    pub proposed: Option<usize>,
    /// The unit the visit form starts with (a plan entry's link).
    pub unit: Option<String>,
}

fn lines_in(answer: &Value) -> Vec<FindingLine> {
    answer["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(FindingLine::of)
        .collect()
}

async fn page_of<'a>(
    st: &ApiState,
    c: &'a Ctx,
    week: Option<String>,
) -> Result<InspectPage<'a>, Failure> {
    let v = c.require(insp::PLAN_READERS)?.token.clone();
    let fail = |e: ApiError| c.api_failure(e);
    let plan = insp::plan_answer(
        st,
        PlanParams {
            week,
            ..Default::default()
        },
    )
    .await
    .map_err(fail)?;
    let state = |s: &str| f::ListParams {
        state: Some(s.to_owned()),
        ..Default::default()
    };
    let recheck = f::findings_answer(st, &v, state("rectified"))
        .await
        .map_err(fail)?;
    let proposed = f::findings_answer(st, &v, state("proposed"))
        .await
        .map_err(fail)?;
    let setup = st.shared.inspect();
    Ok(InspectPage {
        c,
        week: text(&plan["week"]),
        tz: st.shared.current().timezone.to_string(),
        due: plan["due"].as_u64().unwrap_or(0),
        overdue: plan["overdue"].as_u64().unwrap_or(0),
        done: plan["done"].as_u64().unwrap_or(0),
        kinds: plan_by_kind(&plan),
        units: setup.units.list.iter().map(|u| u.id.clone()).collect(),
        items: setup
            .config
            .items
            .iter()
            .map(|i| Item {
                id: i.id.clone(),
                label: i.label.clone(),
                days: i.deadline.as_secs() / 86_400,
            })
            .collect(),
        recheck: lines_in(&recheck),
        proposed: lines_in(&proposed),
        may_act: c.may(insp::INSPECTOR),
        notice: String::new(),
        error: String::new(),
        details: Vec::new(),
        unit: String::new(),
    })
}

/// `GET /inspect?week=`: inspectors and auditors (who only read), as the plan's API route.
pub async fn page(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Query(q): Query<PageQuery>,
) -> Result<Response, Failure> {
    let mut page = page_of(&st, &c, q.week.clone()).await?;
    page.unit = q.unit.unwrap_or_default();
    if let Some(id) = q.recorded.filter(|s| !s.is_empty()) {
        page.notice = format!(
            "{} {id} · {} {}",
            c.t("inspect.recorded"),
            c.t("inspect.findings_opened"),
            q.findings.unwrap_or(0)
        );
    } else if let Some(id) = q.changed.filter(|s| !s.is_empty()) {
        let state = q.state.unwrap_or_default();
        page.notice = format!("{} {id}: {}", c.t("inspect.changed"), c.word(&state));
    } else if let Some(n) = q.proposed {
        page.notice = format!("{} {n}", c.t("inspect.proposals_made"));
    }
    Ok(html(&page))
}

/// What the visit form sent: the unit and, per checklist item, pass or fail, a note and a
/// photo's bytes.
#[derive(Default)]
struct Visit {
    csrf: String,
    unit: String,
    answers: Vec<(String, Answer)>,
}

#[derive(Default)]
struct Answer {
    pass: Option<bool>,
    note: String,
    photo: Option<Vec<u8>>,
}

impl Visit {
    fn answer(&mut self, item: &str) -> &mut Answer {
        let at = match self.answers.iter().position(|(i, _)| i == item) {
            Some(at) => at,
            None => {
                self.answers.push((item.to_owned(), Answer::default()));
                self.answers.len() - 1
            }
        };
        &mut self.answers[at].1
    }
}

/// One field of a console form sent as multipart: its name, whether a file was chosen
/// for it, its bytes.
pub(super) struct Part {
    pub name: String,
    file: bool,
    pub bytes: axum::body::Bytes,
}

impl Part {
    /// The field as text; not UTF-8 is a 400 naming the field.
    pub fn text(&self, c: &Ctx) -> Result<String, Failure> {
        String::from_utf8(self.bytes.to_vec()).map_err(|e| {
            c.fail(
                StatusCode::BAD_REQUEST,
                key("error.invalid"),
                format!("{}: not UTF-8: {}", self.name, e.utf8_error()),
            )
        })
    }
    /// Whether a non-empty file was sent: an empty file input sends an empty part.
    pub fn is_file(&self) -> bool {
        self.file && !self.bytes.is_empty()
    }
}

/// The form's next field; a broken body is a 400.
pub(super) async fn next_part(c: &Ctx, m: &mut Multipart) -> Result<Option<Part>, Failure> {
    let bad = |e: String| c.fail(StatusCode::BAD_REQUEST, key("error.invalid"), e);
    let Some(field) = m.next_field().await.map_err(|e| bad(e.body_text()))? else {
        return Ok(None);
    };
    let name = field.name().unwrap_or("").to_owned();
    let file = field.file_name().is_some_and(|n| !n.is_empty());
    let bytes = field.bytes().await.map_err(|e| bad(e.body_text()))?;
    Ok(Some(Part { name, file, bytes }))
}

async fn read_visit(c: &Ctx, mut m: Multipart) -> Result<Visit, Failure> {
    let mut v = Visit::default();
    while let Some(p) = next_part(c, &mut m).await? {
        match p.name.split_once(':') {
            None if p.name == "csrf" => v.csrf = p.text(c)?,
            None if p.name == "unit" => v.unit = p.text(c)?.trim().to_owned(),
            Some(("pass", item)) => v.answer(item).pass = Some(p.text(c)? == "pass"),
            Some(("note", item)) => v.answer(item).note = p.text(c)?,
            Some(("photo", item)) if p.is_file() => v.answer(item).photo = Some(p.bytes.to_vec()),
            _ => {}
        }
    }
    Ok(v)
}

/// The visit's items, each photo stored first through the API's own checks; a refusal
/// names the item's field as the API would.
async fn items_of(st: &ApiState, v: Visit) -> Result<Vec<ItemResult>, ApiError> {
    let mut out = Vec::new();
    let mut details = Vec::new();
    // The status of the first refused photo: 413 for one too large, as the API answers.
    let mut status = StatusCode::UNPROCESSABLE_ENTITY;
    for (i, (item, a)) in v.answers.into_iter().enumerate() {
        let Some(pass) = a.pass else {
            continue;
        };
        let mut photos = Vec::new();
        if let Some(bytes) = a.photo {
            match insp::store_photo(st, &bytes).await {
                Ok(p) => photos.push(text(&p["sha256"])),
                Err(e) => {
                    if details.is_empty() {
                        status = e.status;
                    }
                    details.push(Detail {
                        field: Some(format!("items[{i}].photos")),
                        line: None,
                        message: format!("{item}: {}", e.error),
                    })
                }
            }
        }
        let note = Some(a.note.trim().to_owned()).filter(|n| !n.is_empty());
        out.push(ItemResult {
            item,
            pass,
            note,
            photos,
            deadline: None,
        });
    }
    if details.is_empty() {
        return Ok(out);
    }
    let mut e = ApiError::new(
        status,
        format!("the visit was not recorded: {}", details[0].message),
    );
    e.details = details;
    Err(e)
}

/// `POST /inspect/visits` (multipart): records a visit as `POST /api/v1/inspections`.
pub async fn record(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    m: Multipart,
) -> Result<Response, Failure> {
    if !c.same_origin || !c.may(insp::INSPECTOR) {
        // Refused before the body (and its photos) is read, as `require_post` answers.
        c.require_post(insp::INSPECTOR, c.csrf())?;
    }
    let v = read_visit(&c, m).await?;
    let who = c.require_post(insp::INSPECTOR, &v.csrf)?.token.clone();
    let unit = v.unit.clone();
    let done = match items_of(&st, v).await {
        Ok(items) => {
            let body = VisitBody {
                unit: unit.clone(),
                at: None,
                items,
            };
            insp::record_visit(&st, &who, body).await
        }
        Err(e) => Err(e),
    };
    match done {
        Ok(out) => {
            let n = out["findings"].as_array().map_or(0, Vec::len);
            let q = serde_urlencoded::to_string([
                ("recorded", text(&out["id"])),
                ("findings", n.to_string()),
            ])
            .unwrap_or_default();
            Ok(Redirect::to(&format!("/inspect?{q}")).into_response())
        }
        Err(e) if e.status.is_client_error() => {
            let mut page = page_of(&st, &c, None).await?;
            page.error = e.error;
            page.details = e.details;
            page.unit = unit;
            let mut r = html(&page);
            *r.status_mut() = e.status;
            Ok(r)
        }
        Err(e) => Err(c.api_failure(e)),
    }
}

/// A change form: the CSRF token, a note, and for a recheck its result.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChangeForm {
    csrf: String,
    note: String,
    result: String,
    /// A new deadline: the deployment's wall clock (`datetime-local`) or RFC 3339.
    deadline: String,
    /// Where to go back to: a path of this console.
    back: String,
}

impl ChangeForm {
    fn body(&self) -> ChangeBody {
        ChangeBody {
            note: Some(self.note.trim().to_owned()).filter(|n| !n.is_empty()),
            result: Some(self.result.clone()).filter(|r| !r.is_empty()),
            ..Default::default()
        }
    }
    /// `body` with the deadline as the API reads it (RFC 3339), a wall-clock time taken in
    /// `tz`; what does not read as one is passed on for the API to name.
    fn body_in(&self, tz: chrono_tz::Tz) -> ChangeBody {
        let d = self.deadline.trim();
        let wall = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(d, f).ok())
            .and_then(|t| t.and_local_timezone(tz).earliest());
        ChangeBody {
            deadline: Some(wall.map_or_else(|| d.to_owned(), |t| t.to_rfc3339()))
                .filter(|d| !d.is_empty()),
            ..self.body()
        }
    }
    /// `back` when it is a path of this console, else the inspector's page.
    fn back(&self) -> &str {
        let b = self.back.as_str();
        if b.starts_with('/') && !b.starts_with("//") && !b.contains('\\') {
            b.split('?').next().unwrap_or("/inspect")
        } else {
            "/inspect"
        }
    }
}

/// After a change: back where the form was, saying what the finding is now.
fn changed(f: &ChangeForm, out: &Value) -> Response {
    let q = serde_urlencoded::to_string([
        ("changed", text(&out["id"])),
        ("state", text(&out["state"])),
    ])
    .unwrap_or_default();
    Redirect::to(&format!("{}?{q}", f.back())).into_response()
}

/// `POST /findings/{id}/recheck`: `result` closed or reopened, as the API's recheck.
pub async fn recheck(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
    Form(form): Form<ChangeForm>,
) -> Result<Response, Failure> {
    let who = c.require_post(insp::INSPECTOR, &form.csrf)?.token.clone();
    let out = f::recheck_finding(&st, &who, &id, form.body())
        .await
        .map_err(|e| c.api_failure(e))?;
    Ok(changed(&form, &out))
}

/// `POST /findings/{id}/deadline`: a new deadline (the deployment's wall clock), as the
/// API's deadline change; a refusal is shown on the finding's page.
pub async fn deadline(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
    Form(form): Form<ChangeForm>,
) -> Result<Response, Failure> {
    let who = c.require_post(insp::INSPECTOR, &form.csrf)?.token.clone();
    let tz = st.shared.current().timezone;
    match f::deadline_finding(&st, &who, &id, form.body_in(tz)).await {
        Ok(out) => Ok(changed(&form, &out)),
        Err(e) => super::findings::refused(&st, &c, &id, e).await,
    }
}

/// `POST /findings/{id}/recheck-from-receipts`: closed when the display met its cadence on
/// each day after the fix, as the API's; otherwise the page says which days fell short.
pub async fn recheck_from_receipts(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
    Form(form): Form<ChangeForm>,
) -> Result<Response, Failure> {
    let who = c.require_post(insp::INSPECTOR, &form.csrf)?.token.clone();
    match f::recheck_from_receipts_finding(&st, &who, &id).await {
        Ok(out) => Ok(changed(&form, &out)),
        Err(e) => super::findings::refused(&st, &c, &id, e).await,
    }
}

/// `POST /findings/{id}/confirm`: a proposal handed to its company.
pub async fn confirm(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
    Form(form): Form<ChangeForm>,
) -> Result<Response, Failure> {
    let who = c.require_post(insp::INSPECTOR, &form.csrf)?.token.clone();
    let out = f::confirm_finding(&st, &who, &id, form.body())
        .await
        .map_err(|e| c.api_failure(e))?;
    Ok(changed(&form, &out))
}

/// `POST /findings/{id}/dismiss`: a proposal not handed over.
pub async fn dismiss(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
    Form(form): Form<ChangeForm>,
) -> Result<Response, Failure> {
    let who = c.require_post(insp::INSPECTOR, &form.csrf)?.token.clone();
    let out = f::dismiss_finding(&st, &who, &id, form.body())
        .await
        .map_err(|e| c.api_failure(e))?;
    Ok(changed(&form, &out))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProposeForm {
    csrf: String,
    day: String,
}

/// `POST /inspect/propose`: proposals from a day's receipts, as the API's propose.
pub async fn propose(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Form(form): Form<ProposeForm>,
) -> Result<Response, Failure> {
    let who = c.require_post(insp::INSPECTOR, &form.csrf)?.token.clone();
    let out = f::propose_findings(&st, &who, form.day.trim())
        .await
        .map_err(|e| c.api_failure(e))?;
    let n = out["rows"].as_array().map_or(0, Vec::len);
    Ok(Redirect::to(&format!("/inspect?proposed={n}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_path_of_this_console_is_gone_back_to() {
        let form = |b: &str| ChangeForm {
            back: b.into(),
            ..Default::default()
        };
        assert_eq!(form("/findings/01J").back(), "/findings/01J");
        assert_eq!(form("/inspect?x=1").back(), "/inspect");
        assert_eq!(form("//evil.example/").back(), "/inspect");
        assert_eq!(form("https://evil.example/").back(), "/inspect");
        assert_eq!(form("/\\evil").back(), "/inspect");
        assert_eq!(form("").back(), "/inspect");
    }

    #[test]
    fn a_wall_clock_deadline_is_taken_in_the_deployment_time_zone() {
        let form = |d: &str| ChangeForm {
            deadline: d.into(),
            ..Default::default()
        };
        let tz = chrono_tz::Asia::Shanghai;
        let d = |f: ChangeForm| f.body_in(tz).deadline;
        assert_eq!(
            d(form("2026-12-05T18:00")).as_deref(),
            Some("2026-12-05T18:00:00+08:00")
        );
        assert_eq!(
            d(form("2026-12-05T18:00:30+00:00")).as_deref(),
            Some("2026-12-05T18:00:30+00:00")
        );
        assert_eq!(d(form("next friday")).as_deref(), Some("next friday"));
        assert_eq!(d(form("  ")), None);
    }

    #[test]
    fn the_plan_is_grouped_by_kind_in_the_api_order() {
        let plan = serde_json::json!({"rows": [
            {"unit": "b1", "kind": "bus", "status": "overdue", "reasons": ["sample"], "required": 1, "visits": 0},
            {"unit": "s1", "kind": "station", "status": "due", "reasons": ["rule"], "required": 2, "visits": 1},
            {"unit": "b2", "kind": "bus", "status": "done", "reasons": [], "required": 1, "visits": 1},
        ]});
        let k = plan_by_kind(&plan);
        assert_eq!(k.len(), 2);
        assert_eq!(k[0].kind, "bus");
        let units: Vec<&str> = k[0].lines.iter().map(|l| l.unit.as_str()).collect();
        assert_eq!(units, ["b1", "b2"]);
        assert_eq!(k[1].lines[0].required, 2);
        assert_eq!(k[1].lines[0].visits, 1);
    }

    #[test]
    fn an_answer_time_is_shown_as_its_own_wall_clock() {
        let v = Value::String("2026-11-20T09:30:00+08:00".into());
        assert_eq!(wall(&v), "2026-11-20 09:30");
        assert_eq!(wall(&Value::Null), "");
    }
}
