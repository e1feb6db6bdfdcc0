//! The SPDX 2.3 JSON writer (format.md section 17.2).
//!
//! The document DESCRIBES the bundle, a package that CONTAINS one package per
//! object; an image CONTAINS its layers (one package per layer blob, shared by the
//! images that share it), a Nix path DEPENDS_ON its references, a document
//! DEPENDS_ON the images it runs. SPDX packages have no free-form properties, so
//! the facts CycloneDX keeps as properties are the package's `comment`, one
//! `name: value` a line.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::{uuid_of, Component, Graph};
use crate::bundle::digest::Digest;
use crate::bundle::manifest::Kind;
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

fn comment(p: &[(String, String)]) -> String {
    p.iter()
        .map(|(n, v)| format!("{n}: {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn relationship(from: &str, kind: &str, to: &str) -> Value {
    json!({"spdxElementId": from, "relationshipType": kind, "relatedSpdxElement": to})
}

fn package(c: &Component) -> Value {
    let purpose = match &c.object.kind {
        Kind::Image => "CONTAINER",
        Kind::NixPath => "LIBRARY",
        Kind::Chart => "APPLICATION",
        _ => "FILE",
    };
    let mut v = Map::new();
    v.insert("SPDXID".into(), spdx_id(c).into());
    v.insert("name".into(), c.name.clone().into());
    if let Some(version) = &c.version {
        v.insert("versionInfo".into(), version.clone().into());
    }
    v.insert("downloadLocation".into(), "NOASSERTION".into());
    v.insert("filesAnalyzed".into(), false.into());
    v.insert(
        "checksums".into(),
        json!([{"algorithm": "SHA256", "checksumValue": c.content.hex()}]),
    );
    if let Some(purl) = &c.purl {
        v.insert(
            "externalRefs".into(),
            json!([{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}]),
        );
    }
    v.insert("primaryPackagePurpose".into(), purpose.into());
    v.insert("comment".into(), comment(&c.properties).into());
    Value::Object(v)
}

/// The document.
pub(super) fn document(g: &Graph, tool: &str) -> Value {
    let m = g.manifest;
    let mut packages = vec![json!({
        "SPDXID": BUNDLE_ID,
        "name": m.name,
        "versionInfo": m.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "ARCHIVE",
        "comment": comment(&g.bundle_properties()),
    })];
    let mut relationships = vec![relationship("SPDXRef-DOCUMENT", "DESCRIBES", BUNDLE_ID)];
    let mut layers_seen = BTreeSet::new();
    let ids: BTreeMap<&str, String> = g
        .components
        .iter()
        .map(|c| (c.id.as_str(), spdx_id(c)))
        .collect();
    for c in &g.components {
        let id = &ids[c.id.as_str()];
        packages.push(package(c));
        // The bundle carries every object (the dependency graph is CycloneDX's
        // `dependencies` and the DEPENDS_ON below).
        relationships.push(relationship(BUNDLE_ID, "CONTAINS", id));
        for b in &c.layers {
            let layer = format!("SPDXRef-blob-{}", b.digest.hex());
            if layers_seen.insert(b.digest) {
                packages.push(json!({
                    "SPDXID": layer,
                    "name": b.digest.to_string(),
                    "downloadLocation": "NOASSERTION",
                    "filesAnalyzed": false,
                    "checksums": [{"algorithm": "SHA256", "checksumValue": b.digest.hex()}],
                    "primaryPackagePurpose": "ARCHIVE",
                    "comment": comment(&[
                        ("gapbundle:mediaType".into(), b.media_type.clone()),
                        ("gapbundle:size".into(), b.size.to_string()),
                    ]),
                }));
            }
            relationships.push(relationship(id, "CONTAINS", &layer));
        }
        for dep in &c.depends_on {
            if let Some(to) = ids.get(dep.as_str()) {
                relationships.push(relationship(id, "DEPENDS_ON", to));
            }
        }
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", m.name, m.version),
        "documentNamespace": format!("urn:uuid:{}", uuid_of(&g.identity)),
        "creationInfo": {
            "created": rfc3339(m.created),
            "creators": [format!("Tool: gapbundle-{tool}")],
        },
        "packages": packages,
        "relationships": relationships,
    })
}
