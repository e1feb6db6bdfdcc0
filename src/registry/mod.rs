//! Talking to OCI registries, for pulls (`create`) and pushes (`import --registry`).
//!
//! Two commands talk to registries, and before this module they each built their own
//! TLS setup, HTTP client, plain-HTTP rule, runtime and credential store, and had
//! drifted apart (different timeouts, only one mapped Docker Hub's host, two sets
//! of error messages). Now there is one of each:
//!
//! - [`client`]: the [`Client`] (TLS, timeouts, plain HTTP, routes, credentials,
//!   the retry rule) and the runtime it runs on;
//! - [`auth`]: where credentials come from (`--registry-auth`, K3s's
//!   `registries.yaml`, Docker's `config.json` and its credential helpers, Podman's
//!   `auth.json`);
//! - [`errors`]: what a failed request means, one sentence of advice for it, and
//!   which failures are worth another attempt;
//! - [`http`]: a plain HTTP client with the same TLS, timeouts and proxies, for
//!   files downloaded by URL.
//!
//! What is specific to one direction stays with it: downloading into the cache
//! (resumable, verified) in `resolve::registry`, streaming a bundle's blobs out in
//! `import::push`. Names come from [`crate::oci::reference`]; this module only
//! decides how to reach them. It takes plain [`Settings`], never command-line types.

pub mod auth;
pub mod client;
pub mod errors;
pub mod http;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use auth::Credentials;
pub use client::{Client, ClientError, Route};

use crate::oci::registries::{Registries, RegistriesError};

/// How to talk to registries: what the command line and environment resolved to.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Hosts (`host[:port]`) reached over plain HTTP (`--insecure-registry`).
    pub insecure_hosts: Vec<String>,
    /// Credentials per host (`--registry-auth HOST=USER:PASS`, see
    /// [`auth::parse_registry_auth`]); they win over Docker's config file.
    pub credentials: Vec<(String, Credentials)>,
    /// Docker's `config.json` to read logins from; `None` means
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. A file that does
    /// not exist means no logins.
    pub docker_config: Option<PathBuf>,
    /// Podman's `auth.json` to read logins from after Docker's
    /// ([`auth::default_podman_auth`]); `None`: none.
    pub podman_auth: Option<PathBuf>,
    /// K3s's `registries.yaml` (`--registries`): mirrors, rewrites, and per-host
    /// credentials and TLS.
    pub registries: Option<Arc<Registries>>,
    /// Whether a registry with a mirror entry is also tried at its own endpoint
    /// after the mirrors (K3s's default; `--disable-default-registry-endpoint`).
    pub default_endpoint: bool,
    /// A client certificate and its key (PEM files) presented to every registry
    /// that asks for one (`--registry-cert`, `--registry-key`); `configs.<host>.tls`
    /// names one per host.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// PEM files of CAs trusted for every registry, beside the system's roots
    /// (`--registry-ca`).
    pub ca_files: Vec<PathBuf>,
    /// The command-line option that adds a CA file, named in the advice for a
    /// certificate the client does not trust; `None` where the command has none
    /// (the advice then names the system's trust store).
    pub ca_flag: Option<&'static str>,
    /// Requests (blob downloads) in flight at once.
    pub jobs: usize,
    /// Attempts per request on network failures, timeouts, 5xx, 408 and 429.
    pub retries: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            insecure_hosts: Vec::new(),
            credentials: Vec::new(),
            docker_config: None,
            podman_auth: None,
            registries: None,
            default_endpoint: true,
            client_cert: None,
            ca_files: Vec::new(),
            ca_flag: None,
            jobs: 4,
            retries: 5,
        }
    }
}

/// Reads and parses a `registries.yaml` (`--registries`); relative paths in it are
/// taken from its folder.
pub fn load_registries(path: &Path) -> Result<Registries, RegistriesError> {
    let name = path.display().to_string();
    let text = fs_err::read_to_string(path).map_err(|e| RegistriesError {
        source_name: name.clone(),
        location: String::new(),
        message: format!("cannot read it: {e} (pass K3s's registries.yaml with --registries FILE)"),
    })?;
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Registries::parse(&name, base, &text)
}
