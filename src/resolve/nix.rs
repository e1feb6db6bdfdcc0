//! Nix installables and store paths to NAR blobs and `nix-path` objects.
//!
//! Nix is never evaluated here: the real `nix` CLI builds each installable
//! (`nix build --json --no-link`) and reports its closure (`nix path-info
//! --recursive --json`); `nix-store --dump` streams each path's NAR. While a NAR
//! streams it is hashed (the NAR hash must be the one Nix recorded, or create stops
//! with both values) and zstd-compressed at a fixed level, in frames of a fixed size
//! (`bundle::frames`), into the cache, so no NAR is ever held in memory and the same
//! store path always gives the same blob. A small index in the cache
//! (`nix-nar/<packing>/<nar sha256>`) remembers which blob holds which NAR, so a
//! second create does not compress anything again.
//!
//! Each path is signed with the bundle key(s) over Nix's own fingerprint, so Nix
//! accepts the imported paths with nothing but our public key in
//! `trusted-public-keys`. Blobs are ranked by topological depth: in the file, every
//! NAR comes after the NARs of its references.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use fs_err as fs;
use serde::{Deserialize, Serialize};

use crate::bundle::digest::HashingWriter;
use crate::bundle::frames::{FrameCutter, FrameEncoder, FrameSink, FRAME_CONTENT};
use crate::bundle::keys::SecretKey;
use crate::bundle::manifest::{BlobEntry, ContentInfo, Encoding, Kind, Object};
use crate::bundle::meta::{Meta, NixPathMeta};
use crate::bundle::Digest;
use crate::error::InputFailure;
use crate::io::cas::Cas;
use crate::io::process::Cmd;
use crate::nixfmt::{
    closure_order, nar, parse_path_info, sign_path, valid_root_name, NarHash, PathInfo, StorePath,
    NAR_ZSTD_MEDIA_TYPE,
};
use crate::progress::Progress;
use crate::spec::LoadedSpec;

/// zstd level for NARs. Fixed, so the same NAR always gives the same blob.
pub const NAR_ZSTD_LEVEL: i32 = 3;

/// What to tell someone without Nix.
pub const NIX_HINT: &str =
    "install Nix (Debian: `apt-get install nix-bin`; elsewhere https://nixos.org/download)";

/// A `nix`, `nix-store` … command. Flakes and the `nix` command are experimental in
/// Nix 2.8: unless the user's `NIX_CONFIG` already says something about
/// `experimental-features`, `extra-experimental-features = nix-command flakes` is
/// appended to it (extra- adds to what nix.conf enables instead of replacing it).
pub fn nix_cmd(program: &str) -> Cmd {
    let cmd = Cmd::new(program, NIX_HINT);
    match std::env::var("NIX_CONFIG") {
        Ok(c) if c.contains("experimental-features") => cmd,
        Ok(c) => cmd.env(
            "NIX_CONFIG",
            format!("{c}\nextra-experimental-features = nix-command flakes"),
        ),
        Err(_) => cmd.env(
            "NIX_CONFIG",
            "extra-experimental-features = nix-command flakes",
        ),
    }
}

/// The spec's folder as an absolute path (installables are relative to it).
fn base_dir(spec: &LoadedSpec) -> PathBuf {
    std::path::absolute(&spec.base).unwrap_or_else(|_| spec.base.clone())
}

#[derive(Deserialize)]
struct BuildResult {
    outputs: BTreeMap<String, String>,
}

/// Builds an installable and returns its output paths (in output-name order).
fn build(spec: &LoadedSpec, installable: &str, progress: &Progress) -> Result<Vec<StorePath>> {
    let base = base_dir(spec);
    warn_untracked(&base, installable, progress);
    let out = nix_cmd("nix")
        .args(["build", "--json", "--no-link", installable])
        .current_dir(&base)
        .output()
        .with_context(|| {
            format!(
                "building `{installable}` (relative to {}): fix the flake or the installable in {}",
                base.display(),
                spec.path.display()
            )
        })?;
    let results: Vec<BuildResult> = serde_json::from_slice(&out)
        .with_context(|| format!("unexpected `nix build --json` output for `{installable}`"))?;
    let mut paths = Vec::new();
    for r in results {
        for p in r.outputs.values() {
            paths.push(StorePath::parse(p)?);
        }
    }
    if paths.is_empty() {
        bail!("`nix build {installable}` produced no output path");
    }
    Ok(paths)
}

/// The flake reference part of an installable (`.` in `.#pkg`).
fn flake_ref(installable: &str) -> &str {
    installable.split_once('#').map_or(installable, |(f, _)| f)
}

/// The local folder of a flake reference, when it has one.
fn flake_dir(base: &Path, flake: &str) -> Option<PathBuf> {
    let f = flake
        .strip_prefix("path:")
        .or_else(|| flake.strip_prefix("git+file://"))
        .unwrap_or(flake);
    let f = f.split('?').next().unwrap_or(f);
    (f.starts_with('.') || f.starts_with('/')).then(|| base.join(f))
}

/// Nix copies a flake in a git tree from git's index: untracked files are invisible
/// to it, which surprises everyone once. Warn (with `git add`) when there are any.
fn warn_untracked(base: &Path, installable: &str, progress: &Progress) {
    let flake = flake_ref(installable);
    if flake.starts_with("path:") {
        return;
    }
    let Some(dir) = flake_dir(base, flake) else {
        return;
    };
    let out = Cmd::new("git", "")
        .args(["status", "--porcelain", "--untracked-files=all", "--", "."])
        .current_dir(&dir)
        .output();
    let Ok(out) = out else {
        return; // not a git tree, or no git: Nix copies the folder as it is
    };
    let untracked: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("?? "))
        .map(str::to_string)
        .collect();
    if !untracked.is_empty() {
        let shown: Vec<_> = untracked.iter().take(5).cloned().collect();
        progress.warn(format!(
            "{}: {} untracked file(s) in the flake's git tree ({}{}) are invisible to Nix; `git add` them if the flake needs them",
            installable,
            untracked.len(),
            shown.join(", "),
            if untracked.len() > 5 { ", …" } else { "" }
        ));
    }
}

fn single_output(installable: &str, paths: Vec<StorePath>) -> Result<PathBuf> {
    match paths.as_slice() {
        [p] => Ok(PathBuf::from(p.as_str())),
        _ => Err(InputFailure(format!(
            "`{installable}` has {} outputs ({}); name one, e.g. `{installable}^out`",
            paths.len(),
            paths
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}

/// Builds a flake installable that produces an OCI or docker archive and returns the
/// archive's path: the output itself when it is a file, or the one `.tar` file in it
/// when it is a folder.
pub fn build_archive(spec: &LoadedSpec, installable: &str) -> Result<PathBuf> {
    let progress = Progress::quiet();
    let out = single_output(installable, build(spec, installable, &progress)?)?;
    if out.is_file() {
        return Ok(out);
    }
    let tars: Vec<PathBuf> = fs::read_dir(&out)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "tar"))
        .collect();
    match tars.as_slice() {
        [t] => Ok(t.clone()),
        _ => Err(InputFailure(format!(
            "images entry `installable: {installable}` built {}, which is a folder without exactly one .tar file in it; make the output the archive itself (e.g. skopeo copy … oci-archive:$out)",
            out.display()
        ))
        .into()),
    }
}

/// Builds a flake installable that holds rendered Kubernetes YAML and returns its
/// store path: a file, or a folder of YAML files. (Called by the manifests resolver.)
pub fn build_manifests(spec: &LoadedSpec, installable: &str) -> Result<PathBuf> {
    let progress = Progress::quiet();
    single_output(installable, build(spec, installable, &progress)?)
}

/// `nix path-info --recursive --json` over `paths`.
fn closure(paths: &[StorePath]) -> Result<Vec<PathInfo>> {
    let out = nix_cmd("nix")
        .args(["path-info", "--recursive", "--json"])
        .args(paths.iter().map(|p| p.as_str()))
        .output()?;
    Ok(parse_path_info(&out)?)
}

#[derive(Deserialize)]
struct Archived {
    path: String,
    #[serde(default)]
    inputs: BTreeMap<String, Archived>,
}

fn archived_paths(a: &Archived, out: &mut Vec<StorePath>) -> Result<()> {
    out.push(StorePath::parse(&a.path)?);
    for i in a.inputs.values() {
        archived_paths(i, out)?;
    }
    Ok(())
}

/// The flake's own source and its inputs' sources (`nix flake archive --json`).
fn flake_inputs(base: &Path, flake: &str) -> Result<Vec<StorePath>> {
    let out = nix_cmd("nix")
        .args(["flake", "archive", "--json", flake])
        .current_dir(base)
        .output()
        .with_context(|| format!("archiving the inputs of flake `{flake}`"))?;
    let a: Archived = serde_json::from_slice(&out)
        .with_context(|| format!("unexpected `nix flake archive --json` output for `{flake}`"))?;
    let mut v = Vec::new();
    archived_paths(&a, &mut v)?;
    Ok(v)
}

/// What the lock records for one `nix:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockedNix {
    /// The store paths the entry resolved to.
    pub paths: Vec<String>,
    /// sha256 of the flake.lock the installable was built with, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flake_lock: Option<Digest>,
    /// Sources of the flake and its inputs (with `includeFlakeInputs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flake_inputs: Vec<String>,
}

struct Root {
    key: String,
    locked: LockedNix,
    gc_root: Option<String>,
}

fn resolve_entry(
    spec: &LoadedSpec,
    i: usize,
    progress: &Progress,
) -> Result<(Root, Vec<StorePath>)> {
    let e = &spec.spec.nix[i];
    let base = base_dir(spec);
    let bad = |m: String| -> anyhow::Error { InputFailure(format!("nix[{i}]: {m}")).into() };
    if let Some(r) = &e.gc_root {
        if !valid_root_name(r) {
            return Err(bad(format!(
                "gcRoot `{r}` must be a plain file name (letters, digits, `+-._`)"
            )));
        }
    }
    let (key, paths, flake, flake_lock) = match (&e.installable, &e.store_path) {
        (Some(inst), None) => {
            let paths = build(spec, inst, progress)?;
            let flake = flake_ref(inst).to_string();
            let lock = flake_dir(&base, &flake)
                .map(|d| d.join("flake.lock"))
                .filter(|p| p.is_file())
                .map(|p| fs::read(p).map(|b| Digest::of(&b)))
                .transpose()?;
            (format!("installable:{inst}"), paths, flake, lock)
        }
        (None, Some(sp)) => {
            let p = StorePath::parse(sp.trim_end_matches('/')).map_err(|e| bad(e.to_string()))?;
            (
                format!("storePath:{p}"),
                vec![p.clone()],
                format!("path:{p}"),
                None,
            )
        }
        _ => {
            return Err(bad(
                "give exactly one of `installable` or `storePath`".into()
            ))
        }
    };
    let mut inputs = Vec::new();
    if e.include_flake_inputs {
        inputs = flake_inputs(&base, &flake)?;
    }
    progress.message(format!(
        "nix[{i}] {}: {}",
        key.split_once(':').map_or(key.as_str(), |(_, k)| k),
        paths
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    ));
    let mut all = paths.clone();
    all.extend(inputs.iter().cloned());
    let root = Root {
        key,
        locked: LockedNix {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            flake_lock,
            flake_inputs: inputs.iter().map(|p| p.to_string()).collect(),
        },
        gc_root: e.gc_root.clone(),
    };
    Ok((root, all))
}

/// Resolves the spec's `nix:` entries to NAR blobs and `nix-path` objects, each path
/// signed with `keys` over its Nix fingerprint.
pub fn resolve(
    spec: &LoadedSpec,
    cas: &Cas,
    lock: &mut super::LockCtx<'_>,
    progress: &Progress,
    keys: &[SecretKey],
) -> Result<super::Contribution> {
    if spec.spec.nix.is_empty() {
        check_stale(lock)?;
        return Ok(super::Contribution::default());
    }
    let mut wanted: Vec<StorePath> = Vec::new();
    let mut gc_roots: BTreeMap<StorePath, BTreeSet<String>> = BTreeMap::new();
    for i in 0..spec.spec.nix.len() {
        let (root, paths) = resolve_entry(spec, i, progress)?;
        check_lock(lock, &root, progress)?;
        if let Some(name) = &root.gc_root {
            let outs: Vec<&String> = root.locked.paths.iter().collect();
            for (k, p) in outs.iter().enumerate() {
                let n = if outs.len() == 1 {
                    name.clone()
                } else {
                    format!("{name}-{k}")
                };
                gc_roots.entry(StorePath::parse(p)?).or_default().insert(n);
            }
        }
        lock.new
            .nix
            .insert(root.key.clone(), serde_json::to_value(&root.locked)?);
        wanted.extend(paths);
    }
    check_stale(lock)?;
    wanted.sort();
    wanted.dedup();
    let infos = closure(&wanted)?;
    let refs: BTreeMap<StorePath, Vec<StorePath>> = infos
        .iter()
        .map(|p| (p.path.clone(), p.references.clone()))
        .collect();
    let order = closure_order(&refs, |_| false).context("the closure Nix reported")?;
    let depth: BTreeMap<&StorePath, u32> = order.iter().map(|(p, d)| (p, *d)).collect();

    let total: u64 = infos.iter().map(|p| p.nar_size).sum();
    let bar = progress.bar(format!("nix closure ({} paths)", infos.len()), total);
    let blobs = nar_blobs(cas, &infos, &|n| bar.inc(n))?;
    bar.finish("packed");

    let mut c = super::Contribution::default();
    for (info, (digest, size)) in infos.iter().zip(blobs) {
        c.blobs.push((
            BlobEntry {
                digest,
                size,
                media_type: NAR_ZSTD_MEDIA_TYPE.into(),
                offset: None,
                encoding: Some(Encoding::Zstd),
                content: Some(ContentInfo {
                    digest: info.nar_hash.digest(),
                    size: info.nar_size,
                }),
            },
            depth.get(&info.path).copied().unwrap_or(0),
        ));
        let fp = info.fingerprint();
        let mut sigs: Vec<String> = info.sigs.clone();
        sigs.extend(keys.iter().map(|k| sign_path(k, &fp)));
        sigs.sort();
        sigs.dedup();
        let meta = Meta::NixPath(NixPathMeta {
            nar_hash: info.nar_hash,
            nar_size: info.nar_size,
            references: info.references.clone(),
            deriver: info.deriver.clone(),
            ca: info.ca.clone(),
            sigs,
            gc_roots: gc_roots
                .get(&info.path)
                .map(|r| r.iter().cloned().collect()),
            extra: Default::default(),
        });
        c.objects.push(Object {
            kind: Kind::NixPath,
            name: info.path.to_string(),
            digest,
            media_type: NAR_ZSTD_MEDIA_TYPE.into(),
            size,
            blobs: vec![digest],
            meta,
        });
    }
    Ok(c)
}

/// With `--locked`, a nix entry the lock has but the spec no longer has is a change.
fn check_stale(lock: &super::LockCtx<'_>) -> Result<()> {
    if !lock.locked {
        return Ok(());
    }
    let stale: Vec<&String> = lock
        .old
        .nix
        .keys()
        .filter(|k| !lock.new.nix.contains_key(*k))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    Err(InputFailure(format!(
        "--locked: the lock file has nix entries the spec no longer has ({}); run create without --locked to update it",
        stale.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
    ))
    .into())
}

fn check_lock(lock: &super::LockCtx<'_>, root: &Root, progress: &Progress) -> Result<()> {
    let old: Option<LockedNix> = lock
        .old
        .nix
        .get(&root.key)
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    match old {
        None if lock.locked => Err(InputFailure(format!(
            "--locked: nix entry `{}` is not in the lock file; run create without --locked to add it",
            root.key
        ))
        .into()),
        Some(old) if old != root.locked => {
            let diff = lock_diff(&old, &root.locked);
            if lock.locked {
                return Err(InputFailure(format!(
                    "--locked: nix entry `{}` resolves differently from the lock file ({diff}); run create without --locked to update the lock",
                    root.key
                ))
                .into());
            }
            progress.message(format!("{}: changed ({diff})", root.key));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// What changed between two lock entries, for messages.
fn lock_diff(old: &LockedNix, new: &LockedNix) -> String {
    let mut parts = Vec::new();
    if old.paths != new.paths {
        parts.push(format!(
            "store paths {} -> {}",
            old.paths.join(" "),
            new.paths.join(" ")
        ));
    }
    if old.flake_lock != new.flake_lock {
        let show = |d: &Option<Digest>| d.map_or("none".to_string(), |d| d.to_string());
        parts.push(format!(
            "flake.lock {} -> {}",
            show(&old.flake_lock),
            show(&new.flake_lock)
        ));
    }
    if old.flake_inputs != new.flake_inputs {
        parts.push(format!(
            "flake sources {} -> {}",
            old.flake_inputs.join(" "),
            new.flake_inputs.join(" ")
        ));
    }
    parts.join("; ")
}

/// NAR blobs for every path, several at a time, in the order of `infos`.
fn nar_blobs(
    cas: &Cas,
    infos: &[PathInfo],
    on_bytes: &(dyn Fn(u64) + Sync),
) -> Result<Vec<(Digest, u64)>> {
    let jobs = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(infos.len().max(1));
    let next = Mutex::new(0usize);
    type Slot = Option<Result<(Digest, u64)>>;
    let results: Mutex<Vec<Slot>> = Mutex::new((0..infos.len()).map(|_| None).collect());
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                let mut packer = Packer::default();
                loop {
                    if failed.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let i = {
                        let mut n = next.lock().expect("not poisoned");
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(info) = infos.get(i) else { return };
                    let r = nar_blob(cas, info, &mut packer, on_bytes);
                    if r.is_err() {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                    results.lock().expect("not poisoned")[i] = Some(r);
                }
            });
        }
    });
    let results = results.into_inner().expect("not poisoned");
    let mut out = Vec::with_capacity(infos.len());
    for r in results {
        match r {
            Some(r) => out.push(r?),
            None => continue,
        }
    }
    if out.len() != infos.len() {
        bail!("packing NARs stopped early");
    }
    Ok(out)
}

/// How this version packs NARs (level, frame size). The cache index is kept per
/// packing: a blob packed another way by an older version is never reused, since a
/// warm cache would then give other bytes than a cold one for the same spec.
const NAR_PACKING: &str = "zstd3-frames4m";

fn index_path(cas: &Cas, nar: &NarHash) -> PathBuf {
    cas.root()
        .join("nix-nar")
        .join(NAR_PACKING)
        .join(nar.digest().hex())
}

/// The blob holding one path's NAR: from the cache index, or made by streaming the
/// NAR through a hasher and a zstd encoder into the cache. The NAR comes from our own
/// walk over the store path (no process per path); should its hash ever differ from
/// Nix's, `nix-store --dump` is asked instead, and a mismatch there too stops create.
fn nar_blob(
    cas: &Cas,
    info: &PathInfo,
    packer: &mut Packer,
    on_bytes: &dyn Fn(u64),
) -> Result<(Digest, u64)> {
    let index = index_path(cas, &info.nar_hash);
    if let Ok(text) = std::fs::read_to_string(&index) {
        if let Some((d, s)) = text.trim().split_once(' ') {
            if let (Ok(d), Ok(s)) = (d.parse::<Digest>(), s.parse::<u64>()) {
                if cas.contains(&d, Some(s)) {
                    on_bytes(info.nar_size);
                    return Ok((d, s));
                }
            }
        }
    }
    let want = (info.nar_hash.digest(), info.nar_size);
    let own = pack(
        cas,
        info,
        packer,
        |w| dump_nar(Path::new(info.path.as_str()), w),
        on_bytes,
    );
    let found = match own {
        Ok(found) if found.1 == want => found,
        _ => pack(
            cas,
            info,
            packer,
            |w| {
                let mut dump = nix_cmd("nix-store")
                    .args(["--dump", info.path.as_str()])
                    .stream()
                    .map_err(io::Error::other)?;
                io::copy(&mut dump, w)?;
                dump.finish().map_err(io::Error::other)
            },
            &|_| {},
        )?,
    };
    let (writer, (d, n)) = found;
    if (d, n) != want {
        return Err(anyhow!(
            "the NAR of {} does not match what Nix recorded: Nix says {} ({} bytes), `nix-store --dump` gives {} ({n} bytes); run `nix-store --verify --check-contents --repair` and create again",
            info.path,
            info.nar_hash,
            info.nar_size,
            NarHash::from_digest(&d),
        ));
    }
    let (d, s) = writer.finish(None)?;
    if let Some(dir) = index.parent() {
        fs::create_dir_all(dir)?;
    }
    // A hint, not data: temp + rename but no fsync (one per path would cost more than
    // packing small paths); a lost or stale entry only means packing again.
    let mut tmp = tempfile::NamedTempFile::new_in(index.parent().unwrap_or(cas.root()))?;
    tmp.write_all(format!("{d} {s}\n").as_bytes())?;
    tmp.persist(&index).map_err(|e| e.error)?;
    Ok((d, s))
}

/// Streams a NAR made by `produce` through a hasher and the zstd encoder into a cache
/// writer; returns the writer (not yet named) and the NAR's digest and size.
///
/// Walking and hashing run on this thread, compressing on another (like `nix-store
/// --export | zstd`), so a single large path uses two cores too. The NAR travels in
/// frames of [`FRAME_CONTENT`] bytes (see [`crate::bundle::frames`] for why): the
/// walk fills one buffer while the other is compressed, and the two are handed back
/// and forth, so memory stays at two frames whatever the path's size.
fn pack(
    cas: &Cas,
    info: &PathInfo,
    packer: &mut Packer,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    on_bytes: &dyn Fn(u64),
) -> Result<(crate::io::cas::BlobWriter, (Digest, u64))> {
    let mut out = cas.writer()?;
    if packer.encoder.is_none() {
        packer.encoder = Some(FrameEncoder::new(NAR_ZSTD_LEVEL)?);
    }
    let encoder = packer.encoder.as_mut().expect("just made");
    let mut buffers = std::mem::take(&mut packer.buffers);
    buffers.resize_with(2, || Vec::with_capacity(FRAME_CONTENT));
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    std::thread::scope(|s| {
        let compressor = s.spawn(move || -> io::Result<crate::io::cas::BlobWriter> {
            let mut failed = None;
            for frame in full_rx {
                if failed.is_none() {
                    failed = encoder.encode(&frame, &mut out).err();
                }
                // The walk may be done already and gone; then the buffer just drops.
                let _ = free_tx.send(frame);
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(out),
            }
        });
        let current = buffers.pop().expect("two buffers");
        let feeder = FrameCutter::new(
            current,
            Handoff {
                spare: buffers.pop(),
                full: full_tx,
                free: free_rx,
            },
        );
        let mut w = io::BufWriter::with_capacity(
            256 << 10,
            HashingWriter::new(ProgressWriter {
                inner: feeder,
                on_bytes,
            }),
        );
        let produced = produce(&mut w).and_then(|()| w.flush());
        let (feeder, d, n) = w.into_inner().map_err(|e| e.into_error())?.finish();
        let sent = match produced {
            Ok(()) => feeder
                .inner
                .finish()
                .map(|(handoff, last)| packer.buffers = handoff.buffers_back(last)),
            Err(e) => Err(e), // dropping the feeder ends the compressor's loop
        };
        let writer = compressor
            .join()
            .map_err(|_| anyhow!("the zstd thread panicked"))?;
        sent.with_context(|| format!("streaming the NAR of {}", info.path))?;
        Ok((writer?, (d, n)))
    })
}

/// What a packing worker keeps from one path to the next: the zstd context and the
/// two frame buffers. (Made afresh for every path, 12 MiB of new memory per path
/// showed up as page faults and zeroing on closures of many small paths.)
#[derive(Default)]
struct Packer {
    encoder: Option<FrameEncoder>,
    buffers: Vec<Vec<u8>>,
}

/// Hands each full frame buffer to the compressing thread and takes an emptied one
/// back (there are two in all).
struct Handoff {
    /// A buffer not yet handed over.
    spare: Option<Vec<u8>>,
    full: std::sync::mpsc::SyncSender<Vec<u8>>,
    free: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl FrameSink for Handoff {
    fn frame(&mut self, content: Vec<u8>) -> io::Result<Vec<u8>> {
        let stopped = || io::Error::new(io::ErrorKind::BrokenPipe, "the zstd thread stopped");
        let next = match self.spare.take() {
            Some(b) => b,
            None => self.free.recv().map_err(|_| stopped())?,
        };
        self.full.send(content).map_err(|_| stopped())?;
        Ok(next)
    }
}

impl Handoff {
    /// Lets the compressing thread finish and returns both buffers (`last` is the
    /// one the cutter held) for the next path.
    fn buffers_back(self, last: Vec<u8>) -> Vec<Vec<u8>> {
        let Handoff { spare, full, free } = self;
        drop(full);
        // Each buffer comes back once the compressor is done with it.
        let mut buffers: Vec<Vec<u8>> = free.iter().collect();
        buffers.push(last);
        buffers.extend(spare);
        buffers
    }
}

/// Writes the NAR of `path` (Nix's format: entries sorted by name, the executable
/// bit from the owner's x bit, symlinks as their target), as `nix-store --dump` does.
pub fn dump_nar(path: &Path, w: &mut dyn Write) -> io::Result<()> {
    nar::write_str(w, nar::MAGIC)?;
    // One read buffer for the whole walk: large reads, and no 8 KiB io::copy loop.
    let mut buf = vec![0u8; 256 << 10];
    dump_node(path, w, &mut buf)
}

fn dump_node(path: &Path, w: &mut dyn Write, buf: &mut [u8]) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let meta = fs::symlink_metadata(path)?;
    let ft = meta.file_type();
    nar::write_strs(w, &[b"(", b"type"])?;
    if ft.is_symlink() {
        let target = fs::read_link(path)?;
        nar::write_strs(w, &[b"symlink", b"target", target.as_os_str().as_bytes()])?;
    } else if ft.is_file() {
        nar::write_str(w, b"regular")?;
        if meta.permissions().mode() & 0o100 != 0 {
            nar::write_strs(w, &[b"executable", b""])?;
        }
        nar::write_str(w, b"contents")?;
        let len = meta.len();
        nar::write_u64(w, len)?;
        let mut f = fs::File::open(path)?;
        let mut copied = 0u64;
        while copied < len {
            let want = buf.len().min((len - copied) as usize);
            let n = f.read(&mut buf[..want])?;
            if n == 0 {
                break;
            }
            w.write_all(&buf[..n])?;
            copied += n as u64;
        }
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} changed size while it was read", path.display()),
            ));
        }
        nar::write_padding(w, len)?;
    } else if ft.is_dir() {
        nar::write_str(w, b"directory")?;
        let mut names: Vec<std::ffi::OsString> = fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            nar::write_strs(w, &[b"entry", b"(", b"name", name.as_bytes(), b"node"])?;
            dump_node(&path.join(&name), w, buf)?;
            nar::write_str(w, b")")?;
        }
    } else {
        return Err(io::Error::other(format!(
            "{} is neither a file, a folder nor a symlink, which a NAR cannot hold",
            path.display()
        )));
    }
    nar::write_str(w, b")")
}

struct ProgressWriter<'a, W> {
    inner: W,
    on_bytes: &'a dyn Fn(u64),
}

impl<W: Write> Write for ProgressWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flake_refs_and_folders() {
        assert_eq!(flake_ref(".#packages.x86_64-linux.a"), ".");
        assert_eq!(flake_ref("path:./sub#x"), "path:./sub");
        let b = Path::new("/spec");
        assert_eq!(flake_dir(b, "."), Some(PathBuf::from("/spec/.")));
        assert_eq!(
            flake_dir(b, "path:./sub"),
            Some(PathBuf::from("/spec/./sub"))
        );
        assert_eq!(flake_dir(b, "/abs?dir=x"), Some(PathBuf::from("/abs")));
        assert_eq!(flake_dir(b, "github:o/r"), None);
    }
}
