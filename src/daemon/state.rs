//! The state the daemon's tasks and the HTTP API share, behind one cheap-to-clone handle.
//!
//! Owns: what plays now (the catalog with its effective ad sets, and the files' catalog
//! alone), the display lookups, the recent plays, presence as last reported, the newest
//! play of each feed, the feeds held by urgent messages, the units and checklist of `devices/`, and the reload signal. Must not touch: the store, MQTT, HTTP.
//!
//! Lock policy, one for every lock here: a std lock, held only to copy a value out, insert
//! one entry, or swap one `Arc`, and never across an `.await`; such short sections are what
//! a std lock is right for (tokio's shared-state guide, mini-redis `db.rs`), and they keep
//! the receipt path free of async locking. Each section is a single assignment, so a panic
//! inside one cannot leave a value half-written: a poisoned lock is recovered, for reads and
//! writes alike (`read`, `write`, `lock` below), rather than a read quietly returning
//! nothing while a write is skipped. The one async mutex, `reloading`, serialises reloads,
//! which await the store between reading the base catalog and installing the result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::Notify;

use crate::core::model::{AdSet, Catalog};
use crate::core::receipt::PlayRow;
use crate::core::wire::PlayCommand;
use crate::daemon::effective_adsets::ParsedAdSets;
use crate::daemon::inventory::{Inventory, MemberIndex};
use crate::metrics::Metrics;

/// How far back the daemon looks for plays to cache when it starts.
pub const PLAY_CACHE_MS: i64 = 6 * 3600 * 1000;
/// How long past its expiry a play stays in the in-memory index, at most: its receipts
/// start within its life give or take two minutes (`wire::RECEIPT_SLACK_MS`) and are
/// delivered a little later; a display's receipts sent after longer offline find their
/// play in the database.
const PLAY_CACHE_GRACE_MS: i64 = 30 * 60 * 1000;
/// How long past its expiry a play stays cached, at least: the receipt window's slack and
/// a minute for delivery.
const PLAY_CACHE_GRACE_MIN_MS: i64 = crate::core::wire::RECEIPT_SLACK_MS + 60 * 1000;
/// The grace in lives of the play: ten, so that a play of the field (a 3-minute life) keeps
/// the full 30 minutes, and plays a hundred times shorter (a time-compressed soak, a demo)
/// are not kept a hundred times as many lives, which grew the daemon's memory for 30
/// minutes of wall-clock time at their rate.
const PLAY_CACHE_GRACE_LIVES: i64 = 10;

/// How long past its expiry `play` stays in the index.
fn cache_grace_ms(play: &PlayRow) -> i64 {
    let life = play.expires_ms.saturating_sub(play.issued_ms).max(0);
    life.saturating_mul(PLAY_CACHE_GRACE_LIVES)
        .clamp(PLAY_CACHE_GRACE_MIN_MS, PLAY_CACHE_GRACE_MS)
}
/// The most plays the index holds, whatever their expiry (the soonest due dropped first).
const PLAY_CACHE_MAX: usize = 500_000;

/// Recent plays by public id, each dropped once past its expiry and grace, soonest due
/// first: the index stays as large as the plays alive, whatever the rate (the 6-hour window
/// it had before held 6 hours of plays however short they lived, and scanned all of them
/// at every insert once past 100,000). Ordered by due time, not by insertion, so that one
/// long-lived play (an urgent message of an hour) does not keep every shorter play cached
/// after it.
#[derive(Default)]
struct PlayCache {
    by_id: HashMap<String, PlayRow>,
    due: std::collections::BinaryHeap<std::cmp::Reverse<(i64, String)>>,
}

impl PlayCache {
    fn insert(&mut self, play: PlayRow, now_ms: i64) {
        while let Some(std::cmp::Reverse((until, _))) = self.due.peek() {
            if *until >= now_ms && self.due.len() < PLAY_CACHE_MAX {
                break;
            }
            if let Some(std::cmp::Reverse((_, id))) = self.due.pop() {
                self.by_id.remove(&id);
            }
        }
        let until = play.expires_ms.saturating_add(cache_grace_ms(&play));
        if until >= now_ms {
            self.due
                .push(std::cmp::Reverse((until, play.play_id.clone())));
            self.by_id.insert(play.play_id.clone(), play);
        }
    }
}

/// The daemon's shared state; clones share it.
#[derive(Clone)]
pub struct Shared(Arc<Inner>);

struct Inner {
    /// What plays: the files' displays and feeds with the effective ad sets.
    catalog: RwLock<Arc<Catalog>>,
    /// The last good state of `devices/` and `schedules/` alone.
    base: RwLock<Arc<Catalog>>,
    /// Wakes the scheduler when `catalog` changes.
    reload: Notify,
    /// Serialises reloads (file watcher and API) so that one never undoes another.
    reloading: tokio::sync::Mutex<()>,
    /// The ad-set revisions parsed so far, so that a reload parses only what changed.
    adset_cache: ParsedAdSets,
    metrics: Arc<Metrics>,
    inventory: RwLock<Arc<Inventory>>,
    members: RwLock<MemberIndex>,
    /// Recent plays by their public id, for the receipt check without a database read.
    plays: Mutex<PlayCache>,
    /// Presence by display key, as last reported.
    online: Mutex<HashMap<i64, bool>>,
    /// The newest play of each feed, for the inventory.
    last_play: Mutex<HashMap<String, PlayCommand>>,
    /// Feeds whose rotation a published urgent message holds: message id -> (feeds, until
    /// ms). A handful at a time, so a scan per slot is cheap.
    holds: Mutex<HashMap<String, (Vec<String>, i64)>>,
    retention_ms: Option<i64>,
    /// The units and checklist of `devices/`, installed with the files they were read with.
    inspect: RwLock<Arc<crate::core::inspect::Setup>>,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}
fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the daemon knows at start, to build the shared state from.
pub struct Initial {
    /// The files' catalog with the effective ad sets.
    pub catalog: Catalog,
    /// The files' catalog alone.
    pub base: Arc<Catalog>,
    pub inventory: Inventory,
    pub members: MemberIndex,
    /// Plays recent enough to be cached.
    pub recent: Vec<PlayRow>,
    pub metrics: Arc<Metrics>,
    /// Days of raw receipts kept, in milliseconds.
    pub retention_ms: Option<i64>,
    /// The revisions parsed for `catalog`'s ad sets.
    pub adset_cache: ParsedAdSets,
}

impl Shared {
    pub fn new(i: Initial) -> Shared {
        Shared(Arc::new(Inner {
            catalog: RwLock::new(Arc::new(i.catalog)),
            base: RwLock::new(i.base),
            reload: Notify::new(),
            reloading: tokio::sync::Mutex::new(()),
            adset_cache: i.adset_cache,
            metrics: i.metrics,
            inventory: RwLock::new(Arc::new(i.inventory)),
            members: RwLock::new(i.members),
            plays: Mutex::new({
                let mut cache = PlayCache::default();
                // Each is dropped once past its expiry, at the first insert after that.
                for p in i.recent {
                    cache.insert(p, i64::MIN);
                }
                cache
            }),
            online: Mutex::new(HashMap::new()),
            last_play: Mutex::new(HashMap::new()),
            holds: Mutex::new(HashMap::new()),
            retention_ms: i.retention_ms,
            inspect: RwLock::default(),
        }))
    }

    /// The units and checklist the inspection routes work on now.
    pub fn inspect(&self) -> Arc<crate::core::inspect::Setup> {
        read(&self.0.inspect).clone()
    }
    pub fn set_inspect(&self, setup: crate::core::inspect::Setup) {
        *write(&self.0.inspect) = Arc::new(setup);
    }

    /// What plays now.
    pub fn current(&self) -> Arc<Catalog> {
        read(&self.0.catalog).clone()
    }
    /// The files' catalog without the ad sets from the store.
    pub fn base(&self) -> Arc<Catalog> {
        read(&self.0.base).clone()
    }
    pub fn adset_cache(&self) -> &ParsedAdSets {
        &self.0.adset_cache
    }
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.0.metrics
    }
    pub fn inventory(&self) -> Arc<Inventory> {
        read(&self.0.inventory).clone()
    }
    pub fn retention_ms(&self) -> Option<i64> {
        self.0.retention_ms
    }

    /// Presence by display name, as last reported.
    pub fn online_names(&self) -> HashMap<String, bool> {
        let inv = self.inventory();
        lock(&self.0.online)
            .iter()
            .filter_map(|(k, v)| Some((inv.id_of(*k)?.to_owned(), *v)))
            .collect()
    }
    /// The newest play of each feed.
    pub fn last_plays(&self) -> HashMap<String, PlayCommand> {
        lock(&self.0.last_play).clone()
    }

    /// Whether display `device` was a member of `feed` at `at_ms`.
    pub fn member_at(&self, device: i64, feed: i64, at_ms: i64) -> bool {
        read(&self.0.members).member_at(device, feed, at_ms)
    }

    /// A recent play by its public id, without a database read.
    pub fn cached_play(&self, play_id: &str) -> Option<PlayRow> {
        lock(&self.0.plays).by_id.get(play_id).cloned()
    }
    /// Caches a play just recorded, trimming old ones when the cache is large.
    pub fn remember_play(&self, play: PlayRow, now_ms: i64) {
        lock(&self.0.plays).insert(play, now_ms);
    }
    /// Notes a feed's newest published play.
    pub fn published(&self, feed: &str, cmd: PlayCommand) {
        lock(&self.0.last_play).insert(feed.to_owned(), cmd);
    }

    /// Holds the rotation of `feeds` until `until_ms` for urgent message `id` (replacing an
    /// earlier hold of the same message).
    pub fn hold(&self, id: &str, feeds: Vec<String>, until_ms: i64) {
        lock(&self.0.holds).insert(id.to_owned(), (feeds, until_ms));
    }
    /// Ends the hold of urgent message `id` (cancelled).
    pub fn release(&self, id: &str) {
        lock(&self.0.holds).remove(id);
    }
    /// Until when an urgent message holds `feed`'s rotation at `now_ms`, if one does;
    /// expired holds are dropped on the way.
    pub fn held_until(&self, feed: &str, now_ms: i64) -> Option<i64> {
        let mut holds = lock(&self.0.holds);
        holds.retain(|_, (_, until)| *until > now_ms);
        holds
            .values()
            .filter(|(feeds, _)| feeds.iter().any(|f| f == feed))
            .map(|(_, until)| *until)
            .max()
    }

    /// Records a display's reported presence; true when it changed. The online gauge counts
    /// displays last seen online, so it moves only when a display goes from online to
    /// offline or back: a first report of "offline" (a last will after a restart, a
    /// display that never came up) changes the record but not the gauge.
    pub fn set_online(&self, key: i64, online: bool) -> bool {
        let before = lock(&self.0.online).insert(key, online);
        let was_online = before == Some(true);
        if was_online != online {
            let class = self.inventory().device(key).map(|d| d.class.to_string());
            if let Some(class) = class {
                *lock(&self.0.metrics.online_by_class)
                    .entry(class)
                    .or_default() += if online { 1 } else { -1 };
            }
        }
        before != Some(online)
    }

    /// Waits until the catalog changes.
    pub async fn reloaded(&self) {
        self.0.reload.notified().await
    }
    /// Held for the whole of a reload, so that two never interleave.
    pub async fn reloading(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.0.reloading.lock().await
    }

    /// Installs newly loaded files: lookups first, then the base catalog. Members go in
    /// before keys, so a receipt checked in between sees a superset, never a hole. The ad
    /// sets follow with `set_adsets`.
    pub fn install_files(&self, base: Catalog, inventory: Inventory, members: MemberIndex) {
        *write(&self.0.members) = members;
        *write(&self.0.inventory) = Arc::new(inventory);
        *write(&self.0.base) = Arc::new(base);
    }
    /// Makes `adsets` play over the current base catalog, and tells the scheduler.
    pub fn set_adsets(&self, adsets: Vec<AdSet>) {
        let mut c = (*self.base()).clone();
        c.adsets = adsets;
        *write(&self.0.catalog) = Arc::new(c);
        self.0.reload.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Attrs, Device, Id};
    use crate::store::Keys;

    fn shared() -> Shared {
        let device = |id: &str, class: &str| Device {
            id: Id::parse(id).expect("id"),
            class: class.into(),
            attrs: Attrs::default(),
        };
        let devices = Arc::new(vec![
            device("taxi-1", "taxi_top"),
            device("bus-1", "bus_led"),
        ]);
        let keys = Keys {
            devices: [("taxi-1".to_string(), 1), ("bus-1".to_string(), 2)].into(),
            feeds: Default::default(),
        };
        let catalog = Catalog {
            timezone: chrono_tz::Asia::Shanghai,
            classes: Default::default(),
            devices: devices.clone(),
            feeds: vec![],
            adsets: vec![],
        };
        Shared::new(Initial {
            base: Arc::new(catalog.clone()),
            catalog,
            inventory: Inventory::new(devices, keys),
            members: MemberIndex::new(vec![]),
            recent: vec![],
            metrics: Arc::new(Metrics::default()),
            retention_ms: None,
            adset_cache: ParsedAdSets::default(),
        })
    }

    fn online(s: &Shared, class: &str) -> i64 {
        let m = lock(&s.metrics().online_by_class);
        m.get(class).copied().unwrap_or(0)
    }

    #[test]
    fn the_online_gauge_counts_displays_last_seen_online_and_never_goes_negative() {
        let s = shared();
        assert!(s.set_online(1, false), "a first report is recorded");
        assert_eq!(
            online(&s, "taxi_top"),
            0,
            "a first offline is not a departure"
        );
        assert!(s.set_online(1, true));
        assert!(!s.set_online(1, true), "a repeated report changes nothing");
        assert_eq!(online(&s, "taxi_top"), 1);
        assert!(s.set_online(2, true));
        assert!(s.set_online(1, false));
        assert!(!s.set_online(1, false));
        assert_eq!((online(&s, "taxi_top"), online(&s, "bus_led")), (0, 1));
        assert_eq!(
            s.online_names(),
            [("taxi-1".to_string(), false), ("bus-1".to_string(), true)].into()
        );
    }

    #[test]
    fn an_urgent_hold_lasts_until_its_expiry_or_its_release() {
        let s = shared();
        s.hold("m1", vec!["buses".into(), "taxis".into()], 1_000);
        s.hold("m2", vec!["buses".into()], 2_000);
        assert_eq!(s.held_until("buses", 500), Some(2_000));
        assert_eq!(s.held_until("taxis", 500), Some(1_000));
        assert_eq!(s.held_until("stops", 500), None);
        assert_eq!(s.held_until("taxis", 1_000), None, "expired at its time");
        s.release("m2");
        assert_eq!(s.held_until("buses", 1_500), None);
    }

    #[test]
    fn online_names_are_by_display_id() {
        let s = shared();
        s.set_online(1, false);
        s.set_online(2, true);
        assert_eq!(
            s.online_names(),
            [("taxi-1".to_string(), false), ("bus-1".to_string(), true)].into()
        );
    }
}

#[cfg(test)]
mod play_cache_tests {
    use super::*;

    fn play(n: i64, expires_ms: i64) -> PlayRow {
        PlayRow {
            key: n,
            play_id: format!("p{n}"),
            feed: Some(1),
            device: None,
            slogan: 1,
            issued_ms: expires_ms - 60_000,
            expires_ms,
        }
    }

    #[test]
    fn the_index_holds_the_plays_alive_and_no_more() {
        let mut c = PlayCache::default();
        // A play every second for two hours, each alive a minute: ten lives of grace.
        for n in 0..7_200 {
            c.insert(play(n, n * 1_000 + 60_000), n * 1_000);
        }
        let alive = (60_000 + 10 * 60_000) / 1_000 + 1;
        assert!(c.by_id.len() as i64 <= alive, "{}", c.by_id.len());
        assert!(c.by_id.len() as i64 >= alive - 2, "{}", c.by_id.len());
        assert_eq!(c.by_id.len(), c.due.len());
        assert!(c.by_id.contains_key("p7199"));
        assert!(!c.by_id.contains_key("p0"), "long expired");
        // Already past its expiry and grace when cached: not kept.
        c.insert(play(9_000, 0), 7_200_000);
        assert!(!c.by_id.contains_key("p9000"));
    }

    /// A play of `life_ms` issued at `at_ms`, keyed `n`.
    fn lived(n: i64, at_ms: i64, life_ms: i64) -> PlayRow {
        PlayRow {
            issued_ms: at_ms,
            ..play(n, at_ms + life_ms)
        }
    }

    #[test]
    fn the_grace_is_ten_lives_between_three_and_thirty_minutes() {
        let min = 60_000;
        assert_eq!(cache_grace_ms(&lived(1, 0, 3 * min)), 30 * min, "the field");
        assert_eq!(cache_grace_ms(&lived(2, 0, 60 * min)), 30 * min, "an hour");
        assert_eq!(cache_grace_ms(&lived(3, 0, 3_582)), 3 * min, "a soak's");
        assert_eq!(cache_grace_ms(&lived(4, 0, 30_000)), 5 * min);
    }

    #[test]
    fn a_long_lived_play_does_not_keep_the_short_ones_after_it() {
        let mut c = PlayCache::default();
        c.insert(lived(0, 0, 3_600_000), 0);
        // Then a play of 3.6 s every 100 ms for an hour: three minutes' worth stay.
        for n in 1..36_000 {
            c.insert(lived(n, n * 100, 3_600), n * 100);
        }
        assert!(c.by_id.contains_key("p0"), "the hour-long play is alive");
        let alive = (3_600 + PLAY_CACHE_GRACE_MIN_MS) / 100 + 2;
        assert!(c.by_id.len() as i64 <= alive, "{} > {alive}", c.by_id.len());
        assert_eq!(c.by_id.len(), c.due.len());
    }
}
