//! Parses and validates the files operators write (`devices/*.csv`, `devices/classes.toml`,
//! `schedules/feeds.toml`, `schedules/adsets/*.toml|*.json`) and ad sets uploaded over HTTP.
//!
//! Pure: it is handed the files' text as [`Sources`] and never reads the disk itself (the
//! shell, `crate::files`, walks the folders and decodes the files), so what is checked is
//! exactly what the shell read.
//!
//! Every problem is collected (not just the first), each naming its file, line and field, so an
//! operator can fix a whole file in one go. Nothing here panics on bad input.
//!
//! Field names in problems: top-level keys as written (`timezone`, `valid_until`), keys of a
//! named table as `class.bus_led.max_chars`, and entries of an array of tables with a 1-based
//! index: `feed[2].interval`, `slogan[1].text_by_class.taxi_top`. Lines are 1-based; for JSON
//! only syntax errors carry a line.

mod adset;
mod daypart;
mod devices;
mod feeds;
mod reload;
mod sources;
mod text;
mod tree;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::core::model::{Catalog, ClassProfile, Device, Feed, Id};
use tree::{expect_str, Sink, Table};

pub use adset::{parse_adset, parse_adset_checked, reached_classes};
pub use feeds::{MAX_INTERVAL, MIN_INTERVAL};
pub use reload::{shrinkage, Shrink};
pub use sources::{
    adset_is_json, Absent, Content, DeviceFiles, Folder, Listing, ScheduleFiles, SourceFile,
    Sources,
};
pub use text::{check_text, control_char};

/// The time zone of the feeds when `feeds.toml` names none.
pub const DEFAULT_TIMEZONE: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
/// The rotation interval of a feed that names none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(180);
/// The time on screen of a class that names none.
pub const DEFAULT_CLASS_DURATION: Duration = Duration::from_secs(15);

/// Narrowest LED matrix a class may declare (`width_px`): one half-width character.
pub const MIN_WIDTH_PX: u32 = 8;
/// Widest LED matrix a class may declare: a 16-pixel-high strip 4096 pixels long is
/// already a whole building's front.
pub const MAX_WIDTH_PX: u32 = 4096;
/// Fastest scroll a class may declare (`scroll_px_per_s`); above it no one can read.
pub const MAX_SCROLL_PX_PER_S: u32 = 1000;

/// A class's LED matrix when `classes.toml` leaves `width_px` or `scroll_px_per_s` out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedDefaults {
    pub width_px: u32,
    pub scroll_px_per_s: u32,
}

/// The defaults of the contract's classes, from the boards they name: a bus's front or side
/// board of six 32x16 modules (192 px, twelve hanzi), a taxi's roof light (64 px, four
/// hanzi), a BRT platform screen's text line (384 px) and a stop's (256 px); any other
/// class gets the bus board's. 32 px/s is two hanzi a second, the pace of a bus board.
pub fn led_defaults(class: &str) -> LedDefaults {
    let (width_px, scroll_px_per_s) = match class {
        "bus_led" => (192, 32),
        "taxi_top" => (64, 24),
        "brt_screen" => (384, 48),
        "stop_screen" => (256, 32),
        _ => (192, 32),
    };
    LedDefaults {
        width_px,
        scroll_px_per_s,
    }
}

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
    /// Each display list read (`devices/*.csv`) and how many displays it gave, in order: what
    /// a refused reload names when the inventory shrinks.
    pub display_lists: Vec<(String, usize)>,
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

/// The catalog and every problem of `sources`: `devices/*.csv` in the order given (sorted by
/// file name when read from disk), `classes.toml`, `feeds.toml`, then the ad sets in the order
/// given. Never panics on any input. A missing folder or file is an error naming it, except a
/// missing `adsets` folder, which is only a warning (ad sets may all come over HTTP).
/// Ad sets parsed here get `rev` 1. Dayparts are looked at over the year from `now`: one that
/// would never let its feed play is an error.
pub fn parse(sources: &Sources, now: DateTime<Utc>) -> Report {
    let mut problems = Vec::new();
    let mut display_lists = Vec::new();

    let (classes, devices) = match folder(&sources.devices, &mut problems) {
        Some(files) => {
            let classes = devices::load_classes(&files.classes, &mut problems);
            let devices = devices::load_devices(
                &sources.devices.name,
                &files.lists,
                classes.as_ref(),
                &mut problems,
                &mut display_lists,
            );
            (classes, devices)
        }
        None => (None, Vec::new()),
    };
    let classes_known = classes.is_some();
    let classes = classes.unwrap_or_default();

    let (timezone, feeds, adsets) = match folder(&sources.schedules, &mut problems) {
        Some(files) => {
            let feed_ctx = feeds::FeedContext {
                classes: classes_known.then_some(&classes),
                devices: &devices,
                now,
            };
            let (timezone, feeds) = feeds::load_feeds(&files.feeds, &feed_ctx, &mut problems);
            let ctx = AdSetContext {
                timezone,
                classes: &classes,
                feeds: &feeds,
                devices: &devices,
            };
            let adsets = adset::load_adsets(&files.adsets, &ctx, &mut problems);
            (timezone, feeds, adsets)
        }
        None => (DEFAULT_TIMEZONE, Vec::new(), Vec::new()),
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
    Report {
        catalog,
        problems,
        display_lists,
    }
}

/// The contents of a required folder, or an error naming it.
fn folder<'a, T>(folder: &'a Folder<T>, problems: &mut Vec<Problem>) -> Option<&'a T> {
    match &folder.found {
        Ok(contents) => Some(contents),
        Err(absent) => {
            let msg = match absent {
                Absent::NotADirectory => "is not a directory",
                Absent::NotFound => "directory not found",
            };
            problems.push(Problem::error(&folder.name, None, None, msg));
            None
        }
    }
}

/// The text of a file, or the error that it has none.
fn text_of<'a>(file: &'a SourceFile, problems: &mut Vec<Problem>) -> Option<&'a str> {
    let name = file.name.as_str();
    match &file.content {
        Content::Text(text) => return Some(text),
        Content::NotFound => problems.push(Problem::error(name, None, None, "file not found")),
        Content::Unreadable(e) => problems.push(Problem::error(
            name,
            None,
            None,
            format!("cannot read: {e}"),
        )),
        Content::NotUtf8 { line } => problems.push(Problem::error(
            name,
            Some(*line),
            None,
            "the file is not UTF-8 text (save it as UTF-8)",
        )),
    }
    None
}

/// The required `id` of an entry of an array of tables (if valid), and the line of the id
/// (else of the entry) to report the entry at.
fn entry_id(t: &mut Table, sink: &mut Sink) -> (Option<Id>, Option<usize>) {
    let mut id = None;
    let mut id_line = sink.line(&t.span);
    let field = t.field("id");
    if let Some(n) = tree::required(t, sink, "id") {
        id_line = sink.line(&n.span).or(id_line);
        if let Some(s) = expect_str(sink, n, &field) {
            match Id::parse(s) {
                Ok(v) => id = Some(v),
                Err(e) => sink.error(&n.span, &field, e.to_string()),
            }
        }
    }
    (id, id_line)
}

/// The files of a listed folder, or (with an error naming the folder) none.
fn listed<'a>(folder: &str, listing: &'a Listing, problems: &mut Vec<Problem>) -> &'a [SourceFile] {
    match listing {
        Ok(files) => files,
        Err(e) => {
            problems.push(Problem::error(
                folder,
                None,
                None,
                format!("cannot list the directory: {e}"),
            ));
            &[]
        }
    }
}
