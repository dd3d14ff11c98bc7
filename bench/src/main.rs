//! The `civicast-bench` command line: `civicast-bench [--config FILE] SCENARIO [OPTIONS]`,
//! the same scenarios, options and output as the `civicast bench` it replaces; the settings
//! come from the same CIVICAST_* variables and config file as the daemon's.
//!
//! Owns: argument parsing and which scenario runs, including the memory scenario's one
//! child process per size (this same executable). Must not touch: the scenarios' work (the
//! library's modules do it).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use civicast::settings::Settings;
use civicast_bench::report::machine;
use civicast_bench::{
    audit, audit_pg, ingest, load_pg, load_sqlite, memory_one, print_audit, print_ingest,
    print_load, print_memory, print_pg_load, print_pg_storage, print_soak, print_storage,
    print_storm, soak, storage, storage_pg, storm, Broker, IngestOptions, LoadOptions,
    MemoryReport, SoakOptions, StormOptions,
};
use clap::{Args, Parser, ValueEnum};

/// Exit code for bad configuration, as `civicast` answers it.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser, Debug)]
#[command(
    name = "civicast-bench",
    version,
    about = "Benchmarks of BENCHMARKS.md (ingest, audit, storage, memory), each beside a baseline measured in the same run"
)]
struct Cli {
    /// A config file (TOML) with the same keys as the CIVICAST_* variables, lower-case
    /// without the prefix; the environment wins.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    bench: BenchArgs,
}

/// Which scenario runs.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Scenario {
    Ingest,
    Audit,
    Storage,
    Memory,
    /// The audit load, then play counts by display and hour as CSV and XLSX downloads.
    Download,
    /// The audit load (or --reuse of it), then every console page --runs times, auditor
    /// pages beside the API's answer and the store's read.
    Console,
    /// The demo city at --speed for --duration, RSS and open fds sampled every --every.
    Soak,
    /// A city connecting at once and dying at once, on the embedded broker and on Mosquitto.
    Storm,
    /// `civicast serve` on Mosquitto and PostgreSQL, a fleet of `civicast simulate`
    /// processes at --rate receipts a second for --duration, stored receipts checked.
    SoakLive,
    /// The receipt log: commit_batch with and without it (rate, ratio), its bytes per
    /// receipt, and audit verify's time; --displays, --plays rounds, --database.
    Log,
    /// One size of the memory scenario, in this process (the parent spawns one per size).
    #[value(hide = true)]
    MemoryOne,
    /// Part of the storm's fleet, in this process (the parent spawns several and kills them).
    #[value(hide = true)]
    StormFleet,
}

#[derive(Args, Debug, Clone)]
struct BenchArgs {
    #[arg(value_enum)]
    scenario: Scenario,
    /// audit/storage: receipts in the synthetic history (default 1,000,000).
    #[arg(long)]
    receipts: Option<u64>,
    /// ingest: simulated displays (default 500); audit/storage: displays in the history
    /// (default 3,000); memory: inventory sizes, comma-separated (default 100000,1000000);
    /// storm: fleet sizes, comma-separated (default 3149, the first city).
    #[arg(long, value_delimiter = ',')]
    displays: Vec<u64>,
    /// ingest: plays each display acknowledges (default 40).
    #[arg(long)]
    plays: Option<u64>,
    /// ingest, audit, storage: a PostgreSQL database (`postgres://...`; tables go in a fresh
    /// schema: `civicast_bench_ingest`, `civicast_bench_audit`); default a SQLite file under --dir.
    #[arg(long)]
    database: Option<String>,
    /// ingest: an external broker `host:port` (e.g. Mosquitto at 127.0.0.1:1883) instead of
    /// the embedded one; memory --daemon: the same (use a private broker: the daemon leaves
    /// one retained config per display under `civicast-bench/<ulid>`).
    #[arg(long)]
    mqtt: Option<String>,
    /// Where the bench writes its databases and generated inventories.
    #[arg(long, default_value = "bench-data")]
    dir: PathBuf,
    /// audit: timed runs of each query through the store.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// audit: timed runs of each naive query; 0 skips them (answers "not checked": at 100 M
    /// a naive scan takes about 25 s a query on SQLite).
    #[arg(long, default_value_t = 3)]
    naive_runs: usize,
    /// audit (SQLite): timed runs of the naive compliance fold, when it should differ from
    /// --naive-runs (at 100 M the fold takes seconds, the 18 naive play counts half an hour).
    #[arg(long)]
    naive_compliance_runs: Option<usize>,
    /// audit (SQLite): ask the questions of the database a previous run left under --dir
    /// (same --receipts and --displays) instead of loading a new one; storage is not measured
    #[arg(long)]
    reuse: bool,
    /// memory: start the whole daemon (embedded broker included unless --mqtt), not only the
    /// catalog and the store's inventory sync.
    #[arg(long)]
    daemon: bool,
    /// soak: time compression, as `civicast demo --speed`.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// soak: how long (10m, 1h).
    #[arg(long, default_value = "1h")]
    duration: String,
    /// soak: time between samples.
    #[arg(long, default_value = "1m")]
    every: String,
    /// soak: displays powering on per second.
    #[arg(long, default_value_t = 400.0)]
    ramp: f64,
    /// soak: stop and fail when RSS passes this many MiB (checked each second).
    #[arg(long, default_value_t = 4096)]
    max_rss: u64,
    /// soak-live: fleet processes the displays are shared over (each under 20,000 fds).
    #[arg(long, default_value_t = 4)]
    processes: usize,
    /// soak-live: feeds the displays are spread over (1 to 300).
    #[arg(long, default_value_t = 300)]
    feeds: usize,
    /// soak-live: receipts a second (default a million displays' 1,000,000 / 180 s).
    #[arg(long, default_value_t = civicast_bench::soak_live::MILLION_RATE)]
    rate: f64,
    /// soak-live: from every display online to the measured window.
    #[arg(long, default_value = "2m")]
    warmup: String,
    /// storm: the brokers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "embedded,mosquitto")]
    brokers: Vec<String>,
    /// storm: the `civicast` binary to start.
    #[arg(long, default_value = "target/release/civicast")]
    civicast: PathBuf,
    /// storm: seconds for every display to have its config.
    #[arg(long, default_value_t = 60)]
    within: u64,
    /// log: load only the database with the log and leave it under --dir as `with.db` (or
    /// its schema) for `civicast audit verify` to be timed on its own; no baseline, no verify.
    #[arg(long)]
    load_only: bool,
    /// storm-fleet: the display ids, one a line.
    #[arg(long, hide = true)]
    ids: Option<PathBuf>,
}

/// One scenario, as `civicast bench ...` ran it.
async fn run(settings: Settings, a: BenchArgs) -> anyhow::Result<ExitCode> {
    if a.scenario == Scenario::StormFleet {
        return run_scenario(settings, a).await;
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    println!("civicast bench {:?} on {}", a.scenario, machine());
    run_scenario(settings, a).await
}

async fn run_scenario(settings: Settings, a: BenchArgs) -> anyhow::Result<ExitCode> {
    match a.scenario {
        Scenario::Log => {
            use civicast_bench::receipt_log::{print_receipt_log, receipt_log, LogOptions};
            let o = LogOptions {
                displays: a.displays.first().copied().unwrap_or(20_000).max(1) as usize,
                rounds: a.plays.unwrap_or(5).max(1) as usize,
                batch: settings.batch_max,
                feed_size: 500,
                load_only: a.load_only,
            };
            let pg = a.database.as_deref().filter(|u| u.starts_with("postgres"));
            let r = receipt_log(&a.dir, pg, &o).await?;
            print_receipt_log(&o, &r);
            Ok(exit(r.verify_ok))
        }
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
        Scenario::Download => {
            let o = LoadOptions {
                receipts: a.receipts.unwrap_or(1_000_000),
                displays: a.displays.first().copied().unwrap_or(3_000).max(1),
                ..LoadOptions::default()
            };
            let (store, load) = load_sqlite(&a.dir.join("download.db"), &o).await?;
            print_load(&load);
            let runs = civicast_bench::download::download_runs(&store).await?;
            civicast_bench::download::print_downloads(&runs);
            Ok(ExitCode::SUCCESS)
        }
        Scenario::Console => {
            let o = LoadOptions {
                receipts: a.receipts.unwrap_or(1_000_000),
                displays: a.displays.first().copied().unwrap_or(3_000).max(1),
                ..LoadOptions::default()
            };
            let path = a.dir.join("audit.db");
            let store = if a.reuse {
                let store =
                    civicast::store::SqliteStore::connect(&format!("sqlite://{}", path.display()))
                        .await?;
                civicast::store::Store::migrate(&store).await?;
                civicast_bench::write_timelines(&store, &o).await?;
                store
            } else {
                let (store, load) = load_sqlite(&path, &o).await?;
                print_load(&load);
                store
            };
            let receipts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM receipts")
                .fetch_one(store.pool())
                .await?;
            let pages = civicast_bench::console::console(&store, &o, a.runs.max(1)).await?;
            civicast_bench::console::print_console(receipts, &pages);
            Ok(exit(pages.iter().all(|p| p.status == 200)))
        }
        Scenario::Audit | Scenario::Storage => {
            if let Some(url) = a.database.as_deref().filter(|u| u.starts_with("postgres")) {
                return run_pg(&a, url).await;
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
            if a.reuse && a.scenario == Scenario::Audit {
                let store =
                    civicast::store::SqliteStore::connect(&format!("sqlite://{}", path.display()))
                        .await?;
                civicast::store::Store::migrate(&store).await?;
                let t = std::time::Instant::now();
                let days = civicast_bench::write_timelines(&store, &o).await?;
                eprintln!(
                    "audit: {days} closed days' timelines written in {:.1} s",
                    t.elapsed().as_secs_f64()
                );
                let r = audit(
                    &store,
                    &o,
                    a.runs.max(1),
                    (
                        a.naive_runs,
                        a.naive_compliance_runs.unwrap_or(a.naive_runs),
                    ),
                )
                .await?;
                print_audit(&r);
                return Ok(exit(r.identical()));
            }
            let (store, load) = load_sqlite(&path, &o).await?;
            print_load(&load);
            let s = storage(&store, &load).await?;
            print_storage(&s);
            if a.scenario == Scenario::Audit {
                let r = audit(
                    &store,
                    &o,
                    a.runs.max(1),
                    (
                        a.naive_runs,
                        a.naive_compliance_runs.unwrap_or(a.naive_runs),
                    ),
                )
                .await?;
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
                cmd.args(["memory-one", "--displays", &n.to_string(), "--dir"])
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
        Scenario::Soak => {
            let parse = |what: &str, v: &str| {
                civicast::core::catalog::parse_duration(v)
                    .map_err(|e| anyhow::anyhow!("--{what} {v:?}: {e}"))
            };
            let o = SoakOptions {
                speed: a.speed,
                duration: parse("duration", &a.duration)?,
                every: parse("every", &a.every)?,
                ramp: a.ramp,
                dir: a.dir.join("soak"),
                max_rss_mib: a.max_rss,
            };
            let r = soak(&settings, &o).await?;
            print_soak(&o, &r);
            Ok(exit(r.ok()))
        }
        Scenario::Storm => {
            let brokers = a
                .brokers
                .iter()
                .map(|b| b.parse::<Broker>())
                .collect::<anyhow::Result<Vec<_>>>()?;
            let sizes = if a.displays.is_empty() {
                vec![3_149]
            } else {
                a.displays.clone()
            };
            let mut rows = Vec::new();
            for n in sizes {
                for &broker in &brokers {
                    let o = StormOptions {
                        displays: n as usize,
                        broker,
                        civicast: a.civicast.clone(),
                        within: std::time::Duration::from_secs(a.within),
                    };
                    eprintln!("storm: {n} displays on {}...", broker.as_str());
                    rows.push(storm(&o).await?);
                }
            }
            print_storm(&rows);
            Ok(exit(rows.iter().all(|r| r.ok())))
        }
        Scenario::SoakLive => {
            let parse = |what: &str, v: &str| {
                civicast::core::catalog::parse_duration(v)
                    .map_err(|e| anyhow::anyhow!("--{what} {v:?}: {e}"))
            };
            let o = civicast_bench::soak_live::LiveOptions {
                displays: a.displays.first().copied().unwrap_or(19_800) as usize,
                processes: a.processes,
                rate: a.rate,
                duration: parse("duration", &a.duration)?,
                warmup: parse("warmup", &a.warmup)?,
                every: parse("every", &a.every)?,
                ramp: a.ramp,
                feeds: a.feeds,
                mqtt: a.mqtt.clone(),
                database: a
                    .database
                    .clone()
                    .filter(|d| d.starts_with("postgres"))
                    .context("soak-live: --database postgres://... is required")?,
                civicast: std::fs::canonicalize(&a.civicast).with_context(|| {
                    format!("--civicast {}: build it first", a.civicast.display())
                })?,
                dir: a.dir.clone(),
                max_rss_mib: a.max_rss,
            };
            let r = civicast_bench::soak_live::soak_live(&o).await?;
            civicast_bench::soak_live::print_live(&o, &r);
            Ok(exit(r.ok()))
        }
        Scenario::StormFleet => {
            let mqtt = a.mqtt.as_deref().context("storm-fleet: --mqtt")?;
            let ids = a.ids.as_deref().context("storm-fleet: --ids")?;
            civicast_bench::fleet_process(mqtt, ids, std::time::Duration::from_secs(a.within))
                .await?;
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

/// `bench audit|storage --database postgres://...`.
async fn run_pg(a: &BenchArgs, url: &str) -> anyhow::Result<ExitCode> {
    let o = LoadOptions {
        receipts: a.receipts.unwrap_or(1_000_000),
        displays: a.displays.first().copied().unwrap_or(3_000).max(1),
        ..LoadOptions::default()
    };
    let (store, load) = load_pg(url, "civicast_bench_audit", &o).await?;
    print_pg_load(&load);
    let s = storage_pg(&store, &load).await?;
    print_pg_storage(&s);
    let mut ok = s.readable == load.receipts;
    if a.scenario == Scenario::Audit {
        let r = audit_pg(&store, &o, a.runs.max(1), a.naive_runs).await?;
        print_audit(&r);
        ok &= r.identical();
    }
    Ok(exit(ok))
}

fn main() -> ExitCode {
    // As the daemon's own executable does first thing: the memory scenario measures a
    // daemon with its malloc arenas capped, and the runs of BENCHMARKS.md were made so.
    civicast::memory::limit_malloc_arenas();
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("civicast-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("civicast-bench: bad configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match rt.block_on(run(settings, cli.bench)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("civicast-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// As `civicast` logs its commands other than `serve`: warnings only, the embedded broker's
/// errors only (it logs every disconnect), CIVICAST_LOG and CIVICAST_LOG_FORMAT as there.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CIVICAST_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,rmqtt=error"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("CIVICAST_LOG_FORMAT").as_deref() == Ok("json") {
        b.json().init();
    } else {
        b.init();
    }
}
