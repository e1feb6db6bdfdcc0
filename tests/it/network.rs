//! The online side in a real network (issue 12): a CNCF distribution registry as the
//! company's mirror on 127.0.0.1 (plain HTTP; HTTPS with a private CA made here with
//! openssl, also trusted through `SSL_CERT_FILE`; HTTPS that wants a client
//! certificate), images pushed under rewritten paths, K3s's `registries.yaml`,
//! Docker credential helpers (one that answers, one that fails), TLS failures
//! (unknown issuer, name mismatch, expired), and a real tinyproxy that all registry
//! traffic goes through. A chart and a kustomize overlay name docker.io (short and
//! long), ghcr.io and quay.io; the bundle is imported into a real containerd and a
//! staged archive, and both carry the names kubelet asks CRI for. Helm itself is
//! shown over TLS (private CA, password, client certificate) and through the proxy
//! with mirrors named `registry.test` (Helm treats 127.0.0.1 as plain HTTP and Go
//! never proxies it), watched by a `helm` wrapper that records what it is handed.

use std::collections::BTreeMap;
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
        Distribution::start_with(data, tls, None)
    }

    /// [`Distribution::start`], and with `htpasswd` (user, password) a registry
    /// that wants that password (a bcrypt entry made by `htpasswd -Bbn`).
    fn start_with(data: &Path, tls: Option<&Tls>, htpasswd: Option<(&str, &str)>) -> Distribution {
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
        if let Some((user, pass)) = htpasswd {
            let entry = run_stdout(tool("htpasswd").args(["-Bbn", user, pass]));
            let file = dir.path().join("htpasswd");
            fs::write(&file, entry.trim_end().to_string() + "\n").unwrap();
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: network-test\n    path: {}\n",
                file.display()
            ));
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

impl Distribution {
    /// `registry.test:PORT`: this registry by a name that Helm and Go do not
    /// treat as loopback (see `support::hosts`).
    fn named(&self) -> String {
        self.addr.replacen("127.0.0.1", loopback_name(), 1)
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
    // 127.0.0.1 whatever it is told (the chart over TLS is shown below, with the
    // mirror named registry.test).
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
    // own TLS failures are shown with a named mirror, further down; images' below.)
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
// Helm through the registries file: TLS, client certificates, passwords, proxies
// ---------------------------------------------------------------------------

/// A `helm` first on PATH that keeps, for every run, its arguments, its whole
/// environment (NUL-separated) and the certificates in the first folder of its
/// `SSL_CERT_DIR` (a throw-away folder, gone once create is done), then execs the
/// real Helm: what gapbundle hands Helm, seen from outside.
struct HelmSpy {
    bin: PathBuf,
    log: PathBuf,
}

/// One run of Helm, as [`HelmSpy`] saw it.
#[derive(Debug)]
struct HelmRun {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    /// The files of the first `SSL_CERT_DIR` folder, concatenated.
    cas: String,
}

impl HelmSpy {
    fn new(w: &Work) -> HelmSpy {
        let real = require_tool("helm");
        let bin = w.path("spy-bin");
        let log = w.path("spy-log");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&log).unwrap();
        let script = bin.join("helm");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\nf='{log}'/$(date +%s%N)-$$\nprintf '%s\\0' \"$@\" > \"$f.args\"\nenv -0 > \"$f.env\"\n: > \"$f.cas\"\n[ -n \"$SSL_CERT_DIR\" ] && cat \"${{SSL_CERT_DIR%%:*}}\"/* > \"$f.cas\" 2>/dev/null\nexec '{real}' \"$@\"\n",
                log = log.display(),
                real = real.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        HelmSpy { bin, log }
    }

    /// PATH with the spy first.
    fn path(&self) -> String {
        format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap())
    }

    /// Every run so far, oldest first; forgets them.
    fn take(&self) -> Vec<HelmRun> {
        let mut names: Vec<PathBuf> = fs::read_dir(&self.log)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "args"))
            .collect();
        names.sort();
        let split = |p: &Path| -> Vec<String> {
            let b = fs::read(p).unwrap();
            fs::remove_file(p).unwrap();
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        names
            .iter()
            .map(|args| HelmRun {
                args: split(args),
                env: split(&args.with_extension("env"))
                    .into_iter()
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k.to_string(), v.to_string()))
                    })
                    .collect(),
                cas: {
                    let p = args.with_extension("cas");
                    let text = fs::read_to_string(&p).unwrap();
                    fs::remove_file(&p).unwrap();
                    text
                },
            })
            .collect()
    }
}

/// The `helm pull` runs among `runs`.
fn pulls(runs: &[HelmRun]) -> Vec<&HelmRun> {
    runs.iter()
        .filter(|r| r.args.first().is_some_and(|a| a == "pull"))
        .collect()
}

/// Checks that no run of Helm had `secret` (or any PEM text) in its arguments,
/// nor `secret` in its environment.
fn assert_no_secret_handed_to_helm(runs: &[HelmRun], secret: &str) {
    assert!(!runs.is_empty(), "helm ran");
    for r in runs {
        for a in &r.args {
            assert!(
                !a.contains(secret),
                "the password on helm's command line: {r:?}"
            );
            assert!(
                !a.contains("-----BEGIN"),
                "PEM text on helm's command line: {r:?}"
            );
        }
        for (k, v) in &r.env {
            assert!(
                !v.contains(secret),
                "the password in helm's environment ({k}): {r:?}"
            );
        }
    }
}

/// Checks that Helm got the private CA through `SSL_CERT_DIR` (a folder holding
/// it, then the system's folders), not `--ca-file`, and checked certificates.
fn assert_ca_in_ssl_cert_dir(run: &HelmRun, ca: &Path) {
    let dirs = run
        .env
        .get("SSL_CERT_DIR")
        .unwrap_or_else(|| panic!("no SSL_CERT_DIR for helm: {run:?}"));
    let pem = fs::read_to_string(ca).unwrap();
    assert!(run.cas.contains(pem.trim()), "{dirs} lacks the CA: {run:?}");
    assert!(dirs.split(':').any(|d| d == "/etc/ssl/certs"), "{run:?}");
    for flag in ["--ca-file", "--insecure-skip-tls-verify", "--plain-http"] {
        assert!(!run.args.iter().any(|a| a == flag), "{flag}: {run:?}");
    }
}

#[test]
fn an_oci_chart_comes_over_tls_from_named_mirrors_with_the_ca_client_certificate_and_password_off_helms_command_line(
) {
    require_tool("helm");
    require_tool("kubectl");
    const PASSWORD: &str = "corp-mirror-s3cret";
    let name = loopback_name();
    let pki = Pki::new();
    let (crt, key) = pki.issue("named", &format!("DNS:{name}"), false, false);
    let (client_crt, client_key) = pki.issue("client", "DNS:client.example", true, false);
    let data = tempfile::tempdir().unwrap();
    let plain = Distribution::start(data.path(), None);
    push_mirrored(&plain.addr);
    let w = Work::new("corp");
    corporate_spec(&w, &plain.addr);
    let spy = HelmSpy::new(&w);
    // The same content over HTTPS with a certificate from the private CA, wanting a
    // password; and over HTTPS wanting a client certificate.
    let server = |client_ca: Option<PathBuf>| Tls {
        cert: crt.clone(),
        key: key.clone(),
        client_ca,
    };
    let auth = Distribution::start_with(data.path(), Some(&server(None)), Some(("corp", PASSWORD)));
    let mtls = Distribution::start(data.path(), Some(&server(Some(pki.ca()))));
    let create_with = |registries: &str, out: &str| {
        w.write("registries.yaml", registries);
        create(&w, out)
            .env("PATH", spy.path())
            .arg("--registries")
            .arg(w.path("registries.yaml"))
            .args(["--disable-default-registry-endpoint", "--retries", "1"])
            .arg("--cache")
            .arg(w.path(format!("cache-{out}")))
            .output()
            .unwrap()
    };
    let auth_host = auth.named();
    let endpoint = format!("https://{auth_host}");
    let configs = |tls: &str| {
        format!(
            "configs:\n  \"{auth_host}\":\n    auth:\n      username: corp\n      password: {PASSWORD}\n    tls:\n{tls}"
        )
    };
    let ca_line = format!("      ca_file: {}\n", pki.ca().display());

    // Without the CA: the chart (the first thing create pulls) fails on TLS, and
    // the error says why and what fixes it (Helm no longer falls back to plain
    // HTTP, as it does for 127.0.0.1).
    let o = create_with(
        &registries_yaml(&endpoint, &configs("      insecure_skip_verify: false\n")),
        "no-ca.gapb",
    );
    let e = fails(&o, 5);
    assert!(
        e.contains("charts[0]") && e.contains(&format!("TLS with mirror {auth_host} failed")),
        "{e}"
    );
    assert!(
        e.contains("a CA this machine does not trust") && e.contains("--registry-ca"),
        "{e}"
    );
    assert!(!e.contains(PASSWORD), "{e}");
    spy.take();

    // With the CA from the registries file: chart and images come over TLS with the
    // password; the chart keeps its upstream name and no mirror host is bundled.
    ok(create_with(
        &registries_yaml(&endpoint, &configs(&ca_line)),
        "auth.gapb",
    ));
    let runs = spy.take();
    assert_no_secret_handed_to_helm(&runs, PASSWORD);
    let pull = pulls(&runs);
    assert_eq!(pull.len(), 1, "{runs:?}");
    let want = format!("oci://{auth_host}/ghcr/gapbundle-test/charts/web");
    assert_eq!(pull[0].args.get(1), Some(&want), "{runs:?}");
    assert_ca_in_ssl_cert_dir(pull[0], &pki.ca());
    let login = runs
        .iter()
        .find(|r| r.args.starts_with(&["registry".into(), "login".into()]))
        .unwrap_or_else(|| panic!("no helm registry login: {runs:?}"));
    assert!(
        login.args.iter().any(|a| a == "--password-stdin"),
        "the password on stdin: {login:?}"
    );
    assert_ca_in_ssl_cert_dir(login, &pki.ca());
    // Logged in to a throw-away registry config, never the user's.
    let config = &login.env["HELM_REGISTRY_CONFIG"];
    assert_ne!(Path::new(config), w.path("helm-registry.json"), "{login:?}");
    assert_eq!(&pull[0].env["HELM_REGISTRY_CONFIG"], config, "{runs:?}");
    assert!(!Path::new(config).exists(), "the throw-away login is gone");
    let user_config = fs::read_to_string(w.path("helm-registry.json")).unwrap_or_default();
    assert!(!user_config.contains(&auth_host), "{user_config}");
    let bundle = fs::read(w.path("auth.gapb")).unwrap();
    assert_no_mirror_host(&bundle, &auth_host, "the bundle");
    assert!(
        !bundle
            .windows(PASSWORD.len())
            .any(|w| w == PASSWORD.as_bytes()),
        "the password in the bundle"
    );
    let inspect = w.inspect("auth.gapb");
    assert!(
        inspect
            .to_string()
            .contains("oci://ghcr.io/gapbundle-test/charts/web:0.1.0"),
        "{inspect}"
    );

    // A mirror that wants a client certificate: refused without one, with the fix
    // named; with configs.<host>.tls.cert_file/key_file Helm gets their paths.
    let mtls_host = mtls.named();
    let mtls_endpoint = format!("https://{mtls_host}");
    let o = create_with(
        &registries_yaml(
            &mtls_endpoint,
            &format!("configs:\n  \"{mtls_host}\":\n    tls:\n{ca_line}"),
        ),
        "no-cert.gapb",
    );
    let e = fails(&o, 5);
    assert!(e.contains("charts[0]") && e.contains(&mtls_host), "{e}");
    assert!(
        e.contains("client certificate") && e.contains("--registry-cert"),
        "{e}"
    );
    spy.take();
    ok(create_with(
        &registries_yaml(
            &mtls_endpoint,
            &format!(
                "configs:\n  \"{mtls_host}\":\n    tls:\n{ca_line}      cert_file: {}\n      key_file: {}\n",
                client_crt.display(),
                client_key.display()
            ),
        ),
        "mtls.gapb",
    ));
    let runs = spy.take();
    assert_no_secret_handed_to_helm(&runs, PASSWORD);
    let pull = pulls(&runs);
    assert_eq!(pull.len(), 1, "{runs:?}");
    assert_eq!(
        pull[0].args.get(1),
        Some(&format!("oci://{mtls_host}/ghcr/gapbundle-test/charts/web")),
        "{runs:?}"
    );
    assert_ca_in_ssl_cert_dir(pull[0], &pki.ca());
    let flag = |f: &str| {
        let at = pull[0].args.iter().position(|a| a == f);
        at.and_then(|i| pull[0].args.get(i + 1)).map(PathBuf::from)
    };
    assert_eq!(flag("--cert-file"), Some(client_crt.clone()), "{runs:?}");
    assert_eq!(flag("--key-file"), Some(client_key.clone()), "{runs:?}");
    assert_eq!(
        fs::read(w.path("auth.gapb")).unwrap(),
        fs::read(w.path("mtls.gapb")).unwrap(),
        "the same bundle through either mirror"
    );
}

#[test]
fn helm_pulls_a_chart_from_a_named_mirror_through_the_proxy_in_https_proxy_and_http_proxy() {
    require_tool("helm");
    require_tool("kubectl");
    let name = loopback_name();
    let pki = Pki::new();
    let (crt, key) = pki.issue("named", &format!("DNS:{name}"), false, false);
    let data = tempfile::tempdir().unwrap();
    let plain = Distribution::start(data.path(), None);
    let w = Work::new("corp");
    corporate_spec(&w, &plain.addr);
    // The chart only: nothing but Helm talks to the mirror (gapbundle hands OCI
    // charts to Helm and asks no registry itself), so what the proxy logs is Helm's.
    w.write(
        "bundle.yaml",
        "name: corp\nversion: \"1\"\ncharts:\n  - oci: oci://ghcr.io/gapbundle-test/charts/web\n    version: 0.1.0\n    discoverImages: false\n",
    );
    let tls = Distribution::start(
        data.path(),
        Some(&Tls {
            cert: crt,
            key,
            client_ca: None,
        }),
    );
    let spy = HelmSpy::new(&w);
    let proxy = Tinyproxy::start();
    let via = |var: &str, endpoint: &str, out: &str| {
        w.write(
            "registries.yaml",
            &format!(
                "mirrors:\n  ghcr.io:\n    endpoint: [\"{endpoint}/v2/ghcr\"]\nconfigs:\n  \"{}\":\n    tls:\n      ca_file: {}\n",
                tls.named(),
                pki.ca().display()
            ),
        );
        ok(create(&w, out)
            .env("PATH", spy.path())
            .env(var, &proxy.url)
            .arg("--registries")
            .arg(w.path("registries.yaml"))
            .args(["--disable-default-registry-endpoint", "--retries", "1"])
            .arg("--cache")
            .arg(w.path(format!("cache-{out}")))
            .output()
            .unwrap());
        let runs = spy.take();
        let pull = pulls(&runs);
        assert_eq!(pull.len(), 1, "{runs:?}");
        assert_eq!(
            pull[0].env.get(var),
            Some(&proxy.url),
            "{var} for helm: {runs:?}"
        );
    };

    // HTTPS: Helm tunnels to the mirror by its name (CONNECT).
    via(
        "HTTPS_PROXY",
        &format!("https://{}", tls.named()),
        "tls.gapb",
    );
    let log = proxy.log();
    assert!(
        log.contains(&format!("CONNECT {} HTTP/1.1", tls.named())),
        "tinyproxy's log shows Helm's tunnel to {}:\n{log}",
        tls.named()
    );
    // Plain HTTP: Helm's requests go to the proxy with the whole URL.
    via(
        "HTTP_PROXY",
        &format!("http://{}", plain.named()),
        "plain.gapb",
    );
    let log = proxy.log();
    let manifest = format!(
        "http://{}/v2/ghcr/gapbundle-test/charts/web/manifests/0.1.0",
        plain.named()
    );
    assert!(
        log.contains(&manifest),
        "tinyproxy's log shows Helm's {manifest}:\n{log}"
    );
    assert_eq!(
        w.inspect("tls.gapb")["objects"],
        w.inspect("plain.gapb")["objects"],
        "one chart, whichever way it came"
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
