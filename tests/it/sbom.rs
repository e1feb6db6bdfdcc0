//! `gapbundle sbom` and `create --sbom` on real bundles (a local image, a Nix
//! closure built by the real Nix, a file, a document), every document checked by
//! the validators of the two formats themselves: CycloneDX's strict JSON schema
//! (PyPI cyclonedx-python-lib) and `pyspdxtools` (PyPI spdx-tools), both installed
//! by scripts/install-test-deps. Each validator is first shown a broken document,
//! so a validator that accepts anything fails the test.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use crate::support::*;

/// The CycloneDX 1.6 strict schema's verdict on `doc`: `None` when valid.
fn cyclonedx_errors(w: &Work, doc: &[u8]) -> Option<String> {
    require_tool("python3");
    let path = w.path("check.cdx.json");
    fs::write(&path, doc).unwrap();
    let o = run(tool("python3")
        .arg("-c")
        .arg(
            "import sys\n\
         from cyclonedx.schema import SchemaVersion\n\
         from cyclonedx.validation.json import JsonStrictValidator\n\
         e = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
         print('VALID' if e is None else 'INVALID ' + repr(e))\n",
        )
        .arg(&path));
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    (out != "VALID").then_some(out)
}

/// `pyspdxtools -i` on `doc`: `None` when it exits 0.
fn spdx_errors(w: &Work, doc: &[u8]) -> Option<String> {
    require_tool("pyspdxtools");
    let path = w.path("check.spdx.json");
    fs::write(&path, doc).unwrap();
    let o = tool("pyspdxtools").arg("-i").arg(&path).output().unwrap();
    (!o.status.success()).then(|| output_text(&o))
}

fn assert_valid(w: &Work, format: &str, doc: &[u8]) {
    let errors = match format {
        "cyclonedx" => cyclonedx_errors(w, doc),
        _ => spdx_errors(w, doc),
    };
    assert!(
        errors.is_none(),
        "{format} validator refused the document: {}\n{}",
        errors.unwrap_or_default(),
        String::from_utf8_lossy(doc)
    );
}

/// The validators are real: a document missing a required field is refused.
fn validators_refuse_broken_documents(w: &Work, cdx: &[u8], spdx: &[u8]) {
    for (format, doc, field) in [
        ("cyclonedx", cdx, "bomFormat"),
        ("spdx", spdx, "spdxVersion"),
    ] {
        let mut v: Value = serde_json::from_slice(doc).unwrap();
        v.as_object_mut().unwrap().remove(field);
        let broken = serde_json::to_vec(&v).unwrap();
        let errors = match format {
            "cyclonedx" => cyclonedx_errors(w, &broken),
            _ => spdx_errors(w, &broken),
        };
        assert!(
            errors.is_some(),
            "{format} validator accepted a document without {field}"
        );
    }
}

/// A flake of two paths, `app-1.0` referring to `libfoo-2.3`.
fn flake(w: &Work) {
    fs::create_dir_all(w.path("flake")).unwrap();
    fs::write(
        w.path("flake/flake.nix"),
        sh_flake(
            r#"    lib = mk "gb-sbom-libfoo-2.3" "mkdir -p $out; echo lib > $out/data";
    app = mk "gb-sbom-app-1.0" "mkdir -p $out; echo ${lib} > $out/uses";"#,
            "inherit app;",
        ),
    )
    .unwrap();
}

/// A spec with the quickstart's local image, the Nix closure, a file and a document.
fn spec(w: &Work) {
    flake(w);
    run(tool("cp")
        .arg("-r")
        .arg(repo().join("examples/quickstart/images"))
        .arg(w.path("images")));
    let tool_path = w.write("bin/tool", "#!/bin/sh\necho tool\n");
    fs::set_permissions(&tool_path, fs::Permissions::from_mode(0o755)).unwrap();
    w.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sbom\n  namespace: default\ndata:\n  k: v\n",
    );
    w.write(
        "bundle.yaml",
        "name: sbomsite\nversion: \"2.0\"\nplatforms: [linux/amd64]\n\
         images:\n  - layout: ./images/hello:latest\n    name: registry.example:5000/team/hello:1.0\n\
         nix:\n  - installable: ./flake#packages.x86_64-linux.app\n\
         files:\n  - path: ./bin/tool\n    target: /usr/local/bin/tool\n\
         manifests:\n  - path: ./cm.yaml\n",
    );
}

fn sbom(bundle: &Path, format: &str) -> Vec<u8> {
    ok(gapbundle()
        .args(["sbom", "--format", format])
        .arg(bundle)
        .output()
        .unwrap())
    .stdout
}

fn components(doc: &Value) -> Vec<&Value> {
    doc["components"].as_array().unwrap().iter().collect()
}

fn property<'a>(c: &'a Value, name: &str) -> Vec<&'a str> {
    c["properties"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == name)
        .map(|p| p["value"].as_str().unwrap())
        .collect()
}

#[test]
fn sbom_of_a_bundle_a_volume_set_and_a_delta_validates_and_is_deterministic() {
    let w = Work::new("release");
    spec(&w);
    run(&mut with_nix_config(w.create("site.gapb")));
    let bundle = w.path("site.gapb");
    let head = w.inspect("site.gapb");
    let digest = head["digest"].as_str().unwrap().to_string();

    let cdx = sbom(&bundle, "cyclonedx");
    let spdx = sbom(&bundle, "spdx");
    validators_refuse_broken_documents(&w, &cdx, &spdx);
    assert_valid(&w, "cyclonedx", &cdx);
    assert_valid(&w, "spdx", &spdx);
    assert_eq!(cdx, sbom(&bundle, "cyclonedx"), "same bundle, same bytes");
    assert_eq!(spdx, sbom(&bundle, "spdx"), "same bundle, same bytes");

    let d: Value = serde_json::from_slice(&cdx).unwrap();
    let root = &d["metadata"]["component"];
    assert_eq!(root["name"], "sbomsite");
    assert_eq!(root["version"], "2.0");
    assert_eq!(property(root, "gapbundle:digest"), [digest.as_str()]);
    let signer = fs::read_to_string(w.public()).unwrap();
    assert_eq!(property(root, "gapbundle:signer"), [signer.trim()]);

    // The image: its purl, digest and layers as the layout has them.
    let image = &head["images"][0];
    let image_digest = image["digest"].as_str().unwrap();
    let img = components(&d)
        .into_iter()
        .find(|c| c["type"] == "container")
        .unwrap();
    assert_eq!(
        img["purl"],
        format!(
            "pkg:oci/hello@{image_digest}?repository_url=registry.example:5000/team/hello&tag=1.0"
        )
    );
    let layout_manifest: Value = {
        let index: Value =
            serde_json::from_slice(&fs::read(w.path("images/hello/index.json")).unwrap()).unwrap();
        let m = index["manifests"][0]["digest"].as_str().unwrap();
        let hex = m.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(
            &fs::read(w.path(format!("images/hello/blobs/sha256/{hex}"))).unwrap(),
        )
        .unwrap()
    };
    let mut want: Vec<&str> = layout_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    want.sort();
    let got: Vec<&str> = img["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(got, want);

    // The closure: names split as Nix splits them, hashes as Nix records them,
    // and app depending on lib.
    let app = nix_built(&w.path("flake"), "app");
    let lib = run_stdout(nix("nix-store").args(["-q", "--references", &app]))
        .trim()
        .to_string();
    let app_c = components(&d)
        .into_iter()
        .find(|c| c["bom-ref"] == format!("nix-path:{app}"))
        .unwrap();
    assert_eq!(app_c["name"], "gb-sbom-app");
    assert_eq!(app_c["version"], "1.0");
    let nar_hash = run_stdout(nix("nix-store").args(["-q", "--hash", &app]));
    assert_eq!(property(app_c, "gapbundle:narHash"), [nar_hash.trim()]);
    let deps = d["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["ref"] == format!("nix-path:{app}"))
        .unwrap();
    assert_eq!(
        deps["dependsOn"],
        serde_json::json!([format!("nix-path:{lib}")])
    );
    assert!(components(&d)
        .iter()
        .any(|c| c["bom-ref"] == "file:/usr/local/bin/tool"
            && property(c, "gapbundle:mode") == ["0755"]));

    // The -o report, against its schema.
    let report = cli_report(
        &ok(gapbundle()
            .args(["--json", "sbom", "--format", "spdx", "-o"])
            .arg(w.path("out.spdx.json"))
            .arg(&bundle)
            .output()
            .unwrap()),
        "sbom",
    );
    assert_eq!(report["digest"], digest.as_str());
    assert_eq!(fs::read(w.path("out.spdx.json")).unwrap(), spdx);

    // Volumes: the first volume's head is the bundle's, so the same bytes.
    fs::create_dir_all(w.path("vol")).unwrap();
    ok(gapbundle()
        .args(["split", "--volume-size", "16K", "-o"])
        .arg(w.path("vol/site.gapb"))
        .arg(&bundle)
        .output()
        .unwrap());
    assert_eq!(sbom(&w.path("vol/site.gapb.001"), "cyclonedx"), cdx);

    // A delta: every object of the full bundle, and the full bundle it stands for.
    w.write("bin/tool", "#!/bin/sh\necho tool 2\n");
    run(with_nix_config(w.create("d2.gapb"))
        .arg("--against")
        .arg(&bundle));
    let delta_cdx = sbom(&w.path("d2.gapb"), "cyclonedx");
    assert_valid(&w, "cyclonedx", &delta_cdx);
    assert_valid(&w, "spdx", &sbom(&w.path("d2.gapb"), "spdx"));
    let dd: Value = serde_json::from_slice(&delta_cdx).unwrap();
    assert_eq!(components(&dd).len(), components(&d).len());
    assert_eq!(
        property(&dd["metadata"]["component"], "gapbundle:deltaOf").len(),
        1
    );
}

#[test]
fn create_sbom_stores_signed_documents_of_the_objects() {
    let w = Work::new("release");
    spec(&w);
    run(with_nix_config(w.create("site.gapb")).args(["--sbom", "cyclonedx", "--sbom", "spdx"]));
    run(with_nix_config(w.create("again.gapb")).args(["--sbom", "spdx", "--sbom", "cyclonedx"]));
    assert_eq!(
        fs::read(w.path("site.gapb")).unwrap(),
        fs::read(w.path("again.gapb")).unwrap(),
        "the same inputs give the same bundle, SBOMs included"
    );
    ok(w.verify("site.gapb"));
    let head = w.inspect("site.gapb");
    let stored: Vec<&Value> = head["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "sbom")
        .collect();
    let names: Vec<&str> = stored.iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sbom.cdx.json", "sbom.spdx.json"]);
    // After `tar x`, the documents are blobs named by their digests.
    extract(&w.path("site.gapb"), &w.path("x"));
    let blob = |o: &Value| {
        let hex = o["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_string();
        fs::read(w.path(format!("x/blobs/sha256/{hex}"))).unwrap()
    };
    let cdx = blob(stored[0]);
    let spdx = blob(stored[1]);
    assert_valid(&w, "cyclonedx", &cdx);
    assert_valid(&w, "spdx", &spdx);
    // It describes every other object, not itself and not the bundle digest
    // (which depends on the manifest holding it).
    let d: Value = serde_json::from_slice(&cdx).unwrap();
    let described: Vec<&str> = components(&d)
        .iter()
        .map(|c| c["bom-ref"].as_str().unwrap())
        .collect();
    let mut others: Vec<String> = head["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] != "sbom")
        .map(|o| {
            format!(
                "{}:{}",
                o["kind"].as_str().unwrap(),
                o["name"].as_str().unwrap()
            )
        })
        .collect();
    others.sort();
    let mut described_sorted: Vec<String> = described.iter().map(|s| s.to_string()).collect();
    described_sorted.sort();
    assert_eq!(described_sorted, others);
    let root = &d["metadata"]["component"];
    assert!(property(root, "gapbundle:digest").is_empty());
    assert_eq!(property(root, "gapbundle:contentsDigest").len(), 1);
    // `sbom` of that bundle lists the stored documents as files of the bundle.
    let all: Value = serde_json::from_slice(&sbom(&w.path("site.gapb"), "cyclonedx")).unwrap();
    assert!(components(&all)
        .iter()
        .any(|c| c["bom-ref"] == "sbom:sbom.spdx.json"));
}

/// The name/version split of a table of store path names is the one the real
/// `builtins.parseDrvName` makes.
#[test]
fn nix_names_split_as_parse_drv_name_does() {
    let names = [
        "hello-2.12.1",
        "source",
        "glibc-2.38-44",
        "glibc-2.38-44-bin",
        "python3.11-requests-2.31.0",
        "foo-bar",
        "foo-bar-",
        "foo--1",
        "-1",
        "a-b-c-1.0-rc1",
        "nixos-system-host-24.05.20240601",
        "perl5.38.2-URI-5.21",
        "openssl-3.0.13-dev",
        "hook-",
        "x-_y",
        "x-+y",
        "libX11-1.8.7",
        "vim-9.1.0-man",
        "A-Z",
        "z-9",
    ];
    let expr = format!(
        "map builtins.parseDrvName [ {} ]",
        names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = run_stdout(nix("nix").args(["eval", "--json", "--expr", &expr]));
    let real: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(real.len(), names.len());
    for (name, r) in names.iter().zip(&real) {
        let (n, v) = gapbundle::sbom::drv_name::parse(name);
        assert_eq!(
            (n, v),
            (r["name"].as_str().unwrap(), r["version"].as_str().unwrap()),
            "{name}"
        );
    }
}
