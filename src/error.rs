//! What kind of failure an error is, and so which exit code it gives.
//!
//! Scripts act on the exit code (a damaged bundle is thrown away, a registry that
//! was down is tried again later), so one failure must always give one code. The
//! decision has three parts, each in one place:
//!
//! - [`ErrorClass`] and its [`ErrorClass::exit_code`], the one table from a class to
//!   the documented code;
//! - the [`Classify`] trait: every error type of every module says its class in its
//!   own `impl Classify` (or that its cause decides), and the markers below say
//!   theirs; a test holds that every error type has one;
//! - `commands::classify`, the one function from an error chain to a class: the
//!   outermost error in the chain that names a class decides.
//!
//! Resolvers and importers know whether a failure is the user's input or a
//! service's answer; the command layer only maps. Keeping the classes here, below
//! everything, means no lower layer has to reach up into `commands` for them. A
//! target that reports through an `io::Error` (the bundle reader's sinks) wraps the
//! whole error with [`carried`], which keeps its class and its chain.

use std::io;

/// What kind of failure an error is. The variants are the documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Anything else: the local machine's trouble (a full disk, a permission), a
    /// tool that failed, a bug.
    Other,
    /// The command line is wrong (clap's errors, flags that exclude each other).
    Usage,
    /// The bundle failed verification: a bad or missing signature, a damaged or
    /// truncated file, content that breaks the format. Do not use it.
    Verify,
    /// Bad input: a spec, lock or key file, a flag's value, `--locked` that would
    /// change the lock, a chart or overlay that cannot be rendered.
    Input,
    /// A service (a registry, a chart repository, containerd, a Nix daemon) could
    /// not be reached, refused access, or lacks what was asked for.
    Service,
    /// A delta bundle does not fit: the target (or `patch`'s bases) lacks blobs it
    /// leaves out; nothing was written. Unlike [`ErrorClass::Service`], retrying
    /// does not help: import the base first, or patch the delta into a full bundle.
    Delta,
    /// Activating the NixOS system a bundle carries failed, and the host went back
    /// to the system it ran before (format.md 14.8): the import
    /// itself is in place; the new system is not running.
    Activation,
    /// Activating the NixOS system failed and going back failed too (or there was
    /// no generation to go back to): the host may run parts of both; a person must
    /// look.
    Rollback,
}

impl ErrorClass {
    /// The exit code of this class: the one table.
    pub const fn exit_code(self) -> u8 {
        match self {
            ErrorClass::Other => 1,
            ErrorClass::Usage => 2,
            ErrorClass::Verify => 3,
            ErrorClass::Input => 4,
            ErrorClass::Service => 5,
            ErrorClass::Delta => 6,
            ErrorClass::Activation => 7,
            ErrorClass::Rollback => 8,
        }
    }
}

/// An error type that knows its class.
pub trait Classify {
    /// This error's class; `None` when its cause decides (the next error in the
    /// chain), as for a wrapper around an I/O error.
    fn class(&self) -> Option<ErrorClass>;
}

/// `err` as an `io::Error` for an interface that returns one (a bundle reader's
/// sink), keeping the whole error inside it ([`Carried`]): its class still decides
/// the exit code and every cause is still printed.
pub fn carried(err: anyhow::Error) -> io::Error {
    io::Error::other(Carried(err))
}

/// A whole error chain inside an `io::Error` (see [`carried`]). anyhow's own
/// conversion to a boxed error hides the outermost error from downcasting, and
/// with it a marker that is not wrapped in context; this keeps it reachable.
#[derive(Debug)]
pub struct Carried(pub anyhow::Error);

impl std::fmt::Display for Carried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Carried {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.chain().nth(1)
    }
}

/// Markers: an error that is nothing but a sentence and its class.
macro_rules! markers {
    ($($(#[$doc:meta])* $name:ident => $class:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, thiserror::Error)]
        #[error("{0}")]
        pub struct $name(pub String);

        impl Classify for $name {
            fn class(&self) -> Option<ErrorClass> {
                Some(ErrorClass::$class)
            }
        }
    )*};
}

markers! {
    /// A bundle whose signature and digests check out but whose content breaks the
    /// format, found before a target is touched (an image name that is not a
    /// reference, or pins another image's digest; a Nix path whose signature or NAR
    /// is not what it claims): verification failed, as for any damaged bundle.
    BundleFailure => Verify;
    /// Bad input: a spec, lock or key file, a flag combination, `--locked`.
    InputFailure => Input;
    /// The command line asks for what cannot be done, found once its values are
    /// known (`create -o -` with `--json`, `--volume-size` or a terminal on stdout),
    /// as clap's own errors are for its syntax.
    UsageFailure => Usage;
    /// A registry could not be reached, refused access, lacks the reference or
    /// serves wrong data.
    RegistryFailure => Service;
    /// containerd could not be reached or refused access (as for a registry: the
    /// service an import writes to is not there for it).
    ContainerdFailure => Service;
    /// A Nix store (a daemon's, for a user it does not trust) refused paths whose
    /// signatures we checked, because it does not trust the key (as for a registry
    /// or containerd that refuses access).
    NixStoreFailure => Service;
    /// A delta bundle that does not fit where it goes: the target lacks blobs the
    /// delta leaves out, or must hold every blob itself (a staged archive), or
    /// `patch` was given bases that lack them. Nothing was written; what helps is
    /// importing the base first, or `gapbundle patch` into the full bundle, never a
    /// retry, which is why it is not a target that refused (a service's class).
    DeltaFailure => Delta;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_codes() {
        let codes: Vec<u8> = [
            ErrorClass::Other,
            ErrorClass::Usage,
            ErrorClass::Verify,
            ErrorClass::Input,
            ErrorClass::Service,
            ErrorClass::Delta,
            ErrorClass::Activation,
            ErrorClass::Rollback,
        ]
        .iter()
        .map(|c| c.exit_code())
        .collect();
        assert_eq!(codes, [1, 2, 3, 4, 5, 6, 7, 8]);
    }
}
