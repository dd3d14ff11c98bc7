//! The ingest scenario: the broker alone (same publishers and payloads to one subscriber
//! that only acknowledges), the store alone (the same rows by a raw batched insert), then
//! the daemon end to end (`daemon::start`, the embedded broker unless --mqtt), receipts and
//! rollup checked against what was sent.
//!
//! Owns: the ingest run and its database side (a fresh SQLite file or PostgreSQL schema).
//! Must not touch: the daemon's internals (it records plays and syncs the inventory through
//! the library, as the scheduler does, and reads the daemon's metrics); its raw insert is in
//! `load`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use civicast::core::model::Catalog;
use civicast::core::wire::Topics;
use civicast::daemon::{self, App, Startup};
use civicast::settings::{self, MqttUrl, Settings};
use civicast::store::{NewPlay, PgStore, SqliteStore, Store};
use tokio_util::sync::CancellationToken;

use crate::fixture::{load_catalog, remove_db, write_inventory};
use crate::fleet::{connect_fleet, receipt_payload, split_host_port, wait_count};
use crate::report::{met, Rate};
use crate::storage::dbstat;

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub displays: usize,
    /// Plays each display acknowledges: receipts = displays x plays.
    pub plays: usize,
    /// `postgres://...`; None: a SQLite file under `dir`.
    pub database: Option<String>,
    /// `host:port` of an external broker; None: the embedded broker.
    pub mqtt: Option<String>,
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    pub sent: u64,
    /// Stored by the daemon (its metric) when the clock stopped.
    pub stored: u64,
    pub rejected: u64,
    /// Rows in `receipts` and plays summed in `rollup_hour` afterwards.
    pub rows_in_receipts: i64,
    pub rows_in_rollup: i64,
    /// First publish to the last commit.
    pub ingest: Rate,
    /// The broker alone: same publishers, count and payload size, one subscriber that only
    /// acknowledges.
    pub broker_raw: Rate,
    pub broker_raw_received: u64,
    /// The store alone: the same rows in batches of the daemon's batch size.
    pub store_raw: Rate,
    pub batches: u64,
    pub mean_commit_ms: f64,
    /// Receipts table (and its indexes) on disk per receipt, after the run.
    pub bytes_per_receipt: Option<f64>,
    pub broker: String,
    pub database: String,
}

enum Broker {
    Embedded {
        /// Displays connect here.
        addr: std::net::SocketAddr,
        /// The daemon's own (MQTT 5) listener, for the raw subscriber.
        internal: std::net::SocketAddr,
        stop: CancellationToken,
    },
    External {
        host: String,
        port: u16,
    },
}

/// The broker's raw QoS 1 delivery rate to one subscriber that only acknowledges.
async fn broker_raw(
    broker: &Broker,
    topics: &Topics,
    share: Option<&str>,
    displays: usize,
    payloads: Arc<Vec<String>>,
) -> anyhow::Result<(Rate, u64)> {
    let (sub_host, sub_port, pub_host, pub_port) = match broker {
        Broker::Embedded { addr, internal, .. } => (
            internal.ip().to_string(),
            internal.port(),
            addr.ip().to_string(),
            addr.port(),
        ),
        Broker::External { host, port } => (host.clone(), *port, host.clone(), *port),
    };
    let received = Arc::new(AtomicU64::new(0));
    let subscribed = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    {
        use rumqttc::v5::mqttbytes::v5::Packet;
        let mut o = rumqttc::v5::MqttOptions::new(
            format!("civicast-bench-raw-{}", ulid::Ulid::new()),
            sub_host,
            sub_port,
        );
        // As the daemon's session, except that acknowledgements are automatic.
        o.set_keep_alive(Duration::from_secs(30))
            .set_clean_start(true)
            .set_receive_maximum(Some(10_000))
            .set_max_packet_size(Some(1024 * 1024));
        let (c, mut ev) = rumqttc::v5::AsyncClient::new(o, 10_000);
        let filter = topics.receipts_filter(share);
        let (received, subscribed, stop) = (received.clone(), subscribed.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let e = tokio::select! {
                    _ = stop.cancelled() => break,
                    e = ev.poll() => e,
                };
                match e {
                    Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = c.try_subscribe(
                            filter.clone(),
                            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                        );
                    }
                    Ok(rumqttc::v5::Event::Incoming(Packet::SubAck(_))) => {
                        subscribed.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(rumqttc::v5::Event::Incoming(Packet::Publish(_))) => {
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            let _ = c.try_disconnect();
        });
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while subscribed.load(Ordering::Relaxed) == 0 {
        if Instant::now() > deadline {
            stop.cancel();
            anyhow::bail!("the raw subscriber did not subscribe within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fleet = connect_fleet(&pub_host, pub_port, displays, "raw", payloads.len()).await?;
    let total = (displays * payloads.len()) as u64;
    let t0 = Instant::now();
    fleet.publish_all(topics, payloads);
    let (t1, got) = wait_count(total, Duration::from_secs(10), || {
        received.load(Ordering::Relaxed)
    })
    .await;
    fleet.close().await;
    stop.cancel();
    Ok((
        Rate {
            count: got,
            secs: (t1 - t0).as_secs_f64(),
        },
        got,
    ))
}

/// The database side of a run: a fresh SQLite file or a fresh PostgreSQL schema.
#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(SqliteStore, PathBuf),
    Pg(PgStore, String),
}

async fn fresh_db(database: Option<&str>, dir: &Path, name: &str) -> anyhow::Result<Db> {
    match database {
        Some(url) if url.starts_with("postgres") => {
            let schema = format!("civicast_bench_{name}");
            {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(url)
                    .await
                    .context("connecting to PostgreSQL")?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .execute(&mut c)
                    .await?;
                c.close().await?;
            }
            let s = PgStore::connect_schema(url, &schema).await?;
            s.migrate().await?;
            Ok(Db::Pg(s, schema))
        }
        Some(url) if !url.starts_with("sqlite:") => {
            anyhow::bail!("--database {url:?}: use sqlite://... or postgres://...")
        }
        _ => {
            let path = dir.join(format!("{name}.db"));
            remove_db(&path);
            let s = SqliteStore::connect(&format!("sqlite://{}", path.display())).await?;
            s.migrate().await?;
            Ok(Db::Sqlite(s, path))
        }
    }
}

impl Db {
    fn describe(&self) -> String {
        match self {
            Db::Sqlite(_, p) => format!("SQLite {}", p.display()),
            Db::Pg(_, schema) => format!("PostgreSQL schema {schema}"),
        }
    }

    /// Rows in `receipts` and plays summed over `rollup_hour`.
    async fn counts(&self) -> anyhow::Result<(i64, i64)> {
        const Q: &str = "SELECT (SELECT COUNT(*) FROM receipts), \
                         (SELECT CAST(COALESCE(SUM(plays), 0) AS BIGINT) FROM rollup_hour WHERE cut = 0)";
        Ok(match self {
            Db::Sqlite(s, _) => sqlx::query_as(Q).fetch_one(s.pool()).await?,
            Db::Pg(s, _) => sqlx::query_as(Q).fetch_one(s.pool()).await?,
        })
    }

    /// Bytes the receipts table and its indexes take on disk.
    async fn receipts_bytes(&self) -> anyhow::Result<Option<i64>> {
        match self {
            Db::Sqlite(s, _) => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(s.pool())
                    .await?;
                Ok(dbstat(s.pool(), "receipts").await)
            }
            Db::Pg(s, schema) => {
                let n: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(SUM(pg_total_relation_size(c.oid)) AS BIGINT) \
                     FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                     WHERE i.inhparent = to_regclass($1)",
                )
                .bind(format!("\"{schema}\".receipts"))
                .fetch_one(s.pool())
                .await?;
                Ok(n)
            }
        }
    }
}

/// The ingest scenario: raw broker, raw store, then the daemon end to end.
pub async fn ingest(settings: &Settings, o: &IngestOptions) -> anyhow::Result<IngestReport> {
    let (n, k) = (o.displays.max(1), o.plays.max(1));
    let total = (n * k) as u64;
    let run_id = ulid::Ulid::new().to_string().to_lowercase();
    // On a shared external broker the bench keeps to its own topics.
    let prefix = if o.mqtt.is_some() {
        format!("civicast-bench/{run_id}")
    } else {
        settings.prefix.clone()
    };
    let topics = Topics::new(prefix.clone());
    let share = Some(settings.share_group.as_str()).filter(|g| !g.is_empty() && o.mqtt.is_some());
    let root = o.dir.join("ingest-city");
    write_inventory(&root, n)?;
    let catalog = load_catalog(&root)?;
    let mut report = IngestReport {
        sent: total,
        ..Default::default()
    };
    let now = Utc::now();

    // 1. The broker alone.
    let raw_payloads: Arc<Vec<String>> = Arc::new(
        (0..k)
            .map(|_| receipt_payload(&ulid::Ulid::new().to_string(), now))
            .collect(),
    );
    let broker = match &o.mqtt {
        Some(hp) => {
            let (host, port) = split_host_port(hp)?;
            Broker::External { host, port }
        }
        None => {
            let stop = CancellationToken::new();
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let b = civicast::mqtt::broker::start(
                l,
                civicast::mqtt::broker::BrokerOptions {
                    max_connections: settings.broker_max_connections.max(n + 100),
                    ..Default::default()
                },
                None,
                stop.clone(),
            )
            .await?;
            Broker::Embedded {
                addr: b.addr,
                internal: b.internal,
                stop,
            }
        }
    };
    report.broker = match &broker {
        Broker::Embedded { .. } => "embedded rmqtt".into(),
        Broker::External { host, port } => format!("external {host}:{port}"),
    };
    eprintln!("ingest: raw broker, {n} publishers x {k} QoS 1 messages to one subscriber...");
    let raw = broker_raw(&broker, &topics, share, n, raw_payloads).await;
    if let Broker::Embedded { stop, .. } = &broker {
        stop.cancel();
    }
    let (rate, got) = raw?;
    report.broker_raw = rate;
    report.broker_raw_received = got;

    // 2. The store alone.
    eprintln!(
        "ingest: raw store, {total} rows in batches of {}...",
        settings.batch_max
    );
    let raw_db = fresh_db(o.database.as_deref(), &o.dir, "ingest_raw").await?;
    let t = now.timestamp_millis();
    let rows: Vec<(i64, i64, i64)> = (0..n as i64)
        .flat_map(|d| (0..k as i64).map(move |p| (d + 1, p + 1, t + p)))
        .collect();
    // Arrival order: the plays interleave across displays, as on the wire.
    let mut rows_arrival = rows;
    rows_arrival.sort_by_key(|(d, p, _)| (*p, *d));
    report.store_raw = crate::load::raw_insert(&raw_db, &rows_arrival, settings.batch_max).await?;
    drop(rows_arrival);

    // 3. The daemon, end to end.
    let db = fresh_db(o.database.as_deref(), &o.dir, "ingest").await?;
    report.database = db.describe();
    eprintln!(
        "ingest: daemon ({}, {}), {n} displays x {k} receipts...",
        report.broker, report.database
    );
    let mut s = settings.clone();
    s.devices = root.join("devices");
    s.schedules = root.join("schedules");
    s.watch_every = None;
    s.prefix = prefix;
    s.mqtt_client_id = format!("civicast-bench-{run_id}");
    if let Some(hp) = &o.mqtt {
        let url = format!("mqtt://{}", hp.trim_start_matches("mqtt://"));
        s.broker = settings::Broker::External(MqttUrl::parse(&url).map_err(anyhow::Error::msg)?);
    }
    s.broker_max_connections = s.broker_max_connections.max(n + 100);
    let r = match &db {
        Db::Sqlite(st, _) => daemon_run(&s, st.clone().into(), catalog, &topics, n, k).await?,
        Db::Pg(st, _) => daemon_run(&s, st.clone().into(), catalog, &topics, n, k).await?,
    };
    report.ingest = r.rate;
    report.stored = r.stored;
    report.rejected = r.rejected;
    report.batches = r.batches;
    report.mean_commit_ms = r.mean_commit_ms;
    let (rows, rolled) = db.counts().await?;
    report.rows_in_receipts = rows;
    report.rows_in_rollup = rolled;
    report.bytes_per_receipt = db
        .receipts_bytes()
        .await?
        .filter(|_| rows > 0)
        .map(|b| b as f64 / rows as f64);
    if let Db::Sqlite(st, _) = &db {
        st.pool().close().await;
    }
    Ok(report)
}

struct DaemonRun {
    rate: Rate,
    stored: u64,
    rejected: u64,
    batches: u64,
    mean_commit_ms: f64,
}

async fn daemon_run(
    settings: &Settings,
    store: civicast::store::Db,
    catalog: Catalog,
    topics: &Topics,
    n: usize,
    k: usize,
) -> anyhow::Result<DaemonRun> {
    // The inventory first, a minute back, so the plays below fall inside the memberships;
    // the daemon's own sync then finds nothing to change.
    let now = Utc::now();
    let keys = daemon::sync_inventory(&store, &catalog, now.timestamp_millis() - 60_000).await?;
    let feed = *keys
        .feeds
        .get("bench")
        .context("the bench feed has a key")?;
    let slogan = store.slogan_key("civility", 1, "jiang-wenming").await?;
    // Plays as the scheduler records them before publishing; the daemon loads recent plays
    // into its cache when it starts.
    let mut play_ids = Vec::with_capacity(k);
    for _ in 0..k {
        let id = ulid::Ulid::new().to_string();
        store
            .record_play(
                &NewPlay {
                    play_id: id.clone(),
                    feed: Some(feed),
                    device: None,
                    slogan,
                    issued_ms: now.timestamp_millis() - 1_000,
                    expires_ms: now.timestamp_millis() + 3_600_000,
                    members: n as i64,
                },
                None,
            )
            .await?;
        play_ids.push(id);
    }
    let payloads: Arc<Vec<String>> =
        Arc::new(play_ids.iter().map(|id| receipt_payload(id, now)).collect());
    let shutdown = CancellationToken::new();
    let listener = match settings.broker {
        settings::Broker::Embedded { .. } => {
            Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
        }
        settings::Broker::External(_) => None,
    };
    let running = {
        let mut startup = Startup::new(settings.clone(), store, catalog);
        startup.listeners.mqtt = listener;
        startup.shutdown = shutdown.clone();
        App::start(startup)
    }
    .await?;
    let m = running.metrics().clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !m.broker_connected.load(Ordering::Relaxed) {
        if Instant::now() > deadline {
            shutdown.cancel();
            anyhow::bail!("the daemon did not connect to its broker within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its subscription follows the ConnAck.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (host, port) = match (running.mqtt_addr(), &settings.broker) {
        (Some(a), _) => (a.ip().to_string(), a.port()),
        (None, settings::Broker::External(u)) => (u.host.clone(), u.port),
        (None, settings::Broker::Embedded { .. }) => anyhow::bail!("no broker address"),
    };
    let fleet = connect_fleet(&host, port, n, "disp", k).await?;
    let base = m.receipts_stored.load(Ordering::Relaxed);
    let total = (n * k) as u64;
    let t0 = Instant::now();
    fleet.publish_all(topics, payloads);
    let (t1, got) = wait_count(total, Duration::from_secs(15), || {
        m.receipts_stored.load(Ordering::Relaxed) - base
    })
    .await;
    let rate = Rate {
        count: got,
        secs: (t1 - t0).as_secs_f64(),
    };
    let out = DaemonRun {
        rate,
        stored: got,
        rejected: m.rejects_total(),
        batches: m.batches.load(Ordering::Relaxed),
        mean_commit_ms: m.commit_micros.load(Ordering::Relaxed) as f64
            / 1_000.0
            / m.batches.load(Ordering::Relaxed).max(1) as f64,
    };
    fleet.close().await;
    shutdown.cancel();
    running.wait().await;
    Ok(out)
}

pub fn print_ingest(o: &IngestOptions, r: &IngestReport) {
    println!();
    println!(
        "ingest: {} displays x {} plays = {} receipts; broker: {}; store: {}",
        o.displays, o.plays, r.sent, r.broker, r.database
    );
    println!("| measure | count | seconds | per second | ratio |");
    println!("|---|---:|---:|---:|---:|");
    let ing = r.ingest.per_sec();
    println!(
        "| ingest: first publish to last commit | {} | {:.3} | {:.0} | |",
        r.ingest.count, r.ingest.secs, ing
    );
    println!(
        "| baseline: raw broker QoS 1, one acknowledging subscriber | {} | {:.3} | {:.0} | ingest/raw = {:.2} |",
        r.broker_raw.count,
        r.broker_raw.secs,
        r.broker_raw.per_sec(),
        ing / r.broker_raw.per_sec().max(f64::MIN_POSITIVE)
    );
    println!(
        "| baseline: raw store batched insert (same rows) | {} | {:.3} | {:.0} | ingest/raw = {:.2} |",
        r.store_raw.count,
        r.store_raw.secs,
        r.store_raw.per_sec(),
        ing / r.store_raw.per_sec().max(f64::MIN_POSITIVE)
    );
    println!(
        "stored {} of {} (rejected {}); receipts rows {}, rollup plays {}; {} batches, mean commit {:.1} ms",
        r.stored, r.sent, r.rejected, r.rows_in_receipts, r.rows_in_rollup, r.batches, r.mean_commit_ms
    );
    if r.broker_raw_received < r.sent {
        println!(
            "warning: the raw subscriber received {} of {}: the broker dropped messages (Mosquitto: max_queued_messages 0, max_inflight_messages 0)",
            r.broker_raw_received, r.sent
        );
    }
    if let Some(b) = r.bytes_per_receipt {
        println!("receipts on disk: {b:.1} bytes per receipt (table and indexes)");
    }
    let ratio = ing / r.broker_raw.per_sec().max(f64::MIN_POSITIVE);
    println!(
        "target: ingest >= 0.9 x raw broker rate: {} ({ratio:.2})",
        met(ratio >= 0.9 && r.stored == r.sent)
    );
}
