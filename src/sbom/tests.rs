//! The SBOM writers on a manifest made in code: one of every kind, a shared layer,
//! a Nix closure, a document that runs an image. The JSON schemas and the real
//! validators are applied by `tests/it/sbom.rs`; here the facts each format must
//! state, and determinism.

use serde_json::{json, Value};

use super::*;
use crate::bundle::manifest::{BlobEntry, ContentInfo, Encoding, Object};
use crate::bundle::meta::Meta;
use crate::bundle::writer::BundleBuilder;
use crate::nixfmt::NarHash;

const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";

fn blob(bytes: &[u8], media_type: &str) -> BlobEntry {
    BlobEntry::of(bytes, media_type)
}

fn object(kind: Kind, name: &str, root: &BlobEntry, blobs: &[&BlobEntry], meta: Value) -> Object {
    let mut digests: Vec<Digest> = blobs.iter().map(|b| b.digest).collect();
    digests.sort();
    Object {
        meta: Meta::typed(&kind, serde_json::from_value(meta).unwrap()).unwrap(),
        kind,
        name: name.into(),
        digest: root.digest,
        media_type: root.media_type.clone(),
        size: blobs.iter().map(|b| b.size).sum(),
        blobs: digests,
    }
}

fn nix_path(b: &mut BundleBuilder, name: &str, references: &[&str]) -> String {
    let path = format!("/nix/store/{HASH}-{name}");
    let nar = format!("nar of {name}");
    let mut stored = blob(
        format!("zstd {name}").as_bytes(),
        crate::nixfmt::NAR_ZSTD_MEDIA_TYPE,
    );
    stored.encoding = Some(Encoding::Zstd);
    stored.content = Some(ContentInfo {
        digest: Digest::of(nar.as_bytes()),
        size: nar.len() as u64,
    });
    let refs: Vec<String> = references
        .iter()
        .map(|r| format!("/nix/store/{HASH}-{r}"))
        .collect();
    let meta = json!({
        "narHash": NarHash(*Digest::of(nar.as_bytes()).as_bytes()).to_string(),
        "narSize": nar.len(),
        "references": refs,
        "sigs": [],
    });
    b.add_blob(stored.clone(), 1).unwrap();
    b.add_object(object(Kind::NixPath, &path, &stored, &[&stored], meta))
        .unwrap();
    path
}

/// A manifest with an image (index, manifest, config, two layers), a second image
/// sharing a layer, a Nix closure, a chart, a document, a file and the spec.
fn manifest() -> Manifest {
    let mut b = BundleBuilder::new("site", "1.2.0", 1_700_000_000, vec!["linux/amd64".into()]);
    let layer1 = blob(b"layer one", "application/vnd.oci.image.layer.v1.tar+gzip");
    let layer2 = blob(
        b"layer two",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
    );
    let config = blob(b"config", "application/vnd.oci.image.config.v1+json");
    let man = blob(b"manifest", crate::bundle::oci::MANIFEST_MEDIA_TYPE);
    let index = blob(b"index", crate::bundle::oci::INDEX_MEDIA_TYPE);
    let other = blob(b"other manifest", crate::bundle::oci::MANIFEST_MEDIA_TYPE);
    for x in [&layer1, &layer2, &config, &man, &index, &other] {
        b.add_blob(x.clone(), 0).unwrap();
    }
    b.add_object(object(
        Kind::Image,
        "docker.io/library/redis:8",
        &index,
        &[&index, &man, &config, &layer1, &layer2],
        json!({"platforms": ["linux/amd64"], "source": "redis:8",
               "wantedBy": ["chart:web Deployment apps/web"]}),
    ))
    .unwrap();
    b.add_object(object(
        Kind::Image,
        "app:local",
        &other,
        &[&other, &config, &layer1],
        json!({"platforms": ["linux/amd64"], "source": "layout:app"}),
    ))
    .unwrap();
    nix_path(&mut b, "glibc-2.38-44", &["glibc-2.38-44"]);
    nix_path(&mut b, "hello-2.12.1", &["glibc-2.38-44"]);
    let chart = blob(
        b"chart",
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
    );
    b.add_blob(chart.clone(), 2).unwrap();
    b.add_object(object(
        Kind::Chart,
        "oci://ghcr.io/x/web:1.0.0",
        &chart,
        &[&chart],
        json!({"chart": "web", "version": "1.0.0", "digest": chart.digest, "source": "oci:ghcr.io/x/web@1.0.0"}),
    ))
    .unwrap();
    let doc = blob(b"kind: Deployment\n", "application/yaml");
    b.add_blob(doc.clone(), 3).unwrap();
    b.add_object(object(
        Kind::K8sManifest,
        "chart:web/Deployment/apps/web",
        &doc,
        &[&doc],
        json!({"source": "chart:web", "file": "chart-web.yaml", "order": 0, "apiVersion": "apps/v1",
               "kind": "Deployment", "namespace": "apps", "name": "web", "images": ["redis:8"]}),
    ))
    .unwrap();
    let file = blob(b"#!/bin/sh\n", crate::bundle::meta::FILE_MEDIA_TYPE);
    b.add_blob(file.clone(), 0).unwrap();
    b.add_object(object(
        Kind::File,
        "/usr/local/bin/k3s",
        &file,
        &[&file],
        json!({"mode": "0755", "source": "path:bin/k3s"}),
    ))
    .unwrap();
    let spec = blob(b"name: site\n", "application/vnd.gapbundle.spec.v1+yaml");
    b.add_blob(spec.clone(), 0).unwrap();
    b.add_object(object(
        Kind::Spec,
        "bundle.yaml",
        &spec,
        &[&spec],
        json!({}),
    ))
    .unwrap();
    b.finish().unwrap().manifest
}

fn subject() -> Subject {
    Subject::Bundle {
        digest: Digest::of(b"the manifest"),
        signers: vec!["release:AAAA".into()],
    }
}

fn cdx(m: &Manifest, s: &Subject) -> Value {
    serde_json::from_slice(&render(m, s, Format::CycloneDx, "0.1.0")).unwrap()
}

fn spdx(m: &Manifest, s: &Subject) -> Value {
    serde_json::from_slice(&render(m, s, Format::Spdx, "0.1.0")).unwrap()
}

fn component<'a>(doc: &'a Value, bom_ref: &str) -> &'a Value {
    doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bom-ref"] == bom_ref)
        .unwrap_or_else(|| panic!("no component {bom_ref}"))
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
fn the_same_manifest_gives_the_same_bytes() {
    let m = manifest();
    for f in [Format::CycloneDx, Format::Spdx] {
        let a = render(&m, &subject(), f, "0.1.0");
        assert_eq!(a, render(&manifest(), &subject(), f, "0.1.0"));
        assert!(a.ends_with(b"}\n"));
        let other = Subject::Bundle {
            digest: Digest::of(b"another manifest"),
            signers: vec![],
        };
        assert_ne!(a, render(&m, &other, f, "0.1.0"));
    }
}

#[test]
fn cyclonedx_names_the_bundle_its_images_layers_and_closure() {
    let m = manifest();
    let d = cdx(&m, &subject());
    let digest = Digest::of(b"the manifest");
    assert_eq!(d["specVersion"], "1.6");
    assert_eq!(d["serialNumber"], format!("urn:uuid:{}", uuid_of(&digest)));
    assert_eq!(d["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
    let root = &d["metadata"]["component"];
    assert_eq!(
        (root["name"].as_str(), root["version"].as_str()),
        (Some("site"), Some("1.2.0"))
    );
    assert_eq!(property(root, "gapbundle:digest"), [digest.to_string()]);
    assert_eq!(property(root, "gapbundle:signer"), ["release:AAAA"]);

    let redis = component(&d, "image:docker.io/library/redis:8");
    let index = Digest::of(b"index");
    assert_eq!(redis["type"], "container");
    assert_eq!(
        redis["purl"],
        format!("pkg:oci/redis@{index}?repository_url=docker.io/library/redis&tag=8")
    );
    assert_eq!(redis["hashes"][0]["content"], index.hex());
    let layers: Vec<&str> = redis["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    let mut want = vec![
        Digest::of(b"layer one").to_string(),
        Digest::of(b"layer two").to_string(),
    ];
    want.sort();
    assert_eq!(layers, want, "layers only: no index, manifest or config");
    // A local image named as written has no purl; its shared layer is listed.
    let local = component(&d, "image:app:local");
    assert!(local.get("purl").is_none());
    assert_eq!(local["components"].as_array().unwrap().len(), 1);

    let hello = component(&d, &format!("nix-path:/nix/store/{HASH}-hello-2.12.1"));
    assert_eq!(
        (hello["name"].as_str(), hello["version"].as_str()),
        (Some("hello"), Some("2.12.1"))
    );
    assert_eq!(
        hello["hashes"][0]["content"],
        Digest::of(b"nar of hello-2.12.1").hex()
    );
    let glibc = component(&d, &format!("nix-path:/nix/store/{HASH}-glibc-2.38-44"));
    assert_eq!(
        (glibc["name"].as_str(), glibc["version"].as_str()),
        (Some("glibc"), Some("2.38-44"))
    );

    let deps = |r: &str| -> Vec<String> {
        d["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["ref"] == r)
            .unwrap()["dependsOn"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let glibc_ref = format!("nix-path:/nix/store/{HASH}-glibc-2.38-44");
    let hello_ref = format!("nix-path:/nix/store/{HASH}-hello-2.12.1");
    assert_eq!(deps(&hello_ref), std::slice::from_ref(&glibc_ref));
    assert!(
        deps(&glibc_ref).is_empty(),
        "a self-reference is no dependency"
    );
    let root_deps = deps("bundle");
    assert!(root_deps.contains(&hello_ref) && !root_deps.contains(&glibc_ref));
    assert_eq!(root_deps.len(), m.objects.len() - 1);
    assert_eq!(
        deps("k8s-manifest:chart:web/Deployment/apps/web"),
        ["image:docker.io/library/redis:8"]
    );
    let chart = component(&d, "chart:oci://ghcr.io/x/web:1.0.0");
    assert_eq!(
        (chart["name"].as_str(), chart["version"].as_str()),
        (Some("web"), Some("1.0.0"))
    );
    assert_eq!(
        property(component(&d, "file:/usr/local/bin/k3s"), "gapbundle:mode"),
        ["0755"]
    );
}

#[test]
fn spdx_describes_the_bundle_that_contains_every_object() {
    let m = manifest();
    let d = spdx(&m, &subject());
    assert_eq!(d["spdxVersion"], "SPDX-2.3");
    assert_eq!(
        d["documentNamespace"],
        format!("urn:uuid:{}", uuid_of(&Digest::of(b"the manifest")))
    );
    let packages = d["packages"].as_array().unwrap();
    // The bundle, every object, and the two distinct layers once each.
    assert_eq!(packages.len(), 1 + m.objects.len() + 2);
    let rel = d["relationships"].as_array().unwrap();
    let count = |t: &str| rel.iter().filter(|r| r["relationshipType"] == t).count();
    assert_eq!(count("DESCRIBES"), 1);
    assert_eq!(
        count("CONTAINS"),
        m.objects.len() + 3,
        "objects, and 2 + 1 layers"
    );
    assert_eq!(
        count("DEPENDS_ON"),
        2,
        "hello on glibc, the document on redis"
    );
    let root = &packages[0];
    assert!(root["comment"]
        .as_str()
        .unwrap()
        .contains("gapbundle:signer: release:AAAA"));
}

#[test]
fn a_stored_sbom_describes_the_contents_without_itself() {
    let mut m = manifest();
    let before = render(&m, &Subject::Contents, Format::CycloneDx, "0.1.0");
    let d: Value = serde_json::from_slice(&before).unwrap();
    assert_eq!(
        d["serialNumber"],
        format!("urn:uuid:{}", uuid_of(&contents_digest(&m)))
    );
    assert!(property(&d["metadata"]["component"], "gapbundle:digest").is_empty());
    let sbom = blob(&before, CYCLONEDX_MEDIA_TYPE);
    m.blobs.push(sbom.clone());
    m.objects.push(object(
        Kind::Sbom,
        Format::CycloneDx.object_name(),
        &sbom,
        &[&sbom],
        json!({}),
    ));
    assert_eq!(
        render(&m, &Subject::Contents, Format::CycloneDx, "0.1.0"),
        before
    );
    // `gapbundle sbom` of the bundle lists the stored one too.
    let all = cdx(&m, &subject());
    assert_eq!(component(&all, "sbom:sbom.cdx.json")["type"], "file");
}

#[test]
fn the_contents_digest_is_that_of_the_canonical_objects_array() {
    let m = manifest();
    let objects: Vec<&Object> = m.objects.iter().filter(|o| o.kind != Kind::Sbom).collect();
    assert!(objects.len() > 2);
    let whole = Digest::of(&canonical::to_vec(&objects).unwrap());
    assert_eq!(contents_digest(&m), whole);
    let empty = Manifest {
        objects: Vec::new(),
        ..m
    };
    assert_eq!(contents_digest(&empty), Digest::of(b"[]"));
}

#[test]
fn uuids_are_version_5_rfc_variant() {
    let u = uuid_of(&Digest::of(b"x"));
    assert_eq!(u.len(), 36);
    assert_eq!(&u[14..15], "5");
    assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
}
