//! Reads the operators' folders from disk for the pure catalog parser: walks `devices/` and
//! `schedules/`, picks the files that count (`*.csv`, `classes.toml`, `feeds.toml`,
//! `adsets/*.toml|*.json`, extensions in any case, sorted by file name), decodes them as UTF-8
//! without a byte order mark, and records a missing folder or an unreadable file as data.
//!
//! It owns only which files are read and how bytes become text; it must not judge their
//! contents or word a problem (that is `core::catalog`). Every reader of these folders goes
//! through here, so the daemon registers exactly the ad sets that `check` accepted.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::core::catalog::{
    self, Absent, Content, DeviceFiles, Folder, Listing, Report, ScheduleFiles, SourceFile, Sources,
};

/// Reads `devices/classes.toml` and `devices/*.csv`, `schedules/feeds.toml` and
/// `schedules/adsets/*.toml|*.json`, named in problems as the paths given joined with the
/// file names. A folder that is missing is recorded, and its files are not read.
pub fn read_sources(devices: &Path, schedules: &Path) -> Sources {
    Sources {
        devices: folder(devices, |dir| DeviceFiles {
            classes: read_file(&dir.join("classes.toml")),
            lists: list(dir, &["csv"]),
        }),
        schedules: folder(schedules, |dir| ScheduleFiles {
            feeds: read_file(&dir.join("feeds.toml")),
            adsets: read_adsets(dir),
        }),
    }
}

/// Reads and parses the operators' folders: the catalog and every problem in them, dayparts
/// looked at from the system's clock.
pub fn load_dirs(devices: &Path, schedules: &Path) -> Report {
    catalog::parse(&read_sources(devices, schedules), chrono::Utc::now())
}

/// `schedules/adsets/` and its ad-set files, as [`read_sources`] reads them.
pub fn read_adsets(schedules: &Path) -> Folder<Listing> {
    folder(&schedules.join("adsets"), |dir| {
        list(dir, &["toml", "json"])
    })
}

/// The file `civicast reload` leaves in `devices/` for the running daemon: its file watcher
/// re-reads the folders, and with `accept-drop` in it applies one edit that takes away more
/// displays or ad sets than `max_drop` allows; then it removes the file. Not a `*.csv`, so
/// no display list.
pub const RELOAD_MARKER: &str = ".civicast-reload";

/// What a reload request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadRequest {
    pub accept_drop: bool,
}

/// Leaves a reload request for the daemon watching `devices`; returns the marker's path.
/// Written under another name and renamed, so the watcher never reads half of it.
pub fn request_reload(devices: &Path, accept_drop: bool) -> std::io::Result<PathBuf> {
    let path = devices.join(RELOAD_MARKER);
    let tmp = devices.join(format!("{RELOAD_MARKER}.tmp"));
    let body = if accept_drop {
        "accept-drop\n"
    } else {
        "reload\n"
    };
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The reload request waiting in `devices`, if any.
pub fn reload_request(devices: &Path) -> Option<ReloadRequest> {
    let text = std::fs::read_to_string(devices.join(RELOAD_MARKER)).ok()?;
    Some(ReloadRequest {
        accept_drop: text.lines().any(|l| l.trim() == "accept-drop"),
    })
}

/// Removes the reload request (once acted on); a missing one is fine.
pub fn clear_reload_request(devices: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(devices.join(RELOAD_MARKER)) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// The folder `dir` with `contents` read from it, or why there is none.
fn folder<T>(dir: &Path, contents: impl FnOnce(&Path) -> T) -> Folder<T> {
    let found = if dir.is_dir() {
        Ok(contents(dir))
    } else if dir.exists() {
        Err(Absent::NotADirectory)
    } else {
        Err(Absent::NotFound)
    };
    Folder {
        name: display(dir),
        found,
    }
}

/// The files in `dir` whose extension is one of `exts` (in any case), sorted by name, read.
fn list(dir: &Path, exts: &[&str]) -> Listing {
    let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.iter().any(|x| x.eq_ignore_ascii_case(e)))
        })
        .collect();
    paths.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(paths.iter().map(|p| read_file(p)).collect())
}

/// A file as UTF-8 text, a byte order mark dropped (editors on Windows add one).
fn read_file(path: &Path) -> SourceFile {
    let content = match std::fs::read(path) {
        Ok(bytes) => decode(bytes),
        Err(e) if e.kind() == ErrorKind::NotFound => Content::NotFound,
        Err(e) => Content::Unreadable(e.to_string()),
    };
    SourceFile {
        name: display(path),
        content,
    }
}

fn decode(bytes: Vec<u8>) -> Content {
    match String::from_utf8(bytes) {
        Ok(mut s) => {
            if s.starts_with('\u{feff}') {
                s.drain(..'\u{feff}'.len_utf8());
            }
            Content::Text(s)
        }
        Err(e) => {
            let good = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..good].iter().filter(|b| **b == b'\n').count() + 1;
            Content::NotUtf8 { line }
        }
    }
}

/// The folder of unit lists under `devices/`: not `devices/*.csv`, which are display lists.
pub const UNITS_DIR: &str = "units";
/// The checklist, sample sizes and rules of the inspections, beside `classes.toml`.
pub const INSPECTIONS_FILE: &str = "inspections.toml";

/// Reads `devices/units/*.csv` and `devices/inspections.toml` and parses them against the
/// displays `check` accepted: the inspections' setup and every problem in those files. `check`
/// and `serve` both call this, so the daemon inspects exactly what `check` accepted.
pub fn load_inspect(
    devices: &Path,
    displays: &[crate::core::model::Device],
) -> (crate::core::inspect::Setup, Vec<catalog::Problem>) {
    use crate::core::inspect::{config, units, Setup};
    let dir = devices.join(UNITS_DIR);
    let listing = dir.is_dir().then(|| list(&dir, &["csv"]));
    let (units, mut problems) = units::parse_units(listing.as_ref(), &display(&dir), displays);
    let cfg_path = devices.join(INSPECTIONS_FILE);
    let cfg = read_file(&cfg_path);
    let text = match &cfg.content {
        Content::Text(t) => Some(t.as_str()),
        Content::NotFound => None,
        Content::Unreadable(e) => {
            problems.push(catalog::Problem::error(
                &cfg.name,
                None,
                None,
                format!("cannot be read: {e}"),
            ));
            None
        }
        Content::NotUtf8 { line } => {
            problems.push(catalog::Problem::error(
                &cfg.name,
                Some(*line),
                None,
                "not UTF-8 text",
            ));
            None
        }
    };
    let (config, mut more) = config::parse_config(text, &cfg.name);
    problems.append(&mut more);
    (Setup { units, config }, problems)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::core::catalog::fixtures::{sources, valid_files};
    use crate::core::catalog::Problem;

    struct Dirs {
        root: PathBuf,
        devices: PathBuf,
        schedules: PathBuf,
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn tmp_dirs(files: &[(&str, &str)]) -> Dirs {
        static N: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "civicast-files-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        for (name, text) in files {
            let p = root.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
        }
        std::fs::create_dir_all(root.join("devices")).unwrap();
        std::fs::create_dir_all(root.join("schedules")).unwrap();
        Dirs {
            devices: root.join("devices"),
            schedules: root.join("schedules"),
            root,
        }
    }

    fn show(ps: &[Problem]) -> String {
        ps.iter().map(|p| format!("  {p}\n")).collect()
    }

    fn rel(d: &Dirs, name: &str) -> String {
        d.root.join(name).display().to_string()
    }

    #[test]
    fn missing_dirs_and_files_are_errors_naming_them() {
        let d = tmp_dirs(&[]);
        let r = load_dirs(&d.root.join("nope"), &d.schedules);
        assert!(r.catalog.is_none());
        let text = show(&r.problems);
        assert!(
            text.contains(&format!(
                "{}: directory not found",
                d.root.join("nope").display()
            )),
            "{text}"
        );
        assert!(text.contains("feeds.toml: file not found"), "{text}");

        let r = load_dirs(&d.devices, &d.schedules);
        let text = show(&r.problems);
        assert!(text.contains("classes.toml: file not found"), "{text}");
        assert!(
            text.contains("warning: ") && text.contains("adsets"),
            "{text}"
        );
    }

    #[test]
    fn non_utf8_csv_is_an_error() {
        let d = tmp_dirs(&valid_files());
        std::fs::write(d.devices.join("gbk.csv"), b"id,class\n\xbd\xb2,bus_led\n").unwrap();
        let r = load_dirs(&d.devices, &d.schedules);
        let p = r.problems.iter().find(|p| p.is_error()).unwrap();
        assert_eq!(
            (p.file.clone(), p.line),
            (d.devices.join("gbk.csv").display().to_string(), Some(2))
        );
    }

    /// Loads the valid files from disk with `replace` swapped in (or added).
    fn load_with(replace: &[(&'static str, &'static str)]) -> (Report, Dirs) {
        let mut files = valid_files();
        for (name, text) in replace {
            match files.iter_mut().find(|(n, _)| n == name) {
                Some(f) => f.1 = text,
                None => files.push((name, text)),
            }
        }
        let d = tmp_dirs(&files);
        (load_dirs(&d.devices, &d.schedules), d)
    }

    #[test]
    fn bom_and_comments_are_fine() {
        let (r, _d) = load_with(&[(
            "devices/fleet.csv",
            "\u{feff}# displays\nid,class\nbus-1,bus_led\ntaxi-1,taxi_top\n",
        )]);
        assert_eq!(r.errors(), 0, "{}", show(&r.problems));
        let (r, d) = load_with(&[(
            "devices/fleet.csv",
            "\u{feff}# displays\r\n\r\nid,class\r\nbus-1,bus_led\r\n# taxis\r\n\r\ntaxi-1,taxi\r\n",
        )]);
        let p = r
            .problems
            .iter()
            .find(|p| p.is_error() && p.message.contains("unknown class \"taxi\""))
            .unwrap();
        assert_eq!(p.file, rel(&d, "devices/fleet.csv"), "{p}");
        assert_eq!(p.line, Some(7), "{p}");
        assert_eq!(p.field.as_deref(), Some("class"), "{p}");
        assert!(r.catalog.is_none());
    }

    #[test]
    fn problem_paths_are_as_given() {
        // Paths given relative are reported as given.
        let p = Path::new("devices").join("fleet.csv");
        assert_eq!(super::display(&p), "devices/fleet.csv");
    }

    /// `s` with every name made relative to `root`, as the in-memory fixtures name files.
    fn relative(s: Sources, root: &Path) -> Sources {
        let prefix = format!("{}/", root.display());
        let name = |n: String| n.strip_prefix(&prefix).map_or(n.clone(), str::to_owned);
        let file = |f: SourceFile| SourceFile {
            name: name(f.name),
            content: f.content,
        };
        let files = |l: Listing| l.map(|v| v.into_iter().map(file).collect());
        Sources {
            devices: Folder {
                name: name(s.devices.name),
                found: s.devices.found.map(|d| DeviceFiles {
                    classes: file(d.classes),
                    lists: files(d.lists),
                }),
            },
            schedules: Folder {
                name: name(s.schedules.name),
                found: s.schedules.found.map(|d| ScheduleFiles {
                    feeds: file(d.feeds),
                    adsets: Folder {
                        name: name(d.adsets.name),
                        found: d.adsets.found.map(files),
                    },
                }),
            },
        }
    }

    #[test]
    fn disk_is_read_as_the_fixtures_describe_it() {
        let mut files = valid_files();
        files.extend([
            ("devices/notes.txt", "not a display list"),
            ("devices/MORE.CSV", "id,class\nx-1,bus_led\n"),
            ("devices/old/fleet.csv", "id,class\n"),
            ("schedules/adsets/readme.md", "# ad sets"),
            ("schedules/adsets/.json", "{}"),
        ]);
        let d = tmp_dirs(&files);
        let read = relative(read_sources(&d.devices, &d.schedules), &d.root);
        assert_eq!(read, sources(&files));
        let DeviceFiles { lists, .. } = read.devices.found.unwrap();
        let names: Vec<String> = lists.unwrap().into_iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            ["devices/MORE.CSV", "devices/brt.csv", "devices/fleet.csv"]
        );
    }

    const UPPER_TOML: &str = "id = \"upper\"\nvalid_from = \"2026-12-01\"\nvalid_until = \"2026-12-31\"\n[[slogan]]\nid = \"a\"\ntext = \"讲文明\"\n";
    const BOM_JSON: &str = "\u{feff}{\"id\": \"bom\", \"valid_from\": \"2026-12-01\", \"valid_until\": \"2026-12-31\", \"slogan\": [{\"id\": \"a\", \"text\": \"讲文明\"}]}";

    #[test]
    fn check_and_registration_see_the_same_adset_files() {
        let d = tmp_dirs(&[
            ("schedules/adsets/UPPER.TOML", UPPER_TOML),
            ("schedules/adsets/bom.json", BOM_JSON),
        ]);
        let mut files = valid_files();
        files.retain(|(n, _)| !n.starts_with("schedules/adsets/"));
        for (name, text) in files {
            let p = d.root.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
        }

        let r = load_dirs(&d.devices, &d.schedules);
        assert_eq!(r.errors(), 0, "{}", show(&r.problems));
        let checked: Vec<String> = r
            .catalog
            .unwrap()
            .adsets
            .iter()
            .map(|a| a.id.to_string())
            .collect();
        assert_eq!(checked, ["upper", "bom"]);

        let registered = crate::daemon::effective_adsets::read_files(&d.schedules);
        let seen: Vec<(String, bool)> = registered
            .iter()
            .map(|(name, json, _)| (name.clone(), *json))
            .collect();
        assert_eq!(
            seen,
            [
                (rel(&d, "schedules/adsets/UPPER.TOML"), false),
                (rel(&d, "schedules/adsets/bom.json"), true),
            ]
        );
        assert_eq!(registered[0].2, UPPER_TOML);
        assert_eq!(registered[1].2, BOM_JSON.trim_start_matches('\u{feff}'));
    }
}
