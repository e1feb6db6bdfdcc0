//! Nix paths into a Nix store or a binary cache.
//!
//! `nix-store --import` reads each whole NAR into memory before it writes it (Nix
//! issue 9610), so it cannot be the way in for a path of several gigabytes. The
//! bundle's NAR blobs are already `.nar.zst` files, which is exactly what a Nix
//! binary cache serves, so the import offers Nix a binary cache and lets it stream
//! from it:
//!
//! - `--nix-store file:///srv/cache`: the blobs stream straight to
//!   `nar/<nix32 file hash>.nar.zst` (temporary name, renamed once the blob
//!   verified), and after the whole bundle verified and every NAR decompressed to
//!   its NAR hash (one worker per core, while the bundle goes on streaming; see
//!   `Decoders`), `<hash>.narinfo` files are written in reference order. That cache
//!   is the result: a fleet substitutes from it, nothing else checks it first, and
//!   its narinfos carry the bundle key's path signatures.
//! - a store (the default local store, `/mnt/target` or `local?root=/mnt/target`,
//!   or any URI `nix copy --to` takes), from a bundle file: once the whole bundle
//!   verified, the same cache is served from the bundle file in place on a loopback
//!   port (`crate::io::serve`) and `nix copy --from http://127.0.0.1:PORT/<random>`
//!   adds the paths, decompressing and streaming each NAR into the store with
//!   bounded memory, several paths at once. Nothing is copied out of the bundle:
//!   staging the blobs in a `file://` folder first wrote every byte once more and
//!   then made the disk write it back and delete it while Nix filled the store, a
//!   third of the whole import on the benchmark closure. The server hashes each
//!   blob again as Nix reads it and holds back its last bytes if the file changed
//!   since it verified.
//! - a store, from stdin: a pipe can be read only once, so the cache is written to
//!   a private staging folder (no fsync: it lives for one command) and `nix copy
//!   --from file://STAGE` reads it. The NARs stay compressed there on purpose:
//!   staging them uncompressed was measured slower still.
//!
//! For a store, Nix checks every path's signature against `trusted-public-keys`,
//! which is set (for that one command) to the keys given with `--trust`, so no
//! `--no-check-sigs` is needed: Nix itself checks what we checked. Only with
//! `--allow-unsigned` and no trusted key is `--no-check-sigs` passed. Nix also
//! checks each NAR against its signed NAR hash before it registers the path, and
//! refuses every path that references one it refused; so the import does not
//! decompress the NARs a second time for a store. A bundle damaged anywhere still
//! registers nothing, since Nix is only started after every blob's digest matched;
//! only a bundle *signed* with a wrong NAR hash (a faulty `create`) gets its other
//! paths registered. Then each `gcRoot` becomes a symlink in
//! `<root>/nix/var/nix/gcroots/gapbundle/`.
//!
//! Every path's signature by a trusted key is checked against Nix's fingerprint
//! before anything is written. Paths already valid on the target are skipped, so a
//! second import is a no-op, and since nothing is registered before the last byte of
//! the bundle verified, an interrupted import completes on rerun.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fs_err as fs;
use serde_json::json;
use tempfile::{NamedTempFile, TempDir};

use super::{Target, TargetPlan};
use crate::bundle::digest::HashingWriter;
use crate::bundle::keys::PublicKey;
use crate::bundle::manifest::{BlobEntry, Encoding, Kind, ManifestError};
use crate::bundle::reader::{damage, Entry, Head, ReadError};
use crate::bundle::Digest;
use crate::cli::ImportArgs;
use crate::error::{InputFailure, NixStoreFailure};
use crate::io::serve::{Resource, Server};
use crate::io::space;
use crate::nixfmt::{
    cache_info, closure_order, fingerprint, valid_root_name, verify_path, NarHash, NarInfo,
    StorePath, NAR_ZSTD_MEDIA_TYPE,
};
use crate::progress::Progress;
use crate::resolve::nix::nix_cmd;

/// Where GC roots go, below a store's root.
const GC_ROOTS: &str = "nix/var/nix/gcroots/gapbundle";

/// Room asked of `$TMPDIR` for Nix's narinfo cache when a store import is served in
/// place: its SQLite file and journal, and about this much per path (a row and its
/// index entries are a few hundred bytes; rounded up generously).
const NIX_META_BASE: u64 = 1 << 20;
const NIX_META_PER_PATH: u64 = 4 << 10;

/// One `nix-path` object of the bundle, checked.
#[derive(Debug, Clone)]
struct NixObject {
    path: StorePath,
    blob: Digest,
    blob_size: u64,
    nar_hash: NarHash,
    nar_size: u64,
    references: Vec<StorePath>,
    deriver: Option<StorePath>,
    ca: Option<String>,
    sigs: Vec<String>,
    gc_roots: Vec<String>,
}

impl NixObject {
    /// The narinfo of this path in a cache: the bundle's own `.nar.zst` blob.
    fn narinfo(&self) -> NarInfo {
        let file_hash = NarHash::from_digest(&self.blob);
        NarInfo {
            store_path: self.path.clone(),
            url: NarInfo::nar_url(&file_hash, "zst"),
            compression: "zstd".into(),
            file_hash,
            file_size: self.blob_size,
            nar_hash: self.nar_hash,
            nar_size: self.nar_size,
            references: self.references.clone(),
            deriver: self.deriver.clone(),
            sigs: self.sigs.clone(),
            ca: self.ca.clone(),
        }
    }
}

fn bad(msg: String) -> anyhow::Error {
    ReadError::Manifest(ManifestError::Inconsistent(msg)).into()
}

/// Reads and checks every `nix-path` object: well-formed names and hashes, a NAR
/// blob whose content is the NAR hash the path is registered under, and (when keys
/// are trusted) a path signature by one of them over Nix's fingerprint.
fn nix_objects(head: &Head, trusted: &[PublicKey]) -> Result<Vec<NixObject>> {
    let mut out = Vec::new();
    for o in head
        .manifest
        .objects
        .iter()
        .filter(|o| o.kind == Kind::NixPath)
    {
        let what = format!("nix-path `{}`", o.name);
        let path = StorePath::parse(&o.name).map_err(|e| bad(format!("{what}: {e}")))?;
        let meta_str = |k: &str| o.meta.get(k).and_then(|v| v.as_str());
        let meta_list = |k: &str| -> Result<Vec<String>> {
            match o.meta.get(k) {
                None => Ok(Vec::new()),
                Some(v) => serde_json::from_value(v.clone())
                    .map_err(|_| bad(format!("{what}: meta.{k} is not a list of strings"))),
            }
        };
        let nar_hash = NarHash::parse(meta_str("narHash").unwrap_or(""))
            .map_err(|e| bad(format!("{what}: meta.narHash: {e}")))?;
        let nar_size = o
            .meta
            .get("narSize")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| bad(format!("{what}: meta.narSize is missing")))?;
        let references = meta_list("references")?
            .iter()
            .map(|r| StorePath::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("{what}: meta.references: {e}")))?;
        let deriver = meta_str("deriver")
            .map(StorePath::parse)
            .transpose()
            .map_err(|e| bad(format!("{what}: meta.deriver: {e}")))?;
        let gc_roots = meta_list("gcRoots")?;
        if let Some(r) = gc_roots.iter().find(|r| !valid_root_name(r)) {
            return Err(bad(format!(
                "{what}: GC root name `{r}` is not a plain file name"
            )));
        }
        let blob = head
            .manifest
            .blob(&o.digest)
            .ok_or_else(|| bad(format!("{what}: its blob {} is not listed", o.digest)))?;
        let content_ok = blob.media_type == NAR_ZSTD_MEDIA_TYPE
            && blob.encoding == Some(Encoding::Zstd)
            && blob
                .content
                .as_ref()
                .is_some_and(|c| c.digest == nar_hash.digest() && c.size == nar_size);
        if !content_ok {
            return Err(bad(format!(
                "{what}: its blob {} is not a zstd NAR with hash {nar_hash} and size {nar_size} (the metadata says one NAR, the blob another)",
                o.digest
            )));
        }
        let sigs = meta_list("sigs")?;
        let obj = NixObject {
            path,
            blob: o.digest,
            blob_size: blob.size,
            nar_hash,
            nar_size,
            references,
            deriver,
            ca: meta_str("ca").map(str::to_string),
            sigs,
            gc_roots,
        };
        if !trusted.is_empty() {
            let fp = fingerprint(&obj.path, &obj.nar_hash, obj.nar_size, &obj.references);
            if !trusted.iter().any(|k| verify_path(k, &fp, &obj.sigs)) {
                return Err(bad(format!(
                    "{what} carries no valid path signature by a trusted key over `{fp}`: its metadata was altered after signing"
                )));
            }
        }
        out.push(obj);
    }
    Ok(out)
}

/// Where the paths go.
#[derive(Debug, Clone)]
enum Dest {
    /// A `file://` binary cache folder.
    Cache(PathBuf),
    /// A store `nix copy` can write to.
    Store {
        /// `--store`/`--to` URI; `None` is the default store.
        uri: Option<String>,
        /// Root of a chroot store (`local?root=`), for validity checks and GC roots.
        root: Option<PathBuf>,
        /// Where GC roots go; `None` when the store is remote.
        gc_dir: Option<PathBuf>,
    },
}

fn parse_dest(arg: Option<&str>) -> Result<Dest> {
    let default_gc = Path::new("/").join(GC_ROOTS);
    let Some(s) = arg else {
        return Ok(Dest::Store {
            uri: None,
            root: None,
            gc_dir: Some(default_gc),
        });
    };
    if let Some(p) = s.strip_prefix("file://") {
        let p = p.split('?').next().unwrap_or(p);
        if !p.starts_with('/') {
            return Err(InputFailure(format!(
                "--nix-store {s}: a file:// cache needs an absolute path, e.g. file:///srv/cache"
            ))
            .into());
        }
        return Ok(Dest::Cache(PathBuf::from(p)));
    }
    let chroot = |root: &str| {
        let root = std::path::absolute(root).unwrap_or_else(|_| PathBuf::from(root));
        Dest::Store {
            uri: Some(format!("local?root={}", root.display())),
            gc_dir: Some(root.join(GC_ROOTS)),
            root: Some(root),
        }
    };
    if s.starts_with('/') || s.starts_with("./") {
        return Ok(chroot(s));
    }
    if let Some(q) = s.strip_prefix("local?") {
        if let Some(root) = q
            .split('&')
            .find_map(|kv| kv.strip_prefix("root="))
            .filter(|r| !r.is_empty())
        {
            return Ok(chroot(root));
        }
    }
    let local = matches!(s, "auto" | "local" | "daemon");
    Ok(Dest::Store {
        uri: Some(s.to_string()),
        root: None,
        gc_dir: local.then_some(default_gc),
    })
}

/// What decoding a NAR blob gives: the NAR's digest and size.
type Decoded = Result<(Digest, u64), String>;

/// Decompresses and hashes a staged `.nar.zst` file.
fn decode_file(path: &Path) -> Decoded {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut dec = zstd::stream::read::Decoder::new(f).map_err(|e| e.to_string())?;
    let mut hw = HashingWriter::new(io::sink());
    io::copy(&mut dec, &mut hw).map_err(|e| e.to_string())?;
    let (_, digest, size) = hw.finish();
    Ok((digest, size))
}

/// Checks that every NAR blob of a `file://` cache decodes to the NAR hash its path
/// is registered under.
///
/// Decoding is most of such an import's own CPU, and a large NAR's frames are one
/// stream that only one thread can decode. So it is not done in step with the stream (a big
/// blob would then hold the stream, and every core but one would idle): each blob,
/// once its bytes verified and its file was renamed into place, is queued, and one
/// worker per core decodes the files from the page cache while the bundle goes on
/// streaming. Memory stays bounded: a worker holds a buffer and a zstd window. The
/// results are only looked at once the whole bundle has streamed, and nothing is
/// registered before all of them are good.
struct Decoders {
    jobs: Option<std::sync::mpsc::Sender<(usize, PathBuf)>>,
    results: std::sync::mpsc::Receiver<(usize, Decoded)>,
    workers: Vec<std::thread::JoinHandle<()>>,
    /// The queued blobs, in the order they streamed.
    queued: Vec<BlobEntry>,
}

impl Decoders {
    fn start() -> io::Result<Decoders> {
        let (jobs, job_rx) = std::sync::mpsc::channel::<(usize, PathBuf)>();
        let (result_tx, results) = std::sync::mpsc::channel();
        let job_rx = std::sync::Arc::new(std::sync::Mutex::new(job_rx));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let mut workers = Vec::new();
        for _ in 0..n {
            let job_rx = job_rx.clone();
            let result_tx = result_tx.clone();
            workers.push(
                std::thread::Builder::new()
                    .name("nar-decode".into())
                    .spawn(move || loop {
                        let job = job_rx.lock().map(|rx| rx.recv());
                        let Ok(Ok((i, path))) = job else { return };
                        if result_tx.send((i, decode_file(&path))).is_err() {
                            return;
                        }
                    })?,
            );
        }
        Ok(Decoders {
            jobs: Some(jobs),
            results,
            workers,
            queued: Vec::new(),
        })
    }

    fn queue(&mut self, blob: &BlobEntry, path: PathBuf) {
        let i = self.queued.len();
        self.queued.push(blob.clone());
        if let Some(j) = &self.jobs {
            let _ = j.send((i, path));
        }
    }

    /// Waits for every queued blob; returns each with what it decoded to, in the
    /// order they streamed.
    fn finish(mut self) -> Vec<(BlobEntry, Decoded)> {
        drop(self.jobs.take());
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let mut out: Vec<Option<Decoded>> = self.queued.iter().map(|_| None).collect();
        for (i, d) in self.results.try_iter() {
            out[i] = Some(d);
        }
        self.queued
            .into_iter()
            .zip(out)
            .map(|(b, d)| {
                (
                    b,
                    d.unwrap_or_else(|| Err("the decoding thread stopped".into())),
                )
            })
            .collect()
    }
}

/// A `no_proxy` value: `current` with `127.0.0.1` added.
fn with_loopback(current: Option<std::ffi::OsString>) -> String {
    match current.map(|c| c.to_string_lossy().into_owned()) {
        Some(c) if !c.trim().is_empty() => format!("{c},127.0.0.1"),
        _ => "127.0.0.1".to_string(),
    }
}

/// Why Nix refused a path, from one line of its stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// "hash mismatch importing path '<path>'" (or "size mismatch"): the NAR is not
    /// the one its narinfo names.
    Mismatch(String),
    /// "cannot add path '<path>' because it lacks a valid signature": the store
    /// (a daemon, for a user it does not trust) does not trust the key.
    Untrusted(String),
}

fn refusal(line: &str) -> Option<Refusal> {
    fn quoted(rest: &str) -> Option<&str> {
        rest.split('\'').next()
    }
    if let Some((_, rest)) = line.split_once("mismatch importing path '") {
        return quoted(rest).map(|p| Refusal::Mismatch(p.to_string()));
    }
    if line.contains("lacks a valid signature") {
        let (_, rest) = line.split_once("cannot add path '")?;
        return quoted(rest).map(|p| Refusal::Untrusted(p.to_string()));
    }
    None
}

/// The store path in Nix's "copying path '<path>' from '<store>'..." line.
fn copying_path(line: &str) -> Option<&str> {
    line.strip_prefix("copying path '")?.split('\'').next()
}

/// The Nix target.
pub struct NixTarget {
    dest: Dest,
    objects: Vec<NixObject>,
    trusted: Vec<PublicKey>,
    /// Paths to add, references first.
    new_paths: Vec<StorePath>,
    stage: Option<TempDir>,
    /// The bundle file, when the import reads one (not a pipe): a store then takes
    /// the NARs from it in place (see `serve_in_place`) and nothing is staged.
    bundle_file: Option<PathBuf>,
    /// The blob being received: its file in the cache, under a temporary name.
    receiving: Option<BufWriter<NamedTempFile>>,
    /// Verified blobs whose NARs are being decoded and hashed.
    decoding: Option<Decoders>,
    progress_warned: bool,
}

/// The Nix target for this bundle, if it has Nix paths and `--skip-nix` was not given.
/// `signers` are the `--trust` keys whose signature of the bundle was checked: only
/// they vouch for paths.
pub fn target(
    args: &ImportArgs,
    head: &Head,
    signers: &[PublicKey],
) -> Result<Option<Box<dyn Target>>> {
    let has = head
        .manifest
        .objects
        .iter()
        .any(|o| o.kind == Kind::NixPath);
    if !has || args.skip_nix {
        return Ok(None);
    }
    let trusted = signers.to_vec();
    let objects = nix_objects(head, &trusted)?;
    Ok(Some(Box::new(NixTarget {
        dest: parse_dest(args.nix_store.as_deref())?,
        objects,
        trusted,
        new_paths: Vec::new(),
        stage: None,
        bundle_file: (args.bundle.as_os_str() != "-")
            .then(|| std::path::absolute(&args.bundle).ok())
            .flatten()
            .filter(|p| p.is_file()),
        receiving: None,
        decoding: None,
        progress_warned: false,
    })))
}

impl NixTarget {
    /// Whether `nix copy` takes the NARs from the bundle file itself, served in
    /// place, instead of from a staged copy: for a store, whenever the bundle is a
    /// file. A `file://` cache is a copy by definition, and a pipe can only be read
    /// once.
    fn in_place(&self) -> bool {
        matches!(self.dest, Dest::Store { .. }) && self.bundle_file.is_some()
    }

    /// The folder NARs and narinfos are written to.
    fn cache_dir(&mut self) -> io::Result<PathBuf> {
        match &self.dest {
            Dest::Cache(p) => Ok(p.clone()),
            Dest::Store { .. } => {
                if self.stage.is_none() {
                    self.stage = Some(
                        tempfile::Builder::new()
                            .prefix("gapbundle-nix-stage-")
                            .tempdir()?,
                    );
                }
                Ok(self.stage.as_ref().expect("just set").path().to_path_buf())
            }
        }
    }

    /// Waits for every NAR being decoded and checks each against the NAR hash its
    /// path is registered under.
    fn check_decoded(&mut self) -> Result<()> {
        let Some(decoders) = self.decoding.take() else {
            return Ok(());
        };
        for (blob, decoded) in decoders.finish() {
            let users: Vec<String> = self
                .objects
                .iter()
                .filter(|o| o.blob == blob.digest)
                .map(|o| o.path.to_string())
                .collect();
            let want = blob.content.as_ref();
            match decoded {
                Ok((d, s)) if want.is_some_and(|c| c.digest == d && c.size == s) => {}
                Ok((d, s)) => {
                    return Err(bad(format!(
                        "the NAR of {} decompresses to {} ({s} bytes), not the NAR hash it is registered under; the bundle was made wrong, nothing was imported",
                        users.join(", "),
                        NarHash::from_digest(&d)
                    )))
                }
                Err(e) => {
                    return Err(bad(format!(
                        "the NAR of {} is not valid zstd ({e}); nothing was imported",
                        users.join(", ")
                    )))
                }
            }
        }
        Ok(())
    }

    /// Fails before anything is written when the new paths cannot fit: their
    /// compressed NARs (`blob_bytes`) in the cache or the staging folder, their NARs
    /// in a local store.
    fn check_space(&self, blob_bytes: u64) -> Result<()> {
        if self.new_paths.is_empty() {
            return Ok(());
        }
        let new: BTreeSet<&StorePath> = self.new_paths.iter().collect();
        let nar_bytes: u64 = self
            .objects
            .iter()
            .filter(|o| new.contains(&o.path))
            .map(|o| o.nar_size)
            .sum();
        match &self.dest {
            Dest::Cache(dir) => space::ensure(
                dir,
                blob_bytes,
                "the binary cache folder",
                "free some space there or give another --nix-store file:// folder",
            ),
            Dest::Store { uri, root, .. } => {
                let tmp_fix =
                    "point TMPDIR at a disk with room, e.g. TMPDIR=/var/tmp gapbundle import …";
                if self.in_place() {
                    // Only Nix's metadata cache of the served narinfos goes there.
                    space::ensure(
                        &std::env::temp_dir(),
                        NIX_META_BASE + NIX_META_PER_PATH * self.new_paths.len() as u64,
                        "$TMPDIR (for Nix's cache of the narinfos it is served)",
                        tmp_fix,
                    )?;
                } else {
                    space::ensure(
                        &std::env::temp_dir(),
                        blob_bytes,
                        "the staging folder in $TMPDIR",
                        tmp_fix,
                    )?;
                }
                let store = match (uri.as_deref(), root) {
                    (_, Some(r)) => Some(r.join("nix/store")),
                    (None | Some("auto" | "local" | "daemon"), None) => {
                        Some(PathBuf::from("/nix/store"))
                    }
                    _ => None, // a remote store: its own host's business
                };
                match store {
                    Some(dir) => space::ensure(
                        &dir,
                        nar_bytes,
                        "the Nix store",
                        "make room there (nix-collect-garbage -d) or import into another store with --nix-store",
                    ),
                    None => Ok(()),
                }
            }
        }
    }

    /// Which of `paths` are valid on the target.
    fn valid(&self, paths: &[StorePath]) -> Result<BTreeSet<StorePath>> {
        match &self.dest {
            Dest::Cache(dir) => Ok(paths
                .iter()
                .filter(|p| dir.join(format!("{}.narinfo", p.hash_part())).is_file())
                .cloned()
                .collect()),
            Dest::Store { uri, root, .. } => {
                if let Some(r) = root {
                    if !r.join("nix/var/nix/db").exists() {
                        return Ok(BTreeSet::new()); // a fresh store: nothing is valid
                    }
                }
                let mut invalid = BTreeSet::new();
                for chunk in paths.chunks(500) {
                    let mut cmd = nix_cmd("nix-store");
                    if let Some(u) = uri {
                        cmd = cmd.args(["--store", u]);
                    }
                    let out = cmd
                        .args(["--check-validity", "--print-invalid"])
                        .args(chunk.iter().map(|p| p.as_str()))
                        .output()
                        .with_context(|| {
                            format!("asking {} which paths it has", self.describe())
                        })?;
                    invalid.extend(String::from_utf8_lossy(&out).lines().map(str::to_string));
                }
                Ok(paths
                    .iter()
                    .filter(|p| !invalid.contains(p.as_str()))
                    .cloned()
                    .collect())
            }
        }
    }

    fn write_cache(&mut self, dir: &Path) -> Result<()> {
        let info_path = dir.join("nix-cache-info");
        match std::fs::read_to_string(&info_path) {
            Ok(text) => {
                if let Some(sd) = text.lines().find_map(|l| l.strip_prefix("StoreDir:")) {
                    if sd.trim() != "/nix/store" {
                        return Err(InputFailure(format!(
                            "{} is a binary cache for store {}, not /nix/store",
                            dir.display(),
                            sd.trim()
                        ))
                        .into());
                    }
                }
            }
            Err(_) => crate::io::atomic::write(&info_path, cache_info().as_bytes())?,
        }
        let by_path: BTreeMap<&StorePath, &NixObject> =
            self.objects.iter().map(|o| (&o.path, o)).collect();
        let durable = matches!(self.dest, Dest::Cache(_));
        for p in &self.new_paths {
            let o = by_path[p];
            let info = o.narinfo();
            let nar = dir.join(&info.url);
            if !nar.is_file() {
                return Err(anyhow::anyhow!(
                    "{} is missing although its NAR verified; run the import again",
                    nar.display()
                ));
            }
            let target = dir.join(format!("{}.narinfo", p.hash_part()));
            if durable {
                crate::io::atomic::write(&target, info.to_text()?.as_bytes())?;
            } else {
                // The private staging cache lives for one `nix copy`: temp + rename,
                // but no fsync per file.
                let mut tmp = NamedTempFile::new_in(dir)?;
                tmp.write_all(info.to_text()?.as_bytes())?;
                tmp.persist(&target).map_err(|e| e.error)?;
            }
        }
        Ok(())
    }

    /// Serves the new paths' narinfos and the bundle file's NAR blobs on a loopback
    /// port ([`crate::io::serve`]) for one `nix copy`. The server hashes each blob
    /// again as Nix reads it and holds back its last bytes if the file changed since
    /// it verified, so Nix never completes a NAR we did not check.
    fn serve_in_place(&mut self, head: &Head, progress: &Progress) -> Result<()> {
        let file = self.bundle_file.clone().expect("in_place checked");
        let by_path: BTreeMap<&StorePath, &NixObject> =
            self.objects.iter().map(|o| (&o.path, o)).collect();
        let mut site = BTreeMap::new();
        site.insert(
            "nix-cache-info".to_string(),
            Resource::text(cache_info(), "text/x-nix-cache-info"),
        );
        for p in &self.new_paths {
            let o = by_path[p];
            let info = o.narinfo();
            let blob = head.manifest.blob(&o.blob).expect("checked in nix_objects");
            let offset = head.blob_position(blob).expect("checked in plan");
            site.insert(
                format!("{}.narinfo", p.hash_part()),
                Resource::text(info.to_text()?, "text/x-nix-narinfo"),
            );
            site.insert(
                info.url,
                Resource::Range {
                    offset,
                    size: blob.size,
                    digest: blob.digest,
                },
            );
        }
        let server = Server::start(fs::File::open(&file)?.into(), site).with_context(|| {
            format!(
                "serving the bundle's NARs to Nix on a loopback port (127.0.0.1); without one, pipe the bundle in instead, `gapbundle import - … < {}`, and its NARs are staged in $TMPDIR",
                file.display()
            )
        })?;
        // Nix keeps what an HTTP cache said in a disk cache of its own; that one
        // belongs to this server alone. And a proxy set for the machine (common in
        // the field) must not be asked for a loopback address.
        let cache_home = tempfile::Builder::new()
            .prefix("gapbundle-nix-cache-")
            .tempdir()?;
        let mut env = vec![("XDG_CACHE_HOME", cache_home.path().as_os_str().to_owned())];
        for var in ["no_proxy", "NO_PROXY"] {
            env.push((var, with_loopback(std::env::var_os(var)).into()));
        }
        let copied = self.copy_into_store(&server.url(), &env, progress);
        let failures = server.failures();
        drop(server);
        if let Some(m) = failures.first() {
            let blob = head
                .manifest
                .blob(&m.expected)
                .expect("served ranges are manifest blobs");
            let err = damage(head, &Entry::Blob(blob), m.found.clone().ok(), blob.size);
            let why = match &m.found {
                Ok(_) => "changed",
                Err(e) => e.as_str(),
            };
            return Err(anyhow::Error::new(err).context(format!(
                "{} changed after it verified ({why}): Nix was not given that NAR; check the disk, copy the bundle again and rerun",
                file.display()
            )));
        }
        copied
    }

    /// `nix copy --from FROM` into the store of all new paths, with `env` added to
    /// its environment.
    fn copy_into_store(
        &mut self,
        from: &str,
        env: &[(&str, std::ffi::OsString)],
        progress: &Progress,
    ) -> Result<()> {
        let Dest::Store { uri, .. } = &self.dest else {
            return Ok(());
        };
        let mut cmd = nix_cmd("nix").args([
            "copy",
            "--from",
            from,
            "--to",
            uri.as_deref().unwrap_or("auto"),
        ]);
        for (k, v) in env {
            cmd = cmd.env(k, v);
        }
        if self.trusted.is_empty() {
            if !self.progress_warned {
                progress.warn("no trusted key signed this bundle (--allow-unsigned): Nix is told not to check path signatures (--no-check-sigs)");
                self.progress_warned = true;
            }
            cmd = cmd.arg("--no-check-sigs");
        } else {
            let keys: Vec<String> = self.trusted.iter().map(|k| k.to_string()).collect();
            cmd = cmd.args(["--option", "trusted-public-keys", &keys.join(" ")]);
        }
        // Nix says "copying path '<path>' from '<cache>'..." as it starts each path:
        // that drives a bar in bytes of NAR, so a long copy is not a silent minute.
        let sizes: BTreeMap<String, u64> = self
            .objects
            .iter()
            .map(|o| (o.path.to_string(), o.nar_size))
            .collect();
        let total: u64 = self
            .new_paths
            .iter()
            .filter_map(|p| sizes.get(p.as_str()))
            .sum();
        let bar = progress.bar(format!("Nix paths into {}", self.describe()), total);
        let shown = bar.clone();
        let refused = std::sync::Arc::new(std::sync::Mutex::new(None::<Refusal>));
        let seen = refused.clone();
        let r = cmd
            .args(self.new_paths.iter().map(|p| p.as_str()))
            .on_stderr_line(move |line| {
                if let Some(n) = copying_path(line).and_then(|p| sizes.get(p)) {
                    shown.inc(*n);
                }
                if let (Some(why), Ok(mut s)) = (refusal(line), seen.lock()) {
                    s.get_or_insert(why);
                }
            })
            .output();
        match &r {
            Ok(_) => bar.finish("added"),
            Err(_) => bar.clear(),
        }
        match (&r, refused.lock().ok().and_then(|s| s.clone())) {
            (Err(e), Some(Refusal::Mismatch(p))) => {
                // Only a signer can make this: the blob verified, but its NAR is not
                // the one the path is signed under. Nix refused that path, and with it
                // every path that references it.
                return Err(bad(format!(
                    "the NAR of {p} decompresses to other bytes than the NAR hash it is signed under, so Nix refused it: the bundle was made wrong. Neither {p} nor any path that references it was registered; rebuild the bundle. ({e})"
                )));
            }
            (Err(e), Some(Refusal::Untrusted(p))) => {
                let keys: Vec<String> = self.trusted.iter().map(|k| k.to_string()).collect();
                let trust = if keys.is_empty() {
                    "sign the bundle (create --key) and add that public key to trusted-public-keys in the daemon's nix.conf".to_string()
                } else {
                    format!(
                        "add `{}` to trusted-public-keys in the daemon's nix.conf (NixOS: nix.settings.trusted-public-keys) and restart nix-daemon",
                        keys.join(" ")
                    )
                };
                return Err(NixStoreFailure(format!(
                    "{} refused {p}: it does not trust the key that signed it. A Nix daemon checks signatures against its own trusted-public-keys unless the user is trusted: {trust}, or run the import as a trusted user (root, or one in trusted-users). ({e})",
                    self.describe()
                ))
                .into());
            }
            _ => {}
        }
        r.with_context(|| {
            format!(
                "adding {} paths to {}",
                self.new_paths.len(),
                self.describe()
            )
        })?;
        Ok(())
    }

    fn make_gc_roots(&self) -> Result<Vec<String>> {
        let Dest::Store { gc_dir, .. } = &self.dest else {
            return Ok(Vec::new());
        };
        let mut made = Vec::new();
        let Some(dir) = gc_dir else {
            return Ok(made);
        };
        for o in &self.objects {
            for name in &o.gc_roots {
                fs::create_dir_all(dir)?;
                let link = dir.join(name);
                if std::fs::read_link(&link).ok().as_deref() == Some(Path::new(o.path.as_str())) {
                    made.push(link.display().to_string());
                    continue;
                }
                let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(o.path.as_str(), &tmp)
                    .with_context(|| format!("creating GC root {}", link.display()))?;
                fs::rename(&tmp, &link)?;
                made.push(link.display().to_string());
            }
        }
        Ok(made)
    }
}

impl Target for NixTarget {
    fn describe(&self) -> String {
        match &self.dest {
            Dest::Cache(p) => format!("nix binary cache file://{}", p.display()),
            Dest::Store { uri: None, .. } => "nix store (local)".into(),
            Dest::Store { uri: Some(u), .. } => format!("nix store {u}"),
        }
    }

    fn plan(&mut self, head: &Head) -> Result<TargetPlan> {
        let in_bundle: BTreeSet<&StorePath> = self.objects.iter().map(|o| &o.path).collect();
        let mut outside: Vec<StorePath> = self
            .objects
            .iter()
            .flat_map(|o| o.references.iter())
            .filter(|r| !in_bundle.contains(r))
            .cloned()
            .collect();
        outside.sort();
        outside.dedup();
        let mut all: Vec<StorePath> = self.objects.iter().map(|o| o.path.clone()).collect();
        all.extend(outside.iter().cloned());
        let valid = self.valid(&all)?;
        let refs: BTreeMap<StorePath, Vec<StorePath>> = self
            .objects
            .iter()
            .map(|o| (o.path.clone(), o.references.clone()))
            .collect();
        let order = closure_order(&refs, |p| valid.contains(p)).map_err(|e| {
            InputFailure(format!(
                "{e}: it is neither in this bundle nor valid in {}; import the bundle that carries it first, or rebuild this one",
                self.describe()
            ))
        })?;
        let mut plan = TargetPlan::default();
        let by_path: BTreeMap<&StorePath, &NixObject> =
            self.objects.iter().map(|o| (&o.path, o)).collect();
        self.new_paths.clear();
        for (p, _) in order {
            let o = by_path[&p];
            if valid.contains(&p) {
                plan.present_objects.push(format!("nix-path {p}"));
                continue;
            }
            plan.new_objects.push(format!("nix-path {p}"));
            if plan.needed.insert(o.blob) {
                let b = head.manifest.blob(&o.blob).expect("checked in nix_objects");
                if b.offset.is_none() {
                    return Err(InputFailure(format!(
                        "{p} is new on {} but this delta bundle does not carry its NAR",
                        self.describe()
                    ))
                    .into());
                }
                plan.bytes_to_write += b.size;
            }
            self.new_paths.push(p);
        }
        self.check_space(plan.bytes_to_write)?;
        if self.in_place() {
            // The stream still verifies every blob; the NARs are read from the file
            // once it has.
            plan.needed.clear();
        }
        Ok(plan)
    }

    fn begin(&mut self, blob: &BlobEntry) -> io::Result<()> {
        let dir = self.cache_dir()?.join("nar");
        fs::create_dir_all(&dir)?;
        let temp = || {
            tempfile::Builder::new()
                .prefix(&format!(".{}.", blob.digest.short()))
                .suffix(".tmp")
                .tempfile_in(&dir)
        };
        self.receiving = Some(BufWriter::with_capacity(1 << 20, temp()?));
        Ok(())
    }

    fn write(&mut self, _blob: &BlobEntry, chunk: &[u8]) -> io::Result<()> {
        self.receiving
            .as_mut()
            .ok_or_else(|| io::Error::other("write before begin"))?
            .write_all(chunk)
    }

    fn commit(&mut self, blob: &BlobEntry) -> io::Result<()> {
        let tmp = self
            .receiving
            .take()
            .ok_or_else(|| io::Error::other("commit before begin"))?;
        // The compressed bytes verified: the file may take its content-addressed
        // name. Whether it decodes to the NAR hash is checked in `finish`, before
        // anything is registered.
        let dir = self.cache_dir()?;
        let tmp = tmp.into_inner().map_err(|e| e.into_error())?;
        if matches!(self.dest, Dest::Cache(_)) {
            // A fleet's cache must not end up with a narinfo whose NAR was lost. The
            // private staging cache lives for one `nix copy` and needs no fsync.
            tmp.as_file().sync_all()?;
        }
        let path = dir.join(NarInfo::nar_url(&NarHash::from_digest(&blob.digest), "zst"));
        tmp.persist(&path).map_err(|e| e.error)?;
        // A fleet's cache is checked NAR by NAR before any narinfo appears: nothing
        // else checks it before hosts substitute from it. A store checks each NAR
        // against its signed NAR hash itself as it adds the path.
        if matches!(self.dest, Dest::Cache(_)) {
            if self.decoding.is_none() {
                self.decoding = Some(Decoders::start()?);
            }
            if let Some(d) = self.decoding.as_mut() {
                d.queue(blob, path);
            }
        }
        Ok(())
    }

    fn finish(&mut self, head: &Head, progress: &Progress) -> Result<serde_json::Value> {
        self.check_decoded()?;
        if !self.new_paths.is_empty() {
            if self.in_place() {
                self.serve_in_place(head, progress)?;
            } else {
                let dir = self.cache_dir()?;
                self.write_cache(&dir)?;
                if matches!(self.dest, Dest::Store { .. }) {
                    self.copy_into_store(&format!("file://{}", dir.display()), &[], progress)?;
                }
            }
        }
        let roots = self.make_gc_roots()?;
        if let Dest::Store { gc_dir: None, .. } = &self.dest {
            if self.objects.iter().any(|o| !o.gc_roots.is_empty()) {
                progress.warn(format!(
                    "{} is not a local store: no GC roots were made there",
                    self.describe()
                ));
            }
        }
        let added: Vec<&str> = self.new_paths.iter().map(|p| p.as_str()).collect();
        Ok(json!({
            "added": added,
            "present": self.objects.len() - added.len(),
            "gcRoots": roots,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_copy_progress_lines() {
        assert_eq!(
            copying_path("copying path '/nix/store/05mgdl19wlwc3dkxym9rciy2cj8m0lk2-bench-leaf-0279' from 'file:///tmp/gapbundle-nix-stage-x'..."),
            Some("/nix/store/05mgdl19wlwc3dkxym9rciy2cj8m0lk2-bench-leaf-0279")
        );
        assert_eq!(copying_path("copying 331 paths..."), None);
        assert_eq!(copying_path("warning: something"), None);
        assert_eq!(
            refusal("error: hash mismatch importing path '/nix/store/5d3l6hj3bzw8wh1fiqwv3mhxxnzyx7c1-gb-test-lib';"),
            Some(Refusal::Mismatch(
                "/nix/store/5d3l6hj3bzw8wh1fiqwv3mhxxnzyx7c1-gb-test-lib".into()
            ))
        );
        assert_eq!(
            refusal("error: cannot add path '/nix/store/47ya82lx8w7kvbrqn21j2pq58m4i4hg4-bench-leaf-0270' because it lacks a valid signature"),
            Some(Refusal::Untrusted(
                "/nix/store/47ya82lx8w7kvbrqn21j2pq58m4i4hg4-bench-leaf-0270".into()
            ))
        );
        assert_eq!(refusal("copying path '/nix/store/x' from 'y'..."), None);
        assert_eq!(with_loopback(None), "127.0.0.1");
        assert_eq!(with_loopback(Some("".into())), "127.0.0.1");
        assert_eq!(
            with_loopback(Some(".corp.example,10.0.0.0/8".into())),
            ".corp.example,10.0.0.0/8,127.0.0.1"
        );
    }

    #[test]
    fn store_arguments() {
        assert!(
            matches!(parse_dest(Some("file:///srv/cache")).unwrap(), Dest::Cache(p) if p == Path::new("/srv/cache"))
        );
        assert!(parse_dest(Some("file://relative")).is_err());
        let Dest::Store { uri, gc_dir, .. } = parse_dest(Some("/mnt/t")).unwrap() else {
            panic!()
        };
        assert_eq!(uri.as_deref(), Some("local?root=/mnt/t"));
        assert_eq!(
            gc_dir.unwrap(),
            Path::new("/mnt/t/nix/var/nix/gcroots/gapbundle")
        );
        let Dest::Store { uri, .. } = parse_dest(Some("local?root=/mnt/t")).unwrap() else {
            panic!()
        };
        assert_eq!(uri.as_deref(), Some("local?root=/mnt/t"));
        let Dest::Store { gc_dir, .. } = parse_dest(Some("ssh://host")).unwrap() else {
            panic!()
        };
        assert!(gc_dir.is_none());
    }
}
