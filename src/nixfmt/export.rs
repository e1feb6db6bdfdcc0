//! The stream `nix-store --export` writes and `nix-store --import` reads, for
//! writing: per path, the number 1, the path's NAR, then a trailer (a magic number,
//! the path, its references, its deriver, and a 0 where an old Nix put a signature);
//! the number 0 ends the stream. Numbers are 64-bit little-endian and strings are a
//! length and bytes padded to 8, as in the NAR itself ([`super::nar`]).
//!
//! Why the importer writes it: `nix-store --import` adds a path for a few hundred
//! microseconds, where `nix copy` from a binary cache spends several milliseconds
//! per path (a narinfo request, a NAR request, a row in its narinfo cache, a
//! substitution goal), which is most of an import of a closure of many small paths.
//! `nix-store --import` reads each whole NAR into memory, so it is only handed
//! small ones. It adds a path only once it read the path's trailer, so a writer
//! that holds back the trailer until the NAR checked out never gets a wrong NAR
//! registered (or restored: Nix restores it only then, too).

use std::io::{self, Write};

use super::nar::{write_str, write_u64};
use super::StorePath;

/// The magic number before each trailer (`NIXE`).
const EXPORT_MAGIC: u64 = 0x4558_494e;

/// What comes before each path's NAR.
pub fn write_path_start<W: Write + ?Sized>(w: &mut W) -> io::Result<()> {
    write_u64(w, 1)
}

/// What comes after a path's NAR: its name, references and deriver.
pub fn write_path_trailer<W: Write + ?Sized>(
    w: &mut W,
    path: &StorePath,
    references: &[StorePath],
    deriver: Option<&StorePath>,
) -> io::Result<()> {
    write_u64(w, EXPORT_MAGIC)?;
    write_str(w, path.as_str().as_bytes())?;
    write_u64(w, references.len() as u64)?;
    for r in references {
        write_str(w, r.as_str().as_bytes())?;
    }
    write_str(w, deriver.map_or("", |d| d.as_str()).as_bytes())?;
    // No signature (Nix ignores this one anyway; it reads signatures from nowhere
    // in this format).
    write_u64(w, 0)
}

/// The end of the stream.
pub fn write_end<W: Write + ?Sized>(w: &mut W) -> io::Result<()> {
    write_u64(w, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes `nix-store --export` (Nix 2.8) wrote for a path holding one file
    /// with `leaf 381\n`, with one reference and a deriver.
    #[test]
    fn matches_what_nix_store_export_writes() {
        let path = StorePath::parse("/nix/store/0031j8yfy1n9z5sd85hdj58vz6a6v5bg-scale-leaf-00381")
            .unwrap();
        let drv =
            StorePath::parse("/nix/store/xkr186i0vmly8fzxhv7bgskskwrv2nlb-scale-leaf-00381.drv")
                .unwrap();
        let mut out = Vec::new();
        write_path_start(&mut out).unwrap();
        write_path_trailer(&mut out, &path, &[], Some(&drv)).unwrap();
        write_end(&mut out).unwrap();
        let mut want = vec![1, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"NIXE\0\0\0\0");
        want.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(path.as_str().as_bytes());
        want.extend_from_slice(&[0; 4]); // padding to 64
        want.extend_from_slice(&[0; 8]); // no references
        want.extend_from_slice(&[64, 0, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(drv.as_str().as_bytes());
        want.extend_from_slice(&[0; 8]); // no signature
        want.extend_from_slice(&[0; 8]); // the end
        assert_eq!(out, want);

        let mut refs = Vec::new();
        write_path_trailer(&mut refs, &path, std::slice::from_ref(&drv), None).unwrap();
        assert_eq!(&refs[80..88], &[1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&refs[88..96], &[64, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&refs[160..176], &[0; 16]); // empty deriver, no signature
        assert_eq!(refs.len(), 176);
    }
}
