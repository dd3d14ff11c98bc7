//! The embedded MQTT broker for the default, nothing-to-install mode.
//!
//! rumqttd serves one protocol version per listener, so displays speaking MQTT 3.1.1 and 5
//! would need two ports. The contract gives them one: a front listener of ours reads the
//! protocol level from each CONNECT packet without consuming it (`peek`) and splices the
//! connection to an internal rumqttd listener of that version. The front accepts as fast as
//! tokio can (rumqttd's own listener pauses after every accept), and several internal
//! listeners per version spread a connect storm over threads.
//!
//! Owns: the rumqttd router and listeners, the front listener. Must not touch: the store,
//! the rotation, the daemon's own MQTT session (it connects like any client).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How the embedded broker is sized.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Most connections at once (rumqttd preallocates its tables for this many).
    pub max_connections: usize,
    /// Internal listeners per protocol version.
    pub listeners_per_version: usize,
    /// Most QoS 1 messages in flight per connection.
    pub max_inflight: usize,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            max_connections: 20_000,
            listeners_per_version: 2,
            max_inflight: 1_000,
        }
    }
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    /// Where displays connect (both protocol versions).
    pub addr: SocketAddr,
    /// An internal MQTT 5 listener that bypasses the front, for the daemon's own session.
    pub internal_v5: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = StdListener::bind("127.0.0.1:0").context("reserving a loopback port")?;
    Ok(l.local_addr()?)
}

fn server(name: String, listen: SocketAddr, inflight: usize) -> ServerSettings {
    ServerSettings {
        name,
        listen,
        tls: None,
        // rumqttd sleeps this long after each accept; the front already paces nothing.
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 30_000,
            // The daemon rejects payloads over 16 KiB itself, counted by reason; the broker
            // only keeps out what is absurd.
            max_payload_size: 256 * 1024,
            max_inflight_count: inflight,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    }
}

/// Starts rumqttd on internal loopback ports and the front listener on `listener`.
pub async fn start(
    listener: TcpListener,
    opts: BrokerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<EmbeddedBroker> {
    let n = opts.listeners_per_version.max(1);
    let mut v4 = HashMap::new();
    let mut v5 = HashMap::new();
    let mut v4_addrs = Vec::new();
    let mut v5_addrs = Vec::new();
    for i in 0..n {
        let a = free_port()?;
        v4.insert(
            format!("{i}"),
            server(format!("v4-{i}"), a, opts.max_inflight),
        );
        v4_addrs.push(a);
        let b = free_port()?;
        v5.insert(
            format!("{i}"),
            server(format!("v5-{i}"), b, opts.max_inflight),
        );
        v5_addrs.push(b);
    }
    // One more MQTT 5 listener for the daemon alone: its receipts subscription takes far
    // more in flight than a display needs.
    let internal = free_port()?;
    v5.insert(
        "daemon".into(),
        server("v5-daemon".into(), internal, 65_535),
    );
    let config = Config {
        id: 0,
        router: RouterConfig {
            // rumqttd's default is 0, which refuses everyone.
            max_connections: opts.max_connections,
            max_outgoing_packet_count: 200,
            // The router keeps each filter's messages in a segmented log; a slow reader
            // (the daemon during a long commit) must not fall off its end.
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(v4),
        v5: Some(v5),
        ..Default::default()
    };
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .context("starting the embedded broker thread")?;
    for a in v4_addrs.iter().chain(&v5_addrs).chain([&internal]) {
        wait_listening(*a).await?;
    }
    let addr = listener.local_addr()?;
    let connections = Arc::new(AtomicUsize::new(0));
    tokio::spawn(front(
        listener,
        v4_addrs,
        v5_addrs,
        connections.clone(),
        shutdown,
    ));
    info!(%addr, "embedded MQTT broker listening (MQTT 3.1.1 and 5)");
    Ok(EmbeddedBroker {
        addr,
        internal_v5: internal,
        connections,
    })
}

async fn wait_listening(a: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..200 {
        if TcpStream::connect(a).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the embedded broker did not start listening on {a}")
}

async fn front(
    listener: TcpListener,
    v4: Vec<SocketAddr>,
    v5: Vec<SocketAddr>,
    live: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) {
    let v4 = Arc::new(v4);
    let v5 = Arc::new(v5);
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                warn!(error = %e, "accepting an MQTT connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (v4, v5, next, live) = (v4.clone(), v5.clone(), next.clone(), live.clone());
        tokio::spawn(async move {
            live.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = splice(stream, &v4, &v5, &next).await {
                debug!(%peer, error = %e, "MQTT connection ended");
            }
            live.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Reads the protocol level of the CONNECT packet at the head of the stream, unconsumed.
async fn protocol_level(stream: &TcpStream) -> anyhow::Result<u8> {
    let mut buf = [0u8; 16];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .context("no CONNECT within 30 s")??;
        if n == 0 {
            anyhow::bail!("closed before CONNECT");
        }
        if buf[0] != 0x10 {
            anyhow::bail!("first packet is not CONNECT");
        }
        // Fixed header: 1 byte type, 1 to 4 bytes remaining length; then the protocol name
        // (2 byte length + "MQTT") and the level byte.
        let mut i = 1;
        while i < n && i < 5 && buf[i] & 0x80 != 0 {
            i += 1;
        }
        // "MQTT" for 3.1.1 and 5, "MQIsdp" for 3.1.
        if n < i + 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let name_len = u16::from_be_bytes([buf[i + 1], buf[i + 2]]) as usize;
        let level_at = i + 1 + 2 + name_len;
        if level_at >= buf.len() {
            anyhow::bail!("CONNECT protocol name too long");
        }
        if n > level_at {
            return Ok(buf[level_at]);
        }
        if n == buf.len() {
            anyhow::bail!("CONNECT header too long");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn splice(
    mut stream: TcpStream,
    v4: &[SocketAddr],
    v5: &[SocketAddr],
    next: &AtomicUsize,
) -> anyhow::Result<()> {
    let level = protocol_level(&stream).await?;
    let pool = match level {
        5 => v5,
        3 | 4 => v4,
        other => {
            let _ = stream.shutdown().await;
            anyhow::bail!("unsupported MQTT protocol level {other}");
        }
    };
    let target = pool[next.fetch_add(1, Ordering::Relaxed) % pool.len()];
    let _ = stream.set_nodelay(true);
    let mut inner = TcpStream::connect(target).await?;
    let _ = inner.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut stream, &mut inner).await?;
    Ok(())
}
