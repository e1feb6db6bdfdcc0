//! Inputs to blobs: everything that finds, fetches and checks what a spec names,
//! and leaves it in the local cache for the writer.
//!
//! Image sources (registry, layout, archive) return an [`image::ImagePlan`]; the other
//! kinds of input (Nix closures, rendered Kubernetes manifests, files) return a
//! [`Contribution`]: blobs already in the cache, the objects made of them, and any
//! images they ask for, which `create` then resolves like the spec's own images.

pub mod archive;
pub mod files;
pub mod image;
pub mod k8s;
pub mod layout;
pub mod nix;
pub mod registry;

use crate::bundle::manifest::{BlobEntry, Object};
use crate::spec::Lock;

/// What a non-image resolver adds to a bundle.
#[derive(Debug, Default)]
pub struct Contribution {
    /// Blobs (already in the cache) with their rank in the file (lower first).
    pub blobs: Vec<(BlobEntry, u32)>,
    /// Objects made of those blobs.
    pub objects: Vec<Object>,
    /// Images the inputs refer to, to be bundled too.
    pub images: Vec<WantedImage>,
}

/// An image some rendered manifest refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedImage {
    /// The reference as written in the manifest.
    pub reference: String,
    /// Which manifests ask for it (`chart web: Deployment apps/web`).
    pub wanted_by: Vec<String>,
}

/// The lock as a resolver sees it.
pub struct LockCtx<'a> {
    /// The lock read from disk.
    pub old: &'a Lock,
    /// The lock being written.
    pub new: &'a mut Lock,
    /// `--locked`: any difference is an error.
    pub locked: bool,
    /// `--update`: ignore pins.
    pub update: bool,
}
