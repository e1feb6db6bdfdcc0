//! `gapbundle verify`: the signature first, then every byte.
//!
//! The signature is checked before a single blob is hashed so that an untrusted file
//! is rejected at once and never costs the operator a 20-minute read. A file on disk is
//! hashed by several threads at positions the manifest gives; stdin (`-`) is read in
//! one pass, which is also what an import over a pipe does.

use serde_json::json;

use super::{print_json, Failure};
use crate::bundle::keys::PublicKey;
use crate::bundle::reader::{read_head, verify_parallel, verify_stream, Head, NoSink};
use crate::bundle::signature::TrustError;
use crate::cli::{OutputArgs, TrustArgs, VerifyArgs};
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
pub fn check_trust(head: &Head, t: &TrustArgs, progress: &Progress) -> Result<Trust, Failure> {
    let keys = load_public_keys(&t.trust, |w| progress.warn(w))?;
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
    let progress = Progress::new(out.quiet || out.json);
    let jobs = a
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let source = BundleSource::open(&a.bundle)?;
    let mut r = source.reader()?;
    let head = read_head(&mut r)?;
    let trust = check_trust(&head, &a.trust, &progress)?;
    let bar = progress.bar("bundle data", head.manifest.data_len());
    match source.random_access() {
        Some(ra) => verify_parallel(ra, &head, jobs, &|n| bar.inc(n))?,
        None => verify_stream(&mut r, &head, &mut NoSink, |n| bar.inc(n))?,
    }
    bar.clear();
    let m = &head.manifest;
    let signers = trust.signer_names();
    if out.json {
        print_json(&json!({
            "ok": true, "digest": head.digest.to_string(), "name": m.name, "version": m.version,
            "signers": signers, "signatureChecked": matches!(trust, Trust::Signed(_)),
            "objects": m.objects.len(), "blobs": m.blobs.len(), "bytes": head.file_len(),
        }));
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
    }
    Ok(())
}
