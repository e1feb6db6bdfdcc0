//! `gapbundle import` into K3s's parts, against the real things: a containerd 1.6
//! started by the test on a K3s-style socket (namespace k8s.io), `ctr` as the
//! independent judge of what containerd holds, a second containerd for the staged
//! archive (imported with `ctr images import`, as K3s does at start), and a second
//! CNCF registry for fleet mode, checked with skopeo.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use gapbundle::bundle::manifest::{BlobEntry, ContentInfo, Encoding, Kind, Object};
use gapbundle::bundle::meta::{K8sManifestMeta, Meta};
use gapbundle::bundle::signature::Envelope;
use gapbundle::bundle::writer::{write_bundle, BundleBuilder};
use gapbundle::bundle::Digest;
use serde_json::json;

use crate::support::*;

/// The fixture bundle, made from a registry of its own that is gone afterwards
/// (for tests that only need the bundle).
fn fixture_bundle(w: &Work) -> PathBuf {
    let reg = Registry::start();
    push_fixture_images(&reg, None);
    bundle_fixtures(w, &reg)
}

/// Bundles the three fixture images (two sharing a base layer, one multi-arch)
/// from `reg` into `site.gapb`.
fn bundle_fixtures(w: &Work, reg: &Registry) -> PathBuf {
    w.write(
        "bundle.yaml",
        &format!(
            "name: edge-site\nversion: \"1.0\"\nimages:\n  - ref: {0}/team/app:1.2\n  - ref: {0}/team/tool:0.3\n  - ref: {0}/team/multi:1.0\n",
            reg.addr
        ),
    );
    create_quietly(w, "site.gapb", reg)
}

/// `gapbundle create` of the work spec into `out` (must succeed), quietly.
fn create_quietly(w: &Work, out: &str, reg: &Registry) -> PathBuf {
    run(w
        .create(out)
        .args(["--insecure-registry", &reg.addr, "--quiet"]));
    w.path(out)
}

/// Image objects of a bundle: (name, root digest).
fn images_of(bundle: &Path) -> Vec<(String, String)> {
    head_of(bundle)
        .manifest
        .objects
        .iter()
        .filter(|o| o.kind == Kind::Image)
        .map(|o| (o.name.clone(), o.digest.to_string()))
        .collect()
}

fn digest_ref(name: &str, digest: &str) -> String {
    let slash = name.rfind('/').unwrap();
    let repo = match name[slash..].rfind(':') {
        Some(i) => &name[..slash + i],
        None => name,
    };
    format!("{repo}@{digest}")
}

/// `ctr images ls` as REF -> (digest, labels).
fn ctr_images(c: &Containerd) -> BTreeMap<String, (String, String)> {
    let out = c.ctr_stdout(&["images", "ls"]);
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // REF TYPE DIGEST SIZE(2 words) PLATFORMS LABELS
            Some((
                f.first()?.to_string(),
                (f.get(2)?.to_string(), f.last()?.to_string()),
            ))
        })
        .collect()
}

fn assert_all_imported(c: &Containerd, images: &[(String, String)]) {
    let listed = ctr_images(c);
    for (name, digest) in images {
        for r in [name.clone(), digest_ref(name, digest)] {
            let (d, labels) = listed
                .get(&r)
                .unwrap_or_else(|| panic!("ctr images ls lacks {r}: {listed:#?}"));
            assert_eq!(d, digest, "{r} names the bundled root");
            assert!(
                labels.contains("io.cri-containerd.image=managed")
                    && labels.contains("io.cri-containerd.pinned=pinned"),
                "{r} lacks the CRI labels: {labels}"
            );
        }
    }
    // Every image is complete and unpacked for this machine's platform.
    let check = c.ctr_stdout(&["images", "check"]);
    for (name, _) in images {
        let line = check
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("ctr images check lacks {name}:\n{check}"));
        assert!(line.contains("complete"), "{name} incomplete: {line}");
        assert!(
            line.trim_end().ends_with("true"),
            "{name} not unpacked: {line}"
        );
    }
    let snaps = c.ctr_stdout(&["snapshots", "--snapshotter", "overlayfs", "ls"]);
    assert!(
        snaps.lines().any(|l| l.contains("Committed")),
        "snapshots were created:\n{snaps}"
    );
}

#[test]
fn containerd_import_registers_every_ref_unpacks_and_is_idempotent() {
    let ctd = Containerd::start();
    let w = Work::new("k3s-test");
    let bundle = fixture_bundle(&w);
    let images = images_of(&bundle);
    assert_eq!(images.len(), 3);

    let dry_run = || {
        cli_report(
            &run(w
                .import(&bundle)
                .arg("--containerd")
                .arg(ctd.socket())
                .args(["--dry-run", "--json"])),
            "import-plan",
        )
    };
    // Dry run first: everything new, nothing written.
    let plan = dry_run();
    let t = &plan["targets"][0]["plan"];
    assert_eq!(t["newObjects"].as_array().unwrap().len(), 3, "{plan}");
    assert!(t["bytesToWrite"].as_u64().unwrap() > 0);
    assert!(ctd.content_blobs().is_empty(), "dry run wrote nothing");

    run(w.import(&bundle).arg("--containerd").arg(ctd.socket()));
    assert_all_imported(&ctd, &images);
    let content = ctd.content_blobs();
    // Every blob of every image is in containerd's content store.
    let head = head_of(&bundle);
    for o in head
        .manifest
        .objects
        .iter()
        .filter(|o| o.kind == Kind::Image)
    {
        for d in &o.blobs {
            assert!(content.contains(&d.hex()), "{d} of {} missing", o.name);
        }
    }
    // GC labels: the multi-arch index references its manifests.
    let multi = images.iter().find(|(n, _)| n.contains("multi")).unwrap();
    let info = ctd.ctr_stdout(&["content", "ls"]);
    let idx_line = info
        .lines()
        .find(|l| l.starts_with(&multi.1))
        .expect("index in content ls");
    assert!(
        idx_line.contains("containerd.io/gc.ref.content.m.0="),
        "{idx_line}"
    );
    assert_eq!(ctd.ingests(), 0, "no ingest left behind");

    // Second run: the plan says all present, and nothing changes.
    let plan = dry_run();
    let t = &plan["targets"][0]["plan"];
    assert_eq!(t["presentObjects"].as_array().unwrap().len(), 3, "{plan}");
    assert_eq!(t["bytesToWrite"], 0, "{plan}");
    let before = ctd.ctr_stdout(&["images", "ls"]);
    // Nothing is written at all: no label, image record or lease (containerd's
    // metadata database keeps its bytes). It used to label, unpack-check and record
    // every image again, and hold every blob in a new lease.
    let meta_db = ctd.root().join("io.containerd.metadata.v1.bolt/meta.db");
    // containerd's collector, set off by the first import's lease going, writes
    // to that database on its own time: it runs now, waited for, so that a later
    // run cannot pass for a write of the second import.
    ctd.collect_garbage("first-import");
    let meta_before = fs::read(&meta_db).unwrap();
    let import_json = |b: &Path| {
        cli_report(
            &run(w
                .import(b)
                .arg("--containerd")
                .arg(ctd.socket())
                .arg("--json")),
            "import",
        )
    };
    let out = import_json(&bundle);
    let result = &out["targets"][0]["result"];
    assert_eq!(result["bytesWritten"], 0, "{out}");
    for img in result["images"].as_array().unwrap() {
        assert_eq!(img["recordsChanged"], json!([]), "{img}");
        assert_eq!(img["snapshotsCreated"], 0, "{img}");
    }
    assert_eq!(ctd.ctr_stdout(&["images", "ls"]), before);
    assert_eq!(ctd.content_blobs(), content);
    assert!(
        fs::read(&meta_db).unwrap() == meta_before,
        "the second import wrote to containerd's metadata"
    );
    assert_eq!(result["images"].as_array().unwrap().len(), 3, "{out}");
    for img in result["images"].as_array().unwrap() {
        assert!(img["unpacked"].is_string(), "{img}");
    }
    // Nothing of the bundle's data was read: a copy with a damaged layer imports
    // the same (no byte of it would reach containerd), while `verify` refuses it.
    assert_eq!(out["dataRead"], false, "{out}");
    let layer = head.manifest.blobs.iter().max_by_key(|b| b.size).unwrap();
    let mut bytes = fs::read(&bundle).unwrap();
    bytes[(head.data_start + layer.offset.unwrap() + layer.size / 2) as usize] ^= 0x01;
    let damaged = w.path("damaged.gapb");
    fs::write(&damaged, &bytes).unwrap();
    let out = import_json(&damaged);
    assert_eq!(out["dataRead"], false, "{out}");
    fails(&w.verify("damaged.gapb"), 3);
    assert!(
        fs::read(&meta_db).unwrap() == meta_before,
        "the import of the damaged copy wrote to containerd's metadata"
    );
}

/// Two images sharing a base layer, registered at once, extract the base once: the
/// bug was that each found it missing and extracted it, and all but one threw
/// their snapshot away at the commit (for a 614 MiB base shared by four images,
/// three extractions of it for nothing). Watched through containerd's own events.
#[test]
fn images_sharing_a_base_layer_extract_it_once() {
    let ctd = Containerd::start();
    let w = Work::new("k3s-test");
    let bundle = fixture_bundle(&w);
    let log = w.path("events.log");
    let mut events = ctd
        .ctr()
        .arg("events")
        .stdout(fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Subscribed once an event of our own shows up.
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0.. {
        ctd.ctr_stdout(&["namespaces", "label", "k8s.io", &format!("probe={i}")]);
        std::thread::sleep(Duration::from_millis(100));
        if fs::read_to_string(&log)
            .unwrap()
            .contains("/namespaces/update")
        {
            break;
        }
        assert!(Instant::now() < deadline, "ctr events showed nothing");
    }
    run(w.import(&bundle).arg("--containerd").arg(ctd.socket()));
    assert_all_imported(&ctd, &images_of(&bundle));
    events.kill().unwrap();
    events.wait().unwrap();

    // `/snapshot/prepare {"key":"extract-gapbundle-<pid>-<unique> <chain id>",...}`
    let text = fs::read_to_string(&log).unwrap();
    let mut prepared: BTreeMap<String, usize> = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("/snapshot/prepare")) {
        let key = line
            .split("\"key\":\"")
            .nth(1)
            .and_then(|k| k.split('"').next())
            .unwrap_or_else(|| panic!("no key in {line}"));
        if let Some((_, chain)) = key.split_once(' ') {
            *prepared.entry(chain.to_string()).or_default() += 1;
        }
    }
    assert!(prepared.len() >= 2, "layers were extracted: {text}");
    let again: Vec<_> = prepared.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        again.is_empty(),
        "chain ids extracted more than once: {again:?}"
    );
}

/// The labels an import sets, most of them in the commit that writes the blob
/// (one metadata transaction fewer each), are the ones `ctr images import` of the
/// same images leaves: GC labels on every index and manifest, the snapshot on the
/// config, `containerd.io/uncompressed` on every unpacked layer. The images: the
/// fixtures (gzip layers, one multi-arch) and two of uncompressed tar layers on a
/// shared base, from the benchmarks' layout script.
#[test]
fn content_labels_are_the_ones_ctr_images_import_leaves() {
    let reg = Registry::start();
    push_fixture_images(&reg, None);
    let w = Work::new("k3s-test");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/oci-synthetic-layout.py");
    run(tool("python3")
        .arg(&script)
        .arg(w.path("syn"))
        .args(["2", "3", "4096"]));
    w.write(
        "bundle.yaml",
        &format!(
            "name: edge-site\nversion: \"1.0\"\nimages:\n  - ref: {0}/team/app:1.2\n  - ref: {0}/team/tool:0.3\n  - ref: {0}/team/multi:1.0\n  - layout: ./syn:img0\n    name: example.local/syn0:1\n  - layout: ./syn:img1\n    name: example.local/syn1:1\n",
            reg.addr
        ),
    );
    let bundle = create_quietly(&w, "site.gapb", &reg);

    let ours = Containerd::start();
    run(w.import(&bundle).arg("--containerd").arg(ours.socket()));
    assert_all_imported(&ours, &images_of(&bundle));
    // Both stores are listed after a garbage collection that was waited for:
    // `ctr images import` writes the archive's own index.json as a blob that no
    // image holds, and containerd's collector removes it on its own time, so a
    // listing on a loaded machine could still see it (CI did, once). An import
    // of ours must leave nothing for the collector: what it lists before and
    // after one is the same.
    let got = ours.content_labels();
    ours.collect_garbage("labels-test");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ours.content_labels().keys().collect::<Vec<_>>(),
        "an import leaves no blob that no image holds"
    );

    run(w.import(&bundle).arg("--staged"));
    let archive = w.k3s_root().join("agent/images/edge-site.tar");
    let theirs = Containerd::start();
    theirs.ctr_stdout(&[
        "images",
        "import",
        "--all-platforms",
        archive.to_str().unwrap(),
    ]);
    theirs.collect_garbage("labels-test");
    let want = theirs.content_labels();

    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the same content"
    );
    let mut uncompressed = 0;
    for (digest, theirs) in &want {
        let mut ours = got[digest].clone();
        // A layer of another platform, which `ctr` does not unpack, may carry its
        // own digest as its uncompressed digest: that is what it is.
        if !theirs.contains_key("containerd.io/uncompressed")
            && ours.get("containerd.io/uncompressed") == Some(digest)
        {
            ours.remove("containerd.io/uncompressed");
        }
        if theirs.get("containerd.io/uncompressed") == Some(digest) {
            uncompressed += 1;
        }
        assert_eq!(&ours, theirs, "labels of {digest}");
    }
    // The shared base and each image's own two layers.
    assert!(uncompressed >= 5, "uncompressed layers unpacked: {want:#?}");
}

#[test]
fn containerd_import_killed_midway_completes_on_rerun() {
    let ctd = Containerd::start();
    let w = Work::new("k3s-test");
    let bundle = fixture_bundle(&w);
    let bytes = fs::read(&bundle).unwrap();
    let head = head_of(&bundle);

    // Feed the bundle on stdin, stop in the middle of the data, and kill -9 once
    // containerd holds some of it.
    let last = head.manifest.blobs.last().unwrap();
    let cut = (head.data_start + last.offset.unwrap() + last.size / 2) as usize;
    let mut child = w
        .import(Path::new("-"))
        .arg("--containerd")
        .arg(ctd.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&bytes[..cut]).unwrap();
    stdin.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ctd.content_blobs().len() + ctd.ingests() < 2 {
        assert!(Instant::now() < deadline, "the import never wrote content");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(stdin);
    let listed = ctr_images(&ctd);
    assert!(
        listed.is_empty(),
        "no image record before the bundle verified: {listed:?}"
    );
    // What the killed import committed survives a garbage collection: containerd
    // put each blob in the import's lease in the commit itself, which is why an
    // import holds only the content that was present before it.
    let committed = ctd.content_blobs();
    assert!(
        !committed.is_empty(),
        "a blob was committed before the kill"
    );
    ctd.collect_garbage("gc-after-kill");
    assert_eq!(
        ctd.content_blobs(),
        committed,
        "the killed import's lease held what it committed"
    );

    let plan = cli_report(
        &run(w
            .import(&bundle)
            .arg("--containerd")
            .arg(ctd.socket())
            .args(["--dry-run", "--json"])),
        "import-plan",
    );
    let partial = plan["targets"][0]["plan"]["bytesToWrite"].as_u64().unwrap();
    let total: u64 = head.manifest.blobs.iter().map(|b| b.size).sum();
    assert!(
        partial < total,
        "committed blobs are reused: {partial} of {total}"
    );

    run(w.import(&bundle).arg("--containerd").arg(ctd.socket()));
    assert_all_imported(&ctd, &images_of(&bundle));

    // The rerun took over the killed import's lease and deleted it with its own:
    // no gapbundle lease is left. Running containerd's garbage collector now (a
    // lease removed with --sync runs it) must keep every blob and snapshot of
    // every image: the GC labels hold them.
    let leases = ctd.ctr_stdout(&["leases", "ls"]);
    assert!(
        !leases.lines().any(|l| l.starts_with("gapbundle-")),
        "{leases}"
    );
    let content = ctd.content_blobs();
    let snaps = ctd.ctr_stdout(&["snapshots", "--snapshotter", "overlayfs", "ls"]);
    ctd.collect_garbage("run-the-gc");
    assert_eq!(ctd.content_blobs(), content, "GC kept all content");
    assert_eq!(
        ctd.ctr_stdout(&["snapshots", "--snapshotter", "overlayfs", "ls"]),
        snaps,
        "GC kept all snapshots"
    );
    assert_all_imported(&ctd, &images_of(&bundle));
}

#[test]
fn unreachable_containerd_exits_5_naming_the_socket_and_what_to_do() {
    let w = Work::new("k3s-test");
    let bundle = fixture_bundle(&w);
    // A socket file nothing listens on any more (connect: refused), and a path
    // that does not exist.
    let dead = w.path("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).unwrap());
    assert!(
        dead.exists(),
        "the socket file stays after its listener is gone"
    );
    for socket in [dead, w.path("nowhere.sock")] {
        let out = w
            .import(&bundle)
            .arg("--containerd")
            .arg(&socket)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(5), "{socket:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for part in [
            socket.to_str().unwrap(),
            "is K3s running?",
            "--containerd SOCKET",
            "--staged",
        ] {
            assert!(err.contains(part), "{part:?} missing from: {err}");
        }
        // A dry run still plans: it says which target it could not reach and
        // that it did not check what that target holds, and sizes everything.
        let dry = run_stdout(
            w.import(&bundle)
                .arg("--containerd")
                .arg(&socket)
                .arg("--dry-run"),
        );
        assert!(
            dry.contains("3 new, 0 already present")
                && dry.contains("not reachable, so what it holds was not checked")
                && dry.contains(socket.to_str().unwrap())
                && dry.contains("is K3s running?"),
            "{dry}"
        );
        let plan = cli_report(
            &run(w
                .import(&bundle)
                .arg("--containerd")
                .arg(&socket)
                .args(["--dry-run", "--json"])),
            "import-plan",
        );
        let t = &plan["targets"][0]["plan"];
        assert!(
            t["unreachable"]
                .as_str()
                .unwrap()
                .contains("is K3s running?"),
            "{plan}"
        );
        assert!(t["bytesToWrite"].as_u64().unwrap() > 0, "{plan}");
        let out = w
            .import(&bundle)
            .arg("--containerd")
            .arg(&socket)
            .arg("--json")
            .output()
            .unwrap();
        fails(&out, 5);
        let v = cli_report(&out, "error");
        assert_eq!(v["exitCode"], 5, "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains(socket.to_str().unwrap()),
            "{v}"
        );
    }
}

/// A bundle of Kubernetes manifests as the create side lays them out: one object
/// per YAML document, meta file/order/source, one blob zstd-encoded.
fn manifest_bundle(w: &Work, docs: &[(&str, u64, &str, bool)]) -> PathBuf {
    manifest_bundle_version(w, "1.0", docs)
}

/// [`manifest_bundle`] as version `version` of bundle `edge-site`.
fn manifest_bundle_version(w: &Work, version: &str, docs: &[(&str, u64, &str, bool)]) -> PathBuf {
    let mut b = BundleBuilder::new("edge-site", version, 0, vec!["all".into()]);
    let mut blobs = BTreeMap::new();
    for (file, order, text, zstd) in docs {
        let content = text.as_bytes().to_vec();
        let (stored, encoding, info) = if *zstd {
            let z = zstd::encode_all(&content[..], 3).unwrap();
            (
                z,
                Some(Encoding::Zstd),
                Some(ContentInfo {
                    digest: Digest::of(&content),
                    size: content.len() as u64,
                }),
            )
        } else {
            (content.clone(), None, None)
        };
        let d = Digest::of(&stored);
        b.add_blob(
            BlobEntry {
                digest: d,
                size: stored.len() as u64,
                media_type: "application/yaml".into(),
                offset: None,
                encoding,
                content: info,
            },
            1,
        )
        .unwrap();
        let meta = Meta::K8sManifest(K8sManifestMeta {
            source: "chart:web".into(),
            file: file.to_string(),
            order: *order,
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("default".into()),
            name: format!("doc-{order}"),
            images: Vec::new(),
            extra: Default::default(),
        });
        b.add_object(Object {
            kind: Kind::K8sManifest,
            name: format!("{file}#{order}"),
            digest: d,
            media_type: "application/yaml".into(),
            size: stored.len() as u64,
            blobs: vec![d],
            meta,
        })
        .unwrap();
        blobs.insert(d, stored);
    }
    let plan = b.finish().unwrap();
    let env = Envelope::sign(plan.digest, &[w.signing_key()]);
    let out = w.path(format!("manifests-{version}.gapb"));
    let f = fs::File::create(&out).unwrap();
    write_bundle(f, &plan, &env, &MemBlobs(blobs), |_| {}).unwrap();
    out
}

#[test]
fn manifests_land_whole_in_the_auto_deploy_folder() {
    let w = Work::new("k3s-test");
    let bundle = manifest_bundle(
        &w,
        &[
            (
                "chart-web.yaml",
                1,
                "kind: Service\nmetadata:\n  name: web\n",
                true,
            ),
            (
                "chart-web.yaml",
                0,
                "kind: Deployment\nmetadata:\n  name: web",
                false,
            ),
            ("extra.yaml", 0, "kind: ConfigMap\n", false),
        ],
    );
    let plan = cli_report(
        &run(w.import(&bundle).args(["--dry-run", "--json"])),
        "import-plan",
    );
    assert_eq!(
        plan["targets"][0]["plan"]["newObjects"],
        json!(["chart-web.yaml", "extra.yaml"])
    );
    run(&mut w.import(&bundle));
    let dir = w.k3s_root().join("server/manifests/edge-site");
    assert_eq!(
        fs::read_to_string(dir.join("chart-web.yaml")).unwrap(),
        "kind: Deployment\nmetadata:\n  name: web\n---\nkind: Service\nmetadata:\n  name: web\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("extra.yaml")).unwrap(),
        "kind: ConfigMap\n"
    );
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "no temporary file is left: {names:?}");
    // Rerun: recognised as present.
    let plan = cli_report(
        &run(w.import(&bundle).args(["--dry-run", "--json"])),
        "import-plan",
    );
    assert_eq!(
        plan["targets"][0]["plan"]["presentObjects"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // --skip-manifests leaves nothing to import.
    let out = w.import(&bundle).arg("--skip-manifests").output().unwrap();
    assert!(!out.status.success());
}

/// Everything under `root`, symlinks not followed: path -> file bytes, `dir` or
/// `-> target`.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut all = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                todo.push(p.clone());
                "dir".into()
            } else {
                String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
            };
            all.insert(p.strip_prefix(root).unwrap().to_path_buf(), what);
        }
    }
    all
}

#[test]
fn a_newer_version_removes_the_manifest_files_it_no_longer_has() {
    const WEB1: &str = "kind: Deployment\nmetadata:\n  name: web\n";
    const WEB2: &str = "kind: Deployment\nmetadata:\n  name: web\n  labels: {v: \"2\"}\n";
    const EXTRA: &str = "kind: ConfigMap\nmetadata:\n  name: extra\n";
    let w = Work::new("k3s-test");
    let v1 = manifest_bundle_version(
        &w,
        "1",
        &[
            ("chart-web.yaml", 0, WEB1, false),
            ("extra.yaml", 0, EXTRA, true),
        ],
    );
    let v2 = manifest_bundle_version(&w, "2", &[("chart-web.yaml", 0, WEB2, false)]);
    run(&mut w.import(&v1));
    let manifests = w.k3s_root().join("server/manifests");
    let dir = manifests.join("edge-site");
    assert_eq!(fs::read_to_string(dir.join("extra.yaml")).unwrap(), EXTRA);

    // What people put elsewhere, named like ours: a folder of their own under
    // server/manifests, a file beside the bundle folders. And in the bundle's own
    // folder, things gapbundle never writes: another name, K3s's `.skip` marker, a
    // symlink out (named like a manifest file), a folder.
    let mine = manifests.join("mine");
    fs::create_dir_all(&mine).unwrap();
    fs::write(mine.join("extra.yaml"), EXTRA).unwrap();
    fs::write(mine.join("chart-web.yaml"), WEB1).unwrap();
    fs::write(manifests.join("extra.yaml"), EXTRA).unwrap();
    fs::write(dir.join("notes.txt"), "mine\n").unwrap();
    fs::write(dir.join("other.yaml.skip"), "").unwrap();
    std::os::unix::fs::symlink(mine.join("extra.yaml"), dir.join("linked.yaml")).unwrap();
    fs::create_dir(dir.join("folder.yaml")).unwrap();
    fs::write(dir.join("folder.yaml/x.yaml"), EXTRA).unwrap();
    let before = tree(&w.k3s_root());

    // --dry-run says what would go and why it matters, and changes nothing.
    let out = run(w.import(&v2).arg("--dry-run"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("would remove  extra.yaml (K3s deletes what it deployed from it)"),
        "{text}"
    );
    assert!(text.contains("1 to remove"), "{text}");
    let plan = cli_report(
        &run(w.import(&v2).args(["--dry-run", "--json"])),
        "import-plan",
    );
    let p = &plan["targets"][0]["plan"];
    assert_eq!(p["objectsToRemove"], json!(["extra.yaml"]), "{plan}");
    assert_eq!(p["newObjects"], json!(["chart-web.yaml"]), "{plan}");
    assert_eq!(tree(&w.k3s_root()), before, "a dry run changes nothing");

    // The import: the changed file has the new bytes, the gone one is gone, and
    // nothing else anywhere changed.
    let out = cli_report(&run(w.import(&v2).arg("--json")), "import");
    let result = &out["targets"][0]["result"];
    assert_eq!(result["written"], json!(["chart-web.yaml"]), "{out}");
    assert_eq!(result["removed"], json!(["extra.yaml"]), "{out}");
    let mut expected = before.clone();
    expected.insert(
        "server/manifests/edge-site/chart-web.yaml".into(),
        WEB2.into(),
    );
    expected.remove(Path::new("server/manifests/edge-site/extra.yaml"));
    assert_eq!(tree(&w.k3s_root()), expected);
    let plan = cli_report(
        &run(w.import(&v2).args(["--dry-run", "--json"])),
        "import-plan",
    );
    assert!(
        plan["targets"][0]["plan"].get("objectsToRemove").is_none(),
        "{plan}"
    );

    // Killed after the new file was renamed in, before the old one was removed:
    // the rerun finds the new file in place and removes the old one.
    run(&mut w.import(&v1));
    assert_eq!(tree(&w.k3s_root()), before);
    fs::write(dir.join("chart-web.yaml"), WEB2).unwrap();
    let out = run(&mut w.import(&v2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0 new, 1 already present, 1 removed"),
        "{text}"
    );
    assert!(
        text.contains("removed  extra.yaml (K3s deletes what it deployed from it)"),
        "{text}"
    );
    assert_eq!(tree(&w.k3s_root()), expected);

    // A version with no manifests at all empties the folder of ours, and keeps
    // the folder because other things are in it.
    let v3 = manifest_bundle_version(&w, "3", &[]);
    let out = cli_report(&run(w.import(&v3).arg("--json")), "import");
    assert_eq!(
        out["targets"][0]["result"]["removed"],
        json!(["chart-web.yaml"]),
        "{out}"
    );
    expected.remove(Path::new("server/manifests/edge-site/chart-web.yaml"));
    assert_eq!(tree(&w.k3s_root()), expected);
}

#[test]
fn staged_archive_is_what_ctr_images_import_accepts() {
    let w = Work::new("k3s-test");
    let bundle = fixture_bundle(&w);
    let images = images_of(&bundle);
    run(w.import(&bundle).arg("--staged"));
    let archive = w.k3s_root().join("agent/images/edge-site.tar");
    assert!(archive.is_file());
    let first = fs::metadata(&archive).unwrap().modified().unwrap();

    // A rerun recognises the archive and leaves it alone.
    let plan = cli_report(
        &run(w.import(&bundle).args(["--staged", "--dry-run", "--json"])),
        "import-plan",
    );
    assert_eq!(plan["targets"][0]["plan"]["bytesToWrite"], 0, "{plan}");
    run(w.import(&bundle).arg("--staged"));
    assert_eq!(fs::metadata(&archive).unwrap().modified().unwrap(), first);

    // What K3s does at start: import the archive into its containerd.
    let ctd = Containerd::start();
    let out = ctd.ctr_stdout(&[
        "images",
        "import",
        "--all-platforms",
        archive.to_str().unwrap(),
    ]);
    let listed = ctr_images(&ctd);
    for (name, digest) in &images {
        let (d, _) = listed
            .get(name)
            .unwrap_or_else(|| panic!("{name} not imported: {out}\n{listed:#?}"));
        assert_eq!(d, digest, "{name}: same digest after ctr images import");
    }
}

#[test]
fn fleet_mode_pushes_identical_digests_and_writes_a_mirror_snippet() {
    let reg = Registry::start();
    let fixtures = push_fixture_images(&reg, None);
    let fleet = Registry::start_with_htpasswd("fleet", "s3cret");
    let w = Work::new("k3s-test");
    let bundle = bundle_fixtures(&w, &reg);
    let images = images_of(&bundle);
    let push = |extra: &[&str]| {
        let mut c = w.import(&bundle);
        c.args([
            "--registry",
            &fleet.addr,
            "--insecure-registry",
            &fleet.addr,
        ])
        .args(["--registry-auth", &format!("{}=fleet:s3cret", fleet.addr)])
        .args(extra);
        c
    };
    run(&mut push(&[]));
    let creds = Some(("fleet", "s3cret"));
    for (name, digest) in &images {
        let moved = name.replacen(&reg.addr, &fleet.addr, 1);
        assert_eq!(
            &skopeo_digest_with_creds(&format!("docker://{moved}"), creds),
            digest,
            "{moved} keeps its digest"
        );
    }
    // Every platform of the multi-arch index is there, by digest.
    for p in &fixtures.multi.platforms {
        let r = format!("docker://{}/team/multi@{}", fleet.addr, p.manifest_digest);
        let m = skopeo_manifest(&r, creds);
        assert_eq!(manifest_layer_digests(&m), p.layer_digests);
    }
    let snippet = w.k3s_root().join("registries.yaml.gapbundle");
    let yaml = fs::read_to_string(&snippet).unwrap();
    assert!(
        yaml.contains(&format!(
            "mirrors:\n  \"{}\":\n    endpoint:\n      - \"http://{}\"",
            reg.addr, fleet.addr
        )),
        "{yaml}"
    );
    // The nodes need the fleet registry's credentials too: K3s's `configs`
    // section, in a file only its owner reads.
    assert!(
        yaml.contains(&format!(
            "configs:\n  \"{}\":\n    auth:\n      username: \"fleet\"\n      password: \"s3cret\"\n",
            fleet.addr
        )),
        "{yaml}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&snippet).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The --json report shows the configs, never the password.
    let report = cli_report(&run(&mut push(&["--json"])), "import");
    let result = &report["targets"][0]["result"];
    assert_eq!(
        result["configs"][&fleet.addr]["auth"]["username"], "fleet",
        "{report}"
    );
    assert!(!report.to_string().contains("s3cret"), "{report}");
    // A second push finds everything there.
    let plan = cli_report(&run(&mut push(&["--dry-run", "--json"])), "import-plan");
    assert_eq!(plan["targets"][0]["plan"]["bytesToWrite"], 0, "{plan}");
    assert_eq!(
        plan["targets"][0]["plan"]["presentObjects"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn a_sparse_multi_arch_bundle_imports_for_this_platform() {
    let reg = Registry::start();
    let fixtures = push_fixture_images(&reg, None);
    let ctd = Containerd::start();
    let w = Work::new("k3s-test");
    w.write(
        "bundle.yaml",
        &format!(
            "name: sparse\nversion: \"1\"\nplatforms: [linux/amd64]\nimages:\n  - ref: {}\n",
            fixtures.multi.reference
        ),
    );
    let bundle = create_quietly(&w, "sparse.gapb", &reg);
    run(w.import(&bundle).arg("--containerd").arg(ctd.socket()));
    // The index is registered unchanged (same digest as published) and this
    // machine's platform is complete and unpacked.
    let images = images_of(&bundle);
    assert_eq!(images[0].1, fixtures.multi.index_digest);
    if std::env::consts::ARCH == "x86_64" {
        assert_all_imported(&ctd, &images);
        // The staged archive of a sparse bundle imports too (for this platform,
        // which is what ctr does by default).
        run(w.import(&bundle).arg("--staged"));
        let second = Containerd::start();
        let archive = w.k3s_root().join("agent/images/sparse.tar");
        second.ctr_stdout(&["images", "import", archive.to_str().unwrap()]);
        let (name, digest) = &images[0];
        assert_eq!(&ctr_images(&second)[name].0, digest);
        let check = second.ctr_stdout(&["images", "check"]);
        assert!(
            check.contains("complete") && check.trim_end().ends_with("true"),
            "{check}"
        );
    }
}

#[test]
fn fleet_mode_trusts_a_private_ca_with_registry_ca() {
    let reg = Registry::start();
    push_fixture_images(&reg, None);
    let fleet = TlsRegistry::start();
    let w = Work::new("k3s-test");
    let bundle = bundle_fixtures(&w, &reg);

    // Without the CA the registry's certificate is refused, and the error says how.
    let out = w
        .import(&bundle)
        .args(["--registry", &fleet.addr])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&fleet.addr) && err.contains("--registry-ca"),
        "{err}"
    );

    run(w
        .import(&bundle)
        .args(["--registry", &fleet.addr, "--registry-ca"])
        .arg(fleet.ca()));
    for (name, digest) in images_of(&bundle) {
        let moved = name.replacen(&reg.addr, &fleet.addr, 1);
        assert_eq!(fleet.digest(&moved), digest, "{moved}");
    }
    let yaml = fs::read_to_string(w.k3s_root().join("registries.yaml.gapbundle")).unwrap();
    assert!(
        yaml.contains(&format!("- \"https://{}\"", fleet.addr)),
        "{yaml}"
    );
    assert!(yaml.contains("ca_file:"), "{yaml}");
}

#[test]
fn apply_mode_reports_a_failing_kubectl() {
    let w = Work::new("k3s-test");
    let bundle = manifest_bundle(&w, &[("extra.yaml", 0, "kind: ConfigMap\n", false)]);
    let kubeconfig = w.path("kubeconfig");
    fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\n\
         contexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user: {}\n",
    )
    .unwrap();
    let out = w
        .import(&bundle)
        .arg("--apply")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("kubectl apply of extra.yaml failed"), "{err}");
    assert!(
        !w.k3s_root().join("server/manifests").exists(),
        "--apply does not write the auto-deploy folder"
    );
}

#[test]
fn a_staged_archive_that_cannot_fit_stops_before_writing() {
    let w = Work::new("k3s-test");
    let bundle = fixture_bundle(&w);
    let images = w.k3s_root().join("agent/images");
    let _full = FullTmpfs::mount(&images);
    let o = w
        .import(&bundle)
        .args(["--staged", "--skip-manifests"])
        .output()
        .unwrap();
    let err = fails(&o, 1);
    assert!(
        err.contains("the K3s images folder") && err.contains("--k3s-root"),
        "{err}"
    );
    let left: Vec<_> = fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("fill")],
        "nothing written"
    );
}
