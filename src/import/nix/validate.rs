//! What section 14.5 of format.md asks of the `nix-path` objects before the import
//! writes anything, beyond what parsing the manifest already checked (names, NAR
//! hashes, references, GC root names, a NAR blob that matches its meta: see
//! `bundle::meta`): a path signature by a trusted key over Nix's fingerprint. The
//! third rule, references that are in the bundle or valid on the target, needs the
//! target and is checked where the target plans (`super::NixTarget`'s `plan`).
//!
//! The signatures are checked apart from the parse ([`check_signatures`]) because
//! they are only needed before something is written: the import's plan checks them
//! once it knows it will hand a path or its signatures to the target, and skips them
//! on a rerun that finds every path valid and signed (an ed25519 check is most of
//! what a present path costs there).

use anyhow::Result;

use crate::bundle::keys::{verify_batch, PublicKey, Signature};
use crate::bundle::reader::Head;
use crate::bundle::Digest;
use crate::error::BundleFailure;
use crate::nixfmt::{fingerprint, verify_path, NarHash, NarInfo, StorePath};

/// One `nix-path` object of the bundle, checked.
#[derive(Debug, Clone)]
pub(super) struct NixObject {
    pub(super) path: StorePath,
    /// Its NAR blob: the manifest entry (digest, size, content), looked up once
    /// (`Manifest::blob` is a linear search, and a closure of thousands of paths
    /// asked it several times a path).
    pub(super) entry: crate::bundle::manifest::BlobEntry,
    pub(super) nar_hash: NarHash,
    pub(super) nar_size: u64,
    pub(super) references: Vec<StorePath>,
    pub(super) deriver: Option<StorePath>,
    pub(super) ca: Option<String>,
    pub(super) sigs: Vec<String>,
    pub(super) gc_roots: Vec<String>,
}

impl NixObject {
    /// The narinfo of this path in a cache: the bundle's own `.nar.zst` blob.
    pub(super) fn narinfo(&self) -> NarInfo {
        let file_hash = NarHash::from_digest(&self.entry.digest);
        NarInfo {
            store_path: self.path.clone(),
            url: NarInfo::nar_url(&file_hash, "zst"),
            compression: "zstd".into(),
            file_hash,
            file_size: self.entry.size,
            nar_hash: self.nar_hash,
            nar_size: self.nar_size,
            references: self.references.clone(),
            deriver: self.deriver.clone(),
            sigs: self.sigs.clone(),
            ca: self.ca.clone(),
        }
    }
}

/// A `nix-path` object that is not what it claims: the bundle fails verification.
pub(super) fn bad(msg: String) -> anyhow::Error {
    BundleFailure(msg).into()
}

/// Reads every `nix-path` object (its name, meta and NAR blob were checked when the
/// manifest was parsed); [`check_signatures`] checks what vouches for them.
pub(super) fn nix_objects(head: &Head) -> Result<Vec<NixObject>> {
    let mut out = Vec::new();
    let blobs: std::collections::HashMap<&Digest, &crate::bundle::manifest::BlobEntry> =
        head.manifest.blobs.iter().map(|b| (&b.digest, b)).collect();
    for (o, meta) in head.manifest.nix_paths() {
        let what = format!("nix-path `{}`", crate::text::escaped(&o.name));
        let path = StorePath::parse(&o.name).map_err(|e| bad(format!("{what}: {e}")))?;
        let blob = blobs
            .get(&o.digest)
            .copied()
            .ok_or_else(|| bad(format!("{what}: its blob {} is not listed", o.digest)))?;
        let obj = NixObject {
            path,
            entry: blob.clone(),
            nar_hash: meta.nar_hash,
            nar_size: meta.nar_size,
            references: meta.references.clone(),
            deriver: meta.deriver.clone(),
            ca: meta.ca.clone(),
            sigs: meta.sigs.clone(),
            gc_roots: meta.gc_roots().to_vec(),
        };
        out.push(obj);
    }
    Ok(out)
}

/// When keys are trusted (the bundle's signature was checked), that one of them
/// signed each path over Nix's fingerprint.
pub(super) fn check_signatures(objects: &[NixObject], trusted: &[PublicKey]) -> Result<()> {
    if trusted.is_empty() || verify_in_batches(objects, trusted, crate::pool::cores()) {
        return Ok(());
    }
    // One failed (or a path has no signature named after a trusted key): each path
    // on its own, on every core, to name the first failing one in the manifest's
    // order, whatever the scheduling.
    crate::pool::map(
        crate::pool::cores(),
        objects,
        || Ok(()),
        |_, obj: &NixObject| {
            let fp = fingerprint(&obj.path, &obj.nar_hash, obj.nar_size, &obj.references);
            if trusted.iter().any(|k| verify_path(k, &fp, &obj.sigs)) {
                return Ok(());
            }
            Err(bad(format!(
                "nix-path `{}` carries no valid path signature by a trusted key over `{fp}`: its metadata was altered after signing",
                crate::text::escaped(obj.path.as_str())
            )))
        },
    )?;
    Ok(())
}

/// Whether every path's first signature named after a trusted key verifies, one
/// batch per job (`jobs` threads; the plan checks on one core while Nix answers on
/// the other: `NixTarget::held_for_plan`). An ed25519 check is most of what a small
/// path costs an import (2,000 paths in a NixOS closure), and a batch takes a third
/// of the CPU of checking them one by one. A batch can pass a signature its signer
/// crafted that the one-by-one check refuses (`keys::verify_batch`); these
/// signatures are in a manifest that signer signed, so the check is against a
/// writer's mistake, not against the key's holder.
pub(super) fn verify_in_batches(objects: &[NixObject], trusted: &[PublicKey], jobs: usize) -> bool {
    let jobs = jobs.max(1);
    let per_job = objects.len().div_ceil(jobs).max(1);
    let batches: Vec<&[NixObject]> = objects.chunks(per_job).collect();
    crate::pool::map(
        jobs,
        &batches,
        || Ok(()),
        |_, batch: &&[NixObject]| {
            let mut fingerprints = Vec::with_capacity(batch.len());
            let mut signed = Vec::with_capacity(batch.len());
            for obj in batch.iter() {
                let first = obj.sigs.iter().find_map(|s| {
                    let sig = Signature::parse(s).ok()?;
                    let key = trusted.iter().find(|k| k.name() == sig.key_name())?;
                    Some((key, sig))
                });
                signed.push(first.ok_or(())?);
                fingerprints.push(fingerprint(
                    &obj.path,
                    &obj.nar_hash,
                    obj.nar_size,
                    &obj.references,
                ));
            }
            let items: Vec<(&PublicKey, &[u8], &Signature)> = signed
                .iter()
                .zip(&fingerprints)
                .map(|((k, s), fp)| (*k, fp.as_bytes(), s))
                .collect();
            verify_batch(&items).then_some(()).ok_or(())
        },
    )
    .is_ok()
}
