//! Small Nix paths into a local store through one `nix-store --serve --write`,
//! fed from the bundle file in place.
//!
//! `nix copy` from the in-place server (see `super::store`) costs some milliseconds
//! per path however small it is: a narinfo request, a NAR request, a row in Nix's
//! narinfo cache, a substitution goal. A NixOS closure is 1,000 to 2,000 paths,
//! most of them a few KiB, so that was most of its import (3x `nix-store --import`
//! on 2,101 tiny paths). Nix's serve protocol ([`crate::nixfmt::serve_proto`]) adds
//! a path for what `nix-store --import` costs, and with its whole registration:
//! signatures and content address included, so the store ends up holding what
//! `nix copy` would have registered, in one step per path (an import killed at any
//! point leaves each path either registered and signed or not at all). Only paths
//! whose NAR is at most [`STREAM_MAX_NAR`] go this way (see [`streamable`]): each is
//! checked whole before Nix sees a byte of it, and above that size the per-path
//! cost of `nix copy` is small next to the bytes. Nix is told not to check the
//! signatures (the serve protocol's `AddToStoreNar` never does), so it is used only
//! where this process writes the store itself (a chroot store, or the local store
//! as root), after the signatures were checked here; a daemon checks the
//! signatures of what an untrusted user imports, and `nix copy` goes there.
//!
//! Nothing unchecked reaches Nix: each blob is read from the file again, hashed,
//! decompressed (the bounded decoder) and parsed ([`NarChecker`], limited to the
//! declared NAR size) into a buffer of at most [`STREAM_MAX_NAR`] bytes, and only
//! once the blob hashed to its verified digest and the NAR is exactly the declared
//! one is the path handed to Nix (which checks the NAR against its signed hash
//! again before it registers it). Otherwise the conversation ends there: the paths
//! before it are whole, valid and signed (a rerun skips them), and neither that
//! path nor any later one was started.

use std::io::{self, BufReader, BufWriter, Write};

use crate::bundle::decode::{zstd_context, zstd_writer_in};
use crate::bundle::digest::Hasher;
use crate::bundle::manifest::BlobEntry;
use crate::bundle::reader::ReadAt;
use crate::bundle::Digest;
use crate::io::process::{nix_cmd, ProcessError};
use crate::io::serve::Fault;
use crate::nixfmt::serve_proto::{
    read_ack, read_hello, read_path_infos, write_add_to_store_nar, write_hello,
    write_query_path_infos, HeldPath, Registration, ServeProtoError,
};
use crate::nixfmt::{NarChecker, StorePath};

use super::validate::NixObject;

/// The largest NAR handed to Nix this way: each is checked whole in memory first.
/// Above this size the per-path cost of `nix copy` is small next to the bytes, and
/// `nix copy` streams.
pub(super) const STREAM_MAX_NAR: u64 = 1 << 20;

/// Paths handed to Nix before the importer reads its answers: Nix writes 8 bytes
/// per path, so this keeps its answers (8 KiB) far below a pipe's 64 KiB, and it
/// never blocks writing one while the importer blocks writing the next path.
const UNANSWERED_MAX: usize = 1024;

/// Whether `o` goes into a store through the stream: small enough to be checked
/// whole before Nix sees it.
pub(super) fn streamable(o: &NixObject) -> bool {
    o.nar_size <= STREAM_MAX_NAR
}

/// Why the stream stopped.
#[derive(Debug)]
pub(super) enum StreamError {
    /// A blob was not what it verified as, or not the declared NAR: it was not
    /// handed to Nix, and neither was any later one.
    Fault(Digest, Fault),
    /// Nix failed (its stderr is in the error).
    Nix(ProcessError),
}

/// One path to stream: its object and its blob with the blob's position in the file.
pub(super) struct Item<'a> {
    pub(super) object: &'a NixObject,
    pub(super) blob: &'a BlobEntry,
    pub(super) offset: u64,
}

/// A `nix-store --serve` (with `--write`: one that may add paths) on the store `uri`
/// (`None`: the local store).
fn serve(uri: Option<&str>, write: bool) -> Result<crate::io::process::Session, ProcessError> {
    let mut cmd = nix_cmd("nix-store");
    if let Some(u) = uri {
        cmd = cmd.args(["--store", u]);
    }
    cmd = cmd.arg("--serve");
    if write {
        cmd = cmd.arg("--write");
    }
    cmd.session()
}

/// Which of `paths` are valid in the store `uri`, with the NAR hash and the
/// signatures Nix holds for each: one `nix-store --serve` for all of them, where
/// `nix-store --check-validity` and `nix path-info` were two processes, each given
/// the paths as arguments a few thousand at a time.
pub(super) fn held(uri: Option<&str>, paths: &[&StorePath]) -> Result<Vec<HeldPath>, ProcessError> {
    let mut nix = serve(uri, false)?;
    let command = nix.command().to_string();
    let answer = {
        let (stdin, stdout) = nix.pipes();
        let mut answers = BufReader::new(stdout);
        let mut out = BufWriter::with_capacity(256 << 10, stdin);
        // Nix reads the whole set before it answers, so the question is written
        // whole first.
        write_hello(&mut out)
            .and_then(|()| write_query_path_infos(&mut out, paths))
            .and_then(|()| out.flush())
            .map_err(ServeProtoError::from)
            .and_then(|()| read_hello(&mut answers))
            .and_then(|_| read_path_infos(&mut answers))
    };
    match answer {
        Ok(held) => nix.finish().map(|()| held),
        Err(e) => Err(match nix.finish() {
            Err(failed) => failed,
            Ok(()) => ProcessError::Io {
                command,
                source: io::Error::other(e),
            },
        }),
    }
}

/// Adds `items` (references first) to the store `uri` (`None`: the local store)
/// through one `nix-store --serve --write`, reading the blobs from `source`.
/// `on_bytes` is told the stored bytes of each blob as they are read.
pub(super) fn import(
    uri: Option<&str>,
    source: &dyn ReadAt,
    items: &[Item<'_>],
    on_bytes: &dyn Fn(u64),
) -> Result<(), StreamError> {
    // One decoding context for every blob (see `zstd_context`); it can only fail
    // to be made for want of memory.
    let mut ctx = zstd_context().map_err(|e| {
        StreamError::Nix(ProcessError::Io {
            command: "a zstd decoder for the NARs".into(),
            source: e,
        })
    })?;
    let mut nix = serve(uri, true).map_err(StreamError::Nix)?;
    let command = nix.command().to_string();
    let mut buf = vec![0u8; 256 << 10];
    let mut nar = Vec::new();
    let talked = {
        let (stdin, stdout) = nix.pipes();
        let mut out = BufWriter::with_capacity(256 << 10, stdin);
        let mut answers = BufReader::new(stdout);
        let mut unanswered = 0usize;
        let mut talked = write_hello(&mut out)
            .and_then(|()| out.flush())
            .map_err(|e| Talk::Pipe(e.into()))
            .and_then(|()| read_hello(&mut answers).map_err(Talk::Pipe))
            .map(drop);
        for item in items {
            if talked.is_err() {
                break;
            }
            talked =
                check_one(source, item, &mut buf, &mut nar, &mut ctx, on_bytes).and_then(|size| {
                    let o = item.object;
                    let reg = Registration {
                        path: &o.path,
                        deriver: o.deriver.as_ref(),
                        nar_hash: &o.nar_hash,
                        references: &o.references,
                        nar_size: size,
                        sigs: &o.sigs,
                        ca: o.ca.as_deref(),
                    };
                    write_add_to_store_nar(&mut out, &reg)
                        .and_then(|()| out.write_all(&nar))
                        .map_err(|e| Talk::Pipe(e.into()))?;
                    unanswered += 1;
                    if unanswered >= UNANSWERED_MAX {
                        out.flush().map_err(|e| Talk::Pipe(e.into()))?;
                        read_ack(&mut answers).map_err(Talk::Pipe)?;
                        unanswered -= 1;
                    }
                    Ok(())
                });
        }
        // The paths handed over before a fault are whole: let Nix finish them.
        let flushed = out
            .flush()
            .map_err(|e| Talk::Pipe(e.into()))
            .and_then(|()| {
                (0..unanswered).try_for_each(|_| read_ack(&mut answers).map_err(Talk::Pipe))
            });
        match talked {
            Ok(()) => flushed,
            fault => fault,
        }
    };
    match talked {
        Ok(()) => nix.finish().map_err(StreamError::Nix),
        Err(Talk::Fault(d, f)) => {
            // Nix sees its input end between two paths and stops.
            let _ = nix.finish();
            Err(StreamError::Fault(d, f))
        }
        // Nix stopped answering: its exit says why.
        Err(Talk::Pipe(e)) => Err(StreamError::Nix(match nix.finish() {
            Err(failed) => failed,
            Ok(()) => ProcessError::Io {
                command,
                source: io::Error::other(e),
            },
        })),
    }
}

enum Talk {
    Fault(Digest, Fault),
    Pipe(ServeProtoError),
}

/// Reads, hashes, decompresses and parses one path's blob into `nar`, and returns
/// the NAR's size once it checked out.
fn check_one(
    source: &dyn ReadAt,
    item: &Item<'_>,
    buf: &mut [u8],
    nar: &mut Vec<u8>,
    ctx: &mut zstd::zstd_safe::DCtx<'static>,
    on_bytes: &dyn Fn(u64),
) -> Result<u64, Talk> {
    let blob = item.blob;
    let fault = |f| Talk::Fault(blob.digest, f);
    let Some(content) = &blob.content else {
        return Err(fault(Fault::Content("it has no content digest".into())));
    };
    if content.size != item.object.nar_size || content.size > STREAM_MAX_NAR {
        return Err(fault(Fault::Content(format!(
            "its NAR is declared as {} bytes, and its path's NAR size is {}",
            content.size, item.object.nar_size
        ))));
    }
    nar.clear();
    let tee = Tee {
        check: NarChecker::with_limit(content.size),
        out: nar,
        refused: None,
    };
    let mut dec = zstd_writer_in(tee, ctx);
    let mut hasher = Hasher::new();
    let mut pos = 0u64;
    while pos < blob.size {
        let want = (blob.size - pos).min(buf.len() as u64) as usize;
        let n = match source.read_at(&mut buf[..want], item.offset + pos) {
            Ok(0) => return Err(fault(Fault::Unreadable("the file ended early".into()))),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fault(Fault::Unreadable(e.to_string()))),
        };
        hasher.update(&buf[..n]);
        pos += n as u64;
        on_bytes(n as u64);
        if let Err(e) = dec.write_all(&buf[..n]).and_then(|()| dec.flush()) {
            let why = dec
                .get_mut()
                .refused
                .take()
                .unwrap_or_else(|| format!("it is not valid zstd: {e}"));
            return Err(fault(Fault::Content(why)));
        }
    }
    let (found, _) = hasher.finish();
    if found != blob.digest {
        return Err(fault(Fault::Changed(found)));
    }
    let tee = dec.into_inner();
    let summary = tee
        .check
        .finish()
        .map_err(|e| fault(Fault::Content(e.to_string())))?;
    if summary.digest != content.digest || summary.size != content.size {
        return Err(fault(Fault::Content(format!(
            "it decompresses to a NAR of {} bytes with sha256 {}, not the declared {} bytes with sha256 {}",
            summary.size, summary.digest, content.size, content.digest
        ))));
    }
    Ok(summary.size)
}

/// Keeps only the decoded bytes the NAR parser accepted (at most the declared size,
/// which the parser enforces).
struct Tee<'a> {
    check: NarChecker,
    out: &'a mut Vec<u8>,
    refused: Option<String>,
}

impl Write for Tee<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Err(e) = self.check.feed(data) {
            self.refused = Some(e.to_string());
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        self.out.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
