//! Inspections and findings in the database (migration 0012): visits, photos by SHA-256,
//! findings and their events, each row written once (the tables' triggers refuse updates
//! and deletes), and the company a `company` token is bound to. One SQL text serves both
//! backends, as in `store::urgent`.
//!
//! Owns: those statements. Must not decide which event a finding allows (`core::inspect`
//! does; a second writer of the same next event is told by the primary key, `append_event`).

use std::collections::HashMap;
use std::future::Future;

use sqlx::Row;

use super::{Db, PgStore, Result, Role, SqliteStore, StoreError};
use crate::core::inspect::finding::EventKind;
use crate::core::inspect::{Finding, FindingEvent, Inspection, ItemResult};

/// The inspection rows.
pub trait InspectStore: Send + Sync {
    /// A `company` token bound to `company`; its id.
    fn create_company_token(
        &self,
        name: &str,
        hash: &str,
        company: &str,
        now_ms: i64,
    ) -> impl Future<Output = Result<i64>> + Send;
    /// The company a token is bound to.
    fn token_company(&self, token: i64) -> impl Future<Output = Result<Option<String>>> + Send;
    /// A visit and the findings its failed items open, in one transaction.
    fn record_inspection(
        &self,
        v: &Inspection,
        findings: &[Finding],
    ) -> impl Future<Output = Result<()>> + Send;
    /// Visits in [from, to), oldest first.
    fn inspections_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Future<Output = Result<Vec<Inspection>>> + Send;
    fn inspection(&self, id: &str) -> impl Future<Output = Result<Option<Inspection>>> + Send;
    /// Stores a photo under its SHA-256 (kept as it is when stored already).
    fn add_photo(
        &self,
        sha256: &str,
        media_type: &str,
        bytes: &[u8],
        now_ms: i64,
    ) -> impl Future<Output = Result<()>> + Send;
    fn photo(&self, sha256: &str)
        -> impl Future<Output = Result<Option<(String, Vec<u8>)>>> + Send;
    /// New findings with their first events (proposals), in one transaction.
    fn add_findings(&self, findings: &[Finding]) -> impl Future<Output = Result<()>> + Send;
    /// Appends `e` to a finding's events; false when an event with its `seq` exists already
    /// (another change came first).
    fn append_event(
        &self,
        finding: &str,
        e: &FindingEvent,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Every finding (of `company` only, when given), oldest first, with its events.
    fn findings(&self, company: Option<&str>) -> impl Future<Output = Result<Vec<Finding>>> + Send;
    fn finding(&self, id: &str) -> impl Future<Output = Result<Option<Finding>>> + Send;
}

const VISIT_COLS: &str = "id, unit, company, at, by_name, by_token, recorded_at, items, evidence";
const EVENT_COLS: &str =
    "finding, seq, kind, at, by_name, by_token, note, photos, deadline, source";

fn bad(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("{what} unreadable: {e}"))
}

macro_rules! visit_row {
    ($r:expr) => {{
        let r = $r;
        let items: String = r.try_get("items")?;
        let evidence: Option<String> = r.try_get("evidence")?;
        Inspection {
            id: r.try_get("id")?,
            unit: r.try_get("unit")?,
            company: r.try_get("company")?,
            at_ms: r.try_get("at")?,
            by: r.try_get("by_name")?,
            by_token: r.try_get("by_token")?,
            recorded_ms: r.try_get("recorded_at")?,
            items: serde_json::from_str::<Vec<ItemResult>>(&items)
                .map_err(|e| bad("inspection items", e))?,
            evidence: evidence
                .map(|e| serde_json::from_str(&e))
                .transpose()
                .map_err(|e| bad("inspection evidence", e))?,
        }
    }};
}

macro_rules! event_row {
    ($r:expr) => {{
        let r = $r;
        let kind: String = r.try_get("kind")?;
        let photos: String = r.try_get("photos")?;
        let finding: String = r.try_get("finding")?;
        (
            finding,
            FindingEvent {
                seq: r.try_get("seq")?,
                kind: EventKind::parse(&kind).ok_or_else(|| bad("finding event kind", &kind))?,
                at_ms: r.try_get("at")?,
                by: r.try_get("by_name")?,
                by_token: r.try_get("by_token")?,
                note: r.try_get("note")?,
                photos: serde_json::from_str(&photos)
                    .map_err(|e| bad("finding event photos", e))?,
                deadline_ms: r.try_get("deadline")?,
                source: r.try_get("source")?,
            },
        )
    }};
}

/// Inserts one event on `$conn` (a pool or a transaction); the rows written.
macro_rules! insert_event {
    ($conn:expr, $finding:expr, $e:expr) => {{
        let e = $e;
        let photos = serde_json::to_string(&e.photos).map_err(|x| bad("photos", x))?;
        sqlx::query(&format!(
            "INSERT INTO finding_events ({EVENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING"
        ))
        .bind($finding)
        .bind(e.seq)
        .bind(e.kind.as_str())
        .bind(e.at_ms)
        .bind(&e.by)
        .bind(e.by_token)
        .bind(&e.note)
        .bind(photos)
        .bind(e.deadline_ms)
        .bind(&e.source)
        .execute($conn)
        .await?
        .rows_affected()
    }};
}

macro_rules! insert_findings {
    ($tx:expr, $findings:expr) => {
        for f in $findings {
            sqlx::query("INSERT INTO findings (id, unit, company, item, inspection, display) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(&f.id)
                .bind(&f.unit)
                .bind(&f.company)
                .bind(&f.item)
                .bind(&f.inspection)
                .bind(&f.display)
                .execute(&mut *$tx)
                .await?;
            for e in &f.events {
                if insert_event!(&mut *$tx, &f.id, e) != 1 {
                    return Err(StoreError::Invalid(format!("finding {}: event {} twice", f.id, e.seq)));
                }
            }
        }
    };
}

macro_rules! inspect_impl {
    ($store:ty) => {
        impl InspectStore for $store {
            async fn create_company_token(&self, name: &str, hash: &str, company: &str, now_ms: i64) -> Result<i64> {
                let r = sqlx::query("INSERT INTO tokens (name, role, hash, created_at, company) VALUES ($1, $2, $3, $4, $5) RETURNING id")
                    .bind(name)
                    .bind(Role::Company.as_str())
                    .bind(hash)
                    .bind(now_ms)
                    .bind(company)
                    .fetch_one(self.pool())
                    .await?;
                Ok(r.try_get("id")?)
            }

            async fn token_company(&self, token: i64) -> Result<Option<String>> {
                let r = sqlx::query("SELECT company FROM tokens WHERE id = $1")
                    .bind(token)
                    .fetch_optional(self.pool())
                    .await?;
                Ok(match r {
                    Some(r) => r.try_get("company")?,
                    None => None,
                })
            }

            async fn record_inspection(&self, v: &Inspection, findings: &[Finding]) -> Result<()> {
                let items = serde_json::to_string(&v.items).map_err(|e| bad("items", e))?;
                let evidence = v.evidence.as_ref().map(|e| e.to_string());
                let mut tx = self.pool().begin().await?;
                sqlx::query(&format!("INSERT INTO inspections ({VISIT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"))
                    .bind(&v.id)
                    .bind(&v.unit)
                    .bind(&v.company)
                    .bind(v.at_ms)
                    .bind(&v.by)
                    .bind(v.by_token)
                    .bind(v.recorded_ms)
                    .bind(items)
                    .bind(evidence)
                    .execute(&mut *tx)
                    .await?;
                insert_findings!(tx, findings);
                tx.commit().await?;
                Ok(())
            }

            async fn inspections_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<Inspection>> {
                let rows = sqlx::query(&format!("SELECT {VISIT_COLS} FROM inspections WHERE at >= $1 AND at < $2 ORDER BY at, id"))
                    .bind(from_ms)
                    .bind(to_ms)
                    .fetch_all(self.pool())
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    out.push(visit_row!(r));
                }
                Ok(out)
            }

            async fn inspection(&self, id: &str) -> Result<Option<Inspection>> {
                let r = sqlx::query(&format!("SELECT {VISIT_COLS} FROM inspections WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(self.pool())
                    .await?;
                Ok(match r {
                    Some(r) => Some(visit_row!(&r)),
                    None => None,
                })
            }

            async fn add_photo(&self, sha256: &str, media_type: &str, bytes: &[u8], now_ms: i64) -> Result<()> {
                sqlx::query("INSERT INTO photos (sha256, media_type, bytes, stored_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
                    .bind(sha256)
                    .bind(media_type)
                    .bind(bytes)
                    .bind(now_ms)
                    .execute(self.pool())
                    .await?;
                Ok(())
            }

            async fn photo(&self, sha256: &str) -> Result<Option<(String, Vec<u8>)>> {
                let r = sqlx::query("SELECT media_type, bytes FROM photos WHERE sha256 = $1")
                    .bind(sha256)
                    .fetch_optional(self.pool())
                    .await?;
                Ok(match r {
                    Some(r) => Some((r.try_get("media_type")?, r.try_get("bytes")?)),
                    None => None,
                })
            }

            async fn add_findings(&self, findings: &[Finding]) -> Result<()> {
                let mut tx = self.pool().begin().await?;
                insert_findings!(tx, findings);
                tx.commit().await?;
                Ok(())
            }

            async fn append_event(&self, finding: &str, e: &FindingEvent) -> Result<bool> {
                Ok(insert_event!(self.pool(), finding, e) == 1)
            }

            async fn findings(&self, company: Option<&str>) -> Result<Vec<Finding>> {
                const F: &str = "SELECT id, unit, company, item, inspection, display FROM findings";
                const E: &str = "SELECT e.finding, e.seq, e.kind, e.at, e.by_name, e.by_token, e.note, e.photos, e.deadline, e.source FROM finding_events e JOIN findings f ON f.id = e.finding";
                let (heads, events) = match company {
                    Some(c) => (
                        sqlx::query(&format!("{F} WHERE company = $1 ORDER BY id")).bind(c).fetch_all(self.pool()).await?,
                        sqlx::query(&format!("{E} WHERE f.company = $1 ORDER BY e.finding, e.seq")).bind(c).fetch_all(self.pool()).await?,
                    ),
                    None => (
                        sqlx::query(&format!("{F} ORDER BY id")).fetch_all(self.pool()).await?,
                        sqlx::query(&format!("{E} ORDER BY e.finding, e.seq")).fetch_all(self.pool()).await?,
                    ),
                };
                let mut by: HashMap<String, Vec<FindingEvent>> = HashMap::new();
                for r in &events {
                    let (f, e) = event_row!(r);
                    by.entry(f).or_default().push(e);
                }
                let mut out = Vec::with_capacity(heads.len());
                for r in &heads {
                    let id: String = r.try_get("id")?;
                    out.push(Finding {
                        events: by.remove(&id).unwrap_or_default(),
                        id,
                        unit: r.try_get("unit")?,
                        company: r.try_get("company")?,
                        item: r.try_get("item")?,
                        inspection: r.try_get("inspection")?,
                        display: r.try_get("display")?,
                    });
                }
                Ok(out)
            }

            async fn finding(&self, id: &str) -> Result<Option<Finding>> {
                let r = sqlx::query("SELECT id, unit, company, item, inspection, display FROM findings WHERE id = $1")
                    .bind(id)
                    .fetch_optional(self.pool())
                    .await?;
                let Some(r) = r else { return Ok(None) };
                let rows = sqlx::query(&format!("SELECT {EVENT_COLS} FROM finding_events WHERE finding = $1 ORDER BY seq"))
                    .bind(id)
                    .fetch_all(self.pool())
                    .await?;
                let mut events = Vec::with_capacity(rows.len());
                for e in &rows {
                    events.push(event_row!(e).1);
                }
                Ok(Some(Finding {
                    id: r.try_get("id")?,
                    unit: r.try_get("unit")?,
                    company: r.try_get("company")?,
                    item: r.try_get("item")?,
                    inspection: r.try_get("inspection")?,
                    display: r.try_get("display")?,
                    events,
                }))
            }
        }
    };
}

inspect_impl!(SqliteStore);
inspect_impl!(PgStore);

macro_rules! on_backend {
    ($db:expr, $s:ident => $call:expr) => {
        match $db {
            Db::Sqlite($s) => $call.await,
            Db::Postgres($s) => $call.await,
        }
    };
}

impl InspectStore for Db {
    async fn create_company_token(
        &self,
        name: &str,
        hash: &str,
        company: &str,
        now_ms: i64,
    ) -> Result<i64> {
        on_backend!(self, s => s.create_company_token(name, hash, company, now_ms))
    }
    async fn token_company(&self, token: i64) -> Result<Option<String>> {
        on_backend!(self, s => s.token_company(token))
    }
    async fn record_inspection(&self, v: &Inspection, findings: &[Finding]) -> Result<()> {
        on_backend!(self, s => s.record_inspection(v, findings))
    }
    async fn inspections_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<Inspection>> {
        on_backend!(self, s => s.inspections_between(from_ms, to_ms))
    }
    async fn inspection(&self, id: &str) -> Result<Option<Inspection>> {
        on_backend!(self, s => s.inspection(id))
    }
    async fn add_photo(
        &self,
        sha256: &str,
        media_type: &str,
        bytes: &[u8],
        now_ms: i64,
    ) -> Result<()> {
        on_backend!(self, s => s.add_photo(sha256, media_type, bytes, now_ms))
    }
    async fn photo(&self, sha256: &str) -> Result<Option<(String, Vec<u8>)>> {
        on_backend!(self, s => s.photo(sha256))
    }
    async fn add_findings(&self, findings: &[Finding]) -> Result<()> {
        on_backend!(self, s => s.add_findings(findings))
    }
    async fn append_event(&self, finding: &str, e: &FindingEvent) -> Result<bool> {
        on_backend!(self, s => s.append_event(finding, e))
    }
    async fn findings(&self, company: Option<&str>) -> Result<Vec<Finding>> {
        on_backend!(self, s => s.findings(company))
    }
    async fn finding(&self, id: &str) -> Result<Option<Finding>> {
        on_backend!(self, s => s.finding(id))
    }
}
