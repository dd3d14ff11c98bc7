//! Counters the daemon keeps while it runs, read by the demo's progress line and rendered
//! in the Prometheus text format for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::core::wire::Reject;

#[derive(Debug, Default)]
pub struct Metrics {
    pub plays_published: AtomicU64,
    pub plays_by_feed: Mutex<BTreeMap<String, u64>>,
    pub receipts_stored: AtomicU64,
    pub receipts_duplicate: AtomicU64,
    pub rejects: [AtomicU64; Reject::ALL.len()],
    pub batches: AtomicU64,
    pub batch_rows: AtomicU64,
    /// Sum of commit latencies, microseconds.
    pub commit_micros: AtomicU64,
    pub commit_failures: AtomicU64,
    pub configs_published: AtomicU64,
    pub broker_connected: AtomicBool,
    pub database_ok: AtomicBool,
    /// When the write in flight started (ms since the epoch), 0 when none: a write that
    /// hangs says as much about the database as one that fails.
    pub write_started_ms: std::sync::atomic::AtomicI64,
    pub online_by_class: Mutex<BTreeMap<String, i64>>,
}

/// A write pending longer than this marks the database as failing.
pub const WRITE_STALL_MS: i64 = 5_000;

impl Metrics {
    /// Whether the database answers: the last write succeeded and none hangs.
    pub fn database_healthy(&self, now_ms: i64) -> bool {
        let started = self.write_started_ms.load(Ordering::Relaxed);
        self.database_ok.load(Ordering::Relaxed)
            && (started == 0 || now_ms - started < WRITE_STALL_MS)
    }
    /// Runs a database write, keeping `database_ok` and the stall clock up to date.
    pub async fn write<T, E>(
        &self,
        now_ms: i64,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.write_started_ms
            .store(now_ms.max(1), Ordering::Relaxed);
        let r = f.await;
        self.write_started_ms.store(0, Ordering::Relaxed);
        self.database_ok.store(r.is_ok(), Ordering::Relaxed);
        r
    }

    pub fn reject(&self, r: Reject) {
        if let Some(i) = Reject::ALL.iter().position(|x| *x == r) {
            self.rejects[i].fetch_add(1, Ordering::Relaxed);
        }
    }
    pub fn rejects_total(&self) -> u64 {
        self.rejects.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
    pub fn play(&self, feed: &str) {
        self.plays_published.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.plays_by_feed.lock() {
            *m.entry(feed.to_owned()).or_default() += 1;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "# HELP civicast_plays_published_total Plays published, by feed."
        );
        let _ = writeln!(o, "# TYPE civicast_plays_published_total counter");
        if let Ok(m) = self.plays_by_feed.lock() {
            for (f, n) in m.iter() {
                let _ = writeln!(o, "civicast_plays_published_total{{feed=\"{f}\"}} {n}");
            }
        }
        let _ = writeln!(
            o,
            "# HELP civicast_receipts_stored_total Receipts stored (each display and play once)."
        );
        let _ = writeln!(o, "# TYPE civicast_receipts_stored_total counter");
        let _ = writeln!(
            o,
            "civicast_receipts_stored_total {}",
            g(&self.receipts_stored)
        );
        let _ = writeln!(
            o,
            "# HELP civicast_receipts_duplicate_total Receipts that repeated one already stored."
        );
        let _ = writeln!(o, "# TYPE civicast_receipts_duplicate_total counter");
        let _ = writeln!(
            o,
            "civicast_receipts_duplicate_total {}",
            g(&self.receipts_duplicate)
        );
        let _ = writeln!(
            o,
            "# HELP civicast_receipts_rejected_total Receipts not counted, by reason."
        );
        let _ = writeln!(o, "# TYPE civicast_receipts_rejected_total counter");
        for (i, r) in Reject::ALL.iter().enumerate() {
            let _ = writeln!(
                o,
                "civicast_receipts_rejected_total{{reason=\"{}\"}} {}",
                r.as_str(),
                g(&self.rejects[i])
            );
        }
        let _ = writeln!(
            o,
            "# HELP civicast_batches_total Receipt batches committed."
        );
        let _ = writeln!(o, "# TYPE civicast_batches_total counter");
        let _ = writeln!(o, "civicast_batches_total {}", g(&self.batches));
        let _ = writeln!(o, "# HELP civicast_batch_rows_total Messages in committed batches (mean batch size = rows / batches).");
        let _ = writeln!(o, "# TYPE civicast_batch_rows_total counter");
        let _ = writeln!(o, "civicast_batch_rows_total {}", g(&self.batch_rows));
        let _ = writeln!(
            o,
            "# HELP civicast_commit_seconds_total Time spent committing batches."
        );
        let _ = writeln!(o, "# TYPE civicast_commit_seconds_total counter");
        let _ = writeln!(
            o,
            "civicast_commit_seconds_total {:.6}",
            g(&self.commit_micros) as f64 / 1e6
        );
        let _ = writeln!(
            o,
            "# HELP civicast_commit_failures_total Batch commits that failed and were retried."
        );
        let _ = writeln!(o, "# TYPE civicast_commit_failures_total counter");
        let _ = writeln!(
            o,
            "civicast_commit_failures_total {}",
            g(&self.commit_failures)
        );
        let _ = writeln!(
            o,
            "# HELP civicast_broker_connected Whether the daemon's MQTT session is up."
        );
        let _ = writeln!(o, "# TYPE civicast_broker_connected gauge");
        let _ = writeln!(
            o,
            "civicast_broker_connected {}",
            u8::from(self.broker_connected.load(Ordering::Relaxed))
        );
        let _ = writeln!(
            o,
            "# HELP civicast_database_ok Whether the last database write succeeded and none hangs."
        );
        let _ = writeln!(o, "# TYPE civicast_database_ok gauge");
        let _ = writeln!(
            o,
            "civicast_database_ok {}",
            u8::from(self.database_healthy(chrono::Utc::now().timestamp_millis()))
        );
        let _ = writeln!(
            o,
            "# HELP civicast_displays_online Displays whose presence says online, by class."
        );
        let _ = writeln!(o, "# TYPE civicast_displays_online gauge");
        if let Ok(m) = self.online_by_class.lock() {
            for (c, n) in m.iter() {
                let _ = writeln!(o, "civicast_displays_online{{class=\"{c}\"}} {n}");
            }
        }
        o
    }
}
