//! The receipt guarantees of the contract under failure, against real Mosquitto (the deploy
//! files) and real PostgreSQL: the daemon SIGKILLed mid-run, Mosquitto restarted mid-run,
//! and PostgreSQL unreachable for 30 s. In each, displays keep answering plays (a receipt
//! 1-2 s after each play, as a scroll ends; every fifth sent twice) and afterwards every
//! receipt they sent is stored exactly once.
//!
//! Needs `mosquitto` and `mosquitto_passwd` on the PATH, `CIVICAST_TEST_MQTT` set and
//! `CIVICAST_TEST_PG` naming a PostgreSQL database (each test works in a schema of its
//! own, dropped at the end):
//!
//! ```sh
//! CIVICAST_TEST_MQTT=1 CIVICAST_TEST_PG=postgres://postgres@127.0.0.1:5432/test \
//!   cargo test --test failures -- --include-ignored --test-threads 1
//! ```
//! Run with `--include-ignored` but without either variable, these tests fail instead of
//! skipping.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use civicast::store::PgStore;
use common::*;

const NEEDS: &str = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG";

/// The PostgreSQL URL; fails (never skips) when either variable is missing.
fn require_env() -> String {
    assert!(
        std::env::var_os("CIVICAST_TEST_MQTT").is_some(),
        "{NEEDS}: CIVICAST_TEST_MQTT is not set (Mosquitto installed: any value)"
    );
    std::env::var("CIVICAST_TEST_PG").unwrap_or_else(|_| {
        panic!(
            "{NEEDS}: CIVICAST_TEST_PG is not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
        )
    })
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

/// The rotation of each feed across whatever happened equals an uninterrupted one.
async fn assert_rotation_uninterrupted(store: &PgStore) -> usize {
    let mut n = usize::MAX;
    for feed in ["bus", "taxi"] {
        let slogans = feed_slogans(store, feed).await;
        assert_eq!(
            slogans,
            uninterrupted_rotation(slogans.len()),
            "feed {feed}: the rotation restarted instead of resuming its cursor"
        );
        n = n.min(slogans.len());
    }
    n
}

/// 1. `civicast serve` (its own process, PostgreSQL by URL) is SIGKILLed mid-run while
///    displays keep answering plays; receipts sent while it is down wait in its persistent
///    session; restarted, it stores every receipt exactly once and its rotation goes on
///    from the stored cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn sigkill_of_serve_loses_no_receipt_counts_none_twice_and_resumes_the_rotation() {
    let base = require_env();
    with_schema(base, |schema| async move {
        let broker = Mosquitto::start().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        write_city(d);
        // Receipts wait up to 1 s for their batch: at the kill, some are in the daemon's
        // hands, unacknowledged.
        let config = d.join("civicast.toml");
        std::fs::write(&config, "batch_wait = \"1s\"\n").expect("config");
        let env = [
            (
                "CIVICAST_MQTT_URL",
                format!("mqtt://civicast:pw-civicast@127.0.0.1:{}", broker.port),
            ),
            ("CIVICAST_DATABASE_URL", schema.url()),
            ("CIVICAST_DEVICES", d.join("devices").display().to_string()),
            (
                "CIVICAST_SCHEDULES",
                d.join("schedules").display().to_string(),
            ),
            ("CIVICAST_HTTP_LISTEN", "127.0.0.1:0".to_owned()),
        ];
        let store = schema.store().await;

        let mut first = Serve::spawn(d, &env, Some(&config), 1);
        first.ready(60).await;
        let displays = Display::fleet(broker.port);
        wait_for("three receipts from each display", 20, || {
            displays.iter().all(|x| x.sent() >= 3)
        })
        .await;
        a_receipt_just_sent(&displays).await;
        let sent_at_kill = total_sent(&displays);
        first.kill();
        let killed_at = Instant::now();
        let stored_at_kill = receipt_rows(&store).await.len();
        let plays_before = feed_slogans(&store, "bus").await.len();

        // Down for a while: the displays keep sending receipts for the plays they got.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut second = Serve::spawn(d, &env, Some(&config), 2);
        second.ready(60).await;
        let up_at = Instant::now();
        let sent_while_down = sent_between(&displays, killed_at, up_at);
        assert!(
            sent_while_down > 0,
            "no receipt was sent while the daemon was down"
        );
        new_plays_for_all(&displays, up_at, 3, 20).await;
        stop_and_drain(&displays).await;
        let problems = wait_all_stored_once(&store, &displays, 20).await;
        assert!(problems.is_empty(), "{}", problems.join("\n"));

        let plays = assert_rotation_uninterrupted(&store).await;
        assert!(
            plays >= plays_before + 3,
            "the feeds played on after the restart: {plays_before} then {plays}"
        );
        let (_, metrics) = http_get(second.http.expect("http"), "/metrics")
            .await
            .expect("/metrics");
        eprintln!(
            "sigkill: {} receipts sent ({} before the kill, {} stored at the kill, {} while down); \
             after the restart the daemon stored {:?} and saw {:?} duplicates; {} plays on the \
             shortest feed ({} before the kill)",
            total_sent(&displays),
            sent_at_kill,
            stored_at_kill,
            sent_while_down,
            metric(&metrics, "civicast_receipts_stored_total"),
            metric(&metrics, "civicast_receipts_duplicate_total"),
            plays,
            plays_before,
        );
        for x in &displays {
            eprintln!("  {}", x.summary());
        }
        second.terminate().await;
        store.pool().close().await;
        drop(broker);
    })
    .await;
}

/// 2. Mosquitto stops (SIGTERM: it saves its database) and starts again on the same port
///    mid-run: the daemon and the displays reconnect, and every receipt the displays sent,
///    before, during and after, is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn a_mosquitto_restart_mid_run_loses_no_receipt_and_counts_none_twice() {
    let base = require_env();
    with_schema(base, |schema| async move {
        let mut broker = Mosquitto::start().await;
        let port = broker.port;
        let dir = tempfile::tempdir().expect("tempdir");
        write_city(dir.path());
        let store = schema.store().await;
        let (running, shutdown) = start_daemon(
            dir.path(),
            store.clone(),
            Broker::Mosquitto {
                port,
                session_within: 15,
            },
            |s| s.batch_wait = Some(Duration::from_millis(300)),
        )
        .await;
        let m = running.metrics().clone();
        let saw_disconnect = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (m, saw) = (m.clone(), saw_disconnect.clone());
            tokio::spawn(async move {
                loop {
                    if !m.broker_connected.load(Ordering::Relaxed) {
                        saw.store(true, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };

        let displays = Display::fleet(port);
        wait_for("three receipts from each display", 20, || {
            displays.iter().all(|x| x.sent() >= 3)
        })
        .await;
        a_receipt_just_sent(&displays).await;
        broker.stop().await;
        let down_at = Instant::now();
        // Down for a while: the displays keep sending receipts for the plays they got.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let broker = broker.start_again().await;
        let up_at = Instant::now();
        let sent_while_down = sent_between(&displays, down_at, up_at);
        wait_for("the daemon's session back", 30, || {
            m.broker_connected.load(Ordering::Relaxed)
        })
        .await;
        let back_after = up_at.elapsed();
        new_plays_for_all(&displays, up_at, 3, 30).await;
        stop_and_drain(&displays).await;
        let problems = wait_all_stored_once(&store, &displays, 20).await;
        watcher.abort();

        if !problems.is_empty() {
            // When were the lost receipts sent, against the broker's restart?
            let stored: BTreeSet<(String, String)> =
                receipt_rows(&store).await.into_iter().collect();
            let secs = |t: Instant| t.duration_since(down_at).as_secs_f64();
            let mut lost = Vec::new();
            for x in &displays {
                for id in x.sent_ids() {
                    if !stored.contains(&(x.id.clone(), id.clone())) {
                        let at = x.sent_at(&id).map(secs);
                        lost.push(format!("{} {id} handed to its client at {at:.1?} s", x.id));
                    }
                }
            }
            panic!(
                "{}\ntimes from the broker's stop: back up at {:.1} s, the daemon's session \
                 back {:.1} s later\nlost: {lost:#?}",
                problems.join("\n"),
                secs(up_at),
                back_after.as_secs_f64()
            );
        }
        assert!(
            sent_while_down > 0,
            "no receipt was sent while Mosquitto was down"
        );
        assert!(
            saw_disconnect.load(Ordering::Relaxed),
            "the daemon never noticed the broker was gone"
        );
        for x in &displays {
            assert!(x.connacks() >= 2, "{} did not reconnect", x.summary());
        }
        let sent = total_sent(&displays) as u64;
        let repeats: usize = displays.iter().map(Display::repeats).sum();
        assert_eq!(m.receipts_stored.load(Ordering::Relaxed), sent);
        assert!(m.receipts_duplicate.load(Ordering::Relaxed) >= repeats as u64);
        assert_eq!(m.rejects_total(), 0);
        assert_rotation_uninterrupted(&store).await;
        eprintln!(
            "mosquitto restart: {sent} receipts sent ({sent_while_down} while the broker was down, \
             {repeats} sent twice), stored {}, duplicates {}; daemon back {:?} after the broker",
            m.receipts_stored.load(Ordering::Relaxed),
            m.receipts_duplicate.load(Ordering::Relaxed),
            back_after,
        );
        for x in &displays {
            eprintln!("  {}", x.summary());
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), running.wait())
            .await
            .expect("the daemon stops");
        store.pool().close().await;
        drop(broker);
    })
    .await;
}

/// `/healthz` through the router: (status, the `database` field).
async fn healthz(router: &axum::Router) -> (StatusCode, String) {
    let (status, body) = call(router, "GET", "/healthz", None, None, "").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    (status, v["database"].as_str().unwrap_or("").to_owned())
}

/// 3. PostgreSQL unreachable for 30 s (a proxy drops every connection and refuses new
///    ones): the daemon acknowledges nothing and stores nothing meanwhile, never exits,
///    `/healthz` answers 503 naming the database; restored, every receipt sent meanwhile is
///    stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn thirty_seconds_without_postgresql_acknowledge_nothing_and_lose_nothing() {
    const CUT: Duration = Duration::from_secs(30);
    /// How soon after the cut `/healthz` must say so.
    const NOTICE: Duration = Duration::from_secs(5);
    let base = require_env();
    with_schema(base, |schema| async move {
        let broker = Mosquitto::start().await;
        let port = broker.port;
        let dir = tempfile::tempdir().expect("tempdir");
        write_city(dir.path());
        let direct = schema.store().await;
        let proxy = Proxy::start(schema.upstream().await).await;
        let store = PgStore::connect_schema(&schema.base_via(proxy.addr), &schema.name)
            .await
            .expect("connect through the proxy");
        let (running, shutdown) = start_daemon(
            dir.path(),
            store.clone(),
            Broker::Mosquitto {
                port,
                session_within: 15,
            },
            |s| s.batch_wait = Some(Duration::from_millis(50)),
        )
        .await;
        let m = running.metrics().clone();
        let router = api_router(store.clone(), &running);

        let displays = Display::fleet(port);
        wait_for("three receipts from each display, stored", 20, || {
            displays.iter().all(|x| x.sent() >= 3) && m.receipts_stored.load(Ordering::Relaxed) >= 9
        })
        .await;
        let (st, db) = healthz(&router).await;
        assert_eq!(st, StatusCode::OK, "healthy before the cut: {db}");

        a_receipt_just_sent(&displays).await;
        let tasks = running.tasks_running();
        let open = proxy.cut().await;
        let cut_at = Instant::now();
        // A commit that was already on the wire may still land; after that, nothing may.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stored_at_cut = m.receipts_stored.load(Ordering::Relaxed);
        let plays_at_cut: usize = displays.iter().map(Display::plays).sum();
        let mut problems: Vec<String> = Vec::new();
        // (seconds since the cut, status, database) at each change of the answer.
        let mut timeline: Vec<(f64, u16, String)> = Vec::new();
        let mut first_503: Option<Duration> = None;
        while cut_at.elapsed() < CUT {
            let stored = m.receipts_stored.load(Ordering::Relaxed);
            if stored != stored_at_cut {
                problems.push(format!(
                    "{:.1} s into the cut: receipts_stored {stored_at_cut} -> {stored}",
                    cut_at.elapsed().as_secs_f64()
                ));
            }
            if running.tasks_running() != tasks {
                problems.push(format!(
                    "{:.1} s into the cut: {} of the daemon's {tasks} tasks left",
                    cut_at.elapsed().as_secs_f64(),
                    running.tasks_running()
                ));
            }
            let (st, db) = healthz(&router).await;
            let at = cut_at.elapsed();
            if timeline
                .last()
                .is_none_or(|l| (l.1, &l.2) != (st.as_u16(), &db))
            {
                timeline.push((at.as_secs_f64(), st.as_u16(), db.clone()));
            }
            if st == StatusCode::SERVICE_UNAVAILABLE && db.contains("failing") {
                first_503.get_or_insert(at);
            } else if first_503.is_some() || at > NOTICE {
                problems.push(format!(
                    "{:.1} s into the cut: /healthz {st} with database {db:?}",
                    at.as_secs_f64()
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let sent_during_cut = sent_between(&displays, cut_at, Instant::now());
        let plays_during_cut = displays.iter().map(Display::plays).sum::<usize>() - plays_at_cut;
        let commit_failures = m.commit_failures.load(Ordering::Relaxed);
        proxy.restore().await;
        let restored_at = Instant::now();
        let mut healthy_after = None;
        while restored_at.elapsed() < Duration::from_secs(30) {
            if healthz(&router).await.0 == StatusCode::OK {
                healthy_after = Some(restored_at.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        new_plays_for_all(&displays, restored_at, 3, 30).await;
        stop_and_drain(&displays).await;
        problems.extend(wait_all_stored_once(&direct, &displays, 20).await);

        let sent = total_sent(&displays) as u64;
        let stored = m.receipts_stored.load(Ordering::Relaxed);
        if stored != sent {
            problems.push(format!("receipts_stored {stored}, displays sent {sent}"));
        }
        if healthy_after.is_none() {
            problems.push("/healthz not 200 within 30 s of the restore".into());
        }
        if sent_during_cut == 0 {
            problems.push("no receipt was sent during the cut".into());
        }
        eprintln!(
            "postgres cut: {open} connections dropped; during the {CUT:?} cut {sent_during_cut} \
             receipts sent, {plays_during_cut} plays arrived, {commit_failures} failed commits, \
             receipts_stored stayed {stored_at_cut}; /healthz {timeline:?}; healthy again {:?} \
             after the restore; {sent} receipts sent in all, {stored} stored, {} duplicates",
            healthy_after,
            m.receipts_duplicate.load(Ordering::Relaxed),
        );
        for x in &displays {
            eprintln!("  {}", x.summary());
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert_eq!(m.rejects_total(), 0);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), running.wait())
            .await
            .expect("the daemon stops");
        store.pool().close().await;
        direct.pool().close().await;
        drop(broker);
    })
    .await;
}

/// 4. A late receipt (a bus's backlog after a tunnel) for a play no longer in the daemon's
///    memory arrives while PostgreSQL is unreachable: it is not rejected; once the database
///    is back it is counted, and nothing was refused as an unknown play.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn a_receipt_for_an_uncached_play_waits_out_a_database_outage() {
    use civicast::store::{NewPlay, Store};
    let base = require_env();
    with_schema(base, |schema| async move {
        let broker = Mosquitto::start().await;
        let port = broker.port;
        let dir = tempfile::tempdir().expect("tempdir");
        write_city(dir.path());
        let direct = schema.store().await;
        let proxy = Proxy::start(schema.upstream().await).await;
        let store = PgStore::connect_schema(&schema.base_via(proxy.addr), &schema.name)
            .await
            .expect("connect through the proxy");
        let (running, shutdown) = start_daemon(
            dir.path(),
            store.clone(),
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
        let db: civicast::store::Db = direct.clone().into();
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
        proxy.cut().await;
        bus.send_receipt("bus-1", receipt(&play_id, "")).await;
        // Longer than the pool's 5 s wait for a connection, so the lookup does fail.
        tokio::time::sleep(Duration::from_secs(8)).await;
        proxy.restore().await;
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
    })
    .await;
}
