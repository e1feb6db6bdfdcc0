//! One orchestrator per subcommand. Commands glue the pure format, the resolvers and
//! the cache together, decide the exit code, and own everything the user sees on
//! stdout; `progress` owns stderr.

pub mod create;
pub mod docs;
pub mod import;
pub mod inspect;
pub mod key;
pub mod verify;

use std::path::Path;

use anyhow::Context;
use fs_err as fs;

use crate::bundle::keys::{KeyError, PublicKey, SecretKey};
use crate::bundle::reader::ReadError;
use crate::bundle::signature::TrustError;
use crate::cli::{Cli, Command, KeyCommand};
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
    /// A registry could not be reached or refused access.
    pub const REGISTRY: u8 = 5;
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

/// Marks an error as a registry failure (exit code 5).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RegistryFailure(pub String);

/// Marks an error as bad input (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputFailure(pub String);

fn classify(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<ReadError>() || cause.is::<TrustError>() {
            return exit::VERIFY;
        }
        if cause.is::<SpecError>()
            || cause.is::<LockError>()
            || cause.is::<KeyError>()
            || cause.is::<InputFailure>()
        {
            return exit::INPUT;
        }
        if cause.is::<RegistryFailure>() {
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
        Command::Import(a) => import::run(a, &out),
        Command::Key(KeyCommand::Generate(a)) => key::generate(a, &out),
        Command::Key(KeyCommand::Public(a)) => key::public(a, &out),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a, &out),
    }
}

/// Reads a secret key file.
pub fn load_secret_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text = fs::read_to_string(path)?;
    SecretKey::parse(&text)
        .with_context(|| format!("{} is not a usable secret key", path.display()))
}

/// Reads trusted public keys from files or directories. A file may hold several keys,
/// one per line (`#` starts a comment), so a `trusted-public-keys` list pasted from
/// nix.conf one per line works too. In a directory every regular file is read.
pub fn load_public_keys(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<PublicKey>> {
    let mut keys = Vec::new();
    for p in paths {
        let meta = fs::metadata(p)?;
        let files: Vec<std::path::PathBuf> = if meta.is_dir() {
            let mut v: Vec<_> = fs::read_dir(p)?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect();
            v.sort();
            v
        } else {
            vec![p.clone()]
        };
        for f in files {
            let text = fs::read_to_string(&f)?;
            for (i, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                for word in line.split_whitespace() {
                    let k = PublicKey::parse(word)
                        .with_context(|| format!("{}:{}: not a public key", f.display(), i + 1))?;
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
        }
    }
    Ok(keys)
}

/// Prints a JSON value on stdout.
pub fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("JSON values serialize")
    );
}

/// `1970-01-01T00:00:00Z` for a Unix time (no time-zone database needed).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
