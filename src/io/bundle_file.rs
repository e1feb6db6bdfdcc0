//! A bundle written into a regular file from the cache, blobs copied in parallel.
//!
//! Once [`BundleBuilder::finish`](crate::bundle::writer::BundleBuilder::finish) has
//! fixed every offset, the blobs are independent byte ranges of one file: nothing
//! forces them through one sequential stream. Copying is the whole of a warm-cache
//! create and the last serial step of a cold one, so here the file is sized first
//! (the gaps between entries, tar padding and the end marker, are then zeros
//! already), the prefix is written, and as many workers as there are cores each
//! copy whole blobs to their offsets. A blob this run hashed itself is copied
//! file to file (`copy_file_range` in the kernel, where the file system has it); any
//! other is hashed on the way, as [`write_bundle`](crate::bundle::writer::write_bundle)
//! does, so a cache damaged since an earlier run still cannot make a bundle.
//!
//! The bytes are exactly those of `write_bundle` (tested). Outputs that are not
//! regular files (a pipe, `/dev/null`) keep using `write_bundle`.

use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bundle::manifest::BlobEntry;
use crate::bundle::signature::Envelope;
use crate::bundle::writer::{copy_blob_bytes, write_prefix, BlobSource, Plan, WriteError};
use crate::io::cas::Cas;

/// Bytes copied between two background syncs (see `atomic`'s early writeback).
const SYNC_EVERY: u64 = 32 << 20;

/// Writes the bundle into the regular file at `path` (created empty by the caller,
/// normally an [`AtomicFile`](crate::io::atomic::AtomicFile)'s temporary file).
/// `on_blob` is told of each blob once it is in place (for progress).
pub fn write_parallel(
    path: &Path,
    plan: &Plan,
    envelope: &Envelope,
    cas: &Cas,
    jobs: usize,
    on_blob: &(dyn Fn(&BlobEntry) + Sync),
) -> Result<u64, WriteError> {
    let file = fs_err::OpenOptions::new()
        .write(true)
        .open(path)?
        .into_file();
    let total = plan.file_len(envelope);
    file.set_len(total)?;
    let mut prefix = Vec::new();
    write_prefix(&mut prefix, plan, envelope)?;
    file.write_all_at(&prefix, 0)?;
    let data_start = plan.data_start(envelope);
    let blobs: Vec<&BlobEntry> = plan.stored_blobs().collect();
    let copied = AtomicU64::new(0);
    let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::scope(|s| {
        // Starts the disk writeback while copying goes on, so the fsync before the
        // rename finds little left to do.
        let syncer = file.try_clone().ok();
        s.spawn(move || {
            while woken.recv().is_ok() {
                if let Some(f) = &syncer {
                    let _ = f.sync_data(); // errors surface in the final fsync
                }
            }
        });
        let all_copied = crate::pool::map(
            jobs,
            &blobs,
            // One handle per worker: each has its own file position.
            || {
                fs_err::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map(fs_err::File::into_file)
                    .map_err(WriteError::from)
            },
            |out, blob| {
                let at = data_start + blob.offset.expect("stored blobs have offsets");
                copy_blob(cas, plan, blob, &file, out, at)?;
                on_blob(blob);
                let before = copied.fetch_add(blob.size, Ordering::Relaxed);
                if (before + blob.size) / SYNC_EVERY != before / SYNC_EVERY {
                    let _ = wake.try_send(());
                }
                Ok(())
            },
        );
        drop(wake); // ends the syncer
        all_copied
    })?;
    Ok(total)
}

/// Puts one blob and its tar header in place at `at`.
fn copy_blob(
    cas: &Cas,
    plan: &Plan,
    blob: &BlobEntry,
    file: &std::fs::File,
    out: &mut std::fs::File,
    at: u64,
) -> Result<(), WriteError> {
    file.write_all_at(&plan.blob_header(blob)?, at - 512)?;
    let src = cas
        .open_read(&blob.digest)
        .map_err(|e| WriteError::Source {
            digest: blob.digest,
            source: e,
        })?
        .into_parts()
        .0;
    out.seek(SeekFrom::Start(at))?;
    if cas.verified_this_run(&blob.digest) {
        // File to file: std hands this to copy_file_range where it can.
        copy_blob_bytes(src, out, blob, true)?;
    } else {
        let mut w = io::BufWriter::with_capacity(1 << 20, &mut *out);
        copy_blob_bytes(src, &mut w, blob, false)?;
        w.flush()?;
    }
    Ok(())
}
