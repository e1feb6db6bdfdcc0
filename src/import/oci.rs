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
//! `--skip-images` and `--skip-manifests` drop either part. A bundle without
//! manifests still gets the manifests target when its folder exists, so that the
//! files an earlier version left there are removed.
//!
//! [`containerd`]: super::containerd
//! [`k3s`]: super::k3s
//! [`push`]: super::push

use super::containerd::Containerd;
use super::k3s::{ManifestMode, Manifests, StagedImages};
use super::Target;
use crate::bundle::manifest::Kind;
use crate::bundle::reader::Head;
use crate::cli::ImportArgs;
use crate::error::InputFailure;
use crate::io::source::BundleSource;

/// The image and manifest targets for this bundle under the given flags; `source`
/// is where the bundle is read from (a fleet push reads a blob again from it).
pub fn targets(
    args: &ImportArgs,
    head: &Head,
    source: &BundleSource,
) -> anyhow::Result<Vec<Box<dyn Target>>> {
    let has = |k: Kind| head.manifest.objects.iter().any(|o| o.kind == k);
    let mut v: Vec<Box<dyn Target>> = Vec::new();
    if args.staged && args.registry.is_some() {
        return Err(InputFailure(
            "--staged and --registry exclude each other: stage an archive for one node, or push to a registry for the fleet".into(),
        )
        .into());
    }
    if has(Kind::Image) && !args.skip_images {
        // Every target below takes image names from the bundle: none is built
        // unless all of them can be used.
        super::images::checked(head)?;
        if let Some(reg) = &args.registry {
            v.push(Box::new(super::push::Push::new(args, reg, head, source)?));
        } else if args.staged {
            v.push(Box::new(StagedImages::new(&args.k3s_root, head)?));
        } else {
            v.push(Box::new(Containerd::new(
                &args.containerd,
                &args.namespace,
                &args.snapshotter,
                head,
            )?));
        }
    }
    if !args.skip_manifests {
        if args.apply {
            if has(Kind::K8sManifest) {
                let mode = ManifestMode::Apply(args.kubeconfig.clone());
                v.push(Box::new(Manifests::new(mode, head)?));
            }
        } else if has(Kind::K8sManifest) {
            let folder = Manifests::folder(&args.k3s_root, head)?;
            v.push(Box::new(Manifests::new(
                ManifestMode::Folder(folder),
                head,
            )?));
        } else if let Ok(folder) = Manifests::folder(&args.k3s_root, head) {
            // A version without manifests: the files an earlier one left go. (A
            // bundle whose name names no folder cannot have left any.)
            if folder.is_dir() {
                v.push(Box::new(Manifests::new(
                    ManifestMode::Folder(folder),
                    head,
                )?));
            }
        }
    }
    Ok(v)
}
