//! Urgent messages in the database (migration 0011, table `urgent_messages`): a request
//! written once, its approval and its cancellation each written once (the table's triggers
//! refuse any other change, and any delete). One SQL text serves both backends: their
//! placeholders (`$1`...) and types (64-bit integers, text) agree here.
//!
//! Owns: those statements. Must not decide who may approve or cancel (`core::urgent` does;
//! the store asks it inside the transaction that writes the answer), nor publish.

use std::future::Future;

use sqlx::Row;

use super::{Db, PgStore, Result, SqliteStore, StoreError};
use crate::core::approval::Approver;
use crate::core::urgent::{self, Targets, UrgentMessage, UrgentRefusal};

/// Why an approval or cancellation was not written.
#[derive(Debug, thiserror::Error)]
pub enum UrgentStoreError {
    #[error(transparent)]
    Refused(#[from] UrgentRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for UrgentStoreError {
    fn from(e: sqlx::Error) -> Self {
        UrgentStoreError::Store(StoreError::Db(e))
    }
}

/// The urgent messages' rows.
pub trait UrgentStore: Send + Sync {
    /// Stores a new request (approved already when `msg.approved_ms` is set: an admin's).
    fn add_urgent(&self, msg: &UrgentMessage) -> impl Future<Output = Result<()>> + Send;
    fn urgent(&self, id: &str) -> impl Future<Output = Result<Option<UrgentMessage>>> + Send;
    /// Every message, newest request first; those expiring at or after `expiring_from_ms`
    /// only, when given.
    fn urgent_messages(
        &self,
        expiring_from_ms: Option<i64>,
    ) -> impl Future<Output = Result<Vec<UrgentMessage>>> + Send;
    /// Approves a pending message as `core::urgent::approvable` allows; the message as
    /// approved. Two approvers at once: one wins, the other is refused as not pending.
    fn approve_urgent(
        &self,
        id: &str,
        by: &Approver<'_>,
        now_ms: i64,
    ) -> impl Future<Output = std::result::Result<UrgentMessage, UrgentStoreError>> + Send;
    /// Cancels a pending or published message; the message as cancelled.
    fn cancel_urgent(
        &self,
        id: &str,
        by: &str,
        now_ms: i64,
    ) -> impl Future<Output = std::result::Result<UrgentMessage, UrgentStoreError>> + Send;
}

const COLS: &str = "id, text, targets, expires_at, requested_by, requested_token, requested_at, \
    approved_by, approved_token, approved_at, cancelled_by, cancelled_at";

/// A row of `COLS`, from either backend.
macro_rules! message_row {
    ($r:expr) => {{
        let r = $r;
        let targets: String = r.try_get("targets")?;
        let targets: Targets = serde_json::from_str(&targets)
            .map_err(|e| StoreError::Invalid(format!("urgent message targets unreadable: {e}")))?;
        UrgentMessage {
            id: r.try_get("id")?,
            text: r.try_get("text")?,
            targets,
            expires_ms: r.try_get("expires_at")?,
            requested_by: r.try_get("requested_by")?,
            requested_token: r.try_get("requested_token")?,
            requested_ms: r.try_get("requested_at")?,
            approved_by: r.try_get("approved_by")?,
            approved_token: r.try_get("approved_token")?,
            approved_ms: r.try_get("approved_at")?,
            cancelled_by: r.try_get("cancelled_by")?,
            cancelled_ms: r.try_get("cancelled_at")?,
        }
    }};
}

/// The same statements on either backend's pool (`$pool`), one impl each.
macro_rules! urgent_impl {
    ($store:ty) => {
        impl UrgentStore for $store {
            async fn add_urgent(&self, m: &UrgentMessage) -> Result<()> {
                let targets = serde_json::to_string(&m.targets)
                    .map_err(|e| StoreError::Invalid(format!("urgent targets: {e}")))?;
                sqlx::query(&format!(
                    "INSERT INTO urgent_messages ({COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                ))
                .bind(&m.id)
                .bind(&m.text)
                .bind(targets)
                .bind(m.expires_ms)
                .bind(&m.requested_by)
                .bind(m.requested_token)
                .bind(m.requested_ms)
                .bind(&m.approved_by)
                .bind(m.approved_token)
                .bind(m.approved_ms)
                .bind(&m.cancelled_by)
                .bind(m.cancelled_ms)
                .execute(self.pool())
                .await?;
                Ok(())
            }

            async fn urgent(&self, id: &str) -> Result<Option<UrgentMessage>> {
                let row = sqlx::query(&format!("SELECT {COLS} FROM urgent_messages WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(self.pool())
                    .await?;
                Ok(match row {
                    Some(r) => Some(message_row!(&r)),
                    None => None,
                })
            }

            async fn urgent_messages(&self, from: Option<i64>) -> Result<Vec<UrgentMessage>> {
                let rows = sqlx::query(&format!(
                    "SELECT {COLS} FROM urgent_messages WHERE expires_at >= $1 ORDER BY requested_at DESC, id DESC"
                ))
                .bind(from.unwrap_or(i64::MIN))
                .fetch_all(self.pool())
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in &rows {
                    out.push(message_row!(r));
                }
                Ok(out)
            }

            async fn approve_urgent(
                &self,
                id: &str,
                by: &Approver<'_>,
                now_ms: i64,
            ) -> std::result::Result<UrgentMessage, UrgentStoreError> {
                let mut msg = self.urgent(id).await?;
                urgent::approvable(id, msg.as_ref(), by, now_ms)?;
                // Written only while still pending: of two approvers at once, one changes
                // the row and the other is told it is no longer pending.
                let done = sqlx::query(
                    "UPDATE urgent_messages SET approved_by = $1, approved_token = $2, approved_at = $3
                     WHERE id = $4 AND approved_at IS NULL AND cancelled_at IS NULL",
                )
                .bind(by.name)
                .bind(by.token)
                .bind(now_ms)
                .bind(id)
                .execute(self.pool())
                .await?
                .rows_affected();
                let m = msg.as_mut().ok_or_else(|| UrgentRefusal::NotFound(id.to_owned()))?;
                if done != 1 {
                    let now = self.urgent(id).await?.unwrap_or_else(|| m.clone());
                    return Err(UrgentRefusal::NotPending(id.to_owned(), now.status(now_ms).as_str()).into());
                }
                m.approved_by = Some(by.name.to_owned());
                m.approved_token = by.token;
                m.approved_ms = Some(now_ms);
                Ok(m.clone())
            }

            async fn cancel_urgent(
                &self,
                id: &str,
                by: &str,
                now_ms: i64,
            ) -> std::result::Result<UrgentMessage, UrgentStoreError> {
                let mut msg = self.urgent(id).await?;
                urgent::cancellable(id, msg.as_ref(), now_ms)?;
                let done = sqlx::query(
                    "UPDATE urgent_messages SET cancelled_by = $1, cancelled_at = $2
                     WHERE id = $3 AND cancelled_at IS NULL",
                )
                .bind(by)
                .bind(now_ms)
                .bind(id)
                .execute(self.pool())
                .await?
                .rows_affected();
                let m = msg.as_mut().ok_or_else(|| UrgentRefusal::NotFound(id.to_owned()))?;
                if done != 1 {
                    return Err(UrgentRefusal::Closed(id.to_owned(), "cancelled").into());
                }
                m.cancelled_by = Some(by.to_owned());
                m.cancelled_ms = Some(now_ms);
                Ok(m.clone())
            }
        }
    };
}

urgent_impl!(SqliteStore);
urgent_impl!(PgStore);

/// Calls the same method on whichever backend `$db` holds.
macro_rules! on_backend {
    ($db:expr, $s:ident => $call:expr) => {
        match $db {
            Db::Sqlite($s) => $call.await,
            Db::Postgres($s) => $call.await,
        }
    };
}

impl UrgentStore for Db {
    async fn add_urgent(&self, msg: &UrgentMessage) -> Result<()> {
        on_backend!(self, s => s.add_urgent(msg))
    }
    async fn urgent(&self, id: &str) -> Result<Option<UrgentMessage>> {
        on_backend!(self, s => s.urgent(id))
    }
    async fn urgent_messages(&self, from: Option<i64>) -> Result<Vec<UrgentMessage>> {
        on_backend!(self, s => s.urgent_messages(from))
    }
    async fn approve_urgent(
        &self,
        id: &str,
        by: &Approver<'_>,
        now_ms: i64,
    ) -> std::result::Result<UrgentMessage, UrgentStoreError> {
        on_backend!(self, s => s.approve_urgent(id, by, now_ms))
    }
    async fn cancel_urgent(
        &self,
        id: &str,
        by: &str,
        now_ms: i64,
    ) -> std::result::Result<UrgentMessage, UrgentStoreError> {
        on_backend!(self, s => s.cancel_urgent(id, by, now_ms))
    }
}
