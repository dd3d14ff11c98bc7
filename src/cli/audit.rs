//! `civicast audit plays|compliance|sample|reconcile`: the auditors' reports, in the same
//! JSON as the HTTP API, as CSV, or as a table for a terminal.
//!
//! Owns: the flags and the output format. Must not compute a number itself: the answers
//! come from `reports` (the same functions the HTTP API calls).

use std::io::Write;
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
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum Format {
    Table,
    Json,
    Csv,
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
    let out = match a.format {
        Format::Json => serde_json::to_string_pretty(&crate::reports::answer(&q, &rows))? + "\n",
        Format::Csv => crate::reports::format::plays_csv(&q, &rows)?,
        Format::Table => crate::reports::format::plays_table(&q, &rows),
    };
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

fn emit<T: serde::Serialize>(
    format: Format,
    answer: &T,
    columns: &[&str],
    rows: &[impl serde::Serialize],
) -> anyhow::Result<()> {
    let out = match format {
        Format::Json => serde_json::to_string_pretty(answer)? + "\n",
        Format::Csv => crate::reports::csv_of(columns, rows)?,
        Format::Table => crate::reports::table_of(columns, rows),
    };
    std::io::stdout().write_all(out.as_bytes())?;
    Ok(())
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
        AuditCmd::Plays(_) => unreachable!("handled by audit_plays"),
        AuditCmd::Compliance(a) => {
            let p = reports::ComplianceParams {
                from: a.from,
                to: a.to,
                class: a.class,
                device: a.device,
            };
            match reports::compliance_report(&store, &catalog, &p, now, factors).await {
                Ok(ans) => emit(a.format, &ans, &reports::COMPLIANCE_COLUMNS, &ans.rows)?,
                Err(e) => return fail(e),
            }
        }
        AuditCmd::Sample(a) => {
            let p = reports::SampleParams {
                week: a.week,
                seed: a.seed,
                per_class: a.per_class,
            };
            match reports::sample_report(&store, &catalog, &p, now, factors).await {
                Ok(ans) => emit(a.format, &ans, &reports::SAMPLE_COLUMNS, &ans.rows)?,
                Err(e) => return fail(e),
            }
        }
        AuditCmd::Reconcile(a) => {
            let p = reports::ReconcileParams {
                from: a.from,
                to: a.to,
                feed: a.feed,
            };
            match reports::reconcile_report(&store, &catalog, &p, now).await {
                Ok(ans) => emit(a.format, &ans, &reports::RECONCILE_COLUMNS, &ans.rows)?,
                Err(e) => return fail(e),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
