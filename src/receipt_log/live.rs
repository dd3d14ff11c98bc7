//! `civicast audit verify` against the live database: every leaf recomputed from the stored
//! receipts, every stored receipt accounted for by a leaf, the tree's root recomputed from
//! the leaf hashes and compared with the state row and the newest signed checkpoint.
//! Leaves are read a step at a time with their own receipts; only when that finds
//! something is every stored receipt read at once, to name each finding.

use signed_note::StandardVerifier;

use std::collections::HashMap;

use crate::core::tlog::{
    check_leaves, decode_members, root_of, Finding, Hash, LiveReport, StoredReceipt,
};
use crate::store::tlog::LogHead;
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

/// Leaves checked per step of the streaming pass: about 2,000 receipts a leaf at a million
/// displays' load, so a step holds some 100,000 receipts whatever the log's size.
const LEAVES_PER_STEP: u64 = 50;

/// Checks the whole log against the stored receipts. With `key`, the newest checkpoint's
/// signature is checked too.
///
/// A streaming pass reads the leaves a step at a time with only their own receipts, and
/// counts the stored receipts: when every member checks out and the counts match, nothing
/// was inserted and the log is clean, in memory bounded by one step. Otherwise the whole
/// check runs (every stored receipt in memory), which names each finding.
pub async fn verify_live(db: &Db, key: Option<&StandardVerifier>) -> anyhow::Result<LiveOutcome> {
    let head = db.log_head().await?;
    let (plays, devices) = db.log_names().await?;
    let play_issued = |k: i64| plays.get(&k).cloned();
    let device_name = |k: i64| devices.get(&k).cloned();
    let names: Names<'_> = (&play_issued, &device_name);
    let pass = stream(db, &head, names).await?;
    let (stored_after, stored_before) = db.log_receipt_counts(head.before_play).await?;
    let clean = pass.report.findings.is_empty()
        && pass.present_after == stored_after
        && pass.present_before <= stored_before;
    let rep = if clean {
        LiveReport {
            before_log: stored_before - pass.present_before,
            ..pass.report
        }
    } else {
        tracing::info!(
            stored_after,
            in_leaves = pass.present_after,
            findings = pass.report.findings.len(),
            "the streaming check found something; checking every stored receipt to name it"
        );
        let leaves = db.log_leaves().await?;
        let mut stored = db.log_stored_receipts().await?;
        check_leaves(
            &leaves,
            &mut stored,
            names.0,
            names.1,
            (head.pruned_before_ms, head.before_play),
        )
    };
    let mut problems = Vec::new();
    if pass.leaves != head.size {
        problems.push(format!(
            "the log's state says {} leaves, {} are stored",
            head.size, pass.leaves
        ));
    }
    let hashes = pass.hashes;
    if hashes.len() as u64 != pass.leaves {
        problems.push(format!(
            "{} leaves have no stored hash",
            pass.leaves - hashes.len() as u64
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

/// How a play key and a display key are named (issue time too, for a play).
type Names<'a> = (
    &'a (dyn Fn(i64) -> Option<(String, i64)> + Sync),
    &'a (dyn Fn(i64) -> Option<String> + Sync),
);

/// What the streaming pass found.
struct Pass {
    report: LiveReport,
    leaves: u64,
    /// The leaf hashes stored, in leaf order.
    hashes: Vec<Hash>,
    /// Leaf members found stored, of plays after the log's `before_play` and up to it.
    present_after: u64,
    present_before: u64,
}

/// Every leaf checked against its own receipts, [`LEAVES_PER_STEP`] leaves at a time.
async fn stream(db: &Db, head: &LogHead, names: Names<'_>) -> anyhow::Result<Pass> {
    let mut pass = Pass {
        report: LiveReport::default(),
        leaves: 0,
        hashes: Vec::with_capacity(usize::try_from(head.size).unwrap_or(0)),
        present_after: 0,
        present_before: 0,
    };
    let mut lo = 0u64;
    loop {
        let leaves = db.log_leaves_in(lo, lo + LEAVES_PER_STEP).await?;
        let Some(last) = leaves.last() else { break };
        lo = last.index + 1;
        let mut keys: Vec<(i64, i64)> = Vec::new();
        for l in &leaves {
            if let Some(ms) = decode_members(&l.members) {
                keys.extend(ms.iter().map(|m| (m.device, m.play)));
            }
        }
        let mut stored: HashMap<(i64, i64), StoredReceipt> = db
            .log_receipts(&keys)
            .await?
            .into_iter()
            .map(|(k, receipt)| {
                let s = StoredReceipt {
                    receipt,
                    issued_ms: None,
                };
                (k, s)
            })
            .collect();
        let before = stored.keys().filter(|k| k.1 <= head.before_play).count() as u64;
        pass.present_before += before;
        pass.present_after += stored.len() as u64 - before;
        // Only the members' own receipts were read, so none is left over as inserted.
        let step = check_leaves(
            &leaves,
            &mut stored,
            names.0,
            names.1,
            (head.pruned_before_ms, head.before_play),
        );
        pass.leaves += leaves.len() as u64;
        pass.hashes.extend(leaves.iter().filter_map(|l| l.hash));
        let r = &mut pass.report;
        r.leaves += step.leaves;
        r.valid += step.valid;
        r.pruned += step.pruned;
        r.findings.extend(step.findings);
    }
    Ok(pass)
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
