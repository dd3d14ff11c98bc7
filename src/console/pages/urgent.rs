//! Urgent messages (`/urgent`): the list with each message's state, who asked and who
//! approved, its expiry and targets; a form to send one; approve (never one's own request)
//! and cancel. Every action is the API's own (`api::urgent::{submit, approve_message,
//! cancel_message}`, which call `daemon::Urgent`), so the rules — four eyes for operators,
//! validation per class, expiry — are exactly `POST /api/v1/urgent`'s.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;

use super::super::{html, local_time, Ctx, Failure};
use crate::api::{self, urgent, ApiError, ApiState, Detail};
use crate::core::urgent::{Targets, UrgentMessage};

/// One message as a row.
pub struct Line {
    pub id: String,
    pub text: String,
    pub state: &'static str,
    pub feeds: String,
    pub devices: String,
    pub expires: String,
    pub requested_by: String,
    pub requested_at: String,
    pub approved_by: String,
    pub approved_at: String,
    pub cancelled_by: String,
    /// Whether the reader may approve it: pending, and not their own request.
    pub may_approve: bool,
    pub may_cancel: bool,
}

/// What the send form held, to show again after a refusal.
#[derive(Debug, Default, Clone)]
pub struct Sent {
    pub text: String,
    pub feeds: Vec<String>,
    pub devices: String,
    pub expires_in: String,
    pub expires_at: String,
}

#[derive(Template)]
#[template(path = "console/urgent.html")]
pub struct UrgentPage<'a> {
    pub c: &'a Ctx,
    pub lines: Vec<Line>,
    pub feeds: Vec<String>,
    pub sent: Sent,
    /// What the last action did, from the catalog, with the message's id.
    pub notice: String,
    pub error: String,
    pub details: Vec<Detail>,
}

fn line(c: &Ctx, m: &UrgentMessage, now_ms: i64, tz: chrono_tz::Tz) -> Line {
    let state = m.status(now_ms).as_str();
    let open = matches!(state, "pending" | "published");
    let mine = c
        .viewer
        .as_ref()
        .is_some_and(|v| m.requested_token == Some(v.token.id));
    Line {
        id: m.id.clone(),
        text: m.text.clone(),
        state,
        feeds: m.targets.feeds.join(", "),
        devices: m.targets.devices.join(", "),
        expires: local_time(m.expires_ms, tz),
        requested_by: m.requested_by.clone(),
        requested_at: local_time(m.requested_ms, tz),
        approved_by: m.approved_by.clone().unwrap_or_default(),
        approved_at: m.approved_ms.map(|t| local_time(t, tz)).unwrap_or_default(),
        cancelled_by: m.cancelled_by.clone().unwrap_or_default(),
        may_approve: state == "pending" && !mine && c.may_operate(),
        may_cancel: open && c.may_operate(),
    }
}

async fn page_of<'a>(st: &ApiState, c: &'a Ctx, sent: Sent) -> Result<UrgentPage<'a>, Failure> {
    let messages = urgent::messages(st).await.map_err(|e| c.api_failure(e))?;
    let now_ms = st.clock.now().timestamp_millis();
    let cat = st.shared.current();
    Ok(UrgentPage {
        c,
        lines: messages
            .iter()
            .map(|m| line(c, m, now_ms, cat.timezone))
            .collect(),
        feeds: cat.feeds.iter().map(|f| f.id.to_string()).collect(),
        sent,
        notice: String::new(),
        error: String::new(),
        details: Vec::new(),
    })
}

/// `GET /urgent`: operators and auditors see the list, as `GET /api/v1/urgent`.
pub async fn list(State(st): State<Arc<ApiState>>, c: Ctx) -> Result<Response, Failure> {
    c.require(api::READERS)?;
    let page = page_of(&st, &c, Sent::default()).await?;
    Ok(html(&page))
}

/// Names in a text field: split at commas, spaces and line ends (Chinese commas too).
fn names(s: &str) -> Vec<String> {
    s.split(|c: char| c == ',' || c == '，' || c == '、' || c.is_whitespace())
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The form's fields; `feed` may repeat (one checkbox a feed).
fn read_form(pairs: Vec<(String, String)>) -> (String, Sent) {
    let mut csrf = String::new();
    let mut sent = Sent::default();
    for (k, v) in pairs {
        match k.as_str() {
            "csrf" => csrf = v,
            "text" => sent.text = v,
            "feed" if !v.is_empty() => sent.feeds.push(v),
            "devices" => sent.devices = v,
            "expires_in" => sent.expires_in = v,
            "expires_at" => sent.expires_at = v,
            _ => {}
        }
    }
    (csrf, sent)
}

/// A refused message's summary in the reader's language; the details name each field.
fn refusal(c: &Ctx, e: &ApiError) -> String {
    match e.status {
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => {
            c.t("urgent.refused").to_owned()
        }
        _ => e.error.clone(),
    }
}

/// `POST /urgent`: send (an admin publishes at once) or request (an operator's waits for a
/// second operator), through `api::urgent::submit`.
pub async fn send(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Result<Response, Failure> {
    let (csrf, sent) = read_form(pairs);
    let who = c.require_post(api::OPERATOR, &csrf)?.token.clone();
    let targets = Targets {
        feeds: sent.feeds.clone(),
        devices: names(&sent.devices),
    };
    let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let done = urgent::submit(
        &st,
        &who,
        sent.text.clone(),
        targets,
        some(&sent.expires_at),
        some(&sent.expires_in),
    )
    .await;
    match done {
        Ok(d) => {
            let mut page = page_of(&st, &c, Sent::default()).await?;
            page.notice = match d.sent {
                Some(s) => format!(
                    "{} {} ({} {})",
                    c.t("urgent.published"),
                    d.message.id,
                    c.t("urgent.displays_reached"),
                    s.displays
                ),
                None => format!("{} {}", c.t("urgent.requested"), d.message.id),
            };
            let mut r = html(&page);
            *r.status_mut() = if d.sent.is_some() {
                StatusCode::CREATED
            } else {
                StatusCode::ACCEPTED
            };
            Ok(r)
        }
        Err(e) if e.status.is_client_error() || e.status == StatusCode::SERVICE_UNAVAILABLE => {
            let mut page = page_of(&st, &c, sent).await?;
            page.error = refusal(&c, &e);
            page.details = e.details;
            let mut r = html(&page);
            *r.status_mut() = e.status;
            Ok(r)
        }
        Err(e) => Err(c.api_failure(e)),
    }
}

#[derive(serde::Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /urgent/{id}/approve`: a second operator (or an admin) publishes a request.
pub async fn approve(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Result<Response, Failure> {
    let who = c.require_post(api::OPERATOR, &f.csrf)?.token.clone();
    match urgent::approve_message(&st, &id, &who).await {
        Ok(_) => Ok(Redirect::to("/urgent").into_response()),
        Err(e) if e.status == StatusCode::UNPROCESSABLE_ENTITY => {
            // Checked again against today's displays: it stays pending, each field named.
            let mut page = page_of(&st, &c, Sent::default()).await?;
            page.error = format!("{} {id}", c.t("urgent.still_pending"));
            page.details = e.details;
            let mut r = html(&page);
            *r.status_mut() = e.status;
            Ok(r)
        }
        Err(e) => Err(c.api_failure(e)),
    }
}

/// `POST /urgent/{id}/cancel`.
pub async fn cancel(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Path(id): Path<String>,
    Form(f): Form<ActionForm>,
) -> Result<Response, Failure> {
    let who = c.require_post(api::OPERATOR, &f.csrf)?.token.clone();
    urgent::cancel_message(&st, &id, &who)
        .await
        .map_err(|e| c.api_failure(e))?;
    Ok(Redirect::to("/urgent").into_response())
}

#[cfg(test)]
mod tests {
    use super::names;

    #[test]
    fn display_names_split_at_commas_and_spaces_in_either_script() {
        assert_eq!(
            names("bus-1, bus-2，taxi-1、 stop-1\nbus-3"),
            ["bus-1", "bus-2", "taxi-1", "stop-1", "bus-3"]
        );
        assert!(names("  ").is_empty());
    }
}
