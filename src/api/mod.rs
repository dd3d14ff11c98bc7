//! The HTTP API of the contract (`/api/v1/...`, `/healthz`, `/metrics`): tokens and roles,
//! the ad-set lifecycle, inventory, and the audit reports in JSON, or as CSV and XLSX
//! downloads (`download`).
//!
//! Owns: routing, authentication, status codes and error bodies. Must not touch SQL (the
//! store does) or report arithmetic (`reports` and `audit` do). Errors name the field at
//! fault but never leak SQL or paths.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{instrument, warn};

use crate::core::audit::{compliance, PlaysParams, PlaysQuery, QueryError};
use crate::core::catalog::{self, AdSetContext, Problem};
use crate::daemon::{self, Clock, Shared};
use crate::reports::{self, ReportError};
use crate::settings::Settings;
use crate::store::{
    AdSetHistory, ApiStore, ApproveError, Approver, Db, Revision, Role, Store, StoreError, TokenRow,
};

pub mod download;
pub(crate) mod inspect;
pub mod log;
pub mod openapi;
pub mod preview;
pub mod urgent;

/// Largest ad-set upload.
pub const MAX_BODY: usize = 1024 * 1024;

/// What one request may ask of the daemon.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most slogans in one uploaded ad set.
    pub max_slogans: usize,
    /// Most details in one error answer; the rest are counted in a last detail.
    pub max_details: usize,
    /// Heavy requests (parsing an upload, building a report) running at once, each on a
    /// blocking thread: the async workers (one a core) stay free for light requests and for
    /// the scheduler, so no upload can delay a play.
    pub workers: usize,
    /// Heavy requests waiting for a worker; past it a request gets 503 with Retry-After.
    pub queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Limits {
            max_slogans: Settings::default().max_slogans,
            max_details: 100,
            workers: cores,
            queue: 16 * cores,
        }
    }
}

impl Limits {
    pub fn of(settings: &Settings) -> Self {
        Limits {
            max_slogans: settings.max_slogans,
            ..Limits::default()
        }
    }
}

/// The bounded pool for heavy work: a semaphore of `workers` permits in front of
/// `spawn_blocking`, with a bounded queue.
pub struct Heavy {
    permits: Arc<Semaphore>,
    workers: usize,
    waiting: AtomicUsize,
    queue: usize,
}

/// Leaves the queue when dropped, also when the request is abandoned while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Heavy {
    pub fn new(limits: &Limits) -> Self {
        Heavy {
            permits: Arc::new(Semaphore::new(limits.workers.max(1))),
            workers: limits.workers.max(1),
            waiting: AtomicUsize::new(0),
            queue: limits.queue,
        }
    }

    /// Heavy requests running now.
    pub fn busy(&self) -> usize {
        self.workers - self.permits.available_permits()
    }

    async fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        let before = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _in_queue = Waiting(&self.waiting);
        if before >= self.queue {
            return Err(ApiError::busy());
        }
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::busy())
    }

    /// Runs `f` on a blocking thread once a permit is free.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = self.admit().await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|e| ApiError::from(anyhow::anyhow!("a heavy request failed: {e}")))
    }

    /// Runs a future whose polling is heavy (a report: store reads, then arithmetic over
    /// what they return) to completion on a blocking thread.
    pub async fn run_async<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, ApiError> {
        let rt = tokio::runtime::Handle::current();
        self.run(move || rt.block_on(fut)).await
    }
}

/// What every handler sees.
pub struct ApiState {
    pub store: Db,
    pub shared: Shared,
    pub clock: Arc<dyn Clock>,
    pub factors: compliance::Factors,
    pub limits: Limits,
    pub heavy: Heavy,
    /// Sends urgent messages on the daemon's MQTT session; None: urgent routes answer 503.
    pub urgent: Option<daemon::Urgent>,
}

impl ApiState {
    pub fn new(
        store: Db,
        shared: Shared,
        clock: Arc<dyn Clock>,
        factors: compliance::Factors,
        limits: Limits,
    ) -> Self {
        ApiState {
            store,
            shared,
            clock,
            factors,
            limits,
            heavy: Heavy::new(&limits),
            urgent: None,
        }
    }

    /// The same state, inspecting the units and checklist of `setup` (until the file
    /// watcher installs the next good `devices/`).
    pub fn with_inspect(self, setup: crate::core::inspect::Setup) -> Self {
        self.shared.set_inspect(setup);
        self
    }

    /// The same state, able to send urgent messages through `urgent`.
    pub fn with_urgent(mut self, urgent: daemon::Urgent) -> Self {
        self.urgent = Some(urgent);
        self
    }
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
    fn busy() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many uploads and reports at once; try again shortly",
        )
    }
}

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_S: &str = "2";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut r = (
            status,
            Json(json!({"error": self.error, "details": self.details})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_S));
        }
        r
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

/// The query string as `T`, every parameter at most once; a JSON 400 naming the parameter
/// otherwise (axum's own `Query` answers in plain text and keeps the last of a repeat).
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or("")).map(ApiQuery)
    }
}

fn parse_query<T: DeserializeOwned>(q: &str) -> Result<T, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).map_err(|e| {
        ApiError::field(StatusCode::BAD_REQUEST, "query", format!("unreadable: {e}"))
    })?;
    let mut seen = HashSet::new();
    for (k, _) in &pairs {
        if !seen.insert(k.as_str()) {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                k,
                "given more than once; give each parameter at most once",
            ));
        }
    }
    serde_urlencoded::from_str(q)
        .map_err(|e| ApiError::field(StatusCode::BAD_REQUEST, "query", e.to_string()))
}

/// The `{id}` of a path, as text; a JSON 400 when it is not UTF-8.
pub struct ApiPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiPath {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, s).await {
            Ok(Path(id)) => Ok(ApiPath(id)),
            Err(e) => Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "id",
                e.body_text(),
            )),
        }
    }
}

/// The request body, at most [`MAX_BODY`]; a JSON 413 past it. Read only by handlers, so
/// after the token is checked.
pub struct ApiBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, s: &S) -> Result<Self, ApiError> {
        match axum::body::Bytes::from_request(req, s).await {
            Ok(b) => Ok(ApiBody(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::field(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body",
                format!("over the {} KiB an upload may hold", MAX_BODY / 1024),
            )),
            Err(e) => Err(ApiError::field(e.status(), "body", e.body_text())),
        }
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

/// Roles of the routes (admin may do all).
pub const OPERATOR: &[Role] = &[Role::Operator];
pub const READERS: &[Role] = &[Role::Operator, Role::Auditor];
pub const AUDITOR: &[Role] = &[Role::Auditor];
/// Any valid token: the OpenAPI document.
pub const ANY: &[Role] = &[
    Role::Operator,
    Role::Auditor,
    Role::Admin,
    Role::Inspector,
    Role::Company,
];

/// The token of an `Authorization` header: scheme `Bearer` in any case (RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(|c: char| c.is_ascii_whitespace())?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Who is calling, checked against the roles a route allows (admin may do all).
async fn caller(
    st: &ApiState,
    headers: &HeaderMap,
    allowed: &[Role],
) -> Result<TokenRow, ApiError> {
    let token = bearer(headers)
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

/// A route's roles, checked before anything of the request is read.
#[derive(Clone)]
struct Access {
    state: Arc<ApiState>,
    roles: &'static [Role],
}

/// Checks the token first: a request without a valid token gets 401 before its query,
/// path or body is looked at. The caller goes on to the handler as an extension.
async fn authorize(State(a): State<Access>, mut req: Request, next: Next) -> Response {
    match caller(&a.state, req.headers(), a.roles).await {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

fn guard(
    m: MethodRouter<Arc<ApiState>>,
    state: &Arc<ApiState>,
    roles: &'static [Role],
) -> MethodRouter<Arc<ApiState>> {
    let access = Access {
        state: state.clone(),
        roles,
    };
    m.route_layer(middleware::from_fn_with_state(access, authorize))
}

/// The router, state included; `serve` binds it.
pub fn router(state: Arc<ApiState>) -> Router {
    let st = &state;
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/openapi.json",
            guard(get(openapi::document), st, ANY),
        )
        .route(
            "/api/v1/adsets",
            guard(post(upload), st, OPERATOR).merge(guard(get(list_adsets), st, READERS)),
        )
        .route("/api/v1/adsets/{id}", guard(get(show_adset), st, READERS))
        .route(
            "/api/v1/adsets/{id}/approve",
            guard(post(approve), st, OPERATOR),
        )
        .route(
            "/api/v1/adsets/{id}/retire",
            guard(post(retire), st, OPERATOR),
        )
        .route("/api/v1/devices", guard(get(devices), st, READERS))
        .route("/api/v1/feeds", guard(get(feeds), st, READERS))
        .route("/api/v1/preview", guard(get(preview::preview), st, READERS))
        .route(
            "/api/v1/preview.svg",
            guard(get(preview::preview_svg), st, READERS),
        )
        .route("/api/v1/audit/plays", guard(get(audit_plays), st, AUDITOR))
        .route(
            "/api/v1/audit/compliance",
            guard(get(audit_compliance), st, AUDITOR),
        )
        .route(
            "/api/v1/audit/sample",
            guard(get(audit_sample), st, AUDITOR),
        )
        .route(
            "/api/v1/audit/reconcile",
            guard(get(audit_reconcile), st, AUDITOR),
        )
        .route(
            "/api/v1/urgent",
            guard(post(urgent::send), st, OPERATOR).merge(guard(get(urgent::list), st, READERS)),
        )
        .route(
            "/api/v1/urgent/{id}/approve",
            guard(post(urgent::approve), st, OPERATOR),
        )
        .route(
            "/api/v1/urgent/{id}/cancel",
            guard(post(urgent::cancel), st, OPERATOR),
        )
        .merge(inspect::routes(st))
        .merge(log::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state.clone())
        .merge(crate::console::router(state))
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

/// The broker's and the database's health now, as `/healthz` and the console report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub broker: bool,
    pub database: bool,
}

/// Whether the daemon's MQTT session is up and the database answers.
pub async fn health(st: &ApiState) -> Health {
    let m = &st.shared.metrics();
    let broker = m.broker_connected.load(Ordering::Relaxed);
    // The last write's outcome says nothing while no write ends (a pool waiting 5 s for a
    // connection to a server that is gone); a round trip now does.
    let answers = tokio::time::timeout(HEALTH_PING, st.store.ping())
        .await
        .is_ok_and(|r| r.is_ok());
    Health {
        broker,
        database: answers && m.database_healthy(),
    }
}

async fn healthz(State(st): State<Arc<ApiState>>) -> Response {
    let Health { broker, database } = health(&st).await;
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
    let mut text = st.shared.metrics().render();
    // The findings' states are the store's; a scrape while it cannot answer leaves the
    // family out rather than failing every other figure.
    match inspect::findings::tally(&st).await {
        Ok(counts) => crate::metrics::findings_family(&mut text, &counts),
        Err(e) => tracing::warn!(error = %e.error, "counting findings for /metrics failed"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The errors among `problems`, the first `max` of them, then one detail counting the rest.
fn problems_to_details(problems: &[Problem], max: usize) -> Vec<Detail> {
    let mut errors = problems.iter().filter(|p| p.is_error());
    let mut out: Vec<Detail> = errors
        .by_ref()
        .take(max)
        .map(|p| Detail {
            field: p.field.clone(),
            line: p.line,
            message: p.message.clone(),
        })
        .collect();
    let more = errors.count();
    if more > 0 {
        out.push(Detail {
            field: None,
            line: None,
            message: format!("and {more} more problems"),
        });
    }
    out
}

/// Counts the items of an array without keeping them.
struct Count(usize);

impl<'de> serde::Deserialize<'de> for Count {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Count, A::Error> {
                let mut n = 0;
                while a.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(Count(n))
            }
        }
        d.deserialize_seq(V)
    }
}

/// The number of slogans in an upload, when its text reads as a document with a `slogan`
/// (or `slogans`) array; anything else is left for the catalog to report.
fn slogan_count(text: &str, json: bool) -> Option<usize> {
    #[derive(serde::Deserialize)]
    struct Doc {
        slogan: Option<Count>,
        slogans: Option<Count>,
    }
    let doc: Doc = if json {
        serde_json::from_str(text).ok()?
    } else {
        toml::from_str(text).ok()?
    };
    Some(doc.slogan.or(doc.slogans)?.0)
}

/// An upload, checked: the ad set's id and the warnings, or every problem (the first
/// `max_details`). Heavy: runs on the blocking pool.
fn check_upload(st: &ApiState, text: &str, json: bool) -> Result<(String, Vec<String>), ApiError> {
    let max = st.limits.max_slogans;
    if let Some(n) = slogan_count(text, json).filter(|n| *n > max) {
        return Err(ApiError::field(
            StatusCode::UNPROCESSABLE_ENTITY,
            "slogan",
            format!("{n} slogans, more than the {max} an upload may hold (setting max_slogans); nothing was stored"),
        ));
    }
    let current = st.shared.current();
    let (parsed, problems) =
        catalog::parse_adset_checked(text, json, "upload", &AdSetContext::of(&current));
    let Some(adset) = parsed.filter(|_| !problems.iter().any(Problem::is_error)) else {
        let total = problems.iter().filter(|p| p.is_error()).count();
        return Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: format!("the ad set has {total} problems; nothing was stored"),
            details: problems_to_details(&problems, st.limits.max_details),
        });
    };
    let warnings = problems
        .iter()
        .filter(|p| !p.is_error())
        .map(|p| p.to_string())
        .collect();
    Ok((adset.id.to_string(), warnings))
}

/// Recomputes what plays, on the blocking pool: it reads and parses every stored revision.
async fn refresh(st: &ApiState) -> Result<(), ApiError> {
    let (store, shared) = (st.store.clone(), st.shared.clone());
    st.heavy
        .run_async(async move { daemon::refresh_adsets(&store, &shared).await })
        .await??;
    Ok(())
}

#[instrument(skip_all)]
async fn upload(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    headers: HeaderMap,
    ApiBody(body): ApiBody,
) -> Result<Response, ApiError> {
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
    let text = String::from_utf8(body.to_vec()).map_err(|e| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            "body",
            format!("not UTF-8: {}", e.utf8_error()),
        )
    })?;
    let u = store_upload(&st, &who, text, json).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": u.id, "rev": u.rev, "status": "pending", "uploaded_by": who.name, "warnings": u.warnings})),
    )
        .into_response())
}

/// A stored upload: the ad set, its new revision (pending) and the warnings.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub id: String,
    pub rev: i64,
    pub warnings: Vec<String>,
}

/// Checks an upload ([`check_upload`], on the blocking pool) and, when it has no error,
/// stores it as a pending revision by `who`; the API and the console both upload this way.
pub async fn store_upload(
    st: &Arc<ApiState>,
    who: &TokenRow,
    text: String,
    json: bool,
) -> Result<Uploaded, ApiError> {
    let (st2, text) = (st.clone(), Arc::new(text));
    let checked = text.clone();
    let (id, warnings) = st
        .heavy
        .run(move || check_upload(&st2, &checked, json))
        .await??;
    let now = st.clock.now().timestamp_millis();
    let rev = st
        .store
        .add_revision(
            &Revision {
                adset: id.clone(),
                rev: 0,
                format: if json { "json" } else { "toml" }.into(),
                body: text.to_string(),
                origin: "upload".into(),
                uploaded_by: who.name.clone(),
                uploaded_token: Some(who.id),
                uploaded_ms: now,
                approved_by: None,
                approved_token: None,
                approved_ms: None,
            },
            false,
        )
        .await?;
    // A re-upload may un-retire the set: what plays must be recomputed either way.
    refresh(st).await?;
    Ok(Uploaded { id, rev, warnings })
}

fn ms_text(ms: Option<i64>, tz: chrono_tz::Tz) -> Option<String> {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| t.with_timezone(&tz).to_rfc3339())
}

/// What an ad set's history says of it and of each revision, as the API answers and the
/// console shows: the set's status, each revision's status in order, and the revision that
/// plays (None when retired or never approved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statuses {
    pub status: &'static str,
    pub revisions: Vec<&'static str>,
    pub playing_rev: Option<i64>,
}

pub fn statuses(h: &AdSetHistory) -> Statuses {
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
    let revisions = h
        .revisions
        .iter()
        .map(|r| {
            if h.retired.is_some() && Some(r.rev) == approved {
                "retired"
            } else if Some(r.rev) == approved {
                "approved"
            } else if r.approved_by.is_some() {
                "superseded"
            } else if Some(r.rev) == latest {
                "pending"
            } else {
                "superseded"
            }
        })
        .collect();
    Statuses {
        status,
        revisions,
        playing_rev: if h.retired.is_some() { None } else { approved },
    }
}

fn history_json(h: &AdSetHistory, tz: chrono_tz::Tz, bodies: bool) -> serde_json::Value {
    let st = statuses(h);
    let latest = h.revisions.last().map(|r| r.rev);
    let revisions: Vec<serde_json::Value> = h
        .revisions
        .iter()
        .zip(&st.revisions)
        .map(|(r, rstatus)| {
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
        "id": h.adset, "status": st.status, "latest_rev": latest, "playing_rev": st.playing_rev,
        "retired_by": h.retired.as_ref().map(|r| r.by.clone()),
        "retired_at": ms_text(h.retired.as_ref().map(|r| r.at_ms), tz),
        "revisions": revisions,
    })
}

async fn list_adsets(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
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
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
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

/// Approves the latest revision of `id` as `who` and recomputes what plays: the revision
/// approved and whether it plays now. A refusal (`StoreError::Refused`) becomes 404, 403 or
/// 409 by `From<ApproveError>`. The API and the console both approve this way.
pub async fn approve_adset(
    st: &ApiState,
    who: &TokenRow,
    id: &str,
) -> Result<(Revision, bool), ApiError> {
    let now = st.clock.now().timestamp_millis();
    let rev = st
        .store
        .approve_latest(
            id,
            &Approver {
                token: Some(who.id),
                name: &who.name,
                admin: who.role == Role::Admin,
            },
            now,
        )
        .await?;
    refresh(st).await?;
    let playing = st
        .shared
        .current()
        .adsets
        .iter()
        .any(|a| a.id.as_str() == id && a.rev == rev.rev);
    Ok((rev, playing))
}

/// Retires `id` as `who` and recomputes what plays; 404 when there is no such ad set.
pub async fn retire_adset(st: &ApiState, who: &TokenRow, id: &str) -> Result<(), ApiError> {
    let now = st.clock.now().timestamp_millis();
    if !st.store.retire(id, &who.name, now).await? {
        return Err(ApiError::field(
            StatusCode::NOT_FOUND,
            "id",
            format!("no ad set {id:?}"),
        ));
    }
    refresh(st).await
}

async fn approve(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    let (rev, playing) = approve_adset(&st, &who, &id).await?;
    Ok(Json(json!({"id": id, "rev": rev.rev, "status": "approved", "approved_by": who.name, "playing": playing}))
        .into_response())
}

async fn retire(
    State(st): State<Arc<ApiState>>,
    Extension(who): Extension<TokenRow>,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    retire_adset(&st, &who, &id).await?;
    Ok(Json(json!({"id": id, "status": "retired", "retired_by": who.name})).into_response())
}

async fn devices(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
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

async fn feeds(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
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

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Format {
    format: Option<String>,
}

async fn audit_plays(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<PlaysParams>,
    ApiQuery(f): ApiQuery<Format>,
) -> Result<Response, ApiError> {
    if let Some(d) = download::wanted(&headers, f.format.as_deref())? {
        return download::plays_download(&st, &p, d).await;
    }
    let c = st.shared.current();
    let q = PlaysQuery::parse(&p, c.timezone)?;
    reports::check_plays_names(&q, &c)?;
    let store = st.store.clone();
    st.heavy
        .run_async(async move {
            let rows = store.audit_plays(&q).await?;
            Ok(Json(reports::answer(&q, &rows)).into_response())
        })
        .await?
}

async fn audit_compliance(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<reports::ComplianceParams>,
    ApiQuery(f): ApiQuery<Format>,
) -> Result<Response, ApiError> {
    if let Some(d) = download::wanted(&headers, f.format.as_deref())? {
        return download::compliance_download(&st, p, d).await;
    }
    let (c, now, st2) = (st.shared.current(), st.clock.now(), st.clone());
    let a = st
        .heavy
        .run_async(
            async move { reports::compliance_report(&st2.store, &c, &p, now, st2.factors).await },
        )
        .await??;
    Ok(Json(a).into_response())
}

async fn audit_sample(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<reports::SampleParams>,
    ApiQuery(f): ApiQuery<Format>,
) -> Result<Response, ApiError> {
    if let Some(d) = download::wanted(&headers, f.format.as_deref())? {
        return download::sample_download(&st, p, d).await;
    }
    let (c, now, st2) = (st.shared.current(), st.clock.now(), st.clone());
    let a = st
        .heavy
        .run_async(
            async move { reports::sample_report(&st2.store, &c, &p, now, st2.factors).await },
        )
        .await??;
    Ok(Json(a).into_response())
}

async fn audit_reconcile(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<reports::ReconcileParams>,
    ApiQuery(f): ApiQuery<Format>,
) -> Result<Response, ApiError> {
    if let Some(d) = download::wanted(&headers, f.format.as_deref())? {
        return download::reconcile_download(&st, p, d).await;
    }
    let (c, now, st2) = (st.shared.current(), st.clock.now(), st.clone());
    let a = st
        .heavy
        .run_async(async move { reports::reconcile_report(&st2.store, &c, &p, now).await })
        .await??;
    Ok(Json(a).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_heavy_request_past_the_queue_gets_503_with_retry_after() {
        let heavy = Arc::new(Heavy::new(&Limits {
            workers: 1,
            queue: 1,
            ..Limits::default()
        }));
        let (release, held) = std::sync::mpsc::channel::<()>();
        let h = heavy.clone();
        let first = tokio::spawn(async move { h.run(move || held.recv().is_ok()).await });
        while heavy.busy() < 1 {
            tokio::task::yield_now().await;
        }
        // One may wait for the worker; the next one is turned away.
        let h = heavy.clone();
        let second = tokio::spawn(async move { h.run(|| 2).await });
        while heavy.waiting.load(Ordering::Relaxed) < 1 {
            tokio::task::yield_now().await;
        }
        let third = heavy.run(|| 3).await.expect_err("the queue is full");
        assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
        let answer = third.into_response();
        assert_eq!(answer.headers()[header::RETRY_AFTER], RETRY_AFTER_S);
        release.send(()).expect("release the first");
        assert!(first.await.expect("first").expect("ran"));
        assert_eq!(second.await.expect("second").expect("ran after waiting"), 2);
        assert_eq!(
            heavy.waiting.load(Ordering::Relaxed),
            0,
            "nobody left waiting"
        );
    }

    #[test]
    fn the_bearer_scheme_is_read_in_any_case() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(v).expect("header"),
            );
            bearer(&h).map(str::to_owned)
        };
        assert_eq!(with("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("BEARER  abc ").as_deref(), Some("abc"));
        assert_eq!(with("Basic abc"), None);
        assert_eq!(with("Bearer"), None);
        assert_eq!(with("Bearerabc"), None);
    }
}
