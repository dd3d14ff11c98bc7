//! An ad set in JSON, as uploaded over HTTP (`POST /api/v1/adsets`) or kept in
//! `schedules/adsets/`, checked against the city's real displays, classes and feeds.
//!
//! Properties (see `civicast_fuzz::adset_checked`): never a panic; every problem names the
//! file and a line within it; accepted exactly when no problem is an error; an accepted ad set
//! written anew as JSON and as TOML reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = civicast_fuzz::text(data);
    civicast_fuzz::adset_checked(&text, true, "upload.json");
});
