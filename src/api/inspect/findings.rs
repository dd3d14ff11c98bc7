//! `/api/v1/findings...` and `/api/v1/scorecards`: a finding handed to a company, fixed by
//! it, rechecked by an inspector or from the display's receipts; proposals from receipts an
//! inspector confirms or dismisses; the month's scorecard per company. A company's token sees
//! and answers only its own units' findings: any other is "not found" to it.
//!
//! Owns: the routes' bodies and status codes. Which change a finding allows is
//! `core::inspect::finding`'s; every change is one appended event.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{body, photo, scope, t, time, unprocessable};
use crate::api::{ApiBody, ApiError, ApiPath, ApiQuery, ApiState};
use crate::core::inspect::finding::{Change, EventKind, Refusal};
use crate::core::inspect::{scorecard, Finding, FindingEvent, FindingState};
use crate::reports::{self, export};
use crate::store::{InspectStore, TokenRow};

/// A refusal as the API answers it, instants in the deployment's zone `tz`.
fn refusal(e: Refusal, tz: Tz) -> ApiError {
    match e {
        Refusal::DeadlinePast(d) => unprocessable(
            "deadline",
            format!(
                "deadline {} is not in the future",
                crate::core::inspect::finding::ms_text(d, tz)
            ),
        ),
        e => e.into(),
    }
}

impl From<Refusal> for ApiError {
    fn from(e: Refusal) -> Self {
        match e {
            Refusal::DeadlinePast(_) => unprocessable("deadline", e.to_string()),
            Refusal::SameAccount(..) => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            Refusal::Finished(..) | Refusal::WrongState(..) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
        }
    }
}

/// A finding as the API shows it: its state, deadline, whether overdue, and its events.
pub(crate) fn view(f: &Finding, now_ms: i64, tz: Tz) -> Value {
    let events: Vec<Value> = f
        .events
        .iter()
        .map(|e| {
            json!({
                "seq": e.seq, "kind": e.kind, "at": t(e.at_ms, tz), "by": e.by, "note": e.note,
                "photos": e.photos, "deadline": e.deadline_ms.map(|d| t(d, tz)), "source": e.source,
            })
        })
        .collect();
    json!({
        "id": f.id, "unit": f.unit, "company": f.company, "item": f.item, "inspection": f.inspection,
        "display": f.display, "state": f.state(), "deadline": f.deadline_ms().map(|d| t(d, tz)),
        "overdue": f.overdue(now_ms), "events": events,
    })
}

/// Findings by (state, unit kind) at `now_ms`, an open one past its deadline as `overdue`;
/// `open` and `overdue` are there for every kind, at 0 when none.
pub(crate) fn count_by_state(
    findings: &[Finding],
    units: &crate::core::inspect::Units,
    now_ms: i64,
) -> std::collections::BTreeMap<(String, String), u64> {
    use crate::core::inspect::units::Kind;
    let mut out = std::collections::BTreeMap::new();
    for k in Kind::ALL {
        for s in ["open", "overdue"] {
            out.insert((s.to_owned(), k.as_str().to_owned()), 0);
        }
    }
    for f in findings {
        let state = if f.overdue(now_ms) {
            "overdue"
        } else {
            f.state().as_str()
        };
        let kind = units.get(&f.unit).map_or("unknown", |u| u.kind.as_str());
        *out.entry((state.to_owned(), kind.to_owned())).or_insert(0) += 1;
    }
    out
}

/// Every finding counted as `/metrics` shows them.
pub(crate) async fn tally(
    st: &ApiState,
) -> Result<std::collections::BTreeMap<(String, String), u64>, ApiError> {
    let findings = st.store.findings(None).await?;
    let now = st.clock.now().timestamp_millis();
    Ok(count_by_state(&findings, &st.shared.inspect().units, now))
}

/// The finding `id` as `who` may see it: a company's token finds only its own.
async fn visible(st: &ApiState, who: &TokenRow, id: &str) -> Result<Finding, ApiError> {
    let company = scope(st, who).await?;
    match st.store.finding(id).await? {
        // A proposal is not handed over until an inspector confirms it.
        Some(f)
            if company
                .as_deref()
                .is_none_or(|c| c == f.company && f.handed_over()) =>
        {
            Ok(f)
        }
        _ => Err(ApiError::field(
            StatusCode::NOT_FOUND,
            "id",
            match company {
                Some(c) => format!("no finding {id:?} of company {c:?}"),
                None => format!("no finding {id:?}"),
            },
        )),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    pub(crate) state: Option<String>,
    pub(crate) unit: Option<String>,
    pub(crate) overdue: Option<bool>,
}

/// `GET /api/v1/findings?state=&unit=&overdue=`: oldest first; a company's own only.
pub(crate) async fn list(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    Ok(Json(findings_answer(&st, &who, p).await?).into_response())
}

/// The answer of `GET /api/v1/findings` to `who`, for the route and the console alike.
pub(crate) async fn findings_answer(
    st: &ApiState,
    who: &TokenRow,
    p: ListParams,
) -> Result<Value, ApiError> {
    let tz = st.shared.current().timezone;
    let now = st.clock.now().timestamp_millis();
    let company = scope(st, who).await?;
    let state = p.state.as_deref().filter(|s| !s.is_empty());
    if let Some(s) = state {
        if !["proposed", "open", "rectified", "closed", "dismissed"].contains(&s) {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "state",
                format!("unknown state {s:?}: use proposed, open, rectified, closed or dismissed"),
            ));
        }
    }
    let rows: Vec<Value> = st
        .store
        .findings(company.as_deref())
        .await?
        .iter()
        .filter(|f| company.is_none() || f.handed_over())
        .filter(|f| state.is_none_or(|s| f.state().as_str() == s))
        .filter(|f| p.unit.as_deref().is_none_or(|u| f.unit == u))
        .filter(|f| p.overdue.is_none_or(|o| f.overdue(now) == o))
        .map(|f| view(f, now, tz))
        .collect();
    Ok(
        json!({"company": company, "state": state, "unit": p.unit, "overdue": p.overdue, "rows": rows}),
    )
}

/// `GET /api/v1/findings/{id}`.
pub(crate) async fn show(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    Ok(Json(finding_answer(&st, &who, &id).await?).into_response())
}

/// The answer of `GET /api/v1/findings/{id}` to `who`: 404 for another company's.
pub(crate) async fn finding_answer(
    st: &ApiState,
    who: &TokenRow,
    id: &str,
) -> Result<Value, ApiError> {
    let f = visible(st, who, id).await?;
    Ok(view(
        &f,
        st.clock.now().timestamp_millis(),
        st.shared.current().timezone,
    ))
}

/// What the change routes take.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChangeBody {
    pub(crate) note: Option<String>,
    #[serde(default)]
    pub(crate) photos: Vec<String>,
    /// RFC 3339: a new deadline (deadline, confirm, reopen).
    pub(crate) deadline: Option<String>,
    /// `closed` or `reopened` (recheck).
    pub(crate) result: Option<String>,
}

/// Appends the event `change` makes, once `core` allows it; the finding as it is then.
async fn apply(
    st: &ApiState,
    who: &TokenRow,
    f: Finding,
    change: Change,
    b: ChangeBody,
    source: Option<&str>,
) -> Result<Value, ApiError> {
    // Every change route takes the same body, and its schema names the results: one that
    // is not among them is refused wherever it comes, not ignored.
    if let Some(r) = b
        .result
        .as_deref()
        .filter(|r| !matches!(*r, "closed" | "reopened"))
    {
        return Err(unprocessable(
            "result",
            format!("{r:?}: use closed or reopened"),
        ));
    }
    let now = st.clock.now().timestamp_millis();
    let kind = f
        .allows(change, &who.name, now)
        .map_err(|e| refusal(e, st.shared.current().timezone))?;
    for p in &b.photos {
        if !photo::is_digest(p) || st.store.photo(p).await?.is_none() {
            return Err(unprocessable(
                "photos",
                format!("no stored photo {p:?}: upload it first (POST /api/v1/inspections/photos)"),
            ));
        }
    }
    let deadline_ms = match change {
        Change::Confirm { deadline_ms } | Change::Deadline { deadline_ms } => Some(deadline_ms),
        Change::Reopen { deadline_ms } => deadline_ms,
        _ => None,
    };
    let e = FindingEvent {
        seq: f.events.len() as i64 + 1,
        kind,
        at_ms: now,
        by: who.name.clone(),
        by_token: Some(who.id),
        note: b.note,
        photos: b.photos,
        deadline_ms,
        source: source.map(str::to_owned),
    };
    if !st.store.append_event(&f.id, &e).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "finding {} changed meanwhile; read it again and retry",
                f.id
            ),
        ));
    }
    tracing::info!(finding = %f.id, kind = kind.as_str(), by = %who.name, "finding changed");
    let mut f = f;
    f.events.push(e);
    Ok(view(&f, now, st.shared.current().timezone))
}

fn deadline_of(b: &ChangeBody) -> Result<Option<i64>, ApiError> {
    b.deadline
        .as_deref()
        .map(|s| time("deadline", s))
        .transpose()
}

/// `POST /api/v1/findings/{id}/rectify` (company): the fix, with a note and photos.
pub(crate) async fn rectify(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(id): ApiPath,
    ApiBody(b): ApiBody,
) -> Result<Response, ApiError> {
    let b: ChangeBody = body(&b)?;
    Ok(Json(rectify_finding(&st, &who, &id, b).await?).into_response())
}

/// A company's fix of finding `id`, as `POST /api/v1/findings/{id}/rectify` takes it.
pub(crate) async fn rectify_finding(
    st: &ApiState,
    who: &TokenRow,
    id: &str,
    b: ChangeBody,
) -> Result<Value, ApiError> {
    let f = visible(st, who, id).await?;
    if b.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return Err(unprocessable("note", "say what was fixed"));
    }
    apply(st, who, f, Change::Rectify, b, None).await
}

/// `POST /api/v1/findings/{id}/recheck` (inspector): `result` closed or reopened.
pub(crate) async fn recheck(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(id): ApiPath,
    ApiBody(b): ApiBody,
) -> Result<Response, ApiError> {
    let b: ChangeBody = body(&b)?;
    Ok(Json(recheck_finding(&st, &who, &id, b).await?).into_response())
}

/// An inspector's recheck of finding `id` (`result` closed or reopened), as
/// `POST /api/v1/findings/{id}/recheck` takes it.
pub(crate) async fn recheck_finding(
    st: &ApiState,
    who: &TokenRow,
    id: &str,
    b: ChangeBody,
) -> Result<Value, ApiError> {
    let f = visible(st, who, id).await?;
    let change = match b.result.as_deref() {
        Some("closed") => Change::Close,
        Some("reopened") => Change::Reopen {
            deadline_ms: deadline_of(&b)?,
        },
        other => {
            return Err(unprocessable(
                "result",
                format!("{other:?}: use closed or reopened"),
            ))
        }
    };
    apply(st, who, f, change, b, None).await
}

/// `POST /api/v1/findings/{id}/deadline` (inspector): a new deadline, in the future.
pub(crate) async fn deadline(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(id): ApiPath,
    ApiBody(b): ApiBody,
) -> Result<Response, ApiError> {
    let b: ChangeBody = body(&b)?;
    Ok(Json(deadline_finding(&st, &who, &id, b).await?).into_response())
}

/// A new deadline for finding `id`, as `POST /api/v1/findings/{id}/deadline` takes it.
pub(crate) async fn deadline_finding(
    st: &ApiState,
    who: &TokenRow,
    id: &str,
    b: ChangeBody,
) -> Result<Value, ApiError> {
    let f = visible(st, who, id).await?;
    let d = deadline_of(&b)?
        .ok_or_else(|| unprocessable("deadline", "give the new deadline (RFC 3339)"))?;
    apply(st, who, f, Change::Deadline { deadline_ms: d }, b, None).await
}

/// `POST /api/v1/findings/{id}/confirm` (inspector): a proposal handed over, with the item's
/// default deadline from now or the one given.
pub(crate) async fn confirm(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(id): ApiPath,
    ApiBody(b): ApiBody,
) -> Result<Response, ApiError> {
    let b: ChangeBody = if b.is_empty() {
        ChangeBody::default()
    } else {
        body(&b)?
    };
    Ok(Json(confirm_finding(&st, &who, &id, b).await?).into_response())
}

/// A proposal `id` handed over, as `POST /api/v1/findings/{id}/confirm` does it.
pub(crate) async fn confirm_finding(
    st: &ApiState,
    who: &TokenRow,
    id: &str,
    b: ChangeBody,
) -> Result<Value, ApiError> {
    let f = visible(st, who, id).await?;
    let default = st
        .shared
        .inspect()
        .config
        .item(&f.item)
        .map_or(3 * 86_400_000, |i| i.deadline.as_millis() as i64);
    let d = deadline_of(&b)?.unwrap_or(st.clock.now().timestamp_millis() + default);
    apply(st, who, f, Change::Confirm { deadline_ms: d }, b, None).await
}

/// `POST /api/v1/findings/{id}/dismiss` (inspector): a proposal not handed over.
pub(crate) async fn dismiss(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(id): ApiPath,
    ApiBody(b): ApiBody,
) -> Result<Response, ApiError> {
    let b: ChangeBody = if b.is_empty() {
        ChangeBody::default()
    } else {
        body(&b)?
    };
    Ok(Json(dismiss_finding(&st, &who, &id, b).await?).into_response())
}

/// A proposal `id` not handed over, as `POST /api/v1/findings/{id}/dismiss` does it.
pub(crate) async fn dismiss_finding(
    st: &ApiState,
    who: &TokenRow,
    id: &str,
    b: ChangeBody,
) -> Result<Value, ApiError> {
    let f = visible(st, who, id).await?;
    apply(st, who, f, Change::Dismiss, b, None).await
}

/// Local day `d`'s bounds in `tz`.
fn day_bounds(d: NaiveDate, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
    let (from, _) = crate::core::audit::sample::week_bounds(d, tz);
    let (to, _) = crate::core::audit::sample::week_bounds(d + Duration::days(1), tz);
    (from, to)
}

/// Whether `display` was online and met its cadence on local day `d`.
async fn met_on(
    st: &ApiState,
    display: &str,
    d: NaiveDate,
    tz: Tz,
) -> Result<(bool, f64), ApiError> {
    let c = st.shared.current();
    let (from, to) = day_bounds(d, tz);
    let rows = reports::compliance_rows(
        &st.store,
        &c,
        (from, to),
        &|x| x.id.as_str() == display,
        Some(&[display.to_owned()][..]),
        st.factors,
    )
    .await?;
    Ok(rows.first().map_or((false, 0.0), |r| {
        (r.met && r.online_seconds > 0.0, r.online_seconds)
    }))
}

/// `POST /api/v1/findings/{id}/recheck-from-receipts` (inspector): closes a rectified
/// finding on a display that met its cadence on each of the `recheck_days` days after the
/// fix; otherwise 409 naming the days that fall short or have not ended.
pub(crate) async fn recheck_from_receipts(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    Ok(Json(recheck_from_receipts_finding(&st, &who, &id).await?).into_response())
}

/// Finding `id` closed from its display's receipts, as
/// `POST /api/v1/findings/{id}/recheck-from-receipts` does it.
pub(crate) async fn recheck_from_receipts_finding(
    st: &ApiState,
    who: &TokenRow,
    id: &str,
) -> Result<Value, ApiError> {
    let f = visible(st, who, id).await?;
    let tz = st.shared.current().timezone;
    let Some(display) = f.display.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "finding {id} is on unit {} without a display: recheck it in person",
                f.unit
            ),
        ));
    };
    let Some(fix) = f
        .last_rectification()
        .filter(|_| f.state() == FindingState::Rectified)
    else {
        return Err(Refusal::WrongState(id.to_owned(), f.state().as_str(), "rectified").into());
    };
    let fix_day = DateTime::from_timestamp_millis(fix.at_ms)
        .unwrap_or_default()
        .with_timezone(&tz)
        .date_naive();
    let now = st.clock.now();
    let mut short = Vec::new();
    let mut days = Vec::new();
    let recheck_days = st.shared.inspect().config.recheck_days;
    for n in 1..=i64::from(recheck_days) {
        let d = fix_day + Duration::days(n);
        if day_bounds(d, tz).1 > now {
            short.push(format!("{d} has not ended"));
            continue;
        }
        let (met, online) = met_on(st, &display, d, tz).await?;
        if !met {
            short.push(format!(
                "{d}: {} (online {online:.0} s)",
                if online > 0.0 {
                    "missed its cadence"
                } else {
                    "never online"
                }
            ));
        }
        days.push(d.to_string());
    }
    if !short.is_empty() {
        return Err(ApiError::new(StatusCode::CONFLICT, format!("display {display} has not met its cadence on each of the {} days after the fix: {}", recheck_days, short.join("; "))));
    }
    let note = format!("display {display} met its cadence on {}", days.join(", "));
    apply(
        st,
        who,
        f,
        Change::Close,
        ChangeBody {
            note: Some(note),
            ..Default::default()
        },
        Some("receipts"),
    )
    .await
}

/// A proposed finding on `u`, whose display missed its cadence on `day` as `r` says.
fn proposal(
    r: &reports::ComplianceRow,
    u: &crate::core::inspect::Unit,
    item: &str,
    who: &TokenRow,
    at_ms: i64,
    day: &str,
) -> Finding {
    let note = format!(
        "{day}: online {:.0} s, {} plays, longest gap {:.0} s (target every {:.0} s)",
        r.online_seconds, r.plays, r.longest_gap_s, r.interval_s
    );
    Finding {
        id: ulid::Ulid::new().to_string(),
        unit: u.id.clone(),
        company: u.company.clone(),
        item: item.to_owned(),
        inspection: None,
        display: Some(r.device.clone()),
        events: vec![FindingEvent {
            seq: 1,
            kind: EventKind::Proposed,
            at_ms,
            by: who.name.clone(),
            by_token: Some(who.id),
            note: Some(note),
            photos: vec![],
            deadline_ms: None,
            source: Some("receipts".into()),
        }],
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProposeBody {
    /// A local date, `2026-11-27`.
    day: String,
}

/// `POST /api/v1/findings/propose` (inspector): every display of a unit that was online on
/// `day` without meeting its cadence, and has no finding on its ads still open, becomes a
/// proposed finding, which an inspector confirms (then it is handed over) or dismisses.
pub(crate) async fn propose(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiBody(b): ApiBody,
) -> Result<Response, ApiError> {
    let p: ProposeBody = body(&b)?;
    let out = propose_findings(&st, &who, &p.day).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// The proposals from receipts for local day `day`, as `POST /api/v1/findings/propose`
/// makes them; its answer.
pub(crate) async fn propose_findings(
    st: &ApiState,
    who: &TokenRow,
    day: &str,
) -> Result<Value, ApiError> {
    let c = st.shared.current();
    let tz = c.timezone;
    let day = NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|_| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "day",
            format!("{day:?} is not a date like 2026-11-27"),
        )
    })?;
    let (from, to) = day_bounds(day, tz);
    let now = st.clock.now();
    if to > now {
        return Err(unprocessable("day", format!("{day} has not ended")));
    }
    let setup = st.shared.inspect();
    let item = setup
        .config
        .item("ads")
        .or(setup.config.items.first())
        .map(|i| i.id.clone())
        .unwrap_or_else(|| "ads".into());
    let units = &setup.units;
    let rows = reports::compliance_rows(
        &st.store,
        &c,
        (from, to),
        &|d| units.of_display(d.id.as_str()).is_some(),
        None,
        st.factors,
    )
    .await?;
    let existing = st.store.findings(None).await?;
    let (at_ms, day_s) = (now.timestamp_millis(), day.to_string());
    let new: Vec<Finding> = rows
        .iter()
        .filter(|r| r.online_seconds > 0.0 && !r.met)
        .filter_map(|r| {
            let u = units.of_display(&r.device)?;
            let pending = existing.iter().any(|f| {
                f.unit == u.id
                    && f.item == item
                    && !matches!(f.state(), FindingState::Closed | FindingState::Dismissed)
            });
            (!pending).then(|| proposal(r, u, &item, who, at_ms, &day_s))
        })
        .collect();
    st.store.add_findings(&new).await?;
    let rows: Vec<Value> = new
        .iter()
        .map(|f| view(f, now.timestamp_millis(), tz))
        .collect();
    Ok(json!({"day": day.to_string(), "rows": rows}))
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScoreParams {
    pub(crate) month: Option<String>,
    pub(crate) company: Option<String>,
    pub(crate) format: Option<String>,
}

/// What `GET /api/v1/scorecards` answers: the JSON, and the cards it was made of.
pub(crate) struct ScoreAnswer {
    pub(crate) json: Value,
    pub(crate) month: String,
    pub(crate) cards: Vec<scorecard::Scorecard>,
}

/// The month asked (default: the one `now` is in), and its bounds in `tz`.
fn month_bounds(
    month: Option<&str>,
    now: DateTime<Utc>,
    tz: Tz,
) -> Result<(NaiveDate, DateTime<Utc>, DateTime<Utc>), ApiError> {
    let month = match month.filter(|m| !m.is_empty()) {
        Some(m) => parse_month(m)?,
        None => now
            .with_timezone(&tz)
            .date_naive()
            .with_day(1)
            .unwrap_or_default(),
    };
    let next = if month.month() == 12 {
        NaiveDate::from_ymd_opt(month.year() + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(month.year(), month.month() + 1, 1)
    }
    .unwrap_or(month);
    Ok((month, day_bounds(month, tz).0, day_bounds(next, tz).0))
}

/// Every company of the units, in order, or `only` (a 404 when no unit has it).
fn companies_asked(
    units: &crate::core::inspect::Units,
    only: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    let mut companies: Vec<String> = units.list.iter().map(|u| u.company.clone()).collect();
    companies.sort();
    companies.dedup();
    if let Some(o) = only {
        if !companies.iter().any(|c| c == o) {
            return Err(ApiError::field(
                StatusCode::NOT_FOUND,
                "company",
                format!("no unit has company {o:?}"),
            ));
        }
        companies.retain(|x| x == o);
    }
    Ok(companies)
}

/// "2026-11" -> its first day.
fn parse_month(s: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").map_err(|_| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "month",
            format!("{s:?}: a month looks like 2026-11"),
        )
    })
}

/// `GET /api/v1/scorecards?month=&company=`: one row per company (a company's token: its
/// own), as JSON, CSV or XLSX.
pub(crate) async fn scorecards(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<ScoreParams>,
) -> Result<Response, ApiError> {
    let a = scorecard_limited(&st, &who, &p).await?;
    match crate::api::download::wanted(&headers, p.format.as_deref())? {
        None => Ok(Json(a.json).into_response()),
        Some(d) => scorecard_download(&st, a, d).await,
    }
}

/// `scorecard_answer` among the heavy requests: a month's compliance reads the month's
/// receipts, so it waits for a permit like every other report.
pub(crate) async fn scorecard_limited(
    st: &Arc<ApiState>,
    who: &TokenRow,
    p: &ScoreParams,
) -> Result<ScoreAnswer, ApiError> {
    let (st2, who, p) = (st.clone(), who.clone(), p.clone());
    st.heavy
        .run_async(async move { scorecard_answer(&st2, &who, &p).await })
        .await?
}

/// The scorecards `p` asks of `who` (a company's token: its own only).
pub(crate) async fn scorecard_answer(
    st: &ApiState,
    who: &TokenRow,
    p: &ScoreParams,
) -> Result<ScoreAnswer, ApiError> {
    let c = st.shared.current();
    let tz = c.timezone;
    let now = st.clock.now();
    let (month, from, to) = month_bounds(p.month.as_deref(), now, tz)?;
    let mine = scope(st, who).await?;
    if let (Some(m), Some(asked)) = (&mine, &p.company) {
        if m != asked {
            return Err(ApiError::field(
                StatusCode::NOT_FOUND,
                "company",
                format!("a company's token sees its own scorecard only ({m:?})"),
            ));
        }
    }
    let only = mine.or(p.company.clone());
    let setup = st.shared.inspect();
    let units = &setup.units;
    let companies = companies_asked(units, only.as_deref())?;
    let visits = st
        .store
        .inspections_between(from.timestamp_millis(), to.timestamp_millis())
        .await?;
    let findings = st.store.findings(only.as_deref()).await?;
    let end = to.min(now);
    let compliance = reports::compliance_rows(
        &st.store,
        &c,
        (from, end.max(from)),
        &|d| units.of_display(d.id.as_str()).is_some(),
        None,
        st.factors,
    )
    .await?;
    let cards: Vec<scorecard::Scorecard> = companies
        .iter()
        .map(|co| {
            let met: Vec<(String, bool)> = compliance
                .iter()
                .filter(|r| {
                    units
                        .of_display(&r.device)
                        .is_some_and(|u| &u.company == co)
                })
                .map(|r| (r.device.clone(), r.met))
                .collect();
            scorecard::scorecard(&scorecard::Inputs {
                company: co,
                units,
                inspections: &visits,
                findings: &findings,
                from_ms: from.timestamp_millis(),
                to_ms: to.timestamp_millis(),
                now_ms: now.timestamp_millis(),
                displays_met: &met,
            })
        })
        .collect();
    let month_s = format!("{:04}-{:02}", month.year(), month.month());
    let json = json!({"month": month_s, "company": only, "from": t(from.timestamp_millis(), tz), "to": t(to.timestamp_millis(), tz), "rows": cards});
    Ok(ScoreAnswer {
        json,
        month: month_s,
        cards,
    })
}

/// The scorecards of `a` as a CSV or XLSX download, streamed as every report's.
pub(crate) async fn scorecard_download(
    st: &ApiState,
    a: ScoreAnswer,
    d: reports::Download,
) -> Result<Response, ApiError> {
    let tz = st.shared.current().timezone;
    let sheet = export::Sheet::new("scorecards", &COLUMNS, &a.json, tz);
    let rows = score_rows(&a.month, &a.cards);
    crate::api::download::rows_download(
        &st.heavy,
        sheet,
        rows,
        |r: &Value| r.clone(),
        Vec::new(),
        d,
    )
    .await
}

const COLUMNS: [export::Column; 12] = [
    export::Column::new("month", export::Kind::Text),
    export::Column::new("company", export::Kind::Text),
    export::Column::new("item", export::Kind::Text),
    export::Column::new("units", export::Kind::Integer),
    export::Column::new("inspections", export::Kind::Integer),
    export::Column::new("findings", export::Kind::Integer),
    export::Column::new("fixed_on_time", export::Kind::Integer),
    export::Column::new("overdue", export::Kind::Integer),
    export::Column::new("repeat", export::Kind::Integer),
    export::Column::new("open", export::Kind::Integer),
    export::Column::new("displays", export::Kind::Integer),
    export::Column::new("displays_met", export::Kind::Integer),
];

/// A download's rows: per company one with item `all`, then one per item with findings.
fn score_rows(month: &str, cards: &[scorecard::Scorecard]) -> Vec<Value> {
    let mut out = Vec::new();
    for s in cards {
        let row = |item: &str, c: &scorecard::Counts| {
            json!({
                "month": month, "company": s.company, "item": item, "units": s.units, "inspections": s.inspections,
                "findings": c.findings, "fixed_on_time": c.fixed_on_time, "overdue": c.overdue, "repeat": c.repeat, "open": c.open,
                "displays": s.displays, "displays_met": s.displays_met,
            })
        };
        out.push(row("all", &s.counts));
        for (item, c) in &s.findings_by_item {
            out.push(row(item, c));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::inspect::units::{Kind, Unit, Units};

    fn finding(id: &str, unit: &str, events: Vec<(EventKind, i64, Option<i64>)>) -> Finding {
        Finding {
            id: id.into(),
            unit: unit.into(),
            company: "city-bus".into(),
            item: "ads".into(),
            inspection: None,
            display: None,
            events: events
                .into_iter()
                .enumerate()
                .map(|(i, (kind, at_ms, deadline_ms))| FindingEvent {
                    seq: i as i64 + 1,
                    kind,
                    at_ms,
                    by: "ins".into(),
                    by_token: None,
                    note: None,
                    photos: vec![],
                    deadline_ms,
                    source: None,
                })
                .collect(),
        }
    }

    #[test]
    fn findings_are_counted_by_state_and_kind_an_open_one_past_its_deadline_as_overdue() {
        let unit = |id: &str, kind| Unit {
            id: id.into(),
            kind,
            company: "city-bus".into(),
            display: None,
            attrs: Default::default(),
        };
        let units = Units::new(vec![unit("b1", Kind::Bus), unit("s1", Kind::Station)]);
        let now = 10_000;
        let found = [
            finding("late", "b1", vec![(EventKind::Opened, 0, Some(5_000))]),
            finding("fresh", "b1", vec![(EventKind::Opened, 0, Some(20_000))]),
            finding(
                "fixed",
                "s1",
                vec![
                    (EventKind::Opened, 0, Some(5_000)),
                    (EventKind::Rectified, 4_000, None),
                ],
            ),
            finding("gone", "nowhere", vec![(EventKind::Proposed, 0, None)]),
        ];
        let c = count_by_state(&found, &units, now);
        let n = |s: &str, k: &str| c.get(&(s.to_owned(), k.to_owned())).copied();
        assert_eq!(n("overdue", "bus"), Some(1));
        assert_eq!(n("open", "bus"), Some(1));
        assert_eq!(n("rectified", "station"), Some(1));
        assert_eq!(n("proposed", "unknown"), Some(1));
        assert_eq!(
            n("open", "taxi"),
            Some(0),
            "every kind has its open and overdue series"
        );
        assert_eq!(n("overdue", "stop"), Some(0));
        assert_eq!(c.values().sum::<u64>(), 4);
    }
}
