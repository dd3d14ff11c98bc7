//! The loop end to end, in-process: the daemon with its embedded broker on a free port,
//! independent MQTT clients as displays (3.1.1 and 5), and the counts an auditor would see.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use civicast::core::audit::{PlaysParams, PlaysQuery};
use civicast::daemon::{self, SystemClock};
use civicast::settings::Settings;
use civicast::store::{SqliteStore, Store};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use tokio_util::sync::CancellationToken;

const CLASSES: &str = r#"
[class.bus_led]
max_chars = 40
charset = "gb2312"
duration = "1s"

[class.taxi_top]
max_chars = 12
charset = "gb2312"
duration = "1s"
"#;

const FEEDS: &str = r#"
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

const ADSET: &str = r#"
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

fn write_city(dir: &std::path::Path) {
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

/// A display (or an observer) that records what arrives on its subscriptions.
struct Client {
    client: Publisher,
    seen: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

#[derive(Clone)]
enum Publisher {
    V4(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Publisher {
    async fn publish(&self, topic: String, body: String) {
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
        .expect("publish");
    }
}

async fn connect(id: &str, port: u16, v5: bool, subs: &[String]) -> Client {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let subs: Vec<String> = subs.to_vec();
    let s2 = seen.clone();
    if v5 {
        use rumqttc::v5::mqttbytes::v5::Packet;
        let o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
        let (c, mut ev) = rumqttc::v5::AsyncClient::new(o, 100);
        let c2 = c.clone();
        tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(_))) => {
                        for s in &subs {
                            let _ = c2
                                .try_subscribe(s.clone(), rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
                        }
                    }
                    Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p))) => {
                        if let Ok(v) = serde_json::from_slice(&p.payload) {
                            let t = String::from_utf8_lossy(&p.topic).into_owned();
                            s2.lock().expect("lock").push((t, v));
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        return Client {
            client: Publisher::V5(c),
            seen,
        };
    }
    let (c, mut ev) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 100);
    let c2 = c.clone();
    tokio::spawn(async move {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    for s in &subs {
                        let _ = c2.try_subscribe(s.clone(), QoS::AtLeastOnce);
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if let Ok(v) = serde_json::from_slice(&p.payload) {
                        s2.lock().expect("lock").push((p.topic.clone(), v));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    });
    Client {
        client: Publisher::V4(c),
        seen,
    }
}

async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn receipt(play_id: &str, extra: &str) -> String {
    format!(
        r#"{{"v":1,"play_id":"{play_id}","started_at":"{}","duration_ms":1000,"status":"played"{extra}}}"#,
        chrono::Utc::now().to_rfc3339()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_count_once_and_junk_is_rejected_by_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_city(dir.path());
    let (running, shutdown, port, store) = start_daemon(dir.path()).await;
    let m = running.shared.metrics.clone();

    // Displays learn their feeds from the retained config, as the contract says.
    let p = "civicast/v1";
    let bus1 = connect("bus-1", port, false, &[format!("{p}/devices/bus-1/config")]).await;
    let bus2 = connect("bus-2", port, true, &[format!("{p}/devices/bus-2/config")]).await;
    let taxi = connect(
        "taxi-1",
        port,
        false,
        &[format!("{p}/devices/taxi-1/config")],
    )
    .await;
    wait_for("retained configs", 10, || {
        [&bus1, &bus2, &taxi]
            .iter()
            .all(|c| !c.seen.lock().expect("lock").is_empty())
    })
    .await;
    let cfg = bus1.seen.lock().expect("lock")[0].1.clone();
    assert_eq!(cfg["feeds"], serde_json::json!(["bus"]));
    assert_eq!(cfg["class"], "bus_led");

    let obs = connect("observer", port, false, &[format!("{p}/feeds/+")]).await;
    let plays = |feed: &str| -> Vec<serde_json::Value> {
        obs.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, _)| t.ends_with(&format!("/feeds/{feed}")))
            .map(|(_, v)| v.clone())
            .collect()
    };
    wait_for("plays on both feeds", 15, || {
        plays("bus").len() >= 3 && !plays("taxi").is_empty()
    })
    .await;
    let bus_plays: Vec<String> = plays("bus")
        .iter()
        .take(3)
        .map(|v| v["play_id"].as_str().expect("id").to_owned())
        .collect();
    let taxi_play = plays("taxi")[0].clone();
    assert_eq!(
        taxi_play["text"].as_str().map(|t| t.chars().count() <= 12),
        Some(true),
        "taxis get their short text"
    );

    let send = |c: &Client, dev: &str, body: String| {
        let c = c.client.clone();
        let t = format!("{p}/devices/{dev}/receipts");
        async move { c.publish(t, body).await }
    };
    // Valid, each sent twice: counted once.
    for id in &bus_plays {
        send(&bus1, "bus-1", receipt(id, "")).await;
        send(&bus1, "bus-1", receipt(id, "")).await;
    }
    for id in &bus_plays[..2] {
        send(&bus2, "bus-2", receipt(id, r#","device_id":"bus-2""#)).await;
    }
    // Junk, each rejected for its own reason.
    send(&bus1, "bus-1", "{not json".into()).await;
    send(&bus1, "bus-1", receipt("01NEVERSENT0000000000000000", "")).await;
    send(
        &bus1,
        "bus-1",
        receipt(&bus_plays[0], "").replace("played", "shown"),
    )
    .await;
    send(
        &bus1,
        "bus-1",
        receipt(&bus_plays[0], r#","device_id":"bus-2""#),
    )
    .await;
    // bus-1 claims to be taxi-1 for a bus play: taxi-1 never got it.
    send(&bus1, "taxi-1", receipt(&bus_plays[1], "")).await;
    // A taxi play was never sent to a bus.
    send(
        &bus1,
        "bus-1",
        receipt(taxi_play["play_id"].as_str().expect("id"), ""),
    )
    .await;
    let stale = format!(
        r#"{{"v":1,"play_id":"{}","started_at":"2020-01-01T00:00:00+08:00","status":"played"}}"#,
        bus_plays[2]
    );
    send(&bus2, "bus-2", stale).await;
    send(&bus1, "no-such-display", receipt(&bus_plays[0], "")).await;

    wait_for("every receipt handled", 15, || {
        m.receipts_stored.load(Ordering::Relaxed) == 5
            && m.receipts_duplicate.load(Ordering::Relaxed) == 3
            && m.rejects_total() == 8
    })
    .await;

    let q = PlaysQuery::parse(
        &PlaysParams {
            group_by: Some("device".into()),
            ..Default::default()
        },
        chrono_tz::Asia::Shanghai,
    )
    .expect("query");
    let counts: BTreeMap<String, i64> = store
        .audit_plays(&q)
        .await
        .expect("audit")
        .into_iter()
        .map(|r| (r.values[0].clone(), r.plays))
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([("bus-1".to_owned(), 3), ("bus-2".to_owned(), 2)])
    );
    let rejects: BTreeMap<String, i64> = store
        .reject_counts()
        .await
        .expect("rejects")
        .into_iter()
        .map(|r| (r.reason, r.count))
        .collect();
    let want: BTreeMap<String, i64> = [
        "malformed",
        "unknown_play",
        "unknown_status",
        "device_mismatch",
        "not_sent",
        "out_of_window",
        "unknown_device",
    ]
    .into_iter()
    .map(|r| (r.to_owned(), if r == "not_sent" { 2 } else { 1 }))
    .collect();
    assert_eq!(rejects, want);

    // Still serving after all that: a taxi's honest receipt counts.
    send(
        &taxi,
        "taxi-1",
        receipt(taxi_play["play_id"].as_str().expect("id"), ""),
    )
    .await;
    wait_for("the taxi receipt", 10, || {
        m.receipts_stored.load(Ordering::Relaxed) == 6
    })
    .await;

    shutdown.cancel();
    running.wait().await;
}

async fn start_daemon(
    dir: &std::path::Path,
) -> (daemon::Running, CancellationToken, u16, SqliteStore) {
    let report = civicast::core::catalog::load_dirs(&dir.join("devices"), &dir.join("schedules"));
    let catalog = report.catalog.expect("the test city is valid");
    let url = format!("sqlite://{}", dir.join("civicast.db").display());
    let store = SqliteStore::connect(&url).await.expect("sqlite");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let shutdown = CancellationToken::new();
    let settings = Settings {
        devices: dir.join("devices"),
        schedules: dir.join("schedules"),
        watch_every: Some(Duration::from_millis(200)),
        ..Settings::default()
    };
    let running = daemon::start(
        &settings,
        store.clone(),
        catalog,
        Some(listener),
        Arc::new(SystemClock),
        shutdown.clone(),
    )
    .await
    .expect("daemon starts");
    let port = running.mqtt_addr.expect("embedded broker").port();
    (running, shutdown, port, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_continues_the_rotation_from_its_stored_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_city(dir.path());
    let mut store = None;
    for round in 0..2 {
        let (running, shutdown, port, st) = start_daemon(dir.path()).await;
        let obs = connect(
            "observer",
            port,
            round == 1,
            &["civicast/v1/feeds/bus".into()],
        )
        .await;
        wait_for("four plays", 15, || {
            obs.seen.lock().expect("lock").len() >= 4
        })
        .await;
        shutdown.cancel();
        running.wait().await;
        store = Some(st);
    }
    // Every play the daemon published on the feed, in order, across both runs.
    let store = store.expect("store");
    let slogans: Vec<String> = sqlx::query_scalar(
        "SELECT s.slogan FROM plays p JOIN slogans s ON s.id = p.slogan \
         JOIN feeds f ON f.id = p.feed WHERE f.name = 'bus' ORDER BY p.id",
    )
    .fetch_all(store.pool())
    .await
    .expect("plays");
    assert!(slogans.len() >= 8, "{slogans:?}");
    // The same sequence an uninterrupted rotation produces: the cursor was resumed, not reset.
    let mk = |s: &str, w| civicast::core::rotation::Candidate {
        adset: civicast::core::model::Id::parse("civility").expect("id"),
        rev: 1,
        slogan: civicast::core::model::Id::parse(s).expect("id"),
        weight: w,
    };
    let cands = [mk("jiang-wenming", 2), mk("paidui", 1)];
    let mut cur = civicast::core::rotation::Cursor::default();
    let want: Vec<String> = (0..slogans.len())
        .map(|_| cands[cur.pick(&cands).expect("pick")].slogan.to_string())
        .collect();
    assert_eq!(slogans, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_files_are_picked_up_and_a_bad_edit_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_city(dir.path());
    let (running, shutdown, port, _) = start_daemon(dir.path()).await;
    let bus1 = connect(
        "bus-1",
        port,
        false,
        &["civicast/v1/devices/bus-1/config".into()],
    )
    .await;
    wait_for("bus-1's config", 10, || {
        !bus1.seen.lock().expect("lock").is_empty()
    })
    .await;
    let adset_now = |r: &daemon::Running| r.shared.last_plays().get("bus").map(|p| p.adset.clone());
    wait_for("a play", 10, || adset_now(&running).is_some()).await;

    // A new ad set of higher priority, and a new feed that reaches bus-1.
    let high = ADSET.replace("id = \"civility\"", "id = \"winter\"\npriority = 3");
    std::fs::write(dir.path().join("schedules/adsets/winter.toml"), high).expect("write");
    let feeds = format!(
        "{FEEDS}\n[[feed]]\nid = \"route-k1\"\nselect = {{ route = \"K1\" }}\ninterval = \"1s\"\n"
    );
    std::fs::write(dir.path().join("schedules/feeds.toml"), feeds).expect("write");
    wait_for("the new ad set to play", 10, || {
        adset_now(&running).as_deref() == Some("winter")
    })
    .await;
    wait_for("bus-1's new config", 10, || {
        bus1.seen
            .lock()
            .expect("lock")
            .iter()
            .any(|(_, v)| v["feeds"] == serde_json::json!(["bus", "route-k1"]))
    })
    .await;

    // A broken edit: refused, the last good state keeps playing.
    std::fs::write(
        dir.path().join("schedules/adsets/winter.toml"),
        "id = \"winter\"\n[[slogan]]\nid=",
    )
    .expect("write");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(adset_now(&running).as_deref(), Some("winter"));
    assert_eq!(running.shared.current().feeds.len(), 3);
    shutdown.cancel();
    running.wait().await;
}
