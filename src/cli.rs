//! The `civicast` command line: argument parsing and the glue that runs each command. The
//! binary's `main` only calls `cli::main`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::core::audit::{self, PlaysParams, PlaysQuery};
use crate::core::catalog;
use crate::core::model::Catalog;
use crate::daemon::{App, Listeners, Startup};
use crate::settings::Settings;
use crate::sim::{self, SimDisplay, SimStats};
use crate::store::{ApiStore, DatabaseUrl, Db, Store};

/// Exit code for bad configuration (sysexits EX_USAGE-style, as linkerd does).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "civicast",
    version,
    about = "Keeps public-service slogans rotating on a city's displays and proves every play"
)]
pub struct Cli {
    /// A config file (TOML) with the same keys as the CIVICAST_* variables, lower-case
    /// without the prefix; the environment wins.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the daemon: broker (embedded unless CIVICAST_MQTT_URL is set), rotation, receipts.
    Serve,
    /// Validate devices/ and schedules/ and list every problem; exit 1 on errors.
    Check {
        /// A folder holding devices/ and schedules/ (default: CIVICAST_DEVICES and
        /// CIVICAST_SCHEDULES).
        dir: Option<PathBuf>,
    },
    /// Audits of what was played.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// The whole loop on one machine: embedded broker, a SQLite file and a simulated fleet
    /// of the first city, one MQTT connection per display.
    Demo(DemoArgs),
    /// API tokens: create, list, revoke.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Run a simulated fleet of displays (one MQTT connection each) against a broker.
    Simulate(SimulateArgs),
    /// Write the first city's inventory, classes, feeds and an ad set where missing.
    Init {
        /// Where to write devices/ and schedules/.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Play counts, grouped and filtered.
    Plays(PlaysArgs),
    /// Per-display rotation compliance: online time, plays, mean interval, longest gap.
    Compliance(ComplianceArgs),
    /// The weekly inspection sample, stratified by class, with each display's evidence.
    Sample(SampleArgs),
    /// Planned versus played per feed and day, the shortfall by reason.
    Reconcile(ReconcileArgs),
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token; it is printed once, as the last line.
    Create {
        #[arg(long)]
        role: String,
        /// Who holds it (approvals are by a different name than the upload's).
        #[arg(long)]
        name: Option<String>,
    },
    /// List tokens (never the tokens themselves).
    List,
    /// Revoke a token by id or name.
    Revoke { id_or_name: String },
}

#[derive(Args, Debug)]
pub struct ComplianceArgs {
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub class: Option<String>,
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// ISO week, e.g. 2026-W48 (default: this week).
    #[arg(long)]
    pub week: Option<String>,
    #[arg(long)]
    pub seed: Option<String>,
    #[arg(long)]
    pub per_class: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub feed: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Args, Debug)]
pub struct PlaysArgs {
    /// Comma list of slogan, adset, device, class, feed, day, hour.
    #[arg(long)]
    pub group_by: Option<String>,
    /// RFC 3339 time or a date (inclusive).
    #[arg(long)]
    pub from: Option<String>,
    /// RFC 3339 time or a date (exclusive).
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub class: Option<String>,
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub slogan: Option<String>,
    #[arg(long)]
    pub feed: Option<String>,
    /// played (default), skipped, expired or failed.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// The deployment's time zone for days and hours.
    #[arg(long, default_value = "Asia/Shanghai")]
    pub timezone: String,
}

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
    /// Stop after this long (40s, 10m).
    #[arg(long, default_value = "60s")]
    pub duration: String,
}

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
    /// Displays powering on per second.
    #[arg(long, default_value_t = 400.0)]
    pub ramp: f64,
    /// Where devices/ and schedules/ are (written with the first city if missing).
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The demo's database (recreated at each run).
    #[arg(long, default_value = "civicast-demo.db")]
    pub database: PathBuf,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(cli.cmd, Cmd::Serve));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("civicast: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("civicast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(serving: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if serving {
        "info,rumqttd=warn"
    } else {
        "warn,rumqttd=error"
    };
    let filter =
        EnvFilter::try_from_env("CIVICAST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("CIVICAST_LOG_FORMAT").as_deref() == Ok("json") {
        b.json().init();
    } else {
        b.init();
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            for e in &e.0 {
                eprintln!("civicast: bad configuration: {e}");
            }
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    match cli.cmd {
        Cmd::Serve => serve(settings).await,
        Cmd::Check { dir } => {
            let (d, s) = match dir {
                Some(root) => (root.join("devices"), root.join("schedules")),
                None => (settings.devices.clone(), settings.schedules.clone()),
            };
            let report = crate::files::load_dirs(&d, &s);
            print_problems(&report.problems);
            let (e, w) = (report.errors(), report.warnings());
            match &report.catalog {
                Some(c) if e == 0 => {
                    println!(
                        "ok: {} displays, {} classes, {} feeds, {} ad sets ({w} warnings)",
                        c.devices.len(),
                        c.classes.len(),
                        c.feeds.len(),
                        c.adsets.len()
                    );
                    Ok(ExitCode::SUCCESS)
                }
                _ => {
                    println!("{e} errors, {w} warnings");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Cmd::Audit(AuditCmd::Plays(a)) => audit_plays(&settings, a).await,
        Cmd::Audit(cmd) => audit_report(&settings, cmd).await,
        Cmd::Token(cmd) => token(&settings, cmd).await,
        Cmd::Demo(a) => demo(settings, a).await,
        Cmd::Simulate(a) => simulate(settings, a).await,
        Cmd::Init { dir } => {
            for p in crate::city::write_first_city(&dir)? {
                println!("wrote {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn print_problems(problems: &[catalog::Problem]) {
    for p in problems {
        eprintln!("{p}");
    }
}

/// Loads and validates the operators' files, or says why not.
fn load_catalog(devices: &Path, schedules: &Path) -> Result<Catalog, usize> {
    let report = crate::files::load_dirs(devices, schedules);
    print_problems(&report.problems);
    match report.catalog {
        Some(c) if report.errors() == 0 => Ok(c),
        _ => Err(report.errors()),
    }
}

/// The configured database URL, typed; a scheme the store does not speak is bad
/// configuration, said as the settings' own errors are (the exit code is the error).
fn database_url(settings: &Settings) -> Result<DatabaseUrl, ExitCode> {
    DatabaseUrl::parse(&settings.database_url).map_err(|e| {
        eprintln!("civicast: bad configuration: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    let catalog = match load_catalog(&settings.devices, &settings.schedules) {
        Ok(c) => c,
        Err(n) => {
            eprintln!("civicast: refusing to start: {n} errors in devices/ or schedules/");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let url = match database_url(&settings) {
        Ok(url) => url,
        Err(code) => return Ok(code),
    };
    let store = Db::open(&url).await?;
    serve_with(store, settings, catalog).await
}

async fn serve_with(store: Db, settings: Settings, catalog: Catalog) -> anyhow::Result<ExitCode> {
    let listeners = Listeners::bind(&settings).await?;
    let app = App::start(Startup {
        listeners,
        ..Startup::new(settings, store, catalog)
    })
    .await?;
    shutdown_signal().await;
    info!("shutting down: draining requests, committing pending receipts");
    app.stop();
    app.wait().await;
    Ok(ExitCode::SUCCESS)
}

async fn audit_plays(settings: &Settings, a: PlaysArgs) -> anyhow::Result<ExitCode> {
    let tz: chrono_tz::Tz = match a.timezone.parse() {
        Ok(tz) => tz,
        Err(_) => {
            eprintln!(
                "civicast: --timezone {:?} is not a time zone name",
                a.timezone
            );
            return Ok(ExitCode::from(2));
        }
    };
    let params = PlaysParams {
        from: a.from,
        to: a.to,
        group_by: a.group_by,
        class: a.class,
        device: a.device,
        slogan: a.slogan,
        feed: a.feed,
        status: a.status,
    };
    let q = match PlaysQuery::parse(&params, tz) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("civicast: --{}: {}", e.field.replace('_', "-"), e.message);
            return Ok(ExitCode::from(2));
        }
    };
    let url = match database_url(settings) {
        Ok(url) => url,
        Err(code) => return Ok(code),
    };
    let store = Db::open(&url).await?;
    store.migrate().await?;
    let rows = store.audit_plays(&q).await?;
    let out = match a.format {
        Format::Json => serde_json::to_string_pretty(&audit::answer(&q, &rows))? + "\n",
        Format::Csv => audit::csv(&q, &rows)?,
        Format::Table => audit::table(&q, &rows),
    };
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

async fn demo(mut settings: Settings, a: DemoArgs) -> anyhow::Result<ExitCode> {
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
    let scale = 1.0 / a.speed;
    settings.devices = a.dir.join("devices");
    settings.schedules = a.dir.join("schedules");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", a.database.display()));
    }
    settings.database_url = format!("sqlite://{}", a.database.display());
    let mqtt = bind(&a.mqtt_listen).await?;
    // The demo's fleet is on the embedded broker, whatever CIVICAST_MQTT_URL says.
    settings.broker = crate::settings::Broker::Embedded {
        listen: mqtt.local_addr()?,
    };
    let listeners = Listeners {
        mqtt: Some(mqtt),
        http: Some(bind(&a.http_listen).await?),
    };
    let store = Db::open(&DatabaseUrl::parse(&settings.database_url)?).await?;
    let displays = SimDisplay::fleet(&catalog);
    let total = displays.len();
    let app = App::start(Startup {
        listeners,
        time_scale: scale,
        ..Startup::new(settings.clone(), store.clone(), catalog)
    })
    .await?;
    let addr = app.mqtt_addr().context("embedded broker address")?;
    let http_addr = app.http_addr().context("HTTP API address")?;
    let auditor = crate::api::new_token();
    store
        .create_token(
            "demo-auditor",
            crate::store::Role::Auditor,
            &crate::api::token_hash(&auditor),
            chrono::Utc::now().timestamp_millis(),
        )
        .await?;
    println!("embedded MQTT broker: mqtt://{addr} (MQTT 3.1.1 and 5; outside displays may join)");
    println!("HTTP API: http://{http_addr}/api/v1 (auditor token: {auditor})");
    println!("  curl -H 'Authorization: Bearer {auditor}' 'http://{http_addr}/api/v1/audit/plays?group_by=class'");
    println!("database: {}", settings.database_url);
    println!(
        "{total} displays powering on at {} a second; speed x{}",
        a.ramp, a.speed
    );
    let stats = Arc::new(SimStats::default());
    let fleet_stop = CancellationToken::new();
    let fleet = sim::spawn_fleet(
        displays,
        addr.ip().to_string(),
        addr.port(),
        &settings.prefix,
        scale,
        a.ramp,
        stats.clone(),
        fleet_stop.clone(),
    );
    let started = Instant::now();
    let m = app.metrics().clone();
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
        let line = format!(
            "{:>5.0}s online {}/{total} [{by_class}] plays {} receipts {} ({rate:.0}/s) rejects {}",
            started.elapsed().as_secs_f64(),
            stats.online.load(Ordering::Relaxed),
            m.plays_published.load(Ordering::Relaxed),
            stored,
            m.rejects_total(),
        );
        if tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
    if tty {
        eprintln!();
    }
    // Stop answering plays, let the last scrolls finish and their receipts land.
    stats.stopping.store(true, Ordering::Relaxed);
    let settle = Instant::now() + Duration::from_secs_f64(15.0 * scale + 2.0);
    loop {
        let sent = stats.receipts_sent.load(Ordering::Relaxed);
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
    let elapsed = started.elapsed();
    fleet_stop.cancel();
    fleet.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), fleet.wait()).await;
    app.stop();
    app.wait().await;

    let q = PlaysQuery::parse(
        &PlaysParams {
            group_by: Some("class,slogan".into()),
            ..Default::default()
        },
        chrono_tz::Asia::Shanghai,
    )?;
    let rows = store.audit_plays(&q).await?;
    println!();
    print!("{}", audit::table(&q, &rows));
    let stored = m.receipts_stored.load(Ordering::Relaxed);
    println!(
        "{} plays published, {} receipts stored in {:.0} s ({:.0}/s), {} duplicates, {} rejected; displays sent {}",
        m.plays_published.load(Ordering::Relaxed),
        stored,
        elapsed.as_secs_f64(),
        stored as f64 / elapsed.as_secs_f64().max(0.001),
        m.receipts_duplicate.load(Ordering::Relaxed),
        m.rejects_total(),
        stats.receipts_sent.load(Ordering::Relaxed),
    );
    println!(
        "audit it again: CIVICAST_DATABASE_URL={} civicast audit plays --group-by class,slogan",
        settings.database_url
    );
    Ok(ExitCode::SUCCESS)
}

async fn simulate(settings: Settings, a: SimulateArgs) -> anyhow::Result<ExitCode> {
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
    let displays = SimDisplay::fleet(&catalog);
    let total = displays.len();
    let stats = Arc::new(SimStats::default());
    let stop = CancellationToken::new();
    let t0 = Instant::now();
    let fleet = sim::spawn_fleet(
        displays,
        host,
        port,
        &settings.prefix,
        1.0 / a.speed,
        a.ramp,
        stats.clone(),
        stop.clone(),
    );
    let mut all_online = None;
    let mut ticks = 0u64;
    while t0.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let online = stats.online.load(Ordering::Relaxed) as usize;
        ticks += 1;
        if ticks % 10 == 0 {
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
    stats.stopping.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    fleet.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), fleet.wait()).await;
    println!(
        "online at end {}/{total}, connect errors {}, configs {}, plays seen {}, receipts sent {}",
        stats.online.load(Ordering::Relaxed),
        stats.connect_errors.load(Ordering::Relaxed),
        stats.configs.load(Ordering::Relaxed),
        stats.plays_seen.load(Ordering::Relaxed),
        stats.receipts_sent.load(Ordering::Relaxed)
    );
    Ok(ExitCode::SUCCESS)
}

fn emit<T: serde::Serialize>(
    format: Format,
    answer: &T,
    columns: &[&str],
    rows: &[impl serde::Serialize],
) -> anyhow::Result<()> {
    let out = match format {
        Format::Json => serde_json::to_string_pretty(answer)? + "\n",
        Format::Csv => crate::reports::csv_of(columns, rows)?,
        Format::Table => crate::reports::table_of(columns, rows),
    };
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
}

async fn audit_report(settings: &Settings, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    let catalog = match load_catalog(&settings.devices, &settings.schedules) {
        Ok(c) => c,
        Err(n) => {
            eprintln!("civicast: {n} errors in devices/ or schedules/");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let url = match database_url(settings) {
        Ok(url) => url,
        Err(code) => return Ok(code),
    };
    let store = Db::open(&url).await?;
    audit_report_with(store, catalog, cmd).await
}

async fn audit_report_with(store: Db, catalog: Catalog, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    use crate::reports;
    store.migrate().await?;
    let now = chrono::Utc::now();
    let factors = Default::default();
    let fail = |e: reports::ReportError| -> anyhow::Result<ExitCode> {
        match e {
            reports::ReportError::Query(q) => {
                eprintln!("civicast: --{}: {}", q.field.replace('_', "-"), q.message);
                Ok(ExitCode::from(2))
            }
            reports::ReportError::Store(s) => Err(s.into()),
        }
    };
    match cmd {
        AuditCmd::Plays(_) => unreachable!("handled by audit_plays"),
        AuditCmd::Compliance(a) => {
            let p = reports::ComplianceParams {
                from: a.from,
                to: a.to,
                class: a.class,
                device: a.device,
            };
            match reports::compliance_report(&store, &catalog, &p, now, factors).await {
                Ok(ans) => emit(a.format, &ans, &reports::COMPLIANCE_COLUMNS, &ans.rows)?,
                Err(e) => return fail(e),
            }
        }
        AuditCmd::Sample(a) => {
            let p = reports::SampleParams {
                week: a.week,
                seed: a.seed,
                per_class: a.per_class,
            };
            match reports::sample_report(&store, &catalog, &p, now, factors).await {
                Ok(ans) => emit(a.format, &ans, &reports::SAMPLE_COLUMNS, &ans.rows)?,
                Err(e) => return fail(e),
            }
        }
        AuditCmd::Reconcile(a) => {
            let p = reports::ReconcileParams {
                from: a.from,
                to: a.to,
                feed: a.feed,
            };
            match reports::reconcile_report(&store, &catalog, &p, now).await {
                Ok(ans) => emit(a.format, &ans, &reports::RECONCILE_COLUMNS, &ans.rows)?,
                Err(e) => return fail(e),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn token(settings: &Settings, cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    let url = match database_url(settings) {
        Ok(url) => url,
        Err(code) => return Ok(code),
    };
    let store = Db::open(&url).await?;
    token_with(store, cmd).await
}

async fn token_with(store: Db, cmd: TokenCmd) -> anyhow::Result<ExitCode> {
    use crate::store::Role;
    store.migrate().await?;
    let now = chrono::Utc::now().timestamp_millis();
    match cmd {
        TokenCmd::Create { role, name } => {
            let Some(r) = Role::parse(&role) else {
                eprintln!("civicast: --role {role:?}: use operator, auditor or admin");
                return Ok(ExitCode::from(2));
            };
            let token = crate::api::new_token();
            let name = name.unwrap_or_else(|| format!("{}-{}", r.as_str(), &token[4..10]));
            let id = store
                .create_token(&name, r, &crate::api::token_hash(&token), now)
                .await?;
            println!(
                "token {id} for {name:?}, role {}: keep it secret, it is not shown again",
                r.as_str()
            );
            println!("{token}");
        }
        TokenCmd::List => {
            for t in store.tokens().await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    t.id,
                    t.name,
                    t.role.as_str(),
                    if t.revoked_ms.is_some() {
                        "revoked"
                    } else {
                        "live"
                    }
                );
            }
        }
        TokenCmd::Revoke { id_or_name } => {
            let n = store.revoke_token(&id_or_name, now).await?;
            if n == 0 {
                eprintln!("civicast: no live token {id_or_name:?}");
                return Ok(ExitCode::from(1));
            }
            println!("revoked {n} token(s)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
