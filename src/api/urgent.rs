//! `/api/v1/urgent`: an admin sends an urgent message at once; an operator's request waits
//! for a second operator (or an admin) to approve it; either may cancel one; operators and
//! auditors list them.
//!
//! Owns: the routes' bodies and status codes. The checks are `core::urgent`'s, the rows the
//! store's, the sending `daemon::Urgent`'s.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::DateTime;
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{error, info, instrument};

use super::{ApiBody, ApiError, ApiPath, ApiState, Detail};
use crate::core::approval::Approver;
use crate::core::catalog;
use crate::core::urgent::{self, FieldProblem, Reach, Targets, UrgentMessage, UrgentRefusal};
use crate::daemon::urgent::Sent;
use crate::store::{Role, TokenRow, UrgentStore, UrgentStoreError};

/// The body of `POST /api/v1/urgent`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    text: String,
    #[serde(default)]
    feeds: Vec<String>,
    #[serde(default)]
    devices: Vec<String>,
    /// RFC 3339.
    expires_at: Option<String>,
    /// A duration from now: `30m`, `2h`.
    expires_in: Option<String>,
}

impl From<UrgentRefusal> for ApiError {
    fn from(e: UrgentRefusal) -> Self {
        let status = match e {
            UrgentRefusal::NotFound(_) => StatusCode::NOT_FOUND,
            UrgentRefusal::OwnRequest(..) => StatusCode::FORBIDDEN,
            UrgentRefusal::NotPending(..) | UrgentRefusal::Closed(..) => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<UrgentStoreError> for ApiError {
    fn from(e: UrgentStoreError) -> Self {
        match e {
            UrgentStoreError::Refused(r) => r.into(),
            UrgentStoreError::Store(s) => s.into(),
        }
    }
}

/// A message as the API shows it, times in the deployment's zone.
fn view(m: &UrgentMessage, now_ms: i64, tz: Tz) -> Value {
    let t = |ms: Option<i64>| {
        ms.and_then(DateTime::from_timestamp_millis)
            .map(|d| d.with_timezone(&tz).to_rfc3339())
    };
    json!({
        "id": m.id, "text": m.text,
        "feeds": m.targets.feeds, "devices": m.targets.devices,
        "expires_at": t(Some(m.expires_ms)),
        "status": m.status(now_ms).as_str(),
        "requested_by": m.requested_by, "requested_at": t(Some(m.requested_ms)),
        "approved_by": m.approved_by, "approved_at": t(m.approved_ms),
        "cancelled_by": m.cancelled_by, "cancelled_at": t(m.cancelled_ms),
    })
}

fn unprocessable(problems: Vec<FieldProblem>, stored: bool) -> ApiError {
    let n = problems.len();
    let tail = if stored {
        "it stays pending and nothing was published"
    } else {
        "nothing was stored or published"
    };
    ApiError {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        error: format!("the urgent message has {n} problems; {tail}"),
        details: problems
            .into_iter()
            .map(|p| Detail {
                field: Some(p.field),
                line: None,
                message: p.message,
            })
            .collect(),
    }
}

/// The expiry a body asks for, in ms: exactly one of `expires_at` and `expires_in`.
fn expiry(b: &SendBody, now_ms: i64) -> Result<i64, ApiError> {
    let bad = |field: &str, m: String| ApiError::field(StatusCode::BAD_REQUEST, field, m);
    match (&b.expires_at, &b.expires_in) {
        (Some(at), None) => DateTime::parse_from_rfc3339(at.trim())
            .map(|t| t.timestamp_millis())
            .map_err(|e| {
                bad(
                    "expires_at",
                    format!("{at:?} is not an RFC 3339 time ({e}), e.g. 2026-12-01T18:00:00+08:00"),
                )
            }),
        (None, Some(d)) => {
            let d = catalog::parse_duration(d).map_err(|e| bad("expires_in", e))?;
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            Ok(now_ms.saturating_add(ms))
        }
        (Some(_), Some(_)) => Err(bad(
            "expires_at",
            "give expires_at or expires_in, not both".into(),
        )),
        (None, None) => Err(bad(
            "expires_at",
            "required: expires_at (RFC 3339) or expires_in (e.g. \"30m\")".into(),
        )),
    }
}

/// The daemon's sender, or 503 when this API runs without a broker session.
fn sender(st: &ApiState) -> Result<&crate::daemon::Urgent, ApiError> {
    st.urgent.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this API has no MQTT session to send urgent messages on",
        )
    })
}

/// Sends an approved message; a failure after the approval is written says so.
async fn publish(st: &ApiState, m: &UrgentMessage, reach: &Reach) -> Result<Sent, ApiError> {
    let sender = sender(st)?;
    sender.send(m, reach).await.map_err(|e| {
        error!(id = %m.id, error = %e, "an approved urgent message could not be sent");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "urgent message {} is approved but could not be sent (the database or broker failed); cancel it and send it again",
                m.id
            ),
        )
    })
}

fn sent_answer(
    code: StatusCode,
    m: &UrgentMessage,
    sent: Option<Sent>,
    now_ms: i64,
    tz: Tz,
) -> Response {
    let mut v = view(m, now_ms, tz);
    if let Some(s) = sent {
        v["displays"] = json!(s.displays);
        v["plays"] = json!(s.plays);
    }
    (code, Json(v)).into_response()
}

#[instrument(skip_all)]
pub(super) async fn send(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
    let b: SendBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "body",
            format!("not the JSON of an urgent message: {e}"),
        )
    })?;
    let now_ms = st.clock.now().timestamp_millis();
    let expires_ms = expiry(&b, now_ms)?;
    let catalog = st.shared.current();
    let targets = Targets {
        feeds: b.feeds,
        devices: b.devices,
    };
    let reach = urgent::check(&b.text, &targets, expires_ms, &catalog, now_ms)
        .map_err(|p| unprocessable(p, false))?;
    let admin = who.role == Role::Admin;
    if admin {
        sender(&st)?;
    }
    let m = UrgentMessage {
        id: ulid::Ulid::new().to_string(),
        text: b.text,
        targets,
        expires_ms,
        requested_by: who.name.clone(),
        requested_token: Some(who.id),
        requested_ms: now_ms,
        approved_by: admin.then(|| who.name.clone()),
        approved_token: admin.then_some(who.id),
        approved_ms: admin.then_some(now_ms),
        cancelled_by: None,
        cancelled_ms: None,
    };
    st.store.add_urgent(&m).await?;
    let tz = catalog.timezone;
    if !admin {
        info!(id = %m.id, by = %who.name, "urgent message requested; waiting for a second operator");
        return Ok(sent_answer(StatusCode::ACCEPTED, &m, None, now_ms, tz));
    }
    let sent = publish(&st, &m, &reach).await?;
    Ok(sent_answer(StatusCode::CREATED, &m, Some(sent), now_ms, tz))
}

#[instrument(skip_all)]
pub(super) async fn approve(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    sender(&st)?;
    let now_ms = st.clock.now().timestamp_millis();
    let by = Approver {
        token: Some(who.id),
        name: &who.name,
        admin: who.role == Role::Admin,
    };
    let found = st.store.urgent(&id).await?;
    urgent::approvable(&id, found.as_ref(), &by, now_ms)?;
    let Some(found) = found else {
        return Err(UrgentRefusal::NotFound(id).into());
    };
    // Checked again as things are now: a display or feed may have gone, time has passed.
    let catalog = st.shared.current();
    let reach = urgent::check(
        &found.text,
        &found.targets,
        found.expires_ms,
        &catalog,
        now_ms,
    )
    .map_err(|p| unprocessable(p, true))?;
    let m = st.store.approve_urgent(&id, &by, now_ms).await?;
    let sent = publish(&st, &m, &reach).await?;
    Ok(sent_answer(
        StatusCode::OK,
        &m,
        Some(sent),
        now_ms,
        catalog.timezone,
    ))
}

#[instrument(skip_all)]
pub(super) async fn cancel(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    let now_ms = st.clock.now().timestamp_millis();
    let m = st.store.cancel_urgent(&id, &who.name, now_ms).await?;
    // The rotation resumes at the feeds' next slot, replacing the message on screen.
    st.shared.release(&id);
    info!(id = %m.id, by = %who.name, "urgent message cancelled");
    Ok(sent_answer(
        StatusCode::OK,
        &m,
        None,
        now_ms,
        st.shared.current().timezone,
    ))
}

pub(super) async fn list(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let now_ms = st.clock.now().timestamp_millis();
    let tz = st.shared.current().timezone;
    let rows: Vec<Value> = st
        .store
        .urgent_messages(None)
        .await?
        .iter()
        .map(|m| view(m, now_ms, tz))
        .collect();
    Ok(Json(json!({ "rows": rows })).into_response())
}
