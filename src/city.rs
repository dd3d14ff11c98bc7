//! The first city's inventory (887 bus LED boards, 84 BRT platform screens, 1,611 taxi
//! displays, 567 bus-stop screens, from its campaign bulletin) with plausible routes and
//! districts, generated from a fixed seed so every checkout gets the same city.
//!
//! Owns: writing the first city's files where missing (`init`, `demo`). Must not touch the
//! store or the daemon: it only writes the operators' folders.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const BUS_LED: usize = 887;
pub const BRT_SCREEN: usize = 84;
pub const TAXI_TOP: usize = 1_611;
pub const STOP_SCREEN: usize = 567;
/// Buses inspected without an LED board: 1,180 inspected, 887 with a board.
pub const BUS_WITHOUT_BOARD: usize = 1_180 - BUS_LED;
/// The passenger stations (客运站), inspected at least twice a week.
pub const PASSENGER_STATIONS: [(&str, &str, &str); 4] = [
    ("station-zongzhan", "连云港汽车客运总站", "haizhou"),
    ("station-dongzhan", "汽车客运东站", "haizhou"),
    ("station-ganyu", "赣榆汽车客运站", "ganyu"),
    ("station-donghai", "东海汽车客运站", "donghai"),
];

const DISTRICTS: [&str; 6] = [
    "haizhou", "lianyun", "ganyu", "donghai", "guanyun", "guannan",
];
const BUS_OPERATORS: [&str; 2] = ["city-bus", "brt-co"];
const TAXI_OPERATORS: [&str; 4] = [
    "jiaotong-taxi",
    "gangcheng-taxi",
    "haitian-taxi",
    "yunlong-taxi",
];

/// The devices CSV of the first city: `id,class,route,district,operator`.
pub fn first_city_csv() -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(0x1a57_2018);
    let mut out = String::from("id,class,route,district,operator\n");
    let routes: Vec<String> = (1..=60).map(|n| format!("K{n}")).collect();
    let mut per_route = std::collections::HashMap::new();
    for _ in 0..BUS_LED {
        let r = routes.choose(&mut rng).map(String::as_str).unwrap_or("K1");
        let n = per_route.entry(r.to_owned()).or_insert(0);
        *n += 1;
        let d = DISTRICTS[rng.gen_range(0..3)];
        out += &format!("bus-{r}-{:04},bus_led,{r},{d},{}\n", *n, BUS_OPERATORS[0]);
    }
    for i in 0..BRT_SCREEN {
        let r = ["B1", "B2", "B3"][i % 3];
        let d = DISTRICTS[i % 2];
        out += &format!(
            "brt-{r}-{:03},brt_screen,{r},{d},{}\n",
            i / 3 + 1,
            BUS_OPERATORS[1]
        );
    }
    for i in 0..TAXI_TOP {
        let op = TAXI_OPERATORS[rng.gen_range(0..TAXI_OPERATORS.len())];
        let d = DISTRICTS[rng.gen_range(0..DISTRICTS.len())];
        out += &format!("taxi-{:04},taxi_top,,{d},{op}\n", i + 1);
    }
    for i in 0..STOP_SCREEN {
        let r = routes.choose(&mut rng).map(String::as_str).unwrap_or("K1");
        let d = DISTRICTS[rng.gen_range(0..4)];
        out += &format!(
            "stop-{:04},stop_screen,{r},{d},{}\n",
            i + 1,
            BUS_OPERATORS[0]
        );
    }
    out
}

/// The first city's units without a display (`devices/units/city.csv`): the buses without
/// a board and the passenger stations. Every display is a unit of its own besides.
pub fn first_city_units_csv() -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(0x1a57_2019);
    let mut out = String::from(
        "# Units without a display; every display in devices/*.csv is a unit too.\n\
         id,kind,company,route,district,type,name\n",
    );
    for i in 0..BUS_WITHOUT_BOARD {
        let r = format!("K{}", rng.gen_range(1..=60));
        let d = DISTRICTS[rng.gen_range(0..3)];
        out += &format!(
            "bus-noboard-{:04},bus,{},{r},{d},,\n",
            i + 1,
            BUS_OPERATORS[0]
        );
    }
    for (id, name, d) in PASSENGER_STATIONS {
        out += &format!("{id},station,keyun-group,,{d},passenger,{name}\n");
    }
    out
}

/// The inspections' settings as `init` writes them: the defaults, spelt out.
pub const INSPECTIONS_TOML: &str = r#"# Inspections: the checklist, the weekly sample per kind, fixed-frequency rules.
recheck_days = 3        # days a display must meet its cadence after a fix to close from receipts

[sample]                # units drawn at random per kind each week
bus = 59
taxi = 59
stop = 59
station = 59

[[item]]
id = "ads"
label = "public-service ads present and playing"
deadline = "3d"

[[item]]
id = "atmosphere"
label = "campaign atmosphere (posters, banners)"
deadline = "7d"

[[item]]
id = "cleanliness"
label = "clean and tidy"
deadline = "2d"

# Each passenger station at least twice a week.
[[rule]]
select = { kind = "station", type = "passenger" }
per_week = 2
"#;

pub const CLASSES_TOML: &str = r#"# What each display class can show.
[class.bus_led]
max_chars = 40          # longest text it can scroll
charset = "gb2312"      # its controller draws GB2312 only
duration = "15s"        # default time on screen
width_px = 192          # LED matrix width for the preview (16 high); default per class
scroll_px_per_s = 32    # how fast a wider text scrolls; default per class

[class.brt_screen]
max_chars = 80
charset = "utf-8"
duration = "15s"

[class.taxi_top]
max_chars = 12
charset = "gb2312"
duration = "10s"
width_px = 64           # four hanzi on the roof light
scroll_px_per_s = 24

[class.stop_screen]
max_chars = 60
charset = "utf-8"
duration = "15s"
"#;

pub const FEEDS_TOML: &str = r#"timezone = "Asia/Shanghai"

# Every bus LED board and BRT platform screen scrolls a slogan on average every 3 minutes.
[[feed]]
id = "bus-led-all"
select = { class = "bus_led" }
interval = "3m"

[[feed]]
id = "brt-all"
select = { class = "brt_screen" }
interval = "3m"

# Taxi GPS displays loop the slogans.
[[feed]]
id = "taxi-all"
select = { class = "taxi_top" }
interval = "2m"

[[feed]]
id = "stops-all"
select = { class = "stop_screen" }
interval = "3m"
"#;

pub const ADSET_TOML: &str = r#"id = "wenming-city"
title = "Civilized city campaign"
valid_from = "2026-01-01"
valid_until = "2027-12-31"
priority = 0

[[slogan]]
id = "jiang-wenming"
text = "讲文明 树新风"
weight = 2

[[slogan]]
id = "hexin-jiazhi"
text = "富强 民主 文明 和谐 自由 平等 公正 法治"
[slogan.text_by_class]
taxi_top = "富强 民主 文明 和谐"

[[slogan]]
id = "chengshi-meili"
text = "文明城市 你我共建 共享美好家园"
[slogan.text_by_class]
taxi_top = "文明城市 你我共建"

[[slogan]]
id = "limao-chuxing"
text = "礼让斑马线 文明出行每一天"
[slogan.text_by_class]
taxi_top = "礼让斑马线"

[[slogan]]
id = "paidui"
text = "自觉排队 文明乘车"
"#;

/// Writes the first city into `devices/` and `schedules/` under `root`, leaving existing
/// files alone. Returns the files written.
pub fn write_first_city(root: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let files = [
        ("devices/city.csv", first_city_csv()),
        ("devices/classes.toml", CLASSES_TOML.to_owned()),
        ("devices/units/city.csv", first_city_units_csv()),
        ("devices/inspections.toml", INSPECTIONS_TOML.to_owned()),
        ("schedules/feeds.toml", FEEDS_TOML.to_owned()),
        ("schedules/adsets/wenming-city.toml", ADSET_TOML.to_owned()),
    ];
    let mut written = Vec::new();
    for (rel, text) in files {
        let p = root.join(rel);
        if p.exists() {
            continue;
        }
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&p, text)?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_city_has_the_bulletins_counts() {
        let csv = first_city_csv();
        let count = |class: &str| {
            csv.lines()
                .filter(|l| l.split(',').nth(1) == Some(class))
                .count()
        };
        assert_eq!(count("bus_led"), 887);
        assert_eq!(count("brt_screen"), 84);
        assert_eq!(count("taxi_top"), 1_611);
        assert_eq!(count("stop_screen"), 567);
        let ids: std::collections::HashSet<_> =
            csv.lines().skip(1).map(|l| l.split(',').next()).collect();
        assert_eq!(ids.len(), 887 + 84 + 1_611 + 567, "ids are unique");
        assert_eq!(csv, first_city_csv(), "the same city every time");
    }

    #[test]
    fn the_first_citys_units_are_the_bulletins_inspected_counts() {
        use crate::core::catalog::{Severity, SourceFile};
        use crate::core::inspect::{config, units, Kind};
        let dir = tempfile::tempdir().expect("tempdir");
        write_first_city(dir.path()).expect("write");
        let report =
            crate::files::load_dirs(&dir.path().join("devices"), &dir.path().join("schedules"));
        let catalog = report.catalog.expect("catalog");
        let (setup, problems) =
            crate::files::load_inspect(&dir.path().join("devices"), &catalog.devices);
        assert!(problems.is_empty(), "{problems:?}");
        let u = &setup.units;
        assert_eq!(
            (u.count(Kind::Bus), u.count(Kind::Stop), u.count(Kind::Taxi)),
            (1_180, 567, 1_611)
        );
        assert_eq!(u.count(Kind::Station), 84 + PASSENGER_STATIONS.len());
        assert_eq!(
            setup.config,
            config::InspectConfig::default(),
            "init writes the defaults"
        );
        assert_eq!(
            u.get("taxi-0001").map(|t| t.display.as_deref()),
            Some(Some("taxi-0001"))
        );

        // What check refuses: an unknown display, a duplicate id, an unknown kind, no company.
        let bad = "id,kind,company,display\nbus-x,bus,city-bus,bus-nope\nbus-noboard-0001,bus,city-bus,\nv-1,tram,city-bus,\nv-2,bus,,\n";
        let with_dup: crate::core::catalog::Listing = Ok(vec![
            SourceFile::text("devices/units/city.csv", first_city_units_csv()),
            SourceFile::text("devices/units/bad.csv", bad),
        ]);
        let (_, problems) = units::parse_units(Some(&with_dup), "devices/units", &catalog.devices);
        let errors: Vec<String> = problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .map(|p| p.to_string())
            .collect();
        assert_eq!(errors.len(), 4, "{errors:#?}");
        let has = |line: usize, s: &str| {
            let at = format!("devices/units/bad.csv:{line}: ");
            errors.iter().any(|e| e.starts_with(&at) && e.contains(s))
        };
        assert!(has(2, "unknown display \"bus-nope\""), "{errors:#?}");
        assert!(
            has(3, "listed twice (first in devices/units/city.csv line 3)"),
            "{errors:#?}"
        );
        assert!(has(4, "unknown kind \"tram\""), "{errors:#?}");
        assert!(has(5, "needs its operating company"), "{errors:#?}");
    }
}
