//! Temporary files and folders that a later run recognises and removes.
//!
//! A process killed with -9 cannot clean up: every temporary file it had open (a
//! bundle of hundreds of MiB being written, a staged image archive, a NAR arriving
//! in a binary cache, a staging folder in `$TMPDIR`) stays where it was, and an
//! ordinary random temporary name says nothing about whether its owner still runs.
//! So every temporary name gapbundle makes is
//!
//! ```text
//! .gapbundle.<pid>.<label>.<random>.tmp
//! ```
//!
//! (hidden, with the `.tmp` ending tools that watch a folder for `*.yaml` or
//! `*.tar` ignore), and the owner holds an exclusive `flock` on it for as long as
//! it may need it. [`sweep`] removes the entries of a folder with such a name whose
//! owner is gone: its pid runs no process here, and nobody holds its lock (the
//! lock settles a reused pid, or a pid from another pid namespace sharing the
//! folder). Each writer sweeps the folders it writes temporary files to before it
//! makes its own, so a rerun after a kill leaves nothing behind.

use fs_err::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};
use tempfile::{NamedTempFile, TempDir};

use crate::bundle::digest::lower_hex;

/// The start of every temporary name gapbundle makes.
pub const PREFIX: &str = ".gapbundle.";
/// The end of every temporary name gapbundle makes.
pub const SUFFIX: &str = ".tmp";

/// The part of a temporary name before its random part.
fn name_prefix(label: &str) -> String {
    format!("{PREFIX}{}.{}.", std::process::id(), clean(label))
}

/// `label` with anything but `[A-Za-z0-9_-]` replaced, at most 60 bytes: it only
/// helps a person tell what a temporary file was for.
fn clean(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect()
}

/// Takes the exclusive lock that marks the temporary file `f` (at `path`, for the
/// message) as held by this process, for what is opened some other way than
/// [`file_in`] (relative to a folder handle, as [`crate::io::root`] does).
pub fn lock(f: &impl std::os::fd::AsFd, path: &Path) -> io::Result<()> {
    locked(f, path)
}

fn locked(f: &impl std::os::fd::AsFd, path: &Path) -> io::Result<()> {
    flock(f, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("cannot lock the temporary file {}: {e}", path.display()),
        )
    })
}

/// A new temporary file in `dir`, private (0600), locked for as long as it is
/// open. Name: `.gapbundle.<pid>.<label>.<random>.tmp`.
pub fn file_in(dir: &Path, label: &str) -> io::Result<NamedTempFile> {
    make_file(dir, label, None)
}

/// [`file_in`], with the mode any new file gets (0666 less the umask): for what
/// is meant to be shared once it takes its final name (a bundle, a lock file, a
/// manifest, a narinfo).
pub fn shared_file_in(dir: &Path, label: &str) -> io::Result<NamedTempFile> {
    make_file(dir, label, Some(0o666))
}

fn make_file(dir: &Path, label: &str, mode: Option<u32>) -> io::Result<NamedTempFile> {
    let prefix = name_prefix(label);
    let mut b = tempfile::Builder::new();
    b.prefix(&prefix).suffix(SUFFIX).rand_bytes(8);
    if let Some(m) = mode {
        b.permissions(std::fs::Permissions::from_mode(m));
    }
    let f = b.tempfile_in(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot create a file in {}: {e}", dir.display()),
        )
    })?;
    locked(f.as_file(), f.path())?;
    Ok(f)
}

/// A temporary folder, removed with everything in it when dropped, and locked
/// (an open handle on it holds the `flock`) until then.
#[derive(Debug)]
pub struct TempFolder {
    dir: TempDir,
    _lock: File,
}

impl TempFolder {
    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A new temporary folder in `dir` (`.gapbundle.<pid>.<label>.<random>.tmp`),
/// after sweeping `dir` of the ones killed runs left.
pub fn folder_in(dir: &Path, label: &str) -> io::Result<TempFolder> {
    sweep(dir);
    let prefix = name_prefix(label);
    let t = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(SUFFIX)
        .rand_bytes(8)
        .tempdir_in(dir)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create a folder in {}: {e}", dir.display()),
            )
        })?;
    let lock = File::open(t.path())?;
    locked(&lock, t.path())?;
    Ok(TempFolder {
        dir: t,
        _lock: lock,
    })
}

/// A new temporary folder in `$TMPDIR` (see [`folder_in`]).
pub fn folder(label: &str) -> io::Result<TempFolder> {
    folder_in(&std::env::temp_dir(), label)
}

/// A fresh temporary name for `label` (`.gapbundle.<pid>.<label>.<random>.tmp`)
/// for what cannot be created through [`file_in`] (a symlink); it cannot be
/// locked, so [`sweep`] goes by its pid alone.
pub fn name(label: &str) -> String {
    let mut r = [0u8; 8];
    let _ = getrandom::fill(&mut r);
    let random = lower_hex(&r);
    format!("{}{random}{SUFFIX}", name_prefix(label))
}

/// The pid in a temporary name of ours, or `None` for any other name.
pub fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    if !name.ends_with(SUFFIX) {
        return None;
    }
    let (pid, _) = rest.split_once('.')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether `name` is a temporary name of ours whose owner process is gone: one
/// [`sweep`] removes once it also finds nobody holds its lock ([`unlocked`]).
pub fn orphaned(name: &str) -> bool {
    owner(name).is_some_and(|pid| !runs(pid))
}

/// Whether nobody holds the lock of the open temporary file `f`; it is then held
/// by `f`, until `f` is closed, so that nobody takes the name over while it is
/// removed.
pub fn unlocked(f: &impl std::os::fd::AsFd) -> bool {
    flock(f, FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// Whether `pid` is a running process other than this one.
fn runs(pid: u32) -> bool {
    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes the temporary files and folders of ours in `dir` (not below it) that no
/// running process owns; returns what it removed. Best effort: an entry that
/// cannot be removed (another user's, a read-only folder) is left, and a folder
/// that cannot be read is no error, since sweeping is never what a command is for.
pub fn sweep(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs_err::read_dir(dir) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(orphaned) {
            continue;
        }
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let gone = if kind.is_symlink() {
            // A link cannot be locked; the dead pid is all there is to go by.
            fs_err::remove_file(&path).is_ok()
        } else {
            // Holding the lock while removing: nobody can take the name over.
            let Ok(f) = File::open(&path) else { continue };
            if !unlocked(&f) {
                continue; // someone holds it: its owner runs after all
            }
            if kind.is_dir() {
                fs_err::remove_dir_all(&path).is_ok()
            } else {
                fs_err::remove_file(&path).is_ok()
            }
        };
        if gone {
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_pid_and_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let f = file_in(dir.path(), "out.gapb").unwrap();
        let name = f.path().file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            name.starts_with(&format!(".gapbundle.{}.out-gapb.", std::process::id())),
            "{name}"
        );
        assert!(name.ends_with(".tmp"), "{name}");
        assert_eq!(owner(&name), Some(std::process::id()));
        for other in [
            ".out.gapb.XXXX.tmp",
            ".gapbundle..x.tmp",
            ".gapbundle.12a.x.tmp",
            ".gapbundle.12.x.yaml",
            "gapbundle.12.x.tmp",
        ] {
            assert_eq!(owner(other), None, "{other}");
        }
    }

    #[test]
    fn a_sweep_removes_what_dead_owners_left_and_keeps_what_is_held() {
        let dir = tempfile::tempdir().unwrap();
        // Ours, alive and locked (made first: making a folder sweeps).
        let live = file_in(dir.path(), "live").unwrap();
        let held = folder_in(dir.path(), "held").unwrap();
        // A dead owner: a pid no process has (pid_max is at most 2^22).
        let dead = 4_194_304 + 17;
        let dead_file = dir.path().join(format!("{PREFIX}{dead}.out.abc{SUFFIX}"));
        fs_err::write(&dead_file, b"half a bundle").unwrap();
        let dead_dir = dir.path().join(format!("{PREFIX}{dead}.stage.abc{SUFFIX}"));
        fs_err::create_dir_all(dead_dir.join("nar")).unwrap();
        fs_err::write(dead_dir.join("nar/x"), b"x").unwrap();
        // Files that are not temporary names of ours.
        fs_err::write(dir.path().join("site.gapb"), b"keep").unwrap();
        fs_err::write(dir.path().join(".site.gapb.XYZ.tmp"), b"keep").unwrap();
        // A dead pid's name whose lock someone holds (a pid from elsewhere).
        let foreign = dir
            .path()
            .join(format!("{PREFIX}{dead}.foreign.abc{SUFFIX}"));
        fs_err::write(&foreign, b"x").unwrap();
        let hold = File::open(&foreign).unwrap();
        flock(&hold, FlockOperation::NonBlockingLockExclusive).unwrap();

        let mut removed = sweep(dir.path());
        removed.sort();
        let mut want = vec![dead_file, dead_dir];
        want.sort();
        assert_eq!(removed, want);
        assert!(live.path().exists() && held.path().exists() && foreign.exists());
        assert!(dir.path().join("site.gapb").exists());
        assert!(dir.path().join(".site.gapb.XYZ.tmp").exists());
        let p = held.path().to_path_buf();
        drop(held);
        assert!(!p.exists(), "a temporary folder goes when dropped");
    }
}
