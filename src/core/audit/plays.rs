//! The play-count query (`GET /api/v1/audit/plays`, `civicast audit plays`): its parameters,
//! and folding the store's hourly counts into days and hours of the deployment's zone.
//!
//! Owns: the query's parameters and the fold. Must not touch the store (it runs the SQL and
//! hands back hourly rows) or the answer's presentation (`reports`). No I/O.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::core::wire::Status;

/// A column an audit may group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupKey {
    Slogan,
    Adset,
    Device,
    Class,
    Feed,
    Day,
    Hour,
}

impl GroupKey {
    pub const ALL: [GroupKey; 7] = [
        GroupKey::Slogan,
        GroupKey::Adset,
        GroupKey::Device,
        GroupKey::Class,
        GroupKey::Feed,
        GroupKey::Day,
        GroupKey::Hour,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            GroupKey::Slogan => "slogan",
            GroupKey::Adset => "adset",
            GroupKey::Device => "device",
            GroupKey::Class => "class",
            GroupKey::Feed => "feed",
            GroupKey::Day => "day",
            GroupKey::Hour => "hour",
        }
    }
    pub fn is_time(self) -> bool {
        matches!(self, GroupKey::Day | GroupKey::Hour)
    }
}

/// A query parameter that cannot be used, named.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct QueryError {
    pub field: &'static str,
    pub message: String,
}

fn qerr(field: &'static str, message: impl Into<String>) -> QueryError {
    QueryError {
        field,
        message: message.into(),
    }
}

/// `GET /api/v1/audit/plays` and `civicast audit plays`.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaysQuery {
    /// Inclusive; None: from the beginning.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive; None: up to now.
    pub to: Option<DateTime<Utc>>,
    pub group_by: Vec<GroupKey>,
    pub class: Option<String>,
    pub device: Option<String>,
    pub slogan: Option<String>,
    pub feed: Option<String>,
    pub status: Status,
    pub tz: Tz,
}

/// The raw text of the query, as a URL or the command line gives it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct PlaysParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub group_by: Option<String>,
    pub class: Option<String>,
    pub device: Option<String>,
    pub slogan: Option<String>,
    pub feed: Option<String>,
    pub status: Option<String>,
}

/// Reads a bound: RFC 3339, or a date meaning its midnight in `tz`.
pub fn parse_bound(field: &'static str, s: &str, tz: Tz) -> Result<DateTime<Utc>, QueryError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
        qerr(
            field,
            format!("{s:?} is neither a date (2026-11-27) nor an RFC 3339 time"),
        )
    })?;
    tz.from_local_datetime(&d.and_time(NaiveTime::MIN))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| qerr(field, format!("{s:?} has no midnight in {tz}")))
}

impl PlaysQuery {
    pub fn parse(p: &PlaysParams, tz: Tz) -> Result<PlaysQuery, QueryError> {
        let from = p
            .from
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| parse_bound("from", s, tz))
            .transpose()?;
        let to =
            p.to.as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| parse_bound("to", s, tz))
                .transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(qerr("from", "from is after to"));
            }
        }
        let mut group_by = Vec::new();
        for g in p
            .group_by
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let k = GroupKey::ALL
                .into_iter()
                .find(|k| k.as_str() == g)
                .ok_or_else(|| {
                    qerr(
                        "group_by",
                        format!(
                            "unknown column {g:?}; use any of slogan, adset, device, class, feed, day, hour"
                        ),
                    )
                })?;
            if !group_by.contains(&k) {
                group_by.push(k);
            }
        }
        let status = match p.status.as_deref().filter(|s| !s.is_empty()) {
            None => Status::Played,
            Some(s) => Status::parse(s).ok_or_else(|| {
                qerr(
                    "status",
                    format!("unknown status {s:?}; use played, skipped, expired or failed"),
                )
            })?,
        };
        let opt = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok(PlaysQuery {
            from,
            to,
            group_by,
            class: opt(&p.class),
            device: opt(&p.device),
            slogan: opt(&p.slogan),
            feed: opt(&p.feed),
            status,
            tz,
        })
    }

    /// Non-time columns, in the order asked.
    pub fn plain_keys(&self) -> Vec<GroupKey> {
        self.group_by
            .iter()
            .copied()
            .filter(|k| !k.is_time())
            .collect()
    }
    pub fn needs_hour(&self) -> bool {
        self.group_by.iter().any(|k| k.is_time())
    }
    /// Whether the hourly rollup answers this query exactly: bounds on whole hours.
    pub fn rollup_ok(&self) -> bool {
        let whole =
            |t: &Option<DateTime<Utc>>| t.is_none_or(|t| t.timestamp_millis() % 3_600_000 == 0);
        whole(&self.from) && whole(&self.to)
    }
}

impl PlaysQuery {
    /// The zone's offset in whole hours when it is the same all year (no daylight saving):
    /// then a local day is a fixed group of 24 UTC hours.
    pub fn fixed_offset_hours(&self) -> Option<i64> {
        fixed_offset_hours(self.tz)
    }
}

impl PlaysQuery {
    /// Whether the store can stream the answer row by row (`Store::stream_plays`).
    pub fn streamable(&self) -> bool {
        let day_only =
            self.group_by.contains(&GroupKey::Day) && !self.group_by.contains(&GroupKey::Hour);
        !day_only || self.fixed_offset_hours().is_some()
    }
    /// The CSV header line.
    pub fn csv_header(&self) -> String {
        let mut h: Vec<&str> = self.group_by.iter().map(|k| k.as_str()).collect();
        h.push("plays");
        h.join(",") + "\n"
    }
}

/// A zone's offset in whole hours when it is the same all year (no daylight saving).
pub fn fixed_offset_hours(tz: Tz) -> Option<i64> {
    use chrono::Offset;
    let at = |y, m| {
        NaiveDate::from_ymd_opt(y, m, 1)
            .and_then(|d| d.and_hms_opt(12, 0, 0))
            .map(|t| tz.offset_from_utc_datetime(&t).fix().local_minus_utc())
    };
    let jan = at(2026, 1)?;
    (at(2026, 7)? == jan && jan % 3600 == 0).then_some(i64::from(jan / 3600))
}

/// One streamed row: its values formatted, the bucket being an hour, or a local day
/// number when days are asked without hours (see `fixed_offset_hours`).
pub fn stream_row(q: &PlaysQuery, raw: RawRow) -> PlaysRow {
    let hourly = q.group_by.contains(&GroupKey::Hour);
    let local = raw
        .hour
        .filter(|_| hourly)
        .and_then(|h| DateTime::from_timestamp(h * 3600, 0))
        .map(|t| t.with_timezone(&q.tz));
    let mut keys = raw.keys.into_iter();
    let values = q
        .group_by
        .iter()
        .map(|k| match k {
            GroupKey::Day if hourly => local.map(|t| t.format("%Y-%m-%d").to_string()),
            GroupKey::Day => raw
                .hour
                .and_then(|d| DateTime::from_timestamp(d * 86_400, 0))
                .map(|t| t.format("%Y-%m-%d").to_string()),
            GroupKey::Hour => local.map(|t| t.format("%Y-%m-%dT%H:00:00%:z").to_string()),
            _ => keys.next(),
        })
        .map(Option::unwrap_or_default)
        .collect();
    PlaysRow {
        values,
        plays: raw.plays,
    }
}

/// What the store hands back: the plain columns' values, the hour when asked, a count.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    pub keys: Vec<String>,
    pub hour: Option<i64>,
    pub plays: i64,
}

/// One row of the answer, its values in `group_by` order.
#[derive(Debug, Clone, PartialEq)]
pub struct PlaysRow {
    pub values: Vec<String>,
    pub plays: i64,
}

/// Folds hourly store rows into the answer's rows, sorted by their values.
pub fn fold(q: &PlaysQuery, raw: Vec<RawRow>) -> Vec<PlaysRow> {
    let plain = q.plain_keys();
    let mut acc: BTreeMap<Vec<String>, i64> = BTreeMap::new();
    // Formatting a time in a zone costs more than the rest of a row; an answer has few
    // distinct hours and many rows.
    let mut local_of: std::collections::HashMap<i64, (String, String)> = Default::default();
    for r in raw {
        let local = match r.hour {
            Some(h) => match local_of.entry(h) {
                std::collections::hash_map::Entry::Occupied(e) => Some(&*e.into_mut()),
                std::collections::hash_map::Entry::Vacant(e) => {
                    DateTime::from_timestamp(h * 3600, 0)
                        .map(|t| t.with_timezone(&q.tz))
                        .map(|t| {
                            &*e.insert((
                                t.format("%Y-%m-%d").to_string(),
                                t.format("%Y-%m-%dT%H:00:00%:z").to_string(),
                            ))
                        })
                }
            },
            None => None,
        };
        let mut values = Vec::with_capacity(q.group_by.len());
        let mut plain_i = 0;
        for k in &q.group_by {
            let v = match k {
                GroupKey::Day => local.map(|l| l.0.clone()),
                GroupKey::Hour => local.map(|l| l.1.clone()),
                _ => {
                    let v = r.keys.get(plain_i).cloned();
                    plain_i += 1;
                    v
                }
            };
            values.push(v.unwrap_or_default());
        }
        debug_assert_eq!(plain_i, plain.len());
        *acc.entry(values).or_default() += r.plays;
    }
    acc.into_iter()
        .map(|(values, plays)| PlaysRow { values, plays })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(p: PlaysParams) -> Result<PlaysQuery, QueryError> {
        PlaysQuery::parse(&p, chrono_tz::Asia::Shanghai)
    }

    #[test]
    fn dates_are_local_midnights() {
        let x = q(PlaysParams {
            from: Some("2026-11-27".into()),
            to: Some("2026-11-28T00:00:00+08:00".into()),
            ..Default::default()
        })
        .expect("query");
        assert_eq!(
            x.from.map(|t| t.to_rfc3339()),
            Some("2026-11-26T16:00:00+00:00".into())
        );
        assert!(x.rollup_ok());
        assert_eq!(x.status, Status::Played);
    }

    #[test]
    fn bad_parameters_are_named() {
        let e = |p| q(p).expect_err("must fail").field;
        assert_eq!(
            e(PlaysParams {
                from: Some("last tuesday".into()),
                ..Default::default()
            }),
            "from"
        );
        assert_eq!(
            e(PlaysParams {
                from: Some("2026-11-28".into()),
                to: Some("2026-11-27".into()),
                ..Default::default()
            }),
            "from"
        );
        assert_eq!(
            e(PlaysParams {
                group_by: Some("device,colour".into()),
                ..Default::default()
            }),
            "group_by"
        );
        assert_eq!(
            e(PlaysParams {
                status: Some("shown".into()),
                ..Default::default()
            }),
            "status"
        );
    }

    #[test]
    fn hours_fold_into_local_days() {
        let x = q(PlaysParams {
            group_by: Some("day,slogan".into()),
            ..Default::default()
        })
        .expect("query");
        // 2026-11-27T15:00Z is 23:00 in Shanghai; 16:00Z is the next local day.
        let h = |s: &str| DateTime::parse_from_rfc3339(s).expect("t").timestamp() / 3600;
        let raw = vec![
            RawRow {
                keys: vec!["a".into()],
                hour: Some(h("2026-11-27T15:00:00Z")),
                plays: 2,
            },
            RawRow {
                keys: vec!["a".into()],
                hour: Some(h("2026-11-27T14:00:00Z")),
                plays: 3,
            },
            RawRow {
                keys: vec!["a".into()],
                hour: Some(h("2026-11-27T16:00:00Z")),
                plays: 7,
            },
        ];
        let rows = fold(&x, raw);
        assert_eq!(
            rows,
            vec![
                PlaysRow {
                    values: vec!["2026-11-27".into(), "a".into()],
                    plays: 5
                },
                PlaysRow {
                    values: vec!["2026-11-28".into(), "a".into()],
                    plays: 7
                },
            ]
        );
    }
}
