//! A feed's members at each play's issue, and which of them were offline, counted from
//! spans instead of member by member: each display's membership of a feed and its presence
//! are a few spans a week, its feed's plays thousands, so a sweep over the spans' edges
//! answers every play of a week in the time a member list would take for a few of them.
//!
//! Owns only the interval arithmetic. The store's rows come in as plain tuples; no I/O.
//!
//! Spans are half-open, `[from, until)`, as the store keeps them: a display joined at
//! `since` is a member at `since`; online from `online_from` is online then; neither is at
//! its end. An open end is `i64::MAX`.

use std::collections::HashMap;

/// Sorted, disjoint, non-touching spans covering exactly what `spans` cover.
pub fn union(mut spans: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    spans.retain(|(s, e)| s < e);
    spans.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// What `a` covers and `b` does not; both as [`union`] returns them.
pub fn subtract(a: &[(i64, i64)], b: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(s, e) in a {
        let mut from = s;
        while j < b.len() && b[j].1 <= from {
            j += 1;
        }
        let mut k = j;
        while from < e && k < b.len() && b[k].0 < e {
            if b[k].0 > from {
                out.push((from, b[k].0));
            }
            from = from.max(b[k].1);
            k += 1;
        }
        if from < e {
            out.push((from, e));
        }
    }
    out
}

/// Whether `t` lies in one of `spans` (as [`union`] returns them).
pub fn covers(spans: &[(i64, i64)], t: i64) -> bool {
    let i = spans.partition_point(|(s, _)| *s <= t);
    i > 0 && t < spans[i - 1].1
}

/// One play to count: its feed's key and its issue time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayOf {
    pub feed: i64,
    pub issued_ms: i64,
}

/// One display's membership of one feed: `(device, feed, since, until)`.
pub type MemberSpan = (i64, i64, i64, Option<i64>);

/// What the sweep found.
#[derive(Debug, Default)]
pub struct AtIssue {
    /// Per play, in the order given: distinct members at issue, and how many of those
    /// were offline then.
    pub counts: Vec<(u64, u64)>,
    /// Per (device, feed): the spans in which the display was a member and offline; a
    /// play of the feed issued in one found it offline. Only pairs with such a span.
    pub offline: HashMap<(i64, i64), Vec<(i64, i64)>>,
}

impl AtIssue {
    /// Whether `device` was a member of `feed` and offline at `at`.
    pub fn offline_at(&self, device: i64, feed: i64, at: i64) -> bool {
        self.offline
            .get(&(device, feed))
            .is_some_and(|s| covers(s, at))
    }
}

/// Counts each play's members at issue and those offline, from every display's spans of
/// membership (`memberships`) and of presence (`online`, by device key, any order,
/// overlapping or not). The same numbers as listing each play's members (membership
/// `since <= issued < until`), deduplicating them and asking each whether it was online.
pub fn at_issue(
    plays: &[PlayOf],
    memberships: impl IntoIterator<Item = MemberSpan>,
    online: &HashMap<i64, Vec<(i64, i64)>>,
) -> AtIssue {
    let mut member: HashMap<(i64, i64), Vec<(i64, i64)>> = HashMap::new();
    for (device, feed, since, until) in memberships {
        member
            .entry((device, feed))
            .or_default()
            .push((since, until.unwrap_or(i64::MAX)));
    }
    let mut presence: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    // Per feed, the edges of its members' spans: (time, change in members, change in offline).
    let mut edges: HashMap<i64, Vec<(i64, i64, i64)>> = HashMap::new();
    let mut offline = HashMap::new();
    for ((device, feed), spans) in member {
        let spans = union(spans);
        let on = presence
            .entry(device)
            .or_insert_with(|| union(online.get(&device).cloned().unwrap_or_default()));
        let off = subtract(&spans, on);
        let e = edges.entry(feed).or_default();
        for &(s, u) in &spans {
            e.push((s, 1, 0));
            e.push((u, -1, 0));
        }
        for &(s, u) in &off {
            e.push((s, 0, 1));
            e.push((u, 0, -1));
        }
        if !off.is_empty() {
            offline.insert((device, feed), off);
        }
    }
    let mut order: Vec<usize> = (0..plays.len()).collect();
    order.sort_unstable_by_key(|&i| (plays[i].feed, plays[i].issued_ms));
    let mut counts = vec![(0u64, 0u64); plays.len()];
    for run in order.chunk_by(|a, b| plays[*a].feed == plays[*b].feed) {
        let Some(e) = edges.get_mut(&plays[run[0]].feed) else {
            continue;
        };
        e.sort_unstable();
        let (mut at, mut members, mut away) = (0usize, 0i64, 0i64);
        for &i in run {
            // Every edge at or before the issue: a span starting then counts, one ending
            // then does not.
            while at < e.len() && e[at].0 <= plays[i].issued_ms {
                members += e[at].1;
                away += e[at].2;
                at += 1;
            }
            counts[i] = (members.max(0) as u64, away.max(0) as u64);
        }
    }
    AtIssue { counts, offline }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spans() -> impl Strategy<Value = Vec<(i64, i64)>> {
        prop::collection::vec((0i64..100, 0i64..30), 0..8)
            .prop_map(|v| v.into_iter().map(|(s, l)| (s, s + l)).collect())
    }

    #[test]
    fn unions_merge_touching_and_overlapping_spans() {
        assert_eq!(
            union(vec![(5, 7), (1, 3), (3, 4), (6, 9), (20, 20)]),
            vec![(1, 4), (5, 9)]
        );
        assert_eq!(
            subtract(&[(0, 10)], &[(2, 3), (5, 12)]),
            vec![(0, 2), (3, 5)]
        );
        assert!(covers(&[(1, 4)], 1) && !covers(&[(1, 4)], 4) && !covers(&[], 0));
    }

    proptest! {
        #[test]
        fn union_and_subtract_cover_what_they_say(a in spans(), b in spans(), t in 0i64..140) {
            let (ua, ub) = (union(a.clone()), union(b.clone()));
            let inside = |v: &[(i64, i64)]| v.iter().any(|(s, e)| *s <= t && t < *e);
            prop_assert_eq!(covers(&ua, t), inside(&a));
            prop_assert!(ua.windows(2).all(|w| w[0].1 < w[1].0));
            prop_assert_eq!(covers(&subtract(&ua, &ub), t), inside(&a) && !inside(&b));
        }

        /// The sweep counts what the member-by-member definition counts, and its offline
        /// spans hold exactly the (member, play) pairs offline at issue.
        #[test]
        fn the_sweep_counts_as_listing_each_member(
            plays in prop::collection::vec((0i64..3, 0i64..200), 0..30),
            memberships in prop::collection::vec(
                (0i64..8, 0i64..3, 0i64..150, prop::option::of(0i64..220)),
                0..20,
            ),
            online in prop::collection::hash_map(0i64..8, prop::collection::vec((0i64..200, 0i64..80), 0..5), 0..8),
        ) {
            let plays: Vec<PlayOf> = plays
                .iter()
                .map(|&(feed, issued_ms)| PlayOf { feed, issued_ms })
                .collect();
            let online: HashMap<i64, Vec<(i64, i64)>> = online
                .into_iter()
                .map(|(d, v)| (d, v.into_iter().map(|(s, l)| (s, s + l)).collect()))
                .collect();
            let got = at_issue(&plays, memberships.iter().copied(), &online);
            for (i, p) in plays.iter().enumerate() {
                let mut members: Vec<i64> = memberships
                    .iter()
                    .filter(|(_, f, s, u)| {
                        *f == p.feed && *s <= p.issued_ms && u.is_none_or(|u| p.issued_ms < u)
                    })
                    .map(|(d, ..)| *d)
                    .collect();
                members.sort_unstable();
                members.dedup();
                let on = |d: i64| {
                    online
                        .get(&d)
                        .is_some_and(|v| v.iter().any(|(s, e)| *s <= p.issued_ms && p.issued_ms < *e))
                };
                let away: Vec<i64> = members.iter().copied().filter(|&d| !on(d)).collect();
                prop_assert_eq!(got.counts[i], (members.len() as u64, away.len() as u64), "play {}", i);
                for d in 0..8 {
                    prop_assert_eq!(
                        got.offline_at(d, p.feed, p.issued_ms),
                        away.contains(&d),
                        "display {} play {}", d, i
                    );
                }
            }
        }
    }
}
