//! Two versions of an image set, for delta bundles: v1 is `team/app:1` and
//! `team/tool:1`; v2 changes one layer of the app (`team/app:2`), keeps the tool,
//! and adds `team/extra:1`. All four share one ~1 MiB base layer. Built with the
//! real umoci once per test process and pushed with the real skopeo; digests are
//! read back from the registry, never assumed.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;
use tempfile::TempDir;

use super::fixtures::{fixture_tmp_root, umoci, umoci_insert, umoci_new_image, FIXTURE_DIR_PREFIX};
use super::{
    deterministic_bytes, manifest_config_digest, manifest_layer_digests, run, sha256_digest,
    skopeo, skopeo_raw, Registry,
};

/// The images of both versions, tag -> (repository:tag in a registry).
pub const IMAGES: [(&str, &str); 4] = [
    ("app1", "team/app:1"),
    ("app2", "team/app:2"),
    ("tool1", "team/tool:1"),
    ("extra1", "team/extra:1"),
];

/// Images of v1 and of v2 (repository:tag).
pub const V1: [&str; 2] = ["team/app:1", "team/tool:1"];
/// See [`V1`].
pub const V2: [&str; 3] = ["team/app:2", "team/tool:1", "team/extra:1"];

struct VersionsLayout {
    _dir: TempDir,
    layout: PathBuf,
}

/// The OCI layout holding the four images (tags `app1`, `app2`, `tool1`, `extra1`).
pub fn versions_layout() -> &'static Path {
    static LAYOUT: OnceLock<VersionsLayout> = OnceLock::new();
    &LAYOUT.get_or_init(build).layout
}

fn build() -> VersionsLayout {
    let dir = tempfile::Builder::new()
        .prefix(&format!(
            "{FIXTURE_DIR_PREFIX}{}-versions-",
            std::process::id()
        ))
        .tempdir_in(fixture_tmp_root())
        .expect("create fixture tempdir");
    let staging = dir.path().join("staging");
    fs::create_dir(&staging).unwrap();
    let layout = dir.path().join("layout");
    let l = layout.to_str().unwrap().to_string();
    let img = |tag: &str| format!("{l}:{tag}");
    umoci(&["init", "--layout", &l]);
    umoci_new_image(&img("base"), "amd64");
    let base = deterministic_bytes(0x0076_3264_656c_7461, 1 << 20);
    umoci_insert(&staging, &img("base"), None, "/base/blob.bin", &base);
    for (tag, file, text) in [
        ("app1", "/app/VERSION", "app 1\n"),
        ("app2", "/app/VERSION", "app 2\n"),
        ("tool1", "/tool/VERSION", "tool 1\n"),
        ("extra1", "/extra/VERSION", "extra 1\n"),
    ] {
        umoci_insert(&staging, &img("base"), Some(tag), file, text.as_bytes());
    }
    VersionsLayout { _dir: dir, layout }
}

/// Pushes the four images to `reg` (plain HTTP, no auth).
pub fn push_versions(reg: &Registry) {
    for (tag, name) in IMAGES {
        run(skopeo().args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:{tag}", versions_layout().display()),
            &format!("docker://{}", reg.reference(name)),
        ]));
    }
}

/// Every blob (manifest, config, layers) of `names` (repository:tag) in `reg`, as
/// skopeo reads them.
pub fn blobs_of(reg: &Registry, names: &[&str]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for n in names {
        let r = format!("docker://{}", reg.reference(n));
        let raw = skopeo_raw(&r, None);
        out.insert(sha256_digest(&raw));
        let m: Value = serde_json::from_slice(&raw).unwrap();
        out.insert(manifest_config_digest(&m));
        out.extend(manifest_layer_digests(&m));
    }
    out
}

/// The spec of version `v` (1 or 2) of the site, its images in `reg`.
pub fn versions_spec(reg: &Registry, v: u32) -> String {
    let images: &[&str] = if v == 1 { &V1 } else { &V2 };
    let mut s = format!("name: site\nversion: \"{v}\"\nplatforms: [linux/amd64]\nimages:\n");
    for i in images {
        s.push_str(&format!("  - ref: {}\n", reg.reference(i)));
    }
    s
}
