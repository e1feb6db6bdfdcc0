//! Key files on disk: secret keys to sign with, public keys to trust.
//!
//! The key formats are pure (`bundle::keys`); this is where they meet the file
//! system, in one place shared by `create`, `verify`, `import` and the Nix importer.
//! A key file is read with a size bound (`--trust /dev/zero` must not fill memory),
//! and a file in a `--trust` folder that is not a key file is skipped and named in a
//! warning instead of stopping the check: a folder of keys collects strays (a
//! README, an editor's backup), and the keys that are there still decide. A file
//! named on the command line is taken at its word: if it is not a key file, that is
//! an input error (exit code 4) naming it.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fs_err as fs;

use crate::bundle::keys::{KeyError, PublicKey, SecretKey};
use crate::error::InputFailure;

/// Largest secret key file read (a key is under 200 bytes).
pub const MAX_SECRET_KEY_FILE: u64 = 64 << 10;
/// Largest public key file read: room for thousands of keys, one per line.
pub const MAX_PUBLIC_KEY_FILE: u64 = 1 << 20;

/// Why a file is not a key file.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Larger than any key file.
    #[error("{path} is not a key file: it is larger than {max} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound.
        max: u64,
    },
    /// Not UTF-8 text.
    #[error("{path} is not a key file: it is not text")]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// A line that is not a key.
    #[error("{path}:{line}: not a {what}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// `public key` or `secret key`.
        what: &'static str,
        /// Why.
        source: KeyError,
    },
    /// No key in it at all.
    #[error("{path} holds no public key")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

impl crate::error::Classify for KeyFileError {
    /// A file given as a key that is not one is bad input.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        Some(crate::error::ErrorClass::Input)
    }
}

/// Reads a text file of at most `max` bytes; input errors name the file.
fn read_bounded(path: &Path, max: u64) -> anyhow::Result<Result<String, KeyFileError>> {
    let f = fs::File::open(path)?;
    let mut bytes = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > max {
        return Ok(Err(KeyFileError::TooLarge {
            path: path.to_path_buf(),
            max,
        }));
    }
    Ok(String::from_utf8(bytes).map_err(|_| KeyFileError::NotText {
        path: path.to_path_buf(),
    }))
}

/// Reads a secret key file. A file that is not one is bad input (exit code 4),
/// named in the error.
pub fn load_secret_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text = read_bounded(path, MAX_SECRET_KEY_FILE)?
        .map_err(|e| InputFailure(format!("{e}: pass a secret key file (`gapbundle key generate` or `nix key generate-secret` makes one)")))?;
    SecretKey::parse(&text)
        .map_err(|source| KeyFileError::BadKey {
            path: path.to_path_buf(),
            line: 1,
            what: "secret key",
            source,
        })
        .with_context(|| format!("{} is not a usable secret key", path.display()))
}

/// The public keys in one file's text: one or more per line, `#` starts a comment.
fn parse_public_keys(path: &Path, text: &str) -> Result<Vec<PublicKey>, KeyFileError> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        for word in line.split_whitespace() {
            let k = PublicKey::parse(word).map_err(|source| KeyFileError::BadKey {
                path: path.to_path_buf(),
                line: i + 1,
                what: "public key",
                source,
            })?;
            keys.push(k);
        }
    }
    if keys.is_empty() {
        return Err(KeyFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(keys)
}

/// Reads trusted public keys from files or directories. A file may hold several keys,
/// one per line (`#` starts a comment), so a `trusted-public-keys` list pasted from
/// nix.conf one per line works too. In a directory every regular file is read; one
/// that is not a key file (not text, too large, a line that is no key, no key at
/// all) is skipped and named through `warn`. A file given directly that is not a
/// key file is an input error.
pub fn load_public_keys(
    paths: &[PathBuf],
    mut warn: impl FnMut(String),
) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for p in paths {
        let meta = fs::metadata(p)?;
        let (files, in_dir) = if meta.is_dir() {
            let mut v = Vec::new();
            for e in fs::read_dir(p)? {
                let path = e?.path();
                if path.is_file() {
                    v.push(path);
                } else if !path.is_dir() {
                    warn(format!(
                        "skipping {} in the --trust folder: not a regular file",
                        path.display()
                    ));
                }
            }
            v.sort();
            (v, true)
        } else {
            (vec![p.clone()], false)
        };
        for f in files {
            let parsed = read_bounded(&f, MAX_PUBLIC_KEY_FILE)?
                .and_then(|text| parse_public_keys(&f, &text));
            match parsed {
                Ok(found) => {
                    for k in found {
                        if !keys.contains(&k) {
                            keys.push(k);
                        }
                    }
                }
                Err(e) if in_dir => {
                    warn(format!("skipping a file in the --trust folder: {e}"));
                }
                Err(e) => return Err(InputFailure(e.to_string()).into()),
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUB: &str = "test-1:87WpMQ44nnrnXMc0o9pDpJOhWA5lGa5GPbec4D0Xt4Y=";

    // Issue 11 item 13: `--trust /dev/zero` grew memory without bound.
    #[test]
    fn an_endless_file_is_refused_after_the_bound() {
        let e = load_public_keys(&[PathBuf::from("/dev/zero")], |_| {}).unwrap_err();
        assert!(e.to_string().contains("/dev/zero"), "{e}");
        assert!(e.is::<InputFailure>(), "{e:?}");
        let e = load_secret_key(Path::new("/dev/zero")).unwrap_err();
        assert!(e.is::<InputFailure>(), "{e:?}");
    }

    // Issue 11 item 13: one binary file in a --trust folder aborted verify.
    #[test]
    fn a_stray_file_in_a_folder_is_skipped_and_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.pub"), format!("{PUB}\n")).unwrap();
        fs::write(dir.path().join("b.bin"), [0xff, 0xfe, 0, 1]).unwrap();
        fs::write(dir.path().join("c.txt"), "not a key\n").unwrap();
        let mut warnings = Vec::new();
        let keys = load_public_keys(&[dir.path().to_path_buf()], |w| warnings.push(w)).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("b.bin") && warnings[0].contains("not text"));
        assert!(warnings[1].contains("c.txt:1"), "{warnings:?}");
        // Named directly, the same file is an input error naming it.
        let e = load_public_keys(&[dir.path().join("b.bin")], |_| {}).unwrap_err();
        assert!(
            e.is::<InputFailure>() && e.to_string().contains("b.bin"),
            "{e}"
        );
    }

    // Issue 11 item 17: a garbage --key exited 1, not 4.
    #[test]
    fn a_garbage_secret_key_is_an_input_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("k.sec");
        fs::write(&bin, [0x80, 0x81, 0x82]).unwrap();
        let e = load_secret_key(&bin).unwrap_err();
        assert!(
            e.is::<InputFailure>() && format!("{e:#}").contains("k.sec"),
            "{e:#}"
        );
        fs::write(&bin, "k:AAAA\n").unwrap();
        let e = load_secret_key(&bin).unwrap_err();
        assert!(
            e.chain().any(|c| c.is::<KeyError>()) && format!("{e:#}").contains("k.sec"),
            "{e:#}"
        );
    }
}
