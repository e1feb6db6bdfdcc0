//! Registry credentials: `--registry-auth`, K3s's `registries.yaml`, Docker's
//! `config.json` with its credential helpers, and Podman's `auth.json`.
//!
//! Credentials for a host are looked up in this order, and the first place that
//! knows the host decides:
//!
//! 1. `--registry-auth HOST=USER:PASS` (what the user passed for this run);
//! 2. `configs.<host>.auth` of the `--registries` file (what the team wrote for its
//!    nodes; the host is the one an endpoint connects to, so a mirror has its own);
//! 3. Docker's `config.json` (`$DOCKER_CONFIG`, `~/.docker`), as docker, skopeo,
//!    crane and oras read it: a `credHelpers` entry for the host runs that helper, else
//!    a `credsStore` runs that one, else the `auths` entry (what `docker login`
//!    writes without a helper);
//! 4. Podman's `auth.json` (`$REGISTRY_AUTH_FILE`, else
//!    `$XDG_RUNTIME_DIR/containers/auth.json`, else
//!    `$XDG_CONFIG_HOME/containers/auth.json`), which has the same shape.
//!
//! Anything else is anonymous. A credential helper is run as docker runs it:
//! `docker-credential-<name> get` with the server on stdin (`https://index.docker.io/v1/`
//! for Docker Hub, `host[:port]` otherwise) and `{"ServerURL", "Username", "Secret"}`
//! as JSON on stdout, `<token>` as the user name meaning an identity token. Its
//! "credentials not found" answer means anonymous; any other failure, a helper that
//! is not on `PATH`, or one that does not answer within [`HELPER_TIMEOUT`] stops the
//! run with its stderr and the flag to use instead. Each host's answer is asked for
//! once per run.
//!
//! Hosts are compared after [`normalize_host`], so `https://index.docker.io/v1/`
//! (Docker Hub's key in `config.json`), `index.docker.io` and `docker.io` are the
//! same host, as they are for `docker`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;

use crate::io::process::{Cmd, ProcessError};
use crate::oci::reference::{DOCKER_HUB, DOCKER_HUB_API, DOCKER_HUB_LEGACY};
use crate::oci::registries::{Auth, Registries};

/// How long a credential helper may take to answer.
pub const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// The server Docker asks its credential helpers about for Docker Hub.
const DOCKER_HUB_SERVER: &str = "https://index.docker.io/v1/";

/// Credentials for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// HTTP basic authentication (also used to obtain bearer tokens).
    Basic {
        /// User name.
        username: String,
        /// Password or access token.
        password: String,
    },
    /// A bearer token sent as is (`identitytoken` / `registrytoken` in `config.json`).
    Bearer {
        /// The token.
        token: String,
    },
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Credentials::Bearer { .. } => f
                .debug_struct("Bearer")
                .field("token", &"<redacted>")
                .finish(),
        }
    }
}

impl Credentials {
    pub(crate) fn to_registry_auth(&self) -> oci_client::secrets::RegistryAuth {
        use oci_client::secrets::RegistryAuth;
        match self {
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer { token } => RegistryAuth::Bearer(token.clone()),
        }
    }
}

/// The canonical form of a registry host: no scheme, no path, lower case, and
/// Docker Hub's aliases (`index.docker.io`, `registry-1.docker.io`) as `docker.io`.
pub fn normalize_host(host: &str) -> String {
    let h = host.trim();
    let h = h
        .strip_prefix("https://")
        .or_else(|| h.strip_prefix("http://"))
        .unwrap_or(h);
    let h = h.split('/').next().unwrap_or_default().to_ascii_lowercase();
    match h.as_str() {
        DOCKER_HUB_LEGACY | DOCKER_HUB_API => DOCKER_HUB.to_string(),
        _ => h,
    }
}

/// Parses `HOST=USER:PASS` (the value of `--registry-auth`). The password may
/// contain `:` and `=`; the host may not contain `=`.
pub fn parse_registry_auth(arg: &str) -> Result<(String, Credentials)> {
    let usage = "expected HOST=USER:PASS, e.g. --registry-auth registry.example.com:5000=ci:secret";
    let Some((host, userpass)) = arg.split_once('=') else {
        bail!("--registry-auth value has no `=`: {usage}");
    };
    let host = normalize_host(host);
    if host.is_empty() {
        bail!("--registry-auth value has an empty host: {usage}");
    }
    let Some((user, pass)) = userpass.split_once(':') else {
        bail!("--registry-auth value for {host} has no `:` between user and password: {usage}");
    };
    if user.is_empty() {
        bail!("--registry-auth value for {host} has an empty user name: {usage}");
    }
    Ok((
        host,
        Credentials::Basic {
            username: user.to_string(),
            password: pass.to_string(),
        },
    ))
}

/// Docker's config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn default_docker_config() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir).join("config.json")),
        _ => dirs::home_dir().map(|h| h.join(".docker").join("config.json")),
    }
}

/// Podman's `auth.json`: `$REGISTRY_AUTH_FILE`, else
/// `$XDG_RUNTIME_DIR/containers/auth.json`, else `$XDG_CONFIG_HOME/containers/auth.json`
/// (`~/.config`), the first that exists (or the first that is set).
pub fn default_podman_auth() -> Option<PathBuf> {
    let var = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    if let Some(f) = var("REGISTRY_AUTH_FILE") {
        return Some(f);
    }
    let candidates: Vec<PathBuf> = [
        var("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")),
        var("XDG_CONFIG_HOME")
            .or_else(|| dirs::home_dir().map(|h| h.join(".config")))
            .map(|d| d.join("containers/auth.json")),
    ]
    .into_iter()
    .flatten()
    .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .or(candidates.first())
        .cloned()
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

/// Where the credentials used for a host came from, for error messages.
#[derive(Debug, Clone)]
pub enum Origin {
    /// `--registry-auth`.
    Flag,
    /// Docker's `config.json` at this path.
    DockerConfig(PathBuf),
    /// `configs.<host>.auth` of this `registries.yaml`.
    Registries(String),
    /// A Docker credential helper that a config file puts in charge of the host.
    Helper {
        /// Its name (`docker-credential-<name>`).
        name: String,
        /// The config file that names it.
        config: PathBuf,
    },
    /// Podman's `auth.json` at this path.
    Podman(PathBuf),
    /// No credentials.
    Anonymous {
        /// Why none were found, when that is worth saying.
        note: Option<String>,
    },
}

/// Credentials found for one host.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub creds: Option<Credentials>,
    pub origin: Origin,
}

/// A config file in Docker's format, or why it cannot be used (reported only when a
/// host actually needs it).
#[derive(Debug)]
struct ConfigFile {
    path: PathBuf,
    parsed: std::result::Result<DockerConfig, String>,
}

impl ConfigFile {
    fn load(path: PathBuf, fix: &str) -> ConfigFile {
        #[allow(
            clippy::disallowed_methods,
            reason = "NotFound means no logins; other errors name the path"
        )]
        let parsed = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is not a valid credentials file ({e}): fix it, or {fix}",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerConfig::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        };
        ConfigFile { path, parsed }
    }
}

/// All the credentials a run knows about.
#[derive(Debug)]
pub(crate) struct Store {
    explicit: HashMap<String, Credentials>,
    registries: Option<Arc<Registries>>,
    docker: Option<ConfigFile>,
    podman: Option<ConfigFile>,
    /// What each host's lookup found (a helper runs once per host and run).
    answers: Mutex<HashMap<String, std::result::Result<Found, String>>>,
}

impl Store {
    /// The credentials of `settings`: its `--registry-auth` values, its registries
    /// file, its Docker config (else [`default_docker_config`]) and Podman's
    /// `auth.json` ([`default_podman_auth`]). A file that does not exist means "not
    /// logged in anywhere".
    pub fn load(settings: &super::Settings) -> Self {
        let explicit = settings
            .credentials
            .iter()
            .map(|(h, c)| (normalize_host(h), c.clone()))
            .collect();
        let docker = settings
            .docker_config
            .clone()
            .or_else(default_docker_config)
            .map(|p| ConfigFile::load(p, "set DOCKER_CONFIG to another folder"));
        let podman = settings
            .podman_auth
            .clone()
            .map(|p| ConfigFile::load(p, "set REGISTRY_AUTH_FILE to another file"));
        Store {
            explicit,
            registries: settings.registries.clone(),
            docker,
            podman,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// Credentials for `host` (as in an image reference or an endpoint, e.g.
    /// `127.0.0.1:5000`), found once per run.
    pub fn lookup(&self, host: &str) -> Result<Found> {
        let key = normalize_host(host);
        if let Some(found) = self.answers.lock().expect("not poisoned").get(&key) {
            return found.clone().map_err(|e| anyhow::anyhow!(e));
        }
        let found = self.find(&key).map_err(|e| format!("{e:#}"));
        self.answers
            .lock()
            .expect("not poisoned")
            .insert(key, found.clone());
        found.map_err(|e| anyhow::anyhow!(e))
    }

    fn find(&self, key: &str) -> Result<Found> {
        if let Some(c) = self.explicit.get(key) {
            return Ok(Found {
                creds: Some(c.clone()),
                origin: Origin::Flag,
            });
        }
        if let Some(r) = &self.registries {
            if let Some(auth) = r.config(key).and_then(|c| c.auth.as_ref()) {
                return Ok(Found {
                    creds: Some(match auth {
                        Auth::Basic { username, password } => Credentials::Basic {
                            username: username.clone(),
                            password: password.clone(),
                        },
                        Auth::Token(token) => Credentials::Bearer {
                            token: token.clone(),
                        },
                    }),
                    origin: Origin::Registries(r.source_name.clone()),
                });
            }
        }
        let mut note = None;
        for (file, docker) in [(&self.docker, true), (&self.podman, false)] {
            let Some(file) = file else { continue };
            let cfg = match &file.parsed {
                Ok(c) => c,
                Err(e) => bail!("{e} (or pass --registry-auth {key}=USER:PASS)"),
            };
            let helper = cfg
                .cred_helpers
                .iter()
                .find(|(h, _)| normalize_host(h) == key)
                .map(|(_, name)| name)
                .or(cfg.creds_store.as_ref())
                .filter(|name| !name.trim().is_empty());
            if let Some(name) = helper {
                // A helper named for this host must answer; the general store
                // (Docker Desktop names one by default) may be missing.
                let own = cfg
                    .cred_helpers
                    .iter()
                    .any(|(h, _)| normalize_host(h) == key);
                match run_helper(name, key, &file.path)? {
                    Helped::Creds(creds) => {
                        return Ok(Found {
                            creds: Some(creds),
                            origin: Origin::Helper {
                                name: name.clone(),
                                config: file.path.clone(),
                            },
                        })
                    }
                    Helped::Nothing => {
                        note.get_or_insert(format!(
                            "docker-credential-{name} (named in {}) has no credentials for {key}",
                            file.path.display()
                        ));
                    }
                    Helped::Missing(e) if own => return Err(e),
                    Helped::Missing(_) => {
                        note.get_or_insert(format!(
                            "{} names the credential store docker-credential-{name}, which is not on PATH",
                            file.path.display()
                        ));
                    }
                }
            }
            if let Some((_, entry)) = cfg.auths.iter().find(|(h, _)| normalize_host(h) == key) {
                if let Some(creds) = entry.to_credentials().with_context(|| {
                    format!("{}: bad `auths` entry for {key}", file.path.display())
                })? {
                    return Ok(Found {
                        creds: Some(creds),
                        origin: if docker {
                            Origin::DockerConfig(file.path.clone())
                        } else {
                            Origin::Podman(file.path.clone())
                        },
                    });
                }
            }
        }
        Ok(Found {
            creds: None,
            origin: Origin::Anonymous { note },
        })
    }
}

/// What a credential helper said.
enum Helped {
    /// Credentials.
    Creds(Credentials),
    /// It has none for the host.
    Nothing,
    /// It is not on `PATH` (the error says so).
    Missing(anyhow::Error),
}

/// Asks `docker-credential-<name>` for the credentials of `key` (see the module
/// documentation).
fn run_helper(name: &str, key: &str, config: &Path) -> Result<Helped> {
    let program = format!("docker-credential-{name}");
    let server = if key == DOCKER_HUB {
        DOCKER_HUB_SERVER.to_string()
    } else {
        key.to_string()
    };
    let instead = format!("or pass --registry-auth {key}=USER:PASS instead");
    let named = format!("{} names it for {key}", config.display());
    let finished = match Cmd::new(
        &program,
        &format!("install it, or remove it from {}, {instead}", config.display()),
    )
    .arg("get")
    .stdin(format!("{server}\n"))
    .run(HELPER_TIMEOUT)
    {
        Ok(f) => f,
        Err(e @ ProcessError::NotFound { .. }) => {
            return Ok(Helped::Missing(anyhow::Error::new(e).context(format!(
                "the credential helper {program} is not installed ({named})"
            ))))
        }
        Err(e) => return Err(match e {
        ProcessError::TimedOut { stderr, .. } => anyhow::anyhow!(
            "the credential helper {program} did not answer for {server} within {} s ({named}){}: unlock or fix it (try `echo {server} | {program} get`), {instead}",
            HELPER_TIMEOUT.as_secs(),
            if stderr.is_empty() { String::new() } else { format!("; its stderr: {stderr}") }
        ),
        e => anyhow::Error::new(e).context(format!("the credential helper {program} could not be run ({named})")),
    }),
    };
    let stdout = String::from_utf8_lossy(&finished.stdout);
    if !finished.success {
        let said = format!("{} {}", stdout.trim(), finished.stderr.trim());
        // The message docker's credential helpers give for a host they do not know.
        if said.contains("credentials not found") {
            return Ok(Helped::Nothing);
        }
        bail!(
            "the credential helper {program} failed for {server} ({}; {named}): {}: fix the helper (try `echo {server} | {program} get`), {instead}",
            finished.status,
            said.trim()
        );
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        #[serde(default)]
        username: String,
        #[serde(default)]
        secret: String,
    }
    let a: Answer = serde_json::from_str(stdout.trim()).map_err(|e| {
        anyhow::anyhow!(
            "the credential helper {program} answered for {server} with something that is not its JSON ({e}; {named}): fix the helper, {instead}"
        )
    })?;
    Ok(match (a.username.as_str(), a.secret) {
        (_, s) if s.is_empty() => Helped::Nothing,
        ("<token>", token) => Helped::Creds(Credentials::Bearer { token }),
        ("", _) => Helped::Nothing,
        (u, password) => Helped::Creds(Credentials::Basic {
            username: u.to_string(),
            password,
        }),
    })
}

impl DockerAuth {
    fn to_credentials(&self) -> Result<Option<Credentials>> {
        for token in [&self.registrytoken, &self.identitytoken]
            .into_iter()
            .flatten()
        {
            if !token.is_empty() {
                return Ok(Some(Credentials::Bearer {
                    token: token.clone(),
                }));
            }
        }
        if let Some(auth) = self
            .auth
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth)
                .context("`auth` is not base64")?;
            let text = String::from_utf8(raw).context("`auth` is not UTF-8")?;
            let (u, p) = text
                .split_once(':')
                .context("`auth` does not decode to USER:PASS")?;
            return Ok(Some(Credentials::Basic {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
        match (&self.username, &self.password) {
            (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credentials::Basic {
                username: u.clone(),
                password: p.clone(),
            })),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::disallowed_methods,
    reason = "test fixtures: std::fs and the tools that make them, where a failure is the test's"
)]
mod tests {
    use super::*;

    #[test]
    fn registry_auth_flag_parses_and_keeps_colons_in_passwords() {
        let (h, c) = parse_registry_auth("127.0.0.1:5000=me:se:cr=et").unwrap();
        assert_eq!(h, "127.0.0.1:5000");
        assert_eq!(
            c,
            Credentials::Basic {
                username: "me".into(),
                password: "se:cr=et".into()
            }
        );
        let (h, _) = parse_registry_auth("https://index.docker.io/v1/=u:p").unwrap();
        assert_eq!(h, "docker.io");
        for bad in ["nohost", "=u:p", "h=nopass", "h=:p"] {
            assert!(parse_registry_auth(bad).is_err(), "{bad}");
        }
        assert!(!format!("{c:?}").contains("se:cr"));
    }

    fn store(explicit: Vec<(String, Credentials)>, docker: &Path, podman: Option<&Path>) -> Store {
        Store::load(&super::super::Settings {
            credentials: explicit,
            docker_config: Some(docker.to_path_buf()),
            podman_auth: podman.map(Path::to_path_buf),
            ..super::super::Settings::default()
        })
    }

    #[test]
    fn docker_config_entries_helpers_and_stores() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:pw");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{b64}"}},
                "reg.example:5000":{{"username":"bob","password":"x"}},
                "tok.example":{{"identitytoken":"T"}},
                "stored.example":{{}}}},
                "credsStore":"gapbundle-test-absent-store",
                "credHelpers":{{"ecr.example":"gapbundle-test-absent-helper"}}}}"#
            ),
        )
        .unwrap();
        let explicit = vec![(
            "reg.example:5000".to_string(),
            Credentials::Bearer { token: "F".into() },
        )];
        let podman = dir.path().join("auth.json");
        let b64 = base64::engine::general_purpose::STANDARD.encode("pod:man");
        std::fs::write(
            &podman,
            format!(r#"{{"auths":{{"quay.io":{{"auth":"{b64}"}}}}}}"#),
        )
        .unwrap();
        let s = store(explicit, &path, Some(&podman));
        // The general store is not installed: the auths entry still answers.
        let hub = s.lookup("docker.io").unwrap();
        assert_eq!(
            hub.creds,
            Some(Credentials::Basic {
                username: "alice".into(),
                password: "pw".into()
            })
        );
        assert!(matches!(
            s.lookup("reg.example:5000").unwrap().origin,
            Origin::Flag
        ));
        assert_eq!(
            s.lookup("tok.example").unwrap().creds,
            Some(Credentials::Bearer { token: "T".into() })
        );
        // A helper named for the host must be there.
        let e = s.lookup("ecr.example").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-gapbundle-test-absent-helper is not installed")
                && e.contains("--registry-auth ecr.example=USER:PASS"),
            "{e}"
        );
        // Nothing for the host anywhere: anonymous, with a note on the store.
        let anon = s.lookup("stored.example").unwrap();
        assert!(anon.creds.is_none());
        assert!(
            matches!(&anon.origin, Origin::Anonymous { note: Some(n) } if n.contains("not on PATH")),
            "{:?}",
            anon.origin
        );
        // Podman's file comes after Docker's.
        let q = s.lookup("quay.io").unwrap();
        assert!(matches!(q.origin, Origin::Podman(_)));
        // A missing file is "not logged in"; a broken one is reported when needed.
        let s = store(Vec::new(), &dir.path().join("absent.json"), None);
        assert!(s.lookup("x.example").unwrap().creds.is_none());
        std::fs::write(&path, "{not json").unwrap();
        let s = store(Vec::new(), &path, None);
        assert!(s
            .lookup("x.example")
            .unwrap_err()
            .to_string()
            .contains("not a valid credentials file"));
    }

    #[test]
    fn the_registries_file_comes_after_the_flag_and_before_docker() {
        let dir = tempfile::tempdir().unwrap();
        let r = Registries::parse(
            "r.yaml",
            dir.path(),
            "configs:\n  mirror:5000:\n    auth: {username: m, password: p}\n  \"*\":\n    auth: {identity_token: T}\n",
        )
        .unwrap();
        let s = Store::load(&super::super::Settings {
            credentials: vec![(
                "flag:1".into(),
                Credentials::Basic {
                    username: "f".into(),
                    password: "p".into(),
                },
            )],
            registries: Some(Arc::new(r)),
            docker_config: Some(dir.path().join("absent.json")),
            ..super::super::Settings::default()
        });
        assert!(matches!(s.lookup("flag:1").unwrap().origin, Origin::Flag));
        let m = s.lookup("MIRROR:5000").unwrap();
        assert!(matches!(m.origin, Origin::Registries(ref f) if f == "r.yaml"));
        // The wildcard applies to every other host.
        assert_eq!(
            s.lookup("ghcr.io").unwrap().creds,
            Some(Credentials::Bearer { token: "T".into() })
        );
    }
}
