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
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 verification failed (bad signature or damaged bundle), 4 bad input (spec, lock, key), 5 registry, containerd or Nix daemon unreachable or refused."
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
    /// Verify a bundle and load it into Nix, containerd/K3s or a fleet registry.
    Import(ImportArgs),
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
}

/// `gapbundle verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle file, or `-` to read it from stdin in one pass.
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
    /// The bundle file, or `-` for stdin.
    pub bundle: PathBuf,
    /// Who must have signed it.
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Show what would be imported and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Nix store to import into: a local store path or URI (`/mnt/target`,
    /// `local?root=/mnt/target`) or a binary cache (`file:///srv/cache`) [default: the local store].
    #[arg(long, value_name = "URI", help_heading = "Nix")]
    pub nix_store: Option<String>,
    /// Do not import Nix paths.
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
    /// Snapshotter to unpack images into.
    #[arg(long, default_value = "overlayfs", help_heading = "Images")]
    pub snapshotter: String,
    /// Do not import images.
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
    /// K3s is not running yet: write an image archive into <k3s-root>/agent/images instead of using containerd.
    #[arg(long, help_heading = "Images")]
    pub staged: bool,
    /// Push images to this registry (fleet mode) instead of containerd.
    #[arg(long, value_name = "HOST[:PORT]", help_heading = "Images")]
    pub registry: Option<String>,
    /// Credentials for --registry as HOST=USER:PASS.
    #[arg(
        long = "registry-auth",
        value_name = "HOST=USER:PASS",
        help_heading = "Images"
    )]
    pub registry_auth: Vec<String>,
    /// CA certificate (PEM) for --registry.
    #[arg(long, value_name = "FILE", help_heading = "Images")]
    pub registry_ca: Option<PathBuf>,
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

    /// Do not install Kubernetes manifests.
    #[arg(long, help_heading = "Manifests")]
    pub skip_manifests: bool,
    /// Apply manifests with kubectl instead of the auto-deploy folder.
    #[arg(long, help_heading = "Manifests")]
    pub apply: bool,
    /// kubeconfig for --apply.
    #[arg(long, value_name = "FILE", help_heading = "Manifests")]
    pub kubeconfig: Option<PathBuf>,
}

/// `gapbundle inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundle file.
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
