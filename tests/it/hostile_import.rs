//! Hostile bundles at the import and create side, each the regression test of an
//! item of issue 11: even a validly signed bundle must not make an import write
//! outside its targets, more than it declares, or anything it did not check; and
//! `create` must not write its output over one of its inputs. The bundles are
//! forged by the harness from the format's rules (`support::forge`) and signed with
//! the test's key, so what is refused is refused for the one thing wrong.

use std::fs;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use gapbundle::bundle::Digest;
use gapbundle::nixfmt::NarHash;
use serde_json::json;

use crate::support::*;

/// Every file (not folder) under `dir`, relative.
fn files_under(dir: &Path) -> Vec<String> {
    tree_of(dir)
        .into_iter()
        .filter(|p| dir.join(p).is_file())
        .collect()
}

/// Regression (issue 11, item 3): a 39 KB signed bundle made import write 1 GiB
/// into `server/manifests/<bundle>/` before failing, and a document whose decoded
/// bytes differ from `content.digest` was written without complaint. The
/// manifests folder is a 4 MiB disk here: a bomb that decoded past its declared
/// size would fill it (and fail as a full disk, exit 1) before anything checked it.
#[test]
fn manifest_documents_decode_within_their_size_to_their_digest_or_not_at_all() {
    let w = Work::new("hostile-import");
    let manifests = w.k3s_root().join("server/manifests");
    let disk = Tmpfs::mount(&manifests, "4m");
    let text = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: doc-0\n".to_vec();

    let bomb = zstd::encode_all(std::io::repeat(b'a').take(64 << 20), 1).unwrap();
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    let other = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad-0\n".to_vec();
    assert_eq!(other.len(), text.len());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bomb", bomb, "decodes to more than"),
        (
            "other",
            zstd::encode_all(&other[..], 3).unwrap(),
            "decodes to sha256:",
        ),
        ("garbage", b"not zstd at all".to_vec(), "not valid zstd"),
    ];
    for (case, stored, says) in cases {
        let bundle = docs_bundle(
            &w,
            &format!("{case}.gapb"),
            "edge-site",
            vec![(
                doc_blob(stored, Some((&text, text.len() as u64))),
                "app.yaml",
            )],
        );
        let o = w.import(&bundle).output().unwrap();
        let err = fails(&o, 3);
        assert!(
            err.contains(says) && err.contains("manifests:app.yaml/ConfigMap/default/doc-0"),
            "{case}: {err}"
        );
        assert_eq!(files_under(&manifests), Vec::<String>::new(), "{case}");
        assert!(disk.used() < 1 << 20, "{case}: {} bytes used", disk.used());
    }

    // The same document stored as it should be goes in, byte for byte.
    let good = zstd::encode_all(&text[..], 3).unwrap();
    let bundle = docs_bundle(
        &w,
        "good.gapb",
        "edge-site",
        vec![(doc_blob(good, Some((&text, text.len() as u64))), "app.yaml")],
    );
    run(&mut w.import(&bundle));
    assert_eq!(files_under(&manifests), vec!["edge-site/app.yaml"]);
    assert_eq!(
        fs::read(manifests.join("edge-site/app.yaml")).unwrap(),
        text
    );
}

/// A store path name of the tests' own.
fn test_path(tag: &str) -> String {
    format!("/nix/store/{}-{tag}", "b".repeat(32))
}

/// `gapbundle import BUNDLE --nix-store TARGET` with Nix told to stay offline and
/// `$TMPDIR` at `tmp`.
fn nix_import(w: &Work, bundle: &Path, target: &str, tmp: &Path) -> std::process::Command {
    let mut c = with_nix_config(w.import(bundle));
    c.arg("--nix-store").arg(target).env("TMPDIR", tmp);
    c
}

/// Regression (issue 11, item 4): a NAR bomb (a tiny declared `narSize`, a NAR of
/// a 64 MiB file) passed the space check, and `nix copy` filled a 64 MiB store disk
/// and left 58 MB of unregistered paths. Now the served NAR is cut at its declared
/// size, a staged one is checked before Nix sees it, and whatever Nix restored of
/// a refused path is removed: into a 24 MiB store disk, from the file, from a pipe
/// and into a `file://` cache, the bomb is refused with nothing left behind.
#[test]
fn a_nar_bomb_is_refused_and_leaves_nothing_in_a_small_store() {
    let w = Work::new("hostile-import");
    let tmp = private_tmp(w.root());
    let small = file_nar(b"hi\n");
    let declared = (
        NarHash::from_digest(&Digest::of(&small)),
        small.len() as u64,
    );
    let bomb = file_nar(&vec![0u8; 64 << 20]);
    let path = test_path("bomb");
    let bundle = w.path("bomb.gapb");
    nix_path_bundle(
        &bundle,
        &w.signing_key(),
        "bomb",
        &path,
        &bomb,
        Some(declared),
        |_| {},
    );
    assert!(fs::metadata(&bundle).unwrap().len() < 1 << 20);

    let root = w.path("store");
    // 24 MiB: Nix reserves 8 MiB of it (`nix/var/nix/db/reserved`) for its
    // garbage collector; the bomb's 64 MiB would fill the rest.
    let disk = Tmpfs::mount(&root, "24m");
    let target = root.display().to_string();
    let from_file = nix_import(&w, &bundle, &target, &tmp).output().unwrap();
    let from_pipe = nix_import(&w, Path::new("-"), &target, &tmp)
        .stdin(fs::File::open(&bundle).unwrap())
        .output()
        .unwrap();
    for (how, o) in [("served in place", from_file), ("from a pipe", from_pipe)] {
        let err = fails(&o, 3);
        assert!(
            err.contains(&path) && err.contains("larger than"),
            "{how}: {err}"
        );
        assert_eq!(store_entries(&root), Vec::<String>::new(), "{how}");
        assert!(disk.used() < 12 << 20, "{how}: {} bytes used", disk.used());
        assert_nothing_left(&tmp, "$TMPDIR");
    }
    assert_store_sound(&root);

    let cache = w.path("cache");
    let o = nix_import(&w, &bundle, &format!("file://{}", cache.display()), &tmp)
        .output()
        .unwrap();
    let err = fails(&o, 3);
    assert!(err.contains(&path) && err.contains("larger than"), "{err}");
    assert_eq!(
        files_under(&cache),
        Vec::<String>::new(),
        "nothing in the cache"
    );
    assert_nothing_left(&tmp, "$TMPDIR");
}

/// Regression (issue 11, item 11): the `file://` cache advertised NARs Nix refuses
/// (`..`, `a/b`, empty or duplicate entry names, bytes that are no NAR). Each is
/// declared with its own hash and size, so only the NAR's shape is wrong: the
/// import refuses it before any narinfo is written, the cache holds nothing, and
/// the real `nix copy --from file://…` finds no such path there; the same bundle
/// with a valid NAR goes in and copies out.
#[test]
fn the_file_cache_advertises_no_nar_nix_would_refuse() {
    let w = Work::new("hostile-import");
    let tmp = private_tmp(w.root());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dot-dot", dir_nar(&[b".."])),
        ("slash", dir_nar(&[b"a/b"])),
        ("empty", dir_nar(&[b""])),
        ("duplicate", dir_nar(&[b"a", b"a"])),
        (
            "not-a-nar",
            b"these bytes are no NAR at all, just text".to_vec(),
        ),
        ("valid", dir_nar(&[b"a", b"b"])),
    ];
    for (case, nar) in cases {
        let path = test_path(case);
        let bundle = w.path(format!("{case}.gapb"));
        nix_path_bundle(&bundle, &w.signing_key(), case, &path, &nar, None, |_| {});
        let cache = w.path(format!("cache-{case}"));
        let url = format!("file://{}", cache.display());
        let o = nix_import(&w, &bundle, &url, &tmp).output().unwrap();
        assert_nothing_left(&tmp, "$TMPDIR");
        let copy = nix("nix")
            .args(["copy", "--from", &url, "--to"])
            .arg(chroot_store(&w.path(format!("store-{case}"))))
            .args(["--option", "trusted-public-keys"])
            .arg(fs::read_to_string(w.public()).unwrap().trim())
            .arg(&path)
            .output()
            .unwrap();
        if case == "valid" {
            ok(o);
            ok(copy);
            continue;
        }
        let err = fails(&o, 3);
        assert!(
            err.contains(&path) && err.contains("not a NAR Nix would accept"),
            "{case}: {err}"
        );
        let left: Vec<String> = files_under(&cache)
            .into_iter()
            .filter(|f| f != "nix-cache-info")
            .collect();
        assert_eq!(
            left,
            Vec::<String>::new(),
            "{case}: the cache keeps nothing"
        );
        assert!(!copy.status.success(), "{case}: nix copy found it");
    }
}

/// Regression (issue 11, item 5): `team_x` and `team x` mapped to the same
/// manifests folder and archive, and importing the second deleted the first's
/// manifests. Names are now file names as they are: `create` refuses `team x`
/// (exit 4), and an import refuses a bundle so named (exit 3) before it writes,
/// leaving `team_x`'s folder and archive alone.
#[test]
fn bundle_names_name_their_folders_as_they_are_or_are_refused() {
    let w = Work::new("hostile-import");
    oci_layout_fixture(&w.path("img"));
    w.write(
        "bundle.yaml",
        "name: team x\nversion: \"1\"\nimages:\n  - layout: ./img:latest\n    name: example.local/a:1\n",
    );
    let o = w.create("x.gapb").output().unwrap();
    let err = fails(&o, 4);
    assert!(err.contains("`team x` cannot name a bundle"), "{err}");
    assert!(!w.path("x.gapb").exists());

    // team_x's manifests and staged archive are in place.
    let text = b"kind: ConfigMap\n".to_vec();
    let ours = docs_bundle(
        &w,
        "ours.gapb",
        "team_x",
        vec![(doc_blob(text.clone(), None), "a.yaml")],
    );
    run(&mut w.import(&ours));
    w.write(
        "bundle.yaml",
        "name: team_x\nversion: \"1\"\nimages:\n  - layout: ./img:latest\n    name: example.local/a:1\n",
    );
    run(w.create("img.gapb").arg("--quiet"));
    run(w
        .import(&w.path("img.gapb"))
        .args(["--staged", "--skip-manifests"]));
    let before = tree_of(&w.k3s_root());
    let folder = w.k3s_root().join("server/manifests/team_x/a.yaml");
    let archive = w.k3s_root().join("agent/images/team_x.tar");
    assert!(folder.is_file() && archive.is_file(), "{before:#?}");

    // The same bundles under the name `team x`, signed: refused, nothing touched.
    let theirs = docs_bundle(
        &w,
        "theirs.gapb",
        "team x",
        vec![(doc_blob(b"kind: Secret\n".to_vec(), None), "b.yaml")],
    );
    resign(
        &w.path("img.gapb"),
        &w.path("img-x.gapb"),
        &w.signing_key(),
        |m| m["name"] = "team x".into(),
    );
    for (bundle, extra) in [(theirs, &[][..]), (w.path("img-x.gapb"), &["--staged"][..])] {
        let o = w.import(&bundle).args(extra).output().unwrap();
        let err = fails(&o, 3);
        assert!(err.contains("`team x` is not a bundle name"), "{err}");
        assert_eq!(tree_of(&w.k3s_root()), before, "{extra:?}");
    }
    assert_eq!(fs::read(&folder).unwrap(), text);
}

/// Regression (issue 11, item 6): `create -o k.sec --key k.sec` replaced the secret
/// key with the bundle, and so did `-o` naming the spec, the lock or an input.
/// Each is refused with exit 4 naming both, and the input is left as it was.
#[test]
fn create_refuses_an_output_that_is_one_of_its_inputs() {
    let w = Work::new("hostile-import");
    oci_layout_fixture(&w.path("img"));
    w.write(
        "bundle.yaml",
        "name: inputs\nversion: \"1\"\nimages:\n  - layout: ./img:latest\n    name: example.local/a:1\nmanifests:\n  - path: ./extra/*.yaml\n",
    );
    w.write(
        "extra/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm\n",
    );
    let index = fs::read_dir(w.path("img/blobs/sha256"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // Before any lock exists, its future path is an input too.
    let cases: Vec<(PathBuf, &str)> = vec![
        (w.secret(), "the key (--key)"),
        (w.path("bundle.yaml"), "the spec"),
        (w.path("bundle.lock"), "the lock file"),
        (w.path("extra/cm.yaml"), "manifests[0].path of the spec"),
        (index.clone(), "the layout of images[0]"),
        (w.path("cache/blobs/x"), "the cache (--cache)"),
    ];
    for (out, what) in &cases {
        let before = fs::read(out).ok();
        let o = w.create(out).output().unwrap();
        let err = fails(&o, 4);
        assert!(
            err.contains(what) && err.contains(&out.display().to_string()),
            "{what}: {err}"
        );
        assert_eq!(fs::read(out).ok(), before, "{what} was changed");
    }
    // Through a symlink, or by another spelling of the same path, it is the same
    // file; and once the lock exists it is refused as itself.
    run(w.create("site.gapb").arg("--quiet"));
    std::os::unix::fs::symlink(w.secret(), w.path("alias")).unwrap();
    for out in [
        w.path("alias"),
        w.path("keys/../keys/hostile-import.sec"),
        w.path("bundle.lock"),
    ] {
        let before = fs::read(&out).unwrap();
        let err = fails(&w.create(&out).output().unwrap(), 4);
        assert!(
            err.contains("refusing to write the bundle over an input"),
            "{err}"
        );
        assert_eq!(fs::read(&out).unwrap(), before);
    }
    SecretKeyFile::check(&w.secret());
}

/// Regression (issue 11, item 6, for what main's create reads and writes besides):
/// a `--against` base (a bundle, or any volume of a split one) and its `--trust`
/// keys are inputs too, and with `--volume-size` every volume name of the set
/// (`OUT.001`, `OUT.p01`, …, which a new set writes or removes) is an output. Each
/// is refused with exit 4 naming both, before anything is written; `-o -` with
/// `--volume-size` is a usage error (exit 2).
#[test]
fn create_refuses_bases_and_volumes_that_are_its_inputs() {
    let w = Work::new("hostile-import");
    oci_layout_fixture(&w.path("img"));
    w.write(
        "bundle.yaml",
        "name: inputs\nversion: \"1\"\nimages:\n  - layout: ./img:latest\n    name: example.local/a:1\n",
    );
    run(w.create("base.gapb").arg("--quiet"));
    run(gapbundle()
        .arg("split")
        .arg(w.path("base.gapb"))
        .args(["--volume-size", "1M", "--parity", "1", "-o"])
        .arg(w.path("set.gapb")));
    let tree = || tree_of(w.root());
    let key_copy = w.path("out.p01");
    fs::copy(w.secret(), &key_copy).unwrap();
    let cases: Vec<(Command, &str, PathBuf)> = vec![
        (
            {
                let mut c = w.create("base.gapb");
                c.arg("--against").arg(w.path("base.gapb"));
                c
            },
            "is the base (--against)",
            w.path("base.gapb"),
        ),
        (
            {
                let mut c = w.create("set.gapb.p01");
                c.arg("--against").arg(w.path("set.gapb.001"));
                c
            },
            "is a volume of the base (--against)",
            w.path("set.gapb.p01"),
        ),
        (
            {
                let mut c = w.create("set.gapb");
                c.args(["--volume-size", "1M", "--against"])
                    .arg(w.path("set.gapb.001"));
                c
            },
            "with --volume-size would write or remove the volume the base (--against)",
            w.path("set.gapb.001"),
        ),
        (
            {
                let mut c = w.create("out");
                c.args(["--volume-size", "1M", "--key"]).arg(&key_copy);
                c
            },
            "with --volume-size would write or remove the volume the key (--key)",
            key_copy.clone(),
        ),
        (
            {
                let mut c = w.create("keys/new.gapb");
                c.arg("--against")
                    .arg(w.path("base.gapb"))
                    .arg("--trust")
                    .arg(w.path("keys"));
                c
            },
            "is inside the trusted keys (--trust)",
            w.path("keys"),
        ),
    ];
    for (mut c, what, input) in cases {
        let (before, bytes) = (tree(), fs::read(&input).ok());
        let err = fails(&c.output().unwrap(), 4);
        assert!(
            err.contains(what) && err.contains(&input.display().to_string()),
            "{what}: {err}"
        );
        assert_eq!(tree(), before, "{what}: something was written");
        assert_eq!(fs::read(&input).ok(), bytes, "{what}: the input changed");
    }
    // Standard output cannot take volumes.
    let before = tree();
    let o = create_cmd(
        &w.path("bundle.yaml"),
        Path::new("-"),
        &w.secret(),
        &w.path("cache"),
    )
    .args(["--volume-size", "1M"])
    .current_dir(w.root())
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .output()
    .unwrap();
    let err = fails(&o, 2);
    assert!(err.contains("--volume-size"), "{err}");
    assert!(o.stdout.is_empty());
    assert_eq!(tree(), before);
    // split holds the same rule (one function decides what a set's names are).
    let o = gapbundle()
        .arg("split")
        .arg(w.path("set.gapb.001"))
        .args(["--volume-size", "2M", "-o"])
        .arg(w.path("set.gapb"))
        .output()
        .unwrap();
    let err = fails(&o, 4);
    assert!(err.contains("which is being read"), "{err}");
    assert_eq!(tree(), before);
}

/// The secret key file still holds a secret key.
struct SecretKeyFile;

impl SecretKeyFile {
    fn check(p: &Path) {
        let text = fs::read_to_string(p).unwrap();
        gapbundle::bundle::keys::SecretKey::parse(&text)
            .unwrap_or_else(|e| panic!("{} is no longer a key: {e}", p.display()));
    }
}

/// Regression (issue 11, item 14): `create -o /dev/stdout` mixed the report into
/// the bundle, and `-o -` wrote a file named `-`. Both now write the bundle, and
/// only the bundle, to standard output (the report goes to stderr); `--json`,
/// whose report belongs on stdout, is refused with them (exit 2).
#[test]
fn create_to_standard_output_writes_the_bundle_and_nothing_else_there() {
    let w = Work::new("hostile-import");
    oci_layout_fixture(&w.path("img"));
    w.write(
        "bundle.yaml",
        "name: piped\nversion: \"1\"\nimages:\n  - layout: ./img:latest\n    name: example.local/a:1\n",
    );
    run(w.create("file.gapb").arg("--quiet"));
    let file = fs::read(w.path("file.gapb")).unwrap();
    let to = |out: &str| {
        // Not `Work::create`, which would make `-` a path in the work folder.
        let mut c = create_cmd(
            &w.path("bundle.yaml"),
            Path::new(out),
            &w.secret(),
            &w.path("cache"),
        );
        c.stdin(Stdio::null());
        c
    };
    for out in ["-", "/dev/stdout"] {
        let o = ok(to(out).current_dir(w.root()).output().unwrap());
        assert!(o.stdout == file, "{out}: stdout is not the bundle");
        let report = stderr(&o);
        assert!(
            report.contains("wrote standard output") && report.contains("digest sha256:"),
            "{out}: {report}"
        );
        assert!(!w.path("-").exists(), "a file named `-`");
    }
    let o = to("-").arg("--json").output().unwrap();
    let err = fails(&o, 2);
    assert!(err.contains("--json"), "{err}");
    assert!(!o.stdout.windows(9).any(|x| x == b"gapbundle"), "no bundle");
}

/// Whether `bytes` hold a byte that acts on a terminal: a C0 control other than
/// line feed, DEL, or a C1 control (UTF-8 `c2 80`..`c2 9f`).
fn raw_control(bytes: &[u8]) -> Option<usize> {
    bytes.iter().enumerate().position(|(i, &b)| {
        (b < 0x20 && b != b'\n')
            || b == 0x7f
            || (b == 0xc2 && bytes.get(i + 1).is_some_and(|n| (0x80..0xa0).contains(n)))
    })
}

fn assert_no_raw_control(what: &str, o: &Output) {
    for (stream, bytes) in [("stdout", &o.stdout), ("stderr", &o.stderr)] {
        if let Some(i) = raw_control(bytes) {
            panic!(
                "{what}: raw control byte {:#04x} at {i} of {stream}:\n{}",
                bytes[i],
                String::from_utf8_lossy(bytes).escape_debug()
            );
        }
    }
}

/// Regression (issue 11, item 9): untrusted signer names (in a refusal) and
/// unverified object names (in inspect) were printed raw, so a refused bundle
/// could paint "OK … signed by" on the screen. A bundle with escape sequences,
/// line breaks and a right-to-left override in its name, version, object names
/// and the key names of its envelope is inspected, verified (refused, and
/// accepted), and imported (refused for its name): no output has a raw control
/// byte.
#[test]
fn nothing_from_a_bundle_reaches_the_terminal_raw() {
    let w = Work::new("hostile-import");
    let paint = "\u{1b}[1A\u{1b}[2K\rOK painted 1.0: signed by release\u{7}\u{9b}0m\u{202e}";
    let text = b"kind: ConfigMap\n".to_vec();
    let blob = doc_blob(text, None);
    let mut object = doc_object(&blob, "a.yaml", 0);
    object["name"] = format!("manifests:a.yaml/ConfigMap/default/{paint}").into();
    let key = w.signing_key();
    let bundle = w.path("paint.gapb");
    forge(
        &bundle,
        &key,
        json!({"name": format!("edge{paint}"), "version": format!("1{paint}"), "objects": [object]}),
        &[blob],
        |env| {
            // An entry an untrusted key claims (sorted before ours by its name).
            let sigs = env["signatures"].as_array_mut().unwrap();
            sigs.insert(
                0,
                json!({
                    "publicKey": format!("0evil{paint}:{}", "A".repeat(43) + "="),
                    "signature": format!("0evil{paint}:{}", "A".repeat(86) + "=="),
                }),
            );
        },
    );
    let other = Work::new("other-key");
    let runs: Vec<(&str, Output)> = vec![
        (
            "inspect",
            gapbundle().arg("inspect").arg(&bundle).output().unwrap(),
        ),
        (
            "verify, untrusted",
            gapbundle()
                .arg("verify")
                .arg(&bundle)
                .arg("--trust")
                .arg(other.public())
                .output()
                .unwrap(),
        ),
        ("verify", w.verify("paint.gapb")),
        ("import", w.import(&bundle).output().unwrap()),
        (
            "import --dry-run",
            w.import(&bundle).arg("--dry-run").output().unwrap(),
        ),
        (
            "import --apply --dry-run",
            w.import(&bundle)
                .args(["--apply", "--dry-run"])
                .output()
                .unwrap(),
        ),
    ];
    for (what, o) in &runs {
        assert_no_raw_control(what, o);
    }
    let shown = String::from_utf8_lossy(&runs[0].1.stdout).into_owned();
    assert!(shown.contains("edge\\u{1b}[1A"), "inspect: {shown}");
    assert!(
        shown.contains("0evil\\u{1b}"),
        "inspect shows the claimed signer: {shown}"
    );
    assert_eq!(code(&runs[1].1), 3, "{}", stderr(&runs[1].1));
    assert_eq!(code(&runs[2].1), 0, "{}", stderr(&runs[2].1));
    assert_eq!(
        code(&runs[3].1),
        3,
        "the name names no folder: {}",
        stderr(&runs[3].1)
    );
    assert_eq!(code(&runs[5].1), 0, "{}", stderr(&runs[5].1));
}

/// Regression (issue 11, item 12): a killed `create` left `.out.gapb.XXXX.tmp` (300
/// MB per kill) that no rerun removed. Its temporary file now carries the pid and
/// a recognisable name, and the next create into that folder removes it.
#[test]
fn a_killed_create_leaves_no_temporary_file_after_the_next_one() {
    let w = Work::new("hostile-import");
    big_layout_fixture(&w.path("big"), 3, 24 << 20);
    w.write(
        "bundle.yaml",
        "name: big\nversion: \"1\"\nimages:\n  - layout: ./big:latest\n    name: example.local/big:1\n",
    );
    let out = w.path("out");
    fs::create_dir_all(&out).unwrap();
    // Warm the cache, so the next run goes straight to writing.
    run(w.create(out.join("warm.gapb")).arg("--quiet"));
    fs::remove_file(out.join("warm.gapb")).unwrap();
    let mut caught = false;
    for _ in 0..5 {
        let mut child = spawn_quiet(w.create(out.join("site.gapb")).stdin(Stdio::null()));
        caught = kill_when(&mut child, "the bundle's temporary file has bytes", || {
            temp_names(&out).iter().any(|n| {
                fs::metadata(out.join(n))
                    .map(|m| m.len() > 0)
                    .unwrap_or(false)
            })
        });
        if caught {
            break;
        }
        let _ = fs::remove_file(out.join("site.gapb"));
    }
    assert!(caught, "never caught create while it wrote");
    assert_eq!(
        temp_names(&out).len(),
        1,
        "the kill left its temporary file"
    );
    assert!(
        !out.join("site.gapb").exists(),
        "no half bundle under the name"
    );
    run(w.create(out.join("site.gapb")).arg("--quiet"));
    assert_eq!(temp_names(&out), Vec::<String>::new());
    let o = w.verify("out/site.gapb");
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}
