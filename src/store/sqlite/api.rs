//! The [`ApiStore`] impl for SQLite: tokens, ad-set revisions (approval and retirement, one
//! at a time on the single writer) and the raw reads behind the audits, on the reader pool.
//! Must not write receipts or rollups.

use std::collections::HashMap;

use sqlx::{Row, SqliteConnection};

use super::*;
use crate::core::approval;
use crate::core::wire::Status;
use crate::store::sql::{
    feed_play_row, retirement_row, revision_row, token_row, ALL_RETIREMENTS, ALL_TOKENS,
    RETIREMENT_COLS, REVISION_COLS, TOKEN_COLS,
};

/// One ad set's revisions and retirement, read on `c` (the writer inside an approval, a
/// reader otherwise).
async fn load_history(c: &mut SqliteConnection, adset: &str) -> Result<Option<AdSetHistory>> {
    let revs = sqlx::query(&format!(
        "SELECT {REVISION_COLS} FROM adset_revisions WHERE adset = ? ORDER BY rev"
    ))
    .bind(adset)
    .fetch_all(&mut *c)
    .await?;
    let retired = sqlx::query(&format!(
        "SELECT {RETIREMENT_COLS} FROM adset_retired WHERE adset = ?"
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

impl SqliteStore {
    /// Retires every revision `adset` has now. A retirement already covering them all is
    /// kept as it was (who retired first, and when); one that covers fewer (revisions came
    /// since) is replaced.
    async fn retire_row(
        &self,
        adset: &str,
        by: &str,
        reason: Option<&str>,
        now_ms: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(rev) FROM adset_revisions WHERE adset = ?")
                .bind(adset)
                .fetch_one(&mut *tx)
                .await?;
        let Some(latest) = latest else {
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO adset_retired (adset, retired_by, retired_at, through_rev, reason) VALUES (?, ?, ?, ?, ?)
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

/// A time in ms from a `group_concat` list.
fn ms_of(s: &str) -> Result<i64> {
    s.parse()
        .map_err(|e| StoreError::Invalid(format!("time {s:?} in a joined list: {e}")))
}

impl ApiStore for SqliteStore {
    async fn create_token(&self, name: &str, role: Role, hash: &str, now_ms: i64) -> Result<i64> {
        let r = sqlx::query(
            "INSERT INTO tokens (name, role, hash, created_at) VALUES (?, ?, ?, ?) RETURNING id",
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
            "SELECT {TOKEN_COLS} FROM tokens WHERE hash = ? AND revoked_at IS NULL"
        ))
        .bind(hash)
        .fetch_optional(&self.read)
        .await?;
        r.as_ref().map(token_row).transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let rows = sqlx::query(ALL_TOKENS).fetch_all(&self.read).await?;
        rows.iter().map(token_row).collect()
    }

    async fn revoke_token(&self, id: i64, now_ms: i64) -> Result<bool> {
        let r = sqlx::query("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn add_revision(&self, rev: &Revision, approved: bool) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        let next: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(rev), 0) + 1 FROM adset_revisions WHERE adset = ?",
        )
        .bind(&rev.adset)
        .fetch_one(&mut *tx)
        .await?;
        // A retirement stays: it covers the revisions before this one, and this one plays
        // only once approved (files come in approved).
        sqlx::query(
            "INSERT INTO adset_revisions (adset, rev, format, body, origin, uploaded_by, uploaded_token, uploaded_at, approved_by, approved_token, approved_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        let mut c = self.read.acquire().await?;
        load_history(&mut c, adset).await
    }

    async fn adset_histories(&self) -> Result<Vec<AdSetHistory>> {
        let revs = sqlx::query(&format!(
            "SELECT {REVISION_COLS} FROM adset_revisions ORDER BY adset, rev"
        ))
        .fetch_all(&self.read)
        .await?;
        let retired: HashMap<String, Retirement> = sqlx::query(ALL_RETIREMENTS)
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("adset")?, retirement_row(r)?)))
            .collect::<std::result::Result<_, sqlx::Error>>()?;
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
        // On the writer: SQLite's one writer serializes this with uploads and retirements.
        let mut tx = self.pool.begin().await?;
        let history = load_history(&mut tx, adset).await?;
        let mut rev = approval::approvable(adset, history.as_ref(), by)?.clone();
        sqlx::query(
            "UPDATE adset_revisions SET approved_by = ?, approved_token = ?, approved_at = ? WHERE adset = ? AND rev = ?",
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
        let keys = self.keys_of(devices).await?;
        self.presence_spans(from_ms, to_ms, Some(&keys)).await
    }

    async fn played_between(
        &self,
        from_ms: i64,
        to_ms: i64,
        device: Option<&str>,
    ) -> Result<Vec<PlayedTimes>> {
        match device {
            Some(d) => self.played_of(from_ms, to_ms, &[d.to_owned()]).await,
            None => self.played_times(from_ms, to_ms, None).await,
        }
    }

    async fn played_of(
        &self,
        from_ms: i64,
        to_ms: i64,
        devices: &[String],
    ) -> Result<Vec<PlayedTimes>> {
        let keys = self.keys_of(devices).await?;
        self.played_times(from_ms, to_ms, Some(&keys)).await
    }

    async fn last_receipts(&self, devices: &[String]) -> Result<Vec<LastReceipt>> {
        let mut out = Vec::new();
        for d in devices {
            // Ordering a display's receipts by start read all of them. A receipt starts at
            // most RECEIPT_SLACK_MS after its play expires, so none of a play that expired
            // before the start of the display's newest play's receipt minus the slack can be
            // later: only the receipts from the oldest play still live then onward (one
            // primary-key range, from the end) are ordered. The newest play's own key bounds
            // the range should a stored receipt lie outside its window. MATERIALIZED: inlined,
            // SQLite sorted all the display's receipts for `top` and left plays_expires unused.
            let r = sqlx::query(
                "WITH top AS MATERIALIZED (
                     SELECT device, play, started_at FROM receipts
                     WHERE device = (SELECT id FROM devices WHERE name = ?1)
                     ORDER BY play DESC LIMIT 1),
                 lo AS MATERIALIZED (
                     SELECT top.device, min(top.play, coalesce(
                         (SELECT min(p.id) FROM plays p INDEXED BY plays_expires
                          WHERE p.expires_at >= top.started_at - ?2), top.play)) AS play
                     FROM top)
                 SELECT r.started_at, r.status FROM lo CROSS JOIN receipts r
                   ON r.device = lo.device AND r.play >= lo.play
                 ORDER BY r.started_at DESC, r.play DESC LIMIT 1",
            )
            .bind(d)
            .bind(crate::core::wire::RECEIPT_SLACK_MS)
            .fetch_optional(&self.read)
            .await?;
            if let Some(r) = r {
                let code: i64 = r.try_get(1)?;
                if let Some(st) = Status::from_code(code) {
                    out.push(LastReceipt {
                        device: d.clone(),
                        started_ms: r.try_get(0)?,
                        status: st,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn feed_plays_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<FeedPlay>> {
        let rows = sqlx::query(
            "SELECT p.id, f.name, p.issued_at, f.id FROM plays p JOIN feeds f ON f.id = p.feed
             WHERE p.issued_at >= ? AND p.issued_at < ? ORDER BY p.id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.read)
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
        // Receipts are keyed (device, play): joined by play alone, SQLite read every receipt
        // ever stored. Play ids grow with issue time, so the window's plays lie in one id
        // range, and each display's receipts of it are one primary-key range; the IN list
        // drops the few ids in that range issued outside the window.
        let rows = sqlx::query(
            "WITH w AS (SELECT min(id) AS lo, max(id) AS hi FROM plays
                        WHERE issued_at >= ?1 AND issued_at < ?2)
             SELECT r.device, r.play, r.status
             FROM w CROSS JOIN devices d CROSS JOIN receipts r
               ON r.device = d.id AND r.play >= w.lo AND r.play <= w.hi
             WHERE r.play IN (SELECT id FROM plays WHERE issued_at >= ?1 AND issued_at < ?2)",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.read)
        .await?;
        play_receipt_rows(&rows)
    }

    async fn play_counts_between(&self, from_ms: i64, to_ms: i64) -> Result<Vec<PlayCount>> {
        let rows = sqlx::query(
            "SELECT c.play, c.status, c.receipts FROM plays p
             JOIN rollup_play c ON c.play = p.id
             WHERE p.issued_at >= ? AND p.issued_at < ? ORDER BY c.play, c.status",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&self.read)
        .await?;
        play_count_rows(&rows)
    }

    async fn receipts_in_ranges(&self, ranges: &[PlayRange]) -> Result<Vec<PlayReceipt>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        // One statement for every range: the list drives, each range one primary-key range.
        let list: Vec<[i64; 3]> = ranges.iter().map(|r| [r.device, r.lo, r.hi]).collect();
        let list = json_list("play ranges", &list)?;
        let rows = sqlx::query(
            "SELECT r.device, r.play, r.status
             FROM (SELECT json_extract(value, '$[0]') AS device,
                          json_extract(value, '$[1]') AS lo,
                          json_extract(value, '$[2]') AS hi FROM json_each(?)) k
             CROSS JOIN receipts r ON r.device = k.device AND r.play >= k.lo AND r.play <= k.hi",
        )
        .bind(list)
        .fetch_all(&self.read)
        .await?;
        play_receipt_rows(&rows)
    }

    async fn presence_keys_between(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PresenceKeySpan>> {
        let mut out = Vec::new();
        for (device, _, spans) in self.presence_packed(from_ms, to_ms, None).await? {
            each_span(&spans, |since_ms, until_ms| {
                out.push(PresenceKeySpan {
                    device,
                    since_ms,
                    until_ms,
                })
            })?;
        }
        Ok(out)
    }
}

/// Each `from:until` of a display's packed presence (`until` empty while open).
fn each_span(spans: &str, mut f: impl FnMut(i64, Option<i64>)) -> Result<()> {
    for span in spans.split(',') {
        let (from, until) = span
            .split_once(':')
            .ok_or_else(|| StoreError::Invalid(format!("presence span {span:?}")))?;
        let until = match until {
            "" => None,
            u => Some(ms_of(u)?),
        };
        f(ms_of(from)?, until);
    }
    Ok(())
}

/// (device, play, status) rows; a status code this release does not know is left out.
fn play_receipt_rows(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<PlayReceipt>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let code: i64 = r.try_get(2)?;
        if let Some(st) = Status::from_code(code) {
            out.push(PlayReceipt {
                device: r.try_get(0)?,
                play: r.try_get(1)?,
                status: st,
            });
        }
    }
    Ok(out)
}

/// (play, status, receipts) rows; a status code this release does not know is left out.
fn play_count_rows(rows: &[sqlx::sqlite::SqliteRow]) -> Result<Vec<PlayCount>> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let code: i64 = r.try_get(1)?;
        if let Some(st) = Status::from_code(code) {
            out.push(PlayCount {
                play: r.try_get(0)?,
                status: st,
                receipts: r.try_get(2)?,
            });
        }
    }
    Ok(out)
}

impl SqliteStore {
    /// The keys of the named displays that exist.
    async fn keys_of(&self, devices: &[String]) -> Result<Vec<i64>> {
        let names = json_list("display names", &devices)?;
        Ok(sqlx::query_scalar(
            "SELECT d.id FROM json_each(?) k CROSS JOIN devices d ON d.name = k.value",
        )
        .bind(names)
        .fetch_all(&self.read)
        .await?)
    }

    /// Presence overlapping [from, to), of every display or of the keyed ones.
    async fn presence_spans(
        &self,
        from_ms: i64,
        to_ms: i64,
        keys: Option<&[i64]>,
    ) -> Result<Vec<PresenceSpan>> {
        let mut out = Vec::new();
        for (_, name, spans) in self.presence_packed(from_ms, to_ms, keys).await? {
            each_span(&spans, |since_ms, until_ms| {
                out.push(PresenceSpan {
                    device: name.clone(),
                    since_ms,
                    until_ms,
                })
            })?;
        }
        Ok(out)
    }

    /// Presence overlapping [from, to) as (display key, name, its spans packed as
    /// `from:until,...`), of every display or of the keyed ones. One row per display: sqlx
    /// hands each row over from its worker thread, about 2 microseconds a row, so a week's
    /// 60,000 intervals a row each took 128 ms where the statement alone takes 11.
    async fn presence_packed(
        &self,
        from_ms: i64,
        to_ms: i64,
        keys: Option<&[i64]>,
    ) -> Result<Vec<(i64, String, String)>> {
        // Disjoint parts, each one range of an index, instead of every interval since the
        // start: those opened inside the period (a range of the key per display), and those
        // opened before it and still open at its start (closed after it, or not closed: two
        // ranges of presence_until; one OR would make SQLite look each row up again). One row
        // per display, as in `played_between`. The unary `+` keeps the first part on the key:
        // with bound values and statistics, SQLite 3.4x chose presence_until there instead,
        // once per display (minutes at 100 M receipts). Keyed, the first part walks the
        // listed displays only and the other two keep only theirs.
        let (displays, only) = match keys {
            None => ("devices d", ""),
            Some(_) => (
                "(SELECT value AS id FROM json_each(?3)) d",
                " AND device IN (SELECT value FROM json_each(?3))",
            ),
        };
        let sql = format!(
            "SELECT d.id, d.name, g.spans FROM (
               SELECT device, group_concat(online_from || ':' || IFNULL(online_until, '')) AS spans
               FROM (
                 SELECT p.device, p.online_from, p.online_until FROM {displays} CROSS JOIN presence p
                   ON p.device = d.id AND p.online_from >= ?1 AND p.online_from < ?2
                 WHERE +p.online_until > ?1 OR +p.online_until IS NULL
                 UNION ALL
                 SELECT device, online_from, online_until FROM presence
                 WHERE online_until > ?1 AND online_from < ?1{only}
                 UNION ALL
                 SELECT device, online_from, online_until FROM presence
                 WHERE online_until IS NULL AND online_from < ?1{only}
               ) GROUP BY device
             ) g CROSS JOIN devices d ON d.id = g.device"
        );
        let mut q = sqlx::query(&sql).bind(from_ms).bind(to_ms);
        if let Some(k) = keys {
            q = q.bind(json_list("display keys", &k)?);
        }
        Ok(q.fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<std::result::Result<_, sqlx::Error>>()?)
    }

    /// Played start times in [from, to), of every display or of the keyed ones, by name.
    async fn played_times(
        &self,
        from_ms: i64,
        to_ms: i64,
        keys: Option<&[i64]>,
    ) -> Result<Vec<PlayedTimes>> {
        let names: HashMap<i64, String> = sqlx::query_as("SELECT id, name FROM devices")
            .fetch_all(&self.read)
            .await?
            .into_iter()
            .collect();
        let mut out: Vec<PlayedTimes> = self
            .played_by_key(from_ms, to_ms, keys)
            .await?
            .into_iter()
            .filter(|(_, t)| !t.is_empty())
            .filter_map(|(k, starts)| {
                names.get(&k).map(|n| PlayedTimes {
                    device: n.clone(),
                    starts,
                })
            })
            .collect();
        out.sort_by(|a, b| a.device.cmp(&b.device));
        Ok(out)
    }
}
