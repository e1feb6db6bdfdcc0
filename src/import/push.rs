//! Fleet mode: every bundled image pushed to a registry inside the air gap, digests
//! unchanged, and a K3s `registries.yaml` mirror snippet that points nodes at it.
//!
//! Each image keeps its repository path and tag under the new host
//! (`reg.example:5000/team/app:1.2` becomes `HOST/team/app:1.2`), which is exactly
//! how a K3s mirror rewrites pulls: nodes keep asking for the original names and get
//! them from `HOST`. Everything is pushed as stored: layers and configs as blobs
//! (streamed from the bundle straight into one monolithic upload each, skipped when
//! the registry already has them, mounted across repositories when several
//! images share them), then child manifests by digest, then the root by tag, all as
//! raw bytes, so every digest stays the one the bundle signed. Manifests and indexes
//! (small) are kept in memory until the end; nothing else is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use fs_err as fs;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Target, TargetPlan};
use crate::bundle::manifest::{BlobEntry, Kind, Object};
use crate::bundle::oci::{is_index, is_manifest};
use crate::bundle::reader::Head;
use crate::bundle::Digest;
use crate::cli::ImportArgs;
use crate::error::InputFailure;
use crate::io::atomic;
use crate::progress::Progress;
use crate::resolve::auth::{self, normalize_host, parse_registry_auth};

/// Largest manifest or index kept in memory.
const MANIFEST_LIMIT: usize = 8 << 20;

/// One image to push.
#[derive(Clone)]
struct Planned {
    object: Object,
    /// Where it goes.
    target: Reference,
    /// Original registry host (for the mirror).
    origin: String,
    /// Blobs (not manifests) the target repository lacks.
    missing: BTreeSet<Digest>,
    present: bool,
}

struct Upload {
    digest: Digest,
    tx: Option<mpsc::Sender<Result<bytes::Bytes, oci_client::errors::OciDistributionError>>>,
    task: Option<JoinHandle<Result<String, oci_client::errors::OciDistributionError>>>,
}

/// The fleet registry target.
pub struct Push {
    host: String,
    insecure: bool,
    ca: Option<PathBuf>,
    mirror_file: PathBuf,
    client: Client,
    auth: RegistryAuth,
    rt: tokio::runtime::Runtime,
    blobs: HashMap<Digest, BlobEntry>,
    images: Vec<Planned>,
    /// Manifest and index bytes received.
    manifests: HashMap<Digest, Vec<u8>>,
    /// Blob -> repository it was uploaded to (for mounts).
    uploaded: HashMap<Digest, Reference>,
    upload: Option<Upload>,
    pushed_bytes: u64,
}

/// `registries.yaml` for K3s: each original registry mirrored by `endpoint`.
pub fn registries_yaml(origins: &BTreeSet<String>, endpoint: &str, ca: Option<&str>) -> String {
    let mut s = String::from("# Written by gapbundle: copy to /etc/rancher/k3s/registries.yaml on every node\n# (merge with what is there) and restart K3s.\nmirrors:\n");
    for o in origins {
        s.push_str(&format!(
            "  \"{o}\":\n    endpoint:\n      - \"{endpoint}\"\n"
        ));
    }
    if let Some(ca) = ca {
        let host = endpoint
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        s.push_str(&format!(
            "configs:\n  \"{host}\":\n    tls:\n      ca_file: \"{ca}\"\n"
        ));
    }
    s
}

/// The image reference under the fleet registry, same path and tag.
fn retarget(name: &str, host: &str, root: &Digest) -> Result<(Reference, String)> {
    let r: Reference = name
        .parse()
        .map_err(|e| anyhow!("image name {name} is not a valid reference: {e}"))?;
    let origin = normalize_host(r.registry());
    let t = match r.tag() {
        Some(tag) => Reference::with_tag(host.into(), r.repository().into(), tag.into()),
        None => Reference::with_digest(host.into(), r.repository().into(), root.to_string()),
    };
    Ok((t, origin))
}

fn by_digest(r: &Reference, d: &Digest) -> Reference {
    Reference::with_digest(r.registry().into(), r.repository().into(), d.to_string())
}

impl Push {
    /// A push target for `--registry HOST`.
    pub fn new(args: &ImportArgs, host: &str, head: &Head) -> Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let host = host
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        if host.is_empty() || host.contains('/') {
            return Err(InputFailure(format!("--registry `{host}` is not HOST[:PORT]")).into());
        }
        let insecure = args
            .insecure_registries
            .iter()
            .any(|h| normalize_host(h) == normalize_host(&host));
        let mut extra = Vec::new();
        if let Some(ca) = &args.registry_ca {
            let data = fs::read(ca)
                .map_err(|e| InputFailure(format!("cannot read the --registry-ca file: {e}")))?;
            if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----") {
                return Err(InputFailure(format!(
                    "{} is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                    ca.display()
                ))
                .into());
            }
            extra.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        let mut creds = Vec::new();
        for a in &args.registry_auth {
            creds.push(parse_registry_auth(a).map_err(|e| InputFailure(format!("{e:#}")))?);
        }
        let store = auth::Store::load(&creds, None);
        let auth = store
            .lookup(&host)?
            .creds
            .map(|c| c.to_registry_auth())
            .unwrap_or(RegistryAuth::Anonymous);
        let config = ClientConfig {
            protocol: if insecure {
                ClientProtocol::HttpsExcept(vec![host.clone()])
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: extra,
            use_monolithic_push: true,
            connect_timeout: Some(std::time::Duration::from_secs(15)),
            read_timeout: Some(std::time::Duration::from_secs(120)),
            user_agent: concat!("gapbundle/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).context("cannot set up the HTTP client")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gapbundle-push")
            .enable_all()
            .build()
            .context("cannot start the async runtime for the registry")?;
        let mut images = Vec::new();
        for o in head
            .manifest
            .objects
            .iter()
            .filter(|o| o.kind == Kind::Image)
        {
            let (target, origin) = retarget(&o.name, &host, &o.digest)?;
            images.push(Planned {
                object: o.clone(),
                target,
                origin,
                missing: BTreeSet::new(),
                present: false,
            });
        }
        Ok(Self {
            mirror_file: args.k3s_root.join("registries.yaml.gapbundle"),
            host,
            insecure,
            ca: args.registry_ca.clone(),
            client,
            auth,
            rt,
            blobs: head
                .manifest
                .blobs
                .iter()
                .map(|b| (b.digest, b.clone()))
                .collect(),
            images,
            manifests: HashMap::new(),
            uploaded: HashMap::new(),
            upload: None,
            pushed_bytes: 0,
        })
    }

    fn is_manifest_blob(&self, d: &Digest) -> bool {
        self.blobs
            .get(d)
            .is_some_and(|b| is_index(&b.media_type) || is_manifest(&b.media_type))
    }

    fn endpoint(&self) -> String {
        format!(
            "{}://{}",
            if self.insecure { "http" } else { "https" },
            self.host
        )
    }

    fn explain(&self, what: &str, e: impl std::fmt::Display) -> anyhow::Error {
        let hint = if self.insecure {
            ""
        } else {
            " (for a plain-HTTP registry pass --insecure-registry HOST; for a private CA, --registry-ca FILE)"
        };
        anyhow!(
            "registry {} refused to {what}: {e}{hint}; check --registry and --registry-auth",
            self.host
        )
    }

    fn finish_upload(&mut self) -> Result<()> {
        let Some(mut up) = self.upload.take() else {
            return Ok(());
        };
        drop(up.tx.take());
        if let Some(t) = up.task.take() {
            match self.rt.block_on(t) {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(self.explain(&format!("accept blob {}", up.digest), e)),
                Err(e) => bail!("upload task failed: {e}"),
            }
        }
        Ok(())
    }
}

impl Target for Push {
    fn describe(&self) -> String {
        format!("registry {}", self.host)
    }

    fn plan(&mut self, _head: &Head) -> Result<TargetPlan> {
        let mut plan = TargetPlan::default();
        let client = self.client.clone();
        let auth = self.auth.clone();
        let mut images = std::mem::take(&mut self.images);
        let manifest_blob: BTreeSet<Digest> = self
            .blobs
            .keys()
            .filter(|d| self.is_manifest_blob(d))
            .copied()
            .collect();
        let r = self.rt.block_on(async {
            let mut authed = BTreeSet::new();
            for p in images.iter_mut() {
                if authed.insert(p.target.repository().to_string()) {
                    client
                        .auth(&p.target, &auth, RegistryOperation::Push)
                        .await
                        .map_err(|e| ("log in for pushing", e.to_string()))?;
                }
                for d in &p.object.blobs {
                    if manifest_blob.contains(d) {
                        continue;
                    }
                    let exists = client
                        .blob_exists(&p.target, &d.to_string())
                        .await
                        .map_err(|e| ("answer a blob query", e.to_string()))?;
                    if !exists {
                        p.missing.insert(*d);
                    }
                }
                let current = if p.missing.is_empty() {
                    client.fetch_manifest_digest(&p.target, &auth).await.ok()
                } else {
                    None
                };
                p.present = current.as_deref() == Some(p.object.digest.to_string().as_str());
            }
            Ok::<(), (&str, String)>(())
        });
        self.images = images;
        r.map_err(|(what, e)| self.explain(what, e))?;
        for p in &self.images {
            if p.present {
                plan.present_objects.push(p.target.whole());
                continue;
            }
            plan.new_objects.push(p.target.whole());
            for d in p.object.blobs.iter() {
                if manifest_blob.contains(d) || p.missing.contains(d) {
                    let b = &self.blobs[d];
                    if b.offset.is_none() {
                        bail!("blob {d} is not carried by this delta bundle: push the full bundle");
                    }
                    if plan.needed.insert(*d) && !manifest_blob.contains(d) {
                        plan.bytes_to_write += b.size;
                    }
                }
            }
        }
        Ok(plan)
    }

    fn begin(&mut self, blob: &BlobEntry) -> io::Result<()> {
        self.finish_upload()
            .map_err(|e| io::Error::other(format!("{e:#}")))?;
        if self.is_manifest_blob(&blob.digest) {
            if blob.size as usize > MANIFEST_LIMIT {
                return Err(io::Error::other(format!(
                    "manifest {} is larger than {MANIFEST_LIMIT} bytes",
                    blob.digest
                )));
            }
            self.manifests
                .insert(blob.digest, Vec::with_capacity(blob.size as usize));
            return Ok(());
        }
        let Some(repo) = self
            .images
            .iter()
            .find(|p| !p.present && p.missing.contains(&blob.digest))
            .map(|p| p.target.clone())
        else {
            return Ok(());
        };
        let (tx, mut rx) = mpsc::channel(4);
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let client = self.client.clone();
        let digest = blob.digest.to_string();
        let size = blob.size;
        let r = repo.clone();
        let task = self.rt.spawn(async move {
            client
                .push_blob_stream(&r, stream, &digest, Some(size))
                .await
        });
        self.uploaded.insert(blob.digest, repo);
        self.upload = Some(Upload {
            digest: blob.digest,
            tx: Some(tx),
            task: Some(task),
        });
        Ok(())
    }

    fn write(&mut self, blob: &BlobEntry, chunk: &[u8]) -> io::Result<()> {
        if let Some(m) = self.manifests.get_mut(&blob.digest) {
            m.extend_from_slice(chunk);
            return Ok(());
        }
        let Some(up) = self.upload.as_mut() else {
            return Ok(());
        };
        let sent = up
            .tx
            .as_ref()
            .map(|tx| {
                tx.blocking_send(Ok(bytes::Bytes::copy_from_slice(chunk)))
                    .is_ok()
            })
            .unwrap_or(false);
        self.pushed_bytes += chunk.len() as u64;
        if !sent {
            // The upload ended early: report its error.
            self.finish_upload()
                .map_err(|e| io::Error::other(format!("{e:#}")))?;
            return Err(io::Error::other(format!(
                "registry {} closed the upload of {} early",
                self.host, blob.digest
            )));
        }
        Ok(())
    }

    fn commit(&mut self, _blob: &BlobEntry) -> io::Result<()> {
        self.finish_upload()
            .map_err(|e| io::Error::other(format!("{e:#}")))
    }

    fn finish(&mut self, _head: &Head, progress: &Progress) -> Result<Value> {
        self.finish_upload()?;
        let mut report = Vec::new();
        let client = self.client.clone();
        for p in self.images.clone() {
            if p.present {
                report.push(json!({"image": p.target.whole(), "pushed": false}));
                continue;
            }
            // Blobs pushed to another repository of this run: mount them here.
            for d in &p.missing {
                if let Some(src) = self.uploaded.get(d) {
                    if src.repository() != p.target.repository() {
                        let src = src.clone();
                        let t = p.target.clone();
                        self.rt
                            .block_on(client.mount_blob(&t, &src, &d.to_string()))
                            .map_err(|e| {
                                self.explain(&format!("mount blob {d} into {}", t.repository()), e)
                            })?;
                    }
                }
            }
            // Child manifests by digest, then the root.
            let mut children = Vec::new();
            if is_index(&p.object.media_type) {
                let idx: Value = serde_json::from_slice(
                    self.manifests
                        .get(&p.object.digest)
                        .ok_or_else(|| anyhow!("index {} was not received", p.object.digest))?,
                )?;
                for m in idx["manifests"].as_array().into_iter().flatten() {
                    if let Some(d) = m["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()) {
                        if p.object.blobs.contains(&d) {
                            children.push(d);
                        }
                    }
                }
            }
            let mut order: Vec<(Reference, Digest)> = children
                .into_iter()
                .map(|d| (by_digest(&p.target, &d), d))
                .collect();
            order.push((p.target.clone(), p.object.digest));
            for (r, d) in order {
                let body = self
                    .manifests
                    .get(&d)
                    .ok_or_else(|| anyhow!("manifest {d} was not received"))?
                    .clone();
                let mt = self.blobs[&d].media_type.clone();
                let ct = mt
                    .parse()
                    .map_err(|_| anyhow!("media type {mt} of {d} is not a valid header"))?;
                self.rt
                    .block_on(client.push_manifest_raw(&r, body, ct))
                    .map_err(|e| {
                        self.explain(&format!("accept manifest {d} for {}", r.whole()), e)
                    })?;
            }
            report.push(json!({"image": p.target.whole(), "digest": p.object.digest.to_string(), "pushed": true}));
        }
        let origins: BTreeSet<String> = self.images.iter().map(|p| p.origin.clone()).collect();
        let ca = self.ca.as_ref().map(|c| {
            std::path::absolute(c)
                .unwrap_or_else(|_| c.clone())
                .display()
                .to_string()
        });
        let yaml = registries_yaml(&origins, &self.endpoint(), ca.as_deref());
        if let Some(dir) = self.mirror_file.parent() {
            fs::create_dir_all(dir)?;
        }
        atomic::write(&self.mirror_file, yaml.as_bytes())
            .with_context(|| format!("cannot write {}", self.mirror_file.display()))?;
        progress.message(format!(
            "registries.yaml mirror snippet written to {} (copy it to /etc/rancher/k3s/registries.yaml on every node)",
            self.mirror_file.display()
        ));
        let mirrors: BTreeMap<&String, Vec<String>> =
            origins.iter().map(|o| (o, vec![self.endpoint()])).collect();
        Ok(json!({
            "images": report, "bytesPushed": self.pushed_bytes,
            "registriesYaml": self.mirror_file, "mirrors": mirrors,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_keep_path_and_tag_under_the_fleet_registry() {
        let d = Digest::of(b"x");
        let (r, o) = retarget("reg.example:5000/team/app:1.2", "10.0.0.1:5000", &d).unwrap();
        assert_eq!(r.whole(), "10.0.0.1:5000/team/app:1.2");
        assert_eq!(o, "reg.example:5000");
        let (r, o) = retarget("nginx:1", "mirror:443", &d).unwrap();
        assert_eq!(r.whole(), "mirror:443/library/nginx:1");
        assert_eq!(o, "docker.io");
    }

    #[test]
    fn mirror_snippet_is_k3s_format() {
        let y = registries_yaml(
            &["docker.io".to_string()].into(),
            "https://mirror:5000",
            None,
        );
        assert!(y.contains(
            "mirrors:\n  \"docker.io\":\n    endpoint:\n      - \"https://mirror:5000\"\n"
        ));
    }
}
