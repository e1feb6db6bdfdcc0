//! Nix paths into a Nix store or binary cache. Not implemented yet (issue: Nix).

use super::Target;
use crate::bundle::manifest::Kind;
use crate::bundle::reader::Head;
use crate::cli::ImportArgs;
use crate::commands::InputFailure;

/// The Nix target for this bundle, if it has Nix paths and `--skip-nix` was not given.
pub fn target(args: &ImportArgs, head: &Head) -> anyhow::Result<Option<Box<dyn Target>>> {
    let has = head
        .manifest
        .objects
        .iter()
        .any(|o| o.kind == Kind::NixPath);
    if !has || args.skip_nix {
        return Ok(None);
    }
    Err(InputFailure(
        "this bundle carries Nix paths, which this version cannot import yet; pass --skip-nix to import the rest".into(),
    )
    .into())
}
