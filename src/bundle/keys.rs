//! Ed25519 keys and signatures in Nix's text format.
//!
//! We use Nix's `name:base64` format on purpose: a key made by
//! `nix key generate-secret` signs bundles unchanged, the public half goes into
//! `trusted-public-keys` unchanged, and the same key later signs the Nix path infos a
//! bundle carries. A secret key is `name:base64(seed ‖ public)` (64 bytes, libsodium's
//! layout), a public key `name:base64(public)` (32 bytes) and a signature
//! `name:base64(signature)` (64 bytes).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};

/// What is wrong with a key or signature string.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// No `name:` prefix.
    #[error("{what} has no `name:` prefix (expected `name:base64`, as `nix key generate-secret` writes)")]
    NoName {
        /// Which kind of text was parsed.
        what: &'static str,
    },
    /// The key name is empty or has characters Nix would mangle.
    #[error(
        "key name `{0}` is not usable: it must be non-empty and contain no `:`, white space or control characters"
    )]
    BadName(String),
    /// Base64 did not decode.
    #[error("{what} is not valid base64 after the `name:` prefix")]
    Base64 {
        /// Which kind of text was parsed.
        what: &'static str,
    },
    /// Decoded to the wrong number of bytes.
    #[error("{what} decodes to {found} bytes, expected {expected}")]
    Length {
        /// Which kind of text was parsed.
        what: &'static str,
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// The public half stored in a secret key does not belong to its seed.
    #[error("secret key `{0}` is corrupt: its public half does not match its seed")]
    Inconsistent(String),
    /// Bytes that are not a valid curve point.
    #[error("public key `{0}` is not a valid Ed25519 key")]
    BadPoint(String),
}

impl crate::error::Classify for KeyError {
    /// A key or signature string that cannot be used is bad input.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        Some(crate::error::ErrorClass::Input)
    }
}

fn split<'a>(text: &'a str, what: &'static str) -> Result<(&'a str, Vec<u8>), KeyError> {
    let text = text.trim();
    let (name, b64) = text.split_once(':').ok_or(KeyError::NoName { what })?;
    check_name(name)?;
    let bytes = B64
        .decode(b64.trim())
        .map_err(|_| KeyError::Base64 { what })?;
    Ok((name, bytes))
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty()
        || name.contains(':')
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(KeyError::BadName(
            name.chars().flat_map(char::escape_default).collect(),
        ));
    }
    Ok(())
}

fn exact<const N: usize>(bytes: Vec<u8>, what: &'static str) -> Result<[u8; N], KeyError> {
    let found = bytes.len();
    bytes.try_into().map_err(|_| KeyError::Length {
        what,
        expected: N,
        found,
    })
}

/// A named Ed25519 signing key.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.name)
    }
}

impl SecretKey {
    /// A key from a 32-byte seed (the caller supplies randomness, which keeps this
    /// module pure and lets tests use fixed seeds).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, KeyError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Parses `name:base64(64 bytes)`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let what = "secret key";
        let (name, bytes) = split(text, what)?;
        let bytes: [u8; 64] = exact(bytes, what)?;
        let seed: [u8; 32] = bytes[..32].try_into().expect("32 bytes");
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes()[..] != bytes[32..] {
            return Err(KeyError::Inconsistent(name.to_string()));
        }
        Ok(Self {
            name: name.to_string(),
            key,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Nix's text form of the secret key.
    pub fn to_nix_string(&self) -> String {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(self.key.as_bytes());
        bytes[32..].copy_from_slice(self.key.verifying_key().as_bytes());
        format!("{}:{}", self.name, B64.encode(bytes))
    }

    /// Signs `message` (Ed25519 is deterministic: same key and message, same bytes).
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            key_name: self.name.clone(),
            bytes: self.key.sign(message).to_bytes(),
        }
    }
}

/// A named Ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self)
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.name, B64.encode(self.key.as_bytes()))
    }
}

impl PublicKey {
    /// Parses `name:base64(32 bytes)`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let what = "public key";
        let (name, bytes) = split(text, what)?;
        let bytes: [u8; 32] = exact(bytes, what)?;
        let key =
            VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPoint(name.to_string()))?;
        Ok(Self {
            name: name.to_string(),
            key,
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32 key bytes: what makes two keys the same key, whatever their names.
    pub fn key_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// Whether `sig` is this key's signature over `message`. The name must match
    /// too, as Nix requires.
    pub fn verify(&self, message: &[u8], sig: &Signature) -> bool {
        sig.key_name == self.name
            && self
                .key
                .verify(message, &ed25519_dalek::Signature::from_bytes(&sig.bytes))
                .is_ok()
    }
}

/// Whether every `(key, message, signature)` verifies, names included, checked as
/// one batch: a third of the CPU of [`PublicKey::verify`] on each (20 against 55 µs
/// a signature for 2,101 of them on the 2-core machine of docs/benchmarks.md), which
/// is what most of a small Nix path costs an import. `false` says only that at least
/// one failed: check them one by one to know which. True for none.
///
/// Use it only where the keys' holders are trusted. The batch equation weighs each
/// signature by a random factor and is not multiplied by the cofactor, so a
/// signature whose `R` its signer built with a small-order component can pass here
/// (depending on those factors) where [`PublicKey::verify`] and libsodium refuse it;
/// no signature made without the secret key passes.
pub fn verify_batch(items: &[(&PublicKey, &[u8], &Signature)]) -> bool {
    if items.iter().any(|(k, _, s)| s.key_name != k.name) {
        return false;
    }
    let messages: Vec<&[u8]> = items.iter().map(|(_, m, _)| *m).collect();
    let sigs: Vec<ed25519_dalek::Signature> = items
        .iter()
        .map(|(_, _, s)| ed25519_dalek::Signature::from_bytes(&s.bytes))
        .collect();
    let keys: Vec<VerifyingKey> = items.iter().map(|(k, _, _)| k.key).collect();
    ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok()
}

/// A signature in Nix's `name:base64` form.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Signature {
    key_name: String,
    bytes: [u8; 64],
}

impl Signature {
    /// Parses `name:base64(64 bytes)`.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let what = "signature";
        let (name, bytes) = split(text, what)?;
        Ok(Self {
            key_name: name.to_string(),
            bytes: exact(bytes, what)?,
        })
    }
    /// Name of the key that made it.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.key_name, B64.encode(self.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated once with `nix key generate-secret --key-name test-1` (Nix 2.8) and
    // `nix key convert-secret-to-public`; kept to prove we read Nix's files as they are.
    const NIX_SECRET: &str = "test-1:OkVTUk1CASOCrYxvJD415t2xiYLukSZ6B68OwABQQmTztakxDjieeudcxzSj2kOkk6FYDmUZrkY9t5zgPRe3hg==";
    const NIX_PUBLIC: &str = "test-1:87WpMQ44nnrnXMc0o9pDpJOhWA5lGa5GPbec4D0Xt4Y=";

    #[test]
    fn nix_generated_key_pair_round_trips() {
        let sk = SecretKey::parse(NIX_SECRET).unwrap();
        assert_eq!(sk.public().to_string(), NIX_PUBLIC);
        assert_eq!(sk.to_nix_string(), NIX_SECRET);
        let pk = PublicKey::parse(NIX_PUBLIC).unwrap();
        let sig = sk.sign(b"message");
        assert!(pk.verify(b"message", &sig));
        assert!(!pk.verify(b"messagf", &sig));
        let reparsed = Signature::parse(&sig.to_string()).unwrap();
        assert_eq!(reparsed, sig);
    }

    #[test]
    fn a_batch_verifies_when_every_signature_does_and_only_then() {
        let a = SecretKey::from_seed("a", [1; 32]).unwrap();
        let b = SecretKey::from_seed("b", [2; 32]).unwrap();
        let (pa, pb) = (a.public(), b.public());
        let msgs: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("message {i}").into_bytes())
            .collect();
        let sigs: Vec<Signature> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if i.is_multiple_of(3) {
                    b.sign(m)
                } else {
                    a.sign(m)
                }
            })
            .collect();
        let key = |i: usize| if i.is_multiple_of(3) { &pb } else { &pa };
        let items: Vec<(&PublicKey, &[u8], &Signature)> = (0..msgs.len())
            .map(|i| (key(i), msgs[i].as_slice(), &sigs[i]))
            .collect();
        assert!(verify_batch(&items));
        assert!(verify_batch(&[]));
        // One message altered, one signature by the wrong key, one under another
        // name: each alone fails the batch.
        let mut altered = items.clone();
        altered[17].1 = b"message 18";
        assert!(!verify_batch(&altered));
        let mut wrong_key = items.clone();
        wrong_key[3].0 = &pa;
        assert!(!verify_batch(&wrong_key));
        let renamed = Signature {
            key_name: "c".into(),
            ..sigs[5].clone()
        };
        let mut wrong_name = items.clone();
        wrong_name[5].2 = &renamed;
        assert!(!verify_batch(&wrong_name));
    }

    #[test]
    fn wrong_name_does_not_verify() {
        let sk = SecretKey::from_seed("a", [7; 32]).unwrap();
        let other = SecretKey::from_seed("b", [7; 32]).unwrap();
        assert!(!other.public().verify(b"m", &sk.sign(b"m")));
    }

    #[test]
    fn malformed_keys_are_refused_with_reasons() {
        assert!(matches!(
            SecretKey::parse("nocolon"),
            Err(KeyError::NoName { .. })
        ));
        assert!(matches!(
            PublicKey::parse("k:AAAA"),
            Err(KeyError::Length { found: 3, .. })
        ));
        assert!(matches!(
            SecretKey::parse(NIX_PUBLIC),
            Err(KeyError::Length { .. })
        ));
    }
}
