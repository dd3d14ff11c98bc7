//! `bench audit|storage --database postgres://...`: the synthetic year of `load_sqlite`
//! (same plays, same receipts, same rollup) written into a fresh PostgreSQL schema
//! (`civicast_bench_audit`, dropped and recreated each run, left for inspection), then the
//! closed days packed (`PgStore::compact_receipts`), then the storage and the audit queries.
//!
//! Receipts are generated inside PostgreSQL (`INSERT ... SELECT` over plays x memberships,
//! one statement per day, in arrival order: by play, then display); the hourly rollup is
//! summed in Rust from the plays alone, as for SQLite, and sent by COPY.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{Connection, Row};

use super::{
    day_string, device_name, met, offset_ms, receipt_hash, status_of, synth_plays, AuditReport,
    LoadOptions, Rate, RollKey, HASH_SQL, MISSING_PCT,
};
use crate::core::audit::PlaysRow;
use crate::store::{PgStore, Store};

const MS_PER_DAY: i64 = 86_400_000;
/// Rows per COPY of the hourly rollup.
const COPY_ROWS: usize = 50_000;

#[derive(Debug, Clone, Default)]
pub struct PgLoadReport {
    pub schema: String,
    pub receipts: i64,
    pub rollup_rows: i64,
    pub plays: i64,
    pub displays: u64,
    pub receipts_load: Rate,
    pub rollup_load: Rate,
    /// Bytes of the receipt partitions (tables, indexes, TOAST) after the load, before
    /// packing: one row per receipt.
    pub raw_bytes: i64,
    /// Receipts packed, and how long it took.
    pub compaction: Rate,
    pub days_packed: usize,
    pub left_raw: u64,
}

/// Writes the synthetic history into the fresh schema `schema` of the database at `url`,
/// then packs every day of it.
pub async fn load_pg(
    url: &str,
    schema: &str,
    o: &LoadOptions,
) -> anyhow::Result<(PgStore, PgLoadReport)> {
    {
        let mut c = sqlx::PgConnection::connect(url)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut c)
            .await?;
        c.close().await?;
    }
    let store = PgStore::connect_schema(url, schema).await?;
    store.migrate().await?;
    let plays = synth_plays(o);
    let start = o.end.timestamp_millis() - o.days * MS_PER_DAY;
    let first_day = start.div_euclid(MS_PER_DAY);
    let last_day = plays
        .last()
        .map_or(first_day, |p| p.issued.div_euclid(MS_PER_DAY));
    eprintln!(
        "load (PostgreSQL schema {schema}): {} displays, {} feeds, {} plays over {} days, about {} receipts...",
        o.displays,
        o.feeds,
        plays.len(),
        o.days,
        o.receipts
    );
    // A partition per day, a few weeks per transaction (each takes locks on the parent,
    // its table and its indexes; one transaction for a year would exhaust the lock table).
    let mut d = first_day;
    while d <= last_day {
        let n = (last_day - d).min(29);
        store.ensure_partitions(d, n as u32).await?;
        d += n + 1;
    }
    let mut c = store.pool().acquire().await?;
    // A bulk load: nothing is lost to a crash that the bench would not redo anyway.
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut *c)
        .await?;
    {
        let mut tx = c.begin().await?;
        let feeds: Vec<i64> = (1..=o.feeds as i64).collect();
        let feed_names: Vec<String> = feeds.iter().map(|f| format!("feed-{f:02}")).collect();
        sqlx::query(
            "INSERT INTO feeds (id, name) OVERRIDING SYSTEM VALUE
             SELECT * FROM UNNEST($1::bigint[], $2::text[])",
        )
        .bind(&feeds)
        .bind(&feed_names)
        .execute(&mut *tx)
        .await?;
        let slogans: Vec<i64> = (1..=o.slogans as i64).collect();
        let slogan_names: Vec<String> = slogans.iter().map(|s| format!("slogan-{s:02}")).collect();
        sqlx::query(
            "INSERT INTO slogans (id, adset, rev, slogan) OVERRIDING SYSTEM VALUE
             SELECT id, 'civility', 1, slogan FROM UNNEST($1::bigint[], $2::text[]) AS u(id, slogan)",
        )
        .bind(&slogans)
        .bind(&slogan_names)
        .execute(&mut *tx)
        .await?;
        let classes = ["bus_led", "taxi_top", "stop_lcd"];
        let ids: Vec<i64> = (1..=o.displays as i64).collect();
        for chunk in ids.chunks(10_000) {
            let names: Vec<String> = chunk.iter().map(|d| device_name(*d as usize)).collect();
            let class: Vec<&str> = chunk.iter().map(|d| classes[(*d % 3) as usize]).collect();
            let feed: Vec<i64> = chunk
                .iter()
                .map(|d| (*d - 1) % o.feeds as i64 + 1)
                .collect();
            sqlx::query(
                "INSERT INTO devices (id, name, class) OVERRIDING SYSTEM VALUE
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[])",
            )
            .bind(chunk)
            .bind(&names)
            .bind(&class)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO memberships (device, feed, since)
                 SELECT device, feed, $3 FROM UNNEST($1::bigint[], $2::bigint[]) AS u(device, feed)",
            )
            .bind(chunk)
            .bind(&feed)
            .bind(start - MS_PER_DAY)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in plays.chunks(10_000) {
            let id: Vec<i64> = chunk.iter().map(|p| p.id).collect();
            let play_id: Vec<String> = chunk
                .iter()
                .map(|p| ulid::Ulid::from_parts(p.issued as u64, p.id as u128).to_string())
                .collect();
            let feed: Vec<i64> = chunk.iter().map(|p| p.feed).collect();
            let slogan: Vec<i64> = chunk.iter().map(|p| p.slogan).collect();
            let issued: Vec<i64> = chunk.iter().map(|p| p.issued).collect();
            sqlx::query(
                "INSERT INTO plays (id, play_id, feed, device, slogan, issued_at, expires_at, members)
                 OVERRIDING SYSTEM VALUE
                 SELECT id, play_id, feed, NULL, slogan, issued, issued + 180000, $6
                 FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
                      AS u(id, play_id, feed, slogan, issued)",
            )
            .bind(&id)
            .bind(&play_id)
            .bind(&feed)
            .bind(&slogan)
            .bind(&issued)
            .bind((o.displays / o.feeds) as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }

    // Receipts, one statement per day, in the order a live daemon writes them.
    let t0 = Instant::now();
    let mut last_print = Instant::now();
    let sql = format!(
        "INSERT INTO receipts (device, play, started_at, duration_ms, play_day, status)
         SELECT m.device, p.id, p.issued_at + (m.device % 30) * 1000, 15000,
                (p.issued_at / {MS_PER_DAY})::integer,
                (CASE WHEN {HASH_SQL} < 2 THEN 1 WHEN {HASH_SQL} = 2 THEN 3 ELSE 0 END)::smallint
         FROM plays p JOIN memberships m ON m.feed = p.feed
         WHERE p.issued_at >= $1 AND p.issued_at < $2 AND {HASH_SQL} < {}
         ORDER BY p.id, m.device",
        100 - MISSING_PCT
    );
    for day in first_day..=last_day {
        sqlx::query(&sql)
            .bind(day * MS_PER_DAY)
            .bind((day + 1) * MS_PER_DAY)
            .execute(&mut *c)
            .await
            .context("generating receipts")?;
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "load: receipts up to {} ({:.0} s)",
                day_string(day),
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
    }
    let receipts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM receipts")
        .fetch_one(&mut *c)
        .await?;
    let receipts_load = Rate {
        count: receipts as u64,
        secs: t0.elapsed().as_secs_f64(),
    };
    eprintln!(
        "load: {receipts} receipts in {:.1} s; the hourly rollup...",
        receipts_load.secs
    );

    // The rollup, summed from the plays alone (the same loop as load_sqlite), by COPY.
    let t1 = Instant::now();
    let per_feed: Vec<Vec<i64>> = (1..=o.feeds as i64)
        .map(|f| {
            (1..=o.displays as i64)
                .filter(|d| (d - 1) % o.feeds as i64 + 1 == f)
                .collect()
        })
        .collect();
    let mut pending: BTreeMap<RollKey, i64> = BTreeMap::new();
    let mut out: Vec<(RollKey, i64)> = Vec::with_capacity(COPY_ROWS + 40_000);
    let mut rollup_rows = 0i64;
    for (i, p) in plays.iter().enumerate() {
        let hour_now = p.issued.div_euclid(3_600_000);
        let last = i + 1 == plays.len();
        for &d in &per_feed[(p.feed - 1) as usize] {
            let h = receipt_hash(d, p.id);
            if h >= 100 - MISSING_PCT {
                continue;
            }
            let started = p.issued + offset_ms(d);
            *pending
                .entry((
                    started.div_euclid(3_600_000),
                    d,
                    p.slogan,
                    p.feed,
                    status_of(h),
                ))
                .or_default() += 1;
        }
        // Receipts start at or after their play: hours before this play's are complete.
        let next_hour = plays.get(i + 1).map(|n| n.issued.div_euclid(3_600_000));
        if last || next_hour != Some(hour_now) {
            let keep = if last {
                BTreeMap::new()
            } else {
                pending.split_off(&(next_hour.unwrap_or(i64::MAX), 0, 0, 0, 0))
            };
            out.extend(std::mem::replace(&mut pending, keep));
        }
        if out.len() >= COPY_ROWS || (last && !out.is_empty()) {
            let mut text = String::with_capacity(out.len() * 40);
            for ((h, d, s, f, st), n) in &out {
                text.push_str(&format!("{h}\t{d}\t{s}\t{f}\t{st}\t{n}\n"));
            }
            let mut copy = c
                .copy_in_raw(
                    "COPY rollup_hourly (hour, device, slogan, feed, status, plays) FROM STDIN",
                )
                .await?;
            copy.send(text.into_bytes()).await?;
            copy.finish().await?;
            rollup_rows += out.len() as i64;
            out.clear();
        }
    }
    let rollup_load = Rate {
        count: rollup_rows as u64,
        secs: t1.elapsed().as_secs_f64(),
    };
    sqlx::query("ANALYZE").execute(&mut *c).await?;
    let raw_bytes = partition_bytes(&store).await?;
    eprintln!(
        "load: rollup {rollup_rows} rows in {:.1} s; packing {} days...",
        rollup_load.secs,
        last_day - first_day + 1
    );
    let t2 = Instant::now();
    let packed = store.compact_receipts(last_day + 1).await?;
    let compaction = Rate {
        count: packed.receipts,
        secs: t2.elapsed().as_secs_f64(),
    };
    sqlx::query("VACUUM ANALYZE receipts_packed")
        .execute(&mut *c)
        .await?;
    Ok((
        store,
        PgLoadReport {
            schema: schema.to_owned(),
            receipts,
            rollup_rows,
            plays: plays.len() as i64,
            displays: o.displays,
            receipts_load,
            rollup_load,
            raw_bytes,
            compaction,
            days_packed: packed.days,
            left_raw: packed.left_raw,
        },
    ))
}

/// Bytes of every `receipts` partition: tables, indexes, TOAST.
async fn partition_bytes(store: &PgStore) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(pg_total_relation_size(i.inhrelid)), 0) AS BIGINT)
         FROM pg_inherits i WHERE i.inhparent = 'receipts'::regclass",
    )
    .fetch_one(store.pool())
    .await?)
}

async fn relation_bytes(store: &PgStore, name: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT pg_total_relation_size(to_regclass($1))")
            .bind(name)
            .fetch_one(store.pool())
            .await?,
    )
}

pub fn print_pg_load(l: &PgLoadReport) {
    println!();
    println!(
        "load (PostgreSQL schema {}): {} receipts from {} plays to {} displays: receipts {:.1} s ({:.0}/s, generated in PostgreSQL); rollup {} rows {:.1} s ({:.0}/s, COPY); packed {} days, {} receipts in {:.1} s ({:.0}/s), {} left raw",
        l.schema,
        l.receipts,
        l.plays,
        l.displays,
        l.receipts_load.secs,
        l.receipts_load.per_sec(),
        l.rollup_rows,
        l.rollup_load.secs,
        l.rollup_load.per_sec(),
        l.days_packed,
        l.compaction.count,
        l.compaction.secs,
        l.compaction.per_sec(),
        l.left_raw
    );
}

#[derive(Debug, Clone, Default)]
pub struct PgStorageReport {
    pub receipts: i64,
    /// Rows readable through `receipts_all` after packing (must equal `receipts`).
    pub readable: i64,
    /// After packing: raw partitions (emptied, their indexes' metapages remain).
    pub partitions_bytes: i64,
    /// After packing: `receipts_packed` with its indexes and TOAST, and the day list.
    pub packed_bytes: i64,
    /// Before packing: one row per receipt in the partitions.
    pub raw_bytes: i64,
    pub rollup_bytes: i64,
    /// The same rows (a sample) in a plain heap table without any key: PostgreSQL's floor
    /// for one row per receipt.
    pub heap_bytes_per_row: f64,
    pub heap_sample: i64,
}

impl PgStorageReport {
    /// Everything receipts take on disk after packing, per receipt.
    pub fn per_receipt(&self) -> f64 {
        (self.partitions_bytes + self.packed_bytes) as f64 / self.receipts.max(1) as f64
    }
}

pub async fn storage_pg(store: &PgStore, l: &PgLoadReport) -> anyhow::Result<PgStorageReport> {
    let readable: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM receipts_all")
        .fetch_one(store.pool())
        .await?;
    let partitions_bytes = partition_bytes(store).await?;
    let packed_bytes = relation_bytes(store, "receipts_packed").await?
        + relation_bytes(store, "receipts_packed_days").await?;
    let rollup_bytes = relation_bytes(store, "rollup_hourly").await?;
    let sample = l.receipts.min(2_000_000);
    sqlx::query("DROP TABLE IF EXISTS bench_heap")
        .execute(store.pool())
        .await?;
    sqlx::query(
        "CREATE TABLE bench_heap AS
         SELECT device, play, started_at, duration_ms, play_day, status FROM receipts_all LIMIT $1",
    )
    .bind(sample)
    .execute(store.pool())
    .await?;
    let heap = relation_bytes(store, "bench_heap").await?;
    sqlx::query("DROP TABLE bench_heap")
        .execute(store.pool())
        .await?;
    Ok(PgStorageReport {
        receipts: l.receipts,
        readable,
        partitions_bytes,
        packed_bytes,
        raw_bytes: l.raw_bytes,
        rollup_bytes,
        heap_bytes_per_row: heap as f64 / sample.max(1) as f64,
        heap_sample: sample,
    })
}

pub fn print_pg_storage(s: &PgStorageReport) {
    let per = |b: i64| b as f64 / s.receipts.max(1) as f64;
    println!();
    println!(
        "storage (PostgreSQL): {} receipts ({} readable after packing), pg_total_relation_size",
        s.receipts, s.readable
    );
    println!("| on disk | bytes | bytes per receipt |");
    println!("|---|---:|---:|");
    println!(
        "| receipts after packing: packed rows (table, indexes, TOAST) + emptied day partitions | {} + {} | {:.1} |",
        s.packed_bytes,
        s.partitions_bytes,
        s.per_receipt()
    );
    println!(
        "| before packing: day partitions, one row per receipt (table, primary key, BRIN) | {} | {:.1} |",
        s.raw_bytes,
        per(s.raw_bytes)
    );
    println!(
        "| baseline: same columns, plain heap, no key ({} rows) | | {:.1} |",
        s.heap_sample, s.heap_bytes_per_row
    );
    println!(
        "| rollup_hourly | {} | {:.1} |",
        s.rollup_bytes,
        per(s.rollup_bytes)
    );
    println!(
        "target: <= 40 bytes per receipt (receipt storage and indexes): {} ({:.1}; {:.2} x the keyless heap; {:.2} x one row per receipt)",
        met(s.per_receipt() <= 40.0),
        s.per_receipt(),
        s.per_receipt() / s.heap_bytes_per_row.max(f64::MIN_POSITIVE),
        s.per_receipt() / per(s.raw_bytes).max(f64::MIN_POSITIVE)
    );
}

/// The naive answer on PostgreSQL: GROUP BY over every receipt, raw and packed, through
/// the `receipts_all` view (its packed branch unnests every packed row: the view cannot
/// skip rows by time).
async fn naive_pg(
    store: &PgStore,
    by: &str,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<Vec<PlaysRow>> {
    let sql = match by {
        "slogan,day" => {
            "SELECT s.slogan, (r.started_at + 28800000) / 86400000 AS day, COUNT(*) AS n
             FROM receipts_all r JOIN plays p ON p.id = r.play JOIN slogans s ON s.id = p.slogan
             WHERE r.status = 0 AND r.started_at >= $1 AND r.started_at < $2
             GROUP BY s.slogan, day"
        }
        _ => {
            "SELECT d.name, COUNT(*) AS n FROM receipts_all r JOIN devices d ON d.id = r.device
             WHERE r.status = 0 AND r.started_at >= $1 AND r.started_at < $2 GROUP BY d.name"
        }
    };
    let rows = sqlx::query(sql)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(store.pool())
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut values = vec![r.try_get::<String, _>(0)?];
        if by == "slogan,day" {
            values.push(day_string(r.try_get::<i64, _>(1)?));
        }
        out.push(PlaysRow {
            values,
            plays: r.try_get("n")?,
        });
    }
    out.sort_by(|a, b| a.values.cmp(&b.values));
    Ok(out)
}

/// The audit queries through the store (the rollups), beside the naive GROUP BY over
/// `receipts_all`, as `audit` does on SQLite.
pub async fn audit_pg(
    store: &PgStore,
    o: &LoadOptions,
    runs: usize,
    naive_runs: usize,
) -> anyhow::Result<AuditReport> {
    let tz = chrono_tz::Asia::Shanghai;
    let end = o.end.with_timezone(&tz);
    let mut report = AuditReport {
        receipts: sqlx::query_scalar("SELECT COUNT(*) FROM receipts_all")
            .fetch_one(store.pool())
            .await?,
        ..Default::default()
    };
    let t = Instant::now();
    store
        .commit_batch(&crate::store::Batch {
            utc_offset_h: crate::core::audit::fixed_offset_hours(tz),
            ..Default::default()
        })
        .await?;
    sqlx::query("ANALYZE rollup_daily_slogan")
        .execute(store.pool())
        .await?;
    sqlx::query("ANALYZE rollup_daily_device")
        .execute(store.pool())
        .await?;
    eprintln!(
        "audit: daily rollups backfilled from the hourly one in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    report.queries = super::play_count_queries(store, end, tz, runs, naive_runs, |by, from, to| {
        Box::pin(naive_pg(store, by, from, to))
    })
    .await?;
    Ok(report)
}

/// `bench audit|storage --database postgres://...`.
pub(super) async fn run(a: &super::BenchArgs, url: &str) -> anyhow::Result<std::process::ExitCode> {
    let o = LoadOptions {
        receipts: a.receipts.unwrap_or(1_000_000),
        displays: a.displays.first().copied().unwrap_or(3_000).max(1),
        ..LoadOptions::default()
    };
    let (store, load) = load_pg(url, "civicast_bench_audit", &o).await?;
    print_pg_load(&load);
    let s = storage_pg(&store, &load).await?;
    print_pg_storage(&s);
    let mut ok = s.readable == load.receipts;
    if a.scenario == super::Scenario::Audit {
        let r = audit_pg(&store, &o, a.runs.max(1), a.naive_runs.max(1)).await?;
        super::print_audit(&r);
        ok &= r.queries.iter().all(|q| q.identical);
    }
    Ok(super::exit(ok))
}
