//! A week's inspection plan: the weekly random sample drawn per kind of unit (the same hash
//! draw as the displays' sample, so anyone with the seed, the week and the unit lists can redo
//! it), plus the units a fixed-frequency rule names, each with the visits it needs.

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::InspectConfig;
use super::units::{Kind, Units};
use crate::core::audit::sample;

/// Why a unit is in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    Sample,
    Rule,
}

/// One unit to visit in a week, `required` times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Due {
    pub unit: String,
    pub kind: Kind,
    pub company: String,
    pub display: Option<String>,
    pub reasons: Vec<Reason>,
    pub required: u32,
}

/// The plan for `week` ("2026-W49") with `seed`: sampled units in draw order per kind,
/// then the rules' units; a unit both drawn and ruled appears once, needing the larger
/// number of visits. `per_kind` overrides the configured sample size for every kind.
pub fn draw(
    units: &Units,
    cfg: &InspectConfig,
    week: &str,
    seed: &str,
    per_kind: Option<usize>,
) -> Vec<Due> {
    let mut out: Vec<Due> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for kind in Kind::ALL {
        let n = per_kind.unwrap_or_else(|| cfg.sample.get(&kind).copied().unwrap_or(0));
        let pool: Vec<(&str, &str)> = units
            .list
            .iter()
            .filter(|u| u.kind == kind)
            .map(|u| (u.id.as_str(), kind.as_str()))
            .collect();
        for (_, id) in sample::draw(&pool, week, seed, n) {
            if let Some(u) = units.get(id) {
                index.insert(u.id.clone(), out.len());
                out.push(Due {
                    unit: u.id.clone(),
                    kind,
                    company: u.company.clone(),
                    display: u.display.clone(),
                    reasons: vec![Reason::Sample],
                    required: 1,
                });
            }
        }
    }
    for u in &units.list {
        let need = cfg
            .rules
            .iter()
            .filter(|r| r.matches(u))
            .map(|r| r.per_week)
            .max();
        let Some(need) = need else { continue };
        match index.get(&u.id) {
            Some(&i) => {
                out[i].reasons.push(Reason::Rule);
                out[i].required = out[i].required.max(need);
            }
            None => {
                index.insert(u.id.clone(), out.len());
                out.push(Due {
                    unit: u.id.clone(),
                    kind: u.kind,
                    company: u.company.clone(),
                    display: u.display.clone(),
                    reasons: vec![Reason::Rule],
                    required: need,
                });
            }
        }
    }
    out
}

/// Where a planned unit stands: visited enough, still due within its week, or overdue
/// (its week is over without enough visits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    Done,
    Due,
    Overdue,
}

pub fn standing(required: u32, visits: u32, week_over: bool) -> Standing {
    if visits >= required {
        Standing::Done
    } else if week_over {
        Standing::Overdue
    } else {
        Standing::Due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::inspect::units::Unit;

    fn units() -> Units {
        let mut v = Vec::new();
        for (kind, n) in [(Kind::Bus, 100), (Kind::Taxi, 50), (Kind::Station, 4)] {
            for i in 0..n {
                let mut attrs = BTreeMap::new();
                if kind == Kind::Station && i < 2 {
                    attrs.insert("type".to_owned(), "passenger".to_owned());
                }
                v.push(Unit {
                    id: format!("{}-{i}", kind.as_str()),
                    kind,
                    company: "c".into(),
                    display: None,
                    attrs,
                });
            }
        }
        Units::new(v)
    }

    #[test]
    fn the_plan_is_stratified_reproducible_and_has_the_rules() {
        let u = units();
        let mut cfg = InspectConfig::default();
        cfg.sample.insert(Kind::Station, 1);
        cfg.sample.insert(Kind::Bus, 10);
        cfg.sample.insert(Kind::Taxi, 5);
        let a = draw(&u, &cfg, "2026-W49", "s", None);
        assert_eq!(a, draw(&u, &cfg, "2026-W49", "s", None));
        assert_ne!(a, draw(&u, &cfg, "2026-W50", "s", None));
        let count = |k: Kind| {
            a.iter()
                .filter(|d| d.kind == k && d.reasons.contains(&Reason::Sample))
                .count()
        };
        assert_eq!(
            (
                count(Kind::Bus),
                count(Kind::Taxi),
                count(Kind::Station),
                count(Kind::Stop)
            ),
            (10, 5, 1, 0)
        );
        // Both passenger stations twice, whether drawn as well or not; the others once at most.
        for id in ["station-0", "station-1"] {
            let d = a
                .iter()
                .find(|d| d.unit == id)
                .expect("ruled station planned");
            assert_eq!(d.required, 2, "{id}");
            assert!(d.reasons.contains(&Reason::Rule));
        }
        assert_eq!(
            a.iter().filter(|d| d.unit.starts_with("station")).count(),
            if a.iter()
                .any(|d| d.unit == "station-2" || d.unit == "station-3")
            {
                3
            } else {
                2
            }
        );
        assert_eq!(standing(2, 1, false), Standing::Due);
        assert_eq!(standing(2, 1, true), Standing::Overdue);
        assert_eq!(standing(2, 2, true), Standing::Done);
    }
}
