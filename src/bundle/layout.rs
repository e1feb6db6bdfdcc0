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
/// Most zero bytes a reader accepts after the end-of-archive marker (format.md
/// section 3): enough for what re-blocking tools (tar's 10 KiB records) and `dd
/// bs=4M conv=sync` append, and a bound for a reader of a pipe, which must not read
/// zeros forever.
pub const MAX_TRAILING_ZEROS: u64 = 4 << 20;

/// `size` rounded up to whole 512-byte blocks, or `None` if that overflows.
pub fn checked_padded(size: u64) -> Option<u64> {
    size.checked_next_multiple_of(512)
}

/// Length of a whole entry (header, data and padding), or `None` on overflow.
pub fn checked_entry_len(size: u64) -> Option<u64> {
    checked_padded(size)?.checked_add(HEADER_LEN)
}

/// `size` rounded up to whole 512-byte blocks. For sizes a validated manifest or
/// the writer gives (the manifest validation bounds them with
/// [`checked_padded`]); saturates instead of overflowing for anything else.
pub fn padded(size: u64) -> u64 {
    checked_padded(size).unwrap_or(u64::MAX)
}

/// Length of a whole entry: header, data and padding (see [`padded`]).
pub fn entry_len(size: u64) -> u64 {
    checked_entry_len(size).unwrap_or(u64::MAX)
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
    // `set_path` normalises (`a//b` becomes `a/b`); a header must carry the path
    // it is asked for, byte for byte, or a reader comparing headers disagrees.
    if !path.is_ascii() || h.path_bytes().as_ref() != path.as_bytes() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "tar path `{}` is not a plain ASCII path in normal form",
                path.escape_default()
            ),
        ));
    }
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
    /// A field differs from the one header format.md section 3 allows.
    #[error("tar header of `{path}` has {field} `{found}` where a bundle's header has {expected} (a tar tool would read it otherwise than gapbundle does)")]
    Field {
        /// The entry's path (as the name field gives it).
        path: String,
        /// The header field that differs (`prefix`, `mode`, `uid`, …).
        field: &'static str,
        /// What it holds (escaped).
        found: String,
        /// What a bundle's header holds there (quoted, or `zeros`).
        expected: String,
    },
}

impl crate::error::Classify for HeaderError {
    /// Carried by a [`crate::bundle::reader::ReadError`], which decides.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        None
    }
}

/// The fields of a GNU tar header, as (name, start, end). Bytes 345..500 are the
/// POSIX `prefix`, which POSIX readers (Python's, Go's) prepend to the name, and
/// GNU's atime, ctime and sparse map; bundles leave them zero.
const FIELDS: [(&str, usize, usize); 17] = [
    ("name", 0, 100),
    ("mode", 100, 108),
    ("uid", 108, 116),
    ("gid", 116, 124),
    ("size", 124, 136),
    ("mtime", 136, 148),
    ("typeflag", 156, 157),
    ("linkname", 157, 257),
    ("magic", 257, 263),
    ("version", 263, 265),
    ("uname", 265, 297),
    ("gname", 297, 329),
    ("devmajor", 329, 337),
    ("devminor", 337, 345),
    ("prefix", 345, 500),
    ("padding", 500, 512),
    // Last: it follows from the others, so a change elsewhere is named first.
    ("chksum", 148, 156),
];

/// Checks that `block` is byte for byte the header the writer makes for (`path`,
/// `size`, `mtime`); the first field that differs is named. This is the rule of
/// format.md section 3: every tar reader then sees the same entry gapbundle sees.
pub fn check_exact(
    block: &[u8; 512],
    path: &str,
    size: u64,
    mtime: u64,
) -> Result<(), HeaderError> {
    let expected = header(path, size, mtime).map_err(|_| HeaderError::Unreadable)?;
    if *block == expected {
        return Ok(());
    }
    let show = |bytes: &[u8]| -> String {
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        bytes[..end]
            .iter()
            .take(100)
            .flat_map(|&b| std::ascii::escape_default(b))
            .map(char::from)
            .collect()
    };
    let (field, start, end) = FIELDS
        .iter()
        .copied()
        .find(|&(_, a, b)| block[a..b] != expected[a..b])
        .unwrap_or(("header", 0, 512));
    Err(HeaderError::Field {
        path: show(&block[..100]),
        field,
        found: show(&block[start..end]),
        expected: match show(&expected[start..end]) {
            e if e.is_empty() => "zeros".into(),
            e => format!("`{e}`"),
        },
    })
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

    // Issue 11 item 2: a header with a `prefix` (or an owner, a mode, a link name…)
    // passed, and POSIX tar readers extracted the entry somewhere else.
    #[test]
    fn every_field_of_a_header_is_checked() {
        let good = header("blobs/sha256/00", 5, 7).unwrap();
        check_exact(&good, "blobs/sha256/00", 5, 7).unwrap();
        let with = |at: usize, bytes: &[u8]| {
            let mut h = good;
            h[at..at + bytes.len()].copy_from_slice(bytes);
            let mut t = tar::Header::from_byte_slice(&h).clone();
            t.set_cksum();
            *t.as_bytes()
        };
        for (h, field) in [
            (with(345, b"../../etc"), "prefix"),
            (with(100, b"0004755\0"), "mode"),
            (with(108, b"0001750\0"), "uid"),
            (with(116, b"0001750\0"), "gid"),
            (with(136, b"00000000001\0"), "mtime"),
            (with(157, b"/etc/passwd"), "linkname"),
            (with(265, b"root"), "uname"),
            (with(297, b"root"), "gname"),
            (with(329, b"0000001\0"), "devmajor"),
            (with(337, b"0000001\0"), "devminor"),
            (with(257, b"ustar\x0000"), "magic"),
            (with(500, b"x"), "padding"),
        ] {
            match check_exact(&h, "blobs/sha256/00", 5, 7) {
                Err(HeaderError::Field { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let e = check_exact(&with(345, b"../../etc"), "blobs/sha256/00", 5, 7)
            .unwrap_err()
            .to_string();
        assert!(e.contains("prefix `../../etc`"), "{e}");
        // Another path, size or mtime is another header.
        assert!(check_exact(&good, "blobs/sha256/01", 5, 7).is_err());
        assert!(check_exact(&good, "blobs/sha256/00", 6, 7).is_err());
        assert!(check_exact(&good, "blobs/sha256/00", 5, 8).is_err());
    }

    #[test]
    fn checked_arithmetic_never_overflows() {
        assert_eq!(checked_padded(u64::MAX), None);
        assert_eq!(checked_entry_len(u64::MAX - 600), None);
        assert_eq!(padded(u64::MAX), u64::MAX);
        assert_eq!(checked_entry_len(1), Some(1024));
    }

    #[test]
    fn padding_math() {
        assert_eq!(padded(0), 0);
        assert_eq!(padded(1), 512);
        assert_eq!(padded(512), 512);
        assert_eq!(entry_len(513), 512 + 1024);
    }
}
