//! K3s's folders: the staged image archive and the auto-deploy manifests, or
//! `kubectl apply`.
//!
//! - **Staged images** (`--staged`): one OCI archive per bundle,
//!   `<k3s-root>/agent/images/<bundle-name>.tar`, which K3s imports into its
//!   containerd when it starts (the same importer `ctr images import` uses). It is an
//!   OCI image layout in a tar: `oci-layout`, `index.json` (each image named by
//!   `io.containerd.image.name` under its CRI name, [`Reference::cri_name`]), then `blobs/sha256/<hex>`. The
//!   blobs are written as they stream out of the bundle and the file only gets its
//!   name after the last one verified. `index.json` comes first and carries the
//!   bundle digest (`io.gapbundle.bundle.digest`), so a rerun recognises an archive
//!   it already wrote from its first kilobytes and leaves it alone.
//! - **Manifests**: the documents of each target file (object meta `file`), in
//!   `order`, joined with `---` lines, into `<k3s-root>/server/manifests/<bundle-name>/`
//!   where K3s's deploy controller applies them; each file appears whole (temp +
//!   rename). A zstd-stored document is decoded as soon as its blob verified, into a
//!   private staging folder, through [`crate::bundle::decode::decode_checked`]:
//!   never more than its declared content size, and only a document of exactly its
//!   declared digest is ever put into a file. A file whose bytes already match is
//!   left alone. Then the files an
//!   earlier version of the bundle wrote there and this one no longer has are
//!   removed, so the folder mirrors the bundle imported last (K3s deletes what it
//!   deployed from a removed file). Only regular files named as gapbundle names them
//!   ([`is_file_name`]) are removed; anything else in the folder, and everything
//!   outside it, is left alone. With `--apply`, the same files are passed to
//!   `kubectl apply -f` instead, and nothing is removed.
//!
//! Both folders are named after the bundle as it is: a bundle whose name is not a
//! valid bundle name ([`valid_bundle_name`]) is refused before anything is written,
//! so two bundles share a folder or an archive only when they share a name.
//! Temporary files and folders here carry [`crate::io::temp`]'s names, and each
//! target sweeps its folder of those a killed import left before it writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use fs_err as fs;
use serde_json::{json, Value};

use super::report::{ManifestsReport, StagedReport, TargetReport};
use super::{Target, TargetPlan};
use crate::bundle::canonical;
use crate::bundle::decode::decode_checked;
use crate::bundle::inventory::BundleSeen;
use crate::bundle::layout::{header, write_padding};
use crate::bundle::manifest::{valid_bundle_name, BlobEntry, ContentInfo, Encoding, Kind, Object};
use crate::bundle::meta::K8sManifestMeta;
use crate::bundle::oci::{index_bytes, oci_layout_bytes};
use crate::bundle::reader::Head;
use crate::bundle::receipt::Section;
use crate::bundle::Digest;
use crate::error::{BundleFailure, DeltaFailure};
use crate::io::atomic::{sweep_beside, AtomicFile};
use crate::io::process::Cmd;
use crate::io::temp::{self, TempFolder};
use crate::k8s::names::is_file_name;
use crate::oci::Reference;
use crate::progress::Progress;
use crate::text::escaped;

/// Annotation on the staged archive's index naming the bundle it came from.
pub const BUNDLE_ANNOTATION: &str = "io.gapbundle.bundle.digest";

/// The bundle's name, which names its folder and its archive on the target; a
/// [`BundleFailure`] (the bundle is refused, exit code 3) when it is not a valid
/// bundle name.
pub fn folder_name(head: &Head) -> Result<&str> {
    let name = head.manifest.name.as_str();
    if !valid_bundle_name(name) {
        return Err(BundleFailure(format!(
            "the bundle's name `{}` is not a bundle name (1 to {} letters, digits, `.`, `_` and `-`, starting with a letter or digit), and it would name a folder and a file here; the bundle is refused before anything is written: ask whoever made it to create it again with a valid `name:`",
            crate::text::shortened(name, 100),
            crate::bundle::manifest::MAX_NAME_LEN
        ))
        .into());
    }
    Ok(name)
}

/// The name kubelet asks CRI for, for an image named `name` in the bundle (names
/// were checked by [`super::images::checked`] before any target runs).
fn cri_name(name: &str) -> String {
    Reference::parse(name).map_or_else(|_| name.to_string(), |r| r.cri_name())
}

/// The `index.json` of the staged archive.
fn archive_index(head: &Head) -> Vec<u8> {
    let sizes: HashMap<Digest, u64> = head
        .manifest
        .blobs
        .iter()
        .map(|b| (b.digest, b.size))
        .collect();
    // Named as kubelet asks CRI for them (`redis` → `docker.io/library/redis:latest`):
    // K3s's importer registers `io.containerd.image.name` as it is, without the
    // normalisation the CRI plugin applies to what kubelet asks for.
    let objects: Vec<Object> = head
        .manifest
        .objects
        .iter()
        .map(|o| {
            let mut o = o.clone();
            if o.kind == Kind::Image {
                o.name = cri_name(&o.name);
            }
            o
        })
        .collect();
    let bytes = index_bytes(&objects, |o| {
        sizes.get(&o.digest).copied().unwrap_or(o.size)
    });
    let mut v: Value = serde_json::from_slice(&bytes).expect("our own JSON");
    v["annotations"] = json!({ BUNDLE_ANNOTATION: head.digest.to_string() });
    canonical::to_vec(&v).expect("no floats")
}

/// Writes the image archive K3s imports at start.
pub struct StagedImages {
    path: PathBuf,
    out: Option<AtomicFile>,
    mtime: u64,
    present: bool,
    written: u64,
    images: Vec<String>,
    index: Vec<u8>,
    len: u64,
}

impl StagedImages {
    /// Where the archive of `head` goes under `k3s_root`.
    pub fn path_for(k3s_root: &Path, head: &Head) -> Result<PathBuf> {
        Ok(k3s_root
            .join("agent/images")
            .join(format!("{}.tar", folder_name(head)?)))
    }

    /// The archive for `head` under `k3s_root`.
    pub fn new(k3s_root: &Path, head: &Head) -> Result<Self> {
        let path = Self::path_for(k3s_root, head)?;
        Ok(Self {
            path,
            out: None,
            mtime: head.manifest.created,
            present: false,
            written: 0,
            index: archive_index(head),
            len: archive_len(head),
            images: head
                .manifest
                .objects
                .iter()
                .filter(|o| o.kind == Kind::Image)
                .map(|o| cri_name(&o.name))
                .collect(),
        })
    }

    /// Whether the archive at `path` was written from this bundle (its first entries).
    fn already_written(&self) -> bool {
        let Ok(f) = fs::File::open(&self.path) else {
            return false;
        };
        let mut r = io::BufReader::new(f).take(1 << 20);
        let mut buf = Vec::new();
        if r.read_to_end(&mut buf).is_err() {
            return false;
        }
        let want = &self.index;
        // entry 1: oci-layout (512 + 512), entry 2: index.json.
        let start = 1024 + 512;
        buf.get(start..start + want.len()) == Some(&want[..])
            && fs::metadata(&self.path).map(|m| m.len()).ok() == Some(self.len)
    }

    fn open(&mut self) -> io::Result<&mut AtomicFile> {
        if self.out.is_none() {
            let dir = self.path.parent().expect("has a parent");
            fs::create_dir_all(dir)?;
            // A killed import's half archive (hundreds of MiB) goes first.
            sweep_beside(&self.path);
            let mut f = AtomicFile::create(&self.path)?;
            for (name, bytes) in [
                ("oci-layout", oci_layout_bytes()),
                ("index.json", self.index.clone()),
            ] {
                f.write_all(&header(name, bytes.len() as u64, self.mtime)?)?;
                f.write_all(&bytes)?;
                write_padding(&mut f, bytes.len() as u64)?;
            }
            self.out = Some(f);
        }
        Ok(self.out.as_mut().expect("just opened"))
    }
}

fn image_blobs(head: &Head) -> BTreeSet<Digest> {
    head.manifest
        .objects
        .iter()
        .filter(|o| o.kind == Kind::Image)
        .flat_map(|o| o.blobs.iter().copied())
        .collect()
}

/// Length of the staged archive for `head`.
fn archive_len(head: &Head) -> u64 {
    use crate::bundle::layout::entry_len;
    let needed = image_blobs(head);
    let blobs: u64 = head
        .manifest
        .blobs
        .iter()
        .filter(|b| needed.contains(&b.digest))
        .map(|b| entry_len(b.size))
        .sum();
    entry_len(oci_layout_bytes().len() as u64)
        + entry_len(archive_index(head).len() as u64)
        + blobs
        + 1024
}

impl Target for StagedImages {
    fn describe(&self) -> String {
        format!("K3s image archive {}", self.path.display())
    }

    fn plan(&mut self, head: &Head) -> Result<TargetPlan> {
        let mut plan = TargetPlan::default();
        if self.already_written() {
            self.present = true;
            plan.present_objects = self.images.clone();
            return Ok(plan);
        }
        let wanted = image_blobs(head);
        let left_out = head
            .manifest
            .blobs
            .iter()
            .filter(|b| wanted.contains(&b.digest) && b.offset.is_none())
            .count();
        if left_out > 0 {
            // The archive is what K3s imports at start: it must hold every blob
            // itself, and the running containerd that might have them is not there.
            return Err(DeltaFailure(format!(
                "{} leaves out {left_out} image blob(s), and a staged archive ({}) must hold every blob: rebuild the full bundle first with `gapbundle patch BASE DELTA -o FULL` and stage that, or import the delta into a running containerd (without --staged)",
                head.manifest.name,
                self.path.display()
            ))
            .into());
        }
        for b in &head.manifest.blobs {
            if wanted.contains(&b.digest) {
                plan.needed.insert(b.digest);
            }
        }
        plan.bytes_to_write = self.len;
        plan.new_objects = self.images.clone();
        if let Some(dir) = self.path.parent() {
            crate::io::space::ensure(
                dir,
                self.len,
                "the K3s images folder",
                "make room there or give another --k3s-root",
            )?;
        }
        Ok(plan)
    }

    fn begin(&mut self, blob: &BlobEntry) -> io::Result<()> {
        let mtime = self.mtime;
        let f = self.open()?;
        f.write_all(&header(&blob.path(), blob.size, mtime)?)
    }

    fn write(&mut self, _blob: &BlobEntry, chunk: &[u8]) -> io::Result<()> {
        self.written += chunk.len() as u64;
        self.out
            .as_mut()
            .ok_or_else(|| io::Error::other("staged archive not opened"))?
            .write_all(chunk)
    }

    fn commit(&mut self, blob: &BlobEntry) -> io::Result<()> {
        let f = self
            .out
            .as_mut()
            .ok_or_else(|| io::Error::other("staged archive not opened"))?;
        write_padding(f, blob.size)
    }

    fn finish(&mut self, _head: &Head, _progress: &Progress) -> Result<TargetReport> {
        if self.present {
            return Ok(TargetReport::Staged(StagedReport {
                archive: self.path.clone(),
                written: false,
                bytes: None,
            }));
        }
        let path = self.path.clone();
        let f = self.open()?;
        f.write_all(&[0u8; 1024])?;
        let f = self.out.take().expect("open");
        f.commit()
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(TargetReport::Staged(StagedReport {
            archive: path,
            written: true,
            bytes: Some(self.len),
        }))
    }

    fn receipt(&self, _head: &Head) -> Option<Section> {
        let mut images = self.images.clone();
        images.sort();
        Some(Section::Staged {
            archive: crate::import::receipt_path(&self.path),
            images,
        })
    }
}

/// The bundles K3s's folders under `k3s_root` show were imported: each folder of
/// `server/manifests` that a bundle's manifests went to (by name), and each staged
/// archive in `agent/images` (with the bundle digest its `index.json` carries).
/// Folders that do not exist show none. (Import receipts, a later addition, will
/// say more.)
pub fn bundles_seen(k3s_root: &Path) -> Result<Vec<BundleSeen>> {
    let mut out = Vec::new();
    let manifests = k3s_root.join("server/manifests");
    if manifests.is_dir() {
        for e in fs::read_dir(&manifests)? {
            let e = e?;
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with('.') || !e.file_type()?.is_dir() {
                continue;
            }
            out.push(BundleSeen {
                seen_in: "k3s-manifests".into(),
                name,
                digest: None,
                version: None,
            });
        }
    }
    let images = k3s_root.join("agent/images");
    if images.is_dir() {
        for e in fs::read_dir(&images)? {
            let e = e?;
            let Some(name) = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".tar"))
                .map(str::to_owned)
            else {
                continue;
            };
            if !e.file_type()?.is_file() {
                continue;
            }
            if let Some(digest) = staged_bundle_digest(&e.path()) {
                out.push(BundleSeen {
                    seen_in: "k3s-staged".into(),
                    name,
                    digest: Some(digest),
                    version: None,
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The bundle digest in the `index.json` of a staged archive this importer wrote
/// (its second entry), or `None` for any other file.
pub fn staged_bundle_digest(path: &Path) -> Option<Digest> {
    use crate::bundle::layout::{parse_header, Block};
    let mut f = io::BufReader::new(fs::File::open(path).ok()?);
    let mut block = [0u8; 512];
    f.read_exact(&mut block).ok()?;
    match parse_header(&block).ok()? {
        Block::File { path, size } if path == "oci-layout" && size <= 512 => {}
        _ => return None,
    }
    f.read_exact(&mut block).ok()?;
    f.read_exact(&mut block).ok()?;
    let size = match parse_header(&block).ok()? {
        Block::File { path, size } if path == "index.json" && size <= 64 << 20 => size,
        _ => return None,
    };
    let mut index = vec![0u8; size as usize];
    f.read_exact(&mut index).ok()?;
    let v: Value = serde_json::from_slice(&index).ok()?;
    v["annotations"][BUNDLE_ANNOTATION].as_str()?.parse().ok()
}

/// One document of a manifest file.
#[derive(Clone, Debug)]
struct Doc {
    order: u64,
    blob: Digest,
    encoded: bool,
    content: Digest,
    size: u64,
    name: String,
}

/// Manifests grouped by target file, documents in order.
fn manifest_files(head: &Head) -> Result<BTreeMap<String, Vec<Doc>>> {
    let blobs: HashMap<Digest, &BlobEntry> =
        head.manifest.blobs.iter().map(|b| (b.digest, b)).collect();
    let mut files: BTreeMap<String, Vec<Doc>> = BTreeMap::new();
    for (o, meta) in head.manifest.k8s_manifests() {
        let file = manifest_file_name(o, meta)?;
        let order = meta.order;
        let b = blobs.get(&o.digest).ok_or_else(|| {
            anyhow!(
                "manifest {} names blob {} that is not listed",
                escaped(&o.name),
                o.digest
            )
        })?;
        let (encoded, content, size) = match (&b.encoding, &b.content) {
            (Some(Encoding::Zstd), Some(c)) => (true, c.digest, c.size),
            _ => (false, b.digest, b.size),
        };
        files.entry(file).or_default().push(Doc {
            order,
            blob: b.digest,
            encoded,
            content,
            size,
            name: o.name.clone(),
        });
    }
    for docs in files.values_mut() {
        docs.sort_by(|a, b| a.order.cmp(&b.order).then(a.name.cmp(&b.name)));
    }
    Ok(files)
}

fn manifest_file_name(o: &Object, meta: &K8sManifestMeta) -> Result<String> {
    let file = &meta.file;
    if !is_file_name(file) {
        return Err(BundleFailure(format!(
            "Kubernetes manifest {} wants the file name `{}`, which is not one a writer gives (`[A-Za-z0-9_][A-Za-z0-9._-]*.yaml`, at most 100 bytes): refusing to write it into the manifests folder",
            escaped(&o.name),
            crate::text::shortened(file, 100)
        ))
        .into());
    }
    Ok(file.to_string())
}

/// Whether `existing` is exactly what the documents give (checked by size and
/// digest, document by document, without the documents' bytes).
fn file_matches(existing: &[u8], docs: &[Doc]) -> bool {
    let mut pos = 0usize;
    for (i, d) in docs.iter().enumerate() {
        if i > 0 {
            if existing.get(pos..pos + 4) != Some(b"---\n") {
                return false;
            }
            pos += 4;
        }
        let Some(body) = existing.get(pos..pos + d.size as usize) else {
            return false;
        };
        if Digest::of(body) != d.content {
            return false;
        }
        pos += d.size as usize;
        if !body.ends_with(b"\n") {
            if existing.get(pos) != Some(&b'\n') {
                return false;
            }
            pos += 1;
        }
    }
    pos == existing.len()
}

/// The files in the bundle's own folder `dir` that an earlier import of it wrote and
/// this version does not have (`keep`): regular files whose names gapbundle writes.
/// Symlinks, folders and other names are not ours and never listed. `None` when
/// `dir` is itself a symlink: what it points to is outside the manifests folder, so
/// nothing is removed from it.
#[allow(
    clippy::disallowed_methods,
    reason = "NotFound is an answer; other errors name the path"
)]
fn stale_files(dir: &Path, keep: &BTreeMap<String, Vec<Doc>>) -> Result<Option<Vec<String>>> {
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_symlink() => return Ok(None),
        Ok(m) if m.is_dir() => {}
        // Not there yet (first import), or a file that the write will complain about.
        Ok(_) => return Ok(Some(Vec::new())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(Vec::new())),
        Err(e) => return Err(e).with_context(|| format!("cannot look at {}", dir.display())),
    }
    let mut stale = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if keep.contains_key(&name) || !is_file_name(&name) {
            continue;
        }
        // The entry's own type: a symlink is not followed.
        if entry.file_type()?.is_file() {
            stale.push(name);
        }
    }
    stale.sort();
    Ok(Some(stale))
}

/// Removes the stale files `names` from `dir`, each with one `unlink` (a file is
/// either there whole or gone, never cut short), then syncs the folder so the
/// renames before and the removals survive a power cut. A name that is no longer a
/// regular file (replaced since the plan) is left alone; one that is already gone
/// counts as removed, so a rerun after an interruption converges.
#[allow(
    clippy::disallowed_methods,
    reason = "NotFound is an answer; other errors name the path"
)]
fn remove_stale(dir: &Path, names: &[String]) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in names {
        let p = dir.join(name);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
            },
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot look at {}", p.display())),
        }
        removed.push(name.clone());
    }
    Ok(removed)
}

/// Makes the renames and removals in `dir` durable.
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)?
        .sync_all()
        .with_context(|| format!("cannot sync {}", dir.display()))
}

/// Where manifests go.
pub enum ManifestMode {
    /// K3s's auto-deploy folder for this bundle.
    Folder(PathBuf),
    /// `kubectl apply -f` with an optional kubeconfig.
    Apply(Option<PathBuf>),
}

/// Installs the bundle's Kubernetes manifests.
pub struct Manifests {
    mode: ManifestMode,
    files: BTreeMap<String, Vec<Doc>>,
    todo: BTreeSet<String>,
    /// Files of an earlier version to remove after the new ones are written.
    stale: Vec<String>,
    /// The bundle's folder is a symlink: nothing is removed from it.
    folder_is_link: bool,
    /// Received documents (decoded, checked), by blob digest: `<hex>.doc`.
    staging: Option<TempFolder>,
    /// The blob being received, into `<hex>.stored` in the staging folder.
    current: Option<fs::File>,
    /// Each encoded blob's content (digest and size) and the documents it is.
    encoded: HashMap<Digest, (ContentInfo, Vec<String>)>,
}

impl Manifests {
    /// Manifests of `head` into `mode`.
    pub fn new(mode: ManifestMode, head: &Head) -> Result<Self> {
        let files = manifest_files(head)?;
        let mut encoded: HashMap<Digest, (ContentInfo, Vec<String>)> = HashMap::new();
        for d in files.values().flatten().filter(|d| d.encoded) {
            let e = encoded.entry(d.blob).or_insert_with(|| {
                (
                    ContentInfo {
                        digest: d.content,
                        size: d.size,
                    },
                    Vec::new(),
                )
            });
            e.1.push(d.name.clone());
        }
        Ok(Self {
            mode,
            files,
            todo: BTreeSet::new(),
            stale: Vec::new(),
            folder_is_link: false,
            staging: None,
            current: None,
            encoded,
        })
    }

    /// The folder for a bundle under `k3s_root` (refused for a bundle whose name
    /// is not a bundle name, see [`folder_name`]).
    pub fn folder(k3s_root: &Path, head: &Head) -> Result<PathBuf> {
        Ok(k3s_root.join("server/manifests").join(folder_name(head)?))
    }

    /// The private staging folder: in the bundle's folder (so the renames do not
    /// cross file systems), or in `$TMPDIR` for `--apply`; made after sweeping
    /// that folder of what killed imports left.
    fn staging(&mut self) -> io::Result<&Path> {
        if self.staging.is_none() {
            let t = match &self.mode {
                ManifestMode::Folder(dir) => {
                    fs::create_dir_all(dir)?;
                    temp::folder_in(dir, "staging")?
                }
                ManifestMode::Apply(_) => temp::folder("manifests")?,
            };
            self.staging = Some(t);
        }
        Ok(self.staging.as_ref().expect("set").path())
    }

    /// Writes one file's documents, joined, to `out`: each from its checked copy
    /// in the staging folder.
    fn render(&self, docs: &[Doc], staging: &Path, out: &mut dyn Write) -> Result<()> {
        for (i, d) in docs.iter().enumerate() {
            if i > 0 {
                out.write_all(b"---\n")?;
            }
            let p = staging.join(format!("{}.doc", d.blob.hex()));
            let mut body = fs::File::open(&p)?.take(d.size + 1);
            let mut last = [0u8; 1];
            let mut n = 0u64;
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let k = body.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                out.write_all(&buf[..k])?;
                last[0] = buf[k - 1];
                n += k as u64;
            }
            if n != d.size {
                bail!(
                    "manifest {}: its staged copy {} has {n} bytes, not {}; run the import again",
                    escaped(&d.name),
                    p.display(),
                    d.size
                );
            }
            if n > 0 && last[0] != b'\n' {
                out.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    /// The blob `blob` verified: its stored bytes become the document they are
    /// (`<hex>.doc`), decoded within its declared size and checked against its
    /// declared digest when it is zstd-stored. A document that is not what the
    /// bundle says is refused as damage (`InvalidData`), naming it.
    fn settle(&mut self, blob: &BlobEntry) -> io::Result<()> {
        let staging = self.staging()?.to_path_buf();
        let stored = staging.join(format!("{}.stored", blob.digest.hex()));
        let doc = staging.join(format!("{}.doc", blob.digest.hex()));
        let Some((content, names)) = self.encoded.get(&blob.digest) else {
            return fs::rename(&stored, &doc);
        };
        let mut out = io::BufWriter::new(fs::File::create(&doc)?);
        let decoded = decode_checked(fs::File::open(&stored)?, content, &mut out).and_then(|()| {
            out.flush()
                .map_err(crate::bundle::decode::DecodeError::Write)
        });
        drop(out);
        let _ = fs::remove_file(&stored);
        match decoded {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = fs::remove_file(&doc);
                let names: Vec<String> = names.iter().map(|n| escaped(n).into_owned()).collect();
                let msg = format!(
                    "Kubernetes manifest {} (blob {}): {e}; nothing was written to the manifests folder",
                    names.join(", "),
                    blob.digest
                );
                Err(if e.is_content() {
                    io::Error::new(io::ErrorKind::InvalidData, msg)
                } else {
                    io::Error::other(msg)
                })
            }
        }
    }

    /// Writes (or applies) the files the plan found new or changed.
    fn write_files(&mut self, progress: &Progress) -> Result<Vec<String>> {
        if self.todo.is_empty() {
            return Ok(Vec::new());
        }
        let staging = self.staging()?.to_path_buf();
        let mut done = Vec::new();
        for file in &self.todo {
            let docs = &self.files[file];
            match &self.mode {
                ManifestMode::Folder(dir) => {
                    let target = dir.join(file);
                    let mut f = AtomicFile::create(&target)?;
                    self.render(docs, &staging, &mut f)?;
                    f.commit()
                        .with_context(|| format!("cannot write {}", target.display()))?;
                }
                ManifestMode::Apply(kubeconfig) => {
                    let path = staging.join(format!("apply-{file}"));
                    let mut f = fs::File::create(&path)?;
                    self.render(docs, &staging, &mut f)?;
                    drop(f);
                    let mut cmd = Cmd::new(
                        "kubectl",
                        "kubectl is needed for --apply; install it or drop --apply to use K3s's auto-deploy folder",
                    )
                    .arg("apply")
                    .arg("-f")
                    .arg(&path);
                    if let Some(k) = kubeconfig {
                        cmd = cmd.arg("--kubeconfig").arg(k);
                    }
                    progress.message(format!("kubectl apply -f {file}"));
                    cmd.output()
                        .with_context(|| format!("kubectl apply of {file} failed"))?;
                }
            }
            done.push(file.clone());
        }
        Ok(done)
    }
}

impl Target for Manifests {
    fn describe(&self) -> String {
        match &self.mode {
            ManifestMode::Folder(d) => format!("K3s manifests {}", d.display()),
            ManifestMode::Apply(Some(k)) => format!("kubectl apply (kubeconfig {})", k.display()),
            ManifestMode::Apply(None) => "kubectl apply".into(),
        }
    }

    fn plan(&mut self, head: &Head) -> Result<TargetPlan> {
        let mut plan = TargetPlan::default();
        let sizes: HashMap<Digest, &BlobEntry> =
            head.manifest.blobs.iter().map(|b| (b.digest, b)).collect();
        for (file, docs) in &self.files {
            let current = match &self.mode {
                ManifestMode::Folder(dir) => {
                    let p = dir.join(file);
                    let max: u64 = docs.iter().map(|d| d.size + 5).sum();
                    match fs::metadata(&p) {
                        Ok(m) if m.len() <= max => fs::read(&p)
                            .map(|b| file_matches(&b, docs))
                            .unwrap_or(false),
                        _ => false,
                    }
                }
                ManifestMode::Apply(_) => false,
            };
            if current {
                plan.present_objects.push(file.clone());
                continue;
            }
            plan.new_objects.push(file.clone());
            self.todo.insert(file.clone());
            for d in docs {
                let b = sizes
                    .get(&d.blob)
                    .ok_or_else(|| anyhow!("blob {} missing", d.blob))?;
                if b.offset.is_none() {
                    // A delta left out a document of a file that must be written.
                    plan.missing.insert(d.blob);
                } else if plan.needed.insert(d.blob) {
                    plan.bytes_to_write += d.size;
                }
            }
        }
        if let ManifestMode::Folder(dir) = &self.mode {
            match stale_files(dir, &self.files)? {
                Some(stale) => self.stale = stale,
                None => self.folder_is_link = true,
            }
            plan.objects_to_remove = self.stale.clone();
            // The documents are staged beside the files they go to (as stored, then
            // as decoded) and written once more into those files.
            let stored: u64 = plan
                .needed
                .iter()
                .filter_map(|d| sizes.get(d))
                .map(|b| b.size)
                .sum();
            let room = stored.saturating_add(plan.bytes_to_write.saturating_mul(2));
            if room > 0 {
                let existing = dir.ancestors().find(|p| p.is_dir()).unwrap_or(dir);
                crate::io::space::ensure(
                    existing,
                    room,
                    "the K3s manifests folder",
                    "make room there or give another --k3s-root",
                )?;
            }
        }
        Ok(plan)
    }

    fn begin(&mut self, blob: &BlobEntry) -> io::Result<()> {
        let p = self
            .staging()?
            .join(format!("{}.stored", blob.digest.hex()));
        self.current = Some(fs::File::create(p)?);
        Ok(())
    }

    fn write(&mut self, _blob: &BlobEntry, chunk: &[u8]) -> io::Result<()> {
        match self.current.as_mut() {
            Some(f) => f.write_all(chunk),
            None => Err(io::Error::other("manifest staging file not open")),
        }
    }

    fn commit(&mut self, blob: &BlobEntry) -> io::Result<()> {
        self.current = None;
        self.settle(blob)
    }

    fn finish(&mut self, _head: &Head, progress: &Progress) -> Result<TargetReport> {
        let done = self.write_files(progress)?;
        let ManifestMode::Folder(dir) = &self.mode else {
            return Ok(TargetReport::Manifests(ManifestsReport {
                written: done,
                removed: None,
            }));
        };
        if self.folder_is_link {
            progress.warn(format!(
                "{} is a symlink: files an earlier version of the bundle left there are not removed",
                dir.display()
            ));
        }
        // Only after every new file is in place: an interruption leaves the new
        // files and some old ones, never a folder missing a file both versions have.
        let removed = remove_stale(dir, &self.stale)?;
        if !done.is_empty() || !removed.is_empty() {
            sync_dir(dir)?;
        }
        if self.files.is_empty() && !self.folder_is_link {
            // This version has no manifests: the folder goes too if nothing else
            // is in it (remove_dir never removes a folder that holds anything).
            let _ = fs::remove_dir(dir);
        }
        Ok(TargetReport::Manifests(ManifestsReport {
            written: done,
            removed: Some(removed),
        }))
    }

    fn receipt(&self, _head: &Head) -> Option<Section> {
        let files: Vec<String> = self.files.keys().cloned().collect();
        Some(match &self.mode {
            ManifestMode::Folder(dir) => Section::Manifests {
                folder: crate::import::receipt_path(dir),
                files,
            },
            ManifestMode::Apply(k) => Section::Applied {
                kubeconfig: k.as_deref().map(crate::import::receipt_path),
                files,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(order: u64, bytes: &[u8]) -> Doc {
        Doc {
            order,
            blob: Digest::of(bytes),
            encoded: false,
            content: Digest::of(bytes),
            size: bytes.len() as u64,
            name: format!("d{order}"),
        }
    }

    #[test]
    fn existing_files_are_recognised_exactly() {
        let docs = vec![doc(0, b"a: 1\n"), doc(1, b"b: 2")];
        assert!(file_matches(b"a: 1\n---\nb: 2\n", &docs));
        assert!(!file_matches(b"a: 1\n---\nb: 2\nextra", &docs));
        assert!(!file_matches(b"a: 1\nb: 2\n", &docs));
    }
}
