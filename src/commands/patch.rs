//! `gapbundle patch BASE... DELTA -o FULL`: the full bundle from a delta and the
//! bundle(s) it was made against, byte for byte what a full create of the same spec
//! and lock writes, and with the release signatures valid on it, without any key.
//!
//! The delta carries the full bundle's manifest and signature envelope as its first
//! two blobs (format.md section 10): those are checked against the delta's own
//! manifest ([`check_full`]) and written as the full bundle's head; then every blob
//! the full manifest lists is copied from the delta when it stores it, else from a
//! base that does, hashed on the way and compared with its digest, to the offset the
//! full manifest gives. Blobs are independent ranges of the output, so several are
//! copied at once. The output appears atomically (temporary name, then rename).
//! Neither the delta's signature nor a base's is needed: the full bundle's own
//! signatures are what `verify` and `import` check afterwards.

use fs_err::os::unix::fs::FileExt;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::report::PatchReport;
use super::settings::PatchSettings;
use super::{print_json, Failure};
use crate::bundle::delta::check_full;
use crate::bundle::digest::Hasher;
use crate::bundle::layout::{self, END_LEN};
use crate::bundle::manifest::BlobEntry;
use crate::bundle::reader::{damage, read_head, Entry, Head, RangeReader, ReadAt};
use crate::bundle::signature::Envelope;
use crate::bundle::writer::{write_prefix, Plan};
use crate::cli::{OutputArgs, PatchArgs};
use crate::error::{BundleFailure, DeltaFailure, InputFailure};
use crate::io::atomic::AtomicFile;
use crate::io::source::BundleSource;
use crate::progress::{human_bytes, Progress};

/// Most blobs a failed patch names one by one.
const MISSING_SHOWN: usize = 50;

/// One input: a base or the delta.
struct Input {
    path: PathBuf,
    source: BundleSource,
    head: Head,
}

impl Input {
    fn open(path: &Path) -> Result<Input, Failure> {
        let source = BundleSource::open(path)?;
        if source.random_access().is_none() {
            return Err(InputFailure(format!(
                "{} is not a regular file: patch reads its blobs at their offsets, give the bundle file",
                path.display()
            ))
            .into());
        }
        let head = read_head(&mut source.reader()?)
            .with_context(|| format!("reading the head of {}", path.display()))?;
        Ok(Input {
            path: path.to_path_buf(),
            source,
            head,
        })
    }

    fn ra(&self) -> &dyn ReadAt {
        self.source.random_access().expect("checked in open")
    }

    /// A small stored blob's bytes, checked against its digest.
    fn read_small(&self, b: &BlobEntry) -> Result<Vec<u8>, Failure> {
        let pos = self.head.blob_position(b).ok_or_else(|| {
            BundleFailure(format!(
                "{}: blob {} is not stored",
                self.path.display(),
                b.digest
            ))
        })?;
        let mut bytes = vec![0u8; b.size as usize];
        RangeReader::new(self.ra(), pos, b.size)
            .read_exact(&mut bytes)
            .with_context(|| format!("reading blob {} of {}", b.digest, self.path.display()))?;
        let found = crate::bundle::Digest::of(&bytes);
        if found != b.digest {
            return Err(anyhow::Error::new(damage(
                &self.head,
                &Entry::Blob(b),
                Some(found),
                b.size,
            ))
            .context(format!("in {}", self.path.display()))
            .into());
        }
        Ok(bytes)
    }
}

/// Runs patch.
pub fn run(a: PatchArgs, out: &OutputArgs) -> Result<(), Failure> {
    let a = PatchSettings::resolve(a);
    let progress = Progress::new(out.quiet || out.json);
    let (delta_path, base_paths) = (&a.delta, &a.bases);
    let delta = Input::open(delta_path)?;
    let Some(d) = &delta.head.manifest.delta else {
        return Err(InputFailure(format!(
            "{} is not a delta bundle: give the base bundle(s) first and the delta last",
            delta_path.display()
        ))
        .into());
    };
    let bases = base_paths
        .iter()
        .map(|p| Input::open(p))
        .collect::<Result<Vec<_>, _>>()?;

    // The full bundle's head, as the delta carries it, checked against the delta.
    let dm = &delta.head.manifest;
    let full_bytes = delta.read_small(&dm.blobs[0])?;
    let envelope_bytes = delta.read_small(&dm.blobs[1])?;
    let (_, envelope) = check_full(&delta.head.manifest_bytes, &full_bytes, &envelope_bytes)
        .map_err(|e| BundleFailure(format!("{}: {e}", delta_path.display())))?;
    let mut files = Vec::new();
    for f in &dm.files {
        let mut bytes = vec![0u8; f.size as usize];
        RangeReader::new(delta.ra(), delta.head.data_start + f.offset, f.size)
            .read_exact(&mut bytes)
            .with_context(|| format!("reading {} of {}", f.path, delta_path.display()))?;
        files.push(bytes);
    }
    let [oci_layout, index_json]: [Vec<u8>; 2] = files.try_into().expect("two files");
    let plan = Plan::from_parts(full_bytes, oci_layout, index_json)
        .map_err(|e| BundleFailure(format!("{}: {e}", delta_path.display())))?;
    if envelope.to_canonical() != envelope_bytes {
        return Err(BundleFailure(format!(
            "{}: the full bundle's signatures are not in canonical form",
            delta_path.display()
        ))
        .into());
    }

    // Where each blob of the full bundle comes from: the delta, else a base.
    let inputs: Vec<&Input> = std::iter::once(&delta).chain(&bases).collect();
    // (input, position, size there): looked up per blob, never searched for.
    let mut stored: HashMap<crate::bundle::Digest, (usize, u64, u64)> = HashMap::new();
    for (i, input) in inputs.iter().enumerate().rev() {
        for b in &input.head.manifest.blobs {
            if let Some(pos) = input.head.blob_position(b) {
                stored.insert(b.digest, (i, pos, b.size));
            }
        }
    }
    let expected: HashMap<_, _> = dm
        .expected()
        .into_iter()
        .map(|(b, base)| (b.digest, base))
        .collect();
    let blobs: Vec<&BlobEntry> = plan.stored_blobs().collect();
    let mut missing = Vec::new();
    for b in &blobs {
        match stored.get(&b.digest) {
            Some((_, _, size)) if *size == b.size => {}
            _ => missing.push(*b),
        }
    }
    if !missing.is_empty() {
        let mut lines: Vec<String> = missing
            .iter()
            .take(MISSING_SHOWN)
            .map(|b| {
                let held = expected
                    .get(&b.digest)
                    .map_or("no base".to_string(), |base| base.to_string());
                format!("  {} ({}): held by {held}", b.digest, human_bytes(b.size))
            })
            .collect();
        if missing.len() > MISSING_SHOWN {
            lines.push(format!("  … and {} more", missing.len() - MISSING_SHOWN));
        }
        let against: Vec<String> = d.against.iter().map(|b| b.to_string()).collect();
        return Err(DeltaFailure(format!(
            "{} is a delta against {}; neither it nor the base bundle(s) given store {} of the blobs the full bundle needs:\n{}\ngive the bundle(s) that hold them before the delta (an inventory cannot be patched against: import the delta instead)",
            delta_path.display(),
            against.join(", "),
            missing.len(),
            lines.join("\n")
        ))
        .into());
    }

    let total = plan.file_len(&envelope);
    let bar = progress.bar(format!("bundle {}", a.output.display()), total);
    let mut file = AtomicFile::create(&a.output)?;
    let copy = |b: &BlobEntry,
                buf: &mut Vec<u8>,
                sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>|
     -> Result<(), Failure> {
        let (i, pos, _) = stored[&b.digest];
        let input = inputs[i];
        let mut r = RangeReader::new(input.ra(), pos, b.size);
        let mut h = Hasher::new();
        loop {
            let n = r.read(buf).with_context(|| {
                format!("reading blob {} of {}", b.digest, input.path.display())
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            sink(&buf[..n]).with_context(|| format!("writing {}", a.output.display()))?;
            bar.inc(n as u64);
        }
        let (found, size) = h.finish();
        if found != b.digest || size != b.size {
            return Err(anyhow::Error::new(damage(
                &input.head,
                &Entry::Blob(b),
                Some(found),
                size,
            ))
            .context(format!("in {}", input.path.display()))
            .into());
        }
        Ok(())
    };
    match file.temp_path().map(Path::to_path_buf) {
        Some(tmp) => {
            let f = fs_err::OpenOptions::new().write(true).open(&tmp)?;
            f.set_len(total)?;
            let mut prefix = Vec::new();
            write_prefix(&mut prefix, &plan, &envelope)?;
            f.write_all_at(&prefix, 0)?;
            let data_start = plan.data_start(&envelope);
            let jobs = a.threads;
            crate::pool::map(
                jobs,
                &blobs,
                || Ok::<_, Failure>(vec![0u8; 1 << 20]),
                |buf, b| {
                    let at = data_start + b.offset.expect("a full bundle stores every blob");
                    f.write_all_at(&plan.blob_header(b)?, at - 512)?;
                    let mut pos = at;
                    copy(b, buf, &mut |chunk| {
                        f.write_all_at(chunk, pos)?;
                        pos += chunk.len() as u64;
                        Ok(())
                    })
                },
            )?;
        }
        None => {
            // Not a regular file (a pipe): in order, one blob after the other.
            let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut file);
            write_prefix(&mut w, &plan, &envelope)?;
            let mut buf = vec![0u8; 1 << 20];
            for b in &blobs {
                w.write_all(&plan.blob_header(b)?)?;
                copy(b, &mut buf, &mut |chunk| w.write_all(chunk))?;
                layout::write_padding(&mut w, b.size)?;
            }
            w.write_all(&[0u8; END_LEN as usize])?;
            w.flush()?;
        }
    }
    file.commit()
        .with_context(|| format!("writing {}", a.output.display()))?;
    bar.clear();
    let from_delta = blobs.iter().filter(|b| stored[&b.digest].0 == 0).count();
    if out.json {
        print_json(&PatchReport {
            bundle: a.output.clone(),
            digest: plan.digest.to_string(),
            size: total,
            name: plan.manifest.name.clone(),
            version: plan.manifest.version.clone(),
            delta: delta_path.clone(),
            delta_digest: delta.head.digest.to_string(),
            bases: base_paths.clone(),
            blobs_from_delta: from_delta,
            blobs_from_bases: blobs.len() - from_delta,
            signers: envelope_signers(&envelope),
        });
    } else if !out.quiet {
        say!(
            "wrote {} ({}): {} {}, {} blobs from the delta, {} from the base(s)",
            a.output.display(),
            human_bytes(total),
            plan.manifest.name,
            plan.manifest.version,
            from_delta,
            blobs.len() - from_delta
        );
        say!("digest {}", plan.digest);
    }
    Ok(())
}

/// The key names that claim to have signed (checked by `verify`, not here).
fn envelope_signers(e: &Envelope) -> Vec<String> {
    e.signatures
        .iter()
        .map(|s| s.public_key.split(':').next().unwrap_or("").to_string())
        .collect()
}
