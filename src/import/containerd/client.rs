//! containerd's gRPC API as the import uses it: the connection, the namespace and
//! lease every request carries, error mapping, content reads and labels, leases.
//!
//! Everything here is one request (or one stream) to containerd; what to ask for,
//! and in which order, is the target's business ([`super::target`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::leases_client::LeasesClient;
use containerd_client::services::v1::{
    AddResourceRequest, CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
    GetImageRequest, Image, Info as ContentInfo, InfoRequest, ListContentRequest,
    ReadContentRequest, Resource, UpdateRequest,
};
use containerd_client::tonic::metadata::{AsciiMetadataValue, MetadataValue};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};

use crate::bundle::Digest;
use crate::error::ContainerdFailure;

/// How long a lease holds content if the import dies before registering images.
const LEASE_TTL: Duration = Duration::from_secs(24 * 3600);
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
}

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

    /// A new lease (`gapbundle-…`, expiring after [`LEASE_TTL`]) and this handle
    /// with it attached to every later request.
    pub(super) async fn with_new_lease(&self) -> Result<(Ctx, String)> {
        let expire = SystemTime::now() + LEASE_TTL;
        let id = format!("gapbundle-{}", unique_part());
        let labels: HashMap<String, String> =
            [("containerd.io/gc.expire".to_string(), rfc3339(expire))].into();
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
    let r: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{r}", t.as_nanos())
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
