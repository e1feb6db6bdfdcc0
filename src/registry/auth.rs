//! Registry credentials: `--registry-auth HOST=USER:PASS` and Docker's `config.json`.
//!
//! Credentials come from two places, in this order: what the user passed on the
//! command line, then the `auths` section of Docker's `config.json` (what `docker
//! login` writes), so that a machine already logged in needs no extra flags.
//! Anything else is anonymous.
//!
//! Credential helpers (`credHelpers`, `credsStore`) are deliberately not run: they
//! are arbitrary programs on `PATH` that may pop up dialogs or talk to a keychain,
//! which a build step must not do behind the user's back. When one of them would be
//! in charge of a host, the user gets an error naming the helper and the
//! `--registry-auth` flag to use instead. A `credsStore` that merely exists (Docker
//! Desktop sets one by default) does not stop anonymous pulls of public images; it
//! is only mentioned when the registry then refuses access.
//!
//! `Store::lookup` is the one place a credential for a host is found, so another
//! source (a credential helper, Podman's `auth.json`, a K3s `registries.yaml`
//! `configs.<host>.auth`) is one more step there, in the order docker and skopeo use.
//!
//! Hosts are compared after [`normalize_host`], so `https://index.docker.io/v1/`
//! (Docker Hub's key in `config.json`), `index.docker.io` and `docker.io` are the
//! same host, as they are for `docker`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;

use crate::oci::reference::{DOCKER_HUB, DOCKER_HUB_API, DOCKER_HUB_LEGACY};

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

/// All the credentials a run knows about.
#[derive(Debug)]
pub(crate) struct Store {
    explicit: HashMap<String, Credentials>,
    docker_path: Option<PathBuf>,
    /// The parsed config, or why it could not be read (reported only when a host
    /// actually needs it).
    docker: std::result::Result<DockerConfig, String>,
}

impl Store {
    /// `docker_config`: the file to read, else [`default_docker_config`]. A file that
    /// does not exist means "not logged in anywhere".
    pub fn load(explicit: &[(String, Credentials)], docker_config: Option<&Path>) -> Self {
        let explicit = explicit
            .iter()
            .map(|(h, c)| (normalize_host(h), c.clone()))
            .collect();
        let docker_path = docker_config
            .map(Path::to_path_buf)
            .or_else(default_docker_config);
        let docker = match &docker_path {
            None => Ok(DockerConfig::default()),
            #[allow(clippy::disallowed_methods, reason = "NotFound means no logins; other errors name the path")]
            Some(p) => match std::fs::read(p) {
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                    format!(
                        "{} is not a valid Docker config file ({e}): fix it, or set DOCKER_CONFIG to another folder",
                        p.display()
                    )
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerConfig::default()),
                Err(e) => Err(format!("cannot read {}: {e}", p.display())),
            },
        };
        Store {
            explicit,
            docker_path,
            docker,
        }
    }

    /// Credentials for `host` (as in an image reference, e.g. `127.0.0.1:5000`).
    pub fn lookup(&self, host: &str) -> Result<Found> {
        let key = normalize_host(host);
        if let Some(c) = self.explicit.get(&key) {
            return Ok(Found {
                creds: Some(c.clone()),
                origin: Origin::Flag,
            });
        }
        let path = self
            .docker_path
            .clone()
            .unwrap_or_else(|| PathBuf::from("~/.docker/config.json"));
        let cfg = match &self.docker {
            Ok(c) => c,
            Err(e) => bail!("{e} (or pass --registry-auth {key}=USER:PASS)"),
        };
        let helper_error = |helper: &str| {
            anyhow::anyhow!(
                "{} keeps the credentials for {key} in the credential helper `docker-credential-{helper}`, which gapbundle does not run: pass --registry-auth {key}=USER:PASS instead",
                path.display()
            )
        };
        if let Some((_, helper)) = cfg
            .cred_helpers
            .iter()
            .find(|(h, _)| normalize_host(h) == key)
        {
            return Err(helper_error(helper));
        }
        if let Some((_, entry)) = cfg.auths.iter().find(|(h, _)| normalize_host(h) == key) {
            if let Some(creds) = entry
                .to_credentials()
                .with_context(|| format!("{}: bad `auths` entry for {key}", path.display()))?
            {
                return Ok(Found {
                    creds: Some(creds),
                    origin: Origin::DockerConfig(path),
                });
            }
            if let Some(helper) = &cfg.creds_store {
                return Err(helper_error(helper));
            }
        }
        let note = cfg.creds_store.as_ref().map(|helper| {
            format!(
                "{} names the credential store `docker-credential-{helper}`, which gapbundle does not use",
                path.display()
            )
        });
        Ok(Found {
            creds: None,
            origin: Origin::Anonymous { note },
        })
    }
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
                "credsStore":"desktop",
                "credHelpers":{{"ecr.example":"ecr-login"}}}}"#
            ),
        )
        .unwrap();
        let explicit = vec![(
            "reg.example:5000".to_string(),
            Credentials::Bearer { token: "F".into() },
        )];
        let s = Store::load(&explicit, Some(&path));
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
        let e = s.lookup("ecr.example").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-ecr-login")
                && e.contains("--registry-auth ecr.example=USER:PASS"),
            "{e}"
        );
        let e = s.lookup("stored.example").unwrap_err().to_string();
        assert!(e.contains("docker-credential-desktop"), "{e}");
        let anon = s.lookup("public.example").unwrap();
        assert!(anon.creds.is_none());
        assert!(matches!(anon.origin, Origin::Anonymous { note: Some(_) }));
        // A missing file is "not logged in"; a broken one is reported when needed.
        let s = Store::load(&[], Some(&dir.path().join("absent.json")));
        assert!(s.lookup("x.example").unwrap().creds.is_none());
        std::fs::write(&path, "{not json").unwrap();
        let s = Store::load(&[], Some(&path));
        assert!(s
            .lookup("x.example")
            .unwrap_err()
            .to_string()
            .contains("not a valid Docker config"));
    }
}
