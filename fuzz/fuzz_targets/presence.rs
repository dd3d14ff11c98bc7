//! A presence payload, retained on `P/devices/{id}/status` (also the display's last will).
//!
//! Properties: never a panic; accepted only when it is UTF-8, a JSON object with `"v": 1` and
//! a boolean `online` (serde_json as the oracle) and not oversized; once accepted, written
//! anew it reads back the same.
#![no_main]

use civicast::core::wire::{parse_presence, MAX_PAYLOAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(p) = parse_presence(data) else {
        return;
    };
    assert!(data.len() <= MAX_PAYLOAD);
    let text = match std::str::from_utf8(data) {
        Ok(t) => t,
        Err(e) => panic!("accepted, but not UTF-8 ({e}): {p:?}"),
    };
    let v: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => panic!("accepted, but not JSON ({e}): {p:?}"),
    };
    assert_eq!(v.get("v").and_then(|x| x.as_u64()), Some(1), "{v}");
    assert_eq!(
        v.get("online").and_then(|x| x.as_bool()),
        Some(p.online),
        "{v}"
    );
    if let Some(since) = &p.since {
        if !(0..=9999).contains(&chrono::Datelike::year(since)) {
            return;
        }
    }
    let written = match serde_json::to_vec(&p) {
        Ok(w) => w,
        Err(e) => panic!("accepted, but cannot be written ({e}): {p:?}"),
    };
    assert_eq!(
        parse_presence(&written),
        Some(p),
        "written anew: {}",
        String::from_utf8_lossy(&written)
    );
});
