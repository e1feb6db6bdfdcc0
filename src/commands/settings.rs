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
use crate::bundle::volumes::parse_size;
use crate::cli::{
    ActivateArgs, CreateArgs, ImportArgs, InventoryArgs, JoinArgs, ListArgs, PatchArgs, RemoveArgs,
    SbomArgs, SbomFormat, ServeArgs, SplitArgs, TargetArgs, TrustArgs, VerifyArgs,
};
use crate::error::InputFailure;
use crate::import::activate::SystemLinks;
use crate::import::nix::NixOptions;
use crate::import::oci::{ImageDest, ManifestDest, OciOptions};
use crate::import::push::PushOptions;
use crate::io::cas::Cas;
use crate::registry::auth::{default_docker_config, default_podman_auth, parse_registry_auth};
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
    /// `--sbom`: the SBOM formats stored in the bundle, each once, sorted.
    pub sbom: Vec<crate::sbom::Format>,
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
                podman_auth: default_podman_auth(),
                registries: a
                    .registries
                    .as_deref()
                    .map(registry::load_registries)
                    .transpose()?
                    .map(std::sync::Arc::new),
                default_endpoint: !a.disable_default_registry_endpoint,
                client_cert: a.registry_cert.zip(a.registry_key),
                ca_files: a.registry_ca,
                ca_flag: Some("--registry-ca FILE"),
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
            volume_size: a.volume_size.as_deref().map(volume_size).transpose()?,
            parity: a.parity,
            sbom: a
                .sbom
                .iter()
                .map(|f| sbom_format(*f))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
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
    /// `--root`: where the bundle's files are installed; `None` with
    /// `--skip-files`.
    pub files_root: Option<PathBuf>,
    /// Whether the bundle's manifests were left out because this is a fleet
    /// import without `--local-manifests` (said once the import runs).
    pub fleet_manifests_left_out: bool,
    /// The state folder of import receipts ([`state_dir`]).
    pub state_dir: PathBuf,
    /// `--prune`: images a replaced version alone named are deleted, not only
    /// unpinned.
    pub prune: bool,
    /// The system profile the bundle's NixOS system is activated with and the link
    /// to the running system (`--profile`, `--current-system`); `None` with
    /// `--activation none`.
    pub system_links: Option<SystemLinks>,
    /// `--activation boot`: a `switch` is done as `boot`, a `test` not at all.
    pub boot_only: bool,
}

impl ImportSettings {
    /// Resolves import's flags.
    pub fn resolve(a: ImportArgs) -> Result<Self, Failure> {
        let t = a.targets;
        if a.staged && t.registry.is_some() {
            return Err(InputFailure(
                "--staged and --registry exclude each other: stage an archive for one node, or push to a registry for the fleet".into(),
            )
            .into());
        }
        let images = if t.skip_images {
            None
        } else if let Some((host, registry)) = fleet_registry(&t)? {
            Some(ImageDest::Registry(PushOptions {
                host,
                registry,
                mirror_file: t.k3s_root.join("registries.yaml.gapbundle"),
            }))
        } else if a.staged {
            Some(ImageDest::Staged)
        } else {
            Some(ImageDest::Containerd {
                socket: t.containerd,
                namespace: t.namespace,
                snapshotter: a.snapshotter,
            })
        };
        // A fleet import's manifests are for the fleet's servers, not this node's
        // K3s: only with --local-manifests do they go into its folder here.
        let fleet_manifests_left_out =
            !t.skip_manifests && t.registry.is_some() && !a.local_manifests;
        let manifests = match (t.skip_manifests || fleet_manifests_left_out, a.apply) {
            (true, _) => None,
            (false, true) => Some(ManifestDest::Apply(a.kubeconfig)),
            (false, false) => Some(ManifestDest::Folder),
        };
        Ok(ImportSettings {
            bundle: a.bundle,
            trust: TrustSettings::resolve(a.trust),
            dry_run: a.dry_run,
            nix: (!t.skip_nix).then_some(NixOptions {
                store: t.nix_store,
                ask_only: a.dry_run,
            }),
            oci: OciOptions {
                images,
                manifests,
                k3s_root: t.k3s_root,
            },
            files_root: (!a.skip_files).then_some(a.root),
            fleet_manifests_left_out,
            state_dir: state_dir(a.state_dir),
            prune: a.prune,
            system_links: (a.activation != "none").then_some(SystemLinks {
                profile: a.profile,
                current_system: a.current_system,
            }),
            boot_only: a.activation == "boot",
        })
    }
}

/// `gapbundle activate`, resolved.
#[derive(Debug, Clone)]
pub struct ActivateSettings {
    /// The bundle file, receipt file or bundle name.
    pub bundle: PathBuf,
    /// Who must have signed a bundle file.
    pub trust: TrustSettings,
    /// `--dry-run`.
    pub dry_run: bool,
    /// The system profile and the link to the running system.
    pub system_links: SystemLinks,
    /// The state folder of import receipts ([`state_dir`]).
    pub state_dir: PathBuf,
}

impl ActivateSettings {
    /// Resolves activate's flags.
    pub fn resolve(a: ActivateArgs) -> Self {
        ActivateSettings {
            bundle: a.bundle,
            trust: TrustSettings::resolve(a.trust),
            dry_run: a.dry_run,
            system_links: SystemLinks {
                profile: a.profile,
                current_system: a.current_system,
            },
            state_dir: state_dir(a.state_dir),
        }
    }
}

/// The state folder for import receipts: `--state-dir` (or `GAPBUNDLE_STATE_DIR`),
/// else `/var/lib/gapbundle` for root (the host's own record) and the user's state
/// folder (`$XDG_STATE_HOME/gapbundle`, `~/.local/state/gapbundle`) for anyone
/// else, who cannot write the host's.
pub fn state_dir(given: Option<PathBuf>) -> PathBuf {
    if let Some(d) = given {
        return d;
    }
    let host = PathBuf::from("/var/lib/gapbundle");
    if rustix::process::geteuid().is_root() {
        return host;
    }
    dirs::state_dir()
        .map(|d| d.join("gapbundle"))
        .unwrap_or(host)
}

/// `gapbundle list`, resolved.
#[derive(Debug, Clone)]
pub struct ListSettings {
    /// The state folder of import receipts ([`state_dir`]).
    pub state_dir: PathBuf,
}

impl ListSettings {
    /// Resolves list's flags.
    pub fn resolve(a: ListArgs) -> Self {
        ListSettings {
            state_dir: state_dir(a.state_dir),
        }
    }
}

/// `gapbundle remove`, resolved.
#[derive(Debug, Clone)]
pub struct RemoveSettings {
    /// The bundle's name.
    pub name: String,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--prune`.
    pub prune: bool,
    /// The state folder of import receipts ([`state_dir`]).
    pub state_dir: PathBuf,
}

impl RemoveSettings {
    /// Resolves remove's flags.
    pub fn resolve(a: RemoveArgs) -> Self {
        RemoveSettings {
            name: a.name,
            dry_run: a.dry_run,
            prune: a.prune,
            state_dir: state_dir(a.state_dir),
        }
    }
}

/// `gapbundle serve`, resolved.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// The bundle files (or first volumes).
    pub bundles: Vec<PathBuf>,
    /// Who must have signed each of them.
    pub trust: TrustSettings,
    /// The address to listen on.
    pub listen: std::net::SocketAddr,
    /// `--tls-cert` and `--tls-key`: HTTPS with this chain and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The base URL nodes are told to use: `--url`, else from the address bound
    /// (this host's name, when it listens on every interface).
    pub url: Option<String>,
    /// This host's name, for that URL.
    pub host_name: String,
    /// Connections served at once.
    pub max_connections: usize,
    /// Threads hashing blobs at start: `--jobs`, else [`default_threads`].
    pub threads: usize,
}

impl ServeSettings {
    /// Resolves serve's flags.
    pub fn resolve(a: ServeArgs) -> Self {
        ServeSettings {
            bundles: a.bundles,
            trust: TrustSettings::resolve(a.trust),
            listen: a.listen,
            tls: a.tls_cert.zip(a.tls_key),
            url: a.url.map(|u| u.trim_end_matches('/').to_string()),
            host_name: host_name(),
            max_connections: a.max_connections.max(1),
            threads: a.jobs.unwrap_or_else(default_threads).max(1),
        }
    }
}

/// `--registry HOST` of the target options, with the settings that reach it
/// (`--registry-auth`, `--registry-ca`, `--insecure-registry`, `--retries`, the
/// user's Docker config); `None` without `--registry`. Import pushes there,
/// inventory lists it: one resolution for both.
fn fleet_registry(t: &TargetArgs) -> Result<Option<(String, registry::Settings)>, Failure> {
    let Some(host) = &t.registry else {
        return Ok(None);
    };
    Ok(Some((
        host.clone(),
        registry::Settings {
            insecure_hosts: t.insecure_registries.clone(),
            credentials: credentials(&t.registry_auth)?,
            docker_config: default_docker_config(),
            podman_auth: default_podman_auth(),
            registries: None,
            default_endpoint: true,
            client_cert: t.registry_cert.clone().zip(t.registry_key.clone()),
            ca_files: t.registry_ca.clone(),
            ca_flag: Some("--registry-ca FILE"),
            jobs: 1,
            retries: t.retries.max(1),
        },
    )))
}

/// Where `inventory` lists images.
#[derive(Debug, Clone)]
pub enum InventoryImages {
    /// The repositories of a fleet registry (`--registry`).
    Registry {
        /// `--registry HOST[:PORT]`, as given.
        host: String,
        /// How to reach it.
        registry: registry::Settings,
    },
    /// The content store of containerd.
    Containerd {
        /// Its socket.
        socket: PathBuf,
        /// Its namespace.
        namespace: String,
    },
}

/// `gapbundle inventory`, resolved.
#[derive(Debug, Clone)]
pub struct InventorySettings {
    /// Where the inventory goes.
    pub output: PathBuf,
    /// Site keys to sign it with.
    pub keys: Vec<PathBuf>,
    /// The site's name: `--site`, else the host name.
    pub site: String,
    /// When it is taken: `SOURCE_DATE_EPOCH`, else now.
    pub created: u64,
    /// The Nix store or cache to list; `None` with `--skip-nix`.
    pub nix: Option<NixOptions>,
    /// Where to list images; `None` with `--skip-images`.
    pub images: Option<InventoryImages>,
    /// The K3s data directory whose folders' bundles are listed; `None` with
    /// `--skip-manifests`.
    pub k3s_root: Option<PathBuf>,
}

impl InventorySettings {
    /// Resolves inventory's flags, from the same target options as import's.
    pub fn resolve(a: InventoryArgs) -> Result<Self, Failure> {
        let t = a.targets;
        if t.skip_images && t.skip_nix && t.skip_manifests {
            return Err(InputFailure(
                "nothing to list: --skip-images, --skip-nix and --skip-manifests were all given"
                    .into(),
            )
            .into());
        }
        let site = match &a.site {
            Some(s) if !s.trim().is_empty() => s.trim().to_string(),
            Some(_) => return Err(InputFailure("--site must not be empty".into()).into()),
            None => host_name(),
        };
        let created = match source_date_epoch()? {
            Some(t) => t,
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let images = if t.skip_images {
            None
        } else if let Some((host, registry)) = fleet_registry(&t)? {
            Some(InventoryImages::Registry { host, registry })
        } else {
            Some(InventoryImages::Containerd {
                socket: t.containerd,
                namespace: t.namespace,
            })
        };
        Ok(InventorySettings {
            output: a.output,
            keys: a.keys,
            site,
            created,
            nix: (!t.skip_nix).then_some(NixOptions {
                store: t.nix_store,
                ask_only: true,
            }),
            images,
            k3s_root: (!t.skip_manifests).then_some(t.k3s_root),
        })
    }
}

/// The machine's host name, or `site` when it has none.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| fs_err::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "site".into())
}

/// `--volume-size`, parsed; a size that is not one is bad input.
fn volume_size(s: &str) -> Result<u64, Failure> {
    Ok(parse_size(s)?)
}

/// `gapbundle split`, resolved.
#[derive(Debug, Clone)]
pub struct SplitSettings {
    /// The bundle to cut (`-` for stdin).
    pub bundle: PathBuf,
    /// Largest volume, in bytes.
    pub volume_size: u64,
    /// Parity volumes to write.
    pub parity: u32,
    /// The volumes' prefix: `-o`, else the bundle's own path.
    pub prefix: PathBuf,
}

impl SplitSettings {
    /// Resolves split's flags.
    pub fn resolve(a: SplitArgs) -> Result<Self, Failure> {
        let prefix = match (a.output, a.bundle.as_os_str() == "-") {
            (Some(p), _) => p,
            (None, true) => {
                return Err(InputFailure(
                    "splitting standard input needs -o PREFIX for the volumes' names".into(),
                )
                .into())
            }
            (None, false) => a.bundle.clone(),
        };
        Ok(SplitSettings {
            volume_size: volume_size(&a.volume_size)?,
            parity: a.parity.unwrap_or(0),
            bundle: a.bundle,
            prefix,
        })
    }
}

/// `gapbundle join`, resolved.
#[derive(Debug, Clone)]
pub struct JoinSettings {
    /// The first volume.
    pub first: PathBuf,
    /// Where the whole bundle goes.
    pub output: PathBuf,
    /// Threads hashing blobs: `--jobs`, else [`default_threads`].
    pub threads: usize,
}

impl JoinSettings {
    /// Resolves join's flags.
    pub fn resolve(a: JoinArgs) -> Self {
        JoinSettings {
            first: a.first,
            output: a.output,
            threads: a.jobs.unwrap_or_else(default_threads).max(1),
        }
    }
}

/// `gapbundle sbom`, resolved.
#[derive(Debug, Clone)]
pub struct SbomSettings {
    /// The bundle (or its first volume).
    pub bundle: PathBuf,
    /// The format.
    pub format: crate::sbom::Format,
    /// Where the document goes; standard output when `None`.
    pub output: Option<PathBuf>,
}

impl SbomSettings {
    /// Resolves sbom's flags.
    pub fn resolve(a: SbomArgs) -> Self {
        SbomSettings {
            bundle: a.bundle,
            format: sbom_format(a.format),
            output: a.output,
        }
    }
}

/// The format a command-line `FORMAT` names.
pub fn sbom_format(f: SbomFormat) -> crate::sbom::Format {
    match f {
        SbomFormat::Cyclonedx => crate::sbom::Format::CycloneDx,
        SbomFormat::Spdx => crate::sbom::Format::Spdx,
    }
}

/// `gapbundle patch`, resolved.
#[derive(Debug, Clone)]
pub struct PatchSettings {
    /// The base bundles, in the order given.
    pub bases: Vec<PathBuf>,
    /// The delta (the last path given).
    pub delta: PathBuf,
    /// Where the full bundle goes.
    pub output: PathBuf,
    /// Threads copying and hashing blobs: `--jobs`, else [`default_threads`].
    pub threads: usize,
}

impl PatchSettings {
    /// Resolves patch's flags.
    pub fn resolve(a: PatchArgs) -> Self {
        let mut bases = a.bundles;
        let delta = bases.pop().expect("clap asks for two or more");
        PatchSettings {
            bases,
            delta,
            output: a.output,
            threads: a.jobs.unwrap_or_else(default_threads).max(1),
        }
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

    /// clap's defaults are literals (cli/ depends on nothing); these are the
    /// `activate` module's.
    #[test]
    fn the_system_links_default_to_nixos_own() {
        let nixos = SystemLinks {
            profile: crate::import::activate::DEFAULT_PROFILE.into(),
            current_system: crate::import::activate::DEFAULT_CURRENT_SYSTEM.into(),
        };
        let s = import(&["--activation", "switch"]).unwrap();
        assert_eq!(s.system_links.as_ref(), Some(&nixos));
        let crate::cli::Command::Activate(a) = command(&["activate", "b.gapb"]) else {
            unreachable!("parsed as activate")
        };
        assert_eq!(ActivateSettings::resolve(a).system_links, nixos);
    }

    fn command(args: &[&str]) -> crate::cli::Command {
        crate::cli::Cli::try_parse_from(std::iter::once(&"gapbundle").chain(args))
            .unwrap()
            .command
    }

    #[test]
    fn inventory_takes_import_s_target_options() {
        let crate::cli::Command::Inventory(a) = command(&[
            "inventory",
            "-o",
            "i.json.zst",
            "--site",
            "north",
            "--registry",
            "r:5000",
            "--registry-auth",
            "r:5000=u:p",
            "--skip-nix",
            "--skip-manifests",
        ]) else {
            unreachable!("parsed as inventory")
        };
        let s = InventorySettings::resolve(a).unwrap();
        let Some(InventoryImages::Registry { host, registry }) = s.images else {
            panic!("--registry lists the fleet registry")
        };
        assert_eq!((host.as_str(), registry.jobs), ("r:5000", 1));
        assert_eq!(registry.credentials.len(), 1);
        assert!(s.nix.is_none() && s.k3s_root.is_none());
        assert_eq!(s.site, "north");

        let crate::cli::Command::Inventory(a) = command(&["inventory", "-o", "i"]) else {
            unreachable!("parsed as inventory")
        };
        let s = InventorySettings::resolve(a).unwrap();
        assert!(matches!(
            s.images,
            Some(InventoryImages::Containerd { ref namespace, .. }) if namespace == "k8s.io"
        ));
        assert_eq!(s.k3s_root, Some(PathBuf::from("/var/lib/rancher/k3s")));

        let crate::cli::Command::Inventory(a) = command(&[
            "inventory",
            "-o",
            "i",
            "--skip-nix",
            "--skip-images",
            "--skip-manifests",
        ]) else {
            unreachable!("parsed as inventory")
        };
        let refused = InventorySettings::resolve(a).unwrap_err();
        assert_eq!(refused.code, super::super::exit::INPUT);
    }

    #[test]
    fn a_volume_size_that_is_not_one_is_bad_input() {
        let crate::cli::Command::Split(a) =
            command(&["split", "b.gapb", "--volume-size", "fat32", "--parity", "2"])
        else {
            unreachable!("parsed as split")
        };
        let s = SplitSettings::resolve(a).unwrap();
        assert_eq!(
            (s.volume_size, s.parity, s.prefix),
            ((4 << 30) - 1, 2, PathBuf::from("b.gapb"))
        );
        let crate::cli::Command::Split(a) = command(&["split", "b.gapb", "--volume-size", "4Q"])
        else {
            unreachable!("parsed as split")
        };
        let refused = SplitSettings::resolve(a).unwrap_err();
        assert_eq!(refused.code, super::super::exit::INPUT);
        assert!(format!("{:#}", refused.error).contains("`4Q` is not a volume size"));
        let crate::cli::Command::Create(a) =
            command(&["create", "-f", "s.yaml", "-o", "b", "--volume-size", "x"])
        else {
            unreachable!("parsed as create")
        };
        assert_eq!(
            CreateSettings::resolve(a).unwrap_err().code,
            super::super::exit::INPUT
        );
    }
}
