//! Software bills of materials of a bundle, from its head alone: CycloneDX 1.6 JSON
//! and SPDX 2.3 JSON (format.md section 17).
//!
//! Sites behind an air gap are the ones with compliance rules, and the question
//! they ask is "what exactly is in there". Everything an SBOM needs is in the
//! signed manifest already: every object with its digest and meta, every blob with
//! its media type, so an image's layers are the blobs of its object that are
//! neither a manifest nor a config. Nothing here reads a blob, so an SBOM of a
//! 50 GB bundle, of a delta (whose head lists every object of the full bundle) or
//! of a set of volumes (whose head is in the first) takes the head and no more.
//!
//! This module is pure: a manifest in, bytes out (into the writer it is given),
//! with no clock and no randomness.
//! The same manifest and subject give the same bytes: the only time written is the
//! bundle's `created`, the serial number (CycloneDX) and the document namespace
//! (SPDX) are derived from the bundle digest, every identifier inside from the
//! object it names, and JSON objects are written with sorted keys. Both writers
//! share the walk over the manifest (`Graph`), so the two formats describe the
//! same components with the same dependencies.

mod cyclonedx;
pub mod drv_name;
pub mod purl;
mod spdx;

use std::collections::{BTreeMap, BTreeSet};

use crate::bundle::canonical::{self, CanonicalError};
use crate::bundle::digest::{lower_hex, Digest};
use crate::bundle::manifest::{BlobEntry, Kind, Manifest, Object};
use crate::bundle::oci::{is_config, is_index, is_manifest};

/// The media type of a stored CycloneDX SBOM (`sbom` objects, format.md section 17).
pub const CYCLONEDX_MEDIA_TYPE: &str = "application/vnd.cyclonedx+json";
/// The media type of a stored SPDX SBOM.
pub const SPDX_MEDIA_TYPE: &str = "application/spdx+json";

/// An SBOM format this module writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Format {
    /// CycloneDX 1.6, JSON.
    CycloneDx,
    /// SPDX 2.3, JSON.
    Spdx,
}

impl Format {
    /// The media type of documents of this format.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::CycloneDx => CYCLONEDX_MEDIA_TYPE,
            Format::Spdx => SPDX_MEDIA_TYPE,
        }
    }

    /// The name of the `sbom` object that stores a document of this format.
    pub fn object_name(self) -> &'static str {
        match self {
            Format::CycloneDx => "sbom.cdx.json",
            Format::Spdx => "sbom.spdx.json",
        }
    }

    /// The format's name as the command line spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::CycloneDx => "cyclonedx",
            Format::Spdx => "spdx",
        }
    }
}

/// What the document's root describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A bundle that exists: its digest (format.md section 5) and the public keys
    /// its envelope names, as claimed (an SBOM checks no signature; `verify` does).
    Bundle {
        /// The bundle digest.
        digest: Digest,
        /// The envelope's public keys (`NAME:BASE64`), as written.
        signers: Vec<String>,
    },
    /// The objects of a bundle being written (`create --sbom`): its digest is not
    /// known yet, since the manifest it names will hold this document. Identified
    /// by [`contents_digest`] instead.
    Contents,
}

/// The digest that identifies what a [`Subject::Contents`] document describes: the
/// sha256 of the canonical JSON (format.md section 9) of the manifest's `objects`
/// array with its `sbom` objects left out.
///
/// The array's bytes are hashed an object at a time (`[`, each object's canonical
/// bytes, a comma between, `]`: the array's canonical form), never held whole (9 MB
/// of 20,000 objects, and as much again while they were made canonical).
pub fn contents_digest(m: &Manifest) -> Digest {
    let mut h = crate::bundle::digest::Hasher::new();
    h.update(b"[");
    let objects = m.objects.iter().filter(|o| o.kind != Kind::Sbom);
    for (i, o) in objects.enumerate() {
        if i > 0 {
            h.update(b",");
        }
        h.update(&canonical::to_vec(o).expect("objects serialize canonically"));
    }
    h.update(b"]");
    h.finish().0
}

/// The document describing `m` as `subject`, in `format`, as JSON with a final
/// newline. `tool` is the program's version, named as the document's creator.
pub fn render(m: &Manifest, subject: &Subject, format: Format, tool: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write(m, subject, format, tool, &mut out)
        .expect("the documents are written in key order and hold no floats");
    out
}

/// [`render`]'s bytes, written to `out` as the document is made: what is held is
/// the graph of the components (a few short strings each), never the document
/// (`gapbundle sbom` of a 20,000-object bundle: a 13 MB document, once a 200 MiB
/// `serde_json::Value`). An error is `out`'s, as a [`CanonicalError::Json`] of an
/// I/O error; the other errors would be a bug of the writers, whose documents are
/// made in canonical key order and hold no floats.
pub fn write<W: std::io::Write>(
    m: &Manifest,
    subject: &Subject,
    format: Format,
    tool: &str,
    mut out: W,
) -> Result<(), CanonicalError> {
    let graph = Graph::of(m, subject);
    // The lock's laid-out canonical form (format.md section 9): one value, one
    // byte sequence, and a document people can diff.
    match format {
        Format::CycloneDx => cyclonedx::write(&graph, tool, &mut out)?,
        Format::Spdx => spdx::write(&graph, tool, &mut out)?,
    }
    out.write_all(b"\n").map_err(serde_json::Error::io)?;
    Ok(())
}

/// A UUID (RFC 9562 layout, version 5 and variant bits set) made of the first 16
/// bytes of `digest`: stable for one bundle, different for another. The version
/// is 5 because CycloneDX's schema only admits versions 1 to 5 and version 5 is
/// the one derived from a name (here, the digest) rather than a clock or chance.
pub fn uuid_of(digest: &Digest) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest.as_bytes()[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = lower_hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// One object of the bundle as a component of the document.
pub(crate) struct Component<'a> {
    /// The object.
    pub object: &'a Object,
    /// Its identifier, unique in the document: `<kind>:<name>`.
    pub id: String,
    /// The component's name and version (a Nix path's split as Nix does it).
    pub name: String,
    /// Its version, when it has one.
    pub version: Option<String>,
    /// The sha256 of its content: the root blob's content when it is encoded (a
    /// NAR, a large document), else the root blob's digest.
    pub content: Digest,
    /// Its package URL, where the purl spec has a type for it.
    pub purl: Option<String>,
    /// Name and value pairs worth keeping, in a stable order.
    pub properties: Vec<(String, String)>,
    /// An image's layers (blobs that are neither a manifest, an index nor a config).
    pub layers: Vec<&'a BlobEntry>,
    /// The ids of the components it depends on, sorted.
    pub depends_on: BTreeSet<String>,
}

/// The components of a bundle and what depends on what, shared by both writers.
pub(crate) struct Graph<'a> {
    /// The manifest.
    pub manifest: &'a Manifest,
    /// The subject.
    pub subject: &'a Subject,
    /// The digest the document's serial number or namespace derives from.
    pub identity: Digest,
    /// Every object, in manifest order.
    pub components: Vec<Component<'a>>,
    /// The ids the bundle (the root) depends on directly: everything but the Nix
    /// paths another path of the bundle references.
    pub roots: BTreeSet<String>,
}

impl<'a> Graph<'a> {
    fn of(m: &'a Manifest, subject: &'a Subject) -> Self {
        let identity = match subject {
            Subject::Bundle { digest, .. } => *digest,
            Subject::Contents => contents_digest(m),
        };
        let blobs: BTreeMap<&Digest, &BlobEntry> = m.blobs.iter().map(|b| (&b.digest, b)).collect();
        let objects: Vec<&Object> = match subject {
            // A stored SBOM does not describe itself (nor another stored one).
            Subject::Contents => m.objects.iter().filter(|o| o.kind != Kind::Sbom).collect(),
            Subject::Bundle { .. } => m.objects.iter().collect(),
        };
        let id = |o: &Object| format!("{}:{}", o.kind.as_str(), o.name);
        // Which document runs which image (format.md section 13.3: an image's
        // `wantedBy` names documents as `<source> <Kind> <namespace>/<name>`).
        let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for o in &objects {
            if let Some(meta) = o.meta.image() {
                for who in meta.wanted_by() {
                    wanted.entry(who.clone()).or_default().insert(id(o));
                }
            }
        }
        let nix_ids: BTreeSet<String> = objects
            .iter()
            .filter(|o| o.kind == Kind::NixPath)
            .map(|o| id(o))
            .collect();
        let mut referenced = BTreeSet::new();
        let mut components = Vec::with_capacity(objects.len());
        for o in &objects {
            let root = blobs.get(&o.digest);
            let content = root
                .and_then(|b| b.content.as_ref())
                .map(|c| c.digest)
                .unwrap_or(o.digest);
            let mut c = Component {
                object: o,
                id: id(o),
                name: o.name.clone(),
                version: None,
                content,
                purl: None,
                properties: vec![("gapbundle:kind".into(), o.kind.as_str().into())],
                layers: Vec::new(),
                depends_on: BTreeSet::new(),
            };
            if content != o.digest {
                c.properties
                    .push(("gapbundle:storedDigest".into(), o.digest.to_string()));
            }
            match &o.kind {
                Kind::Image => {
                    c.version = Some(o.digest.to_string());
                    c.purl = purl::oci(&o.name, &o.digest);
                    if let Some(meta) = o.meta.image() {
                        for p in &meta.platforms {
                            c.properties.push(("gapbundle:platform".into(), p.clone()));
                        }
                        c.properties
                            .push(("gapbundle:source".into(), meta.source.clone()));
                    }
                    c.properties
                        .push(("gapbundle:mediaType".into(), o.media_type.clone()));
                    c.layers = o
                        .blobs
                        .iter()
                        .filter(|d| **d != o.digest)
                        .filter_map(|d| blobs.get(d).copied())
                        .filter(|b| {
                            !is_index(&b.media_type)
                                && !is_manifest(&b.media_type)
                                && !is_config(&b.media_type)
                        })
                        .collect();
                }
                Kind::NixPath => {
                    let base = o.name.rsplit('/').next().unwrap_or(&o.name);
                    let pname = base.split_once('-').map_or(base, |(_, n)| n);
                    let (name, version) = drv_name::parse(pname);
                    c.name = name.to_string();
                    c.version = (!version.is_empty()).then(|| version.to_string());
                    c.properties
                        .push(("gapbundle:storePath".into(), o.name.clone()));
                    if let Some(meta) = o.meta.nix_path() {
                        c.properties
                            .push(("gapbundle:narHash".into(), meta.nar_hash.to_string()));
                        c.properties
                            .push(("gapbundle:narSize".into(), meta.nar_size.to_string()));
                        if let Some(d) = &meta.deriver {
                            c.properties
                                .push(("gapbundle:deriver".into(), d.as_str().to_string()));
                        }
                        if let Some(ca) = &meta.ca {
                            c.properties.push(("gapbundle:ca".into(), ca.clone()));
                        }
                        for r in meta.gc_roots() {
                            c.properties.push(("gapbundle:gcRoot".into(), r.clone()));
                        }
                        for r in &meta.references {
                            let rid = format!("{}:{}", Kind::NixPath.as_str(), r.as_str());
                            if r.as_str() != o.name && nix_ids.contains(&rid) {
                                referenced.insert(rid.clone());
                                c.depends_on.insert(rid);
                            }
                        }
                    }
                }
                Kind::Chart => {
                    if let Some(meta) = o.meta.chart() {
                        c.name = meta.chart.clone();
                        c.version = Some(meta.version.clone());
                        c.properties
                            .push(("gapbundle:reference".into(), o.name.clone()));
                        c.properties
                            .push(("gapbundle:source".into(), meta.source.clone()));
                    }
                }
                Kind::K8sManifest => {
                    if let Some(meta) = o.meta.k8s_manifest() {
                        c.properties
                            .push(("gapbundle:apiVersion".into(), meta.api_version.clone()));
                        c.properties
                            .push(("gapbundle:k8sKind".into(), meta.kind.clone()));
                        if let Some(ns) = &meta.namespace {
                            c.properties
                                .push(("gapbundle:namespace".into(), ns.clone()));
                        }
                        c.properties
                            .push(("gapbundle:targetFile".into(), meta.file.clone()));
                        let who = match &meta.namespace {
                            Some(ns) => format!("{} {} {ns}/{}", meta.source, meta.kind, meta.name),
                            None => format!("{} {} {}", meta.source, meta.kind, meta.name),
                        };
                        if let Some(images) = wanted.get(&who) {
                            c.depends_on.extend(images.iter().cloned());
                        }
                    }
                }
                Kind::File => {
                    if let Some(meta) = o.meta.file() {
                        c.properties
                            .push(("gapbundle:mode".into(), meta.mode.clone()));
                        c.properties
                            .push(("gapbundle:source".into(), meta.source.clone()));
                    }
                }
                Kind::Spec | Kind::Lock | Kind::Sbom | Kind::Referrer | Kind::Other(_) => {
                    c.properties
                        .push(("gapbundle:mediaType".into(), o.media_type.clone()));
                }
            }
            components.push(c);
        }
        let roots = components
            .iter()
            .map(|c| c.id.clone())
            .filter(|id| !referenced.contains(id))
            .collect();
        Graph {
            manifest: m,
            subject,
            identity,
            components,
            roots,
        }
    }

    /// Facts about the bundle itself, for the root component.
    pub fn bundle_properties(&self) -> Vec<(String, String)> {
        let m = self.manifest;
        let mut p = vec![
            (
                "gapbundle:formatVersion".to_string(),
                m.format_version.clone(),
            ),
            ("gapbundle:generator".to_string(), m.generator.clone()),
        ];
        for platform in &m.platforms {
            p.push(("gapbundle:platform".into(), platform.clone()));
        }
        match self.subject {
            Subject::Bundle { digest, signers } => {
                p.push(("gapbundle:digest".into(), digest.to_string()));
                for s in signers {
                    p.push(("gapbundle:signer".into(), s.clone()));
                }
            }
            Subject::Contents => {
                p.push(("gapbundle:contentsDigest".into(), self.identity.to_string()));
            }
        }
        if let Some(d) = &m.delta {
            p.push(("gapbundle:deltaOf".into(), d.full.manifest.to_string()));
        }
        p
    }
}

#[cfg(test)]
mod tests;
