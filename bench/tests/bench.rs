//! A tiny run of every `civicast-bench` scenario so the harness cannot rot. Only internal
//! consistency is asserted (everything sent is stored once, the rollup answers what the naive
//! GROUP BY answers, sizes add up), never a timing.

use civicast::settings::Settings;
use civicast_bench::{self as bench, IngestOptions, LoadOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_stores_every_receipt_once_beside_both_baselines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = IngestOptions {
        displays: 20,
        plays: 5,
        database: None,
        mqtt: None,
        dir: dir.path().to_path_buf(),
    };
    let r = bench::ingest(&Settings::default(), &o)
        .await
        .expect("ingest");
    assert_eq!(r.sent, 100);
    assert_eq!(r.stored, 100, "{r:?}");
    assert_eq!(r.rejected, 0, "{r:?}");
    assert_eq!(r.rows_in_receipts, 100);
    assert_eq!(
        r.rows_in_rollup, 100,
        "the rollup counts every stored receipt"
    );
    assert_eq!(r.broker_raw.count, 100, "the raw subscriber got everything");
    assert_eq!(r.store_raw.count, 100);
    assert!(r.ingest.secs > 0.0 && r.broker_raw.secs > 0.0 && r.store_raw.secs > 0.0);
}

/// Every question of the audit bench answered as the naive GROUP BY answers it, and the
/// answers a user can check by eye: the three classes of the load, a row per day of the
/// year, every display in the last week, receipts between 10:30 and 14:45 of the last day.
fn assert_every_grouping_equals_the_naive(r: &bench::AuditReport, o: &LoadOptions) {
    let names: Vec<String> = bench::cases(o, chrono_tz::Asia::Shanghai)
        .into_iter()
        .map(|c| c.name)
        .collect();
    let asked: Vec<&String> = r.queries.iter().map(|q| &q.name).collect();
    assert_eq!(asked, names.iter().collect::<Vec<_>>());
    for q in &r.queries {
        assert_eq!(
            q.identical,
            Some(true),
            "{} differs from the naive answer: {q:?}",
            q.name
        );
    }
    let by = |name: &str| {
        r.queries
            .iter()
            .find(|q| q.name == name)
            .unwrap_or_else(|| panic!("{name} not asked: {asked:?}"))
    };
    assert_eq!(by("by class, 365 d").rows, 3);
    assert_eq!(by("by day, 365 d").rows, 365);
    assert_eq!(by("by day, 365 d").total, by("by class, 365 d").total);
    assert_eq!(by("by device, 7 d").rows, 60);
    assert!(by("by slogan, 10:30-14:45 of the last day").total > 0);
    assert!(by("by slogan, 30 d, status=skipped").total > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rollup_answers_equal_the_naive_group_by() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = LoadOptions {
        receipts: 60_000,
        displays: 60,
        feeds: 3,
        ..LoadOptions::default()
    };
    let (store, load) = bench::load_sqlite(&dir.path().join("audit.db"), &o)
        .await
        .expect("load");
    // About what was asked (3 % of displays miss each play).
    assert!(
        (55_000..=65_000).contains(&load.receipts),
        "{}",
        load.receipts
    );
    assert!(load.rollup_rows > 0 && load.rollup_rows <= load.receipts);
    for sum in [
        "SELECT SUM(plays) FROM rollup_hour WHERE cut = 3",
        "SELECT SUM(plays) FROM rollup_daily_slogan WHERE cut = 0",
        "SELECT SUM(plays) FROM rollup_daily_device",
        "SELECT SUM(h00+h01+h02+h03+h04+h05+h06+h07+h08+h09+h10+h11+h12+h13+h14+h15+h16+h17+h18+h19+h20+h21+h22+h23) FROM rollup_daily_device",
    ] {
        let rolled: i64 = sqlx::query_scalar(sum)
            .fetch_one(store.pool())
            .await
            .expect("sum");
        assert_eq!(rolled, load.receipts, "rollup and receipts agree in total: {sum}");
    }
    let r = bench::audit(&store, &o, 2, (1, 1)).await.expect("audit");
    assert_every_grouping_equals_the_naive(&r, &o);
    // Compliance for the same week: every display judged, from presence written beside the
    // receipts, the report path equal to the naive fold over raw rows.
    let c = r.compliance.as_ref().expect("compliance ran");
    assert_eq!(
        c.identical,
        Some(true),
        "compliance differs from the naive answer: {c:?}"
    );
    assert_eq!(c.rows, 60, "{c:?}");
    assert!(
        c.plays > 0 && c.receipts_read > 0 && c.presence_read > 0,
        "{c:?}"
    );
    assert!(
        c.plays as usize <= c.receipts_read,
        "only receipts in counted time count: {c:?}"
    );
    assert!(r.identical());
    // Without naive runs nothing is compared, and nothing is claimed equal.
    let unchecked = bench::audit(&store, &o, 1, (0, 0)).await.expect("audit");
    assert!(unchecked.queries.iter().all(|q| q.identical.is_none()));
    assert_eq!(unchecked.compliance.and_then(|c| c.identical), None);
    let intervals: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM presence")
        .fetch_one(store.pool())
        .await
        .expect("presence");
    assert!(intervals > 0);
    // No stored receipt starts while its display is offline.
    let offline: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM receipts r WHERE NOT EXISTS (SELECT 1 FROM presence p \
         WHERE p.device = r.device AND p.online_from <= r.started_at AND r.started_at < p.online_until)",
    )
    .fetch_one(store.pool())
    .await
    .expect("offline receipts");
    assert_eq!(offline, 0, "receipts outside presence");

    let s = bench::storage(&store, &load).await.expect("storage");
    assert_eq!(s.receipts, load.receipts);
    assert!(s.receipts_bytes > 0 && s.rollup_bytes > 0, "{s:?}");
    assert!(s.file_bytes >= s.receipts_bytes + s.rollup_bytes, "{s:?}");
    assert!(s.heap_bytes_per_row > 0.0);
}

/// `storage` counts every byte: each table of the schema appears once, the rows add up to
/// the total, and the total holds at least the receipts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_counts_every_table_of_the_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let o = LoadOptions {
        receipts: 5_000,
        displays: 50,
        feeds: 3,
        ..LoadOptions::default()
    };
    let (store, load) = bench::load_sqlite(&dir.path().join("storage.db"), &o)
        .await
        .expect("load");
    let s = bench::storage(&store, &load).await.expect("storage");
    assert_eq!(s.source, "dbstat", "the bundled SQLite has dbstat");
    let schema: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .fetch_all(store.pool())
            .await
            .expect("tables");
    let mut listed: Vec<&str> = s.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(listed.pop(), Some(bench::SQLITE_CATALOG), "{s:?}");
    assert_eq!(listed, schema, "every table of the schema, once");
    for name in [
        "receipts",
        "rollup_hour",
        "rollup_daily_device",
        "plays",
        "presence",
        "adset_revisions",
    ] {
        assert!(listed.contains(&name), "{name} missing: {listed:?}");
    }
    assert!(
        !listed.contains(&"bench_heap"),
        "the scratch table is not the store's"
    );
    assert_eq!(
        s.tables.iter().map(|t| t.bytes).sum::<i64>(),
        s.tables_bytes,
        "the rows add up to the total: {s:?}"
    );
    assert!(s.tables.iter().all(|t| t.bytes > 0), "{s:?}");
    assert!(
        s.receipts_bytes > 0 && s.tables_bytes >= s.receipts_bytes,
        "{s:?}"
    );
    assert!(s.tables_bytes >= s.receipts_bytes + s.rollup_bytes, "{s:?}");
    // Every page of the file is some b-tree's or free.
    assert_eq!(s.tables_bytes + s.free_bytes, s.pages_bytes, "{s:?}");
    assert!(s.whole_bytes() >= s.tables_bytes, "{s:?}");
    assert!(s.whole_per_receipt() >= s.per_receipt(), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_measures_a_small_inventory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = bench::memory_one(&Settings::default(), dir.path(), 2_000, false, None)
        .await
        .expect("memory");
    assert_eq!(m.displays, 2_000);
    assert!(
        m.start_kib > 0 && m.catalog_kib > 0 && m.synced_kib > 0,
        "{m:?}"
    );
    assert!(m.peak_kib >= m.synced_kib, "{m:?}");
    assert!(m.daemon_kib.is_none());
}

/// The whole daemon on the embedded broker, idle then rotating: every receipt the rotating
/// displays send for its plays is stored once, and both readings are taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_the_daemon_idle_and_rotating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = bench::memory_one(&Settings::default(), dir.path(), 2_000, true, None)
        .await
        .expect("memory");
    let (sent, stored) = m.rotating_receipts.expect("rotated");
    assert_eq!(
        sent,
        3 * 2_000,
        "three plays, a receipt from every display: {m:?}"
    );
    assert_eq!(stored, sent, "{m:?}");
    let idle = m.daemon_kib.expect("idle reading");
    assert!(m.rotating_kib.expect("rotating reading") >= idle, "{m:?}");
}

/// The PostgreSQL audit/storage path on a tiny history (CIVICAST_TEST_PG names the
/// database; its own schema, dropped at the end): every receipt stays readable after
/// packing, the rollup answers what the naive GROUP BY over `receipts_all` answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn pg_audit_after_packing_equals_the_naive_group_by() {
    use sqlx::Connection;
    let url = std::env::var("CIVICAST_TEST_PG").expect(
        "CIVICAST_TEST_PG is not set: point it at a PostgreSQL database \
         (postgres://postgres@127.0.0.1:5432/test) to run the PostgreSQL bench test",
    );
    let schema = format!("t_bench_{}", ulid::Ulid::new().to_string().to_lowercase());
    let o = LoadOptions {
        receipts: 60_000,
        displays: 60,
        feeds: 3,
        ..LoadOptions::default()
    };
    let run = {
        let (url, schema, o) = (url.clone(), schema.clone(), o.clone());
        tokio::spawn(async move {
            let (store, load) = bench::load_pg(&url, &schema, &o).await.expect("load");
            assert!(
                (55_000..=65_000).contains(&load.receipts),
                "{}",
                load.receipts
            );
            assert_eq!(
                load.compaction.count as i64, load.receipts,
                "every day packed"
            );
            assert_eq!(load.left_raw, 0);
            for table in [
                "rollup_hour WHERE cut = 1",
                "rollup_daily_slogan WHERE cut = 2",
                "rollup_daily_device",
            ] {
                let rolled: i64 =
                    sqlx::query_scalar(&format!("SELECT SUM(plays)::bigint FROM {table}"))
                        .fetch_one(store.pool())
                        .await
                        .expect("sum");
                assert_eq!(rolled, load.receipts, "{table} and receipts agree in total");
            }
            let s = bench::storage_pg(&store, &load).await.expect("storage");
            assert_eq!(s.readable, load.receipts, "packed receipts stay readable");
            assert!(s.packed_bytes > 0 && s.raw_bytes > 0, "{s:?}");
            let names: Vec<&str> = s.tables.iter().map(|t| t.name.as_str()).collect();
            for name in [
                "receipts",
                "receipts_packed",
                "rollup_hour",
                "rollup_daily_device",
                "plays",
                "presence",
                "adset_revisions",
            ] {
                assert!(names.contains(&name), "{name} missing: {names:?}");
            }
            assert!(!names.contains(&"bench_heap"), "{names:?}");
            assert_eq!(
                s.tables.iter().map(|t| t.bytes).sum::<i64>(),
                s.tables_bytes,
                "the rows add up to the total: {s:?}"
            );
            assert!(
                s.tables_bytes >= s.packed_bytes + s.partitions_bytes + s.rollup_bytes,
                "{s:?}"
            );
            assert!(s.heap_bytes_per_row > 0.0);
            let r = bench::audit_pg(&store, &o, 2, 1).await.expect("audit");
            assert_every_grouping_equals_the_naive(&r, &o);
            store.pool().close().await;
        })
        .await
    };
    let mut c = sqlx::PgConnection::connect(&url).await.expect("reconnect");
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut c)
        .await
        .expect("drop test schema");
    if let Err(e) = run {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// A 100,000-row download completes in both formats through the API's download function,
/// and the workbook holds the JSON answer's rows cell for cell (memory is the scenario's
/// figure, printed by `civicast-bench download`, never asserted here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "about 36 s in a debug build (the load and reading 100,000 rows back); run with --include-ignored, or `civicast-bench download` in release"]
async fn a_hundred_thousand_row_download_completes_as_csv_and_as_xlsx() {
    use calamine::{Data, Reader};
    use civicast::reports::Download;
    use civicast::store::Store;
    let dir = tempfile::tempdir().expect("tempdir");
    let o = LoadOptions {
        receipts: 120_000,
        ..LoadOptions::default()
    };
    let (store, _) = bench::load_sqlite(&dir.path().join("d.db"), &o)
        .await
        .expect("load");
    let q = bench::download::download_query();
    let (csv, body) = bench::download::download_once(&store, q.clone(), Download::Csv, true)
        .await
        .expect("csv");
    let rows = store.audit_plays(&q).await.expect("rows");
    let answer = civicast::reports::answer(&q, &rows);
    assert!(rows.len() >= 100_000, "{} rows", rows.len());
    assert_eq!(csv.csv_rows, Some(rows.len() as u64));
    let text = String::from_utf8(body).expect("utf-8");
    assert_eq!(text.lines().next(), Some("device,hour,plays"));
    let (_, book) = bench::download::download_once(&store, q, Download::Xlsx, true)
        .await
        .expect("xlsx");
    let mut x = calamine::Xlsx::new(std::io::Cursor::new(book)).expect("an XLSX");
    let sheet = x.worksheet_range("report").expect("report sheet");
    assert_eq!(
        sheet.height(),
        rows.len() + 1,
        "a header and a row a play-count row"
    );
    for (got, want) in sheet.rows().skip(1).zip(&answer.rows) {
        assert_eq!(
            got[0],
            Data::String(want["device"].as_str().expect("device").into())
        );
        let hour = chrono::DateTime::parse_from_rfc3339(want["hour"].as_str().expect("hour"))
            .expect("an RFC 3339 hour");
        match &got[1] {
            Data::DateTime(d) => assert_eq!(d.as_datetime(), Some(hour.naive_local())),
            other => panic!("hour cell {other:?}"),
        }
        assert_eq!(got[2], Data::Float(want["plays"].as_f64().expect("plays")));
    }
    let query = x.worksheet_range("query").expect("query sheet");
    let total = query
        .rows()
        .find(|r| r[0] == Data::String("total".into()))
        .map(|r| r[1].clone());
    assert_eq!(total, Some(Data::Float(answer.total as f64)));
}

/// The receipt-log scenario: both runs store every receipt, the logged one has its leaves
/// and log tables, and `audit verify` over it is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receipt_log_scenario_runs_with_and_without_the_log() {
    use civicast_bench::receipt_log::{receipt_log, LogOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let o = LogOptions {
        displays: 1_200,
        rounds: 2,
        batch: 500,
        feed_size: 500,
        load_only: false,
    };
    let r = receipt_log(dir.path(), None, &o)
        .await
        .expect("log scenario");
    assert_eq!(r.without_log.receipts, 2_400);
    assert_eq!(r.with_log.receipts, 2_400);
    assert_eq!((r.without_log.leaves, r.with_log.leaves), (0, 6), "{r:?}");
    assert!(
        r.without_log.log_bytes > 0,
        "the tables exist, empty: {r:?}"
    );
    assert!(r.with_log.log_bytes > r.without_log.log_bytes, "{r:?}");
    assert!(r.verify_ok, "{r:?}");
    assert!(r.verify_secs.is_some(), "{r:?}");

    // --load-only: the logged database alone, left for `civicast audit verify`.
    let only = LogOptions {
        load_only: true,
        ..o
    };
    let r = receipt_log(dir.path(), None, &only)
        .await
        .expect("load only");
    assert_eq!((r.with_log.receipts, r.without_log.receipts), (2_400, 0));
    assert_eq!(r.verify_secs, None);
    let url = format!("sqlite://{}", dir.path().join("with.db").display());
    let db = civicast::store::Db::Sqlite(
        civicast::store::SqliteStore::connect(&url)
            .await
            .expect("open the loaded database"),
    );
    let v = civicast::receipt_log::live::verify_live(&db, None)
        .await
        .expect("verify");
    assert!(v.ok() && v.valid == 2_400, "{v:?}");
}
