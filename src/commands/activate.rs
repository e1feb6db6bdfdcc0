//! `gapbundle activate`: the NixOS system an imported bundle carries, activated
//! (format.md section 14.8), and the same step at the end of `import`.
//!
//! `import` activates by itself; this command is for later (an import with
//! `--activation none`, a `boot` that should now be a `switch`, an activation that was
//! rolled back and may be tried again). It activates only what was imported: a
//! bundle file's signature is checked as `import` checks it and its receipt must be
//! in the state folder, complete; a receipt (its file, or the bundle's name) says
//! the system itself. Either way the toplevel must be valid in the local store.

use super::report::ActivateReport;
use super::settings::ActivateSettings;
use super::verify::check_trust;
use super::{print_json, Failure};
use crate::bundle::meta::Activation;
use crate::bundle::reader::{read_head, Head};
use crate::bundle::receipt::Receipt;
use crate::cli::{ActivateArgs, OutputArgs};
use crate::error::InputFailure;
use crate::import::activate::{self, ActivationPlan, System};
use crate::import::receipts;
use crate::io::process::nix_cmd;
use crate::io::source::BundleSource;
use crate::progress::Progress;
use crate::text::escaped;

/// Runs activate.
pub fn run(a: ActivateArgs, out: &OutputArgs) -> Result<(), Failure> {
    let a = ActivateSettings::resolve(a);
    let progress = &Progress::new(out.quiet || out.json);
    let receipt = find_receipt(&a, progress)?;
    let Some(s) = &receipt.system else {
        return Err(InputFailure(format!(
            "{} {} carries no NixOS system to activate (no `nix:` entry of its spec has `activate`)",
            escaped(&receipt.name),
            escaped(&receipt.version)
        ))
        .into());
    };
    let system = System {
        path: s.path.clone(),
        action: s.activate,
    };
    check_valid(&system.path)?;
    let plan = if a.dry_run {
        activate::plan(&system, &a.system_links)?
    } else {
        activate::activate(&system, &a.system_links, progress)?
    };
    if out.json {
        print_json(&ActivateReport {
            ok: true,
            dry_run: a.dry_run,
            name: receipt.name.clone(),
            version: receipt.version.clone(),
            digest: receipt.digest.to_string(),
            system: plan,
        });
    } else if !out.quiet {
        say_plan(&plan, a.dry_run);
    }
    Ok(())
}

/// The receipt `a.bundle` names: a receipt file (JSON), a bundle file whose
/// complete receipt is in the state folder, or the name of an imported bundle.
fn find_receipt(a: &ActivateSettings, progress: &Progress) -> Result<Receipt, Failure> {
    let arg = &a.bundle;
    if arg.is_file() {
        let mut first = [0u8; 1];
        let n = std::io::Read::read(&mut fs_err::File::open(arg)?, &mut first)?;
        if n == 1 && first[0] == b'{' {
            let bytes = fs_err::read(arg)?;
            let r: Receipt = serde_json::from_slice(&bytes).map_err(|e| {
                InputFailure(format!(
                    "{} is neither a bundle nor an import receipt: {e}",
                    arg.display()
                ))
            })?;
            return complete(r, &arg.display().to_string());
        }
        let source = BundleSource::open_head(arg)?;
        let head = read_head(&mut source.reader()?)?;
        check_trust(&head, &a.trust, progress)?;
        return receipt_of(a, &head);
    }
    let name = arg.to_string_lossy();
    let stored = receipts::peek(&a.state_dir)?;
    let mine: Vec<&Receipt> = stored
        .iter()
        .map(|s| &s.receipt)
        .filter(|r| r.name == name)
        .collect();
    match mine.iter().find(|r| r.complete).or(mine.first()) {
        Some(r) => complete((*r).clone(), &format!("the receipt of {}", escaped(&name))),
        None => Err(InputFailure(format!(
            "`{}` is not a bundle or receipt file, nor the name of a bundle imported here (no receipt in {}; `gapbundle list` shows them)",
            escaped(&name),
            a.state_dir.display()
        ))
        .into()),
    }
}

/// The complete receipt of the bundle `head` in the state folder.
fn receipt_of(a: &ActivateSettings, head: &Head) -> Result<Receipt, Failure> {
    let stored = receipts::peek(&a.state_dir)?;
    let found = stored
        .into_iter()
        .map(|s| s.receipt)
        .find(|r| r.digest == head.digest && r.complete);
    let m = &head.manifest;
    match found {
        Some(r) => Ok(r),
        None => Err(InputFailure(format!(
            "{} {} ({}) was not imported here (no complete receipt of it in {}): `gapbundle import` it first, which activates it too",
            escaped(&m.name),
            escaped(&m.version),
            head.digest,
            a.state_dir.display()
        ))
        .into()),
    }
}

fn complete(r: Receipt, what: &str) -> Result<Receipt, Failure> {
    if r.complete {
        return Ok(r);
    }
    Err(InputFailure(format!(
        "{what} is of an import that did not finish: run the import again, which activates the system too"
    ))
    .into())
}

/// The system toplevel must be in the local store, whole.
fn check_valid(path: &str) -> Result<(), Failure> {
    nix_cmd("nix-store")
        .args(["--check-validity", path])
        .output()
        .map_err(|e| {
            InputFailure(format!(
                "{path} is not a valid path of the local Nix store, so it cannot be activated: import the bundle (into the local store, without --nix-store) first\n{e}"
            ))
        })?;
    Ok(())
}

/// What activating did (or, with `dry`, would do), for people.
pub(super) fn say_plan(p: &ActivationPlan, dry: bool) {
    let system = escaped(&p.system);
    if p.already_active {
        let how = match p.current.as_ref() {
            Some(g) if p.action != Activation::Test.as_str() => {
                format!("generation {} of {}", g.number, p.profile)
            }
            _ => "the running system".into(),
        };
        say!("  system {system}: already active ({how}), nothing to do");
        return;
    }
    let verb = if dry { "would activate" } else { "activated" };
    match p.new_generation {
        Some(n) => say!(
            "  system {system}: {verb} with `{}` as generation {n} of {}{}",
            p.action,
            p.profile,
            p.current
                .as_ref()
                .map(|g| format!(" (after generation {})", g.number))
                .unwrap_or_default()
        ),
        None => say!(
            "  system {system}: {verb} with `{}` (no new generation)",
            p.action
        ),
    }
    if dry {
        for c in &p.commands {
            say!("    would run  {}", escaped(c));
        }
    }
}
