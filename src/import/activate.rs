//! Activating a NixOS system a bundle carries (format.md section 14.8): a new
//! generation of the system profile, its `switch-to-configuration`, and the way
//! back when that fails.
//!
//! The steps are `nixos-rebuild`'s own, so a host updated by a bundle is in the
//! state `nixos-rebuild` would have left it in: `nix-env -p PROFILE --set PATH`
//! (skipped for `test`, as `nixos-rebuild test` skips it), then
//! `PATH/bin/switch-to-configuration ACTION`. Where `nixos-rebuild` only warns
//! when that fails and leaves the way back to the user (`nixos-rebuild switch
//! --rollback`), an unattended import must not leave a half-switched host: it
//! switches the profile back to the generation that was current before
//! (`nix-env --switch-generation N`, exactly that one rather than "the previous
//! one", which `--rollback` would pick) and runs that generation's
//! `switch-to-configuration ACTION` again, which is what `--rollback` does. The
//! failed generation stays listed (as after `nixos-rebuild`), no longer current.
//!
//! A second import of the same bundle does nothing: the profile already points at
//! the system (`boot`), the running system's link (`/run/current-system` unless
//! `--current-system` names another) does (`test`), or both do (`switch`). Everything here runs after
//! every path of the bundle was registered and verified; the paths are the local
//! store's, since only the running host's store can be activated.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use fs_err as fs;
use serde::Serialize;

use crate::bundle::meta::Activation;
use crate::error::{Classify, ErrorClass};
use crate::io::process::{nix_cmd, Cmd};
use crate::progress::Progress;

/// The system profile NixOS boots from and `nixos-rebuild` writes.
pub const DEFAULT_PROFILE: &str = "/nix/var/nix/profiles/system";

/// What `test` compares with: the link to the system running now, which NixOS's
/// activation script points at the system it activates.
pub const DEFAULT_CURRENT_SYSTEM: &str = "/run/current-system";

/// Where a host keeps its systems: the profile generations are made in and the
/// link to the running system (both settable, so that tests and hosts with
/// other layouts need not touch `/nix/var/nix/profiles` and `/run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemLinks {
    /// The system profile ([`DEFAULT_PROFILE`]).
    pub profile: PathBuf,
    /// The running system's link ([`DEFAULT_CURRENT_SYSTEM`]).
    pub current_system: PathBuf,
}

/// A NixOS system toplevel to activate, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct System {
    /// Its store path.
    pub path: String,
    /// The action the bundle asks for.
    pub action: Activation,
}

/// One generation of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Generation {
    /// Its number (`system-<number>-link`).
    pub number: u64,
    /// The store path it points at.
    pub path: String,
}

/// What activating a system would do (`--dry-run`) or did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActivationPlan {
    /// The system toplevel.
    pub system: String,
    /// `switch`, `boot` or `test`.
    pub action: String,
    /// The system profile.
    pub profile: String,
    /// The generation current before (none for a profile not made yet).
    pub current: Option<Generation>,
    /// Already active: nothing runs.
    pub already_active: bool,
    /// The number of the generation made (none for `test`, or when already
    /// active).
    pub new_generation: Option<u64>,
    /// The commands that run, in order (empty when already active).
    pub commands: Vec<String>,
}

/// Activation failed; what the host runs now.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// The new system's activation failed and the one before is back.
    #[error("activating {system} ({action}) failed, so the host went back to {back} ({action} again): it runs what it ran before\n{failure:#}")]
    RolledBack {
        /// The new system.
        system: String,
        /// The action.
        action: Activation,
        /// The profile.
        profile: String,
        /// What the host went back to.
        back: String,
        /// Why the new one failed.
        failure: anyhow::Error,
    },
    /// The new system's activation failed and going back failed too (or there was
    /// nothing to go back to): the host may run a mix of both.
    #[error("activating {system} ({action}) failed, and going back failed too: {rollback:#}\nthe host may run parts of both systems; check it (`nix-env -p {profile} --list-generations`, `systemctl --failed`) and activate a generation by hand (`nix-env -p {profile} --switch-generation N`, then `{profile}/bin/switch-to-configuration {action}`)\nwhy activating it failed: {failure:#}")]
    RollbackFailed {
        /// The new system.
        system: String,
        /// The action.
        action: Activation,
        /// The profile.
        profile: String,
        /// Why the new one failed.
        failure: anyhow::Error,
        /// Why going back failed.
        rollback: anyhow::Error,
    },
    /// The new generation could not be made: nothing was activated.
    #[error("cannot make a new generation of {profile}")]
    Set {
        /// The profile.
        profile: PathBuf,
        /// What `nix-env --set` said.
        source: anyhow::Error,
    },
    /// The profile could not be read: nothing was changed.
    #[error("cannot read the system profile {path}: {source}")]
    Profile {
        /// The link or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl Classify for ActivationError {
    fn class(&self) -> Option<ErrorClass> {
        match self {
            ActivationError::RolledBack { .. } => Some(ErrorClass::Activation),
            ActivationError::RollbackFailed { .. } => Some(ErrorClass::Rollback),
            ActivationError::Set { .. } | ActivationError::Profile { .. } => {
                Some(ErrorClass::Other)
            }
        }
    }
}

/// The generation `profile` points at, if the profile exists.
pub fn current(profile: &Path) -> Result<Option<Generation>, ActivationError> {
    let err = |source| ActivationError::Profile {
        path: profile.to_path_buf(),
        source,
    };
    let link = match fs::read_link(profile) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let name = link.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let number = generation_number(profile, name).ok_or_else(|| {
        err(std::io::Error::other(format!(
            "it points at {}, not at a generation link of it",
            link.display()
        )))
    })?;
    let dir = profile.parent().unwrap_or(Path::new("/"));
    let target = fs::read_link(dir.join(&link)).map_err(err)?;
    Ok(Some(Generation {
        number,
        path: target.to_string_lossy().into_owned(),
    }))
}

/// The number of `name` if it is a generation link of `profile`
/// (`<profile name>-<number>-link`).
fn generation_number(profile: &Path, name: &str) -> Option<u64> {
    let base = profile.file_name()?.to_str()?;
    let n = name.strip_prefix(base)?.strip_prefix('-')?;
    let n = n.strip_suffix("-link")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The number `nix-env --set PATH` gives the generation it makes: one more than
/// the highest there is, unless the highest already points at `path` (Nix then
/// makes none and switches to that one).
fn next_number(profile: &Path, path: &str) -> Result<u64, ActivationError> {
    let dir = profile.parent().unwrap_or(Path::new("/"));
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(1),
        Err(source) => {
            return Err(ActivationError::Profile {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let highest = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| generation_number(profile, e.file_name().to_str()?))
        .max()
        .unwrap_or(0);
    let link = dir.join(format!(
        "{}-{highest}-link",
        profile.file_name().and_then(|n| n.to_str()).unwrap_or("")
    ));
    if highest > 0 && fs::read_link(&link).is_ok_and(|t| t == Path::new(path)) {
        return Ok(highest);
    }
    Ok(highest + 1)
}

/// Whether `link` resolves to the store path `path`.
fn points_at(link: &Path, path: &str) -> bool {
    fs::canonicalize(link).is_ok_and(|p| p == Path::new(path))
}

fn set_cmd(profile: &Path, path: &str) -> Cmd {
    nix_cmd("nix-env")
        .arg("-p")
        .arg(profile)
        .arg("--set")
        .arg(path)
}

fn switch_generation_cmd(profile: &Path, number: u64) -> Cmd {
    nix_cmd("nix-env")
        .arg("-p")
        .arg(profile)
        .arg("--switch-generation")
        .arg(number.to_string())
}

fn switch_cmd(path: &str, action: Activation) -> Cmd {
    Cmd::new(
        &format!("{path}/bin/switch-to-configuration"),
        "the system toplevel lacks bin/switch-to-configuration: was it imported whole?",
    )
    .arg(action.as_str())
}

/// What activating `system` with `links` would do; changes nothing.
pub fn plan(system: &System, links: &SystemLinks) -> Result<ActivationPlan, ActivationError> {
    let profile = links.profile.as_path();
    let current = current(profile)?;
    // `boot` is done when the profile points at the system, `test` when the host
    // runs it, `switch` when both hold (a `boot` followed by a `switch` of the
    // same system still switches).
    let in_profile = current.as_ref().is_some_and(|g| g.path == system.path);
    let running = points_at(&links.current_system, &system.path);
    let already = match system.action {
        Activation::Switch => in_profile && running,
        Activation::Boot => in_profile,
        Activation::Test => running,
    };
    let mut commands = Vec::new();
    let mut new_generation = None;
    if !already {
        if system.action.makes_generation() {
            commands.push(set_cmd(profile, &system.path).display());
            new_generation = Some(next_number(profile, &system.path)?);
        }
        commands.push(switch_cmd(&system.path, system.action).display());
    }
    Ok(ActivationPlan {
        system: system.path.clone(),
        action: system.action.to_string(),
        profile: profile.display().to_string(),
        current,
        already_active: already,
        new_generation,
        commands,
    })
}

/// Activates `system` with `links` (see the module docs); on failure the host is
/// back on the generation current before ([`ActivationError::RolledBack`]) or, if
/// that failed too, [`ActivationError::RollbackFailed`].
pub fn activate(
    system: &System,
    links: &SystemLinks,
    progress: &Progress,
) -> Result<ActivationPlan, ActivationError> {
    let profile = links.profile.as_path();
    let mut plan = plan(system, links)?;
    if plan.already_active {
        return Ok(plan);
    }
    let action = system.action;
    // What runs now: a `test` that fails goes back to it, which need not be the
    // profile's generation (an earlier `test` of another system, say).
    let running_before = fs::canonicalize(&links.current_system)
        .ok()
        .and_then(|p| p.to_str().map(str::to_string));
    let fail = |failure: anyhow::Error, back: Result<String>| match back {
        Ok(back) => ActivationError::RolledBack {
            system: system.path.clone(),
            action,
            profile: plan.profile.clone(),
            back,
            failure,
        },
        Err(rollback) => ActivationError::RollbackFailed {
            system: system.path.clone(),
            action,
            profile: plan.profile.clone(),
            failure,
            rollback,
        },
    };
    if action.makes_generation() {
        progress.message(format!(
            "system: {} is generation {} of {}",
            system.path,
            plan.new_generation.unwrap_or(0),
            plan.profile
        ));
        // Nothing changed yet when this fails: an ordinary error. nix-env makes
        // the profile's links but not its folder.
        let set = || -> Result<()> {
            if let Some(dir) = profile.parent() {
                fs::create_dir_all(dir)?;
            }
            set_cmd(profile, &system.path).output()?;
            Ok(())
        };
        set().map_err(|source| ActivationError::Set {
            profile: profile.to_path_buf(),
            source,
        })?;
        // What Nix made, as it says it in the profile.
        plan.new_generation = current(profile)?.map(|g| g.number);
    }
    progress.message(format!("system: switch-to-configuration {action}"));
    let Err(failure) = run_switch(&system.path, action, progress) else {
        return Ok(plan);
    };
    progress.message(format!(
        "system: activating {} failed; going back",
        system.path
    ));
    let back = match (action, running_before) {
        (Activation::Test, Some(before)) => run_switch(&before, action, progress)
            .with_context(|| format!("testing {before}, which ran before, again"))
            .map(|()| format!("the system that ran before ({before})")),
        _ => roll_back(plan.current.as_ref(), profile, action, progress),
    };
    Err(fail(failure, back))
}

/// Runs `path`'s `switch-to-configuration action`, its stderr shown as progress.
fn run_switch(path: &str, action: Activation, progress: &Progress) -> Result<()> {
    let p = progress.clone();
    switch_cmd(path, action)
        .on_stderr_line(move |l| p.message(format!("  {l}")))
        .output()
        .with_context(|| format!("{path}/bin/switch-to-configuration {action}"))?;
    Ok(())
}

/// Back to `previous`: the profile (for `switch` and `boot`), then its
/// `switch-to-configuration action`. Says what the host runs then.
fn roll_back(
    previous: Option<&Generation>,
    profile: &Path,
    action: Activation,
    progress: &Progress,
) -> Result<String> {
    let Some(g) = previous else {
        anyhow::bail!(
            "{} had no generation before this one to go back to",
            profile.display()
        );
    };
    if action.makes_generation() {
        switch_generation_cmd(profile, g.number)
            .output()
            .with_context(|| {
                format!(
                    "switching {} back to generation {}",
                    profile.display(),
                    g.number
                )
            })?;
    }
    run_switch(&g.path, action, progress)
        .with_context(|| format!("activating generation {} ({}) again", g.number, g.path))?;
    Ok(format!(
        "generation {} ({}) of {}",
        g.number,
        g.path,
        profile.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_links_are_named_after_the_profile() {
        let p = Path::new("/nix/var/nix/profiles/system");
        assert_eq!(generation_number(p, "system-12-link"), Some(12));
        assert_eq!(generation_number(p, "system-1-link"), Some(1));
        assert_eq!(generation_number(p, "system-profiles"), None);
        assert_eq!(generation_number(p, "system--link"), None);
        assert_eq!(generation_number(p, "system-+1-link"), None);
        assert_eq!(generation_number(p, "other-1-link"), None);
    }
}
