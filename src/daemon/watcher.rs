//! The file watcher: picks up edits to `devices/` and `schedules/` while the daemon runs.
//! A bad edit is refused and logged; the last good state keeps playing.
//!
//! Three things stand between an edit and the city, each logged when it holds an edit back:
//! - **settling**: an edit is read only once no file was modified within `settle`, and only
//!   if two reads `settle` apart give the same bytes (an editor or `cp` caught mid-write
//!   leaves a file cut at a row end, which parses as a valid smaller city);
//! - **errors**: the same check as `civicast check` (`files` and `core::catalog`);
//! - **drops**: an edit that takes away more than `max_drop` of the displays or of the ad
//!   sets still to play is refused until an operator accepts it once
//!   (`civicast reload --accept-drop`, see [`crate::files::RELOAD_MARKER`]).
//!
//! Units and `inspections.toml` are read with the rest and refused with it: an edit that
//! breaks them keeps the last good displays playing and the last good units inspected.
//!
//! Owns: the folders' fingerprint and the per-file display counts of the last good state.
//! Must not touch: receipts, plays. Installing the result is `daemon::apply_files`.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rumqttc::v5::AsyncClient;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::core::catalog::{self, Problem, Report, Shrink, Sources};
use crate::core::model::Catalog;
use crate::core::wire::Topics;
use crate::daemon::{apply_files, publish_configs, scale_time, Clock, Shared};
use crate::files;
use crate::metrics::Refusal;
use crate::store::Db;
use chrono::{DateTime, Utc};

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
    /// How long files must stay unchanged before they are read as an edit.
    pub settle: Duration,
    /// The largest share of displays or ad sets an edit may take away unasked.
    pub max_drop: f64,
    /// The folders as they were before the running state was read from them: an edit made
    /// after that read and before this task first runs is an edit like any other.
    pub seen: Fingerprint,
    pub shutdown: CancellationToken,
}

/// Each display list of the last good state and its number of displays.
type Lists = Vec<(String, usize)>;

impl FileWatcher {
    pub async fn run(self) {
        let dirs = [self.devices.clone(), self.schedules.clone()];
        let mut last = self.seen.0.clone();
        let mut lists = match self.read_once().await {
            Some(sources) => self.parse(sources).await.display_lists,
            None => Vec::new(),
        };
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.every) => {}
            }
            let now = fingerprint(&dirs);
            if now == last {
                continue;
            }
            if let Some(path) = modified_within(&now, self.settle, SystemTime::now()) {
                debug!(file = %path.display(), "edit still settling; read on a later tick");
                continue;
            }
            let Some(sources) = self.read_settled().await else {
                info!("devices/ or schedules/ read differently twice: still being written; read on a later tick");
                continue;
            };
            last = now;
            if self.reload(sources, &mut lists).await {
                // Removing the request is not an edit to read again.
                last = fingerprint(&dirs);
            }
        }
    }

    /// The folders as read now, off the async threads.
    async fn read_once(&self) -> Option<Sources> {
        let (d, s) = (self.devices.clone(), self.schedules.clone());
        tokio::task::spawn_blocking(move || files::read_sources(&d, &s))
            .await
            .ok()
    }

    /// The folders, if two reads `settle` apart agree byte for byte.
    async fn read_settled(&self) -> Option<Sources> {
        let first = self.read_once().await?;
        tokio::time::sleep(self.settle).await;
        let second = self.read_once().await?;
        (first == second).then_some(second)
    }

    async fn parse(&self, sources: Sources) -> Report {
        let now = self.clock.now();
        let parsed = tokio::task::spawn_blocking(move || catalog::parse(&sources, now)).await;
        parsed.unwrap_or_else(|e| Report {
            catalog: None,
            problems: vec![Problem::error(
                "devices/ and schedules/",
                None,
                None,
                format!("reading the files failed: {e}"),
            )],
            display_lists: Vec::new(),
        })
    }

    /// Whether `next` takes away more than `max_drop` of what plays now, unaccepted; each
    /// such drop is logged with its numbers and files, accepted or not.
    fn refuses_drop(
        &self,
        next: &Catalog,
        lists: &Lists,
        display_lists: &Lists,
        accept: bool,
        now: DateTime<Utc>,
    ) -> bool {
        let shrinks = catalog::shrinkage(&self.shared.base(), next, now);
        let over: Vec<&Shrink> = shrinks
            .iter()
            .filter(|s| s.exceeds(self.max_drop))
            .collect();
        for s in &over {
            let files = shrunk_lists(lists, display_lists, s);
            let message = if accept {
                format!("large drop accepted by `civicast reload --accept-drop`: {s}")
            } else {
                format!(
                    "edit refused: {s}, more than max_drop {:.0}% ({files}); the last good state keeps playing. If intended, run `civicast reload --accept-drop` (once), or raise CIVICAST_MAX_DROP / max_drop, or start with `civicast serve --accept-drop`",
                    self.max_drop * 100.0
                )
            };
            warn!(
                what = s.what,
                before = s.before,
                after = s.after,
                removed = s.removed,
                share = s.share(),
                max_drop = self.max_drop,
                files = %files,
                "{message}"
            );
        }
        !over.is_empty() && !accept
    }

    /// The units and checklist of `devices/` against the edit's displays; None (each
    /// problem logged) when `check` would call the edit wrong for them.
    async fn inspect_setup(&self, catalog: &Catalog) -> Option<crate::core::inspect::Setup> {
        let (dir, displays) = (self.devices.clone(), catalog.devices.clone());
        let read = tokio::task::spawn_blocking(move || files::load_inspect(&dir, &displays));
        let (setup, problems) = match read.await {
            Ok(r) => r,
            Err(e) => {
                error!(error = %e, "reading devices/units failed; the last good state keeps playing");
                return None;
            }
        };
        log_problems(&problems);
        let errors = problems.iter().filter(|p| p.is_error()).count();
        if errors > 0 {
            warn!(
                errors,
                "edit refused: devices/units or devices/inspections.toml has errors (as `civicast check` lists them); the last good state keeps playing"
            );
            return None;
        }
        Some(setup)
    }

    /// Reads and applies one edit; whether a reload request was acted on and removed.
    async fn reload(&self, sources: Sources, lists: &mut Lists) -> bool {
        let request = files::reload_request(&self.devices);
        let report = self.parse(sources).await;
        log_problems(&report.problems);
        let (errors, warnings) = (report.errors(), report.warnings());
        let Some(mut catalog) = report.catalog.filter(|_| errors == 0) else {
            self.shared.metrics().refuse_reload(Refusal::Errors);
            warn!(
                errors,
                warnings,
                "edit refused: devices/ or schedules/ has errors (as `civicast check` lists them); the last good state keeps playing"
            );
            return false;
        };
        let Some(setup) = self.inspect_setup(&catalog).await else {
            self.shared.metrics().refuse_reload(Refusal::Errors);
            return false;
        };
        let now = self.clock.now();
        let accept = request.is_some_and(|r| r.accept_drop);
        if self.refuses_drop(&catalog, lists, &report.display_lists, accept, now) {
            self.shared.metrics().refuse_reload(Refusal::Drop);
            return false;
        }
        let (displays, feeds, adsets) = (
            catalog.devices.len(),
            catalog.feeds.len(),
            catalog.adsets.len(),
        );
        scale_time(&mut catalog, self.time_scale);
        let now_ms = now.timestamp_millis();
        if let Err(e) =
            apply_files(&self.store, &self.shared, &self.schedules, catalog, now_ms).await
        {
            self.shared.metrics().refuse_reload(Refusal::Apply);
            error!(error = %e, "could not apply the edited files; the last good state keeps playing");
            return false;
        }
        self.shared.set_inspect(setup);
        let cleared = request.is_some();
        if cleared {
            if let Err(e) = files::clear_reload_request(&self.devices) {
                warn!(error = %e, file = files::RELOAD_MARKER, "could not remove the reload request; remove it by hand");
            }
        }
        *lists = report.display_lists;
        self.shared
            .metrics()
            .reloads
            .fetch_add(1, Ordering::Relaxed);
        publish_configs(&self.client, &self.topics, &self.shared).await;
        info!(displays, feeds, adsets, "devices/ and schedules/ reloaded");
        cleared
    }
}

/// Every problem of a reload, one log line each, as `check` and the start print them.
fn log_problems(problems: &[Problem]) {
    for p in problems {
        let line = p.line.unwrap_or(0);
        let field = p.field.as_deref().unwrap_or("");
        if p.is_error() {
            warn!(file = %p.file, line, field, severity = "error", "{}", p.message);
        } else {
            warn!(file = %p.file, line, field, severity = "warning", "{}", p.message);
        }
    }
}

/// The display lists that lost displays, `name before -> after`, for a display drop; the
/// ad sets removed are in the drop's own examples.
fn shrunk_lists(before: &Lists, after: &Lists, s: &Shrink) -> String {
    if s.what != "displays" {
        return "schedules/adsets".to_owned();
    }
    let now = |name: &str| after.iter().find(|(n, _)| n == name).map(|(_, c)| *c);
    let shrunk: Vec<String> = before
        .iter()
        .filter_map(|(name, was)| match now(name) {
            Some(c) if c >= *was => None,
            Some(c) => Some(format!("{name} {was} -> {c}")),
            None => Some(format!("{name} {was} -> gone")),
        })
        .collect();
    if shrunk.is_empty() {
        "devices/".to_owned()
    } else {
        shrunk.join(", ")
    }
}

/// A file's path, size and modification time.
type Stamp = (PathBuf, u64, Option<SystemTime>);

/// Every file of `devices/` and `schedules/` with its size and modification time. Taken
/// before the files are read, so that the watcher can never mistake an edit made during
/// the start for the state it started with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fingerprint(Vec<Stamp>);

impl Fingerprint {
    pub fn of(devices: &Path, schedules: &Path) -> Fingerprint {
        Fingerprint(fingerprint(&[
            devices.to_path_buf(),
            schedules.to_path_buf(),
        ]))
    }
}

/// The first file modified less than `settle` before `now` (or in the future: a clock that
/// moved counts as recent, to be safe).
fn modified_within(stamps: &[Stamp], settle: Duration, now: SystemTime) -> Option<&Path> {
    stamps.iter().find_map(|(p, _, m)| {
        let m = (*m)?;
        let recent = match now.duration_since(m) {
            Ok(age) => age < settle,
            Err(_) => true,
        };
        recent.then_some(p.as_path())
    })
}

/// A cheap summary of the operators' folders: every file's path, size and mtime.
fn fingerprint(dirs: &[PathBuf]) -> Vec<Stamp> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = dirs.to_vec();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_modified_within_the_settle_window_waits() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let stamp = |name: &str, age_ms: u64| -> Stamp {
            (
                PathBuf::from(name),
                1,
                Some(now - Duration::from_millis(age_ms)),
            )
        };
        let settle = Duration::from_secs(1);
        let old = [stamp("a.csv", 5_000), stamp("b.csv", 1_000)];
        assert_eq!(modified_within(&old, settle, now), None);
        let fresh = [stamp("a.csv", 5_000), stamp("b.csv", 999)];
        assert_eq!(
            modified_within(&fresh, settle, now),
            Some(Path::new("b.csv"))
        );
        let future = [(
            PathBuf::from("c.csv"),
            1,
            Some(now + Duration::from_secs(60)),
        )];
        assert_eq!(
            modified_within(&future, settle, now),
            Some(Path::new("c.csv"))
        );
    }

    #[test]
    fn a_refused_drop_names_the_lists_that_shrank() {
        let before = vec![
            ("devices/brt.csv".to_owned(), 84),
            ("devices/city.csv".to_owned(), 3149),
            ("devices/old.csv".to_owned(), 10),
        ];
        let after = vec![
            ("devices/brt.csv".to_owned(), 84),
            ("devices/city.csv".to_owned(), 48),
        ];
        let s = Shrink::of_counts("displays", 3243, 132);
        assert_eq!(
            shrunk_lists(&before, &after, &s),
            "devices/city.csv 3149 -> 48, devices/old.csv 10 -> gone"
        );
    }
}
