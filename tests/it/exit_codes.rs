//! One failure, one exit code: regression tests for the cases that were decided
//! wrongly, each against the real service whose failure it is (a registry, Nix)
//! and a real full file system (a small tmpfs).

use std::fs;
use std::process::Stdio;

use crate::support::*;

/// A disk that fills while `create` downloads blobs into the cache is the
/// machine's trouble (exit 1, naming the cache folder), not a registry that
/// refused (exit 5).
#[test]
fn a_full_cache_disk_during_create_exits_1_naming_the_cache() {
    let reg = Registry::start();
    push_fixture_images(&reg, None);
    let w = Work::new("test-release");
    w.write(
        "bundle.yaml",
        &format!(
            "name: s\nversion: \"1\"\nimages:\n  - ref: {}\n",
            reg.reference("team/app:1.2")
        ),
    );
    // Room for the manifests and the config, not for the 1 MiB base layer: the
    // disk fills while the blobs download.
    let cache = w.path("cache");
    let _disk = Tmpfs::with_options(&cache, "size=256k");
    let o = w
        .create("site.gapb")
        .args(["--insecure-registry", &reg.addr, "--json"])
        .output()
        .unwrap();
    let err = fails(&o, 1);
    assert!(
        err.contains(&format!("to the cache {}", cache.display()))
            && err.contains("No space left on device"),
        "{err}"
    );
    let report = cli_report(&o, "error");
    assert_eq!(report["exitCode"], 1);
    assert!(!w.path("site.gapb").exists());

    // A disk that is full from the start: the first manifest cannot be stored.
    let full = w.path("full");
    let _full = FullTmpfs::mount(&full);
    let o = w
        .create("site.gapb")
        .args(["--insecure-registry", &reg.addr, "--cache"])
        .arg(&full)
        .output()
        .unwrap();
    let err = fails(&o, 1);
    assert!(err.contains(&full.display().to_string()), "{err}");
}

/// A usage error with `--json` still prints the JSON error object a script reads.
#[test]
fn a_usage_error_with_json_prints_the_error_object() {
    let o = gapbundle()
        .args(["create", "--json", "-f", "bundle.yaml"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = fails(&o, 2);
    assert!(err.contains("--output"), "{err}");
    let report = cli_report(&o, "error");
    assert_eq!(report["ok"], false);
    assert_eq!(report["exitCode"], 2);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("--output <BUNDLE>"),
        "{report}"
    );
    // Without --json, stdout stays empty.
    let o = gapbundle()
        .args(["create", "-f", "bundle.yaml"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    fails(&o, 2);
    assert!(o.stdout.is_empty());
}

/// One store path: 200 empty files, then 16 MiB of random bytes. Its NAR fits
/// the free space the import checks for, but the store's disk (below) runs out of
/// inodes at the first few files, while most of the NAR is still to be sent.
const MANY_FILES: &str = r#"{
  outputs = { self }: {
    packages.x86_64-linux.many = builtins.derivation {
      name = "gb-test-many-files";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" "mkdir $out && for i in $(seq 1000 1199); do : > $out/a$i; done && head -c 16777216 /dev/urandom > $out/z" ];
      PATH = "/usr/bin:/bin";
    };
  };
}
"#;

/// A store disk that fills while `nix copy` adds a path is the target's own
/// failure: exit 1, naming the store and showing Nix's "No space left on device",
/// not "the bundle changed after it verified" (exit 3). Nix 2.8 still reads the
/// rest of the NAR it is served before it exits; a Nix that stops reading must give
/// the same outcome, since the server does not take a client that went away for a
/// file that changed (`io::serve`'s tests).
#[test]
fn a_full_nix_store_disk_exits_1_naming_the_store() {
    let w = Work::new("test-release");
    w.write("flake/flake.nix", MANY_FILES);
    w.write(
        "bundle.yaml",
        "name: full\nversion: \"1\"\nnix:\n  - installable: ./flake#packages.x86_64-linux.many\n",
    );
    ok(with_nix_config(w.create("site.gapb")).output().unwrap());
    let root = w.path("store");
    let _disk = Tmpfs::with_options(&root, "size=40m,nr_inodes=64");
    let o = with_nix_config(w.import(&w.path("site.gapb")))
        .args(["--skip-images", "--skip-manifests", "--nix-store"])
        .arg(&root)
        .output()
        .unwrap();
    let err = fails(&o, 1);
    assert!(
        err.contains(&format!("nix store local?root={}", root.display()))
            && err.contains("No space left on device")
            && !err.contains("changed after it verified"),
        "{err}"
    );
}

/// The manifest object of `m` named `name`, and its blob entry, for editing.
fn doc_blob<'m>(m: &'m mut serde_json::Value, name: &str) -> &'m mut serde_json::Value {
    let digest = m["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "k8s-manifest" && o["name"] == name)
        .unwrap_or_else(|| panic!("no k8s-manifest {name}"))["digest"]
        .clone();
    m["blobs"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|b| b["digest"] == digest)
        .unwrap()
}

/// Regression (issue 11, item 17): a signed manifest blob that is not zstd, or
/// decodes to another size than its content says, is a bundle that fails
/// verification (exit 3, naming the manifest), not any other error (exit 1,
/// "Unknown frame descriptor" and no name).
#[test]
fn manifests_that_do_not_decode_fail_verification_naming_them() {
    let w = Work::new("test-release");
    let big = "x".repeat(70_000);
    w.write(
        "extra/cm.yaml",
        &format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: small\n  namespace: default\ndata:\n  k: v\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\n  namespace: default\ndata:\n  k: {big}\n"),
    );
    w.write(
        "bundle.yaml",
        "name: docs\nversion: \"1\"\nmanifests:\n  - path: ./extra/cm.yaml\n",
    );
    ok(w.create("site.gapb").output().unwrap());
    let small = "manifests:extra/cm.yaml/ConfigMap/default/small";
    let big = "manifests:extra/cm.yaml/ConfigMap/default/big";
    let import = |bundle: &str| {
        w.import(&w.path(bundle))
            .arg("--skip-images")
            .output()
            .unwrap()
    };
    // A plain document declared zstd-encoded: not zstd at all.
    resign(
        &w.path("site.gapb"),
        &w.path("not-zstd.gapb"),
        &w.signing_key(),
        |m| {
            let b = doc_blob(m, small);
            b["encoding"] = "zstd".into();
            b["content"] =
                serde_json::json!({"digest": b["digest"].clone(), "size": b["size"].clone()});
        },
    );
    let err = fails(&import("not-zstd.gapb"), 3);
    assert!(err.contains(small) && err.contains("zstd"), "{err}");
    // A compressed document that decodes to fewer bytes than its content says.
    resign(
        &w.path("site.gapb"),
        &w.path("size.gapb"),
        &w.signing_key(),
        |m| {
            let b = doc_blob(m, big);
            assert_eq!(
                b["encoding"], "zstd",
                "a document this large is stored compressed"
            );
            let size = b["content"]["size"].as_u64().unwrap();
            b["content"]["size"] = (size + 1).into();
        },
    );
    let err = fails(&import("size.gapb"), 3);
    assert!(err.contains(big), "{err}");
    // Nothing of either landed where K3s would deploy it.
    let folder = w.k3s_root().join("server/manifests/docs");
    assert!(
        !folder.exists() || fs::read_dir(&folder).unwrap().next().is_none(),
        "{folder:?}"
    );
}
