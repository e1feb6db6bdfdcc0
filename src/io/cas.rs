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
//!
//! Hashing every cached blob again made a warm create (nothing changed) cost 2.8
//! times a `cp` of the finished bundle. So the cache also keeps a record,
//! `verified.v1`, of the blobs whose bytes were hashed to their names, each with the
//! stamp its file had then: device, inode, size, modification and change times to
//! the nanosecond. A blob whose file still has that stamp is copied without being
//! hashed again; any write to it, a truncation, a replacement (rename, restore from
//! a backup, even one that sets the modification time back) changes the change
//! time or the inode, and it is hashed again as it is copied. A stamp is recorded
//! only when it is older than the record file's own time (Git's "racy clean" rule),
//! so a change in the same tick of a coarse file system clock cannot hide. What the
//! record trusts, and what it does not, is in docs/security.md ("The cache").
//!
//! Blobs that are made again on every create anyway (the NAR of a small store path:
//! see `resolve::nix::pack`) need no file at all: a closure of 2,000 tiny paths made
//! 2,000 cache files, each then copied into the bundle, and the file system's work
//! for them (a free inode, a rename, an open and a copy each) was most of create.
//! [`Cas::hold`] keeps such a blob in this process's memory instead, up to
//! [`HOLD_MAX`] bytes a blob and [`HOLD_BUDGET`] in all (past that, it is a file
//! like any other), and the bundle writer copies it from there.

use std::collections::HashMap;
use std::io::{self, BufRead, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
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

/// The name of the verified-blob record in the cache's root.
const RECORD: &str = "verified.v1";

/// What identifies one version of a file: any change to its bytes through the file
/// system changes its change time (`ctime`, which no system call sets back), and a
/// replacement changes its inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    /// The stamp of a file's metadata.
    pub fn of(m: &std::fs::Metadata) -> Stamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        }
    }

    /// The stamp of an open file.
    pub fn of_file(f: &std::fs::File) -> io::Result<Stamp> {
        Ok(Stamp::of(&f.metadata()?))
    }

    /// One line of the record: `<hex> <dev> <ino> <size> <mtime_ns> <ctime_ns>`.
    fn line(&self, d: &Digest) -> String {
        format!(
            "{} {} {} {} {} {}\n",
            d.hex(),
            self.dev,
            self.ino,
            self.size,
            self.mtime_ns,
            self.ctime_ns
        )
    }

    /// Parses [`Stamp::line`]; anything else (a torn or foreign line) is `None`.
    fn parse(line: &str) -> Option<(Digest, Stamp)> {
        let mut f = line.split(' ');
        let d = Digest::from_hex(f.next()?).ok()?;
        let stamp = Stamp {
            dev: f.next()?.parse().ok()?,
            ino: f.next()?.parse().ok()?,
            size: f.next()?.parse().ok()?,
            mtime_ns: f.next()?.parse().ok()?,
            ctime_ns: f.next()?.parse().ok()?,
        };
        f.next().is_none().then_some((d, stamp))
    }
}

/// A cache directory.
#[derive(Debug, Clone)]
pub struct Cas {
    root: PathBuf,
    /// Blobs whose bytes this process hashed (on their way in, or as a writer
    /// copied them), with their file's stamp right after: the writer copies these
    /// without hashing them again while their stamp holds, so a cold-cache create
    /// hashes each byte once, not twice.
    verified: Arc<Mutex<HashMap<Digest, Stamp>>>,
    /// The record earlier runs left ([`RECORD`]), read once at open.
    recorded: Arc<Mutex<HashMap<Digest, Stamp>>>,
    /// Blobs kept in memory for this process only ([`Cas::hold`]).
    held: Arc<Mutex<Held>>,
}

/// The largest blob [`Cas::hold`] keeps in memory.
pub const HOLD_MAX: usize = 64 << 10;
/// The most bytes [`Cas::hold`] keeps in memory in all: a small part of the 64 MiB
/// a create may use.
pub const HOLD_BUDGET: usize = 16 << 20;

/// Blobs in memory, and their bytes in all.
#[derive(Debug, Default)]
struct Held {
    blobs: HashMap<Digest, Arc<[u8]>>,
    bytes: usize,
}

impl Cas {
    /// Opens (creating if needed) a cache rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for sub in ["blobs/sha256", "tmp", "partial"] {
            fs::create_dir_all(root.join(sub))?;
        }
        crate::io::temp::sweep(&root.join("tmp"));
        let recorded = read_record(&root.join(RECORD));
        Ok(Self {
            root,
            verified: Arc::default(),
            recorded: Arc::new(Mutex::new(recorded)),
            held: Arc::default(),
        })
    }

    /// Notes that the blob `d`, stored at its path, was just hashed to its name.
    fn mark_verified(&self, d: Digest) {
        if let Ok(m) = fs::metadata(self.path(&d)) {
            self.note_hashed(d, Stamp::of(&m));
        }
    }

    /// Notes that the bytes of blob `d` hashed to its name while its file had
    /// `stamp` (taken before reading; [`Cas::save_record`] checks it still holds).
    pub fn note_hashed(&self, d: Digest, stamp: Stamp) {
        self.verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d, stamp);
    }

    /// Whether the blob `d`, whose file now has `stamp`, was hashed to its name by
    /// this run or an earlier one while it had exactly that stamp. A recorded stamp
    /// found changed is dropped, so the blob is hashed again (and recorded anew).
    pub fn known_good_stamp(&self, d: &Digest, stamp: &Stamp) -> bool {
        if self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(d)
            == Some(stamp)
        {
            return true;
        }
        let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        match recorded.get(d) {
            Some(s) if s == stamp => true,
            Some(_) => {
                recorded.remove(d);
                false
            }
            None => false,
        }
    }

    /// Writes the verified-blob record: the earlier record's stamps that still
    /// hold, and the blobs this run hashed whose files still have the stamp they
    /// had when hashed. A stamp no older than the record file's own time is left
    /// out (a write in the same clock tick would not change it), so that blob is
    /// hashed once more next time. Losing the record (a crash, another create
    /// saving at the same moment) only costs that hashing.
    pub fn save_record(&self) -> io::Result<()> {
        let mut entries: Vec<(Digest, Stamp)> = {
            let recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
            let verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            let mut all = recorded.clone();
            all.extend(verified.iter().map(|(d, s)| (*d, *s)));
            all.into_iter().collect()
        };
        entries.sort_by_key(|(d, _)| *d);
        let tmp = crate::io::temp::file_in(&self.root.join("tmp"), "verified")?;
        let now = Stamp::of_file(tmp.as_file())?.mtime_ns;
        let mut out = BufWriter::new(tmp);
        for (d, stamp) in entries {
            let holds = fs::metadata(self.path(&d)).is_ok_and(|m| Stamp::of(&m) == stamp);
            if holds && stamp.ctime_ns < now && stamp.mtime_ns < now {
                out.write_all(stamp.line(&d).as_bytes())?;
            }
        }
        let tmp = out.into_inner().map_err(|e| e.into_error())?;
        tmp.persist(self.root.join(RECORD))
            .map_err(|e| io::Error::other(e.error))?;
        Ok(())
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

    /// Keeps `bytes` as a blob for this process only, in memory, when they are at
    /// most [`HOLD_MAX`] and [`HOLD_BUDGET`] allows; otherwise stores them as
    /// [`Cas::put_bytes`] does. Only for blobs every create makes again (nothing
    /// later finds them in the cache): [`Cas::held`] and the bundle writer read them.
    pub fn hold(&self, bytes: &[u8]) -> Result<Digest, CasError> {
        let d = Digest::of(bytes);
        if bytes.len() <= HOLD_MAX {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if held.blobs.contains_key(&d) {
                return Ok(d);
            }
            if held.bytes + bytes.len() <= HOLD_BUDGET {
                held.bytes += bytes.len();
                held.blobs.insert(d, bytes.into());
                return Ok(d);
            }
        }
        self.put_bytes(bytes)
    }

    /// The bytes of a blob [`Cas::hold`] keeps in memory (hashed to their name as
    /// they were kept), if it keeps that one.
    pub fn held(&self, d: &Digest) -> Option<Arc<[u8]>> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.blobs.get(d).cloned()
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

    /// Moves a complete partial download into place without reading it: for
    /// bytes the caller hashed to `d` as they were written (one stream, from the
    /// file's first byte). The size is still checked against the file.
    pub fn finish_partial_hashed(&self, d: &Digest, size: u64) -> Result<(), CasError> {
        let path = self.root.join("partial").join(d.hex());
        let found_size = fs::metadata(&path)?.len();
        if found_size != size {
            // Not what the caller hashed: hash it, which reports the mismatch.
            return self.finish_partial(d, size);
        }
        fs::rename(&path, self.path(d))?;
        self.mark_verified(*d);
        Ok(())
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

/// Reads the verified-blob record; a missing, unreadable or foreign one is empty
/// (its only use is to skip hashing, so the worst a bad line can do is cost that).
fn read_record(path: &Path) -> HashMap<Digest, Stamp> {
    let Ok(f) = fs::File::open(path) else {
        return HashMap::new();
    };
    io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| Stamp::parse(&l))
        .collect()
}

impl BlobSource for Cas {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        if let Some(bytes) = self.held(digest) {
            return Ok(Box::new(io::Cursor::new(bytes)));
        }
        Ok(Box::new(io::BufReader::with_capacity(
            1 << 20,
            self.open_read(digest)?,
        )))
    }

    fn known_good(&self, digest: &Digest) -> bool {
        if self.held(digest).is_some() {
            return true;
        }
        fs::metadata(self.path(digest)).is_ok_and(|m| self.known_good_stamp(digest, &Stamp::of(&m)))
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
    fn held_blobs_stay_in_memory_within_their_bounds_and_are_read_as_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let read = |c: &Cas, d: &Digest| {
            let mut v = Vec::new();
            c.open_blob(d).unwrap().read_to_end(&mut v).unwrap();
            v
        };
        // Small: in memory only, read back as any blob, known good, kept once.
        let d = cas.hold(b"small nar").unwrap();
        assert_eq!(d, Digest::of(b"small nar"));
        assert!(!cas.path(&d).exists());
        assert_eq!(read(&cas, &d), b"small nar");
        assert!(cas.known_good(&d));
        assert_eq!(cas.hold(b"small nar").unwrap(), d);
        assert_eq!(cas.held.lock().unwrap().bytes, 9);
        // Clones share it (the writer reads through a clone); another process's
        // cache (a new open of the folder) never sees it.
        assert_eq!(read(&cas.clone(), &d), b"small nar");
        let reopened = Cas::open(dir.path()).unwrap();
        assert!(reopened.held(&d).is_none() && !reopened.known_good(&d));
        // Over HOLD_MAX: a file in the cache, as put_bytes makes it.
        let big = vec![7u8; HOLD_MAX + 1];
        let b = cas.hold(&big).unwrap();
        assert!(cas.held(&b).is_none() && cas.contains(&b, Some(big.len() as u64)));
        // The budget: once full, the next small blob goes to a file too.
        let mut n = 0u32;
        while cas.held.lock().unwrap().bytes + HOLD_MAX <= HOLD_BUDGET {
            let mut blob = vec![0u8; HOLD_MAX];
            blob[..4].copy_from_slice(&n.to_le_bytes());
            assert!(cas.held(&cas.hold(&blob).unwrap()).is_some());
            n += 1;
        }
        let last = vec![1u8; HOLD_MAX];
        let l = cas.hold(&last).unwrap();
        assert!(cas.held(&l).is_none() && cas.contains(&l, Some(HOLD_MAX as u64)));
        assert!(cas.held.lock().unwrap().bytes <= HOLD_BUDGET);
        assert_eq!(read(&cas, &l), last);
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
        assert!(cas.known_good(&d));
        // Another process (a later create) has not seen these bytes: nothing
        // recorded them.
        assert!(!Cas::open(dir.path()).unwrap().known_good(&d));
    }

    fn set_mtime(path: &Path, t: std::time::SystemTime) {
        fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .file()
            .set_modified(t)
            .unwrap();
    }

    /// Waits for the file system's clock to move past every stamp so far (the
    /// record leaves out stamps of its own tick).
    fn next_tick() {
        std::thread::sleep(std::time::Duration::from_millis(30));
    }

    #[test]
    fn a_recorded_blob_is_known_good_to_a_later_run_until_its_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let d = cas.put_bytes(b"layer bytes").unwrap();
        next_tick();
        cas.save_record().unwrap();
        let later = Cas::open(dir.path()).unwrap();
        assert!(later.known_good(&d));
        // The same bytes written again (same size), the modification time set
        // back: the change time still moved, so the blob is hashed again.
        let path = cas.path(&d);
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, b"LAYER bytes").unwrap();
        set_mtime(&path, mtime);
        let later = Cas::open(dir.path()).unwrap();
        assert!(!later.known_good(&d));
        // And it stays out of the record that run saves.
        next_tick();
        later.save_record().unwrap();
        assert!(!Cas::open(dir.path()).unwrap().known_good(&d));
        // A blob replaced by a rename (another inode) is not known either.
        let e = cas.put_bytes(b"config").unwrap();
        next_tick();
        cas.save_record().unwrap();
        let copy = dir.path().join("copy");
        fs::copy(cas.path(&e), &copy).unwrap();
        fs::rename(&copy, cas.path(&e)).unwrap();
        assert!(!Cas::open(dir.path()).unwrap().known_good(&e));
    }

    #[test]
    fn a_blob_changed_after_it_was_hashed_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let d = cas.put_bytes(b"hashed").unwrap();
        next_tick();
        fs::write(cas.path(&d), b"Hashed").unwrap();
        // This run no longer trusts it either.
        assert!(!cas.known_good(&d));
        next_tick();
        cas.save_record().unwrap();
        assert!(!Cas::open(dir.path()).unwrap().known_good(&d));
        let record = fs::read_to_string(dir.path().join(RECORD)).unwrap();
        assert!(!record.contains(&d.hex()), "{record}");
    }

    #[test]
    fn a_stamp_of_the_record_s_own_tick_is_left_out() {
        // No one can set a change time, so a modification time in the future
        // stands in for a stamp of the record's own clock tick (both count).
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let d = cas.put_bytes(b"racy").unwrap();
        let path = cas.path(&d);
        let future = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        set_mtime(&path, future);
        cas.mark_verified(d);
        assert!(cas.known_good(&d));
        next_tick();
        cas.save_record().unwrap();
        assert!(!Cas::open(dir.path()).unwrap().known_good(&d));
    }

    #[test]
    fn a_torn_or_foreign_record_costs_only_hashing() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let d = cas.put_bytes(b"x").unwrap();
        next_tick();
        cas.save_record().unwrap();
        let good = fs::read_to_string(dir.path().join(RECORD)).unwrap();
        let torn = &good[..good.len() - 4];
        for bad in [torn, "garbage\n", "", &good.replace(' ', "  ")] {
            fs::write(dir.path().join(RECORD), bad).unwrap();
            assert!(!Cas::open(dir.path()).unwrap().known_good(&d), "{bad:?}");
        }
        fs::write(dir.path().join(RECORD), format!("junk\n{good}")).unwrap();
        assert!(Cas::open(dir.path()).unwrap().known_good(&d));
    }
}
