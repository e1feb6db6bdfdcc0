//! Referrers: OCI manifests attached to a bundled image (signatures, attestations,
//! SBOMs), as `referrer` objects (format.md section 18).
//!
//! A referrer is its own object, not part of its image's: the image object stays
//! exactly the image (what containerd registers, what `index.json` names, what an
//! SBOM lists as its layers), an importer of an older version carries referrers
//! without importing them (an unknown kind), and `index.json` keeps naming images
//! only, so `tar x` still gives an OCI layout whose every entry is an image. A
//! registry finds a referrer two ways, and the object says which: by the `subject`
//! its manifest names (the referrers API, or the referrers tag schema
//! `sha256-<hex>` on a registry without one), or by cosign's tag scheme
//! (`sha256-<hex>.sig`, `.att`, `.sbom`), whose manifests name no subject. The
//! rules here are pure, so the writer, every reader and the tests share them.

use super::digest::Digest;
use super::manifest::{Manifest, Object};
use super::meta::ReferrerMeta;

/// The suffixes of cosign's tag scheme: signatures, attestations, SBOMs.
pub const COSIGN_SUFFIXES: [&str; 3] = ["sig", "att", "sbom"];

/// The tag the OCI referrers tag schema keeps `subject`'s referrers index under
/// (`sha256-<hex>`).
pub fn tag_schema(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// Cosign's tags for `subject`: `sha256-<hex>.sig`, `.att`, `.sbom`.
pub fn cosign_tags(subject: &Digest) -> Vec<String> {
    COSIGN_SUFFIXES
        .iter()
        .map(|s| format!("{}.{s}", tag_schema(subject)))
        .collect()
}

/// The name of the `referrer` object for the manifest `digest` in `repository`
/// (`domain/path`, no tag): `repository@digest`, a reference that pulls it.
pub fn object_name(repository: &str, digest: &Digest) -> String {
    format!("{repository}@{digest}")
}

/// Why a `referrer` object or its manifest cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferrerError {
    /// The name is not `repository@<its own digest>`.
    #[error("a referrer is named `repository@{digest}` after its own digest; `{name}` is not")]
    Name {
        /// The name as written.
        name: String,
        /// The object's digest.
        digest: Digest,
    },
    /// `meta.tag` is not one of cosign's tags of the subject.
    #[error("`{tag}` is not one of cosign's tags of {subject} (sha256-<hex>.sig, .att, .sbom)")]
    Tag {
        /// The tag as written.
        tag: String,
        /// The subject.
        subject: Digest,
    },
    /// The manifest does not name the subject the object says.
    #[error("referrer {digest} names {found} as its subject, not the image {subject}")]
    Subject {
        /// The referrer.
        digest: Digest,
        /// What `meta.subject` says.
        subject: Digest,
        /// What the manifest says (`none` when it names no subject).
        found: String,
    },
    /// The manifest is not JSON with the fields a manifest has.
    #[error("referrer {digest} is not an OCI manifest: {why}")]
    Manifest {
        /// The referrer.
        digest: Digest,
        /// What is wrong.
        why: String,
    },
}

impl ReferrerError {
    /// The field of the object at fault, for a manifest check's message.
    pub fn field(&self) -> &'static str {
        match self {
            ReferrerError::Name { .. } => "name",
            ReferrerError::Tag { .. } => "meta.tag",
            ReferrerError::Subject { .. } | ReferrerError::Manifest { .. } => "digest",
        }
    }
}

impl crate::error::Classify for ReferrerError {
    /// A referrer that breaks these rules breaks the format: the bundle fails
    /// verification (exit code 3).
    fn class(&self) -> Option<crate::error::ErrorClass> {
        Some(crate::error::ErrorClass::Verify)
    }
}

/// The repository part of a referrer object's name (`domain/path`), once
/// [`check_object`] accepted it.
pub fn repository(name: &str) -> &str {
    name.rsplit_once('@').map(|(r, _)| r).unwrap_or(name)
}

/// What a reader checks of a `referrer` object before its blobs are read: its name
/// is `<repository>@<digest>` with a repository an image reference may name and its
/// own digest, and a `tag` is one of cosign's tags of its subject.
pub fn check_object(name: &str, digest: &Digest, meta: &ReferrerMeta) -> Result<(), ReferrerError> {
    let bad_name = || ReferrerError::Name {
        name: crate::text::escaped(name).into_owned(),
        digest: *digest,
    };
    let (repo, d) = name.rsplit_once('@').ok_or_else(bad_name)?;
    if d != digest.to_string() {
        return Err(bad_name());
    }
    match crate::oci::Reference::parse(repo) {
        Ok(r) if r.tag().is_none() && r.digest().is_none() && r.name() == repo => {}
        _ => return Err(bad_name()),
    }
    if let Some(tag) = &meta.tag {
        if !cosign_tags(&meta.subject).contains(tag) {
            return Err(ReferrerError::Tag {
                tag: crate::text::escaped(tag).into_owned(),
                subject: meta.subject,
            });
        }
    }
    Ok(())
}

/// What a reader checks of a referrer's manifest bytes (already matched against
/// `digest`) before it hands them to a registry: JSON with an object at the top,
/// and, unless it was found under a cosign tag, a `subject` whose digest is
/// `meta.subject`.
pub fn check_manifest(
    digest: &Digest,
    meta: &ReferrerMeta,
    bytes: &[u8],
) -> Result<(), ReferrerError> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ReferrerError::Manifest {
            digest: *digest,
            why: e.to_string(),
        })?;
    if !v.is_object() {
        return Err(ReferrerError::Manifest {
            digest: *digest,
            why: "not a JSON object".into(),
        });
    }
    if meta.tag.is_some() {
        return Ok(());
    }
    let found = v["subject"]["digest"].as_str();
    if found != Some(meta.subject.to_string().as_str()) {
        return Err(ReferrerError::Subject {
            digest: *digest,
            subject: meta.subject,
            found: found
                .map(|f| crate::text::escaped(f).into_owned())
                .unwrap_or_else(|| "none".into()),
        });
    }
    Ok(())
}

/// The referrers of the image object `image` that `m` holds: `referrer` objects in
/// the image's repository whose subject is its root, in manifest order (by name,
/// so by digest). This is what inspect lists under an image, and what a fleet push
/// or `serve` offers beside it. Nothing here is checked beyond the object rules
/// of [`check_object`]; a reader checks each manifest with [`check_manifest`]
/// before handing it on.
pub fn of_image<'a>(m: &'a Manifest, image: &Object) -> Vec<(&'a Object, &'a ReferrerMeta)> {
    let Ok(r) = crate::oci::Reference::parse(&image.name) else {
        return Vec::new();
    };
    let repo = r.name();
    m.objects
        .iter()
        .filter_map(|o| o.meta.referrer().map(|meta| (o, meta)))
        .filter(|(o, meta)| meta.subject == image.digest && repository(&o.name) == repo)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(subject: Digest, tag: Option<&str>) -> ReferrerMeta {
        ReferrerMeta {
            subject,
            artifact_type: None,
            tag: tag.map(String::from),
            extra: Default::default(),
        }
    }

    #[test]
    fn names_and_tags() {
        let s = Digest::of(b"image");
        let d = Digest::of(b"sig");
        assert_eq!(tag_schema(&s), format!("sha256-{}", s.hex()));
        assert_eq!(cosign_tags(&s)[0], format!("sha256-{}.sig", s.hex()));
        let name = object_name("reg.example:5000/team/app", &d);
        assert_eq!(repository(&name), "reg.example:5000/team/app");
        check_object(&name, &d, &meta(s, None)).unwrap();
        check_object(&name, &d, &meta(s, Some(&cosign_tags(&s)[2]))).unwrap();
        let e = check_object(&name, &d, &meta(s, Some("latest"))).unwrap_err();
        assert_eq!(e.field(), "meta.tag");
        // Another digest, a tag in the repository, no repository at all.
        for bad in [
            object_name("reg.example/app", &s),
            format!("reg.example/app:1@{d}"),
            format!("@{d}"),
            "reg.example/app".to_string(),
            format!("reg.example/App@{d}"),
        ] {
            let e = check_object(&bad, &d, &meta(s, None)).unwrap_err();
            assert_eq!(e.field(), "name", "{bad}");
        }
    }

    #[test]
    fn a_manifest_must_name_its_subject_unless_a_cosign_tag_found_it() {
        let s = Digest::of(b"image");
        let d = Digest::of(b"x");
        let with = format!(r#"{{"schemaVersion":2,"subject":{{"digest":"{s}","size":1}}}}"#);
        check_manifest(&d, &meta(s, None), with.as_bytes()).unwrap();
        let other = Digest::of(b"other");
        let e = check_manifest(&d, &meta(other, None), with.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("names sha256:"), "{e}");
        let e = check_manifest(&d, &meta(s, None), br#"{"schemaVersion":2}"#).unwrap_err();
        assert!(e.to_string().contains("names none"), "{e}");
        check_manifest(&d, &meta(s, Some("t")), br#"{"schemaVersion":2}"#).unwrap();
        assert!(check_manifest(&d, &meta(s, Some("t")), b"[1]").is_err());
    }
}
