//! The daemon's own MQTT session (rumqttc, MQTT 5): one task polls the event loop and only
//! polls; publishes go through the `AsyncClient` from other tasks.
//!
//! Pitfalls of rumqttc this module exists to handle, each met in the field: it reconnects
//! at once with no backoff, so we sleep with jitter after an error; we resubscribe on every
//! ConnAck; the session is persistent (clean start off, long session expiry) so the broker keeps
//! receipts while the daemon is away; acknowledgements are manual, sent by the ingest worker
//! only after a receipt's batch commits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::Rng;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Where and how the daemon connects.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Filters subscribed on every ConnAck.
    pub filters: Vec<String>,
    /// Most unacknowledged messages the broker may push to us (MQTT 5 receive maximum).
    pub receive_maximum: u16,
}

/// A message for the ingest worker, to be acknowledged once its batch commits.
#[derive(Debug)]
pub struct Delivery {
    pub topic: Bytes,
    pub payload: Bytes,
    pub ack: Ack,
    /// When the daemon first had it: a receipt's latency runs from here to its commit.
    pub arrived: Instant,
}

/// Who is waiting for a delivery's acknowledgement.
#[derive(Debug)]
pub enum Ack {
    /// The daemon's session owes the broker a PUBACK for this publish.
    Session(Box<Publish>),
    /// The embedded broker holds the display's PUBACK until this is answered; dropping it
    /// unanswered disconnects the display, which then sends the receipt again.
    Held(oneshot::Sender<()>),
}

impl Ack {
    /// Sends the acknowledgement owed.
    pub async fn send(self, client: &AsyncClient) {
        match self {
            Ack::Session(p) => {
                if let Err(e) = client.ack(&p).await {
                    warn!(error = %e, "could not queue acknowledgement");
                }
            }
            // The display may have gone meanwhile; it sends the receipt again, a duplicate.
            Ack::Held(tx) => drop(tx.send(())),
        }
    }
}

/// The daemon's session: publish with `client`, watch `connected`; what arrives goes to the
/// ingest worker's queue given to `start`.
pub struct Session {
    pub client: AsyncClient,
    pub connected: Arc<AtomicBool>,
}

/// Connects and spawns the polling task; it runs until `shutdown`.
pub fn start(
    opts: SessionOptions,
    tx: mpsc::UnboundedSender<Delivery>,
    shutdown: CancellationToken,
) -> Session {
    let (client, mut eventloop) = AsyncClient::new(mqtt_options(&opts), 10_000);
    // The ingest queue (`tx`) is unbounded on purpose: the poller must never wait for the
    // ingest worker, because the worker's acknowledgements travel through this poller. A
    // bounded channel deadlocked a daemon with a million configs to publish: the poller
    // waited for room there, so it no longer read the socket; the broker's PUBACKs for the
    // configs went unread, rumqttc (outgoing window full) stopped taking requests, so the
    // worker's acks could not be queued and it stopped draining the channel. What bounds it
    // is the broker's flow control: at most `receive_maximum` unacknowledged messages.
    let connected = Arc::new(AtomicBool::new(false));
    let sub_client = client.clone();
    let flag = connected.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = eventloop.poll() => ev,
            };
            match ev {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    info!(host = %opts.host, port = opts.port, session_present = ack.session_present, "connected to MQTT broker");
                    flag.store(true, Ordering::Relaxed);
                    backoff = Duration::from_millis(100);
                    subscribe_all(sub_client.clone(), opts.filters.clone());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let d = Delivery {
                        topic: p.topic.clone(),
                        payload: p.payload.clone(),
                        ack: Ack::Session(Box::new(p)),
                        arrived: Instant::now(),
                    };
                    if tx.send(d).is_err() {
                        break;
                    }
                }
                Ok(Event::Incoming(Packet::Disconnect(d))) => {
                    warn!(reason = ?d.reason_code, "broker sent DISCONNECT");
                }
                // Our own goodbye: the broker closes the connection next, and a reconnect
                // (with a warning) would follow it.
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                    debug!("sent DISCONNECT; the session ends");
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    flag.store(false, Ordering::Relaxed);
                    let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
                    let wait = backoff + Duration::from_millis(jitter);
                    warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "MQTT connection lost");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        flag.store(false, Ordering::Relaxed);
        debug!("MQTT polling task ended");
    });
    Session { client, connected }
}

fn mqtt_options(opts: &SessionOptions) -> MqttOptions {
    let mut o = MqttOptions::new(opts.client_id.clone(), opts.host.clone(), opts.port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_start(false)
        // Keep the session (and the receipts queued in it) for a week of downtime.
        .set_session_expiry_interval(Some(7 * 24 * 3600))
        .set_manual_acks(true)
        .set_receive_maximum(Some(opts.receive_maximum))
        .set_max_packet_size(Some(1024 * 1024))
        .set_request_channel_capacity(10_000)
        .set_outgoing_inflight_upper_limit(1_000);
    if let (Some(u), p) = (&opts.username, &opts.password) {
        o.set_credentials(u.clone(), p.clone().unwrap_or_default());
    }
    o
}

/// Subscribes to `filters` from a task of its own. Never `.await` a request from the polling
/// task: the request channel could be full and only that task drains it. It was full at the
/// first ConnAck of a city of 19,000 (its configs queued ahead), and a subscription that
/// failed to queue left the daemon blind to presence; this task waits for room instead.
fn subscribe_all(client: AsyncClient, filters: Vec<String>) {
    tokio::spawn(async move {
        for f in filters {
            if let Err(e) = client.subscribe(f.clone(), QoS::AtLeastOnce).await {
                warn!(filter = %f, error = %e, "could not queue subscription");
            }
        }
    });
}

/// Publishes a play (QoS 1, not retained) with the MQTT 5 message expiry interval, so that
/// brokers drop it once it expires.
pub async fn publish_play(
    client: &AsyncClient,
    topic: String,
    payload: Vec<u8>,
    expiry_s: u32,
) -> Result<(), rumqttc::v5::ClientError> {
    let props = PublishProperties {
        message_expiry_interval: Some(expiry_s.max(1)),
        ..Default::default()
    };
    client
        .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, props)
        .await
}

/// Publishes a retained message (display configs).
pub async fn publish_retained(
    client: &AsyncClient,
    topic: String,
    payload: Vec<u8>,
) -> Result<(), rumqttc::v5::ClientError> {
    client.publish(topic, QoS::AtLeastOnce, true, payload).await
}
