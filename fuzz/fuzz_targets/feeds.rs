//! `schedules/feeds.toml`, loaded with the city's real classes, displays and ad set (whose
//! `feeds` and texts are then checked against the fuzzed feeds).
//!
//! Properties (see `civicast_fuzz::Files::parse_checked`): never a panic; every problem names
//! a file that was given and a line within it; a catalog exactly when no problem is an
//! error, and then feed ids unique and the ad set's feeds known.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: civicast_fuzz::quiet_caught_cron_panics(),
    |data: &[u8]| {
        let mut files = civicast_fuzz::Files::real();
        files.feeds = civicast_fuzz::text(data);
        files.parse_checked();
    }
);
