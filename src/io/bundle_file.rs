//! A bundle written into a regular file, or into the data volumes of a split
//! bundle, from the cache, blobs copied in parallel.
//!
//! Once [`BundleBuilder::finish`](crate::bundle::writer::BundleBuilder::finish) has
//! fixed every offset, the blobs are independent byte ranges of one file: nothing
//! forces them through one sequential stream. Copying is the whole of a warm-cache
//! create and the last serial step of a cold one, so here the files are sized first
//! (the gaps between entries, tar padding and the end marker, are then zeros
//! already), the prefix is written, and as many workers as there are cores each
//! copy whole blobs to their offsets. A blob this run hashed itself is copied
//! file to file (`copy_file_range` in the kernel, where the file system has it); any
//! other is hashed on the way, as [`write_bundle`](crate::bundle::writer::write_bundle)
//! does, so a cache damaged since an earlier run still cannot make a bundle.
//!
//! Volumes (format.md section 11) are byte ranges of the same bundle, so writing
//! them is the same job with the bytes at offset `x` going to volume `x / S` at
//! `x % S`: [`Pieces`] says where each byte goes. A blob that lies in one volume is
//! copied in the kernel as for one file; the few that cross a boundary are copied in
//! user space, cut at it. Each worker keeps one file open at a time, so a set of
//! hundreds of volumes does not need hundreds of descriptors per worker.
//!
//! The bytes are exactly those of `write_bundle` (tested). Outputs that are not
//! regular files (a pipe, `/dev/null`) keep using `write_bundle`.
//!
//! A cold create used to write every downloaded byte twice on its critical path:
//! into the cache as it came, then, once the last layer was in, from the cache into
//! the bundle (`copy_file_range`, a page-cache copy: 29% of a cold create's CPU
//! samples, and half a second of wall time for a 614 MiB layer after every
//! download had ended). But every offset is fixed before any byte is fetched (the
//! descriptors give each blob's digest and size), so [`Placement`] lets a download
//! write each blob's bytes at its offset in the bundle's temporary file too, as
//! they stream; `write_parallel` then writes only the tar headers of the blobs
//! placed that way. A blob counts as placed only when one stream wrote all of it
//! there and hashed to its digest; anything else (a resumed download, bytes that
//! did not match) is copied from the cache as before, over whatever the stream left.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::bundle::digest::Digest;
use crate::bundle::manifest::BlobEntry;
use crate::bundle::signature::Envelope;
use crate::bundle::writer::{copy_blob_bytes, write_prefix, Plan, WriteError};
use crate::io::cas::{Cas, Stamp};

/// Bytes copied between two background syncs (see `atomic`'s early writeback).
const SYNC_EVERY: u64 = 32 << 20;

/// Where downloads may put a blob's bytes straight into the bundle's (single,
/// temporary) file while they stream into the cache, and which ones did.
#[derive(Debug)]
pub struct Placement {
    path: PathBuf,
    /// Each stored blob's digest: the file offset of its first byte, and its size.
    at: HashMap<Digest, (u64, u64)>,
    placed: Mutex<HashSet<Digest>>,
    /// Bytes written through this placement, for the early writeback.
    written: AtomicU64,
    wake: Mutex<Option<std::sync::mpsc::SyncSender<()>>>,
    syncer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Placement {
    /// A placement into `path`, the file the bundle of `plan` signed by `envelope`
    /// will be written to by [`write_parallel`] (with `Pieces::one(path)`).
    pub fn new(path: &Path, plan: &Plan, envelope: &Envelope) -> Placement {
        let data_start = plan.data_start(envelope);
        let at = plan
            .stored_blobs()
            .filter_map(|b| Some((b.digest, (data_start + b.offset?, b.size))))
            .collect();
        // Starts the disk writeback while the downloads go on, as write_parallel
        // does while it copies, so the fsync before the rename finds little left.
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let file = path.to_path_buf();
        let syncer = std::thread::spawn(move || {
            while woken.recv().is_ok() {
                if let Ok(f) = fs_err::File::open(&file) {
                    let _ = f.sync_data(); // errors surface in the final fsync
                }
            }
        });
        Placement {
            path: path.to_path_buf(),
            at,
            placed: Mutex::default(),
            written: AtomicU64::new(0),
            wake: Mutex::new(Some(wake)),
            syncer: Mutex::new(Some(syncer)),
        }
    }

    /// The file to write into.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the blob `d` of `size` bytes starts in the file, if the bundle stores it.
    pub fn offset(&self, d: &Digest, size: u64) -> Option<u64> {
        self.at
            .get(d)
            .filter(|(_, s)| *s == size)
            .map(|(offset, _)| *offset)
    }

    /// Notes `n` more bytes written into the file (starts a writeback now and then).
    pub fn wrote(&self, n: u64) {
        let before = self.written.fetch_add(n, Ordering::Relaxed);
        if (before + n) / SYNC_EVERY != before / SYNC_EVERY {
            if let Some(wake) = &*self.wake.lock().unwrap_or_else(|p| p.into_inner()) {
                let _ = wake.try_send(());
            }
        }
    }

    /// Records that the file now holds the blob `d` at its offset: every byte of it,
    /// written by one stream from its first byte, hashed to `d`.
    pub fn placed(&self, d: Digest) {
        self.placed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d);
    }

    /// Whether the file holds the blob `d` ([`Placement::placed`]).
    pub fn holds(&self, d: &Digest) -> bool {
        self.placed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(d)
    }

    /// Ends the writeback thread.
    fn stop(&self) {
        drop(self.wake.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Some(t) = self.syncer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Placement {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The regular files a bundle's bytes go to: one file, or volumes of `volume_size`
/// bytes each (the last one shorter), in order.
#[derive(Debug, Clone)]
pub struct Pieces {
    paths: Vec<PathBuf>,
    volume_size: u64,
}

impl Pieces {
    /// The whole bundle in one file.
    pub fn one(path: &Path) -> Pieces {
        Pieces {
            paths: vec![path.to_path_buf()],
            volume_size: u64::MAX,
        }
    }

    /// Volumes of `volume_size` bytes (`paths` in order: the first holds byte 0).
    pub fn volumes(paths: Vec<PathBuf>, volume_size: u64) -> Pieces {
        Pieces {
            paths,
            volume_size: volume_size.max(1),
        }
    }

    /// The piece holding byte `at`, and where in it.
    fn locate(&self, at: u64) -> (usize, u64) {
        if self.paths.len() == 1 {
            return (0, at);
        }
        (
            ((at / self.volume_size) as usize).min(self.paths.len() - 1),
            at % self.volume_size,
        )
    }

    /// Bytes of piece `i` for a bundle of `total` bytes.
    fn len_of(&self, i: usize, total: u64) -> u64 {
        if self.paths.len() == 1 {
            return total;
        }
        let start = i as u64 * self.volume_size;
        self.volume_size.min(total.saturating_sub(start))
    }
}

/// One worker's way into the pieces: one file open at a time, opened when needed.
struct Cursor<'a> {
    pieces: &'a Pieces,
    open: Option<(usize, std::fs::File)>,
    /// Pieces written to since the syncer last looked.
    dirty: &'a Mutex<BTreeSet<usize>>,
}

impl<'a> Cursor<'a> {
    fn new(pieces: &'a Pieces, dirty: &'a Mutex<BTreeSet<usize>>) -> Self {
        Cursor {
            pieces,
            open: None,
            dirty,
        }
    }

    fn file(&mut self, i: usize) -> io::Result<&mut std::fs::File> {
        if self.open.as_ref().map(|(j, _)| *j) != Some(i) {
            let path = &self.pieces.paths[i];
            let f = fs_err::OpenOptions::new()
                .write(true)
                .open(path)?
                .into_file();
            self.open = Some((i, f));
        }
        if let Ok(mut d) = self.dirty.lock() {
            d.insert(i);
        }
        Ok(&mut self.open.as_mut().expect("just opened").1)
    }

    /// Writes `buf` at bundle offset `at`, across pieces where it must.
    fn write_all_at(&mut self, mut buf: &[u8], mut at: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let (i, within) = self.pieces.locate(at);
            let room = (self.pieces.volume_size - within).min(buf.len() as u64) as usize;
            self.file(i)?.write_all_at(&buf[..room], within)?;
            buf = &buf[room..];
            at += room as u64;
        }
        Ok(())
    }
}

/// A `Write` at a moving bundle offset, for a blob that crosses volumes.
struct SpanWriter<'c, 'a> {
    cursor: &'c mut Cursor<'a>,
    at: u64,
}

impl Write for SpanWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (_, within) = self.cursor.pieces.locate(self.at);
        let n = (self.cursor.pieces.volume_size - within).min(buf.len() as u64) as usize;
        self.cursor.write_all_at(&buf[..n], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes the bundle into `out`'s regular files (created empty by the caller,
/// normally temporary files renamed into place afterwards). `on_blob` is told of
/// each blob once it is in place (for progress). The blobs `placed` holds (when
/// given, a placement into `out`'s one file) are in place already: only their
/// headers are written.
pub fn write_parallel(
    out: &Pieces,
    plan: &Plan,
    envelope: &Envelope,
    cas: &Cas,
    jobs: usize,
    placed: Option<&Placement>,
    on_blob: &(dyn Fn(&BlobEntry) + Sync),
) -> Result<u64, WriteError> {
    if let Some(p) = placed {
        p.stop();
        debug_assert!(
            out.paths == [p.path.clone()],
            "a placement is into the one file written"
        );
    }
    let total = plan.file_len(envelope);
    for (i, path) in out.paths.iter().enumerate() {
        fs_err::OpenOptions::new()
            .write(true)
            .open(path)?
            .set_len(out.len_of(i, total))?;
    }
    let dirty = Mutex::new(BTreeSet::new());
    // Straight into the files, not gathered first: the manifest is already in
    // memory once (9 MiB for 20,000 objects), and a buffer of the prefix was a
    // second copy, doubled as it grew.
    let mut cursor = Cursor::new(out, &dirty);
    let mut prefix = io::BufWriter::with_capacity(
        1 << 20,
        SpanWriter {
            cursor: &mut cursor,
            at: 0,
        },
    );
    write_prefix(&mut prefix, plan, envelope)?;
    prefix.flush()?;
    drop(prefix);
    let data_start = plan.data_start(envelope);
    let blobs: Vec<&BlobEntry> = plan.stored_blobs().collect();
    let copied = AtomicU64::new(0);
    let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::scope(|s| {
        // Starts the disk writeback while copying goes on, so the fsync before the
        // rename finds little left to do.
        let dirty = &dirty;
        s.spawn(move || {
            while woken.recv().is_ok() {
                let touched = std::mem::take(&mut *dirty.lock().unwrap_or_else(|p| p.into_inner()));
                for i in touched {
                    if let Ok(f) = fs_err::File::open(&out.paths[i]) {
                        let _ = f.sync_data(); // errors surface in the final fsync
                    }
                }
            }
        });
        let all_copied = crate::pool::map(
            jobs,
            &blobs,
            // One cursor per worker: each has its own file and position.
            || Ok(Cursor::new(out, dirty)),
            |cursor, blob| {
                let at = data_start + blob.offset.expect("stored blobs have offsets");
                if placed.is_some_and(|p| p.holds(&blob.digest)) {
                    cursor.write_all_at(&plan.blob_header(blob)?, at - 512)?;
                } else {
                    copy_blob(cas, plan, blob, cursor, at)?;
                }
                on_blob(blob);
                let before = copied.fetch_add(blob.size, Ordering::Relaxed);
                if (before + blob.size) / SYNC_EVERY != before / SYNC_EVERY {
                    let _ = wake.try_send(());
                }
                Ok::<_, WriteError>(())
            },
        );
        drop(wake); // ends the syncer
        all_copied
    })?;
    Ok(total)
}

/// Puts one blob and its tar header in place at bundle offset `at`.
fn copy_blob(
    cas: &Cas,
    plan: &Plan,
    blob: &BlobEntry,
    cursor: &mut Cursor,
    at: u64,
) -> Result<(), WriteError> {
    if let Some(bytes) = cas.held(&blob.digest) {
        // Kept in memory, hashed to its name when it was kept: header and bytes in
        // one write.
        if bytes.len() as u64 != blob.size {
            return Err(WriteError::Source {
                digest: blob.digest,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} bytes kept, {} expected", bytes.len(), blob.size),
                ),
            });
        }
        let mut both = plan.blob_header(blob)?.to_vec();
        both.extend_from_slice(&bytes);
        cursor.write_all_at(&both, at - 512)?;
        return Ok(());
    }
    cursor.write_all_at(&plan.blob_header(blob)?, at - 512)?;
    let src = cas
        .open_read(&blob.digest)
        .map_err(|e| WriteError::Source {
            digest: blob.digest,
            source: e,
        })?
        .into_parts()
        .0;
    let stamp = Stamp::of_file(&src).map_err(|e| WriteError::Source {
        digest: blob.digest,
        source: e,
    })?;
    let hashed = cas.known_good_stamp(&blob.digest, &stamp);
    let (i, within) = cursor.pieces.locate(at);
    let fits = within + blob.size <= cursor.pieces.volume_size;
    if fits && hashed {
        // File to file: std hands this to copy_file_range where it can.
        let out = cursor.file(i)?;
        out.seek(SeekFrom::Start(within))?;
        copy_blob_bytes(src, out, blob, true)?;
    } else if fits {
        let out = cursor.file(i)?;
        out.seek(SeekFrom::Start(within))?;
        let mut w = io::BufWriter::with_capacity(1 << 20, out);
        copy_blob_bytes(src, &mut w, blob, false)?;
        w.flush()?;
    } else if hashed {
        // Across volumes, cut at each boundary: each piece file to file again.
        let src = &src;
        let mut done = 0u64;
        while done < blob.size {
            let (i, within) = cursor.pieces.locate(at + done);
            let n = (cursor.pieces.volume_size - within).min(blob.size - done);
            let out = cursor.file(i)?;
            out.seek(SeekFrom::Start(within))?;
            let copied = io::copy(&mut src.take(n), out).map_err(|e| WriteError::Source {
                digest: blob.digest,
                source: e,
            })?;
            if copied != n {
                return Err(WriteError::Source {
                    digest: blob.digest,
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the cache gave {} bytes, {} expected",
                            done + copied,
                            blob.size
                        ),
                    ),
                });
            }
            done += n;
        }
    } else {
        let mut w = io::BufWriter::with_capacity(1 << 20, SpanWriter { cursor, at });
        copy_blob_bytes(src, &mut w, blob, false)?;
        w.flush()?;
    }
    if !hashed {
        // Its bytes hashed to its name just now (a mismatch returned above): the
        // record lets the next create copy it without hashing, while `stamp` holds.
        cas.note_hashed(blob.digest, stamp);
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "test fixtures: std::fs and the tools that make them, where a failure is the test's"
)]
mod tests {
    use super::*;
    use crate::bundle::keys::SecretKey;
    use crate::bundle::manifest::BlobEntry;
    use crate::bundle::writer::{write_bundle, BundleBuilder};
    use crate::bundle::Digest;

    /// A plan of blobs of awkward sizes, in a cache, with its envelope.
    fn fixture(cas: &Cas) -> (Plan, Envelope) {
        let mut b = BundleBuilder::new("t", "1", 0, vec!["all".into()]);
        for (i, n) in [1usize, 511, 512, 513, 5000, 20_000, 70_001]
            .iter()
            .enumerate()
        {
            let bytes: Vec<u8> = (0..*n).map(|x| (x * 13 + i) as u8).collect();
            let d = cas.put_bytes(&bytes).unwrap();
            b.add_blob(BlobEntry::new(d, *n as u64, "application/octet-stream"), 0)
                .unwrap();
        }
        let plan = b.finish().unwrap();
        let key = SecretKey::from_seed("t", [7; 32]).unwrap();
        let env = Envelope::sign(plan.digest, &[key]);
        (plan, env)
    }

    #[test]
    fn volumes_hold_exactly_the_bytes_of_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path().join("cache")).unwrap();
        let (plan, env) = fixture(&cas);
        let mut whole = Vec::new();
        write_bundle(&mut whole, &plan, &env, &cas, |_| {}).unwrap();
        let one = dir.path().join("one.gapb");
        std::fs::File::create(&one).unwrap();
        write_parallel(&Pieces::one(&one), &plan, &env, &cas, 3, None, &|_| {}).unwrap();
        assert!(std::fs::read(&one).unwrap() == whole);
        // A size that cuts headers, blobs and padding anywhere; blobs this run hashed
        // (copied file to file) and blobs of an earlier run (hashed on the way).
        let earlier = Cas::open(dir.path().join("cache")).unwrap();
        for (size, cas) in [
            (4999u64, &cas),
            (8192, &cas),
            (33_333, &cas),
            (4999, &earlier),
            (33_333, &earlier),
        ] {
            let count = (whole.len() as u64).div_ceil(size) as usize;
            let paths: Vec<PathBuf> = (0..count)
                .map(|i| dir.path().join(format!("v{size}.{i:03}")))
                .collect();
            for p in &paths {
                std::fs::File::create(p).unwrap();
            }
            write_parallel(
                &Pieces::volumes(paths.clone(), size),
                &plan,
                &env,
                cas,
                2,
                None,
                &|_| {},
            )
            .unwrap();
            let mut joined = Vec::new();
            for (i, p) in paths.iter().enumerate() {
                let v = std::fs::read(p).unwrap();
                if i + 1 < count {
                    assert_eq!(v.len() as u64, size);
                }
                joined.extend(v);
            }
            assert!(joined == whole, "volumes of {size}");
            assert_eq!(Digest::of(&joined), Digest::of(&whole));
        }
    }
}
