//! `schedules/feeds.toml`: the time zone and the feeds, parsed from the text the shell read.
//! Pure: it never opens a file; names come as given.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::core::model::{ClassProfile, Daypart, Device, Feed, Id, Selector};

use super::daypart::{parse_cron, reach};
use super::devices::scalar_text;
use super::tree::{self, expect_array, expect_str, known_list, Kind, Node, Sink, Span, Table};
use super::{
    entry_id, parse_duration, text_of, Problem, SourceFile, DEFAULT_INTERVAL, DEFAULT_TIMEZONE,
};

/// The shortest interval a feed may have: below it a feed floods the displays and the broker
/// with plays that expire (one interval after issue) before a board has scrolled one.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// The longest interval a feed may have: past a day a feed no longer keeps a slogan in front
/// of people, and each play would stay valid for days.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// What a feed is checked against besides its own table.
pub(crate) struct FeedContext<'a> {
    pub classes: Option<&'a BTreeMap<String, ClassProfile>>,
    pub devices: &'a [Device],
    /// When the dayparts are looked at from (the year ahead of it).
    pub now: DateTime<Utc>,
}

pub(crate) fn load_feeds(
    file: &SourceFile,
    ctx: &FeedContext,
    problems: &mut Vec<Problem>,
) -> (chrono_tz::Tz, Vec<Feed>) {
    match text_of(file, problems) {
        Some(text) => parse_feeds(text, &file.name, ctx, problems),
        None => (DEFAULT_TIMEZONE, Vec::new()),
    }
}

/// The time zone and the feeds. A feed with a bad field is still returned (with defaults for
/// that field) so that ad sets naming it are not reported as naming an unknown feed.
pub(crate) fn parse_feeds(
    text: &str,
    file: &str,
    ctx: &FeedContext,
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
        feeds = feed_tables(&mut top, ctx, tz, &mut sink);
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
    ctx: &FeedContext,
    tz: chrono_tz::Tz,
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
        let Some((Some(feed), line)) = parse_feed(item, &path, ctx, tz, sink) else {
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
    ctx: &FeedContext,
    tz: chrono_tz::Tz,
    sink: &mut Sink,
) -> Option<(Option<Feed>, Option<usize>)> {
    let mut t = Table::new(node, path, sink)?;
    let (id, id_line) = entry_id(&mut t, sink);
    let (select, select_span) = selector(&mut t, ctx.classes, sink);
    let (interval, interval_valid) = interval(&mut t, sink);
    let interval_span = t
        .get("interval")
        .and_then(|n| n.span.clone())
        .or_else(|| t.span.clone());
    let daypart = daypart(&mut t, sink);
    t.finish(sink);

    let feed = id.map(|id| Feed {
        id,
        select,
        interval,
        daypart: daypart.as_ref().map(|(d, _)| d.clone()),
    });
    if let Some(f) = &feed {
        // With no display at all, the inventory's own error is the root cause.
        let members: Vec<&Device> = ctx.devices.iter().filter(|d| f.select.matches(d)).collect();
        if !ctx.devices.is_empty() && members.is_empty() {
            sink.warn(
                &select_span,
                &format!("{path}.select"),
                format!("feed \"{}\" matches no display", f.id),
            );
        }
        if interval_valid {
            warn_short_interval(f, &members, ctx.classes, &interval_span, path, sink);
        }
        if let (Some((d, span)), true) = (&daypart, interval_valid) {
            check_reach(d, span, &f.id, interval, tz, ctx.now, path, sink);
        }
    }
    Some((feed, id_line))
}

/// An interval shorter than the time a member's class keeps a slogan on screen cuts every
/// play short (each expires one interval after issue): worth a warning, not a refusal.
fn warn_short_interval(
    f: &Feed,
    members: &[&Device],
    classes: Option<&BTreeMap<String, ClassProfile>>,
    span: &Span,
    path: &str,
    sink: &mut Sink,
) {
    let Some(classes) = classes else { return };
    let longest = members
        .iter()
        .filter_map(|d| classes.get(&*d.class))
        .max_by_key(|c| c.duration);
    if let Some(c) = longest.filter(|c| f.interval < c.duration) {
        sink.warn(
            span,
            &format!("{path}.interval"),
            format!(
                "feed \"{}\" plays every {}, shorter than the {} that class {} keeps a slogan on screen: each play is cut short by the next",
                f.id,
                humantime::format_duration(f.interval),
                humantime::format_duration(c.duration),
                c.name
            ),
        );
    }
}

/// A daypart that lets no slot of the feed play in the year ahead is an error; one open
/// for less than an interval a day is a warning (the feed plays at most about once a day).
#[allow(clippy::too_many_arguments)]
fn check_reach(
    d: &Daypart,
    span: &Span,
    feed: &Id,
    interval: Duration,
    tz: chrono_tz::Tz,
    now: DateTime<Utc>,
    path: &str,
    sink: &mut Sink,
) {
    let field = format!("{path}.daypart");
    let r = reach(d, feed, interval, tz, now);
    let every = humantime::format_duration(interval);
    if !r.any_day {
        sink.error(
            span,
            &field,
            format!(
                "daypart {:?} matches no day in the next year: feed \"{feed}\" would never play",
                d.source
            ),
        );
    } else if r.first_play.is_none() {
        sink.error(
            span,
            &field,
            format!(
                "daypart {:?} is open {} s a day, but none of them falls on a play slot of feed \"{feed}\" (every {every}, at a fixed phase) in the next year: the feed would never play",
                d.source, r.open_per_day
            ),
        );
    } else if u128::from(r.open_per_day) * 1000 < interval.as_millis() {
        sink.warn(
            span,
            &field,
            format!(
                "daypart {:?} is open {} s a day, less than one interval ({every}): feed \"{feed}\" plays at most about once a day",
                d.source, r.open_per_day
            ),
        );
    }
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

/// The optional `interval` of a feed, a duration from [`MIN_INTERVAL`] to [`MAX_INTERVAL`];
/// [`DEFAULT_INTERVAL`] when absent; and whether it is valid.
fn interval(t: &mut Table, sink: &mut Sink) -> (Duration, bool) {
    let field = t.field("interval");
    let Some(n) = t.get("interval") else {
        return (DEFAULT_INTERVAL, true);
    };
    let Some(s) = expect_str(sink, n, &field) else {
        return (DEFAULT_INTERVAL, false);
    };
    match parse_duration(s) {
        Ok(d) if d < MIN_INTERVAL => {
            sink.error(
                &n.span,
                &field,
                format!(
                    "interval {s:?} is shorter than 1s: plays would flood the displays and the broker, each expiring before a board could show it (write \"1s\" to \"24h\"; a city's boards scroll one about every \"3m\")"
                ),
            );
            (d, false)
        }
        Ok(d) if d > MAX_INTERVAL => {
            sink.error(
                &n.span,
                &field,
                format!(
                    "interval {s:?} is longer than 24h: the feed would play less than once a day and each play would stay valid that long (write \"1s\" to \"24h\")"
                ),
            );
            (d, false)
        }
        Ok(d) => (d, true),
        Err(e) => {
            sink.error(&n.span, &field, e);
            (DEFAULT_INTERVAL, false)
        }
    }
}

/// The optional `daypart` of a feed, a cron expression, with its span; none when absent.
fn daypart(t: &mut Table, sink: &mut Sink) -> Option<(Daypart, Span)> {
    let field = t.field("daypart");
    let n = t.get("daypart")?;
    let s = expect_str(sink, n, &field)?;
    match parse_cron(s) {
        Ok(d) => Some((d, n.span.clone())),
        Err(e) => {
            sink.error(&n.span, &field, e);
            None
        }
    }
}
