//! The receipt log's shell: signing keys on disk, signed checkpoints (C2SP tlog-checkpoint
//! as a C2SP signed note, Ed25519), cosignatures (C2SP tlog-cosignature, `cosignature/v1`),
//! and proofs read from the stored hashes. The tree itself grows inside each batch's commit
//! (`store::tlog`); this module only reads it.
//!
//! Owns: key files, the checkpoint signer (one signer, a compare-and-swap on the last signed
//! size, the root recomputed from storage and checked consistent with the last checkpoint
//! before it is signed). Must not touch: receipts, the ingest path, HTTP routing.

pub mod bundle;
pub mod cosign;
pub mod live;
pub mod signer;
pub mod witness;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Context};
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash, HashReader};

use crate::store::tlog::StoredCheckpoint;
use crate::store::Db;

/// Writes a new signing key for the log named `origin` to `path` (owner-only), and its
/// verifier key beside it (`path.pub`). Refuses to overwrite a key.
pub fn keygen(path: &Path, origin: &str) -> anyhow::Result<String> {
    if !signed_note::is_key_name_valid(origin) {
        bail!("{origin:?} is not a valid key name (no spaces or '+')");
    }
    if path.exists() {
        bail!(
            "{} exists: a signing key is never overwritten",
            path.display()
        );
    }
    let (skey, vkey) = signed_note::generate_key(&mut rand::rngs::OsRng, origin);
    write_secret(path, &skey)?;
    let pub_path = pub_path(path);
    std::fs::write(&pub_path, format!("{vkey}\n"))
        .with_context(|| format!("writing {}", pub_path.display()))?;
    Ok(vkey)
}

/// Where the verifier key of the key at `path` is written.
pub fn pub_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    p.into()
}

pub(crate) fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{text}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The log's signer, read from its key file; the key's name is the log's origin.
pub fn load_signer(path: &Path) -> anyhow::Result<StandardSigner> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the log key {}", path.display()))?;
    StandardSigner::new(text.trim()).map_err(|e| {
        anyhow::anyhow!(
            "the log key {} is not a signed-note key: {e}",
            path.display()
        )
    })
}

/// A verifier key from its text, or from a file holding it.
pub fn load_verifier(key_or_path: &str) -> anyhow::Result<StandardVerifier> {
    let text = if Path::new(key_or_path).exists() {
        std::fs::read_to_string(key_or_path).with_context(|| format!("reading {key_or_path}"))?
    } else {
        key_or_path.to_owned()
    };
    StandardVerifier::new(text.trim())
        .map_err(|e| anyhow::anyhow!("{key_or_path} is not a signed-note verifier key: {e}"))
}

/// Hashes read from the store ahead of a `tlog_tiles` call: its functions read through a
/// synchronous [`HashReader`], and which indexes they read depends on the sizes alone, so
/// a first pass records them, the store answers them, and a second pass uses the answer.
#[derive(Default)]
pub struct Prefetched {
    known: HashMap<u64, Hash>,
    asked: Mutex<Vec<u64>>,
}

impl HashReader for Prefetched {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let mut out = Vec::with_capacity(indexes.len());
        for i in indexes {
            match self.known.get(i) {
                Some(h) => out.push(*h),
                None => {
                    out.push(Hash([0; 32]));
                    if let Ok(mut a) = self.asked.lock() {
                        a.push(*i);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Runs `f` over the stored hashes it reads: twice, the first time to learn which.
pub async fn with_hashes<T>(
    db: &Db,
    f: impl Fn(&Prefetched) -> Result<T, tlog_tiles::Error>,
) -> anyhow::Result<T> {
    let mut p = Prefetched::default();
    for _ in 0..4 {
        let first = f(&p);
        let asked: Vec<u64> =
            std::mem::take(&mut *p.asked.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
        if asked.is_empty() {
            return first.map_err(|e| anyhow::anyhow!("log proof: {e}"));
        }
        let mut asked = asked;
        asked.sort_unstable();
        asked.dedup();
        let hashes = db.log_hashes(&asked).await?;
        p.known.extend(asked.into_iter().zip(hashes));
    }
    bail!("the log's hashes did not settle after four reads")
}

/// The root of the first `size` leaves, recomputed from the stored hashes.
pub async fn stored_root(db: &Db, size: u64) -> anyhow::Result<Hash> {
    with_hashes(db, |r| tlog_tiles::tree_hash(size, r)).await
}

/// An inclusion proof of leaf `index` in the tree of `size` leaves.
pub async fn inclusion_proof(db: &Db, size: u64, index: u64) -> anyhow::Result<Vec<Hash>> {
    with_hashes(db, |r| tlog_tiles::prove_record(size, index, r)).await
}

/// A consistency proof from the tree of `old` leaves to the tree of `new` leaves.
pub async fn consistency_proof(db: &Db, new: u64, old: u64) -> anyhow::Result<Vec<Hash>> {
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    with_hashes(db, |r| tlog_tiles::prove_tree(new, old, r)).await
}

/// The checkpoint's body (C2SP tlog-checkpoint) for `origin`, `size`, `root`.
pub fn checkpoint_text(origin: &str, size: u64, root: Hash) -> anyhow::Result<Vec<u8>> {
    let c = Checkpoint::new(origin, size, root, "")
        .map_err(|_| anyhow::anyhow!("{origin:?} cannot be a checkpoint origin"))?;
    Ok(c.to_bytes())
}

/// What a signing round did.
#[derive(Debug, PartialEq)]
pub enum Signed {
    /// A new checkpoint at this size.
    New(u64),
    /// The tree has not grown since the last checkpoint.
    Unchanged(u64),
    /// Another signer stored a checkpoint of this size or larger first.
    Raced,
}

/// Signs a checkpoint of the tree as stored, when it grew since the last one: the root is
/// recomputed from the stored hashes (not trusted from the state row), and the new tree
/// is proved consistent with the last checkpoint before anything is signed.
pub async fn sign_checkpoint(
    db: &Db,
    signer: &StandardSigner,
    now_ms: i64,
) -> anyhow::Result<Signed> {
    let head = db.log_head().await?;
    let last = db.latest_checkpoint().await?;
    if let Some(l) = &last {
        if l.size >= head.size {
            return Ok(Signed::Unchanged(l.size));
        }
    }
    let root = stored_root(db, head.size).await?;
    if root != head.root {
        bail!(
            "the log's stored hashes give root {root} at size {}, its state says {}: refusing to sign",
            head.size,
            head.root
        );
    }
    if let Some(l) = &last {
        let proof = consistency_proof(db, head.size, l.size).await?;
        if l.size > 0 {
            tlog_tiles::check_tree(&proof, head.size, root, l.size, l.root).map_err(|e| {
                anyhow::anyhow!(
                    "the tree at size {} is not consistent with the checkpoint at size {} ({e}): refusing to sign",
                    head.size,
                    l.size
                )
            })?;
        }
    }
    let text = checkpoint_text(signed_note::Signer::name(signer), head.size, root)?;
    let mut note = Note::new(&text, &[]).map_err(|e| anyhow::anyhow!("checkpoint note: {e}"))?;
    note.add_sigs(&[signer])
        .map_err(|e| anyhow::anyhow!("signing the checkpoint: {e}"))?;
    let cp = StoredCheckpoint {
        size: head.size,
        root,
        note: String::from_utf8(note.to_bytes()).context("the signed note is not UTF-8")?,
        signed_ms: now_ms,
    };
    Ok(if db.store_checkpoint(&cp).await? {
        Signed::New(head.size)
    } else {
        Signed::Raced
    })
}

/// A signed note's checkpoint, its signature checked against `key`.
pub fn open_checkpoint(note: &[u8], key: &StandardVerifier) -> anyhow::Result<Checkpoint> {
    let n = Note::from_bytes(note).map_err(|e| anyhow::anyhow!("not a signed note: {e}"))?;
    let list = VerifierList::new(vec![Box::new(key.clone())]);
    n.verify(&list)
        .map_err(|e| anyhow::anyhow!("the checkpoint's signature does not verify: {e}"))?;
    Checkpoint::from_bytes(n.text()).map_err(|e| anyhow::anyhow!("not a checkpoint: {e}"))
}
