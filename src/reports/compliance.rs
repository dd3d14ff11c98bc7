//! The compliance report: per display, online time, plays, mean interval and longest gap
//! while online, against the target of its feeds' shortest interval.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::Serialize;

use super::export::{Column, Kind, Sheet};
use super::{bounds, qerr, ReportError};
use crate::core::audit::compliance;
use crate::core::model::Catalog;
use crate::store::{ApiStore, Db};

/// Query text of `compliance`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct ComplianceParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub class: Option<String>,
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComplianceRow {
    pub device: String,
    pub class: String,
    pub online_seconds: f64,
    pub plays: u64,
    pub mean_interval_s: Option<f64>,
    pub longest_gap_s: f64,
    /// The shortest rotation interval among its feeds: the target.
    pub interval_s: f64,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComplianceAnswer {
    pub from: String,
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    pub mean_factor: f64,
    pub gap_factor: f64,
    pub rows: Vec<ComplianceRow>,
}

/// Per-display compliance in one period, from presence and `played` receipts.
pub async fn compliance_rows(
    store: &Db,
    catalog: &Catalog,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    only: &(dyn Fn(&crate::core::model::Device) -> bool + Sync),
    factors: compliance::Factors,
) -> Result<Vec<ComplianceRow>, ReportError> {
    let (f, t) = (from.timestamp_millis(), to.timestamp_millis());
    let mut online: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    for p in store.presence_between(f, t).await? {
        online
            .entry(p.device)
            .or_default()
            .push((p.since_ms, p.until_ms.unwrap_or(t)));
    }
    let plays: HashMap<String, Vec<i64>> = store
        .played_between(f, t, None)
        .await?
        .into_iter()
        .map(|p| (p.device, p.starts))
        .collect();
    let mut windows: HashMap<Vec<usize>, Vec<(i64, i64)>> = HashMap::new();
    let mut rows = Vec::new();
    for d in catalog.devices.iter().filter(|d| only(d)) {
        let feeds: Vec<usize> = catalog
            .feeds
            .iter()
            .enumerate()
            .filter(|(_, fd)| fd.select.matches(d))
            .map(|(i, _)| i)
            .collect();
        let Some(interval) = feeds.iter().map(|&i| catalog.feeds[i].interval).min() else {
            continue;
        };
        let active = windows.entry(feeds.clone()).or_insert_with(|| {
            let parts: Vec<_> = feeds
                .iter()
                .map(|&i| catalog.feeds[i].daypart.as_ref())
                .collect();
            compliance::active_windows(&parts, catalog.timezone, f, t)
        });
        let id = d.id.as_str();
        let o = compliance::evaluate(&compliance::Input {
            from_ms: f,
            to_ms: t,
            online: online.get(id).map(Vec::as_slice).unwrap_or(&[]),
            active,
            plays: plays.get(id).map(Vec::as_slice).unwrap_or(&[]),
            interval_ms: interval.as_millis() as i64,
            factors,
        });
        rows.push(ComplianceRow {
            device: id.to_owned(),
            class: d.class.to_string(),
            online_seconds: o.online_seconds,
            plays: o.plays,
            mean_interval_s: o.mean_interval_s,
            longest_gap_s: o.longest_gap_s,
            interval_s: interval.as_secs_f64(),
            met: o.met,
        });
    }
    Ok(rows)
}

pub async fn compliance_report(
    store: &Db,
    catalog: &Catalog,
    p: &ComplianceParams,
    now: DateTime<Utc>,
    factors: compliance::Factors,
) -> Result<ComplianceAnswer, ReportError> {
    let tz = catalog.timezone;
    let (from, to) = bounds(&p.from, &p.to, tz, now, ChronoDuration::days(7))?;
    let class = p.class.clone().filter(|s| !s.is_empty());
    let device = p.device.clone().filter(|s| !s.is_empty());
    if let Some(c) = &class {
        if !catalog.classes.contains_key(c) {
            let known: Vec<&str> = catalog.classes.keys().map(String::as_str).collect();
            return Err(qerr(
                "class",
                format!("unknown class {c:?}; known: {}", known.join(", ")),
            ));
        }
    }
    if let Some(d) = &device {
        if !catalog.devices.iter().any(|x| x.id.as_str() == d) {
            return Err(qerr("device", format!("unknown display {d:?}")));
        }
    }
    let only = |d: &crate::core::model::Device| {
        class.as_ref().is_none_or(|c| *d.class == **c)
            && device.as_ref().is_none_or(|x| d.id.as_str() == x)
    };
    let rows = compliance_rows(store, catalog, from, to, &only, factors).await?;
    Ok(ComplianceAnswer {
        from: from.with_timezone(&tz).to_rfc3339(),
        to: to.with_timezone(&tz).to_rfc3339(),
        class,
        device,
        mean_factor: factors.mean,
        gap_factor: factors.gap,
        rows,
    })
}

/// The columns of its downloads and tables, in order: the keys of a row's JSON.
pub const COMPLIANCE_COLUMNS: [Column; 8] = [
    Column::new("device", Kind::Text),
    Column::new("class", Kind::Text),
    Column::new("online_seconds", Kind::Number),
    Column::new("plays", Kind::Integer),
    Column::new("mean_interval_s", Kind::Number),
    Column::new("longest_gap_s", Kind::Number),
    Column::new("interval_s", Kind::Number),
    Column::new("met", Kind::Flag),
];

/// How its downloads state the query.
pub fn compliance_sheet(a: &ComplianceAnswer, tz: chrono_tz::Tz) -> Sheet {
    Sheet::new("compliance", &COMPLIANCE_COLUMNS, a, tz)
}

/// Met / not met by class, for a one-line summary.
pub fn met_by_class(rows: &[ComplianceRow]) -> BTreeMap<String, (usize, usize)> {
    let mut m: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in rows {
        let e = m.entry(r.class.clone()).or_default();
        e.0 += usize::from(r.met);
        e.1 += 1;
    }
    m
}
