//! The `civicast` command line: argument parsing, and one file per command with the glue
//! that runs it (`check`, `serve`, `demo`, `audit`, `token`, `urgent`, `simulate`). The binary's
//! `main` only calls `cli::main`.
//!
//! Owns: flags, exit codes and what is printed. Must not touch SQL, MQTT or rules: each
//! command calls the library (`daemon::App`, `reports`, `store::Db`, `files`).

mod audit;
mod check;
mod demo;
mod inspect;
mod serve;
mod simulate;
mod tlog;
mod token;
mod urgent;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::core::catalog;
use crate::core::model::Catalog;
use crate::settings::Settings;
use crate::store::Db;

pub use audit::{AuditCmd, ComplianceArgs, Format, PlaysArgs, ReconcileArgs, SampleArgs};
pub use demo::DemoArgs;
pub use inspect::{InspectArgs, InspectCmd};
pub use simulate::SimulateArgs;
pub use token::TokenCmd;
pub use urgent::{UrgentArgs, UrgentCmd};

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
    Serve {
        /// Accept files that take away more displays or ad sets than max_drop allows (at the
        /// start, against the database, and on every reload of this run).
        #[arg(long)]
        accept_drop: bool,
    },
    /// Ask the running daemon to re-read devices/ and schedules/ now; with --accept-drop,
    /// to apply the edit even though it takes away more than max_drop (once).
    Reload {
        /// Apply the next edit even if it drops more displays or ad sets than max_drop.
        #[arg(long)]
        accept_drop: bool,
    },
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
    /// Urgent messages (a typhoon warning, a road closure) through the running daemon's API:
    /// send, approve, cancel, list.
    Urgent(UrgentArgs),
    /// Inspections and findings through the running daemon's API: the week's plan, visits,
    /// photos, findings (fix, recheck, proposals) and the month's scorecards.
    Inspect(InspectArgs),
    /// Run a simulated fleet of displays (one MQTT connection each) against a broker.
    Simulate(SimulateArgs),
    /// The receipt log's keys.
    #[command(subcommand)]
    Log(tlog::LogCmd),
    /// Cosign the receipt log's checkpoints for the campaign office: fetch the next one and
    /// a consistency proof, verify them, add a cosignature; refuse a fork loudly.
    Witness(tlog::WitnessArgs),
    /// Write the first city's inventory, classes, feeds and an ad set where missing.
    Init {
        /// Where to write devices/ and schedules/.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// A tool's output piped into `head` ends quietly, as coreutils' does: Rust starts with
/// SIGPIPE ignored, so the next print fails and `println!` panics. Sockets are written with
/// `MSG_NOSIGNAL` by the standard library on Linux, so a network client is not killed by it;
/// `serve` and `demo` keep the signal ignored all the same.
fn end_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called once at start, before any thread, with the default action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = match &cli.cmd {
        Cmd::Serve { .. } => Logs::Serve,
        Cmd::Demo(a) => match a.open_log() {
            Ok(file) => Logs::Demo(file),
            Err(e) => {
                eprintln!("civicast: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => Logs::Tool,
    };
    if matches!(logs, Logs::Tool) {
        end_quietly_on_closed_pipe();
    }
    init_tracing(logs);
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

/// Where a command's log lines go, and how much of them by default.
enum Logs {
    /// The daemon: its own lines from `info` on stderr, other crates' from `warn`.
    Serve,
    /// Everything into the demo's log file: the terminal keeps the progress line and the
    /// summary.
    Demo(std::fs::File),
    /// The one-shot commands: warnings and errors on stderr.
    Tool,
}

/// The crates of the embedded broker. A directive's target is a prefix (`rmqtt` covers
/// `rmqtt_net` too); each is named so that none depends on that.
const BROKER_TARGETS: [&str; 3] = ["rmqtt", "rmqtt_net", "rmqtt_codec"];

/// The filter when `CIVICAST_LOG` does not set one. The broker logs a line per client
/// (connects, disconnects) at `info`: only its warnings reach a daemon's operator, and only
/// its errors the demo's file.
fn default_filter(logs: &Logs) -> String {
    let (own, broker) = match logs {
        Logs::Serve => ("info", "warn"),
        Logs::Demo(_) => ("info", "error"),
        Logs::Tool => ("warn", "error"),
    };
    let mut f = format!("warn,civicast={own}");
    for t in BROKER_TARGETS {
        f.push_str(&format!(",{t}={broker}"));
    }
    f
}

fn subscriber(
    filter: tracing_subscriber::EnvFilter,
    writer: tracing_subscriber::fmt::writer::BoxMakeWriter,
    colour: bool,
    json: bool,
) -> Box<dyn tracing::Subscriber + Send + Sync> {
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // Colour only on a terminal with NO_COLOR unset: escapes in a file or a journal are noise.
    let b = if colour { b } else { b.with_ansi(false) };
    if json {
        Box::new(b.json().finish())
    } else {
        Box::new(b.finish())
    }
}

fn init_tracing(logs: Logs) {
    use tracing_log::AsLog;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CIVICAST_LOG")
        .unwrap_or_else(|_| EnvFilter::new(default_filter(&logs)));
    let json = std::env::var("CIVICAST_LOG_FORMAT").as_deref() == Ok("json");
    let (writer, colour) = match logs {
        Logs::Demo(file) => (BoxMakeWriter::new(std::sync::Mutex::new(file)), false),
        Logs::Serve | Logs::Tool => {
            use std::io::IsTerminal;
            let tty = std::io::stderr().is_terminal();
            (BoxMakeWriter::new(std::io::stderr), tty)
        }
    };
    if tracing::subscriber::set_global_default(subscriber(filter, writer, colour, json)).is_ok() {
        // `log` records (rmqtt's) become events judged by the same filter; `log` itself
        // drops what is below every directive before a record is even built.
        let _ = tracing_log::LogTracer::builder()
            .with_max_level(tracing::level_filters::LevelFilter::current().as_log())
            .init();
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
        Cmd::Serve { accept_drop } => serve::run(settings, accept_drop).await,
        Cmd::Reload { accept_drop } => serve::reload(&settings, accept_drop).await,
        Cmd::Check { dir } => Ok(check::run(&settings, dir)),
        Cmd::Audit(AuditCmd::Plays(a)) => audit::plays(&settings, a).await,
        Cmd::Audit(AuditCmd::Verify(a)) => tlog::verify(&settings, a).await,
        Cmd::Audit(AuditCmd::Export(a)) => tlog::export(&settings, a).await,
        Cmd::Log(cmd) => tlog::log(cmd),
        Cmd::Witness(a) => tlog::witness(&settings, a).await,
        Cmd::Audit(cmd) => audit::report(&settings, cmd).await,
        Cmd::Token(cmd) => token::run(&settings, cmd).await,
        Cmd::Urgent(a) => urgent::run(&settings, a).await,
        Cmd::Inspect(a) => inspect::run(&settings, a).await,
        Cmd::Demo(a) => demo::run(settings, a).await,
        Cmd::Simulate(a) => simulate::run(settings, a).await,
        Cmd::Init { dir } => check::init(&dir),
    }
}

pub(crate) fn print_problems(problems: &[catalog::Problem]) {
    for p in problems {
        eprintln!("{p}");
    }
}

/// Loads and validates the operators' files, or says why not.
pub(crate) fn load_catalog(devices: &Path, schedules: &Path) -> Result<Catalog, usize> {
    let report = crate::files::load_dirs(devices, schedules);
    print_problems(&report.problems);
    match report.catalog {
        Some(c) if report.errors() == 0 => Ok(c),
        _ => Err(report.errors()),
    }
}

/// The database the settings name, opened (and its schema brought up to date).
async fn open_store(settings: &Settings) -> anyhow::Result<Db> {
    use crate::store::Store;
    let db = Db::open(&settings.database).await?;
    db.migrate().await?;
    Ok(db)
}

pub(crate) async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

pub(crate) async fn shutdown_signal() {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// rmqtt logs a line per client through `log`: the demo's default filter keeps its errors
    /// in the file and drops the rest, while the daemon's own `info` lines stay.
    #[test]
    fn log_records_meet_the_same_filter_as_the_daemons_lines() {
        use tracing_log::log;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("demo.log");
        let file = std::fs::File::create(&path).expect("log file");
        let logs = Logs::Demo(file.try_clone().expect("clone"));
        let filter = tracing_subscriber::EnvFilter::new(default_filter(&logs));
        let writer =
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::sync::Mutex::new(file));
        // Only this test installs a `log` logger; it hands records to the thread's subscriber.
        let _ = tracing_log::LogTracer::init();
        tracing::subscriber::with_default(subscriber(filter, writer, false, false), || {
            log::info!(target: "rmqtt::session", "client-7 disconnected");
            log::warn!(target: "rmqtt_net::server", "client-8 refused");
            log::error!(target: "rmqtt_codec::v5", "listener broken");
            tracing::info!(target: "civicast::mqtt::broker", "embedded MQTT broker listening");
        });
        let text = std::fs::read_to_string(&path).expect("read log");
        assert!(text.contains("listener broken"), "{text}");
        assert!(text.contains("embedded MQTT broker listening"), "{text}");
        assert!(
            !text.contains("client-7") && !text.contains("client-8"),
            "{text}"
        );
        assert!(!text.contains("\x1b["), "no colour in a file: {text}");
    }

    #[test]
    fn the_daemon_shows_broker_warnings_and_the_tools_only_errors() {
        let serve = default_filter(&Logs::Serve);
        assert!(serve.starts_with("warn,civicast=info,"), "{serve}");
        for t in BROKER_TARGETS {
            assert!(serve.contains(&format!(",{t}=warn")), "{serve}");
            assert!(default_filter(&Logs::Tool).contains(&format!(",{t}=error")));
        }
    }
}
