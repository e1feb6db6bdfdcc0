//! `gapbundle sbom BUNDLE --format cyclonedx|spdx [-o FILE]`: a software bill of
//! materials of a bundle, from its head alone (the writers are [`crate::sbom`]).
//!
//! The head is all it reads, so it takes a delta, the first volume of a set, or a
//! bundle whose blobs are still being copied, and is instant on any size. It checks
//! no signature: the document lists the keys the bundle claims, and says so.

use super::report::SbomReport;
use super::settings::SbomSettings;
use super::{print_json, say_bytes, Failure};
use crate::bundle::digest::Digest;
use crate::bundle::reader::read_head;
use crate::cli::{OutputArgs, SbomArgs};
use crate::io::atomic;
use crate::io::source::BundleSource;
use crate::sbom::{render, Subject};

/// The version this program writes into the documents it makes.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs sbom.
pub fn run(a: SbomArgs, out: &OutputArgs) -> Result<(), Failure> {
    let s = SbomSettings::resolve(a);
    let source = BundleSource::open_head(&s.bundle)?;
    let head = read_head(&mut source.reader()?)?;
    let subject = Subject::Bundle {
        digest: head.digest,
        signers: head.envelope.claimed_signers(),
    };
    let doc = render(&head.manifest, &subject, s.format, TOOL_VERSION);
    let Some(path) = &s.output else {
        say_bytes(&doc);
        return Ok(());
    };
    atomic::write(path, &doc).map_err(|e| {
        anyhow::Error::new(e).context(format!("writing the SBOM to {}", path.display()))
    })?;
    let m = &head.manifest;
    if out.json {
        print_json(&SbomReport {
            ok: true,
            output: path.clone(),
            format: s.format.as_str().into(),
            media_type: s.format.media_type().into(),
            sha256: Digest::of(&doc).to_string(),
            size: doc.len() as u64,
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
