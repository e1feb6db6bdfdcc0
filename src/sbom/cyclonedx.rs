//! The CycloneDX 1.6 JSON writer (format.md section 17.1).
//!
//! The bundle is `metadata.component`; every object is a component of
//! `components` (an image's layers are components nested in it); `dependencies`
//! holds the graph: the bundle on its direct contents, each Nix path on its
//! references, each document on the images it runs.
//!
//! The document is a tree of borrowing structs, serialized as it is walked
//! ([`canonical::to_writer_pretty_in_order`]): each struct declares its fields in
//! canonical key order, which that writer checks, and the component lists are
//! made one entry at a time from the [`Graph`], so no copy of the document is ever
//! held (a `serde_json::Value` of 20,000 components was some 200 MiB).

use serde::{Serialize, Serializer};

use super::{uuid_of, Component, Graph, Subject};
use crate::bundle::canonical::{self, CanonicalError};
use crate::bundle::manifest::{BlobEntry, Kind};
use crate::time::rfc3339;

/// The id of the bundle's own component.
const BUNDLE_REF: &str = "bundle";

/// The document's top level.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'g> {
    bom_format: &'static str,
    components: Components<'g>,
    dependencies: Dependencies<'g>,
    metadata: Metadata<'g>,
    serial_number: String,
    spec_version: &'static str,
    version: u32,
}

#[derive(Serialize)]
struct Metadata<'g> {
    component: Root<'g>,
    timestamp: String,
    tools: Tools<'g>,
}

#[derive(Serialize)]
struct Tools<'g> {
    components: [Tool<'g>; 1],
}

#[derive(Serialize)]
struct Tool<'g> {
    name: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'g str,
}

/// The bundle, `metadata.component`.
#[derive(Serialize)]
struct Root<'g> {
    #[serde(rename = "bom-ref")]
    bom_ref: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'static str>,
    name: &'g str,
    properties: Properties<'g>,
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'g str,
}

/// One object as a component.
#[derive(Serialize)]
struct Entry<'g> {
    #[serde(rename = "bom-ref")]
    bom_ref: &'g str,
    #[serde(skip_serializing_if = "Layers::is_empty")]
    components: Layers<'g>,
    hashes: [Hash; 1],
    name: &'g str,
    properties: Properties<'g>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purl: Option<&'g str>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'g str>,
}

/// An image's layer, a component nested in the image's.
#[derive(Serialize)]
struct Layer {
    #[serde(rename = "bom-ref")]
    bom_ref: String,
    hashes: [Hash; 1],
    name: String,
    properties: [Property<'static, String>; 2],
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct Hash {
    alg: &'static str,
    content: String,
}

impl Hash {
    fn sha256(hex: String) -> [Hash; 1] {
        [Hash {
            alg: "SHA-256",
            content: hex,
        }]
    }
}

#[derive(Serialize)]
struct Property<'a, V: Serialize> {
    name: &'a str,
    value: V,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Dependency<'g, D: Serialize> {
    depends_on: D,
    #[serde(rename = "ref")]
    of: &'g str,
}

/// Name and value pairs, as `{"name", "value"}` objects.
struct Properties<'g>(&'g [(String, String)]);

impl Serialize for Properties<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(name, value)| Property {
            name,
            value: value.as_str(),
        }))
    }
}

/// Every object's component, made as it is written.
struct Components<'g>(&'g Graph<'g>);

impl Serialize for Components<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.components.iter().map(entry))
    }
}

/// An image's layers.
struct Layers<'g>(&'g Component<'g>);

impl Layers<'_> {
    fn is_empty(&self) -> bool {
        self.0.layers.is_empty()
    }
}

impl Serialize for Layers<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = self.0;
        s.collect_seq(c.layers.iter().map(|b| layer(c, b)))
    }
}

/// The bundle's dependencies, then every component's.
struct Dependencies<'g>(&'g Graph<'g>);

impl Serialize for Dependencies<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let g = self.0;
        let mut seq = s.serialize_seq(Some(g.components.len() + 1))?;
        seq.serialize_element(&Dependency {
            depends_on: &g.roots,
            of: BUNDLE_REF,
        })?;
        for c in &g.components {
            seq.serialize_element(&Dependency {
                depends_on: &c.depends_on,
                of: &c.id,
            })?;
        }
        seq.end()
    }
}

fn entry<'g>(c: &'g Component<'g>) -> Entry<'g> {
    let kind = match &c.object.kind {
        Kind::Image => "container",
        Kind::NixPath => "library",
        Kind::Chart => "application",
        _ => "file",
    };
    Entry {
        bom_ref: &c.id,
        components: Layers(c),
        hashes: Hash::sha256(c.content.hex()),
        name: &c.name,
        properties: Properties(&c.properties),
        purl: c.purl.as_deref(),
        kind,
        version: c.version.as_deref(),
    }
}

fn layer(c: &Component, b: &BlobEntry) -> Layer {
    Layer {
        bom_ref: format!("{}#{}", c.id, b.digest),
        hashes: Hash::sha256(b.digest.hex()),
        name: b.digest.to_string(),
        properties: [
            Property {
                name: "gapbundle:mediaType",
                value: b.media_type.clone(),
            },
            Property {
                name: "gapbundle:size",
                value: b.size.to_string(),
            },
        ],
        kind: "file",
    }
}

/// Writes the document to `out`.
pub(super) fn write<W: std::io::Write>(
    g: &Graph,
    tool: &str,
    out: W,
) -> Result<(), CanonicalError> {
    let m = g.manifest;
    let bundle_properties = g.bundle_properties();
    let doc = Document {
        bom_format: "CycloneDX",
        components: Components(g),
        dependencies: Dependencies(g),
        metadata: Metadata {
            component: Root {
                bom_ref: BUNDLE_REF,
                description: matches!(g.subject, Subject::Bundle { .. }).then_some(
                    "A gapbundle bundle; gapbundle:digest is the sha256 of its manifest, which names the digest of every other byte",
                ),
                name: &m.name,
                properties: Properties(&bundle_properties),
                kind: "file",
                version: &m.version,
            },
            timestamp: rfc3339(m.created),
            tools: Tools {
                components: [Tool {
                    name: "gapbundle",
                    kind: "application",
                    version: tool,
                }],
            },
        },
        serial_number: format!("urn:uuid:{}", uuid_of(&g.identity)),
        spec_version: "1.6",
        version: 1,
    };
    canonical::to_writer_pretty_in_order(out, &doc)
}
