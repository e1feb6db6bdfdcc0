//! Helm charts, Kustomize overlays and plain manifests, rendered with the real tools.
//!
//! `helm template` and `kubectl kustomize` are what a user would run, so they are
//! run here too (through [`crate::io::process::Cmd`]) instead of being imitated.
//! What happens to their output is pure and lives in [`crate::k8s`]: the stream is
//! split into documents, each document becomes one `k8s-manifest` object whose
//! root blob is its bytes as rendered, and the images that workloads run are handed
//! back to `create` as [`WantedImage`]s, which bundles them like the spec's own images
//! and records which manifests asked for them.
//!
//! Charts pulled from a repository or an OCI registry are checked against the
//! repository's digest, stored as `chart` objects and pinned in the lock's `charts`
//! section (see `charts.rs`).

mod charts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fs_err as fs;

use super::{Contribution, LockCtx, WantedImage};
use crate::bundle::manifest::{BlobEntry, ContentInfo, Encoding, Kind, Object};
use crate::bundle::meta::{K8sManifestMeta, Meta};
use crate::bundle::Digest;
use crate::error::InputFailure;
use crate::io::cas::Cas;
use crate::io::process::{Cmd, ProcessError};
use crate::k8s::{self, names, Document};
use crate::progress::Progress;
use crate::registry::auth;
use crate::registry::client::Router;
use crate::registry::Settings;
use crate::spec::file::ManifestEntry;
use crate::spec::LoadedSpec;

/// How to install Helm, for the error when it is missing.
pub const HELM_HINT: &str =
    "install Helm 3 (https://helm.sh/docs/intro/install/), or run scripts/install-test-deps";
/// How to install kubectl, for the error when it is missing.
pub const KUBECTL_HINT: &str =
    "install kubectl 1.14 or newer, which has kustomize built in (https://kubernetes.io/docs/tasks/tools/)";

/// What rendering needs from the command line.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// The registry settings images use: mirrors (OCI charts are pulled through
    /// them as images are), plain HTTP, credentials, CAs and client certificates
    /// (for chart repositories and OCI registries as for image registries).
    pub registry: Settings,
}

/// The namespace Kubernetes uses for namespaced objects that name none.
const DEFAULT_NAMESPACE: &str = "default";

/// Renders the spec's charts, overlays and manifests into blobs and objects, and
/// returns the images their workloads run.
pub fn render(
    spec: &LoadedSpec,
    cas: &Cas,
    lock: &mut LockCtx<'_>,
    progress: &Progress,
    opts: &RenderOptions,
) -> anyhow::Result<Contribution> {
    let s = &spec.spec;
    let mut out = Collector::default();
    if !(s.charts.is_empty() && s.kustomize.is_empty() && s.manifests.is_empty()) {
        let tmp = crate::io::temp::folder("render")
            .context("creating a temporary folder for rendering")?;
        let credentials = auth::Store::load(&opts.registry);
        let router = Router::new(&opts.registry);
        for (i, entry) in s.charts.iter().enumerate() {
            let discover = entry.discover_images.unwrap_or(s.discover_images);
            let dir = tmp.path().join(format!("chart-{i}"));
            fs::create_dir_all(&dir)?;
            charts::render_chart(
                &charts::ChartJob {
                    index: i,
                    entry,
                    spec,
                    cas,
                    progress,
                    credentials: &credentials,
                    router: &router,
                    tmp: &dir,
                    discover,
                },
                lock,
                &mut out,
            )?;
        }
        for (i, entry) in s.kustomize.iter().enumerate() {
            let discover = entry.discover_images.unwrap_or(s.discover_images);
            let dir = spec.base.join(&entry.path);
            let source = format!("kustomize:{}", names::tidy_path(&entry.path));
            if !dir.is_dir() {
                return Err(InputFailure(format!(
                    "kustomize[{i}]: {} is not a directory; `path:` names an overlay folder with a kustomization.yaml, relative to {}",
                    dir.display(),
                    spec.base.display()
                ))
                .into());
            }
            progress.message(format!("rendering {source}"));
            let yaml = Cmd::new("kubectl", KUBECTL_HINT)
                .arg("kustomize")
                .arg(&dir)
                .output()
                .map_err(|e| {
                    blame(e, |e| {
                        InputFailure(format!(
                            "kustomize[{i}] ({source}): kubectl could not build the overlay; fix it and run create again: {e:#}"
                        ))
                    })
                })?;
            let docs = split(&source, &yaml, None)?;
            out.add_rendered(cas, &source, docs, discover)?;
        }
        for (i, entry) in s.manifests.iter().enumerate() {
            let discover = entry.discover_images.unwrap_or(s.discover_images);
            for (source, path) in manifest_files(spec, i, entry)? {
                let bytes = fs::read(&path)?;
                let docs = split(&source, &bytes, None)?;
                out.add_rendered(cas, &source, docs, discover)?;
            }
        }
    }
    out.store_deferred(cas)?;
    charts::check_stale(lock)?;
    Ok(out.finish())
}

/// Namespaces every cluster has: never created by a bundle (a Namespace document
/// for one would make K3s own it, and delete it with the file).
const BUILTIN_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// The Namespace document a chart rendered into `namespace` gets when nothing
/// else in the bundle creates it (format.md section 13.1).
fn namespace_document(source: &str, namespace: &str) -> anyhow::Result<Document> {
    let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n");
    let mut docs = k8s::split_documents(source, yaml.as_bytes(), None)?;
    docs.pop()
        .context("the Namespace document the chart's namespace needs")
}

/// The failure a tool's error is. A tool that ran and failed is about the input, so
/// `wrap` marks it (bad input, exit 4; or a registry failure, exit 5); a tool that is
/// missing or cannot be started is about this machine and stays as it is (exit 1),
/// carrying the hint on how to install it.
fn blame<E: Into<anyhow::Error>>(
    err: impl Into<anyhow::Error>,
    wrap: impl FnOnce(anyhow::Error) -> E,
) -> anyhow::Error {
    let err = err.into();
    match err.downcast_ref::<ProcessError>() {
        Some(ProcessError::NotFound { .. } | ProcessError::Io { .. }) => err,
        _ => wrap(err).into(),
    }
}

/// Every local file or folder rendering reads, as (what, path, whether every file
/// below a folder may be read): local charts (a folder is packaged whole), values
/// files, overlays, and the files `manifests:` entries name (globs expanded;
/// `installable:` entries are built outputs in the store and left out). `create`
/// refuses an output that is one of them.
pub fn local_inputs(spec: &LoadedSpec) -> Vec<(String, PathBuf, bool)> {
    let s = &spec.spec;
    let mut v = Vec::new();
    for (i, c) in s.charts.iter().enumerate() {
        if let Some(p) = &c.path {
            v.push((format!("charts[{i}].path"), spec.base.join(p), true));
        }
        for (j, f) in c.values_files.iter().enumerate() {
            v.push((
                format!("charts[{i}].valuesFiles[{j}]"),
                spec.base.join(f),
                false,
            ));
        }
    }
    for (i, k) in s.kustomize.iter().enumerate() {
        v.push((
            format!("kustomize[{i}].path"),
            spec.base.join(&k.path),
            false,
        ));
    }
    for (i, m) in s.manifests.iter().enumerate() {
        if m.path.is_some() {
            if let Ok(files) = manifest_files(spec, i, m) {
                v.extend(
                    files
                        .into_iter()
                        .map(|(_, p)| (format!("manifests[{i}].path"), p, false)),
                );
            }
        }
    }
    v
}

/// Splits rendered YAML, turning a bad document into bad input (exit 4).
fn split(source: &str, yaml: &[u8], namespace: Option<&str>) -> anyhow::Result<Vec<Document>> {
    k8s::split_documents(source, yaml, Some(namespace.unwrap_or(DEFAULT_NAMESPACE)))
        .map_err(|e| InputFailure(format!("{e}; fix the input and run create again")).into())
}

/// The files one `manifests:` entry names, each with its source name, sorted.
fn manifest_files(
    spec: &LoadedSpec,
    i: usize,
    entry: &ManifestEntry,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    if let Some(installable) = &entry.installable {
        let built = crate::resolve::nix::build_manifests(spec, installable)?;
        if built.is_dir() {
            let files = k8s::glob::expand(&built, "**/*.yaml", &list_dir, &is_file)
                .into_iter()
                .chain(k8s::glob::expand(&built, "**/*.yml", &list_dir, &is_file))
                .chain(k8s::glob::expand(&built, "**/*.json", &list_dir, &is_file));
            let mut v: Vec<_> = files
                .map(|p| {
                    let rel = p.strip_prefix(&built).unwrap_or(&p).display().to_string();
                    (format!("manifests:{installable}/{rel}"), p)
                })
                .collect();
            v.sort();
            if v.is_empty() {
                return Err(InputFailure(format!(
                    "manifests[{i}]: `{installable}` built {}, which holds no .yaml, .yml or .json file",
                    built.display()
                ))
                .into());
            }
            return Ok(v);
        }
        return Ok(vec![(format!("manifests:{installable}"), built)]);
    }
    let Some(pattern) = &entry.path else {
        return Err(InputFailure(format!("manifests[{i}]: give `path:` or `installable:`")).into());
    };
    // A folder stands for its YAML and JSON files (not recursive; use `dir/**/*.yaml`).
    let found = if spec.base.join(pattern).is_dir() && !k8s::glob::has_wildcard(pattern) {
        let mut v: Vec<PathBuf> = ["*.yaml", "*.yml", "*.json"]
            .iter()
            .flat_map(|ext| {
                k8s::glob::expand(
                    &spec.base,
                    &format!("{}/{ext}", pattern.trim_end_matches('/')),
                    &list_dir,
                    &is_file,
                )
            })
            .collect();
        v.sort();
        v
    } else {
        k8s::glob::expand(&spec.base, pattern, &list_dir, &is_file)
    };
    if found.is_empty() {
        return Err(InputFailure(format!(
            "manifests[{i}]: `{pattern}` matches no file under {}; paths are relative to the spec's folder",
            spec.base.display()
        ))
        .into());
    }
    Ok(found
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&spec.base).unwrap_or(&p);
            (
                format!("manifests:{}", names::tidy_path(&rel.to_string_lossy())),
                p,
            )
        })
        .collect())
}

fn list_dir(dir: &Path) -> Vec<k8s::glob::Entry> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let is_dir = fs::metadata(e.path()).ok()?.is_dir();
            Some((name, is_dir))
        })
        .collect()
}

fn is_file(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file())
}

/// A document to store, with the images it uses.
struct Stored {
    doc: Document,
    images: Vec<String>,
}

/// A chart's rendered documents, stored once every source rendered: the namespace
/// it renders into gets a Namespace document first when nothing else creates it.
struct Deferred {
    source: String,
    docs: Vec<Stored>,
    create_namespace: Option<String>,
}

/// Everything rendering adds, gathered in spec order.
#[derive(Default)]
struct Collector {
    blobs: Vec<(BlobEntry, u32)>,
    objects: Vec<Object>,
    /// file name on the target -> the source writing it
    files: BTreeMap<String, String>,
    wanted: Vec<WantedImage>,
    deferred: Vec<Deferred>,
    /// The parsed HelmChart documents stored, by blob (for `creates_namespace`).
    documents: BTreeMap<Digest, serde_yaml_ng::Value>,
}

impl Collector {
    /// Records the images of `doc` as wanted by it.
    fn want(&mut self, source: &str, doc: &Document, images: &[String]) {
        let who = names::wanted_by(source, doc);
        for image in images {
            match self.wanted.iter_mut().find(|w| w.reference == *image) {
                Some(w) => {
                    if !w.wanted_by.contains(&who) {
                        w.wanted_by.push(who.clone());
                    }
                }
                None => self.wanted.push(WantedImage {
                    reference: image.clone(),
                    wanted_by: vec![who.clone()],
                }),
            }
        }
    }

    /// Stores rendered documents of `source` as they are, and (if `discover`) asks
    /// for the images they use.
    fn add_rendered(
        &mut self,
        cas: &Cas,
        source: &str,
        docs: Vec<Document>,
        discover: bool,
    ) -> anyhow::Result<()> {
        let stored: Vec<Stored> = docs
            .into_iter()
            .map(|doc| {
                let images = k8s::workload_images(&doc.value);
                if discover {
                    self.want(source, &doc, &images);
                }
                Stored { doc, images }
            })
            .collect();
        self.store(cas, source, stored)
    }

    /// As [`Self::add_rendered`], but stored by [`Self::store_deferred`], after every
    /// source rendered; `create_namespace` is the namespace to create if nothing
    /// in the bundle does. The images are asked for now, in spec order.
    fn defer_rendered(
        &mut self,
        source: &str,
        docs: Vec<Document>,
        discover: bool,
        create_namespace: Option<String>,
    ) {
        let docs = docs
            .into_iter()
            .map(|doc| {
                let images = k8s::workload_images(&doc.value);
                if discover {
                    self.want(source, &doc, &images);
                }
                Stored { doc, images }
            })
            .collect();
        self.deferred.push(Deferred {
            source: source.to_string(),
            docs,
            create_namespace,
        });
    }

    /// Whether a document of the bundle (stored, or waiting) creates namespace
    /// `ns`: a Namespace of that name, or a K3s HelmChart that installs into it
    /// with `createNamespace`.
    fn creates_namespace(&self, ns: &str) -> bool {
        let stored = self.objects.iter().filter_map(|o| o.meta.k8s_manifest());
        let stored_hit = stored
            .clone()
            .any(|m| m.kind == "Namespace" && m.name == ns);
        let waiting = self
            .deferred
            .iter()
            .flat_map(|d| &d.docs)
            .any(|s| s.doc.kind == "Namespace" && s.doc.name == ns);
        let helmchart = self.objects.iter().any(|o| {
            o.meta.k8s_manifest().is_some_and(|m| {
                m.kind == "HelmChart" && m.api_version.starts_with("helm.cattle.io/")
            }) && self.helmchart_creates(o, ns)
        });
        stored_hit || waiting || helmchart
    }

    /// Whether the stored HelmChart object `o` creates `ns` (its document has
    /// `spec.targetNamespace: ns` and `spec.createNamespace: true`).
    fn helmchart_creates(&self, o: &Object, ns: &str) -> bool {
        self.documents.get(&o.digest).is_some_and(|v| {
            let spec = v.get("spec");
            spec.and_then(|s| s.get("targetNamespace"))
                .and_then(|t| t.as_str())
                == Some(ns)
                && spec
                    .and_then(|s| s.get("createNamespace"))
                    .and_then(|c| c.as_bool())
                    == Some(true)
        })
    }

    /// Stores the charts' documents that waited, each with the Namespace document
    /// its namespace needs when nothing else in the bundle creates it (once per
    /// namespace, in the first chart's file).
    fn store_deferred(&mut self, cas: &Cas) -> anyhow::Result<()> {
        for i in 0..self.deferred.len() {
            let ns = self.deferred[i].create_namespace.clone();
            if let Some(ns) = ns.filter(|n| !BUILTIN_NAMESPACES.contains(&n.as_str())) {
                if !self.creates_namespace(&ns) {
                    let source = self.deferred[i].source.clone();
                    let doc = namespace_document(&source, &ns)?;
                    self.deferred[i].docs.insert(
                        0,
                        Stored {
                            doc,
                            images: Vec::new(),
                        },
                    );
                }
            }
        }
        for d in std::mem::take(&mut self.deferred) {
            self.store(cas, &d.source, d.docs)?;
        }
        Ok(())
    }

    /// Stores documents as one file's worth of `k8s-manifest` objects.
    fn store(&mut self, cas: &Cas, source: &str, docs: Vec<Stored>) -> anyhow::Result<()> {
        let file = names::file_name(source);
        if let Some(other) = self.files.get(&file) {
            return Err(InputFailure(format!(
                "`{other}` and `{source}` would both be written to {file} on the target; give one of them another release name or path"
            ))
            .into());
        }
        self.files.insert(file.clone(), source.to_string());
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (order, Stored { doc, images }) in docs.into_iter().enumerate() {
            let mut name = names::object_name(source, &doc);
            let n = seen.entry(name.clone()).or_insert(0);
            *n += 1;
            if *n > 1 {
                name = format!("{name}#{n}");
            }
            let (blob, size) = store_document(cas, &doc.bytes)?;
            let digest = blob.digest;
            if doc.kind == "HelmChart" {
                self.documents.insert(digest, doc.value.clone());
            }
            self.blobs.push((blob, k8s::RANK_MANIFEST));
            let meta = Meta::K8sManifest(K8sManifestMeta {
                source: source.to_string(),
                file: file.clone(),
                order: order as u64,
                api_version: doc.api_version.clone(),
                kind: doc.kind.clone(),
                namespace: doc.namespace.clone(),
                name: doc.name.clone(),
                images,
                extra: Default::default(),
            });
            self.objects.push(Object {
                kind: Kind::K8sManifest,
                name,
                digest,
                media_type: k8s::MANIFEST_MEDIA_TYPE.into(),
                size,
                blobs: vec![digest],
                meta,
            });
        }
        Ok(())
    }

    fn finish(self) -> Contribution {
        Contribution {
            blobs: self.blobs,
            objects: self.objects,
            images: self.wanted,
        }
    }
}

/// Puts a document into the cache, zstd-compressed when it is large.
fn store_document(cas: &Cas, bytes: &[u8]) -> anyhow::Result<(BlobEntry, u64)> {
    if bytes.len() < k8s::COMPRESS_THRESHOLD {
        let d = cas.put_bytes(bytes)?;
        return Ok((
            BlobEntry::new(d, bytes.len() as u64, k8s::MANIFEST_MEDIA_TYPE),
            bytes.len() as u64,
        ));
    }
    let z = zstd::bulk::compress(bytes, 19).context("compressing a large manifest")?;
    let d = cas.put_bytes(&z)?;
    Ok((
        BlobEntry {
            digest: d,
            size: z.len() as u64,
            media_type: k8s::MANIFEST_MEDIA_TYPE.into(),
            offset: None,
            encoding: Some(Encoding::Zstd),
            content: Some(ContentInfo {
                digest: Digest::of(bytes),
                size: bytes.len() as u64,
            }),
        },
        z.len() as u64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(source: &str, yaml: &str) -> Vec<Document> {
        k8s::split_documents(source, yaml.as_bytes(), Some("default")).unwrap()
    }

    #[test]
    fn names_files_and_wanted_images() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let mut c = Collector::default();
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{image: r/a:1}]}\n";
        c.add_rendered(
            &cas,
            "manifests:a.yaml",
            docs("manifests:a.yaml", &format!("{pod}---\n{pod}")),
            true,
        )
        .unwrap();
        c.add_rendered(
            &cas,
            "manifests:b.yaml",
            docs("manifests:b.yaml", pod),
            false,
        )
        .unwrap();
        let names: Vec<&str> = c.objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "manifests:a.yaml/Pod/default/p",
                "manifests:a.yaml/Pod/default/p#2",
                "manifests:b.yaml/Pod/default/p"
            ]
        );
        assert_eq!(c.objects[1].meta.k8s_manifest().unwrap().order, 1);
        assert_eq!(c.objects[2].meta.k8s_manifest().unwrap().images, ["r/a:1"]);
        // Discovery was off for b.yaml: only a.yaml's document wants the image.
        assert_eq!(
            c.wanted,
            [WantedImage {
                reference: "r/a:1".into(),
                wanted_by: vec!["manifests:a.yaml Pod default/p".into()],
            }]
        );
        // Two sources that would write the same file are refused.
        let e = c
            .add_rendered(&cas, "manifests:b.yml", docs("manifests:b.yml", pod), true)
            .unwrap_err();
        assert!(e.to_string().contains("manifests-b.yaml"), "{e}");
    }

    #[test]
    fn a_chart_namespace_nothing_creates_gets_a_namespace_document() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let deploy = |ns: &str| {
            k8s::split_documents(
                "chart:web",
                b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n",
                Some(ns),
            )
            .unwrap()
        };
        let mut c = Collector::default();
        c.defer_rendered("chart:web", deploy("apps"), true, Some("apps".into()));
        // A second chart into the same namespace, one into a namespace an overlay
        // creates, one into kube-system, and one that asked for none.
        let other = |src: &str, ns: &str| {
            k8s::split_documents(
                src,
                b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
                Some(ns),
            )
            .unwrap()
        };
        c.defer_rendered(
            "chart:api",
            other("chart:api", "apps"),
            true,
            Some("apps".into()),
        );
        c.defer_rendered(
            "chart:db",
            other("chart:db", "data"),
            true,
            Some("data".into()),
        );
        c.defer_rendered(
            "chart:sys",
            other("chart:sys", "kube-system"),
            true,
            Some("kube-system".into()),
        );
        c.defer_rendered("chart:off", other("chart:off", "quiet"), true, None);
        c.add_rendered(
            &cas,
            "kustomize:ns",
            k8s::split_documents(
                "kustomize:ns",
                b"apiVersion: v1\nkind: Namespace\nmetadata: {name: data}\n",
                None,
            )
            .unwrap(),
            true,
        )
        .unwrap();
        c.store_deferred(&cas).unwrap();
        let namespaces: Vec<(&str, u64)> = c
            .objects
            .iter()
            .filter_map(|o| o.meta.k8s_manifest())
            .filter(|m| m.kind == "Namespace")
            .map(|m| (m.source.as_str(), m.order))
            .collect();
        assert_eq!(namespaces, [("kustomize:ns", 0), ("chart:web", 0)]);
        let web: Vec<&str> = c
            .objects
            .iter()
            .filter(|o| o.name.starts_with("chart:web/"))
            .map(|o| o.name.as_str())
            .collect();
        assert_eq!(
            web,
            [
                "chart:web/Namespace/_/apps",
                "chart:web/Deployment/apps/web"
            ]
        );
        let ns = c
            .objects
            .iter()
            .find(|o| o.name == "chart:web/Namespace/_/apps")
            .unwrap();
        assert_eq!(
            cas.read_small(&ns.digest).unwrap(),
            b"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n"
        );
    }

    #[test]
    fn large_documents_are_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let cas = Cas::open(dir.path()).unwrap();
        let small = store_document(&cas, b"a: 1\n").unwrap().0;
        assert!(small.encoding.is_none());
        let big = vec![b'x'; k8s::COMPRESS_THRESHOLD];
        let (b, size) = store_document(&cas, &big).unwrap();
        assert_eq!(b.encoding, Some(Encoding::Zstd));
        assert_eq!(b.content.as_ref().unwrap().digest, Digest::of(&big));
        assert_eq!(size, b.size);
        let stored = cas.read_small(&b.digest).unwrap();
        assert_eq!(zstd::decode_all(stored.as_slice()).unwrap(), big);
    }
}
