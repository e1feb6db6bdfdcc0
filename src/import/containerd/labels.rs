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

use std::collections::{BTreeMap, HashMap};

use anyhow::Result;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::{
    CreateImageRequest, DeleteImageRequest, Image, UpdateImageRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::Descriptor as CDescriptor;
use serde_json::Value;

use super::client::Ctx;
use crate::bundle::oci::is_manifest;
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
pub(super) fn child_labels(children: &[(Desc, bool)]) -> BTreeMap<String, String> {
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
    use crate::bundle::Digest;
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
