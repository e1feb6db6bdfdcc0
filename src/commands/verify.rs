//! `gapbundle verify`: the signature first, then every byte.
//!
//! The signature is checked before a single blob is hashed so that an untrusted file
//! is rejected at once and never costs the operator a 20-minute read. A file on disk is
//! hashed by several threads at positions the manifest gives; stdin (`-`) is read in
//! one pass, which is also what an import over a pipe does.

use std::io::Read;

use super::report::{DeltaSummary, ExpectedBlob, VerifyDelta, VerifyReport};
use super::settings::{TrustSettings, VerifySettings};
use super::{print_json, Failure};
use crate::bundle::delta::check_full;
use crate::bundle::keys::PublicKey;
use crate::bundle::manifest::{BlobEntry, Manifest};
use crate::bundle::reader::{
    read_head, verify_parallel, verify_stream, Entry, EntrySink, Head, RangeReader, ReadAt,
};
use crate::bundle::signature::TrustError;
use crate::bundle::Digest;
use crate::cli::{OutputArgs, VerifyArgs};
use crate::error::BundleFailure;
use crate::io::keys::load_public_keys;
use crate::io::source::BundleSource;
use crate::progress::{human_bytes, Progress};
use crate::text::escaped;

/// Outcome of the trust check.
pub enum Trust {
    /// Signed by these trusted keys.
    Signed(Vec<PublicKey>),
    /// Accepted without a trusted signature (`--allow-unsigned`).
    Unchecked,
}

impl Trust {
    /// The trusted keys that signed (none when unchecked).
    pub fn signers(&self) -> &[PublicKey] {
        match self {
            Trust::Signed(keys) => keys,
            Trust::Unchecked => &[],
        }
    }

    /// Their names.
    pub fn signer_names(&self) -> Vec<String> {
        self.signers()
            .iter()
            .map(|k| k.name().to_string())
            .collect()
    }
}

/// Decides trust for a head; shared with import.
pub fn check_trust(head: &Head, t: &TrustSettings, progress: &Progress) -> Result<Trust, Failure> {
    let keys = load_public_keys(&t.keys, |w| progress.warn(w))?;
    match head.envelope.check(&head.digest, &keys, t.threshold) {
        Ok(signers) => Ok(Trust::Signed(signers)),
        Err(TrustError::Unsigned | TrustError::NoTrustedKeys | TrustError::NotEnough { .. })
            if t.allow_unsigned =>
        {
            progress.warn(
                "the signature was not checked (--allow-unsigned); only digests are verified",
            );
            Ok(Trust::Unchecked)
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs verify.
pub fn run(a: VerifyArgs, out: &OutputArgs) -> Result<(), Failure> {
    let a = VerifySettings::resolve(a);
    let progress = Progress::new(out.quiet || out.json);
    let source = BundleSource::open(&a.bundle)?;
    source.report_to(&progress);
    let mut r = source.reader()?;
    let head = read_head(&mut r)?;
    let trust = check_trust(&head, &a.trust, &progress)?;
    let bar = progress.bar("bundle data", head.manifest.data_len());
    let mut full_head = FullHead::new(&head);
    match source.random_access() {
        Some(ra) => {
            verify_parallel(ra, &head, a.threads, &|n| bar.inc(n))?;
            full_head.read(ra, &head)?;
        }
        None => verify_stream(&mut r, &head, &mut full_head, |n| bar.inc(n))?,
    }
    bar.clear();
    let full = full_head.check(&head)?;
    let m = &head.manifest;
    let signers = trust.signer_names();
    if out.json {
        print_json(&VerifyReport {
            ok: true,
            digest: head.digest.to_string(),
            name: m.name.clone(),
            version: m.version.clone(),
            signers: signers.clone(),
            signature_checked: matches!(trust, Trust::Signed(_)),
            objects: m.objects.len(),
            blobs: m.blobs.len(),
            bytes: head.file_len(),
            delta: delta_report(&head, full.as_ref()),
        });
    } else if !out.quiet {
        let who = match trust {
            Trust::Signed(_) => format!("signed by {}", escaped(&signers.join(", "))),
            Trust::Unchecked => "signature NOT checked".into(),
        };
        say!(
            "OK {} {} ({}): {who}; {} objects, {} blobs, {} verified",
            escaped(&m.name),
            escaped(&m.version),
            head.digest,
            m.objects.len(),
            m.blobs.len(),
            human_bytes(head.file_len())
        );
        if let (Some(d), Some(full)) = (&m.delta, &full) {
            let expected = m.expected();
            say!(
                "delta of the full bundle {full}: its head checked; expects {} blobs ({}) on the target:",
                expected.len(),
                human_bytes(expected.iter().map(|(b, _)| b.size).sum())
            );
            let unstored = m.blobs.iter().filter(|b| b.offset.is_none());
            let with_base: Vec<(&BlobEntry, u32)> =
                unstored.zip(d.expected.iter().copied()).collect();
            for (i, base) in d.against.iter().enumerate() {
                say!("  from {base}:");
                for (b, _) in with_base.iter().filter(|(_, x)| *x as usize == i) {
                    say!(
                        "    {}  {:>10}  {}",
                        b.digest,
                        human_bytes(b.size),
                        users(m, b)
                    );
                }
            }
        }
    }
    Ok(())
}

/// `kind name` of the objects that need a blob.
fn users(m: &Manifest, b: &BlobEntry) -> String {
    m.users_of(&b.digest)
        .iter()
        .map(|o| format!("{} {}", o.kind, crate::text::escaped(&o.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `verify --json`'s `delta`: what [`DeltaSummary`] says, the full bundle's digest
/// as checked, and every blob the delta expects on the target.
fn delta_report(head: &Head, full: Option<&Digest>) -> Option<VerifyDelta> {
    let m = &head.manifest;
    Some(VerifyDelta {
        summary: DeltaSummary::of(m)?,
        full_checked: full?.to_string(),
        expected: m
            .expected()
            .iter()
            .map(|(b, base)| ExpectedBlob {
                digest: b.digest.to_string(),
                size: b.size,
                media_type: b.media_type.clone(),
                base: base.digest.to_string(),
                needed_by: users(m, b),
            })
            .collect(),
    })
}

/// The two blobs of a delta that carry the full bundle's head, collected while the
/// bundle is verified (they are small: at most a manifest's size each).
struct FullHead {
    want: [Option<Digest>; 2],
    got: [Vec<u8>; 2],
}

impl FullHead {
    fn new(head: &Head) -> Self {
        let want = match &head.manifest.delta {
            Some(d) => [Some(d.full.manifest), Some(d.full.signatures)],
            None => [None, None],
        };
        FullHead {
            want,
            got: [Vec::new(), Vec::new()],
        }
    }

    /// From a file: the blobs at their offsets (already verified).
    fn read(&mut self, ra: &dyn ReadAt, head: &Head) -> Result<(), Failure> {
        for i in 0..2 {
            if self.want[i].is_none() {
                continue;
            }
            let b = &head.manifest.blobs[i];
            let pos = head.blob_position(b).expect("validated: stored");
            let mut bytes = vec![0u8; b.size as usize];
            RangeReader::new(ra, pos, b.size).read_exact(&mut bytes)?;
            self.got[i] = bytes;
        }
        Ok(())
    }

    /// For a delta: the full bundle's head, checked against the delta's manifest;
    /// the full bundle's digest.
    fn check(&self, head: &Head) -> Result<Option<Digest>, Failure> {
        if self.want[0].is_none() {
            return Ok(None);
        }
        if Digest::of(&self.got[0]) != head.manifest.blobs[0].digest
            || Digest::of(&self.got[1]) != head.manifest.blobs[1].digest
        {
            return Err(BundleFailure(
                "the full bundle's head blobs changed while the delta was verified: copy it again"
                    .into(),
            )
            .into());
        }
        let (_, env) = check_full(&head.manifest_bytes, &self.got[0], &self.got[1])
            .map_err(|e| BundleFailure(e.to_string()))?;
        Ok(Some(env.manifest_digest))
    }
}

impl EntrySink for FullHead {
    fn consume(&mut self, entry: &Entry, data: &mut dyn std::io::Read) -> std::io::Result<()> {
        if let Entry::Blob(b) = entry {
            if let Some(i) = self.want.iter().position(|w| *w == Some(b.digest)) {
                self.got[i].clear();
                data.read_to_end(&mut self.got[i])?;
            }
        }
        Ok(())
    }
    fn verified(&mut self, _: &Entry) -> std::io::Result<()> {
        Ok(())
    }
}
