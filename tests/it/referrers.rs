//! Referrers (format.md section 18): an image's signatures, attestations and SBOMs
//! found in a real CNCF distribution 2.8 registry (no referrers API, so through the
//! referrers tag schema) and through cosign's tag scheme, bundled beside the image,
//! listed by inspect, pushed with the image to a fleet registry (read back by
//! skopeo and by hand), and kept out of containerd's image list.
//!
//! The fixtures are made here by hand through the registry API, as an OCI 1.1
//! client and cosign push them: an SBOM artifact whose `subject` is the image, with
//! the tag-schema index a client writes on a registry without the API, and a
//! cosign signature (the documented simple-signing payload as its one layer, the
//! signature in the `dev.cosignproject.cosign/signature` annotation) under
//! `sha256-<hex>.sig`.
//!
//! The referrers found are pinned in the lock: a signature added upstream after the
//! lock was written is refused by `create --locked`, taken into the lock by a
//! plain `create`, and the lock then reproduces the bundle byte for byte.

use std::process::Command;

use serde_json::{json, Value};

use crate::support::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SBOM_TYPE: &str = "application/vnd.example.sbom.v1";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// What was attached to `team/app:1.2`.
struct Attached {
    /// The image's root digest.
    subject: String,
    /// The SBOM artifact (names the image as its subject).
    sbom: Vec<u8>,
    /// The cosign signature manifest (under `sha256-<hex>.sig`).
    sig: Vec<u8>,
    /// Its simple-signing payload.
    payload: Vec<u8>,
}

fn attach(reg: &Registry, fx: &Fixtures) -> Attached {
    let subject = fx.app.manifest_digest.clone();
    let subject_size = skopeo_raw(&fx.app.docker_ref(), None).len();
    let hex = subject.strip_prefix("sha256:").unwrap();
    // An OCI 1.1 artifact with a subject, and the tag-schema index an OCI client
    // writes beside it on a registry without the referrers API.
    let empty = reg.push_blob("team/app", b"{}");
    let doc_bytes = b"{\"bomFormat\":\"CycloneDX\"}\n";
    let doc = reg.push_blob("team/app", doc_bytes);
    let doc_size = doc_bytes.len();
    let sbom = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{SBOM_TYPE}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/vnd.cyclonedx+json","digest":"{doc}","size":{doc_size}}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{subject_size}}}}}"#
    )
    .into_bytes();
    let sbom_digest = sha256_digest(&sbom);
    reg.put_manifest("team/app", &sbom_digest, OCI_MANIFEST, &sbom);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{sbom_digest}","size":{},"artifactType":"{SBOM_TYPE}"}}]}}"#,
        sbom.len()
    );
    reg.put_manifest(
        "team/app",
        &format!("sha256-{hex}"),
        OCI_INDEX,
        index.as_bytes(),
    );
    // cosign's signature: the simple-signing payload, the signature in an
    // annotation, a config that names the payload as its one diff ID.
    let payload = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{}/team/app"}},"image":{{"docker-manifest-digest":"{subject}"}},"type":"cosign container image signature"}},"optional":null}}"#,
        reg.addr
    )
    .into_bytes();
    let payload_digest = reg.push_blob("team/app", &payload);
    let config = format!(
        r#"{{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{{"created":"0001-01-01T00:00:00Z"}}],"os":"","rootfs":{{"type":"layers","diff_ids":["{payload_digest}"]}},"config":{{}}}}"#
    )
    .into_bytes();
    let config_digest = reg.push_blob("team/app", &config);
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"{SIMPLE_SIGNING}","size":{},"digest":"{payload_digest}","annotations":{{"dev.cosignproject.cosign/signature":"MEUCIQDexample+signature/bytes=="}}}}]}}"#,
        config.len(),
        payload.len()
    )
    .into_bytes();
    reg.put_manifest("team/app", &format!("sha256-{hex}.sig"), OCI_MANIFEST, &sig);
    Attached {
        subject,
        sbom,
        sig,
        payload,
    }
}

/// A bundle of `team/app:1.2` with its referrers and `team/tool:0.3` without.
fn bundle(reg: &Registry, w: &Work) {
    w.write(
        "bundle.yaml",
        &format!(
            "name: r\nversion: \"1\"\nimages:\n  - ref: {}\n    referrers: true\n  - ref: {}\n",
            reg.reference("team/app:1.2"),
            reg.reference("team/tool:0.3"),
        ),
    );
    run(w.create("r.gapb").args(["--insecure-registry", &reg.addr]));
}

fn objects_of_kind(m: &Value, kind: &str) -> Vec<Value> {
    m["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == kind)
        .cloned()
        .collect()
}

/// The bundle's manifest (the first tar entry).
fn bundle_manifest(w: &Work) -> Value {
    let out = run(Command::new("tar")
        .args(["-xOf"])
        .arg(w.path("r.gapb"))
        .arg("gapbundle/manifest.json"));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn referrers_are_bundled_beside_the_image_and_listed_under_it() {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let a = attach(&reg, &fx);
    let w = Work::new("referrers-test");
    bundle(&reg, &w);
    ok(w.verify("r.gapb"));

    let m = bundle_manifest(&w);
    let repo = format!("{}/team/app", reg.addr);
    let refs = objects_of_kind(&m, "referrer");
    let sbom_digest = sha256_digest(&a.sbom);
    let sig_digest = sha256_digest(&a.sig);
    let mut want = vec![
        (format!("{repo}@{sbom_digest}"), sbom_digest.clone()),
        (format!("{repo}@{sig_digest}"), sig_digest.clone()),
    ];
    want.sort();
    let got: Vec<(String, String)> = refs
        .iter()
        .map(|o| {
            (
                o["name"].as_str().unwrap().to_string(),
                o["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, want, "{m}");
    let hex = a.subject.strip_prefix("sha256:").unwrap();
    for o in &refs {
        assert_eq!(o["meta"]["subject"], a.subject.as_str());
        if o["digest"] == sig_digest.as_str() {
            assert_eq!(o["meta"]["tag"], format!("sha256-{hex}.sig"));
            assert!(o["blobs"]
                .as_array()
                .unwrap()
                .contains(&json!(sha256_digest(&a.payload))));
        } else {
            assert_eq!(o["meta"]["artifactType"], SBOM_TYPE);
            assert!(o["meta"].get("tag").is_none(), "{o}");
            assert_eq!(o["blobs"].as_array().unwrap().len(), 3, "{o}");
        }
    }
    // The image objects are the images alone.
    for img in objects_of_kind(&m, "image") {
        assert!(!img["blobs"]
            .as_array()
            .unwrap()
            .contains(&json!(sig_digest)));
    }

    let inspect = w.inspect("r.gapb");
    let images = inspect["images"].as_array().unwrap();
    let app = images
        .iter()
        .find(|i| i["ref"] == reg.reference("team/app:1.2"))
        .unwrap();
    let listed: Vec<(&str, &Value)> = app["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["digest"].as_str().unwrap(), &r["tag"]))
        .collect();
    let sig_tag = json!(format!("sha256-{hex}.sig"));
    let mut expect = vec![
        (sbom_digest.as_str(), &Value::Null),
        (sig_digest.as_str(), &sig_tag),
    ];
    expect.sort_by_key(|e| e.0);
    assert_eq!(listed, expect, "{inspect}");
    let tool = images
        .iter()
        .find(|i| i["ref"] == reg.reference("team/tool:0.3"))
        .unwrap();
    assert_eq!(tool["referrers"], json!([]));
    let text =
        String::from_utf8(run(gapbundle().arg("inspect").arg(w.path("r.gapb"))).stdout).unwrap();
    assert!(
        text.contains(&format!("    referrer {}", &sbom_digest[7..19])),
        "{text}"
    );
    assert!(text.contains(&format!("(tag sha256-{hex}.sig)")), "{text}");

    // `tar x` is an OCI layout that names the images only, the referrers' blobs
    // beside them.
    let dir = w.path("x");
    std::fs::create_dir_all(&dir).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(w.path("r.gapb"))
        .arg("-C")
        .arg(&dir));
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    let stored = std::fs::read(
        dir.join("blobs/sha256")
            .join(sig_digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap();
    assert_eq!(stored, a.sig);
}

#[test]
fn a_fleet_push_carries_the_referrers_and_containerd_registers_none() {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let a = attach(&reg, &fx);
    let w = Work::new("referrers-test");
    bundle(&reg, &w);
    let hex = a.subject.strip_prefix("sha256:").unwrap().to_string();

    let fleet = Registry::start();
    let push = || {
        ok(w.import(&w.path("r.gapb"))
            .args([
                "--registry",
                &fleet.addr,
                "--insecure-registry",
                &fleet.addr,
            ])
            .arg("--skip-manifests")
            .output()
            .unwrap())
    };
    push();
    // The signature under cosign's tag, read back by skopeo as it was signed.
    let sig = skopeo_raw(
        &format!("docker://{}/team/app:sha256-{hex}.sig", fleet.addr),
        None,
    );
    assert_eq!(sig, a.sig);
    // The SBOM by digest, and the tag-schema index that lists it (2.8 has no
    // referrers API, so that is how a client finds it).
    let sbom_digest = sha256_digest(&a.sbom);
    let got = fleet.http(
        "GET",
        &format!("/v2/team/app/manifests/{sbom_digest}"),
        &[("Accept", OCI_MANIFEST)],
        b"",
    );
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.body, a.sbom);
    // The tag-schema index of the image's referrers, as a client reads it.
    let tag_index = || -> Value {
        let raw = skopeo_raw(
            &format!("docker://{}/team/app:sha256-{hex}", fleet.addr),
            None,
        );
        serde_json::from_slice(&raw).unwrap()
    };
    let index = tag_index();
    assert_eq!(
        index["manifests"],
        json!([{
            "mediaType": OCI_MANIFEST,
            "digest": sbom_digest,
            "size": a.sbom.len(),
            "artifactType": SBOM_TYPE,
        }]),
        "{index}"
    );
    // The image itself is there as it was.
    assert_eq!(
        skopeo_digest(&format!("docker://{}/team/app:1.2", fleet.addr)),
        a.subject
    );
    // Pushing again (the image is there) fails nothing.
    push();
    // The tag-schema index still lists the SBOM once.
    let again = tag_index();
    assert_eq!(again["manifests"], index["manifests"]);

    // containerd: the images are registered, no referrer is.
    let ctd = Containerd::start();
    ok(w.import(&w.path("r.gapb"))
        .arg("--containerd")
        .arg(ctd.socket())
        .arg("--skip-manifests")
        .output()
        .unwrap());
    let names = ctd.ctr_stdout(&["images", "ls", "-q"]);
    assert!(names.contains("team/app:1.2"), "{names}");
    for line in names.lines() {
        assert!(
            !line.contains(&sbom_digest) && !line.contains(&sha256_digest(&a.sig)),
            "a referrer registered as an image: {names}"
        );
        assert!(!line.contains(".sig"), "{names}");
    }
}

#[test]
fn serve_offers_the_referrers_by_tag_digest_and_the_referrers_endpoint() {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let a = attach(&reg, &fx);
    let w = Work::new("referrers-test");
    bundle(&reg, &w);
    let log = w.path("serve.log");
    let mut child = gapbundle()
        .args(["--json", "serve"])
        .arg(w.path("r.gapb"))
        .arg("--trust")
        .arg(w.public())
        .args(["--listen", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let started: Option<Value> = serde_json::from_str(&line).ok();
    let Some(addr) = started.as_ref().and_then(|r| r["listen"].as_str()) else {
        let _ = child.kill();
        panic!(
            "gapbundle serve did not start:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    };
    let get = |path: &str| {
        http_request(addr, "GET", path, None, &[("Accept", OCI_MANIFEST)], b"").unwrap()
    };
    let hex = a.subject.strip_prefix("sha256:").unwrap();
    let sig = get(&format!("/v2/team/app/manifests/sha256-{hex}.sig"));
    let sbom_digest = sha256_digest(&a.sbom);
    let sbom = get(&format!("/v2/team/app/manifests/{sbom_digest}"));
    let listed = get(&format!("/v2/team/app/referrers/{}", a.subject));
    let payload = get(&format!("/v2/team/app/blobs/{}", sha256_digest(&a.payload)));
    let tags = get("/v2/team/app/tags/list");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(sig.status, 200, "{}", sig.text());
    assert_eq!(sig.body, a.sig);
    assert_eq!(sbom.body, a.sbom);
    assert_eq!(payload.body, a.payload);
    let index: Value = serde_json::from_slice(&listed.body).unwrap();
    assert_eq!(
        index["manifests"],
        json!([{
            "mediaType": OCI_MANIFEST,
            "digest": sbom_digest,
            "size": a.sbom.len(),
            "artifactType": SBOM_TYPE,
        }]),
        "{index}"
    );
    let tags: Value = serde_json::from_slice(&tags.body).unwrap();
    assert_eq!(tags["tags"], json!(["1.2", format!("sha256-{hex}.sig")]));
}

/// Pushes a cosign-style attestation of `subject` under `sha256-<hex>.att` (a
/// manifest whose one layer is an in-toto statement); returns its manifest.
fn attest(reg: &Registry, subject: &str) -> Vec<u8> {
    let hex = subject.strip_prefix("sha256:").unwrap();
    let empty = reg.push_blob("team/app", b"{}");
    let statement = format!(
        r#"{{"_type":"https://in-toto.io/Statement/v1","subject":[{{"digest":{{"sha256":"{hex}"}}}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{{}}}}"#
    )
    .into_bytes();
    let layer = reg.push_blob("team/app", &statement);
    let att = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","size":2,"digest":"{empty}"}},"layers":[{{"mediaType":"application/vnd.in-toto+json","size":{},"digest":"{layer}"}}]}}"#,
        statement.len()
    )
    .into_bytes();
    reg.put_manifest("team/app", &format!("sha256-{hex}.att"), OCI_MANIFEST, &att);
    att
}

/// The referrer digests the lock pins for `team/app:1.2`, as they are written
/// (the lock checked against its schema first).
fn locked_referrers(w: &Work, reg: &Registry) -> Value {
    let lock: Value =
        serde_json::from_slice(&std::fs::read(w.path("bundle.lock")).unwrap()).unwrap();
    let schema: Value = serde_json::from_slice(
        &std::fs::read(repo().join("bundle-spec/schema/lock.schema.json")).unwrap(),
    )
    .unwrap();
    let errors: Vec<String> = jsonschema::validator_for(&schema)
        .unwrap()
        .iter_errors(&lock)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{lock}\ndoes not match lock.schema.json: {errors:#?}"
    );
    let key = format!("ref:{}", reg.reference("team/app:1.2"));
    assert!(lock["images"].get(&key).is_some(), "no {key} in {lock}");
    lock["images"][key]["referrers"].clone()
}

#[test]
fn the_lock_pins_the_referrers_and_locked_refuses_one_added_upstream() {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let a = attach(&reg, &fx);
    let w = Work::new("referrers-test");
    bundle(&reg, &w);
    // The lock pins the two referrers found, sorted; the image that did not ask
    // for referrers has no such member.
    let mut pinned = vec![sha256_digest(&a.sbom), sha256_digest(&a.sig)];
    pinned.sort();
    assert_eq!(locked_referrers(&w, &reg), json!(pinned));
    let lock: Value =
        serde_json::from_slice(&std::fs::read(w.path("bundle.lock")).unwrap()).unwrap();
    let tool = format!("ref:{}", reg.reference("team/tool:0.3"));
    assert!(lock["images"][&tool].get("referrers").is_none(), "{lock}");
    let lock_before = std::fs::read(w.path("bundle.lock")).unwrap();

    // A signature (here an attestation) is added upstream after the lock was made.
    let att = sha256_digest(&attest(&reg, &a.subject));
    let insecure = ["--insecure-registry", reg.addr.as_str()];
    let refused = w
        .create("locked.gapb")
        .args(insecure)
        .arg("--locked")
        .output()
        .unwrap();
    let err = fails(&refused, 4);
    assert!(
        err.contains("--locked")
            && err.contains("team/app:1.2")
            && err.contains(&format!("added {}/team/app@{att}", reg.addr)),
        "{err}"
    );
    assert!(!err.contains("removed"), "{err}");
    assert!(!w.path("locked.gapb").exists());
    assert_eq!(std::fs::read(w.path("bundle.lock")).unwrap(), lock_before);

    // Without --locked the lock takes it in, and the report says the pin moved.
    let updated = cli_report(
        &ok(w
            .create("updated.gapb")
            .args(insecure)
            .arg("--json")
            .output()
            .unwrap()),
        "create",
    );
    assert_eq!(updated["lockChanged"], json!(true), "{updated}");
    let moved = updated["moved"].as_array().unwrap();
    assert_eq!(moved.len(), 1, "{updated}");
    assert_eq!(moved[0]["from"], moved[0]["to"], "{updated}");
    assert_eq!(moved[0]["referrersAdded"], json!([att]), "{updated}");
    assert!(moved[0].get("referrersRemoved").is_none(), "{updated}");
    pinned.push(att.clone());
    pinned.sort();
    assert_eq!(locked_referrers(&w, &reg), json!(pinned));

    // The lock now reproduces that bundle exactly, and --locked accepts it.
    ok(w.create("again.gapb")
        .args(insecure)
        .arg("--locked")
        .output()
        .unwrap());
    let updated_bytes = std::fs::read(w.path("updated.gapb")).unwrap();
    assert!(
        std::fs::read(w.path("again.gapb")).unwrap() == updated_bytes,
        "the --locked bundle is not the bundle the updated lock was written with"
    );
    let m: Value = serde_json::from_slice(
        &run(Command::new("tar")
            .args(["-xOf"])
            .arg(w.path("again.gapb"))
            .arg("gapbundle/manifest.json"))
        .stdout,
    )
    .unwrap();
    let refs: Vec<String> = objects_of_kind(&m, "referrer")
        .iter()
        .map(|o| o["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(refs, pinned);
}
