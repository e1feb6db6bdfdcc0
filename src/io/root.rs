//! Files below a root folder, seen as a chroot would see them.
//!
//! `import --root DIR` installs a bundle's `file` objects below `DIR` (a system
//! being built, a mounted disk, `/` itself). Inside such a tree an absolute
//! symlink (`etc -> /etc`, `/opt/app -> /srv/app`) means the tree's own `/etc`,
//! not the importing host's: following it as the kernel would outside a chroot
//! writes into the host, and a `..` chain can climb out of `DIR` the same way.
//! So every path is resolved here one component at a time from a handle on the
//! root, the way Linux's `openat2(RESOLVE_IN_ROOT)` does it: each component is
//! opened with `O_NOFOLLOW` relative to the handle of the folder before it; a
//! symlink is read and its target resolved in turn, an absolute one from the
//! root's handle; `..` goes back to the folder before, and never above the root.
//! Nothing is ever opened by a path string that the kernel would resolve on its
//! own, so nothing below can lead outside the root, even if the tree changes
//! while we look.
//!
//! One walk (rather than `openat2` where the kernel has it, and a walk where it
//! does not) because missing folders are created on the way, one component at a
//! time, which `openat2` does not do; one code path is also one that is tested.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Symlinks followed in one resolution at most (Linux's own limit is 40).
const MAX_LINKS: usize = 40;

/// A folder that cannot be used, named for the person who must fix it.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// A component that must be a folder is something else.
    #[error("{path} is not a folder (a file is where a folder must be)")]
    NotAFolder {
        /// Where it is, as seen from outside the root.
        path: PathBuf,
    },
    /// Symlinks that lead round in circles, or too many of them.
    #[error("{path}: more than {MAX_LINKS} symlinks to follow (a loop?)")]
    Loop {
        /// Where the resolution was.
        path: PathBuf,
    },
    /// The file system said no.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl crate::error::Classify for RootError {
    /// The root folder is the local machine's (what is in it, how it is linked):
    /// its errors are any other error, exit code 1.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        None
    }
}

fn io_err(path: &Path, e: impl Into<io::Error>) -> RootError {
    RootError::Io {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// A root folder, held open.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// A folder inside a root, held open, and where it is (for messages).
pub struct Dir {
    fd: OwnedFd,
    /// The folder as seen from outside the root (the root's path joined with the
    /// resolved components).
    pub shown: PathBuf,
}

/// What is at a name in a folder (not followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Nothing.
    Missing,
    /// A regular file of this size and these permission bits.
    File {
        /// Bytes.
        size: u64,
        /// `st_mode & 0o7777`.
        mode: u32,
    },
    /// A folder.
    Folder,
    /// A symlink (never followed for the last component: it is replaced).
    Symlink,
    /// Something else (a device, a socket, a pipe).
    Other,
}

impl Root {
    /// Opens `path` (which must be a folder) as the root.
    pub fn open(path: &Path) -> Result<Root, RootError> {
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(path, e))?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The root's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder `components` name inside the root, every symlink on the way
    /// resolved inside it; missing folders are made (mode 0755) when `create`, and
    /// otherwise mean `None`.
    pub fn dir(&self, components: &[&str], create: bool) -> Result<Option<Dir>, RootError> {
        let dup = |fd: &OwnedFd, shown: &Path| {
            rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|e| io_err(shown, e))
        };
        // The folders entered so far, the root first: `..` pops one.
        let mut stack: Vec<(OwnedFd, PathBuf)> =
            vec![(dup(&self.fd, &self.path)?, self.path.clone())];
        let mut todo: VecDeque<Vec<u8>> =
            components.iter().map(|c| c.as_bytes().to_vec()).collect();
        let mut links = 0usize;
        while let Some(c) = todo.pop_front() {
            match c.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let name = OsStr::from_bytes(&c);
            let (cur, cur_shown) = stack.last().expect("the root stays");
            let shown = cur_shown.join(name);
            let opened = rustix::fs::openat(
                cur,
                name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            );
            let fd = match opened {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(cur, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(io_err(&shown, e)),
                    }
                    rustix::fs::openat(
                        cur,
                        name,
                        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| io_err(&shown, e))?
                }
                Err(rustix::io::Errno::NOENT) => return Ok(None),
                Err(e) => return Err(io_err(&shown, e)),
            };
            let st = rustix::fs::fstat(&fd).map_err(|e| io_err(&shown, e))?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => stack.push((fd, shown)),
                FileType::Symlink => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(RootError::Loop { path: shown });
                    }
                    let target = rustix::fs::readlinkat(cur, name, Vec::new())
                        .map_err(|e| io_err(&shown, e))?
                        .into_bytes();
                    if target.starts_with(b"/") {
                        // Absolute: from the root, as inside a chroot.
                        stack.truncate(1);
                    }
                    for part in target.split(|&b| b == b'/').rev() {
                        todo.push_front(part.to_vec());
                    }
                }
                _ => return Err(RootError::NotAFolder { path: shown }),
            }
        }
        let (fd, shown) = stack.pop().expect("the root stays");
        Ok(Some(Dir { fd, shown }))
    }
}

impl Dir {
    /// What is at `name` in this folder; a symlink is not followed.
    pub fn entry(&self, name: &str) -> Result<Entry, RootError> {
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => Entry::File {
                    size: st.st_size as u64,
                    mode: st.st_mode & 0o7777,
                },
                FileType::Directory => Entry::Folder,
                FileType::Symlink => Entry::Symlink,
                _ => Entry::Other,
            }),
            Err(rustix::io::Errno::NOENT) => Ok(Entry::Missing),
            Err(e) => Err(io_err(&self.shown.join(name), e)),
        }
    }

    /// Opens the regular file `name` for reading, never through a symlink.
    pub fn open_file(&self, name: &str) -> Result<File, RootError> {
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(&self.shown.join(name), e))?;
        Ok(File::from(fd))
    }

    /// Creates a new file for `name` under a temporary name in this folder, one
    /// [`crate::io::temp`] gives (`.gapbundle.<pid>.<name>.<random>.tmp`, locked
    /// while it is open, mode 0600 until [`Self::commit`]), so that after a kill the
    /// next import's [`Self::sweep`] removes it; returns it and the temporary name.
    pub fn temp_for(&self, name: &str) -> Result<(File, String), RootError> {
        let tmp = crate::io::temp::name(name);
        let at = self.shown.join(&tmp);
        let fd = rustix::fs::openat(
            &self.fd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_err(&at, e))?;
        let file = File::from(fd);
        if let Err(e) = crate::io::temp::lock(&file, &at) {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
            return Err(io_err(&at, e));
        }
        Ok((file, tmp))
    }

    /// Creates a staging folder in this folder under a temporary name
    /// (`.gapbundle.<pid>.<label>.<random>.tmp`, mode 0700) and returns it, held
    /// open and locked for as long as the returned [`Dir`] lives: the lock keeps
    /// another import's [`Self::sweep`] away from it and everything in it, so the
    /// files staged in it need not stay open. Files are then made in it with
    /// [`Self::temp_for`] and moved out with [`Self::rename_to`]; it is removed
    /// with [`Self::remove_folder`].
    pub fn temp_folder(&self, label: &str) -> Result<Dir, RootError> {
        let tmp = crate::io::temp::name(label);
        let at = self.shown.join(&tmp);
        rustix::fs::mkdirat(&self.fd, tmp.as_str(), Mode::from_raw_mode(0o700))
            .map_err(|e| io_err(&at, e))?;
        let opened = rustix::fs::openat(
            &self.fd,
            tmp.as_str(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(&at, e))
        .and_then(|fd| {
            crate::io::temp::lock(&fd, &at).map_err(|e| io_err(&at, e))?;
            Ok(fd)
        });
        match opened {
            Ok(fd) => Ok(Dir { fd, shown: at }),
            Err(e) => {
                let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::REMOVEDIR);
                Err(e)
            }
        }
    }

    /// Renames `from` in this folder to `name` in `to` (both inside the root, on
    /// one file system), replacing what is there (a symlink there is replaced,
    /// never followed).
    pub fn rename_to(&self, from: &str, to: &Dir, name: &str) -> Result<(), RootError> {
        rustix::fs::renameat(&self.fd, from, &to.fd, name)
            .map_err(|e| io_err(&to.shown.join(name), e))
    }

    /// Removes the folder `name` in this folder and the files in it. Only files
    /// (and symlinks) are removed from it, never followed: a folder inside it is
    /// an error, and it is left (a staging folder holds nothing else).
    pub fn remove_folder(&self, name: &str) -> Result<(), RootError> {
        let at = self.shown.join(name);
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(()),
            Err(e) => return Err(io_err(&at, e)),
        };
        let mut names = Vec::new();
        {
            let mut dir = rustix::fs::Dir::read_from(&fd).map_err(|e| io_err(&at, e))?;
            while let Some(entry) = dir.read() {
                let entry = entry.map_err(|e| io_err(&at, e))?;
                let n = entry.file_name().to_bytes();
                if n != b"." && n != b".." {
                    names.push(entry.file_name().to_owned());
                }
            }
        }
        for n in names {
            rustix::fs::unlinkat(&fd, n.as_c_str(), AtFlags::empty())
                .map_err(|e| io_err(&at.join(OsStr::from_bytes(n.to_bytes())), e))?;
        }
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io_err(&at, e)),
        }
    }

    /// Removes the temporary files and staging folders of ours in this folder
    /// whose owner is gone (a killed import's), as [`crate::io::temp::sweep`] does
    /// for a path, but through this folder's handle: nothing is resolved outside
    /// the root. Returns the names removed; best effort, like that sweep.
    pub fn sweep(&self) -> Vec<String> {
        let mut removed = Vec::new();
        let Ok(fd) = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return removed;
        };
        let Ok(mut dir) = rustix::fs::Dir::read_from(&fd) else {
            return removed;
        };
        let mut names = Vec::new();
        while let Some(Ok(entry)) = dir.read() {
            if let Ok(name) = entry.file_name().to_str() {
                if crate::io::temp::orphaned(name) {
                    names.push(name.to_string());
                }
            }
        }
        for name in names {
            let gone = match self.entry(&name) {
                // A link cannot be locked: the dead pid is all there is to go by.
                Ok(Entry::Symlink) => self.remove(&name).is_ok(),
                Ok(Entry::File { .. }) => match self.open_file(&name) {
                    // Holding the lock while removing: nobody takes the name over.
                    Ok(f) if crate::io::temp::unlocked(&f) => self.remove(&name).is_ok(),
                    _ => false,
                },
                // A staging folder ([`Self::temp_folder`]) whose lock nobody holds,
                // removed while holding it.
                Ok(Entry::Folder) => match rustix::fs::openat(
                    &self.fd,
                    name.as_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                ) {
                    Ok(f) if crate::io::temp::unlocked(&f) => self.remove_folder(&name).is_ok(),
                    _ => false,
                },
                _ => false,
            };
            if gone {
                removed.push(name);
            }
        }
        removed
    }

    /// Gives the temporary file `tmp` (written, still open as `file`) its mode,
    /// makes it durable and renames it to `name`, replacing what is there (a
    /// symlink there is replaced, never followed).
    pub fn commit(&self, file: &File, tmp: &str, name: &str, mode: u32) -> Result<(), RootError> {
        let at = self.shown.join(name);
        rustix::fs::fchmod(file, Mode::from_raw_mode(mode)).map_err(|e| io_err(&at, e))?;
        rustix::fs::fsync(file).map_err(|e| io_err(&at, e))?;
        rustix::fs::renameat(&self.fd, tmp, &self.fd, name).map_err(|e| io_err(&at, e))?;
        Ok(())
    }

    /// Removes `name` (a file or a symlink, never a folder); one already gone is fine.
    pub fn remove(&self, name: &str) -> Result<(), RootError> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io_err(&self.shown.join(name), e)),
        }
    }

    /// Makes the renames and removals in this folder durable.
    pub fn sync(&self) -> Result<(), RootError> {
        let fd = rustix::fs::openat(
            &self.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(&self.shown, e))?;
        rustix::fs::fsync(fd.as_fd()).map_err(|e| io_err(&self.shown, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fs_err as fs;
    use fs_err::os::unix::fs::symlink;

    #[test]
    fn links_resolve_inside_the_root_and_never_above_it() {
        let t = tempfile::tempdir().unwrap();
        let root_path = t.path().join("root");
        let outside = t.path().join("outside");
        fs::create_dir_all(root_path.join("real/etc")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        // An absolute link (to the host's /etc, outside a chroot), a relative one
        // that climbs past the root, and a link to a folder outside by full path.
        symlink("/real/etc", root_path.join("etc")).unwrap();
        symlink("../../../../..", root_path.join("up")).unwrap();
        symlink(&outside, root_path.join("away")).unwrap();
        let root = Root::open(&root_path).unwrap();

        let d = root.dir(&["etc"], false).unwrap().unwrap();
        assert_eq!(d.shown, root_path.join("real/etc"));
        let d = root.dir(&["up", "real"], false).unwrap().unwrap();
        assert_eq!(d.shown, root_path.join("real"));
        // `away` points at <tmp>/outside: inside the root that is <root>/<tmp>/outside,
        // made there when asked, and the real one is never touched.
        let d = root.dir(&["away", "sub"], true).unwrap().unwrap();
        let inside = root_path
            .join(outside.strip_prefix("/").unwrap())
            .join("sub");
        assert_eq!(d.shown, inside);
        assert!(inside.is_dir());
        assert!(!outside.join("sub").exists());
        let (f, tmp) = d.temp_for("x").unwrap();
        d.commit(&f, &tmp, "x", 0o640).unwrap();
        assert!(inside.join("x").is_file());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

        // A missing folder without `create`; a file where a folder must be; a loop.
        assert!(root.dir(&["nope"], false).unwrap().is_none());
        fs::write(root_path.join("file"), b"x").unwrap();
        assert!(matches!(
            root.dir(&["file", "x"], true),
            Err(RootError::NotAFolder { .. })
        ));
        symlink("loop", root_path.join("loop")).unwrap();
        assert!(matches!(
            root.dir(&["loop"], false),
            Err(RootError::Loop { .. })
        ));
        // The last component is looked at, never followed.
        let d = root.dir(&[], false).unwrap().unwrap();
        assert_eq!(d.entry("etc").unwrap(), Entry::Symlink);
        assert_eq!(d.entry("real").unwrap(), Entry::Folder);
        assert!(matches!(
            d.entry("file").unwrap(),
            Entry::File { size: 1, .. }
        ));
        assert_eq!(d.entry("none").unwrap(), Entry::Missing);
        // Replacing a symlink replaces the link, not what it points to.
        fs::write(outside.join("target"), b"keep").unwrap();
        symlink(outside.join("target"), root_path.join("link")).unwrap();
        let (f, tmp) = d.temp_for("link").unwrap();
        d.commit(&f, &tmp, "link", 0o644).unwrap();
        assert_eq!(fs::read(outside.join("target")).unwrap(), b"keep");
        assert!(fs::symlink_metadata(root_path.join("link"))
            .unwrap()
            .is_file());
    }

    #[test]
    fn temporary_files_are_ours_and_a_sweep_removes_only_the_dead_ones() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let d = root.dir(&["etc"], true).unwrap().unwrap();
        let (live, live_name) = d.temp_for("k3s.yaml").unwrap();
        assert_eq!(
            crate::io::temp::owner(&live_name),
            Some(std::process::id()),
            "{live_name}"
        );
        // A killed import's (a pid no process has), its link, and a file of the
        // host's with a name like ours but not ours.
        let dead = format!(".gapbundle.{}.k3s-yaml.abcd.tmp", 4_194_304 + 9);
        fs::write(t.path().join("etc").join(&dead), b"half").unwrap();
        let dead_link = format!(".gapbundle.{}.x.abcd.tmp", 4_194_304 + 9);
        symlink("/etc/passwd", t.path().join("etc").join(&dead_link)).unwrap();
        fs::write(t.path().join("etc/.k3s.yaml.tmp"), b"keep").unwrap();
        let mut removed = d.sweep();
        removed.sort();
        let mut want = vec![dead, dead_link];
        want.sort();
        assert_eq!(removed, want);
        assert!(t.path().join("etc").join(&live_name).exists());
        assert!(t.path().join("etc/.k3s.yaml.tmp").exists());
        drop(live);
    }

    /// A staging folder's files are closed: its own lock keeps another import's
    /// sweep from it and from them, while a killed import's staging folder (a dead
    /// pid, nobody holding its lock) goes with its files. One from a live pid
    /// elsewhere (a dead pid here, its lock held) stays, and so does a dead one
    /// with a folder in it: nothing below it is followed or removed.
    #[test]
    fn a_locked_staging_folder_is_never_swept_and_a_dead_one_goes_whole() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        let d = root.dir(&["srv"], true).unwrap().unwrap();
        let staging = d.temp_folder("files").unwrap();
        let live_name = staging.shown.file_name().unwrap().to_owned();
        assert_eq!(
            crate::io::temp::owner(live_name.to_str().unwrap()),
            Some(std::process::id())
        );
        let (f, tmp) = staging.temp_for("a").unwrap();
        drop(f); // closed: its own lock is gone, the folder's holds
        let srv = t.path().join("srv");
        let dead_pid = 4_194_304 + 11;
        let dead = format!(".gapbundle.{dead_pid}.files.abcd.tmp");
        fs::create_dir_all(srv.join(&dead)).unwrap();
        fs::write(srv.join(&dead).join(".gapbundle.1.a.x.tmp"), b"half").unwrap();
        symlink("/etc", srv.join(&dead).join("link")).unwrap();
        let held = format!(".gapbundle.{dead_pid}.files.held.tmp");
        fs::create_dir_all(srv.join(&held)).unwrap();
        let hold = fs::File::open(srv.join(&held)).unwrap();
        assert!(crate::io::temp::unlocked(&hold));
        let nested = format!(".gapbundle.{dead_pid}.files.nested.tmp");
        fs::create_dir_all(srv.join(&nested).join("sub")).unwrap();

        // Another import's sweep, through a handle of its own.
        let other = Root::open(t.path()).unwrap();
        let removed = other.dir(&["srv"], false).unwrap().unwrap().sweep();
        assert_eq!(removed, vec![dead.clone()]);
        assert!(!srv.join(&dead).exists());
        assert!(Path::new("/etc").is_dir(), "the link was not followed");
        assert!(srv.join(&live_name).join(&tmp).is_file());
        assert!(srv.join(&held).is_dir() && srv.join(&nested).join("sub").is_dir());

        // Moved out, then removed with what is left in it.
        staging.rename_to(&tmp, &d, "a").unwrap();
        assert!(srv.join("a").is_file());
        let (f, _) = staging.temp_for("b").unwrap();
        drop(f);
        drop(staging);
        d.remove_folder(live_name.to_str().unwrap()).unwrap();
        assert!(!srv.join(&live_name).exists());
        drop(hold);
    }
}
