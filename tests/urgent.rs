//! Urgent messages end to end, in-process: the daemon on its embedded broker and SQLite, its
//! HTTP API served on a port of its own (so `civicast urgent` talks to it as a user's shell
//! would), MQTT clients as displays, and the audit an auditor reads.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use civicast::daemon;
use civicast::store::{Role, SqliteStore};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

mod common;
use common::*;

/// A warning every display of the test city can show (13 characters of GB2312 at most).
const WARNING: &str = "台风红色预警 请勿外出";

fn cmd_topic(device: &str) -> String {
    format!("{P}/devices/{device}/cmd")
}

struct Town {
    dir: tempfile::TempDir,
    running: daemon::App,
    shutdown: CancellationToken,
    router: axum::Router,
    http: SocketAddr,
    port: u16,
    tokens: std::collections::HashMap<&'static str, String>,
}

/// The test city (buses on feed `bus`, a taxi on `taxi`, a play a second) with the API on
/// a port of its own; tokens for operators op1 and op2, auditor aud, admin adm.
async fn town() -> Town {
    let dir = tempfile::tempdir().expect("tempdir");
    write_city(dir.path());
    let store: SqliteStore = sqlite_store(dir.path(), "civicast.db").await;
    let (running, shutdown) =
        start_daemon(dir.path(), store.clone(), Broker::Embedded, |_| {}).await;
    let tokens = create_tokens(
        &store,
        &[
            ("op1", Role::Operator),
            ("op2", Role::Operator),
            ("aud", Role::Auditor),
            ("adm", Role::Admin),
        ],
    )
    .await;
    let router = api_router(store, &running);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let http = listener.local_addr().expect("addr");
    let served = router.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, served)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    let port = embedded_port(&running);
    Town {
        dir,
        running,
        shutdown,
        router,
        http,
        port,
        tokens,
    }
}

impl Town {
    async fn call(&self, method: &str, uri: &str, who: &str, body: &Value) -> (StatusCode, Value) {
        let token = self.tokens[who].as_str();
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (code, b) = call(
            &self.router,
            method,
            uri,
            Some(token),
            Some("application/json"),
            &text,
        )
        .await;
        (code, json(&b))
    }

    /// `civicast urgent ...` against this town's API with `who`'s token: (exit ok, stdout,
    /// stderr).
    fn cli(&self, who: &str, args: &[&str]) -> (bool, String, String) {
        let out = civicast_command(self.dir.path())
            .arg("urgent")
            .args(args)
            .env("CIVICAST_API", format!("http://{}", self.http))
            .env("CIVICAST_TOKEN", &self.tokens[who])
            .output()
            .expect("civicast urgent runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await;
    }
}

/// `civicast audit plays` on the town's database: the JSON it prints.
fn audit_plays(dir: &Path, group_by: &str) -> Value {
    let out = civicast_command(dir)
        .args(["audit", "plays", "--group-by", group_by, "--format", "json"])
        .env(
            "CIVICAST_DATABASE_URL",
            format!("sqlite://{}", dir.join("civicast.db").display()),
        )
        .output()
        .expect("civicast audit runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(&String::from_utf8_lossy(&out.stdout))
}

/// The urgent rows of an audit grouped by adset and device: (device, plays).
fn urgent_rows(audit: &Value) -> Vec<(String, i64)> {
    let mut rows: Vec<(String, i64)> = audit["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["adset"] == "urgent")
        .map(|r| {
            (
                r["device"].as_str().unwrap_or("").to_owned(),
                r["plays"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_message_preempts_the_rotation_at_once_and_its_receipts_are_audited() {
    let t = town().await;
    let bus1 = Client::connect(
        "bus-1",
        t.port,
        false,
        &[cmd_topic("bus-1"), format!("{P}/feeds/bus")],
    )
    .await;
    let bus2 = Client::connect("bus-2", t.port, true, &[cmd_topic("bus-2")]).await;
    let taxi = Client::connect(
        "taxi-1",
        t.port,
        true,
        &[cmd_topic("taxi-1"), format!("{P}/feeds/taxi")],
    )
    .await;
    bus1.subscribed(2).await;
    bus2.subscribed(1).await;
    taxi.subscribed(2).await;
    wait_for("the rotation on the bus feed", 10, || {
        !bus1.on("/feeds/bus").is_empty()
    })
    .await;

    // Through the command line, as an admin: published at once.
    let sent_at = Instant::now();
    let (ok, out, err) = t.cli(
        "adm",
        &[
            "send",
            "--text",
            WARNING,
            "--feed",
            "bus",
            "--device",
            "taxi-1",
            "--expires",
            "10m",
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("published to 3 displays"), "{out}");
    wait_for("the warning on every display's cmd topic", 5, || {
        [(&bus1, "bus-1"), (&bus2, "bus-2"), (&taxi, "taxi-1")]
            .iter()
            .all(|(c, d)| !c.on(&format!("/devices/{d}/cmd")).is_empty())
    })
    .await;
    assert!(sent_at.elapsed() < Duration::from_secs(5), "at once");
    let cmd = bus1.on("/devices/bus-1/cmd")[0].clone();
    assert_eq!(cmd["text"], WARNING);
    assert_eq!(
        (cmd["adset"].as_str(), cmd["rev"].as_i64()),
        (Some("urgent"), Some(0))
    );
    assert_eq!(cmd["priority"], i64::from(i32::MAX));
    assert!(
        cmd.get("feed").is_none(),
        "a direct command has no feed: {cmd}"
    );
    let life = cmd["duration_s"].as_i64().expect("duration");
    assert!(
        (590..=600).contains(&life),
        "on screen until it expires: {life}"
    );
    let on_bus2 = bus2.on("/devices/bus-2/cmd")[0].clone();
    assert_eq!(play_id(&on_bus2), play_id(&cmd), "one play for the feed");
    let on_taxi = taxi.on("/devices/taxi-1/cmd")[0].clone();
    assert_ne!(
        play_id(&on_taxi),
        play_id(&cmd),
        "a play of its own for the display named"
    );

    // Receipts for it are counted like any play's.
    bus1.send_receipt("bus-1", receipt(&play_id(&cmd), ""))
        .await;
    bus2.send_receipt("bus-2", receipt(&play_id(&on_bus2), ""))
        .await;
    taxi.send_receipt("taxi-1", receipt(&play_id(&on_taxi), ""))
        .await;
    let want = vec![
        ("bus-1".to_owned(), 1),
        ("bus-2".to_owned(), 1),
        ("taxi-1".to_owned(), 1),
    ];
    wait_until("the urgent receipts in the audit", 10, || async {
        let (_, a) = t
            .call(
                "GET",
                "/api/v1/audit/plays?group_by=adset,device",
                "aud",
                &Value::Null,
            )
            .await;
        if urgent_rows(&a) == want {
            Ok(())
        } else {
            Err(a.to_string())
        }
    })
    .await;
    assert_eq!(
        urgent_rows(&audit_plays(t.dir.path(), "adset,device")),
        want
    );
    let by_slogan = audit_plays(t.dir.path(), "adset,slogan");
    let id = by_slogan["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["adset"] == "urgent")
        .map(|r| r["slogan"].clone())
        .expect("the message is its own slogan");
    assert_eq!(id, cmd["slogan"]);
    let metrics = http_get(t.http, "/metrics").await.expect("metrics").1;
    for reason in ["unknown_play", "not_sent", "out_of_window"] {
        let name = format!("civicast_receipts_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&metrics, &name).unwrap_or(0.0), 0.0, "{name}");
    }

    // The rotation is held on both feeds it reaches: no rotation play replaces it. Feeds
    // play every second, so three seconds without one is the hold, not chance.
    let before = (bus1.on("/feeds/bus").len(), taxi.on("/feeds/taxi").len());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        (bus1.on("/feeds/bus").len(), taxi.on("/feeds/taxi").len()),
        before,
        "held"
    );

    // Listed as published; cancelled, the rotation resumes.
    let (ok, out, err) = t.cli("aud", &["list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(id.as_str().expect("id")) && out.contains("published"),
        "{out}"
    );
    let (code, m) = t
        .call(
            "POST",
            &format!("/api/v1/urgent/{}/cancel", id.as_str().expect("id")),
            "op1",
            &Value::Null,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{m}");
    assert_eq!(
        (m["status"].as_str(), m["cancelled_by"].as_str()),
        (Some("cancelled"), Some("op1"))
    );
    wait_for("the rotation again", 5, || {
        bus1.on("/feeds/bus").len() > before.0
    })
    .await;
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_eyes_an_operators_request_waits_for_a_second_operator() {
    let t = town().await;
    let bus1 = Client::connect("bus-1", t.port, false, &[cmd_topic("bus-1")]).await;
    bus1.subscribed(1).await;
    let body = json!({"text": WARNING, "devices": ["bus-1"], "expires_in": "15m"});

    let (code, auditor) = t.call("POST", "/api/v1/urgent", "aud", &body).await;
    assert_eq!(
        code,
        StatusCode::FORBIDDEN,
        "an auditor cannot send: {auditor}"
    );
    let (code, m) = t.call("POST", "/api/v1/urgent", "op1", &body).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{m}");
    assert_eq!(
        (m["status"].as_str(), m["requested_by"].as_str()),
        (Some("pending"), Some("op1"))
    );
    let id = m["id"].as_str().expect("id").to_owned();
    let approve = format!("/api/v1/urgent/{id}/approve");

    let (code, own) = t.call("POST", &approve, "op1", &Value::Null).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "never one's own: {own}");
    let (code, _) = t.call("POST", &approve, "aud", &Value::Null).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (_, list) = t.call("GET", "/api/v1/urgent", "aud", &Value::Null).await;
    assert_eq!(list["rows"][0]["status"], "pending", "{list}");
    assert!(
        bus1.on("/cmd").is_empty(),
        "nothing published before the approval"
    );

    // The second operator approves through the command line: published at once.
    let (ok, out, err) = t.cli("op2", &["approve", &id]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("published to 1 displays"), "{out}");
    wait_for("the warning on bus-1", 5, || {
        !bus1.on("/devices/bus-1/cmd").is_empty()
    })
    .await;
    let (_, list) = t.call("GET", "/api/v1/urgent", "op1", &Value::Null).await;
    let row = &list["rows"][0];
    assert_eq!(
        (
            row["status"].as_str(),
            row["requested_by"].as_str(),
            row["approved_by"].as_str()
        ),
        (Some("published"), Some("op1"), Some("op2"))
    );
    let (code, again) = t.call("POST", &approve, "adm", &Value::Null).await;
    assert_eq!(code, StatusCode::CONFLICT, "approved once: {again}");

    // An operator's request through the command line, refused approval by its own sender.
    let (ok, out, err) = t.cli(
        "op2",
        &[
            "send",
            "--text",
            "道路封闭 请绕行",
            "--feed",
            "taxi",
            "--expires",
            "30m",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("pending"), "{out}");
    let second = out.split_whitespace().nth(2).expect("id").to_owned();
    let (ok, _, err) = t.cli("op2", &["approve", &second]);
    assert!(!ok && err.contains("403"), "{err}");
    assert_eq!(bus1.on("/devices/bus-1/cmd").len(), 1);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_a_target_cannot_show_is_refused_and_nothing_is_stored_or_published() {
    let t = town().await;
    let taxi = Client::connect("taxi-1", t.port, true, &[cmd_topic("taxi-1")]).await;
    taxi.subscribed(1).await;
    // The taxi top shows 12 characters; the buses 40.
    let long = "一二三四五六七八九十一二三";
    let (code, e) = t
        .call(
            "POST",
            "/api/v1/urgent",
            "adm",
            &json!({"text": long, "feeds": ["bus"], "devices": ["taxi-1"], "expires_in": "10m"}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let d = &e["details"][0];
    assert_eq!(d["field"], "text", "{e}");
    let msg = d["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("taxi_top") && msg.contains("taxi-1") && msg.contains("13 characters"),
        "{msg}"
    );
    assert_eq!(
        e["details"].as_array().map(Vec::len),
        Some(1),
        "the buses can show it: {e}"
    );

    for (body, field) in [
        (
            json!({"text": WARNING, "feeds": ["nope"], "expires_in": "10m"}),
            "feeds[1]",
        ),
        (
            json!({"text": WARNING, "devices": ["ghost"], "expires_in": "10m"}),
            "devices[1]",
        ),
        (json!({"text": WARNING, "expires_in": "10m"}), "targets"),
        (
            json!({"text": WARNING, "feeds": ["bus"], "expires_at": "2020-01-01T00:00:00+08:00"}),
            "expires_at",
        ),
        (
            json!({"text": WARNING, "feeds": ["bus"], "expires_in": "100h"}),
            "expires_at",
        ),
        (
            json!({"text": "", "feeds": ["bus"], "expires_in": "10m"}),
            "text",
        ),
    ] {
        let (code, e) = t.call("POST", "/api/v1/urgent", "adm", &body).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
        assert_eq!(e["details"][0]["field"], field, "{body}: {e}");
    }
    for (body, field) in [
        (json!({"text": WARNING, "feeds": ["bus"]}), "expires_at"),
        (
            json!({"text": WARNING, "feeds": ["bus"], "expires_in": "soon"}),
            "expires_in",
        ),
        (
            json!({"text": WARNING, "feeds": "bus", "expires_in": "10m"}),
            "body",
        ),
    ] {
        let (code, e) = t.call("POST", "/api/v1/urgent", "adm", &body).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert_eq!(e["details"][0]["field"], field, "{body}: {e}");
    }
    let (ok, _, err) = t.cli(
        "adm",
        &[
            "send",
            "--text",
            long,
            "--device",
            "taxi-1",
            "--expires",
            "10m",
        ],
    );
    assert!(
        !ok && err.contains("422") && err.contains("taxi_top"),
        "{err}"
    );

    let (_, list) = t.call("GET", "/api/v1/urgent", "adm", &Value::Null).await;
    assert_eq!(list["rows"], json!([]), "nothing stored");
    // A valid message to the same display arrives at once, so the refused ones would have.
    let (code, m) = t
        .call(
            "POST",
            "/api/v1/urgent",
            "adm",
            &json!({"text": "台风预警", "devices": ["taxi-1"], "expires_in": "10m"}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{m}");
    wait_for("the valid one", 5, || !taxi.on("/cmd").is_empty()).await;
    let got = taxi.on("/cmd");
    assert_eq!(
        got.len(),
        1,
        "only the valid message was published: {got:?}"
    );
    assert_eq!(got[0]["text"], "台风预警");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_rotation_held_until_the_message_expires() {
    let t = town().await;
    let (code, m) = t
        .call(
            "POST",
            "/api/v1/urgent",
            "adm",
            &json!({"text": WARNING, "feeds": ["bus"], "expires_in": "10m"}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{m}");
    let Town {
        dir,
        running,
        shutdown,
        ..
    } = t;
    shutdown.cancel();
    running.wait().await;

    let store = sqlite_store(dir.path(), "civicast.db").await;
    let (running, shutdown) = start_daemon(dir.path(), store, Broker::Embedded, |_| {}).await;
    let port = embedded_port(&running);
    let obs = Client::connect(
        "observer",
        port,
        false,
        &[format!("{P}/feeds/bus"), format!("{P}/feeds/taxi")],
    )
    .await;
    obs.subscribed(2).await;
    // The taxi feed plays every second, so its plays show the scheduler running; the bus
    // feed, held, gets none meanwhile.
    wait_for("three taxi plays", 10, || obs.on("/feeds/taxi").len() >= 3).await;
    assert!(
        obs.on("/feeds/bus").is_empty(),
        "{:?}",
        obs.on("/feeds/bus")
    );
    shutdown.cancel();
    running.wait().await;
}
