//! `civicast audit plays|compliance|sample|reconcile`: the auditors' reports, in the same
//! JSON as the HTTP API, as CSV or XLSX (the API's downloads, same columns), or as a table
//! for a terminal; to standard output or `--output FILE`.
//!
//! Owns: the flags and the output format. Must not compute a number itself: the answers
//! come from `reports` (the same functions the HTTP API calls).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use super::{load_catalog, open_store, EXIT_CONFIG};
use crate::core::audit::{PlaysParams, PlaysQuery};
use crate::core::model::Catalog;
use crate::settings::Settings;
use crate::store::{Db, Store};

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Play counts, grouped and filtered.
    Plays(PlaysArgs),
    /// Per-display rotation compliance: online time, plays, mean interval, longest gap.
    Compliance(ComplianceArgs),
    /// The weekly inspection sample, stratified by class, with each display's evidence.
    Sample(SampleArgs),
    /// Planned versus played per feed and day, the shortfall by reason.
    Reconcile(ReconcileArgs),
    /// Check the receipt log: against the live database (CIVICAST_DATABASE_URL), or a
    /// bundle offline (BUNDLE with --key); exits 1 naming each bad receipt.
    Verify(super::tlog::VerifyArgs),
    /// Write a bundle of a period's receipts with their leaves, proofs and the signed
    /// checkpoint, for `audit verify BUNDLE`.
    Export(super::tlog::ExportArgs),
}

#[derive(Args, Debug)]
pub struct ComplianceArgs {
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub class: Option<String>,
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write the report to this file instead of standard output (needed for xlsx at a
    /// terminal).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// ISO week, e.g. 2026-W48 (default: this week).
    #[arg(long)]
    pub week: Option<String>,
    #[arg(long)]
    pub seed: Option<String>,
    #[arg(long)]
    pub per_class: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write the report to this file instead of standard output (needed for xlsx at a
    /// terminal).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    #[arg(long)]
    pub from: Option<String>,
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub feed: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write the report to this file instead of standard output (needed for xlsx at a
    /// terminal).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum Format {
    Table,
    Json,
    Csv,
    /// A workbook: the report's sheet (typed cells, frozen header) and its query's sheet.
    Xlsx,
}

#[derive(Args, Debug)]
pub struct PlaysArgs {
    /// Comma list of slogan, adset, device, class, feed, day, hour.
    #[arg(long)]
    pub group_by: Option<String>,
    /// RFC 3339 time or a date (inclusive).
    #[arg(long)]
    pub from: Option<String>,
    /// RFC 3339 time or a date (exclusive).
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub class: Option<String>,
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub slogan: Option<String>,
    #[arg(long)]
    pub feed: Option<String>,
    /// played (default), skipped, expired or failed.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Write the report to this file instead of standard output (needed for xlsx at a
    /// terminal).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The deployment's time zone for days and hours.
    #[arg(long, default_value = "Asia/Shanghai")]
    pub timezone: String,
}

pub async fn plays(settings: &Settings, a: PlaysArgs) -> anyhow::Result<ExitCode> {
    let tz: chrono_tz::Tz = match a.timezone.parse() {
        Ok(tz) => tz,
        Err(_) => {
            eprintln!(
                "civicast: --timezone {:?} is not a time zone name",
                a.timezone
            );
            return Ok(ExitCode::from(2));
        }
    };
    let params = PlaysParams {
        from: a.from,
        to: a.to,
        group_by: a.group_by,
        class: a.class,
        device: a.device,
        slogan: a.slogan,
        feed: a.feed,
        status: a.status,
    };
    let q = match PlaysQuery::parse(&params, tz) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("civicast: --{}: {}", e.field.replace('_', "-"), e.message);
            return Ok(ExitCode::from(2));
        }
    };
    // A filter naming a class, display or feed is checked against the files, as over HTTP:
    // a typo is an error, not zero rows that read as "never played".
    if q.class.is_some() || q.device.is_some() || q.feed.is_some() {
        let catalog = match load_catalog(&settings.devices, &settings.schedules) {
            Ok(c) => c,
            Err(n) => {
                eprintln!("civicast: {n} errors in devices/ or schedules/");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        };
        if let Err(e) = crate::reports::check_plays_names(&q, &catalog) {
            eprintln!("civicast: --{}: {}", e.field.replace('_', "-"), e.message);
            return Ok(ExitCode::from(2));
        }
    }
    let store = open_store(settings).await?;
    let rows = store.audit_plays(&q).await?;
    let answer = crate::reports::answer(&q, &rows);
    if a.format == Format::Table {
        let text = crate::reports::format::plays_table(&q, &rows);
        return write_out(a.output, |w| Ok(w.write_all(text.as_bytes())?)).await;
    }
    let extra = vec![("total".to_owned(), answer.total.into())];
    let sheet = crate::reports::plays_sheet(&q);
    emit(a.format, a.output, &answer, sheet, &answer.rows, extra).await
}

/// Sends what `write` writes to `output`, or to standard output.
async fn write_out(
    output: Option<PathBuf>,
    write: impl FnOnce(&mut dyn Write) -> anyhow::Result<()>,
) -> anyhow::Result<ExitCode> {
    match output {
        Some(path) => {
            let file = std::fs::File::create(&path)
                .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
            let mut w = std::io::BufWriter::new(file);
            write(&mut w)?;
            w.flush()?;
        }
        None => {
            let mut w = std::io::stdout().lock();
            write(&mut w)?;
            w.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One report out in the format asked: JSON is the API's answer, CSV and XLSX the API's
/// downloads (`reports::export`, the columns of `sheet`), a table for a terminal.
async fn emit<T: serde::Serialize>(
    format: Format,
    output: Option<PathBuf>,
    answer: &T,
    sheet: crate::reports::Sheet,
    rows: &[impl serde::Serialize],
    extra: Vec<(String, serde_json::Value)>,
) -> anyhow::Result<ExitCode> {
    use crate::reports::export::{record, CsvOut, XlsxOut};
    match format {
        Format::Json => {
            let text = serde_json::to_string_pretty(answer)? + "\n";
            write_out(output, |w| Ok(w.write_all(text.as_bytes())?)).await
        }
        Format::Table => {
            let text = crate::reports::table_of(&sheet.columns, rows);
            write_out(output, |w| Ok(w.write_all(text.as_bytes())?)).await
        }
        Format::Csv => {
            write_out(output, |w| {
                let mut out = CsvOut::new(w, &sheet.columns)?;
                for r in rows {
                    out.row(&record(r))?;
                }
                out.finish()?;
                Ok(())
            })
            .await
        }
        Format::Xlsx => {
            if output.is_none() && std::io::stdout().is_terminal() {
                eprintln!("civicast: --format xlsx writes a file: give --output FILE");
                return Ok(ExitCode::from(2));
            }
            let rows: Vec<serde_json::Value> = rows.iter().map(record).collect();
            // A workbook is built off the async runtime, as the API builds it.
            let mut bytes = Vec::new();
            let book = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
                let mut x = XlsxOut::new(&sheet)?;
                for r in &rows {
                    x.row(r)?;
                }
                x.finish(&mut bytes, &extra)?;
                Ok(bytes)
            })
            .await??;
            write_out(output, |w| Ok(w.write_all(&book)?)).await
        }
    }
}

pub async fn report(settings: &Settings, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    let catalog = match load_catalog(&settings.devices, &settings.schedules) {
        Ok(c) => c,
        Err(n) => {
            eprintln!("civicast: {n} errors in devices/ or schedules/");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let store = open_store(settings).await?;
    report_with(store, catalog, cmd).await
}

async fn report_with(store: Db, catalog: Catalog, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    use crate::reports;
    let now = chrono::Utc::now();
    let tz = catalog.timezone;
    let factors = Default::default();
    let fail = |e: reports::ReportError| -> anyhow::Result<ExitCode> {
        match e {
            reports::ReportError::Query(q) => {
                eprintln!("civicast: --{}: {}", q.field.replace('_', "-"), q.message);
                Ok(ExitCode::from(2))
            }
            reports::ReportError::Store(s) => Err(s.into()),
        }
    };
    match cmd {
        AuditCmd::Plays(_) | AuditCmd::Verify(_) | AuditCmd::Export(_) => {
            unreachable!("handled by audit_plays and cli::tlog")
        }
        AuditCmd::Compliance(a) => {
            let p = reports::ComplianceParams {
                from: a.from,
                to: a.to,
                class: a.class,
                device: a.device,
            };
            match reports::compliance_report(&store, &catalog, &p, now, factors).await {
                Ok(ans) => {
                    let sheet = reports::compliance_sheet(&ans, tz);
                    emit(a.format, a.output, &ans, sheet, &ans.rows, Vec::new()).await
                }
                Err(e) => fail(e),
            }
        }
        AuditCmd::Sample(a) => {
            let p = reports::SampleParams {
                week: a.week,
                seed: a.seed,
                per_class: a.per_class,
            };
            match reports::sample_report(&store, &catalog, &p, now, factors).await {
                Ok(ans) => {
                    let sheet = reports::sample_sheet(&ans, tz);
                    emit(a.format, a.output, &ans, sheet, &ans.rows, Vec::new()).await
                }
                Err(e) => fail(e),
            }
        }
        AuditCmd::Reconcile(a) => {
            let p = reports::ReconcileParams {
                from: a.from,
                to: a.to,
                feed: a.feed,
            };
            match reports::reconcile_report(&store, &catalog, &p, now).await {
                Ok(ans) => {
                    let sheet = reports::reconcile_sheet(&ans, tz);
                    emit(a.format, a.output, &ans, sheet, &ans.rows, Vec::new()).await
                }
                Err(e) => fail(e),
            }
        }
    }
}
