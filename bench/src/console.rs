//! The console scenario: every page of the web console, rendered on the synthetic year
//! (`--receipts`, the audit scenario's database, `--reuse` to keep it) by the daemon's own
//! router in this process, signed in as an auditor; each auditor page beside the HTTP API's
//! answer to the same query and beside the store's read alone, in the same run. What a page
//! adds to the store's time is the console's own cost (templates, escaping, the chart).
//!
//! Owns: the list of pages timed and their table. Must not touch: the pages' code (it asks
//! the router as a browser would, with a session cookie).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use chrono::{DateTime, Utc};
use civicast::api::{self, ApiState};
use civicast::core::audit::{PlaysParams, PlaysQuery};
use civicast::daemon::{self, Startup};
use civicast::settings::Settings;
use civicast::store::{ApiStore, Role, SqliteStore, Store};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::audit::{inventory_root, write_audit_inventory};
use crate::fixture::{device_name, load_catalog};
use crate::plays::cases;
use crate::report::{met, pct};
use crate::synth::LoadOptions;

/// The target of issue 13: every page within 200 ms at the 95th percentile.
const TARGET_P95_MS: f64 = 200.0;

/// One page's timings, with its baselines where it has them.
#[derive(Debug, Clone, Default)]
pub struct PageReport {
    pub name: String,
    pub path: String,
    pub status: u16,
    pub bytes: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// The API route answering the same query, JSON (auditor pages only).
    pub api_p50_ms: Option<f64>,
    /// `Store::audit_plays` alone for the same query (play-count pages only).
    pub store_p50_ms: Option<f64>,
}

/// The console's "now": half an hour before the history ends, so that the overview's last
/// hour has receipts in it.
struct HistoryClock(DateTime<Utc>);

impl daemon::Clock for HistoryClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

fn query_string(p: &PlaysParams) -> String {
    let fields = [
        ("from", &p.from),
        ("to", &p.to),
        ("group_by", &p.group_by),
        ("class", &p.class),
        ("device", &p.device),
        ("slogan", &p.slogan),
        ("feed", &p.feed),
        ("status", &p.status),
    ];
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (*k, v)))
        .collect();
    serde_urlencoded::to_string(pairs).unwrap_or_default()
}

/// GET `path` with `auth` (a header name and value); the status, the body's length and the
/// time to its last byte.
async fn get(
    router: &axum::Router,
    path: &str,
    auth: (header::HeaderName, &str),
) -> anyhow::Result<(StatusCode, usize, f64)> {
    let req = Request::get(path)
        .header(auth.0, auth.1)
        .body(Body::empty())
        .context("building a request")?;
    let t = Instant::now();
    let resp = router.clone().oneshot(req).await?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("the body broke off: {e}"))?
        .to_bytes();
    Ok((status, body.len(), t.elapsed().as_secs_f64() * 1e3))
}

/// `runs` timed GETs of `path` after one untimed; p50 and p95 in ms.
async fn timed(
    router: &axum::Router,
    path: &str,
    auth: (header::HeaderName, &str),
    runs: usize,
) -> anyhow::Result<(StatusCode, usize, f64, f64)> {
    let (status, bytes, _) = get(router, path, auth.clone()).await?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        ms.push(get(router, path, auth.clone()).await?.2);
    }
    Ok((status, bytes, pct(ms.clone(), 0.5), pct(ms, 0.95)))
}

/// Signs in through `/?token=` as a browser opening the demo's link would; the cookie.
async fn sign_in(router: &axum::Router, token: &str) -> anyhow::Result<String> {
    let req = Request::get(format!("/?token={token}"))
        .body(Body::empty())
        .context("building the sign-in request")?;
    let resp = router.clone().oneshot(req).await?;
    let cookie = resp
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    cookie.with_context(|| format!("signing in answered {} without a cookie", resp.status()))
}

/// The pages timed: every page an auditor reaches, the play counts once per question of the
/// audit scenario.
fn pages(o: &LoadOptions, tz: chrono_tz::Tz) -> Vec<(String, String, Option<PlaysParams>)> {
    let end = o.end.with_timezone(&tz);
    let week = format!(
        "from={}&to={}",
        (end - chrono::Duration::days(7)).format("%Y-%m-%d"),
        end.format("%Y-%m-%d")
    );
    // The page's own default period is the last day: timed too, beside the week.
    let day = format!(
        "from={}&to={}",
        (end - chrono::Duration::days(1)).format("%Y-%m-%d"),
        end.format("%Y-%m-%d")
    );
    let mut out: Vec<(String, String, Option<PlaysParams>)> = [
        ("overview", "/".to_owned()),
        ("overview, live part", "/overview/live".to_owned()),
        ("ad sets", "/adsets".to_owned()),
        ("ad set", "/adsets/civility".to_owned()),
        ("revision", "/adsets/civility/rev/1".to_owned()),
        ("LED preview", "/adsets/civility/rev/1/preview".to_owned()),
        ("displays", "/displays".to_owned()),
        ("displays, one class", "/displays?class=bus_led".to_owned()),
        ("display", format!("/displays/{}", device_name(1))),
        ("compliance, 7 days", format!("/audit/compliance?{week}")),
        ("sample", "/audit/sample".to_owned()),
        ("reconcile, 7 days", format!("/audit/reconcile?{week}")),
        ("reconcile, 1 day", format!("/audit/reconcile?{day}")),
        ("urgent messages", "/urgent".to_owned()),
        ("about", "/about".to_owned()),
    ]
    .into_iter()
    .map(|(n, p)| (n.to_owned(), p, None))
    .collect();
    for c in cases(o, tz) {
        let path = format!("/audit/plays?{}", query_string(&c.params));
        out.push((format!("plays {}", c.name), path, Some(c.params)));
    }
    out
}

/// The daemon (embedded broker) on the history's inventory, its router with the console's
/// clock at the end of the history, and an auditor's session cookie and token.
async fn start(
    store: &SqliteStore,
    root: &Path,
    o: &LoadOptions,
) -> anyhow::Result<(daemon::App, axum::Router, String, String)> {
    let catalog = load_catalog(root)?;
    let settings = Settings {
        devices: root.join("devices"),
        schedules: root.join("schedules"),
        ..Settings::default()
    };
    let mut startup = Startup::new(settings, store.clone().into(), catalog);
    startup.listeners.mqtt = Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    let running = daemon::App::start(startup).await?;
    let token = api::new_token();
    let name = format!("bench-auditor-{}", ulid::Ulid::new());
    store
        .create_token(&name, Role::Auditor, &api::token_hash(&token), 0)
        .await?;
    let state = ApiState::new(
        store.clone().into(),
        running.shared().clone(),
        Arc::new(HistoryClock(o.end - chrono::Duration::minutes(30))),
        Default::default(),
        api::Limits::default(),
    )
    .with_urgent(running.urgent().clone());
    let router = api::router(Arc::new(state));
    let cookie = sign_in(&router, &token).await?;
    Ok((running, router, cookie, token))
}

/// Every page `runs` times; auditor pages beside the API, play counts beside the store.
pub async fn console(
    store: &SqliteStore,
    o: &LoadOptions,
    runs: usize,
) -> anyhow::Result<Vec<PageReport>> {
    let tz = chrono_tz::Asia::Shanghai;
    let root: PathBuf = inventory_root(store);
    let plays: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plays")
        .fetch_one(store.pool())
        .await?;
    write_audit_inventory(&root, o, plays as usize)?;
    let (running, router, cookie, token) = start(store, &root, o).await?;
    let bearer = format!("Bearer {token}");
    let mut out = Vec::new();
    for (name, path, params) in pages(o, tz) {
        eprintln!("console: {name}: {runs} runs...");
        let (status, bytes, p50_ms, p95_ms) =
            timed(&router, &path, (header::COOKIE, &cookie), runs).await?;
        let api_p50_ms = match path.strip_prefix("/audit/") {
            Some(rest) if status.is_success() => {
                let api_path = format!("/api/v1/audit/{rest}");
                let (s, _, p50, _) =
                    timed(&router, &api_path, (header::AUTHORIZATION, &bearer), runs).await?;
                s.is_success().then_some(p50)
            }
            _ => None,
        };
        let store_p50_ms = match params {
            Some(p) => Some(store_p50(store, &p, tz, runs).await?),
            None => None,
        };
        out.push(PageReport {
            name,
            path,
            status: status.as_u16(),
            bytes,
            p50_ms,
            p95_ms,
            api_p50_ms,
            store_p50_ms,
        });
    }
    running.stop();
    running.wait().await;
    Ok(out)
}

async fn store_p50(
    store: &SqliteStore,
    p: &PlaysParams,
    tz: chrono_tz::Tz,
    runs: usize,
) -> anyhow::Result<f64> {
    let q = PlaysQuery::parse(p, tz).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        store.audit_plays(&q).await?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(pct(ms, 0.5))
}

pub fn print_console(receipts: i64, pages: &[PageReport]) {
    println!();
    println!("console: {receipts} receipts, each page through the router, signed in as an auditor");
    println!("| page | status | bytes | p50 ms | p95 ms | API p50 ms | store p50 ms | p95 within {TARGET_P95_MS} ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
    for p in pages {
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {} | {} | {} |",
            p.name,
            p.status,
            p.bytes,
            p.p50_ms,
            p.p95_ms,
            opt(p.api_p50_ms),
            opt(p.store_p50_ms),
            if p.status == 200 {
                met(p.p95_ms <= TARGET_P95_MS)
            } else {
                "not a page"
            }
        );
    }
}
