//! Counters the daemon keeps while it runs, read by the demo's progress line and rendered
//! in the Prometheus text format for `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::wire::Reject;

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
    pub online_by_class: Mutex<BTreeMap<String, i64>>,
}

impl Metrics {
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
            "# HELP civicast_database_ok Whether the last database write succeeded."
        );
        let _ = writeln!(o, "# TYPE civicast_database_ok gauge");
        let _ = writeln!(
            o,
            "civicast_database_ok {}",
            u8::from(self.database_ok.load(Ordering::Relaxed))
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
