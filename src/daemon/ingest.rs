//! The ingest worker: reads receipts and presence from the daemon's MQTT session, asks the
//! core whether each receipt counts (`core::receipt`), stores them in batches and
//! acknowledges each message only after its batch commits.
//!
//! Owns: the batch being gathered, the one being committed, and the acknowledgements they
//! owe. Must not touch: plays' publication, files, HTTP.
//!
//! Two batches are in play at once: one commits (in its own task) while the next gathers,
//! and the next is handed over the moment the commit ends, however large it has grown
//! (group commit). Brokers bound what they forward unacknowledged (Mosquitto: our receive
//! maximum), and the embedded broker holds each display's PUBACK until its batch commits, so
//! a worker that stopped reading while it committed would leave the fleet idle for the whole
//! commit. Batches commit one at a time and in order, and their acknowledgements follow in
//! order.
//!
//! Receipts arrive two ways, both acknowledged only after their batch commits: through the
//! daemon's MQTT session (an external broker), or straight from the embedded broker's publish
//! hook, which sends the display's PUBACK when it is answered.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::v5::AsyncClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::core::receipt::{self, PlayRow, ReceiptRow};
use crate::core::wire::{self, Reject, TopicKind, Topics};
use crate::daemon::{Clock, Shared};
use crate::mqtt::{Ack, Delivery};
use crate::store::{Batch, Db, PresenceEvent, Store};

/// Stores what displays send, in batches, until shutdown; then commits what it holds.
pub struct Ingest {
    pub store: Db,
    pub client: AsyncClient,
    pub inbound: mpsc::UnboundedReceiver<Delivery>,
    pub topics: Topics,
    pub shared: Shared,
    pub clock: Arc<dyn Clock>,
    /// Most messages in one transaction.
    pub batch_max: usize,
    /// With a wait, a batch is not handed over before its first message is this old.
    pub batch_wait: Duration,
    pub shutdown: CancellationToken,
}

/// The batch being gathered and what it owes.
#[derive(Default)]
struct Gathering {
    batch: Batch,
    /// Acknowledgements owed once `batch` commits.
    acks: Vec<Ack>,
    /// Messages taken into `batch`, acknowledged already or not.
    held: usize,
    /// When each receipt in `batch` (counted or rejected) arrived.
    arrivals: Vec<Instant>,
}

impl Ingest {
    pub async fn run(mut self) {
        let mut g = Gathering::default();
        let mut committing: Option<JoinHandle<()>> = None;
        let mut ready_at = tokio::time::Instant::now();
        let (mut stopping, mut closed) = (false, false);
        loop {
            let full = g.held >= self.batch_max;
            let due = stopping || closed || full || tokio::time::Instant::now() >= ready_at;
            if committing.is_none() && g.held > 0 && due {
                committing = Some(self.hand_over(&mut g));
                continue;
            }
            if (stopping || closed) && g.held == 0 {
                // Drain what the session already handed over; the broker keeps the rest.
                if let (false, Ok(m)) = (closed, self.inbound.try_recv()) {
                    self.take(m, &mut g).await;
                    continue;
                }
                match committing.take() {
                    Some(c) => {
                        joined(c.await);
                        continue;
                    }
                    None => break,
                }
            }
            let waiting = committing.is_none() && g.held > 0;
            tokio::select! {
                r = async {
                    match committing.as_mut() {
                        Some(c) => c.await,
                        None => std::future::pending().await,
                    }
                } => {
                    joined(r);
                    committing = None;
                }
                _ = tokio::time::sleep_until(ready_at), if waiting => {}
                _ = self.shutdown.cancelled(), if !stopping => stopping = true,
                m = self.inbound.recv(), if !full && !closed => match m {
                    Some(m) => {
                        if g.held == 0 {
                            ready_at = tokio::time::Instant::now() + self.batch_wait;
                        }
                        self.take(m, &mut g).await;
                    }
                    None => closed = true,
                },
            }
        }
        info!("ingest stopped");
    }

    /// Starts committing the gathered batch in its own task; `g` starts afresh.
    fn hand_over(&self, g: &mut Gathering) -> JoinHandle<()> {
        let mut g = std::mem::take(g);
        g.batch.utc_offset_h =
            crate::core::audit::fixed_offset_hours(self.shared.current().timezone);
        let (store, client, shared) =
            (self.store.clone(), self.client.clone(), self.shared.clone());
        tokio::spawn(async move {
            commit(&store, &shared, &g.batch, &g.arrivals).await;
            ack_all(&client, &mut g.acks).await;
        })
    }

    /// Takes one message into the batch.
    async fn take(&self, msg: Delivery, g: &mut Gathering) {
        let now_ms = self.clock.now().timestamp_millis();
        let topic = String::from_utf8_lossy(&msg.topic).into_owned();
        debug!(%topic, bytes = msg.payload.len(), "inbound");
        match self.topics.classify(&topic) {
            Some(TopicKind::Receipt(dev)) => {
                match self.receipt(dev, &msg.payload, now_ms).await {
                    Verdict::Counted(row, play_id) => {
                        g.batch.names.note(row.device, dev, row.play, &play_id);
                        g.batch.receipts.push(row);
                    }
                    Verdict::Rejected(r) => {
                        debug!(device = dev, reason = r.as_str(), "receipt rejected");
                        g.batch.rejects.push((r, now_ms.div_euclid(86_400_000)));
                    }
                    // Never acknowledged: the broker hands it to us again when we are back.
                    Verdict::Unanswered => return,
                }
                g.arrivals.push(msg.arrived);
            }
            Some(TopicKind::Status(dev)) => self.presence(dev, &msg.payload, now_ms, &mut g.batch),
            None => {}
        }
        g.acks.push(msg.ack);
        g.held += 1;
    }

    fn presence(&self, dev: &str, payload: &[u8], now_ms: i64, batch: &mut Batch) {
        let key = self.shared.inventory().key(dev);
        if let (Some(key), Some(pr)) = (key, wire::parse_presence(payload)) {
            if self.shared.set_online(key, pr.online) {
                batch.presence.push(PresenceEvent {
                    device: key,
                    online: pr.online,
                    at_ms: now_ms,
                });
            }
        }
    }

    /// Finds the play a receipt names (cache, then store) and lets the core decide.
    async fn receipt(&self, dev: &str, payload: &[u8], now_ms: i64) -> Verdict {
        let Some(device) = self.shared.inventory().key(dev) else {
            return Verdict::Rejected(Reject::UnknownDevice);
        };
        let r = match wire::parse_receipt(dev, payload) {
            Ok(r) => r,
            Err(reject) => return Verdict::Rejected(reject),
        };
        let play = match self.shared.cached_play(&r.play_id) {
            Some(p) => p,
            None => match self.look_up(&r.play_id).await {
                Lookup::Found(p) => p,
                Lookup::Unknown => return Verdict::Rejected(Reject::UnknownPlay),
                Lookup::Stopped => return Verdict::Unanswered,
            },
        };
        let member_at = |d, f, at| self.shared.member_at(d, f, at);
        let cx = receipt::Context {
            device,
            member_at: &member_at,
            now_ms,
            retention_ms: self.shared.retention_ms(),
        };
        match receipt::decide(&r, &play, &cx) {
            Ok(row) => Verdict::Counted(row, play.play_id),
            Err(reject) => Verdict::Rejected(reject),
        }
    }

    /// Reads a play that is not cached. A database failure is ours, not the display's: the
    /// lookup is retried (with backoff, while reading stops and the broker holds what
    /// follows) until the database answers or the daemon stops.
    async fn look_up(&self, play_id: &str) -> Lookup {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.store.play_by_id(play_id).await {
                Ok(Some(p)) => return Lookup::Found(p),
                Ok(None) => return Lookup::Unknown,
                Err(e) => {
                    warn!(error = %e, play_id, retry_in_ms = backoff.as_millis() as u64, "play lookup failed; the receipt waits, unacknowledged");
                    let m = self.shared.metrics();
                    m.database_ok.store(false, Ordering::Relaxed);
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Lookup::Stopped,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// What becomes of one receipt.
enum Verdict {
    /// Counted, with its play's id (the receipt log records it).
    Counted(ReceiptRow, String),
    Rejected(Reject),
    /// Neither: the daemon stopped before it could tell (its database did not answer).
    Unanswered,
}

enum Lookup {
    Found(PlayRow),
    Unknown,
    Stopped,
}

fn joined(r: Result<(), tokio::task::JoinError>) {
    if let Err(e) = r {
        error!(error = %e, "commit task failed; its receipts stay unacknowledged");
    }
}

async fn ack_all(client: &AsyncClient, acks: &mut Vec<Ack>) {
    for a in acks.drain(..) {
        a.send(client).await;
    }
}

/// Commits a batch, retrying until it is stored: nothing is acknowledged before that.
/// `arrivals` are its receipts' arrival times, for their latency.
async fn commit(store: &Db, shared: &Shared, batch: &Batch, arrivals: &[Instant]) {
    if batch.is_empty() {
        return;
    }
    let m = shared.metrics();
    let mut backoff = Duration::from_millis(100);
    loop {
        let t0 = Instant::now();
        match m.write(store.commit_batch(batch)).await {
            Ok(out) => {
                m.batches.fetch_add(1, Ordering::Relaxed);
                m.batch_rows
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                m.commit_micros
                    .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                m.receipts_stored
                    .fetch_add(out.stored as u64, Ordering::Relaxed);
                m.receipts_duplicate
                    .fetch_add(out.duplicates as u64, Ordering::Relaxed);
                for (r, _) in &batch.rejects {
                    m.reject(*r);
                }
                let committed = Instant::now();
                for a in arrivals {
                    m.receipt_latency
                        .observe(committed.saturating_duration_since(*a));
                }
                return;
            }
            Err(e) => {
                m.commit_failures.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, rows = batch.len(), retry_in_ms = backoff.as_millis() as u64, "batch commit failed; receipts stay unacknowledged");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
