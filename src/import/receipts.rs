//! The state folder (`--state-dir`, default `/var/lib/gapbundle`): import receipts
//! on disk, and doing what taking a bundle away means ([`crate::bundle::receipt`]
//! decides what; this does it).
//!
//! `receipts/<name>.json` is the receipt of the bundle imported last under a name
//! (the name written as [`file_stem`] makes it); `receipts/<name>.importing.json`
//! is written, atomically, before an import touches any target, and renamed over
//! the first when the import ends. A killed import leaves the second: the next
//! import or removal of that name reads both, so what a half-done import put on a
//! target is taken away like the rest. One import, removal or listing holds
//! `lock` (an advisory `flock`) at a time, so two never interleave.
//!
//! Taking away is careful: an image record is unpinned or deleted only while it
//! still names the image the receipt recorded, a file below a root is removed only
//! while it still has the bytes installed (one changed by hand stays, with a
//! warning), a GC root only while it is a symlink, a manifest only while it is a
//! regular file with a name gapbundle gives, a staged archive only while it is this
//! bundle's. Each step is idempotent: one interrupted is finished by a rerun.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fs_err as fs;

use crate::bundle::canonical;
use crate::bundle::receipt::{file_stem, Receipt, Retire, RECEIPT_MAJOR};
use crate::bundle::Digest;
use crate::io::root::{Entry, Root};
use crate::k8s::names::is_file_name;
use crate::progress::Progress;

const RECEIPTS: &str = "receipts";
const PENDING: &str = ".importing.json";

/// The state folder, locked for as long as this is held.
pub struct State {
    dir: PathBuf,
    _lock: fs::File,
}

/// A receipt read from the state folder (`complete` false: the receipt of an
/// import that has not finished).
#[derive(Debug, Clone)]
pub struct Stored {
    /// The file.
    pub path: PathBuf,
    /// The receipt.
    pub receipt: Receipt,
}

impl State {
    /// Opens (making it if need be) and locks the state folder `dir`.
    pub fn open(dir: &Path) -> Result<State> {
        let receipts = dir.join(RECEIPTS);
        fs::create_dir_all(&receipts).with_context(|| {
            format!(
                "cannot make the state folder {} for import receipts: give another with --state-dir DIR (or GAPBUNDLE_STATE_DIR)",
                dir.display()
            )
        })?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("cannot lock {}", dir.join("lock").display()))?;
        // What a receipt write killed half-way left (its temporary file).
        crate::io::temp::sweep(&receipts);
        Ok(State {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// Every receipt in the folder, complete and pending, sorted by file name.
    pub fn receipts(&self) -> Result<Vec<Stored>> {
        read_all(&self.dir)
    }

    /// Writes the receipt of an import about to start (`complete` false).
    pub fn write_pending(&self, r: &Receipt) -> Result<()> {
        self.write(&self.path(&r.name, true), r)
    }

    /// Writes the receipt of a finished import and drops the pending one.
    pub fn write_complete(&self, r: &Receipt) -> Result<()> {
        self.write(&self.path(&r.name, false), r)?;
        remove_if_there(&self.path(&r.name, true))
    }

    /// Forgets the bundle `name` (both its receipts).
    pub fn forget(&self, name: &str) -> Result<()> {
        remove_if_there(&self.path(name, false))?;
        remove_if_there(&self.path(name, true))
    }

    fn path(&self, name: &str, pending: bool) -> PathBuf {
        let stem = file_stem(name);
        self.dir.join(RECEIPTS).join(if pending {
            format!("{stem}{PENDING}")
        } else {
            format!("{stem}.json")
        })
    }

    fn write(&self, path: &Path, r: &Receipt) -> Result<()> {
        // Laid out as it is written: a receipt of 20,000 files is 3.6 MB.
        let written = crate::io::atomic::AtomicFile::create(path)
            .map_err(anyhow::Error::from)
            .and_then(|mut f| {
                canonical::to_writer_pretty(&mut f, r)?;
                f.write_all(b"\n")?;
                f.commit()?;
                Ok(())
            });
        written.with_context(|| format!("cannot write the import receipt {}", path.display()))?;
        // The rename survives a power cut once the folder is synced.
        if let Ok(d) = fs::File::open(self.dir.join(RECEIPTS)) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// The receipts in the state folder `dir` without locking or making it (for a
/// dry run, which changes nothing): none when it does not exist.
pub fn peek(dir: &Path) -> Result<Vec<Stored>> {
    if !dir.join(RECEIPTS).is_dir() {
        return Ok(Vec::new());
    }
    read_all(dir)
}

fn read_all(dir: &Path) -> Result<Vec<Stored>> {
    let folder = dir.join(RECEIPTS);
    let mut out = Vec::new();
    let mut names: Vec<PathBuf> = fs::read_dir(&folder)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
        })
        .collect();
    names.sort();
    for path in names {
        let bytes = fs::read(&path)?;
        let receipt: Receipt = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not an import receipt; move it out of the way (the bundle it was for is then no longer known to gapbundle)",
                path.display()
            )
        })?;
        let major = receipt.format_version.split('.').next().unwrap_or("");
        if major != RECEIPT_MAJOR.to_string() {
            anyhow::bail!(
                "{} is a receipt of format {}, which this gapbundle does not read: use a newer gapbundle",
                path.display(),
                receipt.format_version
            );
        }
        out.push(Stored { path, receipt });
    }
    Ok(out)
}

fn remove_if_there(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Does `actions` and returns what was done, one line each (a step that found
/// nothing to do, because it was done already or the thing changed hands, is not
/// listed; one that found something changed says so as a warning).
pub fn execute(actions: &[Retire], progress: &Progress) -> Result<Vec<String>> {
    let mut done = Vec::new();
    // Image records, per containerd and kind of change: one connection each.
    let mut images: BTreeMap<(String, String, bool), Vec<(String, Digest)>> = BTreeMap::new();
    for a in actions {
        if let Retire::Image {
            socket,
            namespace,
            reference,
            digest,
            delete,
        } = a
        {
            images
                .entry((socket.clone(), namespace.clone(), *delete))
                .or_default()
                .push((reference.clone(), *digest));
        }
    }
    for ((socket, namespace, delete), refs) in images {
        let changed =
            super::containerd::retire_images(Path::new(&socket), &namespace, &refs, delete)?;
        for r in changed {
            done.push(if delete {
                format!("deleted image {r}")
            } else {
                format!("unpinned image {r}")
            });
        }
    }
    for a in actions {
        match a {
            Retire::Image { .. } => {}
            Retire::Archive { path, digests } => {
                let p = Path::new(path);
                match super::k3s::staged_bundle_digest(p) {
                    Some(d) if digests.contains(&d) => {
                        fs::remove_file(p)?;
                        done.push(format!("removed archive {path}"));
                    }
                    Some(_) => {
                        progress.warn(format!("{path} holds another bundle now: left alone"))
                    }
                    None => {}
                }
            }
            Retire::GcRoot { path } => match fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => {
                    fs::remove_file(path)?;
                    done.push(format!("removed GC root {path}"));
                }
                Ok(_) => progress.warn(format!("{path} is not a symlink: left alone")),
                Err(_) => {}
            },
            Retire::Manifest { folder, file } => {
                if !is_file_name(file) {
                    continue;
                }
                let p = Path::new(folder).join(file);
                match fs::symlink_metadata(&p) {
                    Ok(m) if m.is_file() => {
                        fs::remove_file(&p)?;
                        done.push(format!(
                            "removed manifest {} (K3s deletes what it deployed from it)",
                            p.display()
                        ));
                    }
                    _ => {}
                }
                // The bundle's folder goes once nothing is left in it.
                let _ = fs::remove_dir(folder);
            }
            Retire::File {
                root,
                target,
                digest,
            } => {
                if let Some(line) = remove_file(root, target, digest, progress)? {
                    done.push(line);
                }
            }
            Retire::Left { what } => done.push(format!("left {what}")),
        }
    }
    Ok(done)
}

/// Removes `target` below `root` (resolved as the install resolved it) when it is
/// still a regular file with `digest`.
fn remove_file(
    root: &str,
    target: &str,
    digest: &Digest,
    progress: &Progress,
) -> Result<Option<String>> {
    let Ok(mut parts) = crate::bundle::meta::target_components(target) else {
        return Ok(None);
    };
    let Some(name) = parts.pop() else {
        return Ok(None);
    };
    let root = match Root::open(Path::new(root)) {
        Ok(r) => r,
        Err(_) => return Ok(None),
    };
    let Some(dir) = root.dir(&parts, false)? else {
        return Ok(None);
    };
    let shown = dir.shown.join(name);
    match dir.entry(name)? {
        Entry::File { .. } => {
            let (d, _) = crate::bundle::digest::hash_reader(dir.open_file(name)?)?;
            if d != *digest {
                progress.warn(format!(
                    "{} changed since it was installed: left alone",
                    shown.display()
                ));
                return Ok(None);
            }
            dir.remove(name)?;
            dir.sync()?;
            Ok(Some(format!("removed file {}", shown.display())))
        }
        Entry::Missing => Ok(None),
        _ => {
            progress.warn(format!(
                "{} is no longer the file installed there: left alone",
                shown.display()
            ));
            Ok(None)
        }
    }
}
