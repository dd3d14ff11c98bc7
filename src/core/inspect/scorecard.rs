//! A company's month for its credit record: its units, the visits to them, the findings
//! handed over that month (by item), how many were fixed on time, went overdue or repeated
//! an earlier finding on the same unit, and how many of its displays met their cadence.

use std::collections::BTreeMap;

use serde::Serialize;

use super::units::{Kind, Units};
use super::{Finding, Inspection};

/// Counts of findings, all items or one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Handed over in the month.
    pub findings: u64,
    /// Of those: closed from a fix made by the deadline.
    pub fixed_on_time: u64,
    /// Of those: past the deadline unfixed, by the month's end (or now, if sooner).
    pub overdue: u64,
    /// Of those: on a unit that had a finding handed over before.
    pub repeat: u64,
    /// Of those: not closed yet at the month's end (or now).
    pub open: u64,
}

/// One company's scorecard for one month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scorecard {
    pub company: String,
    pub units: u64,
    pub units_by_kind: BTreeMap<Kind, u64>,
    pub inspections: u64,
    pub inspected_units: u64,
    #[serde(flatten)]
    pub counts: Counts,
    pub findings_by_item: BTreeMap<String, Counts>,
    pub displays: u64,
    pub displays_met: u64,
    /// `displays_met / displays`, None without displays.
    pub compliance: Option<f64>,
}

/// What the shell hands in for one company.
pub struct Inputs<'a> {
    pub company: &'a str,
    pub units: &'a Units,
    /// Visits in the month to this company's units.
    pub inspections: &'a [Inspection],
    /// Every finding of the company, of any month (to tell repeats).
    pub findings: &'a [Finding],
    pub from_ms: i64,
    pub to_ms: i64,
    pub now_ms: i64,
    /// Whether each of its displays met its cadence over the month.
    pub displays_met: &'a [(String, bool)],
}

pub fn scorecard(i: &Inputs<'_>) -> Scorecard {
    let mut by_kind = BTreeMap::new();
    for u in i.units.list.iter().filter(|u| u.company == i.company) {
        *by_kind.entry(u.kind).or_insert(0u64) += 1;
    }
    let visits: Vec<&Inspection> = i
        .inspections
        .iter()
        .filter(|v| v.company == i.company && (i.from_ms..i.to_ms).contains(&v.at_ms))
        .collect();
    let mut inspected: Vec<&str> = visits.iter().map(|v| v.unit.as_str()).collect();
    inspected.sort_unstable();
    inspected.dedup();
    let end = i.to_ms.min(i.now_ms);
    let mut counts = Counts::default();
    let mut by_item: BTreeMap<String, Counts> = BTreeMap::new();
    for f in i.findings.iter().filter(|f| f.company == i.company) {
        let Some(opened) = f.opened_ms() else {
            continue;
        };
        if !(i.from_ms..i.to_ms).contains(&opened) {
            continue;
        }
        let repeat = i.findings.iter().any(|g| {
            g.id != f.id
                && g.unit == f.unit
                && g.opened_ms()
                    .is_some_and(|o| o < opened || (o == opened && g.id < f.id))
        });
        let add = |c: &mut Counts| {
            c.findings += 1;
            c.fixed_on_time += u64::from(f.fixed_on_time());
            c.overdue += u64::from(f.went_overdue(end));
            c.repeat += u64::from(repeat);
            c.open += u64::from(f.state_at(end) != super::FindingState::Closed);
        };
        add(&mut counts);
        add(by_item.entry(f.item.clone()).or_default());
    }
    let displays = i.displays_met.len() as u64;
    let met = i.displays_met.iter().filter(|(_, m)| *m).count() as u64;
    Scorecard {
        company: i.company.to_owned(),
        units: by_kind.values().sum(),
        units_by_kind: by_kind,
        inspections: visits.len() as u64,
        inspected_units: inspected.len() as u64,
        counts,
        findings_by_item: by_item,
        displays,
        displays_met: met,
        compliance: (displays > 0).then(|| met as f64 / displays as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::inspect::finding::EventKind;
    use crate::core::inspect::{FindingEvent, Unit};

    fn finding(
        id: &str,
        unit: &str,
        item: &str,
        opened: i64,
        deadline: i64,
        more: &[(EventKind, i64)],
    ) -> Finding {
        let ev = |seq: i64, kind: EventKind, at_ms: i64, deadline_ms: Option<i64>| FindingEvent {
            seq,
            kind,
            at_ms,
            by: if kind == EventKind::Rectified {
                "co".into()
            } else {
                "insp".into()
            },
            by_token: None,
            note: None,
            photos: vec![],
            deadline_ms,
            source: None,
        };
        let mut events = vec![ev(1, EventKind::Opened, opened, Some(deadline))];
        for (i, (k, at)) in more.iter().enumerate() {
            events.push(ev(i as i64 + 2, *k, *at, None));
        }
        Finding {
            id: id.into(),
            unit: unit.into(),
            company: "c".into(),
            item: item.into(),
            inspection: None,
            display: None,
            events,
        }
    }

    #[test]
    fn a_second_finding_on_a_unit_is_a_repeat_and_each_fix_is_timed_against_its_deadline() {
        let unit = |id: &str| Unit {
            id: id.into(),
            kind: Kind::Bus,
            company: "c".into(),
            display: None,
            attrs: BTreeMap::new(),
        };
        let units = Units::new(vec![unit("u1"), unit("u2")]);
        // Before the month on u1; in the month: u1 again (a repeat), fixed on time; u2 late.
        let findings = vec![
            finding("F0", "u1", "ads", 50, 60, &[]),
            finding(
                "F1",
                "u1",
                "cleanliness",
                150,
                300,
                &[(EventKind::Rectified, 200), (EventKind::Closed, 210)],
            ),
            finding(
                "F2",
                "u2",
                "ads",
                160,
                170,
                &[(EventKind::Rectified, 250), (EventKind::Closed, 260)],
            ),
            finding("F3", "u2", "ads", 170, 900, &[]),
        ];
        let s = scorecard(&Inputs {
            company: "c",
            units: &units,
            inspections: &[],
            findings: &findings,
            from_ms: 100,
            to_ms: 1_000,
            now_ms: 500,
            displays_met: &[],
        });
        assert_eq!(s.units, 2);
        assert_eq!(
            s.counts,
            Counts {
                findings: 3,
                fixed_on_time: 1,
                overdue: 1,
                repeat: 2,
                open: 1
            }
        );
        assert_eq!(
            s.findings_by_item["ads"],
            Counts {
                findings: 2,
                fixed_on_time: 0,
                overdue: 1,
                repeat: 1,
                open: 1
            }
        );
        assert_eq!(s.compliance, None);
    }
}
