//! Command-line definitions, and nothing else: clap structs that the commands in
//! `commands/` receive. Keeping them here lets `completions` and the man page be
//! generated from one place and keeps parsing out of the orchestration code.
//!
//! The doc comments on the fields are clap's `--help` text, written for a terminal
//! (`HOST[:PORT]`, `<k3s-root>/agent/images`), so rustdoc is not asked to read them
//! as links or HTML.
#![allow(
    rustdoc::broken_intra_doc_links,
    rustdoc::invalid_html_tags,
    reason = "the doc comments are --help text for a terminal (see above)"
)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Carry OCI images, Nix closures and Kubernetes manifests across an air gap in one
/// signed, content-addressed, reproducible bundle file.
#[derive(Debug, Parser)]
#[command(
    name = "gapbundle",
    version,
    propagate_version = true,
    args_override_self = true
)]
#[command(
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed (bad signature or damaged bundle), 4 bad input (spec, lock, key), 5 registry, containerd or Nix daemon unreachable or refused, 6 a delta bundle does not fit: the target (or patch's bases) lacks blobs it leaves out, nothing written, 7 activating the bundle's NixOS system failed and the host went back to the system it ran before, 8 activating it failed and going back failed too (the host may run parts of both)."
)]
pub struct Cli {
    /// Global output options.
    #[command(flatten)]
    pub output: OutputArgs,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// Output options shared by every subcommand.
#[derive(Debug, Args, Clone)]
pub struct OutputArgs {
    /// Print a machine-readable JSON summary on stdout (errors too).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print nothing but errors and warnings on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve a bundle spec and write one signed bundle file.
    Create(CreateArgs),
    /// Check a bundle's signature and every object's digest.
    Verify(VerifyArgs),
    /// Show what a bundle holds, reading only its head.
    Inspect(InspectArgs),
    /// Cut a bundle into volumes (FAT32 sticks, several disks), with parity volumes.
    Split(SplitArgs),
    /// Join a bundle's volumes into one file, rebuilding lost ones from parity.
    Join(JoinArgs),
    /// Verify a bundle and load it into Nix, containerd/K3s or a fleet registry.
    Import(ImportArgs),
    /// Serve bundles in place as a site's OCI registry and Nix binary cache.
    Serve(ServeArgs),
    /// Write down what a target holds, for `create --against` (delta bundles).
    Inventory(InventoryArgs),
    /// Activate the NixOS system an imported bundle carries (a new generation of the
    /// system profile, its switch-to-configuration, and back if that fails).
    Activate(ActivateArgs),
    /// Show the bundles imported on this host (their receipts).
    List(ListArgs),
    /// Take an imported bundle away: its images unpinned, its manifests, files and
    /// GC roots removed, except what another imported bundle still needs.
    Remove(RemoveArgs),
    /// Rebuild the full bundle from a delta and its base bundle(s), without a key.
    Patch(PatchArgs),
    /// What changed between two bundles, from their heads.
    Diff(DiffArgs),
    /// Write a software bill of materials (CycloneDX or SPDX) of a bundle, from its head.
    Sbom(SbomArgs),
    /// Make and convert signing keys (Nix's `name:base64` format).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print a shell completion script on stdout.
    Completions(CompletionsArgs),
    /// Write the man page on stdout, or one page per subcommand with `--dir`.
    Man(ManArgs),
}

/// `gapbundle create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The bundle spec (YAML).
    #[arg(
        short = 'f',
        long = "file",
        value_name = "SPEC",
        default_value = "bundle.yaml"
    )]
    pub spec: PathBuf,
    /// Where to write the bundle.
    #[arg(short = 'o', long = "output", value_name = "BUNDLE")]
    pub output: PathBuf,
    /// Secret key to sign with (repeatable; `nix key generate-secret` keys work).
    #[arg(long = "key", value_name = "SECRET-KEY-FILE")]
    pub keys: Vec<PathBuf>,
    /// Blob cache directory [default: the user's cache dir + /gapbundle].
    #[arg(long, value_name = "DIR", env = "GAPBUNDLE_CACHE")]
    pub cache: Option<PathBuf>,
    /// Parallel downloads.
    #[arg(long, short = 'j', default_value_t = 4)]
    pub jobs: usize,
    /// Refuse to resolve anything differently from the lock file (for CI).
    #[arg(long)]
    pub locked: bool,
    /// Resolve tags again even if the lock file pins them.
    #[arg(long, conflicts_with = "locked")]
    pub update: bool,
    /// Lock file [default: the spec's path with the extension `.lock`].
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Allow plain HTTP to this registry (HOST[:PORT]; repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// Credentials for a registry or chart repository as HOST=USER:PASSWORD (repeatable).
    #[arg(long = "registry-auth", value_name = "HOST=USER:PASS")]
    pub registry_auth: Vec<String>,
    /// Docker config with registry credentials [default: ~/.docker/config.json].
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// Attempts per registry request before giving up.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Registry mirrors, rewrites, credentials and TLS per host, in K3s's
    /// registries.yaml format (the file K3s nodes read from /etc/rancher/k3s/).
    #[arg(
        long,
        value_name = "FILE",
        env = "GAPBUNDLE_REGISTRIES",
        help_heading = "Registries"
    )]
    pub registries: Option<PathBuf>,
    /// With --registries: pull images of a mirrored registry only from its mirrors,
    /// never from the registry itself (as K3s's flag of the same name).
    #[arg(long, help_heading = "Registries")]
    pub disable_default_registry_endpoint: bool,
    /// CA certificate (PEM) trusted for every registry and chart repository, beside
    /// the system's (repeatable).
    #[arg(long = "registry-ca", value_name = "FILE", help_heading = "Registries")]
    pub registry_ca: Vec<PathBuf>,
    /// Client certificate (PEM) for registries and chart repositories that ask for one.
    #[arg(
        long,
        value_name = "FILE",
        requires = "registry_key",
        help_heading = "Registries"
    )]
    pub registry_cert: Option<PathBuf>,
    /// The private key (PEM) of --registry-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires = "registry_cert",
        help_heading = "Registries"
    )]
    pub registry_key: Option<PathBuf>,
    /// Make a delta bundle: leave out the blobs this inventory (`gapbundle
    /// inventory`) or earlier bundle (only its head is read) holds (repeatable).
    #[arg(
        long = "against",
        value_name = "INVENTORY|BUNDLE",
        help_heading = "Delta"
    )]
    pub against: Vec<PathBuf>,
    /// With --against: each inventory and bundle must be signed by one of these keys
    /// (repeatable; a file or a folder of them).
    #[arg(
        long = "trust",
        value_name = "PUBKEY",
        requires = "against",
        help_heading = "Delta"
    )]
    pub trust: Vec<PathBuf>,
    /// Write the bundle as volumes BUNDLE.001, BUNDLE.002, … of at most SIZE bytes
    /// each instead of one file: bytes, K/M/G/T (powers of 1024; KB/MB/GB/TB for
    /// powers of 1000), or `fat32` (4 GiB - 1). `cat BUNDLE.[0-9]*` gives the bundle.
    #[arg(long, value_name = "SIZE", help_heading = "Volumes")]
    pub volume_size: Option<String>,
    /// Also write N parity volumes BUNDLE.p01 … (Reed-Solomon), so that any N lost or
    /// damaged volumes can be rebuilt (by `join`, or as verify and import read).
    #[arg(
        long,
        value_name = "N",
        requires = "volume_size",
        help_heading = "Volumes"
    )]
    pub parity: Option<u32>,
    /// Also store a software bill of materials of the bundle's objects inside it, as
    /// an `sbom` object, signed with the rest (repeatable: one per format).
    #[arg(long = "sbom", value_enum, value_name = "FORMAT")]
    pub sbom: Vec<SbomFormat>,
}

/// An SBOM format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum SbomFormat {
    /// CycloneDX 1.6, JSON.
    Cyclonedx,
    /// SPDX 2.3, JSON.
    Spdx,
}

/// `gapbundle sbom`.
#[derive(Debug, Args)]
#[command(
    after_help = "Only the head is read: a delta, a set of volumes (give the first) or a bundle still being copied works. The signers are the keys the bundle claims; `gapbundle verify --trust KEY` checks them. The same bundle gives the same bytes."
)]
pub struct SbomArgs {
    /// The bundle file (or its first volume, BUNDLE.001).
    pub bundle: PathBuf,
    /// The format.
    #[arg(long, value_enum, default_value = "cyclonedx")]
    pub format: SbomFormat,
    /// Write the SBOM to FILE instead of standard output (with --json, a report
    /// of what was written is printed).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `gapbundle split`.
#[derive(Debug, Args)]
#[command(
    after_help = "Volumes are plain byte ranges of the bundle: `cat BUNDLE.[0-9]* > BUNDLE` joins them, and verify, inspect and import take the first volume (BUNDLE.001) and find the others beside it. Every digest is checked while the bundle is cut, so a damaged bundle is not split."
)]
pub struct SplitArgs {
    /// The bundle to cut (a file, a first volume, or `-` for stdin with `-o`).
    pub bundle: PathBuf,
    /// Largest volume: bytes, K/M/G/T (powers of 1024; KB/MB/GB/TB for powers of
    /// 1000), or `fat32` (4 GiB - 1).
    #[arg(long, value_name = "SIZE")]
    pub volume_size: String,
    /// Also write N parity volumes PREFIX.p01 …: any N lost or damaged volumes can be
    /// rebuilt.
    #[arg(long, value_name = "N")]
    pub parity: Option<u32>,
    /// Names of the volumes: PREFIX.001, … [default: the bundle's own path].
    #[arg(short = 'o', long = "output", value_name = "PREFIX")]
    pub output: Option<PathBuf>,
}

/// `gapbundle join`.
#[derive(Debug, Args)]
#[command(
    after_help = "Missing and damaged volumes are found from the parity volumes' digests and the bundle's own, rebuilt from parity when there is enough of it, and named. Join checks every digest; the signature is checked by verify and import."
)]
pub struct JoinArgs {
    /// The first volume (BUNDLE.001); the others are found beside it.
    pub first: PathBuf,
    /// Where to write the whole bundle.
    #[arg(short = 'o', long = "output", value_name = "BUNDLE")]
    pub output: PathBuf,
    /// Threads hashing blobs [default: number of CPUs].
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
}

/// `gapbundle verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle file (or its first volume, BUNDLE.001), or `-` to read it from stdin in one pass.
    pub bundle: PathBuf,
    /// Who must have signed it.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Threads hashing blobs [default: number of CPUs].
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
}

/// Trust options shared by verify and import.
#[derive(Debug, Args, Clone)]
pub struct TrustArgs {
    /// Trusted public key file, or a directory of them (repeatable).
    #[arg(long = "trust", value_name = "PUBKEY")]
    pub trust: Vec<PathBuf>,
    /// How many distinct trusted keys must have signed.
    #[arg(long, default_value_t = 1)]
    pub threshold: usize,
    /// Accept a bundle without a trusted signature (digests are still checked).
    #[arg(long)]
    pub allow_unsigned: bool,
}

/// `gapbundle import`.
#[derive(Debug, Args, Clone)]
pub struct ImportArgs {
    /// The bundle file (or its first volume, BUNDLE.001), or `-` for stdin.
    pub bundle: PathBuf,
    /// Who must have signed it.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Show what would be imported and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the targets are (shared with `inventory`).
    #[command(flatten)]
    pub targets: TargetArgs,

    /// Snapshotter to unpack images into.
    #[arg(long, default_value = "overlayfs", help_heading = "Images")]
    pub snapshotter: String,
    /// K3s is not running yet: write an image archive into <k3s-root>/agent/images instead of using containerd.
    #[arg(long, help_heading = "Images")]
    pub staged: bool,

    /// Apply manifests with kubectl instead of the auto-deploy folder.
    #[arg(long, help_heading = "Manifests")]
    pub apply: bool,
    /// kubeconfig for --apply.
    #[arg(long, value_name = "FILE", help_heading = "Manifests")]
    pub kubeconfig: Option<PathBuf>,
    /// With --registry: also write the manifests into this node's K3s auto-deploy
    /// folder (a fleet import leaves them out, as the fleet's nodes are elsewhere).
    #[arg(long, requires = "registry", help_heading = "Manifests")]
    pub local_manifests: bool,

    /// Install the bundle's files below DIR, as if DIR were `/` (symlinks inside
    /// it resolve inside it).
    #[arg(long, value_name = "DIR", default_value = "/", help_heading = "Files")]
    pub root: PathBuf,
    /// Do not install files.
    #[arg(long, help_heading = "Files")]
    pub skip_files: bool,

    /// The NixOS system profile the bundle's system becomes a generation of.
    #[arg(
        long,
        value_name = "PROFILE",
        default_value = "/nix/var/nix/profiles/system",
        help_heading = "NixOS"
    )]
    pub profile: PathBuf,
    /// The link to the running NixOS system, which a `test` activation compares the
    /// bundle's system with (a rerun does nothing when it points at it).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/current-system",
        help_heading = "NixOS"
    )]
    pub current_system: PathBuf,
    /// How far the bundle's NixOS system may be activated: `switch` does what the
    /// bundle asks (switch, boot or test), `boot` makes it the boot default at most
    /// (a `switch` becomes `boot`, a `test` is not done), `none` imports it only
    /// (`gapbundle activate` does it later).
    #[arg(long, value_name = "LIMIT", default_value = "switch", value_parser = ["none", "boot", "switch"], help_heading = "NixOS")]
    pub activation: String,

    /// Where import receipts are kept (`gapbundle list`, `gapbundle remove`)
    /// [default: /var/lib/gapbundle as root, else $XDG_STATE_HOME/gapbundle].
    #[arg(
        long,
        value_name = "DIR",
        env = "GAPBUNDLE_STATE_DIR",
        help_heading = "Receipts"
    )]
    pub state_dir: Option<PathBuf>,
    /// When a new version replaces an old one, also delete the images only the old
    /// one had (and no other imported bundle names) instead of only unpinning them.
    #[arg(long, help_heading = "Receipts")]
    pub prune: bool,
}

/// Where an import's targets are: the options `import` and `inventory` share, so
/// that an inventory lists exactly what an import with the same options would find.
#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// Nix store to import into (or list): a local store path or URI (`/mnt/target`,
    /// `mnt/target`: what has a `/` and no `://` is a path, as for Nix;
    /// `local?root=/mnt/target`) or a binary cache (`file:///srv/cache`) [default: the local store].
    #[arg(long, value_name = "URI", help_heading = "Nix")]
    pub nix_store: Option<String>,
    /// Leave out Nix paths.
    #[arg(long, help_heading = "Nix")]
    pub skip_nix: bool,

    /// containerd socket (K3s's by default).
    #[arg(
        long,
        value_name = "SOCKET",
        default_value = "/run/k3s/containerd/containerd.sock",
        help_heading = "Images"
    )]
    pub containerd: PathBuf,
    /// containerd namespace (K3s keeps Kubernetes images in k8s.io).
    #[arg(long, default_value = "k8s.io", help_heading = "Images")]
    pub namespace: String,
    /// Leave out images.
    #[arg(long, help_heading = "Images")]
    pub skip_images: bool,
    /// K3s data directory (agent/images, server/manifests).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/lib/rancher/k3s",
        help_heading = "Images"
    )]
    pub k3s_root: PathBuf,
    /// Push images to (or list) this registry (fleet mode) instead of containerd.
    #[arg(long, value_name = "HOST[:PORT]", help_heading = "Images")]
    pub registry: Option<String>,
    /// Credentials for --registry as HOST=USER:PASS.
    #[arg(
        long = "registry-auth",
        value_name = "HOST=USER:PASS",
        help_heading = "Images"
    )]
    pub registry_auth: Vec<String>,
    /// CA certificate (PEM) for --registry (repeatable).
    #[arg(long, value_name = "FILE", help_heading = "Images")]
    pub registry_ca: Vec<PathBuf>,
    /// Client certificate (PEM) for --registry, if it asks for one.
    #[arg(
        long,
        value_name = "FILE",
        requires = "registry_key",
        help_heading = "Images"
    )]
    pub registry_cert: Option<PathBuf>,
    /// The private key (PEM) of --registry-cert.
    #[arg(
        long,
        value_name = "FILE",
        requires = "registry_cert",
        help_heading = "Images"
    )]
    pub registry_key: Option<PathBuf>,
    /// Allow plain HTTP to this registry.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        help_heading = "Images"
    )]
    pub insecure_registries: Vec<String>,
    /// Attempts per registry request before giving up.
    #[arg(long, default_value_t = 5, help_heading = "Images")]
    pub retries: u32,

    /// Leave out Kubernetes manifests (and, for inventory, the bundles K3s's folders show).
    #[arg(long, help_heading = "Manifests")]
    pub skip_manifests: bool,
}

/// `gapbundle serve`.
#[derive(Debug, Args)]
#[command(
    after_help = "Every bundle's signature and every blob are checked at start; then the bundles are served read-only as one view, from the files in place: the OCI distribution pull API under /v2/ (an image `registry.example:5000/team/app:1` is repository `team/app`, tag `1`: point a K3s registries.yaml mirror or a containerd hosts.toml at this server) and a Nix binary cache at the root. Every byte sent is hashed again as it is read; a blob whose bytes changed on disk is cut short and logged. It prints the URL, the registries.yaml mirror snippet and the nix.conf lines, then a log line per request on stderr (--quiet: none)."
)]
pub struct ServeArgs {
    /// The bundle files (or first volumes, BUNDLE.001) to serve as one registry and
    /// binary cache; a delta bundle needs the bundle(s) it was made against beside it.
    #[arg(value_name = "BUNDLE", required = true)]
    pub bundles: Vec<PathBuf>,
    /// Who must have signed each of them.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Address and port to listen on; every interface only when asked for
    /// (`0.0.0.0:5000`, `[::]:5000`); port 0 takes a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5000")]
    pub listen: std::net::SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The URL nodes reach this server at, for the printed snippets [default: from
    /// --listen; the host name when it listens on every interface].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Connections served at once (more wait).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,
    /// Threads hashing blobs at start [default: number of CPUs].
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
}

/// `gapbundle inventory`: the same target options as `import`.
#[derive(Debug, Args, Clone)]
pub struct InventoryArgs {
    /// Where to write the inventory (zstd-compressed canonical JSON).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Sign it with this site key (repeatable).
    #[arg(long = "key", value_name = "SECRET-KEY-FILE")]
    pub keys: Vec<PathBuf>,
    /// The site's name, recorded in the inventory [default: the host name].
    #[arg(long, value_name = "NAME")]
    pub site: Option<String>,
    /// Where the targets are (the same options as `import`).
    #[command(flatten)]
    pub targets: TargetArgs,
}

/// `gapbundle list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Where import receipts are kept [default: /var/lib/gapbundle as root, else
    /// $XDG_STATE_HOME/gapbundle].
    #[arg(long, value_name = "DIR", env = "GAPBUNDLE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `gapbundle remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The bundle's name (as `gapbundle list` shows it).
    pub name: String,
    /// Show what would be removed and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete the images (not only unpin them) that no other imported bundle names.
    #[arg(long)]
    pub prune: bool,
    /// Where import receipts are kept [default: /var/lib/gapbundle as root, else
    /// $XDG_STATE_HOME/gapbundle].
    #[arg(long, value_name = "DIR", env = "GAPBUNDLE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `gapbundle activate`.
#[derive(Debug, Args)]
pub struct ActivateArgs {
    /// An imported bundle file, the receipt file of an import, or the name of an
    /// imported bundle (its receipt in --state-dir).
    #[arg(value_name = "BUNDLE-OR-RECEIPT")]
    pub bundle: PathBuf,
    /// Who must have signed the bundle (for a bundle file).
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Show which generation would be made and what runs; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The NixOS system profile.
    #[arg(
        long,
        value_name = "PROFILE",
        default_value = "/nix/var/nix/profiles/system"
    )]
    pub profile: PathBuf,
    /// The link to the running NixOS system, which a `test` activation compares the
    /// bundle's system with.
    #[arg(long, value_name = "PATH", default_value = "/run/current-system")]
    pub current_system: PathBuf,
    /// Where import receipts are kept [default: /var/lib/gapbundle as root, else
    /// $XDG_STATE_HOME/gapbundle].
    #[arg(long, value_name = "DIR", env = "GAPBUNDLE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// `gapbundle patch`.
#[derive(Debug, Args)]
pub struct PatchArgs {
    /// The base bundle(s) the delta was made against, then the delta itself.
    #[arg(value_name = "BASE... DELTA", num_args = 2.., required = true)]
    pub bundles: Vec<PathBuf>,
    /// Where to write the full bundle.
    #[arg(short = 'o', long = "output", value_name = "FULL")]
    pub output: PathBuf,
    /// Threads copying and hashing blobs [default: number of CPUs].
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
}

/// `gapbundle diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older bundle.
    pub old: PathBuf,
    /// The newer bundle.
    pub new: PathBuf,
}

/// `gapbundle inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundle file (or its first volume, BUNDLE.001).
    pub bundle: PathBuf,
}

/// `gapbundle key ...`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a key pair: NAME.sec (mode 0600) and NAME.pub.
    Generate(KeyGenerateArgs),
    /// Print the public key of a secret key file.
    Public(KeyPublicArgs),
}

/// `gapbundle key generate`.
#[derive(Debug, Args)]
pub struct KeyGenerateArgs {
    /// Key name, e.g. `release-2026` (Nix shows it in signatures).
    #[arg(long)]
    pub name: String,
    /// Directory to write the files into.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

/// `gapbundle key public`.
#[derive(Debug, Args)]
pub struct KeyPublicArgs {
    /// Secret key file.
    pub secret: PathBuf,
}

/// `gapbundle completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    ///
    /// Install, e.g.: `gapbundle completions bash > /etc/bash_completion.d/gapbundle`,
    /// `gapbundle completions zsh > "${fpath[1]}/_gapbundle"`,
    /// `gapbundle completions fish > ~/.config/fish/completions/gapbundle.fish`.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `gapbundle man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write gapbundle.1 and one page per subcommand (gapbundle-create.1, ...) into DIR
    /// instead of printing gapbundle.1 on stdout.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}
