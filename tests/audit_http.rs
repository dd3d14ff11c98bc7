//! The audit answers on a database that real displays filled: presence retained over MQTT
//! (online, then offline by the last will when the connection drops), receipts for the
//! plays they got, then compliance, plays, the inspection sample and the reconciliation
//! over HTTP (JSON and CSV) and from `civicast audit` (the same database), each checked
//! against figures this file works out by hand from what its displays sent.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use civicast::store::{ApiStore, PresenceSpan, Role, SqliteStore};
use rumqttc::{AsyncClient, Event, Incoming, LastWill, MqttOptions, QoS};
use serde_json::Value;

mod common;
use common::*;

// ---------------------------------------------------------------------------------------
// A display under the test's hand
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct Heard {
    connacks: usize,
    subacks: usize,
    pubacks: usize,
    /// (topic, payload) of every message, in arrival order.
    msgs: Vec<(String, Value)>,
}

/// One receipt a board sent: `started_at` in ms, status.
#[derive(Clone, Debug)]
struct Sent {
    started_ms: i64,
    status: &'static str,
}

/// An MQTT 3.1.1 display whose last will is the contract's offline presence. It answers
/// only when told, with `started_at` equal to the play's `issued_at`, so every time the
/// audit reports is one this file knows.
struct Board {
    id: String,
    client: AsyncClient,
    heard: Arc<Mutex<Heard>>,
    task: tokio::task::JoinHandle<()>,
}

fn status_topic(id: &str) -> String {
    format!("{P}/devices/{id}/status")
}

impl Board {
    async fn connect(id: &str, port: u16) -> Board {
        let mut o = MqttOptions::new(format!("{id}-board"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_last_will(LastWill::new(
                status_topic(id),
                r#"{"v":1,"online":false}"#,
                QoS::AtLeastOnce,
                true,
            ));
        let (client, mut ev) = AsyncClient::new(o, 100);
        let heard = Arc::new(Mutex::new(Heard::default()));
        let h = heard.clone();
        let task = tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        h.lock().expect("lock").connacks += 1
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        h.lock().expect("lock").subacks += 1
                    }
                    Ok(Event::Incoming(Incoming::PubAck(_))) => {
                        h.lock().expect("lock").pubacks += 1
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        h.lock().expect("lock").msgs.push((p.topic.clone(), v));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let b = Board {
            id: id.to_owned(),
            client,
            heard,
            task,
        };
        wait_for("the board's CONNACK", 10, || {
            b.heard.lock().expect("lock").connacks > 0
        })
        .await;
        b
    }

    async fn publish(&self, topic: String, body: String, retain: bool) {
        let before = self.heard.lock().expect("lock").pubacks;
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, body)
            .await
            .expect("publish");
        wait_for("a PUBACK", 10, || {
            self.heard.lock().expect("lock").pubacks > before
        })
        .await;
    }

    async fn subscribe(&self, topic: String) {
        let before = self.heard.lock().expect("lock").subacks;
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        wait_for("a SUBACK", 10, || {
            self.heard.lock().expect("lock").subacks > before
        })
        .await;
    }

    /// The plays it got on its feeds.
    fn plays(&self) -> Vec<Value> {
        let h = self.heard.lock().expect("lock");
        h.msgs
            .iter()
            .filter(|m| m.0.contains("/feeds/"))
            .map(|m| m.1.clone())
            .collect()
    }

    /// Answers `play` with `status`, started at its `issued_at`.
    async fn answer(&self, play: &Value, status: &'static str) -> Sent {
        let issued = play["issued_at"].as_str().expect("issued_at");
        let body = format!(
            r#"{{"v":1,"play_id":"{}","started_at":"{issued}","duration_ms":1000,"status":"{status}"}}"#,
            play_id(play)
        );
        self.publish(receipts_topic(&self.id), body, false).await;
        Sent {
            started_ms: DateTime::parse_from_rfc3339(issued)
                .expect("issued_at")
                .timestamp_millis(),
            status,
        }
    }

    /// Drops the TCP connection without a DISCONNECT, as a board losing power does: the
    /// broker publishes its last will.
    fn cut(self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// The oracle: the contract's compliance rule as a plain fold
// ---------------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
struct Judged {
    online_ms: i64,
    plays: u64,
    longest_gap_ms: i64,
    mean_interval_ms: Option<f64>,
    met: bool,
}

/// One display over [from, to): `spans` are its disjoint online spans (an open one ends
/// at `to`), `played` the `started_at` of its `played` receipts. Online time is each
/// span's part inside the period; plays count when they start in it; a gap runs from a
/// span's start to its first play, play to play, and last play to the span's end; the
/// time between spans is no gap. Met: mean interval at most 1.1 x `interval_ms` and no gap
/// over 2 x. Where the contract is silent, the module's documented choice: no online time
/// is met, and less than one interval online is judged by the gap alone.
fn judge(
    spans: &[(i64, Option<i64>)],
    from: i64,
    to: i64,
    played: &[i64],
    interval_ms: i64,
) -> Judged {
    let mut online_ms = 0;
    let mut plays = 0u64;
    let mut longest = 0;
    for &(since, until) in spans {
        let s = since.max(from);
        let e = until.unwrap_or(to).min(to);
        if s >= e {
            continue;
        }
        online_ms += e - s;
        let mut inside: Vec<i64> = played
            .iter()
            .copied()
            .filter(|p| s <= *p && *p < e)
            .collect();
        inside.sort_unstable();
        let mut prev = s;
        for p in &inside {
            longest = longest.max(p - prev);
            prev = *p;
        }
        longest = longest.max(e - prev);
        plays += inside.len() as u64;
    }
    let mean = (plays > 0).then(|| online_ms as f64 / plays as f64);
    let gap_ok = longest as f64 <= 2.0 * interval_ms as f64;
    let met = if online_ms == 0 {
        true
    } else if online_ms < interval_ms {
        gap_ok
    } else {
        gap_ok && mean.is_some_and(|m| m <= 1.1 * interval_ms as f64)
    };
    Judged {
        online_ms,
        plays,
        longest_gap_ms: longest,
        mean_interval_ms: mean,
        met,
    }
}

/// The report's row for one display, in the oracle's units.
fn judged_row(row: &Value) -> Judged {
    let secs_ms =
        |k: &str| (row[k].as_f64().unwrap_or_else(|| panic!("{k}: {row}")) * 1000.0).round() as i64;
    Judged {
        online_ms: secs_ms("online_seconds"),
        plays: row["plays"].as_u64().expect("plays"),
        longest_gap_ms: secs_ms("longest_gap_s"),
        mean_interval_ms: row["mean_interval_s"].as_f64().map(|m| m * 1000.0),
        met: row["met"].as_bool().expect("met"),
    }
}

/// Equal up to the rounding of milliseconds written as seconds.
fn assert_judged(got: &Judged, want: &Judged, what: &str) {
    let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() < 0.5,
        (None, None) => true,
        _ => false,
    };
    assert!(
        got.online_ms == want.online_ms
            && got.plays == want.plays
            && got.longest_gap_ms == want.longest_gap_ms
            && got.met == want.met
            && close(got.mean_interval_ms, want.mean_interval_ms),
        "{what}: report {got:?}, by hand {want:?}"
    );
}

// ---------------------------------------------------------------------------------------
// The scenario
// ---------------------------------------------------------------------------------------

/// What the displays did, as the test saw it.
struct Played {
    dir: tempfile::TempDir,
    router: axum::Router,
    auditor: String,
    store: SqliteStore,
    /// Receipts sent, by display.
    sent: BTreeMap<String, Vec<Sent>>,
    /// The stored presence spans, by display, each checked against the test's clock.
    spans: BTreeMap<String, Vec<(i64, Option<i64>)>>,
    /// How long bus-1 was offline between its two spans, ms.
    offline_ms: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Waits until the store holds exactly `n` spans for `device`, the last one open or not
/// as asked; returns them.
async fn stored_spans(
    store: &SqliteStore,
    device: &str,
    n: usize,
    last_open: bool,
) -> Vec<PresenceSpan> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let spans: Vec<PresenceSpan> = store
            .presence_between(0, i64::MAX / 2)
            .await
            .expect("presence")
            .into_iter()
            .filter(|p| p.device == device)
            .collect();
        if spans.len() == n
            && spans
                .last()
                .is_some_and(|s| s.until_ms.is_none() == last_open)
        {
            return spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{device}: waiting for {n} presence spans (last open: {last_open}), have {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `board` has `n` plays more than `seen`; returns the new ones.
async fn next_plays(board: &Board, seen: usize, n: usize) -> Vec<Value> {
    wait_for("plays on the board's feed", 20, || {
        board.plays().len() >= seen + n
    })
    .await;
    board.plays()[seen..seen + n].to_vec()
}

/// bus-1 comes online, answers four plays, loses power (its will says offline), stays
/// dark for four plays of its feed, comes back, answers three more and says goodbye
/// with an offline presence. bus-2 answers plays without ever reporting presence; the
/// taxi answers two, one of them `skipped`. Then the daemon stops; the HTTP API stays.
async fn play_a_while() -> Played {
    let dir = tempfile::tempdir().expect("tempdir");
    write_city(dir.path());
    let store = sqlite_store(dir.path(), "civicast.db").await;
    let (running, shutdown) =
        start_daemon(dir.path(), store.clone(), Broker::Embedded, |_| {}).await;
    let port = embedded_port(&running);
    let tokens = create_tokens(&store, &[("aud", Role::Auditor)]).await;
    let router = api_router(store.clone(), &running);
    let from = Utc::now() - chrono::Duration::seconds(60);
    let m = running.metrics().clone();
    let stored = |n: u64| {
        let m = m.clone();
        move || m.receipts_stored.load(std::sync::atomic::Ordering::Relaxed) == n
    };

    let obs = Client::connect(
        "observer",
        port,
        false,
        &[format!("{P}/devices/+/status"), format!("{P}/feeds/bus")],
    )
    .await;
    obs.subscribed(2).await;
    let mut sent: BTreeMap<String, Vec<Sent>> = BTreeMap::new();
    let mut brackets: Vec<(i64, i64, i64, i64)> = Vec::new();

    // bus-1, first span: online, four plays answered, then the power goes.
    let t_on = now_ms();
    let bus1 = Board::connect("bus-1", port).await;
    bus1.publish(status_topic("bus-1"), online_now(), true)
        .await;
    let on = stored_spans(&store, "bus-1", 1, true).await;
    let t_on_seen = now_ms();
    bus1.subscribe(format!("{P}/feeds/bus")).await;
    for p in next_plays(&bus1, 0, 4).await {
        sent.entry("bus-1".into())
            .or_default()
            .push(bus1.answer(&p, "played").await);
    }
    wait_for("bus-1's four receipts", 15, stored(4)).await;
    let wills_before = obs.on("/devices/bus-1/status").len();
    let t_cut = now_ms();
    bus1.cut();
    wait_for("bus-1's last will", 30, || {
        obs.on("/devices/bus-1/status")[wills_before..]
            .iter()
            .any(|v| v["online"] == false)
    })
    .await;
    let off = stored_spans(&store, "bus-1", 1, false).await;
    let t_off_seen = now_ms();
    brackets.push((t_on, t_on_seen, t_cut, t_off_seen));
    assert_eq!(on[0].since_ms, off[0].since_ms);

    // Dark for four plays of its feed.
    let feed_then = obs.on("/feeds/bus").len();
    wait_for("four bus plays while bus-1 is dark", 20, || {
        obs.on("/feeds/bus").len() >= feed_then + 4
    })
    .await;

    // bus-1, second span: back, three plays, a clean goodbye.
    let t_on = now_ms();
    let bus1 = Board::connect("bus-1", port).await;
    bus1.publish(status_topic("bus-1"), online_now(), true)
        .await;
    stored_spans(&store, "bus-1", 2, true).await;
    let t_on_seen = now_ms();
    bus1.subscribe(format!("{P}/feeds/bus")).await;
    for p in next_plays(&bus1, 0, 3).await {
        sent.entry("bus-1".into())
            .or_default()
            .push(bus1.answer(&p, "played").await);
    }
    wait_for("bus-1's seven receipts", 15, stored(7)).await;
    let t_bye = now_ms();
    bus1.publish(
        status_topic("bus-1"),
        r#"{"v":1,"online":false}"#.into(),
        true,
    )
    .await;
    stored_spans(&store, "bus-1", 2, false).await;
    let t_bye_seen = now_ms();
    brackets.push((t_on, t_on_seen, t_bye, t_bye_seen));

    // bus-2: receipts, no presence. The taxi: one played, one skipped.
    let bus2 = Board::connect("bus-2", port).await;
    bus2.subscribe(format!("{P}/feeds/bus")).await;
    for p in next_plays(&bus2, 0, 3).await {
        sent.entry("bus-2".into())
            .or_default()
            .push(bus2.answer(&p, "played").await);
    }
    let taxi = Board::connect("taxi-1", port).await;
    taxi.subscribe(format!("{P}/feeds/taxi")).await;
    let tp = next_plays(&taxi, 0, 2).await;
    sent.entry("taxi-1".into())
        .or_default()
        .push(taxi.answer(&tp[0], "played").await);
    sent.entry("taxi-1".into())
        .or_default()
        .push(taxi.answer(&tp[1], "skipped").await);
    wait_for("all twelve receipts", 15, stored(12)).await;
    assert_eq!(m.rejects_total(), 0);
    let to = Utc::now();

    shutdown.cancel();
    running.wait().await;

    // The stored spans are the test's own: each begins between the moment bus-1 said it
    // was online and the moment the store showed it, and ends likewise.
    let spans_now = stored_spans(&store, "bus-1", 2, false).await;
    let mut spans = BTreeMap::new();
    let mut b1 = Vec::new();
    for (s, (on_at, on_seen, off_at, off_seen)) in spans_now.iter().zip(&brackets) {
        let until = s.until_ms.expect("closed");
        assert!(
            (*on_at..=*on_seen).contains(&s.since_ms) && (*off_at..=*off_seen).contains(&until),
            "span {s:?} outside the test's brackets {brackets:?}"
        );
        b1.push((s.since_ms, Some(until)));
    }
    let offline_ms = b1[1].0 - b1[0].1.expect("closed");
    spans.insert("bus-1".to_owned(), b1);
    let others: Vec<PresenceSpan> = store
        .presence_between(0, i64::MAX / 2)
        .await
        .expect("presence")
        .into_iter()
        .filter(|p| p.device != "bus-1")
        .collect();
    assert!(
        others.is_empty(),
        "only bus-1 reported presence: {others:?}"
    );
    drop((bus2, taxi));
    Played {
        dir,
        router,
        auditor: tokens["aud"].clone(),
        store,
        sent,
        spans,
        offline_ms,
        from,
        to,
    }
}

impl Played {
    async fn http(&self, uri: &str) -> String {
        let (st, body) = call(&self.router, "GET", uri, Some(&self.auditor), None, "").await;
        assert_eq!(st, 200, "{uri}: {body}");
        body
    }

    fn cli(&self, args: &[&str]) -> String {
        cli_in(self.dir.path(), args)
    }

    fn played_ms(&self, device: &str) -> Vec<i64> {
        self.sent
            .get(device)
            .into_iter()
            .flatten()
            .filter(|s| s.status == "played")
            .map(|s| s.started_ms)
            .collect()
    }

    fn spans_of(&self, device: &str) -> &[(i64, Option<i64>)] {
        self.spans.get(device).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// `civicast ARGS` in `dir` on its database; stdout of a successful run.
fn cli_in(dir: &Path, args: &[&str]) -> String {
    let out = civicast_command(dir)
        .args(args)
        .env(
            "CIVICAST_DATABASE_URL",
            format!("sqlite://{}", dir.join("civicast.db").display()),
        )
        .env_remove("CIVICAST_DEVICES")
        .env_remove("CIVICAST_SCHEDULES")
        .env_remove("CIVICAST_MQTT_URL")
        .output()
        .expect("run civicast");
    assert!(
        out.status.success(),
        "civicast {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn rows_by_device(v: &Value) -> BTreeMap<String, Value> {
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (r["device"].as_str().expect("device").to_owned(), r.clone()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_over_mqtt_sets_online_time_and_offline_time_is_no_gap() {
    let p = play_a_while().await;
    let (from, to) = (stamp(p.from), stamp(p.to));
    let http = json(
        &p.http(&format!("/api/v1/audit/compliance?from={from}&to={to}"))
            .await,
    );
    let cli = json(&p.cli(&[
        "audit",
        "compliance",
        "--from",
        &from,
        "--to",
        &to,
        "--format",
        "json",
    ]));
    assert_eq!(http, cli, "HTTP and CLI answer alike");
    let rows = rows_by_device(&http);
    assert_eq!(rows.len(), 3, "{http}");
    let (f, t) = (p.from.timestamp_millis(), p.to.timestamp_millis());
    for (device, row) in &rows {
        let want = judge(p.spans_of(device), f, t, &p.played_ms(device), 1000);
        assert_judged(&judged_row(row), &want, device);
    }
    // bus-1: online exactly its two stored spans; the dark stretch between them, longer
    // than any gap while it was on, is held against nothing.
    let bus1 = judged_row(&rows["bus-1"]);
    let spans = p.spans_of("bus-1");
    let span_ms: i64 = spans.iter().map(|(s, e)| e.expect("closed") - s).sum();
    assert_eq!(bus1.online_ms, span_ms);
    assert_eq!(bus1.plays, 7);
    assert!(
        bus1.longest_gap_ms < p.offline_ms,
        "longest gap {} ms, dark for {} ms",
        bus1.longest_gap_ms,
        p.offline_ms
    );
    // The others never said they were online: no online time, nothing held against them.
    for d in ["bus-2", "taxi-1"] {
        let j = judged_row(&rows[d]);
        assert_eq!(
            (j.online_ms, j.plays, j.longest_gap_ms, j.met),
            (0, 0, 0, true),
            "{d}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_answers_over_http_in_json_and_csv_equal_the_clis() {
    let p = play_a_while().await;
    let (from, to) = (stamp(p.from), stamp(p.to));
    let week = {
        let w = p.to.with_timezone(&chrono_tz::Asia::Shanghai).iso_week();
        format!("{:04}-W{:02}", w.year(), w.week())
    };
    // (HTTP query, CLI arguments) of the same question.
    let questions: Vec<(String, Vec<String>)> = [
        (
            "plays",
            format!("group_by=device&from={from}&to={to}"),
            vec!["--group-by", "device", "--from", &from, "--to", &to],
        ),
        (
            "plays",
            "group_by=slogan,feed,day&status=skipped".to_owned(),
            vec!["--group-by", "slogan,feed,day", "--status", "skipped"],
        ),
        (
            "compliance",
            format!("from={from}&to={to}"),
            vec!["--from", &from, "--to", &to],
        ),
        (
            "sample",
            format!("week={week}&seed=s7"),
            vec!["--week", &week, "--seed", "s7"],
        ),
        (
            "reconcile",
            format!("from={from}&to={to}"),
            vec!["--from", &from, "--to", &to],
        ),
    ]
    .into_iter()
    .map(|(report, q, args)| {
        let mut a = vec!["audit".to_owned(), report.to_owned()];
        a.extend(args.into_iter().map(str::to_owned));
        (format!("/api/v1/audit/{report}?{q}"), a)
    })
    .collect();
    let mut answers = Vec::new();
    for (uri, args) in &questions {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let http = json(&p.http(uri).await);
        let cli = json(&p.cli(&[&args[..], &["--format", "json"]].concat()));
        assert_eq!(http, cli, "{uri} in JSON");
        assert!(
            !http["rows"].as_array().expect("rows").is_empty(),
            "{uri}: no rows, nothing compared: {http}"
        );
        let http_csv = p.http(&format!("{uri}&format=csv")).await;
        let cli_csv = p.cli(&[&args[..], &["--format", "csv"]].concat());
        assert_eq!(http_csv, cli_csv, "{uri} in CSV");
        assert_eq!(
            http_csv.lines().count(),
            http["rows"].as_array().expect("rows").len() + 1,
            "{uri}: a header and a line a row"
        );
        answers.push(http);
    }

    // Play counts by display: the receipts sent with status played, counted once.
    let by_device = &answers[0];
    let counted: BTreeMap<String, i64> = by_device["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["device"].as_str().expect("device").to_owned(),
                r["plays"].as_i64().expect("plays"),
            )
        })
        .collect();
    let want: BTreeMap<String, i64> = p
        .sent
        .keys()
        .map(|d| (d.clone(), p.played_ms(d).len() as i64))
        .collect();
    assert_eq!(counted, want);
    let skipped = &answers[1];
    assert_eq!(skipped["total"], 1, "{skipped}");

    // The sample: every display of each class (there are fewer than 59), each with the
    // week's figures worked out from what was sent and the stored presence.
    let sample = &answers[3];
    let rows = rows_by_device(sample);
    let classes: BTreeMap<&str, &str> = [
        ("bus-1", "bus_led"),
        ("bus-2", "bus_led"),
        ("taxi-1", "taxi_top"),
    ]
    .into();
    assert_eq!(
        rows.keys().map(String::as_str).collect::<Vec<_>>(),
        classes.keys().copied().collect::<Vec<_>>()
    );
    let (wf, wt) = {
        let f = DateTime::parse_from_rfc3339(sample["from"].as_str().expect("from")).expect("from");
        let t = DateTime::parse_from_rfc3339(sample["to"].as_str().expect("to")).expect("to");
        (f.timestamp_millis(), t.timestamp_millis())
    };
    assert_eq!(wt - wf, 7 * 86_400_000);
    for (device, row) in &rows {
        assert_eq!(row["class"], classes[device.as_str()], "{row}");
        let want = judge(p.spans_of(device), wf, wt, &p.played_ms(device), 1000);
        assert_eq!(row["plays"].as_u64(), Some(want.plays), "{device}: {row}");
        let gap_ms = (row["longest_gap_s"].as_f64().expect("gap") * 1000.0).round() as i64;
        assert_eq!(gap_ms, want.longest_gap_ms, "{device}: {row}");
        assert_eq!(row["met"].as_bool(), Some(want.met), "{device}: {row}");
        let last = p.sent[device]
            .iter()
            .max_by_key(|s| s.started_ms)
            .expect("sent");
        let at = DateTime::parse_from_rfc3339(row["last_receipt_at"].as_str().expect("last"))
            .expect("last")
            .timestamp_millis();
        assert_eq!(
            (at, row["last_receipt_status"].as_str()),
            (last.started_ms, Some(last.status)),
            "{device}: {row}"
        );
    }
    assert_eq!(rows["bus-1"]["plays"], 7);

    // Reconciliation: each receipt sent with status played is a play played on its feed;
    // every shortfall is the targeted less the played.
    let rec = &answers[4];
    let sum = |k: &str| -> i64 {
        rec["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|r| r[k].as_i64().expect(k))
            .sum()
    };
    let played: i64 = p.sent.keys().map(|d| p.played_ms(d).len() as i64).sum();
    assert_eq!(sum("played"), played, "{rec}");
    assert_eq!(sum("shortfall"), sum("targeted") - played, "{rec}");
    // Each row's shortfall is its reasons': bus-2 and taxi-1 were never online, yet they
    // played, so they are counted played, not offline.
    for r in rec["rows"].as_array().expect("rows") {
        let n = |k: &str| r[k].as_i64().expect(k);
        assert_eq!(
            n("offline") + n("expired") + n("skipped") + n("failed") + n("no_receipt"),
            n("shortfall"),
            "{r}"
        );
    }
    drop(p.store);
}
