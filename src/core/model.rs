//! Plain data shared by the core and the shells: displays, classes, feeds, ad sets.
//!
//! Everything here is already valid once built (the `catalog` module is the only place that
//! builds these from files or uploads). No I/O, no tokio, no sqlx, no MQTT types.
//!
//! Owns: the shapes. Must not touch parsing (`catalog`) or any decision (`rotation`,
//! `play`, `receipt`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An id of a display or a feed as the wire contract allows it: `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Id(compact_str::CompactString);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid id: 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")]
pub struct BadId(pub String);

impl Id {
    pub fn parse(s: &str) -> Result<Self, BadId> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Id(compact_str::CompactString::new(s)))
        } else {
            Err(BadId(s.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Id {
    type Error = BadId;
    fn try_from(s: String) -> Result<Self, BadId> {
        Id::parse(&s)
    }
}
impl From<Id> for String {
    fn from(id: Id) -> String {
        id.0.into()
    }
}
impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Which characters a display class can draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Charset {
    /// Many Chinese LED controllers draw only GB2312.
    Gb2312,
    Utf8,
}

/// What one display class can show (`devices/classes.toml`).
#[derive(Debug, Clone, PartialEq)]
pub struct ClassProfile {
    pub name: String,
    /// Longest text it can show, in characters (not bytes).
    pub max_chars: usize,
    pub charset: Charset,
    /// Default time on screen for one play.
    pub duration: Duration,
    /// Width of its LED matrix in pixels (16 high): what the preview draws into. Optional in
    /// `classes.toml`; `catalog::led_defaults` gives the width of a class that names none.
    pub width_px: u32,
    /// How fast a text wider than the matrix scrolls, in pixels a second.
    pub scroll_px_per_s: u32,
}

/// One display from `devices/*.csv`. A country holds a million of these: 56 bytes each, as
/// the id is inline and the class and the attribute list are shared.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: Id,
    /// Shared with every display of the class.
    pub class: std::sync::Arc<str>,
    /// Every column but `id` and `class`; empty cells are left out.
    pub attrs: Attrs,
}

/// A display's attributes: a few (name, value) pairs, sorted by name. Both the strings and
/// whole lists are shared between displays through an `Interner` (a city has a few hundred
/// routes for a million displays): a map per display cost about 650 bytes at a million
/// displays, a list of shared strings about a hundred, a shared list 16.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Attrs(std::sync::Arc<[(std::sync::Arc<str>, std::sync::Arc<str>)]>);

impl Attrs {
    /// From pairs; the first value of a repeated name wins.
    pub fn new(mut pairs: Vec<(std::sync::Arc<str>, std::sync::Arc<str>)>) -> Self {
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|later, first| later.0 == first.0);
        Attrs(pairs.into())
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &*self.0[i].1)
    }
    pub fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Attrs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Shares equal strings (one allocation per distinct class, attribute name or value) and
/// equal attribute lists.
#[derive(Debug, Default)]
pub struct Interner {
    strings: std::collections::HashSet<std::sync::Arc<str>>,
    lists: std::collections::HashSet<Attrs>,
}

impl Interner {
    pub fn get(&mut self, s: &str) -> std::sync::Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: std::sync::Arc<str> = s.into();
        self.strings.insert(a.clone());
        a
    }
    /// The shared copy of an attribute list equal to `a`.
    pub fn attrs(&mut self, a: Attrs) -> Attrs {
        if let Some(shared) = self.lists.get(&a) {
            return shared.clone();
        }
        self.lists.insert(a.clone());
        a
    }
}

/// A feed's selector: every key must match; a list matches any of its values.
/// The key `class` matches the display's class, `id` its id, any other key an attribute.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Selector {
    pub terms: BTreeMap<String, Vec<String>>,
}

impl Selector {
    pub fn matches(&self, d: &Device) -> bool {
        self.terms.iter().all(|(k, vals)| {
            let v = match k.as_str() {
                "class" => Some(&*d.class),
                "id" => Some(d.id.as_str()),
                _ => d.attrs.get(k),
            };
            v.is_some_and(|v| vals.iter().any(|x| x == v))
        })
    }
}

/// A cron daypart (sec min hour day month weekday), kept with its source text.
#[derive(Clone)]
pub struct Daypart {
    pub source: String,
    pub schedule: cron::Schedule,
}

impl fmt::Debug for Daypart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Daypart({:?})", self.source)
    }
}
impl PartialEq for Daypart {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Daypart {
    /// Whether the feed may play at `t` (seconds resolution, in the feeds' time zone).
    pub fn includes(&self, t: DateTime<chrono_tz::Tz>) -> bool {
        use chrono::Timelike;
        let t = t.with_nanosecond(0).unwrap_or(t);
        self.schedule.includes(t)
    }
}

/// One feed from `schedules/feeds.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Feed {
    pub id: Id,
    pub select: Selector,
    /// Mean time between plays on this feed.
    pub interval: Duration,
    pub daypart: Option<Daypart>,
}

/// One slogan of an ad set.
#[derive(Debug, Clone, PartialEq)]
pub struct Slogan {
    pub id: Id,
    pub text: String,
    /// Plays are shared in proportion; at least 1.
    pub weight: u32,
    /// Shorter texts for small displays, by class name.
    pub text_by_class: BTreeMap<String, String>,
}

impl Slogan {
    /// The text a display of `class` shows.
    pub fn text_for(&self, class: &str) -> &str {
        self.text_by_class
            .get(class)
            .map(String::as_str)
            .unwrap_or(&self.text)
    }
}

/// An ad set: a versioned bundle of slogans. Times are resolved to instants: a `valid_until`
/// date means the end of that day in the feeds' time zone (exclusive instant here).
#[derive(Debug, Clone, PartialEq)]
pub struct AdSet {
    pub id: Id,
    pub title: String,
    pub rev: i64,
    pub valid_from: DateTime<Utc>,
    /// Exclusive.
    pub valid_until: DateTime<Utc>,
    /// `None`: every feed.
    pub feeds: Option<Vec<Id>>,
    pub priority: i32,
    pub slogans: Vec<Slogan>,
}

impl AdSet {
    pub fn valid_at(&self, t: DateTime<Utc>) -> bool {
        self.valid_from <= t && t < self.valid_until
    }
    pub fn on_feed(&self, feed: &Id) -> bool {
        self.feeds.as_ref().is_none_or(|fs| fs.contains(feed))
    }
}

/// Everything the operators' files say, validated.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub timezone: chrono_tz::Tz,
    pub classes: BTreeMap<String, ClassProfile>,
    /// Shared: the daemon keeps several catalogs (files alone, files with ad sets) that
    /// differ only in ad sets, and a country's inventory is a million rows.
    pub devices: std::sync::Arc<Vec<Device>>,
    pub feeds: Vec<Feed>,
    pub adsets: Vec<AdSet>,
}

impl Catalog {
    /// The feeds a display belongs to, in the order of `feeds.toml`.
    pub fn feeds_of(&self, d: &Device) -> Vec<Id> {
        self.feeds
            .iter()
            .filter(|f| f.select.matches(d))
            .map(|f| f.id.clone())
            .collect()
    }
    pub fn members<'a>(&'a self, f: &'a Feed) -> impl Iterator<Item = &'a Device> + 'a {
        self.devices.iter().filter(move |d| f.select.matches(d))
    }
}
