//! What containerd keeps about an image besides its content: the garbage
//! collector's labels, the image records, and the names they are registered under.
//!
//! - **GC labels** are set the way containerd's own pull does
//!   (`images.SetChildrenMappedLabels`): an index gets
//!   `containerd.io/gc.ref.content.m.<i>` per manifest, a manifest
//!   `containerd.io/gc.ref.content.config` and `containerd.io/gc.ref.content.l.<i>`.
//! - **Image records** carry `io.cri-containerd.image=managed` and
//!   `io.cri-containerd.pinned=pinned`, so the CRI plugin lists them and kubelet's
//!   image GC never removes them.
//! - **Names** ([`names`]) are the ones the CRI plugin's own pull registers and
//!   looks up: the reference as `ParseDockerRef` normalises it (`redis` is
//!   `docker.io/library/redis:latest`; a name with a digest is `repo@digest`), and
//!   the repo digest `repo@sha256:<root>`, from [`crate::oci::reference`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Result;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    CreateImageRequest, DeleteImageRequest, Image, UpdateImageRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor as CDescriptor;
use serde_json::Value;

use super::client::Ctx;
use crate::bundle::oci::{is_index, is_manifest};
use crate::bundle::Digest;
use crate::import::images::CheckedImage;

/// Labels the CRI plugin (and kubelet's image GC) look at.
pub const CRI_MANAGED: (&str, &str) = ("io.cri-containerd.image", "managed");
/// Pinned images are never garbage-collected by kubelet.
pub const CRI_PINNED: (&str, &str) = ("io.cri-containerd.pinned", "pinned");

/// The names an image is registered under: the one kubelet asks CRI for, and the
/// repo digest (once when they are the same).
pub(super) fn names(image: &CheckedImage) -> Vec<String> {
    let r = &image.reference;
    let mut v = vec![r.cri_name(), r.digest_name(&image.object.digest)];
    v.dedup();
    v
}

impl Ctx {
    /// Creates or updates an image record; returns whether anything changed.
    pub(super) async fn put_image(&self, name: &str, target: &CDescriptor) -> Result<bool> {
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
}

impl Ctx {
    /// Takes the pin off the image record `name` (or, with `delete`, deletes the
    /// record, and containerd's garbage collector then frees what nothing else
    /// holds), only while it still names `digest`: a record that names another
    /// image now is someone else's. Returns whether anything changed.
    pub(super) async fn retire_image(
        &self,
        name: &str,
        digest: &crate::bundle::Digest,
        delete: bool,
    ) -> Result<bool> {
        let Some(img) = self.image(name).await? else {
            return Ok(false);
        };
        let want = digest.to_string();
        if img.target.as_ref().map(|t| &t.digest) != Some(&want) {
            return Ok(false);
        }
        let mut client = ImagesClient::new(self.channel.clone());
        if delete {
            client
                .delete(self.req(DeleteImageRequest {
                    name: name.into(),
                    sync: true,
                    ..Default::default()
                }))
                .await
                .map_err(|s| self.status(&format!("delete image {name}"), s))?;
            return Ok(true);
        }
        if !img.labels.contains_key(CRI_PINNED.0) {
            return Ok(false);
        }
        let mut labels = img.labels.clone();
        labels.remove(CRI_PINNED.0);
        client
            .update(self.req(UpdateImageRequest {
                image: Some(Image {
                    name: name.into(),
                    labels,
                    target: img.target.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![format!("labels.{}", CRI_PINNED.0)],
                }),
                ..Default::default()
            }))
            .await
            .map_err(|s| self.status(&format!("unpin image {name}"), s))?;
        Ok(true)
    }
}

pub(super) fn image_current(img: &Image, target: &CDescriptor) -> bool {
    img.target.as_ref().map(|t| &t.digest) == Some(&target.digest)
        && [CRI_MANAGED, CRI_PINNED]
            .iter()
            .all(|(k, v)| img.labels.get(*k).map(String::as_str) == Some(*v))
}

/// A descriptor as found in manifests.
#[derive(Clone, Debug)]
pub(super) struct Desc {
    pub(super) media_type: String,
    pub(super) digest: String,
    pub(super) size: u64,
    pub(super) platform: Option<(String, String, Option<String>)>,
    pub(super) annotations: HashMap<String, String>,
}

impl Desc {
    pub(super) fn to_containerd(&self) -> CDescriptor {
        CDescriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size as i64,
            annotations: self.annotations.clone(),
        }
    }
}

pub(super) fn parse_descs(v: &Value) -> Vec<Desc> {
    v.as_array()
        .map(|a| a.iter().filter_map(parse_desc).collect())
        .unwrap_or_default()
}

pub(super) fn parse_desc(v: &Value) -> Option<Desc> {
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

/// The label containerd's unpacker puts on a layer: the digest of the layer as an
/// uncompressed tar, its diff id.
pub(super) const UNCOMPRESSED: &str = "containerd.io/uncompressed";

/// The labels each blob got in the commit that wrote it (see [`super::target`]),
/// so that what registers and unpacks images need not set them again.
pub(super) type Labelled = HashMap<Digest, BTreeMap<String, String>>;

/// Whether a layer of `media_type` is an uncompressed tar, whose diff id is its own
/// digest as long as containerd's applier does not find it compressed after all
/// ([`looks_compressed`]).
pub(super) fn is_uncompressed_layer(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar"
    )
}

/// The label on the config of the platform unpacked that holds its snapshots
/// (containerd's unpacker sets it to the top chain id).
pub(super) fn snapshot_gc_label(snapshotter: &str) -> String {
    format!("containerd.io/gc.ref.snapshot.{snapshotter}")
}

/// Whether a blob starting with `head` (its first four bytes or fewer) would be
/// decompressed by containerd's applier, which goes by the bytes, not the media
/// type (`compression.DetectCompression`: gzip, zstd, a zstd skippable frame).
pub(super) fn looks_compressed(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || (head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18])
}

/// The GC labels of an index or manifest `v` (of `media_type`) whose children the
/// image holds only where `have` has them: an index names its manifests, a
/// manifest its config and layers. Anything else has none.
pub(super) fn gc_labels(
    v: &Value,
    media_type: &str,
    have: &BTreeSet<String>,
) -> BTreeMap<String, String> {
    let held = |descs: Vec<Desc>| descs.into_iter().filter(|d| have.contains(&d.digest));
    let mut children: Vec<(Desc, bool)> = Vec::new();
    if is_index(media_type) {
        children.extend(held(parse_descs(&v["manifests"])).map(|c| (c, false)));
    } else if is_manifest(media_type) {
        children.extend(parse_desc(&v["config"]).map(|c| (c, true)));
        children.extend(held(parse_descs(&v["layers"])).map(|l| (l, false)));
    }
    child_labels(&children)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::manifest::{Kind, Object};
    use crate::oci::Reference;

    fn image(name: &str, root: &Digest) -> CheckedImage {
        CheckedImage {
            object: Object {
                kind: Kind::Image,
                name: name.into(),
                digest: *root,
                media_type: crate::bundle::oci::MANIFEST_MEDIA_TYPE.into(),
                size: 1,
                blobs: vec![*root],
                meta: Default::default(),
            },
            reference: Reference::parse(name).unwrap(),
        }
    }

    #[test]
    fn names_are_the_ones_cri_looks_up() {
        let d = Digest::of(b"x");
        assert_eq!(
            names(&image("nginx", &d)),
            [
                "docker.io/library/nginx:latest".to_string(),
                format!("docker.io/library/nginx@{d}")
            ]
        );
        assert_eq!(
            names(&image("docker.io/redis:8", &d)),
            [
                "docker.io/library/redis:8".to_string(),
                format!("docker.io/library/redis@{d}")
            ]
        );
        assert_eq!(
            names(&image("127.0.0.1:5000/team/app:1.2", &d)),
            [
                "127.0.0.1:5000/team/app:1.2".to_string(),
                format!("127.0.0.1:5000/team/app@{d}")
            ]
        );
        // A digest in the name: one record, as CRI drops the tag beside it.
        assert_eq!(
            names(&image(&format!("localhost/app:1@{d}"), &d)),
            [format!("localhost/app@{d}")]
        );
    }

    #[test]
    fn compressed_is_what_containerd_detects_by_the_bytes() {
        assert!(looks_compressed(&[0x1f, 0x8b, 0x08, 0x00]));
        assert!(looks_compressed(&[0x28, 0xb5, 0x2f, 0xfd]));
        assert!(looks_compressed(&[0x5e, 0x2a, 0x4d, 0x18]));
        // A tar starts with its first member's name.
        assert!(!looks_compressed(b"etc/"));
        assert!(!looks_compressed(&[0x1f]));
        assert!(!looks_compressed(&[]));
        assert!(is_uncompressed_layer(
            "application/vnd.oci.image.layer.v1.tar"
        ));
        assert!(!is_uncompressed_layer(
            "application/vnd.oci.image.layer.v1.tar+gzip"
        ));
    }

    #[test]
    fn gc_labels_name_only_the_children_the_image_holds() {
        let m = crate::bundle::oci::MANIFEST_MEDIA_TYPE;
        let index = serde_json::json!({"manifests": [
            {"mediaType": m, "digest": "sha256:a", "size": 1},
            {"mediaType": m, "digest": "sha256:b", "size": 1},
        ]});
        let have: BTreeSet<String> = ["sha256:b".to_string()].into();
        let l = gc_labels(&index, crate::bundle::oci::INDEX_MEDIA_TYPE, &have);
        assert_eq!(
            l,
            BTreeMap::from([("containerd.io/gc.ref.content.m.0".into(), "sha256:b".into())])
        );
        let manifest = serde_json::json!({
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:c", "size": 1},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:l", "size": 1}],
        });
        let l = gc_labels(&manifest, m, &["sha256:l".to_string()].into());
        assert_eq!(l["containerd.io/gc.ref.content.config"], "sha256:c");
        assert_eq!(l["containerd.io/gc.ref.content.l.0"], "sha256:l");
        assert!(gc_labels(&manifest, "application/vnd.oci.image.config.v1+json", &have).is_empty());
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
