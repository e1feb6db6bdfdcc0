//! Helm charts, Kustomize overlays and plain manifests, rendered with the real tools.
//!
//! Not implemented yet (issue: Kubernetes). `render` refuses spec entries it cannot
//! handle instead of silently leaving them out.

use super::{Contribution, LockCtx};
use crate::commands::InputFailure;
use crate::io::cas::Cas;
use crate::progress::Progress;
use crate::spec::LoadedSpec;

/// Renders the spec's charts, overlays and manifests into blobs and objects.
pub fn render(
    spec: &LoadedSpec,
    _cas: &Cas,
    _lock: &mut LockCtx<'_>,
    _progress: &Progress,
) -> anyhow::Result<Contribution> {
    let s = &spec.spec;
    for (field, n) in [
        ("charts", s.charts.len()),
        ("kustomize", s.kustomize.len()),
        ("manifests", s.manifests.len()),
    ] {
        if n > 0 {
            return Err(InputFailure(format!(
                "`{field}:` entries are not supported by this version of gapbundle yet; remove them or upgrade"
            ))
            .into());
        }
    }
    Ok(Contribution::default())
}
