//! A simulated fleet of displays that speaks the wire contract over real MQTT connections,
//! one per display, half on MQTT 3.1.1 and half on MQTT 5: used by `demo`, tests and
//! benchmarks. It knows only the contract, not the daemon's internals.
//!
//! Owns: the simulated displays' behaviour. Must not touch the store or the daemon's
//! state: it is tested from the outside like any display.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::core::wire::Topics;

/// One simulated display.
#[derive(Debug, Clone)]
pub struct SimDisplay {
    pub id: String,
    pub class: String,
    /// Every other display speaks MQTT 5.
    pub v5: bool,
}

impl SimDisplay {
    /// One simulated display per display of the inventory, every other one on MQTT 5.
    pub fn fleet(catalog: &crate::core::model::Catalog) -> Vec<SimDisplay> {
        catalog
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| SimDisplay {
                id: d.id.to_string(),
                class: d.class.to_string(),
                v5: i % 2 == 0,
            })
            .collect()
    }
}

/// What the fleet has done so far.
#[derive(Debug, Default)]
pub struct SimStats {
    pub online: AtomicU64,
    pub configs: AtomicU64,
    pub plays_seen: AtomicU64,
    pub receipts_sent: AtomicU64,
    pub connect_errors: AtomicU64,
    /// PUBACKs the broker returned, for receipts and presences alike.
    pub pubacks: AtomicU64,
    /// Presences published on connecting (each acknowledged like a receipt).
    pub presences: AtomicU64,
    /// Receipts sent with status `played`, by class.
    pub played_by_class: Mutex<BTreeMap<String, u64>>,
    /// No new plays are answered once set.
    pub stopping: AtomicBool,
}

impl SimStats {
    /// Receipts the broker acknowledged: every PUBACK less those of the presences. Exact
    /// once the presences are acknowledged too (they go first, on connecting); it can
    /// only undercount otherwise, never count a receipt the broker did not take.
    pub fn receipts_acked(&self) -> u64 {
        let presences = self.presences.load(Ordering::Relaxed);
        self.pubacks
            .load(Ordering::Relaxed)
            .saturating_sub(presences)
    }
}

/// What a display does in answer to an event; applied by the protocol-specific loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Publish {
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    Subscribe(String),
    /// A receipt that leaves when the scroll ends.
    Later {
        after: Duration,
        topic: String,
        payload: Vec<u8>,
        class_played: bool,
    },
}

/// The contract's display behaviour, without I/O.
pub struct DisplayLogic {
    pub id: String,
    pub topics: Topics,
    /// Real time per second of on-screen time (1 / speed).
    pub time_scale: f64,
    subscribed: HashSet<String>,
}

impl DisplayLogic {
    pub fn new(id: String, topics: Topics, time_scale: f64) -> Self {
        DisplayLogic {
            id,
            topics,
            time_scale,
            subscribed: HashSet::new(),
        }
    }

    pub fn presence(&self, online: bool, now: DateTime<Utc>) -> Vec<u8> {
        let v = if online {
            serde_json::json!({"v": 1, "online": true, "since": now.to_rfc3339()})
        } else {
            serde_json::json!({"v": 1, "online": false})
        };
        v.to_string().into_bytes()
    }

    pub fn on_connected(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        // A new session may have lost its subscriptions: subscribe again.
        self.subscribed.clear();
        let mut out = vec![Action::Publish {
            topic: self.topics.status(&self.id),
            payload: self.presence(true, now),
            retain: true,
        }];
        for t in [self.topics.config(&self.id), self.topics.cmd(&self.id)] {
            self.subscribed.insert(t.clone());
            out.push(Action::Subscribe(t));
        }
        out
    }

    pub fn on_message(&mut self, topic: &str, payload: &[u8], now: DateTime<Utc>) -> Vec<Action> {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return vec![];
        };
        if topic == self.topics.config(&self.id) {
            let feeds = v["feeds"].as_array().cloned().unwrap_or_default();
            return feeds
                .iter()
                .filter_map(|f| f.as_str())
                .map(|f| self.topics.feed(f))
                .filter(|t| self.subscribed.insert(t.clone()))
                .map(Action::Subscribe)
                .collect();
        }
        let Some(play_id) = v["play_id"].as_str() else {
            return vec![];
        };
        let expired = v["expires_at"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .is_some_and(|e| e < now);
        let duration_s = v["duration_s"].as_u64().unwrap_or(10);
        let status = if expired { "expired" } else { "played" };
        let receipt = serde_json::json!({
            "v": 1, "play_id": play_id, "started_at": now.to_rfc3339(),
            "duration_ms": duration_s * 1000, "status": status,
        });
        let after = if expired {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(duration_s as f64 * self.time_scale)
        };
        vec![Action::Later {
            after,
            topic: self.topics.receipts(&self.id),
            payload: receipt.to_string().into_bytes(),
            class_played: !expired,
        }]
    }
}

/// A fleet to run: its displays, the broker they connect to, and how.
pub struct Fleet {
    pub displays: Vec<SimDisplay>,
    pub host: String,
    pub port: u16,
    /// The topic prefix `P`.
    pub prefix: String,
    /// Multiplies on-screen time, as the daemon's feeds are compressed.
    pub time_scale: f64,
    /// Connections started per second.
    pub per_second: f64,
    pub stats: Arc<SimStats>,
    pub stop: CancellationToken,
}

/// Runs the fleet until its `stop`; connections ramp up at `per_second`.
pub fn spawn_fleet(fleet: Fleet) -> TaskTracker {
    let Fleet {
        displays,
        host,
        port,
        prefix,
        time_scale,
        per_second,
        stats,
        stop,
    } = fleet;
    let tasks = TaskTracker::new();
    let topics = Topics::new(prefix);
    let t2 = tasks.clone();
    tasks.spawn(async move {
        let gap = Duration::from_secs_f64(1.0 / per_second.max(1.0));
        for d in displays {
            if stop.is_cancelled() {
                break;
            }
            let logic = DisplayLogic::new(d.id.clone(), topics.clone(), time_scale);
            let (stats, stop, host) = (stats.clone(), stop.clone(), host.clone());
            if d.v5 {
                t2.spawn(run_v5(d, logic, host, port, stats, stop));
            } else {
                t2.spawn(run_v4(d, logic, host, port, stats, stop));
            }
            tokio::time::sleep(gap).await;
        }
    });
    tasks
}

fn count_played(stats: &SimStats, class: &str) {
    if let Ok(mut m) = stats.played_by_class.lock() {
        *m.entry(class.to_owned()).or_default() += 1;
    }
}

macro_rules! display_loop {
    ($name:ident, $m:path, $qos:expr, $will:expr, $connack:path, $publish:path, $puback:path, $inflight:ident) => {
        async fn $name(
            d: SimDisplay,
            mut logic: DisplayLogic,
            host: String,
            port: u16,
            stats: Arc<SimStats>,
            stop: CancellationToken,
        ) {
            use $m as m;
            let mut o = m::MqttOptions::new(d.id.clone(), host, port);
            o.set_keep_alive(Duration::from_secs(30));
            // A display has a receipt or two in flight. rumqttc sizes its table of
            // outgoing publishes by this limit up front, and for MQTT 5 the default is
            // 65,535 entries: about 13 MiB per display, 20 GiB for the first city.
            o.$inflight(DISPLAY_INFLIGHT);
            o.set_last_will($will(logic.topics.status(&d.id), logic.presence(false, Utc::now())));
            let (client, mut ev) = m::AsyncClient::new(o, 256);
            let mut online = false;
            loop {
                let e = tokio::select! {
                    _ = stop.cancelled() => break,
                    e = ev.poll() => e,
                };
                let actions = match e {
                    Ok(m::Event::Incoming($connack(_))) => {
                        if !online {
                            online = true;
                            stats.online.fetch_add(1, Ordering::Relaxed);
                        }
                        logic.on_connected(Utc::now())
                    }
                    Ok(m::Event::Incoming($publish(p))) => {
                        let topic = String::from_utf8_lossy(p.topic.as_ref()).into_owned();
                        if topic.ends_with("/config") {
                            stats.configs.fetch_add(1, Ordering::Relaxed);
                        } else if stats.stopping.load(Ordering::Relaxed) {
                            continue;
                        } else {
                            stats.plays_seen.fetch_add(1, Ordering::Relaxed);
                        }
                        logic.on_message(&topic, &p.payload, Utc::now())
                    }
                    Ok(m::Event::Incoming($puback(_))) => {
                        stats.pubacks.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Ok(_) => continue,
                    Err(err) => {
                        debug!(display = %d.id, error = %err, "display connection error");
                        stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                        if online {
                            online = false;
                            stats.online.fetch_sub(1, Ordering::Relaxed);
                        }
                        let wait = rand::thread_rng().gen_range(500..2000);
                        tokio::select! {
                            _ = stop.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                        }
                        continue;
                    }
                };
                for a in actions {
                    match a {
                        Action::Publish { topic, payload, retain } => {
                            if client.try_publish(topic, $qos, retain, payload).is_ok() {
                                stats.presences.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Action::Subscribe(t) => {
                            let _ = client.try_subscribe(t, $qos);
                        }
                        Action::Later { after, topic, payload, class_played } => {
                            let (client, stats, class) = (client.clone(), stats.clone(), d.class.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(after).await;
                                if client.publish(topic, $qos, false, payload).await.is_ok() {
                                    stats.receipts_sent.fetch_add(1, Ordering::Relaxed);
                                    if class_played {
                                        count_played(&stats, &class);
                                    }
                                }
                            });
                        }
                    }
                }
            }
            // A display switched off says so (its last will would too, later).
            let _ = client.try_publish(
                logic.topics.status(&d.id),
                $qos,
                true,
                logic.presence(false, Utc::now()),
            );
            let _ = client.try_disconnect();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, ev.poll()).await {
                if matches!(e, m::Event::Outgoing(_)) {
                    continue;
                }
            }
            if online {
                stats.online.fetch_sub(1, Ordering::Relaxed);
            }
        }
    };
}

/// Most receipts a simulated display keeps unacknowledged.
const DISPLAY_INFLIGHT: u16 = 16;

display_loop!(
    run_v4,
    rumqttc,
    rumqttc::QoS::AtLeastOnce,
    |t, p| rumqttc::LastWill::new(t, p, rumqttc::QoS::AtLeastOnce, true),
    rumqttc::Incoming::ConnAck,
    rumqttc::Incoming::Publish,
    rumqttc::Incoming::PubAck,
    set_inflight
);
display_loop!(
    run_v5,
    rumqttc::v5,
    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
    |t, p| rumqttc::v5::mqttbytes::v5::LastWill::new(
        t,
        p,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        true,
        None
    ),
    rumqttc::v5::mqttbytes::v5::Packet::ConnAck,
    rumqttc::v5::mqttbytes::v5::Packet::Publish,
    rumqttc::v5::mqttbytes::v5::Packet::PubAck,
    set_outgoing_inflight_upper_limit
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_display_follows_its_config_and_answers_plays() {
        let mut d = DisplayLogic::new("bus-1".into(), Topics::new("civicast/v1"), 0.5);
        let now = Utc::now();
        let a = d.on_connected(now);
        assert!(
            matches!(&a[0], Action::Publish { retain: true, topic, .. } if topic == "civicast/v1/devices/bus-1/status")
        );
        let a = d.on_message(
            "civicast/v1/devices/bus-1/config",
            br#"{"v":1,"device_id":"bus-1","class":"bus_led","feeds":["a","b"],"prefix":"civicast/v1"}"#,
            now,
        );
        assert_eq!(
            a,
            vec![
                Action::Subscribe("civicast/v1/feeds/a".into()),
                Action::Subscribe("civicast/v1/feeds/b".into())
            ]
        );
        let later = (now + chrono::Duration::minutes(3)).to_rfc3339();
        let play = format!(r#"{{"v":1,"play_id":"p1","duration_s":10,"expires_at":"{later}"}}"#);
        match &d.on_message("civicast/v1/feeds/a", play.as_bytes(), now)[..] {
            [Action::Later {
                after,
                payload,
                class_played: true,
                ..
            }] => {
                assert_eq!(*after, Duration::from_secs(5));
                let v: serde_json::Value = serde_json::from_slice(payload).expect("json");
                assert_eq!(v["status"], "played");
                assert_eq!(v["play_id"], "p1");
            }
            other => panic!("unexpected {other:?}"),
        }
        let past = (now - chrono::Duration::minutes(1)).to_rfc3339();
        let play = format!(r#"{{"v":1,"play_id":"p2","expires_at":"{past}"}}"#);
        match &d.on_message("civicast/v1/feeds/a", play.as_bytes(), now)[..] {
            [Action::Later {
                payload,
                class_played: false,
                ..
            }] => {
                let v: serde_json::Value = serde_json::from_slice(payload).expect("json");
                assert_eq!(v["status"], "expired");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
