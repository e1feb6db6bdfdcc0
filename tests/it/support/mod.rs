//! The harness of gapbundle's integration tests: real services, real fixture
//! images, independent checks from the outside, and the few fakes the project's
//! rules allow.
//!
//! Why this exists: gapbundle's job is to move OCI images between real
//! registries and hosts that have no network. Mocked registries would only
//! prove that gapbundle agrees with our own idea of the distribution API, so
//! the tests run the real implementations instead:
//!
//! * [`Registry`] starts the real CNCF distribution server (`docker-registry
//!   serve`, optionally with bcrypt htpasswd auth) on a free 127.0.0.1 port
//!   with its storage in a temporary folder, and kills it on drop.
//! * [`push_fixture_images`] pushes images built with the real `umoci` to a
//!   registry with the real `skopeo`: two images sharing one base layer and a
//!   two-platform OCI image index.
//! * [`skopeo_digest`], [`skopeo_manifest`] and friends check results with a
//!   tool that shares no code with gapbundle; [`http_request`] speaks raw
//!   HTTP/1.1 over std TCP for the same reason.
//!
//! The fixture images use fixed file contents, mtimes and creation times, so
//! with a given umoci version they have the same digests in every run; the
//! tests should still read digests from [`Fixtures`], never hard-code them.
//!
//! Tests must never skip silently: when a tool is missing, or a tool fails,
//! these helpers panic with the tool's stderr and point at
//! `scripts/install-test-deps`, which installs everything on a fresh Debian 12
//! machine (whether or not `GAPBUNDLE_REQUIRE_SERVICES=1`, which `scripts/test`
//! exports, is set).
//!
//! The files, by concern: [`commands`] runs gapbundle and the tools and judges
//! exit codes and output; [`registry`], [`containerd`] and [`nix`] start the
//! real services; [`skopeo`] reads images from the outside; [`fixtures`] makes the
//! images; [`versions`] makes two versions of an image set (for deltas); [`work`] is
//! the work folder every end-to-end test starts from;
//! [`http`] is a raw HTTP client; [`hosts`] gives 127.0.0.1 a name that Helm and Go
//! do not treat as loopback (for TLS and proxies); [`reports`] checks the `--json` reports against
//! their schemas; [`fake_http`] holds the fake servers for the
//! faults a real server cannot produce; [`gate`] holds a real service's answer
//! mid-stream (a kill point in a download); [`faults`] kills a command at a moment
//! chosen by watching it and checks what it left behind; [`encoding`] holds digests and base64 written
//! independently of src/; [`bundles`] reads bundle heads and forges bundles with
//! the library itself.
//!
//! Every module of the `it` binary uses it with `use crate::support::*;`. It
//! compiles only into an integration test, because [`gapbundle_bin`] reads
//! `CARGO_BIN_EXE_gapbundle` and the fixture cache lives under
//! `CARGO_TARGET_TMPDIR`, which cargo sets only for those. Nothing here ever
//! talks to any address other than 127.0.0.1 (which `registry.test` names too).

mod bundles;
mod commands;
mod containerd;
mod encoding;
mod fake_http;
mod faults;
mod fixtures;
mod gate;
mod hosts;
mod http;
mod nix;
mod proxy;
mod registry;
mod reports;
mod skopeo;
mod versions;
mod work;

pub use bundles::*;
pub use commands::*;
pub use containerd::*;
pub use encoding::*;
pub use fake_http::*;
pub use faults::*;
pub use fixtures::*;
pub use gate::*;
pub use hosts::*;
pub use http::*;
pub use nix::*;
pub use proxy::*;
pub use registry::*;
pub use reports::*;
pub use skopeo::*;
pub use versions::*;
pub use work::*;

/// What to tell a developer whose machine lacks a tool.
pub const INSTALL_HINT: &str =
    "run `scripts/install-test-deps` (as root, Debian 12) to install the real services the tests need";

/// OCI media type of an image index.
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// OCI media type of an image manifest.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// How much of a service's log a failure message shows.
const LOG_TAIL_LINES: usize = 40;
