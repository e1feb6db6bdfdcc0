//! The images a workload runs.
//!
//! Only the places the kubelet pulls from count: the pod spec's `containers`,
//! `initContainers` and `ephemeralContainers`, found where each workload kind keeps
//! its pod template. Anything else that merely looks like an image (a ConfigMap
//! value, an annotation, a CRD field) is not guessed at: the user lists such images
//! under `images:`.

use serde_yaml_ng::Value;

/// Where each workload kind keeps its pod spec.
fn pod_spec_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &["spec"],
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => &["spec", "template", "spec"],
        "PodTemplate" => &["template", "spec"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return None,
    })
}

const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// Images referenced by one document (a workload, or a `List` of them), in the order
/// they appear, each once. Documents of other kinds have none.
pub fn workload_images(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect(doc, &mut out, 0);
    out
}

fn collect(doc: &Value, out: &mut Vec<String>, depth: usize) {
    let Some(kind) = doc.get("kind").and_then(Value::as_str) else {
        return;
    };
    if kind.ends_with("List") && depth < 4 {
        if let Some(items) = doc.get("items").and_then(Value::as_sequence) {
            for item in items {
                collect(item, out, depth + 1);
            }
        }
        return;
    }
    let Some(path) = pod_spec_path(kind) else {
        return;
    };
    let mut spec = doc;
    for p in path {
        match spec.get(*p) {
            Some(v) => spec = v,
            None => return,
        }
    }
    for list in CONTAINER_LISTS {
        let Some(containers) = spec.get(list).and_then(Value::as_sequence) else {
            continue;
        };
        for c in containers {
            if let Some(image) = c.get("image").and_then(Value::as_str) {
                let image = image.trim();
                if !image.is_empty() && !out.iter().any(|i| i == image) {
                    out.push(image.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(yaml: &str) -> Vec<String> {
        workload_images(&serde_yaml_ng::from_str(yaml).unwrap())
    }

    #[test]
    fn every_workload_kind_and_container_list() {
        let tpl = "template:\n    spec:\n      initContainers: [{name: i, image: r/init:1}]\n      containers: [{name: a, image: r/app:1}, {name: b, image: r/app:1}]\n      ephemeralContainers: [{name: e, image: r/debug:1}]";
        for kind in [
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
        ] {
            assert_eq!(
                images(&format!("kind: {kind}\nspec:\n  {tpl}\n")),
                ["r/init:1", "r/app:1", "r/debug:1"],
                "{kind}"
            );
        }
        assert_eq!(
            images("kind: Pod\nspec:\n  containers: [{image: r/pod:1}]\n"),
            ["r/pod:1"]
        );
        assert_eq!(
            images("kind: CronJob\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          containers: [{image: r/cron:1}]\n"),
            ["r/cron:1"]
        );
        assert_eq!(
            images("kind: List\nitems:\n- kind: Pod\n  spec: {containers: [{image: r/l:1}]}\n"),
            ["r/l:1"]
        );
    }

    #[test]
    fn other_kinds_and_odd_shapes_have_no_images() {
        assert!(images("kind: ConfigMap\ndata: {image: r/x:1}\n").is_empty());
        assert!(images("kind: Deployment\nspec: 3\n").is_empty());
        assert!(images("kind: Pod\nspec: {containers: [{image: 7}, 3, {name: x}]}\n").is_empty());
        assert!(images("[1, 2]").is_empty());
    }
}
