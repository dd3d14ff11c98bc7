//! The storage scenario: bytes per receipt on disk after the synthetic year's load, beside
//! a plain heap table holding a sample of the same rows (SQLite's floor); the size readings
//! the other scenarios share (`dbstat`, pages in use, PostgreSQL relation sizes).
//!
//! Owns: reading sizes and its own scratch table `bench_heap`. Must not touch: the store's
//! rows (it only reads them, and copies a sample into `bench_heap`).

use civicast::store::{PgStore, SqliteStore};

use crate::load::{exec, LoadReport};
use crate::report::met;

/// `SUM(pgsize)` from the `dbstat` virtual table, when SQLite was built with it.
pub(crate) async fn dbstat(pool: &sqlx::SqlitePool, name: &str) -> Option<i64> {
    sqlx::query_scalar::<_, Option<i64>>("SELECT SUM(pgsize) FROM dbstat WHERE name = ?")
        .bind(name)
        .fetch_one(pool)
        .await
        .ok()
        .flatten()
}

/// Pages in use (page_count - freelist_count) times the page size.
pub(crate) async fn used_bytes(pool: &sqlx::SqlitePool) -> anyhow::Result<i64> {
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(pool)
        .await?;
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(pool)
        .await?;
    let size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(pool)
        .await?;
    Ok((pages - free) * size)
}

#[derive(Debug, Clone, Default)]
pub struct StorageReport {
    pub receipts: i64,
    /// From `dbstat` when available, else from page counts around the load.
    pub receipts_bytes: i64,
    pub rollup_bytes: i64,
    pub file_bytes: i64,
    pub source: &'static str,
    /// The same rows (a sample) in a plain rowid table without any key: SQLite's floor.
    pub heap_bytes_per_row: f64,
    pub heap_sample: i64,
}

impl StorageReport {
    pub fn per_receipt(&self) -> f64 {
        self.receipts_bytes as f64 / self.receipts.max(1) as f64
    }
}

/// Bytes per receipt after the load, beside a heap table holding a sample of the same rows.
pub async fn storage(store: &SqliteStore, l: &LoadReport) -> anyhow::Result<StorageReport> {
    let pool = store.pool();
    let (receipts_bytes, rollup_bytes, source) = match (
        dbstat(pool, "receipts").await,
        dbstat(pool, "rollup_hourly").await,
    ) {
        (Some(r), Some(u)) => (r, u, "dbstat"),
        _ => (
            l.used_after_receipts - l.used_before,
            l.used_after_rollup - l.used_after_receipts,
            "page_count deltas",
        ),
    };
    let file_bytes = used_bytes(pool).await?;
    // The floor: the same columns in a rowid table without a key.
    let sample = l.receipts.min(2_000_000);
    exec(pool, "DROP TABLE IF EXISTS bench_heap").await?;
    exec(
        pool,
        "CREATE TABLE bench_heap (device INTEGER, play INTEGER, started_at INTEGER, duration_ms INTEGER, status INTEGER)",
    )
    .await?;
    let before = used_bytes(pool).await?;
    sqlx::query("INSERT INTO bench_heap SELECT device, play, started_at, duration_ms, status FROM receipts LIMIT ?")
        .bind(sample)
        .execute(pool)
        .await?;
    let heap = dbstat(pool, "bench_heap").await;
    let heap = match heap {
        Some(h) => h,
        None => used_bytes(pool).await? - before,
    };
    exec(pool, "DROP TABLE bench_heap").await?;
    Ok(StorageReport {
        receipts: l.receipts,
        receipts_bytes,
        rollup_bytes,
        file_bytes,
        source,
        heap_bytes_per_row: heap as f64 / sample.max(1) as f64,
        heap_sample: sample,
    })
}

pub fn print_storage(s: &StorageReport) {
    let per = |b: i64| b as f64 / s.receipts.max(1) as f64;
    println!();
    println!("storage: {} receipts, sizes from {}", s.receipts, s.source);
    println!("| on disk | bytes | bytes per receipt |");
    println!("|---|---:|---:|");
    println!(
        "| receipts (WITHOUT ROWID, key device+play: table = index) | {} | {:.1} |",
        s.receipts_bytes,
        per(s.receipts_bytes)
    );
    println!(
        "| baseline: same columns, rowid heap, no key ({} rows) | | {:.1} |",
        s.heap_sample, s.heap_bytes_per_row
    );
    println!(
        "| rollup_hourly | {} | {:.1} |",
        s.rollup_bytes,
        per(s.rollup_bytes)
    );
    println!(
        "| whole file in use | {} | {:.1} |",
        s.file_bytes,
        per(s.file_bytes)
    );
    println!(
        "target: <= 40 bytes per receipt (receipts table and indexes): {} ({:.1}; {:.2} x the keyless heap)",
        met(s.per_receipt() <= 40.0),
        s.per_receipt(),
        s.per_receipt() / s.heap_bytes_per_row.max(f64::MIN_POSITIVE)
    );
}

/// Bytes of every `receipts` partition: tables, indexes, TOAST.
pub(crate) async fn partition_bytes(store: &PgStore) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(pg_total_relation_size(i.inhrelid)), 0) AS BIGINT)
         FROM pg_inherits i WHERE i.inhparent = 'receipts'::regclass",
    )
    .fetch_one(store.pool())
    .await?)
}

pub(crate) async fn relation_bytes(store: &PgStore, name: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT pg_total_relation_size(to_regclass($1))")
            .bind(name)
            .fetch_one(store.pool())
            .await?,
    )
}
