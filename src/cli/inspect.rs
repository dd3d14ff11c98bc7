//! `civicast inspect ...`: the week's plan, visits, photos, findings and scorecards through
//! the running daemon's HTTP API with the caller's token (an inspector's, a company's or an
//! auditor's), so the roles and the rules are exactly the API's.
//!
//! Owns: the flags and what is printed. Must not decide anything the API decides.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::urgent::{call, call_raw, print_error};
use crate::settings::Settings;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The daemon's HTTP API (default: http:// and CIVICAST_HTTP_LISTEN).
    #[arg(long, env = "CIVICAST_API", global = true)]
    pub api: Option<String>,
    /// An API token: an inspector's, a company's (`token create --role company --company NAME`) or an auditor's.
    #[arg(long, env = "CIVICAST_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON as is.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub cmd: InspectCmd,
}

#[derive(Subcommand, Debug)]
pub enum InspectCmd {
    /// The week's units to visit: sampled per kind, and the fixed-frequency rules' units.
    Plan {
        /// ISO week, 2026-W48 (default: this week).
        #[arg(long)]
        week: Option<String>,
        #[arg(long)]
        seed: Option<String>,
    },
    /// Record a visit: every checklist item passed or failed.
    Record {
        #[arg(long)]
        unit: String,
        /// When the visit was (RFC 3339; default now).
        #[arg(long)]
        at: Option<String>,
        /// An item that passed (repeat).
        #[arg(long = "pass")]
        passed: Vec<String>,
        /// An item that failed, with a note: `ads:board dark` (repeat).
        #[arg(long = "fail")]
        failed: Vec<String>,
        /// A stored photo of a failed item: `ads:SHA256` (repeat; see `inspect photo`).
        #[arg(long = "photo")]
        photos: Vec<String>,
    },
    /// Upload a photo (JPEG, PNG or WebP, at most 512 KiB); prints its SHA-256.
    Photo { file: PathBuf },
    /// Findings (a company's token: its own).
    Findings {
        #[arg(long)]
        state: Option<String>,
        /// Only those open past their deadline.
        #[arg(long)]
        overdue: bool,
    },
    /// One finding with its events.
    Show { id: String },
    /// The company's fix: a note, and photos by SHA-256.
    Rectify {
        id: String,
        #[arg(long)]
        note: String,
        #[arg(long = "photo")]
        photos: Vec<String>,
    },
    /// An inspector's recheck: closed, reopened, or from the display's receipts.
    Recheck {
        id: String,
        #[arg(long, group = "result")]
        closed: bool,
        #[arg(long, group = "result")]
        reopened: bool,
        #[arg(long, group = "result")]
        from_receipts: bool,
        #[arg(long)]
        note: Option<String>,
        /// A new deadline when reopened (RFC 3339).
        #[arg(long)]
        deadline: Option<String>,
    },
    /// A new deadline for a finding (RFC 3339, in the future).
    Deadline {
        id: String,
        #[arg(long)]
        deadline: String,
    },
    /// Propose findings for displays online all `--day` without meeting their cadence.
    Propose {
        #[arg(long)]
        day: String,
    },
    /// Hand a proposed finding over to its company.
    Confirm {
        id: String,
        #[arg(long)]
        deadline: Option<String>,
    },
    /// Drop a proposed finding.
    Dismiss {
        id: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// A month's scorecard per company.
    Scorecard {
        /// 2026-11 (default: this month).
        #[arg(long)]
        month: Option<String>,
        #[arg(long)]
        company: Option<String>,
    },
}

/// `--fail ads:note` or `--photo ads:sha` split at the first colon.
fn pair(flag: &str, v: &str) -> anyhow::Result<(String, String)> {
    v.split_once(':')
        .map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
        .with_context(|| format!("--{flag} {v:?}: write ITEM:TEXT"))
}

fn visit_body(
    unit: &str,
    at: &Option<String>,
    passed: &[String],
    failed: &[String],
    photos: &[String],
) -> anyhow::Result<Value> {
    let mut items: Vec<Value> = passed
        .iter()
        .map(|i| json!({"item": i, "pass": true}))
        .collect();
    for f in failed {
        let (item, note) = pair("fail", f)?;
        let mine: Vec<String> = photos
            .iter()
            .filter_map(|p| pair("photo", p).ok())
            .filter(|(i, _)| *i == item)
            .map(|(_, s)| s)
            .collect();
        items.push(json!({"item": item, "pass": false, "note": note, "photos": mine}));
    }
    let mut b = json!({"unit": unit, "items": items});
    if let Some(at) = at {
        b["at"] = json!(at);
    }
    Ok(b)
}

/// The method, path and body of a command (a photo's is sent apart).
/// `?k=v&...` of the pairs given a value.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let s: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", url_encode(v))))
        .collect();
    if s.is_empty() {
        String::new()
    } else {
        format!("?{}", s.join("&"))
    }
}

/// The request of a command that changes one finding.
fn finding_change(cmd: &InspectCmd) -> (&'static str, String, Option<Value>) {
    match cmd {
        InspectCmd::Rectify { id, note, photos } => (
            "POST",
            format!("/api/v1/findings/{id}/rectify"),
            Some(json!({"note": note, "photos": photos})),
        ),
        InspectCmd::Recheck {
            id,
            from_receipts: true,
            ..
        } => (
            "POST",
            format!("/api/v1/findings/{id}/recheck-from-receipts"),
            None,
        ),
        InspectCmd::Recheck {
            id,
            closed,
            note,
            deadline,
            ..
        } => {
            let mut b =
                json!({"result": if *closed { "closed" } else { "reopened" }, "note": note});
            if let Some(d) = deadline {
                b["deadline"] = json!(d);
            }
            ("POST", format!("/api/v1/findings/{id}/recheck"), Some(b))
        }
        InspectCmd::Deadline { id, deadline } => (
            "POST",
            format!("/api/v1/findings/{id}/deadline"),
            Some(json!({"deadline": deadline})),
        ),
        _ => ("GET", "/api/v1/findings".into(), None),
    }
}

fn request(cmd: &InspectCmd) -> anyhow::Result<(&'static str, String, Option<Value>)> {
    Ok(match cmd {
        InspectCmd::Plan { week, seed } => (
            "GET",
            format!(
                "/api/v1/inspections/plan{}",
                query(&[("week", week.as_deref()), ("seed", seed.as_deref())])
            ),
            None,
        ),
        InspectCmd::Record {
            unit,
            at,
            passed,
            failed,
            photos,
        } => (
            "POST",
            "/api/v1/inspections".into(),
            Some(visit_body(unit, at, passed, failed, photos)?),
        ),
        InspectCmd::Photo { .. } => ("POST", "/api/v1/inspections/photos".into(), None),
        InspectCmd::Findings { state, overdue } => (
            "GET",
            format!(
                "/api/v1/findings{}",
                query(&[
                    ("state", state.as_deref()),
                    ("overdue", overdue.then_some("true"))
                ])
            ),
            None,
        ),
        InspectCmd::Show { id } => ("GET", format!("/api/v1/findings/{id}"), None),
        InspectCmd::Propose { day } => (
            "POST",
            "/api/v1/findings/propose".into(),
            Some(json!({"day": day})),
        ),
        InspectCmd::Confirm { id, deadline } => (
            "POST",
            format!("/api/v1/findings/{id}/confirm"),
            Some(match deadline {
                Some(d) => json!({"deadline": d}),
                None => json!({}),
            }),
        ),
        InspectCmd::Dismiss { id, note } => (
            "POST",
            format!("/api/v1/findings/{id}/dismiss"),
            Some(json!({"note": note})),
        ),
        InspectCmd::Scorecard { month, company } => (
            "GET",
            format!(
                "/api/v1/scorecards{}",
                query(&[("month", month.as_deref()), ("company", company.as_deref())])
            ),
            None,
        ),
        _ => finding_change(cmd),
    })
}

fn url_encode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

pub async fn run(settings: &Settings, a: InspectArgs) -> anyhow::Result<ExitCode> {
    let api = a
        .api
        .clone()
        .unwrap_or_else(|| format!("http://{}", settings.http_listen));
    let Some(token) = a.token.as_deref() else {
        eprintln!("civicast: an API token is needed: --token or CIVICAST_TOKEN (`civicast token create --role inspector`)");
        return Ok(ExitCode::from(2));
    };
    if let InspectCmd::Recheck {
        closed: false,
        reopened: false,
        from_receipts: false,
        ..
    } = a.cmd
    {
        eprintln!("civicast: inspect recheck: give --closed, --reopened or --from-receipts");
        return Ok(ExitCode::from(2));
    }
    let (method, path, body) = match request(&a.cmd) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("civicast: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let (status, answer) = match &a.cmd {
        InspectCmd::Photo { file } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            call_raw(
                &api,
                method,
                &path,
                token,
                "application/octet-stream",
                &bytes,
            )
            .await?
        }
        _ => call(&api, method, &path, token, body.as_ref()).await?,
    };
    if !(200..300).contains(&status) {
        print_error(status, &answer);
        return Ok(ExitCode::FAILURE);
    }
    if a.json {
        println!("{answer:#}");
    } else {
        print_answer(&a.cmd, &answer);
    }
    Ok(ExitCode::SUCCESS)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_finding(f: &Value) {
    let overdue = if f["overdue"] == true { " OVERDUE" } else { "" };
    println!(
        "{}\t{}\t{}\t{}\t{}\tdeadline {}{overdue}",
        s(&f["id"]),
        s(&f["state"]),
        s(&f["company"]),
        s(&f["unit"]),
        s(&f["item"]),
        s(&f["deadline"])
    );
}

fn print_answer(cmd: &InspectCmd, v: &Value) {
    let rows = v["rows"].as_array().cloned().unwrap_or_default();
    match cmd {
        InspectCmd::Plan { .. } => {
            println!(
                "week {}: {} due, {} overdue, {} done",
                s(&v["week"]),
                s(&v["due"]),
                s(&v["overdue"]),
                s(&v["done"])
            );
            for r in &rows {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}/{}",
                    s(&r["week"]),
                    s(&r["status"]),
                    s(&r["kind"]),
                    s(&r["unit"]),
                    s(&r["company"]),
                    s(&r["visits"]),
                    s(&r["required"])
                );
            }
        }
        InspectCmd::Record { .. } => {
            println!("inspection {} of {} recorded", s(&v["id"]), s(&v["unit"]));
            for f in v["findings"].as_array().into_iter().flatten() {
                println!("finding {} handed to {}", s(f), s(&v["company"]));
            }
        }
        InspectCmd::Photo { .. } => println!("{}", s(&v["sha256"])),
        InspectCmd::Findings { .. } | InspectCmd::Propose { .. } => {
            rows.iter().for_each(print_finding)
        }
        InspectCmd::Scorecard { .. } => {
            println!("company\tunits\tinspections\tfindings\tfixed_on_time\toverdue\trepeat\topen\tdisplays_met");
            for r in &rows {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}/{}",
                    s(&r["company"]),
                    s(&r["units"]),
                    s(&r["inspections"]),
                    s(&r["findings"]),
                    s(&r["fixed_on_time"]),
                    s(&r["overdue"]),
                    s(&r["repeat"]),
                    s(&r["open"]),
                    s(&r["displays_met"]),
                    s(&r["displays"])
                );
            }
        }
        _ => print_finding(v),
    }
}
