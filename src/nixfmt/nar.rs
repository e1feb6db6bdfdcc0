//! The NAR (Nix ARchive) framing, for writing: every token is a little-endian u64
//! length, the bytes, and zero padding to a multiple of 8. The file-system walk that
//! uses it is in `resolve::nix`; its output is always checked against the NAR hash
//! Nix recorded. Reading (and refusing) NARs is [`super::nar_check`].

use std::io::{self, Write};

/// The first token of every NAR.
pub const MAGIC: &[u8] = b"nix-archive-1";

/// Zero bytes that follow `len` bytes of data.
pub fn padding(len: u64) -> usize {
    ((8 - (len % 8)) % 8) as usize
}

/// Writes a number token.
pub fn write_u64<W: Write + ?Sized>(w: &mut W, n: u64) -> io::Result<()> {
    w.write_all(&n.to_le_bytes())
}

/// Writes the zero padding after `len` bytes of data.
pub fn write_padding<W: Write + ?Sized>(w: &mut W, len: u64) -> io::Result<()> {
    w.write_all(&[0u8; 8][..padding(len)])
}

/// Writes a string token (length, bytes, padding).
pub fn write_str<W: Write + ?Sized>(w: &mut W, s: &[u8]) -> io::Result<()> {
    write_u64(w, s.len() as u64)?;
    w.write_all(s)?;
    write_padding(w, s.len() as u64)
}

/// Writes several string tokens.
pub fn write_strs<W: Write + ?Sized>(w: &mut W, ss: &[&[u8]]) -> io::Result<()> {
    ss.iter().try_for_each(|s| write_str(w, s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::Digest;
    use crate::nixfmt::NarHash;

    #[test]
    fn nar_of_a_file_matches_nix() {
        // `nix-store --dump` of a file holding "base\n" (the `base` output of the
        // test flake), whose NarHash Nix 2.8 reported as this SRI hash.
        let sri = "sha256-H9iWrazNxp1ESVSXxMQ/1AZsRuXprxoOg7NJPhQ+6vU=";
        let mut v = Vec::new();
        write_str(&mut v, MAGIC).unwrap();
        write_strs(&mut v, &[b"(", b"type", b"regular", b"contents"]).unwrap();
        write_str(&mut v, b"base\n").unwrap();
        write_str(&mut v, b")").unwrap();
        assert_eq!(v.len(), 120);
        assert_eq!(Digest::of(&v), NarHash::parse(sri).unwrap().digest());
    }
}
