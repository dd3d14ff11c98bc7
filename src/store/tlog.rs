//! The receipt log's SQL on both backends: appending a batch's leaves inside its commit,
//! and reading the log back for checkpoints, tiles, proofs and the live check.
//!
//! Owns: the `log_*` tables (migration 0013). Must not touch: the leaf encoding or the
//! tree arithmetic (`core::tlog` decides them), signing keys, HTTP.
//!
//! Appending reads the one `log_state` row inside the batch's transaction (on PostgreSQL
//! `FOR UPDATE`, so concurrent daemons extend the tree one after the other, or not at all
//! when the store's own last commit is known: [`LogTip`]), and writes the leaves, their
//! hashes and the new state before the same COMMIT as the receipts: a crash leaves neither
//! receipts outside the tree nor the tree ahead of them.

use std::collections::HashMap;

use sqlx::{PgConnection, Row, SqliteConnection};

use super::{Db, KeyNames, ReceiptRow, Result, StoreError};
use crate::core::tlog::{
    append_leaves, batch_leaves_of, Appended, Hash, KeyedRef, LogReceipt, NewLeaf, ReceiptRef,
    StoredLeaf, StoredReceipt, TreeState,
};

fn hash_of(b: &[u8]) -> Result<Hash> {
    let a: [u8; 32] = b.try_into().map_err(|_| {
        StoreError::Invalid(format!("a stored log hash has {} bytes, not 32", b.len()))
    })?;
    Ok(Hash(a))
}

fn tree_of(size: i64, edge: &[u8]) -> Result<TreeState> {
    TreeState::from_stored(size as u64, edge).ok_or_else(|| {
        StoreError::Invalid(format!(
            "the stored log edge ({} bytes) does not fit a tree of {size} leaves",
            edge.len()
        ))
    })
}

/// The batch's receipts as the log records them, named from `known` (what the ingest
/// passed) or else from `fetched` (read in the commit).
fn keyed<'a>(
    stored: &[&ReceiptRow],
    known: &'a KeyNames,
    fetched: &'a KeyNames,
) -> Result<Vec<KeyedRef<'a>>> {
    let name = |m: &'a HashMap<i64, String>, f: &'a HashMap<i64, String>, k: i64| {
        m.get(&k).or_else(|| f.get(&k)).map(String::as_str)
    };
    stored
        .iter()
        .map(|r| {
            let device = name(&known.devices, &fetched.devices, r.device);
            let play_id = name(&known.plays, &fetched.plays, r.play);
            match (device, play_id) {
                (Some(device), Some(play_id)) => Ok(KeyedRef {
                    device: r.device,
                    play: r.play,
                    receipt: ReceiptRef {
                        device,
                        play_id,
                        started_ms: r.started_ms,
                        duration_ms: r.duration_ms,
                        status: r.status.code() as u8,
                    },
                }),
                _ => Err(StoreError::Invalid(format!(
                    "receipt of display key {} for play key {} names no stored display or play",
                    r.device, r.play
                ))),
            }
        })
        .collect()
}

/// The display and play keys of `stored` that `known` does not name, each once.
fn missing_keys(stored: &[&ReceiptRow], known: &KeyNames) -> (Vec<i64>, Vec<i64>) {
    let mut d: Vec<i64> = stored
        .iter()
        .map(|r| r.device)
        .filter(|k| !known.devices.contains_key(k))
        .collect();
    let mut p: Vec<i64> = stored
        .iter()
        .map(|r| r.play)
        .filter(|k| !known.plays.contains_key(k))
        .collect();
    d.sort_unstable();
    d.dedup();
    p.sort_unstable();
    p.dedup();
    (d, p)
}

/// The leaves of a batch, computed before the tree state is read (and, on PostgreSQL,
/// locked): hashing does not depend on it.
fn new_leaves(
    stored: &[&ReceiptRow],
    known: &KeyNames,
    fetched: &KeyNames,
) -> Result<Vec<NewLeaf>> {
    let mut refs = keyed(stored, known, fetched)?;
    Ok(batch_leaves_of(&mut refs))
}

fn names_of(rows: Vec<(i64, i64, String)>) -> KeyNames {
    let mut out = KeyNames::default();
    for (kind, id, name) in rows {
        if kind == 0 {
            &mut out.devices
        } else {
            &mut out.plays
        }
        .insert(id, name);
    }
    out
}

/// Appends the batch's stored receipts to the log, in the batch's SQLite transaction.
pub(super) async fn sqlite_append(
    c: &mut SqliteConnection,
    stored: &[&ReceiptRow],
    known: &KeyNames,
) -> Result<()> {
    if stored.is_empty() {
        return Ok(());
    }
    let (d, p) = missing_keys(stored, known);
    let fetched = if d.is_empty() && p.is_empty() {
        KeyNames::default()
    } else {
        let json = |v: &[i64]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT 0, id, name FROM devices WHERE id IN (SELECT value FROM json_each(?1))
             UNION ALL SELECT 1, id, play_id FROM plays WHERE id IN (SELECT value FROM json_each(?2))",
        )
        .bind(json(&d))
        .bind(json(&p))
        .fetch_all(&mut *c)
        .await?;
        names_of(rows)
    };
    let leaves = new_leaves(stored, known, &fetched)?;
    let (size, edge): (i64, Vec<u8>) =
        sqlx::query_as("SELECT size, edge FROM log_state WHERE id = 1")
            .fetch_one(&mut *c)
            .await?;
    let mut tree = tree_of(size, &edge)?;
    let out = append_leaves(&mut tree, leaves);
    sqlite_write(c, &out, &tree).await
}

async fn sqlite_write(c: &mut SqliteConnection, out: &Appended, tree: &TreeState) -> Result<()> {
    for chunk in out.hashes.chunks(400) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new("INSERT INTO log_hashes (idx, hash) ");
        q.push_values(chunk, |mut b, (i, h)| {
            b.push_bind(*i as i64).push_bind(h.0.to_vec());
        });
        q.build().execute(&mut *c).await?;
    }
    for chunk in out.leaves.chunks(300) {
        let mut q = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO log_leaves (idx, count, members) ",
        );
        q.push_values(chunk, |mut b, (idx, members, count)| {
            b.push_bind(*idx as i64)
                .push_bind(*count as i64)
                .push_bind(members.as_slice());
        });
        q.build().execute(&mut *c).await?;
    }
    sqlx::query("UPDATE log_state SET size = ?, root = ?, edge = ? WHERE id = 1")
        .bind(tree.size as i64)
        .bind(tree.root().0.to_vec())
        .bind(tree.edge_bytes())
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// The log's tree as this store last committed it (PostgreSQL only). The next batch
/// appends from it without first reading and locking the state row: one round trip per
/// batch instead of two. Its write is conditional on the stored size still being the
/// cached one, so a cache gone stale (another daemon appended, or a COMMIT whose answer
/// was lost) costs one retry from the stored state, never a wrong tree.
#[derive(Debug, Default)]
pub(super) struct LogTip(std::sync::Mutex<Option<TreeState>>);

impl LogTip {
    /// The cached tree, taken: concurrent batches of this store find none and read (and
    /// lock) the stored state, so at most one of them relies on the cache.
    pub(super) fn take(&self) -> Option<TreeState> {
        self.0.lock().map(|mut t| t.take()).unwrap_or(None)
    }

    /// After a COMMIT: keeps `tree` unless a larger one (a later commit's) is kept already.
    pub(super) fn put(&self, tree: TreeState) {
        if let Ok(mut t) = self.0.lock() {
            if t.as_ref().is_none_or(|old| old.size < tree.size) {
                *t = Some(tree);
            }
        }
    }
}

/// What appending a batch in its PostgreSQL transaction came to.
pub(super) enum PgAppended {
    /// The tree as the transaction leaves it, to keep once it commits.
    Tree(TreeState),
    /// The cached tree was no longer the stored one; the transaction is spoilt and the
    /// batch must be committed again from the stored state.
    Moved,
}

/// The leaves of a whole batch, when the ingest named each of its receipts (it does), to
/// be hashed before the commit knows which receipts are new.
pub(super) fn leaves_ahead(batch: &[ReceiptRow], known: &KeyNames) -> Option<Vec<NewLeaf>> {
    let all: Vec<&ReceiptRow> = batch.iter().collect();
    let (d, p) = missing_keys(&all, known);
    if !(d.is_empty() && p.is_empty()) {
        return None;
    }
    new_leaves(&all, known, &KeyNames::default()).ok()
}

/// The leaves of `stored`, names the batch lacks read in its transaction.
async fn pg_leaves(
    c: &mut PgConnection,
    stored: &[&ReceiptRow],
    known: &KeyNames,
) -> Result<Vec<NewLeaf>> {
    let (d, p) = missing_keys(stored, known);
    let fetched = if d.is_empty() && p.is_empty() {
        KeyNames::default()
    } else {
        let rows: Vec<(i32, i64, String)> = sqlx::query_as(
            "SELECT 0::int4, id, name FROM devices WHERE id = ANY($1)
             UNION ALL SELECT 1::int4, id, play_id FROM plays WHERE id = ANY($2)",
        )
        .bind(&d)
        .bind(&p)
        .fetch_all(&mut *c)
        .await?;
        names_of(
            rows.into_iter()
                .map(|(k, i, n)| (i64::from(k), i, n))
                .collect(),
        )
    };
    new_leaves(stored, known, &fetched)
}

/// Appends the batch's stored receipts to the log, in the batch's PostgreSQL transaction,
/// from `cached` (see [`LogTip`]) or else from the stored state, read `FOR UPDATE`.
/// `ahead`, when given, are the leaves of exactly `stored` ([`leaves_ahead`]).
pub(super) async fn pg_append(
    c: &mut PgConnection,
    stored: &[&ReceiptRow],
    known: &KeyNames,
    cached: Option<TreeState>,
    ahead: Option<Vec<NewLeaf>>,
) -> Result<PgAppended> {
    // Hashed before the state row is locked, so concurrent daemons wait on each other for
    // the tree arithmetic and the write only.
    let leaves = match ahead {
        Some(l) => l,
        None => pg_leaves(c, stored, known).await?,
    };
    let from_cache = cached.is_some();
    let mut tree = match cached {
        Some(t) => t,
        None => {
            let (size, edge): (i64, Vec<u8>) =
                sqlx::query_as("SELECT size, edge FROM log_state WHERE id = 1 FOR UPDATE")
                    .fetch_one(&mut *c)
                    .await?;
            tree_of(size, &edge)?
        }
    };
    let before = tree.size;
    let out = append_leaves(&mut tree, leaves);
    match pg_write(c, out, &tree, before).await {
        Ok(true) => Ok(PgAppended::Tree(tree)),
        Ok(false) if from_cache => Ok(PgAppended::Moved),
        Err(StoreError::Db(sqlx::Error::Database(e))) if from_cache && e.is_unique_violation() => {
            Ok(PgAppended::Moved)
        }
        Ok(false) => Err(StoreError::Invalid(
            "the receipt log's state row changed while it was locked".into(),
        )),
        Err(e) => Err(e),
    }
}

/// Writes the appended hashes, leaves and state; false when the stored tree no longer had
/// `before` leaves (nothing is then updated, and the caller rolls back).
async fn pg_write(
    c: &mut PgConnection,
    out: Appended,
    tree: &TreeState,
    before: u64,
) -> Result<bool> {
    let (idx, hashes): (Vec<i64>, Vec<Vec<u8>>) = out
        .hashes
        .iter()
        .map(|(i, h)| (*i as i64, h.0.to_vec()))
        .unzip();
    let n = out.leaves.len();
    let (mut li, mut lc, mut lm) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (i, m, count) in out.leaves {
        li.push(i as i64);
        lc.push(count as i64);
        lm.push(m);
    }
    // One round trip for the three writes.
    let updated = sqlx::query(
        "WITH h AS (INSERT INTO log_hashes (idx, hash)
                    SELECT * FROM UNNEST($1::bigint[], $2::bytea[])),
              l AS (INSERT INTO log_leaves (idx, count, members)
                    SELECT * FROM UNNEST($3::bigint[], $4::bigint[], $5::bytea[]))
         UPDATE log_state SET size = $6, root = $7, edge = $8 WHERE id = 1 AND size = $9",
    )
    .bind(idx)
    .bind(hashes)
    .bind(li)
    .bind(lc)
    .bind(lm)
    .bind(tree.size as i64)
    .bind(tree.root().0.to_vec())
    .bind(tree.edge_bytes())
    .bind(before as i64)
    .execute(&mut *c)
    .await?;
    Ok(updated.rows_affected() == 1)
}

/// The tree state as stored: its size and root.
#[derive(Debug, Clone, PartialEq)]
pub struct LogHead {
    pub size: u64,
    pub root: Hash,
    pub pruned_before_ms: i64,
    /// Plays up to this key were issued before the log began.
    pub before_play: i64,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    /// The signed note, cosignatures not included.
    pub note: String,
    pub signed_ms: i64,
}

/// Runs the same statement text on either backend; `?` placeholders become `$n` on
/// PostgreSQL.
fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(ch);
        }
    }
    out
}

macro_rules! on_db {
    ($db:expr, $sql:expr, |$q:ident, $pool:ident| $body:expr) => {
        match $db {
            Db::Sqlite(s) => {
                let $pool = s.pool();
                let $q = sqlx::query($sql);
                $body
            }
            Db::Postgres(s) => {
                let $pool = s.pool();
                let sql = pg_sql($sql);
                let $q = sqlx::query(&sql);
                $body
            }
        }
    };
}

impl Db {
    /// The tree state as the last committed batch left it.
    pub async fn log_head(&self) -> Result<LogHead> {
        let sql = "SELECT size, root, pruned_before, before_play FROM log_state WHERE id = 1";
        let (size, root, pruned, before_play): (i64, Vec<u8>, i64, i64) =
            on_db!(self, sql, |q, p| {
                let r = q.fetch_one(p).await?;
                (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)
            });
        Ok(LogHead {
            size: size as u64,
            root: hash_of(&root)?,
            pruned_before_ms: pruned,
            before_play,
        })
    }

    /// Stored hashes by stored-hash index, in the order asked; an index not stored is an
    /// error naming it.
    pub async fn log_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>> {
        let mut found: HashMap<i64, Hash> = HashMap::with_capacity(indexes.len());
        for chunk in indexes.chunks(500) {
            let list: Vec<String> = chunk.iter().map(|i| i.to_string()).collect();
            let sql = format!(
                "SELECT idx, hash FROM log_hashes WHERE idx IN ({})",
                list.join(",")
            );
            let rows: Vec<(i64, Vec<u8>)> = on_db!(self, &sql, |q, p| {
                let rows = q.fetch_all(p).await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?
            });
            for (i, h) in rows {
                found.insert(i, hash_of(&h)?);
            }
        }
        indexes
            .iter()
            .map(|i| {
                found.get(&(*i as i64)).copied().ok_or_else(|| {
                    StoreError::Invalid(format!("the log has no stored hash at index {i}"))
                })
            })
            .collect()
    }

    /// Every leaf's member index, with its leaf hash, in leaf order.
    pub async fn log_leaves(&self) -> Result<Vec<StoredLeaf>> {
        self.log_leaves_in(0, i64::MAX as u64).await
    }

    /// The leaves [lo, hi) with their member indexes and leaf hashes, in leaf order; a
    /// leaf whose hash is not stored has none.
    pub async fn log_leaves_in(&self, lo: u64, hi: u64) -> Result<Vec<StoredLeaf>> {
        // A leaf hash's stored index is a function of the leaf index that SQL does not
        // compute portably: the members first, then their hashes.
        let rows: Vec<(i64, Vec<u8>)> = self
            .log_members(lo, hi)
            .await?
            .into_iter()
            .map(|(i, m)| (i as i64, m))
            .collect();
        let idx: Vec<u64> = rows
            .iter()
            .map(|(i, _)| tlog_tiles::stored_hash_index(0, *i as u64))
            .collect();
        let mut hashes: HashMap<u64, Hash> = HashMap::new();
        for chunk in idx.chunks(500) {
            let list: Vec<String> = chunk.iter().map(|i| i.to_string()).collect();
            let sql = format!(
                "SELECT idx, hash FROM log_hashes WHERE idx IN ({})",
                list.join(",")
            );
            let got: Vec<(i64, Vec<u8>)> = on_db!(self, &sql, |q, p| {
                let rows = q.fetch_all(p).await?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?
            });
            for (i, h) in got {
                hashes.insert(i as u64, hash_of(&h)?);
            }
        }
        Ok(rows
            .into_iter()
            .map(|(i, members)| StoredLeaf {
                index: i as u64,
                members,
                hash: hashes
                    .get(&tlog_tiles::stored_hash_index(0, i as u64))
                    .copied(),
            })
            .collect())
    }

    /// Every stored receipt (raw and, on PostgreSQL, packed) by (display key, play key),
    /// with the names the log records.
    pub async fn log_stored_receipts(&self) -> Result<HashMap<(i64, i64), StoredReceipt>> {
        let from = match self {
            Db::Sqlite(_) => "receipts",
            Db::Postgres(_) => "receipts_all",
        };
        let sql = format!(
            "SELECT r.device, r.play, COALESCE(d.name, ''), COALESCE(p.play_id, ''),
                    r.started_at, r.duration_ms, CAST(r.status AS BIGINT), p.issued_at
             FROM {from} r LEFT JOIN devices d ON d.id = r.device
             LEFT JOIN plays p ON p.id = r.play"
        );
        let mut out = HashMap::new();
        on_db!(self, &sql, |q, p| {
            for r in q.fetch_all(p).await? {
                let key: (i64, i64) = (r.try_get(0)?, r.try_get(1)?);
                let status: i64 = r.try_get(6)?;
                out.insert(
                    key,
                    StoredReceipt {
                        receipt: LogReceipt {
                            device: r.try_get(2)?,
                            play_id: r.try_get(3)?,
                            started_ms: r.try_get(4)?,
                            duration_ms: r.try_get(5)?,
                            status: status as u8,
                        },
                        issued_ms: r.try_get(7)?,
                    },
                );
            }
        });
        Ok(out)
    }

    /// How many receipts are stored (raw and, on PostgreSQL, packed): of plays after
    /// `before_play`, and of plays up to it.
    pub async fn log_receipt_counts(&self, before_play: i64) -> Result<(u64, u64)> {
        let from = match self {
            Db::Sqlite(_) => "receipts",
            Db::Postgres(_) => "receipts_all",
        };
        let sql = format!(
            "SELECT CAST(COUNT(*) AS BIGINT),
                    CAST(COALESCE(SUM(CASE WHEN play > ? THEN 0 ELSE 1 END), 0) AS BIGINT)
             FROM {from}"
        );
        let (all, before): (i64, i64) = on_db!(self, &sql, |q, p| {
            let r = q.bind(before_play).fetch_one(p).await?;
            (r.try_get(0)?, r.try_get(1)?)
        });
        Ok(((all - before) as u64, before as u64))
    }

    /// Play ids and issue times by play key, and display names by key: what a deleted
    /// receipt is named by.
    pub async fn log_names(&self) -> Result<(HashMap<i64, (String, i64)>, HashMap<i64, String>)> {
        let mut plays = HashMap::new();
        on_db!(self, "SELECT id, play_id, issued_at FROM plays", |q, p| {
            for r in q.fetch_all(p).await? {
                plays.insert(r.try_get::<i64, _>(0)?, (r.try_get(1)?, r.try_get(2)?));
            }
        });
        let mut devices = HashMap::new();
        on_db!(self, "SELECT id, name FROM devices", |q, p| {
            for r in q.fetch_all(p).await? {
                devices.insert(r.try_get::<i64, _>(0)?, r.try_get(1)?);
            }
        });
        Ok((plays, devices))
    }

    /// The newest signed checkpoint, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        self.checkpoint_where("ORDER BY size DESC LIMIT 1", None)
            .await
    }

    /// The checkpoint signed at `size`, if any.
    pub async fn checkpoint_at(&self, size: u64) -> Result<Option<StoredCheckpoint>> {
        self.checkpoint_where("WHERE size = ?", Some(size as i64))
            .await
    }

    async fn checkpoint_where(
        &self,
        tail: &str,
        bind: Option<i64>,
    ) -> Result<Option<StoredCheckpoint>> {
        let sql = format!("SELECT size, root, note, signed_at FROM log_checkpoints {tail}");
        let row: Option<(i64, Vec<u8>, String, i64)> = on_db!(self, &sql, |q, p| {
            let q = match bind {
                Some(b) => q.bind(b),
                None => q,
            };
            match q.fetch_optional(p).await? {
                Some(r) => Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)),
                None => None,
            }
        });
        row.map(|(size, root, note, signed_ms)| {
            Ok(StoredCheckpoint {
                size: size as u64,
                root: hash_of(&root)?,
                note,
                signed_ms,
            })
        })
        .transpose()
    }

    /// Stores a signed checkpoint unless one at the same size or larger is stored: the
    /// compare-and-swap on the last signed size. False when another signer was first.
    pub async fn store_checkpoint(&self, c: &StoredCheckpoint) -> Result<bool> {
        let sql = "INSERT INTO log_checkpoints (size, root, note, signed_at)
                   SELECT ?, ?, ?, ? WHERE NOT EXISTS
                   (SELECT 1 FROM log_checkpoints WHERE size >= ?)";
        let n = on_db!(self, sql, |q, p| {
            q.bind(c.size as i64)
                .bind(c.root.0.to_vec())
                .bind(&c.note)
                .bind(c.signed_ms)
                .bind(c.size as i64)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// A witness's cosignature line on the checkpoint at `size` (one per witness name).
    pub async fn store_cosignature(&self, size: u64, witness: &str, line: &str) -> Result<()> {
        let sql = "INSERT INTO log_cosignatures (size, witness, line) VALUES (?, ?, ?)
                   ON CONFLICT (size, witness) DO UPDATE SET line = excluded.line";
        on_db!(self, sql, |q, p| {
            q.bind(size as i64)
                .bind(witness)
                .bind(line)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// The cosignature lines on the checkpoint at `size`.
    pub async fn cosignatures(&self, size: u64) -> Result<Vec<String>> {
        let sql = "SELECT line FROM log_cosignatures WHERE size = ? ORDER BY witness";
        let lines = on_db!(self, sql, |q, p| {
            let rows = q.bind(size as i64).fetch_all(p).await?;
            rows.iter()
                .map(|r| r.try_get::<String, _>(0))
                .collect::<std::result::Result<Vec<_>, _>>()?
        });
        Ok(lines)
    }

    /// Records that receipts of plays issued before `before_ms` are dropped by retention.
    pub async fn log_mark_pruned(&self, before_ms: i64) -> Result<()> {
        let sql = "UPDATE log_state SET pruned_before = ? WHERE id = 1 AND pruned_before < ?";
        on_db!(self, sql, |q, p| {
            q.bind(before_ms).bind(before_ms).execute(p).await?;
        });
        Ok(())
    }
}

impl Db {
    /// The member indexes of leaves [lo, hi), in leaf order.
    pub async fn log_members(&self, lo: u64, hi: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let sql = "SELECT idx, members FROM log_leaves WHERE idx >= ? AND idx < ? ORDER BY idx";
        let rows: Vec<(i64, Vec<u8>)> = on_db!(self, sql, |q, p| {
            let rows = q.bind(lo as i64).bind(hi as i64).fetch_all(p).await?;
            rows.iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(rows.into_iter().map(|(i, m)| (i as u64, m)).collect())
    }

    /// The stored receipts with these (display key, play key) pairs, as the log records
    /// them; pairs not stored are left out.
    pub async fn log_receipts(
        &self,
        keys: &[(i64, i64)],
    ) -> Result<HashMap<(i64, i64), LogReceipt>> {
        let mut out = HashMap::with_capacity(keys.len());
        for chunk in keys.chunks(2_000) {
            let (d, p): (Vec<i64>, Vec<i64>) = chunk.iter().copied().unzip();
            let rows = match self {
                Db::Sqlite(s) => {
                    let pairs = serde_json::to_string(
                        &chunk.iter().map(|(d, p)| [*d, *p]).collect::<Vec<_>>(),
                    )
                    .map_err(|e| StoreError::Invalid(e.to_string()))?;
                    sqlx::query(
                        "SELECT r.device, r.play, d.name, p.play_id, r.started_at, r.duration_ms,
                                CAST(r.status AS INTEGER)
                         FROM json_each(?) k
                         JOIN receipts r ON r.device = json_extract(k.value, '$[0]')
                                        AND r.play = json_extract(k.value, '$[1]')
                         JOIN devices d ON d.id = r.device JOIN plays p ON p.id = r.play",
                    )
                    .bind(pairs)
                    .fetch_all(s.pool())
                    .await?
                    .into_iter()
                    .map(|r| log_row_sqlite(&r))
                    .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?
                }
                Db::Postgres(s) => sqlx::query(
                    "SELECT r.device, r.play, d.name, p.play_id, r.started_at, r.duration_ms,
                            CAST(r.status AS BIGINT)
                     FROM UNNEST($1::bigint[], $2::bigint[]) AS k(device, play)
                     JOIN plays p ON p.id = k.play
                     JOIN receipts_all r ON r.device = k.device AND r.play = k.play
                          AND r.play_day = (p.issued_at / 86400000)::int
                     JOIN devices d ON d.id = r.device",
                )
                .bind(d)
                .bind(p)
                .fetch_all(s.pool())
                .await?
                .into_iter()
                .map(|r| log_row_pg(&r))
                .collect::<std::result::Result<Vec<_>, sqlx::Error>>()?,
            };
            out.extend(rows);
        }
        Ok(out)
    }
}

type LogRow = ((i64, i64), LogReceipt);

fn log_row_sqlite(r: &sqlx::sqlite::SqliteRow) -> std::result::Result<LogRow, sqlx::Error> {
    let status: i64 = r.try_get(6)?;
    Ok((
        (r.try_get(0)?, r.try_get(1)?),
        LogReceipt {
            device: r.try_get(2)?,
            play_id: r.try_get(3)?,
            started_ms: r.try_get(4)?,
            duration_ms: r.try_get(5)?,
            status: status as u8,
        },
    ))
}

fn log_row_pg(r: &sqlx::postgres::PgRow) -> std::result::Result<LogRow, sqlx::Error> {
    let status: i64 = r.try_get(6)?;
    Ok((
        (r.try_get(0)?, r.try_get(1)?),
        LogReceipt {
            device: r.try_get(2)?,
            play_id: r.try_get(3)?,
            started_ms: r.try_get(4)?,
            duration_ms: r.try_get(5)?,
            status: status as u8,
        },
    ))
}

impl Db {
    /// The store's keys of the receipt of `device` for `play_id`, when it is stored.
    pub async fn log_receipt_keys(
        &self,
        device: &str,
        play_id: &str,
    ) -> Result<Option<(i64, i64)>> {
        let sql = "SELECT d.id, p.id FROM devices d, plays p WHERE d.name = ? AND p.play_id = ?";
        let row: Option<(i64, i64)> = on_db!(self, sql, |q, p| {
            match q.bind(device).bind(play_id).fetch_optional(p).await? {
                Some(r) => Some((r.try_get(0)?, r.try_get(1)?)),
                None => None,
            }
        });
        Ok(row)
    }
}
