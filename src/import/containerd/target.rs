//! The containerd target: planning what containerd lacks, streaming blobs into its
//! content store, and registering each image once the bundle verified (see the
//! module documentation of [`super`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{WriteAction, WriteContentRequest};
use containerd_client::tonic::{Code, Status};
use containerd_client::types::Descriptor as CDescriptor;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::client::{async_stream, connect, valid_namespace, Ctx};
use super::labels::{
    gc_labels, is_uncompressed_layer, looks_compressed, names, parse_descs, snapshot_gc_label,
    Labelled, CRI_MANAGED, CRI_PINNED, UNCOMPRESSED,
};
use super::unpack::{config_for_host, host_manifest, host_platform, top_chain_id};
use crate::bundle::manifest::BlobEntry;
use crate::bundle::oci::{is_config, is_index, is_manifest};
use crate::bundle::reader::Head;
use crate::bundle::receipt::{ImageRecord, Section};
use crate::bundle::Digest;
use crate::import::images::{self, CheckedImage};
use crate::import::report::{ContainerdImage, ContainerdReport, TargetReport};
use crate::import::{Target, TargetPlan};
use crate::progress::Progress;

/// Images registered and unpacked at once.
const PARALLEL_IMAGES: usize = 4;
/// Chunks queued towards containerd per blob (each at most one reader chunk, 1 MiB).
const INFLIGHT_CHUNKS: usize = 4;
/// Largest index, manifest or config kept in memory while it streams, so that its
/// GC labels go into the commit that writes it; a larger one is labelled after.
const KEPT_LIMIT: u64 = 4 << 20;

struct Ingest {
    digest: Digest,
    tx: Option<mpsc::Sender<WriteContentRequest>>,
    task: Option<JoinHandle<std::result::Result<(), Status>>>,
    offset: u64,
    /// containerd answered that it already has the blob.
    exists: bool,
    /// The bytes so far of an index, manifest or config of at most [`KEPT_LIMIT`]
    /// bytes.
    kept: Option<Vec<u8>>,
    /// The first bytes (up to four), to tell whether containerd would find the
    /// blob compressed.
    head: Vec<u8>,
}

/// The containerd target.
pub struct Containerd {
    socket: PathBuf,
    namespace: String,
    snapshotter: String,
    rt: tokio::runtime::Runtime,
    ctx: Option<Ctx>,
    images: Vec<CheckedImage>,
    blobs: HashMap<Digest, BlobEntry>,
    ingest: Option<Ingest>,
    /// Images the plan found registered and unpacked as this import would leave
    /// them (by object name), with the platform unpacked: `finish` leaves them be.
    registered: HashMap<String, Option<String>>,
    written: u64,
    /// Blobs this import committed under its lease (containerd adds committed
    /// content to the writer's lease in the commit's own transaction): `finish`
    /// need not look them up or hold them again.
    committed: HashSet<Digest>,
    /// The labels each blob this import committed got in its commit.
    labelled: Labelled,
    /// For each blob, the images (indices into `images`) that hold it.
    owners: HashMap<Digest, Vec<usize>>,
    lease_id: Option<String>,
    /// The bundle's digest, in the lease's name.
    bundle: Digest,
    /// Leases of killed imports taken over, and the partial writes they held that
    /// were discarded: said in `finish`.
    taken_over: Vec<String>,
    discarded: usize,
}

impl Containerd {
    /// A target for the image objects of `head` (their names checked, see
    /// [`images::checked`]); connects lazily in plan.
    pub fn new(socket: &Path, namespace: &str, snapshotter: &str, head: &Head) -> Result<Self> {
        if !valid_namespace(namespace) {
            bail!("namespace `{namespace}` is not a valid containerd namespace");
        }
        let images = images::checked(head)?;
        let mut owners: HashMap<Digest, Vec<usize>> = HashMap::new();
        for (i, img) in images.iter().enumerate() {
            for d in &img.object.blobs {
                owners.entry(*d).or_default().push(i);
            }
        }
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
            images,
            blobs: head
                .manifest
                .blobs
                .iter()
                .map(|b| (b.digest, b.clone()))
                .collect(),
            ingest: None,
            registered: HashMap::new(),
            written: 0,
            committed: HashSet::new(),
            labelled: Labelled::new(),
            owners,
            lease_id: None,
            bundle: head.digest,
            taken_over: Vec::new(),
            discarded: 0,
        })
    }

    fn ctx(&mut self) -> Result<Ctx> {
        if let Some(c) = &self.ctx {
            return Ok(c.clone());
        }
        let ctx = self
            .rt
            .block_on(connect(&self.socket, &self.namespace, &self.snapshotter))?;
        self.ctx = Some(ctx.clone());
        Ok(ctx)
    }

    /// Creates the lease on first use, and takes over what imports killed
    /// before left under theirs (see [`super::client`]): their committed content
    /// is held by the new lease before the old one goes, so nothing this import
    /// found present can be collected meanwhile.
    fn leased(&mut self) -> Result<Ctx> {
        let ctx = self.ctx()?;
        if ctx.lease.is_some() {
            return Ok(ctx);
        }
        let (ctx, id) = self.rt.block_on(ctx.with_new_lease(&self.bundle))?;
        self.lease_id = Some(id.clone());
        self.ctx = Some(ctx.clone());
        let stale = self.rt.block_on(ctx.stale_leases(&id))?;
        for old in stale {
            self.discarded += self.rt.block_on(ctx.take_over(&id, &old))?;
            self.taken_over.push(old);
        }
        Ok(ctx)
    }

    /// For the streaming calls, which return `io::Error`: the whole error carried
    /// inside, so a containerd that went away mid-stream still exits as
    /// unreachable.
    fn io_err(e: anyhow::Error) -> io::Error {
        crate::error::carried(e)
    }

    /// Ends the write in progress; true when its stream ended without error and
    /// containerd did not say it had the blob already. After a commit that means
    /// this write committed it, under its lease; a write ended without one
    /// committed nothing.
    fn finish_ingest(&mut self) -> Result<bool> {
        let Some(mut ing) = self.ingest.take() else {
            return Ok(false);
        };
        drop(ing.tx.take());
        let Some(task) = ing.task.take() else {
            return Ok(false);
        };
        let r = self
            .rt
            .block_on(task)
            .map_err(|e| anyhow!("containerd write task failed: {e}"))?;
        match r {
            Ok(()) => Ok(!ing.exists),
            Err(s) if s.code() == Code::AlreadyExists => Ok(false),
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

    /// The labels to commit `blob` with, the ones containerd would otherwise get
    /// in a transaction of their own later: an uncompressed layer's
    /// `containerd.io/uncompressed` (its own digest, as the unpacker would set
    /// it), and an index's or manifest's GC labels when every image that holds it
    /// gives it the same ones; and the config of images that are all single
    /// manifests, for this host's platform, its `gc.ref.snapshot.<snapshotter>`
    /// (the top chain id of its `rootfs.diff_ids`, as registering would set it
    /// after the unpack; an image with an index is left to registering, since
    /// which manifest is unpacked depends on the index). None for anything else, or
    /// a blob that is not JSON: registering the images sets what is missing.
    fn commit_labels(&self, blob: &BlobEntry) -> BTreeMap<String, String> {
        let Some(ing) = self.ingest.as_ref().filter(|_| blob.encoding.is_none()) else {
            return BTreeMap::new();
        };
        if is_uncompressed_layer(&blob.media_type) && !looks_compressed(&ing.head) {
            return [(UNCOMPRESSED.to_string(), blob.digest.to_string())].into();
        }
        let Some(v) = ing
            .kept
            .as_deref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        else {
            return BTreeMap::new();
        };
        let owners = self
            .owners
            .get(&blob.digest)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        if is_config(&blob.media_type) {
            let plain = |i: &usize| is_manifest(&self.images[*i].object.media_type);
            if owners.is_empty() || !owners.iter().all(plain) {
                return BTreeMap::new();
            }
            let diff_ids: Option<Vec<&str>> = v["rootfs"]["diff_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .map(Value::as_str)
                .collect();
            let top = diff_ids.map(top_chain_id).unwrap_or_default();
            if !config_for_host(&v) || top.is_empty() {
                return BTreeMap::new();
            }
            return [(snapshot_gc_label(&self.snapshotter), top)].into();
        }
        let mut agreed: Option<BTreeMap<String, String>> = None;
        for &i in owners {
            let have: BTreeSet<String> = self.images[i]
                .object
                .blobs
                .iter()
                .map(|d| d.to_string())
                .collect();
            let labels = gc_labels(&v, &blob.media_type, &have);
            match &agreed {
                Some(a) if *a != labels => return BTreeMap::new(),
                _ => agreed = Some(labels),
            }
        }
        agreed.unwrap_or_default()
    }

    fn plan_async(&mut self) -> Result<TargetPlan> {
        let ctx = self.ctx()?;
        let images = self.images.clone();
        let blobs = self.blobs.clone();
        let (plan, registered) = self.rt.block_on(async move {
            let mut plan = TargetPlan::default();
            let mut registered = HashMap::new();
            let mut known: HashMap<Digest, bool> = HashMap::new();
            for img in &images {
                let o = &img.object;
                let mut complete = true;
                for d in &o.blobs {
                    let b = blobs
                        .get(d)
                        .ok_or_else(|| anyhow!("blob {d} of {} is not in the bundle", o.name))?;
                    let present = match known.get(d) {
                        Some(p) => *p,
                        None => {
                            // By digest and size: content of another size under this
                            // digest is no use to an image that needs this blob.
                            let p = ctx
                                .info(d)
                                .await?
                                .is_some_and(|i| u64::try_from(i.size).ok() == Some(b.size));
                            known.insert(*d, p);
                            p
                        }
                    };
                    if !present {
                        complete = false;
                        if b.offset.is_none() {
                            // A delta left it out: containerd should have had it.
                            plan.missing.insert(*d);
                        } else if plan.needed.insert(*d) {
                            plan.bytes_to_write += b.size;
                        }
                    }
                }
                let found = if complete {
                    image_registered(&ctx, img).await?
                } else {
                    None
                };
                match found {
                    Some(unpacked) => {
                        registered.insert(o.name.clone(), unpacked);
                        plan.present_objects.push(o.name.clone());
                    }
                    None => plan.new_objects.push(o.name.clone()),
                }
            }
            Ok::<_, anyhow::Error>((plan, registered))
        })?;
        self.registered = registered;
        Ok(plan)
    }
}

/// The ingest (the content service's name for a write in progress) of `blob`.
fn ingest_ref(blob: &BlobEntry) -> String {
    format!("{}{}", super::client::LEASE_PREFIX, blob.digest.hex())
}

/// Whether every name of `img` names its root with both labels and the host's
/// platform is unpacked (all content present): then the platform unpacked, if the
/// image has one for this host.
async fn image_registered(ctx: &Ctx, img: &CheckedImage) -> Result<Option<Option<String>>> {
    let o = &img.object;
    let target_digest = o.digest.to_string();
    for name in names(img) {
        match ctx.image(&name).await? {
            Some(img)
                if img.target.as_ref().map(|t| &t.digest) == Some(&target_digest)
                    && [CRI_MANAGED, CRI_PINNED]
                        .iter()
                        .all(|(k, v)| img.labels.get(*k).map(String::as_str) == Some(*v)) => {}
            _ => return Ok(None),
        }
    }
    let (os, arch) = host_platform();
    match host_manifest(ctx, o).await? {
        None => Ok(Some(None)),
        Some((_, layers, diff_ids)) => {
            let unpacked = Some(format!("{os}/{arch}"));
            if layers.is_empty() {
                return Ok(Some(unpacked));
            }
            let chain = top_chain_id(diff_ids.iter().map(String::as_str));
            Ok(ctx.snapshot_exists(&chain).await?.then_some(unpacked))
        }
    }
}

/// Labels, unpacks and registers one image; returns its JSON report. Labels the
/// commit that wrote a blob set already (`labelled`) are not set again.
async fn register(
    ctx: Ctx,
    img: CheckedImage,
    root_size: u64,
    labelled: Arc<Labelled>,
) -> Result<ContainerdImage> {
    let refs = names(&img);
    let o = img.object;
    let have: BTreeSet<String> = o.blobs.iter().map(|d| d.to_string()).collect();
    // GC labels, from the root down.
    let mut manifests = Vec::new();
    if is_index(&o.media_type) {
        let idx: Value = serde_json::from_slice(&ctx.read(&o.digest).await?)
            .with_context(|| format!("index {} of {} is not JSON", o.digest, o.name))?;
        let labels = gc_labels(&idx, &o.media_type, &have);
        if labelled.get(&o.digest) != Some(&labels) {
            ctx.label(&o.digest, labels).await?;
        }
        for c in parse_descs(&idx["manifests"]) {
            if have.contains(&c.digest) && is_manifest(&c.media_type) {
                if let Ok(d) = c.digest.parse::<Digest>() {
                    manifests.push((d, c.media_type));
                }
            }
        }
    } else if is_manifest(&o.media_type) {
        manifests.push((o.digest, o.media_type.clone()));
    }
    for (m, media_type) in &manifests {
        let v: Value = serde_json::from_slice(&ctx.read(m).await?)
            .with_context(|| format!("manifest {m} of {} is not JSON", o.name))?;
        let labels = gc_labels(&v, media_type, &have);
        if labelled.get(m) != Some(&labels) {
            ctx.label(m, labels).await?;
        }
    }
    // Unpack the host's platform.
    let mut snapshots = 0;
    let mut unpacked = None;
    if let Some((config, layers, diff_ids)) = host_manifest(&ctx, &o).await? {
        snapshots = ctx
            .unpack(&layers, &diff_ids, &labelled)
            .await
            .with_context(|| format!("cannot unpack {}", o.name))?;
        let top = top_chain_id(diff_ids.iter().map(String::as_str));
        if let Ok(cd) = config.digest.parse::<Digest>() {
            if !top.is_empty() {
                let labels = BTreeMap::from([(snapshot_gc_label(&ctx.snapshotter), top.clone())]);
                if labelled.get(&cd) != Some(&labels) {
                    ctx.label(&cd, labels).await?;
                }
            }
        }
        let (os, arch) = host_platform();
        unpacked = Some(format!("{os}/{arch}"));
    }
    // Image records.
    let target = CDescriptor {
        media_type: o.media_type.clone(),
        digest: o.digest.to_string(),
        size: root_size as i64,
        annotations: HashMap::new(),
    };
    let mut changed = Vec::new();
    for r in &refs {
        if ctx.put_image(r, &target).await? {
            changed.push(r.clone());
        }
    }
    Ok(ContainerdImage {
        name: o.name.clone(),
        digest: o.digest.to_string(),
        refs,
        records_changed: changed,
        unpacked,
        snapshots_created: snapshots,
    })
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

    fn plan_unreached(&mut self, _head: &Head) -> Result<TargetPlan> {
        let mut plan = TargetPlan::default();
        for img in &self.images {
            plan.new_objects.push(img.object.name.clone());
            for d in &img.object.blobs {
                if let Some(b) = self.blobs.get(d).filter(|b| b.offset.is_some()) {
                    if plan.needed.insert(*d) {
                        plan.bytes_to_write += b.size;
                    }
                }
            }
        }
        Ok(plan)
    }

    fn begin(&mut self, blob: &BlobEntry) -> io::Result<()> {
        self.finish_ingest().map_err(Self::io_err)?;
        let ctx = self.leased().map_err(Self::io_err)?;
        // A partial ingest of this blob (an import killed while it streamed, whose
        // lease has expired or was not ours to take over) is restarted: its bytes
        // were never verified, and this write starts from the first byte.
        let ingest = ingest_ref(blob);
        if self
            .rt
            .block_on(ctx.ingest_offset(&ingest))
            .map_err(Self::io_err)?
            .is_some()
        {
            self.rt
                .block_on(ctx.abort_ingest(&ingest))
                .map_err(Self::io_err)?;
            self.discarded += 1;
        }
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
        let mt = &blob.media_type;
        let keep = (is_index(mt) || is_manifest(mt) || is_config(mt))
            && blob.size <= KEPT_LIMIT
            && blob.encoding.is_none();
        self.ingest = Some(Ingest {
            digest: blob.digest,
            tx: Some(tx),
            task: Some(task),
            offset: 0,
            exists: false,
            kept: keep.then(|| Vec::with_capacity(blob.size as usize)),
            head: Vec::new(),
        });
        Ok(())
    }

    fn write(&mut self, blob: &BlobEntry, chunk: &[u8]) -> io::Result<()> {
        let offset = self.ingest.as_ref().map(|i| i.offset).unwrap_or(0);
        let req = WriteContentRequest {
            action: WriteAction::Write as i32,
            r#ref: ingest_ref(blob),
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
            if i.head.len() < 4 {
                let n = (4 - i.head.len()).min(chunk.len());
                i.head.extend_from_slice(&chunk[..n]);
            }
            if let Some(k) = i.kept.as_mut() {
                if (k.len() + chunk.len()) as u64 <= KEPT_LIMIT {
                    k.extend_from_slice(chunk);
                } else {
                    i.kept = None;
                }
            }
        }
        self.written += chunk.len() as u64;
        Ok(())
    }

    fn commit(&mut self, blob: &BlobEntry) -> io::Result<()> {
        let offset = self.ingest.as_ref().map(|i| i.offset).unwrap_or(0);
        // containerd's content service sets a commit's labels in the commit's own
        // metadata transaction: one transaction (two `fdatasync`s) fewer than an
        // update after.
        let labels = self.commit_labels(blob);
        let req = WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: ingest_ref(blob),
            total: blob.size as i64,
            expected: blob.digest.to_string(),
            offset: offset as i64,
            data: Vec::new(),
            labels: labels.clone().into_iter().collect(),
        };
        if self.ingest.is_some() {
            self.send(req).map_err(Self::io_err)?;
        }
        if self.finish_ingest().map_err(Self::io_err)? {
            self.committed.insert(blob.digest);
            if !labels.is_empty() {
                self.labelled.insert(blob.digest, labels);
            }
        }
        Ok(())
    }

    fn finish(&mut self, _head: &Head, progress: &Progress) -> Result<TargetReport> {
        self.finish_ingest()?;
        // An image the plan found registered, labelled and unpacked is left as it
        // is: labelling, unpacking and recording it again changed nothing and cost
        // a quarter of a first import (200 images of 5 layers).
        let (present, images): (Vec<CheckedImage>, Vec<CheckedImage>) = self
            .images
            .clone()
            .into_iter()
            .partition(|i| self.registered.contains_key(&i.object.name));
        let present: Vec<ContainerdImage> = present
            .iter()
            .map(|i| ContainerdImage {
                name: i.object.name.clone(),
                digest: i.object.digest.to_string(),
                refs: names(i),
                records_changed: Vec::new(),
                unpacked: self.registered[&i.object.name].clone(),
                snapshots_created: 0,
            })
            .collect();
        // With nothing to register and no lease to take over from a killed import,
        // no lease either: such a re-import only reads.
        if images.is_empty() && self.lease_id.is_none() {
            let ctx = self.ctx()?;
            if self.rt.block_on(ctx.stale_leases(""))?.is_empty() {
                return Ok(TargetReport::Containerd(ContainerdReport {
                    images: present,
                    bytes_written: self.written,
                }));
            }
        }
        let ctx = self.leased()?;
        let blobs = self.blobs.clone();
        let lease = self.lease_id.clone().unwrap_or_default();
        let committed = std::mem::take(&mut self.committed);
        let labelled = Arc::new(std::mem::take(&mut self.labelled));
        if !self.taken_over.is_empty() {
            progress.message(format!(
                "containerd: took over what {} interrupted import(s) left ({}), discarding {} partial write(s)",
                self.taken_over.len(),
                self.taken_over.join(", "),
                self.discarded
            ));
        }
        if !images.is_empty() {
            progress.message(format!(
                "containerd: registering {} image(s), unpacking into {}",
                images.len(),
                self.snapshotter
            ));
        }
        let mut reports = self.rt.block_on(async move {
            // Hold everything the images to register need that was present
            // before: what this import committed its lease holds already.
            let all: BTreeSet<Digest> = images
                .iter()
                .flat_map(|i| i.object.blobs.clone())
                .filter(|d| !committed.contains(d))
                .collect();
            for d in &all {
                if ctx.info(d).await?.is_none() {
                    bail!("containerd at {} lacks blob {d} after the import: was it garbage-collected meanwhile? Run the import again", ctx.socket.display());
                }
                ctx.hold(&lease, d).await?;
            }
            let jobs = images.into_iter().map(|img| {
                let o = &img.object;
                let size = blobs.get(&o.digest).map(|b| b.size).unwrap_or(o.size);
                register(ctx.clone(), img, size, labelled.clone())
            });
            let results: Vec<Result<ContainerdImage>> = futures_util::stream::iter(jobs)
                .buffered(PARALLEL_IMAGES)
                .collect()
                .await;
            results.into_iter().collect::<Result<Vec<ContainerdImage>>>()
        })?;
        // Image records now hold the content: the lease can go.
        if let (Some(ctx), Some(id)) = (self.ctx.clone(), self.lease_id.take()) {
            if let Err(s) = self.rt.block_on(ctx.delete_lease(id)) {
                progress.warn(format!(
                    "could not delete the import lease (it expires within a day): {}",
                    s.message()
                ));
            }
        }
        // In the bundle's order, as before.
        reports.extend(present);
        let order: HashMap<&str, usize> = self
            .images
            .iter()
            .enumerate()
            .map(|(i, img)| (img.object.name.as_str(), i))
            .collect();
        reports.sort_by_key(|r| order.get(r.name.as_str()).copied());
        Ok(TargetReport::Containerd(ContainerdReport {
            images: reports,
            bytes_written: self.written,
        }))
    }

    fn receipt(&self, _head: &Head) -> Option<Section> {
        let mut images: Vec<ImageRecord> = self
            .images
            .iter()
            .map(|i| ImageRecord {
                name: i.object.name.clone(),
                digest: i.object.digest,
                refs: names(i),
            })
            .collect();
        images.sort();
        Some(Section::Containerd {
            socket: crate::import::receipt_path(&self.socket),
            namespace: self.namespace.clone(),
            images,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containerd_gone_mid_stream_keeps_its_marker() {
        use crate::error::ContainerdFailure;
        let gone = anyhow::Error::new(ContainerdFailure("containerd went away".into()))
            .context("writing blob sha256:00");
        let e = Containerd::io_err(gone);
        let inner = e.get_ref().expect("carries the error");
        let carried = inner
            .downcast_ref::<crate::error::Carried>()
            .expect("the whole error");
        assert!(carried.0.chain().any(|c| c.is::<ContainerdFailure>()));
        let text: Vec<String> =
            std::iter::successors(Some(inner as &(dyn std::error::Error + 'static)), |c| {
                c.source()
            })
            .map(|c| c.to_string())
            .collect();
        assert_eq!(text, ["writing blob sha256:00", "containerd went away"]);
    }
}
