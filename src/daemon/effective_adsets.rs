//! Where the ad sets that play come from: every revision lives in the store, whether it was
//! uploaded (pending until another operator approves it) or read from `schedules/adsets/`
//! (approved: reviewed in version control). What plays is, per ad set not retired, its
//! latest approved revision, parsed against the current displays and feeds.

use std::path::Path;

use tracing::{info, warn};

use crate::core::catalog::{self, AdSetContext, Content};
use crate::core::model::{AdSet, Catalog};
use crate::store::{ApiStore, Db, Revision};

/// The ad-set files of `schedules/adsets/`: (file name, is_json, text). Listed and decoded
/// by the same reader as `check`, so the files registered are the ones it accepted; a file it
/// could not read is left out (`check` reported it, and the catalog did not load).
pub fn read_files(schedules: &Path) -> Vec<(String, bool, String)> {
    let Ok(Ok(files)) = crate::files::read_adsets(schedules).found else {
        return Vec::new();
    };
    files
        .into_iter()
        .filter_map(|f| match f.content {
            Content::Text(text) => Some((f.name.clone(), catalog::adset_is_json(&f.name), text)),
            _ => None,
        })
        .collect()
}

/// Records each file's ad set as an approved revision when its text changed since the
/// last revision that came from a file.
pub async fn register_files(
    store: &Db,
    catalog: &Catalog,
    schedules: &Path,
    now_ms: i64,
) -> anyhow::Result<()> {
    let ctx = AdSetContext::of(catalog);
    for (file, json, text) in read_files(schedules) {
        let Ok(parsed) = catalog::parse_adset(&text, json, &file, &ctx) else {
            // `load_dirs` already reported it; the catalog would not have loaded.
            continue;
        };
        let id = parsed.id.to_string();
        let history = store.adset_history(&id).await?;
        let last_file = history
            .as_ref()
            .and_then(|h| h.revisions.iter().rev().find(|r| r.origin == "file"));
        // Bodies recorded before files were decoded like `check` does kept a leading BOM;
        // the same file must not become a new revision for that alone.
        if last_file.is_some_and(|r| r.body.strip_prefix('\u{feff}').unwrap_or(&r.body) == text) {
            continue;
        }
        let rev = store
            .add_revision(
                &Revision {
                    adset: id.clone(),
                    rev: 0,
                    format: if json { "json" } else { "toml" }.into(),
                    body: text,
                    origin: "file".into(),
                    uploaded_by: format!("file:{}", file_name(&file)),
                    uploaded_ms: now_ms,
                    approved_by: None,
                    approved_ms: None,
                },
                true,
            )
            .await?;
        info!(adset = %id, rev, %file, "ad set file recorded as a new approved revision");
    }
    Ok(())
}

fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// The ad sets that play now: per ad set not retired, the latest approved revision.
pub async fn effective(store: &Db, catalog: &Catalog) -> anyhow::Result<Vec<AdSet>> {
    let ctx = AdSetContext::of(catalog);
    let mut out = Vec::new();
    for h in store.adset_histories().await? {
        if h.retired.is_some() {
            continue;
        }
        let Some(r) = h.revisions.iter().rev().find(|r| r.approved_by.is_some()) else {
            continue;
        };
        match catalog::parse_adset(
            &r.body,
            r.format == "json",
            &format!("{}@{}", r.adset, r.rev),
            &ctx,
        ) {
            Ok(mut a) => {
                a.rev = r.rev;
                out.push(a);
            }
            Err(problems) => {
                // The displays or feeds changed under an approved revision: it cannot play
                // until fixed, and says why.
                for p in problems {
                    warn!(adset = %r.adset, rev = r.rev, problem = %p, "approved revision no longer valid; not playing it");
                }
            }
        }
    }
    Ok(out)
}
