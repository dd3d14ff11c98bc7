//! `soak`: the demo city (the first city's 3,149 displays, simulated, on the embedded broker
//! and a fresh SQLite file) at a compressed speed for a long time, sampling this process's
//! resident memory and open file descriptors at a fixed period, then checking that every
//! receipt the simulated fleet sent is stored exactly once.
//!
//! Owns: the soak run, its samples and the flatness verdict. Must not touch: the daemon's
//! code paths (it starts the daemon with `App::start`, as `civicast demo` does).
//!
//! "Flat after warm-up": the samples of the first fifth of the run (at least the first two)
//! are warm-up (connections, caches, the SQLite page cache filling). After it, the resident
//! set of the last sample is at most 10 % above the first one, and the open descriptors at
//! most 1 % (or 5) above: a leak of a few bytes per receipt or of one socket per reconnect
//! shows well past either bound in an hour.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use civicast::daemon::{App, Listeners, Startup};
use civicast::settings::{Broker, Settings};
use civicast::sim::{self, SimDisplay, SimStats};
use civicast::store::{DatabaseUrl, Db};
use tokio_util::sync::CancellationToken;

use crate::memory::rss_kib;

#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Time compression, as `civicast demo --speed`.
    pub speed: f64,
    pub duration: Duration,
    /// Time between samples.
    pub every: Duration,
    /// Displays powering on per second.
    pub ramp: f64,
    /// Where the city's files and the database go.
    pub dir: PathBuf,
    /// The run stops (and fails) when this process's RSS passes this many MiB: checked each
    /// second, so that a runaway cannot take a shared machine's memory.
    pub max_rss_mib: u64,
}

/// One reading.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Duration,
    pub rss_kib: u64,
    pub fds: usize,
    pub receipts_stored: u64,
    pub online: u64,
}

#[derive(Debug)]
pub struct SoakReport {
    pub displays: usize,
    pub samples: Vec<Sample>,
    /// Samples counted as warm-up.
    pub warmup: usize,
    pub plays: u64,
    /// Receipts the simulated fleet handed to its MQTT clients.
    pub sent: u64,
    /// Rows in `receipts` at the end, and distinct (display, play) among them.
    pub rows: i64,
    pub distinct: i64,
    pub duplicates: u64,
    pub rejects: u64,
    /// Set when the run stopped early: RSS passed the cap (MiB, after seconds).
    pub aborted: Option<(u64, f64)>,
}

impl SoakReport {
    fn after_warmup(&self) -> &[Sample] {
        &self.samples[self.warmup.min(self.samples.len())..]
    }
    /// (first, last) resident set after warm-up, KiB.
    pub fn rss(&self) -> Option<(u64, u64)> {
        let s = self.after_warmup();
        Some((s.first()?.rss_kib, s.last()?.rss_kib))
    }
    pub fn fds(&self) -> Option<(usize, usize)> {
        let s = self.after_warmup();
        Some((s.first()?.fds, s.last()?.fds))
    }
    pub fn rss_flat(&self) -> bool {
        self.rss().is_some_and(|(a, b)| b as f64 <= a as f64 * 1.10)
    }
    pub fn fds_flat(&self) -> bool {
        self.fds().is_some_and(|(a, b)| b <= a + (a / 100).max(5))
    }
    /// Every receipt sent is stored, once.
    pub fn stored_once(&self) -> bool {
        self.rows == self.sent as i64 && self.distinct == self.rows
    }
    pub fn ok(&self) -> bool {
        self.aborted.is_none() && self.rss_flat() && self.fds_flat() && self.stored_once()
    }
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

pub async fn soak(settings: &Settings, o: &SoakOptions) -> anyhow::Result<SoakReport> {
    anyhow::ensure!(
        o.speed > 0.0 && o.speed.is_finite(),
        "--speed must be a positive number"
    );
    civicast::city::write_first_city(&o.dir).context("writing the demo city")?;
    let catalog = civicast::files::load_dirs(&o.dir.join("devices"), &o.dir.join("schedules"))
        .catalog
        .context("the demo city's files do not load")?;
    let displays = SimDisplay::fleet(&catalog);
    let total = displays.len();
    let db_path = o.dir.join("soak.db");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db_path.display()));
    }
    let mut settings = settings.clone();
    settings.devices = o.dir.join("devices");
    settings.schedules = o.dir.join("schedules");
    settings.database = DatabaseUrl::sqlite_file(&db_path);
    let mqtt = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    settings.broker = Broker::Embedded {
        listen: mqtt.local_addr()?,
    };
    let store = Db::open(&settings.database).await?;
    let app = App::start(Startup {
        listeners: Listeners {
            mqtt: Some(mqtt),
            http: None,
        },
        time_scale: 1.0 / o.speed,
        ..Startup::new(settings.clone(), store.clone(), catalog)
    })
    .await?;
    let addr = app.mqtt_addr().context("embedded broker address")?;
    let stats = Arc::new(SimStats::default());
    let stop = CancellationToken::new();
    let fleet = sim::spawn_fleet(sim::Fleet {
        displays,
        host: addr.ip().to_string(),
        port: addr.port(),
        prefix: settings.prefix.clone(),
        time_scale: 1.0 / o.speed,
        per_second: o.ramp,
        stats: stats.clone(),
        stop: stop.clone(),
    });
    let m = app.metrics().clone();
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut aborted = None;
    let mut next_sample = Duration::ZERO;
    let mut guard = tokio::time::interval(Duration::from_secs(1));
    loop {
        guard.tick().await;
        let rss = rss_kib().0;
        if rss / 1024 > o.max_rss_mib {
            let at = started.elapsed().as_secs_f64();
            eprintln!(
                "soak {at:>6.0} s: RSS {rss} KiB passed --max-rss {} MiB; stopping",
                o.max_rss_mib
            );
            aborted = Some((rss / 1024, at));
            break;
        }
        if started.elapsed() < next_sample {
            continue;
        }
        next_sample += o.every;
        let s = Sample {
            at: started.elapsed(),
            rss_kib: rss,
            fds: open_fds(),
            receipts_stored: m.receipts_stored.load(Ordering::Relaxed),
            online: stats.online.load(Ordering::Relaxed),
        };
        eprintln!(
            "soak {:>6.0} s: RSS {} KiB, {} fds, {} displays online, {} receipts stored",
            s.at.as_secs_f64(),
            s.rss_kib,
            s.fds,
            s.online,
            s.receipts_stored
        );
        samples.push(s);
        if started.elapsed() >= o.duration {
            break;
        }
    }
    // Let the last scrolls end and their receipts land.
    stats.stopping.store(true, Ordering::Relaxed);
    let settle = Instant::now() + Duration::from_secs_f64(15.0 / o.speed + 2.0);
    loop {
        let sent = stats.receipts_sent.load(Ordering::Relaxed);
        let handled = m.receipts_stored.load(Ordering::Relaxed)
            + m.receipts_duplicate.load(Ordering::Relaxed)
            + m.rejects_total();
        if Instant::now() > settle && handled >= sent {
            break;
        }
        if Instant::now() > settle + Duration::from_secs(30) {
            eprintln!(
                "soak: {} receipts sent but not handled 30 s after the fleet stopped",
                sent.saturating_sub(handled)
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sent = stats.receipts_sent.load(Ordering::Relaxed);
    app.stop();
    app.wait().await;
    stop.cancel();
    fleet.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), fleet.wait()).await;
    let (rows, distinct) = match &store {
        Db::Sqlite(s) => {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT device, play FROM receipts)) FROM receipts",
            )
            .fetch_one(s.pool())
            .await?
        }
        Db::Postgres(_) => anyhow::bail!("the soak runs on SQLite"),
    };
    let warmup = (samples.len() / 5).max(2);
    Ok(SoakReport {
        displays: total,
        samples,
        warmup,
        plays: m.plays_published.load(Ordering::Relaxed),
        sent,
        rows,
        distinct,
        duplicates: m.receipts_duplicate.load(Ordering::Relaxed),
        rejects: m.rejects_total(),
        aborted,
    })
}

pub fn print_soak(o: &SoakOptions, r: &SoakReport) {
    println!(
        "soak: {} displays, speed x{}, {:.0} s, a sample every {:.0} s ({} of warm-up)",
        r.displays,
        o.speed,
        o.duration.as_secs_f64(),
        o.every.as_secs_f64(),
        r.warmup
    );
    println!("| t (s) | RSS (MiB) | open fds | displays online | receipts stored |");
    println!("|---:|---:|---:|---:|---:|");
    for (i, s) in r.samples.iter().enumerate() {
        let mark = if i < r.warmup { " (warm-up)" } else { "" };
        println!(
            "| {:.0}{mark} | {:.1} | {} | {} | {} |",
            s.at.as_secs_f64(),
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.online,
            s.receipts_stored
        );
    }
    if let Some((mib, at)) = r.aborted {
        println!(
            "ABORTED after {at:.0} s: RSS {mib} MiB passed --max-rss {} MiB",
            o.max_rss_mib
        );
    }
    let verdict = |ok: bool| if ok { "flat" } else { "GROWING" };
    if let (Some((a, b)), Some((fa, fb))) = (r.rss(), r.fds()) {
        println!(
            "after warm-up: RSS {:.1} -> {:.1} MiB ({:+.1} %): {}; open fds {fa} -> {fb}: {}",
            a as f64 / 1024.0,
            b as f64 / 1024.0,
            (b as f64 / a.max(1) as f64 - 1.0) * 100.0,
            verdict(r.rss_flat()),
            verdict(r.fds_flat()),
        );
    } else {
        println!("too few samples after warm-up to judge flatness");
    }
    println!(
        "{} plays; the fleet sent {} receipts; stored {} rows ({} distinct): {}; {} duplicates, {} rejected",
        r.plays,
        r.sent,
        r.rows,
        r.distinct,
        if r.stored_once() {
            "every receipt stored once"
        } else {
            "MISMATCH"
        },
        r.duplicates,
        r.rejects
    );
}
