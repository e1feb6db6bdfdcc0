//! The SPDX 2.3 JSON writer (format.md section 17.2).
//!
//! The document DESCRIBES the bundle, a package that CONTAINS one package per
//! object; an image CONTAINS its layers (one package per layer blob, shared by the
//! images that share it), a Nix path DEPENDS_ON its references, a document
//! DEPENDS_ON the images it runs. SPDX packages have no free-form properties, so
//! the facts CycloneDX keeps as properties are the package's `comment`, one
//! `name: value` a line.
//!
//! As in the CycloneDX writer, the document is made of borrowing structs whose
//! fields are declared in canonical key order, and `packages` and `relationships`
//! are made one entry at a time as they are written, each by its own walk over
//! the [`Graph`], so no copy of the document is held.

use std::collections::{BTreeMap, BTreeSet};

use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};

use super::{uuid_of, Component, Graph};
use crate::bundle::canonical::{self, CanonicalError};
use crate::bundle::digest::Digest;
use crate::bundle::manifest::{BlobEntry, Kind};
use crate::time::rfc3339;

/// The bundle's package.
const BUNDLE_ID: &str = "SPDXRef-bundle";

/// An SPDX id for a component id: its kind and the sha256 of the id, since names
/// hold characters SPDX ids may not (`SPDXRef-[A-Za-z0-9.-]+`).
fn spdx_id(c: &Component) -> String {
    format!(
        "SPDXRef-{}-{}",
        c.object.kind.as_str(),
        Digest::of(c.id.as_bytes()).hex()
    )
}

/// The package of a layer blob.
fn layer_id(b: &BlobEntry) -> String {
    format!("SPDXRef-blob-{}", b.digest.hex())
}

fn comment(p: &[(String, String)]) -> String {
    p.iter()
        .map(|(n, v)| format!("{n}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The document's top level.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'g> {
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    creation_info: CreationInfo,
    data_license: &'static str,
    document_namespace: String,
    name: String,
    packages: Packages<'g>,
    relationships: Relationships<'g>,
    spdx_version: &'static str,
}

#[derive(Serialize)]
struct CreationInfo {
    created: String,
    creators: [String; 1],
}

/// A package: the bundle, an object or a layer blob.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package<'g> {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    checksums: Option<[Checksum; 1]>,
    comment: String,
    download_location: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_refs: Option<[ExternalRef<'g>; 1]>,
    files_analyzed: bool,
    name: &'g str,
    primary_package_purpose: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<&'g str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Checksum {
    algorithm: &'static str,
    checksum_value: String,
}

impl Checksum {
    fn sha256(hex: String) -> Option<[Checksum; 1]> {
        Some([Checksum {
            algorithm: "SHA256",
            checksum_value: hex,
        }])
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef<'g> {
    reference_category: &'static str,
    reference_locator: &'g str,
    reference_type: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship<'a> {
    related_spdx_element: &'a str,
    relationship_type: &'static str,
    spdx_element_id: &'a str,
}

fn package<'g>(c: &'g Component<'g>) -> Package<'g> {
    let purpose = match &c.object.kind {
        Kind::Image => "CONTAINER",
        Kind::NixPath => "LIBRARY",
        Kind::Chart => "APPLICATION",
        _ => "FILE",
    };
    Package {
        spdx_id: spdx_id(c),
        checksums: Checksum::sha256(c.content.hex()),
        comment: comment(&c.properties),
        download_location: "NOASSERTION",
        external_refs: c.purl.as_deref().map(|purl| {
            [ExternalRef {
                reference_category: "PACKAGE-MANAGER",
                reference_locator: purl,
                reference_type: "purl",
            }]
        }),
        files_analyzed: false,
        name: &c.name,
        primary_package_purpose: purpose,
        version_info: c.version.as_deref(),
    }
}

/// The package of a layer blob; named by its digest, kept in `name`.
fn layer_package<'g>(b: &BlobEntry, name: &'g str) -> Package<'g> {
    Package {
        spdx_id: layer_id(b),
        checksums: Checksum::sha256(b.digest.hex()),
        comment: comment(&[
            ("gapbundle:mediaType".into(), b.media_type.clone()),
            ("gapbundle:size".into(), b.size.to_string()),
        ]),
        download_location: "NOASSERTION",
        external_refs: None,
        files_analyzed: false,
        name,
        primary_package_purpose: "ARCHIVE",
        version_info: None,
    }
}

/// The bundle's package, then each object's, each followed by those of its
/// layers not listed yet.
struct Packages<'g>(&'g Graph<'g>);

impl Serialize for Packages<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let g = self.0;
        let m = g.manifest;
        let mut seq = s.serialize_seq(None)?;
        seq.serialize_element(&Package {
            spdx_id: BUNDLE_ID.into(),
            checksums: None,
            comment: comment(&g.bundle_properties()),
            download_location: "NOASSERTION",
            external_refs: None,
            files_analyzed: false,
            name: &m.name,
            primary_package_purpose: "ARCHIVE",
            version_info: Some(&m.version),
        })?;
        let mut layers_seen = BTreeSet::new();
        for c in &g.components {
            seq.serialize_element(&package(c))?;
            for b in &c.layers {
                if layers_seen.insert(b.digest) {
                    let name = b.digest.to_string();
                    seq.serialize_element(&layer_package(b, &name))?;
                }
            }
        }
        seq.end()
    }
}

/// The document DESCRIBES the bundle; then, per object, the bundle CONTAINS it,
/// it CONTAINS its layers and DEPENDS_ON what it depends on.
struct Relationships<'g>(&'g Graph<'g>);

impl Serialize for Relationships<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let g = self.0;
        // A dependency by its component id, for its SPDX id.
        let by_id: BTreeMap<&str, &Component> =
            g.components.iter().map(|c| (c.id.as_str(), c)).collect();
        let mut seq = s.serialize_seq(None)?;
        let mut put = |from: &str, kind: &'static str, to: &str| {
            seq.serialize_element(&Relationship {
                related_spdx_element: to,
                relationship_type: kind,
                spdx_element_id: from,
            })
        };
        put("SPDXRef-DOCUMENT", "DESCRIBES", BUNDLE_ID)?;
        for c in &g.components {
            let id = spdx_id(c);
            // The bundle carries every object (the dependency graph is CycloneDX's
            // `dependencies` and the DEPENDS_ON below).
            put(BUNDLE_ID, "CONTAINS", &id)?;
            for b in &c.layers {
                put(&id, "CONTAINS", &layer_id(b))?;
            }
            for dep in &c.depends_on {
                if let Some(to) = by_id.get(dep.as_str()) {
                    put(&id, "DEPENDS_ON", &spdx_id(to))?;
                }
            }
        }
        seq.end()
    }
}

/// Writes the document to `out`.
pub(super) fn write<W: std::io::Write>(
    g: &Graph,
    tool: &str,
    out: W,
) -> Result<(), CanonicalError> {
    let m = g.manifest;
    let doc = Document {
        spdx_id: "SPDXRef-DOCUMENT",
        creation_info: CreationInfo {
            created: rfc3339(m.created),
            creators: [format!("Tool: gapbundle-{tool}")],
        },
        data_license: "CC0-1.0",
        document_namespace: format!("urn:uuid:{}", uuid_of(&g.identity)),
        name: format!("{}-{}", m.name, m.version),
        packages: Packages(g),
        relationships: Relationships(g),
        spdx_version: "SPDX-2.3",
    };
    canonical::to_writer_pretty_in_order(out, &doc)
}
