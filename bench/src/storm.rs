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
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::fixture::{device_name, write_inventory};
use crate::report::pct;
use crate::storm_fleet::{retained_each, retained_wildcard};

/// The contract's default prefix; the daemon is started with it explicitly.
pub const PREFIX: &str = "civicast/v1";
/// Connections per fleet process: a process may hold 20,000 descriptors on this machine.
pub const PER_PROCESS: usize = 9_000;
/// A display that has no config this long after it began connecting starts over.
pub(crate) const ATTEMPT: Duration = Duration::from_secs(20);
/// How long the daemon has to count every display online, and then none.
pub(crate) const GAUGE_DEADLINE: Duration = Duration::from_secs(60);
pub(crate) const KEEP_ALIVE_S: u16 = 60;
pub(crate) const MAX_PACKET: usize = 1024 * 1024;

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

pub(crate) fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("reserving a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// A plain HTTP/1.1 GET on loopback: status and body.
pub(crate) async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
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
pub(crate) fn rss_of(pid: u32) -> u64 {
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

pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Kills a child at the end of a run, whatever happened.
pub(crate) struct Kid(pub(crate) Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

pub(crate) fn mosquitto_conf(port: u16) -> String {
    // As the ingest runs' Mosquitto (BENCHMARKS.md "Commands"): its default queue of 1,000
    // QoS 1 messages per subscriber would drop the daemon's share of a storm of wills.
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n\
         max_inflight_messages 0\npersistence false\nlog_dest stderr\nlog_type error\n\
         log_type warning\n"
    )
}

pub(crate) async fn wait_port(port: u16, within: Duration) -> anyhow::Result<()> {
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
pub(crate) fn count_panics(path: &Path) -> usize {
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
