//! Blobs to targets: the offline side.
//!
//! An import is one pass over the bundle after the signature has been checked from
//! the head. Each target (a Nix store or binary cache, containerd, K3s's folders, a
//! registry) first says which blobs it still needs ([`Target::plan`], which is also
//! all `--dry-run` does), then receives those blobs' bytes in chunks while the
//! verifier hashes them, and may only make a blob visible in [`Target::commit`], which
//! is called after the blob's digest and size matched. Objects (store paths, image
//! records, manifests) are registered in [`Target::finish`], after every blob of the
//! bundle verified. A bundle damaged anywhere therefore registers nothing, and what
//! was committed before the damage was found is verified content-addressed data that
//! a rerun reuses: imports are idempotent and an interrupted one completes on rerun.
//!
//! The one import that reads no blob is a rerun whose every plan
//! [changes nothing](TargetPlan::changes_nothing): each target already holds, by
//! digest, everything the signed head names, so no byte of the bundle's data would
//! reach it, and `finish` only confirms from the head what is there (a GC root, a
//! path's signature from the head are all it may add).

pub mod activate;
pub mod containerd;
pub mod files;
pub mod fleet;
pub mod images;
pub mod k3s;
pub mod nix;
pub mod oci;
pub mod push;
pub mod receipts;
pub mod report;

use std::collections::BTreeSet;
use std::io::{self, Read};

use crate::bundle::manifest::BlobEntry;
use crate::bundle::reader::{Entry, EntrySink, Head};
use crate::bundle::Digest;
use crate::progress::Progress;

/// What a target would do with a bundle.
#[derive(Debug, Default, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetPlan {
    /// Blobs the target needs to receive.
    #[serde(skip)]
    pub needed: BTreeSet<Digest>,
    /// Objects (by name) that are new on the target.
    pub new_objects: Vec<String>,
    /// Objects already present (skipped).
    pub present_objects: Vec<String>,
    /// Objects an earlier import of this bundle left on the target that this version
    /// no longer has; they are removed after the new ones are in place (so far only
    /// manifest files in K3s's auto-deploy folder).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects_to_remove: Vec<String>,
    /// Bytes the target will write.
    pub bytes_to_write: u64,
    /// Only in a dry run: the target could not be reached (why), so what it holds
    /// was not checked and the plan is as if it held none of the bundle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
    /// Blobs the target needs that this delta bundle does not store and the target
    /// does not hold (format.md section 10.5). An import refuses the bundle before
    /// anything is written when any target has one; always empty for a full bundle.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub missing: BTreeSet<Digest>,
}

impl TargetPlan {
    /// Whether the target already holds everything the bundle would give it: no
    /// blob to receive, nothing new, missing or to remove. An import whose every
    /// target says so is a rerun and need not read the bundle's data.
    pub fn changes_nothing(&self) -> bool {
        self.needed.is_empty()
            && self.new_objects.is_empty()
            && self.missing.is_empty()
            && self.objects_to_remove.is_empty()
    }
}

/// One destination of an import.
pub trait Target {
    /// What and where, for messages (`nix store /mnt/target`).
    fn describe(&self) -> String;
    /// Decides what is new; must not change the target. For a delta bundle it also
    /// checks that the target holds each blob it needs and the bundle does not store
    /// (containerd content by digest and size, Nix paths valid with the right NAR
    /// hash, registry blobs by HEAD) and lists the others in
    /// [`TargetPlan::missing`]; a target that must receive every blob from the
    /// bundle refuses a delta that leaves one out ([`crate::error::DeltaFailure`]).
    fn plan(&mut self, head: &Head) -> anyhow::Result<TargetPlan>;
    /// For a dry run when [`Target::plan`] could not reach the target (a service
    /// that is down, a tool that is missing): the plan as if the target held none
    /// of the bundle, with the sizes a real plan would give then, or what the
    /// import would refuse then that the target need not be reached to know (a
    /// Nix path's signature). Targets that never need a service keep the default,
    /// which is never called for them.
    fn plan_unreached(&mut self, _head: &Head) -> anyhow::Result<TargetPlan> {
        Ok(TargetPlan::default())
    }
    /// A needed blob starts streaming.
    fn begin(&mut self, blob: &BlobEntry) -> io::Result<()>;
    /// Next chunk of the blob's stored bytes (not yet verified).
    fn write(&mut self, blob: &BlobEntry, chunk: &[u8]) -> io::Result<()>;
    /// The blob verified: what was staged may become visible.
    fn commit(&mut self, blob: &BlobEntry) -> io::Result<()>;
    /// The whole bundle verified: register objects. Returns what was done.
    fn finish(&mut self, head: &Head, progress: &Progress) -> anyhow::Result<report::TargetReport>;
    /// What the target holds of the bundle once it is imported, for the import
    /// receipt ([`crate::bundle::receipt`]): known from the head and the plan, so
    /// the receipt can be written before anything is, and again after.
    fn receipt(&self, head: &Head) -> Option<crate::bundle::receipt::Section>;
}

/// A path as receipts write it: absolute, so it means the same from any folder.
pub fn receipt_path(p: &std::path::Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// Sends each verified stream to every target that needs the blob.
pub struct Fanout<'a> {
    targets: Vec<(&'a mut dyn Target, BTreeSet<Digest>)>,
    buf: Vec<u8>,
}

impl<'a> Fanout<'a> {
    /// A fanout over targets and their plans.
    pub fn new(targets: Vec<(&'a mut dyn Target, BTreeSet<Digest>)>) -> Self {
        Self {
            targets,
            buf: vec![0; 1 << 20],
        }
    }
}

impl EntrySink for Fanout<'_> {
    fn consume(&mut self, entry: &Entry, data: &mut dyn Read) -> io::Result<()> {
        let Entry::Blob(blob) = entry else {
            return Ok(());
        };
        let mut wanting: Vec<&mut (&mut dyn Target, BTreeSet<Digest>)> = self
            .targets
            .iter_mut()
            .filter(|(_, n)| n.contains(&blob.digest))
            .collect();
        if wanting.is_empty() {
            return Ok(());
        }
        for (t, _) in wanting.iter_mut() {
            t.begin(blob)?;
        }
        loop {
            let n = data.read(&mut self.buf)?;
            if n == 0 {
                break;
            }
            for (t, _) in wanting.iter_mut() {
                t.write(blob, &self.buf[..n])?;
            }
        }
        Ok(())
    }

    fn verified(&mut self, entry: &Entry) -> io::Result<()> {
        let Entry::Blob(blob) = entry else {
            return Ok(());
        };
        for (t, needed) in self.targets.iter_mut() {
            if needed.contains(&blob.digest) {
                t.commit(blob)?;
            }
        }
        Ok(())
    }
}
