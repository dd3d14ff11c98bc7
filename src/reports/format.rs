//! How report rows are written out: CSV with a header line (the HTTP API's `text/csv` and
//! `--format csv`) and aligned plain-text tables for a terminal (`--format table`).
//!
//! The columns are each report's own (`export::Column`); downloads written row by row are
//! `export`.
//!
//! Owns: presentation only. Must not touch the store or the arithmetic: rows come in made.

use serde::Serialize;

use super::export::{csv_cell, Column};
use crate::core::audit::{PlaysQuery, PlaysRow};

/// A report's rows as CSV, with a header line of the given columns taken from each row's
/// JSON form.
pub fn csv_of<T: Serialize>(columns: &[Column], rows: &[T]) -> Result<String, csv::Error> {
    let records = rows.iter().map(|r| cells(columns, r, CsvCell));
    write_csv(names(columns), records)
}

/// A report's rows as a table for people at a terminal.
pub fn table_of<T: Serialize>(columns: &[Column], rows: &[T]) -> String {
    let body = rows.iter().map(|r| cells(columns, r, TableCell)).collect();
    aligned(names(columns), body)
}

fn names(columns: &[Column]) -> Vec<String> {
    columns.iter().map(|c| c.name.to_owned()).collect()
}

/// Play counts as CSV with a header line: the group columns, then `plays`.
pub fn plays_csv(q: &PlaysQuery, rows: &[PlaysRow]) -> Result<String, csv::Error> {
    write_csv(plays_header(q), rows.iter().map(plays_record))
}

/// One play-count row as a CSV line (no header), for streaming.
pub fn plays_csv_line(row: &PlaysRow) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(plays_record(row));
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Play counts as a table, with the total on its last line.
pub fn plays_table(q: &PlaysQuery, rows: &[PlaysRow]) -> String {
    let mut out = aligned(plays_header(q), rows.iter().map(plays_record).collect());
    out += &format!("total {}\n", rows.iter().map(|r| r.plays).sum::<i64>());
    out
}

fn plays_header(q: &PlaysQuery) -> Vec<String> {
    names(&super::plays_columns(q))
}

fn plays_record(r: &PlaysRow) -> Vec<String> {
    let mut rec = r.values.clone();
    rec.push(r.plays.to_string());
    rec
}

fn write_csv(
    header: Vec<String>,
    records: impl Iterator<Item = Vec<String>>,
) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header)?;
    for rec in records {
        w.write_record(&rec)?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Columns padded to their widest cell (in characters, for Chinese text), two spaces apart.
fn aligned(header: Vec<String>, body: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &body {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
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
    let mut out = line(&header);
    for r in &body {
        out += &line(r);
    }
    out
}

/// How a JSON value is shown in a cell.
trait Cell {
    fn cell(&self, v: &serde_json::Value) -> String;
}

struct CsvCell;
impl Cell for CsvCell {
    fn cell(&self, v: &serde_json::Value) -> String {
        csv_cell(v)
    }
}

/// Absent values as `-`, fractional numbers to one decimal.
struct TableCell;
impl Cell for TableCell {
    fn cell(&self, v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::Null => "-".to_owned(),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => match n.as_f64() {
                Some(x) if n.is_f64() => format!("{x:.1}"),
                _ => n.to_string(),
            },
            other => other.to_string(),
        }
    }
}

fn cells<T: Serialize>(columns: &[Column], row: &T, how: impl Cell) -> Vec<String> {
    let v = serde_json::to_value(row).unwrap_or_default();
    columns.iter().map(|c| how.cell(&v[c.name])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reports::export::Kind;

    #[derive(Serialize)]
    struct Row {
        device: &'static str,
        plays: i64,
        mean_interval_s: Option<f64>,
    }

    const ROWS: [Row; 2] = [
        Row {
            device: "bus-K1-0421",
            plays: 480,
            mean_interval_s: Some(180.25),
        },
        Row {
            device: "的士-7",
            plays: 0,
            mean_interval_s: None,
        },
    ];
    const COLUMNS: [Column; 3] = [
        Column::new("device", Kind::Text),
        Column::new("plays", Kind::Integer),
        Column::new("mean_interval_s", Kind::Number),
    ];

    #[test]
    fn csv_has_a_header_and_empty_cells_for_absent_values() {
        let text = csv_of(&COLUMNS, &ROWS).expect("csv");
        assert_eq!(
            text,
            "device,plays,mean_interval_s\nbus-K1-0421,480,180.25\n的士-7,0,\n"
        );
    }

    #[test]
    fn tables_align_by_characters_and_round_fractions() {
        let text = table_of(&COLUMNS, &ROWS);
        assert_eq!(
            text,
            "device       plays  mean_interval_s\n\
             bus-K1-0421  480    180.2\n\
             的士-7         0      -\n"
        );
    }
}
