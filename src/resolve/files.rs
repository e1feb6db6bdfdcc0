//! Files for the target host (`files:` in a spec): a local file or folder, a
//! download pinned by its sha256, or a flake output, each into the cache as one
//! blob per file, stored as it is, and one `file` object per file, named by the
//! absolute path it is installed at (format.md section 15).
//!
//! A bare host needs more than images: K3s's binary and `install.sh`, its air-gap
//! image tarball in `agent/images`, a configuration folder. A folder is its files:
//! every regular file below it becomes an object at the same relative path under
//! the target (symlinks are followed, so the target only ever receives plain files;
//! a folder that links back into itself is refused). Empty folders are not carried.
//!
//! Downloads go through [`crate::registry::http`], the registry client's TLS,
//! timeouts and proxies, into the cache's `partial/` folder, resumed with a Range
//! request after a broken connection and hashed before they take their name: a
//! server that sends other bytes than the spec's `sha256` stops `create`, and a
//! cached file is never downloaded again. The mode is the entry's, else `0755` for
//! a file its owner may execute and `0644` for any other.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Contribution;
use crate::bundle::manifest::{BlobEntry, Kind, Object};
use crate::bundle::meta::{target_components, FileMeta, Meta, FILE_MEDIA_TYPE};
use crate::bundle::Digest;
use crate::error::{InputFailure, RegistryFailure};
use crate::io::cas::{Cas, CasError};
use crate::progress::Progress;
use crate::registry::client::{backoff, runtime};
use crate::registry::{http, Settings};
use crate::spec::file::{FileRequest, FileSource};
use crate::spec::LoadedSpec;

/// Most folders nested below a `path:` or `installable:` folder.
const MAX_DEPTH: usize = 64;

/// One file found below an entry: where it is, its path below the entry, whether
/// its owner may execute it.
struct Found {
    path: PathBuf,
    relative: Option<String>,
    executable: bool,
}

/// Every `files:` entry of `spec` into `cas`, as blobs and `file` objects.
pub fn resolve(
    spec: &LoadedSpec,
    cas: &Cas,
    settings: &Settings,
    progress: &Progress,
) -> Result<Contribution> {
    let mut out = Contribution::default();
    if spec.files.is_empty() {
        return Ok(out);
    }
    let mut targets: BTreeMap<String, String> = BTreeMap::new();
    let mut client = None;
    for (i, f) in spec.files.iter().enumerate() {
        let source = f.source.describe();
        let found: Vec<(String, Digest, u64, u32)> = match &f.source {
            FileSource::Path(p, _) => local(cas, i, f, p)?,
            FileSource::Installable(inst) => {
                progress.message(format!("building {inst} for files[{i}]"));
                let built = crate::resolve::nix::build_manifests(spec, inst)?;
                local(cas, i, f, &built)?
            }
            FileSource::Url(url, digest) => {
                let size = match cached_size(cas, digest) {
                    Some(size) => size,
                    None => {
                        if client.is_none() {
                            client = Some(http::client(settings)?);
                        }
                        download(
                            client.as_ref().expect("just set"),
                            cas,
                            i,
                            url,
                            digest,
                            settings.retries.max(1),
                            progress,
                        )?
                    }
                };
                vec![(f.target.clone(), *digest, size, f.mode.unwrap_or(0o644))]
            }
        };
        for (target, digest, size, mode) in found {
            if let Some(other) = targets.insert(target.clone(), source.clone()) {
                return Err(InputFailure(format!(
                    "files[{i}] ({source}) and {other} would both install {target}; give one of them another target"
                ))
                .into());
            }
            out.blobs
                .push((BlobEntry::new(digest, size, FILE_MEDIA_TYPE), 0));
            out.objects.push(Object {
                kind: Kind::File,
                name: target,
                digest,
                media_type: FILE_MEDIA_TYPE.into(),
                size,
                blobs: vec![digest],
                meta: Meta::File(FileMeta {
                    mode: FileMeta::mode_string(mode),
                    source: source.clone(),
                    extra: Default::default(),
                }),
            });
        }
    }
    Ok(out)
}

/// The size of a cached blob, when it is there (a download of an earlier run).
fn cached_size(cas: &Cas, d: &Digest) -> Option<u64> {
    cas.contains(d, None)
        .then(|| fs_err::metadata(cas.path(d)).ok().map(|m| m.len()))
        .flatten()
}

/// A local file, or every file below a local folder, into the cache: (target,
/// digest, size, mode) each.
fn local(
    cas: &Cas,
    i: usize,
    f: &FileRequest,
    root: &Path,
) -> Result<Vec<(String, Digest, u64, u32)>> {
    let what = f.source.describe();
    let meta = fs_err::metadata(root).map_err(|e| {
        InputFailure(format!(
            "files[{i}] ({what}): {e} (a `path:` is relative to the spec file)"
        ))
    })?;
    let mut found = Vec::new();
    if meta.is_file() {
        found.push(Found {
            path: root.to_path_buf(),
            relative: None,
            executable: meta.permissions().mode() & 0o100 != 0,
        });
    } else if meta.is_dir() {
        let mut seen = BTreeSet::new();
        walk(i, &what, root, "", 0, &mut seen, &mut found)?;
        if found.is_empty() {
            return Err(InputFailure(format!(
                "files[{i}] ({what}): {} holds no files (a folder is its files; empty folders are not carried)",
                root.display()
            ))
            .into());
        }
    } else {
        return Err(InputFailure(format!(
            "files[{i}] ({what}): {} is neither a file nor a folder",
            root.display()
        ))
        .into());
    }
    let mut out = Vec::new();
    for x in found {
        let target = match &x.relative {
            None => f.target.clone(),
            Some(rel) => format!("{}/{rel}", f.target),
        };
        if let Err(why) = target_components(&target) {
            return Err(InputFailure(format!(
                "files[{i}] ({what}): {} cannot be installed: its target {why}",
                x.path.display()
            ))
            .into());
        }
        let file = fs_err::File::open(&x.path)?;
        let (digest, size) = cas.import_reader(file, None).map_err(|e| match e {
            CasError::Io(e) => anyhow::Error::new(e).context(format!(
                "cannot copy {} into the cache {}",
                x.path.display(),
                cas.root().display()
            )),
            other => other.into(),
        })?;
        let mode = f.mode.unwrap_or(if x.executable { 0o755 } else { 0o644 });
        out.push((target, digest, size, mode));
    }
    Ok(out)
}

/// The regular files below `dir` (links followed), sorted by name at each level.
fn walk(
    i: usize,
    what: &str,
    dir: &Path,
    prefix: &str,
    depth: usize,
    seen: &mut BTreeSet<(u64, u64)>,
    out: &mut Vec<Found>,
) -> Result<()> {
    let m = fs_err::metadata(dir)?;
    if depth > MAX_DEPTH || !seen.insert((m.dev(), m.ino())) {
        return Err(InputFailure(format!(
            "files[{i}] ({what}): {} links back into a folder above it (or nests more than {MAX_DEPTH} deep): give a folder without such links",
            dir.display()
        ))
        .into());
    }
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for e in fs_err::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().into_string().map_err(|n| {
            InputFailure(format!(
                "files[{i}] ({what}): {} has a name that is not UTF-8 ({n:?})",
                dir.display()
            ))
        })?;
        names.push((name, e.path()));
    }
    names.sort();
    for (name, path) in names {
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let m = fs_err::metadata(&path)
            .map_err(|e| InputFailure(format!("files[{i}] ({what}): {e} (a link to nothing?)")))?;
        if m.is_dir() {
            walk(i, what, &path, &rel, depth + 1, seen, out)?;
        } else if m.is_file() {
            out.push(Found {
                path,
                relative: Some(rel),
                executable: m.permissions().mode() & 0o100 != 0,
            });
        } else {
            return Err(InputFailure(format!(
                "files[{i}] ({what}): {} is neither a file nor a folder (a socket, pipe or device is not carried)",
                path.display()
            ))
            .into());
        }
    }
    seen.remove(&(m.dev(), m.ino()));
    Ok(())
}

/// What one download attempt did.
enum Attempt {
    /// All bytes are in the partial file.
    Done,
    /// The connection broke; retry (resuming), with why.
    Broken(String),
}

/// Downloads `url` into the cache under `digest`, resuming after a broken
/// connection, checked before it takes its name; returns its size.
fn download(
    client: &reqwest::Client,
    cas: &Cas,
    i: usize,
    url: &str,
    digest: &Digest,
    attempts: u32,
    progress: &Progress,
) -> Result<u64> {
    let rt = runtime(1, "gapbundle-download").context("cannot start the async runtime")?;
    let bar = progress.bar(format!("files[{i}] {url}"), 0);
    let mut last = String::new();
    for attempt in 1..=attempts {
        if attempt > 1 {
            std::thread::sleep(backoff(attempt - 1));
        }
        match rt.block_on(fetch(client, cas, i, url, digest, &bar))? {
            Attempt::Done => {
                let (_, size) = cas.partial(digest)?;
                return match cas.finish_partial(digest, size) {
                    Ok(()) => {
                        bar.finish("downloaded");
                        Ok(size)
                    }
                    Err(CasError::DigestMismatch { found, .. }) => {
                        bar.clear();
                        Err(InputFailure(format!(
                            "files[{i}]: {url} sent {size} bytes with sha256 {}, not the {} the spec gives: fix `sha256:` if the file was meant to change, else the server is not serving the file you pinned",
                            found.hex(),
                            digest.hex()
                        ))
                        .into())
                    }
                    Err(e) => Err(e.into()),
                };
            }
            Attempt::Broken(why) => last = why,
        }
    }
    bar.clear();
    Err(RegistryFailure(format!(
        "files[{i}]: cannot download {url} ({last}) after {attempts} attempt(s); the bytes that arrived are kept and the next create resumes (--retries N for more attempts)"
    ))
    .into())
}

/// One request for the rest of the download (a Range from what the partial
/// file holds).
async fn fetch(
    client: &reqwest::Client,
    cas: &Cas,
    i: usize,
    url: &str,
    digest: &Digest,
    bar: &crate::progress::Bar,
) -> Result<Attempt> {
    let (mut file, have) = cas.partial(digest)?;
    let mut req = client.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let mut resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Ok(Attempt::Broken(failure(&e))),
    };
    let status = resp.status();
    let offset = match status.as_u16() {
        206 if have > 0 => have,
        200 => {
            // A fresh start: what was there is not a prefix the server agrees on.
            file.set_len(0)?;
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(0))?;
            0
        }
        416 if have > 0 => {
            // Nothing left to send, or a partial file longer than the file: check it.
            return Ok(Attempt::Done);
        }
        408 | 429 | 500..=599 => {
            return Ok(Attempt::Broken(format!("HTTP {status}")));
        }
        _ => {
            return Err(RegistryFailure(format!(
                "files[{i}]: {url} answered HTTP {status}; check the URL (and that the file is still published there)"
            ))
            .into())
        }
    };
    if let Some(len) = resp.content_length() {
        bar.set_length(offset + len);
    }
    bar.set_position(offset);
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                file.write_all(&chunk)?;
                bar.inc(chunk.len() as u64);
            }
            Ok(None) => break,
            Err(e) => {
                file.flush()?;
                return Ok(Attempt::Broken(failure(&e)));
            }
        }
    }
    file.flush()?;
    Ok(Attempt::Done)
}

/// A failed request in a few words, with its cause.
fn failure(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let t = c.to_string();
        if !s.contains(&t) {
            s = format!("{s}: {t}");
        }
        src = c.source();
    }
    s
}
