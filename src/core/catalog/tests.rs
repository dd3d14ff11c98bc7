//! The catalog's unit tests: every problem an operator can meet, with its file, line and
//! field. Long on purpose (one file, about a thousand lines): each case is a few lines of
//! input and its exact expected problems, and splitting them by file kind would scatter the
//! shared fixtures they build on (`fixtures.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{TimeZone, Utc};

use super::fixtures::*;
use super::*;
use crate::core::model::{Charset, Id};

/// Loads the valid files with `replace` swapped in (or added).
fn load_with(replace: &[(&'static str, &'static str)]) -> Report {
    let mut files = valid_files();
    for (name, text) in replace {
        match files.iter_mut().find(|(n, _)| n == name) {
            Some(f) => f.1 = text,
            None => files.push((name, text)),
        }
    }
    parse(&sources(&files), test_now())
}

/// The one error whose message contains `needle`, checked for file, line and field.
fn expect_error(r: &Report, file: &str, line: Option<usize>, field: &str, needle: &str) {
    let found: Vec<&Problem> = r
        .problems
        .iter()
        .filter(|p| p.is_error() && p.message.contains(needle))
        .collect();
    assert!(
        !found.is_empty(),
        "no error containing {needle:?} in:\n{}",
        show(&r.problems)
    );
    let p = found[0];
    assert_eq!(p.file, file, "{p}");
    assert_eq!(p.line, line, "{p}");
    assert_eq!(p.field.as_deref(), Some(field), "{p}");
    assert!(r.catalog.is_none());
}

/// The instant the tests look at dayparts from.
fn test_now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 2, 0, 0).unwrap()
}

fn show(ps: &[Problem]) -> String {
    ps.iter().map(|p| format!("  {p}\n")).collect()
}

#[test]
fn valid_files_load_into_a_catalog() {
    let r = load_with(&[]);
    assert_eq!(r.errors(), 0, "{}", show(&r.problems));
    assert_eq!(r.warnings(), 0, "{}", show(&r.problems));
    let c = r.catalog.expect("catalog");
    assert_eq!(c.timezone, chrono_tz::Asia::Shanghai);
    assert_eq!(c.classes.len(), 3);
    let bus = &c.classes["bus_led"];
    assert_eq!(
        (bus.max_chars, bus.charset, bus.duration),
        (40, Charset::Gb2312, Duration::from_secs(15))
    );
    assert_eq!(c.classes["brt_screen"].charset, Charset::Utf8);
    assert_eq!(c.classes["brt_screen"].duration, DEFAULT_CLASS_DURATION);

    // brt.csv sorts before fleet.csv.
    let ids: Vec<&str> = c.devices.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["brt-1", "bus-K1-0421", "bus-K1-0422", "taxi-0007"]);
    let taxi = &c.devices[3];
    assert_eq!(&*taxi.class, "taxi_top");
    assert_eq!(taxi.attrs.get("route"), None, "empty cells are left out");
    assert_eq!(taxi.attrs.get("district"), Some("lianyun"));
    assert!(!taxi.attrs.contains_key("id") && !taxi.attrs.contains_key("class"));

    let feed_ids: Vec<&str> = c.feeds.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(feed_ids, ["bus-led-all", "taxi-all", "brt"]);
    assert_eq!(c.feeds[0].interval, Duration::from_secs(180));
    assert_eq!(c.feeds[1].interval, DEFAULT_INTERVAL);
    assert_eq!(c.feeds[2].interval, Duration::from_secs(90));
    assert!(c.feeds[0].daypart.is_some() && c.feeds[1].daypart.is_none());
    let members: Vec<&str> = c.members(&c.feeds[0]).map(|d| d.id.as_str()).collect();
    assert_eq!(members, ["bus-K1-0421", "bus-K1-0422"]);
    assert_eq!(c.members(&c.feeds[2]).count(), 1);
    assert_eq!(
        c.feeds_of(&c.devices[3]),
        vec![Id::parse("taxi-all").unwrap()]
    );

    assert_eq!(c.adsets.len(), 2);
    let brt = &c.adsets[0];
    assert_eq!(brt.id.as_str(), "brt-2026");
    assert_eq!(brt.priority, 1);
    assert_eq!(
        brt.valid_from,
        Utc.with_ymd_and_hms(2025, 12, 31, 16, 0, 0).unwrap()
    );
    let w = &c.adsets[1];
    assert_eq!(w.id.as_str(), "wenming-2026-12");
    assert_eq!(w.title, "Civility month");
    assert_eq!(w.rev, 1);
    // Dates in Asia/Shanghai; valid_until is inclusive: the start of 2027-01-01 there.
    assert_eq!(
        w.valid_from,
        Utc.with_ymd_and_hms(2026, 11, 30, 16, 0, 0).unwrap()
    );
    assert_eq!(
        w.valid_until,
        Utc.with_ymd_and_hms(2026, 12, 31, 16, 0, 0).unwrap()
    );
    assert_eq!(w.feeds.as_ref().map(Vec::len), Some(2));
    assert_eq!(w.slogans.len(), 2);
    assert_eq!(w.slogans[0].weight, 2);
    assert_eq!(w.slogans[1].weight, 1);
    assert_eq!(w.slogans[0].text_for("taxi_top"), "讲文明");
    assert_eq!(w.slogans[0].text_for("bus_led"), "讲文明 树新风");
}

#[test]
fn timezone_defaults_to_shanghai_and_can_be_set() {
    let r = load_with(&[(
        "schedules/feeds.toml",
        "[[feed]]\nid = \"bus-led-all\"\nselect = {}\n[[feed]]\nid = \"taxi-all\"\nselect = { class = \"taxi_top\" }\n[[feed]]\nid = \"brt\"\nselect = { class = \"brt_screen\" }\n",
    )]);
    assert_eq!(r.errors(), 0, "{}", show(&r.problems));
    assert_eq!(r.catalog.unwrap().timezone, chrono_tz::Asia::Shanghai);

    let r = load_with(&[(
        "schedules/feeds.toml",
        "timezone = \"Europe/Berlin\"\n[[feed]]\nid = \"bus-led-all\"\nselect = { class = \"bus_led\" }\n[[feed]]\nid = \"taxi-all\"\nselect = { class = \"taxi_top\" }\n[[feed]]\nid = \"brt\"\nselect = { class = \"brt_screen\" }\n",
    )]);
    assert_eq!(r.errors(), 0, "{}", show(&r.problems));
    let c = r.catalog.unwrap();
    assert_eq!(c.timezone, chrono_tz::Europe::Berlin);
    let w = c
        .adsets
        .iter()
        .find(|a| a.id.as_str() == "wenming-2026-12")
        .unwrap();
    assert_eq!(
        w.valid_from,
        Utc.with_ymd_and_hms(2026, 11, 30, 23, 0, 0).unwrap()
    );

    let r = load_with(&[("schedules/feeds.toml", "timezone = \"Mars/Olympus\"\n")]);
    expect_error(
        &r,
        "schedules/feeds.toml",
        Some(1),
        "timezone",
        "unknown time zone \"Mars/Olympus\"",
    );
}

#[test]
fn unknown_class_in_csv_names_file_line_field() {
    let r = load_with(&[(
        "devices/fleet.csv",
        "id,class,route\nbus-1,bus_led,K1\n\nbus-2,bus_lde,K1\n",
    )]);
    expect_error(
        &r,
        "devices/fleet.csv",
        Some(4),
        "class",
        "unknown class \"bus_lde\" (known: brt_screen, bus_led, taxi_top)",
    );
    let p = r
        .problems
        .iter()
        .find(|p| p.message.contains("bus_lde"))
        .unwrap();
    assert_eq!(
        p.to_string(),
        format!(
            "{}:4: field `class`: unknown class \"bus_lde\" (known: brt_screen, bus_led, taxi_top)",
            "devices/fleet.csv"
        )
    );
}

#[test]
fn duplicate_display_id_across_files_names_both() {
    let r = load_with(&[(
        "devices/more.csv",
        "id,class\nx-1,bus_led\nbus-K1-0422,bus_led\n",
    )]);
    expect_error(
        &r,
        "devices/more.csv",
        Some(3),
        "id",
        "duplicate display id \"bus-K1-0422\"",
    );
    let p = r
        .problems
        .iter()
        .find(|p| p.message.contains("duplicate display"))
        .unwrap();
    assert!(
        p.message.contains(&format!("{}:3", "devices/fleet.csv")),
        "{p}"
    );
}

#[test]
fn bad_csv_rows() {
    let r = load_with(&[(
        "devices/fleet.csv",
        "id,class,route\nbad id!,bus_led,K1\n,bus_led,K1\nok-1,,K1\nok-2,bus_led\n",
    )]);
    expect_error(&r, "devices/fleet.csv", Some(2), "id", "not a valid id");
    expect_error(&r, "devices/fleet.csv", Some(3), "id", "missing display id");
    expect_error(
        &r,
        "devices/fleet.csv",
        Some(4),
        "class",
        "missing display class",
    );
    let p = r
        .problems
        .iter()
        .find(|p| p.message.contains("2 cells"))
        .unwrap();
    assert_eq!(p.line, Some(5));

    let r = load_with(&[("devices/fleet.csv", "name,class\nx,bus_led\n")]);
    expect_error(&r, "devices/fleet.csv", Some(1), "id", "no `id` column");
}

#[test]
fn bad_classes() {
    let r = load_with(&[(
        "devices/classes.toml",
        "[class.bus_led]\nmax_chars = 0\ncharset = \"big5\"\nduration = \"soon\"\n[class.taxi_top]\nmax_chars = 8\ncharset = \"gb2312\"\nduration = \"0s\"\n[class.brt_screen]\ncharset = \"utf-8\"\ncolour = \"red\"\n",
    )]);
    let f = "devices/classes.toml";
    expect_error(&r, f, Some(2), "class.bus_led.max_chars", "at least 1");
    expect_error(
        &r,
        f,
        Some(3),
        "class.bus_led.charset",
        "unknown charset \"big5\"",
    );
    expect_error(
        &r,
        f,
        Some(4),
        "class.bus_led.duration",
        "invalid duration \"soon\"",
    );
    expect_error(&r, f, Some(8), "class.taxi_top.duration", "more than zero");
    expect_error(
        &r,
        f,
        Some(9),
        "class.brt_screen.max_chars",
        "missing required key `max_chars`",
    );
    let w = r.problems.iter().find(|p| !p.is_error()).unwrap();
    assert_eq!(
        (w.line, w.field.as_deref()),
        (Some(11), Some("class.brt_screen.colour")),
        "{w}"
    );
    assert!(w.to_string().starts_with("warning: "));
    // The classes still exist, so the devices are not reported as of an unknown class.
    assert!(
        !r.problems
            .iter()
            .any(|p| p.message.contains("unknown class")),
        "{}",
        show(&r.problems)
    );
}

#[test]
fn led_matrix_fields_default_per_class_and_are_checked_when_written() {
    let r = load_with(&[(
        "devices/classes.toml",
        "[class.bus_led]\nmax_chars = 40\ncharset = \"gb2312\"\nwidth_px = 256\nscroll_px_per_s = 40\n[class.taxi_top]\nmax_chars = 12\ncharset = \"gb2312\"\n[class.brt_screen]\nmax_chars = 80\ncharset = \"utf-8\"\n[class.stop_screen]\nmax_chars = 60\ncharset = \"utf-8\"\nwidth_px = 300\n",
    )]);
    let c = r.catalog.as_ref().expect("valid");
    let led = |n: &str| (c.classes[n].width_px, c.classes[n].scroll_px_per_s);
    assert_eq!(led("bus_led"), (256, 40), "as written");
    assert_eq!(led("taxi_top"), (64, 24), "the taxi light's defaults");
    assert_eq!(led("brt_screen"), (384, 48));
    assert_eq!(
        led("stop_screen"),
        (300, 32),
        "the width written, the speed defaulted"
    );
    assert_eq!(led_defaults("tram_led"), led_defaults("bus_led"));

    let r = load_with(&[(
        "devices/classes.toml",
        "[class.bus_led]\nmax_chars = 40\ncharset = \"gb2312\"\nwidth_px = 0\nscroll_px_per_s = 5000\n[class.taxi_top]\nmax_chars = 12\ncharset = \"gb2312\"\nwidth_px = \"wide\"\nscroll_px_per_s = -3\n[class.brt_screen]\nmax_chars = 80\ncharset = \"utf-8\"\nwidth_px = 99999999999\n[class.stop_screen]\nmax_chars = 60\ncharset = \"utf-8\"\n",
    )]);
    let f = "devices/classes.toml";
    assert!(r.catalog.is_none());
    expect_error(&r, f, Some(4), "class.bus_led.width_px", "8 to 4096");
    expect_error(&r, f, Some(5), "class.bus_led.scroll_px_per_s", "1 to 1000");
    expect_error(
        &r,
        f,
        Some(9),
        "class.taxi_top.width_px",
        "expected an integer",
    );
    expect_error(&r, f, Some(10), "class.taxi_top.scroll_px_per_s", "not -3");
    expect_error(
        &r,
        f,
        Some(14),
        "class.brt_screen.width_px",
        "not 99999999999",
    );
}

#[test]
fn toml_syntax_error_has_a_line() {
    let r = load_with(&[(
        "schedules/feeds.toml",
        "timezone = \"Asia/Shanghai\"\n\n[[feed]\nid = 1\n",
    )]);
    let p = r.problems.iter().find(|p| p.is_error()).unwrap();
    assert_eq!(p.file, "schedules/feeds.toml");
    assert_eq!(p.line, Some(3), "{p}");
    assert!(p.message.contains("TOML syntax error"), "{p}");
}

#[test]
fn bad_feeds() {
    let r = load_with(&[(
        "schedules/feeds.toml",
        r#"
[[feed]]
id = "bus-led-all"
select = { class = "bus_led" }
interval = "0s"

[[feed]]
id = "taxi-all"
select = { class = "taxi_top" }
interval = "often"
daypart = "* * 25 * * *"

[[feed]]
id = "brt"
select = { class = "brt_screen" }
daypart = "0 6-22 * * *"
speed = 3

[[feed]]
id = "brt"
select = { class = "brt_screen" }

[[feed]]
id = "bad id"
select = { route = "nowhere" }
"#,
    )]);
    let f = "schedules/feeds.toml";
    expect_error(&r, f, Some(5), "feed[1].interval", "more than zero");
    expect_error(
        &r,
        f,
        Some(10),
        "feed[2].interval",
        "invalid duration \"often\"",
    );
    expect_error(
        &r,
        f,
        Some(11),
        "feed[2].daypart",
        "invalid cron daypart \"* * 25 * * *\"",
    );
    expect_error(
        &r,
        f,
        Some(16),
        "feed[3].daypart",
        "invalid cron daypart \"0 6-22 * * *\"",
    );
    expect_error(
        &r,
        f,
        Some(20),
        "feed[4].id",
        "duplicate feed id \"brt\" (also at line 14)",
    );
    expect_error(&r, f, Some(24), "feed[5].id", "not a valid id");
    let w = r
        .problems
        .iter()
        .find(|p| p.field.as_deref() == Some("feed[3].speed"))
        .unwrap();
    assert_eq!((w.severity, w.line), (Severity::Warning, Some(17)));
}

#[test]
fn feed_matching_no_display_is_only_a_warning() {
    let r = load_with(&[(
        "schedules/feeds.toml",
        "[[feed]]\nid = \"bus-led-all\"\nselect = { class = \"bus_led\" }\n[[feed]]\nid = \"taxi-all\"\nselect = { class = \"taxi_top\" }\n[[feed]]\nid = \"brt\"\nselect = { route = \"Z9\" }\n",
    )]);
    assert_eq!(r.errors(), 0, "{}", show(&r.problems));
    let ws: Vec<&Problem> = r
        .problems
        .iter()
        .filter(|p| p.message.contains("matches no display"))
        .collect();
    assert_eq!(ws.len(), 1, "{}", show(&r.problems));
    let w = ws[0];
    assert_eq!(w.file, "schedules/feeds.toml");
    assert_eq!(
        (w.line, w.field.as_deref()),
        (Some(9), Some("feed[3].select"))
    );
    assert!(r.catalog.is_some());
    // The BRT ad set plays only on that feed.
    assert!(r
        .problems
        .iter()
        .any(|p| p.message.contains("reaches no display")));
}

#[test]
fn adset_errors_name_line_and_field() {
    let r = load_with(&[(
        "schedules/adsets/wenming.toml",
        r#"id = "wenming-2026-12"
valid_from = "2026-12-31"
valid_until = "2026-12-01"
feeds = ["bus-led-all", "no-such-feed"]

[[slogan]]
id = "a"
text = "讲文明 树新风"
weight = 0

[[slogan]]
id = "a"
text = ""

[[slogan]]
id = "bad id"
text = "们"
colour = "red"
[slogan.text_by_class]
taxi_tpo = "x"
"#,
    )]);
    let f = "schedules/adsets/wenming.toml";
    expect_error(&r, f, Some(3), "valid_until", "is not after valid_from");
    expect_error(
        &r,
        f,
        Some(4),
        "feeds",
        "unknown feed \"no-such-feed\" (known: bus-led-all, taxi-all, brt)",
    );
    expect_error(
        &r,
        f,
        Some(9),
        "slogan[1].weight",
        "weight must be 1 to 4294967295, not 0",
    );
    expect_error(
        &r,
        f,
        Some(12),
        "slogan[2].id",
        "duplicate slogan id \"a\" (also at line 7)",
    );
    expect_error(&r, f, Some(13), "slogan[2].text", "empty text");
    expect_error(&r, f, Some(16), "slogan[3].id", "not a valid id");
    expect_error(
        &r,
        f,
        Some(20),
        "slogan[3].text_by_class.taxi_tpo",
        "unknown class \"taxi_tpo\"",
    );
    let w = r
        .problems
        .iter()
        .find(|p| p.field.as_deref() == Some("slogan[3].colour"))
        .unwrap();
    assert_eq!((w.severity, w.line), (Severity::Warning, Some(18)));
}

#[test]
fn adset_text_checked_for_every_class_it_reaches() {
    // All feeds (no `feeds` key): reaches bus_led, taxi_top and brt_screen.
    let r = load_with(&[(
        "schedules/adsets/wenming.toml",
        r#"id = "w"
valid_from = "2026-12-01T06:00:00+08:00"
valid_until = "2026-12-02"

[[slogan]]
id = "long"
text = "文明出行从我做起礼让行人"

[[slogan]]
id = "x"
text = "讲𠀀明"
[slogan.text_by_class]
taxi_top = "們好"
"#,
    )]);
    let f = "schedules/adsets/wenming.toml";
    expect_error(
        &r,
        f,
        Some(7),
        "slogan[1].text",
        "12 characters, more than the 8 that class taxi_top can show",
    );
    expect_error(
        &r,
        f,
        Some(11),
        "slogan[2].text",
        "slogan \"x\": text \"讲𠀀明\": character '𠀀' at position 2 cannot be drawn by class bus_led (gb2312)",
    );
    expect_error(
        &r,
        f,
        Some(13),
        "slogan[2].text_by_class.taxi_top",
        "character '們' at position 1 cannot be drawn by class taxi_top (gb2312)",
    );
    // The overridden class is not checked against the main text; brt_screen is utf-8.
    assert!(!r.problems.iter().any(|p| p
        .message
        .contains("'𠀀' at position 2 cannot be drawn by class taxi_top")));
    assert!(
        !r.problems.iter().any(|p| p.message.contains("brt_screen")),
        "{}",
        show(&r.problems)
    );
    assert_eq!(r.errors(), 3, "{}", show(&r.problems));
}

#[test]
fn adset_only_checked_for_the_feeds_it_plays_on() {
    // An emoji is fine on the utf-8 BRT screens only.
    let r = load_with(&[]);
    assert!(r.catalog.is_some());
    let r = load_with(&[(
        "schedules/adsets/brt.json",
        r#"{"id": "brt-2026", "valid_from": "2026-01-01", "valid_until": "2026-02-01",
            "feeds": ["brt", "taxi-all"], "slogan": [{"id": "e", "text": "Be kind 😀"}]}"#,
    )]);
    expect_error(
        &r,
        "schedules/adsets/brt.json",
        Some(2),
        "slogan[1].text",
        "character '😀' at position 9 cannot be drawn by class taxi_top",
    );
}

#[test]
fn bad_dates() {
    let r = load_with(&[(
        "schedules/adsets/wenming.toml",
        "id = \"w\"\nvalid_from = \"2026-13-01\"\nvalid_until = \"tomorrow\"\n[[slogan]]\nid = \"a\"\ntext = \"讲文明\"\n",
    )]);
    let f = "schedules/adsets/wenming.toml";
    expect_error(
        &r,
        f,
        Some(2),
        "valid_from",
        "invalid date or time \"2026-13-01\"",
    );
    expect_error(
        &r,
        f,
        Some(3),
        "valid_until",
        "invalid date or time \"tomorrow\"",
    );

    // Unquoted TOML dates work too.
    let r = load_with(&[(
        "schedules/adsets/wenming.toml",
        "id = \"w\"\nvalid_from = 2026-12-01\nvalid_until = 2026-12-01T18:00:00+08:00\n[[slogan]]\nid = \"a\"\ntext = \"讲文明\"\n",
    )]);
    assert_eq!(r.errors(), 0, "{}", show(&r.problems));
    let c = r.catalog.unwrap();
    let w = c.adsets.iter().find(|a| a.id.as_str() == "w").unwrap();
    assert_eq!(
        w.valid_until,
        Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap()
    );
}

#[test]
fn duplicate_adset_id_across_files() {
    let r = load_with(&[("schedules/adsets/zz.toml", ADSET)]);
    expect_error(
        &r,
        "schedules/adsets/zz.toml",
        Some(2),
        "id",
        "duplicate ad set id \"wenming-2026-12\"",
    );
    let p = r.problems.iter().find(|p| p.is_error()).unwrap();
    assert!(p.message.contains("schedules/adsets/wenming.toml"), "{p}");
}

#[test]
fn invalid_adset_id() {
    let r = load_with(&[(
        "schedules/adsets/wenming.toml",
        "id = \"civility month\"\nvalid_from = \"2026-12-01\"\nvalid_until = \"2026-12-02\"\n[[slogan]]\nid = \"a\"\ntext = \"讲文明\"\n",
    )]);
    expect_error(
        &r,
        "schedules/adsets/wenming.toml",
        Some(1),
        "id",
        "not a valid id",
    );
}

fn ctx_catalog() -> crate::core::model::Catalog {
    let r = load_with(&[]);
    r.catalog.unwrap()
}

#[test]
fn parse_adset_upload_toml_and_json() {
    let c = ctx_catalog();
    let ctx = AdSetContext::of(&c);
    let a = parse_adset(ADSET, false, "upload", &ctx).unwrap();
    assert_eq!(a.id.as_str(), "wenming-2026-12");
    assert_eq!(a.rev, 1);
    let j = parse_adset(ADSET_JSON, true, "upload", &ctx).unwrap();
    assert_eq!(j.slogans[0].text, "Be kind 😀");

    let errs = parse_adset("{\"id\": \"x\",\n\"valid_from\": }", true, "upload", &ctx).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].file.as_str(), errs[0].line), ("upload", Some(2)));
    assert!(errs[0].message.contains("JSON syntax error"), "{}", errs[0]);

    // JSON problems name their line as well; null means absent.
    let errs = parse_adset(
        "{\"id\": \"x\", \"title\": null,\n \"valid_from\": \"2026-12-01\",\n \"valid_until\": \"2026-12-02\",\n \"slogan\": [\n  {\"id\": \"a\", \"text\": \"\\u8bb2\"},\n  {\"id\": \"b\",\n   \"weight\": 0, \"text\": \"x\"}]}",
        true,
        "upload",
        &ctx,
    )
    .unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        (errs[0].line, errs[0].field.as_deref()),
        (Some(7), Some("slogan[2].weight"))
    );

    let errs = parse_adset("[1, 2]", true, "upload", &ctx).unwrap_err();
    assert!(
        errs[0]
            .message
            .contains("expected the document to be a table"),
        "{}",
        errs[0]
    );

    let errs = parse_adset("id = \"x\"\n", false, "upload", &ctx).unwrap_err();
    let fields: Vec<&str> = errs.iter().filter_map(|p| p.field.as_deref()).collect();
    assert_eq!(fields, ["valid_from", "valid_until", "slogan"]);

    let (a, ps) = parse_adset_checked(
        "id = \"x\"\nvalid_from = \"2026-12-01\"\nvalid_until = \"2026-12-02\"\nextra = 1\n[[slogan]]\nid = \"a\"\ntext = \"讲文明\"\n",
        false,
        "upload",
        &ctx,
    );
    assert!(a.is_some());
    assert_eq!(ps.len(), 1);
    assert_eq!(
        ps[0].to_string(),
        "warning: upload:4: field `extra`: unknown key `extra` is ignored"
    );
}

fn class(name: &str, max: usize, charset: Charset) -> ClassProfile {
    ClassProfile {
        name: name.into(),
        max_chars: max,
        charset,
        duration: Duration::from_secs(15),
        width_px: 192,
        scroll_px_per_s: 32,
    }
}

#[test]
fn gb2312_check() {
    let gb = class("taxi_top", 100, Charset::Gb2312);
    assert!(check_text("讲文明 树新风", &gb).is_empty());
    assert!(check_text("Hello, world! 0123 ~", &gb).is_empty());
    assert!(check_text("礼让斑马线，文明出行。“你好”", &gb).is_empty());
    assert!(check_text("第１名 ＡＢＣ ①②", &gb).is_empty());
    for bad in ['𠀀', '😀', '們', '€', '\u{e000}', 'ⅰ', '™', '喆'] {
        let text = format!("讲{bad}");
        let m = check_text(&text, &gb);
        assert_eq!(m.len(), 1, "{bad:?}: {m:?}");
        assert_eq!(
            m[0],
            format!("character {bad:?} at position 2 cannot be drawn by class taxi_top (gb2312)")
        );
    }
    let utf = class("brt_screen", 100, Charset::Utf8);
    assert!(check_text("們 😀 𠀀", &utf).is_empty());
}

#[test]
fn gb2312_has_exactly_its_7445_characters() {
    let n = (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .filter(|c| !c.is_ascii() && text::gb2312_can_draw(*c))
        .count();
    assert_eq!(n, 7445);
}

#[test]
fn length_check_counts_chars() {
    let c = class("bus_led", 3, Charset::Utf8);
    assert!(check_text("讲文明", &c).is_empty());
    assert_eq!(
        check_text("讲文明树", &c),
        vec!["4 characters, more than the 3 that class bus_led can show".to_string()]
    );
    // Many bad characters: capped list.
    let gb = class("g", 1000, Charset::Gb2312);
    assert_eq!(check_text(&"😀".repeat(50), &gb).len(), 11);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
    assert_eq!(parse_duration(" 3m "), Ok(Duration::from_secs(180)));
    assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("").is_err());
    assert!(parse_duration("fast").is_err());
    assert!(parse_duration("-3s").is_err());
}

#[test]
fn problem_display() {
    let p = Problem::error(
        "devices/fleet.csv",
        Some(3),
        Some("class"),
        "unknown class \"bus_lde\"",
    );
    assert_eq!(
        p.to_string(),
        "devices/fleet.csv:3: field `class`: unknown class \"bus_lde\""
    );
    let w = Problem::warning("schedules/feeds.toml", None, None, "no feed");
    assert_eq!(w.to_string(), "warning: schedules/feeds.toml: no feed");
    assert_eq!(
        serde_json::to_value(&p).unwrap()["severity"],
        serde_json::json!("error")
    );
}

fn small_classes() -> BTreeMap<String, ClassProfile> {
    [
        class("bus_led", 10, Charset::Gb2312),
        class("brt_screen", 20, Charset::Utf8),
    ]
    .into_iter()
    .map(|c| (c.name.clone(), c))
    .collect()
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn ctx_parts() -> (
        BTreeMap<String, ClassProfile>,
        Vec<crate::core::model::Feed>,
        Vec<crate::core::model::Device>,
    ) {
        let classes = small_classes();
        let mut ps = Vec::new();
        let devices = devices::parse_devices_csv(
            "id,class,route\nb1,bus_led,K1\nr1,brt_screen,B1\n",
            "d.csv",
            Some(&classes),
            &mut Default::default(),
            &mut ps,
        );
        let ctx = feeds::FeedContext {
            classes: Some(&classes),
            devices: &devices,
            now: test_now(),
        };
        let (_, feeds) = feeds::parse_feeds(
            "[[feed]]\nid = \"all\"\nselect = {}\n",
            "f.toml",
            &ctx,
            &mut ps,
        );
        assert!(ps.is_empty(), "{ps:?}");
        (classes, feeds, devices)
    }

    fn toml_ish() -> impl Strategy<Value = String> {
        let atoms = prop::sample::select(vec![
            "id = \"a\"\n",
            "valid_from = \"2026-12-01\"\n",
            "valid_until = 2026-12-02\n",
            "[[slogan]]\n",
            "text = \"讲文明\"\n",
            "weight = -1\n",
            "[slogan.text_by_class]\n",
            "bus_led = \"😀\"\n",
            "feeds = [\"all\", 3]\n",
            "priority = 99999999999\n",
            "[x]\n",
            "a.b.c = { d = [1, { e = 2 }] }\n",
            "\"\n",
            "= =\n",
            "[[feed]]\n",
            "select = { class = [] }\n",
            "interval = \"0s\"\n",
            "daypart = \"* * * * *\"\n",
            "[class.bus_led]\n",
            "max_chars = 1e3\n",
            "charset = 7\n",
            "timezone = \"\"\n",
            "id,class\n",
            ",,,\n",
            "\"a\"\"b\",c\n",
            "\r\n",
        ]);
        prop::collection::vec(atoms, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn parsers_never_panic_on_arbitrary_text(s in ".{0,300}") {
            let (classes, feeds, devices) = ctx_parts();
            let ctx = AdSetContext { timezone: DEFAULT_TIMEZONE, classes: &classes, feeds: &feeds, devices: &devices };
            let _ = parse_adset(&s, false, "u", &ctx);
            let _ = parse_adset(&s, true, "u", &ctx);
            let mut ps = Vec::new();
            let _ = devices::parse_devices_csv(&s, "d.csv", Some(&classes), &mut Default::default(), &mut ps);
            let _ = devices::parse_classes(&s, "c.toml", &mut ps);
            let ctx = feeds::FeedContext { classes: Some(&classes), devices: &devices, now: test_now() };
            let _ = feeds::parse_feeds(&s, "f.toml", &ctx, &mut ps);
            let _ = check_text(&s, &classes["bus_led"]);
        }

        #[test]
        fn parsers_never_panic_on_toml_like_text(s in toml_ish()) {
            let (classes, feeds, devices) = ctx_parts();
            let ctx = AdSetContext { timezone: DEFAULT_TIMEZONE, classes: &classes, feeds: &feeds, devices: &devices };
            let r = parse_adset(&s, false, "u", &ctx);
            if let Err(ps) = r {
                prop_assert!(ps.iter().any(Problem::is_error));
                for p in &ps {
                    if let Some(l) = p.line { prop_assert!(l >= 1 && l <= s.lines().count().max(1) + 1, "{p}"); }
                }
            }
            let mut ps = Vec::new();
            let _ = devices::parse_devices_csv(&s, "d.csv", Some(&classes), &mut Default::default(), &mut ps);
            let _ = devices::parse_classes(&s, "c.toml", &mut ps);
            let ctx = feeds::FeedContext { classes: Some(&classes), devices: &devices, now: test_now() };
            let _ = feeds::parse_feeds(&s, "f.toml", &ctx, &mut ps);
        }

        #[test]
        fn cron_never_panics(s in "[0-9*/,\\-A-Za-z? ]{0,40}") {
            let _ = daypart::parse_cron(&s);
        }
    }
}

#[test]
fn json_reader_keeps_spans_on_tricky_json() {
    let text = " {\"a\\\"b\": [1, -0, 1.5E-3, 1e5, true, false, null, \"x\\\\\", \"\\ud83d\\ude00\"],\n\"c\" : {\"d\": {}} , \"e\": [] } ";
    let n = tree::parse_json(text).unwrap();
    assert!(n.span.is_some());
    let tree::Kind::Table(entries) = &n.kind else {
        panic!("{n:?}")
    };
    assert_eq!(entries[0].0.name, "a\"b");
    assert_eq!(entries[1].0.name, "c");
    assert_eq!(
        tree::line_of(text, entries[1].1.span.clone().unwrap().start),
        2
    );
    let tree::Kind::Array(items) = &entries[0].1.kind else {
        panic!()
    };
    assert!(matches!(&items[8].kind, tree::Kind::Str(s) if s == "😀"));
}

#[test]
fn comments_and_crlf_keep_line_numbers() {
    let r = load_with(&[(
        "devices/fleet.csv",
        "# displays\nid,class\nbus-1,bus_led\ntaxi-1,taxi_top\n",
    )]);
    assert_eq!(r.errors(), 0, "{}", show(&r.problems));
    let r = load_with(&[(
        "devices/fleet.csv",
        "# displays\r\n\r\nid,class\r\nbus-1,bus_led\r\n# taxis\r\n\r\ntaxi-1,taxi\r\n",
    )]);
    expect_error(
        &r,
        "devices/fleet.csv",
        Some(7),
        "class",
        "unknown class \"taxi\"",
    );
}

/// Every problem of `sources`, as `check` prints them.
fn problems_of(sources: &Sources) -> Vec<String> {
    parse(sources, test_now())
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect()
}

#[test]
fn absent_folders_and_files_are_problems_in_order() {
    let mut s = sources(&[]);
    s.devices.found = Err(Absent::NotFound);
    assert_eq!(
        problems_of(&s),
        [
            "devices: directory not found",
            "schedules/feeds.toml: file not found",
            "warning: schedules/adsets: no ad set directory: only ad sets uploaded over HTTP will play",
        ]
    );

    let mut s = sources(&valid_files());
    s.schedules.found = Err(Absent::NotADirectory);
    let r = parse(&s, test_now());
    assert!(r.catalog.is_none());
    assert_eq!(
        r.problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        ["schedules: is not a directory"]
    );
}

#[test]
fn unreadable_files_are_errors_where_they_are_listed() {
    let mut s = sources(&valid_files());
    let Ok(devices) = &mut s.devices.found else {
        panic!("devices folder")
    };
    devices.classes.content = Content::Unreadable("permission denied".into());
    let Ok(lists) = &mut devices.lists else {
        panic!("lists")
    };
    lists.insert(
        1,
        SourceFile {
            name: "devices/gbk.csv".into(),
            content: Content::NotUtf8 { line: 2 },
        },
    );
    lists.push(SourceFile::text(
        "devices/zz.csv",
        "id,class\nzz-1,no_class\n",
    ));
    assert_eq!(
        problems_of(&s),
        [
            "devices/classes.toml: cannot read: permission denied",
            "devices/gbk.csv:2: the file is not UTF-8 text (save it as UTF-8)",
        ],
        "without classes, no class is checked: the unreadable file is the one root cause"
    );
}

#[test]
fn unlistable_folders_are_errors_naming_them() {
    let mut s = sources(&valid_files());
    if let Ok(devices) = &mut s.devices.found {
        devices.lists = Err("permission denied".into());
    }
    if let Ok(schedules) = &mut s.schedules.found {
        schedules.adsets.found = Ok(Err("permission denied".into()));
    }
    let problems = problems_of(&s);
    assert_eq!(
        problems,
        [
            "devices: cannot list the directory: permission denied",
            "schedules/adsets: cannot list the directory: permission denied",
        ],
        "the folders are the root cause: no follow-on problem of feeds with no display"
    );
}

#[test]
fn adset_format_follows_the_extension_in_any_case() {
    assert!(adset_is_json("schedules/adsets/brt.JSON"));
    assert!(adset_is_json("brt.json"));
    assert!(!adset_is_json("schedules/adsets/wenming.TOML"));
    assert!(!adset_is_json("schedules/adsets.json/wenming.toml"));
    let mut files = valid_files();
    files.retain(|(n, _)| !n.starts_with("schedules/adsets/"));
    files.push(("schedules/adsets/BRT.JSON", ADSET_JSON));
    files.push(("schedules/adsets/Wenming.Toml", ADSET));
    let r = parse(&sources(&files), test_now());
    assert_eq!(r.errors(), 0, "{}", show(&r.problems));
    let ids: Vec<String> = r
        .catalog
        .map(|c| c.adsets.iter().map(|a| a.id.to_string()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["brt-2026", "wenming-2026-12"]);
}

#[test]
fn a_city_without_displays_is_an_error() {
    // No display list at all (`devices/city.csv` deleted).
    let mut files = valid_files();
    files.retain(|(n, _)| !n.ends_with(".csv"));
    let r = parse(&sources(&files), test_now());
    assert!(r.catalog.is_none(), "{}", show(&r.problems));
    assert_eq!(
        (
            r.problems[0].file.as_str(),
            r.problems[0].line,
            r.problems[0].field.as_deref()
        ),
        ("devices", None, None)
    );
    assert!(
        r.problems[0].message.contains("no display list (*.csv)")
            && r.problems[0].message.contains("no displays"),
        "{}",
        show(&r.problems)
    );
    assert!(
        !r.problems
            .iter()
            .any(|p| p.message.contains("matches no display")),
        "only the root cause: {}",
        show(&r.problems)
    );
    // Lists with a header and no row.
    let r = load_with(&[
        ("devices/fleet.csv", "id,class\n"),
        ("devices/brt.csv", "id,class,route\n"),
    ]);
    assert!(r.catalog.is_none());
    let p = r.problems.iter().find(|p| p.is_error()).expect("an error");
    assert_eq!(p.file, "devices");
    assert!(
        p.message.contains("devices/brt.csv, devices/fleet.csv"),
        "{p}"
    );
}

/// [`FEEDS`] with the first feed's interval and daypart (lines 7 and 8) replaced.
fn bus_feed(interval: &str, daypart: &str) -> &'static str {
    let text = FEEDS.replacen(
        "interval = \"3m\"\ndaypart = \"* * 6-22 * * *\"",
        &format!("interval = \"{interval}\"\ndaypart = \"{daypart}\""),
        1,
    );
    assert_ne!(text, FEEDS);
    Box::leak(text.into_boxed_str())
}

/// The severity, line and field of each problem whose message holds `needle`.
fn severity_field(r: &Report, needle: &str) -> Vec<(Severity, Option<usize>, String)> {
    r.problems
        .iter()
        .filter(|p| p.message.contains(needle))
        .map(|p| (p.severity, p.line, p.field.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn intervals_outside_one_second_to_a_day_are_errors_by_name() {
    let feeds = |interval: &str| bus_feed(interval, "* * 6-22 * * *");
    for (interval, needle) in [
        ("1ms", "shorter than 1s"),
        ("999ms", "shorter than 1s"),
        ("100y", "longer than 24h"),
        ("25h", "longer than 24h"),
    ] {
        let r = load_with(&[("schedules/feeds.toml", feeds(interval))]);
        expect_error(
            &r,
            "schedules/feeds.toml",
            Some(7),
            "feed[1].interval",
            needle,
        );
    }
    for ok in ["1s", "24h"] {
        let r = load_with(&[("schedules/feeds.toml", feeds(ok))]);
        assert_eq!(r.errors(), 0, "{ok}: {}", show(&r.problems));
    }
    // Shorter than the 15 s a bus board keeps a slogan on screen: a warning.
    let r = load_with(&[("schedules/feeds.toml", feeds("5s"))]);
    assert_eq!(r.errors(), 0, "{}", show(&r.problems));
    assert_eq!(
        severity_field(&r, "each play is cut short"),
        [(Severity::Warning, Some(7), "feed[1].interval".to_owned())],
        "{}",
        show(&r.problems)
    );
}

#[test]
fn dayparts_that_would_never_play_are_errors_by_name() {
    let feeds = |daypart: &str| bus_feed("3m", daypart);
    let r = load_with(&[("schedules/feeds.toml", feeds("0 0 0 30 2 *"))]);
    expect_error(
        &r,
        "schedules/feeds.toml",
        Some(8),
        "feed[1].daypart",
        "matches no day in the next year",
    );
    let r = load_with(&[("schedules/feeds.toml", feeds("* * * * * * 2020"))]);
    expect_error(
        &r,
        "schedules/feeds.toml",
        Some(8),
        "feed[1].daypart",
        "matches no day in the next year",
    );
    // Once a day for one second: whether a slot falls in it is the grid's business, and
    // the catalog answers as the scheduler would.
    let feed = Id::parse("bus-led-all").expect("id");
    let stagger = crate::core::rotation::stagger(&feed, Duration::from_secs(180));
    let r = load_with(&[("schedules/feeds.toml", feeds("@daily"))]);
    if stagger.as_millis() % 180_000 >= 1000 {
        expect_error(
            &r,
            "schedules/feeds.toml",
            Some(8),
            "feed[1].daypart",
            "none of them falls on a play slot",
        );
    } else {
        assert_eq!(
            severity_field(&r, "less than one interval")[0].0,
            Severity::Warning
        );
    }
    // An hour a day is plenty.
    let r = load_with(&[("schedules/feeds.toml", feeds("* * 7 * * *"))]);
    assert_eq!(r.errors() + r.warnings(), 0, "{}", show(&r.problems));
    // One second a day, the one where the 20 s grid falls at 08:00 (a multiple of 20 s from
    // the epoch in Shanghai): it plays, but is open less than an interval a day.
    let second = crate::core::rotation::stagger(&feed, Duration::from_secs(20)).as_secs();
    let r = load_with(&[(
        "schedules/feeds.toml",
        bus_feed("20s", &format!("{second} 0 8 * * *")),
    )]);
    assert_eq!(r.errors(), 0, "{}", show(&r.problems));
    assert_eq!(
        severity_field(&r, "less than one interval"),
        [(Severity::Warning, Some(8), "feed[1].daypart".to_owned())],
        "{}",
        show(&r.problems)
    );
    // Out of range, with the range in words.
    let r = load_with(&[("schedules/feeds.toml", feeds("* * 24 * * *"))]);
    expect_error(
        &r,
        "schedules/feeds.toml",
        Some(8),
        "feed[1].daypart",
        "the hour field must be 0 to 23, not 24",
    );
}

#[test]
fn a_commented_out_display_row_is_a_warning_naming_its_line() {
    let fleet = "id,class,route,district,operator\n# the K1 buses\nbus-K1-0421,bus_led,K1,haizhou,city-bus\n#bus-K1-0422,bus_led,K1,haizhou,city-bus\ntaxi-0007,taxi_top,,lianyun,jiaotong-taxi\n";
    let r = load_with(&[("devices/fleet.csv", fleet)]);
    assert_eq!(r.errors(), 0, "{}", show(&r.problems));
    let found: Vec<&Problem> = r
        .problems
        .iter()
        .filter(|p| p.file == "devices/fleet.csv")
        .collect();
    assert_eq!(found.len(), 1, "a note is no row: {}", show(&r.problems));
    assert_eq!(
        (found[0].severity, found[0].line, found[0].field.as_deref()),
        (Severity::Warning, Some(4), Some("id"))
    );
    assert!(
        found[0].message.contains("\"#bus-K1-0422\" is left out"),
        "{}",
        found[0]
    );
    let ids: Vec<&str> = r
        .catalog
        .as_ref()
        .expect("catalog")
        .devices
        .iter()
        .map(|d| d.id.as_str())
        .collect();
    assert!(!ids.contains(&"bus-K1-0422"));
}

#[test]
fn a_slogan_id_in_two_ad_sets_is_an_error_naming_both_unless_it_is_the_same_slogan() {
    let other = |text: &str| -> &'static str {
        Box::leak(
            format!("id = \"winter\"\nvalid_from = \"2026-12-01\"\nvalid_until = \"2026-12-31\"\nfeeds = [\"bus-led-all\"]\n\n[[slogan]]\nid = \"li-rang\"\ntext = \"{text}\"\n")
                .into_boxed_str(),
        )
    };
    let r = load_with(&[("schedules/adsets/winter.toml", other("文明乘车"))]);
    expect_error(
        &r,
        "schedules/adsets/winter.toml",
        Some(1),
        "slogan",
        "slogan \"li-rang\" is also in ad set \"wenming-2026-12\" (schedules/adsets/wenming.toml) with another text",
    );
    let r = load_with(&[("schedules/adsets/winter.toml", other("礼让斑马线"))]);
    assert_eq!(r.errors(), 0, "{}", show(&r.problems));
    assert_eq!(
        severity_field(&r, "with the same texts"),
        [(Severity::Warning, Some(1), "slogan".to_owned())]
    );
}

#[test]
fn range_errors_say_the_range_and_dates_show_as_written() {
    let r = load_with(&[(
        "schedules/adsets/wenming.toml",
        "id = \"w\"\nvalid_from = \"2026-12-31\"\nvalid_until = \"2026-12-30\"\npriority = 99999999999\n[[slogan]]\nid = \"a\"\ntext = \"讲文明\"\nweight = 5000000000\n",
    )]);
    let f = "schedules/adsets/wenming.toml";
    expect_error(
        &r,
        f,
        Some(3),
        "valid_until",
        "valid_until \"2026-12-30\" is not after valid_from \"2026-12-31\"",
    );
    expect_error(
        &r,
        f,
        Some(4),
        "priority",
        "priority must be -2147483648 to 2147483647, not 99999999999",
    );
    expect_error(
        &r,
        f,
        Some(8),
        "slogan[1].weight",
        "weight must be 1 to 4294967295, not 5000000000",
    );

    // JSON: an integer past i64 is an integer out of range, not "a float".
    let ctx = ctx_catalog();
    let e = parse_adset(
        "{\"id\": \"j\", \"valid_from\": \"2026-12-01\", \"valid_until\": \"2026-12-02\",\n \"slogans\": [{\"id\": \"a\", \"text\": \"x\", \"weight\": 18446744073709551616}]}",
        true,
        "upload",
        &AdSetContext::of(&ctx),
    )
    .expect_err("too heavy");
    assert_eq!(e.len(), 1, "{}", show(&e));
    assert!(
        e[0].message
            .contains("weight must be 1 to 4294967295, not 18446744073709551616"),
        "{}",
        e[0]
    );
    assert_eq!(e[0].line, Some(2));
}

#[test]
fn a_json_null_slogan_beside_slogans_is_no_slogan_list() {
    let ctx = ctx_catalog();
    let (a, problems) = parse_adset_checked(
        "{\"id\": \"j\", \"valid_from\": \"2026-12-01\", \"valid_until\": \"2026-12-02\", \"slogan\": null,\n \"slogans\": [{\"id\": \"a\", \"text\": \"讲文明\"}]}",
        true,
        "upload",
        &AdSetContext::of(&ctx),
    );
    assert!(
        problems.iter().all(|p| !p.is_error()),
        "{}",
        show(&problems)
    );
    assert_eq!(a.expect("ad set").slogans.len(), 1);
}

#[test]
fn lines_of_problems_are_found_by_offset_on_large_files() {
    let text: String = (0..5000).map(|i| format!("k{i} = {i}\n")).collect();
    let sink = tree::Sink::new("big.toml", &text);
    for (i, line) in text.lines().enumerate().step_by(97) {
        let at = text.find(line).expect("line");
        assert_eq!(sink.line(&Some(at..at + 1)), Some(i + 1));
        assert_eq!(tree::line_of(&text, at), i + 1);
    }
    assert_eq!(sink.line(&Some(text.len()..text.len())), Some(5001));
}

#[test]
fn a_reload_counts_the_displays_and_live_ad_sets_it_takes_away() {
    let old = load_with(&[]).catalog.expect("catalog");
    // Half of the bus list gone, one display renamed: 2 of 4 displays go.
    let new = load_with(&[(
        "devices/fleet.csv",
        "id,class,route,district,operator\nbus-K1-0421,bus_led,K1,haizhou,city-bus\nbus-K1-9999,bus_led,K1,haizhou,city-bus\n",
    )])
    .catalog
    .expect("catalog");
    let now = test_now();
    let [displays, adsets] = shrinkage(&old, &new, now);
    assert_eq!(
        (displays.before, displays.after, displays.removed),
        (4, 3, 2)
    );
    assert_eq!(displays.examples, ["bus-K1-0422", "taxi-0007"]);
    assert!(displays.exceeds(0.2) && !displays.exceeds(0.5));
    assert_eq!(
        displays.to_string(),
        "2 of 4 displays (50.0%) would go, 3 left (e.g. bus-K1-0422, taxi-0007)"
    );
    assert_eq!((adsets.before, adsets.removed), (2, 0));

    // An ad set file removed: one of the two that still play.
    let mut files = valid_files();
    files.retain(|(n, _)| !n.ends_with("brt.json"));
    let fewer = parse(&sources(&files), now).catalog.expect("catalog");
    let [_, adsets] = shrinkage(&old, &fewer, now);
    assert_eq!((adsets.before, adsets.removed), (2, 1));
    // One alone is how an operator retires a set in version control: it passes...
    assert!(!adsets.exceeds(0.2));
    // ...unless it is the last one, and two at once are a drop.
    assert!(Shrink::of_counts("ad sets", 1, 0).exceeds(0.2));
    let mut none = valid_files();
    none.retain(|(n, _)| !n.starts_with("schedules/adsets/"));
    let bare = parse(&sources(&none), now).catalog.expect("catalog");
    let [_, adsets] = shrinkage(&old, &bare, now);
    assert_eq!((adsets.before, adsets.after, adsets.removed), (2, 0, 2));
    assert!(adsets.exceeds(0.2));
    // Once an ad set has ended, removing its file takes nothing away.
    let after_both = Utc.with_ymd_and_hms(2027, 2, 1, 0, 0, 0).unwrap();
    let [_, adsets] = shrinkage(&old, &fewer, after_both);
    assert_eq!((adsets.before, adsets.removed), (0, 0));
    assert!(!adsets.exceeds(0.0));
}
