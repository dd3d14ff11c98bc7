//! The `Store` contract, run against every backend: SQLite always (a temporary file), and
//! PostgreSQL when `CIVICAST_TEST_PG` names a database, e.g.
//!
//! ```text
//! CIVICAST_TEST_PG=postgres://postgres@127.0.0.1:5432/test \
//!     cargo test --test store -- --include-ignored
//! ```
//!
//! Each test is written once, generic over the backend, and `both_backends!` (at the end)
//! runs it as `name::sqlite` and `name::postgres`; a few PostgreSQL-only tests stand alone.
//! Each PostgreSQL test works in a fresh schema `t_<ulid>` and drops it at the end. The
//! PostgreSQL tests are ignored by default and fail (not skip) when run without the variable.

use std::future::Future;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use civicast::core::audit::{PlaysParams, PlaysQuery, PlaysRow};
use civicast::core::urgent::{Targets, UrgentMessage, UrgentRefusal, UrgentStatus};
use civicast::core::wire::{Reject, Status};
use civicast::store::{
    AdSetHistory, ApiStore, ApproveError, Approver, Batch, DeviceRow, FeedPlay, FeedState,
    LastReceipt, Membership, NewPlay, PgStore, PlayRange, PlayReceipt, PlayRow, PlayedTimes,
    PresenceEvent, PresenceKeySpan, PresenceSpan, ReceiptRow, RejectCount, Retirement, Revision,
    Role, SqliteStore, Store, StoreError, TokenRow,
};
use civicast::store::{UrgentStore, UrgentStoreError};
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
        // Raw and packed (closed days) alike.
        sqlx::query_scalar("SELECT COUNT(*) FROM receipts_all")
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

/// A migrator of `backend`'s migrations up to `version` only (the files as they are, so
/// that the full migration later sees them as applied).
async fn migrator_through(backend: &str, version: u32) -> sqlx::migrate::Migrator {
    let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    let dir = tempfile::tempdir().expect("tempdir");
    for e in std::fs::read_dir(&from).expect("migrations") {
        let path = e.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let number: u32 = name
            .split('_')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if number >= 1 && number <= version {
            std::fs::copy(&path, dir.path().join(name)).expect("copy migration");
        }
    }
    sqlx::migrate::Migrator::new(dir.path())
        .await
        .expect("read migrations")
}

/// Ad-set rows as version 0004 stored them: `civility` approved at 1, then retired, then
/// uploaded again (rev 2, before uploads stopped deleting retirements the retirement would
/// have been gone; this is a database retired after its last upload), and a file set.
const ROWS_AT_0004: &str = "
    INSERT INTO adset_revisions (adset, rev, format, body, origin, uploaded_by, uploaded_at, approved_by, approved_at) VALUES
      ('civility', 1, 'toml', '# one', 'upload', 'alice', 1000, 'bob', 1100),
      ('civility', 2, 'toml', '# two', 'upload', 'alice', 2000, NULL, NULL),
      ('parks', 1, 'toml', '# parks', 'file', 'file:parks.toml', 3000, 'file:parks.toml', 3000);
    INSERT INTO adset_retired (adset, retired_by, retired_at) VALUES ('civility', 'carol', 2500);";

/// Runs `test` on a SQLite store that held [`ROWS_AT_0004`] at version 0004 and was then
/// migrated to the current version.
async fn on_sqlite_upgraded<F, Fut>(test: F)
where
    F: FnOnce(SqliteStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("civicast.db").display());
    let s = SqliteStore::connect(&url).await.expect("open sqlite");
    migrator_through("sqlite", 4)
        .await
        .run(s.pool())
        .await
        .expect("migrate to 0004");
    sqlx::raw_sql(ROWS_AT_0004)
        .execute(s.pool())
        .await
        .expect("rows of 0004");
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
    on_pg_from(false, test).await
}

/// [`on_sqlite_upgraded`] on PostgreSQL.
async fn on_pg_upgraded<F, Fut>(test: F)
where
    F: FnOnce(PgStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    on_pg_from(true, test).await
}

/// [`on_pg`], from [`ROWS_AT_0004`] at version 0004 when `upgraded`.
async fn on_pg_from<F, Fut>(upgraded: bool, test: F)
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
    if upgraded {
        migrator_through("postgres", 4)
            .await
            .run(s.pool())
            .await
            .expect("migrate to 0004");
        sqlx::raw_sql(ROWS_AT_0004)
            .execute(s.pool())
            .await
            .expect("rows of 0004");
    }
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

/// `played_between`'s answer as (display, start) pairs, in order.
fn flat(v: Vec<PlayedTimes>) -> Vec<(String, i64)> {
    v.into_iter()
        .flat_map(|p| {
            let d = p.device;
            p.starts.into_iter().map(move |t| (d.clone(), t))
        })
        .collect()
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
        Some(FeedState {
            cursor_json: r#"{"next":1}"#.to_owned(),
            last_played_ms: t0
        })
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
        Some(FeedState {
            cursor_json: r#"{"next":2}"#.to_owned(),
            last_played_ms: t0 + 180_000
        }),
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
        [("malformed", 1), ("not_sent", 1), ("unknown_play", 4)]
            .map(|(reason, count)| RejectCount {
                reason: reason.to_owned(),
                count
            })
            .to_vec()
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
            if (i as usize + j).is_multiple_of(5) {
                continue; // this display missed the play
            }
            let status = if (i as usize + j).is_multiple_of(7) {
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
// The API contract (`ApiStore`), once for every backend

async fn tokens<S: ApiStore>(s: S) {
    assert!(s.tokens().await.expect("no tokens").is_empty());
    let ops = s
        .create_token("ops", Role::Operator, "hash-ops", 1_000)
        .await
        .expect("create ops");
    let aud = s
        .create_token("aud", Role::Auditor, "hash-aud", 1_100)
        .await
        .expect("create aud");
    let ci = s
        .create_token("ci", Role::Admin, "hash-ci1", 1_200)
        .await
        .expect("create ci");
    assert!(ops < aud && aud < ci, "ids grow");
    assert!(
        s.create_token("other", Role::Admin, "hash-ops", 1_400)
            .await
            .is_err(),
        "a hash is stored once"
    );
    assert!(
        s.create_token("ci", Role::Operator, "hash-ci2", 1_300)
            .await
            .is_err(),
        "a name is given once"
    );

    let row = |id, name: &str, role, created_ms, revoked_ms| TokenRow {
        id,
        name: name.to_owned(),
        role,
        created_ms,
        revoked_ms,
    };
    assert_eq!(
        s.token_by_hash("hash-ops").await.expect("find ops"),
        Some(row(ops, "ops", Role::Operator, 1_000, None))
    );
    assert_eq!(
        s.token_by_hash("hash-ci1").await.expect("find ci"),
        Some(row(ci, "ci", Role::Admin, 1_200, None))
    );
    assert_eq!(s.token_by_hash("hash-ci2").await.expect("find ci2"), None);
    assert_eq!(s.token_by_hash("nope").await.expect("find nope"), None);

    assert!(s.revoke_token(ops, 2_000).await.expect("revoke ops"));
    assert_eq!(
        s.token_by_hash("hash-ops").await.expect("find revoked"),
        None,
        "a revoked token is not found"
    );
    assert!(
        !s.revoke_token(ops, 2_500).await.expect("revoke again"),
        "revoking twice revokes nothing"
    );
    assert!(s.revoke_token(ci, 3_000).await.expect("revoke ci"));
    assert!(!s.revoke_token(-1, 3_000).await.expect("revoke"));
    assert_eq!(
        s.token_by_hash("hash-aud").await.expect("find aud"),
        Some(row(aud, "aud", Role::Auditor, 1_100, None)),
        "other tokens stay live"
    );

    assert_eq!(
        s.tokens().await.expect("tokens"),
        vec![
            row(ops, "ops", Role::Operator, 1_000, Some(2_000)),
            row(aud, "aud", Role::Auditor, 1_100, None),
            row(ci, "ci", Role::Admin, 1_200, Some(3_000)),
        ]
    );
}

/// A pending upload of `adset` by `by` at `at`.
fn upload(adset: &str, by: &str, at: i64) -> Revision {
    Revision {
        adset: adset.to_owned(),
        rev: 0,
        format: "toml".to_owned(),
        body: format!("# {adset} from {by} at {at}\n"),
        origin: "upload".to_owned(),
        uploaded_by: by.to_owned(),
        uploaded_token: None,
        uploaded_ms: at,
        approved_by: None,
        approved_token: None,
        approved_ms: None,
    }
}

/// An operator known by name only (as revisions stored before token ids were).
fn op(name: &str) -> Approver<'_> {
    Approver {
        token: None,
        name,
        admin: false,
    }
}

fn admin(name: &str) -> Approver<'_> {
    Approver {
        token: None,
        name,
        admin: true,
    }
}

/// (rev, uploaded_by, approved_by) of each revision.
/// An approval's answer with a refusal as a plain `Err`; a database failure fails the test.
fn approval(r: Result<Revision, StoreError>) -> Result<Revision, ApproveError> {
    match r {
        Ok(rev) => Ok(rev),
        Err(StoreError::Refused(e)) => Err(e),
        Err(e) => panic!("approve: {e}"),
    }
}

fn revs(h: &AdSetHistory) -> Vec<(i64, &str, Option<&str>)> {
    h.revisions
        .iter()
        .map(|r| (r.rev, r.uploaded_by.as_str(), r.approved_by.as_deref()))
        .collect()
}

async fn revisions<S: ApiStore>(s: S) {
    let cv = "civility";
    assert_eq!(s.adset_history(cv).await.expect("history"), None);
    assert!(s.adset_histories().await.expect("histories").is_empty());
    for (by, at, want) in [("alice", 1_000, 1), ("bob", 2_000, 2), ("alice", 3_000, 3)] {
        assert_eq!(
            s.add_revision(&upload(cv, by, at), false)
                .await
                .expect("upload"),
            want
        );
    }
    let h = s
        .adset_history(cv)
        .await
        .expect("history")
        .expect("civility exists");
    assert_eq!(h.adset, cv);
    assert_eq!(h.retired, None);
    assert_eq!(
        revs(&h),
        vec![(1, "alice", None), (2, "bob", None), (3, "alice", None)]
    );
    assert_eq!(
        h.revisions[0],
        Revision {
            rev: 1,
            ..upload(cv, "alice", 1_000)
        },
        "a revision reads back as written"
    );

    // Approval: of the latest revision, never by its uploader unless an admin.
    assert_eq!(
        approval(s.approve_latest("nope", &admin("bob"), 4_000).await),
        Err(ApproveError::NotFound("nope".to_owned()))
    );
    assert_eq!(
        approval(s.approve_latest(cv, &op("alice"), 4_000).await),
        Err(ApproveError::OwnUpload(
            cv.to_owned(),
            3,
            "alice".to_owned()
        ))
    );
    let approved = s
        .approve_latest(cv, &op("bob"), 4_100)
        .await
        .expect("bob approves alice's upload");
    assert_eq!(
        approved,
        Revision {
            rev: 3,
            approved_by: Some("bob".to_owned()),
            approved_ms: Some(4_100),
            ..upload(cv, "alice", 3_000)
        }
    );
    assert_eq!(
        approval(s.approve_latest(cv, &op("carol"), 4_200).await),
        Err(ApproveError::AlreadyApproved(cv.to_owned(), 3))
    );
    s.add_revision(&upload(cv, "alice", 5_000), false)
        .await
        .expect("upload 4");
    let own = s
        .approve_latest(cv, &admin("alice"), 5_100)
        .await
        .expect("an admin approves their own upload");
    assert_eq!(
        (own.rev, own.approved_by.as_deref(), own.approved_ms),
        (4, Some("alice"), Some(5_100))
    );
    assert_eq!(
        revs(&s.adset_history(cv).await.expect("history").expect("exists")),
        vec![
            (1, "alice", None),
            (2, "bob", None),
            (3, "alice", Some("bob")),
            (4, "alice", Some("alice")),
        ]
    );

    // Files reviewed in version control come in approved.
    assert_eq!(
        s.add_revision(
            &Revision {
                origin: "file".to_owned(),
                format: "json".to_owned(),
                ..upload("parks", "schedules/parks.json", 6_000)
            },
            true,
        )
        .await
        .expect("file revision"),
        1
    );
    let parks = s
        .adset_history("parks")
        .await
        .expect("history")
        .expect("parks exists");
    assert_eq!(
        parks.revisions[0].approved_by.as_deref(),
        Some("schedules/parks.json")
    );
    assert_eq!(parks.revisions[0].approved_ms, Some(6_000));
    assert_eq!(parks.revisions[0].format, "json");
    assert_eq!(parks.revisions[0].origin, "file");
    assert_eq!(
        approval(s.approve_latest("parks", &op("bob"), 6_100).await),
        Err(ApproveError::AlreadyApproved("parks".to_owned(), 1))
    );

    // Retirement: refuses approval (before any other check), a second retirement keeps
    // the first, and a new upload is pending and does not bring the retired revision back.
    assert!(!s.retire("nope", "carol", 7_000).await.expect("retire"));
    assert_eq!(s.adset_history("nope").await.expect("history"), None);
    assert!(s.retire(cv, "carol", 7_000).await.expect("retire"));
    assert!(s.retire(cv, "dave", 7_500).await.expect("retire again"));
    let carol = Retirement {
        by: "carol".to_owned(),
        at_ms: 7_000,
        through_rev: 4,
        reason: None,
    };
    assert_eq!(
        s.adset_history(cv)
            .await
            .expect("history")
            .expect("exists")
            .retired,
        Some(carol.clone())
    );
    assert_eq!(
        approval(s.approve_latest(cv, &admin("bob"), 7_600).await),
        Err(ApproveError::Retired(cv.to_owned()))
    );
    assert_eq!(
        s.add_revision(&upload(cv, "bob", 8_000), false)
            .await
            .expect("re-upload"),
        5
    );
    let h = s.adset_history(cv).await.expect("history").expect("exists");
    assert_eq!(
        h.retired,
        Some(carol),
        "a new upload leaves the ad set retired until it is approved"
    );
    assert_eq!(
        h.playing(),
        None,
        "the retired revision does not play again"
    );
    assert_eq!(h.revisions.len(), 5);
    assert_eq!(h.revisions[4].approved_by, None, "and is pending");
    assert_eq!(
        approval(s.approve_latest(cv, &op("bob"), 8_050).await).map(|r| r.rev),
        Err(ApproveError::OwnUpload(cv.to_owned(), 5, "bob".to_owned())),
        "four eyes still apply to the revision that ends a retirement"
    );
    assert_eq!(
        approval(s.approve_latest(cv, &op("alice"), 8_100).await).map(|r| r.rev),
        Ok(5)
    );
    let h = s.adset_history(cv).await.expect("history").expect("exists");
    assert_eq!(h.retired, None, "approved after the retirement: live again");
    assert_eq!(h.playing().map(|r| r.rev), Some(5));

    // "Zoo" sorts before "civility" byte-wise, as SQLite orders names.
    s.add_revision(&upload("Zoo", "carol", 9_000), false)
        .await
        .expect("upload Zoo");
    s.add_revision(&upload("Zoo", "dave", 9_100), false)
        .await
        .expect("upload Zoo 2");
    assert!(s.retire("Zoo", "erin", 9_200).await.expect("retire Zoo"));
    let all = s.adset_histories().await.expect("histories");
    let names: Vec<&str> = all.iter().map(|h| h.adset.as_str()).collect();
    assert_eq!(names, vec!["Zoo", "civility", "parks"]);
    assert_eq!(
        all[0].retired,
        Some(Retirement {
            by: "erin".to_owned(),
            at_ms: 9_200,
            through_rev: 2,
            reason: None,
        }),
        "retirement goes with its own ad set"
    );
    assert_eq!(revs(&all[0]), vec![(1, "carol", None), (2, "dave", None)]);
    assert_eq!(all[1].retired, None);
    assert_eq!(
        all[1].revisions.iter().map(|r| r.rev).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(all[2].retired, None);
    assert_eq!(
        revs(&all[2]),
        vec![(1, "schedules/parks.json", Some("schedules/parks.json"))]
    );
    for h in &all {
        assert_eq!(
            Some(h),
            s.adset_history(&h.adset).await.expect("history").as_ref(),
            "adset_history agrees with adset_histories"
        );
    }

    // Concurrent uploads of one ad set get distinct, consecutive numbers.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                s.add_revision(&upload("rush", &format!("op{i}"), 10_000 + i), false)
                    .await
            })
        })
        .collect();
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.expect("join").expect("concurrent upload"));
    }
    got.sort_unstable();
    assert_eq!(got, (1..=8).collect::<Vec<i64>>());
    assert_eq!(
        s.adset_history("rush")
            .await
            .expect("history")
            .expect("exists")
            .revisions
            .len(),
        8
    );
}

/// A retirement holds for every revision it covers, pending ones included; only a revision
/// uploaded after it, once approved by another operator, makes the ad set play again, and
/// then only that revision.
async fn retired_revisions<S: ApiStore>(s: S) {
    let cv = "civility";
    let playing = |h: Option<AdSetHistory>| h.expect("exists").playing().map(|r| r.rev);
    s.add_revision(&upload(cv, "alice", 1_000), false)
        .await
        .expect("upload 1");
    s.approve_latest(cv, &op("bob"), 1_100)
        .await
        .expect("approve 1");
    s.add_revision(&upload(cv, "alice", 2_000), false)
        .await
        .expect("upload 2");
    assert_eq!(
        playing(s.adset_history(cv).await.expect("history")),
        Some(1)
    );

    // Retired with revision 2 pending: both stay retired.
    assert!(s.retire(cv, "carol", 3_000).await.expect("retire"));
    let h = s.adset_history(cv).await.expect("history").expect("exists");
    assert_eq!(
        h.retired.as_ref().map(|t| (t.by.as_str(), t.through_rev)),
        Some(("carol", 2))
    );
    assert_eq!(h.playing(), None);
    assert_eq!(
        approval(s.approve_latest(cv, &op("bob"), 3_100).await),
        Err(ApproveError::Retired(cv.to_owned())),
        "a pending revision retired with its set is not approved"
    );
    assert_eq!(
        approval(s.approve_latest(cv, &admin("root"), 3_100).await),
        Err(ApproveError::Retired(cv.to_owned())),
        "not even by an admin"
    );

    // Revision 3, uploaded after, brings the set back once approved, alone.
    s.add_revision(&upload(cv, "alice", 4_000), false)
        .await
        .expect("upload 3");
    assert_eq!(playing(s.adset_history(cv).await.expect("history")), None);
    s.approve_latest(cv, &op("bob"), 4_100)
        .await
        .expect("approve 3");
    let h = s.adset_history(cv).await.expect("history").expect("exists");
    assert_eq!(
        (h.retired.clone(), h.playing().map(|r| r.rev)),
        (None, Some(3))
    );

    // Retired again: the new retirement replaces the old one, and covers revision 3.
    assert!(s.retire(cv, "dave", 5_000).await.expect("retire again"));
    let h = s.adset_history(cv).await.expect("history").expect("exists");
    assert_eq!(
        h.retired,
        Some(Retirement {
            by: "dave".to_owned(),
            at_ms: 5_000,
            through_rev: 3,
            reason: None,
        })
    );
    assert_eq!(h.playing(), None);

    // A file revision (approved by version control) after a retirement plays; retired by
    // the daemon, the reason is kept.
    s.add_revision(
        &Revision {
            origin: "file".to_owned(),
            ..upload(cv, "file:civility.toml", 6_000)
        },
        true,
    )
    .await
    .expect("file revision");
    assert_eq!(
        playing(s.adset_history(cv).await.expect("history")),
        Some(4)
    );
    assert!(s
        .retire_for(cv, "file:civility.toml", "its file was removed", 7_000)
        .await
        .expect("retire for a reason"));
    assert!(!s
        .retire_for("nope", "file:nope.toml", "its file was removed", 7_000)
        .await
        .expect("retire nothing"));
    let h = s.adset_history(cv).await.expect("history").expect("exists");
    assert_eq!(
        h.retired,
        Some(Retirement {
            by: "file:civility.toml".to_owned(),
            at_ms: 7_000,
            through_rev: 4,
            reason: Some("its file was removed".to_owned()),
        })
    );
    assert_eq!(h.playing(), None);
    assert_eq!(
        s.adset_histories().await.expect("histories"),
        vec![h],
        "adset_histories agrees with adset_history"
    );
}

/// A database retired at version 0004 stays retired through the revisions it had: the
/// migration covers them all, nothing else changes, and a later upload plays once approved.
async fn upgraded_retirements<S: ApiStore>(s: S) {
    let h = s
        .adset_history("civility")
        .await
        .expect("history")
        .expect("civility");
    assert_eq!(
        h.retired,
        Some(Retirement {
            by: "carol".to_owned(),
            at_ms: 2_500,
            through_rev: 2,
            reason: None,
        })
    );
    assert_eq!(
        revs(&h),
        vec![(1, "alice", Some("bob")), (2, "alice", None)],
        "revisions are kept as they were"
    );
    assert_eq!(
        (h.revisions[0].body.as_str(), h.revisions[0].uploaded_token),
        ("# one", None)
    );
    assert_eq!(h.playing(), None);
    assert_eq!(
        approval(s.approve_latest("civility", &op("bob"), 4_000).await),
        Err(ApproveError::Retired("civility".to_owned()))
    );
    let parks = s
        .adset_history("parks")
        .await
        .expect("history")
        .expect("parks");
    assert_eq!(
        (parks.retired.clone(), parks.playing().map(|r| r.rev)),
        (None, Some(1))
    );
    s.add_revision(&upload("civility", "alice", 5_000), false)
        .await
        .expect("upload 3");
    let approved = approval(s.approve_latest("civility", &op("bob"), 5_100).await)
        .expect("bob approves revision 3");
    assert_eq!(approved.rev, 3);
    let h = s
        .adset_history("civility")
        .await
        .expect("history")
        .expect("civility");
    assert_eq!(
        (h.retired.clone(), h.playing().map(|r| r.rev)),
        (None, Some(3))
    );
}

/// The four-eyes rule knows people by their tokens: the uploading token never approves its
/// own upload, whatever it is called, and another token is another person even under the
/// same name.
async fn approvers_by_token<S: ApiStore>(s: S) {
    let first = s
        .create_token("ci", Role::Operator, "hash-1", 1_000)
        .await
        .expect("token 1");
    // Names are unique now; one repeated before that was renamed "ci#2", yet the revisions
    // of its day still carry the name "ci": the approver below says "ci" as such a one would.
    let second = s
        .create_token("ci#2", Role::Operator, "hash-2", 1_000)
        .await
        .expect("token 2");
    let as_token = |token, name| Approver {
        token: Some(token),
        name,
        admin: false,
    };
    s.add_revision(
        &Revision {
            uploaded_token: Some(first),
            ..upload("civility", "ci", 2_000)
        },
        false,
    )
    .await
    .expect("upload");
    assert_eq!(
        approval(
            s.approve_latest("civility", &as_token(first, "ci"), 2_100)
                .await
        ),
        Err(ApproveError::OwnUpload(
            "civility".to_owned(),
            1,
            "ci".to_owned()
        ))
    );
    let approved = approval(
        s.approve_latest("civility", &as_token(second, "ci"), 2_200)
            .await,
    )
    .expect("another token named ci approves");
    assert_eq!(
        (approved.approved_by.as_deref(), approved.approved_token),
        (Some("ci"), Some(second))
    );
    let h = s
        .adset_history("civility")
        .await
        .expect("history")
        .expect("exists");
    assert_eq!(
        (
            h.revisions[0].uploaded_token,
            h.revisions[0].approved_token,
            h.revisions[0].approved_ms
        ),
        (Some(first), Some(second), Some(2_200)),
        "who uploaded and who approved read back by token"
    );
    assert_eq!(h.playing().map(|r| r.rev), Some(1));
}

/// The raw material of the compliance, sample and reconciliation reports.
async fn reports<S: ApiStore>(s: S) {
    let c = city(&s).await;

    // Presence, checked over [150, 650).
    let ev = |device, online, at_ms| PresenceEvent {
        device,
        online,
        at_ms,
    };
    s.commit_batch(&Batch {
        presence: vec![
            ev(c.a, true, 100), // [100, 200): overlaps the start
            ev(c.a, false, 200),
            ev(c.a, true, 400), // [400, 600): inside
            ev(c.a, false, 600),
            ev(c.b, true, 50), // [50, 150): ends at the start, out
            ev(c.b, false, 150),
            ev(c.b, true, 640), // [640, open): overlaps the end
            ev(c.c, true, 650), // [650, open): starts at the end, out
        ],
        ..Batch::default()
    })
    .await
    .expect("presence");
    let mut named = s.presence_between(150, 650).await.expect("presence");
    named.sort_unstable();
    assert_eq!(
        named,
        [
            ("a", 100, Some(200)),
            ("a", 400, Some(600)),
            ("b", 640, None)
        ]
        .map(|(d, since_ms, until_ms)| PresenceSpan {
            device: d.to_owned(),
            since_ms,
            until_ms
        })
        .to_vec()
    );
    // The named displays alone: the same intervals, each display's by its key.
    for names in [vec!["a"], vec!["b", "nobody"], vec!["a", "b", "c"], vec![]] {
        let mut got = s
            .presence_of(150, 650, &strings(&names))
            .await
            .expect("presence of");
        got.sort_unstable();
        let want: Vec<PresenceSpan> = named
            .iter()
            .filter(|p| names.contains(&p.device.as_str()))
            .cloned()
            .collect();
        assert_eq!(got, want, "{names:?}");
    }
    let mut keyed = s.presence_keys_between(150, 650).await.expect("presence");
    keyed.sort_unstable();
    let mut want: Vec<PresenceKeySpan> = [
        (c.a, 100, Some(200)),
        (c.a, 400, Some(600)),
        (c.b, 640, None),
    ]
    .map(|(device, since_ms, until_ms)| PresenceKeySpan {
        device,
        since_ms,
        until_ms,
    })
    .to_vec();
    want.sort_unstable();
    assert_eq!(keyed, want);
    assert_eq!(
        s.presence_between(0, 10_000).await.expect("presence").len(),
        5
    );
    assert!(s
        .presence_keys_between(600, 640)
        .await
        .expect("presence")
        .is_empty());

    // Plays around midnight, the issue range [t0, t1) spanning two days.
    let min = 60_000;
    let t0 = ms(2024, 3, 1, 23, 50, 0);
    let t1 = t0 + 20 * min;
    let p_before = play(&s, "before", Some(c.bus), None, c.x, t0 - 60 * min).await;
    let p_start = play(&s, "start", Some(c.bus), None, c.x, t0).await;
    let p_direct = play(&s, "direct", None, Some(c.c), c.y, t0 + min).await;
    // Issued long before the range but stored among its plays: a play id inside the range's
    // ids does not make its receipts the range's.
    let p_stray = play(&s, "stray", None, Some(c.c), c.y, t0 - 300 * min).await;
    let p_late = play(&s, "late", Some(c.bus), None, c.y, t1 - min).await;
    let p_end = play(&s, "end", Some(c.bus), None, c.x, t1).await;
    s.commit_batch(&Batch {
        receipts: vec![
            receipt(c.a, &p_before, t0 - 59 * min, Status::Played),
            receipt(c.a, &p_start, t0 + 1_000, Status::Played),
            receipt(c.b, &p_start, t0 + 2_000, Status::Skipped),
            receipt(c.c, &p_direct, t0 + min + 1_000, Status::Played),
            receipt(c.c, &p_stray, t0 - 299 * min, Status::Played),
            // Issued inside the range, started after it.
            receipt(c.a, &p_late, t1 + 30_000, Status::Played),
            receipt(c.a, &p_end, t1 + 1_000, Status::Played),
            receipt(c.b, &p_end, t1 + 2_000, Status::Failed),
        ],
        ..Batch::default()
    })
    .await
    .expect("receipts");

    // Played receipts by start time, only status played, by display then time.
    let at = |d: &str, started_ms: i64| (d.to_owned(), started_ms);
    let (wide_from, wide_to) = (t0 - 120 * min, t1 + 120 * min);
    let every = s
        .played_between(wide_from, wide_to, None)
        .await
        .expect("played");
    for names in [vec!["a"], vec!["c", "nobody"], vec!["a", "b", "c"], vec![]] {
        let want: Vec<PlayedTimes> = every
            .iter()
            .filter(|p| names.contains(&p.device.as_str()))
            .cloned()
            .collect();
        assert_eq!(
            s.played_of(wide_from, wide_to, &strings(&names))
                .await
                .expect("played of"),
            want,
            "{names:?}"
        );
    }
    assert_eq!(
        flat(s.played_between(t0, t1, None).await.expect("played")),
        vec![at("a", t0 + 1_000), at("c", t0 + min + 1_000)]
    );
    assert_eq!(
        flat(
            s.played_between(t0 + 1_000, t0 + min + 1_000, None)
                .await
                .expect("played")
        ),
        vec![at("a", t0 + 1_000)],
        "from is inclusive, to exclusive"
    );
    assert_eq!(
        flat(
            s.played_between(t0 - 120 * min, t1 + 120 * min, Some("a"))
                .await
                .expect("played a")
        ),
        vec![
            at("a", t0 - 59 * min),
            at("a", t0 + 1_000),
            at("a", t1 + 1_000),
            at("a", t1 + 30_000),
        ]
    );
    assert!(s
        .played_between(t0 - 120 * min, t1 + 120 * min, Some("b"))
        .await
        .expect("played b")
        .is_empty());

    // The newest receipt of each asked display, in the order asked.
    assert_eq!(
        s.last_receipts(&strings(&["c", "nobody", "b", "a"]))
            .await
            .expect("last"),
        [
            ("c", t0 + min + 1_000, Status::Played),
            ("b", t1 + 2_000, Status::Failed),
            ("a", t1 + 30_000, Status::Played),
        ]
        .map(|(d, started_ms, status)| LastReceipt {
            device: d.to_owned(),
            started_ms,
            status
        })
        .to_vec()
    );
    assert!(s.last_receipts(&[]).await.expect("last").is_empty());

    // Plays on feeds issued in the range, and the receipts of plays issued in it.
    assert_eq!(
        s.feed_plays_between(t0, t1).await.expect("feed plays"),
        [(p_start.key, t0), (p_late.key, t1 - min)]
            .map(|(play, issued_ms)| FeedPlay {
                play,
                feed: "bus".to_owned(),
                issued_ms,
                feed_key: c.bus
            })
            .to_vec()
    );
    let mut got: Vec<(i64, i64, String)> = s
        .receipts_for_plays_between(t0, t1)
        .await
        .expect("receipts")
        .into_iter()
        .map(|r: PlayReceipt| (r.device, r.play, format!("{:?}", r.status)))
        .collect();
    got.sort_unstable();
    let mut want: Vec<(i64, i64, String)> = [
        (c.a, p_start.key, Status::Played),
        (c.b, p_start.key, Status::Skipped),
        (c.c, p_direct.key, Status::Played),
        (c.a, p_late.key, Status::Played),
    ]
    .into_iter()
    .map(|(d, p, st)| (d, p, format!("{st:?}")))
    .collect();
    want.sort_unstable();
    assert_eq!(got, want);
    assert!(s
        .receipts_for_plays_between(t1 + 1, t1 + 60 * min)
        .await
        .expect("receipts")
        .is_empty());

    // The same receipts counted per play and status, and read back by key ranges.
    let counts: Vec<(i64, String, i64)> = s
        .play_counts_between(t0, t1)
        .await
        .expect("play counts")
        .into_iter()
        .map(|c| (c.play, format!("{:?}", c.status), c.receipts))
        .collect();
    let mut want_counts: Vec<(i64, String, i64)> =
        want.iter().map(|(_, p, st)| (*p, st.clone(), 1)).collect();
    want_counts.sort_unstable();
    assert_eq!(counts, want_counts);
    let range = |device: i64, lo: i64, hi: i64| PlayRange {
        device,
        lo,
        hi,
        first_issued_ms: t0 - 60 * min,
        last_issued_ms: t1,
    };
    let mut got: Vec<(i64, i64, String)> = s
        .receipts_in_ranges(&[
            range(c.a, p_start.key, p_start.key),
            range(c.b, p_start.key, p_late.key),
            range(c.c, p_late.key, p_late.key),
            // Keys, not issue times: the stray play's key lies between.
            range(c.c, p_direct.key, p_stray.key),
        ])
        .await
        .expect("receipts in ranges")
        .into_iter()
        .map(|r| (r.device, r.play, format!("{:?}", r.status)))
        .collect();
    got.sort_unstable();
    let mut want_ranges: Vec<(i64, i64, String)> = [
        (c.a, p_start.key, Status::Played),
        (c.b, p_start.key, Status::Skipped),
        (c.c, p_direct.key, Status::Played),
        (c.c, p_stray.key, Status::Played),
    ]
    .into_iter()
    .map(|(d, p, st)| (d, p, format!("{st:?}")))
    .collect();
    want_ranges.sort_unstable();
    assert_eq!(got, want_ranges, "a's late play lies outside its range");
    assert!(s
        .receipts_in_ranges(&[])
        .await
        .expect("no ranges")
        .is_empty());
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
// PostgreSQL only: packing closed days

/// Everything the readers of raw receipts answer over the compaction test's days.
#[derive(Debug, PartialEq)]
struct RawView {
    raw_audit: Vec<PlaysRow>,
    streamed: Vec<PlaysRow>,
    played: Vec<PlayedTimes>,
    played_a: Vec<PlayedTimes>,
    last: Vec<(String, i64, String)>,
    for_plays: Vec<(i64, i64, String)>,
    for_day1: Vec<(i64, i64, String)>,
    in_ranges: Vec<(i64, i64, String)>,
    all_rows: i64,
}

async fn raw_view(s: &PgStore, from: i64, to: i64) -> RawView {
    // Bounds off the hour: answered from receipts, not the rollups.
    let q = query(PlaysParams {
        group_by: Some("device,day".into()),
        from: Some("2024-06-03T00:00:00.5Z".into()),
        to: Some("2024-06-07T00:00:00.5Z".into()),
        ..Default::default()
    });
    assert!(!q.rollup_ok());
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let (s2, q2) = (s.clone(), q.clone());
    let task = tokio::spawn(async move { s2.stream_plays(&q2, tx).await });
    let mut streamed = Vec::new();
    while let Some(r) = rx.recv().await {
        streamed.push(r);
    }
    assert!(task.await.expect("join").expect("stream"));
    let keyed = |v: Vec<PlayReceipt>| {
        let mut v: Vec<_> = v
            .into_iter()
            .map(|r| (r.device, r.play, format!("{:?}", r.status)))
            .collect();
        v.sort_unstable();
        v
    };
    // Each display's receipts by its key range over the days: packed rows must answer too.
    let mut ranges: std::collections::BTreeMap<i64, PlayRange> = Default::default();
    for r in s
        .receipts_for_plays_between(from, to)
        .await
        .expect("receipts of plays")
    {
        let e = ranges.entry(r.device).or_insert(PlayRange {
            device: r.device,
            lo: r.play,
            hi: r.play,
            first_issued_ms: from,
            last_issued_ms: to - 1,
        });
        e.lo = e.lo.min(r.play);
        e.hi = e.hi.max(r.play);
    }
    let ranges: Vec<PlayRange> = ranges.into_values().collect();
    RawView {
        in_ranges: keyed(
            s.receipts_in_ranges(&ranges)
                .await
                .expect("receipts in ranges"),
        ),
        raw_audit: s.audit_plays(&q).await.expect("raw audit"),
        streamed,
        played: s.played_between(from, to, None).await.expect("played"),
        played_a: s
            .played_between(from, to, Some("a"))
            .await
            .expect("played a"),
        last: s
            .last_receipts(&strings(&["c", "b", "a"]))
            .await
            .expect("last")
            .into_iter()
            .map(|r| (r.device, r.started_ms, format!("{:?}", r.status)))
            .collect(),
        for_plays: keyed(
            s.receipts_for_plays_between(from, to)
                .await
                .expect("receipts of plays"),
        ),
        for_day1: keyed(
            s.receipts_for_plays_between(from + 86_400_000, from + 2 * 86_400_000)
                .await
                .expect("receipts of day 1"),
        ),
        all_rows: sqlx::query_scalar("SELECT COUNT(*) FROM receipts_all")
            .fetch_one(s.pool())
            .await
            .expect("count receipts_all"),
    }
}

async fn pg_compaction(s: PgStore) {
    let c = city(&s).await;
    let day = 86_400_000;
    let d0 = ms(2024, 6, 3, 0, 0, 0);
    let first = d0.div_euclid(day);
    s.ensure_partitions(first, 3).await.expect("partitions");
    let in_table = |t: String| {
        let pool = s.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM ONLY {t}"))
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };

    // Three days; a play just before midnight has receipts after it (they stay in its day).
    let mut receipts = Vec::new();
    let mut late_play = None;
    for i in 0..3 {
        let base = d0 + i * day;
        let morning = play(
            &s,
            &format!("m{i}"),
            Some(c.bus),
            None,
            c.x,
            base + 8 * 3_600_000,
        )
        .await;
        let night = play(
            &s,
            &format!("n{i}"),
            Some(c.bus),
            None,
            c.y,
            base + day - 120_000,
        )
        .await;
        let direct = play(
            &s,
            &format!("d{i}"),
            None,
            Some(c.c),
            c.y,
            base + 43_200_000,
        )
        .await;
        let noon = play(
            &s,
            &format!("o{i}"),
            Some(c.bus),
            None,
            c.x,
            base + 45_000_000,
        )
        .await;
        receipts.extend([
            receipt(c.a, &morning, morning.issued_ms + 1_000, Status::Played),
            receipt(c.b, &morning, morning.issued_ms + 2_000, Status::Skipped),
            receipt(c.a, &night, night.issued_ms + 180_000, Status::Played),
            receipt(c.b, &night, night.issued_ms + 3_000, Status::Failed),
            receipt(c.c, &direct, direct.issued_ms + 1_500, Status::Played),
            // b never acknowledges the noon play: its receipt comes late, below.
            receipt(c.a, &noon, noon.issued_ms + 4_000, Status::Played),
        ]);
        if i == 0 {
            late_play = Some(noon.clone());
        }
        if i == 1 {
            // A duration the packed arrays cannot hold (days): this one stays raw.
            let mut long = receipt(c.b, &noon, noon.issued_ms + 5_000, Status::Played);
            long.duration_ms = 1_000_000_000;
            receipts.push(long);
        }
    }
    let late_play = late_play.expect("day 0 noon play");
    let out = s
        .commit_batch(&Batch {
            receipts: receipts.clone(),
            ..Batch::default()
        })
        .await
        .expect("batch");
    assert_eq!(out.stored, 19);
    let (from, to) = (d0, d0 + 4 * day);
    let all = query(PlaysParams::default());
    // Played receipts only: four a day, five on day 1.
    assert_eq!(total(&s.audit_plays(&all).await.expect("audit")), 13);
    let before = raw_view(&s, from, to).await;
    assert_eq!(before.all_rows, 19);
    assert_eq!(
        before.in_ranges, before.for_plays,
        "every receipt by its display's range"
    );

    // Pack days 0 and 1; day 2 stays raw.
    let done = s.compact_receipts(first + 2).await.expect("compact");
    assert_eq!((done.days, done.receipts, done.left_raw), (2, 12, 1));
    assert_eq!(in_table("receipts_20240603".into()).await, 0);
    assert_eq!(
        in_table("receipts_20240604".into()).await,
        1,
        "the long one"
    );
    assert_eq!(in_table("receipts_20240605".into()).await, 6);
    let packed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM receipts_packed")
        .fetch_one(s.pool())
        .await
        .expect("packed rows");
    assert_eq!(packed, 6, "one row per display and day");
    assert_eq!(
        raw_view(&s, from, to).await,
        before,
        "readers see packed days unchanged"
    );
    let again = s.compact_receipts(first + 2).await.expect("again");
    assert_eq!(
        (again.days, again.receipts, again.left_raw),
        (0, 0, 1),
        "idempotent"
    );

    // A late copy of a packed receipt is a duplicate, even with another start time.
    let mut dup = receipts[0].clone();
    dup.started_ms += 7_000;
    let out = s
        .commit_batch(&Batch {
            receipts: vec![dup.clone()],
            ..Batch::default()
        })
        .await
        .expect("late duplicate");
    assert_eq!((out.stored, out.duplicates), (0, 1));
    assert_eq!(total(&s.audit_plays(&all).await.expect("audit")), 13);

    // A late new receipt of a packed day is stored (raw) and counted, once.
    let late = receipt(c.b, &late_play, late_play.issued_ms + 9_000, Status::Played);
    let out = s
        .commit_batch(&Batch {
            receipts: vec![late.clone(), late.clone(), dup.clone()],
            ..Batch::default()
        })
        .await
        .expect("late receipt");
    assert_eq!((out.stored, out.duplicates), (1, 2));
    assert_eq!(total(&s.audit_plays(&all).await.expect("audit")), 14);
    assert_eq!(in_table("receipts_20240603".into()).await, 1);
    let with_late = raw_view(&s, from, to).await;
    assert_eq!(with_late.all_rows, 20);
    assert!(flat(with_late.played.clone()).contains(&("b".to_owned(), late.started_ms)));
    assert_ne!(with_late.raw_audit, before.raw_audit);

    // The next compaction appends it to b's packed row of day 0 (and packs day 2: every
    // reader, the newest receipt of each display included, now reads packed rows only).
    let done = s.compact_receipts(first + 3).await.expect("compact late");
    assert_eq!((done.days, done.receipts), (2, 7));
    assert_eq!(in_table("receipts_20240603".into()).await, 0);
    assert_eq!(in_table("receipts_20240605".into()).await, 0);
    let b_day0: i32 = sqlx::query_scalar(
        "SELECT cardinality(plays) FROM receipts_packed WHERE play_day = $1 AND device = $2",
    )
    .bind(first as i32)
    .bind(c.b)
    .fetch_one(s.pool())
    .await
    .expect("b's row");
    assert_eq!(b_day0, 3);
    assert_eq!(raw_view(&s, from, to).await, with_late);
    let out = s
        .commit_batch(&Batch {
            receipts: vec![late.clone()],
            ..Batch::default()
        })
        .await
        .expect("late again");
    assert_eq!((out.stored, out.duplicates), (0, 1), "packed late receipt");

    // Retention drops packed days too; rollups stay.
    s.prune_receipts(d0 + day).await.expect("prune");
    let after = raw_view(&s, from, to).await;
    assert_eq!(after.all_rows, 13);
    assert!(after.for_plays.iter().all(|(_, p, _)| *p != late_play.key));
    assert_eq!(after.for_day1, before.for_day1);
    assert!(flat(after.played.clone()).iter().all(|p| p.1 >= d0 + day));
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM receipts_packed WHERE play_day < $1)
              + (SELECT COUNT(*) FROM receipts_packed_days WHERE day < $1)",
    )
    .bind((first + 1) as i32)
    .fetch_one(s.pool())
    .await
    .expect("packed left");
    assert_eq!(left, 0);
    assert_eq!(total(&s.audit_plays(&all).await.expect("audit")), 14);
}

/// Packing a day while batches keep writing receipts of it (copies and new ones): every
/// receipt is stored once and counted once.
async fn pg_packing_beside_writers(s: PgStore) {
    let c = city(&s).await;
    let d0 = ms(2024, 7, 1, 0, 0, 0);
    let day = d0.div_euclid(86_400_000);
    s.ensure_partitions(day, 0).await.expect("partition");
    let mut plays = Vec::new();
    for i in 0..40 {
        plays.push(
            play(
                &s,
                &format!("w{i}"),
                Some(c.bus),
                None,
                c.x,
                d0 + i * 600_000,
            )
            .await,
        );
    }
    let pair = |p: &PlayRow| {
        vec![
            receipt(c.a, p, p.issued_ms + 1_000, Status::Played),
            receipt(c.b, p, p.issued_ms + 2_000, Status::Played),
        ]
    };
    let first: Vec<ReceiptRow> = plays[..20].iter().flat_map(pair).collect();
    let out = s
        .commit_batch(&Batch {
            receipts: first,
            ..Batch::default()
        })
        .await
        .expect("first half");
    assert_eq!(out.stored, 40);
    let packer = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut packed = 0;
            for _ in 0..20 {
                packed += s.compact_receipts(day + 1).await.expect("compact").receipts;
                tokio::task::yield_now().await;
            }
            packed
        })
    };
    // Every play's pair twice: the first 20 are copies of stored receipts.
    let mut writers = Vec::new();
    for half in [0, 1] {
        let s = s.clone();
        let batches: Vec<Vec<ReceiptRow>> = plays.iter().map(pair).collect();
        writers.push(tokio::spawn(async move {
            let mut stored = 0;
            for (i, b) in batches.into_iter().enumerate() {
                if i % 2 == half {
                    continue;
                }
                for _ in 0..2 {
                    let out = s
                        .commit_batch(&Batch {
                            receipts: b.clone(),
                            ..Batch::default()
                        })
                        .await
                        .expect("writer batch");
                    stored += out.stored;
                }
            }
            stored
        }));
    }
    let mut stored = 0;
    for w in writers {
        stored += w.await.expect("writer");
    }
    packer.await.expect("packer");
    assert_eq!(stored, 40, "only the second half is new");
    s.compact_receipts(day + 1).await.expect("last compaction");
    let (rows, distinct, raw): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT (device, play)), (SELECT COUNT(*) FROM receipts)
         FROM receipts_all",
    )
    .fetch_one(s.pool())
    .await
    .expect("counts");
    assert_eq!((rows, distinct, raw), (80, 80, 0));
    let all = query(PlaysParams::default());
    assert_eq!(total(&s.audit_plays(&all).await.expect("audit")), 80);
}

/// Pruning drops raw receipts of old plays but keeps their counts in the rollups: by
/// class and slogan (hourly), by display (daily). What needs a display and a slogan
/// together is read from the receipts, and goes with them.
async fn prune<S: Store>(s: S) {
    let c = city(&s).await;
    let old_day = ms(2026, 1, 10, 3, 0, 0);
    let new_day = ms(2026, 3, 10, 3, 0, 0);
    let old = play(&s, "old", Some(c.bus), None, c.x, old_day).await;
    let new = play(&s, "new", Some(c.bus), None, c.x, new_day).await;
    let batch = Batch {
        // The tests' zone is UTC: its daily rollups are kept.
        utc_offset_h: Some(0),
        receipts: vec![
            receipt(c.a, &old, old_day + 1_000, Status::Played),
            receipt(c.b, &old, old_day + 1_000, Status::Played),
            receipt(c.a, &new, new_day + 1_000, Status::Played),
        ],
        ..Batch::default()
    };
    s.commit_batch(&batch).await.expect("commit");
    let by = |g: &str| {
        query(PlaysParams {
            group_by: Some(g.into()),
            ..Default::default()
        })
    };
    for g in ["device", "class,slogan", "device,day", "feed,hour"] {
        let before = total(&s.audit_plays(&by(g)).await.expect("audit"));
        assert_eq!(before, 3, "{g}");
    }
    s.prune_receipts(ms(2026, 2, 1, 0, 0, 0))
        .await
        .expect("prune");
    for g in ["device", "class,slogan", "device,day", "feed,hour"] {
        let after = total(&s.audit_plays(&by(g)).await.expect("audit"));
        assert_eq!(after, 3, "counts stay: {g}");
    }
    let detail = s.audit_plays(&by("device,slogan")).await.expect("audit");
    assert_eq!(
        total(&detail),
        1,
        "a display's slogans go with its receipts"
    );
    // The raw path (bounds off the hour) sees only what is left.
    let raw = query(PlaysParams {
        from: Some("2026-01-01T00:00:01+08:00".into()),
        to: Some("2026-12-31T00:00:01+08:00".into()),
        ..Default::default()
    });
    assert_eq!(total(&s.audit_plays(&raw).await.expect("audit")), 1);
}

/// A display that changes class takes its counts along: audits by class answer as a GROUP
/// BY over the receipts with the display's class now, from every source (hourly, daily,
/// raw), and a zone offset first seen later is filled from the rollups exactly.
async fn class_and_zone_changes<S: Store>(s: S) {
    let c = city(&s).await;
    let mut receipts = Vec::new();
    for (i, dev) in [c.a, c.b, c.c, c.a, c.b].into_iter().enumerate() {
        let at = ms(2026, 3, 10 + i as u32, 15 + i as u32, 0, 0);
        let p = play(&s, &format!("m{i}"), Some(c.bus), None, c.x, at).await;
        receipts.push(receipt(dev, &p, at + 1_000, Status::Played));
    }
    s.commit_batch(&Batch {
        utc_offset_h: Some(8),
        receipts,
        ..Batch::default()
    })
    .await
    .expect("commit");
    // "b" becomes a BRT screen.
    s.sync_inventory(
        &[
            dev("a", "bus_led", &["bus"]),
            dev("b", "brt_screen", &["bus"]),
            dev("c", "taxi_top", &["taxi"]),
        ],
        &strings(&["bus", "taxi"]),
        2_000,
    )
    .await
    .expect("sync");
    // A batch in UTC+9 (a zone change): its daily tables are filled from UTC+8's.
    s.commit_batch(&Batch {
        utc_offset_h: Some(9),
        ..Batch::default()
    })
    .await
    .expect("commit");
    let tz: Tz = "Asia/Tokyo".parse().expect("zone");
    for (from, to) in [
        ("2026-03-01", "2026-04-01"),
        ("2026-03-11T00:00:00+09:00", "2026-03-13T05:00:00+09:00"),
        ("2026-03-11T00:00:01+09:00", "2026-03-13T05:00:00+09:00"),
    ] {
        for g in [
            "class",
            "class,day",
            "class,hour",
            "device,hour",
            "device,day",
        ] {
            let q = PlaysQuery::parse(
                &PlaysParams {
                    group_by: Some(g.into()),
                    from: Some(from.into()),
                    to: Some(to.into()),
                    ..Default::default()
                },
                tz,
            )
            .expect("query");
            let got = s.audit_plays(&q).await.expect("audit");
            let mut raw = q.clone();
            // One millisecond earlier: not on an hour, so the receipts answer.
            raw.from = q.from.map(|t| t - chrono::Duration::milliseconds(1));
            let want = s.audit_plays(&raw).await.expect("raw");
            assert_eq!(got, want, "{g} from {from} to {to}");
            if g == "class" && from == "2026-03-01" {
                let classes: Vec<(&str, i64)> = got
                    .iter()
                    .map(|r| (r.values[0].as_str(), r.plays))
                    .collect();
                assert_eq!(
                    classes,
                    [("brt_screen", 2), ("bus_led", 2), ("taxi_top", 1)],
                    "b's two plays went with it"
                );
            }
        }
    }
}

/// Streamed answers (for CSV) equal the folded ones, row for row.
async fn streaming<S: Store>(s: S) {
    let c = city(&s).await;
    let mut receipts = Vec::new();
    for (i, (slogan, dev)) in [(c.x, c.a), (c.y, c.a), (c.x, c.b), (c.y, c.b), (c.x, c.a)]
        .into_iter()
        .enumerate()
    {
        // Across a local midnight (16:00 UTC) and several hours.
        let at = ms(2026, 3, 10, 13, 0, 0) + i as i64 * 5_400_000;
        let p = play(&s, &format!("s{i}"), Some(c.bus), None, slogan, at).await;
        receipts.push(receipt(dev, &p, at + 1_000, Status::Played));
    }
    s.commit_batch(&Batch {
        receipts,
        ..Batch::default()
    })
    .await
    .expect("commit");
    for group_by in [
        "",
        "device",
        "device,day",
        "slogan,hour",
        "day",
        "class,feed,day,hour",
    ] {
        for from in [None, Some("2026-03-10T13:30:00+00:00")] {
            let q = query(PlaysParams {
                group_by: Some(group_by.into()),
                from: from.map(str::to_owned),
                ..Default::default()
            });
            assert!(q.streamable(), "{group_by}");
            let (tx, mut rx) = tokio::sync::mpsc::channel(16);
            let s2 = s.clone();
            let q2 = q.clone();
            let task = tokio::spawn(async move { s2.stream_plays(&q2, tx).await });
            let mut streamed = Vec::new();
            while let Some(r) = rx.recv().await {
                streamed.push(r);
            }
            assert!(task.await.expect("join").expect("stream"));
            let folded = s.audit_plays(&q).await.expect("audit");
            assert_eq!(streamed, folded, "group_by={group_by} from={from:?}");
        }
    }
}

/// The daily rollups answer plays by slogan by day and by display by day exactly as the
/// hourly rollup and the raw receipts do, including history written before they existed.
async fn daily<S: Store>(s: S) {
    let c = city(&s).await;
    let mut n = 0;
    for (offset, day, items) in [
        (None, 10u32, vec![(c.a, c.x), (c.b, c.y), (c.a, c.y)]),
        (
            Some(8),
            11,
            vec![(c.a, c.x), (c.b, c.x), (c.b, c.y), (c.a, c.x)],
        ),
        (Some(8), 12, vec![(c.b, c.y)]),
    ] {
        let mut b = Batch {
            utc_offset_h: offset,
            ..Batch::default()
        };
        for (i, (dev, slogan)) in items.into_iter().enumerate() {
            n += 1;
            // 15:00 and 17:00 UTC: either side of midnight in UTC+8.
            let at = ms(2026, 3, day, if i % 2 == 0 { 15 } else { 17 }, 0, 0) + n;
            let p = play(&s, &format!("d{n}"), Some(c.bus), None, slogan, at).await;
            b.receipts.push(receipt(dev, &p, at + 1, Status::Played));
        }
        s.commit_batch(&b).await.expect("commit");
    }
    for group_by in [
        "slogan,day",
        "day,slogan",
        "device,day",
        "day",
        "slogan",
        "class",
        "feed",
    ] {
        let daily = query(PlaysParams {
            group_by: Some(group_by.into()),
            from: Some("2026-03-10".into()),
            to: Some("2026-03-14".into()),
            ..Default::default()
        });
        assert_ne!(
            civicast::store::rollups::plan(&daily, |_| true),
            civicast::store::rollups::Plan::Raw,
            "{group_by}"
        );
        // One second off midnight: the raw receipts answer instead.
        let raw = query(PlaysParams {
            group_by: Some(group_by.into()),
            from: Some("2026-03-09T23:59:59+08:00".into()),
            to: Some("2026-03-14T00:00:01+08:00".into()),
            ..Default::default()
        });
        assert_eq!(
            civicast::store::rollups::plan(&raw, |_| true),
            civicast::store::rollups::Plan::Raw
        );
        let got = s.audit_plays(&daily).await.expect("daily");
        assert_eq!(
            got,
            s.audit_plays(&raw).await.expect("raw"),
            "group_by={group_by}"
        );
        assert_eq!(total(&got), 8, "group_by={group_by}");
    }
}

// ---------------------------------------------------------------------------------------
// Urgent messages

/// Raw statements, to show that the table refuses what the store never does.
trait Exec {
    /// Whether `sql` ran.
    fn exec(&self, sql: &str) -> impl Future<Output = bool> + Send;
}

impl Exec for SqliteStore {
    async fn exec(&self, sql: &str) -> bool {
        sqlx::query(sql).execute(self.pool()).await.is_ok()
    }
}

impl Exec for PgStore {
    async fn exec(&self, sql: &str) -> bool {
        sqlx::query(sql).execute(self.pool()).await.is_ok()
    }
}

fn urgent_request(id: &str, token: i64, at_ms: i64) -> UrgentMessage {
    UrgentMessage {
        id: id.to_owned(),
        text: "台风红色预警 请勿外出".to_owned(),
        targets: Targets {
            feeds: vec!["bus-all".into()],
            devices: vec!["taxi-1".into()],
        },
        expires_ms: at_ms + 30 * 60_000,
        requested_by: format!("op{token}"),
        requested_token: Some(token),
        requested_ms: at_ms,
        approved_by: None,
        approved_token: None,
        approved_ms: None,
        cancelled_by: None,
        cancelled_ms: None,
    }
}

async fn urgent_messages<S: UrgentStore + Store + Exec>(s: S) {
    const T: i64 = 1_764_590_400_000;
    let a = urgent_request("01JURGENTAAAAAAAAAAAAAAAAA", 1, T);
    let b = urgent_request("01JURGENTBBBBBBBBBBBBBBBBB", 2, T + 1_000);
    s.add_urgent(&a).await.expect("add a");
    s.add_urgent(&b).await.expect("add b");
    assert!(s.add_urgent(&a).await.is_err(), "an id is stored once");
    assert_eq!(s.urgent(&a.id).await.expect("read"), Some(a.clone()));
    assert_eq!(s.urgent("nothing").await.expect("read"), None);
    let all = s.urgent_messages(None).await.expect("list");
    assert_eq!(all, vec![b.clone(), a.clone()], "newest request first");
    let later = s
        .urgent_messages(Some(a.expires_ms + 1))
        .await
        .expect("list");
    assert_eq!(later, vec![b.clone()], "only those expiring from then on");

    // Four eyes, by token: the requester's own token is refused, a second operator's is not.
    let me = Approver {
        token: Some(1),
        name: "op1",
        admin: false,
    };
    let other = Approver {
        token: Some(2),
        name: "op2",
        admin: false,
    };
    let refused = s.approve_urgent(&a.id, &me, T + 2_000).await;
    assert!(
        matches!(
            refused,
            Err(UrgentStoreError::Refused(UrgentRefusal::OwnRequest(..)))
        ),
        "{refused:?}"
    );
    let approved = s
        .approve_urgent(&a.id, &other, T + 2_000)
        .await
        .expect("approve");
    assert_eq!(
        (
            approved.approved_by.as_deref(),
            approved.approved_token,
            approved.approved_ms
        ),
        (Some("op2"), Some(2), Some(T + 2_000))
    );
    assert_eq!(s.urgent(&a.id).await.expect("read"), Some(approved.clone()));
    assert_eq!(approved.status(T + 3_000), UrgentStatus::Published);
    let again = s.approve_urgent(&a.id, &other, T + 3_000).await;
    assert!(
        matches!(
            again,
            Err(UrgentStoreError::Refused(UrgentRefusal::NotPending(
                _,
                "published"
            )))
        ),
        "{again:?}"
    );
    let gone = s.approve_urgent("nothing", &other, T).await;
    assert!(matches!(
        gone,
        Err(UrgentStoreError::Refused(UrgentRefusal::NotFound(_)))
    ));
    let late = s.approve_urgent(&b.id, &me, b.expires_ms).await;
    assert!(
        matches!(
            late,
            Err(UrgentStoreError::Refused(UrgentRefusal::NotPending(
                _,
                "expired"
            )))
        ),
        "{late:?}"
    );

    // Cancelled once; a cancelled request is never approved.
    let c = s
        .cancel_urgent(&b.id, "op2", T + 4_000)
        .await
        .expect("cancel");
    assert_eq!(
        (c.cancelled_by.as_deref(), c.cancelled_ms),
        (Some("op2"), Some(T + 4_000))
    );
    assert!(matches!(
        s.cancel_urgent(&b.id, "op1", T + 5_000).await,
        Err(UrgentStoreError::Refused(UrgentRefusal::Closed(..)))
    ));
    assert!(matches!(
        s.approve_urgent(&b.id, &me, T + 5_000).await,
        Err(UrgentStoreError::Refused(UrgentRefusal::NotPending(
            _,
            "cancelled"
        )))
    ));

    // Append-only: the request, an approval and a cancellation are written once, no row goes.
    for sql in [
        "UPDATE urgent_messages SET text = 'changed'",
        "UPDATE urgent_messages SET requested_by = 'someone'",
        "UPDATE urgent_messages SET expires_at = expires_at + 1",
        "UPDATE urgent_messages SET approved_by = 'someone' WHERE approved_at IS NOT NULL",
        "UPDATE urgent_messages SET cancelled_at = NULL WHERE cancelled_at IS NOT NULL",
        "DELETE FROM urgent_messages",
    ] {
        assert!(!s.exec(sql).await, "refused: {sql}");
    }
    assert_eq!(s.urgent_messages(None).await.expect("list").len(), 2);
    assert_eq!(s.urgent(&a.id).await.expect("read"), Some(approved));
}

// ---------------------------------------------------------------------------------------
// Entry points: SQLite always, PostgreSQL with CIVICAST_TEST_PG

/// The console's sessions (ended by expiry, by revocation of their token, by sign-out) and
/// one display's presence and receipts, newest first.
async fn console_reads<S: ApiStore + Into<civicast::store::Db>>(s: S) {
    let c = city(&s).await;
    let op = s
        .create_token("op", Role::Operator, "hash-op", 0)
        .await
        .expect("token");
    let db: civicast::store::Db = s.into();
    db.create_session("sess-1", op, 1_000, 5_000)
        .await
        .expect("session");
    db.create_session("sess-2", op, 1_000, 9_000)
        .await
        .expect("session");
    let got = db
        .session("sess-1", 4_999)
        .await
        .expect("read")
        .expect("live");
    assert_eq!(
        (got.token.name.as_str(), got.token.role, got.expires_ms),
        ("op", Role::Operator, 5_000)
    );
    assert!(
        db.session("sess-1", 5_000).await.expect("read").is_none(),
        "ended at its expiry"
    );
    assert!(db.session("nobody", 0).await.expect("read").is_none());
    assert_eq!(
        db.prune_sessions(5_000).await.expect("prune"),
        1,
        "the ended one"
    );
    assert!(db.delete_session("sess-2").await.expect("delete"));
    assert!(!db.delete_session("sess-2").await.expect("again"));
    db.create_session("sess-3", op, 1_000, 9_000)
        .await
        .expect("session");
    assert!(db.revoke_token(op, 2_000).await.expect("revoke"));
    assert!(
        db.session("sess-3", 2_001).await.expect("read").is_none(),
        "revoked token"
    );
    assert_eq!(
        db.prune_sessions(2_001).await.expect("prune"),
        1,
        "the revoked one"
    );

    let p1 = play(&db, "p1", Some(c.bus), None, c.x, 10_000).await;
    let p2 = play(&db, "p2", None, Some(c.a), c.y, 20_000).await;
    let ev = |online, at_ms| PresenceEvent {
        device: c.a,
        online,
        at_ms,
    };
    db.commit_batch(&Batch {
        receipts: vec![
            receipt(c.a, &p1, 10_500, Status::Played),
            receipt(c.a, &p2, 20_500, Status::Skipped),
            receipt(c.b, &p1, 10_600, Status::Played),
        ],
        presence: vec![ev(true, 100), ev(false, 200), ev(true, 300)],
        ..Batch::default()
    })
    .await
    .expect("batch");
    let r = db.device_receipts("a", 10).await.expect("receipts");
    let seen: Vec<_> = r
        .iter()
        .map(|r| {
            (
                r.play_id.as_str(),
                r.feed.as_deref(),
                r.slogan.as_str(),
                r.started_ms,
                r.status,
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("p2", None, "y", 20_500, Status::Skipped),
            ("p1", Some("bus"), "x", 10_500, Status::Played)
        ]
    );
    assert_eq!(r[0].duration_ms, 8_000);
    assert_eq!(db.device_receipts("a", 1).await.expect("one").len(), 1);
    assert!(db
        .device_receipts("nobody", 10)
        .await
        .expect("none")
        .is_empty());
    let spans: Vec<_> = db
        .device_presence("a", 10)
        .await
        .expect("presence")
        .iter()
        .map(|s| (s.since_ms, s.until_ms))
        .collect();
    assert_eq!(spans, vec![(300, None), (100, Some(200))]);
    assert_eq!(
        db.plays_issued_between(10_000, 20_000)
            .await
            .expect("count"),
        1
    );
    assert_eq!(db.plays_issued_between(0, 30_000).await.expect("count"), 2);
}

/// Runs each store test, written once over any backend, on both: `name::sqlite` always,
/// `name::postgres` ignored by default, run by `--include-ignored`, and then failing (not
/// skipping) without CIVICAST_TEST_PG.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::on_sqlite(super::$name).await;
            }
            #[tokio::test]
            #[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
            async fn postgres() {
                super::on_pg(super::$name).await;
            }
        }
    )*};
}

both_backends!(
    class_and_zone_changes,
    console_reads,
    inventory,
    plays,
    receipts_once,
    rejects,
    presence,
    audits,
    tokens,
    revisions,
    retired_revisions,
    approvers_by_token,
    reports,
    prune,
    streaming,
    daily,
    urgent_messages,
);

mod upgraded_retirements {
    #[tokio::test]
    async fn sqlite() {
        super::on_sqlite_upgraded(super::upgraded_retirements).await;
    }
    #[tokio::test]
    #[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
    async fn postgres() {
        super::on_pg_upgraded(super::upgraded_retirements).await;
    }
}

#[tokio::test]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn pg_partition_retention() {
    on_pg(pg_partitions).await;
}

#[tokio::test]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn pg_packed_days() {
    on_pg(pg_compaction).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn pg_packing_beside_batches() {
    on_pg(pg_packing_beside_writers).await;
}

/// SQLite keeps closed days' played starts as one timeline per display and day: the
/// starts read back are the receipts' own, in every period, before and after the days are
/// written, and a receipt stored later for a written day joins its timeline.
#[tokio::test]
async fn sqlite_timelines_of_closed_days() {
    on_sqlite(|s: SqliteStore| async move {
        let c = city(&s).await;
        let mut receipts = Vec::new();
        let mut n = 0;
        for day in 1..=4u32 {
            for (h, dev) in [(0, c.a), (9, c.b), (23, c.a), (23, c.c)] {
                n += 1;
                let at = ms(2026, 5, day, h, 59, 0);
                let p = play(&s, &format!("t{n}"), Some(c.bus), None, c.x, at).await;
                let status = if n % 5 == 0 {
                    Status::Skipped
                } else {
                    Status::Played
                };
                receipts.push(receipt(dev, &p, at + 59_000, status));
            }
        }
        let late_play = play(&s, "late", Some(c.bus), None, c.y, ms(2026, 5, 2, 12, 0, 0)).await;
        s.commit_batch(&Batch {
            receipts,
            ..Batch::default()
        })
        .await
        .expect("commit");
        let periods = [
            (ms(2026, 5, 1, 0, 0, 0), ms(2026, 5, 5, 0, 0, 0)),
            (ms(2026, 5, 1, 23, 59, 59), ms(2026, 5, 3, 0, 0, 0)),
            (ms(2026, 5, 2, 9, 0, 0), ms(2026, 5, 4, 23, 59, 59)),
        ];
        let mut before = Vec::new();
        for (f, t) in periods {
            before.push(s.played_between(f, t, None).await.expect("played"));
        }
        assert_eq!(flat(before[0].clone()).len(), 13, "16 receipts, 3 skipped");
        let day = |d: u32| ms(2026, 5, d, 0, 0, 0).div_euclid(86_400_000);
        let mut written = s.compact_played(day(4), 10).await.expect("compact");
        written.sort_unstable();
        assert!(written.ends_with(&[day(1), day(2), day(3)]), "{written:?}");
        assert!(s
            .compact_played(day(4), 10)
            .await
            .expect("again")
            .is_empty());
        for (i, (f, t)) in periods.iter().enumerate() {
            assert_eq!(
                s.played_between(*f, *t, None).await.expect("played"),
                before[i],
                "period {i}"
            );
            // Days with timelines and days without, read by the displays' keys.
            let want: Vec<PlayedTimes> = before[i]
                .iter()
                .filter(|p| p.device != "b")
                .cloned()
                .collect();
            assert_eq!(
                s.played_of(*f, *t, &strings(&["c", "a", "nobody"]))
                    .await
                    .expect("played of"),
                want,
                "period {i}, a and c"
            );
        }
        assert_eq!(
            flat(
                s.played_between(periods[0].0, periods[0].1, Some("c"))
                    .await
                    .expect("c")
            ),
            (1..=4)
                .map(|d| ("c".to_owned(), ms(2026, 5, d, 23, 59, 59)))
                .collect::<Vec<_>>(),
            "one display's starts, the last second of each day included"
        );
        // A display back from days offline sends its receipt of day 2.
        let late = receipt(c.b, &late_play, ms(2026, 5, 2, 12, 0, 30), Status::Played);
        s.commit_batch(&Batch {
            receipts: vec![late.clone()],
            ..Batch::default()
        })
        .await
        .expect("late");
        let got = flat(
            s.played_between(periods[0].0, periods[0].1, None)
                .await
                .expect("played"),
        );
        assert_eq!(got.len(), 14);
        assert!(got.contains(&("b".to_owned(), late.started_ms)));
    })
    .await;
}
