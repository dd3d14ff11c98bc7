//! Test fixtures shared by the catalog's tests and the shell's: a small valid city as
//! (relative name, text) pairs, and [`sources`] to hand such pairs to the parser in memory.
//!
//! Test-only; it must not read or write files (the shell's tests do that with these texts).

use super::{DeviceFiles, Folder, ScheduleFiles, SourceFile, Sources};

pub(crate) const CLASSES: &str = r#"
[class.bus_led]
max_chars = 40
charset = "gb2312"
duration = "15s"

[class.taxi_top]
max_chars = 8
charset = "gb2312"
duration = "10s"

[class.brt_screen]
max_chars = 120
charset = "utf-8"
"#;

pub(crate) const FLEET: &str = "id,class,route,district,operator
bus-K1-0421,bus_led,K1,haizhou,city-bus
bus-K1-0422,bus_led,K1,haizhou,city-bus
taxi-0007,taxi_top,,lianyun,jiaotong-taxi
";

pub(crate) const BRT: &str = "id,class,route
brt-1,brt_screen,B1
";

pub(crate) const FEEDS: &str = r#"
timezone = "Asia/Shanghai"

[[feed]]
id = "bus-led-all"
select = { class = "bus_led" }
interval = "3m"
daypart = "* * 6-22 * * *"

[[feed]]
id = "taxi-all"
select = { class = ["taxi_top"] }

[[feed]]
id = "brt"
select = { class = "brt_screen", route = ["B1", "B2"] }
interval = "90s"
"#;

pub(crate) const ADSET: &str = r#"
id = "wenming-2026-12"
title = "Civility month"
valid_from = "2026-12-01"
valid_until = "2026-12-31"
feeds = ["bus-led-all", "taxi-all"]
priority = 0

[[slogan]]
id = "jiang-wenming"
text = "讲文明 树新风"
weight = 2
[slogan.text_by_class]
taxi_top = "讲文明"

[[slogan]]
id = "li-rang"
text = "礼让斑马线"
"#;

pub(crate) const ADSET_JSON: &str = r#"{
  "id": "brt-2026",
  "valid_from": "2026-01-01T00:00:00+08:00",
  "valid_until": "2027-01-01T00:00:00+08:00",
  "priority": 1,
  "feeds": ["brt"],
  "slogan": [{"id": "emoji-ok", "text": "Be kind 😀"}]
}"#;

/// A small valid city: every file of `devices/` and `schedules/`, by relative name.
pub(crate) fn valid_files() -> Vec<(&'static str, &'static str)> {
    vec![
        ("devices/classes.toml", CLASSES),
        ("devices/fleet.csv", FLEET),
        ("devices/brt.csv", BRT),
        ("schedules/feeds.toml", FEEDS),
        ("schedules/adsets/wenming.toml", ADSET),
        ("schedules/adsets/brt.json", ADSET_JSON),
    ]
}

/// `files` as the shell would read them from `devices/` and `schedules/` (both present; the
/// `adsets` folder present when a file is in it): the same extensions, case-insensitive, and
/// the same order, by file name. Files not named are missing.
pub(crate) fn sources(files: &[(&str, &str)]) -> Sources {
    let one = |name: &str| {
        files.iter().find(|(n, _)| *n == name).map_or_else(
            || SourceFile::not_found(name),
            |(n, t)| SourceFile::text(*n, *t),
        )
    };
    let within = |dir: &str, exts: &[&str]| {
        let mut found: Vec<SourceFile> = files
            .iter()
            .filter(|(n, _)| {
                n.strip_prefix(dir)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .filter(|rest| !rest.contains('/'))
                    .and_then(|rest| rest.rsplit_once('.'))
                    .is_some_and(|(stem, ext)| {
                        !stem.is_empty() && exts.iter().any(|x| x.eq_ignore_ascii_case(ext))
                    })
            })
            .map(|(n, t)| SourceFile::text(*n, *t))
            .collect();
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    };
    let adsets_found = files
        .iter()
        .any(|(n, _)| n.starts_with("schedules/adsets/"));
    Sources {
        devices: Folder {
            name: "devices".into(),
            found: Ok(DeviceFiles {
                classes: one("devices/classes.toml"),
                lists: Ok(within("devices", &["csv"])),
            }),
        },
        schedules: Folder {
            name: "schedules".into(),
            found: Ok(ScheduleFiles {
                feeds: one("schedules/feeds.toml"),
                adsets: Folder {
                    name: "schedules/adsets".into(),
                    found: if adsets_found {
                        Ok(Ok(within("schedules/adsets", &["toml", "json"])))
                    } else {
                        Err(super::Absent::NotFound)
                    },
                },
            }),
        },
    }
}
