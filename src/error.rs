//! Error markers that tell the command line which exit code applies.
//!
//! Resolvers and importers know whether a failure is the user's input (exit 4) or a
//! registry's or containerd's answer (exit 5); the command layer only maps. Keeping
//! the markers here, below everything, means no lower layer has to reach up into
//! `commands` for them.

/// A bundle whose signature and digests check out but whose content breaks the
/// format, found before a target is touched (an image name that is not a reference,
/// or pins another image's digest): exit code 3, as for any bundle that fails
/// verification.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BundleFailure(pub String);

/// Bad input: a spec, lock or key file, a flag combination, `--locked` (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputFailure(pub String);

/// A registry could not be reached, refused access or lacks the reference (exit code 5).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RegistryFailure(pub String);

/// containerd could not be reached or refused access (exit code 5, as for a
/// registry: the service an import writes to is not there for it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ContainerdFailure(pub String);

/// A Nix store (a daemon's, for a user it does not trust) refused paths whose
/// signatures we checked, because it does not trust the key (exit code 5, as for a
/// registry or containerd that refuses access).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NixStoreFailure(pub String);

/// A delta bundle that does not fit where it goes: the target lacks blobs the delta
/// leaves out, or must hold every blob itself (a staged archive), or `patch` was
/// given bases that lack them (exit code 6). Nothing was written; what helps is
/// importing the base first, or `gapbundle patch` into the full bundle, never a
/// retry, which is why it is not a target that refused (exit code 5).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeltaFailure(pub String);
