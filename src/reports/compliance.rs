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

/// What the fold reads of a period: each display's presence intervals and its played
/// starts (sorted), so that parts of the period can be folded without reading again.
struct Readings {
    online: HashMap<String, Vec<(i64, i64)>>,
    plays: HashMap<String, Vec<i64>>,
}

/// Reads every display, or only the `named` ones (each by key: a sample, one display).
async fn read(
    store: &Db,
    f: i64,
    t: i64,
    named: Option<&[String]>,
) -> Result<Readings, ReportError> {
    let (presence, played) = match named {
        None => (
            store.presence_between(f, t).await?,
            store.played_between(f, t, None).await?,
        ),
        Some(n) => (
            store.presence_of(f, t, n).await?,
            store.played_of(f, t, n).await?,
        ),
    };
    let mut online: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    for p in presence {
        online
            .entry(p.device)
            .or_default()
            .push((p.since_ms, p.until_ms.unwrap_or(t)));
    }
    let plays: HashMap<String, Vec<i64>> = played
        .into_iter()
        .map(|p| {
            let mut starts = p.starts;
            starts.sort_unstable();
            (p.device, starts)
        })
        .collect();
    Ok(Readings { online, plays })
}

/// The rows of `[f, t)` from readings of a period that contains it: the same as reading
/// `[f, t)` alone, since the fold clips presence and plays to the period it is given.
fn fold(
    catalog: &Catalog,
    r: &Readings,
    (f, t): (i64, i64),
    only: &(dyn Fn(&crate::core::model::Device) -> bool + Sync),
    factors: compliance::Factors,
) -> Vec<ComplianceRow> {
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
        let plays = r.plays.get(id).map(Vec::as_slice).unwrap_or(&[]);
        // Only the part's own starts: the fold would drop the others, after copying them.
        let plays = &plays[plays.partition_point(|&p| p < f)..plays.partition_point(|&p| p < t)];
        let o = compliance::evaluate(&compliance::Input {
            from_ms: f,
            to_ms: t,
            online: r.online.get(id).map(Vec::as_slice).unwrap_or(&[]),
            active,
            plays,
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
    rows
}

/// Per-display compliance in one period, from presence and `played` receipts, of the
/// displays `only` keeps. With `named`, only those displays are read (`only` should keep
/// no other: the rest would be judged without their readings).
pub async fn compliance_rows(
    store: &Db,
    catalog: &Catalog,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    only: &(dyn Fn(&crate::core::model::Device) -> bool + Sync),
    named: Option<&[String]>,
    factors: compliance::Factors,
) -> Result<Vec<ComplianceRow>, ReportError> {
    let (f, t) = (from.timestamp_millis(), to.timestamp_millis());
    let r = read(store, f, t, named).await?;
    Ok(fold(catalog, &r, (f, t), only, factors))
}

/// A checked query: its period's bounds, its class filter, its display filter.
type Checked = (DateTime<Utc>, DateTime<Utc>, Option<String>, Option<String>);

/// The period of `p` and its class and display filters, each checked against `catalog`.
fn checked(
    catalog: &Catalog,
    p: &ComplianceParams,
    now: DateTime<Utc>,
) -> Result<Checked, ReportError> {
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
    Ok((from, to, class, device))
}

pub async fn compliance_report(
    store: &Db,
    catalog: &Catalog,
    p: &ComplianceParams,
    now: DateTime<Utc>,
    factors: compliance::Factors,
) -> Result<ComplianceAnswer, ReportError> {
    Ok(
        compliance_report_parts(store, catalog, p, now, factors, |_, _| Vec::new(), 0)
            .await?
            .0,
    )
}

/// [`compliance_report`] for `p` and, for each part of its period that `parts` names (given
/// the period's bounds), the rows of its first `shown` displays for that part alone, each
/// what the report for that part's bounds answers, from one read of the period.
pub async fn compliance_report_parts(
    store: &Db,
    catalog: &Catalog,
    p: &ComplianceParams,
    now: DateTime<Utc>,
    factors: compliance::Factors,
    parts: impl FnOnce(DateTime<Utc>, DateTime<Utc>) -> Vec<(DateTime<Utc>, DateTime<Utc>)>,
    shown: usize,
) -> Result<(ComplianceAnswer, Vec<Vec<ComplianceRow>>), ReportError> {
    let tz = catalog.timezone;
    let (from, to, class, device) = checked(catalog, p, now)?;
    let only = |d: &crate::core::model::Device| {
        class.as_ref().is_none_or(|c| *d.class == **c)
            && device.as_ref().is_none_or(|x| d.id.as_str() == x)
    };
    let (f, t) = (from.timestamp_millis(), to.timestamp_millis());
    let r = read(store, f, t, None).await?;
    let rows = fold(catalog, &r, (f, t), &only, factors);
    let first: std::collections::HashSet<&str> =
        rows.iter().take(shown).map(|r| r.device.as_str()).collect();
    let each = parts(from, to)
        .into_iter()
        .map(|(pf, pt)| {
            let (pf, pt) = (
                pf.max(from).timestamp_millis(),
                pt.min(to).timestamp_millis(),
            );
            fold(
                catalog,
                &r,
                (pf, pt),
                &|d| first.contains(d.id.as_str()),
                factors,
            )
        })
        .collect();
    let answer = ComplianceAnswer {
        from: from.with_timezone(&tz).to_rfc3339(),
        to: to.with_timezone(&tz).to_rfc3339(),
        class: class.clone(),
        device: device.clone(),
        mean_factor: factors.mean,
        gap_factor: factors.gap,
        rows,
    };
    Ok((answer, each))
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
