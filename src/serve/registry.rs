//! The registry half of the view: repositories, tags, manifests, blobs and referrers
//! found in the bundles' image objects, and the pull API's answers from them
//! ([`crate::oci::distribution`] holds the protocol's rules).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use super::{Blobs, Bundle, ViewError};
use crate::bundle::reader::RangeReader;
use crate::bundle::Digest;
use crate::import::images;
use crate::io::serve::{Blob, Body, Reply, Request};
use crate::oci::distribution::{
    self, catalog_body, page, pointers, referrers_body, tags_body, ApiError, DigestRef,
    ManifestRef, Query, Referrer, Route, API_VERSION, JSON, MAX_MANIFEST,
};

/// What the registry serves.
pub(super) struct Registry {
    pub(super) repos: BTreeMap<String, Repo>,
    /// The registry hosts the images name.
    pub(super) hosts: BTreeSet<String>,
}

/// One repository.
#[derive(Default)]
pub(super) struct Repo {
    /// Tag -> root digest, and which image gave it (for a conflict's message).
    pub(super) tags: BTreeMap<String, (Digest, String)>,
    /// Manifests and indexes by digest, with the media type they are served as.
    manifests: BTreeMap<Digest, (String, Blob)>,
    /// Configs and layers.
    blobs: BTreeMap<Digest, Blob>,
    /// Subject -> the manifests that name it, by digest.
    referrers: BTreeMap<Digest, BTreeMap<Digest, Referrer>>,
}

impl Registry {
    pub(super) fn build(bundles: &[Bundle], stored: &Blobs) -> anyhow::Result<Registry> {
        let mut reg = Registry {
            repos: BTreeMap::new(),
            hosts: BTreeSet::new(),
        };
        for b in bundles {
            for img in images::checked(&b.head)? {
                let o = &img.object;
                let r = &img.reference;
                reg.hosts.insert(r.domain().to_string());
                let repo = reg.repos.entry(r.path().to_string()).or_default();
                let who = format!("image `{}` ({}) of {}", o.name, o.digest, b.label);
                if let Some(tag) = r.tag() {
                    match repo.tags.get(tag) {
                        Some((d, first)) if *d != o.digest => {
                            return Err(ViewError::TagConflict {
                                repository: r.path().to_string(),
                                tag: tag.to_string(),
                                first: first.clone(),
                                second: who,
                            }
                            .into());
                        }
                        Some(_) => {}
                        None => {
                            repo.tags.insert(tag.to_string(), (o.digest, who.clone()));
                        }
                    }
                }
                repo.add_image(b, stored, o.digest, &o.media_type, &who)?;
                repo.add_referrers(b, stored, o, &who)?;
            }
        }
        Ok(reg)
    }

    pub(super) fn reply(&self, req: &Request<'_>, route: Route<'_>) -> Reply {
        let read = matches!(req.method, "GET" | "HEAD");
        match route {
            Route::Unknown => not_found(),
            Route::Upload(_) => error(&ApiError::Unsupported).header("Allow", "GET, HEAD"),
            _ if !read => error(&ApiError::Unsupported).header("Allow", "GET, HEAD"),
            Route::Base => json(200, b"{}".to_vec()),
            Route::Catalog => {
                let names: Vec<&str> = self.repos.keys().map(String::as_str).collect();
                let (items, link) = page(&names, &Query::parse(req.query), "/v2/_catalog");
                with_link(json(200, catalog_body(&items)), link)
            }
            Route::Tags(name) => match self.repos.get(name) {
                None => error(&ApiError::NameUnknown(name.to_string())),
                Some(repo) => {
                    let tags: Vec<&str> = repo.tags.keys().map(String::as_str).collect();
                    let path = format!("/v2/{name}/tags/list");
                    let (items, link) = page(&tags, &Query::parse(req.query), &path);
                    with_link(json(200, tags_body(name, &items)), link)
                }
            },
            Route::Manifest(name, reference) => {
                let repo = self.repos.get(name);
                let unknown = |revision: &str| {
                    error(&ApiError::ManifestUnknownDigest {
                        name: name.to_string(),
                        revision: revision.to_string(),
                    })
                };
                let digest = match ManifestRef::parse(reference) {
                    ManifestRef::Tag(t) => match repo.and_then(|r| r.tags.get(t)) {
                        Some((d, _)) => *d,
                        None => return error(&ApiError::ManifestUnknownTag(t.to_string())),
                    },
                    ManifestRef::Digest(d) => d,
                    ManifestRef::OtherDigest(s) | ManifestRef::Invalid(s) => return unknown(s),
                };
                match repo.and_then(|r| r.manifests.get(&digest)) {
                    Some((media_type, blob)) => api(Reply::new(200, Body::Blob(blob.clone())))
                        .header("Content-Type", media_type.clone())
                        .header("Docker-Content-Digest", digest.to_string())
                        .header("Etag", format!("\"{digest}\"")),
                    None => unknown(reference),
                }
            }
            Route::Blob(name, d) => {
                let digest = match distribution::digest(d) {
                    DigestRef::Invalid => return error(&ApiError::DigestInvalid),
                    DigestRef::Other => return error(&ApiError::BlobUnknown(d.to_string())),
                    DigestRef::Sha256(digest) => digest,
                };
                match self.repos.get(name).and_then(|r| r.blobs.get(&digest)) {
                    Some(blob) => Reply {
                        ranges: true,
                        ..api(Reply::new(200, Body::Blob(blob.clone())))
                            .header("Accept-Ranges", "bytes")
                            .header("Cache-Control", "max-age=31536000")
                            .header("Content-Type", "application/octet-stream")
                            .header("Docker-Content-Digest", digest.to_string())
                            .header("Etag", format!("\"{digest}\""))
                    },
                    None => error(&ApiError::BlobUnknown(d.to_string())),
                }
            }
            Route::Referrers(name, d) => {
                let Some(repo) = self.repos.get(name) else {
                    return error(&ApiError::NameUnknown(name.to_string()));
                };
                let subject = match distribution::digest(d) {
                    DigestRef::Invalid => return error(&ApiError::DigestInvalid),
                    DigestRef::Other => None,
                    DigestRef::Sha256(digest) => Some(digest),
                };
                let q = Query::parse(req.query);
                let list: Vec<&Referrer> = subject
                    .and_then(|s| repo.referrers.get(&s))
                    .into_iter()
                    .flat_map(|m| m.values())
                    .filter(|r| match &q.artifact_type {
                        Some(t) => r.artifact_type.as_ref() == Some(t),
                        None => true,
                    })
                    .collect();
                let mut reply = api(Reply::new(200, Body::Bytes(referrers_body(&list).into())))
                    .header("Content-Type", crate::bundle::oci::INDEX_MEDIA_TYPE);
                if q.artifact_type.is_some() {
                    reply = reply.header("OCI-Filters-Applied", "artifactType");
                }
                reply
            }
        }
    }
}

impl Repo {
    /// The referrers the bundle holds for the image `image` (format.md section
    /// 18): each served by digest like an image's manifests, one a cosign tag
    /// found under that tag too; one that names the image as its subject is
    /// listed by the referrers endpoint, and must name it.
    fn add_referrers(
        &mut self,
        bundle: &Bundle,
        stored: &Blobs,
        image: &crate::bundle::Object,
        who: &str,
    ) -> anyhow::Result<()> {
        for (r, meta) in crate::bundle::referrers::of_image(&bundle.head.manifest, image) {
            let what = format!("referrer {} of {who}", r.digest);
            self.add_image(bundle, stored, r.digest, &r.media_type, &what)?;
            match &meta.tag {
                Some(tag) => match self.tags.get(tag) {
                    Some((d, first)) if *d != r.digest => {
                        return Err(ViewError::TagConflict {
                            repository: crate::bundle::referrers::repository(&r.name).to_string(),
                            tag: tag.clone(),
                            first: first.clone(),
                            second: what,
                        }
                        .into());
                    }
                    Some(_) => {}
                    None => {
                        self.tags.insert(tag.clone(), (r.digest, what));
                    }
                },
                None => {
                    let listed = self
                        .referrers
                        .get(&meta.subject)
                        .is_some_and(|l| l.contains_key(&r.digest));
                    if !listed {
                        return Err(ViewError::Manifest {
                            what,
                            digest: r.digest,
                            bundle: bundle.label.clone(),
                            why: format!("does not name {} as its subject", meta.subject),
                        }
                        .into());
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds what the image whose root is `root` reaches: every manifest the bundles
    /// store, and the configs and layers those name.
    fn add_image(
        &mut self,
        bundle: &Bundle,
        stored: &Blobs,
        root: Digest,
        media_type: &str,
        who: &str,
    ) -> Result<(), ViewError> {
        // A blob the bundle lists but does not store (a delta's) must come from
        // another bundle; one it does not list at all was never bundled (a platform
        // a sparse index leaves out): a registry without it is what is wanted.
        let listed = |d: &Digest| bundle.head.manifest.blob(d).is_some();
        let missing = |d: Digest| ViewError::Missing {
            digest: d,
            what: who.to_string(),
            bundle: bundle.label.clone(),
        };
        let mut todo = vec![(root, media_type.to_string())];
        while let Some((d, descriptor_type)) = todo.pop() {
            if self.manifests.contains_key(&d) {
                continue;
            }
            let Some(s) = stored.get(&d) else {
                if d == root || listed(&d) {
                    return Err(missing(d));
                }
                continue;
            };
            let bad = |why: String| ViewError::Manifest {
                what: who.to_string(),
                digest: d,
                bundle: bundle.label.clone(),
                why,
            };
            let media_type = match (d == root, descriptor_type.is_empty()) {
                (true, _) | (false, false) => descriptor_type,
                (false, true) => s.media_type.clone(),
            };
            if s.blob.size > MAX_MANIFEST {
                return Err(bad(format!(
                    "is {} bytes, more than a registry takes ({MAX_MANIFEST})",
                    s.blob.size
                )));
            }
            let mut bytes = vec![0u8; s.blob.size as usize];
            RangeReader::new(&*s.blob.source, s.blob.offset, s.blob.size)
                .read_exact(&mut bytes)
                .map_err(|e| bad(format!("cannot be read: {e}")))?;
            if Digest::of(&bytes) != d {
                return Err(bad(
                    "changed on disk since it verified: check the disk and copy the bundle again"
                        .into(),
                ));
            }
            let p = pointers(&media_type, &bytes).map_err(|e| bad(e.to_string()))?;
            if let Some(subject) = p.subject {
                self.referrers.entry(subject).or_default().insert(
                    d,
                    Referrer {
                        media_type: media_type.clone(),
                        size: s.blob.size,
                        digest: d,
                        artifact_type: p.artifact_type.clone(),
                        annotations: p.annotations.clone(),
                    },
                );
            }
            for b in p.blobs {
                match stored.get(&b) {
                    Some(s) => {
                        self.blobs.insert(b, s.blob.clone());
                    }
                    None if listed(&b) => return Err(missing(b)),
                    None => {}
                }
            }
            todo.extend(p.manifests);
            self.manifests.insert(d, (media_type, s.blob.clone()));
        }
        Ok(())
    }
}

/// `reply` with the header every registry answer carries.
fn api(reply: Reply) -> Reply {
    reply.header(API_VERSION.0, API_VERSION.1)
}

fn json(status: u16, body: Vec<u8>) -> Reply {
    api(Reply::text(status, JSON, body))
}

fn error(e: &ApiError) -> Reply {
    json(e.status(), e.body())
}

fn with_link(reply: Reply, link: Option<String>) -> Reply {
    match link {
        Some(l) => reply.header("Link", l),
        None => reply,
    }
}

/// What Go's `http.NotFound` answers, as distribution does for paths it has no
/// route for.
fn not_found() -> Reply {
    api(Reply::text(
        404,
        "text/plain; charset=utf-8",
        "404 page not found\n",
    ))
    .header("X-Content-Type-Options", "nosniff")
}

/// The answer for a manifest or blob found changed on disk.
pub(super) fn gone(route: Route<'_>, blob: &Blob) -> Reply {
    let code = match route {
        Route::Manifest(..) => "MANIFEST_UNKNOWN",
        _ => "BLOB_UNKNOWN",
    };
    error(&ApiError::Changed {
        code,
        digest: blob.digest,
    })
}
