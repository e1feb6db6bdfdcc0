//! What a fleet registry holds: its repositories (`/v2/_catalog`) and, for each, the
//! manifests, configs and layers its tags reach.
//!
//! A registry cannot list its blobs, only its repositories, their tags and the
//! manifests those name; everything a tag reaches is what it holds for certain
//! (an untagged manifest is not found, and is no loss: a delta then stores that
//! blob). Two readers need this: `gapbundle inventory --registry` writes it down,
//! and a delta's push ([`super::push`]) asks where it can mount a blob the delta
//! leaves out when the image's own repository lacks it. Every request goes through
//! the one registry client and its retry rule; a registry that refuses the catalog
//! (some do, for users who may not list it) is an error that says so.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use serde_json::Value;

use crate::bundle::inventory::RegistryHoldings;
use crate::bundle::oci::{
    is_index, DOCKER_LIST_MEDIA_TYPE, DOCKER_MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
};
use crate::bundle::Digest;
use crate::registry::auth::Origin;
use crate::registry::client::{runtime, with_retries};
use crate::registry::errors::What;
use crate::registry::{self, Route, Settings};

/// Repositories and tags asked for per page.
const PAGE: usize = 1000;
/// Manifest media types a registry is asked for.
pub const MANIFEST_TYPES: [&str; 4] = [
    INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    DOCKER_LIST_MEDIA_TYPE,
    DOCKER_MANIFEST_MEDIA_TYPE,
];

/// A request that failed: to which repository, doing what, how, after how many
/// attempts; turned into advice by [`Fleet::explain`].
pub struct Fault {
    /// The repository asked.
    pub repository: String,
    /// What it was asked to do (a verb phrase).
    pub step: String,
    /// The error.
    pub error: OciDistributionError,
    /// Attempts made.
    pub attempts: u32,
}

/// One fleet registry, as the readers here see it.
#[derive(Clone)]
pub struct Fleet {
    /// The registry client.
    pub registry: registry::Client,
    /// The registry (no repository).
    pub route: Route,
    /// Its transport.
    pub client: oci_client::Client,
    /// Credentials.
    pub auth: RegistryAuth,
    /// Where they came from.
    pub origin: Origin,
    /// Attempts per request.
    pub attempts: u32,
}

impl Fleet {
    /// The fleet registry `host` under `settings`.
    pub fn new(settings: &Settings, host: &str) -> Result<Fleet> {
        let registry = registry::Client::new(settings)?;
        let route = registry.route_to(host, "");
        let (auth, origin) = registry.credentials(&route)?;
        let client = registry.transport(&route).clone();
        Ok(Fleet {
            attempts: settings.retries.max(1),
            registry,
            route,
            client,
            auth,
            origin,
        })
    }

    /// A failed request as an error with advice ([`crate::error::RegistryFailure`]).
    pub fn explain(&self, f: &Fault) -> anyhow::Error {
        let route = self.route.with_repository(&f.repository);
        self.registry.explain(
            &f.error,
            &route,
            &What::Push {
                step: f.step.clone(),
            },
            f.attempts,
            &self.origin,
        )
    }

    /// Every repository of the registry, sorted.
    pub async fn repositories(&self) -> Result<Vec<String>, Fault> {
        // The catalog is the registry's; the reference only carries its host.
        let at = self.route.with_repository("catalog").tagged("latest");
        let mut all = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = with_retries(self.attempts, || {
                self.client
                    .catalog(&at, &self.auth, Some(PAGE), last.as_deref())
            })
            .await
            .map_err(|(error, attempts)| Fault {
                repository: String::new(),
                step: "list its repositories (/v2/_catalog)".into(),
                error,
                attempts,
            })?;
            let n = page.repositories.len();
            // A page that repeats the last one would never end.
            let fresh: Vec<String> = page
                .repositories
                .into_iter()
                .filter(|r| last.as_deref().is_none_or(|l| r.as_str() > l))
                .collect();
            last = fresh.last().cloned();
            all.extend(fresh);
            if n < PAGE || last.is_none() {
                break;
            }
        }
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// The tags of `repository`.
    async fn tags(&self, repository: &str) -> Result<Vec<String>, Fault> {
        let at = self.route.with_repository(repository).tagged("latest");
        let mut all = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = with_retries(self.attempts, || {
                self.client
                    .list_tags(&at, &self.auth, Some(PAGE), last.as_deref())
            })
            .await
            .map_err(|(error, attempts)| Fault {
                repository: repository.into(),
                step: "list its tags".into(),
                error,
                attempts,
            })?;
            let n = page.tags.len();
            let fresh: Vec<String> = page
                .tags
                .into_iter()
                .filter(|t| last.as_deref().is_none_or(|l| t.as_str() > l))
                .collect();
            last = fresh.last().cloned();
            all.extend(fresh);
            if n < PAGE || last.is_none() {
                break;
            }
        }
        Ok(all)
    }

    /// The manifest `reference` names, checked against `digest` when given.
    pub async fn manifest(
        &self,
        reference: &Reference,
        digest: Option<&Digest>,
    ) -> Result<(Vec<u8>, Digest), Fault> {
        let fault = |error, attempts| Fault {
            repository: reference.repository().into(),
            step: format!("serve manifest {}", reference.whole()),
            error,
            attempts,
        };
        let (bytes, _) = with_retries(self.attempts, || {
            self.client
                .pull_manifest_raw(reference, &self.auth, &MANIFEST_TYPES)
        })
        .await
        .map_err(|(e, n)| fault(e, n))?;
        let found = Digest::of(&bytes);
        if digest.is_some_and(|d| *d != found) {
            return Err(fault(
                OciDistributionError::GenericError(Some(format!(
                    "it sent a manifest with digest {found}"
                ))),
                1,
            ));
        }
        Ok((bytes.to_vec(), found))
    }

    /// The manifests, configs and layers the tags of `repository` reach.
    pub async fn repository_blobs(&self, repository: &str) -> Result<BTreeSet<Digest>, Fault> {
        let route = self.route.with_repository(repository);
        let mut held = BTreeSet::new();
        let mut todo: Vec<(Reference, Option<Digest>)> = self
            .tags(repository)
            .await?
            .iter()
            .map(|t| (route.tagged(t), None))
            .collect();
        while let Some((r, want)) = todo.pop() {
            let (bytes, digest) = self.manifest(&r, want.as_ref()).await?;
            if !held.insert(digest) {
                continue;
            }
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let media_type = v["mediaType"].as_str().unwrap_or_default();
            let children = v["manifests"].as_array();
            if is_index(media_type) || children.is_some() {
                for c in children.into_iter().flatten() {
                    if let Some(d) = c["digest"].as_str().and_then(|d| d.parse::<Digest>().ok()) {
                        if !held.contains(&d) {
                            todo.push((route.by_digest(&d), Some(d)));
                        }
                    }
                }
                continue;
            }
            let descriptors =
                std::iter::once(&v["config"]).chain(v["layers"].as_array().into_iter().flatten());
            held.extend(
                descriptors
                    .filter_map(|d| d["digest"].as_str())
                    .filter_map(|d| d.parse::<Digest>().ok()),
            );
        }
        Ok(held)
    }
}

/// What the fleet registry `host` holds, for an inventory.
pub fn inventory(settings: &Settings, host: &str) -> Result<RegistryHoldings> {
    let fleet = Fleet::new(settings, host)?;
    let rt = runtime(2, "gapbundle-inventory").context("cannot start the async runtime")?;
    let repositories = rt
        .block_on(async {
            let mut out = BTreeMap::new();
            for r in fleet.repositories().await? {
                let blobs = fleet.repository_blobs(&r).await?;
                out.insert(r, blobs);
            }
            Ok::<_, Fault>(out)
        })
        .map_err(|f| fleet.explain(&f))?;
    Ok(RegistryHoldings {
        host: fleet.route.host.clone(),
        repositories,
    })
}
