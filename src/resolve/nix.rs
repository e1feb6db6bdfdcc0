//! Nix installables to store paths and NARs.
//!
//! Not implemented yet (issue: Nix closures). The functions exist so that the spec,
//! the lock and `create` already have their places; each refuses clearly instead of
//! pretending.

use std::path::PathBuf;

use crate::commands::InputFailure;
use crate::spec::LoadedSpec;

/// Builds a flake installable that produces an OCI or docker archive and returns the
/// archive's path.
pub fn build_archive(_spec: &LoadedSpec, installable: &str) -> anyhow::Result<PathBuf> {
    Err(InputFailure(format!(
        "images entry `installable: {installable}` needs Nix support, which this version of gapbundle does not have yet"
    ))
    .into())
}

/// Resolves the spec's `nix:` entries to NAR blobs and store-path objects.
pub fn resolve(
    spec: &LoadedSpec,
    _cas: &crate::io::cas::Cas,
    _lock: &mut super::LockCtx<'_>,
    _progress: &crate::progress::Progress,
) -> anyhow::Result<super::Contribution> {
    if !spec.spec.nix.is_empty() {
        return Err(InputFailure(
            "`nix:` entries are not supported by this version of gapbundle yet; remove them or upgrade".into(),
        )
        .into());
    }
    Ok(super::Contribution::default())
}
