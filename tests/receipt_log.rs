//! The receipt log as an auditor meets it, on both backends: receipts committed through
//! `commit_batch` (what the ingest worker calls) are in the tree; a receipt edited, deleted
//! or inserted with plain SQL is named by the live check (the library call and `civicast
//! audit verify`); a bundle verifies offline and fails when any one byte of it changes;
//! packed days on PostgreSQL still verify and pruned receipts are reported as pruned; a
//! witness refuses a forked checkpoint.
//!
//! PostgreSQL runs when `CIVICAST_TEST_PG` names a database (each test in its own schema).

mod common;

use std::future::Future;
use std::path::Path;

use civicast::core::tlog::Finding;
use civicast::core::wire::Status;
use civicast::receipt_log::{self, bundle, live, witness, Signed};
use civicast::store::{
    Batch, Db, DeviceRow, NewPlay, PgStore, PlayRow, ReceiptRow, SqliteStore, Store,
};
use sqlx::Connection;

const T0: i64 = 1_764_547_200_000; // 2025-12-01T00:00:00Z

async fn on_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Db, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("civicast.db").display());
    let s = SqliteStore::connect(&url).await.expect("open sqlite");
    s.migrate().await.expect("migrate");
    test(Db::Sqlite(s), url).await;
}

async fn on_pg<F, Fut>(test: F)
where
    F: FnOnce(Db, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let base = std::env::var("CIVICAST_TEST_PG").expect("CIVICAST_TEST_PG is not set");
    let schema = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let s = PgStore::connect_schema(&base, &schema)
        .await
        .expect("connect");
    s.migrate().await.expect("migrate");
    let url = common::PgSchema {
        base: base.clone(),
        name: schema.clone(),
    }
    .url();
    let outcome = tokio::spawn(test(Db::Postgres(s.clone()), url)).await;
    s.pool().close().await;
    let mut c = sqlx::PgConnection::connect(&base).await.expect("reconnect");
    sqlx::raw_sql(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .execute(&mut c)
        .await
        .expect("drop schema");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn exec(db: &Db, sql: &str) {
    match db {
        Db::Sqlite(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(|_| ()),
        Db::Postgres(s) => sqlx::raw_sql(sql).execute(s.pool()).await.map(|_| ()),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

struct Keys {
    devices: Vec<i64>,
    plays: Vec<PlayRow>,
}

/// Four displays, three plays.
async fn city(db: &Db) -> Keys {
    let devs: Vec<DeviceRow> = ["bus-1", "bus-2", "bus-3", "taxi-1"]
        .iter()
        .map(|n| DeviceRow {
            name: (*n).into(),
            class: if n.starts_with("bus") {
                "bus_led"
            } else {
                "taxi_top"
            }
            .into(),
            feeds: vec!["all".into()],
        })
        .collect();
    let keys = db
        .sync_inventory(&devs, &["all".into()], T0)
        .await
        .expect("inventory");
    let slogan = db.slogan_key("civility", 1, "s").await.expect("slogan");
    let mut plays = Vec::new();
    for (i, id) in ["play-a", "play-b", "play-c"].iter().enumerate() {
        let p = NewPlay {
            play_id: (*id).into(),
            feed: Some(keys.feeds["all"]),
            device: None,
            slogan,
            issued_ms: T0 + i as i64 * 180_000,
            expires_ms: T0 + i as i64 * 180_000 + 180_000,
            members: 4,
        };
        db.record_play(&p, None).await.expect("play");
        plays.push(db.play_by_id(id).await.expect("read").expect("play"));
    }
    let devices = ["bus-1", "bus-2", "bus-3", "taxi-1"]
        .iter()
        .map(|n| keys.devices[*n])
        .collect();
    Keys { devices, plays }
}

fn receipt(device: i64, play: &PlayRow, offset: i64) -> ReceiptRow {
    ReceiptRow {
        device,
        play: play.key,
        started_ms: play.issued_ms + offset,
        duration_ms: 15_000,
        status: Status::Played,
        slogan: play.slogan,
        feed: play.feed.unwrap_or(0),
    }
}

/// Two batches: play-a from bus-1, bus-2, taxi-1; play-b from bus-1, bus-2.
async fn two_batches(db: &Db, k: &Keys) {
    let d = &k.devices;
    let b1 = vec![
        receipt(d[0], &k.plays[0], 1_000),
        receipt(d[1], &k.plays[0], 2_000),
        receipt(d[3], &k.plays[0], 3_000),
    ];
    let b2 = vec![
        receipt(d[0], &k.plays[1], 1_000),
        receipt(d[1], &k.plays[1], 2_000),
    ];
    for rs in [b1, b2] {
        db.commit_batch(&Batch {
            receipts: rs,
            ..Batch::default()
        })
        .await
        .expect("commit");
    }
}

fn key_pair(dir: &Path) -> (signed_note::StandardSigner, String) {
    let path = dir.join("log.key");
    let vkey = receipt_log::keygen(&path, "civicast.test/receipts").expect("keygen");
    (receipt_log::load_signer(&path).expect("load key"), vkey)
}

fn names(f: &[Finding]) -> Vec<String> {
    f.iter()
        .map(|f| match f {
            Finding::Edited {
                device, play_id, ..
            } => format!("edited {device} {play_id}"),
            Finding::Deleted {
                device, play_id, ..
            } => format!("deleted {device} {play_id}"),
            Finding::Inserted { device, play_id } => format!("inserted {device} {play_id}"),
            Finding::LeafChanged { leaf, .. } => format!("leaf {leaf}"),
        })
        .collect()
}

async fn tampering_is_named(db: Db, url: String) {
    let k = city(&db).await;
    two_batches(&db, &k).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (signer, vkey) = key_pair(dir.path());
    let verifier = receipt_log::load_verifier(&vkey).expect("verifier");
    assert_eq!(
        receipt_log::sign_checkpoint(&db, &signer, T0)
            .await
            .expect("sign"),
        Signed::New(2)
    );
    // Never one per request: nothing grew, nothing new is signed.
    assert_eq!(
        receipt_log::sign_checkpoint(&db, &signer, T0)
            .await
            .expect("sign again"),
        Signed::Unchanged(2)
    );
    let clean = live::verify_live(&db, Some(&verifier))
        .await
        .expect("verify");
    assert!(clean.ok(), "{:?} {:?}", clean.findings, clean.tree_problems);
    assert_eq!((clean.leaves, clean.valid, clean.pruned), (2, 5, 0));

    let (d, p) = (&k.devices, &k.plays);
    exec(
        &db,
        &format!(
            "UPDATE receipts SET duration_ms = 14000 WHERE device = {} AND play = {}",
            d[1], p[0].key
        ),
    )
    .await;
    exec(
        &db,
        &format!(
            "DELETE FROM receipts WHERE device = {} AND play = {}",
            d[0], p[1].key
        ),
    )
    .await;
    let day = p[2].issued_ms / 86_400_000;
    let insert = match db {
        Db::Sqlite(_) => format!(
            "INSERT INTO receipts (device, play, started_at, duration_ms, status) VALUES ({}, {}, {}, 15000, 0)",
            d[2], p[2].key, p[2].issued_ms + 1
        ),
        Db::Postgres(_) => format!(
            "INSERT INTO receipts (device, play, started_at, duration_ms, play_day, status) VALUES ({}, {}, {}, 15000, {day}, 0)",
            d[2], p[2].key, p[2].issued_ms + 1
        ),
    };
    exec(&db, &insert).await;
    let out = live::verify_live(&db, Some(&verifier))
        .await
        .expect("verify");
    assert_eq!(
        names(&out.findings),
        [
            "edited bus-2 play-a",
            "deleted bus-1 play-b",
            "inserted bus-3 play-c"
        ],
        "{:?}",
        out.findings
    );
    assert_eq!(out.valid, 3);

    // The command line says the same and exits non-zero.
    let run = common::civicast_command(dir.path())
        .args(["audit", "verify", "--key", &vkey])
        .env("CIVICAST_DATABASE_URL", &url)
        .output()
        .expect("civicast audit verify");
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(!run.status.success(), "{text}");
    for want in [
        "edited: receipt of display bus-2 for play play-a",
        "deleted: receipt of display bus-1 for play play-b",
        "inserted: receipt of display bus-3 for play play-c",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
}

async fn bundles_verify_offline_and_fail_on_any_byte(db: Db, _url: String) {
    let k = city(&db).await;
    two_batches(&db, &k).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (signer, vkey) = key_pair(dir.path());
    receipt_log::sign_checkpoint(&db, &signer, T0)
        .await
        .expect("sign");
    let wpath = dir.path().join("witness.key");
    let wkey = receipt_log::cosign::witness_keygen(&wpath, "office.test").expect("witness key");
    let filter = bundle::Filter {
        from_ms: T0,
        to_ms: T0 + 180_000,
        class: None,
        company: None,
        device: Some("bus-1".into()),
    };
    // Without the witness's cosignature, --witness fails.
    let mut b = bundle::export(&db, &filter, &[]).await.expect("export");
    bundle::sign(&mut b, &signer).expect("sign");
    let text = bundle::to_bytes(&b).expect("bytes");
    let out = bundle::verify_bundle(&text, &vkey, &[wkey.clone()]).expect("verify");
    assert_eq!(out.problems.len(), 1, "{:?}", out.problems);
    assert!(
        out.problems[0].contains("office.test"),
        "{:?}",
        out.problems
    );

    let cp = db
        .latest_checkpoint()
        .await
        .expect("cp")
        .expect("a checkpoint");
    let mut cosigner = receipt_log::cosign::Cosigner::load(&wpath).expect("load witness");
    cosigner.time = 1_764_547_300;
    let mut note = signed_note::Note::from_bytes(cp.note.as_bytes()).expect("note");
    let before = note.to_bytes().len();
    note.add_sigs(&[&cosigner]).expect("cosign");
    let line = String::from_utf8(note.to_bytes()[before..].to_vec()).expect("utf-8");
    db.store_cosignature(cp.size, "office.test", &line)
        .await
        .expect("store");

    let mut b = bundle::export(&db, &filter, &[]).await.expect("export");
    bundle::sign(&mut b, &signer).expect("sign");
    assert_eq!(b.receipts.len(), 1, "bus-1's one receipt of play-a");
    assert_eq!(b.counts.receipts, 1);
    let text = bundle::to_bytes(&b).expect("bytes");
    let out = bundle::verify_bundle(&text, &vkey, &[wkey.clone()]).expect("verify");
    assert!(out.problems.is_empty(), "{:?}", out.problems);

    for i in 0..text.len() {
        let mut t = text.clone();
        t[i] ^= 0x01;
        let out = bundle::verify_bundle(&t, &vkey, &[wkey.clone()]).expect("verify");
        assert!(
            !out.problems.is_empty(),
            "byte {i} changed ({:?} -> {:?}) and the bundle still verified",
            text[i] as char,
            t[i] as char
        );
    }
}

/// A tree that grew verifies against the last cosigned checkpoint; a fork (another tree
/// of the same key, the same first leaf, another second) does not.
async fn the_witness_refuses_a_fork(db: Db, _url: String) {
    let k = city(&db).await;
    let d = &k.devices;
    db.commit_batch(&Batch {
        receipts: vec![receipt(d[0], &k.plays[0], 1)],
        ..Batch::default()
    })
    .await
    .expect("commit");
    let dir = tempfile::tempdir().expect("tempdir");
    let (signer, _) = key_pair(dir.path());
    receipt_log::sign_checkpoint(&db, &signer, T0)
        .await
        .expect("sign");
    let first = db.latest_checkpoint().await.expect("cp").expect("cp");
    db.commit_batch(&Batch {
        receipts: vec![receipt(d[1], &k.plays[0], 2)],
        ..Batch::default()
    })
    .await
    .expect("commit");
    db.commit_batch(&Batch {
        receipts: vec![receipt(d[2], &k.plays[0], 3)],
        ..Batch::default()
    })
    .await
    .expect("commit");
    receipt_log::sign_checkpoint(&db, &signer, T0 + 1)
        .await
        .expect("sign");
    let grown = db.latest_checkpoint().await.expect("cp").expect("cp");
    assert_eq!((first.size, grown.size), (1, 3));
    let proof = receipt_log::consistency_proof(&db, 3, 1)
        .await
        .expect("proof");
    witness::check_step(Some((1, first.root)), (3, grown.root), &proof).expect("consistent");

    // The fork: the same first leaf, then another second and third.
    let fork_dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", fork_dir.path().join("fork.db").display());
    let f = SqliteStore::connect(&url).await.expect("open");
    f.migrate().await.expect("migrate");
    let fork = Db::Sqlite(f);
    let fk = city(&fork).await;
    let fd = &fk.devices;
    for (dev, off) in [(fd[0], 1), (fd[3], 2), (fd[2], 3)] {
        fork.commit_batch(&Batch {
            receipts: vec![receipt(dev, &fk.plays[0], off)],
            ..Batch::default()
        })
        .await
        .expect("commit");
    }
    let fork_root = receipt_log::stored_root(&fork, 3).await.expect("root");
    let first_of_fork = receipt_log::stored_root(&fork, 1).await.expect("root");
    assert_eq!(first_of_fork, first.root, "the fork shares the first leaf");
    let fork_proof = receipt_log::consistency_proof(&fork, 3, 1)
        .await
        .expect("proof");
    // Against the first checkpoint alone the fork looks fine: a fork only shows against
    // a later cosigned checkpoint.
    witness::check_step(Some((1, first.root)), (3, fork_root), &fork_proof).expect("one branch");
    let e = witness::check_step(Some((3, grown.root)), (3, fork_root), &[]).expect_err("fork");
    assert!(format!("{e}").contains("FORK"), "{e}");
    let e = witness::check_step(Some((3, grown.root)), (1, first.root), &[]).expect_err("rollback");
    assert!(format!("{e}").contains("rolled back"), "{e}");
}

/// Retention drops receipts: they are counted as pruned, never as valid or deleted.
async fn pruned_receipts_are_reported_as_pruned(db: Db, _url: String) {
    let k = city(&db).await;
    two_batches(&db, &k).await;
    // Plays before play-b's day boundary... all three plays share a day; prune by time.
    let before = match db {
        Db::Sqlite(_) => k.plays[1].issued_ms,
        Db::Postgres(_) => k.plays[2].issued_ms + 86_400_000,
    };
    db.prune_receipts(before).await.expect("prune");
    let out = live::verify_live(&db, None).await.expect("verify");
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    assert!(out.pruned >= 3, "{out:?}");
    assert_eq!(out.valid + out.pruned, 5, "{out:?}");
}

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
    tampering_is_named,
    bundles_verify_offline_and_fail_on_any_byte,
    the_witness_refuses_a_fork,
    pruned_receipts_are_reported_as_pruned,
);

/// Packed days (PostgreSQL) verify as raw ones do.
#[tokio::test]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn packed_days_still_verify() {
    on_pg(|db, _| async move {
        let Db::Postgres(pg) = &db else {
            unreachable!()
        };
        pg.ensure_partitions(T0 / 86_400_000, 1)
            .await
            .expect("partitions");
        let k = city(&db).await;
        two_batches(&db, &k).await;
        let packed = pg
            .compact_receipts(k.plays[0].issued_ms / 86_400_000 + 1)
            .await
            .expect("pack");
        assert_eq!(packed.receipts, 5);
        let out = live::verify_live(&db, None).await.expect("verify");
        assert!(out.ok(), "{:?} {:?}", out.findings, out.tree_problems);
        assert_eq!(out.valid, 5);
    })
    .await;
}
