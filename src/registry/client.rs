//! The one HTTP client for registries: TLS, timeouts, plain HTTP, routes,
//! credentials and retries, shared by pulls and pushes.
//!
//! A [`Client`] is built once per command from [`Settings`]; pulls
//! (`resolve::registry`) and pushes (`import::push`) then call `oci-client` through
//! it, so both get the same roots of trust, the same timeouts, the same plain-HTTP
//! rule and the same retry rule.
//!
//! **Names versus routes.** An image is always called by its upstream
//! [`Reference`] (`docker.io/library/redis:8`); how its bytes are fetched is a
//! [`Route`]: the endpoint to connect to, over plain HTTP or TLS, and the repository
//! path there. [`Client::routes`] gives a reference's routes in the order to try
//! them: the mirrors K3s's `registries.yaml` lists for its registry (rewritten as
//! [`crate::oci::registries`] says), then the registry itself (Docker Hub at
//! [`DOCKER_HUB_API`](crate::oci::reference::DOCKER_HUB_API)) unless the default
//! endpoint is disabled. No name changes on the way. `oci-client` only ever sees a
//! route (its `Reference` is built from one by [`Route::tagged`] and
//! [`Route::by_digest`]), so its own Docker Hub mapping never applies.
//!
//! **Timeouts.** 15 s to connect; 120 s of silence on an open connection. The read
//! timeout is the longest pause a healthy registry makes, and that is the answer to
//! the last request of a large monolithic push: a registry on object storage
//! (distribution on S3, Harbor) moves the upload into place before it answers,
//! which takes tens of seconds for a blob of several GiB. A stalled pull is noticed
//! after 120 s instead of a minute, and costs little: the retry resumes from the
//! bytes already in the cache.
//!
//! **Retries.** [`with_retries`] runs a request until it succeeds, fails for good
//! ([`Failure::retryable`](super::errors::Failure::retryable)), or has been tried
//! `retries` times, sleeping [`backoff`] (200 ms doubling, capped at 10 s) between
//! attempts. Resumable downloads count attempts their own way (only failures that
//! brought no new bytes) but use the same rule and backoff.
//!
//! **TLS.** rustls with ring. Roots are the system's (rustls-platform-verifier
//! under reqwest: the system store, `SSL_CERT_FILE` and `SSL_CERT_DIR`) plus the
//! settings' CA files (`--registry-ca`); `--registry-cert`/`--registry-key` is a
//! client certificate for every registry that asks for one. `configs.<host>.tls` of
//! the registries file adds a CA, a client certificate or `insecure_skip_verify`
//! for one host: each distinct TLS setting is one `oci-client` client, and
//! [`Client::transport`] is where a route picks its client (the one of the host it
//! connects to, else the default one).
//!
//! **Credentials** are looked up per route ([`Client::credentials`], by the host
//! the route connects to), so a mirror gets its own. **Proxies**: reqwest, under
//! `oci-client`, takes `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` from
//! the environment for every request, loopback addresses included (Go tools such as
//! Helm skip those); [`proxy_for`] asks the same matcher which proxy a route goes
//! through, for the messages.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;

use super::auth::{self, normalize_host, Origin};
use super::errors::{self, Request, What};
use super::Settings;
use crate::bundle::Digest;
use crate::error::InputFailure;
use crate::oci::reference::{api_host, Reference};
use crate::oci::registries::{Registries, Tls};

/// Time allowed to open a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Silence allowed on an open connection (see the module documentation).
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
pub(super) const USER_AGENT: &str = concat!("gapbundle/", env!("CARGO_PKG_VERSION"));

/// Why a client cannot be set up from its settings.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A CA file cannot be read.
    #[error("cannot read the CA certificate file {path}: {source}")]
    CaUnreadable {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A CA file holds no PEM certificate.
    #[error("{path} is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    CaNotPem {
        /// The file.
        path: std::path::PathBuf,
    },
    /// A client certificate or its key cannot be read or used.
    #[error("cannot use the client certificate {cert} with the key {key}: {why} (give PEM files: the certificate, then its unencrypted private key)")]
    ClientCert {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        why: String,
    },
    /// `oci-client` refused the configuration (a certificate it cannot load).
    #[error("cannot set up the HTTP client for registries: {0}")]
    Http(#[source] OciDistributionError),
}

impl crate::error::Classify for ClientError {
    /// A CA file that cannot be used is bad input; anything else is this program's
    /// own trouble.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        match self {
            ClientError::CaUnreadable { .. }
            | ClientError::CaNotPem { .. }
            | ClientError::ClientCert { .. } => Some(crate::error::ErrorClass::Input),
            ClientError::Http(_) => Some(crate::error::ErrorClass::Other),
        }
    }
}

/// How the bytes of one repository are fetched (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    /// The registry as the user knows it, for messages and for finding credentials:
    /// `docker.io`, `127.0.0.1:5000`.
    pub host: String,
    /// Where requests go: `registry-1.docker.io`, `127.0.0.1:5000`.
    pub endpoint: String,
    /// Plain HTTP instead of TLS.
    pub plain_http: bool,
    /// The repository path at the endpoint: `library/redis`.
    pub repository: String,
    /// The registry a mirror stands in for (`docker.io`); `None` when the route goes
    /// to the registry itself.
    pub mirror_of: Option<String>,
}

impl Route {
    /// How messages name where the route goes: `registry ghcr.io`, `mirror
    /// 10.0.0.5:5000 (for docker.io)`.
    pub fn describe(&self) -> String {
        match &self.mirror_of {
            Some(upstream) => format!("mirror {} (for {upstream})", self.host),
            None => format!("registry {}", self.host),
        }
    }

    /// The `--registry-auth` key of [`Self::host`].
    pub fn key(&self) -> String {
        normalize_host(&self.host)
    }

    /// `oci-client`'s reference to `tag` on this route.
    pub fn tagged(&self, tag: &str) -> oci_client::Reference {
        oci_client::Reference::with_tag(
            self.endpoint.clone(),
            self.repository.clone(),
            tag.to_string(),
        )
    }

    /// `oci-client`'s reference to `digest` on this route.
    pub fn by_digest(&self, digest: &Digest) -> oci_client::Reference {
        oci_client::Reference::with_digest(
            self.endpoint.clone(),
            self.repository.clone(),
            digest.to_string(),
        )
    }

    /// The same endpoint, another repository (a push mounts blobs across them).
    pub fn with_repository(&self, repository: &str) -> Route {
        Route {
            repository: repository.to_string(),
            ..self.clone()
        }
    }
}

/// Where a reference's bytes are fetched from and how: the routes and the TLS
/// setting of each host, from the settings alone (no HTTP client). The registry
/// [`Client`] and chart pulls (which run Helm) share it.
#[derive(Debug, Clone)]
pub struct Router {
    registries: Option<Arc<Registries>>,
    default_endpoint: bool,
    /// Normalised hosts reached over plain HTTP.
    plain_http: Arc<BTreeSet<String>>,
    ca_files: Vec<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

/// The TLS a route's host gets: CA files beside the system's roots, a client
/// certificate, whether the certificate is checked at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostTls {
    /// `--registry-ca` files, then the host's `ca_file`.
    pub ca_files: Vec<PathBuf>,
    /// The host's client certificate and key, else `--registry-cert`/`--registry-key`.
    pub client: Option<(PathBuf, PathBuf)>,
    /// `insecure_skip_verify`.
    pub insecure: bool,
}

impl Router {
    /// The routing of `settings`.
    pub fn new(settings: &Settings) -> Router {
        let mut plain_http: BTreeSet<String> = settings
            .insecure_hosts
            .iter()
            .map(|h| normalize_host(h))
            .filter(|h| !h.is_empty())
            .collect();
        if let Some(r) = &settings.registries {
            plain_http.extend(
                r.endpoints()
                    .filter(|e| e.plain_http)
                    .map(|e| normalize_host(&e.host)),
            );
        }
        Router {
            registries: settings.registries.clone(),
            default_endpoint: settings.default_endpoint,
            plain_http: Arc::new(plain_http),
            ca_files: settings.ca_files.clone(),
            client_cert: settings.client_cert.clone(),
        }
    }

    /// The routes to `reference`'s repository, in the order to try them: its
    /// mirrors, then its registry (see the module documentation). Never empty.
    pub fn routes(&self, reference: &Reference) -> Vec<Route> {
        let Some(r) = &self.registries else {
            return vec![self.route_to(reference.domain(), reference.path())];
        };
        r.sources(reference.domain(), reference.path(), self.default_endpoint)
            .into_iter()
            .map(|s| match s.mirror_of {
                // The registry itself: named as the reference names it.
                None => self.route_to(reference.domain(), &s.repository),
                Some(upstream) => {
                    let key = normalize_host(&s.host);
                    Route {
                        endpoint: s.host.clone(),
                        plain_http: s.plain_http || self.plain_http.contains(&key),
                        host: s.host,
                        repository: s.repository,
                        mirror_of: Some(upstream),
                    }
                }
            })
            .collect()
    }

    /// The route to `repository` on `host` itself (as a user writes it:
    /// `10.0.0.1:5000`, `https://reg.example/`), with no mirror.
    pub fn route_to(&self, host: &str, repository: &str) -> Route {
        let key = normalize_host(host);
        Route {
            endpoint: api_host(&key).to_string(),
            plain_http: self.plain_http.contains(&key),
            host: host
                .trim()
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            repository: repository.to_string(),
            mirror_of: None,
        }
    }

    /// Whether `host` is spoken to over plain HTTP (`--insecure-registry`, or an
    /// `http://` endpoint).
    pub fn is_plain_http(&self, host: &str) -> bool {
        self.plain_http.contains(&normalize_host(host))
    }

    /// The host's own `configs.<host>.tls`, if the registries file has one.
    fn own_tls(&self, host: &str) -> Option<&Tls> {
        self.registries
            .as_ref()
            .and_then(|r| r.config(host))
            .and_then(|c| c.tls.as_ref())
    }

    /// The TLS `host` gets (see [`HostTls`]).
    pub fn tls(&self, host: &str) -> HostTls {
        let own = self.own_tls(host);
        HostTls {
            ca_files: self
                .ca_files
                .iter()
                .cloned()
                .chain(own.and_then(|t| t.ca_file.clone()))
                .collect(),
            client: own
                .and_then(|t| t.client.clone())
                .or_else(|| self.client_cert.clone()),
            insecure: own.is_some_and(|t| t.insecure_skip_verify),
        }
    }

    /// The registries file in use, if any.
    pub fn registries(&self) -> Option<&Registries> {
        self.registries.as_deref()
    }
}

/// The registry client: cheap to clone into tasks (everything is shared).
#[derive(Clone)]
pub struct Client {
    /// `[0]`: the default TLS setting; then one per distinct `configs.<host>.tls`.
    transports: Arc<Vec<oci_client::Client>>,
    /// Which transport serves each distinct per-host TLS setting.
    tls: Arc<Vec<(Tls, usize)>>,
    router: Router,
    credentials: Arc<auth::Store>,
    attempts: u32,
    ca_flag: Option<&'static str>,
}

impl Client {
    /// Sets up TLS, the HTTP clients and the credentials from `settings`.
    pub fn new(settings: &Settings) -> Result<Client, ClientError> {
        // reqwest is built without a default crypto provider; ring is ours. A
        // second call finds one installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let router = Router::new(settings);
        // Routes always name their endpoint, so this is the exact list of
        // endpoints spoken to over plain HTTP.
        let protocol = || {
            ClientProtocol::HttpsExcept(
                router
                    .plain_http
                    .iter()
                    .map(|h| api_host(h).to_string())
                    .collect(),
            )
        };
        let global = HostTls {
            ca_files: settings.ca_files.clone(),
            client: settings.client_cert.clone(),
            insecure: false,
        };
        let mut transports = vec![transport(settings, protocol(), &global)?];
        let mut tls = Vec::new();
        if let Some(r) = &settings.registries {
            for t in r.tls_settings() {
                let own = HostTls {
                    ca_files: settings
                        .ca_files
                        .iter()
                        .cloned()
                        .chain(t.ca_file.clone())
                        .collect(),
                    client: t.client.clone().or_else(|| settings.client_cert.clone()),
                    insecure: t.insecure_skip_verify,
                };
                transports.push(transport(settings, protocol(), &own)?);
                tls.push((t.clone(), transports.len() - 1));
            }
        }
        Ok(Client {
            transports: Arc::new(transports),
            tls: Arc::new(tls),
            router,
            credentials: Arc::new(auth::Store::load(settings)),
            attempts: settings.retries.max(1),
            ca_flag: settings.ca_flag,
        })
    }

    /// The routes to `reference`'s repository, in the order to try them (see
    /// [`Router::routes`]).
    pub fn routes(&self, reference: &Reference) -> Vec<Route> {
        self.router.routes(reference)
    }

    /// The route to `repository` on `host` itself, with no mirror (see
    /// [`Router::route_to`]).
    pub fn route_to(&self, host: &str, repository: &str) -> Route {
        self.router.route_to(host, repository)
    }

    /// The `oci-client` client that serves `route`: the one of its host's TLS
    /// setting in the registries file, else the default one.
    pub fn transport(&self, route: &Route) -> &oci_client::Client {
        let own = self
            .router
            .own_tls(&route.host)
            .and_then(|t| self.tls.iter().find(|(s, _)| s == t))
            .map_or(0, |(_, i)| *i);
        &self.transports[own]
    }

    /// Credentials for `route` and where they came from. Fails when a credentials
    /// file cannot be read, or a credential helper fails.
    pub fn credentials(&self, route: &Route) -> anyhow::Result<(RegistryAuth, Origin)> {
        // A credentials file that cannot be read, or a helper that fails: bad input.
        let found = self
            .credentials
            .lookup(&route.host)
            .map_err(|e| InputFailure(format!("{e:#}")))?;
        let auth = found
            .creds
            .as_ref()
            .map(|c| c.to_registry_auth())
            .unwrap_or(RegistryAuth::Anonymous);
        Ok((auth, found.origin))
    }

    /// Attempts per request.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Runs `op` under the retry rule (see [`with_retries`]).
    pub async fn retry<T, F, Fut>(&self, op: F) -> Result<T, (OciDistributionError, u32)>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = oci_client::errors::Result<T>>,
    {
        with_retries(self.attempts, op).await
    }

    /// The error for a request to `route` after `attempts` attempts (see
    /// [`errors::explain`]).
    pub fn explain(
        &self,
        e: &OciDistributionError,
        route: &Route,
        what: &What,
        attempts: u32,
        origin: &Origin,
    ) -> anyhow::Error {
        errors::explain(
            e,
            &Request {
                route,
                what,
                attempts,
                origin,
                ca_flag: self.ca_flag,
                registries: self.router.registries().map(|r| r.source_name.as_str()),
                client_cert: self.router.tls(&route.host).client.is_some(),
            },
        )
    }
}

/// The PEM bytes of the CA file `path` (`--registry-ca`, a registries file's
/// `ca_file`), refused with its path when it cannot be read or holds no
/// certificate.
pub(super) fn read_ca(path: &Path) -> Result<Vec<u8>, ClientError> {
    let data = fs_err::read(path).map_err(|source| ClientError::CaUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----") {
        return Err(ClientError::CaNotPem {
            path: path.to_path_buf(),
        });
    }
    Ok(data)
}

/// One `oci-client` client with the settings' timeouts and `tls`.
fn transport(
    settings: &Settings,
    protocol: ClientProtocol,
    tls: &HostTls,
) -> Result<oci_client::Client, ClientError> {
    let mut extra = Vec::new();
    for path in &tls.ca_files {
        extra.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data: read_ca(path)?,
        });
    }
    let client_identity = match &tls.client {
        None => None,
        Some((cert, key)) => Some(identity(cert, key)?),
    };
    let config = ClientConfig {
        protocol,
        extra_root_certificates: extra,
        accept_invalid_certificates: tls.insecure,
        client_identity,
        // Blobs are pushed as one streamed upload each; pulls never use
        // oci-client's own platform choice.
        use_monolithic_push: true,
        platform_resolver: None,
        max_concurrent_download: settings.jobs.max(1),
        connect_timeout: Some(CONNECT_TIMEOUT),
        read_timeout: Some(READ_TIMEOUT),
        user_agent: USER_AGENT,
        ..ClientConfig::default()
    };
    // `Client::new` would fall back to a default (HTTPS-only) client on error.
    oci_client::Client::try_from(config).map_err(|e| match &tls.client {
        // The identity is the one part of the configuration a user gives.
        Some((cert, key)) => ClientError::ClientCert {
            cert: cert.clone(),
            key: key.clone(),
            why: errors::error_text(&e),
        },
        None => ClientError::Http(e),
    })
}

/// A client certificate and its key as one PEM buffer, checked for both parts.
fn identity(cert: &Path, key: &Path) -> Result<Vec<u8>, ClientError> {
    let bad = |why: String| ClientError::ClientCert {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        why,
    };
    let read = |p: &Path| fs_err::read(p).map_err(|e| bad(e.to_string()));
    let (c, k) = (read(cert)?, read(key)?);
    if !String::from_utf8_lossy(&c).contains("-----BEGIN CERTIFICATE-----") {
        return Err(bad(format!("{} holds no PEM certificate", cert.display())));
    }
    if !String::from_utf8_lossy(&k).contains("PRIVATE KEY-----") {
        return Err(bad(format!("{} holds no PEM private key", key.display())));
    }
    let mut pem = c;
    pem.push(b'\n');
    pem.extend_from_slice(&k);
    Ok(pem)
}

/// The proxy a request to `route` goes through, as reqwest decides it from
/// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (upper or lower case),
/// and the variable that names it for that scheme; `None`: a direct connection.
pub fn proxy_for(route: &Route) -> Option<(String, &'static str)> {
    let (scheme, var) = if route.plain_http {
        ("http", "HTTP_PROXY")
    } else {
        ("https", "HTTPS_PROXY")
    };
    let uri: http::Uri = format!("{scheme}://{}/v2/", route.endpoint).parse().ok()?;
    let proxy = hyper_util::client::proxy::matcher::Matcher::from_env().intercept(&uri)?;
    // Without a user name or password the proxy URL may carry.
    let u = proxy.uri();
    let host = u.host().unwrap_or_default();
    let shown = match u.port_u16() {
        Some(p) => format!("{}://{host}:{p}", u.scheme_str().unwrap_or("http")),
        None => format!("{}://{host}", u.scheme_str().unwrap_or("http")),
    };
    Some((shown, var))
}

/// A runtime for a client's requests, named after what it does.
pub fn runtime(threads: usize, name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
}

/// Runs `op` until it succeeds, fails for good (see [`errors::is_retryable`]), or
/// has been tried `attempts` times (at least once), sleeping [`backoff`] between
/// attempts. The error comes with the number of attempts made, for messages.
pub async fn with_retries<T, F, Fut>(
    attempts: u32,
    mut op: F,
) -> Result<T, (OciDistributionError, u32)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = oci_client::errors::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < attempts && errors::is_retryable(&e) => {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err((e, attempt)),
        }
    }
}

/// The pause after failed attempt `attempt` (1-based): 200 ms doubling, at most 10 s.
pub fn backoff(attempt: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "test fixtures: std::fs and the tools that make them, where a failure is the test's"
)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(40), BACKOFF_MAX);
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
    ) -> (Result<u8, (OciDistributionError, u32)>, usize) {
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
        assert!(!errors::is_retryable(&e));
        assert_eq!((n, calls), (1, 1));
        // Out of attempts: the last error, with the count.
        let (r, calls) = run_retries(2, vec![Err(server_error(502)), Err(server_error(429))]);
        let (e, n) = r.unwrap_err();
        assert!(matches!(
            e,
            OciDistributionError::ServerError { code: 429, .. }
        ));
        assert_eq!((n, calls), (2, 2));
        // Zero means one attempt, not none.
        let (r, calls) = run_retries(0, vec![Err(server_error(500))]);
        assert_eq!((r.unwrap_err().1, calls), (1, 1));
    }

    #[test]
    fn routes_name_the_endpoint_and_the_transport() {
        let settings = Settings {
            insecure_hosts: vec!["http://127.0.0.1:5000/".into(), "docker.io".into()],
            docker_config: Some("/nonexistent/config.json".into()),
            ..Settings::default()
        };
        let c = Client::new(&settings).unwrap();
        let hub = c.routes(&Reference::parse("redis:8").unwrap()).remove(0);
        assert_eq!(
            (
                hub.host.as_str(),
                hub.endpoint.as_str(),
                hub.repository.as_str()
            ),
            ("docker.io", "registry-1.docker.io", "library/redis")
        );
        assert!(hub.plain_http);
        assert_eq!(
            hub.tagged("8").whole(),
            "registry-1.docker.io/library/redis:8"
        );
        // The legacy name is the same registry.
        assert_eq!(
            c.routes(&Reference::parse("index.docker.io/a/b").unwrap())[0].endpoint,
            "registry-1.docker.io"
        );
        let local = c
            .routes(&Reference::parse("127.0.0.1:5000/team/app").unwrap())
            .remove(0);
        assert!(local.plain_http);
        assert_eq!(local.endpoint, "127.0.0.1:5000");
        let d = Digest::of(b"x");
        assert_eq!(
            local.by_digest(&d).whole(),
            format!("127.0.0.1:5000/team/app@{d}")
        );
        let tls = c
            .routes(&Reference::parse("ghcr.io/org/app:1").unwrap())
            .remove(0);
        assert!(!tls.plain_http);
        assert_eq!(
            c.route_to("https://10.0.0.1:5000/", "team/app").host,
            "10.0.0.1:5000"
        );
    }

    #[test]
    fn mirrors_are_routes_and_pick_their_own_transport() {
        let dir = tempfile::tempdir().unwrap();
        let r = crate::oci::registries::Registries::parse(
            "registries.yaml",
            dir.path(),
            "mirrors:\n  docker.io:\n    endpoint: [\"http://m.corp:5000\", \"https://t.corp\"]\n    rewrite: {\"^library/(.*)\": \"hub/$1\"}\nconfigs:\n  t.corp:\n    tls: {insecure_skip_verify: true}\n",
        )
        .unwrap();
        let settings = Settings {
            registries: Some(Arc::new(r)),
            docker_config: Some("/nonexistent/config.json".into()),
            ..Settings::default()
        };
        let c = Client::new(&settings).unwrap();
        let routes = c.routes(&Reference::parse("redis:8").unwrap());
        let seen: Vec<(&str, &str, bool, Option<&str>)> = routes
            .iter()
            .map(|r| {
                (
                    r.endpoint.as_str(),
                    r.repository.as_str(),
                    r.plain_http,
                    r.mirror_of.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("m.corp:5000", "hub/redis", true, Some("docker.io")),
                ("t.corp", "hub/redis", false, Some("docker.io")),
                ("registry-1.docker.io", "library/redis", false, None),
            ]
        );
        assert_eq!(routes[0].describe(), "mirror m.corp:5000 (for docker.io)");
        assert_eq!(routes[2].describe(), "registry docker.io");
        // t.corp has a TLS setting of its own: its own client.
        assert_eq!(c.transports.len(), 2);
        assert!(std::ptr::eq(c.transport(&routes[0]), &c.transports[0]));
        assert!(std::ptr::eq(c.transport(&routes[1]), &c.transports[1]));
    }

    #[test]
    fn a_ca_file_must_be_pem() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("ca.der");
        std::fs::write(&bad, [0x30u8, 0x82, 1, 2]).unwrap();
        let settings = Settings {
            ca_files: vec![bad.clone()],
            ..Settings::default()
        };
        let e = Client::new(&settings).err().expect("refused");
        assert!(matches!(e, ClientError::CaNotPem { .. }), "{e}");
        assert!(e.to_string().contains(&bad.display().to_string()));
        let settings = Settings {
            ca_files: vec![dir.path().join("absent.pem")],
            ..Settings::default()
        };
        let e = Client::new(&settings).err().expect("refused");
        assert!(e.to_string().contains("absent.pem"), "{e}");
    }
}
