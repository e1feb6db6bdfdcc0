//! `gapbundle create`: spec in, one signed bundle out.
//!
//! The order matters for the people who run it. Everything is resolved to digests
//! first (cheap manifest requests), the lock is checked if `--locked`, and only then
//! are blobs downloaded, in parallel, into the cache; the bundle is laid out, signed
//! and streamed from the cache to a temporary file that is renamed over the output
//! only when complete. A failure at any step leaves no half-written bundle and no
//! half-updated lock.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::Context;
use fs_err as fs;
use serde_json::json;

use super::inspect::Totals;
use super::{exit, print_json, Failure};
use crate::bundle::manifest::{BlobEntry, Kind, Object};
use crate::bundle::signature::Envelope;
use crate::bundle::writer::{write_bundle, BundleBuilder};
use crate::bundle::Digest;
use crate::cli::{CreateArgs, OutputArgs};
use crate::error::InputFailure;
use crate::io::atomic::AtomicFile;
use crate::io::bundle_file::write_parallel;
use crate::io::cas::Cas;
use crate::io::keys::load_secret_key;
use crate::progress::{human_bytes, Progress};
use crate::registry::auth::parse_registry_auth;
use crate::registry::{Credentials, Settings};
use crate::resolve::image::{self, Blob, ImagePlan};
use crate::resolve::registry::Registry;
use crate::resolve::{archive, k8s, layout, nix, LockCtx};
use crate::spec::{self, ImageRequest, ImageSource, Lock, LockedImage};

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

/// Runs create.
pub fn run(a: CreateArgs, out: &OutputArgs) -> Result<(), Failure> {
    let progress = Progress::new(out.quiet || out.json);
    let loaded = spec::load(&a.spec)?;
    let lock_path = a
        .lock
        .clone()
        .unwrap_or_else(|| a.spec.with_extension("lock"));
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
    let cas = Cas::open(a.cache.clone().unwrap_or_else(Cas::default_root))
        .context("opening the blob cache (choose another with --cache DIR)")?;
    let created = source_date_epoch()?;

    let mut new_lock = Lock::new();
    // Rendering and Nix builds come first: they can ask for more images.
    let contributions = {
        let mut ctx = LockCtx {
            old: &old_lock,
            new: &mut new_lock,
            locked: a.locked,
            update: a.update,
        };
        [
            k8s::render(&loaded, &cas, &mut ctx, &progress, &render_options(&a)?)?,
            nix::resolve(&loaded, &cas, &mut ctx, &progress, &keys)?,
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

    let mut registry: Option<Registry> = None;
    let mut resolved = Vec::new();
    let mut downloads: Vec<(String, Blob)> = Vec::new();
    for (i, req) in requests.iter().enumerate() {
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
                if registry.is_none() {
                    registry = Some(Registry::new(registry_settings(&a)?)?);
                }
                let reg = registry.as_ref().expect("just set");
                let root = reg
                    .resolve(&cas, reference, pinned)
                    .map_err(|e| match wanted_by.get(reference) {
                        Some(who) => {
                            e.context(format!("{reference} is wanted by {}", who.join(", ")))
                        }
                        None => e,
                    })
                    .map_err(registry_failure)?;
                let plan = {
                    let mut fetch = reg.manifests(&cas, reference).map_err(registry_failure)?;
                    image::walk(&root.bytes, &root.media_type, &req.platforms, &mut fetch)
                        .with_context(|| format!("image {reference}"))
                        .map_err(registry_failure)?
                };
                downloads.extend(plan.blobs.iter().map(|b| (root.name.clone(), b.clone())));
                (root.name, plan)
            }
            ImageSource::Layout { dir, tag } => {
                let li = layout::resolve_layout(&cas, dir, tag.as_deref(), &req.platforms)?;
                (local_name(i, &key, req.name.as_ref(), li.name)?, li.plan)
            }
            ImageSource::Archive(path) => {
                let li = archive::resolve_archive(&cas, path, None, &req.platforms)?;
                (local_name(i, &key, req.name.as_ref(), li.name)?, li.plan)
            }
            ImageSource::Installable(installable) => {
                let path = crate::resolve::nix::build_archive(&loaded, installable)?;
                let li = archive::resolve_archive(&cas, &path, None, &req.platforms)?;
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
        new_lock.images.insert(
            key.clone(),
            LockedImage {
                name: name.clone(),
                digest: plan.root.digest,
                media_type: plan.root.media_type.clone(),
            },
        );
        resolved.push(ResolvedImage {
            wanted_by: match &req.source {
                ImageSource::Registry(r) => wanted_by.get(r).cloned().unwrap_or_default(),
                _ => Vec::new(),
            },
            name,
            source: key,
            plan,
        });
    }
    if a.locked && new_lock != old_lock {
        return Err(InputFailure(format!(
            "--locked: {} would change:\n  {}\nrun create without --locked to update it",
            lock_path.display(),
            old_lock.differences(&new_lock).join("\n  ")
        ))
        .into());
    }

    let stats = match &registry {
        Some(reg) if !downloads.is_empty() => Some(
            reg.fetch_blobs(&cas, &downloads, &progress)
                .map_err(registry_failure)?,
        ),
        _ => None,
    };

    let lock_bytes = new_lock.to_bytes();
    let lock_changed = fs::read(&lock_path).ok().as_deref() != Some(lock_bytes.as_slice());

    // Lay out the bundle.
    let mut builder = BundleBuilder::new(
        &loaded.spec.name,
        &loaded.spec.version,
        created,
        loaded.spec.platforms.to_strings(),
    );
    for r in &resolved {
        add_image(&mut builder, r)?;
    }
    for c in contributions {
        for (blob, rank) in c.blobs {
            builder.add_blob(blob, rank)?;
        }
        for o in c.objects {
            builder.add_object(o)?;
        }
    }
    let spec_name = file_name(&a.spec);
    let lock_name = file_name(&lock_path);
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
            meta: BTreeMap::new(),
        })?;
    }
    let plan = builder.finish()?;
    let envelope = Envelope::sign(plan.digest, &keys);

    let total = plan.file_len(&envelope);
    let bar = progress.bar(format!("bundle {}", a.output.display()), total);
    let mut file = AtomicFile::create(&a.output)?;
    match file.temp_path().map(std::path::Path::to_path_buf) {
        Some(tmp) => {
            let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
            write_parallel(&tmp, &plan, &envelope, &cas, jobs, &|b| {
                bar.inc(b.size + 512)
            })?;
        }
        None => {
            write_bundle(&mut file, &plan, &envelope, &cas, |b| bar.inc(b.size + 512))?;
        }
    }
    file.commit()?;
    bar.clear();
    if lock_changed {
        crate::io::atomic::write(&lock_path, &lock_bytes)?;
    }

    let totals = Totals::of(&plan.manifest);
    let images: Vec<_> = resolved
        .iter()
        .map(|r| {
            json!({"ref": r.name, "digest": r.plan.root.digest.to_string(),
                   "mediaType": r.plan.root.media_type, "platforms": r.plan.platforms, "source": r.source})
        })
        .collect();
    if out.json {
        print_json(&json!({
            "bundle": a.output, "digest": plan.digest.to_string(), "size": total,
            "name": loaded.spec.name, "version": loaded.spec.version,
            "signers": keys.iter().map(|k| k.name().to_string()).collect::<Vec<_>>(),
            "images": images, "lock": lock_path, "lockChanged": lock_changed,
            "fetched": {"blobs": stats.as_ref().map_or(0, |s| s.fetched), "bytes": stats.as_ref().map_or(0, |s| s.fetched_bytes)},
            "cachedBlobs": stats.as_ref().map_or(0, |s| s.cached),
            "storedBytes": totals.stored_bytes, "savedBytes": totals.saved(),
        }));
    } else if !out.quiet {
        say!(
            "wrote {} ({}): {} image(s), {} blobs, {} saved by storing shared blobs once",
            a.output.display(),
            human_bytes(total),
            resolved.len(),
            totals.blobs,
            human_bytes(totals.saved())
        );
        say!("digest {}", plan.digest);
        if lock_changed {
            say!("updated {}", lock_path.display());
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
    let mut meta = BTreeMap::new();
    meta.insert("platforms".into(), json!(r.plan.platforms));
    meta.insert("source".into(), json!(r.source));
    if !r.wanted_by.is_empty() {
        meta.insert("wantedBy".into(), json!(r.wanted_by));
    }
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

/// Default lock path for a spec path (exposed for docs and tests).
pub fn default_lock_path(spec: &std::path::Path) -> PathBuf {
    spec.with_extension("lock")
}
