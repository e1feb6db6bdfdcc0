//! Images into a running containerd (K3s's), over its gRPC API.
//!
//! This does what `ctr images import` followed by an unpack does, but straight from
//! the bundle stream and without a subprocess:
//!
//! - **Content** is written through the content service's `Write` stream with the
//!   expected digest and size, so containerd checks every blob itself as well. Each
//!   blob goes to the ingest `gapbundle-<hex>`; its first write is at offset 0, which
//!   truncates whatever a killed earlier import left there, and the blob is committed
//!   only in [`Target::commit`], after the bundle reader verified it. Blobs that
//!   containerd already has (content `Info`) are not asked for at all.
//! - **A lease** (`gapbundle-…`, expiring after 24 hours) holds everything written
//!   until the image records exist, so containerd's garbage collector cannot take
//!   content in between. A killed import leaves its committed content under that
//!   lease; the rerun finds it present and skips it.
//! - **GC labels** are set the way containerd's own pull does
//!   (`images.SetChildrenMappedLabels`): an index gets
//!   `containerd.io/gc.ref.content.m.<i>` per manifest, a manifest
//!   `containerd.io/gc.ref.content.config` and `containerd.io/gc.ref.content.l.<i>`.
//! - **Unpack** follows containerd 1.6's unpacker (`unpacker.go`): for the manifest
//!   of the host's platform, chain ids from the config's `rootfs.diff_ids`; a layer
//!   whose chain id is already a snapshot is skipped; otherwise prepare
//!   `extract-<unique> <chainID>` on the parent chain with label
//!   `containerd.io/snapshot.ref`, apply the layer with the diff service, check the
//!   diff id, commit as the chain id, and label the layer
//!   `containerd.io/uncompressed`; finally the config gets
//!   `containerd.io/gc.ref.snapshot.<snapshotter>` = the top chain id.
//! - **Image records** for the tag reference and `repo@sha256:<root>`, labelled
//!   `io.cri-containerd.image=managed` and `io.cri-containerd.pinned=pinned` so the
//!   CRI plugin lists them and kubelet's image GC never removes them.
//!
//! Images are registered and unpacked concurrently (a few at a time) once the whole
//! bundle verified. Memory stays bounded: chunks go to containerd as they arrive
//! (at most a few in flight), and only manifests and configs are read back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    AddResourceRequest, ApplyRequest, CreateImageRequest, CreateRequest as CreateLeaseRequest,
    DeleteRequest as DeleteLeaseRequest, GetImageRequest, Image, Info as ContentInfo, InfoRequest,
    ReadContentRequest, Resource, UpdateImageRequest, UpdateRequest, WriteAction,
    WriteContentRequest,
};
use containerd_client::tonic::metadata::{AsciiMetadataValue, MetadataValue};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use containerd_client::types::Descriptor as CDescriptor;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Target, TargetPlan};
use crate::bundle::manifest::{BlobEntry, Kind, Object};
use crate::bundle::oci::{is_index, is_manifest};
use crate::bundle::reader::Head;
use crate::bundle::Digest;
use crate::error::ContainerdFailure;
use crate::progress::Progress;

/// Labels the CRI plugin (and kubelet's image GC) look at.
pub const CRI_MANAGED: (&str, &str) = ("io.cri-containerd.image", "managed");
/// Pinned images are never garbage-collected by kubelet.
pub const CRI_PINNED: (&str, &str) = ("io.cri-containerd.pinned", "pinned");
/// How long a lease holds content if the import dies before registering images.
const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Largest manifest, index or config read back from containerd.
const SMALL_LIMIT: u64 = 64 << 20;
/// Images registered and unpacked at once.
const PARALLEL_IMAGES: usize = 4;
/// Chunks queued towards containerd per blob (each at most one reader chunk, 1 MiB).
const INFLIGHT_CHUNKS: usize = 4;

/// Cloneable handle on containerd: channel, namespace, lease.
#[derive(Clone)]
struct Ctx {
    channel: Channel,
    namespace: AsciiMetadataValue,
    lease: Option<AsciiMetadataValue>,
    snapshotter: String,
    socket: PathBuf,
}

fn not_found(s: &Status) -> bool {
    s.code() == Code::NotFound
}

impl Ctx {
    fn req<T>(&self, m: T) -> Request<T> {
        let mut r = Request::new(m);
        r.metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        if let Some(l) = &self.lease {
            r.metadata_mut().insert("containerd-lease", l.clone());
        }
        r
    }

    fn status(&self, what: &str, s: Status) -> anyhow::Error {
        let msg = format!(
            "containerd at {} refused to {what}: {} ({:?})",
            self.socket.display(),
            s.message(),
            s.code()
        );
        match s.code() {
            // Gone since we connected, or not letting us in: as unreachable.
            Code::Unavailable | Code::PermissionDenied | Code::Unauthenticated => {
                ContainerdFailure(msg).into()
            }
            _ => anyhow!(msg),
        }
    }

    async fn info(&self, d: &Digest) -> Result<Option<ContentInfo>> {
        let r = ContentClient::new(self.channel.clone())
            .info(self.req(InfoRequest {
                digest: d.to_string(),
            }))
            .await;
        match r {
            Ok(r) => Ok(r.into_inner().info),
            Err(s) if not_found(&s) => Ok(None),
            Err(s) => Err(self.status(&format!("look up content {d}"), s)),
        }
    }

    async fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut s = ContentClient::new(self.channel.clone())
            .read(self.req(ReadContentRequest {
                digest: d.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(|s| self.status(&format!("read content {d}"), s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = s
            .message()
            .await
            .map_err(|s| self.status(&format!("read content {d}"), s))?
        {
            out.extend_from_slice(&m.data);
            if out.len() as u64 > SMALL_LIMIT {
                bail!("content {d} is larger than {SMALL_LIMIT} bytes, too large for a manifest or config");
            }
        }
        if Digest::of(&out) != *d {
            bail!("containerd returned content for {d} that does not match its digest: its content store is damaged");
        }
        Ok(out)
    }

    async fn label(&self, d: &Digest, labels: BTreeMap<String, String>) -> Result<()> {
        if labels.is_empty() {
            return Ok(());
        }
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContentClient::new(self.channel.clone())
            .update(self.req(UpdateRequest {
                info: Some(ContentInfo {
                    digest: d.to_string(),
                    labels: labels.into_iter().collect(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(|s| self.status(&format!("label content {d}"), s))?;
        Ok(())
    }

    async fn image(&self, name: &str) -> Result<Option<Image>> {
        match ImagesClient::new(self.channel.clone())
            .get(self.req(GetImageRequest { name: name.into() }))
            .await
        {
            Ok(r) => Ok(r.into_inner().image),
            Err(s) if not_found(&s) => Ok(None),
            Err(s) => Err(self.status(&format!("look up image {name}"), s)),
        }
    }

    /// Creates or updates an image record; returns whether anything changed.
    async fn put_image(&self, name: &str, target: &CDescriptor) -> Result<bool> {
        let existing = self.image(name).await?;
        if let Some(img) = &existing {
            if image_current(img, target) {
                return Ok(false);
            }
        }
        let mut labels: HashMap<String, String> = existing
            .as_ref()
            .map(|i| i.labels.clone())
            .unwrap_or_default();
        for (k, v) in [CRI_MANAGED, CRI_PINNED] {
            labels.insert(k.into(), v.into());
        }
        let image = Image {
            name: name.into(),
            labels,
            target: Some(target.clone()),
            ..Default::default()
        };
        let mut client = ImagesClient::new(self.channel.clone());
        if existing.is_none() {
            match client
                .create(self.req(CreateImageRequest {
                    image: Some(image.clone()),
                    ..Default::default()
                }))
                .await
            {
                Ok(_) => return Ok(true),
                Err(s) if s.code() == Code::AlreadyExists => {}
                Err(s) => return Err(self.status(&format!("create image {name}"), s)),
            }
        }
        client
            .update(self.req(UpdateImageRequest {
                image: Some(image),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![
                        "target".into(),
                        format!("labels.{}", CRI_MANAGED.0),
                        format!("labels.{}", CRI_PINNED.0),
                    ],
                }),
                ..Default::default()
            }))
            .await
            .map_err(|s| self.status(&format!("update image {name}"), s))?;
        Ok(true)
    }

    async fn snapshot_exists(&self, key: &str) -> Result<bool> {
        match SnapshotsClient::new(self.channel.clone())
            .stat(self.req(StatSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key: key.into(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if not_found(&s) => Ok(false),
            Err(s) => Err(self.status(
                &format!(
                    "look up snapshot {key} in snapshotter {} (is --snapshotter right?)",
                    self.snapshotter
                ),
                s,
            )),
        }
    }

    /// Unpacks layers (as containerd 1.6's unpacker does); returns the number of
    /// snapshots created.
    async fn unpack(&self, layers: &[Desc], diff_ids: &[String]) -> Result<usize> {
        let mut created = 0;
        let mut parent = String::new();
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            let chain = chain_id(&parent, diff_id);
            if !self.snapshot_exists(&chain).await?
                && self.apply_layer(layer, diff_id, &chain, &parent).await?
            {
                created += 1;
            }
            parent = chain;
        }
        Ok(created)
    }

    async fn apply_layer(
        &self,
        layer: &Desc,
        diff_id: &str,
        chain: &str,
        parent: &str,
    ) -> Result<bool> {
        let labels: HashMap<String, String> =
            [("containerd.io/snapshot.ref".to_string(), chain.to_string())].into();
        let mut sn = SnapshotsClient::new(self.channel.clone());
        let mut key = String::new();
        let mut mounts = None;
        for _ in 0..3 {
            key = format!("extract-{} {chain}", unique_part());
            match sn
                .prepare(self.req(PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.clone(),
                    parent: parent.into(),
                    labels: labels.clone(),
                }))
                .await
            {
                Ok(r) => {
                    mounts = Some(r.into_inner().mounts);
                    break;
                }
                Err(s) if s.code() == Code::AlreadyExists => {
                    if self.snapshot_exists(chain).await? {
                        return Ok(false);
                    }
                }
                Err(s) => {
                    return Err(self.status(
                        &format!("prepare snapshot {key} in snapshotter {}", self.snapshotter),
                        s,
                    ))
                }
            }
        }
        let mounts =
            mounts.ok_or_else(|| anyhow!("cannot prepare an extraction snapshot for {chain}"))?;
        let sn_rm = sn.clone();
        let remove = |key: String| {
            let mut sn = sn_rm.clone();
            let req = self.req(RemoveSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                key,
            });
            async move {
                let _ = sn.remove(req).await;
            }
        };
        let applied = DiffClient::new(self.channel.clone())
            .apply(self.req(ApplyRequest {
                diff: Some(layer.to_containerd()),
                mounts,
                ..Default::default()
            }))
            .await;
        let applied = match applied {
            Ok(r) => r.into_inner().applied.map(|d| d.digest).unwrap_or_default(),
            Err(s) => {
                remove(key).await;
                return Err(self.status(&format!("extract layer {}", layer.digest), s));
            }
        };
        if applied != diff_id {
            remove(key).await;
            bail!(
                "layer {} unpacks to {applied}, but the image config says {diff_id}: the image is inconsistent",
                layer.digest
            );
        }
        match sn
            .commit(self.req(CommitSnapshotRequest {
                snapshotter: self.snapshotter.clone(),
                name: chain.into(),
                key: key.clone(),
                labels,
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {
                remove(key).await;
                return Ok(false);
            }
            Err(s) => {
                remove(key).await;
                return Err(self.status(&format!("commit snapshot {chain}"), s));
            }
        }
        let d: Digest = layer
            .digest
            .parse()
            .map_err(|_| anyhow!("layer digest {} is not a sha256 digest", layer.digest))?;
        self.label(
            &d,
            [(
                "containerd.io/uncompressed".to_string(),
                diff_id.to_string(),
            )]
            .into(),
        )
        .await?;
        Ok(true)
    }
}

fn image_current(img: &Image, target: &CDescriptor) -> bool {
    img.target.as_ref().map(|t| &t.digest) == Some(&target.digest)
        && [CRI_MANAGED, CRI_PINNED]
            .iter()
            .all(|(k, v)| img.labels.get(*k).map(String::as_str) == Some(*v))
}

fn unique_part() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    let r: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{r}", t.as_nanos())
}

/// `chainID(n) = sha256(chainID(n-1) + " " + diffID(n))`, `chainID(0) = diffID(0)`.
pub fn chain_id(parent: &str, diff_id: &str) -> String {
    if parent.is_empty() {
        return diff_id.to_string();
    }
    let h = Sha256::digest(format!("{parent} {diff_id}").as_bytes());
    let hex: String = h.iter().map(|x| format!("{x:02x}")).collect();
    format!("sha256:{hex}")
}

/// A descriptor as found in manifests.
#[derive(Clone, Debug)]
pub(crate) struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub platform: Option<(String, String, Option<String>)>,
    pub annotations: HashMap<String, String>,
}

impl Desc {
    fn to_containerd(&self) -> CDescriptor {
        CDescriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size as i64,
            annotations: self.annotations.clone(),
        }
    }
}

pub(crate) fn parse_descs(v: &Value) -> Vec<Desc> {
    v.as_array()
        .map(|a| a.iter().filter_map(parse_desc).collect())
        .unwrap_or_default()
}

pub(crate) fn parse_desc(v: &Value) -> Option<Desc> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let platform = v.get("platform").map(|p| {
        let f = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_string);
        (
            f("os").unwrap_or_default(),
            f("architecture").unwrap_or_default(),
            f("variant"),
        )
    });
    let annotations = v
        .get("annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Some(Desc {
        media_type: s("mediaType").unwrap_or_default(),
        digest: s("digest")?,
        size: v.get("size").and_then(Value::as_u64)?,
        platform,
        annotations,
    })
}

/// containerd's `images.ChildGCLabels` prefix for a child descriptor.
fn gc_label_prefix(media_type: &str, is_config: bool) -> &'static str {
    if is_config {
        "containerd.io/gc.ref.content.config"
    } else if is_manifest(media_type) {
        "containerd.io/gc.ref.content.m."
    } else if media_type.contains("layer") || media_type.contains("rootfs.diff") {
        "containerd.io/gc.ref.content.l."
    } else {
        "containerd.io/gc.ref.content."
    }
}

/// Labels as `images.SetChildrenMappedLabels` sets them: a prefix ending in `.`
/// (or used twice) gets a running index per prefix.
fn child_labels(children: &[(Desc, bool)]) -> BTreeMap<String, String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    let mut out = BTreeMap::new();
    for (c, is_config) in children {
        let key = gc_label_prefix(&c.media_type, *is_config);
        let idx = counts.entry(key).or_default();
        let name = if *idx > 0 || key.ends_with('.') {
            format!("{key}{idx}")
        } else {
            key.to_string()
        };
        *idx += 1;
        out.insert(name, c.digest.clone());
    }
    out
}

/// The platform this machine runs, as OCI names it.
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "arm" => "arm",
        other => other,
    };
    (std::env::consts::OS, arch)
}

/// Full references as containerd's CRI plugin names them (`docker.io/library/…`
/// for short Docker Hub names).
pub fn normalize_ref(name: &str) -> String {
    let first = name.split('/').next().unwrap_or("");
    let has_host =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_host {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    }
}

/// `repo@sha256:…` for an image reference.
pub fn digest_ref(name: &str, root: &Digest) -> String {
    let name = normalize_ref(name);
    let without_digest = name.split('@').next().unwrap_or(&name);
    let last_slash = without_digest.rfind('/').unwrap_or(0);
    let repo = match without_digest[last_slash..].rfind(':') {
        Some(i) => &without_digest[..last_slash + i],
        None => without_digest,
    };
    format!("{repo}@{root}")
}

/// The references an image object is registered under: tag (or as given) and digest.
pub fn image_refs(o: &Object) -> Vec<String> {
    let mut v = vec![normalize_ref(&o.name), digest_ref(&o.name, &o.digest)];
    v.dedup();
    v
}

struct Ingest {
    digest: Digest,
    tx: Option<mpsc::Sender<WriteContentRequest>>,
    task: Option<JoinHandle<std::result::Result<(), Status>>>,
    offset: u64,
    /// containerd answered that it already has the blob.
    exists: bool,
}

/// The containerd target.
pub struct Containerd {
    socket: PathBuf,
    namespace: String,
    snapshotter: String,
    rt: tokio::runtime::Runtime,
    ctx: Option<Ctx>,
    images: Vec<Object>,
    blobs: HashMap<Digest, BlobEntry>,
    ingest: Option<Ingest>,
    written: u64,
    lease_id: Option<String>,
}

impl Containerd {
    /// A target for the image objects of `head`; connects lazily in plan.
    pub fn new(socket: &Path, namespace: &str, snapshotter: &str, head: &Head) -> Result<Self> {
        AsciiMetadataValue::try_from(namespace)
            .map_err(|_| anyhow!("namespace `{namespace}` is not a valid containerd namespace"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gapbundle-containerd")
            .enable_all()
            .build()
            .context("cannot start the async runtime for containerd")?;
        Ok(Self {
            socket: socket.to_path_buf(),
            namespace: namespace.into(),
            snapshotter: snapshotter.into(),
            rt,
            ctx: None,
            images: head
                .manifest
                .objects
                .iter()
                .filter(|o| o.kind == Kind::Image)
                .cloned()
                .collect(),
            blobs: head
                .manifest
                .blobs
                .iter()
                .map(|b| (b.digest, b.clone()))
                .collect(),
            ingest: None,
            written: 0,
            lease_id: None,
        })
    }

    fn ctx(&mut self) -> Result<Ctx> {
        if let Some(c) = &self.ctx {
            return Ok(c.clone());
        }
        let socket = self.socket.clone();
        let channel = self
            .rt
            .block_on(async { containerd_client::connect(&socket).await })
            .map_err(|e| {
                let mut why = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    let s_text = s.to_string();
                    if !why.contains(&s_text) {
                        why = format!("{why}: {s_text}");
                    }
                    src = s.source();
                }
                ContainerdFailure(format!(
                    "cannot connect to containerd at {} ({why}): is K3s running? For a node where it is not, use --staged; for another containerd, pass --containerd SOCKET",
                    socket.display()
                ))
            })?;
        let ctx = Ctx {
            channel,
            namespace: MetadataValue::try_from(self.namespace.as_str())
                .map_err(|_| anyhow!("bad namespace {}", self.namespace))?,
            lease: None,
            snapshotter: self.snapshotter.clone(),
            socket: self.socket.clone(),
        };
        self.ctx = Some(ctx.clone());
        Ok(ctx)
    }

    /// Creates the lease on first use.
    fn leased(&mut self) -> Result<Ctx> {
        let ctx = self.ctx()?;
        if ctx.lease.is_some() {
            return Ok(ctx);
        }
        let expire = SystemTime::now() + LEASE_TTL;
        let id = format!("gapbundle-{}", unique_part());
        let labels: HashMap<String, String> =
            [("containerd.io/gc.expire".to_string(), rfc3339(expire))].into();
        let req = ctx.req(CreateLeaseRequest {
            id: id.clone(),
            labels,
        });
        self.rt
            .block_on(LeasesClient::new(ctx.channel.clone()).create(req))
            .map_err(|s| ctx.status("create a lease", s))?;
        let mut ctx = ctx;
        ctx.lease = Some(MetadataValue::try_from(id.as_str()).expect("ascii id"));
        self.lease_id = Some(id);
        self.ctx = Some(ctx.clone());
        Ok(ctx)
    }

    /// For the streaming calls, which return `io::Error`: the text of the whole
    /// chain, and the ContainerdFailure marker kept when there is one, so a
    /// containerd that went away mid-stream still exits as unreachable.
    fn io_err(e: anyhow::Error) -> io::Error {
        let msg = format!("{e:#}");
        if e.chain().any(|c| c.is::<ContainerdFailure>()) {
            io::Error::other(ContainerdFailure(msg))
        } else {
            io::Error::other(msg)
        }
    }

    fn finish_ingest(&mut self) -> Result<()> {
        let Some(mut ing) = self.ingest.take() else {
            return Ok(());
        };
        drop(ing.tx.take());
        let Some(task) = ing.task.take() else {
            return Ok(());
        };
        let r = self
            .rt
            .block_on(task)
            .map_err(|e| anyhow!("containerd write task failed: {e}"))?;
        match r {
            Ok(()) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(anyhow!(
                "containerd at {} did not accept blob {}: {} ({:?})",
                self.socket.display(),
                ing.digest,
                s.message(),
                s.code()
            )),
        }
    }

    fn send(&mut self, req: WriteContentRequest) -> Result<()> {
        let Some(ing) = self.ingest.as_mut() else {
            bail!("internal error: a blob chunk arrived before its write began");
        };
        if ing.exists {
            return Ok(());
        }
        if let Some(tx) = ing.tx.as_ref() {
            if tx.blocking_send(req).is_ok() {
                return Ok(());
            }
        }
        // The stream ended early: either containerd has the blob, or an error.
        let digest = ing.digest;
        let task = ing.task.take();
        ing.tx = None;
        let r = match task {
            Some(t) => self
                .rt
                .block_on(t)
                .map_err(|e| anyhow!("containerd write task failed: {e}"))?,
            None => Ok(()),
        };
        match r {
            Err(s) if s.code() == Code::AlreadyExists => {
                if let Some(i) = self.ingest.as_mut() {
                    i.exists = true;
                }
                Ok(())
            }
            Err(s) => Err(anyhow!(
                "containerd at {} did not accept blob {digest}: {} ({:?})",
                self.socket.display(),
                s.message(),
                s.code()
            )),
            Ok(()) => Err(anyhow!(
                "containerd at {} closed the write of {digest} early",
                self.socket.display()
            )),
        }
    }

    fn plan_async(&mut self) -> Result<TargetPlan> {
        let ctx = self.ctx()?;
        let images = self.images.clone();
        let blobs = self.blobs.clone();
        self.rt.block_on(async move {
            let mut plan = TargetPlan::default();
            let mut known: HashMap<Digest, bool> = HashMap::new();
            for o in &images {
                let mut complete = true;
                for d in &o.blobs {
                    let present = match known.get(d) {
                        Some(p) => *p,
                        None => {
                            let p = ctx.info(d).await?.is_some();
                            known.insert(*d, p);
                            p
                        }
                    };
                    if !present {
                        complete = false;
                        let b = blobs
                            .get(d)
                            .ok_or_else(|| anyhow!("blob {d} of {} is not in the bundle", o.name))?;
                        if b.offset.is_none() {
                            bail!("{} needs blob {d}, which this delta bundle does not carry and containerd does not have: import the full bundle first", o.name);
                        }
                        if plan.needed.insert(*d) {
                            plan.bytes_to_write += b.size;
                        }
                    }
                }
                let registered = complete && image_registered(&ctx, o).await?;
                if registered {
                    plan.present_objects.push(o.name.clone());
                } else {
                    plan.new_objects.push(o.name.clone());
                }
            }
            Ok(plan)
        })
    }
}

/// Whether every ref of `o` names its root with both labels and the host's
/// platform is unpacked (all content present).
async fn image_registered(ctx: &Ctx, o: &Object) -> Result<bool> {
    let target_digest = o.digest.to_string();
    for name in image_refs(o) {
        match ctx.image(&name).await? {
            Some(img)
                if img.target.as_ref().map(|t| &t.digest) == Some(&target_digest)
                    && [CRI_MANAGED, CRI_PINNED]
                        .iter()
                        .all(|(k, v)| img.labels.get(*k).map(String::as_str) == Some(*v)) => {}
            _ => return Ok(false),
        }
    }
    match host_manifest(ctx, o).await? {
        None => Ok(true),
        Some((_, layers, diff_ids)) => {
            if layers.is_empty() {
                return Ok(true);
            }
            let mut chain = String::new();
            for d in &diff_ids {
                chain = chain_id(&chain, d);
            }
            ctx.snapshot_exists(&chain).await
        }
    }
}

/// The manifest of `o` for the host platform: (config, layers, diff ids).
async fn host_manifest(ctx: &Ctx, o: &Object) -> Result<Option<(Desc, Vec<Desc>, Vec<String>)>> {
    let (os, arch) = host_platform();
    let have: BTreeSet<String> = o.blobs.iter().map(|d| d.to_string()).collect();
    let mut manifest = o.digest;
    if is_index(&o.media_type) {
        let idx: Value = serde_json::from_slice(&ctx.read(&o.digest).await?)
            .with_context(|| format!("index {} of {} is not JSON", o.digest, o.name))?;
        let found = parse_descs(&idx["manifests"]).into_iter().find(|c| {
            have.contains(&c.digest)
                && is_manifest(&c.media_type)
                && c.platform
                    .as_ref()
                    .is_some_and(|(pos, parch, _)| pos == os && parch == arch)
        });
        match found.and_then(|c| c.digest.parse().ok()) {
            Some(d) => manifest = d,
            None => return Ok(None),
        }
    } else if !is_manifest(&o.media_type) {
        return Ok(None);
    }
    let m: Value = serde_json::from_slice(&ctx.read(&manifest).await?)
        .with_context(|| format!("manifest {manifest} of {} is not JSON", o.name))?;
    let config = parse_desc(&m["config"])
        .ok_or_else(|| anyhow!("manifest {manifest} of {} has no config", o.name))?;
    let layers = parse_descs(&m["layers"]);
    let cd: Digest = config
        .digest
        .parse()
        .map_err(|_| anyhow!("config digest {} is not sha256", config.digest))?;
    let c: Value = serde_json::from_slice(&ctx.read(&cd).await?)
        .with_context(|| format!("config {cd} of {} is not JSON", o.name))?;
    let cos = c["os"].as_str().unwrap_or(os);
    let carch = c["architecture"].as_str().unwrap_or(arch);
    if cos != os || carch != arch {
        return Ok(None);
    }
    let diff_ids: Vec<String> = c["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if diff_ids.len() != layers.len() {
        bail!(
            "image {} ({manifest}) has {} layers but its config lists {} diff ids",
            o.name,
            layers.len(),
            diff_ids.len()
        );
    }
    Ok(Some((config, layers, diff_ids)))
}

/// Labels, unpacks and registers one image; returns its JSON report.
async fn register(ctx: Ctx, o: Object, root_size: u64) -> Result<Value> {
    let have: BTreeSet<String> = o.blobs.iter().map(|d| d.to_string()).collect();
    // GC labels, from the root down.
    let mut manifests = Vec::new();
    if is_index(&o.media_type) {
        let idx: Value = serde_json::from_slice(&ctx.read(&o.digest).await?)
            .with_context(|| format!("index {} of {} is not JSON", o.digest, o.name))?;
        let children: Vec<(Desc, bool)> = parse_descs(&idx["manifests"])
            .into_iter()
            .filter(|c| have.contains(&c.digest))
            .map(|c| (c, false))
            .collect();
        ctx.label(&o.digest, child_labels(&children)).await?;
        for (c, _) in children {
            if is_manifest(&c.media_type) {
                if let Ok(d) = c.digest.parse::<Digest>() {
                    manifests.push(d);
                }
            }
        }
    } else if is_manifest(&o.media_type) {
        manifests.push(o.digest);
    }
    for m in &manifests {
        let v: Value = serde_json::from_slice(&ctx.read(m).await?)
            .with_context(|| format!("manifest {m} of {} is not JSON", o.name))?;
        let mut children = Vec::new();
        if let Some(c) = parse_desc(&v["config"]) {
            children.push((c, true));
        }
        children.extend(
            parse_descs(&v["layers"])
                .into_iter()
                .filter(|l| have.contains(&l.digest))
                .map(|l| (l, false)),
        );
        ctx.label(m, child_labels(&children)).await?;
    }
    // Unpack the host's platform.
    let mut snapshots = 0;
    let mut unpacked = Value::Null;
    if let Some((config, layers, diff_ids)) = host_manifest(&ctx, &o).await? {
        snapshots = ctx
            .unpack(&layers, &diff_ids)
            .await
            .with_context(|| format!("cannot unpack {}", o.name))?;
        let mut top = String::new();
        for d in &diff_ids {
            top = chain_id(&top, d);
        }
        if let Ok(cd) = config.digest.parse::<Digest>() {
            if !top.is_empty() {
                ctx.label(
                    &cd,
                    [(
                        format!("containerd.io/gc.ref.snapshot.{}", ctx.snapshotter),
                        top.clone(),
                    )]
                    .into(),
                )
                .await?;
            }
        }
        let (os, arch) = host_platform();
        unpacked = json!(format!("{os}/{arch}"));
    }
    // Image records.
    let target = CDescriptor {
        media_type: o.media_type.clone(),
        digest: o.digest.to_string(),
        size: root_size as i64,
        annotations: HashMap::new(),
    };
    let mut changed = Vec::new();
    let refs = image_refs(&o);
    for r in &refs {
        if ctx.put_image(r, &target).await? {
            changed.push(r.clone());
        }
    }
    Ok(json!({
        "name": o.name, "digest": o.digest.to_string(), "refs": refs,
        "recordsChanged": changed, "unpacked": unpacked, "snapshotsCreated": snapshots,
    }))
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    crate::time::rfc3339(secs)
}

impl Target for Containerd {
    fn describe(&self) -> String {
        format!(
            "containerd {} (namespace {}, snapshotter {})",
            self.socket.display(),
            self.namespace,
            self.snapshotter
        )
    }

    fn plan(&mut self, _head: &Head) -> Result<TargetPlan> {
        self.plan_async()
    }

    fn begin(&mut self, blob: &BlobEntry) -> io::Result<()> {
        self.finish_ingest().map_err(Self::io_err)?;
        let ctx = self.leased().map_err(Self::io_err)?;
        let (tx, mut rx) = mpsc::channel::<WriteContentRequest>(INFLIGHT_CHUNKS);
        let stream = async_stream(move |cx| rx.poll_recv(cx));
        let req = ctx.req(stream);
        let ch = ctx.channel.clone();
        let task = self.rt.spawn(async move {
            let mut s = ContentClient::new(ch)
                .max_decoding_message_size(64 << 20)
                .write(req)
                .await?
                .into_inner();
            while s.message().await?.is_some() {}
            Ok(())
        });
        self.ingest = Some(Ingest {
            digest: blob.digest,
            tx: Some(tx),
            task: Some(task),
            offset: 0,
            exists: false,
        });
        Ok(())
    }

    fn write(&mut self, blob: &BlobEntry, chunk: &[u8]) -> io::Result<()> {
        let offset = self.ingest.as_ref().map(|i| i.offset).unwrap_or(0);
        let req = WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: format!("gapbundle-{}", blob.digest.hex()),
            total: blob.size as i64,
            expected: if offset == 0 {
                blob.digest.to_string()
            } else {
                String::new()
            },
            offset: offset as i64,
            data: chunk.to_vec(),
            labels: HashMap::new(),
        };
        self.send(req).map_err(Self::io_err)?;
        if let Some(i) = self.ingest.as_mut() {
            i.offset += chunk.len() as u64;
        }
        self.written += chunk.len() as u64;
        Ok(())
    }

    fn commit(&mut self, blob: &BlobEntry) -> io::Result<()> {
        let offset = self.ingest.as_ref().map(|i| i.offset).unwrap_or(0);
        let req = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: format!("gapbundle-{}", blob.digest.hex()),
            total: blob.size as i64,
            expected: blob.digest.to_string(),
            offset: offset as i64,
            data: Vec::new(),
            labels: HashMap::new(),
        };
        if self.ingest.is_some() {
            self.send(req).map_err(Self::io_err)?;
        }
        self.finish_ingest().map_err(Self::io_err)
    }

    fn finish(&mut self, _head: &Head, progress: &Progress) -> Result<Value> {
        self.finish_ingest()?;
        let ctx = self.leased()?;
        let images = self.images.clone();
        let blobs = self.blobs.clone();
        let lease = self.lease_id.clone().unwrap_or_default();
        progress.message(format!(
            "containerd: registering {} image(s), unpacking into {}",
            images.len(),
            self.snapshotter
        ));
        let reports = self.rt.block_on(async move {
            // Hold everything the images need, present before or written now.
            let all: BTreeSet<Digest> = images.iter().flat_map(|o| o.blobs.clone()).collect();
            let mut lc = LeasesClient::new(ctx.channel.clone());
            for d in &all {
                if ctx.info(d).await?.is_none() {
                    bail!("containerd at {} lacks blob {d} after the import: was it garbage-collected meanwhile? Run the import again", ctx.socket.display());
                }
                lc.add_resource(ctx.req(AddResourceRequest {
                    id: lease.clone(),
                    resource: Some(Resource {
                        id: d.to_string(),
                        r#type: "content".into(),
                    }),
                }))
                .await
                .map_err(|s| ctx.status("add content to the lease", s))?;
            }
            let jobs = images.into_iter().map(|o| {
                let size = blobs.get(&o.digest).map(|b| b.size).unwrap_or(o.size);
                register(ctx.clone(), o, size)
            });
            let results: Vec<Result<Value>> = futures_util::stream::iter(jobs)
                .buffered(PARALLEL_IMAGES)
                .collect()
                .await;
            results.into_iter().collect::<Result<Vec<Value>>>()
        })?;
        // Image records now hold the content: the lease can go.
        if let (Some(ctx), Some(id)) = (self.ctx.clone(), self.lease_id.take()) {
            let req = ctx.req(DeleteLeaseRequest { id, sync: false });
            if let Err(s) = self
                .rt
                .block_on(LeasesClient::new(ctx.channel.clone()).delete(req))
            {
                progress.warn(format!(
                    "could not delete the import lease (it expires within a day): {}",
                    s.message()
                ));
            }
        }
        Ok(json!({"images": reports, "bytesWritten": self.written}))
    }
}

/// A stream from a poll function (a bounded channel's receiver).
fn async_stream<T, F>(f: F) -> impl futures_util::Stream<Item = T> + Send + 'static
where
    F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Send + 'static,
    T: Send + 'static,
{
    futures_util::stream::poll_fn(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containerd_gone_mid_stream_keeps_its_marker() {
        let gone = anyhow::Error::new(ContainerdFailure("containerd went away".into()))
            .context("writing blob sha256:00");
        let e = Containerd::io_err(gone);
        assert!(e.get_ref().is_some_and(|i| i.is::<ContainerdFailure>()));
        assert!(e
            .to_string()
            .contains("writing blob sha256:00: containerd went away"));
        let other = Containerd::io_err(anyhow!("bad descriptor"));
        assert!(!other.get_ref().is_some_and(|i| i.is::<ContainerdFailure>()));
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = "sha256:aaaa";
        assert_eq!(chain_id("", a), a);
        let h = Sha256::digest(b"sha256:aaaa sha256:bbbb");
        let hex: String = h.iter().map(|x| format!("{x:02x}")).collect();
        assert_eq!(chain_id(a, "sha256:bbbb"), format!("sha256:{hex}"));
    }

    #[test]
    fn references_are_normalized_like_cri() {
        let d = Digest::of(b"x");
        assert_eq!(normalize_ref("nginx:1"), "docker.io/library/nginx:1");
        assert_eq!(normalize_ref("team/app:1"), "docker.io/team/app:1");
        assert_eq!(
            digest_ref("127.0.0.1:5000/team/app:1.2", &d),
            format!("127.0.0.1:5000/team/app@{d}")
        );
        assert_eq!(
            digest_ref("127.0.0.1:5000/team/app", &d),
            format!("127.0.0.1:5000/team/app@{d}")
        );
        assert_eq!(
            digest_ref(&format!("localhost/app@{d}"), &d),
            format!("localhost/app@{d}")
        );
    }

    #[test]
    fn gc_labels_match_containerd() {
        let desc = |mt: &str, d: &str| Desc {
            media_type: mt.into(),
            digest: d.into(),
            size: 1,
            platform: None,
            annotations: HashMap::new(),
        };
        let l = child_labels(&[
            (desc("application/vnd.oci.image.config.v1+json", "c"), true),
            (
                desc("application/vnd.oci.image.layer.v1.tar+gzip", "l0"),
                false,
            ),
            (
                desc("application/vnd.oci.image.layer.v1.tar+gzip", "l1"),
                false,
            ),
        ]);
        assert_eq!(l["containerd.io/gc.ref.content.config"], "c");
        assert_eq!(l["containerd.io/gc.ref.content.l.0"], "l0");
        assert_eq!(l["containerd.io/gc.ref.content.l.1"], "l1");
        let m = child_labels(&[(desc(crate::bundle::oci::MANIFEST_MEDIA_TYPE, "m"), false)]);
        assert_eq!(m["containerd.io/gc.ref.content.m.0"], "m");
    }
}
