//! [`Db`]: the store the product runs on, whichever backend the URL names, opened one way.
//! The HTTP API, the reports and the command line hold a `Db`, never a type parameter.
//!
//! Owns: choosing and opening the backend, and delegating each store method to it. Must not
//! touch SQL (the backends own it) or decide anything itself.

use super::url::{Backend, DatabaseUrl};
use super::*;

/// An open store of either backend. Cloning shares the connection pools.
#[derive(Clone)]
pub enum Db {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Db {
    /// Opens the database `url` names: a SQLite file (created if missing) or a PostgreSQL
    /// pool. Does not migrate.
    pub async fn open(url: &DatabaseUrl) -> Result<Db> {
        match url.backend() {
            Backend::Sqlite => SqliteStore::connect(url.expose())
                .await
                .map(Db::Sqlite)
                .map_err(|e| StoreError::Open {
                    context: format!("opening the database {url}"),
                    source: Box::new(e),
                }),
            Backend::Postgres => PgStore::connect(url.expose())
                .await
                .map(Db::Postgres)
                .map_err(|e| StoreError::Open {
                    context: "connecting to PostgreSQL (CIVICAST_DATABASE_URL)".into(),
                    source: Box::new(e),
                }),
        }
    }

    /// A trivial query: whether the database answers at all (a connection from the pool,
    /// one round trip).
    pub async fn ping(&self) -> Result<()> {
        match self {
            Db::Sqlite(s) => {
                sqlx::query("SELECT 1").execute(s.pool()).await?;
            }
            Db::Postgres(s) => {
                sqlx::query("SELECT 1").execute(s.pool()).await?;
            }
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }
}

impl From<SqliteStore> for Db {
    fn from(s: SqliteStore) -> Db {
        Db::Sqlite(s)
    }
}

impl From<PgStore> for Db {
    fn from(s: PgStore) -> Db {
        Db::Postgres(s)
    }
}

/// Calls the same method on whichever backend `$db` holds.
macro_rules! delegate {
    ($db:expr, $s:ident => $call:expr) => {
        match $db {
            Db::Sqlite($s) => $call.await,
            Db::Postgres($s) => $call.await,
        }
    };
}

impl Store for Db {
    async fn migrate(&self) -> Result<()> {
        delegate!(self, s => s.migrate())
    }
    async fn sync_inventory(
        &self,
        devices: &[DeviceRow],
        feeds: &[String],
        now_ms: i64,
    ) -> Result<Keys> {
        delegate!(self, s => s.sync_inventory(devices, feeds, now_ms))
    }
    async fn memberships(&self) -> Result<Vec<Membership>> {
        delegate!(self, s => s.memberships())
    }
    async fn slogan_key(&self, adset: &str, rev: i64, slogan: &str) -> Result<i64> {
        delegate!(self, s => s.slogan_key(adset, rev, slogan))
    }
    async fn record_play(&self, play: &NewPlay, cursor: Option<(&str, &str)>) -> Result<i64> {
        delegate!(self, s => s.record_play(play, cursor))
    }
    async fn feed_state(&self, feed: &str) -> Result<Option<FeedState>> {
        delegate!(self, s => s.feed_state(feed))
    }
    async fn plays_since(&self, since_ms: i64) -> Result<Vec<PlayRow>> {
        delegate!(self, s => s.plays_since(since_ms))
    }
    async fn play_by_id(&self, play_id: &str) -> Result<Option<PlayRow>> {
        delegate!(self, s => s.play_by_id(play_id))
    }
    async fn commit_batch(&self, batch: &Batch) -> Result<Outcome> {
        delegate!(self, s => s.commit_batch(batch))
    }
    async fn audit_plays(&self, q: &PlaysQuery) -> Result<Vec<PlaysRow>> {
        delegate!(self, s => s.audit_plays(q))
    }
    async fn reject_counts(&self) -> Result<Vec<RejectCount>> {
        delegate!(self, s => s.reject_counts())
    }
    async fn stream_plays(
        &self,
        q: &PlaysQuery,
        tx: tokio::sync::mpsc::Sender<PlaysRow>,
    ) -> Result<bool> {
        delegate!(self, s => s.stream_plays(q, tx))
    }
    async fn prune_receipts(&self, before_ms: i64) -> Result<u64> {
        delegate!(self, s => s.prune_receipts(before_ms))
    }
}

impl ApiStore for Db {
    async fn create_token(&self, name: &str, role: Role, hash: &str, now_ms: i64) -> Result<i64> {
        delegate!(self, s => s.create_token(name, role, hash, now_ms))
    }
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        delegate!(self, s => s.token_by_hash(hash))
    }
    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        delegate!(self, s => s.tokens())
    }
    async fn revoke_token(&self, id: i64, now_ms: i64) -> Result<bool> {
        delegate!(self, s => s.revoke_token(id, now_ms))
    }
    async fn add_revision(&self, rev: &Revision, approved: bool) -> Result<i64> {
        delegate!(self, s => s.add_revision(rev, approved))
    }
    async fn adset_history(&self, adset: &str) -> Result<Option<AdSetHistory>> {
        delegate!(self, s => s.adset_history(adset))
    }
    async fn adset_histories(&self) -> Result<Vec<AdSetHistory>> {
        delegate!(self, s => s.adset_histories())
    }
    async fn approve_latest(
        &self,
        adset: &str,
        by: &Approver<'_>,
        now_ms: i64,
    ) -> Result<Revision> {
        delegate!(self, s => s.approve_latest(adset, by, now_ms))
    }
    async fn retire(&self, adset: &str, by: &str, now_ms: i64) -> Result<bool> {
        delegate!(self, s => s.retire(adset, by, now_ms))
    }
    async fn retire_for(&self, adset: &str, by: &str, reason: &str, now_ms: i64) -> Result<bool> {
        delegate!(self, s => s.retire_for(adset, by, reason, now_ms))
    }
    async fn presence_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<PresenceSpan>> {
        delegate!(self, s => s.presence_between(from_ms, to_ms))
    }
    async fn presence_of(
        &self,
        from_ms: i64,
        to_ms: i64,
        devices: &[String],
    ) -> Result<Vec<PresenceSpan>> {
        delegate!(self, s => s.presence_of(from_ms, to_ms, devices))
    }
    async fn played_of(
        &self,
        from_ms: i64,
        to_ms: i64,
        devices: &[String],
    ) -> Result<Vec<PlayedTimes>> {
        delegate!(self, s => s.played_of(from_ms, to_ms, devices))
    }
    async fn played_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        device: Option<&str>,
    ) -> Result<Vec<PlayedTimes>> {
        delegate!(self, s => s.played_between(from_ms, to_ms, device))
    }
    async fn last_receipts(&self, devices: &[String]) -> Result<Vec<LastReceipt>> {
        delegate!(self, s => s.last_receipts(devices))
    }
    async fn feed_plays_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<FeedPlay>> {
        delegate!(self, s => s.feed_plays_between(from_ms, to_ms))
    }
    async fn receipts_for_plays_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PlayReceipt>> {
        delegate!(self, s => s.receipts_for_plays_between(from_ms, to_ms))
    }
    async fn play_counts_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<PlayCount>> {
        delegate!(self, s => s.play_counts_between(from_ms, to_ms))
    }
    async fn receipts_in_ranges(&self, ranges: &[PlayRange]) -> Result<Vec<PlayReceipt>> {
        delegate!(self, s => s.receipts_in_ranges(ranges))
    }
    async fn presence_keys_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PresenceKeySpan>> {
        delegate!(self, s => s.presence_keys_between(from_ms, to_ms))
    }
}
