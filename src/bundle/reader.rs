//! Reading and verifying a bundle.
//!
//! Trust is decided from the head alone (manifest + signatures, the first two tar
//! entries), so nothing behind it is looked at by an importer until the signature
//! has been checked. Everything after the head is then checked against the manifest
//! while it streams: every entry must be the one the manifest puts at that position,
//! with the digest and size it promises, and nothing else may be in the file. Two ways
//! to do that: [`verify_stream`] for a single pass over any reader (a pipe, or an
//! import that writes as it reads), and [`verify_parallel`] for random-access input
//! (a file on disk, later a set of volumes), which hashes several blobs at once.

use std::io::{self, Read};

use super::canonical::{self, CanonicalError};
use super::digest::{Digest, Hasher, HashingReader};
use super::layout::{
    self, entry_len, parse_header, Block, HeaderError, END_LEN, HEADER_LEN, MAX_TRAILING_ZEROS,
};
use super::manifest::{
    BlobEntry, FileEntry, Manifest, ManifestError, MANIFEST_PATH, MAX_HEAD_ENTRY, SIGNATURES_PATH,
};
use super::oci;
use super::signature::{Envelope, TrustError};

/// The head of a bundle: what is needed to decide trust and to find any blob.
#[derive(Debug, Clone)]
pub struct Head {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Its bytes as stored.
    pub manifest_bytes: Vec<u8>,
    /// The bundle's identity.
    pub digest: Digest,
    /// The signatures.
    pub envelope: Envelope,
    /// Absolute position where the data section begins.
    pub data_start: u64,
}

impl Head {
    /// Absolute position of a stored blob's data.
    pub fn blob_position(&self, blob: &BlobEntry) -> Option<u64> {
        blob.offset.map(|o| self.data_start + o)
    }

    /// Total length the file must have.
    pub fn file_len(&self) -> u64 {
        self.data_start + self.manifest.data_len() + END_LEN
    }

    /// Every stored entry of the data section, in file order.
    pub fn entries(&self) -> Vec<Entry<'_>> {
        let files = self.manifest.files.iter().map(Entry::File);
        let blobs = self
            .manifest
            .blobs
            .iter()
            .filter(|b| b.offset.is_some())
            .map(Entry::Blob);
        files.chain(blobs).collect()
    }
}

/// One entry of the data section.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    /// `oci-layout` or `index.json`.
    File(&'a FileEntry),
    /// A blob.
    Blob(&'a BlobEntry),
}

impl Entry<'_> {
    /// Tar path.
    pub fn path(&self) -> String {
        match self {
            Entry::File(f) => f.path.clone(),
            Entry::Blob(b) => b.path(),
        }
    }
    /// Expected digest.
    pub fn digest(&self) -> Digest {
        match self {
            Entry::File(f) => f.digest,
            Entry::Blob(b) => b.digest,
        }
    }
    /// Expected size.
    pub fn size(&self) -> u64 {
        match self {
            Entry::File(f) => f.size,
            Entry::Blob(b) => b.size,
        }
    }
    /// Offset in the data section.
    pub fn offset(&self) -> u64 {
        match self {
            Entry::File(f) => f.offset,
            Entry::Blob(b) => b.offset.unwrap_or(0),
        }
    }
}

/// A damaged entry, described so that a person knows what is affected.
#[derive(Debug)]
pub struct Damage {
    /// Tar path of the entry.
    pub path: String,
    /// Digest the manifest promises.
    pub expected: Digest,
    /// Size the manifest promises.
    pub expected_size: u64,
    /// Digest found, when the bytes could be read in full.
    pub found: Option<Digest>,
    /// Bytes found.
    pub found_size: u64,
    /// `kind name` of each object that uses it.
    pub users: Vec<String>,
    /// Absolute position of the entry's data in the bundle.
    pub position: u64,
    /// Where those bytes are, when the bundle is in several files: the volume(s).
    pub place: Option<String>,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = if self.users.is_empty() {
            format!("`{}`", self.path)
        } else {
            self.users.join(", ")
        };
        write!(f, "{who}: {} ", self.expected)?;
        match self.found {
            Some(found) if self.found_size == self.expected_size => {
                write!(f, "has digest {found} instead")?
            }
            _ => write!(
                f,
                "has {} bytes instead of {}",
                self.found_size, self.expected_size
            )?,
        }
        match &self.place {
            Some(place) => write!(f, " (its bytes are in {place})"),
            None => Ok(()),
        }
    }
}

/// Why reading or verifying a bundle failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file is not a bundle at all.
    #[error("not a gapbundle file: {0}")]
    NotABundle(String),
    /// The file ends early.
    #[error(
        "the bundle is truncated: it ends inside {0} (was the copy interrupted? copy it again)"
    )]
    Truncated(String),
    /// A tar header is damaged or of a forbidden kind.
    #[error("at byte {position}: {problem}; the bundle is corrupt, get a fresh copy")]
    Header {
        /// Absolute position of the header.
        position: u64,
        /// What is wrong (not a `source`: the message already says it).
        problem: HeaderError,
    },
    /// An entry sits where the manifest puts something else.
    #[error("at byte {position}: found `{found}` ({found_size} bytes) where the manifest puts `{expected}` ({expected_size} bytes): the file was altered")]
    Unexpected {
        /// Absolute position of the header.
        position: u64,
        /// Path found.
        found: String,
        /// Its size.
        found_size: u64,
        /// Path expected.
        expected: String,
        /// Its size.
        expected_size: u64,
    },
    /// The end-of-archive marker is not zeros.
    #[error("at byte {position}: the end-of-archive marker (1024 zero bytes) holds data: the file was altered")]
    EndMarker {
        /// Absolute position of the first non-zero byte.
        position: u64,
    },
    /// Data follows the end of the bundle.
    #[error("at byte {position}: data follows the end of the bundle (only zero bytes may): the file was altered")]
    Trailing {
        /// Absolute position of the first non-zero byte after the marker.
        position: u64,
    },
    /// More zero bytes follow the end than any tool appends.
    #[error("more than {MAX_TRAILING_ZEROS} zero bytes follow the end of the bundle (at byte {position}); a bundle copied from a disk device carries the rest of the device: copy the file itself")]
    TooManyZeros {
        /// Absolute position where the zeros start.
        position: u64,
    },
    /// A head entry is not in canonical JSON (section 9).
    #[error("`{path}` is not in canonical JSON ({source}): the head of the file was altered or written by a faulty tool")]
    NotCanonical {
        /// The entry's path.
        path: &'static str,
        /// Where it differs.
        source: CanonicalError,
    },
    /// Content does not match the manifest.
    #[error("damaged object: {0}; the bundle is corrupt, get a fresh copy")]
    Damaged(Box<Damage>),
    /// The manifest itself is bad.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The envelope is bad.
    #[error(transparent)]
    Envelope(#[from] TrustError),
    /// A consumer of the entry failed.
    #[error("{path}: {source}")]
    Consumer {
        /// Tar path.
        path: String,
        /// What failed.
        source: io::Error,
    },
    /// Any other I/O error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl crate::error::Classify for ReadError {
    /// The bundle failed verification, except when a target that consumed an entry
    /// failed: then what it carries decides (a registry that refused, a full disk),
    /// and only a target that found the entry's content wrong (`InvalidData`) makes
    /// it a verification failure.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        match self {
            ReadError::Consumer { source, .. } => (source.kind() == io::ErrorKind::InvalidData)
                .then_some(crate::error::ErrorClass::Verify),
            _ => Some(crate::error::ErrorClass::Verify),
        }
    }
}

fn eof_to_truncated(e: io::Error, what: &str) -> ReadError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        ReadError::Truncated(what.to_string())
    } else {
        ReadError::Io(e)
    }
}

/// Reads one head entry; returns its header block (checked once the manifest, and so
/// the mtime, is known) and its data.
fn read_head_entry<R: Read>(
    r: &mut R,
    want: &str,
    pos: u64,
) -> Result<([u8; 512], Vec<u8>), ReadError> {
    let block = layout::read_block(r).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof if pos == 0 => {
            ReadError::NotABundle("the file is shorter than one tar header".into())
        }
        _ => eof_to_truncated(e, want),
    })?;
    let (path, size) = match parse_header(&block) {
        Ok(Block::File { path, size }) => (path, size),
        Ok(Block::End) => {
            return Err(ReadError::NotABundle(format!(
                "the tar archive ends before `{want}`"
            )))
        }
        Err(e) if pos == 0 => {
            return Err(ReadError::NotABundle(format!(
                "it does not start with a tar header ({e})"
            )))
        }
        Err(e) => {
            return Err(ReadError::Header {
                position: pos,
                problem: e,
            })
        }
    };
    if path != want {
        return Err(ReadError::NotABundle(format!(
            "the tar entry at byte {pos} is `{path}`, a bundle has `{want}` there"
        )));
    }
    if size > MAX_HEAD_ENTRY {
        return Err(ReadError::NotABundle(format!(
            "`{want}` is {size} bytes, more than the {MAX_HEAD_ENTRY} a reader accepts"
        )));
    }
    // Room for the size the header claims, at most the bound above: the pages of an
    // allocation this large are mapped lazily, so a header that claims 256 MiB in a
    // short file costs address space, not memory. Growing as bytes arrived instead
    // doubled the buffer, copying as it went: a 9 MiB manifest (20,000 objects) took
    // 16 MiB, and 24 MiB for a moment. Where the room cannot be had (a limit on
    // address space), it grows as the bytes arrive.
    let mut data = Vec::new();
    let _ = data.try_reserve_exact(size as usize);
    r.take(size)
        .read_to_end(&mut data)
        .map_err(|e| eof_to_truncated(e, want))?;
    if data.len() as u64 != size {
        return Err(ReadError::Truncated(want.to_string()));
    }
    read_padding(r, want, size, pos + HEADER_LEN + size)?;
    Ok((block, data))
}

/// Reads the padding after an entry of `size` bytes; it must be zeros, so that
/// nothing can hide between entries (the parallel verifier checks the same).
fn read_padding<R: Read>(r: &mut R, path: &str, size: u64, position: u64) -> Result<(), ReadError> {
    let pad = (layout::padded(size) - size) as usize;
    let mut zeros = [0u8; 512];
    r.read_exact(&mut zeros[..pad])
        .map_err(|e| eof_to_truncated(e, path))?;
    if zeros[..pad].iter().any(|&b| b != 0) {
        return Err(ReadError::Unexpected {
            position,
            found: "non-zero padding".into(),
            found_size: pad as u64,
            expected: format!("zero padding after `{path}`"),
            expected_size: pad as u64,
        });
    }
    Ok(())
}

/// Reads the head (manifest and signatures) and leaves `r` at the data section.
/// The manifest is parsed and validated; trust is not decided here.
pub fn read_head<R: Read>(r: &mut R) -> Result<Head, ReadError> {
    read_head_with(r, |_| ())
}

/// [`read_head`], calling `unparsed` with the manifest's bytes as soon as they are
/// read, before they are parsed or checked: for work that may start early on a hint
/// of what the bundle holds and loses nothing when the hint is wrong (the import
/// starts Nix there: see `crate::import::nix::start_early`). The bytes are not
/// trusted yet, so nothing may be decided on them.
pub fn read_head_with<R: Read>(r: &mut R, unparsed: impl FnOnce(&[u8])) -> Result<Head, ReadError> {
    let (m_block, manifest_bytes) = read_head_entry(r, MANIFEST_PATH, 0)?;
    unparsed(&manifest_bytes);
    let m_len = entry_len(manifest_bytes.len() as u64);
    let (s_block, envelope_bytes) = read_head_entry(r, SIGNATURES_PATH, m_len)?;
    // The canonical-form check and the digest read the bytes apart from the parse:
    // on a second core, they cost a large manifest's head nothing (a third of
    // reading a 2,101-path head was the check). Its error still comes first.
    let (canonical, digest, manifest) = std::thread::scope(|s| {
        let apart = s.spawn(|| {
            (
                canonical::check(&manifest_bytes),
                Digest::of(&manifest_bytes),
            )
        });
        let manifest = Manifest::parse(&manifest_bytes);
        // A panic there is a bug and is passed on as one.
        let (canonical, digest) = apart
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (canonical, digest, manifest)
    });
    canonical.map_err(|source| ReadError::NotCanonical {
        path: MANIFEST_PATH,
        source,
    })?;
    let manifest = manifest?;
    check_layout_files(&manifest)?;
    let envelope = Envelope::parse(&envelope_bytes)?;
    let mtime = manifest.created;
    for (block, path, size, position) in [
        (&m_block, MANIFEST_PATH, manifest_bytes.len(), 0),
        (&s_block, SIGNATURES_PATH, envelope_bytes.len(), m_len),
    ] {
        layout::check_exact(block, path, size as u64, mtime)
            .map_err(|problem| ReadError::Header { position, problem })?;
    }
    Ok(Head {
        manifest,
        manifest_bytes,
        digest,
        envelope,
        data_start: m_len + entry_len(envelope_bytes.len() as u64),
    })
}

/// `oci-layout` and `index.json` are derived from the manifest (format.md section 8),
/// so their digests and sizes must be those of the bytes a writer derives: then the
/// OCI view a tool reads after `tar x` names exactly the images the signed objects
/// name, and no `index.json` can point a tool at a blob no object owns.
fn check_layout_files(m: &Manifest) -> Result<(), ReadError> {
    let sizes: std::collections::HashMap<&Digest, u64> =
        m.blobs.iter().map(|b| (&b.digest, b.size)).collect();
    let index = oci::index_bytes(&m.objects, |o| sizes.get(&o.digest).copied().unwrap_or(0));
    let layout_bytes = oci::oci_layout_bytes();
    for (file, bytes) in m.files.iter().zip([&layout_bytes, &index]) {
        if file.digest != Digest::of(bytes) || file.size != bytes.len() as u64 {
            return Err(ManifestError::Inconsistent(format!(
                "`{}` is {} ({} bytes), but the file derived from the manifest's objects is {} ({} bytes)",
                file.path,
                file.digest,
                file.size,
                Digest::of(bytes),
                bytes.len()
            ))
            .into());
        }
    }
    Ok(())
}

/// The error for an entry whose bytes are not what the manifest says (`found` is
/// their digest when they could be read in full), naming the objects that use it.
pub fn damage(head: &Head, entry: &Entry, found: Option<Digest>, found_size: u64) -> ReadError {
    ReadError::Damaged(Box::new(damage_of(head, entry, found, found_size)))
}

fn damage_of(head: &Head, entry: &Entry, found: Option<Digest>, found_size: u64) -> Damage {
    let users = match entry {
        Entry::Blob(b) => head
            .manifest
            .users_of(&b.digest)
            .iter()
            .map(|o| format!("{} `{}`", o.kind, crate::text::escaped(&o.name)))
            .collect(),
        Entry::File(_) => Vec::new(),
    };
    Damage {
        path: entry.path(),
        expected: entry.digest(),
        expected_size: entry.size(),
        found,
        found_size,
        users,
        position: head.data_start + entry.offset(),
        place: None,
    }
}

/// Receives each entry's bytes during a one-pass read.
pub trait EntrySink {
    /// Reads (some or all of) the entry's bytes. Whatever it leaves unread is still
    /// hashed. Nothing it writes may be made visible until [`EntrySink::verified`].
    fn consume(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()>;
    /// The entry's digest and size matched: what `consume` staged may be committed.
    fn verified(&mut self, entry: &Entry) -> io::Result<()>;
}

/// A sink that only verifies.
pub struct NoSink;

impl EntrySink for NoSink {
    fn consume(&mut self, _: &Entry, _: &mut dyn Read) -> io::Result<()> {
        Ok(())
    }
    fn verified(&mut self, _: &Entry) -> io::Result<()> {
        Ok(())
    }
}

/// Reports every byte of entry data as it is read, not each entry once it ended:
/// a 300 MiB layer is one entry, and a bar that moves only between entries stands
/// still for the whole layer (and its rate and ETA say days) while the target
/// writes it.
struct Counted<'a, R> {
    inner: R,
    progress: &'a mut dyn FnMut(u64),
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            (self.progress)(n as u64);
        }
        Ok(n)
    }
}

/// Checks the data section in one pass from `r` (positioned right after the head),
/// handing every entry to `sink`. Stops at the first damaged entry. `progress` gets
/// the bytes of the data section as they are read (headers, each chunk of data,
/// padding): they add up to [`crate::bundle::manifest::Manifest::data_len`].
pub fn verify_stream<R: Read>(
    r: &mut R,
    head: &Head,
    sink: &mut dyn EntrySink,
    mut progress: impl FnMut(u64),
) -> Result<(), ReadError> {
    let mut r = io::BufReader::with_capacity(1 << 20, r);
    let mut pos = head.data_start;
    for entry in head.entries() {
        let path = entry.path();
        let block = layout::read_block(&mut r).map_err(|e| eof_to_truncated(e, &path))?;
        check_header(&block, &entry, pos, head.manifest.created)?;
        progress(HEADER_LEN);
        let mut hashing = HashingReader::new(Counted {
            inner: (&mut r).take(entry.size()),
            progress: &mut progress,
        });
        sink.consume(&entry, &mut hashing)
            .map_err(|source| consumer_error(&path, source))?;
        io::copy(&mut hashing, &mut io::sink()).map_err(|e| eof_to_truncated(e, &path))?;
        let (found, found_size) = hashing.finish();
        if found_size != entry.size() {
            return Err(ReadError::Truncated(path));
        }
        if found != entry.digest() {
            return Err(damage(head, &entry, Some(found), found_size));
        }
        read_padding(&mut r, &path, entry.size(), pos + HEADER_LEN + entry.size())?;
        sink.verified(&entry)
            .map_err(|source| consumer_error(&path, source))?;
        pos += entry_len(entry.size());
        progress(layout::padded(entry.size()) - entry.size());
    }
    let mut end = [0u8; END_LEN as usize];
    r.read_exact(&mut end)
        .map_err(|e| eof_to_truncated(e, "the end-of-archive marker"))?;
    if let Some(i) = end.iter().position(|&b| b != 0) {
        return Err(ReadError::EndMarker {
            position: pos + i as u64,
        });
    }
    // Tools that re-block tar files append zeros, up to a bound (format.md section
    // 3); anything else is smuggled data. Never more than the bound is read, so a
    // pipe that keeps giving zeros is refused rather than read forever.
    let start = pos + END_LEN;
    let mut rest = 0u64;
    let mut buf = [0u8; 8192];
    loop {
        let n = match r.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        trailing_zeros(&buf[..n], start, &mut rest)?;
    }
    Ok(())
}

/// Checks `chunk`, the bytes after `seen` zeros after the end marker (which ends at
/// `start`), against the rule for trailing bytes; counts them into `seen`.
fn trailing_zeros(chunk: &[u8], start: u64, seen: &mut u64) -> Result<(), ReadError> {
    if let Some(i) = chunk.iter().position(|&b| b != 0) {
        return Err(ReadError::Trailing {
            position: start + *seen + i as u64,
        });
    }
    *seen += chunk.len() as u64;
    if *seen > MAX_TRAILING_ZEROS {
        return Err(ReadError::TooManyZeros { position: start });
    }
    Ok(())
}

/// The header at `position` must be exactly the one the manifest puts there: its
/// path and size, and every other byte as the writer makes it (section 3).
fn check_header(
    block: &[u8; 512],
    entry: &Entry,
    position: u64,
    mtime: u64,
) -> Result<(), ReadError> {
    match parse_header(block) {
        Ok(Block::File { path, size }) if path == entry.path() && size == entry.size() => {
            layout::check_exact(block, &path, size, mtime)
                .map_err(|problem| ReadError::Header { position, problem })
        }
        Ok(Block::File { path, size }) => Err(ReadError::Unexpected {
            position,
            found: path,
            found_size: size,
            expected: entry.path(),
            expected_size: entry.size(),
        }),
        Ok(Block::End) => Err(ReadError::Truncated(entry.path())),
        Err(problem) => Err(ReadError::Header { position, problem }),
    }
}

fn consumer_error(path: &str, source: io::Error) -> ReadError {
    ReadError::Consumer {
        path: path.to_string(),
        source,
    }
}

/// Positional reads, implemented by a file and by a set of volumes.
pub trait ReadAt: Sync {
    /// Reads at `offset`; returns bytes read, 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Total length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the source is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// The `len` bytes at `offset` (`what`: the objects that use them) did not hash
    /// to what the manifest says. A source that can get them another way (volumes
    /// with parity, format.md section 11) switches to it and says
    /// [`Reread::Again`]; otherwise it may say where the bytes are.
    fn damaged(&self, offset: u64, len: u64, what: &str) -> io::Result<Reread> {
        let _ = (offset, len, what);
        Ok(Reread::No(None))
    }
}

/// What a source did about damaged bytes ([`ReadAt::damaged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reread {
    /// Read the range again: it now comes from elsewhere (rebuilt from parity).
    Again,
    /// Nothing else to read; where the bytes are (`site.gapb.002`), if it knows.
    No(Option<String>),
}

impl ReadAt for std::fs::File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// A reader over a range of a [`ReadAt`] source.
pub struct RangeReader<'a, S: ReadAt + ?Sized> {
    src: &'a S,
    pos: u64,
    end: u64,
}

impl<'a, S: ReadAt + ?Sized> RangeReader<'a, S> {
    /// Reads `len` bytes starting at `start`.
    pub fn new(src: &'a S, start: u64, len: u64) -> Self {
        Self {
            src,
            pos: start,
            end: start + len,
        }
    }
}

impl<S: ReadAt + ?Sized> Read for RangeReader<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.src.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Checks the data section of a random-access source with up to `jobs` threads.
/// Reports the damaged entry nearest the start of the file, like a one-pass read
/// would, and stops early once one is found.
pub fn verify_parallel<S: ReadAt + ?Sized>(
    src: &S,
    head: &Head,
    jobs: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), ReadError> {
    let len = src.len()?;
    let expected_len = head.file_len();
    let entries = head.entries();
    if len < expected_len {
        let cut = entries
            .iter()
            .find(|e| head.data_start + e.offset() + e.size() > len)
            .map(|e| e.path())
            .unwrap_or_else(|| "the end-of-archive marker".into());
        return Err(ReadError::Truncated(cut));
    }
    // Largest first keeps the threads busy until the end; entries are in file
    // order, so of the damaged ones the pool reports the one nearest the start.
    let mut largest_first: Vec<usize> = (0..entries.len()).collect();
    largest_first.sort_by_key(|&i| std::cmp::Reverse(entries[i].size()));
    crate::pool::map_scheduled(
        jobs,
        &entries,
        &largest_first,
        || Ok(vec![0u8; 1 << 20]),
        |buf, entry| check_entry(src, head, entry, buf, progress),
    )?;
    // The same rule as the one-pass reader: a zero marker, then at most
    // MAX_TRAILING_ZEROS zero bytes.
    let end_pos = expected_len - END_LEN;
    let end = || -> Result<(), ReadError> {
        let mut end = [0u8; END_LEN as usize];
        RangeReader::new(src, end_pos, END_LEN)
            .read_exact(&mut end)
            .map_err(|e| eof_to_truncated(e, "the end-of-archive marker"))?;
        if let Some(i) = end.iter().position(|&b| b != 0) {
            return Err(ReadError::EndMarker {
                position: end_pos + i as u64,
            });
        }
        Ok(())
    };
    // A damaged marker in a volume with parity is read again, rebuilt.
    match end() {
        Err(e @ ReadError::EndMarker { .. }) => {
            match src.damaged(end_pos, END_LEN, "the end-of-archive marker")? {
                Reread::Again => end()?,
                Reread::No(_) => return Err(e),
            }
        }
        other => other?,
    }
    if len - expected_len > MAX_TRAILING_ZEROS {
        return Err(ReadError::TooManyZeros {
            position: expected_len,
        });
    }
    let mut rest = 0u64;
    let mut r = RangeReader::new(src, expected_len, len - expected_len);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| eof_to_truncated(e, "the end"))?;
        if n == 0 {
            break;
        }
        trailing_zeros(&buf[..n], expected_len, &mut rest)?;
    }
    Ok(())
}

fn check_entry<S: ReadAt + ?Sized>(
    src: &S,
    head: &Head,
    entry: &Entry,
    buf: &mut [u8],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), ReadError> {
    let path = entry.path();
    let data_pos = head.data_start + entry.offset();
    let header_pos = data_pos - HEADER_LEN;
    let header = || -> Result<(), ReadError> {
        let mut block = [0u8; 512];
        RangeReader::new(src, header_pos, HEADER_LEN)
            .read_exact(&mut block)
            .map_err(|e| eof_to_truncated(e, &path))?;
        check_header(&block, entry, header_pos, head.manifest.created)
    };
    again_if_damaged(
        src,
        header_pos,
        HEADER_LEN,
        &format!("the tar header of `{path}`"),
        header,
    )?;
    let hash = |buf: &mut [u8], count: bool| -> Result<(Digest, u64), ReadError> {
        let mut hasher = Hasher::new();
        let mut r = RangeReader::new(src, data_pos, entry.size());
        loop {
            let n = r.read(buf).map_err(|e| eof_to_truncated(e, &path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if count {
                progress(n as u64);
            }
        }
        Ok(hasher.finish())
    };
    let (found, found_size) = hash(buf, true)?;
    if found != entry.digest() || found_size != entry.size() {
        let mut d = damage_of(head, entry, Some(found), found_size);
        // The source may have another way to the bytes (parity): one more try.
        match src.damaged(data_pos, entry.size(), &d.to_string())? {
            Reread::Again => {
                let (again, again_size) = hash(buf, false)?;
                if again != entry.digest() || again_size != entry.size() {
                    d.found = Some(again);
                    d.found_size = again_size;
                    d.place = match src.damaged(data_pos, entry.size(), &d.to_string())? {
                        Reread::No(place) => place,
                        Reread::Again => None,
                    };
                    return Err(ReadError::Damaged(Box::new(d)));
                }
            }
            Reread::No(place) => {
                d.place = place;
                return Err(ReadError::Damaged(Box::new(d)));
            }
        }
    }
    // Padding must be zeros: nothing may hide between entries.
    let pad = (layout::padded(entry.size()) - entry.size()) as usize;
    if pad > 0 {
        let padding = || -> Result<(), ReadError> {
            let mut zeros = [0u8; 512];
            RangeReader::new(src, data_pos + entry.size(), pad as u64)
                .read_exact(&mut zeros[..pad])
                .map_err(|e| eof_to_truncated(e, &path))?;
            if zeros[..pad].iter().any(|&b| b != 0) {
                return Err(ReadError::Unexpected {
                    position: data_pos + entry.size(),
                    found: "non-zero padding".into(),
                    found_size: pad as u64,
                    expected: format!("zero padding after `{path}`"),
                    expected_size: pad as u64,
                });
            }
            Ok(())
        };
        let what = format!("the padding after `{path}`");
        again_if_damaged(src, data_pos + entry.size(), pad as u64, &what, padding)?;
    }
    Ok(())
}

/// Runs `check` on the `len` bytes at `offset`; when they are wrong, asks the source
/// for them another way ([`ReadAt::damaged`]) and checks once more.
fn again_if_damaged<S: ReadAt + ?Sized>(
    src: &S,
    offset: u64,
    len: u64,
    what: &str,
    check: impl Fn() -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    match check() {
        Err(e @ (ReadError::Header { .. } | ReadError::Unexpected { .. })) => {
            match src.damaged(offset, len, what)? {
                Reread::Again => check(),
                Reread::No(_) => Err(e),
            }
        }
        other => other,
    }
}
