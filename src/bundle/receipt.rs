//! Import receipts (docs/receipts.md, `bundle-spec/schema/receipt.schema.json`),
//! pure: what an import of a bundle put where on a host, and what taking it away
//! again (a newer version replacing it, `gapbundle remove`) must undo.
//!
//! Without a record, nothing on a host says which images, GC roots, manifest files
//! and files a bundle brought: images stay pinned forever, and every update grows
//! the disk until kubelet's garbage collection can free nothing. So every import
//! writes one receipt per bundle name, listing per target ([`Section`]) exactly
//! what the bundle's version holds there, and the difference between the receipt
//! of the version imported before and the new one is what goes ([`retire`]).
//! Something another imported bundle's receipt names on the same target is never
//! taken away: two bundles that share an image keep it pinned until neither names
//! it.
//!
//! Receipts are read back by `gapbundle list`, by the next import of the same name,
//! and by `gapbundle remove`; delta bundles can read "the bundles imported there"
//! from them. A reader keeps fields it does not know (a newer minor version adds
//! them).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::digest::Digest;
use super::meta::Extra;

/// Major version of the receipt document this code reads and writes.
pub const RECEIPT_MAJOR: u64 = 1;

/// What an import of one bundle put on a host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// `1.0`.
    pub format_version: String,
    /// The bundle's name: one receipt per name on a host.
    pub name: String,
    /// The bundle's version.
    pub version: String,
    /// The bundle digest (format.md section 5).
    pub digest: Digest,
    /// Names of the trusted keys that signed it (empty with `--allow-unsigned`).
    pub signers: Vec<String>,
    /// When the import ran (seconds since the epoch).
    pub imported: u64,
    /// The program that wrote it.
    pub generator: String,
    /// `false` while the import runs: the receipt of an import that did not finish
    /// (killed, failed), whose targets may hold some of what it lists.
    pub complete: bool,
    /// What went where, one section per target.
    pub targets: Vec<Section>,
    /// The NixOS system the bundle carries for this host's local store, and the
    /// activation it asks for (format.md 14.8), so that `gapbundle activate` can
    /// activate it from the receipt alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemRecord>,
    /// Fields of a newer minor version.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The NixOS system of a receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SystemRecord {
    /// The system toplevel's store path.
    pub path: String,
    /// `switch`, `boot` or `test`.
    pub activate: super::meta::Activation,
}

/// An image registered in containerd under its names.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// The image object's name.
    pub name: String,
    /// Its root digest.
    pub digest: Digest,
    /// The image records made for it (the CRI name and `repo@digest`).
    pub refs: Vec<String>,
}

/// A file installed below a root.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRecord {
    /// The absolute path inside the root.
    pub target: String,
    /// Its content's digest.
    pub digest: Digest,
    /// Its mode, four octal digits.
    pub mode: String,
}

/// What a bundle holds on one target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Section {
    /// Images in a containerd namespace, pinned.
    #[serde(rename_all = "camelCase")]
    Containerd {
        /// The socket.
        socket: String,
        /// The namespace.
        namespace: String,
        /// The images, sorted.
        images: Vec<ImageRecord>,
    },
    /// The image archive K3s imports at start.
    #[serde(rename_all = "camelCase")]
    Staged {
        /// The archive's path.
        archive: String,
        /// The image names it carries.
        images: Vec<String>,
    },
    /// Images pushed to a fleet registry (left there when the bundle goes: a
    /// registry is the fleet's, and most refuse deletes).
    #[serde(rename_all = "camelCase")]
    Registry {
        /// The registry (`host[:port]`).
        host: String,
        /// The references pushed, each with its root digest.
        images: BTreeMap<String, Digest>,
    },
    /// Store paths in a Nix store or binary cache, and the GC roots made for them.
    #[serde(rename_all = "camelCase")]
    Nix {
        /// The store, as `--nix-store` names it (`local` for the default one).
        store: String,
        /// The store paths, sorted.
        paths: Vec<String>,
        /// The GC root links made (absolute paths), sorted.
        gc_roots: Vec<String>,
    },
    /// Files in K3s's auto-deploy folder of the bundle.
    #[serde(rename_all = "camelCase")]
    Manifests {
        /// The bundle's folder.
        folder: String,
        /// The file names in it, sorted.
        files: Vec<String>,
    },
    /// Manifests given to `kubectl apply` (not taken back: they hold no record of
    /// what the cluster did with them).
    #[serde(rename_all = "camelCase")]
    Applied {
        /// The kubeconfig used, when one was given.
        kubeconfig: Option<String>,
        /// The file names applied.
        files: Vec<String>,
    },
    /// Files below a root.
    #[serde(rename_all = "camelCase")]
    Files {
        /// The root (`/` by default).
        root: String,
        /// The files, sorted by target.
        files: Vec<FileRecord>,
    },
}

impl Section {
    /// Which target it is about: two sections with one id describe the same place
    /// (one socket and namespace, one archive, one store, one folder, one root).
    pub fn id(&self) -> String {
        match self {
            Section::Containerd {
                socket, namespace, ..
            } => format!("containerd {socket} {namespace}"),
            Section::Staged { archive, .. } => format!("staged {archive}"),
            Section::Registry { host, .. } => format!("registry {host}"),
            Section::Nix { store, .. } => format!("nix {store}"),
            Section::Manifests { folder, .. } => format!("manifests {folder}"),
            Section::Applied { kubeconfig, .. } => {
                format!("applied {}", kubeconfig.as_deref().unwrap_or(""))
            }
            Section::Files { root, .. } => format!("files {root}"),
        }
    }

    /// The same target, holding nothing.
    pub fn emptied(&self) -> Section {
        let mut s = self.clone();
        match &mut s {
            Section::Containerd { images, .. } => images.clear(),
            Section::Staged { images, .. } => images.clear(),
            Section::Registry { images, .. } => images.clear(),
            Section::Nix {
                paths, gc_roots, ..
            } => {
                paths.clear();
                gc_roots.clear();
            }
            Section::Manifests { files, .. } | Section::Applied { files, .. } => files.clear(),
            Section::Files { files, .. } => files.clear(),
        }
        s
    }

    /// Whether it records nothing.
    pub fn is_empty(&self) -> bool {
        *self == self.emptied()
    }

    /// One line for `gapbundle list`: what and where.
    pub fn summary(&self) -> String {
        match self {
            Section::Containerd {
                socket,
                namespace,
                images,
            } => format!(
                "{} image(s) in containerd {socket} (namespace {namespace})",
                images.len()
            ),
            Section::Staged { archive, images } => {
                format!("{} image(s) in the archive {archive}", images.len())
            }
            Section::Registry { host, images } => {
                format!("{} image(s) pushed to registry {host}", images.len())
            }
            Section::Nix {
                store,
                paths,
                gc_roots,
            } => format!(
                "{} Nix path(s) in {store}, {} GC root(s)",
                paths.len(),
                gc_roots.len()
            ),
            Section::Manifests { folder, files } => {
                format!("{} manifest file(s) in {folder}", files.len())
            }
            Section::Applied { files, .. } => {
                format!("{} manifest file(s) given to kubectl apply", files.len())
            }
            Section::Files { root, files } => {
                format!("{} file(s) below {root}", files.len())
            }
        }
    }
}

/// One thing to take away from a target.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Retire {
    /// An image record in containerd to unpin (`io.cri-containerd.pinned` removed,
    /// so kubelet's image garbage collection may take it), or with `prune` to
    /// delete (containerd's garbage collector then frees its content). Only when
    /// it still names `digest`.
    #[serde(rename_all = "camelCase")]
    Image {
        /// The socket.
        socket: String,
        /// The namespace.
        namespace: String,
        /// The image record's name.
        reference: String,
        /// The root it must still name.
        digest: Digest,
        /// Delete it, rather than unpin it.
        delete: bool,
    },
    /// A staged archive to delete (only when it is still this bundle's).
    #[serde(rename_all = "camelCase")]
    Archive {
        /// Its path.
        path: String,
        /// The bundle digests it may carry.
        digests: Vec<Digest>,
    },
    /// A GC root link to remove (the paths it held become garbage unless
    /// something else holds them).
    #[serde(rename_all = "camelCase")]
    GcRoot {
        /// The link.
        path: String,
    },
    /// A file of K3s's auto-deploy folder to remove (K3s then deletes what it
    /// deployed from it).
    #[serde(rename_all = "camelCase")]
    Manifest {
        /// The bundle's folder.
        folder: String,
        /// The file name.
        file: String,
    },
    /// A file below a root to remove, only when it still has the bytes installed.
    #[serde(rename_all = "camelCase")]
    File {
        /// The root.
        root: String,
        /// The path inside it.
        target: String,
        /// The digest it must still have.
        digest: Digest,
    },
    /// What stays and why (registry images, applied manifests): said, not done.
    #[serde(rename_all = "camelCase")]
    Left {
        /// What.
        what: String,
    },
}

impl std::fmt::Display for Retire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retire::Image {
                reference,
                delete: true,
                ..
            } => write!(f, "delete image {reference}"),
            Retire::Image { reference, .. } => write!(f, "unpin image {reference}"),
            Retire::Archive { path, .. } => write!(f, "remove archive {path}"),
            Retire::GcRoot { path } => write!(f, "remove GC root {path}"),
            Retire::Manifest { folder, file } => {
                write!(
                    f,
                    "remove manifest {folder}/{file} (K3s deletes what it deployed from it)"
                )
            }
            Retire::File { root, target, .. } => {
                if root == "/" {
                    write!(f, "remove file {target}")
                } else {
                    write!(f, "remove file {target} below {root}")
                }
            }
            Retire::Left { what } => write!(f, "leave {what}"),
        }
    }
}

/// What taking `old` away from a target leaves to undo, when `new` (the same
/// target, in the version that replaces it; or emptied, for a removal) stays and
/// `others` (the same target in every other imported bundle's receipt) must keep
/// what they name. `prune`: delete images rather than unpin them. `bundle` is the
/// digest of the bundle `old` describes (a staged archive carries it).
pub fn retire(
    old: &Section,
    new: &Section,
    others: &[&Section],
    prune: bool,
    bundle: Digest,
) -> Vec<Retire> {
    let mut out = Vec::new();
    match (old, new) {
        (
            Section::Containerd {
                socket,
                namespace,
                images,
            },
            Section::Containerd {
                images: keep_images,
                ..
            },
        ) => {
            let mut keep: BTreeSet<&str> = keep_images
                .iter()
                .flat_map(|i| i.refs.iter().map(String::as_str))
                .collect();
            for o in others {
                if let Section::Containerd { images, .. } = o {
                    keep.extend(
                        images
                            .iter()
                            .flat_map(|i| i.refs.iter().map(String::as_str)),
                    );
                }
            }
            let mut seen = BTreeSet::new();
            for img in images {
                for r in &img.refs {
                    if !keep.contains(r.as_str()) && seen.insert(r.clone()) {
                        out.push(Retire::Image {
                            socket: socket.clone(),
                            namespace: namespace.clone(),
                            reference: r.clone(),
                            digest: img.digest,
                            delete: prune,
                        });
                    }
                }
            }
        }
        (Section::Staged { archive, .. }, Section::Staged { archive: kept, .. })
            if archive != kept || new.is_empty() =>
        {
            out.push(Retire::Archive {
                path: archive.clone(),
                digests: vec![bundle],
            });
        }
        (Section::Registry { host, images }, Section::Registry { images: kept, .. }) => {
            let gone = images.keys().filter(|r| !kept.contains_key(*r)).count();
            if gone > 0 {
                out.push(Retire::Left {
                    what: format!(
                        "{gone} image(s) in registry {host}: a fleet registry is the fleet's (delete tags there if you must)"
                    ),
                });
            }
        }
        (Section::Nix { gc_roots, .. }, Section::Nix { gc_roots: kept, .. }) => {
            let mut keep: BTreeSet<&String> = kept.iter().collect();
            for o in others {
                if let Section::Nix { gc_roots, .. } = o {
                    keep.extend(gc_roots.iter());
                }
            }
            for g in gc_roots {
                if !keep.contains(g) {
                    out.push(Retire::GcRoot { path: g.clone() });
                }
            }
        }
        (Section::Manifests { folder, files }, Section::Manifests { files: kept, .. }) => {
            for f in files {
                if !kept.contains(f) {
                    out.push(Retire::Manifest {
                        folder: folder.clone(),
                        file: f.clone(),
                    });
                }
            }
        }
        (Section::Applied { files, .. }, Section::Applied { files: kept, .. }) => {
            let gone = files.iter().filter(|f| !kept.contains(f)).count();
            if gone > 0 {
                out.push(Retire::Left {
                    what: format!(
                        "{gone} manifest file(s) given to kubectl apply: delete their resources with kubectl if they must go"
                    ),
                });
            }
        }
        (Section::Files { root, files }, Section::Files { files: kept, .. }) => {
            let mut keep: BTreeSet<&str> = kept.iter().map(|f| f.target.as_str()).collect();
            for o in others {
                if let Section::Files { files, .. } = o {
                    keep.extend(files.iter().map(|f| f.target.as_str()));
                }
            }
            for f in files {
                if !keep.contains(f.target.as_str()) {
                    out.push(Retire::File {
                        root: root.clone(),
                        target: f.target.clone(),
                        digest: f.digest,
                    });
                }
            }
        }
        _ => {}
    }
    out
}

/// Everything to undo when `old` (the receipts of the bundle's earlier import, and
/// of one that did not finish) is replaced by `new`'s sections, given the targets
/// this import covers (`covered`: the ids it wrote to, or would have written to
/// had the bundle had objects of that kind) and every other bundle's receipt.
/// Sections of `old` on targets this import did not cover (skipped with
/// `--skip-images`, another `--root`) are kept as they were: see [`carried`].
pub fn replacement(
    old: &[&Receipt],
    new: &[Section],
    covered: &BTreeSet<String>,
    others: &[&Receipt],
    prune: bool,
) -> Vec<Retire> {
    let mut out = Vec::new();
    for r in old {
        for s in &r.targets {
            let id = s.id();
            if !covered.contains(&id) {
                continue;
            }
            let empty = s.emptied();
            let keep = new.iter().find(|n| n.id() == id).unwrap_or(&empty);
            let theirs: Vec<&Section> = others
                .iter()
                .flat_map(|o| o.targets.iter())
                .filter(|o| o.id() == id)
                .collect();
            for x in retire(s, keep, &theirs, prune, r.digest) {
                if !out.contains(&x) {
                    out.push(x);
                }
            }
        }
    }
    out.sort();
    out
}

/// The sections of the earlier receipts on targets this import did not cover:
/// they still hold what they held, and the new receipt keeps them (the earlier
/// complete receipt's first, then one of a killed import's).
pub fn carried(old: &[&Receipt], covered: &BTreeSet<String>) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    for r in old {
        for s in &r.targets {
            if !covered.contains(&s.id()) && !out.iter().any(|o| o.id() == s.id()) {
                out.push(s.clone());
            }
        }
    }
    out
}

/// The file name a bundle's receipt has in the receipts folder: the name with
/// every byte outside `[A-Za-z0-9_-]` written `%XX`, so two names never share one
/// and none is `.`, `..` or hidden.
pub fn file_stem(name: &str) -> String {
    let mut s = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if s.is_empty() {
        s.push('%');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn img(name: &str, d: &[u8]) -> ImageRecord {
        ImageRecord {
            name: name.into(),
            digest: Digest::of(d),
            refs: vec![name.into(), format!("{name}@{}", Digest::of(d))],
        }
    }

    fn ctd(images: Vec<ImageRecord>) -> Section {
        Section::Containerd {
            socket: "/run/k3s/containerd/containerd.sock".into(),
            namespace: "k8s.io".into(),
            images,
        }
    }

    fn receipt(name: &str, targets: Vec<Section>) -> Receipt {
        Receipt {
            format_version: "1.0".into(),
            name: name.into(),
            version: "1".into(),
            digest: Digest::of(name.as_bytes()),
            signers: vec![],
            imported: 0,
            generator: "test".into(),
            complete: true,
            targets,
            system: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn images_only_the_old_version_had_go_unless_another_bundle_names_them() {
        let v1 = receipt(
            "site",
            vec![ctd(vec![
                img("a:1", b"a"),
                img("shared:1", b"s"),
                img("other:1", b"o"),
            ])],
        );
        let v2 = vec![ctd(vec![img("shared:1", b"s"), img("a:2", b"a2")])];
        let other = receipt("other", vec![ctd(vec![img("other:1", b"o")])]);
        let covered: BTreeSet<String> = [v2[0].id()].into();
        let plan = replacement(&[&v1], &v2, &covered, &[&other], false);
        let refs: Vec<String> = plan.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            refs,
            [
                "unpin image a:1".to_string(),
                format!("unpin image a:1@{}", Digest::of(b"a")),
            ]
        );
        // With --prune the same images are deleted; nothing else changes.
        let pruned = replacement(&[&v1], &v2, &covered, &[&other], true);
        assert!(pruned
            .iter()
            .all(|r| matches!(r, Retire::Image { delete: true, .. })));
        // Removing the bundle takes everything nobody else names.
        let all = replacement(&[&v1], &[], &covered, &[&other], false);
        assert_eq!(all.len(), 4, "{all:?}");
        // A target this import did not cover keeps what it had.
        assert!(replacement(&[&v1], &v2, &BTreeSet::new(), &[], false).is_empty());
        assert_eq!(carried(&[&v1], &BTreeSet::new()), v1.targets);
    }

    #[test]
    fn files_roots_manifests_and_what_stays() {
        let file = |t: &str| FileRecord {
            target: t.into(),
            digest: Digest::of(t.as_bytes()),
            mode: "0644".into(),
        };
        let old = receipt(
            "site",
            vec![
                Section::Files {
                    root: "/".into(),
                    files: vec![file("/etc/a"), file("/etc/b"), file("/etc/shared")],
                },
                Section::Nix {
                    store: "local".into(),
                    paths: vec![],
                    gc_roots: vec!["/nix/var/nix/gcroots/gapbundle/app".into()],
                },
                Section::Manifests {
                    folder: "/k3s/server/manifests/site".into(),
                    files: vec!["a.yaml".into(), "b.yaml".into()],
                },
                Section::Registry {
                    host: "reg:5000".into(),
                    images: [("reg:5000/a:1".to_string(), Digest::of(b"a"))].into(),
                },
            ],
        );
        let other = receipt(
            "other",
            vec![Section::Files {
                root: "/".into(),
                files: vec![file("/etc/shared")],
            }],
        );
        let new = vec![
            Section::Files {
                root: "/".into(),
                files: vec![file("/etc/b")],
            },
            Section::Manifests {
                folder: "/k3s/server/manifests/site".into(),
                files: vec!["b.yaml".into()],
            },
        ];
        let covered: BTreeSet<String> = old.targets.iter().map(Section::id).collect();
        let plan: Vec<String> = replacement(&[&old], &new, &covered, &[&other], false)
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            plan,
            [
                "remove GC root /nix/var/nix/gcroots/gapbundle/app",
                "remove manifest /k3s/server/manifests/site/a.yaml (K3s deletes what it deployed from it)",
                "remove file /etc/a",
                "leave 1 image(s) in registry reg:5000: a fleet registry is the fleet's (delete tags there if you must)",
            ]
        );
    }

    #[test]
    fn receipts_round_trip_and_names_never_collide() {
        let r = receipt("site", vec![ctd(vec![img("a:1", b"a")])]);
        let json = crate::bundle::canonical::to_vec(&r).unwrap();
        let back: Receipt = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, r);
        assert!(String::from_utf8(json)
            .unwrap()
            .contains(r#""kind":"containerd""#));
        assert_eq!(file_stem("edge-site"), "edge-site");
        assert_ne!(file_stem("team x"), file_stem("team_x"));
        assert_eq!(file_stem("../x"), "%2E%2E%2Fx");
        assert_eq!(file_stem(""), "%");
    }
}
