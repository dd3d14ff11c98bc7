//! The download scenario: play counts by display and hour over the synthetic history, the
//! 100,000-row kind of answer an auditor exports, downloaded as CSV and as XLSX through
//! the API's own download function (`api::download::plays_query_download`), the body read
//! and dropped a chunk at a time as a client would; this process's RSS sampled meanwhile.
//!
//! Owns: the readings of this process's memory while a download runs. Must not touch: the
//! download's code (it calls the library as the API's route does).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use civicast::api::{download, Heavy, Limits};
use civicast::core::audit::{PlaysParams, PlaysQuery};
use civicast::reports::Download;
use civicast::store::{Db, SqliteStore};
use http_body_util::BodyExt;

use crate::memory::rss_kib;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DownloadRun {
    pub format: &'static str,
    pub bytes: u64,
    /// Lines of a CSV body past its header.
    pub csv_rows: Option<u64>,
    pub secs: f64,
    /// RSS just before the download.
    pub before_kib: u64,
    /// The most RSS seen while it ran (sampled every 10 ms).
    pub peak_kib: u64,
}

/// The query of the scenario: every display's plays by hour.
pub fn download_query() -> PlaysQuery {
    let p = PlaysParams {
        group_by: Some("device,hour".into()),
        ..Default::default()
    };
    PlaysQuery::parse(&p, chrono_tz::Asia::Shanghai).unwrap_or_else(|e| panic!("{e:?}"))
}

/// One download of `q` in `d`; with `keep`, the body is returned too (the tests read it).
pub async fn download_once(
    store: &SqliteStore,
    q: PlaysQuery,
    d: Download,
    keep: bool,
) -> anyhow::Result<(DownloadRun, Vec<u8>)> {
    let heavy = Heavy::new(&Limits::default());
    let db: Db = store.clone().into();
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let before_kib = rss_kib().0;
    let sampler = std::thread::spawn({
        let (stop, peak) = (stop.clone(), peak.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib().0, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    });
    let t = Instant::now();
    let resp = download::plays_query_download(&heavy, &db, q, d)
        .await
        .map_err(|e| anyhow::anyhow!("download answered {}: {}", e.status, e.error))?;
    anyhow::ensure!(
        resp.status().is_success(),
        "download answered {}",
        resp.status()
    );
    let mut body = resp.into_body();
    let (mut bytes, mut lines) = (0u64, 0u64);
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| anyhow::anyhow!("the body broke off: {e}"))?;
        if let Some(chunk) = frame.data_ref() {
            bytes += chunk.len() as u64;
            lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
            if keep {
                kept.extend_from_slice(chunk);
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let run = DownloadRun {
        format: match d {
            Download::Csv => "csv",
            Download::Xlsx => "xlsx",
        },
        bytes,
        csv_rows: (d == Download::Csv).then(|| lines.saturating_sub(1)),
        secs,
        before_kib,
        peak_kib: peak.load(Ordering::Relaxed).max(before_kib),
    };
    Ok((run, kept))
}

/// CSV, then XLSX, of the scenario's query.
pub async fn download_runs(store: &SqliteStore) -> anyhow::Result<Vec<DownloadRun>> {
    let mut runs = Vec::new();
    for d in [Download::Csv, Download::Xlsx] {
        runs.push(download_once(store, download_query(), d, false).await?.0);
    }
    Ok(runs)
}

pub fn print_downloads(runs: &[DownloadRun]) {
    println!();
    println!("download: play counts by device and hour (VmRSS sampled every 10 ms)");
    println!("| format | rows | bytes | s | RSS before MiB | RSS most MiB | grew MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let rows = runs.iter().find_map(|r| r.csv_rows).unwrap_or(0);
    let mib = |k: u64| k as f64 / 1024.0;
    for r in runs {
        println!(
            "| {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.1} |",
            r.format,
            rows,
            r.bytes,
            r.secs,
            mib(r.before_kib),
            mib(r.peak_kib),
            mib(r.peak_kib.saturating_sub(r.before_kib))
        );
    }
}
