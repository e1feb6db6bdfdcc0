//! The signature envelope (`gapbundle/signatures.json`) and the trust decision.
//!
//! Signatures cover the manifest digest, not the whole file: the manifest names the
//! digest of every other byte, so one check at the head vouches for everything, and a
//! reader that only reads the head (inspect, the first step of import) can decide
//! trust before touching a blob. The signed message carries a domain prefix so a
//! bundle signature can never be replayed as a Nix path signature made with the same
//! key (Nix signs `1;/nix/store/...` fingerprints).

use serde::{Deserialize, Serialize};

use super::canonical;
use super::digest::Digest;
use super::keys::{PublicKey, SecretKey, Signature};

/// Envelope version this code writes.
pub const ENVELOPE_VERSION: u64 = 1;

/// The bytes an Ed25519 signature covers for a bundle whose manifest has `digest`.
pub fn signed_message(digest: &Digest) -> Vec<u8> {
    format!("gapbundle-manifest-v1;{digest}").into_bytes()
}

/// One signature with the public key that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureEntry {
    /// `name:base64` public key.
    pub public_key: String,
    /// `name:base64` signature over [`signed_message`].
    pub signature: String,
}

/// The envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Envelope version.
    pub version: u64,
    /// Digest of the manifest entry's bytes.
    pub manifest_digest: Digest,
    /// Signatures, sorted by public key.
    pub signatures: Vec<SignatureEntry>,
}

/// Why a bundle is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// No signatures and unsigned bundles were not allowed.
    #[error("the bundle is not signed; ask its maker for a signed bundle, or pass --allow-unsigned if you trust how it reached you")]
    Unsigned,
    /// The envelope names a different manifest.
    #[error("the signatures are for manifest {signed}, but this bundle's manifest is {actual}: the head of the file was altered")]
    WrongManifest {
        /// Digest in the envelope.
        signed: Digest,
        /// Digest of the manifest bytes.
        actual: Digest,
    },
    /// A signature failed to verify against the key it claims.
    #[error("signature by `{key}` does not verify: the manifest or the signature was altered")]
    BadSignature {
        /// The claimed key.
        key: String,
    },
    /// Not enough trusted keys signed.
    #[error("signed by {found} trusted key(s), {threshold} required; signers: [{signers}]; trusted: [{trusted}]. Pass the signer's public key with --trust if you trust it")]
    NotEnough {
        /// Valid signatures by trusted keys.
        found: usize,
        /// Required count.
        threshold: usize,
        /// Key names that signed.
        signers: String,
        /// Key names trusted.
        trusted: String,
    },
    /// No trusted keys were given.
    #[error("no trusted keys given: pass --trust PUBKEY-FILE (or a directory of keys), or --allow-unsigned to skip the signature check")]
    NoTrustedKeys,
    /// Envelope could not be parsed.
    #[error("signature envelope is malformed: {0}")]
    Malformed(String),
}

impl Envelope {
    /// An envelope signed by `keys` (deterministic: Ed25519 and sorted entries).
    pub fn sign(manifest_digest: Digest, keys: &[SecretKey]) -> Self {
        let msg = signed_message(&manifest_digest);
        let mut signatures: Vec<SignatureEntry> = keys
            .iter()
            .map(|k| SignatureEntry {
                public_key: k.public().to_string(),
                signature: k.sign(&msg).to_string(),
            })
            .collect();
        signatures.sort_by(|a, b| a.public_key.cmp(&b.public_key));
        signatures.dedup();
        Envelope {
            version: ENVELOPE_VERSION,
            manifest_digest,
            signatures,
        }
    }

    /// Canonical bytes of the envelope.
    pub fn to_canonical(&self) -> Vec<u8> {
        canonical::to_vec(self).expect("envelope has no floats")
    }

    /// Parses envelope bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, TrustError> {
        let e: Envelope =
            serde_json::from_slice(bytes).map_err(|e| TrustError::Malformed(e.to_string()))?;
        if e.version != ENVELOPE_VERSION {
            return Err(TrustError::Malformed(format!(
                "envelope version {} is not supported (this gapbundle reads {ENVELOPE_VERSION}); upgrade gapbundle",
                e.version
            )));
        }
        Ok(e)
    }

    /// Names of the keys that claim to have signed (not yet checked).
    pub fn claimed_signers(&self) -> Vec<String> {
        self.signatures
            .iter()
            .map(|s| s.public_key.clone())
            .collect()
    }

    /// Decides trust: at least `threshold` distinct trusted keys must have valid
    /// signatures over `actual`. Any signature that claims a trusted key and fails is
    /// an error on its own, since it means tampering rather than a missing key.
    /// Returns the trusted keys that signed.
    pub fn check(
        &self,
        actual: &Digest,
        trusted: &[PublicKey],
        threshold: usize,
    ) -> Result<Vec<PublicKey>, TrustError> {
        if self.manifest_digest != *actual {
            return Err(TrustError::WrongManifest {
                signed: self.manifest_digest,
                actual: *actual,
            });
        }
        if self.signatures.is_empty() {
            return Err(TrustError::Unsigned);
        }
        if trusted.is_empty() {
            return Err(TrustError::NoTrustedKeys);
        }
        let msg = signed_message(actual);
        let mut ok: Vec<PublicKey> = Vec::new();
        for entry in &self.signatures {
            let Ok(sig) = Signature::parse(&entry.signature) else {
                return Err(TrustError::BadSignature {
                    key: entry.public_key.clone(),
                });
            };
            for key in trusted.iter().filter(|k| k.to_string() == entry.public_key) {
                if !key.verify(&msg, &sig) {
                    return Err(TrustError::BadSignature {
                        key: entry.public_key.clone(),
                    });
                }
                if !ok.contains(key) {
                    ok.push(key.clone());
                }
            }
        }
        let threshold = threshold.max(1);
        if ok.len() < threshold {
            return Err(TrustError::NotEnough {
                found: ok.len(),
                threshold,
                signers: self
                    .signatures
                    .iter()
                    .map(|s| s.public_key.split(':').next().unwrap_or("").to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                trusted: trusted
                    .iter()
                    .map(|k| k.name().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, seed: u8) -> SecretKey {
        SecretKey::from_seed(name, [seed; 32]).unwrap()
    }

    #[test]
    fn threshold_counts_distinct_trusted_keys() {
        let d = Digest::of(b"manifest");
        let (a, b, c) = (key("a", 1), key("b", 2), key("c", 3));
        let env = Envelope::sign(d, &[a.clone(), b.clone()]);
        let trusted = [a.public(), b.public(), c.public()];
        assert_eq!(env.check(&d, &trusted, 2).unwrap().len(), 2);
        assert!(matches!(
            env.check(&d, &trusted, 3),
            Err(TrustError::NotEnough {
                found: 2,
                threshold: 3,
                ..
            })
        ));
        assert!(matches!(
            env.check(&d, &[c.public()], 1),
            Err(TrustError::NotEnough { found: 0, .. })
        ));
    }

    #[test]
    fn altered_manifest_or_signature_is_caught() {
        let d = Digest::of(b"manifest");
        let a = key("a", 1);
        let env = Envelope::sign(d, std::slice::from_ref(&a));
        assert!(matches!(
            env.check(&Digest::of(b"other"), &[a.public()], 1),
            Err(TrustError::WrongManifest { .. })
        ));
        let mut forged = env.clone();
        forged.manifest_digest = Digest::of(b"other");
        assert!(matches!(
            forged.check(&Digest::of(b"other"), &[a.public()], 1),
            Err(TrustError::BadSignature { .. })
        ));
    }

    #[test]
    fn envelope_round_trips_byte_for_byte() {
        let env = Envelope::sign(Digest::of(b"m"), &[key("z", 9), key("a", 1)]);
        let bytes = env.to_canonical();
        assert_eq!(Envelope::parse(&bytes).unwrap().to_canonical(), bytes);
    }
}
