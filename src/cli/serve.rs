//! `civicast serve`: the daemon, until SIGINT or SIGTERM; refuses to start (exit 64) while
//! the operators' files have errors.
//!
//! Owns: the signal handling around the daemon. Must not start it any other way than
//! `daemon::App::start`.

use std::process::ExitCode;

use tracing::info;

use super::{load_catalog, open_store, shutdown_signal, EXIT_CONFIG};
use crate::core::model::Catalog;
use crate::daemon::{App, Listeners, Startup};
use crate::settings::Settings;
use crate::store::Db;

pub async fn run(settings: Settings) -> anyhow::Result<ExitCode> {
    let catalog = match load_catalog(&settings.devices, &settings.schedules) {
        Ok(c) => c,
        Err(n) => {
            eprintln!("civicast: refusing to start: {n} errors in devices/ or schedules/");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let store = open_store(&settings).await?;
    serve_with(store, settings, catalog).await
}

async fn serve_with(store: Db, settings: Settings, catalog: Catalog) -> anyhow::Result<ExitCode> {
    let listeners = Listeners::bind(&settings).await?;
    let app = App::start(Startup {
        listeners,
        ..Startup::new(settings, store, catalog)
    })
    .await?;
    shutdown_signal().await;
    info!("shutting down: draining requests, committing pending receipts");
    app.stop();
    app.wait().await;
    Ok(ExitCode::SUCCESS)
}
