//! `gapbundle inspect`: what a bundle holds, from its head alone, so it is instant
//! even on a 50 GB bundle on a slow USB disk.

use std::collections::{BTreeSet, HashMap};

use serde_json::json;

use super::{print_json, Failure};
use crate::bundle::manifest::{Kind, Manifest};
use crate::bundle::reader::read_head;
use crate::cli::{InspectArgs, OutputArgs};
use crate::io::source::BundleSource;
use crate::progress::human_bytes;
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

/// What a delta is against and expects on the target (`null` for a full bundle),
/// for `inspect --json` and `verify --json`.
pub fn delta_json(m: &Manifest) -> serde_json::Value {
    let Some(d) = &m.delta else {
        return serde_json::Value::Null;
    };
    let expected = m.expected();
    json!({
        "against": d.against,
        "fullDigest": d.full.manifest.to_string(),
        "expectedBlobs": expected.len(),
        "expectedBytes": expected.iter().map(|(b, _)| b.size).sum::<u64>(),
    })
}

/// Runs inspect.
pub fn run(a: InspectArgs, out: &OutputArgs) -> Result<(), Failure> {
    // The head is in the first volume of a set: the others are not needed.
    let source = BundleSource::open_head(&a.bundle)?;
    let head = read_head(&mut source.reader()?)?;
    let m = &head.manifest;
    let totals = Totals::of(m);
    let signers: Vec<String> = head.envelope.claimed_signers();
    let images: Vec<serde_json::Value> = m
        .images()
        .map(|(o, meta)| {
            json!({
                "ref": o.name, "digest": o.digest.to_string(), "mediaType": o.media_type,
                "platforms": meta.platforms,
                "size": o.size,
                "wantedBy": meta.wanted_by(),
            })
        })
        .collect();
    let files: Vec<serde_json::Value> = m
        .files()
        .map(|(o, meta)| {
            json!({
                "target": o.name, "mode": meta.mode, "digest": o.digest.to_string(),
                "size": o.size, "source": meta.source,
            })
        })
        .collect();
    if out.json {
        print_json(&json!({
            "name": m.name, "version": m.version, "digest": head.digest.to_string(),
            "formatVersion": m.format_version, "generator": m.generator,
            "created": rfc3339(m.created), "platforms": m.platforms,
            "signers": signers, "images": images, "files": files,
            "objects": m.objects.iter().map(|o| json!({"kind": o.kind.as_str(), "name": o.name, "digest": o.digest.to_string(), "size": o.size})).collect::<Vec<_>>(),
            "totals": {"objects": totals.objects, "blobs": totals.blobs, "storedBytes": totals.stored_bytes,
                       "logicalBytes": totals.logical_bytes, "savedBytes": totals.saved(),
                       "fileBytes": head.file_len()},
            "delta": delta_json(m),
        }));
        return Ok(());
    }
    say!("bundle    {} {}", m.name, m.version);
    say!("digest    {}", head.digest);
    say!(
        "format    {} ({}), created {}",
        m.format_version,
        m.generator,
        rfc3339(m.created)
    );
    if signers.is_empty() {
        say!("signers   none (unsigned)");
    } else {
        for (i, s) in signers.iter().enumerate() {
            say!("{}{s}", if i == 0 { "signers   " } else { "          " });
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
        let w = img.iter().map(|(o, _)| o.name.len()).max().unwrap_or(0);
        for (o, meta) in img {
            say!(
                "  {:w$}  {}  {:>10}  {}",
                o.name,
                o.digest.short(),
                human_bytes(o.size),
                meta.platforms.join(",")
            );
            // Which rendered manifests asked for the image (`chart:web Deployment apps/web`).
            for who in meta.wanted_by() {
                say!("    wanted by {who}");
            }
        }
    }
    for o in m
        .objects
        .iter()
        .filter(|o| o.kind != Kind::Image && o.kind != Kind::File)
    {
        say!("{:<9} {}  {}", o.kind.as_str(), o.name, human_bytes(o.size));
    }
    let file_list: Vec<_> = m.files().collect();
    if !file_list.is_empty() {
        say!("files");
        let w = file_list
            .iter()
            .map(|(o, _)| o.name.len())
            .max()
            .unwrap_or(0);
        for (o, meta) in file_list {
            say!(
                "  {:w$}  {}  {}  {:>10}  {}",
                o.name,
                meta.mode,
                o.digest.short(),
                human_bytes(o.size),
                meta.source
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
