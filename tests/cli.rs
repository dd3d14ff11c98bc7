//! The command line as an operator meets it: clear errors, exit codes, nothing started on
//! bad files.

mod common;
use common::{civicast_command, http_get, metric, wait_until, Serve};

fn civicast(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = civicast_command(dir)
        .args(args)
        .env(
            "CIVICAST_DATABASE_URL",
            format!("sqlite://{}", dir.join("t.db").display()),
        )
        .env("CIVICAST_MQTT_LISTEN", "127.0.0.1:0")
        .env("CIVICAST_HTTP_LISTEN", "127.0.0.1:0")
        .env_remove("CIVICAST_MQTT_URL")
        .env_remove("CIVICAST_DEVICES")
        .env_remove("CIVICAST_SCHEDULES")
        .output()
        .expect("run civicast");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_files_are_listed_and_serve_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out, _) = civicast(dir.path(), &["init", "."]);
    assert_eq!(code, 0, "{out}");
    let (code, out, err) = civicast(dir.path(), &["check"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("3149 displays"), "{out}");

    // A taxi text with a character a GB2312 board cannot draw, and a display of no class.
    let adset = dir.path().join("schedules/adsets/wenming-city.toml");
    let text = std::fs::read_to_string(&adset).expect("read");
    std::fs::write(
        &adset,
        text.replace("taxi_top = \"礼让斑马线\"", "taxi_top = \"禮讓斑馬線\""),
    )
    .expect("write");
    let csv = dir.path().join("devices/city.csv");
    let mut rows = std::fs::read_to_string(&csv).expect("read");
    rows.push_str("bus-X-1,bus_lde,X,haizhou,city-bus\n");
    std::fs::write(&csv, rows).expect("write");

    let (code, out, err) = civicast(dir.path(), &["check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("devices/city.csv:3151"),
        "names file and line: {err}"
    );
    assert!(err.contains("bus_lde"), "{err}");
    assert!(err.contains("wenming-city.toml:"), "{err}");
    assert!(
        err.contains("'禮'") && err.contains("taxi_top"),
        "names the character and class: {err}"
    );

    let (code, _, err) = civicast(dir.path(), &["serve"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("bus_lde"), "{err}");
}

#[test]
fn audit_options_are_checked_before_any_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, _, err) = civicast(
        dir.path(),
        &["audit", "plays", "--group-by", "device,colour"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("--group-by") && err.contains("colour"),
        "{err}"
    );
    let (code, _, err) = civicast(
        dir.path(),
        &[
            "audit",
            "plays",
            "--from",
            "2026-12-01",
            "--to",
            "2026-11-01",
        ],
    );
    assert_eq!(code, 2);
    assert!(err.contains("--from"), "{err}");
    let (code, out, err) = civicast(
        dir.path(),
        &["audit", "plays", "--group-by", "device", "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["rows"], serde_json::json!([]));
    assert_eq!(v["total"], 0);
}

#[test]
fn audit_plays_on_the_command_line_names_an_unknown_display_as_http_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(civicast(dir.path(), &["init", "."]).0, 0);
    let csv = std::fs::read_dir(dir.path().join("devices"))
        .expect("devices/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "csv"))
        .expect("a devices CSV");
    let text = std::fs::read_to_string(csv).expect("csv");
    let known = text
        .lines()
        .nth(1)
        .and_then(|l| l.split(',').next())
        .expect("a first display")
        .to_string();
    let (code, _, err) = civicast(
        dir.path(),
        &["audit", "plays", "--device", "nope", "--format", "json"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--device") && err.contains("nope"), "{err}");
    let (code, _, err) = civicast(
        dir.path(),
        &["audit", "plays", "--class", "bus_lde", "--format", "json"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--class") && err.contains("bus_lde"), "{err}");
    let (code, out, err) = civicast(
        dir.path(),
        &["audit", "plays", "--device", &known, "--format", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["total"], 0);
}

#[test]
fn the_inspection_sample_is_the_same_for_the_same_week_and_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(civicast(dir.path(), &["init", "."]).0, 0);
    let args = [
        "audit", "sample", "--week", "2026-W48", "--seed", "s7", "--format", "json",
    ];
    let (code, first, err) = civicast(dir.path(), &args);
    assert_eq!(code, 0, "{err}");
    let (_, second, _) = civicast(dir.path(), &args);
    assert_eq!(first, second);
    let v: serde_json::Value = serde_json::from_str(&first).expect("json");
    let rows = v["rows"].as_array().expect("rows");
    // 59 of each class (every class of the first city has more than 59 displays), each
    // one of the city's displays of that class, none twice.
    let csv = std::fs::read_to_string(dir.path().join("devices/city.csv")).expect("city.csv");
    let class_of: std::collections::BTreeMap<&str, &str> = csv
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            Some((f.next()?, f.next()?))
        })
        .collect();
    let mut per_class: std::collections::BTreeMap<String, usize> = Default::default();
    let mut seen = std::collections::BTreeSet::new();
    for r in rows {
        let (device, class) = (
            r["device"].as_str().expect("device"),
            r["class"].as_str().expect("class"),
        );
        assert_eq!(class_of.get(device), Some(&class), "{r}");
        assert!(seen.insert(device), "{device} drawn twice");
        *per_class.entry(class.to_owned()).or_default() += 1;
    }
    let classes: std::collections::BTreeSet<&str> = class_of.values().copied().collect();
    assert_eq!(classes.len(), 4, "{classes:?}");
    assert_eq!(
        per_class,
        classes.iter().map(|c| (c.to_string(), 59)).collect()
    );
    let (_, other, _) = civicast(
        dir.path(),
        &[
            "audit", "sample", "--week", "2026-W48", "--seed", "s8", "--format", "json",
        ],
    );
    assert_ne!(first, other, "another seed, another sample");
    let (code, _, err) = civicast(dir.path(), &["audit", "sample", "--week", "2026-48"]);
    assert_eq!(code, 2);
    assert!(err.contains("--week"), "{err}");
    let (code, _, err) = civicast(dir.path(), &["audit", "sample", "--per-class", "many"]);
    assert_eq!(code, 2);
    assert!(err.contains("--per-class"), "{err}");
    let (code, out, err) = civicast(dir.path(), &["audit", "reconcile", "--format", "csv"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("feed,day,plays,targeted,online,played,shortfall,offline,expired,skipped,failed,no_receipt\n"), "{out}");
    let (code, _, err) = civicast(dir.path(), &["audit", "compliance", "--class", "tram"]);
    assert_eq!(code, 2);
    assert!(err.contains("--class") && err.contains("tram"), "{err}");
}

/// The first city written by `civicast init` into a new folder.
fn first_city() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, out, err) = civicast(dir.path(), &["init", "."]);
    assert_eq!(code, 0, "{out}{err}");
    dir
}

#[test]
fn check_and_serve_refuse_a_city_without_displays() {
    let dir = first_city();
    std::fs::remove_file(dir.path().join("devices/city.csv")).expect("rm");
    let (code, out, err) = civicast(dir.path(), &["check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(
            "devices: no display list (*.csv) in this directory: the city would have no displays"
        ),
        "{err}"
    );
    assert!(
        out.contains("1 errors"),
        "one root cause, no follow-on errors: {out}{err}"
    );
    let (code, _, err) = civicast(dir.path(), &["serve"]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("no display list"), "{err}");

    // A list with its header only.
    std::fs::write(
        dir.path().join("devices/city.csv"),
        "id,class,route,district,operator\n",
    )
    .expect("write");
    let (code, out, err) = civicast(dir.path(), &["check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("no display is listed (in devices/city.csv)"),
        "{err}"
    );
    let (code, _, err) = civicast(dir.path(), &["serve"]);
    assert_eq!(code, 64, "{err}");
}

#[test]
fn check_and_serve_agree_on_intervals_and_dayparts_that_cannot_work() {
    let dir = first_city();
    let feeds = dir.path().join("schedules/feeds.toml");
    let good = std::fs::read_to_string(&feeds).expect("read");
    let line_of = |text: &str, needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .expect("needle")
            + 1
    };
    let cases = [
        (
            "interval = \"3m\"",
            "interval = \"1ms\"",
            "feed[1].interval",
            "shorter than 1s",
        ),
        (
            "interval = \"3m\"",
            "interval = \"100y\"",
            "feed[1].interval",
            "longer than 24h",
        ),
        (
            "interval = \"3m\"",
            "interval = \"3m\"\ndaypart = \"0 0 0 30 2 *\"",
            "feed[1].daypart",
            "matches no day in the next year",
        ),
        (
            "interval = \"3m\"",
            "interval = \"3m\"\ndaypart = \"* * 24 * * *\"",
            "feed[1].daypart",
            "the hour field must be 0 to 23, not 24",
        ),
    ];
    for (from, to, field, needle) in cases {
        let bad = good.replacen(from, to, 1);
        assert_ne!(bad, good);
        std::fs::write(&feeds, &bad).expect("write");
        let line = line_of(&bad, to.lines().last().expect("line"));
        let at = format!("schedules/feeds.toml:{line}: field `{field}`: ");
        let (code, out, err) = civicast(dir.path(), &["check"]);
        assert_eq!(code, 1, "{to}: {out}{err}");
        assert!(err.contains(&at) && err.contains(needle), "{to}: {err}");
        let (code, _, err) = civicast(dir.path(), &["serve"]);
        assert_eq!(code, 64, "{to}: serve refuses what check refuses: {err}");
        assert!(err.contains(&at) && err.contains(needle), "{to}: {err}");
    }
    std::fs::write(&feeds, &good).expect("write");
    let (code, out, err) = civicast(dir.path(), &["check"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// The JSON log lines of `serve` whose message holds `needle`.
fn logged(serve: &Serve, needle: &str) -> Vec<serde_json::Value> {
    serve
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle))
        })
        .collect()
}

async fn wait_logged(serve: &Serve, needle: &str, n: usize) -> Vec<serde_json::Value> {
    wait_until(&format!("{n} log lines with {needle:?}"), 20, || {
        let found = logged(serve, needle).len();
        async move { (found >= n).then_some(()).ok_or(format!("{found} so far")) }
    })
    .await;
    logged(serve, needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_daemon_keeps_the_city_when_its_inventory_is_deleted_or_half_written() {
    let dir = first_city();
    let d = dir.path();
    let csv = d.join("devices/city.csv");
    let full = std::fs::read_to_string(&csv).expect("read");
    // Cut at a row end, as an editor or `cp` caught mid-write leaves it: 48 displays.
    let half: String = full.lines().take(49).map(|l| format!("{l}\n")).collect();
    let env = [
        (
            "CIVICAST_DATABASE_URL",
            format!("sqlite://{}", d.join("t.db").display()),
        ),
        ("CIVICAST_MQTT_LISTEN", "127.0.0.1:0".to_owned()),
        ("CIVICAST_HTTP_LISTEN", "127.0.0.1:0".to_owned()),
        ("CIVICAST_DEVICES", d.join("devices").display().to_string()),
        (
            "CIVICAST_SCHEDULES",
            d.join("schedules").display().to_string(),
        ),
        ("CIVICAST_WATCH_EVERY", "200ms".to_owned()),
        ("CIVICAST_WATCH_SETTLE", "200ms".to_owned()),
    ];
    let mut serve = Serve::spawn(d, &env, None, 1);
    serve.ready(60).await;
    let http = serve.http.expect("http");
    let refused = |reason: &'static str| async move {
        let (_, body) = http_get(http, "/metrics").await.unwrap_or_default();
        metric(
            &body,
            &format!("civicast_reloads_refused_total{{reason=\"{reason}\"}}"),
        )
    };

    // Deleted: an error (no displays), refused, the last good state kept.
    std::fs::remove_file(&csv).expect("rm");
    let lines = wait_logged(&serve, "no display list (*.csv)", 1).await;
    assert_eq!(
        lines[0]["fields"]["file"],
        d.join("devices").display().to_string()
    );
    wait_logged(&serve, "edit refused: devices/ or schedules/ has errors", 1).await;
    assert_eq!(refused("errors").await, Some(1.0));

    // Half-written: valid, but 3,101 of 3,149 displays would go.
    std::fs::write(&csv, &half).expect("write");
    let lines = wait_logged(&serve, "edit refused: 3101 of 3149 displays", 1).await;
    let f = &lines[0]["fields"];
    assert_eq!(
        (f["before"].as_u64(), f["after"].as_u64()),
        (Some(3149), Some(48)),
        "{f}"
    );
    assert!(
        f["files"]
            .as_str()
            .is_some_and(|s| s.contains("city.csv 3149 -> 48")),
        "{f}"
    );
    assert!(
        f["message"]
            .as_str()
            .is_some_and(|m| m.contains("civicast reload --accept-drop")),
        "names the way to accept it: {f}"
    );
    assert_eq!(refused("drop").await, Some(1.0));
    // The reload's warnings are logged too, each with its file and line, as at the start.
    let warned = logged(&serve, "feed \"taxi-all\" matches no display");
    assert!(
        warned
            .iter()
            .any(|v| v["fields"]["line"].as_u64().is_some_and(|l| l > 0)
                && v["fields"]["file"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("feeds.toml"))),
        "{warned:?}"
    );
    assert!(logged(&serve, "reloaded").is_empty(), "{}", serve.log());

    // An operator means it: accepted once, while serving.
    let out = civicast_command(d)
        .args(["reload", "--accept-drop"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("reload");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = wait_logged(&serve, "devices/ and schedules/ reloaded", 1).await;
    assert_eq!(lines[0]["fields"]["displays"].as_u64(), Some(48));
    assert!(
        !d.join("devices/.civicast-reload").exists(),
        "the request is used up"
    );
    serve.terminate().await;

    // At the next start, the database remembers 48: a full list is no drop, and back to 48
    // from it is one that the start refuses, naming the flag.
    std::fs::write(&csv, &full).expect("write");
    let mut again = Serve::spawn(d, &env, None, 2);
    again.ready(60).await;
    again.terminate().await;
    std::fs::write(&csv, &half).expect("write");
    let (code, _, err) = civicast_env(d, &env, &["serve"]);
    assert_eq!(code, 64, "{err}");
    assert!(
        err.contains("refusing to start")
            && err.contains("3101 of 3149 displays")
            && err.contains("--accept-drop"),
        "{err}"
    );
}

fn civicast_env(
    dir: &std::path::Path,
    env: &[(&str, String)],
    args: &[&str],
) -> (i32, String, String) {
    let out = civicast_command(dir)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run civicast");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `civicast demo` with the environment of a first run: no log filter or format chosen.
fn demo(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = civicast_command(dir)
        .arg("demo")
        .args(args)
        .env_remove("CIVICAST_LOG")
        .env_remove("CIVICAST_LOG_FORMAT")
        .env_remove("CIVICAST_MQTT_URL")
        .output()
        .expect("run civicast demo");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn log_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .iter()
                .any(|lvl| l.split_whitespace().any(|w| w == *lvl))
        })
        .collect()
}

#[test]
fn the_demo_keeps_its_logs_in_a_file_and_the_terminal_for_progress_and_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("d")).expect("mkdir");
    let (code, out, err) = demo(
        dir.path(),
        &[
            "--duration",
            "3s",
            "--speed",
            "600",
            "--database",
            "d/demo.db",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let log = std::path::absolute(dir.path().join("d/civicast-demo.log")).expect("absolute");
    let said: Vec<&str> = out.lines().filter(|l| l.starts_with("logs: ")).collect();
    assert_eq!(said, [format!("logs: {}", log.display())], "{out}");
    assert!(
        out.lines().next().is_some_and(|l| l.starts_with("logs: ")),
        "{out}"
    );
    assert!(log_lines(&out).is_empty(), "log lines on stdout: {out}");
    assert!(log_lines(&err).is_empty(), "log lines on stderr: {err}");
    assert!(err.contains("online "), "the progress line: {err}");
    assert!(out.contains("plays published"), "the summary: {out}");
    // The console's address and a sign-in link for each role.
    let console = out
        .lines()
        .find_map(|l| l.strip_prefix("console: "))
        .unwrap_or_else(|| panic!("no console line: {out}"));
    for role in ["an operator", "an auditor"] {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("sign in as {role}:")))
            .unwrap_or_else(|| panic!("no link for {role}: {out}"));
        assert!(line.contains(&format!("{console}?token=cvc_")), "{line}");
    }
    let text = std::fs::read_to_string(&log).expect("the demo's log");
    assert!(text.contains("embedded MQTT broker listening"), "{text}");

    // A log that cannot be created ends the demo before anything starts, and says why.
    let (code, out, err) = demo(dir.path(), &["--log", "no/such/dir/x.log"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("no/such/dir/x.log"), "{err}");
    assert!(!out.contains("embedded MQTT broker"), "{out}");
}

/// `civicast audit sample ... | head -c 100` ends quietly, as any command-line tool's output
/// cut short by its reader does: no panic, no error message.
#[test]
fn a_tool_whose_reader_stops_early_ends_quietly() {
    use std::io::Read;
    let dir = first_city();
    let mut child = civicast_command(dir.path())
        .args(["audit", "sample", "--per-class", "5000", "--format", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn civicast");
    let mut head = [0u8; 100];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut head)
        .expect("the first 100 bytes");
    // The reader is gone now; the sample (about 600 KB) is far more than a pipe holds.
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(head.starts_with(b"{"), "{}", String::from_utf8_lossy(&head));
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}
