//! The soak, small and short: `civicast serve` (the binary) under a fleet of `civicast
//! simulate` processes, a few hundred displays with one connection each, for half a minute
//! at high speed; then what a user checks: every receipt the broker acknowledged is stored
//! once, the audit's total is the receipts stored, and the latency histogram counted each
//! committed receipt. The long run at a million displays' load is `civicast-bench
//! soak-live` (BENCHMARKS.md).
//!
//! The embedded broker on SQLite always runs. Mosquitto on PostgreSQL needs both servers:
//! `CIVICAST_TEST_MQTT=1 CIVICAST_TEST_PG=postgres://... cargo test --test soak --
//! --include-ignored`; run with `--include-ignored` but without them, that test fails.

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

mod common;
use common::*;

/// Displays in the fleet, shared by the fleet processes.
const DISPLAYS: usize = 300;
const FLEET_PROCESSES: usize = 2;
/// Feeds the displays are spread over, each playing every `INTERVAL` (real time).
const FEEDS: usize = 10;
const INTERVAL: &str = "2s";
/// The fleet's scrolls are the class's 15 s shortened this many times.
const SPEED: &str = "30";
const FLEET_RUNS: &str = "30s";

/// `devices/` and `schedules/`: DISPLAYS boards on FEEDS routes, each route a feed.
fn write_fleet_city(dir: &Path) {
    let mut csv = String::from("id,class,route\n");
    for i in 0..DISPLAYS {
        csv += &format!("soak-{i:04},soak_led,R{}\n", i % FEEDS);
    }
    let mut feeds = String::from("timezone = \"Asia/Shanghai\"\n");
    for r in 0..FEEDS {
        feeds += &format!(
            "\n[[feed]]\nid = \"route-{r}\"\nselect = {{ route = \"R{r}\" }}\ninterval = \"{INTERVAL}\"\n"
        );
    }
    let files = [
        ("devices/fleet.csv", csv),
        (
            "devices/classes.toml",
            "[class.soak_led]\nmax_chars = 40\ncharset = \"utf-8\"\nduration = \"15s\"\n".into(),
        ),
        ("schedules/feeds.toml", feeds),
        (
            "schedules/adsets/civility.toml",
            "id = \"civility\"\nvalid_from = \"2020-01-01\"\nvalid_until = \"2099-12-31\"\n\n\
             [[slogan]]\nid = \"paidui\"\ntext = \"自觉排队 文明乘车\"\n"
                .into(),
        ),
    ];
    for (rel, text) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
}

/// What the fleet processes said last, added up: (sent, acknowledged, connect errors).
#[derive(Debug, Default, PartialEq)]
struct FleetEnd {
    sent: u64,
    acked: u64,
    errors: u64,
}

fn count_after(line: &str, words: &str) -> u64 {
    line.split(", ")
        .find_map(|p| p.strip_prefix(words))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {words:?} in {line:?}"))
}

/// The fleet, FLEET_PROCESSES `civicast simulate --shard` processes, run to their end.
async fn run_fleet(dir: &Path, env: &[(&str, String)], port: u16) -> FleetEnd {
    let kids: Vec<_> = (0..FLEET_PROCESSES)
        .map(|k| {
            let mut c = civicast_command(dir);
            c.args(["simulate", "--mqtt", &format!("127.0.0.1:{port}")])
                .args(["--speed", SPEED, "--ramp", "2000", "--duration", FLEET_RUNS])
                .args(["--shard", &format!("{k}/{FLEET_PROCESSES}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            for (k, v) in env {
                c.env(k, v);
            }
            c.spawn().expect("civicast simulate starts")
        })
        .collect();
    let outs = tokio::task::spawn_blocking(move || {
        kids.into_iter()
            .map(|k| k.wait_with_output().expect("simulate runs"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("join");
    let mut end = FleetEnd::default();
    for out in outs {
        assert!(out.status.success(), "simulate failed: {}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("online at end"))
            .unwrap_or_else(|| panic!("simulate said no last line: {text}"));
        end.sent += count_after(line, "receipts sent ");
        end.acked += count_after(line, "receipts acknowledged ");
        end.errors += count_after(line, "connect errors ");
    }
    end
}

/// `civicast audit plays --format json` on the same files and database: its total.
fn audit_total(dir: &Path, env: &[(&str, String)]) -> i64 {
    let mut c = civicast_command(dir);
    c.args(["audit", "plays", "--format", "json"]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("civicast audit plays runs");
    assert!(
        out.status.success(),
        "audit plays: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("audit plays JSON");
    v["total"].as_i64().expect("a total")
}

async fn metrics_of(serve: &Serve) -> String {
    let addr = serve.http.expect("serve is ready");
    match http_get(addr, "/metrics").await {
        Some((200, body)) => body,
        other => panic!("/metrics answered {other:?}"),
    }
}

/// The soak on whichever broker and database `env` names: serve up, the fleet run, the
/// daemon drained; then (rows stored, distinct (display, play), played) from `count_rows`.
async fn soak<F, Fut>(dir: &Path, env: Vec<(&str, String)>, port: u16, count_rows: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = (i64, i64, i64)>,
{
    let mut serve = Serve::spawn(dir, &env, None, 0);
    serve.ready(60).await;
    let fleet = run_fleet(dir, &env, port).await;
    assert_eq!(fleet.errors, 0, "no display lost its connection");
    assert!(fleet.acked > 0, "the fleet played: {fleet:?}");
    assert_eq!(
        fleet.acked, fleet.sent,
        "the broker acknowledged every receipt sent"
    );
    let stored = |m: &str| metric(m, "civicast_receipts_stored_total").unwrap_or(0.0) as u64;
    wait_until(
        "the daemon to commit the acknowledged receipts",
        60,
        || async {
            let n = stored(&metrics_of(&serve).await);
            if n >= fleet.acked {
                Ok(())
            } else {
                Err(format!("{n} of {} committed", fleet.acked))
            }
        },
    )
    .await;
    let m = metrics_of(&serve).await;
    let committed = stored(&m);
    assert_eq!(
        committed, fleet.acked,
        "every acknowledged receipt committed"
    );
    assert_eq!(
        metric(&m, "civicast_receipts_duplicate_total"),
        Some(0.0),
        "none came twice"
    );
    assert_eq!(
        metric(&m, "civicast_receipt_latency_seconds_count"),
        Some(committed as f64),
        "the latency histogram counted each committed receipt"
    );
    serve.terminate().await;
    let (rows, distinct, played) = count_rows().await;
    assert_eq!(
        rows, fleet.acked as i64,
        "the rows are the acknowledged receipts"
    );
    assert_eq!(distinct, rows, "no receipt stored twice");
    assert_eq!(
        audit_total(dir, &env),
        played,
        "the audit counts the played receipts stored"
    );
}

/// Rows, distinct (display, play) and rows with status played of a table of receipts:
/// `receipts` in SQLite, `receipts_all` (raw and packed days) in PostgreSQL.
fn count_rows_of(table: &str) -> String {
    format!(
        "SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT device, play FROM {table}) d), \
         (SELECT count(*) FROM {table} WHERE status = 0) FROM {table}"
    )
}

fn base_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "CIVICAST_DEVICES",
            dir.join("devices").display().to_string(),
        ),
        (
            "CIVICAST_SCHEDULES",
            dir.join("schedules").display().to_string(),
        ),
        ("CIVICAST_HTTP_LISTEN", "127.0.0.1:0".into()),
        ("CIVICAST_PREFIX", "civicast/v1".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_on_the_embedded_broker_stores_every_receipt_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    write_fleet_city(dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let db = dir.join("civicast.db");
    let mut env = base_env(dir);
    env.push(("CIVICAST_MQTT_LISTEN", format!("127.0.0.1:{port}")));
    env.push((
        "CIVICAST_DATABASE_URL",
        format!("sqlite://{}", db.display()),
    ));
    soak(dir, env, port, || async {
        let store = sqlite_store(dir, "civicast.db").await;
        sqlx::query_as(&count_rows_of("receipts"))
            .fetch_one(store.pool())
            .await
            .expect("count receipts")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_MQTT and CIVICAST_TEST_PG"]
async fn a_short_soak_on_mosquitto_and_postgres_stores_every_receipt_once() {
    assert!(
        std::env::var_os("CIVICAST_TEST_MQTT").is_some(),
        "needs CIVICAST_TEST_MQTT (Mosquitto installed)"
    );
    let base = std::env::var("CIVICAST_TEST_PG").expect("needs CIVICAST_TEST_PG (PostgreSQL)");
    let mosquitto = Mosquitto::start_open().await;
    let port = mosquitto.port;
    with_schema(base, move |schema| async move {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        write_fleet_city(dir);
        let mut env = base_env(dir);
        env.push(("CIVICAST_MQTT_URL", format!("mqtt://127.0.0.1:{port}")));
        env.push(("CIVICAST_DATABASE_URL", schema.url()));
        soak(dir, env, port, || async {
            let store = schema.store().await;
            sqlx::query_as(&count_rows_of("receipts_all"))
                .fetch_one(store.pool())
                .await
                .expect("count receipts")
        })
        .await;
        drop(mosquitto);
    })
    .await;
}
