//! The `Store` contract, run against every backend: SQLite always (a temporary file), and
//! PostgreSQL when `CIVICAST_TEST_PG` names a database, e.g.
//!
//! ```text
//! CIVICAST_TEST_PG=postgres://postgres@127.0.0.1:5432/test \
//!     cargo test --test store -- --include-ignored
//! ```
//!
//! Each PostgreSQL test works in a fresh schema `t_<ulid>` and drops it at the end. The
//! PostgreSQL tests are ignored by default and fail (not skip) when run without the variable.

use std::future::Future;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use civicast::audit::{PlaysParams, PlaysQuery, PlaysRow};
use civicast::store::{
    Batch, DeviceRow, Membership, NewPlay, PgStore, PlayRow, PresenceEvent, ReceiptRow,
    SqliteStore, Store,
};
use civicast::wire::{Reject, Status};
use sqlx::Connection;

// ---------------------------------------------------------------------------------------
// Harness

/// What the tests read straight from the tables: the trait has no reader for these.
trait Inspect: Store {
    fn receipt_count(&self) -> impl Future<Output = i64> + Send;
    fn presence_rows(&self) -> impl Future<Output = Vec<(i64, i64, Option<i64>)>> + Send;
}

const PRESENCE_SQL: &str =
    "SELECT device, online_from, online_until FROM presence ORDER BY device, online_from";

impl Inspect for SqliteStore {
    async fn receipt_count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM receipts")
            .fetch_one(self.pool())
            .await
            .expect("count receipts")
    }
    async fn presence_rows(&self) -> Vec<(i64, i64, Option<i64>)> {
        sqlx::query_as(PRESENCE_SQL)
            .fetch_all(self.pool())
            .await
            .expect("read presence")
    }
}

impl Inspect for PgStore {
    async fn receipt_count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM receipts")
            .fetch_one(self.pool())
            .await
            .expect("count receipts")
    }
    async fn presence_rows(&self) -> Vec<(i64, i64, Option<i64>)> {
        sqlx::query_as(PRESENCE_SQL)
            .fetch_all(self.pool())
            .await
            .expect("read presence")
    }
}

/// Runs `test` on a migrated SQLite store in a temporary directory.
async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(SqliteStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("civicast.db").display());
    let s = SqliteStore::connect(&url).await.expect("open sqlite");
    s.migrate().await.expect("migrate sqlite");
    test(s).await;
}

/// Runs `test` on a migrated PostgreSQL store in a fresh schema, dropped afterwards even
/// when the test fails.
async fn on_pg<F, Fut>(test: F)
where
    F: FnOnce(PgStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let url = std::env::var("CIVICAST_TEST_PG").expect(
        "CIVICAST_TEST_PG is not set: point it at a PostgreSQL database \
         (postgres://postgres@127.0.0.1:5432/test) to run the PostgreSQL store tests",
    );
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let s = PgStore::connect_schema(&url, &schema)
        .await
        .expect("connect to CIVICAST_TEST_PG");
    let migrated = s.migrate().await;
    // The test runs in its own task so that a failing assertion still drops the schema.
    let outcome = match migrated {
        Ok(()) => tokio::spawn(test(s.clone())).await.map_err(Some),
        Err(e) => {
            eprintln!("migrate: {e}");
            Err(None)
        }
    };
    s.pool().close().await;
    let mut c = sqlx::PgConnection::connect(&url).await.expect("reconnect");
    sqlx::raw_sql(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut c)
        .await
        .expect("drop test schema");
    match outcome {
        Ok(()) => {}
        Err(Some(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(Some(e)) => panic!("test task: {e}"),
        Err(None) => panic!("migration failed"),
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures

fn ms(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("valid time")
        .timestamp_millis()
}

fn dev(name: &str, class: &str, feeds: &[&str]) -> DeviceRow {
    DeviceRow {
        name: name.to_owned(),
        class: class.to_owned(),
        feeds: feeds.iter().map(|f| (*f).to_owned()).collect(),
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn receipt(device: i64, play: &PlayRow, started_ms: i64, status: Status) -> ReceiptRow {
    ReceiptRow {
        device,
        play: play.key,
        started_ms,
        duration_ms: 8_000,
        status,
        slogan: play.slogan,
        feed: play.feed.unwrap_or(0),
    }
}

fn query(p: PlaysParams) -> PlaysQuery {
    PlaysQuery::parse(&p, Tz::UTC).expect("valid audit query")
}

fn total(rows: &[PlaysRow]) -> i64 {
    rows.iter().map(|r| r.plays).sum()
}

/// A small city: displays a, b, c; feeds bus, taxi; slogans x, y of ad set "civility".
struct City {
    a: i64,
    b: i64,
    c: i64,
    bus: i64,
    x: i64,
    y: i64,
}

async fn city<S: Store>(s: &S) -> City {
    let keys = s
        .sync_inventory(
            &[
                dev("a", "bus_led", &["bus"]),
                dev("b", "bus_led", &["bus"]),
                dev("c", "taxi_top", &["taxi"]),
            ],
            &strings(&["bus", "taxi"]),
            1_000,
        )
        .await
        .expect("inventory");
    City {
        a: keys.devices["a"],
        b: keys.devices["b"],
        c: keys.devices["c"],
        bus: keys.feeds["bus"],
        x: s.slogan_key("civility", 1, "x").await.expect("slogan x"),
        y: s.slogan_key("civility", 1, "y").await.expect("slogan y"),
    }
}

/// Records a play on `feed` (or direct to `device`) and reads it back.
async fn play<S: Store>(
    s: &S,
    id: &str,
    feed: Option<i64>,
    device: Option<i64>,
    slogan: i64,
    issued_ms: i64,
) -> PlayRow {
    s.record_play(
        &NewPlay {
            play_id: id.to_owned(),
            feed,
            device,
            slogan,
            issued_ms,
            expires_ms: issued_ms + 600_000,
            members: 2,
        },
        None,
    )
    .await
    .expect("record play");
    s.play_by_id(id)
        .await
        .expect("play_by_id")
        .expect("play stored")
}

// ---------------------------------------------------------------------------------------
// The contract, once for every backend

async fn inventory<S: Store>(s: S) {
    let feeds = strings(&["bus", "taxi"]);
    // "a" is listed twice: the last listing wins, as row by row.
    let k1 = s
        .sync_inventory(
            &[
                dev("a", "old_class", &["bus"]),
                dev("a", "bus_led", &["bus"]),
                dev("b", "bus_led", &["bus", "taxi", "no_such_feed"]),
            ],
            &feeds,
            1_000,
        )
        .await
        .expect("first sync");
    assert_eq!(k1.devices.len(), 2);
    assert_eq!(k1.feeds.len(), 2);
    let (a, b) = (k1.devices["a"], k1.devices["b"]);
    let (bus, taxi) = (k1.feeds["bus"], k1.feeds["taxi"]);
    assert_ne!(a, b);
    assert_ne!(bus, taxi);

    let mut m = s.memberships().await.expect("memberships");
    m.sort_by_key(|m| (m.device, m.feed, m.since_ms));
    let mut want = vec![
        Membership {
            device: a,
            feed: bus,
            since_ms: 1_000,
            until_ms: None,
        },
        Membership {
            device: b,
            feed: bus,
            since_ms: 1_000,
            until_ms: None,
        },
        Membership {
            device: b,
            feed: taxi,
            since_ms: 1_000,
            until_ms: None,
        },
    ];
    want.sort_by_key(|m| (m.device, m.feed, m.since_ms));
    assert_eq!(m, want);

    // Unchanged inventory: same keys, no new intervals.
    let k2 = s
        .sync_inventory(
            &[
                dev("a", "bus_led", &["bus"]),
                dev("b", "bus_led", &["bus", "taxi"]),
            ],
            &feeds,
            1_500,
        )
        .await
        .expect("same sync");
    assert_eq!(k2.devices, k1.devices);
    assert_eq!(k2.feeds, k1.feeds);
    assert_eq!(s.memberships().await.expect("memberships").len(), 3);

    // a moves from bus to taxi, b leaves taxi, a new display d and feed metro appear.
    let k3 = s
        .sync_inventory(
            &[
                dev("a", "bus_led", &["taxi"]),
                dev("b", "bus_led", &["bus"]),
                dev("d", "metro_lcd", &["metro"]),
            ],
            &strings(&["bus", "taxi", "metro"]),
            2_000,
        )
        .await
        .expect("changed sync");
    assert_eq!(k3.devices["a"], a);
    assert_eq!(k3.devices["b"], b);
    let (d, metro) = (k3.devices["d"], k3.feeds["metro"]);

    // b is no longer listed: it keeps its key and history, its interval closes.
    let k4 = s
        .sync_inventory(
            &[
                dev("a", "bus_led", &["taxi"]),
                dev("d", "metro_lcd", &["metro"]),
            ],
            &strings(&["bus", "taxi", "metro"]),
            3_000,
        )
        .await
        .expect("shrunk sync");
    assert_eq!(k4.devices["b"], b, "unlisted displays keep their key");

    let mut m = s.memberships().await.expect("memberships");
    m.sort_by_key(|m| (m.device, m.feed, m.since_ms));
    let mut want = vec![
        Membership {
            device: a,
            feed: bus,
            since_ms: 1_000,
            until_ms: Some(2_000),
        },
        Membership {
            device: a,
            feed: taxi,
            since_ms: 2_000,
            until_ms: None,
        },
        Membership {
            device: b,
            feed: bus,
            since_ms: 1_000,
            until_ms: Some(3_000),
        },
        Membership {
            device: b,
            feed: taxi,
            since_ms: 1_000,
            until_ms: Some(2_000),
        },
        Membership {
            device: d,
            feed: metro,
            since_ms: 2_000,
            until_ms: None,
        },
    ];
    want.sort_by_key(|m| (m.device, m.feed, m.since_ms));
    assert_eq!(m, want);
}

async fn plays<S: Store>(s: S) {
    let c = city(&s).await;
    assert_eq!(
        s.slogan_key("civility", 1, "x")
            .await
            .expect("slogan again"),
        c.x,
        "a slogan revision keeps its key"
    );
    let x2 = s
        .slogan_key("civility", 2, "x")
        .await
        .expect("new revision");
    assert_ne!(x2, c.x);

    assert_eq!(s.feed_state("bus").await.expect("feed_state"), None);
    let t0 = ms(2024, 3, 1, 8, 0, 0);
    let np = NewPlay {
        play_id: "01HPLAYBUS".to_owned(),
        feed: Some(c.bus),
        device: None,
        slogan: c.x,
        issued_ms: t0,
        expires_ms: t0 + 600_000,
        members: 2,
    };
    let k1 = s
        .record_play(&np, Some(("bus", r#"{"next":1}"#)))
        .await
        .expect("record feed play");
    assert_eq!(
        s.feed_state("bus").await.expect("feed_state"),
        Some((r#"{"next":1}"#.to_owned(), t0))
    );
    let direct = NewPlay {
        play_id: "01HPLAYDIRECT".to_owned(),
        feed: None,
        device: Some(c.c),
        slogan: c.y,
        issued_ms: t0 + 60_000,
        expires_ms: t0 + 120_000,
        members: 1,
    };
    let k2 = s
        .record_play(&direct, None)
        .await
        .expect("record direct play");
    assert_ne!(k1, k2);
    let np3 = NewPlay {
        play_id: "01HPLAYBUS3".to_owned(),
        issued_ms: t0 + 180_000,
        expires_ms: t0 + 780_000,
        ..np.clone()
    };
    let k3 = s
        .record_play(&np3, Some(("bus", r#"{"next":2}"#)))
        .await
        .expect("record second feed play");
    assert_eq!(
        s.feed_state("bus").await.expect("feed_state"),
        Some((r#"{"next":2}"#.to_owned(), t0 + 180_000)),
        "the cursor moves with each play"
    );
    assert!(
        s.record_play(&np, None).await.is_err(),
        "a play id is stored once"
    );

    let row1 = PlayRow {
        key: k1,
        play_id: np.play_id.clone(),
        feed: Some(c.bus),
        device: None,
        slogan: c.x,
        issued_ms: t0,
        expires_ms: t0 + 600_000,
    };
    let row2 = PlayRow {
        key: k2,
        play_id: direct.play_id.clone(),
        feed: None,
        device: Some(c.c),
        slogan: c.y,
        issued_ms: t0 + 60_000,
        expires_ms: t0 + 120_000,
    };
    assert_eq!(
        s.play_by_id("01HPLAYBUS").await.expect("by id"),
        Some(row1.clone())
    );
    assert_eq!(
        s.play_by_id("01HPLAYDIRECT").await.expect("by id"),
        Some(row2.clone())
    );
    assert_eq!(s.play_by_id("nope").await.expect("by id"), None);

    let keys = |v: Vec<PlayRow>| {
        let mut k: Vec<i64> = v.into_iter().map(|p| p.key).collect();
        k.sort_unstable();
        k
    };
    assert_eq!(keys(s.plays_since(t0).await.expect("since")), {
        let mut k = vec![k1, k2, k3];
        k.sort_unstable();
        k
    });
    assert_eq!(keys(s.plays_since(t0 + 1).await.expect("since")), {
        let mut k = vec![k2, k3];
        k.sort_unstable();
        k
    });
    assert_eq!(
        keys(s.plays_since(t0 + 180_000).await.expect("since")),
        vec![k3]
    );
    assert!(s.plays_since(t0 + 180_001).await.expect("since").is_empty());
    let since = s.plays_since(t0).await.expect("since");
    assert!(since.contains(&row1) && since.contains(&row2));
}

async fn receipts_once<S: Store + Inspect>(s: S) {
    let c = city(&s).await;
    let t0 = ms(2024, 3, 1, 23, 58, 0);
    let p1 = play(&s, "p1", Some(c.bus), None, c.x, t0).await;
    let p2 = play(&s, "p2", Some(c.bus), None, c.y, t0 + 180_000).await;
    let p3 = play(&s, "p3", None, Some(c.c), c.y, t0).await;
    let day = 86_400_000;

    // Within one batch: the first copy wins, even with another start time.
    let out = s
        .commit_batch(&Batch {
            receipts: vec![
                receipt(c.a, &p1, t0 + 1_000, Status::Played),
                receipt(c.a, &p1, t0 + 5_000, Status::Skipped),
                receipt(c.b, &p1, t0 + 2_000, Status::Played),
                receipt(c.c, &p3, t0 + 3_000, Status::Failed),
            ],
            ..Batch::default()
        })
        .await
        .expect("batch 1");
    assert_eq!((out.stored, out.duplicates), (3, 1));

    // Across batches: redeliveries, including one claiming another hour and another day
    // (a display whose clock stepped), are duplicates.
    let out = s
        .commit_batch(&Batch {
            receipts: vec![
                receipt(c.a, &p1, t0 + 1_000, Status::Played),
                receipt(c.b, &p1, t0 + day + 7_200_000, Status::Played),
                receipt(c.a, &p2, t0 + 181_000, Status::Played), // the next day, 00:01
                receipt(c.b, &p2, t0 + 182_000, Status::Skipped),
            ],
            ..Batch::default()
        })
        .await
        .expect("batch 2");
    assert_eq!((out.stored, out.duplicates), (2, 2));
    let out = s
        .commit_batch(&Batch::default())
        .await
        .expect("empty batch");
    assert_eq!((out.stored, out.duplicates), (0, 0));
    assert_eq!(s.receipt_count().await, 5);

    // The rollup counts what was stored, and matches the raw receipts.
    let by_status = |status: &str, from: &str, to: &str| PlaysParams {
        from: Some(from.to_owned()),
        to: Some(to.to_owned()),
        group_by: Some("device,slogan,feed".to_owned()),
        status: Some(status.to_owned()),
        ..PlaysParams::default()
    };
    let row = |v: &[&str], plays: i64| PlaysRow {
        values: strings(v),
        plays,
    };
    for (status, want) in [
        (
            "played",
            vec![
                row(&["a", "x", "bus"], 1),
                row(&["a", "y", "bus"], 1),
                row(&["b", "x", "bus"], 1),
            ],
        ),
        ("skipped", vec![row(&["b", "y", "bus"], 1)]),
        ("failed", vec![row(&["c", "y", ""], 1)]),
        ("expired", vec![]),
    ] {
        let rollup = query(by_status(status, "2024-03-01", "2024-03-03"));
        let raw = query(by_status(
            status,
            "2024-03-01T00:00:00.5Z",
            "2024-03-02T23:59:59Z",
        ));
        assert!(rollup.rollup_ok() && !raw.rollup_ok());
        assert_eq!(
            s.audit_plays(&rollup).await.expect("rollup audit"),
            want,
            "{status}"
        );
        assert_eq!(
            s.audit_plays(&raw).await.expect("raw audit"),
            want,
            "{status}"
        );
    }
    let all = query(PlaysParams::default());
    assert_eq!(total(&s.audit_plays(&all).await.expect("audit")), 3);
}

async fn rejects<S: Store>(s: S) {
    assert!(s.reject_counts().await.expect("no rejects").is_empty());
    s.commit_batch(&Batch {
        rejects: vec![
            (Reject::UnknownPlay, 19_800),
            (Reject::UnknownPlay, 19_800),
            (Reject::Malformed, 19_801),
            (Reject::UnknownPlay, 19_801),
        ],
        ..Batch::default()
    })
    .await
    .expect("batch 1");
    s.commit_batch(&Batch {
        rejects: vec![(Reject::UnknownPlay, 19_800), (Reject::NotSent, 19_802)],
        ..Batch::default()
    })
    .await
    .expect("batch 2");
    assert_eq!(
        s.reject_counts().await.expect("reject counts"),
        vec![
            ("malformed".to_owned(), 1),
            ("not_sent".to_owned(), 1),
            ("unknown_play".to_owned(), 4),
        ]
    );
}

async fn presence<S: Store + Inspect>(s: S) {
    let c = city(&s).await;
    let ev = |device, online, at_ms| PresenceEvent {
        device,
        online,
        at_ms,
    };
    s.commit_batch(&Batch {
        presence: vec![
            ev(c.a, true, 100),
            ev(c.a, true, 150),  // already online: no new interval
            ev(c.b, false, 100), // not online: nothing to close
            ev(c.a, false, 200),
            ev(c.a, false, 250), // already offline
            ev(c.b, true, 300),
        ],
        ..Batch::default()
    })
    .await
    .expect("batch 1");
    assert_eq!(
        s.presence_rows().await,
        vec![(c.a, 100, Some(200)), (c.b, 300, None)]
    );
    s.commit_batch(&Batch {
        presence: vec![
            ev(c.a, true, 400),
            ev(c.b, false, 290), // an offline stamped before the online: a zero interval
            ev(c.c, true, 500),
        ],
        ..Batch::default()
    })
    .await
    .expect("batch 2");
    let mut want = vec![
        (c.a, 100, Some(200)),
        (c.a, 400, None),
        (c.b, 300, Some(300)),
        (c.c, 500, None),
    ];
    want.sort_unstable();
    assert_eq!(s.presence_rows().await, want);
}

/// Receipts over two days, three displays, two slogans; the expected counts by hand.
async fn audits<S: Store>(s: S) {
    let c = city(&s).await;
    let base = ms(2024, 3, 1, 0, 0, 0);
    let mut batch = Batch::default();
    // (started_ms, device, slogan, status) of every receipt, to count by hand.
    let mut truth: Vec<(i64, &str, &str, Status)> = Vec::new();
    let devices = [("a", c.a), ("b", c.b), ("c", c.c)];
    for i in 0..48 {
        // One play every 59 minutes, alternating slogans, from 00:20 on 1 March.
        let issued = base + 1_200_000 + i * 3_540_000;
        let (sname, sk) = if i % 2 == 0 { ("x", c.x) } else { ("y", c.y) };
        let p = play(&s, &format!("play{i:02}"), Some(c.bus), None, sk, issued).await;
        for (j, (dname, dk)) in devices.iter().enumerate() {
            if (i as usize + j) % 5 == 0 {
                continue; // this display missed the play
            }
            let status = if (i as usize + j) % 7 == 0 {
                Status::Skipped
            } else {
                Status::Played
            };
            let started = issued + 1_000 + j as i64 * 250;
            batch.receipts.push(receipt(*dk, &p, started, status));
            truth.push((started, dname, sname, status));
        }
    }
    // Redeliveries must not count.
    let copies: Vec<ReceiptRow> = batch.receipts.iter().step_by(3).cloned().collect();
    let n = batch.receipts.len();
    let half = batch.receipts.split_off(n / 2);
    let out1 = s.commit_batch(&batch).await.expect("first half");
    let out2 = s
        .commit_batch(&Batch {
            receipts: [half, copies.clone()].concat(),
            ..Batch::default()
        })
        .await
        .expect("second half and copies");
    assert_eq!(out1.stored + out2.stored, n);
    assert_eq!(out2.duplicates, copies.len());

    let count = |from: i64, to: i64| -> Vec<PlaysRow> {
        let mut acc: std::collections::BTreeMap<Vec<String>, i64> = Default::default();
        for (t, d, sl, st) in &truth {
            if *st == Status::Played && *t >= from && *t < to {
                let day = DateTime::from_timestamp_millis(*t)
                    .expect("time")
                    .format("%Y-%m-%d")
                    .to_string();
                *acc.entry(vec![(*d).to_owned(), (*sl).to_owned(), day])
                    .or_default() += 1;
            }
        }
        acc.into_iter()
            .map(|(values, plays)| PlaysRow { values, plays })
            .collect()
    };
    let params = |from: &str, to: &str| PlaysParams {
        from: Some(from.to_owned()),
        to: Some(to.to_owned()),
        group_by: Some("device,slogan,day".to_owned()),
        ..PlaysParams::default()
    };

    // Date bounds: the rollup answers.
    let q = query(params("2024-03-01", "2024-03-03"));
    assert!(q.rollup_ok());
    let by_rollup = s.audit_plays(&q).await.expect("rollup audit");
    assert_eq!(by_rollup, count(base, base + 2 * 86_400_000));
    assert!(by_rollup.iter().any(|r| r.values[2] == "2024-03-02"));

    // Bounds off the hour around the same receipts: raw receipts answer, same totals.
    let q = query(params("2024-02-29T23:59:30Z", "2024-03-03T00:00:30Z"));
    assert!(!q.rollup_ok());
    let by_raw = s.audit_plays(&q).await.expect("raw audit");
    assert_eq!(by_raw, by_rollup);
    assert_eq!(total(&by_raw), total(&by_rollup));

    // A cut in the middle of an hour counts only the receipts after it.
    let cut = ms(2024, 3, 1, 10, 30, 0);
    let q = query(params("2024-03-01T10:30:00Z", "2024-03-02T05:15:00Z"));
    assert_eq!(
        s.audit_plays(&q).await.expect("cut audit"),
        count(cut, ms(2024, 3, 2, 5, 15, 0))
    );

    // Filters and the other groupings agree with the hand count.
    let q = query(PlaysParams {
        device: Some("b".to_owned()),
        group_by: Some("hour".to_owned()),
        ..params("2024-03-01", "2024-03-03")
    });
    let by_hour = s.audit_plays(&q).await.expect("hourly audit");
    let b_played = truth
        .iter()
        .filter(|r| r.1 == "b" && r.3 == Status::Played)
        .count() as i64;
    assert_eq!(total(&by_hour), b_played);
    let skipped = query(PlaysParams {
        status: Some("skipped".to_owned()),
        ..PlaysParams::default()
    });
    let want = truth.iter().filter(|r| r.3 == Status::Skipped).count() as i64;
    assert!(want > 0);
    assert_eq!(
        total(&s.audit_plays(&skipped).await.expect("skipped")),
        want
    );
}

// ---------------------------------------------------------------------------------------
// PostgreSQL only: partitions

async fn pg_partitions(s: PgStore) {
    let c = city(&s).await;
    let day_of = |t: i64| t.div_euclid(86_400_000);
    let d0 = ms(2023, 5, 10, 12, 0, 0);
    let d1 = d0 + 86_400_000;
    let d2 = d1 + 86_400_000;
    assert_eq!(s.ensure_partitions(day_of(d0), 2).await.expect("ensure"), 3);
    assert_eq!(s.ensure_partitions(day_of(d0), 2).await.expect("again"), 0);
    let names: Vec<String> = s
        .partitions()
        .await
        .expect("partitions")
        .into_iter()
        .map(|p| p.2)
        .collect();
    for n in [
        "receipts_20230510",
        "receipts_20230511",
        "receipts_20230512",
    ] {
        assert!(names.contains(&n.to_owned()), "{n} in {names:?}");
    }

    // A play just before midnight: its receipts after midnight stay in its day.
    let p0 = play(&s, "p0", Some(c.bus), None, c.x, d0).await;
    let p1 = play(&s, "p1", Some(c.bus), None, c.x, d1 + 43_200_000 - 1_000).await;
    let p2 = play(&s, "p2", Some(c.bus), None, c.y, d2).await;
    // A day with no partition yet goes to DEFAULT.
    let d9 = d2 + 5 * 86_400_000;
    let p9 = play(&s, "p9", Some(c.bus), None, c.y, d9).await;
    let out = s
        .commit_batch(&Batch {
            receipts: vec![
                receipt(c.a, &p0, d0 + 1_000, Status::Played),
                receipt(c.b, &p0, d0 + 1_000, Status::Played),
                receipt(c.a, &p1, p1.issued_ms + 5_000, Status::Played),
                receipt(c.a, &p2, d2 + 1_000, Status::Played),
                receipt(c.a, &p9, d9 + 1_000, Status::Played),
            ],
            ..Batch::default()
        })
        .await
        .expect("batch");
    assert_eq!(out.stored, 5);
    let in_table = |t: &'static str| {
        let pool = s.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM ONLY {t}"))
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    assert_eq!(in_table("receipts_20230510").await, 2);
    assert_eq!(
        in_table("receipts_20230511").await,
        1,
        "receipts follow their play's day"
    );
    assert_eq!(in_table("receipts_20230512").await, 1);
    assert_eq!(in_table("receipts_default").await, 1);

    // Creating the missing day moves its rows out of DEFAULT; dedupe still holds there.
    assert_eq!(
        s.ensure_partitions(day_of(d9), 0).await.expect("ensure d9"),
        1
    );
    assert_eq!(in_table("receipts_default").await, 0);
    assert_eq!(in_table("receipts_20230517").await, 1);
    let again = s
        .commit_batch(&Batch {
            receipts: vec![receipt(c.a, &p9, d9 + 9_000, Status::Played)],
            ..Batch::default()
        })
        .await
        .expect("redelivery");
    assert_eq!((again.stored, again.duplicates), (0, 1));

    // Retention drops whole days; rollups stay.
    let all = query(PlaysParams::default());
    assert_eq!(total(&s.audit_plays(&all).await.expect("audit")), 5);
    assert_eq!(s.drop_partitions_before(day_of(d2)).await.expect("drop"), 2);
    let names: Vec<String> = s
        .partitions()
        .await
        .expect("partitions")
        .into_iter()
        .map(|p| p.2)
        .collect();
    assert!(!names.contains(&"receipts_20230510".to_owned()));
    assert!(!names.contains(&"receipts_20230511".to_owned()));
    assert!(names.contains(&"receipts_20230512".to_owned()));
    assert!(names.contains(&"receipts_20230517".to_owned()));
    assert_eq!(s.receipt_count().await, 2);
    assert_eq!(
        total(&s.audit_plays(&all).await.expect("audit")),
        5,
        "rollups are kept"
    );
    // Raw audits now see only the kept days.
    let raw = query(PlaysParams {
        from: Some("2023-05-01T00:00:00.5Z".to_owned()),
        to: Some("2023-06-01T00:00:00.5Z".to_owned()),
        ..PlaysParams::default()
    });
    assert_eq!(total(&s.audit_plays(&raw).await.expect("raw audit")), 2);
    assert_eq!(
        s.drop_partitions_before(day_of(d2))
            .await
            .expect("drop again"),
        0
    );

    // migrate() made partitions around today.
    let today = Utc::now().timestamp_millis().div_euclid(86_400_000);
    let days: Vec<i64> = s
        .partitions()
        .await
        .expect("partitions")
        .into_iter()
        .map(|p| p.0)
        .collect();
    for d in [today - 7, today, today + 14] {
        assert!(days.contains(&d), "partition for day {d}");
    }
}

// ---------------------------------------------------------------------------------------
// Entry points: SQLite always, PostgreSQL with CIVICAST_TEST_PG

#[tokio::test]
async fn sqlite_inventory() {
    on_sqlite(inventory).await;
}
#[tokio::test]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn pg_inventory() {
    on_pg(inventory).await;
}

#[tokio::test]
async fn sqlite_plays() {
    on_sqlite(plays).await;
}
#[tokio::test]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn pg_plays() {
    on_pg(plays).await;
}

#[tokio::test]
async fn sqlite_receipts_once() {
    on_sqlite(receipts_once).await;
}
#[tokio::test]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn pg_receipts_once() {
    on_pg(receipts_once).await;
}

#[tokio::test]
async fn sqlite_rejects() {
    on_sqlite(rejects).await;
}
#[tokio::test]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn pg_rejects() {
    on_pg(rejects).await;
}

#[tokio::test]
async fn sqlite_presence() {
    on_sqlite(presence).await;
}
#[tokio::test]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn pg_presence() {
    on_pg(presence).await;
}

#[tokio::test]
async fn sqlite_audits() {
    on_sqlite(audits).await;
}
#[tokio::test]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn pg_audits() {
    on_pg(audits).await;
}

#[tokio::test]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn pg_partition_retention() {
    on_pg(pg_partitions).await;
}
