//! The audit reports as a user asks for them: reads what the store holds, hands it to the
//! pure arithmetic in `core::audit`, and shapes the rows; one file per report
//! (`compliance`, `sample`, `reconcile`, `plays`), `format` for CSV and terminal tables,
//! and `export` for each report's typed columns and the CSV and XLSX downloads.
//! Shared by the HTTP API and the command line so both answer alike.
//!
//! Owns: turning report parameters into store reads and rows, and their presentation. Must
//! not touch SQL (it reads through the store's `Db`), HTTP status codes, or the arithmetic.

mod compliance;
pub mod export;
pub mod format;
mod plays;
mod reconcile;
mod sample;

pub use compliance::*;
pub use export::{Column, CsvOut, Download, ExportError, Kind, Sheet, XlsxOut};
pub use format::{csv_of, table_of};
pub use plays::*;
pub use reconcile::*;
pub use sample::*;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use chrono_tz::Tz;

use crate::core::audit::{parse_bound, QueryError};
use crate::store::StoreError;

/// Why a report could not be made: the user's input, or the store.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(crate) fn qerr(field: &'static str, message: impl Into<String>) -> ReportError {
    ReportError::Query(QueryError {
        field,
        message: message.into(),
    })
}

pub(crate) fn bounds(
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
