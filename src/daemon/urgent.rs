//! Sending an approved urgent message: its plays recorded (so that receipts for it are
//! counted, like any play's), then its command published on the `cmd` topic of every
//! display it reaches, and the rotation of the feeds it reaches held until it expires.
//!
//! A target feed becomes one play (its `feed` key set, `members` its displays) sent to each
//! member's `cmd` topic: the contract's receipt check for a feed play (the display was a
//! member when it was issued) is exactly right for it, and one row serves a feed of any size.
//! A display named on its own becomes a direct play (its `device` key set). Either way the
//! command has no `feed` field, as direct commands have none.
//!
//! Owns: the order record, hold, publish. Must not touch: who may send (the API and
//! `core::urgent` decide), receipts, rotation choices.

use std::sync::Arc;

use anyhow::Context;
use rumqttc::v5::AsyncClient;
use tracing::{info, warn};

use crate::core::receipt::PlayRow;
use crate::core::urgent::{self, Reach, UrgentMessage, UrgentStatus, URGENT_ADSET, URGENT_REV};
use crate::core::wire::{PlayCommand, Topics};
use crate::daemon::{Clock, Shared};
use crate::mqtt;
use crate::store::{Db, NewPlay, Store, UrgentStore};

/// The daemon's means to send urgent messages; clones share the session.
#[derive(Clone)]
pub struct Urgent {
    pub store: Db,
    pub client: AsyncClient,
    pub topics: Topics,
    pub shared: Shared,
    pub clock: Arc<dyn Clock>,
}

/// What one send did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Displays the message was published to.
    pub displays: usize,
    /// Plays recorded (one a target feed, one a display named on its own).
    pub plays: usize,
}

/// One play to record: on a target feed (its key and name) or to one display (its key),
/// and the displays it goes to.
struct Part<'a> {
    feed: Option<(i64, &'a str)>,
    device: Option<i64>,
    devices: Vec<String>,
}

/// One recorded play and the displays its command goes to.
struct Outgoing {
    cmd: PlayCommand,
    devices: Vec<String>,
}

impl Urgent {
    /// Records, holds and publishes `msg` (approved) to the displays `reach` names.
    pub async fn send(&self, msg: &UrgentMessage, reach: &Reach) -> anyhow::Result<Sent> {
        let catalog = self.shared.current();
        let held: Vec<String> = urgent::held_feeds(&msg.targets, &catalog)
            .into_iter()
            .collect();
        // Held before anything is published, so that no slot in between overwrites it.
        self.shared.hold(&msg.id, held, msg.expires_ms);
        let outgoing = self.record(msg, reach, catalog.timezone).await?;
        let plays = outgoing.len();
        let mut displays = 0;
        for o in &outgoing {
            displays += self.publish(o).await;
        }
        info!(id = %msg.id, displays, plays, "urgent message published");
        Ok(Sent { displays, plays })
    }

    /// Records one play per target feed and per display named on its own, before any is
    /// published: a receipt can never name a play the daemon does not know.
    async fn record(
        &self,
        msg: &UrgentMessage,
        reach: &Reach,
        tz: chrono_tz::Tz,
    ) -> anyhow::Result<Vec<Outgoing>> {
        let now = self.clock.now();
        let inv = self.shared.inventory();
        let slogan = self
            .store
            .slogan_key(URGENT_ADSET, URGENT_REV, &msg.id)
            .await
            .context("recording the urgent message's slogan")?;
        let mut parts: Vec<Part<'_>> = Vec::new();
        for (feed, devices) in &reach.feeds {
            let key = inv
                .feed_key(feed)
                .with_context(|| format!("feed {feed} has no key yet"))?;
            parts.push(Part {
                feed: Some((key, feed.as_str())),
                device: None,
                devices: devices.clone(),
            });
        }
        for d in &reach.devices {
            let key = inv
                .key(d)
                .with_context(|| format!("display {d} has no key yet"))?;
            parts.push(Part {
                feed: None,
                device: Some(key),
                devices: vec![d.clone()],
            });
        }
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            let play_id = ulid::Ulid::new().to_string();
            let feed = part.feed.map(|(k, _)| k);
            let new = NewPlay {
                play_id: play_id.clone(),
                feed,
                device: part.device,
                slogan,
                issued_ms: now.timestamp_millis(),
                expires_ms: msg.expires_ms,
                members: part.devices.len() as i64,
            };
            let key = self
                .store
                .record_play(&new, None)
                .await
                .context("recording an urgent play")?;
            self.shared.remember_play(
                PlayRow {
                    key,
                    play_id: new.play_id,
                    feed,
                    device: part.device,
                    slogan,
                    issued_ms: new.issued_ms,
                    expires_ms: new.expires_ms,
                },
                new.issued_ms,
            );
            let cmd = urgent::command(msg, play_id, now, tz);
            if let Some((_, name)) = part.feed {
                // The feed's current play, as the inventory shows it, is the message.
                self.shared.published(name, cmd.clone());
            }
            out.push(Outgoing {
                cmd,
                devices: part.devices,
            });
        }
        Ok(out)
    }

    /// Publishes one play to each of its displays' `cmd` topics; how many were queued.
    async fn publish(&self, o: &Outgoing) -> usize {
        let Ok(payload) = serde_json::to_vec(&o.cmd) else {
            return 0;
        };
        let now = self.clock.now();
        let expiry = (o.cmd.expires_at.to_utc() - now)
            .num_seconds()
            .clamp(1, i64::from(u32::MAX)) as u32;
        let mut queued = 0;
        for d in &o.devices {
            let topic = self.topics.cmd(d);
            match mqtt::publish_play(&self.client, topic, payload.clone(), expiry).await {
                Ok(()) => queued += 1,
                Err(e) => {
                    warn!(device = %d, play_id = %o.cmd.play_id, error = %e, "could not queue an urgent play")
                }
            }
        }
        queued
    }

    /// Ends the hold of a cancelled message: the rotation resumes at its feeds' next slot.
    pub fn release(&self, id: &str) {
        self.shared.release(id);
    }

    /// Holds again, after a restart, the feeds of every message still published.
    pub async fn restore_holds(&self) -> anyhow::Result<usize> {
        let now_ms = self.clock.now().timestamp_millis();
        let catalog = self.shared.current();
        let live = self.store.urgent_messages(Some(now_ms)).await?;
        let mut n = 0;
        for m in live
            .iter()
            .filter(|m| m.status(now_ms) == UrgentStatus::Published)
        {
            let held = urgent::held_feeds(&m.targets, &catalog)
                .into_iter()
                .collect();
            self.shared.hold(&m.id, held, m.expires_ms);
            n += 1;
        }
        Ok(n)
    }
}
