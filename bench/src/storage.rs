//! The storage scenario: bytes per receipt on disk after the synthetic year's load, beside
//! a plain heap table holding a sample of the same rows (SQLite's floor), and every table of
//! the schema with its indexes, listed from the database itself, with the whole file; the
//! size readings the other scenarios share (`dbstat`, pages in use, PostgreSQL relation
//! sizes).
//!
//! Owns: reading sizes and its own scratch table `bench_heap`. Must not touch: the store's
//! rows (it only reads them, and copies a sample into `bench_heap`).

use std::path::Path;

use anyhow::Context;
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

/// The file's pages, its free pages and the page size.
async fn page_counts(pool: &sqlx::SqlitePool) -> anyhow::Result<(i64, i64, i64)> {
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(pool)
        .await?;
    let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
        .fetch_one(pool)
        .await?;
    let size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(pool)
        .await?;
    Ok((pages, free, size))
}

/// Pages in use (page_count - freelist_count) times the page size.
pub(crate) async fn used_bytes(pool: &sqlx::SqlitePool) -> anyhow::Result<i64> {
    let (pages, free, size) = page_counts(pool).await?;
    Ok((pages - free) * size)
}

/// One table of the schema with everything it owns on disk (its indexes; on PostgreSQL its
/// TOAST and, for a partitioned table, every partition).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableBytes {
    pub name: String,
    pub bytes: i64,
}

/// The catalog's own pages (`sqlite_schema`, page 1 onwards), which no table of the schema
/// owns but the file holds.
pub const SQLITE_CATALOG: &str = "sqlite_schema (the catalog itself)";

/// Every table of `sqlite_schema` with its indexes, from `dbstat`, then the catalog's own
/// pages; and the sum of `dbstat` over every b-tree, taken apart from the rows so that the
/// rows can be checked against it. Tables are listed from the schema, not named here, so
/// one added later is counted.
pub(crate) async fn sqlite_tables(
    pool: &sqlx::SqlitePool,
) -> anyhow::Result<(Vec<TableBytes>, i64)> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "WITH d AS (SELECT name, SUM(pgsize) AS bytes FROM dbstat GROUP BY name)
         SELECT t.name, CAST(COALESCE((SELECT SUM(d.bytes) FROM d JOIN sqlite_schema o
                                       ON o.name = d.name WHERE o.tbl_name = t.name), 0) AS INTEGER)
         FROM sqlite_schema t WHERE t.type = 'table' ORDER BY t.name",
    )
    .fetch_all(pool)
    .await?;
    let mut tables: Vec<TableBytes> = rows
        .into_iter()
        .map(|(name, bytes)| TableBytes { name, bytes })
        .collect();
    // dbstat names the catalog's b-tree, which has no row in the catalog.
    let catalog: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(pgsize), 0) AS INTEGER) FROM dbstat
         WHERE name NOT IN (SELECT name FROM sqlite_schema)",
    )
    .fetch_one(pool)
    .await?;
    tables.push(TableBytes {
        name: SQLITE_CATALOG.to_owned(),
        bytes: catalog,
    });
    let total: i64 =
        sqlx::query_scalar("SELECT CAST(COALESCE(SUM(pgsize), 0) AS INTEGER) FROM dbstat")
            .fetch_one(pool)
            .await?;
    Ok((tables, total))
}

/// The whole file after a checkpoint: page_count x page_size, the free pages among them,
/// and what the -wal file still holds.
async fn sqlite_file(pool: &sqlx::SqlitePool, path: &Path) -> anyhow::Result<(i64, i64, i64)> {
    // TRUNCATE so the -wal file's size is what a checkpoint could not move, not a leftover.
    exec(pool, "PRAGMA wal_checkpoint(TRUNCATE)").await?;
    let (pages, free, size) = page_counts(pool).await?;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let wal_bytes = match std::fs::metadata(&wal) {
        Ok(m) => i64::try_from(m.len())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading the size of {wal:?}")),
    };
    Ok((pages * size, free * size, wal_bytes))
}

/// The rollup tables (migrations/*/0008_rollups_by_size.sql, 0014_play_counts.sql).
pub(crate) const ROLLUPS: [&str; 4] = [
    "rollup_hour",
    "rollup_daily_slogan",
    "rollup_daily_device",
    "rollup_play",
];

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
    /// Every table of the schema with its indexes, then the catalog (empty without dbstat).
    pub tables: Vec<TableBytes>,
    /// `SUM(pgsize)` over all of `dbstat`: every b-tree page in use.
    pub tables_bytes: i64,
    /// page_count x page_size after a checkpoint, free pages included.
    pub pages_bytes: i64,
    pub free_bytes: i64,
    /// The -wal file after a checkpoint (0 when absent).
    pub wal_bytes: i64,
}

impl StorageReport {
    /// The receipts table and its indexes, per receipt.
    pub fn per_receipt(&self) -> f64 {
        self.receipts_bytes as f64 / self.receipts.max(1) as f64
    }

    /// The whole database: the file's pages and the -wal file.
    pub fn whole_bytes(&self) -> i64 {
        self.pages_bytes + self.wal_bytes
    }

    pub fn whole_per_receipt(&self) -> f64 {
        self.whole_bytes() as f64 / self.receipts.max(1) as f64
    }
}

/// Bytes per receipt after the load, beside a heap table holding a sample of the same rows.
pub async fn storage(store: &SqliteStore, l: &LoadReport) -> anyhow::Result<StorageReport> {
    let pool = store.pool();
    let mut rollups = Some(0);
    for t in ROLLUPS {
        rollups = rollups.zip(dbstat(pool, t).await).map(|(a, b)| a + b);
    }
    let (receipts_bytes, rollup_bytes, source) = match (dbstat(pool, "receipts").await, rollups) {
        (Some(r), Some(u)) => (r, u, "dbstat"),
        _ => (
            l.used_after_receipts - l.used_before,
            l.used_after_rollup - l.used_after_receipts,
            "page_count deltas",
        ),
    };
    let file_bytes = used_bytes(pool).await?;
    // Read before `bench_heap` exists: the scratch table is not the store's.
    let (tables, tables_bytes) = if source == "dbstat" {
        sqlite_tables(pool).await?
    } else {
        (Vec::new(), file_bytes)
    };
    // The receipts-only figure is the receipts row: table and every index on it.
    let receipts_bytes = tables
        .iter()
        .find(|t| t.name == "receipts")
        .map_or(receipts_bytes, |t| t.bytes);
    let (pages_bytes, free_bytes, wal_bytes) = sqlite_file(pool, &l.path).await?;
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
        tables,
        tables_bytes,
        pages_bytes,
        free_bytes,
        wal_bytes,
    })
}

/// The per-table rows shared by both backends' reports, with their total.
pub(crate) fn print_tables(tables: &[TableBytes], total: i64, total_label: &str, receipts: i64) {
    let per = |b: i64| b as f64 / receipts.max(1) as f64;
    println!("| table (with its indexes) | bytes | bytes per receipt |");
    println!("|---|---:|---:|");
    for t in tables {
        println!("| {} | {} | {:.1} |", t.name, t.bytes, per(t.bytes));
    }
    println!("| **{total_label}** | {total} | {:.1} |", per(total));
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
        "| rollups ({}) | {} | {:.1} |",
        ROLLUPS.join(", "),
        s.rollup_bytes,
        per(s.rollup_bytes)
    );
    println!(
        "| whole file in use | {} | {:.1} |",
        s.file_bytes,
        per(s.file_bytes)
    );
    println!();
    if s.tables.is_empty() {
        println!("every table: per-table sizes need dbstat, which this SQLite lacks");
    } else {
        print_tables(
            &s.tables,
            s.tables_bytes,
            "every table, all b-tree pages (dbstat)",
            s.receipts,
        );
    }
    println!(
        "| free pages (in the file, no table's) | {} | {:.1} |",
        s.free_bytes,
        per(s.free_bytes)
    );
    println!(
        "| -wal file after a checkpoint | {} | {:.1} |",
        s.wal_bytes,
        per(s.wal_bytes)
    );
    println!(
        "| **whole database: page_count x page_size + -wal** | {} | {:.1} |",
        s.whole_bytes(),
        s.whole_per_receipt()
    );
    println!(
        "target: <= 40 bytes per receipt (whole database): {} ({:.1}; receipts table and indexes alone {:.1}, {}; {:.2} x the keyless heap)",
        met(s.whole_per_receipt() <= 40.0),
        s.whole_per_receipt(),
        s.per_receipt(),
        met(s.per_receipt() <= 40.0),
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

/// Every table of the connection's schema (`current_schema()`, the bench's own) with its
/// indexes and TOAST, a partitioned table with all its partitions; and the sum of
/// `pg_total_relation_size` over every table of the schema, partitions included, taken
/// apart from the rows so that the rows can be checked against it. Tables are listed from
/// `pg_class`, not named here, so one added later is counted.
pub(crate) async fn pg_tables(store: &PgStore) -> anyhow::Result<(Vec<TableBytes>, i64)> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT c.relname::text,
                CAST(CASE WHEN c.relkind = 'p'
                          THEN (SELECT COALESCE(SUM(pg_total_relation_size(t.relid)), 0)
                                FROM pg_partition_tree(c.oid) t)
                          ELSE pg_total_relation_size(c.oid) END AS BIGINT)
         FROM pg_class c
         WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
           AND c.relkind IN ('r', 'p') AND NOT c.relispartition
         ORDER BY c.relname",
    )
    .fetch_all(store.pool())
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT)
         FROM pg_class c
         WHERE c.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
           AND c.relkind IN ('r', 'p')",
    )
    .fetch_one(store.pool())
    .await?;
    Ok((
        rows.into_iter()
            .map(|(name, bytes)| TableBytes { name, bytes })
            .collect(),
        total,
    ))
}
