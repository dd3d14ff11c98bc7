//! Helpers shared by integration tests that run against real infrastructure: Mosquitto on
//! the deploy files, a fresh PostgreSQL schema per test,
//! displays that answer plays the way a real board does, and a TCP proxy that can cut the
//! daemon off its database.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use civicast::core::audit::{PlaysParams, PlaysQuery};
use civicast::daemon::{self, SystemClock};
use civicast::settings::Settings;
use civicast::store::{PgStore, Store};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;
use sqlx::Connection;
use tokio_util::sync::CancellationToken;

pub const P: &str = "civicast/v1";
/// Accounts in the password file; each password is `pw-{account}`.
pub const ACCOUNTS: [&str; 5] = ["civicast", "observer", "bus-1", "bus-2", "taxi-1"];

pub async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Mosquitto (copied from tests/mosquitto.rs)
// ---------------------------------------------------------------------------------------

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/mosquitto")
        .join(rel)
}

/// A Mosquitto child process on a temporary folder; killed on drop (also on panic).
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Writes the deploy files into a new folder and starts Mosquitto on them.
    pub async fn start() -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let conf = std::fs::read_to_string(deploy("mosquitto.conf")).expect("mosquitto.conf");
        let mut rewritten = 0;
        let lines: Vec<String> = conf
            .lines()
            .map(|l| {
                let new = match l.split_whitespace().next() {
                    Some("listener") => format!("listener {port} 127.0.0.1"),
                    Some("password_file") => {
                        format!("password_file {}", d.join("passwd").display())
                    }
                    Some("acl_file") => format!("acl_file {}", d.join("acl").display()),
                    Some("persistence_location") => {
                        format!("persistence_location {}/", d.display())
                    }
                    _ => return l.to_owned(),
                };
                rewritten += 1;
                new
            })
            .collect();
        assert_eq!(
            rewritten, 4,
            "the deploy conf has one listener and one of each path"
        );
        std::fs::write(d.join("mosquitto.conf"), lines.join("\n") + "\n").expect("write conf");
        std::fs::copy(deploy("acl"), d.join("acl")).expect("copy acl");
        for (i, a) in ACCOUNTS.iter().enumerate() {
            let mut c = Command::new("mosquitto_passwd");
            c.arg("-b");
            if i == 0 {
                c.arg("-c");
            }
            let st = c
                .arg(d.join("passwd"))
                .arg(a)
                .arg(format!("pw-{a}"))
                .status()
                .expect("mosquitto_passwd runs");
            assert!(st.success(), "mosquitto_passwd {a}");
        }
        own_by_mosquitto_if_root(d);
        Self::spawn(dir, port).await
    }

    async fn spawn(dir: tempfile::TempDir, port: u16) -> Mosquitto {
        let d = dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("mosquitto.log"))
            .expect("log file");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(d.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        let mut m = Mosquitto {
            child: Some(child),
            port,
            dir,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            let exited = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "mosquitto exited ({exited:?}):\n{}",
                m.log()
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "mosquitto did not listen on {port}:\n{}",
                m.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        m
    }

    /// Stops Mosquitto the way systemd does (SIGTERM: it saves its database) and waits
    /// until it has exited. Start it again with [`Mosquitto::start_again`].
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(st.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("wait").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto ignores SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a stopped Mosquitto again on the same folder (its saved database) and port.
    pub async fn start_again(mut self) -> Mosquitto {
        assert!(self.child.is_none(), "stop it first");
        let port = self.port;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        Mosquitto::spawn(dir, port).await
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- mosquitto log ---\n{}", self.log());
        }
    }
}

/// Run as root, Mosquitto drops to the `mosquitto` user, which must read the password and
/// ACL files and write its database (the production layout: owned by mosquitto, 0640).
fn own_by_mosquitto_if_root(d: &Path) {
    let id = |args: &[&str]| -> Option<u32> {
        let o = Command::new("id").args(args).output().ok()?;
        String::from_utf8(o.stdout).ok()?.trim().parse().ok()
    };
    if id(&["-u"]) != Some(0) {
        return;
    }
    let (Some(uid), Some(gid)) = (id(&["-u", "mosquitto"]), id(&["-g", "mosquitto"])) else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    for p in [d.to_path_buf(), d.join("passwd"), d.join("acl")] {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown");
    }
    std::fs::set_permissions(d.join("passwd"), std::fs::Permissions::from_mode(0o640))
        .expect("chmod");
}

// ---------------------------------------------------------------------------------------
// The city
// ---------------------------------------------------------------------------------------

pub const CLASSES: &str = r#"
[class.bus_led]
max_chars = 40
charset = "gb2312"
duration = "1s"

[class.taxi_top]
max_chars = 12
charset = "gb2312"
duration = "1s"
"#;

pub const FEEDS: &str = r#"
timezone = "Asia/Shanghai"

[[feed]]
id = "bus"
select = { class = "bus_led" }
interval = "1s"

[[feed]]
id = "taxi"
select = { class = "taxi_top" }
interval = "1s"
"#;

pub const ADSET: &str = r#"
id = "civility"
valid_from = "2020-01-01"
valid_until = "2099-12-31"

[[slogan]]
id = "jiang-wenming"
text = "讲文明 树新风"
weight = 2

[[slogan]]
id = "paidui"
text = "自觉排队 文明乘车"
[slogan.text_by_class]
taxi_top = "自觉排队"
"#;

/// The displays of the test city: (id, speaks MQTT 5). Each has a Mosquitto account.
pub const DISPLAYS: [(&str, bool); 3] = [("bus-1", false), ("bus-2", true), ("taxi-1", true)];

/// Writes three displays (two buses, one taxi), two 1 s feeds and one ad set of two
/// slogans weighted 2:1.
pub fn write_city(dir: &Path) {
    let w = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    w(
        "devices/fleet.csv",
        "id,class,route\nbus-1,bus_led,K1\nbus-2,bus_led,K2\ntaxi-1,taxi_top,\n",
    );
    w("devices/classes.toml", CLASSES);
    w("schedules/feeds.toml", FEEDS);
    w("schedules/adsets/civility.toml", ADSET);
}

/// What an uninterrupted rotation of the test ad set plays, `n` plays long.
pub fn uninterrupted_rotation(n: usize) -> Vec<String> {
    let mk = |s: &str, w| civicast::core::rotation::Candidate {
        adset: civicast::core::model::Id::parse("civility").expect("id"),
        rev: 1,
        slogan: civicast::core::model::Id::parse(s).expect("id"),
        weight: w,
    };
    let cands = [mk("jiang-wenming", 2), mk("paidui", 1)];
    let mut cur = civicast::core::rotation::Cursor::default();
    (0..n)
        .map(|_| cands[cur.pick(&cands).expect("pick")].slogan.to_string())
        .collect()
}

/// The in-process daemon on `dir`'s city with `store`, logged in to Mosquitto as
/// `civicast`; returns once its MQTT session is up.
pub async fn start_daemon(
    dir: &Path,
    port: u16,
    store: PgStore,
    batch_wait: Duration,
) -> (daemon::Running, CancellationToken) {
    let report = civicast::files::load_dirs(&dir.join("devices"), &dir.join("schedules"));
    let catalog = report.catalog.expect("the test city is valid");
    let settings = Settings {
        mqtt_url: Some(format!("mqtt://civicast:pw-civicast@127.0.0.1:{port}")),
        devices: dir.join("devices"),
        schedules: dir.join("schedules"),
        batch_wait: Some(batch_wait),
        ..Settings::default()
    };
    let shutdown = CancellationToken::new();
    let running = daemon::start(
        &settings,
        store,
        catalog,
        None,
        Arc::new(SystemClock),
        shutdown.clone(),
    )
    .await
    .expect("daemon starts");
    assert!(running.mqtt_addr.is_none(), "no embedded broker");
    let m = running.shared.metrics.clone();
    wait_for("the daemon's MQTT session", 15, || {
        m.broker_connected.load(Ordering::Relaxed)
    })
    .await;
    (running, shutdown)
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: a fresh schema per test
// ---------------------------------------------------------------------------------------

/// A schema of its own in the `CIVICAST_TEST_PG` database.
#[derive(Clone, Debug)]
pub struct PgSchema {
    /// `CIVICAST_TEST_PG` as given.
    pub base: String,
    pub name: String,
}

impl PgSchema {
    /// `base` with `search_path` set to this schema in the URL (`options=-csearch_path=...`),
    /// as `CIVICAST_DATABASE_URL` would carry it.
    pub fn url(&self) -> String {
        let sep = if self.base.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.base, self.name)
    }

    /// A store on this schema, straight to the database (not through any proxy): for
    /// creating the schema and reading what the daemon stored.
    pub async fn store(&self) -> PgStore {
        PgStore::connect_schema(&self.base, &self.name)
            .await
            .expect("connect to CIVICAST_TEST_PG")
    }

    /// `base` split into (scheme, user info with its `@`, host:port, path and query).
    fn parts(&self) -> (&str, &str, String, &str) {
        let (scheme, rest) = self.base.split_once("://").expect("a postgres:// URL");
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(i) => (&authority[..=i], &authority[i + 1..]),
            None => ("", authority),
        };
        let hostport = if hostport.contains(':') {
            hostport.to_owned()
        } else {
            format!("{hostport}:5432")
        };
        (scheme, userinfo, hostport, path)
    }

    /// The database server's address.
    pub async fn upstream(&self) -> SocketAddr {
        let hostport = self.parts().2;
        let mut addrs = tokio::net::lookup_host(hostport)
            .await
            .expect("resolve the database host");
        addrs.next().expect("an address for the database host")
    }

    /// `base` pointed at `via` instead of the database server.
    pub fn base_via(&self, via: SocketAddr) -> String {
        let (scheme, userinfo, _, path) = self.parts();
        format!("{scheme}://{userinfo}{via}{path}")
    }

    async fn drop_schema(&self) {
        let mut c = sqlx::PgConnection::connect(&self.base)
            .await
            .expect("reconnect to drop the test schema");
        sqlx::raw_sql(&format!(
            "SET lock_timeout = '20s'; DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.name
        ))
        .execute(&mut c)
        .await
        .expect("drop test schema");
    }
}

/// Runs `test` with a fresh schema that is dropped afterwards, also when the test fails.
pub async fn with_schema<F, Fut>(base: String, test: F)
where
    F: FnOnce(PgSchema) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let schema = PgSchema {
        base,
        name: format!("fail_{}", ulid::Ulid::new().to_string().to_lowercase()),
    };
    // Creates the schema (so a daemon can be pointed at it by URL alone).
    schema.store().await.pool().close().await;
    let outcome = tokio::spawn(test(schema.clone())).await;
    schema.drop_schema().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("test task: {e}"),
        }
    }
}

/// Stored receipts per display, all statuses, as the audit counts them (`audit_plays`
/// grouped by device, summed over the four statuses).
pub async fn audited_by_device<S: Store>(store: &S) -> BTreeMap<String, i64> {
    let mut out: BTreeMap<String, i64> = BTreeMap::new();
    for status in ["played", "skipped", "expired", "failed"] {
        let q = PlaysQuery::parse(
            &PlaysParams {
                group_by: Some("device".into()),
                status: Some(status.into()),
                ..Default::default()
            },
            chrono_tz::Asia::Shanghai,
        )
        .expect("query");
        for r in store.audit_plays(&q).await.expect("audit") {
            *out.entry(r.values[0].clone()).or_default() += r.plays;
        }
    }
    out
}

/// Every stored receipt row as (display, play id), straight from the table.
pub async fn receipt_rows(store: &PgStore) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT d.name, p.play_id FROM receipts r JOIN devices d ON d.id = r.device \
         JOIN plays p ON p.id = r.play ORDER BY d.name, p.play_id",
    )
    .fetch_all(store.pool())
    .await
    .expect("receipt rows")
}

/// The slogans the daemon recorded on `feed`, in the order it recorded them.
pub async fn feed_slogans(store: &PgStore, feed: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT s.slogan FROM plays p JOIN slogans s ON s.id = p.slogan \
         JOIN feeds f ON f.id = p.feed WHERE f.name = $1 ORDER BY p.id",
    )
    .bind(feed)
    .fetch_all(store.pool())
    .await
    .expect("plays")
}

/// Compares what the displays sent with what is stored: per display the audit count, and
/// row by row (no row twice, none missing, none extra). Returns the problems, if any.
pub async fn compare_stored(store: &PgStore, displays: &[Display]) -> Vec<String> {
    let mut problems = Vec::new();
    let sent: BTreeMap<String, BTreeSet<String>> = displays
        .iter()
        .map(|d| (d.id.clone(), d.sent_ids()))
        .collect();
    let want: BTreeMap<String, i64> = sent
        .iter()
        .map(|(d, s)| (d.clone(), s.len() as i64))
        .collect();
    let audited = audited_by_device(store).await;
    if audited != want {
        problems.push(format!(
            "audit_plays by device {audited:?}, displays sent {want:?}"
        ));
    }
    let rows = receipt_rows(store).await;
    let mut stored: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (d, p) in &rows {
        if !stored.entry(d.clone()).or_default().insert(p.clone()) {
            problems.push(format!("receipt stored twice: {d} {p}"));
        }
    }
    for (d, s) in &sent {
        let got = stored.get(d).cloned().unwrap_or_default();
        let missing: Vec<_> = s.difference(&got).collect();
        let extra: Vec<_> = got.difference(s).collect();
        if !missing.is_empty() || !extra.is_empty() {
            problems.push(format!("{d}: missing {missing:?}, never sent {extra:?}"));
        }
    }
    problems
}

/// Waits (up to `secs`) until every display's receipts are stored by the audit count, a
/// moment more for anything late, then compares row by row. Returns what differs.
pub async fn wait_all_stored_once(store: &PgStore, displays: &[Display], secs: u64) -> Vec<String> {
    let want: BTreeMap<String, i64> = displays
        .iter()
        .map(|d| (d.id.clone(), d.sent_ids().len() as i64))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let got = audited_by_device(store).await;
        if got == want {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A late duplicate (a redelivery) must not change anything.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut problems = compare_stored(store, displays).await;
    if !problems.is_empty() {
        problems.push(format!("(waited {secs} s) displays:"));
        problems.extend(displays.iter().map(Display::summary));
    }
    problems
}

// ---------------------------------------------------------------------------------------
// Displays
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
enum Publisher {
    V4(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Publisher {
    async fn publish(&self, topic: String, body: String) -> Result<(), String> {
        match self {
            Publisher::V4(c) => c
                .publish(topic, QoS::AtLeastOnce, false, body)
                .await
                .map_err(|e| e.to_string()),
            Publisher::V5(c) => c
                .publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, body)
                .await
                .map_err(|e| e.to_string()),
        }
    }
    fn subscribe(&self, topic: String) {
        let _ = match self {
            Publisher::V4(c) => c
                .try_subscribe(topic, QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Publisher::V5(c) => c
                .try_subscribe(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
        };
    }
}

#[derive(Default)]
struct DisplayState {
    answering: AtomicBool,
    /// Receipts waiting for their scroll to end.
    outstanding: AtomicUsize,
    connacks: AtomicUsize,
    pubacks: AtomicUsize,
    errors: AtomicUsize,
    /// Receipts sent a second time (a display that lost the PUBACK and retries).
    repeats: AtomicUsize,
    /// MQTT 5 PUBACK reasons other than Success.
    odd_pubacks: Mutex<Vec<String>>,
    seen: Mutex<HashSet<String>>,
    /// Unique plays, in arrival order.
    plays: Mutex<Vec<(Instant, String)>>,
    /// Receipts handed to the MQTT client: play id, when.
    sent: Mutex<BTreeMap<String, Instant>>,
}

/// A display: logs in as itself with a persistent session (so its MQTT client retransmits
/// unacknowledged receipts after a reconnect, as a display that must not lose receipts
/// does), follows its retained config, and for each new play sends one receipt 1-2 s
/// later, when the scroll would end (`expired` for a play that arrived after its
/// `expires_at`). Every fifth receipt is sent twice.
pub struct Display {
    pub id: String,
    pub v5: bool,
    st: Arc<DisplayState>,
    stop: CancellationToken,
}

impl Drop for Display {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Display {
    pub fn connect(id: &str, port: u16, v5: bool) -> Display {
        let st = Arc::new(DisplayState::default());
        st.answering.store(true, Ordering::Relaxed);
        let stop = CancellationToken::new();
        let pw = format!("pw-{id}");
        if v5 {
            use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
            let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
            o.set_credentials(id, pw)
                .set_clean_start(false)
                .set_session_expiry_interval(Some(3600));
            let (c, mut ev) = rumqttc::v5::AsyncClient::new(o, 100);
            let p = Publisher::V5(c);
            let (p2, st2, stop2, id2) = (p, st.clone(), stop.clone(), id.to_owned());
            tokio::spawn(async move {
                loop {
                    let e = tokio::select! {
                        _ = stop2.cancelled() => break,
                        e = ev.poll() => e,
                    };
                    match e {
                        Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(_))) => {
                            on_connack(&p2, &st2, &id2)
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::Publish(m))) => {
                            let t = String::from_utf8_lossy(&m.topic).into_owned();
                            on_message(&p2, &st2, &id2, &t, &m.payload);
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::PubAck(a))) => {
                            st2.pubacks.fetch_add(1, Ordering::Relaxed);
                            if a.reason != PubAckReason::Success {
                                // 16 "no matching subscribers" is a success code too, but
                                // it says nobody took the receipt.
                                st2.odd_pubacks
                                    .lock()
                                    .expect("lock")
                                    .push(format!("{:?}", a.reason));
                            }
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            });
        } else {
            let mut o = MqttOptions::new(id, "127.0.0.1", port);
            o.set_credentials(id, pw).set_clean_session(false);
            let (c, mut ev) = AsyncClient::new(o, 100);
            let p = Publisher::V4(c);
            let (p2, st2, stop2, id2) = (p, st.clone(), stop.clone(), id.to_owned());
            tokio::spawn(async move {
                loop {
                    let e = tokio::select! {
                        _ = stop2.cancelled() => break,
                        e = ev.poll() => e,
                    };
                    match e {
                        Ok(Event::Incoming(Incoming::ConnAck(_))) => on_connack(&p2, &st2, &id2),
                        Ok(Event::Incoming(Incoming::Publish(m))) => {
                            on_message(&p2, &st2, &id2, &m.topic, &m.payload)
                        }
                        Ok(Event::Incoming(Incoming::PubAck(_))) => {
                            st2.pubacks.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            });
        }
        Display {
            id: id.to_owned(),
            v5,
            st,
            stop,
        }
    }

    /// The three displays of the test city.
    pub fn fleet(port: u16) -> Vec<Display> {
        DISPLAYS
            .iter()
            .map(|(id, v5)| Display::connect(id, port, *v5))
            .collect()
    }

    /// Stops answering new plays; receipts already due are still sent.
    pub fn stop_answering(&self) {
        self.st.answering.store(false, Ordering::Relaxed);
    }
    /// No receipt is waiting to be sent.
    pub fn drained(&self) -> bool {
        self.st.outstanding.load(Ordering::Relaxed) == 0
    }
    pub fn plays(&self) -> usize {
        self.st.plays.lock().expect("lock").len()
    }
    /// Plays that arrived after `t`.
    pub fn plays_after(&self, t: Instant) -> usize {
        let p = self.st.plays.lock().expect("lock");
        p.iter().filter(|(at, _)| *at > t).count()
    }
    pub fn sent(&self) -> usize {
        self.st.sent.lock().expect("lock").len()
    }
    /// Receipts handed to the client within [from, to).
    pub fn sent_between(&self, from: Instant, to: Instant) -> usize {
        let s = self.st.sent.lock().expect("lock");
        s.values().filter(|t| **t >= from && **t < to).count()
    }
    /// When the receipt for `play_id` was handed to the client.
    pub fn sent_at(&self, play_id: &str) -> Option<Instant> {
        self.st.sent.lock().expect("lock").get(play_id).copied()
    }
    pub fn sent_ids(&self) -> BTreeSet<String> {
        self.st.sent.lock().expect("lock").keys().cloned().collect()
    }
    pub fn connacks(&self) -> usize {
        self.st.connacks.load(Ordering::Relaxed)
    }
    pub fn repeats(&self) -> usize {
        self.st.repeats.load(Ordering::Relaxed)
    }
    pub fn summary(&self) -> String {
        format!(
            "{} (MQTT {}): {} plays, {} receipts sent (+{} repeats), {} PUBACKs (not Success: {:?}), {} connacks, {} publish errors, {} waiting",
            self.id,
            if self.v5 { "5" } else { "3.1.1" },
            self.plays(),
            self.sent(),
            self.repeats(),
            self.st.pubacks.load(Ordering::Relaxed),
            self.st.odd_pubacks.lock().expect("lock"),
            self.connacks(),
            self.st.errors.load(Ordering::Relaxed),
            self.st.outstanding.load(Ordering::Relaxed),
        )
    }
}

fn on_connack(p: &Publisher, st: &DisplayState, id: &str) {
    st.connacks.fetch_add(1, Ordering::Relaxed);
    p.subscribe(format!("{P}/devices/{id}/config"));
    p.subscribe(format!("{P}/devices/{id}/cmd"));
}

fn on_message(p: &Publisher, st: &Arc<DisplayState>, id: &str, topic: &str, payload: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return;
    };
    if topic.ends_with("/config") {
        for f in v["feeds"].as_array().into_iter().flatten() {
            if let Some(f) = f.as_str() {
                p.subscribe(format!("{P}/feeds/{f}"));
            }
        }
        return;
    }
    let Some(play_id) = v["play_id"].as_str().map(str::to_owned) else {
        return;
    };
    if !st.seen.lock().expect("lock").insert(play_id.clone()) {
        return; // a redelivery: this play was handled already
    }
    let got = chrono::Utc::now();
    st.plays
        .lock()
        .expect("lock")
        .push((Instant::now(), play_id.clone()));
    if !st.answering.load(Ordering::Relaxed) {
        return;
    }
    let expired = v["expires_at"]
        .as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|e| got > e);
    let status = if expired { "expired" } else { "played" };
    let body = format!(
        r#"{{"v":1,"play_id":"{play_id}","started_at":"{}","duration_ms":1000,"status":"{status}"}}"#,
        got.to_rfc3339()
    );
    let topic = format!("{P}/devices/{id}/receipts");
    let repeat = st.seen.lock().expect("lock").len() % 5 == 0;
    st.outstanding.fetch_add(1, Ordering::Relaxed);
    let (p, st) = (p.clone(), st.clone());
    tokio::spawn(async move {
        use rand::Rng;
        let delay = rand::thread_rng().gen_range(1000..2000);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        match p.publish(topic.clone(), body.clone()).await {
            Ok(()) => {
                st.sent
                    .lock()
                    .expect("lock")
                    .insert(play_id, Instant::now());
                if repeat {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    if p.publish(topic, body).await.is_ok() {
                        st.repeats.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(_) => {
                st.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        st.outstanding.fetch_sub(1, Ordering::Relaxed);
    });
}

/// Stops every display from answering and waits until each has sent what was due.
pub async fn stop_and_drain(displays: &[Display]) {
    for d in displays {
        d.stop_answering();
    }
    wait_for("the displays' last receipts", 15, || {
        displays.iter().all(Display::drained)
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// A TCP proxy that can be cut
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct ProxyState {
    accept: Option<tokio::task::JoinHandle<()>>,
    conns: Vec<tokio::task::JoinHandle<()>>,
}

/// Forwards 127.0.0.1:`port` to `upstream`. `cut` drops every open connection and closes
/// the listener (new connections are refused); `restore` listens again on the same port.
pub struct Proxy {
    pub addr: SocketAddr,
    upstream: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let p = Proxy {
            addr: listener.local_addr().expect("addr"),
            upstream,
            state: Arc::new(Mutex::new(ProxyState::default())),
        };
        p.serve(listener);
        p
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let upstream = self.upstream;
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let conn = tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                });
                let mut s = state.lock().expect("lock");
                s.conns.retain(|c| !c.is_finished());
                s.conns.push(conn);
            }
        });
        self.state.lock().expect("lock").accept = Some(accept);
    }

    /// Drops every open connection and stops listening; returns how many were open.
    pub async fn cut(&self) -> usize {
        let (accept, conns) = {
            let mut s = self.state.lock().expect("lock");
            (s.accept.take(), std::mem::take(&mut s.conns))
        };
        if let Some(a) = accept {
            a.abort();
            let _ = a.await;
        }
        let mut open = 0;
        for c in conns {
            if !c.is_finished() {
                open += 1;
            }
            c.abort();
            let _ = c.await;
        }
        open
    }

    /// Listens again on the same address.
    pub async fn restore(&self) {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_reuseaddr(true).expect("reuseaddr");
        sock.bind(self.addr).expect("rebind the proxy's port");
        self.serve(sock.listen(128).expect("listen"));
    }
}

// ---------------------------------------------------------------------------------------
// `civicast serve` as a child process
// ---------------------------------------------------------------------------------------

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
        let mut c = Command::new(env!("CARGO_BIN_EXE_civicast"));
        if let Some(cfg) = config {
            c.arg("--config").arg(cfg);
        }
        c.arg("serve")
            .current_dir(dir)
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

/// A plain HTTP/1.1 GET; (status, body) or None when nothing answers.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let t = Duration::from_secs(3);
    let mut s = tokio::time::timeout(t, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(t, s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A Prometheus sample's value from a `/metrics` body.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.split_whitespace().next() == Some(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
