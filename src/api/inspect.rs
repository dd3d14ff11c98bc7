//! `/api/v1/inspections...`: the week's plan, visits an inspector records (with the
//! receipts around the visit for a unit with a display, and a finding for each failed item,
//! handed to the unit's company), and photos by SHA-256. Findings and scorecards are in
//! `findings`.
//!
//! Owns: the routes' bodies and status codes. The rules are `core::inspect`'s, the rows the
//! store's (`InspectStore`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiBody, ApiError, ApiPath, ApiQuery, ApiState, Detail};
use crate::core::audit::sample;
use crate::core::inspect::finding::EventKind;
use crate::core::inspect::{photo, plan, Finding, FindingEvent, Inspection, ItemResult, Unit};
use crate::store::{ApiStore, InspectStore, Role, TokenRow};

pub mod findings;

/// The evidence of a visit: receipts this long before and after it.
const EVIDENCE_MS: i64 = 15 * 60 * 1000;
/// How far ahead of the clock a visit's time may be (a phone's clock a little fast).
const AHEAD_MS: i64 = 5 * 60 * 1000;

/// A time as the API shows it, in the deployment's zone.
pub(super) fn t(ms: i64, tz: Tz) -> Value {
    DateTime::from_timestamp_millis(ms).map_or(Value::Null, |d| {
        Value::String(d.with_timezone(&tz).to_rfc3339())
    })
}

pub(super) fn unprocessable(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::field(StatusCode::UNPROCESSABLE_ENTITY, field, message)
}

/// A JSON body as `T`, or a 400 naming what is wrong.
pub(super) fn body<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(|e| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "body",
            format!("not the JSON this route takes: {e}"),
        )
    })
}

/// An RFC 3339 time given in `field`.
pub(super) fn time(field: &str, s: &str) -> Result<i64, ApiError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::field(
                StatusCode::BAD_REQUEST,
                field,
                format!("{s:?} is not an RFC 3339 time"),
            )
        })
}

/// The company a `company` token answers for; None for the other roles (they see all).
pub(super) async fn scope(st: &ApiState, who: &TokenRow) -> Result<Option<String>, ApiError> {
    if who.role != Role::Company {
        return Ok(None);
    }
    match st.store.token_company(who.id).await? {
        Some(c) => Ok(Some(c)),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this company token is bound to no company",
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PlanParams {
    pub(crate) week: Option<String>,
    pub(crate) seed: Option<String>,
    pub(crate) per_kind: Option<usize>,
}

/// `GET /api/v1/inspections/plan`: the week's units to visit, each with the visits it
/// needs and has had, due or done; and last week's still short of visits, overdue.
pub(super) async fn plan_route(
    State(st): State<Arc<ApiState>>,
    ApiQuery(p): ApiQuery<PlanParams>,
) -> Result<Response, ApiError> {
    Ok(Json(plan_answer(&st, p).await?).into_response())
}

/// The answer of `GET /api/v1/inspections/plan`, for the route and the console alike.
pub(crate) async fn plan_answer(st: &ApiState, p: PlanParams) -> Result<Value, ApiError> {
    let tz = st.shared.current().timezone;
    let now = st.clock.now();
    let week = p
        .week
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| sample::week_of(now, tz));
    let monday = sample::parse_week(&week)
        .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "week", e))?;
    let seed = p
        .seed
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| sample::DEFAULT_SEED.to_owned());
    if p.per_kind.is_some_and(|n| n > 10_000) {
        return Err(ApiError::field(
            StatusCode::BAD_REQUEST,
            "per_kind",
            "at most 10000",
        ));
    }
    let (from, to) = sample::week_bounds(monday, tz);
    let last = sample::week_of(from - Duration::days(1), tz);
    let (last_from, _) = sample::week_bounds(monday - Duration::days(7), tz);
    let visits = st
        .store
        .inspections_between(last_from.timestamp_millis(), to.timestamp_millis())
        .await?;
    let count = |a: DateTime<Utc>, b: DateTime<Utc>| {
        let mut m: HashMap<String, u32> = HashMap::new();
        for v in visits
            .iter()
            .filter(|v| (a.timestamp_millis()..b.timestamp_millis()).contains(&v.at_ms))
        {
            *m.entry(v.unit.clone()).or_default() += 1;
        }
        m
    };
    let (this, before) = (count(from, to), count(last_from, from));
    let setup = st.shared.inspect();
    let mut rows = Vec::new();
    for d in plan::draw(&setup.units, &setup.config, &last, &seed, p.per_kind) {
        let n = before.get(&d.unit).copied().unwrap_or(0);
        if plan::standing(d.required, n, true) == plan::Standing::Overdue {
            rows.push(plan_row(&last, &d, n, plan::Standing::Overdue));
        }
    }
    for d in plan::draw(&setup.units, &setup.config, &week, &seed, p.per_kind) {
        let n = this.get(&d.unit).copied().unwrap_or(0);
        rows.push(plan_row(
            &week,
            &d,
            n,
            plan::standing(d.required, n, now >= to),
        ));
    }
    let tally = |s: &str| rows.iter().filter(|r| r["status"] == s).count();
    Ok(json!({
        "week": week, "seed": seed, "from": from.with_timezone(&tz).to_rfc3339(), "to": to.with_timezone(&tz).to_rfc3339(),
        "due": tally("due"), "overdue": tally("overdue"), "done": tally("done"), "rows": rows,
    }))
}

fn plan_row(week: &str, d: &plan::Due, visits: u32, s: plan::Standing) -> Value {
    json!({"week": week, "unit": d.unit, "kind": d.kind, "company": d.company, "display": d.display,
           "reasons": d.reasons, "required": d.required, "visits": visits, "status": s})
}

/// The body of `POST /api/v1/inspections`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VisitBody {
    pub(crate) unit: String,
    /// When the visit was (RFC 3339); default now.
    pub(crate) at: Option<String>,
    pub(crate) items: Vec<ItemResult>,
}

/// `POST /api/v1/inspections`: records a visit; each failed item opens a finding handed to
/// the unit's company, with the item's default deadline or the one given.
pub(super) async fn record(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiBody(b): ApiBody,
) -> Result<Response, ApiError> {
    let v: VisitBody = body(&b)?;
    let out = record_visit(&st, &who, v).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Records the visit `v` by `who` as `POST /api/v1/inspections` does; the visit as the API
/// shows it, with the ids of the findings it opened.
pub(crate) async fn record_visit(
    st: &ApiState,
    who: &TokenRow,
    v: VisitBody,
) -> Result<Value, ApiError> {
    let tz = st.shared.current().timezone;
    let now_ms = st.clock.now().timestamp_millis();
    let unit = st
        .shared
        .inspect()
        .units
        .get(&v.unit)
        .cloned()
        .ok_or_else(|| {
            unprocessable(
                "unit",
                format!(
                    "unknown unit {:?}: no display or unit list in devices/ has it",
                    v.unit
                ),
            )
        })?;
    let at_ms = match &v.at {
        Some(s) => time("at", s)?,
        None => now_ms,
    };
    if at_ms > now_ms + AHEAD_MS {
        return Err(unprocessable("at", "the visit is in the future"));
    }
    let deadlines = check_items(st, &v.items, at_ms, now_ms).await?;
    let evidence = match &unit.display {
        Some(d) => Some(evidence(st, d, at_ms, tz).await?),
        None => None,
    };
    let id = ulid::Ulid::new().to_string();
    let visit = Inspection {
        id: id.clone(),
        unit: unit.id.clone(),
        company: unit.company.clone(),
        at_ms,
        by: who.name.clone(),
        by_token: Some(who.id),
        recorded_ms: now_ms,
        items: v.items,
        evidence,
    };
    let found = opened_findings(&visit, &unit, &deadlines, now_ms);
    st.store.record_inspection(&visit, &found).await?;
    let m = st.shared.metrics();
    m.inspections_recorded
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    m.findings_opened
        .fetch_add(found.len() as u64, std::sync::atomic::Ordering::Relaxed);
    let ids: Vec<&str> = found.iter().map(|f| f.id.as_str()).collect();
    let mut out = visit_view(&visit, tz);
    out["findings"] = json!(ids);
    tracing::info!(inspection = %visit.id, unit = %visit.unit, findings = ids.len(), by = %visit.by, "inspection recorded");
    Ok(out)
}

/// Every checklist item answered once, each known, photos stored; the deadline of each failed
/// item (in the future), in the order given. Every problem at once.
async fn check_items(
    st: &ApiState,
    items: &[ItemResult],
    at_ms: i64,
    now_ms: i64,
) -> Result<Vec<Option<i64>>, ApiError> {
    let setup = st.shared.inspect();
    let cfg = &setup.config;
    let mut details = Vec::new();
    let mut deadlines = Vec::new();
    let mut problem = |field: String, message: String| {
        details.push(Detail {
            field: Some(field),
            line: None,
            message,
        })
    };
    for (i, it) in items.iter().enumerate() {
        let f = |k: &str| format!("items[{i}].{k}");
        let Some(c) = cfg.item(&it.item) else {
            let known: Vec<&str> = cfg.items.iter().map(|c| c.id.as_str()).collect();
            problem(
                f("item"),
                format!(
                    "unknown checklist item {:?}; the checklist has {}",
                    it.item,
                    known.join(", ")
                ),
            );
            deadlines.push(None);
            continue;
        };
        if items[..i].iter().any(|o| o.item == it.item) {
            problem(f("item"), format!("item {:?} is answered twice", it.item));
        }
        for p in &it.photos {
            if !photo::is_digest(p) || st.store.photo(p).await?.is_none() {
                problem(
                    f("photos"),
                    format!(
                        "no stored photo {p:?}: upload it first (POST /api/v1/inspections/photos)"
                    ),
                );
            }
        }
        let deadline = match (&it.deadline, it.pass) {
            (_, true) => None,
            (Some(s), false) => Some(time(&f("deadline"), s)?),
            (None, false) => Some(at_ms + c.deadline.as_millis() as i64),
        };
        if let Some(d) = deadline.filter(|&d| d <= now_ms) {
            problem(
                f("deadline"),
                format!(
                    "the deadline {} is in the past; give a later one",
                    crate::core::inspect::finding::ms_text(d, st.shared.current().timezone)
                ),
            );
        }
        deadlines.push(deadline);
    }
    for c in &cfg.items {
        if !items.iter().any(|i| i.item == c.id) {
            problem(
                "items".into(),
                format!("checklist item {:?} ({}) is not answered", c.id, c.label),
            );
        }
    }
    if details.is_empty() {
        return Ok(deadlines);
    }
    let mut e = ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!("the visit was not recorded: {}", details[0].message),
    );
    e.details = details;
    Err(e)
}

/// A finding per failed item of `v`, opened now with its deadline.
fn opened_findings(
    v: &Inspection,
    unit: &Unit,
    deadlines: &[Option<i64>],
    now_ms: i64,
) -> Vec<Finding> {
    v.items
        .iter()
        .zip(deadlines)
        .filter(|(it, _)| !it.pass)
        .map(|(it, d)| Finding {
            id: ulid::Ulid::new().to_string(),
            unit: unit.id.clone(),
            company: unit.company.clone(),
            item: it.item.clone(),
            inspection: Some(v.id.clone()),
            display: unit.display.clone(),
            events: vec![FindingEvent {
                seq: 1,
                kind: EventKind::Opened,
                at_ms: now_ms,
                by: v.by.clone(),
                by_token: v.by_token,
                note: it.note.clone(),
                photos: it.photos.clone(),
                deadline_ms: *d,
                source: None,
            }],
        })
        .collect()
}

/// What `display` played in the 15 minutes before and after `at_ms`, and its last receipt.
async fn evidence(st: &ApiState, display: &str, at_ms: i64, tz: Tz) -> Result<Value, ApiError> {
    let (from, to) = (at_ms - EVIDENCE_MS, at_ms + EVIDENCE_MS);
    let played = st.store.played_between(from, to, Some(display)).await?;
    let starts: Vec<i64> = played
        .into_iter()
        .filter(|p| p.device == display)
        .flat_map(|p| p.starts)
        .collect();
    let online = st.store.presence_between(from, to).await?.into_iter().filter(|p| p.device == display).map(|p| json!({"since": t(p.since_ms.max(from), tz), "until": t(p.until_ms.unwrap_or(to).min(to), tz)})).collect::<Vec<_>>();
    Ok(json!({
        "display": display, "from": t(from, tz), "to": t(to, tz),
        "played_before": starts.iter().filter(|&&s| s < at_ms).count(),
        "played_after": starts.iter().filter(|&&s| s >= at_ms).count(),
        "played": starts.iter().map(|&s| t(s, tz)).collect::<Vec<_>>(),
        "online": online,
    }))
}

pub(super) fn visit_view(v: &Inspection, tz: Tz) -> Value {
    json!({"id": v.id, "unit": v.unit, "company": v.company, "at": t(v.at_ms, tz), "by": v.by,
           "recorded_at": t(v.recorded_ms, tz), "items": v.items, "evidence": v.evidence})
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListParams {
    from: Option<String>,
    to: Option<String>,
    unit: Option<String>,
}

/// `GET /api/v1/inspections?from=&to=&unit=`: visits, oldest first (default: the last 31 days).
pub(super) async fn list(
    State(st): State<Arc<ApiState>>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let tz = st.shared.current().timezone;
    let now = st.clock.now().timestamp_millis();
    let bound = |f: &'static str, s: &Option<String>| -> Result<Option<i64>, ApiError> {
        s.as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| {
                crate::core::audit::plays::parse_bound(f, s, tz)
                    .map(|t| t.timestamp_millis())
                    .map_err(ApiError::from)
            })
            .transpose()
    };
    let to = bound("to", &p.to)?.unwrap_or(now + AHEAD_MS + 1);
    let from = bound("from", &p.from)?.unwrap_or(to - 31 * 86_400_000);
    let rows: Vec<Value> = st
        .store
        .inspections_between(from, to)
        .await?
        .iter()
        .filter(|v| p.unit.as_deref().is_none_or(|u| v.unit == u))
        .map(|v| visit_view(v, tz))
        .collect();
    Ok(
        Json(json!({"from": t(from, tz), "to": t(to, tz), "unit": p.unit, "rows": rows}))
            .into_response(),
    )
}

/// `GET /api/v1/inspections/{id}`.
pub(super) async fn show(
    State(st): State<Arc<ApiState>>,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    let tz = st.shared.current().timezone;
    match st.store.inspection(&id).await? {
        Some(v) => Ok(Json(visit_view(&v, tz)).into_response()),
        None => Err(ApiError::field(
            StatusCode::NOT_FOUND,
            "id",
            format!("no inspection {id:?}"),
        )),
    }
}

/// `POST /api/v1/inspections/photos`: the body is the image itself; it is kept under its
/// SHA-256, which the answer gives, to name in a visit's items or a fix.
pub(super) async fn upload_photo(
    State(st): State<Arc<ApiState>>,
    ApiBody(b): ApiBody,
) -> Result<Response, ApiError> {
    let out = store_photo(&st, &b).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Keeps the photo `b` under its SHA-256 once it passes the checks of
/// `POST /api/v1/inspections/photos`; the route's answer.
pub(crate) async fn store_photo(st: &ApiState, b: &[u8]) -> Result<Value, ApiError> {
    let media_type = photo::check(b).map_err(|e| {
        let status = if matches!(e, photo::PhotoError::TooLarge(_)) {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        ApiError::field(status, "body", e.to_string())
    })?;
    let sha = photo::digest(b);
    st.store
        .add_photo(&sha, media_type, b, st.clock.now().timestamp_millis())
        .await?;
    Ok(json!({"sha256": sha, "media_type": media_type, "bytes": b.len()}))
}

/// `GET /api/v1/inspections/photos/{sha256}`; a company sees only photos of its findings.
pub(super) async fn get_photo(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(sha): ApiPath,
    _h: HeaderMap,
) -> Result<Response, ApiError> {
    let (media_type, bytes) = photo_for(&st, &who, &sha).await?;
    Ok(([(header::CONTENT_TYPE, media_type)], bytes).into_response())
}

/// The photo `sha` (its media type and bytes) as `who` may see it: a company only the
/// photos of its own findings; 404 otherwise.
pub(crate) async fn photo_for(
    st: &ApiState,
    who: &TokenRow,
    sha: &str,
) -> Result<(String, Vec<u8>), ApiError> {
    let missing = || ApiError::field(StatusCode::NOT_FOUND, "sha256", format!("no photo {sha:?}"));
    if !photo::is_digest(sha) {
        return Err(missing());
    }
    if let Some(c) = scope(st, who).await? {
        let mine = st.store.findings(Some(&c)).await?;
        let mut names = mine
            .iter()
            .flat_map(|f| f.events.iter().flat_map(|e| e.photos.iter()));
        if !names.any(|p| *p == sha) {
            return Err(missing());
        }
    }
    let (media_type, bytes) = st.store.photo(sha).await?.ok_or_else(missing)?;
    Ok((media_type, bytes))
}

/// Roles of the routes (admin may do all); the console's pages use the same lists.
pub const INSPECTOR: &[Role] = &[Role::Inspector];
pub const PLAN_READERS: &[Role] = &[Role::Inspector, Role::Auditor];
pub const FINDING_READERS: &[Role] = &[Role::Inspector, Role::Auditor, Role::Company];
pub const COMPANY: &[Role] = &[Role::Company];
pub const PHOTO_WRITERS: &[Role] = &[Role::Inspector, Role::Company];

/// The inspection, finding and scorecard routes, each behind its roles.
pub(super) fn routes(st: &Arc<ApiState>) -> axum::Router<Arc<ApiState>> {
    use super::guard;
    use axum::routing::{get, post};
    use findings as f;
    axum::Router::new()
        .route(
            "/api/v1/inspections",
            guard(post(record), st, INSPECTOR).merge(guard(get(list), st, PLAN_READERS)),
        )
        .route(
            "/api/v1/inspections/plan",
            guard(get(plan_route), st, PLAN_READERS),
        )
        .route(
            "/api/v1/inspections/photos",
            guard(post(upload_photo), st, PHOTO_WRITERS),
        )
        .route(
            "/api/v1/inspections/photos/{id}",
            guard(get(get_photo), st, FINDING_READERS),
        )
        .route(
            "/api/v1/inspections/{id}",
            guard(get(show), st, PLAN_READERS),
        )
        .route("/api/v1/findings", guard(get(f::list), st, FINDING_READERS))
        .route(
            "/api/v1/findings/propose",
            guard(post(f::propose), st, INSPECTOR),
        )
        .route(
            "/api/v1/findings/{id}",
            guard(get(f::show), st, FINDING_READERS),
        )
        .route(
            "/api/v1/findings/{id}/rectify",
            guard(post(f::rectify), st, COMPANY),
        )
        .route(
            "/api/v1/findings/{id}/recheck",
            guard(post(f::recheck), st, INSPECTOR),
        )
        .route(
            "/api/v1/findings/{id}/recheck-from-receipts",
            guard(post(f::recheck_from_receipts), st, INSPECTOR),
        )
        .route(
            "/api/v1/findings/{id}/deadline",
            guard(post(f::deadline), st, INSPECTOR),
        )
        .route(
            "/api/v1/findings/{id}/confirm",
            guard(post(f::confirm), st, INSPECTOR),
        )
        .route(
            "/api/v1/findings/{id}/dismiss",
            guard(post(f::dismiss), st, INSPECTOR),
        )
        .route(
            "/api/v1/scorecards",
            guard(get(f::scorecards), st, FINDING_READERS),
        )
}
