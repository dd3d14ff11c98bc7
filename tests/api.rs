//! The HTTP API as operators and auditors use it: every route with every role, bad input
//! answered with the field at fault, and the ad-set lifecycle down to what plays.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use civicast::api::{self, ApiState};
use civicast::daemon::{self, SystemClock};
use civicast::settings::Settings;
use civicast::store::{ApiStore, Role, SqliteStore};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const CLASSES: &str = r#"
[class.bus_led]
max_chars = 40
charset = "gb2312"
duration = "1s"

[class.taxi_top]
max_chars = 12
charset = "gb2312"
duration = "1s"
"#;

const FEEDS: &str = r#"
timezone = "Asia/Shanghai"

[[feed]]
id = "bus"
select = { class = "bus_led" }
interval = "1s"
"#;

const ADSET: &str = r#"
id = "civility"
valid_from = "2020-01-01"
valid_until = "2099-12-31"

[[slogan]]
id = "jiang-wenming"
text = "讲文明 树新风"
"#;

struct App {
    router: axum::Router,
    shutdown: CancellationToken,
    running: daemon::Running,
    tokens: std::collections::HashMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

async fn spawn_app() -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    w(
        "devices/fleet.csv",
        "id,class\nbus-1,bus_led\nbus-2,bus_led\ntaxi-1,taxi_top\n",
    );
    w("devices/classes.toml", CLASSES);
    w("schedules/feeds.toml", FEEDS);
    w("schedules/adsets/civility.toml", ADSET);
    let report = civicast::core::catalog::load_dirs(
        &dir.path().join("devices"),
        &dir.path().join("schedules"),
    );
    let catalog = report.catalog.expect("valid city");
    let store = SqliteStore::connect(&format!("sqlite://{}", dir.path().join("t.db").display()))
        .await
        .expect("sqlite");
    let settings = Settings {
        devices: dir.path().join("devices"),
        schedules: dir.path().join("schedules"),
        ..Settings::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shutdown = CancellationToken::new();
    let running = daemon::start(
        &settings,
        store.clone(),
        catalog,
        Some(listener),
        Arc::new(SystemClock),
        shutdown.clone(),
    )
    .await
    .expect("daemon");
    let mut tokens = std::collections::HashMap::new();
    for (name, role) in [
        ("op1", Role::Operator),
        ("op2", Role::Operator),
        ("aud", Role::Auditor),
        ("adm", Role::Admin),
    ] {
        let t = api::new_token();
        store
            .create_token(name, role, &api::token_hash(&t), 0)
            .await
            .expect("token");
        tokens.insert(name, t);
    }
    let state = Arc::new(ApiState {
        store: store.into(),
        shared: running.shared.clone(),
        clock: Arc::new(SystemClock),
        factors: Default::default(),
    });
    App {
        router: api::router(state),
        shutdown,
        running,
        tokens,
        _dir: dir,
    }
}

impl App {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        who: Option<&str>,
        ctype: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(w) = who {
            let t = self.tokens.get(w).cloned().unwrap_or_else(|| w.to_owned());
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(c) = ctype {
            b = b.header("Content-Type", c);
        }
        let resp = self
            .router
            .clone()
            .oneshot(b.body(Body::from(body.to_owned())).expect("request"))
            .await
            .expect("response");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }
    async fn get(&self, uri: &str, who: Option<&str>) -> (StatusCode, String) {
        self.call("GET", uri, who, None, "").await
    }
    async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await;
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_token_and_role() {
    let app = spawn_app().await;
    let reads = [
        "/api/v1/adsets",
        "/api/v1/adsets/civility",
        "/api/v1/devices",
        "/api/v1/feeds",
    ];
    let audits = [
        "/api/v1/audit/plays",
        "/api/v1/audit/compliance",
        "/api/v1/audit/sample",
        "/api/v1/audit/reconcile",
    ];
    for uri in reads.iter().chain(&audits) {
        assert_eq!(
            app.get(uri, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{uri} without token"
        );
        assert_eq!(
            app.get(uri, Some("cvc_wrong")).await.0,
            StatusCode::UNAUTHORIZED,
            "{uri} wrong token"
        );
        assert_eq!(
            app.get(uri, Some("adm")).await.0,
            StatusCode::OK,
            "{uri} as admin"
        );
    }
    for uri in reads {
        assert_eq!(
            app.get(uri, Some("op1")).await.0,
            StatusCode::OK,
            "{uri} as operator"
        );
        assert_eq!(
            app.get(uri, Some("aud")).await.0,
            StatusCode::OK,
            "{uri} as auditor"
        );
    }
    for uri in audits {
        assert_eq!(
            app.get(uri, Some("aud")).await.0,
            StatusCode::OK,
            "{uri} as auditor"
        );
        let (code, body) = app.get(uri, Some("op1")).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{uri} as operator");
        assert!(
            json(&body)["error"]
                .as_str()
                .is_some_and(|e| e.contains("auditor")),
            "{body}"
        );
    }
    let (code, _) = app
        .call(
            "POST",
            "/api/v1/adsets",
            Some("aud"),
            Some("application/toml"),
            ADSET,
        )
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "auditors do not upload");
    let (code, _) = app
        .call(
            "POST",
            "/api/v1/adsets/civility/retire",
            Some("aud"),
            None,
            "",
        )
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let (code, _) = app
        .call("POST", "/api/v1/adsets/civility/approve", None, None, "")
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    // Healthy once the daemon's MQTT session is up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (code, body) = app.get("/healthz", None).await;
        if code == StatusCode::OK {
            assert_eq!(json(&body)["status"], "ok");
            break;
        }
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "never healthy: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, metrics) = app.get("/metrics", None).await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        metrics.contains("civicast_receipts_stored_total"),
        "{metrics}"
    );
    let (code, doc) = app.get("/api/v1/openapi.json", None).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(json(&doc)["openapi"], "3.1.0");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_names_the_field_and_the_daemon_keeps_serving() {
    let app = spawn_app().await;
    let bad = [
        ("/api/v1/audit/plays?from=yesterday", "from"),
        ("/api/v1/audit/plays?from=2026-12-01&to=2026-11-01", "from"),
        ("/api/v1/audit/plays?group_by=device,colour", "group_by"),
        ("/api/v1/audit/plays?class=tram", "class"),
        ("/api/v1/audit/plays?status=shown", "status"),
        ("/api/v1/audit/compliance?class=tram", "class"),
        ("/api/v1/audit/compliance?to=not-a-date", "to"),
        ("/api/v1/audit/sample?week=2026-48", "week"),
        ("/api/v1/audit/sample?week=2027-W53", "week"),
        ("/api/v1/audit/sample?per_class=many", "per_class"),
        ("/api/v1/audit/reconcile?feed=nope", "feed"),
        ("/api/v1/audit/plays?format=xml", "format"),
    ];
    for (uri, field) in bad {
        let (code, body) = app.get(uri, Some("aud")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(json(&body)["details"][0]["field"], field, "{uri}: {body}");
    }
    // Uploads: wrong type, too big, broken TOML (with its line), a text a taxi cannot show.
    let (code, _) = app
        .call(
            "POST",
            "/api/v1/adsets",
            Some("op1"),
            Some("text/plain"),
            ADSET,
        )
        .await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!("{ADSET}\n# {}\n", "x".repeat(api::MAX_BODY));
    let (code, _) = app
        .call(
            "POST",
            "/api/v1/adsets",
            Some("op1"),
            Some("application/toml"),
            &big,
        )
        .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    let broken = "id = \"x\"\nvalid_from = \"2026-01-01\"\nvalid_until = \"2026-12-31\"\n[[slogan]]\nid = \"a\"\ntext = \"unterminated\n";
    let (code, body) = app
        .call(
            "POST",
            "/api/v1/adsets",
            Some("op1"),
            Some("application/toml"),
            broken,
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(json(&body)["details"][0]["line"], 6, "{body}");
    let unfit = ADSET
        .replace("讲文明 树新风", "禮讓斑馬線")
        .replace("civility", "unfit");
    let (code, body) = app
        .call(
            "POST",
            "/api/v1/adsets",
            Some("op1"),
            Some("application/toml"),
            &unfit,
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.contains("禮") && body.contains("bus_led"), "{body}");
    let (code, body) = app.get("/api/v1/adsets/unfit", Some("op1")).await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "nothing stored for a refused upload: {body}"
    );
    // Still serving.
    assert_eq!(
        app.get("/api/v1/audit/plays", Some("aud")).await.0,
        StatusCode::OK
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_plays_only_after_another_operator_approves_it() {
    let app = spawn_app().await;
    let fresh = r#"{"id": "queue-up", "valid_from": "2020-01-01", "valid_until": "2099-12-31", "priority": 5,
                    "slogan": [{"id": "paidui", "text": "自觉排队 文明乘车"}]}"#;
    let (code, body) = app
        .call(
            "POST",
            "/api/v1/adsets",
            Some("op1"),
            Some("application/json"),
            fresh,
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let up = json(&body);
    assert_eq!(
        (up["id"].as_str(), up["rev"].as_i64(), up["status"].as_str()),
        (Some("queue-up"), Some(1), Some("pending"))
    );

    let current_slogan = |app: &App| {
        let c = app.running.shared.last_plays();
        c.get("bus").map(|p| p.adset.clone())
    };
    // Pending: the file's ad set keeps playing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(current_slogan(&app).as_deref(), Some("civility"));

    let (code, body) = app
        .call(
            "POST",
            "/api/v1/adsets/queue-up/approve",
            Some("op1"),
            None,
            "",
        )
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN, "one's own upload: {body}");
    let (code, body) = app
        .call(
            "POST",
            "/api/v1/adsets/queue-up/approve",
            Some("op2"),
            None,
            "",
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while current_slogan(&app).as_deref() != Some("queue-up") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the approved set did not play within one interval"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = app.get("/api/v1/adsets/queue-up", Some("aud")).await;
    assert_eq!(code, StatusCode::OK);
    let h = json(&body);
    assert_eq!(h["status"], "approved");
    assert_eq!(h["revisions"][0]["uploaded_by"], "op1");
    assert_eq!(h["revisions"][0]["approved_by"], "op2");

    // A second revision; retire; approving a retired set is refused.
    let (code, body) = app
        .call(
            "POST",
            "/api/v1/adsets",
            Some("op2"),
            Some("application/json"),
            fresh,
        )
        .await;
    assert_eq!(
        (code, json(&body)["rev"].as_i64()),
        (StatusCode::CREATED, Some(2))
    );
    let (code, _) = app
        .call(
            "POST",
            "/api/v1/adsets/queue-up/retire",
            Some("op1"),
            None,
            "",
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, body) = app
        .call(
            "POST",
            "/api/v1/adsets/queue-up/approve",
            Some("op1"),
            None,
            "",
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while current_slogan(&app).as_deref() != Some("civility") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the retired set kept playing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _) = app
        .call(
            "POST",
            "/api/v1/adsets/nothing/approve",
            Some("adm"),
            None,
            "",
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, body) = app
        .get("/api/v1/audit/plays?group_by=feed&format=csv", Some("aud"))
        .await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.starts_with("feed,plays\n"), "{body}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_served_routes() {
    let app = spawn_app().await;
    let (_, doc) = app.get("/api/v1/openapi.json", None).await;
    let doc = json(&doc);
    let mut listed = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("ops").keys() {
            listed += 1;
            let uri = path.replace("{id}", "civility");
            let (code, body) = app
                .call(
                    &method.to_uppercase(),
                    &uri,
                    Some("adm"),
                    Some("application/toml"),
                    ADSET,
                )
                .await;
            assert!(
                !body.contains("no such route"),
                "{method} {path} is documented but not served ({code})"
            );
        }
    }
    assert_eq!(listed, civicast::api::openapi::ROUTES.len());
    let (code, body) = app.get("/api/v1/nothing", Some("adm")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(body.contains("no such route"));
    app.stop().await;
}
