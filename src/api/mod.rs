//! The HTTP API of the contract (`/api/v1/...`, `/healthz`, `/metrics`): tokens and roles,
//! the ad-set lifecycle, inventory, and the audit reports in JSON or CSV.
//!
//! Owns: routing, authentication, status codes and error bodies. Must not touch SQL (the
//! store does) or report arithmetic (`reports` and `audit` do). Errors name the field at
//! fault but never leak SQL or paths.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tracing::{instrument, warn};

use crate::core::audit::{self, compliance, PlaysParams, PlaysQuery, QueryError};
use crate::core::catalog::{self, AdSetContext, Problem};
use crate::daemon::{self, Clock, Shared};
use crate::reports::{self, ReportError};
use crate::store::{
    AdSetHistory, ApiStore, ApproveError, Db, Revision, Role, Store, StoreError, TokenRow,
};

pub mod openapi;

/// Largest ad-set upload.
pub const MAX_BODY: usize = 1024 * 1024;

/// What every handler sees.
pub struct ApiState {
    pub store: Db,
    pub shared: Shared,
    pub clock: Arc<dyn Clock>,
    pub factors: compliance::Factors,
}

/// One item of an error body: which field, where, what.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Detail {
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub message: String,
}

/// An error answer: `{"error": "...", "details": [...]}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub details: Vec<Detail>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            details: Vec::new(),
        }
    }
    fn field(status: StatusCode, field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError {
            status,
            error: format!("{field}: {message}"),
            details: vec![Detail {
                field: Some(field.to_owned()),
                line: None,
                message,
            }],
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.error, "details": self.details})),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::Refused(refused) = e {
            return refused.into();
        }
        warn!(error = %e, "database error in a request");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the database is unavailable; try again",
        )
    }
}

/// A refused approval: the caller's request, not the database, is at fault.
impl From<ApproveError> for ApiError {
    fn from(e: ApproveError) -> Self {
        match e {
            ApproveError::NotFound(_) => {
                ApiError::field(StatusCode::NOT_FOUND, "id", e.to_string())
            }
            ApproveError::OwnUpload(..) => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
            ApproveError::Retired(_) | ApproveError::AlreadyApproved(..) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        ApiError::field(StatusCode::BAD_REQUEST, e.field, e.message)
    }
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Query(q) => q.into(),
            ReportError::Store(s) => s.into(),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        warn!(error = %e, "internal error in a request");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

/// The SHA-256 of a token, as stored.
pub fn token_hash(token: &str) -> String {
    let d = Sha256::digest(token.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut b);
    format!(
        "cvc_{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// Who is calling, checked against the roles a route allows (admin may do all).
async fn caller(
    st: &ApiState,
    headers: &HeaderMap,
    allowed: &[Role],
) -> Result<TokenRow, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "missing bearer token"))?;
    let row = st
        .store
        .token_by_hash(&token_hash(token))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown or revoked token"))?;
    if row.role == Role::Admin || allowed.contains(&row.role) {
        Ok(row)
    } else {
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "this needs the role {} (the token has {})",
                names.join(" or "),
                row.role.as_str()
            ),
        ))
    }
}

/// The router, state included; `serve` binds it.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/adsets", post(upload).get(list_adsets))
        .route("/api/v1/adsets/{id}", get(show_adset))
        .route("/api/v1/adsets/{id}/approve", post(approve))
        .route("/api/v1/adsets/{id}/retire", post(retire))
        .route("/api/v1/devices", get(devices))
        .route("/api/v1/feeds", get(feeds))
        .route("/api/v1/audit/plays", get(audit_plays))
        .route("/api/v1/audit/compliance", get(audit_compliance))
        .route("/api/v1/audit/sample", get(audit_sample))
        .route("/api/v1/audit/reconcile", get(audit_reconcile))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves until `shutdown`, then drains requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// How long `/healthz` waits for the database to answer a trivial query.
const HEALTH_PING: std::time::Duration = std::time::Duration::from_secs(1);

async fn healthz(State(st): State<Arc<ApiState>>) -> Response {
    let m = &st.shared.metrics();
    let broker = m.broker_connected.load(Ordering::Relaxed);
    // The last write's outcome says nothing while no write ends (a pool waiting 5 s for a
    // connection to a server that is gone); a round trip now does.
    let answers = tokio::time::timeout(HEALTH_PING, st.store.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    let database = answers && m.database_healthy();
    let ok = broker && database;
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "broker": if broker { "connected" } else { "disconnected" },
        "database": if database { "ok" } else { "failing: receipts are held unacknowledged until it returns" },
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn metrics(State(st): State<Arc<ApiState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.shared.metrics().render(),
    )
        .into_response()
}

fn problems_to_details(problems: &[Problem]) -> Vec<Detail> {
    problems
        .iter()
        .filter(|p| p.is_error())
        .map(|p| Detail {
            field: p.field.clone(),
            line: p.line,
            message: p.message.clone(),
        })
        .collect()
}

#[instrument(skip_all)]
async fn upload(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers, &[Role::Operator]).await?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json = match ctype.as_str() {
        "application/json" => true,
        "application/toml" | "text/toml" | "application/x-toml" => false,
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type {other:?}: send application/toml or application/json"),
            ))
        }
    };
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "body", format!("not UTF-8: {e}")))?;
    let current = st.shared.current();
    let (parsed, problems) =
        catalog::parse_adset_checked(text, json, "upload", &AdSetContext::of(&current));
    let Some(adset) = parsed.filter(|_| !problems.iter().any(Problem::is_error)) else {
        let details = problems_to_details(&problems);
        return Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: format!(
                "the ad set has {} problems; nothing was stored",
                details.len()
            ),
            details,
        });
    };
    let now = st.clock.now().timestamp_millis();
    let id = adset.id.to_string();
    let rev = st
        .store
        .add_revision(
            &Revision {
                adset: id.clone(),
                rev: 0,
                format: if json { "json" } else { "toml" }.into(),
                body: text.to_owned(),
                origin: "upload".into(),
                uploaded_by: who.name.clone(),
                uploaded_ms: now,
                approved_by: None,
                approved_ms: None,
            },
            false,
        )
        .await?;
    // A re-upload may un-retire the set: what plays must be recomputed either way.
    daemon::refresh_adsets(&st.store, &st.shared).await?;
    let warnings: Vec<String> = problems
        .iter()
        .filter(|p| !p.is_error())
        .map(|p| p.to_string())
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "rev": rev, "status": "pending", "uploaded_by": who.name, "warnings": warnings})),
    )
        .into_response())
}

fn ms_text(ms: Option<i64>, tz: chrono_tz::Tz) -> Option<String> {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| t.with_timezone(&tz).to_rfc3339())
}

fn history_json(h: &AdSetHistory, tz: chrono_tz::Tz, bodies: bool) -> serde_json::Value {
    let approved = h
        .revisions
        .iter()
        .rev()
        .find(|r| r.approved_by.is_some())
        .map(|r| r.rev);
    let latest = h.revisions.last().map(|r| r.rev);
    let status = if h.retired.is_some() {
        "retired"
    } else if approved.is_some() {
        "approved"
    } else {
        "pending"
    };
    let revisions: Vec<serde_json::Value> = h
        .revisions
        .iter()
        .map(|r| {
            let rstatus = if h.retired.is_some() && Some(r.rev) == approved {
                "retired"
            } else if Some(r.rev) == approved {
                "approved"
            } else if r.approved_by.is_some() {
                "superseded"
            } else if Some(r.rev) == latest {
                "pending"
            } else {
                "superseded"
            };
            let mut v = json!({
                "rev": r.rev, "status": rstatus, "origin": r.origin, "format": r.format,
                "uploaded_by": r.uploaded_by, "uploaded_at": ms_text(Some(r.uploaded_ms), tz),
                "approved_by": r.approved_by, "approved_at": ms_text(r.approved_ms, tz),
            });
            if bodies {
                v["body"] = json!(r.body);
            }
            v
        })
        .collect();
    json!({
        "id": h.adset, "status": status, "latest_rev": latest, "playing_rev": if h.retired.is_some() { None } else { approved },
        "retired_by": h.retired.as_ref().map(|r| r.by.clone()),
        "retired_at": ms_text(h.retired.as_ref().map(|r| r.at_ms), tz),
        "revisions": revisions,
    })
}

async fn list_adsets(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller(&st, &headers, &[Role::Operator, Role::Auditor]).await?;
    let tz = st.shared.current().timezone;
    let rows: Vec<_> = st
        .store
        .adset_histories()
        .await?
        .iter()
        .map(|h| history_json(h, tz, false))
        .collect();
    Ok(Json(json!({"rows": rows})).into_response())
}

async fn show_adset(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller(&st, &headers, &[Role::Operator, Role::Auditor]).await?;
    let tz = st.shared.current().timezone;
    match st.store.adset_history(&id).await? {
        Some(h) => Ok(Json(history_json(&h, tz, true)).into_response()),
        None => Err(ApiError::field(
            StatusCode::NOT_FOUND,
            "id",
            format!("no ad set {id:?}"),
        )),
    }
}

async fn approve(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers, &[Role::Operator]).await?;
    let now = st.clock.now().timestamp_millis();
    // A refusal (`StoreError::Refused`) becomes 404, 403 or 409 by `From<ApproveError>`.
    let rev = st
        .store
        .approve_latest(&id, &who.name, who.role == Role::Admin, now)
        .await?;
    daemon::refresh_adsets(&st.store, &st.shared).await?;
    let playing = st
        .shared
        .current()
        .adsets
        .iter()
        .any(|a| a.id.as_str() == id && a.rev == rev.rev);
    Ok(Json(json!({"id": id, "rev": rev.rev, "status": "approved", "approved_by": who.name, "playing": playing}))
        .into_response())
}

async fn retire(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = caller(&st, &headers, &[Role::Operator]).await?;
    let now = st.clock.now().timestamp_millis();
    if !st.store.retire(&id, &who.name, now).await? {
        return Err(ApiError::field(
            StatusCode::NOT_FOUND,
            "id",
            format!("no ad set {id:?}"),
        ));
    }
    daemon::refresh_adsets(&st.store, &st.shared).await?;
    Ok(Json(json!({"id": id, "status": "retired", "retired_by": who.name})).into_response())
}

async fn devices(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller(&st, &headers, &[Role::Operator, Role::Auditor]).await?;
    let c = st.shared.current();
    let online = st.shared.online_names();
    let rows: Vec<_> = c
        .devices
        .iter()
        .map(|d| {
            json!({"id": d.id, "class": d.class, "attrs": d.attrs,
                   "feeds": c.feeds_of(d), "online": online.get(d.id.as_str()).copied()})
        })
        .collect();
    Ok(Json(json!({"rows": rows})).into_response())
}

async fn feeds(State(st): State<Arc<ApiState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    caller(&st, &headers, &[Role::Operator, Role::Auditor]).await?;
    let c = st.shared.current();
    let current = st.shared.last_plays();
    let rows: Vec<_> = c
        .feeds
        .iter()
        .map(|f| {
            json!({"id": f.id, "interval_s": f.interval.as_secs_f64(),
                   "daypart": f.daypart.as_ref().map(|d| d.source.clone()),
                   "select": f.select.terms, "members": c.members(f).count(),
                   "current": current.get(f.id.as_str())})
        })
        .collect();
    Ok(Json(json!({"rows": rows})).into_response())
}

/// Whether the client asked for CSV (`?format=csv` or `Accept: text/csv`).
fn wants_csv(headers: &HeaderMap, format: Option<&str>) -> Result<bool, ApiError> {
    match format {
        Some("csv") => return Ok(true),
        Some("json") => return Ok(false),
        Some(other) => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "format",
                format!("unknown format {other:?}; use json or csv"),
            ))
        }
        None => {}
    }
    Ok(headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/csv")))
}

/// A CSV answer written as the store yields rows: a year of rows never sits in memory. A
/// database error midway ends the body early (the client sees a truncated transfer).
fn stream_plays_csv(store: Db, q: PlaysQuery) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<audit::PlaysRow>(1024);
    let header = q.csv_header();
    tokio::spawn(async move {
        if let Err(e) = store.stream_plays(&q, tx).await {
            warn!(error = %e, "streaming play counts failed");
        }
    });
    let head = futures_util::stream::once(async move { Ok::<_, std::io::Error>(header) });
    let rows = futures_util::stream::unfold(rx, |mut rx| async move {
        let r = rx.recv().await?;
        Some((Ok(reports::format::plays_csv_line(&r)), rx))
    });
    let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(head, rows));
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

fn csv_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Format {
    format: Option<String>,
}

async fn audit_plays(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(p): Query<PlaysParams>,
    Query(f): Query<Format>,
) -> Result<Response, ApiError> {
    caller(&st, &headers, &[Role::Auditor]).await?;
    let csv = wants_csv(&headers, f.format.as_deref())?;
    let c = st.shared.current();
    let q = PlaysQuery::parse(&p, c.timezone)?;
    if let Some(k) = &q.class {
        if !c.classes.contains_key(k) {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "class",
                format!("unknown class {k:?}"),
            ));
        }
    }
    if csv && q.streamable() {
        return Ok(stream_plays_csv(st.store.clone(), q));
    }
    let rows = st.store.audit_plays(&q).await?;
    if csv {
        return Ok(csv_response(
            reports::format::plays_csv(&q, &rows).map_err(anyhow::Error::from)?,
        ));
    }
    Ok(Json(reports::answer(&q, &rows)).into_response())
}

/// A report in JSON (the whole answer) or CSV (its rows, under `columns`).
fn report_response<A: Serialize, R: Serialize>(
    csv: bool,
    answer: &A,
    columns: &[&str],
    rows: &[R],
) -> Result<Response, ApiError> {
    if csv {
        return Ok(csv_response(
            reports::csv_of(columns, rows).map_err(anyhow::Error::from)?,
        ));
    }
    Ok(Json(answer).into_response())
}

async fn audit_compliance(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(p): Query<reports::ComplianceParams>,
    Query(f): Query<Format>,
) -> Result<Response, ApiError> {
    caller(&st, &headers, &[Role::Auditor]).await?;
    let csv = wants_csv(&headers, f.format.as_deref())?;
    let c = st.shared.current();
    let a = reports::compliance_report(&st.store, &c, &p, st.clock.now(), st.factors).await?;
    report_response(csv, &a, &reports::COMPLIANCE_COLUMNS, &a.rows)
}

async fn audit_sample(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(p): Query<reports::SampleParams>,
    Query(f): Query<Format>,
) -> Result<Response, ApiError> {
    caller(&st, &headers, &[Role::Auditor]).await?;
    let csv = wants_csv(&headers, f.format.as_deref())?;
    let c = st.shared.current();
    let a = reports::sample_report(&st.store, &c, &p, st.clock.now(), st.factors).await?;
    report_response(csv, &a, &reports::SAMPLE_COLUMNS, &a.rows)
}

async fn audit_reconcile(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(p): Query<reports::ReconcileParams>,
    Query(f): Query<Format>,
) -> Result<Response, ApiError> {
    caller(&st, &headers, &[Role::Auditor]).await?;
    let csv = wants_csv(&headers, f.format.as_deref())?;
    let c = st.shared.current();
    let a = reports::reconcile_report(&st.store, &c, &p, st.clock.now()).await?;
    report_response(csv, &a, &reports::RECONCILE_COLUMNS, &a.rows)
}
