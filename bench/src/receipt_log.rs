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
use civicast::store::{
    Batch, Db, DeviceRow, Keys, NewPlay, PgStore, ReceiptRow, SqliteStore, Store,
};

pub struct LogOptions {
    pub displays: usize,
    pub rounds: usize,
    pub batch: usize,
    pub feed_size: usize,
    /// Only the logged database, kept for a separate `civicast audit verify`.
    pub load_only: bool,
}

#[derive(Debug, Default)]
pub struct LogRun {
    pub receipts: u64,
    pub secs: f64,
    pub log_bytes: i64,
    pub leaves: u64,
    /// Each `log_*` table and index with its bytes.
    pub log_tables: Vec<(String, i64)>,
}

#[derive(Debug)]
pub struct LogReport {
    pub with_log: LogRun,
    pub without_log: LogRun,
    /// None when the scenario only loaded.
    pub verify_secs: Option<f64>,
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

/// One database of the scenario, with what its rounds need.
struct Side {
    db: Db,
    keys: Keys,
    slogan: i64,
    run: LogRun,
}

/// The displays (feeds of `feed_size`) and their feeds' names.
fn inventory(o: &LogOptions) -> (Vec<DeviceRow>, Vec<String>) {
    let feeds = o.displays.div_ceil(o.feed_size.max(1));
    let feed_names: Vec<String> = (0..feeds).map(|f| format!("feed-{f}")).collect();
    let devices = (0..o.displays)
        .map(|i| DeviceRow {
            name: format!("bus-{i:07}"),
            class: "bus_led".into(),
            feeds: vec![feed_names[i / o.feed_size.max(1)].clone()],
        })
        .collect();
    (devices, feed_names)
}

const T0: i64 = 1_764_547_200_000;

async fn prepare(db: Db, devices: &[DeviceRow], feed_names: &[String]) -> anyhow::Result<Side> {
    let keys = db.sync_inventory(devices, feed_names, T0).await?;
    let slogan = db.slogan_key("bench", 1, "s").await?;
    Ok(Side {
        db,
        keys,
        slogan,
        run: LogRun::default(),
    })
}

/// One round: every display answers its feed's play, in batches carrying their names as
/// the ingest worker gathers them; only the commits (and the batches' making) are timed.
async fn round(
    side: &mut Side,
    o: &LogOptions,
    round: usize,
    devices: &[DeviceRow],
    feed_names: &[String],
) -> anyhow::Result<()> {
    let issued = T0 + round as i64 * 180_000;
    let mut plays = Vec::with_capacity(feed_names.len());
    for (f, name) in feed_names.iter().enumerate() {
        let p = NewPlay {
            play_id: format!("r{round}-f{f}"),
            feed: Some(side.keys.feeds[name]),
            device: None,
            slogan: side.slogan,
            issued_ms: issued,
            expires_ms: issued + 180_000,
            members: o.feed_size as i64,
        };
        let key = side.db.record_play(&p, None).await?;
        plays.push((key, side.keys.feeds[name], p.play_id));
    }
    let receipts: Vec<(ReceiptRow, &str, &str)> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (play, feed, play_id) = &plays[i / o.feed_size.max(1)];
            let row = ReceiptRow {
                device: side.keys.devices[&d.name],
                play: *play,
                started_ms: issued + 1_000 + (i % 2_000) as i64,
                duration_ms: 15_000,
                status: Status::Played,
                slogan: side.slogan,
                feed: *feed,
            };
            (row, d.name.as_str(), play_id.as_str())
        })
        .collect();
    let t = Instant::now();
    for chunk in receipts.chunks(o.batch.max(1)) {
        let mut batch = Batch {
            receipts: Vec::with_capacity(chunk.len()),
            ..Batch::default()
        };
        for (r, device, play_id) in chunk {
            batch.names.note(r.device, device, r.play, play_id);
            batch.receipts.push(r.clone());
        }
        let out = side.db.commit_batch(&batch).await?;
        side.run.receipts += out.stored as u64;
    }
    side.run.secs += t.elapsed().as_secs_f64();
    Ok(())
}

async fn finish(side: &mut Side) -> anyhow::Result<()> {
    side.run.leaves = side.db.log_head().await?.size;
    side.run.log_tables = log_tables(&side.db).await?;
    side.run.log_bytes = side.run.log_tables.iter().map(|(_, b)| b).sum();
    Ok(())
}

/// Every `log_*` table and each of its indexes, by name, with its bytes.
async fn log_tables(db: &Db) -> anyhow::Result<Vec<(String, i64)>> {
    Ok(match db {
        Db::Sqlite(s) => {
            sqlx::query_as(
                "SELECT d.name, CAST(SUM(d.pgsize) AS INTEGER) FROM dbstat d
                 JOIN sqlite_schema o ON o.name = d.name
                 WHERE o.tbl_name LIKE 'log\\_%' ESCAPE '\\' GROUP BY d.name ORDER BY d.name",
            )
            .fetch_all(s.pool())
            .await?
        }
        Db::Postgres(s) => {
            // A table's own size counts its TOAST and free-space maps; its indexes apart.
            sqlx::query_as(
                "SELECT c.relname::text, pg_table_size(c.oid) FROM pg_class c
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relkind = 'r' AND c.relname LIKE 'log\\_%' AND n.nspname = current_schema()
                 UNION ALL
                 SELECT i.relname::text, pg_relation_size(i.oid) FROM pg_index x
                 JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE c.relname LIKE 'log\\_%' AND n.nspname = current_schema()
                 ORDER BY 1",
            )
            .fetch_all(s.pool())
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

/// Runs both loads round by round, interleaved (the baseline first in even rounds, the
/// log first in odd ones), so that the shared machine's load shifts weigh on both alike;
/// then `audit verify` over the logged one.
pub async fn receipt_log(
    dir: &Path,
    pg: Option<&str>,
    o: &LogOptions,
) -> anyhow::Result<LogReport> {
    let (devices, feed_names) = inventory(o);
    let mut with = prepare(open(dir, "with", pg, true).await?, &devices, &feed_names).await?;
    if o.load_only {
        for r in 0..o.rounds {
            round(&mut with, o, r, &devices, &feed_names).await?;
        }
        finish(&mut with).await?;
        return Ok(LogReport {
            with_log: with.run,
            without_log: LogRun::default(),
            verify_secs: None,
            verify_ok: true,
        });
    }
    let mut base = prepare(
        open(dir, "without", pg, false).await?,
        &devices,
        &feed_names,
    )
    .await?;
    for r in 0..o.rounds {
        let (first, second) = if r % 2 == 0 {
            (&mut base, &mut with)
        } else {
            (&mut with, &mut base)
        };
        round(first, o, r, &devices, &feed_names).await?;
        round(second, o, r, &devices, &feed_names).await?;
    }
    finish(&mut base).await?;
    finish(&mut with).await?;
    drop_schema(&base.db).await;
    let t = Instant::now();
    let v = civicast::receipt_log::live::verify_live(&with.db, None).await?;
    let verify_secs = Some(t.elapsed().as_secs_f64());
    drop_schema(&with.db).await;
    let verify_ok = v.ok() && v.valid == with.run.receipts;
    Ok(LogReport {
        with_log: with.run,
        without_log: base.run,
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
    if !o.load_only {
        println!(
            "  without the log: {:>10.0} receipts/s ({} receipts)",
            wo, r.without_log.receipts
        );
    }
    println!(
        "  with the log:    {:>10.0} receipts/s ({} receipts, {} leaves)",
        w, r.with_log.receipts, r.with_log.leaves
    );
    if !o.load_only {
        println!("  ingest rate with / without: {:.3}", w / wo.max(1e-9));
    }
    println!(
        "  log storage: {} bytes, {:.2} bytes per receipt",
        r.with_log.log_bytes,
        r.with_log.log_bytes as f64 / r.with_log.receipts.max(1) as f64
    );
    for (name, bytes) in &r.with_log.log_tables {
        println!(
            "    {name}: {bytes} bytes, {:.3} per receipt",
            *bytes as f64 / r.with_log.receipts.max(1) as f64
        );
    }
    match r.verify_secs {
        Some(secs) => println!(
            "  audit verify: {secs:.2} s, {}",
            if r.verify_ok { "clean" } else { "PROBLEMS" }
        ),
        None => println!("  loaded only: `civicast audit verify` it on its own"),
    }
}
