//! Urgent messages (a typhoon warning, a road closure): one text published at once on chosen
//! feeds or displays, with its own expiry. This module decides what a request reaches,
//! whether its text fits every class it reaches (the same checks as a slogan's text, so what
//! `civicast check` accepts is what plays), who may approve it (four eyes), its status at a
//! given time, the play command it becomes, and which feeds' rotation it holds.
//!
//! Pure core: the store keeps the rows, the daemon publishes, the API asks these functions.
//! Must not touch the database, MQTT, HTTP or the clock: times come in as milliseconds.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::core::approval::Approver;
use crate::core::catalog::{check_text, control_char};
use crate::core::model::{Catalog, Device};
use crate::core::wire::PlayCommand;

/// The ad set an urgent message's plays are counted under in the audits (`adset=urgent`),
/// each message its own slogan (its id).
pub const URGENT_ADSET: &str = "urgent";
/// The revision of those slogans: uploaded and file ad sets number theirs from 1, so an ad
/// set that happens to be called `urgent` never shares a slogan key with a message.
pub const URGENT_REV: i64 = 0;
/// The priority an urgent play carries: above any ad set's (ad-set priorities are `i32`s
/// chosen by operators; this is the largest).
pub const URGENT_PRIORITY: i32 = i32::MAX;
/// The shortest life a message may have, from the moment it is sent or approved.
pub const MIN_LIFE_MS: i64 = 60_000;
/// The longest: past it the rotation would be held for days; a campaign goes in an ad set.
pub const MAX_LIFE_MS: i64 = 72 * 3_600_000;
/// Most feeds plus displays one message may name.
pub const MAX_TARGETS: usize = 10_000;

/// What a message is sent to: feeds (each of their displays) and single displays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    #[serde(default)]
    pub feeds: Vec<String>,
    #[serde(default)]
    pub devices: Vec<String>,
}

/// A stored urgent message: the request (never changed once written), its approval and its
/// cancellation (each written once).
#[derive(Debug, Clone, PartialEq)]
pub struct UrgentMessage {
    pub id: String,
    pub text: String,
    pub targets: Targets,
    pub expires_ms: i64,
    pub requested_by: String,
    /// The token that asked: the four-eyes rule compares tokens, not names.
    pub requested_token: Option<i64>,
    pub requested_ms: i64,
    /// Who approved it, and so published it (an admin's own message is approved by its
    /// sender at once).
    pub approved_by: Option<String>,
    pub approved_token: Option<i64>,
    pub approved_ms: Option<i64>,
    pub cancelled_by: Option<String>,
    pub cancelled_ms: Option<i64>,
}

/// Where a message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UrgentStatus {
    /// Waiting for a second operator (or an admin).
    Pending,
    /// Sent, and not yet expired: the rotation of the feeds it reaches is held.
    Published,
    /// Past its expiry (sent or not).
    Expired,
    /// Withdrawn: a pending one never goes out; a published one stops holding the rotation.
    Cancelled,
}

impl UrgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UrgentStatus::Pending => "pending",
            UrgentStatus::Published => "published",
            UrgentStatus::Expired => "expired",
            UrgentStatus::Cancelled => "cancelled",
        }
    }
}

impl UrgentMessage {
    /// Its status at `now_ms`. Derived from the rows' times rather than stored, so that
    /// expiry needs no writer to pass by: a cancellation wins, then expiry, then approval.
    pub fn status(&self, now_ms: i64) -> UrgentStatus {
        if self.cancelled_ms.is_some() {
            UrgentStatus::Cancelled
        } else if now_ms >= self.expires_ms {
            UrgentStatus::Expired
        } else if self.approved_ms.is_some() {
            UrgentStatus::Published
        } else {
            UrgentStatus::Pending
        }
    }
}

/// One thing wrong with a request, naming its field (`text`, `feeds[2]`, `expires_at`...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

fn problem(field: impl Into<String>, message: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.into(),
        message: message.into(),
    }
}

/// Who a checked message reaches, by display id: each target feed with its displays, then
/// the displays named on their own that no target feed already reaches. A display gets
/// the message once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reach {
    pub feeds: Vec<(String, Vec<String>)>,
    pub devices: Vec<String>,
}

impl Reach {
    /// How many displays the message goes to.
    pub fn displays(&self) -> usize {
        self.feeds.iter().map(|(_, d)| d.len()).sum::<usize>() + self.devices.len()
    }
}

/// Checks a message against the catalog at `now_ms`: a text a slogan could have, targets that
/// exist and reach a display, every class reached able to show the text, an expiry between
/// [`MIN_LIFE_MS`] and [`MAX_LIFE_MS`] from now. Every problem, or who it reaches. One pass
/// over the displays per target feed, one more when displays are named: a country's
/// inventory is a million rows.
pub fn check(
    text: &str,
    targets: &Targets,
    expires_ms: i64,
    catalog: &Catalog,
    now_ms: i64,
) -> Result<Reach, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    check_expiry(expires_ms, now_ms, &mut problems);
    let reach = resolve(targets, catalog, &mut problems);
    if text.trim().is_empty() {
        problems.push(problem("text", "empty text"));
    } else if let Some(m) = control_char(text) {
        problems.push(problem("text", m));
    } else if let Some((_, classes)) = &reach {
        check_classes(text, classes, catalog, &mut problems);
    }
    match reach {
        Some((r, _)) if problems.is_empty() => Ok(r),
        _ => Err(problems),
    }
}

fn check_expiry(expires_ms: i64, now_ms: i64, problems: &mut Vec<FieldProblem>) {
    let life = expires_ms.saturating_sub(now_ms);
    if life <= 0 {
        problems.push(problem(
            "expires_at",
            "in the past: a message needs a time ahead",
        ));
    } else if life < MIN_LIFE_MS {
        problems.push(problem(
            "expires_at",
            format!(
                "{} s from now: a message lives at least 1 minute",
                life / 1000
            ),
        ));
    } else if life > MAX_LIFE_MS {
        problems.push(problem(
            "expires_at",
            format!(
                "{} hours from now, more than the {} an urgent message may last (a campaign belongs in an ad set)",
                life / 3_600_000,
                MAX_LIFE_MS / 3_600_000
            ),
        ));
    }
}

/// Each class reached, with one display of it (and its feed) to name as where.
type ClassesReached = BTreeMap<String, String>;

/// The displays `targets` reach and the classes among them, or None when a target is
/// unknown, empty or repeated.
fn resolve(
    targets: &Targets,
    c: &Catalog,
    problems: &mut Vec<FieldProblem>,
) -> Option<(Reach, ClassesReached)> {
    let before = problems.len();
    let n = targets.feeds.len() + targets.devices.len();
    if n == 0 {
        problems.push(problem(
            "targets",
            "no feed and no display: name at least one in `feeds` or `devices`",
        ));
    } else if n > MAX_TARGETS {
        problems.push(problem(
            "targets",
            format!("{n} targets, more than the {MAX_TARGETS} one message may name: name a feed"),
        ));
        return None;
    }
    let mut reached: HashSet<&str> = HashSet::new();
    let mut classes = ClassesReached::new();
    let mut reach = Reach::default();
    let mut seen = BTreeSet::new();
    for (i, name) in targets.feeds.iter().enumerate() {
        let field = format!("feeds[{}]", i + 1);
        let Some(feed) = c.feeds.iter().find(|f| f.id.as_str() == name) else {
            let known: Vec<&str> = c.feeds.iter().map(|f| f.id.as_str()).take(20).collect();
            problems.push(problem(
                field,
                format!("unknown feed {name:?} (known: {})", known.join(", ")),
            ));
            continue;
        };
        if !seen.insert(name.as_str()) {
            problems.push(problem(field, format!("feed {name:?} is named twice")));
            continue;
        }
        let mut members = Vec::new();
        let mut any = false;
        for d in c.members(feed) {
            any = true;
            classes
                .entry(d.class.to_string())
                .or_insert_with(|| format!("display {} of feed {name}", d.id));
            if reached.insert(d.id.as_str()) {
                members.push(d.id.to_string());
            }
        }
        if !any {
            problems.push(problem(field, format!("feed {name:?} reaches no display")));
            continue;
        }
        reach.feeds.push((name.clone(), members));
    }
    if !targets.devices.is_empty() {
        let by_id: HashMap<&str, &Device> = c.devices.iter().map(|d| (d.id.as_str(), d)).collect();
        let mut named = BTreeSet::new();
        for (i, name) in targets.devices.iter().enumerate() {
            let field = format!("devices[{}]", i + 1);
            let Some(d) = by_id.get(name.as_str()) else {
                problems.push(problem(field, format!("unknown display {name:?}")));
                continue;
            };
            if !named.insert(name.as_str()) {
                problems.push(problem(field, format!("display {name:?} is named twice")));
            } else if !reached.contains(name.as_str()) {
                classes
                    .entry(d.class.to_string())
                    .or_insert_with(|| format!("display {name}"));
                reach.devices.push(name.clone());
            }
        }
    }
    (problems.len() == before).then_some((reach, classes))
}

/// The text against each class reached.
fn check_classes(
    text: &str,
    classes: &ClassesReached,
    c: &Catalog,
    problems: &mut Vec<FieldProblem>,
) {
    for (class, where_) in classes {
        let Some(profile) = c.classes.get(class) else {
            problems.push(problem(
                "text",
                format!("class {class:?} of {where_} has no profile in classes.toml"),
            ));
            continue;
        };
        for m in check_text(text, profile) {
            problems.push(problem("text", format!("{m} ({where_})")));
        }
    }
}

/// Why an approval or cancellation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrgentRefusal {
    #[error("no urgent message {0:?}")]
    NotFound(String),
    #[error("urgent message {0:?} was requested by {1:?}: another operator (or an admin) must approve it")]
    OwnRequest(String, String),
    #[error("urgent message {0:?} is {1}, not pending")]
    NotPending(String, &'static str),
    #[error("urgent message {0:?} is {1}: only a pending or published message can be cancelled")]
    Closed(String, &'static str),
}

/// Whether `by` may approve `msg` at `now_ms`: a pending message, and an approver other than
/// the requester (token ids decide; names only when a token is unknown). An admin may
/// approve any pending message.
pub fn approvable(
    id: &str,
    msg: Option<&UrgentMessage>,
    by: &Approver<'_>,
    now_ms: i64,
) -> Result<(), UrgentRefusal> {
    let Some(msg) = msg else {
        return Err(UrgentRefusal::NotFound(id.to_owned()));
    };
    let status = msg.status(now_ms);
    if status != UrgentStatus::Pending {
        return Err(UrgentRefusal::NotPending(id.to_owned(), status.as_str()));
    }
    let own = match (msg.requested_token, by.token) {
        (Some(a), Some(b)) => a == b,
        _ => msg.requested_by == by.name,
    };
    if own && !by.admin {
        return Err(UrgentRefusal::OwnRequest(
            id.to_owned(),
            msg.requested_by.clone(),
        ));
    }
    Ok(())
}

/// Whether `msg` may be cancelled at `now_ms`: while pending or published.
pub fn cancellable(
    id: &str,
    msg: Option<&UrgentMessage>,
    now_ms: i64,
) -> Result<(), UrgentRefusal> {
    let Some(msg) = msg else {
        return Err(UrgentRefusal::NotFound(id.to_owned()));
    };
    match msg.status(now_ms) {
        UrgentStatus::Pending | UrgentStatus::Published => Ok(()),
        s => Err(UrgentRefusal::Closed(id.to_owned(), s.as_str())),
    }
}

/// The direct command (`cmd` topic, so no `feed`) a message becomes when issued at
/// `issued`: on screen until it expires (`duration_s` is its whole remaining life), above
/// every ad set's priority, counted under ad set [`URGENT_ADSET`] with the message's id as
/// its slogan.
pub fn command(msg: &UrgentMessage, play_id: String, issued: DateTime<Utc>, tz: Tz) -> PlayCommand {
    let expires = DateTime::from_timestamp_millis(msg.expires_ms).unwrap_or(issued);
    let life_s = (expires - issued)
        .num_seconds()
        .clamp(1, i64::from(u32::MAX));
    PlayCommand {
        v: 1,
        play_id,
        feed: None,
        adset: URGENT_ADSET.to_owned(),
        rev: URGENT_REV,
        slogan: msg.id.clone(),
        text: msg.text.clone(),
        text_by_class: BTreeMap::new(),
        duration_s: life_s as u32,
        priority: URGENT_PRIORITY,
        issued_at: issued.with_timezone(&tz).fixed_offset(),
        expires_at: expires.with_timezone(&tz).fixed_offset(),
    }
}

/// The feeds whose rotation a published message holds until it expires: its target feeds
/// and every feed of a display it names on its own. A rotation play on any of them would
/// replace the message on a display it reached, so none goes out there meanwhile.
pub fn held_feeds(targets: &Targets, c: &Catalog) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = targets.feeds.iter().cloned().collect();
    if targets.devices.is_empty() {
        return out;
    }
    let named: HashSet<&str> = targets.devices.iter().map(String::as_str).collect();
    for d in c.devices.iter().filter(|d| named.contains(d.id.as_str())) {
        out.extend(c.feeds_of(d).into_iter().map(|f| f.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Attrs, Charset, ClassProfile, Device, Feed, Id, Selector};
    use std::time::Duration;

    const NOW: i64 = 1_764_590_400_000;
    const MIN: i64 = 60_000;

    fn catalog() -> Catalog {
        let profile = |name: &str, max_chars, charset| ClassProfile {
            name: name.into(),
            max_chars,
            charset,
            duration: Duration::from_secs(15),
            width_px: 192,
            scroll_px_per_s: 32,
        };
        let device = |d: &str, k: &str| Device {
            id: Id::parse(d).expect("id"),
            class: k.into(),
            attrs: Attrs::default(),
        };
        let feed = |id: &str, class: &str| Feed {
            id: Id::parse(id).expect("id"),
            select: Selector {
                terms: [("class".to_string(), vec![class.to_string()])].into(),
            },
            interval: Duration::from_secs(180),
            daypart: None,
        };
        Catalog {
            timezone: chrono_tz::Asia::Shanghai,
            classes: [
                (
                    "bus_led".to_string(),
                    profile("bus_led", 40, Charset::Gb2312),
                ),
                (
                    "taxi_top".to_string(),
                    profile("taxi_top", 6, Charset::Utf8),
                ),
            ]
            .into(),
            devices: vec![
                device("bus-1", "bus_led"),
                device("bus-2", "bus_led"),
                device("taxi-1", "taxi_top"),
            ]
            .into(),
            feeds: vec![
                feed("buses", "bus_led"),
                feed("taxis", "taxi_top"),
                feed("stops", "stop_screen"),
            ],
            adsets: vec![],
        }
    }

    fn targets(feeds: &[&str], devices: &[&str]) -> Targets {
        Targets {
            feeds: feeds.iter().map(|s| s.to_string()).collect(),
            devices: devices.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn fields(p: &[FieldProblem]) -> Vec<&str> {
        p.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn a_display_is_reached_once_through_its_feed_or_on_its_own() {
        let c = catalog();
        let r = check(
            "台风预警",
            &targets(&["buses"], &["bus-1", "taxi-1"]),
            NOW + 30 * MIN,
            &c,
            NOW,
        )
        .expect("valid");
        assert_eq!(
            r,
            Reach {
                feeds: vec![("buses".into(), vec!["bus-1".into(), "bus-2".into()])],
                devices: vec!["taxi-1".into()],
            }
        );
        assert_eq!(r.displays(), 3);
    }

    #[test]
    fn a_text_too_long_for_a_class_names_the_class_and_a_display_of_it() {
        let c = catalog();
        let p = check(
            "道路封闭请绕行",
            &targets(&[], &["bus-1", "taxi-1"]),
            NOW + MIN,
            &c,
            NOW,
        )
        .expect_err("7 characters on a 6-character taxi top");
        assert_eq!(fields(&p), vec!["text"]);
        assert!(
            p[0].message.contains("taxi_top") && p[0].message.contains("taxi-1"),
            "{p:?}"
        );
        let p =
            check("台风 😀", &targets(&["buses"], &[]), NOW + MIN, &c, NOW).expect_err("gb2312");
        assert!(
            p[0].message.contains("gb2312") && p[0].message.contains("feed buses"),
            "{p:?}"
        );
    }

    #[test]
    fn every_problem_is_named_by_its_field() {
        let c = catalog();
        let p = check(" ", &targets(&[], &[]), NOW, &c, NOW).expect_err("bad");
        assert_eq!(fields(&p), vec!["expires_at", "targets", "text"]);
        let p = check(
            "x",
            &targets(
                &["nope", "stops", "buses", "buses"],
                &["ghost", "bus-1", "bus-1"],
            ),
            NOW + 73 * 60 * MIN,
            &c,
            NOW,
        )
        .expect_err("bad");
        assert_eq!(
            fields(&p),
            vec![
                "expires_at",
                "feeds[1]",
                "feeds[2]",
                "feeds[4]",
                "devices[1]",
                "devices[3]"
            ]
        );
        let p = check(
            "a\u{1b}b",
            &targets(&["buses"], &[]),
            NOW + 30 * 1000,
            &c,
            NOW,
        )
        .expect_err("bad");
        assert_eq!(fields(&p), vec!["expires_at", "text"]);
    }

    fn msg(requested_token: Option<i64>) -> UrgentMessage {
        UrgentMessage {
            id: "01JDQ8ZK7Q3N8W5V2C4X9R6T1B".into(),
            text: "台风预警".into(),
            targets: targets(&["buses"], &[]),
            expires_ms: NOW + 30 * MIN,
            requested_by: "op1".into(),
            requested_token,
            requested_ms: NOW,
            approved_by: None,
            approved_token: None,
            approved_ms: None,
            cancelled_by: None,
            cancelled_ms: None,
        }
    }

    fn who(token: i64, name: &str, admin: bool) -> Approver<'_> {
        Approver {
            token: Some(token),
            name,
            admin,
        }
    }

    #[test]
    fn four_eyes_a_second_operator_or_an_admin_approves_a_pending_message() {
        let m = msg(Some(1));
        assert!(matches!(
            approvable("x", Some(&m), &who(1, "op1", false), NOW),
            Err(UrgentRefusal::OwnRequest(..))
        ));
        // The token decides, not the name.
        assert!(approvable("x", Some(&m), &who(2, "op1", false), NOW).is_ok());
        assert!(approvable("x", Some(&m), &who(1, "op1", true), NOW).is_ok());
        assert!(matches!(
            approvable("x", None, &who(2, "op2", false), NOW),
            Err(UrgentRefusal::NotFound(_))
        ));
        assert!(matches!(
            approvable("x", Some(&m), &who(2, "op2", false), m.expires_ms),
            Err(UrgentRefusal::NotPending(_, "expired"))
        ));
        let done = UrgentMessage {
            approved_ms: Some(NOW),
            ..m.clone()
        };
        assert!(matches!(
            approvable("x", Some(&done), &who(2, "op2", false), NOW),
            Err(UrgentRefusal::NotPending(_, "published"))
        ));
        let unknown_token = msg(None);
        assert!(approvable("x", Some(&unknown_token), &who(1, "op1", false), NOW).is_err());
    }

    #[test]
    fn status_cancelled_then_expired_then_published_then_pending() {
        let mut m = msg(Some(1));
        assert_eq!(m.status(NOW), UrgentStatus::Pending);
        m.approved_ms = Some(NOW);
        assert_eq!(m.status(NOW), UrgentStatus::Published);
        assert_eq!(m.status(m.expires_ms), UrgentStatus::Expired);
        assert!(cancellable("x", Some(&m), NOW).is_ok());
        assert!(cancellable("x", Some(&m), m.expires_ms).is_err());
        m.cancelled_ms = Some(NOW);
        assert_eq!(m.status(NOW), UrgentStatus::Cancelled);
        assert!(cancellable("x", Some(&m), NOW).is_err());
    }

    #[test]
    fn the_command_is_direct_stays_until_expiry_and_outranks_every_ad_set() {
        let m = msg(Some(1));
        let issued = DateTime::from_timestamp_millis(NOW).expect("t");
        let cmd = command(&m, "p1".into(), issued, chrono_tz::Asia::Shanghai);
        assert_eq!(cmd.feed, None);
        assert_eq!(
            (cmd.adset.as_str(), cmd.rev, cmd.slogan.as_str()),
            ("urgent", 0, m.id.as_str())
        );
        assert_eq!((cmd.duration_s, cmd.priority), (1800, i32::MAX));
        assert_eq!(cmd.expires_at.timestamp_millis(), m.expires_ms);
        let json = serde_json::to_value(&cmd).expect("json");
        assert!(json.get("feed").is_none(), "{json}");
    }

    #[test]
    fn held_feeds_are_the_targets_and_the_feeds_of_named_displays() {
        let c = catalog();
        let held = held_feeds(&targets(&["stops"], &["taxi-1"]), &c);
        assert_eq!(held, ["stops".to_string(), "taxis".to_string()].into());
    }
}
