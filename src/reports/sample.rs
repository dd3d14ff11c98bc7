//! The weekly inspection sample: displays drawn per class for an ISO week, each with its
//! week's plays, longest gap and last receipt.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::compliance::{compliance_rows, ComplianceRow};
use super::export::{Column, Kind, Sheet};
use super::{qerr, ReportError};
use crate::core::audit::{compliance, sample};
use crate::core::model::Catalog;
use crate::core::wire::Status;
use crate::store::{ApiStore, Db};

/// Query text of `sample`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct SampleParams {
    pub week: Option<String>,
    pub seed: Option<String>,
    pub per_class: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleRow {
    pub class: String,
    pub device: String,
    pub plays: u64,
    pub longest_gap_s: f64,
    pub last_receipt_at: Option<String>,
    pub last_receipt_status: Option<&'static str>,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleAnswer {
    pub week: String,
    pub seed: String,
    pub per_class: usize,
    pub from: String,
    pub to: String,
    pub rows: Vec<SampleRow>,
}

/// `per_class` of the query: digits only (`parse` would also take a leading `+`), above
/// zero; empty or absent, the default.
fn per_class(text: Option<&str>) -> Result<usize, ReportError> {
    match text.filter(|s| !s.is_empty()) {
        Some(n) => n
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| n.parse::<usize>().ok())
            .flatten()
            .filter(|n| *n > 0)
            .ok_or_else(|| qerr("per_class", format!("{n:?} is not a positive whole number"))),
        None => Ok(sample::DEFAULT_PER_CLASS),
    }
}

pub async fn sample_report(
    store: &Db,
    catalog: &Catalog,
    p: &SampleParams,
    now: DateTime<Utc>,
    factors: compliance::Factors,
) -> Result<SampleAnswer, ReportError> {
    let tz = catalog.timezone;
    let week = match p.week.as_deref().filter(|s| !s.is_empty()) {
        Some(w) => w.to_owned(),
        None => sample::week_of(now, tz),
    };
    let monday = sample::parse_week(&week).map_err(|m| qerr("week", m))?;
    let per_class = per_class(p.per_class.as_deref())?;
    let seed = p
        .seed
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| sample::DEFAULT_SEED.to_owned());
    let (from, to) = sample::week_bounds(monday, tz);
    let all: Vec<(&str, &str)> = catalog
        .devices
        .iter()
        .map(|d| (d.id.as_str(), &*d.class))
        .collect();
    let drawn = sample::draw(&all, &week, &seed, per_class);
    let picked: std::collections::HashSet<&str> = drawn.iter().map(|(_, id)| *id).collect();
    let names: Vec<String> = drawn.iter().map(|(_, id)| (*id).to_owned()).collect();
    // Only the drawn displays are read: a few per class, not the fleet's week.
    let evidence: HashMap<String, ComplianceRow> = compliance_rows(
        store,
        catalog,
        (from, to),
        &|d| picked.contains(d.id.as_str()),
        Some(&names),
        factors,
    )
    .await?
    .into_iter()
    .map(|r| (r.device.clone(), r))
    .collect();
    let last: HashMap<String, (i64, Status)> = store
        .last_receipts(&names)
        .await?
        .into_iter()
        .map(|r| (r.device, (r.started_ms, r.status)))
        .collect();
    let rows = drawn
        .iter()
        .map(|(class, id)| {
            let e = evidence.get(*id);
            let l = last.get(*id);
            SampleRow {
                class: (*class).to_owned(),
                device: (*id).to_owned(),
                plays: e.map_or(0, |e| e.plays),
                longest_gap_s: e.map_or(0.0, |e| e.longest_gap_s),
                last_receipt_at: l.and_then(|(t, _)| {
                    DateTime::from_timestamp_millis(*t).map(|t| t.with_timezone(&tz).to_rfc3339())
                }),
                last_receipt_status: l.map(|(_, s)| s.as_str()),
                met: e.is_some_and(|e| e.met),
            }
        })
        .collect();
    Ok(SampleAnswer {
        week,
        seed,
        per_class,
        from: from.with_timezone(&tz).to_rfc3339(),
        to: to.with_timezone(&tz).to_rfc3339(),
        rows,
    })
}

/// The columns of its downloads and tables, in order: the keys of a row's JSON.
pub const SAMPLE_COLUMNS: [Column; 7] = [
    Column::new("class", Kind::Text),
    Column::new("device", Kind::Text),
    Column::new("plays", Kind::Integer),
    Column::new("longest_gap_s", Kind::Number),
    Column::new("last_receipt_at", Kind::Time),
    Column::new("last_receipt_status", Kind::Text),
    Column::new("met", Kind::Flag),
];

/// How its downloads state the query.
pub fn sample_sheet(a: &SampleAnswer, tz: chrono_tz::Tz) -> Sheet {
    Sheet::new("sample", &SAMPLE_COLUMNS, a, tz)
}
