//! The lock file: every input resolved to a digest.
//!
//! Tags move; digests do not. `create` records what each spec entry resolved to, and
//! later creates reuse it, so rebuilding a bundle from the same spec and lock gives
//! the same bytes and needs no registry at all when the cache is warm. `--locked`
//! turns any difference into an error, which is what a CI job wants. The file is
//! canonical JSON so that it diffs cleanly and its digest is stable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bundle::canonical;
use crate::bundle::Digest;

/// Lock format version.
pub const LOCK_VERSION: u64 = 1;

/// One locked image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockedImage {
    /// The name the image has in the bundle.
    pub name: String,
    /// Digest of its root (index or manifest).
    pub digest: Digest,
    /// Media type of the root.
    pub media_type: String,
}

/// The lock file.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lock {
    /// Format version.
    pub lock_version: u64,
    /// Images keyed by their source (see `ImageSource::lock_key`).
    pub images: BTreeMap<String, LockedImage>,
    /// Nix installables and store paths, keyed by the spec entry (owned by `resolve::nix`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nix: BTreeMap<String, serde_json::Value>,
    /// Pulled charts (version and digest), keyed by the spec entry (owned by the chart
    /// resolver, `resolve::k8s`): `repo:URL#NAME@VERSION` or `oci:REF@VERSION`, where
    /// VERSION is the spec's version (constraint), or `*` when it gives none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub charts: BTreeMap<String, LockedChart>,
}

/// One pulled chart, pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockedChart {
    /// The exact chart version pulled.
    pub version: String,
    /// sha256 of the chart archive (`.tgz`).
    pub digest: Digest,
}

/// Why a lock file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Bad JSON or schema.
    #[error("{path}: not a valid lock file ({reason}); delete it to resolve everything again")]
    Malformed {
        /// Lock path.
        path: String,
        /// Parser message.
        reason: String,
    },
}

impl crate::error::Classify for LockError {
    /// A lock file that cannot be used is bad input.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        Some(crate::error::ErrorClass::Input)
    }
}

impl Lock {
    /// An empty lock.
    pub fn new() -> Self {
        Lock {
            lock_version: LOCK_VERSION,
            ..Default::default()
        }
    }

    /// Parses a lock file.
    pub fn parse(path: &str, bytes: &[u8]) -> Result<Self, LockError> {
        let lock: Lock = serde_json::from_slice(bytes).map_err(|e| LockError::Malformed {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        if lock.lock_version != LOCK_VERSION {
            return Err(LockError::Malformed {
                path: path.to_string(),
                reason: format!("lockVersion {} is not {LOCK_VERSION}", lock.lock_version),
            });
        }
        Ok(lock)
    }

    /// What differs between this lock and `newer`, one line per entry, for a
    /// `--locked` refusal that says exactly what would change.
    pub fn differences(&self, newer: &Lock) -> Vec<String> {
        fn section<T: Serialize + PartialEq>(
            name: &str,
            old: &BTreeMap<String, T>,
            new: &BTreeMap<String, T>,
            out: &mut Vec<String>,
        ) {
            let show = |v: &T| serde_json::to_string(v).unwrap_or_default();
            for (k, o) in old {
                match new.get(k) {
                    None => out.push(format!("{name} `{k}`: in the lock, no longer in the spec")),
                    Some(n) if n != o => out.push(format!(
                        "{name} `{k}`: locked as {}, now {}",
                        show(o),
                        show(n)
                    )),
                    _ => {}
                }
            }
            for k in new.keys().filter(|k| !old.contains_key(*k)) {
                out.push(format!("{name} `{k}`: in the spec, not in the lock"));
            }
        }
        let mut out = Vec::new();
        section("images", &self.images, &newer.images, &mut out);
        section("nix", &self.nix, &newer.nix, &mut out);
        section("charts", &self.charts, &newer.charts, &mut out);
        out
    }

    /// Canonical bytes, with a final newline for editors.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = canonical::to_vec(self).expect("lock has no floats");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_every_changed_added_and_dropped_entry() {
        let img = |name: &str| LockedImage {
            name: name.into(),
            digest: Digest::of(b"x"),
            media_type: "m".into(),
        };
        let mut old = Lock::new();
        old.images.insert("layout:a".into(), img("example/a:1"));
        old.images.insert("ref:gone".into(), img("gone"));
        let mut new = Lock::new();
        new.images.insert("layout:a".into(), img("example/b:1"));
        new.images.insert("ref:new".into(), img("new"));
        let d = old.differences(&new);
        assert_eq!(d.len(), 3, "{d:#?}");
        assert!(
            d[0].contains("layout:a") && d[0].contains("example/b:1"),
            "{d:#?}"
        );
        assert!(d[1].contains("ref:gone") && d[1].contains("no longer in the spec"));
        assert!(d[2].contains("ref:new") && d[2].contains("not in the lock"));
        assert!(old.differences(&old.clone()).is_empty());
    }
}
