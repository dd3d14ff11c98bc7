//! The plain values the store takes and returns: one named type per row shape, so that no
//! caller reads a tuple by position. The ad-set history types live in the pure core
//! (`core::approval` and `core::receipt`, which decide on them) and are re-exported here.
//!
//! Owns: the shapes only. Must not touch SQL, connections or MQTT.

use std::collections::HashMap;

use crate::core::wire::{Reject, Status};

pub use crate::core::approval::{AdSetHistory, ApproveError, Approver, Retirement, Revision};
pub use crate::core::receipt::{PlayRow, ReceiptRow};

/// One display as the inventory gives it.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub name: String,
    pub class: String,
    pub feeds: Vec<String>,
}

/// Integer keys handed out by the store.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub devices: HashMap<String, i64>,
    pub feeds: HashMap<String, i64>,
}

/// A play about to be published.
#[derive(Debug, Clone)]
pub struct NewPlay {
    pub play_id: String,
    pub feed: Option<i64>,
    pub device: Option<i64>,
    pub slogan: i64,
    pub issued_ms: i64,
    pub expires_ms: i64,
    pub members: i64,
}

/// A presence change.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceEvent {
    pub device: i64,
    pub online: bool,
    pub at_ms: i64,
}

/// What one transaction writes.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// The deployment zone's fixed UTC offset in hours, when it has one: the daily
    /// rollups are kept for it. None (a zone with daylight saving): the hourly one only.
    pub utc_offset_h: Option<i64>,
    pub receipts: Vec<ReceiptRow>,
    pub rejects: Vec<(Reject, i64)>,
    pub presence: Vec<PresenceEvent>,
    /// The names of the receipts' keys, as the ingest knew them: the receipt log records
    /// names, and reading them back inside the commit was most of the log's cost. A key
    /// missing here is read from the store.
    pub names: KeyNames,
}

/// Display names and play ids by store key.
#[derive(Debug, Clone, Default)]
pub struct KeyNames {
    pub devices: HashMap<i64, String>,
    pub plays: HashMap<i64, String>,
}

impl KeyNames {
    /// Notes the names of one receipt's display and play (each key once).
    pub fn note(&mut self, device: i64, name: &str, play: i64, play_id: &str) {
        self.devices
            .entry(device)
            .or_insert_with(|| name.to_owned());
        self.plays.entry(play).or_insert_with(|| play_id.to_owned());
    }
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.receipts.is_empty() && self.rejects.is_empty() && self.presence.is_empty()
    }
    pub fn len(&self) -> usize {
        self.receipts.len() + self.rejects.len() + self.presence.len()
    }
}

/// What a committed batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub stored: usize,
    pub duplicates: usize,
}

/// A membership interval of a display in a feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub device: i64,
    pub feed: i64,
    pub since_ms: i64,
    pub until_ms: Option<i64>,
}

/// A role a token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Operator,
    Auditor,
    Admin,
    /// Records inspections and findings.
    Inspector,
    /// An operating company's: sees and answers only its own units' findings (its token
    /// is bound to the company, `InspectStore::token_company`).
    Company,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
            Role::Inspector => "inspector",
            Role::Company => "company",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        [
            Role::Operator,
            Role::Auditor,
            Role::Admin,
            Role::Inspector,
            Role::Company,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// A stored token (never the token itself).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_ms: i64,
    pub revoked_ms: Option<i64>,
}

/// A feed's stored rotation cursor (JSON) and when the feed last played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedState {
    pub cursor_json: String,
    pub last_played_ms: i64,
}

/// Rejected receipts of one reason, over all time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RejectCount {
    pub reason: String,
    pub count: i64,
}

/// A presence interval of a named display: online from `since_ms`, until `until_ms` (None:
/// still online).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PresenceSpan {
    pub device: String,
    pub since_ms: i64,
    pub until_ms: Option<i64>,
}

/// A presence interval by device key, for the reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PresenceKeySpan {
    pub device: i64,
    pub since_ms: i64,
    pub until_ms: Option<i64>,
}

/// When a display started the plays it reported as played, in order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlayedTimes {
    pub device: String,
    pub starts: Vec<i64>,
}

/// The newest receipt of a display.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LastReceipt {
    pub device: String,
    pub started_ms: i64,
    pub status: Status,
}

/// A play published on a feed: its key, the feed's name and key, and when it was issued.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedPlay {
    pub play: i64,
    pub feed: String,
    pub issued_ms: i64,
    pub feed_key: i64,
}

/// How many stored receipts of one play have one status (`rollup_play`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlayCount {
    pub play: i64,
    pub status: Status,
    pub receipts: i64,
}

/// One display's receipts of the plays with keys in [lo, hi], issued in
/// [first_issued_ms, last_issued_ms] (the bound lets PostgreSQL reach only those days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlayRange {
    pub device: i64,
    pub lo: i64,
    pub hi: i64,
    pub first_issued_ms: i64,
    pub last_issued_ms: i64,
}

/// A stored receipt by keys: which display answered which play, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlayReceipt {
    pub device: i64,
    pub play: i64,
    pub status: Status,
}
