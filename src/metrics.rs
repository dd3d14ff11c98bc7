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
    /// Time from a receipt's arrival at the daemon to the commit of its batch, whether it
    /// was stored, a duplicate or rejected.
    pub receipt_latency: Histogram,
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
    /// Inspection visits recorded, and the findings they opened.
    pub inspections_recorded: AtomicU64,
    pub findings_opened: AtomicU64,
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

/// Upper bounds (seconds) of the receipt latency buckets: a millisecond (a lone receipt on
/// a fast disk) to ten seconds (a database that stalls), then `+Inf`.
pub const LATENCY_BOUNDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus histogram of durations over [`LATENCY_BOUNDS`].
///
/// Each observation is counted in one bucket only (the last one is `+Inf`); the cumulative
/// counts and the total are summed when rendered, so that a scrape that races an
/// observation still shows `+Inf` equal to `_count` and buckets that never decrease.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    /// Sum of the observations, microseconds.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BOUNDS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The family: HELP, TYPE, cumulative `_bucket`s, `_sum` and `_count`.
    fn render(&self, o: &mut String, name: &str, help: &str) {
        let _ = writeln!(o, "# HELP {name} {help}");
        let _ = writeln!(o, "# TYPE {name} histogram");
        let mut total = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            let le = LATENCY_BOUNDS
                .get(i)
                .map_or_else(|| "+Inf".to_owned(), f64::to_string);
            let _ = writeln!(o, "{name}_bucket{{le=\"{le}\"}} {total}");
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(o, "{name}_sum {sum:.6}");
        let _ = writeln!(o, "{name}_count {total}");
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
        self.render_inspections(&mut o);
        o
    }

    /// Visits and the findings they opened (the findings' states now are read from the
    /// store by the `/metrics` route itself, see [`findings_family`]).
    fn render_inspections(&self, o: &mut String) {
        family(
            o,
            "civicast_inspections_recorded_total",
            "counter",
            "Inspection visits recorded since start.",
            one(counted(&self.inspections_recorded)),
        );
        family(
            o,
            "civicast_findings_opened_total",
            "counter",
            "Findings opened by failed checklist items since start.",
            one(counted(&self.findings_opened)),
        );
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
        self.receipt_latency.render(
            o,
            "civicast_receipt_latency_seconds",
            "Time from a receipt's arrival at the daemon to the commit of its batch (stored, duplicate or rejected).",
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

/// `civicast_findings{state,kind}`: findings now by state (`open` within its deadline,
/// `overdue`, `rectified`, `proposed`, `closed`, `dismissed`) and the kind of their unit.
pub fn findings_family(o: &mut String, counts: &BTreeMap<(String, String), u64>) {
    let samples = counts
        .iter()
        .map(|((state, kind), n)| {
            (
                format!("{{state=\"{state}\",kind=\"{kind}\"}}"),
                n.to_string(),
            )
        })
        .collect();
    family(
        o,
        "civicast_findings",
        "gauge",
        "Findings now, by state (open within its deadline, overdue, ...) and unit kind.",
        samples,
    );
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
            "civicast_inspections_recorded_total 0",
            "# TYPE civicast_findings_opened_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(families, 16);
    }

    #[test]
    fn receipt_latency_is_a_cumulative_histogram() {
        let m = Metrics::default();
        let ms = std::time::Duration::from_millis;
        // On a bound counts in that bucket (`le` is inclusive); past the last, only +Inf.
        for d in [ms(1), ms(3), ms(3), ms(200), ms(10_000), ms(12_000)] {
            m.receipt_latency.observe(d);
        }
        let text = m.render();
        let name = "civicast_receipt_latency_seconds";
        let want = [
            "0.001 1", "0.0025 1", "0.005 3", "0.01 3", "0.025 3", "0.05 3", "0.1 3", "0.25 4",
            "0.5 4", "1 4", "2.5 4", "5 4", "10 5", "+Inf 6",
        ];
        let buckets: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{le=\"")))
            .map(|l| l.replacen("\"}", "", 1))
            .collect();
        assert_eq!(buckets, want, "{text}");
        for line in [
            format!("# HELP {name} Time from a receipt's arrival at the daemon to the commit of its batch (stored, duplicate or rejected)."),
            format!("# TYPE {name} histogram"),
            format!("{name}_sum 22.207000"),
            format!("{name}_count 6"),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(m.receipt_latency.count(), 6);
    }
}
