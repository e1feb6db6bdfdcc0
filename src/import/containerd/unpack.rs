//! Unpacking an image's layers into snapshots, as containerd 1.6's unpacker
//! (`unpacker.go`) does: for the manifest of the host's platform, chain ids from the
//! config's `rootfs.diff_ids`; a layer whose chain id is already a snapshot is
//! skipped; otherwise an extraction snapshot is prepared on the parent chain (keyed
//! `extract-gapbundle-<pid>-<unique> <chainID>`, so that a later run recognises
//! one a killed import left), the layer applied with the diff service, the diff id
//! checked, and the snapshot committed as the chain id.

use std::collections::{BTreeSet, HashMap};

use anyhow::{anyhow, bail, Context, Result};
use containerd_client::services::v1::diff_client::DiffClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::ApplyRequest;
use containerd_client::tonic::Code;
use serde_json::Value;

use super::client::{not_found, unique_part, ChainLock, Ctx, EXTRACT_PREFIX};
use super::labels::{parse_desc, parse_descs, Desc, Labelled, UNCOMPRESSED};
use crate::bundle::manifest::Object;
use crate::bundle::oci::{is_index, is_manifest};
use crate::bundle::Digest;

impl Ctx {
    pub(super) async fn snapshot_exists(&self, key: &str) -> Result<bool> {
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
    ///
    /// Each layer is looked up and applied holding its chain id's lock: images
    /// registered at once mostly share their base, and without it each of them
    /// found the base missing and extracted it, all but one for nothing (the
    /// commit of the others met the first one's snapshot). containerd 1.7's
    /// unpacker locks the chain id the same way.
    pub(super) async fn unpack(
        &self,
        layers: &[Desc],
        diff_ids: &[String],
        labelled: &Labelled,
    ) -> Result<usize> {
        let mut created = 0;
        let mut parent = String::new();
        for (layer, diff_id) in layers.iter().zip(diff_ids) {
            let chain = chain_id(&parent, diff_id);
            let lock = self.chain_lock(&chain);
            let _held = lock.lock().await;
            if !self.snapshot_exists(&chain).await?
                && self
                    .apply_layer(layer, diff_id, &chain, &parent, labelled)
                    .await?
            {
                created += 1;
            }
            parent = chain;
        }
        Ok(created)
    }

    /// The lock of chain id `chain`, shared by every clone of this handle.
    fn chain_lock(&self, chain: &str) -> ChainLock {
        let mut locks = self.chains.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(chain.to_string()).or_default().clone()
    }

    async fn apply_layer(
        &self,
        layer: &Desc,
        diff_id: &str,
        chain: &str,
        parent: &str,
        labelled: &Labelled,
    ) -> Result<bool> {
        let labels: HashMap<String, String> =
            [("containerd.io/snapshot.ref".to_string(), chain.to_string())].into();
        let mut sn = SnapshotsClient::new(self.channel.clone());
        let mut key = String::new();
        let mut mounts = None;
        for _ in 0..3 {
            key = format!(
                "{EXTRACT_PREFIX}{}-{} {chain}",
                std::process::id(),
                unique_part()
            );
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
        // An uncompressed layer got this label in the commit that wrote it.
        let set = labelled.get(&d).and_then(|l| l.get(UNCOMPRESSED));
        if set.map(String::as_str) != Some(diff_id) {
            self.label(&d, [(UNCOMPRESSED.to_string(), diff_id.to_string())].into())
                .await?;
        }
        Ok(true)
    }
}

/// `chainID(n) = sha256(chainID(n-1) + " " + diffID(n))`, `chainID(0) = diffID(0)`.
pub(super) fn chain_id(parent: &str, diff_id: &str) -> String {
    if parent.is_empty() {
        return diff_id.to_string();
    }
    Digest::of(format!("{parent} {diff_id}").as_bytes()).to_string()
}

/// The chain id of the top layer of `diff_ids` (empty for none).
pub(super) fn top_chain_id<'a>(diff_ids: impl IntoIterator<Item = &'a str>) -> String {
    diff_ids
        .into_iter()
        .fold(String::new(), |parent, d| chain_id(&parent, d))
}

/// Whether image config `c` is for this machine's platform (an absent `os` or
/// `architecture` counts as this machine's).
pub(super) fn config_for_host(c: &Value) -> bool {
    let (os, arch) = host_platform();
    c["os"].as_str().unwrap_or(os) == os && c["architecture"].as_str().unwrap_or(arch) == arch
}

/// The platform this machine runs, as OCI names it.
pub(super) fn host_platform() -> (&'static str, &'static str) {
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

/// The manifest of `o` for the host platform: (config, layers, diff ids).
pub(super) async fn host_manifest(
    ctx: &Ctx,
    o: &Object,
) -> Result<Option<(Desc, Vec<Desc>, Vec<String>)>> {
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
    if !config_for_host(&c) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = "sha256:aaaa";
        assert_eq!(chain_id("", a), a);
        // `printf 'sha256:aaaa sha256:bbbb' | sha256sum`
        assert_eq!(
            chain_id(a, "sha256:bbbb"),
            "sha256:2c4d8760379f05d0ad1ed610712309f0114e7345e6e6a351494cff030ffdf197"
        );
    }
}
