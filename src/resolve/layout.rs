//! Images from a local OCI image layout (`layout: DIR[:TAG]` in a spec).
//!
//! A layout is what `skopeo copy … oci:DIR:TAG`, `umoci` and `buildah push oci:`
//! write, and what an oci-archive holds inside its tar, so this module reads it
//! through the small `LayoutFiles` trait ("size of" and "open" a path relative
//! to the layout's root). A directory implements it here; an indexed tar file
//! implements it in [`super::archive`], so both inputs share every check below.
//!
//! A layout on disk is not trusted more than a registry: it may have been copied
//! on a flaky USB stick or edited by hand. Every manifest is verified against its
//! sha256 before it is parsed, and every config and layer is streamed into the
//! [`Cas`] with its expected digest and size, so a damaged blob is reported with
//! its path instead of ending up in a signed bundle. Layers are never read into
//! memory: a layout can hold gigabytes.
//!
//! The walk from the chosen root to the blobs it needs is [`image::walk`], the
//! same one registry inputs use, so platform selection behaves identically.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::bundle::oci::{is_index, is_manifest, CONTAINERD_NAME, REF_NAME};
use crate::bundle::Digest;
use crate::io::cas::{Cas, CasError};
use crate::oci::Reference;
use crate::resolve::image::{self, Blob, ImagePlan, ManifestFetch};
use crate::spec::Platforms;

/// An image read from a local layout or archive, its blobs now in the cache.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// The reference name the input gives the image, when it gives one: the
    /// `io.containerd.image.name` annotation (always a full reference), else the
    /// `org.opencontainers.image.ref.name` annotation (often just a tag), or, for a
    /// docker-archive, the matching (else first) entry of `RepoTags`.
    pub name: Option<String>,
    /// What the walk found; every blob it lists is in the cache.
    pub plan: ImagePlan,
}

/// Manifests and configs are read whole; anything claiming to be larger than this
/// is not a manifest or config (registries cap manifests at 4 MiB).
pub(crate) const SMALL_LIMIT: u64 = 64 << 20;

/// Read access to the files of an OCI image layout, by path relative to its root
/// (`oci-layout`, `index.json`, `blobs/sha256/<hex>`).
pub(crate) trait LayoutFiles {
    /// How to name `path` in a message, so the person can find the file at fault.
    fn display(&self, path: &str) -> String;
    /// How to name the whole input in a message.
    fn what(&self) -> String;
    /// What to do to get a usable input ("create one with …").
    fn remedy(&self) -> String;
    /// How to pick one image when the input holds several (`NAME` stands for it).
    fn pick_hint(&self) -> String;
    /// The size of the regular file at `path`, `None` when there is none.
    fn size(&self, path: &str) -> Result<Option<u64>>;
    /// Opens the file at `path` for streaming.
    fn open(&self, path: &str) -> Result<Box<dyn Read + '_>>;
}

/// A layout directory on disk.
struct DirFiles<'a> {
    dir: &'a Path,
}

impl DirFiles<'_> {
    fn full(&self, path: &str) -> PathBuf {
        self.dir.join(path)
    }
}

impl LayoutFiles for DirFiles<'_> {
    fn display(&self, path: &str) -> String {
        self.full(path).display().to_string()
    }
    fn what(&self) -> String {
        self.dir.display().to_string()
    }
    fn remedy(&self) -> String {
        format!(
            "(re)create it with `skopeo copy docker://REGISTRY/IMAGE:TAG oci:{}:TAG`",
            self.dir.display()
        )
    }
    fn pick_hint(&self) -> String {
        format!("write `layout: {}:NAME` in the spec", self.dir.display())
    }
    #[allow(
        clippy::disallowed_methods,
        reason = "NotFound is an answer; other errors name the path"
    )]
    fn size(&self, path: &str) -> Result<Option<u64>> {
        match std::fs::metadata(self.full(path)) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.display(path))),
        }
    }
    fn open(&self, path: &str) -> Result<Box<dyn Read + '_>> {
        #[allow(
            clippy::disallowed_methods,
            reason = "the context names the path as the spec gives it"
        )]
        let f = std::fs::File::open(self.full(path))
            .with_context(|| format!("cannot open {}", self.display(path)))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, f)))
    }
}

/// Reads an OCI image layout directory and copies the blobs of one image into `cas`.
///
/// Checks `oci-layout`, picks the `index.json` entry whose ref name annotation is
/// `tag` (or the only entry when `tag` is `None`), verifies each manifest's sha256,
/// walks it with `platforms`, and streams every config and layer into the cache
/// with its expected digest and size, so a corrupted blob is an error naming it.
pub fn resolve_layout(
    cas: &Cas,
    dir: &Path,
    tag: Option<&str>,
    platforms: &Platforms,
) -> Result<LocalImage> {
    #[allow(
        clippy::disallowed_methods,
        reason = "each error names the path, with advice"
    )]
    let meta = std::fs::metadata(dir);
    match meta {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!(
            "{} is not a directory: `layout:` needs an OCI image layout directory (for a tar file use `archive:`)",
            dir.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "the OCI image layout {} does not exist: create it with `skopeo copy docker://REGISTRY/IMAGE:TAG oci:{}:TAG`, or fix the path in the spec",
            dir.display(),
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
    resolve_oci(cas, &DirFiles { dir }, tag, platforms)
}

/// One entry of `index.json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

impl IndexEntry {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
    /// The names this entry answers to, best first.
    fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = [self.annotation(CONTAINERD_NAME), self.annotation(REF_NAME)]
            .into_iter()
            .flatten()
            .collect();
        v.dedup();
        v
    }
    fn label(&self) -> String {
        let names = self.names();
        if names.is_empty() {
            format!("(no name) {}", self.digest)
        } else {
            names.join(" = ")
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciLayoutFile {
    image_layout_version: String,
}

#[derive(Deserialize)]
struct IndexFile {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

/// Reads a small file (manifest, config, `index.json`) whole, refusing anything
/// larger than [`SMALL_LIMIT`].
pub(crate) fn read_small(files: &dyn LayoutFiles, path: &str) -> Result<Vec<u8>> {
    let size = files.size(path)?.with_context(|| {
        format!(
            "{} is missing from {}; {}",
            files.display(path),
            files.what(),
            files.remedy()
        )
    })?;
    if size > SMALL_LIMIT {
        bail!(
            "{} is {size} bytes, too large for a manifest, config or index (limit {SMALL_LIMIT}); the input is damaged or not what it claims: {}",
            files.display(path),
            files.remedy()
        );
    }
    let mut buf = Vec::with_capacity(size as usize);
    files
        .open(path)?
        .take(SMALL_LIMIT + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", files.display(path)))?;
    Ok(buf)
}

/// The path of a blob inside a layout.
pub(crate) fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// The message for a blob whose bytes do not match its name.
pub(crate) fn corrupted(
    files: &dyn LayoutFiles,
    path: &str,
    expected: (Digest, u64),
    found: (Digest, u64),
) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is corrupted: expected {} ({} bytes), found {} ({} bytes); the file was damaged or changed after it was written: {}",
        files.display(path),
        expected.0,
        expected.1,
        found.0,
        found.1,
        files.remedy()
    )
}

/// Streams a file of `files` into the cache, checking digest and size. `expected`
/// `None` only for inputs that do not name their blobs by digest (docker-archive
/// compressed layers).
pub(crate) fn import(
    cas: &Cas,
    files: &dyn LayoutFiles,
    path: &str,
    expected: Option<(Digest, u64)>,
) -> Result<(Digest, u64)> {
    if let Some((d, s)) = expected {
        // Already verified in an earlier run: nothing to read.
        if cas.contains(&d, Some(s)) {
            return Ok((d, s));
        }
    }
    let reader = files.open(path)?;
    match cas.import_reader(reader, expected) {
        Ok(x) => Ok(x),
        Err(CasError::DigestMismatch {
            expected,
            expected_size,
            found,
            found_size,
        }) => Err(corrupted(
            files,
            path,
            (expected, expected_size),
            (found, found_size),
        )),
        Err(CasError::Io(e)) => Err(e).with_context(|| {
            format!(
                "cannot copy {} into the cache {}",
                files.display(path),
                cas.root().display()
            )
        }),
    }
}

/// Fetches manifests (and, for the walk's platform lookup, configs) from a layout,
/// verifying them and storing them in the cache as they go.
struct LayoutFetch<'a> {
    cas: &'a Cas,
    files: &'a dyn LayoutFiles,
}

impl ManifestFetch for LayoutFetch<'_> {
    fn fetch(&mut self, digest: &Digest, media_type: &str) -> Result<Vec<u8>> {
        let path = blob_path(digest);
        if (is_index(media_type) || is_manifest(media_type)) && self.files.size(&path)?.is_none() {
            // `docker save` with the containerd store and `skopeo copy` without
            // `--all` keep the index but only some of its platforms.
            bail!(
                "{} is missing: the image index lists manifest {digest} ({media_type}) but {} does not hold it, probably because only some platforms were saved; set `platforms:` in the spec to the ones it holds, or save it again with all platforms (`skopeo copy --all …`)",
                self.files.display(&path),
                self.files.what()
            );
        }
        fetch_verified(self.cas, self.files, digest, None)
    }
}

fn fetch_verified(
    cas: &Cas,
    files: &dyn LayoutFiles,
    digest: &Digest,
    size: Option<u64>,
) -> Result<Vec<u8>> {
    let path = blob_path(digest);
    let bytes = read_small(files, &path)?;
    let found = (Digest::of(&bytes), bytes.len() as u64);
    if let Some(s) = size.filter(|s| found.0 == *digest && *s != found.1) {
        bail!(
            "{} gives {} a size of {s} bytes, but the blob has {}; fix or recreate the index: {}",
            files.display("index.json"),
            files.display(&path),
            found.1,
            files.remedy()
        );
    }
    if found.0 != *digest {
        return Err(corrupted(
            files,
            &path,
            (*digest, size.unwrap_or(found.1)),
            found,
        ));
    }
    cas.put_bytes(&bytes).with_context(|| {
        format!(
            "cannot store {} in the cache {}",
            files.display(&path),
            cas.root().display()
        )
    })?;
    Ok(bytes)
}

/// Whether the name `candidate` (from the input) answers to `wanted` (from the spec):
/// the same text, or the same image once both are normalised as Docker does
/// ([`Reference::normalized`]), so `foo` matches `docker.io/library/foo:latest` and
/// `example/legacy:1.0` matches `docker.io/example/legacy:1.0`.
pub(crate) fn reference_matches(candidate: &str, wanted: &str) -> bool {
    if candidate == wanted {
        return true;
    }
    match (Reference::parse(candidate), Reference::parse(wanted)) {
        (Ok(c), Ok(w)) => c.normalized() == w.normalized(),
        _ => false,
    }
}

fn select<'a>(
    files: &dyn LayoutFiles,
    entries: &'a [IndexEntry],
    tag: Option<&str>,
) -> Result<&'a IndexEntry> {
    let index = files.display("index.json");
    if entries.is_empty() {
        bail!("{index} lists no images; {}", files.remedy());
    }
    let available = || {
        entries
            .iter()
            .map(IndexEntry::label)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let distinct = |v: &[&'a IndexEntry]| {
        let mut d: Vec<&str> = v.iter().map(|e| e.digest.as_str()).collect();
        d.sort();
        d.dedup();
        d.len()
    };
    match tag {
        None => {
            let all: Vec<&IndexEntry> = entries.iter().collect();
            if distinct(&all) == 1 {
                return Ok(all[0]);
            }
            bail!(
                "{} holds {} images and none was named: {}, NAME being one of: {}",
                files.what(),
                entries.len(),
                files.pick_hint(),
                available()
            )
        }
        Some(tag) => {
            let exact: Vec<&IndexEntry> = entries
                .iter()
                .filter(|e| e.names().contains(&tag))
                .collect();
            let matching = if exact.is_empty() {
                entries
                    .iter()
                    .filter(|e| e.names().iter().any(|n| reference_matches(n, tag)))
                    .collect()
            } else {
                exact
            };
            match distinct(&matching) {
                0 => bail!(
                    "{} has no image named `{tag}` (annotation {REF_NAME} or {CONTAINERD_NAME} in {index}); it has: {}",
                    files.what(),
                    available()
                ),
                1 => Ok(matching[0]),
                _ => bail!(
                    "`{tag}` names {} different images in {index}: {}; give a more specific name",
                    matching.len(),
                    matching
                        .iter()
                        .map(|e| format!("{} ({})", e.label(), e.digest))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    }
}

/// The layout logic over any [`LayoutFiles`]: a directory or an oci-archive.
pub(crate) fn resolve_oci(
    cas: &Cas,
    files: &dyn LayoutFiles,
    tag: Option<&str>,
    platforms: &Platforms,
) -> Result<LocalImage> {
    if files.size("oci-layout")?.is_none() {
        bail!(
            "{} is not an OCI image layout (no oci-layout file): {}",
            files.what(),
            files.remedy()
        );
    }
    let marker = read_small(files, "oci-layout")?;
    let marker: OciLayoutFile = serde_json::from_slice(&marker).with_context(|| {
        format!(
            "{} is not valid (expected {{\"imageLayoutVersion\":\"1.0.0\"}}): {}",
            files.display("oci-layout"),
            files.remedy()
        )
    })?;
    if !marker.image_layout_version.starts_with("1.") {
        bail!(
            "{} declares image layout version {}, but only 1.x is supported: {}",
            files.display("oci-layout"),
            marker.image_layout_version,
            files.remedy()
        );
    }
    let index_bytes = read_small(files, "index.json")?;
    let index: IndexFile = serde_json::from_slice(&index_bytes).with_context(|| {
        format!(
            "{} is not a valid OCI image index: {}",
            files.display("index.json"),
            files.remedy()
        )
    })?;
    let entry = select(files, &index.manifests, tag)?;
    let root_digest: Digest = entry.digest.parse().with_context(|| {
        format!(
            "{} names its image by `{}`, which gapbundle cannot verify (only sha256 is supported)",
            files.display("index.json"),
            entry.digest
        )
    })?;
    let what = || format!("image {} of {}", entry.label(), files.what());
    let root_bytes =
        fetch_verified(cas, files, &root_digest, Some(entry.size)).with_context(what)?;
    let declared = (!entry.media_type.is_empty()).then_some(entry.media_type.as_str());
    let media_type = image::media_type_of(&root_bytes, declared).with_context(|| {
        format!(
            "{} is not an image manifest",
            files.display(&blob_path(&root_digest))
        )
    })?;
    let mut fetch = LayoutFetch { cas, files };
    let plan = image::walk(&root_bytes, &media_type, platforms, &mut fetch).with_context(what)?;
    check_manifest_sizes(cas, files, &plan.manifests)?;
    for blob in &plan.blobs {
        let path = blob_path(&blob.digest);
        if files.size(&path)?.is_none() {
            let hint = if is_index(&plan.root.media_type) {
                " (was it copied for fewer platforms than its index lists? then set `platforms:` in the spec to the ones it holds)"
            } else {
                ""
            };
            bail!(
                "{} is missing: {} needs blob {} ({}) but the input does not contain it{hint}; {}",
                files.display(&path),
                what(),
                blob.digest,
                blob.media_type,
                files.remedy()
            );
        }
        import(cas, files, &path, Some((blob.digest, blob.size)))?;
    }
    let name = entry.names().first().map(|s| s.to_string());
    Ok(LocalImage { name, plan })
}

/// The walk records child manifests with the sizes their descriptors claim; the
/// bytes were verified by digest, so a different size is a lying descriptor.
fn check_manifest_sizes(cas: &Cas, files: &dyn LayoutFiles, manifests: &[Blob]) -> Result<()> {
    for m in manifests {
        if !cas.contains(&m.digest, Some(m.size)) {
            let actual = fs_err::metadata(cas.path(&m.digest))
                .map(|x| x.len())
                .unwrap_or(0);
            bail!(
                "a descriptor in {} gives manifest {} a size of {} bytes, but it has {actual}; {}",
                files.what(),
                m.digest,
                m.size,
                files.remedy()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_normalize_like_docker() {
        assert!(reference_matches(
            "docker.io/example/legacy:1.0",
            "example/legacy:1.0"
        ));
        assert!(reference_matches("docker.io/library/foo:latest", "foo"));
        assert!(reference_matches("latest", "latest"));
        assert!(!reference_matches(
            "docker.io/example/legacy:1.0",
            "legacy:1.0"
        ));
        assert!(!reference_matches("127.0.0.1:5000/a/b:1", "a/b:1"));
        assert!(reference_matches("localhost/x:latest", "localhost/x"));
        assert!(reference_matches(
            "index.docker.io/library/foo",
            "foo:latest"
        ));
        // Names that are not references match only themselves.
        assert!(reference_matches("Not A Name", "Not A Name"));
        assert!(!reference_matches("Not A Name", "not-a-name"));
    }
}
