//! Report downloads as an auditor takes them: every audit report as CSV and as XLSX, by
//! `?format=` and by `Accept`, each workbook read back with calamine and checked cell for
//! cell against the JSON answer of the same query, the CSV header against the JSON keys,
//! the file's name, and an unknown format refused with its name.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use calamine::{Data, Reader};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

mod common;
use common::{json, spawn_app, wait_for, App};

const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

async fn fetch(app: &App, uri: &str, accept: Option<&str>) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut b = Request::builder()
        .uri(uri)
        .header("Authorization", format!("Bearer {}", app.tokens["aud"]));
    if let Some(a) = accept {
        b = b.header("Accept", a);
    }
    let resp = app
        .router
        .clone()
        .oneshot(b.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes().to_vec();
    (parts.status, parts.headers, bytes)
}

/// The sheet `name` of a workbook, as rows of cells.
fn sheet(bytes: &[u8], name: &str) -> Vec<Vec<Data>> {
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(bytes.to_vec())).expect("an XLSX");
    let range = book.worksheet_range(name).expect("the sheet");
    range.rows().map(|r| r.to_vec()).collect()
}

/// Whether a cell holds what the JSON answer has: numbers as numbers, flags as flags,
/// dates and times as dates in the deployment's zone (its wall clock), absent as empty.
fn same(cell: &Data, want: &Value) -> bool {
    match (cell, want) {
        (Data::Empty, Value::Null) => true,
        (Data::Float(f), Value::Number(n)) => n.as_f64() == Some(*f),
        (Data::Int(i), Value::Number(n)) => n.as_i64() == Some(*i),
        (Data::Bool(b), Value::Bool(w)) => b == w,
        (Data::String(s), Value::String(w)) => s == w,
        (Data::DateTime(d), Value::String(w)) => {
            let Some(t) = d.as_datetime() else {
                return false;
            };
            if let Ok(day) = chrono::NaiveDate::parse_from_str(w, "%Y-%m-%d") {
                return t == day.and_hms_opt(0, 0, 0).expect("midnight");
            }
            chrono::DateTime::parse_from_rfc3339(w).is_ok_and(|w| w.naive_local() == t)
        }
        _ => false,
    }
}

/// The workbook's `report` sheet equals the JSON rows cell for cell, under the CSV's
/// header; its `query` sheet names the report and the zone.
fn check_workbook(report: &str, bytes: &[u8], answer: &Value, csv_header: &[String]) {
    let rows = sheet(bytes, "report");
    let header: Vec<String> = rows[0].iter().map(|c| c.to_string()).collect();
    assert_eq!(
        header, csv_header,
        "{report}: the workbook's header is the CSV's"
    );
    let want = answer["rows"].as_array().expect("rows");
    assert_eq!(
        rows.len() - 1,
        want.len(),
        "{report}: one sheet row a JSON row"
    );
    for (i, (got, w)) in rows[1..].iter().zip(want).enumerate() {
        for (c, name) in header.iter().enumerate() {
            let cell = got.get(c).unwrap_or(&Data::Empty);
            assert!(
                same(cell, &w[name]),
                "{report} row {i} column {name}: sheet {cell:?}, JSON {}",
                w[name]
            );
        }
    }
    let query = sheet(bytes, "query");
    let pairs: Vec<(String, String)> = query
        .iter()
        .map(|r| (r[0].to_string(), r[1].to_string()))
        .collect();
    assert!(
        pairs.contains(&("report".into(), report.into())),
        "{pairs:?}"
    );
    assert!(
        pairs.contains(&("zone".into(), "Asia/Shanghai".into())),
        "{pairs:?}"
    );
    for key in ["from", "to", "week"] {
        if let Some(v) = answer[key].as_str() {
            assert!(pairs.contains(&(key.into(), v.into())), "{key}: {pairs:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_downloads_as_csv_and_xlsx_with_the_json_answers_cells() {
    let app = spawn_app().await;
    wait_for("a play on the bus feed", 5, || {
        !app.running.shared().last_plays().is_empty()
    })
    .await;
    let reports = [
        (
            "plays",
            "/api/v1/audit/plays?group_by=feed,day,hour&from=2026-01-01&to=2099-01-01",
        ),
        (
            "compliance",
            "/api/v1/audit/compliance?from=2026-01-01&to=2099-01-01",
        ),
        ("sample", "/api/v1/audit/sample?per_class=2"),
        (
            "reconcile",
            "/api/v1/audit/reconcile?from=2026-01-01&to=2099-01-01",
        ),
    ];
    for (report, uri) in reports {
        let (code, _, body) = fetch(&app, uri, None).await;
        assert_eq!(code, StatusCode::OK);
        let answer = json(&String::from_utf8_lossy(&body));
        if matches!(report, "compliance" | "sample") {
            // Every display has a row, played or not: the comparison has cells to compare.
            assert!(
                !answer["rows"].as_array().expect("rows").is_empty(),
                "{answer}"
            );
        }
        let (code, h, csv) = fetch(&app, &format!("{uri}&format=csv"), None).await;
        assert_eq!(code, StatusCode::OK, "{report} csv");
        assert!(h["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/csv"));
        let disposition = h["content-disposition"].to_str().expect("disposition");
        assert!(
            disposition.starts_with(&format!("attachment; filename=\"civicast-{report}-"))
                && disposition.ends_with(".csv\""),
            "{disposition}"
        );
        let csv = String::from_utf8(csv).expect("utf-8");
        let header: Vec<String> = csv
            .lines()
            .next()
            .expect("a header")
            .split(',')
            .map(str::to_owned)
            .collect();
        if let Some(first) = answer["rows"].get(0) {
            let keys: BTreeSet<&str> = first
                .as_object()
                .expect("row")
                .keys()
                .map(String::as_str)
                .collect();
            let cols: BTreeSet<&str> = header.iter().map(String::as_str).collect();
            assert_eq!(cols, keys, "{report}: the CSV header is the JSON keys");
        }
        assert_eq!(
            csv.lines().count() - 1,
            answer["rows"].as_array().expect("rows").len(),
            "{report}: one CSV line a JSON row"
        );
        for (how, accept) in [("?format=xlsx", None), ("", Some(XLSX))] {
            let u = if how.is_empty() {
                uri.to_owned()
            } else {
                format!("{uri}&format=xlsx")
            };
            let (code, h, book) = fetch(&app, &u, accept).await;
            assert_eq!(code, StatusCode::OK, "{report} xlsx {how}{accept:?}");
            assert_eq!(h["content-type"], XLSX);
            assert!(h["content-disposition"]
                .to_str()
                .expect("disposition")
                .ends_with(".xlsx\""));
            check_workbook(report, &book, &answer, &header);
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_format_is_refused_naming_it() {
    let app = spawn_app().await;
    for path in ["plays", "compliance", "sample", "reconcile"] {
        let (code, _, body) = fetch(&app, &format!("/api/v1/audit/{path}?format=xls"), None).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{path}");
        let v = json(&String::from_utf8_lossy(&body));
        assert_eq!(v["details"][0]["field"], "format", "{v}");
        assert!(
            v["error"].as_str().expect("error").contains("\"xls\""),
            "{v}"
        );
    }
    app.stop().await;
}
