//! Images into a running containerd (K3s's), over its gRPC API.
//!
//! This does what `ctr images import` followed by an unpack does, but straight from
//! the bundle stream and without a subprocess:
//!
//! - **Content** is written through the content service's `Write` stream with the
//!   expected digest and size, so containerd checks every blob itself as well. Each
//!   blob goes to the ingest `gapbundle-<hex>`; its first write is at offset 0, which
//!   truncates whatever a killed earlier import left there, and the blob is committed
//!   only in [`Target::commit`](crate::import::Target::commit), after the bundle reader verified it. Blobs that
//!   containerd already has (content `Info`) are not asked for at all.
//! - **A lease** (`gapbundle-…`, expiring after 24 hours) holds everything written
//!   until the image records exist, so containerd's garbage collector cannot take
//!   content in between. containerd adds a blob to the writer's lease in the
//!   commit's own transaction, so the import adds to its lease only the content
//!   that was present before (one metadata transaction, two `fdatasync`s, saved
//!   per blob written). A killed import leaves its committed content under that
//!   lease; the rerun finds it present and skips it.
//! - **GC labels** are set the way containerd's own pull does (`labels`). Where the
//!   commit that writes a blob can carry its labels, it does: containerd's content
//!   service sets a commit's labels in the commit's own metadata transaction, and
//!   every transaction is two `fdatasync`s. An index or manifest (of at most 4 MiB,
//!   kept in memory while it streams) is committed with its GC labels when every
//!   image that holds it gives it the same ones, and an uncompressed tar layer with
//!   `containerd.io/uncompressed` set to its own digest (its diff id, unless its
//!   first bytes are gzip's or zstd's, which containerd's applier would
//!   decompress). The config of images that are all single manifests, for this
//!   host's platform, gets `containerd.io/gc.ref.snapshot.<snapshotter>` (the top
//!   chain id of its own diff ids) the same way. What the commits did not set,
//!   registering sets after.
//! - **Unpack** (`unpack`) follows containerd 1.6's unpacker (`unpacker.go`): for the manifest
//!   of the host's platform, chain ids from the config's `rootfs.diff_ids`; a layer
//!   whose chain id is already a snapshot is skipped; otherwise prepare
//!   `extract-<unique> <chainID>` on the parent chain with label
//!   `containerd.io/snapshot.ref`, apply the layer with the diff service, check the
//!   diff id, commit as the chain id, and label the layer
//!   `containerd.io/uncompressed` (unless its commit did); finally the config gets
//!   `containerd.io/gc.ref.snapshot.<snapshotter>` = the top chain id (unless its
//!   commit did).
//! - **Image records** under the names the CRI plugin looks up (the reference as
//!   `ParseDockerRef` normalises it, and `repo@sha256:<root>`), labelled
//!   `io.cri-containerd.image=managed` and `io.cri-containerd.pinned=pinned` so the
//!   CRI plugin lists them and kubelet's image GC never removes them (`labels`).
//!   A bundle with an image name that is not a reference, or that pins another
//!   image's digest, is refused before containerd is asked anything
//!   ([`crate::import::images`]).
//!
//! Images are registered and unpacked concurrently (a few at a time) once the whole
//! bundle verified; a layer is looked up and extracted holding its chain id's lock,
//! so images that share a base extract it once. Memory stays bounded: chunks go to
//! containerd as they arrive (at most a few in flight), and only manifests and
//! configs are read back.

//!
//! The parts: `client` (the connection, namespace, leases, gRPC plumbing),
//! `unpack`, `labels` (GC labels, image records, names) and `target` (the
//! [`Target`](crate::import::Target) implementation: planning, streaming,
//! registering).

mod client;
mod labels;
mod target;
mod unpack;

pub use labels::{CRI_MANAGED, CRI_PINNED};
pub use target::Containerd;

use crate::bundle::inventory::ContainerdHoldings;

/// What containerd at `socket` holds in `namespace`, for an inventory: every
/// committed blob of its content store. Unreachable is [`crate::error::ContainerdFailure`].
pub fn inventory(socket: &std::path::Path, namespace: &str) -> anyhow::Result<ContainerdHoldings> {
    if !client::valid_namespace(namespace) {
        anyhow::bail!("namespace `{namespace}` is not a valid containerd namespace");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let blobs = rt.block_on(async {
        let ctx = client::connect(socket, namespace, "overlayfs").await?;
        ctx.list_content().await
    })?;
    Ok(ContainerdHoldings {
        socket: socket.display().to_string(),
        namespace: namespace.to_string(),
        blobs: blobs.into_iter().collect(),
    })
}

/// Unpins, or with `delete` deletes, the image records `images` (name, the root
/// each must still name) in containerd at `socket`, namespace `namespace`: what a
/// bundle that is replaced or removed leaves ([`crate::bundle::receipt`]). Returns
/// the names changed; unreachable is [`crate::error::ContainerdFailure`].
pub fn retire_images(
    socket: &std::path::Path,
    namespace: &str,
    images: &[(String, crate::bundle::Digest)],
    delete: bool,
) -> anyhow::Result<Vec<String>> {
    if !client::valid_namespace(namespace) {
        anyhow::bail!("namespace `{namespace}` is not a valid containerd namespace");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ctx = client::connect(socket, namespace, "overlayfs").await?;
        let mut changed = Vec::new();
        for (name, digest) in images {
            if ctx.retire_image(name, digest, delete).await? {
                changed.push(name.clone());
            }
        }
        Ok(changed)
    })
}
