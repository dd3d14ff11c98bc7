//! `civicast audit verify` against the live database: every leaf recomputed from the stored
//! receipts, every stored receipt accounted for by a leaf, the tree's root recomputed from
//! the leaf hashes and compared with the state row and the newest signed checkpoint.

use signed_note::StandardVerifier;

use crate::core::tlog::{check_leaves, root_of, Finding, Hash};
use crate::store::Db;

/// What the live check found.
#[derive(Debug)]
pub struct LiveOutcome {
    pub leaves: u64,
    pub valid: u64,
    pub pruned: u64,
    /// Receipts stored before the log began (migration 0013): in no leaf.
    pub before_log: u64,
    pub findings: Vec<Finding>,
    /// Problems of the tree itself (hashes, root, checkpoint), one a line.
    pub tree_problems: Vec<String>,
    pub checkpoint_size: Option<u64>,
}

impl LiveOutcome {
    pub fn ok(&self) -> bool {
        self.findings.is_empty() && self.tree_problems.is_empty()
    }
}

/// Checks the whole log against the stored receipts. With `key`, the newest checkpoint's
/// signature is checked too.
pub async fn verify_live(db: &Db, key: Option<&StandardVerifier>) -> anyhow::Result<LiveOutcome> {
    let head = db.log_head().await?;
    let leaves = db.log_leaves().await?;
    let mut stored = db.log_stored_receipts().await?;
    let (plays, devices) = db.log_names().await?;
    let play_issued = |k: i64| plays.get(&k).cloned();
    let device_name = |k: i64| devices.get(&k).cloned();
    let rep = check_leaves(
        &leaves,
        &mut stored,
        &play_issued,
        &device_name,
        (head.pruned_before_ms, head.before_play),
    );
    let mut problems = Vec::new();
    if leaves.len() as u64 != head.size {
        problems.push(format!(
            "the log's state says {} leaves, {} are stored",
            head.size,
            leaves.len()
        ));
    }
    let hashes: Vec<Hash> = leaves.iter().filter_map(|l| l.hash).collect();
    if hashes.len() != leaves.len() {
        problems.push(format!(
            "{} leaves have no stored hash",
            leaves.len() - hashes.len()
        ));
    }
    if root_of(&hashes) != head.root {
        problems.push("the stored leaf hashes do not give the root in the log's state".into());
    }
    let cp = db.latest_checkpoint().await?;
    if let Some(cp) = &cp {
        check_checkpoint(cp, &hashes, key, &mut problems);
    }
    Ok(LiveOutcome {
        leaves: rep.leaves,
        valid: rep.valid,
        pruned: rep.pruned,
        before_log: rep.before_log,
        findings: rep.findings,
        tree_problems: problems,
        checkpoint_size: cp.map(|c| c.size),
    })
}

fn check_checkpoint(
    cp: &crate::store::tlog::StoredCheckpoint,
    hashes: &[Hash],
    key: Option<&StandardVerifier>,
    problems: &mut Vec<String>,
) {
    let n = cp.size as usize;
    if n > hashes.len() {
        problems.push(format!(
            "the newest checkpoint covers {n} leaves, the log has {}",
            hashes.len()
        ));
        return;
    }
    let root = root_of(&hashes[..n]);
    let signed_root = match key {
        Some(k) => match super::open_checkpoint(cp.note.as_bytes(), k) {
            Ok(c) if c.size() == cp.size => Some(*c.hash()),
            Ok(c) => {
                problems.push(format!(
                    "the checkpoint stored at size {n} signs size {}",
                    c.size()
                ));
                None
            }
            Err(e) => {
                problems.push(format!("checkpoint at size {n}: {e:#}"));
                None
            }
        },
        None => Some(cp.root),
    };
    if signed_root.is_some_and(|r| r != root) {
        problems.push(format!(
            "the stored leaves give another root at size {n} than the signed checkpoint"
        ));
    }
}
