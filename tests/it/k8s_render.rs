//! End-to-end tests of rendering Helm charts, Kustomize overlays and plain manifests
//! into a bundle, with the real `helm` (3.17), `kubectl kustomize` and the CNCF
//! distribution registry. Charts come from a real chart repository layout
//! (`helm package` + `helm repo index`, served over HTTP from 127.0.0.1 by the
//! harness's small server, which also plays a repository behind basic auth), from
//! the registry as OCI artifacts (`helm push`), and from local folders. Every image the workloads run is one the test pushed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use gapbundle::bundle::manifest::{Kind, Manifest, Object};
use serde_json::Value;

use crate::support::*;

// ---------------------------------------------------------------------------
// A chart repository: files served over HTTP/1.1 from a folder.
// ---------------------------------------------------------------------------

/// A static file server on 127.0.0.1 (a chart repository is nothing more than
/// `index.yaml` and the archives it names). Counts the requests it answers.
struct FileServer {
    url: String,
    /// `127.0.0.1:PORT`, the host `--registry-auth` names.
    host: String,
    hits: Arc<AtomicUsize>,
    _server: FakeHttp,
}

impl FileServer {
    fn serve(dir: PathBuf) -> FileServer {
        Self::start(dir, None)
    }
    /// Serves only requests that carry HTTP Basic credentials `user:pass`; others
    /// get 401 with a `WWW-Authenticate: Basic` challenge, as a private chart
    /// repository (Harbor, Nexus, ChartMuseum) answers.
    fn serve_with_basic_auth(dir: PathBuf, user: &str, pass: &str) -> FileServer {
        Self::start(dir, Some(format!("{user}:{pass}")))
    }
    fn start(dir: PathBuf, userpass: Option<String>) -> FileServer {
        let expected = userpass.map(|up| format!("Basic {}", base64_encode(up.as_bytes())));
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let server = FakeHttp::start(move |req| {
            counter.fetch_add(1, Ordering::SeqCst);
            if expected.is_some() && req.header("authorization") != expected.as_deref() {
                return Response::new(401, "").header("WWW-Authenticate", "Basic realm=\"charts\"");
            }
            let path = req
                .path
                .split('?')
                .next()
                .unwrap_or("")
                .trim_start_matches('/');
            let body = if path.split('/').any(|c| c == "..") {
                None
            } else {
                fs::read(dir.join(path)).ok()
            };
            match body {
                Some(b) => Response::new(200, b),
                None => Response::new(404, ""),
            }
        });
        let host = server.addr().to_string();
        FileServer {
            url: format!("http://{host}/"),
            host,
            hits,
            _server: server,
        }
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------
// Charts, written by hand so that each test knows exactly what they render.
// ---------------------------------------------------------------------------

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
  namespace: {{ .Release.Namespace }}
spec:
  replicas: {{ .Values.replicaCount }}
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      {{- with .Values.initImage }}
      initContainers:
        - name: init
          image: {{ . | quote }}
      {{- end }}
      containers:
        - name: main
          image: {{ .Values.image | quote }}
"#;

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
spec:
  selector: {app: {{ .Release.Name }}}
  ports: [{port: 80}]
"#;

/// A chart folder `dir/name` with a Deployment and a Service.
fn write_chart(dir: &Path, name: &str, version: &str, values: &str) -> PathBuf {
    let c = dir.join(name);
    fs::create_dir_all(c.join("templates")).unwrap();
    fs::write(
        c.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
    )
    .unwrap();
    fs::write(c.join("values.yaml"), format!("replicaCount: 1\n{values}")).unwrap();
    fs::write(c.join("templates/deployment.yaml"), DEPLOYMENT).unwrap();
    fs::write(c.join("templates/service.yaml"), SERVICE).unwrap();
    // A disabled template renders an empty document, which must be dropped.
    fs::write(
        c.join("templates/disabled.yaml"),
        "{{- if .Values.never }}\nkind: Secret\n{{- end }}\n",
    )
    .unwrap();
    c
}

/// `helm package` into `dest`; returns the archive.
fn package(chart: &Path, dest: &Path) -> PathBuf {
    run(tool("helm").arg("package").arg(chart).arg("-d").arg(dest));
    let name = fs::read_to_string(chart.join("Chart.yaml")).unwrap();
    let field = |f: &str| {
        name.lines()
            .find_map(|l| l.strip_prefix(&format!("{f}: ")))
            .unwrap()
            .to_string()
    };
    dest.join(format!("{}-{}.tgz", field("name"), field("version")))
}

fn sha256_file(p: &Path) -> String {
    sha256_digest(&fs::read(p).unwrap())
}

// ---------------------------------------------------------------------------
// The work folder.
// ---------------------------------------------------------------------------

/// A work folder with the key pair `k8s-test`, for tests that run helm and kubectl.
fn k8s_work() -> Work {
    require_tool("helm");
    require_tool("kubectl");
    Work::new("k8s-test")
}

/// What `gapbundle create` of the work spec into `out` did, with the cache folder
/// `cache`, one attempt per request, plain HTTP to `reg`, and `extra` flags.
fn create(w: &Work, reg: Option<&str>, out: &str, cache: &str, extra: &[&str]) -> Output {
    create_with(w, reg, out, cache, extra).output().unwrap()
}

/// The command line of [`create`].
fn create_with(w: &Work, reg: Option<&str>, out: &str, cache: &str, extra: &[&str]) -> Command {
    let mut c = create_cmd(
        &w.path("bundle.yaml"),
        &w.path(out),
        &w.secret(),
        &w.path(cache),
    );
    c.args(["--retries", "1"]).args(extra).stdin(Stdio::null());
    if let Some(r) = reg {
        c.args(["--insecure-registry", r]);
    }
    c
}

/// The manifest of a bundle in the work folder.
fn manifest(w: &Work, bundle: &str) -> Manifest {
    head_of(&w.path(bundle)).manifest
}

fn manifests(m: &Manifest) -> BTreeMap<String, &Object> {
    m.objects
        .iter()
        .filter(|o| o.kind == Kind::K8sManifest)
        .map(|o| (o.name.clone(), o))
        .collect()
}

/// The blob of `digest`, read from the extracted bundle.
fn blob(x: &Path, digest: &str) -> Vec<u8> {
    fs::read(
        x.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

fn wanted_by(inspect: &Value, reference: &str) -> Vec<String> {
    let img = inspect["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ref"] == reference)
        .unwrap_or_else(|| panic!("{reference} is not in the bundle: {inspect:#}"));
    img["wantedBy"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn charts_overlays_and_manifests_bring_every_image() {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let app = fx.app.reference.clone();
    let tool_ref = fx.tool.reference.clone();
    let multi = fx.multi.reference.clone();
    let w = k8s_work();

    // A chart repository on 127.0.0.1: web 0.1.0 runs team/app:1.2.
    let repo_dir = w.path("repo");
    fs::create_dir_all(&repo_dir).unwrap();
    let server = FileServer::serve(repo_dir.clone());
    let web = write_chart(&w.path("src"), "web", "0.1.0", &format!("image: {app}\n"));
    let web_tgz = package(&web, &repo_dir);
    run(tool("helm")
        .args(["repo", "index"])
        .arg(&repo_dir)
        .args(["--url", &server.url]));

    // An OCI chart in the registry: api 0.2.0 runs team/tool:0.3.
    let api = write_chart(
        &w.path("src"),
        "api",
        "0.2.0",
        &format!("image: {tool_ref}\n"),
    );
    let api_tgz = package(&api, &w.path("pkg"));
    run(tool("helm")
        .arg("push")
        .arg(&api_tgz)
        .arg(format!("oci://{}/charts", reg.addr))
        .arg("--plain-http"));

    // A local chart whose Deployment has an initContainer.
    write_chart(
        &w.path("charts"),
        "jobs",
        "1.0.0",
        &format!("image: {app}\ninitImage: {tool_ref}\n"),
    );

    // A kustomize overlay that moves team/multi from tag 0.9 to 1.0.
    let multi_repo = multi.rsplit_once(':').unwrap().0.to_string();
    w.write(
        "deploy/base/kustomization.yaml",
        "resources: [deployment.yaml]\n",
    );
    w.write(
        "deploy/base/deployment.yaml",
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: edge\nspec:\n  selector: {{matchLabels: {{app: edge}}}}\n  template:\n    metadata: {{labels: {{app: edge}}}}\n    spec:\n      containers:\n        - name: edge\n          image: {multi_repo}:0.9\n"
        ),
    );
    w.write(
        "deploy/overlays/edge/kustomization.yaml",
        &format!(
            "resources: [../../base]\nnamespace: edge\nimages:\n  - name: {multi_repo}\n    newTag: \"1.0\"\n"
        ),
    );

    // Plain manifests by glob; c.txt does not match.
    w.write(
        "extra/a.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata: {{a: b}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: probe, namespace: ops}}\nspec:\n  containers: [{{name: p, image: \"{app}\"}}]\n"
        ),
    );
    w.write(
        "extra/b.yaml",
        &format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: nightly}}\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{{name: n, image: \"{tool_ref}\"}}]\n"
        ),
    );
    w.write("extra/c.txt", "not yaml: [\n");
    w.write("values/edge.yaml", "replicaCount: 3\n");

    w.write(
        "bundle.yaml",
        &format!(
            r#"name: k8s-site
version: "1.0"
platforms: [linux/amd64]
charts:
  - repo: {repo}
    name: web
    version: 0.1.0
    namespace: apps
    valuesFiles: [./values/edge.yaml]
    values: {{replicaCount: 2}}
  - oci: oci://{reg}/charts/api
    version: 0.2.0
    release: backend
    namespace: apps
  - path: ./charts/jobs
    namespace: batch
kustomize:
  - path: ./deploy/overlays/edge
manifests:
  - path: ./extra/*.yaml
"#,
            repo = server.url,
            reg = reg.addr
        ),
    );

    ok(create(&w, Some(&reg.addr), "site.gapb", "cache", &[]));
    ok(w.verify("site.gapb"));

    // Every image is discovered and bundled, and says who wants it.
    let info = w.inspect("site.gapb");
    let mut refs: Vec<&str> = info["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ref"].as_str().unwrap())
        .collect();
    refs.sort();
    let mut want = vec![app.as_str(), tool_ref.as_str(), multi.as_str()];
    want.sort();
    assert_eq!(refs, want);
    assert_eq!(
        wanted_by(&info, &app),
        [
            "chart:web Deployment apps/web",
            "chart:jobs Deployment batch/jobs",
            "manifests:extra/a.yaml Pod ops/probe",
        ]
    );
    assert_eq!(
        wanted_by(&info, &tool_ref),
        [
            "chart:backend Deployment apps/backend",
            "chart:jobs Deployment batch/jobs",
            "manifests:extra/b.yaml CronJob default/nightly",
        ]
    );
    assert_eq!(
        wanted_by(&info, &multi),
        ["kustomize:deploy/overlays/edge Deployment edge/edge"]
    );
    // Human inspect says it too.
    let human = run_stdout(gapbundle().arg("inspect").arg(w.path("site.gapb")));
    assert!(
        human.contains("wanted by kustomize:deploy/overlays/edge Deployment edge/edge"),
        "{human}"
    );

    // Documents: one object each, split as rendered, with their meta.
    let m = manifest(&w, "site.gapb");
    let docs = manifests(&m);
    let names: Vec<&str> = docs.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "chart:backend/Deployment/apps/backend",
            "chart:backend/Service/apps/backend",
            "chart:jobs/Deployment/batch/jobs",
            // Namespaces nothing else creates, each once, in the first chart of
            // the spec that renders into it.
            "chart:jobs/Namespace/_/batch",
            "chart:jobs/Service/batch/jobs",
            "chart:web/Deployment/apps/web",
            "chart:web/Namespace/_/apps",
            "chart:web/Service/apps/web",
            "kustomize:deploy/overlays/edge/Deployment/edge/edge",
            "manifests:extra/a.yaml/ConfigMap/default/settings",
            "manifests:extra/a.yaml/Pod/ops/probe",
            "manifests:extra/b.yaml/CronJob/default/nightly",
        ]
    );
    let web_deploy = docs["chart:web/Deployment/apps/web"];
    let meta = |o: &Object, k: &str| o.meta.to_json().get(k).cloned().unwrap_or(Value::Null);
    assert_eq!(meta(web_deploy, "source"), "chart:web");
    assert_eq!(meta(web_deploy, "file"), "chart-web.yaml");
    assert_eq!(meta(web_deploy, "kind"), "Deployment");
    assert_eq!(meta(web_deploy, "apiVersion"), "apps/v1");
    assert_eq!(meta(web_deploy, "namespace"), "apps");
    assert_eq!(meta(web_deploy, "name"), "web");
    assert_eq!(meta(web_deploy, "images"), serde_json::json!([app]));
    assert_eq!(web_deploy.media_type, "application/yaml");
    let a_pod = docs["manifests:extra/a.yaml/Pod/ops/probe"];
    assert_eq!(meta(a_pod, "file"), "manifests-extra-a.yaml");
    assert_eq!(meta(a_pod, "order"), 1);
    assert_eq!(
        meta(
            docs["kustomize:deploy/overlays/edge/Deployment/edge/edge"],
            "file"
        ),
        "kustomize-deploy-overlays-edge.yaml"
    );

    // The stored bytes are the rendered document: values files then inline values.
    let x = w.path("x");
    extract(&w.path("site.gapb"), &x);
    let web_yaml = String::from_utf8(blob(&x, &web_deploy.digest.to_string())).unwrap();
    assert!(
        web_yaml.starts_with("# Source: web/templates/deployment.yaml\n"),
        "{web_yaml}"
    );
    assert!(web_yaml.contains("replicas: 2\n"), "{web_yaml}");
    let edge_yaml = String::from_utf8(blob(
        &x,
        &docs["kustomize:deploy/overlays/edge/Deployment/edge/edge"]
            .digest
            .to_string(),
    ))
    .unwrap();
    assert!(
        edge_yaml.contains(&format!("image: {multi}")),
        "{edge_yaml}"
    );

    // Pulled charts are stored and pinned.
    let charts: Vec<&Object> = m.objects.iter().filter(|o| o.kind == Kind::Chart).collect();
    let chart_names: Vec<&str> = charts.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        chart_names,
        [
            format!("{}/web:0.1.0", server.url.trim_end_matches('/')),
            format!("oci://{}/charts/api:0.2.0", reg.addr),
        ]
    );
    assert_eq!(charts[0].digest.to_string(), sha256_file(&web_tgz));
    assert_eq!(charts[1].digest.to_string(), sha256_file(&api_tgz));
    assert_eq!(
        blob(&x, &charts[0].digest.to_string()),
        fs::read(&web_tgz).unwrap()
    );
    let lock: Value = serde_json::from_slice(&fs::read(w.path("bundle.lock")).unwrap()).unwrap();
    let repo_key = format!("repo:{}#web@0.1.0", server.url);
    let oci_key = format!("oci:oci://{}/charts/api@0.2.0", reg.addr);
    assert_eq!(lock["charts"][&repo_key]["version"], "0.1.0");
    assert_eq!(lock["charts"][&repo_key]["digest"], sha256_file(&web_tgz));
    assert_eq!(lock["charts"][&oci_key]["digest"], sha256_file(&api_tgz));

    // Reproducible: the same spec, lock and key give the same bytes, and the pinned
    // chart comes from the cache without asking the repository again.
    let hits = server.hits();
    ok(create(
        &w,
        Some(&reg.addr),
        "again.gapb",
        "cache",
        &["--locked"],
    ));
    assert_eq!(server.hits(), hits, "the pinned chart was fetched again");
    assert_eq!(
        fs::read(w.path("site.gapb")).unwrap(),
        fs::read(w.path("again.gapb")).unwrap(),
        "two creates gave different bundles"
    );

    // The repository republishes web 0.1.0 with other content: --locked refuses it.
    fs::write(
        web.join("templates/extra.yaml"),
        SERVICE.replace("{{ .Release.Name }}", "extra"),
    )
    .unwrap();
    let old_web = sha256_file(&web_tgz);
    fs::remove_file(&web_tgz).unwrap();
    package(&web, &repo_dir);
    run(tool("helm")
        .args(["repo", "index"])
        .arg(&repo_dir)
        .args(["--url", &server.url]));
    let o = create(
        &w,
        Some(&reg.addr),
        "changed.gapb",
        "fresh-cache",
        &["--locked"],
    );
    let err = fails(&o, 4);
    assert!(err.contains("--locked") && err.contains(&repo_key), "{err}");
    assert!(!w.path("changed.gapb").exists());
    // Without --locked it is taken, with a message, and the lock moves.
    let o = ok(create(
        &w,
        Some(&reg.addr),
        "changed.gapb",
        "fresh-cache",
        &[],
    ));
    assert!(String::from_utf8_lossy(&o.stderr).contains("changed from"));
    let lock: Value = serde_json::from_slice(&fs::read(w.path("bundle.lock")).unwrap()).unwrap();
    assert_ne!(lock["charts"][&repo_key]["digest"], old_web);
    assert_eq!(
        lock["charts"][&repo_key]["digest"],
        sha256_file(&repo_dir.join("web-0.1.0.tgz"))
    );

    // A chart the lock pins but the spec dropped: --locked refuses, naming it.
    let spec = fs::read_to_string(w.path("bundle.yaml")).unwrap();
    let start = spec.find("  - oci:").unwrap();
    let end = spec.find("  - path: ./charts/jobs").unwrap();
    fs::write(
        w.path("bundle.yaml"),
        format!("{}{}", &spec[..start], &spec[end..]),
    )
    .unwrap();
    let err = fails(
        &create(&w, Some(&reg.addr), "dropped.gapb", "cache", &["--locked"]),
        4,
    );
    assert!(
        err.contains("no longer has") && err.contains(&oci_key),
        "{err}"
    );
}

#[test]
fn a_repository_archive_that_does_not_match_its_index_is_refused() {
    let w = k8s_work();
    let repo_dir = w.path("repo");
    fs::create_dir_all(&repo_dir).unwrap();
    let server = FileServer::serve(repo_dir.clone());
    let web = write_chart(
        &w.path("src"),
        "web",
        "0.1.0",
        "image: 127.0.0.1:1/none:1\n",
    );
    package(&web, &repo_dir);
    run(tool("helm")
        .args(["repo", "index"])
        .arg(&repo_dir)
        .args(["--url", &server.url]));
    let index = fs::read_to_string(repo_dir.join("index.yaml")).unwrap();
    let line = index
        .lines()
        .find(|l| l.trim_start().starts_with("digest:"))
        .unwrap();
    fs::write(
        repo_dir.join("index.yaml"),
        index.replace(line, &format!("    digest: {}", "ab".repeat(32))),
    )
    .unwrap();
    w.write(
        "bundle.yaml",
        &format!(
            "name: x\nversion: \"1\"\ndiscoverImages: false\ncharts:\n  - repo: {}\n    name: web\n    version: 0.1.0\n",
            server.url
        ),
    );
    let err = fails(&create(&w, None, "x.gapb", "cache", &[]), 5);
    assert!(err.contains("index.yaml says sha256:abab"), "{err}");

    // A version the repository lacks is a registry-side failure too, naming it.
    w.write(
        "bundle.yaml",
        &format!(
            "name: x\nversion: \"1\"\ncharts:\n  - repo: {}\n    name: web\n    version: 9.9.9\n",
            server.url
        ),
    );
    let err = fails(&create(&w, None, "x.gapb", "cache", &[]), 5);
    assert!(err.contains("charts[0]") && err.contains("9.9.9"), "{err}");
}

#[test]
fn an_image_that_cannot_be_pulled_names_the_manifest_that_wants_it() {
    let reg = Registry::start();
    let w = k8s_work();
    let missing = reg.reference("team/missing:9");
    write_chart(
        &w.path("charts"),
        "web",
        "0.1.0",
        &format!("image: {missing}\n"),
    );
    w.write(
        "bundle.yaml",
        "name: x\nversion: \"1\"\ncharts:\n  - path: ./charts/web\n    namespace: apps\n",
    );
    let err = fails(&create(&w, Some(&reg.addr), "x.gapb", "cache", &[]), 5);
    assert!(
        err.contains(&format!(
            "{missing} is wanted by chart:web Deployment apps/web"
        )),
        "{err}"
    );
    assert!(!w.path("x.gapb").exists());
}

#[test]
fn discover_images_false_turns_discovery_off_per_entry() {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let w = k8s_work();
    // Nothing can pull this one: with discovery off it is simply not asked for.
    let missing = reg.reference("team/missing:9");
    w.write(
        "a/pod.yaml",
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: a}}\nspec:\n  containers: [{{name: a, image: \"{missing}\"}}]\n"),
    );
    w.write(
        "b/pod.yaml",
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: b}}\nspec:\n  containers: [{{name: b, image: \"{}\"}}]\n", fx.app.reference),
    );
    w.write(
        "bundle.yaml",
        "name: x\nversion: \"1\"\ndiscoverImages: false\nmanifests:\n  - path: a/*.yaml\n  - path: b/\n    discoverImages: true\n",
    );
    ok(create(&w, Some(&reg.addr), "x.gapb", "cache", &[]));
    let info = w.inspect("x.gapb");
    let refs: Vec<&str> = info["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs, [fx.app.reference.as_str()]);
    // The document still records the image it uses.
    let m = manifest(&w, "x.gapb");
    let a = manifests(&m)["manifests:a/pod.yaml/Pod/default/a"].clone();
    assert_eq!(a.meta.to_json()["images"], serde_json::json!([missing]));

    // And a spec with no discovery at all needs no registry.
    w.write(
        "bundle.yaml",
        "name: x\nversion: \"1\"\ndiscoverImages: false\nmanifests:\n  - path: a/*.yaml\n",
    );
    ok(create(&w, None, "y.gapb", "cache", &[]));
}

#[test]
fn a_broken_chart_or_overlay_gives_the_tool_s_stderr() {
    let w = k8s_work();
    let c = write_chart(&w.path("charts"), "web", "0.1.0", "image: x/y:1\n");
    fs::write(
        c.join("templates/broken.yaml"),
        "kind: ConfigMap\nname: {{ .Values.image | nosuchfunction }}\n",
    )
    .unwrap();
    w.write(
        "bundle.yaml",
        "name: x\nversion: \"1\"\ncharts:\n  - path: ./charts/web\n",
    );
    // Without helm on PATH it is this machine, not the chart, that is at fault.
    let empty = w.path("empty-path");
    fs::create_dir_all(&empty).unwrap();
    let o = {
        let mut c =
            create_unsigned_cmd(&w.path("bundle.yaml"), &w.path("x.gapb"), &w.path("cache"));
        c.env("PATH", &empty);
        c.stdin(Stdio::null()).output().unwrap()
    };
    let err = fails(&o, 1);
    assert!(
        err.contains("`helm` was not found on PATH") && err.contains("install Helm"),
        "{err}"
    );

    let err = fails(&create(&w, None, "x.gapb", "cache", &[]), 4);
    assert!(err.contains("charts[0] (chart:web)"), "{err}");
    assert!(err.contains("helm template web"), "{err}");
    assert!(
        err.contains("function \"nosuchfunction\" not defined"),
        "{err}"
    );

    w.write("deploy/kustomization.yaml", "resources: [missing.yaml]\n");
    w.write(
        "bundle.yaml",
        "name: x\nversion: \"1\"\nkustomize:\n  - path: ./deploy\n",
    );
    let err = fails(&create(&w, None, "x.gapb", "cache", &[]), 4);
    assert!(err.contains("kustomize[0] (kustomize:deploy)"), "{err}");
    assert!(err.contains("missing.yaml"), "{err}");

    // A manifest that is not a Kubernetes object, and a glob that matches nothing.
    w.write("extra/bad.yaml", "just: a map\n");
    w.write(
        "bundle.yaml",
        "name: x\nversion: \"1\"\nmanifests:\n  - path: ./extra/*.yaml\n  - path: ./none/*.yaml\n",
    );
    let err = fails(&create(&w, None, "x.gapb", "cache", &[]), 4);
    assert!(
        err.contains("manifests:extra/bad.yaml: document 0 is not a Kubernetes object"),
        "{err}"
    );
    w.write(
        "bundle.yaml",
        "name: x\nversion: \"1\"\nmanifests:\n  - path: ./none/*.yaml\n",
    );
    let err = fails(&create(&w, None, "x.gapb", "cache", &[]), 4);
    assert!(err.contains("`./none/*.yaml` matches no file"), "{err}");
}

#[test]
fn helmchart_mode_carries_the_chart_for_k3s() {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let w = k8s_work();
    write_chart(
        &w.path("charts"),
        "web",
        "0.1.0",
        &format!("image: {}\n", fx.app.reference),
    );
    w.write("values/edge.yaml", "replicaCount: 3\nextra: {a: 1}\n");
    w.write(
        "bundle.yaml",
        "name: x\nversion: \"1\"\nplatforms: [linux/amd64]\ncharts:\n  - path: ./charts/web\n    namespace: apps\n    chartMode: helmchart\n    valuesFiles: [values/edge.yaml]\n    values: {extra: {b: 2}}\n",
    );
    ok(create(&w, Some(&reg.addr), "a.gapb", "cache", &[]));
    ok(create(&w, Some(&reg.addr), "b.gapb", "cache", &[]));
    assert_eq!(
        fs::read(w.path("a.gapb")).unwrap(),
        fs::read(w.path("b.gapb")).unwrap(),
        "packaging a local chart is not reproducible"
    );
    let info = w.inspect("a.gapb");
    assert_eq!(
        wanted_by(&info, &fx.app.reference),
        ["chart:web Deployment apps/web"]
    );
    let m = manifest(&w, "a.gapb");
    let docs = manifests(&m);
    assert_eq!(
        docs.keys().collect::<Vec<_>>(),
        ["chart:web/HelmChart/kube-system/web"]
    );
    let o = docs["chart:web/HelmChart/kube-system/web"];
    assert_eq!(o.meta.to_json()["apiVersion"], "helm.cattle.io/v1");
    assert_eq!(
        o.meta.to_json()["images"],
        serde_json::json!([fx.app.reference])
    );

    let x = w.path("x");
    extract(&w.path("a.gapb"), &x);
    let doc: Value = serde_json::to_value(
        serde_yaml_ng::from_slice::<serde_yaml_ng::Value>(&blob(&x, &o.digest.to_string()))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(doc["kind"], "HelmChart");
    assert_eq!(doc["metadata"]["namespace"], "kube-system");
    assert_eq!(doc["spec"]["targetNamespace"], "apps");
    // K3s's helm controller creates the namespace (createNamespace defaults to true).
    assert_eq!(doc["spec"]["createNamespace"], true);
    let values: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(doc["spec"]["valuesContent"].as_str().unwrap()).unwrap();
    assert_eq!(
        values,
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>("replicaCount: 3\nextra: {a: 1, b: 2}\n")
            .unwrap()
    );
    // chartContent is a chart Helm itself renders.
    let tgz = base64_decode(doc["spec"]["chartContent"].as_str().unwrap());
    fs::write(w.path("content.tgz"), tgz).unwrap();
    let rendered = run_stdout(
        tool("helm")
            .args(["template", "web"])
            .arg(w.path("content.tgz"))
            .args(["--namespace", "apps"]),
    );
    assert!(rendered.contains(&fx.app.reference), "{rendered}");
}

#[test]
fn large_documents_are_stored_compressed() {
    let w = k8s_work();
    let big = "x".repeat(100 * 1024);
    w.write(
        "big.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big}}\ndata:\n  blob: {big}\n"
        ),
    );
    w.write(
        "bundle.yaml",
        "name: x\nversion: \"1\"\nmanifests:\n  - path: big.yaml\n",
    );
    ok(create(&w, None, "x.gapb", "cache", &[]));
    ok(w.verify("x.gapb"));
    let m = manifest(&w, "x.gapb");
    let o = manifests(&m)["manifests:big.yaml/ConfigMap/default/big"].clone();
    let b = m.blobs.iter().find(|b| b.digest == o.digest).unwrap();
    let raw = fs::read(w.path("big.yaml")).unwrap();
    let content = b.content.as_ref().expect("content info");
    assert_eq!(content.size, raw.len() as u64);
    assert_eq!(content.digest.to_string(), sha256_digest(&raw));
    assert!(b.size < 10_000, "{}", b.size);
    let x = w.path("x");
    extract(&w.path("x.gapb"), &x);
    let out = run(Command::new(require_tool("zstd"))
        .args(["-dc"])
        .arg(x.join("blobs/sha256").join(o.digest.hex())));
    assert_eq!(out.stdout, raw);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// Copies `from` to `to`, replacing `old` with `new` in every file.
fn copy_replacing(from: &Path, to: &Path, old: &str, new: &str) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_replacing(&e.path(), &dest, old, new);
        } else {
            let text = fs::read_to_string(e.path()).unwrap();
            fs::write(dest, text.replace(old, new)).unwrap();
        }
    }
}

/// The comment in README.md that comes right before its inspect of examples/k3s-app.
const README_INSPECT_MARKER: &str = "<!-- the inspect of examples/k3s-app";

/// The fenced block of README.md that follows the line starting with `marker`,
/// without its fences.
fn readme_block(marker: &str) -> String {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let at = readme
        .find(marker)
        .unwrap_or_else(|| panic!("README.md has no line starting {marker:?}"));
    let rest = &readme[at..];
    let open = rest
        .find("\n```\n")
        .expect("a fenced block after the marker")
        + 5;
    let close = rest[open..].find("```\n").expect("the block's end");
    let block = rest[open..open + close].to_string();
    assert!(!block.trim().is_empty(), "an empty block after {marker:?}");
    block
}

#[test]
fn the_k3s_app_example_works() {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let w = k8s_work();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/k3s-app");
    copy_replacing(&example, &w.path("."), "127.0.0.1:5000", &reg.addr);
    let _ = fs::remove_file(w.path("bundle.lock"));
    ok(create(&w, Some(&reg.addr), "k3s-app.gapb", "cache", &[]));
    ok(w.verify("k3s-app.gapb"));
    let info = w.inspect("k3s-app.gapb");
    // README.md shows this inspect: its block must be what inspect prints, the
    // test registry's address read as the example's (every name holds it, so the
    // columns line up the same). The fixture images are made reproducibly (fixed
    // contents and times), so the digests are compared too.
    let human = run_stdout(gapbundle().arg("inspect").arg(w.path("k3s-app.gapb")))
        .replace(&reg.addr, "127.0.0.1:5000");
    let block = readme_block(README_INSPECT_MARKER);
    assert!(
        human.contains(&block),
        "README.md's inspect of examples/k3s-app is not what inspect prints; replace its block with the part of this output from `images` on:\n{human}\nREADME.md has:\n{block}"
    );
    assert_eq!(
        wanted_by(&info, &fx.app.reference),
        ["chart:web Deployment apps/web"]
    );
    assert_eq!(
        wanted_by(&info, &fx.multi.reference),
        ["kustomize:deploy/overlays/edge Deployment edge/edge-agent"]
    );
    assert!(wanted_by(&info, &fx.tool.reference).is_empty());
    let m = manifest(&w, "k3s-app.gapb");
    assert_eq!(
        manifests(&m).keys().collect::<Vec<_>>(),
        [
            "chart:web/Deployment/apps/web",
            // The chart's namespace, which nothing else creates: on a fresh K3s
            // the chart's documents would otherwise go nowhere.
            "chart:web/Namespace/_/apps",
            "chart:web/Service/apps/web",
            "kustomize:deploy/overlays/edge/Deployment/edge/edge-agent",
            "kustomize:deploy/overlays/edge/Namespace/_/edge",
        ]
    );

    // What the importer makes of it (staged K3s mode): one file per source, the
    // documents in rendered order, byte for byte.
    let k3s = w.path("k3s");
    run(gapbundle()
        .arg("import")
        .arg(w.path("k3s-app.gapb"))
        .arg("--trust")
        .arg(w.public())
        .args(["--skip-nix", "--staged", "--k3s-root"])
        .arg(&k3s));
    let dir = k3s.join("server/manifests/k3s-app");
    let mut files: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["chart-web.yaml", "kustomize-deploy-overlays-edge.yaml"]
    );
    // The Namespace comes first in the chart's file, so K3s creates it before the
    // documents that live in it.
    let web = fs::read_to_string(dir.join("chart-web.yaml")).unwrap();
    assert!(
        web.starts_with("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n---\n"),
        "{web}"
    );
    let overlay = fs::read_to_string(dir.join("kustomize-deploy-overlays-edge.yaml")).unwrap();
    let rendered = run_stdout(
        tool("kubectl")
            .arg("kustomize")
            .arg(w.path("deploy/overlays/edge")),
    );
    assert_eq!(overlay, rendered);
}

#[test]
fn manifests_from_a_flake_output() {
    require_tool("nix");
    let w = k8s_work();
    w.write(
        "flake/flake.nix",
        r#"{
  outputs = { self }: let
    mk = name: script: builtins.derivation {
      inherit name;
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" script ];
      PATH = "/usr/bin:/bin";
    };
  in {
    packages.x86_64-linux.manifests = mk "gb-k8s-manifests" "mkdir -p $out/sub; printf 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: from-nix\nspec:\n  containers: [{name: a, image: 127.0.0.1:1/nix/app:1}]\n' > $out/pod.yaml; printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: nixns\n' > $out/sub/ns.yml; echo ignored > $out/README";
    packages.x86_64-linux.single = mk "gb-k8s-single.yaml" "printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: one\n' > $out";
  };
}
"#,
    );
    w.write(
        "bundle.yaml",
        "name: x\nversion: \"1\"\ndiscoverImages: false\nmanifests:\n  - installable: ./flake#packages.x86_64-linux.manifests\n  - installable: ./flake#packages.x86_64-linux.single\n",
    );
    let o = {
        let mut c = create_cmd(
            &w.path("bundle.yaml"),
            &w.path("x.gapb"),
            &w.secret(),
            &w.path("cache"),
        );
        c.env("NIX_CONFIG", NIX_CONFIG);
        c.stdin(Stdio::null()).output().unwrap()
    };
    ok(o);
    let m = manifest(&w, "x.gapb");
    let docs = manifests(&m);
    let i = "./flake#packages.x86_64-linux";
    assert_eq!(
        docs.keys().cloned().collect::<Vec<_>>(),
        [
            format!("manifests:{i}.manifests/pod.yaml/Pod/default/from-nix"),
            format!("manifests:{i}.manifests/sub/ns.yml/Namespace/_/nixns"),
            format!("manifests:{i}.single/ConfigMap/default/one"),
        ]
    );
    let pod = docs[&format!("manifests:{i}.manifests/pod.yaml/Pod/default/from-nix")];
    assert_eq!(
        pod.meta.to_json()["images"],
        serde_json::json!(["127.0.0.1:1/nix/app:1"])
    );
    assert_eq!(
        pod.meta.to_json()["file"],
        "manifests-.-flake-packages.x86_64-linux.manifests-pod.yaml"
    );
}

// ---------------------------------------------------------------------------
// Chart repositories and registries that need credentials.
// ---------------------------------------------------------------------------

/// A password that is easy to search for.
const CHART_PASS: &str = "chart-pass-7f3a9c";

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// `secret` is nowhere in the bundle (as a file and unpacked), the lock, the cache
/// or what create printed.
fn assert_secret_absent(w: &Work, secret: &str, bundle: &str, cache: &str, o: &Output) {
    let x = w.path(format!("{bundle}.x"));
    extract(&w.path(bundle), &x);
    let mut files = vec![w.path(bundle), w.path("bundle.lock")];
    files.extend(files_under(&x));
    files.extend(files_under(&w.path(cache)));
    assert!(files.len() > 4, "{files:?}");
    for f in files {
        let bytes = fs::read(&f).unwrap();
        assert!(
            !contains(&bytes, secret),
            "{} holds the password",
            f.display()
        );
    }
    assert!(
        !contains(&o.stdout, secret),
        "create's stdout holds the password"
    );
    assert!(
        !contains(&o.stderr, secret),
        "create's stderr holds the password"
    );
}

/// `create` (which takes extra flags) with a wrong password for `host` fails
/// with exit 5, names the `--registry-auth` flag and never prints the
/// password; with [`CHART_PASS`] it succeeds, and its output is returned.
fn wrong_then_right_registry_auth(
    host: &str,
    no_docker: &str,
    create: impl Fn(&[&str]) -> Output,
) -> Output {
    let wrong = format!("{host}=charts:wrong-pass-41d2");
    let err = fails(
        &create(&["--registry-auth", &wrong, "--docker-config", no_docker]),
        5,
    );
    assert!(
        err.contains("charts[0]")
            && err.contains(&format!("--registry-auth {host}=… were refused")),
        "{err}"
    );
    assert!(!err.contains("wrong-pass-41d2"), "{err}");

    let auth = format!("{host}=charts:{CHART_PASS}");
    ok(create(&[
        "--registry-auth",
        &auth,
        "--docker-config",
        no_docker,
    ]))
}

/// The one chart object of a bundle.
fn chart_object(w: &Work, bundle: &str) -> Object {
    let m = manifest(w, bundle);
    let charts: Vec<&Object> = m.objects.iter().filter(|o| o.kind == Kind::Chart).collect();
    assert_eq!(charts.len(), 1, "{charts:?}");
    charts[0].clone()
}

#[test]
fn a_chart_repository_behind_basic_auth_takes_registry_auth() {
    let w = k8s_work();
    let repo_dir = w.path("repo");
    fs::create_dir_all(&repo_dir).unwrap();
    let server = FileServer::serve_with_basic_auth(repo_dir.clone(), "charts", CHART_PASS);
    let web = write_chart(
        &w.path("src"),
        "web",
        "0.1.0",
        "image: 127.0.0.1:1/none:1\n",
    );
    let web_tgz = package(&web, &repo_dir);
    run(tool("helm")
        .args(["repo", "index"])
        .arg(&repo_dir)
        .args(["--url", &server.url]));
    w.write(
        "bundle.yaml",
        &format!(
            "name: x\nversion: \"1\"\ndiscoverImages: false\ncharts:\n  - repo: {}\n    name: web\n    version: 0.1.0\n",
            server.url
        ),
    );
    // No Docker config of whoever runs the tests: only what each create is given.
    let no_docker = w.path("no-docker-config.json");
    let no_docker = no_docker.to_str().unwrap();
    let host = &server.host;

    // Without credentials the repository refuses, and the error says what to pass.
    let err = fails(
        &create(&w, None, "x.gapb", "cache", &["--docker-config", no_docker]),
        5,
    );
    assert!(
        err.contains(&format!(
            "charts[0]: chart repository {host} refused access"
        )) && err.contains("401 Unauthorized")
            && err.contains(&format!("--registry-auth {host}=USER:PASS")),
        "{err}"
    );
    assert!(!w.path("x.gapb").exists());

    // A wrong password is refused; with the right one it renders, and the
    // password stays out of everything it writes.
    let o = wrong_then_right_registry_auth(host, no_docker, |extra| {
        create(&w, None, "x.gapb", "cache", extra)
    });
    let chart = chart_object(&w, "x.gapb");
    assert_eq!(chart.digest.to_string(), sha256_file(&web_tgz));
    assert!(manifests(&manifest(&w, "x.gapb")).contains_key("chart:web/Deployment/default/web"));
    assert_secret_absent(&w, CHART_PASS, "x.gapb", "cache", &o);

    // The same credentials from Docker's config.json, as for images.
    let docker = w.path("docker/config.json");
    w.write(
        "docker/config.json",
        &format!(
            "{{\"auths\":{{\"{host}\":{{\"auth\":\"{}\"}}}}}}",
            base64_encode(format!("charts:{CHART_PASS}").as_bytes())
        ),
    );
    let o = ok(create(
        &w,
        None,
        "y.gapb",
        "cache-2",
        &["--docker-config", docker.to_str().unwrap()],
    ));
    assert_eq!(chart_object(&w, "y.gapb").digest, chart.digest);
    assert_secret_absent(&w, CHART_PASS, "y.gapb", "cache-2", &o);

    // Credentials in the URL would travel in the bundle's spec and lock: refused.
    w.write(
        "bundle.yaml",
        &format!(
            "name: x\nversion: \"1\"\ndiscoverImages: false\ncharts:\n  - repo: http://charts:{CHART_PASS}@{host}/\n    name: web\n    version: 0.1.0\n"
        ),
    );
    let err = fails(&create(&w, None, "z.gapb", "cache-3", &[]), 4);
    assert!(
        err.contains("charts[0]") && err.contains(&format!("--registry-auth {host}=USER:PASS")),
        "{err}"
    );
    assert!(!err.contains(CHART_PASS), "{err}");
    assert!(!w.path("z.gapb").exists());
}

#[test]
fn an_oci_chart_on_a_registry_with_htpasswd_takes_registry_auth() {
    let reg = Registry::start_with_htpasswd("charts", CHART_PASS);
    let w = k8s_work();
    let api = write_chart(
        &w.path("src"),
        "api",
        "0.2.0",
        "image: 127.0.0.1:1/none:1\n",
    );
    let api_tgz = package(&api, &w.path("pkg"));
    // Pushed with a registry config of this test's own, not the user's.
    let helm_registry = w.path("helm-registry.json");
    run(tool("helm")
        .env("HELM_REGISTRY_CONFIG", &helm_registry)
        .args(["registry", "login", &reg.addr, "--username", "charts"])
        .args(["--password", CHART_PASS]));
    run(tool("helm")
        .env("HELM_REGISTRY_CONFIG", &helm_registry)
        .arg("push")
        .arg(&api_tgz)
        .arg(format!("oci://{}/charts", reg.addr))
        .arg("--plain-http"));
    w.write(
        "bundle.yaml",
        &format!(
            "name: x\nversion: \"1\"\ndiscoverImages: false\ncharts:\n  - oci: oci://{}/charts/api\n    version: 0.2.0\n",
            reg.addr
        ),
    );
    let no_docker = w.path("no-docker-config.json");
    let no_docker = no_docker.to_str().unwrap();
    let addr = &reg.addr;
    // An empty home: anything Helm would read or write there shows up.
    let home = w.path("home");
    fs::create_dir_all(&home).unwrap();
    let create = |out: &str, extra: &[&str]| {
        create_with(&w, Some(addr), out, "cache", extra)
            .env("HOME", &home)
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("XDG_CACHE_HOME")
            .env_remove("XDG_DATA_HOME")
            .env_remove("HELM_REGISTRY_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    let err = fails(&create("x.gapb", &["--docker-config", no_docker]), 5);
    assert!(
        err.contains(&format!("charts[0]: registry {addr} refused access"))
            && err.contains(&format!("--registry-auth {addr}=USER:PASS")),
        "{err}"
    );
    assert!(!w.path("x.gapb").exists());

    let o = wrong_then_right_registry_auth(addr, no_docker, |extra| create("x.gapb", extra));
    assert_eq!(
        chart_object(&w, "x.gapb").digest.to_string(),
        sha256_file(&api_tgz)
    );
    let lock: Value = serde_json::from_slice(&fs::read(w.path("bundle.lock")).unwrap()).unwrap();
    let key = format!("oci:oci://{addr}/charts/api@0.2.0");
    assert_eq!(lock["charts"][&key]["digest"], sha256_file(&api_tgz));
    assert_secret_absent(&w, CHART_PASS, "x.gapb", "cache", &o);
    // Helm was logged in to a registry config of gapbundle's own.
    let left: Vec<PathBuf> = files_under(&home.join(".config/helm"));
    assert!(
        left.is_empty(),
        "the user's Helm config was written: {left:?}"
    );
}
