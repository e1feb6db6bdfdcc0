//! Packing a store path into a blob: its NAR, made by our own walk over the path
//! ([`crate::nixfmt::dump`]; `nix-store --dump` only when the walk disagrees with
//! Nix), hashed as it streams (the NAR hash must be the one Nix recorded) and
//! zstd-compressed at a fixed level in frames of a fixed size
//! ([`crate::bundle::frames`]) into the cache. No NAR is ever held in memory, and
//! the same store path always gives the same blob. A small index in the cache
//! (`nix-nar/<packing>/<nar sha256>`) remembers which blob holds which NAR, so a
//! second create does not compress anything again; a NAR of at most 256 KiB is
//! instead made and compressed in memory each time (see `small_blob`: per path,
//! a thread and two files cost more than the packing).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use fs_err as fs;

use crate::bundle::digest::HashingWriter;
use crate::bundle::frames::{FrameCutter, FrameEncoder, FrameSink, FRAME_CONTENT};
use crate::bundle::Digest;
use crate::io::cas::Cas;
use crate::io::process::nix_cmd;
use crate::nixfmt::dump::dump_nar;
use crate::nixfmt::{NarHash, PathInfo};

/// zstd level for NARs. Fixed, so the same NAR always gives the same blob.
pub const NAR_ZSTD_LEVEL: i32 = 3;

/// NAR blobs for every path, several at a time, in the order of `infos`.
pub(super) fn nar_blobs(
    cas: &Cas,
    infos: &[PathInfo],
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Vec<(Digest, u64)>> {
    crate::pool::map(
        crate::pool::cores(),
        infos,
        || Ok(Packer::default()),
        |packer, info| nar_blob(cas, info, packer, on_bytes),
    )
}

/// How this version packs NARs (level, frame size). The cache index is kept per
/// packing: a blob packed another way by an older version is never reused, since a
/// warm cache would then give other bytes than a cold one for the same spec.
const NAR_PACKING: &str = "zstd3-frames4m";

fn index_path(cas: &Cas, nar: &NarHash) -> PathBuf {
    cas.root()
        .join("nix-nar")
        .join(NAR_PACKING)
        .join(nar.digest().hex())
}

/// The blob holding one path's NAR: from the cache index, or made by streaming the
/// NAR through a hasher and a zstd encoder into the cache. The NAR comes from our own
/// walk over the store path (no process per path); should its hash ever differ from
/// Nix's, `nix-store --dump` is asked instead, and a mismatch there too stops create.
fn nar_blob(
    cas: &Cas,
    info: &PathInfo,
    packer: &mut Packer,
    on_bytes: &dyn Fn(u64),
) -> Result<(Digest, u64)> {
    if info.nar_size <= SMALL_NAR {
        return small_blob(cas, info, packer, on_bytes);
    }
    let index = index_path(cas, &info.nar_hash);
    if let Ok(text) = fs::read_to_string(&index) {
        if let Some((d, s)) = text.trim().split_once(' ') {
            if let (Ok(d), Ok(s)) = (d.parse::<Digest>(), s.parse::<u64>()) {
                if cas.contains(&d, Some(s)) {
                    on_bytes(info.nar_size);
                    return Ok((d, s));
                }
            }
        }
    }
    let want = (info.nar_hash.digest(), info.nar_size);
    let own = pack(
        cas,
        info,
        packer,
        |w| dump_nar(Path::new(info.path.as_str()), w),
        on_bytes,
    );
    let found = match own {
        Ok(found) if found.1 == want => found,
        _ => pack(
            cas,
            info,
            packer,
            |w| {
                let mut dump = nix_cmd("nix-store")
                    .args(["--dump", info.path.as_str()])
                    .stream()
                    .map_err(io::Error::other)?;
                io::copy(&mut dump, w)?;
                dump.finish().map_err(io::Error::other)
            },
            &|_| {},
        )?,
    };
    let (writer, (d, n)) = found;
    if (d, n) != want {
        return Err(anyhow!(
            "the NAR of {} does not match what Nix recorded: Nix says {} ({} bytes), `nix-store --dump` gives {} ({n} bytes); run `nix-store --verify --check-contents --repair` and create again",
            info.path,
            info.nar_hash,
            info.nar_size,
            NarHash::from_digest(&d),
        ));
    }
    let (d, s) = writer.finish(None)?;
    if let Some(dir) = index.parent() {
        fs::create_dir_all(dir)?;
    }
    // A hint, not data: temp + rename but no fsync (one per path would cost more than
    // packing small paths); a lost or stale entry only means packing again.
    let mut tmp = crate::io::temp::file_in(index.parent().unwrap_or(cas.root()), "nar-index")?;
    tmp.write_all(format!("{d} {s}\n").as_bytes())?;
    tmp.persist(&index).map_err(|e| e.error)?;
    Ok((d, s))
}

/// NARs up to this size are made and compressed in memory, on the packing worker's
/// own thread, and their blobs get no index entry: on a closure of many small
/// paths, the compressing thread started per path and the two files made per path
/// (the blob and its index entry, on a file system that must find a free inode for
/// each) were most of create's time. Redoing such a NAR on a warm create costs less
/// than reading an index entry would. One frame either way, so the blob is the one
/// [`pack`] would make.
const SMALL_NAR: u64 = 256 << 10;

/// The blob of a NAR of at most [`SMALL_NAR`] bytes: made in memory (the walk, or
/// `nix-store --dump` when the walk disagrees with Nix), checked against the NAR
/// hash and size Nix recorded, compressed as one frame, and kept in memory for the
/// bundle writer ([`Cas::hold`]; a file in the cache only past its budget).
fn small_blob(
    cas: &Cas,
    info: &PathInfo,
    packer: &mut Packer,
    on_bytes: &dyn Fn(u64),
) -> Result<(Digest, u64)> {
    let want = (info.nar_hash.digest(), info.nar_size);
    let mut nar = Capped {
        buf: std::mem::take(&mut packer.small),
        cap: info.nar_size,
    };
    nar.buf.clear();
    let own = dump_nar(Path::new(info.path.as_str()), &mut nar);
    let found = |b: &[u8]| (Digest::of(b), b.len() as u64);
    if own.is_err() || found(&nar.buf) != want {
        nar.buf.clear();
        let mut dump = nix_cmd("nix-store")
            .args(["--dump", info.path.as_str()])
            .stream()?;
        // Past the size Nix recorded is a mismatch already: stop keeping it there
        // (the rest is read and dropped, so that nix-store can finish).
        let copied = io::copy(&mut dump.stdout, &mut nar);
        if copied.is_err() {
            io::copy(&mut dump.stdout, &mut io::sink())?;
        }
        let finished = dump.finish();
        if copied.is_ok() {
            finished?;
        }
        let (d, n) = found(&nar.buf);
        if (d, n) != want {
            return Err(anyhow!(
                "the NAR of {} does not match what Nix recorded: Nix says {} ({} bytes), `nix-store --dump` gives {} ({}{n} bytes); run `nix-store --verify --check-contents --repair` and create again",
                info.path,
                info.nar_hash,
                info.nar_size,
                NarHash::from_digest(&d),
                if copied.is_err() { "more than " } else { "" },
            ));
        }
    }
    on_bytes(info.nar_size);
    if packer.encoder.is_none() {
        packer.encoder = Some(FrameEncoder::new(NAR_ZSTD_LEVEL)?);
    }
    let encoder = packer.encoder.as_mut().expect("just made");
    let mut blob = std::mem::take(&mut packer.compressed);
    blob.clear();
    encoder.encode(&nar.buf, &mut blob)?;
    let d = cas.hold(&blob)?;
    let size = blob.len() as u64;
    packer.small = nar.buf;
    packer.compressed = blob;
    Ok((d, size))
}

/// A writer into memory that refuses to hold more than `cap` bytes.
struct Capped {
    buf: Vec<u8>,
    cap: u64,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() as u64 + data.len() as u64 > self.cap {
            return Err(io::Error::other("the NAR is larger than Nix recorded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams a NAR made by `produce` through a hasher and the zstd encoder into a cache
/// writer; returns the writer (not yet named) and the NAR's digest and size.
///
/// Walking and hashing run on this thread, compressing on another (like `nix-store
/// --export | zstd`), so a single large path uses two cores too. The NAR travels in
/// frames of [`FRAME_CONTENT`] bytes (see [`crate::bundle::frames`] for why): the
/// walk fills one buffer while the other is compressed, and the two are handed back
/// and forth, so memory stays at two frames whatever the path's size.
fn pack(
    cas: &Cas,
    info: &PathInfo,
    packer: &mut Packer,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    on_bytes: &dyn Fn(u64),
) -> Result<(crate::io::cas::BlobWriter, (Digest, u64))> {
    let mut out = cas.writer()?;
    if packer.encoder.is_none() {
        packer.encoder = Some(FrameEncoder::new(NAR_ZSTD_LEVEL)?);
    }
    let encoder = packer.encoder.as_mut().expect("just made");
    let mut buffers = std::mem::take(&mut packer.buffers);
    buffers.resize_with(2, || Vec::with_capacity(FRAME_CONTENT));
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    std::thread::scope(|s| {
        let compressor = s.spawn(move || -> io::Result<crate::io::cas::BlobWriter> {
            let mut failed = None;
            for frame in full_rx {
                if failed.is_none() {
                    failed = encoder.encode(&frame, &mut out).err();
                }
                // The walk may be done already and gone; then the buffer just drops.
                let _ = free_tx.send(frame);
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(out),
            }
        });
        let current = buffers.pop().expect("two buffers");
        let feeder = FrameCutter::new(
            current,
            Handoff {
                spare: buffers.pop(),
                full: full_tx,
                free: free_rx,
            },
        );
        let mut w = io::BufWriter::with_capacity(
            256 << 10,
            HashingWriter::new(ProgressWriter {
                inner: feeder,
                on_bytes,
            }),
        );
        let produced = produce(&mut w).and_then(|()| w.flush());
        let (feeder, d, n) = w.into_inner().map_err(|e| e.into_error())?.finish();
        let sent = match produced {
            Ok(()) => feeder
                .inner
                .finish()
                .map(|(handoff, last)| packer.buffers = handoff.buffers_back(last)),
            Err(e) => Err(e), // dropping the feeder ends the compressor's loop
        };
        let writer = compressor
            .join()
            .map_err(|_| anyhow!("the zstd thread panicked"))?;
        sent.with_context(|| format!("streaming the NAR of {}", info.path))?;
        Ok((writer?, (d, n)))
    })
}

/// What a packing worker keeps from one path to the next: the zstd context and the
/// two frame buffers. (Made afresh for every path, 12 MiB of new memory per path
/// showed up as page faults and zeroing on closures of many small paths.)
#[derive(Default)]
struct Packer {
    encoder: Option<FrameEncoder>,
    buffers: Vec<Vec<u8>>,
    /// A small NAR and its blob (see [`small_blob`]).
    small: Vec<u8>,
    compressed: Vec<u8>,
}

/// Hands each full frame buffer to the compressing thread and takes an emptied one
/// back (there are two in all).
struct Handoff {
    /// A buffer not yet handed over.
    spare: Option<Vec<u8>>,
    full: std::sync::mpsc::SyncSender<Vec<u8>>,
    free: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl FrameSink for Handoff {
    fn frame(&mut self, content: Vec<u8>) -> io::Result<Vec<u8>> {
        let stopped = || io::Error::new(io::ErrorKind::BrokenPipe, "the zstd thread stopped");
        let next = match self.spare.take() {
            Some(b) => b,
            None => self.free.recv().map_err(|_| stopped())?,
        };
        self.full.send(content).map_err(|_| stopped())?;
        Ok(next)
    }
}

impl Handoff {
    /// Lets the compressing thread finish and returns both buffers (`last` is the
    /// one the cutter held) for the next path.
    fn buffers_back(self, last: Vec<u8>) -> Vec<Vec<u8>> {
        let Handoff { spare, full, free } = self;
        drop(full);
        // Each buffer comes back once the compressor is done with it.
        let mut buffers: Vec<Vec<u8>> = free.iter().collect();
        buffers.push(last);
        buffers.extend(spare);
        buffers
    }
}

struct ProgressWriter<'a, W> {
    inner: W,
    on_bytes: &'a dyn Fn(u64),
}

impl<W: Write> Write for ProgressWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
