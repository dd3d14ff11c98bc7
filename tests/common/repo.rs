//! Files of the repository itself: the deploy files and the published documents that the
//! tests hold the code to.

use std::path::{Path, PathBuf};

/// `rel` under the repository's root.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The text of `rel` under the repository's root.
pub fn repo_file(rel: &str) -> String {
    let p = repo_path(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}
