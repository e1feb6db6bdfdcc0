//! Delta bundles end to end with the real services: two versions of an image set
//! in a real registry (v2 changes one layer of the app and adds an image), deltas
//! made against the v1 bundle and against inventories read off a real containerd
//! and a real fleet registry, imported there (and refused where the base is not),
//! and patched back into the very bytes a full create writes.
//!
//! Which blobs a delta must store is worked out here independently of gapbundle:
//! from what skopeo reads in the registry, v2's blobs that v1 lacks.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use gapbundle::bundle::manifest::{BaseKind, FULL_MANIFEST_MEDIA_TYPE, FULL_SIGNATURES_MEDIA_TYPE};
use serde_json::Value;

use crate::support::*;

/// Exit code of a delta that does not fit its target (README, `gapbundle --help`).
const DELTA_DOES_NOT_FIT: i32 = 6;

struct Site {
    work: Work,
    reg: Registry,
}

impl Site {
    /// A registry with both versions pushed, and the two specs written.
    fn new() -> Site {
        let work = Work::new("release");
        let reg = Registry::start();
        push_versions(&reg);
        for v in [1, 2] {
            let dir = work.path(format!("v{v}"));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("bundle.yaml"), versions_spec(&reg, v)).unwrap();
        }
        run(gapbundle()
            .args(["key", "generate", "--name", "site-a", "--dir"])
            .arg(work.path("keys")));
        Site { work, reg }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.work.path(p)
    }

    /// `create` of version `v` into `out`, with the cache `cache` and more args.
    fn create(&self, v: u32, out: &str, cache: &str, more: &[&str]) -> Output {
        let mut c = create_cmd(
            &self.path(&format!("v{v}/bundle.yaml")),
            &self.path(out),
            &self.work.secret(),
            &self.path(cache),
        );
        c.args(["--insecure-registry", &self.reg.addr, "--quiet"]);
        for a in more {
            c.arg(self.arg(a));
        }
        ok(c.output().unwrap())
    }

    /// An argument: a path in the work folder when it names a file there.
    fn arg(&self, a: &str) -> String {
        let p = self.path(a);
        if !a.starts_with('-') && (p.exists() || a.ends_with(".gapb") || a.ends_with(".inv")) {
            p.display().to_string()
        } else {
            a.to_string()
        }
    }

    fn gb(&self, args: &[&str]) -> Output {
        let mut c = gapbundle();
        for a in args {
            c.arg(self.arg(a));
        }
        c.output().unwrap()
    }
}

/// The blobs a bundle stores, without the two that carry a delta's full head and
/// without the spec and the lock (new in every version).
fn stored_image_blobs(p: &Path) -> BTreeSet<String> {
    let head = head_of(p);
    let m = &head.manifest;
    let not_images: BTreeSet<String> = m
        .objects
        .iter()
        .filter(|o| o.kind.as_str() != "image")
        .map(|o| o.digest.to_string())
        .collect();
    m.blobs
        .iter()
        .filter(|b| b.offset.is_some())
        .filter(|b| {
            b.media_type != FULL_MANIFEST_MEDIA_TYPE && b.media_type != FULL_SIGNATURES_MEDIA_TYPE
        })
        .map(|b| b.digest.to_string())
        .filter(|d| !not_images.contains(d))
        .collect()
}

/// v2's blobs that v1 lacks: what a delta of v2 against v1 must store.
fn new_in_v2(reg: &Registry) -> BTreeSet<String> {
    let v1 = blobs_of(reg, &V1);
    blobs_of(reg, &V2).difference(&v1).cloned().collect()
}

#[test]
fn a_delta_against_the_previous_bundle_stores_only_new_blobs_and_patches_to_the_full_bundle() {
    let s = Site::new();
    s.create(1, "v1.gapb", "cache", &[]);
    s.create(2, "v2.gapb", "cache", &[]);
    // A cold cache: what v1 holds is not even downloaded.
    let created = cli_report(
        &s.create(2, "d2.gapb", "cold", &["--json", "--against", "v1.gapb"]),
        "create",
    );
    let new = new_in_v2(&s.reg);
    assert_eq!(
        new.len(),
        6,
        "app:2's manifest, config and layer; extra's three"
    );
    assert_eq!(stored_image_blobs(&s.path("d2.gapb")), new);
    let cached: BTreeSet<String> = fs::read_dir(s.path("cold/blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    let shared = blobs_of(&s.reg, &V1);
    let base_layer = blobs_of(&s.reg, &["team/tool:1"])
        .intersection(&blobs_of(&s.reg, &["team/extra:1"]))
        .next()
        .cloned()
        .unwrap();
    assert!(
        !cached.contains(&base_layer),
        "the base layer was downloaded"
    );
    // (Manifests, and the configs that say a single-platform image's platform, are
    // read to resolve the images; layers are what fetching is about.)
    let v1_layers: BTreeSet<String> = V1
        .iter()
        .flat_map(|n| {
            let raw = skopeo_raw(&format!("docker://{}", s.reg.reference(n)), None);
            manifest_layer_digests(&serde_json::from_slice(&raw).unwrap())
        })
        .collect();
    let downloaded: Vec<&String> = v1_layers
        .iter()
        .filter(|d| cached.contains(*d) && !new.contains(*d))
        .collect();
    assert!(
        downloaded.is_empty(),
        "v1's layers were downloaded: {downloaded:?}"
    );

    // The delta lists every object in full, and says what it is against.
    let (v1, v2, d2) = (
        head_of(&s.path("v1.gapb")),
        head_of(&s.path("v2.gapb")),
        head_of(&s.path("d2.gapb")),
    );
    assert_eq!(d2.manifest.objects, v2.manifest.objects);
    assert_eq!(created["delta"]["fullDigest"], v2.digest.to_string());
    assert_eq!(
        created["delta"]["fullSize"],
        fs::metadata(s.path("v2.gapb")).unwrap().len()
    );
    let inspect = cli_report(&ok(s.gb(&["--json", "inspect", "d2.gapb"])), "inspect");
    assert_eq!(inspect["delta"]["against"][0]["kind"], "bundle");
    assert_eq!(
        inspect["delta"]["against"][0]["digest"],
        v1.digest.to_string()
    );
    assert_eq!(inspect["delta"]["fullDigest"], v2.digest.to_string());
    let kept: BTreeSet<String> = blobs_of(&s.reg, &V2)
        .intersection(&shared)
        .cloned()
        .collect();
    assert_eq!(inspect["delta"]["expectedBlobs"], kept.len());

    // verify checks the signature, every stored blob and the full head, and lists
    // what the delta expects on the target.
    let pubkey = s.work.public().display().to_string();
    let v = cli_report(
        &ok(s.gb(&["--json", "verify", "d2.gapb", "--trust", &pubkey])),
        "verify",
    );
    assert_eq!(v["delta"]["fullChecked"], v2.digest.to_string());
    let expected: BTreeSet<String> = v["delta"]["expected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(expected, kept);
    let text =
        String::from_utf8(ok(s.gb(&["verify", "d2.gapb", "--trust", &pubkey])).stdout).unwrap();
    assert!(text.contains(&base_layer), "{text}");

    // patch, without a key, gives the full bundle byte for byte, and it verifies.
    let patched = cli_report(
        &ok(s.gb(&["--json", "patch", "v1.gapb", "d2.gapb", "-o", "p2.gapb"])),
        "patch",
    );
    assert_eq!(patched["digest"], v2.digest.to_string());
    assert_eq!(patched["blobsFromBases"], kept.len());
    assert!(
        fs::read(s.path("p2.gapb")).unwrap() == fs::read(s.path("v2.gapb")).unwrap(),
        "patch of v1 + delta is not the full v2 bundle"
    );
    ok(s.gb(&["verify", "p2.gapb", "--trust", &pubkey]));

    // diff says what changed and what the delta stores.
    let d = cli_report(&ok(s.gb(&["--json", "diff", "v1.gapb", "v2.gapb"])), "diff");
    let names = |k: &str| -> Vec<String> {
        d[k].as_array()
            .unwrap()
            .iter()
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("added"), [s.reg.reference("team/extra:1")]);
    assert_eq!(names("removed"), Vec::<String>::new());
    // app:1 -> app:2 is one image in a new version (its repository stays).
    let app = d["changed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "image")
        .unwrap();
    assert_eq!(app["name"], s.reg.reference("team/app:2"));
    assert_eq!(app["oldName"], s.reg.reference("team/app:1"));
    assert!(names("changed").contains(&"bundle.yaml".to_string()));
    let delta_blobs: u64 = d2
        .manifest
        .blobs
        .iter()
        .filter(|b| b.offset.is_some())
        .map(|b| b.size)
        .sum();
    assert_eq!(d["delta"]["storedBytes"], delta_blobs);
    assert_eq!(d["delta"]["leftOutBlobs"], kept.len());

    // Bases that lack blobs: refused with the documented code, nothing written.
    // Any bundle that stores the blobs does as a base (v2 stores them all).
    ok(s.gb(&["patch", "v2.gapb", "d2.gapb", "-o", "p2-from-v2.gapb"]));
    assert!(fs::read(s.path("p2-from-v2.gapb")).unwrap() == fs::read(s.path("v2.gapb")).unwrap());
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bundle-spec/vectors/tiny/tiny.gapb");
    let o = s.gb(&[
        "patch",
        &tiny.display().to_string(),
        "d2.gapb",
        "-o",
        "bad2.gapb",
    ]);
    assert_eq!(o.status.code(), Some(DELTA_DOES_NOT_FIT), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&base_layer) && stderr(&o).contains(&v1.digest.to_string()),
        "{}",
        stderr(&o)
    );
    assert!(!s.path("bad2.gapb").exists());
}

#[test]
fn a_delta_against_a_containerd_inventory_imports_there_and_is_refused_elsewhere() {
    let s = Site::new();
    s.create(1, "v1.gapb", "cache", &[]);
    s.create(2, "v2.gapb", "cache", &[]);
    let pubkey = s.work.public().display().to_string();
    let site_key = s.path("keys/site-a.sec").display().to_string();
    let site_pub = s.path("keys/site-a.pub").display().to_string();
    let a = Containerd::start();
    let import = |c: &Containerd, bundle: &str, more: &[&str]| {
        let mut cmd = s.work.import(&s.path(bundle));
        cmd.arg("--containerd")
            .arg(c.socket())
            .arg("--skip-manifests")
            .args(more);
        cmd.output().unwrap()
    };
    ok(import(&a, "v1.gapb", &[]));

    // The inventory of that containerd, signed with the site key.
    let sock = a.socket().display().to_string();
    let inv = cli_report(
        &ok(s.gb(&[
            "--json",
            "inventory",
            "-o",
            "site.inv",
            "--containerd",
            &sock,
            "--skip-nix",
            "--skip-manifests",
            "--key",
            &site_key,
            "--site",
            "site-a",
        ])),
        "inventory",
    );
    assert_eq!(
        inv["containerdBlobs"].as_u64().unwrap() as usize,
        a.content_blobs().len()
    );
    s.create(
        2,
        "d2.gapb",
        "cache",
        &["--against", "site.inv", "--trust", &site_pub],
    );
    assert_eq!(stored_image_blobs(&s.path("d2.gapb")), new_in_v2(&s.reg));
    let d2 = head_of(&s.path("d2.gapb"));
    let base = &d2.manifest.delta.as_ref().unwrap().against[0];
    assert!(
        base.kind == BaseKind::Inventory && base.name == "site-a",
        "{base:?}"
    );
    // A base whose signature does not verify with --trust is refused.
    let mut c = create_cmd(
        &s.path("v2/bundle.yaml"),
        &s.path("x.gapb"),
        &s.work.secret(),
        &s.path("cache"),
    );
    c.args(["--insecure-registry", &s.reg.addr, "--against"])
        .arg(s.path("site.inv"))
        .arg("--trust")
        .arg(&pubkey);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(!s.path("x.gapb").exists());

    // Into the containerd the inventory came from: every image complete.
    ok(import(&a, "d2.gapb", &[]));
    let check = a.ctr_stdout(&["images", "check"]);
    for name in V2 {
        let line = check
            .lines()
            .find(|l| l.starts_with(&s.reg.reference(name)))
            .unwrap_or_else(|| panic!("{name} not registered:\n{check}"));
        assert!(line.contains("complete"), "{line}");
    }

    // Into an empty containerd: refused before anything is written, naming a
    // missing blob and the base that has it.
    let b = Containerd::start();
    let o = import(&b, "d2.gapb", &[]);
    assert_eq!(o.status.code(), Some(DELTA_DOES_NOT_FIT), "{}", stderr(&o));
    let base_layer = blobs_of(&s.reg, &["team/tool:1"])
        .intersection(&blobs_of(&s.reg, &["team/extra:1"]))
        .next()
        .cloned()
        .unwrap();
    assert!(
        stderr(&o).contains(&base_layer) && stderr(&o).contains("inventory of site-a"),
        "{}",
        stderr(&o)
    );
    assert!(b.content_blobs().is_empty(), "{:?}", b.content_blobs());
    assert_eq!(b.ingests(), 0);
    assert_eq!(b.ctr_stdout(&["images", "ls", "-q"]).trim(), "");
    assert_eq!(b.ctr_stdout(&["leases", "ls", "-q"]).trim(), "");
    // --dry-run says the same.
    let o = import(&b, "d2.gapb", &["--dry-run"]);
    assert_eq!(o.status.code(), Some(DELTA_DOES_NOT_FIT), "{}", stderr(&o));

    // A staged archive cannot be written from a delta: the next step is patch.
    let o = {
        let mut cmd = s.work.import(&s.path("d2.gapb"));
        cmd.args(["--staged", "--skip-manifests"]).output().unwrap()
    };
    assert_eq!(o.status.code(), Some(DELTA_DOES_NOT_FIT), "{}", stderr(&o));
    assert!(stderr(&o).contains("gapbundle patch"), "{}", stderr(&o));
    assert!(!s.path("k3s/agent/images/site.tar").exists());
}

#[test]
fn a_delta_against_a_fleet_registry_inventory_is_pushed_there() {
    let s = Site::new();
    s.create(1, "v1.gapb", "cache", &[]);
    let fleet = Registry::start();
    let push = |bundle: &str| {
        let mut cmd = s.work.import(&s.path(bundle));
        cmd.args([
            "--registry",
            &fleet.addr,
            "--insecure-registry",
            &fleet.addr,
            "--skip-manifests",
        ]);
        cmd.output().unwrap()
    };
    ok(push("v1.gapb"));
    let inv = cli_report(
        &ok(s.gb(&[
            "--json",
            "inventory",
            "-o",
            "fleet.inv",
            "--registry",
            &fleet.addr,
            "--insecure-registry",
            &fleet.addr,
            "--skip-nix",
            "--skip-manifests",
        ])),
        "inventory",
    );
    assert!(inv["registryRepositories"].as_u64().unwrap() >= 1, "{inv}");
    s.create(2, "d2.gapb", "cache", &["--against", "fleet.inv"]);
    assert_eq!(stored_image_blobs(&s.path("d2.gapb")), new_in_v2(&s.reg));
    ok(push("d2.gapb"));
    // Every v2 image is in the fleet registry with its digest, and complete: the
    // new image's base layer was mounted from another repository.
    for name in V2 {
        let want = skopeo_digest(&format!("docker://{}", s.reg.reference(name)));
        let got = skopeo_digest(&format!("docker://{}", fleet.reference(name)));
        assert_eq!(got, want, "{name}");
        let dir = s.path(&format!("pulled-{}", name.replace(['/', ':'], "-")));
        run(skopeo().args([
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{}", fleet.reference(name)),
            &format!("oci:{}:x", dir.display()),
        ]));
    }
    // A fleet registry that never got v1 lacks the blobs: refused, nothing pushed.
    let empty = Registry::start();
    let mut cmd = s.work.import(&s.path("d2.gapb"));
    cmd.args([
        "--registry",
        &empty.addr,
        "--insecure-registry",
        &empty.addr,
        "--skip-manifests",
    ]);
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(DELTA_DOES_NOT_FIT), "{}", stderr(&o));
    assert!(try_skopeo_raw(&format!("docker://{}", empty.reference("team/app:2")), None).is_err());
}

/// A flake of three paths, `base` <- `lib` <- `app`, where only `app` differs
/// between versions: v2 changes a leaf of the closure (nothing references `app`).
fn nix_flake(version: u32) -> String {
    format!(
        r#"{{
  outputs = {{ self }}: let
    mk = name: script: builtins.derivation {{
      inherit name;
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" script ];
      PATH = "/usr/bin:/bin";
    }};
    base = mk "gb-delta-base" "{{ echo base; seq 1 50000; }} > $out";
    lib = mk "gb-delta-lib" "mkdir -p $out; echo ${{base}} > $out/base-ref";
    app = mk "gb-delta-app" "mkdir -p $out; echo ${{lib}} app {version} > $out/app";
  in {{ packages.x86_64-linux.app = app; }};
}}
"#
    )
}

/// The store path of the `app` of a flake folder, as Nix builds it.
fn built_app(flake: &Path) -> String {
    let out = run_stdout(
        nix("nix")
            .args([
                "build",
                "--json",
                "--no-link",
                ".#packages.x86_64-linux.app",
            ])
            .current_dir(flake),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["outputs"]["out"].as_str().unwrap().to_string()
}

/// The `nix-path` objects whose NARs a bundle stores.
fn stored_paths(p: &Path) -> BTreeSet<String> {
    let head = head_of(p);
    let m = &head.manifest;
    m.nix_paths()
        .filter(|(o, _)| m.blob(&o.digest).is_some_and(|b| b.offset.is_some()))
        .map(|(o, _)| o.name.clone())
        .collect()
}

#[test]
fn a_nix_delta_goes_into_the_store_and_the_file_cache_it_was_made_against() {
    let w = Work::new("release");
    for v in [1, 2] {
        fs::create_dir_all(w.path(format!("v{v}/flake"))).unwrap();
        fs::write(w.path(format!("v{v}/flake/flake.nix")), nix_flake(v)).unwrap();
        fs::write(
            w.path(format!("v{v}/bundle.yaml")),
            format!("name: nixsite\nversion: \"{v}\"\nnix:\n  - installable: ./flake#packages.x86_64-linux.app\n    gcRoot: app\n"),
        )
        .unwrap();
    }
    let gb = |args: &[&str]| -> Output {
        let mut c = gapbundle();
        c.env("NIX_CONFIG", NIX_CONFIG).args(args);
        c.output().unwrap()
    };
    let p = |s: &str| w.path(s).display().to_string();
    let (key, pubkey) = (
        w.secret().display().to_string(),
        w.public().display().to_string(),
    );
    let create = |v: u32, out: &str, more: &[&str]| {
        let spec = p(&format!("v{v}/bundle.yaml"));
        let mut args = vec!["create", "-f", &spec, "-o", out, "--key", &key, "--quiet"];
        let cache = p("cache");
        args.extend(["--cache", &cache]);
        args.extend(more);
        ok(gb(&args))
    };
    let (v1, v2, d2) = (p("v1.gapb"), p("v2.gapb"), p("d2.gapb"));
    create(1, &v1, &[]);
    create(2, &v2, &[]);
    create(2, &d2, &["--against", &v1]);
    let app2 = built_app(&w.path("v2/flake"));
    let app1 = built_app(&w.path("v1/flake"));
    assert_ne!(app1, app2);
    let only_app2: BTreeSet<String> = [app2.clone()].into();
    assert_eq!(stored_paths(Path::new(&d2)), only_app2);
    ok(gb(&["patch", &v1, &d2, "-o", &p("p2.gapb")]));
    assert!(
        fs::read(p("p2.gapb")).unwrap() == fs::read(&v2).unwrap(),
        "patch of the Nix delta"
    );
    ok(gb(&["verify", &p("p2.gapb"), "--trust", &pubkey]));

    let import = |bundle: &str, store: &str| {
        gb(&[
            "--json",
            "import",
            bundle,
            "--trust",
            &pubkey,
            "--skip-images",
            "--skip-manifests",
            "--nix-store",
            store,
        ])
    };
    let verify_store = |store: &str| {
        let key = fs::read_to_string(w.public()).unwrap();
        ok(nix("nix")
            .args([
                "store",
                "verify",
                "--store",
                store,
                "--all",
                "--option",
                "trusted-public-keys",
                key.trim(),
            ])
            .output()
            .unwrap());
    };
    let closure2 = run_stdout(nix("nix-store").args(["-qR", &app2]));
    for (name, store) in [
        ("store", format!("local?root={}", p("store"))),
        ("cache", format!("file://{}", p("bcache"))),
    ] {
        ok(import(&v1, &store));
        let inv = p(&format!("{name}.inv"));
        let listed = cli_report(
            &ok(gb(&[
                "--json",
                "inventory",
                "-o",
                &inv,
                "--nix-store",
                &store,
                "--skip-images",
                "--skip-manifests",
            ])),
            "inventory",
        );
        assert!(listed["nixPaths"].as_u64().unwrap() > 0, "{listed}");
        let delta = p(&format!("d2-{name}.gapb"));
        create(2, &delta, &["--against", &inv]);
        assert_eq!(stored_paths(Path::new(&delta)), only_app2, "{name}");
        let o = ok(import(&delta, &store));
        let added = cli_report(&o, "import")["targets"][0]["result"]["added"].clone();
        assert_eq!(added, serde_json::json!([app2]), "{name}");
        verify_store(&store);
        if name == "store" {
            let valid = run_stdout(
                nix("nix-store")
                    .args(["--store", &store, "--check-validity", "--print-invalid"])
                    .args(closure2.lines()),
            );
            assert_eq!(valid.trim(), "", "every path of v2 is valid in the store");
        }
    }
    // The full v2 into a store that has v1: only the new path is added (its
    // references are valid there already and not asked for again).
    let store2 = format!("local?root={}", p("store2"));
    ok(import(&v1, &store2));
    let o = ok(import(&v2, &store2));
    assert_eq!(
        cli_report(&o, "import")["targets"][0]["result"]["added"],
        serde_json::json!([app2])
    );
    verify_store(&store2);

    // Into a store that never had v1: refused, and the store is not even created.
    let empty = format!("local?root={}", p("empty"));
    let o = import(&p("d2-store.gapb"), &empty);
    assert_eq!(o.status.code(), Some(DELTA_DOES_NOT_FIT), "{}", stderr(&o));
    assert!(stderr(&o).contains("gb-delta-lib"), "{}", stderr(&o));
    assert!(!w.path("empty").exists(), "the empty store was written to");
    let o = import(&p("d2-cache.gapb"), &format!("file://{}", p("empty-cache")));
    assert_eq!(o.status.code(), Some(DELTA_DOES_NOT_FIT), "{}", stderr(&o));
    assert!(!w.path("empty-cache").exists());
}
