//! The command line as an operator meets it: clear errors, exit codes, nothing started on
//! bad files.

mod common;
use common::civicast_command;

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
