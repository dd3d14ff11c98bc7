//! The audit scenario: on the synthetic year, every play-count grouping of the contract
//! (`plays`: through `Store::audit_plays` beside the naive GROUP BY over raw receipts), then
//! compliance for the last week through `reports::compliance_report` beside a naive fold
//! over raw rows; answers compared row for row. The play-count loop is shared with
//! PostgreSQL (`pg`).
//!
//! Owns: the SQLite run of the play counts, compliance's timing and naive fold, and the
//! inventory the history was played to (`<database>-inventory/`). Must not touch: the rows of the history (it only reads
//! them; the loader fills every rollup through the store's own statements).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use chrono::DateTime;
use civicast::core::audit::{PlaysQuery, PlaysRow};
use civicast::core::model::Catalog;
use civicast::store::{ApiStore, SqliteStore};
use sqlx::Row;

use crate::fixture::{device_name, load_catalog, ADSET};
use crate::plays::{
    bind_all, identical_text, naive_answer, naive_sql, play_count_queries, print_queries,
    QueryReport, SQLITE,
};
use crate::report::{met, pct};
use crate::synth::{LoadOptions, DAY_SHAPE};

#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    pub receipts: i64,
    pub queries: Vec<QueryReport>,
    pub compliance: Option<ComplianceBench>,
}

impl AuditReport {
    /// No answer differs from its naive counterpart (answers not compared, with
    /// `--naive-runs 0`, do not count against it).
    pub fn identical(&self) -> bool {
        self.queries.iter().all(|q| q.identical != Some(false))
            && self
                .compliance
                .as_ref()
                .is_none_or(|c| c.identical != Some(false))
    }
}

/// The naive answer on SQLite: [`naive_sql`] over `receipts`, one scan of it.
async fn naive_sqlite(store: &SqliteStore, q: PlaysQuery) -> anyhow::Result<Vec<PlaysRow>> {
    let (sql, binds) = naive_sql(&q, &SQLITE);
    let rows = bind_all(sqlx::query(&sql), binds)
        .fetch_all(store.pool())
        .await?;
    naive_answer(&q, rows)
}

/// The audit queries through the store (`Store::audit_plays`), beside the naive GROUP BY.
pub async fn audit(
    store: &SqliteStore,
    o: &LoadOptions,
    runs: usize,
    (naive_runs, naive_compliance_runs): (usize, usize),
) -> anyhow::Result<AuditReport> {
    let tz = chrono_tz::Asia::Shanghai;
    let mut report = AuditReport {
        receipts: sqlx::query_scalar("SELECT COUNT(*) FROM receipts")
            .fetch_one(store.pool())
            .await?,
        ..Default::default()
    };
    report.queries = play_count_queries(store, o, tz, runs, naive_runs, |q| {
        Box::pin(naive_sqlite(store, q))
    })
    .await?;
    report.compliance = Some(audit_compliance(store, o, runs, naive_compliance_runs).await?);
    Ok(report)
}

pub fn print_audit(r: &AuditReport) {
    println!();
    println!("audit: {} receipts", r.receipts);
    print_queries(&r.queries);
    if let Some(c) = &r.compliance {
        print_compliance(c);
    }
}

/// Targets of the synthetic feeds, cycled over the feeds: the rotation interval as a
/// multiple of the plays' spacing at the busiest hours, and whether the feed keeps to
/// 06:00-23:00 (the night's sparse plays would fail any interval near the day's spacing).
/// Chosen so that some displays meet their target and some do not.
const FEED_TARGETS: [(f64, bool); 10] = [
    (1.0, true),
    (1.5, true),
    (6.0, false),
    (1.25, true),
    (2.0, true),
    (1.1, true),
    (3.0, true),
    (14.0, false),
    (1.75, true),
    (2.5, true),
];
const BENCH_DAYPART: &str = "* * 6-22 * * *";

/// The inventory the synthetic history was played to, as an operator would keep it: one
/// CSV of the displays (class and feed as in the database), three classes, one feed per
/// `feed-NN` with its interval and daypart from [`FEED_TARGETS`].
pub(crate) fn write_audit_inventory(
    root: &Path,
    o: &LoadOptions,
    plays: usize,
) -> anyhow::Result<()> {
    let w = |rel: &str, text: &str| -> anyhow::Result<()> {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    let _ = std::fs::remove_dir_all(root);
    let classes = ["bus_led", "taxi_top", "stop_lcd"];
    let mut csv = String::from("id,class,feed\n");
    for d in 1..=o.displays as i64 {
        csv.push_str(&format!(
            "{},{},feed-{:02}\n",
            device_name(d as usize),
            classes[(d % 3) as usize],
            (d - 1) % o.feeds as i64 + 1
        ));
    }
    w("devices/fleet.csv", &csv)?;
    let mut toml = String::new();
    for c in classes {
        toml.push_str(&format!(
            "[class.{c}]\nmax_chars = 40\ncharset = \"gb2312\"\nduration = \"15s\"\n\n"
        ));
    }
    w("devices/classes.toml", &toml)?;
    // A feed's plays are spread by DAY_SHAPE: at weight 1 they come every `spacing` ms.
    let per_feed = plays as f64 / o.feeds as f64;
    let shape: f64 = DAY_SHAPE.iter().sum();
    let spacing = 3_600_000.0 * o.days as f64 * shape / per_feed.max(1.0);
    let mut toml = String::from("timezone = \"Asia/Shanghai\"\n");
    for f in 1..=o.feeds {
        let (times, daypart) = FEED_TARGETS[(f as usize - 1) % FEED_TARGETS.len()];
        // Feeds play at least once a day, as the catalog requires (1s to 24h).
        let secs = (spacing * times / 1000.0).round().clamp(1.0, 86_400.0);
        toml.push_str(&format!(
            "\n[[feed]]\nid = \"feed-{f:02}\"\nselect = {{ feed = \"feed-{f:02}\" }}\ninterval = \"{secs}s\"\n"
        ));
        if daypart {
            toml.push_str(&format!("daypart = \"{BENCH_DAYPART}\"\n"));
        }
    }
    w("schedules/feeds.toml", &toml)?;
    w("schedules/adsets/civility.toml", ADSET)?;
    Ok(())
}

/// Compliance for a week, through the report path beside the naive fold.
#[derive(Debug, Clone, Default)]
pub struct ComplianceBench {
    pub name: String,
    pub rows: usize,
    pub met: usize,
    /// Played receipts counted (started while online and active).
    pub plays: u64,
    /// Played receipts of the week and presence intervals overlapping it, as read.
    pub receipts_read: usize,
    pub presence_read: usize,
    pub report_p50_ms: f64,
    pub report_p95_ms: f64,
    /// One call each of the two store reads the report makes, outside the timed runs.
    pub played_between_ms: f64,
    pub presence_between_ms: f64,
    pub naive_p50_ms: f64,
    pub naive_p95_ms: f64,
    /// None when the naive fold did not run (`--naive-runs 0`).
    pub identical: Option<bool>,
}

/// The naive answer: plain SELECTs of the raw rows (no join, no order, no index but the
/// tables' own), feeds from the stored memberships rather than the catalog's selectors,
/// grouped in Rust and judged by [`plain_judge`], a fold of its own (not
/// `compliance::evaluate`, the code the report runs), so that "identical" means two
/// independent readings of the contract agree.
async fn naive_compliance(
    store: &SqliteStore,
    catalog: &Catalog,
    from_ms: i64,
    to_ms: i64,
) -> anyhow::Result<(Vec<civicast::reports::ComplianceRow>, usize, usize)> {
    use futures_util::TryStreamExt;
    use std::collections::HashMap;
    let pool = store.pool();
    let mut devices: BTreeMap<i64, (String, String)> = BTreeMap::new();
    for r in sqlx::query("SELECT id, name, class FROM devices")
        .fetch_all(pool)
        .await?
    {
        devices.insert(r.try_get(0)?, (r.try_get(1)?, r.try_get(2)?));
    }
    let mut feed_index: HashMap<i64, usize> = HashMap::new();
    for r in sqlx::query("SELECT id, name FROM feeds")
        .fetch_all(pool)
        .await?
    {
        let name: String = r.try_get(1)?;
        if let Some(i) = catalog.feeds.iter().position(|f| f.id.as_str() == name) {
            feed_index.insert(r.try_get(0)?, i);
        }
    }
    let mut feeds: HashMap<i64, Vec<usize>> = HashMap::new();
    for r in sqlx::query("SELECT device, feed, since, until FROM memberships")
        .fetch_all(pool)
        .await?
    {
        let (since, until): (i64, Option<i64>) = (r.try_get(2)?, r.try_get(3)?);
        if since < to_ms && until.is_none_or(|u| u > from_ms) {
            if let Some(&i) = feed_index.get(&r.try_get::<i64, _>(1)?) {
                feeds.entry(r.try_get(0)?).or_default().push(i);
            }
        }
    }
    let mut online: HashMap<i64, Vec<(i64, i64)>> = HashMap::new();
    let mut presence_read = 0;
    let mut rows =
        sqlx::query("SELECT device, online_from, online_until FROM presence").fetch(pool);
    while let Some(r) = rows.try_next().await? {
        let (s, e): (i64, Option<i64>) = (r.try_get(1)?, r.try_get(2)?);
        if s < to_ms && e.is_none_or(|e| e > from_ms) {
            presence_read += 1;
            online
                .entry(r.try_get(0)?)
                .or_default()
                .push((s, e.unwrap_or(to_ms)));
        }
    }
    drop(rows);
    let mut played: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut receipts_read = 0;
    let mut rows = sqlx::query(
        "SELECT device, started_at FROM receipts WHERE status = 0 AND started_at >= ? AND started_at < ?",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch(pool);
    while let Some(r) = rows.try_next().await? {
        receipts_read += 1;
        played.entry(r.try_get(0)?).or_default().push(r.try_get(1)?);
    }
    drop(rows);
    let mut out = Vec::with_capacity(devices.len());
    for (id, (name, class)) in devices {
        let Some(fs) = feeds.get_mut(&id) else {
            continue;
        };
        fs.sort_unstable();
        fs.dedup();
        let Some(interval) = fs.iter().map(|&i| catalog.feeds[i].interval).min() else {
            continue;
        };
        let parts: Vec<_> = fs
            .iter()
            .map(|&i| catalog.feeds[i].daypart.as_ref())
            .collect();
        let o = plain_judge(
            from_ms,
            to_ms,
            online.get(&id).map(Vec::as_slice).unwrap_or(&[]),
            &|t| {
                let local = t.with_timezone(&catalog.timezone);
                parts.iter().any(|d| d.is_none_or(|d| d.includes(local)))
            },
            played.get(&id).map(Vec::as_slice).unwrap_or(&[]),
            interval.as_millis() as i64,
        );
        out.push(civicast::reports::ComplianceRow {
            device: name,
            class,
            online_seconds: o.online_ms as f64 / 1000.0,
            plays: o.plays,
            mean_interval_s: (o.plays > 0).then(|| o.online_ms as f64 / o.plays as f64 / 1000.0),
            longest_gap_s: o.longest_gap_ms as f64 / 1000.0,
            interval_s: interval.as_secs_f64(),
            met: o.met,
        });
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    Ok((out, receipts_read, presence_read))
}

/// One display's figures by [`plain_judge`].
struct Judged {
    online_ms: i64,
    plays: u64,
    longest_gap_ms: i64,
    met: bool,
}

/// The contract's compliance rule, read plainly, for dayparts of whole minutes (the
/// bench's are hours): cut [from, to) at every minute and at every presence boundary; a
/// piece counts when a presence span covers it and `active` holds at its minute; touching
/// pieces that count are one stretch; gaps run from a stretch's start to its first play,
/// play to play, and its last play to its end. Met: mean interval <= 1.1 x interval and
/// no gap over 2 x; as the report documents where the contract is silent, no counted
/// time is met and less than one interval is judged by the gap alone.
fn plain_judge(
    from_ms: i64,
    to_ms: i64,
    online: &[(i64, i64)],
    active: &dyn Fn(DateTime<chrono::Utc>) -> bool,
    played: &[i64],
    interval_ms: i64,
) -> Judged {
    const MIN: i64 = 60_000;
    let mut cuts: Vec<i64> = vec![from_ms, to_ms];
    for &(s, e) in online {
        cuts.extend([s, e].into_iter().filter(|t| (from_ms..to_ms).contains(t)));
    }
    let first_minute = from_ms.div_euclid(MIN) * MIN + MIN;
    cuts.extend((first_minute..to_ms).step_by(MIN as usize));
    cuts.sort_unstable();
    cuts.dedup();
    let mut minute_active: BTreeMap<i64, bool> = BTreeMap::new();
    let mut stretches: Vec<(i64, i64)> = Vec::new();
    for w in cuts.windows(2) {
        let (a, b) = (w[0], w[1]);
        let on = online.iter().any(|&(s, e)| s <= a && b <= e);
        let minute = a.div_euclid(MIN) * MIN;
        let act = *minute_active
            .entry(minute)
            .or_insert_with(|| DateTime::from_timestamp_millis(minute).is_some_and(active));
        if !(on && act) {
            continue;
        }
        match stretches.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => stretches.push((a, b)),
        }
    }
    let mut sorted = played.to_vec();
    sorted.sort_unstable();
    let (mut online_ms, mut plays, mut longest) = (0i64, 0u64, 0i64);
    for (s, e) in stretches {
        online_ms += e - s;
        let mut prev = s;
        for &p in sorted.iter().filter(|&&p| s <= p && p < e) {
            longest = longest.max(p - prev);
            prev = p;
            plays += 1;
        }
        longest = longest.max(e - prev);
    }
    let gap_ok = longest <= 2 * interval_ms;
    // mean <= 1.1 x interval in whole numbers: online / plays <= 11 / 10 x interval.
    let mean_ok = plays > 0 && online_ms * 10 <= 11 * interval_ms * plays as i64;
    let met = online_ms == 0 || (gap_ok && (online_ms < interval_ms || mean_ok));
    Judged {
        online_ms,
        plays,
        longest_gap_ms: longest,
        met,
    }
}

/// Compliance for the last 7 days of the history through `reports::compliance_report` (what
/// `GET /api/v1/audit/compliance` and `civicast audit compliance` run), `runs` times, beside
/// [`naive_compliance`] `naive_runs` times; answers compared row for row.
async fn audit_compliance(
    store: &SqliteStore,
    o: &LoadOptions,
    runs: usize,
    naive_runs: usize,
) -> anyhow::Result<ComplianceBench> {
    let tz = chrono_tz::Asia::Shanghai;
    let plays: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plays")
        .fetch_one(store.pool())
        .await?;
    // Beside the database, so the inventory goes wherever the bench's data goes.
    let db = store.pool().connect_options().get_filename().to_path_buf();
    let root = db.with_file_name(format!(
        "{}-inventory",
        db.file_stem().and_then(|s| s.to_str()).unwrap_or("audit")
    ));
    write_audit_inventory(&root, o, plays as usize)?;
    let catalog = load_catalog(&root)?;
    let end = o.end.with_timezone(&tz);
    let from = end - chrono::Duration::days(7);
    let p = civicast::reports::ComplianceParams {
        from: Some(from.format("%Y-%m-%d").to_string()),
        to: Some(end.format("%Y-%m-%d").to_string()),
        ..Default::default()
    };
    let factors = civicast::core::audit::compliance::Factors::default();
    let db: civicast::store::Db = store.clone().into();
    let name = "compliance, 7 days";
    eprintln!("audit: {name}: {runs} runs through the report, {naive_runs} naive...");
    let mut fast = Vec::with_capacity(runs);
    let mut answer = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        answer = civicast::reports::compliance_report(&db, &catalog, &p, o.end, factors)
            .await?
            .rows;
        fast.push(t.elapsed().as_secs_f64() * 1e3);
    }
    answer.sort_by(|a, b| a.device.cmp(&b.device));
    let (f, t) = (from.timestamp_millis(), end.timestamp_millis());
    let clock = Instant::now();
    let presence_read = store.presence_between(f, t).await?.len();
    let presence_between_ms = clock.elapsed().as_secs_f64() * 1e3;
    let clock = Instant::now();
    let receipts_read: usize = store
        .played_between(f, t, None)
        .await?
        .iter()
        .map(|p| p.starts.len())
        .sum();
    let played_between_ms = clock.elapsed().as_secs_f64() * 1e3;
    let mut slow = Vec::with_capacity(naive_runs);
    let mut plain = (Vec::new(), 0, 0);
    for _ in 0..naive_runs {
        let clock = Instant::now();
        plain = naive_compliance(store, &catalog, f, t).await?;
        slow.push(clock.elapsed().as_secs_f64() * 1e3);
    }
    let identical = (naive_runs > 0)
        .then(|| answer == plain.0 && receipts_read == plain.1 && presence_read == plain.2);
    Ok(ComplianceBench {
        name: name.into(),
        rows: answer.len(),
        met: answer.iter().filter(|r| r.met).count(),
        plays: answer.iter().map(|r| r.plays).sum(),
        receipts_read,
        presence_read,
        report_p50_ms: pct(fast.clone(), 0.5),
        report_p95_ms: pct(fast, 0.95),
        played_between_ms,
        presence_between_ms,
        naive_p50_ms: pct(slow.clone(), 0.5),
        naive_p95_ms: pct(slow, 0.95),
        identical,
    })
}

fn print_compliance(c: &ComplianceBench) {
    println!();
    println!("| query | displays | met | plays counted | played receipts read | presence read | report p50 ms | report p95 ms | naive p50 ms | naive p95 ms | naive/report (p50) | identical |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    println!(
        "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1}x | {} |",
        c.name,
        c.rows,
        c.met,
        c.plays,
        c.receipts_read,
        c.presence_read,
        c.report_p50_ms,
        c.report_p95_ms,
        c.naive_p50_ms,
        c.naive_p95_ms,
        c.naive_p50_ms / c.report_p50_ms.max(1e-9),
        identical_text(c.identical)
    );
    println!(
        "{}: of the report, one call each: played_between {:.1} ms, presence_between {:.1} ms; same answer: {}",
        c.name,
        c.played_between_ms,
        c.presence_between_ms,
        c.identical.map_or("not checked", met)
    );
}
