//! Charts: finding them (local, chart repository, OCI registry), pinning pulled ones
//! in the lock, and rendering them with `helm template`.
//!
//! A chart repository is read with Helm itself, in a throw-away Helm home
//! (`HELM_CONFIG_HOME`, `HELM_CACHE_HOME`, `HELM_DATA_HOME` in a temporary folder) so
//! that the user's own repository list is neither used nor changed: `helm repo add`
//! fetches `index.yaml`, `helm pull` the archive, and the archive's sha256 is then
//! compared with the `digest` the index gives for that version. OCI charts are
//! content-addressed already and checked by Helm as it pulls them. Either way the
//! archive goes into the cache and the lock records its version and digest; a later
//! create with the archive cached uses it without any network request.
//!
//! The network settings are the ones images use ([`crate::registry`]), looked up by
//! the repository's or registry's host[:port]:
//!
//! - **Mirrors.** An OCI chart is pulled through the mirrors K3s's `registries.yaml`
//!   lists for its registry, rewritten as for images, then from the registry itself
//!   ([`Router::routes`]); the chart keeps its upstream name in the bundle and the
//!   lock (`oci://ghcr.io/org/charts/web:1.2.0`). Chart repositories (`index.yaml`
//!   over HTTP) have no mirrors in that file; their host's `configs` still apply.
//! - **TLS.** The system's roots (Helm reads `SSL_CERT_FILE`/`SSL_CERT_DIR` itself),
//!   plus `--registry-ca` and the host's `configs.<host>.tls.ca_file`: those are
//!   copied into a folder of the throw-away home that Helm gets in `SSL_CERT_DIR`
//!   (Helm's own `--ca-file` would replace the system's roots instead of adding to
//!   them). A client certificate goes in `--cert-file`/`--key-file` (paths, no
//!   secret), `insecure_skip_verify` is `--insecure-skip-tls-verify`.
//! - **Proxies.** Helm inherits `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`. (Go
//!   never proxies loopback addresses.)
//! - **Credentials** (`--registry-auth`, the registries file, Docker's and Podman's
//!   files and credential helpers; [`crate::registry::auth`]). Helm gets the password
//!   on stdin (`--password-stdin`), never as an argument, and keeps it only in the
//!   throw-away Helm home: `helm repo add` writes it to that home's
//!   `repositories.yaml`, `helm registry login` to a registry config there
//!   (`HELM_REGISTRY_CONFIG`), so the user's own Helm configuration is neither read
//!   nor changed. Both files are removed as soon as the chart is pulled. The
//!   credentials never reach the bundle or the lock, which name charts by URL only.

use std::path::{Path, PathBuf};

use anyhow::Context;
use fs_err as fs;
use serde_yaml_ng::Value;

use super::{blame, split, Collector, Stored, HELM_HINT};
use crate::bundle::manifest::{BlobEntry, Kind, Object};
use crate::bundle::meta::{ChartMeta, Meta};
use crate::bundle::Digest;
use crate::error::{InputFailure, RegistryFailure};
use crate::io::cas::Cas;
use crate::io::process::{Cmd, ProcessError};
use crate::k8s::{self, helmchart};
use crate::oci::Reference;
use crate::progress::Progress;
use crate::registry::auth::{normalize_host, Credentials, Found, Origin, Store};
use crate::registry::client::{Route, Router};
use crate::registry::errors::refusal_hint;
use crate::resolve::LockCtx;
use crate::spec::file::ChartEntry;
use crate::spec::{LoadedSpec, LockedChart};

/// One chart entry to render.
pub(super) struct ChartJob<'a> {
    pub index: usize,
    pub entry: &'a ChartEntry,
    pub spec: &'a LoadedSpec,
    pub cas: &'a Cas,
    pub progress: &'a Progress,
    /// Credentials for chart repositories and registries.
    pub credentials: &'a Store,
    /// Mirrors and TLS per host.
    pub router: &'a Router,
    /// A private temporary folder for this entry.
    pub tmp: &'a Path,
    pub discover: bool,
}

/// A chart pulled from a repository or registry.
struct Pulled {
    /// The lock key.
    key: String,
    /// The chart's name in the bundle (`http://repo/web:0.1.0`, `oci://host/charts/web:0.1.0`).
    object_name: String,
    version: String,
    digest: Digest,
    size: u64,
}

/// What `helm show chart` says.
struct ChartInfo {
    name: String,
    version: String,
}

fn helm() -> Cmd {
    Cmd::new("helm", HELM_HINT)
}

/// Renders one `charts:` entry into the collector.
pub(super) fn render_chart(
    job: &ChartJob<'_>,
    lock: &mut LockCtx<'_>,
    out: &mut Collector,
) -> anyhow::Result<()> {
    let i = job.index;
    let e = job.entry;
    let (chart_path, pulled) = locate(job, lock)?;
    let info = show_chart(&chart_path).map_err(|err| {
        blame(err, |err| {
            InputFailure(format!(
                "charts[{i}]: {} is not a usable chart; fix it and run create again: {err:#}",
                chart_path.display()
            ))
        })
    })?;
    let release = e.release.clone().unwrap_or_else(|| info.name.clone());
    let source = format!("chart:{release}");
    job.progress.message(format!(
        "rendering {source} ({} {})",
        info.name, info.version
    ));

    let mut values_args = Vec::new();
    let mut merged = Value::Null;
    for f in &e.values_files {
        let p = job.spec.base.join(f);
        let text = fs::read_to_string(&p).map_err(|err| {
            InputFailure(format!(
                "charts[{i}] ({source}): cannot read values file {}: {err}",
                p.display()
            ))
        })?;
        let v: Value = serde_yaml_ng::from_str(&text).map_err(|err| {
            InputFailure(format!(
                "charts[{i}] ({source}): values file {} is not YAML: {err}",
                p.display()
            ))
        })?;
        helmchart::merge_values(&mut merged, &v);
        values_args.push(p);
    }
    if let Some(v) = &e.values {
        let p = job.tmp.join("inline-values.yaml");
        fs::write(&p, serde_yaml_ng::to_string(v)?)?;
        helmchart::merge_values(&mut merged, v);
        values_args.push(p);
    }

    let mut cmd = helm()
        .arg("template")
        .arg(&release)
        .arg(&chart_path)
        .args(["--include-crds", "--skip-tests"]);
    if let Some(ns) = &e.namespace {
        cmd = cmd.args(["--namespace", ns]);
    }
    for p in &values_args {
        cmd = cmd.arg("-f").arg(p);
    }
    let rendered = cmd.output().map_err(|err| {
        blame(err, |err| {
            InputFailure(format!(
                "charts[{i}] ({source}): helm could not render the chart; fix the chart or its values and run create again: {err:#}"
            ))
        })
    })?;
    let docs = split(&source, &rendered, e.namespace.as_deref())?;

    if let Some(p) = &pulled {
        let meta = Meta::Chart(ChartMeta {
            chart: info.name.clone(),
            version: p.version.clone(),
            digest: p.digest,
            source: p.key.clone(),
            extra: Default::default(),
        });
        out.blobs.push((
            BlobEntry::new(p.digest, p.size, k8s::CHART_MEDIA_TYPE),
            k8s::RANK_CHART,
        ));
        out.objects.push(Object {
            kind: Kind::Chart,
            name: p.object_name.clone(),
            digest: p.digest,
            media_type: k8s::CHART_MEDIA_TYPE.into(),
            size: p.size,
            blobs: vec![p.digest],
            meta,
        });
    }

    let create_namespace = e.create_namespace.unwrap_or(true);
    match e.chart_mode.as_deref().unwrap_or("manifests") {
        "manifests" => {
            // Whether anything else in the bundle creates the namespace is known
            // only once every source rendered: the chart's documents wait for it.
            let namespace = e.namespace.clone().filter(|_| create_namespace);
            out.defer_rendered(&source, docs, job.discover, namespace);
            Ok(())
        }
        "helmchart" => {
            let mut images = Vec::new();
            for d in &docs {
                let found = k8s::workload_images(&d.value);
                if job.discover {
                    out.want(&source, d, &found);
                }
                for f in found {
                    if !images.contains(&f) {
                        images.push(f);
                    }
                }
            }
            let tgz = chart_archive(job, &chart_path, pulled.as_ref())?;
            let values = helmchart::values_yaml(&merged)?;
            let bytes = helmchart::helmchart_document(
                &release,
                e.namespace.as_deref(),
                create_namespace,
                &tgz,
                &values,
            )?;
            let mut doc = k8s::split_documents(&source, &bytes, None)?;
            let doc = doc.pop().context("a HelmChart document")?;
            out.store(job.cas, &source, vec![Stored { doc, images }])
        }
        other => Err(InputFailure(format!(
            "charts[{i}]: chartMode `{other}` is not one of `manifests`, `helmchart`"
        ))
        .into()),
    }
}

/// `helm show chart`: the chart's name and version.
fn show_chart(chart: &Path) -> anyhow::Result<ChartInfo> {
    let yaml = helm().args(["show", "chart"]).arg(chart).output()?;
    let v: Value = serde_yaml_ng::from_slice(&yaml).context("`helm show chart` printed no YAML")?;
    let field = |f: &str| {
        v.get(f)
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("Chart.yaml has no `{f}`"))
    };
    Ok(ChartInfo {
        name: field("name")?,
        version: field("version")?,
    })
}

/// The chart archive a `HelmChart` resource carries: the pulled or given `.tgz` as it
/// is, or a local chart folder packaged by Helm and made reproducible.
fn chart_archive(
    job: &ChartJob<'_>,
    chart: &Path,
    pulled: Option<&Pulled>,
) -> anyhow::Result<Vec<u8>> {
    if pulled.is_some() || chart.is_file() {
        return Ok(fs::read(chart)?);
    }
    let i = job.index;
    let dest = job.tmp.join("package");
    fs::create_dir_all(&dest)?;
    helm()
        .arg("package")
        .arg(chart)
        .arg("-d")
        .arg(&dest)
        .output()
        .map_err(|err| {
            blame(err, |err| {
                InputFailure(format!(
                    "charts[{i}]: helm could not package {}; fix the chart and run create again: {err:#}",
                    chart.display()
                ))
            })
        })?;
    let tgz = single_tgz(&dest)?;
    let tar = Cmd::new("gzip", "install gzip (Debian: apt-get install gzip)")
        .arg("-dc")
        .arg(&tgz)
        .output()?;
    k8s::archive::normalize_chart_tar(&tar).with_context(|| format!("repacking {}", tgz.display()))
}

fn single_tgz(dir: &Path) -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tgz"))
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        n => anyhow::bail!("expected one chart archive in {}, found {n}", dir.display()),
    }
}

/// Finds the chart of an entry: a local path, or a pulled (and pinned) archive.
fn locate(job: &ChartJob<'_>, lock: &mut LockCtx<'_>) -> anyhow::Result<(PathBuf, Option<Pulled>)> {
    let i = job.index;
    let e = job.entry;
    if let Some(path) = &e.path {
        let p = job.spec.base.join(path);
        if !p.exists() {
            return Err(InputFailure(format!(
                "charts[{i}]: {} does not exist; `path:` names a chart folder or .tgz relative to {}",
                p.display(),
                job.spec.base.display()
            ))
            .into());
        }
        return Ok((p, None));
    }
    let requested = e
        .version
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty());
    let (key, what) = match (&e.repo, &e.oci, &e.name) {
        (Some(url), None, Some(name)) => (
            format!("repo:{url}#{name}@{}", requested.unwrap_or("*")),
            Source::Repo { url, name },
        ),
        (None, Some(reference), _) => (
            format!("oci:{reference}@{}", requested.unwrap_or("*")),
            Source::Oci { reference },
        ),
        _ => {
            return Err(InputFailure(format!(
                "charts[{i}]: give `path:`, `repo:` with `name:`, or `oci:`"
            ))
            .into())
        }
    };
    if let Source::Repo { url, .. } = &what {
        if url_authority(url).contains('@') {
            // The spec and the lock both travel in the bundle.
            return Err(InputFailure(format!(
                "charts[{i}]: the `repo:` URL carries a user name or password, which would be stored in the bundle and the lock; remove it and pass --registry-auth {}=USER:PASS instead",
                normalize_host(url_host(url))
            ))
            .into());
        }
    }
    let pinned = if lock.update {
        None
    } else {
        lock.old.charts.get(&key).cloned()
    };
    if lock.locked && pinned.is_none() {
        return Err(InputFailure(format!(
            "--locked: charts[{i}] ({key}) is not in the lock file; run create without --locked to add it"
        ))
        .into());
    }
    let object_name = |version: &str| match &what {
        Source::Repo { url, name } => format!("{}/{name}:{version}", url.trim_end_matches('/')),
        Source::Oci { reference } => format!("{reference}:{version}"),
    };
    // A pinned archive already in the cache needs no network at all.
    if let Some(p) = &pinned {
        if job.cas.contains(&p.digest, None) {
            let path = job.cas.path(&p.digest);
            let size = fs::metadata(&path)?.len();
            lock.new.charts.insert(key.clone(), p.clone());
            return Ok((
                path,
                Some(Pulled {
                    object_name: object_name(&p.version),
                    key,
                    version: p.version.clone(),
                    digest: p.digest,
                    size,
                }),
            ));
        }
    }
    let version = pinned.as_ref().map(|p| p.version.as_str()).or(requested);
    let dest = job.tmp.join("pull");
    fs::create_dir_all(&dest)?;
    job.progress.message(format!("pulling chart {key}"));
    let tgz = match &what {
        Source::Repo { url, name } => pull_repo(job, url, name, version, &dest)?,
        Source::Oci { reference } => pull_oci(job, reference, version, &dest)?,
    };
    let info = show_chart(&tgz).map_err(|err| {
        blame(err, |err| {
            RegistryFailure(format!(
                "charts[{i}]: {key} gave an archive that is not a chart: {err:#}"
            ))
        })
    })?;
    let (digest, size) = job
        .cas
        .import_reader(fs::File::open(&tgz)?, None)
        .context("storing the chart archive in the cache")?;
    if let Source::Repo { url, name } = &what {
        if let Some(want) = repo_index_digest(job.tmp, name, &info.version)? {
            if want != digest {
                return Err(RegistryFailure(format!(
                    "charts[{i}]: {url} served {name} {} as {digest}, but its index.yaml says {want}; the repository is inconsistent or the download was altered",
                    info.version
                ))
                .into());
            }
        }
    }
    if let Some(p) = &pinned {
        if p.digest != digest || p.version != info.version {
            if lock.locked {
                return Err(InputFailure(format!(
                    "--locked: {key} is now {} {digest} but the lock pins {} {}; run create without --locked to update the lock",
                    info.version, p.version, p.digest
                ))
                .into());
            }
            job.progress.message(format!(
                "{key}: changed from {} {} to {} {digest}",
                p.version, p.digest, info.version
            ));
        }
    }
    lock.new.charts.insert(
        key.clone(),
        LockedChart {
            version: info.version.clone(),
            digest,
        },
    );
    Ok((
        job.cas.path(&digest),
        Some(Pulled {
            object_name: object_name(&info.version),
            key,
            version: info.version,
            digest,
            size,
        }),
    ))
}

enum Source<'a> {
    Repo { url: &'a str, name: &'a str },
    Oci { reference: &'a str },
}

/// Environment for Helm commands that must not touch the user's Helm home.
fn isolated_helm(tmp: &Path) -> Cmd {
    let home = tmp.join("helm-home");
    // The two repository variables win over the homes when a user has set them.
    helm()
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("HELM_REPOSITORY_CACHE", home.join("cache/repository"))
        .env(
            "HELM_REPOSITORY_CONFIG",
            home.join("config/repositories.yaml"),
        )
        .env("HELM_REGISTRY_CONFIG", registry_config(tmp))
}

/// The registry config (`helm registry login`'s credentials) of the throw-away home.
fn registry_config(tmp: &Path) -> PathBuf {
    tmp.join("helm-home/config/registry/config.json")
}

/// What Helm is told to reach one host over TLS: extra CAs through `SSL_CERT_DIR`,
/// the client certificate's paths, whether to check the certificate.
struct HelmTls {
    /// `SSL_CERT_DIR` for Helm: a folder holding the extra CAs, then the folders
    /// Helm would read anyway.
    cert_dir: Option<std::ffi::OsString>,
    client: Option<(PathBuf, PathBuf)>,
    insecure: bool,
}

impl HelmTls {
    /// The TLS of `host` (see [`Router::tls`]); CA files are copied into a folder of
    /// `tmp`.
    fn of(job: &ChartJob<'_>, host: &str) -> anyhow::Result<HelmTls> {
        let t = job.router.tls(host);
        let cert_dir = if t.ca_files.is_empty() {
            None
        } else {
            let dir = job
                .tmp
                .join(format!("cas-{}", host.replace([':', '/'], "_")));
            fs::create_dir_all(&dir)?;
            for (i, f) in t.ca_files.iter().enumerate() {
                let pem = fs::read(f).map_err(|e| {
                    InputFailure(format!(
                        "charts[{}]: cannot read the CA file {}: {e}",
                        job.index,
                        f.display()
                    ))
                })?;
                fs::write(dir.join(format!("ca-{i}.pem")), pem)?;
            }
            // Go reads these instead of its default folders once SSL_CERT_DIR is set.
            let rest = std::env::var_os("SSL_CERT_DIR")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "/etc/ssl/certs:/etc/pki/tls/certs".into());
            let mut v = dir.into_os_string();
            v.push(":");
            v.push(rest);
            Some(v)
        };
        Ok(HelmTls {
            cert_dir,
            client: t.client,
            insecure: t.insecure,
        })
    }

    /// `cmd` with these settings; `skip_verify` is the flag that command spells
    /// `insecure_skip_verify` with (`--insecure-skip-tls-verify`, or `--insecure`
    /// for `helm registry login`).
    fn apply(&self, mut cmd: Cmd, skip_verify: &str) -> Cmd {
        if let Some(d) = &self.cert_dir {
            cmd = cmd.env("SSL_CERT_DIR", d);
        }
        if let Some((c, k)) = &self.client {
            cmd = cmd.arg("--cert-file").arg(c).arg("--key-file").arg(k);
        }
        if self.insecure {
            cmd = cmd.arg(skip_verify);
        }
        cmd
    }
}

/// Where the credentials for one chart host come from.
struct HostAuth {
    /// host[:port], as `--registry-auth` takes it.
    host: String,
    found: Found,
}

impl HostAuth {
    /// Looks `host` up as for an image registry.
    fn lookup(job: &ChartJob<'_>, host: &str) -> anyhow::Result<HostAuth> {
        let i = job.index;
        let host = normalize_host(host);
        let found = job
            .credentials
            .lookup(&host)
            .map_err(|e| RegistryFailure(format!("charts[{i}]: {e:#}")))?;
        Ok(HostAuth { host, found })
    }

    /// The user name and password to give Helm, if any. Helm takes no bearer
    /// tokens for chart repositories, nor identity tokens from Docker's config.
    fn basic(&self, i: usize) -> anyhow::Result<Option<(&str, &str)>> {
        match &self.found.creds {
            None => Ok(None),
            Some(Credentials::Basic { username, password }) => Ok(Some((username, password))),
            Some(Credentials::Bearer { .. }) => {
                let from = match &self.found.origin {
                    Origin::DockerConfig(p) => p.display().to_string(),
                    _ => "the credentials".to_string(),
                };
                Err(RegistryFailure(format!(
                    "charts[{i}]: {from} holds a token for {}, which Helm cannot use: pass --registry-auth {}=USER:PASS instead",
                    self.host, self.host
                ))
                .into())
            }
        }
    }

    fn password(&self) -> Option<&str> {
        match &self.found.creds {
            Some(Credentials::Basic { password, .. }) => Some(password),
            Some(Credentials::Bearer { token }) => Some(token),
            None => None,
        }
    }
}

/// Whether Helm's stderr says the server refused access (401 or 403), and which.
fn refusal(e: &ProcessError) -> Option<&'static str> {
    let ProcessError::Failed { stderr, .. } = e else {
        return None;
    };
    let s = stderr.to_ascii_lowercase();
    if s.contains("403 forbidden") || s.contains("status: 403") {
        Some("403 Forbidden")
    } else if s.contains("401 unauthorized")
        || s.contains("status: 401")
        || s.contains("no basic auth credentials")
        || s.contains("pull access denied")
    {
        Some("401 Unauthorized")
    } else {
        None
    }
}

/// How Helm reached the host whose failure [`tls_hint`] reads.
#[derive(Clone, Copy)]
struct Reached {
    /// Over TLS (not plain HTTP).
    tls: bool,
    /// With a client certificate.
    client_cert: bool,
}

/// What fixes the TLS failure Helm's stderr reports (Go's `x509:` and `tls:`
/// errors), if it reports one: the same reasons and fixes as for images
/// ([`crate::registry::errors`]).
///
/// Under TLS 1.3 the client's handshake is over before the server has checked
/// the client's certificate, so a server that wants one and gets none often just
/// resets the connection as Go sends the first request (`write: connection reset
/// by peer`), instead of the alert Go reports as `tls: certificate required`.
/// Without a client certificate over TLS, that reset gets the same fix.
fn tls_hint(e: &ProcessError, host: &str, how: Reached) -> Option<String> {
    let ProcessError::Failed { stderr, .. } = e else {
        return None;
    };
    let file = format!("configs.\"{host}\".tls");
    let reset = stderr.contains("connection reset by peer") || stderr.contains("broken pipe");
    if stderr.contains("certificate signed by unknown authority") {
        Some(format!("its certificate comes from a CA this machine does not trust: pass --registry-ca FILE with the CA that issued it, or set {file}.ca_file in a --registries file, or add that CA to the system's trust store (SSL_CERT_FILE, SSL_CERT_DIR)"))
    } else if stderr.contains("x509: certificate is valid for")
        || stderr.contains("x509: certificate is not valid for any names")
        || stderr.contains("because it doesn't contain any IP SANs")
    {
        Some(format!("its certificate is not valid for the name {host}: use a name the certificate lists, or have it reissued for {host}"))
    } else if stderr.contains("x509: certificate has expired or is not yet valid") {
        Some("its certificate has expired (or is not valid yet): have it renewed, and check this machine's clock".into())
    } else if stderr.contains("tls: certificate required")
        || stderr.contains("tls: bad certificate")
    {
        Some(format!("it wants a client certificate it accepts: pass --registry-cert FILE --registry-key FILE, or set {file}.cert_file and key_file in a --registries file"))
    } else if reset && how.tls && !how.client_cert {
        Some(format!("it reset the connection right after the handshake, which is how a server that wants a client certificate refuses a client without one (TLS 1.3): pass --registry-cert FILE --registry-key FILE, or set {file}.cert_file and key_file in a --registries file; if it wants none, check that it is up"))
    } else if stderr.contains("server gave HTTP response to HTTPS client") {
        Some(format!("it speaks plain HTTP: write its endpoint as http://{host} in the registries file, or pass --insecure-registry {host}"))
    } else {
        None
    }
}

/// `text` with `secret` replaced, in case a tool ever echoes it. Secrets shorter
/// than 4 characters are left alone: replacing them would garble the message and
/// hide nothing a guess would not find.
fn redact(text: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if s.len() >= 4 => text.replace(s, "<redacted>"),
        _ => text,
    }
}

const REPO_NAME: &str = "gapbundle";

/// A failed `helm repo add`, `helm registry login` or `helm pull`. `server` is how
/// the host is called in the message (`chart repository`, `registry`).
fn pull_failure(
    i: usize,
    what: &str,
    server: &str,
    (auth, how): (&HostAuth, Reached),
    e: ProcessError,
) -> anyhow::Error {
    let refused = refusal(&e);
    let tls = tls_hint(&e, &auth.host, how);
    let secret = auth.password();
    blame(e, |e| {
        let host = &auth.host;
        let msg = match (refused, tls) {
            (_, Some(hint)) => format!(
                "charts[{i}]: cannot pull {what}: TLS with {server} {host} failed: {hint}: {e:#}"
            ),
            (Some(status), None) => {
                let hint = refusal_hint(host, &auth.found.origin, "read the chart");
                format!("charts[{i}]: {server} {host} refused access to {what} ({status}): {hint}: {e:#}")
            }
            (None, None) => format!(
                "charts[{i}]: cannot pull {what}; check the URL, name and version, and that the repository is reachable: {e:#}"
            ),
        };
        RegistryFailure(redact(msg, secret))
    })
}

fn pull_repo(
    job: &ChartJob<'_>,
    url: &str,
    name: &str,
    version: Option<&str>,
    dest: &Path,
) -> anyhow::Result<PathBuf> {
    let i = job.index;
    let what = format!("chart {name} {} from {url}", version.unwrap_or("(latest)"));
    let auth = HostAuth::lookup(job, url_host(url))?;
    let tls = HelmTls::of(job, url_host(url))?;
    let how = Reached {
        tls: !url.starts_with("http://"),
        client_cert: tls.client.is_some(),
    };
    let fail = |e| pull_failure(i, &what, "chart repository", (&auth, how), e);
    let mut add = tls.apply(
        isolated_helm(job.tmp).args(["repo", "add", REPO_NAME, url]),
        "--insecure-skip-tls-verify",
    );
    if let Some((user, pass)) = auth.basic(i)? {
        // Kept in the throw-away repositories.yaml; `helm pull REPO/NAME` sends them
        // to the repository's host (not to other hosts the index may point to).
        add = add
            .args(["--username", user, "--password-stdin"])
            .stdin(pass);
    }
    add.output().map_err(fail)?;
    let mut cmd = tls.apply(
        isolated_helm(job.tmp)
            .arg("pull")
            .arg(format!("{REPO_NAME}/{name}"))
            .arg("-d")
            .arg(dest),
        "--insecure-skip-tls-verify",
    );
    if let Some(v) = version {
        cmd = cmd.args(["--version", v]);
    }
    let pulled = cmd.output();
    forget_credentials(job.tmp);
    pulled.map_err(fail)?;
    single_tgz(dest)
}

/// The authority of a URL: `[user[:pass]@]host[:port]`.
fn url_authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?', '#']).next().unwrap_or_default()
}

/// The host[:port] of a repository URL (without scheme, user info and path).
fn url_host(url: &str) -> &str {
    let authority = url_authority(url);
    authority.rsplit_once('@').map_or(authority, |(_, h)| h)
}

/// Removes the throw-away files that hold credentials, once they served.
fn forget_credentials(tmp: &Path) {
    let home = tmp.join("helm-home/config");
    for f in [home.join("repositories.yaml"), registry_config(tmp)] {
        // A file that is not there is fine; the whole folder goes at the end anyway.
        let _ = fs::remove_file(f);
    }
}

/// The digest `index.yaml` gives for `name` at `version`, if it gives one.
fn repo_index_digest(tmp: &Path, name: &str, version: &str) -> anyhow::Result<Option<Digest>> {
    let path = tmp
        .join("helm-home/cache/repository")
        .join(format!("{REPO_NAME}-index.yaml"));
    let text = fs::read_to_string(&path)?;
    let index: Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{} is not YAML", path.display()))?;
    let entry = index
        .get("entries")
        .and_then(|e| e.get(name))
        .and_then(Value::as_sequence)
        .and_then(|versions| {
            versions
                .iter()
                .find(|v| v.get("version").and_then(Value::as_str) == Some(version))
        });
    let Some(digest) = entry
        .and_then(|e| e.get("digest"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|d| !d.is_empty())
    else {
        return Ok(None);
    };
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    Digest::from_hex(hex).map(Some).map_err(|e| {
        RegistryFailure(format!(
            "index.yaml gives {name} {version} the digest `{digest}`, which is not a sha256: {e}"
        ))
        .into()
    })
}

fn pull_oci(
    job: &ChartJob<'_>,
    reference: &str,
    version: Option<&str>,
    dest: &Path,
) -> anyhow::Result<PathBuf> {
    let i = job.index;
    let name = reference.strip_prefix("oci://").unwrap_or(reference);
    let routes = match Reference::parse(name) {
        Ok(r) => job.router.routes(&r),
        // Not an image reference: Helm is the judge; no mirror applies.
        Err(_) => {
            let (host, path) = name.split_once('/').unwrap_or((name, ""));
            vec![job.router.route_to(host, path)]
        }
    };
    let what = format!("chart {reference} {}", version.unwrap_or("(latest)"));
    let mut failures: Vec<(Route, anyhow::Error)> = Vec::new();
    for route in routes {
        match pull_oci_from(job, &route, &what, version, dest) {
            Ok(tgz) => return Ok(tgz),
            // A missing helm, or the machine's own trouble: no other route helps.
            Err(e) if !e.chain().any(|c| c.is::<RegistryFailure>()) => return Err(e),
            Err(e) => failures.push((route, e)),
        }
    }
    if failures.len() == 1 {
        return Err(failures.remove(0).1);
    }
    let mut msg = format!(
        "charts[{i}]: {what} could not be pulled from any of its {} sources (tried in this order):",
        failures.len()
    );
    for (route, e) in &failures {
        msg.push_str(&format!("\n  - {}: {e:#}", route.describe()));
    }
    Err(RegistryFailure(msg).into())
}

/// `helm pull` of a chart from one route (`oci://ENDPOINT/REPOSITORY`), logged in
/// to the throw-away home first when gapbundle has credentials for its host.
fn pull_oci_from(
    job: &ChartJob<'_>,
    route: &Route,
    what: &str,
    version: Option<&str>,
    dest: &Path,
) -> anyhow::Result<PathBuf> {
    let i = job.index;
    let host = normalize_host(&route.host);
    let insecure = route.plain_http;
    let auth = HostAuth::lookup(job, &host)?;
    let tls = HelmTls::of(job, &host)?;
    let server = if route.mirror_of.is_some() {
        "mirror"
    } else {
        "registry"
    };
    let how = Reached {
        tls: !insecure,
        client_cert: tls.client.is_some(),
    };
    let fail = |e| pull_failure(i, what, server, (&auth, how), e);
    let mut cmd = match auth.basic(i)? {
        // Logged in to the throw-away home's registry config only.
        Some((user, pass)) => {
            let mut login = tls.apply(
                isolated_helm(job.tmp)
                    .args([
                        "registry",
                        "login",
                        &route.endpoint,
                        "--username",
                        user,
                        "--password-stdin",
                    ])
                    .stdin(pass),
                "--insecure",
            );
            if insecure && !tls.insecure {
                // Helm's login has no --plain-http: --insecure lets it fall back
                // to plain HTTP (and accept any certificate), as --insecure-registry
                // means for images.
                login = login.arg("--insecure");
            }
            login.output().map_err(fail)?;
            isolated_helm(job.tmp)
        }
        // Nothing from gapbundle: the user's own `helm registry login`, if any,
        // applies as it always did.
        None => helm(),
    };
    cmd = cmd
        .arg("pull")
        .arg(format!("oci://{}/{}", route.endpoint, route.repository))
        .arg("-d")
        .arg(dest);
    if let Some(v) = version {
        cmd = cmd.args(["--version", v]);
    }
    if insecure {
        cmd = cmd.arg("--plain-http");
    }
    let cmd = tls.apply(cmd, "--insecure-skip-tls-verify");
    let pulled = cmd.output();
    forget_credentials(job.tmp);
    pulled.map_err(fail)?;
    single_tgz(dest)
}

/// With `--locked`, a chart the lock pins that the spec no longer has is an error.
pub(super) fn check_stale(lock: &LockCtx<'_>) -> anyhow::Result<()> {
    if !lock.locked {
        return Ok(());
    }
    let stale: Vec<&str> = lock
        .old
        .charts
        .keys()
        .filter(|k| !lock.new.charts.contains_key(*k))
        .map(String::as_str)
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    Err(InputFailure(format!(
        "--locked: the lock pins charts the spec no longer has ({}); run create without --locked to update it",
        stale.join(", ")
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_hosts_come_without_scheme_user_or_path() {
        assert_eq!(url_host("http://127.0.0.1:8080/charts/"), "127.0.0.1:8080");
        assert_eq!(url_host("https://u:p@charts.example/x?y"), "charts.example");
        assert_eq!(url_host("charts.example"), "charts.example");
    }

    #[test]
    fn helm_refusals_are_recognised_and_secrets_redacted() {
        let failed = |stderr: &str| ProcessError::Failed {
            command: "helm pull".into(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        };
        let repo = "Error: looks like \"http://h/\" is not a valid chart repository or cannot be reached: failed to fetch http://h/index.yaml : 401 Unauthorized";
        assert_eq!(refusal(&failed(repo)), Some("401 Unauthorized"));
        let login = "Error: login attempt to http://h/v2/ failed with status: 401 Unauthorized";
        assert_eq!(refusal(&failed(login)), Some("401 Unauthorized"));
        let oci = "Error: pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials";
        assert_eq!(refusal(&failed(oci)), Some("401 Unauthorized"));
        assert_eq!(
            refusal(&failed(
                "failed to fetch http://h/index.yaml : 403 Forbidden"
            )),
            Some("403 Forbidden")
        );
        assert_eq!(
            refusal(&failed("chart \"web\" version \"9.9.9\" not found")),
            None
        );
        assert_eq!(
            redact("a s3cret b".into(), Some("s3cret")),
            "a <redacted> b"
        );
        assert_eq!(redact("a b".into(), Some("a")), "a b");
    }

    #[test]
    fn a_reset_after_the_handshake_without_a_client_certificate_says_to_give_one() {
        // Helm 3.17's words against a registry that wants a client certificate
        // (TLS 1.3), seen in tests/it/network.rs now and then instead of
        // `remote error: tls: certificate required`.
        let e = ProcessError::Failed {
            command: "helm pull".into(),
            status: "exit status: 1".into(),
            stderr: "Error: failed to do request: Head \"https://registry.test:41737/v2/ghcr/charts/web/manifests/0.1.0\": write tcp 127.0.0.1:35538->127.0.0.1:41737: write: connection reset by peer".into(),
        };
        let host = "registry.test:41737";
        let hint = |tls, client_cert| tls_hint(&e, host, Reached { tls, client_cert });
        let h = hint(true, false).expect("a hint");
        assert!(
            h.contains("--registry-cert") && h.contains("configs.\"registry.test:41737\".tls"),
            "{h}"
        );
        // With a certificate given, or over plain HTTP, a reset is no TLS matter.
        assert_eq!(hint(true, true), None);
        assert_eq!(hint(false, false), None);
        let required = ProcessError::Failed {
            command: "helm pull".into(),
            status: "exit status: 1".into(),
            stderr: "Error: remote error: tls: certificate required".into(),
        };
        let h = tls_hint(
            &required,
            host,
            Reached {
                tls: true,
                client_cert: false,
            },
        );
        assert!(h.is_some_and(|h| h.contains("--registry-cert")));
    }
}
