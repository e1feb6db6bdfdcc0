//! `gapbundle key`: keys in Nix's format, so one key can sign bundles and Nix paths.

use std::io::Write;

use fs_err as fs;

use super::report::{KeyGenerateReport, KeyPublicReport};
use super::{print_json, Failure};
use crate::bundle::keys::SecretKey;
use crate::cli::{KeyGenerateArgs, KeyPublicArgs, OutputArgs};
use crate::error::InputFailure;
use crate::io::keys::load_secret_key;

/// Writes NAME.sec (0600, created exclusively) and NAME.pub.
pub fn generate(a: KeyGenerateArgs, out: &OutputArgs) -> Result<(), Failure> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    let key = SecretKey::from_seed(&a.name, seed)?;
    fs::create_dir_all(&a.dir)?;
    let sec = a.dir.join(format!("{}.sec", a.name));
    let public = a.dir.join(format!("{}.pub", a.name));
    for p in [&sec, &public] {
        if p.exists() {
            return Err(InputFailure(format!(
                "{} already exists; move it away or choose another --name",
                p.display()
            ))
            .into());
        }
    }
    {
        use fs_err::os::unix::fs::OpenOptionsExt;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&sec)?;
        f.write_all(key.to_nix_string().as_bytes())?;
        f.sync_all()?;
    }
    crate::io::atomic::write(&public, key.public().to_string().as_bytes())?;
    if out.json {
        print_json(&KeyGenerateReport {
            name: a.name.clone(),
            secret_key_file: sec,
            public_key_file: public,
            public_key: key.public().to_string(),
        });
    } else if !out.quiet {
        say!("secret key: {} (keep it private)", sec.display());
        say!("public key: {}", public.display());
        say!("{}", key.public());
    }
    Ok(())
}

/// Prints the public half of a secret key.
pub fn public(a: KeyPublicArgs, out: &OutputArgs) -> Result<(), Failure> {
    let key = load_secret_key(&a.secret)?;
    if out.json {
        print_json(&KeyPublicReport {
            name: key.name().to_string(),
            public_key: key.public().to_string(),
        });
    } else {
        say!("{}", key.public());
    }
    Ok(())
}
