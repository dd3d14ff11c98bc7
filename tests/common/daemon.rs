//! The daemon under test, started one way only: in-process on a test city with a store of
//! the test's choosing (`start_daemon`, every listener on a port the OS picks, stopped by
//! its shutdown token), with the HTTP API on top (`api_router`, `spawn_app`), or as the
//! `civicast serve` binary in a process of its own (`Serve`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use civicast::api::{self, ApiState};
use civicast::daemon::{self, Startup, SystemClock};
use civicast::settings::{self, MqttUrl, Settings};
use civicast::store::{Role, SqliteStore};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::city::{load_city, City, BUS_FEED, FLEET_WITHOUT_ROUTES, ONE_SLOGAN_ADSET};
use super::http::{call, create_tokens, http_get};
use super::wait::wait_for;

/// The broker the daemon talks to.
#[derive(Clone, Copy, Debug)]
pub enum Broker {
    /// Its own, listening on a port the OS picks (`running.mqtt_addr`).
    Embedded,
    /// Mosquitto on `port`, logged in as `civicast`; [`start_daemon`] returns once the MQTT
    /// session is up, failing the test after `session_within` seconds.
    Mosquitto { port: u16, session_within: u64 },
}

/// A SQLite store in `dir`, file `file`.
pub async fn sqlite_store(dir: &Path, file: &str) -> SqliteStore {
    let url = format!("sqlite://{}", dir.join(file).display());
    SqliteStore::connect(&url).await.expect("sqlite")
}

/// Starts the daemon in-process on the city under `dir` (its `devices/` and `schedules/`)
/// with `store` and `broker`; `tweak` adjusts the settings before the start. Returns the
/// running daemon and the token that stops it.
pub async fn start_daemon<S: Into<civicast::store::Db>>(
    dir: &Path,
    store: S,
    broker: Broker,
    tweak: impl FnOnce(&mut Settings),
) -> (daemon::App, CancellationToken) {
    start_daemon_with_clock(dir, store, broker, Arc::new(SystemClock), tweak).await
}

/// The system clock moved by an offset the test sets at will: a clock that jumps.
#[derive(Default)]
pub struct ShiftedClock {
    pub offset_ms: Arc<AtomicI64>,
}

impl daemon::Clock for ShiftedClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::TimeDelta::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }
}

/// [`start_daemon`] with the daemon's clock given.
pub async fn start_daemon_with_clock<S: Into<civicast::store::Db>>(
    dir: &Path,
    store: S,
    broker: Broker,
    clock: Arc<dyn daemon::Clock>,
    tweak: impl FnOnce(&mut Settings),
) -> (daemon::App, CancellationToken) {
    let catalog = load_city(dir);
    let mut settings = Settings {
        devices: dir.join("devices"),
        schedules: dir.join("schedules"),
        ..Settings::default()
    };
    let listener = match broker {
        Broker::Embedded => Some(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        ),
        Broker::Mosquitto { port, .. } => {
            let url = format!("mqtt://civicast:pw-civicast@127.0.0.1:{port}");
            settings.broker = settings::Broker::External(MqttUrl::parse(&url).expect("url"));
            None
        }
    };
    tweak(&mut settings);
    let shutdown = CancellationToken::new();
    let mut startup = Startup::new(settings, store.into(), catalog);
    startup.listeners.mqtt = listener;
    startup.shutdown = shutdown.clone();
    startup.clock = clock;
    let running = daemon::App::start(startup).await.expect("daemon starts");
    if let Broker::Mosquitto { session_within, .. } = broker {
        assert!(running.mqtt_addr().is_none(), "no embedded broker");
        let m = running.metrics().clone();
        wait_for("the daemon's MQTT session", session_within, || {
            m.broker_connected.load(Ordering::Relaxed)
        })
        .await;
    }
    (running, shutdown)
}

/// The port of the daemon's embedded broker.
pub fn embedded_port(running: &daemon::App) -> u16 {
    running.mqtt_addr().expect("embedded broker").port()
}

/// The HTTP API of `running` on `store`, as `serve` builds it, to call in-process.
pub fn api_router<S: Into<civicast::store::Db>>(store: S, running: &daemon::App) -> axum::Router {
    api::router(api_state(store, running, api::Limits::default()))
}

/// The state of the HTTP API of `running` on `store`, with `limits`.
pub fn api_state<S: Into<civicast::store::Db>>(
    store: S,
    running: &daemon::App,
    limits: api::Limits,
) -> Arc<ApiState> {
    Arc::new(
        ApiState::new(
            store.into(),
            running.shared().clone(),
            Arc::new(SystemClock),
            Default::default(),
            limits,
        )
        .with_urgent(running.urgent().clone()),
    )
}

/// The daemon (embedded broker, SQLite) with its HTTP API, for the API tests.
pub struct App {
    pub router: axum::Router,
    pub shutdown: CancellationToken,
    pub running: daemon::App,
    /// Token secrets by account name: operators `op1` and `op2`, auditor `aud`, admin `adm`.
    pub tokens: HashMap<&'static str, String>,
    /// The store the router reads, to build another router on it.
    pub store: SqliteStore,
    _dir: tempfile::TempDir,
}

/// Starts [`App`] on a city of three displays, the bus feed and the one-slogan ad set
/// `civility`.
pub async fn spawn_app() -> App {
    let dir = tempfile::tempdir().expect("tempdir");
    City {
        fleet: FLEET_WITHOUT_ROUTES,
        feeds: BUS_FEED,
        adset: ONE_SLOGAN_ADSET,
        ..City::default()
    }
    .write(dir.path());
    let store = sqlite_store(dir.path(), "t.db").await;
    let (running, shutdown) =
        start_daemon(dir.path(), store.clone(), Broker::Embedded, |_| {}).await;
    let tokens = create_tokens(
        &store,
        &[
            ("op1", Role::Operator),
            ("op2", Role::Operator),
            ("aud", Role::Auditor),
            ("adm", Role::Admin),
        ],
    )
    .await;
    App {
        router: api_router(store.clone(), &running),
        store,
        shutdown,
        running,
        tokens,
        _dir: dir,
    }
}

impl App {
    /// One request; `who` is an account name (its token is sent) or a token as is.
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        who: Option<&str>,
        ctype: Option<&str>,
        body: &str,
    ) -> (StatusCode, String) {
        let token = who.map(|w| self.tokens.get(w).cloned().unwrap_or_else(|| w.to_owned()));
        call(&self.router, method, uri, token.as_deref(), ctype, body).await
    }

    pub async fn get(&self, uri: &str, who: Option<&str>) -> (StatusCode, String) {
        self.call("GET", uri, who, None, "").await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.running.wait().await;
    }
}

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

/// The `civicast` binary, to run in `dir`.
pub fn civicast_command(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_civicast"));
    c.current_dir(dir);
    c
}

/// `civicast serve` in its own process, logging JSON lines to a file; SIGKILLed on drop.
pub struct Serve {
    child: Option<Child>,
    pub log_path: PathBuf,
    pub http: Option<SocketAddr>,
}

impl Serve {
    /// Starts `civicast [--config config] serve` with `env` in `dir`.
    pub fn spawn(dir: &Path, env: &[(&str, String)], config: Option<&Path>, n: usize) -> Serve {
        let log_path = dir.join(format!("serve-{n}.log"));
        let log = std::fs::File::create(&log_path).expect("log file");
        let mut c = civicast_command(dir);
        if let Some(cfg) = config {
            c.arg("--config").arg(cfg);
        }
        c.arg("serve")
            .env("CIVICAST_LOG_FORMAT", "json")
            .env("CIVICAST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        Serve {
            child: Some(c.spawn().expect("civicast serve starts")),
            log_path,
            http: None,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits until the HTTP API listens and `/healthz` says both broker and database are up.
    pub async fn ready(&mut self, secs: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("civicast serve exited ({st}):\n{}", self.log());
            }
            if self.http.is_none() {
                self.http = self.log().lines().find_map(|l| {
                    let v: Value = serde_json::from_str(l).ok()?;
                    if v["fields"]["message"] != "HTTP API listening" {
                        return None;
                    }
                    v["fields"]["addr"].as_str()?.parse().ok()
                });
            }
            if let Some(addr) = self.http {
                if let Some((200, _)) = http_get(addr, "/healthz").await {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "civicast serve not healthy within {secs} s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            let st = c.wait().expect("wait");
            assert!(!st.success(), "killed, not exited: {st}");
        }
    }

    /// SIGTERM (a clean stop), waiting for it to exit.
    pub async fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while c.try_wait().expect("wait").is_none() {
                if std::time::Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("civicast serve ignored SIGTERM:\n{}", self.log());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- {} ---\n{}",
                self.log_path.display(),
                tail(&self.log(), 80)
            );
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
