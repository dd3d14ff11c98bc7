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
//! [`Urgent::submit`], [`Urgent::approve`] and [`Urgent::cancel`] are the whole of a user's
//! action (checked, stored, sent), for the HTTP API and the console alike.
//!
//! Owns: the order check, store, record, hold, publish. Must not touch: the rules
//! themselves (`core::urgent` decides what is valid and who may approve), receipts,
//! rotation choices, HTTP.

use std::sync::Arc;

use anyhow::Context;
use rumqttc::v5::AsyncClient;
use tracing::{info, warn};

use crate::core::approval::Approver;
use crate::core::receipt::PlayRow;
use crate::core::urgent::{
    self, FieldProblem, Reach, Targets, UrgentMessage, UrgentRefusal, UrgentStatus, URGENT_ADSET,
    URGENT_REV,
};
use crate::core::wire::{PlayCommand, Topics};
use crate::daemon::{Clock, Shared};
use crate::mqtt;
use crate::store::{Db, NewPlay, Role, Store, StoreError, TokenRow, UrgentStore, UrgentStoreError};

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

/// Why a user's action on an urgent message did not happen (or, for `NotSent`, only half).
#[derive(Debug, thiserror::Error)]
pub enum UrgentError {
    /// The message has problems, each naming its field; `stored` says whether it exists
    /// (a pending request checked again at its approval stays pending).
    #[error("the urgent message has {} problems", problems.len())]
    Invalid {
        problems: Vec<FieldProblem>,
        stored: bool,
    },
    #[error(transparent)]
    Refused(#[from] UrgentRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The caller's role may not send, approve or cancel (only operators and admins may).
    #[error("urgent messages are sent, approved and cancelled by operators and admins (the token has {0})")]
    Forbidden(&'static str),
    /// Approved and stored, but the plays could not be recorded or published.
    #[error("urgent message {id} is approved but could not be sent: {cause:#}")]
    NotSent { id: String, cause: anyhow::Error },
}

impl From<UrgentStoreError> for UrgentError {
    fn from(e: UrgentStoreError) -> Self {
        match e {
            UrgentStoreError::Refused(r) => UrgentError::Refused(r),
            UrgentStoreError::Store(s) => UrgentError::Store(s),
        }
    }
}

/// A message as a user's action left it, with what was sent when it went out.
#[derive(Debug, Clone)]
pub struct Done {
    pub message: UrgentMessage,
    pub sent: Option<Sent>,
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

/// Only operators and admins act on urgent messages; every action checks it itself, so a
/// caller other than the API (the console) cannot skip it.
fn may_act(who: &TokenRow) -> Result<(), UrgentError> {
    match who.role {
        Role::Operator | Role::Admin => Ok(()),
        other => Err(UrgentError::Forbidden(other.as_str())),
    }
}

impl Urgent {
    /// A new message from `who`: checked against the displays as they are now, stored, and
    /// sent at once when `who` is an admin; an operator's waits for a second operator.
    pub async fn submit(
        &self,
        who: &TokenRow,
        text: String,
        targets: Targets,
        expires_ms: i64,
    ) -> Result<Done, UrgentError> {
        may_act(who)?;
        let now_ms = self.clock.now().timestamp_millis();
        let (text, targets, reach) = self.checked(text, targets, expires_ms, now_ms).await;
        let reach = reach.map_err(|problems| UrgentError::Invalid {
            problems,
            stored: false,
        })?;
        let admin = who.role == Role::Admin;
        let message = UrgentMessage {
            id: ulid::Ulid::new().to_string(),
            text,
            targets,
            expires_ms,
            requested_by: who.name.clone(),
            requested_token: Some(who.id),
            requested_ms: now_ms,
            approved_by: admin.then(|| who.name.clone()),
            approved_token: admin.then_some(who.id),
            approved_ms: admin.then_some(now_ms),
            cancelled_by: None,
            cancelled_ms: None,
        };
        self.store.add_urgent(&message).await?;
        if !admin {
            info!(id = %message.id, by = %who.name, "urgent message requested; waiting for a second operator");
            return Ok(Done {
                message,
                sent: None,
            });
        }
        let sent = self.send_or_say(&message, &reach).await?;
        Ok(Done {
            message,
            sent: Some(sent),
        })
    }

    /// Approves a pending message (`core::urgent::approvable`: not its requester unless
    /// admin), checked again against the displays as they are now, and sends it.
    pub async fn approve(&self, id: &str, who: &TokenRow) -> Result<Done, UrgentError> {
        may_act(who)?;
        let now_ms = self.clock.now().timestamp_millis();
        let by = Approver {
            token: Some(who.id),
            name: &who.name,
            admin: who.role == Role::Admin,
        };
        let found = self.store.urgent(id).await?;
        urgent::approvable(id, found.as_ref(), &by, now_ms)?;
        let found = found.ok_or_else(|| UrgentRefusal::NotFound(id.to_owned()))?;
        let (_, _, reach) = self
            .checked(found.text, found.targets, found.expires_ms, now_ms)
            .await;
        let reach = reach.map_err(|problems| UrgentError::Invalid {
            problems,
            stored: true,
        })?;
        let message = self.store.approve_urgent(id, &by, now_ms).await?;
        let sent = self.send_or_say(&message, &reach).await?;
        Ok(Done {
            message,
            sent: Some(sent),
        })
    }

    /// Cancels a pending or published message; a published one stops holding the rotation,
    /// which replaces it on screen at its feeds' next slot.
    pub async fn cancel(&self, id: &str, who: &TokenRow) -> Result<UrgentMessage, UrgentError> {
        may_act(who)?;
        let now_ms = self.clock.now().timestamp_millis();
        let m = self.store.cancel_urgent(id, &who.name, now_ms).await?;
        self.shared.release(id);
        info!(id = %m.id, by = %who.name, "urgent message cancelled");
        Ok(m)
    }

    /// `core::urgent::check` off the async workers (it walks the inventory), handing the
    /// text and targets back.
    async fn checked(
        &self,
        text: String,
        targets: Targets,
        expires_ms: i64,
        now_ms: i64,
    ) -> (String, Targets, Result<Reach, Vec<FieldProblem>>) {
        let catalog = self.shared.current();
        let work = tokio::task::spawn_blocking(move || {
            let r = urgent::check(&text, &targets, expires_ms, &catalog, now_ms);
            (text, targets, r)
        });
        match work.await {
            Ok(done) => done,
            Err(e) => {
                warn!(error = %e, "the urgent message check failed");
                let p = FieldProblem {
                    field: "text".into(),
                    message: "could not be checked; try again".into(),
                };
                (String::new(), Targets::default(), Err(vec![p]))
            }
        }
    }

    async fn send_or_say(&self, m: &UrgentMessage, reach: &Reach) -> Result<Sent, UrgentError> {
        self.send(m, reach).await.map_err(|cause| {
            tracing::error!(id = %m.id, error = %cause, "an approved urgent message could not be sent");
            UrgentError::NotSent {
                id: m.id.clone(),
                cause,
            }
        })
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn token(role: Role) -> TokenRow {
        TokenRow {
            id: 1,
            name: "x".into(),
            role,
            created_ms: 0,
            revoked_ms: None,
        }
    }

    #[test]
    fn only_operators_and_admins_act_on_urgent_messages() {
        assert!(may_act(&token(Role::Operator)).is_ok());
        assert!(may_act(&token(Role::Admin)).is_ok());
        assert!(matches!(
            may_act(&token(Role::Auditor)),
            Err(UrgentError::Forbidden("auditor"))
        ));
    }
}
