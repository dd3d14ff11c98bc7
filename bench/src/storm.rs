//! The storm scenario: a whole city's displays connecting in the same instant and dying in
//! the same instant, against a `civicast serve` release binary on its embedded broker and
//! on a private Mosquitto, side by side in one run.
//!
//! The fleet runs in child processes (this executable, `storm-fleet`) so that it can be
//! SIGKILLed: every socket closes at once and every last will fires together. Each display
//! is a raw TCP connection driven by rumqttc's packet codecs (v4 and v5), not an event loop
//! of its own, so twenty thousand fit in a few processes.
//!
//! Owns: the daemon and Mosquitto processes it starts, their temp dir, and the fleet
//! children. Must not touch: the daemon's code (it only speaks MQTT and HTTP to the binary
//! it is given, so it measures whichever broker that binary embeds).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::fixture::{device_name, write_inventory};
use crate::report::pct;

/// The contract's default prefix; the daemon is started with it explicitly.
pub const PREFIX: &str = "civicast/v1";
/// Connections per fleet process: a process may hold 20,000 descriptors on this machine.
pub const PER_PROCESS: usize = 9_000;
/// A display that has no config this long after it began connecting starts over.
const ATTEMPT: Duration = Duration::from_secs(20);
/// How long the daemon has to count every display online, and then none.
const GAUGE_DEADLINE: Duration = Duration::from_secs(60);
const KEEP_ALIVE_S: u16 = 60;
const MAX_PACKET: usize = 1024 * 1024;

/// Which broker the daemon uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broker {
    /// The one `civicast serve` embeds (no CIVICAST_MQTT_URL).
    Embedded,
    /// A private `mosquitto` on a free loopback port.
    Mosquitto,
}

impl Broker {
    pub fn as_str(self) -> &'static str {
        match self {
            Broker::Embedded => "embedded",
            Broker::Mosquitto => "mosquitto",
        }
    }
}

impl std::str::FromStr for Broker {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Broker> {
        match s {
            "embedded" => Ok(Broker::Embedded),
            "mosquitto" => Ok(Broker::Mosquitto),
            _ => anyhow::bail!("--brokers {s:?}: expected embedded or mosquitto"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct StormOptions {
    pub displays: usize,
    pub broker: Broker,
    /// The `civicast` binary to start.
    pub civicast: PathBuf,
    /// The deadline for every display to have its config, from the storm's start.
    pub within: Duration,
}

/// What one fleet process saw, printed on its stdout as `FLEET {json}`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct FleetReport {
    /// Seconds from the start to each display's config, for those that got one.
    pub got: Vec<f64>,
    /// Attempts after a display's first.
    pub retries: u64,
    /// Displays without a config at the deadline.
    pub failures: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StormReport {
    pub broker: String,
    pub displays: usize,
    pub with_config: usize,
    /// Seconds from the start to the last config, when every display got one.
    pub last_config_s: Option<f64>,
    pub p50_s: f64,
    pub p90_s: f64,
    pub retries: u64,
    pub failures: u64,
    /// Seconds from the start until `civicast_displays_online` read the displays that got
    /// a config; None if it did not within the deadline.
    pub online_s: Option<f64>,
    /// The gauge's last reading while waiting for that.
    pub online_seen: i64,
    pub daemon_rss_mib: f64,
    /// Mosquitto's own, for the Mosquitto run.
    pub broker_rss_mib: Option<f64>,
    /// Seconds from the SIGKILL until the gauge read 0; None if it did not in 60 s.
    pub wills_s: Option<f64>,
    /// The gauge's last reading after the kill.
    pub online_left: i64,
    /// Retained presences still saying online:true after the gauge settled.
    pub stuck_online: usize,
    /// Displays with no retained presence at all.
    pub no_presence: usize,
    /// Retained presences one subscriber to `P/devices/+/status` was given, and how many of
    /// those said online.
    pub wildcard_seen: usize,
    pub wildcard_online: usize,
    /// Connections lost after their config (and made again) before the kill.
    pub dropped: u64,
    /// The daemon's open descriptors with the fleet connected, and after the kill.
    pub daemon_fds: usize,
    pub daemon_fds_after: usize,
    pub healthy_after: bool,
    pub panics: usize,
    /// Where the daemon's stderr was kept (the temp dir stays when something went wrong).
    pub kept: Option<PathBuf>,
}

impl StormReport {
    pub fn ok(&self) -> bool {
        self.failures == 0
            && self.online_s.is_some()
            && self.wills_s.is_some()
            && self.stuck_online == 0
            && self.healthy_after
            && self.panics == 0
    }
}

/// The display ids of an inventory of `n`: the first city when `n` is its size, the
/// bench's one-class fixture otherwise.
fn write_displays(dir: &Path, n: usize) -> anyhow::Result<Vec<String>> {
    let city = civicast::city::BUS_LED
        + civicast::city::BRT_SCREEN
        + civicast::city::TAXI_TOP
        + civicast::city::STOP_SCREEN;
    if n == city {
        civicast::city::write_first_city(dir).context("writing the first city")?;
        Ok(civicast::city::first_city_csv()
            .lines()
            .skip(1)
            .filter_map(|l| l.split(',').next().map(str::to_owned))
            .collect())
    } else {
        write_inventory(dir, n)?;
        Ok((0..n).map(device_name).collect())
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("reserving a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// A plain HTTP/1.1 GET on loopback: status and body.
async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    // A daemon that has wedged accepts into the listen queue and never answers.
    tokio::time::timeout(Duration::from_secs(10), http_get_now(port, path))
        .await
        .context("HTTP answer timed out")?
}

async fn http_get_now(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The sum over classes of `civicast_displays_online` in a /metrics text; None when the
/// family is not there at all.
pub fn online_sum(metrics: &str) -> Option<i64> {
    let mut seen = false;
    let mut sum = 0.0;
    for l in metrics.lines() {
        if l.starts_with("# TYPE civicast_displays_online ") {
            seen = true;
        }
        let Some(rest) = l.strip_prefix("civicast_displays_online") else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        seen = true;
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            sum += v;
        }
    }
    seen.then_some(sum.round() as i64)
}

async fn online(http: u16) -> Option<i64> {
    match http_get(http, "/metrics").await {
        Ok((200, body)) => online_sum(&body),
        _ => None,
    }
}

/// Polls the online gauge until it reads `target`; the time it did, and its last reading.
async fn wait_online(http: u16, target: i64, since: Instant) -> (Option<f64>, i64) {
    let deadline = Instant::now() + GAUGE_DEADLINE;
    let mut last = -1;
    while Instant::now() < deadline {
        if let Some(v) = online(http).await {
            last = v;
            if v == target {
                return (Some(since.elapsed().as_secs_f64()), v);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (None, last)
}

/// VmRSS of a process, KiB.
fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn probe(port: u16) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let id = format!("civicast-bench-storm-{}", ulid::Ulid::new());
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    rumqttc::AsyncClient::new(o, 16)
}

/// Polls `ev` for retained publishes into `got` until `done(got)`, or nothing came for
/// `quiet`, or `end`.
async fn collect(
    ev: &mut rumqttc::EventLoop,
    got: &mut HashMap<String, Vec<u8>>,
    quiet: Duration,
    end: Instant,
    done: impl Fn(&HashMap<String, Vec<u8>>) -> bool,
) {
    let mut last = Instant::now();
    while !done(got) && Instant::now() < end && last.elapsed() < quiet {
        match tokio::time::timeout(Duration::from_millis(100), ev.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)))) => {
                if p.retain {
                    got.insert(p.topic.clone(), p.payload.to_vec());
                    last = Instant::now();
                }
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "storm probe lost its connection");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Every retained message under one wildcard `filter`, as a dashboard would read them, by
/// a fresh client, until `want` arrived or nothing came for `quiet`.
async fn retained_wildcard(
    port: u16,
    filter: &str,
    want: usize,
    quiet: Duration,
) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let (c, mut ev) = probe(port);
    // QoS 0: a QoS 1 subscription is held to the broker's in-flight window.
    c.subscribe(filter, rumqttc::QoS::AtMostOnce).await?;
    let mut got = HashMap::new();
    let end = Instant::now() + Duration::from_secs(60);
    collect(&mut ev, &mut got, quiet, end, |g| g.len() >= want).await;
    let _ = c.try_disconnect();
    Ok(got)
}

/// The retained message of each of `topics`, by fresh clients subscribing to 100 topics
/// at a time (a broker may hand one wildcard subscriber no more retained messages than its
/// outgoing queue holds: rumqttd 0.20, 200), passes repeated for the missing ones until
/// `deadline`.
async fn retained_each(
    port: u16,
    topics: &[String],
    deadline: Duration,
) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let end = Instant::now() + deadline;
    let mut got = HashMap::new();
    loop {
        let missing: Vec<&String> = topics.iter().filter(|t| !got.contains_key(*t)).collect();
        if missing.is_empty() || Instant::now() >= end {
            return Ok(got);
        }
        let (c, mut ev) = probe(port);
        for chunk in missing.chunks(100) {
            let filters = chunk
                .iter()
                .map(|t| rumqttc::SubscribeFilter::new((*t).clone(), rumqttc::QoS::AtMostOnce));
            // The request queue drains only while the event loop is polled (in `collect`);
            // against a broker that stopped answering it fills, so bound the wait.
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero()
                || tokio::time::timeout(left, c.subscribe_many(filters))
                    .await
                    .is_err()
            {
                break;
            }
            collect(&mut ev, &mut got, Duration::from_secs(1), end, |g| {
                chunk.iter().all(|t| g.contains_key(*t))
            })
            .await;
        }
        let _ = c.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(200), ev.poll()).await;
    }
}

/// Kills a child at the end of a run, whatever happened.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn mosquitto_conf(port: u16) -> String {
    // As the ingest runs' Mosquitto (BENCHMARKS.md "Commands"): its default queue of 1,000
    // QoS 1 messages per subscriber would drop the daemon's share of a storm of wills.
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n\
         max_inflight_messages 0\npersistence false\nlog_dest stderr\nlog_type error\n\
         log_type warning\n"
    )
}

async fn wait_port(port: u16, within: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("nothing listened on 127.0.0.1:{port} within {within:?}")
}

/// One broker at one size: setup, connect storm, gauge, RSS, mass disconnect, checks.
pub async fn storm(o: &StormOptions) -> anyhow::Result<StormReport> {
    let civicast = std::fs::canonicalize(&o.civicast)
        .with_context(|| format!("--civicast {}: build it first", o.civicast.display()))?;
    let dir = std::env::temp_dir().join(format!("civicast-storm-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir)?;
    storm_in(o, &civicast, dir.clone()).await.with_context(|| {
        format!(
            "storm on {} (files kept in {})",
            o.broker.as_str(),
            dir.display()
        )
    })
}

async fn storm_in(o: &StormOptions, civicast: &Path, dir: PathBuf) -> anyhow::Result<StormReport> {
    let ids = write_displays(&dir, o.displays)?;
    let n = ids.len();
    let (mqtt, http) = (free_port()?, free_port()?);

    let mut mosquitto = None;
    if o.broker == Broker::Mosquitto {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(&conf, mosquitto_conf(mqtt))?;
        let err = std::fs::File::create(dir.join("mosquitto.stderr"))?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .context("starting mosquitto")?;
        mosquitto = Some(Kid(child));
        wait_port(mqtt, Duration::from_secs(10)).await?;
    }

    let stderr_path = dir.join("civicast.stderr");
    let mut cmd = Command::new(civicast);
    cmd.arg("serve").current_dir(&dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("CIVICAST_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("CIVICAST_HTTP_LISTEN", format!("127.0.0.1:{http}"))
        .env(
            "CIVICAST_DATABASE_URL",
            format!("sqlite://{}", dir.join("civicast.db").display()),
        )
        .env("CIVICAST_PREFIX", PREFIX)
        // The daemon's own default filter: what an operator would see. A panic reaches
        // stderr through the panic hook, not tracing; one line each, without a backtrace.
        .env_remove("CIVICAST_LOG")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    match o.broker {
        Broker::Embedded => cmd.env("CIVICAST_MQTT_LISTEN", format!("127.0.0.1:{mqtt}")),
        Broker::Mosquitto => cmd.env("CIVICAST_MQTT_URL", format!("mqtt://127.0.0.1:{mqtt}")),
    };
    let daemon = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("civicast.stdout"))?)
        .stderr(std::fs::File::create(&stderr_path)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} serve", civicast.display()))?;
    let daemon_pid = daemon.id().context("the daemon exited at once")?;
    let mut daemon = Kid(daemon);

    let up = Instant::now();
    loop {
        if let Ok((200, _)) = http_get(http, "/healthz").await {
            break;
        }
        if let Ok(Some(status)) = daemon.0.try_wait() {
            anyhow::bail!(
                "civicast serve exited ({status}) before /healthz; see {}",
                stderr_path.display()
            );
        }
        if up.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("no /healthz 200 within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let config_topics: Vec<String> = ids
        .iter()
        .map(|id| format!("{PREFIX}/devices/{id}/config"))
        .collect();
    let configs = retained_each(mqtt, &config_topics, Duration::from_secs(120)).await?;
    if configs.len() < n {
        anyhow::bail!(
            "only {} of {n} retained configs on the broker",
            configs.len()
        );
    }
    eprintln!(
        "storm {}: {n} displays, daemon up and {n} configs retained after {:.1} s",
        o.broker.as_str(),
        up.elapsed().as_secs_f64()
    );

    // The fleet, in processes of at most PER_PROCESS connections, each waiting for "go".
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut kids = Vec::new();
    let mut outs = Vec::new();
    for (i, chunk) in ids.chunks(PER_PROCESS).enumerate() {
        let f = dir.join(format!("fleet-{i}.ids"));
        std::fs::write(&f, chunk.join("\n"))?;
        let mut c = Command::new(&exe)
            .args([
                "storm-fleet",
                "--mqtt",
                &format!("127.0.0.1:{mqtt}"),
                "--ids",
            ])
            .arg(&f)
            .args(["--within", &o.within.as_secs().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting a fleet process")?;
        let out = BufReader::new(c.stdout.take().context("fleet stdout")?).lines();
        outs.push(out);
        kids.push(Kid(c));
    }
    for out in &mut outs {
        expect_line(out, "READY", Duration::from_secs(60)).await?;
    }
    let t0 = Instant::now();
    for k in &mut kids {
        if let Some(stdin) = k.0.stdin.as_mut() {
            stdin.write_all(b"go\n").await?;
            stdin.flush().await?;
        }
    }
    let mut fleet = FleetReport::default();
    for out in &mut outs {
        let line = expect_line(out, "FLEET ", o.within + Duration::from_secs(60)).await?;
        let r: FleetReport = serde_json::from_str(&line)?;
        fleet.got.extend(r.got);
        fleet.retries += r.retries;
        fleet.failures += r.failures;
    }
    let drops: Vec<Arc<AtomicU64>> = outs
        .into_iter()
        .map(|mut out| {
            let d = Arc::new(AtomicU64::new(0));
            let seen = d.clone();
            tokio::spawn(async move {
                while let Ok(Some(l)) = out.next_line().await {
                    if let Some(n) = l.strip_prefix("DROPPED ").and_then(|n| n.parse().ok()) {
                        seen.store(n, Ordering::Relaxed);
                    }
                }
            });
            d
        })
        .collect();
    let with_config = fleet.got.len();
    let last_config_s = (with_config == n).then(|| fleet.got.iter().copied().fold(0.0, f64::max));
    let (online_s, online_seen) = wait_online(http, with_config as i64, t0).await;
    let daemon_kib = rss_of(daemon_pid);
    let daemon_fds = open_fds(daemon_pid);
    let dropped: u64 = drops.iter().map(|d| d.load(Ordering::Relaxed)).sum();
    let broker_kib = mosquitto.as_ref().and_then(|m| m.0.id()).map(rss_of);

    // Every display dies in the same instant.
    let killed = Instant::now();
    for k in &mut kids {
        let _ = k.0.start_kill();
    }
    for k in &mut kids {
        let _ = k.0.wait().await;
    }
    let (wills_s, online_left) = wait_online(http, 0, killed).await;
    let wildcard = retained_wildcard(
        mqtt,
        &format!("{PREFIX}/devices/+/status"),
        n,
        Duration::from_secs(5),
    )
    .await?;
    let status_topics: Vec<String> = ids
        .iter()
        .map(|id| format!("{PREFIX}/devices/{id}/status"))
        .collect();
    let presence = retained_each(mqtt, &status_topics, Duration::from_secs(60)).await?;
    let says_online = |m: &HashMap<String, Vec<u8>>| {
        m.values()
            .filter(|p| civicast::core::wire::parse_presence(p).is_some_and(|p| p.online))
            .count()
    };
    let stuck_online = says_online(&presence);
    let daemon_fds_after = open_fds(daemon_pid);
    let healthy_after = matches!(http_get(http, "/healthz").await, Ok((200, _)));
    let _ = daemon.0.start_kill();
    let _ = daemon.0.wait().await;
    let panics = count_panics(&stderr_path);
    drop(mosquitto);

    let mut r = StormReport {
        broker: o.broker.as_str().into(),
        displays: n,
        with_config,
        last_config_s,
        p50_s: pct(fleet.got.clone(), 0.5),
        p90_s: pct(fleet.got, 0.9),
        retries: fleet.retries,
        failures: fleet.failures,
        online_s,
        online_seen,
        daemon_rss_mib: mib(daemon_kib),
        broker_rss_mib: broker_kib.map(mib),
        wills_s,
        online_left,
        stuck_online,
        no_presence: n.saturating_sub(presence.len()),
        wildcard_seen: wildcard.len(),
        dropped,
        daemon_fds,
        daemon_fds_after,
        wildcard_online: says_online(&wildcard),
        healthy_after,
        panics,
        kept: None,
    };
    if r.ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        r.kept = Some(dir);
    }
    Ok(r)
}

/// Lines of the daemon's stderr that speak of a panic, read a line at a time (the file
/// can be large).
fn count_panics(path: &Path) -> usize {
    use std::io::BufRead;
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    std::io::BufReader::new(f)
        .split(b'\n')
        .map_while(Result::ok)
        .filter(|l| l.windows(5).any(|w| w.eq_ignore_ascii_case(b"panic")))
        .count()
}

/// The rest of the first line on `out` that starts with `prefix`.
async fn expect_line(
    out: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
    within: Duration,
) -> anyhow::Result<String> {
    let find = async {
        while let Some(l) = out.next_line().await? {
            if let Some(rest) = l.strip_prefix(prefix) {
                return Ok(rest.to_owned());
            }
        }
        anyhow::bail!("a fleet process ended without {prefix:?}")
    };
    tokio::time::timeout(within, find)
        .await
        .with_context(|| format!("no {prefix:?} from a fleet process within {within:?}"))?
}

pub fn print_storm(rows: &[StormReport]) {
    let s = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2}"));
    println!(
        "| broker | displays | last config, s | p50, s | p90, s | retries | failures | online gauge exact, s | RSS, MiB | wills processed, s | stuck online | healthy after | panics |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for r in rows {
        let online = match r.online_s {
            Some(v) => format!("{v:.2}"),
            None => format!("- ({} of {})", r.online_seen, r.with_config),
        };
        let wills = match r.wills_s {
            Some(v) => format!("{v:.2}"),
            None => format!("- ({} left)", r.online_left),
        };
        let rss = match r.broker_rss_mib {
            Some(b) => format!(
                "{:.1} (daemon {:.1} + mosquitto {:.1})",
                r.daemon_rss_mib + b,
                r.daemon_rss_mib,
                b
            ),
            None => format!("{:.1}", r.daemon_rss_mib),
        };
        let stuck = if r.no_presence > 0 {
            format!("{} ({} without presence)", r.stuck_online, r.no_presence)
        } else {
            r.stuck_online.to_string()
        };
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.broker,
            r.displays,
            s(r.last_config_s),
            r.p50_s,
            r.p90_s,
            r.retries,
            r.failures,
            online,
            rss,
            wills,
            stuck,
            if r.healthy_after { "yes" } else { "NO" },
            r.panics
        );
    }
    for r in rows {
        println!(
            "{} {}: one subscriber to devices/+/status was given {} retained presences ({} online); per topic {} of {}; {} connections lost after their config and made again; daemon fds {} connected, {} after the kill",
            r.broker,
            r.displays,
            r.wildcard_seen,
            r.wildcard_online,
            r.displays - r.no_presence,
            r.displays,
            r.dropped,
            r.daemon_fds,
            r.daemon_fds_after
        );
    }
    for r in rows.iter().filter(|r| r.kept.is_some()) {
        if let Some(k) = &r.kept {
            println!("{} {}: kept {}", r.broker, r.displays, k.display());
        }
    }
}

// ---- the fleet side ----

/// MQTT 3.1.1 or 5, alternating over the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V4,
    V5,
}

/// What a display needs to tell apart among the packets it receives.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    ConnAck { ok: bool },
    Publish { topic: String, pkid: u16 },
    Other,
}

pub fn offline_payload() -> &'static str {
    r#"{"v":1,"online":false}"#
}

pub fn online_payload(since: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        r#"{{"v":1,"online":true,"since":"{}"}}"#,
        since.to_rfc3339()
    )
}

/// A display's CONNECT: its id as client id, clean session, its last will retained QoS 1.
pub fn encode_connect(v: Version, id: &str, buf: &mut BytesMut) -> anyhow::Result<()> {
    let will_topic = format!("{PREFIX}/devices/{id}/status");
    match v {
        Version::V4 => {
            let mut c = v4::Connect::new(id);
            c.keep_alive = KEEP_ALIVE_S;
            c.clean_session = true;
            c.last_will = Some(v4::LastWill::new(
                will_topic,
                offline_payload(),
                rumqttc::QoS::AtLeastOnce,
                true,
            ));
            c.write(buf).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        Version::V5 => {
            let c = v5::Connect {
                keep_alive: KEEP_ALIVE_S,
                client_id: id.to_owned(),
                clean_start: true,
                properties: None,
            };
            let will = Some(v5::LastWill::new(
                will_topic,
                offline_payload(),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                true,
                None,
            ));
            c.write(&will, &None, buf)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    Ok(())
}

fn encode_subscribe(v: Version, topic: &str, buf: &mut BytesMut) -> anyhow::Result<()> {
    match v {
        Version::V4 => {
            let mut s = v4::Subscribe::new(topic, rumqttc::QoS::AtLeastOnce);
            s.pkid = 1;
            s.write(buf).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        Version::V5 => {
            let f = v5::Filter::new(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
            let mut s = v5::Subscribe::new(f, None);
            s.pkid = 1;
            s.write(buf).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    Ok(())
}

fn encode_presence(
    v: Version,
    topic: &str,
    payload: String,
    buf: &mut BytesMut,
) -> anyhow::Result<()> {
    match v {
        Version::V4 => {
            let mut p = v4::Publish::new(topic, rumqttc::QoS::AtLeastOnce, payload);
            p.retain = true;
            p.pkid = 2;
            p.write(buf).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        Version::V5 => {
            let mut p = v5::Publish::new(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                payload,
                None,
            );
            p.retain = true;
            p.pkid = 2;
            p.write(buf).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    Ok(())
}

fn encode_puback(v: Version, pkid: u16, buf: &mut BytesMut) -> anyhow::Result<()> {
    match v {
        Version::V4 => v4::PubAck::new(pkid).write(buf),
        Version::V5 => {
            return v5::PubAck::new(pkid, None)
                .write(buf)
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{e:?}"))
        }
    }
    .map(|_| ())
    .map_err(|e| anyhow::anyhow!("{e:?}"))
}

fn encode_ping(v: Version, buf: &mut BytesMut) -> anyhow::Result<()> {
    match v {
        Version::V4 => v4::PingReq
            .write(buf)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{e:?}")),
        Version::V5 => v5::PingReq::write(buf)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{e:?}")),
    }
}

/// The next whole packet in `buf`, or None until more bytes arrive.
pub fn decode(v: Version, buf: &mut BytesMut) -> anyhow::Result<Option<Incoming>> {
    match v {
        Version::V4 => match v4::Packet::read(buf, MAX_PACKET) {
            Ok(v4::Packet::ConnAck(a)) => Ok(Some(Incoming::ConnAck {
                ok: a.code == v4::ConnectReturnCode::Success,
            })),
            Ok(v4::Packet::Publish(p)) => Ok(Some(Incoming::Publish {
                topic: p.topic,
                pkid: if p.qos == rumqttc::QoS::AtMostOnce {
                    0
                } else {
                    p.pkid
                },
            })),
            Ok(_) => Ok(Some(Incoming::Other)),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => anyhow::bail!("{e:?}"),
        },
        Version::V5 => match v5::Packet::read(buf, Some(MAX_PACKET as u32)) {
            Ok(v5::Packet::ConnAck(a)) => Ok(Some(Incoming::ConnAck {
                ok: a.code == v5::ConnectReturnCode::Success,
            })),
            Ok(v5::Packet::Publish(p)) => Ok(Some(Incoming::Publish {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                pkid: if p.qos == rumqttc::v5::mqttbytes::QoS::AtMostOnce {
                    0
                } else {
                    p.pkid
                },
            })),
            Ok(_) => Ok(Some(Incoming::Other)),
            Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => anyhow::bail!("{e:?}"),
        },
    }
}

/// One display's connection.
struct Conn {
    v: Version,
    s: TcpStream,
    rx: BytesMut,
    tx: BytesMut,
}

impl Conn {
    async fn flush(&mut self) -> anyhow::Result<()> {
        self.s.write_all(&self.tx).await?;
        self.tx.clear();
        Ok(())
    }

    /// The next packet, acknowledging QoS 1 publishes on the way.
    async fn next(&mut self) -> anyhow::Result<Incoming> {
        loop {
            if let Some(p) = decode(self.v, &mut self.rx)? {
                if let Incoming::Publish { pkid, .. } = &p {
                    if *pkid != 0 {
                        encode_puback(self.v, *pkid, &mut self.tx)?;
                        self.flush().await?;
                    }
                }
                return Ok(p);
            }
            if self.s.read_buf(&mut self.rx).await? == 0 {
                anyhow::bail!("the broker closed the connection");
            }
        }
    }
}

/// Connects, subscribes to its config and waits for it; the connection on success.
async fn attempt(v: Version, addr: &str, id: &str, config: &str) -> anyhow::Result<Conn> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut c = Conn {
        v,
        s,
        rx: BytesMut::with_capacity(512),
        tx: BytesMut::with_capacity(256),
    };
    encode_connect(v, id, &mut c.tx)?;
    c.flush().await?;
    loop {
        match c.next().await? {
            Incoming::ConnAck { ok: true } => break,
            Incoming::ConnAck { ok: false } => anyhow::bail!("CONNACK refused"),
            _ => {}
        }
    }
    encode_subscribe(v, config, &mut c.tx)?;
    c.flush().await?;
    loop {
        if let Incoming::Publish { topic, .. } = c.next().await? {
            if topic == config {
                return Ok(c);
            }
        }
    }
}

struct Tally {
    got: Mutex<Vec<f64>>,
    retries: AtomicU64,
    failures: AtomicU64,
    done: AtomicU64,
    /// Connections lost after the config, each made again.
    drops: AtomicU64,
}

/// One display: connect until it has its config (or the deadline), then its presence, then
/// stay connected (answering and pinging) until the process is killed. A connection lost
/// after that is counted as a drop and made again, as a display in the street would: on a
/// slow broker the CONNECT of an attempt given up on can be read after the next one's and
/// take the session over from it.
async fn display(
    i: usize,
    id: String,
    addr: Arc<str>,
    t0: Instant,
    within: Duration,
    t: Arc<Tally>,
) {
    let v = if i.is_multiple_of(2) {
        Version::V4
    } else {
        Version::V5
    };
    let config = format!("{PREFIX}/devices/{id}/config");
    let status = format!("{PREFIX}/devices/{id}/status");
    let mut first = true;
    let mut connected_once = false;
    loop {
        let mut c = loop {
            if !connected_once && t0.elapsed() >= within {
                t.failures.fetch_add(1, Ordering::Relaxed);
                t.done.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if !first && !connected_once {
                t.retries.fetch_add(1, Ordering::Relaxed);
            }
            first = false;
            let left = if connected_once {
                ATTEMPT
            } else {
                within.saturating_sub(t0.elapsed()).min(ATTEMPT)
            };
            match tokio::time::timeout(left, attempt(v, &addr, &id, &config)).await {
                Ok(Ok(c)) => break c,
                Ok(Err(e)) => {
                    tracing::debug!(display = %id, error = %e, "storm attempt failed");
                    // Spread the retries a little so they do not come back as one wave.
                    let ms = 100 + (i as u64 * 7919) % 400;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Err(_) => {}
            }
        };
        if !connected_once {
            connected_once = true;
            if let Ok(mut g) = t.got.lock() {
                g.push(t0.elapsed().as_secs_f64());
            }
            t.done.fetch_add(1, Ordering::Relaxed);
        }
        if encode_presence(v, &status, online_payload(chrono::Utc::now()), &mut c.tx).is_ok()
            && c.flush().await.is_ok()
        {
            let mut ping = tokio::time::interval(Duration::from_secs(u64::from(KEEP_ALIVE_S) / 2));
            ping.tick().await;
            loop {
                tokio::select! {
                    r = c.next() => if r.is_err() { break },
                    _ = ping.tick() => {
                        if encode_ping(v, &mut c.tx).is_err() || c.flush().await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        t.drops.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100 + (i as u64 * 7919) % 400)).await;
    }
}

/// `storm-fleet`: the displays listed in `ids`, READY on stdout, then all at once on "go"
/// from stdin; `FLEET {json}` when each has its config or gave up; then held open, with a
/// `DROPPED n` line each time the count of lost connections changes, until killed.
pub async fn fleet_process(mqtt: &str, ids: &Path, within: Duration) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(ids).with_context(|| format!("reading {}", ids.display()))?;
    let ids: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let n = ids.len() as u64;
    println!("READY");
    let mut line = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    let t0 = Instant::now();
    let addr: Arc<str> = Arc::from(mqtt.trim_start_matches("mqtt://"));
    let t = Arc::new(Tally {
        got: Mutex::new(Vec::with_capacity(ids.len())),
        retries: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        done: AtomicU64::new(0),
        drops: AtomicU64::new(0),
    });
    for (i, id) in ids.into_iter().enumerate() {
        tokio::spawn(display(i, id, addr.clone(), t0, within, t.clone()));
    }
    while t.done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = FleetReport {
        got: t.got.lock().map(|g| g.clone()).unwrap_or_default(),
        retries: t.retries.load(Ordering::Relaxed),
        failures: t.failures.load(Ordering::Relaxed),
    };
    println!("FLEET {}", serde_json::to_string(&r)?);
    // Held open: the parent kills this process to drop every connection at once. Until
    // then it says how many connections were lost since the config and made again.
    let mut said = 0;
    loop {
        let d = t.drops.load(Ordering::Relaxed);
        if d != said {
            println!("DROPPED {d}");
            said = d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_v4_connect_carries_the_retained_offline_will() {
        let mut b = BytesMut::new();
        encode_connect(Version::V4, "taxi-0007", &mut b).expect("encode");
        let Ok(v4::Packet::Connect(c)) = v4::Packet::read(&mut b, MAX_PACKET) else {
            panic!("not a CONNECT");
        };
        assert_eq!(c.client_id, "taxi-0007");
        assert!(c.clean_session);
        let w = c.last_will.expect("a will");
        assert_eq!(w.topic, "civicast/v1/devices/taxi-0007/status");
        assert_eq!(&w.message[..], br#"{"v":1,"online":false}"#);
        assert_eq!(w.qos, rumqttc::QoS::AtLeastOnce);
        assert!(w.retain);
    }

    #[test]
    fn a_v5_connect_carries_the_retained_offline_will() {
        let mut b = BytesMut::new();
        encode_connect(Version::V5, "bus-K1-0421", &mut b).expect("encode");
        assert_eq!(b[8], 5, "protocol level 5");
        let Ok(v5::Packet::Connect(c, Some(w), None)) = v5::Packet::read(&mut b, None) else {
            panic!("not a CONNECT with a will");
        };
        assert_eq!(c.client_id, "bus-K1-0421");
        assert!(c.clean_start);
        assert_eq!(&w.topic[..], b"civicast/v1/devices/bus-K1-0421/status");
        assert_eq!(&w.message[..], br#"{"v":1,"online":false}"#);
        assert_eq!(w.qos, rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
        assert!(w.retain);
    }

    #[test]
    fn the_presence_is_what_the_daemon_parses_as_online() {
        let p = online_payload(chrono::Utc::now());
        let parsed = civicast::core::wire::parse_presence(p.as_bytes()).expect("presence");
        assert!(parsed.online);
        let off = civicast::core::wire::parse_presence(offline_payload().as_bytes()).expect("will");
        assert!(!off.online);
    }

    #[test]
    fn a_split_packet_waits_for_its_rest() {
        let mut whole = BytesMut::new();
        let mut p = v4::Publish::new(
            "civicast/v1/devices/a/config",
            rumqttc::QoS::AtLeastOnce,
            "{}",
        );
        p.pkid = 7;
        p.write(&mut whole).expect("encode");
        let mut b = BytesMut::from(&whole[..5]);
        assert_eq!(decode(Version::V4, &mut b).expect("decode"), None);
        b.extend_from_slice(&whole[5..]);
        assert_eq!(
            decode(Version::V4, &mut b).expect("decode"),
            Some(Incoming::Publish {
                topic: "civicast/v1/devices/a/config".into(),
                pkid: 7
            })
        );
    }

    #[test]
    fn the_online_gauge_sums_its_classes() {
        let m = "# HELP civicast_displays_online Displays whose presence says online, by class.\n\
                 # TYPE civicast_displays_online gauge\n\
                 civicast_displays_online{class=\"taxi_top\"} 1611\n\
                 civicast_displays_online{class=\"bus_led\"} 887\n\
                 civicast_displays_online_other 5\n\
                 civicast_reloads_total 0\n";
        assert_eq!(online_sum(m), Some(2498));
        let empty = "# TYPE civicast_displays_online gauge\ncivicast_reloads_total 0\n";
        assert_eq!(online_sum(empty), Some(0), "no class yet is zero");
        assert_eq!(online_sum("civicast_reloads_total 0\n"), None);
    }
}
