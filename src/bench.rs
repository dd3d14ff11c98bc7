//! `civicast bench`: the scenarios of BENCHMARKS.md, each printing its result beside a
//! baseline measured in the same run.
//!
//! - `ingest`: simulated displays (one MQTT connection each) send receipts for recorded plays
//!   through the broker into the store; beside it the broker's raw QoS 1 rate to one
//!   subscriber that only acknowledges, and the store's raw batched insert rate.
//! - `audit`: a synthetic year of receipts written by a bulk path, then the two audit queries
//!   through the rollup (`Store::audit_plays`) beside the naive GROUP BY over raw receipts,
//!   answers compared row for row.
//! - `storage`: bytes per receipt on disk after that load, beside a plain heap table.
//! - `memory`: RSS with a large inventory, each size in a fresh process.
//!
//! Owns: nothing the daemon uses. Must not touch: the daemon's code paths (it drives them as
//! a user would).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};
use clap::{Args, ValueEnum};
use futures_util::future::BoxFuture;
use sqlx::{QueryBuilder, Row, Sqlite};
use tokio_util::sync::CancellationToken;

use crate::core::audit::{PlaysParams, PlaysQuery, PlaysRow};
use crate::core::wire::Topics;
use crate::daemon::{self, SystemClock};
use crate::settings::Settings;
use crate::store::{ApiStore, NewPlay, PgStore, SqliteStore, Store};

mod pg;
pub use pg::{audit_pg, load_pg, storage_pg, PgLoadReport, PgStorageReport};

/// Which scenario `civicast bench` runs.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Scenario {
    Ingest,
    Audit,
    Storage,
    Memory,
    /// One size of the memory scenario, in this process (the parent spawns one per size).
    #[value(hide = true)]
    MemoryOne,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// audit/storage: receipts in the synthetic history (default 1,000,000).
    #[arg(long)]
    pub receipts: Option<u64>,
    /// ingest: simulated displays (default 500); audit/storage: displays in the history
    /// (default 3,000); memory: inventory sizes, comma-separated (default 100000,1000000).
    #[arg(long, value_delimiter = ',')]
    pub displays: Vec<u64>,
    /// ingest: plays each display acknowledges (default 40).
    #[arg(long)]
    pub plays: Option<u64>,
    /// ingest, audit, storage: a PostgreSQL database (`postgres://...`; tables go in a fresh
    /// schema: `civicast_bench_ingest`, `civicast_bench_audit`); default a SQLite file under --dir.
    #[arg(long)]
    pub database: Option<String>,
    /// ingest: an external broker `host:port` (e.g. Mosquitto at 127.0.0.1:1883) instead of
    /// the embedded one; memory --daemon: the same (use a private broker: the daemon leaves
    /// one retained config per display under `civicast-bench/<ulid>`).
    #[arg(long)]
    pub mqtt: Option<String>,
    /// Where the bench writes its databases and generated inventories.
    #[arg(long, default_value = "bench-data")]
    pub dir: PathBuf,
    /// audit: timed runs of each rollup query.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// audit: timed runs of each naive query.
    #[arg(long, default_value_t = 3)]
    pub naive_runs: usize,
    /// memory: start the whole daemon (embedded broker included unless --mqtt), not only the
    /// catalog and the store's inventory sync.
    #[arg(long)]
    pub daemon: bool,
}

/// A count over a time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    pub count: u64,
    pub secs: f64,
}

impl Rate {
    pub fn per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.count as f64 / self.secs
        } else {
            0.0
        }
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

/// `civicast bench ...`
pub async fn run(settings: Settings, a: BenchArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    println!("civicast bench {:?} on {}", a.scenario, machine());
    match a.scenario {
        Scenario::Ingest => {
            let o = IngestOptions {
                displays: a.displays.first().copied().unwrap_or(500) as usize,
                plays: a.plays.unwrap_or(40) as usize,
                database: a.database.clone(),
                mqtt: a.mqtt.clone(),
                dir: a.dir.clone(),
            };
            let r = ingest(&settings, &o).await?;
            print_ingest(&o, &r);
            Ok(exit(r.stored == r.sent))
        }
        Scenario::Audit | Scenario::Storage => {
            if let Some(url) = a.database.as_deref().filter(|u| u.starts_with("postgres")) {
                return pg::run(&a, url).await;
            }
            if a.database
                .as_deref()
                .is_some_and(|u| !u.starts_with("sqlite:"))
            {
                anyhow::bail!("--database: use sqlite://... or postgres://...");
            }
            let o = LoadOptions {
                receipts: a.receipts.unwrap_or(1_000_000),
                displays: a.displays.first().copied().unwrap_or(3_000).max(1),
                ..LoadOptions::default()
            };
            let path = a.dir.join("audit.db");
            let (store, load) = load_sqlite(&path, &o).await?;
            print_load(&load);
            let s = storage(&store, &load).await?;
            print_storage(&s);
            if a.scenario == Scenario::Audit {
                let r = audit(&store, &o, a.runs.max(1), a.naive_runs.max(1)).await?;
                print_audit(&r);
                return Ok(exit(r.identical()));
            }
            Ok(ExitCode::SUCCESS)
        }
        Scenario::Memory => {
            let sizes = if a.displays.is_empty() {
                vec![100_000, 1_000_000]
            } else {
                a.displays.clone()
            };
            let exe = std::env::current_exe().context("finding this executable")?;
            let mut rows = Vec::new();
            for n in sizes {
                eprintln!("memory: {n} displays in a fresh process...");
                let mut cmd = std::process::Command::new(&exe);
                cmd.args(["bench", "memory-one", "--displays", &n.to_string(), "--dir"])
                    .arg(&a.dir);
                if a.daemon {
                    cmd.arg("--daemon");
                }
                if let Some(m) = &a.mqtt {
                    cmd.args(["--mqtt", m]);
                }
                let out = cmd.output().context("running the memory child")?;
                let text = String::from_utf8_lossy(&out.stdout);
                let line = text
                    .lines()
                    .find_map(|l| l.strip_prefix("MEMORY "))
                    .with_context(|| {
                        format!(
                            "memory child for {n} gave no result: {}",
                            String::from_utf8_lossy(&out.stderr)
                        )
                    })?;
                let m: MemoryReport = serde_json::from_str(line)?;
                rows.push(m);
            }
            print_memory(&rows);
            Ok(ExitCode::SUCCESS)
        }
        Scenario::MemoryOne => {
            let n = a.displays.first().copied().unwrap_or(100_000) as usize;
            let m = memory_one(&settings, &a.dir, n, a.daemon, a.mqtt.as_deref()).await?;
            println!("MEMORY {}", serde_json::to_string(&m)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cpus} CPUs ({model}), {}",
        Utc::now().format("%Y-%m-%d %H:%M UTC")
    )
}

// ---------------------------------------------------------------------------------------
// A generated inventory

const CLASSES: &str = r#"
[class.bench_led]
max_chars = 40
charset = "gb2312"
duration = "15s"
"#;

const FEEDS: &str = r#"
timezone = "Asia/Shanghai"

[[feed]]
id = "bench"
select = { class = "bench_led" }
interval = "1h"
"#;

const ADSET: &str = r#"
id = "civility"
valid_from = "2020-01-01"
valid_until = "2099-12-31"

[[slogan]]
id = "jiang-wenming"
text = "讲文明 树新风"
weight = 2

[[slogan]]
id = "paidui"
text = "自觉排队 文明乘车"
"#;

fn device_name(i: usize) -> String {
    format!("bench-{i:07}")
}

/// Writes `devices/` and `schedules/` for `n` displays of one class in one feed.
pub fn write_inventory(root: &Path, n: usize) -> anyhow::Result<()> {
    let w = |rel: &str, text: &str| -> anyhow::Result<()> {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    let _ = std::fs::remove_dir_all(root.join("devices"));
    // One file, as an operator would keep it (loading is linear in a file's rows).
    let mut csv = String::with_capacity(n * 28 + 32);
    csv.push_str("id,class,route\n");
    for i in 0..n {
        csv.push_str(&device_name(i));
        csv.push_str(",bench_led,K");
        csv.push_str(&(i % 300).to_string());
        csv.push('\n');
    }
    w("devices/fleet.csv", &csv)?;
    drop(csv);
    w("devices/classes.toml", CLASSES)?;
    w("schedules/feeds.toml", FEEDS)?;
    w("schedules/adsets/civility.toml", ADSET)?;
    Ok(())
}

fn load_catalog(root: &Path) -> anyhow::Result<crate::core::model::Catalog> {
    let report = crate::core::catalog::load_dirs(&root.join("devices"), &root.join("schedules"));
    let errors = report.errors();
    match report.catalog {
        Some(c) if errors == 0 => Ok(c),
        _ => anyhow::bail!(
            "the generated inventory has {errors} errors: {:?}",
            report.problems.first().map(|p| p.to_string())
        ),
    }
}

// ---------------------------------------------------------------------------------------
// ingest

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
    /// Rows in `receipts` and plays summed in `rollup_hourly` afterwards.
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

fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let s = s.trim_start_matches("mqtt://");
    let (h, p) = s
        .rsplit_once(':')
        .with_context(|| format!("--mqtt {s:?}: expected host:port"))?;
    Ok((h.to_owned(), p.parse().context("--mqtt port")?))
}

fn receipt_payload(play_id: &str, at: DateTime<Utc>) -> String {
    format!(
        r#"{{"v":1,"play_id":"{play_id}","started_at":"{}","duration_ms":15000,"status":"played"}}"#,
        at.to_rfc3339()
    )
}

/// `n` MQTT 3.1.1 clients connected to `host:port`; each one's poller counts PUBACKs.
struct Fleet {
    clients: Vec<rumqttc::AsyncClient>,
    stop: CancellationToken,
}

async fn connect_fleet(
    host: &str,
    port: u16,
    n: usize,
    tag: &str,
    queue: usize,
) -> anyhow::Result<Fleet> {
    let connected = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut o = rumqttc::MqttOptions::new(format!("{tag}-{}", device_name(i)), host, port);
        o.set_keep_alive(Duration::from_secs(60))
            .set_clean_session(true);
        let (c, mut ev) = rumqttc::AsyncClient::new(o, queue + 16);
        let (connected, stop) = (connected.clone(), stop.clone());
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let e = tokio::select! {
                    _ = stop.cancelled() => break,
                    e = ev.poll() => e,
                };
                match e {
                    Ok(rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_))) => {
                        if first {
                            connected.fetch_add(1, Ordering::Relaxed);
                            first = false;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        clients.push(c);
        // A gentle ramp: rumqttd's listeners and the listen queue take about 1,000 a second.
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            stop.cancel();
            anyhow::bail!(
                "only {} of {n} displays connected to {host}:{port} within 60 s",
                connected.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Fleet { clients, stop })
}

impl Fleet {
    /// Every display publishes its payloads (QoS 1) from its own task.
    fn publish_all(&self, topics: &Topics, payloads: Arc<Vec<String>>) {
        for (i, c) in self.clients.iter().enumerate() {
            let c = c.clone();
            let topic = topics.receipts(&device_name(i));
            let payloads = payloads.clone();
            tokio::spawn(async move {
                for p in payloads.iter() {
                    if c.publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, p.clone())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    }

    async fn close(self) {
        for c in &self.clients {
            let _ = c.try_disconnect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.stop.cancel();
    }
}

/// Waits until `done()` reaches `target`, or nothing moved for `stall`; returns when it
/// reached its last value and that value.
async fn wait_count(target: u64, stall: Duration, done: impl Fn() -> u64) -> (Instant, u64) {
    let mut last = (Instant::now(), done());
    loop {
        let now = done();
        if now >= target {
            return (Instant::now(), now);
        }
        if now != last.1 {
            last = (Instant::now(), now);
        } else if last.0.elapsed() > stall {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
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
enum Db {
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

fn remove_db(path: &Path) {
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
    }
}

impl Db {
    fn describe(&self) -> String {
        match self {
            Db::Sqlite(_, p) => format!("SQLite {}", p.display()),
            Db::Pg(_, schema) => format!("PostgreSQL schema {schema}"),
        }
    }

    /// Rows in `receipts` and plays summed over `rollup_hourly`.
    async fn counts(&self) -> anyhow::Result<(i64, i64)> {
        const Q: &str = "SELECT (SELECT COUNT(*) FROM receipts), \
                         (SELECT CAST(COALESCE(SUM(plays), 0) AS BIGINT) FROM rollup_hourly)";
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

    /// The store alone: `rows` receipts in transactions of `batch` rows, multi-row INSERTs
    /// as the store writes them.
    async fn raw_insert(&self, rows: &[(i64, i64, i64)], batch: usize) -> anyhow::Result<Rate> {
        let t0 = Instant::now();
        for chunk in rows.chunks(batch.max(1)) {
            match self {
                Db::Sqlite(s, _) => {
                    let mut tx = s.pool().begin().await?;
                    for part in chunk.chunks(4_000) {
                        let mut q = QueryBuilder::<Sqlite>::new(
                            "INSERT INTO receipts (device, play, started_at, duration_ms, status) ",
                        );
                        q.push_values(part, |mut b, (d, p, t)| {
                            b.push_bind(d)
                                .push_bind(p)
                                .push_bind(t)
                                .push_bind(15_000i64)
                                .push_bind(0i64);
                        });
                        q.build().execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                }
                Db::Pg(s, _) => {
                    let mut tx = s.pool().begin().await?;
                    for part in chunk.chunks(5_000) {
                        let mut q = QueryBuilder::<sqlx::Postgres>::new(
                            "INSERT INTO receipts (device, play, started_at, duration_ms, play_day, status) ",
                        );
                        q.push_values(part, |mut b, (d, p, t)| {
                            b.push_bind(d)
                                .push_bind(p)
                                .push_bind(t)
                                .push_bind(15_000i64)
                                .push_bind(t.div_euclid(86_400_000) as i32)
                                .push_bind(0i16);
                        });
                        q.build().execute(&mut *tx).await?;
                    }
                    tx.commit().await?;
                }
            }
        }
        Ok(Rate {
            count: rows.len() as u64,
            secs: t0.elapsed().as_secs_f64(),
        })
    }
}

/// `SUM(pgsize)` from the `dbstat` virtual table, when SQLite was built with it.
async fn dbstat(pool: &sqlx::SqlitePool, name: &str) -> Option<i64> {
    sqlx::query_scalar::<_, Option<i64>>("SELECT SUM(pgsize) FROM dbstat WHERE name = ?")
        .bind(name)
        .fetch_one(pool)
        .await
        .ok()
        .flatten()
}

/// Pages in use (page_count - freelist_count) times the page size.
async fn used_bytes(pool: &sqlx::SqlitePool) -> anyhow::Result<i64> {
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(pool)
        .await?;
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(pool)
        .await?;
    let size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(pool)
        .await?;
    Ok((pages - free) * size)
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
            let b = crate::mqtt::broker::start(
                l,
                crate::mqtt::broker::BrokerOptions {
                    max_connections: settings.broker_max_connections.max(n + 100),
                    ..Default::default()
                },
                stop.clone(),
            )
            .await?;
            Broker::Embedded {
                addr: b.addr,
                internal: b.internal_v5,
                stop,
            }
        }
    };
    report.broker = match &broker {
        Broker::Embedded { .. } => "embedded rumqttd".into(),
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
    report.store_raw = raw_db.raw_insert(&rows_arrival, settings.batch_max).await?;
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
    s.mqtt_url = o
        .mqtt
        .as_ref()
        .map(|hp| format!("mqtt://{}", hp.trim_start_matches("mqtt://")));
    s.broker_max_connections = s.broker_max_connections.max(n + 100);
    let r = match &db {
        Db::Sqlite(st, _) => daemon_run(&s, st.clone(), catalog, &topics, n, k).await?,
        Db::Pg(st, _) => daemon_run(&s, st.clone(), catalog, &topics, n, k).await?,
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

async fn daemon_run<S: ApiStore>(
    settings: &Settings,
    store: S,
    catalog: crate::core::model::Catalog,
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
    let listener = match settings.mqtt_url {
        None => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?),
        Some(_) => None,
    };
    let running = daemon::start(
        settings,
        store,
        catalog,
        listener,
        Arc::new(SystemClock),
        shutdown.clone(),
    )
    .await?;
    let m = running.shared.metrics.clone();
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
    let (host, port) = match (&running.mqtt_addr, &settings.mqtt_url) {
        (Some(a), _) => (a.ip().to_string(), a.port()),
        (None, Some(u)) => split_host_port(u)?,
        (None, None) => anyhow::bail!("no broker address"),
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

fn print_ingest(o: &IngestOptions, r: &IngestReport) {
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

// ---------------------------------------------------------------------------------------
// audit and storage: a synthetic year

/// The synthetic history.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub receipts: u64,
    pub displays: u64,
    pub feeds: u64,
    pub slogans: u64,
    pub days: i64,
    /// The history ends here (exclusive), midnight in Asia/Shanghai.
    pub end: DateTime<Utc>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            receipts: 1_000_000,
            displays: 3_000,
            feeds: 10,
            slogans: 12,
            days: 365,
            end: chrono_tz::Asia::Shanghai
                .with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
                .single()
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_default(),
        }
    }
}

/// Relative plays per local hour of day: few at night, most in the rush hours.
const DAY_SHAPE: [f64; 24] = [
    0.15, 0.10, 0.08, 0.08, 0.12, 0.30, 0.70, 1.00, 1.00, 0.85, 0.80, 0.80, 0.90, 0.80, 0.80, 0.85,
    0.95, 1.00, 1.00, 0.95, 0.85, 0.65, 0.45, 0.25,
];
/// Shanghai is UTC+8 all year (no summer time since 1991).
const SHANGHAI_MS: i64 = 8 * 3_600_000;
/// Receipts a display does not send (offline), in percent.
const MISSING_PCT: i64 = 3;

/// Deterministic per receipt: whether it exists and its status. The same formula runs in SQL.
fn receipt_hash(device: i64, play: i64) -> i64 {
    (device * 7_919 + play * 104_729) % 100
}
const HASH_SQL: &str = "((m.device * 7919 + p.id * 104729) % 100)";

fn status_of(h: i64) -> i64 {
    match h {
        0 | 1 => 1, // skipped
        2 => 3,     // failed
        _ => 0,     // played
    }
}

fn offset_ms(device: i64) -> i64 {
    (device % 30) * 1_000
}

/// A rollup row's key: hour, device, slogan, feed, status.
type RollKey = (i64, i64, i64, i64, i64);

#[derive(Debug, Clone, Copy)]
struct SynthPlay {
    id: i64,
    feed: i64,
    slogan: i64,
    issued: i64,
}

/// Plays of every feed over the year, spread by `DAY_SHAPE`, ids in time order.
fn synth_plays(o: &LoadOptions) -> Vec<SynthPlay> {
    let per_feed = (o.displays / o.feeds).max(1);
    let want_plays =
        (o.receipts as f64 / per_feed as f64 / (1.0 - MISSING_PCT as f64 / 100.0)).ceil() as u64;
    let k = want_plays.div_ceil(o.feeds).max(1);
    let start = o.end.timestamp_millis() - o.days * 86_400_000;
    let hours = (o.days * 24) as usize;
    let weight =
        |h: usize| DAY_SHAPE[(((start + SHANGHAI_MS) / 3_600_000 + h as i64) % 24) as usize];
    let total: f64 = (0..hours).map(weight).sum();
    let mut plays = Vec::with_capacity((k * o.feeds) as usize);
    for f in 0..o.feeds {
        let (mut h, mut acc) = (0usize, 0.0f64);
        for j in 0..k {
            let q = (j as f64 + 0.5 + f as f64 / o.feeds as f64 * 0.5) / k as f64 * total;
            while h + 1 < hours && acc + weight(h) < q {
                acc += weight(h);
                h += 1;
            }
            let frac = ((q - acc) / weight(h)).clamp(0.0, 0.999);
            let issued = start + h as i64 * 3_600_000 + (frac * 3_600_000.0) as i64;
            plays.push(SynthPlay {
                id: 0,
                feed: f as i64 + 1,
                slogan: ((j * 5 + f) % o.slogans) as i64 + 1,
                issued,
            });
        }
    }
    plays.sort_by_key(|p| (p.issued, p.feed));
    for (i, p) in plays.iter_mut().enumerate() {
        p.id = i as i64 + 1;
    }
    plays
}

#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub receipts: i64,
    pub rollup_rows: i64,
    pub plays: i64,
    pub displays: u64,
    pub receipts_load: Rate,
    pub rollup_load: Rate,
    /// Pages in use before and after the receipts, then after the rollup.
    pub used_before: i64,
    pub used_after_receipts: i64,
    pub used_after_rollup: i64,
    pub path: PathBuf,
}

async fn exec(pool: &sqlx::SqlitePool, sql: &str) -> anyhow::Result<()> {
    sqlx::query(sql)
        .execute(pool)
        .await
        .with_context(|| format!("running {sql}"))?;
    Ok(())
}

/// Writes the synthetic history into a fresh SQLite file at `path`: devices, feeds,
/// memberships, slogans, plays through bound multi-row INSERTs; receipts generated inside
/// SQLite (INSERT ... SELECT over memberships x plays, in primary-key order); the hourly
/// rollup summed in Rust from the same plays and formula, independently of the receipts.
pub async fn load_sqlite(
    path: &Path,
    o: &LoadOptions,
) -> anyhow::Result<(SqliteStore, LoadReport)> {
    remove_db(path);
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await?;
    store.migrate().await?;
    let pool = store.pool().clone();
    // A bulk load: no fsync per transaction, a large page cache.
    exec(&pool, "PRAGMA synchronous = OFF").await?;
    exec(&pool, "PRAGMA cache_size = -1000000").await?;
    let plays = synth_plays(o);
    let start = o.end.timestamp_millis() - o.days * 86_400_000;
    eprintln!(
        "load: {} displays, {} feeds, {} plays over {} days, about {} receipts...",
        o.displays,
        o.feeds,
        plays.len(),
        o.days,
        o.receipts
    );
    {
        let mut tx = pool.begin().await?;
        for f in 1..=o.feeds as i64 {
            sqlx::query("INSERT INTO feeds (id, name) VALUES (?, ?)")
                .bind(f)
                .bind(format!("feed-{f:02}"))
                .execute(&mut *tx)
                .await?;
        }
        for s in 1..=o.slogans as i64 {
            sqlx::query(
                "INSERT INTO slogans (id, adset, rev, slogan) VALUES (?, 'civility', 1, ?)",
            )
            .bind(s)
            .bind(format!("slogan-{s:02}"))
            .execute(&mut *tx)
            .await?;
        }
        let classes = ["bus_led", "taxi_top", "stop_lcd"];
        let ids: Vec<i64> = (1..=o.displays as i64).collect();
        for chunk in ids.chunks(4_000) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO devices (id, name, class) ");
            q.push_values(chunk, |mut b, d| {
                b.push_bind(*d)
                    .push_bind(device_name(*d as usize))
                    .push_bind(classes[(*d % 3) as usize]);
            });
            q.build().execute(&mut *tx).await?;
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO memberships (device, feed, since) ");
            q.push_values(chunk, |mut b, d| {
                b.push_bind(*d)
                    .push_bind((*d - 1) % o.feeds as i64 + 1)
                    .push_bind(start - 86_400_000);
            });
            q.build().execute(&mut *tx).await?;
        }
        for chunk in plays.chunks(4_000) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO plays (id, play_id, feed, device, slogan, issued_at, expires_at, members) ",
            );
            q.push_values(chunk, |mut b, p| {
                b.push_bind(p.id)
                    .push_bind(ulid::Ulid::from_parts(p.issued as u64, p.id as u128).to_string())
                    .push_bind(p.feed)
                    .push_bind(None::<i64>)
                    .push_bind(p.slogan)
                    .push_bind(p.issued)
                    .push_bind(p.issued + 180_000)
                    .push_bind((o.displays / o.feeds) as i64);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    // Only for the load: plays by feed, so each display's plays come in id order.
    exec(&pool, "CREATE INDEX bench_plays_feed ON plays (feed, id)").await?;
    let used_before = used_bytes(&pool).await?;
    let t0 = Instant::now();
    let step = 25i64;
    let mut d0 = 1i64;
    let mut last_print = Instant::now();
    while d0 <= o.displays as i64 {
        let d1 = (d0 + step - 1).min(o.displays as i64);
        let sql = format!(
            "INSERT INTO receipts (device, play, started_at, duration_ms, status) \
             SELECT m.device, p.id, p.issued_at + (m.device % 30) * 1000, 15000, \
                    CASE WHEN {HASH_SQL} < 2 THEN 1 WHEN {HASH_SQL} = 2 THEN 3 ELSE 0 END \
             FROM memberships m JOIN plays p ON p.feed = m.feed \
             WHERE m.device BETWEEN ? AND ? AND {HASH_SQL} < {} \
             ORDER BY m.device, p.id",
            100 - MISSING_PCT
        );
        sqlx::query(&sql)
            .bind(d0)
            .bind(d1)
            .execute(&pool)
            .await
            .context("generating receipts")?;
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "load: receipts for displays up to {d1} of {} ({:.0} s)",
                o.displays,
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        d0 = d1 + 1;
    }
    let receipts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM receipts")
        .fetch_one(&pool)
        .await?;
    let receipts_load = Rate {
        count: receipts as u64,
        secs: t0.elapsed().as_secs_f64(),
    };
    exec(&pool, "DROP INDEX bench_plays_feed").await?;
    let used_after_receipts = used_bytes(&pool).await?;
    eprintln!(
        "load: {receipts} receipts in {:.1} s; the hourly rollup...",
        receipts_load.secs
    );

    // The rollup, hour by hour in key order, from the plays alone.
    let t1 = Instant::now();
    let per_feed: Vec<Vec<i64>> = (1..=o.feeds as i64)
        .map(|f| {
            (1..=o.displays as i64)
                .filter(|d| (d - 1) % o.feeds as i64 + 1 == f)
                .collect()
        })
        .collect();
    let mut pending: BTreeMap<RollKey, i64> = BTreeMap::new();
    let mut rollup_rows = 0i64;
    let mut tx = pool.begin().await?;
    let mut out: Vec<(RollKey, i64)> = Vec::with_capacity(40_000);
    let mut in_tx = 0usize;
    for (i, p) in plays.iter().enumerate() {
        let hour_now = p.issued.div_euclid(3_600_000);
        let last = i + 1 == plays.len();
        for &d in &per_feed[(p.feed - 1) as usize] {
            let h = receipt_hash(d, p.id);
            if h >= 100 - MISSING_PCT {
                continue;
            }
            let started = p.issued + offset_ms(d);
            *pending
                .entry((
                    started.div_euclid(3_600_000),
                    d,
                    p.slogan,
                    p.feed,
                    status_of(h),
                ))
                .or_default() += 1;
        }
        // Receipts start at or after their play: hours before this play's are complete.
        let next_hour = plays.get(i + 1).map(|n| n.issued.div_euclid(3_600_000));
        if last || next_hour != Some(hour_now) {
            let keep = if last {
                BTreeMap::new()
            } else {
                pending.split_off(&(next_hour.unwrap_or(i64::MAX), 0, 0, 0, 0))
            };
            out.extend(std::mem::replace(&mut pending, keep));
        }
        if out.len() >= 30_000 || last {
            for chunk in out.chunks(4_000) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "INSERT INTO rollup_hourly (hour, device, slogan, feed, status, plays) ",
                );
                q.push_values(chunk, |mut b, ((h, d, s, f, st), n)| {
                    b.push_bind(h)
                        .push_bind(d)
                        .push_bind(s)
                        .push_bind(f)
                        .push_bind(st)
                        .push_bind(n);
                });
                q.build().execute(&mut *tx).await?;
            }
            rollup_rows += out.len() as i64;
            in_tx += out.len();
            out.clear();
            if in_tx >= 1_000_000 {
                tx.commit().await?;
                tx = pool.begin().await?;
                in_tx = 0;
            }
        }
    }
    tx.commit().await?;
    let rollup_load = Rate {
        count: rollup_rows as u64,
        secs: t1.elapsed().as_secs_f64(),
    };
    load_presence(&pool, o, &plays).await?;
    exec(&pool, "PRAGMA wal_checkpoint(TRUNCATE)").await?;
    exec(&pool, "ANALYZE").await?;
    let used_after_rollup = used_bytes(&pool).await?;
    Ok((
        store,
        LoadReport {
            receipts,
            rollup_rows,
            plays: plays.len() as i64,
            displays: o.displays,
            receipts_load,
            rollup_load,
            used_before,
            used_after_receipts,
            used_after_rollup,
            path: path.to_path_buf(),
        },
    ))
}

fn print_load(l: &LoadReport) {
    println!();
    println!(
        "load ({}): {} receipts from {} plays to {} displays: receipts {:.1} s ({:.0}/s, generated in SQLite); rollup {} rows {:.1} s ({:.0}/s, bound INSERTs)",
        l.path.display(),
        l.receipts,
        l.plays,
        l.displays,
        l.receipts_load.secs,
        l.receipts_load.per_sec(),
        l.rollup_rows,
        l.rollup_load.secs,
        l.rollup_load.per_sec()
    );
}

#[derive(Debug, Clone, Default)]
pub struct StorageReport {
    pub receipts: i64,
    /// From `dbstat` when available, else from page counts around the load.
    pub receipts_bytes: i64,
    pub rollup_bytes: i64,
    pub file_bytes: i64,
    pub source: &'static str,
    /// The same rows (a sample) in a plain rowid table without any key: SQLite's floor.
    pub heap_bytes_per_row: f64,
    pub heap_sample: i64,
}

impl StorageReport {
    pub fn per_receipt(&self) -> f64 {
        self.receipts_bytes as f64 / self.receipts.max(1) as f64
    }
}

/// Bytes per receipt after the load, beside a heap table holding a sample of the same rows.
pub async fn storage(store: &SqliteStore, l: &LoadReport) -> anyhow::Result<StorageReport> {
    let pool = store.pool();
    let (receipts_bytes, rollup_bytes, source) = match (
        dbstat(pool, "receipts").await,
        dbstat(pool, "rollup_hourly").await,
    ) {
        (Some(r), Some(u)) => (r, u, "dbstat"),
        _ => (
            l.used_after_receipts - l.used_before,
            l.used_after_rollup - l.used_after_receipts,
            "page_count deltas",
        ),
    };
    let file_bytes = used_bytes(pool).await?;
    // The floor: the same columns in a rowid table without a key.
    let sample = l.receipts.min(2_000_000);
    exec(pool, "DROP TABLE IF EXISTS bench_heap").await?;
    exec(
        pool,
        "CREATE TABLE bench_heap (device INTEGER, play INTEGER, started_at INTEGER, duration_ms INTEGER, status INTEGER)",
    )
    .await?;
    let before = used_bytes(pool).await?;
    sqlx::query("INSERT INTO bench_heap SELECT device, play, started_at, duration_ms, status FROM receipts LIMIT ?")
        .bind(sample)
        .execute(pool)
        .await?;
    let heap = dbstat(pool, "bench_heap").await;
    let heap = match heap {
        Some(h) => h,
        None => used_bytes(pool).await? - before,
    };
    exec(pool, "DROP TABLE bench_heap").await?;
    Ok(StorageReport {
        receipts: l.receipts,
        receipts_bytes,
        rollup_bytes,
        file_bytes,
        source,
        heap_bytes_per_row: heap as f64 / sample.max(1) as f64,
        heap_sample: sample,
    })
}

fn print_storage(s: &StorageReport) {
    let per = |b: i64| b as f64 / s.receipts.max(1) as f64;
    println!();
    println!("storage: {} receipts, sizes from {}", s.receipts, s.source);
    println!("| on disk | bytes | bytes per receipt |");
    println!("|---|---:|---:|");
    println!(
        "| receipts (WITHOUT ROWID, key device+play: table = index) | {} | {:.1} |",
        s.receipts_bytes,
        per(s.receipts_bytes)
    );
    println!(
        "| baseline: same columns, rowid heap, no key ({} rows) | | {:.1} |",
        s.heap_sample, s.heap_bytes_per_row
    );
    println!(
        "| rollup_hourly | {} | {:.1} |",
        s.rollup_bytes,
        per(s.rollup_bytes)
    );
    println!(
        "| whole file in use | {} | {:.1} |",
        s.file_bytes,
        per(s.file_bytes)
    );
    println!(
        "target: <= 40 bytes per receipt (receipts table and indexes): {} ({:.1}; {:.2} x the keyless heap)",
        met(s.per_receipt() <= 40.0),
        s.per_receipt(),
        s.per_receipt() / s.heap_bytes_per_row.max(f64::MIN_POSITIVE)
    );
}

#[derive(Debug, Clone, Default)]
pub struct QueryReport {
    pub name: String,
    pub rows: usize,
    pub total: i64,
    pub rollup_p50_ms: f64,
    pub rollup_p95_ms: f64,
    pub naive_p50_ms: f64,
    pub naive_p95_ms: f64,
    pub identical: bool,
}

#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    pub receipts: i64,
    pub queries: Vec<QueryReport>,
    pub compliance: Option<ComplianceBench>,
}

impl AuditReport {
    /// Every answer equal to its naive counterpart.
    pub fn identical(&self) -> bool {
        self.queries.iter().all(|q| q.identical)
            && self.compliance.as_ref().is_none_or(|c| c.identical)
    }
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn day_string(day: i64) -> String {
    DateTime::from_timestamp(day * 86_400, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The naive answer: GROUP BY over raw receipts joined to plays/slogans/devices, one scan of
/// `receipts` (SQLite's CROSS JOIN fixes the join order: left to itself the planner may loop
/// over plays and search receipts, keyed by device first, once per play).
async fn naive(
    store: &SqliteStore,
    by: &str,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<Vec<PlaysRow>> {
    let sql = match by {
        "slogan,day" => {
            "SELECT s.slogan, (r.started_at + 28800000) / 86400000 AS day, COUNT(*) AS n \
             FROM receipts r CROSS JOIN plays p ON p.id = r.play CROSS JOIN slogans s ON s.id = p.slogan \
             WHERE r.status = 0 AND r.started_at >= ? AND r.started_at < ? \
             GROUP BY s.slogan, day"
        }
        _ => {
            "SELECT d.name, COUNT(*) AS n FROM receipts r CROSS JOIN devices d ON d.id = r.device \
             WHERE r.status = 0 AND r.started_at >= ? AND r.started_at < ? GROUP BY d.name"
        }
    };
    let rows = sqlx::query(sql)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(store.pool())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut values = vec![r.try_get::<String, _>(0)?];
        if by == "slogan,day" {
            values.push(day_string(r.try_get::<i64, _>(1)?));
        }
        out.push(PlaysRow {
            values,
            plays: r.try_get("n")?,
        });
    }
    out.sort_by(|a, b| a.values.cmp(&b.values));
    Ok(out)
}

/// The audit queries through the store (the rollup), beside the naive GROUP BY.
pub async fn audit(
    store: &SqliteStore,
    o: &LoadOptions,
    runs: usize,
    naive_runs: usize,
) -> anyhow::Result<AuditReport> {
    let tz = chrono_tz::Asia::Shanghai;
    let end = o.end.with_timezone(&tz);
    let mut report = AuditReport {
        receipts: sqlx::query_scalar("SELECT COUNT(*) FROM receipts")
            .fetch_one(store.pool())
            .await?,
        ..Default::default()
    };
    // What the daemon's first batch does on a database without daily rollups: fill them
    // from the hourly one for the deployment's zone.
    let t = Instant::now();
    store
        .commit_batch(&crate::store::Batch {
            utc_offset_h: crate::core::audit::fixed_offset_hours(tz),
            ..Default::default()
        })
        .await?;
    eprintln!(
        "audit: daily rollups backfilled from the hourly one in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    report.queries = play_count_queries(store, end, tz, runs, naive_runs, |by, from, to| {
        Box::pin(naive(store, by, from, to))
    })
    .await?;
    report.compliance = Some(audit_compliance(store, o, runs, naive_runs).await?);
    Ok(report)
}

/// The two play-count questions, each `runs` times through `Store::audit_plays` (the
/// rollups) and `naive_runs` times through `naive` (a GROUP BY over raw receipts), for the
/// history ending at `end`; SQLite and PostgreSQL differ only in their naive query.
pub(crate) async fn play_count_queries<'a, S: Store>(
    store: &'a S,
    end: DateTime<chrono_tz::Tz>,
    tz: chrono_tz::Tz,
    runs: usize,
    naive_runs: usize,
    naive: impl Fn(&'static str, i64, i64) -> BoxFuture<'a, anyhow::Result<Vec<PlaysRow>>>,
) -> anyhow::Result<Vec<QueryReport>> {
    let mut out = Vec::new();
    for (name, by, days) in [
        ("plays by slogan by day, 30 days", "slogan,day", 30),
        ("plays by display, 7 days", "device", 7),
    ] {
        let from = end - chrono::Duration::days(days);
        let q = PlaysQuery::parse(
            &PlaysParams {
                group_by: Some(by.into()),
                from: Some(from.format("%Y-%m-%d").to_string()),
                to: Some(end.format("%Y-%m-%d").to_string()),
                ..Default::default()
            },
            tz,
        )?;
        anyhow::ensure!(q.rollup_ok(), "the bench's bounds fall on whole hours");
        eprintln!("audit: {name}: {runs} runs through the rollup, {naive_runs} naive...");
        let mut fast = Vec::with_capacity(runs);
        let mut answer = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            answer = store.audit_plays(&q).await?;
            fast.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (from_ms, to_ms) = (from.timestamp_millis(), end.timestamp_millis());
        let mut slow = Vec::with_capacity(naive_runs);
        let mut plain = Vec::new();
        for _ in 0..naive_runs {
            let t = Instant::now();
            plain = naive(by, from_ms, to_ms).await?;
            slow.push(t.elapsed().as_secs_f64() * 1e3);
        }
        out.push(QueryReport {
            name: name.into(),
            rows: answer.len(),
            total: answer.iter().map(|r| r.plays).sum(),
            rollup_p50_ms: pct(fast.clone(), 0.5),
            rollup_p95_ms: pct(fast, 0.95),
            naive_p50_ms: pct(slow.clone(), 0.5),
            naive_p95_ms: pct(slow, 0.95),
            identical: answer == plain,
        });
    }
    Ok(out)
}

fn print_audit(r: &AuditReport) {
    println!();
    println!("audit: {} receipts", r.receipts);
    println!("| query | rows | plays | rollup p50 ms | rollup p95 ms | naive p50 ms | naive p95 ms | naive/rollup (p50) | identical |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for q in &r.queries {
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.1} | {:.1} | {:.0}x | {} |",
            q.name,
            q.rows,
            q.total,
            q.rollup_p50_ms,
            q.rollup_p95_ms,
            q.naive_p50_ms,
            q.naive_p95_ms,
            q.naive_p50_ms / q.rollup_p50_ms.max(1e-9),
            if q.identical { "yes" } else { "NO" }
        );
    }
    for q in &r.queries {
        let speed = q.naive_p50_ms / q.rollup_p50_ms.max(1e-9);
        println!(
            "target {}: p50 <= 50 ms: {} ({:.2} ms); >= 100x naive: {} ({speed:.0}x); same answer: {}",
            q.name,
            met(q.rollup_p50_ms <= 50.0),
            q.rollup_p50_ms,
            met(speed >= 100.0),
            met(q.identical)
        );
    }
    if let Some(c) = &r.compliance {
        print_compliance(c);
    }
}

// ---------------------------------------------------------------------------------------
// audit: compliance for a week

/// How long each synthetic receipt's play lasts (the `duration_ms` the load writes).
const RECEIPT_MS: i64 = 15_000;

/// Presence as the displays would have reported it, from the formula that decides which
/// receipts exist: a display comes online for its first receipt of a local day and stays on
/// to the end of its last, and it is offline for each receipt it misses (the MISSING_PCT
/// "display offline"): from the end of the receipt before to the start of the one after. So
/// no stored receipt falls in offline time, and no missed play falls in online time. Bound
/// multi-row INSERTs in key order, as for the rollup.
async fn load_presence(
    pool: &sqlx::SqlitePool,
    o: &LoadOptions,
    plays: &[SynthPlay],
) -> anyhow::Result<Rate> {
    let t = Instant::now();
    // Rows go in key order; the index on online_until (migration 0004, same definition
    // below) would take them in random order, several times slower, so it is built after.
    exec(pool, "DROP INDEX IF EXISTS presence_until").await?;
    let mut by_feed: Vec<Vec<&SynthPlay>> = vec![Vec::new(); o.feeds as usize];
    for p in plays {
        by_feed[(p.feed - 1) as usize].push(p);
    }
    let mut rows: Vec<(i64, i64, i64)> = Vec::with_capacity(40_000);
    let (mut written, mut in_tx) = (0i64, 0usize);
    let mut tx = pool.begin().await?;
    let last = o.displays as i64;
    for d in 1..=last {
        // (online from, online until, local day)
        let mut open: Option<(i64, i64, i64)> = None;
        for p in &by_feed[((d - 1) % o.feeds as i64) as usize] {
            if receipt_hash(d, p.id) >= 100 - MISSING_PCT {
                rows.extend(open.take().map(|(s, e, _)| (d, s, e)));
                continue;
            }
            let s = p.issued + offset_ms(d);
            let day = (s + SHANGHAI_MS).div_euclid(86_400_000);
            match &mut open {
                Some((_, e, on)) if *on == day => *e = (*e).max(s + RECEIPT_MS),
                _ => {
                    let closed = open.replace((s, s + RECEIPT_MS, day));
                    rows.extend(closed.map(|(s, e, _)| (d, s, e)));
                }
            }
        }
        rows.extend(open.map(|(s, e, _)| (d, s, e)));
        if rows.len() >= 30_000 || d == last {
            for chunk in rows.chunks(5_000) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "INSERT INTO presence (device, online_from, online_until) ",
                );
                q.push_values(chunk, |mut b, (d, s, e)| {
                    b.push_bind(d).push_bind(s).push_bind(e);
                });
                q.build()
                    .execute(&mut *tx)
                    .await
                    .context("writing presence")?;
            }
            written += rows.len() as i64;
            in_tx += rows.len();
            rows.clear();
            if in_tx >= 1_000_000 {
                tx.commit().await?;
                tx = pool.begin().await?;
                in_tx = 0;
            }
        }
    }
    tx.commit().await?;
    exec(
        pool,
        "CREATE INDEX presence_until ON presence (online_until)",
    )
    .await?;
    let r = Rate {
        count: written as u64,
        secs: t.elapsed().as_secs_f64(),
    };
    eprintln!(
        "load: presence {} intervals in {:.1} s ({:.0}/s)",
        r.count,
        r.secs,
        r.per_sec()
    );
    Ok(r)
}

/// Targets of the synthetic feeds, cycled over the feeds: the rotation interval as a
/// multiple of the plays' spacing at the busiest hours, and whether the feed keeps to
/// 06:00-23:00 (the night's sparse plays would fail any interval near the day's spacing).
/// Chosen so that some displays meet their target and some do not.
const FEED_TARGETS: [(f64, bool); 10] = [
    (1.0, true),
    (1.5, true),
    (6.0, false),
    (1.25, true),
    (2.0, true),
    (1.1, true),
    (3.0, true),
    (14.0, false),
    (1.75, true),
    (2.5, true),
];
const BENCH_DAYPART: &str = "* * 6-22 * * *";

/// The inventory the synthetic history was played to, as an operator would keep it: one
/// CSV of the displays (class and feed as in the database), three classes, one feed per
/// `feed-NN` with its interval and daypart from [`FEED_TARGETS`].
fn write_audit_inventory(root: &Path, o: &LoadOptions, plays: usize) -> anyhow::Result<()> {
    let w = |rel: &str, text: &str| -> anyhow::Result<()> {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    let _ = std::fs::remove_dir_all(root);
    let classes = ["bus_led", "taxi_top", "stop_lcd"];
    let mut csv = String::from("id,class,feed\n");
    for d in 1..=o.displays as i64 {
        csv.push_str(&format!(
            "{},{},feed-{:02}\n",
            device_name(d as usize),
            classes[(d % 3) as usize],
            (d - 1) % o.feeds as i64 + 1
        ));
    }
    w("devices/fleet.csv", &csv)?;
    let mut toml = String::new();
    for c in classes {
        toml.push_str(&format!(
            "[class.{c}]\nmax_chars = 40\ncharset = \"gb2312\"\nduration = \"15s\"\n\n"
        ));
    }
    w("devices/classes.toml", &toml)?;
    // A feed's plays are spread by DAY_SHAPE: at weight 1 they come every `spacing` ms.
    let per_feed = plays as f64 / o.feeds as f64;
    let shape: f64 = DAY_SHAPE.iter().sum();
    let spacing = 3_600_000.0 * o.days as f64 * shape / per_feed.max(1.0);
    let mut toml = String::from("timezone = \"Asia/Shanghai\"\n");
    for f in 1..=o.feeds {
        let (times, daypart) = FEED_TARGETS[(f as usize - 1) % FEED_TARGETS.len()];
        let secs = (spacing * times / 1000.0).round().max(1.0);
        toml.push_str(&format!(
            "\n[[feed]]\nid = \"feed-{f:02}\"\nselect = {{ feed = \"feed-{f:02}\" }}\ninterval = \"{secs}s\"\n"
        ));
        if daypart {
            toml.push_str(&format!("daypart = \"{BENCH_DAYPART}\"\n"));
        }
    }
    w("schedules/feeds.toml", &toml)?;
    w("schedules/adsets/civility.toml", ADSET)?;
    Ok(())
}

/// Compliance for a week, through the report path beside the naive fold.
#[derive(Debug, Clone, Default)]
pub struct ComplianceBench {
    pub name: String,
    pub rows: usize,
    pub met: usize,
    /// Played receipts counted (started while online and active).
    pub plays: u64,
    /// Played receipts of the week and presence intervals overlapping it, as read.
    pub receipts_read: usize,
    pub presence_read: usize,
    pub report_p50_ms: f64,
    pub report_p95_ms: f64,
    /// One call each of the two store reads the report makes, outside the timed runs.
    pub played_between_ms: f64,
    pub presence_between_ms: f64,
    pub naive_p50_ms: f64,
    pub naive_p95_ms: f64,
    pub identical: bool,
}

/// The naive answer: plain SELECTs of the raw rows (no join, no order, no index but the
/// tables' own), feeds from the stored memberships rather than the catalog's selectors,
/// grouped in Rust and judged by the same pure fold (`compliance::evaluate`).
async fn naive_compliance(
    store: &SqliteStore,
    catalog: &crate::core::model::Catalog,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<(Vec<crate::reports::ComplianceRow>, usize, usize)> {
    use crate::core::audit::compliance;
    use futures_util::TryStreamExt;
    use std::collections::HashMap;
    let pool = store.pool();
    let mut devices: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for r in sqlx::query("SELECT id, name, class FROM devices")
        .fetch_all(pool)
        .await?
    {
        devices.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?));
    }
    let mut feed_index: HashMap<i64, usize> = HashMap::new();
    for r in sqlx::query("SELECT id, name FROM feeds")
        .fetch_all(pool)
        .await?
    {
        let name: String = r.try_get(1)?;
        if let Some(i) = catalog.feeds.iter().position(|f| f.id.as_str() == name) {
            feed_index.insert(r.try_get(0)?, i);
        }
    }
    let mut feeds: HashMap<i64, Vec<usize>> = HashMap::new();
    for r in sqlx::query("SELECT device, feed, since, until FROM memberships")
        .fetch_all(pool)
        .await?
    {
        let (since, until): (i64, Option<i64>) = (r.try_get(2)?, r.try_get(3)?);
        if since < to_ms && until.is_none_or(|u| u > from_ms) {
            if let Some(&i) = feed_index.get(&r.try_get::<i64, _>(1)?) {
                feeds.entry(r.try_get(0)?).or_default().push(i);
            }
        }
    }
    let mut online: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    let mut presence_read = 0;
    let mut rows =
        sqlx::query("SELECT device, online_from, online_until FROM presence").fetch(pool);
    while let Some(r) = rows.try_next().await? {
        let (s, e): (i64, Option<i64>) = (r.try_get(1)?, r.try_get(2)?);
        if s < to_ms && e.is_none_or(|e| e > from_ms) {
            presence_read += 1;
            online
                .entry(r.try_get(0)?)
                .or_default()
                .push((s, e.unwrap_or(to_ms)));
        }
    }
    drop(rows);
    let mut played: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut receipts_read = 0;
    let mut rows = sqlx::query(
        "SELECT device, started_at FROM receipts WHERE status = 0 AND started_at >= ? AND started_at < ?",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch(pool);
    while let Some(r) = rows.try_next().await? {
        receipts_read += 1;
        played.entry(r.try_get(0)?).or_default().push(r.try_get(1)?);
    }
    drop(rows);
    let mut out = Vec::with_capacity(devices.len());
    for (id, (name, class)) in devices {
        let Some(fs) = feeds.get_mut(&id) else {
            continue;
        };
        fs.sort_unstable();
        fs.dedup();
        let Some(interval) = fs.iter().map(|&i| catalog.feeds[i].interval).min() else {
            continue;
        };
        let parts: Vec<_> = fs
            .iter()
            .map(|&i| catalog.feeds[i].daypart.as_ref())
            .collect();
        let active = compliance::active_windows(&parts, catalog.timezone, from_ms, to_ms);
        let o = compliance::evaluate(&compliance::Input {
            from_ms,
            to_ms,
            online: online.get(&id).map(Vec::as_slice).unwrap_or(&[]),
            active: &active,
            plays: played.get(&id).map(Vec::as_slice).unwrap_or(&[]),
            interval_ms: interval.as_millis() as i64,
            factors: compliance::Factors::default(),
        });
        out.push(crate::reports::ComplianceRow {
            device: name,
            class,
            online_seconds: o.online_seconds,
            plays: o.plays,
            mean_interval_s: o.mean_interval_s,
            longest_gap_s: o.longest_gap_s,
            interval_s: interval.as_secs_f64(),
            met: o.met,
        });
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    Ok((out, receipts_read, presence_read))
}

/// Compliance for the last 7 days of the history through `reports::compliance_report` (what
/// `GET /api/v1/audit/compliance` and `civicast audit compliance` run), `runs` times, beside
/// [`naive_compliance`] `naive_runs` times; answers compared row for row.
async fn audit_compliance(
    store: &SqliteStore,
    o: &LoadOptions,
    runs: usize,
    naive_runs: usize,
) -> anyhow::Result<ComplianceBench> {
    let tz = chrono_tz::Asia::Shanghai;
    let plays: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plays")
        .fetch_one(store.pool())
        .await?;
    // Beside the database, so the inventory goes wherever the bench's data goes.
    let db = store.pool().connect_options().get_filename().to_path_buf();
    let root = db.with_file_name(format!(
        "{}-inventory",
        db.file_stem().and_then(|s| s.to_str()).unwrap_or("audit")
    ));
    write_audit_inventory(&root, o, plays as usize)?;
    let catalog = load_catalog(&root)?;
    let end = o.end.with_timezone(&tz);
    let from = end - chrono::Duration::days(7);
    let p = crate::reports::ComplianceParams {
        from: Some(from.format("%Y-%m-%d").to_string()),
        to: Some(end.format("%Y-%m-%d").to_string()),
        ..Default::default()
    };
    let factors = crate::core::audit::compliance::Factors::default();
    let name = "compliance, 7 days";
    eprintln!("audit: {name}: {runs} runs through the report, {naive_runs} naive...");
    let mut fast = Vec::with_capacity(runs);
    let mut answer = Vec::new();
    let db: crate::store::Db = store.clone().into();
    for _ in 0..runs {
        let t = Instant::now();
        answer = crate::reports::compliance_report(&db, &catalog, &p, o.end, factors)
            .await?
            .rows;
        fast.push(t.elapsed().as_secs_f64() * 1e3);
    }
    answer.sort_by(|a, b| a.device.cmp(&b.device));
    let (f, t) = (from.timestamp_millis(), end.timestamp_millis());
    let clock = Instant::now();
    let presence_read = store.presence_between(f, t).await?.len();
    let presence_between_ms = clock.elapsed().as_secs_f64() * 1e3;
    let clock = Instant::now();
    let receipts_read = store.played_between(f, t, None).await?.len();
    let played_between_ms = clock.elapsed().as_secs_f64() * 1e3;
    let mut slow = Vec::with_capacity(naive_runs);
    let mut plain = (Vec::new(), 0, 0);
    for _ in 0..naive_runs {
        let clock = Instant::now();
        plain = naive_compliance(store, &catalog, f, t).await?;
        slow.push(clock.elapsed().as_secs_f64() * 1e3);
    }
    let identical = answer == plain.0 && receipts_read == plain.1 && presence_read == plain.2;
    Ok(ComplianceBench {
        name: name.into(),
        rows: answer.len(),
        met: answer.iter().filter(|r| r.met).count(),
        plays: answer.iter().map(|r| r.plays).sum(),
        receipts_read,
        presence_read,
        report_p50_ms: pct(fast.clone(), 0.5),
        report_p95_ms: pct(fast, 0.95),
        played_between_ms,
        presence_between_ms,
        naive_p50_ms: pct(slow.clone(), 0.5),
        naive_p95_ms: pct(slow, 0.95),
        identical,
    })
}

fn print_compliance(c: &ComplianceBench) {
    println!();
    println!("| query | displays | met | plays counted | played receipts read | presence read | report p50 ms | report p95 ms | naive p50 ms | naive p95 ms | naive/report (p50) | identical |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1}x | {} |",
        c.name,
        c.rows,
        c.met,
        c.plays,
        c.receipts_read,
        c.presence_read,
        c.report_p50_ms,
        c.report_p95_ms,
        c.naive_p50_ms,
        c.naive_p95_ms,
        c.naive_p50_ms / c.report_p50_ms.max(1e-9),
        if c.identical { "yes" } else { "NO" }
    );
    println!(
        "{}: of the report, one call each: played_between {:.1} ms, presence_between {:.1} ms; same answer: {}",
        c.name,
        c.played_between_ms,
        c.presence_between_ms,
        met(c.identical)
    );
}

// ---------------------------------------------------------------------------------------
// memory

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
    m: &crate::metrics::Metrics,
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
    crate::inventory::release_free_memory();
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
                s.mqtt_url = Some(format!("mqtt://{}", hp.trim_start_matches("mqtt://")));
                report.broker = Some(hp.to_owned());
                None
            }
            None => {
                s.mqtt_url = None;
                report.broker = Some("embedded".into());
                Some(tokio::net::TcpListener::bind("127.0.0.1:0").await?)
            }
        };
        let shutdown = CancellationToken::new();
        let t = Instant::now();
        let running = daemon::start(
            &s,
            store.clone(),
            catalog,
            listener,
            Arc::new(SystemClock),
            shutdown.clone(),
        )
        .await?;
        report.sync_secs = t.elapsed().as_secs_f64();
        let m = running.shared.metrics.clone();
        // Idle once every retained config is out.
        let _ = wait_count(n as u64, Duration::from_secs(20), || {
            m.configs_published.load(Ordering::Relaxed)
        })
        .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        report.synced_kib = rss_kib().0;
        report.daemon_kib = Some(report.synced_kib);
        let port = running.mqtt_addr.map_or(port, |a| a.port());
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
        let keys = daemon::sync_inventory(&store, &catalog, Utc::now().timestamp_millis()).await?;
        anyhow::ensure!(keys.devices.len() == n, "every display has a key");
        let members = crate::inventory::MemberIndex::new(store.memberships().await?);
        let inventory = crate::inventory::Inventory::new(catalog.devices.clone(), keys);
        crate::inventory::release_free_memory();
        report.sync_secs = t.elapsed().as_secs_f64();
        report.synced_kib = rss_kib().0;
        drop((catalog, inventory, members));
    }
    report.peak_kib = rss_kib().1;
    store.pool().close().await;
    remove_db(&path);
    Ok(report)
}

fn print_memory(rows: &[MemoryReport]) {
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
