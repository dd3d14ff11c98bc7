//! `civicast witness`: the campaign office's witness. It keeps its own key and, in its state
//! file, the last checkpoint it cosigned; it fetches the log's newest checkpoint and a
//! consistency proof from the last one, verifies both, and cosigns. A checkpoint that
//! cannot be proved consistent with the one it cosigned (a fork, or a tree that shrank) is
//! refused and nothing is signed: the two signed checkpoints are the proof of tampering.

use std::path::Path;

use anyhow::{bail, Context};
use base64::prelude::{Engine, BASE64_STANDARD};
use serde::{Deserialize, Serialize};
use signed_note::Note;

use super::cosign::Cosigner;
use crate::core::tlog::Hash;

/// What the witness remembers: the last checkpoint it cosigned.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WitnessState {
    pub size: u64,
    /// Base64 root.
    pub root: String,
    /// The log's signed note it cosigned.
    pub note: String,
}

pub struct Witnessed {
    /// The checkpoint with the witness's cosignature added.
    pub cosigned: Vec<u8>,
    /// The cosignature line alone.
    pub line: String,
    pub size: u64,
    /// The witness's key name.
    pub name: String,
    pub summary: String,
}

/// Checks the step from `old` to `new` (size, root) with `proof`; Err names the fork.
pub fn check_step(
    old: Option<(u64, Hash)>,
    new: (u64, Hash),
    proof: &[Hash],
) -> anyhow::Result<()> {
    let Some((os, or)) = old else { return Ok(()) };
    let (ns, nr) = new;
    if ns < os {
        bail!("the log's checkpoint at size {ns} is older than the one cosigned at size {os}: the log rolled back");
    }
    if ns == os {
        if nr != or {
            bail!("FORK: two checkpoints at size {ns} with different roots; keep both signed notes as evidence");
        }
        return Ok(());
    }
    if os == 0 {
        return Ok(());
    }
    tlog_tiles::check_tree(&proof.to_vec(), ns, nr, os, or).map_err(|e| {
        anyhow::anyhow!("FORK: the checkpoint at size {ns} is not consistent with the one cosigned at size {os} ({e}); keep both signed notes as evidence")
    })
}

/// One round against the log at `api`.
pub async fn run(api: &str, log_key: &str, key: &Path, state: &Path) -> anyhow::Result<Witnessed> {
    let verifier = super::load_verifier(log_key)?;
    let mut cosigner = Cosigner::load(key)?;
    let (status, body) = get(api, "/log/checkpoint").await?;
    if status != 200 {
        bail!("{api}/log/checkpoint answered {status}");
    }
    let cp = super::open_checkpoint(&body, &verifier)?;
    let old: Option<WitnessState> = match std::fs::read(state) {
        Ok(t) => Some(
            serde_json::from_slice(&t).with_context(|| format!("reading {}", state.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", state.display())),
    };
    let old_pair = old
        .as_ref()
        .map(|o| -> anyhow::Result<(u64, Hash)> {
            let r: [u8; 32] = BASE64_STANDARD
                .decode(&o.root)
                .ok()
                .and_then(|v| v.try_into().ok())
                .with_context(|| format!("{}: a bad root", state.display()))?;
            Ok((o.size, Hash(r)))
        })
        .transpose()?;
    let mut proof = Vec::new();
    if let Some((os, _)) = old_pair.filter(|(os, _)| *os > 0 && *os < cp.size()) {
        let path = format!(
            "/log/proof/consistency?old_size={os}&new_size={}",
            cp.size()
        );
        let (status, body) = get(api, &path).await?;
        if status != 200 {
            bail!("{api}{path} answered {status}: no consistency proof, no cosignature");
        }
        let v: serde_json::Value =
            serde_json::from_slice(&body).context("the consistency proof is not JSON")?;
        for p in v["proof"].as_array().context("the answer has no proof")? {
            let h: [u8; 32] = p
                .as_str()
                .and_then(|s| BASE64_STANDARD.decode(s).ok())
                .and_then(|v| v.try_into().ok())
                .context("a proof hash is not 32 bytes of base64")?;
            proof.push(Hash(h));
        }
    }
    check_step(old_pair, (cp.size(), *cp.hash()), &proof)?;
    cosigner.time = chrono::Utc::now().timestamp().max(0) as u64;
    let mut note =
        Note::from_bytes(&body).map_err(|e| anyhow::anyhow!("not a signed note: {e}"))?;
    let before = note.to_bytes();
    note.add_sigs(&[&cosigner])
        .map_err(|e| anyhow::anyhow!("cosigning: {e}"))?;
    let cosigned = note.to_bytes();
    let line = String::from_utf8_lossy(&cosigned[before.len()..]).into_owned();
    let new_state = WitnessState {
        size: cp.size(),
        root: BASE64_STANDARD.encode(cp.hash().0),
        note: String::from_utf8_lossy(&body).into_owned(),
    };
    let tmp = state.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&new_state)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, state).with_context(|| format!("writing {}", state.display()))?;
    Ok(Witnessed {
        cosigned,
        line,
        size: cp.size(),
        name: signed_note::Signer::name(&cosigner).to_owned(),
        summary: format!(
            "cosigned the checkpoint of {} at size {}",
            cp.origin(),
            cp.size()
        ),
    })
}

/// A plain GET on the daemon's HTTP listener; the status and the body.
async fn get(api: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(rest) = api.strip_prefix("http://") else {
        bail!("--log {api:?}: give the daemon's plain http:// address");
    };
    let authority = rest.split('/').next().unwrap_or(rest).to_owned();
    let addr = if authority.contains(':') {
        authority.clone()
    } else {
        format!("{authority}:80")
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    let raw = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut s = tokio::net::TcpStream::connect(&addr).await?;
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    })
    .await
    .with_context(|| format!("{api} did not answer within 30 s"))?
    .with_context(|| format!("calling {api}{path}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("an answer without the end of its headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("an answer without a status")?;
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body)?;
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk without its size line")?;
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16)
            .context("a bad chunk size")?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            bail!("a chunk ends early");
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}
