//! Files that appear whole or not at all.
//!
//! Field operators pull USB disks and CI jobs get killed; a half-written bundle or
//! lock file with the final name would be trusted by the next step. Everything we
//! write to a user-visible path goes to a temporary file in the same directory (so the
//! rename cannot cross file systems) and is renamed over the target after fsync.
//!
//! The temporary name is one [`crate::io::temp`] gives (`.gapbundle.<pid>.<name>.
//! <random>.tmp`, locked while it is written), so after a kill -9 the next writer
//! into that folder recognises it as garbage and removes it ([`sweep_beside`]).
//!
//! Only regular files are replaced that way. `-o /dev/null`, `-o /dev/stdout` or a
//! FIFO are written to directly (renaming over them, as root, would turn `/dev/null`
//! into a regular file for the whole machine), and a symlink is followed, so the file
//! it points to is replaced and the link stays.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::io::temp;

/// A file being written; it replaces `target` on [`AtomicFile::commit`] and vanishes
/// if dropped before that.
pub struct AtomicFile {
    target: PathBuf,
    out: Out,
    early: EarlySync,
}

/// Bytes between two early flushes of a large output.
const EARLY_SYNC_EVERY: u64 = 32 << 20;

/// Starts the disk writeback of a large file while it is still being written, on a
/// thread of its own, so the `fsync` that must precede the rename finds little left
/// to do instead of stalling at the end (a bundle is hundreds of MiB).
#[derive(Default)]
struct EarlySync {
    unsynced: u64,
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EarlySync {
    fn wrote(&mut self, n: usize, file: &std::fs::File) {
        self.unsynced += n as u64;
        if self.unsynced < EARLY_SYNC_EVERY {
            return;
        }
        self.unsynced = 0;
        if self.wake.is_none() {
            let Ok(clone) = file.try_clone() else { return };
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            self.thread = Some(std::thread::spawn(move || {
                while rx.recv().is_ok() {
                    // Errors surface in the final, synchronous fsync.
                    let _ = clone.sync_data();
                }
            }));
            self.wake = Some(tx);
        }
        if let Some(tx) = &self.wake {
            let _ = tx.try_send(());
        }
    }

    fn finish(&mut self) {
        self.wake = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

enum Out {
    /// A temporary file beside a regular (or not yet existing) target.
    Temp(BufWriter<NamedTempFile>),
    /// A device, FIFO or socket, written in place.
    Direct(BufWriter<std::fs::File>),
}

impl AtomicFile {
    /// Starts writing `target`.
    #[allow(
        clippy::disallowed_methods,
        reason = "errors name the target by hand, with advice"
    )]
    pub fn create(target: &Path) -> io::Result<Self> {
        match std::fs::metadata(target) {
            Ok(m) if m.is_dir() => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    format!("{} is a directory: give a file name", target.display()),
                ))
            }
            Ok(m) if !m.is_file() => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(target)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot open {}: {e}", target.display()))
                    })?;
                return Ok(Self {
                    target: target.to_path_buf(),
                    out: Out::Direct(BufWriter::with_capacity(1 << 20, f)),
                    early: EarlySync::default(),
                });
            }
            _ => {}
        }
        // Through a symlink, replace the file it points to, not the link.
        let target = match std::fs::symlink_metadata(target) {
            Ok(m) if m.file_type().is_symlink() => fs_err::canonicalize(target)?,
            _ => target.to_path_buf(),
        };
        let tmp = temp_beside(&target)?;
        Ok(Self {
            target: target.to_path_buf(),
            out: Out::Temp(BufWriter::with_capacity(1 << 20, tmp)),
            early: EarlySync::default(),
        })
    }

    /// The temporary file's path when the target is a regular file and nothing was
    /// written through this handle yet: a writer with random access (see
    /// [`bundle_file`](crate::io::bundle_file)) may fill it instead. `None` for a
    /// device or FIFO, which only take a stream.
    pub fn temp_path(&self) -> Option<&Path> {
        match &self.out {
            Out::Temp(t) if t.buffer().is_empty() && self.early.unsynced == 0 => {
                Some(t.get_ref().path())
            }
            _ => None,
        }
    }

    /// Flushes, syncs and renames into place (or just flushes, for a device or FIFO).
    pub fn commit(mut self) -> io::Result<()> {
        self.early.finish();
        let tmp = match self.out {
            Out::Direct(mut f) => return f.flush(),
            Out::Temp(tmp) => tmp.into_inner().map_err(|e| e.into_error())?,
        };
        tmp.as_file().sync_all()?;
        tmp.persist(&self.target).map_err(|e| {
            io::Error::new(
                e.error.kind(),
                format!("cannot rename into {}: {}", self.target.display(), e.error),
            )
        })?;
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.out {
            Out::Temp(t) => {
                let n = t.write(buf)?;
                self.early.wrote(n, t.get_ref().as_file());
                Ok(n)
            }
            Out::Direct(f) => f.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.out {
            Out::Temp(t) => t.flush(),
            Out::Direct(f) => f.flush(),
        }
    }
}

/// A new temporary file in `target`'s folder (so that a rename onto `target`
/// cannot cross file systems), named and locked as [`crate::io::temp`] names every
/// temporary file (`.gapbundle.<pid>.<name>.<random>.tmp`), so that a rerun after a
/// kill removes it ([`sweep_beside`]). Temporary files are private by default; what
/// goes through here (bundles, volumes, locks, manifests, public keys) is meant to
/// be shared, so it gets the mode any other new file gets: 0666 less the umask.
/// Secrets never go through here.
fn temp_beside(target: &Path) -> io::Result<NamedTempFile> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    temp::shared_file_in(&folder_of(target), &name)
}

/// The folder `target` is in (`.` for a bare file name).
fn folder_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes what killed writers left beside `target` (temporary files of ours whose
/// process is gone, see [`temp::sweep`]). A writer calls it once before it
/// writes into a folder, not once per file.
pub fn sweep_beside(target: &Path) {
    temp::sweep(&folder_of(target));
}

/// Writes `bytes` to `target` atomically.
pub fn write(target: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(target)?;
    f.write_all(bytes)?;
    f.commit()
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "test fixtures: std::fs and the tools that make them, where a failure is the test's"
)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn output_gets_an_ordinary_mode_not_a_private_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.gapb");
        super::write(&p, b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        let umask = std::process::Command::new("sh")
            .args(["-c", "umask"])
            .output()
            .unwrap();
        let umask =
            u32::from_str_radix(String::from_utf8(umask.stdout).unwrap().trim(), 8).unwrap();
        assert_eq!(mode, 0o666 & !umask, "mode {mode:o} with umask {umask:o}");
    }

    /// Regression: `create -o /dev/null` as root replaced the machine's /dev/null
    /// with a regular file. A FIFO stands in for the device here.
    #[test]
    fn devices_and_fifos_are_written_in_place_not_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let ok = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(ok.success());
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        super::write(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        let err = super::write(dir.path(), b"x").unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[test]
    fn a_symlink_is_followed_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.gapb");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.path().join("latest.gapb");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        super::write(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
    }

    #[test]
    fn large_outputs_sync_early_and_commit_whole() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.gapb");
        let mut f = super::AtomicFile::create(&p).unwrap();
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..(super::EARLY_SYNC_EVERY >> 20) * 2 + 3 {
            f.write_all(&chunk).unwrap();
        }
        assert!(f.early.thread.is_some(), "the early-sync thread started");
        assert!(!p.exists(), "nothing under the final name before commit");
        f.commit().unwrap();
        let len = std::fs::metadata(&p).unwrap().len();
        assert_eq!(len, (super::EARLY_SYNC_EVERY * 2) + (3 << 20));
    }
}
