//! `civicast serve`: the daemon, until SIGINT or SIGTERM; refuses to start (exit 64) while
//! the operators' files have errors, or would take away more of the displays the database
//! knows than `max_drop` allows (unless `--accept-drop`). `civicast reload`: asks the running
//! daemon to re-read its files, and to accept one large drop.
//!
//! Owns: the signal handling around the daemon, and the start's drop check. Must not start
//! the daemon any other way than `daemon::App::start`.

use std::collections::HashSet;
use std::process::ExitCode;
use std::time::Duration;

use tracing::info;

use super::{load_catalog, open_store, shutdown_signal, EXIT_CONFIG};
use crate::core::catalog::Shrink;
use crate::core::model::Catalog;
use crate::daemon::watcher::Fingerprint;
use crate::daemon::{App, Listeners, Startup};
use crate::settings::Settings;
use crate::store::{Db, Store};

pub async fn run(mut settings: Settings, accept_drop: bool) -> anyhow::Result<ExitCode> {
    let files_seen = Fingerprint::of(&settings.devices, &settings.schedules);
    let catalog = match load_catalog(&settings.devices, &settings.schedules) {
        Ok(c) => c,
        Err(n) => {
            eprintln!("civicast: refusing to start: {n} errors in devices/ or schedules/");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let (_, problems) = crate::files::load_inspect(&settings.devices, &catalog.devices);
    super::print_problems(&problems);
    let errors = problems
        .iter()
        .filter(|p| p.severity == crate::core::catalog::Severity::Error)
        .count();
    if errors > 0 {
        eprintln!("civicast: refusing to start: {errors} errors in the units or inspections.toml in devices/");
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    if accept_drop {
        settings.max_drop = 1.0;
    }
    let store = open_store(&settings).await?;
    let shrink = startup_drop(&store, &catalog).await?;
    if shrink.exceeds(settings.max_drop) {
        eprintln!(
            "civicast: refusing to start: against the displays on feeds in the database, {shrink}, more than max_drop {:.0}%; if intended, start with `civicast serve --accept-drop` (or raise CIVICAST_MAX_DROP / max_drop)",
            settings.max_drop * 100.0
        );
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    serve_with(store, settings, catalog, files_seen).await
}

/// What starting with `catalog` takes away from the inventory the database last recorded:
/// displays on at least one feed then (open memberships) against displays on a feed now.
/// A file caught half-written while the daemon was down looks like a smaller city.
async fn startup_drop(store: &Db, catalog: &Catalog) -> anyhow::Result<Shrink> {
    let before: HashSet<i64> = store
        .memberships()
        .await?
        .into_iter()
        .filter(|m| m.until_ms.is_none())
        .map(|m| m.device)
        .collect();
    let after = catalog
        .devices
        .iter()
        .filter(|d| !catalog.feeds_of(d).is_empty())
        .count();
    Ok(Shrink::of_counts("displays", before.len(), after))
}

async fn serve_with(
    store: Db,
    settings: Settings,
    catalog: Catalog,
    files_seen: Fingerprint,
) -> anyhow::Result<ExitCode> {
    let listeners = Listeners::bind(&settings).await?;
    let app = App::start(Startup {
        listeners,
        files_seen: Some(files_seen),
        ..Startup::new(settings, store, catalog)
    })
    .await?;
    shutdown_signal().await;
    info!("shutting down: draining requests, committing pending receipts");
    app.stop();
    app.wait().await;
    Ok(ExitCode::SUCCESS)
}

/// Leaves a reload request for the daemon watching the settings' `devices/`, and waits for
/// its file watcher to act on it: exit 0 once applied; 1, withdrawing it, if it was not
/// within a few ticks.
pub async fn reload(settings: &Settings, accept_drop: bool) -> anyhow::Result<ExitCode> {
    let Some(every) = settings.watch_every else {
        eprintln!("civicast: the file watcher is off (CIVICAST_WATCH_EVERY unset): restart `civicast serve` instead");
        return Ok(ExitCode::from(EXIT_CONFIG));
    };
    let path = crate::files::request_reload(&settings.devices, accept_drop)?;
    println!("reload requested: {}", path.display());
    let wait = every * 2 + settings.watch_settle * 3 + Duration::from_secs(5);
    let deadline = tokio::time::Instant::now() + wait;
    while tokio::time::Instant::now() < deadline {
        if crate::files::reload_request(&settings.devices).is_none() {
            println!("the daemon applied the files");
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A request left behind would accept some later accident: withdraw it.
    crate::files::clear_reload_request(&settings.devices)?;
    eprintln!(
        "civicast: the daemon did not apply the files within {} s, and the request is withdrawn: is `civicast serve` running on {}? Its log says why an edit was refused (`civicast check` lists the errors)",
        wait.as_secs(),
        settings.devices.display()
    );
    Ok(ExitCode::from(1))
}
