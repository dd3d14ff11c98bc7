//! The console scenario: the audit load (synthetic receipts and their rollups), the
//! daemon started on it in-process with its embedded broker, and every console page
//! rendered `runs` times through the same router as `civicast serve`, signed in as an
//! operator or an auditor as the page needs; p50 and p95 per page.
//!
//! Owns: the timings of rendered pages. Must not touch: the console's code (it asks the
//! router as a browser would).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use civicast::api::{self, ApiState};
use civicast::daemon::{self, Startup, SystemClock};
use civicast::settings::Settings;
use civicast::store::{ApiStore, Db, Role};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::audit::write_audit_inventory;
use crate::fixture::load_catalog;
use crate::load::load_sqlite;
use crate::synth::LoadOptions;

const HOST: &str = "127.0.0.1:8080";

/// The pages timed, each with the role that reads it.
const PAGES: [(&str, Role); 12] = [
    ("/", Role::Operator),
    ("/overview/live", Role::Operator),
    ("/adsets", Role::Operator),
    ("/adsets/civility", Role::Operator),
    ("/displays", Role::Operator),
    ("/urgent", Role::Operator),
    ("/audit/plays?group_by=class", Role::Auditor),
    ("/audit/plays?group_by=feed,day", Role::Auditor),
    ("/audit/plays?group_by=hour", Role::Auditor),
    ("/audit/compliance", Role::Auditor),
    ("/audit/sample", Role::Auditor),
    ("/audit/reconcile", Role::Auditor),
];

#[derive(Debug, Clone)]
pub struct PageTime {
    pub path: &'static str,
    pub status: u16,
    pub bytes: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn ask(
    router: &axum::Router,
    req: Request<Body>,
) -> anyhow::Result<(u16, Vec<String>, usize)> {
    let resp = router.clone().oneshot(req).await?;
    let status = resp.status().as_u16();
    let cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, cookies, body.len()))
}

/// Signs in with a new token of `role`: the session cookie.
async fn session(router: &axum::Router, store: &Db, role: Role) -> anyhow::Result<String> {
    let t = api::new_token();
    store
        .create_token(role.as_str(), role, &api::token_hash(&t), 0)
        .await?;
    let req = Request::post("/signin")
        .header("host", HOST)
        .header("origin", format!("http://{HOST}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(format!("token={t}")))?;
    let (status, cookies, _) = ask(router, req).await?;
    anyhow::ensure!(status == 303, "signing in answered {status}");
    cookies
        .iter()
        .find(|c| c.starts_with("civicast_session="))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))
}

/// The load under `dir`, the daemon on it, then each page `runs` times.
pub async fn console(dir: &Path, o: &LoadOptions, runs: usize) -> anyhow::Result<Vec<PageTime>> {
    let (store, load) = load_sqlite(&dir.join("console.db"), o).await?;
    crate::load::print_load(&load);
    let root = dir.join("console-inventory");
    write_audit_inventory(&root, o, load.plays.max(0) as usize)?;
    let catalog = load_catalog(&root)?;
    let settings = Settings {
        devices: root.join("devices"),
        schedules: root.join("schedules"),
        ..Settings::default()
    };
    let db: Db = store.into();
    let mut startup = Startup::new(settings, db.clone(), catalog);
    startup.listeners.mqtt = Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
    let shutdown = startup.shutdown.clone();
    let running = daemon::App::start(startup).await?;
    let state = Arc::new(
        ApiState::new(
            db.clone(),
            running.shared().clone(),
            Arc::new(SystemClock),
            Default::default(),
            api::Limits::default(),
        )
        .with_urgent(running.urgent().clone()),
    );
    let router = api::router(state);
    let operator = session(&router, &db, Role::Operator).await?;
    let auditor = session(&router, &db, Role::Auditor).await?;
    let mut out = Vec::new();
    for (path, role) in PAGES {
        let cookie = if role == Role::Auditor {
            &auditor
        } else {
            &operator
        };
        let mut ms = Vec::with_capacity(runs);
        let (mut status, mut bytes) = (0, 0);
        for _ in 0..runs.max(1) {
            let req = Request::get(path)
                .header("host", HOST)
                .header("cookie", cookie.as_str())
                .body(Body::empty())?;
            let t = Instant::now();
            let (s, _, b) = ask(&router, req).await?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            (status, bytes) = (s, b);
        }
        ms.sort_by(f64::total_cmp);
        eprintln!("console: {path}: {runs} renders, status {status}");
        out.push(PageTime {
            path,
            status,
            bytes,
            p50_ms: percentile(&ms, 0.5),
            p95_ms: percentile(&ms, 0.95),
        });
    }
    shutdown.cancel();
    running.wait().await;
    Ok(out)
}

pub fn print_console(o: &LoadOptions, runs: usize, pages: &[PageTime]) {
    println!();
    println!(
        "console: each page rendered {runs} times through the router, {} receipts, {} displays",
        o.receipts, o.displays
    );
    println!("| page | status | bytes | p50 ms | p95 ms |");
    println!("|---|---:|---:|---:|---:|");
    for p in pages {
        println!(
            "| `{}` | {} | {} | {:.1} | {:.1} |",
            p.path, p.status, p.bytes, p.p50_ms, p.p95_ms
        );
    }
}
