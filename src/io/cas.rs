//! The local content-addressed cache.
//!
//! Every blob `create` gets (from a registry, a layout, an archive, later Nix) lands
//! here first, named by its sha256 exactly like an OCI layout's `blobs/sha256/`, so a
//! second `create` with nothing changed reads everything from disk and a blob shared by
//! many images is fetched once. A blob only gets its final name after its bytes hashed
//! to that name (temp file + rename), so a crash or a lying server can leave garbage in
//! `tmp/` but never a wrong blob; the temporary names are [`crate::io::temp`]'s, and
//! opening the cache removes what killed runs left there. Interrupted downloads keep their bytes in `partial/`
//! so the next attempt resumes with an HTTP Range request instead of starting over.

use std::collections::HashSet;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fs_err as fs;
use tempfile::NamedTempFile;

use crate::bundle::digest::{hash_reader, Digest, HashingWriter};
use crate::bundle::writer::BlobSource;

/// Why a cache operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CasError {
    /// Bytes did not hash to the expected digest or size.
    #[error("content does not match its descriptor: expected {expected} ({expected_size} bytes), got {found} ({found_size} bytes)")]
    DigestMismatch {
        /// Expected digest.
        expected: Digest,
        /// Expected size.
        expected_size: u64,
        /// Digest of the bytes received.
        found: Digest,
        /// Bytes received.
        found_size: u64,
    },
    /// File system error (the path is in the message).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl crate::error::Classify for CasError {
    /// The cache is the local machine's: its errors are any other error.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        None
    }
}

/// A cache directory.
#[derive(Debug, Clone)]
pub struct Cas {
    root: PathBuf,
    /// Blobs whose bytes this process hashed on their way in. The writer re-hashes
    /// only the others (earlier runs' blobs, which the disk may have damaged since),
    /// so a cold-cache create hashes each byte once, not twice.
    verified: Arc<Mutex<HashSet<Digest>>>,
}

impl Cas {
    /// Opens (creating if needed) a cache rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for sub in ["blobs/sha256", "tmp", "partial"] {
            fs::create_dir_all(root.join(sub))?;
        }
        crate::io::temp::sweep(&root.join("tmp"));
        Ok(Self {
            root,
            verified: Arc::default(),
        })
    }

    fn mark_verified(&self, d: Digest) {
        self.verified.lock().expect("not poisoned").insert(d);
    }

    /// The default cache: `$XDG_CACHE_HOME/gapbundle` (or the platform's cache dir).
    pub fn default_root() -> PathBuf {
        dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("gapbundle")
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a blob lives (whether or not it is there).
    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Whether a blob is cached (with the given size, when known). Sizes are checked
    /// because a truncated file from an older, buggier writer must not count.
    pub fn contains(&self, d: &Digest, size: Option<u64>) -> bool {
        match fs::metadata(self.path(d)) {
            Ok(m) => m.is_file() && size.is_none_or(|s| s == m.len()),
            Err(_) => false,
        }
    }

    /// A writer whose bytes become a blob on [`BlobWriter::finish`].
    pub fn writer(&self) -> io::Result<BlobWriter> {
        let tmp = crate::io::temp::file_in(&self.root.join("tmp"), "blob")?;
        Ok(BlobWriter {
            inner: HashingWriter::new(BufWriter::with_capacity(1 << 20, tmp)),
            cas: self.clone(),
        })
    }

    /// Stores small bytes (manifests, configs) and returns their digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, CasError> {
        let d = Digest::of(bytes);
        if self.contains(&d, Some(bytes.len() as u64)) {
            return Ok(d);
        }
        let mut w = self.writer()?;
        w.write_all(bytes)?;
        w.finish(Some((d, bytes.len() as u64)))?;
        Ok(d)
    }

    /// Reads a small blob whole (only for manifests and configs, never layers).
    pub fn read_small(&self, d: &Digest) -> io::Result<Vec<u8>> {
        fs::read(self.path(d))
    }

    /// Opens a blob for reading.
    pub fn open_read(&self, d: &Digest) -> io::Result<fs::File> {
        fs::File::open(self.path(d))
    }

    /// Copies a file into the cache, hashing as it goes; checks `expected` when given.
    pub fn import_reader<R: Read>(
        &self,
        mut r: R,
        expected: Option<(Digest, u64)>,
    ) -> Result<(Digest, u64), CasError> {
        if let Some((d, s)) = expected {
            if self.contains(&d, Some(s)) {
                return Ok((d, s));
            }
        }
        let mut w = self.writer()?;
        io::copy(&mut r, &mut w)?;
        w.finish(expected)
    }

    /// Opens the partial download of a blob, returning it and the bytes it already has.
    /// The caller appends the rest and then calls [`Cas::finish_partial`].
    pub fn partial(&self, d: &Digest) -> io::Result<(fs::File, u64)> {
        let path = self.root.join("partial").join(d.hex());
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        let len = f.seek(SeekFrom::End(0))?;
        Ok((f, len))
    }

    /// Drops a partial download (after the server refused a range, or bad bytes).
    pub fn discard_partial(&self, d: &Digest) -> io::Result<()> {
        match fs::remove_file(self.root.join("partial").join(d.hex())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Checks a complete partial download and moves it into place. A mismatch
    /// deletes it, so the next attempt starts clean.
    pub fn finish_partial(&self, d: &Digest, size: u64) -> Result<(), CasError> {
        let path = self.root.join("partial").join(d.hex());
        let (found, found_size) = hash_reader(fs::File::open(&path)?)?;
        if found != *d || found_size != size {
            self.discard_partial(d)?;
            return Err(CasError::DigestMismatch {
                expected: *d,
                expected_size: size,
                found,
                found_size,
            });
        }
        fs::rename(&path, self.path(d))?;
        self.mark_verified(*d);
        Ok(())
    }
}

impl BlobSource for Cas {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::BufReader::with_capacity(
            1 << 20,
            self.open_read(digest)?,
        )))
    }

    fn verified_this_run(&self, digest: &Digest) -> bool {
        self.verified.lock().expect("not poisoned").contains(digest)
    }
}

/// Streams bytes into the cache; the blob appears under its digest on `finish`.
pub struct BlobWriter {
    inner: HashingWriter<BufWriter<NamedTempFile>>,
    cas: Cas,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl BlobWriter {
    /// Finishes the blob. With `expected`, the digest and size must match, else the
    /// bytes are thrown away and the mismatch is returned.
    pub fn finish(self, expected: Option<(Digest, u64)>) -> Result<(Digest, u64), CasError> {
        let (buf, digest, size) = self.inner.finish();
        if let Some((want, want_size)) = expected {
            if want != digest || want_size != size {
                return Err(CasError::DigestMismatch {
                    expected: want,
                    expected_size: want_size,
                    found: digest,
                    found_size: size,
                });
            }
        }
        let tmp = buf.into_inner().map_err(|e| e.into_error())?;
        tmp.persist(self.cas.path(&digest))
            .map_err(|e| CasError::Io(e.error))?;
        self.cas.mark_verified(digest);
        Ok((digest, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_get_their_name_only_when_the_bytes_match() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let d = cas.put_bytes(b"hello").unwrap();
        assert!(cas.contains(&d, Some(5)));
        assert!(!cas.contains(&d, Some(6)));
        let mut w = cas.writer().unwrap();
        w.write_all(b"evil").unwrap();
        let err = w.finish(Some((Digest::of(b"good"), 4))).unwrap_err();
        assert!(matches!(err, CasError::DigestMismatch { .. }));
        assert!(!cas.contains(&Digest::of(b"evil"), None));
    }

    #[test]
    fn partial_downloads_resume_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let d = Digest::of(b"0123456789");
        let (mut f, have) = cas.partial(&d).unwrap();
        assert_eq!(have, 0);
        f.write_all(b"01234").unwrap();
        drop(f);
        let (mut f, have) = cas.partial(&d).unwrap();
        assert_eq!(have, 5);
        f.write_all(b"56789").unwrap();
        drop(f);
        cas.finish_partial(&d, 10).unwrap();
        assert!(cas.contains(&d, Some(10)));
        assert!(cas.verified_this_run(&d));
        // Another process (a later create) has not seen these bytes.
        assert!(!Cas::open(dir.path()).unwrap().verified_this_run(&d));
    }
}
