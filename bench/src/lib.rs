//! civicast-bench: the scenarios of BENCHMARKS.md, each printing its result beside a
//! baseline measured in the same run.
//!
//! - `ingest`: simulated displays (one MQTT connection each) send receipts for recorded plays
//!   through the broker into the store; beside it the broker's raw QoS 1 rate to one
//!   subscriber that only acknowledges, and the store's raw batched insert rate.
//! - `audit`: a synthetic year of receipts written by a bulk path, then every play-count
//!   grouping of the contract (`plays`) through `Store::audit_plays` beside the naive GROUP
//!   BY over raw receipts, answers compared row for row, and compliance for a week.
//! - `storage`: bytes per receipt on disk after that load, beside a plain heap table: the
//!   receipts table, every table of the schema and the whole database.
//! - `memory`: RSS with a large inventory, each size in a fresh process.
//! - `download`: the audit load, then play counts by display and hour downloaded as CSV and
//!   as XLSX through the API's download function, RSS sampled while each runs.
//! - `console`: every page of the web console on the audit scenario's history, each
//!   auditor page beside the API's answer and the store's read in the same run.
//! - `pg`: the audit and storage scenarios on PostgreSQL.
//! - `soak`: the demo city at speed for a long time: memory and open descriptors sampled,
//!   every receipt checked stored once at the end.
//! - `storm`: a `civicast serve` binary on its embedded broker and on a private Mosquitto,
//!   a whole city connecting at once and dying at once (SIGKILL of the fleet processes).
//! - `soak-live`: `civicast serve` on Mosquitto and PostgreSQL under a million displays'
//!   receipt load from `civicast simulate` processes, for a long time.
//!
//! Owns: nothing the daemon uses; the `civicast` library never depends on it. Must not
//! touch: the daemon's code paths (it drives them as a user would, through the library's
//! public API); the only rows it writes past the store are in `load`.

pub mod audit;
pub mod console;
pub mod download;
pub mod fixture;
mod fleet;
pub mod ingest;
pub mod load;
pub mod memory;
pub mod pg;
pub mod plays;
pub mod receipt_log;
pub mod report;
pub mod soak;
pub mod soak_live;
pub mod storage;
pub mod storm;
pub mod storm_fleet;
pub mod synth;

pub use audit::{audit, print_audit, AuditReport, ComplianceBench};
pub use fixture::write_inventory;
pub use ingest::{ingest, print_ingest, IngestOptions, IngestReport};
pub use load::{
    load_pg, load_sqlite, print_load, print_pg_load, write_timelines, LoadReport, PgLoadReport,
};
pub use memory::{memory_one, print_memory, rss_kib, MemoryReport};
pub use pg::{audit_pg, print_pg_storage, storage_pg, PgStorageReport};
pub use plays::{cases, QueryReport};
pub use report::Rate;
pub use soak::{print_soak, soak, SoakOptions, SoakReport};
pub use storage::{print_storage, storage, StorageReport, TableBytes, SQLITE_CATALOG};
pub use storm::{print_storm, storm, Broker, StormOptions, StormReport};
pub use storm_fleet::fleet_process;
pub use synth::LoadOptions;
