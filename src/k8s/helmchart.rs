//! Chart values and K3s `HelmChart` resources.
//!
//! With `chartMode: helmchart` a bundle carries, instead of a chart's rendered
//! documents, one `HelmChart` resource (`helm.cattle.io/v1`) holding the chart
//! archive itself (`spec.chartContent`, base64) and the values (`spec.valuesContent`),
//! so that K3s's helm controller installs and owns the release on the target.

use base64::Engine as _;
use serde_yaml_ng::{Mapping, Value};

/// Merges chart values the way Helm does for `-f a.yaml -f b.yaml`: later values win,
/// maps merge key by key, anything else (lists included) is replaced, and a `null`
/// deletes the key.
pub fn merge_values(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(existing) = b.get_mut(k) {
                    if existing.is_mapping() && v.is_mapping() {
                        merge_values(existing, v);
                    } else {
                        *existing = v.clone();
                    }
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, o) if !o.is_null() => *b = o.clone(),
        _ => {}
    }
}

/// The values YAML to give a `HelmChart`: empty when there are none.
pub fn values_yaml(merged: &Value) -> Result<String, serde_yaml_ng::Error> {
    match merged {
        Value::Null => Ok(String::new()),
        Value::Mapping(m) if m.is_empty() => Ok(String::new()),
        v => serde_yaml_ng::to_string(v),
    }
}

/// A K3s `HelmChart` resource for a release: in `kube-system` (where K3s's helm
/// controller watches), installing into `target_namespace` the chart archive `tgz`
/// with `values_yaml`; with `create_namespace`, K3s's helm controller creates the
/// target namespace when it is missing (`spec.createNamespace`).
pub fn helmchart_document(
    release: &str,
    target_namespace: Option<&str>,
    create_namespace: bool,
    tgz: &[u8],
    values_yaml: &str,
) -> Result<Vec<u8>, serde_yaml_ng::Error> {
    let s = |x: &str| Value::String(x.to_string());
    let mut metadata = Mapping::new();
    metadata.insert(s("name"), s(release));
    metadata.insert(s("namespace"), s("kube-system"));
    let mut spec = Mapping::new();
    spec.insert(
        s("chartContent"),
        s(&base64::engine::general_purpose::STANDARD.encode(tgz)),
    );
    if let Some(ns) = target_namespace {
        spec.insert(s("targetNamespace"), s(ns));
        if create_namespace {
            spec.insert(s("createNamespace"), Value::Bool(true));
        }
    }
    if !values_yaml.is_empty() {
        spec.insert(s("valuesContent"), s(values_yaml));
    }
    let mut doc = Mapping::new();
    doc.insert(s("apiVersion"), s("helm.cattle.io/v1"));
    doc.insert(s("kind"), s("HelmChart"));
    doc.insert(s("metadata"), Value::Mapping(metadata));
    doc.insert(s("spec"), Value::Mapping(spec));
    Ok(serde_yaml_ng::to_string(&Value::Mapping(doc))?.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y(s: &str) -> Value {
        serde_yaml_ng::from_str(s).unwrap()
    }

    #[test]
    fn values_merge_like_helm() {
        let mut v = y("image: {repository: a, tag: '1'}\nlist: [1, 2]\ngone: 1\nkeep: x\n");
        merge_values(
            &mut v,
            &y("image: {tag: '2'}\nlist: [3]\ngone: null\nnew: {a: 1}\n"),
        );
        assert_eq!(
            v,
            y("image: {repository: a, tag: '2'}\nlist: [3]\nkeep: x\nnew: {a: 1}\n")
        );
        let mut n = Value::Null;
        merge_values(&mut n, &y("a: 1"));
        assert_eq!(n, y("a: 1"));
        assert_eq!(values_yaml(&Value::Null).unwrap(), "");
    }

    #[test]
    fn helmchart_round_trips() {
        let values = values_yaml(&y("replicaCount: 2\nimage: {tag: \"1.2\"}\n")).unwrap();
        let doc = helmchart_document("web", Some("apps"), true, b"\x1f\x8bchart", &values).unwrap();
        let parsed = super::super::split_documents("chart:web", &doc, None).unwrap();
        assert_eq!(parsed.len(), 1);
        let d = &parsed[0];
        assert_eq!(d.describe(), "HelmChart kube-system/web");
        assert_eq!(d.api_version, "helm.cattle.io/v1");
        let spec = d.value.get("spec").unwrap();
        let content = spec.get("chartContent").unwrap().as_str().unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(content)
                .unwrap(),
            b"\x1f\x8bchart"
        );
        assert_eq!(spec.get("targetNamespace").unwrap().as_str(), Some("apps"));
        assert_eq!(spec.get("createNamespace").unwrap().as_bool(), Some(true));
        let vc: Value =
            serde_yaml_ng::from_str(spec.get("valuesContent").unwrap().as_str().unwrap()).unwrap();
        assert_eq!(vc, y("replicaCount: 2\nimage: {tag: \"1.2\"}\n"));
        // Deterministic.
        assert_eq!(
            doc,
            helmchart_document("web", Some("apps"), true, b"\x1f\x8bchart", &values).unwrap()
        );
    }
}
