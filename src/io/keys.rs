//! Key files on disk: secret keys to sign with, public keys to trust.
//!
//! The key formats are pure (`bundle::keys`); this is where they meet the file
//! system, in one place shared by `create`, `verify`, `import` and the Nix importer.

use std::path::Path;

use anyhow::Context;
use fs_err as fs;

use crate::bundle::keys::{PublicKey, SecretKey};

/// Reads a secret key file.
pub fn load_secret_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text = fs::read_to_string(path)?;
    SecretKey::parse(&text)
        .with_context(|| format!("{} is not a usable secret key", path.display()))
}

/// Reads trusted public keys from files or directories. A file may hold several keys,
/// one per line (`#` starts a comment), so a `trusted-public-keys` list pasted from
/// nix.conf one per line works too. In a directory every regular file is read.
pub fn load_public_keys(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for p in paths {
        let meta = fs::metadata(p)?;
        let files: Vec<std::path::PathBuf> = if meta.is_dir() {
            let mut v: Vec<_> = fs::read_dir(p)?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            v
        } else {
            vec![p.clone()]
        };
        for f in files {
            let text = fs::read_to_string(&f)?;
            for (i, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                for word in line.split_whitespace() {
                    let k = PublicKey::parse(word)
                        .with_context(|| format!("{}:{}: not a public key", f.display(), i + 1))?;
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
        }
    }
    Ok(keys)
}
