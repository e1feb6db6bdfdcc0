//! The OCI image layout view of a bundle.
//!
//! After `tar x`, a bundle is an OCI image layout, so skopeo, umoci, oras and
//! containerd read its images with no help from us. `index.json` names each image by
//! its full reference in both annotations tools look at:
//! `org.opencontainers.image.ref.name` (skopeo's `oci:DIR:REF`) and
//! `io.containerd.image.name` (`ctr images import`).

use serde_json::json;

use super::canonical;
use super::manifest::{Kind, Object};

/// OCI image index media type.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list media type.
pub const DOCKER_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest media type.
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Annotation skopeo and the OCI spec use for a reference name.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation containerd uses for a full image name.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Whether a media type is an index (several platforms).
pub fn is_index(media_type: &str) -> bool {
    media_type == INDEX_MEDIA_TYPE || media_type == DOCKER_LIST_MEDIA_TYPE
}

/// Whether a media type is a single-platform image manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == MANIFEST_MEDIA_TYPE || media_type == DOCKER_MANIFEST_MEDIA_TYPE
}

/// Whether a media type is an image config's (OCI's or Docker's).
pub fn is_config(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.config.v1+json"
            | "application/vnd.docker.container.image.v1+json"
    )
}

/// The `oci-layout` file.
pub fn oci_layout_bytes() -> Vec<u8> {
    br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()
}

/// The `index.json` for the image objects; `root_size` gives each root blob's size.
pub fn index_bytes(objects: &[Object], root_size: impl Fn(&Object) -> u64) -> Vec<u8> {
    let mut images: Vec<&Object> = objects.iter().filter(|o| o.kind == Kind::Image).collect();
    images.sort_by(|a, b| a.name.cmp(&b.name).then(a.digest.cmp(&b.digest)));
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|o| {
            json!({
                "mediaType": o.media_type,
                "digest": o.digest.to_string(),
                "size": root_size(o),
                "annotations": { REF_NAME: o.name, CONTAINERD_NAME: o.name },
            })
        })
        .collect();
    canonical::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
    }))
    .expect("index has no floats")
}
