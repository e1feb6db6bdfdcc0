//! The bundle manifest: the signed table of contents.
//!
//! The manifest is the only thing a signature covers, so it must name every byte a
//! reader will trust: each stored blob (digest, size, where it sits in the file) and
//! each object made of blobs (an image, later a Nix path or a Kubernetes manifest).
//! Storage (`blobs`) is kept apart from meaning (`objects`) because one blob can serve
//! many objects (a shared base layer) and because later formats need blobs that are
//! listed but not stored (a delta against what a target already holds).
//!
//! Offsets are relative to the data section, which starts right after the signatures
//! entry; that way signatures can be added without moving a single offset, and the
//! manifest does not depend on its own length.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::canonical;
use super::digest::Digest;
use super::layout::{checked_padded, padded, HEADER_LEN};
use super::meta::{Meta, MetaError};
use crate::nixfmt::StorePath;

/// Major format version this code writes and reads.
pub const FORMAT_MAJOR: u64 = 1;
/// Minor format version this code writes. Minor versions only add fields.
pub const FORMAT_MINOR: u64 = 0;

/// Path of the first tar entry.
pub const MANIFEST_PATH: &str = "gapbundle/manifest.json";
/// Path of the second tar entry.
pub const SIGNATURES_PATH: &str = "gapbundle/signatures.json";
/// OCI layout marker file, the first entry of the data section.
pub const OCI_LAYOUT_PATH: &str = "oci-layout";
/// OCI index, the second entry of the data section.
pub const INDEX_PATH: &str = "index.json";

/// Largest manifest or signatures entry a reader accepts, so a hostile file cannot make
/// a reader allocate without bound before anything is verified.
pub const MAX_HEAD_ENTRY: u64 = 256 << 20;

/// Longest bundle name.
pub const MAX_NAME_LEN: usize = 128;

/// Whether `name` may name a bundle (format.md section 5): 1 to [`MAX_NAME_LEN`]
/// characters of `[A-Za-z0-9._-]`, the first a letter or digit. An importer names a
/// folder and a file after the bundle (`server/manifests/<name>/`,
/// `agent/images/<name>.tar`) as the name is, so two bundles share a folder only
/// when they share the name: no mapping (`team x` and `team_x` to one folder)
/// can make one bundle's import replace another's files.
pub fn valid_bundle_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// The kind of an object in the bundle.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An OCI or Docker image (one platform or an index of several).
    Image,
    /// A Nix store path, stored as its NAR.
    NixPath,
    /// A rendered Kubernetes manifest.
    K8sManifest,
    /// A Helm chart archive.
    Chart,
    /// A file installed on the target host at the path it is named by.
    File,
    /// The spec file the bundle was made from.
    Spec,
    /// The lock file the bundle was made from.
    Lock,
    /// A software bill of materials of the bundle's other objects (format.md
    /// section 17), stored by `create --sbom`.
    Sbom,
    /// An OCI manifest that refers to a bundled image: a signature, attestation or
    /// SBOM attached to it (format.md section 18).
    Referrer,
    /// A kind from a newer minor version: carried and verified, never imported.
    Other(String),
}

impl Kind {
    /// The name used in the manifest.
    pub fn as_str(&self) -> &str {
        match self {
            Kind::Image => "image",
            Kind::NixPath => "nix-path",
            Kind::K8sManifest => "k8s-manifest",
            Kind::Chart => "chart",
            Kind::File => "file",
            Kind::Spec => "spec",
            Kind::Lock => "lock",
            Kind::Sbom => "sbom",
            Kind::Referrer => "referrer",
            Kind::Other(s) => s,
        }
    }
}

impl std::fmt::Display for Kind {
    /// The name, escaped for a terminal: a kind this version does not know is
    /// whatever the bundle wrote there.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::text::escaped(self.as_str()))
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "image" => Kind::Image,
            "nix-path" => Kind::NixPath,
            "k8s-manifest" => Kind::K8sManifest,
            "chart" => Kind::Chart,
            "file" => Kind::File,
            "spec" => Kind::Spec,
            "lock" => Kind::Lock,
            "sbom" => Kind::Sbom,
            "referrer" => Kind::Referrer,
            _ => Kind::Other(s),
        })
    }
}

/// How a stored blob's bytes relate to its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The stored bytes are a zstd frame of the content.
    Zstd,
}

/// Digest and size of a blob's content before encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentInfo {
    /// sha256 of the decoded content.
    pub digest: Digest,
    /// Length of the decoded content.
    pub size: u64,
}

/// One layout file of the data section (`oci-layout`, `index.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path inside the tar.
    pub path: String,
    /// sha256 of the file.
    pub digest: Digest,
    /// Length of the file.
    pub size: u64,
    /// Offset of the file's data from the start of the data section.
    pub offset: u64,
}

/// One blob, stored at `blobs/sha256/<hex>` (or, in a delta, expected on the target).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlobEntry {
    /// sha256 of the stored bytes; also the file name.
    pub digest: Digest,
    /// Length of the stored bytes.
    pub size: u64,
    /// Media type of the stored bytes (OCI media type, or a gapbundle one).
    pub media_type: String,
    /// Offset of the data from the start of the data section; absent when the blob is
    /// not stored in this file (a delta bundle).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Set when the stored bytes are an encoding of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// The decoded content's digest and size, with `encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ContentInfo>,
}

impl BlobEntry {
    /// A blob of `size` bytes named `digest`, stored as it is (no encoding) and not
    /// placed yet: the writer gives it its offset.
    pub fn new(digest: Digest, size: u64, media_type: &str) -> Self {
        BlobEntry {
            digest,
            size,
            media_type: media_type.into(),
            offset: None,
            encoding: None,
            content: None,
        }
    }
    /// [`BlobEntry::new`] for `bytes`.
    pub fn of(bytes: &[u8], media_type: &str) -> Self {
        Self::new(Digest::of(bytes), bytes.len() as u64, media_type)
    }
    /// Path of the blob inside the tar.
    pub fn path(&self) -> String {
        blob_path(&self.digest)
    }
}

/// The tar path of a blob.
pub fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// One thing the bundle carries, made of blobs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    /// What it is.
    pub kind: Kind,
    /// How people name it (image reference, store path, manifest source).
    pub name: String,
    /// The root blob (image index or manifest, NAR, document).
    pub digest: Digest,
    /// Media type of the root blob.
    pub media_type: String,
    /// Total bytes of all its blobs.
    pub size: u64,
    /// Every blob the object needs, root included.
    pub blobs: Vec<Digest>,
    /// Kind-specific metadata (see bundle-spec/), typed for the kinds that have
    /// one ([`Meta`]).
    #[serde(default, skip_serializing_if = "Meta::is_empty")]
    pub meta: Meta,
}

/// Media type of the blob of a delta that holds the full bundle's manifest bytes.
pub const FULL_MANIFEST_MEDIA_TYPE: &str = "application/vnd.gapbundle.full-manifest.v1+json";
/// Media type of the blob of a delta that holds the full bundle's signature envelope.
pub const FULL_SIGNATURES_MEDIA_TYPE: &str = "application/vnd.gapbundle.full-signatures.v1+json";

/// Marks a delta bundle (format.md section 10): blobs without an offset are not
/// stored but expected on the target, and the two blobs that come first carry the
/// full bundle's manifest and signatures, so the full bundle can be rebuilt
/// without a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    /// What the delta was made against, in the order given to create.
    pub against: Vec<DeltaBase>,
    /// For each blob without an offset, in `blobs` order: the index in `against` of
    /// the base that holds it.
    pub expected: Vec<u32>,
    /// The full bundle's manifest and envelope, stored as this delta's first blobs.
    pub full: FullBundle,
    /// Fields of a newer minor version, kept as they were.
    #[serde(flatten)]
    pub extra: super::meta::Extra,
}

/// One base of a delta: a bundle already shipped, or an inventory of a target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaBase {
    /// `bundle` or `inventory`.
    pub kind: BaseKind,
    /// The bundle digest, or the inventory digest.
    pub digest: Digest,
    /// The bundle's name, or the inventory's site.
    pub name: String,
    /// The bundle's version (bundles only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When the inventory was taken (inventories only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<u64>,
    /// How many of the delta's blobs without an offset this base holds.
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Fields of a newer minor version, kept as they were.
    #[serde(flatten)]
    pub extra: super::meta::Extra,
}

/// What a delta base is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BaseKind {
    /// A bundle: it holds the blobs it stores.
    Bundle,
    /// An inventory of a target (format.md section 10.4).
    Inventory,
}

/// A base as messages name it; its name and version come from a bundle and are
/// shown with control characters escaped.
impl std::fmt::Display for DeltaBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = crate::text::escaped(&self.name);
        match self.kind {
            BaseKind::Bundle => write!(
                f,
                "bundle {name} {} ({})",
                crate::text::escaped(self.version.as_deref().unwrap_or("?")),
                self.digest
            ),
            BaseKind::Inventory => write!(f, "inventory of {name} ({})", self.digest),
        }
    }
}

/// Digests of the full bundle's head, carried by a delta.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FullBundle {
    /// Digest of the full bundle's manifest: the full bundle's identity.
    pub manifest: Digest,
    /// Digest of the full bundle's signature envelope.
    pub signatures: Digest,
}

/// The bundle manifest (`gapbundle/manifest.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// `MAJOR.MINOR`.
    pub format_version: String,
    /// Bundle name from the spec.
    pub name: String,
    /// Bundle version from the spec.
    pub version: String,
    /// Creation time, seconds since the epoch (SOURCE_DATE_EPOCH, else 0).
    pub created: u64,
    /// Program that wrote it.
    pub generator: String,
    /// Platforms requested in the spec (`all` for every one).
    pub platforms: Vec<String>,
    /// Layout files of the data section.
    pub files: Vec<FileEntry>,
    /// Every blob, in file order.
    pub blobs: Vec<BlobEntry>,
    /// Every object.
    pub objects: Vec<Object>,
    /// Present on delta bundles only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
}

/// Why a manifest is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The bundle was written by a newer, incompatible format.
    #[error("bundle format version {found} is not supported: this gapbundle reads {FORMAT_MAJOR}.x; upgrade gapbundle to read it")]
    UnsupportedVersion {
        /// The version the bundle declares.
        found: String,
    },
    /// The JSON does not match the schema.
    #[error("bundle manifest is malformed: {0}")]
    Malformed(String),
    /// A structural rule is broken.
    #[error("bundle manifest is inconsistent: {0}")]
    Inconsistent(String),
    /// An object's name or meta breaks the rules of its kind.
    #[error("bundle manifest is malformed: objects[{index}] {kind} {name}: {problem}")]
    Object {
        /// Its position in `objects`.
        index: usize,
        /// Its kind.
        kind: Kind,
        /// Its name.
        name: String,
        /// The field and what is wrong with it.
        problem: MetaError,
    },
    /// Canonical encoding failed.
    #[error(transparent)]
    Canonical(#[from] canonical::CanonicalError),
}

impl crate::error::Classify for ManifestError {
    /// Read from a bundle it is carried by a `ReadError` (verification); built by
    /// `create` it is a bug, as for any other error.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        None
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionOnly {
    format_version: Option<String>,
}

/// Checks a `MAJOR.MINOR` string against what this code reads. The grammar is
/// `^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$` (format.md section 5): one spelling per
/// version, so `+1.0`, `1`, `01.5` and `1.0.0` are refused, not read as 1.x.
pub fn check_version(v: &str) -> Result<(), ManifestError> {
    let number = |part: &str| {
        let canonical = !part.is_empty()
            && part.bytes().all(|b| b.is_ascii_digit())
            && (part == "0" || !part.starts_with('0'));
        canonical.then(|| part.parse::<u64>().ok()).flatten()
    };
    let parsed = v
        .split_once('.')
        .and_then(|(major, minor)| Some((number(major)?, number(minor)?)));
    match parsed {
        Some((FORMAT_MAJOR, _)) => Ok(()),
        Some(_) => Err(ManifestError::UnsupportedVersion {
            found: v.chars().flat_map(char::escape_default).collect(),
        }),
        None => Err(ManifestError::Malformed(format!(
            "formatVersion `{}` is not MAJOR.MINOR (two decimal numbers without leading zeros)",
            v.chars()
                .take(40)
                .flat_map(char::escape_default)
                .collect::<String>()
        ))),
    }
}

/// Gives every object its typed meta (`Meta::typed`), in chunks on up to every
/// core: as much of reading a large head as the parse itself (2,101 Nix paths). The
/// error is that of the first failing object in the manifest's order.
fn type_metas(objects: &mut [Object]) -> Result<(), ManifestError> {
    // Below a few hundred objects a thread costs more than it saves.
    let jobs = crate::pool::cores().min(objects.len() / 256).max(1);
    if jobs == 1 {
        return type_chunk(objects, 0);
    }
    let per = objects.len().div_ceil(jobs);
    let results: Vec<Result<(), ManifestError>> = std::thread::scope(|s| {
        let chunks: Vec<_> = objects
            .chunks_mut(per)
            .enumerate()
            .map(|(i, chunk)| s.spawn(move || type_chunk(chunk, i * per)))
            .collect();
        chunks
            .into_iter()
            // A panic there is a bug and is passed on as one.
            .map(|c| c.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.into_iter().collect()
}

/// [`type_metas`] for the objects from index `first` on.
fn type_chunk(objects: &mut [Object], first: usize) -> Result<(), ManifestError> {
    for (i, o) in objects.iter_mut().enumerate() {
        if let Meta::Untyped(fields) = &mut o.meta {
            o.meta = Meta::typed(&o.kind, std::mem::take(fields)).map_err(|problem| {
                ManifestError::Object {
                    index: first + i,
                    kind: o.kind.clone(),
                    name: crate::text::escaped(&o.name).into_owned(),
                    problem,
                }
            })?;
        }
    }
    Ok(())
}

impl Manifest {
    /// The version string this code writes.
    pub fn current_version() -> String {
        format!("{FORMAT_MAJOR}.{FORMAT_MINOR}")
    }

    /// Canonical bytes; the bundle digest is their sha256.
    pub fn to_canonical(&self) -> Result<Vec<u8>, ManifestError> {
        Ok(canonical::to_vec(self)?)
    }

    /// Parses and validates manifest bytes. The version is checked before anything
    /// else so a newer bundle gets "upgrade" rather than a confusing field error.
    /// Each object's meta is typed here ([`Meta::typed`]): a bad field is an error
    /// naming the object and the field.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        // A version this code does not read is what an error says first, whatever
        // else is wrong; it is looked for on its own only when the manifest does not
        // parse (reading only `formatVersion` still scans all of a 2 MiB manifest).
        let mut m: Manifest = match serde_json::from_slice::<Manifest>(bytes) {
            Ok(m) => {
                check_version(&m.format_version)?;
                m
            }
            Err(e) => {
                let v: VersionOnly = serde_json::from_slice(bytes)
                    .map_err(|e| ManifestError::Malformed(e.to_string()))?;
                let version = v
                    .format_version
                    .ok_or_else(|| ManifestError::Malformed("missing formatVersion".into()))?;
                check_version(&version)?;
                return Err(ManifestError::Malformed(e.to_string()));
            }
        };
        type_metas(&mut m.objects)?;
        m.validate()?;
        Ok(m)
    }

    /// Checks the structural rules of bundle-spec/format.md: unique blobs, objects
    /// that only name listed blobs, and offsets laid out back to back exactly as the
    /// tar layout puts them (so a reader can trust offsets without scanning).
    pub fn validate(&self) -> Result<(), ManifestError> {
        let bad = |m: String| Err(ManifestError::Inconsistent(m));
        let expect_files = [OCI_LAYOUT_PATH, INDEX_PATH];
        if self.files.len() != 2
            || self
                .files
                .iter()
                .zip(expect_files)
                .any(|(f, p)| f.path != p)
        {
            return bad(format!(
                "files must be exactly {expect_files:?} in that order"
            ));
        }
        if let Some(d) = &self.delta {
            self.check_delta(d)?;
        }
        // Every lookup below goes through this map: a linear `blob()` per object
        // made validating a 20,000-object manifest quadratic.
        let mut seen: HashMap<Digest, &BlobEntry> = HashMap::with_capacity(self.blobs.len());
        for b in &self.blobs {
            if seen.insert(b.digest, b).is_some() {
                return bad(format!("blob {} is listed twice", b.digest));
            }
            if b.encoding.is_some() != b.content.is_some() {
                return bad(format!(
                    "blob {} must have both or neither of encoding and content",
                    b.digest
                ));
            }
            if b.offset.is_none() && self.delta.is_none() {
                return bad(format!(
                    "blob {} has no offset but the bundle is not a delta",
                    b.digest
                ));
            }
        }
        for (index, o) in self.objects.iter().enumerate() {
            for d in o.blobs.iter().chain(std::iter::once(&o.digest)) {
                if !seen.contains_key(d) {
                    return bad(format!(
                        "{} `{}` needs blob {d}, which is not listed",
                        o.kind,
                        crate::text::escaped(&o.name)
                    ));
                }
            }
            self.check_object(index, o, seen[&o.digest])?;
        }
        // A host runs one system: two toplevels to activate would leave which one
        // runs to the order of the activations (section 14.8).
        let systems: Vec<&Object> = self
            .nix_paths()
            .filter(|(_, n)| n.activate.is_some())
            .map(|(o, _)| o)
            .collect();
        if let [first, second, ..] = systems.as_slice() {
            return bad(format!(
                "two nix-path objects ask to be activated (`{}`, `{}`): a bundle carries at most one NixOS system",
                crate::text::escaped(&first.name),
                crate::text::escaped(&second.name)
            ));
        }
        // A path on the target holds one file: two `file` objects of one name would
        // leave which one is installed to the order of the writes.
        let mut targets = HashSet::new();
        for o in self.objects.iter().filter(|o| o.kind == Kind::File) {
            if !targets.insert(o.name.as_str()) {
                return bad(format!("two file objects install `{}`", o.name));
            }
        }
        // Checked arithmetic: sizes are hostile until validated. The whole file must
        // stay far below u64::MAX, so that every sum a reader makes later (data
        // start + offset + size + end marker) fits.
        const MAX_DATA_LEN: u64 = 1 << 62;
        let mut expected = HEADER_LEN;
        let stored = self
            .files
            .iter()
            .map(|f| (f.path.clone(), f.offset, f.size))
            .chain(
                self.blobs
                    .iter()
                    .filter_map(|b| b.offset.map(|o| (b.path(), o, b.size))),
            );
        for (path, offset, size) in stored {
            if offset != expected {
                return bad(format!(
                    "{path} is at offset {offset}, the layout puts it at {expected}"
                ));
            }
            expected = checked_padded(size)
                .and_then(|p| p.checked_add(offset))
                .and_then(|end| end.checked_add(HEADER_LEN))
                .filter(|&e| e <= MAX_DATA_LEN)
                .ok_or_else(|| {
                    ManifestError::Inconsistent(format!(
                        "{path} has size {size}: the bundle would be larger than {MAX_DATA_LEN} bytes"
                    ))
                })?;
        }
        Ok(())
    }

    /// The rules of section 10 for a delta's own fields: the full bundle's head in
    /// the first two blobs, stored; one `expected` entry per blob without an offset,
    /// naming a base; each base's counts equal to what `expected` gives it.
    fn check_delta(&self, d: &Delta) -> Result<(), ManifestError> {
        let bad = |m: String| Err(ManifestError::Inconsistent(format!("delta: {m}")));
        if d.against.is_empty() {
            return bad("`against` names no base".into());
        }
        for (i, (digest, media_type)) in [
            (d.full.manifest, FULL_MANIFEST_MEDIA_TYPE),
            (d.full.signatures, FULL_SIGNATURES_MEDIA_TYPE),
        ]
        .into_iter()
        .enumerate()
        {
            match self.blobs.get(i) {
                Some(b)
                    if b.digest == digest
                        && b.media_type == media_type
                        && b.offset.is_some()
                        && b.encoding.is_none()
                        && b.size <= MAX_HEAD_ENTRY => {}
                _ => {
                    return bad(format!(
                        "blobs[{i}] must be the full bundle's head blob {digest} ({media_type}, stored, at most {MAX_HEAD_ENTRY} bytes)"
                    ))
                }
            }
        }
        if self.blobs[2..].iter().any(|b| {
            b.media_type == FULL_MANIFEST_MEDIA_TYPE || b.media_type == FULL_SIGNATURES_MEDIA_TYPE
        }) {
            return bad("only blobs[0] and blobs[1] may hold the full bundle's head".into());
        }
        let unstored: Vec<&BlobEntry> = self.blobs.iter().filter(|b| b.offset.is_none()).collect();
        if unstored.len() != d.expected.len() {
            return bad(format!(
                "{} blobs have no offset but `expected` has {} entries",
                unstored.len(),
                d.expected.len()
            ));
        }
        let mut counts = vec![(0u64, 0u64); d.against.len()];
        for (b, &i) in unstored.iter().zip(&d.expected) {
            let Some(c) = counts.get_mut(i as usize) else {
                return bad(format!(
                    "blob {} is expected from base {i}, but `against` has {} bases",
                    b.digest,
                    d.against.len()
                ));
            };
            c.0 += 1;
            c.1 += b.size;
        }
        for (i, (base, (blobs, bytes))) in d.against.iter().zip(counts).enumerate() {
            if base.blobs != blobs || base.bytes != bytes {
                return bad(format!(
                    "against[{i}] says it holds {} blobs ({} bytes), `expected` gives it {blobs} ({bytes} bytes)",
                    base.blobs, base.bytes
                ));
            }
            if (base.kind == BaseKind::Bundle) != base.version.is_some()
                || (base.kind == BaseKind::Inventory) != base.created.is_some()
            {
                return bad(format!(
                    "against[{i}]: a bundle base has a `version`, an inventory base a `created`"
                ));
            }
        }
        Ok(())
    }

    /// For a delta, each blob it does not store with the base that holds it, in
    /// `blobs` order; empty for a full bundle.
    pub fn expected(&self) -> Vec<(&BlobEntry, &DeltaBase)> {
        let Some(d) = &self.delta else {
            return Vec::new();
        };
        self.blobs
            .iter()
            .filter(|b| b.offset.is_none())
            .zip(&d.expected)
            .filter_map(|(b, &i)| d.against.get(i as usize).map(|base| (b, base)))
            .collect()
    }

    /// The rules of an object's kind that its meta alone cannot check: the meta is
    /// the kind's own, a `nix-path` is named by a store path and its root blob (`blob`,
    /// the entry of `o.digest`) is the NAR its meta describes, a `chart`'s meta digest
    /// is its own.
    fn check_object(
        &self,
        index: usize,
        o: &Object,
        blob: &BlobEntry,
    ) -> Result<(), ManifestError> {
        let fail = |field: &str, problem: String| {
            Err(ManifestError::Object {
                index,
                kind: o.kind.clone(),
                name: crate::text::escaped(&o.name).into_owned(),
                problem: MetaError {
                    field: field.into(),
                    problem,
                },
            })
        };
        match o.meta.kind() {
            Some(k) if k != o.kind => {
                return fail("meta", format!("is the meta of a {k} object"));
            }
            None if Meta::has_typed(&o.kind) => {
                return fail("meta", "was not read as its kind's meta".into())
            }
            _ => {}
        }
        match &o.meta {
            Meta::NixPath(n) => {
                if let Err(e) = StorePath::parse(&o.name) {
                    return fail("name", e.to_string());
                }
                if let Err(e) = n.check_blob(blob) {
                    return fail("digest", e);
                }
            }
            Meta::File(_) => {
                if let Err(e) = super::meta::target_components(&o.name) {
                    return fail("name", e);
                }
                if o.blobs != [o.digest] || blob.encoding.is_some() || o.size != blob.size {
                    return fail(
                        "digest",
                        format!(
                            "a file is one blob stored as it is: blobs must be [{}], without encoding, and size {}",
                            o.digest, blob.size
                        ),
                    );
                }
            }
            Meta::Referrer(r) => {
                if let Err(e) = super::referrers::check_object(&o.name, &o.digest, r) {
                    return fail(e.field(), e.to_string());
                }
            }
            Meta::Chart(c) if c.digest != o.digest => {
                return fail(
                    "meta.digest",
                    format!("is {}, the chart's own digest is {}", c.digest, o.digest),
                );
            }
            _ => {}
        }
        Ok(())
    }

    /// The objects of one kind with their typed meta, in manifest order.
    pub fn nix_paths(&self) -> impl Iterator<Item = (&Object, &super::meta::NixPathMeta)> {
        self.objects
            .iter()
            .filter_map(|o| o.meta.nix_path().map(|m| (o, m)))
    }

    /// The NixOS system toplevel the bundle asks to be activated, and how (at most
    /// one: section 14.8).
    pub fn system(&self) -> Option<(&Object, super::meta::Activation)> {
        self.nix_paths()
            .find_map(|(o, n)| n.activate.map(|a| (o, a)))
    }

    /// `image` objects with their meta.
    pub fn images(&self) -> impl Iterator<Item = (&Object, &super::meta::ImageMeta)> {
        self.objects
            .iter()
            .filter_map(|o| o.meta.image().map(|m| (o, m)))
    }

    /// `file` objects with their meta.
    pub fn files(&self) -> impl Iterator<Item = (&Object, &super::meta::FileMeta)> {
        self.objects
            .iter()
            .filter_map(|o| o.meta.file().map(|m| (o, m)))
    }

    /// `k8s-manifest` objects with their meta.
    pub fn k8s_manifests(&self) -> impl Iterator<Item = (&Object, &super::meta::K8sManifestMeta)> {
        self.objects
            .iter()
            .filter_map(|o| o.meta.k8s_manifest().map(|m| (o, m)))
    }

    /// End of the last stored entry's data, padding included, relative to the data
    /// section; the tar end marker follows.
    pub fn data_len(&self) -> u64 {
        let last = self
            .files
            .iter()
            .map(|f| (f.offset, f.size))
            .chain(
                self.blobs
                    .iter()
                    .filter_map(|b| b.offset.map(|o| (o, b.size))),
            )
            .max_by_key(|(o, _)| *o);
        match last {
            Some((o, s)) => o + padded(s),
            None => 0,
        }
    }

    /// The blob entry for a digest.
    pub fn blob(&self, d: &Digest) -> Option<&BlobEntry> {
        self.blobs.iter().find(|b| &b.digest == d)
    }

    /// Objects that use a blob, for error messages that name what is affected.
    pub fn users_of(&self, d: &Digest) -> Vec<&Object> {
        self.objects
            .iter()
            .filter(|o| o.digest == *d || o.blobs.contains(d))
            .collect()
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "test fixtures: std::fs and the tools that make them, where a failure is the test's"
)]
mod tests {
    use super::*;

    #[test]
    fn bundle_names_are_file_names_as_they_are() {
        for ok in ["edge-site", "a", "Team_x.2", "0", &"x".repeat(MAX_NAME_LEN)] {
            assert!(valid_bundle_name(ok), "{ok}");
        }
        for bad in [
            "",
            "team x",
            ".hidden",
            "..",
            "-x",
            "_x",
            "a/b",
            "a\\b",
            "é",
            "a\nb",
            "a\u{1b}[1m",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(!valid_bundle_name(bad), "{bad:?}");
        }
    }
    use crate::bundle::meta::NixPathMeta;
    use crate::bundle::writer::BundleBuilder;
    use crate::nixfmt::{NarHash, NAR_ZSTD_MEDIA_TYPE};
    use serde_json::{json, Value};

    const PATH: &str = "/nix/store/094qif9n4cq4fdg459qzbhg1c6wywaww-a";

    /// The canonical bytes of a small bundle's manifest: one Nix path (objects[0]) and
    /// a spec (objects[1]).
    fn manifest_json() -> Value {
        let nar = Digest::of(b"nar");
        let blob = Digest::of(b"blob");
        let spec = Digest::of(b"spec");
        let mut b = BundleBuilder::new("n", "1", 0, vec!["all".into()]);
        let entry = |digest, media_type: &str, content: Option<ContentInfo>| BlobEntry {
            digest,
            size: 4,
            media_type: media_type.into(),
            offset: None,
            encoding: content.as_ref().map(|_| Encoding::Zstd),
            content,
        };
        let content = Some(ContentInfo {
            digest: nar,
            size: 3,
        });
        b.add_blob(entry(blob, NAR_ZSTD_MEDIA_TYPE, content), 0)
            .unwrap();
        b.add_blob(entry(spec, "text/yaml", None), 0).unwrap();
        let object = |kind, name: &str, digest, meta| Object {
            kind,
            name: name.into(),
            digest,
            media_type: "x".into(),
            size: 4,
            blobs: vec![digest],
            meta,
        };
        b.add_object(object(Kind::Spec, "bundle.yaml", spec, Meta::default()))
            .unwrap();
        let nix = NixPathMeta {
            nar_hash: NarHash::from_digest(&nar),
            nar_size: 3,
            references: vec![StorePath::parse(PATH).unwrap()],
            deriver: None,
            ca: None,
            sigs: vec![],
            gc_roots: None,
            activate: None,
            extra: Default::default(),
        };
        b.add_object(object(Kind::NixPath, PATH, blob, Meta::NixPath(nix)))
            .unwrap();
        let plan = b.finish().unwrap();
        serde_json::from_slice(&plan.manifest_bytes).unwrap()
    }

    fn parse(v: &Value) -> Result<Manifest, ManifestError> {
        Manifest::parse(&canonical::to_vec(v).unwrap())
    }

    #[test]
    fn an_unknown_major_version_is_what_is_said_even_when_nothing_else_parses() {
        let mut v = manifest_json();
        v["formatVersion"] = json!("2.0");
        v["objects"] = json!("a newer layout");
        let e = parse(&v).unwrap_err();
        assert!(matches!(e, ManifestError::UnsupportedVersion { .. }), "{e}");
        v["formatVersion"] = json!("1.0");
        assert!(matches!(parse(&v), Err(ManifestError::Malformed(_))));
        v.as_object_mut().unwrap().remove("formatVersion");
        let e = parse(&v).unwrap_err();
        assert!(e.to_string().contains("missing formatVersion"), "{e}");
    }

    #[test]
    fn the_first_object_with_a_bad_meta_is_named_whichever_chunk_it_is_in() {
        // Enough objects for `type_metas` to use more than one thread (where there is
        // more than one core): the error is that of the earliest bad object.
        let mut v = manifest_json();
        let objects = v["objects"].as_array_mut().unwrap();
        let nix = objects
            .iter()
            .find(|o| o["kind"] == "nix-path")
            .unwrap()
            .clone();
        for _ in 0..1200 {
            objects.push(nix.clone());
        }
        objects[1100]["meta"]["narSize"] = json!("many");
        objects[500]["meta"]["narSize"] = json!("some");
        match Manifest::parse(&serde_json::to_vec(&v).unwrap()) {
            Err(ManifestError::Object { index, .. }) => assert_eq!(index, 500),
            other => panic!("expected the meta of object 500 to be refused: {other:?}"),
        }
    }

    #[test]
    fn metas_of_a_newer_minor_version_round_trip_byte_for_byte() {
        let mut v = manifest_json();
        v["formatVersion"] = json!("1.7");
        v["objects"][0]["meta"]["signedBy"] = json!({"k": ["x", 1]});
        v["objects"][1]["meta"] = json!({"renderedWith": "y"});
        let bytes = canonical::to_vec(&v).unwrap();
        let m = Manifest::parse(&bytes).unwrap();
        assert_eq!(m.to_canonical().unwrap(), bytes);
        let (o, nix) = m.nix_paths().next().unwrap();
        assert_eq!(o.name, PATH);
        assert_eq!(nix.extra["signedBy"], json!({"k": ["x", 1]}));
    }

    #[test]
    fn the_system_to_activate_is_one_of_three_actions() {
        let mut v = manifest_json();
        v["objects"][0]["meta"]["activate"] = json!("switch");
        let m = parse(&v).unwrap();
        let (_, nix) = m.nix_paths().next().unwrap();
        assert_eq!(nix.activate, Some(crate::bundle::meta::Activation::Switch));
        assert_eq!(m.to_canonical().unwrap(), canonical::to_vec(&v).unwrap());
        v["objects"][0]["meta"]["activate"] = json!("dry-activate");
        let e = parse(&v).unwrap_err().to_string();
        assert!(
            e.contains("meta.activate: unknown variant `dry-activate`"),
            "{e}"
        );
    }

    #[test]
    fn a_bundle_carries_at_most_one_system_to_activate() {
        let other = "/nix/store/194qif9n4cq4fdg459qzbhg1c6wywaww-b";
        let mut v = manifest_json();
        let mut second = v["objects"][0].clone();
        second["name"] = json!(other);
        v["objects"].as_array_mut().unwrap().insert(1, second);
        // Two nix-paths, one a system: fine.
        v["objects"][0]["meta"]["activate"] = json!("switch");
        let m = parse(&v).unwrap();
        assert_eq!(m.system().map(|(o, _)| o.name.as_str()), Some(PATH));
        // Both systems: refused, naming both.
        v["objects"][1]["meta"]["activate"] = json!("boot");
        let e = parse(&v).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "two nix-path objects ask to be activated (`{PATH}`, `{other}`)"
            )) && e.contains("at most one NixOS system"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_meta_field_is_named_with_its_object() {
        let mut v = manifest_json();
        v["objects"][0]["meta"]["narSize"] = json!("3");
        let e = parse(&v).unwrap_err().to_string();
        assert!(
            e.contains(&format!(
                "objects[0] nix-path {PATH}: meta.narSize: invalid type"
            )),
            "{e}"
        );
        // The meta and the blob disagree on the NAR.
        let mut v = manifest_json();
        v["objects"][0]["meta"]["narSize"] = json!(4);
        let e = parse(&v).unwrap_err().to_string();
        assert!(
            e.contains("objects[0] nix-path") && e.contains("digest: its blob"),
            "{e}"
        );
        // A nix-path is named by a store path.
        let mut v = manifest_json();
        v["objects"][0]["name"] = json!("/etc/passwd");
        let e = parse(&v).unwrap_err().to_string();
        assert!(e.contains("objects[0] nix-path /etc/passwd: name:"), "{e}");
        // A manifest made in code must carry its kind's meta.
        let mut m = parse(&manifest_json()).unwrap();
        m.objects[0].meta = Meta::default();
        let e = m.validate().unwrap_err().to_string();
        assert!(
            e.contains("objects[0] nix-path") && e.contains("meta: "),
            "{e}"
        );
    }

    #[test]
    fn a_referrer_is_named_after_its_own_digest_and_a_cosign_tag_of_its_subject() {
        let spec = Digest::of(b"spec");
        let subject = Digest::of(b"image");
        let referrer = |name: String, meta: Value| {
            let mut v = manifest_json();
            v["objects"][1]["kind"] = json!("referrer");
            v["objects"][1]["name"] = json!(name);
            v["objects"][1]["meta"] = meta;
            parse(&v)
        };
        let name = format!("reg.example/team/app@{spec}");
        let m = referrer(name.clone(), json!({"subject": subject.to_string()})).unwrap();
        assert_eq!(m.objects[1].meta.referrer().unwrap().subject, subject);
        let tag = format!("sha256-{}.att", subject.hex());
        referrer(
            name.clone(),
            json!({"subject": subject.to_string(), "tag": tag}),
        )
        .unwrap();
        let e = referrer(
            name.clone(),
            json!({"subject": subject.to_string(), "tag": "latest"}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("meta.tag: `latest` is not one of cosign's tags"),
            "{e}"
        );
        let e = referrer(
            format!("reg.example/team/app@{subject}"),
            json!({"subject": subject.to_string()}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("name: a referrer is named"), "{e}");
        let e = referrer(name, json!({})).unwrap_err().to_string();
        assert!(e.contains("meta: missing field `subject`"), "{e}");
    }

    /// bundle-spec/schema says of metas what the parser checks.
    #[test]
    fn the_schema_agrees_with_the_parser_on_metas() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/bundle-spec/schema/manifest.schema.json"
        );
        let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let schema = jsonschema::validator_for(&schema).unwrap();
        let good = manifest_json();
        assert!(schema.is_valid(&good));
        assert!(parse(&good).is_ok());
        let bad: [(&str, Value); 5] = [
            ("narSize", json!("3")),
            ("narHash", json!(format!("sha256:{}", "0".repeat(64)))),
            ("references", json!(["/etc/passwd"])),
            ("gcRoots", json!(["../up"])),
            ("sigs", json!(["k:x\nURL: y"])),
        ];
        for (field, value) in bad {
            let mut v = good.clone();
            v["objects"][0]["meta"][field] = value;
            assert!(!schema.is_valid(&v), "the schema accepts a bad {field}");
            assert!(parse(&v).is_err(), "the parser accepts a bad {field}");
        }
        let mut v = good.clone();
        v["objects"][0]["meta"]
            .as_object_mut()
            .unwrap()
            .remove("sigs");
        assert!(!schema.is_valid(&v) && parse(&v).is_err());
    }
}
