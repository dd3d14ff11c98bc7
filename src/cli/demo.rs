//! `civicast demo`: the whole loop on one machine: the embedded broker, a SQLite file and a
//! simulated fleet of the first city, with a live progress line and the play counts at the
//! end.
//!
//! Owns: the demo's own choices (a fresh database, time compression, the fleet, the
//! progress line). Must not start the daemon any other way than `daemon::App::start`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::{bind, load_catalog, shutdown_signal, EXIT_CONFIG};
use crate::core::audit::{PlaysParams, PlaysQuery};
use crate::core::catalog;
use crate::daemon::{App, Listeners, Startup};
use crate::settings::Settings;
use crate::sim::{self, SimDisplay, SimStats};
use crate::store::{ApiStore, DatabaseUrl, Db, Store};

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Time compression: 3 minutes become 180/N seconds.
    #[arg(long, default_value_t = 30.0)]
    pub speed: f64,
    /// Stop after this long (40s, 10m); default: run until Ctrl-C.
    #[arg(long)]
    pub duration: Option<String>,
    /// The embedded broker's address (default: a free loopback port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub mqtt_listen: String,
    /// The HTTP API's address (default: a free loopback port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub http_listen: String,
    /// Displays powering on per second (the first city's 3,149 within about 2 s).
    #[arg(long, default_value_t = 2000.0)]
    pub ramp: f64,
    /// Where devices/ and schedules/ are (written with the first city if missing).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The demo's database (recreated at each run).
    #[arg(long, default_value = "civicast-demo.db")]
    pub database: PathBuf,
    /// The demo's log (recreated at each run; default: civicast-demo.log beside --database).
    /// CIVICAST_LOG sets what goes in it.
    #[arg(long)]
    pub log: Option<PathBuf>,
}

impl DemoArgs {
    /// The log file, absolute, as the demo prints it.
    pub fn log_path(&self) -> PathBuf {
        let p = self
            .log
            .clone()
            .unwrap_or_else(|| self.database.with_file_name("civicast-demo.log"));
        std::path::absolute(&p).unwrap_or(p)
    }

    /// Creates the log file afresh, before anything logs.
    pub fn open_log(&self) -> anyhow::Result<std::fs::File> {
        let p = self.log_path();
        std::fs::File::create(&p).with_context(|| format!("creating the demo log {}", p.display()))
    }
}

pub async fn run(settings: Settings, a: DemoArgs) -> anyhow::Result<ExitCode> {
    if !(a.speed > 0.0 && a.speed.is_finite()) {
        eprintln!("civicast: --speed must be a positive number");
        return Ok(ExitCode::from(2));
    }
    let duration = match a
        .duration
        .as_deref()
        .map(catalog::parse_duration)
        .transpose()
    {
        Ok(d) => d,
        Err(e) => {
            eprintln!("civicast: --duration: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    println!("logs: {}", a.log_path().display());
    for p in crate::city::write_first_city(&a.dir)? {
        println!("wrote {}", p.display());
    }
    let catalog = match load_catalog(&a.dir.join("devices"), &a.dir.join("schedules")) {
        Ok(c) => c,
        Err(n) => {
            eprintln!("civicast: {n} errors in the demo's devices/ or schedules/");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let displays = SimDisplay::fleet(&catalog);
    let (app, store, settings) = start(settings, &a, catalog).await?;
    let demo = Demo {
        app,
        store,
        settings,
        scale: 1.0 / a.speed,
        total: displays.len(),
        stats: Arc::new(SimStats::default()),
        started: Instant::now(),
    };
    demo.announce(&a).await?;
    let addr = demo.app.mqtt_addr().context("embedded broker address")?;
    let fleet_stop = CancellationToken::new();
    let fleet = sim::spawn_fleet(sim::Fleet {
        displays,
        host: addr.ip().to_string(),
        port: addr.port(),
        prefix: demo.settings.prefix.clone(),
        time_scale: demo.scale,
        per_second: a.ramp,
        stats: demo.stats.clone(),
        stop: fleet_stop.clone(),
    });
    demo.progress(duration).await;
    demo.settle().await;
    let elapsed = demo.started.elapsed();
    fleet_stop.cancel();
    fleet.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), fleet.wait()).await;
    demo.summary(elapsed).await?;
    Ok(ExitCode::SUCCESS)
}

/// A fresh demo database, the embedded broker whatever `CIVICAST_MQTT_URL` says, and the
/// daemon started on them with time compressed.
async fn start(
    mut settings: Settings,
    a: &DemoArgs,
    catalog: crate::core::model::Catalog,
) -> anyhow::Result<(App, Db, Settings)> {
    settings.devices = a.dir.join("devices");
    settings.schedules = a.dir.join("schedules");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", a.database.display()));
    }
    settings.database = DatabaseUrl::sqlite_file(&a.database);
    let mqtt = bind(&a.mqtt_listen).await?;
    settings.broker = crate::settings::Broker::Embedded {
        listen: mqtt.local_addr()?,
    };
    let listeners = Listeners {
        mqtt: Some(mqtt),
        http: Some(bind(&a.http_listen).await?),
    };
    let store = Db::open(&settings.database).await?;
    let app = App::start(Startup {
        listeners,
        time_scale: 1.0 / a.speed,
        ..Startup::new(settings.clone(), store.clone(), catalog)
    })
    .await?;
    Ok((app, store, settings))
}

/// A running demo: the daemon, its store, and the simulated fleet's counters.
struct Demo {
    app: App,
    store: Db,
    settings: Settings,
    scale: f64,
    total: usize,
    stats: Arc<SimStats>,
    started: Instant,
}

impl Demo {
    /// A new token of `role` named `name`, stored; the token itself.
    async fn token(&self, name: &str, role: crate::store::Role) -> anyhow::Result<String> {
        let token = crate::api::new_token();
        self.store
            .create_token(
                name,
                role,
                &crate::api::token_hash(&token),
                chrono::Utc::now().timestamp_millis(),
            )
            .await?;
        Ok(token)
    }

    /// Prints where to connect, the console's address and a token of each role to try.
    async fn announce(&self, a: &DemoArgs) -> anyhow::Result<()> {
        let addr = self.app.mqtt_addr().context("embedded broker address")?;
        let http_addr = self.app.http_addr().context("HTTP API address")?;
        let auditor = self
            .token("demo-auditor", crate::store::Role::Auditor)
            .await?;
        let operator = self
            .token("demo-operator", crate::store::Role::Operator)
            .await?;
        println!(
            "embedded MQTT broker: mqtt://{addr} (MQTT 3.1.1 and 5; outside displays may join)"
        );
        println!("HTTP API: http://{http_addr}/api/v1 (auditor token: {auditor})");
        println!("  curl -H 'Authorization: Bearer {auditor}' 'http://{http_addr}/api/v1/audit/plays?group_by=class'");
        // The links sign in once opened from outside a site, then the console redirects to
        // `/` so the token leaves the address bar (src/console/pages/signin.rs).
        println!("console: http://{http_addr}/");
        println!("  sign in as an operator: http://{http_addr}/?token={operator}");
        println!("  sign in as an auditor:  http://{http_addr}/?token={auditor}");
        println!("database: {}", self.settings.database);
        println!(
            "{} displays powering on at {} a second; speed x{}",
            self.total, a.ramp, a.speed
        );
        Ok(())
    }

    /// A progress line each second until `duration` has passed or a signal arrives.
    async fn progress(&self, duration: Option<Duration>) {
        let m = self.app.metrics();
        let tty = std::io::stderr().is_terminal();
        let mut last = (Instant::now(), 0u64);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let stop = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stop);
        let signal = shutdown_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = &mut signal => break,
                _ = tick.tick() => {}
            }
            let stored = m.receipts_stored.load(Ordering::Relaxed);
            let rate = (stored - last.1) as f64 / last.0.elapsed().as_secs_f64().max(0.001);
            last = (Instant::now(), stored);
            let line = self.line(stored, rate);
            if tty {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
        }
        if tty {
            eprintln!();
        }
    }

    fn line(&self, stored: u64, rate: f64) -> String {
        let m = self.app.metrics();
        let by_class = m
            .online_by_class
            .lock()
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        format!(
            "{:>5.0}s online {}/{} [{by_class}] plays {} receipts {} ({rate:.0}/s) rejects {}",
            self.started.elapsed().as_secs_f64(),
            self.stats.online.load(Ordering::Relaxed),
            self.total,
            m.plays_published.load(Ordering::Relaxed),
            stored,
            m.rejects_total(),
        )
    }

    /// Stops answering plays, lets the last scrolls finish and their receipts land.
    async fn settle(&self) {
        let m = self.app.metrics();
        self.stats.stopping.store(true, Ordering::Relaxed);
        let settle = Instant::now() + Duration::from_secs_f64(15.0 * self.scale + 2.0);
        loop {
            let sent = self.stats.receipts_sent.load(Ordering::Relaxed);
            let handled = m.receipts_stored.load(Ordering::Relaxed)
                + m.receipts_duplicate.load(Ordering::Relaxed)
                + m.rejects_total();
            if Instant::now() > settle && handled >= sent {
                break;
            }
            if Instant::now() > settle + Duration::from_secs(10) {
                eprintln!(
                    "civicast: {} receipts sent but not yet stored at exit",
                    sent.saturating_sub(handled)
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the daemon and prints the play counts per class and slogan.
    async fn summary(self, elapsed: Duration) -> anyhow::Result<()> {
        let m = self.app.metrics().clone();
        self.app.stop();
        self.app.wait().await;
        let q = PlaysQuery::parse(
            &PlaysParams {
                group_by: Some("class,slogan".into()),
                ..Default::default()
            },
            chrono_tz::Asia::Shanghai,
        )?;
        let rows = self.store.audit_plays(&q).await?;
        println!();
        print!("{}", crate::reports::format::plays_table(&q, &rows));
        let stored = m.receipts_stored.load(Ordering::Relaxed);
        println!(
            "{} plays published, {} receipts stored in {:.0} s ({:.0}/s), {} duplicates, {} rejected; displays sent {}",
            m.plays_published.load(Ordering::Relaxed),
            stored,
            elapsed.as_secs_f64(),
            stored as f64 / elapsed.as_secs_f64().max(0.001),
            m.receipts_duplicate.load(Ordering::Relaxed),
            m.rejects_total(),
            self.stats.receipts_sent.load(Ordering::Relaxed),
        );
        println!(
            "audit it again: CIVICAST_DATABASE_URL={} civicast audit plays --group-by class,slogan",
            self.settings.database
        );
        Ok(())
    }
}
