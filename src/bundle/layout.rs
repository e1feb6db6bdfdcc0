//! The tar framing of a bundle.
//!
//! A bundle is a plain tar so that `tar x` and every OCI tool can read it, but we
//! write a strict subset: one 512-byte GNU header per regular file, no directory,
//! link or extension entries, mode 0644, uid/gid 0, and a fixed mtime. Because every
//! header has the same length, the position of every entry follows from the sizes
//! before it, which is what lets the manifest carry offsets and a reader jump to any
//! blob. The reader is equally strict: anything outside that subset is refused rather
//! than interpreted, so nothing can hide in a bundle that `tar x` would extract.

use std::io::{self, Read, Write};

/// Length of one tar header block.
pub const HEADER_LEN: u64 = 512;
/// Length of the end-of-archive marker (two zero blocks).
pub const END_LEN: u64 = 1024;

/// `size` rounded up to whole 512-byte blocks.
pub fn padded(size: u64) -> u64 {
    size.div_ceil(512) * 512
}

/// Length of a whole entry: header, data and padding.
pub fn entry_len(size: u64) -> u64 {
    HEADER_LEN + padded(size)
}

/// The header for one regular file.
pub fn header(path: &str, size: u64, mtime: u64) -> io::Result<[u8; 512]> {
    if path.len() > 100 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tar path `{path}` is longer than 100 bytes"),
        ));
    }
    let mut h = tar::Header::new_gnu();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(*h.as_bytes())
}

/// Writes one entry's header, then `data`, then padding; returns bytes written.
pub fn write_entry<W: Write, R: Read>(
    out: &mut W,
    path: &str,
    size: u64,
    mtime: u64,
    data: &mut R,
) -> io::Result<u64> {
    out.write_all(&header(path, size, mtime)?)?;
    let copied = io::copy(&mut data.take(size), out)?;
    if copied != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{path}: source gave {copied} bytes, expected {size}"),
        ));
    }
    write_padding(out, size)?;
    Ok(entry_len(size))
}

/// Writes the zero padding after `size` bytes of data.
pub fn write_padding<W: Write>(out: &mut W, size: u64) -> io::Result<()> {
    let pad = (padded(size) - size) as usize;
    out.write_all(&[0u8; 512][..pad])
}

/// A header as the strict reader understands it.
#[derive(Debug, PartialEq, Eq)]
pub enum Block {
    /// A regular file entry.
    File {
        /// Its path.
        path: String,
        /// Its data length.
        size: u64,
    },
    /// A zero block: the end-of-archive marker begins.
    End,
}

/// Why a header block is refused.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Checksum mismatch: the header was damaged.
    #[error("tar header checksum does not match (the file is damaged)")]
    Checksum,
    /// Not a regular file.
    #[error("tar entry `{path}` has type {kind:?}; bundles hold regular files only")]
    NotRegular {
        /// The entry's path.
        path: String,
        /// Its type flag.
        kind: char,
    },
    /// Path not UTF-8 or otherwise unreadable.
    #[error("tar header has an unreadable path or size")]
    Unreadable,
}

/// Parses one header block.
pub fn parse_header(block: &[u8; 512]) -> Result<Block, HeaderError> {
    if block.iter().all(|&b| b == 0) {
        return Ok(Block::End);
    }
    let h = tar::Header::from_byte_slice(block);
    let stored = h.cksum().map_err(|_| HeaderError::Checksum)?;
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    if stored != computed {
        return Err(HeaderError::Checksum);
    }
    let path = h
        .path_bytes()
        .iter()
        .map(|&b| b as char)
        .collect::<String>();
    if !path.is_ascii() || path.is_empty() {
        return Err(HeaderError::Unreadable);
    }
    let kind = h.entry_type();
    if !kind.is_file() {
        return Err(HeaderError::NotRegular {
            path,
            kind: kind.as_byte() as char,
        });
    }
    let size = h.entry_size().map_err(|_| HeaderError::Unreadable)?;
    Ok(Block::File { path, size })
}

/// Reads exactly one 512-byte block.
pub fn read_block<R: Read>(r: &mut R) -> io::Result<[u8; 512]> {
    let mut block = [0u8; 512];
    r.read_exact(&mut block)?;
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_is_fixed_size() {
        let h = header("blobs/sha256/00", 12345, 0).unwrap();
        assert_eq!(
            parse_header(&h).unwrap(),
            Block::File {
                path: "blobs/sha256/00".into(),
                size: 12345
            }
        );
    }

    #[test]
    fn large_sizes_use_base256_and_still_parse() {
        let big = 20 * (1u64 << 30);
        let h = header("x", big, 0).unwrap();
        assert_eq!(
            parse_header(&h).unwrap(),
            Block::File {
                path: "x".into(),
                size: big
            }
        );
    }

    #[test]
    fn damaged_header_is_refused() {
        let mut h = header("x", 1, 0).unwrap();
        h[0] = b'y';
        assert!(matches!(parse_header(&h), Err(HeaderError::Checksum)));
    }

    #[test]
    fn padding_math() {
        assert_eq!(padded(0), 0);
        assert_eq!(padded(1), 512);
        assert_eq!(padded(512), 512);
        assert_eq!(entry_len(513), 512 + 1024);
    }
}
