//! Image names and the registry client, against the real services: a containerd
//! 1.6 on a K3s-style socket (`ctr` as the judge), K3s's staged-images folder, and
//! a CNCF registry as the fleet registry.
//!
//! Why: an image object's name comes from the bundle, and a validly signed bundle
//! is still hostile until checked. These tests sign bundles whose image names are
//! empty, hold a space or a newline, are 5,000 characters long, or pin another
//! image's digest, and check that every image target refuses them with exit code 3
//! before it writes anything; and that good names are registered exactly under the
//! names containerd's CRI plugin looks up. The bundles are made with the library's
//! writer (so `index.json` and the manifest agree, and nothing but the name is
//! wrong) and signed with a key the import trusts.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use gapbundle::bundle::manifest::{BlobEntry, Kind, Object};
use gapbundle::bundle::meta::{ImageMeta, Meta};
use gapbundle::bundle::oci::MANIFEST_MEDIA_TYPE;
use gapbundle::bundle::signature::Envelope;
use gapbundle::bundle::writer::{write_bundle, BundleBuilder};
use gapbundle::bundle::Digest;
use serde_json::json;

use crate::support::*;

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// One small image for this machine's platform: a layer holding one file, its
/// config and its manifest.
struct TinyImage {
    blobs: BTreeMap<Digest, (Vec<u8>, &'static str)>,
    root: Digest,
}

fn tiny_image() -> TinyImage {
    let mut tar = tar::Builder::new(Vec::new());
    let data = b"hello from a tiny image\n";
    let mut h = tar::Header::new_ustar();
    h.set_path("hello.txt").unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append(&h, &data[..]).unwrap();
    let layer = tar.into_inner().unwrap();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [Digest::of(&layer).to_string()]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": Digest::of(&config).to_string(), "size": config.len()},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": Digest::of(&layer).to_string(), "size": layer.len()}],
    }))
    .unwrap();
    let root = Digest::of(&manifest);
    let blobs = [
        (layer, LAYER_MEDIA_TYPE),
        (config, CONFIG_MEDIA_TYPE),
        (manifest, MANIFEST_MEDIA_TYPE),
    ]
    .into_iter()
    .map(|(b, mt)| (Digest::of(&b), (b, mt)))
    .collect();
    TinyImage { blobs, root }
}

/// The work folder of these tests: a key pair the import trusts.
fn work() -> Work {
    Work::new("names-test")
}

/// A bundle signed with `w`'s key whose image objects are the tiny image under
/// each of `names`, written to `file` in `w`.
fn bundle(w: &Work, file: &str, names: &[&str]) -> PathBuf {
    let img = tiny_image();
    let mut b = BundleBuilder::new("names", "1.0", 0, vec!["all".into()]);
    let mut size = 0;
    for (d, (bytes, mt)) in &img.blobs {
        b.add_blob(
            BlobEntry {
                digest: *d,
                size: bytes.len() as u64,
                media_type: mt.to_string(),
                offset: None,
                encoding: None,
                content: None,
            },
            0,
        )
        .unwrap();
        size += bytes.len() as u64;
    }
    for name in names {
        b.add_object(Object {
            kind: Kind::Image,
            name: name.to_string(),
            digest: img.root,
            media_type: MANIFEST_MEDIA_TYPE.into(),
            size,
            blobs: img.blobs.keys().copied().collect(),
            meta: Meta::Image(ImageMeta {
                platforms: vec!["linux/amd64".into()],
                source: format!("archive:{name}"),
                wanted_by: None,
                extra: Default::default(),
            }),
        })
        .unwrap();
    }
    let plan = b.finish().unwrap();
    let env = Envelope::sign(plan.digest, &[w.signing_key()]);
    let out = w.path(file);
    let blobs = img.blobs.into_iter().map(|(d, (b, _))| (d, b)).collect();
    write_bundle(
        fs::File::create(&out).unwrap(),
        &plan,
        &env,
        &MemBlobs(blobs),
        |_| {},
    )
    .unwrap();
    out
}

/// `gapbundle import BUNDLE` into the images target `target` selects, manifests
/// skipped, one attempt per request.
fn import(w: &Work, bundle: &Path, target: &[&str]) -> Output {
    w.import(bundle)
        .args(["--skip-manifests", "--retries", "1"])
        .args(target)
        .output()
        .unwrap()
}

/// [`import`] into the fleet registry at `addr` over plain HTTP.
fn push(w: &Work, bundle: &Path, addr: &str) -> Output {
    import(
        w,
        bundle,
        &["--registry", addr, "--insecure-registry", addr],
    )
}

/// Names a hostile writer gives images, and what the refusal says about each.
fn hostile_names() -> Vec<(String, &'static str)> {
    let other = format!("example.local/team/app@sha256:{}", "0".repeat(64));
    vec![
        (String::new(), "an empty string is not a valid image reference"),
        ("a b:1".into(), "`a b:1` is not a valid image reference: character 2 is ' '"),
        ("example.local/app\n:1".into(), "`example.local/app\\n:1` is not a valid image reference"),
        ("a".repeat(5000), "(5000 characters)"),
        (other, "pins sha256:0000000000000000000000000000000000000000000000000000000000000000, but the image is sha256:"),
        ("example.local/Team/App:1".into(), "must be lower case"),
    ]
}

fn assert_refused(o: &Output, what: &str, says: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(3), "{what}: exit code 3\n{err}");
    assert!(
        err.contains("objects[0] (an image)") && err.contains(says),
        "{what}: the error names the object and what is wrong ({says:?}):\n{err}"
    );
    assert!(
        err.contains("refused before anything is written"),
        "{what}:\n{err}"
    );
    assert!(!err.contains('\u{1b}'), "{what}: no raw escapes");
}

#[test]
fn hostile_image_names_are_refused_before_containerd_is_touched() {
    let w = work();
    let ctrd = Containerd::start();
    let socket = ctrd.socket();
    for (i, (name, says)) in hostile_names().into_iter().enumerate() {
        let bundle = bundle(&w, &format!("hostile-{i}.gapb"), &[&name]);
        let o = import(&w, &bundle, &["--containerd", socket.to_str().unwrap()]);
        assert_refused(&o, &format!("containerd, name {:.40?}", name), says);
        assert_eq!(
            ctrd.ctr_stdout(&["images", "ls", "-q"]).trim(),
            "",
            "no image registered"
        );
        assert!(ctrd.content_blobs().is_empty(), "no content written");
        assert_eq!(ctrd.ingests(), 0, "no ingest started");
        assert!(
            !ctrd.ctr_stdout(&["leases", "ls"]).contains("gapbundle-"),
            "no lease taken"
        );
    }
    // The same image under a good name imports: the refusals were the names'.
    let good = bundle(&w, "good.gapb", &["example.local/team/app:1.0"]);
    let o = import(&w, &good, &["--containerd", socket.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(ctrd
        .ctr_stdout(&["images", "ls", "-q"])
        .contains("example.local/team/app:1.0"));
}

#[test]
fn hostile_image_names_are_refused_before_the_staged_archive_is_written() {
    let w = work();
    let images = w.k3s_root().join("agent/images");
    for (i, (name, says)) in hostile_names().into_iter().enumerate() {
        let bundle = bundle(&w, &format!("hostile-{i}.gapb"), &[&name]);
        let o = import(&w, &bundle, &["--staged"]);
        assert_refused(&o, &format!("staged, name {:.40?}", name), says);
        let written: Vec<_> = fs::read_dir(&images)
            .map(|r| r.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(written.is_empty(), "nothing staged: {written:?}");
    }
    let good = bundle(&w, "good.gapb", &["example.local/team/app:1.0"]);
    let o = import(&w, &good, &["--staged"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(images.join("names.tar").is_file());
}

#[test]
fn hostile_image_names_are_refused_before_anything_is_pushed() {
    let w = work();
    let fleet = Registry::start();
    let catalog = || fleet.http("GET", "/v2/_catalog", &[], b"").text();
    for (i, (name, says)) in hostile_names().into_iter().enumerate() {
        let bundle = bundle(&w, &format!("hostile-{i}.gapb"), &[&name]);
        let o = push(&w, &bundle, &fleet.addr);
        assert_refused(&o, &format!("fleet, name {:.40?}", name), says);
        assert!(
            catalog().contains("\"repositories\":[]"),
            "nothing pushed: {}",
            catalog()
        );
        assert!(!w.k3s_root().join("registries.yaml.gapbundle").exists());
    }
}

#[test]
fn images_are_registered_under_the_names_cri_looks_up() {
    let w = work();
    let ctrd = Containerd::start();
    let root = tiny_image().root;
    let bundle = bundle(
        &w,
        "names.gapb",
        &[
            "app",
            "docker.io/team/tool:1",
            "index.docker.io/library/web:2",
            &format!("localhost:5000/pinned:1@{root}"),
        ],
    );
    let o = import(
        &w,
        &bundle,
        &["--containerd", ctrd.socket().to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut listed: Vec<String> = ctrd
        .ctr_stdout(&["images", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect();
    listed.sort();
    let mut want = vec![
        "docker.io/library/app:latest".to_string(),
        format!("docker.io/library/app@{root}"),
        "docker.io/team/tool:1".to_string(),
        format!("docker.io/team/tool@{root}"),
        "docker.io/library/web:2".to_string(),
        format!("docker.io/library/web@{root}"),
        // A tag beside a digest: CRI looks the digest up, once.
        format!("localhost:5000/pinned@{root}"),
    ];
    want.sort();
    assert_eq!(listed, want);
    // Each is complete and unpacked for this platform.
    let check = ctrd.ctr_stdout(&["images", "check"]);
    assert_eq!(
        check.lines().filter(|l| l.contains("complete")).count(),
        want.len(),
        "{check}"
    );
}

#[test]
fn a_push_shares_the_pulls_advice_and_checks_its_ca_file() {
    let w = work();
    let fleet = Registry::start();
    let bundle = bundle(&w, "good.gapb", &["example.local/team/app:1.0"]);

    // A plain-HTTP registry reached over TLS: recognised as such (its answer is
    // not TLS), and the advice is the one fix.
    let o = import(&w, &bundle, &["--registry", &fleet.addr]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(5), "{err}");
    assert!(
        err.contains(&format!("TLS connection to registry {} failed", fleet.addr))
            && err.contains(&format!(
                "it speaks plain HTTP: pass --insecure-registry {}",
                fleet.addr
            )),
        "{err}"
    );

    // A CA file that is not PEM is bad input, named.
    let ca = w.path("ca.der");
    fs::write(&ca, [0x30u8, 0x82, 0x01, 0x0a]).unwrap();
    let o = import(
        &w,
        &bundle,
        &[
            "--registry",
            &fleet.addr,
            "--registry-ca",
            ca.to_str().unwrap(),
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("{} is not a PEM certificate", ca.display())),
        "{err}"
    );

    // With the right flag it pushes, under the same path.
    let o = push(&w, &bundle, &fleet.addr);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        skopeo_digest(&fleet.docker_ref("team/app:1.0")),
        tiny_image().root.to_string()
    );
}
