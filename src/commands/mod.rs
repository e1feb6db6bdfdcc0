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

pub mod activate;
pub mod against;
pub mod create;
pub mod diff;
pub mod docs;
pub mod import;
pub mod inspect;
pub mod inventory;
pub mod key;
pub mod patch;
pub mod receipts;
pub mod report;
pub mod sbom;
pub mod serve;
pub mod settings;
pub mod verify;
pub mod volumes;

use crate::cli::{Cli, Command, KeyCommand};
use crate::error::{Classify, ErrorClass};

/// Documented exit codes, from [`ErrorClass::exit_code`] (the one table).
pub mod exit {
    use crate::error::ErrorClass;

    /// Success.
    pub const OK: u8 = 0;
    /// Any other failure.
    pub const ERROR: u8 = ErrorClass::Other.exit_code();
    /// Bad command-line usage (clap).
    pub const USAGE: u8 = ErrorClass::Usage.exit_code();
    /// The bundle failed verification: do not use it.
    pub const VERIFY: u8 = ErrorClass::Verify.exit_code();
    /// Bad input: spec, lock or key file, or `--locked` would change the lock.
    pub const INPUT: u8 = ErrorClass::Input.exit_code();
    /// A registry, containerd or a Nix daemon could not be reached or refused access.
    pub const REGISTRY: u8 = ErrorClass::Service.exit_code();
    /// A delta bundle does not fit: the target (or patch's bases) lacks blobs it
    /// leaves out; nothing was written.
    pub const DELTA: u8 = ErrorClass::Delta.exit_code();
    /// Activating the bundle's NixOS system failed; the host went back to the
    /// system it ran before.
    pub const ACTIVATION: u8 = ErrorClass::Activation.exit_code();
    /// Activating the bundle's NixOS system failed, and going back failed too.
    pub const ROLLBACK: u8 = ErrorClass::Rollback.exit_code();
}

/// An error and the exit code it gives.
#[derive(Debug)]
pub struct Failure {
    /// Exit code, from the error's class ([`classify`]).
    pub code: u8,
    /// The error chain.
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let error = e.into();
        Failure {
            code: classify(&error).exit_code(),
            error,
        }
    }
}

/// The class of `error`: that of the outermost error in its chain that names one
/// (an error carried inside an `io::Error` included), else [`ErrorClass::Other`].
pub fn classify(error: &anyhow::Error) -> ErrorClass {
    named_class(error).unwrap_or(ErrorClass::Other)
}

/// The class an error in `error`'s chain names, if any does (an I/O error names
/// [`ErrorClass::Other`]).
pub fn named_class(error: &anyhow::Error) -> Option<ErrorClass> {
    class_in(error.chain())
}

fn class_in<'a>(
    mut chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> Option<ErrorClass> {
    chain.find_map(class_of)
}

/// The class `e` itself names, if it is one of the crate's error types (each says
/// its class in its own module) or an I/O error.
fn class_of(e: &(dyn std::error::Error + 'static)) -> Option<ErrorClass> {
    macro_rules! known {
        ($($t:ty),* $(,)?) => {$(
            if let Some(x) = e.downcast_ref::<$t>() {
                return x.class();
            }
        )*};
    }
    known!(
        crate::error::BundleFailure,
        crate::error::InputFailure,
        crate::error::UsageFailure,
        crate::error::RegistryFailure,
        crate::error::ContainerdFailure,
        crate::error::NixStoreFailure,
        crate::error::DeltaFailure,
        crate::bundle::canonical::CanonicalError,
        crate::bundle::decode::DecodeError,
        crate::bundle::delta::DeltaError,
        crate::bundle::digest::DigestParseError,
        crate::bundle::inventory::InventoryError,
        crate::bundle::keys::KeyError,
        crate::bundle::layout::HeaderError,
        crate::bundle::manifest::ManifestError,
        crate::bundle::reader::ReadError,
        crate::bundle::referrers::ReferrerError,
        crate::bundle::signature::TrustError,
        crate::bundle::volumes::VolumeError,
        crate::bundle::writer::WriteError,
        crate::import::activate::ActivationError,
        crate::io::cas::CasError,
        crate::io::keys::KeyFileError,
        crate::io::process::ProcessError,
        crate::io::root::RootError,
        crate::io::serve::ServeError,
        crate::io::source::SourceError,
        crate::io::volumes::VolumeSetError,
        crate::k8s::K8sError,
        crate::nixfmt::NarError,
        crate::nixfmt::NarReadError,
        crate::nixfmt::NixFormatError,
        crate::nixfmt::PathInfoError,
        crate::nixfmt::serve_proto::ServeProtoError,
        crate::oci::ReferenceError,
        crate::oci::distribution::ManifestError,
        crate::oci::registries::RegistriesError,
        crate::registry::ClientError,
        crate::serve::ViewError,
        crate::spec::SpecError,
        crate::spec::lock::LockError,
    );
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        // An error carried inside (see `error::carried`) decides; `io::Error::source`
        // skips the error it carries, so look at it here. A bare I/O error is the
        // local machine's trouble.
        let inner = io
            .get_ref()
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        let class = match inner {
            Some(i) => match i.downcast_ref::<crate::error::Carried>() {
                Some(c) => class_in(c.0.chain()),
                None => class_in(std::iter::successors(Some(i), |c| c.source())),
            },
            None => None,
        };
        return class.or(Some(ErrorClass::Other));
    }
    None
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
        Command::Activate(a) => activate::run(a, &out),
        Command::List(a) => receipts::list(a, &out),
        Command::Remove(a) => receipts::remove(a, &out),
        Command::Patch(a) => patch::run(a, &out),
        Command::Diff(a) => diff::run(a, &out),
        Command::Sbom(a) => sbom::run(a, &out),
        Command::Key(KeyCommand::Generate(a)) => key::generate(a, &out),
        Command::Key(KeyCommand::Public(a)) => key::public(a, &out),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a, &out),
    }
}

pub use report::print_json;

/// Writes one line to standard output (see `say!`).
pub fn say_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    stdout_result(out.write_fmt(args).and_then(|()| out.write_all(b"\n")));
}

/// Writes `value` as pretty JSON and a newline to standard output as it is
/// formatted, in blocks (stdout alone would write at every newline), a gone reader
/// handled as in `say!`.
pub fn say_pretty(value: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    stdout_result(
        serde_json::to_writer_pretty(&mut out, value)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush()),
    );
}

/// Writes bytes to standard output, a gone reader handled as in `say!`.
pub fn say_bytes(bytes: &[u8]) {
    use std::io::Write;
    stdout_result(std::io::stdout().lock().write_all(bytes));
}

/// Writes what `write` writes to standard output through a buffer, as it comes (a
/// document too large to hold), a gone reader handled as in `say!`.
pub fn say_with(write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>) {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    stdout_result(write(&mut out).and_then(|()| out.flush()));
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
    use crate::bundle::reader::ReadError;
    use crate::error::{
        carried, BundleFailure, ContainerdFailure, NixStoreFailure, RegistryFailure,
    };

    fn consumer(e: std::io::Error) -> anyhow::Error {
        anyhow::Error::new(ReadError::Consumer {
            path: "blobs/sha256/00".into(),
            source: e,
        })
    }

    #[test]
    fn a_registry_failure_inside_a_streaming_target_exits_5() {
        let refused = consumer(carried(
            anyhow::Error::new(RegistryFailure("refused".into())).context("pushing blob 00"),
        ));
        assert_eq!(classify(&refused), ErrorClass::Service);
        let direct = anyhow::Error::new(RegistryFailure("refused".into())).context("pushing");
        assert_eq!(classify(&direct), ErrorClass::Service);
        let containerd = consumer(std::io::Error::other(ContainerdFailure("gone".into())));
        assert_eq!(classify(&containerd), ErrorClass::Service);
        // One list for every place: a Nix store's refusal carried by a target too.
        let nix = consumer(carried(anyhow::Error::new(NixStoreFailure(
            "refused".into(),
        ))));
        assert_eq!(classify(&nix), ErrorClass::Service);
        assert_eq!(
            classify(&anyhow::Error::new(NixStoreFailure("refused".into()))),
            ErrorClass::Service
        );
        // The bundle's content was wrong: verification failed.
        let wrong = consumer(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "decompresses to another NAR hash",
        ));
        assert_eq!(classify(&wrong), ErrorClass::Verify);
        // A hostile name found before any target was touched: as damage.
        let named = anyhow::Error::new(BundleFailure("objects[3]: bad name".into()))
            .context("planning containerd");
        assert_eq!(classify(&named), ErrorClass::Verify);
        // The target's own trouble is not the bundle's fault.
        let full = consumer(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "no space left on device",
        ));
        assert_eq!(classify(&full), ErrorClass::Other);
        let full = consumer(carried(
            anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::StorageFull))
                .context("writing the staged archive"),
        ));
        assert_eq!(classify(&full), ErrorClass::Other);
        // Reading the bundle itself failed: it is damaged (or its disk is).
        let eio = anyhow::Error::new(ReadError::Io(std::io::Error::other("EIO")));
        assert_eq!(classify(&eio), ErrorClass::Verify);
        // A sentence with no class is any other error.
        assert_eq!(classify(&anyhow::anyhow!("no")), ErrorClass::Other);
    }

    #[test]
    fn main_s_delta_and_volume_errors_keep_their_codes() {
        use crate::bundle::volumes::VolumeError;
        use crate::error::DeltaFailure;
        use crate::io::source::SourceError;
        use crate::io::volumes::VolumeSetError;

        // A delta that does not fit exits 6, also when a target found it out.
        let direct = anyhow::Error::new(DeltaFailure("lacks blobs".into())).context("importing");
        assert_eq!(classify(&direct).exit_code(), exit::DELTA);
        let carried_delta = consumer(carried(anyhow::Error::new(DeltaFailure("lacks".into()))));
        assert_eq!(classify(&carried_delta), ErrorClass::Delta);
        // Volumes missing or not this bundle's: a damaged bundle, also through the
        // bundle source (whose variant is transparent).
        let incomplete = || VolumeSetError::Incomplete {
            problems: vec!["site.gapb.002 is missing".into()],
            hint: "copy it again".into(),
        };
        assert_eq!(
            classify(&anyhow::Error::new(incomplete())),
            ErrorClass::Verify
        );
        assert_eq!(
            classify(&anyhow::Error::new(SourceError::Volumes(incomplete())).context("opening")),
            ErrorClass::Verify
        );
        // A volume size or parity count out of range is bad input, wherever it is
        // found; a volume's I/O trouble is the machine's.
        let parity = VolumeError::BadParity {
            data: 3,
            parity: 100,
            max_parity: 99,
            max_shards: 256,
        };
        assert_eq!(
            classify(&anyhow::Error::new(VolumeSetError::Format(parity))),
            ErrorClass::Input
        );
        let small = VolumeError::TooSmall {
            volume_size: 10,
            minimum: 4096,
        };
        assert_eq!(classify(&anyhow::Error::new(small)), ErrorClass::Input);
        let io = VolumeSetError::Io {
            path: "site.gapb.001".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        assert_eq!(classify(&anyhow::Error::new(io)), ErrorClass::Other);
    }
}
