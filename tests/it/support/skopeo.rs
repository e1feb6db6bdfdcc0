//! skopeo as the independent judge of images: what it reads from a registry, a
//! layout or an archive, and the fields of the manifests it returns.

use std::process::Command;

use serde_json::Value;

use super::{run, sha256_digest, tool, try_run};

/// A `skopeo` command with `--insecure-policy`, so a restrictive
/// `policy.json` on the developer's machine cannot change the results.
pub fn skopeo() -> Command {
    let mut cmd = tool("skopeo");
    cmd.arg("--insecure-policy");
    cmd
}

fn inspect_cmd(transport_ref: &str, creds: Option<(&str, &str)>, extra: &[&str]) -> Command {
    let mut cmd = skopeo();
    cmd.args(["inspect", "--raw"]).args(extra);
    if transport_ref.starts_with("docker://") {
        cmd.arg("--tls-verify=false");
        match creds {
            Some((u, p)) => cmd.arg(format!("--creds={u}:{p}")),
            None => cmd.arg("--no-creds"),
        };
    }
    cmd.arg(transport_ref);
    cmd
}

/// `skopeo inspect --raw` of a transport reference (`docker://…`,
/// `oci:DIR:TAG`, `oci-archive:PATH`, `docker-archive:PATH`, …), without
/// panicking: `Err` carries skopeo's stderr. `docker://` refs use plain HTTP,
/// and `creds` (or anonymous access when `None`).
pub fn try_skopeo_raw(transport_ref: &str, creds: Option<(&str, &str)>) -> Result<Vec<u8>, String> {
    try_run(&mut inspect_cmd(transport_ref, creds, &[])).map(|o| o.stdout)
}

/// Like [`try_skopeo_raw`] but panics with skopeo's stderr on failure.
pub fn skopeo_raw(transport_ref: &str, creds: Option<(&str, &str)>) -> Vec<u8> {
    try_skopeo_raw(transport_ref, creds).unwrap_or_else(|e| panic!("\n{e}\n"))
}

/// Digest (`sha256:…`) of the top-level manifest or index that skopeo sees at
/// `transport_ref`, accessed anonymously. For the docker-archive transport
/// this is the manifest skopeo synthesizes (the archive stores none).
pub fn skopeo_digest(transport_ref: &str) -> String {
    skopeo_digest_with_creds(transport_ref, None)
}

/// [`skopeo_digest`] with registry credentials.
pub fn skopeo_digest_with_creds(transport_ref: &str, creds: Option<(&str, &str)>) -> String {
    sha256_digest(&skopeo_raw(transport_ref, creds))
}

/// The raw manifest or index at `transport_ref`, parsed as JSON.
pub fn skopeo_manifest(transport_ref: &str, creds: Option<(&str, &str)>) -> Value {
    let raw = skopeo_raw(transport_ref, creds);
    serde_json::from_slice(&raw).unwrap_or_else(|e| {
        panic!(
            "skopeo returned non-JSON for {transport_ref}: {e}\n{}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// The image config (`skopeo inspect --config --raw`) at `transport_ref`.
pub fn skopeo_config(transport_ref: &str, creds: Option<(&str, &str)>) -> Value {
    let out = run(&mut inspect_cmd(transport_ref, creds, &["--config"])).stdout;
    serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "skopeo returned a non-JSON config for {transport_ref}: {e}\n{}",
            String::from_utf8_lossy(&out)
        )
    })
}

/// Layer digests of an image manifest, in order.
pub fn manifest_layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("manifest has no layers array: {manifest}"))
        .iter()
        .map(|l| str_field(l, "digest"))
        .collect()
}

/// Config digest of an image manifest.
pub fn manifest_config_digest(manifest: &Value) -> String {
    str_field(&manifest["config"], "digest")
}

/// `(os, architecture, manifest digest)` of each entry of an image index.
pub fn index_platforms(index: &Value) -> Vec<(String, String, String)> {
    index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("index has no manifests array: {index}"))
        .iter()
        .map(|m| {
            (
                str_field(&m["platform"], "os"),
                str_field(&m["platform"], "architecture"),
                str_field(m, "digest"),
            )
        })
        .collect()
}

fn str_field(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("missing string field {key:?} in {v}"))
        .to_string()
}
