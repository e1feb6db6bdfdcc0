//! gapbundle carries software across an air gap: OCI images, Nix closures and
//! Kubernetes manifests go into one signed, content-addressed, reproducible file on
//! the connected side, and come out verified on the disconnected side.
//!
//! The crate is split the way the data flows, so that each part can be read and
//! tested on its own:
//! - [`bundle`]: the file format, pure (no network, no processes, no async);
//! - [`spec`]: the spec file and the lock file, pure;
//! - [`oci`]: image references as Docker and containerd's CRI plugin read them, pure;
//! - [`registry`]: the one registry client (TLS, routes, credentials, retries, advice)
//!   for pulls and pushes;
//! - [`resolve`]: inputs to blobs (registries, local layouts and archives);
//! - [`k8s`]: Kubernetes manifests as data (documents, workload images, HelmChart), pure;
//! - [`io`]: the local content-addressed cache, atomic files, where a bundle's bytes
//!   come from (stdin, a file, volumes), subprocesses, the one HTTP server;
//! - [`nixfmt`]: Nix's formats (nix32, narinfo, path signatures), pure;
//! - [`serve`]: verified bundles as one OCI registry and Nix binary cache, the view
//!   `gapbundle serve` answers from ([`io::serve`] is its HTTP server);
//! - [`commands`]: one orchestrator per subcommand; [`cli`]: the clap definitions;
//! - [`pool`]: the one worker pool (std threads only, so the format may use it);
//! - [`error`]: the markers that pick an exit code, used by every layer.

#![deny(missing_docs)]

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
pub mod serve;
pub mod spec;
pub mod time;
