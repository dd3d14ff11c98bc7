//! The audit reports as a user asks for them: reads what the store holds, hands it to the
//! pure arithmetic in `audit::{compliance, sample, reconcile}`, and shapes the rows. Shared
//! by the HTTP API and the command line so both answer alike.
//!
//! Owns: turning report parameters into store reads and rows. Must not touch SQL (it reads
//! through [`Db`]), HTTP status codes, or the arithmetic itself.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::core::audit::{compliance, parse_bound, reconcile, sample, QueryError};
use crate::core::model::Catalog;
use crate::core::wire::Status;
use crate::store::{ApiStore, Db, Store, StoreError};

/// Why a report could not be made: the user's input, or the store.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn qerr(field: &'static str, message: impl Into<String>) -> ReportError {
    ReportError::Query(QueryError {
        field,
        message: message.into(),
    })
}

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

fn bounds(
    from: &Option<String>,
    to: &Option<String>,
    tz: Tz,
    now: DateTime<Utc>,
    default_span: ChronoDuration,
) -> Result<(DateTime<Utc>, DateTime<Utc>), ReportError> {
    let to = match to.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => parse_bound("to", s, tz)?,
        None => now,
    };
    let from = match from.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => parse_bound("from", s, tz)?,
        None => to - default_span,
    };
    if from > to {
        return Err(qerr("from", "from is after to"));
    }
    Ok((from, to))
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
    let mut plays: HashMap<String, Vec<i64>> = HashMap::new();
    for p in store.played_between(f, t, None).await? {
        plays.entry(p.device).or_default().push(p.started_ms);
    }
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
    let per_class =
        match p.per_class.as_deref().filter(|s| !s.is_empty()) {
            Some(n) => n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                qerr("per_class", format!("{n:?} is not a positive whole number"))
            })?,
            None => sample::DEFAULT_PER_CLASS,
        };
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
    let evidence: HashMap<String, ComplianceRow> = compliance_rows(
        store,
        catalog,
        from,
        to,
        &|d| picked.contains(d.id.as_str()),
        factors,
    )
    .await?
    .into_iter()
    .map(|r| (r.device.clone(), r))
    .collect();
    let names: Vec<String> = drawn.iter().map(|(_, id)| (*id).to_owned()).collect();
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

/// Query text of `reconcile`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct ReconcileParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub feed: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconcileAnswer {
    pub from: String,
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed: Option<String>,
    pub rows: Vec<reconcile::Row>,
}

pub async fn reconcile_report(
    store: &Db,
    catalog: &Catalog,
    p: &ReconcileParams,
    now: DateTime<Utc>,
) -> Result<ReconcileAnswer, ReportError> {
    let tz = catalog.timezone;
    let (from, to) = bounds(&p.from, &p.to, tz, now, ChronoDuration::days(1))?;
    let feed = p.feed.clone().filter(|s| !s.is_empty());
    if let Some(f) = &feed {
        if !catalog.feeds.iter().any(|x| x.id.as_str() == f) {
            return Err(qerr("feed", format!("unknown feed {f:?}")));
        }
    }
    let (f, t) = (from.timestamp_millis(), to.timestamp_millis());
    let plays = store.feed_plays_between(f, t).await?;
    let mut spans: HashMap<i64, Vec<(i64, i64, Option<i64>)>> = HashMap::new();
    for m in store.memberships().await? {
        spans
            .entry(m.feed)
            .or_default()
            .push((m.device, m.since_ms, m.until_ms));
    }
    // A receipt may name a play issued just before `to` and arrive later: plays are the unit.
    let members: Vec<Vec<i64>> = plays
        .iter()
        .map(|p| {
            let issued = &p.issued_ms;
            spans
                .get(&p.feed_key)
                .map(|v| {
                    v.iter()
                        .filter(|(_, s, u)| *s <= *issued && u.is_none_or(|u| *issued < u))
                        .map(|(d, _, _)| *d)
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let list: Vec<reconcile::Play> = plays
        .iter()
        .zip(&members)
        .filter(|(p, _)| feed.as_ref().is_none_or(|x| *x == p.feed))
        .map(|(p, m)| reconcile::Play {
            key: p.play,
            feed: &p.feed,
            issued_ms: p.issued_ms,
            members: m,
        })
        .collect();
    let mut online: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    for p in store.presence_keys_between(f, t).await? {
        online
            .entry(p.device)
            .or_default()
            .push((p.since_ms, p.until_ms.unwrap_or(i64::MAX)));
    }
    let receipts: HashMap<(i64, i64), Status> = store
        .receipts_for_plays_between(f, t)
        .await?
        .into_iter()
        .map(|r| ((r.device, r.play), r.status))
        .collect();
    let rows = reconcile::reconcile(
        &list,
        tz,
        |d, at| {
            online
                .get(&d)
                .is_some_and(|v| v.iter().any(|(s, e)| *s <= at && at < *e))
        },
        |d, p| receipts.get(&(d, p)).copied(),
    );
    Ok(ReconcileAnswer {
        from: from.with_timezone(&tz).to_rfc3339(),
        to: to.with_timezone(&tz).to_rfc3339(),
        feed,
        rows,
    })
}

/// Rows as CSV, with a header line of the given columns taken from each row's JSON.
pub fn csv_of<T: Serialize>(columns: &[&str], rows: &[T]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(columns)?;
    for r in rows {
        let v = serde_json::to_value(r).unwrap_or_default();
        let rec: Vec<String> = columns
            .iter()
            .map(|c| match &v[*c] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        w.write_record(&rec)?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The columns of each report's CSV, in order.
pub const COMPLIANCE_COLUMNS: [&str; 8] = [
    "device",
    "class",
    "online_seconds",
    "plays",
    "mean_interval_s",
    "longest_gap_s",
    "interval_s",
    "met",
];
pub const SAMPLE_COLUMNS: [&str; 7] = [
    "class",
    "device",
    "plays",
    "longest_gap_s",
    "last_receipt_at",
    "last_receipt_status",
    "met",
];
pub const RECONCILE_COLUMNS: [&str; 12] = [
    "feed",
    "day",
    "plays",
    "targeted",
    "online",
    "played",
    "shortfall",
    "offline",
    "expired",
    "skipped",
    "failed",
    "no_receipt",
];

/// Counts of rows by a column, for tables at a terminal.
pub fn table_of<T: Serialize>(columns: &[&str], rows: &[T]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let v = serde_json::to_value(r).unwrap_or_default();
            columns
                .iter()
                .map(|c| match &v[*c] {
                    serde_json::Value::Null => "-".to_owned(),
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => match n.as_f64() {
                        Some(x) if n.is_f64() => format!("{x:.1}"),
                        _ => n.to_string(),
                    },
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in &body {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
            + "\n"
    };
    let mut out = line(columns.iter().map(|c| (*c).to_owned()).collect());
    for r in body {
        out += &line(r);
    }
    out
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
