//! Images and manifests into K3s (containerd, its folders) or a fleet registry:
//! which targets the import flags select.
//!
//! | flags | images go to | manifests go to |
//! |---|---|---|
//! | (none) | containerd at `--containerd`, unpacked ([`containerd`]) | `<k3s-root>/server/manifests/<bundle>/` |
//! | `--staged` | `<k3s-root>/agent/images/<bundle>.tar` ([`k3s`]) | same folder |
//! | `--registry HOST` | pushed to the registry ([`push`]), plus a `registries.yaml` mirror | same folder |
//! | `--apply` | as above | `kubectl apply -f` |
//!
//! `--skip-images` and `--skip-manifests` drop either part. The command layer
//! resolves the flags into [`OciOptions`] (and refuses `--staged` with
//! `--registry`). A bundle without
//! manifests still gets the manifests target when its folder exists, so that the
//! files an earlier version left there are removed.
//!
//! [`containerd`]: super::containerd
//! [`k3s`]: super::k3s
//! [`push`]: super::push

use std::path::PathBuf;

use super::containerd::Containerd;
use super::k3s::{ManifestMode, Manifests, StagedImages};
use super::push::PushOptions;
use super::Target;
use crate::bundle::manifest::Kind;
use crate::bundle::reader::Head;
use crate::io::source::BundleSource;

/// Where the import puts images and manifests: the import flags, resolved by the
/// command layer.
#[derive(Debug, Clone)]
pub struct OciOptions {
    /// Where images go; `None` with `--skip-images`.
    pub images: Option<ImageDest>,
    /// Where manifests go; `None` with `--skip-manifests`.
    pub manifests: Option<ManifestDest>,
    /// K3s's data folder (`agent/images`, `server/manifests`).
    pub k3s_root: PathBuf,
}

/// Where images go.
#[derive(Debug, Clone)]
pub enum ImageDest {
    /// Into containerd, unpacked.
    Containerd {
        /// Its socket.
        socket: PathBuf,
        /// The namespace (K3s's is `k8s.io`).
        namespace: String,
        /// The snapshotter to unpack into.
        snapshotter: String,
    },
    /// An image archive in `<k3s-root>/agent/images` (`--staged`).
    Staged,
    /// Pushed to a fleet registry (`--registry`).
    Registry(PushOptions),
}

/// Where manifests go.
#[derive(Debug, Clone)]
pub enum ManifestDest {
    /// The bundle's folder in `<k3s-root>/server/manifests`.
    Folder,
    /// `kubectl apply -f`, with this kubeconfig if given.
    Apply(Option<PathBuf>),
}

/// The image and manifest targets for this bundle under the given options; `source`
/// is where the bundle is read from (a fleet push reads a blob again from it).
pub fn targets(
    opts: &OciOptions,
    head: &Head,
    source: &BundleSource,
) -> anyhow::Result<Vec<Box<dyn Target>>> {
    let has = |k: Kind| head.manifest.objects.iter().any(|o| o.kind == k);
    let mut v: Vec<Box<dyn Target>> = Vec::new();
    if let Some(dest) = opts.images.as_ref().filter(|_| has(Kind::Image)) {
        // Every target below takes image names from the bundle: none is built
        // unless all of them can be used.
        super::images::checked(head)?;
        match dest {
            ImageDest::Registry(push) => {
                v.push(Box::new(super::push::Push::new(push, head, source)?));
            }
            ImageDest::Staged => v.push(Box::new(StagedImages::new(&opts.k3s_root, head)?)),
            ImageDest::Containerd {
                socket,
                namespace,
                snapshotter,
            } => v.push(Box::new(Containerd::new(
                socket,
                namespace,
                snapshotter,
                head,
            )?)),
        }
    }
    if let Some(dest) = &opts.manifests {
        match dest {
            ManifestDest::Apply(kubeconfig) => {
                if has(Kind::K8sManifest) {
                    let mode = ManifestMode::Apply(kubeconfig.clone());
                    v.push(Box::new(Manifests::new(mode, head)?));
                }
            }
            ManifestDest::Folder if has(Kind::K8sManifest) => {
                let folder = Manifests::folder(&opts.k3s_root, head)?;
                v.push(Box::new(Manifests::new(
                    ManifestMode::Folder(folder),
                    head,
                )?));
            }
            ManifestDest::Folder => {
                // A version without manifests: the files an earlier one left go. (A
                // bundle whose name names no folder cannot have left any.)
                if let Ok(folder) = Manifests::folder(&opts.k3s_root, head) {
                    if folder.is_dir() {
                        v.push(Box::new(Manifests::new(
                            ManifestMode::Folder(folder),
                            head,
                        )?));
                    }
                }
            }
        }
    }
    Ok(v)
}
