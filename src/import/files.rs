//! `file` objects onto the host, below `--root` (default `/`).
//!
//! Each file is installed at the path it is named by, inside the root as a chroot
//! would see it ([`crate::io::root`]): symlinks on the way are resolved inside the
//! root, `..` never climbs above it, and nothing is ever written outside it. Its
//! bytes stream into a temporary file in a staging folder inside the target's own
//! folder (missing folders are made, mode 0755) while the bundle is verified; only
//! once every blob of the bundle verified does each file get its mode, reach the
//! disk (fsync) and take its name with one rename out of the staging folder, so a
//! file is either old or new, never cut short, and a damaged bundle installs
//! nothing. A file that is already there with the same bytes and mode is left
//! alone, so a second import writes nothing. A target that is a folder (or a
//! device, socket or pipe) on the host is refused before anything is written; one
//! that is a symlink is replaced by the file (the link is never followed).
//!
//! ## Why one staging folder per target folder
//!
//! A staged file must survive until `finish` renames it, and must not be taken by
//! another import's sweep of killed imports' leftovers ([`crate::io::temp`]): a
//! temporary name is swept once its pid runs no process and nobody holds its
//! lock. Locking each staged file kept it, and its folder's handle, open until the
//! end: two open files per file, so a bundle of 600 files failed at the usual limit
//! of 1,024 open files, and one of 20,000 at any limit. So the lock is taken once
//! per target folder instead, on a staging folder made there for this import
//! (`.gapbundle.<pid>.files.<random>.tmp`, mode 0700, [`Dir::temp_folder`]): a
//! sweep never removes a locked folder, nor anything in it, so each staged file is
//! closed as soon as its blob verified, and the import holds two handles per
//! target folder (the folder and its staging folder), whatever the number of
//! files; the plan checks that many fit under the open-file limit before anything
//! is written, raising the soft limit up to the hard one if it must. The staging
//! folder sits in the target's own folder, so the rename never crosses a file
//! system (one staging folder for the whole root would, where `/var` or `/srv` is
//! a mount of its own). A killed import leaves its staging folders; the next
//! import sweeps each folder it installs into, and the staging folders go with
//! what is in them.
//!
//! A blob that several files share streams into the first of them; the others are
//! copied from it once it verified, one at a time (`copy_file_range`, a reflink
//! where the file system has them), so they hold no handle while the blob streams.
//! The files waiting for each blob are found through a map from digest, so
//! beginning a blob costs the same whatever the number of files.
//!
//! What may be a target is the format's rule (format.md section 15): the manifest
//! reader refuses a bundle with a target that is not an absolute plain path (a
//! `..`, an empty component) before any target is even planned.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
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

/// Open files the import may need besides those it has open when the files
/// target is planned and the files target's own (a volume of the bundle, the
/// other targets' temporary files, the subprocesses' pipes).
const OTHER_OPEN_FILES: u64 = 64;

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

    /// The target's folder, as the bundle names it: what files share a staging
    /// folder by.
    fn folder(&self) -> &str {
        self.target.rsplit_once('/').map_or("", |(f, _)| f)
    }
}

/// A target folder this import writes to, and its staging folder there, locked
/// for as long as this lives.
struct Stage {
    dir: Dir,
    staging: Dir,
    /// The staging folder's name in `dir`.
    name: String,
}

/// A file staged under its temporary name in its folder's staging folder.
struct Staged {
    index: usize,
    stage: usize,
    tmp: String,
}

/// The blob being received: the file it streams into, and the other files that
/// have the same bytes, copied from it once it verified.
struct Receiving {
    file: File,
    first: Staged,
    others: Vec<usize>,
}

/// The files target.
pub struct Files {
    root: Root,
    wanted: Vec<Wanted>,
    /// Indices of the files to write (new or changed).
    todo: BTreeSet<usize>,
    /// The files to write, by the digest of their bytes.
    by_digest: HashMap<Digest, Vec<usize>>,
    /// The target folders written to, and their staging folders.
    stages: Vec<Stage>,
    /// Index in `stages` by [`Wanted::folder`].
    stage_of: HashMap<String, usize>,
    /// The blob being received.
    receiving: Option<Receiving>,
    /// Verified and closed, waiting for `finish` to give them their names.
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
        by_digest: HashMap::new(),
        stages: Vec::new(),
        stage_of: HashMap::new(),
        receiving: None,
        staged: Vec::new(),
        swept: BTreeSet::new(),
        written: 0,
    })))
}

/// Makes sure this process may hold `needed` more open files than it does by
/// default: raises its soft limit towards the hard one if it must, and says what
/// to do when even that is too low.
fn ensure_open_files(needed: u64, folders: usize) -> Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    // What is open now (the bundle, the other targets' connections).
    let open = fs_err::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let want = open + needed + OTHER_OPEN_FILES;
    let lim = getrlimit(Resource::Nofile);
    if lim.current.is_none_or(|c| c >= want) {
        return Ok(());
    }
    if lim.maximum.is_none_or(|m| m >= want) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum: lim.maximum,
            },
        )
        .with_context(|| format!("raising the open-file limit to {want}"))?;
        return Ok(());
    }
    Err(anyhow::anyhow!(
        "the bundle installs files into {folders} folder(s), and the import holds 2 open files per folder until the end ({want} with what else it needs), but this process may open only {} (ulimit -n): raise the limit (ulimit -Hn {want}, or LimitNOFILE= for a service) and import again",
        lim.maximum.unwrap_or(0)
    ))
}

impl Files {
    /// Whether the file `w` is already there, bytes and mode. A folder there is
    /// an error: a file cannot replace it.
    ///
    /// `last` is the folder the call before looked in (its target folder, as the
    /// bundle names it, and what it resolved to): files come sorted by target, so
    /// the next file is most often in the same folder, which is then not resolved
    /// again, one open per component (a third of a rerun's system calls at 20,000
    /// files). One folder at most is kept open.
    fn present<'w>(
        &self,
        w: &'w Wanted,
        last: &mut Option<(&'w str, Option<Dir>)>,
    ) -> Result<bool> {
        let (dirs, name) = w.split();
        if last.as_ref().is_none_or(|(f, _)| *f != w.folder()) {
            *last = None;
            *last = Some((w.folder(), self.root.dir(&dirs, false)?));
        }
        let Some((_, Some(dir))) = last.as_ref() else {
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

    /// The stage of file `index`'s folder: the folder made if it is missing, swept,
    /// and a staging folder made in it, the first time one of its files is staged.
    /// Refuses a target that has become a folder since the plan.
    fn stage(&mut self, index: usize) -> io::Result<usize> {
        let w = self.wanted[index].clone();
        let (dirs, name) = w.split();
        let stage = match self.stage_of.get(w.folder()) {
            Some(&s) => s,
            None => {
                let dir = self
                    .root
                    .dir(&dirs, true)
                    .map_err(to_io)?
                    .ok_or_else(|| io::Error::other("a created folder is there"))?;
                let key = w.folder().to_string();
                self.sweep(&dir);
                let staging = dir.temp_folder("files").map_err(to_io)?;
                let name = staging
                    .shown
                    .file_name()
                    .and_then(|n| n.to_str())
                    .expect("a temporary name")
                    .to_string();
                self.stages.push(Stage { dir, staging, name });
                self.stage_of.insert(key, self.stages.len() - 1);
                self.stages.len() - 1
            }
        };
        let dir = &self.stages[stage].dir;
        if dir.entry(name).map_err(to_io)? == Entry::Folder {
            return Err(io::Error::other(format!(
                "{} is a folder now, and the bundle installs a file there",
                dir.shown.join(name).display()
            )));
        }
        Ok(stage)
    }

    /// A new temporary file for file `index` in its stage's staging folder.
    fn create(&mut self, index: usize) -> io::Result<(File, Staged)> {
        let stage = self.stage(index)?;
        let (_, name) = self.wanted[index].split();
        let (file, tmp) = self.stages[stage].staging.temp_for(name).map_err(to_io)?;
        Ok((file, Staged { index, stage, tmp }))
    }

    /// Removes the temporary files and staging folders of an import that did not
    /// finish.
    fn discard(&mut self) {
        self.receiving = None;
        self.staged.clear();
        for s in self.stages.drain(..) {
            let _ = s.dir.remove_folder(&s.name);
        }
        self.stage_of.clear();
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
        self.by_digest.clear();
        let mut folders: BTreeSet<&str> = BTreeSet::new();
        // Once, not a search of the blob list per file (`Manifest::blob`): 20,000
        // files were 200 million digest comparisons.
        let blobs: HashMap<&Digest, &BlobEntry> =
            head.manifest.blobs.iter().map(|b| (&b.digest, b)).collect();
        let mut last = None;
        for (i, w) in self.wanted.iter().enumerate() {
            if self.present(w, &mut last)? {
                plan.present_objects.push(w.target.clone());
                continue;
            }
            plan.new_objects.push(w.target.clone());
            self.todo.insert(i);
            self.by_digest.entry(w.digest).or_default().push(i);
            folders.insert(w.folder());
            match blobs.get(&w.digest) {
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
        if !folders.is_empty() {
            // Each stage's two handles; the file a blob streams into, and at its
            // commit that file read again and one copy of it.
            ensure_open_files(2 * folders.len() as u64 + 3, folders.len())?;
        }
        Ok(plan)
    }

    fn begin(&mut self, blob: &BlobEntry) -> io::Result<()> {
        self.receiving = None;
        let Some(mine) = self.by_digest.get(&blob.digest).cloned() else {
            return Ok(());
        };
        let Some((&first, others)) = mine.split_first() else {
            return Ok(());
        };
        let (file, first) = self.create(first)?;
        // Every folder made and checked now, not once the blob has streamed.
        for &i in others {
            self.stage(i)?;
        }
        self.receiving = Some(Receiving {
            file,
            first,
            others: others.to_vec(),
        });
        Ok(())
    }

    fn write(&mut self, _blob: &BlobEntry, chunk: &[u8]) -> io::Result<()> {
        if let Some(r) = &mut self.receiving {
            r.file.write_all(chunk)?;
            self.written += chunk.len() as u64;
        }
        Ok(())
    }

    fn commit(&mut self, _blob: &BlobEntry) -> io::Result<()> {
        let Some(r) = self.receiving.take() else {
            return Ok(());
        };
        drop(r.file);
        let first = r.first;
        if r.others.is_empty() {
            self.staged.push(first);
            return Ok(());
        }
        let source = self.stages[first.stage]
            .staging
            .open_file(&first.tmp)
            .map_err(to_io)?;
        self.staged.push(first);
        for i in r.others {
            let (mut file, staged) = self.create(i)?;
            let mut from = &source;
            io::Seek::rewind(&mut from)?;
            self.written += io::copy(&mut from, &mut file).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "copying {} for {}: {e}",
                        self.wanted[i].digest, self.wanted[i].target
                    ),
                )
            })?;
            self.staged.push(staged);
        }
        Ok(())
    }

    fn finish(&mut self, _head: &Head, _progress: &Progress) -> Result<TargetReport> {
        let mut written = Vec::with_capacity(self.staged.len());
        for s in std::mem::take(&mut self.staged) {
            let w = &self.wanted[s.index];
            let (_, name) = w.split();
            let stage = &self.stages[s.stage];
            let at = stage.dir.shown.join(name);
            // Its mode, and its bytes on the disk, before it takes its name.
            let f = stage.staging.open_file(&s.tmp)?;
            f.set_permissions(std::fs::Permissions::from_mode(w.mode))
                .and_then(|()| f.sync_all())
                .with_context(|| format!("installing {}", at.display()))?;
            drop(f);
            stage.staging.rename_to(&s.tmp, &stage.dir, name)?;
            written.push(w.target.clone());
        }
        // The staging folders go, and the renames and removals survive a power
        // cut once each folder is synced.
        let mut synced: BTreeSet<&Path> = BTreeSet::new();
        for s in &self.stages {
            s.dir.remove_folder(&s.name)?;
            if synced.insert(&s.dir.shown) {
                s.dir.sync()?;
            }
        }
        self.stages.clear();
        self.stage_of.clear();
        // A killed import's temporary files in a folder this one had nothing new
        // for (every file there present) go too; one folder open at a time.
        let mut folders: HashMap<&str, usize> = HashMap::new();
        for (i, w) in self.wanted.iter().enumerate() {
            folders.entry(w.folder()).or_insert(i);
        }
        let firsts: Vec<usize> = folders.into_values().collect();
        for i in firsts {
            if let Ok(Some(dir)) = self.root.dir(&self.wanted[i].split().0, false) {
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
