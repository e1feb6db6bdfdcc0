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
