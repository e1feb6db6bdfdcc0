//! The lock file: every input resolved to a digest.
//!
//! Tags move; digests do not. `create` records what each spec entry resolved to, and
//! later creates reuse it, so rebuilding a bundle from the same spec and lock gives
//! the same bytes and needs no registry at all when the cache is warm. `--locked`
//! turns any difference into an error, which is what a CI job wants. The file is
//! canonical JSON laid out one member a line ([`canonical::to_vec_pretty`]: sorted
//! keys, two-space indentation), so that it is read and diffed in review, and still
//! the same bytes from run to run. Locks written before, in the compact canonical
//! form, are read as they are (any JSON layout is), and `create` keeps one that
//! still pins exactly what it resolved in the layout it has.

use std::collections::{BTreeMap, BTreeSet};

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
    /// The digests of the referrers found for it (format.md section 18), when the
    /// spec asks for them: sorted, each once, and left out when there are none, so
    /// that a lock written before referrers were pinned reads as the same value.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub referrers: BTreeSet<Digest>,
}

impl LockedImage {
    /// The referrers `newer` has that this entry lacks, and those it no longer has.
    pub fn referrers_changed(&self, newer: &BTreeSet<Digest>) -> (Vec<Digest>, Vec<Digest>) {
        (
            newer.difference(&self.referrers).copied().collect(),
            self.referrers.difference(newer).copied().collect(),
        )
    }
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

    /// The images and charts whose pins move from this lock to `newer` (what
    /// `create --update` did): one entry per lock key present in both with another
    /// digest, or, for an image, another set of referrers.
    pub fn moved(&self, newer: &Lock) -> Vec<Moved> {
        let mut out = Vec::new();
        for (k, o) in &self.images {
            if let Some(n) = newer.images.get(k) {
                let (added, removed) = o.referrers_changed(&n.referrers);
                if n.digest != o.digest || !added.is_empty() || !removed.is_empty() {
                    out.push(Moved {
                        key: k.clone(),
                        name: n.name.clone(),
                        from: o.digest,
                        to: n.digest,
                        referrers_added: added,
                        referrers_removed: removed,
                    });
                }
            }
        }
        for (k, o) in &self.charts {
            if let Some(n) = newer.charts.get(k) {
                if n.digest != o.digest {
                    out.push(Moved {
                        key: k.clone(),
                        name: format!("{} -> {}", o.version, n.version),
                        from: o.digest,
                        to: n.digest,
                        referrers_added: Vec::new(),
                        referrers_removed: Vec::new(),
                    });
                }
            }
        }
        out
    }

    /// The file's bytes: the canonical JSON laid out one member a line, and a
    /// final newline for editors.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = canonical::to_vec_pretty(self).expect("lock has no floats");
        v.push(b'\n');
        v
    }
}

/// A pin that moved (`--update`): a tag that now names another image, a chart
/// version constraint that now picks another archive, an image whose referrers
/// (signatures added or withdrawn upstream) are not the ones pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Moved {
    /// The lock key (`ref:registry.example/team/app:1.2`).
    pub key: String,
    /// The image's name in the bundle; for a chart, `old version -> new version`.
    pub name: String,
    /// The digest it was pinned to.
    pub from: Digest,
    /// The digest it is pinned to now (`from` again when only referrers moved).
    pub to: Digest,
    /// The referrers pinned now that were not (sorted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers_added: Vec<Digest>,
    /// The referrers pinned before that no longer are (sorted).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub referrers_removed: Vec<Digest>,
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
            referrers: BTreeSet::new(),
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

    #[test]
    fn the_file_is_laid_out_and_old_compact_locks_still_read() {
        let mut lock = Lock::new();
        lock.images.insert(
            "ref:r/a:1".into(),
            LockedImage {
                name: "r/a:1".into(),
                digest: Digest::of(b"x"),
                media_type: "m".into(),
                referrers: BTreeSet::new(),
            },
        );
        let bytes = lock.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.starts_with("{\n  \"images\": {\n    \"ref:r/a:1\": {\n      \"digest\": "),
            "{text}"
        );
        assert!(text.ends_with("\n  \"lockVersion\": 1\n}\n"), "{text}");
        assert_eq!(Lock::parse("l", &bytes).unwrap().to_bytes(), bytes);
        let compact = canonical::to_vec(&lock).unwrap();
        assert_eq!(Lock::parse("l", &compact).unwrap(), lock);
        // A tag that moved is named with both digests; one that stayed is not.
        let mut newer = lock.clone();
        newer.images.get_mut("ref:r/a:1").unwrap().digest = Digest::of(b"y");
        let moved = lock.moved(&newer);
        assert_eq!(moved.len(), 1);
        assert_eq!(
            (moved[0].from, moved[0].to),
            (Digest::of(b"x"), Digest::of(b"y"))
        );
        assert!(lock.moved(&lock).is_empty());
    }

    #[test]
    fn referrers_are_pinned_sorted_left_out_when_none_and_their_change_moves_the_pin() {
        let entry = |referrers: &[&[u8]]| LockedImage {
            name: "r/a:1".into(),
            digest: Digest::of(b"x"),
            media_type: "m".into(),
            referrers: referrers.iter().map(|b| Digest::of(b)).collect(),
        };
        let mut none = Lock::new();
        none.images.insert("ref:r/a:1".into(), entry(&[]));
        let text = String::from_utf8(none.to_bytes()).unwrap();
        assert!(!text.contains("referrers"), "{text}");

        let mut two = Lock::new();
        two.images
            .insert("ref:r/a:1".into(), entry(&[b"sig", b"sbom"]));
        let bytes = two.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let mut sorted = vec![
            Digest::of(b"sig").to_string(),
            Digest::of(b"sbom").to_string(),
        ];
        sorted.sort();
        assert_eq!(
            v["images"]["ref:r/a:1"]["referrers"],
            serde_json::json!(sorted)
        );
        assert_eq!(Lock::parse("l", &bytes).unwrap(), two);

        // One signature added upstream, one withdrawn: the pin moved, with both named.
        let mut newer = Lock::new();
        newer
            .images
            .insert("ref:r/a:1".into(), entry(&[b"sig", b"att"]));
        let moved = two.moved(&newer);
        assert_eq!(moved.len(), 1, "{moved:#?}");
        assert_eq!(moved[0].from, moved[0].to);
        assert_eq!(moved[0].referrers_added, vec![Digest::of(b"att")]);
        assert_eq!(moved[0].referrers_removed, vec![Digest::of(b"sbom")]);
        let d = two.differences(&newer);
        assert!(d.len() == 1 && d[0].contains("ref:r/a:1"), "{d:#?}");
        assert!(two.moved(&two).is_empty());
    }
}
