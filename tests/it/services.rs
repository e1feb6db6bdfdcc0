//! Smoke test of the test infrastructure itself (`tests/it/support`).
//!
//! Every other integration test trusts that the real registry, skopeo and
//! umoci fixtures behave as `support` promises: plain and htpasswd
//! registries start and stop, the fixture images share their base layer, the
//! multi-arch index lists two platforms, and authentication is enforced. If
//! this file fails, fix the environment (`scripts/install-test-deps`) or the
//! support module before reading anything into other failures.

use std::collections::BTreeSet;

use crate::support::*;

const USER: &str = "gap";
const PASS: &str = "bundle-pass";

/// Checks `fx` from the outside with skopeo alone.
fn check_fixtures(reg: &Registry, fx: &Fixtures) {
    let creds = reg.creds();

    // app and tool share the base layer, and only it.
    let app = skopeo_manifest(&fx.app.docker_ref(), creds);
    let tool = skopeo_manifest(&fx.tool.docker_ref(), creds);
    let app_layers = manifest_layer_digests(&app);
    let tool_layers = manifest_layer_digests(&tool);
    assert_eq!(app_layers.len(), 2);
    assert_eq!(tool_layers.len(), 2);
    assert_eq!(app_layers[0], fx.base_layer_digest);
    assert_eq!(tool_layers[0], fx.base_layer_digest);
    assert_ne!(app_layers[1], tool_layers[1]);
    assert_eq!(app_layers, fx.app.layer_digests);
    assert_eq!(tool_layers, fx.tool.layer_digests);
    let base_size = app["layers"][0]["size"].as_u64().unwrap();
    assert!(
        base_size > BASE_BLOB_SIZE as u64,
        "base layer should be ~1 MiB (incompressible), is {base_size} bytes"
    );

    // Digests reported by Fixtures are those the registry serves.
    assert_eq!(
        skopeo_digest_with_creds(&fx.app.docker_ref(), creds),
        fx.app.manifest_digest
    );
    assert_eq!(
        skopeo_digest_with_creds(
            &format!("docker://{}", fx.tool.reference_by_digest()),
            creds
        ),
        fx.tool.manifest_digest
    );

    // The multi-arch image is an OCI index with linux/amd64 and linux/arm64.
    let index = skopeo_manifest(&fx.multi.docker_ref(), creds);
    assert_eq!(index["mediaType"], OCI_INDEX_MEDIA_TYPE);
    assert_eq!(
        skopeo_digest_with_creds(&fx.multi.docker_ref(), creds),
        fx.multi.index_digest
    );
    let platforms = index_platforms(&index);
    assert_eq!(platforms.len(), 2, "{index}");
    let archs: BTreeSet<_> = platforms.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(archs, BTreeSet::from(["amd64", "arm64"]));
    assert!(platforms.iter().all(|p| p.0 == "linux"));
    for (_, arch, digest) in &platforms {
        let p = fx.multi.platform(arch);
        assert_eq!(&p.manifest_digest, digest);
        let config = skopeo_config(&format!("docker://{}", p.reference_by_digest), creds);
        assert_eq!(config["architecture"], arch.as_str());
        assert_eq!(config["os"], "linux");
    }
    let amd = fx.multi.platform("amd64");
    let arm = fx.multi.platform("arm64");
    assert_ne!(amd.config_digest, arm.config_digest);
    assert_ne!(amd.layer_digests, arm.layer_digests);
}

#[test]
fn registries_serve_fixtures_with_and_without_auth() {
    let plain = Registry::start();
    let authed = Registry::start_with_htpasswd(USER, PASS);
    assert_ne!(plain.addr, authed.addr);

    // Anonymous /v2/ is 200 on the plain registry, 401 on the htpasswd one.
    assert_eq!(plain.http("GET", "/v2/", &[], b"").status, 200);
    let anon = http_request(&authed.addr, "GET", "/v2/", None, &[], b"").unwrap();
    assert_eq!(anon.status, 401);
    assert_eq!(authed.http("GET", "/v2/", &[], b"").status, 200);

    let fx_plain = push_fixture_images(&plain, None);
    let fx_authed = push_fixture_images(&authed, authed.creds());
    check_fixtures(&plain, &fx_plain);
    check_fixtures(&authed, &fx_authed);

    // Same fixture layout pushed twice: identical content addresses.
    assert_eq!(fx_plain.base_layer_digest, fx_authed.base_layer_digest);
    assert_eq!(fx_plain.app.manifest_digest, fx_authed.app.manifest_digest);
    assert_eq!(fx_plain.multi.index_digest, fx_authed.multi.index_digest);
    assert!(fx_authed.app.reference.starts_with(&authed.addr));
    assert!(fx_authed.app.reference.ends_with("/team/app:1.2"));

    // Anonymous and wrong-password access to the htpasswd registry fail.
    let err = try_skopeo_raw(&fx_authed.app.docker_ref(), None)
        .expect_err("anonymous skopeo inspect must fail on the htpasswd registry");
    assert!(
        err.contains("401") || err.to_lowercase().contains("unauthorized"),
        "unexpected error: {err}"
    );
    try_skopeo_raw(&fx_authed.app.docker_ref(), Some((USER, "wrong")))
        .expect_err("a wrong password must be rejected");
    // ... and pushing without credentials is refused too.
    let src = format!("oci:{}:{}", fixture_layout().display(), tags::SMALL);
    try_run(skopeo().args([
        "copy",
        "--dest-tls-verify=false",
        "--dest-no-creds",
        &src,
        &authed.docker_ref("team/anon:1"),
    ]))
    .expect_err("anonymous push to the htpasswd registry must fail");
}

#[test]
fn stopped_registry_refuses_then_restarts_with_its_data() {
    let mut reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    assert!(reg.is_running());

    reg.stop();
    assert!(!reg.is_running());
    assert!(http_request(&reg.addr, "GET", "/v2/", None, &[], b"").is_err());
    try_skopeo_raw(&fx.app.docker_ref(), None).expect_err("registry is down");

    reg.restart();
    assert_eq!(skopeo_digest(&fx.app.docker_ref()), fx.app.manifest_digest);
}

#[test]
fn local_layout_and_archive_fixtures() {
    let tmp = tempfile::tempdir().unwrap();

    let layout = oci_layout_fixture(&tmp.path().join("layout"));
    assert_eq!(
        layout.transport_ref,
        format!("oci:{}:latest", tmp.path().join("layout").display())
    );
    assert!(layout.path.join("index.json").is_file());
    assert!(layout.path.join("oci-layout").is_file());
    let desc = layout_descriptor(&layout.path, "latest");
    assert_eq!(desc["digest"], layout.manifest_digest.as_str());

    let oci = oci_archive_fixture(&tmp.path().join("image.oci.tar"));
    assert!(oci.path.is_file());
    assert!(oci.manifest_digest.starts_with("sha256:"));
    assert_eq!(
        manifest_layer_digests(&skopeo_manifest(&oci.transport_ref, None)).len(),
        1
    );

    let docker = docker_archive_fixture(&tmp.path().join("image.docker.tar"));
    let manifest_json = run_stdout(
        tool("tar")
            .arg("-xOf")
            .arg(&docker.path)
            .arg("manifest.json"),
    );
    assert!(
        manifest_json.contains("\"docker.io/example/legacy:1.0\""),
        "docker-archive manifest.json lacks the tag: {manifest_json}"
    );
    assert!(docker.manifest_digest.starts_with("sha256:"));
}

#[test]
#[should_panic(expected = "scripts/install-test-deps")]
fn missing_tool_panics_loudly() {
    require_tool("gapbundle-no-such-tool");
}

#[test]
fn gapbundle_binary_is_built() {
    assert!(gapbundle_bin().is_file(), "{}", gapbundle_bin().display());
}
