//! Small Nix paths into a local store through one `nix-store --import`, fed from
//! the bundle file in place.
//!
//! `nix copy` from the in-place server (see `super::store`) costs some milliseconds
//! per path however small it is: a narinfo request, a NAR request, a row in Nix's
//! narinfo cache, a substitution goal. A NixOS closure is 1,000 to 2,000 paths,
//! most of them a few KiB, so that was most of its import (3x `nix-store --import`
//! on 2,101 tiny paths). `nix-store --import` adds a path for a fraction of that,
//! but it reads each whole NAR into memory (Nix issue 9610) and registers no
//! signature and no content address, so it only gets paths whose NAR is at most
//! [`STREAM_MAX_NAR`] and that have no `ca` (see [`streamable`]); their signatures
//! are copied afterwards (`nix store copy-sigs`, from a private folder of the
//! narinfos the in-place server serves), so the store ends up holding what `nix
//! copy` would have registered. It writes the
//! store directly, so it is used only where this process writes the store itself
//! (a chroot store, or the local store as root): a daemon checks the signatures of
//! what an untrusted user imports, and this stream carries none.
//!
//! Nothing unchecked reaches Nix: each blob is read from the file again, hashed,
//! decompressed (the bounded decoder) and parsed ([`NarChecker`], limited to the
//! declared NAR size) chunk by chunk, and only bytes the parser accepted are
//! written to Nix. Nix restores and registers a path only once it read the path's
//! trailer ([`crate::nixfmt::export`]), and the trailer is written only once the
//! blob hashed to its verified digest and the NAR is exactly the declared one;
//! otherwise the stream is cut there and Nix exits without that path or any later
//! one (the earlier ones are whole and valid: a rerun skips them).

use std::io::{self, BufWriter, Write};

use crate::bundle::decode::zstd_writer;
use crate::bundle::digest::Hasher;
use crate::bundle::manifest::BlobEntry;
use crate::bundle::reader::ReadAt;
use crate::bundle::Digest;
use crate::io::process::{nix_cmd, ProcessError};
use crate::io::serve::Fault;
use crate::nixfmt::export::{write_end, write_path_start, write_path_trailer};
use crate::nixfmt::{NarChecker, StorePath};

use super::validate::NixObject;

/// The largest NAR handed to `nix-store --import`, which holds each whole NAR in
/// memory. Above this size the per-path cost of `nix copy` is small next to the
/// bytes, and `nix copy` streams.
pub(super) const STREAM_MAX_NAR: u64 = 1 << 20;

/// Whether `o` goes into a store through the stream: small, and without a content
/// address, which `nix-store --import` would not register.
pub(super) fn streamable(o: &NixObject) -> bool {
    o.nar_size <= STREAM_MAX_NAR && o.ca.is_none()
}

/// Why the stream stopped.
#[derive(Debug)]
pub(super) enum StreamError {
    /// A blob was not what it verified as, or not the declared NAR: the stream was
    /// cut before that path's trailer.
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

/// Streams `items` (references first) into the store `uri` (`None`: the local
/// store) through one `nix-store --import`, reading the blobs from `source`.
/// `on_bytes` is told the stored bytes of each blob as they are read.
pub(super) fn import(
    uri: Option<&str>,
    source: &dyn ReadAt,
    items: &[Item<'_>],
    on_bytes: &dyn Fn(u64),
) -> Result<(), StreamError> {
    let mut cmd = nix_cmd("nix-store");
    if let Some(u) = uri {
        cmd = cmd.args(["--store", u]);
    }
    let mut nix = cmd.arg("--import").feed().map_err(StreamError::Nix)?;
    let mut buf = vec![0u8; 256 << 10];
    let fed = {
        let mut out = BufWriter::with_capacity(256 << 10, nix.stdin());
        let mut fed = Ok(());
        for item in items {
            fed = feed_one(&mut out, source, item, &mut buf, on_bytes);
            if fed.is_err() {
                break;
            }
        }
        fed.and_then(|()| {
            write_end(&mut out)
                .and_then(|()| out.flush())
                .map_err(Fed::Pipe)
        })
    };
    match fed {
        Ok(()) => nix.finish().map_err(StreamError::Nix),
        Err(Fed::Fault(d, f)) => {
            // Nix sees its input end before that path's trailer.
            drop(nix);
            Err(StreamError::Fault(d, f))
        }
        // Nix stopped reading: its exit says why.
        Err(Fed::Pipe(e)) => Err(StreamError::Nix(match nix.finish() {
            Err(failed) => failed,
            Ok(()) => ProcessError::Io {
                command: "nix-store --import".into(),
                source: e,
            },
        })),
    }
}

enum Fed {
    Fault(Digest, Fault),
    Pipe(io::Error),
}

/// One path: start, NAR (checked as it goes), and the trailer once it checked out.
fn feed_one(
    out: &mut dyn Write,
    source: &dyn ReadAt,
    item: &Item<'_>,
    buf: &mut [u8],
    on_bytes: &dyn Fn(u64),
) -> Result<(), Fed> {
    let blob = item.blob;
    let fault = |f| Fed::Fault(blob.digest, f);
    let Some(content) = &blob.content else {
        return Err(fault(Fault::Content("it has no content digest".into())));
    };
    write_path_start(out).map_err(Fed::Pipe)?;
    let tee = Tee {
        check: NarChecker::with_limit(content.size),
        out,
        refused: None,
        pipe: None,
    };
    let mut dec = zstd_writer(tee)
        .map_err(|e| fault(Fault::Content(format!("cannot start a zstd decoder: {e}"))))?;
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
            return Err(decode_failure(dec.get_mut(), e, &fault));
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
    let o = item.object;
    write_path_trailer(tee.out, &o.path, &o.references, o.deriver.as_ref()).map_err(Fed::Pipe)
}

/// What a failed write into the decoder was: the NAR parser's refusal, the pipe to
/// Nix, or bytes that are not zstd.
fn decode_failure(tee: &mut Tee<'_>, e: io::Error, fault: &dyn Fn(Fault) -> Fed) -> Fed {
    if let Some(why) = tee.refused.take() {
        return fault(Fault::Content(why));
    }
    if let Some(p) = tee.pipe.take() {
        return Fed::Pipe(p);
    }
    fault(Fault::Content(format!("it is not valid zstd: {e}")))
}

/// Hands Nix only the decoded bytes the NAR parser accepted.
struct Tee<'a> {
    check: NarChecker,
    out: &'a mut dyn Write,
    refused: Option<String>,
    pipe: Option<io::Error>,
}

impl Write for Tee<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Err(e) = self.check.feed(data) {
            self.refused = Some(e.to_string());
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        if let Err(e) = self.out.write_all(data) {
            let kind = e.kind();
            self.pipe = Some(e);
            return Err(io::Error::new(kind, "the pipe to nix-store --import"));
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The paths of `items`, for the commands that follow the stream.
pub(super) fn paths<'a>(items: &'a [Item<'_>]) -> impl Iterator<Item = &'a StorePath> {
    items.iter().map(|i| &i.object.path)
}
