//! A display list, `devices/*.csv`, loaded with the city's real classes, feeds and ad set.
//!
//! Properties (see `civicast_fuzz::Files::parse_checked`): never a panic; every problem names
//! a file that was given and a line within it; a catalog exactly when no problem is an
//! error, and then display ids unique, each written in the list, each of a known class.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut files = civicast_fuzz::Files::real();
    files.devices = civicast_fuzz::text(data);
    files.parse_checked();
});
