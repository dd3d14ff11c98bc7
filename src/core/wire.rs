//! The wire contract's payloads and topics (documented in `docs/asyncapi.json` and the README's
//! "A display"), and the pure checks on what displays send. No I/O: the `mqtt` shell moves
//! bytes, this module says what they mean.
//!
//! Owns: topic names, payload shapes and the receipt's form checks. Must not touch the
//! network, the store or the clock.

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

use crate::core::model::Id;

/// Payloads larger than this are rejected unread (contract: "A payload over 16 KiB").
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// How far a receipt's `started_at` may stray outside [issued_at, expires_at].
pub const RECEIPT_SLACK_MS: i64 = 2 * 60 * 1000;

/// Topic names under a prefix such as `civicast/v1`.
#[derive(Debug, Clone)]
pub struct Topics {
    pub prefix: String,
}

/// What a topic the daemon reads is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicKind<'a> {
    Receipt(&'a str),
    Status(&'a str),
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into().trim_end_matches('/').to_owned(),
        }
    }
    pub fn feed(&self, feed: &str) -> String {
        format!("{}/feeds/{feed}", self.prefix)
    }
    pub fn config(&self, device: &str) -> String {
        format!("{}/devices/{device}/config", self.prefix)
    }
    pub fn cmd(&self, device: &str) -> String {
        format!("{}/devices/{device}/cmd", self.prefix)
    }
    pub fn receipts(&self, device: &str) -> String {
        format!("{}/devices/{device}/receipts", self.prefix)
    }
    pub fn status(&self, device: &str) -> String {
        format!("{}/devices/{device}/status", self.prefix)
    }
    /// The daemons' shared subscription for receipts (contract: several daemons split the load).
    pub fn receipts_filter(&self, share: Option<&str>) -> String {
        shared(share, format!("{}/devices/+/receipts", self.prefix))
    }
    pub fn status_filter(&self, share: Option<&str>) -> String {
        shared(share, format!("{}/devices/+/status", self.prefix))
    }
    /// Splits an inbound topic into what it is and the device id in it (not yet validated).
    pub fn classify<'a>(&self, topic: &'a str) -> Option<TopicKind<'a>> {
        let rest = topic
            .strip_prefix(&self.prefix)?
            .strip_prefix("/devices/")?;
        let (dev, kind) = rest.split_once('/')?;
        match kind {
            "receipts" => Some(TopicKind::Receipt(dev)),
            "status" => Some(TopicKind::Status(dev)),
            _ => None,
        }
    }
}

fn shared(share: Option<&str>, filter: String) -> String {
    match share {
        Some(group) => format!("$share/{group}/{filter}"),
        None => filter,
    }
}

/// Retained on `P/devices/{id}/config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisplayConfig {
    pub v: u32,
    pub device_id: String,
    pub class: String,
    pub feeds: Vec<String>,
    pub prefix: String,
}

/// One command to show one slogan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlayCommand {
    pub v: u32,
    pub play_id: String,
    /// Absent on direct commands (`cmd` topic).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub feed: Option<String>,
    pub adset: String,
    pub rev: i64,
    pub slogan: String,
    pub text: String,
    /// Where a feed reaches classes with their own shorter texts: class -> text.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty", default)]
    pub text_by_class: std::collections::BTreeMap<String, String>,
    pub duration_s: u32,
    pub priority: i32,
    pub issued_at: DateTime<FixedOffset>,
    pub expires_at: DateTime<FixedOffset>,
}

/// A receipt's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Played = 0,
    Skipped = 1,
    Expired = 2,
    Failed = 3,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Played,
        Status::Skipped,
        Status::Expired,
        Status::Failed,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Played => "played",
            Status::Skipped => "skipped",
            Status::Expired => "expired",
            Status::Failed => "failed",
        }
    }
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.as_str() == s)
    }
    pub fn code(self) -> i64 {
        self as i64
    }
    pub fn from_code(c: i64) -> Option<Status> {
        Status::ALL.into_iter().find(|x| x.code() == c)
    }
}

/// Presence, retained on `P/devices/{id}/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub v: u32,
    pub online: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub since: Option<DateTime<FixedOffset>>,
}

/// Why a receipt was not counted. The names are the `reason` label in metrics and audits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    TooLarge,
    Malformed,
    MissingField,
    BadVersion,
    UnknownStatus,
    DeviceMismatch,
    UnknownDevice,
    UnknownPlay,
    NotSent,
    OutOfWindow,
    /// For a play older than the receipts kept (`CIVICAST_RETENTION_DAYS`).
    PastRetention,
}

impl Reject {
    pub const ALL: [Reject; 11] = [
        Reject::TooLarge,
        Reject::Malformed,
        Reject::MissingField,
        Reject::BadVersion,
        Reject::UnknownStatus,
        Reject::DeviceMismatch,
        Reject::UnknownDevice,
        Reject::UnknownPlay,
        Reject::NotSent,
        Reject::OutOfWindow,
        Reject::PastRetention,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::TooLarge => "too_large",
            Reject::Malformed => "malformed",
            Reject::MissingField => "missing_field",
            Reject::BadVersion => "bad_version",
            Reject::UnknownStatus => "unknown_status",
            Reject::DeviceMismatch => "device_mismatch",
            Reject::UnknownDevice => "unknown_device",
            Reject::UnknownPlay => "unknown_play",
            Reject::NotSent => "not_sent",
            Reject::OutOfWindow => "out_of_window",
            Reject::PastRetention => "past_retention",
        }
    }
}

/// A receipt whose form is right; whether its play was sent to its device is checked
/// against the daemon's record of plays (`ReceiptCheck`).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedReceipt {
    pub play_id: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub status: Status,
    pub reason: Option<String>,
}

/// Reads a receipt payload sent on `P/devices/{device}/receipts`.
pub fn parse_receipt(device: &str, payload: &[u8]) -> Result<ParsedReceipt, Reject> {
    if payload.len() > MAX_PAYLOAD {
        return Err(Reject::TooLarge);
    }
    let v: serde_json::Value = serde_json::from_slice(payload).map_err(|_| Reject::Malformed)?;
    let obj = v.as_object().ok_or(Reject::Malformed)?;
    match obj.get("v") {
        None => return Err(Reject::MissingField),
        Some(x) if x.as_u64() == Some(1) => {}
        Some(_) => return Err(Reject::BadVersion),
    }
    let play_id = match obj.get("play_id") {
        None => return Err(Reject::MissingField),
        Some(serde_json::Value::String(s)) if !s.is_empty() && s.len() <= 64 => s.clone(),
        Some(_) => return Err(Reject::Malformed),
    };
    let started_at = match obj.get("started_at") {
        None => return Err(Reject::MissingField),
        Some(serde_json::Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map_err(|_| Reject::Malformed)?
            .with_timezone(&Utc),
        Some(_) => return Err(Reject::Malformed),
    };
    let status = match obj.get("status") {
        None => return Err(Reject::MissingField),
        Some(serde_json::Value::String(s)) => Status::parse(s).ok_or(Reject::UnknownStatus)?,
        Some(_) => return Err(Reject::UnknownStatus),
    };
    let duration_ms = match obj.get("duration_ms") {
        None | Some(serde_json::Value::Null) => 0,
        Some(x) => match x.as_i64() {
            Some(n) if n >= 0 => n,
            _ => return Err(Reject::Malformed),
        },
    };
    if let Some(d) = obj.get("device_id") {
        if d.as_str() != Some(device) {
            return Err(Reject::DeviceMismatch);
        }
    }
    let reason = obj
        .get("reason")
        .and_then(|r| r.as_str())
        .map(|s| s.chars().take(200).collect());
    Ok(ParsedReceipt {
        play_id,
        started_at,
        duration_ms,
        status,
        reason,
    })
}

/// Whether a receipt's start lies in [issued_at - 2 min, expires_at + 2 min].
pub fn in_window(started: DateTime<Utc>, issued: DateTime<Utc>, expires: DateTime<Utc>) -> bool {
    let s = started.timestamp_millis();
    s >= issued.timestamp_millis() - RECEIPT_SLACK_MS
        && s <= expires.timestamp_millis() + RECEIPT_SLACK_MS
}

/// Reads a presence payload; None when it is not one.
pub fn parse_presence(payload: &[u8]) -> Option<Presence> {
    if payload.len() > MAX_PAYLOAD {
        return None;
    }
    // The whole payload read as a JSON tree first, as receipts are: serde_json reading the
    // struct straight from bytes skips ignored fields without checking them (bytes that are
    // not UTF-8, lone surrogates) and would also take an array for the struct.
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if !v.is_object() {
        return None;
    }
    let p = Presence::deserialize(v).ok()?;
    (p.v == 1).then_some(p)
}

/// Validates a device id taken from a topic.
pub fn topic_device(s: &str) -> Option<Id> {
    Id::parse(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(dev: &str, s: &str) -> Result<ParsedReceipt, Reject> {
        parse_receipt(dev, s.as_bytes())
    }

    #[test]
    fn reads_the_contract_example() {
        let r = ok(
            "bus-1",
            r#"{"v": 1, "play_id": "01JDQ8ZK7Q3N8W5V2C4X9R6T1B",
             "started_at": "2026-11-27T20:00:02.150+08:00", "duration_ms": 15000,
             "status": "played", "extra": [1,2]}"#,
        )
        .expect("valid receipt");
        assert_eq!(r.play_id, "01JDQ8ZK7Q3N8W5V2C4X9R6T1B");
        assert_eq!(r.status, Status::Played);
        assert_eq!(r.duration_ms, 15000);
        assert_eq!(r.started_at.to_rfc3339(), "2026-11-27T12:00:02.150+00:00");
    }

    #[test]
    fn rejects_by_reason() {
        let base = r#""play_id":"p1","started_at":"2026-11-27T20:00:02+08:00""#;
        assert_eq!(ok("d", "{not json"), Err(Reject::Malformed));
        assert_eq!(ok("d", "[1,2]"), Err(Reject::Malformed));
        assert_eq!(
            ok("d", &format!(r#"{{"v":1,{base}}}"#)),
            Err(Reject::MissingField)
        );
        assert_eq!(
            ok("d", &format!(r#"{{"v":1,{base},"status":"shown"}}"#)),
            Err(Reject::UnknownStatus)
        );
        assert_eq!(
            ok("d", &format!(r#"{{"v":2,{base},"status":"played"}}"#)),
            Err(Reject::BadVersion)
        );
        assert_eq!(
            ok(
                "d",
                &format!(r#"{{"v":1,{base},"status":"played","device_id":"other"}}"#)
            ),
            Err(Reject::DeviceMismatch)
        );
        assert_eq!(
            ok(
                "d",
                r#"{"v":1,"play_id":"p","started_at":"yesterday","status":"played"}"#
            ),
            Err(Reject::Malformed)
        );
        let big = format!(
            r#"{{"v":1,{base},"status":"played","pad":"{}"}}"#,
            "x".repeat(MAX_PAYLOAD)
        );
        assert_eq!(ok("d", &big), Err(Reject::TooLarge));
        assert!(ok(
            "d",
            &format!(r#"{{"v":1,{base},"status":"failed","device_id":"d","reason":"dark"}}"#)
        )
        .is_ok());
    }

    #[test]
    fn presence_that_is_not_utf8_json_is_refused() {
        // Found by fuzzing: serde_json skips an unknown field's string without checking its
        // bytes, so this payload, not UTF-8 and hence not JSON, was read as a presence.
        let mut payload = br#"{"v": 1, "online": true, "note": "2026-11"#.to_vec();
        payload.extend_from_slice(&[0xd3, 0xd6]);
        payload.extend_from_slice(br#"7T0"}"#);
        assert!(std::str::from_utf8(&payload).is_err());
        assert_eq!(parse_presence(&payload), None);
        let fine = r#"{"v": 1, "online": true, "note": "2026-11中"}"#.as_bytes();
        assert_eq!(
            parse_presence(fine),
            Some(Presence {
                v: 1,
                online: true,
                since: None
            })
        );
    }

    #[test]
    fn presence_that_is_not_an_object_is_refused() {
        // Found by fuzzing: serde reads a struct from a JSON array too, field by field.
        assert_eq!(parse_presence(b"[1,true]"), None);
        assert_eq!(
            parse_presence(br#" [1, true, "2026-11-27T06:00:00+08:00"]"#),
            None
        );
        assert_eq!(
            parse_presence(b" \n{\"v\": 1, \"online\": false}"),
            Some(Presence {
                v: 1,
                online: false,
                since: None
            })
        );
    }

    #[test]
    fn presence_with_a_bad_escape_in_an_unknown_field_is_refused() {
        // Found by fuzzing: serde_json skips an ignored field's string without checking its
        // escapes, so this payload (a lone surrogate), not JSON, was read as a presence.
        assert_eq!(
            parse_presence(br#"{"v": 1, "online": true, "note": "\udae2\n"}"#),
            None
        );
    }

    #[test]
    fn window_has_two_minutes_of_slack_each_side() {
        let t = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|d| d.with_timezone(&Utc))
                .expect("time")
        };
        let (i, e) = (t("2026-11-27T12:00:00Z"), t("2026-11-27T12:03:00Z"));
        assert!(in_window(t("2026-11-27T11:58:00Z"), i, e));
        assert!(!in_window(t("2026-11-27T11:57:59.999Z"), i, e));
        assert!(in_window(t("2026-11-27T12:05:00Z"), i, e));
        assert!(!in_window(t("2026-11-27T12:05:00.001Z"), i, e));
    }

    #[test]
    fn topics_round_trip() {
        let t = Topics::new("civicast/v1/");
        assert_eq!(t.feed("bus-led-all"), "civicast/v1/feeds/bus-led-all");
        assert_eq!(
            t.classify(&t.receipts("bus-1")),
            Some(TopicKind::Receipt("bus-1"))
        );
        assert_eq!(
            t.classify(&t.status("bus-1")),
            Some(TopicKind::Status("bus-1"))
        );
        assert_eq!(t.classify(&t.cmd("bus-1")), None);
        assert_eq!(t.classify("other/devices/x/receipts"), None);
        assert_eq!(
            t.receipts_filter(Some("civicast")),
            "$share/civicast/civicast/v1/devices/+/receipts"
        );
    }
}
