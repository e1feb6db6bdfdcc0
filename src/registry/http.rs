//! Plain HTTP(S) downloads (`files: - url:`) with the settings registries get.
//!
//! A file named by URL is fetched on the online side, often on the same network
//! and behind the same proxy and private CA as the registries, so it gets the same
//! client setup as [`super::Client`]: rustls with ring and the system's roots plus
//! the settings' CA files, 15 s to connect, 120 s of silence on a connection, the
//! same user agent, and the proxies reqwest takes from `HTTPS_PROXY`, `HTTP_PROXY`
//! and `NO_PROXY`. Nothing else here is specific to registries: no credentials,
//! no routes.

use super::client::{read_ca, ClientError, CONNECT_TIMEOUT, READ_TIMEOUT, USER_AGENT};
use super::Settings;

/// An HTTP client set up from `settings` as the registry client is.
pub fn client(settings: &Settings) -> Result<reqwest::Client, ClientError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut certs = Vec::new();
    for path in &settings.ca_files {
        let cert = reqwest::Certificate::from_pem(&read_ca(path)?)
            .map_err(|_| ClientError::CaNotPem { path: path.clone() })?;
        certs.push(cert);
    }
    reqwest::Client::builder()
        .tls_certs_merge(certs)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(USER_AGENT)
        .build()
        .map_err(|e| ClientError::Http(oci_client::errors::OciDistributionError::from(e)))
}
