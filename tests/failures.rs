//! The receipt guarantees of the contract under faults, against real servers that each
//! test starts for itself: Mosquitto on the deploy files, a PostgreSQL cluster of its own
//! (a copy of one `initdb`), SQLite on a tmpfs it can fill. The faults: the daemon
//! SIGKILLed ten times, Mosquitto restarted, PostgreSQL crashed and restarted, PostgreSQL
//! unreachable for 30 s, the disk under SQLite full, the clock jumping an hour forward and
//! back, and every receipt sent ten times. Displays keep answering plays throughout (a
//! receipt 1-2 s after each play, as a scroll ends).
//!
//! In each: nothing lost (every receipt the displays sent is stored), nothing counted twice,
//! the daemon serving afterwards (new plays reach every display, their receipts are
//! stored) and `/healthz` naming the failing component while it is down. Where the
//! daemon acknowledges, an [`MqttTap`] between it and Mosquitto reads its PUBACKs: none
//! while its database is down, every one afterwards, and the receipts it held
//! unacknowledged when it was killed are stored after its restart.
//!
//! The servers are private to each test, so the suite does not depend on (or disturb) the
//! shared PostgreSQL and Mosquitto. Its tests run one at a time nonetheless: each drives
//! real time (1 s feeds, receipts 1-2 s after a play) and several at once on a small
//! machine would starve each other's schedules.
//!
//! Needs `mosquitto`, `mosquitto_passwd` and PostgreSQL's server binaries
//! (`/usr/lib/postgresql/*/bin`), root for the tmpfs, and `CIVICAST_TEST_MQTT` and
//! `CIVICAST_TEST_PG` set (any value: they say the servers are installed):
//!
//! ```sh
//! CIVICAST_TEST_MQTT=1 CIVICAST_TEST_PG=1 \
//!   cargo test --test failures -- --include-ignored --test-threads 1
//! ```
//! Run with `--include-ignored` but without either variable, these tests fail instead of
//! skipping.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use civicast::store::{Db, PgStore, SqliteStore, Store};
use common::*;
use serde_json::Value;

const NEEDS: &str = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG";

/// Fails (never skips) when either variable is missing.
fn require_env() {
    for v in ["CIVICAST_TEST_MQTT", "CIVICAST_TEST_PG"] {
        assert!(
            std::env::var_os(v).is_some(),
            "{NEEDS}: {v} is not set (any value: Mosquitto and PostgreSQL are installed)"
        );
    }
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One test's database: a SQLite file in `dir`, or a private PostgreSQL cluster. `db` is
/// the daemon's; `check` is a store of its own (its own connections), to read what was
/// stored as anyone else would: a write that only the daemon's connection can see is not
/// stored.
struct TestDb {
    db: Db,
    check: Db,
    url: String,
    _pg: Option<PgCluster>,
}

impl TestDb {
    async fn open(backend: Backend, dir: &Path) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.join("civicast.db").display());
                let s = SqliteStore::connect(&url).await.expect("sqlite");
                let check = SqliteStore::connect(&url).await.expect("sqlite");
                TestDb {
                    db: s.into(),
                    check: check.into(),
                    url,
                    _pg: None,
                }
            }
            Backend::Postgres => {
                let pg = PgCluster::start().await;
                let url = pg.url();
                let s = PgStore::connect(&url).await.expect("postgres");
                let check = PgStore::connect(&url).await.expect("postgres");
                TestDb {
                    db: s.into(),
                    check: check.into(),
                    url,
                    _pg: Some(pg),
                }
            }
        }
    }
}

fn total_sent(displays: &[Display]) -> usize {
    displays.iter().map(Display::sent).sum()
}

fn sent_between(displays: &[Display], from: Instant, to: Instant) -> usize {
    displays.iter().map(|d| d.sent_between(from, to)).sum()
}

/// Waits until some display hands over a new receipt, so that one is on its way when the
/// next step strikes.
async fn a_receipt_just_sent(displays: &[Display]) {
    let before = total_sent(displays);
    wait_for("a fresh receipt", 10, || total_sent(displays) > before).await;
}

async fn new_plays_for_all(displays: &[Display], since: Instant, n: usize, secs: u64) {
    let what = format!(
        "{n} new plays on every display: {:?}",
        displays
            .iter()
            .map(|d| (d.id.clone(), d.plays_after(since)))
            .collect::<Vec<_>>()
    );
    wait_for(&what, secs, || {
        displays.iter().all(|d| d.plays_after(since) >= n)
    })
    .await;
}

/// Each feed's plays are one uninterrupted 5:3:1 rotation (the daemon was not restarted,
/// or see [`assert_rotation_resumed`]).
async fn assert_rotation_uninterrupted<S: Tables>(store: &S) {
    for feed in ["bus", "taxi"] {
        let slogans = feed_slogans(store, feed).await;
        assert_eq!(
            slogans,
            weighted_rotation(slogans.len()),
            "feed {feed}: the rotation skipped or repeated a pick"
        );
    }
}

/// `/healthz` through the router: (status, body).
async fn healthz(router: &axum::Router) -> (StatusCode, Value) {
    let (status, body) = call(router, "GET", "/healthz", None, None, "").await;
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// Polls `/healthz` for `secs`; from `notice` seconds on every answer must be 503 with
/// `field` failing (`broker`: "disconnected"; `database`: "failing..."). Returns the
/// problems and the answers' timeline.
async fn health_while_down(
    router: &axum::Router,
    field: &str,
    notice: f64,
    secs: f64,
) -> (Vec<String>, Vec<(f64, u16, String)>) {
    let t0 = Instant::now();
    let (mut problems, mut timeline) = (Vec::new(), Vec::<(f64, u16, String)>::new());
    while t0.elapsed().as_secs_f64() < secs {
        let (st, v) = healthz(router).await;
        let at = t0.elapsed().as_secs_f64();
        let said = v[field].as_str().unwrap_or("").to_owned();
        if timeline
            .last()
            .is_none_or(|l| (l.1, &l.2) != (st.as_u16(), &said))
        {
            timeline.push((at, st.as_u16(), said.clone()));
        }
        let down = said.starts_with("failing") || said == "disconnected";
        if at >= notice && !(st == StatusCode::SERVICE_UNAVAILABLE && down) {
            problems.push(format!("{at:.1} s into the fault: /healthz {st}, {v}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (problems, timeline)
}

/// Waits until `/healthz` answers 200 again.
async fn healthy_again(router: &axum::Router, secs: u64) -> Duration {
    let t0 = Instant::now();
    wait_until("/healthz 200 again", secs, || async {
        match healthz(router).await {
            (StatusCode::OK, _) => Ok(()),
            (st, v) => Err(format!("{st} {v}")),
        }
    })
    .await;
    t0.elapsed()
}

/// Every message Mosquitto delivered to the daemon is acknowledged in the end.
async fn all_acknowledged(tap: &MqttTap) {
    wait_until("every delivered message acknowledged", 15, || async {
        match tap.unacked() {
            0 => Ok(()),
            n => Err(format!(
                "{n} unacknowledged of {} delivered: {:?}",
                tap.delivered(),
                tap.unacked_receipts()
            )),
        }
    })
    .await;
}

/// The receipts in `held` (unacknowledged at some moment) that are not stored.
async fn not_stored<S: Tables>(store: &S, held: &BTreeSet<(String, String)>) -> Vec<String> {
    let stored: BTreeSet<(String, String)> = receipt_rows(store).await.into_iter().collect();
    held.difference(&stored)
        .map(|(d, p)| format!("held at the fault, never stored: {d} {p}"))
        .collect()
}

/// The test city's daemon on a private PostgreSQL behind a [`Proxy`], batches waiting 50 ms.
async fn on_proxied_pg() -> (ProxiedPg, Rig) {
    let pg = ProxiedPg::start().await;
    let rig = Rig::start(
        city(),
        pg.store.clone().into(),
        Arc::new(civicast::daemon::SystemClock),
        Duration::from_millis(50),
    )
    .await;
    (pg, rig)
}

/// The test fleet on `rig`'s broker, once each display has sent three receipts and nine are
/// stored.
async fn fleet_storing(rig: &Rig) -> Vec<Display> {
    let m = rig.metrics();
    let displays = Display::fleet(rig.broker.port);
    wait_for("three receipts from each display, stored", 20, || {
        displays.iter().all(|x| x.sent() >= 3) && m.receipts_stored.load(Ordering::Relaxed) >= 9
    })
    .await;
    displays
}

/// The daemon in-process on Mosquitto through a tap, on `db`, with its HTTP router.
struct Rig {
    dir: tempfile::TempDir,
    broker: Mosquitto,
    tap: MqttTap,
    running: civicast::daemon::App,
    shutdown: tokio_util::sync::CancellationToken,
    router: axum::Router,
}

impl Rig {
    async fn start(
        dir: tempfile::TempDir,
        db: Db,
        clock: Arc<dyn civicast::daemon::Clock>,
        batch_wait: Duration,
    ) -> Rig {
        let broker = Mosquitto::start().await;
        let tap = MqttTap::start(broker.port).await;
        let (running, shutdown) = start_daemon_with_clock(
            dir.path(),
            db.clone(),
            Broker::Mosquitto {
                port: tap.port,
                session_within: 15,
            },
            clock,
            |s| s.batch_wait = Some(batch_wait),
        )
        .await;
        let router = api_router(db, &running);
        Rig {
            dir,
            broker,
            tap,
            running,
            shutdown,
            router,
        }
    }

    fn metrics(&self) -> Arc<civicast::metrics::Metrics> {
        self.running.metrics().clone()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.running.wait())
            .await
            .expect("the daemon stops");
        drop(self.broker);
        drop(self.dir);
    }
}

fn city() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_weighted_city(dir.path());
    dir
}

// ---------------------------------------------------------------------------------------
// 1. SIGKILL, ten times
// ---------------------------------------------------------------------------------------

/// `civicast serve` (its own process) is SIGKILLed ten times while displays keep answering
/// plays, each time while it holds receipts Mosquitto delivered and it has not yet
/// acknowledged (its batches wait 1 s); receipts sent while it is down wait in its
/// persistent session. In the end every receipt is stored exactly once, those held at
/// each kill included, and the rotation went on from the stored cursor at every restart.
async fn sigkill_ten_times(backend: Backend) {
    const KILLS: usize = 10;
    require_env();
    let dir = city();
    let d = dir.path();
    let db = TestDb::open(backend, d).await;
    let broker = Mosquitto::start().await;
    let tap = MqttTap::start(broker.port).await;
    let config = d.join("civicast.toml");
    std::fs::write(&config, "batch_wait = \"1s\"\n").expect("config");
    let env = [
        (
            "CIVICAST_MQTT_URL",
            format!("mqtt://civicast:pw-civicast@127.0.0.1:{}", tap.port),
        ),
        ("CIVICAST_DATABASE_URL", db.url.clone()),
        ("CIVICAST_DEVICES", d.join("devices").display().to_string()),
        (
            "CIVICAST_SCHEDULES",
            d.join("schedules").display().to_string(),
        ),
        ("CIVICAST_HTTP_LISTEN", "127.0.0.1:0".to_owned()),
    ];
    let mut serve = Serve::spawn(d, &env, Some(&config), 0);
    serve.ready(60).await;
    let displays = Display::fleet(broker.port);
    wait_for("three receipts from each display", 20, || {
        displays.iter().all(|x| x.sent() >= 2)
    })
    .await;

    let mut held_at_kills: Vec<BTreeSet<(String, String)>> = Vec::new();
    let mut restarts_after: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut sent_while_down = 0;
    let mut attempts = 0;
    while held_at_kills.len() < KILLS {
        attempts += 1;
        assert!(
            attempts <= KILLS + 5,
            "no receipt in the daemon's hands at {attempts} kills"
        );
        wait_for(
            "a receipt delivered to the daemon, not yet acknowledged",
            15,
            || !tap.unacked_receipts().is_empty(),
        )
        .await;
        serve.kill();
        let killed_at = Instant::now();
        // Dead: whatever is unacknowledged now was in its hands at the kill.
        let held = tap.unacked_receipts();
        for feed in ["bus", "taxi"] {
            let n = feed_slogans(&db.check, feed).await.len();
            restarts_after.entry(feed).or_default().push(n);
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        serve = Serve::spawn(d, &env, Some(&config), attempts);
        serve.ready(60).await;
        let up_at = Instant::now();
        sent_while_down += sent_between(&displays, killed_at, up_at);
        if !held.is_empty() {
            held_at_kills.push(held);
        }
        new_plays_for_all(&displays, up_at, 1, 20).await;
    }
    let up_at = Instant::now();
    new_plays_for_all(&displays, up_at, 3, 20).await;
    stop_and_drain(&displays).await;
    let mut problems = wait_all_stored_once(&db.check, &displays, 20).await;
    let held: BTreeSet<_> = held_at_kills.iter().flatten().cloned().collect();
    problems.extend(not_stored(&db.check, &held).await);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    all_acknowledged(&tap).await;
    assert!(
        sent_while_down > 0,
        "no receipt was sent while the daemon was down"
    );
    for (feed, after) in &restarts_after {
        let slogans = feed_slogans(&db.check, feed).await;
        assert_rotation_resumed(feed, &slogans, after);
    }
    eprintln!(
        "sigkill x{KILLS} ({backend:?}): {} receipts sent, {sent_while_down} while the daemon \
         was down; held unacknowledged at each kill: {:?}; plays per feed at the kills: \
         {restarts_after:?}",
        total_sent(&displays),
        held_at_kills.iter().map(BTreeSet::len).collect::<Vec<_>>(),
    );
    serve.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn sigkill_of_serve_ten_times_loses_no_receipt_counts_none_twice_and_resumes_the_rotation_sqlite(
) {
    sigkill_ten_times(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn sigkill_of_serve_ten_times_loses_no_receipt_counts_none_twice_and_resumes_the_rotation_postgres(
) {
    sigkill_ten_times(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------
// 2. Mosquitto restarted
// ---------------------------------------------------------------------------------------

/// Mosquitto stops (SIGTERM: it saves its database) and starts again on the same port
/// mid-run: `/healthz` says the broker is disconnected meanwhile, the daemon and the
/// displays reconnect, and every receipt the displays sent, before, during and after, is
/// stored exactly once.
async fn mosquitto_restart(backend: Backend) {
    require_env();
    let dir = city();
    let db = TestDb::open(backend, dir.path()).await;
    let mut rig = Rig::start(
        dir,
        db.db.clone(),
        Arc::new(civicast::daemon::SystemClock),
        Duration::from_millis(300),
    )
    .await;
    let m = rig.metrics();
    let port = rig.broker.port;
    let displays = Display::fleet(port);
    wait_for("three receipts from each display", 20, || {
        displays.iter().all(|x| x.sent() >= 3)
    })
    .await;
    a_receipt_just_sent(&displays).await;
    rig.broker.stop().await;
    let down_at = Instant::now();
    // Down for a while: the displays keep sending receipts for the plays they got.
    let (mut problems, timeline) = health_while_down(&rig.router, "broker", 1.0, 4.0).await;
    rig.broker.restart_stopped().await;
    let up_at = Instant::now();
    let sent_while_down = sent_between(&displays, down_at, up_at);
    let back_after = healthy_again(&rig.router, 30).await;
    new_plays_for_all(&displays, up_at, 3, 30).await;
    stop_and_drain(&displays).await;
    problems.extend(wait_all_stored_once(&db.check, &displays, 20).await);
    assert!(
        problems.is_empty(),
        "{}\n/healthz: {timeline:?}",
        problems.join("\n")
    );
    all_acknowledged(&rig.tap).await;
    assert!(
        sent_while_down > 0,
        "no receipt was sent while Mosquitto was down"
    );
    for x in &displays {
        assert!(x.connacks() >= 2, "{} did not reconnect", x.summary());
    }
    let sent = total_sent(&displays) as u64;
    let repeats: usize = displays.iter().map(Display::repeats).sum();
    assert_eq!(m.receipts_stored.load(Ordering::Relaxed), sent);
    assert!(m.receipts_duplicate.load(Ordering::Relaxed) >= repeats as u64);
    assert_eq!(m.rejects_total(), 0);
    assert_rotation_uninterrupted(&db.check).await;
    eprintln!(
        "mosquitto restart ({backend:?}): {sent} receipts sent ({sent_while_down} while the \
         broker was down, {repeats} sent twice); /healthz {timeline:?}; healthy {back_after:?} \
         after the broker"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn a_mosquitto_restart_mid_run_loses_no_receipt_and_counts_none_twice_sqlite() {
    mosquitto_restart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn a_mosquitto_restart_mid_run_loses_no_receipt_and_counts_none_twice_postgres() {
    mosquitto_restart(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------
// 3. PostgreSQL crashed and restarted; unreachable for 30 s
// ---------------------------------------------------------------------------------------

/// PostgreSQL dies (immediate shutdown: every backend killed mid-statement) while the
/// daemon holds receipts in a batch, and starts again 5 s later: no PUBACK meanwhile,
/// `/healthz` says the database is failing, and afterwards every receipt is stored once,
/// the held ones included, and the rotation neither skipped nor repeated a pick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn a_postgresql_restart_mid_batch_loses_no_receipt_and_counts_none_twice() {
    require_env();
    let dir = city();
    let mut pg = PgCluster::start().await;
    let daemon_store = PgStore::connect(&pg.url()).await.expect("postgres");
    let store = PgStore::connect(&pg.url()).await.expect("postgres");
    let rig = Rig::start(
        dir,
        daemon_store.into(),
        Arc::new(civicast::daemon::SystemClock),
        Duration::from_secs(1),
    )
    .await;
    let displays = Display::fleet(rig.broker.port);
    wait_for("three receipts from each display", 20, || {
        displays.iter().all(|x| x.sent() >= 3)
    })
    .await;
    wait_for("receipts in a batch, unacknowledged", 15, || {
        !rig.tap.unacked_receipts().is_empty()
    })
    .await;
    pg.crash().await;
    let down_at = Instant::now();
    let held = rig.tap.unacked_receipts();
    let (mut problems, timeline) = health_while_down(&rig.router, "database", 3.0, 5.0).await;
    let acked_while_down = rig
        .tap
        .acks_between(down_at + Duration::from_millis(300), Instant::now());
    pg.start_again().await;
    let up_at = Instant::now();
    let back_after = healthy_again(&rig.router, 30).await;
    new_plays_for_all(&displays, up_at, 3, 30).await;
    stop_and_drain(&displays).await;
    problems.extend(wait_all_stored_once(&store, &displays, 20).await);
    problems.extend(not_stored(&store, &held).await);
    if acked_while_down > 0 {
        problems.push(format!(
            "{acked_while_down} PUBACKs while PostgreSQL was down"
        ));
    }
    assert!(
        problems.is_empty(),
        "{}\n/healthz: {timeline:?}",
        problems.join("\n")
    );
    assert!(!held.is_empty());
    all_acknowledged(&rig.tap).await;
    assert_rotation_uninterrupted(&store).await;
    eprintln!(
        "postgres restart: {} receipts sent, {} held in the batch at the crash; /healthz \
         {timeline:?}; healthy {back_after:?} after the restart",
        total_sent(&displays),
        held.len()
    );
    rig.stop().await;
}

/// PostgreSQL unreachable for 30 s (a proxy drops every connection and refuses new
/// ones): the daemon acknowledges nothing (the tap sees no PUBACK) and stores nothing
/// meanwhile, never exits, `/healthz` answers 503 naming the database; restored, every
/// receipt it held or that was sent meanwhile is acknowledged and stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn thirty_seconds_without_postgresql_acknowledge_nothing_and_lose_nothing() {
    const CUT: Duration = Duration::from_secs(30);
    require_env();
    let (pg, rig) = on_proxied_pg().await;
    let m = rig.metrics();
    let displays = fleet_storing(&rig).await;
    let (st, v) = healthz(&rig.router).await;
    assert_eq!(st, StatusCode::OK, "healthy before the cut: {v}");

    a_receipt_just_sent(&displays).await;
    let tasks = rig.running.tasks_running();
    let open = pg.proxy.cut().await;
    let cut_at = Instant::now();
    // A commit that was already on the wire may still land; after that, nothing may.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quiet_from = Instant::now();
    let stored_at_cut = m.receipts_stored.load(Ordering::Relaxed);
    let mut problems: Vec<String> = Vec::new();
    let mut timeline = Vec::new();
    while cut_at.elapsed() < CUT {
        let stored = m.receipts_stored.load(Ordering::Relaxed);
        if stored != stored_at_cut {
            problems.push(format!(
                "{:.1} s into the cut: receipts_stored {stored_at_cut} -> {stored}",
                cut_at.elapsed().as_secs_f64()
            ));
        }
        if rig.running.tasks_running() != tasks {
            problems.push(format!(
                "{:.1} s into the cut: {} of the daemon's {tasks} tasks left",
                cut_at.elapsed().as_secs_f64(),
                rig.running.tasks_running()
            ));
        }
        let left = (CUT.as_secs_f64() - cut_at.elapsed().as_secs_f64()).clamp(0.0, 5.0);
        let notice = 5.0 - cut_at.elapsed().as_secs_f64();
        let (p, t) = health_while_down(&rig.router, "database", notice.max(0.0), left).await;
        problems.extend(p);
        timeline.extend(t);
    }
    let acked_during_cut = rig.tap.acks_between(quiet_from, Instant::now());
    let held = rig.tap.unacked_receipts();
    let sent_during_cut = sent_between(&displays, cut_at, Instant::now());
    let commit_failures = m.commit_failures.load(Ordering::Relaxed);
    pg.proxy.restore().await;
    let restored_at = Instant::now();
    let healthy_after = healthy_again(&rig.router, 30).await;
    new_plays_for_all(&displays, restored_at, 3, 30).await;
    stop_and_drain(&displays).await;
    problems.extend(wait_all_stored_once(&pg.direct, &displays, 20).await);
    problems.extend(not_stored(&pg.direct, &held).await);
    if acked_during_cut > 0 {
        problems.push(format!("{acked_during_cut} PUBACKs during the cut"));
    }
    if held.is_empty() {
        problems.push("no receipt was held unacknowledged at the end of the cut".into());
    }
    let sent = total_sent(&displays) as u64;
    let stored = m.receipts_stored.load(Ordering::Relaxed);
    if stored != sent {
        problems.push(format!("receipts_stored {stored}, displays sent {sent}"));
    }
    if sent_during_cut == 0 {
        problems.push("no receipt was sent during the cut".into());
    }
    eprintln!(
        "postgres cut: {open} connections dropped; during the {CUT:?} cut {sent_during_cut} \
         receipts sent, {acked_during_cut} PUBACKs, {} receipts held unacknowledged at its \
         end, {commit_failures} failed commits, receipts_stored stayed {stored_at_cut}; \
         /healthz {timeline:?}; healthy again {healthy_after:?} after the restore; {sent} \
         receipts sent in all, {stored} stored, {} duplicates",
        held.len(),
        m.receipts_duplicate.load(Ordering::Relaxed),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    all_acknowledged(&rig.tap).await;
    assert_eq!(m.rejects_total(), 0);
    rig.stop().await;
}

/// A late receipt (a bus's backlog after a tunnel) for a play no longer in the daemon's
/// memory arrives while PostgreSQL is unreachable: it is not rejected; once the database
/// is back it is counted, and nothing was refused as an unknown play.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn a_receipt_for_an_uncached_play_waits_out_a_database_outage() {
    use civicast::store::NewPlay;
    require_env();
    let broker = Mosquitto::start().await;
    let port = broker.port;
    let dir = tempfile::tempdir().expect("tempdir");
    write_city(dir.path());
    let pg = ProxiedPg::start().await;
    let direct = pg.direct.clone();
    let (running, shutdown) = start_daemon(
        dir.path(),
        pg.store.clone(),
        Broker::Mosquitto {
            port,
            session_within: 15,
        },
        |_| {},
    )
    .await;
    // A play on the bus feed recorded behind the daemon's back: it is not in its cache,
    // as a play from before a restart or older than the cache would not be.
    let catalog = load_city(dir.path());
    let db: Db = direct.clone().into();
    let now = chrono::Utc::now().timestamp_millis();
    let keys = civicast::daemon::sync_inventory(&db, &catalog, now)
        .await
        .expect("keys");
    let slogan = direct
        .slogan_key("civility", 1, "jiang-wenming")
        .await
        .expect("slogan");
    let play_id = ulid::Ulid::new().to_string();
    let play = NewPlay {
        play_id: play_id.clone(),
        feed: keys.feeds.get("bus").copied(),
        device: None,
        slogan,
        issued_ms: now,
        expires_ms: now + 180_000,
        members: 2,
    };
    direct.record_play(&play, None).await.expect("play");

    let bus = Client::login("bus-1", "bus-1", port, true, &[]).await;
    wait_for("bus-1 connected", 10, || {
        bus.seen.lock().expect("lock").connacks > 0
    })
    .await;
    pg.proxy.cut().await;
    bus.send_receipt("bus-1", receipt(&play_id, "")).await;
    // Longer than the pool's 5 s wait for a connection, so the lookup does fail.
    tokio::time::sleep(Duration::from_secs(8)).await;
    pg.proxy.restore().await;
    let want = ("bus-1".to_owned(), play_id.clone());
    wait_until("the late receipt, stored", 30, || async {
        let rows = receipt_rows(&direct).await;
        if rows.contains(&want) {
            Ok(())
        } else {
            Err(format!("{} receipts stored, not that one", rows.len()))
        }
    })
    .await;
    let rejects = direct.reject_counts().await.expect("rejects");
    assert!(
        rejects.iter().all(|r| r.reason != "unknown_play"),
        "a failure of ours rejected a receipt: {rejects:?}"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(15), running.wait())
        .await
        .expect("the daemon stops");
    drop(broker);
}

/// The plays stored on `feed`, by play id, in the order they were recorded.
async fn stored_play_ids(store: &PgStore, feed: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT p.play_id FROM plays p JOIN feeds f ON f.id = p.feed WHERE f.name = $1 ORDER BY p.id",
    )
    .bind(feed)
    .fetch_all(store.pool())
    .await
    .expect("plays")
}

/// PostgreSQL commits a play and its feed's advanced cursor, and its answer is lost (the
/// proxy drops the connection right after the COMMIT's answer left the server): the
/// scheduler cannot tell whether the play was stored. The feed's next slot asks the store,
/// so the rotation neither repeats nor skips a pick, and every stored play goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn a_play_committed_whose_answer_is_lost_is_neither_repeated_nor_left_unsent() {
    require_env();
    let dir = city();
    let pg = ProxiedPg::start().await;
    // No displays: the scheduler's plays are the only transactions, so the lost answer is a
    // play's.
    let rig = Rig::start(
        dir,
        pg.store.clone().into(),
        Arc::new(civicast::daemon::SystemClock),
        Duration::from_millis(50),
    )
    .await;
    let feeds = [format!("{P}/feeds/#")];
    let watcher = Client::login("observer", "observer", rig.broker.port, true, &feeds).await;
    watcher.subscribed(1).await;
    let stored = |feed: &'static str| {
        let direct = &pg.direct;
        async move { stored_play_ids(direct, feed).await.len() }
    };
    // A play recorded before the watcher subscribed may have gone out before it listened.
    let watched_from = [stored("bus").await, stored("taxi").await];
    wait_until("two plays stored on each feed", 30, || async {
        match (stored("bus").await, stored("taxi").await) {
            (b, t) if b >= 2 && t >= 2 => Ok(()),
            got => Err(format!("{got:?}")),
        }
    })
    .await;
    pg.proxy.lose_next_commit_answer();
    wait_for("a COMMIT answer lost", 30, || {
        pg.proxy.commit_answers_lost() == 1
    })
    .await;
    let (bus, taxi) = (stored("bus").await, stored("taxi").await);
    wait_until("three more plays stored on each feed", 45, || async {
        match (stored("bus").await, stored("taxi").await) {
            (b, t) if b >= bus + 3 && t >= taxi + 3 => Ok(()),
            got => Err(format!("{got:?}, from {:?}", (bus, taxi))),
        }
    })
    .await;
    assert_rotation_uninterrupted(&pg.direct).await;
    for (feed, from) in ["bus", "taxi"].into_iter().zip(watched_from) {
        let ids = stored_play_ids(&pg.direct, feed).await.split_off(from);
        wait_until(
            &format!("every play stored on {feed} published"),
            15,
            || {
                let seen: BTreeSet<String> = watcher
                    .on(&format!("/feeds/{feed}"))
                    .iter()
                    .map(play_id)
                    .collect();
                let missing: Vec<&String> = ids.iter().filter(|id| !seen.contains(*id)).collect();
                async move {
                    if missing.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("stored, never published: {missing:?}"))
                    }
                }
            },
        )
        .await;
    }
    rig.stop().await;
}

/// PostgreSQL commits batches of receipts whose answers are lost (COMMIT answers are
/// dropped until one of them was a receipt batch's): the daemon cannot tell that they were
/// stored, so it acknowledges nothing and tries again. In the end every receipt is stored
/// once and acknowledged, the rotation is whole, and the receipt log holds each receipt
/// exactly once (`audit verify` finds nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn receipts_committed_whose_answer_is_lost_are_stored_and_logged_once() {
    require_env();
    let (pg, rig) = on_proxied_pg().await;
    let m = rig.metrics();
    let displays = fleet_storing(&rig).await;
    let failed_before = m.commit_failures.load(Ordering::Relaxed);
    for lost in 1..=10 {
        pg.proxy.lose_next_commit_answer();
        wait_for("a COMMIT answer lost", 30, || {
            pg.proxy.commit_answers_lost() == lost
        })
        .await;
        // A receipt batch's failure is counted once the daemon has seen the error; a play's
        // is the scheduler's and is not.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if m.commit_failures.load(Ordering::Relaxed) > failed_before {
            break;
        }
    }
    assert!(
        m.commit_failures.load(Ordering::Relaxed) > failed_before,
        "none of {} lost COMMIT answers was a receipt batch's",
        pg.proxy.commit_answers_lost()
    );
    let after = Instant::now();
    new_plays_for_all(&displays, after, 2, 30).await;
    stop_and_drain(&displays).await;
    let problems = wait_all_stored_once(&pg.direct, &displays, 20).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    all_acknowledged(&rig.tap).await;
    assert_rotation_uninterrupted(&pg.direct).await;
    let db: Db = pg.direct.clone().into();
    let verified = civicast::receipt_log::live::verify_live(&db, None)
        .await
        .expect("verify the receipt log");
    assert!(
        verified.ok(),
        "the receipt log after lost answers: {:?} {:?}",
        verified.findings,
        verified.tree_problems
    );
    rig.stop().await;
}

// ---------------------------------------------------------------------------------------
// 4. SQLite's disk full
// ---------------------------------------------------------------------------------------

/// SQLite's file system fills up (a 16 MiB tmpfs, filled to the last byte) mid-run: the
/// daemon acknowledges nothing, `/healthz` says the database is failing, it keeps running;
/// space freed, every receipt lands exactly once and new plays flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn a_full_disk_under_sqlite_acknowledges_nothing_and_loses_nothing() {
    require_env();
    let fs = Tmpfs::mount("16m").unwrap_or_else(|e| {
        panic!("this test needs a small file system to fill (run as root): {e}")
    });
    let dir = city();
    let url = format!("sqlite://{}", fs.path().join("civicast.db").display());
    let daemon_store = SqliteStore::connect(&url)
        .await
        .expect("sqlite on the tmpfs");
    let store = SqliteStore::connect(&url)
        .await
        .expect("sqlite on the tmpfs");
    let rig = Rig::start(
        dir,
        daemon_store.clone().into(),
        Arc::new(civicast::daemon::SystemClock),
        Duration::from_millis(300),
    )
    .await;
    let m = rig.metrics();
    let displays = Display::fleet(rig.broker.port);
    wait_for("three receipts from each display", 20, || {
        displays.iter().all(|x| x.sent() >= 3)
    })
    .await;
    a_receipt_just_sent(&displays).await;
    let tasks = rig.running.tasks_running();
    // A write-ahead log that was reset reuses its own pages, so SQLite commits on a full
    // disk until the log must grow; an empty log (as after a checkpoint that truncated
    // it) must grow at the next commit, as it does for good once the database file cannot.
    let wal = fs.path().join("civicast.db-wal");
    let wal_len = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    wait_until("the write-ahead log truncated", 10, || async {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(store.pool())
            .await
            .expect("checkpoint");
        match busy {
            0 => Ok(()),
            _ => Err(format!("busy; the log holds {} bytes", wal_len())),
        }
    })
    .await;
    let filled = fs.fill();
    let full_at = Instant::now();
    let (mut problems, timeline) = health_while_down(&rig.router, "database", 3.0, 6.0).await;
    let acked_while_full = rig
        .tap
        .acks_between(full_at + Duration::from_millis(300), Instant::now());
    let held = rig.tap.unacked_receipts();
    let sent_while_full = sent_between(&displays, full_at, Instant::now());
    let commit_failures = m.commit_failures.load(Ordering::Relaxed);
    if rig.running.tasks_running() != tasks {
        problems.push("a task of the daemon ended while the disk was full".into());
    }
    fs.free();
    let freed_at = Instant::now();
    let back_after = healthy_again(&rig.router, 30).await;
    new_plays_for_all(&displays, freed_at, 3, 30).await;
    stop_and_drain(&displays).await;
    problems.extend(wait_all_stored_once(&store, &displays, 20).await);
    problems.extend(not_stored(&store, &held).await);
    if acked_while_full > 0 {
        problems.push(format!(
            "{acked_while_full} PUBACKs while the disk was full"
        ));
    }
    if held.is_empty() {
        problems.push("no receipt was held unacknowledged while the disk was full".into());
    }
    eprintln!(
        "disk full: {filled} bytes filled; meanwhile {sent_while_full} receipts sent, \
         {acked_while_full} PUBACKs, {} held, {commit_failures} failed commits; /healthz \
         {timeline:?}; healthy {back_after:?} after space was freed; {} sent in all",
        held.len(),
        total_sent(&displays),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    all_acknowledged(&rig.tap).await;
    assert_eq!(m.rejects_total(), 0);
    assert_rotation_uninterrupted(&store).await;
    rig.stop().await;
    store.pool().close().await;
    drop(fs);
}

// ---------------------------------------------------------------------------------------
// 5. The clock jumps
// ---------------------------------------------------------------------------------------

/// The machine's clock (the daemon's, and the displays' that stamp `started_at`) jumps an
/// hour forward, then back an hour: plays continue on every feed after each jump,
/// `/healthz` stays 200 (nothing failed), and exactly the receipts whose `started_at`
/// lies in the contract's window of their play ([issued_at - 2 min, expires_at + 2 min],
/// worked out here from the play commands the displays got) are counted, each once; the
/// others (a play issued before a jump and shown after it) are rejected as out of window.
async fn clock_jumps(backend: Backend) {
    const HOUR: i64 = 3_600_000;
    const SLACK: i64 = 120_000;
    require_env();
    let dir = city();
    let db = TestDb::open(backend, dir.path()).await;
    let clock = Arc::new(ShiftedClock::default());
    let offset = clock.offset_ms.clone();
    let rig = Rig::start(dir, db.db.clone(), clock, Duration::from_millis(300)).await;
    let m = rig.metrics();
    let habits = DisplayHabits {
        copies: 1,
        clock_offset_ms: Some(offset.clone()),
        ..Default::default()
    };
    let displays: Vec<Display> = DISPLAYS
        .iter()
        .map(|(id, v5)| Display::connect_with(id, rig.broker.port, *v5, habits.clone()))
        .collect();
    wait_for("three receipts from each display", 20, || {
        displays.iter().all(|x| x.sent() >= 3)
    })
    .await;
    let mut problems = Vec::new();
    for (step, to) in [("forward", HOUR), ("back", 0)] {
        offset.store(to, Ordering::Relaxed);
        let at = Instant::now();
        // Plays go on: three on every display after the jump.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !displays.iter().all(|d| d.plays_after(at) >= 3) {
            if Instant::now() > deadline {
                panic!(
                    "after the jump {step}: plays stopped: {:?}",
                    displays
                        .iter()
                        .map(|d| (d.id.clone(), d.plays_after(at)))
                        .collect::<Vec<_>>()
                );
            }
            let (st, v) = healthz(&rig.router).await;
            if st != StatusCode::OK {
                problems.push(format!("after the jump {step}: /healthz {st} {v}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop_and_drain(&displays).await;
    // The oracle: the window of each receipt's play, from the play command itself.
    let mut in_window: BTreeSet<(String, String)> = BTreeSet::new();
    let mut outside = 0u64;
    for d in &displays {
        for (play, (issued, expires, started)) in d.windows() {
            if issued - SLACK <= started && started <= expires + SLACK {
                in_window.insert((d.id.clone(), play));
            } else {
                outside += 1;
            }
        }
    }
    let handled = || {
        m.receipts_stored.load(Ordering::Relaxed)
            + m.receipts_duplicate.load(Ordering::Relaxed)
            + m.rejects_total()
    };
    let sent = total_sent(&displays) as u64;
    wait_for("every receipt handled", 20, || handled() >= sent).await;
    all_acknowledged(&rig.tap).await;
    let rows: Vec<(String, String)> = receipt_rows(&db.check).await;
    let stored: BTreeSet<(String, String)> = rows.iter().cloned().collect();
    if rows.len() != stored.len() {
        problems.push(format!("{} rows for {} receipts", rows.len(), stored.len()));
    }
    if stored != in_window {
        problems.push(format!(
            "stored but outside the window: {:?}; in the window but not stored: {:?}",
            stored.difference(&in_window).collect::<Vec<_>>(),
            in_window.difference(&stored).collect::<Vec<_>>()
        ));
    }
    let rejects: BTreeMap<String, i64> = db
        .check
        .reject_counts()
        .await
        .expect("rejects")
        .into_iter()
        .map(|r| (r.reason, r.count))
        .collect();
    let want: BTreeMap<String, i64> = if outside > 0 {
        [("out_of_window".to_owned(), outside as i64)].into()
    } else {
        BTreeMap::new()
    };
    if rejects != want {
        problems.push(format!("rejects {rejects:?}, expected {want:?}"));
    }
    assert_rotation_uninterrupted(&db.check).await;
    eprintln!(
        "clock jumps ({backend:?}): {sent} receipts, {} in their window and stored, {outside} \
         outside it and rejected",
        in_window.len()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn the_clock_jumping_an_hour_forward_and_back_loses_and_doubles_nothing_sqlite() {
    clock_jumps(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn the_clock_jumping_an_hour_forward_and_back_loses_and_doubles_nothing_postgres() {
    clock_jumps(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------
// 6. Ten times the duplicates
// ---------------------------------------------------------------------------------------

/// Every display sends each receipt ten times, the copies interleaved with those of other
/// receipts: each receipt is counted once, every copy after the first is counted as a
/// duplicate, and nothing is rejected.
async fn tenfold_duplicates(backend: Backend) {
    require_env();
    let dir = city();
    let db = TestDb::open(backend, dir.path()).await;
    let rig = Rig::start(
        dir,
        db.db.clone(),
        Arc::new(civicast::daemon::SystemClock),
        Duration::from_millis(100),
    )
    .await;
    let m = rig.metrics();
    let habits = DisplayHabits {
        copies: 10,
        ..Default::default()
    };
    let displays: Vec<Display> = DISPLAYS
        .iter()
        .map(|(id, v5)| Display::connect_with(id, rig.broker.port, *v5, habits.clone()))
        .collect();
    wait_for("eight receipts from each display", 30, || {
        displays.iter().all(|x| x.sent() >= 8)
    })
    .await;
    stop_and_drain(&displays).await;
    let problems = wait_all_stored_once(&db.check, &displays, 20).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    all_acknowledged(&rig.tap).await;
    let sent = total_sent(&displays) as u64;
    let repeats: u64 = displays.iter().map(|d| d.repeats() as u64).sum();
    assert_eq!(repeats, 9 * sent, "every receipt went out ten times");
    wait_for("every copy handled", 10, || {
        m.receipts_duplicate.load(Ordering::Relaxed) >= repeats
    })
    .await;
    assert_eq!(m.receipts_stored.load(Ordering::Relaxed), sent);
    assert_eq!(m.receipts_duplicate.load(Ordering::Relaxed), repeats);
    assert_eq!(m.rejects_total(), 0);
    assert_eq!(healthz(&rig.router).await.0, StatusCode::OK);
    eprintln!(
        "tenfold duplicates ({backend:?}): {sent} receipts, {repeats} copies, each counted once"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn every_receipt_sent_ten_times_is_counted_once_sqlite() {
    tenfold_duplicates(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn every_receipt_sent_ten_times_is_counted_once_postgres() {
    tenfold_duplicates(Backend::Postgres).await;
}
