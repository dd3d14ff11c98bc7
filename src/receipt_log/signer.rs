//! The daemon's checkpoint signer: one task that signs the tree as stored every
//! `log_checkpoint_every` (when it grew) and at the close of each day in the deployment's
//! zone, never per request. Several daemons may run it: the store keeps the first
//! checkpoint of a size (compare-and-swap), and each signs only a tree consistent with the
//! last checkpoint.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use signed_note::StandardSigner;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use super::{sign_checkpoint, Signed};
use crate::daemon::{Clock, Shared};
use crate::store::Db;

pub struct CheckpointSigner {
    pub store: Db,
    pub signer: StandardSigner,
    pub shared: Shared,
    pub clock: Arc<dyn Clock>,
    pub every: Duration,
    pub shutdown: CancellationToken,
}

impl CheckpointSigner {
    pub async fn run(self) {
        loop {
            self.round().await;
            let now = self.clock.now();
            let wait = self
                .every
                .min(until_day_ends(now, self.shared.current().timezone));
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // The receipts committed since the last round get a checkpoint before the exit.
        self.round().await;
    }

    async fn round(&self) {
        let now_ms = self.clock.now().timestamp_millis();
        match sign_checkpoint(&self.store, &self.signer, now_ms).await {
            Ok(Signed::New(size)) => info!(size, "receipt log checkpoint signed"),
            Ok(Signed::Unchanged(size)) => {
                debug!(size, "receipt log unchanged since its checkpoint")
            }
            Ok(Signed::Raced) => debug!("another signer stored this checkpoint first"),
            Err(e) => error!(error = %format!("{e:#}"), "receipt log checkpoint not signed"),
        }
    }
}

/// How long until the next local midnight (a day closes), at least a second.
fn until_day_ends(now: DateTime<Utc>, tz: chrono_tz::Tz) -> Duration {
    let local = now.with_timezone(&tz).date_naive();
    let next = local
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|t| tz.from_local_datetime(&t).earliest());
    match next {
        Some(t) => (t.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_secs(1)),
        None => Duration::from_secs(3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_closes_at_local_midnight() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 15, 30, 0).unwrap();
        // 23:30 in Shanghai: half an hour to midnight.
        assert_eq!(
            until_day_ends(now, chrono_tz::Asia::Shanghai),
            Duration::from_secs(1800)
        );
    }
}
