//! Registries, pulling: resolving a reference to its root manifest and downloading
//! blobs into the local cache.
//!
//! The HTTP side is [`crate::registry`]'s one client (TLS, timeouts, plain HTTP,
//! credentials, the retry rule, the error advice, shared with import's fleet push);
//! this module adds what downloading for a bundle needs on top of it:
//!
//! - **A sync facade.** The rest of gapbundle is synchronous, so [`Registry`] owns
//!   a small tokio runtime and every public method blocks on it. Calling these
//!   methods from inside another tokio runtime is not supported (tokio panics).
//! - **Retries.** Every request (manifest pulls, blob stream starts, and broken
//!   blob bodies) is retried under the client's rule (connection errors, timeouts,
//!   5xx, 408 and 429, with backoff); other 4xx answers are final.
//! - **Resumable, bounded downloads.** Blobs are streamed chunk by chunk into the
//!   cache's `partial/` file and only get their name once their bytes hashed to it:
//!   as they streamed (oci-client's verifying stream, when one stream from the
//!   first byte wrote the whole file: [`Cas::finish_partial_hashed`]), else read
//!   back by the cache ([`Cas::finish_partial`]). Reading every blob back to hash
//!   it a second time was a third of a cold create's CPU and, for the largest
//!   layer, 0.4 s after its last byte came in. With a [`Placement`] (create's
//!   single bundle file), a stream from the first byte also writes each chunk at
//!   the blob's offset in the bundle. After a broken connection the next attempt
//!   asks for the rest with `Range`; a server that answers 200 instead of 206
//!   starts the file over. Nothing holds more than one network chunk of a blob in
//!   memory. Chunks are written with `tokio::fs::File`, which hands each write to
//!   tokio's blocking pool: a slow disk then delays only its own download instead
//!   of stalling the runtime threads that drive the other parallel downloads, and
//!   the cost (one small copy per chunk) is negligible next to the network. Each
//!   download runs as its own task so that the hashing `oci-client` does while
//!   streaming is spread over the runtime's threads.
//! - **Errors that say what to do**, written by [`crate::registry::errors`]: one
//!   sentence naming the registry, repository, tag or digest at fault and the flag
//!   or command that fixes it.
//! - **Mirrors.** Every request tries the reference's routes in order
//!   ([`Client::routes`]: the mirrors of K3s's `registries.yaml`, then the registry
//!   itself), as containerd does: any failure on one route (after its retries) moves
//!   on to the next, and only when every route failed is the image an error, naming
//!   what each route answered. The route that served an image's manifest is tried
//!   first for its other manifests and its blobs; a download that broke off on one
//!   route resumes on the next from the bytes already in the cache (same digest, same
//!   bytes). Names never change: a mirror only decides where bytes come from.
//! - **Trust nothing.** Manifests are checked against the digest they were asked
//!   for; blobs against their descriptor's digest and size. A blob that does not
//!   match is deleted and fetched once more from scratch, then reported.

use std::collections::{HashMap, HashSet};
use std::io::SeekFrom;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use futures_util::StreamExt;
use oci_client::client::{BlobResponse, SizedStream};
use oci_client::errors::OciDistributionError;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::bundle::meta::ReferrerMeta;
use crate::bundle::oci::{
    is_index, is_manifest, DOCKER_LIST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
};
use crate::bundle::referrers::{check_manifest, cosign_tags};
use crate::bundle::Digest;
use crate::error::{InputFailure, RegistryFailure};
use crate::io::bundle_file::Placement;
use crate::io::cas::{Cas, CasError};
use crate::oci::reference::{Reference, DEFAULT_TAG};
use crate::progress::{Bar, Progress};
use crate::registry::auth::Origin;
use crate::registry::client::{backoff, runtime, Client, Route};
use crate::registry::errors::{classify, digest_error_in, Failure, What};
use crate::registry::Settings;
use crate::resolve::image::{media_type_of, Blob, ManifestFetch};

/// Manifest media types asked for (`Accept`).
const MANIFEST_TYPES: &[&str] = &[
    INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    DOCKER_LIST_MEDIA_TYPE,
    DOCKER_MANIFEST_MEDIA_TYPE,
];

/// Largest config (or other non-manifest blob) read into memory by the manifest walk.
const SMALL_BLOB_LIMIT: usize = 64 << 20;

/// The root manifest (index or image manifest) a reference resolved to.
#[derive(Debug, Clone)]
pub struct ResolvedRoot {
    /// The normalized full reference, e.g. `127.0.0.1:5000/team/app:1.2` or
    /// `docker.io/library/alpine:latest` ([`Reference::normalized`]).
    pub name: String,
    /// Digest of `bytes`.
    pub digest: Digest,
    /// Media type of the root.
    pub media_type: String,
    /// The root's bytes, exactly as the registry serves them.
    pub bytes: Vec<u8>,
}

/// A referrer of an image, as [`Registry::referrers`] found it.
#[derive(Debug, Clone)]
pub struct FoundReferrer {
    /// Digest of `bytes`.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its manifest, exactly as the registry serves it.
    pub bytes: Vec<u8>,
    /// The `referrer` object's meta: subject, artifact type, cosign tag.
    pub meta: ReferrerMeta,
}

/// Whether a registry's answer says the manifest asked for is not there.
fn not_found(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().all(|x| {
            matches!(
                x.code,
                oci_client::errors::OciErrorCode::ManifestUnknown
                    | oci_client::errors::OciErrorCode::NotFound
            )
        }),
        _ => false,
    }
}

/// What [`Registry::fetch_blobs`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchStats {
    /// Blobs downloaded.
    pub fetched: usize,
    /// Bytes downloaded (blob sizes, not counting retried bytes).
    pub fetched_bytes: u64,
    /// Blobs already in the cache.
    pub cached: usize,
}

/// Pulls from any number of registries, with its own async runtime.
pub struct Registry {
    inner: Arc<Inner>,
    rt: tokio::runtime::Runtime,
}

struct Inner {
    client: Client,
    jobs: usize,
    /// The route (index into [`Client::routes`]) that last served each repository
    /// (`domain/path`): tried first for the rest of its requests.
    preferred: Mutex<HashMap<String, usize>>,
}

impl Inner {
    /// `r`'s routes, the one that last served its repository first.
    fn routes(&self, r: &Reference) -> Vec<Route> {
        let mut routes = self.client.routes(r);
        if let Some(&i) = self.preferred.lock().expect("not poisoned").get(&r.name()) {
            if i < routes.len() {
                let first = routes.remove(i);
                routes.insert(0, first);
            }
        }
        routes
    }

    /// Remembers that `route` served `r`'s repository.
    fn served(&self, r: &Reference, route: &Route) {
        if let Some(i) = self.client.routes(r).iter().position(|x| x == route) {
            self.preferred
                .lock()
                .expect("not poisoned")
                .insert(r.name(), i);
        }
    }
}

/// The error for `name` once every route failed: the one failure as it is, or each
/// route's answer in the order tried. A failure that is not the registry's (a
/// credentials file that cannot be read) is returned at once by the callers.
fn every_route_failed(name: &str, mut failures: Vec<(Route, anyhow::Error)>) -> anyhow::Error {
    if failures.len() == 1 {
        return failures.remove(0).1;
    }
    let mut msg = format!(
        "{name} could not be fetched from any of its {} sources (tried in this order):",
        failures.len()
    );
    for (route, e) in &failures {
        msg.push_str(&format!("\n  - {}: {e}", route.describe()));
    }
    RegistryFailure(msg).into()
}

/// Whether a failed request is one that another route cannot cure (bad input or
/// the machine's own trouble, as opposed to what a registry answered).
fn stops_here(e: &anyhow::Error) -> bool {
    !e.chain().any(|c| c.is::<RegistryFailure>())
}

impl Registry {
    /// Sets up the client and its runtime.
    pub fn new(settings: Settings) -> Result<Self> {
        let jobs = settings.jobs.max(1);
        let client = Client::new(&settings)?;
        let rt = runtime(jobs.clamp(2, 8), "gapbundle-registry")
            .context("cannot start the async runtime for registry access")?;
        Ok(Registry {
            inner: Arc::new(Inner {
                client,
                jobs,
                preferred: Mutex::new(HashMap::new()),
            }),
            rt,
        })
    }

    /// Resolve `reference` to its root manifest (index or manifest).
    ///
    /// With `pinned` (from the lock file) already in `cas`, no request is made. If
    /// pinned but not cached, `repo@pinned` is fetched. A digest in the reference
    /// itself is checked the same way. The root's bytes end up in `cas`.
    pub fn resolve(
        &self,
        cas: &Cas,
        reference: &str,
        pinned: Option<Digest>,
    ) -> Result<ResolvedRoot> {
        let r = parse_reference(reference)?;
        let name = r.normalized();
        let named = r.digest().copied();
        if let (Some(n), Some(p)) = (named, pinned) {
            if n != p {
                return Err(InputFailure(format!("{name} names digest {n} but the lock file pins {p} for it: remove its entry from the lock file to resolve it again")).into());
            }
        }
        let want = pinned.or(named);
        if let Some(d) = want {
            if cas.contains(&d, None) {
                let bytes = cas.read_small(&d).with_context(|| {
                    format!(
                        "cannot read {d} ({name}) from the cache {}",
                        cas.root().display()
                    )
                })?;
                let media_type = media_type_of(&bytes, None)
                    .with_context(|| format!("{name}: cached root {d} is not a manifest"))?;
                return Ok(ResolvedRoot {
                    name,
                    digest: d,
                    media_type,
                    bytes,
                });
            }
        }
        let routes = self.inner.routes(&r);
        let what = What::Manifest {
            name: name.clone(),
            by_digest: want.is_some(),
        };
        let inner = self.inner.clone();
        let tag = r.tag().unwrap_or(DEFAULT_TAG).to_string();
        let (bytes, route) = self.rt.block_on(async move {
            let mut failures = Vec::new();
            for route in routes {
                let target = match want {
                    Some(d) => route.by_digest(&d),
                    None => route.tagged(&tag),
                };
                let got = inner.pull_manifest(&target, &route, &what).await;
                let got = got.and_then(|bytes| match want {
                    Some(w) if Digest::of(&bytes) != w => Err(RegistryFailure(format!(
                        "{} sent a manifest with digest {}, not the requested {w}: it, or a proxy in between, is serving wrong data",
                        route.describe(),
                        Digest::of(&bytes)
                    ))
                    .into()),
                    _ => Ok(bytes),
                });
                match got {
                    Ok(bytes) => return Ok((bytes, route)),
                    Err(e) if stops_here(&e) => return Err(e),
                    Err(e) => failures.push((route, e)),
                }
            }
            Err(every_route_failed(&what_name(&what), failures))
        })?;
        self.inner.served(&r, &route);
        let digest = Digest::of(&bytes);
        let media_type = media_type_of(&bytes, None).map_err(|e| {
            RegistryFailure(format!(
                "{name}: the registry's manifest cannot be used: {e:#}"
            ))
        })?;
        cas.put_bytes(&bytes).with_context(|| {
            format!(
                "cannot store the manifest of {name} in the cache {}",
                cas.root().display()
            )
        })?;
        Ok(ResolvedRoot {
            name,
            digest,
            media_type,
            bytes,
        })
    }

    /// The referrers of the image `subject` in `reference`'s repository: the
    /// manifests the referrers API lists for it (or, when the registry has no such
    /// API, the index under the referrers tag schema `sha256-<hex>`; oci-client
    /// falls back on the API's 404), each fetched by digest, checked against it and
    /// required to name `subject` as its subject; then whatever cosign's tags
    /// `sha256-<hex>.sig`, `.att` and `.sbom` name (a tag the registry does not
    /// have is none). Every manifest found is in `cas`, sorted by digest, once.
    pub fn referrers(
        &self,
        cas: &Cas,
        reference: &str,
        subject: Digest,
    ) -> Result<Vec<FoundReferrer>> {
        let r = parse_reference(reference)?;
        let routes = self.inner.routes(&r);
        let inner = self.inner.clone();
        let name = r.name();
        let found = self.rt.block_on(async move {
            let mut failures = Vec::new();
            for route in routes {
                match inner.referrers_on(&route, &name, subject).await {
                    Ok(found) => return Ok(found),
                    Err(e) if stops_here(&e) => return Err(e),
                    Err(e) => failures.push((route, e)),
                }
            }
            Err(every_route_failed(
                &format!("the referrers of {name}@{subject}"),
                failures,
            ))
        })?;
        for f in &found {
            cas.put_bytes(&f.bytes).with_context(|| {
                format!(
                    "cannot store referrer {} in the cache {}",
                    f.digest,
                    cas.root().display()
                )
            })?;
        }
        Ok(found)
    }

    /// A [`ManifestFetch`] for the children of `reference`'s repository: bytes come
    /// from `cas` when cached, else from `repo@digest`, checked against the digest
    /// and stored in `cas`. Configs (asked for by the walk of single-platform
    /// images) are fetched as blobs.
    pub fn manifests<'a>(
        &'a self,
        cas: &'a Cas,
        reference: &str,
    ) -> Result<impl ManifestFetch + 'a> {
        let r = parse_reference(reference)?;
        Ok(RegistryManifests {
            registry: self,
            cas,
            routes: self.inner.routes(&r),
            reference: r,
        })
    }

    /// Downloads every blob not already in `cas`, `jobs` at a time, each from the
    /// repository named with it. See the module documentation for resuming and
    /// verification.
    pub fn fetch_blobs(
        &self,
        cas: &Cas,
        blobs: &[(String, Blob)],
        progress: &Progress,
    ) -> Result<FetchStats> {
        self.fetch_blobs_into(cas, blobs, None, progress)
    }

    /// [`Registry::fetch_blobs`], each download also writing its bytes at the
    /// blob's offset in `placement`'s file as they stream, and noting there the
    /// blobs one verified stream wrote whole (see [`crate::io::bundle_file`]).
    pub fn fetch_blobs_into(
        &self,
        cas: &Cas,
        blobs: &[(String, Blob)],
        placement: Option<Arc<Placement>>,
        progress: &Progress,
    ) -> Result<FetchStats> {
        let mut stats = FetchStats::default();
        let mut seen = HashSet::new();
        let mut todo = Vec::new();
        for (reference, blob) in blobs {
            if !seen.insert(blob.digest) {
                continue;
            }
            if cas.contains(&blob.digest, Some(blob.size)) {
                stats.cached += 1;
                continue;
            }
            let routes = self.inner.routes(&parse_reference(reference)?);
            todo.push((routes, blob.clone()));
        }
        if todo.is_empty() {
            return Ok(stats);
        }
        let inner = self.inner.clone();
        let (n, bytes) = self.rt.block_on(async move {
            let mut queue = todo.into_iter();
            let mut set = tokio::task::JoinSet::new();
            let spawn = |set: &mut tokio::task::JoinSet<Result<u64>>,
                         (routes, b): (Vec<Route>, Blob)| {
                let inner = inner.clone();
                let cas = cas.clone();
                let placement = placement.clone();
                let bar = progress.bar(
                    format!("{} {}", b.digest.short(), routes[0].repository),
                    b.size,
                );
                set.spawn(async move {
                    inner
                        .fetch_any(&cas, placement.as_deref(), &routes, &b, &bar)
                        .await
                });
            };
            for job in queue.by_ref().take(inner.jobs) {
                spawn(&mut set, job);
            }
            let (mut n, mut bytes) = (0usize, 0u64);
            // Returning early drops the set, which aborts the other downloads;
            // their partial files stay for the next run to resume.
            while let Some(res) = set.join_next().await {
                bytes += res.context("a download task failed")??;
                n += 1;
                if let Some(job) = queue.next() {
                    spawn(&mut set, job);
                }
            }
            Ok::<_, anyhow::Error>((n, bytes))
        })?;
        stats.fetched = n;
        stats.fetched_bytes = bytes;
        Ok(stats)
    }
}

struct RegistryManifests<'a> {
    registry: &'a Registry,
    cas: &'a Cas,
    reference: Reference,
    /// The image's routes, the one that served its root first.
    routes: Vec<Route>,
}

impl ManifestFetch for RegistryManifests<'_> {
    fn fetch(&mut self, digest: &Digest, media_type: &str) -> Result<Vec<u8>> {
        if self.cas.contains(digest, None) {
            return self.cas.read_small(digest).with_context(|| {
                format!(
                    "cannot read {digest} from the cache {}",
                    self.cas.root().display()
                )
            });
        }
        let name = self.reference.with_digest(*digest).to_string();
        let inner = self.registry.inner.clone();
        let routes = self.routes.clone();
        let media_type = media_type.to_string();
        let digest = *digest;
        let bytes = self.registry.rt.block_on(async move {
            let manifest = What::Manifest {
                name: name.clone(),
                by_digest: true,
            };
            let blob = What::Blob { digest };
            let mut failures = Vec::new();
            for route in routes {
                let target = route.by_digest(&digest);
                let got = if is_index(&media_type) || is_manifest(&media_type) {
                    inner.pull_manifest(&target, &route, &manifest).await
                } else if media_type.is_empty() {
                    // Sloppy descriptor: a manifest most likely, else a blob.
                    match inner.pull_manifest(&target, &route, &manifest).await {
                        Ok(b) => Ok(b),
                        Err(e) => inner
                            .pull_small_blob(&target, &route, &digest, &blob)
                            .await
                            .map_err(|_| e),
                    }
                } else {
                    inner.pull_small_blob(&target, &route, &digest, &blob).await
                };
                let got = got.and_then(|bytes| {
                    let found = Digest::of(&bytes);
                    if found == digest {
                        Ok(bytes)
                    } else {
                        Err(RegistryFailure(format!(
                            "{} sent {found} for {digest} of {}: it, or a proxy in between, is serving wrong data",
                            route.describe(),
                            route.repository
                        ))
                        .into())
                    }
                });
                match got {
                    Ok(bytes) => return Ok(bytes),
                    Err(e) if stops_here(&e) => return Err(e),
                    Err(e) => failures.push((route, e)),
                }
            }
            Err(every_route_failed(&name, failures))
        })?;
        self.cas.put_bytes(&bytes).with_context(|| {
            format!(
                "cannot store {digest} in the cache {}",
                self.cas.root().display()
            )
        })?;
        Ok(bytes)
    }
}

impl Inner {
    async fn referrers_on(
        &self,
        route: &Route,
        name: &str,
        subject: Digest,
    ) -> Result<Vec<FoundReferrer>> {
        let (auth, origin) = self.client.credentials(route)?;
        let oci = self.client.transport(route);
        oci.store_auth_if_needed(&route.endpoint, &auth).await;
        let listed = What::Manifest {
            name: format!("the referrers of {name}@{subject}"),
            by_digest: true,
        };
        let target = route.by_digest(&subject);
        let index = self
            .client
            .retry(|| oci.pull_referrers(&target, None))
            .await
            .map_err(|(e, n)| self.client.explain(&e, route, &listed, n, &origin))?;
        let mut out: Vec<FoundReferrer> = Vec::new();
        for entry in &index.manifests {
            let digest: Digest = entry.digest.parse().map_err(|_| {
                RegistryFailure(format!(
                    "{} lists the referrer `{}` of {name}@{subject}, which is not a sha256 digest",
                    route.describe(),
                    entry.digest
                ))
            })?;
            let what = What::Manifest {
                name: format!("{name}@{digest}"),
                by_digest: true,
            };
            let bytes = self
                .pull_manifest(&route.by_digest(&digest), route, &what)
                .await?;
            if Digest::of(&bytes) != digest {
                return Err(RegistryFailure(format!(
                    "{} sent a manifest with digest {} for the referrer {digest} of {name}: it, or a proxy in between, is serving wrong data",
                    route.describe(),
                    Digest::of(&bytes)
                ))
                .into());
            }
            let meta = ReferrerMeta {
                subject,
                artifact_type: entry.artifact_type.clone(),
                tag: None,
                extra: Default::default(),
            };
            check_manifest(&digest, &meta, &bytes)
                .map_err(|e| RegistryFailure(format!("{}: {e}", route.describe())))?;
            out.push(FoundReferrer {
                digest,
                media_type: media_type_of(&bytes, Some(&entry.media_type))?,
                bytes,
                meta,
            });
        }
        for tag in cosign_tags(&subject) {
            let t = route.tagged(&tag);
            let got = self
                .client
                .retry(|| oci.pull_manifest_raw(&t, &auth, MANIFEST_TYPES))
                .await;
            let bytes = match got {
                Ok((bytes, _)) => bytes.to_vec(),
                Err((e, _)) if not_found(&e) => continue,
                Err((e, n)) => {
                    let what = What::Manifest {
                        name: format!("{name}:{tag}"),
                        by_digest: false,
                    };
                    return Err(self.client.explain(&e, route, &what, n, &origin));
                }
            };
            let digest = Digest::of(&bytes);
            let media_type = media_type_of(&bytes, None)
                .map_err(|e| RegistryFailure(format!("{name}:{tag} cannot be used: {e:#}")))?;
            let artifact_type = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v["artifactType"]
                        .as_str()
                        .or(v["config"]["mediaType"].as_str())
                        .map(String::from)
                });
            out.push(FoundReferrer {
                digest,
                media_type,
                bytes,
                meta: ReferrerMeta {
                    subject,
                    artifact_type,
                    tag: Some(tag),
                    extra: Default::default(),
                },
            });
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest).then(a.meta.tag.cmp(&b.meta.tag)));
        out.dedup_by(|a, b| a.digest == b.digest);
        Ok(out)
    }

    async fn pull_manifest(
        &self,
        target: &oci_client::Reference,
        route: &Route,
        what: &What,
    ) -> Result<Vec<u8>> {
        let (auth, origin) = self.client.credentials(route)?;
        let oci = self.client.transport(route);
        self.client
            .retry(|| oci.pull_manifest_raw(target, &auth, MANIFEST_TYPES))
            .await
            .map(|(bytes, _)| bytes.to_vec())
            .map_err(|(e, n)| self.client.explain(&e, route, what, n, &origin))
    }

    /// A config or similar small blob, read whole (the caller checks its digest too).
    async fn pull_small_blob(
        &self,
        target: &oci_client::Reference,
        route: &Route,
        digest: &Digest,
        what: &What,
    ) -> Result<Vec<u8>> {
        let (auth, origin) = self.client.credentials(route)?;
        let oci = self.client.transport(route);
        oci.store_auth_if_needed(&route.endpoint, &auth).await;
        let d = digest.to_string();
        self.client
            .retry(|| async {
                let mut stream = oci.pull_blob_stream(target, d.as_str()).await?;
                let mut buf = Vec::new();
                while let Some(chunk) = stream.next().await {
                    buf.extend_from_slice(&chunk?);
                    if buf.len() > SMALL_BLOB_LIMIT {
                        return Err(OciDistributionError::GenericError(Some(format!(
                            "blob {d} is larger than {} MiB, too large for an image config",
                            SMALL_BLOB_LIMIT >> 20
                        ))));
                    }
                }
                Ok(buf)
            })
            .await
            .map_err(|(e, n)| self.client.explain(&e, route, what, n, &origin))
    }

    /// Downloads `b` from the first of `routes` that serves it; a broken-off
    /// download resumes on the next route from the bytes already cached.
    async fn fetch_any(
        &self,
        cas: &Cas,
        placement: Option<&Placement>,
        routes: &[Route],
        b: &Blob,
        bar: &Bar,
    ) -> Result<u64> {
        let mut failures = Vec::new();
        for route in routes {
            let got = async {
                let (auth, origin) = self.client.credentials(route)?;
                // Blob pulls do not register credentials in oci-client (only the
                // manifest pulls do), so do it here in case no manifest was pulled.
                self.client
                    .transport(route)
                    .store_auth_if_needed(&route.endpoint, &auth)
                    .await;
                self.fetch_one(cas, placement, route, b, bar, &origin).await
            }
            .await;
            match got {
                Ok(n) => return Ok(n),
                Err(e) if stops_here(&e) => return Err(e),
                Err(e) => failures.push((route.clone(), e)),
            }
        }
        Err(every_route_failed(
            &format!("blob {} of {}", b.digest, routes[0].repository),
            failures,
        ))
    }

    async fn fetch_one(
        &self,
        cas: &Cas,
        placement: Option<&Placement>,
        route: &Route,
        b: &Blob,
        bar: &Bar,
        origin: &Origin,
    ) -> Result<u64> {
        let mut restarted = false;
        loop {
            let verified = self.download(cas, placement, route, b, bar, origin).await?;
            let (c, d, size) = (cas.clone(), b.digest, b.size);
            // Bytes oci-client hashed to the digest as they streamed need no second
            // pass (a second hash of every byte, on the cold create's critical path);
            // a resumed file, whose first bytes came in an earlier stream, is read
            // back and hashed whole.
            let checked = tokio::task::spawn_blocking(move || match verified {
                Verified::Streamed { .. } => c.finish_partial_hashed(&d, size),
                Verified::No => c.finish_partial(&d, size),
            })
            .await
            .context("the hashing task failed")?;
            match checked {
                Ok(()) => {
                    if let (Verified::Streamed { placed: true }, Some(p)) = (verified, placement) {
                        p.placed(b.digest);
                    }
                    bar.finish("fetched");
                    return Ok(b.size);
                }
                // finish_partial deleted the bad bytes: one more try from scratch.
                Err(CasError::DigestMismatch { .. }) if !restarted => {
                    restarted = true;
                    bar.set_position(0);
                }
                Err(CasError::DigestMismatch {
                    found, found_size, ..
                }) => {
                    return Err(RegistryFailure(format!(
                        "blob {} of {}/{} is corrupt: expected {} ({} bytes), found {found} ({found_size} bytes), twice in a row; the registry (or a proxy in between) serves wrong data for it: push the image again or tell the registry's operator",
                        b.digest,
                        route.host,
                        route.repository,
                        b.digest,
                        b.size
                    ))
                    .into())
                }
                Err(CasError::Io(e)) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "cannot store blob {} in the cache {}",
                        b.digest,
                        cas.root().display()
                    )))
                }
            }
        }
    }

    /// Brings the partial file of `b` to its full length (or beyond, when the
    /// server sends too much; the caller's check then fails), and says whether its
    /// bytes are already known to hash to the digest.
    async fn download(
        &self,
        cas: &Cas,
        placement: Option<&Placement>,
        route: &Route,
        b: &Blob,
        bar: &Bar,
        origin: &Origin,
    ) -> Result<Verified> {
        let digest = b.digest.to_string();
        let target = route.by_digest(&b.digest);
        let oci = self.client.transport(route);
        let local = |e: std::io::Error| {
            anyhow::Error::new(e).context(format!(
                "cannot write blob {} to the cache {}",
                b.digest,
                cas.root().display()
            ))
        };
        // Failures that brought no new bytes; ones that made progress are free,
        // which is bounded since progress is.
        let mut failures = 0u32;
        let mut high_water = 0u64;
        let mut range_refused = false;
        loop {
            let (file, mut have) = cas.partial(&b.digest).map_err(local)?;
            let mut file = tokio::fs::File::from_std(file.into_file());
            if have > b.size {
                file.set_len(0).await.map_err(local)?;
                file.seek(SeekFrom::Start(0)).await.map_err(local)?;
                have = 0;
            }
            if have == b.size {
                return Ok(Verified::No);
            }
            bar.set_position(have);
            let started = if have == 0 {
                oci.pull_blob_stream(&target, digest.as_str())
                    .await
                    .map(|s| (s, true))
            } else {
                oci.pull_blob_stream_partial(&target, digest.as_str(), have, None)
                    .await
                    .map(|resp| match resp {
                        BlobResponse::Full(s) => (s, true),
                        BlobResponse::Partial(s) => (s, false),
                    })
            };
            let outcome = match started {
                Err(e) => Err(e),
                Ok((stream, full)) => {
                    if full && have > 0 {
                        // No range support: start over.
                        file.set_len(0).await.map_err(local)?;
                        file.seek(SeekFrom::Start(0)).await.map_err(local)?;
                        have = 0;
                        bar.set_position(0);
                    }
                    // A stream from the blob's first byte also goes to its place
                    // in the bundle, when there is one.
                    let mut tee = match placement.filter(|_| full) {
                        Some(p) => match p.offset(&b.digest, b.size) {
                            Some(at) => Tee::open(p, at).await.ok(),
                            None => None,
                        },
                        None => None,
                    };
                    copy_stream(stream, &mut file, tee.as_mut(), &mut have, b.size, bar)
                        .await
                        .map_err(local)?
                        .map(|end| {
                            // A full response is oci-client's verifying stream: its
                            // clean end means the digest matched every byte of it,
                            // and the file holds exactly those bytes (written from 0).
                            if full && end == End::Clean && have == b.size {
                                Verified::Streamed {
                                    placed: tee.as_ref().is_some_and(|t| t.whole),
                                }
                            } else {
                                Verified::No
                            }
                        })
                }
            };
            file.flush().await.map_err(local)?;
            drop(file);
            let e = match outcome {
                Ok(verified) => return Ok(verified),
                Err(e) => e,
            };
            let failure = classify(&e);
            if matches!(failure, Failure::Status { code: 416, .. }) && have > 0 && !range_refused {
                // The server has fewer bytes than the partial file: start over.
                range_refused = true;
                cas.discard_partial(&b.digest).map_err(local)?;
                continue;
            }
            if have <= high_water {
                failures += 1;
            }
            high_water = high_water.max(have);
            if failure.retryable() && failures < self.client.attempts() {
                tokio::time::sleep(backoff(failures.max(1))).await;
                continue;
            }
            return Err(self.client.explain(
                &e,
                route,
                &What::Blob { digest: b.digest },
                failures.max(1),
                origin,
            ));
        }
    }
}

/// Whether a downloaded partial file is known to hash to its digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verified {
    /// Every byte came from one stream that oci-client hashed to the digest; with
    /// `placed`, the same bytes are at the blob's offset in the placement's file.
    Streamed { placed: bool },
    /// Not known: the cache hashes the file (a resumed download, or bad bytes).
    No,
}

/// How a copy of a stream ended, when no error did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The stream's own end: for a verifying stream, the digest matched.
    Clean,
    /// Stopped early: more bytes than the blob has, or a digest mismatch.
    Stopped,
}

/// The blob's place in a bundle file, written beside the cache's partial file.
/// A failed write there only ends the tee (`whole` false): the blob is then not
/// placed, and the bundle writer, copying it from the cache later, reports the
/// bundle file's error itself.
struct Tee<'a> {
    placement: &'a Placement,
    file: tokio::fs::File,
    whole: bool,
}

impl<'a> Tee<'a> {
    /// The placement's file, positioned at `at` (a file description of its own:
    /// other downloads write other ranges of the same file at the same time).
    async fn open(placement: &'a Placement, at: u64) -> std::io::Result<Tee<'a>> {
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(placement.path())
            .await?;
        file.seek(SeekFrom::Start(at)).await?;
        Ok(Tee {
            placement,
            file,
            whole: true,
        })
    }
}

/// Streams `stream` to the end of `file` (and its blob's part into `tee`, which
/// is flushed before a copy that ended without an error returns). `Ok(Err(e))` is
/// a network error (worth a retry); `Err` is a local write error. A digest mismatch
/// detected by oci-client's verifying stream ends the copy normally
/// ([`End::Stopped`]): the cache's own check, which follows, reports it with
/// everything the user needs.
async fn copy_stream(
    mut stream: SizedStream,
    file: &mut tokio::fs::File,
    mut tee: Option<&mut Tee<'_>>,
    have: &mut u64,
    size: u64,
    bar: &Bar,
) -> std::io::Result<std::result::Result<End, OciDistributionError>> {
    let end = loop {
        let Some(chunk) = stream.next().await else {
            break End::Clean;
        };
        match chunk {
            Ok(bytes) => {
                if let Some(t) = tee.as_deref_mut().filter(|t| t.whole) {
                    // Never past the blob's own range (the next blob's bytes).
                    let room = size.saturating_sub(*have).min(bytes.len() as u64) as usize;
                    t.whole = t.file.write_all(&bytes[..room]).await.is_ok();
                    t.placement.wrote(room as u64);
                }
                file.write_all(&bytes).await?;
                *have += bytes.len() as u64;
                bar.inc(bytes.len() as u64);
                if *have > size {
                    break End::Stopped;
                }
            }
            Err(e) if digest_error_in(&e).is_some() => break End::Stopped,
            Err(e) => return Ok(Err(OciDistributionError::IoError(e))),
        }
    };
    if let Some(t) = tee.filter(|t| t.whole) {
        // Written before the caller counts the blob as placed.
        t.whole = t.file.flush().await.is_ok();
    }
    Ok(Ok(end))
}

fn what_name(what: &What) -> String {
    match what {
        What::Manifest { name, .. } => name.clone(),
        What::Blob { digest } => format!("blob {digest}"),
        What::Push { step } => step.clone(),
    }
}

fn parse_reference(reference: &str) -> Result<Reference> {
    Reference::parse(reference.trim()).map_err(|e| InputFailure(e.to_string()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_short_names_normalize() {
        assert_eq!(
            parse_reference("alpine").unwrap().normalized(),
            "docker.io/library/alpine:latest"
        );
        let e = parse_reference("has space:1").unwrap_err().to_string();
        assert!(e.contains("not a valid image reference"), "{e}");
    }
}
