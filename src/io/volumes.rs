//! Volume sets on disk: writing data and parity volumes, finding a set beside its
//! first volume, and rebuilding the bytes of missing or damaged volumes from parity
//! while they are read (format.md section 11; the pure rules are in
//! [`crate::bundle::volumes`]).
//!
//! Writing: every volume is a temporary file until all of them are complete and
//! synced; then the parity volumes and the data volumes from the last to the second
//! are renamed into place, volumes of an earlier set with the same prefix that this
//! set lacks are removed, and the first volume comes last. A killed `create` or
//! `split` therefore leaves no volume under a final name while it writes, and a first
//! volume that exists belongs to a whole set. The temporary files are in one
//! temporary folder beside the volumes ([`crate::io::temp`]'s
//! `.gapbundle.<pid>.<prefix>.<random>.tmp`, so the renames stay on one file system),
//! locked by one descriptor for the whole set (a set may have 999 volumes, more
//! than a process may keep open) and removed when the set is dropped; the next
//! writer into that folder sweeps what a killed one left.
//!
//! Reading: a set is whatever `PREFIX.NNN` and `PREFIX.pNN` files exist beside the
//! first volume. The head (in volume 1) or a parity header says how many data
//! volumes there must be and how long each is, so a missing or cut-short volume is
//! named before a byte of data is used. With parity, such a volume is *erased*: its
//! bytes are rebuilt, stripe by stripe, from the other volumes whenever they are
//! read, and nothing is written unless the user asks (`gapbundle join`). A volume
//! whose bytes are wrong is only found by a digest: the verifier's, for a blob, or
//! the parity header's, for a whole volume. Volumes are hashed only when something
//! already went wrong or a one-pass reader must not hand out a byte it cannot take
//! back: bytes that fail their check send the volumes holding them to be hashed,
//! and rebuilt bytes that fail send every volume (a rebuild uses them all), so a
//! second damaged volume is set aside too and the bytes are rebuilt again.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::bundle::digest::{Digest, Hasher};
use crate::bundle::reader::read_head;
use crate::bundle::volumes::{
    check_parity_count, data_volume_path, parity_volume_path, parse_volume_path, Layout,
    ParityCode, ParityHeader, VolumeError, VolumeName, CODE_NAME, MAX_DATA_VOLUMES,
    MAX_PARITY_VOLUMES, PARITY_VERSION,
};
use crate::io::bundle_file::Pieces;
use crate::io::source::{Notes, Part};
use crate::io::temp::{self, TempFolder};

/// Bytes of each volume processed at once when parity is made or used, at most:
/// memory is (data + parity volumes) times this, see [`stripe_len`].
const MAX_STRIPE: usize = 1 << 20;
/// What the stripe buffers of one parity pass or one rebuild may take together.
const STRIPE_BUDGET: usize = 8 << 20;

/// Stripe length for a set of `shards` volumes: at most [`MAX_STRIPE`], at least 4
/// KiB, the buffers of all volumes within [`STRIPE_BUDGET`].
fn stripe_len(shards: usize) -> usize {
    (STRIPE_BUDGET / shards.max(1)).clamp(4096, MAX_STRIPE) / 4096 * 4096
}

/// Why a volume set cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum VolumeSetError {
    /// Volumes are missing or unusable and no parity can make up for them.
    #[error("{}; {hint}", list(problems))]
    Incomplete {
        /// One line per volume at fault, naming it.
        problems: Vec<String>,
        /// What to do.
        hint: String,
    },
    /// A file that looks like a volume of the set is not one of it.
    #[error("{} is not a volume of this bundle ({count} data volumes): it may be left from another split; move it away", path.display())]
    Extra {
        /// The file.
        path: PathBuf,
        /// The set's data volumes.
        count: u32,
    },
    /// A rule of the format was broken (sizes, counts).
    #[error(transparent)]
    Format(#[from] VolumeError),
    /// Reading or writing a volume failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The volume.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

impl crate::error::Classify for VolumeSetError {
    /// A set that is incomplete or holds another bundle's volume is a damaged
    /// bundle (verification); a rule of the format decides by its own class (it is
    /// transparent, so it is not in the chain on its own); an I/O failure is any
    /// other error.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        use crate::error::ErrorClass;
        match self {
            VolumeSetError::Incomplete { .. } | VolumeSetError::Extra { .. } => {
                Some(ErrorClass::Verify)
            }
            VolumeSetError::Format(e) => e.class(),
            VolumeSetError::Io { .. } => None,
        }
    }
}

impl VolumeSetError {
    /// Whether it means the set is incomplete or not this bundle's (a damaged
    /// bundle: exit code 3), rather than an I/O failure.
    pub fn is_incomplete(&self) -> bool {
        matches!(
            self,
            VolumeSetError::Incomplete { .. } | VolumeSetError::Extra { .. }
        )
    }
}

fn list(problems: &[String]) -> String {
    problems.join("; ")
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> VolumeSetError + '_ {
    move |source| VolumeSetError::Io {
        path: path.to_path_buf(),
        source,
    }
}

// ---------------------------------------------------------------------------
// Writing

/// A temporary file that becomes `target` when its set is committed; it lives in
/// its set's temporary folder, which removes it if it never does.
struct TempVolume {
    target: PathBuf,
    temp: PathBuf,
}

impl TempVolume {
    fn create(target: &Path, folder: &TempFolder) -> Result<TempVolume, VolumeSetError> {
        if target.is_dir() {
            return Err(VolumeSetError::Io {
                path: target.to_path_buf(),
                source: io::Error::new(io::ErrorKind::IsADirectory, "is a directory"),
            });
        }
        let name = target.file_name().unwrap_or(target.as_os_str());
        let temp = folder.path().join(name);
        // The mode any new file gets (0666 less the umask): volumes are shared.
        fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(io_at(target))?;
        Ok(TempVolume {
            target: target.to_path_buf(),
            temp,
        })
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "each error is a VolumeSetError::Io naming the volume"
    )]
    fn sync(&self) -> Result<(), VolumeSetError> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.temp)
            .and_then(|f| f.sync_all())
            .map_err(io_at(&self.target))
    }

    #[allow(
        clippy::disallowed_methods,
        reason = "the error is a VolumeSetError::Io naming the volume"
    )]
    fn persist(self) -> Result<PathBuf, VolumeSetError> {
        std::fs::rename(&self.temp, &self.target).map_err(io_at(&self.target))?;
        Ok(self.target)
    }
}

/// A volume set being written: data volumes (and parity volumes) as temporary files
/// that [`VolumeOutput::commit`] renames into place.
pub struct VolumeOutput {
    prefix: PathBuf,
    layout: Layout,
    data: Vec<TempVolume>,
    parity: Vec<TempVolume>,
    /// Where the volumes are until they are committed (dropped last).
    _folder: TempFolder,
}

/// What [`VolumeOutput::commit`] left on disk.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The data volumes, first first.
    pub data: Vec<PathBuf>,
    /// The parity volumes.
    pub parity: Vec<PathBuf>,
    /// Volumes of an earlier set with the same prefix that were removed.
    pub removed: Vec<PathBuf>,
}

impl VolumeOutput {
    /// Starts a set `PREFIX.001` … (and `PREFIX.p01` … for `parity` > 0) for a
    /// bundle laid out as `layout`.
    pub fn create(prefix: &Path, layout: Layout, parity: u32) -> Result<Self, VolumeSetError> {
        let count = layout.count();
        if parity > 0 {
            check_parity_count(count, parity)?;
        }
        let dir = match prefix.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // Sweeps the folder of what killed writers left, then makes the set's own.
        let label = prefix.file_name().unwrap_or_default().to_string_lossy();
        let folder = temp::folder_in(dir, &label).map_err(io_at(prefix))?;
        let data = (1..=count)
            .map(|n| TempVolume::create(&data_volume_path(prefix, n), &folder))
            .collect::<Result<Vec<_>, _>>()?;
        let parity = (1..=parity)
            .map(|n| TempVolume::create(&parity_volume_path(prefix, n), &folder))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VolumeOutput {
            prefix: prefix.to_path_buf(),
            layout,
            data,
            parity,
            _folder: folder,
        })
    }

    /// Where the bundle's bytes go: the data volumes' temporary files.
    pub fn pieces(&self) -> Pieces {
        Pieces::volumes(
            self.data.iter().map(|v| v.temp.clone()).collect(),
            self.layout.volume_size,
        )
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The final names of the data volumes.
    pub fn data_paths(&self) -> Vec<PathBuf> {
        self.data.iter().map(|v| v.target.clone()).collect()
    }

    /// A writer that fills the data volumes in order with the bundle's bytes, from
    /// its first byte (for `split`); bytes after the bundle's last must be zeros and
    /// are dropped.
    pub fn writer(&self) -> SeqWriter<'_> {
        SeqWriter {
            out: self,
            current: None,
            pos: 0,
        }
    }

    /// Makes the parity volumes (if any) over the complete data volumes, syncs every
    /// volume, and renames them into place: parity, the data volumes from the last
    /// to the second, then the first. `progress` counts data bytes read for parity.
    pub fn commit(
        self,
        bundle_digest: Digest,
        progress: &dyn Fn(u64),
    ) -> Result<Committed, VolumeSetError> {
        if !self.parity.is_empty() {
            let data: Vec<&Path> = self.data.iter().map(|v| v.temp.as_path()).collect();
            let parity: Vec<&Path> = self.parity.iter().map(|v| v.temp.as_path()).collect();
            write_parity(&data, &parity, self.layout, bundle_digest, progress)?;
        }
        for v in self.data.iter().chain(&self.parity) {
            v.sync()?;
        }
        let count = self.data.len() as u32;
        let parity_count = self.parity.len() as u32;
        let first = data_volume_path(&self.prefix, 1);
        let mut removed = Vec::new();
        // An earlier first volume goes first: until the new one is in place there
        // is no first volume, so no mixture of two sets can pass for one.
        remove_if_file(&first, &mut removed)?;
        let mut parity_paths = Vec::new();
        for v in self.parity {
            parity_paths.push(v.persist()?);
        }
        let mut data = self.data;
        let first_volume = data.remove(0);
        let mut data_paths: Vec<PathBuf> = Vec::new();
        for v in data.into_iter().rev() {
            data_paths.push(v.persist()?);
        }
        for n in count + 1..=MAX_DATA_VOLUMES {
            remove_if_file(&data_volume_path(&self.prefix, n), &mut removed)?;
        }
        for n in parity_count + 1..=MAX_PARITY_VOLUMES {
            remove_if_file(&parity_volume_path(&self.prefix, n), &mut removed)?;
        }
        data_paths.push(first_volume.persist()?);
        data_paths.reverse();
        removed.retain(|p| p != &first);
        if let Some(dir) = first.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // The renames are durable once the folder is.
            #[allow(
                clippy::disallowed_methods,
                reason = "best effort: a folder that cannot be opened is not synced"
            )]
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(Committed {
            data: data_paths,
            parity: parity_paths,
            removed,
        })
    }
}

/// See [`VolumeOutput::writer`].
pub struct SeqWriter<'a> {
    out: &'a VolumeOutput,
    current: Option<(usize, io::BufWriter<std::fs::File>)>,
    pos: u64,
}

impl SeqWriter<'_> {
    /// Flushes; fails unless every byte of every volume was written.
    pub fn finish(mut self) -> Result<(), VolumeSetError> {
        if let Some((i, mut w)) = self.current.take() {
            w.flush().map_err(io_at(&self.out.data[i].target))?;
        }
        if self.pos < self.out.layout.bundle_size {
            return Err(VolumeSetError::Io {
                path: self.out.prefix.clone(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the bundle ended after {} bytes; its head promises {}",
                        self.pos, self.out.layout.bundle_size
                    ),
                ),
            });
        }
        Ok(())
    }
}

impl Write for SeqWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let layout = self.out.layout;
        if self.pos >= layout.bundle_size {
            if buf.iter().any(|&b| b != 0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "non-zero bytes follow the end of the bundle",
                ));
            }
            return Ok(buf.len());
        }
        let i = (self.pos / layout.volume_size) as usize;
        let (start, len) = layout.range(i as u32);
        if self.current.as_ref().map(|(j, _)| *j) != Some(i) {
            if let Some((j, mut w)) = self.current.take() {
                w.flush().map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("{}: {e}", self.out.data[j].target.display()),
                    )
                })?;
            }
            let f = fs_err::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&self.out.data[i].temp)?
                .into_file();
            self.current = Some((i, io::BufWriter::with_capacity(1 << 20, f)));
        }
        let room = (start + len - self.pos).min(buf.len() as u64) as usize;
        let w = &mut self.current.as_mut().expect("just opened").1;
        w.write_all(&buf[..room])?;
        self.pos += room as u64;
        Ok(room)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.current {
            Some((_, w)) => w.flush(),
            None => Ok(()),
        }
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "a path that is not a file is left alone; a failed removal names the volume (VolumeSetError::Io)"
)]
fn remove_if_file(path: &Path, removed: &mut Vec<PathBuf>) -> Result<(), VolumeSetError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {
            std::fs::remove_file(path).map_err(io_at(path))?;
            removed.push(path.to_path_buf());
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Reads up to `buf.len()` bytes of `file` at `offset` and zero-fills the rest
/// (the zero padding of a short volume); returns how many were real.
fn read_padded(file: &std::fs::File, buf: &mut [u8], offset: u64, len: u64) -> io::Result<usize> {
    let real = len.saturating_sub(offset).min(buf.len() as u64) as usize;
    let mut got = 0;
    while got < real {
        match file.read_at(&mut buf[got..real], offset + got as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("ends at byte {}, {len} expected", offset + got as u64),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[real..].fill(0);
    Ok(real)
}

/// Writes the parity volumes `parity` (empty files) over the complete data volumes
/// `data`, stripe by stripe, with their headers (format.md 11.3).
pub fn write_parity(
    data: &[&Path],
    parity: &[&Path],
    layout: Layout,
    bundle_digest: Digest,
    progress: &dyn Fn(u64),
) -> Result<(), VolumeSetError> {
    let (d, p) = (data.len(), parity.len());
    let code = ParityCode::new(d as u32, p as u32)?;
    let mut header = ParityHeader {
        version: PARITY_VERSION,
        code: CODE_NAME.into(),
        bundle_digest,
        bundle_size: layout.bundle_size,
        volume_size: layout.volume_size,
        data_volumes: d as u32,
        parity_volumes: p as u32,
        index: 1,
        // Digests have a fixed length, so these placeholders give the final length.
        data: vec![bundle_digest; d],
        parity: vec![bundle_digest; p],
    };
    let header_len = header.to_bytes().len() as u64;
    #[allow(
        clippy::disallowed_methods,
        reason = "each error is a VolumeSetError::Io naming the volume"
    )]
    let data_files = data
        .iter()
        .map(|path| std::fs::File::open(path).map_err(io_at(path)))
        .collect::<Result<Vec<_>, _>>()?;
    #[allow(
        clippy::disallowed_methods,
        reason = "each error is a VolumeSetError::Io naming the volume"
    )]
    let parity_files = parity
        .iter()
        .map(|path| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(io_at(path))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let lens: Vec<u64> = (0..d as u32).map(|i| layout.range(i).1).collect();
    let payload = layout.parity_len();
    let stripe = stripe_len(d + p);
    // Two threads: one reads and hashes the data volumes stripe by stripe, the other
    // (this one) computes, writes and hashes the parity; two sets of stripe buffers
    // go back and forth, and the parity files are synced in the background as they
    // grow, so the final fsync finds little left to do.
    let (dhash, phash) = std::thread::scope(|s| -> Result<_, VolumeSetError> {
        let (full_tx, full_rx) =
            std::sync::mpsc::sync_channel::<(u64, usize, u64, Vec<Vec<u8>>)>(1);
        let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<Vec<Vec<u8>>>(2);
        for _ in 0..2 {
            let _ = empty_tx.send(vec![vec![0u8; stripe]; d]);
        }
        let data_files = &data_files;
        let lens = &lens;
        let reader = s.spawn(move || -> Result<Vec<Digest>, VolumeSetError> {
            let mut dhash: Vec<Hasher> = (0..d).map(|_| Hasher::new()).collect();
            let mut at = 0u64;
            while at < payload {
                let Ok(mut bufs) = empty_rx.recv() else {
                    break; // the parity side stopped: its error is the one to report
                };
                let n = (payload - at).min(stripe as u64) as usize;
                let mut real_total = 0u64;
                for i in 0..d {
                    let real = read_padded(&data_files[i], &mut bufs[i][..n], at, lens[i])
                        .map_err(io_at(data[i]))?;
                    dhash[i].update(&bufs[i][..real]);
                    real_total += real as u64;
                }
                if full_tx.send((at, n, real_total, bufs)).is_err() {
                    break;
                }
                at += n as u64;
            }
            Ok(dhash.into_iter().map(|h| h.finish().0).collect())
        });
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let parity_files = &parity_files;
        s.spawn(move || {
            while woken.recv().is_ok() {
                for f in parity_files {
                    let _ = f.sync_data(); // errors surface in the final fsync
                }
            }
        });
        let mut pbufs = vec![vec![0u8; stripe]; p];
        let mut phash: Vec<Hasher> = (0..p).map(|_| Hasher::new()).collect();
        let mut since_sync = 0u64;
        let encoded = (|| -> Result<(), VolumeSetError> {
            for (at, n, real, bufs) in full_rx {
                {
                    let ds: Vec<&[u8]> = bufs.iter().map(|b| &b[..n]).collect();
                    let mut ps: Vec<&mut [u8]> = pbufs.iter_mut().map(|b| &mut b[..n]).collect();
                    code.encode(&ds, &mut ps)?;
                }
                let _ = empty_tx.send(bufs);
                for j in 0..p {
                    parity_files[j]
                        .write_all_at(&pbufs[j][..n], header_len + at)
                        .map_err(io_at(parity[j]))?;
                    phash[j].update(&pbufs[j][..n]);
                }
                since_sync += (n * p) as u64;
                if since_sync >= 64 << 20 {
                    since_sync = 0;
                    let _ = wake.try_send(());
                }
                progress(real);
            }
            Ok(())
        })();
        drop(empty_tx);
        drop(wake);
        let dhash = reader.join().expect("the parity reader does not panic");
        encoded?;
        Ok((dhash?, phash))
    })?;
    header.data = dhash;
    header.parity = phash.into_iter().map(|h| h.finish().0).collect();
    for (j, f) in parity_files.iter().enumerate() {
        header.index = j as u32 + 1;
        let bytes = header.to_bytes();
        debug_assert_eq!(bytes.len() as u64, header_len);
        f.write_all_at(&bytes, 0).map_err(io_at(parity[j]))?;
        // A payload of zero length still gives a file of exactly header + payload.
        f.set_len(header_len + payload).map_err(io_at(parity[j]))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Finding and reading

/// The files of a set found beside a first volume.
#[derive(Debug, Clone)]
pub struct Found {
    /// `PREFIX` of `PREFIX.001`.
    pub prefix: PathBuf,
    /// Data volumes that exist, by number.
    pub data: BTreeMap<u32, PathBuf>,
    /// Parity volumes that exist, by number.
    pub parity: BTreeMap<u32, PathBuf>,
}

/// The set whose first volume is `first` (a path ending in `.001`, which need not
/// exist when other volumes of its set do), or `None` for any other path.
pub fn find(first: &Path) -> Option<Found> {
    let (prefix, VolumeName::Data(1)) = parse_volume_path(first)? else {
        return None;
    };
    let dir = match prefix.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stem = prefix.file_name()?.to_os_string();
    let mut found = Found {
        prefix: prefix.clone(),
        data: BTreeMap::new(),
        parity: BTreeMap::new(),
    };
    #[allow(
        clippy::disallowed_methods,
        reason = "a folder that cannot be listed holds no volumes beside the first"
    )]
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let path = prefix.with_file_name(entry.file_name());
        let Some((p, which)) = parse_volume_path(&path) else {
            continue;
        };
        if p.file_name() != Some(stem.as_os_str()) {
            continue;
        }
        #[allow(
            clippy::disallowed_methods,
            reason = "a file that cannot be read is not a volume of the set"
        )]
        if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        match which {
            VolumeName::Data(n) => found.data.insert(n, path),
            VolumeName::Parity(n) => found.parity.insert(n, path),
        };
    }
    if found.data.is_empty() && found.parity.is_empty() {
        return None;
    }
    Some(found)
}

/// A usable parity volume.
struct ParityVolume {
    path: PathBuf,
    file: std::fs::File,
    /// 0-based index among the set's parity volumes.
    index: usize,
    /// Where its payload starts.
    payload_start: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Unknown,
    Good,
    Bad,
}

/// How a volume set with parity rebuilds what it lacks.
pub(crate) struct Repair {
    header: ParityHeader,
    layout: Layout,
    code: ParityCode,
    parity: Vec<ParityVolume>,
    /// Per data volume: its bytes come from parity.
    erased: Vec<AtomicBool>,
    /// Data volumes' and parity volumes' digests, as far as checked; held while a
    /// check runs, so each volume is hashed once however many threads ask.
    checks: Mutex<Checks>,
    stripe: usize,
}

struct Checks {
    data: Vec<Check>,
    parity: Vec<Check>,
    /// Every volume a rebuild uses was checked once.
    all_checked: bool,
    /// Where a range in an erased volume was said to be read again although
    /// nothing changed (see [`Repair::damaged`]): once each.
    reread: std::collections::BTreeSet<u64>,
}

impl Repair {
    /// Whether data volume `i` (0-based) is read from parity.
    pub(crate) fn is_erased(&self, i: usize) -> bool {
        self.erased[i].load(Ordering::Relaxed)
    }

    fn erased_count(&self) -> usize {
        self.erased
            .iter()
            .filter(|e| e.load(Ordering::Relaxed))
            .count()
    }

    fn usable_parity(&self, checks: &Checks) -> usize {
        self.parity
            .iter()
            .filter(|v| checks.parity[v.index] != Check::Bad)
            .count()
    }

    /// Hashes data volume `i` against the header, once. A wrong one is erased when
    /// the parity can make up for it (said in `notes`); returns whether it was.
    fn check_data(
        &self,
        parts: &[Part],
        i: usize,
        checks: &mut Checks,
        notes: &Notes,
        why: &str,
    ) -> io::Result<bool> {
        if checks.data[i] != Check::Unknown || self.is_erased(i) {
            return Ok(false);
        }
        let part = &parts[i];
        let Some(file) = &part.file else {
            return Ok(false);
        };
        let found = hash_file(file, 0, part.len)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", part.path.display())))?;
        Ok(self.judge_data(parts, i, found, checks, notes, why))
    }

    /// Records data volume `i`'s digest `found`; see [`Repair::check_data`].
    fn judge_data(
        &self,
        parts: &[Part],
        i: usize,
        found: Digest,
        checks: &mut Checks,
        notes: &Notes,
        why: &str,
    ) -> bool {
        let part = &parts[i];
        if found == self.header.data[i] {
            checks.data[i] = Check::Good;
            return false;
        }
        checks.data[i] = Check::Bad;
        if self.erased_count() < self.usable_parity(checks) {
            self.erased[i].store(true, Ordering::Relaxed);
            notes.say(format!(
                "{} is damaged{why}: it hashes to {found}, the parity volumes record {}; rebuilding its bytes from parity as they are read",
                part.path.display(),
                self.header.data[i]
            ));
            true
        } else {
            notes.say(format!(
                "{} is damaged{why}: it hashes to {found} instead of {}, and the parity cannot rebuild it as well as the {} volume(s) it rebuilds already",
                part.path.display(),
                self.header.data[i],
                self.erased_count()
            ));
            false
        }
    }

    /// Checks every volume a rebuild may use, once, hashing them in parallel: the
    /// parity volumes and the data volumes not erased.
    fn check_all(&self, parts: &[Part], checks: &mut Checks, notes: &Notes) -> io::Result<()> {
        if checks.all_checked {
            return Ok(());
        }
        enum Item {
            Parity(usize),
            Data(usize),
        }
        let mut items: Vec<Item> = (0..self.parity.len())
            .filter(|&k| checks.parity[self.parity[k].index] == Check::Unknown)
            .map(Item::Parity)
            .collect();
        items.extend(
            (0..parts.len())
                .filter(|&i| checks.data[i] == Check::Unknown && !self.is_erased(i))
                .filter(|&i| parts[i].file.is_some())
                .map(Item::Data),
        );
        let found = crate::pool::map(
            crate::pool::cores(),
            &items,
            || Ok(()),
            |_, item| match item {
                Item::Parity(k) => {
                    let v = &self.parity[*k];
                    hash_file(&v.file, v.payload_start, self.layout.parity_len())
                        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", v.path.display())))
                }
                Item::Data(i) => {
                    let part = &parts[*i];
                    let file = part.file.as_ref().expect("filtered");
                    hash_file(file, 0, part.len).map_err(|e| {
                        io::Error::new(e.kind(), format!("{}: {e}", part.path.display()))
                    })
                }
            },
        )?;
        // Parity first: whether a damaged data volume can be rebuilt depends on it.
        for (item, found) in items.iter().zip(&found) {
            if let Item::Parity(k) = item {
                let v = &self.parity[*k];
                if *found == self.header.parity[v.index] {
                    checks.parity[v.index] = Check::Good;
                } else {
                    checks.parity[v.index] = Check::Bad;
                    notes.say(format!(
                        "parity volume {} is damaged (it hashes to {found} instead of {}): not used",
                        v.path.display(),
                        self.header.parity[v.index]
                    ));
                }
            }
        }
        for (item, found) in items.iter().zip(found) {
            if let Item::Data(i) = item {
                self.judge_data(parts, *i, found, checks, notes, "");
            }
        }
        checks.all_checked = true;
        Ok(())
    }

    /// Checks every volume against the parity header (see [`Repair::check_all`]).
    pub(crate) fn check_everything(&self, parts: &[Part], notes: &Notes) -> io::Result<()> {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        self.check_all(parts, &mut checks, notes)
    }

    /// Fills `buf` (up to one stripe, up to the end of the volume) with the bytes of
    /// erased data volume `i` at `within`, rebuilt from the others.
    pub(crate) fn rebuild(
        &self,
        parts: &[Part],
        i: usize,
        within: u64,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        let part_len = self.layout.range(i as u32).1;
        let n = (buf.len().min(self.stripe) as u64).min(part_len.saturating_sub(within)) as usize;
        if n == 0 {
            return Ok(0);
        }
        let parity_use: Vec<&ParityVolume> = {
            let checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
            let need = self.erased_count();
            // Parity volumes not known to be damaged; a rebuild from a damaged one
            // fails the blob's digest, and `damaged` then checks every volume.
            let usable: Vec<&ParityVolume> = self
                .parity
                .iter()
                .filter(|v| checks.parity[v.index] != Check::Bad)
                .take(need)
                .collect();
            if usable.len() < need {
                return Err(io::Error::other(VolumeSetError::Incomplete {
                    problems: vec![format!(
                        "{} volume(s) must be rebuilt but only {} parity volume(s) are whole",
                        need,
                        usable.len()
                    )],
                    hint: "bring the missing volumes or more parity volumes".into(),
                }));
            }
            usable
        };
        let d = parts.len();
        let mut shards: Vec<Option<Vec<u8>>> = Vec::with_capacity(d + self.parity.len());
        for (k, part) in parts.iter().enumerate() {
            if self.is_erased(k) {
                shards.push(None);
                continue;
            }
            let file = part
                .file
                .as_ref()
                .expect("a volume that is not erased is open");
            let mut b = vec![0u8; n];
            read_padded(file, &mut b, within, part.len)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", part.path.display())))?;
            shards.push(Some(b));
        }
        let mut parity: Vec<Option<Vec<u8>>> =
            (0..self.header.parity_volumes).map(|_| None).collect();
        for v in parity_use {
            let mut b = vec![0u8; n];
            read_padded(
                &v.file,
                &mut b,
                v.payload_start + within,
                v.payload_start + self.layout.parity_len(),
            )
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", v.path.display())))?;
            parity[v.index] = Some(b);
        }
        shards.extend(parity);
        self.code.rebuild(&mut shards).map_err(io::Error::other)?;
        buf[..n].copy_from_slice(&shards[i].as_ref().expect("rebuilt")[..n]);
        Ok(n)
    }

    /// The verifier found the bytes at `[start, end)` wrong: checks the data
    /// volumes that hold them; returns whether one was erased (read again).
    pub(crate) fn damaged(
        &self,
        parts: &[Part],
        notes: &Notes,
        start: u64,
        end: u64,
        what: &str,
    ) -> io::Result<bool> {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let holding: Vec<usize> = (0..parts.len())
            .filter(|&i| parts[i].start < end && start < parts[i].start + parts[i].len)
            .collect();
        if holding.iter().any(|&i| self.is_erased(i)) {
            // Either rebuilt bytes were wrong (some volume the rebuild used is
            // damaged: every volume is checked, once; read again if that found
            // something), or the caller read the volume itself just before another
            // thread, reading another range of it, found it damaged and erased it
            // (the caller cannot tell): that range is read again once, rebuilt.
            let before = self.state(&checks);
            self.check_all(parts, &mut checks, notes)?;
            let first = checks.reread.insert(start);
            return Ok(first || self.state(&checks) != before);
        }
        let mut again = false;
        for i in holding {
            again |= self.check_data(parts, i, &mut checks, notes, &format!(" ({what})"))?;
        }
        Ok(again)
    }

    /// What a rebuild depends on: which volumes are erased and which parity is bad.
    fn state(&self, checks: &Checks) -> (Vec<bool>, Vec<Check>) {
        (
            (0..self.erased.len()).map(|i| self.is_erased(i)).collect(),
            checks.parity.clone(),
        )
    }

    /// Before a one-pass reader hands out bytes of data volume `i`, checks it.
    pub(crate) fn check_before_use(
        &self,
        parts: &[Part],
        notes: &Notes,
        i: usize,
    ) -> io::Result<()> {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        self.check_data(parts, i, &mut checks, notes, "")?;
        Ok(())
    }

    /// Whether data volume `i` was checked (or is erased), so a reader may go on.
    pub(crate) fn checked(&self, i: usize) -> bool {
        self.is_erased(i)
            || self
                .checks
                .lock()
                .map(|c| c.data[i] != Check::Unknown)
                .unwrap_or(false)
    }
}

/// sha256 of `len` bytes of `file` from `start`.
fn hash_file(file: &std::fs::File, start: u64, len: u64) -> io::Result<Digest> {
    let mut r = BufReader::with_capacity(
        1 << 20,
        crate::bundle::reader::RangeReader::new(file, start, len),
    );
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish().0)
}

/// The parts (one per data volume, a missing one without a file) and, with
/// parity, how to rebuild: what [`crate::io::source::BundleSource::open`] makes of
/// a set found beside `first`.
pub(crate) fn open_set(
    found: &Found,
    notes: &Notes,
) -> Result<(Vec<Part>, Option<Repair>), VolumeSetError> {
    let parity = open_parity(found, notes);
    let first = data_volume_path(&found.prefix, 1);
    #[allow(
        clippy::disallowed_methods,
        reason = "each error is a VolumeSetError::Io naming the volume"
    )]
    let first_file = found
        .data
        .get(&1)
        .map(|p| std::fs::File::open(p).map_err(io_at(p)))
        .transpose()?;
    // The head says how long the bundle is; with parity, the header says it too.
    let head = first_file
        .as_ref()
        .and_then(|f| read_head(&mut BufReader::new(f)).ok());
    // A head that reads well but is not the bundle the parity names: the parity
    // volumes are another bundle's (or the head is damaged, which its signature
    // then shows). Never let them replace a first volume that reads: to rebuild a
    // damaged one from parity, remove it.
    let mut parity = parity;
    if let (Some(h), Some((ph, _))) = (&head, parity.first()) {
        if h.digest != ph.bundle_digest {
            notes.say(format!(
                "the parity volumes protect another bundle ({}), not the one whose head is in {} ({}): not used",
                ph.bundle_digest,
                first.display(),
                h.digest
            ));
            parity.clear();
        }
    }
    let header = parity.first().map(|(h, _)| h.clone());
    let (layout, exact) = match (&header, &head) {
        (Some(h), _) => (h.layout(), true),
        (None, Some(head)) => {
            let len1 = first_file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map_or(0, |m| m.len());
            let total = head.file_len();
            let volume_size = if found.data.len() == 1 && total <= len1 {
                len1.max(total).max(1)
            } else {
                len1.max(1)
            };
            (
                Layout {
                    bundle_size: total,
                    volume_size,
                },
                false,
            )
        }
        (None, None) => {
            // Nothing says how long the bundle is: take the volumes as they are
            // (consecutive from 001) and let the reader report what is wrong.
            let mut parts = Vec::new();
            let mut start = 0;
            for n in 1.. {
                let Some(path) = found.data.get(&n) else {
                    break;
                };
                #[allow(
                    clippy::disallowed_methods,
                    reason = "each error is a VolumeSetError::Io naming the volume"
                )]
                let file = std::fs::File::open(path).map_err(io_at(path))?;
                let len = file.metadata().map_err(io_at(path))?.len();
                parts.push(Part {
                    path: path.clone(),
                    file: Some(file),
                    start,
                    len,
                });
                start += len;
            }
            if parts.is_empty() {
                return Err(VolumeSetError::Incomplete {
                    problems: vec![format!("{} is missing", first.display())],
                    hint: "copy it from the medium again".into(),
                });
            }
            return Ok((parts, None));
        }
    };
    // A head from a hostile or damaged volume may claim any length: a set never
    // has more than 999 data volumes.
    let claimed = layout.bundle_size.div_ceil(layout.volume_size);
    if claimed > u64::from(MAX_DATA_VOLUMES) {
        return Err(VolumeSetError::Incomplete {
            problems: vec![format!(
                "the head in {} says the bundle has {} bytes, which in volumes of {} bytes (the length of {}) makes {claimed} volumes, more than a set has",
                first.display(),
                layout.bundle_size,
                layout.volume_size,
                first.display()
            )],
            hint: "the first volume is damaged or not the first of a set".into(),
        });
    }
    let count = layout.count();
    if let Some((_, path)) = found.data.range(count + 1..).next() {
        return Err(VolumeSetError::Extra {
            path: path.clone(),
            count,
        });
    }
    let mut parts = Vec::with_capacity(count as usize);
    let mut problems = Vec::new();
    for n in 1..=count {
        let (start, len) = layout.range(n - 1);
        let path = data_volume_path(&found.prefix, n);
        let file = match found.data.get(&n) {
            None => {
                problems.push(format!(
                    "volume {n} of {count} ({}) is missing",
                    path.display()
                ));
                None
            }
            Some(p) => {
                #[allow(
                    clippy::disallowed_methods,
                    reason = "each error is a VolumeSetError::Io naming the volume"
                )]
                let file = std::fs::File::open(p).map_err(io_at(p))?;
                let actual = file.metadata().map_err(io_at(p))?.len();
                // Without parity the last volume may carry zeros after the end
                // marker (the verifier judges them); everything else is exact.
                let last_may_be_longer = !exact && n == count && actual > len;
                if actual != len && !last_may_be_longer {
                    problems.push(format!(
                        "volume {n} of {count} ({}) has {actual} bytes instead of {len} (was the copy cut short?)",
                        p.display()
                    ));
                    None
                } else {
                    Some(file)
                }
            }
        };
        let len = match &file {
            Some(f) if !exact && n == count => f.metadata().map_err(io_at(&path))?.len(),
            _ => len,
        };
        parts.push(Part {
            path,
            file,
            start,
            len,
        });
    }
    let Some(header) = header else {
        if problems.is_empty() {
            return Ok((parts, None));
        }
        return Err(VolumeSetError::Incomplete {
            problems,
            hint: "copy the volumes again (or bring parity volumes `.p01`…, which rebuild them)"
                .into(),
        });
    };
    let code = ParityCode::new(header.data_volumes, header.parity_volumes)?;
    let erased: Vec<AtomicBool> = parts
        .iter()
        .map(|p| AtomicBool::new(p.file.is_none()))
        .collect();
    let repair = Repair {
        stripe: stripe_len(header.data_volumes as usize + header.parity_volumes as usize),
        checks: Mutex::new(Checks {
            data: vec![Check::Unknown; count as usize],
            parity: vec![Check::Unknown; header.parity_volumes as usize],
            all_checked: false,
            reread: Default::default(),
        }),
        layout,
        code,
        erased,
        parity: parity.into_iter().map(|(_, v)| v).collect(),
        header,
    };
    // A first volume whose head does not even read is checked against its digest.
    if head.is_none() && !repair.is_erased(0) {
        let mut checks = repair.checks.lock().unwrap_or_else(|p| p.into_inner());
        repair
            .check_data(&parts, 0, &mut checks, notes, " (its head cannot be read)")
            .map_err(io_at(&first))?;
    }
    let erased = repair.erased_count();
    if erased > repair.parity.len() {
        problems.push(format!(
            "{} parity volume(s) can rebuild at most as many volumes",
            repair.parity.len()
        ));
        return Err(VolumeSetError::Incomplete {
            problems,
            hint: "bring the missing volumes or more parity volumes".into(),
        });
    }
    for p in problems {
        notes.say(format!(
            "{p}: rebuilding its bytes from parity as they are read"
        ));
    }
    Ok((parts, Some(repair)))
}

/// The parity volumes found, with headers that agree (the first usable one sets
/// the set); the others are named in `notes` and left out.
fn open_parity(found: &Found, notes: &Notes) -> Vec<(ParityHeader, ParityVolume)> {
    let mut out: Vec<(ParityHeader, ParityVolume)> = Vec::new();
    for (&n, path) in &found.parity {
        #[allow(
            clippy::disallowed_methods,
            reason = "a parity volume that cannot be opened is named in the notes and left out"
        )]
        let opened = std::fs::File::open(path).and_then(|f| {
            let len = f.metadata()?.len();
            Ok((f, len))
        });
        let (file, len) = match opened {
            Ok(x) => x,
            Err(e) => {
                notes.say(format!(
                    "parity volume {} cannot be read ({e}): not used",
                    path.display()
                ));
                continue;
            }
        };
        let parsed = ParityHeader::read_from(&mut BufReader::new(&file));
        let (header, payload_start) = match parsed {
            Ok(x) => x,
            Err(e) => {
                notes.say(format!("parity volume {}: {e}: not used", path.display()));
                continue;
            }
        };
        if header.index != n {
            notes.say(format!(
                "parity volume {} says it is parity volume {}: not used",
                path.display(),
                header.index
            ));
            continue;
        }
        let want = payload_start + header.layout().parity_len();
        if len != want {
            notes.say(format!(
                "parity volume {} has {len} bytes instead of {want} (was the copy cut short?): not used",
                path.display()
            ));
            continue;
        }
        if let Some((first, _)) = out.first() {
            if !first.same_set(&header) {
                notes.say(format!(
                    "parity volume {} belongs to another split than {}: not used",
                    path.display(),
                    parity_volume_path(&found.prefix, first.index).display()
                ));
                continue;
            }
        }
        out.push((
            header,
            ParityVolume {
                path: path.clone(),
                file,
                index: n as usize - 1,
                payload_start,
            },
        ));
    }
    out
}
