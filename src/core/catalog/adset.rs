//! Ad sets: `schedules/adsets/*.toml|*.json` and uploads, parsed from text and checked against
//! the displays and feeds. Pure: it never opens a file or the store; revisions are the
//! caller's.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

use crate::core::model::{AdSet, Id, Slogan};

use super::tree::{
    self, expect_array, expect_int, expect_str, known_list, quote, Key, Node, Sink, Span, Table,
};
use super::{
    adset_is_json, check_text, control_char, entry_id, listed, text_of, AdSetContext, Folder,
    Listing, Problem,
};

/// The ad sets of the folder `adsets`, in order; a second ad set with the id of an earlier
/// one is an error.
pub(crate) fn load_adsets(
    adsets: &Folder<Listing>,
    ctx: &AdSetContext,
    problems: &mut Vec<Problem>,
) -> Vec<AdSet> {
    let Ok(listing) = &adsets.found else {
        problems.push(Problem::warning(
            &adsets.name,
            None,
            None,
            "no ad set directory: only ad sets uploaded over HTTP will play",
        ));
        return Vec::new();
    };
    let mut out: Vec<AdSet> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    // Slogan id -> (ad set id, file): audit counts group plays by slogan id.
    let mut slogans: HashMap<String, (String, String)> = HashMap::new();
    for source in listed(&adsets.name, listing, problems) {
        let file = source.name.as_str();
        let Some(text) = text_of(source, problems) else {
            continue;
        };
        let (adset, mut found) = parse_adset_inner(text, adset_is_json(file), file, ctx);
        problems.append(&mut found.problems);
        if let Some((adset, id_line)) = adset {
            if let Some(first) = seen.get(adset.id.as_str()) {
                problems.push(Problem::error(
                    file,
                    id_line,
                    Some("id"),
                    format!("duplicate ad set id \"{}\" (also in {first})", adset.id),
                ));
            } else {
                seen.insert(adset.id.as_str().to_owned(), file.to_owned());
                check_slogans_unique(&adset, file, id_line, &out, &mut slogans, problems);
                out.push(adset);
            }
        }
    }
    out
}

/// A slogan id that an earlier ad set of the folder uses too: with another text it is an
/// error, since the audit's counts by slogan would add up two different slogans; with the
/// same texts (a slogan carried over to the next campaign) a warning that they add up.
fn check_slogans_unique(
    adset: &AdSet,
    file: &str,
    id_line: Option<usize>,
    earlier: &[AdSet],
    slogans: &mut HashMap<String, (String, String)>,
    problems: &mut Vec<Problem>,
) {
    for s in &adset.slogans {
        let Some((other_id, other_file)) = slogans.get(s.id.as_str()) else {
            slogans.insert(
                s.id.as_str().to_owned(),
                (adset.id.to_string(), file.to_owned()),
            );
            continue;
        };
        let other = earlier
            .iter()
            .find(|a| a.id.as_str() == other_id)
            .and_then(|a| a.slogans.iter().find(|o| o.id == s.id));
        let same = other.is_some_and(|o| o.text == s.text && o.text_by_class == s.text_by_class);
        let at = format!(
            "slogan \"{}\" is also in ad set \"{other_id}\" ({other_file})",
            s.id
        );
        if same {
            problems.push(Problem::warning(
                file,
                id_line,
                Some("slogan"),
                format!(
                    "{at} with the same texts: audit counts by slogan add up the plays of both"
                ),
            ));
        } else {
            problems.push(Problem::error(
                file,
                id_line,
                Some("slogan"),
                format!("{at} with another text: audit counts by slogan would add up two different slogans; give one of them another id"),
            ));
        }
    }
}

/// Parses one ad set (TOML, or JSON when `is_json`) and checks it against `ctx`. `file` names
/// the source in problems. `rev` is 1; the caller sets the real revision. Warnings are dropped
/// on success (see [`parse_adset_checked`] to keep them).
pub fn parse_adset(
    text: &str,
    is_json: bool,
    file: &str,
    ctx: &AdSetContext,
) -> Result<AdSet, Vec<Problem>> {
    match parse_adset_checked(text, is_json, file, ctx) {
        (Some(a), _) => Ok(a),
        (None, problems) => Err(problems),
    }
}

/// Like [`parse_adset`], but returns every problem, warnings included: the ad set is `Some`
/// if and only if no problem is an error.
pub fn parse_adset_checked(
    text: &str,
    is_json: bool,
    file: &str,
    ctx: &AdSetContext,
) -> (Option<AdSet>, Vec<Problem>) {
    let (a, sink) = parse_adset_inner(text, is_json, file, ctx);
    (a.map(|(a, _)| a), sink.problems)
}

/// The ad set (only without errors) with the line of its id.
fn parse_adset_inner<'a>(
    text: &'a str,
    is_json: bool,
    file: &'a str,
    ctx: &AdSetContext,
) -> (Option<(AdSet, Option<usize>)>, Sink<'a>) {
    let mut sink = Sink::new(file, text);
    let parsed = if is_json {
        tree::parse_json(text)
    } else {
        tree::parse_toml(text)
    };
    let root = match parsed {
        Ok(r) => r,
        Err((line, msg)) => {
            let what = if is_json { "JSON" } else { "TOML" };
            sink.error_at(line, "", format!("{what} syntax error: {msg}"));
            return (None, sink);
        }
    };
    let adset = read_adset(&root, ctx, &mut sink);
    if sink.has_errors() {
        (None, sink)
    } else {
        (adset, sink)
    }
}

/// Reads and checks every key of an ad set, in the order of its problems: id, title, dates,
/// feeds, priority, slogans, unknown keys, and last whether it reaches any display.
fn read_adset(root: &Node, ctx: &AdSetContext, sink: &mut Sink) -> Option<(AdSet, Option<usize>)> {
    let mut t = Table::new(root, "", sink)?;
    let (id, id_line) = adset_id(&mut t, sink);
    let title = title(&mut t, sink);
    let (from, until) = validity(&mut t, ctx, sink);
    let feeds = feed_list(&mut t, ctx, sink);
    let priority = priority(&mut t, sink);
    let reached = reached_classes(ctx, feeds.as_deref());
    let slogans = slogans(&mut t, ctx, &reached, sink);
    t.finish(sink);

    // With no display at all, the inventory's own error is the root cause.
    if id.is_some() && reached.is_empty() && !ctx.devices.is_empty() && !sink.has_errors() {
        sink.warn(&None, "feeds", "this ad set reaches no display");
    }

    let adset = AdSet {
        id: id?,
        title,
        rev: 1,
        valid_from: from?.0,
        valid_until: until?.0,
        feeds,
        priority,
        slogans,
    };
    Some((adset, id_line))
}

/// The required `id` of the ad set (if valid) and its line.
fn adset_id(t: &mut Table, sink: &mut Sink) -> (Option<Id>, Option<usize>) {
    let mut id = None;
    let mut id_line = None;
    if let Some(n) = tree::required(t, sink, "id") {
        id_line = sink.line(&n.span);
        if let Some(s) = expect_str(sink, n, "id") {
            match Id::parse(s) {
                Ok(v) => id = Some(v),
                Err(e) => sink.error(&n.span, "id", e.to_string()),
            }
        }
    }
    (id, id_line)
}

/// The optional `title`, a string; empty when absent.
fn title(t: &mut Table, sink: &mut Sink) -> String {
    let mut title = String::new();
    if let Some(n) = t.get("title") {
        if let Some(s) = expect_str(sink, n, "title") {
            title = s.to_owned();
        }
    }
    title
}

/// An instant of validity with the span of its value.
type Bound = Option<(DateTime<Utc>, Span)>;

/// The required `valid_from` and `valid_until`; `valid_until` must come after `valid_from`.
fn validity(t: &mut Table, ctx: &AdSetContext, sink: &mut Sink) -> (Bound, Bound) {
    let from = tree::required(t, sink, "valid_from")
        .and_then(|n| instant(n, "valid_from", false, ctx, sink));
    let until = tree::required(t, sink, "valid_until")
        .and_then(|n| instant(n, "valid_until", true, ctx, sink));
    if let (Some((f, fspan)), Some((u, uspan))) = (&from, &until) {
        if u <= f {
            // As written: a `valid_until` date means the end of that day, so instants would
            // show a reversed pair of dates as the same time.
            let written = |span: &Span| {
                span.as_ref()
                    .and_then(|r| sink.text.get(r.clone()))
                    .map(|t| t.trim().to_owned())
            };
            let (uw, fw) = (written(uspan), written(fspan));
            let show = |w: Option<String>, t: &DateTime<Utc>| {
                w.unwrap_or_else(|| t.with_timezone(&ctx.timezone).to_rfc3339())
            };
            sink.error(
                uspan,
                "valid_until",
                format!(
                    "valid_until {} is not after valid_from {}: the ad set would never be valid",
                    show(uw, u),
                    show(fw, f)
                ),
            );
        }
    }
    (from, until)
}

/// The optional `feeds`: an array of known feed ids, without repeats; an empty one is a
/// warning. `None` when absent (the ad set plays on every feed).
fn feed_list(t: &mut Table, ctx: &AdSetContext, sink: &mut Sink) -> Option<Vec<Id>> {
    let n = t.get("feeds")?;
    let items = expect_array(sink, n, "feeds")?;
    let mut list: Vec<Id> = Vec::new();
    for item in items {
        let span = item.span.clone().or_else(|| n.span.clone());
        let Some(fid) = feed_ref(item, &span, ctx, sink) else {
            continue;
        };
        if !list.contains(&fid) {
            list.push(fid);
        }
    }
    if items.is_empty() {
        sink.warn(
            &n.span,
            "feeds",
            "an empty feed list: this ad set plays nowhere",
        );
    }
    Some(list)
}

/// One item of `feeds`: a valid feed id (kept even if no feed has it, which is an error).
fn feed_ref(item: &Node, span: &Span, ctx: &AdSetContext, sink: &mut Sink) -> Option<Id> {
    let s = expect_str(sink, item, "feeds")?;
    let fid = match Id::parse(s) {
        Ok(v) => v,
        Err(e) => {
            sink.error(span, "feeds", e.to_string());
            return None;
        }
    };
    if !ctx.feeds.iter().any(|f| f.id == fid) {
        sink.error(
            span,
            "feeds",
            format!(
                "unknown feed \"{fid}\" (known: {})",
                known_list(ctx.feeds.iter().map(|f| f.id.as_str()))
            ),
        );
    }
    Some(fid)
}

/// The optional `priority`, an integer within `i32`; 0 when absent.
fn priority(t: &mut Table, sink: &mut Sink) -> i32 {
    let mut priority = 0;
    if let Some(n) = t.get("priority") {
        if let Some(v) = expect_int(sink, n, "priority") {
            match i32::try_from(v) {
                Ok(v) => priority = v,
                Err(_) => sink.error(
                    &n.span,
                    "priority",
                    format!("priority must be {} to {}, not {v}", i32::MIN, i32::MAX),
                ),
            }
        }
    }
    priority
}

/// The classes an ad set reaches: those of the members of its feeds (of every feed when
/// `feeds` is `None`).
pub fn reached_classes<'c>(ctx: &AdSetContext<'c>, feeds: Option<&[Id]>) -> BTreeSet<&'c str> {
    ctx.feeds
        .iter()
        .filter(|f| feeds.is_none_or(|list| list.contains(&f.id)))
        .flat_map(|f| ctx.devices.iter().filter(|d| f.select.matches(d)))
        .map(|d| &*d.class)
        .collect()
}

/// The required `slogan` array (or `slogans` when only that is written): at least one, each
/// slogan checked, and no slogan id twice. The valid slogans, in order.
fn slogans(
    t: &mut Table,
    ctx: &AdSetContext,
    reached: &BTreeSet<&str>,
    sink: &mut Sink,
) -> Vec<Slogan> {
    let mut slogans = Vec::new();
    // A JSON `"slogan": null` beside `"slogans"` is no slogan list: null counts as absent.
    let slogan_key = if !t.has_value("slogan") && t.has_value("slogans") {
        "slogans"
    } else {
        "slogan"
    };
    let Some(n) = tree::required(t, sink, slogan_key) else {
        return slogans;
    };
    let Some(items) = expect_array(sink, n, slogan_key) else {
        return slogans;
    };
    if items.is_empty() {
        sink.error(&n.span, slogan_key, "an ad set needs at least one slogan");
    }
    let mut seen: HashMap<String, Option<usize>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{slogan_key}[{}]", i + 1);
        let Some((slogan, id, line)) = read_slogan(item, &path, ctx, reached, sink) else {
            continue;
        };
        let Some(id) = id else { continue };
        if let Some(prev) = seen.get(id.as_str()) {
            let at = prev
                .map(|l| format!(" (also at line {l})"))
                .unwrap_or_default();
            sink.error_at(
                line,
                &format!("{path}.id"),
                format!("duplicate slogan id \"{id}\"{at}"),
            );
        } else {
            seen.insert(id.as_str().to_owned(), line);
            slogans.extend(slogan);
        }
    }
    slogans
}

/// The slogan (if valid), its id (if valid) and the line of its id; `None` if not a table.
fn read_slogan(
    node: &Node,
    path: &str,
    ctx: &AdSetContext,
    reached: &BTreeSet<&str>,
    sink: &mut Sink,
) -> Option<(Option<Slogan>, Option<Id>, Option<usize>)> {
    let mut t = Table::new(node, path, sink)?;
    let (id, id_line) = entry_id(&mut t, sink);
    let label = match &id {
        Some(id) => format!("slogan \"{id}\""),
        None => path.to_owned(),
    };
    let text = slogan_text(&mut t, &label, sink);
    let weight = weight(&mut t, &label, sink);
    let by_class = text_by_class(&mut t, &label, ctx, sink);
    t.finish(sink);
    check_default_text(&text, &label, reached, &by_class, ctx, sink);

    let slogan = match (&id, text.text) {
        (Some(id), Some(text)) => Some(Slogan {
            id: id.clone(),
            text,
            weight,
            text_by_class: by_class,
        }),
        _ => None,
    };
    Some((slogan, id, id_line))
}

/// The `text` of a slogan, with where to report problems of it.
struct SloganText {
    /// `None` when missing, not a string or blank.
    text: Option<String>,
    /// The value's span, else the slogan's.
    span: Span,
    field: String,
}

/// The required `text` of a slogan: a string that is not blank.
fn slogan_text(t: &mut Table, label: &str, sink: &mut Sink) -> SloganText {
    let mut text = None;
    let field = t.field("text");
    let mut span: Span = t.span.clone();
    if let Some(n) = tree::required(t, sink, "text") {
        span = n.span.clone().or(span);
        if let Some(s) = expect_str(sink, n, &field) {
            if s.trim().is_empty() {
                sink.error(&n.span, &field, format!("{label}: empty text"));
            } else if let Some(m) = control_char(s) {
                sink.error(&n.span, &field, format!("{label}: {m}"));
            } else {
                text = Some(s.to_owned());
            }
        }
    }
    SloganText { text, span, field }
}

/// The optional `weight` of a slogan, an integer of at least 1; 1 when absent.
fn weight(t: &mut Table, label: &str, sink: &mut Sink) -> u32 {
    let mut weight = 1;
    let field = t.field("weight");
    if let Some(n) = t.get("weight") {
        if let Some(v) = expect_int(sink, n, &field) {
            match u32::try_from(v) {
                Ok(v) if v >= 1 => weight = v,
                _ => sink.error(
                    &n.span,
                    &field,
                    format!("{label}: weight must be 1 to {}, not {v}", u32::MAX),
                ),
            }
        }
    }
    weight
}

/// The optional `text_by_class` table of a slogan: for each known class, a text that class
/// can show. The valid entries.
fn text_by_class(
    t: &mut Table,
    label: &str,
    ctx: &AdSetContext,
    sink: &mut Sink,
) -> BTreeMap<String, String> {
    let mut by_class: BTreeMap<String, String> = BTreeMap::new();
    let by_field = t.field("text_by_class");
    let Some(n) = t.get("text_by_class") else {
        return by_class;
    };
    let Some(mut bt) = Table::new(n, &by_field, sink) else {
        return by_class;
    };
    for (k, v) in bt.entries() {
        let kf = format!("{by_field}.{}", k.name);
        if let Some(s) = class_text(k, v, &kf, label, ctx, sink) {
            by_class.insert(k.name.clone(), s.to_owned());
        }
    }
    by_class
}

/// One entry of `text_by_class`: the class must be known, and its text not blank and
/// showable by the class. The text unless the class is unknown or the text not a string or
/// blank (a text the class cannot show is kept, with its errors).
fn class_text<'n>(
    k: &Key,
    v: &'n Node,
    kf: &str,
    label: &str,
    ctx: &AdSetContext,
    sink: &mut Sink,
) -> Option<&'n str> {
    let span = v.span.clone().or_else(|| k.span.clone());
    let s = expect_str(sink, v, kf)?;
    if ctx.classes.is_empty() {
        // No class could be read (`classes.toml` is missing or broken, and says so): naming
        // every class here unknown would only bury that root cause.
        return Some(s);
    }
    let Some(class) = ctx.classes.get(&k.name) else {
        sink.error(
            &k.span.clone().or(span),
            kf,
            format!(
                "unknown class {:?} (known: {})",
                k.name,
                known_list(ctx.classes.keys().map(String::as_str))
            ),
        );
        return None;
    };
    if s.trim().is_empty() {
        sink.error(&span, kf, format!("{label}: empty text"));
        return None;
    }
    if let Some(m) = control_char(s) {
        sink.error(&span, kf, format!("{label}: {m}"));
        return None;
    }
    for m in check_text(s, class) {
        sink.error(&span, kf, format!("{label}: text {}: {m}", quote(s, 40)));
    }
    Some(s)
}

/// The `text` of a slogan must be showable by every class the ad set reaches that has no
/// text of its own in `text_by_class`.
fn check_default_text(
    text: &SloganText,
    label: &str,
    reached: &BTreeSet<&str>,
    by_class: &BTreeMap<String, String>,
    ctx: &AdSetContext,
    sink: &mut Sink,
) {
    let Some(s) = &text.text else {
        return;
    };
    for class in reached.iter().filter(|c| !by_class.contains_key(**c)) {
        if let Some(profile) = ctx.classes.get(*class) {
            for m in check_text(s, profile) {
                sink.error(
                    &text.span,
                    &text.field,
                    format!("{label}: text {}: {m}", quote(s, 40)),
                );
            }
        }
    }
}

/// A `valid_from` / `valid_until` value as an instant, with the span of its value.
/// A date is the start of that day in the feeds' time zone; a `valid_until` date is inclusive,
/// so it yields the start of the next day.
fn instant(
    node: &Node,
    field: &str,
    until: bool,
    ctx: &AdSetContext,
    sink: &mut Sink,
) -> Option<(DateTime<Utc>, Span)> {
    let s = expect_str(sink, node, field)?;
    match parse_instant(s, until, ctx.timezone) {
        Ok(t) => Some((t, node.span.clone())),
        Err(e) => {
            sink.error(&node.span, field, e);
            None
        }
    }
}

pub(crate) fn parse_instant(
    s: &str,
    until: bool,
    tz: chrono_tz::Tz,
) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        let day = if until { d.succ_opt() } else { Some(d) };
        return day
            .and_then(|d| start_of_day(d, tz))
            .ok_or_else(|| format!("date {t:?} is out of range"));
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    // A local time without an offset (e.g. an unquoted TOML local datetime): in the feeds' zone.
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(ndt) = NaiveDateTime::parse_from_str(t, fmt) {
            return tz
                .from_local_datetime(&ndt)
                .earliest()
                .map(|x| x.with_timezone(&Utc))
                .ok_or_else(|| format!("{t:?} does not exist in time zone {tz}"));
        }
    }
    Err(format!(
        "invalid date or time {t:?}: write a date such as \"2026-12-01\" or an RFC 3339 time such as \"2026-12-01T06:00:00+08:00\""
    ))
}

/// Midnight in `tz`, or the first instant of the day when a clock change skips midnight.
fn start_of_day(d: NaiveDate, tz: chrono_tz::Tz) -> Option<DateTime<Utc>> {
    let midnight = d.and_hms_opt(0, 0, 0)?;
    (0..=24 * 4).find_map(|q| {
        let local = midnight + chrono::Duration::minutes(15 * q);
        tz.from_local_datetime(&local)
            .earliest()
            .map(|x| x.with_timezone(&Utc))
    })
}
