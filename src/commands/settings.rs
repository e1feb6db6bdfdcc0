//! The command line, the environment and the defaults, resolved once per command
//! into plain settings (as uv's `Settings` and ripgrep's `HiArgs` do).
//!
//! Before this, importers took the clap structs themselves and each command worked
//! out its own defaults (the number of threads was written out in four places), so
//! a flag's meaning depended on which module read it. Now clap's types stop here:
//! each lower module says what it needs in a plain options type of its own
//! ([`NixOptions`], [`OciOptions`], [`PushOptions`], [`registry::Settings`]), this
//! file fills them in from the flags, the environment (`SOURCE_DATE_EPOCH`,
//! `DOCKER_CONFIG`, `GAPBUNDLE_CACHE` through clap) and the defaults, and nothing
//! below `commands/` imports [`crate::cli`] (a test holds that).
//!
//! Checks that need no bundle and no service (a credential that is not
//! `HOST=USER:PASS`, `--staged` with `--registry`, a `SOURCE_DATE_EPOCH` that is not
//! a number) fail here, before anything is read or written.

use std::path::PathBuf;

use super::Failure;
use crate::cli::{CreateArgs, ImportArgs, TrustArgs, VerifyArgs};
use crate::error::InputFailure;
use crate::import::nix::NixOptions;
use crate::import::oci::{ImageDest, ManifestDest, OciOptions};
use crate::import::push::PushOptions;
use crate::io::cas::Cas;
use crate::registry::auth::{default_docker_config, parse_registry_auth};
use crate::registry::{self, Credentials};

/// The number of threads CPU-bound work (hashing, copying, packing) uses when not
/// told otherwise: the one default, [`crate::pool::cores`].
pub fn default_threads() -> usize {
    crate::pool::cores()
}

/// `gapbundle create`, resolved.
#[derive(Debug, Clone)]
pub struct CreateSettings {
    /// The spec file.
    pub spec: PathBuf,
    /// Where the bundle goes.
    pub output: PathBuf,
    /// Secret key files to sign with.
    pub keys: Vec<PathBuf>,
    /// The blob cache: `--cache`, else `$GAPBUNDLE_CACHE`, else the user's cache
    /// folder.
    pub cache: PathBuf,
    /// The lock file: `--lock`, else the spec's path with the extension `.lock`.
    pub lock: PathBuf,
    /// `--locked`.
    pub locked: bool,
    /// `--update`.
    pub update: bool,
    /// How to reach registries and chart repositories (downloads `--jobs` at a
    /// time).
    pub registry: registry::Settings,
    /// The bundle's timestamp: `SOURCE_DATE_EPOCH`, else 0.
    pub created: u64,
    /// Threads that copy blobs into the bundle file.
    pub threads: usize,
    /// `--against`: inventories and bundles whose blobs a delta leaves out.
    pub against: Vec<PathBuf>,
    /// `--trust` with `--against`: keys one of which must have signed each base.
    pub against_trust: Vec<PathBuf>,
    /// `--volume-size`: write volumes of at most this many bytes.
    pub volume_size: Option<u64>,
    /// `--parity`: parity volumes to write with them.
    pub parity: Option<u32>,
}

impl CreateSettings {
    /// Resolves create's flags and environment.
    pub fn resolve(a: CreateArgs) -> Result<Self, Failure> {
        Ok(CreateSettings {
            lock: a.lock.unwrap_or_else(|| a.spec.with_extension("lock")),
            registry: registry::Settings {
                insecure_hosts: a.insecure_registries,
                credentials: credentials(&a.registry_auth)?,
                docker_config: a.docker_config.or_else(default_docker_config),
                ca_files: Vec::new(),
                ca_flag: None,
                jobs: a.jobs.max(1),
                retries: a.retries.max(1),
            },
            spec: a.spec,
            output: a.output,
            keys: a.keys,
            cache: a.cache.unwrap_or_else(Cas::default_root),
            locked: a.locked,
            update: a.update,
            created: source_date_epoch()?.unwrap_or(0),
            threads: default_threads(),
            against: a.against,
            against_trust: a.trust,
            volume_size: a.volume_size,
            parity: a.parity,
        })
    }
}

/// Who must have signed a bundle (verify and import).
#[derive(Debug, Clone)]
pub struct TrustSettings {
    /// Public key files or folders of them (`--trust`).
    pub keys: Vec<PathBuf>,
    /// Distinct trusted keys that must have signed.
    pub threshold: usize,
    /// `--allow-unsigned`.
    pub allow_unsigned: bool,
}

impl TrustSettings {
    /// Resolves the trust flags.
    pub fn resolve(a: TrustArgs) -> Self {
        TrustSettings {
            keys: a.trust,
            threshold: a.threshold,
            allow_unsigned: a.allow_unsigned,
        }
    }
}

/// `gapbundle verify`, resolved.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    /// The bundle (`-` for stdin).
    pub bundle: PathBuf,
    /// Who must have signed it.
    pub trust: TrustSettings,
    /// Threads hashing blobs: `--jobs`, else [`default_threads`].
    pub threads: usize,
}

impl VerifySettings {
    /// Resolves verify's flags.
    pub fn resolve(a: VerifyArgs) -> Self {
        VerifySettings {
            bundle: a.bundle,
            trust: TrustSettings::resolve(a.trust),
            threads: a.jobs.unwrap_or_else(default_threads).max(1),
        }
    }
}

/// `gapbundle import`, resolved.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    /// The bundle (`-` for stdin).
    pub bundle: PathBuf,
    /// Who must have signed it.
    pub trust: TrustSettings,
    /// `--dry-run`.
    pub dry_run: bool,
    /// The Nix target; `None` with `--skip-nix`.
    pub nix: Option<NixOptions>,
    /// The image and manifest targets.
    pub oci: OciOptions,
}

impl ImportSettings {
    /// Resolves import's flags.
    pub fn resolve(a: ImportArgs) -> Result<Self, Failure> {
        if a.staged && a.registry.is_some() {
            return Err(InputFailure(
                "--staged and --registry exclude each other: stage an archive for one node, or push to a registry for the fleet".into(),
            )
            .into());
        }
        let images = if a.skip_images {
            None
        } else if let Some(host) = a.registry {
            Some(ImageDest::Registry(PushOptions {
                host,
                registry: registry::Settings {
                    insecure_hosts: a.insecure_registries,
                    credentials: credentials(&a.registry_auth)?,
                    docker_config: default_docker_config(),
                    ca_files: a.registry_ca.into_iter().collect(),
                    ca_flag: Some("--registry-ca FILE"),
                    jobs: 1,
                    retries: a.retries.max(1),
                },
                mirror_file: a.k3s_root.join("registries.yaml.gapbundle"),
            }))
        } else if a.staged {
            Some(ImageDest::Staged)
        } else {
            Some(ImageDest::Containerd {
                socket: a.containerd,
                namespace: a.namespace,
                snapshotter: a.snapshotter,
            })
        };
        let manifests = match (a.skip_manifests, a.apply) {
            (true, _) => None,
            (false, true) => Some(ManifestDest::Apply(a.kubeconfig)),
            (false, false) => Some(ManifestDest::Folder),
        };
        Ok(ImportSettings {
            bundle: a.bundle,
            trust: TrustSettings::resolve(a.trust),
            dry_run: a.dry_run,
            nix: (!a.skip_nix).then_some(NixOptions { store: a.nix_store }),
            oci: OciOptions {
                images,
                manifests,
                k3s_root: a.k3s_root,
            },
        })
    }
}

/// `--registry-auth HOST=USER:PASS` values, parsed; a malformed one is bad input.
fn credentials(values: &[String]) -> Result<Vec<(String, Credentials)>, Failure> {
    values
        .iter()
        .map(|s| parse_registry_auth(s).map_err(|e| InputFailure(format!("{e:#}")).into()))
        .collect()
}

/// `SOURCE_DATE_EPOCH` when it is set: bundles carry no wall-clock time unless
/// asked to (create uses 0 without it; an inventory, the time it is taken).
pub(super) fn source_date_epoch() -> Result<Option<u64>, Failure> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some).map_err(|_| {
            InputFailure(format!(
                "SOURCE_DATE_EPOCH=`{v}` is not a number of seconds since 1970"
            ))
            .into()
        }),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn import(args: &[&str]) -> Result<ImportSettings, Failure> {
        let cli =
            crate::cli::Cli::try_parse_from(["gapbundle", "import", "b.gapb"].iter().chain(args))
                .unwrap();
        let crate::cli::Command::Import(a) = cli.command else {
            unreachable!("parsed as import")
        };
        ImportSettings::resolve(a)
    }

    #[test]
    fn import_flags_pick_the_targets() {
        let s = import(&[]).unwrap();
        assert!(matches!(
            s.oci.images,
            Some(ImageDest::Containerd { ref namespace, .. }) if namespace == "k8s.io"
        ));
        assert!(matches!(s.oci.manifests, Some(ManifestDest::Folder)));
        assert!(s.nix.is_some_and(|n| n.store.is_none()));

        let s = import(&["--registry", "r:5000", "--k3s-root", "/k", "--skip-nix"]).unwrap();
        let Some(ImageDest::Registry(p)) = s.oci.images else {
            panic!("--registry pushes")
        };
        assert_eq!(p.mirror_file, PathBuf::from("/k/registries.yaml.gapbundle"));
        assert_eq!(p.registry.jobs, 1);
        assert!(s.nix.is_none());

        let s = import(&["--apply", "--skip-images"]).unwrap();
        assert!(s.oci.images.is_none());
        assert!(matches!(s.oci.manifests, Some(ManifestDest::Apply(None))));

        let refused = import(&["--staged", "--registry", "r:5000"]).unwrap_err();
        assert_eq!(refused.code, super::super::exit::INPUT);
        let refused = import(&["--registry", "r", "--registry-auth", "nope"]).unwrap_err();
        assert_eq!(refused.code, super::super::exit::INPUT);
    }
}
