//! `gapbundle inventory`: what a target holds, written down for `create --against`.
//!
//! It takes the same target options as `import` and reads the same places an import
//! would write to: the content store of containerd (or a fleet registry's
//! repositories), the valid paths of a Nix store or binary cache, and the bundles
//! K3s's folders show. It only looks; nothing on the target changes. The document
//! goes to a file atomically, signed with `--key` (a site key) when given, so the
//! online side can check that it is this site's.

use std::path::Path;

use serde_json::json;

use super::create::source_date_epoch_set;
use super::{print_json, Failure};
use crate::bundle::inventory::Inventory;
use crate::cli::{InventoryArgs, OutputArgs};
use crate::error::InputFailure;
use crate::import::{containerd, fleet, k3s, nix};
use crate::io::keys::load_secret_key;
use crate::progress::{human_bytes, Progress};
use crate::registry::auth::parse_registry_auth;
use crate::registry::Settings;

/// Runs inventory.
pub fn run(a: InventoryArgs, out: &OutputArgs) -> Result<(), Failure> {
    let progress = Progress::new(out.quiet || out.json);
    let keys = a
        .keys
        .iter()
        .map(|k| load_secret_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if a.skip_images && a.skip_nix && a.skip_manifests {
        return Err(InputFailure(
            "nothing to list: --skip-images, --skip-nix and --skip-manifests were all given".into(),
        )
        .into());
    }
    let created = match source_date_epoch_set()? {
        Some(t) => t,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let site = match &a.site {
        Some(s) if !s.trim().is_empty() => s.trim().to_string(),
        Some(_) => return Err(InputFailure("--site must not be empty".into()).into()),
        None => host_name(),
    };
    let mut inv = Inventory::new(&site, created);
    if !a.skip_images {
        match &a.registry {
            Some(host) => {
                progress.message(format!("listing the repositories of registry {host}"));
                inv.registry = Some(fleet::inventory(&registry_settings(&a)?, host)?);
            }
            None => {
                progress.message(format!(
                    "listing the content of containerd {}",
                    a.containerd.display()
                ));
                inv.containerd = Some(containerd::inventory(&a.containerd, &a.namespace)?);
            }
        }
    }
    if !a.skip_nix {
        progress.message(format!(
            "listing the valid paths of {}",
            a.nix_store.as_deref().unwrap_or("the local Nix store")
        ));
        inv.nix = Some(nix::inventory(a.nix_store.as_deref())?);
    }
    if !a.skip_manifests {
        inv.bundles = k3s::bundles_seen(&a.k3s_root)?;
    }
    let bytes = inv.to_file(&keys)?;
    crate::io::atomic::write(&a.output, &bytes)?;
    let blobs = inv.containerd.as_ref().map_or(0, |c| c.blobs.len());
    let repositories = inv.registry.as_ref().map_or(0, |r| r.repositories.len());
    let registry_blobs = inv.registry.as_ref().map_or(0, |r| {
        r.repositories
            .values()
            .flatten()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    });
    let paths = inv.nix.as_ref().map_or(0, |n| n.paths.len());
    let digest = inv.digest();
    if out.json {
        print_json(&json!({
            "inventory": a.output, "digest": digest.to_string(), "site": site, "created": created,
            "size": bytes.len(), "signers": keys.iter().map(|k| k.name().to_string()).collect::<Vec<_>>(),
            "containerdBlobs": blobs, "registryRepositories": repositories, "registryBlobs": registry_blobs,
            "nixPaths": paths, "bundles": inv.bundles,
        }));
    } else if !out.quiet {
        say!(
            "wrote {} ({}): site {site}, {} containerd blobs, {} registry blobs in {} repositories, {} Nix paths, {} bundles seen",
            a.output.display(),
            human_bytes(bytes.len() as u64),
            blobs,
            registry_blobs,
            repositories,
            paths,
            inv.bundles.len()
        );
        say!(
            "digest {digest}{}",
            if keys.is_empty() { " (unsigned)" } else { "" }
        );
    }
    Ok(())
}

/// The machine's host name, or `site` when it has none.
pub(crate) fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(Path::new(p)).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "site".into())
}

fn registry_settings(a: &InventoryArgs) -> Result<Settings, Failure> {
    let credentials = a
        .registry_auth
        .iter()
        .map(|s| parse_registry_auth(s).map_err(|e| InputFailure(format!("{e:#}")).into()))
        .collect::<Result<Vec<_>, Failure>>()?;
    Ok(Settings {
        insecure_hosts: a.insecure_registries.clone(),
        credentials,
        docker_config: None,
        ca_files: a.registry_ca.iter().cloned().collect(),
        ca_flag: Some("--registry-ca FILE"),
        jobs: 1,
        retries: a.retries.max(1),
    })
}
