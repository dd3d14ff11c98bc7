//! `devices/classes.toml` and `devices/*.csv`: display classes and the displays, parsed from
//! the text the shell read. Pure: it never opens a file; names come as given.

use std::collections::{BTreeMap, HashMap};

use crate::core::model::{Attrs, Charset, ClassProfile, Device, Id, Interner};

use super::tree::{self, expect_int, expect_str, known_list, Kind, Sink, Table};
use super::{
    led_defaults, listed, parse_duration, text_of, Listing, Problem, SourceFile,
    DEFAULT_CLASS_DURATION, MAX_SCROLL_PX_PER_S, MAX_WIDTH_PX, MIN_WIDTH_PX,
};

/// `None` when the file is missing or not TOML at all (so other files do not report every
/// class as unknown). A class with a bad field is still returned, under its name.
pub(crate) fn load_classes(
    file: &SourceFile,
    problems: &mut Vec<Problem>,
) -> Option<BTreeMap<String, ClassProfile>> {
    let text = text_of(file, problems)?;
    parse_classes(text, &file.name, problems)
}

pub(crate) fn parse_classes(
    text: &str,
    file: &str,
    problems: &mut Vec<Problem>,
) -> Option<BTreeMap<String, ClassProfile>> {
    let mut sink = Sink::new(file, text);
    let root = match tree::parse_toml(text) {
        Ok(r) => r,
        Err((line, msg)) => {
            sink.error_at(line, "", format!("TOML syntax error: {msg}"));
            problems.append(&mut sink.problems);
            return None;
        }
    };
    let mut out = BTreeMap::new();
    if let Some(mut top) = Table::new(&root, "", &mut sink) {
        match top.get("class") {
            None => sink.warn(
                &None,
                "class",
                "no display class is defined (add [class.NAME] tables)",
            ),
            Some(node) => {
                if let Some(mut classes) = Table::new(node, "class", &mut sink) {
                    for (key, node) in classes.entries() {
                        let name = key.name.as_str();
                        let path = format!("class.{name}");
                        if let Err(e) = Id::parse(name) {
                            let span = key.span.clone().or_else(|| node.span.clone());
                            sink.error(&span, &path, e.to_string());
                        }
                        if let Some(p) = class_profile(name, node, &path, &mut sink) {
                            out.insert(name.to_owned(), p);
                        }
                    }
                }
            }
        }
        top.finish(&mut sink);
    }
    problems.append(&mut sink.problems);
    Some(out)
}

fn class_profile(
    name: &str,
    node: &tree::Node,
    path: &str,
    sink: &mut Sink,
) -> Option<ClassProfile> {
    let mut t = Table::new(node, path, sink)?;
    let led = led_defaults(name);
    let mut profile = ClassProfile {
        name: name.to_owned(),
        max_chars: 1,
        charset: Charset::Utf8,
        duration: DEFAULT_CLASS_DURATION,
        width_px: led.width_px,
        scroll_px_per_s: led.scroll_px_per_s,
    };
    let field = t.field("max_chars");
    if let Some(n) = tree::required(&mut t, sink, "max_chars") {
        if let Some(v) = expect_int(sink, n, &field) {
            match usize::try_from(v) {
                Ok(v) if v >= 1 => profile.max_chars = v,
                _ => sink.error(
                    &n.span,
                    &field,
                    format!("max_chars must be at least 1, not {v}"),
                ),
            }
        }
    }
    let field = t.field("charset");
    if let Some(n) = tree::required(&mut t, sink, "charset") {
        if let Some(v) = expect_str(sink, n, &field) {
            match v.trim().to_ascii_lowercase().as_str() {
                "gb2312" => profile.charset = Charset::Gb2312,
                "utf-8" | "utf8" => profile.charset = Charset::Utf8,
                _ => sink.error(
                    &n.span,
                    &field,
                    format!("unknown charset {v:?} (use \"gb2312\" or \"utf-8\")"),
                ),
            }
        }
    }
    let field = t.field("duration");
    if let Some(n) = t.get("duration") {
        if let Some(v) = expect_str(sink, n, &field) {
            match parse_duration(v) {
                Ok(d) => profile.duration = d,
                Err(e) => sink.error(&n.span, &field, e),
            }
        }
    }
    let bounds = (MIN_WIDTH_PX, MAX_WIDTH_PX);
    if let Some(v) = optional_u32(&mut t, sink, "width_px", bounds, "pixels wide") {
        profile.width_px = v;
    }
    let bounds = (1, MAX_SCROLL_PX_PER_S);
    if let Some(v) = optional_u32(&mut t, sink, "scroll_px_per_s", bounds, "pixels a second") {
        profile.scroll_px_per_s = v;
    }
    t.finish(sink);
    Some(profile)
}

/// An optional whole number of `unit` within `lo..=hi`; out of range is an error naming the
/// field, and `None` (the default stays).
fn optional_u32(
    t: &mut Table,
    sink: &mut Sink,
    name: &str,
    (lo, hi): (u32, u32),
    unit: &str,
) -> Option<u32> {
    let field = t.field(name);
    let n = t.get(name)?;
    let v = expect_int(sink, n, &field)?;
    match u32::try_from(v) {
        Ok(v) if (lo..=hi).contains(&v) => Some(v),
        _ => {
            sink.error(
                &n.span,
                &field,
                format!("{name} must be {lo} to {hi} ({unit}), not {v}"),
            );
            None
        }
    }
}

/// Where a display id was first seen: file and line.
pub(crate) type Seen = HashMap<String, (String, Option<usize>)>;

/// The displays of every list in `lists` (the folder `dir`), in order.
pub(crate) fn load_devices(
    dir: &str,
    lists: &Listing,
    classes: Option<&BTreeMap<String, ClassProfile>>,
    problems: &mut Vec<Problem>,
    counts: &mut Vec<(String, usize)>,
) -> Vec<Device> {
    let files = listed(dir, lists, problems);
    if lists.is_err() {
        return Vec::new();
    }
    if files.is_empty() {
        problems.push(Problem::error(
            dir,
            None,
            None,
            "no display list (*.csv) in this directory: the city would have no displays",
        ));
        return Vec::new();
    }
    let before = problems.len();
    let mut seen = Seen::new();
    let mut out = Vec::new();
    for file in files {
        let kept = match text_of(file, problems) {
            Some(text) => parse_devices_csv(text, &file.name, classes, &mut seen, problems),
            None => Vec::new(),
        };
        counts.push((file.name.clone(), kept.len()));
        out.extend(kept);
    }
    // A list with rows in error already says why nothing is kept; only an inventory that is
    // empty as written is reported here, so that no city starts (or reloads) with no screen.
    if out.is_empty() && !problems[before..].iter().any(Problem::is_error) {
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        problems.push(Problem::error(
            dir,
            None,
            None,
            format!(
                "no display is listed (in {}): the city would have no displays",
                names.join(", ")
            ),
        ));
    }
    out
}

/// One CSV file of displays. `classes`: `None` skips the class check (no classes.toml).
pub(crate) fn parse_devices_csv(
    text: &str,
    file: &str,
    classes: Option<&BTreeMap<String, ClassProfile>>,
    seen: &mut Seen,
    problems: &mut Vec<Problem>,
) -> Vec<Device> {
    let mut csv = DevicesCsv {
        sink: Sink::new(file, text),
        text,
        nl: newlines(text),
        classes,
        seen,
        interner: Interner::default(),
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let out = match csv.header(&mut rdr) {
        Some(header) => {
            let rows = csv.rows(&mut rdr, &header);
            csv.warn_commented_rows(&header);
            rows
        }
        None => Vec::new(),
    };
    problems.append(&mut csv.sink.problems);
    out
}

/// The header row of a display list.
struct Header {
    /// The column names, in order.
    names: Vec<String>,
    line: Option<usize>,
    id_col: usize,
    class_col: usize,
    /// A column without a name or named twice: the rows are checked but no display is kept.
    bad: bool,
}

/// What reading one CSV file of displays needs: its problems, its text, and what other files
/// told (the classes, the display ids seen so far).
struct DevicesCsv<'a> {
    sink: Sink<'a>,
    text: &'a str,
    /// Offsets of the newlines of `text`, see [`newlines`].
    nl: Vec<usize>,
    classes: Option<&'a BTreeMap<String, ClassProfile>>,
    seen: &'a mut Seen,
    interner: Interner,
}

impl DevicesCsv<'_> {
    /// The line of a CSV position.
    fn line(&self, p: &csv::Position) -> usize {
        csv_line(self.text, &self.nl, p)
    }

    /// Reads the header row: an unreadable or empty one, unnamed or repeated columns and a
    /// missing `id` or `class` column are errors. `None` when the rows cannot be read.
    fn header(&mut self, rdr: &mut csv::Reader<&[u8]>) -> Option<Header> {
        let headers = match rdr.headers() {
            Ok(h) => h.clone(),
            Err(e) => {
                let line = e.position().map(|p| self.line(p));
                self.sink
                    .error_at(line, "", format!("cannot read the header row: {e}"));
                return None;
            }
        };
        if headers.is_empty() {
            self.sink.error_at(
                Some(1),
                "",
                "empty file: expected a header row with at least `id` and `class`",
            );
            return None;
        }
        let line = headers.position().map(|p| self.line(p)).or(Some(1));
        let names: Vec<String> = headers.iter().map(str::to_owned).collect();
        let mut bad = self.check_column_names(&names, line);
        let id_col = names.iter().position(|n| n == "id");
        let class_col = names.iter().position(|n| n == "class");
        for (col, name) in [(id_col, "id"), (class_col, "class")] {
            if col.is_none() {
                self.sink
                    .error_at(line, name, format!("the header row has no `{name}` column"));
                bad = true;
            }
        }
        let (Some(id_col), Some(class_col)) = (id_col, class_col) else {
            return None;
        };
        Some(Header {
            names,
            line,
            id_col,
            class_col,
            bad,
        })
    }

    /// A line starting with `#` is a comment; one that has as many cells as the header row
    /// looks like a display left out (`#bus-1,...`, or an id that really starts with `#`,
    /// which no id may): a warning naming the line, so that nothing drops out silently.
    fn warn_commented_rows(&mut self, header: &Header) {
        if header.names.len() < 2 {
            return;
        }
        let after = header.line.unwrap_or(1);
        for (i, line) in self.text.lines().enumerate().skip(after) {
            let Some(rest) = line.strip_prefix('#') else {
                continue;
            };
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .trim(csv::Trim::All)
                .from_reader(rest.as_bytes());
            let Some(Ok(cells)) = rdr.records().next() else {
                continue;
            };
            if cells.len() == header.names.len() {
                let id = cells.get(header.id_col).unwrap_or("");
                self.sink.warn_at(
                    Some(i + 1),
                    "id",
                    format!(
                        "this row starts with `#`, so it is a comment and display \"#{id}\" is left out (display ids match [A-Za-z0-9_-]{{1,64}}; remove the `#` to list it)"
                    ),
                );
            }
        }
    }

    /// Reports every column without a name or named twice; whether there was one.
    fn check_column_names(&mut self, names: &[String], line: Option<usize>) -> bool {
        let mut bad = false;
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() {
                self.sink.error_at(
                    line,
                    "",
                    format!("column {} has no name in the header row", i + 1),
                );
                bad = true;
            } else if names[..i].contains(n) {
                self.sink.error_at(
                    line,
                    n,
                    format!("column `{n}` appears twice in the header row"),
                );
                bad = true;
            }
        }
        bad
    }

    /// Reads every row after the header: an unreadable row is an error (a failure to read the
    /// text at all ends the file); the displays of the good rows.
    fn rows(&mut self, rdr: &mut csv::Reader<&[u8]>, header: &Header) -> Vec<Device> {
        let mut out = Vec::new();
        let mut record = csv::StringRecord::new();
        let mut fallback_line = header.line.unwrap_or(1);
        loop {
            match rdr.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    let line = e.position().map(|p| self.line(p));
                    let io = matches!(e.kind(), csv::ErrorKind::Io(_));
                    self.sink
                        .error_at(line, "", format!("cannot read this row: {e}"));
                    if io {
                        break;
                    }
                    continue;
                }
            }
            let line = record.position().map(|p| self.line(p));
            fallback_line += 1;
            let line = line.or(Some(fallback_line));
            out.extend(self.row(&record, line, header));
        }
        out
    }

    /// One row: its number of cells, its id and its class. The display when its id is valid
    /// and the header row good.
    fn row(
        &mut self,
        record: &csv::StringRecord,
        line: Option<usize>,
        header: &Header,
    ) -> Option<Device> {
        if record.len() != header.names.len() {
            self.sink.error_at(
                line,
                "",
                format!(
                    "this row has {} cells but the header row has {} columns",
                    record.len(),
                    header.names.len()
                ),
            );
            return None;
        }
        let raw_id = record.get(header.id_col).unwrap_or("");
        let class = record.get(header.class_col).unwrap_or("");
        let id = self.display_id(raw_id, line);
        if let Some(id) = &id {
            self.check_unique(id, line);
        }
        self.check_class(class, line);
        let id = id?;
        let attrs = self.attrs(record, header);
        if header.bad {
            return None;
        }
        Some(Device {
            id,
            class: self.interner.get(class),
            attrs,
        })
    }

    /// The display id of a row; a missing or invalid one is an error.
    fn display_id(&mut self, raw_id: &str, line: Option<usize>) -> Option<Id> {
        match Id::parse(raw_id) {
            Ok(id) => Some(id),
            Err(e) => {
                let msg = if raw_id.is_empty() {
                    "missing display id".to_owned()
                } else {
                    e.to_string()
                };
                self.sink.error_at(line, "id", msg);
                None
            }
        }
    }

    /// A display id seen before, in this file or an earlier one, is an error naming where.
    fn check_unique(&mut self, id: &Id, line: Option<usize>) {
        if let Some((f, l)) = self.seen.get(id.as_str()) {
            let at = match l {
                Some(l) => format!("{f}:{l}"),
                None => f.clone(),
            };
            self.sink.error_at(
                line,
                "id",
                format!("duplicate display id \"{id}\" (also at {at})"),
            );
        } else {
            self.seen
                .insert(id.as_str().to_owned(), (self.sink.file.to_owned(), line));
        }
    }

    /// A missing class is an error, and so is one `classes.toml` does not define (when read).
    fn check_class(&mut self, class: &str, line: Option<usize>) {
        if class.is_empty() {
            self.sink.error_at(line, "class", "missing display class");
        } else if let Some(classes) = self.classes {
            if !classes.contains_key(class) {
                self.sink.error_at(
                    line,
                    "class",
                    format!(
                        "unknown class {class:?} (known: {})",
                        known_list(classes.keys().map(String::as_str))
                    ),
                );
            }
        }
    }

    /// The attributes of a row: its non-empty cells other than `id` and `class`.
    fn attrs(&mut self, record: &csv::StringRecord, header: &Header) -> Attrs {
        let interner = &mut self.interner;
        let attrs = header
            .names
            .iter()
            .zip(record.iter())
            .enumerate()
            .filter(|(i, (n, v))| {
                *i != header.id_col && *i != header.class_col && !v.is_empty() && !n.is_empty()
            })
            .map(|(_, (n, v))| (interner.get(n), interner.get(v)))
            .collect();
        interner.attrs(Attrs::new(attrs))
    }
}

/// The line of a CSV position, from its byte offset (the csv crate's own line count misses
/// blank lines). The offset may point at blank or comment lines before the record: skip them.
/// Offsets of every newline in `text`, so that a line number is a binary search rather than
/// a count from the top (which made a million-row inventory take hours).
fn newlines(text: &str) -> Vec<usize> {
    text.bytes()
        .enumerate()
        .filter(|(_, c)| *c == b'\n')
        .map(|(i, _)| i)
        .collect()
}

fn csv_line(text: &str, nl: &[usize], p: &csv::Position) -> usize {
    let b = text.as_bytes();
    let mut i = usize::try_from(p.byte()).unwrap_or(usize::MAX).min(b.len());
    loop {
        match b.get(i) {
            Some(b'\r' | b'\n') => i += 1,
            Some(b'#') => {
                while b.get(i).is_some_and(|c| *c != b'\n') {
                    i += 1;
                }
            }
            _ => break,
        }
    }
    nl.partition_point(|&n| n < i) + 1
}

/// Whether `kind` is a value a selector can compare with an attribute.
pub(crate) fn scalar_text(kind: &Kind) -> Option<String> {
    match kind {
        Kind::Str(s) => Some(s.clone()),
        Kind::Int(i) => Some(i.to_string()),
        Kind::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
