//! `schedules/feeds.toml`: the time zone and the feeds, parsed from the text the shell read.
//! Pure: it never opens a file; names come as given.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use crate::core::model::{ClassProfile, Daypart, Device, Feed, Selector};

use super::devices::scalar_text;
use super::tree::{self, expect_array, expect_str, known_list, Kind, Node, Sink, Span, Table};
use super::{
    entry_id, parse_duration, text_of, Problem, SourceFile, DEFAULT_INTERVAL, DEFAULT_TIMEZONE,
};

pub(crate) fn load_feeds(
    file: &SourceFile,
    classes: Option<&BTreeMap<String, ClassProfile>>,
    devices: &[Device],
    problems: &mut Vec<Problem>,
) -> (chrono_tz::Tz, Vec<Feed>) {
    match text_of(file, problems) {
        Some(text) => parse_feeds(text, &file.name, classes, devices, problems),
        None => (DEFAULT_TIMEZONE, Vec::new()),
    }
}

/// The time zone and the feeds. A feed with a bad field is still returned (with defaults for
/// that field) so that ad sets naming it are not reported as naming an unknown feed.
pub(crate) fn parse_feeds(
    text: &str,
    file: &str,
    classes: Option<&BTreeMap<String, ClassProfile>>,
    devices: &[Device],
    problems: &mut Vec<Problem>,
) -> (chrono_tz::Tz, Vec<Feed>) {
    let mut sink = Sink::new(file, text);
    let mut tz = DEFAULT_TIMEZONE;
    let mut feeds = Vec::new();
    let root = match tree::parse_toml(text) {
        Ok(r) => r,
        Err((line, msg)) => {
            sink.error_at(line, "", format!("TOML syntax error: {msg}"));
            problems.append(&mut sink.problems);
            return (tz, feeds);
        }
    };
    if let Some(mut top) = Table::new(&root, "", &mut sink) {
        if let Some(t) = timezone(&mut top, &mut sink) {
            tz = t;
        }
        feeds = feed_tables(&mut top, classes, devices, &mut sink);
        top.finish(&mut sink);
    }
    problems.append(&mut sink.problems);
    (tz, feeds)
}

/// The optional `timezone`: an IANA time zone name.
fn timezone(top: &mut Table, sink: &mut Sink) -> Option<chrono_tz::Tz> {
    let n = top.get("timezone")?;
    let s = expect_str(sink, n, "timezone")?;
    match chrono_tz::Tz::from_str(s.trim()) {
        Ok(t) => Some(t),
        Err(_) => {
            sink.error(
                &n.span,
                "timezone",
                format!("unknown time zone {s:?} (use an IANA name such as \"Asia/Shanghai\")"),
            );
            None
        }
    }
}

/// The `[[feed]]` tables (none is a warning): each feed checked, and no feed id twice. The
/// feeds with a valid id, in order.
fn feed_tables(
    top: &mut Table,
    classes: Option<&BTreeMap<String, ClassProfile>>,
    devices: &[Device],
    sink: &mut Sink,
) -> Vec<Feed> {
    let mut feeds = Vec::new();
    let Some(n) = top.get("feed") else {
        sink.warn(&None, "feed", "no feed is defined (add [[feed]] tables)");
        return feeds;
    };
    let Some(items) = expect_array(sink, n, "feed") else {
        return feeds;
    };
    let mut seen: HashMap<String, Option<usize>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("feed[{}]", i + 1);
        let Some((Some(feed), line)) = parse_feed(item, &path, classes, devices, sink) else {
            continue;
        };
        if let Some(prev) = seen.get(feed.id.as_str()) {
            let at = prev
                .map(|l| format!(" (also at line {l})"))
                .unwrap_or_default();
            sink.error_at(
                line,
                &format!("{path}.id"),
                format!("duplicate feed id \"{}\"{at}", feed.id),
            );
        } else {
            seen.insert(feed.id.as_str().to_owned(), line);
            feeds.push(feed);
        }
    }
    feeds
}

/// The feed (if its id is valid) and the line of its id.
fn parse_feed(
    node: &Node,
    path: &str,
    classes: Option<&BTreeMap<String, ClassProfile>>,
    devices: &[Device],
    sink: &mut Sink,
) -> Option<(Option<Feed>, Option<usize>)> {
    let mut t = Table::new(node, path, sink)?;
    let (id, id_line) = entry_id(&mut t, sink);
    let (select, select_span) = selector(&mut t, classes, sink);
    let interval = interval(&mut t, sink);
    let daypart = daypart(&mut t, sink);
    t.finish(sink);

    let feed = id.map(|id| Feed {
        id,
        select,
        interval,
        daypart,
    });
    if let Some(f) = &feed {
        if !devices.iter().any(|d| f.select.matches(d)) {
            sink.warn(
                &select_span,
                &format!("{path}.select"),
                format!("feed \"{}\" matches no display", f.id),
            );
        }
    }
    Some((feed, id_line))
}

/// The required `select` table of a feed: each key an attribute, each value one or more
/// values it may have. The selector and the span to report it at (its own, else the feed's).
fn selector(
    t: &mut Table,
    classes: Option<&BTreeMap<String, ClassProfile>>,
    sink: &mut Sink,
) -> (Selector, Span) {
    let mut select = Selector::default();
    let field = t.field("select");
    let mut select_span = t.span.clone();
    if let Some(n) = tree::required(t, sink, "select") {
        select_span = n.span.clone().or(select_span);
        if let Some(mut st) = Table::new(n, &field, sink) {
            for (k, v) in st.entries() {
                let kf = format!("{field}.{}", k.name);
                let span = v.span.clone().or_else(|| k.span.clone());
                if let Some(values) = term_values(v, &span, &kf, sink) {
                    if let (Some(classes), "class") = (classes, k.name.as_str()) {
                        warn_unknown_classes(&values, classes, &span, &kf, sink);
                    }
                    select.terms.insert(k.name.clone(), values);
                }
            }
        }
    }
    (select, select_span)
}

/// The values of one term of `select`: a scalar, or a non-empty array of scalars.
fn term_values(v: &Node, span: &Span, kf: &str, sink: &mut Sink) -> Option<Vec<String>> {
    match &v.kind {
        Kind::Array(items) => {
            let vals: Vec<Option<String>> = items.iter().map(|x| scalar_text(&x.kind)).collect();
            if vals.is_empty() {
                sink.error(span, kf, "an empty list matches no display");
                None
            } else if vals.iter().any(Option::is_none) {
                sink.error(span, kf, "expected a list of strings");
                None
            } else {
                Some(vals.into_iter().flatten().collect())
            }
        }
        other => match scalar_text(other) {
            Some(s) => Some(vec![s]),
            None => {
                sink.error(
                    span,
                    kf,
                    format!(
                        "expected a string or a list of strings, found {}",
                        other.describe()
                    ),
                );
                None
            }
        },
    }
}

/// A warning for each value of the `class` term that `classes.toml` does not define.
fn warn_unknown_classes(
    values: &[String],
    classes: &BTreeMap<String, ClassProfile>,
    span: &Span,
    kf: &str,
    sink: &mut Sink,
) {
    for c in values.iter().filter(|c| !classes.contains_key(c.as_str())) {
        sink.warn(
            span,
            kf,
            format!(
                "unknown class {c:?} (known: {})",
                known_list(classes.keys().map(String::as_str))
            ),
        );
    }
}

/// The optional `interval` of a feed, a duration; [`DEFAULT_INTERVAL`] when absent.
fn interval(t: &mut Table, sink: &mut Sink) -> Duration {
    let mut interval = DEFAULT_INTERVAL;
    let field = t.field("interval");
    if let Some(n) = t.get("interval") {
        if let Some(s) = expect_str(sink, n, &field) {
            match parse_duration(s) {
                Ok(d) => interval = d,
                Err(e) => sink.error(&n.span, &field, e),
            }
        }
    }
    interval
}

/// The optional `daypart` of a feed, a cron expression; none when absent.
fn daypart(t: &mut Table, sink: &mut Sink) -> Option<Daypart> {
    let field = t.field("daypart");
    let n = t.get("daypart")?;
    let s = expect_str(sink, n, &field)?;
    match parse_cron(s) {
        Ok(d) => Some(d),
        Err(e) => {
            sink.error(&n.span, &field, e);
            None
        }
    }
}

/// A cron daypart as the `cron` crate reads it (6 or 7 fields: sec min hour day month weekday
/// [year]).
pub(crate) fn parse_cron(s: &str) -> Result<Daypart, String> {
    let src = s.trim().to_owned();
    let parsed = std::panic::catch_unwind(|| cron::Schedule::from_str(&src));
    match parsed {
        Ok(Ok(schedule)) => Ok(Daypart {
            source: src,
            schedule,
        }),
        Ok(Err(e)) => {
            // The cron error repeats the expression on a line of its own; keep the reason.
            let e = e.to_string();
            let reason: Vec<&str> = e
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != src)
                .collect();
            let reason = if reason.is_empty() {
                "not a valid expression".to_owned()
            } else {
                reason.join("; ")
            };
            Err(format!(
                "invalid cron daypart {s:?}: {reason} (6 fields: sec min hour day month weekday)"
            ))
        }
        Err(_) => Err(format!(
            "invalid cron daypart {s:?} (6 fields: sec min hour day month weekday)"
        )),
    }
}
