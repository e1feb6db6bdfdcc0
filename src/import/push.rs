//! Fleet mode: every bundled image pushed to a registry inside the air gap, digests
//! unchanged, and a K3s `registries.yaml` mirror snippet that points nodes at it.
//!
//! Each image keeps its repository path and tag under the new host
//! (`reg.example:5000/team/app:1.2` becomes `HOST/team/app:1.2`), which is exactly
//! how a K3s mirror rewrites pulls: nodes keep asking for the original names and get
//! them from `HOST`. Everything is pushed as stored: layers and configs as blobs
//! (streamed from the bundle straight into one monolithic upload each, skipped when
//! the registry already has them, mounted across repositories when several
//! images share them), then child manifests by digest, then the root by tag, all as
//! raw bytes, so every digest stays the one the bundle signed. Manifests and indexes
//! (small) are kept in memory until the end; nothing else is.
//!
//! Names are taken from the bundle only through [`super::images::checked`], and the
//! HTTP side (TLS with `--registry-ca`, plain HTTP, credentials, timeouts, retries,
//! error advice) is [`crate::registry`]'s one client, the one `create` pulls with.
//!
//! A registry inside an air gap is often a box on a flaky link, and a failed
//! request should not cost a rerun of a many-gigabyte import. Every small request
//! (login, blob HEADs, mounts, manifests) goes through the same retry loop and rule
//! as `create`'s pulls ([`with_retries`]: connection errors, timeouts, 5xx, 408 and
//! 429, `--retries` attempts with backoff). A blob upload cannot be retried in place:
//! its bytes come from the bundle as it is verified, possibly from a pipe, and that
//! stream cannot be replayed. So an upload that breaks off for a retryable reason
//! only marks its blob; the import goes on, and [`Target::finish`] (reached only once
//! the whole bundle verified) pushes each marked blob again from the bundle file,
//! reading it afresh for every attempt and refusing bytes that no longer hash to the
//! verified digest. From stdin there is nothing to re-read: the import then fails
//! naming the blob, and a rerun skips every blob that did arrive. Refusals (401, 403,
//! 400, a digest error) stop the import at once, as asking again cannot change them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use fs_err as fs;
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::fleet::{Fault, Fleet};
use super::report::{
    NodeAuthReport, NodeConfigReport, NodeTlsReport, PushReport, PushedImage, TargetReport,
};
use super::{Target, TargetPlan};
use crate::bundle::digest::HashingReader;
use crate::bundle::manifest::{BlobEntry, Object};
use crate::bundle::meta::ReferrerMeta;
use crate::bundle::oci::{is_index, is_manifest, INDEX_MEDIA_TYPE as OCI_INDEX};
use crate::bundle::reader::{Head, RangeReader};
use crate::bundle::receipt::Section;
use crate::bundle::referrers::{check_manifest, of_image, tag_schema};
use crate::bundle::Digest;
use crate::error::{InputFailure, RegistryFailure};
use crate::io::source::{BundleSource, RandomSource};
use crate::oci::distribution::{pointers, Referrer};
use crate::oci::reference::DEFAULT_TAG;
use crate::progress::{Bar, Progress};
use crate::registry::auth::Origin;
use crate::registry::client::{runtime, with_retries};
use crate::registry::errors::{failure_reason, is_retryable, What};
use crate::registry::{self, Route, Settings};

/// Largest manifest or index kept in memory.
const MANIFEST_LIMIT: usize = 8 << 20;

/// Bytes read from the bundle file per chunk when a blob is pushed again.
const REPUSH_CHUNK: usize = 1 << 20;

/// Chunks of one upload in flight between the reader and the HTTP body.
type Chunks = mpsc::Sender<Result<bytes::Bytes, OciDistributionError>>;

/// One image to push.
#[derive(Clone)]
struct Planned {
    object: Object,
    /// Where it goes.
    target: Reference,
    /// Original registry host (for the mirror).
    origin: String,
    /// Blobs (not manifests) the target repository lacks.
    missing: BTreeSet<Digest>,
    present: bool,
    /// Its referrers (format.md section 18), pushed beside it.
    referrers: Vec<(Object, ReferrerMeta)>,
}

impl Planned {
    /// Every blob it needs: the image's and its referrers'.
    fn all_blobs(&self) -> impl Iterator<Item = &Digest> {
        self.object
            .blobs
            .iter()
            .chain(self.referrers.iter().flat_map(|(o, _)| &o.blobs))
    }
}

struct Upload {
    digest: Digest,
    tx: Option<Chunks>,
    task: Option<JoinHandle<Result<String, OciDistributionError>>>,
    /// Bytes handed to the upload so far.
    sent: u64,
}

/// The fleet registry target.
pub struct Push {
    host: String,
    /// The fleet registry (no repository); each image's route adds its path.
    route: Route,
    ca: Option<PathBuf>,
    mirror_file: PathBuf,
    registry: registry::Client,
    /// `registry`'s transport for `route`.
    client: Client,
    auth: RegistryAuth,
    /// Where `auth` came from, for advice.
    origin: Origin,
    rt: tokio::runtime::Runtime,
    blobs: HashMap<Digest, BlobEntry>,
    images: Vec<Planned>,
    /// Manifest and index bytes received.
    manifests: HashMap<Digest, Vec<u8>>,
    /// Blob -> repository it was uploaded to (for mounts).
    uploaded: HashMap<Digest, Reference>,
    upload: Option<Upload>,
    pushed_bytes: u64,
    /// The bundle, to push interrupted blobs again from; `None` for stdin.
    bundle: Option<Arc<RandomSource>>,
    /// Attempts per request (`--retries`).
    attempts: u32,
    /// Blobs whose streamed upload broke off for a retryable reason -> that reason.
    interrupted: BTreeMap<Digest, String>,
}

/// Writes `bytes` to `path` atomically, readable and writable by its owner only
/// (a temporary file, mode 0600, synced and renamed over `path`).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    crate::io::temp::sweep(dir);
    // 0600 from the start: the secret is never readable by others, even briefly.
    let mut tmp = crate::io::temp::file_in(dir, "registries.yaml")?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// `--registry` as `host[:port]` (a scheme and trailing `/` dropped).
pub fn fleet_host(arg: &str) -> String {
    arg.trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// What the nodes need to reach the fleet registry, beside the mirror: its
/// credentials and the CA its certificate is signed by (K3s's `configs` section).
#[derive(Debug, Clone, Default)]
pub struct NodeConfig {
    /// `username` and `password` (Basic), as the push used them.
    pub basic: Option<(String, String)>,
    /// An identity token (a registry's bearer token), as the push used it.
    pub identity_token: Option<String>,
    /// The CA file (absolute path) the push trusted, to be found at the same path
    /// on every node.
    pub ca_file: Option<String>,
}

/// A YAML scalar, double-quoted (JSON's escapes are YAML's).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

/// `registries.yaml` for K3s: each original registry mirrored by `endpoint`, and
/// a `configs` entry for the endpoint's host with the credentials and CA the nodes
/// need to pull from it.
pub fn registries_yaml(origins: &BTreeSet<String>, endpoint: &str, node: &NodeConfig) -> String {
    let mut s = String::from("# Written by gapbundle: copy to /etc/rancher/k3s/registries.yaml on every node\n# (merge with what is there) and restart K3s.\nmirrors:\n");
    for o in origins {
        s.push_str(&format!(
            "  {}:\n    endpoint:\n      - {}\n",
            quoted(o),
            quoted(endpoint)
        ));
    }
    let host = endpoint
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let mut config = String::new();
    if let Some((user, pass)) = &node.basic {
        config.push_str(&format!(
            "    auth:\n      username: {}\n      password: {}\n",
            quoted(user),
            quoted(pass)
        ));
    } else if let Some(token) = &node.identity_token {
        config.push_str(&format!(
            "    auth:\n      identity_token: {}\n",
            quoted(token)
        ));
    }
    if let Some(ca) = &node.ca_file {
        config.push_str(&format!(
            "    tls:\n      # copy this CA to the same path on every node\n      ca_file: {}\n",
            quoted(ca)
        ));
    }
    if !config.is_empty() {
        s.push_str(&format!("configs:\n  {}:\n{config}", quoted(host)));
    }
    s
}

/// The image under the fleet registry, same path and tag (`latest` for a name
/// with neither tag nor digest), or its root digest for a name with a digest
/// only; and the registry it came from, for the mirror.
fn retarget(r: &crate::oci::Reference, fleet: &Route, root: &Digest) -> (Reference, String) {
    let route = fleet.with_repository(r.path());
    let t = match (r.tag(), r.digest()) {
        (Some(tag), _) => route.tagged(tag),
        (None, Some(_)) => route.by_digest(root),
        (None, None) => route.tagged(DEFAULT_TAG),
    };
    (t, r.domain().to_string())
}

fn by_digest(r: &Reference, d: &Digest) -> Reference {
    Reference::with_digest(r.registry().into(), r.repository().into(), d.to_string())
}

/// What the `--json` report says in place of a secret the snippet holds.
const IN_SNIPPET: &str = "(in registriesYaml)";

/// What the fleet push is told: the import flags, resolved by the command layer.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// `--registry HOST[:PORT]`, as given.
    pub host: String,
    /// How to reach it: `--registry-auth`, `--registry-ca` (its one CA file, also
    /// named in the mirror snippet), `--insecure-registry`, `--retries`.
    pub registry: Settings,
    /// Where the `registries.yaml` mirror snippet is written.
    pub mirror_file: PathBuf,
}

impl Push {
    /// A push target for `--registry HOST`.
    pub fn new(opts: &PushOptions, head: &Head, source: &BundleSource) -> Result<Self> {
        let host = fleet_host(&opts.host);
        if host.is_empty() || host.contains('/') {
            return Err(InputFailure(format!("--registry `{host}` is not HOST[:PORT]")).into());
        }
        let registry = registry::Client::new(&opts.registry)?;
        let route = registry.route_to(&host, "");
        let (auth, origin) = registry.credentials(&route)?;
        let client = registry.transport(&route).clone();
        let rt = runtime(2, "gapbundle-push")
            .context("cannot start the async runtime for the registry")?;
        let mut images = Vec::new();
        for image in super::images::checked(head)? {
            let o = image.object;
            let (target, origin) = retarget(&image.reference, &route, &o.digest);
            let referrers = of_image(&head.manifest, &o)
                .into_iter()
                .map(|(r, meta)| (r.clone(), meta.clone()))
                .collect();
            images.push(Planned {
                object: o,
                target,
                origin,
                missing: BTreeSet::new(),
                present: false,
                referrers,
            });
        }
        Ok(Self {
            mirror_file: opts.mirror_file.clone(),
            host,
            route,
            ca: opts.registry.ca_files.first().cloned(),
            registry,
            client,
            auth,
            origin,
            rt,
            blobs: head
                .manifest
                .blobs
                .iter()
                .map(|b| (b.digest, b.clone()))
                .collect(),
            images,
            manifests: HashMap::new(),
            uploaded: HashMap::new(),
            upload: None,
            pushed_bytes: 0,
            bundle: source.shared(),
            attempts: opts.registry.retries.max(1),
            interrupted: BTreeMap::new(),
        })
    }

    /// Pushes `object`'s child manifests by digest, then its root under `root`
    /// and, given a tag, under that tag too.
    fn push_manifests(
        &self,
        object: &Object,
        root: &Reference,
        tag: Option<Reference>,
    ) -> Result<()> {
        let mut children = Vec::new();
        if is_index(&object.media_type) {
            let idx: Value = serde_json::from_slice(
                self.manifests
                    .get(&object.digest)
                    .ok_or_else(|| anyhow!("index {} was not received", object.digest))?,
            )?;
            for m in idx["manifests"].as_array().into_iter().flatten() {
                if let Some(d) = m["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()) {
                    if object.blobs.contains(&d) {
                        children.push(d);
                    }
                }
            }
        }
        let mut order: Vec<(Reference, Digest)> = children
            .into_iter()
            .map(|d| (by_digest(root, &d), d))
            .collect();
        order.push((root.clone(), object.digest));
        order.extend(tag.map(|t| (t, object.digest)));
        for (r, d) in order {
            let body = self
                .manifests
                .get(&d)
                .ok_or_else(|| anyhow!("manifest {d} was not received"))?
                .clone();
            let mt = self.blobs[&d].media_type.clone();
            self.put_manifest(&r, &d, &mt, body)?;
        }
        Ok(())
    }

    /// PUTs manifest bytes (`d`, of media type `mt`) under `r`.
    fn put_manifest(&self, r: &Reference, d: &Digest, mt: &str, body: Vec<u8>) -> Result<()> {
        let ct: reqwest::header::HeaderValue = mt
            .parse()
            .map_err(|_| anyhow!("media type {mt} of {d} is not a valid header"))?;
        let body = bytes::Bytes::from(body);
        let client = &self.client;
        self.rt
            .block_on(with_retries(self.attempts, || {
                client.push_manifest_raw(r, body.clone(), Clone::clone(&ct))
            }))
            .map_err(|(e, n)| {
                self.explain(r, &format!("accept manifest {d} for {}", r.whole()), &e, n)
            })?;
        Ok(())
    }

    /// Pushes the referrers of `p` into its repository (format.md section 18): each
    /// by digest (its children first) and, when a cosign tag found it, under that
    /// tag; then the referrers tag schema index `sha256-<hex>`, merged with the one
    /// the registry has, for those that name the image as their subject.
    fn push_referrers(&self, p: &Planned) -> Result<()> {
        let mut listed = Vec::new();
        for (o, meta) in &p.referrers {
            let bytes = self
                .manifests
                .get(&o.digest)
                .ok_or_else(|| anyhow!("referrer {} was not received", o.digest))?;
            check_manifest(&o.digest, meta, bytes)?;
            let tag = meta.tag.as_ref().map(|t| {
                Reference::with_tag(
                    p.target.registry().into(),
                    p.target.repository().into(),
                    t.clone(),
                )
            });
            self.push_manifests(o, &by_digest(&p.target, &o.digest), tag)?;
            if meta.tag.is_none() {
                let ptr = pointers(&o.media_type, bytes)?;
                listed.push(Referrer {
                    media_type: o.media_type.clone(),
                    size: bytes.len() as u64,
                    digest: o.digest,
                    artifact_type: meta.artifact_type.clone().or(ptr.artifact_type),
                    annotations: ptr.annotations,
                });
            }
        }
        if listed.is_empty() {
            return Ok(());
        }
        let schema = Reference::with_tag(
            p.target.registry().into(),
            p.target.repository().into(),
            tag_schema(&p.object.digest),
        );
        // What the registry has under the tag already (other clients' referrers).
        let ours: BTreeSet<String> = listed.iter().map(|r| r.digest.to_string()).collect();
        let (client, auth) = (&self.client, &self.auth);
        let current = self
            .rt
            .block_on(client.pull_manifest_raw(&schema, auth, &[OCI_INDEX]))
            .ok()
            .and_then(|(b, _)| serde_json::from_slice::<Value>(&b).ok());
        let mut entries: Vec<Value> = current
            .as_ref()
            .and_then(|v| v["manifests"].as_array())
            .into_iter()
            .flatten()
            .filter(|e| e["digest"].as_str().is_some_and(|d| !ours.contains(d)))
            .cloned()
            .collect();
        entries.extend(
            listed
                .iter()
                .map(|r| serde_json::to_value(r).expect("plain values serialize")),
        );
        entries.sort_by(|a, b| a["digest"].as_str().cmp(&b["digest"].as_str()));
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        }))
        .expect("plain values serialize");
        let d = Digest::of(&index);
        self.put_manifest(&schema, &d, OCI_INDEX, index)
    }

    fn is_manifest_blob(&self, d: &Digest) -> bool {
        self.blobs
            .get(d)
            .is_some_and(|b| is_index(&b.media_type) || is_manifest(&b.media_type))
    }

    fn endpoint(&self) -> String {
        format!(
            "{}://{}",
            if self.route.plain_http {
                "http"
            } else {
                "https"
            },
            self.host
        )
    }

    /// The error for a request about `repo` that failed `attempts` times, asked to
    /// do `step` (`accept blob …`); it carries [`RegistryFailure`] (exit code 5).
    fn explain(
        &self,
        repo: &Reference,
        step: &str,
        e: &OciDistributionError,
        attempts: u32,
    ) -> anyhow::Error {
        let route = self.route.with_repository(repo.repository());
        let what = What::Push { step: step.into() };
        self.registry
            .explain(e, &route, &what, attempts, &self.origin)
    }

    /// Waits for the current upload to end. One that broke off for a reason worth
    /// another attempt is only remembered (see the module documentation).
    fn finish_upload(&mut self) -> Result<()> {
        let Some(mut up) = self.upload.take() else {
            return Ok(());
        };
        drop(up.tx.take());
        let Some(t) = up.task.take() else {
            return Ok(());
        };
        match self.rt.block_on(t) {
            Ok(Ok(_)) => self.pushed_bytes += up.sent,
            Ok(Err(e)) if self.attempts > 1 && is_retryable(&e) => {
                self.interrupted.insert(up.digest, failure_reason(&e));
            }
            Ok(Err(e)) => {
                let repo = self
                    .uploaded
                    .get(&up.digest)
                    .cloned()
                    .unwrap_or_else(|| self.route.by_digest(&up.digest));
                return Err(self.explain(&repo, &format!("accept blob {}", up.digest), &e, 1));
            }
            Err(e) => bail!("the upload task of blob {} failed: {e}", up.digest),
        }
        Ok(())
    }

    /// Pushes each blob whose upload broke off again, from the bundle file.
    fn push_interrupted(&mut self, head: &Head, progress: &Progress) -> Result<Vec<String>> {
        let interrupted = std::mem::take(&mut self.interrupted);
        let Some(src) = self.bundle.clone() else {
            return Err(stdin_cannot_repush(&self.host, &interrupted));
        };
        let mut done = Vec::new();
        for (d, why) in interrupted {
            let b = self.blobs[&d].clone();
            let repo = self.uploaded[&d].clone();
            let pos = head
                .blob_position(&b)
                .ok_or_else(|| anyhow!("blob {d} is not stored in {}", src.describe()))?;
            progress.message(format!(
                "the upload of blob {d} to {}/{} broke off ({why}): pushing it again from {}",
                self.host,
                repo.repository(),
                src.describe()
            ));
            let bar = progress.bar(format!("blob {} again", b.digest.short()), b.size);
            self.push_from_file(&src, pos, &b, &repo, &bar)?;
            bar.finish("pushed again");
            self.pushed_bytes += b.size;
            done.push(d.to_string());
        }
        Ok(done)
    }

    /// One blob from the bundle at `pos` into `repo`, streamed, with the remaining
    /// attempts (the broken streamed upload was the first).
    fn push_from_file(
        &self,
        src: &Arc<RandomSource>,
        pos: u64,
        b: &BlobEntry,
        repo: &Reference,
        bar: &Bar,
    ) -> Result<()> {
        let client = &self.client;
        let digest = b.digest.to_string();
        let r = self.rt.block_on(with_retries(self.attempts - 1, || {
            let (tx, mut rx) = mpsc::channel(4);
            let (src, blob, bar) = (src.clone(), b.clone(), bar.clone());
            bar.set_position(0);
            let reader =
                tokio::task::spawn_blocking(move || send_from_file(&src, pos, &blob, tx, &bar));
            let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
            let push = client.push_blob_stream(repo, stream, &digest, Some(b.size));
            async move {
                let pushed = push.await;
                // A local failure (file gone, bytes changed) is final, and not the
                // registry's: report it instead of whatever the cut-off upload said.
                match reader.await {
                    Ok(Ok(())) => pushed.map(|_| Ok(())),
                    Ok(Err(local)) => Ok(Err(local)),
                    Err(e) => Ok(Err(anyhow!("the reading task failed: {e}"))),
                }
            }
        }));
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(local)) => Err(local),
            Err((e, n)) => Err(self.explain(repo, &format!("accept blob {}", b.digest), &e, n + 1)),
        }
    }
}

impl Push {
    /// For a delta: finds each blob it leaves out that an image's repository needs
    /// (`wanted`: the image's target and the blob) in the registry. A manifest is
    /// read (from the image's repository by digest, else from any repository that
    /// holds it) and pushed in `finish` like one the bundle carried; another blob is
    /// mounted from a repository that holds it. Returns the blobs found nowhere.
    fn find_left_out(&mut self, wanted: &[(Reference, Digest)]) -> Result<BTreeSet<Digest>> {
        let fleet = Fleet {
            registry: self.registry.clone(),
            route: self.route.clone(),
            client: self.client.clone(),
            auth: self.auth.clone(),
            origin: self.origin.clone(),
            attempts: self.attempts,
        };
        let manifests: BTreeSet<Digest> = wanted
            .iter()
            .map(|(_, d)| *d)
            .filter(|d| self.is_manifest_blob(d))
            .collect();
        let (found, mounts, missing) = self
            .rt
            .block_on(async {
                let mut found: HashMap<Digest, Vec<u8>> = HashMap::new();
                let mut mounts: HashMap<Digest, Reference> = HashMap::new();
                let mut missing = BTreeSet::new();
                let mut repositories: Option<Vec<String>> = None;
                for (target, d) in wanted {
                    if found.contains_key(d) || mounts.contains_key(d) {
                        continue;
                    }
                    let is_manifest = manifests.contains(d);
                    // The image's own repository first.
                    if is_manifest {
                        if let Ok((bytes, _)) = fleet.manifest(&by_digest(target, d), Some(d)).await
                        {
                            found.insert(*d, bytes);
                            continue;
                        }
                    }
                    if repositories.is_none() {
                        repositories = Some(fleet.repositories().await?);
                    }
                    let mut hit = false;
                    let digest = d.to_string();
                    for r in repositories.iter().flatten() {
                        let there = fleet.route.with_repository(r).by_digest(d);
                        if is_manifest {
                            if let Ok((bytes, _)) = fleet.manifest(&there, Some(d)).await {
                                found.insert(*d, bytes);
                                hit = true;
                                break;
                            }
                        } else if with_retries(fleet.attempts, || {
                            fleet.client.blob_exists(&there, &digest)
                        })
                        .await
                        .unwrap_or(false)
                        {
                            mounts.insert(*d, there);
                            hit = true;
                            break;
                        }
                    }
                    if !hit {
                        missing.insert(*d);
                    }
                }
                Ok::<_, Fault>((found, mounts, missing))
            })
            .map_err(|f| fleet.explain(&f))?;
        self.manifests.extend(found);
        // `finish` mounts every blob an image lacks from where it is known to be.
        self.uploaded.extend(mounts);
        Ok(missing)
    }
}

/// The error for blobs that cannot be pushed again because the bundle came from a pipe.
fn stdin_cannot_repush(host: &str, interrupted: &BTreeMap<Digest, String>) -> anyhow::Error {
    let blobs: Vec<String> = interrupted
        .iter()
        .map(|(d, why)| format!("{d} ({why})"))
        .collect();
    let (noun, verb) = if blobs.len() == 1 {
        ("blob", "its upload")
    } else {
        ("blobs", "their uploads")
    };
    RegistryFailure(format!(
        "registry {host} broke off the upload of {noun} {}, and the bundle came from stdin, which cannot be read twice to push {verb} again: rerun the import from the bundle file (`gapbundle import FILE ...`) or pipe the bundle in again; blobs already pushed are skipped",
        blobs.join(", ")
    ))
    .into()
}

/// Sends the `b.size` bytes at `pos` of the bundle through `tx`, hashing them,
/// one chunk held back: the last goes out only if the whole still has the digest
/// the import verified, so the registry never completes an upload of changed bytes.
/// A closed `tx` (the upload failed) ends it quietly; on a local failure the
/// upload is cut off with an error item and the failure is returned.
fn send_from_file(
    src: &RandomSource,
    pos: u64,
    b: &BlobEntry,
    tx: Chunks,
    bar: &Bar,
) -> Result<()> {
    let d = b.digest;
    let fail = |msg: String| {
        let _ = tx.blocking_send(Err(OciDistributionError::GenericError(Some(msg.clone()))));
        anyhow!(msg)
    };
    let again = "the bundle file must stay unchanged until the import ends: rerun the import";
    let mut r = HashingReader::new(RangeReader::new(src, pos, b.size));
    let mut held: Option<bytes::Bytes> = None;
    loop {
        let mut buf = vec![0u8; REPUSH_CHUNK];
        let n = match crate::io::read_up_to(&mut r, &mut buf) {
            Ok(n) => n,
            // Shorter than it was: told below as bytes that changed.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
            Err(e) => {
                return Err(fail(format!(
                    "cannot read blob {d} again from {}: {e}; {again}",
                    src.describe()
                )))
            }
        };
        if n == 0 {
            break;
        }
        buf.truncate(n);
        bar.inc(n as u64);
        if let Some(chunk) = held.replace(buf.into()) {
            if tx.blocking_send(Ok(chunk)).is_err() {
                return Ok(());
            }
        }
    }
    let (found, size) = r.finish();
    if found != d || size != b.size {
        return Err(fail(format!(
            "blob {d} in {} changed after the import verified it (at offset {pos} there are now {size} bytes with digest {found}, not {} bytes with digest {d}); nothing of it was pushed: copy the bundle again, then rerun the import",
            src.describe(),
            b.size
        )));
    }
    if let Some(chunk) = held {
        let _ = tx.blocking_send(Ok(chunk));
    }
    Ok(())
}

/// An error for the bundle reader, carrying the whole error (its class decides the
/// exit code).
fn to_io(e: anyhow::Error) -> io::Error {
    crate::error::carried(e)
}

impl Target for Push {
    fn describe(&self) -> String {
        format!("registry {}", self.host)
    }

    fn plan(&mut self, _head: &Head) -> Result<TargetPlan> {
        let mut plan = TargetPlan::default();
        let client = self.client.clone();
        let auth = self.auth.clone();
        let mut images = std::mem::take(&mut self.images);
        let manifest_blob: BTreeSet<Digest> = self
            .blobs
            .keys()
            .filter(|d| self.is_manifest_blob(d))
            .copied()
            .collect();
        let attempts = self.attempts;
        let r = self.rt.block_on(async {
            let mut authed = BTreeSet::new();
            for p in images.iter_mut() {
                let target = &p.target;
                if authed.insert(target.repository().to_string()) {
                    with_retries(attempts, || {
                        client.auth(target, &auth, RegistryOperation::Push)
                    })
                    .await
                    .map_err(|(e, n)| (target.clone(), "log in for pushing".to_string(), e, n))?;
                }
                let blobs: BTreeSet<Digest> = p.all_blobs().copied().collect();
                for d in &blobs {
                    if manifest_blob.contains(d) {
                        continue;
                    }
                    let digest = d.to_string();
                    let exists = with_retries(attempts, || client.blob_exists(target, &digest))
                        .await
                        .map_err(|(e, n)| {
                            (
                                target.clone(),
                                format!("answer whether it has blob {d}"),
                                e,
                                n,
                            )
                        })?;
                    if !exists {
                        p.missing.insert(*d);
                    }
                }
                // Not there (404) or not answered: either way, push it.
                let current = if p.missing.is_empty() {
                    with_retries(attempts, || client.fetch_manifest_digest(&p.target, &auth))
                        .await
                        .ok()
                } else {
                    None
                };
                p.present = current.as_deref() == Some(p.object.digest.to_string().as_str());
            }
            Ok::<(), (Reference, String, OciDistributionError, u32)>(())
        });
        self.images = images;
        r.map_err(|(repo, what, e, n)| self.explain(&repo, &what, &e, n))?;
        // What a delta leaves out and the image's repository lacks: (repository,
        // blob), to be found elsewhere in the registry.
        let mut elsewhere: Vec<(Reference, Digest)> = Vec::new();
        for p in &self.images {
            if p.present {
                plan.present_objects.push(p.target.whole());
                // Its referrers' manifests are put again (`finish`): they may be
                // new since the image was pushed, and they are small.
                for d in p.referrers.iter().flat_map(|(o, _)| &o.blobs) {
                    if manifest_blob.contains(d) {
                        match self.blobs[d].offset {
                            None => elsewhere.push((p.target.clone(), *d)),
                            Some(_) => {
                                plan.needed.insert(*d);
                            }
                        }
                    }
                }
                continue;
            }
            plan.new_objects.push(p.target.whole());
            for d in p.all_blobs() {
                if manifest_blob.contains(d) || p.missing.contains(d) {
                    let b = &self.blobs[d];
                    if b.offset.is_none() {
                        elsewhere.push((p.target.clone(), *d));
                    } else if plan.needed.insert(*d) && !manifest_blob.contains(d) {
                        plan.bytes_to_write += b.size;
                    }
                }
            }
        }
        if !elsewhere.is_empty() {
            plan.missing = self.find_left_out(&elsewhere)?;
        }
        Ok(plan)
    }

    fn plan_unreached(&mut self, _head: &Head) -> Result<TargetPlan> {
        let mut plan = TargetPlan::default();
        for p in &self.images {
            plan.new_objects.push(p.target.whole());
            for d in p.all_blobs() {
                if let Some(b) = self.blobs.get(d).filter(|b| b.offset.is_some()) {
                    if plan.needed.insert(*d) && !self.is_manifest_blob(d) {
                        plan.bytes_to_write += b.size;
                    }
                }
            }
        }
        Ok(plan)
    }

    fn begin(&mut self, blob: &BlobEntry) -> io::Result<()> {
        self.finish_upload().map_err(to_io)?;
        if self.is_manifest_blob(&blob.digest) {
            if blob.size as usize > MANIFEST_LIMIT {
                return Err(io::Error::other(format!(
                    "manifest {} is larger than {MANIFEST_LIMIT} bytes",
                    blob.digest
                )));
            }
            self.manifests
                .insert(blob.digest, Vec::with_capacity(blob.size as usize));
            return Ok(());
        }
        let Some(repo) = self
            .images
            .iter()
            .find(|p| !p.present && p.missing.contains(&blob.digest))
            .map(|p| p.target.clone())
        else {
            return Ok(());
        };
        let (tx, mut rx) = mpsc::channel(4);
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let client = self.client.clone();
        let digest = blob.digest.to_string();
        let size = blob.size;
        let r = repo.clone();
        let task = self.rt.spawn(async move {
            client
                .push_blob_stream(&r, stream, &digest, Some(size))
                .await
        });
        self.uploaded.insert(blob.digest, repo);
        self.upload = Some(Upload {
            digest: blob.digest,
            tx: Some(tx),
            task: Some(task),
            sent: 0,
        });
        Ok(())
    }

    fn write(&mut self, blob: &BlobEntry, chunk: &[u8]) -> io::Result<()> {
        if let Some(m) = self.manifests.get_mut(&blob.digest) {
            m.extend_from_slice(chunk);
            return Ok(());
        }
        // No upload: not needed here, or it broke off and the rest of the blob is
        // ignored (it is pushed again in `finish`).
        let Some(up) = self.upload.as_mut() else {
            return Ok(());
        };
        let sent = up
            .tx
            .as_ref()
            .map(|tx| {
                tx.blocking_send(Ok(bytes::Bytes::copy_from_slice(chunk)))
                    .is_ok()
            })
            .unwrap_or(false);
        up.sent += chunk.len() as u64;
        if !sent {
            // The upload ended early: a refusal is reported, a broken connection
            // remembered.
            self.finish_upload().map_err(to_io)?;
            if !self.interrupted.contains_key(&blob.digest) {
                return Err(to_io(
                    RegistryFailure(format!(
                        "registry {} closed the upload of blob {} early without an error: rerun the import; if it happens again, tell the registry's operator",
                        self.host, blob.digest
                    ))
                    .into(),
                ));
            }
        }
        Ok(())
    }

    fn commit(&mut self, _blob: &BlobEntry) -> io::Result<()> {
        self.finish_upload().map_err(to_io)
    }

    fn finish(&mut self, head: &Head, progress: &Progress) -> Result<TargetReport> {
        self.finish_upload()?;
        let pushed_again = if self.interrupted.is_empty() {
            Vec::new()
        } else {
            self.push_interrupted(head, progress)?
        };
        let mut report = Vec::new();
        let client = self.client.clone();
        for p in self.images.clone() {
            if p.present {
                // Referrers may have been added since: their manifests are cheap.
                self.push_referrers(&p)?;
                report.push(PushedImage {
                    image: p.target.whole(),
                    digest: None,
                    pushed: false,
                });
                continue;
            }
            // Blobs pushed to another repository of this run: mount them here.
            for d in &p.missing {
                if let Some(src) = self.uploaded.get(d) {
                    if src.repository() != p.target.repository() {
                        let (src, t, digest) = (src.clone(), p.target.clone(), d.to_string());
                        self.rt
                            .block_on(with_retries(self.attempts, || {
                                client.mount_blob(&t, &src, &digest)
                            }))
                            .map_err(|(e, n)| {
                                self.explain(
                                    &t,
                                    &format!("mount blob {d} into {}", t.repository()),
                                    &e,
                                    n,
                                )
                            })?;
                    }
                }
            }
            // Child manifests by digest, then the root; then its referrers.
            self.push_manifests(&p.object, &p.target, None)?;
            self.push_referrers(&p)?;
            report.push(PushedImage {
                image: p.target.whole(),
                digest: Some(p.object.digest.to_string()),
                pushed: true,
            });
        }
        let origins: BTreeSet<String> = self.images.iter().map(|p| p.origin.clone()).collect();
        let ca = self.ca.as_ref().map(|c| {
            std::path::absolute(c)
                .unwrap_or_else(|_| c.clone())
                .display()
                .to_string()
        });
        let node = NodeConfig {
            basic: match &self.auth {
                RegistryAuth::Basic(u, p) => Some((u.clone(), p.clone())),
                _ => None,
            },
            identity_token: match &self.auth {
                RegistryAuth::Bearer(t) => Some(t.clone()),
                _ => None,
            },
            ca_file: ca.clone(),
        };
        // The snippet may hold a password: readable by its owner only.
        let yaml = registries_yaml(&origins, &self.endpoint(), &node);
        if let Some(dir) = self.mirror_file.parent() {
            fs::create_dir_all(dir)?;
        }
        write_private(&self.mirror_file, yaml.as_bytes())
            .with_context(|| format!("cannot write {}", self.mirror_file.display()))?;
        progress.message(format!(
            "registries.yaml mirror snippet written to {} (copy it to /etc/rancher/k3s/registries.yaml on every node)",
            self.mirror_file.display()
        ));
        let mirrors: BTreeMap<String, Vec<String>> = origins
            .iter()
            .map(|o| (o.clone(), vec![self.endpoint()]))
            .collect();
        // As in the snippet, but never the secret itself.
        let config = NodeConfigReport {
            auth: if let Some((user, _)) = &node.basic {
                Some(NodeAuthReport::Basic {
                    username: user.clone(),
                    password: IN_SNIPPET.into(),
                })
            } else if node.identity_token.is_some() {
                Some(NodeAuthReport::Token {
                    identity_token: IN_SNIPPET.into(),
                })
            } else {
                None
            },
            tls: ca.map(|ca_file| NodeTlsReport { ca_file }),
        };
        let mut configs = BTreeMap::new();
        if config.auth.is_some() || config.tls.is_some() {
            configs.insert(self.host.clone(), config);
        }
        Ok(TargetReport::Registry(PushReport {
            images: report,
            bytes_pushed: self.pushed_bytes,
            blobs_pushed_again: pushed_again,
            registries_yaml: self.mirror_file.clone(),
            mirrors,
            configs,
        }))
    }

    fn receipt(&self, _head: &Head) -> Option<Section> {
        Some(Section::Registry {
            host: self.host.clone(),
            images: self
                .images
                .iter()
                .map(|p| (p.target.whole(), p.object.digest))
                .collect(),
        })
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "test fixtures: std::fs and the tools that make them, where a failure is the test's"
)]
mod tests {
    use super::*;

    #[test]
    fn images_keep_path_and_tag_under_the_fleet_registry() {
        let d = Digest::of(b"x");
        let client = registry::Client::new(&Settings::default()).unwrap();
        let fleet = |h: &str| client.route_to(h, "");
        let name = |s: &str| crate::oci::Reference::parse(s).unwrap();
        let (r, o) = retarget(
            &name("reg.example:5000/team/app:1.2"),
            &fleet("10.0.0.1:5000"),
            &d,
        );
        assert_eq!(r.whole(), "10.0.0.1:5000/team/app:1.2");
        assert_eq!(o, "reg.example:5000");
        let (r, o) = retarget(&name("nginx:1"), &fleet("mirror:443"), &d);
        assert_eq!(r.whole(), "mirror:443/library/nginx:1");
        assert_eq!(o, "docker.io");
        // No tag: `latest`, as the name means; a digest only: the root.
        let (r, _) = retarget(&name("index.docker.io/team/app"), &fleet("mirror:443"), &d);
        assert_eq!(r.whole(), "mirror:443/team/app:latest");
        let (r, _) = retarget(&name(&format!("localhost/app@{d}")), &fleet("m:1"), &d);
        assert_eq!(r.whole(), format!("m:1/app@{d}"));
    }

    /// `send_from_file` over a file holding `prefix` then `stored`, for a blob entry
    /// that expects `blob`: its result and the items it sent.
    fn send(stored: &[u8], blob: &[u8]) -> (Result<()>, Vec<Result<Vec<u8>, String>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("site.gapb");
        let prefix = [7u8; 1000];
        std::fs::write(&path, [&prefix[..], stored].concat()).unwrap();
        let b = BlobEntry {
            digest: Digest::of(blob),
            size: blob.len() as u64,
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            offset: Some(0),
            encoding: None,
            content: None,
        };
        let (tx, mut rx) = mpsc::channel(64);
        let src = BundleSource::open(&path).unwrap().shared().unwrap();
        let r = send_from_file(
            &src,
            prefix.len() as u64,
            &b,
            tx,
            &Progress::quiet().bar("", 0),
        );
        let mut items = Vec::new();
        while let Ok(item) = rx.try_recv() {
            items.push(item.map(|c| c.to_vec()).map_err(|e| e.to_string()));
        }
        (r, items)
    }

    #[test]
    fn a_blob_is_pushed_again_only_with_the_bytes_that_verified() {
        let blob: Vec<u8> = (0..REPUSH_CHUNK * 2 + 10)
            .map(|i| (i % 251) as u8)
            .collect();
        let (r, items) = send(&blob, &blob);
        r.unwrap();
        let sent: Vec<u8> = items.into_iter().flat_map(|i| i.unwrap()).collect();
        assert!(sent == blob, "every byte, once, in order");

        // One byte changed on disk: the last chunk never goes, the upload is cut off
        // with an error, and the message names the blob and what to do.
        let mut changed = blob.clone();
        changed[5] ^= 1;
        let (r, items) = send(&changed, &blob);
        let msg = format!("{:#}", r.unwrap_err());
        assert!(msg.contains(&Digest::of(&blob).to_string()), "{msg}");
        assert!(
            msg.contains("changed after the import verified it"),
            "{msg}"
        );
        let sent: usize = items
            .iter()
            .filter_map(|i| i.as_ref().ok())
            .map(Vec::len)
            .sum();
        assert!(sent < blob.len());
        assert!(items.last().unwrap().is_err());

        // A file that ends early is refused the same way.
        let (r, _) = send(&blob[..100], &blob);
        assert!(format!("{:#}", r.unwrap_err()).contains("changed after the import verified it"));
    }

    #[test]
    fn from_stdin_the_error_names_each_blob_and_the_rerun() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let one = stdin_cannot_repush("reg:5000", &[(a, "connection reset".into())].into());
        let msg = one.to_string();
        assert!(
            msg.contains(&format!("blob {a} (connection reset)")),
            "{msg}"
        );
        assert!(
            msg.contains("rerun the import from the bundle file"),
            "{msg}"
        );
        assert!(one.is::<RegistryFailure>());
        let two = stdin_cannot_repush(
            "reg:5000",
            &[(a, "timed out".into()), (b, "timed out".into())].into(),
        )
        .to_string();
        assert!(
            two.contains("blobs ") && two.contains(&b.to_string()),
            "{two}"
        );
    }

    #[test]
    fn mirror_snippet_is_k3s_format() {
        let y = registries_yaml(
            &["docker.io".to_string()].into(),
            "https://mirror:5000",
            &NodeConfig::default(),
        );
        assert!(y.contains(
            "mirrors:\n  \"docker.io\":\n    endpoint:\n      - \"https://mirror:5000\"\n"
        ));
        assert!(!y.contains("configs:"), "{y}");
        let y = registries_yaml(
            &["docker.io".to_string()].into(),
            "https://mirror:5000",
            &NodeConfig {
                basic: Some(("ci".into(), "se\"cret".into())),
                identity_token: None,
                ca_file: Some("/etc/ca.pem".into()),
            },
        );
        assert!(
            y.ends_with("configs:\n  \"mirror:5000\":\n    auth:\n      username: \"ci\"\n      password: \"se\\\"cret\"\n    tls:\n      # copy this CA to the same path on every node\n      ca_file: \"/etc/ca.pem\"\n"),
            "{y}"
        );
        let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&y).unwrap();
        assert_eq!(
            parsed["configs"]["mirror:5000"]["auth"]["password"].as_str(),
            Some("se\"cret")
        );
    }
}
