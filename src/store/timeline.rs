//! A display's `played` start times of one UTC day in a few bytes each: the compliance
//! report needs every start of its period, and reading them as receipt rows was most of its
//! time (migrations/sqlite/0009_played_days.sql).
//!
//! The encoding: the starts sorted, each as the LEB128 varint of its distance from the one
//! before (the first from the day's midnight). Plays come minutes apart, so a start takes
//! three bytes where its receipt row takes about thirty.
//!
//! Owns: the encoding. Must not touch the database.

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// The starts of `day` (sorted or not; each within the day) as a timeline.
pub fn encode(day: i64, starts: &[i64]) -> Vec<u8> {
    let mut sorted = starts.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::with_capacity(sorted.len() * 3);
    let mut prev = day * DAY_MS;
    for s in sorted {
        // A start before the day's midnight cannot be stored here; clamping keeps the
        // delta non-negative, and the caller never passes one (it filters by day).
        let mut d = (s - prev).max(0) as u64;
        prev = prev.max(s);
        loop {
            let b = (d & 0x7f) as u8;
            d >>= 7;
            if d == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
    }
    out
}

/// The starts of a timeline of `day`, in order; None when the bytes are not a timeline.
pub fn decode(day: i64, bytes: &[u8]) -> Option<Vec<i64>> {
    let mut out = Vec::with_capacity(bytes.len() / 2);
    let mut prev = day.checked_mul(DAY_MS)?;
    let mut d: u64 = 0;
    let mut shift = 0u32;
    for &b in bytes {
        if shift > 56 {
            return None;
        }
        d |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            prev = prev.checked_add(i64::try_from(d).ok()?)?;
            out.push(prev);
            d = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
    (shift == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_day_of_plays_takes_a_few_bytes_each() {
        let day = 20_788;
        let starts: Vec<i64> = (0..480).map(|i| day * DAY_MS + i * 180_000 + 17).collect();
        let t = encode(day, &starts);
        assert!(t.len() <= 3 * starts.len(), "{} bytes", t.len());
        assert_eq!(decode(day, &t), Some(starts));
        assert_eq!(decode(day, &[0x80]), None, "a cut varint");
        assert_eq!(decode(day, &[]), Some(vec![]));
    }

    proptest! {
        #[test]
        fn starts_come_back_sorted(day in 0i64..40_000, mut offs in proptest::collection::vec(0i64..DAY_MS, 0..300)) {
            let starts: Vec<i64> = offs.iter().map(|o| day * DAY_MS + o).collect();
            let back = decode(day, &encode(day, &starts));
            offs.sort_unstable();
            let want: Vec<i64> = offs.iter().map(|o| day * DAY_MS + o).collect();
            prop_assert_eq!(back, Some(want));
        }
    }
}
