//! Where a bundle's bytes come from: standard input, a file, or several files read
//! as one (the volumes of a split bundle).
//!
//! Everything that reads a bundle (verify, inspect, import, the Nix server that
//! serves a bundle in place, a fleet push that sends a blob again) takes a
//! [`BundleSource`], so that "is this a pipe?" is decided once, in [`BundleSource::open`],
//! and not by every reader comparing a path with `-`. A source offers what its
//! medium can give:
//!
//! - one pass ([`BundleSource::reader`]) always: a pipe is read exactly once, so a
//!   second call on standard input is an error rather than a silent empty read;
//! - random access ([`BundleSource::random_access`], [`BundleSource::shared`]) when
//!   the bytes are in regular files, so that a verifier can hash blobs in parallel
//!   and a server or a retry can read a blob again at the offset the manifest gives.
//!
//! Volumes are plain byte ranges of one bundle (format.md section 11): their
//! concatenation, in order, is the bundle, so offsets, verification and serving work
//! on it unchanged. A read that crosses from one volume into the next is served from
//! both; a volume that is shorter than it was when it was opened is an error naming
//! that volume, never a silent end of the bundle in its middle. Each file's length
//! is taken once, when it is opened.
//!
//! Paths that are neither `-` nor regular files (a FIFO from `<(…)`, `/dev/stdin`)
//! are read in one pass, like standard input: positional reads do not work on them.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::bundle::reader::{RangeReader, ReadAt};

/// Bytes a one-pass reader asks of the medium at a time.
const READ_BUFFER: usize = 1 << 20;

/// Why a bundle source cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A file could not be opened or its length read.
    #[error("cannot open the bundle {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A folder was given where a bundle file belongs.
    #[error("{} is a folder, not a bundle file", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
    },
    /// A volume set needs at least one volume.
    #[error("no bundle volumes were given")]
    NoVolumes,
    /// A pipe can be read only once.
    #[error("{what} was already read once and cannot be read again: give the bundle file instead")]
    AlreadyRead {
        /// The source ([`BundleSource::describe`]).
        what: String,
    },
}

impl crate::error::Classify for SourceError {
    /// A bundle that cannot be opened is any other error.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        None
    }
}

/// The bytes of one bundle, from wherever they are.
pub struct BundleSource {
    inner: Inner,
}

enum Inner {
    /// Read once: standard input, or a path that is not a regular file.
    Pass {
        what: String,
        reader: Mutex<Option<Box<dyn Read + Send>>>,
    },
    /// Regular files: one, or several volumes read as one.
    Random(Arc<RandomSource>),
}

impl BundleSource {
    /// The bundle at `path`: `-` is standard input, a regular file is read at any
    /// offset, anything else (a FIFO, a character device) is read once.
    pub fn open(path: &Path) -> Result<BundleSource, SourceError> {
        if path.as_os_str() == "-" {
            return Ok(BundleSource::stdin());
        }
        let open_err = |source| SourceError::Open {
            path: path.to_path_buf(),
            source,
        };
        #[allow(
            clippy::disallowed_methods,
            reason = "SourceError::Open names the path"
        )]
        let file = std::fs::File::open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if meta.is_dir() {
            return Err(SourceError::Folder {
                path: path.to_path_buf(),
            });
        }
        if !meta.is_file() {
            return Ok(BundleSource::pass(path.display().to_string(), file));
        }
        Ok(BundleSource::from(RandomSource {
            parts: vec![Part {
                path: path.to_path_buf(),
                file,
                start: 0,
                len: meta.len(),
            }],
            len: meta.len(),
        }))
    }

    /// Standard input, read once.
    pub fn stdin() -> BundleSource {
        BundleSource::pass("standard input".into(), io::stdin())
    }

    /// Several regular files read as one, in the order given (the volumes of a
    /// split bundle, first volume first).
    pub fn volumes(paths: &[PathBuf]) -> Result<BundleSource, SourceError> {
        if paths.is_empty() {
            return Err(SourceError::NoVolumes);
        }
        let mut parts = Vec::with_capacity(paths.len());
        let mut start = 0u64;
        for path in paths {
            let open_err = |source| SourceError::Open {
                path: path.clone(),
                source,
            };
            #[allow(
                clippy::disallowed_methods,
                reason = "SourceError::Open names the path"
            )]
            let file = std::fs::File::open(path).map_err(open_err)?;
            let meta = file.metadata().map_err(open_err)?;
            if !meta.is_file() {
                return Err(SourceError::Open {
                    path: path.clone(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a volume must be a regular file",
                    ),
                });
            }
            parts.push(Part {
                path: path.clone(),
                file,
                start,
                len: meta.len(),
            });
            start += meta.len();
        }
        Ok(BundleSource::from(RandomSource { parts, len: start }))
    }

    fn pass(what: String, r: impl Read + Send + 'static) -> BundleSource {
        BundleSource {
            inner: Inner::Pass {
                what,
                reader: Mutex::new(Some(Box::new(r))),
            },
        }
    }

    /// A reader over the whole bundle from its first byte, buffered. Standard input
    /// (or a pipe) gives one such reader; asking again is
    /// [`SourceError::AlreadyRead`]. Files give a fresh reader each time.
    pub fn reader(&self) -> Result<Box<dyn Read + '_>, SourceError> {
        match &self.inner {
            Inner::Pass { what, reader } => {
                let taken = reader.lock().ok().and_then(|mut r| r.take());
                match taken {
                    Some(r) => Ok(Box::new(BufReader::with_capacity(READ_BUFFER, r))),
                    None => Err(SourceError::AlreadyRead { what: what.clone() }),
                }
            }
            Inner::Random(src) => Ok(Box::new(BufReader::with_capacity(
                READ_BUFFER,
                RangeReader::new(&**src, 0, src.len),
            ))),
        }
    }

    /// Positional reads, when the bundle is in regular files.
    pub fn random_access(&self) -> Option<&dyn ReadAt> {
        match &self.inner {
            Inner::Pass { .. } => None,
            Inner::Random(src) => Some(&**src),
        }
    }

    /// The random-access source itself, for a reader that outlives this borrow (a
    /// server's threads, a task on a runtime).
    pub fn shared(&self) -> Option<Arc<RandomSource>> {
        match &self.inner {
            Inner::Pass { .. } => None,
            Inner::Random(src) => Some(src.clone()),
        }
    }

    /// What it is, for messages: `standard input`, the path, or the volumes.
    pub fn describe(&self) -> String {
        match &self.inner {
            Inner::Pass { what, .. } => what.clone(),
            Inner::Random(src) => src.describe(),
        }
    }

    /// Its length in bytes, when known before reading it (files, not pipes).
    pub fn len(&self) -> Option<u64> {
        match &self.inner {
            Inner::Pass { .. } => None,
            Inner::Random(src) => Some(src.len),
        }
    }

    /// Whether it is known to hold no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }
}

impl From<RandomSource> for BundleSource {
    fn from(src: RandomSource) -> Self {
        BundleSource {
            inner: Inner::Random(Arc::new(src)),
        }
    }
}

/// One or more regular files read as one, at any offset.
pub struct RandomSource {
    /// The files in order; each starts where the one before ends.
    parts: Vec<Part>,
    /// Total length.
    len: u64,
}

struct Part {
    path: PathBuf,
    file: std::fs::File,
    /// Where it starts in the whole.
    start: u64,
    /// Its length when it was opened.
    len: u64,
}

impl RandomSource {
    /// The path, or `FIRST … LAST (N volumes)`.
    pub fn describe(&self) -> String {
        match self.parts.as_slice() {
            [one] => one.path.display().to_string(),
            [first, .., last] => format!(
                "{} … {} ({} volumes)",
                first.path.display(),
                last.path.display(),
                self.parts.len()
            ),
            [] => "no volumes".into(),
        }
    }

    /// The files, in order.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.parts.iter().map(|p| p.path.as_path())
    }

    /// The part holding byte `offset`, with `offset < self.len`.
    fn part_at(&self, offset: u64) -> &Part {
        let i = self
            .parts
            .partition_point(|p| p.start + p.len <= offset)
            .min(self.parts.len() - 1);
        &self.parts[i]
    }
}

impl ReadAt for RandomSource {
    /// Reads from the volume holding `offset`, up to that volume's end (a caller
    /// that wants more reads again and gets the next volume's bytes).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let part = self.part_at(offset);
        let within = offset - part.start;
        let want = buf.len().min((part.len - within) as usize);
        let n = loop {
            match std::os::unix::fs::FileExt::read_at(&part.file, &mut buf[..want], within) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("reading {}: {e}", part.path.display()),
                    ))
                }
                Ok(n) => break n,
            }
        };
        if n == 0 {
            // The file was shorter than when it was opened: the bytes after it would
            // otherwise be taken for its own.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{} ends at byte {within}, it had {} bytes when it was opened",
                    part.path.display(),
                    part.len
                ),
            ));
        }
        Ok(n)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "test fixtures: std::fs and the tools that make them, where a failure is the test's"
)]
mod tests {
    use super::*;
    use std::io::Write;

    /// `data` cut into files of the given lengths, in a temp folder.
    fn volumes(data: &[u8], cuts: &[usize]) -> (tempfile::TempDir, Vec<PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        let mut at = 0;
        for (i, n) in cuts.iter().enumerate() {
            let p = dir.path().join(format!("b.{:03}", i + 1));
            std::fs::write(&p, &data[at..at + n]).unwrap();
            at += n;
            paths.push(p);
        }
        assert_eq!(at, data.len());
        (dir, paths)
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn volumes_read_as_one_across_every_boundary() {
        let d = data(3000);
        // An empty volume in the middle is a range of no bytes, nothing more.
        let (_dir, paths) = volumes(&d, &[1000, 0, 1024, 1, 975]);
        let src = BundleSource::volumes(&paths).unwrap();
        assert_eq!(src.len(), Some(3000));
        let ra = src.random_access().unwrap();
        // Every range that starts before a boundary and ends after it.
        for (start, len) in [
            (990, 20),
            (999, 2),
            (2020, 10),
            (2023, 3),
            (0, 3000),
            (2999, 1),
        ] {
            let mut got = vec![0u8; len];
            RangeReader::new(ra, start, len as u64)
                .read_exact(&mut got)
                .unwrap();
            assert_eq!(
                got,
                &d[start as usize..start as usize + len],
                "{start}+{len}"
            );
        }
        // One read stops at the end of its volume.
        let mut buf = [0u8; 100];
        assert_eq!(ra.read_at(&mut buf, 950).unwrap(), 50);
        assert_eq!(ra.read_at(&mut buf, 3000).unwrap(), 0);
        // The one-pass reader gives the concatenation, and so does a second one.
        for _ in 0..2 {
            let mut all = Vec::new();
            src.reader().unwrap().read_to_end(&mut all).unwrap();
            assert!(all == d);
        }
        assert!(src.describe().contains("b.001") && src.describe().contains("(5 volumes)"));
    }

    #[test]
    fn a_volume_that_shrank_is_named() {
        let d = data(2048);
        let (_dir, paths) = volumes(&d, &[1024, 1024]);
        let src = BundleSource::volumes(&paths).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&paths[0])
            .unwrap()
            .set_len(1000)
            .unwrap();
        let mut buf = vec![0u8; 2048];
        let e = RangeReader::new(src.random_access().unwrap(), 0, 2048)
            .read_exact(&mut buf)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("b.001"), "{e}");
    }

    #[test]
    fn a_file_a_pipe_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("site.gapb");
        std::fs::File::create(&p)
            .unwrap()
            .write_all(b"0123456789")
            .unwrap();
        let src = BundleSource::open(&p).unwrap();
        assert_eq!(src.len(), Some(10));
        assert_eq!(src.describe(), p.display().to_string());
        let mut buf = [0u8; 4];
        src.random_access().unwrap().read_at(&mut buf, 6).unwrap();
        assert_eq!(&buf, b"6789");
        assert!(src.shared().is_some());

        // A FIFO is read once, like standard input.
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::write(fifo, b"abc").unwrap())
        };
        let src = BundleSource::open(&fifo).unwrap();
        assert!(src.random_access().is_none() && src.len().is_none());
        let mut all = Vec::new();
        src.reader().unwrap().read_to_end(&mut all).unwrap();
        writer.join().unwrap();
        assert_eq!(all, b"abc");
        let again = src.reader().err().unwrap();
        assert!(matches!(again, SourceError::AlreadyRead { .. }), "{again}");

        let missing = dir.path().join("missing.gapb");
        let e = BundleSource::open(&missing).err().unwrap();
        assert!(e.to_string().contains("missing.gapb"), "{e}");
        let e = BundleSource::open(dir.path()).err().unwrap();
        assert!(matches!(e, SourceError::Folder { .. }), "{e}");
        assert!(matches!(
            BundleSource::volumes(&[]).err().unwrap(),
            SourceError::NoVolumes
        ));
        let e = BundleSource::volumes(&[p.clone(), missing]).err().unwrap();
        assert!(e.to_string().contains("missing.gapb"), "{e}");
    }
}
