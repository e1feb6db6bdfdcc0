//! What changed between two bundles, from their heads alone (`gapbundle diff`), and
//! what a delta of the new one against the old one would store.
//!
//! Objects are matched by kind and name: an image whose name stays and whose digest
//! changes is *changed*. A name can carry the version too: a Nix store path's name
//! carries its hash, so a rebuilt package is a new path, and an image's carries its
//! tag (`team/app:1` becomes `team/app:2`). So a removed and an added object of the
//! same kind that share what is left once that is taken away (the name after the
//! hash, `…-agent`; the repository, `team/app`), one of each, are paired as one
//! change, since that is how a person reads them. The delta figures come from the very rule `create --against` applies
//! ([`super::delta::leave_out`]), with the old bundle as the base.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::delta::{leave_out, Base};
use super::digest::Digest;
use super::manifest::{Kind, Manifest};
use super::reader::Head;
use crate::nixfmt::StorePath;
use crate::oci::Reference;

/// One object, as a diff lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its root digest.
    pub digest: Digest,
    /// Bytes of its blobs.
    pub size: u64,
}

/// An object that is in both, changed.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Changed {
    /// Its kind.
    pub kind: String,
    /// Its name in the new bundle.
    pub name: String,
    /// Its name in the old one, when it differs (a rebuilt store path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_name: Option<String>,
    /// The old root digest.
    pub old: Digest,
    /// The new root digest.
    pub new: Digest,
    /// Bytes of its blobs in the new bundle.
    pub size: u64,
}

/// Kubernetes target files (meta `file`) added, removed or with other documents.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Files {
    /// Only in the new bundle.
    pub added: Vec<String>,
    /// Only in the old bundle.
    pub removed: Vec<String>,
    /// In both, with other documents.
    pub changed: Vec<String>,
}

/// What a delta of the new bundle against the old one would store.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeltaSize {
    /// Blobs it would store, the two that carry the full bundle's head included.
    pub stored_blobs: u64,
    /// Their bytes.
    pub stored_bytes: u64,
    /// Blobs it would leave out (the old bundle stores them).
    pub left_out_blobs: u64,
    /// Their bytes.
    pub left_out_bytes: u64,
}

/// The difference between two bundles.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Diff {
    /// Objects only in the new bundle.
    pub added: Vec<ObjectRef>,
    /// Objects only in the old bundle.
    pub removed: Vec<ObjectRef>,
    /// Objects in both with another root digest.
    pub changed: Vec<Changed>,
    /// Objects in both, the same.
    pub unchanged: usize,
    /// Kubernetes target files.
    pub files: Files,
    /// What a delta of the new against the old would store.
    pub delta: DeltaSize,
}

/// An object as a diff compares it, by its key (kind as written, name).
#[derive(Debug, Clone)]
struct Held {
    kind: Kind,
    digest: Digest,
    size: u64,
}

/// The objects of a manifest by (kind, name).
type Objects = BTreeMap<(String, String), Held>;

fn objects(m: &Manifest) -> Objects {
    m.objects
        .iter()
        .map(|o| {
            let held = Held {
                kind: o.kind.clone(),
                digest: o.digest,
                size: o.size,
            };
            ((o.kind.to_string(), o.name.clone()), held)
        })
        .collect()
}

fn object_ref((kind, name): &(String, String), o: &Held) -> ObjectRef {
    ObjectRef {
        kind: kind.clone(),
        name: name.clone(),
        digest: o.digest,
        size: o.size,
    }
}

/// What stays of an object's name across versions: the name after a store path's
/// hash, an image's repository; `None` for other kinds.
fn lasting_name(kind: &Kind, name: &str) -> Option<String> {
    match kind {
        Kind::NixPath => StorePath::parse(name).ok().map(|p| p.name().to_string()),
        Kind::Image => Reference::parse(name).ok().map(|r| r.name()),
        _ => None,
    }
}

/// Target file -> its documents (name, digest), for the Kubernetes documents of `m`.
fn files(m: &Manifest) -> BTreeMap<String, Vec<(String, Digest)>> {
    let mut f: BTreeMap<String, Vec<(String, Digest)>> = BTreeMap::new();
    for (o, meta) in m.k8s_manifests() {
        f.entry(meta.file.clone())
            .or_default()
            .push((o.name.clone(), o.digest));
    }
    for docs in f.values_mut() {
        docs.sort();
    }
    f
}

/// What a diff needs of the old bundle, kept in place of its head so that the new
/// head is read with the old one gone: two heads of 20,000 objects held at once
/// were 78 MiB, where this is a few MiB.
pub struct Old {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its bundle digest.
    pub digest: Digest,
    objects: Objects,
    files: BTreeMap<String, Vec<(String, Digest)>>,
    /// The old bundle as the base of a delta.
    base: Base,
}

impl Old {
    /// What `diff` needs of `head`, which can go once this is made.
    pub fn of(head: &Head) -> Old {
        let m = &head.manifest;
        Old {
            name: m.name.clone(),
            version: m.version.clone(),
            digest: head.digest,
            objects: objects(m),
            files: files(m),
            base: Base::from_head(head),
        }
    }
}

/// The difference from `old` to `new`.
pub fn diff(old: &Old, new: &Head) -> Diff {
    let nm = &new.manifest;
    let old_objects = &old.objects;
    let new_objects = objects(nm);
    let mut d = Diff {
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
        unchanged: 0,
        files: Files::default(),
        delta: DeltaSize::default(),
    };
    for (k, n) in &new_objects {
        match old_objects.get(k) {
            None => d.added.push(object_ref(k, n)),
            Some(o) if o.digest != n.digest => d.changed.push(Changed {
                kind: k.0.clone(),
                name: k.1.clone(),
                old_name: None,
                old: o.digest,
                new: n.digest,
                size: n.size,
            }),
            Some(_) => d.unchanged += 1,
        }
    }
    for (k, o) in old_objects {
        if !new_objects.contains_key(k) {
            d.removed.push(object_ref(k, o));
        }
    }
    pair_new_versions(&mut d, old_objects, &new_objects);
    let (of, nf) = (&old.files, files(nm));
    for (file, docs) in &nf {
        match of.get(file) {
            None => d.files.added.push(file.clone()),
            Some(o) if o != docs => d.files.changed.push(file.clone()),
            Some(_) => {}
        }
    }
    d.files.removed = of
        .keys()
        .filter(|f| !nf.contains_key(*f))
        .cloned()
        .collect();

    let out = leave_out(nm, std::slice::from_ref(&old.base));
    for b in &nm.blobs {
        if out.contains_key(&b.digest) {
            d.delta.left_out_blobs += 1;
            d.delta.left_out_bytes += b.size;
        } else if b.offset.is_some() || nm.delta.is_none() {
            d.delta.stored_blobs += 1;
            d.delta.stored_bytes += b.size;
        }
    }
    if nm.delta.is_none() {
        // The two blobs that carry the full bundle's head: its manifest and envelope.
        d.delta.stored_blobs += 2;
        d.delta.stored_bytes +=
            new.manifest_bytes.len() as u64 + new.envelope.to_canonical().len() as u64;
    }
    d
}

/// A removed and an added object with the same lasting name ([`lasting_name`]),
/// when there is exactly one of each, become one change.
fn pair_new_versions(d: &mut Diff, old_objects: &Objects, new_objects: &Objects) {
    let lasting = |v: &[ObjectRef], objects: &Objects| {
        let mut m: HashMap<(String, String), Vec<String>> = HashMap::new();
        for r in v {
            let key = (r.kind.clone(), r.name.clone());
            if let Some(n) = objects
                .get(&key)
                .and_then(|o| lasting_name(&o.kind, &r.name))
            {
                m.entry((r.kind.clone(), n))
                    .or_default()
                    .push(r.name.clone());
            }
        }
        m
    };
    let (gone, came) = (
        lasting(&d.removed, old_objects),
        lasting(&d.added, new_objects),
    );
    let mut pairs = Vec::new();
    for (key, old) in &gone {
        if let (1, Some(new)) = (old.len(), came.get(key)) {
            if new.len() == 1 {
                pairs.push((key.0.clone(), old[0].clone(), new[0].clone()));
            }
        }
    }
    pairs.sort();
    for (kind, old_name, new_name) in pairs {
        let (o, n) = (
            old_objects[&(kind.clone(), old_name.clone())].digest,
            new_objects[&(kind.clone(), new_name.clone())].clone(),
        );
        d.removed
            .retain(|r| !(r.kind == kind && r.name == old_name));
        d.added.retain(|r| !(r.kind == kind && r.name == new_name));
        d.changed.push(Changed {
            kind,
            name: new_name,
            old_name: Some(old_name),
            old: o,
            new: n.digest,
            size: n.size,
        });
    }
}
