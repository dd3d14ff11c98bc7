//! The loop end to end, in-process: the daemon with its embedded broker on a free port,
//! independent MQTT clients as displays (3.1.1 and 5), and the counts an auditor would see.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use civicast::daemon;
use civicast::store::{SqliteStore, Store};
use tokio_util::sync::CancellationToken;

mod common;
use common::*;

/// The daemon on its embedded broker and a SQLite store in `dir`, checking the files every
/// 200 ms; returns the broker's port and the store too.
async fn start(dir: &std::path::Path) -> (daemon::App, CancellationToken, u16, SqliteStore) {
    let store = sqlite_store(dir, "civicast.db").await;
    let (running, shutdown) = start_daemon(dir, store.clone(), Broker::Embedded, |s| {
        s.watch_every = Some(Duration::from_millis(200))
    })
    .await;
    let port = embedded_port(&running);
    (running, shutdown, port, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_count_once_and_junk_is_rejected_by_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_city(dir.path());
    let (running, shutdown, port, store) = start(dir.path()).await;
    let m = running.metrics().clone();

    // Displays learn their feeds from the retained config, as the contract says.
    let bus1 = Client::connect("bus-1", port, false, &[config_topic("bus-1")]).await;
    let bus2 = Client::connect("bus-2", port, true, &[config_topic("bus-2")]).await;
    let taxi = Client::connect("taxi-1", port, false, &[config_topic("taxi-1")]).await;
    wait_for("retained configs", 10, || {
        [&bus1, &bus2, &taxi].iter().all(|c| c.received() > 0)
    })
    .await;
    let cfg = bus1.on("/devices/bus-1/config")[0].clone();
    assert_eq!(cfg["feeds"], serde_json::json!(["bus"]));
    assert_eq!(cfg["class"], "bus_led");

    let obs = Client::connect("observer", port, false, &[format!("{P}/feeds/+")]).await;
    let plays = |feed: &str| obs.on(&format!("/feeds/{feed}"));
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

    // Valid, each sent twice: counted once.
    for id in &bus_plays {
        bus1.send_receipt("bus-1", receipt(id, "")).await;
        bus1.send_receipt("bus-1", receipt(id, "")).await;
    }
    for id in &bus_plays[..2] {
        bus2.send_receipt("bus-2", receipt(id, r#","device_id":"bus-2""#))
            .await;
    }
    // Junk, each rejected for its own reason.
    bus1.send_receipt("bus-1", "{not json".into()).await;
    bus1.send_receipt("bus-1", receipt("01NEVERSENT0000000000000000", ""))
        .await;
    bus1.send_receipt(
        "bus-1",
        receipt(&bus_plays[0], "").replace("played", "shown"),
    )
    .await;
    bus1.send_receipt("bus-1", receipt(&bus_plays[0], r#","device_id":"bus-2""#))
        .await;
    // bus-1 claims to be taxi-1 for a bus play: taxi-1 never got it.
    bus1.send_receipt("taxi-1", receipt(&bus_plays[1], ""))
        .await;
    // A taxi play was never sent to a bus.
    bus1.send_receipt(
        "bus-1",
        receipt(taxi_play["play_id"].as_str().expect("id"), ""),
    )
    .await;
    let stale = format!(
        r#"{{"v":1,"play_id":"{}","started_at":"2020-01-01T00:00:00+08:00","status":"played"}}"#,
        bus_plays[2]
    );
    bus2.send_receipt("bus-2", stale).await;
    bus1.send_receipt("no-such-display", receipt(&bus_plays[0], ""))
        .await;

    wait_for("every receipt handled", 15, || {
        m.receipts_stored.load(Ordering::Relaxed) == 5
            && m.receipts_duplicate.load(Ordering::Relaxed) == 3
            && m.rejects_total() == 8
    })
    .await;
    // Every receipt sent has a latency, whatever became of it: 5 + 3 + 8.
    let latencies = || metric(&m.render(), "civicast_receipt_latency_seconds_count");
    wait_for("a latency for each receipt", 10, || {
        latencies() == Some(16.0)
    })
    .await;

    assert_eq!(
        played_by_device(&store).await,
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
    taxi.send_receipt(
        "taxi-1",
        receipt(taxi_play["play_id"].as_str().expect("id"), ""),
    )
    .await;
    wait_for("the taxi receipt", 10, || {
        m.receipts_stored.load(Ordering::Relaxed) == 6
    })
    .await;
    wait_for("the taxi receipt's latency", 10, || {
        latencies() == Some(17.0)
    })
    .await;
    let text = m.render();
    assert_eq!(
        metric(
            &text,
            "civicast_receipt_latency_seconds_bucket{le=\"+Inf\"}"
        ),
        Some(17.0),
        "{text}"
    );

    shutdown.cancel();
    running.wait().await;
}

/// The daemon restarts until one restart fell inside a period of the 5:3:1 rotation (where a
/// reset cursor would differ from the continuation), then the plays of all runs together
/// must be the one rotation written out by hand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_continues_the_rotation_from_its_stored_cursor() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_weighted_city(dir.path());
    // Plays stored when each run ended.
    let mut ends: Vec<usize> = Vec::new();
    let mut slogans = Vec::new();
    for round in 0..8 {
        let (running, shutdown, port, st) = start(dir.path()).await;
        let obs = Client::connect(
            "observer",
            port,
            round % 2 == 1,
            &[format!("{P}/feeds/bus")],
        )
        .await;
        wait_for("four plays", 15, || obs.received() >= 4).await;
        shutdown.cancel();
        running.wait().await;
        // Every play the daemon published on the feed, in order, across the runs so far.
        slogans = feed_slogans(&st, "bus").await;
        ends.push(slogans.len());
        let restarts = &ends[..ends.len() - 1];
        if restarts.iter().any(|n| n % WEIGHTED_ROTATION.len() != 0) {
            break;
        }
    }
    assert!(slogans.len() >= 8, "{slogans:?}");
    assert_rotation_resumed("bus", &slogans, &ends[..ends.len() - 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_files_are_picked_up_and_a_bad_edit_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_city(dir.path());
    let (running, shutdown, port, _) = start(dir.path()).await;
    let bus1 = Client::connect("bus-1", port, false, &[config_topic("bus-1")]).await;
    wait_for("bus-1's config", 10, || bus1.received() > 0).await;
    let adset_now = |r: &daemon::App| r.shared().last_plays().get("bus").map(|p| p.adset.clone());
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
        bus1.on("")
            .iter()
            .any(|v| v["feeds"] == serde_json::json!(["bus", "route-k1"]))
    })
    .await;

    // A broken edit: refused, the last good state keeps playing.
    std::fs::write(
        dir.path().join("schedules/adsets/winter.toml"),
        "id = \"winter\"\n[[slogan]]\nid=",
    )
    .expect("write");
    // The watcher checks every 200 ms; plays issued after it has read the broken file
    // are the proof. Two fresh plays on the bus feed, issued after the edit, both from
    // the last good state (the ad set "winter", three feeds).
    let edited_at = chrono::Utc::now();
    let m = running.metrics().clone();
    let bad_seen = || {
        m.reloads_refused
            .iter()
            .any(|c| c.load(Ordering::Relaxed) > 0)
    };
    wait_for("the watcher to refuse the broken edit", 10, bad_seen).await;
    let refused_at = chrono::Utc::now();
    let issued_after = |r: &daemon::App, t: chrono::DateTime<chrono::Utc>| {
        r.shared()
            .last_plays()
            .get("bus")
            .and_then(|p| (p.issued_at > t).then(|| p.adset.clone()))
    };
    wait_for("a bus play issued after the refusal", 10, || {
        issued_after(&running, refused_at).is_some()
    })
    .await;
    assert!(refused_at >= edited_at);
    assert_eq!(
        issued_after(&running, refused_at).as_deref(),
        Some("winter"),
        "a play issued after the broken edit comes from the last good state"
    );
    assert_eq!(running.shared().current().feeds.len(), 3);
    assert!(bus1
        .on("")
        .last()
        .is_some_and(|v| v["feeds"] == serde_json::json!(["bus", "route-k1"])));
    shutdown.cancel();
    running.wait().await;
}

/// Units are operators' files like the displays: an edit to `devices/units/` reaches the
/// inspection routes without a restart, and a broken one is refused like any bad edit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_units_are_picked_up_and_a_bad_units_edit_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_city(dir.path());
    let (running, shutdown, _port, _) = start(dir.path()).await;
    let has = |r: &daemon::App, id: &str| r.shared().inspect().units.get(id).is_some();
    // The test city's displays name no company: none is a unit until a row names it.
    assert!(!has(&running, "bus-9") && !has(&running, "bus-K1-0001"));

    let units = dir.path().join("devices/units");
    std::fs::create_dir_all(&units).expect("units dir");
    std::fs::write(
        units.join("depot.csv"),
        "id,kind,company,display\nbus-K1-0001,bus,city-bus,bus-1\nbus-9,bus,city-bus,\nstation-1,station,keyun,\n",
    )
    .expect("write");
    wait_for("the new units", 10, || {
        has(&running, "bus-9") && has(&running, "station-1")
    })
    .await;
    let inspect = running.shared().inspect();
    let board = inspect
        .units
        .get("bus-K1-0001")
        .expect("the bus with a board");
    assert_eq!(board.display.as_deref(), Some("bus-1"));

    // A unit of an unknown kind, and one on a display that does not exist: refused, and
    // the units of the last good edit stay.
    let refused = || {
        running
            .metrics()
            .reloads_refused
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let before = refused();
    std::fs::write(
        units.join("depot.csv"),
        "id,kind,company,display\nbus-10,tram,city-bus,\nbus-11,bus,city-bus,bus-404\n",
    )
    .expect("write");
    wait_for("the broken units edit to be refused", 10, || {
        refused() > before
    })
    .await;
    assert!(
        has(&running, "bus-9") && has(&running, "bus-K1-0001"),
        "the last good units stay"
    );
    assert!(!has(&running, "bus-10") && !has(&running, "bus-11"));
    shutdown.cancel();
    running.wait().await;
}

/// A receipt padded (in its `reason`) to exactly `len` bytes.
fn receipt_of_len(play_id: &str, len: usize) -> String {
    let bare = receipt(play_id, r#","reason":"""#);
    assert!(bare.len() <= len, "{bare}");
    let r = receipt(
        play_id,
        &format!(r#","reason":"{}""#, "x".repeat(len - bare.len())),
    );
    assert_eq!(r.len(), len);
    r
}

/// The store's reject counts by reason.
async fn rejects_by_reason(store: &SqliteStore) -> BTreeMap<String, i64> {
    store
        .reject_counts()
        .await
        .expect("rejects")
        .into_iter()
        .map(|r| (r.reason, r.count))
        .collect()
}

/// A play the daemon sends straight to one display on its `cmd` topic (no `feed`): its
/// receipt counts for that display and is refused, as never sent, from any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_direct_play_counts_for_its_display_and_no_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_city(dir.path());
    let (running, shutdown, port, store) = start(dir.path()).await;
    let m = running.metrics().clone();
    let cmd_topic = |d: &str| format!("{P}/devices/{d}/cmd");
    let bus1 = Client::connect("bus-1", port, false, &[cmd_topic("bus-1")]).await;
    let bus2 = Client::connect("bus-2", port, true, &[cmd_topic("bus-2")]).await;
    bus1.subscribed(1).await;
    bus2.subscribed(1).await;

    // The daemon issues no direct play of its own yet (no urgent messages, no test
    // plays): record one as it would, addressed to bus-1, and publish it on bus-1's cmd.
    let key: i64 = sqlx::query_scalar("SELECT id FROM devices WHERE name = 'bus-1'")
        .fetch_one(store.pool())
        .await
        .expect("bus-1's key");
    let slogan = store
        .slogan_key("civility", 1, "jiang-wenming")
        .await
        .expect("slogan key");
    let now = chrono::Utc::now();
    let expires = now + chrono::Duration::seconds(60);
    store
        .record_play(
            &civicast::store::NewPlay {
                play_id: "DIRECT-1".into(),
                feed: None,
                device: Some(key),
                slogan,
                issued_ms: now.timestamp_millis(),
                expires_ms: expires.timestamp_millis(),
                members: 1,
            },
            None,
        )
        .await
        .expect("record the direct play");
    let command = format!(
        r#"{{"v":1,"play_id":"DIRECT-1","adset":"civility","rev":1,"slogan":"jiang-wenming","text":"讲文明 树新风","duration_s":1,"priority":9,"issued_at":"{}","expires_at":"{}"}}"#,
        now.to_rfc3339(),
        expires.to_rfc3339()
    );
    let daemon_side = Client::connect("cmd-sender", port, false, &[]).await;
    daemon_side
        .publish(cmd_topic("bus-1"), command, false)
        .await;
    wait_for("bus-1's direct play", 10, || {
        !bus1.on("/devices/bus-1/cmd").is_empty()
    })
    .await;
    let got = bus1.on("/devices/bus-1/cmd")[0].clone();
    assert!(got.get("feed").is_none(), "a direct play names no feed");
    assert!(bus2.on("/cmd").is_empty(), "bus-2 never got it");

    bus2.send_receipt("bus-2", receipt("DIRECT-1", "")).await;
    bus1.send_receipt("taxi-1", receipt("DIRECT-1", "")).await;
    bus1.send_receipt("bus-1", receipt(&play_id(&got), ""))
        .await;
    wait_for("three receipts handled", 15, || {
        m.receipts_stored.load(Ordering::Relaxed) == 1 && m.rejects_total() == 2
    })
    .await;
    assert_eq!(
        played_by_device(&store).await,
        BTreeMap::from([("bus-1".to_owned(), 1)])
    );
    assert_eq!(
        rejects_by_reason(&store).await,
        BTreeMap::from([("not_sent".to_owned(), 2)])
    );
    shutdown.cancel();
    running.wait().await;
}

/// The contract's 16 KiB: a receipt of exactly 16,384 bytes counts; one byte more is
/// rejected, counted under its reason, and the daemon goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_of_16_kib_counts_and_one_byte_more_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_city(dir.path());
    let (running, shutdown, port, store) = start(dir.path()).await;
    let m = running.metrics().clone();
    let obs = Client::connect("observer", port, false, &[format!("{P}/feeds/bus")]).await;
    wait_for("two bus plays", 15, || obs.on("/feeds/bus").len() >= 2).await;
    let plays: Vec<String> = obs.on("/feeds/bus").iter().take(2).map(play_id).collect();
    let bus1 = Client::connect("bus-1", port, false, &[]).await;
    let bus2 = Client::connect("bus-2", port, true, &[]).await;

    bus1.send_receipt("bus-1", receipt_of_len(&plays[0], 16_384))
        .await;
    bus2.send_receipt("bus-2", receipt_of_len(&plays[0], 16_385))
        .await;
    wait_until("both handled", 15, || {
        let (stored, rejected) = (m.receipts_stored.load(Ordering::Relaxed), m.rejects_total());
        async move {
            if stored == 1 && rejected == 1 {
                Ok(())
            } else {
                Err(format!("{stored} stored, {rejected} rejected"))
            }
        }
    })
    .await;
    assert_eq!(
        rejects_by_reason(&store).await,
        BTreeMap::from([("too_large".to_owned(), 1)])
    );
    let metrics = m.render();
    assert_eq!(
        metric(
            &metrics,
            "civicast_receipts_rejected_total{reason=\"too_large\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // Still serving: bus-2's honest receipt for the next play counts.
    bus2.send_receipt("bus-2", receipt(&plays[1], "")).await;
    wait_for("bus-2's honest receipt", 10, || {
        m.receipts_stored.load(Ordering::Relaxed) == 2
    })
    .await;
    assert_eq!(
        played_by_device(&store).await,
        BTreeMap::from([("bus-1".to_owned(), 1), ("bus-2".to_owned(), 1)])
    );
    shutdown.cancel();
    running.wait().await;
}
