//! The play-count answer in JSON: the query's parameters, one object a row, the total. The
//! counting is `core::audit::plays`; CSV and tables are `format`.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::export::{Column, Kind, Sheet};
use crate::core::audit::{GroupKey, PlaysQuery, PlaysRow, QueryError};
use crate::core::model::Catalog;

/// The JSON answer: the query's parameters, `rows` and `total`.
#[derive(Debug, Serialize)]
pub struct PlaysAnswer {
    pub from: Option<String>,
    pub to: Option<String>,
    pub group_by: Vec<&'static str>,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slogan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed: Option<String>,
    pub rows: Vec<serde_json::Map<String, serde_json::Value>>,
    pub total: i64,
}

/// The filters of a play-count query that name a class, display or feed must name one the
/// catalog knows, as the compliance report requires: a typo answers an error naming the
/// parameter, not zero rows that read as "never played".
pub fn check_plays_names(q: &PlaysQuery, catalog: &Catalog) -> Result<(), QueryError> {
    let unknown = |field: &'static str, what: &str, v: &str| QueryError {
        field,
        message: format!("unknown {what} {v:?}"),
    };
    if let Some(k) = &q.class {
        if !catalog.classes.contains_key(k) {
            let known: Vec<&str> = catalog.classes.keys().map(String::as_str).collect();
            return Err(QueryError {
                field: "class",
                message: format!("unknown class {k:?}; known: {}", known.join(", ")),
            });
        }
    }
    if let Some(d) = &q.device {
        if !catalog.devices.iter().any(|x| x.id.as_str() == d) {
            return Err(unknown("device", "display", d));
        }
    }
    if let Some(f) = &q.feed {
        if !catalog.feeds.iter().any(|x| x.id.as_str() == f) {
            return Err(unknown("feed", "feed", f));
        }
    }
    Ok(())
}

/// The columns of its downloads and tables, in order: the group columns, then `plays`.
pub fn plays_columns(q: &PlaysQuery) -> Vec<Column> {
    let kind = |k: &GroupKey| match k {
        GroupKey::Day => Kind::Date,
        GroupKey::Hour => Kind::Time,
        _ => Kind::Text,
    };
    let mut c: Vec<Column> = q
        .group_by
        .iter()
        .map(|k| Column::new(k.as_str(), kind(k)))
        .collect();
    c.push(Column::new("plays", Kind::Integer));
    c
}

/// How its downloads state the query; the total goes in once the rows are counted.
pub fn plays_sheet(q: &PlaysQuery) -> Sheet {
    Sheet::new("plays", &plays_columns(q), &answer(q, &[]), q.tz)
}

/// One row as the JSON answer holds it: each group column, then `plays`.
pub fn plays_record(q: &PlaysQuery, r: &PlaysRow) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for (k, v) in q.group_by.iter().zip(&r.values) {
        m.insert(k.as_str().into(), serde_json::Value::String(v.clone()));
    }
    m.insert("plays".into(), r.plays.into());
    m
}

pub fn answer(q: &PlaysQuery, rows: &[PlaysRow]) -> PlaysAnswer {
    let local = |t: &Option<DateTime<Utc>>| t.map(|t| t.with_timezone(&q.tz).to_rfc3339());
    PlaysAnswer {
        from: local(&q.from),
        to: local(&q.to),
        group_by: q.group_by.iter().map(|k| k.as_str()).collect(),
        status: q.status.as_str(),
        class: q.class.clone(),
        device: q.device.clone(),
        slogan: q.slogan.clone(),
        feed: q.feed.clone(),
        rows: rows.iter().map(|r| plays_record(q, r)).collect(),
        total: rows.iter().map(|r| r.plays).sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::audit::PlaysParams;
    use crate::reports::format::{plays_csv, plays_table};

    #[test]
    fn the_answer_names_each_group_column_and_totals_the_plays() {
        let q = PlaysQuery::parse(
            &PlaysParams {
                group_by: Some("day,slogan".into()),
                from: Some("2026-11-27".into()),
                ..Default::default()
            },
            chrono_tz::Asia::Shanghai,
        )
        .expect("query");
        let rows = vec![
            PlaysRow {
                values: vec!["2026-11-27".into(), "a".into()],
                plays: 5,
            },
            PlaysRow {
                values: vec!["2026-11-28".into(), "a".into()],
                plays: 7,
            },
        ];
        let a = answer(&q, &rows);
        assert_eq!(a.total, 12);
        assert_eq!(a.rows[0]["day"], "2026-11-27");
        assert_eq!(a.rows[1]["plays"], 7);
        assert_eq!(a.from.as_deref(), Some("2026-11-27T00:00:00+08:00"));
        assert_eq!(a.group_by, ["day", "slogan"]);
        let c = plays_csv(&q, &rows).expect("csv");
        assert_eq!(c, "day,slogan,plays\n2026-11-27,a,5\n2026-11-28,a,7\n");
        let t = plays_table(&q, &rows);
        assert_eq!(
            t,
            "day         slogan  plays\n2026-11-27  a       5\n2026-11-28  a       7\ntotal 12\n"
        );
    }
}
