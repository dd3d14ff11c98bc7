//! The AsyncAPI document (docs/asyncapi.json) says what the code does: its channel
//! addresses are the topics the code builds, and its payload schemas name exactly the
//! fields the code writes (required ones always present).

use std::collections::BTreeSet;

use civicast::core::wire::{self, DisplayConfig, PlayCommand, Presence, Status, Topics};

mod common;
use common::repo_file;

fn doc() -> serde_json::Value {
    serde_json::from_str(&repo_file("docs/asyncapi.json")).expect("valid JSON")
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn channels_are_the_topics_the_code_uses() {
    let d = doc();
    let t = Topics::new("civicast/v1");
    let addr = |c: &str| {
        d["channels"][c]["address"]
            .as_str()
            .expect("address")
            .to_owned()
    };
    assert_eq!(addr("feed").replace("{feed_id}", "x"), t.feed("x"));
    assert_eq!(addr("config").replace("{device_id}", "x"), t.config("x"));
    assert_eq!(addr("cmd").replace("{device_id}", "x"), t.cmd("x"));
    assert_eq!(
        addr("receipts").replace("{device_id}", "x"),
        t.receipts("x")
    );
    assert_eq!(addr("status").replace("{device_id}", "x"), t.status("x"));
    assert_eq!(
        keys(&d["channels"]).len(),
        5,
        "a channel the test does not know"
    );
}

#[test]
fn payload_schemas_match_what_the_code_writes_and_reads() {
    let d = doc();
    let schema = |m: &str| d["components"]["messages"][m]["payload"].clone();
    let now = chrono::Utc::now().fixed_offset();
    let play = PlayCommand {
        v: 1,
        play_id: "p".into(),
        feed: Some("f".into()),
        adset: "a".into(),
        rev: 1,
        slogan: "s".into(),
        text: "t".into(),
        text_by_class: [("taxi_top".to_owned(), "t".to_owned())].into(),
        duration_s: 15,
        priority: 0,
        issued_at: now,
        expires_at: now,
    };
    let written = keys(&serde_json::to_value(&play).expect("json"));
    assert_eq!(written, keys(&schema("play")["properties"]), "play fields");
    let minimal = PlayCommand {
        feed: None,
        text_by_class: Default::default(),
        ..play
    };
    let written = keys(&serde_json::to_value(&minimal).expect("json"));
    let required: BTreeSet<String> = schema("play")["required"]
        .as_array()
        .expect("required")
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        written, required,
        "a direct play carries exactly the required fields"
    );

    let cfg = DisplayConfig {
        v: 1,
        device_id: "d".into(),
        class: "c".into(),
        feeds: vec![],
        prefix: "p".into(),
    };
    assert_eq!(
        keys(&serde_json::to_value(&cfg).expect("json")),
        keys(&schema("config")["properties"])
    );
    let pres = Presence {
        v: 1,
        online: true,
        since: Some(now),
    };
    assert_eq!(
        keys(&serde_json::to_value(&pres).expect("json")),
        keys(&schema("presence")["properties"])
    );

    let statuses: Vec<String> = schema("receipt")["properties"]["status"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        statuses,
        Status::ALL
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect::<Vec<_>>()
    );
    // Each required receipt field, left out, is a rejection for a missing field.
    let full = serde_json::json!({"v": 1, "play_id": "p", "started_at": now.to_rfc3339(), "status": "played"});
    for f in schema("receipt")["required"].as_array().expect("required") {
        let mut r = full.clone();
        r.as_object_mut()
            .expect("object")
            .remove(f.as_str().unwrap_or(""));
        assert_eq!(
            wire::parse_receipt("d", r.to_string().as_bytes()),
            Err(wire::Reject::MissingField),
            "without {f}"
        );
    }
    assert!(wire::parse_receipt("d", full.to_string().as_bytes()).is_ok());
}
