//! `gapbundle create`: spec in, one signed bundle out.
//!
//! The order matters for the people who run it. Everything is resolved to digests
//! first (cheap manifest requests), the lock is checked if `--locked`, the bundle is
//! laid out and signed (the descriptors give every blob's digest and size, so every
//! offset is known before a byte is fetched), and only then are blobs downloaded, in
//! parallel, into the cache; the rest of the bundle is streamed from the cache to a
//! temporary file that is renamed over the output only when complete. A failure at
//! any step leaves no half-written bundle and no half-updated lock.
//!
//! [`run`] is those steps as stages, each a function whose result carries what the
//! next needs: `Inputs::load` (spec, lock, keys, cache), `resolve` (every input to
//! digests, the new lock), `check_lock` (`--locked`), `assemble` (the manifest laid
//! out: which blobs a bundle stores is decided here), `Target::open` (a single
//! file's temporary file, opened before the downloads), `fetch` (registry blobs into
//! the cache and, for a single file, each at its offset in the temporary file as it
//! streams: one write of each downloaded byte instead of a second copy out of the
//! cache after the last download), `write` (the rest, to the output: how the bytes
//! land on disk is decided here) and `report`.
//!
//! With `--against` the bases are read in `Inputs::load`, `fetch` downloads nothing
//! a base holds, and `assemble` lays out the full bundle first, signs it, and turns
//! it into the delta ([`crate::bundle::delta`]): the delta and a full create come
//! from the same stages, so the full bundle that `patch` rebuilds is the one a full
//! create writes.
//!
//! Two checks come before any of it. The output must not be one of the inputs
//! (`-o k.sec --key k.sec` would replace the signing key with the bundle; so would
//! `-o` naming the spec, the lock, a values file, a `--against` base or anything
//! inside a layout or the cache): `check_output` compares it (with `--volume-size`,
//! every volume name of the set), by device and inode and by path, with every local
//! input and refuses with exit code 4 naming both. And `-o -` (or `-o /dev/stdout`,
//! or any path that is the file standard output already is) writes the bundle to
//! standard output, which then carries nothing else: the report goes to stderr, and
//! `--json` (whose report would go to stdout) and `--volume-size` (volumes need
//! names) are usage errors.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use fs_err as fs;

use super::inspect::Totals;
use super::report::{CreateDelta, CreateReport, CreatedImage, DeltaSummary, Fetched};
use super::settings::CreateSettings;
use super::volumes::{commit, say_volumes};
use super::{print_json, Failure};
use crate::bundle::delta::{delta_manifest, leave_out, Base};
use crate::bundle::keys::SecretKey;
use crate::bundle::manifest::{BlobEntry, Kind, Object};
use crate::bundle::meta::{ImageMeta, Meta, ReferrerMeta};
use crate::bundle::signature::Envelope;
use crate::bundle::volumes::Layout;
use crate::bundle::writer::{write_bundle, BundleBuilder, Plan};
use crate::bundle::Digest;
use crate::cli::{CreateArgs, OutputArgs};
use crate::error::{ErrorClass, InputFailure, RegistryFailure, UsageFailure};
use crate::io::atomic::{sweep_beside, AtomicFile};
use crate::io::bundle_file::{write_parallel, Pieces, Placement};
use crate::io::cas::Cas;
use crate::io::keys::load_secret_key;
use crate::io::volumes::{Committed, VolumeOutput};
use crate::progress::{human_bytes, Progress};
use crate::resolve::image::{self, Blob, ImagePlan};
use crate::resolve::registry::{FetchStats, Registry};
use crate::resolve::{archive, files, k8s, layout, nix, Contribution, LockCtx};
use crate::sbom::{self, Subject};
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
    /// Its referrers, when the spec asks for them (format.md section 18).
    referrers: Vec<ResolvedReferrer>,
}

/// A referrer of a registry image, walked like an image.
struct ResolvedReferrer {
    /// The object's name, `repository@digest`.
    name: String,
    meta: ReferrerMeta,
    plan: ImagePlan,
}

/// What a registry sent that cannot be used (a manifest that cannot be walked, no
/// platform the spec asks for) is the registry's failure, unless the error says
/// otherwise: a full disk while caching what it sent is the machine's.
fn served_by_registry(e: anyhow::Error) -> anyhow::Error {
    if super::named_class(&e).is_some() {
        e
    } else {
        RegistryFailure(format!("{e:#}")).into()
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
    let Ok(target) = fs_err::metadata(path) else {
        return false;
    };
    // The file descriptor's own link: a pipe, a terminal or a file, whatever it is.
    let Ok(out) = fs_err::metadata("/proc/self/fd/1") else {
        return false;
    };
    target.dev() == out.dev() && target.ino() == out.ino()
}

/// Runs create, stage by stage: each stage's result carries what the next needs.
pub fn run(a: CreateArgs, out: &OutputArgs) -> Result<(), Failure> {
    let a = &CreateSettings::resolve(a)?;
    let output = Output::of(&a.output);
    if output == Output::Stdout {
        let refused = if out.json {
            Some("--json prints its report on standard output, which `-o -` gives to the bundle: write the bundle to a file, or leave out --json")
        } else if a.volume_size.is_some() {
            Some("--volume-size writes volumes named after -o (PREFIX.001 …), which standard output cannot be: give -o PREFIX, or leave out --volume-size and pipe the bundle into `gapbundle split - -o PREFIX`")
        } else if std::io::stdout().is_terminal() {
            Some("standard output is a terminal: pipe the bundle into a command or redirect it to a file, or give -o FILE")
        } else {
            None
        };
        if let Some(why) = refused {
            return Err(UsageFailure(why.into()).into());
        }
    }
    let progress = Progress::new(out.quiet || out.json);
    let inputs = Inputs::load(a, &output, &progress)?;
    let mut resolved = resolve(a, &inputs, &progress)?;
    check_lock(a, &inputs, &resolved)?;
    let assembled = assemble(a, &inputs, &mut resolved)?;
    let envelope = Envelope::sign(assembled.plan.digest, &inputs.keys);
    let target = Target::open(a, &output, &resolved, &assembled.plan, &envelope)?;
    let fetched = fetch(&inputs, &resolved, target.placement(), &progress)?;
    let written = write(a, &inputs, &assembled, &envelope, target, &progress)?;
    report(
        a,
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
    /// `--against`: what each base holds.
    bases: Vec<Base>,
}

impl Inputs {
    fn load(a: &CreateSettings, output: &Output, progress: &Progress) -> Result<Inputs, Failure> {
        let loaded = spec::load(&a.spec)?;
        let lock_path = a.lock.clone();
        if let Output::File(out) = output {
            check_output(out, a.volume_size.is_some(), &input_paths(a, &loaded))?;
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
        let cas = Cas::open(a.cache.clone())
            .context("opening the blob cache (choose another with --cache DIR)")?;
        let created = a.created;
        let bases = super::against::load(&a.against, &a.against_trust, progress)?;
        Ok(Inputs {
            loaded,
            lock_path,
            old_lock,
            keys,
            cas,
            created,
            bases,
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

fn resolve(a: &CreateSettings, inputs: &Inputs, progress: &Progress) -> Result<Resolved, Failure> {
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
            k8s::render(loaded, cas, &mut ctx, progress, &render_options(a))?,
            nix::resolve(loaded, cas, &mut ctx, progress, keys)?,
            files::resolve(loaded, cas, &a.registry, progress)?,
        ]
    };
    // (the spec entry's index, for messages; the request)
    let mut requests: Vec<(usize, ImageRequest)> = Vec::new();
    for (i, r) in loaded.images.iter().enumerate() {
        let ImageSource::List(path) = &r.source else {
            requests.push((i, r.clone()));
            continue;
        };
        // Each listed reference is a registry image of its own (`ref:` lock key).
        for reference in image_list(i, path)? {
            let source = ImageSource::Registry(reference);
            if !requests.iter().any(|(_, r)| r.source == source) {
                requests.push((
                    i,
                    ImageRequest {
                        source,
                        name: None,
                        platforms: r.platforms.clone(),
                        referrers: r.referrers,
                    },
                ));
            }
        }
    }
    let mut wanted_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for w in contributions.iter().flat_map(|c| &c.images) {
        let source = ImageSource::Registry(w.reference.clone());
        if !requests.iter().any(|(_, r)| r.source == source) {
            requests.push((
                requests.len(),
                ImageRequest {
                    source,
                    name: None,
                    platforms: loaded.spec.platforms.clone(),
                    referrers: loaded.spec.referrers,
                },
            ));
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
    // Made once, before any image: a registries file or CA that cannot be read is
    // one error, not one per image.
    if requests
        .iter()
        .any(|(_, r)| matches!(r.source, ImageSource::Registry(_)))
    {
        resolved.registry = Some(Registry::new(a.registry.clone())?);
    }
    // Every image that cannot be resolved is reported, not only the first: behind a
    // mirror or a proxy, one run should show all that is missing there.
    let mut failures: Vec<Failure> = Vec::new();
    for (i, req) in &requests {
        let images = match &req.source {
            // An archive holds any number of images (K3s's air-gap tarballs).
            ImageSource::Archive(path) => resolve_archive(a, inputs, *i, req, path, progress),
            _ => resolve_image(a, inputs, &mut resolved, *i, req, &wanted_by, progress)
                .map(|image| vec![image]),
        };
        let images = match images {
            Ok(images) => images,
            Err(f) if per_image(&f) => {
                failures.push(f);
                continue;
            }
            Err(f) => return Err(f),
        };
        for image in images {
            let locked = LockedImage {
                name: image.name.clone(),
                digest: image.plan.root.digest,
                media_type: image.plan.root.media_type.clone(),
                referrers: image.referrers.iter().map(|r| r.plan.root.digest).collect(),
            };
            // Two spellings of one image (`redis:8` in a chart, `docker.io/redis:8` in
            // an overlay) are one image object, wanted by the documents of both.
            if let Some(same) = resolved
                .images
                .iter_mut()
                .find(|r| r.name == image.name && r.plan.root.digest == image.plan.root.digest)
            {
                for w in image.wanted_by {
                    if !same.wanted_by.contains(&w) {
                        same.wanted_by.push(w);
                    }
                }
                resolved.new_lock.images.insert(image.source, locked);
                continue;
            }
            resolved
                .new_lock
                .images
                .insert(image.source.clone(), locked);
            resolved.images.push(image);
        }
    }
    match failures.len() {
        0 => Ok(resolved),
        1 => Err(failures.remove(0)),
        n => Err(all_failures(n, failures)),
    }
}

/// Whether a failure belongs to one image (its input or its registry's answer),
/// so that the other images are still tried; the machine's own trouble (a full
/// disk) stops create at once.
fn per_image(f: &Failure) -> bool {
    [ErrorClass::Input, ErrorClass::Service]
        .iter()
        .any(|c| c.exit_code() == f.code)
}

/// One failure for several images that could not be resolved, each with its own
/// error (and the documents that want it). Its exit code is the input error's when
/// any is one (running again later cannot help), else the service's.
fn all_failures(n: usize, failures: Vec<Failure>) -> Failure {
    let input = ErrorClass::Input.exit_code();
    let code = if failures.iter().any(|f| f.code == input) {
        input
    } else {
        failures[0].code
    };
    let mut msg = format!("{n} images cannot be resolved:");
    for f in &failures {
        let text = format!("{:#}", f.error);
        msg.push_str("\n  - ");
        msg.push_str(&text.replace('\n', "\n    "));
    }
    let error = if code == input {
        InputFailure(msg).into()
    } else {
        RegistryFailure(msg).into()
    };
    Failure { code, error }
}

/// The references of the image list `images[i]` names (a `.txt` as K3s reads them).
fn image_list(i: usize, path: &std::path::Path) -> Result<Vec<String>, Failure> {
    let text = fs::read_to_string(path).map_err(|e| {
        InputFailure(format!(
            "images[{i}]: cannot read the image list {}: {e} (the `list:` path is relative to the spec file)",
            path.display()
        ))
    })?;
    crate::spec::file::parse_image_list(&text).map_err(|e| {
        InputFailure(format!(
            "images[{i}]: {}:{}: {}; write one image reference a line (blank lines and lines starting with # are skipped)",
            path.display(),
            e.line,
            e.message
        ))
        .into()
    })
}

/// The images of the archive `images[i]`: each image under each of its names, or
/// the one image under `name:`. One image object gets the entry's lock key
/// (`archive:<file>`), several get `archive:<file>#<name>` each.
fn resolve_archive(
    a: &CreateSettings,
    inputs: &Inputs,
    i: usize,
    req: &ImageRequest,
    path: &std::path::Path,
    progress: &Progress,
) -> Result<Vec<ResolvedImage>, Failure> {
    let base_key = req.source.lock_key(&inputs.loaded.base);
    let all = archive::resolve_archive_images(&inputs.cas, path, &req.platforms)?;
    let mut named: Vec<(String, ImagePlan)> = Vec::new();
    match (&req.name, all.as_slice()) {
        (Some(name), [one]) => named.push((name.clone(), one.image.plan.clone())),
        (Some(_), _) => {
            return Err(InputFailure(format!(
                "images[{i}] ({base_key}): `name` is for an archive of one image, and {} holds {}: drop `name:` to bundle each under its own names ({})",
                path.display(),
                all.len(),
                all.iter().map(|x| x.label.clone()).collect::<Vec<_>>().join(", ")
            ))
            .into())
        }
        (None, _) => {
            for x in &all {
                if x.names.is_empty() {
                    return Err(InputFailure(format!(
                        "images[{i}] ({base_key}): image {} of {} has no name inside it: give the archive's images names (RepoTags, io.containerd.image.name), or, for an archive of one image, add `name: registry.example/team/app:1.0` to the entry",
                        x.label,
                        path.display()
                    ))
                    .into());
                }
                for n in &x.names {
                    named.push((n.clone(), x.image.plan.clone()));
                }
            }
        }
    }
    let single = named.len() == 1;
    let mut out = Vec::new();
    for (name, plan) in named {
        let key = if single {
            base_key.clone()
        } else {
            format!("{base_key}#{name}")
        };
        check_pin(a, inputs, i, &key, &plan, progress)?;
        if !plan.skipped_platforms.is_empty() {
            progress.message(format!(
                "{name}: keeping {}, leaving out {}",
                plan.platforms.join(", "),
                plan.skipped_platforms.join(", ")
            ));
        }
        out.push(ResolvedImage {
            wanted_by: Vec::new(),
            name,
            source: key,
            plan,
            referrers: Vec::new(),
        });
    }
    Ok(out)
}

/// A local image against its pin in the lock: with `--locked`, it must be there
/// and the same; otherwise a change is said.
fn check_pin(
    a: &CreateSettings,
    inputs: &Inputs,
    i: usize,
    key: &str,
    plan: &ImagePlan,
    progress: &Progress,
) -> Result<(), Failure> {
    let lock_path = &inputs.lock_path;
    let pinned = inputs.old_lock.images.get(key).map(|l| l.digest);
    match pinned {
        None if a.locked => Err(InputFailure(format!(
            "--locked: images[{i}] ({key}) is not in {}; run create without --locked to add it",
            lock_path.display()
        ))
        .into()),
        Some(p) if p != plan.root.digest && a.locked => Err(InputFailure(format!(
            "--locked: {key} is now {} but {} pins {p}; run create without --locked to update the lock",
            plan.root.digest,
            lock_path.display()
        ))
        .into()),
        Some(p) if p != plan.root.digest && !a.update => {
            progress.message(format!("{key}: changed from {p} to {}", plan.root.digest));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Resolves `images[i]` (or an image a document wants) against its pin in the lock.
fn resolve_image(
    a: &CreateSettings,
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
    let mut referrers = Vec::new();
    let (name, plan) = match &req.source {
        ImageSource::Registry(reference) => {
            let reg = resolved
                .registry
                .as_ref()
                .expect("made before the first registry image");
            let found = (|| {
                let root = reg.resolve(cas, reference, pinned)?;
                let mut fetch = reg.manifests(cas, reference)?;
                let plan = image::walk(&root.bytes, &root.media_type, &req.platforms, &mut fetch)
                    .map_err(served_by_registry)
                    .with_context(|| format!("image {reference}"))?;
                anyhow::Ok((root, plan))
            })();
            let (root, plan) = found.map_err(|e| match wanted_by.get(reference) {
                Some(who) => e.context(format!("{reference} is wanted by {}", who.join(", "))),
                None => e,
            })?;
            resolved
                .downloads
                .extend(plan.blobs.iter().map(|b| (root.name.clone(), b.clone())));
            if req.referrers {
                referrers = resolve_referrers(reg, cas, &root.name, root.digest)?;
                if a.locked {
                    check_referrers(inputs, &key, &root.name, &referrers)?;
                }
                for r in &referrers {
                    resolved
                        .downloads
                        .extend(r.plan.blobs.iter().map(|b| (root.name.clone(), b.clone())));
                }
                progress.message(format!(
                    "{}: {} referrer(s) (signatures, attestations, SBOMs)",
                    root.name,
                    referrers.len()
                ));
            }
            (root.name, plan)
        }
        ImageSource::Layout { dir, tag } => {
            let li = layout::resolve_layout(cas, dir, tag.as_deref(), &req.platforms)?;
            (local_name(i, &key, req.name.as_ref(), li.name)?, li.plan)
        }
        ImageSource::Archive(_) | ImageSource::List(_) => {
            return Err(anyhow::anyhow!(
                "internal error: images[{i}] ({key}) is resolved by resolve_archive or image_list"
            )
            .into())
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
        referrers,
    })
}

/// With `--locked`, the referrers found for `key` (the registry image `name`) must
/// be the ones its lock entry pins: a signature added or withdrawn upstream changes
/// the bundle, so it is refused as a moved tag is, naming what was added and removed.
fn check_referrers(
    inputs: &Inputs,
    key: &str,
    name: &str,
    found: &[ResolvedReferrer],
) -> Result<(), Failure> {
    let Some(pinned) = inputs.old_lock.images.get(key) else {
        return Ok(());
    };
    let found: BTreeSet<Digest> = found.iter().map(|r| r.plan.root.digest).collect();
    let (added, removed) = pinned.referrers_changed(&found);
    if added.is_empty() && removed.is_empty() {
        return Ok(());
    }
    let repository = crate::oci::Reference::parse(name)?.name();
    let list = |what: &str, ds: &[Digest]| {
        (!ds.is_empty()).then(|| {
            let names: Vec<String> = ds
                .iter()
                .map(|d| crate::bundle::referrers::object_name(&repository, d))
                .collect();
            format!("{what} {}", names.join(", "))
        })
    };
    let changes: Vec<String> = [list("added", &added), list("removed", &removed)]
        .into_iter()
        .flatten()
        .collect();
    Err(InputFailure(format!(
        "--locked: the referrers of {name} ({key}) are not the ones {} pins: {}; run create without --locked to update the lock",
        inputs.lock_path.display(),
        changes.join("; ")
    ))
    .into())
}

/// The referrers of the registry image `name` (root `subject`), each walked to the
/// blobs it needs (its manifests cached; configs and layers still to download).
fn resolve_referrers(
    reg: &Registry,
    cas: &crate::io::cas::Cas,
    name: &str,
    subject: Digest,
) -> anyhow::Result<Vec<ResolvedReferrer>> {
    let repository = crate::oci::Reference::parse(name)?.name();
    let mut out = Vec::new();
    for f in reg
        .referrers(cas, name, subject)
        .map_err(served_by_registry)
        .with_context(|| format!("the referrers of {name}"))?
    {
        let mut fetch = reg.manifests(cas, name)?;
        let plan = image::walk(&f.bytes, &f.media_type, &spec::Platforms::All, &mut fetch)
            .map_err(served_by_registry)
            .with_context(|| format!("referrer {} of {name}", f.digest))?;
        out.push(ResolvedReferrer {
            name: crate::bundle::referrers::object_name(&repository, &f.digest),
            meta: f.meta,
            plan,
        });
    }
    Ok(out)
}

/// Stage 3: with `--locked`, the lock the inputs resolved to must be the one on
/// disk. (Each pin was already held against its image in stage 2.)
fn check_lock(a: &CreateSettings, inputs: &Inputs, resolved: &Resolved) -> Result<(), Failure> {
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

/// Stage 5 (after `assemble` and `Target::open`): the registry images' blobs into
/// the cache, in parallel (local images, documents and NARs are there already),
/// and, with a `placement`, each into the bundle's temporary file at its offset as
/// it streams. `None` when nothing came from a registry.
fn fetch(
    inputs: &Inputs,
    resolved: &Resolved,
    placement: Option<Arc<Placement>>,
    progress: &Progress,
) -> Result<Option<FetchStats>, Failure> {
    // A delta leaves out what a base holds: it is not downloaded. (A blob that
    // some document or NAR shares is stored, so it is fetched: see `leave_out`.)
    let shared: BTreeSet<Digest> = resolved
        .contributions
        .iter()
        .flat_map(|c| c.blobs.iter().map(|(b, _)| b.digest))
        .collect();
    let downloads: Vec<(String, Blob)> = resolved
        .downloads
        .iter()
        .filter(|(_, b)| {
            shared.contains(&b.digest)
                || !inputs
                    .bases
                    .iter()
                    .any(|base| base.blobs.contains(&b.digest))
        })
        .cloned()
        .collect();
    match &resolved.registry {
        Some(reg) if !downloads.is_empty() => Ok(Some(reg.fetch_blobs_into(
            &inputs.cas,
            &downloads,
            placement,
            progress,
        )?)),
        _ => Ok(None),
    }
}

/// Stage 4, the bundle laid out: every blob and object in the manifest, offsets
/// fixed, and the lock file's bytes (stored in the bundle, written beside the spec).
/// Only digests and sizes are needed, so this comes before the downloads.
struct Assembled {
    /// The bundle to write: the full one, or with `--against` the delta.
    plan: Plan,
    lock_bytes: Vec<u8>,
    lock_changed: bool,
    /// With `--against`: the full bundle the delta patches to.
    full: Option<Plan>,
}

/// The contributions' blobs and objects move into the bundle (`resolved` keeps no
/// second copy of 20,000 file objects while the bundle is written).
fn assemble(
    a: &CreateSettings,
    inputs: &Inputs,
    resolved: &mut Resolved,
) -> Result<Assembled, Failure> {
    let Inputs {
        loaded,
        lock_path,
        cas,
        created,
        ..
    } = inputs;
    // A lock on disk that pins exactly what was resolved is kept as it is, in
    // whatever layout it has (an older compact lock included): the bundle carries
    // those bytes and the file is not rewritten, so an unchanged lock never shows
    // up in a review. Any change writes the laid-out form.
    let on_disk = fs::read(lock_path).ok();
    let unchanged = on_disk.as_deref().filter(|b| {
        Lock::parse(&lock_path.display().to_string(), b).is_ok_and(|l| l == resolved.new_lock)
    });
    let lock_bytes = match unchanged {
        Some(b) => b.to_vec(),
        None => resolved.new_lock.to_bytes(),
    };
    let lock_changed = on_disk.as_deref() != Some(lock_bytes.as_slice());
    let mut builder = BundleBuilder::new(
        &loaded.spec.name,
        &loaded.spec.version,
        *created,
        loaded.spec.platforms.to_strings(),
    );
    let mut referrers = BTreeSet::new();
    for r in &resolved.images {
        add_image(&mut builder, r)?;
        for f in &r.referrers {
            // One repository's referrer, found again through another tag of the
            // same image, is one object.
            if referrers.insert(f.name.clone()) {
                add_referrer(&mut builder, f)?;
            }
        }
    }
    for c in std::mem::take(&mut resolved.contributions) {
        for (blob, rank) in c.blobs {
            builder.add_blob(blob, rank)?;
        }
        for o in c.objects {
            builder.add_object(o)?;
        }
    }
    let spec_name = file_name(&a.spec);
    let lock_name = file_name(lock_path);
    for (kind, name, bytes, media_type) in [
        (Kind::Spec, spec_name, &loaded.bytes, SPEC_MEDIA_TYPE),
        (Kind::Lock, lock_name, &lock_bytes, LOCK_MEDIA_TYPE),
    ] {
        let d = cas.put_bytes(bytes)?;
        builder.add_blob(BlobEntry::new(d, bytes.len() as u64, media_type), 0)?;
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
    // `--sbom`: the documents describe the objects laid out so far (format.md
    // section 17.3: not the bundle digest, which depends on the manifest that
    // holds them), and are objects themselves.
    if !a.sbom.is_empty() {
        let docs = builder.with_draft(|draft| {
            a.sbom
                .iter()
                .map(|format| {
                    // Into the cache as it is written: a document of 20,000
                    // components is 13 MB.
                    let mut w = cas.writer()?;
                    sbom::write(
                        draft,
                        &Subject::Contents,
                        *format,
                        super::sbom::TOOL_VERSION,
                        &mut w,
                    )
                    .with_context(|| {
                        format!(
                            "writing the {} document into the cache",
                            format.object_name()
                        )
                    })?;
                    let (d, size) = w.finish(None)?;
                    Ok((*format, d, size))
                })
                .collect::<Result<Vec<_>, anyhow::Error>>()
        })?;
        for (format, d, size) in docs {
            builder.add_blob(BlobEntry::new(d, size, format.media_type()), 0)?;
            builder.add_object(Object {
                kind: Kind::Sbom,
                name: format.object_name().into(),
                digest: d,
                media_type: format.media_type().into(),
                size,
                blobs: vec![d],
                meta: Meta::default(),
            })?;
        }
    }
    let full = builder.finish()?;
    if inputs.bases.is_empty() {
        return Ok(Assembled {
            plan: full,
            lock_bytes,
            lock_changed,
            full: None,
        });
    }
    // The full bundle's head is what only the signer can make: it travels in the
    // delta as its first two blobs, from the cache like every other blob.
    let full_envelope = Envelope::sign(full.digest, &inputs.keys).to_canonical();
    cas.put_bytes(&full.manifest_bytes)?;
    cas.put_bytes(&full_envelope)?;
    let left_out = leave_out(&full.manifest, &inputs.bases);
    let against: Vec<_> = inputs.bases.iter().map(|b| b.describe.clone()).collect();
    let delta = delta_manifest(
        &full.manifest,
        &full.manifest_bytes,
        &full_envelope,
        &against,
        &left_out,
    )?;
    Ok(Assembled {
        plan: full.with_manifest(delta)?,
        lock_bytes,
        lock_changed,
        full: Some(full),
    })
}

/// Stage 6, the bundle written: to a temporary file renamed over the output once
/// complete (blobs not already placed by the downloads copied in parallel), or
/// streamed to an output that
/// is not a regular file, or, with `--volume-size`, to volumes (and parity volumes)
/// that appear only once all of them are complete; then the lock beside the spec,
/// if it changed.
struct Written {
    /// Where the bundle went.
    output: Output,
    /// Bytes of the bundle.
    size: u64,
    /// The volumes, when it was split.
    volumes: Option<(Layout, Committed)>,
}

/// Where the bundle goes, opened before the downloads: a single regular file's
/// temporary file is created then, so that downloads can write each blob into it
/// at its offset as they stream ([`Placement`]), instead of the write stage
/// copying every downloaded byte out of the cache again.
enum Target {
    /// A single regular file: its temporary file, and the placement into it.
    File {
        path: PathBuf,
        file: AtomicFile,
        placement: Option<Arc<Placement>>,
    },
    /// Volumes named after `path`, created by the write stage.
    Volumes { path: PathBuf, volume_size: u64 },
    /// Standard output.
    Stdout,
}

impl Target {
    fn open(
        a: &CreateSettings,
        output: &Output,
        resolved: &Resolved,
        plan: &Plan,
        envelope: &Envelope,
    ) -> Result<Target, Failure> {
        match (a.volume_size, output) {
            (_, Output::Stdout) => Ok(Target::Stdout),
            (Some(volume_size), Output::File(path)) => Ok(Target::Volumes {
                path: path.clone(),
                volume_size,
            }),
            (None, Output::File(path)) => {
                // What a killed create left here (a half bundle of hundreds of MiB).
                sweep_beside(path);
                let file = AtomicFile::create(path)?;
                let placement = file
                    .temp_path()
                    .filter(|_| resolved.registry.is_some() && !resolved.downloads.is_empty())
                    .map(|tmp| Arc::new(Placement::new(tmp, plan, envelope)));
                Ok(Target::File {
                    path: path.clone(),
                    file,
                    placement,
                })
            }
        }
    }

    fn placement(&self) -> Option<Arc<Placement>> {
        match self {
            Target::File { placement, .. } => placement.clone(),
            Target::Volumes { .. } | Target::Stdout => None,
        }
    }
}

fn write(
    a: &CreateSettings,
    inputs: &Inputs,
    assembled: &Assembled,
    envelope: &Envelope,
    target: Target,
    progress: &Progress,
) -> Result<Written, Failure> {
    let plan = &assembled.plan;
    let total = plan.file_len(envelope);
    let output = match &target {
        Target::File { path, .. } | Target::Volumes { path, .. } => Output::File(path.clone()),
        Target::Stdout => Output::Stdout,
    };
    let bar = progress.bar(format!("bundle {}", output.shown()), total);
    let volumes = match target {
        Target::Stdout => {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            write_bundle(&mut w, plan, envelope, &inputs.cas, |b| {
                bar.inc(b.size + 512)
            })
            .context("writing the bundle to standard output")?;
            w.flush().context("writing the bundle to standard output")?;
            bar.clear();
            None
        }
        Target::Volumes { path, volume_size } => {
            let layout = Layout::new(total, volume_size, plan.data_start(envelope))?;
            let out = VolumeOutput::create(&path, layout, a.parity.unwrap_or(0))?;
            write_parallel(
                &out.pieces(),
                plan,
                envelope,
                &inputs.cas,
                a.threads,
                None,
                &|b| bar.inc(b.size + 512),
            )?;
            bar.clear();
            Some((layout, commit(out, plan.digest, total, progress)?))
        }
        Target::File {
            mut file,
            placement,
            ..
        } => {
            match file.temp_path().map(std::path::Path::to_path_buf) {
                Some(tmp) => {
                    write_parallel(
                        &Pieces::one(&tmp),
                        plan,
                        envelope,
                        &inputs.cas,
                        a.threads,
                        placement.as_deref(),
                        &|b| bar.inc(b.size + 512),
                    )?;
                }
                None => {
                    write_bundle(&mut file, plan, envelope, &inputs.cas, |b| {
                        bar.inc(b.size + 512)
                    })?;
                }
            }
            file.commit()?;
            bar.clear();
            None
        }
    };
    // The blobs hashed on the way into the cache or into this bundle, so that the
    // next create copies them without hashing (io::cas). Failing to record only
    // costs that hashing next time; it does not fail a bundle already written.
    let _ = inputs.cas.save_record();
    if assembled.lock_changed {
        sweep_beside(&inputs.lock_path);
        crate::io::atomic::write(&inputs.lock_path, &assembled.lock_bytes)?;
    }
    Ok(Written {
        output,
        size: total,
        volumes,
    })
}

/// Stage 7: what was written, on stdout (on stderr when the bundle went there).
fn report(
    a: &CreateSettings,
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
    let output = &written.output;
    let (spec, lock_path) = (&inputs.loaded.spec, &inputs.lock_path);
    let total = written.size;
    let totals = Totals::of(&plan.manifest);
    // Which pins moved (tags that now name another image: what `--update` is for).
    let moved = inputs.old_lock.moved(&resolved.new_lock);
    if out.json {
        print_json(&CreateReport {
            bundle: match output {
                Output::File(p) => p.clone(),
                Output::Stdout => PathBuf::from("-"),
            },
            digest: plan.digest.to_string(),
            size: total,
            name: spec.name.clone(),
            version: spec.version.clone(),
            signers: inputs.keys.iter().map(|k| k.name().to_string()).collect(),
            images: resolved
                .images
                .iter()
                .map(|r| CreatedImage {
                    reference: r.name.clone(),
                    digest: r.plan.root.digest.to_string(),
                    media_type: r.plan.root.media_type.clone(),
                    platforms: r.plan.platforms.clone(),
                    source: r.source.clone(),
                })
                .collect(),
            lock: lock_path.clone(),
            lock_changed: *lock_changed,
            moved,
            fetched: Fetched {
                blobs: stats.map_or(0, |s| s.fetched),
                bytes: stats.map_or(0, |s| s.fetched_bytes),
            },
            cached_blobs: stats.map_or(0, |s| s.cached),
            stored_bytes: totals.stored_bytes,
            saved_bytes: totals.saved(),
            volumes: written.volumes.as_ref().map(|(_, c)| c.data.clone()),
            parity_volumes: written.volumes.as_ref().map(|(_, c)| c.parity.clone()),
            delta: delta_report(plan, assembled.full.as_ref(), &inputs.keys),
        });
    } else if !out.quiet {
        // Standard output may be the bundle: then nothing else may go there.
        let line = |l: String| match output {
            Output::Stdout => eprintln!("{l}"),
            Output::File(_) => say!("{l}"),
        };
        line(format!(
            "{} {} ({}): {} image(s), {} blobs, {} saved by storing shared blobs once",
            if written.volumes.is_some() {
                "bundled"
            } else {
                "wrote"
            },
            output.shown(),
            human_bytes(total),
            resolved.images.len(),
            totals.blobs,
            human_bytes(totals.saved())
        ));
        if let Some((layout, committed)) = &written.volumes {
            say_volumes(&a.output, *layout, committed);
        }
        line(format!("digest {}", plan.digest));
        if let (Some(full), Some(d)) = (&assembled.full, &plan.manifest.delta) {
            let expected = plan.manifest.expected();
            line(format!(
                "delta of {} {}: {} blobs ({}) left out, expected on the target; `gapbundle patch` rebuilds the full bundle {}",
                spec.name,
                spec.version,
                expected.len(),
                human_bytes(expected.iter().map(|(b, _)| b.size).sum()),
                full.digest
            ));
            for base in &d.against {
                line(format!(
                    "  against {base}: {} blobs ({})",
                    base.blobs,
                    human_bytes(base.bytes)
                ));
            }
        }
        if *lock_changed {
            line(format!("updated {}", lock_path.display()));
        }
        for m in &moved {
            if m.from != m.to {
                line(format!(
                    "  moved {} ({}): {} -> {}",
                    m.key, m.name, m.from, m.to
                ));
            }
            for (what, ds) in [
                ("added", &m.referrers_added),
                ("removed", &m.referrers_removed),
            ] {
                if !ds.is_empty() {
                    let ds: Vec<String> = ds.iter().map(|d| d.to_string()).collect();
                    line(format!(
                        "  referrers of {} ({}) {what}: {}",
                        m.key,
                        m.name,
                        ds.join(", ")
                    ));
                }
            }
        }
    }
}

/// The `delta` member of create's JSON report: `None` for a full bundle.
fn delta_report(plan: &Plan, full: Option<&Plan>, keys: &[SecretKey]) -> Option<CreateDelta> {
    let full = full?;
    Some(CreateDelta {
        summary: DeltaSummary::of(&plan.manifest)?,
        full_size: full.file_len(&Envelope::sign(full.digest, keys)),
    })
}

/// Every local file and folder `create` reads, as (what, path, whether every file
/// below a folder is read): the spec, the lock, the keys, the Docker config, the
/// cache, the `--against` bases (every volume of a split one) and their `--trust`
/// keys, local layouts and archives, and what rendering reads.
fn input_paths(a: &CreateSettings, loaded: &LoadedSpec) -> Vec<(String, PathBuf, bool)> {
    let mut v = vec![
        ("the spec".to_string(), a.spec.clone(), false),
        ("the lock file".to_string(), a.lock.clone(), false),
        ("the cache (--cache)".to_string(), a.cache.clone(), true),
    ];
    for k in &a.keys {
        v.push(("the key (--key)".to_string(), k.clone(), false));
    }
    if let Some(p) = &a.registry.docker_config {
        v.push(("the Docker config".to_string(), p.clone(), false));
    }
    for p in &a.against {
        v.push(("the base (--against)".to_string(), p.clone(), false));
        // A base given as its first volume is read from every volume of its set.
        if let Some(set) = crate::io::volumes::find(p) {
            v.extend(
                set.data
                    .into_values()
                    .chain(set.parity.into_values())
                    .map(|v| ("a volume of the base (--against)".to_string(), v, false)),
            );
        }
    }
    for p in &a.against_trust {
        v.push(("the trusted keys (--trust)".to_string(), p.clone(), true));
    }
    for (i, r) in loaded.images.iter().enumerate() {
        match &r.source {
            ImageSource::Layout { dir, .. } => {
                v.push((format!("the layout of images[{i}]"), dir.clone(), true))
            }
            ImageSource::Archive(p) => {
                v.push((format!("the archive of images[{i}]"), p.clone(), false))
            }
            ImageSource::List(p) => {
                v.push((format!("the image list of images[{i}]"), p.clone(), false))
            }
            ImageSource::Registry(_) | ImageSource::Installable(_) => {}
        }
    }
    for (i, f) in loaded.files.iter().enumerate() {
        if let spec::file::FileSource::Path(p, _) = &f.source {
            v.push((format!("the path of files[{i}]"), p.clone(), true));
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
    fs::canonicalize(path).unwrap_or_else(|_| resolved_beside(path))
}

/// `path` made absolute with its folder resolved through the file system (where it
/// exists) and its own name kept, whatever that names: where a file of that name
/// is created or renamed to.
fn resolved_beside(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or(abs.clone()),
        _ => abs,
    }
}

/// Refuses an output that is one of `inputs` (the same file by device and inode,
/// or by path for an input that does not exist yet, like a new lock file), or that
/// lies inside an input folder all of whose files are read. With `volumes`,
/// `output` is the prefix of a set, and every name the set may write or remove
/// (`PREFIX.001` …, `PREFIX.p01` …: a new set removes the volumes of an earlier one
/// it lacks) is an output; volumes are renamed into place, never written through a
/// link, so their names are all there is to compare.
fn check_output(
    output: &Path,
    volumes: bool,
    inputs: &[(String, PathBuf, bool)],
) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let out_meta = if volumes {
        None
    } else {
        fs::metadata(output).ok()
    };
    let out_path = if volumes {
        resolved_beside(output)
    } else {
        resolved_path(output)
    };
    for (what, input, whole) in inputs {
        let in_meta = fs::metadata(input).ok();
        let in_path = resolved_path(input);
        let same = if volumes {
            super::volumes::names_a_volume_of(output, &in_path)
        } else {
            match (&out_meta, &in_meta) {
                (Some(o), Some(i)) => o.dev() == i.dev() && o.ino() == i.ino(),
                _ => in_path == out_path,
            }
        };
        // A folder read whole (a layout, the cache), or one that does not exist
        // yet but will be made and filled (a new cache).
        let inside =
            *whole && in_meta.as_ref().is_none_or(|m| m.is_dir()) && out_path.starts_with(&in_path);
        if same || inside {
            let relation = match (same, volumes) {
                (true, false) => "is",
                (true, true) => "with --volume-size would write or remove the volume",
                (false, _) => "is inside",
            };
            return Err(InputFailure(format!(
                "-o {} {relation} {what} {}: refusing to write the bundle over an input; give another output file",
                output.display(),
                input.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// Charts use the same `--insecure-registry`, `--registry-auth` and Docker config
/// as images do.
fn render_options(a: &CreateSettings) -> k8s::RenderOptions {
    k8s::RenderOptions {
        registry: a.registry.clone(),
    }
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

fn add_referrer(builder: &mut BundleBuilder, r: &ResolvedReferrer) -> Result<(), Failure> {
    let (size, blobs) = add_blobs(builder, &r.plan)?;
    builder.add_object(Object {
        kind: Kind::Referrer,
        name: r.name.clone(),
        digest: r.plan.root.digest,
        media_type: r.plan.root.media_type.clone(),
        size,
        blobs,
        meta: Meta::Referrer(r.meta.clone()),
    })?;
    Ok(())
}

/// Adds every blob of `plan` (rank 0): the object's size and sorted blob list.
fn add_blobs(builder: &mut BundleBuilder, plan: &ImagePlan) -> Result<(u64, Vec<Digest>), Failure> {
    let mut digests = BTreeSet::new();
    let mut size = 0;
    for b in plan.manifests.iter().chain(&plan.blobs) {
        builder.add_blob(BlobEntry::new(b.digest, b.size, &b.media_type), 0)?;
        if digests.insert(b.digest) {
            size += b.size;
        }
    }
    Ok((size, digests.into_iter().collect()))
}

fn add_image(builder: &mut BundleBuilder, r: &ResolvedImage) -> Result<(), Failure> {
    let (size, blobs) = add_blobs(builder, &r.plan)?;
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
        blobs,
        meta,
    })?;
    Ok(())
}
