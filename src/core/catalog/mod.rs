//! Reads and validates the files operators write (`devices/*.csv`, `devices/classes.toml`,
//! `schedules/feeds.toml`, `schedules/adsets/*.toml|*.json`) and ad sets uploaded over HTTP.
//!
//! Every problem is collected (not just the first), each naming its file, line and field, so an
//! operator can fix a whole file in one go. Nothing here panics on bad input.
//!
//! Field names in problems: top-level keys as written (`timezone`, `valid_until`), keys of a
//! named table as `class.bus_led.max_chars`, and entries of an array of tables with a 1-based
//! index: `feed[2].interval`, `slogan[1].text_by_class.taxi_top`. Lines are 1-based; for JSON
//! only syntax errors carry a line.

mod adset;
mod devices;
mod feeds;
mod text;
mod tree;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::core::model::{Catalog, ClassProfile, Device, Feed};

pub use adset::{parse_adset, parse_adset_checked};
pub use text::check_text;

/// The time zone of the feeds when `feeds.toml` names none.
pub const DEFAULT_TIMEZONE: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
/// The rotation interval of a feed that names none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(180);
/// The time on screen of a class that names none.
pub const DEFAULT_CLASS_DURATION: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file cannot be used as it is.
    Error,
    /// Worth a look, but the file is usable.
    Warning,
}

/// One thing wrong in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub severity: Severity,
    /// The path as given, e.g. `devices/fleet.csv`, or the name given for an upload.
    pub file: String,
    /// 1-based.
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn error(
        file: &str,
        line: Option<usize>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            severity: Severity::Error,
            file: file.to_owned(),
            line,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
    pub fn warning(
        file: &str,
        line: Option<usize>,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            severity: Severity::Warning,
            ..Problem::error(file, line, field, message)
        }
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    /// `devices/fleet.csv:3: field `class`: unknown class "bus_lde" (known: ...)`; warnings
    /// start with `warning: `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The outcome of loading the operators' files.
#[derive(Debug, Clone)]
pub struct Report {
    /// `Some` if and only if no problem is an error.
    pub catalog: Option<Catalog>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.problems.iter().filter(|p| p.is_error()).count()
    }
    pub fn warnings(&self) -> usize {
        self.problems.len() - self.errors()
    }
}

/// What an ad set is checked against.
#[derive(Debug, Clone, Copy)]
pub struct AdSetContext<'a> {
    pub timezone: chrono_tz::Tz,
    pub classes: &'a BTreeMap<String, ClassProfile>,
    pub feeds: &'a [Feed],
    pub devices: &'a [Device],
}

impl<'a> AdSetContext<'a> {
    /// The context of a loaded catalog.
    pub fn of(catalog: &'a Catalog) -> Self {
        AdSetContext {
            timezone: catalog.timezone,
            classes: &catalog.classes,
            feeds: &catalog.feeds,
            devices: &catalog.devices,
        }
    }
}

/// A positive duration in humantime syntax: `15s`, `3m`, `1h 30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    match humantime::parse_duration(t) {
        Ok(d) if d.is_zero() => Err(format!("duration {t:?} must be more than zero")),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "invalid duration {t:?}: {e} (write e.g. \"15s\", \"3m\" or \"1h\")"
        )),
    }
}

/// Reads `devices_dir/*.csv` (sorted by file name), `devices_dir/classes.toml`,
/// `schedules_dir/feeds.toml`, `schedules_dir/adsets/*.toml` and `*.json` (sorted by file
/// name). Never panics on any input. A missing folder or file is an error naming it, except a
/// missing `adsets` folder, which is only a warning (ad sets may all come over HTTP).
/// Ad sets read here get `rev` 1.
pub fn load_dirs(devices_dir: &Path, schedules_dir: &Path) -> Report {
    let mut problems = Vec::new();

    let (classes, devices) = if check_dir(devices_dir, &mut problems) {
        let classes = devices::load_classes(&devices_dir.join("classes.toml"), &mut problems);
        let devices = devices::load_devices(devices_dir, classes.as_ref(), &mut problems);
        (classes, devices)
    } else {
        (None, Vec::new())
    };
    let classes_known = classes.is_some();
    let classes = classes.unwrap_or_default();

    let (timezone, feeds, adsets) = if check_dir(schedules_dir, &mut problems) {
        let (timezone, feeds) = feeds::load_feeds(
            &schedules_dir.join("feeds.toml"),
            classes_known.then_some(&classes),
            &devices,
            &mut problems,
        );
        let ctx = AdSetContext {
            timezone,
            classes: &classes,
            feeds: &feeds,
            devices: &devices,
        };
        let adsets = adset::load_adsets(&schedules_dir.join("adsets"), &ctx, &mut problems);
        (timezone, feeds, adsets)
    } else {
        (DEFAULT_TIMEZONE, Vec::new(), Vec::new())
    };

    let catalog = if problems.iter().any(Problem::is_error) {
        None
    } else {
        Some(Catalog {
            timezone,
            classes,
            devices: std::sync::Arc::new(devices),
            feeds,
            adsets,
        })
    };
    Report { catalog, problems }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn check_dir(dir: &Path, problems: &mut Vec<Problem>) -> bool {
    if dir.is_dir() {
        true
    } else {
        let msg = if dir.exists() {
            "is not a directory"
        } else {
            "directory not found"
        };
        problems.push(Problem::error(&display(dir), None, None, msg));
        false
    }
}

/// Reads a file as UTF-8 text (without a byte order mark); problems name `file`.
fn read_text(path: &Path, file: &str, problems: &mut Vec<Problem>) -> Option<String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            problems.push(Problem::error(file, None, None, "file not found"));
            return None;
        }
        Err(e) => {
            problems.push(Problem::error(
                file,
                None,
                None,
                format!("cannot read: {e}"),
            ));
            return None;
        }
    };
    match String::from_utf8(bytes) {
        Ok(mut s) => {
            if s.starts_with('\u{feff}') {
                s.drain(..'\u{feff}'.len_utf8());
            }
            Some(s)
        }
        Err(e) => {
            let good = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..good].iter().filter(|b| **b == b'\n').count() + 1;
            problems.push(Problem::error(
                file,
                Some(line),
                None,
                "the file is not UTF-8 text (save it as UTF-8)",
            ));
            None
        }
    }
}

/// The files in `dir` whose extension is one of `exts` (case-insensitive), sorted by name.
fn files_with_ext(
    dir: &Path,
    exts: &[&str],
    problems: &mut Vec<Problem>,
) -> Vec<std::path::PathBuf> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            problems.push(Problem::error(
                &display(dir),
                None,
                None,
                format!("cannot list the directory: {e}"),
            ));
            return Vec::new();
        }
    };
    let mut out: Vec<_> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
        })
        .collect();
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    out
}
