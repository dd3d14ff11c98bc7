//! The web console at `/` on the HTTP listener: server-rendered pages (askama templates under
//! `templates/console/`, one template and one handler per page) for operators, auditors,
//! inspectors and the companies answering their findings,
//! in Simplified Chinese by default with an English toggle, signed in with the API's tokens.
//! Every page reads without JavaScript; `live.js` only refreshes the overview's figures.
//!
//! Owns: pages, sessions, the console's assets. Must not compute anything the API computes:
//! uploads, approvals, retirements, health and play counts go through the API's own
//! functions (`api::store_upload`, `api::approve_adset`, `api::retire_adset`, `api::health`,
//! `api::statuses`) and the reports' and store's, so a page and the API never disagree;
//! inspections, findings and scorecards through `api::inspect`'s own functions.

use std::sync::Arc;

use askama::Template;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::api::{ApiError, ApiState, MAX_BODY};
use crate::store::Role;
use i18n::key;

mod assets;
pub mod i18n;
mod pages;
pub mod session;

pub use session::Ctx;

/// The console's routes, merged into `api::router` (one listener).
pub fn router(state: Arc<ApiState>) -> Router {
    use pages::*;
    Router::new()
        .route("/", get(overview::page))
        .route("/overview/live", get(overview::live))
        .route("/signin", post(signin::sign_in))
        .route("/signout", post(signin::sign_out))
        .route("/lang", post(signin::set_lang))
        .route("/adsets", get(adsets::list))
        .route("/adsets/{id}", get(adsets::show))
        .route("/adsets/{id}/rev/{rev}", get(adsets::revision))
        .route("/adsets/{id}/rev/{rev}/preview", get(adsets::preview))
        .route("/adsets/{id}/diff", get(adsets::diff))
        .route("/adsets/{id}/approve", post(adsets::approve))
        .route("/adsets/{id}/retire", post(adsets::retire))
        .route("/upload", get(upload::form).post(upload::submit))
        .route("/displays", get(displays::list))
        .route("/displays/{id}", get(displays::show))
        .route("/audit/plays", get(plays::page))
        .route("/audit/compliance", get(audit::compliance))
        .route("/audit/sample", get(audit::sample))
        .route("/audit/reconcile", get(audit::reconcile))
        .route("/urgent", get(urgent::list).post(urgent::send))
        .route("/urgent/{id}/approve", post(urgent::approve))
        .route("/urgent/{id}/cancel", post(urgent::cancel))
        .route("/inspect", get(inspect::page))
        .route(
            "/inspect/visits",
            post(inspect::record).layer(DefaultBodyLimit::max(inspect::VISIT_BODY)),
        )
        .route("/inspect/propose", post(inspect::propose))
        .route("/findings", get(findings::list))
        .route("/findings/{id}", get(findings::show))
        .route("/findings/{id}/rectify", post(findings::rectify))
        .route("/findings/{id}/recheck", post(inspect::recheck))
        .route(
            "/findings/{id}/recheck-from-receipts",
            post(inspect::recheck_from_receipts),
        )
        .route("/findings/{id}/deadline", post(inspect::deadline))
        .route("/findings/{id}/confirm", post(inspect::confirm))
        .route("/findings/{id}/dismiss", post(inspect::dismiss))
        .route("/findings/photos/{sha}", get(findings::photo))
        .route("/scorecards", get(scorecards::page))
        .route("/about", get(about::page))
        .route("/assets/console/{name}", get(assets::serve))
        // Room for the multipart framing around the largest upload.
        .layer(DefaultBodyLimit::max(MAX_BODY + 64 * 1024))
        .with_state(state)
}

/// A page that could not be shown: a redirect (to sign in) or an error page.
#[derive(Debug)]
pub enum Failure {
    SignIn,
    Page {
        ctx: Box<Ctx>,
        status: StatusCode,
        title: &'static str,
        message: String,
        details: Vec<crate::api::Detail>,
    },
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    c: &'a Ctx,
    title: &'a str,
    message: &'a str,
    details: &'a [crate::api::Detail],
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::SignIn => Redirect::to("/").into_response(),
            Failure::Page {
                ctx,
                status,
                title,
                message,
                details,
            } => {
                let page = ErrorPage {
                    c: &ctx,
                    title: ctx.t(title),
                    message: &message,
                    details: &details,
                };
                let mut r = html(&page);
                *r.status_mut() = status;
                r
            }
        }
    }
}

impl Ctx {
    /// An error page with `status`, a catalog `title` and a message of its own.
    pub fn fail(&self, status: StatusCode, title: &'static str, message: String) -> Failure {
        Failure::Page {
            ctx: Box::new(self.clone()),
            status,
            title,
            message,
            details: Vec::new(),
        }
    }

    /// The API's answer to what the console asked of it, as a page: the same status and
    /// message, with the field and line of each problem.
    pub fn api_failure(&self, e: ApiError) -> Failure {
        let title = match e.status {
            StatusCode::FORBIDDEN => key("error.forbidden"),
            StatusCode::NOT_FOUND => key("error.not_found"),
            StatusCode::CONFLICT => key("error.conflict"),
            StatusCode::SERVICE_UNAVAILABLE => key("error.unavailable"),
            s if s.is_client_error() => key("error.invalid"),
            _ => key("error.internal"),
        };
        Failure::Page {
            ctx: Box::new(self.clone()),
            status: e.status,
            title,
            message: e.error,
            details: e.details,
        }
    }

    /// The signed-in reader, when their role may use a page open to `roles`: otherwise to
    /// sign-in (nobody signed in) or 403 naming the role the page needs.
    pub fn require(&self, roles: &[Role]) -> Result<&session::Viewer, Failure> {
        let Some(v) = &self.viewer else {
            return Err(Failure::SignIn);
        };
        if self.may(roles) {
            return Ok(v);
        }
        let needs: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(self.fail(
            StatusCode::FORBIDDEN,
            key("error.forbidden"),
            format!(
                "{} {} ({} {})",
                self.t("error.needs_role"),
                needs.join(" / "),
                self.t("error.your_role"),
                v.token.role.as_str()
            ),
        ))
    }

    /// A state-changing request: from this console's origin, by a reader with one of
    /// `roles`, carrying the session's CSRF token; 403 otherwise.
    pub fn require_post(&self, roles: &[Role], csrf: &str) -> Result<&session::Viewer, Failure> {
        if !self.same_origin {
            return Err(self.fail(
                StatusCode::FORBIDDEN,
                key("error.forbidden"),
                self.t("error.cross_origin").to_owned(),
            ));
        }
        if self.viewer.is_none() {
            return Err(self.fail(
                StatusCode::FORBIDDEN,
                key("error.forbidden"),
                self.t("error.signed_out").to_owned(),
            ));
        }
        if !self.csrf_ok(csrf) {
            return Err(self.fail(
                StatusCode::FORBIDDEN,
                key("error.forbidden"),
                self.t("error.csrf").to_owned(),
            ));
        }
        self.require(roles)
    }
}

/// A rendered page with the headers every page carries.
pub fn html<T: Template>(page: &T) -> Response {
    match page.render() {
        Ok(body) => {
            let mut r =
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
            let h = r.headers_mut();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
                ),
            );
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "rendering a console page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// A time in ms as the deployment's local time, to the second.
pub fn local_time(ms: i64, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}
