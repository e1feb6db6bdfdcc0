//! Walking an image: from its root (index or manifest) to every blob it needs.
//!
//! The walk is the same whether the manifests come from a registry, a local layout
//! or an archive, so it lives here once and takes a [`ManifestFetch`] for the part
//! that differs. Platform selection keeps the root exactly as published (so
//! `name@sha256:<index digest>` still resolves after import) and only leaves out the
//! children of unwanted platforms: the bundle then holds a sparse index, which
//! containerd and skopeo handle for the platforms that are present.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::bundle::oci::{is_index, is_manifest};
use crate::bundle::Digest;
use crate::spec::Platforms;

/// A content descriptor as OCI and Docker manifests write it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type (may be missing in sloppy manifests).
    #[serde(default)]
    pub media_type: String,
    /// Digest.
    pub digest: String,
    /// Size.
    pub size: u64,
    /// Platform, in index entries.
    #[serde(default)]
    pub platform: Option<PlatformField>,
    /// External URLs (foreign layers).
    #[serde(default)]
    pub urls: Option<Vec<String>>,
}

/// The platform object of an index entry.
#[derive(Debug, Clone, Deserialize)]
pub struct PlatformField {
    /// OS.
    pub os: String,
    /// Architecture.
    pub architecture: String,
    /// Variant.
    #[serde(default)]
    pub variant: Option<String>,
}

impl PlatformField {
    /// `os/arch[/variant]`.
    pub fn to_string_lossy(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyManifest {
    #[serde(default)]
    schema_version: Option<u64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// A blob of an image with what is known about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// Digest.
    pub digest: Digest,
    /// Size.
    pub size: u64,
    /// Media type.
    pub media_type: String,
}

/// What a walk found.
#[derive(Debug, Clone)]
pub struct ImagePlan {
    /// The root blob.
    pub root: Blob,
    /// Index and manifest blobs (root included), fetched and cached by the walk.
    pub manifests: Vec<Blob>,
    /// Configs and layers, still to be fetched.
    pub blobs: Vec<Blob>,
    /// Platforms present in the bundle (`os/arch[/variant]`), sorted.
    pub platforms: Vec<String>,
    /// Platforms the root offers but the bundle leaves out.
    pub skipped_platforms: Vec<String>,
}

/// Fetches (and caches) manifest bytes by digest, verified against the digest.
pub trait ManifestFetch {
    /// The bytes of the manifest or index `digest`.
    fn fetch(&mut self, digest: &Digest, media_type: &str) -> Result<Vec<u8>>;
}

/// The media type of manifest bytes: the declared one, else the `mediaType` field,
/// else guessed from the shape (OCI allows omitting it).
pub fn media_type_of(bytes: &[u8], declared: Option<&str>) -> Result<String> {
    let m: AnyManifest = serde_json::from_slice(bytes).context("the manifest is not valid JSON")?;
    if m.schema_version == Some(1) {
        bail!("Docker schema 1 manifests are not supported (deprecated since 2017); push the image again with a current tool to get a schema 2 or OCI manifest");
    }
    if let Some(d) = declared.filter(|d| is_index(d) || is_manifest(d)) {
        return Ok(d.to_string());
    }
    if let Some(t) = m.media_type {
        return Ok(t);
    }
    Ok(if m.manifests.is_some() {
        crate::bundle::oci::INDEX_MEDIA_TYPE.into()
    } else {
        crate::bundle::oci::MANIFEST_MEDIA_TYPE.into()
    })
}

fn digest_of(d: &Descriptor) -> Result<Digest> {
    d.digest
        .parse::<Digest>()
        .with_context(|| format!("descriptor digest `{}` is not supported", d.digest))
}

/// Walks from root bytes, asking `fetch` for child manifests.
pub fn walk(
    root_bytes: &[u8],
    root_media_type: &str,
    platforms: &Platforms,
    fetch: &mut dyn ManifestFetch,
) -> Result<ImagePlan> {
    let root = Blob {
        digest: Digest::of(root_bytes),
        size: root_bytes.len() as u64,
        media_type: root_media_type.to_string(),
    };
    let mut plan = ImagePlan {
        root: root.clone(),
        manifests: vec![root],
        blobs: Vec::new(),
        platforms: Vec::new(),
        skipped_platforms: Vec::new(),
    };
    visit(
        root_bytes,
        root_media_type,
        platforms,
        fetch,
        &mut plan,
        0,
        None,
    )?;
    if plan.platforms.is_empty() && !plan.skipped_platforms.is_empty() {
        bail!(
            "none of the requested platforms ({}) is published; the image offers {}",
            platforms.to_strings().join(", "),
            plan.skipped_platforms.join(", ")
        );
    }
    plan.platforms.sort();
    plan.platforms.dedup();
    plan.skipped_platforms.sort();
    plan.skipped_platforms.dedup();
    dedup(&mut plan.manifests);
    dedup(&mut plan.blobs);
    Ok(plan)
}

fn dedup(v: &mut Vec<Blob>) {
    let mut seen = std::collections::HashSet::new();
    v.retain(|b| seen.insert(b.digest));
}

fn visit(
    bytes: &[u8],
    media_type: &str,
    platforms: &Platforms,
    fetch: &mut dyn ManifestFetch,
    plan: &mut ImagePlan,
    depth: usize,
    platform: Option<&PlatformField>,
) -> Result<()> {
    if depth > 4 {
        bail!("image indexes are nested more than 4 deep");
    }
    let m: AnyManifest = serde_json::from_slice(bytes).context("manifest is not valid JSON")?;
    if is_index(media_type) {
        let children = m.manifests.unwrap_or_default();
        for child in children {
            let wanted = match &child.platform {
                // Attestations and other platform-less entries ride along with "all".
                Some(p) if p.os == "unknown" => matches!(platforms, Platforms::All),
                Some(p) => platforms.wants(&p.os, &p.architecture, p.variant.as_deref()),
                None => true,
            };
            let label = child
                .platform
                .as_ref()
                .map(|p| p.to_string_lossy())
                .unwrap_or_else(|| "unspecified".into());
            if !wanted {
                if label != "unknown/unknown" {
                    plan.skipped_platforms.push(label);
                }
                continue;
            }
            let d = digest_of(&child)?;
            let child_bytes = fetch.fetch(&d, &child.media_type)?;
            let child_type = media_type_of(&child_bytes, Some(&child.media_type))?;
            plan.manifests.push(Blob {
                digest: d,
                size: child.size,
                media_type: child_type.clone(),
            });
            visit(
                &child_bytes,
                &child_type,
                platforms,
                fetch,
                plan,
                depth + 1,
                child.platform.as_ref(),
            )?;
        }
        Ok(())
    } else if is_manifest(media_type) {
        let config = m
            .config
            .context("image manifest has no config descriptor")?;
        if let Some(p) = platform.filter(|p| p.os != "unknown") {
            plan.platforms.push(p.to_string_lossy());
        } else if platform.is_none() {
            // A single-platform image: its platform is in the config.
            let cfg = fetch.fetch(&digest_of(&config)?, &config.media_type)?;
            #[derive(Deserialize)]
            struct Cfg {
                #[serde(default)]
                os: String,
                #[serde(default)]
                architecture: String,
                #[serde(default)]
                variant: Option<String>,
            }
            if let Ok(c) = serde_json::from_slice::<Cfg>(&cfg) {
                if !c.os.is_empty() {
                    let wanted = platforms.wants(&c.os, &c.architecture, c.variant.as_deref());
                    let label = PlatformField {
                        os: c.os,
                        architecture: c.architecture,
                        variant: c.variant,
                    }
                    .to_string_lossy();
                    // `platforms:` filters a single-platform image too: bundled, it
                    // would be found out only when a node of the wanted platform
                    // cannot run it, on the far side of the air gap.
                    if !wanted {
                        bail!(
                            "the image is published for {label} only, and platforms asks for {}; pick an image (or tag) that offers one of them, or give this entry `platforms: [{label}]`",
                            platforms.to_strings().join(", ")
                        );
                    }
                    plan.platforms.push(label);
                }
            }
        }
        for d in std::iter::once(&config).chain(m.layers.iter().flatten()) {
            if d.urls.as_ref().is_some_and(|u| !u.is_empty()) {
                bail!(
                    "layer {} is a foreign layer (it lists download URLs); such images cannot be carried across an air gap as they are",
                    d.digest
                );
            }
            plan.blobs.push(Blob {
                digest: digest_of(d)?,
                size: d.size,
                media_type: d.media_type.clone(),
            });
        }
        Ok(())
    } else {
        bail!("unsupported manifest media type `{media_type}` (expected an OCI or Docker v2 image manifest or index)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<Digest, Vec<u8>>);
    impl ManifestFetch for Map {
        fn fetch(&mut self, d: &Digest, _: &str) -> Result<Vec<u8>> {
            self.0.get(d).cloned().context("missing")
        }
    }

    fn manifest(layer: &str) -> Vec<u8> {
        format!(r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":5}}]}}"#,
            Digest::of(b"{}"), Digest::of(layer.as_bytes())).into_bytes()
    }

    #[test]
    fn platform_selection_keeps_the_root_and_drops_other_children() {
        let (a, b) = (manifest("amd"), manifest("arm"));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            Digest::of(&a),
            a.len(),
            Digest::of(&b),
            b.len()
        );
        let mut src = Map(HashMap::from([
            (Digest::of(&a), a.clone()),
            (Digest::of(&b), b.clone()),
        ]));
        let only_amd = Platforms::List(vec!["linux/amd64".parse().unwrap()]);
        let plan = walk(
            index.as_bytes(),
            crate::bundle::oci::INDEX_MEDIA_TYPE,
            &only_amd,
            &mut src,
        )
        .unwrap();
        assert_eq!(plan.root.digest, Digest::of(index.as_bytes()));
        assert_eq!(plan.manifests.len(), 2);
        assert_eq!(plan.platforms, vec!["linux/amd64"]);
        assert_eq!(plan.skipped_platforms, vec!["linux/arm64/v8"]);
        assert_eq!(plan.blobs.len(), 2);
        let all = walk(
            index.as_bytes(),
            crate::bundle::oci::INDEX_MEDIA_TYPE,
            &Platforms::All,
            &mut src,
        )
        .unwrap();
        assert_eq!(all.platforms.len(), 2);
        // The config is shared between the two: stored once.
        assert_eq!(all.blobs.len(), 3);
        let none = Platforms::List(vec!["linux/s390x".parse().unwrap()]);
        let err = walk(
            index.as_bytes(),
            crate::bundle::oci::INDEX_MEDIA_TYPE,
            &none,
            &mut src,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("offers linux/amd64, linux/arm64/v8"),
            "{err}"
        );
    }

    #[test]
    fn platforms_filter_single_platform_images_too() {
        let config = br#"{"os":"linux","architecture":"amd64"}"#.to_vec();
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
            Digest::of(&config),
            config.len()
        );
        let mut src = Map(HashMap::from([(Digest::of(&config), config.clone())]));
        let media = crate::bundle::oci::MANIFEST_MEDIA_TYPE;
        let arm = Platforms::List(vec!["linux/arm64".parse().unwrap()]);
        let err = walk(m.as_bytes(), media, &arm, &mut src).unwrap_err();
        assert!(
            err.to_string()
                .contains("published for linux/amd64 only, and platforms asks for linux/arm64"),
            "{err}"
        );
        let amd = Platforms::List(vec!["linux/amd64".parse().unwrap()]);
        let plan = walk(m.as_bytes(), media, &amd, &mut src).unwrap();
        assert_eq!(plan.platforms, vec!["linux/amd64"]);
        let plan = walk(m.as_bytes(), media, &Platforms::All, &mut src).unwrap();
        assert_eq!(plan.platforms, vec!["linux/amd64"]);
    }
}
