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
//!
//! A path that ends in `.001` is the first volume of a set: [`BundleSource::open`]
//! finds the other volumes beside it (and parity volumes `.p01`…), so every command
//! that takes a bundle takes a first volume too. A volume that is missing or has the
//! wrong length is named before anything is read; with parity, its bytes are
//! rebuilt as they are read instead (see [`crate::io::volumes`]), and what the set
//! had to say about that reaches the user through [`BundleSource::report_to`].

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::bundle::reader::{RangeReader, ReadAt, ReadError, Reread};
use crate::io::volumes::{self, Repair, VolumeSetError};
use crate::progress::Progress;

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
    /// The volumes of a split bundle do not make a whole bundle.
    #[error(transparent)]
    Volumes(#[from] VolumeSetError),
    /// A pipe can be read only once.
    #[error("{what} was already read once and cannot be read again: give the bundle file instead")]
    AlreadyRead {
        /// The source ([`BundleSource::describe`]).
        what: String,
    },
}

impl crate::error::Classify for SourceError {
    /// A bundle that cannot be opened is any other error; volumes that do not make
    /// a whole bundle decide by their own class (the variant is transparent, so the
    /// volume error is not in the chain on its own).
    fn class(&self) -> Option<crate::error::ErrorClass> {
        match self {
            SourceError::Volumes(e) => e.class(),
            _ => None,
        }
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
        if let Some(found) = volumes::find(path) {
            let notes = Notes::default();
            let (parts, repair) = volumes::open_set(&found, &notes)?;
            let len = parts.iter().map(|p| p.len).sum();
            return Ok(BundleSource::from(RandomSource {
                parts,
                len,
                repair,
                notes,
            }));
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
                file: Some(file),
                start: 0,
                len: meta.len(),
            }],
            len: meta.len(),
            repair: None,
            notes: Notes::default(),
        }))
    }

    /// The bundle at `path` for a reader of its head alone (inspect): for the first
    /// volume of a set, that volume only, so that the head can be shown even when
    /// other volumes are missing; otherwise as [`BundleSource::open`].
    pub fn open_head(path: &Path) -> Result<BundleSource, SourceError> {
        match volumes::find(path) {
            Some(found) if found.data.contains_key(&1) => {
                BundleSource::volumes(&[path.to_path_buf()])
            }
            _ => BundleSource::open(path),
        }
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
                file: Some(file),
                start,
                len: meta.len(),
            });
            start += meta.len();
        }
        Ok(BundleSource::from(RandomSource {
            parts,
            len: start,
            repair: None,
            notes: Notes::default(),
        }))
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
            Inner::Random(src) if src.repair.is_some() => Ok(Box::new(BufReader::with_capacity(
                READ_BUFFER,
                CheckingReader { src, pos: 0 },
            ))),
            Inner::Random(src) => Ok(Box::new(BufReader::with_capacity(
                READ_BUFFER,
                RangeReader::new(&**src, 0, src.len),
            ))),
        }
    }

    /// Sends what the source has to say (volumes rebuilt from parity, parity volumes
    /// not used) to `progress` as warnings: what was said already, and from now on
    /// as it happens.
    pub fn report_to(&self, progress: &Progress) {
        if let Inner::Random(src) = &self.inner {
            src.notes.report_to(progress);
        }
    }

    /// Everything the source has said so far (see [`BundleSource::report_to`]).
    pub fn said(&self) -> Vec<String> {
        match &self.inner {
            Inner::Random(src) => src.notes.said(),
            Inner::Pass { .. } => Vec::new(),
        }
    }

    /// The data volumes whose bytes are rebuilt from parity (missing, cut short, or
    /// found damaged so far).
    pub fn rebuilt_volumes(&self) -> Vec<PathBuf> {
        match &self.inner {
            Inner::Random(src) => match &src.repair {
                Some(r) => src
                    .parts
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| r.is_erased(*i))
                    .map(|(_, p)| p.path.clone())
                    .collect(),
                None => Vec::new(),
            },
            Inner::Pass { .. } => Vec::new(),
        }
    }

    /// Names the volume(s) holding the bytes of a damaged entry, when the bundle is
    /// in several files and the error does not say yet (a one-pass read).
    pub fn place_damage(&self, e: ReadError) -> ReadError {
        match (e, &self.inner) {
            (ReadError::Damaged(mut d), Inner::Random(src)) if d.place.is_none() => {
                d.place = src.place(d.position, d.expected_size);
                ReadError::Damaged(d)
            }
            (e, _) => e,
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
    /// For volumes with parity: how to rebuild the erased ones.
    repair: Option<Repair>,
    /// What the volumes had to say.
    notes: Notes,
}

/// One file of a [`RandomSource`].
pub(crate) struct Part {
    pub(crate) path: PathBuf,
    /// `None` for a volume that is missing (its bytes come from parity).
    pub(crate) file: Option<std::fs::File>,
    /// Where it starts in the whole.
    pub(crate) start: u64,
    /// Its length when it was opened (or, missing, the length it must have).
    pub(crate) len: u64,
}

/// Messages a source has for the user, kept until someone listens.
#[derive(Default)]
pub(crate) struct Notes {
    inner: Mutex<NotesInner>,
}

#[derive(Default)]
struct NotesInner {
    said: Vec<String>,
    to: Option<Progress>,
}

impl Notes {
    /// Says `msg` now if someone listens, later otherwise.
    pub(crate) fn say(&self, msg: String) {
        let mut n = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = &n.to {
            p.warn(&msg);
        }
        n.said.push(msg);
    }

    fn report_to(&self, progress: &Progress) {
        let mut n = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for msg in &n.said {
            progress.warn(msg);
        }
        n.to = Some(progress.clone());
    }

    fn said(&self) -> Vec<String> {
        self.inner
            .lock()
            .map(|n| n.said.clone())
            .unwrap_or_default()
    }
}

/// A one-pass reader over volumes with parity: a data volume is checked against
/// its digest before its first byte is handed out, and every volume before the
/// first rebuilt byte, since a target that received a damaged byte cannot give it
/// back (see [`crate::io::volumes`]).
struct CheckingReader<'a> {
    src: &'a RandomSource,
    pos: u64,
}

impl Read for CheckingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.src.len || buf.is_empty() {
            return Ok(0);
        }
        if let Some(repair) = &self.src.repair {
            let i = self.src.part_at(self.pos);
            if repair.is_erased(i) {
                // Rebuilt bytes are only as good as every volume they come from.
                repair.check_everything(&self.src.parts, &self.src.notes)?;
            } else if !repair.checked(i) {
                repair.check_before_use(&self.src.parts, &self.src.notes, i)?;
            }
        }
        let n = self.src.read_at(buf, self.pos)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
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

    /// The index of the part holding byte `offset`, with `offset < self.len`.
    fn part_at(&self, offset: u64) -> usize {
        self.parts
            .partition_point(|p| p.start + p.len <= offset)
            .min(self.parts.len() - 1)
    }

    /// The volume(s) holding `len` bytes at `offset`, when there are several files.
    fn place(&self, offset: u64, len: u64) -> Option<String> {
        if self.parts.len() < 2 {
            return None;
        }
        let end = offset + len.max(1);
        let names: Vec<String> = self
            .parts
            .iter()
            .filter(|p| p.start < end && offset < p.start + p.len)
            .map(|p| p.path.display().to_string())
            .collect();
        match names.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            few if few.len() <= 5 => Some(format!(
                "{} and {}",
                few[..few.len() - 1].join(", "),
                few[few.len() - 1]
            )),
            [first, .., last] => Some(format!("{first} … {last} ({} volumes)", names.len())),
        }
    }
}

impl ReadAt for RandomSource {
    /// Reads from the volume holding `offset`, up to that volume's end (a caller
    /// that wants more reads again and gets the next volume's bytes).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let i = self.part_at(offset);
        let part = &self.parts[i];
        let within = offset - part.start;
        let file = match (&self.repair, &part.file) {
            (Some(r), _) if r.is_erased(i) => return r.rebuild(&self.parts, i, within, buf),
            (_, Some(file)) => file,
            (_, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} is missing", part.path.display()),
                ))
            }
        };
        let want = buf.len().min((part.len - within) as usize);
        let n = loop {
            match std::os::unix::fs::FileExt::read_at(file, &mut buf[..want], within) {
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

    fn damaged(&self, offset: u64, len: u64, what: &str) -> io::Result<Reread> {
        if let Some(r) = &self.repair {
            if r.damaged(&self.parts, &self.notes, offset, offset + len, what)? {
                return Ok(Reread::Again);
            }
        }
        Ok(Reread::No(self.place(offset, len)))
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

    /// Threads verify blobs of the same volume, which is damaged: one finds its blob
    /// wrong and the volume is erased (rebuilt from parity from then on), and every
    /// volume is checked once for the next; the last had read its blob from the
    /// volume itself before the erasure, and finds it wrong too, but the volume is
    /// erased and everything checked when it asks. It must read again (now
    /// rebuilt), not be told that the rebuilt bytes are wrong: the full suite once
    /// failed so, under load (`volumes::with_two_parity_volumes_…`). Asked again
    /// for the same range with nothing changed, the answer is no, with the volume
    /// that holds it.
    #[test]
    fn a_range_read_before_its_volume_was_erased_is_read_again() {
        use crate::bundle::reader::{read_head, ReadAt, Reread};
        use crate::bundle::volumes::Layout;
        use crate::io::volumes::VolumeOutput;
        let tiny = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-spec/vectors/tiny/tiny.gapb"),
        )
        .unwrap();
        let head = read_head(&mut tiny.as_slice()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("tiny.gapb");
        let layout = Layout::new(head.file_len(), 5000, head.data_start).unwrap();
        let out = VolumeOutput::create(&prefix, layout, 2).unwrap();
        {
            let mut w = out.writer();
            w.write_all(&tiny).unwrap();
            w.finish().unwrap();
        }
        out.commit(head.digest, &|_| {}).unwrap();
        // Volume 2 holds bytes 5000 to 9999: one of them flipped.
        let v2 = dir.path().join("tiny.gapb.002");
        let mut bytes = std::fs::read(&v2).unwrap();
        bytes[100] ^= 0xff;
        std::fs::write(&v2, &bytes).unwrap();
        let src = BundleSource::open(&dir.path().join("tiny.gapb.001"))
            .unwrap()
            .shared()
            .unwrap();
        // The first thread's range: its volume is found damaged and erased.
        assert!(matches!(
            src.damaged(5050, 100, "one").unwrap(),
            Reread::Again
        ));
        // Another thread's, read meanwhile: every volume is checked for it.
        assert!(matches!(
            src.damaged(7000, 100, "three").unwrap(),
            Reread::Again
        ));
        // The second thread's range, read before the erasure too.
        assert!(matches!(
            src.damaged(6000, 100, "two").unwrap(),
            Reread::Again
        ));
        let mut again = vec![0u8; 100];
        src.read_at(&mut again, 6000).unwrap();
        assert_eq!(again, tiny[6000..6100]);
        // Nothing new to try: where the bytes are.
        match src.damaged(6000, 100, "two").unwrap() {
            Reread::No(Some(place)) => assert!(place.contains("tiny.gapb.002"), "{place}"),
            other => panic!("{other:?}"),
        }
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
