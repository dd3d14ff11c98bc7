//! The [`ApiStore`] impl for PostgreSQL: tokens, ad-set revisions (approval and retirement,
//! serialized per ad set by an advisory lock) and the raw reads behind the audits
//! (presence, plays, receipts, raw and packed). Must not write receipts, rollups or
//! partitions.

use std::collections::{BTreeMap, HashMap};

use sqlx::{PgConnection, Row};

use super::*;
use crate::core::approval;
use crate::core::wire::Status;
use crate::store::sql::{
    feed_play_row, presence_key_span_row, retirement_row, revision_row, token_row, ALL_RETIREMENTS,
    ALL_TOKENS, RETIREMENT_COLS, REVISION_COLS, TOKEN_COLS,
};

/// A stored `status` (SMALLINT); None for a code this build does not know, which the
/// readers skip, as SQLite's do.
fn status_of(
    r: &sqlx::postgres::PgRow,
    i: usize,
) -> std::result::Result<Option<Status>, sqlx::Error> {
    let code: i16 = r.try_get(i)?;
    Ok(Status::from_code(i64::from(code)))
}

/// First key of the advisory locks that serialize writes to one ad set's revisions (the
/// second key is a hash of the schema and ad set name); an arbitrary constant ("adst").
const ADSET_LOCK_NS: i32 = 0x6164_7374;

/// Takes the transaction-scoped lock of `adset`: `add_revision`, `approve_latest` and
/// `retire` of one ad set run one at a time, as on SQLite's single writer. A hash collision
/// only makes two ad sets wait for each other.
async fn lock_adset(c: &mut PgConnection, adset: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema() || '.' || $2))")
        .bind(ADSET_LOCK_NS)
        .bind(adset)
        .execute(c)
        .await?;
    Ok(())
}

/// One ad set's revisions and retirement, read on `c` (inside an approval's transaction,
/// after its lock, or on any pooled connection for a plain read).
async fn load_history(c: &mut PgConnection, adset: &str) -> Result<Option<AdSetHistory>> {
    let revs = sqlx::query(&format!(
        "SELECT {REVISION_COLS} FROM adset_revisions WHERE adset = $1 ORDER BY rev"
    ))
    .bind(adset)
    .fetch_all(&mut *c)
    .await?;
    let retired = sqlx::query(&format!(
        "SELECT {RETIREMENT_COLS} FROM adset_retired WHERE adset = $1"
    ))
    .bind(adset)
    .fetch_optional(&mut *c)
    .await?;
    let revs = revs
        .iter()
        .map(revision_row)
        .collect::<std::result::Result<_, _>>()?;
    let retired = retired.as_ref().map(retirement_row).transpose()?;
    Ok(approval::history_of(adset, revs, retired))
}

impl PgStore {
    /// Retires every revision `adset` has now, under its lock. A retirement already covering
    /// them all is kept as it was (who retired first, and when); one that covers fewer
    /// (revisions came since) is replaced.
    async fn retire_row(
        &self,
        adset: &str,
        by: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        lock_adset(&mut tx, adset).await?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(rev) FROM adset_revisions WHERE adset = $1")
                .bind(adset)
                .fetch_one(&mut *tx)
                .await?;
        let Some(latest) = latest else {
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO adset_retired (adset, retired_by, retired_at, through_rev, reason) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (adset) DO UPDATE SET retired_by = excluded.retired_by, retired_at = excluded.retired_at,
               through_rev = excluded.through_rev, reason = excluded.reason
             WHERE adset_retired.through_rev < excluded.through_rev",
        )
        .bind(adset)
        .bind(by)
        .bind(now_ms)
        .bind(latest)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl ApiStore for PgStore {
    async fn create_token(&self, name: &str, role: Role, hash: &str, now_ms: i64) -> Result<i64> {
        let r = sqlx::query(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(name)
        .bind(role.as_str())
        .bind(hash)
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(r.try_get("id")?)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        let r = sqlx::query(&format!(
            "SELECT {TOKEN_COLS} FROM tokens WHERE hash = $1 AND revoked_at IS NULL"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(token_row).transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(ALL_TOKENS).fetch_all(&self.pool).await?;
        rows.iter().map(token_row).collect()
    }

    async fn revoke_token(&self, id: i64, now_ms: i64) -> Result<bool> {
        let r =
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(now_ms)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn add_revision(&self, rev: &Revision, approved: bool) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        // Two uploads of one ad set would otherwise both read the same MAX(rev) and one
        // would fail on the primary key. Under READ COMMITTED the SELECT below takes its
        // snapshot after the lock is granted, so it sees the other upload's revision.
        lock_adset(&mut tx, &rev.adset).await?;
        let next: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(rev), 0) + 1 FROM adset_revisions WHERE adset = $1",
        )
        .bind(&rev.adset)
        .fetch_one(&mut *tx)
        .await?;
        // A retirement stays: it covers the revisions before this one, and this one plays
        // only once approved (files come in approved).
        sqlx::query(
            "INSERT INTO adset_revisions (adset, rev, format, body, origin, uploaded_by, uploaded_token, uploaded_at, approved_by, approved_token, approved_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&rev.adset)
        .bind(next)
        .bind(&rev.format)
        .bind(&rev.body)
        .bind(&rev.origin)
        .bind(&rev.uploaded_by)
        .bind(rev.uploaded_token)
        .bind(rev.uploaded_ms)
        .bind(approved.then_some(rev.uploaded_by.as_str()))
        .bind(rev.uploaded_token.filter(|_| approved))
        .bind(approved.then_some(rev.uploaded_ms))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(next)
    }

    async fn adset_history(&self, adset: &str) -> Result<Option<AdSetHistory>> {
        let mut c = self.pool.acquire().await?;
        load_history(&mut c, adset).await
    }

    async fn adset_histories(&self) -> Result<Vec<AdSetHistory>> {
        // Byte order of names, as SQLite's BINARY collation sorts them. Revisions and
        // retirements are read in one snapshot.
        let mut tx = self.pool.begin().await?;
        ddl(
            &mut tx,
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY",
        )
        .await?;
        let revs = sqlx::query(&format!(
            "SELECT {REVISION_COLS} FROM adset_revisions ORDER BY adset COLLATE \"C\", rev"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let retired: HashMap<String, Retirement> = sqlx::query(ALL_RETIREMENTS)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("adset")?, retirement_row(r)?)))
            .collect::<std::result::Result<_, sqlx::Error>>()?;
        tx.commit().await?;
        let revs = revs
            .iter()
            .map(revision_row)
            .collect::<std::result::Result<_, _>>()?;
        Ok(approval::group_histories(revs, retired))
    }

    async fn approve_latest(
        &self,
        adset: &str,
        by: &Approver<'_>,
        now_ms: i64,
    ) -> Result<Revision> {
        let mut tx = self.pool.begin().await?;
        // Serialized with uploads and retirements of the same ad set: two approvers cannot
        // both approve, nor approve a revision that a concurrent upload just superseded.
        lock_adset(&mut tx, adset).await?;
        let history = load_history(&mut tx, adset).await?;
        let mut rev = approval::approvable(adset, history.as_ref(), by)?.clone();
        sqlx::query(
            "UPDATE adset_revisions SET approved_by = $1, approved_token = $2, approved_at = $3 WHERE adset = $4 AND rev = $5",
        )
        .bind(by.name)
        .bind(by.token)
        .bind(now_ms)
        .bind(adset)
        .bind(rev.rev)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        rev.approved_by = Some(by.name.to_owned());
        rev.approved_token = by.token;
        rev.approved_ms = Some(now_ms);
        Ok(rev)
    }

    async fn retire(&self, adset: &str, by: &str, now_ms: i64) -> Result<bool> {
        self.retire_row(adset, by, None, now_ms).await
    }

    async fn retire_for(&self, adset: &str, by: &str, reason: &str, now_ms: i64) -> Result<bool> {
        self.retire_row(adset, by, Some(reason), now_ms).await
    }

    async fn presence_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<PresenceSpan>> {
        self.presence_spans(from_ms, to_ms, None).await
    }

    async fn presence_of(
        &self,
        from_ms: i64,
        to_ms: i64,
        devices: &[String],
    ) -> Result<Vec<PresenceSpan>> {
        self.presence_spans(from_ms, to_ms, Some(devices)).await
    }

    async fn played_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        device: Option<&str>,
    ) -> Result<Vec<PlayedTimes>> {
        match device {
            Some(d) => {
                self.played_times(from_ms, to_ms, Some(&[d.to_owned()][..]))
                    .await
            }
            None => self.played_times(from_ms, to_ms, None).await,
        }
    }

    async fn played_of(
        &self,
        from_ms: i64,
        to_ms: i64,
        devices: &[String],
    ) -> Result<Vec<PlayedTimes>> {
        self.played_times(from_ms, to_ms, Some(devices)).await
    }

    async fn last_receipts(&self, devices: &[String]) -> Result<Vec<LastReceipt>> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        // One query: the newest receipt per display (DISTINCT ON), returned in the order
        // the names were asked, once per asked name, as SQLite's per-name loop does. Of the
        // packed rows only those holding the display's latest start are unnested; they are
        // found in the primary key alone (it carries max_start).
        let rows = sqlx::query(
            "WITH asked AS (
                 SELECT u.name, u.ord, d.id FROM UNNEST($1::text[]) WITH ORDINALITY AS u(name, ord)
                 JOIN devices d ON d.name = u.name
             ), newest_packed AS (
                 SELECT k.device, k.play_day::bigint * 86400000 + u.start_ms AS started_at,
                        u.play, (u.outcome & 7)::smallint AS status
                 FROM (SELECT DISTINCT id FROM asked) a
                 CROSS JOIN LATERAL (
                     SELECT x.play_day FROM receipts_packed x
                     WHERE x.device = a.id
                       AND x.max_start = (SELECT MAX(y.max_start) FROM receipts_packed y
                                          WHERE y.device = a.id)) top
                 JOIN receipts_packed k ON k.device = a.id AND k.play_day = top.play_day
                 CROSS JOIN LATERAL unnest(k.plays, k.starts, k.outcomes) AS u(play, start_ms, outcome)
             ), last AS (
                 SELECT DISTINCT ON (r.device) r.device, r.started_at, r.status
                 FROM (SELECT device, started_at, play, status FROM receipts
                       WHERE device IN (SELECT id FROM asked)
                       UNION ALL
                       SELECT device, started_at, play, status FROM newest_packed) r
                 ORDER BY r.device, r.started_at DESC, r.play DESC
             )
             SELECT a.name, l.started_at, l.status FROM asked a JOIN last l ON l.device = a.id
             ORDER BY a.ord",
        )
        .bind(devices)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(st) = status_of(r, 2)? {
                out.push(LastReceipt {
                    device: r.try_get(0)?,
                    started_ms: r.try_get(1)?,
                    status: st,
                });
            }
        }
        Ok(out)
    }

    async fn feed_plays_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<FeedPlay>> {
        let rows = sqlx::query(
            "SELECT p.id, f.name, p.issued_at, f.id FROM plays p JOIN feeds f ON f.id = p.feed
             WHERE p.issued_at >= $1 AND p.issued_at < $2 ORDER BY p.id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(feed_play_row)
            .collect::<std::result::Result<_, _>>()?)
    }

    async fn receipts_for_plays_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PlayReceipt>> {
        // A receipt of a play carries that play's issue day as play_day (see the
        // migration), so bounding play_day by the issue range prunes the partitions (and
        // the packed rows, by their BRIN index) to those days without losing a row.
        let first_day = day_i32(from_ms.div_euclid(MS_PER_DAY));
        let last_day = day_i32(to_ms.saturating_sub(1).div_euclid(MS_PER_DAY));
        let rows = sqlx::query(
            "SELECT r.device, r.play, r.status FROM receipts_all r JOIN plays p ON p.id = r.play
             WHERE p.issued_at >= $1 AND p.issued_at < $2
               AND r.play_day >= $3 AND r.play_day <= $4",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(first_day)
        .bind(last_day)
        .fetch_all(&self.pool)
        .await?;
        play_receipt_rows(&rows)
    }

    async fn play_counts_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<PlayCount>> {
        let rows = sqlx::query(
            "SELECT c.play, c.status, c.receipts FROM plays p
             JOIN rollup_play c ON c.play = p.id
             WHERE p.issued_at >= $1 AND p.issued_at < $2 ORDER BY c.play, c.status",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(st) = status_of(r, 1)? {
                out.push(PlayCount {
                    play: r.try_get(0)?,
                    status: st,
                    receipts: r.try_get(2)?,
                });
            }
        }
        Ok(out)
    }

    async fn receipts_in_ranges(&self, ranges: &[PlayRange]) -> Result<Vec<PlayReceipt>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let col = |f: fn(&PlayRange) -> i64| ranges.iter().map(f).collect::<Vec<i64>>();
        let day = |ms: i64| day_i32(ms.div_euclid(MS_PER_DAY));
        let days =
            |f: fn(&PlayRange) -> i64| ranges.iter().map(|r| day(f(r))).collect::<Vec<i32>>();
        // Each range by itself (LATERAL): its display and days reach one packed row or the
        // day partitions' primary keys, never the period's other receipts.
        let rows = sqlx::query(
            "SELECT r.device, r.play, r.status
             FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::int[], $5::int[])
                  AS k(device, lo, hi, d0, d1)
             CROSS JOIN LATERAL (
                 SELECT x.device, x.play, x.status FROM receipts_all x
                 WHERE x.device = k.device AND x.play >= k.lo AND x.play <= k.hi
                   AND x.play_day >= k.d0 AND x.play_day <= k.d1) r",
        )
        .bind(col(|r| r.device))
        .bind(col(|r| r.lo))
        .bind(col(|r| r.hi))
        .bind(days(|r| r.first_issued_ms))
        .bind(days(|r| r.last_issued_ms))
        .fetch_all(&self.pool)
        .await?;
        play_receipt_rows(&rows)
    }

    async fn presence_keys_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PresenceKeySpan>> {
        let rows = sqlx::query(
            "SELECT device, online_from, online_until FROM presence
             WHERE online_from < $1 AND (online_until IS NULL OR online_until > $2)",
        )
        .bind(to_ms)
        .bind(from_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(presence_key_span_row)
            .collect::<std::result::Result<_, _>>()?)
    }
}

/// (device, play, status) rows; a status code this release does not know is left out.
fn play_receipt_rows(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<PlayReceipt>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        if let Some(st) = status_of(r, 2)? {
            out.push(PlayReceipt {
                device: r.try_get(0)?,
                play: r.try_get(1)?,
                status: st,
            });
        }
    }
    Ok(out)
}

impl PgStore {
    /// Presence overlapping [from, to), of every display or of the named ones.
    async fn presence_spans(
        &self,
        from_ms: i64,
        to_ms: i64,
        devices: Option<&[String]>,
    ) -> Result<Vec<PresenceSpan>> {
        let rows = sqlx::query(
            "SELECT d.name, p.online_from, p.online_until FROM presence p JOIN devices d ON d.id = p.device
             WHERE p.online_from < $1 AND (p.online_until IS NULL OR p.online_until > $2)
               AND ($3::text[] IS NULL OR d.name = ANY($3))",
        )
        .bind(to_ms)
        .bind(from_ms)
        .bind(devices)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PresenceSpan {
                    device: r.try_get(0)?,
                    since_ms: r.try_get(1)?,
                    until_ms: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// Played start times in [from, to), of every display or of the named ones.
    async fn played_times(
        &self,
        from_ms: i64,
        to_ms: i64,
        devices: Option<&[String]>,
    ) -> Result<Vec<PlayedTimes>> {
        // By started_at, not play_day: no partition pruning, but the BRIN indexes on
        // started_at (raw) and on the packed rows' start bounds limit the scan to the
        // matching blocks. The packed rows come as they are stored, one per display and
        // day with its arrays, and are unpacked here: unnesting them in SQL returned a row
        // per receipt, most of the report's time.
        let raw = sqlx::query(
            "SELECT d.name, r.started_at FROM receipts r JOIN devices d ON d.id = r.device
             WHERE r.status = 0 AND r.started_at >= $1 AND r.started_at < $2
               AND ($3::text[] IS NULL OR d.name = ANY($3))",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(devices)
        .fetch_all(&self.pool)
        .await?;
        let packed = sqlx::query(
            "SELECT d.name, k.play_day, k.starts, k.outcomes FROM receipts_packed k
             JOIN devices d ON d.id = k.device
             WHERE k.max_start >= $1 AND k.min_start < $2 AND ($3::text[] IS NULL OR d.name = ANY($3))",
        )
        .bind(from_ms)
        .bind(to_ms)
        .bind(devices)
        .fetch_all(&self.pool)
        .await?;
        let mut by: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for r in &raw {
            by.entry(r.try_get(0)?).or_default().push(r.try_get(1)?);
        }
        for r in &packed {
            let day: i32 = r.try_get(1)?;
            let starts: Vec<i32> = r.try_get(2)?;
            let outcomes: Vec<i32> = r.try_get(3)?;
            let base = i64::from(day) * 86_400_000;
            let times = by.entry(r.try_get(0)?).or_default();
            // Status 0 (played) in the low three bits of the outcome.
            times.extend(
                starts
                    .iter()
                    .zip(&outcomes)
                    .filter(|(_, o)| *o & 7 == 0)
                    .map(|(s, _)| base + i64::from(*s))
                    .filter(|t| (from_ms..to_ms).contains(t)),
            );
        }
        Ok(by
            .into_iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(device, mut starts)| {
                starts.sort_unstable();
                PlayedTimes { device, starts }
            })
            .collect())
    }
}
