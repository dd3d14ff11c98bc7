//! `civicast check` and `civicast init`: validate the operators' folders, listing every
//! problem; write the first city where files are missing.
//!
//! Owns: the exit codes and what is printed. Must not judge a file itself (`files` and
//! `core::catalog` do).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::print_problems;
use crate::core::catalog::Severity;
use crate::core::inspect::Kind;
use crate::settings::Settings;

/// Lists every problem in `devices/` and `schedules/` (under `dir`, or as the settings
/// name them); exit 1 on errors.
pub fn run(settings: &Settings, dir: Option<PathBuf>) -> ExitCode {
    let (d, s) = match dir {
        Some(root) => (root.join("devices"), root.join("schedules")),
        None => (settings.devices.clone(), settings.schedules.clone()),
    };
    let report = crate::files::load_dirs(&d, &s);
    print_problems(&report.problems);
    let (mut e, mut w) = (report.errors(), report.warnings());
    // The units are checked against the displays, so only once those are readable.
    let inspect = report.catalog.as_ref().map(|c| {
        let (setup, problems) = crate::files::load_inspect(&d, &c.devices);
        print_problems(&problems);
        e += problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .count();
        w += problems
            .iter()
            .filter(|p| p.severity == Severity::Warning)
            .count();
        setup
    });
    match (&report.catalog, inspect) {
        (Some(c), Some(i)) if e == 0 => {
            println!(
                "ok: {} displays, {} classes, {} feeds, {} ad sets, {} units ({} buses, {} taxis, {} stops, {} stations) ({w} warnings)",
                c.devices.len(),
                c.classes.len(),
                c.feeds.len(),
                c.adsets.len(),
                i.units.list.len(),
                i.units.count(Kind::Bus),
                i.units.count(Kind::Taxi),
                i.units.count(Kind::Stop),
                i.units.count(Kind::Station),
            );
            ExitCode::SUCCESS
        }
        _ => {
            println!("{e} errors, {w} warnings");
            ExitCode::from(1)
        }
    }
}

/// Writes the first city's files where they are missing.
pub fn init(dir: &Path) -> anyhow::Result<ExitCode> {
    for p in crate::city::write_first_city(dir)? {
        println!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
