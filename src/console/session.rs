//! Who is reading the console: the session cookie, the request's origin and the language.
//!
//! A session id is 32 random bytes (hex) that only the browser holds, in the cookie
//! `civicast_session` (HttpOnly, SameSite=Strict, Path=/, Secure when the request came over
//! TLS); the database keeps its SHA-256 and the token that opened it. Every request reads
//! the session back joined with its token, so a revoked token's sessions end at once. The
//! CSRF token of a session is the SHA-256 of `csrf:` and its id: only the holder of the
//! cookie can know it, and it needs no storage. A state-changing request must carry it and
//! come from the console's own origin (its `Origin`, else its `Referer`, names the `Host`).
//!
//! TLS: the daemon itself speaks plain HTTP; behind a proxy that ends TLS, the proxy says so
//! with `X-Forwarded-Proto: https` (or `Forwarded: proto=https`). A client that sends it
//! over plain HTTP only gets a cookie its own browser will not send back.
//!
//! Owns: the cookie, the session's lifetime, the CSRF and origin checks. Must not decide
//! what a role may do (`api`'s role lists do).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use super::i18n::{self, Lang, LANG_COOKIE};
use crate::api::{self, ApiState};
use crate::store::{Role, TokenRow};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "civicast_session";
/// How long a session lasts from sign-in (it ends sooner when its token is revoked).
pub const SESSION_HOURS: i64 = 12;

/// A value of the `Cookie` header by name.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Whether the request reached the console over TLS, as a proxy in front says.
pub fn over_tls(headers: &HeaderMap) -> bool {
    let first = |h: header::HeaderName| {
        headers.get(h).and_then(|v| v.to_str().ok()).map(|v| {
            v.split(',')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    };
    if first(header::HeaderName::from_static("x-forwarded-proto")).as_deref() == Some("https") {
        return true;
    }
    first(header::FORWARDED).is_some_and(|f| {
        f.split(';')
            .any(|p| p.trim().replace('"', "") == "proto=https")
    })
}

/// The `host[:port]` of an origin or URL (`http://host:port/...`).
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end]).filter(|a| !a.is_empty())
}

/// Whether a request comes from a page of this console: its `Origin` (or, without one,
/// its `Referer`) names the host it was sent to, and the browser does not call it
/// cross-site. A request with neither header is refused: every browser sends `Origin` on
/// a form's POST.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let text = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if text("sec-fetch-site").is_some_and(|s| s == "cross-site" || s == "same-site") {
        return false;
    }
    let host = host_of(headers);
    let from = text("origin")
        .filter(|o| *o != "null")
        .or_else(|| text("referer"))
        .and_then(authority);
    matches!((host, from), (Some(h), Some(f)) if h.eq_ignore_ascii_case(f))
}

/// The host the reader asked for (the first proxy's `X-Forwarded-Host`, else `Host`).
fn host_of(headers: &HeaderMap) -> Option<&str> {
    let text = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    text("x-forwarded-host")
        .map(|h| h.split(',').next().unwrap_or("").trim())
        .or_else(|| text("host"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A new session id: 32 bytes from the system's generator, as hex.
pub fn new_session_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex(&b)
}

/// The CSRF token of the session `sid`.
pub fn csrf_of(sid: &str) -> String {
    hex(&Sha256::digest(format!("csrf:{sid}").as_bytes()))
}

/// Compares in time independent of where the first difference is.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The `Set-Cookie` value of a session; `max_age_s` 0 removes the cookie.
pub fn session_cookie(sid: &str, max_age_s: i64, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let v = format!(
        "{SESSION_COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_s}{secure}"
    );
    HeaderValue::from_str(&v)
        .unwrap_or_else(|_| HeaderValue::from_static("civicast_session=; Max-Age=0"))
}

/// The `Set-Cookie` value of the language choice (a year; not secret, so readable).
pub fn lang_cookie(lang: Lang, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    let v = format!(
        "{LANG_COOKIE}={}; SameSite=Strict; Path=/; Max-Age=31536000{secure}",
        lang.tag()
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("civicast_lang=zh-CN"))
}

/// A signed-in reader.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub token: TokenRow,
    /// The SHA-256 of the session id, as stored.
    pub session_hash: String,
    pub csrf: String,
}

/// What every page knows of its request: language, reader, origin, address.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub lang: Lang,
    pub viewer: Option<Viewer>,
    pub tls: bool,
    pub same_origin: bool,
    /// The path and query asked for, for the language toggle to come back to.
    pub here: String,
}

impl Ctx {
    /// The text of `key` in the reader's language.
    pub fn t<'a>(&self, key: &'a str) -> &'a str {
        i18n::text(self.lang, key)
    }
    /// A status or state word (`approved`, `played`, `yes`, ...) in the reader's language:
    /// the catalog's `word.<s>`, or `s` itself for a word the catalog lacks.
    pub fn word(&self, s: &str) -> String {
        let key = format!("word.{s}");
        let t = i18n::text(self.lang, &key);
        if t == key {
            s.to_owned()
        } else {
            t.to_owned()
        }
    }
    pub fn asset(&self, name: &str) -> String {
        super::assets::url(name)
    }
    pub fn csrf(&self) -> &str {
        self.viewer.as_ref().map_or("", |v| v.csrf.as_str())
    }
    pub fn user(&self) -> &str {
        self.viewer.as_ref().map_or("", |v| v.token.name.as_str())
    }
    pub fn role(&self) -> &str {
        self.viewer.as_ref().map_or("", |v| v.token.role.as_str())
    }
    /// Whether the reader may use a page open to `roles` (admin may use all), as the API
    /// decides for its routes.
    pub fn may(&self, roles: &[Role]) -> bool {
        self.viewer
            .as_ref()
            .is_some_and(|v| v.token.role == Role::Admin || roles.contains(&v.token.role))
    }
    pub fn may_operate(&self) -> bool {
        self.may(api::OPERATOR)
    }
    pub fn may_audit(&self) -> bool {
        self.may(api::AUDITOR)
    }
    /// Whether a posted CSRF token is this session's.
    pub fn csrf_ok(&self, posted: &str) -> bool {
        self.viewer
            .as_ref()
            .is_some_and(|v| same_secret(&v.csrf, posted))
    }
}

impl FromRequestParts<Arc<ApiState>> for Ctx {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let h = &parts.headers;
        let lang = cookie(h, LANG_COOKIE)
            .and_then(Lang::parse)
            .unwrap_or_default();
        let viewer = match cookie(h, SESSION_COOKIE).filter(|s| !s.is_empty()) {
            Some(sid) => viewer(st, sid).await,
            None => None,
        };
        Ok(Ctx {
            lang,
            viewer,
            tls: over_tls(h),
            same_origin: same_origin(h),
            here: here_of(parts),
        })
    }
}

/// Where the language toggle comes back to: the address asked for, except after a form post
/// (a refused form is shown at its POST-only address), where it is the page the form was on,
/// as the same-origin `Referer` names it.
fn here_of(parts: &Parts) -> String {
    let asked = parts
        .uri
        .path_and_query()
        .map_or("/".into(), |p| p.as_str().to_owned());
    if parts.method == axum::http::Method::GET || parts.method == axum::http::Method::HEAD {
        return asked;
    }
    let h = &parts.headers;
    let from = h
        .get(axum::http::header::REFERER)
        .and_then(|v| v.to_str().ok())
        .filter(|r| {
            same_origin(h)
                && authority(r)
                    .zip(host_of(h))
                    .is_some_and(|(a, x)| a.eq_ignore_ascii_case(x))
        })
        .and_then(|r| r.split_once("://"))
        .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
        .filter(|p| !p.starts_with("//") && !p.contains('\\'));
    from.unwrap_or(asked)
}

/// The live session of `sid` with its token; None when unknown, ended or revoked, and
/// when the database cannot say (the page then asks to sign in again).
async fn viewer(st: &ApiState, sid: &str) -> Option<Viewer> {
    let hash = api::token_hash(sid);
    let now = st.clock.now().timestamp_millis();
    match st.store.session(&hash, now).await {
        Ok(Some(s)) => Some(Viewer {
            token: s.token,
            session_hash: hash,
            csrf: csrf_of(sid),
        }),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "reading a console session failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn parts(method: &str, uri: &str, pairs: &[(&'static str, &'static str)]) -> Parts {
        let mut b = axum::http::Request::builder().method(method).uri(uri);
        for (k, v) in pairs {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn after_a_form_post_the_toggle_comes_back_to_the_page_of_the_form() {
        let on = |m, refr| {
            here_of(&parts(
                m,
                "/findings/01J/deadline",
                &[("host", "127.0.0.1:8080"), ("referer", refr)],
            ))
        };
        assert_eq!(
            on("POST", "http://127.0.0.1:8080/findings/01J"),
            "/findings/01J"
        );
        assert_eq!(
            on("GET", "http://127.0.0.1:8080/findings/01J"),
            "/findings/01J/deadline"
        );
        assert_eq!(
            on("POST", "http://evil.example/x"),
            "/findings/01J/deadline"
        );
        assert_eq!(
            on("POST", "http://127.0.0.1:8080//evil.example/"),
            "/findings/01J/deadline"
        );
    }

    #[test]
    fn cookies_are_found_by_name_among_several() {
        let h = headers(&[
            ("cookie", "a=1; civicast_session=abc ; b=2"),
            ("cookie", "c=3"),
        ]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "c"), Some("3"));
        assert_eq!(cookie(&h, "civicast"), None);
    }

    #[test]
    fn only_the_own_host_counts_as_the_same_origin() {
        let host = ("host", "127.0.0.1:8080");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("referer", "http://127.0.0.1:8080/adsets?x=1")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8081")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[host])), "neither header");
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "cross-site")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("x-forwarded-host", "console.city.example"),
            ("origin", "https://console.city.example")
        ])));
    }

    #[test]
    fn tls_is_what_the_proxy_says() {
        assert!(over_tls(&headers(&[("x-forwarded-proto", "https")])));
        assert!(over_tls(&headers(&[(
            "forwarded",
            "for=1.2.3.4;proto=https"
        )])));
        assert!(!over_tls(&headers(&[("x-forwarded-proto", "http")])));
        assert!(!over_tls(&headers(&[])));
        let c = session_cookie("abc", 60, true);
        let c = c.to_str().expect("ascii");
        for part in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Secure",
            "Max-Age=60",
        ] {
            assert!(c.contains(part), "{c}");
        }
        let plain = session_cookie("abc", 60, false);
        assert!(!plain.to_str().expect("ascii").contains("Secure"));
    }

    #[test]
    fn session_ids_are_random_and_their_csrf_tokens_differ() {
        let (a, b) = (new_session_id(), new_session_id());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert_ne!(csrf_of(&a), csrf_of(&b));
        assert!(same_secret(&csrf_of(&a), &csrf_of(&a)));
        assert!(!same_secret(&csrf_of(&a), &csrf_of(&b)));
        assert!(!same_secret("", "x"));
    }
}
