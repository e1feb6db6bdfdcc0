//! From a bare host to a running site, against the real parts: files installed
//! below a temporary `--root` (from a local folder, a URL served on loopback, a
//! flake output built by the real Nix) with escapes tried and refused; v1 then v2
//! of a bundle into a real containerd with a second bundle sharing an image, then
//! `list`, `remove` and `--prune`, judged with `ctr`; K3s's own air-gap artifacts
//! as inputs (a docker-archive of several images, plain and gzip-compressed, a zstd
//! oci-archive, an image list), judged with skopeo and `ctr`; fleet mode leaving manifests out; `import --dry-run`
//! to a fleet registry and a Nix store that nothing answers for; and the progress
//! bars of a containerd import and a fleet push of a big layer and of a Nix store
//! import of a big path (from the bundle file and piped in), under a real terminal
//! (`script`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::Digest as _;

use crate::support::*;

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

/// A download server on loopback: the files of `dir`, with Range requests, the
/// first answer for `cut` cut short after half its body (a connection that
/// breaks mid-download, which a real server will not do on demand). Counts the
/// requests it answers.
struct Downloads {
    url: String,
    hits: Arc<AtomicUsize>,
    _server: FakeHttp,
}

impl Downloads {
    fn serve(dir: PathBuf, cut: &str) -> Downloads {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let cut = format!("/{cut}");
        let cut_done = Arc::new(AtomicUsize::new(0));
        let server = FakeHttp::start(move |req| {
            counter.fetch_add(1, Ordering::SeqCst);
            let path = req.path.split('?').next().unwrap_or("");
            let Ok(body) = fs::read(dir.join(path.trim_start_matches('/'))) else {
                return Response::new(404, "");
            };
            let from = req
                .header("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok());
            match from {
                Some(f) if f < body.len() => Response::new(206, body[f..].to_vec()).header(
                    "Content-Range",
                    &format!("bytes {f}-{}/{}", body.len() - 1, body.len()),
                ),
                _ if path == cut && cut_done.fetch_add(1, Ordering::SeqCst) == 0 => {
                    let half = body.len() / 2;
                    Response::new(200, body).cut_after(half)
                }
                _ => Response::new(200, body),
            }
        });
        Downloads {
            url: format!("http://{}", server.addr()),
            hits,
            _server: server,
        }
    }
}

/// Mode bits and bytes of the file at `p` (not followed).
fn file_at(p: &Path) -> (u32, Vec<u8>) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert!(m.is_file(), "{} is not a regular file", p.display());
    (m.permissions().mode() & 0o7777, fs::read(p).unwrap())
}

/// Every path below `dir`, relative, sorted (symlinks not followed).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn files_install_below_a_root_as_a_chroot_sees_it() {
    require_tool("nix");
    let w = Work::new("site-test");
    let unique = format!("gapbundle-site-test-{}", std::process::id());
    // A local file and a folder.
    w.write("dist/k3s", "#!/bin/sh\necho k3s\n");
    fs::set_permissions(w.path("dist/k3s"), fs::Permissions::from_mode(0o755)).unwrap();
    w.write("conf/registries.yaml", "mirrors: {}\n");
    w.write("conf/sub/extra.conf", "x = 1\n");
    // A download: 3 MiB, cut off halfway on the first try.
    let airgap = deterministic_bytes(0x6169_7267_6170, 3 << 20);
    fs::create_dir_all(w.path("www")).unwrap();
    fs::write(w.path("www/k3s-airgap-images-amd64.tar.zst"), &airgap).unwrap();
    let server = Downloads::serve(w.path("www"), "k3s-airgap-images-amd64.tar.zst");
    let sum = sha256_digest(&airgap);
    // A flake output that is a folder (a file of config and an executable).
    w.write(
        "flake/flake.nix",
        &format!(
            r#"{{
  outputs = {{ self }}: {{
    packages.x86_64-linux.site-config = builtins.derivation {{
      name = "gb-site-config";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" "mkdir -p $out/bin; printf 'site=1\n' > $out/{unique}.conf; printf '#!/bin/sh\n' > $out/bin/run; chmod 755 $out/bin/run" ];
      PATH = "/usr/bin:/bin";
    }};
  }};
}}
"#
        ),
    );
    w.write(
        "bundle.yaml",
        &format!(
            "name: bare-host\nversion: \"1\"\nfiles:\n  - path: ./dist/k3s\n    target: /usr/local/bin/k3s\n  - path: ./conf\n    target: /etc/rancher/k3s\n    mode: \"0600\"\n  - url: {}/k3s-airgap-images-amd64.tar.zst\n    sha256: \"{}\"\n    target: /var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst\n  - installable: ./flake#packages.x86_64-linux.site-config\n    target: /etc/site\n",
            server.url,
            sum.trim_start_matches("sha256:")
        ),
    );
    ok(with_nix_config(w.create("site.gapb")).output().unwrap());
    ok(w.verify("site.gapb"));
    let hits = server.hits.load(Ordering::SeqCst);
    assert!(hits >= 2, "the cut download was resumed: {hits} requests");

    // inspect shows every file with its mode, digest, size and source.
    let info = w.inspect("site.gapb");
    let files: BTreeMap<String, Value> = info["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["target"].as_str().unwrap().to_string(), f.clone()))
        .collect();
    let targets: Vec<&str> = files.keys().map(String::as_str).collect();
    let conf = format!("/etc/site/{unique}.conf");
    let mut want = vec![
        "/etc/rancher/k3s/registries.yaml",
        "/etc/rancher/k3s/sub/extra.conf",
        "/etc/site/bin/run",
        conf.as_str(),
        "/usr/local/bin/k3s",
        "/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst",
    ];
    want.sort();
    assert_eq!(targets, want);
    let f = |t: &str| &files[t];
    assert_eq!(f("/usr/local/bin/k3s")["mode"], "0755");
    assert_eq!(f("/usr/local/bin/k3s")["source"], "path:./dist/k3s");
    assert_eq!(f("/etc/rancher/k3s/sub/extra.conf")["mode"], "0600");
    assert_eq!(f("/etc/site/bin/run")["mode"], "0755");
    assert_eq!(f(&conf)["mode"], "0644");
    let air = f("/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst");
    assert_eq!(air["digest"], sum, "a file's digest is its bytes' sha256");
    assert_eq!(air["size"], airgap.len());
    let human = run_stdout(gapbundle().arg("inspect").arg(w.path("site.gapb")));
    assert!(
        human.contains("files\n") && human.contains("/usr/local/bin/k3s"),
        "{human}"
    );

    // A second create takes the download from the cache.
    let before = server.hits.load(Ordering::SeqCst);
    ok(with_nix_config(w.create("again.gapb")).output().unwrap());
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        before,
        "no request for a cached file"
    );

    // The root: /etc/site is a symlink to the *host's* /etc (absolute), and
    // /usr/local/bin one to a folder outside the root. Inside the root both mean
    // the root's own paths; nothing may land in /etc or in `outside`.
    let root = w.path("root");
    let outside = w.path("outside");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("usr/local")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    symlink("/etc", root.join("etc/site")).unwrap();
    symlink(&outside, root.join("usr/local/bin")).unwrap();
    assert!(!Path::new("/etc").join(format!("{unique}.conf")).exists());
    let out = ok(w
        .import(&w.path("site.gapb"))
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("6 new, 0 already present"),
        "{out:?}"
    );
    assert_eq!(
        tree(&outside),
        Vec::<String>::new(),
        "nothing outside the root"
    );
    assert!(
        !Path::new("/etc").join(format!("{unique}.conf")).exists(),
        "nothing in the host's /etc"
    );
    let inside_outside = root.join(outside.strip_prefix("/").unwrap());
    assert_eq!(
        file_at(&inside_outside.join("k3s")),
        (0o755, b"#!/bin/sh\necho k3s\n".to_vec())
    );
    assert_eq!(
        file_at(&root.join(format!("etc/{unique}.conf"))),
        (0o644, b"site=1\n".to_vec())
    );
    assert_eq!(file_at(&root.join("etc/bin/run")).0, 0o755);
    assert_eq!(
        file_at(&root.join("etc/rancher/k3s/sub/extra.conf")),
        (0o600, b"x = 1\n".to_vec())
    );
    assert_eq!(
        file_at(&root.join("var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst")),
        (0o644, airgap.clone())
    );
    assert!(
        !tree(&root).iter().any(|p| p.contains(".gapbundle.")),
        "no temporary file left: {:?}",
        tree(&root)
    );
    // A second import finds every file in place and writes nothing.
    let again = ok(w
        .import(&w.path("site.gapb"))
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("0 new, 6 already present"),
        "{again:?}"
    );

    // `..` in a target: refused before anything is written, even validly signed.
    let key = w.signing_key();
    resign(&w.path("site.gapb"), &w.path("dotdot.gapb"), &key, |m| {
        for o in m["objects"].as_array_mut().unwrap() {
            if o["name"] == "/usr/local/bin/k3s" {
                o["name"] = json!("/usr/local/../../../escape");
            }
        }
    });
    let clean = w.path("clean");
    fs::create_dir_all(&clean).unwrap();
    let o = w
        .import(&w.path("dotdot.gapb"))
        .arg("--root")
        .arg(&clean)
        .output()
        .unwrap();
    let err = fails(&o, 3);
    assert!(err.contains("`..` component"), "{err}");
    assert_eq!(tree(&clean), Vec::<String>::new(), "nothing written");
    assert!(!w.path("escape").exists() && !Path::new("/escape").exists());

    // A target that is a folder on the host: refused before anything is written.
    let dir_root = w.path("dir-root");
    fs::create_dir_all(dir_root.join("usr/local/bin/k3s")).unwrap();
    let o = w
        .import(&w.path("site.gapb"))
        .arg("--root")
        .arg(&dir_root)
        .output()
        .unwrap();
    let err = fails(&o, 1);
    assert!(
        err.contains("usr/local/bin/k3s is a folder on this host"),
        "{err}"
    );
    assert_eq!(
        tree(&dir_root),
        ["usr", "usr/local", "usr/local/bin", "usr/local/bin/k3s"]
    );
}

/// `cmd` run by `sh` with its open-file limit (soft and hard) lowered to `limit`.
fn with_open_files(cmd: &Command, limit: u32) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(std::process::Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// Issue 15 (scale): every staged file and its folder were held open until the
/// end, two open files per file, so ~600 files failed at the usual limit of 1,024
/// ("Too many open files"). 2,000 files in three folders (distinct bytes, shared
/// bytes, empty files, two modes) install under a limit of 256, whole, with their
/// modes, no temporary name left; a rerun writes nothing. A bundle of more folders
/// than the limit allows is refused before anything is written, naming the limit.
#[test]
fn two_thousand_files_install_under_an_open_file_limit_of_256() {
    let w = Work::new("site-test");
    let src = w.path("dist/many");
    let mut want: Vec<(String, u32, Vec<u8>)> = Vec::new();
    for i in 0..2000 {
        let (folder, bytes, mode) = match i % 10 {
            0 => ("shared", b"the same bytes\n".to_vec(), 0o644),
            1 => ("empty", Vec::new(), 0o755),
            n if n < 6 => ("bin", format!("#!/bin/sh\necho {i}\n").into_bytes(), 0o755),
            _ => ("data", format!("{i}\n").into_bytes(), 0o644),
        };
        let rel = format!("{folder}/f{i:04}");
        let p = src.join(&rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, &bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        want.push((rel, mode, bytes));
    }
    w.write(
        "many.yaml",
        "name: many\nversion: \"1\"\nfiles:\n  - path: ./dist/many\n    target: /srv/many\n",
    );
    let create = |spec: &str, out: &str| {
        let mut c = create_cmd(&w.path(spec), &w.path(out), &w.secret(), &w.path("cache"));
        run(c.arg("--quiet"));
    };
    create("many.yaml", "many.gapb");
    let bundle = w.path("many.gapb");
    let root = w.path("root");
    fs::create_dir_all(&root).unwrap();
    let import = |b: &Path, root: &Path| {
        let mut c = w.import(b);
        c.arg("--root").arg(root).arg("--json");
        with_open_files(&c, 256)
    };

    let first = cli_report(&ok(import(&bundle, &root).output().unwrap()), "import");
    assert_eq!(
        first["targets"][0]["result"]["written"]
            .as_array()
            .unwrap()
            .len(),
        2000
    );
    for (rel, mode, bytes) in &want {
        let got = file_at(&root.join("srv/many").join(rel));
        assert!(got == (*mode, bytes.clone()), "{rel}: {:o}", got.0);
    }
    let left: Vec<String> = tree(&root)
        .into_iter()
        .filter(|p| p.contains(".gapbundle."))
        .collect();
    assert!(left.is_empty(), "temporary names left: {left:?}");
    assert_eq!(
        tree(&root).len(),
        2000 + 6,
        "nothing but the files and folders"
    );

    let again = cli_report(&ok(import(&bundle, &root).output().unwrap()), "import");
    assert_eq!(again["targets"][0]["result"]["written"], json!([]));
    assert_eq!(again["targets"][0]["result"]["bytesWritten"], 0);

    // 300 folders need 600 open files to the end: refused up front, clearly.
    let wide = w.path("dist/wide");
    for i in 0..300 {
        fs::create_dir_all(wide.join(format!("d{i:03}"))).unwrap();
        fs::write(wide.join(format!("d{i:03}/f")), format!("{i}\n")).unwrap();
    }
    w.write(
        "wide.yaml",
        "name: wide\nversion: \"1\"\nfiles:\n  - path: ./dist/wide\n    target: /srv/wide\n",
    );
    create("wide.yaml", "wide.gapb");
    let clean = w.path("clean");
    fs::create_dir_all(&clean).unwrap();
    let mut c = w.import(&w.path("wide.gapb"));
    c.arg("--root").arg(&clean);
    let err = fails(&with_open_files(&c, 256).output().unwrap(), 1);
    assert!(
        err.contains("into 300 folder(s)") && err.contains("may open only 256 (ulimit -n)"),
        "{err}"
    );
    assert_eq!(tree(&clean), Vec::<String>::new(), "nothing written");
    // Under a higher limit the same bundle installs.
    ok(with_open_files(&c, 1024).output().unwrap());
    assert_eq!(
        fs::read_to_string(clean.join("srv/wide/d299/f")).unwrap(),
        "299\n"
    );
}

// ---------------------------------------------------------------------------
// The life of imported bundles
// ---------------------------------------------------------------------------

/// `ctr images ls` as REF -> labels.
fn ctr_labels(c: &Containerd) -> BTreeMap<String, String> {
    c.ctr_stdout(&["images", "ls"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.last()?.to_string()))
        })
        .collect()
}

fn pinned(labels: &BTreeMap<String, String>, r: &str) -> bool {
    labels
        .get(r)
        .unwrap_or_else(|| panic!("{r} is not registered: {labels:#?}"))
        .contains("io.cri-containerd.pinned=pinned")
}

/// The image records `name` (a registry reference) is registered under.
fn refs_of(bundle: &Path, name: &str) -> Vec<String> {
    let head = head_of(bundle);
    let o = head
        .manifest
        .objects
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("{name} not in {}", bundle.display()));
    let repo = &name[..name.rfind(':').unwrap()];
    vec![name.to_string(), format!("{repo}@{}", o.digest)]
}

#[test]
fn a_new_version_replaces_the_old_and_remove_leaves_what_another_bundle_needs() {
    let reg = Registry::start();
    push_versions(&reg);
    let ctd = Containerd::start();
    let w = Work::new("site-test");
    let make = |spec: &str, out: &str| {
        w.write("bundle.yaml", spec);
        let _ = fs::remove_file(w.path("bundle.lock"));
        ok(w.create(out)
            .args(["--insecure-registry", &reg.addr, "--quiet"])
            .output()
            .unwrap());
        w.path(out)
    };
    let v1 = make(&versions_spec(&reg, 1), "v1.gapb");
    let v2 = make(&versions_spec(&reg, 2), "v2.gapb");
    let tool = reg.reference("team/tool:1");
    let other = make(
        &format!("name: other\nversion: \"1\"\nplatforms: [linux/amd64]\nimages:\n  - ref: {}\n  - ref: {tool}\n", reg.reference("team/extra:1")),
        "other.gapb",
    );
    let import = |b: &Path, extra: &[&str]| {
        ok(w.import(b)
            .arg("--containerd")
            .arg(ctd.socket())
            .args(extra)
            .output()
            .unwrap())
    };
    let list = || {
        cli_report(
            &run(gapbundle()
                .args(["--json", "list", "--state-dir"])
                .arg(w.state_dir())),
            "list",
        )
    };
    let app1 = refs_of(&v1, &reg.reference("team/app:1"));
    let app2 = refs_of(&v2, &reg.reference("team/app:2"));
    let extra = refs_of(&v2, &reg.reference("team/extra:1"));
    let tools = refs_of(&v1, &tool);

    import(&v1, &[]);
    import(&other, &[]);
    let l = list();
    let names: Vec<(&str, &str)> = l["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap(), b["version"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("other", "1"), ("site", "1")], "{l}");
    let site = &l["bundles"][1];
    assert_eq!(site["complete"], true);
    assert_eq!(site["signers"], json!(["site-test"]));
    assert_eq!(site["targets"][0]["kind"], "containerd");
    assert_eq!(site["targets"][0]["images"].as_array().unwrap().len(), 2);

    // v2: the dry run says what goes, the import does it. app:1 was only v1's: its
    // records are unpinned (still there, kubelet may collect them); tool:1 is in
    // v2 and in `other`, extra:1 is v2's and other's: all stay pinned.
    let dry = run_stdout(
        w.import(&v2)
            .arg("--containerd")
            .arg(ctd.socket())
            .arg("--dry-run"),
    );
    for r in &app1 {
        assert!(dry.contains(&format!("would unpin image {r}")), "{dry}");
    }
    assert!(
        pinned(&ctr_labels(&ctd), &app1[0]),
        "a dry run changes nothing"
    );
    let out = import(&v2, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("replaced site 1"), "{text}");
    let labels = ctr_labels(&ctd);
    for r in &app1 {
        assert!(!pinned(&labels, r), "{r} unpinned: {labels:#?}");
        assert!(
            labels[r].contains("io.cri-containerd.image=managed"),
            "still listed by CRI"
        );
    }
    for r in app2.iter().chain(&tools).chain(&extra) {
        assert!(pinned(&labels, r), "{r}");
    }
    let l = list();
    assert_eq!(l["bundles"][1]["version"], "2", "{l}");

    // Back to v1 with --prune: what only v2 had (app:2) is deleted, not just
    // unpinned; what `other` names (extra:1, tool:1) stays; app:1 is pinned again.
    import(&v1, &["--prune"]);
    let labels = ctr_labels(&ctd);
    for r in &app2 {
        assert!(!labels.contains_key(r), "{r} deleted: {labels:#?}");
    }
    for r in app1.iter().chain(&tools).chain(&extra) {
        assert!(pinned(&labels, r), "{r}");
    }

    // remove: --dry-run first; then site goes and takes app:1 with it, while
    // tool:1, which `other` needs, stays pinned.
    let dry_json = cli_report(
        &run(gapbundle()
            .args(["--json", "remove", "site", "--dry-run", "--state-dir"])
            .arg(w.state_dir())),
        "remove",
    );
    assert_eq!(dry_json["dryRun"], true, "{dry_json}");
    assert!(
        dry_json["wouldRetire"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str() == Some(&format!("unpin image {}", app1[0]))),
        "{dry_json}"
    );
    let dry = run_stdout(
        gapbundle()
            .args(["remove", "site", "--dry-run", "--state-dir"])
            .arg(w.state_dir()),
    );
    assert!(
        dry.contains(&format!("would unpin image {}", app1[0])),
        "{dry}"
    );
    assert!(!dry.contains(&tools[0]), "{dry}");
    let out = run_stdout(
        gapbundle()
            .args(["remove", "site", "--state-dir"])
            .arg(w.state_dir()),
    );
    assert!(
        out.contains(&format!("unpinned image {}", app1[0])),
        "{out}"
    );
    let labels = ctr_labels(&ctd);
    assert!(!pinned(&labels, &app1[0]));
    assert!(pinned(&labels, &tools[0]) && pinned(&labels, &extra[0]));
    let l = list();
    let names: Vec<&str> = l["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other"], "{l}");
    let human = run_stdout(gapbundle().args(["list", "--state-dir"]).arg(w.state_dir()));
    assert!(
        human.contains("other 1") && human.contains("2 image(s) in containerd"),
        "{human}"
    );
    // Removing what is not there says so (bad input).
    let o = gapbundle()
        .args(["remove", "site", "--state-dir"])
        .arg(w.state_dir())
        .output()
        .unwrap();
    assert!(fails(&o, 4).contains("no bundle named `site`"));
    // Each receipt follows its schema.
    let schema: Value = serde_json::from_slice(
        &fs::read(repo().join("bundle-spec/schema/receipt.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    for e in fs::read_dir(w.state_dir().join("receipts")).unwrap() {
        let v: Value = serde_json::from_slice(&fs::read(e.unwrap().path()).unwrap()).unwrap();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{v}");
    }
}

#[test]
fn a_killed_import_leaves_a_receipt_the_next_import_completes() {
    let w = Work::new("site-test");
    w.write("a.conf", "a\n");
    w.write("b.conf", "b\n");
    w.write(
        "bundle.yaml",
        "name: host\nversion: \"1\"\nfiles:\n  - path: ./a.conf\n    target: /etc/a.conf\n",
    );
    ok(w.create("v1.gapb").output().unwrap());
    w.write(
        "bundle.yaml",
        "name: host\nversion: \"2\"\nfiles:\n  - path: ./b.conf\n    target: /etc/b.conf\n",
    );
    ok(w.create("v2.gapb").output().unwrap());
    let root = w.path("root");
    fs::create_dir_all(&root).unwrap();
    let import = |b: &str| {
        w.import(&w.path(b))
            .arg("--root")
            .arg(&root)
            .output()
            .unwrap()
    };
    ok(import("v1.gapb"));
    // v2 dies half-way: its bundle is cut short, so the stream fails after the
    // pending receipt was written and before anything was installed.
    let bytes = fs::read(w.path("v2.gapb")).unwrap();
    fs::write(w.path("cut.gapb"), &bytes[..bytes.len() - 2048]).unwrap();
    fails(&import("cut.gapb"), 3);
    let receipts = w.state_dir().join("receipts");
    let pending: Value =
        serde_json::from_slice(&fs::read(receipts.join("host.importing.json")).unwrap()).unwrap();
    assert_eq!(pending["complete"], false);
    assert_eq!(pending["version"], "2");
    let l = run_stdout(gapbundle().args(["list", "--state-dir"]).arg(w.state_dir()));
    assert!(l.contains("import not finished"), "{l}");
    assert!(root.join("etc/a.conf").exists() && !root.join("etc/b.conf").exists());
    // The rerun from the whole bundle completes it: v1's file goes, v2's is there,
    // and one complete receipt is left.
    ok(import("v2.gapb"));
    assert!(!root.join("etc/a.conf").exists() && root.join("etc/b.conf").exists());
    assert!(!receipts.join("host.importing.json").exists());
    let done: Value =
        serde_json::from_slice(&fs::read(receipts.join("host.json")).unwrap()).unwrap();
    assert_eq!(
        (done["version"].as_str(), done["complete"].as_bool()),
        (Some("2"), Some(true))
    );
}

#[test]
fn the_lock_reads_in_review_and_update_says_which_tags_moved() {
    let reg = Registry::start();
    push_versions(&reg);
    let w = Work::new("site-test");
    w.write("bundle.yaml", &versions_spec(&reg, 1));
    let create = |out: &str, extra: &[&str]| {
        ok(w.create(out)
            .args(["--insecure-registry", &reg.addr])
            .args(extra)
            .output()
            .unwrap())
    };
    create("a.gapb", &[]);
    let lock = fs::read_to_string(w.path("bundle.lock")).unwrap();
    assert!(lock.starts_with("{\n  \"images\": {\n    \"ref:"), "{lock}");
    assert!(lock.ends_with("\n  \"lockVersion\": 1\n}\n"), "{lock}");
    let app = reg.reference("team/app:1");
    let old: Value = serde_json::from_str(&lock).unwrap();
    let old_digest = old["images"][format!("ref:{app}")]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    // The same inputs give the same lock bytes.
    create("b.gapb", &[]);
    assert_eq!(fs::read_to_string(w.path("bundle.lock")).unwrap(), lock);
    // The tag moves upstream (app:1 now names app 2's image); --update says so.
    run(skopeo().args([
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        &format!("oci:{}:app2", versions_layout().display()),
        &format!("docker://{app}"),
    ]));
    let moved = skopeo_digest(&reg.docker_ref("team/app:1"));
    let out = create("c.gapb", &["--update"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("moved ref:{app} ({app}): {old_digest} -> {moved}")),
        "{text}"
    );
    let tool = reg.reference("team/tool:1");
    assert!(!text.contains(&format!("moved ref:{tool}")), "{text}");
    let json = cli_report(&create("d.gapb", &["--update", "--json"]), "create");
    assert_eq!(json["moved"], json!([]), "nothing moved since: {json}");
}

// ---------------------------------------------------------------------------
// K3s's own artifacts as inputs
// ---------------------------------------------------------------------------

/// One docker-archive of several images, as `docker save A B` (and K3s's air-gap
/// tarball) lays it out: the members of single-image archives skopeo wrote, and
/// one `manifest.json` listing all of their images.
fn merge_docker_archives(parts: &[PathBuf], out: &Path) {
    let mut entries: Vec<Value> = Vec::new();
    let mut members: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for p in parts {
        let mut a = tar::Archive::new(fs::File::open(p).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            if name == "manifest.json" {
                let list: Vec<Value> = serde_json::from_slice(&b).unwrap();
                entries.extend(list);
            } else if name != "repositories" {
                members.insert(name, b);
            }
        }
    }
    members.insert(
        "manifest.json".into(),
        serde_json::to_vec(&entries).unwrap(),
    );
    let mut b = tar::Builder::new(fs::File::create(out).unwrap());
    for (name, bytes) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, bytes.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn k3s_air_gap_artifacts_are_inputs() {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let w = Work::new("site-test");
    let layout = fixture_layout().display().to_string();
    // A docker-archive of two images, the second under two names.
    let a = w.path("app.tar");
    let t = w.path("tool.tar");
    run(skopeo().args([
        "copy",
        "--quiet",
        &format!("oci:{layout}:{}", tags::APP),
        &format!("docker-archive:{}:example/app:1.2", a.display()),
    ]));
    run(skopeo().args([
        "copy",
        "--quiet",
        "--additional-tag",
        "example/tool:latest",
        &format!("oci:{layout}:{}", tags::TOOL),
        &format!("docker-archive:{}:example/tool:0.3", t.display()),
    ]));
    merge_docker_archives(&[a.clone(), t.clone()], &w.path("k3s-airgap-images.tar"));
    // A zstd-compressed oci-archive of the multi-arch image, named in its index.
    let oci = w.path("multi.tar");
    run(skopeo().args([
        "copy",
        "--quiet",
        "--all",
        &format!("oci:{layout}:{}", tags::MULTI),
        &format!("oci-archive:{}:example/multi:1.0", oci.display()),
    ]));
    run(tool("zstd").args(["-q", "--rm"]).arg(&oci));
    // An image list as K3s reads one: comments, blank lines, white space.
    w.write(
        "images.txt",
        &format!(
            "# K3s images\n\n  {}  \n{}\n",
            fx.app.reference, fx.tool.reference
        ),
    );
    w.write(
        "bundle.yaml",
        "name: airgap\nversion: \"1\"\nplatforms: [linux/amd64]\nimages:\n  - archive: ./k3s-airgap-images.tar\n  - archive: ./multi.tar.zst\n  - list: ./images.txt\n",
    );
    ok(w.create("airgap.gapb")
        .args(["--insecure-registry", &reg.addr])
        .output()
        .unwrap());
    ok(w.verify("airgap.gapb"));
    let info = w.inspect("airgap.gapb");
    let images: BTreeMap<String, String> = info["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["ref"].as_str().unwrap().to_string(),
                i["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Every image under each of its names, with the digests the registry and the
    // fixture layout give.
    let names: Vec<&str> = images.keys().map(String::as_str).collect();
    let mut want = vec![
        "docker.io/example/app:1.2",
        "docker.io/example/tool:0.3",
        "docker.io/example/tool:latest",
        "example/multi:1.0",
        fx.app.reference.as_str(),
        fx.tool.reference.as_str(),
    ];
    want.sort();
    assert_eq!(names, want, "{info}");
    assert_eq!(
        images["docker.io/example/tool:0.3"], images["docker.io/example/tool:latest"],
        "one image, two names"
    );
    assert_eq!(
        images["example/multi:1.0"], fx.multi.index_digest,
        "the index as published"
    );
    assert_eq!(images[&fx.app.reference], fx.app.manifest_digest);
    // The archive's manifests are the ones skopeo sees in it.
    let tar = w.path("k3s-airgap-images.tar");
    for n in ["docker.io/example/app:1.2", "docker.io/example/tool:0.3"] {
        let m = skopeo_manifest(&format!("docker-archive:{}:{n}", tar.display()), None);
        let head = head_of(&w.path("airgap.gapb"));
        let o = head.manifest.objects.iter().find(|o| o.name == n).unwrap();
        for layer in manifest_layer_digests(&m) {
            assert!(
                o.blobs.iter().any(|b| b.to_string() == layer),
                "{n}: layer {layer} bundled"
            );
        }
    }
    // One lock key per name of a several-image archive.
    let lock: Value = serde_json::from_slice(&fs::read(w.path("bundle.lock")).unwrap()).unwrap();
    let keys: Vec<&str> = lock["images"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(
        keys.contains(&"archive:k3s-airgap-images.tar#docker.io/example/tool:latest"),
        "{keys:?}"
    );
    assert!(keys.contains(&"archive:multi.tar.zst"), "{keys:?}");
    assert!(
        keys.contains(&format!("ref:{}", fx.app.reference).as_str()),
        "{keys:?}"
    );
    // A list line that is not a reference is refused, naming the line.
    w.write("images.txt", "a/b:1\nnot a reference\n");
    let o = w
        .create("bad.gapb")
        .args(["--insecure-registry", &reg.addr])
        .output()
        .unwrap();
    let err = fails(&o, 4);
    assert!(err.contains("images.txt:2: `not a reference`"), "{err}");
}

#[test]
fn a_gzip_compressed_docker_archive_of_several_images_is_an_input_and_lands_whole_in_containerd() {
    require_tool("gzip");
    let ctd = Containerd::start();
    let w = Work::new("site-test");
    let layout = fixture_layout().display().to_string();
    // K3s's own k3s-airgap-images-amd64.tar.gz is this: a docker-archive of several
    // images, gzip-compressed by gzip.
    let parts: Vec<PathBuf> = [
        (tags::APP, "example/app:1.2"),
        (tags::TOOL, "example/tool:0.3"),
    ]
    .iter()
    .map(|(tag, name)| {
        let out = w.path(format!("{}.tar", name.replace(['/', ':'], "-")));
        run(skopeo().args([
            "copy",
            "--quiet",
            &format!("oci:{layout}:{tag}"),
            &format!("docker-archive:{}:{name}", out.display()),
        ]));
        out
    })
    .collect();
    let tar = w.path("k3s-airgap-images-amd64.tar");
    merge_docker_archives(&parts, &tar);
    let original = fs::read(&tar).unwrap();
    run(tool("gzip").args(["-k", "-9"]).arg(&tar));
    let gz = w.path("k3s-airgap-images-amd64.tar.gz");
    assert_eq!(&fs::read(&gz).unwrap()[..2], [0x1f, 0x8b], "gzip wrote it");
    fs::remove_file(&tar).unwrap();
    w.write(
        "bundle.yaml",
        "name: airgap-gz\nversion: \"1\"\nimages:\n  - archive: ./k3s-airgap-images-amd64.tar.gz\n",
    );
    ok(w.create("gz.gapb").output().unwrap());
    ok(w.verify("gz.gapb"));
    // --locked from the same archive gives the same bundle.
    ok(w.create("gz-again.gapb").arg("--locked").output().unwrap());
    assert_eq!(
        fs::read(w.path("gz.gapb")).unwrap(),
        fs::read(w.path("gz-again.gapb")).unwrap()
    );
    let info = w.inspect("gz.gapb");
    let digests: BTreeMap<String, String> = info["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["ref"].as_str().unwrap().to_string(),
                i["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let names = ["docker.io/example/app:1.2", "docker.io/example/tool:0.3"];
    assert_eq!(
        digests.keys().map(String::as_str).collect::<Vec<_>>(),
        names,
        "{info}"
    );

    // Into a real containerd: every image registered under its name with the
    // bundle's digest, complete, and its layers the ones skopeo reads from the
    // archive (uncompressed again here, for skopeo).
    ok(w.import(&w.path("gz.gapb"))
        .arg("--containerd")
        .arg(ctd.socket())
        .output()
        .unwrap());
    fs::write(&tar, &original).unwrap();
    let listed = ctd.ctr_stdout(&["images", "ls"]);
    let check = ctd.ctr_stdout(&["images", "check"]);
    for name in names {
        let row = listed
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in ctr images ls:\n{listed}"));
        assert!(row.contains(&digests[name]), "{row}");
        let row = check
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in ctr images check:\n{check}"));
        assert!(row.contains("complete"), "{row}");
        let exported = w.path("export.tar");
        run(ctd
            .ctr()
            .args(["images", "export", "--platform", "linux/amd64"])
            .arg(&exported)
            .arg(name));
        let from_containerd = skopeo_manifest(&format!("oci-archive:{}", exported.display()), None);
        let from_archive =
            skopeo_manifest(&format!("docker-archive:{}:{name}", tar.display()), None);
        assert_eq!(
            manifest_layer_digests(&from_containerd),
            manifest_layer_digests(&from_archive),
            "{name}: {from_containerd}\n{from_archive}"
        );
        fs::remove_file(&exported).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Fleet mode and manifests
// ---------------------------------------------------------------------------

#[test]
fn fleet_mode_leaves_manifests_out_unless_asked() {
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let fleet = Registry::start();
    let w = Work::new("site-test");
    w.write(
        "pod.yaml",
        &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec:\n  containers: [{{name: a, image: \"{}\"}}]\n", fx.app.reference),
    );
    w.write(
        "bundle.yaml",
        "name: fleet-app\nversion: \"1\"\nplatforms: [linux/amd64]\nmanifests:\n  - path: ./pod.yaml\n",
    );
    ok(w.create("f.gapb")
        .args(["--insecure-registry", &reg.addr])
        .output()
        .unwrap());
    let push = |extra: &[&str]| {
        ok(w.import(&w.path("f.gapb"))
            .args([
                "--registry",
                &fleet.addr,
                "--insecure-registry",
                &fleet.addr,
            ])
            .args(extra)
            .output()
            .unwrap())
    };
    let folder = w.k3s_root().join("server/manifests/fleet-app");
    let out = push(&[]);
    assert!(!folder.exists(), "a fleet import writes no manifests here");
    assert!(
        stderr(&out).contains("--local-manifests"),
        "{}",
        stderr(&out)
    );
    push(&["--local-manifests"]);
    assert!(folder.join("manifests-pod.yaml").is_file());
}

// ---------------------------------------------------------------------------
// What an operator sees
// ---------------------------------------------------------------------------

/// `import --dry-run` of `bundle` to the fleet registry `registry` and the Nix
/// store `store` (`--json` when `json`).
fn dry_run_to(w: &Work, bundle: &Path, registry: &str, store: &str, json: bool) -> Output {
    let mut c = with_nix_config(w.import(bundle));
    c.args(["--registry", registry, "--insecure-registry", registry])
        .args(["--nix-store", store, "--retries", "1", "--dry-run"]);
    if json {
        c.arg("--json");
    }
    c.output().unwrap()
}

#[test]
fn a_dry_run_plans_a_fleet_registry_and_a_nix_store_it_cannot_reach() {
    require_tool("nix");
    let reg = Registry::start();
    let fx = push_fixture_images(&reg, None);
    let w = Work::new("site-test");
    w.write(
        "flake/flake.nix",
        &sh_flake(
            r#"    app = mk "gb-dry-run-app" "mkdir $out; echo dry > $out/run";"#,
            "inherit app;",
        ),
    );
    w.write(
        "bundle.yaml",
        &format!(
            "name: dry\nversion: \"1\"\nplatforms: [linux/amd64]\nimages:\n  - ref: {}\nnix:\n  - installable: ./flake#packages.x86_64-linux.app\n",
            fx.app.reference
        ),
    );
    ok(with_nix_config(w.create("dry.gapb"))
        .args(["--insecure-registry", &reg.addr])
        .output()
        .unwrap());
    let bundle = w.path("dry.gapb");
    // Nothing listens on the registry's port, and no daemon on the store's socket.
    let registry = format!("127.0.0.1:{}", free_port());
    let socket = w.path("no-daemon.sock");
    let store = format!("unix://{}", socket.display());

    // Exit code 0, and per target: planned as if it held nothing, which target it
    // could not reach, why, and the next step.
    let o = ok(dry_run_to(&w, &bundle, &registry, &store, false));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.starts_with("dry run: dry 1 ("), "{text}");
    assert!(text.contains("nothing changed"), "{text}");
    let section = |target: &str| -> String {
        let at = text
            .find(&format!("  {target}: "))
            .unwrap_or_else(|| panic!("no {target} in {text}"));
        let rest = &text[at + 2..];
        let end = rest
            .find("\n  registry ")
            .filter(|e| *e > 0)
            .unwrap_or(rest.len());
        rest[..end].to_string()
    };
    let nix_part = section(&format!("nix store {store}"));
    let fleet_part = section(&format!("registry {registry}"));
    let nix_path = nix_built(&w.path("flake"), "app");
    for (part, new, why) in [
        (
            &nix_part,
            format!("new      nix-path {nix_path}"),
            vec!["Is nix-daemon running", &*socket.to_string_lossy()],
        ),
        (
            &fleet_part,
            format!("new      {registry}/team/app:1.2"),
            vec!["is the registry running there", "connection refused"],
        ),
    ] {
        assert!(part.contains(": 1 new, 0 already present, "), "{part}");
        assert!(
            part.contains("not reachable, so what it holds was not checked"),
            "{part}"
        );
        assert!(part.contains(&new), "{part}");
        for w in why {
            assert!(part.contains(w), "{w:?} in {part}");
        }
    }
    // --json: the plan follows its schema (cli_report checks), each target says why
    // it was not reached, and the sizes are those of the same targets reachable and
    // empty: a fresh fleet registry and a fresh store.
    let plan = cli_report(
        &ok(dry_run_to(&w, &bundle, &registry, &store, true)),
        "import-plan",
    );
    let fleet = Registry::start();
    let fresh = chroot_store(&w.path("fresh-store"));
    let live = cli_report(
        &ok(dry_run_to(&w, &bundle, &fleet.addr, &fresh, true)),
        "import-plan",
    );
    let targets = plan["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2, "{plan}");
    for (t, l) in targets.iter().zip(live["targets"].as_array().unwrap()) {
        let why = t["plan"]["unreachable"]
            .as_str()
            .unwrap_or_else(|| panic!("{plan}"));
        assert!(
            why.contains("Is nix-daemon running") || why.contains("is the registry running there"),
            "{why}"
        );
        assert!(l["plan"].get("unreachable").is_none(), "{live}");
        assert!(t["plan"]["bytesToWrite"].as_u64().unwrap() > 0, "{plan}");
        assert_eq!(
            t["plan"]["bytesToWrite"], l["plan"]["bytesToWrite"],
            "planned unreached as reached: {plan}\n{live}"
        );
        assert_eq!(
            t["plan"]["newObjects"].as_array().unwrap().len(),
            l["plan"]["newObjects"].as_array().unwrap().len(),
            "{plan}\n{live}"
        );
    }
    // Without --dry-run, each one alone stops the import before anything is
    // written: exit code 5, naming the target and the next step.
    let mut c = with_nix_config(w.import(&bundle));
    c.args(["--skip-images", "--nix-store", &store]);
    let e = fails(&c.output().unwrap(), 5);
    assert!(
        e.contains(&format!("nix store {store} cannot be reached"))
            && e.contains("Is nix-daemon running"),
        "{e}"
    );
    let mut c = w.import(&bundle);
    c.args([
        "--skip-nix",
        "--registry",
        &registry,
        "--insecure-registry",
        &registry,
    ])
    .args(["--retries", "1"]);
    let e = fails(&c.output().unwrap(), 5);
    assert!(
        e.contains(&registry) && e.contains("is the registry running there"),
        "{e}"
    );
    assert!(!w.state_dir().join("receipts/dry.json").exists());

    // A path signature that does not verify is refused by the dry run too, though
    // the store could not be asked what it holds (the plan checks signatures only
    // once it knows a path goes to the store; unreached, every path would).
    let key = w.signing_key();
    resign(&bundle, &w.path("badsig.gapb"), &key, |m| {
        for o in m["objects"].as_array_mut().unwrap() {
            if o["kind"] == "nix-path" {
                o["meta"]["sigs"] = json!([gapbundle::nixfmt::sign_path(&key, "not it")]);
            }
        }
    });
    let o = dry_run_to(&w, &w.path("badsig.gapb"), &registry, &store, false);
    let e = fails(&o, 3);
    assert!(e.contains("no valid path signature"), "{e}");
}

/// A sha256 of a file, streamed.
fn sha256_file(p: &Path) -> String {
    let mut h = sha2::Sha256::new();
    let mut f = fs::File::open(p).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// An OCI layout at `dir` with one image tagged `big`: one uncompressed layer
/// holding a file of `size` zero bytes, written as a stream.
fn big_layout(dir: &Path, size: u64) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let layer = dir.join("layer.tar");
    {
        let mut b = tar::Builder::new(std::io::BufWriter::new(fs::File::create(&layer).unwrap()));
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "big.bin", std::io::repeat(0).take(size))
            .unwrap();
        b.into_inner().unwrap().flush().unwrap();
    }
    let layer_digest = sha256_file(&layer);
    let layer_size = fs::metadata(&layer).unwrap().len();
    fs::rename(
        &layer,
        blobs.join(layer_digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    let put = |bytes: Vec<u8>| {
        let d = sha256_digest(&bytes);
        fs::write(blobs.join(d.trim_start_matches("sha256:")), &bytes).unwrap();
        (d, bytes.len())
    };
    let (config, config_size) = put(serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap());
    let (manifest, manifest_size) = put(
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
        }))
        .unwrap(),
    );
    fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": OCI_MANIFEST_MEDIA_TYPE, "digest": manifest, "size": manifest_size,
                           "annotations": {"org.opencontainers.image.ref.name": "big"}}],
        }))
        .unwrap(),
    )
    .unwrap();
}

/// The byte counts a progress bar drew (`12.50 MiB/300.01 MiB`) whose total is
/// at least `min_total` MiB, in MiB.
fn drawn_counts(screen: &str, min_total: f64) -> Vec<f64> {
    let mib = |v: f64, unit: &str| match unit {
        "B" => v / 1048576.0,
        "KiB" => v / 1024.0,
        "MiB" => v,
        "GiB" => v * 1024.0,
        _ => f64::NAN,
    };
    let mut out = Vec::new();
    for (i, _) in screen.match_indices('/') {
        let before: Vec<&str> = screen[..i].split_whitespace().rev().take(2).collect();
        let after: Vec<&str> = screen[i + 1..].split_whitespace().take(2).collect();
        let (Some(unit), Some(value), Some(total), Some(total_unit)) =
            (before.first(), before.get(1), after.first(), after.get(1))
        else {
            continue;
        };
        let value = value.trim_start_matches(|c: char| !c.is_ascii_digit());
        let (Ok(v), Ok(t)) = (value.parse::<f64>(), total.parse::<f64>()) else {
            continue;
        };
        if mib(
            t,
            total_unit.trim_end_matches(|c: char| !c.is_ascii_alphabetic()),
        ) >= min_total
        {
            out.push(mib(v, unit));
        }
    }
    out
}

#[test]
fn the_containerd_bar_moves_with_the_bytes_of_a_300_mib_layer() {
    require_tool("script");
    let ctd = Containerd::start();
    let w = Work::new("site-test");
    big_layout(&w.path("big"), 300 << 20);
    w.write(
        "bundle.yaml",
        "name: big\nversion: \"1\"\nimages:\n  - layout: ./big:big\n    name: example.test/big:1\n",
    );
    ok(w.create("big.gapb").arg("--quiet").output().unwrap());
    fs::remove_dir_all(w.path("big")).unwrap();
    let mut cmd = w.import(&w.path("big.gapb"));
    cmd.arg("--containerd").arg(ctd.socket());
    let screen = under_a_terminal(&cmd);
    assert!(screen.contains("imported big 1"), "{screen}");
    assert_moved_with_the_bytes(&screen, 299.0);
    fs::remove_file(w.path("big.gapb")).unwrap();
    fs::remove_dir_all(w.path("cache")).unwrap();
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What `cmd` (a gapbundle command) draws when an operator runs it on a terminal:
/// `script` gives it a pty and copies the screen to its stdout. `cmd`'s
/// environment is passed on; the run must succeed.
fn under_a_terminal(cmd: &Command) -> String {
    under_a_terminal_from(cmd, None)
}

/// [`under_a_terminal`], with `stdin` (when given) as the command's standard input.
fn under_a_terminal_from(cmd: &Command, stdin: Option<&Path>) -> String {
    let mut line = shell_quote(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(&a.to_string_lossy()));
    }
    if let Some(f) = stdin {
        line.push_str(" < ");
        line.push_str(&shell_quote(&f.to_string_lossy()));
    }
    let mut script = tool("script");
    script
        .args([
            "--quiet",
            "--flush",
            "--return",
            "--command",
            &line,
            "/dev/null",
        ])
        .env("COLUMNS", "160");
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    let out = ok(script.output().unwrap());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts that `screen` shows a bar of at least `total` MiB at some count
/// strictly between 1 MiB and `total - 1`: it moved with the bytes, not only at
/// the start and the end.
fn assert_moved_with_the_bytes(screen: &str, total: f64) {
    let counts = drawn_counts(screen, total);
    let between: Vec<&f64> = counts
        .iter()
        .filter(|c| **c > 1.0 && **c < total - 1.0)
        .collect();
    assert!(
        !between.is_empty(),
        "the bar showed intermediate byte counts of the {total} MiB: {counts:?}\n{screen}"
    );
}

#[test]
fn the_fleet_push_bar_moves_with_the_bytes_of_a_200_mib_layer() {
    require_tool("script");
    let fleet = Registry::start();
    let w = Work::new("site-test");
    big_layout(&w.path("big"), 200 << 20);
    w.write(
        "bundle.yaml",
        "name: big\nversion: \"1\"\nimages:\n  - layout: ./big:big\n    name: example.test/big:1\n",
    );
    ok(w.create("big.gapb").arg("--quiet").output().unwrap());
    fs::remove_dir_all(w.path("big")).unwrap();
    fs::remove_dir_all(w.path("cache")).unwrap();
    let mut cmd = w.import(&w.path("big.gapb"));
    cmd.args([
        "--registry",
        &fleet.addr,
        "--insecure-registry",
        &fleet.addr,
    ]);
    let screen = under_a_terminal(&cmd);
    assert!(screen.contains("imported big 1"), "{screen}");
    assert_moved_with_the_bytes(&screen, 199.0);
    // What the bar counted arrived: skopeo reads the image from the fleet registry
    // (`example.test/big:1` keeps its path and tag there).
    let m = skopeo_manifest(&fleet.docker_ref("big:1"), None);
    assert_eq!(manifest_layer_digests(&m).len(), 1, "{m}");
    fs::remove_file(w.path("big.gapb")).unwrap();
}

#[test]
fn the_nix_store_bar_moves_with_the_bytes_of_a_64_mib_path() {
    nix_store_bar_moves_with_the_bytes(false, 64);
}

/// The bundle piped in: its NARs are staged as a `file://` cache that Nix reads
/// itself, so the bar follows the bytes Nix has read (it used to move a path at a
/// time, here all at once). Nix copies 64 MiB from a local cache in about 0.15 s
/// on an idle machine, too fast to see a count on the way: this path is larger.
#[test]
fn the_nix_store_bar_moves_with_the_bytes_of_a_192_mib_path_from_stdin() {
    nix_store_bar_moves_with_the_bytes(true, 192);
}

/// Imports a bundle of one store path of `mib` MiB (from a file, or piped in) and
/// checks that the Nix bar showed a count on the way.
fn nix_store_bar_moves_with_the_bytes(from_stdin: bool, mib: u64) {
    require_tool("script");
    require_tool("nix");
    let w = Work::new("site-test");
    // Random bytes: the NAR blob stays as large once zstd-compressed.
    w.write(
        "flake/flake.nix",
        &sh_flake(
            &format!(
                r#"    big = mk "gb-progress-{}-{mib}" "head -c {} /dev/urandom > $out";"#,
                std::process::id(),
                mib << 20
            ),
            "inherit big;",
        ),
    );
    w.write(
        "bundle.yaml",
        "name: big-nix\nversion: \"1\"\nnix:\n  - installable: ./flake#packages.x86_64-linux.big\n",
    );
    ok(with_nix_config(w.create("nix.gapb"))
        .arg("--quiet")
        .output()
        .unwrap());
    fs::remove_dir_all(w.path("cache")).unwrap();
    let path = nix_built(&w.path("flake"), "big");
    let _built = HostPaths(vec![path.clone()]);
    let root = w.path("store");
    let bundle = w.path("nix.gapb");
    let mut cmd = with_nix_config(w.import(if from_stdin { Path::new("-") } else { &bundle }));
    cmd.arg("--nix-store").arg(chroot_store(&root));
    let screen = under_a_terminal_from(&cmd, from_stdin.then_some(bundle.as_path()));
    assert!(screen.contains("imported big-nix 1"), "{screen}");
    // The Nix bar's own counts: piped in, the bar that reads the bundle moves with
    // the bytes too.
    let nix_bar: String = screen
        .split(['\r', '\n'])
        .filter(|l| l.contains("Nix paths into"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_moved_with_the_bytes(&nix_bar, mib as f64 - 1.0);
    assert_eq!(
        valid_in(&root, std::slice::from_ref(&path)),
        [path.as_str()]
    );
    fs::remove_file(bundle).unwrap();
}
