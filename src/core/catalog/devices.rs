//! `devices/classes.toml` and `devices/*.csv`: display classes and the displays, parsed from
//! the text the shell read. Pure: it never opens a file; names come as given.

use std::collections::{BTreeMap, HashMap};

use crate::core::model::{Charset, ClassProfile, Device, Id};

use super::tree::{self, expect_int, expect_str, known_list, Kind, Sink, Table};
use super::{
    listed, parse_duration, text_of, Listing, Problem, SourceFile, DEFAULT_CLASS_DURATION,
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
    let mut profile = ClassProfile {
        name: name.to_owned(),
        max_chars: 1,
        charset: Charset::Utf8,
        duration: DEFAULT_CLASS_DURATION,
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
    t.finish(sink);
    Some(profile)
}

/// Where a display id was first seen: file and line.
pub(crate) type Seen = HashMap<String, (String, Option<usize>)>;

/// The displays of every list in `lists` (the folder `dir`), in order.
pub(crate) fn load_devices(
    dir: &str,
    lists: &Listing,
    classes: Option<&BTreeMap<String, ClassProfile>>,
    problems: &mut Vec<Problem>,
) -> Vec<Device> {
    let files = listed(dir, lists, problems);
    if files.is_empty() {
        problems.push(Problem::warning(
            dir,
            None,
            None,
            "no display list (*.csv) in this directory",
        ));
    }
    let mut seen = Seen::new();
    let mut out = Vec::new();
    for file in files {
        if let Some(text) = text_of(file, problems) {
            out.extend(parse_devices_csv(
                text, &file.name, classes, &mut seen, problems,
            ));
        }
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
    let mut sink = Sink::new(file, text);
    let mut out = Vec::new();
    let nl = newlines(text);
    let mut interner = crate::core::model::Interner::default();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            let line = e.position().map(|p| csv_line(text, &nl, p));
            sink.error_at(line, "", format!("cannot read the header row: {e}"));
            problems.append(&mut sink.problems);
            return out;
        }
    };
    if headers.is_empty() {
        sink.error_at(
            Some(1),
            "",
            "empty file: expected a header row with at least `id` and `class`",
        );
        problems.append(&mut sink.problems);
        return out;
    }
    let header_line = headers
        .position()
        .map(|p| csv_line(text, &nl, p))
        .or(Some(1));
    let names: Vec<String> = headers.iter().map(str::to_owned).collect();
    let mut bad_header = false;
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() {
            sink.error_at(
                header_line,
                "",
                format!("column {} has no name in the header row", i + 1),
            );
            bad_header = true;
        } else if names[..i].contains(n) {
            sink.error_at(
                header_line,
                n,
                format!("column `{n}` appears twice in the header row"),
            );
            bad_header = true;
        }
    }
    let id_col = names.iter().position(|n| n == "id");
    let class_col = names.iter().position(|n| n == "class");
    for (col, name) in [(id_col, "id"), (class_col, "class")] {
        if col.is_none() {
            sink.error_at(
                header_line,
                name,
                format!("the header row has no `{name}` column"),
            );
            bad_header = true;
        }
    }
    let (Some(id_col), Some(class_col)) = (id_col, class_col) else {
        problems.append(&mut sink.problems);
        return out;
    };

    let mut record = csv::StringRecord::new();
    let mut fallback_line = header_line.unwrap_or(1);
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map(|p| csv_line(text, &nl, p));
                let io = matches!(e.kind(), csv::ErrorKind::Io(_));
                sink.error_at(line, "", format!("cannot read this row: {e}"));
                if io {
                    break;
                }
                continue;
            }
        }
        let line = record.position().map(|p| csv_line(text, &nl, p));
        fallback_line += 1;
        let line = line.or(Some(fallback_line));
        if record.len() != names.len() {
            sink.error_at(
                line,
                "",
                format!(
                    "this row has {} cells but the header row has {} columns",
                    record.len(),
                    names.len()
                ),
            );
            continue;
        }
        let raw_id = record.get(id_col).unwrap_or("");
        let class = record.get(class_col).unwrap_or("");
        let id = match Id::parse(raw_id) {
            Ok(id) => Some(id),
            Err(e) => {
                let msg = if raw_id.is_empty() {
                    "missing display id".to_owned()
                } else {
                    e.to_string()
                };
                sink.error_at(line, "id", msg);
                None
            }
        };
        if let Some(id) = &id {
            if let Some((f, l)) = seen.get(id.as_str()) {
                let at = match l {
                    Some(l) => format!("{f}:{l}"),
                    None => f.clone(),
                };
                sink.error_at(
                    line,
                    "id",
                    format!("duplicate display id \"{id}\" (also at {at})"),
                );
            } else {
                seen.insert(id.as_str().to_owned(), (file.to_owned(), line));
            }
        }
        if class.is_empty() {
            sink.error_at(line, "class", "missing display class");
        } else if let Some(classes) = classes {
            if !classes.contains_key(class) {
                sink.error_at(
                    line,
                    "class",
                    format!(
                        "unknown class {class:?} (known: {})",
                        known_list(classes.keys().map(String::as_str))
                    ),
                );
            }
        }
        if let Some(id) = id {
            let attrs = names
                .iter()
                .zip(record.iter())
                .enumerate()
                .filter(|(i, (n, v))| {
                    *i != id_col && *i != class_col && !v.is_empty() && !n.is_empty()
                })
                .map(|(_, (n, v))| (interner.get(n), interner.get(v)))
                .collect();
            let attrs = interner.attrs(crate::core::model::Attrs::new(attrs));
            if !bad_header {
                out.push(Device {
                    id,
                    class: interner.get(class),
                    attrs,
                });
            }
        }
    }
    problems.append(&mut sink.problems);
    out
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
