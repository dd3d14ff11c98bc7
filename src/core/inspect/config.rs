//! `devices/inspections.toml`: the checklist (each item with its default deadline), the
//! weekly sample's size per kind, the fixed-frequency rules and how many days of receipts
//! a recheck needs. Every key is optional; a missing file means the defaults.
//!
//! ```toml
//! recheck_days = 3
//! [sample]            # units drawn per kind each week
//! bus = 59
//! station = 0
//! [[item]]
//! id = "ads"
//! label = "ads present and playing"
//! deadline = "3d"
//! [[rule]]            # each passenger station at least twice a week
//! select = { kind = "station", type = "passenger" }
//! per_week = 2
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units::{Kind, Unit};
use crate::core::catalog::Problem;

/// One thing an inspector looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChecklistItem {
    pub id: String,
    pub label: String,
    /// Time the company has to fix a failure of this item.
    #[serde(serialize_with = "secs")]
    pub deadline: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// A unit matching every key of `select` is visited at least `per_week` times a week.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub select: BTreeMap<String, String>,
    pub per_week: u32,
}

impl Rule {
    pub fn matches(&self, u: &Unit) -> bool {
        self.select
            .iter()
            .all(|(k, v)| u.get(k) == Some(v.as_str()))
    }
}

/// The whole configuration, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InspectConfig {
    pub items: Vec<ChecklistItem>,
    pub rules: Vec<Rule>,
    /// Units drawn per kind each week.
    pub sample: BTreeMap<Kind, usize>,
    /// Days after a fix on which the display must meet its cadence for a recheck from
    /// receipts to close the finding.
    pub recheck_days: u32,
}

/// A sample of 59 per kind: with no failure found, 95% confidence that at most 5% of that
/// kind fail (as the displays' weekly sample).
pub const DEFAULT_PER_KIND: usize = 59;
const DAY: u64 = 86_400;

impl Default for InspectConfig {
    fn default() -> Self {
        let item = |id: &str, label: &str, days: u64| ChecklistItem {
            id: id.into(),
            label: label.into(),
            deadline: Duration::from_secs(days * DAY),
        };
        InspectConfig {
            items: vec![
                item("ads", "public-service ads present and playing", 3),
                item("atmosphere", "campaign atmosphere (posters, banners)", 7),
                item("cleanliness", "clean and tidy", 2),
            ],
            rules: vec![Rule {
                select: BTreeMap::from([
                    ("kind".into(), "station".into()),
                    ("type".into(), "passenger".into()),
                ]),
                per_week: 2,
            }],
            sample: Kind::ALL
                .into_iter()
                .map(|k| (k, DEFAULT_PER_KIND))
                .collect(),
            recheck_days: 3,
        }
    }
}

impl InspectConfig {
    pub fn item(&self, id: &str) -> Option<&ChecklistItem> {
        self.items.iter().find(|i| i.id == id)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    recheck_days: Option<u32>,
    sample: Option<BTreeMap<String, usize>>,
    item: Option<Vec<ItemFile>>,
    rule: Option<Vec<RuleFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemFile {
    id: String,
    label: Option<String>,
    deadline: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    select: BTreeMap<String, String>,
    per_week: u32,
}

/// Parses the file's text (`None`: no file, the defaults); problems name `file`.
pub fn parse_config(text: Option<&str>, file: &str) -> (InspectConfig, Vec<Problem>) {
    let mut cfg = InspectConfig::default();
    let mut problems = Vec::new();
    let Some(text) = text else {
        return (cfg, problems);
    };
    let f: File = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            problems.push(Problem::error(file, line, None, e.message().to_owned()));
            return (cfg, problems);
        }
    };
    if let Some(n) = f.recheck_days {
        if n == 0 || n > 31 {
            problems.push(Problem::error(
                file,
                None,
                Some("recheck_days"),
                "between 1 and 31 days",
            ));
        }
        cfg.recheck_days = n;
    }
    for (k, n) in f.sample.unwrap_or_default() {
        match Kind::parse(&k) {
            Some(kind) => {
                cfg.sample.insert(kind, n);
            }
            None => problems.push(Problem::error(
                file,
                None,
                Some(&format!("sample.{k}")),
                "unknown kind: use bus, taxi, stop or station",
            )),
        }
    }
    if let Some(items) = f.item {
        cfg.items = items_of(items, file, &mut problems);
    }
    if let Some(rules) = f.rule {
        cfg.rules = Vec::new();
        for (i, r) in rules.into_iter().enumerate() {
            if r.per_week == 0 || r.per_week > 50 {
                problems.push(Problem::error(
                    file,
                    None,
                    Some(&format!("rule[{}].per_week", i + 1)),
                    "between 1 and 50",
                ));
            }
            if r.select.is_empty() {
                problems.push(Problem::error(
                    file,
                    None,
                    Some(&format!("rule[{}].select", i + 1)),
                    "selects every unit; name at least one key",
                ));
            }
            cfg.rules.push(Rule {
                select: r.select,
                per_week: r.per_week,
            });
        }
    }
    (cfg, problems)
}

fn items_of(items: Vec<ItemFile>, file: &str, problems: &mut Vec<Problem>) -> Vec<ChecklistItem> {
    let mut out: Vec<ChecklistItem> = Vec::new();
    for (i, it) in items.into_iter().enumerate() {
        let field = |f: &str| format!("item[{}].{f}", i + 1);
        if crate::core::model::Id::parse(&it.id).is_err() {
            problems.push(Problem::error(
                file,
                None,
                Some(&field("id")),
                format!("{:?}: letters, digits, - and _ only", it.id),
            ));
        }
        if out.iter().any(|o| o.id == it.id) {
            problems.push(Problem::error(
                file,
                None,
                Some(&field("id")),
                format!("item {:?} is listed twice", it.id),
            ));
        }
        let deadline = match humantime::parse_duration(&it.deadline) {
            Ok(d) if d.as_secs() >= 3600 => d,
            Ok(_) => {
                problems.push(Problem::error(
                    file,
                    None,
                    Some(&field("deadline")),
                    "at least 1h",
                ));
                continue;
            }
            Err(e) => {
                problems.push(Problem::error(
                    file,
                    None,
                    Some(&field("deadline")),
                    format!("{:?}: {e} (e.g. 3d)", it.deadline),
                ));
                continue;
            }
        };
        out.push(ChecklistItem {
            label: it.label.unwrap_or_else(|| it.id.clone()),
            id: it.id,
            deadline,
        });
    }
    if out.is_empty() && problems.is_empty() {
        problems.push(Problem::error(
            file,
            None,
            Some("item"),
            "the checklist has no item",
        ));
    }
    out
}
