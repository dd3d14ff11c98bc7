//! What the fuzz targets share: the city's real files as the fixed part of each input, the
//! catalog as the daemon would load it, and the properties every report must have.
//!
//! The fuzzed file is always one of the operators' files; the others are the real ones from
//! `devices/` and `schedules/`, so that the checks across files (classes of displays, feeds of
//! ad sets, texts per class) run on the fuzzed one too.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use civicast::core::catalog::{
    self, AdSetContext, DeviceFiles, Folder, Problem, Report, ScheduleFiles, SourceFile, Sources,
};
use civicast::core::model::{AdSet, Catalog};

pub const CLASSES: &str = include_str!("../../devices/classes.toml");
pub const FEEDS: &str = include_str!("../../schedules/feeds.toml");
pub const ADSET: &str = include_str!("../../schedules/adsets/wenming-city.toml");
const CITY_CSV: &str = include_str!("../../devices/city.csv");

pub const CLASSES_NAME: &str = "devices/classes.toml";
pub const DEVICES_NAME: &str = "devices/city.csv";
pub const FEEDS_NAME: &str = "schedules/feeds.toml";
pub const ADSET_NAME: &str = "schedules/adsets/wenming-city.toml";

/// Rows of the city's display list kept per class: the whole list (thousands of rows) would
/// make each run re-read it and the fuzzer a hundred times slower, while a few rows of each
/// class reach every feed and every check the full list does.
const ROWS_PER_CLASS: usize = 3;

/// The header and a few displays of each class of the city's list.
pub fn devices_csv() -> &'static str {
    static CSV: OnceLock<String> = OnceLock::new();
    CSV.get_or_init(|| {
        let mut lines = CITY_CSV.lines();
        let mut out = String::new();
        if let Some(header) = lines.next() {
            out.push_str(header);
            out.push('\n');
        }
        let mut per_class: std::collections::HashMap<&str, usize> = Default::default();
        for line in lines {
            let class = line.split(',').nth(1).unwrap_or("");
            let n = per_class.entry(class).or_default();
            if *n < ROWS_PER_CLASS {
                *n += 1;
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    })
}

/// Text from fuzz bytes: invalid UTF-8 becomes U+FFFD rather than being thrown away, so every
/// input reaches the parsers (the shell refuses such files before parsing; see README.md).
pub fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The moment every parse is judged at (date windows, the daypart year ahead): fixed, so a
/// crash found once is found again.
fn fuzz_now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_795_996_800, 0).unwrap_or_default()
}

/// The catalog's files, in the form the shell hands them to [`catalog::parse`].
#[derive(Debug, Clone)]
pub struct Files {
    pub classes: String,
    pub devices: String,
    pub feeds: String,
    /// (name, text), in the order of their names, as the shell sorts them.
    pub adsets: Vec<(String, String)>,
}

impl Files {
    /// The city's real files (a few displays of each class, see [`devices_csv`]).
    pub fn real() -> Self {
        Files {
            classes: CLASSES.to_owned(),
            devices: devices_csv().to_owned(),
            feeds: FEEDS.to_owned(),
            adsets: vec![(ADSET_NAME.to_owned(), ADSET.to_owned())],
        }
    }

    pub fn sources(&self) -> Sources {
        Sources {
            devices: Folder {
                name: "devices".into(),
                found: Ok(DeviceFiles {
                    classes: SourceFile::text(CLASSES_NAME, self.classes.clone()),
                    lists: Ok(vec![SourceFile::text(DEVICES_NAME, self.devices.clone())]),
                }),
            },
            schedules: Folder {
                name: "schedules".into(),
                found: Ok(ScheduleFiles {
                    feeds: SourceFile::text(FEEDS_NAME, self.feeds.clone()),
                    adsets: Folder {
                        name: "schedules/adsets".into(),
                        found: Ok(Ok(self
                            .adsets
                            .iter()
                            .map(|(n, t)| SourceFile::text(n.clone(), t.clone()))
                            .collect())),
                    },
                }),
            },
        }
    }

    /// The text of the file a problem names, `None` for a folder.
    fn text_of(&self, name: &str) -> Option<&str> {
        match name {
            CLASSES_NAME => Some(&self.classes),
            DEVICES_NAME => Some(&self.devices),
            FEEDS_NAME => Some(&self.feeds),
            _ => self
                .adsets
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, t)| t.as_str()),
        }
    }

    /// Parses the files and checks the report's properties ([`check_problems`], and a
    /// catalog exactly when there is no error); the report.
    pub fn parse_checked(&self) -> Report {
        let report = catalog::parse(&self.sources(), fuzz_now());
        let known = |name: &str| -> Option<Option<&str>> {
            match name {
                "devices" | "schedules" | "schedules/adsets" => Some(None),
                _ => self.text_of(name).map(Some),
            }
        };
        check_problems(&report.problems, known);
        assert_eq!(
            report.catalog.is_some(),
            report.errors() == 0,
            "a catalog must come exactly when no problem is an error: {:?}",
            report.problems
        );
        if let Some(c) = &report.catalog {
            check_catalog(c, self);
        }
        report
    }
}

/// The number of lines of `text` as an editor shows them: a problem at the very end of a
/// file that ends with a newline is on the (empty) line after it.
pub fn line_count(text: &str) -> usize {
    text.bytes().filter(|b| *b == b'\n').count() + 1
}

/// Every problem names a file that was given (`known` answers `None` for a name that was
/// not, `Some(None)` for a folder and `Some(Some(text))` for a file); a line, when given, is
/// within that file's lines, and a folder has none; the message is not empty; the problem
/// prints starting with its file and line.
pub fn check_problems<'a>(problems: &[Problem], known: impl Fn(&str) -> Option<Option<&'a str>>) {
    for p in problems {
        let text = match known(&p.file) {
            Some(t) => t,
            None => panic!("problem names a file that was not given: {p:?}"),
        };
        assert!(
            !p.message.trim().is_empty(),
            "problem without a message: {p:?}"
        );
        match (text, p.line) {
            (_, Some(0)) => panic!("line 0 (lines are 1-based): {p:?}"),
            (None, Some(_)) => panic!("a folder's problem with a line: {p:?}"),
            (Some(t), Some(l)) => {
                let n = line_count(t);
                assert!(l <= n, "line {l} of a file of {n} lines: {p:?}");
            }
            (_, None) => {}
        }
        let shown = p.to_string();
        let shown = shown.strip_prefix("warning: ").unwrap_or(&shown);
        let head = match p.line {
            Some(l) => format!("{}:{l}: ", p.file),
            None => format!("{}: ", p.file),
        };
        assert!(
            shown.starts_with(&head),
            "{shown:?} does not start with {head:?}"
        );
    }
}

/// What a loaded catalog must hold whatever the files: display ids unique and each written in
/// the display list, every display of a known class, feed ids unique and written in
/// feeds.toml, every ad set's slogans non-empty and their texts written in its file.
pub fn check_catalog(c: &Catalog, files: &Files) {
    let mut ids = BTreeSet::new();
    for d in c.devices.iter() {
        assert!(ids.insert(d.id.as_str()), "display {} twice", d.id);
        assert!(
            files.devices.contains(d.id.as_str()),
            "display {} not in the list",
            d.id
        );
        assert!(
            c.classes.contains_key(&*d.class),
            "display {} of unknown class",
            d.id
        );
    }
    let mut feeds = BTreeSet::new();
    for f in &c.feeds {
        assert!(feeds.insert(f.id.as_str()), "feed {} twice", f.id);
    }
    let mut adsets = BTreeSet::new();
    for a in &c.adsets {
        assert!(adsets.insert(a.id.as_str()), "ad set {} twice", a.id);
        check_adset(a, &AdSetContext::of(c));
    }
}

/// An ad set that was accepted: dates in order, slogans present with unique ids and a
/// weight of at least one, feeds known, texts per class for known classes.
pub fn check_adset(a: &AdSet, ctx: &AdSetContext) {
    assert!(a.valid_from < a.valid_until, "{}: empty validity", a.id);
    assert!(!a.slogans.is_empty(), "{}: no slogan", a.id);
    let mut ids = BTreeSet::new();
    for s in &a.slogans {
        assert!(ids.insert(s.id.as_str()), "{}: slogan {} twice", a.id, s.id);
        assert!(s.weight >= 1, "{}: slogan {} of weight 0", a.id, s.id);
        assert!(!s.text.trim().is_empty(), "{}: slogan {} blank", a.id, s.id);
        for class in s.text_by_class.keys() {
            assert!(
                ctx.classes.contains_key(class),
                "{}: unknown class {class}",
                a.id
            );
        }
    }
    for f in a.feeds.iter().flatten() {
        assert!(
            ctx.feeds.iter().any(|x| &x.id == f),
            "{}: unknown feed {f}",
            a.id
        );
    }
}

/// The city's real catalog, loaded once: what uploaded ad sets are checked against.
pub fn real_catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let report = catalog::parse(&Files::real().sources(), fuzz_now());
        match report.catalog {
            Some(c) => c,
            None => panic!("the city's own files do not load: {:?}", report.problems),
        }
    })
}

/// Whether an instant can be written in RFC 3339, which has four-digit years only.
fn rfc3339_year(t: &chrono::DateTime<chrono::Utc>) -> bool {
    use chrono::Datelike;
    (0..=9999).contains(&t.year())
}

/// An accepted ad set written anew, as a JSON document in the upload's form, written
/// independently of the parser: its fields as the contract names them, instants in RFC 3339.
/// `None` when an instant has no RFC 3339 form.
pub fn adset_document(a: &AdSet) -> Option<serde_json::Value> {
    use serde_json::json;
    if !rfc3339_year(&a.valid_from) || !rfc3339_year(&a.valid_until) {
        return None;
    }
    let slogans: Vec<serde_json::Value> = a
        .slogans
        .iter()
        .map(|s| {
            let mut o = json!({"id": s.id.as_str(), "text": s.text, "weight": s.weight});
            if !s.text_by_class.is_empty() {
                o["text_by_class"] = json!(s.text_by_class);
            }
            o
        })
        .collect();
    let mut doc = json!({
        "id": a.id.as_str(),
        "title": a.title,
        "valid_from": a.valid_from.to_rfc3339(),
        "valid_until": a.valid_until.to_rfc3339(),
        "priority": a.priority,
        "slogan": slogans,
    });
    if let Some(feeds) = &a.feeds {
        doc["feeds"] = json!(feeds.iter().map(|f| f.as_str()).collect::<Vec<_>>());
    }
    Some(doc)
}

/// An uploaded ad set (`name` says TOML or JSON) checked against the real catalog: its
/// problems have the report's properties; it is accepted exactly when no problem is an
/// error; and once accepted, written anew as JSON and as TOML it reads back the same.
pub fn adset_checked(text: &str, is_json: bool, name: &str) {
    let cat = real_catalog();
    let ctx = AdSetContext::of(cat);
    let (adset, problems) = catalog::parse_adset_checked(text, is_json, name, &ctx);
    check_problems(&problems, |n| (n == name).then_some(Some(text)));
    let errors = problems.iter().filter(|p| p.is_error()).count();
    assert_eq!(
        adset.is_some(),
        errors == 0,
        "accepted with errors: {problems:?}"
    );
    let Some(adset) = adset else { return };
    check_adset(&adset, &ctx);
    let Some(doc) = adset_document(&adset) else {
        return;
    };
    let json = doc.to_string();
    match catalog::parse_adset(&json, true, "again.json", &ctx) {
        Ok(again) => assert_eq!(again, adset, "written as JSON: {json}"),
        Err(p) => panic!("accepted, but not once written as JSON {json}: {p:?}"),
    }
    let toml = match toml::to_string(&doc) {
        Ok(t) => t,
        Err(e) => panic!("the ad set has no TOML form ({e}): {json}"),
    };
    match catalog::parse_adset(&toml, false, "again.toml", &ctx) {
        Ok(again) => assert_eq!(again, adset, "written as TOML: {toml}"),
        Err(p) => panic!("accepted, but not once written as TOML {toml}: {p:?}"),
    }
}

/// Installs a panic hook that stays silent for the panics the `cron` crate raises inside the
/// catalog's `catch_unwind` (a bad daypart is reported as a problem), and otherwise prints
/// the panic as usual. libfuzzer-sys's own hook aborts on every panic, caught or not; a
/// panic that escapes the target still aborts (libfuzzer-sys catches it and aborts).
pub fn quiet_caught_cron_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_cron = info.location().is_some_and(|l| l.file().contains("/cron-"));
        if !in_cron {
            default(info);
        }
    }));
}
