//! The file watcher: picks up edits to `devices/` and `schedules/` while the daemon runs.
//! A bad edit is refused and logged; the last good state keeps playing.
//!
//! Owns: the folders' fingerprint. Must not touch: receipts, plays. Parsing and validation
//! are `files::load_dirs`'s; installing the result is `daemon::apply_files`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rumqttc::v5::AsyncClient;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::core::wire::Topics;
use crate::daemon::{apply_files, publish_configs, scale_time, Clock, Shared};
use crate::store::Db;

/// Polls the operators' folders and applies good edits until shutdown.
pub struct FileWatcher {
    pub store: Db,
    pub client: AsyncClient,
    pub topics: Topics,
    pub shared: Shared,
    pub devices: PathBuf,
    pub schedules: PathBuf,
    /// Applied to every reloaded catalog, as to the first (the demo compresses time).
    pub time_scale: f64,
    pub clock: Arc<dyn Clock>,
    pub every: Duration,
    pub shutdown: CancellationToken,
}

impl FileWatcher {
    pub async fn run(self) {
        let dirs = [self.devices.as_path(), self.schedules.as_path()];
        let mut last = fingerprint(&dirs);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.every) => {}
            }
            let now = fingerprint(&dirs);
            if now == last {
                continue;
            }
            last = now;
            self.reload().await;
        }
    }

    async fn reload(&self) {
        let report = crate::files::load_dirs(&self.devices, &self.schedules);
        let errors = report.errors();
        let Some(mut catalog) = report.catalog.filter(|_| errors == 0) else {
            for p in report.problems.iter().filter(|p| p.is_error()) {
                warn!(problem = %p, "edited file refused");
            }
            warn!(
                errors,
                "devices/ or schedules/ has errors; the last good state keeps playing"
            );
            self.shared
                .metrics()
                .reloads_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        scale_time(&mut catalog, self.time_scale);
        let now_ms = self.clock.now().timestamp_millis();
        if let Err(e) =
            apply_files(&self.store, &self.shared, &self.schedules, catalog, now_ms).await
        {
            warn!(error = %e, "could not apply the edited files; the last good state keeps playing");
            return;
        }
        publish_configs(&self.client, &self.topics, &self.shared).await;
        info!("devices/ and schedules/ reloaded");
    }
}

/// A file's path, size and modification time.
type Stamp = (PathBuf, u64, Option<SystemTime>);

/// A cheap summary of the operators' folders: every file's path, size and mtime.
fn fingerprint(dirs: &[&Path]) -> Vec<Stamp> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) => out.push((p, m.len(), m.modified().ok())),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}
