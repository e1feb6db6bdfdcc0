//! `gapbundle sbom BUNDLE --format cyclonedx|spdx [-o FILE]`: a software bill of
//! materials of a bundle, from its head alone (the writers are [`crate::sbom`]).
//!
//! The head is all it reads, so it takes a delta, the first volume of a set, or a
//! bundle whose blobs are still being copied, and is instant on any size. It checks
//! no signature: the document lists the keys the bundle claims, and says so.

use super::report::SbomReport;
use super::settings::SbomSettings;
use super::{print_json, say_with, Failure};
use crate::bundle::canonical::CanonicalError;
use crate::bundle::digest::HashingWriter;
use crate::bundle::reader::read_head;
use crate::cli::{OutputArgs, SbomArgs};
use crate::io::atomic;
use crate::io::source::BundleSource;
use crate::sbom::{self, Subject};

/// The version this program writes into the documents it makes.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs sbom.
pub fn run(a: SbomArgs, out: &OutputArgs) -> Result<(), Failure> {
    let s = SbomSettings::resolve(a);
    let source = BundleSource::open_head(&s.bundle)?;
    let mut head = read_head(&mut source.reader()?)?;
    let subject = Subject::Bundle {
        digest: head.digest,
        signers: head.envelope.claimed_signers(),
    };
    // Only the typed manifest is needed from here on.
    drop(std::mem::take(&mut head.manifest_bytes));
    let write = |out: &mut dyn std::io::Write| {
        sbom::write(&head.manifest, &subject, s.format, TOOL_VERSION, out).map_err(|e| match e {
            CanonicalError::Json(e) if e.is_io() => std::io::Error::from(e),
            e => std::io::Error::other(format!("the {} writer: {e}", s.format.as_str())),
        })
    };
    let Some(path) = &s.output else {
        say_with(write);
        return Ok(());
    };
    // Written as it is made, hashed and counted on its way for the report.
    let written = atomic::AtomicFile::create(path).and_then(|f| {
        let mut f = HashingWriter::new(f);
        write(&mut f)?;
        let (f, digest, size) = f.finish();
        f.commit()?;
        Ok((digest, size))
    });
    let (sha256, size) = written.map_err(|e| {
        anyhow::Error::new(e).context(format!("writing the SBOM to {}", path.display()))
    })?;
    let m = &head.manifest;
    if out.json {
        print_json(&SbomReport {
            ok: true,
            output: path.clone(),
            format: s.format.as_str().into(),
            media_type: s.format.media_type().into(),
            sha256: sha256.to_string(),
            size,
            name: m.name.clone(),
            version: m.version.clone(),
            digest: head.digest.to_string(),
            components: m.objects.len(),
            signature_checked: false,
        });
    } else if !out.quiet {
        say!(
            "wrote {} SBOM of {} {} ({}) to {}",
            s.format.as_str(),
            crate::text::escaped(&m.name),
            crate::text::escaped(&m.version),
            head.digest.short(),
            path.display()
        );
    }
    Ok(())
}
