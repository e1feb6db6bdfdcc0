//! Hostile input at the format level, checked against the tools an attacker would
//! aim at: Python's tarfile and GNU tar (what a header really means to a tar
//! reader), the real `nix-store --dump` and `--restore` (what a NAR is to Nix), a
//! `file://` cache import (what a narinfo line is), and the command line for key
//! files and versions. Each test is the regression test of an item of issue 11.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use gapbundle::bundle::keys::SecretKey;
use gapbundle::bundle::manifest::Manifest;
use gapbundle::bundle::Digest;
use gapbundle::nixfmt::{check_nar, nar, NarError, NarReadError};

use crate::support::{
    code, dir_nar, file_nar, gapbundle, nar_tokens, nix, nix_path_bundle, stderr, tool, vectors,
};

fn verify(bundle: &Path) -> Output {
    gapbundle()
        .arg("verify")
        .arg(bundle)
        .arg("--trust")
        .arg(vectors().join("tiny/tiny.pub"))
        .output()
        .unwrap()
}

// Issue 11 item 2: `verify` passed a bundle whose GNU header had a `prefix`, and
// Python's (and Go's) tar extracted that entry to ../../etc/blobs/sha256/<hex>.
#[test]
fn a_header_prefix_that_tar_readers_obey_is_refused() {
    let bad = vectors().join("bad-header-prefix.gapb");
    let py = tool("python3")
        .arg("-c")
        .arg("import sys, tarfile\nfor m in tarfile.open(sys.argv[1]): print(m.name)")
        .arg(&bad)
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&py.stdout);
    assert!(
        names
            .lines()
            .any(|n| n.starts_with("../../etc/blobs/sha256/")),
        "python's tarfile no longer reads the prefix: {names}"
    );
    let o = verify(&bad);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("prefix `../../etc`"), "{}", stderr(&o));
    let o = gapbundle()
        .args(["verify", "-", "--trust"])
        .arg(vectors().join("tiny/tiny.pub"))
        .stdin(fs::File::open(&bad).unwrap())
        .output()
        .unwrap();
    assert_eq!(code(&o), 3, "{}", stderr(&o));
}

// Issue 11 item 2: mode and owner were not checked; `tar xf` as root would make
// setuid files owned by uid 1000.
#[test]
fn a_setuid_mode_or_an_owner_that_gnu_tar_would_apply_is_refused() {
    for (vector, listed) in [
        ("bad-header-mode.gapb", "-rwsr-xr-x"),
        ("bad-header-owner.gapb", "1000/0"),
    ] {
        let bad = vectors().join(vector);
        let t = tool("tar")
            .arg("--numeric-owner")
            .arg("-tvf")
            .arg(&bad)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&t.stdout);
        assert!(
            listing.contains(listed),
            "{vector}: GNU tar lists {listing}"
        );
        let o = verify(&bad);
        assert_eq!(code(&o), 3, "{vector}: {}", stderr(&o));
        assert!(stderr(&o).contains("tar header of"), "{}", stderr(&o));
    }
    // The golden bundle, as every tar lists it: 0644, root, mtime 0.
    let t = tool("tar")
        .arg("--numeric-owner")
        .arg("-tvf")
        .arg(vectors().join("tiny/tiny.gapb"))
        .output()
        .unwrap();
    for line in String::from_utf8_lossy(&t.stdout).lines() {
        assert!(line.starts_with("-rw-r--r-- 0/0"), "{line}");
    }
}

// Issue 11 item 16: `+1.0`, `1`, `01.5`, `1.0.0.0` were accepted as version 1.
#[test]
fn format_versions_have_one_spelling() {
    let bytes = fs::read(vectors().join("tiny/tiny.gapb")).unwrap();
    let head = gapbundle::bundle::reader::read_head(&mut bytes.as_slice()).unwrap();
    let with = |v: &str| {
        let mut m: serde_json::Value = serde_json::from_slice(&head.manifest_bytes).unwrap();
        m["formatVersion"] = v.into();
        Manifest::parse(&serde_json::to_vec(&m).unwrap())
    };
    for good in ["1.0", "1.7", "1.10"] {
        with(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "+1.0", "1", "01.5", "1.0.0.0", "1.01", " 1.0", "1.0 ", "1.", ".0", "1.-0", "2.0", "0.9",
    ] {
        assert!(with(bad).is_err(), "{bad:?} was accepted");
    }
}

fn run_nix_store(args: &[&str], stdin: &[u8]) -> Output {
    let mut c = nix("nix-store");
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

// Issue 11 item 11: the NAR parser accepts exactly what the real Nix writes.
#[test]
fn the_nar_checker_accepts_what_nix_store_dump_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("tree");
    fs::create_dir_all(t.join("sub/deeper")).unwrap();
    fs::create_dir_all(t.join("empty")).unwrap();
    fs::write(t.join("a b"), "spaces\n").unwrap();
    fs::write(t.join("Z"), "").unwrap();
    fs::write(t.join("é"), vec![0u8; 70_000]).unwrap();
    fs::write(t.join("sub/run"), "#!/bin/sh\n").unwrap();
    let mut perm = fs::metadata(t.join("sub/run")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    fs::set_permissions(t.join("sub/run"), perm).unwrap();
    std::os::unix::fs::symlink("../a b", t.join("sub/link")).unwrap();
    fs::write(t.join("sub/deeper/-x"), "dash").unwrap();
    for (path, files, dirs, links) in [
        (t.clone(), 5, 4, 1),
        (t.join("a b"), 1, 0, 0),
        (t.join("sub/link"), 0, 0, 1),
    ] {
        let dump = run_nix_store(&["--dump", path.to_str().unwrap()], b"");
        assert!(dump.status.success(), "{}", stderr(&dump));
        let s = check_nar(dump.stdout.as_slice(), Some(dump.stdout.len() as u64)).unwrap();
        assert_eq!(s.digest, Digest::of(&dump.stdout));
        assert_eq!(s.size, dump.stdout.len() as u64);
        assert_eq!(
            (s.regular_files, s.directories, s.symlinks),
            (files, dirs, links)
        );
    }
}

// Issue 11 item 11: the `file://` cache advertised NARs Nix refuses. Each of these
// is refused by the real `nix-store --restore` and by the checker alike (and one
// that Nix restores into something else is refused too).
#[test]
fn nars_that_nix_refuses_are_refused_by_the_checker() {
    let tmp = tempfile::tempdir().unwrap();
    let good = dir_nar(&[b"a", b"b"]);
    let mut bad_pad = nar_tokens(&[nar::MAGIC, b"(", b"type", b"regular", b"contents", b"x"]);
    let at = bad_pad.len() - 1;
    bad_pad[at] = 7;
    bad_pad.extend(nar_tokens(&[b")"]));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dot-dot", dir_nar(&[b".."])),
        ("slash", dir_nar(&[b"a/b"])),
        ("empty name", dir_nar(&[b""])),
        ("duplicate", dir_nar(&[b"a", b"a"])),
        (
            "not a NAR",
            b"this is not a NAR at all, just bytes".to_vec(),
        ),
        ("bad padding", bad_pad),
        (
            "unknown type",
            nar_tokens(&[nar::MAGIC, b"(", b"type", b"socket", b")"]),
        ),
    ];
    let restore = |name: &str, bytes: &[u8]| {
        let dst = tmp.path().join(name.replace(' ', "-"));
        run_nix_store(&["--restore", dst.to_str().unwrap()], bytes)
    };
    let ok = restore("good", &good);
    assert!(
        ok.status.success(),
        "nix-store refuses the good NAR: {}",
        stderr(&ok)
    );
    check_nar(good.as_slice(), None).unwrap();
    for (name, bytes) in cases {
        let o = restore(name, &bytes);
        assert!(
            !o.status.success(),
            "{name}: nix-store --restore accepted it"
        );
        let e = check_nar(bytes.as_slice(), None);
        assert!(
            matches!(e, Err(NarReadError::Nar(_))),
            "{name}: the checker said {e:?}"
        );
    }
    // Entries out of order: Nix 2.8 restores them, but what it restored dumps to
    // another NAR, so the path's NAR hash would no longer be its content's (`nix
    // store verify` calls that corrupt). Only the canonical NAR is accepted.
    let unsorted = dir_nar(&[b"b", b"a"]);
    let o = restore("unsorted", &unsorted);
    assert!(o.status.success(), "{}", stderr(&o));
    let dumped = run_nix_store(
        &["--dump", tmp.path().join("unsorted").to_str().unwrap()],
        b"",
    );
    assert_eq!(dumped.stdout, dir_nar(&[b"a", b"b"]));
    assert!(matches!(
        check_nar(unsorted.as_slice(), None),
        Err(NarReadError::Nar(NarError::Unsorted { .. }))
    ));
    // A NAR bomb: refused at the declared size, not after its real one.
    let big = nar_tokens(&[
        nar::MAGIC,
        b"(",
        b"type",
        b"regular",
        b"contents",
        &[0u8; 1 << 20],
        b")",
    ]);
    assert!(matches!(
        check_nar(big.as_slice(), Some(1000)),
        Err(NarReadError::Nar(NarError::TooLarge { limit: 1000 }))
    ));
}

/// A signed bundle of one `nix-path` object, with `edit` applied to its meta
/// before signing (the path signature stays valid: it does not cover `ca`); laid
/// out by the harness from the format's rules, since the library's builder would
/// refuse the edited meta before a reader could be shown it.
fn nix_bundle(out: &Path, key: &SecretKey, edit: impl FnOnce(&mut serde_json::Value)) {
    nix_path_bundle(
        out,
        key,
        "hostile-nix",
        &format!("/nix/store/{}-hostile", "a".repeat(32)),
        &file_nar(b"hi\n"),
        None,
        edit,
    );
}

// Issue 11 item 10: a newline in meta.ca or meta.sigs went verbatim into the
// narinfo of a `file://` cache, and Nix read the injected NarHash.
#[test]
fn no_narinfo_line_can_be_injected_through_meta() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SecretKey::from_seed("hostile-test", [11; 32]).unwrap();
    let pubkey = tmp.path().join("k.pub");
    fs::write(&pubkey, format!("{}\n", key.public())).unwrap();
    let injected = format!("\nNarHash: sha256:{}", "0".repeat(52));
    let ca = format!("fixed:r:sha256:{}", "1".repeat(52));
    // The same bundle without the injection imports, so the refusal below is the
    // injection's alone.
    type Edit<'a> = Box<dyn Fn(&mut serde_json::Value) + 'a>;
    let variants: [(&str, Edit); 3] = [
        (
            "clean",
            Box::new(|m: &mut serde_json::Value| m["ca"] = ca.clone().into()),
        ),
        (
            "ca",
            Box::new(|m: &mut serde_json::Value| m["ca"] = format!("{ca}{injected}").into()),
        ),
        (
            "sigs",
            Box::new(|m: &mut serde_json::Value| {
                let mut sigs = m["sigs"].as_array().unwrap().clone();
                sigs.push(format!("other:{}{injected}", "A".repeat(86) + "==").into());
                m["sigs"] = sigs.into();
            }),
        ),
    ];
    for (name, edit) in variants {
        let bundle = tmp.path().join(format!("{name}.gapb"));
        nix_bundle(&bundle, &key, edit);
        let cache = tmp.path().join(format!("cache-{name}"));
        let o = gapbundle()
            .arg("import")
            .arg(&bundle)
            .arg("--trust")
            .arg(&pubkey)
            .arg("--nix-store")
            .arg(format!("file://{}", cache.display()))
            .output()
            .unwrap();
        let narinfos: Vec<String> = fs::read_dir(&cache)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "narinfo"))
                    .map(|e| fs::read_to_string(e.path()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        if name == "clean" {
            assert_eq!(code(&o), 0, "{}", stderr(&o));
            assert_eq!(narinfos.len(), 1);
            assert!(
                narinfos[0].contains(&format!("CA: {ca}\n")),
                "{}",
                narinfos[0]
            );
            continue;
        }
        assert_ne!(code(&o), 0, "{name}: the import accepted it");
        assert!(
            stderr(&o).contains(if name == "ca" { "CA" } else { "Sig" })
                || stderr(&o).contains(&format!("meta.{name}")),
            "{name}: {}",
            stderr(&o)
        );
        for n in &narinfos {
            assert_eq!(n.matches("NarHash:").count(), 1, "{name}: {n}");
        }
    }
}

fn tiny_input(dir: &Path) -> PathBuf {
    let input = vectors().join("tiny/input");
    let copy = |from: &Path, to: &Path| {
        tool("cp").arg("-a").arg(from).arg(to).status().unwrap();
    };
    copy(&input, &dir.join("input"));
    dir.join("input/bundle.yaml")
}

// Issue 11 items 13 and 17: `--trust /dev/zero` grew memory without bound, one
// binary file in a `--trust` folder aborted verify, and a garbage `--key` exited 1.
#[test]
fn key_files_are_bounded_strays_are_skipped_and_garbage_is_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = vectors().join("tiny/tiny.gapb");
    let o = gapbundle()
        .arg("verify")
        .arg(&tiny)
        .args(["--trust", "/dev/zero"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("/dev/zero"), "{}", stderr(&o));

    let keys = tmp.path().join("keys");
    fs::create_dir(&keys).unwrap();
    fs::copy(vectors().join("tiny/tiny.pub"), keys.join("tiny.pub")).unwrap();
    fs::write(keys.join("photo.jpg"), [0xff, 0xd8, 0xff, 0xe0, 0, 0x10]).unwrap();
    let o = gapbundle()
        .arg("verify")
        .arg(&tiny)
        .arg("--trust")
        .arg(&keys)
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("warning") && stderr(&o).contains("photo.jpg"),
        "{}",
        stderr(&o)
    );

    let spec = tiny_input(tmp.path());
    let garbage = tmp.path().join("garbage.sec");
    fs::write(&garbage, [0x80u8, 0x81, 0x82, 0x83]).unwrap();
    for key in [garbage.clone(), PathBuf::from("/dev/zero")] {
        let o = gapbundle()
            .arg("create")
            .arg("-f")
            .arg(&spec)
            .arg("-o")
            .arg(tmp.path().join("out.gapb"))
            .arg("--cache")
            .arg(tmp.path().join("cache"))
            .arg("--key")
            .arg(&key)
            .output()
            .unwrap();
        assert_eq!(code(&o), 4, "{}", stderr(&o));
        assert!(
            stderr(&o).contains(&key.display().to_string()),
            "{}",
            stderr(&o)
        );
    }
}
