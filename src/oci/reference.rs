//! Image references, parsed and normalised exactly as Docker and containerd's CRI
//! plugin do.
//!
//! Kubelet asks containerd's CRI plugin for an image by the string a pod spec gives
//! (`redis`, `docker.io/redis:8`, `ghcr.io/org/app:1@sha256:…`), and the plugin looks it
//! up under `reference/docker.ParseDockerRef` of that string. An image gapbundle
//! registers under any other spelling is invisible to kubelet, which then tries to
//! pull it from a network it does not have. So the grammar and every normalisation
//! step here are those of `distribution/reference` (as vendored by containerd in
//! `reference/docker`), not an approximation:
//!
//! - **Grammar**: `name[:tag][@digest]`; `name` is `[domain/]path`, each path component
//!   `[a-z0-9]+` joined by one `.`, one or two `_`, or any number of `-`; a domain is
//!   DNS-like labels (upper case allowed), an IPv4 address or a bracketed IPv6
//!   address, with an optional `:port`; a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`;
//!   the whole name (domain included, after normalisation) is at most 255 characters.
//! - **Domain detection** (`splitDockerDomain`): the first component is a domain when
//!   it contains `.` or `:`, is `localhost`, or has an upper-case letter; otherwise the
//!   domain is `docker.io`. `index.docker.io` is `docker.io`, and a one-component path
//!   on `docker.io` gets `library/`.
//! - **Forms**: [`Reference::normalized`] adds `:latest` when neither tag nor digest is
//!   given (`TagNameOnly`; what the bundle names an image); [`Reference::cri_name`] is
//!   `ParseDockerRef`: a digest wins over a tag (`name:tag@digest` is looked up as
//!   `name@digest`); [`Reference::familiar`] is Docker's short form.
//!
//! Digests must be `sha256:` with 64 lower-case hex digits: Docker also accepts
//! sha384 and sha512, which a gapbundle bundle cannot carry, so those are refused
//! with their own error rather than as malformed. Every error names the reference
//! (control characters escaped, long input shortened) and what is wrong with it.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;

use crate::bundle::Digest;

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy name, normalised to [`DOCKER_HUB`].
pub const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// The host Docker and containerd connect to for [`DOCKER_HUB`] (`docker.DefaultHost`).
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The path prefix of Docker Hub's official images.
const OFFICIAL: &str = "library";
/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";
/// Longest name (domain and path) distribution accepts.
pub const NAME_MAX: usize = 255;

// distribution/reference's regexp.go, spelled with ASCII classes (`\w` is Unicode in
// Rust's regex, ASCII in Go's).
const PATH_COMPONENT: &str = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*";
const DOMAIN_COMPONENT: &str = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const TAG: &str = r"[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
const DIGEST: &str = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";

fn domain_pattern() -> String {
    format!(r"(?:{DOMAIN_COMPONENT}(?:\.{DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
}

fn path_pattern() -> String {
    format!("{PATH_COMPONENT}(?:/{PATH_COMPONENT})*")
}

/// `ReferenceRegexp`: name, tag and digest captured.
static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    let (domain, path) = (domain_pattern(), path_pattern());
    Regex::new(&format!(
        r"^((?:{domain}/)?{path})(?::({TAG}))?(?:@({DIGEST}))?$"
    ))
    .expect("the reference grammar compiles")
});

/// `anchoredNameRegexp`: domain and path of a name captured.
static NAME: LazyLock<Regex> = LazyLock::new(|| {
    let (domain, path) = (domain_pattern(), path_pattern());
    Regex::new(&format!(r"^(?:({domain})/)?({path})$")).expect("the name grammar compiles")
});

static ANCHORED: LazyLock<(Regex, Regex, Regex)> = LazyLock::new(|| {
    let re = |p: &str| Regex::new(&format!("^(?:{p})$")).expect("grammar compiles");
    (re(TAG), re(DIGEST), re(PATH_COMPONENT))
});

/// `anchoredIdentifierRegexp`: a bare image ID, which is never a name.
static IDENTIFIER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[a-f0-9]{64}$").expect("grammar compiles"));

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// Nothing at all.
    #[error("an empty string is not a valid image reference (expected e.g. registry.example.com/team/app:1.2)")]
    Empty,
    /// White space or a control character (a newline, a NUL).
    #[error("`{input}` is not a valid image reference: character {position} is {shown}, and references hold no white space or control characters")]
    Character {
        /// The reference, escaped and shortened for display.
        input: String,
        /// 1-based position of the character.
        position: usize,
        /// The character, escaped (`'\n'`, `' '`).
        shown: String,
    },
    /// 64 hex digits: an image ID, which Docker refuses as a name.
    #[error("`{input}` is not a valid image reference: 64 hex digits are an image ID, not a name (write repository@sha256:{input})")]
    Identifier {
        /// The reference.
        input: String,
    },
    /// An upper-case letter in the repository path.
    #[error("`{input}` is not a valid image reference: the repository name `{repository}` must be lower case")]
    Uppercase {
        /// The reference, escaped and shortened for display.
        input: String,
        /// The repository part at fault.
        repository: String,
    },
    /// Longer than [`NAME_MAX`] once normalised.
    #[error("`{input}` is not a valid image reference: its name is {length} characters long ({name_start}…), at most {NAME_MAX} are allowed")]
    TooLong {
        /// The reference, escaped and shortened for display.
        input: String,
        /// Length of the normalised name.
        length: usize,
        /// The first characters of that name.
        name_start: String,
    },
    /// The part after `:` is not a tag.
    #[error("`{input}` is not a valid image reference: the tag `{tag}` must match [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")]
    Tag {
        /// The reference, escaped and shortened for display.
        input: String,
        /// The tag at fault, shortened.
        tag: String,
    },
    /// The part after `@` is not a digest.
    #[error("`{input}` is not a valid image reference: `{digest}` is not a digest (expected sha256: and 64 lower-case hex digits)")]
    Digest {
        /// The reference, escaped and shortened for display.
        input: String,
        /// The digest at fault, shortened.
        digest: String,
    },
    /// A well-formed digest of another algorithm than sha256.
    #[error("`{input}` is not a usable image reference: only sha256 digests are supported, not {algorithm}")]
    UnsupportedDigest {
        /// The reference, escaped and shortened for display.
        input: String,
        /// The digest's algorithm.
        algorithm: String,
    },
    /// A path component that breaks the grammar (`a//b`, `-x`, `a..b`).
    #[error("`{input}` is not a valid image reference: the path component `{component}` may hold only a-z, 0-9 and single separators (`.`, `_`, `__`, `-`) between them")]
    Component {
        /// The reference, escaped and shortened for display.
        input: String,
        /// The component at fault.
        component: String,
    },
    /// Two `/` in a row, or a `/` at the start or the end of the path.
    #[error("`{input}` is not a valid image reference: it has an empty path component (two `/` in a row, or a `/` at the start or the end)")]
    EmptyComponent {
        /// The reference, escaped and shortened for display.
        input: String,
    },
    /// Anything else the grammar refuses.
    #[error("`{input}` is not a valid image reference (expected e.g. registry.example.com/team/app:1.2 or …@sha256:<64 hex>)")]
    Format {
        /// The reference, escaped and shortened for display.
        input: String,
    },
}

impl crate::error::Classify for ReferenceError {
    /// Whoever gave the name decides (a spec: bad input; a bundle: verification).
    fn class(&self) -> Option<crate::error::ErrorClass> {
        None
    }
}

/// A parsed, normalised image reference (`ParseNormalizedNamed`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses `s` as Docker does, normalising the domain (`redis` is
    /// `docker.io/library/redis`). No default tag is added: see [`Self::normalized`].
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if let Some((i, c)) = s
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_whitespace() || c.is_control())
        {
            return Err(ReferenceError::Character {
                input: shown(s),
                position: i + 1,
                shown: format!("{c:?}"),
            });
        }
        if IDENTIFIER.is_match(s) {
            return Err(ReferenceError::Identifier {
                input: s.to_string(),
            });
        }
        let (domain, remainder, library) = split_docker_domain(s);
        let remote = remainder.split(':').next().unwrap_or_default();
        if remote.to_lowercase() != remote {
            let repository = remote.split('@').next().unwrap_or(remote);
            let repository = match library {
                true => repository.strip_prefix("library/").unwrap_or(repository),
                false => repository,
            };
            return Err(ReferenceError::Uppercase {
                input: shown(s),
                repository: shown(repository),
            });
        }
        let full = format!("{domain}/{remainder}");
        let Some(caps) = REFERENCE.captures(&full) else {
            return Err(diagnose(s, &full));
        };
        let name = &caps[1];
        if name.len() > NAME_MAX {
            return Err(ReferenceError::TooLong {
                input: shown(s),
                length: name.len(),
                name_start: name.chars().take(40).collect(),
            });
        }
        let parts = NAME.captures(name).ok_or_else(|| diagnose(s, &full))?;
        let digest = match caps.get(3) {
            None => None,
            Some(d) => Some(parse_digest(s, d.as_str())?),
        };
        Ok(Reference {
            domain: parts.get(1).map_or("", |m| m.as_str()).to_string(),
            path: parts[2].to_string(),
            tag: caps.get(2).map(|t| t.as_str().to_string()),
            digest,
        })
    }

    /// The registry domain as images name it: `docker.io`, `127.0.0.1:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry: `library/redis`, `team/app`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, when the reference gives one.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, when the reference gives one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The repository name: `docker.io/library/redis`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The full name with `:latest` added when neither tag nor digest is given:
    /// `docker.io/library/redis:latest`, `host:5000/app:1@sha256:…`. Bundles name
    /// images by this form.
    pub fn normalized(&self) -> String {
        if self.tag.is_none() && self.digest.is_none() {
            format!("{}:{DEFAULT_TAG}", self.name())
        } else {
            self.to_string()
        }
    }

    /// The name containerd's CRI plugin looks the image up under
    /// (`ParseDockerRef`): `name@digest` when a digest is given (a tag beside it is
    /// dropped), else `name:tag`, `:latest` by default.
    pub fn cri_name(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{d}", self.name()),
            (None, Some(t)) => format!("{}:{t}", self.name()),
            (None, None) => format!("{}:{DEFAULT_TAG}", self.name()),
        }
    }

    /// `name@root`: the repo digest CRI registers beside the tag.
    pub fn digest_name(&self, root: &Digest) -> String {
        format!("{}@{root}", self.name())
    }

    /// This repository at `digest`, without a tag.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// Docker's short form (`FamiliarString`): `redis:8`, `team/app`,
    /// `ghcr.io/org/app:1`.
    pub fn familiar(&self) -> String {
        let mut s = if self.domain == DOCKER_HUB {
            match self.path.strip_prefix("library/") {
                Some(p) if !p.contains('/') => p.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        };
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
        s
    }

    /// The host the registry API is served from: [`DOCKER_HUB_API`] for Docker Hub
    /// (as `docker.DefaultHost` has it), the domain itself otherwise.
    pub fn api_host(&self) -> &str {
        api_host(&self.domain)
    }
}

/// The registry API host for a domain as references name it.
pub fn api_host(domain: &str) -> &str {
    if domain == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        domain
    }
}

impl fmt::Display for Reference {
    /// `name[:tag][@digest]`, as `distribution/reference` prints it (no default tag).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// `splitDockerDomain`: the domain and the rest (path, tag, digest), and whether
/// `library/` was added to it.
fn split_docker_domain(s: &str) -> (&str, String, bool) {
    let (mut domain, mut remainder) = match s.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first, rest.to_string())
        }
        _ => (DOCKER_HUB, s.to_string()),
    };
    if domain == DOCKER_HUB_LEGACY {
        domain = DOCKER_HUB;
    }
    let library = domain == DOCKER_HUB && !remainder.contains('/');
    if library {
        remainder = format!("{OFFICIAL}/{remainder}");
    }
    (domain, remainder, library)
}

fn parse_digest(input: &str, d: &str) -> Result<Digest, ReferenceError> {
    let (algorithm, _) = d.split_once(':').unwrap_or((d, ""));
    if algorithm != "sha256" {
        return Err(ReferenceError::UnsupportedDigest {
            input: shown(input),
            algorithm: shown(algorithm),
        });
    }
    d.parse().map_err(|_| ReferenceError::Digest {
        input: shown(input),
        digest: shown(d),
    })
}

/// Says which part of a reference the grammar refused.
fn diagnose(input: &str, full: &str) -> ReferenceError {
    let (anchored_tag, anchored_digest, component) = &*ANCHORED;
    if REFERENCE.is_match(&full.to_lowercase()) {
        return ReferenceError::Uppercase {
            input: shown(input),
            repository: shown(input),
        };
    }
    let (rest, digest) = match full.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (full, None),
    };
    if let Some(d) = digest {
        if !anchored_digest.is_match(d) {
            return ReferenceError::Digest {
                input: shown(input),
                digest: shown(d),
            };
        }
    }
    let last_slash = rest.rfind('/').unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        if !anchored_tag.is_match(t) {
            return ReferenceError::Tag {
                input: shown(input),
                tag: shown(t),
            };
        }
    }
    // The domain was split off by `split_docker_domain`; the path follows it.
    let path = name.split_once('/').map_or(name, |(_, p)| p);
    if let Some(bad) = path.split('/').find(|c| !component.is_match(c)) {
        if bad.is_empty() {
            return ReferenceError::EmptyComponent {
                input: shown(input),
            };
        }
        return ReferenceError::Component {
            input: shown(input),
            component: shown(bad),
        };
    }
    ReferenceError::Format {
        input: shown(input),
    }
}

/// `s` for a message: see [`crate::text::shortened`] (at most about 100
/// characters).
fn shown(s: &str) -> String {
    crate::text::shortened(s, 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// input, normalized (bundle name), CRI lookup name, familiar, domain, path.
    #[test]
    fn the_forms_real_charts_use() {
        let d = format!("sha256:{HEX}");
        let table: Vec<(String, String, String, String, &str, &str)> = vec![
            // Short Docker Hub names.
            (
                "redis".into(),
                "docker.io/library/redis:latest".into(),
                "docker.io/library/redis:latest".into(),
                "redis".into(),
                "docker.io",
                "library/redis",
            ),
            (
                "redis:8".into(),
                "docker.io/library/redis:8".into(),
                "docker.io/library/redis:8".into(),
                "redis:8".into(),
                "docker.io",
                "library/redis",
            ),
            (
                "bitnami/redis:7.2".into(),
                "docker.io/bitnami/redis:7.2".into(),
                "docker.io/bitnami/redis:7.2".into(),
                "bitnami/redis:7.2".into(),
                "docker.io",
                "bitnami/redis",
            ),
            // docker.io spelled out, and its legacy name.
            (
                "docker.io/redis:8".into(),
                "docker.io/library/redis:8".into(),
                "docker.io/library/redis:8".into(),
                "redis:8".into(),
                "docker.io",
                "library/redis",
            ),
            (
                "docker.io/library/redis".into(),
                "docker.io/library/redis:latest".into(),
                "docker.io/library/redis:latest".into(),
                "redis".into(),
                "docker.io",
                "library/redis",
            ),
            (
                "index.docker.io/team/app:1".into(),
                "docker.io/team/app:1".into(),
                "docker.io/team/app:1".into(),
                "team/app:1".into(),
                "docker.io",
                "team/app",
            ),
            (
                "index.docker.io/nginx".into(),
                "docker.io/library/nginx:latest".into(),
                "docker.io/library/nginx:latest".into(),
                "nginx".into(),
                "docker.io",
                "library/nginx",
            ),
            // Other registries, with ports, localhost, IPs, deep paths.
            (
                "ghcr.io/stefanprodan/podinfo:6.14.1".into(),
                "ghcr.io/stefanprodan/podinfo:6.14.1".into(),
                "ghcr.io/stefanprodan/podinfo:6.14.1".into(),
                "ghcr.io/stefanprodan/podinfo:6.14.1".into(),
                "ghcr.io",
                "stefanprodan/podinfo",
            ),
            (
                "registry.example:5000/team/app".into(),
                "registry.example:5000/team/app:latest".into(),
                "registry.example:5000/team/app:latest".into(),
                "registry.example:5000/team/app".into(),
                "registry.example:5000",
                "team/app",
            ),
            (
                "127.0.0.1:5000/a/b/c:v1.2-rc.1".into(),
                "127.0.0.1:5000/a/b/c:v1.2-rc.1".into(),
                "127.0.0.1:5000/a/b/c:v1.2-rc.1".into(),
                "127.0.0.1:5000/a/b/c:v1.2-rc.1".into(),
                "127.0.0.1:5000",
                "a/b/c",
            ),
            (
                "localhost/app".into(),
                "localhost/app:latest".into(),
                "localhost/app:latest".into(),
                "localhost/app".into(),
                "localhost",
                "app",
            ),
            (
                "localhost:5000/app:1".into(),
                "localhost:5000/app:1".into(),
                "localhost:5000/app:1".into(),
                "localhost:5000/app:1".into(),
                "localhost:5000",
                "app",
            ),
            (
                "[::1]:5000/app:1".into(),
                "[::1]:5000/app:1".into(),
                "[::1]:5000/app:1".into(),
                "[::1]:5000/app:1".into(),
                "[::1]:5000",
                "app",
            ),
            (
                "quay.io/prometheus/node-exporter:v1.8.2".into(),
                "quay.io/prometheus/node-exporter:v1.8.2".into(),
                "quay.io/prometheus/node-exporter:v1.8.2".into(),
                "quay.io/prometheus/node-exporter:v1.8.2".into(),
                "quay.io",
                "prometheus/node-exporter",
            ),
            // A first component without `.`/`:` is a path, not a host.
            (
                "team/app:1".into(),
                "docker.io/team/app:1".into(),
                "docker.io/team/app:1".into(),
                "team/app:1".into(),
                "docker.io",
                "team/app",
            ),
            // `test.com:5000` alone is a repository with a tag.
            (
                "test.com:5000".into(),
                "docker.io/library/test.com:5000".into(),
                "docker.io/library/test.com:5000".into(),
                "test.com:5000".into(),
                "docker.io",
                "library/test.com",
            ),
            // Upper case is allowed in the domain and the tag.
            (
                "Registry.Example/app:V1".into(),
                "Registry.Example/app:V1".into(),
                "Registry.Example/app:V1".into(),
                "Registry.Example/app:V1".into(),
                "Registry.Example",
                "app",
            ),
            // Separators.
            (
                "a__b/c-----d/e.f_g:t".into(),
                "docker.io/a__b/c-----d/e.f_g:t".into(),
                "docker.io/a__b/c-----d/e.f_g:t".into(),
                "a__b/c-----d/e.f_g:t".into(),
                "docker.io",
                "a__b/c-----d/e.f_g",
            ),
            // Digests: alone, and with a tag (CRI looks up name@digest).
            (
                format!("redis@{d}"),
                format!("docker.io/library/redis@{d}"),
                format!("docker.io/library/redis@{d}"),
                format!("redis@{d}"),
                "docker.io",
                "library/redis",
            ),
            (
                format!("ghcr.io/org/app:1.0@{d}"),
                format!("ghcr.io/org/app:1.0@{d}"),
                format!("ghcr.io/org/app@{d}"),
                format!("ghcr.io/org/app:1.0@{d}"),
                "ghcr.io",
                "org/app",
            ),
            (
                format!("docker.io/redis:8@{d}"),
                format!("docker.io/library/redis:8@{d}"),
                format!("docker.io/library/redis@{d}"),
                format!("redis:8@{d}"),
                "docker.io",
                "library/redis",
            ),
        ];
        for (input, normalized, cri, familiar, domain, path) in table {
            let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.normalized(), normalized, "normalized {input}");
            assert_eq!(r.cri_name(), cri, "CRI name of {input}");
            assert_eq!(r.familiar(), familiar, "familiar {input}");
            assert_eq!((r.domain(), r.path()), (domain, path), "parts of {input}");
            // The normalised form parses back to itself.
            let again = Reference::parse(&r.normalized()).unwrap();
            assert_eq!(again.normalized(), normalized, "round trip of {input}");
            assert_eq!(again.cri_name(), cri, "round trip of {input}");
            // The familiar form means the same image.
            let fam = Reference::parse(&r.familiar()).unwrap();
            assert_eq!(fam, r, "familiar form of {input}");
        }
    }

    #[test]
    fn tags_digests_and_hosts() {
        let d: Digest = format!("sha256:{HEX}").parse().unwrap();
        let r = Reference::parse(&format!("h:1/x:t@{d}")).unwrap();
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.digest(), Some(&d));
        assert_eq!(r.name(), "h:1/x");
        assert_eq!(r.to_string(), format!("h:1/x:t@{d}"));
        let root = Digest::of(b"root");
        assert_eq!(r.digest_name(&root), format!("h:1/x@{root}"));
        assert_eq!(r.with_digest(root).to_string(), format!("h:1/x@{root}"));
        // No default tag in the plain form.
        assert_eq!(
            Reference::parse("redis").unwrap().to_string(),
            "docker.io/library/redis"
        );
        assert_eq!(Reference::parse("redis").unwrap().tag(), None);
        // Where to connect.
        assert_eq!(
            Reference::parse("redis").unwrap().api_host(),
            "registry-1.docker.io"
        );
        assert_eq!(
            Reference::parse("index.docker.io/a/b").unwrap().api_host(),
            "registry-1.docker.io"
        );
        assert_eq!(
            Reference::parse("ghcr.io/a/b").unwrap().api_host(),
            "ghcr.io"
        );
        assert_eq!(
            Reference::parse("127.0.0.1:5000/a").unwrap().api_host(),
            "127.0.0.1:5000"
        );
        // The longest tag, and the longest name.
        let tag = "t".repeat(128);
        assert!(Reference::parse(&format!("app:{tag}")).is_ok());
        let path = "a".repeat(NAME_MAX - "docker.io/library/".len());
        assert!(Reference::parse(&path).is_ok());
    }

    #[test]
    fn invalid_references_say_what_is_wrong() {
        use ReferenceError as E;
        let zeros = "0".repeat(64);
        let long_path = "a".repeat(NAME_MAX - "docker.io/library/".len() + 1);
        // input, the kind of error, what the message says.
        type Case = (String, fn(&E) -> bool, &'static str);
        let cases: Vec<Case> = vec![
            ("".into(), |e| matches!(e, E::Empty), "empty"),
            (
                "a b:1".into(),
                |e| matches!(e, E::Character { position: 2, .. }),
                "character 2 is ' '",
            ),
            (
                "app\n:1".into(),
                |e| matches!(e, E::Character { position: 4, .. }),
                "`app\\n:1`",
            ),
            (
                "app:1\0".into(),
                |e| matches!(e, E::Character { .. }),
                "'\\0'",
            ),
            (
                "\tapp".into(),
                |e| matches!(e, E::Character { position: 1, .. }),
                "'\\t'",
            ),
            (
                "Redis".into(),
                |e| matches!(e, E::Uppercase { .. }),
                "`Redis` must be lower case",
            ),
            (
                "docker.io/Team/app".into(),
                |e| matches!(e, E::Uppercase { .. }),
                "`Team/app`",
            ),
            (
                "ghcr.io/org/App:1".into(),
                |e| matches!(e, E::Uppercase { .. }),
                "lower case",
            ),
            (
                HEX.into(),
                |e| matches!(e, E::Identifier { .. }),
                "image ID",
            ),
            ("app:".into(), |e| matches!(e, E::Tag { .. }), "the tag ``"),
            (
                "app:-x".into(),
                |e| matches!(e, E::Tag { .. }),
                "the tag `-x`",
            ),
            (
                format!("app:{}", "t".repeat(129)),
                |e| matches!(e, E::Tag { .. }),
                "tag",
            ),
            (
                "app:a/b".into(),
                |e| matches!(e, E::Component { .. } | E::Tag { .. } | E::Format { .. }),
                "not a valid",
            ),
            (
                "app@sha256:abc".into(),
                |e| matches!(e, E::Digest { .. }),
                "`sha256:abc` is not a digest",
            ),
            (
                format!("app@sha256:{}", HEX.to_uppercase()),
                |e| matches!(e, E::Digest { .. }),
                "lower-case hex",
            ),
            (
                format!("app@md5:{zeros}"),
                |e| matches!(e, E::UnsupportedDigest { .. }),
                "only sha256",
            ),
            (
                format!("app@sha512:{}", "f".repeat(128)),
                |e| matches!(e, E::UnsupportedDigest { .. }),
                "not sha512",
            ),
            (
                "app@".into(),
                |e| matches!(e, E::Digest { .. }),
                "not a digest",
            ),
            (
                "a//b".into(),
                |e| matches!(e, E::EmptyComponent { .. }),
                "an empty path component",
            ),
            (
                "a/b/".into(),
                |e| matches!(e, E::EmptyComponent { .. }),
                "an empty path component",
            ),
            (
                "-app".into(),
                |e| matches!(e, E::Component { .. }),
                "`-app`",
            ),
            (
                "a..b".into(),
                |e| matches!(e, E::Component { .. }),
                "`a..b`",
            ),
            (
                "host:port/app".into(),
                |e| matches!(e, E::Format { .. }),
                "not a valid image reference",
            ),
            (
                "/app".into(),
                |e| matches!(e, E::EmptyComponent { .. }),
                "an empty path component",
            ),
            (
                ":1".into(),
                |e| matches!(e, E::EmptyComponent { .. }),
                "an empty path component",
            ),
            (
                long_path.clone(),
                |e| matches!(e, E::TooLong { length: 256, .. }),
                "256 characters long",
            ),
            (
                "a".repeat(5000),
                |e| matches!(e, E::TooLong { .. }),
                "(5000 characters)",
            ),
            (
                "ü/app".into(),
                |e| matches!(e, E::Format { .. } | E::Component { .. }),
                "not a valid",
            ),
        ];
        for (input, kind, says) in cases {
            let e = Reference::parse(&input).expect_err(&input);
            assert!(kind(&e), "{input:?}: wrong kind {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(says), "{input:?}: {msg}");
            assert!(
                !msg.contains('\n') && !msg.contains('\0'),
                "{input:?}: raw control character in {msg:?}"
            );
            assert!(msg.chars().count() < 400, "{input:?}: message too long");
        }
    }

    #[test]
    fn messages_name_the_reference() {
        let e = Reference::parse("app@sha256:abc").unwrap_err().to_string();
        assert!(
            e.starts_with("`app@sha256:abc` is not a valid image reference"),
            "{e}"
        );
        let e = Reference::parse("Team/App").unwrap_err().to_string();
        assert!(
            e.contains("`Team/App`") && e.contains("`App` must be lower case"),
            "{e}"
        );
    }
}
