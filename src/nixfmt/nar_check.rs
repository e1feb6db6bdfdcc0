//! Reading NARs: a streaming validator that accepts exactly what `nix-store --dump`
//! writes and refuses everything else.
//!
//! A bundle's NARs are hostile until checked. A `file://` cache that advertises a NAR
//! Nix refuses (an entry named `..` or `a/b`, an empty or duplicate name, entries out
//! of order, bytes that are no NAR at all) is a cache every host of a fleet fails on,
//! and a NAR that restores to something other than what was hashed is worse. So the
//! decode check parses every NAR while it hashes it. [`NarChecker`] is a [`Write`]
//! sink: bytes go in as they are decompressed, nothing is buffered but one short
//! token (a name, a symlink target or a keyword; file contents are only counted and
//! hashed), and [`NarChecker::finish`] gives the NAR's sha256 and size, or says at
//! which byte and why the NAR is refused.
//!
//! The grammar is Nix's (`nix-store --dump`, Nix 2.8 `archive.cc`), in its one
//! canonical spelling; every token is a little-endian u64 length, the bytes and zero
//! padding to a multiple of 8:
//!
//! ```text
//! nar       = "nix-archive-1" node
//! node      = "(" "type" ( regular | symlink | directory ) ")"
//! regular   = "regular" [ "executable" "" ] "contents" <data>
//! symlink   = "symlink" "target" <target>
//! directory = "directory" { "entry" "(" "name" <name> "node" node ")" }
//! ```
//!
//! Names are 1 to [`MAX_NAME_LEN`] bytes, not `.` or `..`, without `/` or NUL, in
//! strictly increasing byte order (so no duplicates); targets are 1 to
//! [`MAX_TARGET_LEN`] bytes without NUL; directories nest at most [`MAX_DEPTH`] deep;
//! padding is zero; nothing follows the root node. An optional limit refuses a NAR
//! larger than it says it is as soon as its bytes pass the limit, so a decompression
//! bomb costs no more than the declared size.

use std::io::{self, Read, Write};

use super::nar::{padding, MAGIC};
use super::shown;
use crate::bundle::digest::{Digest, Hasher};

/// Longest entry name accepted (Linux's `NAME_MAX`).
pub const MAX_NAME_LEN: u64 = 255;
/// Longest symlink target accepted (Linux's `PATH_MAX` less its NUL).
pub const MAX_TARGET_LEN: u64 = 4095;
/// Deepest directory nesting accepted. A path that deep already needs more than
/// 2048 bytes, half of `PATH_MAX`, which Nix's own restore must stay under.
pub const MAX_DEPTH: usize = 1024;
/// Longest keyword token (`nix-archive-1`).
const MAX_KEYWORD_LEN: u64 = 13;

/// What the checker learnt about a NAR it accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarSummary {
    /// sha256 of the NAR's bytes (its NAR hash).
    pub digest: Digest,
    /// Its length (its NAR size).
    pub size: u64,
    /// Regular files in it.
    pub regular_files: u64,
    /// Directories in it (the root included, when it is one).
    pub directories: u64,
    /// Symlinks in it.
    pub symlinks: u64,
}

/// Why bytes are not a NAR Nix would restore. Positions are byte offsets in the NAR.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NarError {
    /// The first token is not `nix-archive-1`.
    #[error("not a NAR: it does not start with the `nix-archive-1` token")]
    NotANar,
    /// A token other than the grammar allows there.
    #[error("NAR byte {position}: expected {expected}, found {found}")]
    Unexpected {
        /// Where the token starts.
        position: u64,
        /// What the grammar allows.
        expected: &'static str,
        /// What is there (escaped, shortened).
        found: String,
    },
    /// A token longer than anything the grammar allows there.
    #[error("NAR byte {position}: a {len}-byte {what}, more than the {max} allowed")]
    TooLong {
        /// Where the token starts.
        position: u64,
        /// What the token is.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The most allowed.
        max: u64,
    },
    /// An entry name Nix refuses.
    #[error("NAR byte {position}: invalid entry name `{name}` ({why})")]
    BadName {
        /// Where the name starts.
        position: u64,
        /// The name (escaped).
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Entries not in strictly increasing order (a duplicate included).
    #[error("NAR byte {position}: entry `{name}` follows `{previous}`; entries must be sorted with no duplicates")]
    Unsorted {
        /// Where the name starts.
        position: u64,
        /// The name (escaped).
        name: String,
        /// The entry before it (escaped).
        previous: String,
    },
    /// A symlink target that cannot exist.
    #[error("NAR byte {position}: invalid symlink target ({why})")]
    BadTarget {
        /// Where the target starts.
        position: u64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Padding that is not zeros.
    #[error("NAR byte {position}: non-zero padding")]
    Padding {
        /// Where the padding byte is.
        position: u64,
    },
    /// Directories nested deeper than [`MAX_DEPTH`].
    #[error("NAR byte {position}: directories nested deeper than {max}")]
    TooDeep {
        /// Where the directory starts.
        position: u64,
        /// The limit.
        max: usize,
    },
    /// The bytes end inside the NAR.
    #[error("the NAR ends after {size} bytes, inside its last entry (truncated)")]
    Truncated {
        /// Bytes seen.
        size: u64,
    },
    /// Bytes after the root node's end.
    #[error("NAR byte {position}: bytes follow the end of the NAR")]
    Trailing {
        /// Where they start.
        position: u64,
    },
    /// More bytes than the limit given.
    #[error("the NAR is larger than the {limit} bytes it was declared to have")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
}

impl crate::error::Classify for NarError {
    /// A NAR that Nix would not restore comes from a bundle: verification failed.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        Some(crate::error::ErrorClass::Verify)
    }
}

/// The next token the grammar allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Magic,
    Open,
    Type,
    TypeValue,
    RegularField,
    ExecutableEmpty,
    ContentsKeyword,
    Contents,
    Close,
    TargetKeyword,
    Target,
    DirItem,
    EntryOpen,
    NameKeyword,
    Name,
    NodeKeyword,
    EntryClose,
}

impl Want {
    fn expected(self) -> &'static str {
        match self {
            Want::Magic => "`nix-archive-1`",
            Want::Open | Want::EntryOpen => "`(`",
            Want::Type => "`type`",
            Want::TypeValue => "`regular`, `symlink` or `directory`",
            Want::RegularField => "`executable` or `contents`",
            Want::ExecutableEmpty => "an empty token after `executable`",
            Want::ContentsKeyword => "`contents`",
            Want::Contents => "file contents",
            Want::Close | Want::EntryClose => "`)`",
            Want::TargetKeyword => "`target`",
            Want::Target => "a symlink target",
            Want::DirItem => "`entry` or `)`",
            Want::NameKeyword => "`name`",
            Want::Name => "an entry name",
            Want::NodeKeyword => "`node`",
        }
    }
}

/// Where the byte reader is within a token.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Reading the 8-byte length.
    Len { buf: [u8; 8], have: usize },
    /// Reading the token's bytes.
    Bytes { len: u64, have: u64 },
    /// Reading its padding.
    Pad { left: usize },
    /// The root node ended.
    Done,
}

/// A streaming NAR validator and hasher: write a NAR into it, then
/// [`finish`](NarChecker::finish). See the module documentation for what it refuses.
/// A write that makes the NAR invalid fails with [`io::ErrorKind::InvalidData`]
/// (its inner error is the [`NarError`]), and so does every later write.
pub struct NarChecker {
    want: Want,
    phase: Phase,
    /// Bytes of the current short token.
    token: Vec<u8>,
    token_start: u64,
    /// One entry per open directory: the name of its last entry so far.
    stack: Vec<Vec<u8>>,
    pos: u64,
    limit: Option<u64>,
    hasher: Hasher,
    error: Option<NarError>,
    regular_files: u64,
    directories: u64,
    symlinks: u64,
}

impl Default for NarChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl NarChecker {
    /// A checker with no size limit.
    pub fn new() -> Self {
        NarChecker {
            want: Want::Magic,
            phase: Phase::Len {
                buf: [0; 8],
                have: 0,
            },
            token: Vec::new(),
            token_start: 0,
            stack: Vec::new(),
            pos: 0,
            limit: None,
            hasher: Hasher::new(),
            error: None,
            regular_files: 0,
            directories: 0,
            symlinks: 0,
        }
    }

    /// A checker that refuses more than `limit` bytes (the NAR size a bundle
    /// declares), as soon as they arrive.
    pub fn with_limit(limit: u64) -> Self {
        NarChecker {
            limit: Some(limit),
            ..Self::new()
        }
    }

    /// Bytes accepted so far.
    pub fn size(&self) -> u64 {
        self.pos
    }

    /// The NAR's digest and size, or why it is not a NAR (a truncated one included).
    pub fn finish(self) -> Result<NarSummary, NarError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        if !matches!(self.phase, Phase::Done) {
            return Err(if self.pos == 0 {
                NarError::NotANar
            } else {
                NarError::Truncated { size: self.pos }
            });
        }
        let (digest, size) = self.hasher.finish();
        Ok(NarSummary {
            digest,
            size,
            regular_files: self.regular_files,
            directories: self.directories,
            symlinks: self.symlinks,
        })
    }

    /// Feeds bytes; the first error sticks.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), NarError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.feed_inner(data);
        if let Err(e) = &result {
            self.error = Some(e.clone());
        } else {
            self.hasher.update(data);
        }
        result
    }

    fn feed_inner(&mut self, mut data: &[u8]) -> Result<(), NarError> {
        if let Some(limit) = self.limit {
            if self.pos.saturating_add(data.len() as u64) > limit {
                return Err(NarError::TooLarge { limit });
            }
        }
        while !data.is_empty() {
            match self.phase {
                Phase::Len { mut buf, have } => {
                    let n = (8 - have).min(data.len());
                    buf[have..have + n].copy_from_slice(&data[..n]);
                    self.advance(&mut data, n);
                    if have + n < 8 {
                        self.phase = Phase::Len {
                            buf,
                            have: have + n,
                        };
                    } else {
                        self.start_token(u64::from_le_bytes(buf))?;
                    }
                }
                Phase::Bytes { len, have } => {
                    let n = (len - have).min(data.len() as u64) as usize;
                    if self.want != Want::Contents {
                        self.token.extend_from_slice(&data[..n]);
                    }
                    self.advance(&mut data, n);
                    self.phase = Phase::Bytes {
                        len,
                        have: have + n as u64,
                    };
                    if have + n as u64 == len {
                        self.end_bytes(len)?;
                    }
                }
                Phase::Pad { left } => {
                    let n = left.min(data.len());
                    if let Some(i) = data[..n].iter().position(|&b| b != 0) {
                        return Err(NarError::Padding {
                            position: self.pos + i as u64,
                        });
                    }
                    self.advance(&mut data, n);
                    self.phase = Phase::Pad { left: left - n };
                    if left == n {
                        self.end_token()?;
                    }
                }
                Phase::Done => return Err(NarError::Trailing { position: self.pos }),
            }
        }
        Ok(())
    }

    fn advance(&mut self, data: &mut &[u8], n: usize) {
        *data = &data[n..];
        self.pos += n as u64;
    }

    fn start_token(&mut self, len: u64) -> Result<(), NarError> {
        self.token_start = self.pos - 8;
        self.token.clear();
        let position = self.token_start;
        let (what, max) = match self.want {
            Want::Contents => ("file", u64::MAX),
            Want::Name => ("entry name", MAX_NAME_LEN),
            Want::Target => ("symlink target", MAX_TARGET_LEN),
            Want::Magic if len != MAGIC.len() as u64 => return Err(NarError::NotANar),
            _ => ("token", MAX_KEYWORD_LEN),
        };
        if len > max {
            if max == MAX_KEYWORD_LEN {
                return Err(NarError::Unexpected {
                    position,
                    expected: self.want.expected(),
                    found: format!("a {len}-byte token"),
                });
            }
            return Err(NarError::TooLong {
                position,
                what,
                len,
                max,
            });
        }
        self.phase = Phase::Bytes { len, have: 0 };
        if len == 0 {
            self.end_bytes(0)?;
        }
        Ok(())
    }

    fn end_bytes(&mut self, len: u64) -> Result<(), NarError> {
        let left = padding(len);
        self.phase = Phase::Pad { left };
        if left == 0 {
            self.end_token()?;
        }
        Ok(())
    }

    fn unexpected(&self) -> NarError {
        let found = if self.token.is_empty() {
            "an empty token".to_string()
        } else {
            format!("`{}`", shown(&String::from_utf8_lossy(&self.token)))
        };
        NarError::Unexpected {
            position: self.token_start,
            expected: self.want.expected(),
            found,
        }
    }

    /// The whole token (and its padding) arrived: move the grammar on.
    fn end_token(&mut self) -> Result<(), NarError> {
        self.phase = Phase::Len {
            buf: [0; 8],
            have: 0,
        };
        let t = self.token.as_slice();
        let position = self.token_start;
        self.want = match (self.want, t) {
            (Want::Magic, MAGIC) => Want::Open,
            (Want::Magic, _) => return Err(NarError::NotANar),
            (Want::Open, b"(") => Want::Type,
            (Want::Type, b"type") => Want::TypeValue,
            (Want::TypeValue, b"regular") => {
                self.regular_files += 1;
                Want::RegularField
            }
            (Want::TypeValue, b"symlink") => {
                self.symlinks += 1;
                Want::TargetKeyword
            }
            (Want::TypeValue, b"directory") => {
                if self.stack.len() >= MAX_DEPTH {
                    return Err(NarError::TooDeep {
                        position,
                        max: MAX_DEPTH,
                    });
                }
                self.directories += 1;
                self.stack.push(Vec::new());
                Want::DirItem
            }
            (Want::RegularField, b"executable") => Want::ExecutableEmpty,
            (Want::RegularField, b"contents") => Want::Contents,
            (Want::ExecutableEmpty, b"") => Want::ContentsKeyword,
            (Want::ContentsKeyword, b"contents") => Want::Contents,
            (Want::Contents, _) => Want::Close,
            (Want::TargetKeyword, b"target") => Want::Target,
            (Want::Target, target) => {
                let why = if target.is_empty() {
                    Some("empty")
                } else if target.contains(&0) {
                    Some("it contains a NUL byte")
                } else {
                    None
                };
                if let Some(why) = why {
                    return Err(NarError::BadTarget { position, why });
                }
                Want::Close
            }
            (Want::Close, b")") => return self.node_done(),
            (Want::DirItem, b"entry") => Want::EntryOpen,
            (Want::DirItem, b")") => {
                self.stack.pop();
                return self.node_done();
            }
            (Want::EntryOpen, b"(") => Want::NameKeyword,
            (Want::NameKeyword, b"name") => Want::Name,
            (Want::Name, name) => {
                check_name(name, position)?;
                let previous = self
                    .stack
                    .last_mut()
                    .expect("a name is read in a directory");
                if name <= previous.as_slice() {
                    return Err(NarError::Unsorted {
                        position,
                        name: shown(&String::from_utf8_lossy(name)),
                        previous: shown(&String::from_utf8_lossy(previous)),
                    });
                }
                previous.clear();
                previous.extend_from_slice(name);
                Want::NodeKeyword
            }
            (Want::NodeKeyword, b"node") => Want::Open,
            (Want::EntryClose, b")") => Want::DirItem,
            _ => return Err(self.unexpected()),
        };
        Ok(())
    }

    /// A node ended: the NAR, or the entry holding it, ends next.
    fn node_done(&mut self) -> Result<(), NarError> {
        if self.stack.is_empty() {
            self.phase = Phase::Done;
        } else {
            self.want = Want::EntryClose;
        }
        Ok(())
    }
}

fn check_name(name: &[u8], position: u64) -> Result<(), NarError> {
    let why = if name.is_empty() {
        "empty"
    } else if name == b"." || name == b".." {
        "`.` and `..` are not entries"
    } else if name.contains(&b'/') {
        "it contains `/`"
    } else if name.contains(&0) {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(NarError::BadName {
        position,
        name: shown(&String::from_utf8_lossy(name)),
        why,
    })
}

impl Write for NarChecker {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.feed(buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Why [`check_nar`] refused a reader's bytes.
#[derive(Debug, thiserror::Error)]
pub enum NarReadError {
    /// The bytes are not a valid NAR.
    #[error(transparent)]
    Nar(#[from] NarError),
    /// Reading them failed (a zstd decoder's error included).
    #[error("reading the NAR: {0}")]
    Io(#[from] io::Error),
}

impl crate::error::Classify for NarReadError {
    /// As [`NarError`] for bad bytes; reading them is the cause's business.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        match self {
            NarReadError::Nar(e) => crate::error::Classify::class(e),
            NarReadError::Io(_) => None,
        }
    }
}

/// Reads `reader` to its end through a [`NarChecker`] (with `limit`, when given)
/// and returns what it found. For a `.nar.zst` file:
/// `check_nar(zstd::Decoder::new(file)?, Some(declared_nar_size))`.
pub fn check_nar<R: Read>(mut reader: R, limit: Option<u64>) -> Result<NarSummary, NarReadError> {
    let mut checker = limit.map_or_else(NarChecker::new, NarChecker::with_limit);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        checker.feed(&buf[..n])?;
    }
    Ok(checker.finish()?)
}

#[cfg(test)]
mod tests {
    use super::super::nar::{write_str, write_strs};
    use super::*;

    /// A NAR made with the writer's own framing, from a token list (`C:` marks
    /// contents, written as one token like any other).
    fn nar(tokens: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        write_strs(&mut v, tokens).unwrap();
        v
    }

    fn file(contents: &[u8]) -> Vec<u8> {
        nar(&[
            MAGIC,
            b"(",
            b"type",
            b"regular",
            b"contents",
            contents,
            b")",
        ])
    }

    fn check(bytes: &[u8]) -> Result<NarSummary, NarError> {
        let mut c = NarChecker::new();
        c.feed(bytes)?;
        c.finish()
    }

    /// A directory NAR with the given entries, each a file holding its name.
    fn dir(names: &[&[u8]]) -> Vec<u8> {
        let mut v = nar(&[MAGIC, b"(", b"type", b"directory"]);
        for n in names {
            write_strs(
                &mut v,
                &[
                    b"entry",
                    b"(",
                    b"name",
                    n,
                    b"node",
                    b"(",
                    b"type",
                    b"regular",
                    b"contents",
                    n,
                    b")",
                    b")",
                ],
            )
            .unwrap();
        }
        write_str(&mut v, b")").unwrap();
        v
    }

    #[test]
    fn accepts_a_file_and_hashes_it_in_any_chunking() {
        let bytes = file(b"base\n");
        let whole = check(&bytes).unwrap();
        assert_eq!(whole.digest, Digest::of(&bytes));
        assert_eq!(whole.size, 120);
        assert_eq!(whole.regular_files, 1);
        for chunk in [1, 3, 7, 8, 9, 64] {
            let mut c = NarChecker::new();
            for part in bytes.chunks(chunk) {
                c.write_all(part).unwrap();
            }
            assert_eq!(c.finish().unwrap(), whole, "chunks of {chunk}");
        }
    }

    #[test]
    fn accepts_executables_symlinks_and_sorted_directories() {
        let mut v = nar(&[MAGIC, b"(", b"type", b"directory"]);
        write_strs(
            &mut v,
            &[
                b"entry",
                b"(",
                b"name",
                b"a",
                b"node",
                b"(",
                b"type",
                b"regular",
                b"executable",
                b"",
                b"contents",
                b"#!/bin/sh\n",
                b")",
                b")",
            ],
        )
        .unwrap();
        write_strs(
            &mut v,
            &[
                b"entry", b"(", b"name", b"b", b"node", b"(", b"type", b"symlink", b"target",
                b"../x", b")", b")",
            ],
        )
        .unwrap();
        write_strs(
            &mut v,
            &[
                b"entry",
                b"(",
                b"name",
                b"c",
                b"node",
                b"(",
                b"type",
                b"directory",
                b")",
                b")",
                b")",
            ],
        )
        .unwrap();
        let s = check(&v).unwrap();
        assert_eq!((s.regular_files, s.symlinks, s.directories), (1, 1, 2));
    }

    // Issue 11 item 11: names Nix refuses were advertised by the cache.
    #[test]
    fn refuses_names_nix_refuses() {
        for (names, want) in [
            (vec![&b".."[..]], "BadName"),
            (vec![b"."], "BadName"),
            (vec![b"a/b"], "BadName"),
            (vec![b""], "BadName"),
            (vec![b"a\0b"], "BadName"),
            (vec![b"b", b"a"], "Unsorted"),
            (vec![b"a", b"a"], "Unsorted"),
        ] {
            let e = check(&dir(&names)).unwrap_err();
            assert!(format!("{e:?}").starts_with(want), "{names:?}: {e:?}");
        }
        let long = vec![b'x'; 256];
        assert!(matches!(
            check(&dir(&[&long])),
            Err(NarError::TooLong { len: 256, .. })
        ));
        check(&dir(&[&long[..255]])).unwrap();
    }

    #[test]
    fn refuses_what_is_not_a_nar() {
        assert_eq!(check(b""), Err(NarError::NotANar));
        assert_eq!(check(&[0xff; 64]), Err(NarError::NotANar));
        assert_eq!(check(&nar(&[b"nix-archive-2"])), Err(NarError::NotANar));
        let good = file(b"x");
        assert!(matches!(
            check(&good[..good.len() - 1]),
            Err(NarError::Truncated { .. })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(check(&trailing), Err(NarError::Trailing { .. })));
        // A non-zero padding byte after "x".
        let mut bad_pad = good.clone();
        let at = bad_pad.len() - 16 - 1;
        bad_pad[at] = 1;
        assert!(matches!(check(&bad_pad), Err(NarError::Padding { .. })));
        // Unknown node type, fields out of order, an unknown keyword.
        for tokens in [
            &[MAGIC, b"(", b"type", b"fifo", b")"][..],
            &[MAGIC, b"(", b"type", b"regular", b"executable", b"x"],
            &[MAGIC, b"(", b"contents", b"x", b")"],
            &[MAGIC, b"(", b"type", b"symlink", b"target", b"", b")"],
            &[
                MAGIC,
                b"(",
                b"type",
                b"regular",
                b"contents",
                b"x",
                b"extra",
            ],
        ] {
            assert!(check(&nar(tokens)).is_err(), "{tokens:?}");
        }
        // A huge length is refused at once, not waited for.
        let mut huge = nar(&[MAGIC, b"("]);
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(check(&huge), Err(NarError::Unexpected { .. })));
    }

    #[test]
    fn the_first_error_sticks_and_writes_fail_as_invalid_data() {
        let mut c = NarChecker::new();
        let e = c.write_all(&[0xff; 16]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(c.write_all(&file(b"x")).is_err());
        assert_eq!(c.finish(), Err(NarError::NotANar));
    }

    #[test]
    fn a_limit_stops_a_bomb_early_and_depth_is_bounded() {
        let bytes = file(&[7u8; 1000]);
        check_nar(bytes.as_slice(), Some(bytes.len() as u64)).unwrap();
        assert!(matches!(
            check_nar(bytes.as_slice(), Some(bytes.len() as u64 - 1)),
            Err(NarReadError::Nar(NarError::TooLarge { .. }))
        ));
        let mut deep = nar(&[MAGIC]);
        for _ in 0..=MAX_DEPTH {
            write_strs(
                &mut deep,
                &[
                    b"(",
                    b"type",
                    b"directory",
                    b"entry",
                    b"(",
                    b"name",
                    b"d",
                    b"node",
                ],
            )
            .unwrap();
        }
        assert!(matches!(check(&deep), Err(NarError::TooDeep { .. })));
    }

    #[test]
    fn errors_escape_hostile_names() {
        let e = check(&dir(&[b"b", b"a\x1b[2J"])).unwrap_err().to_string();
        assert!(!e.contains('\x1b'), "{e}");
    }
}
