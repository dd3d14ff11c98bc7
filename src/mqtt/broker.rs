//! The embedded MQTT broker for the default, nothing-to-install mode: rmqtt, in this process.
//!
//! rmqtt serves MQTT 3.1.1 and 5 on one port, forwards MQTT 5 properties (message expiry) to
//! subscribers of either version, and processes last wills of thousands of clients leaving at
//! once. It was chosen over rumqttd by measurement (BENCHMARKS.md, "storm").
//!
//! Receipts are not acknowledged before they are stored. rmqtt awaits its publish ACL hook
//! before it sends a display's PUBACK, so the hook here hands each receipt to the ingest
//! worker and waits for the batch holding it to commit. If the daemon cannot answer (it is
//! stopping, or its database did not answer in time) the hook refuses the publish and drops
//! the connection: no PUBACK, so the display sends the receipt again when it is back.
//! Receipts therefore never pass through the daemon's own MQTT session in this mode; presence
//! still does (a last will is published by the broker itself, without any hook).
//!
//! Owns: rmqtt's context, listeners, retained store and the receipt hook. Must not touch: the
//! store, the rotation, the daemon's own MQTT session (it connects like any client).

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use rmqtt::context::ServerContext;
use rmqtt::hook::{Handler, HookResult, Parameter, ReturnType, Type};
use rmqtt::net::{Builder, Listener};
use rmqtt::retain::{DefaultRetainStorage, RetainStorage};
use rmqtt::server::MqttServer;
use rmqtt::subscribe::SharedSubscription;
use rmqtt::types::{
    ClientId, Id, IsOnline, NodeId, PublishAclResult, Retain, SharedGroup, SubscriptionIdentifier,
    SubscriptionOptions, TopicFilter, TopicName,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::core::wire::{TopicKind, Topics};
use crate::mqtt::{Ack, Delivery};

/// How the embedded broker is sized.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Most display connections at once.
    pub max_connections: usize,
    /// Most QoS 1 messages in flight to one display.
    pub max_inflight: u16,
    /// Longest a display's receipt waits for its batch to commit before the display is
    /// disconnected unacknowledged (it sends the receipt again when it reconnects).
    pub receipt_wait: Duration,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            max_connections: 20_000,
            max_inflight: 64,
            receipt_wait: Duration::from_secs(20),
        }
    }
}

/// Where the receipt hook hands receipts: the ingest worker's queue and the topics to tell
/// receipts by. None: a plain broker (the benchmarks' raw baseline).
pub struct ReceiptHook {
    pub topics: Topics,
    pub ingest: mpsc::UnboundedSender<Delivery>,
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    /// Where displays connect (both protocol versions).
    pub addr: SocketAddr,
    /// A loopback listener for the daemon's own session, with queues sized for the whole
    /// fleet's presence (a display's listener keeps a display-sized queue).
    pub internal: SocketAddr,
}

/// Starts the broker on the address of `listener`, and an internal listener for the daemon.
///
/// rmqtt binds its listeners itself, so `listener` (bound early so that a taken port fails
/// the start, and so that port 0 resolves) is closed and its address bound again at once.
pub async fn start(
    listener: TcpListener,
    opts: BrokerOptions,
    hook: Option<ReceiptHook>,
    shutdown: CancellationToken,
) -> anyhow::Result<EmbeddedBroker> {
    let addr = listener.local_addr()?;
    drop(listener);
    let internal_l =
        std::net::TcpListener::bind("127.0.0.1:0").context("reserving a loopback port")?;
    let internal = internal_l.local_addr()?;
    drop(internal_l);

    let scx = ServerContext::new()
        // rmqtt refuses connections while the machine's load is high; a city reconnecting
        // after a power cut is exactly when they must be taken.
        .busy_check_enable(false)
        .mqtt_max_sessions(0)
        .build()
        .await;
    *scx.extends.retain_mut().await = Box::new(Retained::default());
    *scx.extends.shared_subscription_mut().await = Box::new(RoundRobin::default());
    if let Some(h) = hook {
        let register = scx.extends.hook_mgr().register();
        register
            .add(
                Type::MessagePublishCheckAcl,
                Box::new(ReceiptGate {
                    topics: h.topics,
                    ingest: h.ingest,
                    wait: opts.receipt_wait,
                }),
            )
            .await;
        register.start().await;
    }

    let displays = display_listener(addr, &opts)?;
    let daemon = daemon_listener(internal)?;
    let server = MqttServer::new(scx)
        .listener_by_id(displays, 1)
        .listener_by_id(daemon, 2)
        .build();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            r = server.run() => if let Err(e) = r {
                tracing::error!(error = %e, "embedded broker stopped");
            },
        }
    });
    info!(%addr, "embedded MQTT broker listening (MQTT 3.1.1 and 5)");
    Ok(EmbeddedBroker { addr, internal })
}

/// Where displays connect: sized for the whole city connecting at once.
fn display_listener(addr: SocketAddr, opts: &BrokerOptions) -> anyhow::Result<Listener> {
    Builder::new()
        .name("displays")
        .laddr(addr)
        .reuseaddr(Some(true))
        .nodelay(true)
        // The whole city connects at once after a power cut: take every handshake.
        .backlog(4096)
        .max_handshaking_limit(opts.max_connections.max(1))
        .max_connections(opts.max_connections.max(1))
        .max_inflight(NonZeroU16::new(opts.max_inflight.max(1)).unwrap_or(NonZeroU16::MIN))
        // A display's queue holds its plays while it is slow; a few hours of plays suffice.
        .max_mqueue_len(1_000)
        // The daemon rejects payloads over 16 KiB itself, counted by reason; the broker
        // only keeps out what is absurd.
        .max_packet_size(256 * 1024)
        .message_expiry_interval(Duration::from_secs(24 * 3600))
        .bind()
        .map_err(|e| anyhow::anyhow!("binding the MQTT listener {addr}: {e}"))?
        .tcp()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The daemon's own listener: its one session takes the whole fleet's presence.
fn daemon_listener(internal: SocketAddr) -> anyhow::Result<Listener> {
    Builder::new()
        .name("daemon")
        .laddr(internal)
        .nodelay(true)
        .max_inflight(NonZeroU16::MAX)
        // Every display's presence and last will can arrive while the daemon commits.
        .max_mqueue_len(10_000_000)
        .max_packet_size(1024 * 1024)
        .max_session_expiry_interval(Duration::from_secs(7 * 24 * 3600))
        .message_expiry_interval(Duration::from_secs(7 * 24 * 3600))
        .bind()
        .map_err(|e| anyhow::anyhow!("binding the daemon's MQTT listener {internal}: {e}"))?
        .tcp()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The publish ACL hook: lets everything through at once except a display's receipt, which
/// it lets through only once the ingest worker has stored (or rejected) it.
struct ReceiptGate {
    topics: Topics,
    ingest: mpsc::UnboundedSender<Delivery>,
    wait: Duration,
}

#[async_trait]
impl Handler for ReceiptGate {
    async fn hook(&self, param: &Parameter, acc: Option<HookResult>) -> ReturnType {
        let Parameter::MessagePublishCheckAcl(session, publish) = param else {
            return (true, acc);
        };
        if !matches!(
            self.topics.classify(&publish.topic),
            Some(TopicKind::Receipt(_))
        ) {
            return (true, acc);
        }
        let (tx, rx) = oneshot::channel();
        let delivery = Delivery {
            topic: Bytes::copy_from_slice(publish.topic.as_bytes()),
            payload: publish.payload.clone(),
            ack: Ack::Held(tx),
            arrived: Instant::now(),
        };
        let answered = match self.ingest.send(delivery) {
            Ok(()) => matches!(tokio::time::timeout(self.wait, rx).await, Ok(Ok(()))),
            Err(_) => false,
        };
        if answered {
            return (true, acc);
        }
        debug!(client = %session.id.client_id, topic = %publish.topic, "receipt not stored in time; disconnecting the display unacknowledged");
        let refused = PublishAclResult::rejected(true, Some("receipt not stored yet".into()));
        (false, Some(HookResult::PublishAclResult(refused)))
    }
}

/// Retained messages in memory (rmqtt's own tree; the broker keeps them only as long as
/// this process runs, and the daemon republishes every display's config at start).
#[derive(Default)]
struct Retained(DefaultRetainStorage);

#[async_trait]
impl RetainStorage for Retained {
    fn enable(&self) -> bool {
        true
    }

    async fn set(
        &self,
        topic: &TopicName,
        retain: Retain,
        expiry_interval: Option<Duration>,
    ) -> rmqtt::Result<()> {
        self.0
            .set_with_timeout(topic, retain, expiry_interval)
            .await
    }

    async fn get(&self, topic_filter: &TopicFilter) -> rmqtt::Result<Vec<(TopicName, Retain)>> {
        let found = self.0.get_message(topic_filter).await;
        if let Err(e) = &found {
            warn!(filter = %topic_filter, error = %e, "reading retained messages failed");
        }
        found
    }

    async fn count(&self) -> isize {
        self.0.count().await
    }

    async fn max(&self) -> isize {
        self.0.max().await
    }
}

/// Shared subscriptions (`$share/{group}/...`): each message to one online member of the
/// group, taking turns. rmqtt leaves the choice to a plugin; without one it would treat
/// `$share/...` as a plain topic filter that nothing matches.
#[derive(Default)]
struct RoundRobin(AtomicUsize);

type Members = [(
    NodeId,
    ClientId,
    SubscriptionOptions,
    Option<Vec<SubscriptionIdentifier>>,
    Option<IsOnline>,
)];

#[async_trait]
impl SharedSubscription for RoundRobin {
    fn is_supported(&self) -> bool {
        true
    }

    async fn choice(
        &self,
        scx: &ServerContext,
        _group: &SharedGroup,
        _publisher: &Id,
        _topic: &TopicName,
        members: &Members,
    ) -> Option<(usize, IsOnline)> {
        if members.is_empty() {
            return None;
        }
        let start = self.0.fetch_add(1, Ordering::Relaxed);
        for k in 0..members.len() {
            let i = (start + k) % members.len();
            let (node, client, _, _, online) = &members[i];
            let online = match online {
                Some(o) => *o,
                None => scx.extends.router().await.is_online(*node, client).await,
            };
            if online {
                return Some((i, true));
            }
        }
        // Nobody online: a member with a persistent session keeps it for its return.
        Some((start % members.len(), false))
    }
}
