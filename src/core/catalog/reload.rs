//! How much a new state of the operators' files would take away from the one that plays: the
//! displays and the ad sets that would stop. The shells refuse a reload (or a start) that
//! takes away more than a share the operator allows, since a file deleted or caught
//! half-written looks, to a parser, exactly like a valid smaller city.
//!
//! Pure: both catalogs and "now" are passed in.

use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Utc};

use crate::core::model::Catalog;

/// What a new state takes away from one kind of thing.
#[derive(Debug, Clone, PartialEq)]
pub struct Shrink {
    /// `displays` or `ad sets`, as messages say it.
    pub what: &'static str,
    pub before: usize,
    pub after: usize,
    /// How many of those before are gone after.
    pub removed: usize,
    /// A few of the ids removed, for the message.
    pub examples: Vec<String>,
}

/// How many removed ids a message names.
const EXAMPLES: usize = 5;

impl Shrink {
    /// From counts alone, when the ids before are not known (removed = the shortfall).
    pub fn of_counts(what: &'static str, before: usize, after: usize) -> Shrink {
        Shrink {
            what,
            before,
            after,
            removed: before.saturating_sub(after),
            examples: Vec::new(),
        }
    }

    /// The share of those before that are removed, from 0 to 1.
    pub fn share(&self) -> f64 {
        if self.before == 0 {
            0.0
        } else {
            self.removed as f64 / self.before as f64
        }
    }

    /// Whether more than `max_share` would go. Taking away a single one is how an operator
    /// retires an ad set or a display in version control, so one alone passes in a small
    /// city, unless it is the last one: a city left with none stops playing.
    pub fn exceeds(&self, max_share: f64) -> bool {
        self.removed > 0 && self.share() > max_share && (self.removed > 1 || self.after == 0)
    }
}

impl fmt::Display for Shrink {
    /// `3101 of 3149 displays (98.5%) would go, 48 left (e.g. bus-1, bus-2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} {} ({:.1}%) would go, {} left",
            self.removed,
            self.before,
            self.what,
            self.share() * 100.0,
            self.after
        )?;
        if !self.examples.is_empty() {
            let more = if self.removed > self.examples.len() {
                ", ..."
            } else {
                ""
            };
            write!(f, " (e.g. {}{more})", self.examples.join(", "))?;
        }
        Ok(())
    }
}

/// What `new` takes away from `old`: displays by id, and the ad sets of the files that have
/// not ended by `now`, by id (an ad set past its `valid_until` plays nowhere, so removing its
/// file takes nothing away).
pub fn shrinkage(old: &Catalog, new: &Catalog, now: DateTime<Utc>) -> [Shrink; 2] {
    let kept: HashSet<&str> = new.devices.iter().map(|d| d.id.as_str()).collect();
    let displays = removed(
        "displays",
        old.devices.iter().map(|d| d.id.as_str()),
        &kept,
        new.devices.len(),
    );
    let kept: HashSet<&str> = new.adsets.iter().map(|a| a.id.as_str()).collect();
    let live = old
        .adsets
        .iter()
        .filter(|a| a.valid_until > now)
        .map(|a| a.id.as_str());
    let adsets = removed("ad sets", live, &kept, new.adsets.len());
    [displays, adsets]
}

fn removed<'a>(
    what: &'static str,
    before: impl Iterator<Item = &'a str>,
    kept: &HashSet<&str>,
    after: usize,
) -> Shrink {
    let mut n = 0;
    let mut gone = 0;
    let mut examples = Vec::new();
    for id in before {
        n += 1;
        if !kept.contains(id) {
            gone += 1;
            if examples.len() < EXAMPLES {
                examples.push(id.to_owned());
            }
        }
    }
    Shrink {
        what,
        before: n,
        after,
        removed: gone,
        examples,
    }
}
