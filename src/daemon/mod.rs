//! The running daemon, built in one place: `App::start` takes settings, a store, the
//! operators' catalog, bound listeners, a clock and a shutdown token, and starts every task.
//! `serve`, `demo`, the tests and the benchmarks all start the daemon through it.
//!
//! Owns: the startup order, the tasks and their shutdown order. Each task is a type whose
//! fields say what it owns, with a `run(self)`: `Scheduler` (plays), `Ingest` (receipts
//! and presence), `FileWatcher` (edits to the folders), the retention `Pruner`, and the HTTP
//! API; `Urgent` sends urgent messages for the API. Decisions come from the core (`core::rotation`, `core::play`, `core::receipt`);
//! bytes go through `mqtt` and `store`; the state they share is `state::Shared`.

pub mod effective_adsets;
pub mod ingest;
pub mod inventory;
pub mod scheduler;
pub mod state;
pub mod urgent;
pub mod watcher;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use rumqttc::v5::AsyncClient;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::core::model::Catalog;
use crate::core::wire::{DisplayConfig, Topics};
use crate::metrics::Metrics;
use crate::mqtt::broker::{self, BrokerOptions, ReceiptHook};

use crate::mqtt::{self, Delivery, SessionOptions};
use crate::settings::{Broker, MqttUrl, Settings};
use crate::store::{Db, DeviceRow, Keys, Store};

pub use ingest::Ingest;
pub use inventory::{Inventory, MemberIndex};
pub use scheduler::Scheduler;
pub use state::Shared;
pub use urgent::Urgent;
pub use watcher::FileWatcher;

/// Where time comes from; tests pass their own.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The units and inspection settings in `devices/`, as `check` read them; their problems
/// are logged (`serve` refused to start on errors already).
fn inspect_setup(settings: &Settings, shared: &Shared) -> crate::core::inspect::Setup {
    let (setup, problems) =
        crate::files::load_inspect(&settings.devices, &shared.current().devices);
    for p in problems {
        warn!(problem = %p, "units or inspections.toml");
    }
    setup
}

/// The system's wall clock.
pub struct SystemClock;
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The sockets the daemon serves on, bound by the caller (tests bind port 0).
#[derive(Default)]
pub struct Listeners {
    /// The embedded broker's; None with an embedded broker: bound from the settings.
    /// Unused with an external broker.
    pub mqtt: Option<TcpListener>,
    /// The HTTP API's; None: no HTTP API.
    pub http: Option<TcpListener>,
}

impl Listeners {
    /// Binds what the settings name: the HTTP API, and the embedded broker unless an
    /// external broker is set.
    pub async fn bind(settings: &Settings) -> anyhow::Result<Listeners> {
        let mqtt = match &settings.broker {
            Broker::External(_) => None,
            Broker::Embedded { listen } => Some(bind(*listen, "the MQTT listener").await?),
        };
        let http = Some(bind(settings.http_listen, "the HTTP listener").await?);
        Ok(Listeners { mqtt, http })
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} {addr}"))
}

/// Everything the daemon is built from. `Startup::new` fills in the system clock, a fresh
/// shutdown token, no listeners given and real time; set the fields to change them.
pub struct Startup {
    pub settings: Settings,
    pub store: Db,
    /// The operators' files, validated.
    pub catalog: Catalog,
    pub listeners: Listeners,
    pub clock: Arc<dyn Clock>,
    /// Cancelled to stop: pending receipts are committed and acknowledged first.
    pub shutdown: CancellationToken,
    /// Multiplies feed intervals and on-screen durations, of the catalog given and of every
    /// reload (the demo compresses time); 1 in production.
    pub time_scale: f64,
    /// The operators' folders as they were before `catalog` was read from them; when
    /// None, as they are when the daemon starts (before it reads the units).
    pub files_seen: Option<watcher::Fingerprint>,
}

impl Startup {
    pub fn new(settings: Settings, store: Db, catalog: Catalog) -> Startup {
        Startup {
            settings,
            store,
            catalog,
            listeners: Listeners::default(),
            clock: Arc::new(SystemClock),
            shutdown: CancellationToken::new(),
            time_scale: 1.0,
            files_seen: None,
        }
    }
}

/// A started daemon.
pub struct App {
    mqtt_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
    shared: Shared,
    urgent: Urgent,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl App {
    /// Starts the daemon: the embedded broker (unless an external one is set), the MQTT
    /// session, the scheduler, the ingest worker, the file watcher, retention and the HTTP
    /// API (when given a listener).
    pub async fn start(s: Startup) -> anyhow::Result<App> {
        let Startup {
            settings,
            store,
            mut catalog,
            listeners,
            clock,
            shutdown,
            time_scale,
            files_seen,
        } = s;
        let files_seen = files_seen
            .unwrap_or_else(|| watcher::Fingerprint::of(&settings.devices, &settings.schedules));
        scale_time(&mut catalog, time_scale);
        let log_signer = match &settings.log_key {
            Some(p) => Some(crate::receipt_log::load_signer(p)?),
            None => None,
        };
        let shared = prepare(&settings, &store, catalog, clock.now()).await?;
        let topics = Topics::new(settings.prefix.clone());
        let tasks = TaskTracker::new();
        // The broker outlives the session so that the daemon can say goodbye cleanly.
        let broker_stop = CancellationToken::new();
        let mqtt_stop = CancellationToken::new();
        let Mqtt {
            session,
            inbound,
            addr: mqtt_addr,
        } = connect_mqtt(&settings, listeners.mqtt, &topics, &broker_stop, &mqtt_stop).await?;
        let client = session.client.clone();
        tasks.spawn(mirror_connected(
            session.connected.clone(),
            shared.clone(),
            mqtt_stop.clone(),
        ));
        publish_configs(&client, &topics, &shared).await;
        let parts = Parts {
            store: store.clone(),
            client: client.clone(),
            topics: topics.clone(),
            shared: shared.clone(),
            clock: clock.clone(),
            shutdown: shutdown.clone(),
            log_signer,
        };
        let urgent = Urgent {
            store: store.clone(),
            client: client.clone(),
            topics: topics.clone(),
            shared: shared.clone(),
            clock: clock.clone(),
        };
        // Before the scheduler's first slot: a message still on screen stays there.
        match urgent.restore_holds().await {
            Ok(0) => {}
            Ok(n) => info!(
                messages = n,
                "rotation held again for urgent messages still published"
            ),
            Err(e) => {
                warn!(error = %e, "could not read the urgent messages; their feeds are not held")
            }
        }
        shared.set_inspect(inspect_setup(&settings, &shared));
        parts.spawn_loops(&tasks, &settings, time_scale, files_seen);
        let http_addr = match listeners.http {
            Some(http) => Some(spawn_http(
                &tasks,
                http,
                crate::api::ApiState::new(
                    store.clone(),
                    shared.clone(),
                    clock.clone(),
                    Default::default(),
                    crate::api::Limits::of(&settings),
                )
                .with_urgent(urgent.clone()),
                &shutdown,
            )?),
            None => None,
        };
        let ingest = Ingest {
            store,
            client: client.clone(),
            inbound,
            topics,
            shared: shared.clone(),
            clock,
            batch_max: settings.batch_max,
            batch_wait: settings.batch_wait.unwrap_or(Duration::ZERO),
            shutdown: shutdown.clone(),
        };
        // Shutdown order: the ingest worker commits and acknowledges what it holds, then the
        // session says DISCONNECT, then the broker stops.
        tasks.spawn(async move {
            ingest.run().await;
            let _ = client.try_disconnect();
            tokio::time::sleep(Duration::from_millis(300)).await;
            mqtt_stop.cancel();
            broker_stop.cancel();
        });
        Ok(App {
            mqtt_addr,
            http_addr,
            shared,
            urgent,
            shutdown,
            tasks,
        })
    }

    /// Where displays connect, when the broker is embedded.
    pub fn mqtt_addr(&self) -> Option<SocketAddr> {
        self.mqtt_addr
    }
    /// Where the HTTP API answers, when it was given a listener.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }
    pub fn shared(&self) -> &Shared {
        &self.shared
    }
    /// Sends urgent messages on the daemon's session (the HTTP API's, and tests').
    pub fn urgent(&self) -> &Urgent {
        &self.urgent
    }
    pub fn metrics(&self) -> &Arc<Metrics> {
        self.shared.metrics()
    }
    /// Starts the shutdown; `wait` then returns once everything is committed and closed.
    pub fn stop(&self) {
        self.shutdown.cancel();
    }
    /// How many of the daemon's tasks are still running: all of them until shutdown.
    pub fn tasks_running(&self) -> usize {
        self.tasks.len()
    }
    /// Waits for every task to end (after the shutdown token is cancelled).
    pub async fn wait(self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// What every task is handed: clones of one store, session, state, clock and token.
struct Parts {
    store: Db,
    client: AsyncClient,
    topics: Topics,
    shared: Shared,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    /// The receipt log's checkpoint key, when the settings name one.
    log_signer: Option<signed_note::StandardSigner>,
}

impl Parts {
    /// Spawns the scheduler, and the file watcher and retention pruner where set.
    fn spawn_loops(
        &self,
        tasks: &TaskTracker,
        settings: &Settings,
        time_scale: f64,
        files_seen: watcher::Fingerprint,
    ) {
        if let Some(signer) = self.log_signer.clone() {
            let s = crate::receipt_log::signer::CheckpointSigner {
                store: self.store.clone(),
                signer,
                shared: self.shared.clone(),
                clock: self.clock.clone(),
                every: settings.log_checkpoint_every,
                shutdown: self.shutdown.clone(),
            };
            tasks.spawn(s.run());
        }
        if let Some(days) = settings.retention_days {
            let pruner = Pruner {
                store: self.store.clone(),
                clock: self.clock.clone(),
                days,
                shutdown: self.shutdown.clone(),
            };
            tasks.spawn(pruner.run());
        }
        if let Some(every) = settings.watch_every {
            let watcher = FileWatcher {
                store: self.store.clone(),
                client: self.client.clone(),
                topics: self.topics.clone(),
                shared: self.shared.clone(),
                devices: settings.devices.clone(),
                schedules: settings.schedules.clone(),
                time_scale,
                clock: self.clock.clone(),
                every,
                settle: settings.watch_settle,
                max_drop: settings.max_drop,
                seen: files_seen,
                shutdown: self.shutdown.clone(),
            };
            tasks.spawn(watcher.run());
        }
        let scheduler = Scheduler {
            store: self.store.clone(),
            client: self.client.clone(),
            topics: self.topics.clone(),
            shared: self.shared.clone(),
            clock: self.clock.clone(),
            play_ttl: settings.play_ttl,
            shutdown: self.shutdown.clone(),
        };
        tasks.spawn(scheduler.run());
    }
}

/// Migrates, records the inventory and the file ad sets, and builds the shared state.
async fn prepare(
    settings: &Settings,
    store: &Db,
    catalog: Catalog,
    now: DateTime<Utc>,
) -> anyhow::Result<Shared> {
    store.migrate().await.context("migrating the database")?;
    let now_ms = now.timestamp_millis();
    let keys = sync_inventory(store, &catalog, now_ms).await?;
    effective_adsets::register_files(store, &catalog, &settings.schedules, now_ms).await?;
    let base = Arc::new(catalog.clone());
    let mut catalog = catalog;
    let adset_cache = effective_adsets::ParsedAdSets::default();
    catalog.adsets = effective_adsets::effective(store, &base, &adset_cache).await?;
    let members = MemberIndex::new(store.memberships().await?);
    let inventory = Inventory::new(catalog.devices.clone(), keys);
    let recent = store.plays_since(now_ms - state::PLAY_CACHE_MS).await?;
    crate::memory::release_free_memory();
    let metrics = Arc::new(Metrics::default());
    metrics.database_ok.store(true, Ordering::Relaxed);
    Ok(Shared::new(state::Initial {
        catalog,
        base,
        inventory,
        members,
        recent,
        metrics,
        retention_ms: settings.retention_days.map(|d| i64::from(d) * 86_400_000),
        adset_cache,
    }))
}

/// The daemon's MQTT session, the queue it and the embedded broker's receipt hook fill for
/// the ingest worker, and where displays connect when the broker is embedded.
struct Mqtt {
    session: mqtt::Session,
    inbound: mpsc::UnboundedReceiver<Delivery>,
    addr: Option<SocketAddr>,
}

/// Starts the embedded broker (unless an external one is set) and the session on it.
async fn connect_mqtt(
    settings: &Settings,
    listener: Option<TcpListener>,
    topics: &Topics,
    broker_stop: &CancellationToken,
    mqtt_stop: &CancellationToken,
) -> anyhow::Result<Mqtt> {
    let (tx, inbound) = mpsc::unbounded_channel();
    let hook = ReceiptHook {
        topics: topics.clone(),
        ingest: tx.clone(),
    };
    let (target, addr) = mqtt_target(settings, listener, hook, broker_stop).await?;
    let options = session_options(settings, target, topics, addr.is_some());
    let session = mqtt::start(options, tx, mqtt_stop.clone());
    Ok(Mqtt {
        session,
        inbound,
        addr,
    })
}

/// Where the daemon's own session connects: the external broker, or the embedded one
/// started here on `listener` (bound from the settings when None), with its address.
async fn mqtt_target(
    settings: &Settings,
    listener: Option<TcpListener>,
    hook: ReceiptHook,
    broker_stop: &CancellationToken,
) -> anyhow::Result<(MqttUrl, Option<SocketAddr>)> {
    let listen = match &settings.broker {
        Broker::External(u) => return Ok((u.clone(), None)),
        Broker::Embedded { listen } => *listen,
    };
    let listener = match listener {
        Some(l) => l,
        None => bind(listen, "the MQTT listener").await?,
    };
    let options = BrokerOptions {
        max_connections: settings.broker_max_connections,
        ..Default::default()
    };
    let b = broker::start(listener, options, Some(hook), broker_stop.clone()).await?;
    let internal = MqttUrl {
        host: b.internal.ip().to_string(),
        port: b.internal.port(),
        username: None,
        password: None,
    };
    Ok((internal, Some(b.addr)))
}

fn session_options(
    settings: &Settings,
    target: MqttUrl,
    topics: &Topics,
    embedded: bool,
) -> SessionOptions {
    let share = Some(settings.share_group.as_str()).filter(|g| !g.is_empty() && !embedded);
    // The embedded broker hands receipts to the ingest worker itself (its publish hook), so
    // the session would only see them twice.
    let mut filters = vec![topics.status_filter(share)];
    if !embedded {
        filters.insert(0, topics.receipts_filter(share));
    }
    SessionOptions {
        host: target.host,
        port: target.port,
        client_id: settings.mqtt_client_id.clone(),
        username: target.username,
        password: target.password.map(|p| p.expose().to_owned()),
        filters,
        receive_maximum: 10_000,
    }
}

/// Keeps the broker gauge in step with the session until it stops.
async fn mirror_connected(
    connected: Arc<std::sync::atomic::AtomicBool>,
    shared: Shared,
    stop: CancellationToken,
) {
    let m = shared.metrics();
    loop {
        m.broker_connected
            .store(connected.load(Ordering::Relaxed), Ordering::Relaxed);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    m.broker_connected.store(false, Ordering::Relaxed);
}

fn spawn_http(
    tasks: &TaskTracker,
    http: TcpListener,
    state: crate::api::ApiState,
    shutdown: &CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let addr = http.local_addr()?;
    info!(%addr, "HTTP API listening");
    let state = Arc::new(state);
    let stop = shutdown.clone();
    tasks.spawn(async move {
        if let Err(e) = crate::api::serve(http, state, stop).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(addr)
}

/// Drops raw receipts past retention, hourly.
pub struct Pruner {
    pub store: Db,
    pub clock: Arc<dyn Clock>,
    pub days: u32,
    pub shutdown: CancellationToken,
}

impl Pruner {
    pub async fn run(self) {
        loop {
            let before = self.clock.now().timestamp_millis() - i64::from(self.days) * 86_400_000;
            match self.store.prune_receipts(before).await {
                Ok(n) if n > 0 => {
                    info!(
                        removed = n,
                        days = self.days,
                        "raw receipts past retention pruned"
                    )
                }
                Ok(_) => {}
                Err(e) => warn!(error = %e, "pruning old receipts failed; will retry"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
        }
    }
}

/// Re-reads the effective ad sets (after an upload, approval or retirement) and tells the
/// scheduler; the change plays from the feeds' next slot.
pub async fn refresh_adsets(store: &Db, shared: &Shared) -> anyhow::Result<()> {
    let _guard = shared.reloading().await;
    let adsets = effective_adsets::effective(store, &shared.base(), shared.adset_cache()).await?;
    shared.set_adsets(adsets);
    Ok(())
}

/// Makes a newly loaded catalog current: inventory and memberships, file ad sets, configs.
async fn apply_files(
    store: &Db,
    shared: &Shared,
    schedules: &Path,
    catalog: Catalog,
    now_ms: i64,
) -> anyhow::Result<()> {
    let keys = sync_inventory(store, &catalog, now_ms).await?;
    let members = MemberIndex::new(store.memberships().await?);
    effective_adsets::register_files(store, &catalog, schedules, now_ms).await?;
    let inventory = Inventory::new(catalog.devices.clone(), keys);
    shared.install_files(catalog, inventory, members);
    crate::memory::release_free_memory();
    refresh_adsets(store, shared).await
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

/// Writes the catalog's displays, feeds and memberships to the store; returns its keys.
pub async fn sync_inventory(store: &Db, c: &Catalog, now_ms: i64) -> anyhow::Result<Keys> {
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
                .metrics()
                .configs_published
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    info!(
        displays = catalog.devices.len(),
        "display configs published"
    );
}
