//! The `file://` binary cache an import writes: for `--nix-store file://…`, and as
//! the private staging folder of a store import from a pipe.
//!
//! Each needed NAR blob streams straight into `nar/` under a temporary name
//! ([`crate::io::temp`]: one a rerun removes after a kill) and takes its name,
//! `nar/<nix32 file hash>.nar.zst`, only once its bytes verified *and* it decoded
//! to a valid NAR of exactly its declared hash and size: a fleet substitutes from a
//! `file://` cache and nothing else checks it first, and a store import from a pipe
//! hands these files to Nix, which would restore whatever they decode to before it
//! compares the hash. The check ([`check_nar_file`]) parses the NAR with
//! [`crate::nixfmt::check_nar`] (entry names, order, node types, padding: what Nix
//! refuses is refused here, before any narinfo advertises it) and stops at the
//! declared NAR size, so a decompression bomb costs no more than that size. A blob
//! that fails is removed, never renamed. Narinfos come last, in reference order,
//! once the whole bundle verified and every NAR checked.
//!
//! Decoding is most of such an import's own CPU, and a large NAR's frames are one
//! stream that only one thread can decode. So it is not done in step with the
//! stream (a big blob would then hold the stream, and every core but one would
//! idle): each blob, once its bytes verified and its file was renamed into place, is
//! queued ([`crate::pool::Queue`]), and one worker per core decodes the files from
//! the page cache while the bundle goes on streaming. Memory stays bounded: a worker
//! holds a buffer and a zstd window. The results are only looked at once the whole
//! bundle has streamed, and nothing is registered before all of them are good.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;
use fs_err as fs;

use super::validate::{bad, NixObject};
use super::{Dest, NixTarget};
use crate::bundle::decode::zstd_reader;
use crate::bundle::manifest::BlobEntry;
use crate::bundle::Digest;
use crate::error::InputFailure;
use crate::io::temp;
use crate::nixfmt::nar_check::NarReadError;
use crate::nixfmt::{cache_info, check_nar, NarHash, NarInfo, StorePath};
use crate::pool::Queue;

/// Why a verified NAR blob was not given its name in the cache.
pub(super) struct NarRefused {
    blob: Digest,
    why: NarFault,
}

/// What was wrong with it.
pub(super) enum NarFault {
    /// It is a valid NAR, of another hash or size than its path is registered under.
    Other(Digest, u64),
    /// It is not a valid NAR (or not zstd, or larger than declared): why.
    Invalid(String),
    /// The cache's own trouble: reading or renaming the file.
    Io(String),
}

/// One verified NAR blob waiting for its check: its temporary file and the name
/// it takes once the check passed.
type Pending = (BlobEntry, tempfile::TempPath, PathBuf);

/// The threads that decode and check verified NAR blobs while the bundle streams.
pub(super) type Decoders = Queue<Pending, (), NarRefused>;

fn start_decoders() -> io::Result<Decoders> {
    Queue::start(
        crate::pool::cores(),
        "nar-decode",
        |(blob, tmp, name): Pending| {
            let refused = |why| NarRefused {
                blob: blob.digest,
                why,
            };
            let Some(content) = &blob.content else {
                return Err(refused(NarFault::Invalid(
                    "it has no content digest".into(),
                )));
            };
            match check_nar_file(&tmp, content.size) {
                Ok((d, s)) if d == content.digest && s == content.size => {}
                Ok((d, s)) => return Err(refused(NarFault::Other(d, s))),
                Err(why) => return Err(refused(why)),
            }
            // Dropping `tmp` on any error above removed the file.
            tmp.persist(&name)
                .map_err(|e| refused(NarFault::Io(format!("{}: {}", name.display(), e.error))))
        },
    )
}

/// Decompresses the `.nar.zst` file at `path` through the NAR parser, refusing it
/// as soon as it passes `declared` bytes; its NAR hash and size when it is valid.
fn check_nar_file(path: &Path, declared: u64) -> Result<(Digest, u64), NarFault> {
    let f = fs::File::open(path).map_err(|e| NarFault::Io(e.to_string()))?;
    let dec = zstd_reader(f).map_err(|e| NarFault::Invalid(format!("not zstd: {e}")))?;
    match check_nar(dec, Some(declared)) {
        Ok(summary) => Ok((summary.digest, summary.size)),
        Err(NarReadError::Nar(e)) => Err(NarFault::Invalid(e.to_string())),
        Err(NarReadError::Io(e)) => Err(NarFault::Invalid(format!("not valid zstd: {e}"))),
    }
}

impl NixTarget {
    /// A needed NAR blob starts streaming: into a temporary file in `nar/` (the
    /// first one sweeps `nar/` and the cache's folder of what killed imports left).
    pub(super) fn receive_begin(&mut self, blob: &BlobEntry) -> io::Result<()> {
        let root = self.cache_dir()?;
        let dir = root.join("nar");
        fs::create_dir_all(&dir)?;
        if !self.swept {
            temp::sweep(&root);
            temp::sweep(&dir);
            self.swept = true;
        }
        // A fleet's cache is served to other hosts: its files get the mode any new
        // file gets. The private staging cache stays private.
        let tmp = match self.dest {
            Dest::Cache(_) => temp::shared_file_in(&dir, &blob.digest.short())?,
            Dest::Store { .. } => temp::file_in(&dir, &blob.digest.short())?,
        };
        self.receiving = Some(BufWriter::with_capacity(1 << 20, tmp));
        Ok(())
    }

    /// The next chunk of the blob being received.
    pub(super) fn receive_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.receiving
            .as_mut()
            .ok_or_else(|| io::Error::other("write before begin"))?
            .write_all(chunk)
    }

    /// The blob verified: it is queued to be decoded and checked, and takes its
    /// name in the cache once that passed (see the module documentation).
    pub(super) fn receive_commit(&mut self, blob: &BlobEntry) -> io::Result<()> {
        let tmp = self
            .receiving
            .take()
            .ok_or_else(|| io::Error::other("commit before begin"))?;
        let dir = self.cache_dir()?;
        let tmp = tmp.into_inner().map_err(|e| e.into_error())?;
        if matches!(self.dest, Dest::Cache(_)) {
            // A fleet's cache must not end up with a narinfo whose NAR was lost. The
            // private staging cache lives for one `nix copy` and needs no fsync.
            tmp.as_file().sync_all()?;
        }
        let name = dir.join(NarInfo::nar_url(&NarHash::from_digest(&blob.digest), "zst"));
        if self.decoding.is_none() {
            self.decoding = Some(start_decoders()?);
        }
        if let Some(d) = self.decoding.as_mut() {
            d.submit((blob.clone(), tmp.into_temp_path(), name));
        }
        Ok(())
    }

    /// Waits for every NAR being decoded and checks each against the NAR hash its
    /// path is registered under; a NAR that failed was removed, not named.
    pub(super) fn check_decoded(&mut self) -> Result<()> {
        let Some(decoders) = self.decoding.take() else {
            return Ok(());
        };
        let Err(NarRefused { blob, why }) = decoders.finish() else {
            return Ok(());
        };
        let users: Vec<String> = self
            .objects
            .iter()
            .filter(|o| o.entry.digest == blob)
            .map(|o| o.path.to_string())
            .collect();
        let users = users.join(", ");
        Err(match why {
            NarFault::Other(d, s) => bad(format!(
                "the NAR of {users} decompresses to {} ({s} bytes), not the NAR hash it is registered under; the bundle was made wrong, nothing was imported",
                NarHash::from_digest(&d)
            )),
            NarFault::Invalid(e) => bad(format!(
                "the NAR of {users} (blob {blob}) is not a NAR Nix would accept: {e}; nothing was imported"
            )),
            NarFault::Io(e) => anyhow::anyhow!(
                "cannot put the NAR of {users} into {}: {e}",
                crate::import::Target::describe(self)
            ),
        })
    }

    /// Writes `nix-cache-info` (unless there is one for /nix/store already) and the
    /// new paths' narinfos, whose NARs are in place and checked.
    pub(super) fn write_cache(&mut self, dir: &Path) -> Result<()> {
        let info_path = dir.join("nix-cache-info");
        match fs::read_to_string(&info_path) {
            Ok(text) => {
                if let Some(sd) = text.lines().find_map(|l| l.strip_prefix("StoreDir:")) {
                    if sd.trim() != "/nix/store" {
                        return Err(InputFailure(format!(
                            "{} is a binary cache for store {}, not /nix/store",
                            dir.display(),
                            sd.trim()
                        ))
                        .into());
                    }
                }
            }
            Err(_) => crate::io::atomic::write(&info_path, cache_info().as_bytes())?,
        }
        let by_path: BTreeMap<&StorePath, &NixObject> =
            self.objects.iter().map(|o| (&o.path, o)).collect();
        let durable = matches!(self.dest, Dest::Cache(_));
        for p in &self.new_paths {
            let o = by_path[p];
            let info = o.narinfo();
            let nar = dir.join(&info.url);
            if !nar.is_file() {
                return Err(anyhow::anyhow!(
                    "{} is missing although its NAR verified; run the import again",
                    nar.display()
                ));
            }
            let target = dir.join(format!("{}.narinfo", p.hash_part()));
            if durable {
                crate::io::atomic::write(&target, info.to_text()?.as_bytes())?;
            } else {
                // The private staging cache lives for one `nix copy`: temp + rename,
                // but no fsync per file.
                let mut tmp = temp::file_in(dir, "narinfo")?;
                tmp.write_all(info.to_text()?.as_bytes())?;
                tmp.persist(&target).map_err(|e| e.error)?;
            }
        }
        Ok(())
    }
}
