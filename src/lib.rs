//! gapbundle carries software across an air gap: OCI images, Nix closures and
//! Kubernetes manifests go into one signed, content-addressed, reproducible file on
//! the connected side, and come out verified on the disconnected side.
//!
//! The crate is split the way the data flows, so that each part can be read and
//! tested on its own (docs/architecture.md draws it, and says which module may use
//! which; a test holds that):
//! - [`bundle`]: the file format, pure (no network, no processes, no async);
//! - [`spec`]: the spec file and the lock file, pure;
//! - [`oci`]: image references as Docker and containerd's CRI plugin read them, and
//!   K3s's `registries.yaml` (mirrors, rewrites), pure;
//! - [`k8s`]: Kubernetes manifests as data (documents, workload images, HelmChart), pure;
//! - [`nixfmt`]: Nix's formats (nix32, narinfo, path signatures, NARs), pure;
//! - [`sbom`]: software bills of materials (CycloneDX, SPDX) of a bundle's head, pure;
//! - [`registry`]: the one registry client (TLS, routes, credentials, retries, advice)
//!   for pulls and pushes;
//! - [`resolve`]: inputs to blobs (registries, local layouts and archives, Nix
//!   closures, helm and kubectl);
//! - [`import`]: blobs to targets (containerd, K3s's folders, a fleet registry, a Nix
//!   store or binary cache);
//! - [`io`]: the local content-addressed cache, atomic files, temporary files a rerun
//!   cleans up after a kill, where a bundle's bytes come from (stdin, a file,
//!   volumes), subprocesses, the one HTTP server;
//! - [`serve`]: verified bundles as one OCI registry and Nix binary cache, the view
//!   `gapbundle serve` answers from ([`io::serve`] is its HTTP server);
//! - [`commands`]: one orchestrator per subcommand, the settings resolved from the
//!   command line, the `--json` reports, the exit code; [`cli`]: the clap definitions;
//! - [`pool`]: the one worker pool (std threads only, so the format may use it);
//! - [`progress`]: the only place that draws progress on stderr;
//! - [`time`]: timestamps as RFC 3339, without a time zone database;
//! - [`error`]: the classes that pick an exit code, used by every layer;
//! - [`text`]: bundle text escaped for a terminal, used by every print of it.

pub mod bundle;
pub mod cli;
pub mod commands;
pub mod error;
pub mod import;
pub mod io;
pub mod k8s;
pub mod nixfmt;
pub mod oci;
pub mod pool;
pub mod progress;
pub mod registry;
pub mod resolve;
pub mod sbom;
pub mod serve;
pub mod spec;
pub mod text;
pub mod time;
