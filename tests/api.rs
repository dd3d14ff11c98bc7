//! The HTTP API as operators and auditors use it: every route with every role, bad input
//! answered with the field at fault, the ad-set lifecycle down to what plays, heavy requests
//! that leave light ones answering, and every answer checked against the OpenAPI document.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use civicast::api;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

mod common;
use common::{
    api_state, call, json, spawn_app, wait_for, wait_until, App, ONE_SLOGAN_ADSET as ADSET,
};

/// One request with headers as given: (status, headers, body).
async fn raw(
    router: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, String) {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = router
        .clone()
        .oneshot(b.body(Body::from(body)).expect("request"))
        .await
        .expect("response");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

/// The OpenAPI document, as an admin reads it.
async fn document(app: &App) -> Value {
    let (code, doc) = app.get("/api/v1/openapi.json", Some("adm")).await;
    assert_eq!(code, StatusCode::OK, "{doc}");
    json(&doc)
}

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// The account of each role.
const ACCOUNTS: [(&str, &str); 3] = [("op1", "operator"), ("aud", "auditor"), ("adm", "admin")];

/// A documented path made callable: `{id}` is an ad set that does not exist, so approving
/// or retiring it changes nothing.
fn probe(path: &str) -> String {
    path.replace("{id}", "nothing").replace("{path}", "0/000")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_checks_token_and_role() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("ops") {
            let m = method.to_uppercase();
            let uri = probe(path);
            let roles: Vec<&str> = op["x-roles"]
                .as_array()
                .expect("x-roles")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let ctype = Some("application/toml");
            if roles.is_empty() {
                // Only /healthz and /metrics, as the contract says, and the receipt log
                // outside /api/v1: public, as tlog clients and witnesses read a log.
                assert!(
                    path == "/healthz" || path == "/metrics" || path.starts_with("/log/"),
                    "{m} {path} takes no token"
                );
                let (code, _) = app.call(&m, &uri, None, ctype, ADSET).await;
                assert_ne!(code, StatusCode::UNAUTHORIZED, "{m} {path}");
                continue;
            }
            for who in [None, Some("cvc_wrong")] {
                let (code, body) = app.call(&m, &uri, who, ctype, ADSET).await;
                assert_eq!(code, StatusCode::UNAUTHORIZED, "{m} {path} as {who:?}");
                assert!(json(&body)["error"].is_string(), "{body}");
            }
            for (account, role) in ACCOUNTS {
                let allowed = role == "admin" || roles.contains(&role);
                let (code, body) = app.call(&m, &uri, Some(account), ctype, ADSET).await;
                if allowed {
                    assert!(
                        code != StatusCode::UNAUTHORIZED && code != StatusCode::FORBIDDEN,
                        "{m} {path} as {role}: {code} {body}"
                    );
                } else {
                    assert_eq!(code, StatusCode::FORBIDDEN, "{m} {path} as {role}: {body}");
                    let e = json(&body)["error"].as_str().unwrap_or("").to_owned();
                    assert!(roles.iter().all(|r| e.contains(r)), "{e}");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 3 * 34, "every secured operation, every role");
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
        ("/api/v1/audit/plays?device=nope", "device"),
        ("/api/v1/audit/plays?feed=nope", "feed"),
        ("/api/v1/audit/plays?group_by=day&group_by=feed", "group_by"),
        ("/api/v1/audit/compliance?device=nope", "device"),
    ];
    for (uri, field) in bad {
        let (code, body) = app.get(uri, Some("aud")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(json(&body)["details"][0]["field"], field, "{uri}: {body}");
    }
    // An empty parameter is as absent, `format` too.
    for uri in [
        "/api/v1/audit/plays?format=&device=&class=&from=",
        "/api/v1/audit/compliance?format=",
        "/api/v1/audit/sample?format=",
        "/api/v1/audit/reconcile?format=&feed=",
    ] {
        let (code, body) = app.get(uri, Some("aud")).await;
        assert_eq!(code, StatusCode::OK, "{uri}: {body}");
        assert!(json(&body)["rows"].is_array(), "{uri}: {body}");
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
    let doc = document(&app).await;
    let methods = ["GET", "POST", "PUT", "PATCH", "DELETE"];
    let mut served = 0;
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        let ops = ops.as_object().expect("ops");
        for m in methods {
            let (code, body) = app
                .call(
                    m,
                    &probe(path),
                    Some("adm"),
                    Some("application/toml"),
                    ADSET,
                )
                .await;
            if ops.contains_key(&m.to_lowercase()) {
                assert!(
                    !body.contains("no such route"),
                    "{m} {path} is documented but not served: {code} {body}"
                );
                assert_ne!(code, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
                served += 1;
            } else {
                assert_eq!(
                    code,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {path} is served but not documented: {body}"
                );
                assert!(json(&body)["error"].is_string(), "{body}");
            }
        }
    }
    assert_eq!(served, 40, "forty operations");
    for uri in [
        "/api/v1/nothing",
        "/api/v1/adsets/a/b",
        "/nothing",
        "/api/v2/devices",
    ] {
        let (code, body) = app.get(uri, Some("adm")).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{uri}");
        assert!(body.contains("no such route"), "{body}");
    }
    app.stop().await;
}

/// Checks one answer against the document: its status is listed for the operation with
/// its required headers, its content type among that status's, its body valid against the
/// schema.
fn conforms(doc: &Value, method: &str, path: &str, code: StatusCode, h: &HeaderMap, body: &str) {
    let op = &doc["paths"][path][method.to_lowercase()];
    assert!(op.is_object(), "{method} {path} is not documented");
    let resp = &op["responses"][code.as_str()];
    assert!(
        resp.is_object(),
        "{method} {path} answered {code}, which the document does not list: {body}"
    );
    for (name, header) in resp["headers"].as_object().into_iter().flatten() {
        if header["required"] == true {
            assert!(
                h.contains_key(name.as_str()),
                "{method} {path} {code}: no {name}"
            );
        }
    }
    let ctype = h
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let media = &resp["content"][&ctype];
    assert!(
        media.is_object(),
        "{method} {path} {code}: content type {ctype:?} is not documented"
    );
    let instance: Value = if ctype == "application/json" {
        json(body)
    } else {
        Value::String(body.to_owned())
    };
    let schema = serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"].clone(),
        "allOf": [media["schema"].clone()],
    });
    let v = jsonschema::validator_for(&schema).expect("the document's schema compiles");
    let errors: Vec<String> = v
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{method} {path} {code}: {errors:?}\n{body}"
    );
}

/// (method, documented path, uri, Authorization, Content-Type or Accept, body)
type Call = (
    &'static str,
    &'static str,
    String,
    Option<String>,
    Option<&'static str>,
    String,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_conforms_to_the_openapi_document() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let t = |who: &str| Some(format!("Bearer {}", app.tokens[who]));
    let fresh = r#"{"id": "queue-up", "valid_from": "2020-01-01", "valid_until": "2099-12-31",
                    "slogan": [{"id": "paidui", "text": "自觉排队 文明乘车"}]}"#;
    let big = format!("{ADSET}\n# {}\n", "x".repeat(api::MAX_BODY));
    let (json_t, toml_t) = (Some("application/json"), Some("application/toml"));
    let none = String::new;
    let up = "/api/v1/adsets";
    let approve = "/api/v1/adsets/{id}/approve";
    let retire = "/api/v1/adsets/{id}/retire";
    let show = "/api/v1/adsets/{id}";
    let mut calls: Vec<Call> = vec![
        ("GET", "/healthz", "/healthz".into(), None, None, none()),
        ("GET", "/metrics", "/metrics".into(), None, None, none()),
        (
            "GET",
            "/api/v1/openapi.json",
            "/api/v1/openapi.json".into(),
            None,
            None,
            none(),
        ),
        ("POST", up, up.into(), t("op1"), json_t, fresh.into()),
        ("POST", up, up.into(), t("op1"), toml_t, "id = ".into()),
        (
            "POST",
            up,
            up.into(),
            t("op1"),
            Some("text/plain"),
            ADSET.into(),
        ),
        ("POST", up, up.into(), t("op1"), toml_t, big),
        ("POST", up, up.into(), t("aud"), toml_t, ADSET.into()),
        ("POST", up, up.into(), None, toml_t, ADSET.into()),
        (
            "POST",
            approve,
            "/api/v1/adsets/queue-up/approve".into(),
            t("op1"),
            None,
            none(),
        ),
        (
            "POST",
            approve,
            "/api/v1/adsets/queue-up/approve".into(),
            t("op2"),
            None,
            none(),
        ),
        (
            "POST",
            approve,
            "/api/v1/adsets/queue-up/approve".into(),
            t("adm"),
            None,
            none(),
        ),
        (
            "POST",
            approve,
            "/api/v1/adsets/nothing/approve".into(),
            t("adm"),
            None,
            none(),
        ),
        (
            "POST",
            approve,
            "/api/v1/adsets/%FF/approve".into(),
            t("adm"),
            None,
            none(),
        ),
        (
            "GET",
            show,
            "/api/v1/adsets/queue-up".into(),
            t("aud"),
            None,
            none(),
        ),
        (
            "GET",
            show,
            "/api/v1/adsets/civility".into(),
            t("op1"),
            None,
            none(),
        ),
        (
            "GET",
            show,
            "/api/v1/adsets/nothing".into(),
            t("op1"),
            None,
            none(),
        ),
        (
            "POST",
            retire,
            "/api/v1/adsets/queue-up/retire".into(),
            t("op1"),
            None,
            none(),
        ),
        (
            "POST",
            retire,
            "/api/v1/adsets/nothing/retire".into(),
            t("op1"),
            None,
            none(),
        ),
        (
            "POST",
            retire,
            "/api/v1/adsets/civility/retire".into(),
            t("aud"),
            None,
            none(),
        ),
        (
            "GET",
            show,
            "/api/v1/adsets/queue-up".into(),
            t("adm"),
            None,
            none(),
        ),
        (
            "POST",
            approve,
            "/api/v1/adsets/queue-up/approve".into(),
            t("adm"),
            None,
            none(),
        ),
    ];
    let urgent = "/api/v1/urgent";
    let warning = r#"{"text": "台风预警 请勿外出", "feeds": ["bus"], "devices": ["taxi-1"], "expires_in": "10m"}"#;
    let too_long =
        r#"{"text": "一二三四五六七八九十一二三", "devices": ["taxi-1"], "expires_in": "10m"}"#;
    for (who, body) in [
        ("adm", warning),
        ("op1", warning),
        ("op1", too_long),
        ("op1", "{"),
        ("op1", r#"{"text": "x", "feeds": ["bus"]}"#),
        ("aud", warning),
    ] {
        calls.push(("POST", urgent, urgent.into(), t(who), json_t, body.into()));
    }
    for (path, uri) in [
        (
            "/api/v1/urgent/{id}/approve",
            "/api/v1/urgent/nothing/approve",
        ),
        (
            "/api/v1/urgent/{id}/cancel",
            "/api/v1/urgent/nothing/cancel",
        ),
    ] {
        calls.push(("POST", path, uri.into(), t("op2"), None, none()));
    }
    let reads: [&'static str; 5] = [
        "/api/v1/urgent",
        "/api/v1/adsets",
        "/api/v1/devices",
        "/api/v1/feeds",
        "/api/v1/openapi.json",
    ];
    let audits: [(&'static str, &[&str]); 4] = [
        (
            "/api/v1/audit/plays",
            &[
                "",
                "?group_by=slogan,adset,device,class,feed,day,hour",
                "?group_by=feed&format=csv",
                "?group_by=device,day,hour&format=xlsx",
                "?status=skipped&from=2026-01-01&to=2099-01-01",
                "?device=nope",
                "?from=yesterday",
                "?format=",
                "?format=xml",
                "?class=bus_led&class=taxi_top",
                "?feed=bus&device=bus-1",
            ],
        ),
        (
            "/api/v1/audit/compliance",
            &[
                "",
                "?format=csv",
                "?format=xlsx",
                "?class=tram",
                "?device=bus-1&from=2026-01-01",
            ],
        ),
        (
            "/api/v1/audit/sample",
            &[
                "",
                "?format=csv",
                "?format=xlsx",
                "?week=2026-W48&seed=x&per_class=2",
                "?per_class=0",
            ],
        ),
        (
            "/api/v1/audit/reconcile",
            &["", "?format=csv", "?format=xlsx", "?feed=bus", "?feed=nope"],
        ),
    ];
    let previews: [(&'static str, &[&str]); 2] = [
        (
            "/api/v1/preview",
            &[
                "?text=%E8%AE%B2%E6%96%87%E6%98%8E&class=bus_led",
                "?text=%E8%AE%B2%E6%96%87%E6%98%8E%20%E6%A0%91%E6%96%B0%E9%A3%8E&class=taxi_top",
                "?adset=civility&slogan=jiang-wenming",
                "?adset=civility&slogan=jiang-wenming&rev=1&class=taxi_top",
                "?text=a%F0%9F%98%80&class=bus_led",
                "?text=x&class=tram",
                "?adset=nothing&slogan=x",
                "?text=x&class=bus_led&class=bus_led",
                "",
            ],
        ),
        (
            "/api/v1/preview.svg",
            &[
                "?text=%E8%AE%B2%E6%96%87%E6%98%8E&class=bus_led",
                "?adset=civility&slogan=jiang-wenming&class=bus_led",
                "?adset=civility&slogan=jiang-wenming",
                "?text=x",
            ],
        ),
    ];
    for (who, _) in ACCOUNTS {
        for (path, queries) in previews {
            for q in queries {
                calls.push(("GET", path, format!("{path}{q}"), t(who), None, none()));
            }
        }
        for path in reads {
            calls.push(("GET", path, path.into(), t(who), None, none()));
        }
        for (path, queries) in audits {
            for q in queries {
                calls.push(("GET", path, format!("{path}{q}"), t(who), None, none()));
            }
            calls.push(("GET", path, path.into(), t(who), Some("text/csv"), none()));
            calls.push(("GET", path, path.into(), t(who), Some(XLSX), none()));
        }
    }
    // A play on the feed, so that its current play is not null.
    wait_for("a play on the bus feed", 5, || {
        !app.running.shared().last_plays().is_empty()
    })
    .await;
    let mut statuses = std::collections::BTreeSet::new();
    for (method, path, uri, auth, ctype, body) in &calls {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = auth {
            headers.push(("Authorization", a));
        }
        match ctype {
            Some(c) if *method == "GET" => headers.push(("Accept", c)),
            Some(c) => headers.push(("Content-Type", c)),
            None => {}
        }
        let (code, h, text) = raw(
            &app.router,
            method,
            uri,
            &headers,
            body.clone().into_bytes(),
        )
        .await;
        conforms(&doc, method, path, code, &h, &text);
        statuses.insert(code.as_u16());
    }
    // The calls reach every kind of answer that the document lists but 503.
    for want in [200, 201, 202, 400, 401, 403, 404, 409, 413, 415, 422] {
        assert!(
            statuses.contains(&want),
            "no call answered {want}: {statuses:?}"
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_checked_before_the_request_is_read() {
    let app = spawn_app().await;
    let big = vec![b'#'; api::MAX_BODY + 10];
    let toml = ("Content-Type", "application/toml");
    let aud = format!("Bearer {}", app.tokens["aud"]);
    let op = format!("bearer {}", app.tokens["op1"]);
    let repeated = "/api/v1/audit/plays?from=2026-01-01&from=2026-02-01";
    let bad_byte = "/api/v1/adsets/%FF%FE";
    // Without a valid token: 401 in JSON, whatever else is wrong.
    for (method, uri, body) in [
        ("GET", repeated, Vec::new()),
        ("GET", bad_byte, Vec::new()),
        ("POST", "/api/v1/adsets", big.clone()),
        ("GET", "/api/v1/openapi.json", Vec::new()),
    ] {
        for auth in [None, Some("Bearer cvc_wrong"), Some("Basic b3AxOnB3")] {
            let mut h = vec![toml];
            h.extend(auth.map(|a| ("Authorization", a)));
            let (code, headers, text) = raw(&app.router, method, uri, &h, body.clone()).await;
            assert_eq!(
                code,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {auth:?}: {text}"
            );
            assert_eq!(
                headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer"),
                "{method} {uri}"
            );
            assert!(json(&text)["error"].is_string(), "{text}");
        }
    }
    // With one: each fault answered in JSON, naming what is wrong.
    let auth = [("Authorization", aud.as_str())];
    let (code, _, text) = raw(&app.router, "GET", repeated, &auth, Vec::new()).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(json(&text)["details"][0]["field"], "from", "{text}");
    let (code, _, text) = raw(&app.router, "GET", bad_byte, &auth, Vec::new()).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(json(&text)["details"][0]["field"], "id", "{text}");
    // The scheme is case-insensitive (RFC 7235): "bearer" works.
    let h = [toml, ("Authorization", op.as_str())];
    let (code, _, text) = raw(&app.router, "POST", "/api/v1/adsets", &h, big).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert_eq!(json(&text)["details"][0]["field"], "body", "{text}");
    let (code, _, text) = raw(&app.router, "GET", "/api/v1/devices", &h[1..], Vec::new()).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    app.stop().await;
}

/// `n` empty `[[slogan]]` tables after a valid head of three lines.
fn empty_slogans(id: &str, n: usize) -> String {
    let mut s =
        format!("id = \"{id}\"\nvalid_from = \"2026-01-01\"\nvalid_until = \"2026-12-31\"\n");
    for _ in 0..n {
        s.push_str("[[slogan]]\n");
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_being_parsed_leave_healthz_and_light_reads_answering() {
    let app = spawn_app().await;
    // No slogan limit here: the uploads must keep the parser busy.
    let limits = api::Limits {
        max_slogans: usize::MAX,
        ..api::Limits::default()
    };
    let st = api_state(app.store.clone(), &app.running, limits);
    let router = api::router(st.clone());
    let body = empty_slogans("huge", api::MAX_BODY / 11 - 10);
    let token = app.tokens["op1"].clone();
    let toml = Some("application/toml");
    // As many uploads as there are async workers (and heavy permits).
    let uploads: Vec<_> = (0..limits.workers)
        .map(|_| {
            let (router, body, token) = (router.clone(), body.clone(), token.clone());
            tokio::spawn(async move {
                call(&router, "POST", "/api/v1/adsets", Some(&token), toml, &body).await
            })
        })
        .collect();
    wait_for("every heavy permit parsing an upload", 60, || {
        st.heavy.busy() == limits.workers
    })
    .await;
    // Light requests on the async workers, as a client's would be.
    let (router2, aud) = (router.clone(), app.tokens["aud"].clone());
    let light = tokio::spawn(async move {
        let health = call(&router2, "GET", "/healthz", None, None, "").await;
        let devices = call(&router2, "GET", "/api/v1/devices", Some(&aud), None, "").await;
        (health, devices)
    });
    let ((hcode, hbody), (dcode, dbody)) = light.await.expect("light requests");
    let unfinished = uploads.iter().filter(|u| !u.is_finished()).count();
    assert!(
        hcode == StatusCode::OK || hcode == StatusCode::SERVICE_UNAVAILABLE,
        "{hcode} {hbody}"
    );
    assert_eq!(dcode, StatusCode::OK, "{dbody}");
    assert_eq!(
        unfinished,
        uploads.len(),
        "healthz and a light read answered only after uploads were parsed"
    );
    for u in uploads {
        let (code, body) = u.await.expect("upload");
        let head: String = body.chars().take(300).collect();
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{head}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_with_thousands_of_problems_answers_the_first_hundred_and_a_count() {
    let app = spawn_app().await;
    let toml = Some("application/toml");
    // 5,000 empty slogans: each lacks its id and its text.
    let many = empty_slogans("many", 5_000);
    let (code, body) = app
        .call("POST", "/api/v1/adsets", Some("op1"), toml, &many)
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let v = json(&body);
    let details = v["details"].as_array().expect("details");
    let head: String = body.chars().take(300).collect();
    assert_eq!(details.len(), 101, "{head}");
    assert_eq!(
        details[0]["line"], 4,
        "the first empty table: {}",
        details[0]
    );
    assert_eq!(details[100]["message"], "and 9900 more problems");
    assert!(
        v["error"].as_str().unwrap_or("").contains("10000 problems"),
        "{}",
        v["error"]
    );
    // Past the slogan limit: refused as one problem, before the slogans are read.
    let lots = empty_slogans("lots", 90_000);
    let (code, body) = app
        .call("POST", "/api/v1/adsets", Some("op1"), toml, &lots)
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    let v = json(&body);
    assert_eq!(v["details"].as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(v["details"][0]["field"], "slogan", "{body}");
    assert!(
        body.contains("90000 slogans") && body.contains("10000"),
        "{body}"
    );
    for id in ["many", "lots"] {
        let (code, _) = app.get(&format!("/api/v1/adsets/{id}"), Some("op1")).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "nothing stored for {id}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_a_slogan_text_are_refused_with_slogan_and_position() {
    let app = spawn_app().await;
    for (c, name) in [("\\u0000", "U+0000"), ("\\u001b", "U+001B")] {
        let body = format!(
            r#"{{"id": "ctl", "valid_from": "2020-01-01", "valid_until": "2099-12-31",
                 "slogan": [{{"id": "dirty", "text": "文明{c}乘车"}}]}}"#
        );
        let (code, answer) = app
            .call(
                "POST",
                "/api/v1/adsets",
                Some("op1"),
                Some("application/json"),
                &body,
            )
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        let d = &json(&answer)["details"][0];
        let msg = d["message"].as_str().unwrap_or("");
        assert!(
            msg.contains("dirty") && msg.contains(name) && msg.contains("position 3"),
            "{answer}"
        );
        assert_eq!(d["field"], "slogan[1].text", "{answer}");
    }
    let (code, _) = app.get("/api/v1/adsets/ctl", Some("op1")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    app.stop().await;
}
