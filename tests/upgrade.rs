//! A database written by the release at migration 0007 (`tests/fixtures/release-0007/`,
//! see its README) moves forward to the current schema and answers every play-count
//! question as that release did: the 896 answers it gave, row for row, on both backends; and
//! the counts per play that migration 0014 adds are those of its receipts.
//!
//! PostgreSQL's half needs `CIVICAST_TEST_PG` and is ignored without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use civicast::core::audit::{PlaysParams, PlaysQuery};
use civicast::store::{ApiStore, PgStore, SqliteStore, Store};
use sqlx::Connection;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/release-0007")
        .join(name)
}

/// One recorded question and the release's answer.
struct Asked {
    tz: String,
    params: PlaysParams,
    rows: Vec<(Vec<String>, i64)>,
}

fn recorded() -> Vec<Asked> {
    let text = std::fs::read_to_string(fixture("answers.json")).expect("read answers.json");
    let all: Vec<serde_json::Value> = serde_json::from_str(&text).expect("answers.json");
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().map(str::to_owned);
    all.iter()
        .map(|a| Asked {
            tz: s(a, "tz").expect("tz"),
            params: PlaysParams {
                from: s(a, "from"),
                to: s(a, "to"),
                group_by: s(a, "group_by"),
                class: s(a, "class"),
                device: s(a, "device"),
                slogan: s(a, "slogan"),
                feed: s(a, "feed"),
                status: s(a, "status"),
            },
            rows: serde_json::from_value(a["rows"].clone()).expect("rows"),
        })
        .collect()
}

/// Asks every recorded question; panics naming each one answered differently.
async fn same_answers<S: Store>(s: &S) {
    let asked = recorded();
    assert_eq!(asked.len(), 896, "the fixture's questions");
    let mut wrong = Vec::new();
    let mut rows = 0;
    for a in &asked {
        let q = PlaysQuery::parse(&a.params, a.tz.parse().expect("zone")).expect("query");
        let got: Vec<(Vec<String>, i64)> = s
            .audit_plays(&q)
            .await
            .expect("audit_plays")
            .into_iter()
            .map(|r| (r.values, r.plays))
            .collect();
        rows += got.len();
        if got != a.rows {
            wrong.push(format!(
                "{:?} in {}: {} rows (total {}), the release had {} (total {})",
                a.params,
                a.tz,
                got.len(),
                got.iter().map(|r| r.1).sum::<i64>(),
                a.rows.len(),
                a.rows.iter().map(|r| r.1).sum::<i64>()
            ));
        }
    }
    assert!(rows > 10_000, "the answers hold rows ({rows})");
    assert!(
        wrong.is_empty(),
        "{} of {} answers changed:\n{}",
        wrong.len(),
        asked.len(),
        wrong.join("\n")
    );
}

/// The counts per play that migration 0014 fills are those of the stored receipts.
async fn play_counts_are_the_receipts<S: ApiStore>(s: &S) {
    let mut want: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for r in s
        .receipts_for_plays_between(i64::MIN, i64::MAX)
        .await
        .expect("receipts")
    {
        *want.entry((r.play, format!("{:?}", r.status))).or_default() += 1;
    }
    let got: BTreeMap<(i64, String), i64> = s
        .play_counts_between(i64::MIN, i64::MAX)
        .await
        .expect("play counts")
        .into_iter()
        .map(|c| ((c.play, format!("{:?}", c.status)), c.receipts))
        .collect();
    assert!(want.len() > 100, "the release's receipts ({})", want.len());
    assert_eq!(got, want, "counts per play and status after the migration");
}

#[tokio::test]
async fn sqlite_database_of_the_release_keeps_its_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("civicast.db");
    std::fs::copy(fixture("sqlite.db"), &db).expect("copy the fixture");
    let s = SqliteStore::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("open");
    s.migrate().await.expect("migrate the release's database");
    let old: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'rollup_hourly'",
    )
    .fetch_one(s.pool())
    .await
    .expect("tables");
    assert_eq!(old, 0, "the per-receipt hourly rollup is gone");
    same_answers(&s).await;
    play_counts_are_the_receipts(&s).await;
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set CIVICAST_TEST_PG (postgres://postgres@127.0.0.1:5432/test) and run with --include-ignored"]
async fn postgres_database_of_the_release_keeps_its_counts() {
    let url = std::env::var("CIVICAST_TEST_PG").expect(
        "CIVICAST_TEST_PG is not set: point it at a PostgreSQL database \
         (postgres://postgres@127.0.0.1:5432/test)",
    );
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let dump = std::fs::read_to_string(fixture("postgres.sql")).expect("read postgres.sql");
    let mut c = sqlx::PgConnection::connect(&url).await.expect("connect");
    sqlx::raw_sql(&dump.replace("civicast_fixture", &schema))
        .execute(&mut c)
        .await
        .expect("restore the release's schema");
    let s = PgStore::connect_schema(&url, &schema)
        .await
        .expect("connect");
    let outcome = tokio::spawn({
        let s = s.clone();
        async move {
            s.migrate().await.expect("migrate the release's database");
            same_answers(&s).await;
            play_counts_are_the_receipts(&s).await;
        }
    })
    .await;
    s.pool().close().await;
    sqlx::raw_sql(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut c)
        .await
        .expect("drop the schema");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
