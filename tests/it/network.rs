//! The online side in a real network (issue 12): a CNCF distribution registry as the
//! company's mirror on 127.0.0.1 (plain HTTP; HTTPS with a private CA made here with
//! openssl, also trusted through `SSL_CERT_FILE`; HTTPS that wants a client
//! certificate), images pushed under rewritten paths, K3s's `registries.yaml`,
//! Docker credential helpers (one that answers, one that fails), TLS failures
//! (unknown issuer, name mismatch, expired), and a real tinyproxy that all registry
//! traffic goes through. A chart and a kustomize overlay name docker.io (short and
//! long), ghcr.io and quay.io; the bundle is imported into a real containerd and a
//! staged archive, and both carry the names kubelet asks CRI for.

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::*;

// ---------------------------------------------------------------------------
// A private CA, and registries that serve with its certificates
// ---------------------------------------------------------------------------

/// An openssl-made CA in a temporary folder, and the certificates it issues.
struct Pki {
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=gapbundle-network-test-ca",
        ]);
        fs::write(pki.path("index.txt"), "").unwrap();
        fs::write(pki.path("serial"), "01\n").unwrap();
        fs::write(
            pki.path("ca.cnf"),
            "[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\nserial=serial\ndefault_md=sha256\npolicy=p\nunique_subject=no\n[p]\ncommonName=supplied\n",
        )
        .unwrap();
        pki
    }

    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn openssl(&self, args: &[&str]) {
        run(tool("openssl").current_dir(self.dir.path()).args(args));
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// A certificate `name.crt`/`name.key` for `san` (`IP:127.0.0.1`), for a server
    /// or a client; `expired` makes one that was valid for a day in 2020 (`openssl
    /// ca -startdate/-enddate`).
    fn issue(&self, name: &str, san: &str, client: bool, expired: bool) -> (PathBuf, PathBuf) {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        let usage = if client { "clientAuth" } else { "serverAuth" };
        let ext = format!("{name}.ext");
        fs::write(
            self.path(&ext),
            format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n"),
        )
        .unwrap();
        let mut args = vec![
            "ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "ca.crt", "-keyfile",
            "ca.key", "-in", &csr, "-out", &crt, "-extfile", &ext,
        ];
        if expired {
            args.extend([
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200102000000Z",
            ]);
        } else {
            args.extend(["-days", "2"]);
        }
        self.openssl(&args);
        (self.path(&crt), self.path(&key))
    }
}

/// How a [`Distribution`] serves.
struct Tls {
    cert: PathBuf,
    key: PathBuf,
    /// `http.tls.clientcas`: a client certificate from this CA is required.
    client_ca: Option<PathBuf>,
}

/// A real `docker-registry` on a free 127.0.0.1 port over the storage folder
/// `data` (several may serve the same storage: one content, several ways in).
struct Distribution {
    addr: String,
    _dir: TempDir,
    child: Child,
}

impl Distribution {
    fn start(data: &Path, tls: Option<&Tls>) -> Distribution {
        let bin = require_tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n  secret: network-test\n",
            data.display()
        );
        if let Some(t) = tls {
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                t.cert.display(),
                t.key.display()
            ));
            if let Some(ca) = &t.client_ca {
                cfg.push_str(&format!("    clientcas:\n      - {}\n", ca.display()));
            }
        }
        fs::write(dir.path().join("config.yml"), cfg).unwrap();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(&addr).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("docker-registry on {addr} exited at start ({status})");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry on {addr} did not start"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Distribution {
            addr,
            _dir: dir,
            child,
        }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies fixture image `tag` to `dest` (`HOST/PATH:TAG`) over plain HTTP.
fn push(tag: &str, dest: &str) {
    run(skopeo()
        .args([
            "copy",
            "--quiet",
            "--all",
            "--dest-tls-verify=false",
            "--dest-no-creds",
        ])
        .arg(format!("oci:{}:{tag}", fixture_layout().display()))
        .arg(format!("docker://{dest}")));
}

/// `gapbundle create` in `w`, isolated from this machine's credentials and proxies:
/// an empty Docker config, no Podman auth file, no proxy variables.
fn create(w: &Work, out: &str) -> Command {
    let mut c = w.create(out);
    fs::create_dir_all(w.path("docker-config")).unwrap();
    c.env("DOCKER_CONFIG", w.path("docker-config"))
        .env("XDG_RUNTIME_DIR", w.path("run"))
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env("HELM_REGISTRY_CONFIG", w.path("helm-registry.json"));
    for v in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
    ] {
        c.env_remove(v);
    }
    c
}

fn text(o: &Output) -> String {
    output_text(o)
}

// ---------------------------------------------------------------------------
// The mirror with rewritten paths, a chart and an overlay, containerd
// ---------------------------------------------------------------------------

/// The images the chart and the overlay name, and where the mirror keeps each
/// (after the registries file's rewrites): (as written, CRI name, mirror path).
const MIRRORED: [(&str, &str, &str); 5] = [
    (
        "redis:8",
        "docker.io/library/redis:8",
        "hub/library/redis:8",
    ),
    (
        "docker.io/bitnami/kubectl:1.30",
        "docker.io/bitnami/kubectl:1.30",
        "hub/bitnami/kubectl:1.30",
    ),
    (
        "nginx",
        "docker.io/library/nginx:latest",
        "hub/library/nginx:latest",
    ),
    (
        "ghcr.io/stefanprodan/podinfo:6.14.1",
        "ghcr.io/stefanprodan/podinfo:6.14.1",
        "ghcr/stefanprodan/podinfo:6.14.1",
    ),
    (
        "quay.io/prometheus/node-exporter:v1.8.2",
        "quay.io/prometheus/node-exporter:v1.8.2",
        "quay-cache/node-exporter:v1.8.2",
    ),
];

/// A spec whose chart (an OCI chart on ghcr.io) and overlay name the images of
/// [`MIRRORED`]; the chart itself is pushed to the mirror under `ghcr/…`.
fn corporate_spec(w: &Work, mirror: &str) {
    w.write(
        "chart/web/Chart.yaml",
        "apiVersion: v2\nname: web\nversion: 0.1.0\n",
    );
    w.write(
        "chart/web/templates/deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      initContainers:\n        - {name: tools, image: \"docker.io/bitnami/kubectl:1.30\"}\n      containers:\n        - {name: cache, image: \"redis:8\"}\n        - {name: web, image: \"ghcr.io/stefanprodan/podinfo:6.14.1\"}\n",
    );
    run(tool("helm")
        .arg("package")
        .arg(w.path("chart/web"))
        .arg("-d")
        .arg(w.path("chart"))
        .env("HELM_REGISTRY_CONFIG", w.path("helm-registry.json")));
    run(tool("helm")
        .arg("push")
        .arg(w.path("chart/web-0.1.0.tgz"))
        .arg(format!("oci://{mirror}/ghcr/gapbundle-test/charts"))
        .arg("--plain-http")
        .env("HELM_REGISTRY_CONFIG", w.path("helm-registry.json")));
    overlay(w);
    w.write(
        "bundle.yaml",
        "name: corp\nversion: \"1\"\nplatforms: [linux/amd64]\ncharts:\n  - oci: oci://ghcr.io/gapbundle-test/charts/web\n    version: 0.1.0\nkustomize:\n  - path: ./overlay\n",
    );
}

/// An overlay whose images name quay.io, Docker Hub without a tag, and Docker
/// Hub's long form of the chart's short `redis:8`.
fn overlay(w: &Work) {
    w.write(
        "overlay/kustomization.yaml",
        "resources: [ds.yaml]\nnamespace: edge\n",
    );
    w.write(
        "overlay/ds.yaml",
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: node}\nspec:\n  selector: {matchLabels: {app: node}}\n  template:\n    metadata: {labels: {app: node}}\n    spec:\n      containers:\n        - {name: exporter, image: \"quay.io/prometheus/node-exporter:v1.8.2\"}\n        - {name: front, image: nginx}\n        - {name: cache, image: \"docker.io/redis:8\"}\n",
    );
}

/// K3s's registries.yaml for a mirror at `endpoint` (`http://HOST:PORT` or
/// `https://…`) holding every registry under its own prefix; `extra` is appended
/// (a `configs:` section).
fn registries_yaml(endpoint: &str, extra: &str) -> String {
    format!(
        "mirrors:\n  docker.io:\n    endpoint: [\"{endpoint}\"]\n    rewrite:\n      \"^(.*)$\": \"hub/$1\"\n  ghcr.io:\n    endpoint: [\"{endpoint}/v2/ghcr\"]\n  quay.io:\n    endpoint: [\"{endpoint}\"]\n    rewrite:\n      \"^prometheus/(.*)$\": \"quay-cache/$1\"\n{extra}"
    )
}

fn push_mirrored(mirror: &str) {
    for (i, (_, _, path)) in MIRRORED.iter().enumerate() {
        let tag = [tags::APP, tags::TOOL, tags::SMALL, tags::APP, tags::TOOL][i];
        push(tag, &format!("{mirror}/{path}"));
    }
}

/// The image names `ctr -n k8s.io images ls -q` lists.
fn ctr_names(ctd: &Containerd) -> Vec<String> {
    ctd.ctr_stdout(&["-n", Containerd::NAMESPACE, "images", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn assert_no_mirror_host(bytes: &[u8], mirror: &str, what: &str) {
    let port = mirror.rsplit(':').next().unwrap();
    for needle in [
        mirror.to_string(),
        format!("127.0.0.1:{port}"),
        "hub/library".into(),
        "quay-cache".into(),
        "ghcr/".into(),
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{what} holds the mirror's `{needle}`"
        );
    }
}

#[test]
fn a_chart_and_an_overlay_come_through_a_mirror_with_rewrites_and_keep_their_upstream_names() {
    require_tool("helm");
    require_tool("kubectl");
    let data = tempfile::tempdir().unwrap();
    let mirror = Distribution::start(data.path(), None);
    push_mirrored(&mirror.addr);
    let w = Work::new("corp");
    corporate_spec(&w, &mirror.addr);
    w.write(
        "registries.yaml",
        &registries_yaml(&format!("http://{}", mirror.addr), ""),
    );

    // Without the registries file, create goes upstream (docker.io, …), which this
    // network cannot reach: every image is reported at once, each with the
    // documents that want it. (A chart comes first, so give the chart locally.)
    let upstream = Work::new("corp");
    overlay(&upstream);
    upstream.write(
        "bundle.yaml",
        "name: corp\nversion: \"1\"\nkustomize:\n  - path: ./overlay\n",
    );
    let o = create(&upstream, "upstream.gapb")
        .args(["--retries", "1"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_ne!(code(&o), 0, "{}", text(&o));
    assert!(e.contains("3 images cannot be resolved"), "{e}");
    for name in [
        "docker.io/redis:8",
        "nginx",
        "quay.io/prometheus/node-exporter:v1.8.2",
    ] {
        assert!(
            e.contains(&format!("{name} is wanted by kustomize:")),
            "{name}: {e}"
        );
    }
    assert!(
        !e.contains("--insecure-registry"),
        "no DNS failure suggests it: {e}"
    );

    // Through the mirror (plain HTTP, from its http:// endpoint, no
    // --insecure-registry), the upstream registries never asked.
    let o = ok(create(&w, "corp.gapb")
        .arg("--registries")
        .arg(w.path("registries.yaml"))
        .arg("--disable-default-registry-endpoint")
        .arg("--json")
        .output()
        .unwrap());
    let report = cli_report(&o, "create");
    let mut names: Vec<String> = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ref"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    let mut want: Vec<String> = MIRRORED.iter().map(|m| m.1.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "{report}");
    let bundle = fs::read(w.path("corp.gapb")).unwrap();
    assert_no_mirror_host(&bundle, &mirror.addr, "the bundle");
    assert_no_mirror_host(
        &fs::read(w.path("bundle.lock")).unwrap(),
        &mirror.addr,
        "the lock",
    );
    let inspect = w.inspect("corp.gapb");
    assert!(
        inspect
            .to_string()
            .contains("oci://ghcr.io/gapbundle-test/charts/web:0.1.0"),
        "the chart keeps its upstream name: {inspect}"
    );

    // Into a real containerd: the names kubelet asks CRI for.
    let ctd = Containerd::start();
    ok(w.import(&w.path("corp.gapb"))
        .arg("--containerd")
        .arg(ctd.socket())
        .output()
        .unwrap());
    let listed = ctr_names(&ctd);
    for (_, cri, _) in MIRRORED {
        assert!(
            listed.iter().any(|l| l == cri),
            "{cri} not in ctr images ls: {listed:?}"
        );
    }
    assert!(
        listed.iter().all(|l| !l.contains(&mirror.addr)),
        "{listed:?}"
    );

    // The staged archive K3s imports at start names them the same way.
    ok(w.import(&w.path("corp.gapb"))
        .arg("--staged")
        .output()
        .unwrap());
    let staged = w.k3s_root().join("agent/images/corp.tar");
    let index = run_stdout(tool("tar").arg("-xOf").arg(&staged).arg("index.json"));
    let index: Value = serde_json::from_str(&index).unwrap();
    let mut staged_names: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["io.containerd.image.name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    staged_names.sort();
    assert_eq!(staged_names, want, "{index}");
}

#[test]
fn locked_through_another_mirror_over_tls_gives_the_same_bundle_and_tls_failures_say_why() {
    require_tool("helm");
    require_tool("kubectl");
    let pki = Pki::new();
    let (crt, key) = pki.issue("mirror", "IP:127.0.0.1", false, false);
    let data = tempfile::tempdir().unwrap();
    let plain = Distribution::start(data.path(), None);
    push_mirrored(&plain.addr);
    let w = Work::new("corp");
    corporate_spec(&w, &plain.addr);
    w.write(
        "plain.yaml",
        &registries_yaml(&format!("http://{}", plain.addr), ""),
    );
    ok(create(&w, "a.gapb")
        .env("SOURCE_DATE_EPOCH", "1790000000")
        .arg("--registries")
        .arg(w.path("plain.yaml"))
        .arg("--disable-default-registry-endpoint")
        .output()
        .unwrap());

    // The same content served over HTTPS by a certificate from the private CA.
    let tls = Distribution::start(
        data.path(),
        Some(&Tls {
            cert: crt,
            key,
            client_ca: None,
        }),
    );
    // ghcr.io (the chart) stays on the plain endpoint: Helm speaks plain HTTP to
    // 127.0.0.1 whatever it is told, so TLS to it cannot be shown with Helm here.
    let https = registries_yaml(&format!("https://{}", tls.addr), "").replace(
        &format!("https://{}/v2/ghcr", tls.addr),
        &format!("http://{}/v2/ghcr", plain.addr),
    );
    w.write("tls.yaml", &https);
    let locked = |extra: &dyn Fn(&mut Command), out: &str| {
        let mut c = create(&w, out);
        c.env("SOURCE_DATE_EPOCH", "1790000000")
            .arg("--registries")
            .arg(w.path("tls.yaml"))
            .args(["--disable-default-registry-endpoint", "--retries", "1"])
            .arg("--cache")
            .arg(w.path(format!("cache-{out}")));
        if !out.starts_with("t-") {
            c.arg("--locked");
        }
        extra(&mut c);
        c.output().unwrap()
    };

    // (Helm falls back to plain HTTP for 127.0.0.1 when TLS fails, so the chart's
    // own TLS failures cannot be shown here; images' are, below.)
    // The CA through SSL_CERT_FILE: the same bundle, byte for byte.
    let o = locked(
        &|c| {
            c.env("SSL_CERT_FILE", pki.ca());
        },
        "b.gapb",
    );
    ok(o);
    assert_eq!(
        fs::read(w.path("a.gapb")).unwrap(),
        fs::read(w.path("b.gapb")).unwrap(),
        "--locked through another mirror gives the same bundle"
    );
    // ... and through --registry-ca, and configs.<host>.tls.ca_file.
    ok(locked(
        &|c| {
            c.arg("--registry-ca").arg(pki.ca());
        },
        "c.gapb",
    ));
    w.write(
        "tls.yaml",
        &format!(
            "{https}configs:\n  \"{}\":\n    tls:\n      ca_file: {}\n",
            tls.addr,
            pki.ca().display()
        ),
    );
    ok(locked(&|_| {}, "d.gapb"));
    assert_eq!(
        fs::read(w.path("a.gapb")).unwrap(),
        fs::read(w.path("d.gapb")).unwrap()
    );

    // Images only (gapbundle's own client, not Helm): an unknown issuer, a
    // certificate for another name, and an expired one.
    w.write(
        "bundle.yaml",
        "name: t\nversion: \"1\"\nimages:\n  - ref: redis:8\n",
    );
    w.write("tls.yaml", &https);
    let e = fails(&locked(&|_| {}, "t-unknown.gapb"), 5);
    assert!(
        e.contains(&tls.addr) && e.contains("a CA this machine does not trust"),
        "{e}"
    );
    assert!(
        e.contains("--registry-ca") && e.contains("SSL_CERT_FILE"),
        "{e}"
    );
    for (name, san, expired, want) in [
        (
            "wrong-name",
            "DNS:elsewhere.example",
            false,
            "not valid for the name",
        ),
        ("expired", "IP:127.0.0.1", true, "has expired"),
    ] {
        let (crt, key) = pki.issue(name, san, false, expired);
        let bad = Distribution::start(
            data.path(),
            Some(&Tls {
                cert: crt,
                key,
                client_ca: None,
            }),
        );
        w.write(
            "tls.yaml",
            &registries_yaml(&format!("https://{}", bad.addr), ""),
        );
        let o = locked(
            &|c| {
                c.arg("--registry-ca").arg(pki.ca());
            },
            &format!("t-{name}.gapb"),
        );
        let e = fails(&o, 5);
        assert!(e.contains(&bad.addr), "{name}: {e}");
        assert!(e.contains(want), "{name}: {e}");
        assert!(!e.contains("--insecure-registry"), "{name}: {e}");
    }
}

#[test]
fn a_mirror_that_wants_a_client_certificate_gets_one_from_the_flags_or_the_file() {
    let pki = Pki::new();
    let (crt, key) = pki.issue("mtls", "IP:127.0.0.1", false, false);
    let (client_crt, client_key) = pki.issue("client", "DNS:client.example", true, false);
    let data = tempfile::tempdir().unwrap();
    let plain = Distribution::start(data.path(), None);
    push(tags::APP, &format!("{}/hub/library/redis:8", plain.addr));
    let mtls = Distribution::start(
        data.path(),
        Some(&Tls {
            cert: crt,
            key,
            client_ca: Some(pki.ca()),
        }),
    );
    let w = Work::new("corp");
    w.write(
        "bundle.yaml",
        "name: m\nversion: \"1\"\nimages:\n  - ref: redis:8\n",
    );
    let endpoint = format!("https://{}", mtls.addr);
    w.write("registries.yaml", &registries_yaml(&endpoint, ""));
    let with = |extra: &dyn Fn(&mut Command)| {
        let mut c = create(&w, "m.gapb");
        c.arg("--registries")
            .arg(w.path("registries.yaml"))
            .args(["--disable-default-registry-endpoint", "--retries", "1"])
            .arg("--registry-ca")
            .arg(pki.ca());
        extra(&mut c);
        c.output().unwrap()
    };
    let e = fails(&with(&|_| {}), 5);
    assert!(e.contains(&mtls.addr), "{e}");
    assert!(
        e.contains("client certificate") && e.contains("--registry-cert"),
        "{e}"
    );
    ok(with(&|c| {
        c.arg("--registry-cert")
            .arg(&client_crt)
            .arg("--registry-key")
            .arg(&client_key);
    }));
    w.write(
        "registries.yaml",
        &registries_yaml(
            &endpoint,
            &format!(
                "configs:\n  \"{}\":\n    tls:\n      cert_file: {}\n      key_file: {}\n",
                mtls.addr,
                client_crt.display(),
                client_key.display()
            ),
        ),
    );
    let o = ok(with(&|_| {}));
    let _ = o;
    assert_eq!(
        w.inspect("m.gapb")["images"][0]["ref"],
        "docker.io/library/redis:8"
    );
}

// ---------------------------------------------------------------------------
// Credential helpers
// ---------------------------------------------------------------------------

fn helper(dir: &Path, name: &str, script: &str) {
    let p = dir.join(format!("docker-credential-{name}"));
    fs::write(&p, format!("#!/bin/sh\n{script}")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn docker_credential_helpers_run_as_docker_runs_them() {
    let reg = Registry::start_with_htpasswd("ci", "hunter22");
    push_fixture_images(&reg, reg.creds());
    let w = Work::new("corp");
    w.write(
        "bundle.yaml",
        &format!(
            "name: h\nversion: \"1\"\nimages:\n  - ref: {}\n",
            reg.reference("team/app:1.2")
        ),
    );
    let bin = w.path("bin");
    fs::create_dir_all(&bin).unwrap();
    // The protocol: `get`, the server on stdin, JSON on stdout.
    helper(
        &bin,
        "gbtest",
        &format!(
            "[ \"$1\" = get ] || exit 3\nread -r server\necho \"$server\" > \"{log}\"\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"ci\",\"Secret\":\"hunter22\"}}' \"$server\"\n",
            log = w.path("helper-asked").display()
        ),
    );
    helper(
        &bin,
        "gblocked",
        "echo 'the keychain is locked: unlock it first' >&2\nexit 1\n",
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let with_config = |config: String| {
        fs::create_dir_all(w.path("docker-config")).unwrap();
        fs::write(w.path("docker-config/config.json"), config).unwrap();
        create(&w, "h.gapb")
            .env("PATH", &path)
            .arg("--insecure-registry")
            .arg(&reg.addr)
            .args(["--retries", "1"])
            .output()
            .unwrap()
    };
    ok(with_config(format!(
        "{{\"credHelpers\":{{\"{}\":\"gbtest\"}}}}",
        reg.addr
    )));
    let asked = fs::read_to_string(w.path("helper-asked")).unwrap();
    assert!(
        asked.contains(&reg.addr),
        "the helper got the server: {asked}"
    );
    // credsStore: the helper for every registry without one of its own.
    fs::remove_file(w.path("helper-asked")).unwrap();
    // (Nothing cached or pinned: the registry is asked again.)
    fs::remove_dir_all(w.path("cache")).unwrap();
    fs::remove_file(w.path("bundle.lock")).unwrap();
    ok(with_config("{\"credsStore\":\"gbtest\"}".into()));
    assert!(w.path("helper-asked").exists());
    fs::remove_dir_all(w.path("cache")).unwrap();
    fs::remove_file(w.path("bundle.lock")).unwrap();
    // A helper that fails: its name, its stderr, and no "retry later".
    let o = with_config(format!(
        "{{\"credHelpers\":{{\"{}\":\"gblocked\"}}}}",
        reg.addr
    ));
    assert_ne!(code(&o), 0);
    let e = stderr(&o);
    assert!(e.contains("docker-credential-gblocked"), "{e}");
    assert!(e.contains("the keychain is locked"), "{e}");
    assert!(!e.contains("hunter22"), "{e}");
}

// ---------------------------------------------------------------------------
// A real proxy, failures all at once, platforms, the CI example
// ---------------------------------------------------------------------------

#[test]
fn all_registry_traffic_goes_through_the_proxy_in_http_proxy() {
    let proxy = Tinyproxy::start();
    let data = tempfile::tempdir().unwrap();
    let mirror = Distribution::start(data.path(), None);
    push(tags::APP, &format!("{}/hub/library/redis:8", mirror.addr));
    let w = Work::new("corp");
    w.write(
        "bundle.yaml",
        "name: p\nversion: \"1\"\nimages:\n  - ref: docker.io/redis:8\n",
    );
    w.write(
        "registries.yaml",
        &registries_yaml(&format!("http://{}", mirror.addr), ""),
    );
    ok(create(&w, "p.gapb")
        .env("HTTP_PROXY", &proxy.url)
        .arg("--registries")
        .arg(w.path("registries.yaml"))
        .arg("--disable-default-registry-endpoint")
        .output()
        .unwrap());
    let log = proxy.log();
    let head = w.inspect("p.gapb");
    let image = &head["images"][0];
    assert_eq!(image["ref"], "docker.io/library/redis:8", "{head}");
    for path in [
        "/v2/hub/library/redis/manifests/8",
        "/v2/hub/library/redis/blobs/sha256:",
    ] {
        assert!(
            log.contains(&format!("http://{}{path}", mirror.addr)),
            "tinyproxy's log shows {path}:\n{log}"
        );
    }

    // A proxy that is down is named, with the variable that set it.
    drop(proxy);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let o = create(&w, "q.gapb")
        .env("HTTP_PROXY", &dead)
        .arg("--registries")
        .arg(w.path("registries.yaml"))
        .args([
            "--disable-default-registry-endpoint",
            "--update",
            "--retries",
            "1",
        ])
        .output()
        .unwrap();
    let e = fails(&o, 5);
    assert!(e.contains(&dead) && e.contains("HTTP_PROXY"), "{e}");
    assert!(!e.contains("--insecure-registry"), "{e}");
}

#[test]
fn several_missing_images_are_all_reported_with_the_documents_that_want_them() {
    let reg = Registry::start();
    push_fixture_images(&reg, None);
    let w = Work::new("corp");
    w.write(
        "extra/a.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: a}}\nspec:\n  containers:\n    - {{name: a, image: \"{}\"}}\n    - {{name: b, image: \"{}\"}}\n",
            reg.reference("team/gone:1"),
            reg.reference("team/app:1.2")
        ),
    );
    w.write(
        "extra/b.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: b}}\nspec:\n  containers:\n    - {{name: c, image: \"{}\"}}\n",
            reg.reference("team/missing:2")
        ),
    );
    w.write(
        "bundle.yaml",
        "name: m\nversion: \"1\"\nmanifests:\n  - path: ./extra\n",
    );
    let o = create(&w, "m.gapb")
        .arg("--insecure-registry")
        .arg(&reg.addr)
        .output()
        .unwrap();
    let e = fails(&o, 5);
    assert!(e.contains("2 images cannot be resolved"), "{e}");
    for (image, file) in [("team/gone:1", "a.yaml"), ("team/missing:2", "b.yaml")] {
        let wanted = format!("{} is wanted by manifests:", reg.reference(image));
        let at = e.find(&wanted).unwrap_or_else(|| panic!("{wanted}: {e}"));
        assert!(
            e[at..].lines().next().unwrap().contains(file),
            "{file}: {e}"
        );
    }

    // A single-platform image under platforms it does not offer.
    w.write(
        "bundle.yaml",
        &format!(
            "name: m\nversion: \"1\"\nplatforms: [linux/arm64]\nimages:\n  - ref: {}\n",
            reg.reference("team/app:1.2")
        ),
    );
    let o = create(&w, "m.gapb")
        .arg("--insecure-registry")
        .arg(&reg.addr)
        .output()
        .unwrap();
    let e = stderr(&o);
    assert_ne!(code(&o), 0, "{e}");
    assert!(e.contains(&reg.reference("team/app:1.2")), "{e}");
    assert!(e.contains("published for linux/amd64 only"), "{e}");
    // And a platform that is not one, with its line and column.
    w.write(
        "bundle.yaml",
        "name: m\nversion: \"1\"\nplatforms: [linux/amd46]\n",
    );
    let e = fails(&create(&w, "m.gapb").output().unwrap(), 4);
    assert!(
        e.contains("bundle.yaml:3:") && e.contains("`amd46` is not an architecture"),
        "{e}"
    );

    // A registries file with a typo is an input error (exit 4) naming its place,
    // not a silent pull from upstream.
    w.write(
        "bundle.yaml",
        "name: m\nversion: \"1\"\nimages:\n  - ref: redis:8\n",
    );
    w.write(
        "registries.yaml",
        "mirors:\n  docker.io:\n    endpoint: [\"http://x\"]\n",
    );
    let e = fails(
        &create(&w, "m.gapb")
            .arg("--registries")
            .arg(w.path("registries.yaml"))
            .output()
            .unwrap(),
        4,
    );
    assert!(
        e.contains("registries.yaml:1:") && e.contains("mirors"),
        "{e}"
    );
}

#[test]
fn the_ci_nightly_example_passes_create_flags_through() {
    require_tool("jq");
    let reg = Registry::start();
    push_fixture_images(&reg, None);
    let w = Work::new("release");
    w.write(
        "bundle.yaml",
        &format!(
            "name: nightly\nversion: \"1\"\nimages:\n  - ref: {}\n",
            reg.reference("team/app:1.2")
        ),
    );
    ok(create(&w, "first.gapb")
        .arg("--insecure-registry")
        .arg(&reg.addr)
        .output()
        .unwrap());
    let nightly = |out: &str, flags: &[&str]| {
        let mut c = tool("bash");
        c.arg(repo().join("examples/ci-nightly/nightly.sh"))
            .args(flags)
            .env("SPEC", w.path("bundle.yaml"))
            .env("KEY", w.secret())
            .env("TRUST", w.public())
            .env("CACHE", w.path(format!("cache-{out}")))
            .env("OUT", w.path(out))
            .env("GAPBUNDLE", gapbundle_bin())
            .env("SOURCE_DATE_EPOCH", "1795000000")
            .env("DOCKER_CONFIG", w.path("docker-config"))
            .env_remove("GITHUB_STEP_SUMMARY");
        c.output().unwrap()
    };
    // A plain-HTTP registry without the flag: a configuration error, not "retry later".
    let o = nightly("out1", &["--retries", "1"]);
    assert_eq!(code(&o), 5, "{}", text(&o));
    let e = stderr(&o);
    assert!(e.contains("--insecure-registry"), "{e}");
    assert!(!e.contains("retry later"), "{e}");
    // With it, passed through.
    let o = nightly("out2", &["--insecure-registry", &reg.addr]);
    assert!(o.status.success(), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        report["images"][0],
        reg.reference("team/app:1.2"),
        "{report}"
    );
}
