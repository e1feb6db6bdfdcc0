//! The bundle spec file (YAML) that a release engineer writes.
//!
//! Parsing is strict (unknown keys are errors) because a typo such as `imags:` would
//! otherwise produce a bundle that silently lacks what the field needs, found out
//! only on the far side of the air gap. Each image entry is a flat struct validated
//! after parsing, rather than an untagged enum, so a mistake is reported as
//! `images[2]: give exactly one of ref, layout, archive` instead of serde's "did not
//! match any variant".

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::platform::Platforms;

/// An error in a spec file, located for the person who wrote it.
#[derive(Debug, thiserror::Error)]
#[error("{path}{location}: {message}")]
pub struct SpecError {
    /// The spec file.
    pub path: String,
    /// `:line:column` when known.
    pub location: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl crate::error::Classify for SpecError {
    /// A spec that cannot be used is bad input.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        Some(crate::error::ErrorClass::Input)
    }
}

impl SpecError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.display().to_string(),
            location: String::new(),
            message: message.into(),
        }
    }
}

/// The spec as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Bundle name (also the folder its manifests land in on a K3s node).
    pub name: String,
    /// Bundle version; quote it in YAML (`"1.0"`).
    pub version: String,
    /// Platforms to keep from multi-platform images; default `all`.
    #[serde(default)]
    pub platforms: Platforms,
    /// Images to carry.
    #[serde(default)]
    pub images: Vec<ImageEntry>,
    /// Whether registry images are bundled with their referrers (signatures,
    /// attestations, SBOMs attached to them: format.md section 18); default no.
    #[serde(default)]
    pub referrers: bool,
    /// Whether images referenced by rendered workloads are added automatically.
    #[serde(default = "yes", rename = "discoverImages")]
    pub discover_images: bool,
    /// Nix installables and store paths, with their closures.
    #[serde(default)]
    pub nix: Vec<NixEntry>,
    /// Helm charts, rendered with `helm template`.
    #[serde(default)]
    pub charts: Vec<ChartEntry>,
    /// Kustomize overlays, rendered with `kubectl kustomize`.
    #[serde(default)]
    pub kustomize: Vec<KustomizeEntry>,
    /// Plain manifests (files, globs) or flake outputs holding rendered YAML.
    #[serde(default)]
    pub manifests: Vec<ManifestEntry>,
    /// Files for the target host (K3s's binary and install script, its air-gap
    /// image tarball, configuration): local files or folders, downloads pinned by
    /// sha256, flake outputs.
    #[serde(default)]
    pub files: Vec<FileEntry>,
}

/// One `files:` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileEntry {
    /// A local file or folder, relative to the spec's folder.
    pub path: Option<String>,
    /// A file to download (http or https).
    pub url: Option<String>,
    /// The sha256 of the download (64 hex digits, optionally `sha256:` first).
    pub sha256: Option<String>,
    /// A flake output: a file or a folder.
    pub installable: Option<String>,
    /// The absolute path on the target (a folder's files go below it).
    pub target: String,
    /// Permission bits, quoted: `"0755"`.
    pub mode: Option<serde_yaml_ng::Value>,
}

/// Where a file comes from, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// A local file or folder (resolved against the spec's folder), as written
    /// in the spec too (for the object's `source`).
    Path(PathBuf, String),
    /// A download and the digest it must have.
    Url(String, crate::bundle::Digest),
    /// A flake output.
    Installable(String),
}

impl FileSource {
    /// `path:…`, `url:…`, `installable:…`: the object's `meta.source`.
    pub fn describe(&self) -> String {
        match self {
            FileSource::Path(_, written) => format!("path:{written}"),
            FileSource::Url(u, _) => format!("url:{u}"),
            FileSource::Installable(i) => format!("installable:{i}"),
        }
    }
}

/// A validated `files:` entry.
#[derive(Debug, Clone)]
pub struct FileRequest {
    /// Where it comes from.
    pub source: FileSource,
    /// The absolute path on the target.
    pub target: String,
    /// The mode given, if any (else each file's own: 0755 when executable, else 0644).
    pub mode: Option<u32>,
}

fn yes() -> bool {
    true
}

/// One `nix:` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NixEntry {
    /// A flake installable, relative to the spec's folder (`.#packages.x86_64-linux.agent`).
    pub installable: Option<String>,
    /// A store path already in the local store.
    pub store_path: Option<String>,
    /// Name of the GC root made on import.
    pub gc_root: Option<String>,
    /// Also bundle the flake's input sources (what `nix flake archive` copies).
    #[serde(default)]
    pub include_flake_inputs: bool,
    /// The output is a NixOS system toplevel the importer activates this way
    /// (`switch`, `boot`, `test`; default: none).
    pub activate: Option<crate::bundle::meta::Activation>,
}

/// One `charts:` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ChartEntry {
    /// A local chart directory or `.tgz`.
    pub path: Option<String>,
    /// A chart repository URL (serving `index.yaml`).
    pub repo: Option<String>,
    /// An OCI chart reference (`oci://host/repo/chart`).
    pub oci: Option<String>,
    /// Chart name in a repository.
    pub name: Option<String>,
    /// Chart version.
    pub version: Option<String>,
    /// Release name (default: the chart name).
    pub release: Option<String>,
    /// Namespace to render into.
    pub namespace: Option<String>,
    /// Create that namespace when nothing in the bundle does (default true): a
    /// Namespace document first in the chart's file, or, with `chartMode:
    /// helmchart`, K3s's `spec.createNamespace`.
    pub create_namespace: Option<bool>,
    /// Inline values.
    pub values: Option<serde_yaml_ng::Value>,
    /// Values files, relative to the spec's folder.
    #[serde(default)]
    pub values_files: Vec<String>,
    /// `manifests` (default: rendered YAML) or `helmchart` (a K3s HelmChart resource).
    pub chart_mode: Option<String>,
    /// Override the top-level `discoverImages`.
    pub discover_images: Option<bool>,
}

/// One `kustomize:` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KustomizeEntry {
    /// The overlay directory.
    pub path: String,
    /// Override the top-level `discoverImages`.
    pub discover_images: Option<bool>,
}

/// One `manifests:` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ManifestEntry {
    /// A file or glob, relative to the spec's folder.
    pub path: Option<String>,
    /// A flake output holding rendered YAML.
    pub installable: Option<String>,
    /// Override the top-level `discoverImages`.
    pub discover_images: Option<bool>,
}

/// One `images:` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageEntry {
    /// A registry reference (`host/repo:tag` or `host/repo@sha256:...`).
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// A local OCI layout, `DIR` or `DIR:TAG`.
    pub layout: Option<String>,
    /// A docker-archive or oci-archive tar file.
    pub archive: Option<String>,
    /// A flake output that is an OCI or docker archive.
    pub installable: Option<String>,
    /// A `.txt` image list: one registry reference a line, as K3s reads the lists
    /// in `agent/images` ([`parse_image_list`]).
    pub list: Option<String>,
    /// Name to give a layout or archive image in the bundle.
    pub name: Option<String>,
    /// Platforms for this image, overriding the top-level list.
    pub platforms: Option<Platforms>,
    /// Whether this registry image (or every image of this list) is bundled with
    /// its referrers, overriding the top-level `referrers`.
    pub referrers: Option<bool>,
}

/// Where an image comes from, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSource {
    /// A registry reference.
    Registry(String),
    /// A local OCI layout directory and optional tag.
    Layout {
        /// The directory (resolved against the spec's folder).
        dir: PathBuf,
        /// The ref name inside the layout.
        tag: Option<String>,
    },
    /// A tar archive (resolved against the spec's folder): a docker-archive or an
    /// oci-archive, plain or zstd/gzip-compressed, with one image or several.
    Archive(PathBuf),
    /// A flake output that builds an OCI or docker archive.
    Installable(String),
    /// An image list file (resolved against the spec's folder): each reference in
    /// it is bundled as a registry image.
    List(PathBuf),
}

impl ImageSource {
    /// A stable key for the lock file.
    pub fn lock_key(&self, base: &Path) -> String {
        let rel = |p: &Path| {
            p.strip_prefix(base)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned()
        };
        match self {
            ImageSource::Registry(r) => format!("ref:{r}"),
            ImageSource::Layout { dir, tag } => match tag {
                Some(t) => format!("layout:{}:{t}", rel(dir)),
                None => format!("layout:{}", rel(dir)),
            },
            ImageSource::Archive(p) => format!("archive:{}", rel(p)),
            ImageSource::Installable(i) => format!("installable:{i}"),
            ImageSource::List(p) => format!("list:{}", rel(p)),
        }
    }
}

/// One line of an image list that is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// The references of an image list, as K3s reads the `.txt` files in
/// `agent/images`: one a line, white space around it trimmed, blank lines
/// skipped. K3s logs a line it cannot parse as a reference and goes on; lines
/// starting with `#` are such lines to K3s, so they are skipped here too, as
/// comments. Any other line that is not a reference is an error here: a list
/// that silently lacks an image is found out only across the gap.
pub fn parse_image_list(text: &str) -> Result<Vec<String>, ListError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let r = line.trim();
        if r.is_empty() || r.starts_with('#') {
            continue;
        }
        crate::oci::Reference::parse(r).map_err(|e| ListError {
            line: i + 1,
            message: format!("`{r}` is not an image reference ({e})"),
        })?;
        if !out.iter().any(|o| o == r) {
            out.push(r.to_string());
        }
    }
    Ok(out)
}

/// A validated image entry.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    /// Where it comes from.
    pub source: ImageSource,
    /// Name override.
    pub name: Option<String>,
    /// Platforms to keep.
    pub platforms: Platforms,
    /// Whether its referrers are bundled too (registry images only).
    pub referrers: bool,
}

/// A spec file, parsed and validated.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// Path of the spec file.
    pub path: PathBuf,
    /// Its folder; relative paths in the spec are relative to it.
    pub base: PathBuf,
    /// The raw bytes (stored in the bundle).
    pub bytes: Vec<u8>,
    /// The parsed spec.
    pub spec: Spec,
    /// Validated images.
    pub images: Vec<ImageRequest>,
    /// Validated files.
    pub files: Vec<FileRequest>,
}

/// Parses spec text. `path` is used for messages and to resolve relative paths.
pub fn parse(path: &Path, text: &str) -> Result<LoadedSpec, SpecError> {
    let spec: Spec = serde_yaml_ng::from_str(text).map_err(|e| {
        let location = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        let mut message = e.to_string();
        // serde_yaml_ng appends " at line X column Y"; we already put it up front.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        SpecError {
            path: path.display().to_string(),
            location,
            message,
        }
    })?;
    let base = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    if !crate::bundle::manifest::valid_bundle_name(&spec.name) {
        return Err(SpecError::new(
            path,
            format!(
                "name `{}` cannot name a bundle: use 1 to {} letters, digits, `.`, `_` and `-`, starting with a letter or digit (it names a folder and a file on every target, as it is)",
                crate::text::escaped(&spec.name),
                crate::bundle::manifest::MAX_NAME_LEN
            ),
        ));
    }
    validate_kubernetes(path, &spec)?;
    let mut images = Vec::new();
    for (i, e) in spec.images.iter().enumerate() {
        let given = [&e.reference, &e.layout, &e.archive, &e.installable, &e.list]
            .iter()
            .filter(|x| x.is_some())
            .count();
        if given != 1 {
            return Err(SpecError::new(
                path,
                format!(
                    "images[{i}]: give exactly one of `ref`, `layout`, `archive`, `installable` or `list`"
                ),
            ));
        }
        if let (Some(l), Some(_)) = (&e.list, &e.name) {
            return Err(SpecError::new(
                path,
                format!("images[{i}]: `name` is not for `list: {l}`; each listed image keeps its reference"),
            ));
        }
        let source = if let Some(r) = &e.reference {
            if e.name.is_some() {
                return Err(SpecError::new(
                    path,
                    format!("images[{i}]: `name` is only for `layout` and `archive` images; a registry image keeps its reference `{r}`"),
                ));
            }
            ImageSource::Registry(r.trim().to_string())
        } else if let Some(l) = &e.layout {
            let (dir, tag) = split_layout(&base, l);
            ImageSource::Layout { dir, tag }
        } else if let Some(a) = &e.archive {
            ImageSource::Archive(base.join(a))
        } else if let Some(l) = &e.list {
            ImageSource::List(base.join(l))
        } else {
            ImageSource::Installable(e.installable.clone().unwrap_or_default())
        };
        let registry = matches!(source, ImageSource::Registry(_) | ImageSource::List(_));
        if e.referrers == Some(true) && !registry {
            return Err(SpecError::new(
                path,
                format!("images[{i}]: `referrers` is for registry images (`ref:` or `list:`): a layout or archive has no registry to ask for them"),
            ));
        }
        images.push(ImageRequest {
            referrers: registry && e.referrers.unwrap_or(spec.referrers),
            source,
            name: e.name.clone(),
            platforms: e
                .platforms
                .clone()
                .unwrap_or_else(|| spec.platforms.clone()),
        });
    }
    let files = validate_files(path, &base, &spec)?;
    Ok(LoadedSpec {
        path: path.to_path_buf(),
        base,
        bytes: text.as_bytes().to_vec(),
        spec,
        images,
        files,
    })
}

/// Checks the `files:` entries: one source each, a digest for every download, an
/// absolute plain target (format.md section 15), a mode of octal digits.
fn validate_files(path: &Path, base: &Path, spec: &Spec) -> Result<Vec<FileRequest>, SpecError> {
    let bad = |m: String| Err(SpecError::new(path, m));
    let mut out = Vec::new();
    for (i, e) in spec.files.iter().enumerate() {
        let given = [&e.path, &e.url, &e.installable]
            .iter()
            .filter(|x| x.is_some())
            .count();
        if given != 1 {
            return bad(format!(
                "files[{i}]: give exactly one of `path` (a local file or folder), `url` (with `sha256`) or `installable` (a flake output)"
            ));
        }
        if let Err(why) = crate::bundle::meta::target_components(&e.target) {
            return bad(format!(
                "files[{i}]: target {why}; give the absolute path on the target host, e.g. /usr/local/bin/k3s"
            ));
        }
        let source = match (&e.path, &e.url, &e.installable) {
            (Some(p), _, _) => FileSource::Path(base.join(p), p.clone()),
            (None, None, inst) => FileSource::Installable(inst.clone().unwrap_or_default()),
            (None, Some(u), _) => {
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    return bad(format!("files[{i}]: url `{u}` is not http:// or https://"));
                }
                let Some(sum) = &e.sha256 else {
                    return bad(format!(
                        "files[{i}]: a `url` needs `sha256:` (64 hex digits, as sha256sum prints them): the download is checked against it, and the bundle pins it"
                    ));
                };
                let hex = sum.trim().strip_prefix("sha256:").unwrap_or(sum.trim());
                let digest =
                    crate::bundle::Digest::from_hex(&hex.to_ascii_lowercase()).map_err(|_| {
                        SpecError::new(
                            path,
                            format!("files[{i}]: sha256 `{sum}` is not 64 hex digits"),
                        )
                    })?;
                FileSource::Url(u.clone(), digest)
            }
        };
        if e.sha256.is_some() && e.url.is_none() {
            return bad(format!(
                "files[{i}]: `sha256` is only for `url` files (a local file or flake output is hashed as it is read)"
            ));
        }
        let mode = match &e.mode {
            None => None,
            Some(serde_yaml_ng::Value::String(m)) => {
                let digits = m.trim();
                let ok = (3..=4).contains(&digits.len())
                    && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
                    && (digits.len() == 3 || digits.starts_with('0'));
                if !ok {
                    return bad(format!(
                        "files[{i}]: mode `{m}` is not three or four octal digits without setuid, setgid or sticky bit (\"0644\", \"0755\")"
                    ));
                }
                Some(u32::from_str_radix(digits, 8).expect("octal digits"))
            }
            Some(v) => {
                return bad(format!(
                    "files[{i}]: write the mode quoted, as octal digits: `mode: \"0755\"` (YAML reads {} as a number)",
                    serde_yaml_ng::to_string(v).unwrap_or_default().trim()
                ))
            }
        };
        if out.iter().any(|f: &FileRequest| f.target == e.target) {
            return bad(format!("files[{i}]: target {} is given twice", e.target));
        }
        out.push(FileRequest {
            source,
            target: e.target.clone(),
            mode,
        });
    }
    Ok(out)
}

/// Checks `charts:`, `kustomize:` and `manifests:` entries for combinations that
/// cannot work, before anything is fetched or rendered.
fn validate_kubernetes(path: &Path, spec: &Spec) -> Result<(), SpecError> {
    let bad = |m: String| Err(SpecError::new(path, m));
    for (i, c) in spec.charts.iter().enumerate() {
        let given = [&c.path, &c.repo, &c.oci]
            .iter()
            .filter(|x| x.is_some())
            .count();
        if given != 1 {
            return bad(format!(
                "charts[{i}]: give exactly one of `path` (local chart), `repo` (chart repository URL, with `name`) or `oci` (oci://host/repo/chart)"
            ));
        }
        if c.repo.is_some() && c.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return bad(format!(
                "charts[{i}]: a `repo` chart needs `name:` (the chart's name in the repository's index.yaml)"
            ));
        }
        if c.repo.is_none() && c.name.is_some() {
            return bad(format!(
                "charts[{i}]: `name` is only for `repo` charts; a local or OCI chart's name comes from its Chart.yaml (use `release:` to name the release)"
            ));
        }
        if let Some(o) = &c.oci {
            if !o.starts_with("oci://") || o.len() <= "oci://".len() {
                return bad(format!(
                    "charts[{i}]: `oci: {o}` must look like oci://host/repo/chart (the version goes in `version:`)"
                ));
            }
        }
        if c.path.is_some() && c.version.is_some() {
            return bad(format!(
                "charts[{i}]: `version` is only for `repo` and `oci` charts; a local chart's version is in its Chart.yaml"
            ));
        }
        if let Some(m) = &c.chart_mode {
            if m != "manifests" && m != "helmchart" {
                return bad(format!(
                    "charts[{i}]: chartMode `{m}` is not one of `manifests` (rendered YAML) or `helmchart` (a K3s HelmChart resource)"
                ));
            }
        }
        if let Some(v) = &c.values {
            if !(v.is_mapping() || v.is_null()) {
                return bad(format!(
                    "charts[{i}]: `values` must be a mapping, e.g. `values: {{replicaCount: 2}}`"
                ));
            }
        }
    }
    for (i, k) in spec.kustomize.iter().enumerate() {
        if k.path.trim().is_empty() {
            return bad(format!(
                "kustomize[{i}]: `path` is empty; give the overlay folder"
            ));
        }
    }
    for (i, m) in spec.manifests.iter().enumerate() {
        if m.path.is_some() == m.installable.is_some() {
            return bad(format!(
                "manifests[{i}]: give exactly one of `path` (a file or glob) or `installable` (a flake output holding YAML)"
            ));
        }
    }
    Ok(())
}

/// Loads a spec file from disk.
pub fn load(path: &Path) -> Result<LoadedSpec, SpecError> {
    #[allow(clippy::disallowed_methods, reason = "SpecError names the path")]
    let text = std::fs::read_to_string(path).map_err(|e| {
        SpecError::new(
            path,
            format!("cannot read the spec file: {e} (pass it with -f FILE)"),
        )
    })?;
    parse(path, &text)
}

/// `DIR:TAG` or `DIR`. The whole string wins when it names an existing directory, so
/// a directory with a colon in its name still works.
fn split_layout(base: &Path, text: &str) -> (PathBuf, Option<String>) {
    let whole = base.join(text);
    if whole.is_dir() {
        return (whole, None);
    }
    match text.rsplit_once(':') {
        Some((dir, tag)) if !tag.is_empty() && !tag.contains('/') => {
            (base.join(dir), Some(tag.to_string()))
        }
        _ => (whole, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<LoadedSpec, SpecError> {
        parse(Path::new("dir/bundle.yaml"), text)
    }

    #[test]
    fn the_issue_example_parses() {
        let s = p(r#"
name: edge-site
version: "1.0"
platforms: [linux/amd64]
images:
  - ref: 127.0.0.1:5000/team/app:1.2
  - layout: ./images/tool:latest
  - archive: ./images/legacy.tar
"#)
        .unwrap();
        assert_eq!(s.images.len(), 3);
        assert_eq!(
            s.images[0].source,
            ImageSource::Registry("127.0.0.1:5000/team/app:1.2".into())
        );
        assert_eq!(
            s.images[1].source,
            ImageSource::Layout {
                dir: "dir/./images/tool".into(),
                tag: Some("latest".into())
            }
        );
        assert_eq!(s.base, Path::new("dir"));
    }

    #[test]
    fn referrers_are_for_registry_images_and_off_unless_asked_for() {
        let head = "name: x\nversion: \"1\"\n";
        let s = p(&format!(
            "{head}images:\n  - ref: a/b:1\n  - ref: a/c:1\n    referrers: true\n  - layout: l\n"
        ))
        .unwrap();
        let asked: Vec<bool> = s.images.iter().map(|i| i.referrers).collect();
        assert_eq!(asked, [false, true, false]);
        let s = p(&format!(
            "{head}referrers: true\nimages:\n  - ref: a/b:1\n  - ref: a/c:1\n    referrers: false\n  - layout: l\n"
        ))
        .unwrap();
        let asked: Vec<bool> = s.images.iter().map(|i| i.referrers).collect();
        assert_eq!(asked, [true, false, false]);
        let e = p(&format!(
            "{head}images:\n  - layout: l\n    referrers: true\n"
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("`referrers` is for registry images"),
            "{e}"
        );
    }

    #[test]
    fn errors_carry_line_and_column() {
        let e = p("name: x\nversion: \"1\"\nimags: []\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("dir/bundle.yaml:3:1: unknown field `imags`"),
            "{e}"
        );
        // An unquoted 1.0 is kept as its text, not turned into the float 1.
        assert_eq!(p("name: x\nversion: 1.10\n").unwrap().spec.version, "1.10");
        let e = p("name: x\nversion: [1]\n").unwrap_err();
        assert!(e.to_string().starts_with("dir/bundle.yaml:2:10:"), "{e}");
        let e = p("name: [x\n").unwrap_err();
        assert!(e.location.starts_with(':'), "{e}");
    }

    #[test]
    fn an_unknown_platform_is_an_input_error_with_line_and_column() {
        let head = "name: x\nversion: \"1\"\n";
        let e = p(&format!("{head}platforms: [linux/amd64, linux/amd46]\n")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("dir/bundle.yaml:3:"), "{msg}");
        assert!(msg.contains("`amd46` is not an architecture"), "{msg}");
        let e = p(&format!(
            "{head}images:\n  - ref: a/b:1\n    platforms: [lnux/arm64]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().starts_with("dir/bundle.yaml:5:"), "{e}");
        assert!(
            e.to_string().contains("`lnux` is not an operating system"),
            "{e}"
        );
        let e = p(&format!("{head}platforms: []\n")).unwrap_err();
        assert!(e.to_string().contains("platforms is empty"), "{e}");
        let ok = p(&format!(
            "{head}platforms: [linux/x86_64, linux/arm64/v8]\n"
        ))
        .unwrap();
        assert_eq!(
            ok.spec.platforms.to_strings(),
            vec!["linux/amd64".to_string(), "linux/arm64".to_string()]
        );
    }

    #[test]
    fn kubernetes_entries_are_checked() {
        let head = "name: x\nversion: \"1\"\n";
        for (body, want) in [
            (
                "charts:\n  - path: a\n    oci: oci://h/c\n",
                "charts[0]: give exactly one",
            ),
            ("charts:\n  - repo: http://h/\n", "needs `name:`"),
            ("charts:\n  - oci: h/c\n", "oci://host/repo/chart"),
            (
                "charts:\n  - path: a\n    name: b\n",
                "`name` is only for `repo`",
            ),
            (
                "charts:\n  - path: a\n    chartMode: helm\n",
                "chartMode `helm`",
            ),
            (
                "charts:\n  - path: a\n    values: [1]\n",
                "must be a mapping",
            ),
            ("kustomize:\n  - path: ''\n", "kustomize[0]"),
            ("manifests:\n  - {}\n", "manifests[0]: give exactly one"),
        ] {
            let e = p(&format!("{head}{body}")).unwrap_err();
            assert!(e.message.contains(want), "{body}: {e}");
        }
        let ok = p(&format!(
            "{head}discoverImages: false\ncharts:\n  - path: ./charts/app\n    chartMode: helmchart\n  - repo: http://h/\n    name: web\n    version: 0.1.0\n    values: {{a: 1}}\nkustomize:\n  - path: ./o\n    discoverImages: true\nmanifests:\n  - path: ./extra/*.yaml\n"
        ))
        .unwrap();
        assert!(!ok.spec.discover_images);
        assert_eq!(ok.spec.kustomize[0].discover_images, Some(true));
    }

    #[test]
    fn file_entries_are_checked() {
        let head = "name: x\nversion: \"1\"\nfiles:\n";
        let sum = "ab".repeat(32);
        let s = p(&format!(
            "{head}  - path: ./dist/k3s\n    target: /usr/local/bin/k3s\n    mode: \"0755\"\n  - url: https://example.org/a.tar.zst\n    sha256: \"{sum}\"\n    target: /var/lib/rancher/k3s/agent/images/a.tar.zst\n  - installable: .#site-config\n    target: /etc/site\n"
        ))
        .unwrap();
        assert_eq!(s.files.len(), 3);
        assert_eq!(s.files[0].mode, Some(0o755));
        assert_eq!(s.files[0].source.describe(), "path:./dist/k3s");
        assert_eq!(
            s.files[1].source,
            FileSource::Url(
                "https://example.org/a.tar.zst".into(),
                crate::bundle::Digest::from_hex(&sum).unwrap()
            )
        );
        for (body, want) in [
            ("  - url: https://e/x\n    target: /x\n", "needs `sha256:`"),
            ("  - path: a\n    target: etc/x\n", "not an absolute path"),
            ("  - path: a\n    target: /etc/../x\n", "`..` component"),
            (
                "  - path: a\n    target: /x\n    mode: 755\n",
                "write the mode quoted",
            ),
            (
                "  - path: a\n    target: /x\n    mode: \"4755\"\n",
                "without setuid",
            ),
            (
                "  - path: a\n    url: https://e/x\n    target: /x\n",
                "exactly one of",
            ),
            (
                "  - path: a\n    sha256: ab\n    target: /x\n",
                "only for `url`",
            ),
            (
                "  - url: ftp://e/x\n    sha256: ab\n    target: /x\n",
                "not http",
            ),
            (
                "  - path: a\n    target: /x\n  - path: b\n    target: /x\n",
                "given twice",
            ),
        ] {
            let e = p(&format!("{head}{body}")).unwrap_err();
            assert!(e.message.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn image_lists_read_as_k3s_reads_them() {
        let refs = parse_image_list(
            "# K3s images\n  docker.io/rancher/mirrored-pause:3.6  \n\n\r\nrancher/klipper-lb:v0.4.9\r\ndocker.io/rancher/mirrored-pause:3.6\n",
        )
        .unwrap();
        assert_eq!(
            refs,
            [
                "docker.io/rancher/mirrored-pause:3.6",
                "rancher/klipper-lb:v0.4.9"
            ]
        );
        let e = parse_image_list("a/b:1\nNot A Ref\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("`Not A Ref`"), "{e:?}");
        let s = p("name: x\nversion: \"1\"\nimages:\n  - list: ./k3s-images.txt\n").unwrap();
        assert_eq!(
            s.images[0].source,
            ImageSource::List("dir/./k3s-images.txt".into())
        );
        let e = p("name: x\nversion: \"1\"\nimages:\n  - list: a.txt\n    name: b\n").unwrap_err();
        assert!(e.message.contains("`name` is not for `list"), "{e}");
    }

    #[test]
    fn an_image_entry_needs_exactly_one_source() {
        let e =
            p("name: x\nversion: \"1\"\nimages:\n  - ref: a/b:c\n    layout: ./x\n").unwrap_err();
        assert!(e.message.contains("images[0]"), "{e}");
    }
}
