//! Audit bundles: a period's receipts (optionally one class, company or display), every
//! leaf they are in (whole, so that its hash can be recomputed), each leaf's inclusion
//! proof, and the signed checkpoint with its cosignatures. `verify_bundle` needs nothing
//! but the bundle and the public keys.
//!
//! The bundle is written in one canonical form (pretty JSON, keys in a fixed order) and the
//! check refuses any other: every byte of it either is covered by a hash or a signature, or
//! is a count or a query bound that the check recomputes. The display -> class and company
//! table (present only with a class or company filter) is the exporter's word: the log
//! records display ids, not classes.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context};
use base64::prelude::{Engine, BASE64_STANDARD};
use serde::{Deserialize, Serialize};
use signed_note::{Note, VerifierList};

use super::cosign::CosignatureVerifier;
use crate::core::model::Device;
use crate::core::tlog::{decode_leaf, decode_members, encode_leaf, Hash, LogReceipt};
use crate::store::Db;

pub const FORMAT: &str = "civicast-receipt-bundle/1";

/// Which receipts a bundle is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub from_ms: i64,
    pub to_ms: i64,
    pub class: Option<String>,
    pub company: Option<String>,
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub class: String,
    pub company: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleLeaf {
    pub index: u64,
    /// The leaf's data, base64.
    pub data: String,
    /// Its inclusion proof in the checkpoint's tree, base64 hashes.
    pub proof: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleReceipt {
    pub leaf: u64,
    #[serde(flatten)]
    pub receipt: LogReceipt,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub receipts: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_device: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    pub format: String,
    pub filter: Filter,
    /// The signed checkpoint, its cosignature lines included.
    pub checkpoint: String,
    pub tree_size: u64,
    pub leaves: Vec<BundleLeaf>,
    pub receipts: Vec<BundleReceipt>,
    pub counts: Counts,
    /// Only with a class or company filter: the exporter's inventory of those displays.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub devices: BTreeMap<String, DeviceInfo>,
    /// A signed note by the log's key over the SHA-256 of the bundle written with this field
    /// empty: the period, the filter and the counts are the log's word too, so that no byte
    /// of the bundle can change unnoticed.
    pub signature: String,
}

/// The text the bundle's signature signs: its digest with `signature` empty.
fn signed_text(b: &Bundle) -> anyhow::Result<Vec<u8>> {
    use sha2::{Digest, Sha256};
    let mut unsigned = b.clone();
    unsigned.signature.clear();
    let digest = Sha256::digest(to_bytes(&unsigned)?);
    Ok(format!("{FORMAT}\nsha256 {}\n", BASE64_STANDARD.encode(digest)).into_bytes())
}

/// Signs `b` with the log's key.
pub fn sign(b: &mut Bundle, signer: &signed_note::StandardSigner) -> anyhow::Result<()> {
    let mut note =
        Note::new(&signed_text(b)?, &[]).map_err(|e| anyhow::anyhow!("bundle note: {e}"))?;
    note.add_sigs(&[signer])
        .map_err(|e| anyhow::anyhow!("signing the bundle: {e}"))?;
    b.signature = String::from_utf8(note.to_bytes()).context("the bundle's note is not UTF-8")?;
    Ok(())
}

fn check_signature(b: &Bundle, key: &signed_note::StandardVerifier, problems: &mut Vec<String>) {
    let ok = Note::from_bytes(b.signature.as_bytes())
        .ok()
        .is_some_and(|n| {
            n.verify(&VerifierList::new(vec![Box::new(key.clone())]))
                .is_ok()
                && signed_text(b).is_ok_and(|t| t == n.text())
        });
    if !ok {
        problems.push("the bundle's signature does not verify with the log's key: the bundle was changed after export".into());
    }
}

pub fn to_bytes(b: &Bundle) -> anyhow::Result<Vec<u8>> {
    let mut v = serde_json::to_vec_pretty(b).context("writing the bundle")?;
    v.push(b'\n');
    Ok(v)
}

const STATUS: [&str; 4] = ["played", "skipped", "expired", "failed"];

fn status_name(s: u8) -> String {
    STATUS
        .get(usize::from(s))
        .map_or_else(|| format!("status-{s}"), |s| (*s).to_owned())
}

fn selected(r: &LogReceipt, f: &Filter, devices: &BTreeMap<String, DeviceInfo>) -> bool {
    if r.started_ms < f.from_ms || r.started_ms >= f.to_ms {
        return false;
    }
    if f.device.as_ref().is_some_and(|d| *d != r.device) {
        return false;
    }
    if f.class.is_none() && f.company.is_none() {
        return true;
    }
    let Some(info) = devices.get(&r.device) else {
        return false;
    };
    f.class.as_ref().is_none_or(|c| *c == info.class)
        && f.company
            .as_ref()
            .is_none_or(|c| info.company.as_ref() == Some(c))
}

fn count(rs: &[&LogReceipt]) -> Counts {
    let mut c = Counts::default();
    for r in rs {
        c.receipts += 1;
        *c.by_status.entry(status_name(r.status)).or_default() += 1;
        *c.by_device.entry(r.device.clone()).or_default() += 1;
    }
    c
}

/// Builds the bundle of `filter` from the live database, against its newest checkpoint.
pub async fn export(db: &Db, filter: &Filter, inventory: &[Device]) -> anyhow::Result<Bundle> {
    let Some(cp) = db.latest_checkpoint().await? else {
        bail!("the log has no signed checkpoint yet: run the daemon with log_key set");
    };
    let devices: BTreeMap<String, DeviceInfo> =
        if filter.class.is_some() || filter.company.is_some() {
            inventory
                .iter()
                .map(|d| {
                    let info = DeviceInfo {
                        class: d.class.to_string(),
                        company: d.attrs.get("operator").map(str::to_owned),
                    };
                    (d.id.to_string(), info)
                })
                .collect()
        } else {
            BTreeMap::new()
        };
    let stored = db.log_stored_receipts().await?;
    let mut leaves = Vec::new();
    let mut receipts = Vec::new();
    for leaf in db.log_leaves().await? {
        if leaf.index >= cp.size {
            break;
        }
        let Some(members) = decode_members(&leaf.members) else {
            continue;
        };
        let mut rs: Vec<LogReceipt> = members
            .iter()
            .filter_map(|m| stored.get(&(m.device, m.play)).map(|s| s.receipt.clone()))
            .collect();
        if !rs.iter().any(|r| selected(r, filter, &devices)) {
            continue;
        }
        rs.sort();
        let proof = super::inclusion_proof(db, cp.size, leaf.index).await?;
        leaves.push(BundleLeaf {
            index: leaf.index,
            data: BASE64_STANDARD.encode(encode_leaf(&rs)),
            proof: proof.iter().map(|h| BASE64_STANDARD.encode(h.0)).collect(),
        });
        receipts.extend(
            rs.into_iter()
                .filter(|r| selected(r, filter, &devices))
                .map(|r| BundleReceipt {
                    leaf: leaf.index,
                    receipt: r,
                }),
        );
    }
    let all: Vec<&LogReceipt> = receipts.iter().map(|r| &r.receipt).collect();
    let counts = count(&all);
    let devices = devices
        .into_iter()
        .filter(|(d, _)| counts.by_device.contains_key(d))
        .collect();
    let mut checkpoint = cp.note.clone();
    for line in db.cosignatures(cp.size).await? {
        checkpoint.push_str(&line);
    }
    Ok(Bundle {
        format: FORMAT.into(),
        filter: filter.clone(),
        checkpoint,
        tree_size: cp.size,
        leaves,
        receipts,
        counts,
        devices,
        signature: String::new(),
    })
}

/// What the offline check found.
#[derive(Debug, Default)]
pub struct BundleOutcome {
    pub leaves: usize,
    pub receipts: usize,
    pub tree_size: u64,
    /// One line per failure, naming the receipt or the part of the bundle.
    pub problems: Vec<String>,
}

/// Checks a bundle with the log's key (and witnesses' keys): its form, the checkpoint's
/// signatures, every leaf's inclusion, every receipt against its leaf, every count.
pub fn verify_bundle(
    text: &[u8],
    key: &str,
    witnesses: &[String],
) -> anyhow::Result<BundleOutcome> {
    let log_key = super::load_verifier(key)?;
    let wit: Vec<CosignatureVerifier> = witnesses
        .iter()
        .map(|w| CosignatureVerifier::new(w))
        .collect::<anyhow::Result<_>>()?;
    let mut out = BundleOutcome::default();
    let b: Bundle = match serde_json::from_slice(text) {
        Ok(b) => b,
        Err(e) => {
            out.problems
                .push(format!("the bundle is not readable: {e}"));
            return Ok(out);
        }
    };
    if to_bytes(&b)? != text {
        out.problems
            .push("the bundle is not in the form `audit export` writes: it was edited".into());
    }
    if b.format != FORMAT {
        out.problems
            .push(format!("format {:?} is not {FORMAT}", b.format));
    }
    check_signature(&b, &log_key, &mut out.problems);
    out.tree_size = b.tree_size;
    out.leaves = b.leaves.len();
    out.receipts = b.receipts.len();
    let root = match super::open_checkpoint(b.checkpoint.as_bytes(), &log_key) {
        Ok(c) if c.size() == b.tree_size => Some(*c.hash()),
        Ok(c) => {
            out.problems.push(format!(
                "the checkpoint is at size {}, the bundle says {}",
                c.size(),
                b.tree_size
            ));
            None
        }
        Err(e) => {
            out.problems.push(format!("checkpoint: {e:#}"));
            None
        }
    };
    for w in &wit {
        check_cosignature(&b.checkpoint, w, &mut out.problems);
    }
    let leaves = check_leaves(&b, root, &mut out.problems);
    check_receipts(&b, &leaves, &mut out.problems);
    Ok(out)
}

fn check_cosignature(checkpoint: &str, w: &CosignatureVerifier, problems: &mut Vec<String>) {
    let name = signed_note::Verifier::name(w).to_owned();
    match Note::from_bytes(checkpoint.as_bytes()) {
        Ok(n) => {
            if n.verify(&VerifierList::new(vec![Box::new(w.clone())]))
                .is_err()
            {
                problems.push(format!(
                    "the checkpoint has no valid cosignature of witness {name}"
                ));
            }
        }
        Err(e) => problems.push(format!("checkpoint: not a signed note: {e}")),
    }
}

/// Each leaf's receipts, when its data is readable and included in the checkpoint's tree.
fn check_leaves(
    b: &Bundle,
    root: Option<Hash>,
    problems: &mut Vec<String>,
) -> HashMap<u64, Vec<LogReceipt>> {
    let mut ok = HashMap::new();
    for l in &b.leaves {
        let data = match BASE64_STANDARD.decode(&l.data) {
            Ok(d) => d,
            Err(_) => {
                problems.push(format!("leaf {}: its data is not base64", l.index));
                continue;
            }
        };
        let receipts = decode_leaf(&data);
        let proof: Option<Vec<Hash>> = l
            .proof
            .iter()
            .map(|p| {
                BASE64_STANDARD
                    .decode(p)
                    .ok()
                    .and_then(|v| v.try_into().ok())
                    .map(Hash)
            })
            .collect();
        let included = match (root, proof) {
            (Some(root), Some(proof)) => tlog_tiles::check_record(
                &proof,
                b.tree_size,
                root,
                l.index,
                tlog_tiles::record_hash(&data),
            )
            .is_ok(),
            _ => false,
        };
        match (included, receipts) {
            (true, Ok(rs)) => {
                ok.insert(l.index, rs);
            }
            (_, Ok(rs)) => {
                problems.push(format!("leaf {}: not included in the signed tree", l.index));
                for r in rs {
                    problems.push(format!(
                        "receipt of display {} for play {}: its leaf {} is not in the signed tree",
                        r.device, r.play_id, l.index
                    ));
                }
            }
            (_, Err(e)) => problems.push(format!("leaf {}: {e}", l.index)),
        }
    }
    ok
}

fn check_receipts(b: &Bundle, leaves: &HashMap<u64, Vec<LogReceipt>>, problems: &mut Vec<String>) {
    let mut listed: HashMap<(u64, &str, &str), &LogReceipt> = HashMap::new();
    for r in &b.receipts {
        let name = format!(
            "receipt of display {} for play {}",
            r.receipt.device, r.receipt.play_id
        );
        match leaves.get(&r.leaf) {
            Some(rs) if rs.contains(&r.receipt) => {}
            Some(_) => problems.push(format!("{name}: not in leaf {} as given", r.leaf)),
            None => problems.push(format!(
                "{name}: leaf {} is not a verified leaf of the bundle",
                r.leaf
            )),
        }
        if !selected(&r.receipt, &b.filter, &b.devices) {
            problems.push(format!("{name}: outside the bundle's period or filter"));
        }
        listed.insert((r.leaf, &r.receipt.device, &r.receipt.play_id), &r.receipt);
    }
    for (idx, rs) in leaves {
        for r in rs {
            if selected(r, &b.filter, &b.devices)
                && !listed.contains_key(&(*idx, &r.device, &r.play_id))
            {
                problems.push(format!(
                    "receipt of display {} for play {}: in leaf {idx} and the period, but left out of the bundle",
                    r.device, r.play_id
                ));
            }
        }
    }
    let all: Vec<&LogReceipt> = b.receipts.iter().map(|r| &r.receipt).collect();
    let c = count(&all);
    if c.receipts != b.counts.receipts {
        problems.push(format!(
            "count of receipts: the bundle says {}, its receipts give {}",
            b.counts.receipts, c.receipts
        ));
    }
    for (what, given, got) in [
        ("status", &b.counts.by_status, &c.by_status),
        ("display", &b.counts.by_device, &c.by_device),
    ] {
        if given != got {
            for k in given.keys().chain(got.keys()) {
                let (g, r) = (
                    given.get(k).copied().unwrap_or(0),
                    got.get(k).copied().unwrap_or(0),
                );
                if g != r {
                    problems.push(format!(
                        "count for {what} {k}: the bundle says {g}, its receipts give {r}"
                    ));
                }
            }
        }
    }
}
