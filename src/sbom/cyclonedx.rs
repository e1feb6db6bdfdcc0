//! The CycloneDX 1.6 JSON writer (format.md section 17.1).
//!
//! The bundle is `metadata.component`; every object is a component of
//! `components` (an image's layers are components nested in it); `dependencies`
//! holds the graph: the bundle on its direct contents, each Nix path on its
//! references, each document on the images it runs.

use serde_json::{json, Map, Value};

use super::{uuid_of, Component, Graph, Subject};
use crate::bundle::manifest::Kind;
use crate::time::rfc3339;

/// The id of the bundle's own component.
const BUNDLE_REF: &str = "bundle";

fn properties(p: &[(String, String)]) -> Value {
    Value::Array(
        p.iter()
            .map(|(name, value)| json!({"name": name, "value": value}))
            .collect(),
    )
}

fn sha256(hex: String) -> Value {
    json!([{"alg": "SHA-256", "content": hex}])
}

fn component(c: &Component) -> Value {
    let kind = match &c.object.kind {
        Kind::Image => "container",
        Kind::NixPath => "library",
        Kind::Chart => "application",
        _ => "file",
    };
    let mut v = Map::new();
    v.insert("type".into(), kind.into());
    v.insert("bom-ref".into(), c.id.clone().into());
    v.insert("name".into(), c.name.clone().into());
    if let Some(version) = &c.version {
        v.insert("version".into(), version.clone().into());
    }
    v.insert("hashes".into(), sha256(c.content.hex()));
    if let Some(purl) = &c.purl {
        v.insert("purl".into(), purl.clone().into());
    }
    v.insert("properties".into(), properties(&c.properties));
    if !c.layers.is_empty() {
        let layers = c
            .layers
            .iter()
            .map(|b| {
                json!({
                    "type": "file",
                    "bom-ref": format!("{}#{}", c.id, b.digest),
                    "name": b.digest.to_string(),
                    "hashes": sha256(b.digest.hex()),
                    "properties": properties(&[
                        ("gapbundle:mediaType".into(), b.media_type.clone()),
                        ("gapbundle:size".into(), b.size.to_string()),
                    ]),
                })
            })
            .collect();
        v.insert("components".into(), Value::Array(layers));
    }
    Value::Object(v)
}

/// The document.
pub(super) fn document(g: &Graph, tool: &str) -> Value {
    let m = g.manifest;
    let mut root = Map::new();
    root.insert("type".into(), "file".into());
    root.insert("bom-ref".into(), BUNDLE_REF.into());
    root.insert("name".into(), m.name.clone().into());
    root.insert("version".into(), m.version.clone().into());
    if let Subject::Bundle { .. } = g.subject {
        root.insert(
            "description".into(),
            "A gapbundle bundle; gapbundle:digest is the sha256 of its manifest, which names the digest of every other byte".into(),
        );
    }
    root.insert("properties".into(), properties(&g.bundle_properties()));
    let mut dependencies = vec![json!({"ref": BUNDLE_REF, "dependsOn": g.roots})];
    dependencies.extend(
        g.components
            .iter()
            .map(|c| json!({"ref": c.id, "dependsOn": c.depends_on})),
    );
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "serialNumber": format!("urn:uuid:{}", uuid_of(&g.identity)),
        "version": 1,
        "metadata": {
            "timestamp": rfc3339(m.created),
            "tools": {"components": [{"type": "application", "name": "gapbundle", "version": tool}]},
            "component": Value::Object(root),
        },
        "components": g.components.iter().map(component).collect::<Vec<_>>(),
        "dependencies": dependencies,
    })
}
