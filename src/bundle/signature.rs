//! The signature envelope (`gapbundle/signatures.json`) and the trust decision.
//!
//! Signatures cover the manifest digest, not the whole file: the manifest names the
//! digest of every other byte, so one check at the head vouches for everything, and a
//! reader that only reads the head (inspect, the first step of import) can decide
//! trust before touching a blob. The signed message carries a domain prefix so a
//! bundle signature can never be replayed as a Nix path signature made with the same
//! key (Nix signs `1;/nix/store/...` fingerprints).

use crate::text::escaped;
use serde::{Deserialize, Serialize};

use super::canonical;
use super::digest::Digest;
use super::keys::{PublicKey, SecretKey, Signature};

/// Envelope version this code writes.
pub const ENVELOPE_VERSION: u64 = 1;

/// The bytes an Ed25519 signature covers for a bundle whose manifest has `digest`.
pub fn signed_message(digest: &Digest) -> Vec<u8> {
    Domain::Manifest.message(digest)
}

/// What an envelope's signatures vouch for; each has its own message prefix, so a
/// signature of one can never pass for a signature of the other (nor for a Nix path
/// signature, which signs `1;/nix/store/...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A bundle manifest: `gapbundle-manifest-v1;<digest>`.
    Manifest,
    /// A target inventory (a site key): `gapbundle-inventory-v1;<digest>`.
    Inventory,
}

impl Domain {
    /// The signed message for `digest`.
    pub fn message(self, digest: &Digest) -> Vec<u8> {
        let prefix = match self {
            Domain::Manifest => "gapbundle-manifest-v1",
            Domain::Inventory => "gapbundle-inventory-v1",
        };
        format!("{prefix};{digest}").into_bytes()
    }
}

/// One signature with the public key that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignatureEntry {
    /// `name:base64` public key.
    pub public_key: String,
    /// `name:base64` signature over [`signed_message`].
    pub signature: String,
}

/// The envelope. It has no room for fields of its own beyond these (a newer
/// envelope has another `version`), so nothing unsigned can ride along in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
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

impl crate::error::Classify for TrustError {
    /// A bundle that is not trusted failed verification.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        Some(crate::error::ErrorClass::Verify)
    }
}

impl Envelope {
    /// An envelope signed by `keys` (deterministic: Ed25519 and sorted entries).
    pub fn sign(manifest_digest: Digest, keys: &[SecretKey]) -> Self {
        Self::sign_for(Domain::Manifest, manifest_digest, keys)
    }

    /// [`Envelope::sign`] for what `domain` says the digest is of.
    pub fn sign_for(domain: Domain, manifest_digest: Digest, keys: &[SecretKey]) -> Self {
        let msg = domain.message(&manifest_digest);
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

    /// Parses envelope bytes: canonical JSON (section 9) of version 1 with no other
    /// fields, signatures sorted by public key with none twice, as the writer
    /// makes them; so the bytes are exactly [`Envelope::to_canonical`] of the result.
    pub fn parse(bytes: &[u8]) -> Result<Self, TrustError> {
        let e: Envelope =
            serde_json::from_slice(bytes).map_err(|e| TrustError::Malformed(e.to_string()))?;
        if e.version != ENVELOPE_VERSION {
            return Err(TrustError::Malformed(format!(
                "envelope version {} is not supported (this gapbundle reads {ENVELOPE_VERSION}); upgrade gapbundle",
                e.version
            )));
        }
        canonical::check(bytes)
            .map_err(|c| TrustError::Malformed(format!("not canonical JSON: {c}")))?;
        if let Some(w) = e
            .signatures
            .windows(2)
            .find(|w| w[0].public_key >= w[1].public_key)
        {
            return Err(TrustError::Malformed(format!(
                "signatures must be sorted by publicKey with none twice, but `{}` follows `{}`",
                escaped(&w[1].public_key),
                escaped(&w[0].public_key)
            )));
        }
        Ok(e)
    }

    /// The keys that claim to have signed (not yet checked), as the envelope
    /// spells them; they are untrusted text, so print them with
    /// [`crate::text::escaped`].
    pub fn claimed_signers(&self) -> Vec<String> {
        self.signatures
            .iter()
            .map(|s| s.public_key.clone())
            .collect()
    }

    /// Decides trust (format.md section 7): at least `threshold` distinct trusted
    /// keys must have valid signatures over `actual`, where distinct means distinct
    /// key bytes (one key trusted under two names counts once). Any signature that
    /// claims a trusted key and fails is an error on its own, since it means
    /// tampering rather than a missing key; entries by untrusted keys are ignored,
    /// however malformed. Returns the trusted keys that signed, one per key.
    pub fn check(
        &self,
        actual: &Digest,
        trusted: &[PublicKey],
        threshold: usize,
    ) -> Result<Vec<PublicKey>, TrustError> {
        self.check_for(Domain::Manifest, actual, trusted, threshold)
    }

    /// [`Envelope::check`] for what `domain` says the digest is of.
    pub fn check_for(
        &self,
        domain: Domain,
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
        let msg = domain.message(actual);
        let mut ok: Vec<PublicKey> = Vec::new();
        for entry in &self.signatures {
            let Some(key) = trusted.iter().find(|k| k.to_string() == entry.public_key) else {
                continue;
            };
            let bad = || TrustError::BadSignature {
                key: escaped(&entry.public_key).into_owned(),
            };
            let sig = Signature::parse(&entry.signature).map_err(|_| bad())?;
            if !key.verify(&msg, &sig) {
                return Err(bad());
            }
            if !ok.iter().any(|k| k.key_bytes() == key.key_bytes()) {
                ok.push(key.clone());
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
                    .map(|s| escaped(s.public_key.split(':').next().unwrap_or("")).into_owned())
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

    // Issue 11 item 15: the same key bytes trusted under two names counted twice.
    #[test]
    fn one_key_under_two_names_counts_once() {
        let a = key("a", 1);
        let a2 = key("a2", 1);
        let d = Digest::of(b"manifest");
        let env = Envelope::sign(d, &[a.clone(), a2.clone()]);
        let trusted = [a.public(), a2.public()];
        assert_eq!(env.check(&d, &trusted, 1).unwrap().len(), 1);
        assert!(matches!(
            env.check(&d, &trusted, 2),
            Err(TrustError::NotEnough { found: 1, .. })
        ));
    }

    // Issue 11 item 15: an unparseable signature by an untrusted key made a valid
    // bundle fail, although section 7 says such entries are ignored.
    #[test]
    fn entries_by_untrusted_keys_are_ignored_however_malformed() {
        let a = key("a", 1);
        let d = Digest::of(b"manifest");
        let mut env = Envelope::sign(d, std::slice::from_ref(&a));
        env.signatures.push(SignatureEntry {
            public_key: "zz-untrusted:garbage".into(),
            signature: "not a signature\u{1b}[2J".into(),
        });
        assert_eq!(env.check(&d, &[a.public()], 1).unwrap().len(), 1);
        // By a trusted key, the same garbage is tampering.
        env.signatures[0].signature = "a:AAAA".into();
        assert!(matches!(
            env.check(&d, &[a.public()], 1),
            Err(TrustError::BadSignature { .. })
        ));
    }

    #[test]
    fn only_the_envelope_the_writer_makes_parses() {
        let env = Envelope::sign(Digest::of(b"m"), &[key("b", 2), key("a", 1)]);
        let text = String::from_utf8(env.to_canonical()).unwrap();
        Envelope::parse(text.as_bytes()).unwrap();
        let mut unsorted = env.clone();
        unsorted.signatures.reverse();
        assert!(Envelope::parse(&unsorted.to_canonical()).is_err());
        let mut twice = env.clone();
        twice.signatures.insert(0, twice.signatures[0].clone());
        assert!(Envelope::parse(&twice.to_canonical()).is_err());
        let spaced = text.replacen(',', ", ", 1);
        assert!(Envelope::parse(spaced.as_bytes()).is_err());
    }

    #[test]
    fn envelope_round_trips_byte_for_byte() {
        let env = Envelope::sign(Digest::of(b"m"), &[key("z", 9), key("a", 1)]);
        let bytes = env.to_canonical();
        assert_eq!(Envelope::parse(&bytes).unwrap().to_canonical(), bytes);
    }
}
