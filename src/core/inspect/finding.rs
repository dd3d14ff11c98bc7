//! A finding's life, folded from its append-only events: opened by a failed item (or
//! proposed from receipts and confirmed by an inspector), rectified by the unit's company,
//! rechecked by another account (closed or reopened); overdue while open past its deadline.
//! [`Finding::allows`] says which event may come next; the store writes only what it allows.

use serde::Serialize;

/// What one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// Proposed from receipts: a display online a whole day without meeting its cadence.
    Proposed,
    /// Opened by an inspector's failed item, or confirmed from a proposal; carries the deadline.
    Opened,
    Dismissed,
    /// The deadline changed.
    Deadline,
    Rectified,
    Closed,
    Reopened,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::Proposed,
        EventKind::Opened,
        EventKind::Dismissed,
        EventKind::Deadline,
        EventKind::Rectified,
        EventKind::Closed,
        EventKind::Reopened,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Proposed => "proposed",
            EventKind::Opened => "opened",
            EventKind::Dismissed => "dismissed",
            EventKind::Deadline => "deadline",
            EventKind::Rectified => "rectified",
            EventKind::Closed => "closed",
            EventKind::Reopened => "reopened",
        }
    }
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One change of a finding: who, when, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FindingEvent {
    /// 1 for the first event of a finding, then one more each.
    pub seq: i64,
    pub kind: EventKind,
    pub at_ms: i64,
    pub by: String,
    pub by_token: Option<i64>,
    pub note: Option<String>,
    pub photos: Vec<String>,
    pub deadline_ms: Option<i64>,
    /// `receipts` for a recheck or proposal made from the display's receipts.
    pub source: Option<String>,
}

/// Where a finding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingState {
    Proposed,
    Open,
    Rectified,
    Closed,
    Dismissed,
}

/// A finding: what it is about (written once) and its events in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub id: String,
    pub unit: String,
    pub company: String,
    pub item: String,
    pub inspection: Option<String>,
    pub display: Option<String>,
    pub events: Vec<FindingEvent>,
}

/// Why a change of a finding is refused; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("finding {0} is {1}: it can no longer be changed")]
    Finished(String, &'static str),
    #[error("finding {0} is {1}, not {2}")]
    WrongState(String, &'static str, &'static str),
    #[error("finding {0} was rectified by {1}: another account must recheck it")]
    SameAccount(String, String),
    /// The deadline asked for, in ms; the API states it in the deployment's zone.
    #[error("deadline {} is not in the future", ms_text(*.0, chrono_tz::UTC))]
    DeadlinePast(i64),
}

/// What someone asks to do to a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Confirm { deadline_ms: i64 },
    Dismiss,
    Deadline { deadline_ms: i64 },
    Rectify,
    Close,
    Reopen { deadline_ms: Option<i64> },
}

impl FindingState {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingState::Proposed => "proposed",
            FindingState::Open => "open",
            FindingState::Rectified => "rectified",
            FindingState::Closed => "closed",
            FindingState::Dismissed => "dismissed",
        }
    }
}

impl Finding {
    pub fn state(&self) -> FindingState {
        self.state_at(i64::MAX)
    }

    /// The state from the events at or before `at_ms`.
    pub fn state_at(&self, at_ms: i64) -> FindingState {
        let mut s = FindingState::Open;
        for e in self.events.iter().filter(|e| e.at_ms <= at_ms) {
            s = match e.kind {
                EventKind::Proposed => FindingState::Proposed,
                EventKind::Opened | EventKind::Reopened => FindingState::Open,
                EventKind::Dismissed => FindingState::Dismissed,
                EventKind::Deadline => s,
                EventKind::Rectified => FindingState::Rectified,
                EventKind::Closed => FindingState::Closed,
            };
        }
        s
    }

    /// The deadline in force: the last one given.
    pub fn deadline_ms(&self) -> Option<i64> {
        self.events.iter().rev().find_map(|e| e.deadline_ms)
    }

    pub fn opened_ms(&self) -> Option<i64> {
        self.events
            .iter()
            .find(|e| e.kind == EventKind::Opened)
            .map(|e| e.at_ms)
    }

    pub fn last_rectification(&self) -> Option<&FindingEvent> {
        self.events
            .iter()
            .rev()
            .find(|e| e.kind == EventKind::Rectified)
    }

    /// Open past its deadline at `now_ms`.
    pub fn overdue(&self, now_ms: i64) -> bool {
        self.state_at(now_ms) == FindingState::Open
            && self.deadline_ms().is_some_and(|d| now_ms > d)
    }

    /// Handed over (not a proposal still waiting, nor dismissed).
    pub fn handed_over(&self) -> bool {
        self.opened_ms().is_some()
    }

    /// Went past a deadline unfixed at some time up to `at_ms`: not rectified by the
    /// deadline in force when it passed.
    pub fn went_overdue(&self, at_ms: i64) -> bool {
        let Some(d) = self.deadline_ms() else {
            return false;
        };
        if !self.handed_over() || d >= at_ms {
            return false;
        }
        self.state_at(d) == FindingState::Open
    }

    /// Closed, from a rectification made by the deadline in force at the time.
    pub fn fixed_on_time(&self) -> bool {
        if self.state() != FindingState::Closed {
            return false;
        }
        let Some(r) = self.last_rectification() else {
            return false;
        };
        let deadline = self
            .events
            .iter()
            .filter(|e| e.seq < r.seq)
            .rev()
            .find_map(|e| e.deadline_ms);
        deadline.is_none_or(|d| r.at_ms <= d)
    }

    /// The event kind `change` by `by` writes at `now_ms`, or why it is refused.
    pub fn allows(&self, change: Change, by: &str, now_ms: i64) -> Result<EventKind, Refusal> {
        let s = self.state();
        let id = || self.id.clone();
        if matches!(s, FindingState::Closed | FindingState::Dismissed) {
            return Err(Refusal::Finished(id(), s.as_str()));
        }
        let future = |d: i64| {
            if d > now_ms {
                Ok(())
            } else {
                Err(Refusal::DeadlinePast(d))
            }
        };
        let need = |want: FindingState| {
            if s == want {
                Ok(())
            } else {
                Err(Refusal::WrongState(id(), s.as_str(), want.as_str()))
            }
        };
        match change {
            Change::Confirm { deadline_ms } => {
                need(FindingState::Proposed)?;
                future(deadline_ms)?;
                Ok(EventKind::Opened)
            }
            Change::Dismiss => need(FindingState::Proposed).map(|_| EventKind::Dismissed),
            Change::Deadline { deadline_ms } => {
                if s == FindingState::Proposed {
                    return Err(Refusal::WrongState(id(), s.as_str(), "open"));
                }
                future(deadline_ms)?;
                Ok(EventKind::Deadline)
            }
            Change::Rectify => need(FindingState::Open).map(|_| EventKind::Rectified),
            Change::Close | Change::Reopen { .. } => {
                need(FindingState::Rectified)?;
                if let Some(r) = self.last_rectification() {
                    if r.by == by {
                        return Err(Refusal::SameAccount(id(), r.by.clone()));
                    }
                }
                if let Change::Reopen {
                    deadline_ms: Some(d),
                } = change
                {
                    future(d)?;
                }
                Ok(if change == Change::Close {
                    EventKind::Closed
                } else {
                    EventKind::Reopened
                })
            }
        }
    }
}

/// A time in ms as RFC 3339 (UTC), for messages.
pub fn ms_text(ms: i64, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or_else(|| ms.to_string(), |t| t.with_timezone(&tz).to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(
        seq: i64,
        kind: EventKind,
        at_ms: i64,
        by: &str,
        deadline_ms: Option<i64>,
    ) -> FindingEvent {
        FindingEvent {
            seq,
            kind,
            at_ms,
            by: by.into(),
            by_token: None,
            note: None,
            photos: vec![],
            deadline_ms,
            source: None,
        }
    }

    fn finding(events: Vec<FindingEvent>) -> Finding {
        Finding {
            id: "F1".into(),
            unit: "u".into(),
            company: "c".into(),
            item: "ads".into(),
            inspection: None,
            display: None,
            events,
        }
    }

    #[test]
    fn a_finding_goes_open_rectified_closed_and_refuses_what_does_not_fit() {
        let mut f = finding(vec![ev(1, EventKind::Opened, 100, "insp", Some(1_000))]);
        assert_eq!(f.state(), FindingState::Open);
        assert!(!f.overdue(1_000) && f.overdue(1_001));
        assert!(matches!(
            f.allows(Change::Close, "insp2", 200),
            Err(Refusal::WrongState(..))
        ));
        assert!(matches!(
            f.allows(Change::Deadline { deadline_ms: 150 }, "insp", 200),
            Err(Refusal::DeadlinePast(_))
        ));
        assert_eq!(
            f.allows(Change::Rectify, "co", 500),
            Ok(EventKind::Rectified)
        );
        f.events.push(ev(2, EventKind::Rectified, 500, "co", None));
        assert_eq!(
            f.allows(Change::Close, "co", 600),
            Err(Refusal::SameAccount("F1".into(), "co".into()))
        );
        assert_eq!(f.allows(Change::Close, "insp", 600), Ok(EventKind::Closed));
        f.events.push(ev(3, EventKind::Closed, 600, "insp", None));
        assert!(f.fixed_on_time() && !f.went_overdue(10_000));
        assert_eq!(
            f.allows(Change::Rectify, "co", 700),
            Err(Refusal::Finished("F1".into(), "closed"))
        );
    }

    #[test]
    fn a_late_fix_went_overdue_and_a_proposal_waits_for_confirmation() {
        let mut f = finding(vec![ev(1, EventKind::Opened, 100, "insp", Some(1_000))]);
        assert!(f.went_overdue(2_000) && !f.went_overdue(900));
        f.events
            .push(ev(2, EventKind::Rectified, 1_500, "co", None));
        f.events.push(ev(3, EventKind::Closed, 1_600, "insp", None));
        assert!(!f.fixed_on_time() && f.went_overdue(2_000));
        let p = finding(vec![ev(1, EventKind::Proposed, 100, "receipts", None)]);
        assert!(!p.handed_over() && !p.overdue(i64::MAX));
        assert!(matches!(
            p.allows(Change::Rectify, "co", 200),
            Err(Refusal::WrongState(..))
        ));
        assert_eq!(
            p.allows(Change::Confirm { deadline_ms: 300 }, "insp", 200),
            Ok(EventKind::Opened)
        );
    }
}
