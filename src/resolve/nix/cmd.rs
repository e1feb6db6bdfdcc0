//! The `nix` command line, as create uses it: building installables, their
//! closures, a flake's sources. Nix is never evaluated here; the real `nix` CLI is
//! run (`nix build --json --no-link`, `nix path-info --recursive --json`, `nix flake
//! archive --json`), with flakes and `nix-command` switched on for Nix 2.8.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fs_err as fs;
use serde::Deserialize;

use crate::error::InputFailure;
use crate::io::process::{nix_cmd, Cmd};
use crate::nixfmt::{parse_path_info, PathInfo, StorePath};
use crate::progress::Progress;
use crate::spec::LoadedSpec;

/// The spec's folder as an absolute path (installables are relative to it).
pub(super) fn base_dir(spec: &LoadedSpec) -> PathBuf {
    std::path::absolute(&spec.base).unwrap_or_else(|_| spec.base.clone())
}

#[derive(Deserialize)]
struct BuildResult {
    outputs: BTreeMap<String, String>,
}

/// Builds an installable and returns its output paths (in output-name order).
pub(super) fn build(
    spec: &LoadedSpec,
    installable: &str,
    progress: &Progress,
) -> Result<Vec<StorePath>> {
    let base = base_dir(spec);
    warn_untracked(&base, installable, progress);
    let out = nix_cmd("nix")
        .args(["build", "--json", "--no-link", installable])
        .current_dir(&base)
        .output()
        .with_context(|| {
            format!(
                "building `{installable}` (relative to {}): fix the flake or the installable in {}",
                base.display(),
                spec.path.display()
            )
        })?;
    let results: Vec<BuildResult> = serde_json::from_slice(&out)
        .with_context(|| format!("unexpected `nix build --json` output for `{installable}`"))?;
    let mut paths = Vec::new();
    for r in results {
        for p in r.outputs.values() {
            paths.push(StorePath::parse(p)?);
        }
    }
    if paths.is_empty() {
        bail!("`nix build {installable}` produced no output path");
    }
    Ok(paths)
}

/// The flake reference part of an installable (`.` in `.#pkg`).
pub(super) fn flake_ref(installable: &str) -> &str {
    installable.split_once('#').map_or(installable, |(f, _)| f)
}

/// The local folder of a flake reference, when it has one.
pub(super) fn flake_dir(base: &Path, flake: &str) -> Option<PathBuf> {
    let f = flake
        .strip_prefix("path:")
        .or_else(|| flake.strip_prefix("git+file://"))
        .unwrap_or(flake);
    let f = f.split('?').next().unwrap_or(f);
    (f.starts_with('.') || f.starts_with('/')).then(|| base.join(f))
}

/// Nix copies a flake in a git tree from git's index: untracked files are invisible
/// to it, which surprises everyone once. Warn (with `git add`) when there are any.
fn warn_untracked(base: &Path, installable: &str, progress: &Progress) {
    let flake = flake_ref(installable);
    if flake.starts_with("path:") {
        return;
    }
    let Some(dir) = flake_dir(base, flake) else {
        return;
    };
    let out = Cmd::new("git", "")
        .args(["status", "--porcelain", "--untracked-files=all", "--", "."])
        .current_dir(&dir)
        .output();
    let Ok(out) = out else {
        return; // not a git tree, or no git: Nix copies the folder as it is
    };
    let untracked: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("?? "))
        .map(str::to_string)
        .collect();
    if !untracked.is_empty() {
        let shown: Vec<_> = untracked.iter().take(5).cloned().collect();
        progress.warn(format!(
            "{}: {} untracked file(s) in the flake's git tree ({}{}) are invisible to Nix; `git add` them if the flake needs them",
            installable,
            untracked.len(),
            shown.join(", "),
            if untracked.len() > 5 { ", …" } else { "" }
        ));
    }
}

fn single_output(installable: &str, paths: Vec<StorePath>) -> Result<PathBuf> {
    match paths.as_slice() {
        [p] => Ok(PathBuf::from(p.as_str())),
        _ => Err(InputFailure(format!(
            "`{installable}` has {} outputs ({}); name one, e.g. `{installable}^out`",
            paths.len(),
            paths
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}

/// Builds a flake installable that produces an OCI or docker archive and returns the
/// archive's path: the output itself when it is a file, or the one `.tar` file in it
/// when it is a folder.
pub fn build_archive(spec: &LoadedSpec, installable: &str) -> Result<PathBuf> {
    let progress = Progress::quiet();
    let out = single_output(installable, build(spec, installable, &progress)?)?;
    if out.is_file() {
        return Ok(out);
    }
    let tars: Vec<PathBuf> = fs::read_dir(&out)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "tar"))
        .collect();
    match tars.as_slice() {
        [t] => Ok(t.clone()),
        _ => Err(InputFailure(format!(
            "images entry `installable: {installable}` built {}, which is a folder without exactly one .tar file in it; make the output the archive itself (e.g. skopeo copy … oci-archive:$out)",
            out.display()
        ))
        .into()),
    }
}

/// Builds a flake installable that holds rendered Kubernetes YAML and returns its
/// store path: a file, or a folder of YAML files. (Called by the manifests resolver.)
pub fn build_manifests(spec: &LoadedSpec, installable: &str) -> Result<PathBuf> {
    let progress = Progress::quiet();
    single_output(installable, build(spec, installable, &progress)?)
}

/// `nix path-info --recursive --json` over `paths`.
pub(super) fn closure(paths: &[StorePath]) -> Result<Vec<PathInfo>> {
    let out = nix_cmd("nix")
        .args(["path-info", "--recursive", "--json"])
        .args(paths.iter().map(|p| p.as_str()))
        .output()?;
    Ok(parse_path_info(&out)?)
}

#[derive(Deserialize)]
struct Archived {
    path: String,
    #[serde(default)]
    inputs: BTreeMap<String, Archived>,
}

fn archived_paths(a: &Archived, out: &mut Vec<StorePath>) -> Result<()> {
    out.push(StorePath::parse(&a.path)?);
    for i in a.inputs.values() {
        archived_paths(i, out)?;
    }
    Ok(())
}

/// The flake's own source and its inputs' sources (`nix flake archive --json`).
pub(super) fn flake_inputs(base: &Path, flake: &str) -> Result<Vec<StorePath>> {
    let out = nix_cmd("nix")
        .args(["flake", "archive", "--json", flake])
        .current_dir(base)
        .output()
        .with_context(|| format!("archiving the inputs of flake `{flake}`"))?;
    let a: Archived = serde_json::from_slice(&out)
        .with_context(|| format!("unexpected `nix flake archive --json` output for `{flake}`"))?;
    let mut v = Vec::new();
    archived_paths(&a, &mut v)?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flake_refs_and_folders() {
        assert_eq!(flake_ref(".#packages.x86_64-linux.a"), ".");
        assert_eq!(flake_ref("path:./sub#x"), "path:./sub");
        let b = Path::new("/spec");
        assert_eq!(flake_dir(b, "."), Some(PathBuf::from("/spec/.")));
        assert_eq!(
            flake_dir(b, "path:./sub"),
            Some(PathBuf::from("/spec/./sub"))
        );
        assert_eq!(flake_dir(b, "/abs?dir=x"), Some(PathBuf::from("/abs")));
        assert_eq!(flake_dir(b, "github:o/r"), None);
    }
}
