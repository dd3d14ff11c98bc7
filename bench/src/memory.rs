//! The memory scenario: RSS with a large generated inventory, one size per fresh process
//! (`memory-one`): the catalog loaded, then the store's inventory sync and the daemon's
//! inventory path, or with --daemon the whole daemon idle and then rotating while displays
//! spread over the inventory send receipts.
//!
//! Owns: the readings of this process's memory (`/proc/self/status`). Must not touch: the
//! daemon's internals (it starts the daemon or runs its inventory path through the
//! library, as a user would).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use civicast::core::wire::Topics;
use civicast::daemon::{self, App, Startup};
use civicast::settings::{Broker, MqttUrl, Settings};
use civicast::store::{SqliteStore, Store};
use tokio_util::sync::CancellationToken;

use crate::fixture::{device_name, load_catalog, remove_db, write_inventory, FEEDS};
use crate::fleet::{connect_fleet, receipt_payload, split_host_port, wait_count};
use crate::report::met;

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct MemoryReport {
    pub displays: usize,
    /// The process before anything: the baseline.
    pub start_kib: u64,
    /// With the catalog loaded (devices CSV, classes, feeds, ad sets).
    pub catalog_kib: u64,
    /// After the store's inventory sync (keys for every display) too.
    pub synced_kib: u64,
    /// The whole daemon started and idle for a few seconds, when asked.
    pub daemon_kib: Option<u64>,
    /// The most seen while the daemon rotated (a play every 10 s) and stored receipts.
    #[serde(default)]
    pub rotating_kib: Option<u64>,
    /// Receipts sent and stored while rotating.
    #[serde(default)]
    pub rotating_receipts: Option<(u64, u64)>,
    /// The daemon's broker: "embedded" or the external `host:port`.
    #[serde(default)]
    pub broker: Option<String>,
    pub peak_kib: u64,
    pub load_secs: f64,
    pub sync_secs: f64,
}

/// Receipts sent per play while rotating: at a play every 10 s, 6,000 a second, above the
/// 5,556 a second of a million displays at one play per 3 minutes.
const ROTATE_RECEIPTS_PER_PLAY: usize = 60_000;
const ROTATE_PLAYS: usize = 3;

/// Lets the daemon rotate for three plays while displays spread over the whole inventory
/// send a receipt for each; returns the most RSS seen (KiB) and the receipts sent once every
/// one is stored (or nothing moved for 20 s).
async fn rotate(
    host: &str,
    port: u16,
    topics: &Topics,
    n: usize,
    m: &civicast::metrics::Metrics,
) -> anyhow::Result<(u64, u64)> {
    let fleet = connect_fleet(host, port, 8, "civicast-bench-rotate", 1_000).await?;
    let mut o = rumqttc::MqttOptions::new("civicast-bench-rotate-plays", host, port);
    o.set_keep_alive(Duration::from_secs(60));
    let (sub, mut ev) = rumqttc::AsyncClient::new(o, 64);
    sub.subscribe(topics.feed("bench"), rumqttc::QoS::AtLeastOnce)
        .await?;
    let max_kib = Arc::new(AtomicUsize::new(rss_kib().0 as usize));
    let sampling = CancellationToken::new();
    tokio::spawn({
        let (max_kib, stop) = (max_kib.clone(), sampling.clone());
        async move {
            while !stop.is_cancelled() {
                max_kib.fetch_max(rss_kib().0 as usize, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    let per_play = ROTATE_RECEIPTS_PER_PLAY.min(n);
    let stride = (n / per_play).max(1);
    let mut sent = 0u64;
    let mut plays = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    while plays < ROTATE_PLAYS && Instant::now() < deadline {
        let e = tokio::time::timeout(Duration::from_secs(15), ev.poll()).await;
        let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)))) = e else {
            if matches!(e, Ok(Err(_))) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            continue;
        };
        let Ok(cmd) = serde_json::from_slice::<serde_json::Value>(&p.payload) else {
            continue;
        };
        let Some(play_id) = cmd["play_id"].as_str() else {
            continue;
        };
        let body = receipt_payload(play_id, Utc::now());
        // Each play goes to different displays, across the whole inventory.
        let offset = plays % stride;
        for (j, c) in fleet.clients.iter().enumerate() {
            let (c, body, topics) = (c.clone(), body.clone(), topics.clone());
            let k = fleet.clients.len();
            tokio::spawn(async move {
                for i in (j..per_play).step_by(k) {
                    let device = device_name(i * stride + offset);
                    let t = topics.receipts(&device);
                    if c.publish(t, rumqttc::QoS::AtLeastOnce, false, body.clone())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        sent += per_play as u64;
        plays += 1;
    }
    // The subscriber's own event loop must keep running for its acks; the fleet's run apart.
    let waited = wait_count(sent, Duration::from_secs(20), || {
        m.receipts_stored.load(Ordering::Relaxed)
    });
    tokio::pin!(waited);
    loop {
        tokio::select! {
            _ = &mut waited => break,
            _ = ev.poll() => {}
        }
    }
    sampling.cancel();
    fleet.close().await;
    Ok((max_kib.load(Ordering::Relaxed) as u64, sent))
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
pub fn rss_kib() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

/// One size of the memory scenario, in this process. With `start_daemon`, `mqtt` is an
/// external broker `host:port` for the daemon (the embedded one when `None`).
pub async fn memory_one(
    settings: &Settings,
    dir: &Path,
    n: usize,
    start_daemon: bool,
    mqtt: Option<&str>,
) -> anyhow::Result<MemoryReport> {
    let root = dir.join(format!("memory-{n}"));
    write_inventory(&root, n)?;
    if start_daemon {
        // Rotating is measured too: a play every 10 s instead of every hour.
        std::fs::write(
            root.join("schedules/feeds.toml"),
            FEEDS.replace("interval = \"1h\"", "interval = \"10s\""),
        )?;
    }
    let (start_kib, _) = rss_kib();
    let t = Instant::now();
    let catalog = load_catalog(&root)?;
    anyhow::ensure!(
        catalog.devices.len() == n,
        "the catalog holds every display"
    );
    let load_secs = t.elapsed().as_secs_f64();
    // What the catalog holds, not what reading the file allocated on the way (peak shows it).
    civicast::memory::release_free_memory();
    let (catalog_kib, _) = rss_kib();
    let path = dir.join(format!("memory-{n}.db"));
    remove_db(&path);
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await?;
    let mut report = MemoryReport {
        displays: n,
        start_kib,
        catalog_kib,
        load_secs,
        ..Default::default()
    };
    if start_daemon {
        let mut s = settings.clone();
        s.devices = root.join("devices");
        s.schedules = root.join("schedules");
        s.watch_every = None;
        s.broker_max_connections = 1_000;
        let (host, port) = match mqtt {
            Some(hp) => split_host_port(hp.trim_start_matches("mqtt://"))?,
            None => ("127.0.0.1".to_owned(), 0),
        };
        let listener = match mqtt {
            Some(hp) => {
                // As `ingest` on an external broker: its own topics and client id.
                let run_id = ulid::Ulid::new().to_string().to_lowercase();
                s.prefix = format!("civicast-bench/{run_id}");
                s.mqtt_client_id = format!("civicast-bench-{run_id}");
                let url = format!("mqtt://{}", hp.trim_start_matches("mqtt://"));
                s.broker = Broker::External(MqttUrl::parse(&url).map_err(anyhow::Error::msg)?);
                report.broker = Some(hp.to_owned());
                None
            }
            None => {
                s.broker = Broker::Embedded {
                    listen: "127.0.0.1:0".parse()?,
                };
                report.broker = Some("embedded".into());
                Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
            }
        };
        let shutdown = CancellationToken::new();
        let t = Instant::now();
        let running = {
            let mut startup = Startup::new(s.clone(), store.clone().into(), catalog);
            startup.listeners.mqtt = listener;
            startup.shutdown = shutdown.clone();
            App::start(startup)
        }
        .await?;
        report.sync_secs = t.elapsed().as_secs_f64();
        let m = running.metrics().clone();
        // Idle once every retained config is out.
        let _ = wait_count(n as u64, Duration::from_secs(20), || {
            m.configs_published.load(Ordering::Relaxed)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        report.synced_kib = rss_kib().0;
        report.daemon_kib = Some(report.synced_kib);
        let port = running.mqtt_addr().map_or(port, |a| a.port());
        let topics = Topics::new(s.prefix.clone());
        let (max_kib, sent) = rotate(&host, port, &topics, n, &m).await?;
        report.rotating_kib = Some(max_kib);
        report.rotating_receipts = Some((sent, m.receipts_stored.load(Ordering::Relaxed)));
        shutdown.cancel();
        running.wait().await;
    } else {
        // What the daemon's start does with the inventory: keys for every display and feed,
        // held beside the catalog.
        store.migrate().await?;
        let t = Instant::now();
        let keys = daemon::sync_inventory(
            &store.clone().into(),
            &catalog,
            Utc::now().timestamp_millis(),
        )
        .await?;
        anyhow::ensure!(keys.devices.len() == n, "every display has a key");
        let members = civicast::daemon::MemberIndex::new(store.memberships().await?);
        let inventory = civicast::daemon::Inventory::new(catalog.devices.clone(), keys);
        civicast::memory::release_free_memory();
        report.sync_secs = t.elapsed().as_secs_f64();
        report.synced_kib = rss_kib().0;
        drop((catalog, inventory, members));
    }
    report.peak_kib = rss_kib().1;
    store.pool().close().await;
    remove_db(&path);
    Ok(report)
}

pub fn print_memory(rows: &[MemoryReport]) {
    println!();
    println!("memory (VmRSS, one fresh process per size)");
    println!("| displays | process at start (baseline) MiB | catalog loaded MiB | + store sync MiB | daemon idle MiB | daemon rotating, most MiB | receipts sent / stored while rotating | peak MiB | bytes per display over baseline | load s | sync/start s |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mib = |k: u64| k as f64 / 1024.0;
    let shown = |k: Option<u64>| {
        k.map(|k| format!("{:.1}", mib(k)))
            .unwrap_or_else(|| "not started".into())
    };
    // The target is about the daemon's steady state: idle or rotating, whichever is larger.
    let top = |m: &MemoryReport| {
        m.daemon_kib
            .unwrap_or(m.synced_kib)
            .max(m.rotating_kib.unwrap_or(0))
    };
    for m in rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} |",
            m.displays,
            mib(m.start_kib),
            mib(m.catalog_kib),
            mib(m.synced_kib),
            shown(m.daemon_kib),
            shown(m.rotating_kib),
            m.rotating_receipts
                .map(|(a, b)| format!("{a} / {b}"))
                .unwrap_or_else(|| "-".into()),
            mib(m.peak_kib),
            (top(m).saturating_sub(m.start_kib) * 1024) as f64 / m.displays.max(1) as f64,
            m.load_secs,
            m.sync_secs
        );
    }
    for m in rows.iter().filter(|m| m.displays >= 1_000_000) {
        println!(
            "target: RSS <= 200 MB at {} displays ({}): {} ({:.0} MB)",
            m.displays,
            match (&m.daemon_kib, &m.broker) {
                (Some(_), Some(b)) => format!("daemon idle and rotating, broker {b}"),
                (Some(_), None) => "daemon idle and rotating".into(),
                _ => "catalog + store sync".into(),
            },
            met(top(m) * 1024 <= 200_000_000),
            (top(m) * 1024) as f64 / 1e6
        );
    }
}
