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
//! path there. Today each reference has one route, the registry itself (Docker Hub
//! at [`DOCKER_HUB_API`](crate::oci::reference::DOCKER_HUB_API)); registry mirrors
//! (K3s's `registries.yaml`) become more routes from [`Client::route`], tried in
//! order, without any name changing. `oci-client` only ever sees a route (its
//! `Reference` is built from one by [`Route::tagged`] and [`Route::by_digest`]), so
//! its own Docker Hub mapping never applies.
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
//! **TLS.** rustls with ring, the system's roots plus the settings' CA files.
//! Per-host TLS (a client certificate for one mirror, a CA for another) is one
//! `oci-client` client per distinct TLS setting; [`Client::transport`] is where a
//! route picks its client, and there is one today.
//!
//! **Credentials** are looked up per route ([`Client::credentials`], by the host
//! the route connects to), so a mirror gets its own. **Proxies**: reqwest, under
//! `oci-client`, takes `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` from the
//! environment by default; proxies from settings would be `ClientConfig`'s
//! `https_proxy`/`no_proxy`, set in [`Client::new`].

use std::collections::BTreeSet;
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

/// Time allowed to open a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Silence allowed on an open connection (see the module documentation).
pub const READ_TIMEOUT: Duration = Duration::from_secs(120);
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const USER_AGENT: &str = concat!("gapbundle/", env!("CARGO_PKG_VERSION"));

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
    /// `oci-client` refused the configuration (a certificate it cannot load).
    #[error("cannot set up the HTTP client for registries: {0}")]
    Http(#[source] OciDistributionError),
}

impl crate::error::Classify for ClientError {
    /// A CA file that cannot be used is bad input; anything else is this program's
    /// own trouble.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        match self {
            ClientError::CaUnreadable { .. } | ClientError::CaNotPem { .. } => {
                Some(crate::error::ErrorClass::Input)
            }
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
}

impl Route {
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

/// The registry client: cheap to clone into tasks (everything is shared).
#[derive(Clone)]
pub struct Client {
    oci: oci_client::Client,
    credentials: Arc<auth::Store>,
    /// Normalised hosts reached over plain HTTP.
    plain_http: Arc<BTreeSet<String>>,
    attempts: u32,
    ca_flag: Option<&'static str>,
}

impl Client {
    /// Sets up TLS, the HTTP client and the credentials from `settings`.
    pub fn new(settings: &Settings) -> Result<Client, ClientError> {
        // reqwest is built without a default crypto provider; ring is ours. A
        // second call finds one installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let plain_http: BTreeSet<String> = settings
            .insecure_hosts
            .iter()
            .map(|h| normalize_host(h))
            .filter(|h| !h.is_empty())
            .collect();
        let mut extra = Vec::new();
        for path in &settings.ca_files {
            let data = fs_err::read(path).map_err(|source| ClientError::CaUnreadable {
                path: path.clone(),
                source,
            })?;
            if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----") {
                return Err(ClientError::CaNotPem { path: path.clone() });
            }
            extra.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let config = ClientConfig {
            // Routes always name their endpoint, so this is the exact list of
            // endpoints spoken to over plain HTTP.
            protocol: ClientProtocol::HttpsExcept(
                plain_http.iter().map(|h| api_host(h).to_string()).collect(),
            ),
            extra_root_certificates: extra,
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
        let oci = oci_client::Client::try_from(config).map_err(ClientError::Http)?;
        Ok(Client {
            oci,
            credentials: Arc::new(auth::Store::load(
                &settings.credentials,
                settings.docker_config.as_deref(),
            )),
            plain_http: Arc::new(plain_http),
            attempts: settings.retries.max(1),
            ca_flag: settings.ca_flag,
        })
    }

    /// The route to `reference`'s repository: today its own registry.
    pub fn route(&self, reference: &Reference) -> Route {
        self.route_to(reference.domain(), reference.path())
    }

    /// The route to `repository` on `host` (as a user writes it: `10.0.0.1:5000`,
    /// `https://reg.example/`).
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
        }
    }

    /// The `oci-client` client that serves `route`.
    pub fn transport(&self, _route: &Route) -> &oci_client::Client {
        &self.oci
    }

    /// Credentials for `route` and where they came from. Fails when the Docker
    /// config cannot be read, or a credential helper would be in charge.
    pub fn credentials(&self, route: &Route) -> anyhow::Result<(RegistryAuth, Origin)> {
        // A Docker config that cannot be read, or a helper in charge: bad input.
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
            },
        )
    }
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
        let hub = c.route(&Reference::parse("redis:8").unwrap());
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
            c.route(&Reference::parse("index.docker.io/a/b").unwrap())
                .endpoint,
            "registry-1.docker.io"
        );
        let local = c.route(&Reference::parse("127.0.0.1:5000/team/app").unwrap());
        assert!(local.plain_http);
        assert_eq!(local.endpoint, "127.0.0.1:5000");
        let d = Digest::of(b"x");
        assert_eq!(
            local.by_digest(&d).whole(),
            format!("127.0.0.1:5000/team/app@{d}")
        );
        let tls = c.route(&Reference::parse("ghcr.io/org/app:1").unwrap());
        assert!(!tls.plain_http);
        assert_eq!(
            c.route_to("https://10.0.0.1:5000/", "team/app").host,
            "10.0.0.1:5000"
        );
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
