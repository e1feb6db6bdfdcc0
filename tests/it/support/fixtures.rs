//! Fixture images built with the real umoci from fixed bytes, mtimes and creation
//! times (the same digests in every run for a given umoci), pushed with the real
//! skopeo; and small layouts and archives on disk.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tempfile::TempDir;

use super::{
    deterministic_bytes, index_platforms, manifest_config_digest, manifest_layer_digests, run,
    sha256_digest, skopeo, skopeo_digest, tool, try_run, try_skopeo_raw, Registry,
    OCI_INDEX_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE,
};

/// Tags in the shared fixture OCI layout (see [`fixture_layout`]).
pub mod tags {
    /// linux/amd64 image: base layer + `/app/VERSION`.
    pub const APP: &str = "app-1.2";
    /// linux/amd64 image: base layer + `/tool/VERSION`.
    pub const TOOL: &str = "tool-0.3";
    /// OCI image index over [`MULTI_AMD64`] and [`MULTI_ARM64`].
    pub const MULTI: &str = "multi-1.0";
    /// linux/amd64 member of the multi-arch index.
    pub const MULTI_AMD64: &str = "multi-amd64";
    /// linux/arm64 member of the multi-arch index.
    pub const MULTI_ARM64: &str = "multi-arm64";
    /// Tiny single-layer linux/amd64 image, source of the archive fixtures.
    pub const SMALL: &str = "small";
}

/// Size of the shared base layer's payload file.
pub const BASE_BLOB_SIZE: usize = 1 << 20;

/// Fixed mtime for fixture files so umoci produces the same layer bytes
/// every time (the base layer digest is stable across test runs).
const FIXTURE_MTIME: Duration = Duration::from_secs(1_600_000_000);
/// The same instant, for the config's `created` and history entries, so the
/// configs and manifests are reproducible too (for a given umoci version).
const FIXTURE_CREATED: &str = "2020-09-13T12:26:40Z";

/// One single-platform image as pushed to a registry, with digests as the
/// registry reports them (via skopeo).
#[derive(Debug, Clone)]
pub struct FixtureImage {
    /// `127.0.0.1:PORT/team/app:1.2`.
    pub reference: String,
    /// `team/app`.
    pub repository: String,
    /// Digest of the manifest (`sha256:…`).
    pub manifest_digest: String,
    /// Digest of the image config blob.
    pub config_digest: String,
    /// Layer digests, base first.
    pub layer_digests: Vec<String>,
}

impl FixtureImage {
    /// `127.0.0.1:PORT/team/app@sha256:…`.
    pub fn reference_by_digest(&self) -> String {
        let host = self.reference.split('/').next().unwrap_or_default();
        format!("{host}/{}@{}", self.repository, self.manifest_digest)
    }

    /// `docker://` + [`FixtureImage::reference`], for skopeo.
    pub fn docker_ref(&self) -> String {
        format!("docker://{}", self.reference)
    }
}

/// One platform's entry of the multi-arch fixture.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    /// `amd64` or `arm64`.
    pub architecture: String,
    /// Digest of this platform's image manifest.
    pub manifest_digest: String,
    /// Digest of this platform's config blob.
    pub config_digest: String,
    /// This platform's layer digests.
    pub layer_digests: Vec<String>,
    /// `127.0.0.1:PORT/team/multi@sha256:…` (this platform's manifest).
    pub reference_by_digest: String,
}

/// The multi-arch fixture (`team/multi:1.0`, an OCI image index).
#[derive(Debug, Clone)]
pub struct MultiArchImage {
    /// `127.0.0.1:PORT/team/multi:1.0`.
    pub reference: String,
    /// Digest of the index.
    pub index_digest: String,
    /// The index's entries, in index order (amd64, then arm64).
    pub platforms: Vec<PlatformImage>,
}

impl MultiArchImage {
    /// The entry for `architecture` (panics if absent).
    pub fn platform(&self, architecture: &str) -> &PlatformImage {
        self.platforms
            .iter()
            .find(|p| p.architecture == architecture)
            .unwrap_or_else(|| panic!("no {architecture} in {:?}", self.platforms))
    }

    /// `docker://` + [`MultiArchImage::reference`], for skopeo.
    pub fn docker_ref(&self) -> String {
        format!("docker://{}", self.reference)
    }
}

/// Everything [`push_fixture_images`] put on one registry.
#[derive(Debug, Clone)]
pub struct Fixtures {
    /// `team/app:1.2` (linux/amd64).
    pub app: FixtureImage,
    /// `team/tool:0.3` (linux/amd64), sharing its base layer with `app`.
    pub tool: FixtureImage,
    /// `team/multi:1.0`, index of linux/amd64 + linux/arm64.
    pub multi: MultiArchImage,
    /// Digest of the ~1 MiB base layer shared by `app` and `tool`.
    pub base_layer_digest: String,
}

struct FixtureLayout {
    // Never dropped (it lives in a static): the next test process removes it,
    // see `prune_dead_fixture_dirs`.
    _dir: TempDir,
    layout: PathBuf,
}

pub(super) const FIXTURE_DIR_PREFIX: &str = "gapbundle-fixtures-";

/// The shared fixture OCI layout, built once per test process with umoci
/// (tags in [`tags`]). Treat it as read-only: several tests use it.
/// It lives under cargo's `CARGO_TARGET_TMPDIR` (`target/tmp`), in a folder
/// named after this process's pid; folders of dead processes are removed.
pub fn fixture_layout() -> &'static Path {
    static LAYOUT: OnceLock<FixtureLayout> = OnceLock::new();
    &LAYOUT.get_or_init(build_fixture_layout).layout
}

pub(super) fn fixture_tmp_root() -> PathBuf {
    let root = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    fs::create_dir_all(&root).expect("create fixture tmp root");
    root
}

/// Statics are never dropped, so each test process leaves its fixture folder
/// behind; remove those whose process (pid in the name) is gone.
fn prune_dead_fixture_dirs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(FIXTURE_DIR_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

pub(super) fn umoci(args: &[&str]) {
    run(tool("umoci").args(args));
}

/// Writes `bytes` to `path` with mode 0644 and a fixed mtime, so umoci
/// layers containing it are byte-for-byte reproducible.
fn write_fixture_file(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod fixture file");
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::UNIX_EPOCH + FIXTURE_MTIME))
        .expect("set fixture file mtime");
}

/// `umoci new` + set platform and a fixed creation time (`--no-history`
/// keeps the config small).
pub(super) fn umoci_new_image(image: &str, arch: &str) {
    umoci(&["new", "--image", image]);
    umoci(&[
        "config",
        "--no-history",
        "--image",
        image,
        "--os",
        "linux",
        "--architecture",
        arch,
        "--created",
        FIXTURE_CREATED,
    ]);
}

/// `umoci insert` of a file with the given content at `target`.
pub(super) fn umoci_insert(
    staging: &Path,
    image: &str,
    new_tag: Option<&str>,
    target: &str,
    content: &[u8],
) {
    let src = staging.join(target.trim_start_matches('/').replace('/', "_"));
    write_fixture_file(&src, content);
    let src = src.to_str().expect("utf-8 temp path");
    let mut args = vec![
        "insert",
        "--history.created",
        FIXTURE_CREATED,
        "--history.created_by",
        "gapbundle tests/support",
        "--image",
        image,
    ];
    if let Some(t) = new_tag {
        args.extend(["--tag", t]);
    }
    args.extend([src, target]);
    umoci(&args);
}

/// Reads a layout's `index.json`.
pub fn read_layout_index(layout: &Path) -> Value {
    let path = layout.join("index.json");
    let text = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&text).expect("index.json is JSON")
}

/// Descriptor tagged `tag` (annotation `org.opencontainers.image.ref.name`)
/// in a layout's `index.json`.
pub fn layout_descriptor(layout: &Path, tag: &str) -> Value {
    let index = read_layout_index(layout);
    index["manifests"]
        .as_array()
        .expect("index.json manifests")
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .cloned()
        .unwrap_or_else(|| panic!("tag {tag} not in {}/index.json: {index}", layout.display()))
}

fn build_fixture_layout() -> FixtureLayout {
    let root = fixture_tmp_root();
    prune_dead_fixture_dirs(&root);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{FIXTURE_DIR_PREFIX}{}-", std::process::id()))
        .tempdir_in(&root)
        .expect("create fixture tempdir");
    let staging = dir.path().join("staging");
    fs::create_dir(&staging).expect("mkdir staging");
    let layout = dir.path().join("layout");
    let l = layout.to_str().expect("utf-8 temp path").to_string();
    let img = |tag: &str| format!("{l}:{tag}");

    umoci(&["init", "--layout", &l]);

    // Base: one ~1 MiB incompressible layer, built once; app and tool are both
    // derived from this tag, so their first layer is the very same blob.
    umoci_new_image(&img("base"), "amd64");
    let base_bytes = deterministic_bytes(0x6761_7062_756e_646c, BASE_BLOB_SIZE);
    umoci_insert(&staging, &img("base"), None, "/base/blob.bin", &base_bytes);
    umoci_insert(
        &staging,
        &img("base"),
        Some(tags::APP),
        "/app/VERSION",
        b"app 1.2\n",
    );
    umoci_insert(
        &staging,
        &img("base"),
        Some(tags::TOOL),
        "/tool/VERSION",
        b"tool 0.3\n",
    );

    // Multi-arch: two single-platform images with different config and layer,
    // then an OCI index over them, tagged in the same layout.
    let mut members = Vec::new();
    for (tag, arch) in [(tags::MULTI_AMD64, "amd64"), (tags::MULTI_ARM64, "arm64")] {
        umoci_new_image(&img(tag), arch);
        let content = format!("multi 1.0 for linux/{arch}\n");
        umoci_insert(
            &staging,
            &img(tag),
            None,
            "/etc/fixture-arch",
            content.as_bytes(),
        );
        let desc = layout_descriptor(&layout, tag);
        members.push(json!({
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "digest": desc["digest"],
            "size": desc["size"],
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index_blob = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX_MEDIA_TYPE,
        "manifests": members,
    }))
    .unwrap();
    let index_digest = sha256_digest(&index_blob);
    let blob_path = layout
        .join("blobs/sha256")
        .join(index_digest.trim_start_matches("sha256:"));
    fs::write(&blob_path, &index_blob).expect("write index blob");

    // Small image for the archive fixtures.
    umoci_new_image(&img(tags::SMALL), "amd64");
    umoci_insert(
        &staging,
        &img(tags::SMALL),
        None,
        "/hello.txt",
        b"hello from gapbundle\n",
    );

    // Tag the index last: umoci is done with the layout by now.
    let mut index = read_layout_index(&layout);
    index["manifests"]
        .as_array_mut()
        .expect("index.json manifests")
        .push(json!({
            "mediaType": OCI_INDEX_MEDIA_TYPE,
            "digest": index_digest,
            "size": index_blob.len(),
            "annotations": {"org.opencontainers.image.ref.name": tags::MULTI},
        }));
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .expect("rewrite index.json");

    FixtureLayout { _dir: dir, layout }
}

/// `skopeo copy` from the fixture layout to `reg`, panicking with skopeo's
/// stderr and the registry log on failure.
fn push_tag(reg: &Registry, creds: Option<(&str, &str)>, tag: &str, dest: &str, all: bool) {
    let mut cmd = skopeo();
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    match creds {
        Some((u, p)) => cmd.arg(format!("--dest-creds={u}:{p}")),
        None => cmd.arg("--dest-no-creds"),
    };
    cmd.arg(format!("oci:{}:{tag}", fixture_layout().display()));
    cmd.arg(format!("docker://{dest}"));
    if let Err(e) = try_run(&mut cmd) {
        panic!(
            "{}",
            reg.failure(&format!("pushing fixture {tag} failed:\n{e}"))
        );
    }
}

fn inspect_pushed(
    reg: &Registry,
    creds: Option<(&str, &str)>,
    reference: &str,
) -> (Vec<u8>, Value) {
    let raw = try_skopeo_raw(&format!("docker://{reference}"), creds)
        .unwrap_or_else(|e| panic!("{}", reg.failure(&format!("inspecting {reference}:\n{e}"))));
    let v = serde_json::from_slice(&raw).expect("manifest JSON");
    (raw, v)
}

fn pushed_image(
    reg: &Registry,
    creds: Option<(&str, &str)>,
    repository: &str,
    tag: &str,
    layout_tag: &str,
) -> FixtureImage {
    let reference = format!("{}/{repository}:{tag}", reg.addr);
    push_tag(reg, creds, layout_tag, &reference, false);
    let (raw, manifest) = inspect_pushed(reg, creds, &reference);
    FixtureImage {
        reference,
        repository: repository.to_string(),
        manifest_digest: sha256_digest(&raw),
        config_digest: manifest_config_digest(&manifest),
        layer_digests: manifest_layer_digests(&manifest),
    }
}

/// Pushes the fixture images to `reg` (pass `reg.creds()` for an htpasswd
/// registry, or other creds to test rejection):
///
/// * `team/app:1.2`, `team/tool:0.3`: linux/amd64, sharing one ~1 MiB base
///   layer, plus one small layer each;
/// * `team/multi:1.0`: OCI image index of linux/amd64 and linux/arm64
///   (different config and layer per platform), pushed with `skopeo copy --all`.
///
/// Digests are read back from the registry with skopeo. Panics (with the
/// registry log) if anything fails or the base layer is not shared.
pub fn push_fixture_images(reg: &Registry, creds: Option<(&str, &str)>) -> Fixtures {
    let app = pushed_image(reg, creds, "team/app", "1.2", tags::APP);
    let tool = pushed_image(reg, creds, "team/tool", "0.3", tags::TOOL);

    let reference = format!("{}/team/multi:1.0", reg.addr);
    push_tag(reg, creds, tags::MULTI, &reference, true);
    let (raw, index) = inspect_pushed(reg, creds, &reference);
    let platforms = index_platforms(&index)
        .into_iter()
        .map(|(_os, architecture, digest)| {
            let by_digest = format!("{}/team/multi@{digest}", reg.addr);
            let (raw, manifest) = inspect_pushed(reg, creds, &by_digest);
            assert_eq!(
                sha256_digest(&raw),
                digest,
                "registry served a different manifest"
            );
            PlatformImage {
                architecture,
                manifest_digest: digest,
                config_digest: manifest_config_digest(&manifest),
                layer_digests: manifest_layer_digests(&manifest),
                reference_by_digest: by_digest,
            }
        })
        .collect();
    let multi = MultiArchImage {
        reference,
        index_digest: sha256_digest(&raw),
        platforms,
    };

    let base_layer_digest = app.layer_digests[0].clone();
    assert_eq!(
        tool.layer_digests[0], base_layer_digest,
        "fixture bug: app and tool do not share their base layer"
    );
    assert_eq!(
        app.layer_digests.len(),
        2,
        "app layers: {:?}",
        app.layer_digests
    );
    assert_eq!(
        tool.layer_digests.len(),
        2,
        "tool layers: {:?}",
        tool.layer_digests
    );
    Fixtures {
        app,
        tool,
        multi,
        base_layer_digest,
    }
}

// ---------------------------------------------------------------------------
// Local layout and archive fixtures
// ---------------------------------------------------------------------------

/// A small image on disk, outside any registry.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// Layout directory or archive file.
    pub path: PathBuf,
    /// containers-transport reference: `oci:DIR:latest`,
    /// `oci-archive:PATH`, or `docker-archive:PATH`.
    pub transport_ref: String,
    /// Manifest digest as skopeo sees it. For docker-archive this is the
    /// docker schema 2 manifest skopeo synthesizes from the archive.
    pub manifest_digest: String,
}

/// Builds a fresh small OCI layout at `dir` (which must not exist, or be an
/// empty directory) with umoci: one linux/amd64 image tagged `latest` with a
/// single layer holding `/hello.txt`. Fresh per call, so tests may modify it.
pub fn oci_layout_fixture(dir: &Path) -> LocalImage {
    if dir.exists() {
        fs::remove_dir(dir).unwrap_or_else(|e| {
            panic!(
                "oci_layout_fixture: {} must be absent or empty: {e}",
                dir.display()
            )
        });
    }
    let staging = tempfile::tempdir().expect("staging tempdir");
    let l = dir.to_str().expect("utf-8 path");
    let image = format!("{l}:latest");
    umoci(&["init", "--layout", l]);
    umoci_new_image(&image, "amd64");
    umoci_insert(
        staging.path(),
        &image,
        None,
        "/hello.txt",
        b"hello from gapbundle\n",
    );
    let transport_ref = format!("oci:{l}:latest");
    LocalImage {
        path: dir.to_path_buf(),
        manifest_digest: skopeo_digest(&transport_ref),
        transport_ref,
    }
}

fn copy_small_to(path: &Path, dest: &str) {
    assert!(
        !path.exists(),
        "archive fixture destination {} already exists (skopeo refuses to \
         add to an existing docker-archive)",
        path.display()
    );
    let src = format!("oci:{}:{}", fixture_layout().display(), tags::SMALL);
    run(skopeo().args(["copy", "--quiet", &src, dest]));
}

/// Writes an oci-archive tar of a small image to `path`, which must not exist
/// (skopeo copy `oci:…` → `oci-archive:PATH`). The archive's `index.json`
/// has no tag annotation.
pub fn oci_archive_fixture(path: &Path) -> LocalImage {
    copy_small_to(path, &format!("oci-archive:{}", path.display()));
    let transport_ref = format!("oci-archive:{}", path.display());
    LocalImage {
        path: path.to_path_buf(),
        manifest_digest: skopeo_digest(&transport_ref),
        transport_ref,
    }
}

/// Writes a docker-archive (`docker save` format) tar of a small image to
/// `path`, which must not exist. Note: skopeo normalizes the name, so its
/// `manifest.json` says `"RepoTags":["docker.io/example/legacy:1.0"]` (real
/// `docker save` would write `example/legacy:1.0`), and its layers are stored
/// uncompressed.
pub fn docker_archive_fixture(path: &Path) -> LocalImage {
    copy_small_to(
        path,
        &format!("docker-archive:{}:example/legacy:1.0", path.display()),
    );
    let transport_ref = format!("docker-archive:{}", path.display());
    LocalImage {
        path: path.to_path_buf(),
        manifest_digest: skopeo_digest(&transport_ref),
        transport_ref,
    }
}

/// Builds an OCI layout at `dir` (absent or empty) with one linux/amd64 image
/// tagged `latest` whose only layer holds `/payload.bin`: `len` incompressible
/// bytes from `seed`. For tests that must catch an import while a layer streams
/// (tens of MiB take long enough to observe).
pub fn big_layout_fixture(dir: &Path, seed: u64, len: usize) -> LocalImage {
    if dir.exists() {
        fs::remove_dir(dir).unwrap_or_else(|e| {
            panic!(
                "big_layout_fixture: {} must be absent or empty: {e}",
                dir.display()
            )
        });
    }
    let staging = tempfile::tempdir().expect("staging tempdir");
    let l = dir.to_str().expect("utf-8 path");
    let image = format!("{l}:latest");
    umoci(&["init", "--layout", l]);
    umoci_new_image(&image, "amd64");
    umoci_insert(
        staging.path(),
        &image,
        None,
        "/payload.bin",
        &deterministic_bytes(seed, len),
    );
    let transport_ref = format!("oci:{l}:latest");
    LocalImage {
        path: dir.to_path_buf(),
        manifest_digest: skopeo_digest(&transport_ref),
        transport_ref,
    }
}
