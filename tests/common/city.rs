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

/// Three slogans weighted 5:3:1: the rotation repeats only every 9 plays, and a cursor
/// reset anywhere else inside that period shows in the sequence.
pub const WEIGHTED_ADSET: &str = r#"
id = "civility"
valid_from = "2020-01-01"
valid_until = "2099-12-31"

[[slogan]]
id = "a"
text = "讲文明 树新风"
weight = 5

[[slogan]]
id = "b"
text = "自觉排队 文明乘车"
weight = 3

[[slogan]]
id = "c"
text = "礼让斑马线"
weight = 1
"#;

/// One period of [`WEIGHTED_ADSET`]'s rotation from a fresh cursor, worked out by hand with
/// smooth weighted round-robin (each pick adds every weight to its credit, takes the
/// largest credit and subtracts the total, 9, from it):
///
/// | pick | credits before (a, b, c) | picked |
/// |---|---|---|
/// | 1 | 5, 3, 1 | a |
/// | 2 | 1, 6, 2 | b |
/// | 3 | 6, 0, 3 | a |
/// | 4 | 2, 3, 4 | c |
/// | 5 | 7, 6, -4 | a |
/// | 6 | 3, 9, -3 | b |
/// | 7 | 8, 3, -2 | a |
/// | 8 | 4, 6, -1 | b |
/// | 9 | 9, 0, 0 | a (all credits back to 0) |
pub const WEIGHTED_ROTATION: [&str; 9] = ["a", "b", "a", "c", "a", "b", "a", "b", "a"];

/// The test city with [`WEIGHTED_ADSET`] as its ad set.
pub fn write_weighted_city(dir: &Path) {
    City {
        adset: WEIGHTED_ADSET,
        ..City::default()
    }
    .write(dir);
}

/// `n` plays of an uninterrupted [`WEIGHTED_ADSET`] rotation.
pub fn weighted_rotation(n: usize) -> Vec<String> {
    WEIGHTED_ROTATION
        .iter()
        .cycle()
        .take(n)
        .map(|s| (*s).to_owned())
        .collect()
}

/// Checks that `slogans` (a feed's plays in order, across restarts that happened after
/// `boundaries` plays) is one uninterrupted rotation, and that at least one restart fell
/// inside a period, where a reset cursor would have shown.
pub fn assert_rotation_resumed(feed: &str, slogans: &[String], boundaries: &[usize]) {
    assert_eq!(
        slogans,
        weighted_rotation(slogans.len()),
        "feed {feed}: the rotation was not resumed from its stored cursor (restarts after {boundaries:?} plays)"
    );
    assert!(
        boundaries
            .iter()
            .any(|b| b % WEIGHTED_ROTATION.len() != 0 && *b < slogans.len()),
        "feed {feed}: every restart fell on a period boundary ({boundaries:?} of {} plays): \
         a reset cursor would not have shown",
        slogans.len()
    );
}
