//! HTTP as operators and monitoring use it: requests through the API router in-process,
//! a plain GET over TCP to a running `civicast serve`, bearer tokens, and reading JSON
//! and Prometheus bodies.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use civicast::api;
use civicast::store::{ApiStore, Role};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// One request through `router`: (status, body). `bearer` is sent as the
/// `Authorization: Bearer` token, `ctype` as the `Content-Type`.
pub async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    bearer: Option<&str>,
    ctype: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = bearer {
        b = b.header("Authorization", format!("Bearer {t}"));
    }
    if let Some(c) = ctype {
        b = b.header("Content-Type", c);
    }
    let resp = router
        .clone()
        .oneshot(b.body(Body::from(body.to_owned())).expect("request"))
        .await
        .expect("response");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A body that must be JSON.
pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Creates a token per (name, role) in `store`; returns each name's secret.
pub async fn create_tokens<S: ApiStore>(
    store: &S,
    accounts: &[(&'static str, Role)],
) -> HashMap<&'static str, String> {
    let mut tokens = HashMap::new();
    for (name, role) in accounts {
        let t = api::new_token();
        store
            .create_token(name, *role, &api::token_hash(&t), 0)
            .await
            .expect("token");
        tokens.insert(*name, t);
    }
    tokens
}

/// A plain HTTP/1.1 GET; (status, body) or None when nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = Duration::from_secs(3);
    let mut s = tokio::time::timeout(t, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(t, s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A Prometheus sample's value from a `/metrics` body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.split_whitespace().next() == Some(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
