//! What the daemon stored, read back the way an auditor counts it (the audit queries) and
//! row by row (straight from the tables), and compared with what the displays sent.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::Duration;

use civicast::core::audit::{PlaysParams, PlaysQuery};
use civicast::store::{PgStore, SqliteStore, Store};

use super::mqtt::Display;

/// Receipts with status `played` per display: `audit_plays` grouped by device, with no
/// other option, as an auditor first asks it.
pub async fn played_by_device<S: Store>(store: &S) -> BTreeMap<String, i64> {
    let q = PlaysQuery::parse(
        &PlaysParams {
            group_by: Some("device".into()),
            ..Default::default()
        },
        chrono_tz::Asia::Shanghai,
    )
    .expect("query");
    store
        .audit_plays(&q)
        .await
        .expect("audit")
        .into_iter()
        .map(|r| (r.values[0].clone(), r.plays))
        .collect()
}

/// Stored receipts per display, all statuses, as the audit counts them (`audit_plays`
/// grouped by device, summed over the four statuses).
pub async fn audited_by_device<S: Store>(store: &S) -> BTreeMap<String, i64> {
    let mut out: BTreeMap<String, i64> = BTreeMap::new();
    for status in ["played", "skipped", "expired", "failed"] {
        let q = PlaysQuery::parse(
            &PlaysParams {
                group_by: Some("device".into()),
                status: Some(status.into()),
                ..Default::default()
            },
            chrono_tz::Asia::Shanghai,
        )
        .expect("query");
        for r in store.audit_plays(&q).await.expect("audit") {
            *out.entry(r.values[0].clone()).or_default() += r.plays;
        }
    }
    out
}

const RECEIPT_ROWS: &str =
    "SELECT d.name, p.play_id FROM receipts r JOIN devices d ON d.id = r.device \
     JOIN plays p ON p.id = r.play ORDER BY d.name, p.play_id";

/// Every stored receipt row as (display, play id), straight from the table.
pub async fn receipt_rows<S: Tables>(store: &S) -> Vec<(String, String)> {
    store.receipts().await
}

const FEED_SLOGANS: &str = "SELECT s.slogan FROM plays p JOIN slogans s ON s.id = p.slogan \
     JOIN feeds f ON f.id = p.feed WHERE f.name = $1 ORDER BY p.id";

/// A store whose tables the tests read directly.
pub trait Tables {
    /// The slogans the daemon recorded on `feed`, in the order it recorded them.
    fn slogans_on(&self, feed: &str) -> impl Future<Output = Vec<String>> + Send;
    /// Every stored receipt row as (display, play id), ordered.
    fn receipts(&self) -> impl Future<Output = Vec<(String, String)>> + Send;
}

impl Tables for PgStore {
    async fn slogans_on(&self, feed: &str) -> Vec<String> {
        sqlx::query_scalar(FEED_SLOGANS)
            .bind(feed)
            .fetch_all(self.pool())
            .await
            .expect("plays")
    }
    async fn receipts(&self) -> Vec<(String, String)> {
        sqlx::query_as(RECEIPT_ROWS)
            .fetch_all(self.pool())
            .await
            .expect("receipt rows")
    }
}

impl Tables for SqliteStore {
    async fn slogans_on(&self, feed: &str) -> Vec<String> {
        sqlx::query_scalar(FEED_SLOGANS)
            .bind(feed)
            .fetch_all(self.pool())
            .await
            .expect("plays")
    }
    async fn receipts(&self) -> Vec<(String, String)> {
        sqlx::query_as(RECEIPT_ROWS)
            .fetch_all(self.pool())
            .await
            .expect("receipt rows")
    }
}

impl Tables for civicast::store::Db {
    async fn slogans_on(&self, feed: &str) -> Vec<String> {
        match self {
            civicast::store::Db::Sqlite(s) => s.slogans_on(feed).await,
            civicast::store::Db::Postgres(p) => p.slogans_on(feed).await,
        }
    }
    async fn receipts(&self) -> Vec<(String, String)> {
        match self {
            civicast::store::Db::Sqlite(s) => s.receipts().await,
            civicast::store::Db::Postgres(p) => p.receipts().await,
        }
    }
}

/// The slogans the daemon recorded on `feed`, in the order it recorded them.
pub async fn feed_slogans<S: Tables>(store: &S, feed: &str) -> Vec<String> {
    store.slogans_on(feed).await
}

/// Compares what the displays sent with what is stored: per display the audit count, and
/// row by row (no row twice, none missing, none extra). Returns the problems, if any.
pub async fn compare_stored<S: Store + Tables>(store: &S, displays: &[Display]) -> Vec<String> {
    let mut problems = Vec::new();
    let sent: BTreeMap<String, BTreeSet<String>> = displays
        .iter()
        .map(|d| (d.id.clone(), d.sent_ids()))
        .collect();
    let want: BTreeMap<String, i64> = sent
        .iter()
        .map(|(d, s)| (d.clone(), s.len() as i64))
        .collect();
    let audited = audited_by_device(store).await;
    if audited != want {
        problems.push(format!(
            "audit_plays by device {audited:?}, displays sent {want:?}"
        ));
    }
    let rows = receipt_rows(store).await;
    let mut stored: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (d, p) in &rows {
        if !stored.entry(d.clone()).or_default().insert(p.clone()) {
            problems.push(format!("receipt stored twice: {d} {p}"));
        }
    }
    for (d, s) in &sent {
        let got = stored.get(d).cloned().unwrap_or_default();
        let missing: Vec<_> = s.difference(&got).collect();
        let extra: Vec<_> = got.difference(s).collect();
        if !missing.is_empty() || !extra.is_empty() {
            problems.push(format!("{d}: missing {missing:?}, never sent {extra:?}"));
        }
    }
    problems
}

/// Waits (up to `secs`) until every display's receipts are stored by the audit count, a
/// moment more for anything late, then compares row by row. Returns what differs.
pub async fn wait_all_stored_once<S: Store + Tables>(
    store: &S,
    displays: &[Display],
    secs: u64,
) -> Vec<String> {
    let want: BTreeMap<String, i64> = displays
        .iter()
        .map(|d| (d.id.clone(), d.sent_ids().len() as i64))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let got = audited_by_device(store).await;
        if got == want {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A late duplicate (a redelivery) must not change anything.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut problems = compare_stored(store, displays).await;
    if !problems.is_empty() {
        problems.push(format!("(waited {secs} s) displays:"));
        problems.extend(displays.iter().map(Display::summary));
    }
    problems
}
