//! The receipt log as an auditor meets it, on both backends: receipts committed through
//! `commit_batch` (what the ingest worker calls) are in the tree; a receipt edited, deleted
//! or inserted with plain SQL is named by the live check (the library call and `civicast
//! audit verify`); a bundle verifies offline and fails when any one byte of it changes;
//! packed days on PostgreSQL still verify and pruned receipts are reported as pruned; a
//! witness refuses a forked checkpoint; the names a batch carries from the ingest are what
//! is logged.
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
    let out = bundle::verify_bundle(&text, &vkey, std::slice::from_ref(&wkey)).expect("verify");
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
    let out = bundle::verify_bundle(&text, &vkey, std::slice::from_ref(&wkey)).expect("verify");
    assert!(out.problems.is_empty(), "{:?}", out.problems);

    for i in 0..text.len() {
        let mut t = text.clone();
        t[i] ^= 0x01;
        let out = bundle::verify_bundle(&t, &vkey, std::slice::from_ref(&wkey)).expect("verify");
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
    // A receipt of a play from before the log began (as after an upgrade) is counted
    // apart, neither valid nor inserted.
    exec(
        &db,
        &format!("UPDATE log_state SET before_play = {}", k.plays[2].key),
    )
    .await;
    let day = k.plays[2].issued_ms / 86_400_000;
    let (d3, p3, at) = (k.devices[3], k.plays[2].key, k.plays[2].issued_ms + 5);
    exec(&db, &match db {
        Db::Sqlite(_) => format!("INSERT INTO receipts (device, play, started_at, duration_ms, status) VALUES ({d3}, {p3}, {at}, 15000, 0)"),
        Db::Postgres(_) => format!("INSERT INTO receipts (device, play, started_at, duration_ms, play_day, status) VALUES ({d3}, {p3}, {at}, 15000, {day}, 0)"),
    })
    .await;
    let out = live::verify_live(&db, None).await.expect("verify");
    assert!(out.findings.is_empty(), "{:?}", out.findings);
    assert!(out.pruned >= 3, "{out:?}");
    assert_eq!(out.valid + out.pruned, 5, "{out:?}");
    assert_eq!(out.before_log, 1, "{out:?}");
}

/// The names the ingest hands over with a batch are what the log records: with every name
/// given, with only the displays', or with none (read in the commit), the stored root is
/// the RFC 6962 root (an independent implementation) of the leaves an auditor encodes from
/// the receipts, and the live check finds every receipt valid.
async fn names_passed_with_a_batch_are_logged(db: Db, _url: String) {
    use civicast::core::tlog::{encode_leaf, LogReceipt};
    let k = city(&db).await;
    let names = ["bus-1", "bus-2", "bus-3", "taxi-1"];
    let mut tree = ct_merkle::CtMerkleTree::<sha2::Sha256, Vec<u8>>::new();
    for (b, play) in k.plays.iter().enumerate() {
        let mut batch = Batch::default();
        let mut logged = Vec::new();
        for (i, d) in k.devices.iter().enumerate().rev() {
            batch.receipts.push(receipt(*d, play, 1_000 + i as i64));
            match b {
                0 => batch.names.note(*d, names[i], play.key, &play.play_id),
                1 => {
                    batch.names.devices.insert(*d, names[i].to_string());
                }
                _ => {}
            }
            logged.push(LogReceipt {
                device: names[i].into(),
                play_id: play.play_id.clone(),
                started_ms: play.issued_ms + 1_000 + i as i64,
                duration_ms: 15_000,
                status: 0,
            });
        }
        db.commit_batch(&batch).await.expect("commit");
        logged.sort();
        tree.push(encode_leaf(&logged));
    }
    let head = db.log_head().await.expect("head");
    assert_eq!(head.size, 3);
    assert_eq!(head.root.0.as_slice(), tree.root().as_bytes().as_slice());
    let out = live::verify_live(&db, None).await.expect("verify");
    assert!(out.ok(), "{:?} {:?}", out.findings, out.tree_problems);
    assert_eq!(out.valid, 12, "{out:?}");
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
    names_passed_with_a_batch_are_logged,
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

/// Two daemons committing into one PostgreSQL database extend one tree: each keeps the
/// tree of its own last commit, which the other's commits make stale, in turn and at the
/// same time. Every receipt is logged once, the state's size is the number of batches, the
/// stored hashes give the stored root, and the live check finds every receipt valid.
#[tokio::test]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn two_daemons_on_one_database_extend_one_tree() {
    on_pg(|db, url| async move {
        let other = Db::Postgres(PgStore::connect(&url).await.expect("second store"));
        let k = city(&db).await;
        let mut batches: Vec<Batch> = Vec::new();
        for play in &k.plays {
            for (i, d) in k.devices.iter().enumerate() {
                batches.push(Batch {
                    receipts: vec![receipt(*d, play, 1_000 + i as i64)],
                    ..Batch::default()
                });
            }
        }
        let (in_turn, together) = batches.split_at(8);
        for (i, b) in in_turn.iter().enumerate() {
            let store = if i % 2 == 0 { &db } else { &other };
            let out = store.commit_batch(b).await.expect("commit in turn");
            assert_eq!(out.stored, 1);
        }
        let (a, b) = together.split_at(2);
        let one = async {
            for batch in a {
                db.commit_batch(batch)
                    .await
                    .expect("commit together (first)");
            }
        };
        let two = async {
            for batch in b {
                other
                    .commit_batch(batch)
                    .await
                    .expect("commit together (second)");
            }
        };
        tokio::join!(one, two);
        let head = db.log_head().await.expect("head");
        assert_eq!(head.size, 12, "one leaf a batch");
        let out = live::verify_live(&db, None).await.expect("verify");
        assert!(out.ok(), "{:?} {:?}", out.findings, out.tree_problems);
        assert_eq!(out.valid, 12, "{out:?}");
        // Committing again from either store still extends the same tree.
        let again = Batch {
            receipts: vec![receipt(k.devices[0], &k.plays[0], 1_000)],
            ..Batch::default()
        };
        assert_eq!(
            other
                .commit_batch(&again)
                .await
                .expect("redelivery")
                .duplicates,
            1
        );
        assert_eq!(db.log_head().await.expect("head").size, 12);
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// The daemon: SIGKILLed mid-batch, its log served over HTTP, a witness across restarts
// ---------------------------------------------------------------------------------------

async fn raw_get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers");
    let head = String::from_utf8_lossy(&buf[..split]).to_ascii_lowercase();
    assert!(
        !head.contains("chunked"),
        "a length-delimited answer: {head}"
    );
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, buf[split + 4..].to_vec())
}

/// The tree as served matches the signed checkpoint: the first level-0 tile's hashes are
/// the leaf hashes of the first entry bundle, and they give the checkpoint's root.
async fn served_log_matches(addr: std::net::SocketAddr, vkey: &str) -> u64 {
    let (st, note) = raw_get(addr, "/log/checkpoint").await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&note));
    let cp = receipt_log::open_checkpoint(&note, &receipt_log::load_verifier(vkey).expect("key"))
        .expect("a checkpoint signed by the log's key");
    let n = cp.size();
    assert!(n > 0 && n < 256, "a test tree fits one tile: {n}");
    let (st, tile) = raw_get(addr, &format!("/log/tile/0/000.p/{n}")).await;
    assert_eq!((st, tile.len()), (200, 32 * n as usize));
    let (st, entries) = raw_get(addr, &format!("/log/tile/entries/000.p/{n}")).await;
    assert_eq!(st, 200);
    let mut rest = &entries[..];
    let mut leaves = Vec::new();
    while !rest.is_empty() {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        leaves.push(tlog_tiles::record_hash(&rest[2..2 + len]));
        rest = &rest[2 + len..];
    }
    let from_tile: Vec<_> = tile
        .chunks(32)
        .map(|c| tlog_tiles::Hash(c.try_into().expect("32 bytes")))
        .collect();
    assert_eq!(leaves, from_tile, "entries hash to the tile's leaf hashes");
    assert_eq!(
        civicast::core::tlog::root_of(&leaves),
        *cp.hash(),
        "the tile gives the signed root"
    );
    // The inclusion proof of the first leaf's first receipt, checked against the root.
    let len = usize::from(u16::from_be_bytes([entries[0], entries[1]]));
    let r = &civicast::core::tlog::decode_leaf(&entries[2..2 + len]).expect("leaf")[0];
    let (st, body) = raw_get(
        addr,
        &format!(
            "/log/proof/inclusion?device={}&play_id={}&tree_size={n}",
            r.device, r.play_id
        ),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    use base64::Engine;
    let b64 = |s: &serde_json::Value| {
        base64::prelude::BASE64_STANDARD
            .decode(s.as_str().expect("text"))
            .expect("base64")
    };
    let proof: Vec<tlog_tiles::Hash> = v["proof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(|h| tlog_tiles::Hash(b64(h).try_into().expect("32 bytes")))
        .collect();
    let leaf = tlog_tiles::record_hash(&b64(&v["leaf"]));
    let idx = v["leaf_index"].as_u64().expect("index");
    tlog_tiles::check_record(&proof, n, *cp.hash(), idx, leaf).expect("the inclusion proof checks");
    // (The tree grows while the test reads: a tile this far out stays beyond it.)
    let (st, _) = raw_get(addr, "/log/tile/0/001").await;
    assert_eq!(st, 404, "nothing past the signed size is served");
    n
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn run_witness(d: &Path, addr: std::net::SocketAddr, vkey: &str) -> std::process::Output {
    common::civicast_command(d)
        .args([
            "witness",
            "--log",
            &format!("http://{addr}"),
            "--log-key",
            vkey,
        ])
        .arg("--key")
        .arg(d.join("witness.key"))
        .arg("--state")
        .arg(d.join("witness.json"))
        .output()
        .expect("civicast witness")
}

async fn killed_mid_batch(url: String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    common::write_weighted_city(d);
    let vkey = receipt_log::keygen(&d.join("log.key"), "civicast.test/receipts").expect("keygen");
    receipt_log::cosign::witness_keygen(&d.join("witness.key"), "office.test")
        .expect("witness key");
    let config = d.join("civicast.toml");
    std::fs::write(
        &config,
        "batch_wait = \"1s\"\nlog_checkpoint_every = \"1s\"\n",
    )
    .expect("config");
    let port = free_port();
    let env = [
        ("CIVICAST_DATABASE_URL", url.clone()),
        ("CIVICAST_DEVICES", d.join("devices").display().to_string()),
        (
            "CIVICAST_SCHEDULES",
            d.join("schedules").display().to_string(),
        ),
        ("CIVICAST_HTTP_LISTEN", "127.0.0.1:0".to_owned()),
        ("CIVICAST_MQTT_LISTEN", format!("127.0.0.1:{port}")),
        ("CIVICAST_LOG_KEY", d.join("log.key").display().to_string()),
    ];
    let mut serve = common::Serve::spawn(d, &env, Some(&config), 0);
    serve.ready(60).await;
    let displays = common::Display::fleet(port);
    common::wait_for("receipts from every display", 30, || {
        displays.iter().all(|x| x.sent() >= 2)
    })
    .await;
    for i in 1..=3 {
        let addr = serve.http.expect("http");
        tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
        served_log_matches(addr, &vkey).await;
        let w = run_witness(d, addr, &vkey);
        assert!(
            w.status.success(),
            "witness before kill {i}: {}",
            String::from_utf8_lossy(&w.stderr)
        );
        // Mid-batch: batches wait a second, and receipts keep coming.
        serve.kill();
        serve = common::Serve::spawn(d, &env, Some(&config), i);
        serve.ready(60).await;
    }
    common::stop_and_drain(&displays).await;
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let addr = serve.http.expect("http");
    served_log_matches(addr, &vkey).await;
    let w = run_witness(d, addr, &vkey);
    assert!(
        w.status.success(),
        "witness after the restarts: {}",
        String::from_utf8_lossy(&w.stderr)
    );
    serve.terminate().await;
    let v = common::civicast_command(d)
        .args(["audit", "verify", "--key", &vkey])
        .env("CIVICAST_DATABASE_URL", &url)
        .output()
        .expect("audit verify");
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        v.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&v.stderr)
    );
    assert!(text.contains("; 0 problems"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_batch_restarts_with_its_tree_and_checkpoints_consistent_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("civicast.db").display());
    killed_mid_batch(url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CIVICAST_TEST_PG (PostgreSQL)"]
async fn a_daemon_killed_mid_batch_restarts_with_its_tree_and_checkpoints_consistent_postgres() {
    on_pg(|_, url| killed_mid_batch(url)).await;
}
