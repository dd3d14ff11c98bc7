//! The running daemon: the rotation scheduler that publishes plays, the ingest worker that
//! stores receipts and presence in batches and acknowledges them only after they commit,
//! and the retained display configs.
//!
//! Owns: the tasks and their shutdown order. Decisions (which slogan, is a receipt valid)
//! come from the core (`rotation`, `wire`); bytes go through `mqtt` and `store`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use rumqttc::v5::mqttbytes::v5::Publish;
use rumqttc::v5::AsyncClient;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use crate::adsets;
use crate::core::model::{Catalog, Feed};
use crate::core::rotation::{self, Cursor};
use crate::core::wire::{self, DisplayConfig, PlayCommand, Reject, Topics};
use crate::inventory::{self, Inventory, MemberIndex};
use crate::metrics::Metrics;
use crate::mqtt::broker::{self, BrokerOptions};
use crate::mqtt::{self, Delivery, SessionOptions};
use crate::settings::{MqttUrl, Settings};
use crate::store::{
    ApiStore, Batch, DeviceRow, Keys, NewPlay, PlayRow, PresenceEvent, ReceiptRow, Store,
};

/// Where time comes from; tests pass their own.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
pub struct SystemClock;
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// State shared by the daemon's tasks.
pub struct Shared {
    /// What plays: the files' displays and feeds with the effective ad sets.
    pub catalog: RwLock<Arc<Catalog>>,
    /// The last good state of `devices/` and `schedules/` alone.
    base: RwLock<Arc<Catalog>>,
    /// Wakes the scheduler when `catalog` changes.
    pub reload: tokio::sync::Notify,
    /// Serialises reloads (file watcher and API) so that one never undoes another.
    reloading: tokio::sync::Mutex<()>,
    pub metrics: Arc<Metrics>,
    inventory: RwLock<Arc<Inventory>>,
    members: RwLock<MemberIndex>,
    /// Recent plays by their public id, for the receipt check without a database read.
    plays: Mutex<HashMap<String, PlayRow>>,
    online: Mutex<HashMap<i64, bool>>,
    /// The newest play of each feed, for the inventory.
    last_play: Mutex<HashMap<String, PlayCommand>>,
    /// Raw receipts older than this are pruned, so a late copy could no longer be matched
    /// against the stored one: receipts for plays that old are refused.
    retention_ms: Option<i64>,
}

impl Shared {
    /// Presence by display name, as last reported.
    pub fn online_names(&self) -> HashMap<String, bool> {
        let inv = self.inventory();
        match self.online.lock() {
            Ok(o) => o
                .iter()
                .filter_map(|(k, v)| Some((inv.id_of(*k)?.to_owned(), *v)))
                .collect(),
            Err(_) => HashMap::new(),
        }
    }
    /// The newest play of each feed.
    pub fn last_plays(&self) -> HashMap<String, PlayCommand> {
        self.last_play.lock().map(|m| m.clone()).unwrap_or_default()
    }
    /// What plays now.
    pub fn current(&self) -> Arc<Catalog> {
        match self.catalog.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
    fn inventory(&self) -> Arc<Inventory> {
        match self.inventory.read() {
            Ok(i) => i.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
    fn base(&self) -> Arc<Catalog> {
        match self.base.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Re-reads the effective ad sets (after an upload, approval or retirement) and tells the
/// scheduler; the change plays from the feeds' next slot.
pub async fn refresh_adsets<S: ApiStore>(store: &S, shared: &Shared) -> anyhow::Result<()> {
    let _guard = shared.reloading.lock().await;
    let base = shared.base();
    let adsets = adsets::effective(store, &base).await?;
    let mut c = (*base).clone();
    c.adsets = adsets;
    if let Ok(mut w) = shared.catalog.write() {
        *w = Arc::new(c);
    }
    shared.reload.notify_one();
    Ok(())
}

/// Scales feed intervals and on-screen durations (the demo's time compression).
pub fn scale_time(c: &mut Catalog, scale: f64) {
    if (scale - 1.0).abs() < f64::EPSILON {
        return;
    }
    for f in &mut c.feeds {
        f.interval = f.interval.mul_f64(scale).max(Duration::from_millis(100));
    }
    for k in c.classes.values_mut() {
        k.duration = k.duration.mul_f64(scale);
    }
}

/// How long plays stay in the in-memory index; older ones are read from the database.
const PLAY_CACHE_MS: i64 = 6 * 3600 * 1000;

/// A started daemon.
pub struct Running {
    /// Where displays connect, when the broker is embedded.
    pub mqtt_addr: Option<std::net::SocketAddr>,
    pub shared: Arc<Shared>,
    pub tasks: TaskTracker,
}

impl Running {
    /// Waits for every task to end (after the shutdown token is cancelled).
    pub async fn wait(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Starts the daemon: the embedded broker (when `settings.mqtt_url` is unset; it listens on
/// `mqtt_listener`), the MQTT session, the scheduler and the ingest worker.
pub async fn start<S: ApiStore>(
    settings: &Settings,
    store: S,
    catalog: Catalog,
    mqtt_listener: Option<TcpListener>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> anyhow::Result<Running> {
    store.migrate().await.context("migrating the database")?;
    let now = clock.now();
    let keys = sync_inventory(&store, &catalog, now.timestamp_millis()).await?;
    adsets::register_files(
        &store,
        &catalog,
        &settings.schedules,
        now.timestamp_millis(),
    )
    .await?;
    let base = Arc::new(catalog.clone());
    let mut catalog = catalog;
    catalog.adsets = adsets::effective(&store, &base).await?;
    let members = MemberIndex::new(store.memberships().await?);
    let inventory = Inventory::new(catalog.devices.clone(), keys);
    let recent = store
        .plays_since(now.timestamp_millis() - PLAY_CACHE_MS)
        .await?;
    inventory::release_free_memory();
    let metrics = Arc::new(Metrics::default());
    metrics.database_ok.store(true, Ordering::Relaxed);
    let shared = Arc::new(Shared {
        catalog: RwLock::new(Arc::new(catalog)),
        base: RwLock::new(base),
        reload: tokio::sync::Notify::new(),
        reloading: tokio::sync::Mutex::new(()),
        metrics,
        inventory: RwLock::new(Arc::new(inventory)),
        members: RwLock::new(members),
        plays: Mutex::new(recent.into_iter().map(|p| (p.play_id.clone(), p)).collect()),
        online: Mutex::new(HashMap::new()),
        last_play: Mutex::new(HashMap::new()),
        retention_ms: settings.retention_days.map(|d| i64::from(d) * 86_400_000),
    });

    let topics = Topics::new(settings.prefix.clone());
    let tasks = TaskTracker::new();
    // The broker outlives the session so that the daemon can say goodbye cleanly.
    let broker_stop = CancellationToken::new();
    let (host, port, username, password, mqtt_addr) = match &settings.mqtt_url {
        Some(u) => {
            let u = MqttUrl::parse(u).map_err(|e| anyhow::anyhow!("CIVICAST_MQTT_URL: {e}"))?;
            (u.host, u.port, u.username, u.password, None)
        }
        None => {
            let listener = match mqtt_listener {
                Some(l) => l,
                None => TcpListener::bind(&settings.mqtt_listen)
                    .await
                    .with_context(|| {
                        format!("binding the MQTT listener {}", settings.mqtt_listen)
                    })?,
            };
            let b = broker::start(
                listener,
                BrokerOptions {
                    max_connections: settings.broker_max_connections,
                    ..Default::default()
                },
                broker_stop.clone(),
            )
            .await?;
            (
                b.internal_v5.ip().to_string(),
                b.internal_v5.port(),
                None,
                None,
                Some(b.addr),
            )
        }
    };
    let mqtt_stop = CancellationToken::new();
    let session = mqtt::start(
        SessionOptions {
            host,
            port,
            client_id: settings.mqtt_client_id.clone(),
            username,
            password,
            filters: {
                let share = Some(settings.share_group.as_str())
                    .filter(|g| !g.is_empty() && settings.mqtt_url.is_some());
                vec![topics.receipts_filter(share), topics.status_filter(share)]
            },
            receive_maximum: 10_000,
        },
        mqtt_stop.clone(),
    );
    let client = session.client.clone();
    {
        let connected = session.connected.clone();
        let m = shared.metrics.clone();
        let stop = mqtt_stop.clone();
        tasks.spawn(async move {
            loop {
                m.broker_connected
                    .store(connected.load(Ordering::Relaxed), Ordering::Relaxed);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
            m.broker_connected.store(false, Ordering::Relaxed);
        });
    }

    publish_configs(&client, &topics, &shared).await;
    if let Some(days) = settings.retention_days {
        let (store, clock, stop) = (store.clone(), clock.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                let before = clock.now().timestamp_millis() - i64::from(days) * 86_400_000;
                match store.prune_receipts(before).await {
                    Ok(n) if n > 0 => {
                        info!(removed = n, days, "raw receipts past retention pruned")
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "pruning old receipts failed; will retry"),
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
                }
            }
        });
    }
    if let Some(every) = settings.watch_every {
        tasks.spawn(watch_files(
            store.clone(),
            client.clone(),
            topics.clone(),
            shared.clone(),
            settings.clone(),
            clock.clone(),
            every,
            shutdown.clone(),
        ));
    }

    let play_ttl = settings.play_ttl;
    // rumqttd 0.20 panics when it forwards a publish with MQTT 5 properties to an MQTT 3.1.1
    // subscriber, so the embedded broker gets plays without the expiry property; displays
    // still refuse stale plays by `expires_at`, and rumqttd keeps no offline queues on disk.
    let expiry_property = mqtt_addr.is_none();
    tasks.spawn(scheduler(
        store.clone(),
        client.clone(),
        topics.clone(),
        shared.clone(),
        clock.clone(),
        play_ttl,
        expiry_property,
        shutdown.clone(),
    ));
    let embedded = mqtt_addr.is_some();
    let ingest_done = CancellationToken::new();
    tasks.spawn({
        let ingest = ingest(
            store,
            client.clone(),
            session.inbound,
            topics,
            shared.clone(),
            clock,
            settings.batch_max,
            settings.batch_wait.unwrap_or(Duration::ZERO),
            embedded,
            shutdown.clone(),
        );
        let done = ingest_done.clone();
        async move {
            ingest.await;
            done.cancel();
        }
    });
    // Shutdown order: the ingest worker commits and acknowledges what it holds, then the
    // session says DISCONNECT, then the broker stops.
    tasks.spawn(async move {
        ingest_done.cancelled().await;
        let _ = client.try_disconnect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        mqtt_stop.cancel();
        broker_stop.cancel();
    });
    Ok(Running {
        mqtt_addr,
        shared,
        tasks,
    })
}

/// Writes the catalog's displays, feeds and memberships to the store; returns its keys.
pub async fn sync_inventory<S: Store>(store: &S, c: &Catalog, now_ms: i64) -> anyhow::Result<Keys> {
    let devices: Vec<DeviceRow> = c
        .devices
        .iter()
        .map(|d| DeviceRow {
            name: d.id.to_string(),
            class: d.class.to_string(),
            feeds: c.feeds_of(d).into_iter().map(String::from).collect(),
        })
        .collect();
    let feeds: Vec<String> = c.feeds.iter().map(|f| f.id.to_string()).collect();
    Ok(store.sync_inventory(&devices, &feeds, now_ms).await?)
}

/// Publishes every display's retained config.
async fn publish_configs(client: &AsyncClient, topics: &Topics, shared: &Shared) {
    let catalog = shared.current();
    for d in catalog.devices.iter() {
        let cfg = DisplayConfig {
            v: 1,
            device_id: d.id.to_string(),
            class: d.class.to_string(),
            feeds: catalog.feeds_of(d).into_iter().map(String::from).collect(),
            prefix: topics.prefix.clone(),
        };
        let Ok(payload) = serde_json::to_vec(&cfg) else {
            continue;
        };
        if let Err(e) = mqtt::publish_retained(client, topics.config(d.id.as_str()), payload).await
        {
            warn!(device = %d.id, error = %e, "could not queue display config");
        } else {
            shared
                .metrics
                .configs_published
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    info!(
        displays = catalog.devices.len(),
        "display configs published"
    );
}

/// A cheap summary of the operators' folders: every file's path, size and mtime.
fn fingerprint(
    dirs: &[&std::path::Path],
) -> Vec<(std::path::PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut out = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) => out.push((p, m.len(), m.modified().ok())),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// Picks up edits to `devices/` and `schedules/` while running. A bad edit is refused and
/// logged; the last good state keeps playing.
#[allow(clippy::too_many_arguments)]
async fn watch_files<S: ApiStore>(
    store: S,
    client: AsyncClient,
    topics: Topics,
    shared: Arc<Shared>,
    settings: Settings,
    clock: Arc<dyn Clock>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let dirs = [settings.devices.as_path(), settings.schedules.as_path()];
    let mut last = fingerprint(&dirs);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        let now = fingerprint(&dirs);
        if now == last {
            continue;
        }
        last = now;
        let report = crate::core::catalog::load_dirs(&settings.devices, &settings.schedules);
        let errors = report.errors();
        let Some(mut catalog) = report.catalog.filter(|_| errors == 0) else {
            for p in report.problems.iter().filter(|p| p.is_error()) {
                warn!(problem = %p, "edited file refused");
            }
            warn!(
                errors,
                "devices/ or schedules/ has errors; the last good state keeps playing"
            );
            continue;
        };
        scale_time(&mut catalog, settings.time_scale);
        if let Err(e) = apply_files(
            &store,
            &shared,
            &settings,
            catalog,
            clock.now().timestamp_millis(),
        )
        .await
        {
            warn!(error = %e, "could not apply the edited files; the last good state keeps playing");
            continue;
        }
        publish_configs(&client, &topics, &shared).await;
        info!("devices/ and schedules/ reloaded");
    }
}

/// Makes a newly loaded catalog current: inventory and memberships, file ad sets, configs.
async fn apply_files<S: ApiStore>(
    store: &S,
    shared: &Shared,
    settings: &Settings,
    catalog: Catalog,
    now_ms: i64,
) -> anyhow::Result<()> {
    let keys = sync_inventory(store, &catalog, now_ms).await?;
    let members = MemberIndex::new(store.memberships().await?);
    adsets::register_files(store, &catalog, &settings.schedules, now_ms).await?;
    let inventory = Arc::new(Inventory::new(catalog.devices.clone(), keys));
    // Members first, then keys: a receipt checked in between sees a superset, never a hole.
    if let Ok(mut m) = shared.members.write() {
        *m = members;
    }
    if let Ok(mut i) = shared.inventory.write() {
        *i = inventory;
    }
    inventory::release_free_memory();
    if let Ok(mut b) = shared.base.write() {
        *b = Arc::new(catalog);
    }
    refresh_adsets(store, shared).await
}

/// What a feed's plays carry for its members' classes.
struct FeedShape {
    classes: BTreeSet<String>,
    duration_s: u32,
    members: i64,
}

fn feed_shape(c: &Catalog, f: &Feed) -> FeedShape {
    let mut classes = BTreeSet::new();
    let mut members = 0;
    for d in c.members(f) {
        classes.insert(d.class.to_string());
        members += 1;
    }
    let duration_s = classes
        .iter()
        .filter_map(|k| c.classes.get(k))
        .map(|p| p.duration.as_secs_f64().ceil() as u32)
        .max()
        .unwrap_or(15)
        .max(1);
    FeedShape {
        classes,
        duration_s,
        members,
    }
}

struct FeedRun {
    cursor: Cursor,
}

async fn load_cursor<S: Store>(store: &S, f: &Feed) -> Cursor {
    match store.feed_state(f.id.as_str()).await {
        Ok(Some(state)) => serde_json::from_str(&state.cursor_json).unwrap_or_else(|e| {
            warn!(feed = %f.id, error = %e, "stored rotation cursor unreadable; starting afresh");
            Cursor::default()
        }),
        Ok(None) => Cursor::default(),
        Err(e) => {
            warn!(feed = %f.id, error = %e, "could not read rotation cursor; starting afresh");
            Cursor::default()
        }
    }
}

/// Publishes plays on every feed at its slots, forever.
#[allow(clippy::too_many_arguments)]
async fn scheduler<S: Store>(
    store: S,
    client: AsyncClient,
    topics: Topics,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    play_ttl: Option<Duration>,
    expiry_property: bool,
    shutdown: CancellationToken,
) {
    let mut runs: HashMap<String, FeedRun> = HashMap::new();
    let mut slogan_keys: HashMap<(String, i64, String), i64> = HashMap::new();
    let mut catalog = shared.current();
    let mut shapes: Vec<FeedShape> = Vec::new();
    let mut heap: BinaryHeap<Reverse<(DateTime<Utc>, usize)>> = BinaryHeap::new();
    let mut stale = true;
    loop {
        if stale {
            // New files or ad sets: the grid of each feed is fixed by its id and interval, so
            // rebuilding from now keeps every feed's phase; cursors carry over by feed id.
            stale = false;
            catalog = shared.current();
            shapes = catalog
                .feeds
                .iter()
                .map(|f| feed_shape(&catalog, f))
                .collect();
            heap.clear();
            let now = clock.now();
            for (i, f) in catalog.feeds.iter().enumerate() {
                if !runs.contains_key(f.id.as_str()) {
                    let cursor = load_cursor(&store, f).await;
                    runs.insert(f.id.to_string(), FeedRun { cursor });
                }
                heap.push(Reverse((rotation::next_slot(&f.id, f.interval, now), i)));
            }
        }
        let Some(&Reverse((due, i))) = heap.peek() else {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = shared.reload.notified() => { stale = true; continue; }
            }
        };
        let wait = (due - clock.now()).to_std().unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = shared.reload.notified() => { stale = true; continue; }
            _ = tokio::time::sleep(wait) => {}
        }
        heap.pop();
        let feed = &catalog.feeds[i];
        let now = clock.now();
        heap.push(Reverse((
            rotation::next_slot(&feed.id, feed.interval, due.max(now)),
            i,
        )));
        let shape = &shapes[i];
        if shape.members == 0 {
            continue;
        }
        let candidates = rotation::eligible(feed, &catalog.adsets, now, catalog.timezone);
        let Some(run) = runs.get_mut(feed.id.as_str()) else {
            continue;
        };
        let mut next_cursor = run.cursor.clone();
        let Some(pick) = next_cursor.pick(&candidates) else {
            debug!(feed = %feed.id, "nothing eligible to play");
            continue;
        };
        let cand = &candidates[pick];
        let Some(adset) = catalog
            .adsets
            .iter()
            .find(|a| a.id == cand.adset && a.rev == cand.rev)
        else {
            continue;
        };
        let Some(slogan) = adset.slogans.iter().find(|s| s.id == cand.slogan) else {
            continue;
        };
        let key = (cand.adset.to_string(), cand.rev, cand.slogan.to_string());
        let slogan_key = match slogan_keys.get(&key) {
            Some(k) => *k,
            None => match store.slogan_key(&key.0, key.1, &key.2).await {
                Ok(k) => {
                    slogan_keys.insert(key.clone(), k);
                    k
                }
                Err(e) => {
                    warn!(feed = %feed.id, error = %e, "could not record slogan; skipping this slot");
                    continue;
                }
            },
        };
        let issued = now;
        let expires = rotation::expires_at(issued, feed.interval, play_ttl);
        let play_id = ulid::Ulid::new().to_string();
        let (text, text_by_class) = if shape.classes.len() == 1 {
            let class = shape
                .classes
                .iter()
                .next()
                .map(String::as_str)
                .unwrap_or("");
            (slogan.text_for(class).to_owned(), BTreeMap::new())
        } else {
            let by_class = shape
                .classes
                .iter()
                .filter_map(|c| Some((c.clone(), slogan.text_by_class.get(c)?.clone())))
                .collect();
            (slogan.text.clone(), by_class)
        };
        let tz = catalog.timezone;
        let cmd = PlayCommand {
            v: 1,
            play_id: play_id.clone(),
            feed: Some(feed.id.to_string()),
            adset: adset.id.to_string(),
            rev: adset.rev,
            slogan: slogan.id.to_string(),
            text,
            text_by_class,
            duration_s: shape.duration_s,
            priority: adset.priority,
            issued_at: issued.with_timezone(&tz).fixed_offset(),
            expires_at: expires.with_timezone(&tz).fixed_offset(),
        };
        let feed_key = shared.inventory().feed_key(feed.id.as_str());
        let new = NewPlay {
            play_id: play_id.clone(),
            feed: feed_key,
            device: None,
            slogan: slogan_key,
            issued_ms: issued.timestamp_millis(),
            expires_ms: expires.timestamp_millis(),
            members: shape.members,
        };
        let cursor_json = serde_json::to_string(&next_cursor).unwrap_or_default();
        // Recorded before it is published: a receipt can never arrive for a play we do not know.
        let key = match shared
            .metrics
            .write(
                Utc::now().timestamp_millis(),
                store.record_play(&new, Some((feed.id.as_str(), &cursor_json))),
            )
            .await
        {
            Ok(k) => k,
            Err(e) => {
                warn!(feed = %feed.id, error = %e, "could not record play; skipping this slot");
                continue;
            }
        };
        run.cursor = next_cursor;
        if let Ok(mut plays) = shared.plays.lock() {
            if plays.len() > 100_000 {
                let cutoff = now.timestamp_millis() - PLAY_CACHE_MS;
                plays.retain(|_, p| p.issued_ms >= cutoff);
            }
            plays.insert(
                play_id.clone(),
                PlayRow {
                    key,
                    play_id: play_id.clone(),
                    feed: feed_key,
                    device: None,
                    slogan: slogan_key,
                    issued_ms: new.issued_ms,
                    expires_ms: new.expires_ms,
                },
            );
        }
        let Ok(payload) = serde_json::to_vec(&cmd) else {
            continue;
        };
        let expiry = expiry_property
            .then(|| (expires - issued).num_seconds().clamp(1, u32::MAX as i64) as u32);
        match mqtt::publish_play(&client, topics.feed(feed.id.as_str()), payload, expiry).await {
            Ok(()) => {
                shared.metrics.play(feed.id.as_str());
                if let Ok(mut m) = shared.last_play.lock() {
                    m.insert(feed.id.to_string(), cmd);
                }
                debug!(feed = %feed.id, %play_id, slogan = %slogan.id, "play published");
            }
            Err(e) => error!(feed = %feed.id, error = %e, "could not queue play"),
        }
    }
    info!("scheduler stopped");
}

/// Reads receipts and presence, stores them in batches, acknowledges after commit.
///
/// Two batches are in play at once: one commits (in its own task) while the next gathers,
/// and the next is handed over the moment the commit ends, however large it has grown
/// (group commit). Brokers bound what they forward unacknowledged (rumqttd: 100 messages,
/// Mosquitto: our receive maximum), so a worker that stopped reading while it committed
/// would leave that window idle for the whole commit. Batches commit one at a time and in
/// order, and their acknowledgements follow in order: rumqttd drops out-of-order acks.
///
/// `ack_on_receipt` is for the embedded broker only. It lives and dies with this process
/// and keeps nothing on disk, and it acknowledges a display's publish as soon as its router
/// has it, so holding our acknowledgement back protects nothing the process itself does not;
/// it would only hold rumqttd's fixed window of 100 unacknowledged messages per session
/// (its `MAX_INFLIGHT`) open across every commit. The batch is still committed before it is
/// let go, retried until it is stored, and the bounded inbound channel pushes back on the
/// broker while a commit is slow.
#[allow(clippy::too_many_arguments)]
async fn ingest<S: Store>(
    store: S,
    client: AsyncClient,
    mut inbound: mpsc::UnboundedReceiver<Delivery>,
    topics: Topics,
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    batch_max: usize,
    batch_wait: Duration,
    ack_on_receipt: bool,
    shutdown: CancellationToken,
) {
    let mut batch = Batch::default();
    // Acknowledgements owed once `batch` commits; `held` counts its messages either way.
    let mut acks: Vec<Publish> = Vec::new();
    let mut held = 0usize;
    let mut committing: Option<tokio::task::JoinHandle<()>> = None;
    // With a `batch_wait`, a batch is not handed over before its first message is this old.
    let mut ready_at = tokio::time::Instant::now();
    let mut stopping = false;
    let mut closed = false;
    loop {
        let full = held >= batch_max;
        let due = stopping || closed || full || tokio::time::Instant::now() >= ready_at;
        if committing.is_none() && held > 0 && due {
            held = 0;
            batch.utc_offset_h = crate::core::audit::fixed_offset_hours(shared.current().timezone);
            let work = commit_and_ack(
                store.clone(),
                client.clone(),
                shared.clone(),
                std::mem::take(&mut batch),
                std::mem::take(&mut acks),
            );
            committing = Some(tokio::spawn(work));
            continue;
        }
        if (stopping || closed) && held == 0 {
            // Drain what the session already handed over; the broker keeps the rest.
            if let (false, Ok(m)) = (closed, inbound.try_recv()) {
                handle(&store, &topics, &shared, &*clock, m, &mut batch, &mut acks).await;
                held += 1;
                if ack_on_receipt {
                    ack_now(&client, &mut acks).await;
                }
                continue;
            }
            match committing.take() {
                Some(c) => {
                    if let Err(e) = c.await {
                        error!(error = %e, "commit task failed; its receipts stay unacknowledged");
                    }
                    continue;
                }
                None => break,
            }
        }
        let waiting = committing.is_none() && held > 0;
        tokio::select! {
            r = async {
                match committing.as_mut() {
                    Some(c) => c.await,
                    None => std::future::pending().await,
                }
            } => {
                if let Err(e) = r {
                    error!(error = %e, "commit task failed; its receipts stay unacknowledged");
                }
                committing = None;
            }
            _ = tokio::time::sleep_until(ready_at), if waiting => {}
            _ = shutdown.cancelled(), if !stopping => stopping = true,
            m = inbound.recv(), if !full && !closed => match m {
                Some(m) => {
                    if held == 0 {
                        ready_at = tokio::time::Instant::now() + batch_wait;
                    }
                    handle(&store, &topics, &shared, &*clock, m, &mut batch, &mut acks).await;
                    held += 1;
                    if ack_on_receipt {
                        ack_now(&client, &mut acks).await;
                    }
                }
                None => closed = true,
            },
        }
    }
    info!("ingest stopped");
}

async fn ack_now(client: &AsyncClient, acks: &mut Vec<Publish>) {
    for p in acks.drain(..) {
        if let Err(e) = client.ack(&p).await {
            warn!(error = %e, "could not queue acknowledgement");
        }
    }
}

async fn commit_and_ack<S: Store>(
    store: S,
    client: AsyncClient,
    shared: Arc<Shared>,
    batch: Batch,
    mut acks: Vec<Publish>,
) {
    commit(&store, &shared, &batch).await;
    ack_now(&client, &mut acks).await;
}

/// Commits a batch, retrying until it is stored: nothing is acknowledged before that.
async fn commit<S: Store>(store: &S, shared: &Shared, batch: &Batch) {
    if batch.is_empty() {
        return;
    }
    let m = &shared.metrics;
    let mut backoff = Duration::from_millis(100);
    loop {
        let t0 = Instant::now();
        match m
            .write(Utc::now().timestamp_millis(), store.commit_batch(batch))
            .await
        {
            Ok(out) => {
                m.batches.fetch_add(1, Ordering::Relaxed);
                m.batch_rows
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                m.commit_micros
                    .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                m.receipts_stored
                    .fetch_add(out.stored as u64, Ordering::Relaxed);
                m.receipts_duplicate
                    .fetch_add(out.duplicates as u64, Ordering::Relaxed);
                for (r, _) in &batch.rejects {
                    m.reject(*r);
                }
                return;
            }
            Err(e) => {
                m.commit_failures.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, rows = batch.len(), retry_in_ms = backoff.as_millis() as u64, "batch commit failed; receipts stay unacknowledged");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn day_of(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

async fn handle<S: Store>(
    store: &S,
    topics: &Topics,
    shared: &Shared,
    clock: &dyn Clock,
    msg: Delivery,
    batch: &mut Batch,
    acks: &mut Vec<Publish>,
) {
    let p = msg.publish;
    let now_ms = clock.now().timestamp_millis();
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    debug!(%topic, pkid = p.pkid, bytes = p.payload.len(), "inbound");
    match topics.classify(&topic) {
        Some(wire::TopicKind::Receipt(dev)) => {
            match check_receipt(store, shared, dev, &p.payload, now_ms).await {
                Ok(row) => batch.receipts.push(row),
                Err(r) => {
                    debug!(device = dev, reason = r.as_str(), "receipt rejected");
                    batch.rejects.push((r, day_of(now_ms)));
                }
            }
        }
        Some(wire::TopicKind::Status(dev)) => {
            let key = shared.inventory().key(dev);
            if let (Some(key), Some(pr)) = (key, wire::parse_presence(&p.payload)) {
                let changed = shared
                    .online
                    .lock()
                    .map(|mut o| o.insert(key, pr.online) != Some(pr.online))
                    .unwrap_or(true);
                if changed {
                    batch.presence.push(PresenceEvent {
                        device: key,
                        online: pr.online,
                        at_ms: now_ms,
                    });
                    update_online(shared, key, pr.online);
                }
            }
        }
        None => {}
    }
    acks.push(p);
}

fn update_online(shared: &Shared, key: i64, online: bool) {
    let class = shared.inventory().device(key).map(|d| d.class.to_string());
    if let (Some(class), Ok(mut m)) = (class, shared.metrics.online_by_class.lock()) {
        *m.entry(class).or_default() += if online { 1 } else { -1 };
    }
}

async fn check_receipt<S: Store>(
    store: &S,
    shared: &Shared,
    dev: &str,
    payload: &[u8],
    now_ms: i64,
) -> Result<ReceiptRow, Reject> {
    let device = shared.inventory().key(dev).ok_or(Reject::UnknownDevice)?;
    let r = wire::parse_receipt(dev, payload)?;
    let cached = shared
        .plays
        .lock()
        .ok()
        .and_then(|p| p.get(&r.play_id).cloned());
    let play = match cached {
        Some(p) => p,
        None => match store.play_by_id(&r.play_id).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err(Reject::UnknownPlay),
            Err(e) => {
                // Treated as unknown rather than stalling the batch; logged loudly.
                error!(error = %e, "play lookup failed");
                return Err(Reject::UnknownPlay);
            }
        },
    };
    let sent = match (play.feed, play.device) {
        (_, Some(d)) => d == device,
        (Some(f), None) => shared
            .members
            .read()
            .map(|m| m.member_at(device, f, play.issued_ms))
            .unwrap_or(false),
        (None, None) => false,
    };
    if !sent {
        return Err(Reject::NotSent);
    }
    let issued = DateTime::from_timestamp_millis(play.issued_ms).unwrap_or_default();
    let expires = DateTime::from_timestamp_millis(play.expires_ms).unwrap_or_default();
    if !wire::in_window(r.started_at, issued, expires) {
        return Err(Reject::OutOfWindow);
    }
    if shared
        .retention_ms
        .is_some_and(|keep| play.issued_ms < now_ms - keep)
    {
        return Err(Reject::PastRetention);
    }
    Ok(ReceiptRow {
        device,
        play: play.key,
        started_ms: r.started_at.timestamp_millis(),
        duration_ms: r.duration_ms,
        status: r.status,
        slogan: play.slogan,
        feed: play.feed.unwrap_or(0),
    })
}
