//! The receipt log's arithmetic: how receipts become leaves, how leaves extend the tree,
//! and how stored leaves are checked against stored receipts. RFC 6962 hashing
//! (`tlog_tiles::record_hash`, `node_hash`); hashes are stored in the dense order of
//! `tlog_tiles::stored_hash_index` so that its proofs read them directly.
//!
//! Owns: the leaf encoding (its version byte and field order are a promise to auditors), the
//! member index of a leaf, the tree's right edge. Must not touch: storage, keys, HTTP.
//!
//! **One leaf per committed batch**, not per receipt. A leaf per receipt costs at least its
//! 32-byte hash (64 with the interior nodes) and a receipt-to-leaf index: some 70 bytes a
//! receipt against a budget of 4. A leaf per batch costs its hashes once per batch (about
//! a thousand receipts at a million displays' load) plus a member index that locates its
//! receipts again: about two bytes a receipt of varint deltas and one byte of fingerprint
//! per receipt, which names the one receipt of a batch that was edited. A batch larger
//! than [`MAX_LEAF_BYTES`] is split into several leaves (C2SP entry bundles prefix each
//! entry with a 16-bit length).

use std::collections::HashMap;

use sha2::{Digest, Sha256};
pub use tlog_tiles::Hash;
use tlog_tiles::{node_hash, record_hash, stored_hash_index};

/// The first byte of every leaf: the encoding's version.
pub const LEAF_VERSION: u8 = 1;
/// A leaf's data stays below this, so that it fits a C2SP entry bundle's u16 length.
pub const MAX_LEAF_BYTES: usize = 65_535;

/// One receipt as the log records it: who, which play, when, how long, how.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct LogReceipt {
    pub device: String,
    pub play_id: String,
    pub started_ms: i64,
    pub duration_ms: i64,
    /// 0 played, 1 skipped, 2 expired, 3 failed.
    pub status: u8,
}

impl LogReceipt {
    /// The same receipt with its names borrowed.
    pub fn as_ref(&self) -> ReceiptRef<'_> {
        ReceiptRef {
            device: &self.device,
            play_id: &self.play_id,
            started_ms: self.started_ms,
            duration_ms: self.duration_ms,
            status: self.status,
        }
    }

    /// The canonical encoding of one receipt inside a leaf ([`ReceiptRef::encode_into`]).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.as_ref().encode_into(out);
    }

    pub fn encoded_len(&self) -> usize {
        self.as_ref().encoded_len()
    }

    /// One byte of SHA-256 over the receipt's encoding: the member index keeps it, so an
    /// edited receipt is named (all but one time in 256; the leaf hash catches it always).
    pub fn fingerprint(&self) -> u8 {
        let mut buf = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut buf);
        Sha256::digest(&buf)[0]
    }
}

/// A receipt as the log records it, its names borrowed: a commit encodes its batch from
/// the names it already holds instead of copying two strings a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiptRef<'a> {
    pub device: &'a str,
    pub play_id: &'a str,
    pub started_ms: i64,
    pub duration_ms: i64,
    /// 0 played, 1 skipped, 2 expired, 3 failed.
    pub status: u8,
}

impl ReceiptRef<'_> {
    /// The canonical encoding of one receipt inside a leaf: u16 length + UTF-8 device id,
    /// u16 length + UTF-8 play id, i64 start (ms since the epoch), i64 duration (ms), u8
    /// status; integers big-endian. Ids are at most 64 bytes (contract), so u16 fits.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        put_str(out, self.device);
        put_str(out, self.play_id);
        out.extend_from_slice(&self.started_ms.to_be_bytes());
        out.extend_from_slice(&self.duration_ms.to_be_bytes());
        out.push(self.status);
    }

    pub fn encoded_len(&self) -> usize {
        2 + self.device.len() + 2 + self.play_id.len() + 8 + 8 + 1
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    let n = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(&b[..usize::from(n)]);
}

/// A leaf's data: the version byte, the receipt count (u32), then each receipt in
/// ascending (device, play_id) byte order. `receipts` must already be in that order.
pub fn encode_leaf(receipts: &[LogReceipt]) -> Vec<u8> {
    let len = 5 + receipts.iter().map(LogReceipt::encoded_len).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(LEAF_VERSION);
    out.extend_from_slice(&(receipts.len() as u32).to_be_bytes());
    for r in receipts {
        r.encode_into(&mut out);
    }
    out
}

/// Why leaf data could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    #[error("leaf version {0} is not one this program reads (1)")]
    Version(u8),
    #[error("leaf ends early, at byte {0}")]
    Short(usize),
    #[error("leaf has {0} bytes past its last receipt")]
    Trailing(usize),
    #[error("a string in the leaf at byte {0} is not UTF-8")]
    Utf8(usize),
}

/// Reads leaf data back into its receipts.
pub fn decode_leaf(data: &[u8]) -> Result<Vec<LogReceipt>, DecodeError> {
    let mut r = Reader { data, at: 0 };
    let v = r.bytes(1)?[0];
    if v != LEAF_VERSION {
        return Err(DecodeError::Version(v));
    }
    let n = u32::from_be_bytes(r.array()?);
    let mut out = Vec::with_capacity((n as usize).min(data.len() / 21));
    for _ in 0..n {
        let device = r.string()?;
        let play_id = r.string()?;
        let started_ms = i64::from_be_bytes(r.array()?);
        let duration_ms = i64::from_be_bytes(r.array()?);
        let status = r.bytes(1)?[0];
        out.push(LogReceipt {
            device,
            play_id,
            started_ms,
            duration_ms,
            status,
        });
    }
    if r.at != data.len() {
        return Err(DecodeError::Trailing(data.len() - r.at));
    }
    Ok(out)
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.data.len());
        let end = end.ok_or(DecodeError::Short(self.at))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let n = u16::from_be_bytes(self.array()?);
        let at = self.at;
        let b = self.bytes(usize::from(n))?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Utf8(at))
    }
}

/// A receipt of a batch with the store's keys beside what the log records.
#[derive(Debug, Clone)]
pub struct KeyedReceipt {
    pub device: i64,
    pub play: i64,
    pub receipt: LogReceipt,
}

/// [`KeyedReceipt`] with its names borrowed, as a commit builds it.
#[derive(Debug, Clone, Copy)]
pub struct KeyedRef<'a> {
    pub device: i64,
    pub play: i64,
    pub receipt: ReceiptRef<'a>,
}

/// A leaf about to be appended: its data, and the member index that finds its receipts.
#[derive(Debug, Clone)]
pub struct NewLeaf {
    pub data: Vec<u8>,
    pub members: Vec<u8>,
    pub count: usize,
}

/// Splits a batch's stored receipts into leaves: sorted by (device, play_id), cut before a
/// leaf would pass [`MAX_LEAF_BYTES`].
pub fn batch_leaves(receipts: Vec<KeyedReceipt>) -> Vec<NewLeaf> {
    let mut refs: Vec<KeyedRef<'_>> = receipts
        .iter()
        .map(|r| KeyedRef {
            device: r.device,
            play: r.play,
            receipt: r.receipt.as_ref(),
        })
        .collect();
    batch_leaves_of(&mut refs)
}

/// [`batch_leaves`] over borrowed receipts; sorts `receipts` in place.
pub fn batch_leaves_of(receipts: &mut [KeyedRef<'_>]) -> Vec<NewLeaf> {
    receipts.sort_unstable_by(|a, b| {
        (a.receipt.device, a.receipt.play_id).cmp(&(b.receipt.device, b.receipt.play_id))
    });
    let mut out = Vec::new();
    let mut start = 0;
    let mut size = 5;
    for (i, r) in receipts.iter().enumerate() {
        let n = r.receipt.encoded_len();
        if size + n > MAX_LEAF_BYTES && i > start {
            out.push(leaf_of(&receipts[start..i], size));
            start = i;
            size = 5;
        }
        size += n;
    }
    if start < receipts.len() {
        out.push(leaf_of(&receipts[start..], size));
    }
    out
}

/// One leaf of `len` bytes from `rs`, in their order.
fn leaf_of(rs: &[KeyedRef<'_>], len: usize) -> NewLeaf {
    // One encoding: each receipt's fingerprint is taken over its bytes inside the leaf.
    let mut data = Vec::with_capacity(len);
    data.push(LEAF_VERSION);
    data.extend_from_slice(&(rs.len() as u32).to_be_bytes());
    let mut members = Vec::with_capacity(rs.len());
    for r in rs {
        let at = data.len();
        r.receipt.encode_into(&mut data);
        members.push(Member {
            device: r.device,
            play: r.play,
            fingerprint: Sha256::digest(&data[at..])[0],
        });
    }
    NewLeaf {
        data,
        members: encode_members(&members),
        count: rs.len(),
    }
}

/// Where a receipt of a leaf is stored (its keys), and its fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    pub device: i64,
    pub play: i64,
    pub fingerprint: u8,
}

/// The member index: members sorted by (play, device), as groups of one play: varint play
/// delta, varint count, then per member a varint device delta and its fingerprint byte.
/// Displays of one feed answer the same play, so a batch holds few plays and close
/// device keys: two bytes or so a receipt. Keys are never negative (store rowids).
pub fn encode_members(members: &[Member]) -> Vec<u8> {
    let mut ms = members.to_vec();
    ms.sort_unstable_by_key(|m| (m.play, m.device));
    let mut out = Vec::with_capacity(ms.len() * 3);
    let mut prev_play = 0i64;
    let mut i = 0;
    while i < ms.len() {
        let play = ms[i].play;
        let end = i + ms[i..].iter().take_while(|m| m.play == play).count();
        put_varint(&mut out, (play - prev_play) as u64);
        put_varint(&mut out, (end - i) as u64);
        let mut prev_dev = 0i64;
        for m in &ms[i..end] {
            put_varint(&mut out, (m.device - prev_dev) as u64);
            out.push(m.fingerprint);
            prev_dev = m.device;
        }
        prev_play = play;
        i = end;
    }
    out
}

/// Reads a member index; None when it is malformed (a stored index edited by hand).
pub fn decode_members(mut b: &[u8]) -> Option<Vec<Member>> {
    let mut out = Vec::new();
    let mut play = 0i64;
    while !b.is_empty() {
        play = play.checked_add(i64::try_from(get_varint(&mut b)?).ok()?)?;
        let n = get_varint(&mut b)?;
        let mut device = 0i64;
        for _ in 0..n {
            device = device.checked_add(i64::try_from(get_varint(&mut b)?).ok()?)?;
            let (&fp, rest) = b.split_first()?;
            b = rest;
            out.push(Member {
                device,
                play,
                fingerprint: fp,
            });
        }
    }
    Some(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&x, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(x & 0x7f) << shift;
        if x & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The tree as the store keeps it between batches: its size and its right edge (the roots
/// of its perfect subtrees, largest first, one per set bit of `size`).
#[derive(Debug, Clone, PartialEq)]
pub struct TreeState {
    pub size: u64,
    pub edge: Vec<Hash>,
}

impl TreeState {
    pub fn empty() -> TreeState {
        TreeState {
            size: 0,
            edge: Vec::new(),
        }
    }

    /// Reads the stored edge; None when its length does not match the size.
    pub fn from_stored(size: u64, edge: &[u8]) -> Option<TreeState> {
        if !edge.len().is_multiple_of(32) || edge.len() / 32 != size.count_ones() as usize {
            return None;
        }
        let edge = edge
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                Hash(h)
            })
            .collect();
        Some(TreeState { size, edge })
    }

    pub fn edge_bytes(&self) -> Vec<u8> {
        self.edge.iter().flat_map(|h| h.0).collect()
    }

    /// The RFC 6962 root: SHA-256 of nothing for an empty tree.
    pub fn root(&self) -> Hash {
        let mut it = self.edge.iter().rev();
        let Some(last) = it.next() else {
            return Hash(Sha256::digest([]).into());
        };
        it.fold(*last, |acc, left| node_hash(*left, acc))
    }

    /// Appends a leaf by its hash; returns the hashes to store, by stored-hash index.
    pub fn append(&mut self, leaf: Hash) -> Vec<(u64, Hash)> {
        let n = self.size;
        let mut out = vec![(stored_hash_index(0, n), leaf)];
        let (mut cur, mut level, mut m) = (leaf, 0u8, n);
        while m & 1 == 1 {
            let Some(left) = self.edge.pop() else { break };
            cur = node_hash(left, cur);
            level += 1;
            m >>= 1;
            out.push((stored_hash_index(level, m), cur));
        }
        self.edge.push(cur);
        self.size += 1;
        out
    }
}

/// What appending a batch's leaves writes: each leaf (index, member index, count) and the
/// hashes to store.
#[derive(Debug, Default)]
pub struct Appended {
    pub leaves: Vec<(u64, Vec<u8>, usize)>,
    pub hashes: Vec<(u64, Hash)>,
}

/// Appends leaves to `tree`; their indices follow its size (never a sequence).
pub fn append_leaves(tree: &mut TreeState, leaves: Vec<NewLeaf>) -> Appended {
    let mut out = Appended::default();
    for l in leaves {
        let idx = tree.size;
        out.hashes.extend(tree.append(record_hash(&l.data)));
        out.leaves.push((idx, l.members, l.count));
    }
    out
}

/// What is wrong with a stored receipt, or with a leaf as a whole.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Finding {
    /// In a leaf, stored, but its fields differ from what was logged.
    Edited {
        leaf: u64,
        device: String,
        play_id: String,
    },
    /// In a leaf, no longer stored, and not dropped by retention.
    Deleted {
        leaf: u64,
        device: String,
        play_id: String,
    },
    /// Stored, in no leaf: written outside the daemon.
    Inserted { device: String, play_id: String },
    /// A leaf whose receipts no longer hash to its stored hash, though no single receipt
    /// could be named (a changed member index, or a fingerprint that happened to match).
    LeafChanged { leaf: u64, receipts: usize },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Edited {
                leaf,
                device,
                play_id,
            } => {
                write!(f, "edited: receipt of display {device} for play {play_id} (leaf {leaf}) differs from the logged one")
            }
            Finding::Deleted {
                leaf,
                device,
                play_id,
            } => {
                write!(f, "deleted: receipt of display {device} for play {play_id} (leaf {leaf}) is no longer stored")
            }
            Finding::Inserted { device, play_id } => {
                write!(f, "inserted: receipt of display {device} for play {play_id} is stored but in no leaf of the log")
            }
            Finding::LeafChanged { leaf, receipts } => {
                write!(
                    f,
                    "changed: leaf {leaf} ({receipts} receipts) no longer matches its logged hash"
                )
            }
        }
    }
}

/// A stored receipt as the live check reads it.
#[derive(Debug, Clone)]
pub struct StoredReceipt {
    pub receipt: LogReceipt,
    /// When its play was issued (ms), for telling retention from deletion.
    pub issued_ms: Option<i64>,
}

/// A stored leaf as the live check reads it.
#[derive(Debug, Clone)]
pub struct StoredLeaf {
    pub index: u64,
    pub members: Vec<u8>,
    pub hash: Option<Hash>,
}

/// The live check's tally.
#[derive(Debug, Default)]
pub struct LiveReport {
    pub leaves: u64,
    pub valid: u64,
    /// Receipts in the log that retention dropped: neither valid nor a finding.
    pub pruned: u64,
    /// Receipts of plays issued before the log began, stored then: in no leaf, and
    /// neither valid nor a finding.
    pub before_log: u64,
    pub findings: Vec<Finding>,
}

/// Recomputes every leaf from the stored receipts (`stored`, by (device key, play key)) and
/// compares it with the stored leaf hash. `pruned_before_ms`: receipts of plays issued
/// before it were dropped by retention; `play_issued` tells when a play key was issued (a
/// play row outlives its receipts). Receipts in no leaf whose play key is at most
/// `before_play` predate the log.
pub fn check_leaves(
    leaves: &[StoredLeaf],
    stored: &mut HashMap<(i64, i64), StoredReceipt>,
    play_issued: &dyn Fn(i64) -> Option<(String, i64)>,
    device_name: &dyn Fn(i64) -> Option<String>,
    (pruned_before_ms, before_play): (i64, i64),
) -> LiveReport {
    let mut rep = LiveReport::default();
    for leaf in leaves {
        rep.leaves += 1;
        let Some(members) = decode_members(&leaf.members) else {
            rep.findings.push(Finding::LeafChanged {
                leaf: leaf.index,
                receipts: 0,
            });
            continue;
        };
        check_one(
            leaf,
            &members,
            stored,
            play_issued,
            device_name,
            pruned_before_ms,
            &mut rep,
        );
    }
    for ((_, play), s) in stored.drain() {
        if play <= before_play {
            rep.before_log += 1;
            continue;
        }
        rep.findings.push(Finding::Inserted {
            device: s.receipt.device,
            play_id: s.receipt.play_id,
        });
    }
    rep.findings.sort();
    rep
}

fn check_one(
    leaf: &StoredLeaf,
    members: &[Member],
    stored: &mut HashMap<(i64, i64), StoredReceipt>,
    play_issued: &dyn Fn(i64) -> Option<(String, i64)>,
    device_name: &dyn Fn(i64) -> Option<String>,
    pruned_before_ms: i64,
    rep: &mut LiveReport,
) {
    let mut present = Vec::with_capacity(members.len());
    let mut named = Vec::new();
    let mut pruned = 0u64;
    for m in members {
        match stored.remove(&(m.device, m.play)) {
            Some(s) => {
                if s.receipt.fingerprint() != m.fingerprint {
                    named.push(Finding::Edited {
                        leaf: leaf.index,
                        device: s.receipt.device.clone(),
                        play_id: s.receipt.play_id.clone(),
                    });
                }
                present.push(s.receipt);
            }
            None => {
                let play = play_issued(m.play);
                if play.as_ref().is_none_or(|(_, at)| *at < pruned_before_ms) {
                    pruned += 1;
                    continue;
                }
                named.push(Finding::Deleted {
                    leaf: leaf.index,
                    device: device_name(m.device).unwrap_or_else(|| format!("#{}", m.device)),
                    play_id: play.map(|(id, _)| id).unwrap_or_default(),
                });
            }
        }
    }
    rep.pruned += pruned;
    if pruned > 0 {
        // Part of the leaf is gone by retention: its hash can no longer be recomputed, so
        // its remaining receipts are checked by fingerprint only and are not counted valid.
        rep.pruned += present.len() as u64;
        rep.findings.extend(named);
        return;
    }
    present.sort();
    let ok = leaf.hash == Some(record_hash(&encode_leaf(&present)));
    if ok && named.is_empty() {
        rep.valid += present.len() as u64;
    } else if named.is_empty() {
        rep.findings.push(Finding::LeafChanged {
            leaf: leaf.index,
            receipts: members.len(),
        });
    } else {
        rep.valid += (present.len()
            - named
                .iter()
                .filter(|f| matches!(f, Finding::Edited { .. }))
                .count()) as u64;
        rep.findings.extend(named);
    }
}

/// The root of the first `n` leaves, from their leaf hashes alone.
pub fn root_of(leaf_hashes: &[Hash]) -> Hash {
    let mut t = TreeState::empty();
    for h in leaf_hashes {
        t.append(*h);
    }
    t.root()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(dev: &str, play: &str, start: i64) -> LogReceipt {
        LogReceipt {
            device: dev.into(),
            play_id: play.into(),
            started_ms: start,
            duration_ms: 15_000,
            status: 0,
        }
    }

    #[test]
    fn a_leaf_reads_back_as_written_and_its_layout_is_fixed() {
        let rs = vec![r("bus-1", "p1", 1), r("bus-2", "p1", -2)];
        let data = encode_leaf(&rs);
        assert_eq!(&data[..5], &[1, 0, 0, 0, 2]);
        assert_eq!(&data[5..7], &[0, 5]);
        assert_eq!(&data[7..12], b"bus-1");
        assert_eq!(data.len(), 5 + 2 * (2 + 5 + 2 + 2 + 17));
        assert_eq!(decode_leaf(&data).unwrap(), rs);
        assert_eq!(
            decode_leaf(&data[..data.len() - 1]),
            Err(DecodeError::Short(data.len() - 1))
        );
        let mut v2 = data.clone();
        v2[0] = 2;
        assert_eq!(decode_leaf(&v2), Err(DecodeError::Version(2)));
    }

    #[test]
    fn members_round_trip_and_cost_about_two_bytes_and_a_fingerprint() {
        let ms: Vec<Member> = (0..1000)
            .map(|i| Member {
                device: 5_000 + i * 37,
                play: 900 + i % 3,
                fingerprint: (i % 251) as u8,
            })
            .collect();
        let b = encode_members(&ms);
        let mut back = decode_members(&b).unwrap();
        back.sort();
        let mut want = ms.clone();
        want.sort();
        assert_eq!(back, want);
        assert!(b.len() < 1000 * 4, "{} bytes", b.len());
        assert!(decode_members(&[0x80]).is_none());
    }

    #[test]
    fn large_batches_split_under_the_entry_limit() {
        let rs: Vec<KeyedReceipt> = (0..5_000)
            .map(|i| KeyedReceipt {
                device: i,
                play: 1,
                receipt: r(&format!("bus-{i:05}"), "01JDQ8ZK7Q3N8W5V2C4X9R6T1B", i),
            })
            .collect();
        let leaves = batch_leaves(rs);
        assert!(leaves.len() > 1);
        assert!(leaves.iter().all(|l| l.data.len() <= MAX_LEAF_BYTES));
        // The one-pass encoding is the canonical one, with the same fingerprints.
        for l in &leaves {
            let rs = decode_leaf(&l.data).unwrap();
            assert_eq!(encode_leaf(&rs), l.data);
            let fps: Vec<u8> = decode_members(&l.members)
                .unwrap()
                .iter()
                .map(|m| m.fingerprint)
                .collect();
            let mut want: Vec<u8> = rs.iter().map(LogReceipt::fingerprint).collect();
            let mut got = fps.clone();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want);
        }
        assert_eq!(leaves.iter().map(|l| l.count).sum::<usize>(), 5_000);
    }

    #[test]
    fn the_edge_gives_the_same_root_as_an_independent_implementation() {
        let mut t = TreeState::empty();
        let mut ct = ct_merkle::CtMerkleTree::<sha2::Sha256, Vec<u8>>::new();
        assert_eq!(t.root().0.as_slice(), ct.root().as_bytes().as_slice());
        for i in 0..70u32 {
            let data = i.to_be_bytes().to_vec();
            t.append(record_hash(&data));
            ct.push(data);
            assert_eq!(
                t.root().0.as_slice(),
                ct.root().as_bytes().as_slice(),
                "size {}",
                i + 1
            );
            let back = TreeState::from_stored(t.size, &t.edge_bytes()).unwrap();
            assert_eq!(back, t);
        }
    }
}
