//! Where the ad sets that play come from: every revision lives in the store, whether it was
//! uploaded (pending until another operator approves it) or read from `schedules/adsets/`
//! (approved: reviewed in version control). What plays is, per ad set, the revision
//! `core::approval::playing` names (the latest approved one, unless retired), parsed against
//! the current displays and feeds. A file removed from `schedules/adsets/` is a retirement.
//!
//! Parsed revisions are kept in a [`ParsedAdSets`] cache: a revision never changes once
//! stored, so only a new one, or a change of the displays, classes or feeds it is checked
//! against, costs a parse.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::{info, warn};

use crate::core::catalog::{self, AdSetContext, Content};
use crate::core::model::{AdSet, Catalog, ClassProfile, Device, Feed};
use crate::store::{ApiStore, Db, Revision};

/// Why a file ad set was retired by the daemon, as its history shows it.
pub const FILE_REMOVED: &str = "its file was removed from schedules/adsets/";

/// The ad-set files of `schedules/adsets/`: (file name, is_json, text). Listed and decoded
/// by the same reader as `check`, so the files registered are the ones it accepted; a file it
/// could not read is left out (`check` reported it, and the catalog did not load).
pub fn read_files(schedules: &Path) -> Vec<(String, bool, String)> {
    listing(schedules).files
}

/// What `schedules/adsets/` holds, and whether all of it could be read: only a complete
/// listing says which ad sets have no file any more.
struct Listing {
    files: Vec<(String, bool, String)>,
    complete: bool,
}

fn listing(schedules: &Path) -> Listing {
    let folder = crate::files::read_adsets(schedules);
    let files = match folder.found {
        Ok(Ok(files)) => files,
        // No folder: no ad-set files, as `check` counts them.
        Err(catalog::Absent::NotFound) => {
            return Listing {
                files: Vec::new(),
                complete: true,
            }
        }
        Err(_) | Ok(Err(_)) => {
            return Listing {
                files: Vec::new(),
                complete: false,
            }
        }
    };
    let total = files.len();
    let files: Vec<_> = files
        .into_iter()
        .filter_map(|f| match f.content {
            Content::Text(text) => Some((f.name.clone(), catalog::adset_is_json(&f.name), text)),
            _ => None,
        })
        .collect();
    Listing {
        complete: files.len() == total,
        files,
    }
}

/// Records each file's ad set as an approved revision when its text changed since the
/// last revision that came from a file, or when the set was retired because its file had
/// gone and the file is back. A set playing a revision from a file whose file is gone is
/// retired (by `file:<name>`, [`FILE_REMOVED`]), so that it stops playing, across restarts
/// too, as `check` no longer counts it.
pub async fn register_files(
    store: &Db,
    catalog: &Catalog,
    schedules: &Path,
    now_ms: i64,
) -> anyhow::Result<()> {
    let ctx = AdSetContext::of(catalog);
    let listing = listing(schedules);
    let mut complete = listing.complete;
    let mut present = HashSet::new();
    for (file, json, text) in listing.files {
        let Ok(parsed) = catalog::parse_adset(&text, json, &file, &ctx) else {
            // `load_dirs` already reported it; the catalog would not have loaded. Its id
            // is unknown, so no ad set can be said to have lost its file.
            complete = false;
            continue;
        };
        let id = parsed.id.to_string();
        present.insert(id.clone());
        let history = store.adset_history(&id).await?;
        let last_file = history
            .as_ref()
            .and_then(|h| h.revisions.iter().rev().find(|r| r.origin == "file"));
        let back = history
            .as_ref()
            .and_then(|h| h.retired.as_ref())
            .is_some_and(|t| t.reason.as_deref() == Some(FILE_REMOVED));
        // Bodies recorded before files were decoded like `check` does kept a leading BOM;
        // the same file must not become a new revision for that alone.
        if !back
            && last_file.is_some_and(|r| r.body.strip_prefix('\u{feff}').unwrap_or(&r.body) == text)
        {
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
                    uploaded_token: None,
                    uploaded_ms: now_ms,
                    approved_by: None,
                    approved_token: None,
                    approved_ms: None,
                },
                true,
            )
            .await?;
        info!(adset = %id, rev, %file, "ad set file recorded as a new approved revision");
    }
    if !complete {
        warn!(folder = %schedules.join("adsets").display(), "not every ad-set file could be read; no file ad set is retired for a missing file this time");
        return Ok(());
    }
    for h in store.adset_histories().await? {
        let Some(playing) = h.playing() else {
            continue;
        };
        if playing.origin != "file" || present.contains(&h.adset) {
            continue;
        }
        // The file named at its last revision from a file: the one that went.
        let by = playing.uploaded_by.clone();
        store
            .retire_for(&h.adset, &by, FILE_REMOVED, now_ms)
            .await?;
        info!(adset = %h.adset, rev = playing.rev, %by, "ad set file removed: ad set retired");
    }
    Ok(())
}

fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

/// What an ad set is checked against: a parse stays good while these are unchanged.
struct Checked {
    timezone: chrono_tz::Tz,
    classes: BTreeMap<String, ClassProfile>,
    feeds: Vec<Feed>,
    devices: Arc<Vec<Device>>,
}

impl Checked {
    fn of(c: &Catalog) -> Checked {
        Checked {
            timezone: c.timezone,
            classes: c.classes.clone(),
            feeds: c.feeds.clone(),
            devices: c.devices.clone(),
        }
    }
    fn same_as(&self, c: &Catalog) -> bool {
        self.timezone == c.timezone
            && self.classes == c.classes
            && self.feeds == c.feeds
            // A reload of unchanged files shares nothing: compare the lists then.
            && (Arc::ptr_eq(&self.devices, &c.devices) || self.devices == c.devices)
    }
}

#[derive(Default)]
struct Cache {
    checked: Option<Checked>,
    /// By (ad set, revision): the parsed set, or None when it did not parse (already said).
    parsed: HashMap<(String, i64), Option<Arc<AdSet>>>,
}

/// Parsed revisions by (ad set, revision), valid for one state of the displays, classes and
/// feeds; one per daemon, shared by its reloads (which `Shared::reloading` serialises).
#[derive(Default)]
pub struct ParsedAdSets(Mutex<Cache>);

impl ParsedAdSets {
    /// The revision `r` parsed against `catalog`: from the cache when `catalog`'s displays,
    /// classes and feeds are those it was parsed against, else parsed now (and a failure
    /// logged once).
    fn get(&self, catalog: &Catalog, r: &Revision) -> Option<Arc<AdSet>> {
        let key = (r.adset.clone(), r.rev);
        {
            let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if c.checked.as_ref().is_some_and(|k| k.same_as(catalog)) {
                if let Some(hit) = c.parsed.get(&key) {
                    return hit.clone();
                }
            } else {
                c.checked = Some(Checked::of(catalog));
                c.parsed.clear();
            }
        }
        // Parsed outside the lock: a big set takes a while, and nothing else waits on it.
        let parsed = match catalog::parse_adset(
            &r.body,
            r.format == "json",
            &format!("{}@{}", r.adset, r.rev),
            &AdSetContext::of(catalog),
        ) {
            Ok(mut a) => {
                a.rev = r.rev;
                Some(Arc::new(a))
            }
            Err(problems) => {
                // The displays or feeds changed under an approved revision: it cannot play
                // until fixed, and says why.
                for p in problems {
                    warn!(adset = %r.adset, rev = r.rev, problem = %p, "approved revision no longer valid; not playing it");
                }
                None
            }
        };
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if c.checked.as_ref().is_some_and(|k| k.same_as(catalog)) {
            c.parsed.insert(key, parsed.clone());
        }
        parsed
    }

    /// Drops the parses of revisions no longer playing.
    fn keep_only(&self, playing: &HashSet<(String, i64)>) {
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        c.parsed.retain(|k, _| playing.contains(k));
    }
}

/// The ad sets that play now: per ad set, its playing revision (the latest approved one
/// that no retirement covers).
pub async fn effective(
    store: &Db,
    catalog: &Catalog,
    cache: &ParsedAdSets,
) -> anyhow::Result<Vec<AdSet>> {
    let mut out = Vec::new();
    let mut playing = HashSet::new();
    for h in store.adset_histories().await? {
        let Some(r) = h.playing() else {
            continue;
        };
        playing.insert((r.adset.clone(), r.rev));
        if let Some(a) = cache.get(catalog, r) {
            out.push((*a).clone());
        }
    }
    cache.keep_only(&playing);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLASSES: &str =
        "[class.bus_led]\nmax_chars = 40\ncharset = \"gb2312\"\nduration = \"1s\"\n";
    const FLEET: &str = "id,class\nbus-1,bus_led\n";
    const ON_BUS: &str = "id = \"civility\"\nvalid_from = \"2020-01-01\"\nvalid_until = \"2099-12-31\"\nfeeds = [\"bus\"]\n\n[[slogan]]\nid = \"jiang-wenming\"\ntext = \"讲文明 树新风\"\n";

    /// The files' catalog with one feed, `feed`, over the one bus.
    fn catalog(feed: &str) -> Catalog {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write");
        };
        w("devices/classes.toml", CLASSES);
        w("devices/fleet.csv", FLEET);
        w(
            "schedules/feeds.toml",
            &format!("timezone = \"Asia/Shanghai\"\n\n[[feed]]\nid = \"{feed}\"\nselect = {{ class = \"bus_led\" }}\ninterval = \"1s\"\n"),
        );
        std::fs::create_dir_all(dir.path().join("schedules/adsets")).expect("mkdir");
        let r = crate::files::load_dirs(&dir.path().join("devices"), &dir.path().join("schedules"));
        r.catalog.expect("a valid catalog")
    }

    fn revision() -> Revision {
        Revision {
            adset: "civility".into(),
            rev: 3,
            format: "toml".into(),
            body: ON_BUS.into(),
            origin: "upload".into(),
            uploaded_by: "alice".into(),
            uploaded_token: Some(1),
            uploaded_ms: 1,
            approved_by: Some("bob".into()),
            approved_token: Some(2),
            approved_ms: Some(2),
        }
    }

    #[test]
    fn a_parse_is_kept_while_the_files_are_the_same_and_checked_again_when_they_change() {
        let cache = ParsedAdSets::default();
        let r = revision();
        let on_bus = catalog("bus");
        let first = cache.get(&on_bus, &r).expect("plays on the bus feed");
        assert_eq!((first.id.as_str(), first.rev), ("civility", 3));
        let again = cache.get(&on_bus, &r).expect("still plays");
        assert!(Arc::ptr_eq(&first, &again), "the same parse, not a new one");
        let reloaded = catalog("bus");
        let after_reload = cache.get(&reloaded, &r).expect("still plays");
        assert!(
            Arc::ptr_eq(&first, &after_reload),
            "files read again but unchanged keep the parse"
        );
        // The feed it names is gone: checked against the new feeds, it no longer plays.
        assert_eq!(cache.get(&catalog("coach"), &r), None);
        let back = cache
            .get(&on_bus, &r)
            .expect("plays again once the feed is back");
        assert_eq!(*back, *first);
    }
}
