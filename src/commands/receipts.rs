//! `gapbundle list` and `gapbundle remove`: the bundles imported on this host, from
//! their receipts ([`crate::bundle::receipt`], [`crate::import::receipts`]).
//!
//! `remove` takes a bundle away as a newer version replaces an older one: its
//! images unpinned (deleted with `--prune`), its manifest files, files and GC roots
//! removed, its staged archive deleted, except what another imported bundle's
//! receipt still names on the same target. Its receipt goes last, so a removal cut
//! short is finished by running it again.

use std::collections::BTreeSet;

use super::report::{ListReport, RemoveReport};
use super::settings::{ListSettings, RemoveSettings};
use super::{print_json, Failure};
use crate::bundle::receipt::{replacement, Receipt, Section};
use crate::cli::{ListArgs, OutputArgs, RemoveArgs};
use crate::error::InputFailure;
use crate::import::receipts::{self, State};
use crate::progress::Progress;
use crate::text::escaped;
use crate::time::rfc3339;

/// Runs list.
pub fn list(a: ListArgs, out: &OutputArgs) -> Result<(), Failure> {
    let dir = ListSettings::resolve(a).state_dir;
    let stored = receipts::peek(&dir)?;
    if out.json {
        print_json(&ListReport {
            bundles: stored.iter().map(|s| &s.receipt).collect(),
            state_dir: dir,
        });
        return Ok(());
    }
    if stored.is_empty() {
        say!("no bundles imported (no receipts in {})", dir.display());
        return Ok(());
    }
    for s in &stored {
        let r = &s.receipt;
        let state = if r.complete {
            String::new()
        } else {
            " — import not finished (killed or failed): run it again, or `gapbundle remove`"
                .to_string()
        };
        say!(
            "{} {}  {}  imported {}{}",
            escaped(&r.name),
            escaped(&r.version),
            r.digest,
            rfc3339(r.imported),
            state
        );
        if !r.signers.is_empty() {
            say!("  signed by {}", escaped(&r.signers.join(", ")));
        }
        for t in &r.targets {
            say!("  {}", escaped(&t.summary()));
        }
    }
    Ok(())
}

/// Runs remove.
pub fn remove(a: RemoveArgs, out: &OutputArgs) -> Result<(), Failure> {
    let a = RemoveSettings::resolve(a);
    let progress = Progress::new(out.quiet || out.json);
    let dir = &a.state_dir;
    // A dry run changes nothing, not even the state folder.
    let held = if a.dry_run {
        None
    } else {
        Some(State::open(dir)?)
    };
    let stored = match &held {
        None => receipts::peek(dir)?,
        Some(s) => s.receipts()?,
    };
    let (mine, others): (Vec<&Receipt>, Vec<&Receipt>) = stored
        .iter()
        .map(|s| &s.receipt)
        .partition(|r| r.name == a.name);
    if mine.is_empty() {
        return Err(InputFailure(format!(
            "no bundle named `{}` was imported here (no receipt in {}); `gapbundle list` shows those that were",
            a.name,
            dir.display()
        ))
        .into());
    }
    let covered: BTreeSet<String> = mine
        .iter()
        .flat_map(|r| r.targets.iter().map(Section::id))
        .collect();
    let retire = replacement(&mine, &[], &covered, &others, a.prune);
    if a.dry_run {
        let would: Vec<String> = retire.iter().map(|r| r.to_string()).collect();
        if out.json {
            print_json(&RemoveReport {
                ok: true,
                name: a.name.clone(),
                dry_run: true,
                retired: None,
                would_retire: Some(would),
            });
        } else {
            say!("dry run: remove {}, nothing changed", escaped(&a.name));
            for w in &would {
                say!("  would {}", escaped(w));
            }
        }
        return Ok(());
    }
    let done = receipts::execute(&retire, &progress)?;
    if let Some(s) = &held {
        s.forget(&a.name)?;
    }
    if out.json {
        print_json(&RemoveReport {
            ok: true,
            name: a.name.clone(),
            dry_run: false,
            retired: Some(done),
            would_retire: None,
        });
    } else if !out.quiet {
        let versions: Vec<String> = mine.iter().map(|r| r.version.clone()).collect();
        say!(
            "removed {} {}",
            escaped(&a.name),
            escaped(&versions.join(", "))
        );
        for d in &done {
            say!("  {}", escaped(d));
        }
    }
    Ok(())
}
