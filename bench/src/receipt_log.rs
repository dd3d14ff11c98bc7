//! The receipt-log scenario: the same receipts committed through `commit_batch` (what the
//! ingest worker calls) into two fresh databases, one with the log and one without
//! (`without_receipt_log`, the baseline); the commit rate of each, their ratio, the log's
//! bytes per receipt (every `log_*` table with its indexes), and how long `audit verify`
//! takes over the result.
//!
//! The load is a million displays' shape at a smaller count: each round, every display
//! answers the play of its feed (feeds of `feed_size` displays), in batches of `batch`
//! receipts, as the ingest worker gathers them.
//!
//! Owns: its scratch databases. Must not touch: anything else.

use std::path::Path;
use std::time::Instant;

use civicast::core::wire::Status;
use civicast::store::{Batch, Db, DeviceRow, NewPlay, PgStore, ReceiptRow, SqliteStore, Store};

pub struct LogOptions {
    pub displays: usize,
    pub rounds: usize,
    pub batch: usize,
    pub feed_size: usize,
}

#[derive(Debug, Default)]
pub struct LogRun {
    pub receipts: u64,
    pub secs: f64,
    pub log_bytes: i64,
    pub leaves: u64,
}

#[derive(Debug)]
pub struct LogReport {
    pub with_log: LogRun,
    pub without_log: LogRun,
    pub verify_secs: f64,
    pub verify_ok: bool,
}

async fn open(dir: &Path, name: &str, pg: Option<&str>, log: bool) -> anyhow::Result<Db> {
    let db = match pg {
        Some(url) => {
            let schema = format!("bench_log_{name}_{}", std::process::id());
            let s = PgStore::connect_schema(url, &schema).await?;
            Db::Postgres(if log { s } else { s.without_receipt_log() })
        }
        None => {
            let path = dir.join(format!("{name}.db"));
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
            }
            let s = SqliteStore::connect(&format!("sqlite://{}", path.display())).await?;
            Db::Sqlite(if log { s } else { s.without_receipt_log() })
        }
    };
    db.migrate().await?;
    Ok(db)
}

/// Displays and plays; the receipts of each round, batched.
async fn load(db: &Db, o: &LogOptions) -> anyhow::Result<LogRun> {
    let feeds = o.displays.div_ceil(o.feed_size.max(1));
    let feed_names: Vec<String> = (0..feeds).map(|f| format!("feed-{f}")).collect();
    let devices: Vec<DeviceRow> = (0..o.displays)
        .map(|i| DeviceRow {
            name: format!("bus-{i:07}"),
            class: "bus_led".into(),
            feeds: vec![feed_names[i / o.feed_size.max(1)].clone()],
        })
        .collect();
    let t0 = 1_764_547_200_000i64;
    let keys = db.sync_inventory(&devices, &feed_names, t0).await?;
    let slogan = db.slogan_key("bench", 1, "s").await?;
    let mut run = LogRun::default();
    for round in 0..o.rounds {
        let issued = t0 + round as i64 * 180_000;
        let mut plays = Vec::with_capacity(feeds);
        for (f, name) in feed_names.iter().enumerate() {
            let id = format!("r{round}-f{f}");
            let p = NewPlay {
                play_id: id.clone(),
                feed: Some(keys.feeds[name]),
                device: None,
                slogan,
                issued_ms: issued,
                expires_ms: issued + 180_000,
                members: o.feed_size as i64,
            };
            let key = db.record_play(&p, None).await?;
            plays.push((key, keys.feeds[name]));
        }
        let receipts: Vec<ReceiptRow> = devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (play, feed) = plays[i / o.feed_size.max(1)];
                ReceiptRow {
                    device: keys.devices[&d.name],
                    play,
                    started_ms: issued + 1_000 + (i % 2_000) as i64,
                    duration_ms: 15_000,
                    status: Status::Played,
                    slogan,
                    feed,
                }
            })
            .collect();
        let t = Instant::now();
        for chunk in receipts.chunks(o.batch.max(1)) {
            let out = db
                .commit_batch(&Batch {
                    receipts: chunk.to_vec(),
                    ..Batch::default()
                })
                .await?;
            run.receipts += out.stored as u64;
        }
        run.secs += t.elapsed().as_secs_f64();
    }
    run.leaves = db.log_head().await?.size;
    run.log_bytes = log_bytes(db).await?;
    Ok(run)
}

/// Every `log_*` table with its indexes.
async fn log_bytes(db: &Db) -> anyhow::Result<i64> {
    Ok(match db {
        Db::Sqlite(s) => {
            sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(d.pgsize), 0) AS INTEGER) FROM dbstat d
             JOIN sqlite_schema o ON o.name = d.name WHERE o.tbl_name LIKE 'log\\_%' ESCAPE '\\'",
            )
            .fetch_one(s.pool())
            .await?
        }
        Db::Postgres(s) => {
            sqlx::query_scalar(
                "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND c.relname LIKE 'log\\_%' AND n.nspname = current_schema()",
            )
            .fetch_one(s.pool())
            .await?
        }
    })
}

async fn drop_schema(db: &Db) {
    if let Db::Postgres(s) = db {
        let _ = sqlx::raw_sql("DO $$ BEGIN EXECUTE 'DROP SCHEMA ' || quote_ident(current_schema()) || ' CASCADE'; END $$")
            .execute(s.pool())
            .await;
    }
}

/// Runs both loads (without the log first, so that a warm cache favours the log's run no
/// more than the baseline's), then `audit verify` over the logged one.
pub async fn receipt_log(
    dir: &Path,
    pg: Option<&str>,
    o: &LogOptions,
) -> anyhow::Result<LogReport> {
    let base = open(dir, "without", pg, false).await?;
    let without_log = load(&base, o).await?;
    drop_schema(&base).await;
    let db = open(dir, "with", pg, true).await?;
    let with_log = load(&db, o).await?;
    let t = Instant::now();
    let v = civicast::receipt_log::live::verify_live(&db, None).await?;
    let verify_secs = t.elapsed().as_secs_f64();
    drop_schema(&db).await;
    let verify_ok = v.ok() && v.valid == with_log.receipts;
    Ok(LogReport {
        with_log,
        without_log,
        verify_secs,
        verify_ok,
    })
}

pub fn print_receipt_log(o: &LogOptions, r: &LogReport) {
    let rate = |run: &LogRun| run.receipts as f64 / run.secs.max(1e-9);
    let (w, wo) = (rate(&r.with_log), rate(&r.without_log));
    println!(
        "receipt log: {} displays, {} rounds, batches of {}, feeds of {}",
        o.displays, o.rounds, o.batch, o.feed_size
    );
    println!(
        "  without the log: {:>10.0} receipts/s ({} receipts)",
        wo, r.without_log.receipts
    );
    println!(
        "  with the log:    {:>10.0} receipts/s ({} receipts, {} leaves)",
        w, r.with_log.receipts, r.with_log.leaves
    );
    println!("  ingest rate with / without: {:.3}", w / wo.max(1e-9));
    println!(
        "  log storage: {} bytes, {:.2} bytes per receipt",
        r.with_log.log_bytes,
        r.with_log.log_bytes as f64 / r.with_log.receipts.max(1) as f64
    );
    println!(
        "  audit verify: {:.2} s, {}",
        r.verify_secs,
        if r.verify_ok { "clean" } else { "PROBLEMS" }
    );
}
