//! The rotation scheduler: wakes at each feed's next slot, asks the core which slogan plays
//! (`core::rotation`) and what the command says (`core::play`), records the play with the
//! feed's new cursor, then publishes it.
//!
//! A feed held by an urgent message (`Shared::held_until`) skips its slots until the message
//! expires or is cancelled.
//!
//! Owns: the slot timetable and each feed's cursor while running. Must not touch: receipts,
//! files, HTTP. A play is recorded before it is published, so a receipt can never arrive
//! for a play the daemon does not know.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rumqttc::v5::AsyncClient;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::core::model::{Catalog, Feed};
use crate::core::play::{self, FeedShape, Timing};
use crate::core::receipt::PlayRow;
use crate::core::rotation::{self, Cursor};
use crate::core::wire::Topics;
use crate::daemon::{Clock, Shared};
use crate::mqtt;
use crate::store::{Db, NewPlay, Store};

/// Publishes plays on every feed at its slots until shutdown.
pub struct Scheduler {
    pub store: Db,
    pub client: AsyncClient,
    pub topics: Topics,
    pub shared: Shared,
    pub clock: Arc<dyn Clock>,
    /// How long a play stays valid; None: one feed interval.
    pub play_ttl: Option<Duration>,
    pub shutdown: CancellationToken,
}

/// A play whose recording failed. Its transaction may still have committed (the database
/// went away between the commit and its answer), so the feed's next slot asks the store
/// before it picks: picking from the old cursor after a commit that landed would store the
/// same pick twice.
struct Unsure {
    new: NewPlay,
    cursor: Cursor,
    cmd: crate::core::wire::PlayCommand,
    timing: Timing,
}

/// What the store says of an [`Unsure`] play (when it cannot say yet, the slot is skipped
/// and the play stays unsure).
enum Settled {
    /// It was stored and is still live: it takes this slot.
    Taken,
    /// It was not stored, or was stored and has expired unsent: this slot picks as usual.
    Free,
}

/// The feeds' timetable for one catalog: rebuilt whenever the catalog changes.
struct Timetable {
    catalog: Arc<Catalog>,
    shapes: Vec<FeedShape>,
    /// (next slot, feed index), earliest first.
    due: BinaryHeap<Reverse<(DateTime<Utc>, usize)>>,
}

impl Timetable {
    /// Every feed's next slot from `now`.
    fn reschedule(&mut self, now: DateTime<Utc>) {
        self.due = self
            .catalog
            .feeds
            .iter()
            .enumerate()
            .map(|(i, f)| Reverse((rotation::next_slot(&f.id, f.interval, now), i)))
            .collect();
    }
}

impl Scheduler {
    pub async fn run(self) {
        let mut cursors: HashMap<String, Cursor> = HashMap::new();
        let mut slogan_keys: HashMap<(String, i64, String), i64> = HashMap::new();
        let mut unsure: HashMap<String, Unsure> = HashMap::new();
        let mut plan = self.timetable(&mut cursors).await;
        let mut last_now = self.clock.now();
        loop {
            let Some(&Reverse((due, i))) = plan.due.peek() else {
                tokio::select! {
                    _ = self.shutdown.cancelled() => break,
                    _ = self.shared.reloaded() => {
                        plan = self.timetable(&mut cursors).await;
                        continue;
                    }
                }
            };
            let now = self.clock.now();
            if now < last_now - chrono::TimeDelta::seconds(1) {
                // The clock went back: every slot ahead is now as far away as the jump, and
                // waiting for them would silence the feeds that long. The grids from now on
                // keep each feed's phase.
                warn!(
                    by_ms = (last_now - now).num_milliseconds(),
                    "the clock went back; rescheduling every feed from now"
                );
                plan.reschedule(now);
                last_now = now;
                continue;
            }
            last_now = now;
            let wait = (due - now).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.shared.reloaded() => {
                    plan = self.timetable(&mut cursors).await;
                    continue;
                }
                _ = tokio::time::sleep(wait) => {}
            }
            plan.due.pop();
            let feed = &plan.catalog.feeds[i];
            let now = self.clock.now();
            let next = rotation::next_slot(&feed.id, feed.interval, due.max(now));
            plan.due.push(Reverse((next, i)));
            if plan.shapes[i].members == 0 {
                continue;
            }
            if let Some(until) = self
                .shared
                .held_until(feed.id.as_str(), now.timestamp_millis())
            {
                // An urgent message is on these displays until it expires; a rotation play
                // would replace it. The cursor stays, so the rotation resumes where it was.
                debug!(feed = %feed.id, until_ms = until, "rotation held by an urgent message");
                continue;
            }
            let Some(cursor) = cursors.get_mut(feed.id.as_str()) else {
                continue;
            };
            self.slot(&plan, i, now, cursor, &mut unsure, &mut slogan_keys)
                .await;
        }
        info!("scheduler stopped");
    }

    /// New files or ad sets: each feed's grid is fixed by its id and interval, so building
    /// from now keeps every feed's phase; cursors carry over by feed id.
    async fn timetable(&self, cursors: &mut HashMap<String, Cursor>) -> Timetable {
        let catalog = self.shared.current();
        let shapes = catalog
            .feeds
            .iter()
            .map(|f| FeedShape::of(&catalog, f))
            .collect();
        let now = self.clock.now();
        let mut due = BinaryHeap::new();
        for (i, f) in catalog.feeds.iter().enumerate() {
            if !cursors.contains_key(f.id.as_str()) {
                cursors.insert(f.id.to_string(), self.load_cursor(f).await);
            }
            due.push(Reverse((rotation::next_slot(&f.id, f.interval, now), i)));
        }
        Timetable {
            catalog,
            shapes,
            due,
        }
    }

    async fn load_cursor(&self, f: &Feed) -> Cursor {
        match self.store.feed_state(f.id.as_str()).await {
            Ok(Some(state)) => serde_json::from_str(&state.cursor_json).unwrap_or_else(|e| {
                warn!(feed = %f.id, error = %e, "stored rotation cursor unreadable; starting afresh");
                Cursor::default()
            }),
            Ok(None) => Cursor::default(),
            Err(e) => {
                warn!(feed = %f.id, error = %e, "could not read rotation cursor; starting afresh");
                Cursor::default()
            }
        }
    }

    /// Feed `i`'s slot at `now`: an unsure play of the feed is settled first (and may take
    /// the slot), then the rotation picks.
    async fn slot(
        &self,
        plan: &Timetable,
        i: usize,
        now: DateTime<Utc>,
        cursor: &mut Cursor,
        unsure: &mut HashMap<String, Unsure>,
        slogan_keys: &mut HashMap<(String, i64, String), i64>,
    ) {
        let feed = &plan.catalog.feeds[i];
        if let Some(u) = unsure.remove(feed.id.as_str()) {
            match self.settle(feed, u, now, cursor, true).await {
                Ok(Settled::Taken) => return,
                Ok(Settled::Free) => {}
                Err(u) => {
                    unsure.insert(feed.id.to_string(), u);
                    return;
                }
            }
        }
        if let Some(u) = self.play_slot(plan, i, now, cursor, slogan_keys).await {
            // Often only the answer was lost and the store answers again at once: the play
            // then goes out in its own slot. Not found yet, it is asked again at the next
            // slot, as a commit on its way may still land.
            if let Err(u) = self.settle(feed, u, now, cursor, false).await {
                unsure.insert(feed.id.to_string(), u);
            }
        }
    }

    /// Whether an unsure play was stored after all. Stored: the cursor moves on as its
    /// transaction said, and the play goes out now if it is still live. Err: the store
    /// could not be asked, or (unless `last`) has not got it yet; the play stays unsure.
    async fn settle(
        &self,
        feed: &Feed,
        u: Unsure,
        now: DateTime<Utc>,
        cursor: &mut Cursor,
        last: bool,
    ) -> Result<Settled, Unsure> {
        let row = match self.store.play_by_id(&u.new.play_id).await {
            Ok(row) => row,
            Err(e) => {
                warn!(feed = %feed.id, play_id = %u.new.play_id, error = %e, "cannot yet tell whether a play was recorded; skipping this slot");
                return Err(u);
            }
        };
        let Some(row) = row else {
            if !last {
                return Err(u);
            }
            debug!(feed = %feed.id, play_id = %u.new.play_id, "the unrecorded play was not stored; its slot stays skipped");
            return Ok(Settled::Free);
        };
        *cursor = u.cursor;
        self.shared.remember_play(row, now.timestamp_millis());
        if u.timing.expires <= now {
            warn!(feed = %feed.id, play_id = %u.new.play_id, "a play recorded as the database failed expired before it could be sent");
            return Ok(Settled::Free);
        }
        info!(feed = %feed.id, play_id = %u.new.play_id, "a play recorded as the database failed goes out late");
        let left = Timing {
            issued: now,
            expires: u.timing.expires,
        };
        self.publish(feed, u.cmd, left).await;
        Ok(Settled::Taken)
    }

    /// One slot of feed `i`: pick, record with the advanced cursor, publish. A slot that
    /// cannot be recorded is skipped and the cursor stays where it was; the play is
    /// returned, as it may have been stored all the same.
    async fn play_slot(
        &self,
        plan: &Timetable,
        i: usize,
        now: DateTime<Utc>,
        cursor: &mut Cursor,
        slogan_keys: &mut HashMap<(String, i64, String), i64>,
    ) -> Option<Unsure> {
        let (catalog, feed, shape) = (&plan.catalog, &plan.catalog.feeds[i], &plan.shapes[i]);
        let candidates = rotation::eligible(feed, &catalog.adsets, now, catalog.timezone);
        let mut next_cursor = cursor.clone();
        let Some(pick) = next_cursor.pick(&candidates) else {
            debug!(feed = %feed.id, "nothing eligible to play");
            return None;
        };
        let chosen = play::resolve(&catalog.adsets, &candidates[pick])?;
        let slogan_key = self
            .slogan_key(feed, &candidates[pick], slogan_keys)
            .await?;
        let timing = Timing::for_feed(feed, now, self.play_ttl);
        let play_id = ulid::Ulid::new().to_string();
        let cmd = play::feed_play(
            play_id.clone(),
            feed,
            shape,
            chosen,
            timing,
            catalog.timezone,
        );
        let new = NewPlay {
            play_id: play_id.clone(),
            feed: self.shared.inventory().feed_key(feed.id.as_str()),
            device: None,
            slogan: slogan_key,
            issued_ms: timing.issued.timestamp_millis(),
            expires_ms: timing.expires.timestamp_millis(),
            members: shape.members,
        };
        let Some(key) = self.record(feed, &new, &next_cursor).await else {
            return Some(Unsure {
                new,
                cursor: next_cursor,
                cmd,
                timing,
            });
        };
        *cursor = next_cursor;
        self.shared.remember_play(
            PlayRow {
                key,
                play_id: new.play_id,
                feed: new.feed,
                device: None,
                slogan: slogan_key,
                issued_ms: new.issued_ms,
                expires_ms: new.expires_ms,
            },
            now.timestamp_millis(),
        );
        self.publish(feed, cmd, timing).await;
        None
    }

    /// The store key of the picked slogan revision, cached; None (slot skipped) on failure.
    async fn slogan_key(
        &self,
        feed: &Feed,
        cand: &rotation::Candidate,
        cache: &mut HashMap<(String, i64, String), i64>,
    ) -> Option<i64> {
        let key = (cand.adset.to_string(), cand.rev, cand.slogan.to_string());
        if let Some(k) = cache.get(&key) {
            return Some(*k);
        }
        match self.store.slogan_key(&key.0, key.1, &key.2).await {
            Ok(k) => {
                cache.insert(key, k);
                Some(k)
            }
            Err(e) => {
                warn!(feed = %feed.id, error = %e, "could not record slogan; skipping this slot");
                None
            }
        }
    }

    /// Stores the play and the feed's advanced cursor in one transaction.
    async fn record(&self, feed: &Feed, new: &NewPlay, cursor: &Cursor) -> Option<i64> {
        let cursor_json = serde_json::to_string(cursor).unwrap_or_default();
        let write = self
            .store
            .record_play(new, Some((feed.id.as_str(), &cursor_json)));
        match self.shared.metrics().write(write).await {
            Ok(k) => Some(k),
            Err(e) => {
                warn!(feed = %feed.id, error = %e, "could not record play; skipping this slot");
                None
            }
        }
    }

    async fn publish(&self, feed: &Feed, cmd: crate::core::wire::PlayCommand, timing: Timing) {
        let Ok(payload) = serde_json::to_vec(&cmd) else {
            return;
        };
        // Brokers drop a play that expires in a display's offline queue.
        let expiry = timing.expiry_interval_s();
        let topic = self.topics.feed(feed.id.as_str());
        match mqtt::publish_play(&self.client, topic, payload, expiry).await {
            Ok(()) => {
                self.shared.metrics().play(feed.id.as_str());
                debug!(feed = %feed.id, play_id = %cmd.play_id, slogan = %cmd.slogan, "play published");
                self.shared.published(feed.id.as_str(), cmd);
            }
            Err(e) => error!(feed = %feed.id, error = %e, "could not queue play"),
        }
    }
}
