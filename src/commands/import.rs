//! `gapbundle import`: verify, then load into every target the flags select.
//!
//! Trust is decided from the head before any target is even planned, so a bundle
//! signed by nobody we trust never causes a single write. Then each target plans
//! (what is new, what is present), `--dry-run` stops there, and the bundle is read
//! once: every blob is hashed while it streams to the targets that need it, and the
//! targets register their objects only after the last byte verified. What it prints
//! of the bundle (names, versions, objects) goes through [`escaped`].

use serde_json::json;

use super::verify::{check_trust, Trust};
use super::{print_json, Failure};
use crate::bundle::reader::{read_head, verify_stream, Head};
use crate::cli::{ImportArgs, OutputArgs};
use crate::error::InputFailure;
use crate::import::{self, Fanout, Target};
use crate::io::source::BundleSource;
use crate::progress::{human_bytes, Progress};
use crate::text::escaped;

/// Runs import.
pub fn run(a: ImportArgs, out: &OutputArgs) -> Result<(), Failure> {
    let progress = &Progress::new(out.quiet || out.json);
    let source = BundleSource::open(&a.bundle)?;
    let mut r = source.reader()?;
    let head = read_head(&mut r)?;
    let trust = check_trust(&head, &a.trust, progress)?;
    let mut targets = select_targets(&a, &head, &trust, &source)?;
    if targets.is_empty() {
        return Err(InputFailure(
            "nothing to import: every kind of object in this bundle was skipped".into(),
        )
        .into());
    }
    let mut plans = Vec::new();
    for t in targets.iter_mut() {
        let plan = t.plan(&head)?;
        plans.push(plan);
    }
    if a.dry_run {
        report_plan(&head, &targets, &plans, out);
        return Ok(());
    }
    let mut fanout = Fanout::new(
        targets
            .iter_mut()
            .zip(&plans)
            .map(|(t, p)| (t.as_mut() as &mut dyn Target, p.needed.clone()))
            .collect(),
    );
    let bar = progress.bar("bundle data", head.manifest.data_len());
    verify_stream(&mut r, &head, &mut fanout, |n| bar.inc(n))?;
    bar.clear();
    drop(fanout);
    let mut reports = Vec::new();
    for t in targets.iter_mut() {
        reports.push(json!({"target": t.describe(), "result": t.finish(&head, progress)?}));
    }
    let signers = trust.signer_names();
    if out.json {
        print_json(&json!({
            "ok": true, "digest": head.digest.to_string(), "name": head.manifest.name,
            "version": head.manifest.version, "signers": signers, "targets": reports,
        }));
    } else if !out.quiet {
        say!(
            "imported {} {} ({})",
            escaped(&head.manifest.name),
            escaped(&head.manifest.version),
            head.digest
        );
        for (t, p) in targets.iter().zip(&plans) {
            say!(
                "  {}: {} new, {} already present{}",
                escaped(&t.describe()),
                p.new_objects.len(),
                p.present_objects.len(),
                removals(p, "removed")
            );
            for o in &p.objects_to_remove {
                say!("    removed  {} {K3S_DELETES}", escaped(o));
            }
        }
    }
    Ok(())
}

/// What removing a file from K3s's auto-deploy folder does, said wherever one is.
const K3S_DELETES: &str = "(K3s deletes what it deployed from it)";

/// `, 2 removed` (`what`) when the target removes anything, else nothing.
fn removals(p: &import::TargetPlan, what: &str) -> String {
    match p.objects_to_remove.len() {
        0 => String::new(),
        n => format!(", {n} {what}"),
    }
}

fn select_targets(
    a: &ImportArgs,
    head: &Head,
    trust: &Trust,
    source: &BundleSource,
) -> Result<Vec<Box<dyn Target>>, Failure> {
    let mut v: Vec<Box<dyn Target>> = Vec::new();
    if let Some(t) = import::nix::target(a, head, trust.signers(), source)? {
        v.push(t);
    }
    v.extend(import::oci::targets(a, head, source)?);
    Ok(v)
}

fn report_plan(
    head: &Head,
    targets: &[Box<dyn Target>],
    plans: &[import::TargetPlan],
    out: &OutputArgs,
) {
    if out.json {
        let t: Vec<_> = targets
            .iter()
            .zip(plans)
            .map(|(t, p)| json!({"target": t.describe(), "plan": p}))
            .collect();
        print_json(
            &json!({"ok": true, "dryRun": true, "digest": head.digest.to_string(), "targets": t}),
        );
        return;
    }
    say!(
        "dry run: {} {} ({}), nothing changed",
        escaped(&head.manifest.name),
        escaped(&head.manifest.version),
        head.digest
    );
    for (t, p) in targets.iter().zip(plans) {
        say!(
            "  {}: {} new, {} already present{}, {} to write",
            escaped(&t.describe()),
            p.new_objects.len(),
            p.present_objects.len(),
            removals(p, "to remove"),
            human_bytes(p.bytes_to_write)
        );
        for o in &p.new_objects {
            say!("    new      {}", escaped(o));
        }
        for o in &p.present_objects {
            say!("    present  {}", escaped(o));
        }
        for o in &p.objects_to_remove {
            say!("    would remove  {} {K3S_DELETES}", escaped(o));
        }
    }
}
