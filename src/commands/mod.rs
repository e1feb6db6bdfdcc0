//! One orchestrator per subcommand. Commands glue the pure format, the resolvers and
//! the cache together, decide the exit code, and own everything the user sees on
//! stdout; `progress` owns stderr.

/// `println!` for what the commands print on standard output, except that a reader
/// that went away (`gapbundle inspect … | head`) ends the program quietly with
/// success instead of a panic: nobody is left to tell anything. Defined before the
/// command modules so they all see it.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::commands::say_line(format_args!($($arg)*))
    };
}

pub mod against;
pub mod create;
pub mod diff;
pub mod docs;
pub mod import;
pub mod inspect;
pub mod inventory;
pub mod key;
pub mod patch;
pub mod serve;
pub mod verify;
pub mod volumes;

use crate::bundle::keys::KeyError;
use crate::bundle::reader::ReadError;
use crate::bundle::signature::TrustError;
use crate::cli::{Cli, Command, KeyCommand};
use crate::error::{
    BundleFailure, ContainerdFailure, DeltaFailure, InputFailure, NixStoreFailure, RegistryFailure,
};
use crate::io::source::SourceError;
use crate::io::volumes::VolumeSetError;
use crate::spec::lock::LockError;
use crate::spec::SpecError;

/// Documented exit codes.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other failure.
    pub const ERROR: u8 = 1;
    /// Bad command-line usage (clap).
    pub const USAGE: u8 = 2;
    /// The bundle failed verification: do not use it.
    pub const VERIFY: u8 = 3;
    /// Bad input: spec, lock or key file, or `--locked` would change the lock.
    pub const INPUT: u8 = 4;
    /// A registry, containerd or a Nix daemon could not be reached or refused access.
    pub const REGISTRY: u8 = 5;
    /// A delta bundle does not fit: the target (or patch's bases) lacks blobs it
    /// leaves out; nothing was written.
    pub const DELTA: u8 = 6;
}

/// An error with the exit code it should produce.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// The error chain.
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error = e.into();
        Failure {
            code: classify(&error),
            error,
        }
    }
}

fn classify(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        // A target that failed while the bundle streamed (a registry refusing a
        // blob): its own marker decides, not the reader that carried the error.
        // `io::Error::source` skips the error it wraps, so look inside it here.
        // A target's own trouble (a full disk, a crashed service) is not a bundle
        // that failed verification: only a target that found the bundle's content
        // wrong (InvalidData) says so.
        if let Some(ReadError::Consumer { source, .. }) = cause.downcast_ref::<ReadError>() {
            return match source.get_ref() {
                Some(i) if i.is::<RegistryFailure>() || i.is::<ContainerdFailure>() => {
                    exit::REGISTRY
                }
                Some(i) if i.is::<InputFailure>() => exit::INPUT,
                Some(i) if i.is::<BundleFailure>() => exit::VERIFY,
                _ if source.kind() == std::io::ErrorKind::InvalidData => exit::VERIFY,
                _ => exit::ERROR,
            };
        }
        if cause.is::<DeltaFailure>() {
            return exit::DELTA;
        }
        if cause.is::<ReadError>() || cause.is::<TrustError>() || cause.is::<BundleFailure>() {
            return exit::VERIFY;
        }
        // Volumes missing or cut short: the bundle is incomplete.
        if let Some(e) = cause.downcast_ref::<VolumeSetError>() {
            if e.is_incomplete() {
                return exit::VERIFY;
            }
        }
        if let Some(SourceError::Volumes(e)) = cause.downcast_ref::<SourceError>() {
            if e.is_incomplete() {
                return exit::VERIFY;
            }
        }
        if cause.is::<SpecError>()
            || cause.is::<LockError>()
            || cause.is::<KeyError>()
            || cause.is::<InputFailure>()
        {
            return exit::INPUT;
        }
        if cause.is::<RegistryFailure>()
            || cause.is::<ContainerdFailure>()
            || cause.is::<NixStoreFailure>()
        {
            return exit::REGISTRY;
        }
    }
    exit::ERROR
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    let out = cli.output;
    match cli.command {
        Command::Create(a) => create::run(a, &out),
        Command::Verify(a) => verify::run(a, &out),
        Command::Inspect(a) => inspect::run(a, &out),
        Command::Split(a) => volumes::split(a, &out),
        Command::Join(a) => volumes::join(a, &out),
        Command::Import(a) => import::run(a, &out),
        Command::Serve(a) => serve::run(a, &out),
        Command::Inventory(a) => inventory::run(a, &out),
        Command::Patch(a) => patch::run(a, &out),
        Command::Diff(a) => diff::run(a, &out),
        Command::Key(KeyCommand::Generate(a)) => key::generate(a, &out),
        Command::Key(KeyCommand::Public(a)) => key::public(a, &out),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a, &out),
    }
}

/// Prints a JSON value on stdout.
pub fn print_json(v: &serde_json::Value) {
    say!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialize")
    );
}

/// Writes one line to standard output (see `say!`).
pub fn say_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    stdout_result(out.write_fmt(args).and_then(|()| out.write_all(b"\n")));
}

/// Writes bytes to standard output, a gone reader handled as in `say!`.
pub fn say_bytes(bytes: &[u8]) {
    use std::io::Write;
    stdout_result(std::io::stdout().lock().write_all(bytes));
}

fn stdout_result(r: std::io::Result<()>) {
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(exit::OK));
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(i32::from(exit::ERROR));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registry_failure_inside_a_streaming_target_exits_5() {
        let consumer = |e: std::io::Error| {
            anyhow::Error::new(ReadError::Consumer {
                path: "blobs/sha256/00".into(),
                source: e,
            })
        };
        let refused = consumer(std::io::Error::other(RegistryFailure("refused".into())));
        assert_eq!(classify(&refused), exit::REGISTRY);
        let direct = anyhow::Error::new(RegistryFailure("refused".into())).context("pushing");
        assert_eq!(classify(&direct), exit::REGISTRY);
        let containerd = consumer(std::io::Error::other(ContainerdFailure("gone".into())));
        assert_eq!(classify(&containerd), exit::REGISTRY);
        // The bundle's content was wrong: verification failed.
        let wrong = consumer(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "decompresses to another NAR hash",
        ));
        assert_eq!(classify(&wrong), exit::VERIFY);
        // A hostile name found before any target was touched: as damage.
        let named = anyhow::Error::new(BundleFailure("objects[3]: bad name".into()))
            .context("planning containerd");
        assert_eq!(classify(&named), exit::VERIFY);
        // The target's own trouble is not the bundle's fault.
        let full = consumer(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "no space left on device",
        ));
        assert_eq!(classify(&full), exit::ERROR);
    }
}
