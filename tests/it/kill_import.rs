//! kill -9 at several points of an import, for every target, then a rerun: the
//! target must end up complete (checked with the target's own tool: `ctr images
//! check`, `nix store verify`, skopeo, the files themselves), and nothing may be
//! left in the temporary folders (each test gives the import a `$TMPDIR` of its
//! own) or the target's own folders. Kill points are chosen by watching the
//! target (bytes in containerd's ingest, a path appearing in the store, a file in
//! a folder) or by holding the bundle's stream in a pipe, never by a sleep.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;

/// A bundle of one image whose only layer is `len` random bytes, from a local
/// layout; returns the bundle and the image's name.
fn big_image_bundle(w: &Work, len: usize) -> (PathBuf, String) {
    big_layout_fixture(&w.path("big"), 7, len);
    let name = "example.local/team/big:1.0".to_string();
    w.write(
        "bundle.yaml",
        &format!(
            "name: big\nversion: \"1\"\nimages:\n  - layout: ./big:latest\n    name: {name}\n"
        ),
    );
    run(w.create("big.gapb").arg("--quiet"));
    (w.path("big.gapb"), name)
}

/// `gapbundle import` into containerd `ctd` with `$TMPDIR` set to `tmp`.
fn import_into(w: &Work, ctd: &Containerd, bundle: &Path, tmp: &Path) -> Command {
    let mut c = w.import(bundle);
    c.arg("--containerd").arg(ctd.socket()).env("TMPDIR", tmp);
    c
}

/// Bytes of gapbundle's active ingests (`ctr content active`).
fn ingest_bytes(ctd: &Containerd) -> u64 {
    ctd.ctr_stdout(&["content", "active"])
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("gapbundle"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(parse_size)
        .sum()
}

/// `ctr`'s human sizes (`1.5 MiB`, `12 B`, `3.0MiB`) as a lower bound in bytes; any
/// non-zero size is non-zero.
fn parse_size(s: &str) -> Option<u64> {
    let digits: String = s
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let v: f64 = digits.parse().ok()?;
    Some(if v > 0.0 { v.ceil() as u64 } else { 0 })
}

/// Everything gapbundle may leave in containerd after a finished import: none of
/// its leases, no active ingest and no `extract-` snapshot of its own.
fn assert_no_containerd_leftovers(ctd: &Containerd) {
    let leases = ctd.ctr_stdout(&["leases", "ls"]);
    assert!(
        !leases.lines().any(|l| l.starts_with("gapbundle")),
        "leases left:\n{leases}"
    );
    let active = ctd.ctr_stdout(&["content", "active"]);
    assert_eq!(active.lines().skip(1).count(), 0, "ingests left:\n{active}");
    let snaps = ctd.ctr_stdout(&["snapshots", "--snapshotter", "overlayfs", "ls"]);
    assert!(
        !snaps
            .lines()
            .any(|l| l.contains("extract-") || l.contains("Active")),
        "extraction snapshots left:\n{snaps}"
    );
}

/// `ctr images check` says `name` is complete and unpacked.
fn assert_image_complete(ctd: &Containerd, name: &str) {
    let check = ctd.ctr_stdout(&["images", "check"]);
    let line = check
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("ctr images check lacks {name}:\n{check}"));
    assert!(line.contains("complete"), "{name} incomplete: {line}");
    assert!(
        line.trim_end().ends_with("true"),
        "{name} not unpacked: {line}"
    );
}

/// Regression (issue 11, item 1): kill -9 while a large layer streams into
/// containerd left an ingest that every rerun failed on (`write @N must occur at
/// current offset M (OutOfRange)`) and a 24 h lease per run. Now a rerun resumes or
/// restarts the stale ingest and removes the killed run's lease; killed again
/// while unpacking, the rerun leaves no `extract-` snapshot either.
#[test]
fn containerd_import_killed_while_a_layer_streams_or_unpacks_completes_on_rerun() {
    let w = Work::new("kill-test");
    let (bundle, name) = big_image_bundle(&w, 40 << 20);
    let head = head_of(&bundle);
    let big = head
        .manifest
        .blobs
        .iter()
        .max_by_key(|b| b.size)
        .unwrap()
        .clone();
    let ctd = Containerd::start();
    let tmp = private_tmp(w.root());

    // 1. The bundle comes through a pipe that stops in the middle of the big
    //    layer; killed once containerd's ingest holds some of it.
    let bytes = fs::read(&bundle).unwrap();
    let cut = (head.data_start + big.offset.unwrap() + big.size / 2) as usize;
    let mut child = spawn_quiet(import_into(&w, &ctd, Path::new("-"), &tmp).stdin(Stdio::piped()));
    let stdin = feed_part(&mut child, &bytes[..cut]);
    assert!(
        kill_when(
            &mut child,
            "containerd's ingest of the layer shows bytes",
            || { ingest_bytes(&ctd) > 0 }
        ),
        "the import cannot finish on half a bundle"
    );
    drop(stdin);
    assert!(ingest_bytes(&ctd) > 0, "the killed run left its ingest");

    // The rerun, from the file, must finish (twice: the second is a no-op).
    run(&mut import_into(&w, &ctd, &bundle, &tmp));
    assert_image_complete(&ctd, &name);
    assert_no_containerd_leftovers(&ctd);
    assert_nothing_left(&tmp, "$TMPDIR");

    // 2. A fresh containerd, killed while the layer is being unpacked (an
    //    `extract-` snapshot is active).
    drop(ctd);
    let ctd = Containerd::start();
    let mut caught = false;
    for _ in 0..3 {
        let mut child = spawn_quiet(import_into(&w, &ctd, &bundle, &tmp).stdin(Stdio::null()));
        caught = kill_when(&mut child, "an extraction snapshot is active", || {
            ctd.ctr_stdout(&["snapshots", "--snapshotter", "overlayfs", "ls"])
                .lines()
                .any(|l| l.contains("extract-"))
        });
        if caught {
            break;
        }
        // Finished before the moment came: start again from an empty containerd.
        for id in ctd.ctr_stdout(&["images", "ls", "-q"]).lines() {
            ctd.ctr_stdout(&["images", "rm", "--sync", id]);
        }
    }
    assert!(caught, "never caught the import while it unpacked");
    run(&mut import_into(&w, &ctd, &bundle, &tmp));
    assert_image_complete(&ctd, &name);
    assert_no_containerd_leftovers(&ctd);
    assert_nothing_left(&tmp, "$TMPDIR");
}

/// The bundle's bytes up to the middle of its largest blob: fed through a pipe,
/// they stop an import there.
fn up_to_middle_of_largest_blob(bundle: &Path) -> Vec<u8> {
    let head = head_of(bundle);
    let big = head.manifest.blobs.iter().max_by_key(|b| b.size).unwrap();
    let cut = (head.data_start + big.offset.unwrap() + big.size / 2) as usize;
    let mut bytes = fs::read(bundle).unwrap();
    bytes.truncate(cut);
    bytes
}

/// Whether `dir` holds, at any depth, a file with bytes in it that is a temporary
/// file of ours or inside a temporary folder of ours.
fn temp_with_bytes(dir: &Path) -> bool {
    tree_of(dir).iter().any(|p| {
        p.split('/').any(|c| c.starts_with(".gapbundle."))
            && fs::metadata(dir.join(p)).is_ok_and(|m| m.is_file() && m.len() > 0)
    })
}

/// Runs `import` with the first half of `bundle` on its stdin and kills it once
/// `reached` holds (the pipe holds it there, so this does not depend on timing).
fn kill_mid_stream(mut import: Command, bundle: &Path, what: &str, reached: impl FnMut() -> bool) {
    let part = up_to_middle_of_largest_blob(bundle);
    let mut child = spawn_quiet(import.stdin(Stdio::piped()));
    let stdin = feed_part(&mut child, &part);
    assert!(
        kill_when(&mut child, what, reached),
        "the import cannot finish on half a bundle"
    );
    drop(stdin);
}

/// `--staged`: killed while the archive streams into `agent/images`, the rerun
/// writes the whole archive (which `ctr images import` takes) and removes the
/// killed run's temporary file.
#[test]
fn a_staged_archive_killed_while_it_streams_is_whole_after_a_rerun() {
    let w = Work::new("kill-test");
    let (bundle, name) = big_image_bundle(&w, 24 << 20);
    let tmp = private_tmp(w.root());
    let images = w.k3s_root().join("agent/images");
    let staged = |b: &Path| {
        let mut c = w.import(b);
        c.arg("--staged").env("TMPDIR", &tmp);
        c
    };
    kill_mid_stream(
        staged(Path::new("-")),
        &bundle,
        "the archive has bytes",
        || temp_with_bytes(&images),
    );
    assert_eq!(temp_names(&images).len(), 1, "{:?}", tree_of(&images));
    assert!(
        !images.join("big.tar").exists(),
        "no half archive under its name"
    );

    run(&mut staged(&bundle));
    assert_eq!(tree_of(&images), vec!["big.tar".to_string()]);
    assert_nothing_left(&tmp, "$TMPDIR");
    let ctd = Containerd::start();
    let archive = images.join("big.tar");
    ctd.ctr_stdout(&["images", "import", archive.to_str().unwrap()]);
    assert_image_complete(&ctd, &name);
}

/// A signed bundle of one Nix path whose NAR is a file of `len` random bytes.
fn big_nix_bundle(w: &Work, len: usize) -> (PathBuf, String) {
    let path = format!("/nix/store/{}-kill-test-big", "c".repeat(32));
    let bundle = w.path("big-nix.gapb");
    nix_path_bundle(
        &bundle,
        &w.signing_key(),
        "big-nix",
        &path,
        &file_nar(&deterministic_bytes(5, len)),
        None,
        |_| {},
    );
    (bundle, path)
}

/// `gapbundle import BUNDLE --nix-store TARGET`, Nix offline, `$TMPDIR` at `tmp`.
fn nix_import(w: &Work, bundle: &Path, target: &str, tmp: &Path) -> Command {
    let mut c = with_nix_config(w.import(bundle));
    c.arg("--nix-store").arg(target).env("TMPDIR", tmp);
    c
}

/// A Nix store: killed while a piped bundle is staged in `$TMPDIR`, and killed
/// while Nix restores the path from the bundle served in place; each time the
/// rerun adds the path, Nix finds every path of the store registered and sound
/// (`nix store verify`), and `$TMPDIR` is empty.
#[test]
fn a_nix_store_import_killed_while_staging_or_copying_completes_on_rerun() {
    let w = Work::new("kill-test");
    let (bundle, path) = big_nix_bundle(&w, 32 << 20);
    let tmp = private_tmp(w.root());

    let root = w.path("store-1");
    let target = root.display().to_string();
    kill_mid_stream(
        nix_import(&w, Path::new("-"), &target, &tmp),
        &bundle,
        "the staged NAR has bytes",
        || temp_with_bytes(&tmp),
    );
    assert!(!tree_of(&tmp).is_empty(), "the killed run left its stage");
    run(&mut nix_import(&w, &bundle, &target, &tmp));
    assert_eq!(
        valid_in(&root, std::slice::from_ref(&path)),
        vec![path.clone()]
    );
    assert_store_sound(&root);
    assert_nothing_left(&tmp, "$TMPDIR");

    let mut caught = None;
    for attempt in 0..3 {
        // A fresh store each time: one the import finished in is no kill test.
        let root = w.path(format!("store-2-{attempt}"));
        let mut child = spawn_quiet(
            nix_import(&w, &bundle, &root.display().to_string(), &tmp).stdin(Stdio::null()),
        );
        if kill_when(&mut child, "Nix is restoring the path", || {
            store_entries(&root).contains(&path)
        }) {
            caught = Some(root);
            break;
        }
    }
    let root = caught.expect("never caught Nix while it restored the path");
    run(&mut nix_import(
        &w,
        &bundle,
        &root.display().to_string(),
        &tmp,
    ));
    assert_eq!(
        valid_in(&root, std::slice::from_ref(&path)),
        vec![path.clone()]
    );
    assert_store_sound(&root);
    assert_nothing_left(&tmp, "$TMPDIR");
}

/// A Nix store: killed while one `nix-store --serve --write` takes 600 small paths
/// (the kind streamed from the bundle file, NAR at most 1 MiB), after Nix
/// registered some of them; the rerun adds the rest, and Nix finds every path
/// registered, sound and signed by the bundle's key.
#[test]
fn a_nix_store_import_of_small_paths_killed_mid_stream_completes_signed_on_rerun() {
    let w = Work::new("kill-test");
    let paths: Vec<(String, Vec<u8>)> = (0..600)
        .map(|i| {
            (
                format!("/nix/store/{i:032}-kill-test-small"),
                // Odd seeds: deterministic_bytes sets the low bit.
                file_nar(&deterministic_bytes(1001 + 2 * i as u64, 16 << 10)),
            )
        })
        .collect();
    let bundle = w.path("small-nix.gapb");
    nix_paths_bundle(&bundle, &w.signing_key(), "small-nix", &paths);
    let names: Vec<String> = paths.iter().map(|(p, _)| p.clone()).collect();
    let tmp = private_tmp(w.root());
    let mut caught = None;
    for attempt in 0..3 {
        let root = w.path(format!("store-{attempt}"));
        let mut child = spawn_quiet(
            nix_import(&w, &bundle, &root.display().to_string(), &tmp).stdin(Stdio::null()),
        );
        if kill_when(&mut child, "Nix has registered some of the paths", || {
            let n = valid_in(&root, &names).len();
            n > 0 && n < names.len()
        }) {
            caught = Some(root);
            break;
        }
    }
    let root = caught.expect("never caught Nix between the first and the last path");
    run(&mut nix_import(
        &w,
        &bundle,
        &root.display().to_string(),
        &tmp,
    ));
    assert_eq!(valid_in(&root, &names), names);
    assert_store_sound(&root);
    // Signed: with the bundle's key the only trusted one, every path needs its
    // signature (`nix store verify` without `--no-trust`).
    let key = fs::read_to_string(w.public()).unwrap();
    run(nix("nix")
        .args(["store", "verify", "--store"])
        .arg(chroot_store(&root))
        .args(["--option", "trusted-public-keys", key.trim()])
        .args(&names));
    assert_nothing_left(&tmp, "$TMPDIR");
}

/// A `file://` cache: killed while a NAR streams into `nar/`, the rerun leaves a
/// cache Nix copies the path from (and checks), with no temporary file in it.
#[test]
fn a_file_cache_import_killed_while_a_nar_streams_completes_on_rerun() {
    let w = Work::new("kill-test");
    let (bundle, path) = big_nix_bundle(&w, 24 << 20);
    let tmp = private_tmp(w.root());
    let cache = w.path("cache");
    let url = format!("file://{}", cache.display());
    kill_mid_stream(
        nix_import(&w, Path::new("-"), &url, &tmp),
        &bundle,
        "the NAR in nar/ has bytes",
        || temp_with_bytes(&cache.join("nar")),
    );
    assert_eq!(temp_names(&cache.join("nar")).len(), 1);
    run(&mut nix_import(&w, &bundle, &url, &tmp));
    assert_eq!(temp_names(&cache), Vec::<String>::new());
    assert_eq!(temp_names(&cache.join("nar")), Vec::<String>::new());
    assert_nothing_left(&tmp, "$TMPDIR");
    let store = w.path("store");
    run(nix("nix")
        .args(["copy", "--from", &url, "--to"])
        .arg(chroot_store(&store))
        .args(["--option", "trusted-public-keys"])
        .arg(fs::read_to_string(w.public()).unwrap().trim())
        .arg(&path));
    assert_store_sound(&store);
}

/// Files in `dir` and below named `name` with bytes in them.
fn files_named(dir: &Path, name: &str) -> usize {
    tree_of(dir)
        .iter()
        .filter(|p| Path::new(p).file_name().is_some_and(|n| n == name))
        .filter(|p| fs::metadata(dir.join(p)).is_ok_and(|m| m.len() > 0))
        .count()
}

/// A fleet registry: killed while the large layer uploads, the rerun pushes the
/// image, which skopeo copies out of the registry with every digest checked.
#[test]
fn a_fleet_push_killed_while_a_layer_uploads_completes_on_rerun() {
    let w = Work::new("kill-test");
    let (bundle, name) = big_image_bundle(&w, 24 << 20);
    let tmp = private_tmp(w.root());
    let fleet = Registry::start();
    let push = |b: &Path| {
        let mut c = w.import(b);
        c.args([
            "--registry",
            &fleet.addr,
            "--insecure-registry",
            &fleet.addr,
        ])
        .arg("--skip-manifests")
        .env("TMPDIR", &tmp);
        c
    };
    kill_mid_stream(
        push(Path::new("-")),
        &bundle,
        "the registry holds part of the upload",
        || {
            files_named(&fleet.storage(), "data") > 0
                && tree_of(&fleet.storage())
                    .iter()
                    .any(|p| p.contains("_uploads"))
        },
    );
    run(&mut push(&bundle));
    assert_nothing_left(&tmp, "$TMPDIR");
    let repo = name.split_once('/').unwrap().1;
    let pushed = format!("docker://{}/{repo}", fleet.addr);
    let root = head_of(&bundle)
        .manifest
        .objects
        .iter()
        .find(|o| o.name == name)
        .unwrap()
        .digest
        .to_string();
    assert_eq!(
        skopeo_digest(&pushed),
        root,
        "the fleet serves the bundled image"
    );
    run(skopeo()
        .args(["copy", "--quiet", "--src-tls-verify=false", &pushed])
        .arg(format!("oci:{}:x", w.path("copied").display())));
}

/// Manifests: killed while a large document streams into the staging folder, the
/// rerun writes the file whole and leaves no staging folder behind.
#[test]
fn manifests_killed_while_a_document_streams_are_whole_after_a_rerun() {
    let w = Work::new("kill-test");
    let tmp = private_tmp(w.root());
    let mut text =
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big\ndata:\n  blob: ".to_vec();
    for b in deterministic_bytes(9, 6 << 20) {
        text.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    text.push(b'\n');
    let stored = zstd::encode_all(&text[..], 3).unwrap();
    let bundle = docs_bundle(
        &w,
        "docs.gapb",
        "docs",
        vec![(
            doc_blob(stored, Some((&text, text.len() as u64))),
            "big.yaml",
        )],
    );
    let folder = w.k3s_root().join("server/manifests/docs");
    let import = |b: &Path| {
        let mut c = w.import(b);
        c.env("TMPDIR", &tmp);
        c
    };
    kill_mid_stream(
        import(Path::new("-")),
        &bundle,
        "the document is staged",
        || temp_with_bytes(&folder),
    );
    assert_eq!(temp_names(&folder).len(), 1, "{:?}", tree_of(&folder));
    run(&mut import(&bundle));
    assert_eq!(tree_of(&folder), vec!["big.yaml".to_string()]);
    assert!(fs::read(folder.join("big.yaml")).unwrap() == text);
    assert_nothing_left(&tmp, "$TMPDIR");
}

/// Files below `--root` (issue 13): killed while the largest file streams into its
/// temporary file beside its target, the killed run has replaced nothing (a file
/// already there keeps its old bytes, none is there cut short under its name);
/// the rerun installs every file whole with its mode, sweeps the killed run's
/// temporary file, completes the receipt the killed run left pending, and leaves
/// no temporary name anywhere below the root, in the state folder or in `$TMPDIR`.
#[test]
fn files_killed_while_one_streams_are_whole_with_their_modes_after_a_rerun() {
    use std::os::unix::fs::PermissionsExt;
    let w = Work::new("kill-test");
    let tmp = private_tmp(w.root());
    let big = deterministic_bytes(13, 24 << 20);
    fs::create_dir_all(w.path("dist")).unwrap();
    fs::write(w.path("dist/big.tar.zst"), &big).unwrap();
    w.write("dist/k3s", "#!/bin/sh\necho k3s\n");
    fs::set_permissions(w.path("dist/k3s"), fs::Permissions::from_mode(0o755)).unwrap();
    w.write("dist/site.conf", "site = 2\n");
    w.write(
        "bundle.yaml",
        "name: host\nversion: \"1\"\nfiles:\n  - path: ./dist/big.tar.zst\n    target: /var/lib/rancher/k3s/agent/images/big.tar.zst\n  - path: ./dist/k3s\n    target: /usr/local/bin/k3s\n  - path: ./dist/site.conf\n    target: /etc/site/site.conf\n    mode: \"0600\"\n",
    );
    run(w.create("host.gapb").arg("--quiet"));
    let bundle = w.path("host.gapb");
    let root = w.path("root");
    // An older file at one target: the killed run must leave it as it was.
    fs::create_dir_all(root.join("etc/site")).unwrap();
    fs::write(root.join("etc/site/site.conf"), "site = 1\n").unwrap();
    let images = root.join("var/lib/rancher/k3s/agent/images");
    let import = |b: &Path| {
        let mut c = w.import(b);
        c.arg("--root").arg(&root).env("TMPDIR", &tmp);
        c
    };

    kill_mid_stream(
        import(Path::new("-")),
        &bundle,
        "the big file's temporary file has bytes",
        || temp_with_bytes(&images),
    );
    assert_eq!(temp_names(&images).len(), 1, "{:?}", tree_of(&images));
    assert!(
        !images.join("big.tar.zst").exists(),
        "no file cut short under its name"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/site/site.conf")).unwrap(),
        "site = 1\n",
        "the killed run replaced nothing"
    );
    let receipts = w.state_dir().join("receipts");
    assert!(
        receipts.join("host.importing.json").exists(),
        "the killed run left its pending receipt: {:?}",
        tree_of(&receipts)
    );

    run(&mut import(&bundle));
    let mode = |p: &str| fs::metadata(root.join(p)).unwrap().permissions().mode() & 0o7777;
    assert!(fs::read(images.join("big.tar.zst")).unwrap() == big);
    assert_eq!(mode("var/lib/rancher/k3s/agent/images/big.tar.zst"), 0o644);
    assert_eq!(
        fs::read_to_string(root.join("usr/local/bin/k3s")).unwrap(),
        "#!/bin/sh\necho k3s\n"
    );
    assert_eq!(mode("usr/local/bin/k3s"), 0o755);
    assert_eq!(
        fs::read_to_string(root.join("etc/site/site.conf")).unwrap(),
        "site = 2\n"
    );
    assert_eq!(mode("etc/site/site.conf"), 0o600);
    let below_root: Vec<String> = tree_of(&root)
        .into_iter()
        .filter(|p| p.split('/').any(|c| c.starts_with(".gapbundle.")))
        .collect();
    assert!(
        below_root.is_empty(),
        "temporary files left: {below_root:?}"
    );
    assert_eq!(tree_of(&receipts), vec!["host.json".to_string()]);
    assert_nothing_left(&tmp, "$TMPDIR");
    // A second rerun writes nothing.
    let again = cli_report(&run(import(&bundle).arg("--json")), "import");
    assert_eq!(
        again["targets"][0]["result"]["written"],
        serde_json::json!([])
    );
    assert_eq!(again["targets"][0]["result"]["bytesWritten"], 0);
}

/// The other half of the files guarantee: a live import's staged files are
/// never swept by another import, even one that cannot see its pid (another pid
/// namespace sharing the folder, as a container would). The first import is held
/// in the middle of its largest file, its small files already staged and closed
/// in its locked staging folder; a second import, run by `unshare --pid` so that
/// the first one's pid runs no process it can see, installs a file into the same
/// folder (and sweeps it) while the first one waits; then the first import gets
/// the rest of its bundle and installs every file whole.
#[test]
fn a_live_imports_staged_files_survive_another_imports_sweep_from_another_pid_namespace() {
    use std::io::Write as _;
    let unshare = require_tool("unshare");
    let w = Work::new("kill-test");
    let tmp = private_tmp(w.root());
    let big = deterministic_bytes(15, 8 << 20);
    let mut spec = String::from("name: app\nversion: \"1\"\nfiles:\n");
    for i in 0..8 {
        w.write(&format!("dist/small{i}"), &format!("small {i}\n"));
        spec.push_str(&format!(
            "  - path: ./dist/small{i}\n    target: /srv/app/small{i}\n"
        ));
    }
    fs::write(w.path("dist/big"), &big).unwrap();
    spec.push_str("  - path: ./dist/big\n    target: /srv/app/big\n");
    w.write("bundle.yaml", &spec);
    run(w.create("app.gapb").arg("--quiet"));
    w.write("dist/other", "other\n");
    w.write(
        "other.yaml",
        "name: other\nversion: \"1\"\nfiles:\n  - path: ./dist/other\n    target: /srv/app/other\n",
    );
    run(create_cmd(
        &w.path("other.yaml"),
        &w.path("other.gapb"),
        &w.secret(),
        &w.path("cache"),
    )
    .arg("--quiet"));
    let bundle = w.path("app.gapb");
    let root = w.path("root");
    let app = root.join("srv/app");
    fs::create_dir_all(&root).unwrap();

    let mut first = w.import(Path::new("-"));
    first.arg("--root").arg(&root).env("TMPDIR", &tmp);
    let part = up_to_middle_of_largest_blob(&bundle);
    let mut child = spawn_quiet(first.stdin(Stdio::piped()));
    let mut stdin = feed_part(&mut child, &part);
    // Held: the big file has bytes, and small files are staged (and closed).
    let staged = || {
        tree_of(&app)
            .iter()
            .filter(|p| p.starts_with(".gapbundle.") && p.contains('/'))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !(temp_with_bytes(&app) && staged() >= 2) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended early"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the first import never staged its files: {:?}",
            tree_of(&app)
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = tree_of(&app);

    // Its own state folder: imports sharing one take turns (receipts' lock).
    let mut other = gapbundle();
    other
        .arg("import")
        .arg(w.path("other.gapb"))
        .arg("--trust")
        .arg(w.public())
        .arg("--state-dir")
        .arg(w.path("state-other"));
    let mut second = Command::new(&unshare);
    second
        .args(["--pid", "--fork", "--mount-proc"])
        .arg(other.get_program())
        .args(other.get_args())
        .envs(other.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .arg("--root")
        .arg(&root)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null());
    ok(second.output().unwrap());
    assert_eq!(fs::read_to_string(app.join("other")).unwrap(), "other\n");
    for p in &before {
        assert!(
            app.join(p).exists(),
            "{p} of the live import was swept: {:?}",
            tree_of(&app)
        );
    }

    stdin
        .write_all(&fs::read(&bundle).unwrap()[part.len()..])
        .unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "the first import failed: {status}");
    assert!(fs::read(app.join("big")).unwrap() == big);
    for i in 0..8 {
        assert_eq!(
            fs::read_to_string(app.join(format!("small{i}"))).unwrap(),
            format!("small {i}\n")
        );
    }
    assert!(temp_names(&app).is_empty(), "{:?}", tree_of(&app));
    assert_nothing_left(&tmp, "$TMPDIR");
}

/// A path larger than what is checked whole in memory goes to Nix as it checks
/// out, its last byte held back until the blob hashed to its verified digest. No
/// real service changes a file on cue between the import's verification and that
/// read, so a `nix-store` in front of the real one flips a byte in the middle of
/// the blob just before `nix-store --serve --write` starts: Nix gets all of the
/// NAR but its last byte, registers nothing, and what it restored is removed.
#[test]
fn a_large_nar_that_changes_after_it_verified_is_never_registered() {
    let w = Work::new("kill-test");
    let (bundle, path) = big_nix_bundle(&w, 8 << 20);
    let tmp = private_tmp(w.root());
    let head = head_of(&bundle);
    let blob = head.manifest.blobs.iter().max_by_key(|b| b.size).unwrap();
    let at = head.blob_position(blob).unwrap() + blob.size / 2;
    let path_var = wrap_tool(
        &w.path("bin"),
        "nix-store",
        &format!(
            "case \" $* \" in *\" --write \"*) {};; esac",
            flip_byte_command(&bundle, at)
        ),
    );
    let root = w.path("store");
    let o = nix_import(&w, &bundle, &root.display().to_string(), &tmp)
        .env("PATH", path_var)
        .output()
        .unwrap();
    let err = fails(&o, 3);
    assert!(
        err.contains("changed after it verified") && err.contains(&path),
        "{err}"
    );
    assert!(valid_in(&root, std::slice::from_ref(&path)).is_empty());
    assert_eq!(store_entries(&root), Vec::<String>::new());
    assert_store_sound(&root);
    assert_nothing_left(&tmp, "$TMPDIR");
}
