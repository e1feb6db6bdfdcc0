//! Store paths and hashes: the names a bundle gives Nix.
//!
//! A store path from a bundle becomes a file name in a cache, an argument to `nix`
//! and a line of a narinfo, so [`StorePath`] only ever holds what Nix itself would
//! accept (`/nix/store/<32 nix32 characters>-<name>`, with Nix's name characters):
//! never `..`, a `/`, white space or an option. [`NarHash`] reads the three
//! spellings Nix prints and writes the one narinfo files use.

use std::fmt;

use base64::Engine as _;

use super::{nix32, shown, NixFormatError, STORE_DIR};
use crate::bundle::Digest;

/// A sha256 NAR hash (the same 32 bytes as a [`Digest`], spelled Nix's way).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NarHash(pub [u8; 32]);

impl NarHash {
    /// Parses `sha256:<nix32>`, `sha256:<hex>` or the SRI form `sha256-<base64>`.
    pub fn parse(s: &str) -> Result<Self, NixFormatError> {
        let err = || NixFormatError::Hash(shown(s));
        if let Some(rest) = s.strip_prefix("sha256:") {
            return match rest.len() {
                52 => Ok(NarHash(nix32::decode(rest).map_err(|_| err())?)),
                64 => Digest::from_hex(rest)
                    .map(|d| NarHash(*d.as_bytes()))
                    .map_err(|_| err()),
                _ => Err(err()),
            };
        }
        if let Some(b64) = s.strip_prefix("sha256-") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| err())?;
            return bytes.try_into().map(NarHash).map_err(|_| err());
        }
        Err(err())
    }

    /// `sha256:<nix32>`, the form narinfo files and signatures use.
    pub fn to_nix32_string(&self) -> String {
        format!("sha256:{}", nix32::encode(&self.0))
    }

    /// The same hash as a bundle digest.
    pub fn digest(&self) -> Digest {
        Digest::from_bytes(self.0)
    }

    /// From a bundle digest.
    pub fn from_digest(d: &Digest) -> Self {
        NarHash(*d.as_bytes())
    }
}

impl fmt::Display for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix32_string())
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix32_string())
    }
}

/// A checked store path: `/nix/store/<32 nix32 chars>-<name>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath(String);

impl StorePath {
    /// Checks a full store path. Names follow Nix's rules (letters, digits and
    /// `+-._?=`, not starting with `.`), which also keeps them safe as file names and
    /// command arguments.
    pub fn parse(s: &str) -> Result<Self, NixFormatError> {
        let err = || NixFormatError::StorePath(shown(s));
        let base = s
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(err)?;
        let (hash, name) = base.split_at_checked(32).ok_or_else(err)?;
        let name = name.strip_prefix('-').ok_or_else(err)?;
        let hash_ok = hash.bytes().all(|c| nix32::digit(c).is_some());
        let name_ok = !name.is_empty()
            && name.len() <= 211
            && !name.starts_with('.')
            && name.bytes().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.' | b'_' | b'?' | b'=')
            });
        if !hash_ok || !name_ok {
            return Err(err());
        }
        Ok(StorePath(s.to_string()))
    }

    /// The full path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `<hash>-<name>`.
    pub fn base_name(&self) -> &str {
        &self.0[STORE_DIR.len() + 1..]
    }

    /// The 32-character hash part (the narinfo's file name).
    pub fn hash_part(&self) -> &str {
        &self.base_name()[..32]
    }

    /// The name after the hash.
    pub fn name(&self) -> &str {
        &self.base_name()[33..]
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `name` is acceptable as a GC root name (one path component).
pub fn valid_root_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+-._".contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_HEX: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const HELLO_NIX32: &str = "094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic";
    // `nix path-info --json` (SRI) and the narinfo Nix accepted for the same NAR.
    const NAR_SRI: &str = "sha256-H9iWrazNxp1ESVSXxMQ/1AZsRuXprxoOg7NJPhQ+6vU=";
    const NAR_NIX32: &str = "sha256:1xga7qa3wjdkhc71mbz9wm36q1nl7z2c95sl9529vindmjnrdn0z";

    #[test]
    fn nar_hashes_parse_in_every_spelling_nix_prints() {
        assert_eq!(NarHash::parse(NAR_SRI).unwrap().to_string(), NAR_NIX32);
        assert_eq!(
            NarHash::parse(&format!("sha256:{HELLO_HEX}")).unwrap(),
            NarHash::parse(&format!("sha256:{HELLO_NIX32}")).unwrap()
        );
        assert!(NarHash::parse("md5:abc").is_err());
        assert!(NarHash::parse("sha256-AAAA").is_err());
    }

    #[test]
    fn store_paths_are_checked() {
        let p = StorePath::parse("/nix/store/npsly8l2kja0f1kchz7hwdkdihfg8759-base").unwrap();
        assert_eq!(p.hash_part(), "npsly8l2kja0f1kchz7hwdkdihfg8759");
        assert_eq!(p.name(), "base");
        for bad in [
            "/nix/store/npsly8l2kja0f1kchz7hwdkdihfg8759",
            "/nix/store/npsly8l2kja0f1kchz7hwdkdihfg8759-",
            "/nix/store/npsly8l2kja0f1kchz7hwdkdihfg875e-x",
            "/nix/store/npsly8l2kja0f1kchz7hwdkdihfg8759-../x",
            "/nix/store/npsly8l2kja0f1kchz7hwdkdihfg8759-a/b",
            "/nix/store/npsly8l2kja0f1kchz7hwdkdihfg8759-a\nb",
            "/nix/storex/npsly8l2kja0f1kchz7hwdkdihfg8759-a",
            "/nix/store/short-a",
            "/nix/store/é",
        ] {
            assert!(StorePath::parse(bad).is_err(), "{bad}");
        }
    }
}
