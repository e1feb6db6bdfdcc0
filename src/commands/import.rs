//! `gapbundle import`: verify, then load into every target the flags select.
//!
//! Trust is decided from the head before any target is even planned, so a bundle
//! signed by nobody we trust never causes a single write. Then each target plans
//! (what is new, what is present), `--dry-run` stops there, and the bundle is read
//! once: every blob is hashed while it streams to the targets that need it, and the
//! targets register their objects only after the last byte verified. What it prints
//! of the bundle (names, versions, objects) goes through [`escaped`].
//!
//! A rerun (every plan [changes nothing](TargetPlan::changes_nothing), nothing to
//! retire, the bundle a file) reads no data: no byte of it would reach a target, and
//! hashing a bundle of gigabytes to confirm what the targets already hold by digest
//! was most of a rerun's time (format.md section 12). When its receipt is the one
//! already stored, that is left as it is too, so such an import writes nothing.
//!
//! Every import records a receipt in the state folder (format.md section 16):
//! pending before any target is touched, complete after; a new version of a bundle
//! then retires what only the earlier one held ([`crate::bundle::receipt`]).

use std::collections::BTreeSet;

use super::report::{ImportReport, PlanReport, TargetPlanReport, TargetResult};
use super::settings::{default_threads, ImportSettings};
use super::verify::{check_trust, Trust};
use super::{print_json, Failure};
use crate::bundle::manifest::Kind;
use crate::bundle::meta::Activation;
use crate::bundle::reader::{read_head_with, verify_parallel, verify_stream, Head};
use crate::bundle::receipt::{
    carried, replacement, Receipt, Retire, Section, SystemRecord, RECEIPT_MAJOR,
};
use crate::cli::{ImportArgs, OutputArgs};
use crate::error::{
    ContainerdFailure, DeltaFailure, InputFailure, NixStoreFailure, RegistryFailure,
};
use crate::import::oci::{ImageDest, ManifestDest};
use crate::import::{self, receipts, Fanout, Target, TargetPlan};
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
    let mut early = None;
    let mut head = read_head_with(&mut r, |manifest| {
        early = a
            .nix
            .as_ref()
            .and_then(|nix| import::nix::start_early(nix, &source, manifest));
    })?;
    // Nothing of an import reads the manifest's bytes again (9 MiB of 20,000 files).
    drop(std::mem::take(&mut head.manifest_bytes));
    let trust = check_trust(&head, &a.trust, progress)?;
    let mut targets = select_targets(&a, &head, &trust, &source, early)?;
    if targets.is_empty() {
        return Err(InputFailure(
            "nothing to import: every kind of object in this bundle was skipped".into(),
        )
        .into());
    }
    let mut plans = Vec::new();
    for t in targets.iter_mut() {
        let plan = match t.plan(&head) {
            Ok(p) => p,
            // A dry run still plans when a target is out of reach: it says which,
            // and that it could not check what the target holds.
            Err(e) if a.dry_run && unreachable(&e) => {
                let mut p = t.plan_unreached(&head)?;
                p.unreachable = Some(format!("{e:#}"));
                p
            }
            Err(e) => return Err(e.into()),
        };
        plans.push(plan);
    }
    check_expected(&head, &source.describe(), &targets, &plans)?;
    // What the bundle will hold on each target, and which targets this import
    // speaks for: an earlier version's holdings there that this one lacks go.
    let sections: Vec<Section> = targets.iter().filter_map(|t| t.receipt(&head)).collect();
    let mut covered = coverage(&a, &head)?;
    covered.extend(sections.iter().map(Section::id));
    let name = &head.manifest.name;
    let (system, to_activate) = system_of(&a, &head, progress);
    if a.dry_run {
        let stored = receipts::peek(&a.state_dir)?;
        let (mine, others) = split(&stored, name);
        let retire = replacement(&mine, &sections, &covered, &others, a.prune);
        let activation = match (&to_activate, &a.system_links) {
            (Some(s), Some(p)) => Some(import::activate::plan(s, p)?),
            _ => None,
        };
        report_plan(&head, &targets, &plans, &retire, activation.as_ref(), out);
        return Ok(());
    }
    if a.fleet_manifests_left_out
        && head
            .manifest
            .objects
            .iter()
            .any(|o| o.kind == Kind::K8sManifest)
    {
        progress.message(
            "the bundle's manifests are for the fleet's K3s servers and were not written here (--local-manifests writes them into this node's K3s folder too)",
        );
    }
    // The receipt is on disk before any target is touched: a killed import leaves
    // it (not complete), and the next import or removal takes its holdings into
    // account.
    let state = receipts::State::open(&a.state_dir)?;
    let stored = state.receipts()?;
    let (mine, others) = split(&stored, name);
    let mut receipt = Receipt {
        format_version: format!("{RECEIPT_MAJOR}.0"),
        name: name.clone(),
        version: head.manifest.version.clone(),
        digest: head.digest,
        signers: trust.signer_names(),
        imported: now(),
        generator: concat!("gapbundle ", env!("CARGO_PKG_VERSION")).into(),
        complete: false,
        targets: sections
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .chain(carried(&mine, &covered))
            .collect(),
        system: system.as_ref().map(|s| SystemRecord {
            path: s.path.clone(),
            activate: s.action,
        }),
        extra: Default::default(),
    };
    let retire = replacement(&mine, &sections, &covered, &others, a.prune);
    // A rerun: every target holds, by digest, all that the signed head names, and
    // nothing is to go. No byte of the bundle's data would reach a target, so none
    // is read (a bundle from a pipe is still read to its end, for whatever writes
    // it). And when its complete receipt already says all this, it stays as it is:
    // such an import writes nothing at all.
    let rerun = source.random_access().is_some()
        && retire.is_empty()
        && plans.iter().all(TargetPlan::changes_nothing);
    let unchanged = rerun && same_receipt(&mine, &receipt);
    if !unchanged {
        state.write_pending(&receipt)?;
    }
    if rerun {
        progress.message(
            "every target already holds all of this bundle: its data was not read (`gapbundle verify` checks it)",
        );
    } else {
        let bar = progress.bar("bundle data", head.manifest.data_len());
        let streamed = plans.iter().any(|p| !p.needed.is_empty());
        match source.random_access().filter(|_| !streamed) {
            // No blob streams to a target (a Nix store is served from the file in
            // place once the bundle verified): the check alone, on every core, as
            // `verify` does it.
            Some(ra) => verify_parallel(ra, &head, default_threads(), &|n| bar.inc(n)),
            None => {
                let mut fanout = Fanout::new(
                    targets
                        .iter_mut()
                        .zip(&plans)
                        .map(|(t, p)| (t.as_mut() as &mut dyn Target, p.needed.clone()))
                        .collect(),
                );
                verify_stream(&mut r, &head, &mut fanout, |n| bar.inc(n))
            }
        }
        .map_err(|e| source.place_damage(e))?;
        bar.clear();
    }
    let mut reports = Vec::new();
    for t in targets.iter_mut() {
        let result = t.finish(&head, progress)?;
        reports.push(TargetResult {
            target: t.describe(),
            result,
        });
    }
    // The targets' staging folders go before the switch, which may take long or
    // restart what runs this import: none is left in K3s's manifests folder.
    drop(targets);
    // The new version is in place: what only the earlier one (or a killed import)
    // held goes, except what another imported bundle names.
    let retired = receipts::execute(&retire, progress)?;
    receipt.complete = true;
    if !unchanged {
        state.write_complete(&receipt)?;
    }
    // Last: every path is registered and verified, the images and manifests are in
    // place (in containerd before the switch when K3s runs, staged for the new
    // system's K3s otherwise), and the receipt says the import is done, so a
    // failed activation leaves an import `gapbundle activate` can take up again.
    let activation = match (&to_activate, &a.system_links) {
        (Some(s), Some(p)) => Some(import::activate::activate(s, p, progress)?),
        _ => None,
    };
    let signers = trust.signer_names();
    if out.json {
        print_json(&ImportReport {
            ok: true,
            digest: head.digest.to_string(),
            name: head.manifest.name.clone(),
            version: head.manifest.version.clone(),
            signers,
            targets: reports,
            retired,
            system: activation,
            data_read: !rerun,
        });
    } else if !out.quiet {
        say!(
            "imported {} {} ({})",
            escaped(&head.manifest.name),
            escaped(&head.manifest.version),
            head.digest
        );
        for (t, p) in reports.iter().zip(&plans) {
            say!(
                "  {}: {} new, {} already present{}, {} written",
                escaped(&t.target),
                p.new_objects.len(),
                p.present_objects.len(),
                removals(p, "removed"),
                human_bytes(p.bytes_to_write)
            );
            for o in &p.objects_to_remove {
                say!("    removed  {} {K3S_DELETES}", escaped(o));
            }
        }
        if let Some(prev) = mine.iter().find(|r| r.complete) {
            if prev.digest != head.digest {
                say!(
                    "  replaced {} {} ({})",
                    escaped(&prev.name),
                    escaped(&prev.version),
                    prev.digest
                );
            }
        }
        for r in &retired {
            say!("  {}", escaped(r));
        }
        if let Some(p) = &activation {
            super::activate::say_plan(p, false);
        }
    }
    Ok(())
}

/// The bundle's NixOS system as it asks to be activated, when this import puts it
/// into the host's own store (the only one that can be activated; said when it
/// does not), for the receipt; and what this import activates of it under
/// `--activation`: nothing with `none` or for a `test` under `boot` (then
/// `gapbundle activate` does what the bundle asks, from the receipt), a `switch`
/// as `boot` under `boot`.
fn system_of(
    a: &ImportSettings,
    head: &Head,
    progress: &Progress,
) -> (
    Option<import::activate::System>,
    Option<import::activate::System>,
) {
    let Some((o, asked)) = head.manifest.system() else {
        return (None, None);
    };
    let why_not = match &a.nix {
        None => Some("--skip-nix"),
        Some(n) if n.store.is_some() => Some("--nix-store is not this host's own store"),
        Some(_) => None,
    };
    if let Some(why) = why_not {
        progress.message(format!(
            "the bundle's NixOS system {} is not activated: {why}",
            escaped(&o.name)
        ));
        return (None, None);
    }
    let system = |action| import::activate::System {
        path: o.name.clone(),
        action,
    };
    let later = |why: &str| {
        progress.message(format!(
            "the bundle's NixOS system {} is imported but not activated ({why}): `gapbundle activate {}` does it",
            escaped(&o.name),
            escaped(&head.manifest.name)
        ))
    };
    let now = match asked {
        _ if a.system_links.is_none() => {
            later("--activation none");
            None
        }
        Activation::Test if a.boot_only => {
            later("it asks for `test`, and --activation boot allows `boot` at most");
            None
        }
        Activation::Switch if a.boot_only => {
            progress.message(
                "the bundle's NixOS system asks for `switch`; --activation boot makes it the boot default only",
            );
            Some(Activation::Boot)
        }
        other => Some(other),
    };
    (Some(system(asked)), now.map(system))
}

/// Whether a target's plan failed because the target is out of reach (a service
/// down or refusing, a tool missing) rather than because of the bundle.
fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<ContainerdFailure>()
            || c.is::<RegistryFailure>()
            || c.is::<NixStoreFailure>()
            || c.is::<crate::io::process::ProcessError>()
    })
}

/// Whether the one receipt stored for this bundle is complete and says what
/// `receipt` says, but for when it was imported: a rerun then leaves it as it is.
fn same_receipt(mine: &[&Receipt], receipt: &Receipt) -> bool {
    match mine {
        [stored] if stored.complete => {
            let mut r = receipt.clone();
            r.imported = stored.imported;
            r.complete = true;
            **stored == r
        }
        _ => false,
    }
}

/// Seconds since the epoch, for the receipt.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The receipts of the bundle `name` (complete and pending) and those of every
/// other bundle.
fn split<'a>(stored: &'a [receipts::Stored], name: &str) -> (Vec<&'a Receipt>, Vec<&'a Receipt>) {
    stored
        .iter()
        .map(|s| &s.receipt)
        .partition(|r| r.name == name)
}

/// The targets this import speaks for under its flags, each kind the bundle could
/// carry whether or not this version has objects of it (a version without Nix
/// paths still means the earlier one's GC roots go), as receipt section ids.
fn coverage(a: &ImportSettings, head: &Head) -> Result<BTreeSet<String>, Failure> {
    let mut ids = BTreeSet::new();
    if let Some(dest) = &a.oci.images {
        let s = match dest {
            ImageDest::Registry(push) => Section::Registry {
                host: import::push::fleet_host(&push.host),
                images: Default::default(),
            },
            ImageDest::Staged => Section::Staged {
                archive: import::receipt_path(&import::k3s::StagedImages::path_for(
                    &a.oci.k3s_root,
                    head,
                )?),
                images: Vec::new(),
            },
            ImageDest::Containerd {
                socket, namespace, ..
            } => Section::Containerd {
                socket: import::receipt_path(socket),
                namespace: namespace.clone(),
                images: Vec::new(),
            },
        };
        ids.insert(s.id());
    }
    if let Some(nix) = &a.nix {
        let s = Section::Nix {
            store: import::nix::store_receipt_id(nix.store.as_deref())?,
            paths: Vec::new(),
            gc_roots: Vec::new(),
        };
        ids.insert(s.id());
    }
    if let Some(dest) = &a.oci.manifests {
        let s = match dest {
            ManifestDest::Apply(kubeconfig) => Section::Applied {
                kubeconfig: kubeconfig.as_deref().map(import::receipt_path),
                files: Vec::new(),
            },
            ManifestDest::Folder => Section::Manifests {
                folder: import::receipt_path(&import::k3s::Manifests::folder(
                    &a.oci.k3s_root,
                    head,
                )?),
                files: Vec::new(),
            },
        };
        ids.insert(s.id());
    }
    if let Some(root) = &a.files_root {
        let s = Section::Files {
            root: import::receipt_path(root),
            files: Vec::new(),
        };
        ids.insert(s.id());
    }
    Ok(ids)
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
    early: Option<import::nix::Early>,
) -> Result<Vec<Box<dyn Target>>, Failure> {
    let mut v: Vec<Box<dyn Target>> = Vec::new();
    if let Some(nix) = &a.nix {
        v.extend(import::nix::target(
            nix,
            head,
            trust.signers(),
            source,
            early,
        )?);
    }
    v.extend(import::oci::targets(&a.oci, head, source)?);
    if let Some(root) = &a.files_root {
        v.extend(import::files::target(head, root)?);
    }
    Ok(v)
}

fn report_plan(
    head: &Head,
    targets: &[Box<dyn Target>],
    plans: &[import::TargetPlan],
    retire: &[Retire],
    activation: Option<&import::activate::ActivationPlan>,
    out: &OutputArgs,
) {
    let would: Vec<String> = retire.iter().map(|r| r.to_string()).collect();
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
            would_retire: would,
            system: activation.cloned(),
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
        if let Some(why) = &p.unreachable {
            say!("    not reachable, so what it holds was not checked: planned as if it held none of the bundle ({why})");
        }
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
    for w in &would {
        say!("  would {}", escaped(w));
    }
    if let Some(p) = activation {
        super::activate::say_plan(p, true);
    }
}
