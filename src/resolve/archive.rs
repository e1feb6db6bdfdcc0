//! Images from a local tar file (`archive: FILE.tar` in a spec): an oci-archive
//! (an OCI image layout in a tar, from `skopeo copy … oci-archive:FILE`) or a
//! docker-archive (`docker save`, `skopeo copy … docker-archive:FILE`), with one
//! image or several: K3s's own air-gap image tarball (`k3s-airgap-images-*.tar.zst`)
//! is a docker-archive of every image K3s runs, and takes what K3s's `agent/images`
//! takes, so each image of it is bundled under each of its names
//! ([`resolve_archive_images`]).
//!
//! Archives of real images are large, and the air-gapped workflow often runs on a
//! laptop with little spare disk, so the tar is neither extracted nor read into
//! memory. Instead it is scanned once with the `tar` crate, recording where each
//! member's data starts ([`tar::Entry::raw_file_position`]) and how long it is; a
//! member is then read with a seek and a bounded read on the file. That gives the
//! random access a layout needs ("open `blobs/sha256/<hex>`"), so an oci-archive
//! goes through exactly the same code and checks as a layout directory
//! ([`super::layout`]), via the `LayoutFiles` trait.
//!
//! A docker-archive has no registry manifest: `manifest.json` lists a config file
//! and uncompressed layer tars. The config is stored as is (its sha256 is the image
//! ID, so the image keeps its identity), each layer is stored as is (checked against
//! the config's `rootfs.diff_ids` when uncompressed), and an OCI image manifest is
//! synthesized from them with canonical JSON bytes, so the same archive always gives
//! the same manifest digest. OCI rather than Docker v2 media types, because the
//! manifest is ours to write and OCI tools (skopeo 1.9 among them) only look up
//! OCI-typed manifests by name in a layout. Newer `docker save` (Docker 25+) writes an
//! OCI layout next to `manifest.json`; when `index.json` is there the OCI path is
//! preferred, because it keeps the manifests Docker itself computed.
//!
//! A zstd- or gzip-compressed archive cannot be read by seeking. It is read once,
//! decompressed as a stream, and every member goes straight into the cache as it
//! passes, hashed on the way (memory stays bounded by a buffer): the members are
//! then the cached blobs, found by the path they had, and everything above reads
//! them exactly as members of a plain tar. The cost is the cache's room for the
//! members, which the bundle needs anyway for the layers.

use std::collections::HashMap;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::json;

use crate::bundle::canonical;
use crate::bundle::oci::MANIFEST_MEDIA_TYPE;
use crate::bundle::Digest;
use crate::io::cas::{Cas, CasError};
use crate::resolve::image::{self, ManifestFetch};
use crate::resolve::layout::{
    corrupted, import, read_small, reference_matches, resolve_oci, LayoutFiles, LocalImage,
};
use crate::spec::Platforms;

/// Media type of the config in a synthesized manifest.
pub const OCI_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Media type of a gzip-compressed layer.
pub const OCI_LAYER_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of a zstd-compressed layer.
pub const OCI_LAYER_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// Links are followed at most this many times (a loop is an error, not a hang).
const MAX_LINKS: usize = 16;

/// Reads an image from a tar archive and copies its blobs into `cas`.
///
/// The archive is an oci-archive (has `index.json`, and `oci-layout`) or a
/// docker-archive (has `manifest.json`); when both are present the OCI layout wins.
/// `tag` picks one image of several (matched against the ref name annotations, or
/// against `RepoTags` of a docker-archive, with Docker's name normalization).
pub fn resolve_archive(
    cas: &Cas,
    path: &Path,
    tag: Option<&str>,
    platforms: &Platforms,
) -> Result<LocalImage> {
    let tar = TarIndex::scan(cas, path)?;
    match archive_kind(&tar)? {
        ArchiveKind::Oci => resolve_oci(cas, &tar, tag, platforms),
        ArchiveKind::Docker => resolve_docker(cas, &tar, tag, platforms),
    }
}

enum ArchiveKind {
    Oci,
    Docker,
}

fn archive_kind(tar: &TarIndex) -> Result<ArchiveKind> {
    let has = |p: &str| tar.lookup(p).is_ok_and(|m| m.is_some());
    if has("index.json") && (has("oci-layout") || !has("manifest.json")) {
        Ok(ArchiveKind::Oci)
    } else if has("manifest.json") {
        Ok(ArchiveKind::Docker)
    } else {
        bail!(
            "{} is neither a docker-archive (manifest.json) nor an oci-archive (index.json): {}",
            tar.what(),
            tar.remedy()
        )
    }
}

/// One image of an archive with the names it goes by.
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    /// Its names in the archive (`RepoTags`; `io.containerd.image.name`, or an
    /// `org.opencontainers.image.ref.name` that is a reference), each once; empty
    /// when it has none.
    pub names: Vec<String>,
    /// How to name it in a message when it has no name.
    pub label: String,
    /// The image, its blobs in the cache.
    pub image: LocalImage,
}

/// Every image of the archive at `path` (plain, zstd or gzip), each with all its
/// names, in the order the archive lists them; images listed twice (one image
/// under two names) once.
pub fn resolve_archive_images(
    cas: &Cas,
    path: &Path,
    platforms: &Platforms,
) -> Result<Vec<ArchiveImage>> {
    let tar = TarIndex::scan(cas, path)?;
    let mut out: Vec<(String, ArchiveImage)> = Vec::new();
    match archive_kind(&tar)? {
        ArchiveKind::Oci => {
            let entries = crate::resolve::layout::read_index(&tar)?;
            if entries.is_empty() {
                bail!(
                    "{} lists no images: {}",
                    tar.display("index.json"),
                    tar.remedy()
                );
            }
            for e in &entries {
                let name = e.image_name().map(str::to_string);
                if let Some((_, seen)) = out.iter_mut().find(|(d, _)| d == e.digest()) {
                    if let Some(n) = name {
                        if !seen.names.contains(&n) {
                            seen.names.push(n);
                        }
                    }
                    continue;
                }
                let image = crate::resolve::layout::resolve_entry(cas, &tar, e, platforms)?;
                out.push((
                    e.digest().to_string(),
                    ArchiveImage {
                        names: name.into_iter().collect(),
                        label: e.describe(),
                        image,
                    },
                ));
            }
        }
        ArchiveKind::Docker => {
            for entry in docker_entries(&tar)? {
                if out.iter().any(|(c, _)| *c == entry.config) {
                    continue;
                }
                let image = resolve_docker_entry(cas, &tar, &entry, None, platforms)?;
                let mut names: Vec<String> = Vec::new();
                for t in entry.tags() {
                    if !names.contains(t) {
                        names.push(t.clone());
                    }
                }
                out.push((
                    entry.config.clone(),
                    ArchiveImage {
                        names,
                        label: entry.label(),
                        image,
                    },
                ));
            }
        }
    }
    Ok(out.into_iter().map(|(_, i)| i).collect())
}

/// A member of the tar as the scan found it.
#[derive(Debug, Clone)]
enum Member {
    /// A regular file: where its bytes start, and how many.
    File { offset: u64, size: u64 },
    /// A regular file of a compressed archive, now the cached blob of this digest.
    Cached { digest: Digest, size: u64 },
    /// A symbolic or hard link, to this (normalized) member path.
    Link(String),
    /// A GNU sparse file: its bytes are not contiguous.
    Sparse,
}

/// A tar file scanned once, read member by member afterwards.
pub(crate) struct TarIndex {
    path: PathBuf,
    members: HashMap<String, Member>,
    /// For a compressed archive: the cache holding its members, and the
    /// compression (for messages).
    unpacked: Option<(Cas, &'static str)>,
}

/// Where a member's bytes are.
enum Located {
    /// In the tar file itself.
    InFile { offset: u64, size: u64 },
    /// In the cache.
    Cached { digest: Digest, size: u64 },
}

impl Located {
    fn size(&self) -> u64 {
        match self {
            Located::InFile { size, .. } | Located::Cached { size, .. } => *size,
        }
    }
}

/// The member path as the archive names it, normalized; `None` for the root.
fn member_name(path: &str) -> Option<String> {
    Some(normalize(path)).filter(|n| !n.is_empty())
}

/// A member that is not a regular file, as both readers keep it: a link (its
/// target resolved as extraction would), a sparse file (refused when read), or
/// `None` for what neither uses (folders, devices).
fn link_or_sparse<R: Read>(
    entry: &tar::Entry<R>,
    name: &str,
    not_tar: impl Fn() -> String,
) -> Result<Option<Member>> {
    let kind = entry.header().entry_type();
    if kind.is_gnu_sparse() {
        return Ok(Some(Member::Sparse));
    }
    if !(kind.is_symlink() || kind.is_hard_link()) {
        return Ok(None);
    }
    let target = entry
        .link_name()
        .with_context(not_tar)?
        .map(|t| t.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Some(Member::Link(link_target(
        name,
        &target,
        kind.is_symlink(),
    ))))
}

/// A link member's target, as a member path.
fn link_target(name: &str, target: &str, symlink: bool) -> String {
    if symlink && !target.starts_with('/') {
        // Relative to the link's own folder.
        match name.rsplit_once('/') {
            Some((dir, _)) => normalize(&format!("{dir}/{target}")),
            None => normalize(target),
        }
    } else {
        normalize(target)
    }
}

/// `a/./b/../c` -> `a/c`, leading `/` and `./` dropped; `..` never leaves the root.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

impl TarIndex {
    /// Scans `path`, recording each member's data offset and size; a compressed
    /// archive is decompressed once, its members into `cas` ([`Self::unpack`]).
    pub(crate) fn scan(cas: &Cas, path: &Path) -> Result<Self> {
        #[allow(clippy::disallowed_methods, reason = "the context names the path, with advice")]
        let mut file = std::fs::File::open(path).with_context(|| {
            format!(
                "cannot open the archive {}: check the `archive:` path in the spec (it is relative to the spec file)",
                path.display()
            )
        })?;
        let mut magic = [0u8; 6];
        let n = crate::io::read_up_to(&mut file, &mut magic)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let compression = match &magic[..n] {
            [0x1f, 0x8b, ..] => Some("gzip"),
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Some("zstd"),
            [0xfd, b'7', b'z', b'X', b'Z', 0] => Some("xz"),
            [b'B', b'Z', b'h', ..] => Some("bzip2"),
            _ => None,
        };
        match compression {
            Some(kind @ ("gzip" | "zstd")) => {
                file.seek(SeekFrom::Start(0))?;
                return Self::unpack(cas, path, file, kind);
            }
            Some(kind) => bail!(
                "{} is {kind}-compressed, which gapbundle does not read (K3s neither): recompress it with zstd (`{kind} -dc {p} | zstd -o {p}.zst`) or give the uncompressed tar",
                path.display(),
                p = path.display()
            ),
            None => {}
        }
        file.seek(SeekFrom::Start(0))?;
        let not_tar = || {
            format!(
                "{} is not a readable tar archive: {}",
                path.display(),
                remedy(path)
            )
        };
        let mut archive = tar::Archive::new(BufReader::new(file));
        let mut members = HashMap::new();
        for entry in archive.entries_with_seek().with_context(not_tar)? {
            let entry = entry.with_context(not_tar)?;
            let Some(name) = member_name(&entry.path().with_context(not_tar)?.to_string_lossy())
            else {
                continue;
            };
            let kind = entry.header().entry_type();
            let member = if kind.is_file() || kind.is_contiguous() {
                Member::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                }
            } else if let Some(m) = link_or_sparse(&entry, &name, not_tar)? {
                m
            } else {
                continue;
            };
            // As when extracting, a later member of the same name wins.
            members.insert(name, member);
        }
        Ok(Self {
            path: path.to_path_buf(),
            members,
            unpacked: None,
        })
    }

    /// Reads a `kind`-compressed archive once, as a stream: every regular member
    /// goes into `cas` as it passes (hashed on the way), and is found afterwards by
    /// its path as the blob it became.
    fn unpack(cas: &Cas, path: &Path, file: std::fs::File, kind: &'static str) -> Result<Self> {
        let not_tar = || {
            format!(
                "{} is not a readable {kind}-compressed tar archive: {}",
                path.display(),
                remedy(path)
            )
        };
        let reader = BufReader::with_capacity(1 << 20, file);
        let stream: Box<dyn Read> = match kind {
            "gzip" => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            _ => Box::new(zstd::stream::read::Decoder::with_buffer(reader).with_context(not_tar)?),
        };
        let mut archive = tar::Archive::new(stream);
        let mut members = HashMap::new();
        for entry in archive.entries().with_context(not_tar)? {
            let mut entry = entry.with_context(not_tar)?;
            let Some(name) = member_name(&entry.path().with_context(not_tar)?.to_string_lossy())
            else {
                continue;
            };
            let kind = entry.header().entry_type();
            let member = if kind.is_file() || kind.is_contiguous() {
                let (digest, size) = cas.import_reader(&mut entry, None).map_err(|e| match e {
                    CasError::Io(e)
                        if e.kind() == std::io::ErrorKind::InvalidData
                            || e.kind() == std::io::ErrorKind::UnexpectedEof =>
                    {
                        anyhow::Error::new(e).context(not_tar())
                    }
                    e => anyhow::Error::new(e).context(format!(
                        "cannot copy member {name} of {} into the cache {}",
                        path.display(),
                        cas.root().display()
                    )),
                })?;
                Member::Cached { digest, size }
            } else if let Some(m) = link_or_sparse(&entry, &name, not_tar)? {
                m
            } else {
                continue;
            };
            members.insert(name, member);
        }
        Ok(Self {
            path: path.to_path_buf(),
            members,
            unpacked: Some((cas.clone(), kind)),
        })
    }

    /// Where the bytes of the file at `path` are, following links; `None` when absent.
    fn lookup(&self, path: &str) -> Result<Option<Located>> {
        let mut name = normalize(path);
        for _ in 0..MAX_LINKS {
            match self.members.get(&name) {
                None => return Ok(None),
                Some(Member::File { offset, size }) => {
                    return Ok(Some(Located::InFile {
                        offset: *offset,
                        size: *size,
                    }))
                }
                Some(Member::Cached { digest, size }) => {
                    return Ok(Some(Located::Cached {
                        digest: *digest,
                        size: *size,
                    }))
                }
                Some(Member::Link(target)) => name = target.clone(),
                Some(Member::Sparse) => bail!(
                    "{} is stored as a GNU sparse file, which gapbundle cannot read in place: {}",
                    self.display(path),
                    self.remedy()
                ),
            }
        }
        bail!(
            "{} is a chain of more than {MAX_LINKS} links (a loop?): {}",
            self.display(path),
            self.remedy()
        )
    }
}

fn remedy(path: &Path) -> String {
    format!(
        "(re)create it with `skopeo copy docker://REGISTRY/IMAGE:TAG oci-archive:{p}` or `docker save IMAGE -o {p}`",
        p = path.display()
    )
}

impl LayoutFiles for TarIndex {
    fn display(&self, path: &str) -> String {
        match &self.unpacked {
            Some((_, kind)) => format!(
                "{} (member {}, {kind}-decompressed)",
                self.path.display(),
                normalize(path)
            ),
            None => format!("{} (member {})", self.path.display(), normalize(path)),
        }
    }
    fn what(&self) -> String {
        self.path.display().to_string()
    }
    fn remedy(&self) -> String {
        remedy(&self.path)
    }
    fn pick_hint(&self) -> String {
        format!(
            "keep one image per archive, e.g. `skopeo copy oci-archive:{p}:NAME oci-archive:ONE.tar` (or `docker-archive:{p}:NAME`)",
            p = self.path.display()
        )
    }
    fn size(&self, path: &str) -> Result<Option<u64>> {
        Ok(self.lookup(path)?.map(|l| l.size()))
    }
    fn known_digest(&self, path: &str) -> Option<(Digest, u64)> {
        match self.lookup(path) {
            Ok(Some(Located::Cached { digest, size })) => Some((digest, size)),
            _ => None,
        }
    }
    fn open(&self, path: &str) -> Result<Box<dyn Read + '_>> {
        let located = self
            .lookup(path)?
            .with_context(|| format!("{} does not exist", self.display(path)))?;
        let (offset, size) = match located {
            Located::InFile { offset, size } => (offset, size),
            Located::Cached { digest, size } => {
                let (cas, _) = self.unpacked.as_ref().expect("cached members are unpacked");
                let f = cas.open_read(&digest).with_context(|| {
                    format!(
                        "member {} of {} left the cache",
                        normalize(path),
                        self.what()
                    )
                })?;
                return Ok(Box::new(BufReader::with_capacity(1 << 20, f.take(size))));
            }
        };
        // A handle per member: readers never share a file position.
        let mut f = fs_err::File::open(&self.path)?;
        f.seek(SeekFrom::Start(offset))
            .with_context(|| format!("cannot seek in {}", self.path.display()))?;
        Ok(Box::new(BufReader::with_capacity(1 << 20, f.take(size))))
    }
}

/// One image of a docker-archive's `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    #[serde(default)]
    layers: Vec<String>,
}

impl DockerEntry {
    fn tags(&self) -> &[String] {
        self.repo_tags.as_deref().unwrap_or_default()
    }
    fn label(&self) -> String {
        if self.tags().is_empty() {
            format!("(untagged, config {})", self.config)
        } else {
            self.tags().join(" = ")
        }
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Picks the image and the name it goes by.
fn select_docker<'a>(
    tar: &TarIndex,
    entries: &'a [DockerEntry],
    tag: Option<&str>,
) -> Result<(&'a DockerEntry, Option<String>)> {
    let manifest = tar.display("manifest.json");
    let available = || {
        entries
            .iter()
            .map(DockerEntry::label)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match tag {
        None => match entries {
            [] => bail!("{manifest} lists no images: {}", tar.remedy()),
            [one] => Ok((one, one.tags().first().cloned())),
            _ => bail!(
                "{} holds {} images and none was named: {}, NAME being one of: {}",
                tar.what(),
                entries.len(),
                tar.pick_hint(),
                available()
            ),
        },
        Some(tag) => {
            let find = |exact: bool| -> Vec<(&'a DockerEntry, &'a String)> {
                entries
                    .iter()
                    .filter_map(|e| {
                        e.tags()
                            .iter()
                            .find(|t| {
                                if exact {
                                    *t == tag
                                } else {
                                    reference_matches(t, tag)
                                }
                            })
                            .map(|t| (e, t))
                    })
                    .collect()
            };
            let mut found = find(true);
            if found.is_empty() {
                found = find(false);
            }
            let mut configs: Vec<&str> = found.iter().map(|(e, _)| e.config.as_str()).collect();
            configs.sort();
            configs.dedup();
            match configs.len() {
                0 => bail!(
                    "{} has no image tagged `{tag}` (RepoTags in {manifest}); it has: {}",
                    tar.what(),
                    available()
                ),
                1 => Ok((found[0].0, Some(found[0].1.clone()))),
                _ => bail!(
                    "`{tag}` names {} different images in {manifest}: {}; give a more specific name",
                    configs.len(),
                    found
                        .iter()
                        .map(|(e, t)| format!("{t} (config {})", e.config))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        }
    }
}

/// The 64 hex digits a docker-archive file name carries, if it has them
/// (`<hex>.json`, `<hex>.tar`, `blobs/sha256/<hex>`).
fn digest_in_name(member: &str) -> Option<Digest> {
    let base = member.rsplit('/').next().unwrap_or(member);
    let stem = base
        .strip_suffix(".json")
        .or_else(|| base.strip_suffix(".tar"))
        .unwrap_or(base);
    Digest::from_hex(stem).ok()
}

/// The images `manifest.json` of a docker-archive lists.
fn docker_entries(tar: &TarIndex) -> Result<Vec<DockerEntry>> {
    let manifest_path = "manifest.json";
    let raw = read_small(tar, manifest_path)?;
    let entries: Vec<DockerEntry> = serde_json::from_slice(&raw).with_context(|| {
        format!(
            "{} is not a docker-archive manifest (a JSON list of {{Config, RepoTags, Layers}}): {}",
            tar.display(manifest_path),
            tar.remedy()
        )
    })?;
    if entries.is_empty() {
        bail!(
            "{} lists no images: {}",
            tar.display(manifest_path),
            tar.remedy()
        );
    }
    Ok(entries)
}

fn resolve_docker(
    cas: &Cas,
    tar: &TarIndex,
    tag: Option<&str>,
    platforms: &Platforms,
) -> Result<LocalImage> {
    let entries = docker_entries(tar)?;
    let (entry, name) = select_docker(tar, &entries, tag)?;
    resolve_docker_entry(cas, tar, entry, name, platforms)
}

/// One image of a docker-archive, named `name`.
fn resolve_docker_entry(
    cas: &Cas,
    tar: &TarIndex,
    entry: &DockerEntry,
    name: Option<String>,
    platforms: &Platforms,
) -> Result<LocalImage> {
    let manifest_path = "manifest.json";

    // The config, as is: its sha256 is the image ID.
    let config_path = normalize(&entry.config);
    let config = read_small(tar, &config_path)?;
    let config_digest = Digest::of(&config);
    if let Some(named) = digest_in_name(&config_path) {
        if named != config_digest {
            return Err(corrupted(
                tar,
                &config_path,
                (named, config.len() as u64),
                (config_digest, config.len() as u64),
            ));
        }
    }
    cas.put_bytes(&config).with_context(|| {
        format!(
            "cannot store {} in the cache {}",
            tar.display(&config_path),
            cas.root().display()
        )
    })?;
    let parsed: DockerConfig = serde_json::from_slice(&config).with_context(|| {
        format!(
            "{} is not an image config (invalid JSON): {}",
            tar.display(&config_path),
            tar.remedy()
        )
    })?;
    let diff_ids = parsed.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != entry.layers.len() {
        bail!(
            "{} lists {} layers but its config {} has {} rootfs.diff_ids: the archive is inconsistent; {}",
            tar.display(manifest_path),
            entry.layers.len(),
            tar.display(&config_path),
            diff_ids.len(),
            tar.remedy()
        );
    }

    // The layers, as is.
    let mut layers = Vec::new();
    for (layer, diff_id) in entry.layers.iter().zip(&diff_ids) {
        let path = normalize(layer);
        let size = tar.size(&path)?.with_context(|| {
            format!(
                "{} is missing: {} lists it as a layer; {}",
                tar.display(&path),
                tar.display(manifest_path),
                tar.remedy()
            )
        })?;
        let mut head = [0u8; 4];
        let n = crate::io::read_up_to(&mut tar.open(&path)?, &mut head)
            .with_context(|| format!("cannot read {}", tar.display(&path)))?;
        let media_type = match &head[..n] {
            [0x1f, 0x8b, ..] => OCI_LAYER_TAR_GZIP,
            [0x28, 0xb5, 0x2f, 0xfd] => OCI_LAYER_TAR_ZSTD,
            _ => OCI_LAYER_TAR,
        };
        // An uncompressed layer's digest is its diff ID, so it can be checked.
        let expected = if media_type == OCI_LAYER_TAR {
            let d: Digest = diff_id.parse().with_context(|| {
                format!(
                    "{} has a diff ID `{diff_id}` that gapbundle cannot verify (only sha256 is supported)",
                    tar.display(&config_path)
                )
            })?;
            Some((d, size))
        } else {
            None
        };
        let (digest, size) = import(cas, tar, &path, expected)?;
        layers.push(json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": size,
        }));
    }

    let manifest = canonical::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": OCI_CONFIG_MEDIA_TYPE,
            "digest": config_digest.to_string(),
            "size": config.len(),
        },
        "layers": layers,
    }))
    .context("synthesizing the image manifest")?;
    cas.put_bytes(&manifest).with_context(|| {
        format!(
            "cannot store a manifest in the cache {}",
            cas.root().display()
        )
    })?;
    let plan = image::walk(
        &manifest,
        MANIFEST_MEDIA_TYPE,
        platforms,
        &mut CasFetch { cas },
    )
    .with_context(|| format!("image {} of {}", entry.label(), tar.what()))?;
    Ok(LocalImage { name, plan })
}

/// Reads manifests and configs back from the cache (where this module put them).
struct CasFetch<'a> {
    cas: &'a Cas,
}

impl ManifestFetch for CasFetch<'_> {
    fn fetch(&mut self, digest: &Digest, _media_type: &str) -> Result<Vec<u8>> {
        let bytes = self
            .cas
            .read_small(digest)
            .with_context(|| format!("blob {digest} is not in the cache"))?;
        if Digest::of(&bytes) != *digest {
            bail!(
                "the cached blob {} is damaged: delete it and run again",
                self.cas.path(digest).display()
            );
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_normalize() {
        assert_eq!(normalize("./manifest.json"), "manifest.json");
        assert_eq!(normalize("/a/./b/../c"), "a/c");
        assert_eq!(normalize("../../etc/passwd"), "etc/passwd");
        assert_eq!(
            digest_in_name(&format!("{}.json", "ab".repeat(32))),
            Some(Digest::from_hex(&"ab".repeat(32)).unwrap())
        );
        assert_eq!(digest_in_name("0123/layer.tar"), None);
    }
}
