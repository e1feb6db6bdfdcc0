//! Delta bundles (format.md section 10), pure: which blobs a delta leaves out, the
//! delta's manifest derived from the full bundle's, and the check that the full
//! manifest a delta carries is the one its own manifest describes.
//!
//! A delta must let `patch` rebuild, without any key, the very bytes a full create
//! writes, with the release signatures valid on them. A signature covers a manifest
//! digest, and the full manifest (every blob with an offset) is not the delta's, so
//! the delta carries what only the signer can make: the full bundle's manifest bytes
//! and its signature envelope, as its first two blobs, named in its own signed
//! manifest. Everything else about the delta's manifest follows from the full one
//! ([`delta_manifest`]), and a reader that uses the full manifest checks that it
//! does ([`check_full`]), so the two can never describe different bundles.
//!
//! Which blobs may be left out is the writer's choice; this one leaves out only the
//! blobs of images and the NARs of Nix paths (the bulk of any bundle), and only when
//! a base holds them (`Base::holds`). Documents, charts, the spec and the lock are
//! small and always stored, so a target never has to rebuild a manifest file from
//! what an earlier import left.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::digest::Digest;
use super::inventory::Inventory;
use super::layout::{entry_len, HEADER_LEN};
use super::manifest::{
    BaseKind, BlobEntry, Delta, DeltaBase, FullBundle, Kind, Manifest, ManifestError,
    FULL_MANIFEST_MEDIA_TYPE, FULL_SIGNATURES_MEDIA_TYPE,
};
use super::reader::Head;
use super::signature::Envelope;
use crate::nixfmt::NarHash;

/// What one base holds, as `create --against` reads it.
#[derive(Debug, Clone)]
pub struct Base {
    /// How the delta names it (counts still zero).
    pub describe: DeltaBase,
    /// Blobs it holds by digest: the blobs a bundle stores; the content of a
    /// containerd and the blobs of a fleet registry's repositories for an inventory.
    pub blobs: HashSet<Digest>,
    /// Valid Nix paths with their NAR hashes (inventories).
    pub nix: HashMap<String, NarHash>,
}

impl Base {
    /// A bundle already shipped: it holds the blobs it stores (read from its head).
    pub fn from_head(head: &Head) -> Base {
        let m = &head.manifest;
        Base {
            describe: DeltaBase {
                kind: BaseKind::Bundle,
                digest: head.digest,
                name: m.name.clone(),
                version: Some(m.version.clone()),
                created: None,
                blobs: 0,
                bytes: 0,
                extra: Default::default(),
            },
            blobs: m
                .blobs
                .iter()
                .filter(|b| b.offset.is_some())
                .map(|b| b.digest)
                .collect(),
            nix: HashMap::new(),
        }
    }

    /// An inventory of a target, whose digest is `digest`.
    pub fn from_inventory(inv: &Inventory, digest: Digest) -> Base {
        let mut blobs: HashSet<Digest> = HashSet::new();
        if let Some(c) = &inv.containerd {
            blobs.extend(c.blobs.iter().copied());
        }
        if let Some(r) = &inv.registry {
            blobs.extend(r.repositories.values().flatten().copied());
        }
        let nix = inv
            .nix
            .iter()
            .flat_map(|n| n.paths.iter().map(|(p, h)| (p.to_string(), *h)))
            .collect();
        Base {
            describe: DeltaBase {
                kind: BaseKind::Inventory,
                digest,
                name: inv.site.clone(),
                version: None,
                created: Some(inv.created),
                blobs: 0,
                bytes: 0,
                extra: Default::default(),
            },
            blobs,
            nix,
        }
    }

    /// Whether this base holds `blob`, which `users` (every object that names it)
    /// need: by digest, or, for a NAR, because every path whose NAR it is is valid
    /// there with that NAR hash.
    fn holds(&self, blob: &BlobEntry, users: &[&super::Object]) -> bool {
        if self.blobs.contains(&blob.digest) {
            return true;
        }
        !users.is_empty()
            && users.iter().all(|o| match o.meta.nix_path() {
                Some(n) => o.digest == blob.digest && self.nix.get(&o.name) == Some(&n.nar_hash),
                None => false,
            })
    }
}

/// The blobs of `full` that a delta against `bases` leaves out, each with the index
/// of the first base that holds it. Only blobs whose every user is an `image` or a
/// `nix-path` object are left out (see the module documentation).
pub fn leave_out(full: &Manifest, bases: &[Base]) -> BTreeMap<Digest, u32> {
    let mut users: HashMap<Digest, Vec<&super::Object>> = HashMap::new();
    for o in &full.objects {
        let mut named: Vec<Digest> = o.blobs.clone();
        named.push(o.digest);
        named.sort();
        named.dedup();
        for d in named {
            users.entry(d).or_default().push(o);
        }
    }
    let mut out = BTreeMap::new();
    for b in &full.blobs {
        let Some(u) = users.get(&b.digest) else {
            continue;
        };
        if !u
            .iter()
            .all(|o| matches!(o.kind, Kind::Image | Kind::NixPath))
        {
            continue;
        }
        if let Some(i) = bases.iter().position(|base| base.holds(b, u)) {
            out.insert(b.digest, i as u32);
        }
    }
    out
}

/// The delta's manifest for the full manifest `full` (whose canonical bytes are
/// `full_bytes`, signed in `full_envelope`), leaving out `left_out` (blob -> base
/// index into `bases`): section 10.2. Offsets are laid out as section 5 rule 6 says.
pub fn delta_manifest(
    full: &Manifest,
    full_bytes: &[u8],
    full_envelope: &[u8],
    bases: &[DeltaBase],
    left_out: &BTreeMap<Digest, u32>,
) -> Result<Manifest, ManifestError> {
    if full.delta.is_some() {
        return Err(ManifestError::Inconsistent(
            "a delta is made from a full manifest, not from another delta".into(),
        ));
    }
    let mut against: Vec<DeltaBase> = bases.to_vec();
    for a in against.iter_mut() {
        a.blobs = 0;
        a.bytes = 0;
    }
    let mut blobs = vec![
        BlobEntry::of(full_bytes, FULL_MANIFEST_MEDIA_TYPE),
        BlobEntry::of(full_envelope, FULL_SIGNATURES_MEDIA_TYPE),
    ];
    let mut expected = Vec::new();
    for b in &full.blobs {
        let mut b = b.clone();
        b.offset = None;
        if let Some(&i) = left_out.get(&b.digest) {
            let base = against.get_mut(i as usize).ok_or_else(|| {
                ManifestError::Inconsistent(format!(
                    "blob {} is left out for base {i}, which does not exist",
                    b.digest
                ))
            })?;
            base.blobs += 1;
            base.bytes += b.size;
            expected.push(i);
        }
        blobs.push(b);
    }
    let mut files = full.files.clone();
    let mut pos = 0u64;
    let mut place = |size: u64| {
        let offset = pos + HEADER_LEN;
        pos += entry_len(size);
        offset
    };
    for f in files.iter_mut() {
        f.offset = place(f.size);
    }
    for b in blobs.iter_mut() {
        if !left_out.contains_key(&b.digest) {
            b.offset = Some(place(b.size));
        }
    }
    let m = Manifest {
        format_version: full.format_version.clone(),
        name: full.name.clone(),
        version: full.version.clone(),
        created: full.created,
        generator: full.generator.clone(),
        platforms: full.platforms.clone(),
        files,
        blobs,
        objects: full.objects.clone(),
        delta: Some(Delta {
            against,
            expected,
            full: FullBundle {
                manifest: Digest::of(full_bytes),
                signatures: Digest::of(full_envelope),
            },
            extra: Default::default(),
        }),
    };
    m.validate()?;
    Ok(m)
}

/// Why the full bundle a delta carries cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    /// The bundle is not a delta.
    #[error("{0} is not a delta bundle (its manifest has no `delta`)")]
    NotADelta(String),
    /// The full manifest does not parse or validate, or is itself a delta.
    #[error("the full manifest this delta carries ({digest}) is not a full bundle's manifest: {problem}")]
    FullManifest {
        /// Its digest.
        digest: Digest,
        /// What is wrong.
        problem: String,
    },
    /// The full envelope does not parse or signs another manifest.
    #[error("the full bundle's signatures this delta carries ({digest}) are unusable: {problem}")]
    FullSignatures {
        /// Its digest.
        digest: Digest,
        /// What is wrong.
        problem: String,
    },
    /// The two manifests describe different bundles.
    #[error("the delta's manifest and the full manifest it carries describe different bundles ({0}): the delta was made wrong, ask its maker for a new one")]
    Disagree(String),
}

impl crate::error::Classify for DeltaError {
    /// A delta whose carried head does not match it failed verification.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        Some(crate::error::ErrorClass::Verify)
    }
}

/// Checks the full bundle's head that a delta carries against the delta's own
/// manifest (section 10.3): the full manifest parses and validates as a manifest
/// without `delta`; the envelope signs exactly it; and the delta's manifest, without
/// `delta`, its first two blobs and every blob's `offset`, is the full manifest
/// without every blob's `offset`, field for field (fields a reader does not know
/// included). Returns the full manifest and envelope.
pub fn check_full(
    delta_bytes: &[u8],
    full_bytes: &[u8],
    full_envelope: &[u8],
) -> Result<(Manifest, Envelope), DeltaError> {
    let digest = Digest::of(full_bytes);
    let full_err = |problem: String| DeltaError::FullManifest { digest, problem };
    let full = Manifest::parse(full_bytes).map_err(|e| full_err(e.to_string()))?;
    if full.delta.is_some() {
        return Err(full_err("it is itself a delta".into()));
    }
    let env_digest = Digest::of(full_envelope);
    let env = Envelope::parse(full_envelope).map_err(|e| DeltaError::FullSignatures {
        digest: env_digest,
        problem: e.to_string(),
    })?;
    if env.manifest_digest != digest {
        return Err(DeltaError::FullSignatures {
            digest: env_digest,
            problem: format!(
                "they sign manifest {}, the full manifest is {digest}",
                env.manifest_digest
            ),
        });
    }
    let parse = |b: &[u8]| {
        serde_json::from_slice::<Value>(b).map_err(|e| DeltaError::Disagree(e.to_string()))
    };
    let mut d = parse(delta_bytes)?;
    let mut f = parse(full_bytes)?;
    let strip_offsets = |v: &mut Value| {
        if let Some(blobs) = v.get_mut("blobs").and_then(Value::as_array_mut) {
            for b in blobs {
                if let Some(o) = b.as_object_mut() {
                    o.remove("offset");
                }
            }
        }
    };
    if let Some(o) = d.as_object_mut() {
        if o.remove("delta").is_none() {
            return Err(DeltaError::NotADelta("the bundle".into()));
        }
        if let Some(blobs) = o.get_mut("blobs").and_then(Value::as_array_mut) {
            if blobs.len() < 2 {
                return Err(DeltaError::Disagree(
                    "the delta has fewer than two blobs".into(),
                ));
            }
            blobs.drain(..2);
        }
    }
    strip_offsets(&mut d);
    strip_offsets(&mut f);
    // Files are laid out the same in both (they come first), so they compare as
    // they are.
    if d != f {
        let field = [
            "formatVersion",
            "name",
            "version",
            "created",
            "generator",
            "platforms",
            "files",
            "blobs",
            "objects",
        ]
        .into_iter()
        .find(|k| d.get(k) != f.get(k))
        .map(|k| format!("`{k}` differs"))
        .unwrap_or_else(|| "a field only one of them has".into());
        return Err(DeltaError::Disagree(field));
    }
    Ok((full, env))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::meta::{ImageMeta, Meta};
    use crate::bundle::writer::BundleBuilder;
    use crate::bundle::Object;

    fn blob(bytes: &[u8]) -> BlobEntry {
        BlobEntry::of(bytes, "application/vnd.oci.image.layer.v1.tar")
    }

    /// A full plan of two images sharing a layer, and a spec file.
    fn full() -> crate::bundle::writer::Plan {
        let mut b = BundleBuilder::new("site", "2", 7, vec!["all".into()]);
        let (base, a, c) = (
            blob(b"base layer"),
            blob(b"app layer"),
            blob(b"other layer"),
        );
        let spec = blob(b"name: site");
        for x in [&base, &a, &c, &spec] {
            b.add_blob(x.clone(), 0).unwrap();
        }
        for (name, layers) in [("r/app:2", [&base, &a]), ("r/other:1", [&base, &c])] {
            let mut digests: Vec<Digest> = layers.iter().map(|l| l.digest).collect();
            digests.sort();
            b.add_object(Object {
                kind: Kind::Image,
                name: name.into(),
                digest: layers[1].digest,
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 1,
                blobs: digests,
                meta: Meta::Image(ImageMeta {
                    platforms: vec![],
                    source: name.into(),
                    wanted_by: None,
                    extra: Default::default(),
                }),
            })
            .unwrap();
        }
        b.add_object(Object {
            kind: Kind::Spec,
            name: "bundle.yaml".into(),
            digest: spec.digest,
            media_type: "x".into(),
            size: spec.size,
            blobs: vec![spec.digest],
            meta: Meta::default(),
        })
        .unwrap();
        b.finish().unwrap()
    }

    fn base_with(blobs: &[&[u8]]) -> Base {
        Base {
            describe: DeltaBase {
                kind: BaseKind::Bundle,
                digest: Digest::of(b"v1"),
                name: "site".into(),
                version: Some("1".into()),
                created: None,
                blobs: 0,
                bytes: 0,
                extra: Default::default(),
            },
            blobs: blobs.iter().map(|b| Digest::of(b)).collect(),
            nix: HashMap::new(),
        }
    }

    #[test]
    fn only_image_and_nar_blobs_a_base_holds_are_left_out() {
        let plan = full();
        // The base holds the shared layer and the spec: only the layer goes.
        let bases = [base_with(&[b"base layer", b"name: site"])];
        let out = leave_out(&plan.manifest, &bases);
        assert_eq!(out.keys().collect::<Vec<_>>(), [&Digest::of(b"base layer")]);
    }

    #[test]
    fn the_delta_manifest_follows_from_the_full_one_and_is_checked_against_it() {
        let plan = full();
        let env = Envelope::sign(plan.digest, &[]).to_canonical();
        let bases = [base_with(&[b"base layer"])];
        let out = leave_out(&plan.manifest, &bases);
        let d = delta_manifest(
            &plan.manifest,
            &plan.manifest_bytes,
            &env,
            &[bases[0].describe.clone()],
            &out,
        )
        .unwrap();
        let delta = d.delta.as_ref().unwrap();
        assert_eq!(delta.expected, [0]);
        assert_eq!((delta.against[0].blobs, delta.against[0].bytes), (1, 10));
        assert_eq!(d.blobs.len(), plan.manifest.blobs.len() + 2);
        assert_eq!(d.blobs.iter().filter(|b| b.offset.is_none()).count(), 1);
        let bytes = d.to_canonical().unwrap();
        // It parses, and the full manifest it carries is the full one.
        let parsed = Manifest::parse(&bytes).unwrap();
        assert_eq!(parsed.expected().len(), 1);
        let (f, e) = check_full(&bytes, &plan.manifest_bytes, &env).unwrap();
        assert_eq!(f, plan.manifest);
        assert_eq!(e.manifest_digest, plan.digest);

        // A full manifest that says something else is refused, naming the field.
        let mut other = plan.manifest.clone();
        other.version = "3".into();
        let other_bytes = other.to_canonical().unwrap();
        let other_env = Envelope::sign(Digest::of(&other_bytes), &[]).to_canonical();
        let e = check_full(&bytes, &other_bytes, &other_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`version` differs"), "{e}");
        // Signatures of another manifest are refused.
        let e = check_full(&bytes, &plan.manifest_bytes, &other_env)
            .unwrap_err()
            .to_string();
        assert!(e.contains("they sign manifest"), "{e}");
    }

    #[test]
    fn a_delta_whose_counts_or_head_blobs_are_wrong_is_refused() {
        let plan = full();
        let env = Envelope::sign(plan.digest, &[]).to_canonical();
        let bases = [base_with(&[b"base layer"])];
        let out = leave_out(&plan.manifest, &bases);
        let d = delta_manifest(
            &plan.manifest,
            &plan.manifest_bytes,
            &env,
            &[bases[0].describe.clone()],
            &out,
        )
        .unwrap();
        let mut v: Value = serde_json::from_slice(&d.to_canonical().unwrap()).unwrap();
        v["delta"]["against"][0]["blobs"] = 2.into();
        let e = Manifest::parse(&crate::bundle::canonical::to_vec(&v).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("against[0] says it holds 2 blobs"), "{e}");
        let mut v: Value = serde_json::from_slice(&d.to_canonical().unwrap()).unwrap();
        v["delta"]["expected"] = serde_json::json!([5]);
        let e = Manifest::parse(&crate::bundle::canonical::to_vec(&v).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected from base 5"), "{e}");
        let mut v: Value = serde_json::from_slice(&d.to_canonical().unwrap()).unwrap();
        v["blobs"].as_array_mut().unwrap().swap(0, 1);
        let e = Manifest::parse(&crate::bundle::canonical::to_vec(&v).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("blobs[0] must be the full bundle's head blob"),
            "{e}"
        );
    }
}
