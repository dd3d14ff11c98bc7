//! The audit and storage scenarios on PostgreSQL (`--database postgres://...`): the
//! synthetic year of the SQLite runs loaded into a fresh schema (`civicast_bench_audit`,
//! dropped and recreated each run, left for inspection) and packed by `load::load_pg`,
//! then its storage (packed rows beside one row per receipt and a keyless heap) and the
//! play-count questions (`plays`) through the store beside the naive GROUP BY over
//! `receipts_all`.
//!
//! Owns: the PostgreSQL readings and naive queries, its scratch table `bench_heap`. Must not
//! touch: a schema other than the one the load created.

use civicast::core::audit::{PlaysQuery, PlaysRow};
use civicast::store::PgStore;

use crate::audit::AuditReport;
use crate::load::PgLoadReport;
use crate::plays::{bind_all, naive_answer, naive_sql, play_count_queries, POSTGRES};
use crate::report::met;
use crate::storage::{partition_bytes, pg_tables, print_tables, relation_bytes, TableBytes};
use crate::synth::LoadOptions;

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
    /// Every table of the schema (indexes, TOAST, partitions), after packing.
    pub tables: Vec<TableBytes>,
    /// `pg_total_relation_size` summed over every table of the schema, partitions included.
    pub tables_bytes: i64,
}

impl PgStorageReport {
    /// Everything receipts take on disk after packing, per receipt.
    pub fn per_receipt(&self) -> f64 {
        (self.partitions_bytes + self.packed_bytes) as f64 / self.receipts.max(1) as f64
    }

    /// The whole schema after packing, per receipt.
    pub fn whole_per_receipt(&self) -> f64 {
        self.tables_bytes as f64 / self.receipts.max(1) as f64
    }
}

pub async fn storage_pg(store: &PgStore, l: &PgLoadReport) -> anyhow::Result<PgStorageReport> {
    let readable: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM receipts_all")
        .fetch_one(store.pool())
        .await?;
    let partitions_bytes = partition_bytes(store).await?;
    let packed_bytes = relation_bytes(store, "receipts_packed").await?
        + relation_bytes(store, "receipts_packed_days").await?;
    let mut rollup_bytes = 0;
    for t in crate::storage::ROLLUPS {
        rollup_bytes += relation_bytes(store, t).await?;
    }
    // Read before `bench_heap` exists: the scratch table is not the store's.
    let (tables, tables_bytes) = pg_tables(store).await?;
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
        tables,
        tables_bytes,
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
        "| rollups ({}) | {} | {:.1} |",
        crate::storage::ROLLUPS.join(", "),
        s.rollup_bytes,
        per(s.rollup_bytes)
    );
    println!();
    print_tables(
        &s.tables,
        s.tables_bytes,
        "whole database: every table of the schema (pg_total_relation_size)",
        s.receipts,
    );
    println!(
        "target: <= 40 bytes per receipt (whole database): {} ({:.1}; receipt storage and indexes alone {:.1}, {}; {:.2} x the keyless heap; {:.2} x one row per receipt)",
        met(s.whole_per_receipt() <= 40.0),
        s.whole_per_receipt(),
        s.per_receipt(),
        met(s.per_receipt() <= 40.0),
        s.per_receipt() / s.heap_bytes_per_row.max(f64::MIN_POSITIVE),
        s.per_receipt() / per(s.raw_bytes).max(f64::MIN_POSITIVE)
    );
}

/// The naive answer on PostgreSQL: [`naive_sql`] over every receipt, raw and packed,
/// through the `receipts_all` view.
async fn naive_pg(store: &PgStore, q: PlaysQuery) -> anyhow::Result<Vec<PlaysRow>> {
    let (sql, binds) = naive_sql(&q, &POSTGRES);
    let rows = bind_all(sqlx::query(&sql), binds)
        .fetch_all(store.pool())
        .await?;
    naive_answer(&q, rows)
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
    let mut report = AuditReport {
        receipts: sqlx::query_scalar("SELECT COUNT(*) FROM receipts_all")
            .fetch_one(store.pool())
            .await?,
        ..Default::default()
    };
    sqlx::query("ANALYZE").execute(store.pool()).await?;
    report.queries = play_count_queries(store, o, tz, runs, naive_runs, |q| {
        Box::pin(naive_pg(store, q))
    })
    .await?;
    Ok(report)
}
