//! Every reader takes one bundle source: a file, standard input or a FIFO (one
//! pass), or several volumes read as one. The golden vector is the bundle: it is
//! cut into volumes at awkward places, piped, and given as a FIFO, and each way the
//! same bundle verifies, while a damaged or shortened volume is named.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gapbundle::bundle::reader::{read_head, verify_parallel, verify_stream, NoSink, ReadError};
use gapbundle::io::source::BundleSource;

use crate::support::*;

fn vector(name: &str) -> PathBuf {
    repo().join("bundle-spec/vectors/tiny").join(name)
}

/// `bytes` cut into volumes of the given sizes (the last takes the rest).
fn cut(dir: &Path, bytes: &[u8], sizes: &[usize]) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut at = 0;
    for (i, n) in sizes.iter().chain(std::iter::once(&usize::MAX)).enumerate() {
        let end = at + (*n).min(bytes.len() - at);
        let p = dir.join(format!("site.gapb.{:03}", i + 1));
        fs::write(&p, &bytes[at..end]).unwrap();
        paths.push(p);
        at = end;
    }
    paths
}

/// Verifies `src` both ways (one pass, and at the manifest's offsets).
fn verify_both(src: &BundleSource) -> Result<(), ReadError> {
    let mut r = src.reader().unwrap();
    let head = read_head(&mut r)?;
    verify_stream(&mut r, &head, &mut NoSink, |_| {})?;
    let head = read_head(&mut src.reader().unwrap())?;
    verify_parallel(src.random_access().unwrap(), &head, 3, &|_| {})
}

#[test]
fn volumes_cut_anywhere_verify_as_the_whole_file() {
    let bytes = fs::read(vector("tiny.gapb")).unwrap();
    let head = read_head(&mut bytes.as_slice()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Inside the first header, inside the manifest, at the data section's start,
    // in 700-byte steps (never on a 512-byte boundary), a 1-byte volume and an
    // empty one.
    let data_start = head.data_start as usize;
    let cuts: Vec<Vec<usize>> = vec![
        vec![100],
        vec![600, 1, 0, 900],
        vec![data_start, 512],
        vec![700; bytes.len() / 700],
    ];
    for sizes in &cuts {
        let sub = dir.path().join(format!("{}", sizes.len()));
        fs::create_dir_all(&sub).unwrap();
        let paths = cut(&sub, &bytes, sizes);
        let src = BundleSource::volumes(&paths).unwrap();
        assert_eq!(src.len(), Some(bytes.len() as u64));
        verify_both(&src).unwrap_or_else(|e| panic!("cut {sizes:?}: {e}"));
        let mut all = Vec::new();
        src.reader().unwrap().read_to_end(&mut all).unwrap();
        assert!(all == bytes, "cut {sizes:?}: the concatenation differs");
    }
}

#[test]
fn a_damaged_or_short_volume_is_found() {
    let bytes = fs::read(vector("tiny.gapb")).unwrap();
    let head = read_head(&mut bytes.as_slice()).unwrap();
    let blob = head.manifest.blobs.last().unwrap();
    let pos = head.blob_position(blob).unwrap() as usize;
    let dir = tempfile::tempdir().unwrap();
    // The last blob's first byte flipped, in the volume that holds it.
    let paths = cut(dir.path(), &bytes, &[pos - 10]);
    let mut second = fs::read(&paths[1]).unwrap();
    second[10] ^= 1;
    fs::write(&paths[1], &second).unwrap();
    let e = verify_both(&BundleSource::volumes(&paths).unwrap()).unwrap_err();
    assert!(
        matches!(e, ReadError::Damaged(_)) && e.to_string().contains(&blob.digest.to_string()),
        "{e}"
    );
    // A volume missing its end: the bundle is short.
    second[10] ^= 1;
    fs::write(&paths[1], &second[..second.len() - 600]).unwrap();
    let e = verify_both(&BundleSource::volumes(&paths).unwrap()).unwrap_err();
    assert!(matches!(e, ReadError::Truncated(_)), "{e}");
}

#[test]
fn the_cli_reads_a_pipe_and_a_fifo_in_one_pass() {
    let path = vector("tiny.gapb");
    let expected = fs::read_to_string(vector("tiny.digest")).unwrap();
    let bytes = fs::read(&path).unwrap();
    let piped = |args: &[&str]| {
        let mut child = gapbundle()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        child.wait_with_output().unwrap()
    };
    let trust = vector("tiny.pub");
    let trust = trust.to_str().unwrap();
    let o = piped(&["verify", "-", "--trust", trust]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(expected.trim()));
    let o = piped(&["inspect", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(expected.trim()));

    // A FIFO cannot be read at offsets: verify reads it in one pass.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("site.gapb");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let writer = {
        let (fifo, bytes) = (fifo.clone(), bytes.clone());
        std::thread::spawn(move || fs::write(fifo, bytes).unwrap())
    };
    let o = gapbundle()
        .arg("verify")
        .arg(&fifo)
        .args(["--trust", trust])
        .output()
        .unwrap();
    writer.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    // A folder is not a bundle; the message names it.
    let o = gapbundle()
        .arg("verify")
        .arg(dir.path())
        .args(["--trust", trust])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("{} is a folder", dir.path().display())),
        "{}",
        stderr(&o)
    );
}
