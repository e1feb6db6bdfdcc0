//! K3s's `registries.yaml`, pure: which endpoints an image's bytes are fetched
//! from, under which repository path, and with which credentials and TLS settings.
//!
//! A release engineer behind a corporate mirror (Harbor, Artifactory, Nexus) already
//! describes that mirror to every K3s node in this file, so `create --registries`
//! reads the same file instead of a format of our own. The rules are K3s's
//! (docs.k3s.io, "Private Registry Configuration", and `pkg/agent/containerd` of K3s,
//! which turns the file into containerd's `hosts.toml`):
//!
//! - `mirrors.<registry>.endpoint` lists URLs tried in order for images of
//!   `<registry>` (`docker.io`, `ghcr.io`, `10.0.0.5:5000`); `mirrors."*"` is used for
//!   every registry without an entry of its own. After the mirrors, the registry's own
//!   ("default") endpoint is tried, with no rewrite, unless the default endpoint is
//!   disabled (K3s's `--disable-default-registry-endpoint`, which only applies to
//!   registries that have a mirror entry). An endpoint that *is* the default endpoint
//!   is not a mirror: it is tried last, without rewrites, as K3s does.
//! - An endpoint without a scheme is `https://`, except `localhost`, `127.0.0.1` and
//!   `::1` on a port other than 443 (`http://`); `http://` means plain HTTP. The path
//!   is `/v2` when empty, `/` or `/v2`; `https://harbor/v2/hub` serves repositories
//!   under `hub/`.
//! - `mirrors.<registry>.rewrite` maps regular expressions on the repository path
//!   (`library/redis`, never the tag) to replacements (`$1`), applied on that mirror's
//!   endpoints only. The first pattern, in the file's order, that changes the path
//!   wins (K3s keeps them in a Go map, whose order is undefined).
//! - `configs.<host>` holds `auth` (`username`/`password`, `auth` as base64
//!   `user:pass`, `identity_token`) and `tls` (`ca_file`, `cert_file`, `key_file`,
//!   `insecure_skip_verify`) for the host an endpoint connects to (the mirror, not the
//!   registry it mirrors); `configs."*"` for hosts without their own.
//!
//! What gapbundle does differently, and why, is in README ("Registry mirrors"): the
//! file is read strictly (an unknown key or a bad pattern is an error naming its
//! place, where K3s would log a warning and go on), relative file paths are taken
//! from the file's folder, and an endpoint path must start with `/v2`.
//!
//! A mirror is only where bytes come from: nothing here changes what an image is
//! called, and [`Source`] keeps the registry it stands in for.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use regex::Regex;
use serde::Deserialize;

use super::reference::{api_host, DOCKER_HUB, DOCKER_HUB_API, DOCKER_HUB_LEGACY};

/// Why a `registries.yaml` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}{location}: {message}")]
pub struct RegistriesError {
    /// The file.
    pub source_name: String,
    /// `:line:column` when known.
    pub location: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl crate::error::Classify for RegistriesError {
    /// A registries file that cannot be used is bad input.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        Some(crate::error::ErrorClass::Input)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    mirrors: Option<serde_yaml_ng::Mapping>,
    #[serde(default)]
    configs: Option<serde_yaml_ng::Mapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirror {
    #[serde(default)]
    endpoint: Vec<String>,
    #[serde(default)]
    rewrite: Option<serde_yaml_ng::Mapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    auth: Option<RawAuth>,
    #[serde(default)]
    tls: Option<RawTls>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    /// K3s (wharfie) spells it `identity_token` in YAML; containerd's TOML says
    /// `identitytoken`.
    #[serde(default, alias = "identitytoken")]
    identity_token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    cert_file: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
}

/// The parsed file.
#[derive(Debug, Clone)]
pub struct Registries {
    /// The file, for messages.
    pub source_name: String,
    /// Mirrors by registry (normalised: `docker.io` for Docker Hub's aliases; `*`).
    mirrors: Vec<(String, Mirror)>,
    /// Settings by host (normalised as mirrors are).
    configs: Vec<(String, HostConfig)>,
}

/// One `mirrors.<registry>` entry.
#[derive(Debug, Clone)]
struct Mirror {
    endpoints: Vec<Endpoint>,
    rewrites: Vec<Rewrite>,
}

/// One endpoint of a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As written in the file.
    pub url: String,
    /// `host[:port]` it connects to.
    pub host: String,
    /// `http://`: plain HTTP.
    pub plain_http: bool,
    /// The path below `/v2/` that every repository is served under (`hub` for
    /// `https://harbor/v2/hub`).
    pub prefix: Option<String>,
}

#[derive(Debug, Clone)]
struct Rewrite {
    pattern: Regex,
    replace: String,
}

/// `configs.<host>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Credentials for the host.
    pub auth: Option<Auth>,
    /// TLS settings for the host.
    pub tls: Option<Tls>,
}

/// `configs.<host>.auth`, decoded.
#[derive(Clone, PartialEq, Eq)]
pub enum Auth {
    /// `username`/`password`, or `auth` (base64 of `user:pass`).
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
    /// `identity_token`.
    Token(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Auth::Token(_) => write!(f, "Token(<redacted>)"),
        }
    }
}

/// `configs.<host>.tls`, with paths made absolute against the file's folder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tls {
    /// A CA (PEM) trusted for the host, beside the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The client certificate and its key (PEM).
    pub client: Option<(PathBuf, PathBuf)>,
    /// Accept any certificate.
    pub insecure_skip_verify: bool,
}

/// One place to fetch a repository from, in the order tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `host[:port]` to connect to (`registry-1.docker.io` for Docker Hub itself).
    pub host: String,
    /// Plain HTTP (an `http://` endpoint).
    pub plain_http: bool,
    /// The repository path there, rewritten and prefixed for a mirror.
    pub repository: String,
    /// The registry this endpoint stands in for; `None` for the registry itself.
    pub mirror_of: Option<String>,
}

/// The canonical form of a registry or host key: lower case, Docker Hub's aliases
/// as `docker.io`.
fn key_of(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    match h.as_str() {
        DOCKER_HUB_LEGACY | DOCKER_HUB_API => DOCKER_HUB.to_string(),
        _ => h,
    }
}

impl Registries {
    /// Parses the text of a `registries.yaml`; `source_name` names it in messages and
    /// `base` is the folder relative file paths are taken from.
    pub fn parse(source_name: &str, base: &Path, text: &str) -> Result<Self, RegistriesError> {
        let at = |location: String, message: String| RegistriesError {
            source_name: source_name.to_string(),
            location,
            message,
        };
        let raw: RawFile = if text.trim().is_empty() {
            RawFile::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| {
                let location = e
                    .location()
                    .map(|l| format!(":{}:{}", l.line(), l.column()))
                    .unwrap_or_default();
                let mut message = e.to_string();
                if let Some(i) = message.find(" at line ") {
                    message.truncate(i);
                }
                at(location, message)
            })?
        };
        let bad = |m: String| at(String::new(), m);
        let mut out = Registries {
            source_name: source_name.to_string(),
            mirrors: Vec::new(),
            configs: Vec::new(),
        };
        for (k, v) in raw.mirrors.unwrap_or_default() {
            let registry = key_name(&k).map_err(|m| bad(format!("mirrors: {m}")))?;
            let m: RawMirror = if v.is_null() {
                RawMirror::default()
            } else {
                serde_yaml_ng::from_value(v)
                    .map_err(|e| bad(format!("mirrors.\"{registry}\": {e}")))?
            };
            out.mirrors
                .push((key_of(&registry), mirror(&registry, m).map_err(bad)?));
        }
        for (k, v) in raw.configs.unwrap_or_default() {
            let host = key_name(&k).map_err(|m| bad(format!("configs: {m}")))?;
            let c: RawConfig = if v.is_null() {
                RawConfig::default()
            } else {
                serde_yaml_ng::from_value(v).map_err(|e| bad(format!("configs.\"{host}\": {e}")))?
            };
            out.configs
                .push((key_of(&host), host_config(&host, base, c).map_err(bad)?));
        }
        Ok(out)
    }

    /// Where the repository `path` of `registry` (as a reference names it:
    /// `docker.io`, `library/redis`) is fetched from, in the order to try: the
    /// mirror's endpoints (rewritten), then the registry itself unless
    /// `default_endpoint` is false and the registry has a mirror entry.
    pub fn sources(&self, registry: &str, path: &str, default_endpoint: bool) -> Vec<Source> {
        let key = key_of(registry);
        let mirror = self
            .mirrors
            .iter()
            .find(|(k, _)| *k == key)
            .or_else(|| self.mirrors.iter().find(|(k, _)| k == "*"))
            .map(|(_, m)| m);
        let upstream = Source {
            host: api_host(&key).to_string(),
            plain_http: false,
            repository: path.to_string(),
            mirror_of: None,
        };
        let Some(m) = mirror else {
            return vec![upstream];
        };
        let repository = m
            .rewrites
            .iter()
            .find_map(|r| {
                let new = r.pattern.replace_all(path, r.replace.as_str());
                (new != path).then(|| new.into_owned())
            })
            .unwrap_or_else(|| path.to_string());
        let mut out: Vec<Source> = m
            .endpoints
            .iter()
            // The registry's own endpoint is not a mirror of itself.
            .filter(|e| !is_default_endpoint(e, &key))
            .map(|e| Source {
                host: e.host.clone(),
                plain_http: e.plain_http,
                repository: match &e.prefix {
                    Some(p) => format!("{p}/{repository}"),
                    None => repository.clone(),
                },
                mirror_of: Some(key.clone()),
            })
            .collect();
        // The registry's own endpoint, when listed, is tried last even with the
        // default endpoint disabled.
        if default_endpoint || m.endpoints.iter().any(|e| is_default_endpoint(e, &key)) {
            out.push(upstream);
        }
        out
    }

    /// `configs.<host>` for the host an endpoint connects to (`127.0.0.1:5000`,
    /// `docker.io`), else `configs."*"`.
    pub fn config(&self, host: &str) -> Option<&HostConfig> {
        let key = key_of(host);
        self.configs
            .iter()
            .find(|(k, _)| *k == key)
            .or_else(|| self.configs.iter().find(|(k, _)| k == "*"))
            .map(|(_, c)| c)
    }

    /// Every endpoint the mirrors list (for the plain-HTTP list of a client).
    pub fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.mirrors.iter().flat_map(|(_, m)| m.endpoints.iter())
    }

    /// Every distinct TLS setting of `configs`, for one HTTP client each.
    pub fn tls_settings(&self) -> Vec<&Tls> {
        let mut v: Vec<&Tls> = self
            .configs
            .iter()
            .filter_map(|(_, c)| c.tls.as_ref())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

fn is_default_endpoint(e: &Endpoint, registry: &str) -> bool {
    registry != "*"
        && !e.plain_http
        && e.prefix.is_none()
        && key_of(&e.host) == key_of(api_host(registry))
}

fn key_name(k: &serde_yaml_ng::Value) -> Result<String, String> {
    match k {
        serde_yaml_ng::Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        other => Err(format!(
            "`{}` is not a registry name (expected e.g. docker.io, \"registry.example:5000\" or \"*\")",
            serde_yaml_ng::to_string(other)
                .unwrap_or_default()
                .trim()
        )),
    }
}

fn mirror(registry: &str, m: RawMirror) -> Result<Mirror, String> {
    let mut endpoints = Vec::new();
    for (i, url) in m.endpoint.iter().enumerate() {
        let e = endpoint(url)
            .map_err(|why| format!("mirrors.\"{registry}\".endpoint[{i}] `{url}`: {why}"))?;
        if !endpoints.contains(&e) {
            endpoints.push(e);
        }
    }
    let mut rewrites = Vec::new();
    for (k, v) in m.rewrite.unwrap_or_default() {
        let (Some(pattern), Some(replace)) = (k.as_str(), v.as_str()) else {
            return Err(format!(
                "mirrors.\"{registry}\".rewrite: each entry maps a pattern to a replacement, both strings (e.g. \"^library/(.*)\": \"hub/$1\")"
            ));
        };
        let re = Regex::new(pattern).map_err(|e| {
            format!("mirrors.\"{registry}\".rewrite: `{pattern}` is not a regular expression: {e}")
        })?;
        rewrites.push(Rewrite {
            pattern: re,
            replace: replace.to_string(),
        });
    }
    Ok(Mirror {
        endpoints,
        rewrites,
    })
}

/// An endpoint URL as K3s normalises it.
fn endpoint(url: &str) -> Result<Endpoint, String> {
    let u = url.trim();
    let (scheme, rest) = match u.split_once("://") {
        Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
        None => (None, u),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['@', '?', '#', ' ']) {
        return Err("expected a URL like https://mirror.example:5000 (no user name, query or fragment; credentials go in configs.<host>.auth)".into());
    }
    let host = authority.to_ascii_lowercase();
    let plain_http = match scheme.as_deref() {
        Some("https") => false,
        Some("http") => true,
        Some(other) => return Err(format!("the scheme `{other}` is neither http nor https")),
        None => {
            let (name, port) = split_port(&host);
            is_localhost(name) && port.is_some_and(|p| p != "443")
        }
    };
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let prefix = match path.trim_end_matches('/') {
        "" | "/v2" => None,
        p => match p.strip_prefix("/v2/") {
            Some(prefix) if !prefix.is_empty() => Some(prefix.trim_matches('/').to_string()),
            _ => {
                return Err(format!(
                    "the path `{p}` does not start with /v2/: gapbundle sends registry API requests to /v2/… only (write the endpoint as https://host/v2/<prefix> if the mirror serves repositories under a prefix)"
                ))
            }
        },
    };
    Ok(Endpoint {
        url: u.to_string(),
        host,
        plain_http,
        prefix,
    })
}

fn split_port(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        // [::1]:5000
        return match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (host, None),
    }
}

fn is_localhost(name: &str) -> bool {
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

fn host_config(host: &str, base: &Path, c: RawConfig) -> Result<HostConfig, String> {
    let auth = match c.auth {
        None => None,
        Some(a) => Some(auth(host, a)?),
    };
    let tls = match c.tls {
        None => None,
        Some(t) => {
            let path = |p: Option<String>| {
                p.map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .map(|s| base.join(s))
            };
            let (cert, key) = (path(t.cert_file), path(t.key_file));
            let client = match (cert, key) {
                (None, None) => None,
                (Some(c), Some(k)) => Some((c, k)),
                (Some(c), None) => {
                    return Err(format!(
                        "configs.\"{host}\".tls: cert_file {} is given without key_file",
                        c.display()
                    ))
                }
                (None, Some(k)) => {
                    return Err(format!(
                        "configs.\"{host}\".tls: key_file {} is given without cert_file",
                        k.display()
                    ))
                }
            };
            Some(Tls {
                ca_file: path(t.ca_file),
                client,
                insecure_skip_verify: t.insecure_skip_verify,
            })
        }
    };
    Ok(HostConfig { auth, tls })
}

fn auth(host: &str, a: RawAuth) -> Result<Auth, String> {
    let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
    if let Some(t) = nonempty(a.identity_token) {
        return Ok(Auth::Token(t));
    }
    if let Some(b64) = nonempty(a.auth) {
        let text = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        return match text.as_deref().and_then(|t| t.split_once(':')) {
            Some((u, p)) if !u.is_empty() => Ok(Auth::Basic {
                username: u.to_string(),
                password: p.to_string(),
            }),
            _ => Err(format!(
                "configs.\"{host}\".auth.auth is not the base64 of USER:PASS"
            )),
        };
    }
    match (nonempty(a.username), a.password) {
        (Some(username), Some(password)) => Ok(Auth::Basic { username, password }),
        _ => Err(format!(
            "configs.\"{host}\".auth needs username and password, auth (base64 of USER:PASS) or identity_token"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Registries, RegistriesError> {
        Registries::parse("registries.yaml", Path::new("/etc/rancher/k3s"), text)
    }

    fn hosts(s: &[Source]) -> Vec<(&str, &str, bool)> {
        s.iter()
            .map(|s| (s.host.as_str(), s.repository.as_str(), s.plain_http))
            .collect()
    }

    #[test]
    fn mirrors_are_tried_in_order_then_the_registry() {
        let r = parse(
            r#"
mirrors:
  docker.io:
    endpoint:
      - "https://mirror.corp:5000"
      - "http://cache.corp"
      - "https://harbor.corp/v2/hub"
    rewrite:
      "^library/(.*)": "official/$1"
      "^(.*)$": "all/$1"
  ghcr.io:
    endpoint: [mirror.corp:5000]
"#,
        )
        .unwrap();
        let s = r.sources("docker.io", "library/redis", true);
        assert_eq!(
            hosts(&s),
            [
                ("mirror.corp:5000", "official/redis", false),
                ("cache.corp", "official/redis", true),
                ("harbor.corp", "hub/official/redis", false),
                ("registry-1.docker.io", "library/redis", false),
            ]
        );
        assert_eq!(s[0].mirror_of.as_deref(), Some("docker.io"));
        assert_eq!(s[3].mirror_of, None);
        // The second pattern applies where the first does not.
        assert_eq!(
            r.sources("index.docker.io", "team/app", false)[0].repository,
            "all/team/app"
        );
        // Without the default endpoint, only the mirrors.
        assert_eq!(r.sources("docker.io", "library/redis", false).len(), 3);
        assert_eq!(
            hosts(&r.sources("ghcr.io", "org/app", true)),
            [
                ("mirror.corp:5000", "org/app", false),
                ("ghcr.io", "org/app", false)
            ]
        );
        // A registry without an entry goes to itself, default endpoint or not.
        assert_eq!(
            hosts(&r.sources("quay.io", "org/app", false)),
            [("quay.io", "org/app", false)]
        );
    }

    #[test]
    fn the_wildcard_serves_registries_without_their_own_entry() {
        let r = parse(
            "mirrors:\n  \"*\":\n    endpoint: [\"http://127.0.0.1:5000\"]\n  quay.io:\n    endpoint: [\"https://q.corp\"]\nconfigs:\n  \"*\":\n    tls: {insecure_skip_verify: true}\n  docker.io: {}\n",
        )
        .unwrap();
        assert_eq!(
            hosts(&r.sources("ghcr.io", "org/app", true)),
            [
                ("127.0.0.1:5000", "org/app", true),
                ("ghcr.io", "org/app", false)
            ]
        );
        assert_eq!(r.sources("quay.io", "a/b", true)[0].host, "q.corp");
        // configs: an exact entry wins over the wildcard, even an empty one.
        assert_eq!(
            r.config("registry-1.docker.io"),
            Some(&HostConfig::default())
        );
        assert!(
            r.config("q.corp")
                .unwrap()
                .tls
                .as_ref()
                .unwrap()
                .insecure_skip_verify
        );
    }

    #[test]
    fn endpoints_are_normalised_as_k3s_does() {
        let e = |u: &str| endpoint(u).unwrap();
        assert!(e("localhost:5000").plain_http);
        assert!(e("127.0.0.1:5000").plain_http);
        assert!(!e("127.0.0.1:443").plain_http);
        assert!(!e("mirror.corp:5000").plain_http);
        assert!(e("HTTP://Mirror.Corp/").plain_http);
        assert_eq!(e("https://m/v2").prefix, None);
        assert_eq!(e("https://m/v2/").prefix, None);
        assert_eq!(e("https://m/v2/a/b/").prefix.as_deref(), Some("a/b"));
        assert_eq!(e("https://M:5000").host, "m:5000");
        for bad in [
            "ftp://m",
            "https://u:p@m",
            "https://m/repository/docker",
            "",
        ] {
            assert!(endpoint(bad).is_err(), "{bad}");
        }
        // An endpoint that is the registry itself is the default endpoint: tried
        // last, without rewrites, even with the default endpoint disabled.
        let r = parse(
            "mirrors:\n  docker.io:\n    endpoint: [\"https://registry-1.docker.io\", \"https://m\"]\n    rewrite: {\"(.*)\": \"x/$1\"}\n",
        )
        .unwrap();
        assert_eq!(
            hosts(&r.sources("docker.io", "library/a", false)),
            [
                ("m", "x/library/a", false),
                ("registry-1.docker.io", "library/a", false)
            ]
        );
    }

    #[test]
    fn configs_hold_auth_and_tls_with_paths_from_the_file_s_folder() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("ci:s3:cret");
        let r = parse(&format!(
            "configs:\n  \"mirror.corp:5000\":\n    auth: {{auth: {b64}}}\n    tls:\n      ca_file: ca.pem\n      cert_file: /abs/client.pem\n      key_file: client.key\n  tok.corp:\n    auth: {{identity_token: T}}\n  basic.corp:\n    auth: {{username: u, password: p}}\n"
        ))
        .unwrap();
        let c = r.config("MIRROR.corp:5000").unwrap();
        assert_eq!(
            c.auth,
            Some(Auth::Basic {
                username: "ci".into(),
                password: "s3:cret".into()
            })
        );
        let tls = c.tls.as_ref().unwrap();
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(Path::new("/etc/rancher/k3s/ca.pem"))
        );
        assert_eq!(
            tls.client,
            Some((
                PathBuf::from("/abs/client.pem"),
                PathBuf::from("/etc/rancher/k3s/client.key")
            ))
        );
        assert_eq!(
            r.config("tok.corp").unwrap().auth,
            Some(Auth::Token("T".into()))
        );
        assert!(r.config("other.corp").is_none());
        assert!(!format!("{:?}", c.auth).contains("s3:cret"));
        assert_eq!(r.tls_settings().len(), 1);
    }

    #[test]
    fn mistakes_are_named_with_their_place() {
        for (text, want) in [
            (
                "mirrors:\n  docker.io:\n    endpoints: [x]\n",
                "mirrors.\"docker.io\": unknown field `endpoints`",
            ),
            ("mirror: {}\n", ":1:1: unknown field `mirror`"),
            (
                "mirrors:\n  docker.io:\n    rewrite: {\"(\": x}\n",
                "`(` is not a regular expression",
            ),
            (
                "mirrors:\n  docker.io:\n    endpoint: [\"https://n/repo\"]\n",
                "endpoint[0] `https://n/repo`: the path `/repo` does not start with /v2/",
            ),
            (
                "configs:\n  h:\n    tls: {cert_file: c.pem}\n",
                "cert_file /etc/rancher/k3s/c.pem is given without key_file",
            ),
            (
                "configs:\n  h:\n    auth: {username: u}\n",
                "configs.\"h\".auth needs username and password",
            ),
            (
                "configs:\n  h:\n    auth: {auth: \"!!\"}\n",
                "not the base64 of USER:PASS",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(
                e.starts_with("registries.yaml") && e.contains(want),
                "{text}: {e}"
            );
        }
        assert!(
            parse("")
                .unwrap()
                .sources("docker.io", "library/a", true)
                .len()
                == 1
        );
    }
}
