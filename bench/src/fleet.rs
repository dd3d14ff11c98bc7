//! Simulated displays for the scenarios that publish receipts: MQTT 3.1.1 clients, one
//! connection each, that publish QoS 1 receipts and count their acknowledgements.
//!
//! Owns: the bench's publishers and the wait for a count to settle. Must not touch: the
//! daemon's own session or broker (it is one more client of whichever broker it is given).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use civicast::core::wire::Topics;
use tokio_util::sync::CancellationToken;

use crate::fixture::device_name;

pub(crate) fn split_host_port(s: &str) -> anyhow::Result<(String, u16)> {
    let s = s.trim_start_matches("mqtt://");
    let (h, p) = s
        .rsplit_once(':')
        .with_context(|| format!("--mqtt {s:?}: expected host:port"))?;
    Ok((h.to_owned(), p.parse().context("--mqtt port")?))
}

pub(crate) fn receipt_payload(play_id: &str, at: DateTime<Utc>) -> String {
    format!(
        r#"{{"v":1,"play_id":"{play_id}","started_at":"{}","duration_ms":15000,"status":"played"}}"#,
        at.to_rfc3339()
    )
}

/// `n` MQTT 3.1.1 clients connected to `host:port`; each one's poller counts PUBACKs.
pub(crate) struct Fleet {
    pub(crate) clients: Vec<rumqttc::AsyncClient>,
    stop: CancellationToken,
}

pub(crate) async fn connect_fleet(
    host: &str,
    port: u16,
    n: usize,
    tag: &str,
    queue: usize,
) -> anyhow::Result<Fleet> {
    let connected = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut o = rumqttc::MqttOptions::new(format!("{tag}-{}", device_name(i)), host, port);
        o.set_keep_alive(Duration::from_secs(60))
            .set_clean_session(true);
        let (c, mut ev) = rumqttc::AsyncClient::new(o, queue + 16);
        let (connected, stop) = (connected.clone(), stop.clone());
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let e = tokio::select! {
                    _ = stop.cancelled() => break,
                    e = ev.poll() => e,
                };
                match e {
                    Ok(rumqttc::Event::Incoming(rumqttc::Incoming::ConnAck(_))) => {
                        if first {
                            connected.fetch_add(1, Ordering::Relaxed);
                            first = false;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        clients.push(c);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while connected.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            stop.cancel();
            anyhow::bail!(
                "only {} of {n} displays connected to {host}:{port} within 60 s",
                connected.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Fleet { clients, stop })
}

impl Fleet {
    /// Every display publishes its payloads (QoS 1) from its own task.
    pub(crate) fn publish_all(&self, topics: &Topics, payloads: Arc<Vec<String>>) {
        for (i, c) in self.clients.iter().enumerate() {
            let c = c.clone();
            let topic = topics.receipts(&device_name(i));
            let payloads = payloads.clone();
            tokio::spawn(async move {
                for p in payloads.iter() {
                    if c.publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, p.clone())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    }

    pub(crate) async fn close(self) {
        for c in &self.clients {
            let _ = c.try_disconnect();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.stop.cancel();
    }
}

/// Waits until `done()` reaches `target`, or nothing moved for `stall`; returns when it
/// reached its last value and that value.
pub(crate) async fn wait_count(
    target: u64,
    stall: Duration,
    done: impl Fn() -> u64,
) -> (Instant, u64) {
    let mut last = (Instant::now(), done());
    loop {
        let now = done();
        if now >= target {
            return (Instant::now(), now);
        }
        if now != last.1 {
            last = (Instant::now(), now);
        } else if last.0.elapsed() > stall {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
