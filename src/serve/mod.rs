//! Verified bundles as one site: an OCI registry under `/v2/` and a Nix binary cache
//! at the root, both answered from the bundle files in place.
//!
//! Until a site has a registry and a binary cache of its own, the bundle on the
//! operator's disk can be both: no unpacking, no second copy, nothing to install
//! first. `gapbundle serve` checks each bundle's signature and every blob once, then
//! builds a [`View`] of them, and [`crate::io::serve`] answers requests from it,
//! hashing every byte again as it goes out. The view is built once, at start, from
//! the verified heads and the manifests they store; after that it never changes and
//! a request costs a map lookup.
//!
//! - **Registry** (`registry`): an image object named
//!   `registry.example:5000/team/app:1` is repository `team/app`, tag `1`; the host
//!   is what a K3s `registries.yaml` mirror (or a containerd `hosts.toml`) maps
//!   away, so nodes pull the image under its own name. `docker.io/library/redis` is
//!   `library/redis`. A repository holds the manifests its images reach that the
//!   bundles store (a sparse index's platforms that were not kept are unknown, as a
//!   registry that never had them would say), and the configs and layers those
//!   manifests name. Two images that would give one repository and tag different
//!   digests (from two bundles, or two hosts with the same path) are an error at
//!   start naming both: a node would get one or the other depending on nothing it
//!   can see.
//! - **Binary cache** (`cache`): `nix-cache-info`, `<hash>.narinfo` and
//!   `nar/<nix32>.nar.zst`, exactly the documents the `file://` cache writer and the
//!   Nix import's in-place server give ([`crate::import::nix::cached_paths`]). One
//!   store path that two bundles give different NAR hashes is an error at start.
//!
//! Several bundles are one view: a blob is served from whichever bundle stores it,
//! so a delta bundle is served with the bundle(s) it was made against, and a blob a
//! delta leaves out that no bundle given stores is an error at start (exit code 6).

mod cache;
mod registry;

use std::collections::{BTreeMap, BTreeSet};

use crate::bundle::keys::PublicKey;
use crate::bundle::reader::Head;
use crate::bundle::Digest;
use crate::io::serve::{Blob, Reply, Request, Served, Site};
use crate::oci::distribution;

/// One verified bundle to serve.
pub struct Bundle {
    /// Its head (trust checked, every blob verified).
    pub head: Head,
    /// Where its bytes are.
    pub source: Served,
    /// How messages name it (its path).
    pub label: String,
    /// The trusted keys that signed it (none with `--allow-unsigned`).
    pub signers: Vec<PublicKey>,
}

/// Why the bundles cannot be served as one view.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// Two images give one repository and tag different digests.
    #[error("{first} and {second} would both be served as {repository}:{tag}, with different digests; a node would get either: serve them from two servers, or retag one")]
    TagConflict {
        /// The repository path.
        repository: String,
        /// The tag.
        tag: String,
        /// The first image (name, digest, bundle).
        first: String,
        /// The other.
        second: String,
    },
    /// Two bundles give one store path different NAR hashes.
    #[error("{path} is in {first} and in {second} with different NAR hashes; serve one of them")]
    PathConflict {
        /// The store path.
        path: String,
        /// The first bundle and NAR hash.
        first: String,
        /// The other.
        second: String,
    },
    /// A blob a delta bundle leaves out is stored by no bundle given.
    #[error("{what} needs {digest}, which {bundle} leaves out (a delta bundle) and no bundle given stores: serve it together with the bundle(s) it was made against, or rebuild the full bundle with `gapbundle patch`")]
    Missing {
        /// The blob.
        digest: Digest,
        /// What needs it.
        what: String,
        /// The delta bundle.
        bundle: String,
    },
    /// A stored manifest cannot be read.
    #[error("{what}: its manifest {digest} in {bundle} {why}")]
    Manifest {
        /// The image.
        what: String,
        /// The manifest.
        digest: Digest,
        /// The bundle.
        bundle: String,
        /// What is wrong.
        why: String,
    },
}

impl crate::error::Classify for ViewError {
    /// Conflicts are bad input (exit code 4), a delta without its base does not fit
    /// (6), an unreadable stored manifest is a bundle that fails verification (3).
    fn class(&self) -> Option<crate::error::ErrorClass> {
        use crate::error::ErrorClass;
        Some(match self {
            ViewError::TagConflict { .. } | ViewError::PathConflict { .. } => ErrorClass::Input,
            ViewError::Missing { .. } => ErrorClass::Delta,
            ViewError::Manifest { .. } => ErrorClass::Verify,
        })
    }
}

/// A stored blob and what the bundle says it is.
#[derive(Clone)]
struct Stored {
    blob: Blob,
    media_type: String,
}

/// Every blob the bundles store, by digest (the first bundle that stores one wins:
/// the bytes are the same).
struct Blobs(BTreeMap<Digest, Stored>);

impl Blobs {
    fn of(bundles: &[Bundle]) -> Blobs {
        let mut all = BTreeMap::new();
        for b in bundles {
            for e in &b.head.manifest.blobs {
                let Some(offset) = b.head.blob_position(e) else {
                    continue;
                };
                all.entry(e.digest).or_insert_with(|| Stored {
                    blob: Blob {
                        source: b.source.clone(),
                        offset,
                        size: e.size,
                        digest: e.digest,
                        nar: None,
                    },
                    media_type: e.media_type.clone(),
                });
            }
        }
        Blobs(all)
    }

    fn get(&self, d: &Digest) -> Option<&Stored> {
        self.0.get(d)
    }
}

/// The bundles as one registry and binary cache.
pub struct View {
    registry: registry::Registry,
    cache: cache::Cache,
}

impl View {
    /// The view of `bundles` (see the module documentation for what is refused).
    pub fn build(bundles: &[Bundle]) -> anyhow::Result<View> {
        let blobs = Blobs::of(bundles);
        Ok(View {
            registry: registry::Registry::build(bundles, &blobs)?,
            cache: cache::Cache::build(bundles, &blobs)?,
        })
    }

    /// The registry hosts the images name (`docker.io`, `registry.example:5000`):
    /// those a node's `registries.yaml` mirrors to this server.
    pub fn hosts(&self) -> &BTreeSet<String> {
        &self.registry.hosts
    }

    /// How many repositories, tags and Nix paths are served.
    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.registry.repos.len(),
            self.registry.repos.values().map(|r| r.tags.len()).sum(),
            self.cache.paths,
        )
    }
}

impl Site for View {
    fn reply(&self, req: &Request<'_>) -> Reply {
        match distribution::route(req.path) {
            Some(route) => self.registry.reply(req, route),
            None => self.cache.reply(req),
        }
    }

    fn gone(&self, req: &Request<'_>, blob: &Blob) -> Reply {
        match distribution::route(req.path) {
            Some(route) => registry::gone(route, blob),
            None => cache::gone(),
        }
    }
}
