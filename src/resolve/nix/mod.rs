//! Nix installables and store paths to NAR blobs and `nix-path` objects.
//!
//! Nix is never evaluated here: the real `nix` CLI builds each installable (`nix
//! build --json --no-link`), reports the closure of everything asked for (`nix
//! path-info --recursive --json`) and, with `includeFlakeInputs`, the flake's
//! sources (`nix flake archive --json`) (`cmd`); a `storePath:` entry must already
//! be valid and is not built. Each path of the closure becomes one blob: its NAR,
//! made by our own walk over the store path (`nix-store --dump` only when the walk
//! disagrees with the NAR hash Nix recorded), hashed and zstd-compressed as it
//! streams into the cache (`pack`). What each entry resolved to (its output paths,
//! the digest of its `flake.lock`) goes into the lock and is held against it with
//! `--locked` (`lock`). Each path keeps the signatures Nix had for it and is signed
//! with the bundle key(s) over Nix's own fingerprint, so Nix accepts the imported
//! paths with nothing but our public key in `trusted-public-keys`; a `gcRoot` names
//! the entry's outputs (`name`, or `name-0`, `name-1`, ... for several). Blobs are
//! ranked by topological depth: in the file, every NAR comes after the NARs of its
//! references. An entry with `activate` must be one NixOS system toplevel; its
//! path's meta carries the action (format.md 14.8).

mod cmd;
mod lock;
mod pack;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use fs_err as fs;

pub use cmd::{build_archive, build_manifests};
pub use lock::LockedNix;
pub use pack::NAR_ZSTD_LEVEL;

use crate::bundle::keys::SecretKey;
use crate::bundle::manifest::{BlobEntry, ContentInfo, Encoding, Kind, Object};
use crate::bundle::meta::{Activation, Meta, NixPathMeta};
use crate::bundle::Digest;
use crate::error::InputFailure;
use crate::io::cas::Cas;
use crate::nixfmt::{closure_order, sign_path, valid_root_name, StorePath, NAR_ZSTD_MEDIA_TYPE};
use crate::progress::Progress;
use crate::spec::LoadedSpec;
use cmd::{base_dir, build, closure, flake_dir, flake_inputs, flake_ref};
use lock::{check_lock, check_stale};
use pack::nar_blobs;

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

/// The one output of entry `i`, checked to be a NixOS system toplevel (it has
/// `bin/switch-to-configuration` and `nixos-version`, as every
/// `config.system.build.toplevel` has): `activate` on anything else would only
/// fail on the host, after the import.
fn system_toplevel(i: usize, outputs: &[String]) -> Result<StorePath> {
    let [out] = outputs else {
        return Err(InputFailure(format!(
            "nix[{i}]: `activate` needs an entry with one output, a NixOS system toplevel (`nixosConfigurations.<name>.config.system.build.toplevel`); it has {}",
            outputs.len()
        ))
        .into());
    };
    let root = std::path::Path::new(out);
    let missing: Vec<&str> = ["bin/switch-to-configuration", "nixos-version"]
        .into_iter()
        .filter(|f| !root.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(InputFailure(format!(
            "nix[{i}]: `activate` is set, but {out} is not a NixOS system toplevel: it lacks {} (build `nixosConfigurations.<name>.config.system.build.toplevel`)",
            missing.join(" and ")
        ))
        .into());
    }
    Ok(StorePath::parse(out)?)
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
    let mut system: Option<(StorePath, Activation)> = None;
    for i in 0..spec.spec.nix.len() {
        let (root, paths) = resolve_entry(spec, i, progress)?;
        check_lock(lock, &root.key, &root.locked, progress)?;
        if let Some(action) = spec.spec.nix[i].activate {
            if let Some((other, _)) = &system {
                return Err(InputFailure(format!(
                    "nix[{i}]: `activate` is set on a second entry ({other} is already the system to activate): a bundle carries at most one NixOS system"
                ))
                .into());
            }
            system = Some((system_toplevel(i, &root.locked.paths)?, action));
        }
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
    // An ed25519 signature is tens of microseconds, and a NixOS closure is 1,000 to
    // 2,000 paths: on every core, like the import's checks of them.
    let signed: Vec<Vec<String>> = crate::pool::map(
        crate::pool::cores(),
        &infos,
        || Ok::<_, std::convert::Infallible>(()),
        |_, info| {
            let fp = info.fingerprint();
            let mut sigs: Vec<String> = info.sigs.clone();
            sigs.extend(keys.iter().map(|k| sign_path(k, &fp)));
            sigs.sort();
            sigs.dedup();
            Ok(sigs)
        },
    )
    .unwrap_or_else(|e| match e {});

    let mut c = super::Contribution::default();
    for ((info, (digest, size)), sigs) in infos.iter().zip(blobs).zip(signed) {
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
            activate: system
                .as_ref()
                .filter(|(p, _)| *p == info.path)
                .map(|(_, a)| *a),
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
