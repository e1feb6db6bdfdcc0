//! What a failed registry request means, and what the user should do about it.
//!
//! `oci-client` reports a refused login as a plain 401 (its lazy authentication
//! swallows the token error), a missing tag as a JSON envelope, an unreachable host
//! as a `reqwest` error nested several levels deep (sometimes inside an
//! `io::Error`, whose `source` skips what it wraps). [`classify`] turns each into one
//! [`Failure`], which decides both whether asking again may help
//! ([`Failure::retryable`]) and the advice; [`explain`] writes the one sentence the
//! user reads: the registry, the repository, tag or digest at fault, and the flag or
//! command that fixes it. Each kind of failure gets its own next step: a host name
//! that does not resolve is a DNS question (never `--insecure-registry`), a refused
//! connection asks whether the registry runs there, a timeout points at firewalls
//! and proxies, a proxy that failed is named with the variable that set it, and a
//! TLS failure says why the certificate was refused (unknown issuer, wrong name,
//! expired, a client certificate wanted, plain HTTP spoken) and which flag or
//! registries-file key fixes it. Pulls (`create`) and pushes (`import --registry`)
//! share it, so a refused login or an unreachable host reads the same in both, and
//! [`refusal_hint`] is the one text for 401/403 that chart pulls use too. The
//! original error stays in the chain (`{:#}`) for debugging, and every explained
//! error carries [`RegistryFailure`] (exit code 5).

use std::error::Error as StdError;

use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};

use super::auth::Origin;
use super::client::Route;
use crate::bundle::Digest;
use crate::error::RegistryFailure;

/// What a request was after, for messages.
#[derive(Debug, Clone)]
pub enum What {
    /// A manifest or index, by tag or digest (`name` is the full reference).
    Manifest {
        /// The reference asked for.
        name: String,
        /// Whether it was asked for by digest (else by tag).
        by_digest: bool,
    },
    /// A blob being pulled.
    Blob {
        /// Its digest.
        digest: Digest,
    },
    /// One step of a push.
    Push {
        /// What the registry was asked to do, as a verb phrase: `accept blob sha256:…`.
        step: String,
    },
}

/// One failed request, as [`explain`] needs it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Where it went.
    pub route: &'a Route,
    /// What it was after.
    pub what: &'a What,
    /// Attempts made.
    pub attempts: u32,
    /// Where the credentials used came from.
    pub origin: &'a Origin,
    /// The command-line option that adds a CA file (`--registry-ca FILE`), if the
    /// command has one; else the advice names the system's trust store.
    pub ca_flag: Option<&'a str>,
    /// The registries file in use (`--registries`), named in the advice for the
    /// settings it can hold per host.
    pub registries: Option<&'a str>,
    /// Whether the route's host was offered a client certificate.
    pub client_cert: bool,
}

/// A network failure, by what the next step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// The host name does not resolve.
    Dns,
    /// Nothing listens there.
    Refused,
    /// The connection broke (reset, aborted, closed early, broken body).
    Broken,
    /// No answer in time.
    Timeout,
    /// An HTTP proxy would not open a tunnel to the registry.
    Proxy,
    /// Some other transport error.
    Other,
}

/// Why a TLS connection failed, by what fixes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProblem {
    /// The certificate was issued by a CA this machine does not trust.
    UnknownIssuer,
    /// The certificate is not valid for the name connected to.
    NameMismatch,
    /// The certificate expired or is not valid yet.
    Expired,
    /// The server wants a client certificate (none, or one it does not accept).
    ClientCertificate,
    /// The server answered in plain HTTP.
    PlainHttp,
    /// Anything else.
    Other,
}

/// Why a request failed, as far as retrying and advice are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The registry could not be reached or the connection broke; `reason` is short
    /// (`connection refused`).
    Network {
        /// Which kind.
        kind: Network,
        /// In a few words.
        reason: String,
    },
    /// TLS handshake or certificate problem.
    Tls {
        /// Which.
        problem: TlsProblem,
        /// In a few words.
        reason: String,
    },
    /// The registry answered with this status; `detail` is its message.
    Status {
        /// HTTP status (or the one the registry's error code stands for).
        code: u16,
        /// The registry's message.
        detail: String,
    },
    /// Content did not match its digest.
    Digest(String),
    /// Anything else.
    Other(String),
}

impl Failure {
    /// Whether asking again may change the answer: network failures, 5xx, 408 and
    /// 429 are worth another attempt; other 4xx, TLS and digest errors are not.
    pub fn retryable(&self) -> bool {
        match self {
            Failure::Network { .. } => true,
            Failure::Status { code, .. } => *code >= 500 || *code == 429 || *code == 408,
            Failure::Tls { .. } | Failure::Digest(_) | Failure::Other(_) => false,
        }
    }
}

/// Whether asking again may change the answer (see [`Failure::retryable`]).
pub fn is_retryable(e: &OciDistributionError) -> bool {
    classify(e).retryable()
}

/// What went wrong, in a few words (`connection reset`, `503 Service Unavailable
/// (…)`), for messages that name the registry and the thing at fault themselves.
pub fn failure_reason(e: &OciDistributionError) -> String {
    match classify(e) {
        Failure::Network { reason, .. } | Failure::Other(reason) => reason,
        Failure::Tls { reason, .. } => format!("TLS: {reason}"),
        Failure::Status { code, detail } => format!("{} ({detail})", status_text(code)),
        Failure::Digest(d) => format!("content does not match its digest: {d}"),
    }
}

/// The advice for a registry that refused access (401 or 403) to `key`
/// (`--registry-auth`'s host), given where the credentials came from; `may` says
/// what the user must be allowed to do (`pull team/app`, `read the chart`).
pub fn refusal_hint(key: &str, origin: &Origin, may: &str) -> String {
    match origin {
        Origin::Flag => format!(
            "the credentials given with --registry-auth {key}=… were refused: check the user name and password, and that this user may {may}"
        ),
        Origin::DockerConfig(p) => format!(
            "the credentials for {key} in {} were refused: log in again with `docker login {key}` or pass --registry-auth {key}=USER:PASS",
            p.display()
        ),
        Origin::Podman(p) => format!(
            "the credentials for {key} in {} were refused: log in again with `podman login {key}` or pass --registry-auth {key}=USER:PASS",
            p.display()
        ),
        Origin::Registries(file) => format!(
            "the credentials in configs.\"{key}\".auth of {file} were refused: fix them there, or pass --registry-auth {key}=USER:PASS"
        ),
        Origin::Helper { name, config } => format!(
            "the credentials docker-credential-{name} gave for {key} (named in {}) were refused: log in again (`docker login {key}`), or pass --registry-auth {key}=USER:PASS",
            config.display()
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
    }
}

/// Turns an `oci-client` error into a sentence that names the thing at fault and
/// what to do, with a [`RegistryFailure`] holding the original error's whole text
/// as its cause.
pub fn explain(e: &OciDistributionError, req: &Request<'_>) -> anyhow::Error {
    let route = req.route;
    let host = &route.host;
    let key = route.key();
    let repo = &route.repository;
    let tries = match req.attempts {
        0 | 1 => "1 attempt".to_string(),
        n => format!("{n} attempts"),
    };
    let push = match req.what {
        What::Push { step } => Some(step.as_str()),
        _ => None,
    };
    let at = describe(route);
    let subject = match req.what {
        What::Manifest { name, .. } => format!("for {name}"),
        What::Blob { digest } => format!("for blob {digest} of {host}/{repo}"),
        What::Push { step } => format!("when asked to {step} ({host}/{repo})"),
    };
    // A push is resumed by running the import again.
    let rerun = if push.is_some() {
        "; then rerun the import (blobs already pushed are skipped), with --retries N for more attempts"
    } else {
        ""
    };
    let msg = match classify(e) {
        Failure::Network { kind, reason } => {
            let to = push.map(|s| format!(" to {s}")).unwrap_or_default();
            let endpoint = &route.endpoint;
            let advice = match (super::client::proxy_for(route), kind) {
                (Some((proxy, _)), Network::Proxy) => format!(
                    "the proxy {proxy} could not open a connection to {endpoint}: check that the proxy may reach it, or add {host} to NO_PROXY to connect directly"
                ),
                (Some((proxy, var)), Network::Dns | Network::Refused | Network::Timeout) => format!(
                    "the request went through the proxy {proxy} ({var}), which did not answer: check that it runs and that {var} is right, or add {host} to NO_PROXY to connect directly"
                ),
                (_, Network::Dns) => format!(
                    "the host name does not resolve: check the name ({host}) and this machine's DNS (/etc/resolv.conf, /etc/hosts){}",
                    if route.mirror_of.is_some() { ", and the mirror's endpoint in the registries file" } else { "" }
                ),
                (_, Network::Refused) => format!(
                    "nothing accepts connections at {endpoint}: is the registry running there, and is the port right?"
                ),
                (_, Network::Timeout) => format!(
                    "{endpoint} did not answer in time: check firewalls, and whether this network needs a proxy (HTTPS_PROXY, HTTP_PROXY)"
                ),
                // A TLS 1.3 server that wants a client certificate refuses it after
                // the handshake, and its alert often loses the race with the reset.
                (_, Network::Broken) if !route.plain_http && !req.client_cert => format!(
                    "the connection broke: the network or the registry is unstable, or it wants a client certificate (pass --registry-cert FILE --registry-key FILE{}); run the command again (downloads resume where they stopped)",
                    match req.registries {
                        Some(f) => format!(", or set configs.\"{key}\".tls.cert_file and key_file in {f}"),
                        None => String::new(),
                    }
                ),
                (_, Network::Broken) => "the connection broke: the network or the registry is unstable; run the command again (downloads resume where they stopped)".to_string(),
                (_, Network::Proxy | Network::Other) => {
                    "check the address, proxies (HTTPS_PROXY, NO_PROXY) and firewalls".to_string()
                }
            };
            format!("cannot reach {at} ({reason}) after {tries}{to}: {advice}{rerun}")
        }
        Failure::Tls { problem, reason } => {
            let to = push
                .map(|s| format!(" while trying to {s}"))
                .unwrap_or_default();
            let in_file = |what: &str| match req.registries {
                Some(f) => format!(", or set configs.\"{key}\".tls.{what} in {f}"),
                None => format!(", or give it per host as configs.\"{key}\".tls.{what} in a --registries file"),
            };
            let advice = match problem {
                TlsProblem::UnknownIssuer => {
                    let ca = match req.ca_flag {
                        Some(flag) => format!("pass {flag} with the CA that issued it"),
                        None => "add the CA that issued it to the system's trust store".to_string(),
                    };
                    format!(
                        "its certificate comes from a CA this machine does not trust: {ca}{}, or add that CA to the system's trust store (SSL_CERT_FILE, SSL_CERT_DIR)",
                        in_file("ca_file")
                    )
                }
                TlsProblem::NameMismatch => format!(
                    "its certificate is not valid for the name {} connected to: use a name the certificate lists, or have it reissued for {endpoint}",
                    if route.mirror_of.is_some() { "the mirror endpoint" } else { "the reference" },
                    endpoint = route.endpoint
                ),
                TlsProblem::Expired => "its certificate has expired (or is not valid yet): have it renewed, and check this machine's clock".to_string(),
                TlsProblem::ClientCertificate => format!(
                    "it wants a client certificate it accepts: pass --registry-cert FILE --registry-key FILE{}",
                    in_file("cert_file and key_file")
                ),
                TlsProblem::PlainHttp => match req.registries {
                    Some(f) if route.mirror_of.is_some() => format!(
                        "it speaks plain HTTP: write its endpoint as http://{} in {f}",
                        route.endpoint
                    ),
                    _ => format!("it speaks plain HTTP: pass --insecure-registry {host}"),
                },
                TlsProblem::Other => format!(
                    "if it serves plain HTTP, pass --insecure-registry {host}; if its certificate comes from a private CA, {}",
                    match req.ca_flag {
                        Some(flag) => format!("pass {flag}"),
                        None => "add that CA to the system's trust store".to_string(),
                    }
                ),
            };
            format!(
                "TLS connection to {} failed{to} ({reason}): {advice}",
                describe(route)
            )
        }
        Failure::Status { code, detail } => {
            let mut status = status_text(code);
            if let (Some((proxy, _)), 502..=504) = (super::client::proxy_for(route), code) {
                status.push_str(&format!(", from or through the proxy {proxy}"));
            }
            match (code, push, req.what) {
                (401 | 403, None, _) => format!(
                    "{at} refused access to {repo} ({status}): {}",
                    refusal_hint(&key, req.origin, &format!("pull {repo}"))
                ),
                (401 | 403, Some(step), _) => format!(
                    "{at} refused to {step} ({status}): {}",
                    refusal_hint(&key, req.origin, &format!("push to {repo}"))
                ),
                (429, _, _) => format!(
                    "{at} is limiting requests ({status}) {subject}, still after {tries}: wait and try again, or log in (--registry-auth {key}=USER:PASS) for a higher limit{rerun}"
                ),
                (c, _, _) if c >= 500 || c == 408 => format!(
                    "{at} failed with {status} {subject} after {tries} ({detail}): try again later, or tell the registry's operator{rerun}"
                ),
                (404, None, What::Manifest { .. })
                    if detail.contains("name unknown")
                        || detail.contains("repository name not known") =>
                {
                    format!(
                        "repository {repo} does not exist in {at} ({detail}): check the name"
                    )
                }
                (404, None, What::Manifest { name, by_digest }) => format!(
                    "{name} does not exist in the registry ({detail}): check the {}",
                    if *by_digest { "digest" } else { "tag" }
                ),
                (404, None, What::Blob { digest }) => format!(
                    "blob {digest} does not exist in {host}/{repo} ({detail}): the image is incomplete in the registry; push it again or tell the registry's operator"
                ),
                (_, Some(step), _) => format!(
                    "{at} refused to {step} ({status}: {detail}): check --registry, and that it accepts pushes to {repo}"
                ),
                _ => format!("{at} answered {status} {subject} ({detail})"),
            }
        }
        Failure::Digest(d) => format!(
            "{at} sent content {subject} that does not match its digest ({d}): the registry or a proxy in between is serving wrong data"
        ),
        // The whole error is in the sentence already.
        Failure::Other(_) => {
            let msg = match push {
                Some(step) => format!("{at} refused to {step}: {}", error_text(e)),
                None => format!("request to {at} {subject} failed: {}", error_text(e)),
            };
            return RegistryFailure(msg).into();
        }
    };
    // The marker sits below the sentence, so that the exit code is found in the
    // chain and the sentence is what the error says.
    anyhow::Error::new(RegistryFailure(error_text(e))).context(msg)
}

/// `registry ghcr.io`, or `mirror m:5000 (for docker.io)`.
fn describe(route: &Route) -> String {
    route.describe()
}

/// `404 Not Found` for 404: the code and its reason phrase.
pub fn status_text(code: u16) -> String {
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

/// Sorts an `oci-client` error into a [`Failure`].
pub fn classify(e: &OciDistributionError) -> Failure {
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
                    Failure::Network {
                        kind: Network::Other,
                        reason: m,
                    }
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
    let mut tunnel = false;
    let mut last = e.to_string();
    walk_chain(e, &mut |x| {
        if let Some(t) = x.downcast_ref::<rustls::Error>() {
            tls.get_or_insert_with(|| (tls_problem(t), t.to_string()));
        }
        if let Some(io) = x.downcast_ref::<std::io::Error>() {
            kind.get_or_insert(io.kind());
        }
        let text = x.to_string();
        if text.contains("dns error") {
            dns = true;
        }
        // hyper-util's CONNECT tunnel through an HTTP proxy.
        if text.contains("tunnel error") {
            tunnel = true;
        }
        last = text;
    });
    if let Some((problem, reason)) = tls {
        return Failure::Tls { problem, reason };
    }
    if tunnel {
        return Failure::Network {
            kind: Network::Proxy,
            reason: format!("the proxy refused the tunnel: {last}"),
        };
    }
    use std::io::ErrorKind as K;
    let (net, reason) = match kind {
        _ if timed_out => (Network::Timeout, "timed out".to_string()),
        Some(K::ConnectionRefused) => (Network::Refused, "connection refused".into()),
        Some(K::ConnectionReset) => (Network::Broken, "connection reset".into()),
        Some(K::ConnectionAborted) => (Network::Broken, "connection aborted".into()),
        Some(K::TimedOut) => (Network::Timeout, "timed out".into()),
        Some(K::UnexpectedEof) => (Network::Broken, "connection closed early".into()),
        _ if dns => (
            Network::Dns,
            format!("cannot resolve the host name: {last}"),
        ),
        _ => (Network::Other, last),
    };
    if kind.is_some() || timed_out || dns {
        Failure::Network { kind: net, reason }
    } else {
        Failure::Other(reason)
    }
}

/// Which [`TlsProblem`] a rustls error is.
fn tls_problem(e: &rustls::Error) -> TlsProblem {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(c) => match c {
            C::UnknownIssuer | C::BadSignature => TlsProblem::UnknownIssuer,
            C::NotValidForName | C::NotValidForNameContext { .. } => TlsProblem::NameMismatch,
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => TlsProblem::Expired,
            _ => TlsProblem::Other,
        },
        E::AlertReceived(
            A::CertificateRequired | A::BadCertificate | A::UnknownCA | A::HandshakeFailure,
        ) => TlsProblem::ClientCertificate,
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => TlsProblem::PlainHttp,
        _ => TlsProblem::Other,
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

/// The digest error `oci-client`'s verifying stream put inside an `io::Error`.
pub fn digest_error_in(e: &std::io::Error) -> Option<&DigestError> {
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

/// An error and its causes on one line (reqwest's own text omits the cause,
/// e.g. `connection reset`), without repeating text a cause already showed.
pub fn error_text(e: &(dyn StdError + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !t.is_empty() && !text.contains(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        cur = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: u16) -> OciDistributionError {
        OciDistributionError::ServerError {
            code,
            url: "http://127.0.0.1/v2/".into(),
            message: String::new(),
        }
    }

    #[test]
    fn status_classes() {
        let s = |code| Failure::Status {
            code,
            detail: String::new(),
        };
        assert!(s(503).retryable() && s(429).retryable() && s(408).retryable());
        assert!(!s(404).retryable() && !s(401).retryable() && !s(403).retryable());
        assert!(Failure::Network {
            kind: Network::Refused,
            reason: "x".into()
        }
        .retryable());
        assert!(!Failure::Tls {
            problem: TlsProblem::Other,
            reason: "x".into()
        }
        .retryable());
        assert_eq!(
            failure_reason(&server_error(503)),
            "503 Service Unavailable (no details)"
        );
    }

    fn route(plain_http: bool) -> Route {
        Route {
            host: "reg.example:5000".into(),
            endpoint: "reg.example:5000".into(),
            plain_http,
            repository: "team/app".into(),
            mirror_of: None,
        }
    }

    fn message(e: OciDistributionError, what: &What, origin: &Origin, plain: bool) -> String {
        let route = route(plain);
        let err = explain(
            &e,
            &Request {
                route: &route,
                what,
                attempts: 3,
                origin,
                ca_flag: Some("--registry-ca FILE"),
                registries: None,
                client_cert: false,
            },
        );
        assert!(
            err.chain().any(|c| c.is::<RegistryFailure>()),
            "carries the exit-code marker where the command layer looks"
        );
        err.to_string()
    }

    #[test]
    fn pulls_and_pushes_read_alike() {
        let anon = Origin::Anonymous { note: None };
        let flag = Origin::Flag;
        let pull = What::Manifest {
            name: "reg.example:5000/team/app:1.2".into(),
            by_digest: false,
        };
        let push = What::Push {
            step: "accept blob sha256:00".into(),
        };
        let m = message(server_error(401), &pull, &anon, true);
        assert_eq!(m, "registry reg.example:5000 refused access to team/app (401 Unauthorized): pass --registry-auth reg.example:5000=USER:PASS or log in with `docker login reg.example:5000` (~/.docker/config.json)");
        let m = message(server_error(401), &push, &flag, true);
        assert_eq!(m, "registry reg.example:5000 refused to accept blob sha256:00 (401 Unauthorized): the credentials given with --registry-auth reg.example:5000=… were refused: check the user name and password, and that this user may push to team/app");
        let m = message(server_error(503), &push, &anon, true);
        assert!(
            m.starts_with("registry reg.example:5000 failed with 503 Service Unavailable when asked to accept blob sha256:00 (reg.example:5000/team/app) after 3 attempts")
                && m.ends_with("then rerun the import (blobs already pushed are skipped), with --retries N for more attempts"),
            "{m}"
        );
        let m = message(server_error(503), &pull, &anon, true);
        assert!(!m.contains("rerun the import"), "{m}");
        let m = message(server_error(400), &push, &anon, true);
        assert!(
            m.starts_with(
                "registry reg.example:5000 refused to accept blob sha256:00 (400 Bad Request"
            ),
            "{m}"
        );
    }

    #[test]
    fn a_reset_over_tls_without_a_client_certificate_names_one() {
        let anon = Origin::Anonymous { note: None };
        let pull = What::Manifest {
            name: "reg.example:5000/team/app:1.2".into(),
            by_digest: false,
        };
        let reset = || {
            OciDistributionError::IoError(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
        };
        let tls = message(reset(), &pull, &anon, false);
        assert!(
            tls.contains("(connection reset)")
                && tls.contains("or it wants a client certificate (pass --registry-cert FILE --registry-key FILE)"),
            "{tls}"
        );
        // Plain HTTP has no certificates to ask for.
        let plain = message(reset(), &pull, &anon, true);
        assert!(
            plain.contains("(connection reset)") && !plain.contains("--registry-cert"),
            "{plain}"
        );
    }

    #[test]
    fn refusal_hints_name_where_the_credentials_came_from() {
        let cfg = Origin::DockerConfig("/home/u/.docker/config.json".into());
        let h = refusal_hint("h:1", &cfg, "read the chart");
        assert!(
            h.contains("/home/u/.docker/config.json")
                && h.contains("--registry-auth h:1=USER:PASS"),
            "{h}"
        );
        let h = refusal_hint("h:1", &Origin::Flag, "read the chart");
        assert!(
            h.contains("--registry-auth h:1=… were refused") && h.ends_with("may read the chart"),
            "{h}"
        );
        let h = refusal_hint(
            "h:1",
            &Origin::Anonymous {
                note: Some("helpers are not run".into()),
            },
            "x",
        );
        assert!(h.ends_with("(note: helpers are not run)"), "{h}");
    }
}
