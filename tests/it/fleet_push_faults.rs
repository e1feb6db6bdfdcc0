//! Fleet push (`gapbundle import --registry`) when the link to the registry breaks.
//!
//! The registry is the real CNCF distribution server started by `support`. A real
//! server does not drop a connection in the middle of a blob upload on request, so
//! (as the project's rules allow for faults only) the harness's [`CuttingProxy`]
//! sits in front of it: it forwards everything unchanged, except that it cuts the
//! first connection whose client-to-server bytes pass a threshold, which is a blob
//! upload part-way through its body. Results are checked with skopeo against the
//! registry itself, not through the proxy.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gapbundle::bundle::manifest::Kind;

use crate::support::*;

/// Client-to-server bytes after which the proxy cuts a connection: more than
/// login, HEADs and the small blobs, less than the fixture's ~1 MiB base layer.
const CUT_AFTER: u64 = 64 << 10;

/// A work folder with a key pair and the bundle of the fixture image `team/app:1.2`
/// (a ~1 MiB incompressible base layer and a small one).
struct Site {
    w: Work,
    bundle: PathBuf,
    /// `(name, root digest)` of the bundled image.
    image: (String, String),
}

impl Site {
    fn new(source: &Registry) -> Site {
        let w = Work::new("fleet-faults");
        w.write(
            "bundle.yaml",
            &format!(
                "name: fleet-faults\nversion: \"1\"\nimages:\n  - ref: {}/team/app:1.2\n",
                source.addr
            ),
        );
        let bundle = w.path("site.gapb");
        run(w
            .create(&bundle)
            .args(["--insecure-registry", &source.addr, "--quiet"]));
        let head = head_of(&bundle);
        let o = head
            .manifest
            .objects
            .iter()
            .find(|o| o.kind == Kind::Image)
            .expect("the bundle carries the image");
        let image = (o.name.clone(), o.digest.to_string());
        Site { w, bundle, image }
    }

    /// `gapbundle import BUNDLE --registry HOST` (plain HTTP), JSON report.
    fn push(&self, bundle: &Path, host: &str) -> Command {
        let mut c = self.w.import(bundle);
        c.args(["--registry", host, "--insecure-registry", host, "--json"]);
        c
    }
}

/// Size of a blob stored in the bundle.
fn blob_size(bundle: &Path, digest: &str) -> u64 {
    head_of(bundle)
        .manifest
        .blobs
        .iter()
        .find(|b| b.digest.to_string() == digest)
        .unwrap_or_else(|| panic!("{digest} is not in the bundle"))
        .size
}

/// Runs `cmd` with the bundle file as its stdin.
fn output_with_stdin(cmd: &mut Command, bundle: &Path) -> Output {
    cmd.stdin(fs::File::open(bundle).unwrap())
        .output()
        .unwrap_or_else(|e| panic!("could not start `{}`: {e}", describe(cmd)))
}

/// The fleet registry itself (not the proxy) serves the image with the bundled
/// root digest and the fixture's layers.
fn assert_pushed(fleet: &Registry, w: &Site, fx: &Fixtures) {
    let (name, digest) = &w.image;
    let moved = format!(
        "docker://{}/{}",
        fleet.addr,
        name.split_once('/').expect("host/path").1
    );
    assert_eq!(&skopeo_digest(&moved), digest, "{moved} keeps its digest");
    let m = skopeo_manifest(&moved, None);
    assert_eq!(manifest_layer_digests(&m), fx.app.layer_digests);
    assert_eq!(manifest_config_digest(&m), fx.app.config_digest);
}

#[test]
fn an_upload_cut_mid_blob_is_pushed_again_from_the_bundle_file() {
    let source = Registry::start();
    let fx = push_fixture_images(&source, None);
    let fleet = Registry::start();
    let proxy = CuttingProxy::start(&fleet.addr, CUT_AFTER);
    let w = Site::new(&source);

    let out = run(&mut w.push(&w.bundle, &proxy.addr));
    assert_eq!(
        proxy.cuts(),
        1,
        "the proxy cut one upload\n{}",
        output_text(&out)
    );
    let report = cli_report(&out, "import");
    let result = &report["targets"][0]["result"];
    assert_eq!(
        result["blobsPushedAgain"],
        serde_json::json!([fx.base_layer_digest]),
        "the cut blob, the big base layer, was pushed again: {report}"
    );
    assert_pushed(&fleet, &w, &fx);
}

#[test]
fn an_upload_cut_while_reading_stdin_fails_with_exit_5_and_a_rerun_completes() {
    let source = Registry::start();
    let fx = push_fixture_images(&source, None);
    let fleet = Registry::start();
    let proxy = CuttingProxy::start(&fleet.addr, CUT_AFTER);
    let w = Site::new(&source);
    let stdin = Path::new("-");

    let out = output_with_stdin(&mut w.push(stdin, &proxy.addr), &w.bundle);
    assert_eq!(
        proxy.cuts(),
        1,
        "the proxy cut one upload\n{}",
        output_text(&out)
    );
    // A registry failure.
    let err = fails(&out, 5);
    for part in [
        fx.base_layer_digest.as_str(),
        "came from stdin",
        "rerun the import from the bundle file",
        "pipe the bundle in again",
        "blobs already pushed are skipped",
    ] {
        assert!(err.contains(part), "the error says {part:?}:\n{err}");
    }
    // Nothing was tagged: the image is incomplete.
    let tag = format!("docker://{}/team/app:1.2", fleet.addr);
    assert!(
        try_skopeo_raw(&tag, None).is_err(),
        "{tag} is not there yet"
    );

    // The proxy cuts no more; a rerun from stdin pushes only what is missing.
    let out = output_with_stdin(&mut w.push(stdin, &proxy.addr), &w.bundle);
    assert!(
        out.status.success(),
        "the rerun succeeds\n{}",
        output_text(&out)
    );
    assert_eq!(proxy.cuts(), 1);
    let result = &cli_report(&out, "import")["targets"][0]["result"];
    assert_eq!(
        result["bytesPushed"],
        blob_size(&w.bundle, &fx.base_layer_digest),
        "only the cut blob was pushed on the rerun: {result}"
    );
    assert_pushed(&fleet, &w, &fx);
}

#[test]
fn refused_credentials_fail_at_once_with_exit_5() {
    let source = Registry::start();
    push_fixture_images(&source, None);
    let fleet = Registry::start_with_htpasswd("fleet", "s3cret");
    let w = Site::new(&source);
    let out = w
        .push(&w.bundle, &fleet.addr)
        .args(["--registry-auth", &format!("{}=fleet:wrong", fleet.addr)])
        .output()
        .unwrap();
    let err = fails(&out, 5);
    assert!(
        err.contains(&format!("registry {} refused to", fleet.addr))
            && err.contains("401 Unauthorized")
            && err.contains("--registry-auth"),
        "{err}"
    );
    assert!(
        !err.contains("times in a row"),
        "a refusal is not retried:\n{err}"
    );
}
