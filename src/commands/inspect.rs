//! `gapbundle inspect`: what a bundle holds, from its head alone, so it is instant
//! even on a 50 GB bundle on a slow USB disk.
//!
//! Nothing it shows has been verified (inspect checks no signature), so every
//! text from the bundle is printed through [`escaped`]; `--json` needs no more
//! than serde's string escaping.

use std::collections::{BTreeSet, HashMap};

use super::report::{
    DeltaSummary, InspectFile, InspectImage, InspectObject, InspectReferrer, InspectReport,
    InspectSystem, InspectTotals,
};
use super::{print_json, Failure};
use crate::bundle::manifest::{Kind, Manifest};
use crate::bundle::reader::read_head;
use crate::bundle::referrers::of_image;
use crate::cli::{InspectArgs, OutputArgs};
use crate::io::source::BundleSource;
use crate::progress::human_bytes;
use crate::text::escaped;
use crate::time::rfc3339;

/// Totals shown by inspect and create.
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    /// Objects.
    pub objects: usize,
    /// Stored blobs.
    pub blobs: usize,
    /// Bytes of stored blobs.
    pub stored_bytes: u64,
    /// Bytes the objects would take if nothing were shared.
    pub logical_bytes: u64,
}

impl Totals {
    /// Computes totals from a manifest.
    pub fn of(m: &Manifest) -> Self {
        let sizes: HashMap<_, _> = m.blobs.iter().map(|b| (b.digest, b.size)).collect();
        let logical_bytes = m
            .objects
            .iter()
            .map(|o| {
                o.blobs
                    .iter()
                    .collect::<BTreeSet<_>>()
                    .iter()
                    .map(|d| sizes.get(d).copied().unwrap_or(0))
                    .sum::<u64>()
            })
            .sum();
        Totals {
            objects: m.objects.len(),
            blobs: m.blobs.iter().filter(|b| b.offset.is_some()).count(),
            stored_bytes: m
                .blobs
                .iter()
                .filter(|b| b.offset.is_some())
                .map(|b| b.size)
                .sum(),
            logical_bytes,
        }
    }
    /// Bytes saved by storing shared blobs once.
    pub fn saved(&self) -> u64 {
        self.logical_bytes.saturating_sub(self.stored_bytes)
    }
}

/// Runs inspect.
pub fn run(a: InspectArgs, out: &OutputArgs) -> Result<(), Failure> {
    // The head is in the first volume of a set: the others are not needed.
    let source = BundleSource::open_head(&a.bundle)?;
    let head = read_head(&mut source.reader()?)?;
    let m = &head.manifest;
    let totals = Totals::of(m);
    let signers: Vec<String> = head.envelope.claimed_signers();
    if out.json {
        let report = InspectReport {
            name: m.name.clone(),
            version: m.version.clone(),
            digest: head.digest.to_string(),
            format_version: m.format_version.clone(),
            generator: m.generator.clone(),
            created: rfc3339(m.created),
            platforms: m.platforms.clone(),
            signers,
            images: m
                .images()
                .map(|(o, meta)| InspectImage {
                    reference: o.name.clone(),
                    digest: o.digest.to_string(),
                    media_type: o.media_type.clone(),
                    platforms: meta.platforms.clone(),
                    size: o.size,
                    wanted_by: meta.wanted_by().to_vec(),
                    referrers: of_image(m, o)
                        .into_iter()
                        .map(|(r, rm)| InspectReferrer {
                            digest: r.digest.to_string(),
                            media_type: r.media_type.clone(),
                            artifact_type: rm.artifact_type.clone(),
                            tag: rm.tag.clone(),
                            size: r.size,
                        })
                        .collect(),
                })
                .collect(),
            files: m
                .files()
                .map(|(o, meta)| InspectFile {
                    target: o.name.clone(),
                    mode: meta.mode.clone(),
                    digest: o.digest.to_string(),
                    size: o.size,
                    source: meta.source.clone(),
                })
                .collect(),
            objects: m
                .objects
                .iter()
                .map(|o| InspectObject {
                    kind: o.kind.as_str().to_string(),
                    name: o.name.clone(),
                    digest: o.digest.to_string(),
                    size: o.size,
                })
                .collect(),
            totals: InspectTotals {
                objects: totals.objects,
                blobs: totals.blobs,
                stored_bytes: totals.stored_bytes,
                logical_bytes: totals.logical_bytes,
                saved_bytes: totals.saved(),
                file_bytes: head.file_len(),
            },
            delta: DeltaSummary::of(m),
            system: m.system().map(|(o, action)| InspectSystem {
                path: o.name.clone(),
                activate: action.to_string(),
            }),
        };
        // The report holds what it shows: the head (the manifest parsed and its
        // bytes) goes before the report's `Value` is made.
        drop(head);
        print_json(report);
        return Ok(());
    }
    say!("bundle    {} {}", escaped(&m.name), escaped(&m.version));
    say!("digest    {}", head.digest);
    say!(
        "format    {} ({}), created {}",
        escaped(&m.format_version),
        escaped(&m.generator),
        rfc3339(m.created)
    );
    if signers.is_empty() {
        say!("signers   none (unsigned)");
    } else {
        for (i, s) in signers.iter().enumerate() {
            say!(
                "{}{}",
                if i == 0 { "signers   " } else { "          " },
                escaped(s)
            );
        }
        say!("          (claimed; `gapbundle verify --trust KEY` checks them)");
    }
    if let Some(d) = &m.delta {
        let expected = m.expected();
        say!(
            "delta     expects {} blobs ({}) on the target; `gapbundle patch` rebuilds the full bundle {}",
            expected.len(),
            human_bytes(expected.iter().map(|(b, _)| b.size).sum()),
            d.full.manifest
        );
        for base in &d.against {
            say!(
                "  against {base}: {} blobs ({})",
                base.blobs,
                human_bytes(base.bytes)
            );
        }
    }
    let img: Vec<_> = m.images().collect();
    if !img.is_empty() {
        say!("images");
        let names: Vec<String> = img
            .iter()
            .map(|(o, _)| escaped(&o.name).into_owned())
            .collect();
        let w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        for ((o, meta), name) in img.into_iter().zip(&names) {
            say!(
                "  {:w$}  {}  {:>10}  {}",
                name,
                o.digest.short(),
                human_bytes(o.size),
                escaped(&meta.platforms.join(","))
            );
            // Which rendered manifests asked for the image (`chart:web Deployment apps/web`).
            for who in meta.wanted_by() {
                say!("    wanted by {}", escaped(who));
            }
            // What is attached to it: signatures, attestations, SBOMs.
            for (r, rm) in of_image(m, o) {
                say!(
                    "    referrer {}  {:>10}  {}{}",
                    r.digest.short(),
                    human_bytes(r.size),
                    escaped(rm.artifact_type.as_deref().unwrap_or(&r.media_type)),
                    rm.tag
                        .as_ref()
                        .map(|t| format!(" (tag {})", escaped(t)))
                        .unwrap_or_default()
                );
            }
        }
    }
    for o in m
        .objects
        .iter()
        .filter(|o| !matches!(o.kind, Kind::Image | Kind::File | Kind::Referrer))
    {
        say!(
            "{:<9} {}  {}",
            escaped(o.kind.as_str()),
            escaped(&o.name),
            human_bytes(o.size)
        );
    }
    if let Some((o, action)) = m.system() {
        say!(
            "system    {} (a NixOS system: import activates it with `{action}`)",
            escaped(&o.name)
        );
    }
    let file_list: Vec<_> = m.files().collect();
    if !file_list.is_empty() {
        say!("files");
        let names: Vec<String> = file_list
            .iter()
            .map(|(o, _)| escaped(&o.name).into_owned())
            .collect();
        let w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        for ((o, meta), name) in file_list.into_iter().zip(&names) {
            say!(
                "  {:w$}  {}  {}  {:>10}  {}",
                name,
                meta.mode,
                o.digest.short(),
                human_bytes(o.size),
                escaped(&meta.source)
            );
        }
    }
    say!(
        "totals    {} objects, {} blobs, {} stored, {} saved by storing shared blobs once, file {}",
        totals.objects,
        totals.blobs,
        human_bytes(totals.stored_bytes),
        human_bytes(totals.saved()),
        human_bytes(head.file_len())
    );
    Ok(())
}
