//! The daemon's lookups over the displays: store key by display id (every receipt), display
//! by store key (presence), and membership at a play's time (every receipt of a feed play).
//!
//! Owns: these lookups, rebuilt on each reload. Must not touch the store (keys come from
//! `Store::sync_inventory`) or decide anything about a receipt (`core::receipt` does).
//!
//! A country is a million displays, so these are sorted vectors of indices into the
//! catalog's own list rather than maps holding copies of the ids: about 16 bytes a display
//! for the keys and 32 a membership, where `HashMap<String, i64>` and a map of span lists
//! cost about 80 and 100.

use std::collections::HashMap;
use std::sync::Arc;

use crate::core::model::Device;
use crate::store::{Keys, Membership};

/// Store keys of the catalog's displays.
#[derive(Debug, Default)]
pub struct Inventory {
    devices: Arc<Vec<Device>>,
    /// The store key of each display, by catalog index.
    keys: Vec<i64>,
    /// Catalog indices sorted by display id.
    by_id: Vec<u32>,
    /// Catalog indices sorted by store key.
    by_key: Vec<u32>,
    /// Displays the store knows that the files no longer list: their late receipts still
    /// count for plays they were sent. Few.
    former: HashMap<String, i64>,
    feeds: HashMap<String, i64>,
}

impl Inventory {
    /// `keys` from `Store::sync_inventory` for these displays.
    pub fn new(devices: Arc<Vec<Device>>, mut keys: Keys) -> Inventory {
        let mut own = Vec::with_capacity(devices.len());
        let mut index = Vec::with_capacity(devices.len());
        for (i, d) in devices.iter().enumerate() {
            if let (Some(k), Ok(i)) = (keys.devices.remove(d.id.as_str()), u32::try_from(i)) {
                own.push(k);
                index.push(i);
            } else {
                // Not synced (cannot happen after a sync): a key no store hands out.
                own.push(i64::MIN);
            }
        }
        let mut by_id = index.clone();
        by_id.sort_unstable_by(|a, b| devices[*a as usize].id.cmp(&devices[*b as usize].id));
        let mut by_key = index;
        by_key.sort_unstable_by_key(|i| own[*i as usize]);
        keys.devices.shrink_to_fit();
        Inventory {
            devices,
            keys: own,
            by_id,
            by_key,
            former: keys.devices,
            feeds: keys.feeds,
        }
    }

    /// The store key of a display, by its id.
    pub fn key(&self, id: &str) -> Option<i64> {
        self.by_id
            .binary_search_by(|i| self.devices[*i as usize].id.as_str().cmp(id))
            .ok()
            .map(|p| self.keys[self.by_id[p] as usize])
            .or_else(|| self.former.get(id).copied())
    }

    /// The catalog's display with this store key (none for a display the files dropped).
    pub fn device(&self, key: i64) -> Option<&Device> {
        self.by_key
            .binary_search_by_key(&key, |i| self.keys[*i as usize])
            .ok()
            .map(|p| &self.devices[self.by_key[p] as usize])
    }

    /// The id of the display with this store key.
    pub fn id_of(&self, key: i64) -> Option<&str> {
        match self.device(key) {
            Some(d) => Some(d.id.as_str()),
            None => self
                .former
                .iter()
                .find(|(_, k)| **k == key)
                .map(|(n, _)| n.as_str()),
        }
    }

    pub fn feed_key(&self, feed: &str) -> Option<i64> {
        self.feeds.get(feed).copied()
    }
}

/// Which feeds each display belonged to and when, sorted by (display, feed, since).
#[derive(Debug, Default)]
pub struct MemberIndex {
    /// (display, feed, since, until): until is `i64::MAX` while still a member.
    spans: Vec<(i64, i64, i64, i64)>,
}

impl MemberIndex {
    pub fn new(ms: Vec<Membership>) -> Self {
        let mut spans: Vec<_> = ms
            .into_iter()
            .map(|m| (m.device, m.feed, m.since_ms, m.until_ms.unwrap_or(i64::MAX)))
            .collect();
        spans.sort_unstable();
        spans.shrink_to_fit();
        MemberIndex { spans }
    }

    /// Whether `device` was on `feed` when a play was issued at `at_ms`.
    pub fn member_at(&self, device: i64, feed: i64, at_ms: i64) -> bool {
        let start = self.spans.partition_point(|s| (s.0, s.1) < (device, feed));
        self.spans[start..]
            .iter()
            .take_while(|s| (s.0, s.1) == (device, feed))
            .any(|s| s.2 <= at_ms && at_ms < s.3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Attrs, Id};

    fn dev(id: &str) -> Device {
        Device {
            id: Id::parse(id).expect("id"),
            class: "bus_led".into(),
            attrs: Attrs::default(),
        }
    }

    #[test]
    fn keys_are_found_by_id_and_displays_by_key() {
        let devices = Arc::new(vec![dev("c"), dev("a"), dev("b")]);
        let mut keys = Keys::default();
        for (n, k) in [("a", 7), ("b", 3), ("c", 11), ("gone", 5)] {
            keys.devices.insert(n.into(), k);
        }
        keys.feeds.insert("all".into(), 1);
        let inv = Inventory::new(devices, keys);
        assert_eq!(inv.key("a"), Some(7));
        assert_eq!(inv.key("b"), Some(3));
        assert_eq!(inv.key("c"), Some(11));
        assert_eq!(inv.key("gone"), Some(5), "a dropped display keeps its key");
        assert_eq!(inv.key("nobody"), None);
        assert_eq!(inv.device(11).map(|d| d.id.as_str()), Some("c"));
        assert_eq!(inv.device(5), None);
        assert_eq!(inv.id_of(5), Some("gone"));
        assert_eq!(inv.id_of(3), Some("b"));
        assert_eq!(inv.id_of(99), None);
        assert_eq!(inv.feed_key("all"), Some(1));
    }

    #[test]
    fn membership_is_checked_against_its_spans() {
        let m = |device, feed, since_ms, until_ms| Membership {
            device,
            feed,
            since_ms,
            until_ms,
        };
        let idx = MemberIndex::new(vec![
            m(2, 1, 100, Some(200)),
            m(1, 1, 0, None),
            m(2, 1, 300, None),
            m(2, 2, 0, Some(50)),
        ]);
        assert!(idx.member_at(1, 1, 5_000));
        assert!(idx.member_at(2, 1, 100));
        assert!(!idx.member_at(2, 1, 200), "until is exclusive");
        assert!(!idx.member_at(2, 1, 250));
        assert!(idx.member_at(2, 1, 300));
        assert!(idx.member_at(2, 2, 49));
        assert!(!idx.member_at(2, 2, 50));
        assert!(!idx.member_at(3, 1, 100));
        assert!(!idx.member_at(1, 2, 100));
    }
}
