//! Splitting a rendered YAML stream into Kubernetes documents, keeping each
//! document's bytes exactly as the tool rendered them.
//!
//! The bytes matter: they are what an importer writes to the target and what the
//! digest names, so a document is never re-serialized. The stream is cut at YAML
//! document markers (`---` and `...` at the start of a line), which the YAML spec
//! forbids anywhere else at column 0, and every piece is then parsed with
//! serde_yaml_ng. As a guard, the whole stream is also parsed with serde_yaml_ng's
//! multi-document deserializer, and both must agree on the number of documents.
//! Empty documents (only comments or white space, as Helm renders for disabled
//! templates) are dropped.

use serde::Deserialize;
use serde_yaml_ng::Value;

use super::K8sError;

/// One rendered Kubernetes object.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The document's bytes as rendered (without the `---` marker), ending in `\n`.
    pub bytes: Vec<u8>,
    /// The parsed document.
    pub value: Value,
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.namespace`, else the namespace it is rendered into; `None` for
    /// cluster-scoped kinds.
    pub namespace: Option<String>,
    /// `metadata.name` (or `metadata.generateName`).
    pub name: String,
}

impl Document {
    /// `Deployment apps/web`, or `Namespace apps` for cluster-scoped objects.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

/// Kinds that live outside any namespace: they never get the default namespace.
/// An unknown kind is treated as namespaced, as `kubectl apply` would.
const CLUSTER_SCOPED: &[&str] = &[
    "APIService",
    "CSIDriver",
    "CSINode",
    "CertificateSigningRequest",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "FlowSchema",
    "IngressClass",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "RuntimeClass",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
];

/// Whether `kind` is a cluster-scoped kind gapbundle knows.
pub fn is_cluster_scoped(kind: &str) -> bool {
    CLUSTER_SCOPED.contains(&kind)
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// Cuts a stream at document markers. Text after `---` on the marker line belongs to
/// the next document; `...` ends a document.
fn cut(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut cur = String::new();
    for line in text.split_inclusive('\n') {
        if is_marker(line, "---") {
            chunks.push(std::mem::take(&mut cur));
            let rest = line[3..].trim_start_matches([' ', '\t']);
            if !rest.trim().is_empty() {
                cur.push_str(rest);
            }
        } else if is_marker(line, "...") {
            chunks.push(std::mem::take(&mut cur));
        } else {
            cur.push_str(line);
        }
    }
    chunks.push(cur);
    chunks
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = v;
    for p in path {
        v = v.get(*p)?;
    }
    v.as_str()
}

/// Splits `text` (the output of `helm template`, `kubectl kustomize`, or a manifest
/// file) into documents. `source_name` is used in errors; `default_namespace` is the
/// namespace the input was rendered into, recorded for namespaced objects that do not
/// name one.
pub fn split_documents(
    source_name: &str,
    text: &[u8],
    default_namespace: Option<&str>,
) -> Result<Vec<Document>, K8sError> {
    let text = std::str::from_utf8(text).map_err(|_| K8sError::NotText {
        source_name: source_name.to_string(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let yaml_err = |index: usize, e: serde_yaml_ng::Error| K8sError::Yaml {
        source_name: source_name.to_string(),
        index,
        reason: e.to_string(),
    };

    // The guard: serde_yaml_ng's own view of the stream.
    let mut expected = 0;
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(de).map_err(|e| yaml_err(i, e))?;
        if !v.is_null() {
            expected += 1;
        }
    }

    let mut docs = Vec::new();
    for chunk in cut(text) {
        let value: Value = serde_yaml_ng::from_str(&chunk).map_err(|e| yaml_err(docs.len(), e))?;
        if value.is_null() {
            continue;
        }
        let index = docs.len();
        let bad = |reason: &str| K8sError::NotAnObject {
            source_name: source_name.to_string(),
            index,
            reason: reason.to_string(),
        };
        if !value.is_mapping() {
            return Err(bad("it is not a mapping"));
        }
        let kind = str_at(&value, &["kind"])
            .filter(|k| !k.is_empty())
            .ok_or_else(|| bad("it has no `kind`"))?
            .to_string();
        let api_version = str_at(&value, &["apiVersion"])
            .filter(|k| !k.is_empty())
            .ok_or_else(|| bad("it has no `apiVersion`"))?
            .to_string();
        let name = str_at(&value, &["metadata", "name"])
            .or_else(|| str_at(&value, &["metadata", "generateName"]))
            .filter(|n| !n.is_empty())
            .ok_or_else(|| bad("it has no `metadata.name`"))?
            .to_string();
        let namespace = match str_at(&value, &["metadata", "namespace"]) {
            Some(ns) if !ns.is_empty() => Some(ns.to_string()),
            _ if is_cluster_scoped(&kind) || kind.ends_with("List") => None,
            _ => default_namespace
                .filter(|n| !n.is_empty())
                .map(str::to_string),
        };
        let mut bytes = chunk.into_bytes();
        if !bytes.ends_with(b"\n") {
            bytes.push(b'\n');
        }
        docs.push(Document {
            bytes,
            value,
            api_version,
            kind,
            namespace,
            name,
        });
    }
    if docs.len() != expected {
        return Err(K8sError::Yaml {
            source_name: source_name.to_string(),
            index: docs.len(),
            reason: format!(
                "the stream has {expected} documents but splitting it at `---` lines gave {}; \
                 put each document marker on a line of its own",
                docs.len()
            ),
        });
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELM: &str = "---\n# Source: web/templates/sa.yaml\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n---\n# Source: web/templates/empty.yaml\n---\n# Source: web/templates/deploy.yaml\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: other\nspec:\n  template:\n    spec:\n      containers:\n      - image: a/b:1\n";

    #[test]
    fn splits_keeps_bytes_and_drops_empty_documents() {
        let d = split_documents("chart:web", HELM.as_bytes(), Some("apps")).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(
            std::str::from_utf8(&d[0].bytes).unwrap(),
            "# Source: web/templates/sa.yaml\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n"
        );
        assert_eq!(d[0].namespace.as_deref(), Some("apps"));
        assert_eq!(d[1].namespace.as_deref(), Some("other"));
        assert_eq!(d[1].describe(), "Deployment other/web");
        assert_eq!(d[1].api_version, "apps/v1");
    }

    #[test]
    fn block_scalars_with_dashes_and_end_markers() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\ndata:\n  x: |\n    ---\n    not a marker\n...\n--- \napiVersion: v1\nkind: Namespace\nmetadata: {name: apps}";
        let d = split_documents("manifests:a.yaml", text.as_bytes(), Some("default")).unwrap();
        assert_eq!(d.len(), 2);
        assert!(std::str::from_utf8(&d[0].bytes)
            .unwrap()
            .contains("    ---\n"));
        assert_eq!(d[1].namespace, None, "Namespace is cluster-scoped");
        assert!(d[1].bytes.ends_with(b"}\n"));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for (text, want) in [
            ("kind: [", "not valid YAML"),
            ("- a\n- b\n", "not a mapping"),
            ("apiVersion: v1\nmetadata: {name: x}\n", "no `kind`"),
            ("apiVersion: v1\nkind: Pod\n", "no `metadata.name`"),
        ] {
            let e = split_documents("manifests:x.yaml", text.as_bytes(), None).unwrap_err();
            assert!(e.to_string().contains(want), "{text:?}: {e}");
            assert!(
                e.to_string().starts_with("manifests:x.yaml: document 0"),
                "{e}"
            );
        }
        let e = split_documents("s", &[0xff, 0xfe], None).unwrap_err();
        assert!(matches!(e, K8sError::NotText { .. }));
        assert!(split_documents("s", b"", None).unwrap().is_empty());
        assert!(split_documents("s", b"# only a comment\n---\n", None)
            .unwrap()
            .is_empty());
    }
}
