//! `devices/classes.toml`, loaded with the city's real displays, feeds and ad set (whose
//! texts are then checked against the fuzzed classes).
//!
//! Properties (see `civicast_fuzz::Files::parse_checked`): never a panic; every problem names
//! a file that was given and a line within it; a catalog exactly when no problem is an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut files = civicast_fuzz::Files::real();
    files.classes = civicast_fuzz::text(data);
    files.parse_checked();
});
