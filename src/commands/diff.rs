//! `gapbundle diff OLD NEW`: objects added, removed and changed between two bundles,
//! and what a delta of NEW against OLD would store, from their heads alone (so it is
//! instant, and works on a bundle whose blobs are still being copied).

use super::against::read_bundle_head;
use super::report::{DiffReport, DiffSide};
use super::{print_json, Failure};
use crate::bundle::diff::{diff, Old};
use crate::bundle::digest::Digest;
use crate::cli::{DiffArgs, OutputArgs};
use crate::progress::human_bytes;

/// Runs diff.
pub fn run(a: DiffArgs, out: &OutputArgs) -> Result<(), Failure> {
    // The old head goes once what the diff needs of it is kept: the new one is
    // read without it.
    let old = Old::of(&read_bundle_head(&a.old)?);
    let new = read_bundle_head(&a.new)?;
    let d = diff(&old, &new);
    let nm = &new.manifest;
    if out.json {
        let side =
            |bundle: &std::path::Path, name: &str, version: &str, digest: &Digest| DiffSide {
                bundle: bundle.to_path_buf(),
                name: name.to_string(),
                version: version.to_string(),
                digest: digest.to_string(),
            };
        print_json(&DiffReport {
            old: side(&a.old, &old.name, &old.version, &old.digest),
            new: side(&a.new, &nm.name, &nm.version, &new.digest),
            diff: d,
        });
        return Ok(());
    }
    say!(
        "{} {} ({}) -> {} {} ({})",
        old.name,
        old.version,
        old.digest.short(),
        nm.name,
        nm.version,
        new.digest.short()
    );
    for o in &d.added {
        say!(
            "  added    {:<12} {}  {}  {}",
            o.kind,
            o.name,
            o.digest.short(),
            human_bytes(o.size)
        );
    }
    for o in &d.removed {
        say!("  removed  {:<12} {}  {}", o.kind, o.name, o.digest.short());
    }
    for c in &d.changed {
        let name = match &c.old_name {
            Some(old) => format!("{old} -> {}", c.name),
            None => c.name.clone(),
        };
        say!(
            "  changed  {:<12} {name}  {} -> {}  {}",
            c.kind,
            c.old.short(),
            c.new.short(),
            human_bytes(c.size)
        );
    }
    for (what, files) in [
        ("added", &d.files.added),
        ("removed", &d.files.removed),
        ("changed", &d.files.changed),
    ] {
        for f in files {
            say!("  {what:<8} file         {f}");
        }
    }
    say!(
        "{} unchanged; a delta of the new against the old would store {} blobs ({}) and leave out {} ({})",
        d.unchanged,
        d.delta.stored_blobs,
        human_bytes(d.delta.stored_bytes),
        d.delta.left_out_blobs,
        human_bytes(d.delta.left_out_bytes)
    );
    Ok(())
}
