//! `/api/v1/urgent`: an admin sends an urgent message at once; an operator's request waits
//! for a second operator (or an admin) to approve it; either may cancel one; operators and
//! auditors list them.
//!
//! Owns: the routes' bodies and status codes. The actions are `daemon::Urgent`'s (which the
//! console calls too), the rules `core::urgent`'s.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::DateTime;
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::instrument;

use super::{ApiBody, ApiError, ApiPath, ApiState, Detail};
use crate::core::catalog;
use crate::core::urgent::{FieldProblem, Targets, UrgentMessage, UrgentRefusal};
use crate::daemon::urgent::{Done, UrgentError};
use crate::store::{TokenRow, UrgentStore, UrgentStoreError};

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

impl From<UrgentError> for ApiError {
    fn from(e: UrgentError) -> Self {
        match e {
            UrgentError::Invalid { problems, stored } => unprocessable(problems, stored),
            UrgentError::Refused(r) => r.into(),
            UrgentError::Store(s) => s.into(),
            e @ UrgentError::Forbidden(_) => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            UrgentError::NotSent { id, .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "urgent message {id} is approved but could not be sent (the database or broker failed); cancel it and send it again"
                ),
            ),
        }
    }
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
fn expiry(at: &Option<String>, within: &Option<String>, now_ms: i64) -> Result<i64, ApiError> {
    let bad = |field: &str, m: String| ApiError::field(StatusCode::BAD_REQUEST, field, m);
    // An empty field is refused as what it is (not a time), not read as absent: the API
    // document says each is a date-time or a duration when given. The console's form,
    // which always sends both, drops the empty one itself.
    match (at.as_ref(), within.as_ref()) {
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

fn answer(code: StatusCode, d: &Done, now_ms: i64, tz: Tz) -> Response {
    let mut v = view(&d.message, now_ms, tz);
    if let Some(s) = d.sent {
        v["displays"] = json!(s.displays);
        v["plays"] = json!(s.plays);
    }
    (code, Json(v)).into_response()
}

/// `POST /api/v1/urgent`'s action, for the route and the console alike: the expiry read
/// from `expires_at` (RFC 3339) or `expires_in` (`30m`), then `Urgent::submit`.
pub async fn submit(
    st: &ApiState,
    who: &TokenRow,
    text: String,
    targets: Targets,
    expires_at: Option<String>,
    expires_in: Option<String>,
) -> Result<Done, ApiError> {
    let sender = sender(st)?;
    let now_ms = st.clock.now().timestamp_millis();
    let expires_ms = expiry(&expires_at, &expires_in, now_ms)?;
    Ok(sender.submit(who, text, targets, expires_ms).await?)
}

/// `POST /api/v1/urgent/{id}/approve`'s action (never one's own request).
pub async fn approve_message(st: &ApiState, id: &str, who: &TokenRow) -> Result<Done, ApiError> {
    Ok(sender(st)?.approve(id, who).await?)
}

/// `POST /api/v1/urgent/{id}/cancel`'s action.
pub async fn cancel_message(
    st: &ApiState,
    id: &str,
    who: &TokenRow,
) -> Result<UrgentMessage, ApiError> {
    Ok(sender(st)?.cancel(id, who).await?)
}

/// `GET /api/v1/urgent`'s rows, newest as the store orders them.
pub async fn messages(st: &ApiState) -> Result<Vec<UrgentMessage>, ApiError> {
    Ok(st.store.urgent_messages(None).await?)
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
    let targets = Targets {
        feeds: b.feeds,
        devices: b.devices,
    };
    let done = submit(&st, &who, b.text, targets, b.expires_at, b.expires_in).await?;
    let code = if done.sent.is_some() {
        StatusCode::CREATED
    } else {
        StatusCode::ACCEPTED
    };
    let now_ms = st.clock.now().timestamp_millis();
    Ok(answer(code, &done, now_ms, st.shared.current().timezone))
}

#[instrument(skip_all)]
pub(super) async fn approve(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    let done = approve_message(&st, &id, &who).await?;
    let now_ms = st.clock.now().timestamp_millis();
    Ok(answer(
        StatusCode::OK,
        &done,
        now_ms,
        st.shared.current().timezone,
    ))
}

#[instrument(skip_all)]
pub(super) async fn cancel(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    let message = cancel_message(&st, &id, &who).await?;
    let now_ms = st.clock.now().timestamp_millis();
    let done = Done {
        message,
        sent: None,
    };
    Ok(answer(
        StatusCode::OK,
        &done,
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
