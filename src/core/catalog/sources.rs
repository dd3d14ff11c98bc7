//! The operators' files as plain data, the input of [`super::parse`]: which folders and files
//! were found, under the names problems show, and their decoded text or why there is none.
//!
//! The shell (`crate::files`) fills these in from the disk; tests build them in memory. This
//! module only describes what was read: it reads nothing and words no problem.

/// Everything the catalog is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// The displays' folder (`devices/`).
    pub devices: Folder<DeviceFiles>,
    /// The schedules' folder (`schedules/`).
    pub schedules: Folder<ScheduleFiles>,
}

/// A folder, named as problems show it, and what was found in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder<T> {
    pub name: String,
    pub found: Result<T, Absent>,
}

/// Why a folder has no contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absent {
    NotFound,
    /// Something else (e.g. a file) has the folder's name.
    NotADirectory,
}

/// What the displays' folder holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFiles {
    /// `classes.toml`.
    pub classes: SourceFile,
    /// The display lists (`*.csv`), sorted by file name.
    pub lists: Listing,
}

/// What the schedules' folder holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleFiles {
    /// `feeds.toml`.
    pub feeds: SourceFile,
    /// `adsets/` with its `*.toml` and `*.json` files, sorted by file name.
    pub adsets: Folder<Listing>,
}

/// The files of a folder, or why the folder could not be listed (the reason as the system
/// gave it).
pub type Listing = Result<Vec<SourceFile>, String>;

/// One file, named as problems show it (e.g. `devices/fleet.csv`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub content: Content,
}

/// A file's text, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// UTF-8 text without a byte order mark.
    Text(String),
    NotFound,
    /// Could not be read; the reason as the system gave it.
    Unreadable(String),
    /// Not UTF-8; `line` (1-based) holds the first byte that is not.
    NotUtf8 {
        line: usize,
    },
}

impl SourceFile {
    /// A file that was read, with its text.
    pub fn text(name: impl Into<String>, text: impl Into<String>) -> Self {
        SourceFile {
            name: name.into(),
            content: Content::Text(text.into()),
        }
    }

    /// A file that is not there.
    pub fn not_found(name: impl Into<String>) -> Self {
        SourceFile {
            name: name.into(),
            content: Content::NotFound,
        }
    }
}

/// Whether an ad-set file is JSON (else TOML), from the extension of its name.
pub fn adset_is_json(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| ext.eq_ignore_ascii_case("json"))
}
