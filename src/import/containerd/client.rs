//! containerd's gRPC API as the import uses it: the connection, the namespace and
//! lease every request carries, error mapping, content reads and labels, leases.
//!
//! Everything here is one request (or one stream) to containerd; what to ask for,
//! and in which order, is the target's business ([`super::target`]).
//!
//! Leases are named so that a later run recognises them: `gapbundle-<bundle>-<unix
//! time>-<pid>`, labelled with the pid and host name of the process that holds
//! it. An import killed with -9 cannot delete its lease, and its partial ingests
//! and `extract-` snapshots stay behind under it; the next import on the same
//! host finds every such lease whose process is gone, takes over the committed
//! content it holds (so nothing a rerun reuses can be collected in between),
//! aborts its ingests, removes its extraction snapshots, and deletes it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::RemoveSnapshotRequest;
use containerd_client::services::v1::{
    AbortRequest, AddResourceRequest, CreateRequest as CreateLeaseRequest,
    DeleteRequest as DeleteLeaseRequest, GetImageRequest, Image, Info as ContentInfo, InfoRequest,
    Lease, ListContentRequest, ListRequest as ListLeasesRequest, ListResourcesRequest,
    ReadContentRequest, Resource, StatusRequest, UpdateRequest,
};
use containerd_client::tonic::metadata::{AsciiMetadataValue, MetadataValue};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};

use crate::bundle::digest::lower_hex;
use crate::bundle::Digest;
use crate::error::ContainerdFailure;

/// How long a lease holds content if the import dies before registering images
/// and no later import on the host cleans it up.
const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Every lease gapbundle makes starts with this.
pub(super) const LEASE_PREFIX: &str = "gapbundle-";
/// Lease labels: the process that holds the lease, its host, the bundle.
const LEASE_PID: &str = "io.gapbundle.pid";
const LEASE_HOST: &str = "io.gapbundle.host";
const LEASE_BUNDLE: &str = "io.gapbundle.bundle";
/// Extraction snapshots gapbundle prepares are keyed `<this><unique> <chain id>`
/// (containerd's unpacker uses `extract-<unique> <chain id>`).
pub(super) const EXTRACT_PREFIX: &str = "extract-gapbundle-";
/// Largest manifest, index or config read back from containerd.
const SMALL_LIMIT: u64 = 64 << 20;

/// Cloneable handle on containerd: channel, namespace, lease.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) channel: Channel,
    namespace: AsciiMetadataValue,
    pub(super) lease: Option<AsciiMetadataValue>,
    pub(super) snapshotter: String,
    pub(super) socket: std::path::PathBuf,
    /// One lock per chain id being unpacked, shared by every clone: images
    /// registered at once that share a layer extract it once (see
    /// [`Ctx::unpack`](super::unpack)).
    pub(super) chains: ChainLocks,
}

/// Locks by chain id, made on first use.
pub(super) type ChainLocks = Arc<std::sync::Mutex<HashMap<String, ChainLock>>>;
/// The lock held while one chain id is looked up and extracted.
pub(super) type ChainLock = Arc<tokio::sync::Mutex<()>>;

pub(super) fn not_found(s: &Status) -> bool {
    s.code() == Code::NotFound
}

impl Ctx {
    pub(super) fn req<T>(&self, m: T) -> Request<T> {
        let mut r = Request::new(m);
        r.metadata_mut()
            .insert("containerd-namespace", self.namespace.clone());
        if let Some(l) = &self.lease {
            r.metadata_mut().insert("containerd-lease", l.clone());
        }
        r
    }

    pub(super) fn status(&self, what: &str, s: Status) -> anyhow::Error {
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

    pub(super) async fn info(&self, d: &Digest) -> Result<Option<ContentInfo>> {
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

    /// Every committed blob of the namespace's content store, by digest (content
    /// under a digest this format does not use is left out).
    pub(super) async fn list_content(&self) -> Result<Vec<Digest>> {
        let mut s = ContentClient::new(self.channel.clone())
            .list(self.req(ListContentRequest { filters: vec![] }))
            .await
            .map_err(|s| self.status("list its content", s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = s
            .message()
            .await
            .map_err(|s| self.status("list its content", s))?
        {
            out.extend(
                m.info
                    .iter()
                    .filter_map(|i| i.digest.parse::<Digest>().ok()),
            );
        }
        Ok(out)
    }

    pub(super) async fn read(&self, d: &Digest) -> Result<Vec<u8>> {
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

    pub(super) async fn label(&self, d: &Digest, labels: BTreeMap<String, String>) -> Result<()> {
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

    pub(super) async fn image(&self, name: &str) -> Result<Option<Image>> {
        match ImagesClient::new(self.channel.clone())
            .get(self.req(GetImageRequest { name: name.into() }))
            .await
        {
            Ok(r) => Ok(r.into_inner().image),
            Err(s) if not_found(&s) => Ok(None),
            Err(s) => Err(self.status(&format!("look up image {name}"), s)),
        }
    }

    /// A new lease for `bundle` (`gapbundle-<bundle>-<time>-<pid>`, expiring after
    /// [`LEASE_TTL`]) and this handle with it attached to every later request.
    pub(super) async fn with_new_lease(&self, bundle: &Digest) -> Result<(Ctx, String)> {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let pid = std::process::id();
        let id = format!("{LEASE_PREFIX}{}-{secs}-{pid}", &bundle.hex()[..12]);
        let labels: HashMap<String, String> = [
            (
                "containerd.io/gc.expire".to_string(),
                rfc3339(now + LEASE_TTL),
            ),
            (LEASE_PID.to_string(), pid.to_string()),
            (LEASE_HOST.to_string(), host_name()),
            (LEASE_BUNDLE.to_string(), bundle.to_string()),
        ]
        .into();
        let req = self.req(CreateLeaseRequest {
            id: id.clone(),
            labels,
        });
        LeasesClient::new(self.channel.clone())
            .create(req)
            .await
            .map_err(|s| self.status("create a lease", s))?;
        let mut ctx = self.clone();
        ctx.lease = Some(MetadataValue::try_from(id.as_str()).expect("ascii id"));
        Ok((ctx, id))
    }

    /// The leases of earlier gapbundle runs on this host whose process is gone
    /// (killed before it could delete its lease).
    pub(super) async fn stale_leases(&self, ours: &str) -> Result<Vec<String>> {
        let leases = LeasesClient::new(self.channel.clone())
            .list(self.req(ListLeasesRequest {
                filters: Vec::new(),
            }))
            .await
            .map_err(|s| self.status("list leases", s))?
            .into_inner()
            .leases;
        let host = host_name();
        Ok(leases
            .into_iter()
            .filter(|l| l.id.starts_with(LEASE_PREFIX) && l.id != ours && is_stale(l, &host))
            .map(|l| l.id)
            .collect())
    }

    /// Takes over what the stale lease `stale` holds into lease `ours`: committed
    /// content and snapshots move to `ours`, partial ingests are aborted (a rerun
    /// writes them afresh) and extraction snapshots removed; then `stale` is
    /// deleted. Returns how many ingests and snapshots were discarded.
    pub(super) async fn take_over(&self, ours: &str, stale: &str) -> Result<usize> {
        let resources = LeasesClient::new(self.channel.clone())
            .list_resources(self.req(ListResourcesRequest {
                id: stale.to_string(),
            }))
            .await
            .map_err(|s| self.status(&format!("list what lease {stale} holds"), s))?
            .into_inner()
            .resources;
        let mut discarded = 0;
        for r in resources {
            if r.r#type == "ingests" {
                self.abort_ingest(&r.id).await?;
                discarded += 1;
            } else if let Some(snapshotter) = r
                .r#type
                .strip_prefix("snapshots/")
                .filter(|_| r.id.starts_with(EXTRACT_PREFIX))
            {
                let req = self.req(RemoveSnapshotRequest {
                    snapshotter: snapshotter.to_string(),
                    key: r.id.clone(),
                });
                match SnapshotsClient::new(self.channel.clone()).remove(req).await {
                    Ok(_) => {}
                    Err(s) if not_found(&s) => {}
                    Err(s) => {
                        return Err(self.status(&format!("remove snapshot {}", r.id), s));
                    }
                }
                discarded += 1;
            } else {
                LeasesClient::new(self.channel.clone())
                    .add_resource(self.req(AddResourceRequest {
                        id: ours.to_string(),
                        resource: Some(r),
                    }))
                    .await
                    .map_err(|s| self.status("move content to the new lease", s))?;
            }
        }
        match self.delete_lease(stale.to_string()).await {
            Ok(()) => Ok(discarded),
            Err(s) if not_found(&s) => Ok(discarded),
            Err(s) => Err(self.status(&format!("delete lease {stale}"), s)),
        }
    }

    /// Discards the partial ingest `ingest`, if there is one: a write of it then
    /// starts from its first byte.
    pub(super) async fn abort_ingest(&self, ingest: &str) -> Result<()> {
        let req = self.req(AbortRequest {
            r#ref: ingest.to_string(),
        });
        match ContentClient::new(self.channel.clone()).abort(req).await {
            Ok(_) => Ok(()),
            Err(s) if not_found(&s) => Ok(()),
            Err(s) => Err(self.status(&format!("abort the stale ingest {ingest}"), s)),
        }
    }

    /// Bytes the partial ingest `ingest` holds, if there is one.
    pub(super) async fn ingest_offset(&self, ingest: &str) -> Result<Option<u64>> {
        let req = self.req(StatusRequest {
            r#ref: ingest.to_string(),
        });
        match ContentClient::new(self.channel.clone()).status(req).await {
            Ok(r) => Ok(r.into_inner().status.map(|s| s.offset.max(0) as u64)),
            Err(s) if not_found(&s) => Ok(None),
            Err(s) => Err(self.status(&format!("look up the ingest {ingest}"), s)),
        }
    }

    /// Adds content `d` to lease `id`.
    pub(super) async fn hold(&self, id: &str, d: &Digest) -> Result<()> {
        LeasesClient::new(self.channel.clone())
            .add_resource(self.req(AddResourceRequest {
                id: id.to_string(),
                resource: Some(Resource {
                    id: d.to_string(),
                    r#type: "content".into(),
                }),
            }))
            .await
            .map_err(|s| self.status("add content to the lease", s))?;
        Ok(())
    }

    /// Deletes lease `id` (what it held stays if something else holds it).
    pub(super) async fn delete_lease(&self, id: String) -> std::result::Result<(), Status> {
        let req = self.req(DeleteLeaseRequest { id, sync: false });
        LeasesClient::new(self.channel.clone())
            .delete(req)
            .await
            .map(|_| ())
    }
}

/// Connects to containerd at `socket`, for `namespace`.
pub(super) async fn connect(socket: &Path, namespace: &str, snapshotter: &str) -> Result<Ctx> {
    let channel = containerd_client::connect(socket).await.map_err(|e| {
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
    Ok(Ctx {
        channel,
        namespace: MetadataValue::try_from(namespace)
            .map_err(|_| anyhow!("bad namespace {namespace}"))?,
        lease: None,
        snapshotter: snapshotter.to_string(),
        socket: socket.to_path_buf(),
        chains: ChainLocks::default(),
    })
}

/// Whether `namespace` can travel in containerd's request metadata.
pub(super) fn valid_namespace(namespace: &str) -> bool {
    AsciiMetadataValue::try_from(namespace).is_ok()
}

pub(super) fn unique_part() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    let r = lower_hex(&b);
    format!("{}-{r}", t.as_nanos())
}

/// This machine's host name (the UTS namespace's), or empty when unknown.
fn host_name() -> String {
    fs_err::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether lease `l` (one of ours by its id) belongs to a process that is gone:
/// made on this host by a pid that no longer runs. A lease without the pid label
/// (an older gapbundle's, which never cleaned up after a kill) is stale too; one
/// from another host is left to its own host (or to its expiry).
fn is_stale(l: &Lease, host: &str) -> bool {
    let Some(pid) = l.labels.get(LEASE_PID) else {
        return true;
    };
    if l.labels.get(LEASE_HOST).is_some_and(|h| h != host) {
        return false;
    }
    match pid.parse::<u32>() {
        Ok(pid) if pid == std::process::id() => true,
        Ok(pid) => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => true,
    }
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    crate::time::rfc3339(secs)
}

/// A stream from a poll function (a bounded channel's receiver).
pub(super) fn async_stream<T, F>(f: F) -> impl futures_util::Stream<Item = T> + Send + 'static
where
    F: FnMut(&mut std::task::Context<'_>) -> std::task::Poll<Option<T>> + Send + 'static,
    T: Send + 'static,
{
    futures_util::stream::poll_fn(f)
}
