//! What `create --against` and `gapbundle diff` read as a base: an inventory file, or
//! a bundle already shipped, of which only the head is read.
//!
//! Whether a base must be signed is decided here. A wrong base cannot make an
//! import go wrong: the import checks, before it writes anything, that the target
//! holds every blob a delta leaves out (format.md section 10.5). What a bad base
//! costs is a delta the site refuses, and a trip across the gap. So signatures are
//! checked when `--trust` keys are given (a site that signs its inventories, and a
//! release team that wants to be sure it is looking at the right site's), and not
//! required otherwise; a signed base whose signature was not checked is said so.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use fs_err as fs;

use super::Failure;
use crate::bundle::delta::Base;
use crate::bundle::inventory::InventoryFile;
use crate::bundle::keys::PublicKey;
use crate::bundle::reader::{read_head, Head};
use crate::error::InputFailure;
use crate::io::keys::load_public_keys;
use crate::io::source::BundleSource;
use crate::progress::Progress;

/// Largest inventory file read (compressed); [`InventoryFile::parse`] bounds what it
/// decompresses to.
const MAX_INVENTORY_FILE: u64 = 256 << 20;

/// The bases given with `--against`, in order; with `trust` keys, each must be
/// signed by one of them.
pub fn load(
    paths: &[PathBuf],
    trust: &[PathBuf],
    progress: &Progress,
) -> Result<Vec<Base>, Failure> {
    let keys = if trust.is_empty() {
        Vec::new()
    } else {
        load_public_keys(trust, |w| progress.warn(w))?
    };
    let mut bases = Vec::new();
    for p in paths {
        let base =
            load_one(p, &keys, progress).with_context(|| format!("--against {}", p.display()))?;
        if bases
            .iter()
            .any(|b: &Base| b.describe.digest == base.describe.digest)
        {
            return Err(InputFailure(format!(
                "--against {} is given twice ({})",
                p.display(),
                base.describe
            ))
            .into());
        }
        bases.push(base);
    }
    Ok(bases)
}

fn load_one(path: &Path, keys: &[PublicKey], progress: &Progress) -> anyhow::Result<Base> {
    let mut start = [0u8; 1];
    let n = fs::File::open(path)?.read(&mut start)?;
    let inventory = n == 1 && (start[0] == 0x28 || start[0] == b'{');
    if !inventory {
        let head = read_bundle_head(path)?;
        if keys.is_empty() {
            if !head.envelope.signatures.is_empty() {
                progress.message(format!(
                    "{}: the signature of this bundle was not checked (pass --trust KEY to check it)",
                    path.display()
                ));
            }
        } else {
            head.envelope.check(&head.digest, keys, 1)?;
        }
        return Ok(Base::from_head(&head));
    }
    let len = fs::metadata(path)?.len();
    if len > MAX_INVENTORY_FILE {
        return Err(InputFailure(format!(
            "{} is {len} bytes, more than the {MAX_INVENTORY_FILE} an inventory may have",
            path.display()
        ))
        .into());
    }
    let f = InventoryFile::parse(&fs::read(path)?)
        .map_err(|e| InputFailure(format!("{}: {e}", path.display())))?;
    if keys.is_empty() {
        if f.is_signed() {
            progress.warn(format!(
                "{}: the inventory is signed, but its signature was not checked (pass --trust SITE-KEY to check it)",
                path.display()
            ));
        }
    } else {
        f.check(keys)?;
    }
    Ok(Base::from_inventory(&f.inventory, f.digest))
}

/// The head of the bundle at `path`, or an error that says the file is neither a
/// bundle nor an inventory.
pub fn read_bundle_head(path: &Path) -> anyhow::Result<Head> {
    let source = BundleSource::open(path)?;
    let head = read_head(&mut source.reader()?)?;
    Ok(head)
}
