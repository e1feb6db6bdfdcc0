//! End-to-end tests of Nix closures: a real flake built by the real Nix 2.8 goes into a
//! bundle and out again into a fresh store and a `file://` binary cache, with Nix
//! itself as the judge (`nix-store --verify --check-contents`, `nix path-info --sigs`,
//! `nix copy` with only our key trusted).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use gapbundle::bundle::keys::SecretKey;
use gapbundle::bundle::reader::Head;
use gapbundle::bundle::BlobEntry;
use gapbundle::nixfmt::{fingerprint, sign_path, NarHash, StorePath};
use serde_json::Value;

use crate::support::*;

/// The flake the tests build: `base` <- `lib` <- `app`, and `tool` -> {`lib`, `base`},
/// so `lib` and `base` are shared by the two installables; `image` is an OCI archive
/// made by a derivation; `manifests` holds rendered YAML. `base` is about 9.6 MB, so
/// its NAR blob is several zstd frames (4 MiB of NAR each) that Nix must read as one.
const FLAKE: &str = r#"{
  outputs = { self }: let
    mk = name: script: builtins.derivation {
      inherit name;
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" script ];
      PATH = "/usr/bin:/bin";
    };
    base = mk "gb-test-base" "{ echo base-content; seq 1 1400000; } > $out";
    lib = mk "gb-test-lib" "mkdir -p $out/share; echo ${base} > $out/share/base-ref; echo library > $out/share/lib.txt";
    app = mk "gb-test-app" "mkdir -p $out/bin; printf '#!/bin/sh\necho %s\n' ${lib} > $out/bin/app; chmod +x $out/bin/app; ln -s bin/app $out/run";
    tool = mk "gb-test-tool" "echo ${lib} ${base} > $out";
  in {
    packages.x86_64-linux = {
      inherit app tool;
      image = mk "gb-test-image.tar" "cp ${./image.tar} $out";
      manifests = mk "gb-test-manifests" "mkdir -p $out; printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-nix\ndata:\n  k: v\n' > $out/cm.yaml";
    };
  };
}
"#;

fn gb() -> Command {
    with_nix_config(gapbundle())
}

/// A work folder with the key pair `test-release`, the flake [`FLAKE`] in
/// `flake/` and a spec bundling its outputs.
fn nix_work() -> Work {
    let w = Work::new("test-release");
    let flake = w.path("flake");
    fs::create_dir_all(&flake).unwrap();
    fs::write(flake.join("flake.nix"), FLAKE).unwrap();
    oci_archive_fixture(&flake.join("image.tar"));
    // Beside the flake, not in it: with a `path:` flake every file is part of the
    // flake's source, so a lock file written into it would change it.
    w.write(
        "bundle.yaml",
        "name: nixsite\nversion: \"1\"\nnix:\n  - installable: ./flake#packages.x86_64-linux.app\n    gcRoot: app\n    includeFlakeInputs: true\n  - installable: ./flake#packages.x86_64-linux.tool\n    gcRoot: tool\nimages:\n  - installable: ./flake#packages.x86_64-linux.image\n    name: example.test/nix/image:1\nmanifests:\n  - installable: ./flake#packages.x86_64-linux.manifests\n",
    );
    w
}

/// `gapbundle create` of the work spec into `out`, signed with `key`.
fn create(w: &Work, out: &str, key: &Path) -> Output {
    with_nix_config(create_cmd(
        &w.path("bundle.yaml"),
        &w.path(out),
        key,
        &w.path("cache"),
    ))
    .output()
    .unwrap()
}

/// What the import of `bundle` (`-`: stdin) into the Nix store `store` did.
fn import(w: &Work, bundle: &str, store: &str, trust: &Path) -> Output {
    import_cmd(w, bundle, store, trust).output().unwrap()
}

/// The import command line (Nix only, JSON report); `bundle` `-` reads stdin.
fn import_cmd(w: &Work, bundle: &str, store: &str, trust: &Path) -> Command {
    let mut c = gb();
    c.args(["--json", "import", "--skip-images", "--skip-manifests"]);
    if bundle == "-" {
        c.arg("-");
    } else {
        c.arg(w.path(bundle));
    }
    c.arg("--trust").arg(trust).args(["--nix-store", store]);
    c
}

/// A flake output's store path, as Nix builds it.
fn built(w: &Work, attr: &str) -> String {
    let out = run_stdout(
        nix("nix")
            .args(["build", "--json", "--no-link"])
            .arg(format!(".#packages.x86_64-linux.{attr}"))
            .current_dir(w.path("flake")),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["outputs"]["out"].as_str().unwrap().to_string()
}

fn closure(path: &str) -> Vec<String> {
    let out = run_stdout(nix("nix-store").args(["-qR", path]));
    out.lines().map(str::to_string).collect()
}

/// The root blob of `obj` (an object of the manifest as JSON).
fn blob_of<'h>(head: &'h Head, obj: &Value) -> &'h BlobEntry {
    head.manifest
        .blobs
        .iter()
        .find(|b| b.digest.to_string() == obj["digest"].as_str().unwrap())
        .unwrap()
}

/// How many zstd frames the root blob of `obj` (a manifest object) is made of.
fn frames_of(bundle: &Path, obj: &Value) -> usize {
    let bytes = fs::read(bundle).unwrap();
    let head = head_of(bundle);
    let blob = blob_of(&head, obj);
    let at = head.blob_position(blob).unwrap() as usize;
    let mut z = &bytes[at..at + blob.size as usize];
    let mut n = 0;
    while !z.is_empty() {
        z = &z[zstd::zstd_safe::find_frame_compressed_size(z).unwrap()..];
        n += 1;
    }
    n
}

/// The manifest of `head`, as JSON.
fn manifest_of(head: &Head) -> Value {
    serde_json::from_slice(&head.manifest_bytes).unwrap()
}

/// The names of the manifest's nix-path objects.
fn nix_names(manifest: &Value) -> Vec<String> {
    nix_objects(manifest)
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect()
}

fn nix_objects(manifest: &Value) -> Vec<&Value> {
    manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "nix-path")
        .collect()
}

#[test]
fn round_trip_into_a_fresh_store() {
    let w = nix_work();
    let o = ok(create(&w, "site.gapb", &w.secret()));
    let app = built(&w, "app");
    let tool_path = built(&w, "tool");
    let mut all = closure(&app);
    all.extend(closure(&tool_path));
    all.sort();
    all.dedup();
    assert!(all.len() >= 4, "{all:?}");

    // The closure is in the bundle once per path, references first in the file.
    let head = head_of(&w.path("site.gapb"));
    let m = manifest_of(&head);
    let objs = nix_objects(&m);
    let names: Vec<&str> = objs.iter().map(|o| o["name"].as_str().unwrap()).collect();
    for p in &all {
        assert_eq!(
            names.iter().filter(|n| *n == p).count(),
            1,
            "{p} in {names:?}"
        );
    }
    // includeFlakeInputs: the flake's own source is there too.
    assert!(
        names.iter().any(|n| n.ends_with("-source")),
        "no flake source in {names:?}"
    );
    let offset_of = |path: &str| {
        let o = objs.iter().find(|o| o["name"] == path).unwrap();
        let d = o["digest"].as_str().unwrap();
        let b = m["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["digest"] == d)
            .unwrap();
        assert_eq!(b["encoding"], "zstd");
        assert_eq!(b["mediaType"], "application/vnd.gapbundle.nix.nar.v1+zstd");
        let nar = NarHash::parse(o["meta"]["narHash"].as_str().unwrap()).unwrap();
        assert_eq!(b["content"]["digest"], nar.digest().to_string());
        b["offset"].as_u64().unwrap()
    };
    for o in &objs {
        let p = o["name"].as_str().unwrap();
        for r in o["meta"]["references"].as_array().unwrap() {
            let r = r.as_str().unwrap();
            if r != p {
                assert!(offset_of(r) < offset_of(p), "{r} must come before {p}");
            }
        }
    }
    // base's NAR is several frames, and the round trip below has Nix read them.
    let base_obj = objs
        .iter()
        .find(|o| o["name"].as_str().unwrap().ends_with("-gb-test-base"))
        .unwrap();
    assert!(
        frames_of(&w.path("site.gapb"), base_obj) >= 3,
        "base's NAR should span several frames"
    );
    let app_obj = objs.iter().find(|o| o["name"] == app.as_str()).unwrap();
    assert_eq!(app_obj["meta"]["gcRoots"], serde_json::json!(["app"]));
    assert!(m["objects"]
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["kind"] == "image" && o["name"] == "example.test/nix/image:1"));
    // The YAML output went through the manifests resolver (build_manifests).
    assert!(
        m["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["kind"] == "k8s-manifest"
                && o["name"].as_str().unwrap().contains("ConfigMap")
                && o["name"].as_str().unwrap().contains("from-nix")),
        "no ConfigMap from the flake in {}",
        String::from_utf8_lossy(&head.manifest_bytes)
    );
    drop(o);

    // Same spec, lock and key: the same bytes; and --locked accepts it.
    let lock = fs::read_to_string(w.path("bundle.lock")).unwrap();
    assert!(lock.contains(&app) && lock.contains("installable:./flake#packages.x86_64-linux.tool"));
    ok(with_nix_config(w.create("again.gapb"))
        .arg("--locked")
        .output()
        .unwrap());
    assert_eq!(
        fs::read(w.path("site.gapb")).unwrap(),
        fs::read(w.path("again.gapb")).unwrap()
    );
    ok(w.verify("site.gapb"));

    // Into a fresh chroot store.
    let root = w.path("target");
    let store = root.display().to_string();
    let dry = ok(gb()
        .args(["import", "--dry-run", "--skip-images", "--skip-manifests"])
        .arg(w.path("site.gapb"))
        .arg("--trust")
        .arg(w.public())
        .args(["--nix-store", &store])
        .output()
        .unwrap());
    assert!(
        valid_in(&root, &all).is_empty(),
        "a dry run changed nothing"
    );
    assert!(String::from_utf8_lossy(&dry.stdout).contains(&app));
    let planned = cli_report(
        &ok(gb()
            .args([
                "--json",
                "import",
                "--dry-run",
                "--skip-images",
                "--skip-manifests",
            ])
            .arg(w.path("site.gapb"))
            .arg("--trust")
            .arg(w.public())
            .args(["--nix-store", &store])
            .output()
            .unwrap()),
        "import-plan",
    )["targets"][0]["plan"]["bytesToWrite"]
        .as_u64()
        .unwrap();
    assert!(planned > 0);

    // With a proxy in the environment that goes nowhere, as on many field and CI
    // machines: the NARs are served on a loopback port, which no proxy is asked for.
    let imp = |w: &Work| {
        let mut c = gb();
        for var in ["http_proxy", "HTTP_PROXY", "all_proxy"] {
            c.env(var, "http://127.0.0.1:9");
        }
        c.args(["--json", "import", "--skip-images", "--skip-manifests"])
            .arg(w.path("site.gapb"))
            .arg("--trust")
            .arg(w.public())
            .args(["--nix-store", &store])
            .output()
            .unwrap()
    };
    let first = ok(imp(&w));
    assert_eq!(valid_in(&root, &all), all);
    let uri = format!("local?root={store}");
    let verify = ok(nix("nix-store")
        .args(["--store", &uri, "--verify", "--check-contents"])
        .output()
        .unwrap());
    assert!(!stderr(&verify).contains("error"), "{}", stderr(&verify));
    let sigs = run_stdout(nix("nix").args(["path-info", "--store", &uri, "--sigs", &app]));
    assert!(sigs.contains("test-release:"), "{sigs}");
    let info = run_stdout(nix("nix").args(["path-info", "--store", &uri, "--json", &app]));
    assert!(info.contains("\"deriver\""), "deriver kept: {info}");
    for (name, path) in [("app", &app), ("tool", &tool_path)] {
        let link = root.join("nix/var/nix/gcroots/gapbundle").join(name);
        assert_eq!(fs::read_link(&link).unwrap(), Path::new(path.as_str()));
    }
    let v = cli_report(&first, "import");
    assert!(!v["targets"][0]["result"]["added"]
        .as_array()
        .unwrap()
        .is_empty());
    // The dry run's size is the import's (the NAR blobs handed to the store).
    assert_eq!(v["targets"][0]["result"]["bytesWritten"], planned, "{v}");

    // A second import is a no-op.
    let second = ok(imp(&w));
    let v = cli_report(&second, "import");
    assert_eq!(v["targets"][0]["result"]["added"], serde_json::json!([]));

    // Our NAR walk gives the bytes `nix-store --dump` gives (files, an executable, a
    // symlink, folders), so create needs no process per path.
    for p in &all {
        let mut ours = Vec::new();
        gapbundle::nixfmt::dump::dump_nar(Path::new(p), &mut ours).unwrap();
        assert!(
            ours == run(nix("nix-store").args(["--dump", p])).stdout,
            "{p}"
        );
    }

    // The YAML output for the manifests resolver.
    let spec = gapbundle::spec::load(&w.path("bundle.yaml")).unwrap();
    let yaml =
        gapbundle::resolve::nix::build_manifests(&spec, "./flake#packages.x86_64-linux.manifests")
            .unwrap();
    assert!(fs::read_to_string(yaml.join("cm.yaml"))
        .unwrap()
        .contains("from-nix"));
}

#[test]
fn file_cache_serves_nix_copy_with_only_our_key_made_by_nix() {
    let w = nix_work();
    // A key from `nix key generate-secret` signs the bundle.
    let public = nix_key_pair(w.root(), "nix-made-1");
    ok(create(&w, "site.gapb", &w.path("nix.sec")));
    ok(gb()
        .arg("verify")
        .arg(w.path("site.gapb"))
        .arg("--trust")
        .arg(w.path("nix.pub"))
        .output()
        .unwrap());

    let cache = w.path("cache-out");
    let cache_uri = format!("file://{}", cache.display());
    ok(import(&w, "site.gapb", &cache_uri, &w.path("nix.pub")));
    let app = built(&w, "app");
    let hash = StorePath::parse(&app).unwrap().hash_part().to_string();
    let narinfo = fs::read_to_string(cache.join(format!("{hash}.narinfo"))).unwrap();
    assert!(narinfo.contains("Compression: zstd"), "{narinfo}");
    assert!(narinfo.contains("Sig: nix-made-1:"), "{narinfo}");
    assert!(cache.join("nix-cache-info").is_file());

    // Nix copies from it with only our key trusted, no --no-check-sigs.
    let third = w.path("third");
    let copy = |key: &str, to: &Path| {
        nix("nix")
            .args(["copy", "--from", &cache_uri, "--to"])
            .arg(format!("local?root={}", to.display()))
            .args([
                "--option",
                "trusted-public-keys",
                key,
                "--option",
                "require-sigs",
                "true",
            ])
            .arg(&app)
            .output()
            .unwrap()
    };
    ok(copy(&public, &third));
    let mut app_closure = closure(&app);
    app_closure.sort();
    assert_eq!(valid_in(&third, &app_closure), app_closure);
    // With another key trusted, Nix refuses.
    let other = SecretKey::from_seed("other-key", [9; 32]).unwrap();
    let refused = copy(&other.public().to_string(), &w.path("fourth"));
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("lacks a valid signature"),
        "{}",
        stderr(&refused)
    );
    assert!(valid_in(&w.path("fourth"), std::slice::from_ref(&app)).is_empty());

    // A second import into the cache writes nothing.
    let again = ok(import(&w, "site.gapb", &cache_uri, &w.path("nix.pub")));
    let v = cli_report(&again, "import");
    assert_eq!(v["targets"][0]["result"]["added"], serde_json::json!([]));

    // An import interrupted before its narinfos were written completes on rerun.
    fs::remove_file(cache.join(format!("{hash}.narinfo"))).unwrap();
    let rerun = ok(import(&w, "site.gapb", &cache_uri, &w.path("nix.pub")));
    let v = cli_report(&rerun, "import");
    assert_eq!(v["targets"][0]["result"]["added"], serde_json::json!([app]));
    assert_eq!(
        fs::read_to_string(cache.join(format!("{hash}.narinfo"))).unwrap(),
        narinfo
    );
}

/// `path` and every nix-path of manifest `m` whose closure in the bundle holds it.
fn with_referrers(m: &Value, path: &str) -> Vec<String> {
    let objs = nix_objects(m);
    let mut out = vec![path.to_string()];
    loop {
        let more: Vec<String> = objs
            .iter()
            .filter(|o| {
                let name = o["name"].as_str().unwrap();
                !out.iter().any(|p| p == name)
                    && o["meta"]["references"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| out.iter().any(|p| p == r.as_str().unwrap()))
            })
            .map(|o| o["name"].as_str().unwrap().to_string())
            .collect();
        if more.is_empty() {
            return out;
        }
        out.extend(more);
    }
}

fn lib_of(m: &Value) -> String {
    nix_objects(m)
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .find(|n| n.ends_with("-gb-test-lib"))
        .unwrap()
}

/// `lib`'s object in the manifest `m`.
fn lib_object(m: &Value, lib: &str) -> Value {
    nix_objects(m)
        .into_iter()
        .find(|o| o["name"] == lib)
        .unwrap()
        .clone()
}

/// A copy of the work's `site.gapb` (head `head`, manifest `m`) with one byte in
/// the middle of `lib`'s NAR flipped, the head intact, written to `out`.
fn with_lib_nar_flipped(w: &Work, head: &Head, m: &Value, lib: &str, out: &str) {
    let blob = blob_of(head, &lib_object(m, lib));
    let mut bytes = fs::read(w.path("site.gapb")).unwrap();
    bytes[(head.data_start + blob.offset.unwrap() + blob.size / 2) as usize] ^= 0x01;
    fs::write(w.path(out), &bytes).unwrap();
}

#[test]
fn damaged_or_inconsistent_bundles_register_nothing() {
    let w = nix_work();
    ok(create(&w, "site.gapb", &w.secret()));
    let key = w.signing_key();
    let head = head_of(&w.path("site.gapb"));
    let m = manifest_of(&head);
    let all = nix_names(&m);
    let lib = lib_of(&m);
    let lib_obj = lib_object(&m, &lib);

    // 1. A flipped byte in lib's NAR.
    with_lib_nar_flipped(&w, &head, &m, &lib, "flipped.gapb");
    let root = w.path("t1");
    let o = import(&w, "flipped.gapb", &root.display().to_string(), &w.public());
    let err = fails(&o, 3);
    assert!(err.contains(&lib), "{err}");
    assert!(valid_in(&root, &all).is_empty());

    // 2. A wrong NAR hash in the metadata (blob content and meta agree, so only the
    //    path signature can tell), then with the path signature forged too (only
    //    the NAR itself can tell).
    let base_hash = nix_objects(&m)
        .iter()
        .find(|o| o["name"] != lib.as_str())
        .unwrap()["meta"]["narHash"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = NarHash::parse(&base_hash).unwrap();
    let set_hash = |m: &mut Value, resign: bool| {
        let lib_digest = lib_obj["digest"].clone();
        for b in m["blobs"].as_array_mut().unwrap() {
            if b["digest"] == lib_digest {
                b["content"]["digest"] = Value::String(wrong.digest().to_string());
            }
        }
        for o in m["objects"].as_array_mut().unwrap() {
            if o["name"] == lib.as_str() {
                o["meta"]["narHash"] = Value::String(wrong.to_string());
                if resign {
                    let refs: Vec<StorePath> = o["meta"]["references"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| StorePath::parse(r.as_str().unwrap()).unwrap())
                        .collect();
                    let size = o["meta"]["narSize"].as_u64().unwrap();
                    let fp = fingerprint(&StorePath::parse(&lib).unwrap(), &wrong, size, &refs);
                    o["meta"]["sigs"] = serde_json::json!([sign_path(&key, &fp)]);
                }
            }
        }
    };
    resign(&w.path("site.gapb"), &w.path("hash.gapb"), &key, |m| {
        set_hash(m, false)
    });
    let root = w.path("t2");
    let o = import(&w, "hash.gapb", &root.display().to_string(), &w.public());
    let err = fails(&o, 3);
    assert!(
        err.contains("no valid path signature") && err.contains(&lib),
        "{err}"
    );
    assert!(valid_in(&root, &all).is_empty());
    // Only the narHash changed, the blob still says the right NAR hash.
    resign(&w.path("site.gapb"), &w.path("meta.gapb"), &key, |m| {
        for o in m["objects"].as_array_mut().unwrap() {
            if o["name"] == lib.as_str() {
                o["meta"]["narHash"] = Value::String(wrong.to_string());
            }
        }
    });
    let o = import(&w, "meta.gapb", &root.display().to_string(), &w.public());
    fails(&o, 3);
    assert!(valid_in(&root, &all).is_empty());
    resign(&w.path("site.gapb"), &w.path("forged.gapb"), &key, |m| {
        set_hash(m, true)
    });
    // Into a store, Nix checks each NAR against its signed hash as it adds the path:
    // lib is refused, and so is everything that references it. (Paths that do not
    // need lib may be added: they are exactly what was signed.)
    let root = w.path("t3");
    let o = import(&w, "forged.gapb", &root.display().to_string(), &w.public());
    let err = fails(&o, 3);
    assert!(
        err.contains("decompresses to") && err.contains(&lib),
        "{err}"
    );
    assert!(valid_in(&root, &with_referrers(&m, &lib)).is_empty());
    // The same into a binary cache: no narinfo appears.
    let cache = w.path("c3");
    let o = import(
        &w,
        "forged.gapb",
        &format!("file://{}", cache.display()),
        &w.public(),
    );
    assert_ne!(code(&o), 0);
    let narinfos = fs::read_dir(&cache)
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".narinfo")
            })
            .count()
        })
        .unwrap_or(0);
    assert_eq!(narinfos, 0);

    // The same from stdin (staged in a file:// folder first): the same refusal.
    let root = w.path("t3s");
    let o = import_cmd(&w, "-", &root.display().to_string(), &w.public())
        .stdin(fs::File::open(w.path("forged.gapb")).unwrap())
        .output()
        .unwrap();
    fails(&o, 3);
    assert!(valid_in(&root, &with_referrers(&m, &lib)).is_empty());

    // 3. A missing reference: the bundle lacks `base`, which lib references.
    let base = lib_obj["meta"]["references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .find(|r| r.ends_with("-gb-test-base"))
        .unwrap();
    resign(&w.path("site.gapb"), &w.path("missing.gapb"), &key, |m| {
        m["objects"]
            .as_array_mut()
            .unwrap()
            .retain(|o| o["name"] != base.as_str());
    });
    let root = w.path("t4");
    let o = import(&w, "missing.gapb", &root.display().to_string(), &w.public());
    assert_ne!(code(&o), 0);
    assert!(
        stderr(&o).contains(&base) && stderr(&o).contains("missing"),
        "{}",
        stderr(&o)
    );
    assert!(valid_in(&root, &all).is_empty());
}

/// The default target: the machine's own store (`nix copy --to auto`) and GC roots in
/// /nix/var/nix/gcroots/gapbundle. Tests run side by side and share the fixture
/// flake's paths, so this one builds two paths of its own (a random name), deletes
/// them from the store, and puts them back from the bundle.
#[test]
fn import_into_the_machine_s_own_store_with_a_gc_root() {
    let w = Work::new("test-release");
    let mut nonce = [0u8; 6];
    getrandom::fill(&mut nonce).unwrap();
    let tag: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let expr = w.path("own.nix");
    fs::write(
        &expr,
        format!(
            r#"let
  mk = name: script: builtins.derivation {{ inherit name; system = "x86_64-linux"; builder = "/bin/sh"; args = [ "-c" script ]; }};
  dep = mk "gb-own-dep-{tag}" "echo {tag} > $out";
in mk "gb-own-top-{tag}" "echo ${{dep}} > $out"
"#
        ),
    )
    .unwrap();
    let top = run_stdout(nix("nix-build").arg("--no-out-link").arg(&expr))
        .trim()
        .to_string();
    let paths = closure(&top);
    assert_eq!(paths.len(), 2, "{paths:?}");
    let root_name = format!("gb-own-{tag}");
    fs::write(
        w.path("own.yaml"),
        format!("name: own\nversion: \"1\"\nnix:\n  - storePath: {top}\n    gcRoot: {root_name}\n"),
    )
    .unwrap();
    ok(with_nix_config(create_cmd(
        &w.path("own.yaml"),
        &w.path("own.gapb"),
        &w.secret(),
        &w.path("cache"),
    ))
    .output()
    .unwrap());
    run_stdout(nix("nix-store").arg("--delete").args(&paths));
    assert!(
        !paths.iter().any(|p| host_valid(p)),
        "the paths should be gone before the import"
    );

    let import = || {
        gb().args(["--json", "import"])
            .arg(w.path("own.gapb"))
            .arg("--trust")
            .arg(w.public())
            .output()
            .unwrap()
    };
    let o = ok(import());
    let link = Path::new("/nix/var/nix/gcroots/gapbundle").join(&root_name);
    let cleanup = || {
        let _ = fs::remove_file(&link);
        let _ = nix("nix-store").arg("--delete").args(&paths).output();
    };
    let checked = std::panic::catch_unwind(|| {
        assert!(paths.iter().all(|p| host_valid(p)), "{}", stderr(&o));
        assert_eq!(fs::read_link(&link).unwrap(), Path::new(&top));
        let sigs = run_stdout(nix("nix").args(["path-info", "--sigs", &top]));
        assert!(sigs.contains("test-release:"), "{sigs}");
        let r = cli_report(&o, "import");
        assert_eq!(
            r["targets"][0]["result"]["added"].as_array().unwrap().len(),
            2
        );
        // A second import is a no-op.
        let again = cli_report(&ok(import()), "import");
        assert_eq!(again["targets"][0]["result"]["present"], 2);
        assert!(again["targets"][0]["result"]["added"]
            .as_array()
            .unwrap()
            .is_empty());
    });
    cleanup();
    if let Err(e) = checked {
        std::panic::resume_unwind(e);
    }
}

/// A multi-user Nix: a user the daemon does not trust (`nobody`) imports through
/// it. The daemon checks the path signatures against its own trusted-public-keys:
/// with the bundle key there, the paths go in; with another key, the import stops
/// with exit 5 and says which key to add where, and no path that needs a signature
/// is registered.
#[test]
fn a_nix_daemon_takes_the_paths_from_an_untrusted_user_only_with_the_key() {
    let w = nix_work();
    ok(create(&w, "site.gapb", &w.secret()));
    let head = head_of(&w.path("site.gapb"));
    let m = manifest_of(&head);
    let all = nix_names(&m);
    // A folder `nobody` can use: the bundle, the key, $TMPDIR and the sockets.
    let shared = tempfile::tempdir().unwrap();
    let sh = shared.path();
    fs::set_permissions(sh, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    fs::copy(w.path("site.gapb"), sh.join("site.gapb")).unwrap();
    fs::copy(w.public(), sh.join("k.pub")).unwrap();
    let key = fs::read_to_string(w.public()).unwrap().trim().to_string();
    let as_nobody = |uri: &str| {
        with_nix_config(tool("setpriv"))
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(gapbundle_bin())
            .args(["import", "--skip-images", "--skip-manifests"])
            .arg(sh.join("site.gapb"))
            .arg("--trust")
            .arg(sh.join("k.pub"))
            .args(["--nix-store", uri])
            .env("HOME", sh)
            .env("TMPDIR", sh)
            .output()
            .unwrap()
    };

    let root = w.path("daemon-store");
    let d = NixDaemon::start(sh, "trusting", &root, &key);
    ok(as_nobody(&d.uri));
    assert_eq!(valid_in(&root, &all), all);
    drop(d);

    ok(gb()
        .args(["key", "generate", "--name", "other", "--dir"])
        .arg(w.path("other"))
        .output()
        .unwrap());
    let other = fs::read_to_string(w.path("other/other.pub")).unwrap();
    let root2 = w.path("daemon-store-2");
    let d = NixDaemon::start(sh, "other", &root2, other.trim());
    let o = as_nobody(&d.uri);
    let err = fails(&o, 5);
    assert!(
        err.contains("does not trust the key")
            && err.contains(&format!("add `{key}` to trusted-public-keys")),
        "{err}"
    );
    // Only a content-addressed path (the flake's source) may go in: Nix checks those
    // by their content address, not by a signature.
    let signed_only: Vec<String> = nix_objects(&m)
        .iter()
        .filter(|o| o["meta"].get("ca").is_none())
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect();
    assert!(signed_only.len() >= 4, "{signed_only:?}");
    let got = valid_in(&root2, &signed_only);
    assert!(got.is_empty(), "{got:?}");
}

/// A bundle file that changes after it verified (a failing USB disk) must not get a
/// NAR into the store: the NARs are served from the file in place and hashed again
/// as Nix reads them. No real service can make a file change on cue between the
/// import's verification and Nix's read, so a `nix` and a `nix-store` in front of
/// the real ones flip one byte of lib's NAR in the bundle file just before `nix
/// copy` or `nix-store --serve --write` (which a chroot store gets) runs; the real Nix
/// does the rest.
#[test]
fn a_bundle_file_that_changes_after_it_verified_gets_no_nar_into_the_store() {
    let w = nix_work();
    ok(create(&w, "site.gapb", &w.secret()));
    let head = head_of(&w.path("site.gapb"));
    let m = manifest_of(&head);
    let lib = lib_of(&m);
    let lib_obj = nix_objects(&m)
        .into_iter()
        .find(|o| o["name"] == lib.as_str())
        .unwrap();
    let blob = blob_of(&head, lib_obj);
    let at = head.blob_position(blob).unwrap() + blob.size / 2;
    // The paths checked while a new `nix-store` starts up (`import::nix::stream`)
    // end at the first one over 1 MiB, which comes before lib here (the image
    // tarball's path): lib is read only after Nix greeted, so after the wrapper
    // below flipped its byte.
    assert!(
        nix_objects(&m)
            .iter()
            .any(|o| o["meta"]["narSize"].as_u64() > Some(1 << 20)),
        "a path over 1 MiB"
    );
    // Flips the byte once, whichever of the two runs first.
    let flip = format!(
        "{}; touch {}",
        flip_byte_command(&w.path("site.gapb"), at),
        w.path("flipped").display()
    );
    let mut path = String::new();
    for (tool, when) in [
        ("nix", "[ \"$1\" = copy ]"),
        (
            "nix-store",
            "case \" $* \" in *\" --write \"*) true;; *) false;; esac",
        ),
    ] {
        path = wrap_tool(
            &w.path("bin"),
            tool,
            &format!(
                "if {when} && [ ! -e {} ]; then\n  {flip}\nfi",
                w.path("flipped").display()
            ),
        );
    }
    let root = w.path("t");

    let o = import_cmd(&w, "site.gapb", &root.display().to_string(), &w.public())
        .env("PATH", path)
        .output()
        .unwrap();
    let err = fails(&o, 3);
    assert!(
        err.contains("changed after it verified") && err.contains(&lib),
        "{err}"
    );
    assert!(valid_in(&root, &with_referrers(&m, &lib)).is_empty());
    // The wrapper did flip the byte: the file no longer verifies.
    let o = w.verify("site.gapb");
    fails(&o, 3);
}

/// Small paths go in through `nix-store --serve --write` with their signatures, in
/// one step per path: a first import asks nothing of `nix store copy-sigs`. A path
/// that is already valid without the bundle's signatures (added by hand with
/// `nix-store --import`, or by an older gapbundle that signed in a second step and
/// was killed in between) is skipped by an import, which must still sign it: it
/// copies the signatures, and when that fails says so and a rerun copies them. No
/// real Nix fails `copy-sigs` on cue, so a `nix` in front of the real one refuses it.
#[test]
fn small_paths_are_signed_on_import_and_a_rerun_signs_those_valid_without() {
    let w = nix_work();
    ok(create(&w, "site.gapb", &w.secret()));
    let m = manifest_of(&head_of(&w.path("site.gapb")));
    let lib = lib_of(&m);
    let path = wrap_tool(
        &w.path("bin"),
        "nix",
        "if [ \"$1 $2\" = \"store copy-sigs\" ]; then echo 'copy-sigs refused by the test' >&2; exit 1; fi",
    );
    let sigs = |store: &str| {
        run_stdout(nix("nix").args([
            "path-info",
            "--store",
            &format!("local?root={store}"),
            "--sigs",
            &lib,
        ]))
    };

    // A fresh store: signed by the import itself.
    let fresh = w.path("fresh").display().to_string();
    let o = ok(import_cmd(&w, "site.gapb", &fresh, &w.public())
        .env("PATH", &path)
        .output()
        .unwrap());
    assert!(!stderr(&o).contains("copy-sigs"), "{}", stderr(&o));
    assert!(sigs(&fresh).contains("test-release:"), "{}", sigs(&fresh));

    // The library already there, unsigned, from `nix-store --import`.
    let root = w.path("t");
    let store = root.display().to_string();
    run_stdout(nix("sh").args([
        "-c",
        &format!(
            "nix-store --export $(nix-store -qR {lib}) | nix-store --store 'local?root={store}' --import"
        ),
    ]));
    assert_eq!(valid_in(&root, std::slice::from_ref(&lib)), [lib.as_str()]);
    assert!(!sigs(&store).contains("test-release:"), "{}", sigs(&store));
    let o = ok(import_cmd(&w, "site.gapb", &store, &w.public())
        .env("PATH", &path)
        .output()
        .unwrap());
    assert!(
        stderr(&o).contains("copy-sigs refused by the test")
            && stderr(&o).contains("a rerun of this import copies them"),
        "{}",
        stderr(&o)
    );
    assert!(!sigs(&store).contains("test-release:"), "{}", sigs(&store));

    ok(import(&w, "site.gapb", &store, &w.public()));
    assert!(sigs(&store).contains("test-release:"), "{}", sigs(&store));
    // Signed now: a third import asks nothing of copy-sigs (the refusing `nix`
    // is not reached for it).
    let o = ok(import_cmd(&w, "site.gapb", &store, &w.public())
        .env("PATH", &path)
        .output()
        .unwrap());
    assert!(!stderr(&o).contains("copy-sigs"), "{}", stderr(&o));
}

/// `--nix-store mnt/target`, relative and without `./`, is the chroot store Nix
/// itself makes of it, with the GC roots there and the small paths through
/// `nix-store --serve --write` (a regression: it went to Nix as a URI, by `nix
/// copy`, and the GC roots were left out with a warning).
#[test]
fn a_relative_store_path_is_a_chroot_store_with_its_gc_roots() {
    let w = nix_work();
    ok(create(&w, "site.gapb", &w.secret()));
    let names = nix_names(&manifest_of(&head_of(&w.path("site.gapb"))));
    let o = import_cmd(&w, "site.gapb", "stores/rel", &w.public())
        .current_dir(w.root())
        .env("GAPBUNDLE_LOG_COMMANDS", "1")
        .output()
        .unwrap();
    let o = ok(o);
    let root = w.path("stores/rel");
    assert_eq!(valid_in(&root, &names), names);
    let log = stderr(&o);
    assert!(!log.contains("no GC roots"), "{log}");
    assert!(
        log.lines().any(|l| l.starts_with("+ ")
            && l.contains("--serve")
            && l.contains("--write")
            && l.contains(&format!("local?root={}", root.display()))),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.starts_with("+ ") && l.contains(" copy ")),
        "{log}"
    );
    let link = root.join("nix/var/nix/gcroots/gapbundle/app");
    assert!(fs::read_link(&link).is_ok(), "{} missing", link.display());
}

/// An import into a store that exists asks it which paths it holds and adds the
/// rest through the same `nix-store --serve --write` (a dry run asks without
/// `--write`); a path it held without the bundle's signature gets it.
#[test]
fn an_import_into_a_store_that_exists_asks_and_adds_through_one_nix_store() {
    let w = nix_work();
    ok(create(&w, "site.gapb", &w.secret()));
    let m = manifest_of(&head_of(&w.path("site.gapb")));
    let lib = lib_of(&m);
    let names = nix_names(&m);
    // A store that already holds lib's closure (copied there by Nix itself, with no
    // signature of ours): the plan must ask it, and the import add the rest.
    let root = w.path("t");
    run(nix("nix")
        .args(["copy", "--no-check-sigs", "--to"])
        .arg(chroot_store(&root))
        .arg(&lib));
    let into_root = || import_cmd(&w, "site.gapb", &root.display().to_string(), &w.public());
    let serves_of = |o: &Output| -> Vec<String> {
        stderr(o)
            .lines()
            .filter(|l| l.starts_with("+ ") && l.contains("--serve"))
            .map(str::to_string)
            .collect()
    };
    // A dry run asks with a nix-store that may not write.
    let dry = into_root()
        .arg("--dry-run")
        .env("GAPBUNDLE_LOG_COMMANDS", "1")
        .output()
        .unwrap();
    let dry_serves = serves_of(&ok(dry));
    assert!(
        dry_serves.len() == 1 && !dry_serves[0].contains("--write"),
        "{dry_serves:?}"
    );
    let o = into_root()
        .env("GAPBUNDLE_LOG_COMMANDS", "1")
        .output()
        .unwrap();
    let report = cli_report(&ok(o.clone()), "import");
    let serves = serves_of(&o);
    assert_eq!(
        serves.len(),
        1,
        "one nix-store --serve for the question and the paths: {serves:?}"
    );
    assert!(serves[0].contains("--write"), "{serves:?}");
    assert_eq!(valid_in(&root, &names), names);
    let added = report["targets"][0]["result"]["added"].as_array().unwrap();
    assert!(!added.is_empty() && added.len() < names.len(), "{report}");
    // lib was there without the bundle's signature: it got it.
    let sigs = run_stdout(
        nix("nix")
            .args(["path-info", "--json", "--store"])
            .arg(chroot_store(&root))
            .arg(&lib),
    );
    assert!(sigs.contains("test-release:"), "{sigs}");
    // A rerun asks, finds everything, and ends that nix-store at once.
    let again = into_root().output().unwrap();
    let again = cli_report(&ok(again), "import");
    assert_eq!(
        again["targets"][0]["result"]["added"],
        serde_json::json!([])
    );
}

/// An import into a store that exists checks the path signatures while the store
/// says what it holds: a bad one is still named and nothing is added. A bundle
/// whose own signature fails stops the `nix-store` started while its head was read,
/// and a bundle without Nix paths starts none.
#[test]
fn a_store_that_exists_gets_nothing_from_a_bundle_with_a_bad_path_signature() {
    let w = nix_work();
    ok(create(&w, "site.gapb", &w.secret()));
    let key = w.signing_key();
    let m = manifest_of(&head_of(&w.path("site.gapb")));
    let lib = lib_of(&m);
    let names = nix_names(&m);
    // A path above lib: not in the store, so the plan has paths to add.
    let above = with_referrers(&m, &lib)
        .into_iter()
        .find(|p| *p != lib)
        .unwrap();
    let root = w.path("t");
    run(nix("nix")
        .args(["copy", "--no-check-sigs", "--to"])
        .arg(chroot_store(&root))
        .arg(&lib));
    let before = valid_in(&root, &names);
    assert!(!before.contains(&above), "{before:?}");
    resign(&w.path("site.gapb"), &w.path("badsig.gapb"), &key, |m| {
        for o in m["objects"].as_array_mut().unwrap() {
            if o["name"] == above.as_str() {
                o["meta"]["sigs"] = serde_json::json!([sign_path(&key, "not the fingerprint")]);
            }
        }
    });
    let store = root.display().to_string();
    let err = fails(&import(&w, "badsig.gapb", &store, &w.public()), 3);
    assert!(
        err.contains("no valid path signature") && err.contains(&above),
        "{err}"
    );
    assert_eq!(valid_in(&root, &names), before);

    // Signed by a key that is not trusted: refused before the plan asks anything.
    let other = Work::new("other-release");
    let o = import_cmd(&w, "site.gapb", &store, &other.public())
        .env("GAPBUNDLE_LOG_COMMANDS", "1")
        .output()
        .unwrap();
    fails(&o, 3);
    assert_eq!(valid_in(&root, &names), before);

    // No Nix paths in the bundle: no nix-store is started for the store.
    w.write(
        "plain.yaml",
        "name: plain\nversion: \"1\"\nfiles:\n  - path: ./plain.txt\n    target: /etc/plain.txt\n",
    );
    w.write("plain.txt", "plain\n");
    ok(with_nix_config(create_cmd(
        &w.path("plain.yaml"),
        &w.path("plain.gapb"),
        &w.secret(),
        &w.path("cache"),
    ))
    .output()
    .unwrap());
    let o = ok(gb()
        .args(["import", "--dry-run"])
        .arg(w.path("plain.gapb"))
        .arg("--trust")
        .arg(w.public())
        .args(["--nix-store", &store])
        .env("GAPBUNDLE_LOG_COMMANDS", "1")
        .output()
        .unwrap());
    assert!(
        !stderr(&o)
            .lines()
            .any(|l| l.starts_with("+ ") && l.contains("nix-store")),
        "{}",
        stderr(&o)
    );
}

/// A rerun whose every path is valid with the bundle's signatures reads none of
/// the bundle's data and leaves the receipt as it was; a damaged blob is then not
/// noticed (nothing of it would reach the store), but it still is from a pipe, and
/// a path signature the store lacks is still checked before it is copied there.
#[test]
fn a_rerun_with_every_path_present_reads_no_data_and_writes_no_receipt() {
    let w = nix_work();
    ok(create(&w, "site.gapb", &w.secret()));
    let key = w.signing_key();
    let head = head_of(&w.path("site.gapb"));
    let m = manifest_of(&head);
    let lib = lib_of(&m);
    let store = w.path("t").display().to_string();
    let state = w.path("state");
    let with_state = |bundle: &str| {
        let mut c = import_cmd(&w, bundle, &store, &w.public());
        c.arg("--state-dir").arg(&state);
        c
    };
    let first = cli_report(&ok(with_state("site.gapb").output().unwrap()), "import");
    assert_eq!(first["dataRead"], true, "{first}");
    let receipt = state.join("receipts/nixsite.json");
    let stored = fs::read(&receipt).unwrap();
    let inode = || std::os::unix::fs::MetadataExt::ino(&fs::metadata(&receipt).unwrap());
    let stored_inode = inode();

    let again = cli_report(&ok(with_state("site.gapb").output().unwrap()), "import");
    assert_eq!(again["dataRead"], false, "{again}");
    assert_eq!(
        again["targets"][0]["result"]["added"],
        serde_json::json!([])
    );
    assert!(
        fs::read(&receipt).unwrap() == stored && inode() == stored_inode,
        "the rerun rewrote the receipt"
    );

    // lib's NAR damaged, the head intact: the rerun needs none of it.
    with_lib_nar_flipped(&w, &head, &m, &lib, "flipped.gapb");
    let o = cli_report(&ok(with_state("flipped.gapb").output().unwrap()), "import");
    assert_eq!(o["dataRead"], false, "{o}");
    // From a pipe the bundle is read to its end, and the damage found.
    let o = with_state("-")
        .stdin(fs::File::open(w.path("flipped.gapb")).unwrap())
        .output()
        .unwrap();
    assert!(fails(&o, 3).contains(&lib), "{}", stderr(&o));
    // A store that lacks the path: refused, nothing registered.
    let fresh = w.path("fresh");
    let o = import(
        &w,
        "flipped.gapb",
        &fresh.display().to_string(),
        &w.public(),
    );
    assert!(fails(&o, 3).contains(&lib), "{}", stderr(&o));
    assert!(valid_in(&fresh, std::slice::from_ref(&lib)).is_empty());

    // A signature for lib that the store lacks, by the trusted key but over
    // something else: checked before it would be copied, so the rerun stops.
    resign(&w.path("site.gapb"), &w.path("badsig.gapb"), &key, |m| {
        for o in m["objects"].as_array_mut().unwrap() {
            if o["name"] == lib.as_str() {
                o["meta"]["sigs"] = serde_json::json!([sign_path(&key, "not the fingerprint")]);
            }
        }
    });
    let o = with_state("badsig.gapb").output().unwrap();
    let err = fails(&o, 3);
    assert!(
        err.contains("no valid path signature") && err.contains(&lib),
        "{err}"
    );
}

#[test]
fn git_flakes_warn_about_untracked_files_and_locked_catches_changes() {
    let dir = tempfile::tempdir().unwrap();
    let flake = dir.path().join("gflake");
    fs::create_dir_all(&flake).unwrap();
    let write_flake = |text: &str| {
        fs::write(
            flake.join("flake.nix"),
            format!(
                "{{ outputs = {{ self }}: {{ packages.x86_64-linux.x = builtins.derivation {{ name = \"gb-git-x\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; args = [\"-c\" \"echo {text} > $out\"]; }}; }}; }}\n"
            ),
        )
        .unwrap();
    };
    write_flake("one");
    run(tool("git").args(["init", "-q", "."]).current_dir(&flake));
    run(tool("git").args(["add", "flake.nix"]).current_dir(&flake));
    fs::write(flake.join("forgotten.nix"), "{}\n").unwrap();
    fs::write(
        dir.path().join("bundle.yaml"),
        "name: g\nversion: \"1\"\nnix:\n  - installable: ./gflake#packages.x86_64-linux.x\n",
    )
    .unwrap();
    let create = |locked: bool| {
        let mut c = with_nix_config(create_unsigned_cmd(
            &dir.path().join("bundle.yaml"),
            &dir.path().join("g.gapb"),
            &dir.path().join("cache"),
        ));
        if locked {
            c.arg("--locked");
        }
        c.output().unwrap()
    };
    let o = ok(create(false));
    assert!(
        stderr(&o).contains("untracked") && stderr(&o).contains("forgotten.nix"),
        "{}",
        stderr(&o)
    );
    ok(create(true));
    write_flake("two");
    let o = create(true);
    let err = fails(&o, 4);
    assert!(
        err.contains("--locked") && err.contains("gb-git-x"),
        "{err}"
    );
    // An entry dropped from the spec is a change too.
    fs::write(dir.path().join("bundle.yaml"), "name: g\nversion: \"1\"\n").unwrap();
    let o = create(true);
    let err = fails(&o, 4);
    assert!(
        err.contains("no longer has") && err.contains("installable:./gflake"),
        "{err}"
    );
}

/// `includeFlakeInputs` carries the sources of the flake's inputs, not only its own,
/// so the offline host can evaluate the flake again; and a `storePath:` entry carries
/// a path already in the store with its closure. The input is a `path:` flake, which
/// Nix resolves offline like any other input.
#[test]
fn flake_inputs_and_plain_store_paths_travel_too() {
    let w = nix_work();
    let dep = w.path("dep");
    fs::create_dir_all(&dep).unwrap();
    fs::write(
        dep.join("flake.nix"),
        "{ outputs = { self }: { greeting = builtins.readFile ./greeting.txt; }; }\n",
    )
    .unwrap();
    fs::write(dep.join("greeting.txt"), "hello from an input").unwrap();
    let main = w.path("withdep");
    fs::create_dir_all(&main).unwrap();
    fs::write(
        main.join("flake.nix"),
        format!(
            r#"{{
  inputs.dep.url = "path:{}";
  outputs = {{ self, dep }}: {{
    packages.x86_64-linux.hello = builtins.derivation {{
      name = "gb-test-hello";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" "echo '${{dep.greeting}}' > $out" ];
    }};
  }};
}}
"#,
            dep.display()
        ),
    )
    .unwrap();
    let tool_path = built(&w, "tool");
    fs::write(
        w.path("bundle.yaml"),
        format!(
            "name: inputs\nversion: \"1\"\nnix:\n  - installable: ./withdep#packages.x86_64-linux.hello\n    gcRoot: hello\n    includeFlakeInputs: true\n  - storePath: {tool_path}\n"
        ),
    )
    .unwrap();
    ok(create(&w, "inputs.gapb", &w.secret()));

    // What Nix itself says the flake's sources are: the flake and its `dep` input.
    let archived: Value = serde_json::from_str(&run_stdout(
        nix("nix")
            .args(["flake", "archive", "--json"])
            .arg(&main)
            .current_dir(w.root()),
    ))
    .unwrap();
    let own = archived["path"].as_str().unwrap().to_string();
    let input = archived["inputs"]["dep"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(own, input);

    let head = head_of(&w.path("inputs.gapb"));
    let m = manifest_of(&head);
    let names = nix_names(&m);
    let mut expected = vec![own, input];
    expected.extend(closure(&tool_path));
    for p in &expected {
        assert!(names.contains(p), "{p} is not in the bundle: {names:?}");
    }

    let store = w.path("store");
    ok(import(
        &w,
        "inputs.gapb",
        &store.display().to_string(),
        &w.public(),
    ));
    assert_eq!(
        valid_in(&store, &expected),
        expected,
        "all valid in the new store"
    );
    // The input's source arrived whole: its file is there, byte for byte.
    let copied = store
        .join(expected[1].trim_start_matches('/'))
        .join("greeting.txt");
    assert_eq!(fs::read_to_string(copied).unwrap(), "hello from an input");
}

#[test]
fn an_import_that_cannot_fit_stops_before_writing_anything() {
    let w = nix_work();
    ok(create(&w, "site.gapb", &w.secret()));
    let full = w.path("full");
    let _mount = FullTmpfs::mount(&full);
    let import = |store: &str| {
        gb().args(["import", "--skip-images", "--skip-manifests"])
            .arg(w.path("site.gapb"))
            .arg("--trust")
            .arg(w.public())
            .args(["--nix-store", store])
            .env("TMPDIR", &full)
            .output()
            .unwrap()
    };
    // Into a store from the file: the NARs are served in place, but Nix's cache of
    // the narinfos it is served needs a little room in $TMPDIR.
    let root = w.path("t");
    let o = import(&root.display().to_string());
    let err = fails(&o, 1);
    assert!(
        err.contains("$TMPDIR (for Nix's cache of the narinfos")
            && err.contains(&full.display().to_string())
            && err.contains("TMPDIR=/var/tmp"),
        "{err}"
    );
    assert!(!root.exists(), "nothing may be written to the store");
    // From stdin the NARs are staged: the staging folder in $TMPDIR cannot hold them.
    let o = import_cmd(&w, "-", &root.display().to_string(), &w.public())
        .stdin(fs::File::open(w.path("site.gapb")).unwrap())
        .env("TMPDIR", &full)
        .output()
        .unwrap();
    let err = fails(&o, 1);
    assert!(
        err.contains("the staging folder in $TMPDIR") && err.contains("TMPDIR=/var/tmp"),
        "{err}"
    );
    assert!(!root.exists(), "nothing may be written to the store");
    // Into a binary cache on the full file system.
    let cache = full.join("cache");
    let o = import(&format!("file://{}", cache.display()));
    let err = fails(&o, 1);
    assert!(err.contains("the binary cache folder"), "{err}");
    assert!(!cache.exists());
    // --dry-run says so too, and with room the same import works.
    let o = gb()
        .args(["import", "--dry-run", "--skip-images", "--skip-manifests"])
        .arg(w.path("site.gapb"))
        .arg("--trust")
        .arg(w.public())
        .args(["--nix-store", &root.display().to_string()])
        .env("TMPDIR", &full)
        .output()
        .unwrap();
    fails(&o, 1);
    // With room it works; in a log (stderr not a terminal) the copy into the store
    // ends with one line.
    let o = ok(gb()
        .args(["import", "--skip-images", "--skip-manifests"])
        .arg(w.path("site.gapb"))
        .arg("--trust")
        .arg(w.public())
        .args(["--nix-store", &root.display().to_string()])
        .output()
        .unwrap());
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "added Nix paths into nix store local?root={}",
            root.display()
        )),
        "{err}"
    );
    // And from stdin, staged, into another store.
    let head = head_of(&w.path("site.gapb"));
    let m = manifest_of(&head);
    let all = nix_names(&m);
    let root2 = w.path("t2");
    ok(
        import_cmd(&w, "-", &root2.display().to_string(), &w.public())
            .stdin(fs::File::open(w.path("site.gapb")).unwrap())
            .output()
            .unwrap(),
    );
    assert_eq!(valid_in(&root2, &all), all);
}
