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
}
