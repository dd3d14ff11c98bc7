//! Counters the daemon keeps while it runs, read by the demo's progress line and rendered
//! in the Prometheus text format for `GET /metrics`.
//!
//! Owns: the counters and their text form. Must not touch the store or MQTT; the tasks
//! bump the counters as they work.

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
    /// When the write in flight started (ms on [`monotonic_ms`]), 0 when none: a write that
    /// hangs says as much about the database as one that fails.
    pub write_started_ms: std::sync::atomic::AtomicI64,
    pub online_by_class: Mutex<BTreeMap<String, i64>>,
    /// Edits of `devices/` and `schedules/` applied while running.
    pub reloads: AtomicU64,
    /// Edits refused (the last good state kept playing), by [`Refusal`].
    pub reloads_refused: [AtomicU64; Refusal::ALL.len()],
}

/// Why an edit of the operators' files was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The files have errors.
    Errors,
    /// It would take away more displays or ad sets than allowed.
    Drop,
    /// Applying it failed (the database).
    Apply,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [Refusal::Errors, Refusal::Drop, Refusal::Apply];
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Errors => "errors",
            Refusal::Drop => "drop",
            Refusal::Apply => "apply_failed",
        }
    }
}

/// A write pending longer than this marks the database as failing.
pub const WRITE_STALL_MS: i64 = 5_000;

/// Milliseconds on a monotonic clock (from the first call, plus one so that it is never 0).
/// How long a write has hung is a duration, measured where the wall clock cannot jump.
fn monotonic_ms() -> i64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    i64::try_from(
        EPOCH
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
    .saturating_add(1)
}

impl Metrics {
    /// Whether the database answers: the last write succeeded and none hangs.
    pub fn database_healthy(&self) -> bool {
        let started = self.write_started_ms.load(Ordering::Relaxed);
        self.database_ok.load(Ordering::Relaxed)
            && (started == 0 || monotonic_ms() - started < WRITE_STALL_MS)
    }
    /// Runs a database write, keeping `database_ok` and the stall clock up to date.
    pub async fn write<T, E>(
        &self,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.write_started_ms
            .store(monotonic_ms(), Ordering::Relaxed);
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
    pub fn refuse_reload(&self, r: Refusal) {
        if let Some(i) = Refusal::ALL.iter().position(|x| *x == r) {
            self.reloads_refused[i].fetch_add(1, Ordering::Relaxed);
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
        self.render_receipts(&mut o);
        self.render_health(&mut o);
        o
    }

    /// Plays, receipts and rejections.
    fn render_receipts(&self, o: &mut String) {
        let plays = labelled("feed", &self.plays_by_feed);
        family(
            o,
            "civicast_plays_published_total",
            "counter",
            "Plays published, by feed.",
            plays,
        );
        family(
            o,
            "civicast_receipts_stored_total",
            "counter",
            "Receipts stored (each display and play once).",
            one(counted(&self.receipts_stored)),
        );
        family(
            o,
            "civicast_receipts_duplicate_total",
            "counter",
            "Receipts that repeated one already stored.",
            one(counted(&self.receipts_duplicate)),
        );
        let rejects = Reject::ALL
            .iter()
            .zip(&self.rejects)
            .map(|(r, n)| (format!("{{reason=\"{}\"}}", r.as_str()), counted(n)))
            .collect();
        family(
            o,
            "civicast_receipts_rejected_total",
            "counter",
            "Receipts not counted, by reason.",
            rejects,
        );
    }

    /// Batches, commits, and the state of the broker, the database and the displays.
    fn render_health(&self, o: &mut String) {
        family(
            o,
            "civicast_batches_total",
            "counter",
            "Receipt batches committed.",
            one(counted(&self.batches)),
        );
        family(
            o,
            "civicast_batch_rows_total",
            "counter",
            "Messages in committed batches (mean batch size = rows / batches).",
            one(counted(&self.batch_rows)),
        );
        let commit_s = self.commit_micros.load(Ordering::Relaxed) as f64 / 1e6;
        family(
            o,
            "civicast_commit_seconds_total",
            "counter",
            "Time spent committing batches.",
            one(format!("{commit_s:.6}")),
        );
        family(
            o,
            "civicast_commit_failures_total",
            "counter",
            "Batch commits that failed and were retried.",
            one(counted(&self.commit_failures)),
        );
        let broker = u8::from(self.broker_connected.load(Ordering::Relaxed));
        family(
            o,
            "civicast_broker_connected",
            "gauge",
            "Whether the daemon's MQTT session is up.",
            one(broker.to_string()),
        );
        let db = u8::from(self.database_healthy());
        family(
            o,
            "civicast_database_ok",
            "gauge",
            "Whether the last database write succeeded and none hangs.",
            one(db.to_string()),
        );
        let online = labelled("class", &self.online_by_class);
        family(
            o,
            "civicast_displays_online",
            "gauge",
            "Displays whose presence says online, by class.",
            online,
        );
        family(
            o,
            "civicast_reloads_total",
            "counter",
            "Edits of devices/ and schedules/ applied while running.",
            one(counted(&self.reloads)),
        );
        let refused = Refusal::ALL
            .iter()
            .zip(&self.reloads_refused)
            .map(|(r, n)| (format!("{{reason=\"{}\"}}", r.as_str()), counted(n)))
            .collect();
        family(
            o,
            "civicast_reloads_refused_total",
            "counter",
            "Edits of devices/ and schedules/ refused while the last good state kept playing, by reason.",
            refused,
        );
    }
}

fn counted(a: &AtomicU64) -> String {
    a.load(Ordering::Relaxed).to_string()
}

/// A family of one sample without labels.
fn one(v: String) -> Vec<(String, String)> {
    vec![(String::new(), v)]
}

/// One metric family: its HELP and TYPE lines, then one line per (labels, value).
fn family(o: &mut String, name: &str, kind: &str, help: &str, samples: Vec<(String, String)>) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(o, "{name}{labels} {value}");
    }
}

/// The samples of a map kept by one label.
fn labelled<V: std::fmt::Display>(
    label: &str,
    m: &Mutex<BTreeMap<String, V>>,
) -> Vec<(String, String)> {
    m.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(k, v)| (format!("{{{label}=\"{k}\"}}"), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed_with_its_help_type_and_samples() {
        let m = Metrics::default();
        m.play("bus-led-all");
        m.play("bus-led-all");
        m.reject(Reject::NotSent);
        m.receipts_stored.store(7, Ordering::Relaxed);
        m.commit_micros.store(1_500_000, Ordering::Relaxed);
        m.refuse_reload(Refusal::Drop);
        m.online_by_class
            .lock()
            .expect("lock")
            .insert("taxi_top".into(), 3);
        let text = m.render();
        for line in [
            "# HELP civicast_plays_published_total Plays published, by feed.",
            "# TYPE civicast_plays_published_total counter",
            "civicast_plays_published_total{feed=\"bus-led-all\"} 2",
            "civicast_receipts_stored_total 7",
            "civicast_receipts_rejected_total{reason=\"not_sent\"} 1",
            "civicast_receipts_rejected_total{reason=\"malformed\"} 0",
            "civicast_commit_seconds_total 1.500000",
            "# TYPE civicast_broker_connected gauge",
            "civicast_broker_connected 0",
            "civicast_database_ok 0",
            "civicast_displays_online{class=\"taxi_top\"} 3",
            "civicast_reloads_total 0",
            "civicast_reloads_refused_total{reason=\"drop\"} 1",
            "civicast_reloads_refused_total{reason=\"errors\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(families, 13);
    }
}
