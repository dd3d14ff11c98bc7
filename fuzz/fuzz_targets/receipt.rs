//! A receipt payload as a display sends it on `P/devices/{id}/receipts`.
//!
//! Properties: never a panic; an oversized payload is `too_large` and text that is not JSON
//! `malformed` (serde_json as the oracle); an accepted receipt keeps the contract's limits
//! and, written anew in the contract's form, reads back the same.
#![no_main]

use civicast::core::wire::{parse_receipt, Reject, MAX_PAYLOAD};
use libfuzzer_sys::fuzz_target;

const DEVICE: &str = "bus-K21-0001";

fuzz_target!(|data: &[u8]| {
    let got = parse_receipt(DEVICE, data);
    if data.len() > MAX_PAYLOAD {
        assert_eq!(got, Err(Reject::TooLarge));
        return;
    }
    if serde_json::from_slice::<serde_json::Value>(data).is_err() {
        assert_eq!(got, Err(Reject::Malformed));
        return;
    }
    let Ok(r) = got else { return };
    assert!(!r.play_id.is_empty() && r.play_id.len() <= 64, "{r:?}");
    assert!(r.duration_ms >= 0, "{r:?}");
    assert!(
        r.reason.as_ref().is_none_or(|s| s.chars().count() <= 200),
        "{r:?}"
    );
    // RFC 3339 has four-digit years: a start beyond them (reachable through a far offset
    // such as 9999-12-31T23:00:00-05:00) cannot be written back; the window check rejects it.
    if !(0..=9999).contains(&chrono::Datelike::year(&r.started_at)) {
        return;
    }
    let mut again = serde_json::json!({
        "v": 1,
        "play_id": r.play_id,
        "started_at": r.started_at.to_rfc3339(),
        "duration_ms": r.duration_ms,
        "status": r.status.as_str(),
        "device_id": DEVICE,
    });
    if let Some(reason) = &r.reason {
        again["reason"] = reason.as_str().into();
    }
    let written = again.to_string();
    assert_eq!(
        parse_receipt(DEVICE, written.as_bytes()),
        Ok(r),
        "written anew: {written}"
    );
});
