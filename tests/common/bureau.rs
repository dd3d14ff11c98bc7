//! The transport bureau's city for the inspection tests (API and console): three
//! displays of two companies, units beside them, a checklist, and the daemon with the API
//! on a clock the test sets.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use civicast::api::{self, ApiState};
use civicast::core::wire::Status;
use civicast::store::{Batch, Db, InspectStore, NewPlay, PresenceEvent, ReceiptRow, Role, Store};

use super::*;

const FLEET: &str = "id,class,operator\nbus-1,bus_led,city-bus\nbus-2,bus_led,city-bus\ntaxi-1,taxi_top,jiaotong-taxi\n";

const FEEDS: &str = r#"
timezone = "Asia/Shanghai"

[[feed]]
id = "bus"
select = { class = "bus_led" }
interval = "3m"

[[feed]]
id = "taxi"
select = { class = "taxi_top" }
interval = "3m"
"#;

/// bus-1's board is on the bus `bus-K1-0001`; bus-9 has no board; one passenger station.
const UNITS: &str = "id,kind,company,display,type\nbus-K1-0001,bus,city-bus,bus-1,\nbus-9,bus,city-bus,,\nstation-1,station,keyun,,passenger\n";

const INSPECTIONS: &str = r#"
recheck_days = 1
[sample]
bus = 2
taxi = 1
stop = 0
station = 0
"#;

/// A PNG's first bytes: enough for the type check.
pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";

pub struct Bureau {
    pub router: axum::Router,
    pub clock: Arc<ShiftedClock>,
    pub db: Db,
    pub tokens: std::collections::HashMap<&'static str, String>,
    pub running: civicast::daemon::App,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub dir: tempfile::TempDir,
}

impl Bureau {
    /// The daemon on the bureau's city in `dir`, the API beside it on a clock the test
    /// sets, a token for each of `accounts` and for a company of buses and one of taxis.
    pub async fn start(
        dir: tempfile::TempDir,
        db: Db,
        accounts: &[(&'static str, Role)],
    ) -> Bureau {
        City {
            fleet: FLEET,
            feeds: FEEDS,
            ..City::default()
        }
        .write(dir.path());
        std::fs::create_dir_all(dir.path().join("devices/units")).expect("mkdir");
        std::fs::write(dir.path().join("devices/units/units.csv"), UNITS).expect("units");
        std::fs::write(dir.path().join("devices/inspections.toml"), INSPECTIONS).expect("toml");
        let (running, shutdown) =
            start_daemon(dir.path(), db.clone(), Broker::Embedded, |_| {}).await;
        let mut tokens = create_tokens(&db, accounts).await;
        for (name, company) in [("co-bus", "city-bus"), ("co-taxi", "jiaotong-taxi")] {
            let t = api::new_token();
            db.create_company_token(name, &api::token_hash(&t), company, 0)
                .await
                .expect("company token");
            tokens.insert(name, t);
        }
        let (setup, problems) = civicast::files::load_inspect(
            &dir.path().join("devices"),
            &running.shared().current().devices,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let clock = Arc::new(ShiftedClock::default());
        let state = ApiState::new(
            db.clone(),
            running.shared().clone(),
            clock.clone(),
            Default::default(),
            api::Limits::default(),
        )
        .with_inspect(setup);
        Bureau {
            router: api::router(Arc::new(state)),
            clock,
            db,
            tokens,
            running,
            shutdown,
            dir,
        }
    }

    /// The API's clock at `rfc3339`.
    pub fn at(&self, rfc3339: &str) {
        let t = chrono::DateTime::parse_from_rfc3339(rfc3339).expect("time");
        let offset = t.timestamp_millis() - chrono::Utc::now().timestamp_millis();
        self.clock.offset_ms.store(offset, Ordering::Relaxed);
    }

    /// Plays on `display` every 3 minutes in [from, to), each played: what the daemon would
    /// have stored.
    pub async fn played(&self, display: &str, from: i64, to: i64) {
        let c = self.running.shared().current();
        let keys = civicast::daemon::sync_inventory(&self.db, &c, from)
            .await
            .expect("keys");
        let device = keys.devices[display];
        let slogan = self
            .db
            .slogan_key("civility", 1, "jiang-wenming")
            .await
            .expect("slogan");
        let mut receipts = Vec::new();
        let mut t = from + 30_000;
        while t < to {
            let play_id = ulid::Ulid::new().to_string();
            let np = NewPlay {
                play_id: play_id.clone(),
                feed: None,
                device: Some(device),
                slogan,
                issued_ms: t - 1_000,
                expires_ms: t + 180_000,
                members: 1,
            };
            let play = self.db.record_play(&np, None).await.expect("play");
            receipts.push(ReceiptRow {
                device,
                play,
                started_ms: t,
                duration_ms: 15_000,
                status: Status::Played,
                slogan,
                feed: 0,
            });
            t += 180_000;
        }
        self.db
            .commit_batch(&Batch {
                receipts,
                ..Batch::default()
            })
            .await
            .expect("receipts");
    }

    /// `display` online from `since` on.
    pub async fn online(&self, display: &str, since: i64) {
        let c = self.running.shared().current();
        let keys = civicast::daemon::sync_inventory(&self.db, &c, since)
            .await
            .expect("keys");
        let presence = vec![PresenceEvent {
            device: keys.devices[display],
            online: true,
            at_ms: since,
        }];
        self.db
            .commit_batch(&Batch {
                presence,
                ..Batch::default()
            })
            .await
            .expect("presence");
    }
}

/// Milliseconds of an RFC 3339 time.
pub fn ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("time")
        .timestamp_millis()
}
