//! Every row the bench writes into the store's tables without going through the store:
//! the synthetic year of the audit and storage scenarios (SQLite and PostgreSQL) and the
//! raw batched insert that is the ingest scenario's store baseline. Over 700 lines on
//! purpose: the one place whose SQL must follow `migrations/` by hand, kept together.
//!
//! Why it bypasses the store: the store writes receipts a batch at a time, deduplicating
//! each and keeping the rollups in the same transaction; a 100 M-receipt year through it
//! would take hours, and the history's receipts and rollup must come from the same formula
//! (`synth`) independently of each other, so the audit answers can be checked against the
//! naive GROUP BY. The raw insert is the store's own statement without the store around it,
//! which is what the baseline measures. So this file depends on the schema of
//! `migrations/`: a change there must be mirrored here.
//!
//! Owns: bulk SQL writes into fresh databases and schemas the bench created. Must not touch:
//! a database it did not create (every load starts by removing its file or dropping its
//! schema).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use civicast::store::{PgStore, SqliteStore, Store};
use sqlx::{Connection, QueryBuilder, Sqlite};

use crate::fixture::{device_name, remove_db};
use crate::ingest::Db;
use crate::report::{day_string, Rate};
use crate::storage::partition_bytes;
use crate::storage::used_bytes;
use crate::synth::{
    class_of, offset_ms, receipt_hash, synth_plays, DayDeltas, LoadOptions, SynthPlay, CLASSES,
    HASH_SQL, MISSING_PCT, RECEIPT_MS, SHANGHAI_MS,
};
use civicast::store::rollups;
use civicast::store::sql::bind_all;

#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub receipts: i64,
    pub rollup_rows: i64,
    pub plays: i64,
    pub displays: u64,
    pub receipts_load: Rate,
    pub rollup_load: Rate,
    /// Pages in use before and after the receipts, then after the rollup.
    pub used_before: i64,
    pub used_after_receipts: i64,
    pub used_after_rollup: i64,
    pub path: PathBuf,
}

pub(crate) async fn exec(pool: &sqlx::SqlitePool, sql: &str) -> anyhow::Result<()> {
    sqlx::query(sql)
        .execute(pool)
        .await
        .with_context(|| format!("running {sql}"))?;
    Ok(())
}

/// Writes the synthetic history into a fresh SQLite file at `path`: devices, feeds,
/// memberships, slogans, plays through bound multi-row INSERTs; receipts generated inside
/// SQLite (INSERT ... SELECT over memberships x plays, in primary-key order); the rollups
/// summed in Rust from the same plays and formula, independently of the receipts, and
/// written through the store's statements; then the timelines of the closed days.
pub async fn load_sqlite(
    path: &Path,
    o: &LoadOptions,
) -> anyhow::Result<(SqliteStore, LoadReport)> {
    remove_db(path);
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display())).await?;
    store.migrate().await?;
    let pool = store.pool().clone();
    // A bulk load: no fsync per transaction, a large page cache.
    exec(&pool, "PRAGMA synchronous = OFF").await?;
    exec(&pool, "PRAGMA cache_size = -1000000").await?;
    let plays = synth_plays(o);
    let start = o.end.timestamp_millis() - o.days * 86_400_000;
    eprintln!(
        "load: {} displays, {} feeds, {} plays over {} days, about {} receipts...",
        o.displays,
        o.feeds,
        plays.len(),
        o.days,
        o.receipts
    );
    {
        let mut tx = pool.begin().await?;
        for f in 1..=o.feeds as i64 {
            sqlx::query("INSERT INTO feeds (id, name) VALUES (?, ?)")
                .bind(f)
                .bind(format!("feed-{f:02}"))
                .execute(&mut *tx)
                .await?;
        }
        for s in 1..=o.slogans as i64 {
            sqlx::query(
                "INSERT INTO slogans (id, adset, rev, slogan) VALUES (?, 'civility', 1, ?)",
            )
            .bind(s)
            .bind(format!("slogan-{s:02}"))
            .execute(&mut *tx)
            .await?;
        }
        let ids: Vec<i64> = (1..=o.displays as i64).collect();
        for chunk in ids.chunks(4_000) {
            let mut q = QueryBuilder::<Sqlite>::new("INSERT INTO devices (id, name, class) ");
            q.push_values(chunk, |mut b, d| {
                b.push_bind(*d)
                    .push_bind(device_name(*d as usize))
                    .push_bind(CLASSES[(*d % 3) as usize]);
            });
            q.build().execute(&mut *tx).await?;
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO memberships (device, feed, since) ");
            q.push_values(chunk, |mut b, d| {
                b.push_bind(*d)
                    .push_bind((*d - 1) % o.feeds as i64 + 1)
                    .push_bind(start - 86_400_000);
            });
            q.build().execute(&mut *tx).await?;
        }
        for chunk in plays.chunks(4_000) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO plays (id, play_id, feed, device, slogan, issued_at, expires_at, members) ",
            );
            q.push_values(chunk, |mut b, p| {
                b.push_bind(p.id)
                    .push_bind(ulid::Ulid::from_parts(p.issued as u64, p.id as u128).to_string())
                    .push_bind(p.feed)
                    .push_bind(None::<i64>)
                    .push_bind(p.slogan)
                    .push_bind(p.issued)
                    .push_bind(p.issued + 180_000)
                    .push_bind((o.displays / o.feeds) as i64);
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    // Only for the load: plays by feed, so each display's plays come in id order.
    exec(&pool, "CREATE INDEX bench_plays_feed ON plays (feed, id)").await?;
    let used_before = used_bytes(&pool).await?;
    let t0 = Instant::now();
    let step = 25i64;
    let mut d0 = 1i64;
    let mut last_print = Instant::now();
    while d0 <= o.displays as i64 {
        let d1 = (d0 + step - 1).min(o.displays as i64);
        let sql = format!(
            "INSERT INTO receipts (device, play, started_at, duration_ms, status) \
             SELECT m.device, p.id, p.issued_at + (m.device % 30) * 1000, 15000, \
                    CASE WHEN {HASH_SQL} < 2 THEN 1 WHEN {HASH_SQL} = 2 THEN 3 ELSE 0 END \
             FROM memberships m JOIN plays p ON p.feed = m.feed \
             WHERE m.device BETWEEN ? AND ? AND {HASH_SQL} < {} \
             ORDER BY m.device, p.id",
            100 - MISSING_PCT
        );
        sqlx::query(&sql)
            .bind(d0)
            .bind(d1)
            .execute(&pool)
            .await
            .context("generating receipts")?;
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "load: receipts for displays up to {d1} of {} ({:.0} s)",
                o.displays,
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        d0 = d1 + 1;
    }
    let receipts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM receipts")
        .fetch_one(&pool)
        .await?;
    let receipts_load = Rate {
        count: receipts as u64,
        secs: t0.elapsed().as_secs_f64(),
    };
    exec(&pool, "DROP INDEX bench_plays_feed").await?;
    let used_after_receipts = used_bytes(&pool).await?;
    eprintln!(
        "load: {receipts} receipts in {:.1} s; the rollups...",
        receipts_load.secs
    );

    // The rollups, a local day at a time, from the plays alone, through the store's own
    // statements (rollups::upserts), for the deployment's offset (UTC+8).
    let t1 = Instant::now();
    let mut rollup_rows = 0i64;
    let mut tx = pool.begin().await?;
    for (i, day) in DayDeltas::new(o, &plays).enumerate() {
        rollup_rows += day.len() as i64;
        for (sql, binds) in rollups::upserts(&day, class_of, &[8], |_| "?".into(), false) {
            bind_all(sqlx::query(&sql), binds).execute(&mut *tx).await?;
        }
        if i % 30 == 29 {
            tx.commit().await?;
            tx = pool.begin().await?;
        }
    }
    sqlx::query("INSERT INTO rollup_daily_coverage (utc_offset) VALUES (8)")
        .execute(&mut *tx)
        .await?;
    // Counts per play, by the migration's own statement (its backfill).
    sqlx::query(&rollups::play_backfill("receipts"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let rollup_load = Rate {
        count: rollup_rows as u64,
        secs: t1.elapsed().as_secs_f64(),
    };
    load_presence(&pool, o, &plays).await?;
    let t = Instant::now();
    let days = write_timelines(&store, o).await?;
    eprintln!(
        "load: timelines of {days} closed days in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    exec(&pool, "PRAGMA wal_checkpoint(TRUNCATE)").await?;
    exec(&pool, "ANALYZE").await?;
    let used_after_rollup = used_bytes(&pool).await?;
    Ok((
        store,
        LoadReport {
            receipts,
            rollup_rows,
            plays: plays.len() as i64,
            displays: o.displays,
            receipts_load,
            rollup_load,
            used_before,
            used_after_receipts,
            used_after_rollup,
            path: path.to_path_buf(),
        },
    ))
}

/// What a daemon running at the history's end has written: the timelines of every closed
/// day (`SqliteStore::compact_played`); the number of days written.
pub async fn write_timelines(store: &SqliteStore, o: &LoadOptions) -> anyhow::Result<usize> {
    let before = o.end.timestamp_millis().div_euclid(86_400_000)
        - civicast::store::sqlite::CLOSED_AFTER_DAYS
        + 1;
    Ok(store.compact_played(before, usize::MAX).await?.len())
}

pub fn print_load(l: &LoadReport) {
    println!();
    println!(
        "load ({}): {} receipts from {} plays to {} displays: receipts {:.1} s ({:.0}/s, generated in SQLite); rollup {} rows {:.1} s ({:.0}/s, bound INSERTs)",
        l.path.display(),
        l.receipts,
        l.plays,
        l.displays,
        l.receipts_load.secs,
        l.receipts_load.per_sec(),
        l.rollup_rows,
        l.rollup_load.secs,
        l.rollup_load.per_sec()
    );
}

/// Presence as the displays would have reported it, from the formula that decides which
/// receipts exist: a display comes online [`CONNECT_LEAD_MS`] before the play of its first
/// receipt of a local day (it must be connected to be sent the play) and stays on to the end
/// of its last, and it is offline for each receipt it misses (the MISSING_PCT "display
/// offline"): from the end of the receipt before to just before the play after. So no stored
/// receipt falls in offline time, no play it answered was issued while it was offline, and
/// no missed play falls in online time. Bound multi-row INSERTs in key order, as for the
/// rollup.
/// How long before the play that opens its online interval a display connected. (Until
/// 2026-12-03 intervals opened at the receipt's start, after the play's issue: a fifth of
/// the members that played then counted as offline at issue.)
const CONNECT_LEAD_MS: i64 = 1_000;

async fn load_presence(
    pool: &sqlx::SqlitePool,
    o: &LoadOptions,
    plays: &[SynthPlay],
) -> anyhow::Result<Rate> {
    let t = Instant::now();
    // Rows go in key order; the index on online_until (migration 0004, same definition
    // below) would take them in random order, several times slower, so it is built after.
    exec(pool, "DROP INDEX IF EXISTS presence_until").await?;
    let mut by_feed: Vec<Vec<&SynthPlay>> = vec![Vec::new(); o.feeds as usize];
    for p in plays {
        by_feed[(p.feed - 1) as usize].push(p);
    }
    let mut rows: Vec<(i64, i64, i64)> = Vec::with_capacity(40_000);
    let (mut written, mut in_tx) = (0i64, 0usize);
    let mut tx = pool.begin().await?;
    let last = o.displays as i64;
    for d in 1..=last {
        // (online from, online until, local day)
        let mut open: Option<(i64, i64, i64)> = None;
        for p in &by_feed[((d - 1) % o.feeds as i64) as usize] {
            if receipt_hash(d, p.id) >= 100 - MISSING_PCT {
                rows.extend(open.take().map(|(s, e, _)| (d, s, e)));
                continue;
            }
            let s = p.issued + offset_ms(d);
            let day = (s + SHANGHAI_MS).div_euclid(86_400_000);
            match &mut open {
                Some((_, e, on)) if *on == day => *e = (*e).max(s + RECEIPT_MS),
                _ => {
                    let closed = open.replace((p.issued - CONNECT_LEAD_MS, s + RECEIPT_MS, day));
                    rows.extend(closed.map(|(s, e, _)| (d, s, e)));
                }
            }
        }
        rows.extend(open.map(|(s, e, _)| (d, s, e)));
        if rows.len() >= 30_000 || d == last {
            for chunk in rows.chunks(5_000) {
                let mut q = QueryBuilder::<Sqlite>::new(
                    "INSERT INTO presence (device, online_from, online_until) ",
                );
                q.push_values(chunk, |mut b, (d, s, e)| {
                    b.push_bind(d).push_bind(s).push_bind(e);
                });
                q.build()
                    .execute(&mut *tx)
                    .await
                    .context("writing presence")?;
            }
            written += rows.len() as i64;
            in_tx += rows.len();
            rows.clear();
            if in_tx >= 1_000_000 {
                tx.commit().await?;
                tx = pool.begin().await?;
                in_tx = 0;
            }
        }
    }
    tx.commit().await?;
    exec(
        pool,
        "CREATE INDEX presence_until ON presence (online_until)",
    )
    .await?;
    let r = Rate {
        count: written as u64,
        secs: t.elapsed().as_secs_f64(),
    };
    eprintln!(
        "load: presence {} intervals in {:.1} s ({:.0}/s)",
        r.count,
        r.secs,
        r.per_sec()
    );
    Ok(r)
}

const MS_PER_DAY: i64 = 86_400_000;

#[derive(Debug, Clone, Default)]
pub struct PgLoadReport {
    pub schema: String,
    pub receipts: i64,
    pub rollup_rows: i64,
    pub plays: i64,
    pub displays: u64,
    pub receipts_load: Rate,
    pub rollup_load: Rate,
    /// Bytes of the receipt partitions (tables, indexes, TOAST) after the load, before
    /// packing: one row per receipt.
    pub raw_bytes: i64,
    /// Receipts packed, and how long it took.
    pub compaction: Rate,
    pub days_packed: usize,
    pub left_raw: u64,
}

/// Writes the synthetic history of `load_sqlite` (same plays, same receipts, same rollup)
/// into the fresh schema `schema` of the database at `url`, then packs every day of it
/// (`PgStore::compact_receipts`). Receipts are generated inside PostgreSQL (`INSERT ...
/// SELECT` over plays x memberships, one statement per day, in arrival order: by play, then
/// display); the rollups are summed in Rust from the plays alone, as for SQLite, and
/// written through the store's statements.
pub async fn load_pg(
    url: &str,
    schema: &str,
    o: &LoadOptions,
) -> anyhow::Result<(PgStore, PgLoadReport)> {
    {
        let mut c = sqlx::PgConnection::connect(url)
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&mut c)
            .await?;
        c.close().await?;
    }
    let store = PgStore::connect_schema(url, schema).await?;
    store.migrate().await?;
    let plays = synth_plays(o);
    let start = o.end.timestamp_millis() - o.days * MS_PER_DAY;
    let first_day = start.div_euclid(MS_PER_DAY);
    let last_day = plays
        .last()
        .map_or(first_day, |p| p.issued.div_euclid(MS_PER_DAY));
    eprintln!(
        "load (PostgreSQL schema {schema}): {} displays, {} feeds, {} plays over {} days, about {} receipts...",
        o.displays,
        o.feeds,
        plays.len(),
        o.days,
        o.receipts
    );
    // A partition per day, a few weeks per transaction (each takes locks on the parent,
    // its table and its indexes; one transaction for a year would exhaust the lock table).
    let mut d = first_day;
    while d <= last_day {
        let n = (last_day - d).min(29);
        store.ensure_partitions(d, n as u32).await?;
        d += n + 1;
    }
    let mut c = store.pool().acquire().await?;
    // A bulk load: nothing is lost to a crash that the bench would not redo anyway.
    sqlx::query("SET synchronous_commit = off")
        .execute(&mut *c)
        .await?;
    {
        let mut tx = c.begin().await?;
        let feeds: Vec<i64> = (1..=o.feeds as i64).collect();
        let feed_names: Vec<String> = feeds.iter().map(|f| format!("feed-{f:02}")).collect();
        sqlx::query(
            "INSERT INTO feeds (id, name) OVERRIDING SYSTEM VALUE
             SELECT * FROM UNNEST($1::bigint[], $2::text[])",
        )
        .bind(&feeds)
        .bind(&feed_names)
        .execute(&mut *tx)
        .await?;
        let slogans: Vec<i64> = (1..=o.slogans as i64).collect();
        let slogan_names: Vec<String> = slogans.iter().map(|s| format!("slogan-{s:02}")).collect();
        sqlx::query(
            "INSERT INTO slogans (id, adset, rev, slogan) OVERRIDING SYSTEM VALUE
             SELECT id, 'civility', 1, slogan FROM UNNEST($1::bigint[], $2::text[]) AS u(id, slogan)",
        )
        .bind(&slogans)
        .bind(&slogan_names)
        .execute(&mut *tx)
        .await?;
        let ids: Vec<i64> = (1..=o.displays as i64).collect();
        for chunk in ids.chunks(10_000) {
            let names: Vec<String> = chunk.iter().map(|d| device_name(*d as usize)).collect();
            let class: Vec<&str> = chunk.iter().map(|d| CLASSES[(*d % 3) as usize]).collect();
            let feed: Vec<i64> = chunk
                .iter()
                .map(|d| (*d - 1) % o.feeds as i64 + 1)
                .collect();
            sqlx::query(
                "INSERT INTO devices (id, name, class) OVERRIDING SYSTEM VALUE
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[])",
            )
            .bind(chunk)
            .bind(&names)
            .bind(&class)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO memberships (device, feed, since)
                 SELECT device, feed, $3 FROM UNNEST($1::bigint[], $2::bigint[]) AS u(device, feed)",
            )
            .bind(chunk)
            .bind(&feed)
            .bind(start - MS_PER_DAY)
            .execute(&mut *tx)
            .await?;
        }
        for chunk in plays.chunks(10_000) {
            let id: Vec<i64> = chunk.iter().map(|p| p.id).collect();
            let play_id: Vec<String> = chunk
                .iter()
                .map(|p| ulid::Ulid::from_parts(p.issued as u64, p.id as u128).to_string())
                .collect();
            let feed: Vec<i64> = chunk.iter().map(|p| p.feed).collect();
            let slogan: Vec<i64> = chunk.iter().map(|p| p.slogan).collect();
            let issued: Vec<i64> = chunk.iter().map(|p| p.issued).collect();
            sqlx::query(
                "INSERT INTO plays (id, play_id, feed, device, slogan, issued_at, expires_at, members)
                 OVERRIDING SYSTEM VALUE
                 SELECT id, play_id, feed, NULL, slogan, issued, issued + 180000, $6
                 FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[])
                      AS u(id, play_id, feed, slogan, issued)",
            )
            .bind(&id)
            .bind(&play_id)
            .bind(&feed)
            .bind(&slogan)
            .bind(&issued)
            .bind((o.displays / o.feeds) as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }

    // Receipts, one statement per day, in the order a live daemon writes them.
    let t0 = Instant::now();
    let mut last_print = Instant::now();
    let sql = format!(
        "INSERT INTO receipts (device, play, started_at, duration_ms, play_day, status)
         SELECT m.device, p.id, p.issued_at + (m.device % 30) * 1000, 15000,
                (p.issued_at / {MS_PER_DAY})::integer,
                (CASE WHEN {HASH_SQL} < 2 THEN 1 WHEN {HASH_SQL} = 2 THEN 3 ELSE 0 END)::smallint
         FROM plays p JOIN memberships m ON m.feed = p.feed
         WHERE p.issued_at >= $1 AND p.issued_at < $2 AND {HASH_SQL} < {}
         ORDER BY p.id, m.device",
        100 - MISSING_PCT
    );
    for day in first_day..=last_day {
        sqlx::query(&sql)
            .bind(day * MS_PER_DAY)
            .bind((day + 1) * MS_PER_DAY)
            .execute(&mut *c)
            .await
            .context("generating receipts")?;
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "load: receipts up to {} ({:.0} s)",
                day_string(day),
                t0.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
    }
    let receipts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM receipts")
        .fetch_one(&mut *c)
        .await?;
    let receipts_load = Rate {
        count: receipts as u64,
        secs: t0.elapsed().as_secs_f64(),
    };
    eprintln!(
        "load: {receipts} receipts in {:.1} s; the rollups...",
        receipts_load.secs
    );

    // The rollups, summed from the plays alone (as in load_sqlite).
    let t1 = Instant::now();
    let mut rollup_rows = 0i64;
    for day in DayDeltas::new(o, &plays) {
        rollup_rows += day.len() as i64;
        let mut tx = c.begin().await?;
        for (sql, binds) in rollups::upserts(&day, class_of, &[8], |n| format!("${n}"), true) {
            bind_all(sqlx::query(&sql), binds).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    sqlx::query("INSERT INTO rollup_daily_coverage (utc_offset) VALUES (8)")
        .execute(&mut *c)
        .await?;
    sqlx::query(&rollups::play_backfill("receipts"))
        .execute(&mut *c)
        .await?;
    let rollup_load = Rate {
        count: rollup_rows as u64,
        secs: t1.elapsed().as_secs_f64(),
    };
    sqlx::query("ANALYZE").execute(&mut *c).await?;
    let raw_bytes = partition_bytes(&store).await?;
    eprintln!(
        "load: rollup {rollup_rows} rows in {:.1} s; packing {} days...",
        rollup_load.secs,
        last_day - first_day + 1
    );
    let t2 = Instant::now();
    let packed = store.compact_receipts(last_day + 1).await?;
    let compaction = Rate {
        count: packed.receipts,
        secs: t2.elapsed().as_secs_f64(),
    };
    sqlx::query("VACUUM ANALYZE receipts_packed")
        .execute(&mut *c)
        .await?;
    Ok((
        store,
        PgLoadReport {
            schema: schema.to_owned(),
            receipts,
            rollup_rows,
            plays: plays.len() as i64,
            displays: o.displays,
            receipts_load,
            rollup_load,
            raw_bytes,
            compaction,
            days_packed: packed.days,
            left_raw: packed.left_raw,
        },
    ))
}

pub fn print_pg_load(l: &PgLoadReport) {
    println!();
    println!(
        "load (PostgreSQL schema {}): {} receipts from {} plays to {} displays: receipts {:.1} s ({:.0}/s, generated in PostgreSQL); rollup {} rows {:.1} s ({:.0}/s, the store's upserts); packed {} days, {} receipts in {:.1} s ({:.0}/s), {} left raw",
        l.schema,
        l.receipts,
        l.plays,
        l.displays,
        l.receipts_load.secs,
        l.receipts_load.per_sec(),
        l.rollup_rows,
        l.rollup_load.secs,
        l.rollup_load.per_sec(),
        l.days_packed,
        l.compaction.count,
        l.compaction.secs,
        l.compaction.per_sec(),
        l.left_raw
    );
}

/// The store alone: `rows` receipts in transactions of `batch` rows, multi-row INSERTs
/// as the store writes them.
pub(crate) async fn raw_insert(
    db: &Db,
    rows: &[(i64, i64, i64)],
    batch: usize,
) -> anyhow::Result<Rate> {
    let t0 = Instant::now();
    for chunk in rows.chunks(batch.max(1)) {
        match db {
            Db::Sqlite(s, _) => {
                let mut tx = s.pool().begin().await?;
                for part in chunk.chunks(4_000) {
                    let mut q = QueryBuilder::<Sqlite>::new(
                        "INSERT INTO receipts (device, play, started_at, duration_ms, status) ",
                    );
                    q.push_values(part, |mut b, (d, p, t)| {
                        b.push_bind(d)
                            .push_bind(p)
                            .push_bind(t)
                            .push_bind(15_000i64)
                            .push_bind(0i64);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            Db::Pg(s, _) => {
                let mut tx = s.pool().begin().await?;
                for part in chunk.chunks(5_000) {
                    let mut q = QueryBuilder::<sqlx::Postgres>::new(
                        "INSERT INTO receipts (device, play, started_at, duration_ms, play_day, status) ",
                    );
                    q.push_values(part, |mut b, (d, p, t)| {
                        b.push_bind(d)
                            .push_bind(p)
                            .push_bind(t)
                            .push_bind(15_000i64)
                            .push_bind(t.div_euclid(86_400_000) as i32)
                            .push_bind(0i16);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
        }
    }
    Ok(Rate {
        count: rows.len() as u64,
        secs: t0.elapsed().as_secs_f64(),
    })
}
