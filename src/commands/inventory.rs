//! `gapbundle inventory`: what a target holds, written down for `create --against`.
//!
//! It takes the same target options as `import` and reads the same places an import
//! would write to: the content store of containerd (or a fleet registry's
//! repositories), the valid paths of a Nix store or binary cache, and the bundles
//! K3s's folders show. It only looks; nothing on the target changes. The document
//! goes to a file atomically, signed with `--key` (a site key) when given, so the
//! online side can check that it is this site's.

use super::report::InventoryReport;
use super::settings::{InventoryImages, InventorySettings};
use super::{print_json, Failure};
use crate::bundle::inventory::Inventory;
use crate::cli::{InventoryArgs, OutputArgs};
use crate::import::{containerd, fleet, k3s, nix};
use crate::io::keys::load_secret_key;
use crate::progress::{human_bytes, Progress};

/// Runs inventory.
pub fn run(a: InventoryArgs, out: &OutputArgs) -> Result<(), Failure> {
    let a = InventorySettings::resolve(a)?;
    let progress = Progress::new(out.quiet || out.json);
    let keys = a
        .keys
        .iter()
        .map(|k| load_secret_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (site, created) = (&a.site, a.created);
    let mut inv = Inventory::new(site, created);
    match &a.images {
        Some(InventoryImages::Registry { host, registry }) => {
            progress.message(format!("listing the repositories of registry {host}"));
            inv.registry = Some(fleet::inventory(registry, host)?);
        }
        Some(InventoryImages::Containerd { socket, namespace }) => {
            progress.message(format!(
                "listing the content of containerd {}",
                socket.display()
            ));
            inv.containerd = Some(containerd::inventory(socket, namespace)?);
        }
        None => {}
    }
    if let Some(nix) = &a.nix {
        progress.message(format!(
            "listing the valid paths of {}",
            nix.store.as_deref().unwrap_or("the local Nix store")
        ));
        inv.nix = Some(nix::inventory(nix.store.as_deref())?);
    }
    if let Some(k3s_root) = &a.k3s_root {
        inv.bundles = k3s::bundles_seen(k3s_root)?;
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
        print_json(&InventoryReport {
            inventory: a.output.clone(),
            digest: digest.to_string(),
            site: site.clone(),
            created,
            size: bytes.len() as u64,
            signers: keys.iter().map(|k| k.name().to_string()).collect(),
            containerd_blobs: blobs,
            registry_repositories: repositories,
            registry_blobs,
            nix_paths: paths,
            bundles: inv.bundles.clone(),
        });
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
