//! The small test city (three displays: two buses and a taxi; 1 s feeds; the ad set
//! `civility`) and its variants, written into a folder as `devices/` and `schedules/`.

use std::path::Path;

/// The displays with a route each (bus-1 runs K1, bus-2 K2, the taxi none).
pub const FLEET: &str = "id,class,route\nbus-1,bus_led,K1\nbus-2,bus_led,K2\ntaxi-1,taxi_top,\n";

/// The same displays without the route column.
pub const FLEET_WITHOUT_ROUTES: &str = "id,class\nbus-1,bus_led\nbus-2,bus_led\ntaxi-1,taxi_top\n";

pub const CLASSES: &str = r#"
[class.bus_led]
max_chars = 40
charset = "gb2312"
duration = "1s"

[class.taxi_top]
max_chars = 12
charset = "gb2312"
duration = "1s"
"#;

/// A bus feed and a taxi feed, a play each second.
pub const FEEDS: &str = r#"
timezone = "Asia/Shanghai"

[[feed]]
id = "bus"
select = { class = "bus_led" }
interval = "1s"

[[feed]]
id = "taxi"
select = { class = "taxi_top" }
interval = "1s"
"#;

/// The bus feed alone.
pub const BUS_FEED: &str = r#"
timezone = "Asia/Shanghai"

[[feed]]
id = "bus"
select = { class = "bus_led" }
interval = "1s"
"#;

/// Two slogans weighted 2:1, the second with a shorter text for taxis.
pub const ADSET: &str = r#"
id = "civility"
valid_from = "2020-01-01"
valid_until = "2099-12-31"

[[slogan]]
id = "jiang-wenming"
text = "讲文明 树新风"
weight = 2

[[slogan]]
id = "paidui"
text = "自觉排队 文明乘车"
[slogan.text_by_class]
taxi_top = "自觉排队"
"#;

/// The ad set `civility` with its first slogan only (short enough for every class).
pub const ONE_SLOGAN_ADSET: &str = r#"
id = "civility"
valid_from = "2020-01-01"
valid_until = "2099-12-31"

[[slogan]]
id = "jiang-wenming"
text = "讲文明 树新风"
"#;

/// The displays of the test city: (id, speaks MQTT 5). Each has a Mosquitto account.
pub const DISPLAYS: [(&str, bool); 3] = [("bus-1", false), ("bus-2", true), ("taxi-1", true)];

/// The files of a city; `City::default()` is the test city: [`FLEET`], [`CLASSES`],
/// [`FEEDS`] and [`ADSET`] as `civility.toml`.
#[derive(Clone, Copy, Debug)]
pub struct City {
    pub fleet: &'static str,
    pub classes: &'static str,
    pub feeds: &'static str,
    pub adset: &'static str,
}

impl Default for City {
    fn default() -> Self {
        City {
            fleet: FLEET,
            classes: CLASSES,
            feeds: FEEDS,
            adset: ADSET,
        }
    }
}

impl City {
    /// Writes `devices/fleet.csv`, `devices/classes.toml`, `schedules/feeds.toml` and
    /// `schedules/adsets/civility.toml` under `dir`.
    pub fn write(&self, dir: &Path) {
        let w = |rel: &str, text: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        w("devices/fleet.csv", self.fleet);
        w("devices/classes.toml", self.classes);
        w("schedules/feeds.toml", self.feeds);
        w("schedules/adsets/civility.toml", self.adset);
    }
}

/// Writes the test city (three displays, two 1 s feeds, two slogans weighted 2:1).
pub fn write_city(dir: &Path) {
    City::default().write(dir);
}

/// The catalog of the city under `dir`, which must be valid.
pub fn load_city(dir: &Path) -> civicast::core::model::Catalog {
    civicast::files::load_dirs(&dir.join("devices"), &dir.join("schedules"))
        .catalog
        .expect("the test city is valid")
}

/// What an uninterrupted rotation of [`ADSET`] plays, `n` plays long.
pub fn uninterrupted_rotation(n: usize) -> Vec<String> {
    let mk = |s: &str, w| civicast::core::rotation::Candidate {
        adset: civicast::core::model::Id::parse("civility").expect("id"),
        rev: 1,
        slogan: civicast::core::model::Id::parse(s).expect("id"),
        weight: w,
    };
    let cands = [mk("jiang-wenming", 2), mk("paidui", 1)];
    let mut cur = civicast::core::rotation::Cursor::default();
    (0..n)
        .map(|_| cands[cur.pick(&cands).expect("pick")].slogan.to_string())
        .collect()
}
