//! The console in headless Chromium: `tests/browser/console.mjs` (playwright-core, the
//! system's /usr/bin/chromium, never a downloaded browser) against a real `civicast serve`
//! on the demo city of `civicast init`, its embedded broker and SQLite in a temp dir, feeds
//! sped up to a play every 5 s. Two operator tokens, an auditor's, an inspector's and two
//! companies' (city-bus, jiaotong-taxi) are made with
//! `civicast token create`. Screenshots go to target/browser-screenshots/. Ignored unless
//! run with --include-ignored and CIVICAST_TEST_BROWSER set (`.ci/run` does both); `npm ci`
//! runs first when tests/browser/node_modules is missing.

use std::path::Path;
use std::process::Command;

mod common;
use common::{civicast_command, Serve};

/// `civicast ARGS` in `dir` with `env`: (status, stdout, stderr).
fn civicast(dir: &Path, env: &[(&str, String)], args: &[&str]) -> (bool, String, String) {
    let mut c = civicast_command(dir);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("civicast runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A new token of `role` named `name`: the last line `token create` prints.
fn token(dir: &Path, env: &[(&str, String)], role: &str, name: &str) -> String {
    let (ok, out, err) = civicast(
        dir,
        env,
        &["token", "create", "--role", role, "--name", name],
    );
    assert!(ok, "token create --role {role}: {out}{err}");
    out.lines()
        .last()
        .unwrap_or_else(|| panic!("token create printed no token: {out}"))
        .trim()
        .to_owned()
}

/// A `company` token for `company`, as its staff would get one.
fn company_token(dir: &Path, env: &[(&str, String)], company: &str) -> String {
    let name = format!("staff-{company}");
    let (ok, out, err) = civicast(
        dir,
        env,
        &[
            "token",
            "create",
            "--role",
            "company",
            "--company",
            company,
            "--name",
            &name,
        ],
    );
    assert!(
        ok,
        "token create --role company --company {company}: {out}{err}"
    );
    out.lines()
        .last()
        .unwrap_or_else(|| panic!("token create printed no token: {out}"))
        .trim()
        .to_owned()
}

/// The demo city with every feed playing every 5 s, so an approval shows within seconds.
fn quick_city(dir: &Path) {
    let (ok, out, err) = civicast(dir, &[], &["init", "."]);
    assert!(ok, "civicast init: {out}{err}");
    let feeds = dir.join("schedules/feeds.toml");
    let text = std::fs::read_to_string(&feeds).expect("feeds.toml");
    let quick: String = text
        .lines()
        .map(|l| {
            if l.starts_with("interval = ") {
                "interval = \"5s\"".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&feeds, quick + "\n").expect("write feeds.toml");
}

/// A hundredth of the fleet on the embedded broker for a while, so the play counts the
/// auditor compares are not all zero; it has stopped, and its receipts are stored, before
/// the browser starts, so the page and the API count the same plays.
async fn simulate(dir: &Path, env: &[(&str, String)], log: &str) {
    let broker = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "embedded MQTT broker listening (MQTT 3.1.1 and 5)")
        .and_then(|v| v["fields"]["addr"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("serve logged no embedded broker address:\n{log}"));
    let (ok, out, err) = civicast(
        dir,
        env,
        &[
            "simulate",
            "--mqtt",
            &broker,
            "--shard",
            "0/100",
            "--duration",
            "25s",
        ],
    );
    assert!(ok, "civicast simulate: {out}{err}");
    // Receipts are committed in batches of at most CIVICAST_BATCH_WAIT (default well under this).
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
}

fn npm_ci(browser: &Path) {
    if browser.join("node_modules/playwright-core").is_dir() {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .current_dir(browser)
        .output()
        .expect("npm runs (install nodejs and npm)");
    assert!(
        out.status.success(),
        "npm ci in {}: {}{}",
        browser.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and node with playwright-core: run by .ci/run"]
async fn an_operators_and_an_auditors_day_in_chromium() {
    assert!(
        std::env::var_os("CIVICAST_TEST_BROWSER").is_some(),
        "CIVICAST_TEST_BROWSER is not set: install chromium, fonts-noto-cjk and node, then set it \
         (.ci/run does)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    quick_city(d);
    let env = [
        (
            "CIVICAST_DATABASE_URL",
            format!("sqlite://{}", d.join("civicast.db").display()),
        ),
        ("CIVICAST_MQTT_LISTEN", "127.0.0.1:0".to_owned()),
        ("CIVICAST_HTTP_LISTEN", "127.0.0.1:0".to_owned()),
        ("CIVICAST_DEVICES", d.join("devices").display().to_string()),
        (
            "CIVICAST_SCHEDULES",
            d.join("schedules").display().to_string(),
        ),
    ];
    let mut serve = Serve::spawn(d, &env, None, 1);
    serve.ready(120).await;
    let http = serve.http.expect("the HTTP address");
    simulate(d, &env, &serve.log()).await;
    let op_a = token(d, &env, "operator", "operator-a");
    let op_b = token(d, &env, "operator", "operator-b");
    let auditor = token(d, &env, "auditor", "auditor-1");
    let inspector = token(d, &env, "inspector", "inspector-1");
    let company = company_token(d, &env, "city-bus");
    let other_company = company_token(d, &env, "jiaotong-taxi");

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let browser = root.join("tests/browser");
    npm_ci(&browser);
    let shots = root.join("target/browser-screenshots");
    let out = Command::new("node")
        .arg(browser.join("console.mjs"))
        .env("CIVICAST_URL", format!("http://{http}"))
        .env("CIVICAST_TOKEN_A", &op_a)
        .env("CIVICAST_TOKEN_B", &op_b)
        .env("CIVICAST_TOKEN_AUDITOR", &auditor)
        .env("CIVICAST_TOKEN_INSPECTOR", &inspector)
        .env("CIVICAST_TOKEN_COMPANY", &company)
        .env("CIVICAST_TOKEN_OTHER_COMPANY", &other_company)
        .env("CIVICAST_SCREENSHOTS", &shots)
        .env("CIVICAST_CHROMIUM", "/usr/bin/chromium")
        .output()
        .expect("node runs (install nodejs)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = out.status.success();
    serve.terminate().await;
    assert!(
        ok,
        "tests/browser/console.mjs failed ({}):\n{said}\n--- serve log ---\n{}",
        out.status,
        serve.log()
    );
    println!("{said}");
}
