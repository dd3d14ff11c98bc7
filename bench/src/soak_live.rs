//! `soak-live`: the soak at a million displays' receipt load, on the real parts. The daemon
//! is a `civicast serve` release binary of its own on an external Mosquitto (a private one
//! unless `--mqtt`) and a fresh PostgreSQL schema; the fleet is several `civicast simulate
//! --shard K/N` processes, one MQTT connection per display, each process under the
//! machine's 20,000 descriptors. The daemon's RSS and descriptors are read from /proc, its
//! /metrics scraped; at the end the fleet stops, the daemon drains, and the receipts stored
//! are checked against those the fleet had acknowledged, each once, and against `civicast
//! audit plays`.
//!
//! The load: a display plays once per 3 minutes of on-screen time, so `N` displays at
//! time compression `S` send `N x S / 180` receipts a second. A million displays send
//! 1,000,000 / 180 = 5,556 a second; for a fleet of `N` the speed is `rate x 180 / N`, the
//! feeds' interval `180 s / S` in the files the daemon reads, and the fleet's scrolls
//! `15 s / S` (`simulate --speed S`).
//!
//! Owns: the processes it starts (Mosquitto, serve, the fleets), its folder under --dir and
//! the schema `civicast_bench_soak` (dropped and recreated each run, left for inspection).
//! Must not touch: the daemon's code (it speaks only HTTP, MQTT and SQL to what it starts).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use civicast::metrics::LATENCY_BOUNDS;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::fixture::write_inventory;
use crate::storm::{count_panics, free_port, http_get, open_fds, rss_of, wait_port, Kid};

/// On-screen seconds between two plays of a display: the first city's bus boards'.
pub const PLAY_EVERY_S: f64 = 180.0;
/// Receipts a second of a million displays, one play each per 3 minutes.
pub const MILLION_RATE: f64 = 1_000_000.0 / PLAY_EVERY_S;
/// Routes of the bench's fixture (K0..K299); a feed takes one or more of them.
const ROUTES: usize = 300;
const SCHEMA: &str = "civicast_bench_soak";
const LATENCY: &str = "civicast_receipt_latency_seconds";

#[derive(Debug, Clone)]
pub struct LiveOptions {
    pub displays: usize,
    pub processes: usize,
    /// Receipts a second wanted; the speed follows from it.
    pub rate: f64,
    /// From the end of warm-up to the fleet's stop.
    pub duration: Duration,
    /// From every display online to the start of the measured window.
    pub warmup: Duration,
    pub every: Duration,
    /// Displays powering on per second, per fleet process.
    pub ramp: f64,
    /// Feeds the displays are spread over (at most 300, the fixture's routes), so that the
    /// plays, staggered by feed, come as a stream and not as one burst per interval. The
    /// daemon caches each play for hours: fewer feeds, fewer plays to hold.
    pub feeds: usize,
    /// An external broker `host:port`; a private Mosquitto when None.
    pub mqtt: Option<String>,
    /// The PostgreSQL database (`postgres://...`); the tables go in a schema of their own.
    pub database: String,
    pub civicast: PathBuf,
    pub dir: PathBuf,
    /// The run stops (and fails) when serve's RSS passes this many MiB.
    pub max_rss_mib: u64,
}

impl LiveOptions {
    /// The time compression that gives `rate` with `displays`.
    pub fn speed(&self) -> f64 {
        self.rate * PLAY_EVERY_S / self.displays.max(1) as f64
    }
}

/// One reading of the daemon (and of the broker, when it is ours).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LiveSample {
    pub at_s: f64,
    pub rss_kib: u64,
    pub fds: usize,
    pub broker_rss_kib: Option<u64>,
    pub stored: u64,
    pub online: i64,
    /// The latency's p99 (within its bucket) over the receipts since the sample before.
    pub p99_s: f64,
}

/// What a fleet process said last.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FleetEnd {
    pub online: u64,
    pub connect_errors: u64,
    pub plays_seen: u64,
    pub sent: u64,
    pub acked: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LiveReport {
    pub displays: usize,
    pub speed: f64,
    pub online_after_s: f64,
    pub samples: Vec<LiveSample>,
    /// Receipts committed in the measured window, and its length.
    pub window_stored: u64,
    pub window_s: f64,
    /// The latency histogram's buckets over the window (deltas, not cumulative), bounds
    /// as [`LATENCY_BOUNDS`] then +Inf.
    pub window_buckets: Vec<u64>,
    pub fleet: FleetEnd,
    /// The daemon's counters after the drain.
    pub stored_metric: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub latency_count: u64,
    /// `receipts_all`: rows, distinct (device, play), rows with status played.
    pub rows: i64,
    pub distinct: i64,
    pub played_rows: i64,
    /// `civicast audit plays --format json`: its total.
    pub audit_total: Option<i64>,
    pub panics: usize,
    pub aborted: Option<String>,
    pub kept: PathBuf,
}

impl LiveReport {
    pub fn rate(&self) -> f64 {
        self.window_stored as f64 / self.window_s.max(f64::EPSILON)
    }
    fn after_warmup(&self, f: impl Fn(&LiveSample) -> f64) -> Option<(f64, f64)> {
        // The first sample is taken at the end of warm-up.
        Some((f(self.samples.first()?), f(self.samples.last()?)))
    }
    /// The last resident set at most 10 % above the first (as the embedded soak's).
    pub fn rss_flat(&self) -> bool {
        self.after_warmup(|s| s.rss_kib as f64)
            .is_some_and(|(a, b)| b <= a * 1.10)
    }
    pub fn fds_flat(&self) -> bool {
        self.after_warmup(|s| s.fds as f64)
            .is_some_and(|(a, b)| b <= a + (a / 100.0).max(5.0))
    }
    /// Every acknowledged receipt stored, once; nothing stored that was not acknowledged.
    pub fn stored_once(&self) -> bool {
        self.rows == self.fleet.acked as i64
            && self.distinct == self.rows
            && self.fleet.sent == self.fleet.acked
    }
    pub fn audit_agrees(&self) -> bool {
        self.audit_total == Some(self.played_rows)
    }
    pub fn ok(&self) -> bool {
        self.aborted.is_none()
            && self.rss_flat()
            && self.fds_flat()
            && self.stored_once()
            && self.audit_agrees()
            && self.latency_count == self.stored_metric
            && self.stored_metric as i64 == self.rows
            && self.panics == 0
    }
    /// The `q` quantile of the window's latency, seconds: linear within its bucket, and
    /// the bucket's upper bound (None past the last bound).
    pub fn quantile(&self, q: f64) -> (f64, Option<f64>) {
        quantile(&self.window_buckets, q)
    }
}

/// The `q` quantile of a histogram of per-bucket counts over [`LATENCY_BOUNDS`] and +Inf.
pub fn quantile(buckets: &[u64], q: f64) -> (f64, Option<f64>) {
    let total: u64 = buckets.iter().sum();
    let want = q * total as f64;
    let mut below = 0u64;
    for (i, &c) in buckets.iter().enumerate() {
        if c > 0 && (below + c) as f64 >= want {
            let lo = if i == 0 { 0.0 } else { LATENCY_BOUNDS[i - 1] };
            let Some(&hi) = LATENCY_BOUNDS.get(i) else {
                return (lo, None);
            };
            let frac = (want - below as f64) / c as f64;
            return (lo + (hi - lo) * frac, Some(hi));
        }
        below += c;
    }
    (0.0, Some(0.0))
}

/// The cumulative `_bucket` counts of `name` in a /metrics text, in the order rendered.
pub fn buckets_of(metrics: &str, name: &str) -> Vec<u64> {
    let prefix = format!("{name}_bucket{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

/// A counter or gauge without labels; the sum over its series with them.
pub fn metric_sum(metrics: &str, name: &str) -> Option<f64> {
    let mut seen = None;
    for l in metrics.lines() {
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *seen.get_or_insert(0.0) += v;
        }
    }
    seen
}

fn deltas(start: &[u64], end: &[u64]) -> Vec<u64> {
    let per = |c: &[u64]| -> Vec<u64> {
        let mut prev = 0;
        c.iter()
            .map(|&v| {
                let d = v.saturating_sub(prev);
                prev = v;
                d
            })
            .collect()
    };
    let (a, b) = (per(start), per(end));
    b.iter()
        .enumerate()
        .map(|(i, v)| v.saturating_sub(a.get(i).copied().unwrap_or(0)))
        .collect()
}

/// The fleet's files: the bench's inventory of `n` (routes K0..K299), `feeds` feeds at the
/// compressed interval, feed `f` taking the routes `r` with `r % feeds == f`.
fn write_city(dir: &Path, n: usize, speed: f64, feeds: usize) -> anyhow::Result<()> {
    write_inventory(dir, n)?;
    let interval_ms = (PLAY_EVERY_S * 1000.0 / speed).round().max(100.0) as u64;
    let count = feeds.clamp(1, ROUTES.min(n));
    let mut text = String::from("timezone = \"Asia/Shanghai\"\n");
    for f in 0..count {
        let routes: Vec<String> = (f..ROUTES.min(n))
            .step_by(count)
            .map(|r| format!("\"K{r}\""))
            .collect();
        text += &format!(
            "\n[[feed]]\nid = \"feed-{f}\"\nselect = {{ route = [{}] }}\ninterval = \"{interval_ms}ms\"\n",
            routes.join(", ")
        );
    }
    std::fs::write(dir.join("schedules/feeds.toml"), text)?;
    Ok(())
}

/// A fresh schema, created and migrated by the store itself; the URL that points at it.
async fn fresh_schema(base: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(base)
        .await
        .context("connecting to --database")?;
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{SCHEMA}\" CASCADE"))
        .execute(&mut c)
        .await?;
    c.close().await?;
    let store = civicast::store::PgStore::connect_schema(base, SCHEMA).await?;
    store.pool().close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}options=-csearch_path%3D{SCHEMA}"))
}

fn mosquitto_conf(port: u16) -> String {
    // Unlimited queues (its default of 1,000 queued QoS 1 messages per subscriber would
    // drop the daemon's receipts in a stall) and connections (bounded then only by the
    // descriptors a process may hold).
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n\
         max_queued_messages 0\nmax_inflight_messages 0\npersistence false\n\
         log_dest stderr\nlog_type error\nlog_type warning\n"
    )
}

/// A private Mosquitto with as many descriptors as a process may have here.
async fn start_mosquitto(dir: &Path) -> anyhow::Result<(Kid, u16)> {
    let port = free_port()?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, mosquitto_conf(port))?;
    let child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n \"$(ulimit -Hn)\"; exec mosquitto -c \"$1\"")
        .arg("sh")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("mosquitto.stderr"))?)
        .kill_on_drop(true)
        .spawn()
        .context("starting mosquitto")?;
    wait_port(port, Duration::from_secs(10)).await?;
    Ok((Kid(child), port))
}

/// Every CIVICAST_ variable of ours gone, then the run's own.
fn civicast_cmd(exe: &Path, dir: &Path, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("CIVICAST_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("CIVICAST_DEVICES", dir.join("devices"))
        .env("CIVICAST_SCHEDULES", dir.join("schedules"))
        .env("CIVICAST_PREFIX", crate::storm::PREFIX)
        .env_remove("RUST_BACKTRACE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

async fn metrics(http: u16) -> anyhow::Result<String> {
    match http_get(http, "/metrics").await? {
        (200, body) => Ok(body),
        (s, _) => anyhow::bail!("/metrics answered {s}"),
    }
}

async fn start_serve(
    o: &LiveOptions,
    dir: &Path,
    env: &[(&str, String)],
    http: u16,
) -> anyhow::Result<(Kid, u32)> {
    let stderr = dir.join("serve.stderr");
    let mut child = civicast_cmd(&o.civicast, dir, env)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("serve.stdout"))?)
        .stderr(std::fs::File::create(&stderr)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} serve", o.civicast.display()))?;
    let pid = child.id().context("serve exited at once")?;
    let up = Instant::now();
    loop {
        if let Ok((200, _)) = http_get(http, "/healthz").await {
            return Ok((Kid(child), pid));
        }
        if let Ok(Some(st)) = child.try_wait() {
            anyhow::bail!(
                "serve exited ({st}) before /healthz; see {}",
                stderr.display()
            );
        }
        anyhow::ensure!(
            up.elapsed() < Duration::from_secs(120),
            "no /healthz in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The fleet processes, each with its shard of the inventory; their stdout lines.
fn start_fleets(
    o: &LiveOptions,
    dir: &Path,
    mqtt: &str,
) -> anyhow::Result<Vec<(Kid, tokio::task::JoinHandle<Option<String>>)>> {
    let mut out = Vec::new();
    for k in 0..o.processes {
        let mut child = civicast_cmd(&o.civicast, dir, &[])
            .args(["simulate", "--mqtt", mqtt])
            .args(["--speed", &o.speed().to_string()])
            .args(["--ramp", &o.ramp.to_string()])
            .args(["--duration", "1000h"])
            .args(["--shard", &format!("{k}/{}", o.processes)])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(
                dir.join(format!("fleet-{k}.stderr")),
            )?)
            .kill_on_drop(true)
            .spawn()
            .context("starting civicast simulate")?;
        let stdout = child.stdout.take().context("fleet stdout")?;
        // The last line is the one that counts; read all so the pipe never fills.
        let last = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            let mut end = None;
            while let Ok(Some(l)) = lines.next_line().await {
                if l.starts_with("online at end") {
                    end = Some(l);
                }
            }
            end
        });
        out.push((Kid(child), last));
    }
    Ok(out)
}

/// The numbers of `simulate`'s last line, by the words before them.
fn parse_fleet_end(line: &str) -> FleetEnd {
    let after = |words: &str| -> u64 {
        line.split(", ")
            .find_map(|part| part.strip_prefix(words))
            .and_then(|v| v.trim().split('/').next()?.parse().ok())
            .unwrap_or(0)
    };
    FleetEnd {
        online: after("online at end "),
        connect_errors: after("connect errors "),
        plays_seen: after("plays seen "),
        sent: after("receipts sent "),
        acked: after("receipts acknowledged "),
    }
}

/// SIGTERM to each fleet process (by its own pid); their last lines added up.
async fn stop_fleets(
    fleets: Vec<(Kid, tokio::task::JoinHandle<Option<String>>)>,
) -> anyhow::Result<FleetEnd> {
    for (kid, _) in &fleets {
        if let Some(pid) = kid.0.id() {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
    }
    let mut sum = FleetEnd::default();
    for (mut kid, last) in fleets {
        let _ = tokio::time::timeout(Duration::from_secs(60), kid.0.wait()).await;
        let line = last
            .await
            .ok()
            .flatten()
            .context("a fleet process gave no last line")?;
        let e = parse_fleet_end(&line);
        sum.online += e.online;
        sum.connect_errors += e.connect_errors;
        sum.plays_seen += e.plays_seen;
        sum.sent += e.sent;
        sum.acked += e.acked;
    }
    Ok(sum)
}

/// Waits until the daemon's online gauge reads `n`; the seconds it took.
async fn wait_all_online(http: u16, n: usize, within: Duration) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut last = 0.0;
    while t0.elapsed() < within {
        if let Ok(m) = metrics(http).await {
            last = metric_sum(&m, "civicast_displays_online").unwrap_or(0.0);
            if last as usize >= n {
                return Ok(t0.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::bail!("only {last} of {n} displays online after {within:?}")
}

pub async fn soak_live(o: &LiveOptions) -> anyhow::Result<LiveReport> {
    anyhow::ensure!(
        o.processes > 0 && o.displays > 0,
        "--displays and --processes > 0"
    );
    let dir = o.dir.join(format!("soak-live-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir)?;
    let dir = std::fs::canonicalize(&dir)?;
    write_city(&dir, o.displays, o.speed(), o.feeds)?;
    let (broker, mqtt) = match &o.mqtt {
        Some(m) => (None, m.trim_start_matches("mqtt://").to_owned()),
        None => {
            let (kid, port) = start_mosquitto(&dir).await?;
            (Some(kid), format!("127.0.0.1:{port}"))
        }
    };
    let broker_pid = broker.as_ref().and_then(|b| b.0.id());
    let url = fresh_schema(&o.database).await?;
    let http = free_port()?;
    let env = [
        ("CIVICAST_MQTT_URL", format!("mqtt://{mqtt}")),
        ("CIVICAST_DATABASE_URL", url.clone()),
        ("CIVICAST_HTTP_LISTEN", format!("127.0.0.1:{http}")),
    ];
    let (mut serve, pid) = start_serve(o, &dir, &env, http).await?;
    eprintln!(
        "soak-live: {} displays at speed x{:.3} (feeds every {:.0} ms), serve pid {pid}, broker {mqtt}, files in {}",
        o.displays,
        o.speed(),
        PLAY_EVERY_S * 1000.0 / o.speed(),
        dir.display()
    );
    let fleets = start_fleets(o, &dir, &mqtt)?;
    let ramp_s = o.displays as f64 / (o.ramp * o.processes as f64);
    let online_after_s = wait_all_online(
        http,
        o.displays,
        Duration::from_secs_f64(ramp_s * 2.0 + 120.0),
    )
    .await?;
    eprintln!(
        "soak-live: all {} online after {online_after_s:.0} s; warming up",
        o.displays
    );
    tokio::time::sleep(o.warmup).await;
    let mut r = LiveReport {
        displays: o.displays,
        speed: o.speed(),
        online_after_s,
        kept: dir.clone(),
        ..LiveReport::default()
    };
    let (start, end) = measure(o, http, pid, broker_pid, &mut r).await?;
    r.window_buckets = deltas(&buckets_of(&start.0, LATENCY), &buckets_of(&end.0, LATENCY));
    r.window_stored = end.1.saturating_sub(start.1);
    r.window_s = end.2.duration_since(start.2).as_secs_f64();
    r.fleet = stop_fleets(fleets).await?;
    drain(http, &mut r).await;
    // Whatever went wrong in the checks, the window's readings are still reported.
    if let Err(e) = check_stored(o, &dir, &env, &url, &mut r).await {
        r.aborted = Some(format!("checking what was stored: {e:#}"));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(30), serve.0.wait()).await;
    r.panics = count_panics(&dir.join("serve.stderr"));
    drop(broker);
    Ok(r)
}

type Scrape = (String, u64, Instant);

async fn scrape(http: u16) -> anyhow::Result<Scrape> {
    let m = metrics(http).await?;
    let stored = metric_sum(&m, "civicast_receipts_stored_total").unwrap_or(0.0) as u64;
    Ok((m, stored, Instant::now()))
}

/// The measured window: a sample every `every`, the guard on RSS each second; the scrapes
/// at its start and its end.
async fn measure(
    o: &LiveOptions,
    http: u16,
    pid: u32,
    broker_pid: Option<u32>,
    r: &mut LiveReport,
) -> anyhow::Result<(Scrape, Scrape)> {
    let start = scrape(http).await?;
    let t0 = start.2;
    let mut next = Duration::ZERO;
    let mut before = buckets_of(&start.0, LATENCY);
    loop {
        let rss = rss_of(pid);
        if rss / 1024 > o.max_rss_mib {
            r.aborted = Some(format!("serve RSS {} MiB passed --max-rss", rss / 1024));
            break;
        }
        if t0.elapsed() >= next {
            next += o.every;
            let m = metrics(http).await.unwrap_or_default();
            let now = buckets_of(&m, LATENCY);
            let p99_s = quantile(&deltas(&before, &now), 0.99).0;
            before = now;
            let s = LiveSample {
                at_s: t0.elapsed().as_secs_f64(),
                rss_kib: rss,
                fds: open_fds(pid),
                broker_rss_kib: broker_pid.map(rss_of),
                stored: metric_sum(&m, "civicast_receipts_stored_total").unwrap_or(0.0) as u64,
                online: metric_sum(&m, "civicast_displays_online").unwrap_or(0.0) as i64,
                p99_s,
            };
            eprintln!(
                "soak-live {:>6.0} s: serve RSS {:.1} MiB, {} fds, broker RSS {:.1} MiB, {} online, {} stored, p99 {:.0} ms",
                s.at_s,
                s.rss_kib as f64 / 1024.0,
                s.fds,
                s.broker_rss_kib.unwrap_or(0) as f64 / 1024.0,
                s.online,
                s.stored,
                s.p99_s * 1000.0
            );
            r.samples.push(s);
            if t0.elapsed() >= o.duration {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok((start, scrape(http).await?))
}

/// Until the daemon has handled every acknowledged receipt, or nothing moved for 30 s.
async fn drain(http: u16, r: &mut LiveReport) {
    let mut last = (Instant::now(), u64::MAX);
    loop {
        let m = metrics(http).await.unwrap_or_default();
        let get = |n: &str| metric_sum(&m, n).unwrap_or(0.0) as u64;
        r.stored_metric = get("civicast_receipts_stored_total");
        r.duplicates = get("civicast_receipts_duplicate_total");
        r.rejected = get("civicast_receipts_rejected_total");
        r.latency_count = get("civicast_receipt_latency_seconds_count");
        let handled = r.stored_metric + r.duplicates + r.rejected;
        if handled >= r.fleet.acked && r.latency_count >= r.stored_metric {
            return;
        }
        if handled != last.1 {
            last = (Instant::now(), handled);
        } else if last.0.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "soak-live: {} acknowledged receipts not handled 30 s after the fleet stopped",
                r.fleet.acked.saturating_sub(handled)
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `receipts_all` counted, and `civicast audit plays` asked for its total.
async fn check_stored(
    o: &LiveOptions,
    dir: &Path,
    env: &[(&str, String)],
    url: &str,
    r: &mut LiveReport,
) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await?;
    // A sort, in memory: the hash aggregate PostgreSQL plans for DISTINCT from its guess of
    // 40,000 groups spills again and again at millions (minutes instead of seconds).
    sqlx::raw_sql("SET work_mem = '512MB'")
        .execute(&mut c)
        .await?;
    let (rows, distinct, played): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT (device, play)), count(*) FILTER (WHERE status = 0)
         FROM receipts_all",
    )
    .fetch_one(&mut c)
    .await
    .context("counting receipts_all")?;
    c.close().await?;
    (r.rows, r.distinct, r.played_rows) = (rows, distinct, played);
    let out = civicast_cmd(&o.civicast, dir, env)
        .args(["audit", "plays", "--format", "json"])
        .output()
        .await
        .context("running civicast audit plays")?;
    r.audit_total = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v["total"].as_i64());
    if r.audit_total.is_none() {
        eprintln!(
            "soak-live: audit plays gave no total: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

pub fn print_live(o: &LiveOptions, r: &LiveReport) {
    println!(
        "soak-live: {} displays in {} fleet processes, speed x{:.3} (= {:.0} receipts/s wanted: displays x speed / {PLAY_EVERY_S} s), all online after {:.0} s, warm-up {:.0} s, window {:.0} s",
        r.displays, o.processes, r.speed, o.rate, r.online_after_s, o.warmup.as_secs_f64(), r.window_s
    );
    println!(
        "| t (s) | serve RSS (MiB) | serve fds | Mosquitto RSS (MiB) | online | receipts stored |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for s in &r.samples {
        println!(
            "| {:.0} | {:.1} | {} | {} | {} | {} | {:.0} |",
            s.at_s,
            s.rss_kib as f64 / 1024.0,
            s.fds,
            s.broker_rss_kib
                .map_or("-".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
            s.online,
            s.stored,
            s.p99_s * 1000.0
        );
    }
    if let Some(a) = &r.aborted {
        println!("ABORTED: {a}");
    }
    let verdict = |ok: bool| if ok { "flat" } else { "GROWING" };
    println!(
        "rate {:.0} receipts/s over the window ({} in {:.0} s); RSS {}; fds {}",
        r.rate(),
        r.window_stored,
        r.window_s,
        verdict(r.rss_flat()),
        verdict(r.fds_flat())
    );
    let q = |p: f64| {
        let (v, b) = r.quantile(p);
        format!(
            "{:.0} ms (bucket <= {})",
            v * 1000.0,
            b.map_or("+Inf".into(), |b| format!("{} s", b))
        )
    };
    println!(
        "receipt latency over the window: p50 {}, p99 {}; buckets {:?}",
        q(0.5),
        q(0.99),
        r.window_buckets
    );
    println!(
        "fleet: {} online at the end, {} connect errors, {} plays seen, {} receipts sent, {} acknowledged",
        r.fleet.online, r.fleet.connect_errors, r.fleet.plays_seen, r.fleet.sent, r.fleet.acked
    );
    println!(
        "stored: receipts_all {} rows ({} distinct, {} played), daemon counted {} stored, {} duplicates, {} rejected, latency count {}; audit plays total {}; {}; panics {}",
        r.rows,
        r.distinct,
        r.played_rows,
        r.stored_metric,
        r.duplicates,
        r.rejected,
        r.latency_count,
        r.audit_total.map_or("-".into(), |t| t.to_string()),
        if r.stored_once() { "every acknowledged receipt stored once" } else { "MISMATCH" },
        r.panics
    );
    println!("files kept in {}", r.kept.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_bucket_they_fall_in() {
        // 100 observations: 60 under 1 ms, 39 in (1, 2.5] ms, 1 in (0.5, 1] s.
        let mut b = vec![0; LATENCY_BOUNDS.len() + 1];
        b[0] = 60;
        b[1] = 39;
        b[9] = 1;
        let (p50, bound) = quantile(&b, 0.5);
        assert_eq!(bound, Some(0.001));
        assert!((p50 - 0.001 * 50.0 / 60.0).abs() < 1e-9);
        assert_eq!(quantile(&b, 0.99).1, Some(0.0025));
        assert_eq!(quantile(&b, 1.0).1, Some(1.0));
    }

    #[test]
    fn the_fleets_last_line_reads_back() {
        let e = parse_fleet_end(
            "online at end 5/5, connect errors 0, configs 5, plays seen 40, receipts sent 39, receipts acknowledged 39",
        );
        assert_eq!((e.online, e.sent, e.acked, e.plays_seen), (5, 39, 39, 40));
    }

    #[test]
    fn window_buckets_are_deltas_of_cumulative_counts() {
        assert_eq!(deltas(&[1, 3, 3], &[2, 6, 7]), vec![1, 2, 1]);
    }
}
