//! Free space, asked before an import writes anything.
//!
//! A field import that stops with "No space left on device" after reading most of a
//! bundle from a slow USB disk has cost the operator that time and left staging files
//! behind. The sizes are all in the manifest, so the importer can say before the
//! first byte whether the bundle fits, and where to make room.

use std::io;
use std::path::{Path, PathBuf};

/// Bytes an unprivileged writer can still put on the file system holding `path`
/// (or its nearest existing ancestor, for a folder not created yet).
pub fn available(path: &Path) -> io::Result<u64> {
    let existing = nearest_existing(path);
    let st = rustix::fs::statvfs(&existing).map_err(io::Error::from)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

fn nearest_existing(path: &Path) -> PathBuf {
    let mut p = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    while !p.exists() {
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
    p
}

/// Fails when the file system of `path` has less than `needed` bytes free, with a
/// message naming `what`, both sizes and `fix`.
pub fn ensure(path: &Path, needed: u64, what: &str, fix: &str) -> anyhow::Result<()> {
    let free = available(path)?;
    if free < needed {
        anyhow::bail!(
            "{what} ({}) has {} free, but this import needs {} there; {fix}",
            nearest_existing(path).display(),
            crate::progress::human_bytes(free),
            crate::progress::human_bytes(needed),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_not_made_yet_is_asked_through_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(&dir.path().join("not/yet/there")).unwrap();
        // The same filesystem's figure; other writers on a shared disk may move it
        // between the two calls, so not to the byte.
        let there = available(dir.path()).unwrap();
        assert!(free.abs_diff(there) < 1 << 30, "{free} vs {there}");
        assert!(ensure(dir.path(), 0, "x", "y").is_ok());
        let e = ensure(dir.path(), u64::MAX, "the staging folder", "make room")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the staging folder (") && e.ends_with("; make room"),
            "{e}"
        );
    }
}
