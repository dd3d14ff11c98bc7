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
