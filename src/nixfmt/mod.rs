//! Nix's own formats, pure: no processes, no files, no network.
//!
//! A bundle carries Nix store paths as NARs with the metadata Nix keeps for them
//! (NarHash, NarSize, References, Deriver, CA, signatures), and the importer turns
//! them back into what Nix reads: a binary cache (`nix-cache-info`, `.narinfo` files,
//! `nar/<hash>.nar.zst`). Everything about those formats lives here, apart from the
//! code that runs `nix`, so it can be tested byte for byte against values computed by
//! the real Nix (the tests below carry such vectors):
//!
//! - [`nix32`]: Nix's base-32 (its own alphabet, least significant bits first);
//! - [`NarHash`] parsing from any of the three spellings Nix prints;
//! - [`StorePath`]: a checked `/nix/store/<hash>-<name>`, so names from a bundle can
//!   never become a path outside the cache or an option to a command;
//! - [`fingerprint`]: the text a Nix path signature covers;
//! - [`NarInfo`]: the `.narinfo` text writer;
//! - [`PathInfo`]: `nix path-info --json` parsing;
//! - [`closure_order`]: references before the paths that use them.

pub mod dump;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use crate::bundle::keys::{PublicKey, SecretKey, Signature};
use crate::bundle::Digest;

/// The Nix store directory this implementation reads and writes.
pub const STORE_DIR: &str = "/nix/store";

/// Media type of a zstd-compressed NAR blob in a bundle.
pub const NAR_ZSTD_MEDIA_TYPE: &str = "application/vnd.gapbundle.nix.nar.v1+zstd";

/// What is wrong with a Nix value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NixFormatError {
    /// Not Nix base-32 of the right length.
    #[error("`{0}` is not a Nix base-32 sha256 hash (52 characters of 0-9a-z without e, o, u, t)")]
    Nix32(String),
    /// A hash in none of the spellings Nix uses.
    #[error("`{0}` is not a sha256 hash as Nix writes it (`sha256:<nix32>`, `sha256:<hex>` or `sha256-<base64>`)")]
    Hash(String),
    /// Not a store path.
    #[error("`{0}` is not a Nix store path (`/nix/store/<32 base-32 characters>-<name>`)")]
    StorePath(String),
    /// References that form a cycle (Nix closures have none but self-references).
    #[error("store paths reference each other in a cycle through `{0}`")]
    Cycle(String),
    /// A reference that is neither in the set nor known to exist elsewhere.
    #[error("`{path}` references `{reference}`, which is missing")]
    MissingReference {
        /// The path.
        path: String,
        /// Its missing reference.
        reference: String,
    },
}

/// Nix's base-32 encoding and decoding.
pub mod nix32 {
    use super::NixFormatError;

    /// Nix's alphabet: digits and lowercase letters without `e o u t`.
    pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

    /// Length of the encoding of `n` bytes.
    pub fn encoded_len(n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (n * 8 - 1) / 5 + 1
        }
    }

    /// Encodes bytes the way Nix does (the last character holds the lowest bits of
    /// the first byte).
    pub fn encode(bytes: &[u8]) -> String {
        let len = encoded_len(bytes.len());
        let mut s = String::with_capacity(len);
        for n in (0..len).rev() {
            let b = n * 5;
            let i = b / 8;
            let j = b % 8;
            let lo = (bytes[i] as u16) >> j;
            let hi = if i + 1 < bytes.len() {
                (bytes[i + 1] as u16) << (8 - j)
            } else {
                0
            };
            s.push(ALPHABET[((lo | hi) & 0x1f) as usize] as char);
        }
        s
    }

    /// Decodes into exactly `N` bytes.
    pub fn decode<const N: usize>(s: &str) -> Result<[u8; N], NixFormatError> {
        let err = || NixFormatError::Nix32(s.to_string());
        if s.len() != encoded_len(N) {
            return Err(err());
        }
        let mut out = [0u8; N];
        for (n, c) in s.bytes().rev().enumerate() {
            let digit = ALPHABET.iter().position(|&a| a == c).ok_or_else(err)? as u16;
            let b = n * 5;
            let i = b / 8;
            let j = b % 8;
            out[i] |= (digit << j) as u8;
            let carry = digit >> (8 - j);
            if i + 1 < N {
                out[i + 1] |= carry as u8;
            } else if carry != 0 {
                return Err(err());
            }
        }
        Ok(out)
    }
}

/// The NAR (Nix ARchive) framing: every token is a little-endian u64 length, the
/// bytes, and zero padding to a multiple of 8. The file-system walk that uses it is
/// in `resolve::nix`; its output is always checked against the NAR hash Nix recorded.
pub mod nar {
    use std::io::{self, Write};

    /// The first token of every NAR.
    pub const MAGIC: &[u8] = b"nix-archive-1";

    /// Zero bytes that follow `len` bytes of data.
    pub fn padding(len: u64) -> usize {
        ((8 - (len % 8)) % 8) as usize
    }

    /// Writes a number token.
    pub fn write_u64<W: Write + ?Sized>(w: &mut W, n: u64) -> io::Result<()> {
        w.write_all(&n.to_le_bytes())
    }

    /// Writes the zero padding after `len` bytes of data.
    pub fn write_padding<W: Write + ?Sized>(w: &mut W, len: u64) -> io::Result<()> {
        w.write_all(&[0u8; 8][..padding(len)])
    }

    /// Writes a string token (length, bytes, padding).
    pub fn write_str<W: Write + ?Sized>(w: &mut W, s: &[u8]) -> io::Result<()> {
        write_u64(w, s.len() as u64)?;
        w.write_all(s)?;
        write_padding(w, s.len() as u64)
    }

    /// Writes several string tokens.
    pub fn write_strs<W: Write + ?Sized>(w: &mut W, ss: &[&[u8]]) -> io::Result<()> {
        ss.iter().try_for_each(|s| write_str(w, s))
    }
}

/// A sha256 NAR hash (the same 32 bytes as a [`Digest`], spelled Nix's way).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NarHash(pub [u8; 32]);

impl NarHash {
    /// Parses `sha256:<nix32>`, `sha256:<hex>` or the SRI form `sha256-<base64>`.
    pub fn parse(s: &str) -> Result<Self, NixFormatError> {
        let err = || NixFormatError::Hash(s.to_string());
        if let Some(rest) = s.strip_prefix("sha256:") {
            return match rest.len() {
                52 => Ok(NarHash(nix32::decode(rest)?)),
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
        let err = || NixFormatError::StorePath(s.to_string());
        let base = s
            .strip_prefix(STORE_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(err)?;
        let (hash, name) = base.split_at_checked(32).ok_or_else(err)?;
        let name = name.strip_prefix('-').ok_or_else(err)?;
        let hash_ok = hash.bytes().all(|c| nix32::ALPHABET.contains(&c));
        let name_ok = !name.is_empty()
            && name.len() <= 211
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c));
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

/// The text a Nix path signature covers:
/// `1;<path>;sha256:<nix32 nar hash>;<nar size>;<comma-separated full reference paths>`,
/// references sorted (Nix keeps them in a sorted set).
pub fn fingerprint(
    path: &StorePath,
    nar_hash: &NarHash,
    nar_size: u64,
    references: &[StorePath],
) -> String {
    let mut refs: Vec<&str> = references.iter().map(|r| r.as_str()).collect();
    refs.sort_unstable();
    refs.dedup();
    format!(
        "1;{path};{};{nar_size};{}",
        nar_hash.to_nix32_string(),
        refs.join(",")
    )
}

/// Signs a path's fingerprint the way `nix store sign` does (`name:base64`).
pub fn sign_path(key: &SecretKey, fingerprint: &str) -> String {
    key.sign(fingerprint.as_bytes()).to_string()
}

/// Whether any of `sigs` is a valid signature of `fingerprint` by `key`.
pub fn verify_path(key: &PublicKey, fingerprint: &str, sigs: &[String]) -> bool {
    sigs.iter()
        .filter_map(|s| Signature::parse(s).ok())
        .any(|s| key.verify(fingerprint.as_bytes(), &s))
}

/// Everything a binary cache's `.narinfo` says about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    /// The path.
    pub store_path: StorePath,
    /// Where the file is, relative to the cache root (`nar/<nix32>.nar.zst`).
    pub url: String,
    /// `zstd`, `xz`, `none`, …
    pub compression: String,
    /// sha256 of the file as stored.
    pub file_hash: NarHash,
    /// Its size.
    pub file_size: u64,
    /// sha256 of the NAR.
    pub nar_hash: NarHash,
    /// Size of the NAR.
    pub nar_size: u64,
    /// References (full paths).
    pub references: Vec<StorePath>,
    /// The derivation that built it, if known.
    pub deriver: Option<StorePath>,
    /// Signatures (`name:base64`).
    pub sigs: Vec<String>,
    /// Content address, if the path has one.
    pub ca: Option<String>,
}

impl NarInfo {
    /// The conventional URL of a compressed NAR: `nar/<nix32 file hash>.nar.<ext>`.
    pub fn nar_url(file_hash: &NarHash, ext: &str) -> String {
        format!("nar/{}.nar.{ext}", nix32::encode(&file_hash.0))
    }

    /// The narinfo text, field order as Nix writes it.
    pub fn to_text(&self) -> String {
        let mut refs: Vec<&str> = self.references.iter().map(|r| r.base_name()).collect();
        refs.sort_unstable();
        refs.dedup();
        let mut s = format!(
            "StorePath: {}\nURL: {}\nCompression: {}\nFileHash: {}\nFileSize: {}\nNarHash: {}\nNarSize: {}\nReferences: {}\n",
            self.store_path,
            self.url,
            self.compression,
            self.file_hash,
            self.file_size,
            self.nar_hash,
            self.nar_size,
            refs.join(" "),
        );
        if let Some(d) = &self.deriver {
            s.push_str(&format!("Deriver: {}\n", d.base_name()));
        }
        for sig in &self.sigs {
            s.push_str(&format!("Sig: {sig}\n"));
        }
        if let Some(ca) = &self.ca {
            s.push_str(&format!("CA: {ca}\n"));
        }
        s
    }
}

/// The `nix-cache-info` file of a binary cache holding `/nix/store` paths.
pub fn cache_info() -> &'static str {
    "StoreDir: /nix/store\n"
}

/// One entry of `nix path-info --json` (Nix 2.8 and later).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathInfoJson {
    /// The path.
    pub path: String,
    /// `false` for a path that is not valid (then nothing else is set).
    #[serde(default)]
    pub valid: Option<bool>,
    /// NAR hash in any of Nix's spellings (2.8 prints SRI).
    #[serde(default)]
    pub nar_hash: Option<String>,
    /// NAR size.
    #[serde(default)]
    pub nar_size: Option<u64>,
    /// References (full paths).
    #[serde(default)]
    pub references: Vec<String>,
    /// Deriver.
    #[serde(default)]
    pub deriver: Option<String>,
    /// Content address.
    #[serde(default)]
    pub ca: Option<String>,
    /// Signatures (Nix 2.8 calls the field `signatures`).
    #[serde(default, alias = "sigs")]
    pub signatures: Vec<String>,
}

/// A path's metadata, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// The path.
    pub path: StorePath,
    /// NAR hash.
    pub nar_hash: NarHash,
    /// NAR size.
    pub nar_size: u64,
    /// References, sorted, self-reference included when Nix lists it.
    pub references: Vec<StorePath>,
    /// Deriver.
    pub deriver: Option<StorePath>,
    /// Content address.
    pub ca: Option<String>,
    /// Signatures the path already carries.
    pub sigs: Vec<String>,
}

impl PathInfo {
    /// Its signature fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.path, &self.nar_hash, self.nar_size, &self.references)
    }
}

/// Why `nix path-info --json` output could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PathInfoError {
    /// Not the JSON shape Nix prints.
    #[error("unexpected `nix path-info --json` output: {0}")]
    Json(String),
    /// A path Nix says is not valid.
    #[error("`{0}` is not valid in the Nix store (build or fetch it first)")]
    Invalid(String),
    /// A field is malformed.
    #[error("`nix path-info` for `{path}`: {source}")]
    Field {
        /// The path.
        path: String,
        /// What is wrong.
        source: NixFormatError,
    },
}

/// Parses `nix path-info --json` output; every path must be valid.
pub fn parse_path_info(json: &[u8]) -> Result<Vec<PathInfo>, PathInfoError> {
    let raw: Vec<PathInfoJson> =
        serde_json::from_slice(json).map_err(|e| PathInfoError::Json(e.to_string()))?;
    raw.into_iter()
        .map(|p| {
            let field = |source| PathInfoError::Field {
                path: p.path.clone(),
                source,
            };
            if p.valid == Some(false) {
                return Err(PathInfoError::Invalid(p.path.clone()));
            }
            let path = StorePath::parse(&p.path).map_err(field)?;
            let nar_hash = NarHash::parse(p.nar_hash.as_deref().unwrap_or("")).map_err(field)?;
            let nar_size = p
                .nar_size
                .ok_or_else(|| PathInfoError::Json(format!("`{}` has no narSize", p.path)))?;
            let mut references = p
                .references
                .iter()
                .map(|r| StorePath::parse(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(field)?;
            references.sort();
            references.dedup();
            let deriver = p
                .deriver
                .as_deref()
                .filter(|d| !d.is_empty())
                .map(StorePath::parse)
                .transpose()
                .map_err(field)?;
            Ok(PathInfo {
                path,
                nar_hash,
                nar_size,
                references,
                deriver,
                ca: p.ca.clone().filter(|c| !c.is_empty()),
                sigs: p.signatures.clone(),
            })
        })
        .collect()
}

/// Orders a set of paths so that every path comes after its references, and gives
/// each its depth (0 for a path with no references but itself; otherwise one more
/// than its deepest reference). Ties are broken by path, so the order is stable.
/// `known_elsewhere` says whether a reference outside the set is acceptable (already
/// valid on the target); any other missing reference is an error.
pub fn closure_order(
    refs: &BTreeMap<StorePath, Vec<StorePath>>,
    known_elsewhere: impl Fn(&StorePath) -> bool,
) -> Result<Vec<(StorePath, u32)>, NixFormatError> {
    let mut depth: BTreeMap<&StorePath, u32> = BTreeMap::new();
    for (p, rs) in refs {
        for r in rs {
            if r != p && !refs.contains_key(r) && !known_elsewhere(r) {
                return Err(NixFormatError::MissingReference {
                    path: p.to_string(),
                    reference: r.to_string(),
                });
            }
        }
    }
    // Iterative depth-first search; `on_stack` detects cycles.
    let mut on_stack: BTreeSet<&StorePath> = BTreeSet::new();
    for start in refs.keys() {
        if depth.contains_key(start) {
            continue;
        }
        let mut stack: Vec<(&StorePath, usize)> = vec![(start, 0)];
        on_stack.insert(start);
        while let Some((p, next)) = stack.pop() {
            let rs = &refs[p];
            let pending = rs[next..]
                .iter()
                .position(|r| r != p && refs.contains_key(r) && !depth.contains_key(r));
            match pending {
                Some(k) => {
                    let r = &rs[next + k];
                    if on_stack.contains(r) {
                        return Err(NixFormatError::Cycle(r.to_string()));
                    }
                    stack.push((p, next + k + 1));
                    stack.push((r, 0));
                    on_stack.insert(r);
                }
                None => {
                    let d = rs
                        .iter()
                        .filter(|r| *r != p)
                        .filter_map(|r| depth.get(r))
                        .map(|d| d + 1)
                        .max()
                        .unwrap_or(0);
                    depth.insert(p, d);
                    on_stack.remove(p);
                }
            }
        }
    }
    let mut out: Vec<(StorePath, u32)> = depth.into_iter().map(|(p, d)| (p.clone(), d)).collect();
    out.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    Ok(out)
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

    // Computed by the real Nix 2.8: `echo -n hello | sha256sum` is 2cf24d…9824 and
    // `nix hash to-base32 --type sha256 2cf24dba…9824` prints this.
    const HELLO_HEX: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const HELLO_NIX32: &str = "094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic";
    // `nix path-info --json` (SRI) and the narinfo Nix accepted for the same NAR.
    const NAR_SRI: &str = "sha256-H9iWrazNxp1ESVSXxMQ/1AZsRuXprxoOg7NJPhQ+6vU=";
    const NAR_NIX32: &str = "sha256:1xga7qa3wjdkhc71mbz9wm36q1nl7z2c95sl9529vindmjnrdn0z";

    #[test]
    fn nix32_matches_the_real_nix() {
        let d = Digest::from_hex(HELLO_HEX).unwrap();
        assert_eq!(nix32::encode(d.as_bytes()), HELLO_NIX32);
        assert_eq!(nix32::decode::<32>(HELLO_NIX32).unwrap(), *d.as_bytes());
        let mut one = [0u8; 32];
        one[31] = 1;
        // `nix hash to-base32 --type sha256 000…01`
        assert_eq!(
            nix32::encode(&one),
            "0080000000000000000000000000000000000000000000000000"
        );
        assert_eq!(NarHash::parse(NAR_SRI).unwrap().to_string(), NAR_NIX32);
        assert_eq!(
            NarHash::parse(&format!("sha256:{HELLO_HEX}")).unwrap(),
            NarHash::parse(&format!("sha256:{HELLO_NIX32}")).unwrap()
        );
    }

    #[test]
    fn nix32_refuses_bad_input_without_panicking() {
        for bad in [
            "",
            "e",
            &"z".repeat(52),
            &"0".repeat(51),
            "094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwi!",
        ] {
            assert!(nix32::decode::<32>(bad).is_err(), "{bad}");
        }
        assert!(NarHash::parse("md5:abc").is_err());
        assert!(NarHash::parse("sha256-AAAA").is_err());
    }

    #[test]
    fn nar_of_a_file_matches_nix() {
        // `nix-store --dump` of a file holding "base\n" (the `base` output of the
        // test flake), whose NarHash Nix 2.8 reported as NAR_SRI above.
        let mut v = Vec::new();
        nar::write_str(&mut v, nar::MAGIC).unwrap();
        nar::write_strs(&mut v, &[b"(", b"type", b"regular", b"contents"]).unwrap();
        nar::write_str(&mut v, b"base\n").unwrap();
        nar::write_str(&mut v, b")").unwrap();
        assert_eq!(v.len(), 120);
        assert_eq!(Digest::of(&v), NarHash::parse(NAR_SRI).unwrap().digest());
    }

    #[test]
    fn nix32_round_trips() {
        for n in 0u8..=255 {
            let bytes = [n.wrapping_mul(37); 32].map(|b| b ^ n);
            assert_eq!(nix32::decode::<32>(&nix32::encode(&bytes)).unwrap(), bytes);
        }
        let bytes20 = [0xabu8; 20];
        assert_eq!(nix32::encoded_len(20), 32);
        assert_eq!(
            nix32::decode::<20>(&nix32::encode(&bytes20)).unwrap(),
            bytes20
        );
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
            "/nix/storex/npsly8l2kja0f1kchz7hwdkdihfg8759-a",
            "/nix/store/short-a",
            "/nix/store/é",
        ] {
            assert!(StorePath::parse(bad).is_err(), "{bad}");
        }
    }

    fn sp(h: char, name: &str) -> StorePath {
        StorePath::parse(&format!("/nix/store/{}-{name}", h.to_string().repeat(32))).unwrap()
    }

    #[test]
    fn fingerprint_and_narinfo_are_nix_shaped() {
        let p = sp('a', "app");
        let r = vec![sp('c', "lib"), sp('b', "base"), p.clone()];
        let h = NarHash::parse(NAR_NIX32).unwrap();
        assert_eq!(
            fingerprint(&p, &h, 120, &r),
            format!(
                "1;{p};{NAR_NIX32};120;{p},/nix/store/{}-base,/nix/store/{}-lib",
                "b".repeat(32),
                "c".repeat(32)
            )
        );
        let info = NarInfo {
            store_path: p.clone(),
            url: NarInfo::nar_url(&h, "zst"),
            compression: "zstd".into(),
            file_hash: h,
            file_size: 93,
            nar_hash: h,
            nar_size: 120,
            references: vec![],
            deriver: Some(sp('d', "app.drv")),
            sigs: vec!["k:sig".into()],
            ca: None,
        };
        assert_eq!(
            info.to_text(),
            format!(
                "StorePath: {p}\nURL: nar/1xga7qa3wjdkhc71mbz9wm36q1nl7z2c95sl9529vindmjnrdn0z.nar.zst\nCompression: zstd\nFileHash: {NAR_NIX32}\nFileSize: 93\nNarHash: {NAR_NIX32}\nNarSize: 120\nReferences: \nDeriver: {}-app.drv\nSig: k:sig\n",
                "d".repeat(32)
            )
        );
    }

    #[test]
    fn path_signatures_verify_with_the_public_key() {
        let k = SecretKey::from_seed("k", [3; 32]).unwrap();
        let other = SecretKey::from_seed("k", [4; 32]).unwrap();
        let fp = fingerprint(&sp('a', "x"), &NarHash([1; 32]), 5, &[]);
        let sig = sign_path(&k, &fp);
        assert!(verify_path(&k.public(), &fp, std::slice::from_ref(&sig)));
        assert!(!verify_path(
            &other.public(),
            &fp,
            std::slice::from_ref(&sig)
        ));
        assert!(!verify_path(&k.public(), &format!("{fp}x"), &[sig]));
    }

    #[test]
    fn path_info_json_from_nix_2_8() {
        let json = br#"[{"path":"/nix/store/npsly8l2kja0f1kchz7hwdkdihfg8759-base","narHash":"sha256-H9iWrazNxp1ESVSXxMQ/1AZsRuXprxoOg7NJPhQ+6vU=","narSize":120,"references":[],"deriver":"/nix/store/7wz5ipjw5ylqxz24bcf6d06j4jb97gkn-base.drv","registrationTime":1795495625,"ultimate":true},{"path":"/nix/store/hnilzb3v4y6sfd0qaclqn4plzdwrrh2y-source","narHash":"sha256-Tz8ERKjIVGVkIObT7meINV2q0FxJk88kGSP5kN+gezY=","narSize":704,"references":[],"ca":"fixed:r:sha256:0dkvl3gr1y9334jcz4s9bk8alp9mi1kyxlz641j6am68m1208gsg","signatures":["k:abc"]}]"#;
        let v = parse_path_info(json).unwrap();
        assert_eq!(v[0].nar_hash.to_string(), NAR_NIX32);
        assert_eq!(v[0].deriver.as_ref().unwrap().name(), "base.drv");
        assert_eq!(v[1].sigs, vec!["k:abc".to_string()]);
        assert!(v[1].ca.as_deref().unwrap().starts_with("fixed:r:"));
        let invalid =
            br#"[{"path":"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x","valid":false}]"#;
        assert!(matches!(
            parse_path_info(invalid),
            Err(PathInfoError::Invalid(_))
        ));
        assert!(parse_path_info(b"{").is_err());
    }

    #[test]
    fn closure_order_puts_references_first() {
        let (base, lib, a, b) = (sp('a', "base"), sp('b', "lib"), sp('c', "a"), sp('d', "b"));
        let mut refs = BTreeMap::new();
        refs.insert(b.clone(), vec![base.clone(), lib.clone()]);
        refs.insert(a.clone(), vec![lib.clone(), a.clone()]);
        refs.insert(lib.clone(), vec![base.clone()]);
        refs.insert(base.clone(), vec![]);
        let order = closure_order(&refs, |_| false).unwrap();
        assert_eq!(
            order,
            vec![
                (base.clone(), 0),
                (lib.clone(), 1),
                (a.clone(), 2),
                (b.clone(), 2)
            ]
        );
        refs.remove(&base);
        let e = closure_order(&refs, |_| false).unwrap_err();
        assert!(matches!(e, NixFormatError::MissingReference { .. }), "{e}");
        assert_eq!(closure_order(&refs, |p| *p == base).unwrap().len(), 3);
        refs.insert(base.clone(), vec![a.clone()]);
        assert!(matches!(
            closure_order(&refs, |_| false),
            Err(NixFormatError::Cycle(_))
        ));
    }
}
