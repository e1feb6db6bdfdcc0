//! The lock's `nix` section (format.md 14.6): what each `nix:` entry resolved to,
//! and the `--locked` rules over it.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::bundle::Digest;
use crate::error::InputFailure;
use crate::progress::Progress;
use crate::resolve::LockCtx;

/// What the lock records for one `nix:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockedNix {
    /// The store paths the entry resolved to.
    pub paths: Vec<String>,
    /// sha256 of the flake.lock the installable was built with, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flake_lock: Option<Digest>,
    /// Sources of the flake and its inputs (with `includeFlakeInputs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flake_inputs: Vec<String>,
}

/// With `--locked`, a nix entry the lock has but the spec no longer has is a change.
pub(super) fn check_stale(lock: &LockCtx<'_>) -> Result<()> {
    if !lock.locked {
        return Ok(());
    }
    let stale: Vec<&String> = lock
        .old
        .nix
        .keys()
        .filter(|k| !lock.new.nix.contains_key(*k))
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    Err(InputFailure(format!(
        "--locked: the lock file has nix entries the spec no longer has ({}); run create without --locked to update it",
        stale.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
    ))
    .into())
}

/// Compares an entry's resolution with the lock: with `--locked` a new or changed
/// entry is an error, otherwise a change is reported.
pub(super) fn check_lock(
    lock: &LockCtx<'_>,
    key: &str,
    locked: &LockedNix,
    progress: &Progress,
) -> Result<()> {
    let old: Option<LockedNix> = lock
        .old
        .nix
        .get(key)
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    match old {
        None if lock.locked => Err(InputFailure(format!(
            "--locked: nix entry `{}` is not in the lock file; run create without --locked to add it",
            key
        ))
        .into()),
        Some(old) if old != *locked => {
            let diff = lock_diff(&old, locked);
            if lock.locked {
                return Err(InputFailure(format!(
                    "--locked: nix entry `{}` resolves differently from the lock file ({diff}); run create without --locked to update the lock",
                    key
                ))
                .into());
            }
            progress.message(format!("{}: changed ({diff})", key));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// What changed between two lock entries, for messages.
fn lock_diff(old: &LockedNix, new: &LockedNix) -> String {
    let mut parts = Vec::new();
    if old.paths != new.paths {
        parts.push(format!(
            "store paths {} -> {}",
            old.paths.join(" "),
            new.paths.join(" ")
        ));
    }
    if old.flake_lock != new.flake_lock {
        let show = |d: &Option<Digest>| d.map_or("none".to_string(), |d| d.to_string());
        parts.push(format!(
            "flake.lock {} -> {}",
            show(&old.flake_lock),
            show(&new.flake_lock)
        ));
    }
    if old.flake_inputs != new.flake_inputs {
        parts.push(format!(
            "flake sources {} -> {}",
            old.flake_inputs.join(" "),
            new.flake_inputs.join(" ")
        ));
    }
    parts.join("; ")
}
