//! The `.narinfo` text a binary cache serves for each path, and `nix-cache-info`.
//!
//! A narinfo is line-based `Key: value` text that Nix trusts as far as its
//! signature goes, and the signature does not cover every line (not `CA`, `URL`,
//! `FileHash`, …). A value with a newline in it would therefore add a line Nix reads
//! as its own: a second `NarHash`, say. Values taken from a bundle are hostile, so
//! [`NarInfo::to_text`] writes no field that is not of its grammar, and
//! [`validate_ca`] is there for whoever checks a bundle's metadata first.

use super::{nix32, shown, validate_path_signature, NarHash, NixFormatError, StorePath};

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

    /// The narinfo text, field order as Nix writes it. Refuses (naming the field) a
    /// URL, compression, signature or content address that is not of its grammar,
    /// so that no value can add a line of its own.
    pub fn to_text(&self) -> Result<String, NixFormatError> {
        let field = |field: &'static str, value: &str| NixFormatError::NarInfoField {
            field,
            value: shown(value),
        };
        if !valid_url(&self.url) {
            return Err(field("URL", &self.url));
        }
        let compression_ok = !self.compression.is_empty()
            && self.compression.len() <= 32
            && self
                .compression
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !compression_ok {
            return Err(field("Compression", &self.compression));
        }
        for sig in &self.sigs {
            validate_path_signature(sig).map_err(|_| field("Sig", sig))?;
        }
        if let Some(ca) = &self.ca {
            validate_ca(ca).map_err(|_| field("CA", ca))?;
        }
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
        Ok(s)
    }
}

/// A URL relative to the cache root, as Nix resolves it: `/`-separated components
/// of `[A-Za-z0-9+._-]`, none empty, `.` or `..`.
fn valid_url(url: &str) -> bool {
    !url.is_empty()
        && url.len() <= 400
        && url.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b))
        })
}

/// Checks a content address as Nix 2.8 writes one (`nix path-info --json`, the
/// `CA:` line of a narinfo): `text:sha256:<nix32>`, or `fixed:` then optionally `r:`
/// then `md5:`, `sha1:`, `sha256:` or `sha512:` and the hash in Nix base-32 of that
/// algorithm's length. Anything else, or anything around it, is refused.
pub fn validate_ca(ca: &str) -> Result<(), NixFormatError> {
    let err = || NixFormatError::ContentAddress(shown(ca));
    let hash_ok = |h: &str| match h.split_once(':') {
        Some(("md5", v)) => nix32::is_encoding_of::<16>(v),
        Some(("sha1", v)) => nix32::is_encoding_of::<20>(v),
        Some(("sha256", v)) => nix32::is_encoding_of::<32>(v),
        Some(("sha512", v)) => nix32::is_encoding_of::<64>(v),
        _ => false,
    };
    let ok = if let Some(h) = ca.strip_prefix("text:") {
        h.starts_with("sha256:") && hash_ok(h)
    } else if let Some(h) = ca.strip_prefix("fixed:") {
        hash_ok(h.strip_prefix("r:").unwrap_or(h))
    } else {
        false
    };
    if ok {
        Ok(())
    } else {
        Err(err())
    }
}

/// What a `.narinfo` says that identifies its path's content: the path, the NAR
/// hash and the file's URL. Enough to tell whether a binary cache holds a path
/// with a given NAR hash (an inventory, a delta's check), without trusting any
/// other line of a file that may have come from anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfoIdentity {
    /// `StorePath:`.
    pub store_path: StorePath,
    /// `NarHash:`.
    pub nar_hash: NarHash,
    /// `URL:`, relative to the cache root.
    pub url: String,
}

impl NarInfoIdentity {
    /// Reads the three lines from a narinfo's text; `None` when one is missing or
    /// malformed, or the URL is not one relative to the cache (see `valid_url`).
    pub fn parse(text: &str) -> Option<Self> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
                .map(str::trim)
        };
        let url = field("URL")?;
        if !valid_url(url) {
            return None;
        }
        Some(NarInfoIdentity {
            store_path: StorePath::parse(field("StorePath")?).ok()?,
            nar_hash: NarHash::parse(field("NarHash")?).ok()?,
            url: url.to_string(),
        })
    }
}

/// The `nix-cache-info` file of a binary cache holding `/nix/store` paths.
pub fn cache_info() -> &'static str {
    "StoreDir: /nix/store\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAR_NIX32: &str = "sha256:1xga7qa3wjdkhc71mbz9wm36q1nl7z2c95sl9529vindmjnrdn0z";
    // From `nix path-info --json` of a flake source (Nix 2.8).
    const REAL_CA: &str = "fixed:r:sha256:0dkvl3gr1y9334jcz4s9bk8alp9mi1kyxlz641j6am68m1208gsg";

    fn sp(h: char, name: &str) -> StorePath {
        StorePath::parse(&format!("/nix/store/{}-{name}", h.to_string().repeat(32))).unwrap()
    }

    fn info() -> NarInfo {
        let h = NarHash::parse(NAR_NIX32).unwrap();
        NarInfo {
            store_path: sp('a', "app"),
            url: NarInfo::nar_url(&h, "zst"),
            compression: "zstd".into(),
            file_hash: h,
            file_size: 93,
            nar_hash: h,
            nar_size: 120,
            references: vec![],
            deriver: Some(sp('d', "app.drv")),
            sigs: vec![],
            ca: None,
        }
    }

    #[test]
    fn a_narinfo_says_which_path_and_nar_it_holds() {
        let p = "/nix/store/094qif9n4cq4fdg459qzbhg1c6wywaww-a";
        let text = format!("StorePath: {p}\nURL: nar/x.nar.zst\nCompression: zstd\nNarHash: {NAR_NIX32}\nNarSize: 3\n");
        let id = NarInfoIdentity::parse(&text).unwrap();
        assert_eq!(id.store_path.as_str(), p);
        assert_eq!(id.nar_hash.to_string(), NAR_NIX32);
        assert_eq!(id.url, "nar/x.nar.zst");
        for url in ["/etc/passwd", "nar/../../x", "", "nar//x"] {
            let t = text.replace("nar/x.nar.zst", url);
            assert!(NarInfoIdentity::parse(&t).is_none(), "{url}");
        }
        assert!(NarInfoIdentity::parse(&text.replace(NAR_NIX32, "sha256:x")).is_none());
    }

    #[test]
    fn narinfo_is_nix_shaped() {
        let k = crate::bundle::keys::SecretKey::from_seed("k", [1; 32]).unwrap();
        let sig = super::super::sign_path(&k, "1;x");
        let mut info = info();
        info.sigs = vec![sig.clone()];
        info.ca = Some(REAL_CA.into());
        assert_eq!(
            info.to_text().unwrap(),
            format!(
                "StorePath: {}\nURL: nar/1xga7qa3wjdkhc71mbz9wm36q1nl7z2c95sl9529vindmjnrdn0z.nar.zst\nCompression: zstd\nFileHash: {NAR_NIX32}\nFileSize: 93\nNarHash: {NAR_NIX32}\nNarSize: 120\nReferences: \nDeriver: {}-app.drv\nSig: {sig}\nCA: {REAL_CA}\n",
                info.store_path,
                "d".repeat(32)
            )
        );
    }

    // Issue 11 item 10: a newline in meta.ca or meta.sigs went verbatim into the
    // narinfo, and Nix read the injected NarHash.
    #[test]
    fn no_field_can_inject_a_line() {
        let injected = format!("\nNarHash: sha256:{}", "0".repeat(52));
        let mut with_ca = info();
        with_ca.ca = Some(format!("{REAL_CA}{injected}"));
        assert!(matches!(
            with_ca.to_text(),
            Err(NixFormatError::NarInfoField { field: "CA", .. })
        ));
        let mut with_sig = info();
        with_sig.sigs = vec![format!("k:{}{injected}", "A".repeat(86) + "==")];
        assert!(matches!(
            with_sig.to_text(),
            Err(NixFormatError::NarInfoField { field: "Sig", .. })
        ));
        for url in ["../nar/x.nar", "/etc/x", "nar//x", "nar/x\ny", "nar/ x", ""] {
            let mut i = info();
            i.url = url.into();
            assert!(
                matches!(
                    i.to_text(),
                    Err(NixFormatError::NarInfoField { field: "URL", .. })
                ),
                "{url:?}"
            );
        }
        let mut i = info();
        i.compression = "zstd\nCA: x".into();
        assert!(i.to_text().is_err());
        // The error shows the value with its control characters escaped.
        let e = with_ca.to_text().unwrap_err().to_string();
        assert!(!e.contains('\n') && e.contains("\\n"), "{e}");
    }

    #[test]
    fn content_addresses_follow_nix_grammar() {
        let h32 = "0dkvl3gr1y9334jcz4s9bk8alp9mi1kyxlz641j6am68m1208gsg";
        for good in [
            REAL_CA.to_string(),
            format!("fixed:sha256:{h32}"),
            format!("text:sha256:{h32}"),
            format!("fixed:sha1:{}", "0".repeat(32)),
            format!("fixed:r:md5:{}", "0".repeat(26)),
            format!("fixed:sha512:{}", "0".repeat(103)),
        ] {
            validate_ca(&good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            String::new(),
            format!("text:sha1:{}", "0".repeat(32)),
            format!("fixed:r:sha256:{h32}\n"),
            format!("fixed:r:sha256:{h32} "),
            format!("fixed:r:r:sha256:{h32}"),
            format!("fixed:sha256:{}", "z".repeat(52)),
            format!("fixed:sha256:{}", &h32[1..]),
            "fixed:git:sha1:abc".to_string(),
            format!("FIXED:sha256:{h32}"),
        ] {
            assert!(validate_ca(&bad).is_err(), "{bad:?}");
        }
    }
}
