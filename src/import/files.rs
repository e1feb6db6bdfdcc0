//! `file` objects onto the host, below `--root` (default `/`).
//!
//! Each file is installed at the path it is named by, inside the root as a chroot
//! would see it ([`crate::io::root`]): symlinks on the way are resolved inside the
//! root, `..` never climbs above it, and nothing is ever written outside it. Its
//! bytes stream into a temporary file in the target's own folder (missing folders
//! are made, mode 0755) while the bundle is verified; only once every blob of the
//! bundle verified does each file get its mode, reach the disk (fsync) and take its
//! name with one rename, so a file is either old or new, never cut short, and a
//! damaged bundle installs nothing. A file that is already there with the same
//! bytes and mode is left alone, so a second import writes nothing. A target that
//! is a folder (or a device, socket or pipe) on the host is refused before
//! anything is written; one that is a symlink is replaced by the file (the link is
//! never followed).
//!
//! What may be a target is the format's rule (format.md section 15): the manifest
//! reader refuses a bundle with a target that is not an absolute plain path (a
//! `..`, an empty component) before any target is even planned.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::report::{FilesReport, TargetReport};
use super::{Target, TargetPlan};
use crate::bundle::digest::hash_reader;
use crate::bundle::manifest::BlobEntry;
use crate::bundle::meta::target_components;
use crate::bundle::reader::Head;
use crate::bundle::receipt::{FileRecord, Section};
use crate::bundle::Digest;
use crate::io::root::{Dir, Entry, Root};
use crate::progress::Progress;

/// One `file` object of the bundle.
#[derive(Debug, Clone)]
struct Wanted {
    target: String,
    digest: Digest,
    size: u64,
    mode: u32,
}

impl Wanted {
    /// The folders above the file and its name, inside the root.
    fn split(&self) -> (Vec<&str>, &str) {
        let mut c = target_components(&self.target).expect("checked when the manifest was read");
        let name = c.pop().expect("a target has a name");
        (c, name)
    }
}

/// A file being written under its temporary name.
struct Staged {
    index: usize,
    dir: Dir,
    file: File,
    tmp: String,
}

/// The files target.
pub struct Files {
    root: Root,
    wanted: Vec<Wanted>,
    /// Indices of the files to write (new or changed).
    todo: BTreeSet<usize>,
    /// The blob being received, into each file that has it.
    receiving: Vec<Staged>,
    /// Verified, waiting for `finish` to give them their names.
    staged: Vec<Staged>,
    /// Folders swept of killed imports' temporary files, as shown.
    swept: BTreeSet<PathBuf>,
    written: u64,
}

/// The files target for `head`'s `file` objects, installing below `root`, or
/// `None` when the bundle has none.
pub fn target(head: &Head, root: &Path) -> Result<Option<Box<dyn Target>>> {
    let wanted: Vec<Wanted> = head
        .manifest
        .files()
        .map(|(o, m)| Wanted {
            target: o.name.clone(),
            digest: o.digest,
            size: o.size,
            mode: m.mode_bits(),
        })
        .collect();
    if wanted.is_empty() {
        return Ok(None);
    }
    let root = Root::open(root).with_context(|| {
        format!(
            "the root folder for the bundle's files, {} (--root DIR), cannot be opened",
            root.display()
        )
    })?;
    Ok(Some(Box::new(Files {
        root,
        wanted,
        todo: BTreeSet::new(),
        receiving: Vec::new(),
        staged: Vec::new(),
        swept: BTreeSet::new(),
        written: 0,
    })))
}

impl Files {
    /// Whether the file `w` is already there, bytes and mode. A folder there is
    /// an error: a file cannot replace it.
    fn present(&self, w: &Wanted) -> Result<bool> {
        let (dirs, name) = w.split();
        let Some(dir) = self.root.dir(&dirs, false)? else {
            return Ok(false);
        };
        match dir.entry(name)? {
            Entry::Folder => Err(anyhow::anyhow!(
                "{} is a folder on this host, and the bundle installs a file there ({}): move the folder away, or import into another --root",
                dir.shown.join(name).display(),
                w.target
            )),
            Entry::Other => Err(anyhow::anyhow!(
                "{} is a device, socket or pipe on this host, and the bundle installs a file there ({}): refusing to replace it",
                dir.shown.join(name).display(),
                w.target
            )),
            Entry::File { size, mode } if size == w.size && mode == w.mode => {
                let f = dir.open_file(name)?;
                let (d, n) = hash_reader(f)
                    .with_context(|| format!("reading {}", dir.shown.join(name).display()))?;
                Ok(d == w.digest && n == w.size)
            }
            _ => Ok(false),
        }
    }

    /// Sweeps `dir` of the temporary files a killed import left there, once per
    /// folder and import.
    fn sweep(&mut self, dir: &Dir) {
        if self.swept.insert(dir.shown.clone()) {
            dir.sweep();
        }
    }

    /// Removes the temporary files of an import that did not finish.
    fn discard(&mut self) {
        for s in self.receiving.drain(..).chain(self.staged.drain(..)) {
            let _ = s.dir.remove(&s.tmp);
        }
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        self.discard();
    }
}

fn to_io(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Target for Files {
    fn describe(&self) -> String {
        format!("files below {}", self.root.path().display())
    }

    fn plan(&mut self, head: &Head) -> Result<TargetPlan> {
        let mut plan = TargetPlan::default();
        self.todo.clear();
        for (i, w) in self.wanted.iter().enumerate() {
            if self.present(w)? {
                plan.present_objects.push(w.target.clone());
                continue;
            }
            plan.new_objects.push(w.target.clone());
            self.todo.insert(i);
            match head.manifest.blob(&w.digest) {
                Some(b) if b.offset.is_some() => {
                    plan.needed.insert(w.digest);
                }
                _ => {
                    plan.missing.insert(w.digest);
                }
            }
            plan.bytes_to_write += w.size;
        }
        if plan.bytes_to_write > 0 {
            crate::io::space::ensure(
                self.root.path(),
                plan.bytes_to_write,
                "the root folder for the bundle's files",
                "make room there or give another --root",
            )?;
        }
        Ok(plan)
    }

    fn begin(&mut self, blob: &BlobEntry) -> io::Result<()> {
        let mine: Vec<usize> = self
            .todo
            .iter()
            .copied()
            .filter(|i| self.wanted[*i].digest == blob.digest)
            .collect();
        for index in mine {
            let w = self.wanted[index].clone();
            let (dirs, name) = w.split();
            let dir = self
                .root
                .dir(&dirs, true)
                .map_err(to_io)?
                .ok_or_else(|| io::Error::other("a created folder is there"))?;
            self.sweep(&dir);
            if dir.entry(name).map_err(to_io)? == Entry::Folder {
                return Err(io::Error::other(format!(
                    "{} is a folder now, and the bundle installs a file there",
                    dir.shown.join(name).display()
                )));
            }
            let (file, tmp) = dir.temp_for(name).map_err(to_io)?;
            self.receiving.push(Staged {
                index,
                dir,
                file,
                tmp,
            });
        }
        Ok(())
    }

    fn write(&mut self, _blob: &BlobEntry, chunk: &[u8]) -> io::Result<()> {
        for s in &mut self.receiving {
            s.file.write_all(chunk)?;
        }
        self.written += (chunk.len() * self.receiving.len()) as u64;
        Ok(())
    }

    fn commit(&mut self, _blob: &BlobEntry) -> io::Result<()> {
        self.staged.append(&mut self.receiving);
        Ok(())
    }

    fn finish(&mut self, _head: &Head, _progress: &Progress) -> Result<TargetReport> {
        let mut written = Vec::new();
        let mut done: Vec<Staged> = Vec::new();
        while let Some(s) = self.staged.pop() {
            let w = &self.wanted[s.index];
            let (_, name) = w.split();
            if let Err(e) = s.dir.commit(&s.file, &s.tmp, name, w.mode) {
                self.staged.push(s);
                return Err(e.into());
            }
            written.push(w.target.clone());
            done.push(s);
        }
        // The renames survive a power cut once each folder is synced.
        let mut synced: Vec<&PathBuf> = Vec::new();
        for s in &done {
            if !synced.contains(&&s.dir.shown) {
                s.dir.sync()?;
                synced.push(&s.dir.shown);
            }
        }
        // A killed import's temporary files in a folder this one had nothing new
        // for (every file there present) go too.
        for i in 0..self.wanted.len() {
            let (dirs, _) = self.wanted[i].split();
            if let Ok(Some(dir)) = self.root.dir(&dirs, false) {
                self.sweep(&dir);
            }
        }
        written.sort();
        Ok(TargetReport::Files(FilesReport {
            root: self.root.path().to_path_buf(),
            written,
            present: self.wanted.len() - self.todo.len(),
            bytes_written: self.written,
        }))
    }

    fn receipt(&self, _head: &Head) -> Option<Section> {
        let mut files: Vec<FileRecord> = self
            .wanted
            .iter()
            .map(|w| FileRecord {
                target: w.target.clone(),
                digest: w.digest,
                mode: crate::bundle::meta::FileMeta::mode_string(w.mode),
            })
            .collect();
        files.sort();
        Some(Section::Files {
            root: crate::import::receipt_path(self.root.path()),
            files,
        })
    }
}
