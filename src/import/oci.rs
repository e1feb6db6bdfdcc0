//! Images and manifests into K3s (containerd, its folders) or a fleet registry.
//! Not implemented yet (issue: Kubernetes).

use super::Target;
use crate::bundle::manifest::Kind;
use crate::bundle::reader::Head;
use crate::cli::ImportArgs;
use crate::commands::InputFailure;

/// The image and manifest targets for this bundle under the given flags.
pub fn targets(args: &ImportArgs, head: &Head) -> anyhow::Result<Vec<Box<dyn Target>>> {
    let has = |k: Kind| head.manifest.objects.iter().any(|o| o.kind == k);
    if has(Kind::Image) && !args.skip_images {
        return Err(InputFailure(
            "this bundle carries images, which this version cannot import yet; pass --skip-images to import the rest"
                .into(),
        )
        .into());
    }
    if has(Kind::K8sManifest) && !args.skip_manifests {
        return Err(InputFailure(
            "this bundle carries Kubernetes manifests, which this version cannot import yet; pass --skip-manifests".into(),
        )
        .into());
    }
    Ok(Vec::new())
}
