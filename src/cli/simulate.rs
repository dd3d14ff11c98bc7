//! `civicast simulate`: a fleet of simulated displays, one MQTT connection each, against
//! any broker; prints how fast it came online and what it saw.
//!
//! Owns: the fleet's progress output. Must not touch the store: it is an outside client.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{load_catalog, EXIT_CONFIG};
use crate::core::catalog;
use crate::settings::Settings;
use crate::sim::{self, SimDisplay, SimStats};

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// The broker, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: String,
    /// Time compression of on-screen time, as the daemon's feeds are configured.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Displays powering on per second.
    #[arg(long, default_value_t = 400.0)]
    pub ramp: f64,
    /// Stop after this long (40s, 10m), or at SIGTERM / Ctrl-C, whichever comes first.
    #[arg(long, default_value = "60s")]
    pub duration: String,
    /// Only part of the fleet, `K/N`: the displays whose position in the inventory is K
    /// modulo N, so that N processes (each under its descriptor limit) share a city.
    #[arg(long)]
    pub shard: Option<String>,
}

/// `K/N` with K < N.
fn parse_shard(s: &str) -> Option<(usize, usize)> {
    let (k, n) = s.split_once('/')?;
    let (k, n) = (k.trim().parse().ok()?, n.trim().parse().ok()?);
    (k < n).then_some((k, n))
}

/// Resolves at SIGTERM or Ctrl-C: a parent stops its fleets with a signal, and the fleet
/// still says what it sent.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub async fn run(settings: Settings, a: SimulateArgs) -> anyhow::Result<ExitCode> {
    let duration = match catalog::parse_duration(&a.duration) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("civicast: --duration: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let Some((host, port)) = a
        .mqtt
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
    else {
        eprintln!("civicast: --mqtt wants host:port");
        return Ok(ExitCode::from(2));
    };
    let catalog = match load_catalog(&settings.devices, &settings.schedules) {
        Ok(c) => c,
        Err(n) => {
            eprintln!("civicast: {n} errors in devices/ or schedules/");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let mut displays = SimDisplay::fleet(&catalog);
    if let Some(shard) = &a.shard {
        let Some((k, n)) = parse_shard(shard) else {
            eprintln!("civicast: --shard wants K/N with K < N, e.g. 0/4");
            return Ok(ExitCode::from(2));
        };
        displays = displays.into_iter().skip(k).step_by(n).collect();
    }
    let total = displays.len();
    let stats = Arc::new(SimStats::default());
    let stop = CancellationToken::new();
    let fleet = sim::spawn_fleet(sim::Fleet {
        displays,
        host,
        port,
        prefix: settings.prefix.clone(),
        time_scale: 1.0 / a.speed,
        per_second: a.ramp,
        stats: stats.clone(),
        stop: stop.clone(),
    });
    watch(&stats, total, duration).await;
    stats.stopping.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    fleet.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), fleet.wait()).await;
    print_end(&stats, total);
    Ok(ExitCode::SUCCESS)
}

/// Prints progress each second until `duration` has passed or a stop signal came.
async fn watch(stats: &SimStats, total: usize, duration: Duration) {
    let t0 = Instant::now();
    let signalled = stop_signal();
    tokio::pin!(signalled);
    let mut all_online = None;
    let mut ticks = 0u64;
    while t0.elapsed() < duration {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut signalled => break,
        }
        let online = stats.online.load(Ordering::Relaxed) as usize;
        ticks += 1;
        if ticks.is_multiple_of(10) {
            eprintln!(
                "{:>4.0}s online {online}/{total}, configs {}, plays seen {}, receipts sent {}, connect errors {}",
                t0.elapsed().as_secs_f64(),
                stats.configs.load(Ordering::Relaxed),
                stats.plays_seen.load(Ordering::Relaxed),
                stats.receipts_sent.load(Ordering::Relaxed),
                stats.connect_errors.load(Ordering::Relaxed)
            );
        }
        if all_online.is_none() && online == total {
            all_online = Some(t0.elapsed());
            println!(
                "all {total} displays online after {:.2} s",
                t0.elapsed().as_secs_f64()
            );
        }
    }
}

/// The last line, the same words each time: a parent that runs several fleets adds these.
fn print_end(stats: &SimStats, total: usize) {
    println!(
        "online at end {}/{total}, connect errors {}, configs {}, plays seen {}, receipts sent {}, receipts acknowledged {}",
        stats.online.load(Ordering::Relaxed),
        stats.connect_errors.load(Ordering::Relaxed),
        stats.configs.load(Ordering::Relaxed),
        stats.plays_seen.load(Ordering::Relaxed),
        stats.receipts_sent.load(Ordering::Relaxed),
        stats.receipts_acked()
    );
}
