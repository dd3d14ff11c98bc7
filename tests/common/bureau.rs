//! The transport bureau's city for the inspection tests (API and console): three
//! displays of two companies, units beside them, a checklist, and the daemon with the API
//! on a clock the test sets.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use civicast::api::{self, ApiState};
use civicast::store::{Db, InspectStore, Role};

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
}
