//! Registries: resolving a reference to its root manifest and downloading blobs
//! into the local cache.
//!
//! The HTTP side is `oci-client`; this module adds what a tool carrying images
//! across an air gap needs on top of it:
//!
//! - **A sync facade.** The rest of gapbundle is synchronous, so [`Registry`] owns
//!   a small tokio runtime and every public method blocks on it. Calling these
//!   methods from inside another tokio runtime is not supported (tokio panics).
//! - **Retries.** Every request (manifest pulls, blob stream starts, and broken
//!   blob bodies) is retried on connection errors, timeouts, 5xx, 408 and 429 with
//!   exponential backoff (200 ms doubling, capped at 10 s). Other 4xx answers are
//!   final: asking again will not change them. The loop and the rule are
//!   `with_retries` and `is_retryable`, which import's fleet push uses too.
//! - **Resumable, bounded downloads.** Blobs are streamed chunk by chunk into the
//!   cache's `partial/` file and only get their name after the cache has hashed
//!   them ([`Cas::finish_partial`]). After a broken connection the next attempt
//!   asks for the rest with `Range`; a server that answers 200 instead of 206
//!   starts the file over. Nothing holds more than one network chunk of a blob in
//!   memory. Chunks are written with `tokio::fs::File`, which hands each write to
//!   tokio's blocking pool: a slow disk then delays only its own download instead
//!   of stalling the runtime threads that drive the other parallel downloads, and
//!   the cost (one small copy per chunk) is negligible next to the network. Each
//!   download runs as its own task so that the hashing `oci-client` does while
//!   streaming is spread over the runtime's threads.
//! - **Errors that say what to do.** `oci-client` reports a refused login as a
//!   plain 401 (its lazy authentication swallows the token error), a missing tag
//!   as a JSON envelope and an unreachable host as a nested `reqwest` error. Each
//!   is turned here into one sentence naming the registry, repository, tag or
//!   digest at fault and the flag or command that fixes it; the original error
//!   stays in the chain (`{:#}`) for debugging.
//! - **Trust nothing.** Manifests are checked against the digest they were asked
//!   for; blobs against their descriptor's digest and size. A blob that does not
//!   match is deleted and fetched once more from scratch, then reported.

use std::collections::{HashMap, HashSet};
use std::error::Error as StdError;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::StreamExt;
use oci_client::client::{BlobResponse, ClientConfig, ClientProtocol, SizedStream};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use crate::bundle::oci::{
    is_index, is_manifest, DOCKER_LIST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
};
use crate::bundle::Digest;
use crate::io::cas::{Cas, CasError};
use crate::progress::{Bar, Progress};
use crate::resolve::auth::{self, Origin};
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

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one read may wait for bytes before the request counts as timed out.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// How to talk to registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Hosts (`host[:port]`) reached over plain HTTP (`--insecure-registry`).
    pub insecure_hosts: Vec<String>,
    /// Credentials per host (`--registry-auth HOST=USER:PASS`, see
    /// [`auth::parse_registry_auth`]); they win over Docker's config file.
    pub credentials: Vec<(String, auth::Credentials)>,
    /// Docker's `config.json` to read logins from; `None` means
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. A file that does
    /// not exist means no logins.
    pub docker_config: Option<PathBuf>,
    /// Blobs downloaded in parallel.
    pub jobs: usize,
    /// Attempts per request on connection errors, timeouts, 5xx, 408 and 429.
    pub retries: u32,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            insecure_hosts: Vec::new(),
            credentials: Vec::new(),
            docker_config: None,
            jobs: 4,
            retries: 5,
        }
    }
}

/// The root manifest (index or image manifest) a reference resolved to.
#[derive(Debug, Clone)]
pub struct ResolvedRoot {
    /// The normalized full reference, e.g. `127.0.0.1:5000/team/app:1.2` or
    /// `docker.io/library/alpine:latest`.
    pub name: String,
    /// Digest of `bytes`.
    pub digest: Digest,
    /// Media type of the root.
    pub media_type: String,
    /// The root's bytes, exactly as the registry serves them.
    pub bytes: Vec<u8>,
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

/// A connection to any number of registries, with its own async runtime.
pub struct Registry {
    inner: Arc<Inner>,
    rt: tokio::runtime::Runtime,
}

struct Inner {
    client: Client,
    store: auth::Store,
    /// Normalized `--insecure-registry` hosts.
    insecure: HashSet<String>,
    jobs: usize,
    attempts: u32,
}

impl Registry {
    /// Sets up the HTTP client, the runtime and the credentials.
    pub fn new(opts: RegistryOptions) -> Result<Self> {
        // reqwest is built without a default crypto provider; ring is ours. A
        // second call finds one installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let jobs = opts.jobs.max(1);
        let mut http_hosts = Vec::new();
        let mut insecure = HashSet::new();
        for h in &opts.insecure_hosts {
            let n = auth::normalize_host(h);
            // oci-client compares its exception list with the host exactly as the
            // reference spells it (Docker Hub resolves to index.docker.io).
            let as_given = h
                .trim()
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_string();
            http_hosts.push(as_given);
            if n == "docker.io" {
                http_hosts.push("index.docker.io".into());
            }
            http_hosts.push(n.clone());
            insecure.insert(n);
        }
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(http_hosts),
            platform_resolver: None,
            max_concurrent_download: jobs,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: concat!("gapbundle/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        // `Client::new` would fall back to a default (HTTPS-only) client on error.
        let client = Client::try_from(config).context("cannot set up the HTTP client")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(jobs.clamp(2, 8))
            .thread_name("gapbundle-registry")
            .enable_all()
            .build()
            .context("cannot start the async runtime for registry access")?;
        let store = auth::Store::load(&opts.credentials, opts.docker_config.as_deref());
        Ok(Registry {
            inner: Arc::new(Inner {
                client,
                store,
                insecure,
                jobs,
                attempts: opts.retries.max(1),
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
        let name = r.whole();
        let named = r.digest().map(|d| parse_digest(d, &name)).transpose()?;
        if let (Some(n), Some(p)) = (named, pinned) {
            if n != p {
                bail!("{name} names digest {n} but the lock file pins {p} for it: remove its entry from the lock file to resolve it again");
            }
        }
        let want = pinned.or(named);
        if let Some(d) = want {
            if cas.contains(&d, None) {
                let bytes = cas
                    .read_small(&d)
                    .with_context(|| format!("cannot read {d} ({name}) from the cache"))?;
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
        let target = match want {
            Some(d) => r.clone_with_digest(d.to_string()),
            None => r.clone(),
        };
        let what = What::Manifest {
            name: name.clone(),
            by_digest: want.is_some(),
        };
        let inner = self.inner.clone();
        let bytes = self
            .rt
            .block_on(async move { inner.pull_manifest(&target, &what).await })?;
        let digest = Digest::of(&bytes);
        if let Some(w) = want {
            if digest != w {
                bail!(
                    "registry {} sent a manifest for {name} with digest {digest}, not the requested {w}: the registry or a proxy in between is serving wrong data",
                    r.registry()
                );
            }
        }
        let media_type = media_type_of(&bytes, None)
            .with_context(|| format!("{name}: the registry's manifest cannot be used"))?;
        cas.put_bytes(&bytes)
            .with_context(|| format!("cannot store the manifest of {name} in the cache"))?;
        Ok(ResolvedRoot {
            name,
            digest,
            media_type,
            bytes,
        })
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
        Ok(RegistryManifests {
            registry: self,
            cas,
            repo: parse_reference(reference)?,
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
            todo.push((parse_reference(reference)?, blob.clone()));
        }
        if todo.is_empty() {
            return Ok(stats);
        }
        let mut origins = HashMap::new();
        for (r, _) in &todo {
            if !origins.contains_key(r.registry()) {
                origins.insert(r.registry().to_string(), self.inner.auth_for(r)?);
            }
        }
        let inner = self.inner.clone();
        let (n, bytes) = self.rt.block_on(async move {
            // Blob pulls do not register credentials in oci-client (only the
            // manifest pulls do), so do it here in case no manifest was pulled.
            for (r, _) in &todo {
                let (auth, _) = &origins[r.registry()];
                inner
                    .client
                    .store_auth_if_needed(r.resolve_registry(), auth)
                    .await;
            }
            let mut queue = todo.into_iter();
            let mut set = tokio::task::JoinSet::new();
            let spawn = |set: &mut tokio::task::JoinSet<Result<u64>>, (r, b): (Reference, Blob)| {
                let inner = inner.clone();
                let cas = cas.clone();
                let origin = origins[r.registry()].1.clone();
                let bar = progress.bar(format!("{} {}", b.digest.short(), r.repository()), b.size);
                set.spawn(async move { inner.fetch_one(&cas, &r, &b, &bar, &origin).await });
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
    repo: Reference,
}

impl ManifestFetch for RegistryManifests<'_> {
    fn fetch(&mut self, digest: &Digest, media_type: &str) -> Result<Vec<u8>> {
        if self.cas.contains(digest, None) {
            return self
                .cas
                .read_small(digest)
                .with_context(|| format!("cannot read {digest} from the cache"));
        }
        let target = self.repo.clone_with_digest(digest.to_string());
        let name = target.whole();
        let inner = self.registry.inner.clone();
        let media_type = media_type.to_string();
        let digest = *digest;
        let bytes = self.registry.rt.block_on(async move {
            let manifest = What::Manifest {
                name: name.clone(),
                by_digest: true,
            };
            let blob = What::Blob { digest };
            if is_index(&media_type) || is_manifest(&media_type) {
                inner.pull_manifest(&target, &manifest).await
            } else if media_type.is_empty() {
                // Sloppy descriptor: a manifest most likely, else a blob.
                match inner.pull_manifest(&target, &manifest).await {
                    Ok(b) => Ok(b),
                    Err(e) => inner
                        .pull_small_blob(&target, &digest, &blob)
                        .await
                        .map_err(|_| e),
                }
            } else {
                inner.pull_small_blob(&target, &digest, &blob).await
            }
        })?;
        let found = Digest::of(&bytes);
        if found != digest {
            bail!(
                "registry {} sent {found} for {digest} of {}: the registry or a proxy in between is serving wrong data",
                self.repo.registry(),
                self.repo.repository()
            );
        }
        self.cas
            .put_bytes(&bytes)
            .with_context(|| format!("cannot store {digest} in the cache"))?;
        Ok(bytes)
    }
}

/// What a request was after, for error messages.
enum What {
    Manifest { name: String, by_digest: bool },
    Blob { digest: Digest },
}

impl Inner {
    fn auth_for(&self, r: &Reference) -> Result<(RegistryAuth, Origin)> {
        let found = self.store.lookup(r.registry())?;
        let auth = found
            .creds
            .as_ref()
            .map(|c| c.to_registry_auth())
            .unwrap_or(RegistryAuth::Anonymous);
        Ok((auth, found.origin))
    }

    /// Runs `op` until it succeeds, fails for good, or runs out of attempts.
    async fn retry<T, F, Fut>(&self, op: F) -> std::result::Result<T, (OciDistributionError, u32)>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = oci_client::errors::Result<T>>,
    {
        with_retries(self.attempts, op).await
    }

    async fn pull_manifest(&self, target: &Reference, what: &What) -> Result<Vec<u8>> {
        let (auth, origin) = self.auth_for(target)?;
        self.retry(|| self.client.pull_manifest_raw(target, &auth, MANIFEST_TYPES))
            .await
            .map(|(bytes, _)| bytes.to_vec())
            .map_err(|(e, n)| self.explain(e, n, target, what, &origin))
    }

    /// A config or similar small blob, read whole (the caller checks its digest too).
    async fn pull_small_blob(
        &self,
        target: &Reference,
        digest: &Digest,
        what: &What,
    ) -> Result<Vec<u8>> {
        let (auth, origin) = self.auth_for(target)?;
        self.client
            .store_auth_if_needed(target.resolve_registry(), &auth)
            .await;
        let d = digest.to_string();
        self.retry(|| async {
            let mut stream = self.client.pull_blob_stream(target, d.as_str()).await?;
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
        .map_err(|(e, n)| self.explain(e, n, target, what, &origin))
    }

    async fn fetch_one(
        &self,
        cas: &Cas,
        r: &Reference,
        b: &Blob,
        bar: &Bar,
        origin: &Origin,
    ) -> Result<u64> {
        let mut restarted = false;
        loop {
            self.download(cas, r, b, bar, origin).await?;
            let (c, d, size) = (cas.clone(), b.digest, b.size);
            let checked = tokio::task::spawn_blocking(move || c.finish_partial(&d, size))
                .await
                .context("the hashing task failed")?;
            match checked {
                Ok(()) => {
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
                }) => bail!(
                    "blob {} of {}/{} is corrupt: expected {} ({} bytes), found {found} ({found_size} bytes), twice in a row; the registry (or a proxy in between) serves wrong data for it: push the image again or tell the registry's operator",
                    b.digest,
                    r.registry(),
                    r.repository(),
                    b.digest,
                    b.size
                ),
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
    /// server sends too much; the caller's check then fails).
    async fn download(
        &self,
        cas: &Cas,
        r: &Reference,
        b: &Blob,
        bar: &Bar,
        origin: &Origin,
    ) -> Result<()> {
        let digest = b.digest.to_string();
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
                return Ok(());
            }
            bar.set_position(have);
            let started = if have == 0 {
                self.client
                    .pull_blob_stream(r, digest.as_str())
                    .await
                    .map(|s| (s, true))
            } else {
                self.client
                    .pull_blob_stream_partial(r, digest.as_str(), have, None)
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
                    copy_stream(stream, &mut file, &mut have, b.size, bar)
                        .await
                        .map_err(local)?
                }
            };
            file.flush().await.map_err(local)?;
            drop(file);
            let e = match outcome {
                Ok(()) => return Ok(()),
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
            if failure.retryable() && failures < self.attempts {
                tokio::time::sleep(backoff(failures.max(1))).await;
                continue;
            }
            return Err(self.explain(
                e,
                failures.max(1),
                r,
                &What::Blob { digest: b.digest },
                origin,
            ));
        }
    }

    /// Turns an oci-client error into a sentence that names the thing at fault and
    /// what to do, keeping the original error as its cause.
    fn explain(
        &self,
        e: OciDistributionError,
        attempts: u32,
        r: &Reference,
        what: &What,
        origin: &Origin,
    ) -> anyhow::Error {
        let host = r.registry();
        let key = auth::normalize_host(host);
        let repo = r.repository();
        let tries = if attempts == 1 {
            "1 attempt".to_string()
        } else {
            format!("{attempts} attempts")
        };
        let subject = match what {
            What::Manifest { name, .. } => name.clone(),
            What::Blob { digest } => format!("blob {digest} of {host}/{repo}"),
        };
        let msg = match classify(&e) {
            Failure::Unreachable(reason) => {
                let hint = if self.insecure.contains(&key) {
                    "check the address, proxies and firewalls".to_string()
                } else {
                    format!("for plain HTTP pass --insecure-registry {host}")
                };
                format!("cannot reach registry {host} ({reason}) after {tries}: is it running? {hint}")
            }
            Failure::Tls(reason) => format!(
                "TLS connection to registry {host} failed ({reason}): if it serves plain HTTP, pass --insecure-registry {host}; if its certificate comes from a private CA, add that CA to the system's trust store"
            ),
            Failure::Status { code, detail } => {
                let status = status_text(code);
                match code {
                    401 | 403 => {
                        let hint = match origin {
                            Origin::Flag => format!(
                                "the credentials given with --registry-auth {key}=… were refused: check the user name and password, and that this user may pull {repo}"
                            ),
                            Origin::DockerConfig(p) => format!(
                                "the credentials for {key} in {} were refused: log in again with `docker login {key}` or pass --registry-auth {key}=USER:PASS",
                                p.display()
                            ),
                            Origin::Anonymous { note } => {
                                let mut h = format!(
                                    "pass --registry-auth {key}=USER:PASS or log in with `docker login {key}` (~/.docker/config.json)"
                                );
                                if let Some(n) = note {
                                    h.push_str(&format!(" (note: {n})"));
                                }
                                h
                            }
                        };
                        format!("registry {host} refused access to {repo} ({status}): {hint}")
                    }
                    404 => match what {
                        What::Manifest { .. } if detail.contains("name unknown") || detail.contains("repository name not known") => format!(
                            "repository {repo} does not exist in registry {host} ({detail}): check the name"
                        ),
                        What::Manifest { name, by_digest } => format!(
                            "{name} does not exist in the registry ({detail}): check the {}",
                            if *by_digest { "digest" } else { "tag" }
                        ),
                        What::Blob { digest } => format!(
                            "blob {digest} does not exist in {host}/{repo} ({detail}): the image is incomplete in the registry; push it again or tell the registry's operator"
                        ),
                    },
                    429 => format!(
                        "registry {host} is limiting requests ({status}) for {subject}, still after {tries}: wait and try again, or log in (--registry-auth {key}=USER:PASS) for a higher limit"
                    ),
                    c if c >= 500 || c == 408 => format!(
                        "registry {host} failed with {status} for {subject} after {tries} ({detail}): try again later, or tell the registry's operator"
                    ),
                    _ => format!("registry {host} answered {status} for {subject} ({detail})"),
                }
            }
            Failure::Digest(d) => format!(
                "registry {host} sent content for {subject} that does not match its digest ({d}): the registry or a proxy in between is serving wrong data"
            ),
            Failure::Other(m) => format!("request to registry {host} for {subject} failed: {m}"),
        };
        anyhow::Error::new(e).context(msg)
    }
}

/// Streams `stream` to the end of `file`. `Ok(Err(e))` is a network error (worth
/// a retry); `Err` is a local write error. A digest mismatch detected by
/// oci-client's verifying stream ends the copy normally: the cache's own check,
/// which follows, reports it with everything the user needs.
async fn copy_stream(
    mut stream: SizedStream,
    file: &mut tokio::fs::File,
    have: &mut u64,
    size: u64,
    bar: &Bar,
) -> std::io::Result<std::result::Result<(), OciDistributionError>> {
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                file.write_all(&bytes).await?;
                *have += bytes.len() as u64;
                bar.inc(bytes.len() as u64);
                if *have > size {
                    return Ok(Ok(()));
                }
            }
            Err(e) if digest_error_in(&e).is_some() => return Ok(Ok(())),
            Err(e) => return Ok(Err(OciDistributionError::IoError(e))),
        }
    }
    Ok(Ok(()))
}

/// Runs `op` until it succeeds, fails for good (see [`is_retryable`]), or has been
/// tried `attempts` times (at least once), sleeping [`backoff`] between attempts.
/// The error comes with the number of attempts made, for messages.
///
/// Shared by everything that talks to a registry (create's pulls, import's fleet
/// push), so all of them give up under the same rules.
pub(crate) async fn with_retries<T, F, Fut>(
    attempts: u32,
    mut op: F,
) -> std::result::Result<T, (OciDistributionError, u32)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = oci_client::errors::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < attempts && is_retryable(&e) => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err((e, attempt)),
        }
    }
}

/// Whether asking again may change the answer: connection errors, timeouts, broken
/// bodies, 5xx, 408 and 429 are worth another attempt; other 4xx, TLS and digest
/// errors are not.
pub(crate) fn is_retryable(e: &OciDistributionError) -> bool {
    classify(e).retryable()
}

/// What went wrong, in a few words (`connection reset`, `503 Service Unavailable
/// (…)`), for messages that name the registry and the thing at fault themselves.
pub(crate) fn failure_reason(e: &OciDistributionError) -> String {
    match classify(e) {
        Failure::Unreachable(r) | Failure::Other(r) => r,
        Failure::Tls(r) => format!("TLS: {r}"),
        Failure::Status { code, detail } => format!("{} ({detail})", status_text(code)),
        Failure::Digest(d) => format!("content does not match its digest: {d}"),
    }
}

fn backoff(attempt: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

fn parse_reference(reference: &str) -> Result<Reference> {
    Reference::from_str(reference.trim()).with_context(|| {
        format!("`{reference}` is not a valid image reference (expected e.g. registry.example.com/team/app:1.2 or …@sha256:<64 hex>)")
    })
}

fn parse_digest(d: &str, name: &str) -> Result<Digest> {
    d.parse::<Digest>()
        .with_context(|| format!("{name}: only sha256 digests are supported"))
}

fn status_text(code: u16) -> String {
    let reason = match code {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    };
    if reason.is_empty() {
        code.to_string()
    } else {
        format!("{code} {reason}")
    }
}

/// Why a request failed, as far as retrying and advice are concerned.
#[derive(Debug)]
enum Failure {
    /// Connection refused or reset, DNS, timeout, broken body: `reason` is short.
    Unreachable(String),
    /// TLS handshake or certificate problem.
    Tls(String),
    /// The registry answered with this status; `detail` is its message.
    Status { code: u16, detail: String },
    /// Content did not match its digest.
    Digest(String),
    /// Anything else.
    Other(String),
}

impl Failure {
    fn retryable(&self) -> bool {
        match self {
            Failure::Unreachable(_) => true,
            Failure::Status { code, .. } => *code >= 500 || *code == 429 || *code == 408,
            Failure::Tls(_) | Failure::Digest(_) | Failure::Other(_) => false,
        }
    }
}

fn classify(e: &OciDistributionError) -> Failure {
    match e {
        OciDistributionError::UnauthorizedError { .. } => Failure::Status {
            code: 401,
            detail: "unauthorized".into(),
        },
        OciDistributionError::AuthenticationFailure(m) => Failure::Status {
            code: 401,
            detail: m.trim().to_string(),
        },
        OciDistributionError::RegistryError { envelope, .. } => {
            let first = envelope.errors.first();
            let code = match first.map(|e| &e.code) {
                Some(OciErrorCode::Unauthorized) => 401,
                Some(OciErrorCode::Denied) => 403,
                Some(OciErrorCode::Toomanyrequests) => 429,
                Some(
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::NotFound,
                ) => 404,
                _ => 400,
            };
            let detail = first
                .map(|e| {
                    if e.message.is_empty() {
                        format!("{:?}", e.code)
                    } else {
                        e.message.clone()
                    }
                })
                .unwrap_or_else(|| "no details".into());
            Failure::Status { code, detail }
        }
        OciDistributionError::ServerError { code, message, .. } => Failure::Status {
            code: *code,
            detail: short(message),
        },
        OciDistributionError::DigestError(d) => Failure::Digest(d.to_string()),
        OciDistributionError::IoError(io) => match digest_error_in(io) {
            Some(d) => Failure::Digest(d.to_string()),
            // Errors of a blob body stream: the connection broke.
            None => network_failure(io, false),
        },
        OciDistributionError::RequestError(re) => {
            if let Some(s) = re.status() {
                return Failure::Status {
                    code: s.as_u16(),
                    detail: "no details".into(),
                };
            }
            let f = network_failure(re, re.is_timeout());
            match f {
                Failure::Other(m)
                    if re.is_connect() || re.is_body() || re.is_request() || re.is_decode() =>
                {
                    Failure::Unreachable(m)
                }
                f => f,
            }
        }
        other => Failure::Other(other.to_string()),
    }
}

/// Looks through an error chain (including errors wrapped in `io::Error`, whose
/// `source` skips them) for what went wrong on the wire.
fn network_failure(e: &(dyn StdError + 'static), timed_out: bool) -> Failure {
    let mut tls = None;
    let mut kind = None;
    let mut dns = false;
    let mut last = e.to_string();
    walk_chain(e, &mut |x| {
        if let Some(t) = x.downcast_ref::<rustls::Error>() {
            tls.get_or_insert_with(|| t.to_string());
        }
        if let Some(io) = x.downcast_ref::<std::io::Error>() {
            kind.get_or_insert(io.kind());
        }
        let text = x.to_string();
        if text.contains("dns error") {
            dns = true;
        }
        last = text;
    });
    if let Some(t) = tls {
        return Failure::Tls(t);
    }
    use std::io::ErrorKind as K;
    let reason = match kind {
        _ if timed_out => "timed out".to_string(),
        Some(K::ConnectionRefused) => "connection refused".into(),
        Some(K::ConnectionReset) => "connection reset".into(),
        Some(K::ConnectionAborted) => "connection aborted".into(),
        Some(K::TimedOut) => "timed out".into(),
        Some(K::UnexpectedEof) => "connection closed early".into(),
        _ if dns => format!("cannot resolve the host name: {last}"),
        _ => last,
    };
    if kind.is_some() || timed_out || dns {
        Failure::Unreachable(reason)
    } else {
        Failure::Other(reason)
    }
}

fn walk_chain(e: &(dyn StdError + 'static), f: &mut dyn FnMut(&(dyn StdError + 'static))) {
    let mut cur = Some(e);
    while let Some(x) = cur {
        f(x);
        if let Some(inner) = x
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            walk_chain(inner, f);
            return;
        }
        cur = x.source();
    }
}

fn digest_error_in(e: &std::io::Error) -> Option<&DigestError> {
    e.get_ref().and_then(|i| i.downcast_ref::<DigestError>())
}

fn short(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        return "no details".into();
    }
    let mut out: String = s.chars().take(200).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(40), BACKOFF_MAX);
    }

    #[test]
    fn status_classes() {
        let s = |code| Failure::Status {
            code,
            detail: String::new(),
        };
        assert!(s(503).retryable() && s(429).retryable() && s(408).retryable());
        assert!(!s(404).retryable() && !s(401).retryable() && !s(403).retryable());
        assert!(Failure::Unreachable("x".into()).retryable());
        assert!(!Failure::Tls("x".into()).retryable());
    }

    fn server_error(code: u16) -> OciDistributionError {
        OciDistributionError::ServerError {
            code,
            url: "http://127.0.0.1/v2/".into(),
            message: String::new(),
        }
    }

    /// Runs `with_retries` over canned answers; returns its result and the calls made.
    fn run_retries(
        attempts: u32,
        answers: Vec<oci_client::errors::Result<u8>>,
    ) -> (std::result::Result<u8, (OciDistributionError, u32)>, usize) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let answers = std::sync::Mutex::new(answers.into_iter());
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let r = rt.block_on(with_retries(attempts, || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = answers.lock().unwrap().next().expect("an answer per call");
            async move { next }
        }));
        (r, calls.into_inner())
    }

    #[test]
    fn with_retries_asks_again_only_while_it_may_help() {
        // Two 503s, then success: three calls.
        let (r, calls) = run_retries(
            5,
            vec![Err(server_error(503)), Err(server_error(503)), Ok(7)],
        );
        assert_eq!((r.unwrap(), calls), (7, 3));
        // A 401 is final at once, and says it took one attempt.
        let (r, calls) = run_retries(5, vec![Err(server_error(401)), Ok(7)]);
        let (e, n) = r.unwrap_err();
        assert!(!is_retryable(&e));
        assert_eq!((n, calls), (1, 1));
        // Out of attempts: the last error, with the count.
        let (r, calls) = run_retries(2, vec![Err(server_error(502)), Err(server_error(429))]);
        let (e, n) = r.unwrap_err();
        assert!(matches!(
            e,
            OciDistributionError::ServerError { code: 429, .. }
        ));
        assert_eq!((n, calls), (2, 2));
        assert_eq!(
            failure_reason(&server_error(503)),
            "503 Service Unavailable (no details)"
        );
        // Zero means one attempt, not none.
        let (r, calls) = run_retries(0, vec![Err(server_error(500))]);
        assert_eq!((r.unwrap_err().1, calls), (1, 1));
    }

    #[test]
    fn docker_hub_short_names_normalize() {
        assert_eq!(
            parse_reference("alpine").unwrap().whole(),
            "docker.io/library/alpine:latest"
        );
        assert!(parse_reference("has space:1").is_err());
    }
}
