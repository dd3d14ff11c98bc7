//! Report downloads over HTTP: which format a request asks for (`?format=` or `Accept`),
//! and the answers that carry a report as a file (Content-Disposition with its name). CSV
//! is encoded a chunk at a time as the client reads it; XLSX is built on the heavy pool
//! into an unnamed temporary file (its worksheet rows flushed to a second one as they
//! come), then streamed from disk. The console and the API's routes call the same four
//! `*_download` functions.
//!
//! Owns: format negotiation and download bodies. Must not touch SQL or the columns of a
//! report (`reports` decides them).

use std::io::{Seek, Write};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use tracing::warn;

use super::{ApiError, ApiState, Heavy};
use crate::core::audit::{PlaysParams, PlaysQuery, PlaysRow};
use crate::reports::{self, export, Column, CsvOut, Download, Sheet, XlsxOut};
use crate::store::{Db, Store};

/// Bytes of CSV encoded at a time: what one poll of the body writes.
const CHUNK: usize = 64 * 1024;

/// The format a request asks for: `None` for JSON. `?format=` (json, csv or xlsx) wins over
/// `Accept`; an unknown `format` is a 400 naming it.
pub fn wanted(headers: &HeaderMap, format: Option<&str>) -> Result<Option<Download>, ApiError> {
    match format.filter(|f| !f.is_empty()) {
        Some("csv") => return Ok(Some(Download::Csv)),
        Some("xlsx") => return Ok(Some(Download::Xlsx)),
        Some("json") => return Ok(None),
        Some(other) => {
            return Err(ApiError::field(
                StatusCode::BAD_REQUEST,
                "format",
                format!("unknown format {other:?}; use json, csv or xlsx"),
            ))
        }
        None => {}
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Ok(if accept.contains(export::XLSX_MEDIA_TYPE) {
        Some(Download::Xlsx)
    } else if accept.contains("text/csv") {
        Some(Download::Csv)
    } else {
        None
    })
}

impl From<export::ExportError> for ApiError {
    fn from(e: export::ExportError) -> Self {
        anyhow::Error::from(e).into()
    }
}

/// A file answer: its type and its name.
fn attachment(sheet: &Sheet, d: Download, body: Body) -> Response {
    let disposition = format!("attachment; filename=\"{}\"", sheet.filename(d));
    let mut r = ([(header::CONTENT_TYPE, d.content_type())], body).into_response();
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// CSV of rows the report already holds, encoded [`CHUNK`] bytes at a time as the body is
/// read: the encoded text never sits whole in memory.
fn csv_body<R: Send + Sync + 'static>(
    columns: Vec<Column>,
    rows: Vec<R>,
    json: impl Fn(&R) -> Value + Send + Sync + 'static,
) -> Body {
    let start = (0usize, true, rows, columns, json);
    let chunks =
        futures_util::stream::unfold(start, |(mut i, first, rows, cols, json)| async move {
            if i >= rows.len() && !first {
                return None;
            }
            let buf = Vec::with_capacity(CHUNK + 1024);
            let made = if first {
                CsvOut::new(buf, &cols)
            } else {
                CsvOut::continued(buf, &cols)
            };
            let encoded = made.and_then(|mut out| {
                while i < rows.len() && out.buffered() < CHUNK {
                    out.row(&json(&rows[i]))?;
                    i += 1;
                }
                out.finish()
            });
            let item = encoded.map(bytes::Bytes::from).map_err(|e| {
                warn!(error = %e, "encoding a CSV download failed");
                std::io::Error::other(e.to_string())
            });
            let end = if item.is_err() { rows.len() } else { i };
            Some((item, (end, false, rows, cols, json)))
        });
    Body::from_stream(chunks)
}

/// A finished workbook streamed from its temporary file, which is gone once closed.
fn file_body(mut file: std::fs::File) -> Result<(Body, u64), ApiError> {
    file.rewind().map_err(anyhow::Error::from)?;
    let len = file.metadata().map_err(anyhow::Error::from)?.len();
    let reader =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), CHUNK);
    Ok((Body::from_stream(reader), len))
}

fn xlsx_response(sheet: &Sheet, file: std::fs::File) -> Result<Response, ApiError> {
    let (body, len) = file_body(file)?;
    let mut r = attachment(sheet, Download::Xlsx, body);
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    Ok(r)
}

/// Writes rows one at a time into a workbook on an unnamed temporary file.
fn xlsx_file(
    sheet: &Sheet,
    rows: impl Iterator<Item = Value>,
    extra: impl FnOnce() -> Vec<(String, Value)>,
) -> Result<std::fs::File, ApiError> {
    let mut x = XlsxOut::new(sheet)?;
    for r in rows {
        x.row(&r)?;
    }
    let file = tempfile::tempfile().map_err(anyhow::Error::from)?;
    let mut w = std::io::BufWriter::new(file);
    x.finish(&mut w, &extra())?;
    w.flush().map_err(anyhow::Error::from)?;
    w.into_inner()
        .map_err(|e| anyhow::Error::from(e.into_error()).into())
}

/// A report the arithmetic has made, as a download: CSV streamed from its rows, or XLSX
/// built on the heavy pool. `json` gives a row's JSON object, as the JSON answer has it.
pub async fn rows_download<R: Send + Sync + 'static>(
    heavy: &Heavy,
    sheet: Sheet,
    rows: Vec<R>,
    json: impl Fn(&R) -> Value + Send + Sync + 'static,
    extra: Vec<(String, Value)>,
    d: Download,
) -> Result<Response, ApiError> {
    match d {
        Download::Csv => {
            let body = csv_body(sheet.columns.clone(), rows, json);
            Ok(attachment(&sheet, d, body))
        }
        Download::Xlsx => {
            let s = sheet.clone();
            let file = heavy
                .run(move || xlsx_file(&s, rows.iter().map(json), || extra))
                .await??;
            xlsx_response(&sheet, file)
        }
    }
}

fn typed_rows<R: Serialize + Send + Sync + 'static>(
    st: &ApiState,
    sheet: Sheet,
    rows: Vec<R>,
    d: Download,
) -> impl std::future::Future<Output = Result<Response, ApiError>> + '_ {
    rows_download(&st.heavy, sheet, rows, export::record, Vec::new(), d)
}

/// Play counts as a download. A query the store can stream (`PlaysQuery::streamable`)
/// never has its rows in memory: CSV lines go out as the store yields them, and XLSX rows
/// go to the worksheet's temporary file as they come; the total lands on the `query` sheet.
pub async fn plays_download(
    st: &Arc<ApiState>,
    p: &PlaysParams,
    d: Download,
) -> Result<Response, ApiError> {
    let c = st.shared.current();
    let q = PlaysQuery::parse(p, c.timezone)?;
    reports::check_plays_names(&q, &c)?;
    plays_query_download(&st.heavy, &st.store, q, d).await
}

/// Play counts of a query already parsed and checked against the catalog, as a download.
pub async fn plays_query_download(
    heavy: &Heavy,
    store: &Db,
    q: PlaysQuery,
    d: Download,
) -> Result<Response, ApiError> {
    let sheet = reports::plays_sheet(&q);
    if !q.streamable() {
        let (store, q2) = (store.clone(), q.clone());
        let rows = heavy
            .run_async(async move { store.audit_plays(&q2).await })
            .await??;
        let total: i64 = rows.iter().map(|r| r.plays).sum();
        let json = move |r: &PlaysRow| Value::Object(reports::plays_record(&q, r));
        let extra = vec![("total".to_owned(), total.into())];
        return rows_download(heavy, sheet, rows, json, extra, d).await;
    }
    match d {
        Download::Csv => Ok(attachment(&sheet, d, stream_plays_csv(store.clone(), q))),
        Download::Xlsx => {
            let (store, s) = (store.clone(), sheet.clone());
            let file = heavy
                .run(move || streamed_plays_xlsx(store, q, &s))
                .await??;
            xlsx_response(&sheet, file)
        }
    }
}

/// The store streams rows on the runtime while this blocking thread writes them; a store
/// error midway fails the download rather than leaving a short workbook that reads as whole.
fn streamed_plays_xlsx(store: Db, q: PlaysQuery, sheet: &Sheet) -> Result<std::fs::File, ApiError> {
    let rt = tokio::runtime::Handle::current();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<PlaysRow>(1024);
    let q2 = q.clone();
    let reading = rt.spawn(async move { store.stream_plays(&q2, tx).await });
    let total = std::cell::Cell::new(0i64);
    let rows = std::iter::from_fn(|| rx.blocking_recv()).map(|r| {
        total.set(total.get() + r.plays);
        Value::Object(reports::plays_record(&q, &r))
    });
    let written = xlsx_file(sheet, rows, || {
        vec![("total".to_owned(), total.get().into())]
    });
    // The reader ends once the channel is gone, whatever became of the workbook.
    drop(rx);
    let read = rt
        .block_on(reading)
        .map_err(|e| anyhow::anyhow!("streaming play counts failed: {e}"))?;
    let file = written?;
    read?;
    Ok(file)
}

/// A CSV answer written as the store yields rows: a year of rows never sits in memory. A
/// database error midway ends the body early (the client sees a truncated transfer).
pub(super) fn stream_plays_csv(store: Db, q: PlaysQuery) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<PlaysRow>(1024);
    let header = q.csv_header();
    tokio::spawn(async move {
        if let Err(e) = store.stream_plays(&q, tx).await {
            warn!(error = %e, "streaming play counts failed");
        }
    });
    let head = futures_util::stream::once(async move { Ok::<_, std::io::Error>(header) });
    let rows = futures_util::stream::unfold(rx, |mut rx| async move {
        let r = rx.recv().await?;
        Some((Ok(reports::format::plays_csv_line(&r)), rx))
    });
    Body::from_stream(futures_util::StreamExt::chain(head, rows))
}

/// The compliance report as a download.
pub async fn compliance_download(
    st: &Arc<ApiState>,
    p: reports::ComplianceParams,
    d: Download,
) -> Result<Response, ApiError> {
    let (c, now, st2) = (st.shared.current(), st.clock.now(), st.clone());
    let tz = c.timezone;
    let a = st
        .heavy
        .run_async(
            async move { reports::compliance_report(&st2.store, &c, &p, now, st2.factors).await },
        )
        .await??;
    compliance_answer_download(st, a, tz, d).await
}

/// A compliance answer in hand as a download (the route has made it already).
pub async fn compliance_answer_download(
    st: &ApiState,
    a: reports::ComplianceAnswer,
    tz: chrono_tz::Tz,
    d: Download,
) -> Result<Response, ApiError> {
    let sheet = reports::compliance_sheet(&a, tz);
    typed_rows(st, sheet, a.rows, d).await
}

/// The week's inspection sample as a download.
pub async fn sample_download(
    st: &Arc<ApiState>,
    p: reports::SampleParams,
    d: Download,
) -> Result<Response, ApiError> {
    let (c, now, st2) = (st.shared.current(), st.clock.now(), st.clone());
    let tz = c.timezone;
    let a = st
        .heavy
        .run_async(
            async move { reports::sample_report(&st2.store, &c, &p, now, st2.factors).await },
        )
        .await??;
    sample_answer_download(st, a, tz, d).await
}

pub async fn sample_answer_download(
    st: &ApiState,
    a: reports::SampleAnswer,
    tz: chrono_tz::Tz,
    d: Download,
) -> Result<Response, ApiError> {
    let sheet = reports::sample_sheet(&a, tz);
    typed_rows(st, sheet, a.rows, d).await
}

/// Planned against played as a download.
pub async fn reconcile_download(
    st: &Arc<ApiState>,
    p: reports::ReconcileParams,
    d: Download,
) -> Result<Response, ApiError> {
    let (c, now, st2) = (st.shared.current(), st.clock.now(), st.clone());
    let tz = c.timezone;
    let a = st
        .heavy
        .run_async(async move { reports::reconcile_report(&st2.store, &c, &p, now).await })
        .await??;
    reconcile_answer_download(st, a, tz, d).await
}

pub async fn reconcile_answer_download(
    st: &ApiState,
    a: reports::ReconcileAnswer,
    tz: chrono_tz::Tz,
    d: Download,
) -> Result<Response, ApiError> {
    let sheet = reports::reconcile_sheet(&a, tz);
    typed_rows(st, sheet, a.rows, d).await
}
