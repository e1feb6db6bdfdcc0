//! Nix paths into a Nix store or a binary cache.
//!
//! `nix-store --import` reads each whole NAR into memory before it writes it (Nix
//! issue 9610), so it cannot be the way in for a path of several gigabytes. The
//! bundle's NAR blobs are already `.nar.zst` files, which is exactly what a Nix
//! binary cache serves, so the import offers Nix a binary cache and lets it stream
//! from it:
//!
//! - `--nix-store file:///srv/cache`: the blobs stream straight into `nar/` under
//!   temporary names, and each is renamed to `nar/<nix32 file hash>.nar.zst` once
//!   it verified and decompressed to a valid NAR of its NAR hash and size (one
//!   worker per core, while the bundle goes on streaming; see `cache`); after the
//!   whole bundle verified and every NAR passed, `<hash>.narinfo` files are
//!   written in reference order. That cache
//!   is the result: a fleet substitutes from it, nothing else checks it first, and
//!   its narinfos carry the bundle key's path signatures.
//! - a store (the default local store; a path, `/mnt/target` or `mnt/target`, as
//!   Nix reads one; `local?root=/mnt/target`; or any URI `nix copy --to` takes),
//!   from a bundle file: once the whole bundle verified, the same cache is served
//!   from the bundle file in place on a loopback port (`crate::io::serve`) and
//!   `nix copy --from http://127.0.0.1:PORT/<random>` adds the paths, decompressing
//!   and streaming each NAR into the store with bounded memory, several paths at once.
//!   Nothing is copied out of the bundle: staging the blobs in a `file://` folder
//!   first wrote every byte once more and then made the disk write it back and
//!   delete it while Nix filled the store, a third of the whole import on the
//!   benchmark closure. The server hashes each blob again as Nix reads it and holds
//!   back its last bytes if the file changed since it verified, and decompresses
//!   and parses each NAR as it serves it (within its declared size): Nix restores a
//!   NAR before it compares its hash, so it must never be handed a bomb or a NAR
//!   that is not one. Into a store this process writes itself, the paths whose NAR
//!   is at most 1 MiB go in through one `nix-store --serve --write` instead
//!   (`stream`: `nix copy` costs milliseconds per path however small, and a NixOS
//!   closure is mostly small paths), each NAR checked whole before Nix sees it and
//!   registered with its signatures.
//! - a store, from stdin: a pipe can be read only once, so the cache is written to
//!   a private staging folder (no fsync: it lives for one command), every NAR
//!   checked there as for a `file://` cache, and `nix copy --from file://STAGE`
//!   reads it. The NARs stay compressed there on purpose: staging them
//!   uncompressed was measured slower still.
//!
//! For a store, Nix checks every path's signature against `trusted-public-keys`,
//! which is set (for that one command) to the keys given with `--trust`, so no
//! `--no-check-sigs` is needed: Nix itself checks what we checked. Only with
//! `--allow-unsigned` and no trusted key is `--no-check-sigs` passed. Nix also
//! checks each NAR against its signed NAR hash before it registers the path, and
//! refuses every path that references one it refused; what it restored of a
//! refused path (it restores first, then compares) is removed afterwards. A bundle
//! damaged anywhere still registers nothing, since Nix is only started after every
//! blob's digest matched; only a bundle *signed* with a wrong NAR hash (a faulty
//! `create`) gets its other paths registered. Then each `gcRoot` becomes a symlink in
//! `<root>/nix/var/nix/gcroots/gapbundle/`.
//!
//! Every path's signature by a trusted key is checked against Nix's fingerprint
//! before anything is written to the target (in the plan, once it knows that a path
//! or its signatures will be). Paths already valid on the target are skipped, so a
//! second import is a no-op (one that finds every path valid and signed checks no
//! path signature and reads none of the bundle's data: `crate::commands::import`),
//! and since nothing is registered before the last byte of the bundle verified, an
//! interrupted import completes on rerun.
//!
//! The parts: `validate` (what section 14.5 asks before anything is written),
//! `cache` (the `file://` cache: NARs as they stream, decode checks, narinfos),
//! `store` (a store: validity, `nix copy`, serving in place, GC roots), `stream`
//! (small paths and the validity question, through `nix-store --serve`); this file
//! is the target that ties them together.

mod cache;
mod store;
mod stream;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

use super::report::{NixReport, TargetReport};
use super::{Target, TargetPlan};
use crate::bundle::inventory::NixHoldings;
use crate::bundle::keys::PublicKey;
use crate::bundle::manifest::{BlobEntry, Kind};
use crate::bundle::reader::Head;
use crate::error::InputFailure;
use crate::io::source::{BundleSource, RandomSource};
use crate::io::space;
use crate::io::temp::{self, TempFolder};
use crate::nixfmt::{closure_order, NarHash, StorePath};
use crate::progress::Progress;
use validate::{check_signatures, nix_objects, NixObject};

/// Where GC roots go, below a store's root.
const GC_ROOTS: &str = "nix/var/nix/gcroots/gapbundle";

/// Room asked of `$TMPDIR` for Nix's narinfo cache when a store import is served in
/// place: its SQLite file and journal, and about this much per path (a row and its
/// index entries are a few hundred bytes; rounded up generously).
const NIX_META_BASE: u64 = 1 << 20;
const NIX_META_PER_PATH: u64 = 4 << 10;

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

/// Whether a `--nix-store` URI (`None`: the default) names the store of this
/// machine, local or through its daemon, rather than a remote one.
fn names_this_machine(uri: Option<&str>) -> bool {
    matches!(uri, None | Some("auto" | "local" | "daemon"))
}

impl Dest {
    /// Whether this process writes the store itself (a chroot store, or the local
    /// store as root), rather than asking a daemon that checks what it is given:
    /// only then do small paths go in through `nix-store --serve --write` (see
    /// `stream`), which checks no signature.
    fn written_here(&self) -> bool {
        match self {
            Dest::Store { root: Some(_), .. } => true,
            Dest::Store { uri, .. } => {
                matches!(uri.as_deref(), None | Some("local"))
                    && rustix::process::geteuid().is_root()
            }
            Dest::Cache(_) => false,
        }
    }

    /// Whether a store is on this machine: a chroot store, or the default one.
    fn on_this_machine(&self) -> bool {
        match self {
            Dest::Store { root: Some(_), .. } => true,
            Dest::Store { uri, .. } => names_this_machine(uri.as_deref()),
            Dest::Cache(_) => false,
        }
    }

    /// Whether the plan asks a `nix-store --serve --write` and keeps it for the
    /// import (`NixTarget::held_for_plan`): the store is written here, from a
    /// bundle file (`from_file`), by an import that may write (not `ask_only`).
    fn keeps_serve(&self, ask_only: bool, from_file: bool) -> bool {
        !ask_only && from_file && self.written_here()
    }

    /// Whether the store is there to be asked: a chroot store not made yet is not
    /// (nothing is valid in it, and it is not made before the bundle verified).
    fn exists(&self) -> bool {
        match self {
            Dest::Store { root: Some(r), .. } => r.join("nix/var/nix/db").exists(),
            Dest::Store { .. } => true,
            Dest::Cache(_) => false,
        }
    }
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
    // Nix's own rule (`isNonUriPath` in libstore): what has no `://` but a `/` is
    // a path, and a chroot store there, relative or not (`mnt/target`,
    // `../target`). Taken for a URI, it went to Nix as one, which made the same
    // chroot store, but without the GC roots, by `nix copy`.
    let (base, query) = s.split_once('?').unwrap_or((s, ""));
    if !base.contains("://") && base.contains('/') {
        if !query.is_empty() {
            return Err(InputFailure(format!(
                "--nix-store {s}: a store path takes no settings after '?'; give them as local?root={base}&{query}"
            ))
            .into());
        }
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
    let local = names_this_machine(Some(s));
    Ok(Dest::Store {
        uri: Some(s.to_string()),
        root: None,
        gc_dir: local.then_some(default_gc),
    })
}

/// The Nix target.
pub struct NixTarget {
    dest: Dest,
    objects: Vec<NixObject>,
    trusted: Vec<PublicKey>,
    /// Paths to add, references first.
    new_paths: Vec<StorePath>,
    /// Paths valid on the target without any of the signatures the bundle carries
    /// for them (added by hand, or by an older gapbundle that signed in a second
    /// step: see [`NixTarget::unsigned`]); `finish` copies the signatures.
    unsigned_paths: Vec<StorePath>,
    stage: Option<TempFolder>,
    /// The bundle, when the import reads files (not a pipe): a store then takes
    /// the NARs from it in place (see `serve_in_place`) and nothing is staged.
    bundle: Option<std::sync::Arc<RandomSource>>,
    /// The blob being received: its file in the cache, under a temporary name.
    receiving: Option<BufWriter<NamedTempFile>>,
    /// Verified blobs whose NARs are being decoded and checked.
    decoding: Option<cache::Decoders>,
    /// Whether the cache folders were swept of killed imports' temporary files.
    swept: bool,
    progress_warned: std::cell::Cell<bool>,
    /// What the plan said the target receives (see `plan`), reported by `finish`.
    bytes_written: u64,
    /// The `nix-store --serve --write` the plan asked, kept for the import when it
    /// has paths to add (see [`NixTarget::held_for_plan`]).
    kept: Option<stream::Kept>,
    /// [`NixOptions::ask_only`].
    ask_only: bool,
    /// The `nix-store --serve` [`start_early`] started for the plan's question.
    early: Option<stream::Started>,
}

/// What the Nix target is told: the import flags, resolved by the command layer
/// (which leaves the target out with `--skip-nix`).
#[derive(Debug, Clone, Default)]
pub struct NixOptions {
    /// `--nix-store`: a store path or URI, or a `file://` binary cache; `None` is
    /// the local store.
    pub store: Option<String>,
    /// The store is only asked, never written (`--dry-run`): the plan's question
    /// then goes to a `nix-store --serve` without `--write`, which is not kept.
    pub ask_only: bool,
}

/// The `nix-store --serve` the plan will ask which paths the store holds, started
/// by [`start_early`] while the bundle's head is read.
pub struct Early(stream::Started);

/// Starts the `nix-store --serve` that the plan of an import into a store will ask
/// (see `NixTarget::held_for_plan`), given the manifest's bytes as read, before
/// they are parsed (`crate::bundle::reader::read_head_with`): Nix then starts up
/// (15 to 20 ms) while the head is parsed and checked (20 to 25 ms for 2,101
/// paths), not after. Only for a store on this machine that exists (a chroot
/// store is not made before the bundle verified, and a remote one is not reached
/// before then), and only when the bytes name a `nix-path` object: a hint, since
/// nothing is decided on them. The `nix-store` touches nothing until it is asked;
/// `None` when it is not wanted or cannot start (the plan then starts its own and
/// reports why that fails).
pub fn start_early(opts: &NixOptions, source: &BundleSource, manifest: &[u8]) -> Option<Early> {
    let dest = parse_dest(opts.store.as_deref()).ok()?;
    let Dest::Store { uri, .. } = &dest else {
        return None;
    };
    if !dest.on_this_machine() || !dest.exists() || !names_nix_paths(manifest) {
        return None;
    }
    let write = dest.keeps_serve(opts.ask_only, source.random_access().is_some());
    stream::start(uri.as_deref(), write).ok().map(Early)
}

/// Whether canonical manifest bytes name an object of kind `nix-path`.
fn names_nix_paths(manifest: &[u8]) -> bool {
    memchr::memmem::find(manifest, br#""kind":"nix-path""#).is_some()
}

/// The Nix target for this bundle, if it has Nix paths. `signers` are the `--trust`
/// keys whose signature of the bundle was checked: only they vouch for paths.
/// `early` is the store's `nix-store` if [`start_early`] started one.
pub fn target(
    opts: &NixOptions,
    head: &Head,
    signers: &[PublicKey],
    source: &BundleSource,
    early: Option<Early>,
) -> Result<Option<Box<dyn Target>>> {
    let has = head
        .manifest
        .objects
        .iter()
        .any(|o| o.kind == Kind::NixPath);
    if !has {
        return Ok(None);
    }
    let trusted = signers.to_vec();
    let objects = nix_objects(head)?;
    Ok(Some(Box::new(NixTarget {
        dest: parse_dest(opts.store.as_deref())?,
        objects,
        trusted,
        new_paths: Vec::new(),
        unsigned_paths: Vec::new(),
        stage: None,
        bundle: source.shared(),
        receiving: None,
        decoding: None,
        swept: false,
        progress_warned: std::cell::Cell::new(false),
        bytes_written: 0,
        kept: None,
        ask_only: opts.ask_only,
        early: early.map(|e| e.0),
    })))
}

/// What the Nix store or binary cache `store` (as `--nix-store` takes it; `None`:
/// the local store) holds, for an inventory: every valid path with its NAR hash.
pub fn inventory(store: Option<&str>) -> Result<NixHoldings> {
    let dest = parse_dest(store)?;
    let paths = match &dest {
        Dest::Cache(dir) => {
            let mut paths = BTreeMap::new();
            if dir.is_dir() {
                for e in fs_err::read_dir(dir)? {
                    let e = e?;
                    if e.file_name().to_str().is_some_and(|n| n.ends_with(".narinfo")) {
                        if let Some((p, h)) = store::cached_nar_hash(dir, &e.path()) {
                            paths.insert(p, h);
                        }
                    }
                }
            }
            paths
        }
        Dest::Store { root: Some(r), .. } if !r.join("nix/var/nix/db").exists() => BTreeMap::new(),
        Dest::Store { uri, .. } => store::store_nar_hashes(uri.as_deref(), None)
            .context("listing the valid paths of the Nix store (nix path-info --all --json); without Nix here, pass --skip-nix")?,
    };
    Ok(NixHoldings {
        store: store.unwrap_or("local").to_string(),
        paths,
    })
}

/// One Nix path as a binary cache serves it: the documents the `file://` cache
/// writer names `<hash>.narinfo` and `nar/<nix32 of the blob digest>.nar.zst`, the
/// same for the import's in-place server and for `gapbundle serve`.
#[derive(Debug, Clone)]
pub struct CachedPath {
    /// The store path.
    pub path: StorePath,
    /// Its NAR hash.
    pub nar_hash: crate::nixfmt::NarHash,
    /// `<hash>.narinfo`.
    pub narinfo_name: String,
    /// The narinfo itself.
    pub narinfo: String,
    /// `nar/<nix32 of the blob digest>.nar.zst`, the URL the narinfo gives.
    pub nar_name: String,
    /// The NAR blob (stored in the bundle, or left out of a delta).
    pub blob: BlobEntry,
}

/// Every Nix path of `head` as a binary cache serves it, checked as the import
/// checks them (format.md 14.5): with `signers` (the trusted keys that signed the
/// bundle), each path must carry a path signature by one of them.
pub fn cached_paths(head: &Head, signers: &[PublicKey]) -> Result<Vec<CachedPath>> {
    let objects = nix_objects(head)?;
    check_signatures(&objects, signers)?;
    objects.iter().map(cached_path).collect()
}

fn cached_path(o: &NixObject) -> Result<CachedPath> {
    let info = o.narinfo();
    let blob = o.entry.clone();
    Ok(CachedPath {
        path: o.path.clone(),
        nar_hash: o.nar_hash,
        narinfo_name: format!("{}.narinfo", o.path.hash_part()),
        narinfo: info.to_text()?,
        nar_name: info.url,
        blob,
    })
}

impl NixTarget {
    /// Whether `nix copy` takes the NARs from the bundle file itself, served in
    /// place, instead of from a staged copy: for a store, whenever the bundle is a
    /// file. A `file://` cache is a copy by definition, and a pipe can only be read
    /// once.
    fn in_place(&self) -> bool {
        matches!(self.dest, Dest::Store { .. }) && self.bundle.is_some()
    }

    /// The folder NARs and narinfos are written to.
    fn cache_dir(&mut self) -> io::Result<PathBuf> {
        match &self.dest {
            Dest::Cache(p) => Ok(p.clone()),
            Dest::Store { .. } => {
                if self.stage.is_none() {
                    self.stage = Some(temp::folder("nix-stage")?);
                }
                Ok(self.stage.as_ref().expect("just set").path().to_path_buf())
            }
        }
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
                let store = match root {
                    Some(r) => Some(r.join("nix/store")),
                    None if names_this_machine(uri.as_deref()) => Some(PathBuf::from("/nix/store")),
                    None => None, // a remote store: its own host's business
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
}

impl Target for NixTarget {
    fn describe(&self) -> String {
        match &self.dest {
            Dest::Cache(p) => format!("nix binary cache file://{}", p.display()),
            Dest::Store { uri: None, .. } => "nix store (local)".into(),
            Dest::Store { uri: Some(u), .. } => format!("nix store {u}"),
        }
    }

    fn plan(&mut self, _head: &Head) -> Result<TargetPlan> {
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
        // A store says at once which paths it has, with their NAR hashes and
        // signatures; a cache, by its narinfo files.
        let (held, signed) = match &self.dest {
            Dest::Store { .. } => {
                let (held, signed) = self.held_for_plan(&all)?;
                (Some(held), signed)
            }
            Dest::Cache(_) => (None, false),
        };
        let valid: BTreeSet<StorePath> = match &held {
            Some(h) => h.keys().cloned().collect(),
            None => self.valid(&all)?,
        };
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
        let stored = |o: &NixObject| o.entry.offset.is_some();
        // A delta's paths whose NARs it leaves out must be valid here with the NAR
        // hash the bundle signs, not merely valid.
        let left_out: Vec<StorePath> = self
            .objects
            .iter()
            .filter(|o| !stored(o) && valid.contains(&o.path))
            .map(|o| o.path.clone())
            .collect();
        let held_hashes: BTreeMap<StorePath, NarHash> = match &held {
            Some(h) => left_out
                .iter()
                .filter_map(|p| h.get(p).map(|i| (p.clone(), i.nar_hash)))
                .collect(),
            None => self.cached_nar_hashes(&left_out),
        };
        self.unsigned_paths = held.as_ref().map_or_else(Vec::new, |h| self.unsigned(h));
        self.new_paths.clear();
        // The bytes of the NAR blobs the target is handed (written to a cache,
        // served to or staged for a store): what the import's bar counts and its
        // report says, so the plan and the result agree.
        let mut blob_bytes = 0u64;
        for (p, _) in order {
            let o = by_path[&p];
            if valid.contains(&p) {
                if !stored(o) && held_hashes.get(&p) != Some(&o.nar_hash) {
                    plan.missing.insert(o.entry.digest);
                }
                plan.present_objects.push(format!("nix-path {p}"));
                continue;
            }
            plan.new_objects.push(format!("nix-path {p}"));
            if !stored(o) {
                plan.missing.insert(o.entry.digest);
            } else if plan.needed.insert(o.entry.digest) {
                blob_bytes += o.entry.size;
            }
            self.new_paths.push(p);
        }
        // Nothing to add (a rerun): the kept `nix-store` goes now, not at the end.
        if self.new_paths.is_empty() {
            if let Some(kept) = self.kept.take() {
                kept.finish()
                    .with_context(|| format!("asking {} which paths it has", self.describe()))?;
            }
        }
        // Section 14.5's signature rule, before anything is handed to the target: a
        // rerun that finds every path valid and signed hands nothing and skips it.
        // (Checked already if they passed while the store was asked.)
        if (!self.new_paths.is_empty() || !self.unsigned_paths.is_empty()) && !signed {
            check_signatures(&self.objects, &self.trusted)?;
        }
        plan.bytes_to_write = blob_bytes;
        self.bytes_written = plan.bytes_to_write;
        self.check_space(blob_bytes)?;
        if self.in_place() {
            // The stream still verifies every blob; the NARs are read from the file
            // once it has.
            plan.needed.clear();
        }
        Ok(plan)
    }

    fn plan_unreached(&mut self, _head: &Head) -> Result<TargetPlan> {
        // Every path would be handed to the store: section 14.5's signature rule
        // holds, whether or not the store could be asked.
        check_signatures(&self.objects, &self.trusted)?;
        let mut plan = TargetPlan::default();
        for o in &self.objects {
            plan.new_objects.push(format!("nix-path {}", o.path));
            let Some(b) = Some(&o.entry).filter(|b| b.offset.is_some()) else {
                continue;
            };
            if plan.needed.insert(o.entry.digest) {
                plan.bytes_to_write += b.size;
            }
        }
        Ok(plan)
    }

    fn begin(&mut self, blob: &BlobEntry) -> io::Result<()> {
        self.receive_begin(blob)
    }

    fn write(&mut self, _blob: &BlobEntry, chunk: &[u8]) -> io::Result<()> {
        self.receive_chunk(chunk)
    }

    fn commit(&mut self, blob: &BlobEntry) -> io::Result<()> {
        self.receive_commit(blob)
    }

    fn finish(&mut self, head: &Head, progress: &Progress) -> Result<TargetReport> {
        self.check_decoded()?;
        if !self.new_paths.is_empty() {
            let added = if self.in_place() {
                self.serve_in_place(head, progress)
            } else {
                let dir = self.cache_dir()?;
                self.write_cache(&dir)?;
                match self.dest {
                    Dest::Store { .. } => self.copy_into_store(
                        &self.new_paths,
                        &format!("file://{}", dir.display()),
                        &[],
                        progress,
                        None,
                    ),
                    Dest::Cache(_) => Ok(()),
                }
            };
            if added.is_err() {
                self.remove_unregistered(progress);
            }
            added?;
        }
        if !self.unsigned_paths.is_empty() {
            let paths = std::mem::take(&mut self.unsigned_paths);
            self.copy_sigs(&paths, &[], progress);
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
        let added: Vec<String> = self.new_paths.iter().map(|p| p.to_string()).collect();
        Ok(TargetReport::Nix(NixReport {
            present: self.objects.len() - added.len(),
            bytes_written: if added.is_empty() {
                0
            } else {
                self.bytes_written
            },
            added,
            gc_roots: roots,
        }))
    }

    fn receipt(&self, _head: &Head) -> Option<crate::bundle::receipt::Section> {
        let mut paths: Vec<String> = self.objects.iter().map(|o| o.path.to_string()).collect();
        paths.sort();
        let mut gc_roots: Vec<String> = match &self.dest {
            Dest::Store {
                gc_dir: Some(dir), ..
            } => self
                .objects
                .iter()
                .flat_map(|o| o.gc_roots.iter())
                .map(|n| dir.join(n).display().to_string())
                .collect(),
            _ => Vec::new(),
        };
        gc_roots.sort();
        gc_roots.dedup();
        Some(crate::bundle::receipt::Section::Nix {
            store: store_id(&self.dest),
            paths,
            gc_roots,
        })
    }
}

/// How receipts name a store: `local` for the default one, the `nix copy` URI
/// otherwise (`local?root=/mnt/target`), `file://<folder>` for a binary cache.
fn store_id(dest: &Dest) -> String {
    match dest {
        Dest::Cache(p) => format!("file://{}", p.display()),
        Dest::Store { uri: None, .. } => "local".into(),
        Dest::Store { uri: Some(u), .. } => u.clone(),
    }
}

/// How receipts name the store `--nix-store` gives (`None`: the local store), for
/// an import of a bundle without Nix paths, which still covers that store.
pub fn store_receipt_id(arg: Option<&str>) -> Result<String> {
    Ok(store_id(&parse_dest(arg)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_that_starts_nix_early_is_a_nix_path_object() {
        assert!(names_nix_paths(
            br#"{"objects":[{"digest":"sha256:00","kind":"nix-path","name":"/nix/store/x"}]}"#
        ));
        // A name or an annotation that says nix-path is no object of that kind.
        assert!(!names_nix_paths(
            br#"{"objects":[{"kind":"file","name":"nix-path"}],"kind":"nix-pathx"}"#
        ));
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
        // A relative path is a chroot store too, as Nix takes it (a regression:
        // `mnt/t` went to Nix as a URI, and got no GC roots).
        let here = std::env::current_dir().unwrap();
        for rel in ["mnt/t", "./mnt/t", "mnt/t/"] {
            let Dest::Store { uri, root, gc_dir } = parse_dest(Some(rel)).unwrap() else {
                panic!("{rel}")
            };
            let abs = std::path::absolute(rel).unwrap();
            assert_eq!(abs, here.join("mnt/t"));
            assert_eq!(root.as_deref(), Some(abs.as_path()), "{rel}");
            assert_eq!(uri, Some(format!("local?root={}", abs.display())));
            assert_eq!(gc_dir, Some(abs.join(GC_ROOTS)));
        }
        // A word with no `/` is Nix's to name (`daemon`, `auto`), and settings go
        // with `local?root=`.
        let Dest::Store { root, .. } = parse_dest(Some("daemon")).unwrap() else {
            panic!()
        };
        assert!(root.is_none());
        let e = parse_dest(Some("/mnt/t?read-only=true"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("local?root=/mnt/t&read-only=true"), "{e}");
    }
}
