//! The HTTP API as operators and auditors use it: every route with every role, bad input
//! answered with the field at fault, and the ad-set lifecycle down to what plays.

use std::time::Duration;

use axum::http::StatusCode;
use civicast::api;

mod common;
use common::{json, spawn_app, wait_for, wait_until, App, ONE_SLOGAN_ADSET as ADSET};

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
    wait_until("healthy", 5, || async {
        let (code, body) = app.get("/healthz", None).await;
        if code == StatusCode::OK {
            assert_eq!(json(&body)["status"], "ok");
            return Ok(());
        }
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        Err(body)
    })
    .await;
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
        let c = app.running.shared().last_plays();
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
    wait_for("the approved set to play within one interval", 5, || {
        current_slogan(&app).as_deref() == Some("queue-up")
    })
    .await;
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
    wait_for("the retired set to stop playing", 5, || {
        current_slogan(&app).as_deref() == Some("civility")
    })
    .await;
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
