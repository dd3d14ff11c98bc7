//! Rotation: which slogan plays next on a feed, and when.
//!
//! Owns eligibility (validity, targeting, priority, dayparts), the fair weighted pick with its
//! serializable [`Cursor`], the staggered play grid of each feed and play expiry.
//!
//! Pure core: no tokio, no sqlx, no MQTT, no I/O and no wall clock. Time is always passed in,
//! so the shells decide what "now" is and the same inputs always give the same answer. The
//! shells own persistence of the cursor (it is plain serde data) and the publishing.
//!
//! # What the pick guarantees
//! Notation: `W` is the sum of the candidates' weights, `w_i` one candidate's weight, and over a
//! run of `m` consecutive picks `count_i` is how often candidate `i` was picked. All of the
//! following are checked by the property tests below over 1..=8 candidates with weights
//! 1..=10 and runs of several hundred picks.
//!
//! * **Fairness, from a fresh cursor**: every run of consecutive picks (any window, prefixes
//!   included) has `|count_i - m*w_i/W| <= 2 - 2/W`, so strictly less than two plays off its
//!   share. One play is not reachable in general: for weights `[1, 3, 5, 7]` no infinite
//!   sequence at all keeps every window within one play (the test
//!   `window_bound_of_one_is_impossible_for_1_3_5_7` proves it by exhaustive search). Plain
//!   SWRR keeps prefixes within one play but repeats needlessly; the no-repeat rule below can
//!   take a prefix slightly past one play (about 1.07 seen in simulation), never past the window bound.
//! * **After a change of the candidate set** (keys added or removed, weights changed): surviving
//!   keys keep their credit, clamped to one play either way, so every run that starts at or
//!   after the change has `|count_i - m*w_i/W| <= 2 + 2/W` under the new weights (the carried
//!   credit or debt is at most one play, which costs a little over the steady bound).
//! * **No needless repeats**: the same key is never picked twice in a row when there is another
//!   candidate, unless its weight is more than half of `W` (then repeats are unavoidable).
//!   This holds by construction, also across changes and restarts; no conflict with the
//!   fairness bounds above was found, so fairness never had to override it.
//! * **No starvation**: from a fresh cursor each candidate is picked at least once in every `W`
//!   consecutive picks. From a change on, at least once in every `2W + 1` consecutive picks
//!   (carried debt of up to one play has to be worked off first).
//! * **Determinism and resumability**: the pick is a function of the cursor and the candidates
//!   only; a serde round-trip of the cursor continues with exactly the same picks.
//! * **Memory**: the cursor holds only keys of the candidates of its last pick.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::core::model::{AdSet, Feed, Id};

/// One slogan that may play on a feed now.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub adset: Id,
    pub rev: i64,
    pub slogan: Id,
    pub weight: u32,
}

impl Candidate {
    /// `"adset/slogan"`. The revision is left out on purpose: a new revision of an ad set keeps
    /// its slogans' fairness credit instead of restarting them all at once.
    pub fn key(&self) -> String {
        format!("{}/{}", self.adset, self.slogan)
    }
}

/// Slogans that may play on `feed` at `now`: ad sets valid at `now` that are on the feed,
/// keeping only those of the highest priority among them; in ad-set order then slogan order.
/// Empty if the feed's daypart (if any) does not include `now` in timezone `tz`.
pub fn eligible(feed: &Feed, adsets: &[AdSet], now: DateTime<Utc>, tz: Tz) -> Vec<Candidate> {
    if let Some(daypart) = &feed.daypart {
        if !daypart.includes(now.with_timezone(&tz)) {
            return Vec::new();
        }
    }
    let live: Vec<&AdSet> = adsets
        .iter()
        .filter(|a| a.valid_at(now) && a.on_feed(&feed.id))
        .collect();
    let Some(top) = live.iter().map(|a| a.priority).max() else {
        return Vec::new();
    };
    live.into_iter()
        .filter(|a| a.priority == top)
        .flat_map(|a| {
            a.slogans.iter().map(move |s| Candidate {
                adset: a.id.clone(),
                rev: a.rev,
                slogan: s.id.clone(),
                weight: s.weight,
            })
        })
        .collect()
}

/// State of the fair pick on one feed: smooth weighted round robin credits (scaled so that a
/// credit of `W` is one play ahead of the share), the last key played and the play count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cursor {
    credits: BTreeMap<String, i64>,
    last: Option<String>,
    seq: u64,
}

impl Cursor {
    /// Picks the next candidate index and advances the cursor. `None` iff `candidates` is
    /// empty; then the cursor is left as it was, so a feed that pauses (daypart, no valid ad
    /// set) resumes with its credits.
    ///
    /// Candidates are told apart by [`Candidate::key`]; if a key occurs twice only its first
    /// occurrence can be picked. A weight of 0 counts as 1 (the catalog never builds one).
    pub fn pick(&mut self, candidates: &[Candidate]) -> Option<usize> {
        let mut seen = BTreeSet::new();
        let slots: Vec<(usize, String, i64)> = candidates
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let key = c.key();
                seen.insert(key.clone())
                    .then(|| (i, key, i64::from(c.weight.max(1))))
            })
            .collect();
        if slots.is_empty() {
            return None;
        }
        let total: i64 = slots.iter().map(|s| s.2).sum();

        self.credits.retain(|k, _| seen.contains(k));
        if self.last.as_ref().is_some_and(|k| !seen.contains(k)) {
            self.last = None;
        }
        let mut credit: Vec<i64> = slots
            .iter()
            .map(|(_, k, _)| self.credits.get(k).copied().unwrap_or(0))
            .collect();

        // A change of the candidate set leaves credits that no longer sum to zero or that were
        // earned under other weights. Only differences matter to the pick, so recentre them, and
        // clamp to one play either way so old history cannot starve or flood the new set. In a
        // steady state this is a no-op (credits sum to zero and stay within [-W, W]).
        let n = credit.len() as i64;
        let mean = credit.iter().sum::<i64>().div_euclid(n);
        for c in &mut credit {
            *c = (*c - mean).clamp(-total, total);
        }

        for (c, s) in credit.iter_mut().zip(&slots) {
            *c += s.2;
        }
        let best_of = |skip: Option<usize>| {
            (0..credit.len())
                .filter(|&j| Some(j) != skip)
                .fold(None, |best: Option<usize>, j| match best {
                    Some(b) if credit[b] >= credit[j] => Some(b),
                    _ => Some(j),
                })
        };
        let mut chosen = best_of(None)?;
        // Plain SWRR may pick the same key twice in a row at a period boundary even when its
        // share is at most one half. Then take the best other candidate instead: property tests
        // show the fairness bounds survive this, and a repeat is what viewers notice first.
        let weight = slots[chosen].2;
        if self.last.as_deref() == Some(slots[chosen].1.as_str()) && 2 * weight <= total {
            if let Some(other) = best_of(Some(chosen)) {
                chosen = other;
            }
        }
        credit[chosen] -= total;

        self.credits = slots
            .iter()
            .zip(&credit)
            .map(|((_, k, _), c)| (k.clone(), *c))
            .collect();
        self.last = Some(slots[chosen].1.clone());
        self.seq += 1;
        Some(slots[chosen].0)
    }

    /// Plays picked so far with this cursor.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

fn millis(d: Duration) -> i128 {
    i128::try_from(d.as_millis()).unwrap_or(i128::MAX)
}

/// Fixed offset of a feed within its interval, from a hash (sha2) of the feed id: in
/// `[0, interval)` at millisecond resolution (zero for an interval under a millisecond).
pub fn stagger(feed: &Id, interval: Duration) -> Duration {
    let ms = interval.as_millis();
    if ms == 0 {
        return Duration::ZERO;
    }
    let digest = Sha256::digest(feed.as_str().as_bytes());
    let mut head = [0u8; 16];
    head.copy_from_slice(&digest[..16]);
    let offset = u128::from_be_bytes(head) % ms;
    Duration::from_millis(u64::try_from(offset).unwrap_or(u64::MAX))
}

/// The first play instant strictly after `after` on the feed's grid: instants
/// `t = epoch + stagger + k*interval` (k integer, epoch = Unix epoch), i.e. plays at a fixed
/// phase. Works in milliseconds; an interval under a millisecond counts as one millisecond.
///
/// Because the grid is anchored to the epoch and not to the last play, a restarted daemon
/// resumes on the same phase: missed slots are skipped, never replayed in a burst.
pub fn next_slot(feed: &Id, interval: Duration, after: DateTime<Utc>) -> DateTime<Utc> {
    let step = millis(interval).max(1);
    let phase = millis(stagger(feed, interval));
    // timestamp_millis floors, so the slot at exactly `after` (or before it) is never returned.
    let now = i128::from(after.timestamp_millis());
    let k = (now - phase).div_euclid(step) + 1;
    let t = phase + k * step;
    i64::try_from(t)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// When a play issued at `issued` stops being valid: `issued + override_`, or
/// `issued + interval` without an override (a play is stale once the next one is due).
pub fn expires_at(
    issued: DateTime<Utc>,
    interval: Duration,
    override_: Option<Duration>,
) -> DateTime<Utc> {
    let life = TimeDelta::from_std(override_.unwrap_or(interval)).unwrap_or(TimeDelta::MAX);
    issued
        .checked_add_signed(life)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Daypart, Selector, Slogan};
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::str::FromStr;

    fn id(s: &str) -> Id {
        Id::parse(s).unwrap()
    }

    fn cands(prefix: &str, weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Candidate {
                adset: id(prefix),
                rev: 1,
                slogan: id(&format!("s{i}")),
                weight: w,
            })
            .collect()
    }

    fn run(cursor: &mut Cursor, cs: &[Candidate], n: usize) -> Vec<usize> {
        (0..n).map(|_| cursor.pick(cs).unwrap()).collect()
    }

    /// Per candidate, the range (max - min) over all prefixes of `W*count_i - t*w_i`. A window
    /// between prefixes a and b deviates by (d(b) - d(a)) / W, so range / W is the worst window.
    fn window_ranges(weights: &[u32], picks: &[usize]) -> Vec<i64> {
        let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let (mut d, mut lo, mut hi) = (0i64, 0i64, 0i64);
                for &p in picks {
                    d += if p == i { total } else { 0 } - i64::from(w);
                    lo = lo.min(d);
                    hi = hi.max(d);
                }
                hi - lo
            })
            .collect()
    }

    fn repeats_ok(weights: &[u32], picks: &[usize]) -> bool {
        let total: u32 = weights.iter().sum();
        weights.len() == 1
            || picks
                .windows(2)
                .all(|p| p[0] != p[1] || 2 * weights[p[0]] > total)
    }

    fn longest_gap(n: usize, picks: &[usize]) -> usize {
        (0..n)
            .map(|i| {
                let mut last: isize = -1;
                let mut gap = 0;
                for (t, &p) in picks.iter().enumerate() {
                    if p == i {
                        gap = gap.max((t as isize - last) as usize);
                        last = t as isize;
                    }
                }
                gap.max((picks.len() as isize - last) as usize)
            })
            .max()
            .unwrap_or(0)
    }

    fn weights() -> impl Strategy<Value = Vec<u32>> {
        prop::collection::vec(1u32..=10, 1..=8)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn fair_over_every_window(ws in weights(), n in 1usize..400) {
            let cs = cands("a", &ws);
            let picks = run(&mut Cursor::default(), &cs, n);
            let total: i64 = ws.iter().map(|&w| i64::from(w)).sum();
            for r in window_ranges(&ws, &picks) {
                prop_assert!(r <= 2 * total - 2, "window off by {r}/{total}");
            }
        }

        #[test]
        fn no_needless_repeats(ws in weights(), n in 1usize..400) {
            let cs = cands("a", &ws);
            let picks = run(&mut Cursor::default(), &cs, n);
            prop_assert!(repeats_ok(&ws, &picks));
        }

        #[test]
        fn no_starvation(ws in weights(), extra in 0usize..200) {
            let cs = cands("a", &ws);
            let total: usize = ws.iter().map(|&w| w as usize).sum();
            let picks = run(&mut Cursor::default(), &cs, 2 * total + extra);
            // A gap of g means g-1 picks without the candidate; at most W-1 keeps one per W.
            prop_assert!(longest_gap(ws.len(), &picks) <= total);
        }

        #[test]
        fn fair_after_candidate_set_changes(
            ws in weights(),
            before in 0usize..200,
            edits in prop::collection::vec((any::<bool>(), 0u32..=10), 1..=8),
            added in prop::collection::vec(1u32..=10, 0..=3),
            after in 1usize..300,
        ) {
            let old = cands("a", &ws);
            let mut cursor = Cursor::default();
            let first = run(&mut cursor, &old, before);
            // Keep, drop or reweigh each old slogan (a new revision), then add new ones.
            let mut new: Vec<Candidate> = old
                .iter()
                .zip(edits.iter().cycle())
                .filter(|(_, (keep, _))| *keep)
                .map(|(c, &(_, w))| Candidate { rev: 2, weight: if w == 0 { c.weight } else { w }, ..c.clone() })
                .collect();
            new.extend(cands("b", &added));
            prop_assume!(!new.is_empty());
            let nw: Vec<u32> = new.iter().map(|c| c.weight).collect();
            let total: i64 = nw.iter().map(|&w| i64::from(w)).sum();
            let second = run(&mut cursor, &new, after);

            let keys: BTreeSet<String> = new.iter().map(Candidate::key).collect();
            let held: BTreeSet<String> = cursor.credits.keys().cloned().collect();
            prop_assert_eq!(held, keys, "cursor must hold exactly the current keys");
            for r in window_ranges(&nw, &second) {
                prop_assert!(r <= 2 * total + 2, "window after change off by {r}/{total}");
            }
            prop_assert!(repeats_ok(&nw, &second));
            // No repeat across the change either.
            if let (Some(&p), Some(&q)) = (first.last(), second.first()) {
                let (pk, qk) = (old[p].key(), new[q].key());
                prop_assert!(new.len() == 1 || pk != qk || 2 * i64::from(new[q].weight) > total);
            }
            // Carried credit (up to one play either way) can make a candidate wait about 2W.
            let w = total as usize;
            prop_assert!(longest_gap(nw.len(), &second) <= 2 * w + 1);
        }

        #[test]
        fn deterministic_and_resumable_through_json(ws in weights(), a in 0usize..200, b in 1usize..200) {
            let cs = cands("a", &ws);
            let mut cursor = Cursor::default();
            run(&mut cursor, &cs, a);
            let mut twin = cursor.clone();
            let json = serde_json::to_string(&cursor).unwrap();
            let mut resumed: Cursor = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&resumed, &cursor);
            let x = run(&mut cursor, &cs, b);
            let y = run(&mut resumed, &cs, b);
            let z = run(&mut twin, &cs, b);
            prop_assert_eq!(&x, &y);
            prop_assert_eq!(&x, &z);
            prop_assert_eq!(&resumed, &cursor);
            prop_assert_eq!(&twin, &cursor);
            prop_assert_eq!(resumed.seq(), (a + b) as u64);
        }

        #[test]
        fn restart_resumes_on_the_grid(secs in 1u64..7200, feed in "[a-z0-9-]{1,20}", at in 0i64..4_000_000_000_000) {
            let feed = id(&feed);
            let interval = Duration::from_secs(secs);
            let after = DateTime::from_timestamp_millis(at).unwrap();
            let t = next_slot(&feed, interval, after);
            let step = secs as i64 * 1000;
            let phase = stagger(&feed, interval).as_millis() as i64;
            prop_assert!(t > after);
            prop_assert!(t <= after + TimeDelta::milliseconds(step));
            prop_assert_eq!((t.timestamp_millis() - phase).rem_euclid(step), 0);
            // The very next slot, not a catch-up: the one before is not after `after`.
            prop_assert!(t - TimeDelta::milliseconds(step) <= after);
        }
    }

    #[test]
    fn empty_candidates_pick_nothing_and_keep_the_cursor() {
        let cs = cands("a", &[2, 1]);
        let mut cursor = Cursor::default();
        run(&mut cursor, &cs, 5);
        let before = cursor.clone();
        assert_eq!(cursor.pick(&[]), None);
        assert_eq!(cursor, before);
        assert_eq!(cursor.seq(), 5);
    }

    #[test]
    fn half_share_alternates_where_plain_swrr_repeats() {
        // Plain SWRR plays a b c a | a b c a: a repeat at every period boundary.
        let cs = cands("a", &[2, 1, 1]);
        let picks = run(&mut Cursor::default(), &cs, 40);
        assert!(picks.windows(2).all(|p| p[0] != p[1]), "{picks:?}");
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 20);
    }

    #[test]
    fn heavy_slogan_repeats_only_as_needed() {
        let cs = cands("a", &[5, 1, 1]);
        let picks = run(&mut Cursor::default(), &cs, 70);
        assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 50);
        assert!(longest_gap(3, &picks) <= 7);
    }

    #[test]
    fn key_ignores_revision() {
        let mut c = cands("wenming-2026-12", &[1]).remove(0);
        assert_eq!(c.key(), "wenming-2026-12/s0");
        c.rev = 9;
        assert_eq!(c.key(), "wenming-2026-12/s0");
    }

    /// Exhaustive search over every infinite pick sequence for weights [1, 3, 5, 7]: none keeps
    /// each candidate's credit range (hence every window) within one play. A state is the
    /// credits plus each candidate's running min and max; the graph is finite, so an infinite
    /// sequence would have to revisit a state on the current path.
    #[test]
    fn window_bound_of_one_is_impossible_for_1_3_5_7() {
        type State = (Vec<i64>, Vec<i64>, Vec<i64>);
        fn dfs(ws: &[i64], s: State, seen: &mut HashSet<State>, path: &mut HashSet<State>) -> bool {
            if path.contains(&s) {
                return true;
            }
            if !seen.insert(s.clone()) {
                return false;
            }
            path.insert(s.clone());
            let total: i64 = ws.iter().sum();
            for b in 0..ws.len() {
                let c: Vec<i64> = (0..ws.len())
                    .map(|i| s.0[i] + ws[i] - if i == b { total } else { 0 })
                    .collect();
                let lo: Vec<i64> = (0..ws.len()).map(|i| s.1[i].min(c[i])).collect();
                let hi: Vec<i64> = (0..ws.len()).map(|i| s.2[i].max(c[i])).collect();
                if (0..ws.len()).all(|i| hi[i] - lo[i] <= total) && dfs(ws, (c, lo, hi), seen, path)
                {
                    return true;
                }
            }
            path.remove(&s);
            false
        }
        let feasible = |ws: &[i64]| {
            let z = vec![0; ws.len()];
            dfs(
                ws,
                (z.clone(), z.clone(), z),
                &mut HashSet::new(),
                &mut HashSet::new(),
            )
        };
        assert!(!feasible(&[1, 3, 5, 7]));
        // The search itself finds sequences where they exist.
        assert!(feasible(&[1, 1, 1, 2]));
        assert!(feasible(&[6, 6, 6, 7]));
        // And the pick stays strictly under two plays there.
        let picks = run(&mut Cursor::default(), &cands("a", &[1, 3, 5, 7]), 160);
        assert!(window_ranges(&[1, 3, 5, 7], &picks).iter().all(|&r| r < 32));
    }

    fn adset(
        name: &str,
        priority: i32,
        feeds: Option<Vec<&str>>,
        slogans: &[(&str, u32)],
    ) -> AdSet {
        AdSet {
            id: id(name),
            title: name.into(),
            rev: 3,
            valid_from: DateTime::from_timestamp(1_000, 0).unwrap(),
            valid_until: DateTime::from_timestamp(2_000, 0).unwrap(),
            feeds: feeds.map(|fs| fs.into_iter().map(id).collect()),
            priority,
            slogans: slogans
                .iter()
                .map(|&(s, w)| Slogan {
                    id: id(s),
                    text: s.into(),
                    weight: w,
                    text_by_class: BTreeMap::new(),
                })
                .collect(),
        }
    }

    fn feed(daypart: Option<&str>) -> Feed {
        Feed {
            id: id("bus-led-all"),
            select: Selector::default(),
            interval: Duration::from_secs(180),
            daypart: daypart.map(|d| Daypart {
                source: d.into(),
                schedule: cron::Schedule::from_str(d).unwrap(),
            }),
        }
    }

    fn keys(cs: &[Candidate]) -> Vec<String> {
        cs.iter().map(Candidate::key).collect()
    }

    #[test]
    fn eligible_keeps_valid_targeted_top_priority_in_order() {
        let at = DateTime::from_timestamp(1_500, 0).unwrap();
        let sets = vec![
            adset("low", 0, None, &[("x", 1)]),
            adset(
                "top-b",
                5,
                Some(vec!["bus-led-all", "taxi"]),
                &[("b1", 2), ("b2", 1)],
            ),
            adset("elsewhere", 9, Some(vec!["taxi"]), &[("t", 1)]),
            adset("top-a", 5, None, &[("a1", 3)]),
        ];
        let cs = eligible(&feed(None), &sets, at, chrono_tz::Asia::Shanghai);
        assert_eq!(keys(&cs), ["top-b/b1", "top-b/b2", "top-a/a1"]);
        assert_eq!((cs[0].rev, cs[0].weight), (3, 2));

        // Validity is half-open: the low set plays alone once the others are out of range.
        let mut later = sets.clone();
        later[1].valid_until = at;
        later[3].valid_from = at + TimeDelta::seconds(1);
        assert_eq!(
            keys(&eligible(
                &feed(None),
                &later,
                at,
                chrono_tz::Asia::Shanghai
            )),
            ["low/x"]
        );
        assert!(eligible(
            &feed(None),
            &sets,
            DateTime::from_timestamp(2_000, 0).unwrap(),
            chrono_tz::UTC
        )
        .is_empty());
    }

    #[test]
    fn eligible_respects_daypart_in_the_feeds_timezone() {
        let sets = [adset("all", 0, None, &[("x", 1)])];
        let mut set = sets[0].clone();
        set.valid_from = DateTime::from_timestamp(0, 0).unwrap();
        set.valid_until = DateTime::<Utc>::MAX_UTC;
        let sets = vec![set];
        let f = feed(Some("* * 6-22 * * *"));
        let tz = chrono_tz::Asia::Shanghai;
        // 22:30 UTC is 06:30 in Shanghai: on. 15:30 UTC is 23:30 there: off.
        let on = DateTime::parse_from_rfc3339("2026-11-27T22:30:00.500Z")
            .unwrap()
            .to_utc();
        let off = DateTime::parse_from_rfc3339("2026-11-27T15:30:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(eligible(&f, &sets, on, tz).len(), 1);
        assert!(eligible(&f, &sets, off, tz).is_empty());
        assert_eq!(eligible(&f, &sets, off, chrono_tz::UTC).len(), 1);
    }

    #[test]
    fn slots_are_exactly_one_interval_apart() {
        let feed = id("bus-led-all");
        let interval = Duration::from_secs(180);
        let mut t = DateTime::parse_from_rfc3339("2026-11-27T20:00:00+08:00")
            .unwrap()
            .to_utc();
        let mut prev = next_slot(&feed, interval, t);
        for _ in 0..100 {
            t = prev;
            let next = next_slot(&feed, interval, t);
            assert_eq!(next - prev, TimeDelta::seconds(180));
            prev = next;
        }
    }

    #[test]
    fn feeds_get_spread_offsets() {
        let interval = Duration::from_secs(180);
        let offsets: Vec<Duration> = (0..200)
            .map(|i| stagger(&id(&format!("route-K{i}")), interval))
            .collect();
        assert!(offsets.iter().all(|o| *o < interval));
        let distinct: HashSet<_> = offsets.iter().collect();
        assert!(distinct.len() >= 195, "{} distinct offsets", distinct.len());
        // Spread over the interval, not bunched: every minute of the three holds some feeds.
        for m in 0..3 {
            assert!(offsets.iter().filter(|o| o.as_secs() / 60 == m).count() > 30);
        }
        assert_eq!(stagger(&id("x"), Duration::ZERO), Duration::ZERO);
        assert_eq!(stagger(&id("x"), interval), stagger(&id("x"), interval));
    }

    #[test]
    fn restart_skips_missed_slots_without_burst() {
        let feed = id("taxi-all");
        let interval = Duration::from_secs(180);
        let start = DateTime::parse_from_rfc3339("2026-11-27T20:00:00+08:00")
            .unwrap()
            .to_utc();
        let before_crash = next_slot(&feed, interval, start);
        // Down for an hour and a bit: the next play is the next grid slot, only one.
        let restart = before_crash + TimeDelta::seconds(3_700) + TimeDelta::milliseconds(123);
        let t = next_slot(&feed, interval, restart);
        assert!(t > restart && t - restart <= TimeDelta::seconds(180));
        assert_eq!((t - before_crash).num_milliseconds() % 180_000, 0);
        // Exactly on a slot: that slot is taken as played, the next one follows.
        assert_eq!(next_slot(&feed, interval, t), t + TimeDelta::seconds(180));
    }

    #[test]
    fn expiry_uses_override_or_interval() {
        let issued = DateTime::parse_from_rfc3339("2026-11-27T20:00:00+08:00")
            .unwrap()
            .to_utc();
        let interval = Duration::from_secs(180);
        assert_eq!(
            expires_at(issued, interval, None),
            issued + TimeDelta::seconds(180)
        );
        assert_eq!(
            expires_at(issued, interval, Some(Duration::from_secs(30))),
            issued + TimeDelta::seconds(30)
        );
        assert_eq!(
            expires_at(issued, Duration::MAX, None),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
