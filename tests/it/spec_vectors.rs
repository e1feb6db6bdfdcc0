//! The bundle-spec stays true to the code: the golden vector is reproduced byte for
//! byte and verifies with its key, and the JSON schemas accept what the code writes
//! and reject what the code rejects.
//!
//! Regenerate the vector after an intended format change with
//! `GAPBUNDLE_BLESS=1 cargo test --test it -- spec_vectors::` and commit the result; the
//! digest then changes in bundle-spec/vectors/tiny/tiny.digest, which a reviewer sees.

use std::fs;
use std::path::{Path, PathBuf};

use gapbundle::bundle::keys::PublicKey;
use gapbundle::bundle::reader::{read_head, verify_parallel};
use serde_json::Value;

use crate::support::*;

fn vector(name: &str) -> PathBuf {
    repo().join("bundle-spec/vectors/tiny").join(name)
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn schema(name: &str) -> jsonschema::Validator {
    let s: Value =
        serde_json::from_slice(&fs::read(repo().join("bundle-spec/schema").join(name)).unwrap())
            .unwrap();
    jsonschema::validator_for(&s).unwrap_or_else(|e| panic!("{name} is not a valid schema: {e}"))
}

fn assert_valid(v: &jsonschema::Validator, what: &str, doc: &Value) {
    let errors: Vec<String> = v.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{what} does not match its schema: {errors:#?}"
    );
}

/// Creates the vector's bundle from its committed input, key and lock.
fn create_vector(out: &Path) {
    let tmp = out.parent().unwrap();
    copy_dir(&vector("input"), &tmp.join("input"));
    let mut cmd = create_cmd(
        &tmp.join("input/bundle.yaml"),
        out,
        &vector("tiny.sec"),
        &tmp.join("cache"),
    );
    cmd.env_remove("SOURCE_DATE_EPOCH");
    if vector("input/bundle.lock").exists() {
        cmd.arg("--locked");
    }
    run(&mut cmd);
    if std::env::var_os("GAPBUNDLE_BLESS").is_some() {
        fs::copy(tmp.join("input/bundle.lock"), vector("input/bundle.lock")).unwrap();
    }
}

#[test]
fn golden_bundle_is_reproduced_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tiny.gapb");
    create_vector(&out);
    let made = fs::read(&out).unwrap();
    if std::env::var_os("GAPBUNDLE_BLESS").is_some() {
        let head = read_head(&mut made.as_slice()).unwrap();
        fs::write(vector("tiny.gapb"), &made).unwrap();
        fs::write(vector("tiny.digest"), format!("{}\n", head.digest)).unwrap();
        eprintln!("blessed a new golden vector: {}", head.digest);
        return;
    }
    let golden = fs::read(vector("tiny.gapb")).expect("the golden vector exists");
    assert!(
        made == golden,
        "create no longer reproduces bundle-spec/vectors/tiny/tiny.gapb; if the format change is intended, regenerate with GAPBUNDLE_BLESS=1"
    );
}

#[test]
fn golden_bundle_has_the_expected_identity_and_verifies() {
    let path = vector("tiny.gapb");
    let file = fs::File::open(&path).unwrap();
    let head = read_head(&mut std::io::BufReader::new(&file)).unwrap();
    let expected = fs::read_to_string(vector("tiny.digest")).unwrap();
    assert_eq!(head.digest.to_string(), expected.trim());
    let key = PublicKey::parse(&fs::read_to_string(vector("tiny.pub")).unwrap()).unwrap();
    let signers = head.envelope.check(&head.digest, &[key], 1).unwrap();
    assert_eq!(signers[0].name(), "gapbundle-vector-1");
    verify_parallel(&file, &head, 2, &|_| {}).unwrap();
    // And with the CLI, as a second implementation's user would check it.
    let out = run_stdout(
        gapbundle()
            .arg("verify")
            .arg(&path)
            .arg("--trust")
            .arg(vector("tiny.pub")),
    );
    assert!(out.contains(expected.trim()), "{out}");
}

#[test]
fn schemas_accept_what_the_code_writes() {
    let bytes = fs::read(vector("tiny.gapb")).unwrap();
    let head = read_head(&mut bytes.as_slice()).unwrap();
    let manifest: Value = serde_json::from_slice(&head.manifest_bytes).unwrap();
    assert_valid(&schema("manifest.schema.json"), "the manifest", &manifest);
    let envelope: Value = serde_json::from_slice(&head.envelope.to_canonical()).unwrap();
    assert_valid(&schema("signatures.schema.json"), "the envelope", &envelope);
    let lock: Value =
        serde_json::from_slice(&fs::read(vector("input/bundle.lock")).unwrap()).unwrap();
    assert_valid(&schema("lock.schema.json"), "the lock", &lock);
}

fn example_specs(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            example_specs(&p, out);
        } else if p.file_name().is_some_and(|n| n == "bundle.yaml") {
            out.push(p);
        }
    }
}

#[test]
fn every_example_spec_matches_the_schema_and_the_parser() {
    let spec_schema = schema("spec.schema.json");
    let mut specs = Vec::new();
    example_specs(&repo().join("examples"), &mut specs);
    specs.push(vector("input/bundle.yaml"));
    assert!(specs.len() >= 2, "examples/ has bundle specs");
    for p in specs {
        let text = fs::read_to_string(&p).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_valid(&spec_schema, &p.display().to_string(), &doc);
        gapbundle::spec::parse(&p, &text).unwrap_or_else(|e| {
            panic!(
                "{} is valid per the schema but the parser says: {e}",
                p.display()
            )
        });
    }
}

#[test]
fn schema_and_parser_reject_the_same_mistakes() {
    let spec_schema = schema("spec.schema.json");
    for bad in [
        "name: x\nversion: \"1\"\nimags: []\n",
        "name: x\nversion: \"1\"\nimages:\n  - ref: a/b:c\n    layout: ./d\n",
        "name: x\nversion: \"1\"\nimages:\n  - {}\n",
        "name: x\nversion: \"1\"\nplatforms: [amd64]\n",
        "name: a/b\nversion: \"1\"\n",
        "version: \"1\"\n",
    ] {
        let doc: Value = serde_yaml_ng::from_str(bad).unwrap();
        assert!(!spec_schema.is_valid(&doc), "schema accepts {bad:?}");
        assert!(
            gapbundle::spec::parse(Path::new("bundle.yaml"), bad).is_err(),
            "parser accepts {bad:?}"
        );
    }
}

/// A file of the delta vector (`bundle-spec/vectors/delta/`).
fn delta_vector(name: &str) -> PathBuf {
    repo().join("bundle-spec/vectors/delta").join(name)
}

/// The golden delta: `base.gapb` (v1), `full.gapb` (v2) and `delta.gapb` (v2 against
/// base.gapb) are what create writes from `input/v1` and `input/v2` with the tiny
/// key, byte for byte; patch of the base and the delta is the full bundle, byte for
/// byte, and its signature verifies; the delta and its head match the schemas.
#[test]
fn golden_delta_is_reproduced_and_patches_to_the_full_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&delta_vector("input"), &tmp.path().join("input"));
    let bless = std::env::var_os("GAPBUNDLE_BLESS").is_some();
    let made = |v: u32, out: &str, more: &[&Path]| -> Vec<u8> {
        let spec = tmp.path().join(format!("input/v{v}/bundle.yaml"));
        let mut cmd = create_cmd(
            &spec,
            &tmp.path().join(out),
            &vector("tiny.sec"),
            &tmp.path().join("cache"),
        );
        cmd.env_remove("SOURCE_DATE_EPOCH");
        if delta_vector(&format!("input/v{v}/bundle.lock")).exists() {
            cmd.arg("--locked");
        }
        for a in more {
            cmd.arg("--against").arg(a);
        }
        run(&mut cmd);
        if bless {
            fs::copy(
                tmp.path().join(format!("input/v{v}/bundle.lock")),
                delta_vector(&format!("input/v{v}/bundle.lock")),
            )
            .unwrap();
        }
        fs::read(tmp.path().join(out)).unwrap()
    };
    let base = made(1, "base.gapb", &[]);
    let full = made(2, "full.gapb", &[]);
    let delta = made(2, "delta.gapb", &[&tmp.path().join("base.gapb")]);
    if bless {
        for (name, bytes) in [
            ("base.gapb", &base),
            ("full.gapb", &full),
            ("delta.gapb", &delta),
        ] {
            fs::write(delta_vector(name), bytes).unwrap();
        }
        eprintln!("blessed new golden delta vectors");
        return;
    }
    for (name, bytes) in [
        ("base.gapb", &base),
        ("full.gapb", &full),
        ("delta.gapb", &delta),
    ] {
        let golden = fs::read(delta_vector(name)).expect("the golden delta vectors exist");
        assert!(
            *bytes == golden,
            "create no longer reproduces bundle-spec/vectors/delta/{name}; if the format change is intended, regenerate with GAPBUNDLE_BLESS=1"
        );
    }
    // patch, keyless, from the committed files.
    let out = tmp.path().join("patched.gapb");
    run(gapbundle()
        .arg("patch")
        .arg(delta_vector("base.gapb"))
        .arg(delta_vector("delta.gapb"))
        .arg("-o")
        .arg(&out));
    assert!(
        fs::read(&out).unwrap() == full,
        "patch of the golden base and delta"
    );
    let key = PublicKey::parse(&fs::read_to_string(vector("tiny.pub")).unwrap()).unwrap();
    let head = read_head(&mut full.as_slice()).unwrap();
    head.envelope.check(&head.digest, &[key], 1).unwrap();

    // The delta: what it is against, what it stores, its schema.
    let d = read_head(&mut delta.as_slice()).unwrap();
    let b = read_head(&mut base.as_slice()).unwrap();
    let info = d.manifest.delta.as_ref().unwrap();
    assert_eq!(info.against[0].digest, b.digest);
    assert_eq!(info.full.manifest, head.digest);
    let left_out: Vec<_> = d
        .manifest
        .blobs
        .iter()
        .filter(|x| x.offset.is_none())
        .collect();
    assert_eq!(left_out.len(), 1, "the layer v1 and v2 share");
    let manifest: Value = serde_json::from_slice(&d.manifest_bytes).unwrap();
    assert_valid(
        &schema("manifest.schema.json"),
        "the delta's manifest",
        &manifest,
    );
}

/// The inventory schema accepts what `gapbundle inventory` writes (of an empty K3s
/// folder and a binary cache with nothing in it, so it runs anywhere).
#[test]
fn the_inventory_schema_accepts_what_the_code_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("site.inv");
    run(gapbundle()
        .args(["inventory", "--skip-images", "--site", "site-a", "-o"])
        .arg(&out)
        .arg("--nix-store")
        .arg(format!("file://{}", tmp.path().join("cache").display()))
        .arg("--k3s-root")
        .arg(tmp.path().join("k3s"))
        .arg("--key")
        .arg(vector("tiny.sec")));
    let bytes = fs::read(&out).unwrap();
    let json = zstd::decode_all(bytes.as_slice()).unwrap();
    let v: Value = serde_json::from_slice(&json).unwrap();
    assert_valid(&schema("inventory.schema.json"), "the inventory", &v);
    assert_eq!(v["inventory"]["site"], "site-a");
    assert!(v["signatures"]["signatures"][0]["publicKey"]
        .as_str()
        .unwrap()
        .starts_with("gapbundle-vector-1:"));
}
