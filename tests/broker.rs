//! The embedded broker as a display fleet meets it: the whole fleet connecting at once (half
//! MQTT 3.1.1, half 5, on one port, each with a last will), dying at once and coming back;
//! plays carrying the MQTT 5 message expiry to both protocol versions; and `civicast serve`
//! SIGKILLed while it holds receipts, losing none of them.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use civicast::store::SqliteStore;
use common::*;
use tokio_util::sync::CancellationToken;

const FLEET_SIZE: usize = 400;

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics anywhere in this test binary (the broker's tasks included).
fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::Relaxed);
            prev(info)
        }));
    });
}

/// The test city with `n` displays instead of three: buses on K1 and taxis, alternating.
fn write_fleet(dir: &Path, n: usize) -> Vec<String> {
    write_city(dir);
    let ids: Vec<String> = (0..n)
        .map(|i| match i % 2 {
            0 => format!("bus-{i}"),
            _ => format!("taxi-{i}"),
        })
        .collect();
    let mut csv = String::from("id,class,route\n");
    for id in &ids {
        match id.starts_with("bus") {
            true => csv.push_str(&format!("{id},bus_led,K1\n")),
            false => csv.push_str(&format!("{id},taxi_top,\n")),
        }
    }
    std::fs::write(dir.join("devices/fleet.csv"), csv).expect("fleet");
    ids
}

/// The sum over classes of `civicast_displays_online`, as `/metrics` shows it.
fn online(running: &civicast::daemon::App) -> i64 {
    running
        .metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with("civicast_displays_online{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

#[derive(Default)]
struct FleetCounts {
    configs: AtomicUsize,
    errors: AtomicUsize,
}

/// One display of the storm: a last will, its config subscription, its presence once the
/// config is in. When `die` fires its connection is dropped without DISCONNECT, as when
/// the power goes.
async fn storm_display(
    id: String,
    port: u16,
    v5: bool,
    counts: Arc<FleetCounts>,
    die: CancellationToken,
) {
    let status = format!("civicast/v1/devices/{id}/status");
    let will = r#"{"v":1,"online":false}"#;
    if v5 {
        use rumqttc::v5::mqttbytes::v5::{LastWill, Packet};
        use rumqttc::v5::mqttbytes::QoS;
        let mut o = rumqttc::v5::MqttOptions::new(id.clone(), "127.0.0.1", port);
        o.set_outgoing_inflight_upper_limit(8)
            .set_last_will(LastWill::new(
                status.clone(),
                will,
                QoS::AtLeastOnce,
                true,
                None,
            ));
        let (c, mut ev) = rumqttc::v5::AsyncClient::new(o, 16);
        let mut got = false;
        loop {
            let e = tokio::select! {
                _ = die.cancelled() => return,
                e = ev.poll() => e,
            };
            match e {
                Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = c.try_subscribe(config_topic(&id), QoS::AtLeastOnce);
                }
                Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p))) if !got => {
                    if p.topic.ends_with(b"/config") {
                        got = true;
                        counts.configs.fetch_add(1, Ordering::Relaxed);
                        let _ = c.try_publish(status.clone(), QoS::AtLeastOnce, true, online_now());
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    } else {
        use rumqttc::{Event, Incoming, LastWill, QoS};
        let mut o = rumqttc::MqttOptions::new(id.clone(), "127.0.0.1", port);
        o.set_inflight(8).set_last_will(LastWill::new(
            status.clone(),
            will,
            QoS::AtLeastOnce,
            true,
        ));
        let (c, mut ev) = rumqttc::AsyncClient::new(o, 16);
        let mut got = false;
        loop {
            let e = tokio::select! {
                _ = die.cancelled() => return,
                e = ev.poll() => e,
            };
            match e {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    let _ = c.try_subscribe(config_topic(&id), QoS::AtLeastOnce);
                }
                Ok(Event::Incoming(Incoming::Publish(p))) if !got => {
                    if p.topic.ends_with("/config") {
                        got = true;
                        counts.configs.fetch_add(1, Ordering::Relaxed);
                        let _ = c.try_publish(status.clone(), QoS::AtLeastOnce, true, online_now());
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
}

/// The whole fleet at once; returns its counts and the token that kills it.
fn storm(ids: &[String], port: u16) -> (Arc<FleetCounts>, CancellationToken) {
    let counts = Arc::new(FleetCounts::default());
    let die = CancellationToken::new();
    for (i, id) in ids.iter().enumerate() {
        tokio::spawn(storm_display(
            id.clone(),
            port,
            i % 2 == 1,
            counts.clone(),
            die.clone(),
        ));
    }
    (counts, die)
}

/// What a fresh subscriber reads from the retained presence of every display.
async fn retained_presence(port: u16, n: usize) -> BTreeMap<String, bool> {
    let watcher = Client::connect(
        "presence-watcher",
        port,
        true,
        &["civicast/v1/devices/+/status".into()],
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while watcher.received() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = watcher.seen.lock().expect("lock");
    seen.msgs
        .iter()
        .filter_map(|(topic, v, _, _)| {
            let id = topic
                .strip_prefix("civicast/v1/devices/")?
                .strip_suffix("/status")?;
            Some((id.to_owned(), v["online"].as_bool()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_connecting_at_once_dying_at_once_and_returning_leaves_presence_exact() {
    count_panics();
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = write_fleet(dir.path(), FLEET_SIZE);
    let store = sqlite_store(dir.path(), "c.db").await;
    let (running, shutdown) = start_daemon(dir.path(), store, Broker::Embedded, |_| {}).await;
    let port = embedded_port(&running);
    let n = ids.len();

    for round in ["first", "after the mass disconnect"] {
        let (counts, die) = storm(&ids, port);
        wait_for(
            &format!("{round}: every display's retained config"),
            30,
            || counts.configs.load(Ordering::Relaxed) == n,
        )
        .await;
        wait_until(
            &format!("{round}: every display online in /metrics"),
            20,
            || async {
                match online(&running) {
                    x if x == n as i64 => Ok(()),
                    x => Err(format!("{x} of {n} online")),
                }
            },
        )
        .await;
        assert_eq!(
            counts.errors.load(Ordering::Relaxed),
            0,
            "{round}: no display needed a retry"
        );
        // Every socket closes in the same instant; the broker publishes every last will.
        die.cancel();
        wait_until(
            &format!("{round}: no display online in /metrics"),
            20,
            || async {
                match online(&running) {
                    0 => Ok(()),
                    x => Err(format!("{x} still online")),
                }
            },
        )
        .await;
        let presence = retained_presence(port, n).await;
        let still_on: Vec<&String> = presence
            .iter()
            .filter(|(_, on)| **on)
            .map(|(d, _)| d)
            .collect();
        assert_eq!(
            presence.len(),
            n,
            "{round}: a retained presence for every display"
        );
        assert!(
            still_on.is_empty(),
            "{round}: retained as online after dying: {still_on:?}"
        );
        assert_eq!(
            running
                .shared()
                .online_names()
                .values()
                .filter(|on| **on)
                .count(),
            0,
            "{round}: the daemon's own presence table"
        );
    }
    assert_eq!(PANICS.load(Ordering::Relaxed), 0, "no panic");
    assert!(running.tasks_running() > 0, "the daemon still runs");
    shutdown.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plays_carry_the_mqtt5_message_expiry_and_reach_311_displays_on_the_same_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_city(dir.path());
    let store = sqlite_store(dir.path(), "c.db").await;
    // Plays valid for 30 s: rmqtt forwards the whole seconds left, so a play of the test
    // city's 1 s feeds would reach a display with none left (and no property) after a
    // millisecond in the broker.
    let (running, shutdown) = start_daemon(dir.path(), store, Broker::Embedded, |s| {
        s.play_ttl = Some(Duration::from_secs(30))
    })
    .await;
    let port = embedded_port(&running);
    let feed = "civicast/v1/feeds/bus".to_owned();
    let v5 = Client::connect("expiry-v5", port, true, std::slice::from_ref(&feed)).await;
    let v311 = Client::connect("expiry-311", port, false, &[feed]).await;
    wait_for("a play on the MQTT 5 subscriber", 10, || {
        !v5.on("/feeds/bus").is_empty()
    })
    .await;
    let (play, expiry) = {
        let seen = v5.seen.lock().expect("lock");
        let (_, v, _, expiry) = seen
            .msgs
            .iter()
            .find(|(t, ..)| t.ends_with("/feeds/bus"))
            .expect("a play");
        (v.clone(), *expiry)
    };
    let expiry = expiry.expect("the play carries the message expiry interval");
    let at = |f: &str| {
        chrono::DateTime::parse_from_rfc3339(play[f].as_str().expect("a time")).expect("RFC 3339")
    };
    let left = (at("expires_at") - at("issued_at")).num_seconds();
    assert!(
        expiry >= 20 && i64::from(expiry) <= left,
        "expiry {expiry} s, while the play is valid {left} s from its issue"
    );
    let id = play_id(&play);
    wait_for("the same play on the MQTT 3.1.1 subscriber", 10, || {
        v311.on("/feeds/bus").iter().any(|v| play_id(v) == id)
    })
    .await;
    shutdown.cancel();
    running.wait().await;
}

/// `civicast serve` on its embedded broker is SIGKILLed five times while displays answer
/// plays and its batches wait a second before committing, so every kill finds receipts it
/// has read and not stored. After each kill, every receipt a display had a PUBACK for is in
/// the database. The broker's sessions die with the process, so the displays' MQTT clients
/// drop what was unacknowledged (MQTT 5 requires it); these displays keep each receipt
/// until its PUBACK and send it again, so in the end every receipt sent is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_serve_on_the_embedded_broker_loses_no_acknowledged_receipt() {
    const KILLS: usize = 5;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_weighted_city(d);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = d.join("civicast.toml");
    std::fs::write(&config, "batch_wait = \"1s\"\n").expect("config");
    let db = format!("sqlite://{}", d.join("c.db").display());
    let env = [
        ("CIVICAST_MQTT_LISTEN", format!("127.0.0.1:{port}")),
        ("CIVICAST_DATABASE_URL", db.clone()),
        ("CIVICAST_DEVICES", d.join("devices").display().to_string()),
        (
            "CIVICAST_SCHEDULES",
            d.join("schedules").display().to_string(),
        ),
        ("CIVICAST_HTTP_LISTEN", "127.0.0.1:0".to_owned()),
    ];
    let mut serve = Serve::spawn(d, &env, Some(&config), 0);
    serve.ready(60).await;
    let habits = DisplayHabits {
        keeps_receipts: true,
        ..Default::default()
    };
    let displays: Vec<Display> = DISPLAYS
        .iter()
        .map(|(id, v5)| Display::connect_with(id, port, *v5, habits.clone()))
        .collect();
    wait_for("two receipts from each display", 20, || {
        displays.iter().all(|x| x.sent() >= 2)
    })
    .await;
    let mut waiting_at_kills = Vec::new();
    for k in 1..=KILLS {
        wait_for("a receipt sent and not yet acknowledged", 15, || {
            displays
                .iter()
                .any(|x| x.sent() + x.repeats() > x.pubacks())
        })
        .await;
        let acked: BTreeSet<(String, String)> = displays
            .iter()
            .flat_map(|x| x.acked_ids().into_iter().map(|p| (x.id.clone(), p)))
            .collect();
        let waiting: usize = displays
            .iter()
            .map(|x| (x.sent() + x.repeats()).saturating_sub(x.pubacks()))
            .sum();
        serve.kill();
        waiting_at_kills.push(waiting);
        // Dead: what the database holds now is all it will ever hold of this process.
        let store = SqliteStore::connect(&db).await.expect("sqlite");
        let stored: BTreeSet<(String, String)> = receipt_rows(&store).await.into_iter().collect();
        store.pool().close().await;
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "kill {k}: acknowledged, not stored: {lost:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        serve = Serve::spawn(d, &env, Some(&config), k);
        serve.ready(60).await;
        let up = Instant::now();
        wait_for("a new play on every display", 20, || {
            displays.iter().all(|x| x.plays_after(up) >= 1)
        })
        .await;
    }
    stop_and_drain(&displays).await;
    let store = SqliteStore::connect(&db).await.expect("sqlite");
    let problems = wait_all_stored_once(&store, &displays, 30).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        waiting_at_kills.iter().all(|w| *w > 0),
        "every kill found receipts unacknowledged: {waiting_at_kills:?}"
    );
    let panics = serve.log().matches("panicked").count();
    assert_eq!(panics, 0, "no panic in the daemon:\n{}", serve.log());
    eprintln!(
        "embedded sigkill x{KILLS}: receipts waiting for their PUBACK at each kill: {waiting_at_kills:?}"
    );
    serve.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_subscription_hands_each_message_to_one_member() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_city(dir.path());
    let store = sqlite_store(dir.path(), "c.db").await;
    let (running, shutdown) = start_daemon(dir.path(), store, Broker::Embedded, |_| {}).await;
    let port = embedded_port(&running);
    let filter = "$share/audit/civicast/v1/devices/+/status".to_owned();
    let a = Client::connect("share-a", port, true, std::slice::from_ref(&filter)).await;
    let b = Client::connect("share-b", port, false, &[filter]).await;
    a.subscribed(1).await;
    b.subscribed(1).await;
    let publisher = Client::connect("share-pub", port, true, &[]).await;
    const N: usize = 20;
    for i in 0..N {
        // Not retained: a shared subscription gets no retained messages, so these are all.
        publisher
            .publish(
                format!("civicast/v1/devices/share-{i}/status"),
                online_now(),
                false,
            )
            .await;
    }
    let got = |c: &Client| c.on("/devices/share-").len();
    wait_for("every message to one member", 10, || got(&a) + got(&b) >= N).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        got(&a) + got(&b),
        N,
        "each message once: {} + {}",
        got(&a),
        got(&b)
    );
    assert!(
        got(&a) > 0 && got(&b) > 0,
        "both members take turns: {} and {}",
        got(&a),
        got(&b)
    );
    shutdown.cancel();
    running.wait().await;
}
