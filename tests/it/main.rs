//! gapbundle's integration tests: one test binary (`it`), one harness (`support`).
//!
//! Why one binary: cargo links every file in `tests/` into a binary of its own,
//! each with its own copy of the harness and of the gapbundle library, and starts
//! them one after the other. One binary with a module per area (as cargo's and
//! uv's test suites are laid out) links once, builds the shared fixture images
//! once per run instead of once per file, runs every test in one pool of threads,
//! and lets the compiler tell which harness helper nobody uses.
//!
//! Run one area or one test by its path:
//! `cargo test --test it -- oci_bundle::` or `cargo test --test it -- services::`.
//!
//! Tests in here share a process: none of them may change process-wide state
//! (environment variables, the current folder); each sets what it needs on the
//! commands it runs.
//!
//! The rules clippy.toml holds for src/ (programs only through io::process, files
//! only through fs-err) are for the program: the tests drive the real tools with
//! `std::process::Command` and make fixtures with `std::fs`, and a failure panics
//! with the command line or the path (see `support::commands`).
#![allow(
    clippy::disallowed_methods,
    reason = "the tests run tools and make fixtures directly; see above"
)]

mod support;

mod architecture;
mod bad_vectors;
mod bundle_source;
mod delta;
mod exit_codes;
mod flake;
mod fleet_push_faults;
mod hostile_format;
mod hostile_import;
mod k3s_import;
mod k8s_render;
mod kill_import;
mod local_inputs;
mod network;
mod never_panics;
mod nix_bundle;
mod nixos;
mod oci_bundle;
mod properties;
mod referrers;
mod registry_client;
mod registry_resolver;
mod reports;
mod sbom;
mod serve;
mod services;
mod site;
mod spec_vectors;
mod token_auth;
mod volumes;
