//! Image inputs from local files: `layout: DIR[:TAG]` and `archive: FILE.tar`.
//!
//! The fixtures are made by the real `umoci` and `skopeo` (see `tests/it/support`),
//! and results are checked from the outside: every blob left in the cache must
//! hash to its name, and the image gapbundle reads out of a docker-archive must be
//! readable by skopeo, with the same layers skopeo itself sees in the archive.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use gapbundle::bundle::oci::REF_NAME;
use gapbundle::io::cas::Cas;
use gapbundle::resolve::{archive, layout};
use gapbundle::spec::Platforms;
use serde_json::{json, Value};

use crate::support::*;

fn fresh_cas(dir: &Path) -> Cas {
    Cas::open(dir.join("cas")).expect("open cache")
}

/// Every blob in the cache hashes to its name; every blob of the plan is there.
fn check_cas(cas: &Cas, plan: &gapbundle::resolve::image::ImagePlan) {
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(cas.root().join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = fs::read(entry.path()).unwrap();
        assert_eq!(
            sha256_digest(&bytes),
            format!("sha256:{name}"),
            "cached blob does not hash to its name"
        );
        names.insert(name);
    }
    for b in plan.manifests.iter().chain(&plan.blobs) {
        assert!(
            cas.contains(&b.digest, Some(b.size)),
            "{} ({} bytes) not in the cache",
            b.digest,
            b.size
        );
        assert!(names.contains(&b.digest.hex()));
    }
}

fn inspect_layers(transport_ref: &str) -> Vec<String> {
    let out = run_stdout(skopeo().args(["inspect", transport_ref]));
    let v: Value = serde_json::from_str(&out).expect("skopeo inspect JSON");
    v["Layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no Layers in {v}"))
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

fn err_text(e: anyhow::Error) -> String {
    format!("{e:#}")
}

#[test]
fn layout_with_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = oci_layout_fixture(&tmp.path().join("layout"));
    let cas = fresh_cas(tmp.path());
    let li = layout::resolve_layout(&cas, &fx.path, Some("latest"), &Platforms::All).unwrap();
    assert_eq!(li.name.as_deref(), Some("latest"));
    assert_eq!(li.plan.root.digest.to_string(), fx.manifest_digest);
    assert_eq!(li.plan.platforms, vec!["linux/amd64"]);
    // config + one layer
    assert_eq!(li.plan.blobs.len(), 2);
    let manifest = skopeo_manifest(&fx.transport_ref, None);
    assert_eq!(
        li.plan.blobs[0].digest.to_string(),
        manifest_config_digest(&manifest)
    );
    assert_eq!(
        li.plan.blobs[1].digest.to_string(),
        manifest_layer_digests(&manifest)[0]
    );
    check_cas(&cas, &li.plan);

    // The only image is picked without a tag too; a second run reads the cache.
    let again = layout::resolve_layout(&cas, &fx.path, None, &Platforms::All).unwrap();
    assert_eq!(again.plan.root, li.plan.root);
}

#[test]
fn layout_with_several_tags_needs_one() {
    let tmp = tempfile::tempdir().unwrap();
    let cas = fresh_cas(tmp.path());
    let dir = fixture_layout();
    let e = err_text(layout::resolve_layout(&cas, dir, None, &Platforms::All).unwrap_err());
    for name in [tags::APP, tags::TOOL, tags::MULTI, tags::SMALL] {
        assert!(e.contains(name), "{name} not listed in: {e}");
    }
    assert!(e.contains(&dir.display().to_string()), "{e}");
    assert!(e.contains(":NAME"), "{e}");

    let e = err_text(layout::resolve_layout(&cas, dir, Some("nope"), &Platforms::All).unwrap_err());
    assert!(e.contains("`nope`") && e.contains(tags::APP), "{e}");

    // A tag picks one; for the index, platform selection works as for a registry.
    let arm = Platforms::List(vec!["linux/arm64".parse().unwrap()]);
    let li = layout::resolve_layout(&cas, dir, Some(tags::MULTI), &arm).unwrap();
    assert_eq!(li.name.as_deref(), Some(tags::MULTI));
    assert_eq!(li.plan.platforms, vec!["linux/arm64"]);
    assert_eq!(li.plan.skipped_platforms, vec!["linux/amd64"]);
    assert_eq!(li.plan.manifests.len(), 2);
    assert_eq!(
        li.plan.manifests[1].digest.to_string(),
        layout_descriptor(dir, tags::MULTI_ARM64)["digest"]
            .as_str()
            .unwrap()
    );
    check_cas(&cas, &li.plan);
}

#[test]
fn oci_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = oci_archive_fixture(&tmp.path().join("small.tar"));
    let cas = fresh_cas(tmp.path());
    let li = archive::resolve_archive(&cas, &fx.path, None, &Platforms::All).unwrap();
    // skopeo writes no ref name into an oci-archive.
    assert_eq!(li.name, None);
    assert_eq!(li.plan.root.digest.to_string(), fx.manifest_digest);
    assert_eq!(li.plan.blobs.len(), 2);
    let layers: Vec<String> = li.plan.blobs[1..]
        .iter()
        .map(|b| b.digest.to_string())
        .collect();
    assert_eq!(layers, inspect_layers(&fx.transport_ref));
    check_cas(&cas, &li.plan);
}

/// Writes an OCI layout holding `li`'s blobs, copied from the cache, tagged `tag`.
fn layout_from_cache(cas: &Cas, li: &layout::LocalImage, dir: &Path, tag: &str) {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    for b in li.plan.manifests.iter().chain(&li.plan.blobs) {
        fs::copy(
            cas.path(&b.digest),
            dir.join("blobs/sha256").join(b.digest.hex()),
        )
        .unwrap();
    }
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": li.plan.root.media_type,
            "digest": li.plan.root.digest.to_string(),
            "size": li.plan.root.size,
            "annotations": { REF_NAME: tag },
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

#[test]
fn docker_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = docker_archive_fixture(&tmp.path().join("legacy.tar"));
    let cas = fresh_cas(tmp.path());
    let li = archive::resolve_archive(&cas, &fx.path, None, &Platforms::All).unwrap();
    assert_eq!(li.name.as_deref(), Some("docker.io/example/legacy:1.0"));
    assert_eq!(
        li.plan.root.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(li.plan.platforms, vec!["linux/amd64"]);
    check_cas(&cas, &li.plan);

    // The config is kept as is: same digest (the image ID) as skopeo reports.
    let skopeo_view = skopeo_manifest(&fx.transport_ref, None);
    assert_eq!(
        li.plan.blobs[0].digest.to_string(),
        manifest_config_digest(&skopeo_view)
    );
    assert_eq!(
        li.plan.blobs[0].media_type,
        "application/vnd.oci.image.config.v1+json"
    );
    // skopeo's layers are stored uncompressed.
    assert_eq!(
        li.plan.blobs[1].media_type,
        "application/vnd.oci.image.layer.v1.tar"
    );

    // What is in the cache is a complete image that skopeo can read, with the
    // layers skopeo sees in the archive.
    let out = tmp.path().join("from-cache");
    layout_from_cache(&cas, &li, &out, "legacy");
    // The synthesized manifest is OCI-typed, so skopeo finds it by name (skopeo 1.9
    // looks names up only among OCI-typed index entries).
    let transport_ref = format!("oci:{}:legacy", out.display());
    let from_cache = inspect_layers(&transport_ref);
    let from_archive = inspect_layers(&fx.transport_ref);
    assert_eq!(from_cache, from_archive);
    assert!(!from_cache.is_empty());
    // skopeo also reads every blob back and checks it against its digest.
    let copied = tmp.path().join("copied");
    run(skopeo().args([
        "copy",
        "--quiet",
        &transport_ref,
        &format!("dir:{}", copied.display()),
    ]));
    for layer in &from_archive {
        assert!(copied.join(layer.trim_start_matches("sha256:")).is_file());
    }

    // The synthesized manifest is deterministic.
    let tmp2 = tempfile::tempdir().unwrap();
    let cas2 = fresh_cas(tmp2.path());
    let li2 = archive::resolve_archive(&cas2, &fx.path, None, &Platforms::All).unwrap();
    assert_eq!(li2.plan.root, li.plan.root);

    // A tag is matched against RepoTags with Docker's normalization.
    let li3 = archive::resolve_archive(&cas, &fx.path, Some("example/legacy:1.0"), &Platforms::All)
        .unwrap();
    assert_eq!(li3.plan.root, li.plan.root);
    let e = err_text(
        archive::resolve_archive(&cas, &fx.path, Some("example/other:1.0"), &Platforms::All)
            .unwrap_err(),
    );
    assert!(e.contains("docker.io/example/legacy:1.0"), "{e}");
}

/// Copies the members of the tar at `src` to `dst`, letting `edit` replace the
/// bytes of a member (by path); symlinks are copied as symlinks.
fn rewrite_tar(src: &Path, dst: &Path, edit: impl Fn(&str, Vec<u8>) -> Vec<u8>) {
    let mut input = tar::Archive::new(fs::File::open(src).unwrap());
    let mut output = tar::Builder::new(fs::File::create(dst).unwrap());
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut header = entry.header().clone();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        let bytes = edit(&path, bytes);
        header.set_size(bytes.len() as u64);
        header.set_cksum();
        output.append(&header, &bytes[..]).unwrap();
    }
    output.finish().unwrap();
}

#[test]
fn docker_archive_with_several_images() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = docker_archive_fixture(&tmp.path().join("legacy.tar"));
    let manifest: Value = {
        let mut a = tar::Archive::new(fs::File::open(&fx.path).unwrap());
        let mut found = None;
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_str() == Some("manifest.json") {
                found = Some(serde_json::from_reader(&mut e).unwrap());
            }
        }
        found.expect("manifest.json")
    };
    // A second entry for the same image, reaching its layer through the legacy
    // `<id>/layer.tar` symlink skopeo writes.
    let mut two = manifest.clone();
    let mut second = manifest[0].clone();
    second["RepoTags"] = json!(["docker.io/example/other:2.0"]);
    let symlink = {
        let a_path = fx.path.clone();
        let mut a = tar::Archive::new(fs::File::open(a_path).unwrap());
        a.entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.header().entry_type().is_symlink())
            .map(|e| e.path().unwrap().to_string_lossy().into_owned())
            .expect("skopeo writes a layer.tar symlink")
    };
    second["Layers"] = json!([symlink]);
    two.as_array_mut().unwrap().push(second);
    let multi = tmp.path().join("multi.tar");
    rewrite_tar(&fx.path, &multi, |p, b| {
        if p == "manifest.json" {
            serde_json::to_vec(&two).unwrap()
        } else {
            b
        }
    });

    let cas = fresh_cas(tmp.path());
    let e = err_text(archive::resolve_archive(&cas, &multi, None, &Platforms::All).unwrap_err());
    assert!(
        e.contains("docker.io/example/legacy:1.0") && e.contains("docker.io/example/other:2.0"),
        "{e}"
    );
    assert!(e.contains("multi.tar"), "{e}");
    let other =
        archive::resolve_archive(&cas, &multi, Some("example/other:2.0"), &Platforms::All).unwrap();
    assert_eq!(other.name.as_deref(), Some("docker.io/example/other:2.0"));
    let legacy =
        archive::resolve_archive(&cas, &multi, Some("example/legacy:1.0"), &Platforms::All)
            .unwrap();
    assert_eq!(other.plan.root, legacy.plan.root);
    check_cas(&cas, &other.plan);
}

#[test]
fn flipped_byte_in_a_layout_layer_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = oci_layout_fixture(&tmp.path().join("layout"));
    let manifest = skopeo_manifest(&fx.transport_ref, None);
    let layer = manifest_layer_digests(&manifest)[0].clone();
    let blob = fx
        .path
        .join("blobs/sha256")
        .join(layer.trim_start_matches("sha256:"));
    let mut bytes = fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&blob, &bytes).unwrap();

    let cas = fresh_cas(tmp.path());
    let e = err_text(
        layout::resolve_layout(&cas, &fx.path, Some("latest"), &Platforms::All).unwrap_err(),
    );
    assert!(e.contains(&blob.display().to_string()), "{e}");
    assert!(e.contains("corrupted") && e.contains(&layer), "{e}");
    assert!(e.contains(&sha256_digest(&bytes)), "{e}");
    assert!(!cas.contains(&layer.parse().unwrap(), None));
}

#[test]
fn flipped_byte_in_a_docker_archive_layer_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = docker_archive_fixture(&tmp.path().join("legacy.tar"));
    let layers = inspect_layers(&fx.transport_ref);
    let member = format!("{}.tar", layers[0].trim_start_matches("sha256:"));
    let bad = tmp.path().join("bad.tar");
    rewrite_tar(&fx.path, &bad, |p, mut b| {
        if p == member {
            let last = b.len() - 1;
            b[last / 2] ^= 0x80;
        }
        b
    });
    let cas = fresh_cas(tmp.path());
    let e = err_text(archive::resolve_archive(&cas, &bad, None, &Platforms::All).unwrap_err());
    assert!(e.contains("bad.tar") && e.contains(&member), "{e}");
    assert!(e.contains("corrupted") && e.contains(&layers[0]), "{e}");
}

#[test]
fn inputs_that_are_not_images_say_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let cas = fresh_cas(tmp.path());

    let dir = tmp.path().join("tool");
    fs::create_dir(&dir).unwrap();
    let e = err_text(layout::resolve_layout(&cas, &dir, None, &Platforms::All).unwrap_err());
    assert!(
        e.contains("no oci-layout file") && e.contains("skopeo copy"),
        "{e}"
    );
    assert!(e.contains(&dir.display().to_string()), "{e}");

    let e = err_text(
        layout::resolve_layout(&cas, &tmp.path().join("absent"), None, &Platforms::All)
            .unwrap_err(),
    );
    assert!(e.contains("does not exist"), "{e}");

    let plain = tmp.path().join("legacy.tar");
    let mut b = tar::Builder::new(fs::File::create(&plain).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "README", &b"hi\n"[..]).unwrap();
    b.finish().unwrap();
    drop(b);
    let e = err_text(archive::resolve_archive(&cas, &plain, None, &Platforms::All).unwrap_err());
    assert!(
        e.contains("legacy.tar is neither a docker-archive (manifest.json) nor an oci-archive (index.json)"),
        "{e}"
    );

    // A gzip archive is read (as K3s reads one); one cut short says so.
    let gz = tmp.path().join("legacy.tar.gz");
    fs::write(&gz, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0]).unwrap();
    let e = err_text(archive::resolve_archive(&cas, &gz, None, &Platforms::All).unwrap_err());
    assert!(
        e.contains("legacy.tar.gz is not a readable gzip-compressed tar archive"),
        "{e}"
    );
    // What neither K3s nor gapbundle reads says how to recompress it.
    let xz = tmp.path().join("legacy.tar.xz");
    fs::write(&xz, [0xfd, b'7', b'z', b'X', b'Z', 0, 0, 0]).unwrap();
    let e = err_text(archive::resolve_archive(&cas, &xz, None, &Platforms::All).unwrap_err());
    assert!(e.contains("xz-compressed") && e.contains("zstd -o"), "{e}");
}

#[test]
fn layout_saved_with_only_some_platforms() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("layout");
    run(std::process::Command::new("cp")
        .arg("-r")
        .arg(fixture_layout())
        .arg(&dir));
    let arm = layout_descriptor(&dir, tags::MULTI_ARM64)["digest"]
        .as_str()
        .unwrap()
        .to_string();
    fs::remove_file(
        dir.join("blobs/sha256")
            .join(arm.trim_start_matches("sha256:")),
    )
    .unwrap();

    let cas = fresh_cas(tmp.path());
    let e = err_text(
        layout::resolve_layout(&cas, &dir, Some(tags::MULTI), &Platforms::All).unwrap_err(),
    );
    assert!(e.contains(&arm) && e.contains("platforms:"), "{e}");
    let amd = Platforms::List(vec!["linux/amd64".parse().unwrap()]);
    let li = layout::resolve_layout(&cas, &dir, Some(tags::MULTI), &amd).unwrap();
    assert_eq!(li.plan.platforms, vec!["linux/amd64"]);
    check_cas(&cas, &li.plan);
}
