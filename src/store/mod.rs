//! Durable state: displays, feeds, plays, receipts and their hourly rollup, presence, the
//! rotation cursors. One trait, a backend per database chosen from the URL scheme.
//!
//! Owns: SQL and migrations. Must not touch: MQTT (the daemon acknowledges receipts only
//! after `commit_batch` returns), rotation decisions, HTTP.

pub mod daily;
pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;
use std::future::Future;

use crate::core::audit::{PlaysQuery, PlaysRow};
use crate::core::wire::{Reject, Status};

pub use crate::core::receipt::{PlayRow, ReceiptRow};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Store errors carry the operation; SQL text and paths stay in the logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Splits rows into statements whose sizes come from a small fixed set: `max` (a power of
/// two), then the remainder by descending powers of two. Each multi-row statement's SQL
/// depends on its row count, and the driver caches prepared statements by their SQL, so
/// batches of every size would otherwise be parsed and planned afresh at each commit.
pub fn sized_chunks<T>(rows: &[T], max: usize) -> Vec<&[T]> {
    let max = max.max(1).next_power_of_two();
    let mut out = Vec::with_capacity(rows.len() / max + 12);
    let mut rest = rows;
    while !rest.is_empty() {
        let n = if rest.len() >= max {
            max
        } else {
            1 << (usize::BITS - 1 - rest.len().leading_zeros())
        };
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

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
    /// rollups are kept for it. None (a zone with daylight saving): hourly only.
    pub utc_offset_h: Option<i64>,
    pub receipts: Vec<ReceiptRow>,
    pub rejects: Vec<(Reject, i64)>,
    pub presence: Vec<PresenceEvent>,
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
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        [Role::Operator, Role::Auditor, Role::Admin]
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

/// One revision of an ad set.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub adset: String,
    pub rev: i64,
    pub format: String,
    pub body: String,
    pub origin: String,
    pub uploaded_by: String,
    pub uploaded_ms: i64,
    pub approved_by: Option<String>,
    pub approved_ms: Option<i64>,
}

/// An ad set's revisions and whether it is retired.
#[derive(Debug, Clone, PartialEq)]
pub struct AdSetHistory {
    pub adset: String,
    pub revisions: Vec<Revision>,
    pub retired: Option<(String, i64)>,
}

/// Why an approval was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApproveError {
    #[error("no ad set {0:?}")]
    NotFound(String),
    #[error("ad set {0:?} is retired")]
    Retired(String),
    #[error("revision {1} of {0:?} is already approved")]
    AlreadyApproved(String, i64),
    #[error("revision {1} of {0:?} was uploaded by {2:?}: another operator (or an admin) must approve it")]
    OwnUpload(String, i64, String),
}

/// Everything the daemon and the audits need from a database.
pub trait Store: Send + Sync + Clone + 'static {
    /// Brings the schema up to date.
    fn migrate(&self) -> impl Future<Output = Result<()>> + Send;
    /// Records the inventory: new displays and feeds get keys, membership changes open and
    /// close intervals at `now_ms`. Displays no longer listed keep their history.
    fn sync_inventory(
        &self,
        devices: &[DeviceRow],
        feeds: &[String],
        now_ms: i64,
    ) -> impl Future<Output = Result<Keys>> + Send;
    /// Membership intervals, for the check that a play was sent to a display.
    fn memberships(&self) -> impl Future<Output = Result<Vec<Membership>>> + Send;
    /// The key of a slogan revision, created on first use.
    fn slogan_key(
        &self,
        adset: &str,
        rev: i64,
        slogan: &str,
    ) -> impl Future<Output = Result<i64>> + Send;
    /// Stores a play and its feed's cursor in one transaction, before the play is published.
    fn record_play(
        &self,
        play: &NewPlay,
        cursor: Option<(&str, &str)>,
    ) -> impl Future<Output = Result<i64>> + Send;
    /// The stored cursor of a feed and when it last played.
    fn feed_state(&self, feed: &str) -> impl Future<Output = Result<Option<(String, i64)>>> + Send;
    /// Plays issued at or after `since_ms`.
    fn plays_since(&self, since_ms: i64) -> impl Future<Output = Result<Vec<PlayRow>>> + Send;
    fn play_by_id(&self, play_id: &str) -> impl Future<Output = Result<Option<PlayRow>>> + Send;
    /// Writes receipts (at most once per display and play), their rollup, rejections and
    /// presence in one transaction.
    fn commit_batch(&self, batch: &Batch) -> impl Future<Output = Result<Outcome>> + Send;
    /// Play counts for an audit.
    fn audit_plays(&self, q: &PlaysQuery) -> impl Future<Output = Result<Vec<PlaysRow>>> + Send;
    /// Rejections by reason over all time.
    fn reject_counts(&self) -> impl Future<Output = Result<Vec<(String, i64)>>> + Send;
    /// Sends the answer's rows in order without holding them all; false (and nothing sent)
    /// when the query needs folding in memory (days in a zone with daylight saving).
    fn stream_plays(
        &self,
        q: &PlaysQuery,
        tx: tokio::sync::mpsc::Sender<PlaysRow>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Drops raw receipts of plays from before `before_ms` (the hourly rollup stays, so
    /// play counts are kept for good); the number of rows or partitions removed.
    fn prune_receipts(&self, before_ms: i64) -> impl Future<Output = Result<u64>> + Send;
}

/// What the HTTP API and the audit reports need beyond the daemon's loop: tokens, ad-set
/// revisions, and the raw material of compliance, samples and reconciliation.
pub trait ApiStore: Store {
    fn create_token(
        &self,
        name: &str,
        role: Role,
        hash: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<i64>> + Send;
    /// The live (not revoked) token with this hash.
    fn token_by_hash(&self, hash: &str) -> impl Future<Output = Result<Option<TokenRow>>> + Send;
    fn tokens(&self) -> impl Future<Output = Result<Vec<TokenRow>>> + Send;
    /// Revokes by id or name; the number revoked.
    fn revoke_token(
        &self,
        id_or_name: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Adds a revision; returns its number. `approved` for files reviewed in version control.
    fn add_revision(
        &self,
        rev: &Revision,
        approved: bool,
    ) -> impl Future<Output = Result<i64>> + Send;
    fn adset_history(
        &self,
        adset: &str,
    ) -> impl Future<Output = Result<Option<AdSetHistory>>> + Send;
    fn adset_histories(&self) -> impl Future<Output = Result<Vec<AdSetHistory>>> + Send;
    /// Approves the latest revision; `admin` may approve their own upload.
    fn approve_latest(
        &self,
        adset: &str,
        by: &str,
        admin: bool,
        now_ms: i64,
    ) -> impl Future<Output = Result<std::result::Result<Revision, ApproveError>>> + Send;
    /// Retires an ad set; false when there is no such ad set.
    fn retire(
        &self,
        adset: &str,
        by: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Presence intervals overlapping [from, to): (device name, start, end or None).
    fn presence_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<(String, i64, Option<i64>)>>> + Send;
    /// Start times of `played` receipts in [from, to): (device name, started_at), ordered.
    fn played_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        device: Option<&str>,
    ) -> impl Future<Output = Result<Vec<(String, i64)>>> + Send;
    /// The newest receipt of each named display: (device, started_at, status).
    fn last_receipts(
        &self,
        devices: &[String],
    ) -> impl Future<Output = Result<Vec<(String, i64, Status)>>> + Send;
    /// Plays on feeds issued in [from, to): (play key, feed name, issued_at, feed key).
    fn feed_plays_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<(i64, String, i64, i64)>>> + Send;
    /// Receipts of plays issued in [from, to): (device key, play key, status).
    fn receipts_for_plays_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<(i64, i64, Status)>>> + Send;
    /// Presence intervals overlapping [from, to) by device key.
    fn presence_keys_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<(i64, i64, Option<i64>)>>> + Send;
}

#[cfg(test)]
mod tests {
    use super::sized_chunks;

    #[test]
    fn chunks_cover_every_row_once_in_few_sizes() {
        let rows: Vec<usize> = (0..3_333).collect();
        let chunks = sized_chunks(&rows, 1_000);
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![1024, 1024, 1024, 256, 4, 1]);
        let flat: Vec<usize> = chunks.concat();
        assert_eq!(flat, rows);
        assert!(sized_chunks::<u8>(&[], 64).is_empty());
        for n in 1..=300 {
            let rows: Vec<usize> = (0..n).collect();
            let c = sized_chunks(&rows, 64);
            assert_eq!(c.concat(), rows);
            assert!(c.iter().all(|c| c.len().is_power_of_two() && c.len() <= 64));
        }
    }
}
