//! Durable state: displays, feeds, plays, receipts and their rollups, presence, the
//! rotation cursors, tokens, ad-set revisions and urgent messages. Two traits (`Store` for the daemon,
//! `ApiStore` for the API and reports), a backend per database, and [`Db`], the one way to
//! open either from a [`DatabaseUrl`].
//!
//! Owns: SQL and migrations. Must not touch: MQTT (the daemon acknowledges receipts only
//! after `commit_batch` returns), rotation or approval decisions (`core` makes them), HTTP.

pub mod console;
mod db;
pub mod inspect;
pub mod postgres;
pub mod rollups;
pub mod rows;
pub mod sql;
pub mod sqlite;
pub mod timeline;
pub mod tlog;
pub mod urgent;
pub mod url;

use std::collections::HashSet;
use std::future::Future;

use crate::core::audit::{PlaysQuery, PlaysRow};

pub use console::{DeviceReceipt, SessionRow};
pub use db::Db;
pub use inspect::InspectStore;
pub use postgres::PgStore;
pub use rows::*;
pub use sqlite::SqliteStore;
pub use urgent::{UrgentStore, UrgentStoreError};
pub use url::{Backend, DatabaseUrl, UrlError};

/// Store errors carry the operation; SQL text and paths stay in the logs.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Invalid(String),
    /// The approval rule said no: the request's fault, not the database's.
    #[error(transparent)]
    Refused(#[from] ApproveError),
    /// Opening the database failed; `context` says which and how.
    #[error("{context}")]
    Open {
        context: String,
        #[source]
        source: Box<StoreError>,
    },
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
    fn feed_state(&self, feed: &str) -> impl Future<Output = Result<Option<FeedState>>> + Send;
    /// Plays issued at or after `since_ms`.
    fn plays_since(&self, since_ms: i64) -> impl Future<Output = Result<Vec<PlayRow>>> + Send;
    fn play_by_id(&self, play_id: &str) -> impl Future<Output = Result<Option<PlayRow>>> + Send;
    /// Writes receipts (at most once per display and play), their rollup, rejections and
    /// presence in one transaction.
    fn commit_batch(&self, batch: &Batch) -> impl Future<Output = Result<Outcome>> + Send;
    /// Play counts for an audit.
    fn audit_plays(&self, q: &PlaysQuery) -> impl Future<Output = Result<Vec<PlaysRow>>> + Send;
    /// Rejections by reason over all time.
    fn reject_counts(&self) -> impl Future<Output = Result<Vec<RejectCount>>> + Send;
    /// Sends the answer's rows in order without holding them all; false (and nothing sent)
    /// when the query needs folding in memory (days in a zone with daylight saving).
    fn stream_plays(
        &self,
        q: &PlaysQuery,
        tx: tokio::sync::mpsc::Sender<PlaysRow>,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Drops raw receipts of plays from before `before_ms` (the rollups stay, so play
    /// counts by class, slogan, feed and by display are kept for good; a display's counts
    /// by slogan go with its receipts); the number of rows or partitions removed.
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
    /// Revokes the token with this id; false when no live token has it. By id only: a
    /// name that reads as a number must not revoke a second token (the CLI resolves names).
    fn revoke_token(&self, id: i64, now_ms: i64) -> impl Future<Output = Result<bool>> + Send;

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
    /// Approves the latest revision as `core::approval::approvable` allows (an admin may
    /// approve their own upload); a refusal is `StoreError::Refused`.
    fn approve_latest(
        &self,
        adset: &str,
        by: &Approver<'_>,
        now_ms: i64,
    ) -> impl Future<Output = Result<Revision>> + Send;
    /// Retires an ad set: every revision it has now stays retired; one uploaded later plays
    /// once approved. Retiring again with no new revision keeps the first retirement.
    /// False when there is no such ad set.
    fn retire(
        &self,
        adset: &str,
        by: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// [`ApiStore::retire`], not by an operator's decision: `reason` says why (its file
    /// was removed, ...) and shows in the history.
    fn retire_for(
        &self,
        adset: &str,
        by: &str,
        reason: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Presence intervals overlapping [from, to), by display name.
    fn presence_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<PresenceSpan>>> + Send;
    /// [`ApiStore::presence_between`] of the named displays alone, read by their keys.
    fn presence_of(
        &self,
        from_ms: i64,
        to_ms: i64,
        devices: &[String],
    ) -> impl Future<Output = Result<Vec<PresenceSpan>>> + Send;
    /// [`ApiStore::played_between`] of the named displays alone, read by their keys.
    fn played_of(
        &self,
        from_ms: i64,
        to_ms: i64,
        devices: &[String],
    ) -> impl Future<Output = Result<Vec<PlayedTimes>>> + Send;
    /// Start times of `played` receipts in [from, to): one entry per display that has
    /// any, by name, its times in order.
    fn played_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        device: Option<&str>,
    ) -> impl Future<Output = Result<Vec<PlayedTimes>>> + Send;
    /// The newest receipt of each named display that has one, in the order asked.
    fn last_receipts(
        &self,
        devices: &[String],
    ) -> impl Future<Output = Result<Vec<LastReceipt>>> + Send;
    /// Plays on feeds issued in [from, to), by play key.
    fn feed_plays_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<FeedPlay>>> + Send;
    /// Receipts of plays issued in [from, to).
    fn receipts_for_plays_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<PlayReceipt>>> + Send;
    /// Stored receipts per play and status, of plays issued in [from, to), by play key.
    fn play_counts_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<PlayCount>>> + Send;
    /// The receipts each range names (each read by key, not by scanning the period).
    fn receipts_in_ranges(
        &self,
        ranges: &[PlayRange],
    ) -> impl Future<Output = Result<Vec<PlayReceipt>>> + Send;
    /// Presence intervals overlapping [from, to) by device key.
    fn presence_keys_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<PresenceKeySpan>>> + Send;
}

/// Memberships (device, feed) to close and to open, each in key order, so that concurrent
/// writers lock rows in one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChanges {
    pub closing: Vec<(i64, i64)>,
    pub opening: Vec<(i64, i64)>,
}

/// What `sync_inventory` changes in the open memberships `open` (device, feed) so that they
/// match the inventory; both backends write what this says.
pub fn membership_changes(
    devices: &[DeviceRow],
    keys: &Keys,
    open: &HashSet<(i64, i64)>,
) -> MembershipChanges {
    let mut want: HashSet<(i64, i64)> = HashSet::new();
    for d in devices {
        let Some(&dk) = keys.devices.get(&d.name) else {
            continue;
        };
        for f in &d.feeds {
            if let Some(&fk) = keys.feeds.get(f) {
                want.insert((dk, fk));
            }
        }
    }
    let mut closing: Vec<_> = open.difference(&want).copied().collect();
    let mut opening: Vec<_> = want.difference(open).copied().collect();
    closing.sort_unstable();
    opening.sort_unstable();
    MembershipChanges { closing, opening }
}

#[cfg(test)]
mod tests {
    use super::{membership_changes, sized_chunks, DeviceRow, Keys, MembershipChanges};
    use std::collections::{HashMap, HashSet};

    #[test]
    fn membership_changes_close_what_the_inventory_dropped_and_open_what_it_added() {
        let keys = Keys {
            devices: HashMap::from([("a".to_owned(), 1), ("b".to_owned(), 2)]),
            feeds: HashMap::from([("bus".to_owned(), 10), ("metro".to_owned(), 11)]),
        };
        let devices = vec![
            DeviceRow {
                name: "a".into(),
                class: "bus".into(),
                feeds: vec!["bus".into(), "metro".into(), "unknown".into()],
            },
            DeviceRow {
                name: "nobody".into(),
                class: "bus".into(),
                feeds: vec!["bus".into()],
            },
        ];
        let open = HashSet::from([(1, 10), (2, 10)]);
        assert_eq!(
            membership_changes(&devices, &keys, &open),
            MembershipChanges {
                closing: vec![(2, 10)],
                opening: vec![(1, 11)]
            }
        );
        assert_eq!(
            membership_changes(&[], &keys, &open),
            MembershipChanges {
                closing: vec![(1, 10), (2, 10)],
                opening: vec![]
            }
        );
    }

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
