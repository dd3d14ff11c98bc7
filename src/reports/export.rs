//! Report downloads: the typed columns of every report (one list each, which the CSV, the
//! XLSX and the terminal table all follow), what a download states about its query, and
//! writers that take rows one at a time and put them out to any `Write`: CSV as text, XLSX
//! through rust_xlsxwriter's constant-memory worksheets, which flush each finished row to a
//! temporary file, so neither holds the report's encoded form in memory.
//!
//! Owns: columns, cell types and the encodings of a download. Must not touch the store,
//! HTTP or the arithmetic: rows come in made (as their JSON objects, the API's own form,
//! so a cell is never worked out apart from the JSON answer).

use std::io::Write;

use chrono::{DateTime, NaiveDate};
use rust_xlsxwriter::{Format, Workbook, Worksheet, XlsxError};
use serde::Serialize;
use serde_json::Value;

/// What a column holds, and so how a spreadsheet cell is typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Integer,
    /// A fractional number (seconds).
    Number,
    /// true or false.
    Flag,
    /// A local date, `YYYY-MM-DD`.
    Date,
    /// An RFC 3339 time with the deployment's offset.
    Time,
}

/// One column of a report: its name (the JSON key and the CSV header) and its kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

impl Column {
    pub const fn new(name: &'static str, kind: Kind) -> Self {
        Column { name, kind }
    }
}

/// A download's file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Download {
    Csv,
    Xlsx,
}

/// The media type of an XLSX workbook.
pub const XLSX_MEDIA_TYPE: &str =
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

impl Download {
    pub fn content_type(self) -> &'static str {
        match self {
            Download::Csv => "text/csv; charset=utf-8",
            Download::Xlsx => XLSX_MEDIA_TYPE,
        }
    }
    pub fn extension(self) -> &'static str {
        match self {
            Download::Csv => "csv",
            Download::Xlsx => "xlsx",
        }
    }
}

/// Why a download could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing the spreadsheet: {0}")]
    Xlsx(#[from] XlsxError),
    #[error("writing the CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("writing the download: {0}")]
    Io(#[from] std::io::Error),
    #[error("the report has more than the {max} rows a worksheet holds")]
    TooManyRows { max: u32 },
}

/// A report as a download states it: its name, its columns, and its query (the answer's
/// parameters, every field but `rows` and `total`, and the deployment's zone). A total, when
/// the report has one, is known only once the rows are out: it is given to `finish`.
#[derive(Clone, Debug)]
pub struct Sheet {
    pub report: &'static str,
    pub columns: Vec<Column>,
    pub query: Vec<(String, Value)>,
}

impl Sheet {
    pub fn new(
        report: &'static str,
        columns: &[Column],
        answer: &impl Serialize,
        tz: chrono_tz::Tz,
    ) -> Self {
        let mut query: Vec<(String, Value)> = match serde_json::to_value(answer) {
            Ok(Value::Object(m)) => m
                .into_iter()
                .filter(|(k, v)| k != "rows" && k != "total" && !v.is_null())
                .collect(),
            _ => Vec::new(),
        };
        query.push(("zone".into(), Value::String(tz.name().to_owned())));
        Sheet {
            report,
            columns: columns.to_vec(),
            query,
        }
    }

    /// `civicast-<report>[-<week>][-<from date>][-<to date>].<ext>`: ASCII only, so it needs
    /// no encoding in a Content-Disposition header.
    pub fn filename(&self, d: Download) -> String {
        let get = |k: &str| {
            self.query
                .iter()
                .find(|(n, _)| n == k)
                .and_then(|(_, v)| v.as_str())
        };
        let mut name = format!("civicast-{}", self.report);
        for part in [get("week"), get("from"), get("to")].into_iter().flatten() {
            let date: String = part
                .chars()
                .take(10)
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            name.push('-');
            name.push_str(&date);
        }
        format!("{name}.{}", d.extension())
    }
}

/// A row as the JSON object of the API's answer.
pub fn record<T: Serialize>(row: &T) -> Value {
    serde_json::to_value(row).unwrap_or_default()
}

/// The text of a cell in CSV: absent as empty, text as is, numbers and flags as JSON
/// writes them.
pub(crate) fn csv_cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// CSV written a row at a time: the header line first, then one line a row.
pub struct CsvOut<W: Write> {
    w: csv::Writer<W>,
    columns: Vec<Column>,
}

impl<W: Write> CsvOut<W> {
    pub fn new(out: W, columns: &[Column]) -> Result<Self, ExportError> {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(columns.iter().map(|c| c.name))?;
        Ok(CsvOut {
            w,
            columns: columns.to_vec(),
        })
    }
    /// Rows only, for a body written in parts after a first part with the header.
    pub fn continued(out: W, columns: &[Column]) -> Result<Self, ExportError> {
        Ok(CsvOut {
            w: csv::Writer::from_writer(out),
            columns: columns.to_vec(),
        })
    }
    pub fn row(&mut self, row: &Value) -> Result<(), ExportError> {
        let cells = self.columns.iter().map(|c| csv_cell(&row[c.name]));
        self.w.write_record(cells)?;
        Ok(())
    }
    /// Flushes what is buffered and hands the sink back.
    pub fn finish(self) -> Result<W, ExportError> {
        self.w.into_inner().map_err(|e| e.into_error().into())
    }
}

impl CsvOut<Vec<u8>> {
    /// Bytes written so far (less what the CSV writer still buffers, at most 8 KiB).
    pub fn buffered(&self) -> usize {
        self.w.get_ref().len()
    }
}

/// The rows of a worksheet: 1,048,576, the header included.
const MAX_ROWS: u32 = 1_048_576;

/// An XLSX workbook written a row at a time: sheet `report` with a bold, frozen header row
/// and typed cells, and sheet `query` stating the query. Times are spreadsheet dates in
/// the deployment's zone (its wall clock, the zone named on `query`), so they sort and
/// filter as dates.
pub struct XlsxOut {
    book: Workbook,
    sheet: Sheet,
    next: u32,
    date: Format,
    time: Format,
}

impl XlsxOut {
    pub fn new(sheet: &Sheet) -> Result<Self, ExportError> {
        let mut book = Workbook::new();
        let bold = Format::new().set_bold();
        let ws = book.add_worksheet_with_constant_memory()?;
        ws.set_name("report")?;
        for (i, c) in sheet.columns.iter().enumerate() {
            let col = i as u16;
            ws.set_column_width(col, width(c))?;
            ws.write_string_with_format(0, col, c.name, &bold)?;
        }
        ws.set_freeze_panes(1, 0)?;
        Ok(XlsxOut {
            book,
            sheet: sheet.clone(),
            next: 1,
            date: Format::new().set_num_format("yyyy-mm-dd"),
            time: Format::new().set_num_format("yyyy-mm-dd hh:mm:ss"),
        })
    }

    pub fn row(&mut self, row: &Value) -> Result<(), ExportError> {
        if self.next >= MAX_ROWS {
            return Err(ExportError::TooManyRows { max: MAX_ROWS - 1 });
        }
        let r = self.next;
        let ws = self.book.worksheet_from_index(0)?;
        for (i, c) in self.sheet.columns.iter().enumerate() {
            cell(
                ws,
                r,
                i as u16,
                c.kind,
                &row[c.name],
                &self.date,
                &self.time,
            )?;
        }
        self.next += 1;
        Ok(())
    }

    /// Adds the `query` sheet (with `extra`, such as a total counted on the way) and writes
    /// the workbook to `out`. The zip is written as a stream: `out` needs no `Seek`.
    pub fn finish<W: Write + Send>(
        mut self,
        out: W,
        extra: &[(String, Value)],
    ) -> Result<(), ExportError> {
        let bold = Format::new().set_bold();
        let ws = self.book.add_worksheet();
        ws.set_name("query")?;
        ws.set_column_width(0, 14)?;
        ws.set_column_width(1, 30)?;
        ws.write_string_with_format(0, 0, "parameter", &bold)?;
        ws.write_string_with_format(0, 1, "value", &bold)?;
        ws.write_string(1, 0, "report")?;
        ws.write_string(1, 1, self.sheet.report)?;
        let all = self.sheet.query.iter().chain(extra);
        for (i, (k, v)) in all.enumerate() {
            let r = i as u32 + 2;
            ws.write_string(r, 0, k.as_str())?;
            match v {
                Value::Number(n) => ws.write_number(r, 1, n.as_f64().unwrap_or(f64::NAN))?,
                Value::Bool(b) => ws.write_boolean(r, 1, *b)?,
                Value::Array(a) => {
                    let parts: Vec<String> = a.iter().map(csv_cell).collect();
                    ws.write_string(r, 1, parts.join(","))?
                }
                other => ws.write_string(r, 1, csv_cell(other))?,
            };
        }
        self.book.save_to_writer(out)?;
        Ok(())
    }
}

fn width(c: &Column) -> f64 {
    match c.kind {
        Kind::Text => 18.0,
        Kind::Time => 20.0,
        Kind::Date => 12.0,
        Kind::Integer | Kind::Number | Kind::Flag => (c.name.len() as f64 + 2.0).max(10.0),
    }
}

/// One typed cell. A value that does not read as its column's kind (never from the
/// reports) is written as its text rather than lost.
fn cell(
    ws: &mut Worksheet,
    r: u32,
    c: u16,
    kind: Kind,
    v: &Value,
    date: &Format,
    time: &Format,
) -> Result<(), XlsxError> {
    let text = |ws: &mut Worksheet| ws.write_string(r, c, csv_cell(v)).map(|_| ());
    match (kind, v) {
        (_, Value::Null) => Ok(()),
        (Kind::Integer | Kind::Number, Value::Number(n)) => match n.as_f64() {
            Some(x) => ws.write_number(r, c, x).map(|_| ()),
            None => text(ws),
        },
        (Kind::Flag, Value::Bool(b)) => ws.write_boolean(r, c, *b).map(|_| ()),
        (Kind::Date, Value::String(s)) => match NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            Ok(d) => ws.write_datetime_with_format(r, c, d, date).map(|_| ()),
            Err(_) => text(ws),
        },
        (Kind::Time, Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => ws
                .write_datetime_with_format(r, c, t.naive_local(), time)
                .map(|_| ()),
            Err(_) => text(ws),
        },
        _ => text(ws),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COLUMNS: [Column; 4] = [
        Column::new("device", Kind::Text),
        Column::new("plays", Kind::Integer),
        Column::new("day", Kind::Date),
        Column::new("met", Kind::Flag),
    ];

    #[test]
    fn csv_rows_follow_the_columns_and_leave_absent_values_empty() {
        let mut out = CsvOut::new(Vec::new(), &COLUMNS).expect("csv");
        out.row(
            &serde_json::json!({"device": "的士-7", "plays": 3, "day": "2026-11-27", "met": true}),
        )
        .expect("row");
        out.row(&serde_json::json!({"device": "bus-1", "plays": 0, "day": null, "met": false}))
            .expect("row");
        let text = String::from_utf8(out.finish().expect("finish")).expect("utf-8");
        assert_eq!(
            text,
            "device,plays,day,met\n的士-7,3,2026-11-27,true\nbus-1,0,,false\n"
        );
    }

    #[test]
    fn a_filename_names_the_report_and_its_period_in_ascii() {
        let answer = serde_json::json!({
            "from": "2026-11-24T00:00:00+08:00", "to": "2026-12-01T00:00:00+08:00",
            "class": "公交", "rows": [], "total": 3,
        });
        let s = Sheet::new("compliance", &COLUMNS, &answer, chrono_tz::Asia::Shanghai);
        assert_eq!(
            s.filename(Download::Xlsx),
            "civicast-compliance-2026-11-24-2026-12-01.xlsx"
        );
        let keys: Vec<&str> = s.query.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["class", "from", "to", "zone"]);
        let week = Sheet::new(
            "sample",
            &COLUMNS,
            &serde_json::json!({"week": "2026-W48"}),
            chrono_tz::UTC,
        );
        assert_eq!(week.filename(Download::Csv), "civicast-sample-2026-W48.csv");
    }

    #[test]
    fn a_workbook_past_the_row_limit_is_refused_not_cut() {
        let s = Sheet::new("plays", &COLUMNS, &serde_json::json!({}), chrono_tz::UTC);
        let mut x = XlsxOut::new(&s).expect("workbook");
        x.next = MAX_ROWS;
        let e = x.row(&serde_json::json!({})).expect_err("over the limit");
        assert!(matches!(e, ExportError::TooManyRows { .. }), "{e}");
    }
}
