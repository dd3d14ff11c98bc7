//! MQTT as the displays speak it (3.1.1 and 5): a recording client for tests that drive
//! each message themselves, a display that answers plays on its own the way a real board
//! does, and the payloads a display sends (receipts, presence).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::city::DISPLAYS;
use super::wait::wait_for;

/// The topic prefix of the contract.
pub const P: &str = "civicast/v1";

/// A display's retained config.
pub fn config_topic(device: &str) -> String {
    format!("{P}/devices/{device}/config")
}

/// Where a display sends its receipts.
pub fn receipts_topic(device: &str) -> String {
    format!("{P}/devices/{device}/receipts")
}

/// A receipt for `play_id`, played now for 1 s; `extra` is appended to the JSON object
/// (`,"device_id":"bus-2"`).
pub fn receipt(play_id: &str, extra: &str) -> String {
    format!(
        r#"{{"v":1,"play_id":"{play_id}","started_at":"{}","duration_ms":1000,"status":"played"{extra}}}"#,
        chrono::Utc::now().to_rfc3339()
    )
}

/// The presence a display retains on its status topic when it comes online.
pub fn online_now() -> String {
    format!(
        r#"{{"v":1,"online":true,"since":"{}"}}"#,
        chrono::Utc::now().to_rfc3339()
    )
}

/// A play's id.
pub fn play_id(v: &Value) -> String {
    v["play_id"].as_str().expect("play_id").to_owned()
}

/// An MQTT client of either version, at QoS 1.
#[derive(Clone)]
pub enum Publisher {
    V4(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Publisher {
    /// Hands a message to the client (not waiting for its PUBACK).
    pub async fn publish(&self, topic: String, body: String, retain: bool) -> Result<(), String> {
        match self {
            Publisher::V4(c) => c
                .publish(topic, QoS::AtLeastOnce, retain, body)
                .await
                .map_err(|e| e.to_string()),
            Publisher::V5(c) => c
                .publish(
                    topic,
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    retain,
                    body,
                )
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Hands a SUBSCRIBE to the client (not waiting for its SUBACK).
    pub async fn subscribe(&self, topic: String) -> Result<(), String> {
        match self {
            Publisher::V4(c) => c
                .subscribe(topic, QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
            Publisher::V5(c) => c
                .subscribe(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Subscribes from inside the event loop, which must not wait on its own request queue.
    fn try_subscribe(&self, topic: String) {
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

// ---------------------------------------------------------------------------------------
// A client that records what it sees
// ---------------------------------------------------------------------------------------

/// What one client saw.
#[derive(Default, Debug)]
pub struct Seen {
    /// (topic, payload (`null` when not JSON), retained, MQTT 5 message expiry)
    pub msgs: Vec<(String, Value, bool, Option<u32>)>,
    /// PUBACK reasons in order ("Success" for MQTT 3.1.1, which has none).
    pub pubacks: Vec<String>,
    pub subacks: Vec<String>,
    pub connacks: usize,
}

/// A display or an observer that records every message, acknowledgement and connection;
/// it subscribes to `subs` on each CONNACK.
pub struct Client {
    pub v5: bool,
    client: Publisher,
    pub seen: Arc<Mutex<Seen>>,
}

impl Client {
    /// Connects without credentials (the embedded broker takes anyone).
    pub async fn connect(client_id: &str, port: u16, v5: bool, subs: &[String]) -> Client {
        Self::open(None, client_id, port, v5, subs)
    }

    /// Logs in as `user` (password `pw-{user}`, as in the Mosquitto password file) under
    /// `client_id`.
    pub async fn login(
        user: &str,
        client_id: &str,
        port: u16,
        v5: bool,
        subs: &[String],
    ) -> Client {
        Self::open(Some(user), client_id, port, v5, subs)
    }

    fn open(user: Option<&str>, client_id: &str, port: u16, v5: bool, subs: &[String]) -> Client {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let subs: Vec<String> = subs.to_vec();
        let s2 = seen.clone();
        if v5 {
            use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
            let mut o = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", port);
            if let Some(user) = user {
                o.set_credentials(user, format!("pw-{user}"));
            }
            let (c, mut ev) = rumqttc::v5::AsyncClient::new(o, 100);
            let p = Publisher::V5(c);
            let p2 = p.clone();
            tokio::spawn(async move {
                loop {
                    match ev.poll().await {
                        Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(_))) => {
                            s2.lock().expect("lock").connacks += 1;
                            for s in &subs {
                                p2.try_subscribe(s.clone());
                            }
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::Publish(p))) => {
                            let t = String::from_utf8_lossy(&p.topic).into_owned();
                            let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                            let exp = p.properties.and_then(|x| x.message_expiry_interval);
                            s2.lock().expect("lock").msgs.push((t, v, p.retain, exp));
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::PubAck(a))) => {
                            // "No matching subscribers" is a success code too.
                            let r = match a.reason {
                                PubAckReason::NoMatchingSubscribers => "Success".to_owned(),
                                r => format!("{r:?}"),
                            };
                            s2.lock().expect("lock").pubacks.push(r);
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::SubAck(a))) => {
                            s2.lock()
                                .expect("lock")
                                .subacks
                                .push(format!("{:?}", a.return_codes));
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            });
            return Client {
                v5,
                client: p,
                seen,
            };
        }
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port);
        if let Some(user) = user {
            o.set_credentials(user, format!("pw-{user}"));
        }
        // rumqttc 3.1.1 refuses packets over 10 KiB by default; a display may send up to
        // the contract's 16 KiB (and a test one byte more).
        o.set_max_packet_size(64 * 1024, 64 * 1024);
        let (c, mut ev) = AsyncClient::new(o, 100);
        let p = Publisher::V4(c);
        let p2 = p.clone();
        tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        s2.lock().expect("lock").connacks += 1;
                        for s in &subs {
                            p2.try_subscribe(s.clone());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let v = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        s2.lock()
                            .expect("lock")
                            .msgs
                            .push((p.topic.clone(), v, p.retain, None));
                    }
                    Ok(Event::Incoming(Incoming::PubAck(_))) => {
                        s2.lock().expect("lock").pubacks.push("Success".into());
                    }
                    Ok(Event::Incoming(Incoming::SubAck(a))) => {
                        s2.lock()
                            .expect("lock")
                            .subacks
                            .push(format!("{:?}", a.return_codes));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Client {
            v5,
            client: p,
            seen,
        }
    }

    /// Waits for the SUBACKs of the `n` filters given at connect.
    pub async fn subscribed(&self, n: usize) {
        wait_for("SUBACKs", 10, || {
            self.seen.lock().expect("lock").subacks.len() >= n
        })
        .await;
    }

    /// Subscribes to one more filter and waits for its SUBACK.
    pub async fn subscribe(&self, topic: String) {
        let before = self.seen.lock().expect("lock").subacks.len();
        self.client.subscribe(topic).await.expect("sub");
        wait_for("a SUBACK", 10, || {
            self.seen.lock().expect("lock").subacks.len() > before
        })
        .await;
    }

    /// Publishes at QoS 1 and returns the PUBACK's reason.
    pub async fn publish(&self, topic: String, body: String, retain: bool) -> String {
        let before = self.seen.lock().expect("lock").pubacks.len();
        self.client
            .publish(topic, body, retain)
            .await
            .expect("publish");
        wait_for("a PUBACK", 10, || {
            self.seen.lock().expect("lock").pubacks.len() > before
        })
        .await;
        self.seen.lock().expect("lock").pubacks[before].clone()
    }

    /// Sends `body` as `device`'s receipt at QoS 1, without waiting for its PUBACK (a
    /// display sends its receipts back to back).
    pub async fn send_receipt(&self, device: &str, body: String) {
        self.client
            .publish(receipts_topic(device), body, false)
            .await
            .expect("publish");
    }

    /// How many messages arrived.
    pub fn received(&self) -> usize {
        self.seen.lock().expect("lock").msgs.len()
    }

    /// Payloads of the messages whose topic contains `part`, in arrival order.
    pub fn on(&self, part: &str) -> Vec<Value> {
        self.seen
            .lock()
            .expect("lock")
            .msgs
            .iter()
            .filter(|m| m.0.contains(part))
            .map(|m| m.1.clone())
            .collect()
    }

    pub fn topics(&self) -> Vec<String> {
        let s = self.seen.lock().expect("lock");
        s.msgs.iter().map(|m| m.0.clone()).collect()
    }
}

// ---------------------------------------------------------------------------------------
// A display that answers plays
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct DisplayState {
    answering: AtomicBool,
    /// How it behaves (see [`DisplayHabits`]).
    habits: DisplayHabits,
    /// Per receipt sent: (play's issued_at, expires_at, the receipt's started_at), in ms.
    windows: Mutex<BTreeMap<String, (i64, i64, i64)>>,
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
    /// With `keeps_receipts`: publishes not yet acknowledged, in the order sent (topic, body,
    /// play id), and the play ids whose receipt got a PUBACK.
    unacked: Mutex<std::collections::VecDeque<(String, String, String)>>,
    acked: Mutex<BTreeSet<String>>,
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
        Self::connect_with(id, port, v5, DisplayHabits::default())
    }

    /// A display with other habits than the default ones.
    pub fn connect_with(id: &str, port: u16, v5: bool, habits: DisplayHabits) -> Display {
        let st = Arc::new(DisplayState {
            habits,
            ..Default::default()
        });
        st.answering.store(true, Ordering::Relaxed);
        let stop = CancellationToken::new();
        let pw = format!("pw-{id}");
        if v5 {
            use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
            let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
            o.set_credentials(id, pw)
                .set_clean_start(false)
                .set_session_expiry_interval(Some(3600));
            if st.habits.keeps_receipts {
                o.set_outgoing_inflight_upper_limit(1);
            }
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
                        Ok(rumqttc::v5::Event::Incoming(Packet::ConnAck(a))) => {
                            on_connack(&p2, &st2, &id2, a.session_present)
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::Publish(m))) => {
                            let t = String::from_utf8_lossy(&m.topic).into_owned();
                            on_message(&p2, &st2, &id2, &t, &m.payload);
                        }
                        Ok(rumqttc::v5::Event::Incoming(Packet::PubAck(a))) => {
                            on_puback(&st2);
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
            if st.habits.keeps_receipts {
                o.set_inflight(1);
            }
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
                        Ok(Event::Incoming(Incoming::ConnAck(a))) => {
                            on_connack(&p2, &st2, &id2, a.session_present)
                        }
                        Ok(Event::Incoming(Incoming::Publish(m))) => {
                            on_message(&p2, &st2, &id2, &m.topic, &m.payload)
                        }
                        Ok(Event::Incoming(Incoming::PubAck(_))) => on_puback(&st2),
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
    /// Per receipt sent: (its play's issued_at, expires_at, its started_at), ms.
    pub fn windows(&self) -> BTreeMap<String, (i64, i64, i64)> {
        self.st.windows.lock().expect("lock").clone()
    }
    /// PUBACKs the broker returned for this display's publishes.
    pub fn pubacks(&self) -> usize {
        self.st.pubacks.load(Ordering::Relaxed)
    }
    /// With `keeps_receipts`: the plays whose receipt the broker acknowledged.
    pub fn acked_ids(&self) -> BTreeSet<String> {
        self.st.acked.lock().expect("lock").clone()
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

fn on_puback(st: &DisplayState) {
    st.pubacks.fetch_add(1, Ordering::Relaxed);
    if st.habits.keeps_receipts {
        if let Some((_, _, play_id)) = st.unacked.lock().expect("lock").pop_front() {
            st.acked.lock().expect("lock").insert(play_id);
        }
    }
}

/// Hands a receipt to the client; with `keeps_receipts`, remembers it until its PUBACK.
async fn send_kept(
    p: &Publisher,
    st: &DisplayState,
    topic: String,
    body: String,
    play_id: &str,
) -> bool {
    if st.habits.keeps_receipts {
        // Queued before the publish: its PUBACK may come before `publish` returns.
        st.unacked.lock().expect("lock").push_back((
            topic.clone(),
            body.clone(),
            play_id.to_owned(),
        ));
    }
    p.publish(topic, body, false).await.is_ok()
}

fn on_connack(p: &Publisher, st: &Arc<DisplayState>, id: &str, session_present: bool) {
    st.connacks.fetch_add(1, Ordering::Relaxed);
    if st.habits.keeps_receipts && !session_present {
        // The client dropped what the lost session held: send it again, in order.
        let again: Vec<_> = st.unacked.lock().expect("lock").drain(..).collect();
        if !again.is_empty() {
            let (p, st) = (p.clone(), st.clone());
            tokio::spawn(async move {
                for (topic, body, play_id) in again {
                    send_kept(&p, &st, topic, body, &play_id).await;
                }
            });
        }
    }
    p.try_subscribe(config_topic(id));
    p.try_subscribe(format!("{P}/devices/{id}/cmd"));
}

fn on_message(p: &Publisher, st: &Arc<DisplayState>, id: &str, topic: &str, payload: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(payload) else {
        return;
    };
    if topic.ends_with("/config") {
        for f in v["feeds"].as_array().into_iter().flatten() {
            if let Some(f) = f.as_str() {
                p.try_subscribe(format!("{P}/feeds/{f}"));
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
    let offset = st
        .habits
        .clock_offset_ms
        .as_ref()
        .map_or(0, |o| o.load(Ordering::Relaxed));
    let got = chrono::Utc::now() + chrono::TimeDelta::milliseconds(offset);
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
    let topic = receipts_topic(id);
    let ms = |k: &str| {
        v[k].as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map_or(0, |t| t.timestamp_millis())
    };
    let window = (ms("issued_at"), ms("expires_at"), got.timestamp_millis());
    // Copies after the first: every fifth receipt once more, or `copies - 1` for all.
    let extra = match st.habits.copies {
        0 => usize::from(st.seen.lock().expect("lock").len().is_multiple_of(5)),
        n => n - 1,
    };
    st.outstanding.fetch_add(1, Ordering::Relaxed);
    let (p, st) = (p.clone(), st.clone());
    tokio::spawn(async move {
        use rand::Rng;
        let delay = rand::thread_rng().gen_range(1000..2000);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        match send_kept(&p, &st, topic.clone(), body.clone(), &play_id).await {
            true => {
                st.windows
                    .lock()
                    .expect("lock")
                    .insert(play_id.clone(), window);
                st.sent
                    .lock()
                    .expect("lock")
                    .insert(play_id.clone(), Instant::now());
                let play_id_again = play_id;
                for _ in 0..extra {
                    // Spread so that the copies of one receipt interleave with others'.
                    let gap = if st.habits.copies == 0 {
                        300
                    } else {
                        rand::thread_rng().gen_range(20..250)
                    };
                    tokio::time::sleep(Duration::from_millis(gap)).await;
                    if send_kept(&p, &st, topic.clone(), body.clone(), &play_id_again).await {
                        st.repeats.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            false => {
                st.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        st.outstanding.fetch_sub(1, Ordering::Relaxed);
    });
}

/// How a [`Display`] behaves beyond the defaults.
#[derive(Default, Clone)]
pub struct DisplayHabits {
    /// Sends each receipt this many times (interleaved with others); 0: the default, every
    /// fifth receipt twice.
    pub copies: usize,
    /// Its clock runs this far (ms) from the system's: it stamps `started_at` with it.
    pub clock_offset_ms: Option<Arc<std::sync::atomic::AtomicI64>>,
    /// Keeps each receipt until its PUBACK (one in flight at a time, so each PUBACK names
    /// its receipt) and sends the unacknowledged ones again after a reconnect to a broker
    /// that lost its session: the MQTT client then drops them, as MQTT 5 requires.
    pub keeps_receipts: bool,
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
