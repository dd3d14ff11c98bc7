//! The storm's fleet: displays as raw TCP connections framed with rumqttc's packet codecs
//! (v4 and v5), no event loop each, so that twenty thousand fit in a few processes. Run as
//! this executable's hidden `storm-fleet`, in processes the storm SIGKILLs at once. Also the
//! storm's own MQTT reads of what the broker retained.
//!
//! Owns: one fleet process's displays and what it reports to its parent. Must not touch:
//! the daemon (it only speaks MQTT to the broker it is given).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::storm::{FleetReport, ATTEMPT, KEEP_ALIVE_S, MAX_PACKET, PREFIX};

/// MQTT 3.1.1 or 5, alternating over the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V4,
    V5,
}

/// What a display needs to tell apart among the packets it receives.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    ConnAck { ok: bool },
    Publish { topic: String, pkid: u16 },
    Other,
}

pub fn offline_payload() -> &'static str {
    r#"{"v":1,"online":false}"#
}

pub fn online_payload(since: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        r#"{{"v":1,"online":true,"since":"{}"}}"#,
        since.to_rfc3339()
    )
}

/// A display's CONNECT: its id as client id, clean session, its last will retained QoS 1.
pub fn encode_connect(v: Version, id: &str, buf: &mut BytesMut) -> anyhow::Result<()> {
    let will_topic = format!("{PREFIX}/devices/{id}/status");
    match v {
        Version::V4 => {
            let mut c = v4::Connect::new(id);
            c.keep_alive = KEEP_ALIVE_S;
            c.clean_session = true;
            c.last_will = Some(v4::LastWill::new(
                will_topic,
                offline_payload(),
                rumqttc::QoS::AtLeastOnce,
                true,
            ));
            c.write(buf).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        Version::V5 => {
            let c = v5::Connect {
                keep_alive: KEEP_ALIVE_S,
                client_id: id.to_owned(),
                clean_start: true,
                properties: None,
            };
            let will = Some(v5::LastWill::new(
                will_topic,
                offline_payload(),
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                true,
                None,
            ));
            c.write(&will, &None, buf)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    Ok(())
}

fn encode_subscribe(v: Version, topic: &str, buf: &mut BytesMut) -> anyhow::Result<()> {
    match v {
        Version::V4 => {
            let mut s = v4::Subscribe::new(topic, rumqttc::QoS::AtLeastOnce);
            s.pkid = 1;
            s.write(buf).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        Version::V5 => {
            let f = v5::Filter::new(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
            let mut s = v5::Subscribe::new(f, None);
            s.pkid = 1;
            s.write(buf).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    Ok(())
}

fn encode_presence(
    v: Version,
    topic: &str,
    payload: String,
    buf: &mut BytesMut,
) -> anyhow::Result<()> {
    match v {
        Version::V4 => {
            let mut p = v4::Publish::new(topic, rumqttc::QoS::AtLeastOnce, payload);
            p.retain = true;
            p.pkid = 2;
            p.write(buf).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        Version::V5 => {
            let mut p = v5::Publish::new(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                payload,
                None,
            );
            p.retain = true;
            p.pkid = 2;
            p.write(buf).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
    }
    Ok(())
}

fn encode_puback(v: Version, pkid: u16, buf: &mut BytesMut) -> anyhow::Result<()> {
    match v {
        Version::V4 => v4::PubAck::new(pkid).write(buf),
        Version::V5 => {
            return v5::PubAck::new(pkid, None)
                .write(buf)
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{e:?}"))
        }
    }
    .map(|_| ())
    .map_err(|e| anyhow::anyhow!("{e:?}"))
}

fn encode_ping(v: Version, buf: &mut BytesMut) -> anyhow::Result<()> {
    match v {
        Version::V4 => v4::PingReq
            .write(buf)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{e:?}")),
        Version::V5 => v5::PingReq::write(buf)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{e:?}")),
    }
}

/// The next whole packet in `buf`, or None until more bytes arrive.
pub fn decode(v: Version, buf: &mut BytesMut) -> anyhow::Result<Option<Incoming>> {
    match v {
        Version::V4 => match v4::Packet::read(buf, MAX_PACKET) {
            Ok(v4::Packet::ConnAck(a)) => Ok(Some(Incoming::ConnAck {
                ok: a.code == v4::ConnectReturnCode::Success,
            })),
            Ok(v4::Packet::Publish(p)) => Ok(Some(Incoming::Publish {
                topic: p.topic,
                pkid: if p.qos == rumqttc::QoS::AtMostOnce {
                    0
                } else {
                    p.pkid
                },
            })),
            Ok(_) => Ok(Some(Incoming::Other)),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => anyhow::bail!("{e:?}"),
        },
        Version::V5 => match v5::Packet::read(buf, Some(MAX_PACKET as u32)) {
            Ok(v5::Packet::ConnAck(a)) => Ok(Some(Incoming::ConnAck {
                ok: a.code == v5::ConnectReturnCode::Success,
            })),
            Ok(v5::Packet::Publish(p)) => Ok(Some(Incoming::Publish {
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                pkid: if p.qos == rumqttc::v5::mqttbytes::QoS::AtMostOnce {
                    0
                } else {
                    p.pkid
                },
            })),
            Ok(_) => Ok(Some(Incoming::Other)),
            Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => anyhow::bail!("{e:?}"),
        },
    }
}

/// One display's connection.
struct Conn {
    v: Version,
    s: TcpStream,
    rx: BytesMut,
    tx: BytesMut,
}

impl Conn {
    async fn flush(&mut self) -> anyhow::Result<()> {
        self.s.write_all(&self.tx).await?;
        self.tx.clear();
        Ok(())
    }

    /// The next packet, acknowledging QoS 1 publishes on the way.
    async fn next(&mut self) -> anyhow::Result<Incoming> {
        loop {
            if let Some(p) = decode(self.v, &mut self.rx)? {
                if let Incoming::Publish { pkid, .. } = &p {
                    if *pkid != 0 {
                        encode_puback(self.v, *pkid, &mut self.tx)?;
                        self.flush().await?;
                    }
                }
                return Ok(p);
            }
            if self.s.read_buf(&mut self.rx).await? == 0 {
                anyhow::bail!("the broker closed the connection");
            }
        }
    }
}

/// Connects, subscribes to its config and waits for it; the connection on success.
async fn attempt(v: Version, addr: &str, id: &str, config: &str) -> anyhow::Result<Conn> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut c = Conn {
        v,
        s,
        rx: BytesMut::with_capacity(512),
        tx: BytesMut::with_capacity(256),
    };
    encode_connect(v, id, &mut c.tx)?;
    c.flush().await?;
    loop {
        match c.next().await? {
            Incoming::ConnAck { ok: true } => break,
            Incoming::ConnAck { ok: false } => anyhow::bail!("CONNACK refused"),
            _ => {}
        }
    }
    encode_subscribe(v, config, &mut c.tx)?;
    c.flush().await?;
    loop {
        if let Incoming::Publish { topic, .. } = c.next().await? {
            if topic == config {
                return Ok(c);
            }
        }
    }
}

struct Tally {
    got: Mutex<Vec<f64>>,
    retries: AtomicU64,
    failures: AtomicU64,
    done: AtomicU64,
    /// Connections lost after the config, each made again.
    drops: AtomicU64,
}

/// One display: connect until it has its config (or the deadline), then its presence, then
/// stay connected (answering and pinging) until the process is killed. A connection lost
/// after that is counted as a drop and made again, as a display in the street would: on a
/// slow broker the CONNECT of an attempt given up on can be read after the next one's and
/// take the session over from it.
async fn display(
    i: usize,
    id: String,
    addr: Arc<str>,
    t0: Instant,
    within: Duration,
    t: Arc<Tally>,
) {
    let v = if i.is_multiple_of(2) {
        Version::V4
    } else {
        Version::V5
    };
    let config = format!("{PREFIX}/devices/{id}/config");
    let status = format!("{PREFIX}/devices/{id}/status");
    let mut first = true;
    let mut connected_once = false;
    loop {
        let mut c = loop {
            if !connected_once && t0.elapsed() >= within {
                t.failures.fetch_add(1, Ordering::Relaxed);
                t.done.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if !first && !connected_once {
                t.retries.fetch_add(1, Ordering::Relaxed);
            }
            first = false;
            let left = if connected_once {
                ATTEMPT
            } else {
                within.saturating_sub(t0.elapsed()).min(ATTEMPT)
            };
            match tokio::time::timeout(left, attempt(v, &addr, &id, &config)).await {
                Ok(Ok(c)) => break c,
                Ok(Err(e)) => {
                    tracing::debug!(display = %id, error = %e, "storm attempt failed");
                    // Spread the retries a little so they do not come back as one wave.
                    let ms = 100 + (i as u64 * 7919) % 400;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Err(_) => {}
            }
        };
        if !connected_once {
            connected_once = true;
            if let Ok(mut g) = t.got.lock() {
                g.push(t0.elapsed().as_secs_f64());
            }
            t.done.fetch_add(1, Ordering::Relaxed);
        }
        if encode_presence(v, &status, online_payload(chrono::Utc::now()), &mut c.tx).is_ok()
            && c.flush().await.is_ok()
        {
            let mut ping = tokio::time::interval(Duration::from_secs(u64::from(KEEP_ALIVE_S) / 2));
            ping.tick().await;
            loop {
                tokio::select! {
                    r = c.next() => if r.is_err() { break },
                    _ = ping.tick() => {
                        if encode_ping(v, &mut c.tx).is_err() || c.flush().await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        t.drops.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(100 + (i as u64 * 7919) % 400)).await;
    }
}

/// `storm-fleet`: the displays listed in `ids`, READY on stdout, then all at once on "go"
/// from stdin; `FLEET {json}` when each has its config or gave up; then held open, with a
/// `DROPPED n` line each time the count of lost connections changes, until killed.
pub async fn fleet_process(mqtt: &str, ids: &Path, within: Duration) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(ids).with_context(|| format!("reading {}", ids.display()))?;
    let ids: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    let n = ids.len() as u64;
    println!("READY");
    let mut line = String::new();
    BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await?;
    let t0 = Instant::now();
    let addr: Arc<str> = Arc::from(mqtt.trim_start_matches("mqtt://"));
    let t = Arc::new(Tally {
        got: Mutex::new(Vec::with_capacity(ids.len())),
        retries: AtomicU64::new(0),
        failures: AtomicU64::new(0),
        done: AtomicU64::new(0),
        drops: AtomicU64::new(0),
    });
    for (i, id) in ids.into_iter().enumerate() {
        tokio::spawn(display(i, id, addr.clone(), t0, within, t.clone()));
    }
    while t.done.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = FleetReport {
        got: t.got.lock().map(|g| g.clone()).unwrap_or_default(),
        retries: t.retries.load(Ordering::Relaxed),
        failures: t.failures.load(Ordering::Relaxed),
    };
    println!("FLEET {}", serde_json::to_string(&r)?);
    // Held open: the parent kills this process to drop every connection at once. Until
    // then it says how many connections were lost since the config and made again.
    let mut said = 0;
    loop {
        let d = t.drops.load(Ordering::Relaxed);
        if d != said {
            println!("DROPPED {d}");
            said = d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- reading the broker back ----

fn probe(port: u16) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let id = format!("civicast-bench-storm-{}", ulid::Ulid::new());
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(MAX_PACKET, MAX_PACKET);
    rumqttc::AsyncClient::new(o, 16)
}

/// Polls `ev` for retained publishes into `got` until `done(got)`, or nothing came for
/// `quiet`, or `end`.
async fn collect(
    ev: &mut rumqttc::EventLoop,
    got: &mut HashMap<String, Vec<u8>>,
    quiet: Duration,
    end: Instant,
    done: impl Fn(&HashMap<String, Vec<u8>>) -> bool,
) {
    let mut last = Instant::now();
    while !done(got) && Instant::now() < end && last.elapsed() < quiet {
        match tokio::time::timeout(Duration::from_millis(100), ev.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Incoming::Publish(p)))) => {
                if p.retain {
                    got.insert(p.topic.clone(), p.payload.to_vec());
                    last = Instant::now();
                }
            }
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "storm probe lost its connection");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Every retained message under one wildcard `filter`, as a dashboard would read them, by
/// a fresh client, until `want` arrived or nothing came for `quiet`.
pub(crate) async fn retained_wildcard(
    port: u16,
    filter: &str,
    want: usize,
    quiet: Duration,
) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let (c, mut ev) = probe(port);
    // QoS 0: a QoS 1 subscription is held to the broker's in-flight window.
    c.subscribe(filter, rumqttc::QoS::AtMostOnce).await?;
    let mut got = HashMap::new();
    let end = Instant::now() + Duration::from_secs(60);
    collect(&mut ev, &mut got, quiet, end, |g| g.len() >= want).await;
    let _ = c.try_disconnect();
    Ok(got)
}

/// The retained message of each of `topics`, by fresh clients subscribing to 100 topics
/// at a time (a broker may hand one wildcard subscriber no more retained messages than its
/// outgoing queue holds: rumqttd 0.20, 200), passes repeated for the missing ones until
/// `deadline`.
pub(crate) async fn retained_each(
    port: u16,
    topics: &[String],
    deadline: Duration,
) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let end = Instant::now() + deadline;
    let mut got = HashMap::new();
    loop {
        let missing: Vec<&String> = topics.iter().filter(|t| !got.contains_key(*t)).collect();
        if missing.is_empty() || Instant::now() >= end {
            return Ok(got);
        }
        let (c, mut ev) = probe(port);
        for chunk in missing.chunks(100) {
            let filters = chunk
                .iter()
                .map(|t| rumqttc::SubscribeFilter::new((*t).clone(), rumqttc::QoS::AtMostOnce));
            // The request queue drains only while the event loop is polled (in `collect`);
            // against a broker that stopped answering it fills, so bound the wait.
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero()
                || tokio::time::timeout(left, c.subscribe_many(filters))
                    .await
                    .is_err()
            {
                break;
            }
            collect(&mut ev, &mut got, Duration::from_secs(1), end, |g| {
                chunk.iter().all(|t| g.contains_key(*t))
            })
            .await;
        }
        let _ = c.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(200), ev.poll()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storm::online_sum;

    #[test]
    fn a_v4_connect_carries_the_retained_offline_will() {
        let mut b = BytesMut::new();
        encode_connect(Version::V4, "taxi-0007", &mut b).expect("encode");
        let Ok(v4::Packet::Connect(c)) = v4::Packet::read(&mut b, MAX_PACKET) else {
            panic!("not a CONNECT");
        };
        assert_eq!(c.client_id, "taxi-0007");
        assert!(c.clean_session);
        let w = c.last_will.expect("a will");
        assert_eq!(w.topic, "civicast/v1/devices/taxi-0007/status");
        assert_eq!(&w.message[..], br#"{"v":1,"online":false}"#);
        assert_eq!(w.qos, rumqttc::QoS::AtLeastOnce);
        assert!(w.retain);
    }

    #[test]
    fn a_v5_connect_carries_the_retained_offline_will() {
        let mut b = BytesMut::new();
        encode_connect(Version::V5, "bus-K1-0421", &mut b).expect("encode");
        assert_eq!(b[8], 5, "protocol level 5");
        let Ok(v5::Packet::Connect(c, Some(w), None)) = v5::Packet::read(&mut b, None) else {
            panic!("not a CONNECT with a will");
        };
        assert_eq!(c.client_id, "bus-K1-0421");
        assert!(c.clean_start);
        assert_eq!(&w.topic[..], b"civicast/v1/devices/bus-K1-0421/status");
        assert_eq!(&w.message[..], br#"{"v":1,"online":false}"#);
        assert_eq!(w.qos, rumqttc::v5::mqttbytes::QoS::AtLeastOnce);
        assert!(w.retain);
    }

    #[test]
    fn the_presence_is_what_the_daemon_parses_as_online() {
        let p = online_payload(chrono::Utc::now());
        let parsed = civicast::core::wire::parse_presence(p.as_bytes()).expect("presence");
        assert!(parsed.online);
        let off = civicast::core::wire::parse_presence(offline_payload().as_bytes()).expect("will");
        assert!(!off.online);
    }

    #[test]
    fn a_split_packet_waits_for_its_rest() {
        let mut whole = BytesMut::new();
        let mut p = v4::Publish::new(
            "civicast/v1/devices/a/config",
            rumqttc::QoS::AtLeastOnce,
            "{}",
        );
        p.pkid = 7;
        p.write(&mut whole).expect("encode");
        let mut b = BytesMut::from(&whole[..5]);
        assert_eq!(decode(Version::V4, &mut b).expect("decode"), None);
        b.extend_from_slice(&whole[5..]);
        assert_eq!(
            decode(Version::V4, &mut b).expect("decode"),
            Some(Incoming::Publish {
                topic: "civicast/v1/devices/a/config".into(),
                pkid: 7
            })
        );
    }

    #[test]
    fn the_online_gauge_sums_its_classes() {
        let m = "# HELP civicast_displays_online Displays whose presence says online, by class.\n\
                 # TYPE civicast_displays_online gauge\n\
                 civicast_displays_online{class=\"taxi_top\"} 1611\n\
                 civicast_displays_online{class=\"bus_led\"} 887\n\
                 civicast_displays_online_other 5\n\
                 civicast_reloads_total 0\n";
        assert_eq!(online_sum(m), Some(2498));
        let empty = "# TYPE civicast_displays_online gauge\ncivicast_reloads_total 0\n";
        assert_eq!(online_sum(empty), Some(0), "no class yet is zero");
        assert_eq!(online_sum("civicast_reloads_total 0\n"), None);
    }
}
