//! The console's `assets/console/led.js` run under node against a fake canvas and clock
//! (`tests/js/led_test.js`): pixel-true unpacking, a fitting text centred, a wider one
//! scrolling whole LEDs at its speed, and still under prefers-reduced-motion.

use std::process::Command;

#[test]
#[ignore = "needs node (Debian's nodejs; .ci/run installs it)"]
fn led_js_draws_still_and_scrolling_previews() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/led_test.js");
    let out = Command::new("node")
        .arg(script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (install Debian's nodejs): {e}"));
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("led.js: ok"));
}
