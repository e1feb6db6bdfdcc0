//! `gapbundle create`: spec in, one signed bundle out.
//!
//! The order matters for the people who run it. Everything is resolved to digests
//! first (cheap manifest requests), the lock is checked if `--locked`, and only then
//! are blobs downloaded, in parallel, into the cache; the bundle is laid out, signed
//! and streamed from the cache to a temporary file that is renamed over the output
//! only when complete. A failure at any step leaves no half-written bundle and no
//! half-updated lock.
//!
//! [`run`] is those steps as stages, each a function whose result carries what the
//! next needs: `Inputs::load` (spec, lock, keys, cache), `resolve` (every input to
//! digests, the new lock), `check_lock` (`--locked`), `fetch` (registry blobs into
//! the cache), `assemble` (the manifest laid out: which blobs a bundle stores is
//! decided here), `write` (signed, to the output: how the bytes land on disk is
//! decided here) and `report`.
//!
//! Two checks come before any of it. The output must not be one of the inputs
//! (`-o k.sec --key k.sec` would replace the signing key with the bundle; so would
//! `-o` naming the spec, the lock, a values file or anything inside a layout or the
//! cache): `check_output` compares it, by device and inode and by path, with every
//! local input and refuses with exit code 4 naming both. And `-o -` (or `-o
//! /dev/stdout`, or any path that is the file standard output already is) writes the
//! bundle to standard output, which then carries nothing else: the report goes to
//! stderr, and `--json`, whose report would go to stdout, is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use fs_err as fs;
use serde_json::json;

use super::inspect::Totals;
use super::{exit, print_json, Failure};
use crate::bundle::keys::SecretKey;
use crate::bundle::manifest::{BlobEntry, Kind, Object};
use crate::bundle::meta::{ImageMeta, Meta};
use crate::bundle::signature::Envelope;
use crate::bundle::writer::{write_bundle, BundleBuilder, Plan};
use crate::bundle::Digest;
use crate::cli::{CreateArgs, OutputArgs};
use crate::error::InputFailure;
use crate::io::atomic::{sweep_beside, AtomicFile};
use crate::io::bundle_file::write_parallel;
use crate::io::cas::Cas;
use crate::io::keys::load_secret_key;
use crate::progress::{human_bytes, Progress};
use crate::registry::auth::parse_registry_auth;
use crate::registry::{Credentials, Settings};
use crate::resolve::image::{self, Blob, ImagePlan};
use crate::resolve::registry::{FetchStats, Registry};
use crate::resolve::{archive, k8s, layout, nix, Contribution, LockCtx};
use crate::spec::{self, ImageRequest, ImageSource, LoadedSpec, Lock, LockedImage};

/// Media type of the spec file stored in a bundle.
pub const SPEC_MEDIA_TYPE: &str = "application/vnd.gapbundle.spec.v1+yaml";
/// Media type of the lock file stored in a bundle.
pub const LOCK_MEDIA_TYPE: &str = "application/vnd.gapbundle.lock.v1+json";

struct ResolvedImage {
    wanted_by: Vec<String>,
    name: String,
    source: String,
    plan: ImagePlan,
}

fn registry_failure(e: anyhow::Error) -> Failure {
    Failure {
        code: exit::REGISTRY,
        error: e,
    }
}

/// `SOURCE_DATE_EPOCH`, or 0: bundles carry no wall-clock time unless asked to.
fn source_date_epoch() -> Result<u64, Failure> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| {
            InputFailure(format!(
                "SOURCE_DATE_EPOCH=`{v}` is not a number of seconds since 1970"
            ))
            .into()
        }),
        _ => Ok(0),
    }
}

/// Where the bundle goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Output {
    /// A file (or a device, FIFO or symlink: see [`AtomicFile`]).
    File(PathBuf),
    /// Standard output: `-o -`, or a path that is the file stdout already is.
    Stdout,
}

impl Output {
    fn of(path: &Path) -> Output {
        if path == Path::new("-") || is_stdout(path) {
            Output::Stdout
        } else {
            Output::File(path.to_path_buf())
        }
    }

    /// For messages.
    fn shown(&self) -> String {
        match self {
            Output::File(p) => p.display().to_string(),
            Output::Stdout => "standard output".into(),
        }
    }
}

/// Whether `path` is the very file standard output is (`/dev/stdout`,
/// `/proc/self/fd/1`, or the file stdout was redirected to).
fn is_stdout(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(path) else {
        return false;
    };
    // The file descriptor's own link: a pipe, a terminal or a file, whatever it is.
    let Ok(out) = std::fs::metadata("/proc/self/fd/1") else {
        return false;
    };
    target.dev() == out.dev() && target.ino() == out.ino()
}

/// Runs create, stage by stage: each stage's result carries what the next needs.
pub fn run(a: CreateArgs, out: &OutputArgs) -> Result<(), Failure> {
    let output = Output::of(&a.output);
    if output == Output::Stdout {
        if out.json {
            return Err(usage(
                "--json prints its report on standard output, which `-o -` gives to the bundle: write the bundle to a file, or leave out --json",
            ));
        }
        if std::io::stdout().is_terminal() {
            return Err(usage(
                "standard output is a terminal: pipe the bundle into a command or redirect it to a file, or give -o FILE",
            ));
        }
    }
    let progress = Progress::new(out.quiet || out.json);
    let inputs = Inputs::load(&a, &output, &progress)?;
    let resolved = resolve(&a, &inputs, &progress)?;
    check_lock(&a, &inputs, &resolved)?;
    let fetched = fetch(&inputs, &resolved, &progress)?;
    let assembled = assemble(&a, &inputs, &resolved)?;
    let written = write(&output, &inputs, &assembled, &progress)?;
    report(
        &output,
        out,
        &inputs,
        &resolved,
        &assembled,
        &written,
        fetched.as_ref(),
    );
    Ok(())
}

/// Stage 1, what is read before anything is resolved: the spec, the lock as it is,
/// the signing keys, the cache, the bundle's timestamp.
struct Inputs {
    loaded: LoadedSpec,
    lock_path: PathBuf,
    old_lock: Lock,
    keys: Vec<SecretKey>,
    cas: Cas,
    created: u64,
}

impl Inputs {
    fn load(a: &CreateArgs, output: &Output, progress: &Progress) -> Result<Inputs, Failure> {
        let loaded = spec::load(&a.spec)?;
        let lock_path = a
            .lock
            .clone()
            .unwrap_or_else(|| a.spec.with_extension("lock"));
        let cache_root = a.cache.clone().unwrap_or_else(Cas::default_root);
        if let Output::File(out) = output {
            check_output(out, &input_paths(a, &loaded, &lock_path, &cache_root))?;
        }
        let old_lock = if lock_path.exists() {
            Lock::parse(&lock_path.display().to_string(), &fs::read(&lock_path)?)?
        } else if a.locked {
            return Err(InputFailure(format!(
                "--locked was given but there is no lock file at {}: run create once without --locked and commit the lock",
                lock_path.display()
            ))
            .into());
        } else {
            Lock::new()
        };
        let keys = a
            .keys
            .iter()
            .map(|k| load_secret_key(k))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if keys.is_empty() {
            progress.warn(
                "no --key given: the bundle is unsigned, and verify/import refuse it without --allow-unsigned",
            );
        }
        let cas = Cas::open(cache_root)
            .context("opening the blob cache (choose another with --cache DIR)")?;
        let created = source_date_epoch()?;
        Ok(Inputs {
            loaded,
            lock_path,
            old_lock,
            keys,
            cas,
            created,
        })
    }
}

/// Stage 2, every input resolved to digests: rendered manifests and Nix closures
/// (already packed into the cache), the images with the blobs still to download,
/// and the lock they give.
struct Resolved {
    new_lock: Lock,
    contributions: Vec<Contribution>,
    images: Vec<ResolvedImage>,
    /// Blobs of registry images, with the image that needs each.
    downloads: Vec<(String, Blob)>,
    /// Made on the first registry image, used again to download.
    registry: Option<Registry>,
}

fn resolve(a: &CreateArgs, inputs: &Inputs, progress: &Progress) -> Result<Resolved, Failure> {
    let Inputs {
        loaded,
        old_lock,
        keys,
        cas,
        ..
    } = inputs;
    let mut new_lock = Lock::new();
    // Rendering and Nix builds come first: they can ask for more images.
    let contributions = {
        let mut ctx = LockCtx {
            old: old_lock,
            new: &mut new_lock,
            locked: a.locked,
            update: a.update,
        };
        vec![
            k8s::render(loaded, cas, &mut ctx, progress, &render_options(a)?)?,
            nix::resolve(loaded, cas, &mut ctx, progress, keys)?,
        ]
    };
    let mut requests = loaded.images.clone();
    let mut wanted_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for w in contributions.iter().flat_map(|c| &c.images) {
        let source = ImageSource::Registry(w.reference.clone());
        if !requests.iter().any(|r| r.source == source) {
            requests.push(ImageRequest {
                source,
                name: None,
                platforms: loaded.spec.platforms.clone(),
            });
        }
        wanted_by
            .entry(w.reference.clone())
            .or_default()
            .extend(w.wanted_by.iter().cloned());
    }
    let mut resolved = Resolved {
        new_lock,
        contributions,
        images: Vec::new(),
        downloads: Vec::new(),
        registry: None,
    };
    for (i, req) in requests.iter().enumerate() {
        let image = resolve_image(a, inputs, &mut resolved, i, req, &wanted_by, progress)?;
        resolved.new_lock.images.insert(
            image.source.clone(),
            LockedImage {
                name: image.name.clone(),
                digest: image.plan.root.digest,
                media_type: image.plan.root.media_type.clone(),
            },
        );
        resolved.images.push(image);
    }
    Ok(resolved)
}

/// Resolves `images[i]` (or an image a document wants) against its pin in the lock.
fn resolve_image(
    a: &CreateArgs,
    inputs: &Inputs,
    resolved: &mut Resolved,
    i: usize,
    req: &ImageRequest,
    wanted_by: &BTreeMap<String, Vec<String>>,
    progress: &Progress,
) -> Result<ResolvedImage, Failure> {
    let Inputs {
        loaded,
        lock_path,
        old_lock,
        cas,
        ..
    } = inputs;
    let key = req.source.lock_key(&loaded.base);
    let pinned = if a.update {
        None
    } else {
        old_lock.images.get(&key).map(|l| l.digest)
    };
    if a.locked && pinned.is_none() {
        return Err(InputFailure(format!(
            "--locked: images[{i}] ({key}) is not in {}; run create without --locked to add it",
            lock_path.display()
        ))
        .into());
    }
    let (name, plan) = match &req.source {
        ImageSource::Registry(reference) => {
            if resolved.registry.is_none() {
                resolved.registry = Some(Registry::new(registry_settings(a)?)?);
            }
            let reg = resolved.registry.as_ref().expect("just set");
            let root = reg
                .resolve(cas, reference, pinned)
                .map_err(|e| match wanted_by.get(reference) {
                    Some(who) => e.context(format!("{reference} is wanted by {}", who.join(", "))),
                    None => e,
                })
                .map_err(registry_failure)?;
            let plan = {
                let mut fetch = reg.manifests(cas, reference).map_err(registry_failure)?;
                image::walk(&root.bytes, &root.media_type, &req.platforms, &mut fetch)
                    .with_context(|| format!("image {reference}"))
                    .map_err(registry_failure)?
            };
            resolved
                .downloads
                .extend(plan.blobs.iter().map(|b| (root.name.clone(), b.clone())));
            (root.name, plan)
        }
        ImageSource::Layout { dir, tag } => {
            let li = layout::resolve_layout(cas, dir, tag.as_deref(), &req.platforms)?;
            (local_name(i, &key, req.name.as_ref(), li.name)?, li.plan)
        }
        ImageSource::Archive(path) => {
            let li = archive::resolve_archive(cas, path, None, &req.platforms)?;
            (local_name(i, &key, req.name.as_ref(), li.name)?, li.plan)
        }
        ImageSource::Installable(installable) => {
            let path = crate::resolve::nix::build_archive(loaded, installable)?;
            let li = archive::resolve_archive(cas, &path, None, &req.platforms)?;
            (local_name(i, &key, req.name.as_ref(), li.name)?, li.plan)
        }
    };
    if let Some(p) = pinned {
        if p != plan.root.digest {
            if a.locked {
                return Err(InputFailure(format!(
                    "--locked: {key} is now {} but {} pins {p}; run create without --locked to update the lock",
                    plan.root.digest,
                    lock_path.display()
                ))
                .into());
            }
            progress.message(format!("{key}: changed from {p} to {}", plan.root.digest));
        }
    }
    if !plan.skipped_platforms.is_empty() {
        progress.message(format!(
            "{name}: keeping {}, leaving out {}",
            plan.platforms.join(", "),
            plan.skipped_platforms.join(", ")
        ));
    }
    Ok(ResolvedImage {
        wanted_by: match &req.source {
            ImageSource::Registry(r) => wanted_by.get(r).cloned().unwrap_or_default(),
            _ => Vec::new(),
        },
        name,
        source: key,
        plan,
    })
}

/// Stage 3: with `--locked`, the lock the inputs resolved to must be the one on
/// disk. (Each pin was already held against its image in stage 2.)
fn check_lock(a: &CreateArgs, inputs: &Inputs, resolved: &Resolved) -> Result<(), Failure> {
    if a.locked && resolved.new_lock != inputs.old_lock {
        return Err(InputFailure(format!(
            "--locked: {} would change:\n  {}\nrun create without --locked to update it",
            inputs.lock_path.display(),
            inputs.old_lock.differences(&resolved.new_lock).join("\n  ")
        ))
        .into());
    }
    Ok(())
}

/// Stage 4: the registry images' blobs into the cache, in parallel (local images,
/// documents and NARs are there already). `None` when nothing came from a registry.
fn fetch(
    inputs: &Inputs,
    resolved: &Resolved,
    progress: &Progress,
) -> Result<Option<FetchStats>, Failure> {
    match &resolved.registry {
        Some(reg) if !resolved.downloads.is_empty() => Ok(Some(
            reg.fetch_blobs(&inputs.cas, &resolved.downloads, progress)
                .map_err(registry_failure)?,
        )),
        _ => Ok(None),
    }
}

/// Stage 5, the bundle laid out: every blob and object in the manifest, offsets
/// fixed, and the lock file's bytes (stored in the bundle, written beside the spec).
struct Assembled {
    plan: Plan,
    lock_bytes: Vec<u8>,
    lock_changed: bool,
}

fn assemble(a: &CreateArgs, inputs: &Inputs, resolved: &Resolved) -> Result<Assembled, Failure> {
    let Inputs {
        loaded,
        lock_path,
        cas,
        created,
        ..
    } = inputs;
    let lock_bytes = resolved.new_lock.to_bytes();
    let lock_changed = fs::read(lock_path).ok().as_deref() != Some(lock_bytes.as_slice());
    let mut builder = BundleBuilder::new(
        &loaded.spec.name,
        &loaded.spec.version,
        *created,
        loaded.spec.platforms.to_strings(),
    );
    for r in &resolved.images {
        add_image(&mut builder, r)?;
    }
    for c in &resolved.contributions {
        for (blob, rank) in &c.blobs {
            builder.add_blob(blob.clone(), *rank)?;
        }
        for o in &c.objects {
            builder.add_object(o.clone())?;
        }
    }
    let spec_name = file_name(&a.spec);
    let lock_name = file_name(lock_path);
    for (kind, name, bytes, media_type) in [
        (Kind::Spec, spec_name, &loaded.bytes, SPEC_MEDIA_TYPE),
        (Kind::Lock, lock_name, &lock_bytes, LOCK_MEDIA_TYPE),
    ] {
        let d = cas.put_bytes(bytes)?;
        builder.add_blob(blob_entry(d, bytes.len() as u64, media_type), 0)?;
        builder.add_object(Object {
            kind,
            name,
            digest: d,
            media_type: media_type.into(),
            size: bytes.len() as u64,
            blobs: vec![d],
            meta: Meta::default(),
        })?;
    }
    Ok(Assembled {
        plan: builder.finish()?,
        lock_bytes,
        lock_changed,
    })
}

/// Stage 6, the bundle signed and written: to a temporary file renamed over the
/// output once complete (blobs copied in parallel), or streamed to an output that
/// is not a regular file; then the lock beside the spec, if it changed.
struct Written {
    /// Bytes of the bundle.
    size: u64,
}

fn write(
    output: &Output,
    inputs: &Inputs,
    assembled: &Assembled,
    progress: &Progress,
) -> Result<Written, Failure> {
    let plan = &assembled.plan;
    let envelope = Envelope::sign(plan.digest, &inputs.keys);
    let total = plan.file_len(&envelope);
    let bar = progress.bar(format!("bundle {}", output.shown()), total);
    match output {
        Output::Stdout => {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            write_bundle(&mut w, plan, &envelope, &inputs.cas, |b| {
                bar.inc(b.size + 512)
            })
            .context("writing the bundle to standard output")?;
            w.flush().context("writing the bundle to standard output")?;
        }
        Output::File(path) => {
            // What a killed create left here (a half bundle of hundreds of MiB).
            sweep_beside(path);
            let mut file = AtomicFile::create(path)?;
            match file.temp_path().map(std::path::Path::to_path_buf) {
                Some(tmp) => {
                    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
                    write_parallel(&tmp, plan, &envelope, &inputs.cas, jobs, &|b| {
                        bar.inc(b.size + 512)
                    })?;
                }
                None => {
                    write_bundle(&mut file, plan, &envelope, &inputs.cas, |b| {
                        bar.inc(b.size + 512)
                    })?;
                }
            }
            file.commit()?;
        }
    }
    bar.clear();
    if assembled.lock_changed {
        sweep_beside(&inputs.lock_path);
        crate::io::atomic::write(&inputs.lock_path, &assembled.lock_bytes)?;
    }
    Ok(Written { size: total })
}

/// Stage 7: what was written, on stdout (on stderr when the bundle went there).
fn report(
    output: &Output,
    out: &OutputArgs,
    inputs: &Inputs,
    resolved: &Resolved,
    assembled: &Assembled,
    written: &Written,
    stats: Option<&FetchStats>,
) {
    let Assembled {
        plan, lock_changed, ..
    } = assembled;
    let (spec, lock_path) = (&inputs.loaded.spec, &inputs.lock_path);
    let total = written.size;
    let totals = Totals::of(&plan.manifest);
    if out.json {
        let images: Vec<_> = resolved
            .images
            .iter()
            .map(|r| {
                json!({"ref": r.name, "digest": r.plan.root.digest.to_string(),
                       "mediaType": r.plan.root.media_type, "platforms": r.plan.platforms, "source": r.source})
            })
            .collect();
        let bundle = match output {
            Output::File(p) => p.display().to_string(),
            Output::Stdout => "-".into(),
        };
        print_json(&json!({
            "bundle": bundle, "digest": plan.digest.to_string(), "size": total,
            "name": spec.name, "version": spec.version,
            "signers": inputs.keys.iter().map(|k| k.name().to_string()).collect::<Vec<_>>(),
            "images": images, "lock": lock_path, "lockChanged": lock_changed,
            "fetched": {"blobs": stats.map_or(0, |s| s.fetched), "bytes": stats.map_or(0, |s| s.fetched_bytes)},
            "cachedBlobs": stats.map_or(0, |s| s.cached),
            "storedBytes": totals.stored_bytes, "savedBytes": totals.saved(),
        }));
    } else if !out.quiet {
        let mut lines = vec![
            format!(
                "wrote {} ({}): {} image(s), {} blobs, {} saved by storing shared blobs once",
                output.shown(),
                human_bytes(total),
                resolved.images.len(),
                totals.blobs,
                human_bytes(totals.saved())
            ),
            format!("digest {}", plan.digest),
        ];
        if *lock_changed {
            lines.push(format!("updated {}", lock_path.display()));
        }
        for l in lines {
            match output {
                // Standard output is the bundle: nothing else may go there.
                Output::Stdout => eprintln!("{l}"),
                Output::File(_) => say!("{l}"),
            }
        }
    }
}

/// A usage error (exit code 2).
fn usage(msg: &str) -> Failure {
    Failure {
        code: exit::USAGE,
        error: anyhow::anyhow!("{msg}"),
    }
}

/// Every local file and folder `create` reads, as (what, path, whether every file
/// below a folder is read): the spec, the lock, the keys, the cache, local
/// layouts and archives, and what rendering reads.
fn input_paths(
    a: &CreateArgs,
    loaded: &LoadedSpec,
    lock_path: &Path,
    cache_root: &Path,
) -> Vec<(String, PathBuf, bool)> {
    let mut v = vec![
        ("the spec".to_string(), a.spec.clone(), false),
        ("the lock file".to_string(), lock_path.to_path_buf(), false),
        (
            "the cache (--cache)".to_string(),
            cache_root.to_path_buf(),
            true,
        ),
    ];
    for k in &a.keys {
        v.push(("the key (--key)".to_string(), k.clone(), false));
    }
    for (i, r) in loaded.images.iter().enumerate() {
        match &r.source {
            ImageSource::Layout { dir, .. } => {
                v.push((format!("the layout of images[{i}]"), dir.clone(), true))
            }
            ImageSource::Archive(p) => {
                v.push((format!("the archive of images[{i}]"), p.clone(), false))
            }
            ImageSource::Registry(_) | ImageSource::Installable(_) => {}
        }
    }
    v.extend(
        k8s::local_inputs(loaded)
            .into_iter()
            .map(|(what, p, whole)| (format!("{what} of the spec"), p, whole)),
    );
    v
}

/// `path` made absolute with `.` and `..` resolved through the file system where
/// it exists (the folder of a file that does not exist yet).
fn resolved_path(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(abs.clone()),
        _ => abs,
    }
}

/// Refuses an output that is one of `inputs` (the same file by device and inode,
/// or by path for an input that does not exist yet, like a new lock file), or that
/// lies inside an input folder all of whose files are read.
fn check_output(output: &Path, inputs: &[(String, PathBuf, bool)]) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let out_meta = std::fs::metadata(output).ok();
    let out_path = resolved_path(output);
    for (what, input, whole) in inputs {
        let in_meta = std::fs::metadata(input).ok();
        let same = match (&out_meta, &in_meta) {
            (Some(o), Some(i)) => o.dev() == i.dev() && o.ino() == i.ino(),
            _ => resolved_path(input) == out_path,
        };
        // A folder read whole (a layout, the cache), or one that does not exist
        // yet but will be made and filled (a new cache).
        let inside = *whole
            && in_meta.as_ref().is_none_or(|m| m.is_dir())
            && out_path.starts_with(resolved_path(input));
        if same || inside {
            return Err(InputFailure(format!(
                "-o {} {} {what} {}: refusing to write the bundle over an input; give another output file",
                output.display(),
                if same { "is" } else { "is inside" },
                input.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// Charts use the same `--insecure-registry`, `--registry-auth` and Docker config
/// as images do.
fn render_options(a: &CreateArgs) -> Result<k8s::RenderOptions, Failure> {
    Ok(k8s::RenderOptions {
        registry: registry_settings(a)?,
    })
}

fn registry_credentials(a: &CreateArgs) -> Result<Vec<(String, Credentials)>, Failure> {
    a.registry_auth
        .iter()
        .map(|s| parse_registry_auth(s).map_err(|e| InputFailure(format!("{e:#}")).into()))
        .collect()
}

fn registry_settings(a: &CreateArgs) -> Result<Settings, Failure> {
    Ok(Settings {
        insecure_hosts: a.insecure_registries.clone(),
        credentials: registry_credentials(a)?,
        docker_config: a.docker_config.clone(),
        ca_files: Vec::new(),
        ca_flag: None,
        jobs: a.jobs.max(1),
        retries: a.retries.max(1),
    })
}

fn local_name(
    i: usize,
    key: &str,
    given: Option<&String>,
    found: Option<String>,
) -> Result<String, Failure> {
    given.cloned().or(found).ok_or_else(|| {
        InputFailure(format!(
            "images[{i}] ({key}) has no name inside it: add `name: registry.example/team/app:1.0` to the entry"
        ))
        .into()
    })
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn blob_entry(digest: Digest, size: u64, media_type: &str) -> BlobEntry {
    BlobEntry {
        digest,
        size,
        media_type: media_type.into(),
        offset: None,
        encoding: None,
        content: None,
    }
}

fn add_image(builder: &mut BundleBuilder, r: &ResolvedImage) -> Result<(), Failure> {
    let mut digests = BTreeSet::new();
    let mut size = 0;
    for b in r.plan.manifests.iter().chain(&r.plan.blobs) {
        builder.add_blob(blob_entry(b.digest, b.size, &b.media_type), 0)?;
        if digests.insert(b.digest) {
            size += b.size;
        }
    }
    let meta = Meta::Image(ImageMeta {
        platforms: r.plan.platforms.clone(),
        source: r.source.clone(),
        wanted_by: (!r.wanted_by.is_empty()).then(|| r.wanted_by.clone()),
        extra: Default::default(),
    });
    builder.add_object(Object {
        kind: Kind::Image,
        name: r.name.clone(),
        digest: r.plan.root.digest,
        media_type: r.plan.root.media_type.clone(),
        size,
        blobs: digests.into_iter().collect(),
        meta,
    })?;
    Ok(())
}
