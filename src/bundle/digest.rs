//! Content digests.
//!
//! Every object in a bundle is named by the sha256 of the bytes stored for it, and
//! those names travel through YAML, JSON, OCI descriptors and file names. One type
//! that can only hold a well-formed `sha256:<64 lowercase hex>` keeps malformed or
//! path-traversing names (`sha256:../../etc`) from ever reaching the file system.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 content digest, displayed as `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

/// Why a string is not a digest this format accepts.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{input}` is not a sha256 digest (expected `sha256:` followed by 64 lowercase hex digits)"
)]
pub struct DigestParseError {
    /// The text that was rejected.
    pub input: String,
}

impl crate::error::Classify for DigestParseError {
    /// Whoever parsed the digest decides (a spec, a lock, a bundle).
    fn class(&self) -> Option<crate::error::ErrorClass> {
        None
    }
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// Wraps raw sha256 output.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The 64 lowercase hex digits, without the algorithm prefix; this is the file
    /// name under `blobs/sha256/`.
    pub fn hex(&self) -> String {
        self.hex_of(32)
    }

    /// The first 12 hex digits, for messages a person reads.
    pub fn short(&self) -> String {
        self.hex_of(6)
    }

    /// The hex of the first `bytes` bytes, from a table: a manifest names tens of
    /// thousands of digests, and a `char` pushed at a time was a fifth of deriving
    /// `index.json` from a 20,000-object manifest.
    fn hex_of(&self, bytes: usize) -> String {
        lower_hex(&self.0[..bytes])
    }

    /// Parses bare hex (a file name under `blobs/sha256/`): lower-case digits only.
    pub fn from_hex(hex: &str) -> Result<Self, DigestParseError> {
        let err = || DigestParseError {
            input: hex.to_string(),
        };
        if hex.len() != 64 {
            return Err(err());
        }
        // By table and without a branch per digit: a manifest holds tens of
        // thousands of digests, and each is parsed on every command that reads it.
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let (hi, lo) = (HEX_VALUE[pair[0] as usize], HEX_VALUE[pair[1] as usize]);
            bad |= hi | lo;
            *byte = (hi << 4) | (lo & 0x0f);
        }
        if bad & NOT_HEX != 0 {
            return Err(err());
        }
        Ok(Digest(out))
    }
}

/// `bytes` as lower-case hex, two digits a byte: the one spelling of hex in the
/// code (digests, chain IDs, UUIDs, random names), from a table.
pub fn lower_hex(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX_DIGITS[(b >> 4) as usize]);
        out.push(HEX_DIGITS[(b & 0xf) as usize]);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// The lower-case hex digits, by value.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Marks a byte that is not a lower-case hex digit in [`HEX_VALUE`].
const NOT_HEX: u8 = 0x80;

/// Each byte's value as a lower-case hex digit, or [`NOT_HEX`].
const HEX_VALUE: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 16 {
        table[HEX_DIGITS[i] as usize] = i as u8;
        i += 1;
    }
    table
};

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("sha256:") {
            Some(hex) => Digest::from_hex(hex).map_err(|_| DigestParseError {
                input: s.to_string(),
            }),
            None => Err(DigestParseError {
                input: s.to_string(),
            }),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Parsed from the string where it lies, with no `String` made for it.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Digest;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Digest, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

/// An incremental sha256 that also counts bytes, so a size check never needs a
/// second pass.
#[derive(Clone, Default)]
pub struct Hasher {
    inner: Sha256,
    len: u64,
}

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.inner.update(bytes);
        self.len += bytes.len() as u64;
    }
    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The digest and byte count.
    pub fn finish(self) -> (Digest, u64) {
        (Digest(self.inner.finalize().into()), self.len)
    }
}

/// A writer that hashes everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
        }
    }
    /// The wrapped writer with the digest and size of what went through.
    pub fn finish(self) -> (W, Digest, u64) {
        let (d, n) = self.hasher.finish();
        (self.inner, d, n)
    }
    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.len()
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Hasher::new(),
        }
    }
    /// Digest and size of what was read.
    pub fn finish(self) -> (Digest, u64) {
        self.hasher.finish()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads `reader` to its end in large chunks and returns digest and size. Used where
/// the bytes have nowhere else to go (verification).
///
/// The 1 MiB chunk is allocated once per thread: a rerun of an import of 20,000
/// small files hashes each file on the host, and zeroing a new chunk per file was
/// 40% of that rerun's samples.
pub fn hash_reader<R: Read>(reader: R) -> io::Result<(Digest, u64)> {
    thread_local! {
        static CHUNK: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    CHUNK.with(|chunk| match chunk.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.is_empty() {
                buf.resize(1 << 20, 0);
            }
            hash_with(reader, &mut buf)
        }
        // A reader that hashes something itself while it is read.
        Err(_) => hash_with(reader, &mut vec![0u8; 1 << 20]),
    })
}

fn hash_with<R: Read>(mut reader: R, buf: &mut [u8]) -> io::Result<(Digest, u64)> {
    let mut hasher = Hasher::new();
    loop {
        let n = match reader.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower_hex_spells_every_byte_in_two_lower_case_digits() {
        assert_eq!(lower_hex(&[]), "");
        assert_eq!(lower_hex(&[0x00, 0x0a, 0xf0, 0xff]), "000af0ff");
        let all: Vec<u8> = (0..=255).collect();
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(lower_hex(&all), want);
    }

    #[test]
    fn empty_digest_is_the_well_known_one() {
        assert_eq!(
            Digest::of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_round_trips_and_rejects_bad_input() {
        let d = Digest::of(b"abc");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        for bad in [
            "sha256:../../etc/passwd",
            "sha512:00",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn hex_round_trips_and_takes_lower_case_digits_only() {
        let d = Digest::of(b"abc");
        assert_eq!(Digest::from_hex(&d.hex()).unwrap(), d);
        assert_eq!(d.short(), d.hex()[..12]);
        let zero = "0".repeat(64);
        assert_eq!(Digest::from_hex(&zero).unwrap(), Digest([0; 32]));
        assert_eq!(
            Digest::from_hex(&"f".repeat(64)).unwrap(),
            Digest([0xff; 32])
        );
        for bad in [
            "A".to_string() + &zero[1..],
            zero[1..].to_string() + "g",
            zero[1..].to_string() + "/",
            zero[1..].to_string() + "\u{0}",
            zero[..63].to_string(),
            zero.clone() + "0",
            "é".to_string() + &zero[2..],
        ] {
            let err = Digest::from_hex(&bad).unwrap_err();
            assert_eq!(err.input, bad);
        }
    }

    #[test]
    fn a_digest_deserializes_from_a_string_only() {
        let d = Digest::of(b"abc");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        // An escaped string is not borrowed from the input; it parses all the same.
        let escaped = json.replacen("sha", "\\u0073ha", 1);
        assert_eq!(serde_json::from_str::<Digest>(&escaped).unwrap(), d);
        let err = serde_json::from_str::<Digest>("7").unwrap_err().to_string();
        assert!(
            err.starts_with("invalid type: integer `7`, expected a string"),
            "{err}"
        );
        let err = serde_json::from_str::<Digest>("\"sha256:00\"").unwrap_err();
        assert!(err.to_string().contains("sha256:00"), "{err}");
    }

    #[test]
    fn hashing_writer_counts_and_hashes() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (inner, d, n) = w.finish();
        assert_eq!(inner, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(d, Digest::of(b"hello world"));
    }
}
