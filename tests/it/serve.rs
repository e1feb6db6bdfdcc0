//! `gapbundle serve` against real clients: skopeo and containerd pull images from it
//! (containerd through a `hosts.toml` mirror, as a K3s node would), Nix copies and
//! substitutes paths from it with only the bundle key trusted, over plain HTTP and
//! over HTTPS with a private CA; and every pull endpoint answers as Debian's CNCF
//! distribution registry answers for the same images (a table of requests sent to
//! both). Bundles that are not trusted, damaged at start, or changed on disk while
//! served are never served whole.

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// Manifest types a pulling client accepts, as containerd sends them.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// One request of the comparison table: method, path, headers.
type Row<'a> = (&'a str, String, &'a [(&'a str, &'a str)]);

/// A running `gapbundle --json serve`, killed on drop.
struct Serving {
    child: Child,
    /// What it printed at start.
    report: Value,
    /// `127.0.0.1:PORT`.
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serving {
    /// Serves `bundles` trusting the work key on a free loopback port, with `extra`
    /// flags; panics with its stderr unless it starts.
    fn start(w: &Work, bundles: &[PathBuf], extra: &[&str]) -> Serving {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serve.log");
        let mut cmd = gapbundle();
        cmd.args(["--json", "serve"])
            .args(bundles)
            .arg("--trust")
            .arg(w.public())
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log).unwrap());
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.is_empty() {
            let status = child.wait().unwrap();
            panic!(
                "gapbundle serve did not start ({status}):\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let report: Value = serde_json::from_str(&line).unwrap();
        assert_report(&report, "serve");
        let addr = report["listen"].as_str().unwrap().to_string();
        Serving {
            child,
            report,
            addr,
            log,
            _dir: dir,
        }
    }

    /// `http(s)://127.0.0.1:PORT`.
    fn url(&self) -> String {
        self.report["url"].as_str().unwrap().to_string()
    }

    /// `docker://127.0.0.1:PORT/<repo_and_tag>`.
    fn docker(&self, repo_and_tag: &str) -> String {
        format!("docker://{}/{repo_and_tag}", self.addr)
    }

    /// What it wrote on stderr so far (the request log and warnings).
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_request(&self.addr, "GET", path, None, headers, b"").unwrap()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `gapbundle serve` did when it was not expected to start.
fn serve_output(w: &Work, bundles: &[PathBuf], trust: &Path) -> Output {
    gapbundle()
        .arg("serve")
        .args(bundles)
        .arg("--trust")
        .arg(trust)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .current_dir(w.root())
        .output()
        .unwrap()
}

/// A bundle of the three fixture images (every platform) from `reg`.
fn fixture_bundle(w: &Work, reg: &Registry, out: &str, platforms: &str) -> PathBuf {
    w.write(
        "bundle.yaml",
        &format!(
            "name: site\nversion: \"1\"\nplatforms: {platforms}\nimages:\n  - ref: {}\n  - ref: {}\n  - ref: {}\n",
            reg.reference("team/app:1.2"),
            reg.reference("team/tool:0.3"),
            reg.reference("team/multi:1.0")
        ),
    );
    run(w
        .create(out)
        .args(["--insecure-registry", &reg.addr, "--retries", "2"]));
    w.path(out)
}

/// A registry with the fixture images, a work folder, and a bundle of the images.
struct Fixture {
    reg: Registry,
    fx: Fixtures,
    w: Work,
    bundle: PathBuf,
}

/// [`Fixture`] with the bundle `out` of the fixture images' `platforms`.
fn fixture(out: &str, platforms: &str) -> Fixture {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let w = Work::new("serve-test");
    let bundle = fixture_bundle(&w, &reg, out, platforms);
    Fixture { reg, fx, w, bundle }
}

fn header<'a>(r: &'a HttpResponse, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `skopeo copy [--all] SRC oci:DIR:TAG` (plain HTTP), and the digest skopeo then
/// reads from the copy.
fn copy_out(src: &str, dir: &Path, all: bool, extra: &[&str]) -> String {
    let mut c = skopeo();
    c.args(["copy", "--quiet", "--src-tls-verify=false"]);
    if all {
        c.arg("--all");
    }
    c.args(extra)
        .arg(src)
        .arg(format!("oci:{}:copy", dir.display()));
    run(&mut c);
    skopeo_digest(&format!("oci:{}:copy", dir.display()))
}

#[test]
fn skopeo_pulls_what_the_registry_had_sixteen_at_once() {
    let Fixture { reg, fx, w, bundle } = fixture("site.gapb", "all");
    let s = Serving::start(&w, &[bundle], &[]);
    assert_eq!(s.report["repositories"], 3);
    assert_eq!(s.report["tags"], 3);
    assert!(
        s.report["registriesYaml"]
            .as_str()
            .unwrap()
            .contains(&format!("\"{}\":", reg.addr)),
        "{}",
        s.report
    );
    for (repo, img) in [("team/app:1.2", &fx.app), ("team/tool:0.3", &fx.tool)] {
        assert_eq!(skopeo_digest(&s.docker(repo)), img.manifest_digest);
        let m = skopeo_manifest(&s.docker(repo), None);
        assert_eq!(manifest_layer_digests(&m), img.layer_digests);
        let config = skopeo_config(&s.docker(repo), None);
        assert_eq!(
            sha256_digest(&serde_json::to_vec(&config).unwrap()).len(),
            71,
            "skopeo read the config"
        );
    }
    assert_eq!(
        skopeo_digest(&s.docker("team/multi:1.0")),
        fx.multi.index_digest
    );
    for p in &fx.multi.platforms {
        let by_digest = format!("team/multi@{}", p.manifest_digest);
        assert_eq!(skopeo_digest(&s.docker(&by_digest)), p.manifest_digest);
    }
    // skopeo copy --all of the multi-platform image: the same index, every
    // platform's manifest; and sixteen of them at once all succeed.
    let dirs: Vec<tempfile::TempDir> = (0..16).map(|_| tempfile::tempdir().unwrap()).collect();
    let src = s.docker("team/multi:1.0");
    let digests: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = dirs
            .iter()
            .map(|d| {
                let src = src.clone();
                scope.spawn(move || copy_out(&src, d.path(), true, &[]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        digests.iter().all(|d| *d == fx.multi.index_digest),
        "{digests:?}"
    );
    for p in &fx.multi.platforms {
        let oci = format!("oci:{}:copy", dirs[0].path().display());
        let m = skopeo_manifest(&oci, None);
        assert_eq!(m["manifests"].as_array().unwrap().len(), 2);
        let copied = run(skopeo()
            .args(["inspect", "--raw", "--override-arch", &p.architecture])
            .arg(format!("oci:{}:copy", dirs[0].path().display())));
        assert!(!copied.stdout.is_empty());
        let blob = dirs[0]
            .path()
            .join("blobs/sha256")
            .join(p.layer_digests[0].trim_start_matches("sha256:"));
        assert_eq!(sha256_digest(&fs::read(blob).unwrap()), p.layer_digests[0]);
    }
    // A push is refused with the spec's UNSUPPORTED code.
    let push = try_run(skopeo().args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:copy", dirs[0].path().display()),
        &s.docker("team/new:1"),
    ]));
    assert!(push.is_err(), "a push must fail");
    let put = http_request(&s.addr, "PUT", "/v2/team/app/manifests/9", None, &[], b"{}").unwrap();
    assert_eq!(put.status, 405);
    assert!(put.text().contains("\"UNSUPPORTED\""), "{}", put.text());
    // Every request was logged: method, path, status, bytes, duration.
    let log = s.log();
    assert!(
        log.lines()
            .any(|l| l.contains(" GET /v2/team/multi/manifests/1.0 200 ") && l.ends_with("ms")),
        "{log}"
    );
}

#[test]
fn a_sparse_index_serves_only_the_platforms_kept() {
    let Fixture {
        reg: _reg,
        fx,
        w,
        bundle,
    } = fixture("amd64.gapb", "[linux/amd64]");
    let s = Serving::start(&w, &[bundle], &[]);
    let accept = [("Accept", ACCEPT)];
    let index = s.get("/v2/team/multi/manifests/1.0", &accept);
    assert_eq!(index.status, 200);
    assert_eq!(sha256_digest(&index.body), fx.multi.index_digest);
    let amd = fx.multi.platform("amd64");
    let arm = fx.multi.platform("arm64");
    let kept = s.get(
        &format!("/v2/team/multi/manifests/{}", amd.manifest_digest),
        &accept,
    );
    assert_eq!(kept.status, 200);
    let gone = s.get(
        &format!("/v2/team/multi/manifests/{}", arm.manifest_digest),
        &accept,
    );
    assert_eq!(gone.status, 404);
    assert!(
        gone.text().contains("\"MANIFEST_UNKNOWN\""),
        "{}",
        gone.text()
    );
    let layer = s.get(
        &format!("/v2/team/multi/blobs/{}", arm.layer_digests[0]),
        &[],
    );
    assert_eq!(layer.status, 404);
    assert!(
        layer.text().contains("\"BLOB_UNKNOWN\""),
        "{}",
        layer.text()
    );
    // A client that asks for the kept platform gets it.
    let dir = tempfile::tempdir().unwrap();
    let copied = copy_out(
        &s.docker("team/multi:1.0"),
        dir.path(),
        false,
        &["--override-arch", "amd64"],
    );
    assert_eq!(copied, amd.manifest_digest);
}

#[test]
fn the_same_answers_as_the_cncf_registry() {
    let Fixture { reg, fx, w, bundle } = fixture("site.gapb", "all");
    let s = Serving::start(&w, &[bundle], &[]);
    let zero = format!("sha256:{}", "0".repeat(64));
    let amd = fx.multi.platform("amd64");
    let layer = &fx.app.layer_digests[1];
    let base = &fx.base_layer_digest;
    let accept: &[(&str, &str)] = &[("Accept", ACCEPT)];
    let none: &[(&str, &str)] = &[];
    let table: Vec<Row> = vec![
        ("GET", "/v2/".into(), none),
        ("GET", "/v2/team/app/manifests/1.2".into(), accept),
        ("HEAD", "/v2/team/app/manifests/1.2".into(), accept),
        (
            "GET",
            format!("/v2/team/app/manifests/{}", fx.app.manifest_digest),
            accept,
        ),
        (
            "HEAD",
            format!("/v2/team/tool/manifests/{}", fx.tool.manifest_digest),
            accept,
        ),
        ("GET", "/v2/team/multi/manifests/1.0".into(), accept),
        (
            "GET",
            format!("/v2/team/multi/manifests/{}", amd.manifest_digest),
            accept,
        ),
        ("GET", "/v2/team/app/manifests/9.9".into(), accept),
        ("HEAD", "/v2/team/app/manifests/9.9".into(), accept),
        ("GET", format!("/v2/team/app/manifests/{zero}"), accept),
        ("GET", "/v2/team/nope/manifests/1".into(), accept),
        ("GET", format!("/v2/team/app/blobs/{layer}"), none),
        ("HEAD", format!("/v2/team/app/blobs/{base}"), none),
        ("GET", format!("/v2/team/tool/blobs/{base}"), none),
        (
            "GET",
            format!("/v2/team/app/blobs/{}", fx.app.config_digest),
            none,
        ),
        (
            "GET",
            format!("/v2/team/multi/blobs/{}", amd.layer_digests[0]),
            none,
        ),
        (
            "GET",
            format!("/v2/team/app/blobs/{base}"),
            &[("Range", "bytes=0-9")],
        ),
        (
            "GET",
            format!("/v2/team/app/blobs/{base}"),
            &[("Range", "bytes=1000-")],
        ),
        (
            "GET",
            format!("/v2/team/app/blobs/{base}"),
            &[("Range", "bytes=-7")],
        ),
        ("GET", format!("/v2/team/app/blobs/{zero}"), none),
        ("HEAD", format!("/v2/team/app/blobs/{zero}"), none),
        ("GET", format!("/v2/team/nope/blobs/{zero}"), none),
        ("GET", "/v2/team/app/blobs/sha256:bad".into(), none),
        // A manifest is not a blob of the repository.
        (
            "GET",
            format!("/v2/team/app/blobs/{}", fx.app.manifest_digest),
            none,
        ),
        ("GET", "/v2/team/app/tags/list".into(), none),
        ("GET", "/v2/team/nope/tags/list".into(), none),
        ("GET", "/v2/_catalog".into(), none),
        ("GET", "/v2/_catalog?n=1".into(), none),
        ("GET", "/v2/_catalog?n=1&last=team%2Fapp".into(), none),
        ("GET", "/v2/_catalog?n=2&last=team/app".into(), none),
        ("GET", "/v2/_catalog?n=0".into(), none),
        ("GET", "/v2/nothing".into(), none),
    ];
    let fields = [
        "content-type",
        "docker-content-digest",
        "content-length",
        "content-range",
        "link",
        "docker-distribution-api-version",
    ];
    let mut differences = Vec::new();
    let mut found = 0;
    for (method, path, headers) in &table {
        let theirs = http_request(&reg.addr, method, path, None, headers, b"").unwrap();
        let ours = http_request(&s.addr, method, path, None, headers, b"").unwrap();
        let mut diff = Vec::new();
        if theirs.status != ours.status {
            diff.push(format!("status {} vs {}", theirs.status, ours.status));
        }
        for f in fields {
            if header(&theirs, f) != header(&ours, f) {
                diff.push(format!(
                    "{f}: {:?} vs {:?}",
                    header(&theirs, f),
                    header(&ours, f)
                ));
            }
        }
        if theirs.body != ours.body {
            diff.push(format!("body {:?} vs {:?}", theirs.text(), ours.text()));
        }
        if !diff.is_empty() {
            differences.push(format!("{method} {path}: {}", diff.join("; ")));
        }
        if theirs.status == 200 || theirs.status == 206 {
            found += 1;
        }
    }
    // Not a table of agreeing 404s: the registry had what the rows ask for.
    assert_eq!(found, 21, "rows the registry answered with content");
    assert!(
        differences.is_empty(),
        "distribution (left) and gapbundle serve (right) differ:\n{}",
        differences.join("\n")
    );
    // Where distribution 2.8 has no answer, the spec's: tags/list pages with n and
    // last (2.8 ignores both), the referrers endpoint (2.8 predates it).
    let page = s.get("/v2/team/app/tags/list?n=0", &[]);
    assert_eq!(page.text(), "{\"name\":\"team/app\",\"tags\":[]}\n");
    assert!(header(&page, "link").is_none());
    let size = header(
        &s.get(&format!("/v2/team/app/blobs/{base}"), &[]),
        "content-length",
    )
    .unwrap()
    .to_string();
    let unsatisfiable = s.get(
        &format!("/v2/team/app/blobs/{base}"),
        &[("Range", &format!("bytes={size}-"))],
    );
    assert_eq!(unsatisfiable.status, 416);
    assert_eq!(
        header(&unsatisfiable, "content-range"),
        Some(format!("bytes */{size}").as_str())
    );
    let referrers = s.get(
        &format!("/v2/team/app/referrers/{}", fx.app.manifest_digest),
        &[],
    );
    assert_eq!(referrers.status, 200);
    assert_eq!(
        header(&referrers, "content-type"),
        Some("application/vnd.oci.image.index.v1+json")
    );
    let index: Value = serde_json::from_slice(&referrers.body).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["manifests"], serde_json::json!([]));
    let filtered = s.get(
        &format!(
            "/v2/team/app/referrers/{}?artifactType=application%2Fvnd.example",
            fx.app.manifest_digest
        ),
        &[],
    );
    assert_eq!(
        header(&filtered, "oci-filters-applied"),
        Some("artifactType")
    );
    assert_eq!(s.get("/v2/team/nope/referrers/sha256:bad", &[]).status, 404);
    assert_eq!(s.get("/v2/team/app/referrers/sha256:bad", &[]).status, 400);
}

/// A layout image named `registry.example:5000/team/app:1`: a name whose host no
/// test can reach, so only a mirror can give it.
fn mirrored_spec(w: &Work) -> (String, LocalImage) {
    let img = oci_layout_fixture(&w.path("layout"));
    let spec = format!(
        "images:\n  - layout: {}:latest\n    name: registry.example:5000/team/app:1\n",
        img.path.display()
    );
    (spec, img)
}

#[test]
fn containerd_pulls_under_the_original_name_through_a_mirror() {
    let w = Work::new("serve-test");
    let (images, img) = mirrored_spec(&w);
    w.write("bundle.yaml", &format!("name: m\nversion: \"1\"\n{images}"));
    run(&mut w.create("m.gapb"));
    let s = Serving::start(&w, &[w.path("m.gapb")], &[]);
    assert_eq!(
        s.report["mirrors"]["registry.example:5000"][0].as_str(),
        Some(s.url().as_str())
    );
    // What K3s writes from a registries.yaml mirror: hosts.toml for the host.
    let hosts = w.path("certs.d/registry.example:5000");
    fs::create_dir_all(&hosts).unwrap();
    fs::write(
        hosts.join("hosts.toml"),
        format!(
            "server = \"https://registry.example:5000\"\n\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            s.url()
        ),
    )
    .unwrap();
    let ctd = Containerd::start();
    run(ctd
        .ctr()
        .args(["images", "pull", "--hosts-dir"])
        .arg(w.path("certs.d"))
        .arg("registry.example:5000/team/app:1"));
    let listed = ctd.ctr_stdout(&["images", "ls"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with("registry.example:5000/team/app:1 "))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(line.contains(&img.manifest_digest), "{line}");
    // containerd named the upstream host in `ns`, as a mirror sees it.
    let log = s.log();
    assert!(
        log.contains(" /v2/team/app/manifests/1?ns=registry.example%3A5000 200 "),
        "{log}"
    );
}

/// A flake of two paths, `app` referring to `lib`, built by the real Nix.
fn flake() -> String {
    sh_flake(
        r#"    lib = mk "gb-serve-lib" "mkdir -p $out; seq 1 300000 > $out/data";
    app = mk "gb-serve-app" "mkdir -p $out; echo ${lib} > $out/uses";"#,
        "inherit app;",
    )
}

/// Writes the flake, a spec bundling its `app` (and `images`), creates `out`;
/// returns the app's store path and its closure.
fn nix_bundle(w: &Work, images: &str, out: &str) -> (String, Vec<String>) {
    fs::create_dir_all(w.path("flake")).unwrap();
    fs::write(w.path("flake/flake.nix"), flake()).unwrap();
    w.write(
        "bundle.yaml",
        &format!("name: n\nversion: \"1\"\nnix:\n  - installable: ./flake#packages.x86_64-linux.app\n{images}"),
    );
    run(&mut with_nix_config(w.create(out)));
    let app = nix_built(&w.path("flake"), "app");
    let closure = run_stdout(nix("nix-store").args(["-qR", &app]))
        .lines()
        .map(str::to_string)
        .collect();
    (app, closure)
}

/// Nix with a narinfo cache of its own (`XDG_CACHE_HOME`), so that no earlier run's
/// answers for the same URL are used.
fn nix_fresh(program: &str, cache: &Path) -> Command {
    let mut c = nix(program);
    c.env("XDG_CACHE_HOME", cache);
    c
}

/// Whether every one of `paths` is valid in the chroot store at `root`.
fn all_valid(root: &Path, paths: &[String]) -> bool {
    valid_in(root, paths).len() == paths.len()
}

#[test]
fn nix_copies_and_substitutes_trusting_only_the_bundle_key() {
    let w = Work::new("serve-nix");
    let (app, closure) = nix_bundle(&w, "", "n.gapb");
    assert_eq!(closure.len(), 2, "{closure:?}");
    let s = Serving::start(&w, &[w.path("n.gapb")], &[]);
    assert_eq!(s.report["nixPaths"], 2);
    let key = fs::read_to_string(w.public()).unwrap().trim().to_string();
    assert!(
        s.report["nixConf"]
            .as_str()
            .unwrap()
            .contains(&format!("trusted-public-keys = {key}")),
        "{}",
        s.report
    );
    let cache = tempfile::tempdir().unwrap();
    let url = s.url();
    let store = w.path("copied");
    run(nix_fresh("nix", cache.path())
        .args(["copy", "--from", &url, "--to"])
        .arg(format!("local?root={}", store.display()))
        .arg(&app)
        .args(["--option", "trusted-public-keys", &key]));
    assert!(all_valid(&store, &closure));
    // With another key trusted, Nix refuses the paths: the bundle key is what it
    // checks, and nothing else lets them in.
    let other = tempfile::tempdir().unwrap();
    let other_key = nix_key_pair(other.path(), "not-the-signer");
    let refused = nix_fresh("nix", cache.path())
        .args(["copy", "--from", &url, "--to"])
        .arg(format!("local?root={}", w.path("refused").display()))
        .arg(&app)
        .args(["--option", "trusted-public-keys", &other_key])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("lacks a valid signature"),
        "{}",
        stderr(&refused)
    );
    // The server as a substituter of a store that is asked to realise the path.
    let realised = w.path("realised");
    run(nix_fresh("nix-store", cache.path())
        .arg("--store")
        .arg(format!("local?root={}", realised.display()))
        .args(["--realise", &app])
        .args(["--option", "substituters", &url])
        .args(["--option", "trusted-public-keys", &key]));
    assert!(all_valid(&realised, &closure));
    let log = s.log();
    for want in [" GET /nix-cache-info 200 ", ".narinfo 200 ", " GET /nar/"] {
        assert!(log.contains(want), "{want} in\n{log}");
    }
}

#[test]
fn https_with_a_private_ca_for_skopeo_and_nix() {
    let w = Work::new("serve-tls");
    let (images, img) = mirrored_spec(&w);
    let (app, closure) = nix_bundle(&w, &images, "t.gapb");
    let tls = w.path("tls");
    fs::create_dir_all(tls.join("certs")).unwrap();
    private_ca(&tls);
    fs::copy(tls.join("ca.crt"), tls.join("certs/ca.crt")).unwrap();
    let cert = tls.join("srv.crt").display().to_string();
    let key_file = tls.join("srv.key").display().to_string();
    let s = Serving::start(
        &w,
        &[w.path("t.gapb")],
        &["--tls-cert", &cert, "--tls-key", &key_file],
    );
    let url = s.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let inspect = |cert_dir: Option<&Path>| {
        let mut c = skopeo();
        c.args(["inspect", "--raw", "--no-creds"]);
        if let Some(d) = cert_dir {
            c.arg("--cert-dir").arg(d);
        }
        try_run(c.arg(s.docker("team/app:1")))
    };
    let raw = inspect(Some(&tls.join("certs"))).unwrap().stdout;
    assert_eq!(sha256_digest(&raw), img.manifest_digest);
    // Without the CA, the certificate is refused: it is TLS, checked.
    let untrusted = inspect(None).unwrap_err();
    assert!(untrusted.contains("certificate"), "{untrusted}");
    let dir = tempfile::tempdir().unwrap();
    run(skopeo()
        .args(["copy", "--quiet", "--src-cert-dir"])
        .arg(tls.join("certs"))
        .arg(s.docker("team/app:1"))
        .arg(format!("oci:{}:copy", dir.path().display())));
    assert_eq!(
        skopeo_digest(&format!("oci:{}:copy", dir.path().display())),
        img.manifest_digest
    );
    let key = fs::read_to_string(w.public()).unwrap().trim().to_string();
    let cache = tempfile::tempdir().unwrap();
    let store = w.path("copied");
    run(nix_fresh("nix", cache.path())
        .args(["copy", "--from", &url, "--to"])
        .arg(format!("local?root={}", store.display()))
        .arg(&app)
        .args(["--option", "trusted-public-keys", &key])
        // Nix 2.8 has no ssl-cert-file setting yet: the variable is its way.
        .env("NIX_SSL_CERT_FILE", tls.join("ca.crt")));
    assert!(all_valid(&store, &closure));
}

/// Overwrites `len` bytes at `offset` of `file` with their complement, in place.
fn damage(file: &Path, offset: u64, len: usize) {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut buf = vec![0u8; len];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut buf).unwrap();
    for b in &mut buf {
        *b = !*b;
    }
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&buf).unwrap();
    f.sync_all().unwrap();
}

/// Where blob `digest` is in the bundle file.
fn blob_at(bundle: &Path, digest: &str) -> (u64, u64) {
    let head = head_of(bundle);
    let b = head
        .manifest
        .blobs
        .iter()
        .find(|b| b.digest.to_string() == digest)
        .unwrap();
    (head.blob_position(b).unwrap(), b.size)
}

/// A GET that survives being cut short: status, `Content-Length`, and the body
/// bytes that arrived before the server closed the connection.
fn get_cut(addr: &str, path: &str) -> (u16, u64, usize) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (status, length, raw.len() - end - 4)
}

#[test]
fn a_blob_changed_on_disk_while_served_never_reaches_a_client_whole() {
    let Fixture {
        reg: _reg,
        fx,
        w,
        bundle,
    } = fixture("site.gapb", "[linux/amd64]");
    let s = Serving::start(&w, std::slice::from_ref(&bundle), &[]);
    let base = &fx.base_layer_digest;
    let path = format!("/v2/team/app/blobs/{base}");
    let (status, length, got) = get_cut(&s.addr, &path);
    assert_eq!(
        (status, got as u64),
        (200, length),
        "whole before the damage"
    );
    // One byte near the end of the 1 MiB layer changes on disk after start.
    let (offset, size) = blob_at(&bundle, base);
    damage(&bundle, offset + size - 10, 1);
    let (status, length, got) = get_cut(&s.addr, &path);
    assert_eq!((status, length), (200, size));
    assert!((got as u64) < size, "{got} of {size} bytes arrived");
    // From then on it is refused, as a registry that lost it would answer.
    let (status, _, got) = get_cut(&s.addr, &path);
    assert_eq!(status, 404, "refused once found changed ({got} bytes)");
    let again = s.get(&path, &[]);
    assert!(again.text().contains("changed on disk"), "{}", again.text());
    // skopeo, pulling the other image that shares the layer, fails; the log says why.
    let dir = tempfile::tempdir().unwrap();
    let pulled = try_run(
        skopeo()
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(s.docker("team/tool:0.3"))
            .arg(format!("oci:{}:t", dir.path().display())),
    );
    assert!(pulled.is_err());
    let log = s.log();
    assert!(
        log.lines().any(|l| l.starts_with("warning: ")
            && l.contains(base.as_str())
            && l.contains("cut short")),
        "{log}"
    );
    assert!(log.contains("(cut short: a check failed)"), "{log}");
}

#[test]
fn untrusted_or_damaged_bundles_are_not_served() {
    let Fixture { reg, fx, w, bundle } = fixture("site.gapb", "[linux/amd64]");
    let other = Work::new("someone-else");
    let o = serve_output(&w, std::slice::from_ref(&bundle), &other.public());
    let err = fails(&o, 3);
    assert!(err.contains("site.gapb is not served"), "{err}");
    assert!(o.stdout.is_empty());
    // One good bundle and one untrusted: neither is served.
    let theirs = other.path("theirs.gapb");
    run(other
        .create(&theirs)
        .current_dir(w.root())
        .args(["-f"])
        .arg(w.path("bundle.yaml"))
        .args(["--insecure-registry", &reg.addr]));
    let o = serve_output(&w, &[bundle.clone(), theirs], &w.public());
    fails(&o, 3);
    // Damaged before start: refused at start, naming the blob.
    let damaged = w.path("damaged.gapb");
    fs::copy(&bundle, &damaged).unwrap();
    let (offset, _) = blob_at(&damaged, &fx.app.layer_digests[1]);
    damage(&damaged, offset + 3, 1);
    let o = serve_output(&w, &[damaged], &w.public());
    let err = fails(&o, 3);
    assert!(
        err.contains(fx.app.layer_digests[1].trim_start_matches("sha256:")),
        "{err}"
    );
}

#[test]
fn bundles_are_one_view_a_delta_with_its_base_and_volumes() {
    let reg = Registry::start();
    push_versions(&reg);
    let w = Work::new("serve-test");
    w.write("bundle.yaml", &versions_spec(&reg, 1));
    run(w.create("v1.gapb").args(["--insecure-registry", &reg.addr]));
    w.write("bundle.yaml", &versions_spec(&reg, 2));
    run(w
        .create("v2.gapb")
        .args(["--insecure-registry", &reg.addr, "--against"])
        .arg(w.path("v1.gapb")));
    // The delta alone lacks what v1 holds.
    let o = serve_output(&w, &[w.path("v2.gapb")], &w.public());
    let err = fails(&o, 6);
    assert!(
        err.contains("v2.gapb") && err.contains("leaves out"),
        "{err}"
    );
    // With its base, every image of both versions is served, in one repository
    // per path (team/app holds tags 1 and 2).
    let s = Serving::start(&w, &[w.path("v2.gapb"), w.path("v1.gapb")], &[]);
    assert_eq!(
        s.get("/v2/team/app/tags/list", &[]).text(),
        "{\"name\":\"team/app\",\"tags\":[\"1\",\"2\"]}\n"
    );
    for name in ["team/app:1", "team/app:2", "team/tool:1", "team/extra:1"] {
        let dir = tempfile::tempdir().unwrap();
        let want = skopeo_digest(&reg.docker_ref(name));
        assert_eq!(
            copy_out(&s.docker(name), dir.path(), false, &[]),
            want,
            "{name}"
        );
    }
    drop(s);
    // A split bundle is served from its first volume.
    fs::create_dir_all(w.path("vol")).unwrap();
    run(gapbundle()
        .arg("split")
        .arg(w.path("v1.gapb"))
        .args(["--volume-size", "600K", "-o"])
        .arg(w.path("vol/v1.gapb")));
    assert!(w.path("vol/v1.gapb.002").is_file(), "more than one volume");
    let s = Serving::start(&w, &[w.path("vol/v1.gapb.001")], &[]);
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        copy_out(&s.docker("team/app:1"), dir.path(), false, &[]),
        skopeo_digest(&reg.docker_ref("team/app:1"))
    );
}

#[test]
fn one_tag_with_two_digests_is_refused_naming_both() {
    let w = Work::new("serve-test");
    let (images, _) = mirrored_spec(&w);
    w.write("bundle.yaml", &format!("name: a\nversion: \"1\"\n{images}"));
    run(&mut w.create("a.gapb"));
    // Another image under the same name, in another bundle.
    fs::create_dir_all(w.path("images")).unwrap();
    run(tool("cp")
        .arg("-r")
        .arg(repo().join("examples/quickstart/images/hello"))
        .arg(w.path("images/hello")));
    w.write(
        "bundle.yaml",
        "name: b\nversion: \"1\"\nimages:\n  - layout: ./images/hello:latest\n    name: registry.example:5000/team/app:1\n",
    );
    run(&mut w.create("b.gapb"));
    let o = serve_output(&w, &[w.path("a.gapb"), w.path("b.gapb")], &w.public());
    let err = fails(&o, 4);
    assert!(
        err.contains("a.gapb") && err.contains("b.gapb") && err.contains("team/app:1"),
        "{err}"
    );
}

#[test]
fn the_start_report_matches_its_schema() {
    let w = Work::new("serve-test");
    let (images, _) = mirrored_spec(&w);
    w.write("bundle.yaml", &format!("name: a\nversion: \"1\"\n{images}"));
    run(&mut w.create("a.gapb"));
    let s = Serving::start(&w, &[w.path("a.gapb")], &[]);
    assert_report(&s.report, "serve");
}

#[test]
fn referrers_lists_what_names_the_image_as_its_subject() {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    // An SBOM-like artifact whose subject is team/app:1.2, pushed as an OCI client
    // pushes one (distribution 2.8 stores the manifest as sent).
    let config = reg.push_blob("team/app", b"{}");
    let layer = reg.push_blob("team/app", b"an sbom\n");
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sbom.v1","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"text/plain","digest":"{layer}","size":8}}],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{}}},"annotations":{{"org.example.kind":"sbom"}}}}"#,
        fx.app.manifest_digest,
        skopeo_raw(&fx.app.docker_ref(), None).len()
    );
    reg.put_manifest(
        "team/app",
        "sbom",
        "application/vnd.oci.image.manifest.v1+json",
        manifest.as_bytes(),
    );
    let w = Work::new("serve-test");
    w.write(
        "bundle.yaml",
        &format!(
            "name: r\nversion: \"1\"\nimages:\n  - ref: {}\n  - ref: {}\n",
            reg.reference("team/app:1.2"),
            reg.reference("team/app:sbom")
        ),
    );
    run(w.create("r.gapb").args(["--insecure-registry", &reg.addr]));
    let s = Serving::start(&w, &[w.path("r.gapb")], &[]);
    let path = format!("/v2/team/app/referrers/{}", fx.app.manifest_digest);
    let got = s.get(&path, &[]);
    assert_eq!(got.status, 200);
    let index: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(
        index["manifests"],
        serde_json::json!([{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": manifest.len(),
            "digest": sha256_digest(manifest.as_bytes()),
            "artifactType": "application/vnd.example.sbom.v1",
            "annotations": {"org.example.kind": "sbom"},
        }])
    );
    let kept = s.get(
        &format!("{path}?artifactType=application/vnd.example.sbom.v1"),
        &[],
    );
    let index: Value = serde_json::from_slice(&kept.body).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(header(&kept, "oci-filters-applied"), Some("artifactType"));
    let other = s.get(&format!("{path}?artifactType=application/other"), &[]);
    let index: Value = serde_json::from_slice(&other.body).unwrap();
    assert_eq!(index["manifests"], serde_json::json!([]));
    // Nothing names another manifest: an empty index, not a 404.
    let none = s.get(
        &format!("/v2/team/app/referrers/{}", fx.tool.manifest_digest),
        &[],
    );
    assert_eq!(none.status, 200);
}
