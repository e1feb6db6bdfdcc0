//! `gapbundle import`: verify, then load into every target the flags select.
//!
//! Trust is decided from the head before any target is even planned, so a bundle
//! signed by nobody we trust never causes a single write. Then each target plans
//! (what is new, what is present), `--dry-run` stops there, and the bundle is read
//! once: every blob is hashed while it streams to the targets that need it, and the
//! targets register their objects only after the last byte verified. What it prints
//! of the bundle (names, versions, objects) goes through [`escaped`].

use super::report::{ImportReport, PlanReport, TargetPlanReport, TargetResult};
use super::settings::ImportSettings;
use super::verify::{check_trust, Trust};
use super::{print_json, Failure};
use crate::bundle::reader::{read_head, verify_stream, Head};
use crate::cli::{ImportArgs, OutputArgs};
use crate::error::{DeltaFailure, InputFailure};
use crate::import::{self, Fanout, Target};
use crate::io::source::BundleSource;
use crate::progress::{human_bytes, Progress};
use crate::text::escaped;

/// Runs import.
pub fn run(a: ImportArgs, out: &OutputArgs) -> Result<(), Failure> {
    let a = ImportSettings::resolve(a)?;
    let progress = &Progress::new(out.quiet || out.json);
    let source = BundleSource::open(&a.bundle)?;
    source.report_to(progress);
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
    check_expected(&head, &source.describe(), &targets, &plans)?;
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
    verify_stream(&mut r, &head, &mut fanout, |n| bar.inc(n))
        .map_err(|e| source.place_damage(e))?;
    bar.clear();
    drop(fanout);
    let mut reports = Vec::new();
    for t in targets.iter_mut() {
        let result = t.finish(&head, progress)?;
        reports.push(TargetResult {
            target: t.describe(),
            result,
        });
    }
    let signers = trust.signer_names();
    if out.json {
        print_json(&ImportReport {
            ok: true,
            digest: head.digest.to_string(),
            name: head.manifest.name.clone(),
            version: head.manifest.version.clone(),
            signers,
            targets: reports,
        });
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

/// Most blobs a refused delta names one by one; the rest are counted.
const MISSING_SHOWN: usize = 50;

/// A delta bundle leaves blobs out; each target said which of the ones it needs it
/// lacks. Any at all: the import stops here, before anything is written, naming
/// them, the objects that need them and the base the delta says holds them
/// (format.md section 10.5).
fn check_expected(
    head: &Head,
    bundle: &str,
    targets: &[Box<dyn Target>],
    plans: &[import::TargetPlan],
) -> Result<(), Failure> {
    let m = &head.manifest;
    let Some(delta) = &m.delta else {
        return Ok(());
    };
    let bases: std::collections::HashMap<_, _> = m
        .expected()
        .into_iter()
        .map(|(b, base)| (b.digest, (b, base)))
        .collect();
    let mut lines = Vec::new();
    let mut count = 0usize;
    for (t, p) in targets.iter().zip(plans) {
        for d in &p.missing {
            count += 1;
            if lines.len() >= MISSING_SHOWN {
                continue;
            }
            let users: Vec<String> = m
                .users_of(d)
                .iter()
                .map(|o| format!("{} {}", o.kind, crate::text::escaped(&o.name)))
                .collect();
            let (size, base) = match bases.get(d) {
                Some((b, base)) => (human_bytes(b.size), base.to_string()),
                None => ("?".into(), "no base".into()),
            };
            lines.push(format!(
                "  {d} ({size}) for {}: not in {}; held by {base}",
                users.join(", "),
                t.describe()
            ));
        }
    }
    if count == 0 {
        return Ok(());
    }
    if count > lines.len() {
        lines.push(format!("  … and {} more", count - lines.len()));
    }
    let against: Vec<String> = delta.against.iter().map(|b| b.to_string()).collect();
    Err(DeltaFailure(format!(
        "{} {} is a delta against {}, and {count} blob(s) it leaves out are not on the target, so nothing was imported:\n{}\nimport the base first, or ship the full bundle (`gapbundle patch BASE {} -o FULL` rebuilds it from the base)",
        m.name,
        m.version,
        against.join(", "),
        lines.join("\n"),
        bundle,
    ))
    .into())
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
    a: &ImportSettings,
    head: &Head,
    trust: &Trust,
    source: &BundleSource,
) -> Result<Vec<Box<dyn Target>>, Failure> {
    let mut v: Vec<Box<dyn Target>> = Vec::new();
    if let Some(nix) = &a.nix {
        v.extend(import::nix::target(nix, head, trust.signers(), source)?);
    }
    v.extend(import::oci::targets(&a.oci, head, source)?);
    Ok(v)
}

fn report_plan(
    head: &Head,
    targets: &[Box<dyn Target>],
    plans: &[import::TargetPlan],
    out: &OutputArgs,
) {
    if out.json {
        print_json(&PlanReport {
            ok: true,
            dry_run: true,
            digest: head.digest.to_string(),
            targets: targets
                .iter()
                .zip(plans)
                .map(|(t, p)| TargetPlanReport {
                    target: t.describe(),
                    plan: p.clone(),
                })
                .collect(),
        });
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
