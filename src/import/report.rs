//! What each target says it did, for `import --json` (`targets[].result`).
//!
//! Scripts read these (the NixOS module's inbox keeps the whole report as the
//! receipt of an import), so each target's report is a type here, its field names
//! are the JSON ones, and `bundle-spec/schema/cli-import.schema.json` describes the
//! same shapes; the integration tests check real reports against it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

/// One target's report; serialised as the report itself (the target's
/// description beside it says which kind it is).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TargetReport {
    /// A Nix store or binary cache.
    Nix(NixReport),
    /// containerd.
    Containerd(ContainerdReport),
    /// An image archive in K3s's `agent/images`.
    Staged(StagedReport),
    /// K3s's auto-deploy folder, or `kubectl apply`.
    Manifests(ManifestsReport),
    /// A fleet registry.
    Registry(PushReport),
}

/// The Nix target's report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NixReport {
    /// Store paths added, references first.
    pub added: Vec<String>,
    /// How many of the bundle's paths were there already.
    pub present: usize,
    /// GC roots made (or found in place).
    pub gc_roots: Vec<String>,
}

/// The containerd target's report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerdReport {
    /// One entry per image.
    pub images: Vec<ContainerdImage>,
    /// Bytes written into containerd's content store.
    pub bytes_written: u64,
}

/// One image registered in containerd.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerdImage {
    /// The image's name in the bundle.
    pub name: String,
    /// Its root digest.
    pub digest: String,
    /// The image records that name it (the names CRI looks up).
    pub refs: Vec<String>,
    /// Those of `refs` that were created or changed.
    pub records_changed: Vec<String>,
    /// The platform unpacked (`linux/amd64`), or null when the image has none for
    /// this host.
    pub unpacked: Option<String>,
    /// Snapshots created while unpacking.
    pub snapshots_created: usize,
}

/// The staged archive's report.
#[derive(Debug, Clone, Serialize)]
pub struct StagedReport {
    /// The archive in `<k3s-root>/agent/images`.
    pub archive: PathBuf,
    /// Whether it was written (false: the same archive was there).
    pub written: bool,
    /// Its size, when written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// The manifests target's report.
#[derive(Debug, Clone, Serialize)]
pub struct ManifestsReport {
    /// Files written (or applied).
    pub written: Vec<String>,
    /// Files an earlier version left that were removed (the auto-deploy folder
    /// only; absent with `--apply`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<String>>,
}

/// The fleet push's report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushReport {
    /// One entry per image.
    pub images: Vec<PushedImage>,
    /// Bytes of blobs uploaded.
    pub bytes_pushed: u64,
    /// Blobs whose upload broke off and that were pushed again from the file.
    pub blobs_pushed_again: Vec<String>,
    /// The `registries.yaml` mirror snippet written.
    pub registries_yaml: PathBuf,
    /// The mirrors it sets up: each original registry and the endpoints that
    /// serve it.
    pub mirrors: BTreeMap<String, Vec<String>>,
}

/// One image of a fleet push.
#[derive(Debug, Clone, Serialize)]
pub struct PushedImage {
    /// Its name in the fleet registry.
    pub image: String,
    /// Its root digest, when it was pushed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// False when the registry had it already.
    pub pushed: bool,
}
