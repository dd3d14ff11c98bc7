//! Signing in and out, and the language toggle. Sign-in exchanges a token (from `civicast
//! token create`) for a session; `/?token=...` (the demo's links) does the same when the
//! browser says the address was typed or opened from outside any site (`Sec-Fetch-Site:
//! none`, or no such header), then redirects to `/` so the token leaves the address bar.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde::Deserialize;

use super::super::i18n::key;
use super::super::i18n::Lang;
use super::super::session::{self, Ctx, SESSION_HOURS};
use super::super::{html, Failure};
use crate::api::{self, ApiState};
use crate::store::ApiStore;

#[derive(Template)]
#[template(path = "console/signin.html")]
pub struct SignInPage<'a> {
    pub c: &'a Ctx,
    /// Why the last attempt failed, as a catalog key; empty for none.
    pub problem: &'a str,
}

/// The sign-in page, with `problem` (a catalog key) shown when set.
pub fn sign_in_page(c: &Ctx, status: StatusCode, problem: &str) -> Response {
    let mut r = html(&SignInPage { c, problem });
    *r.status_mut() = status;
    r
}

#[derive(Deserialize)]
pub struct SignInForm {
    token: String,
}

/// Opens a session for `token`: the cookie and a redirect to the overview; the sign-in page
/// again (401) when the token is unknown or revoked.
pub async fn open_session(st: &ApiState, c: &Ctx, token: &str) -> Response {
    let token = token.trim();
    let row = match st.store.token_by_hash(&api::token_hash(token)).await {
        Ok(Some(row)) if !token.is_empty() => row,
        Ok(_) => return sign_in_page(c, StatusCode::UNAUTHORIZED, key("signin.bad_token")),
        Err(e) => return c.api_failure(e.into()).into_response(),
    };
    let now = st.clock.now().timestamp_millis();
    let sid = session::new_session_id();
    let ends = now + SESSION_HOURS * 3_600_000;
    if let Err(e) = st.store.prune_sessions(now).await {
        tracing::warn!(error = %e, "dropping ended console sessions failed");
    }
    if let Err(e) = st
        .store
        .create_session(&api::token_hash(&sid), row.id, now, ends)
        .await
    {
        return c.api_failure(e.into()).into_response();
    }
    tracing::info!(token = row.id, name = %row.name, role = row.role.as_str(), "console sign-in");
    let mut r = Redirect::to("/").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        session::session_cookie(&sid, SESSION_HOURS * 3600, c.tls),
    );
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `POST /signin`: from this console's own sign-in form only.
pub async fn sign_in(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Form(f): Form<SignInForm>,
) -> Response {
    if !c.same_origin {
        return c
            .fail(
                StatusCode::FORBIDDEN,
                key("error.forbidden"),
                c.t("error.cross_origin").to_owned(),
            )
            .into_response();
    }
    open_session(&st, &c, &f.token).await
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /signout`: ends the session and clears the cookie.
pub async fn sign_out(
    State(st): State<Arc<ApiState>>,
    c: Ctx,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Failure> {
    let v = c.require_post(crate::api::ANY, &f.csrf)?;
    st.store
        .delete_session(&v.session_hash)
        .await
        .map_err(|e| c.api_failure(e.into()))?;
    let mut r = Redirect::to("/").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session::session_cookie("", 0, c.tls));
    Ok(r)
}

#[derive(Deserialize)]
pub struct LangForm {
    lang: String,
    #[serde(default)]
    back: String,
}

/// A path of this console to come back to; `/` for anything else (no open redirect).
fn local_path(p: &str) -> &str {
    if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') {
        p
    } else {
        "/"
    }
}

/// `POST /lang`: the language cookie, then back to the page. Signed out too, so it checks
/// the origin but carries no session's CSRF token; it changes nothing but the words.
pub async fn set_lang(c: Ctx, Form(f): Form<LangForm>) -> Response {
    if !c.same_origin {
        return c
            .fail(
                StatusCode::FORBIDDEN,
                key("error.forbidden"),
                c.t("error.cross_origin").to_owned(),
            )
            .into_response();
    }
    let lang = Lang::parse(&f.lang).unwrap_or_default();
    let mut r = Redirect::to(local_path(&f.back)).into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session::lang_cookie(lang, c.tls));
    r
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn the_toggle_only_comes_back_to_console_paths() {
        assert_eq!(local_path("/adsets?x=1"), "/adsets?x=1");
        assert_eq!(local_path("//evil.example/"), "/");
        assert_eq!(local_path("https://evil.example/"), "/");
        assert_eq!(local_path("/\\evil.example"), "/");
        assert_eq!(local_path(""), "/");
    }
}
