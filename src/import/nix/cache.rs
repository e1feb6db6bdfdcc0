//! The `file://` binary cache an import writes: for `--nix-store file://…`, and as
//! the private staging folder of a store import from a pipe.
//!
//! Each needed NAR blob streams straight into `nar/<nix32 file hash>.nar.zst` under
//! a temporary name and takes that name once its bytes verified. Narinfos come last,
//! in reference order, once the whole bundle verified and (for a `file://` cache)
//! every NAR decompressed to its NAR hash: a fleet substitutes from that cache and
//! nothing else checks it first.
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
use tempfile::NamedTempFile;

use super::validate::{bad, NixObject};
use super::{Dest, NixTarget};
use crate::bundle::digest::HashingWriter;
use crate::bundle::manifest::BlobEntry;
use crate::bundle::Digest;
use crate::error::InputFailure;
use crate::nixfmt::{cache_info, NarHash, NarInfo, StorePath};
use crate::pool::Queue;

/// A NAR blob that does not decode to its content: what it gave instead (digest and
/// size), or why it could not be decoded.
pub(super) struct NarMismatch {
    blob: Digest,
    found: Result<(Digest, u64), String>,
}

/// The threads that decode and check verified NAR blobs while the bundle streams.
pub(super) type Decoders = Queue<(BlobEntry, PathBuf), (), NarMismatch>;

fn start_decoders() -> io::Result<Decoders> {
    Queue::start(
        crate::pool::cores(),
        "nar-decode",
        |(blob, path): (BlobEntry, PathBuf)| {
            let found = decode_file(&path);
            match (&found, &blob.content) {
                (Ok((d, s)), Some(c)) if c.digest == *d && c.size == *s => Ok(()),
                _ => Err(NarMismatch {
                    blob: blob.digest,
                    found,
                }),
            }
        },
    )
}

/// Decompresses and hashes a staged `.nar.zst` file.
fn decode_file(path: &Path) -> Result<(Digest, u64), String> {
    let f = fs::File::open(path).map_err(|e| e.to_string())?;
    let mut dec = zstd::stream::read::Decoder::new(f).map_err(|e| e.to_string())?;
    let mut hw = HashingWriter::new(io::sink());
    io::copy(&mut dec, &mut hw).map_err(|e| e.to_string())?;
    let (_, digest, size) = hw.finish();
    Ok((digest, size))
}

impl NixTarget {
    /// A needed NAR blob starts streaming: into a temporary file in `nar/`.
    pub(super) fn receive_begin(&mut self, blob: &BlobEntry) -> io::Result<()> {
        let dir = self.cache_dir()?.join("nar");
        fs::create_dir_all(&dir)?;
        let temp = || {
            tempfile::Builder::new()
                .prefix(&format!(".{}.", blob.digest.short()))
                .suffix(".tmp")
                .tempfile_in(&dir)
        };
        self.receiving = Some(BufWriter::with_capacity(1 << 20, temp()?));
        Ok(())
    }

    /// The next chunk of the blob being received.
    pub(super) fn receive_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.receiving
            .as_mut()
            .ok_or_else(|| io::Error::other("write before begin"))?
            .write_all(chunk)
    }

    /// The blob verified: it takes its name in the cache, and for a `file://` cache
    /// it is queued to be decoded and checked.
    pub(super) fn receive_commit(&mut self, blob: &BlobEntry) -> io::Result<()> {
        let tmp = self
            .receiving
            .take()
            .ok_or_else(|| io::Error::other("commit before begin"))?;
        // The compressed bytes verified: the file may take its content-addressed
        // name. Whether it decodes to the NAR hash is checked in `finish`, before
        // anything is registered.
        let dir = self.cache_dir()?;
        let tmp = tmp.into_inner().map_err(|e| e.into_error())?;
        if matches!(self.dest, Dest::Cache(_)) {
            // A fleet's cache must not end up with a narinfo whose NAR was lost. The
            // private staging cache lives for one `nix copy` and needs no fsync.
            tmp.as_file().sync_all()?;
        }
        let path = dir.join(NarInfo::nar_url(&NarHash::from_digest(&blob.digest), "zst"));
        tmp.persist(&path).map_err(|e| e.error)?;
        // A fleet's cache is checked NAR by NAR before any narinfo appears: nothing
        // else checks it before hosts substitute from it. A store checks each NAR
        // against its signed NAR hash itself as it adds the path.
        if matches!(self.dest, Dest::Cache(_)) {
            if self.decoding.is_none() {
                self.decoding = Some(start_decoders()?);
            }
            if let Some(d) = self.decoding.as_mut() {
                d.submit((blob.clone(), path));
            }
        }
        Ok(())
    }

    /// Waits for every NAR being decoded and checks each against the NAR hash its
    /// path is registered under.
    pub(super) fn check_decoded(&mut self) -> Result<()> {
        let Some(decoders) = self.decoding.take() else {
            return Ok(());
        };
        let Err(NarMismatch { blob, found }) = decoders.finish() else {
            return Ok(());
        };
        let users: Vec<String> = self
            .objects
            .iter()
            .filter(|o| o.blob == blob)
            .map(|o| o.path.to_string())
            .collect();
        Err(match found {
            Ok((d, s)) => bad(format!(
                "the NAR of {} decompresses to {} ({s} bytes), not the NAR hash it is registered under; the bundle was made wrong, nothing was imported",
                users.join(", "),
                NarHash::from_digest(&d)
            )),
            Err(e) => bad(format!(
                "the NAR of {} is not valid zstd ({e}); nothing was imported",
                users.join(", ")
            )),
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
                let mut tmp = NamedTempFile::new_in(dir)?;
                tmp.write_all(info.to_text()?.as_bytes())?;
                tmp.persist(&target).map_err(|e| e.error)?;
            }
        }
        Ok(())
    }
}
