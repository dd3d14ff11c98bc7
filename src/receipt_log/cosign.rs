//! Witness cosignatures (C2SP tlog-cosignature, `cosignature/v1`): an Ed25519 signature over
//! `cosignature/v1\ntime <seconds>\n` followed by the checkpoint body, carried in a signed
//! note line whose key ID is SHA-256(name || 0x0A || 0x04 || public key)[:4] and whose
//! signature bytes are the timestamp (u64, big-endian) then the 64-byte signature.
//! signed_note 0.2 has no such type: these implement its `Signer` and `Verifier`.

use std::path::Path;

use anyhow::{bail, Context};
use base64::prelude::{Engine, BASE64_STANDARD};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

const ALG_COSIGNATURE_V1: u8 = 0x04;

fn message(ts: u64, body: &[u8]) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {ts}\n").into_bytes();
    m.extend_from_slice(body);
    m
}

fn id_of(name: &str, key: &VerifyingKey) -> u32 {
    let mut k = vec![ALG_COSIGNATURE_V1];
    k.extend_from_slice(key.as_bytes());
    signed_note::key_id(name, &k)
}

/// A witness's signing key, with the time it signs at.
pub struct Cosigner {
    name: String,
    key: SigningKey,
    id: u32,
    pub time: u64,
}

impl Cosigner {
    pub fn verifier_key(&self) -> String {
        let mut k = vec![ALG_COSIGNATURE_V1];
        k.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.id,
            BASE64_STANDARD.encode(k)
        )
    }

    fn encode(&self) -> String {
        let mut k = vec![ALG_COSIGNATURE_V1];
        k.extend_from_slice(&self.key.to_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id,
            BASE64_STANDARD.encode(k)
        )
    }

    /// Reads a key written by [`witness_keygen`].
    pub fn load(path: &Path) -> anyhow::Result<Cosigner> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the witness key {}", path.display()))?;
        let bad = || anyhow::anyhow!("{} is not a cosignature/v1 witness key", path.display());
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(bad)?;
        // The name and the ID hold no '+'; the base64 may.
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(_id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let raw = BASE64_STANDARD.decode(b64).map_err(|_| bad())?;
        let (&alg, seed) = raw.split_first().ok_or_else(bad)?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| bad())?;
        if alg != ALG_COSIGNATURE_V1 {
            return Err(bad());
        }
        let key = SigningKey::from_bytes(&seed);
        let id = id_of(name, &key.verifying_key());
        Ok(Cosigner {
            name: name.to_owned(),
            key,
            id,
            time: 0,
        })
    }
}

/// Writes a new witness key named `name` to `path` and its verifier key to `path.pub`.
pub fn witness_keygen(path: &Path, name: &str) -> anyhow::Result<String> {
    if !signed_note::is_key_name_valid(name) {
        bail!("{name:?} is not a valid key name (no spaces or '+')");
    }
    if path.exists() {
        bail!(
            "{} exists: a witness key is never overwritten",
            path.display()
        );
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let id = id_of(name, &key.verifying_key());
    let c = Cosigner {
        name: name.to_owned(),
        key,
        id,
        time: 0,
    };
    super::write_secret(path, &c.encode())?;
    let vkey = c.verifier_key();
    let pub_path = super::pub_path(path);
    std::fs::write(&pub_path, format!("{vkey}\n"))
        .with_context(|| format!("writing {}", pub_path.display()))?;
    Ok(vkey)
}

impl signed_note::Signer for Cosigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        let sig = self.key.sign(&message(self.time, msg));
        let mut out = self.time.to_be_bytes().to_vec();
        out.extend_from_slice(&sig.to_bytes());
        Ok(out)
    }
}

/// A witness's public key, for checking its cosignatures.
#[derive(Clone)]
pub struct CosignatureVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// From `name+id+base64(0x04 || key)`, or a file holding it.
    pub fn new(key_or_path: &str) -> anyhow::Result<CosignatureVerifier> {
        let text = if Path::new(key_or_path).exists() {
            std::fs::read_to_string(key_or_path)
                .with_context(|| format!("reading {key_or_path}"))?
        } else {
            key_or_path.to_owned()
        };
        let bad = || anyhow::anyhow!("{key_or_path} is not a cosignature/v1 verifier key");
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(b64)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let raw = BASE64_STANDARD.decode(b64).map_err(|_| bad())?;
        let (&alg, k) = raw.split_first().ok_or_else(bad)?;
        let k: [u8; 32] = k.try_into().map_err(|_| bad())?;
        let key = VerifyingKey::from_bytes(&k).map_err(|_| bad())?;
        let id16 = u32::from_str_radix(id, 16).map_err(|_| bad())?;
        if alg != ALG_COSIGNATURE_V1 || id16 != id_of(name, &key) {
            return Err(bad());
        }
        Ok(CosignatureVerifier {
            name: name.to_owned(),
            id: id16,
            key,
        })
    }
}

impl signed_note::Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        if sig.len() != 72 {
            return false;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&sig[..8]);
        let Ok(s) = ed25519_dalek::Signature::from_slice(&sig[8..]) else {
            return false;
        };
        self.key
            .verify(&message(u64::from_be_bytes(ts), msg), &s)
            .is_ok()
    }
}
