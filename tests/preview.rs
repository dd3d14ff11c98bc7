//! The LED preview over HTTP: a text or a stored slogan drawn per class, the roles that may
//! ask, every bad parameter a 422 naming it, and the SVG for pages without JavaScript.

use axum::http::StatusCode;
use serde_json::Value;

mod common;
use common::{json, spawn_app, App};

/// `s` with every byte outside unreserved ASCII percent-encoded.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn preview(app: &App, query: &str, who: &str) -> (StatusCode, Value) {
    let (code, body) = app
        .get(&format!("/api/v1/preview?{query}"), Some(who))
        .await;
    (code, json(&body))
}

/// The one detail of a 422, checked to name `field`; its message.
fn refused(code: StatusCode, v: &Value, field: &str) -> String {
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let d = &v["details"][0];
    assert_eq!(d["field"], field, "{v}");
    d["message"].as_str().unwrap_or("").to_owned()
}

/// Lit pixels in the hex rows of a bitmap.
fn lit(bitmap: &Value) -> u32 {
    bitmap["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let r = r.as_str().expect("hex");
            (0..r.len() / 2)
                .map(|i| u8::from_str_radix(&r[2 * i..2 * i + 2], 16).map_or(0, u8::count_ones))
                .sum::<u32>()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_is_drawn_for_a_class_static_or_scrolling() {
    let app = spawn_app().await;
    let text = enc("讲文明 树新风");
    for who in ["op1", "aud", "adm"] {
        let (code, v) = preview(&app, &format!("text={text}&class=bus_led"), who).await;
        assert_eq!(code, StatusCode::OK, "{who}: {v}");
        assert_eq!(v["bitmap"]["width"], 6 * 16 + 8);
        assert_eq!(v["bitmap"]["height"], 16);
        assert_eq!(v["bitmap"]["rows"].as_array().map(Vec::len), Some(16));
        assert_eq!(v["bitmap"]["rows"][0].as_str().map(str::len), Some(2 * 13));
        assert!(lit(&v["bitmap"]) > 100, "{v}");
        assert_eq!(v["display_width"], 192, "the bus board's default");
        assert_eq!(
            (v["fits"].clone(), v["layout"].clone()),
            (true.into(), "static".into())
        );
        assert_eq!(v["offset_x"], (192 - 104) / 2);
        assert!(v["pass_s"].is_null());
        assert!(v["approximation"]
            .as_str()
            .unwrap_or("")
            .contains("approximation"));
    }
    // The taxi light is 64 px at 24 px/s: the same text scrolls.
    let (code, v) = preview(&app, &format!("text={text}&class=taxi_top"), "op1").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(
        (v["fits"].clone(), v["layout"].clone()),
        (false.into(), "scroll".into())
    );
    assert_eq!(v["scroll_px_per_s"], 24);
    assert_eq!(v["pass_s"], (104.0 + 64.0) / 24.0);
    // An emoji on a GB2312 board is refused, as `check` refuses it.
    let (code, v) = preview(&app, &format!("text={}&class=bus_led", enc("a😀")), "op1").await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "GB2312 lacks it: {v}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_422_naming_the_parameter() {
    let app = spawn_app().await;
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "text=x&class=tram".into(),
            "class",
            "unknown class \"tram\"",
        ),
        ("text=x".into(), "class", "missing"),
        ("class=bus_led".into(), "text", "missing"),
        ("".into(), "text", "missing"),
        (
            format!("text={}&class=bus_led", enc("文明😀")),
            "text",
            "position 3 cannot be drawn by class bus_led (gb2312)",
        ),
        (
            format!("text={}&class=taxi_top", enc(&"文".repeat(13))),
            "text",
            "13 characters, more than the 12",
        ),
        (
            format!("text={}&class=bus_led", "x".repeat(1001)),
            "text",
            "more than the 1000",
        ),
        ("text=%20&class=bus_led".into(), "text", "empty text"),
        (
            "text=a%1Bb&class=bus_led".into(),
            "text",
            "control character U+001B",
        ),
        (
            "text=x&adset=civility&slogan=jiang-wenming".into(),
            "text",
            "not both",
        ),
        ("slogan=jiang-wenming".into(), "adset", "missing"),
        ("adset=civility".into(), "slogan", "missing"),
        (
            "adset=nothing&slogan=x".into(),
            "adset",
            "no ad set \"nothing\"",
        ),
        (
            "adset=civility&slogan=x".into(),
            "slogan",
            "has no slogan \"x\"",
        ),
        (
            "adset=civility&slogan=jiang-wenming&rev=7".into(),
            "rev",
            "no revision 7",
        ),
        (
            "adset=civility&slogan=jiang-wenming&rev=first".into(),
            "rev",
            "not a revision",
        ),
        (
            "adset=civility&slogan=jiang-wenming&class=tram".into(),
            "class",
            "unknown class",
        ),
    ];
    for (q, field, needle) in cases {
        let (code, v) = preview(&app, &q, "op1").await;
        let m = refused(code, &v, field);
        assert!(m.contains(needle), "{q}: {m}");
        assert!(v["error"].as_str().unwrap_or("").starts_with(field), "{v}");
    }
    let (code, v) = preview(&app, "text=x&class=bus_led&class=taxi_top", "op1").await;
    assert_eq!(
        code,
        StatusCode::BAD_REQUEST,
        "a repeat, as every route answers it: {v}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_slogan_is_drawn_for_every_class_it_reaches() {
    let app = spawn_app().await;
    // The bus feed alone: civility reaches the buses only.
    let (code, v) = preview(&app, "adset=civility&slogan=jiang-wenming", "aud").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(
        (v["adset"].clone(), v["rev"].clone()),
        ("civility".into(), 1.into())
    );
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{v}");
    assert_eq!(rows[0]["class"], "bus_led");
    assert_eq!(rows[0]["text"], "讲文明 树新风");
    // Asked for a class it does not reach: drawn all the same, as that class would.
    let (code, v) = preview(
        &app,
        "adset=civility&slogan=jiang-wenming&class=taxi_top",
        "op1",
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["rows"][0]["class"], "taxi_top");
    assert_eq!(v["rows"][0]["layout"], "scroll");
    // A pending upload can be looked at before it is approved, by its revision.
    let upload = "id = \"queue\"\nvalid_from = \"2020-01-01\"\nvalid_until = \"2099-12-31\"\n[[slogan]]\nid = \"paidui\"\ntext = \"自觉排队\"\n";
    let (code, body) = app
        .call(
            "POST",
            "/api/v1/adsets",
            Some("op1"),
            Some("application/toml"),
            upload,
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (code, v) = preview(&app, "adset=queue&slogan=paidui&rev=1", "op2").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["rows"][0]["text"], "自觉排队");
    assert_eq!(v["rows"][0]["bitmap"]["width"], 64);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_svg_draws_one_class_and_the_token_is_checked() {
    let app = spawn_app().await;
    let q = format!("text={}&class=bus_led", enc("讲文明"));
    let (code, json_v) = preview(&app, &q, "op1").await;
    assert_eq!(code, StatusCode::OK);
    let uri = format!("/api/v1/preview.svg?{q}");
    let (code, svg) = app.get(&uri, Some("aud")).await;
    assert_eq!(code, StatusCode::OK, "{svg}");
    assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
    assert!(svg.contains("viewBox=\"0 0 192 16\""), "{svg}");
    assert_eq!(
        svg.matches("r=\"0.45\"").count() as u32,
        lit(&json_v["bitmap"]),
        "a dot per lit LED, as in the JSON"
    );
    assert!(svg.contains("<title>讲文明 (bus_led"), "{svg}");
    let (code, body) = app
        .get(
            "/api/v1/preview.svg?adset=civility&slogan=jiang-wenming",
            Some("op1"),
        )
        .await;
    let m = refused(code, &json(&body), "class");
    assert!(m.contains("one class"), "{m}");
    for who in [None, Some("cvc_wrong")] {
        let (code, _) = app.get(&uri, who).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
    }
    app.stop().await;
}
