//! Whether a receipt counts: given the play it names, whether that play was sent to the
//! reporting display, and the clock, a receipt is counted or rejected, and why.
//!
//! Owns: the receipt decision of the contract ("only what was sent", the time window,
//! retention) and the plain rows it reads and produces. Must not touch: finding the play
//! (cache or database, the daemon's business), storing, acknowledging.

use chrono::DateTime;

use crate::core::wire::{self, ParsedReceipt, Reject, Status};

/// A play as the receipt decision needs it, with the store's integer keys.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayRow {
    pub key: i64,
    pub play_id: String,
    /// The feed it went out on; None for a direct play.
    pub feed: Option<i64>,
    /// The display a direct play (`cmd` topic) went to.
    pub device: Option<i64>,
    pub slogan: i64,
    pub issued_ms: i64,
    pub expires_ms: i64,
}

/// A receipt that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiptRow {
    pub device: i64,
    pub play: i64,
    pub started_ms: i64,
    pub duration_ms: i64,
    pub status: Status,
    pub slogan: i64,
    /// 0 for a direct play.
    pub feed: i64,
}

/// What the decision is told beside the receipt and its play.
pub struct Context<'a> {
    /// The reporting display's key (from its topic).
    pub device: i64,
    /// Whether `device` was a member of `feed` at `at_ms`.
    pub member_at: &'a dyn Fn(i64, i64, i64) -> bool,
    pub now_ms: i64,
    /// Raw receipts older than this are pruned, so a late copy could no longer be matched
    /// against the stored one: receipts for plays that old are refused.
    pub retention_ms: Option<i64>,
}

/// Counts `r` for `play`, or says why not.
pub fn decide(r: &ParsedReceipt, play: &PlayRow, cx: &Context<'_>) -> Result<ReceiptRow, Reject> {
    let sent = match (play.feed, play.device) {
        (_, Some(d)) => d == cx.device,
        (Some(f), None) => (cx.member_at)(cx.device, f, play.issued_ms),
        (None, None) => false,
    };
    if !sent {
        return Err(Reject::NotSent);
    }
    let issued = DateTime::from_timestamp_millis(play.issued_ms).unwrap_or_default();
    let expires = DateTime::from_timestamp_millis(play.expires_ms).unwrap_or_default();
    if !wire::in_window(r.started_at, issued, expires) {
        return Err(Reject::OutOfWindow);
    }
    if cx
        .retention_ms
        .is_some_and(|keep| play.issued_ms < cx.now_ms - keep)
    {
        return Err(Reject::PastRetention);
    }
    Ok(ReceiptRow {
        device: cx.device,
        play: play.key,
        started_ms: r.started_at.timestamp_millis(),
        duration_ms: r.duration_ms,
        status: r.status,
        slogan: play.slogan,
        feed: play.feed.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_000_000_000;
    const MIN: i64 = 60_000;

    fn play(feed: Option<i64>, device: Option<i64>) -> PlayRow {
        PlayRow {
            key: 9,
            play_id: "p".into(),
            feed,
            device,
            slogan: 4,
            issued_ms: T0,
            expires_ms: T0 + 3 * MIN,
        }
    }

    fn receipt(started_ms: i64) -> ParsedReceipt {
        ParsedReceipt {
            play_id: "p".into(),
            started_at: DateTime::from_timestamp_millis(started_ms).expect("time"),
            duration_ms: 15_000,
            status: Status::Played,
            reason: None,
        }
    }

    /// Display 1 is in feed 7 from T0 on; nobody else is in anything.
    fn member(device: i64, feed: i64, at: i64) -> bool {
        device == 1 && feed == 7 && at >= T0
    }

    fn cx(device: i64) -> Context<'static> {
        Context {
            device,
            member_at: &member,
            now_ms: T0 + MIN,
            retention_ms: None,
        }
    }

    #[test]
    fn a_member_of_the_feed_is_counted_with_the_plays_keys() {
        let row = decide(&receipt(T0 + 2_000), &play(Some(7), None), &cx(1)).expect("counted");
        assert_eq!(
            row,
            ReceiptRow {
                device: 1,
                play: 9,
                started_ms: T0 + 2_000,
                duration_ms: 15_000,
                status: Status::Played,
                slogan: 4,
                feed: 7,
            }
        );
    }

    #[test]
    fn only_what_was_sent_counts() {
        let feed = play(Some(7), None);
        assert_eq!(decide(&receipt(T0), &feed, &cx(2)), Err(Reject::NotSent));
        let direct = play(None, Some(2));
        assert_eq!(decide(&receipt(T0), &direct, &cx(1)), Err(Reject::NotSent));
        let row = decide(&receipt(T0), &direct, &cx(2)).expect("direct play to its display");
        assert_eq!(row.feed, 0, "a direct play has no feed");
        assert_eq!(
            decide(&receipt(T0), &play(None, None), &cx(1)),
            Err(Reject::NotSent)
        );
    }

    #[test]
    fn the_window_is_two_minutes_either_side() {
        let p = play(Some(7), None);
        for ok in [T0 - 2 * MIN, T0, T0 + 5 * MIN] {
            assert!(decide(&receipt(ok), &p, &cx(1)).is_ok(), "{ok}");
        }
        for late in [T0 - 2 * MIN - 1, T0 + 5 * MIN + 1] {
            assert_eq!(decide(&receipt(late), &p, &cx(1)), Err(Reject::OutOfWindow));
        }
    }

    #[test]
    fn plays_older_than_retention_are_refused() {
        let p = play(Some(7), None);
        let keep = |days: i64| Context {
            now_ms: T0 + days * 86_400_000 + 1,
            retention_ms: Some(days * 86_400_000),
            ..cx(1)
        };
        assert_eq!(
            decide(&receipt(T0), &p, &keep(3)),
            Err(Reject::PastRetention)
        );
        let within = Context {
            now_ms: T0 + 86_400_000,
            retention_ms: Some(2 * 86_400_000),
            ..cx(1)
        };
        assert!(decide(&receipt(T0), &p, &within).is_ok());
    }
}
