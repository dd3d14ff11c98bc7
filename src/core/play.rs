//! Building a play command from a rotation pick: which text each class gets, how long it
//! stays on screen, when it expires, and the MQTT 5 expiry interval that goes with it.
//!
//! Owns: the shape of a feed's plays (`FeedShape`) and the `PlayCommand` built from a pick.
//! Must not touch: ids and keys handed out by the store, publishing, the clock (the caller
//! passes `issued` and the `play_id`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::core::model::{AdSet, Catalog, Feed, Slogan};
use crate::core::rotation::{self, Candidate};
use crate::core::wire::PlayCommand;

/// On-screen time of a class whose profile says nothing, and of a feed with no members.
const DEFAULT_DURATION_S: u32 = 15;

/// What a feed's plays carry for its members' classes.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedShape {
    /// The classes of the feed's members, in name order.
    pub classes: BTreeSet<String>,
    /// The longest on-screen time among those classes, whole seconds, at least 1.
    pub duration_s: u32,
    /// How many displays the feed reaches.
    pub members: i64,
}

impl FeedShape {
    /// The shape of `f` over the catalog's displays and class profiles.
    pub fn of(c: &Catalog, f: &Feed) -> FeedShape {
        let mut classes = BTreeSet::new();
        let mut members = 0;
        for d in c.members(f) {
            classes.insert(d.class.to_string());
            members += 1;
        }
        let duration_s = classes
            .iter()
            .filter_map(|k| c.classes.get(k))
            .map(|p| p.duration.as_secs_f64().ceil() as u32)
            .max()
            .unwrap_or(DEFAULT_DURATION_S)
            .max(1);
        FeedShape {
            classes,
            duration_s,
            members,
        }
    }

    /// The text of the command and the per-class texts beside it. A feed of one class gets
    /// that class's own text directly, so its displays need not look anything up; a mixed
    /// feed carries the general text plus each member class's shorter one.
    pub fn texts(&self, slogan: &Slogan) -> (String, BTreeMap<String, String>) {
        let mut only = self.classes.iter();
        match (only.next(), only.next()) {
            (Some(class), None) => (slogan.text_for(class).to_owned(), BTreeMap::new()),
            _ => {
                let by_class = self
                    .classes
                    .iter()
                    .filter_map(|c| Some((c.clone(), slogan.text_by_class.get(c)?.clone())))
                    .collect();
                (slogan.text.clone(), by_class)
            }
        }
    }
}

/// The ad set revision and slogan a candidate names, if the catalog still has them.
pub fn resolve<'a>(adsets: &'a [AdSet], cand: &Candidate) -> Option<(&'a AdSet, &'a Slogan)> {
    let adset = adsets
        .iter()
        .find(|a| a.id == cand.adset && a.rev == cand.rev)?;
    let slogan = adset.slogans.iter().find(|s| s.id == cand.slogan)?;
    Some((adset, slogan))
}

/// When a play is issued and how long it lives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub issued: DateTime<Utc>,
    pub expires: DateTime<Utc>,
}

impl Timing {
    /// A play on `feed` issued at `issued`: valid for `ttl`, or one interval without it.
    pub fn for_feed(feed: &Feed, issued: DateTime<Utc>, ttl: Option<Duration>) -> Timing {
        Timing {
            issued,
            expires: rotation::expires_at(issued, feed.interval, ttl),
        }
    }

    /// The MQTT 5 message expiry interval: whole seconds left, at least 1.
    pub fn expiry_interval_s(&self) -> u32 {
        (self.expires - self.issued)
            .num_seconds()
            .clamp(1, i64::from(u32::MAX)) as u32
    }
}

/// The command a feed publishes for one pick.
pub fn feed_play(
    play_id: String,
    feed: &Feed,
    shape: &FeedShape,
    (adset, slogan): (&AdSet, &Slogan),
    timing: Timing,
    tz: Tz,
) -> PlayCommand {
    let (text, text_by_class) = shape.texts(slogan);
    PlayCommand {
        v: 1,
        play_id,
        feed: Some(feed.id.to_string()),
        adset: adset.id.to_string(),
        rev: adset.rev,
        slogan: slogan.id.to_string(),
        text,
        text_by_class,
        duration_s: shape.duration_s,
        priority: adset.priority,
        issued_at: timing.issued.with_timezone(&tz).fixed_offset(),
        expires_at: timing.expires.with_timezone(&tz).fixed_offset(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Attrs, Charset, ClassProfile, Device, Id, Selector};
    use chrono::TimeZone;

    fn id(s: &str) -> Id {
        Id::parse(s).expect("id")
    }

    fn slogan() -> Slogan {
        Slogan {
            id: id("jiang-wenming"),
            text: "讲文明 树新风".into(),
            weight: 1,
            text_by_class: [("taxi_top".to_string(), "讲文明".to_string())].into(),
        }
    }

    fn shape(classes: &[&str]) -> FeedShape {
        FeedShape {
            classes: classes.iter().map(|c| c.to_string()).collect(),
            duration_s: 15,
            members: classes.len() as i64,
        }
    }

    #[test]
    fn a_one_class_feed_carries_that_class_text_alone() {
        let (text, by) = shape(&["taxi_top"]).texts(&slogan());
        assert_eq!(text, "讲文明");
        assert!(by.is_empty());
        let (text, by) = shape(&["bus_led"]).texts(&slogan());
        assert_eq!(text, "讲文明 树新风");
        assert!(by.is_empty());
    }

    #[test]
    fn a_mixed_feed_carries_the_general_text_and_each_shorter_one() {
        let (text, by) = shape(&["bus_led", "taxi_top"]).texts(&slogan());
        assert_eq!(text, "讲文明 树新风");
        assert_eq!(by.len(), 1);
        assert_eq!(by.get("taxi_top").map(String::as_str), Some("讲文明"));
    }

    fn catalog() -> Catalog {
        let profile = |name: &str, secs: f64| ClassProfile {
            name: name.into(),
            max_chars: 40,
            charset: Charset::Utf8,
            duration: Duration::from_secs_f64(secs),
            width_px: 192,
            scroll_px_per_s: 32,
        };
        let device = |d: &str, k: &str| Device {
            id: id(d),
            class: k.into(),
            attrs: Attrs::default(),
        };
        Catalog {
            timezone: chrono_tz::Asia::Shanghai,
            classes: [
                ("bus_led".to_string(), profile("bus_led", 15.0)),
                ("taxi_top".to_string(), profile("taxi_top", 7.5)),
            ]
            .into(),
            devices: vec![
                device("b1", "bus_led"),
                device("t1", "taxi_top"),
                device("t2", "taxi_top"),
            ]
            .into(),
            feeds: vec![],
            adsets: vec![],
        }
    }

    fn class(k: &str) -> Selector {
        Selector {
            terms: [("class".to_string(), vec![k.to_string()])].into(),
        }
    }

    fn feed(select: Selector) -> Feed {
        Feed {
            id: id("f"),
            select,
            interval: Duration::from_secs(180),
            daypart: None,
        }
    }

    #[test]
    fn shape_takes_the_longest_duration_among_member_classes_rounded_up() {
        let c = catalog();
        let taxis = FeedShape::of(&c, &feed(class("taxi_top")));
        assert_eq!((taxis.duration_s, taxis.members), (8, 2));
        let all = FeedShape::of(&c, &feed(Selector::default()));
        assert_eq!((all.duration_s, all.members), (15, 3));
        let none = FeedShape::of(&c, &feed(class("stop_screen")));
        assert_eq!((none.duration_s, none.members), (15, 0));
    }

    #[test]
    fn a_play_expires_after_its_ttl_or_one_interval() {
        let f = feed(Selector::default());
        let t0 = Utc
            .with_ymd_and_hms(2026, 12, 1, 12, 0, 0)
            .single()
            .expect("t0");
        let one = Timing::for_feed(&f, t0, None);
        assert_eq!((one.expires - t0).num_seconds(), 180);
        assert_eq!(one.expiry_interval_s(), 180);
        let short = Timing::for_feed(&f, t0, Some(Duration::from_millis(300)));
        assert_eq!(
            short.expiry_interval_s(),
            1,
            "never zero: zero means no expiry"
        );
    }

    #[test]
    fn the_command_names_the_pick_in_the_deployments_zone() {
        let f = feed(Selector::default());
        let t0 = Utc
            .with_ymd_and_hms(2026, 12, 1, 12, 0, 0)
            .single()
            .expect("t0");
        let a = AdSet {
            id: id("wenming"),
            title: String::new(),
            rev: 3,
            valid_from: t0,
            valid_until: t0,
            feeds: None,
            priority: 2,
            slogans: vec![slogan()],
        };
        let timing = Timing::for_feed(&f, t0, None);
        let cmd = feed_play(
            "p1".into(),
            &f,
            &shape(&["bus_led"]),
            (&a, &a.slogans[0]),
            timing,
            chrono_tz::Asia::Shanghai,
        );
        assert_eq!(cmd.feed.as_deref(), Some("f"));
        assert_eq!(
            (cmd.adset.as_str(), cmd.rev, cmd.priority),
            ("wenming", 3, 2)
        );
        assert_eq!(cmd.issued_at.to_rfc3339(), "2026-12-01T20:00:00+08:00");
        assert_eq!(cmd.expires_at.to_rfc3339(), "2026-12-01T20:03:00+08:00");
        let cand = Candidate {
            adset: id("wenming"),
            rev: 3,
            slogan: id("jiang-wenming"),
            weight: 1,
        };
        assert!(resolve(std::slice::from_ref(&a), &cand).is_some());
        let gone = Candidate { rev: 2, ..cand };
        assert!(resolve(std::slice::from_ref(&a), &gone).is_none());
    }
}
