//! Reading `encoding: zstd` content, bounded and checked.
//!
//! A blob's stored bytes are verified against its digest, but what they decode to
//! is only a promise (`content.digest`, `content.size`), and zstd's ratio is
//! unbounded: a few kilobytes of signed blob can decode to gigabytes. So nothing
//! decodes a blob except through here, with a hard limit of `content.size` and a
//! hash on the way: [`decode_checked`] refuses the first byte past the size before
//! it reaches the sink, and at the end anything other than exactly the promised
//! content. The sink must therefore be a temporary one that is only given its
//! final name (or used at all) once this returned `Ok`.
//!
//! Decoders also refuse frames that ask for a window over 8 MiB
//! ([`MAX_WINDOW_LOG`]), the most RFC 8878 (section 3.1.1.1.2) recommends a decoder
//! support; otherwise one frame could make each decoder allocate up to the 2 GiB a
//! zstd window may be. This implementation's writer uses windows of at most 4 MiB
//! (frames of 4 MiB, see [`super::frames`]).

use std::io::{self, BufReader, Read, Write};

use super::digest::Hasher;
use super::manifest::ContentInfo;
use super::Digest;

/// Largest zstd window a decoder accepts: 2^23 bytes (8 MiB).
pub const MAX_WINDOW_LOG: u32 = 23;

/// Why encoded content was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The stored bytes are not zstd (or ask for too large a window).
    #[error("it is not valid zstd data: {0}")]
    Zstd(io::Error),
    /// It decodes to more bytes than `content.size`.
    #[error("it decodes to more than the {limit} bytes its content size says")]
    TooLarge {
        /// `content.size`.
        limit: u64,
    },
    /// It decodes to other content than `content` says.
    #[error("it decodes to {found} ({found_size} bytes), not to {expected} ({expected_size} bytes) as its content says")]
    Mismatch {
        /// `content.digest`.
        expected: Digest,
        /// `content.size`.
        expected_size: u64,
        /// What it decoded to.
        found: Digest,
        /// How many bytes.
        found_size: u64,
    },
    /// The sink refused the bytes (a full disk, say): not the content's fault.
    #[error("writing what it decodes to: {0}")]
    Write(io::Error),
}

impl DecodeError {
    /// Whether the content is at fault (rather than the sink).
    pub fn is_content(&self) -> bool {
        !matches!(self, DecodeError::Write(_))
    }
}

impl crate::error::Classify for DecodeError {
    /// Content that is not what it says fails verification (exit 3); a sink that
    /// refused the bytes is the target's own trouble, which its error decides.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        self.is_content()
            .then_some(crate::error::ErrorClass::Verify)
    }
}

/// A zstd decoder over `r` that refuses windows over [`MAX_WINDOW_LOG`].
pub fn zstd_reader<R: Read>(
    r: R,
) -> io::Result<zstd::stream::read::Decoder<'static, BufReader<R>>> {
    let mut d = zstd::stream::read::Decoder::new(r)?;
    d.window_log_max(MAX_WINDOW_LOG)?;
    Ok(d)
}

/// A zstd decoder writing into `w` (each `write` decodes what it can and, after
/// `flush`, has handed `w` everything its input decodes to), with the same
/// window limit.
pub fn zstd_writer<W: Write>(w: W) -> io::Result<zstd::stream::write::Decoder<'static, W>> {
    let mut d = zstd::stream::write::Decoder::new(w)?;
    d.window_log_max(MAX_WINDOW_LOG)?;
    Ok(d)
}

/// A zstd decoding context with the same window limit, for [`zstd_writer_in`]: a
/// caller that decodes thousands of small blobs one after the other (the small Nix
/// paths of an import) makes one, where a new decoder per blob spent more time
/// setting up its context than decoding.
pub fn zstd_context() -> io::Result<zstd::zstd_safe::DCtx<'static>> {
    let mut ctx = zstd::zstd_safe::DCtx::create();
    ctx.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(MAX_WINDOW_LOG))
        .map_err(|code| {
            io::Error::other(format!(
                "cannot limit the zstd window: {}",
                zstd::zstd_safe::get_error_name(code)
            ))
        })?;
    Ok(ctx)
}

/// [`zstd_writer`], decoding in `ctx` (from [`zstd_context`]; what an earlier
/// stream left in it is discarded first, the window limit is kept).
pub fn zstd_writer_in<'a, W: Write>(
    w: W,
    ctx: &'a mut zstd::zstd_safe::DCtx<'static>,
) -> zstd::stream::write::Decoder<'a, W> {
    zstd::stream::write::Decoder::with_context(w, ctx)
}

/// Decodes the zstd stream `stored` into `out`, never handing `out` more than
/// `content.size` bytes, and checks that what it decoded is exactly `content`.
pub fn decode_checked<R: Read, W: Write + ?Sized>(
    stored: R,
    content: &ContentInfo,
    out: &mut W,
) -> Result<(), DecodeError> {
    let mut dec = zstd_reader(stored).map_err(DecodeError::Zstd)?;
    let mut hasher = Hasher::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let k = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DecodeError::Zstd(e)),
        };
        n += k as u64;
        if n > content.size {
            return Err(DecodeError::TooLarge {
                limit: content.size,
            });
        }
        hasher.update(&buf[..k]);
        out.write_all(&buf[..k]).map_err(DecodeError::Write)?;
    }
    let (found, found_size) = hasher.finish();
    if found != content.digest || found_size != content.size {
        return Err(DecodeError::Mismatch {
            expected: content.digest,
            expected_size: content.size,
            found,
            found_size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(bytes: &[u8]) -> ContentInfo {
        ContentInfo {
            digest: Digest::of(bytes),
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn exactly_the_promised_content_passes() {
        let text = b"kind: ConfigMap\n".repeat(1000);
        let z = zstd::encode_all(&text[..], 3).unwrap();
        let mut out = Vec::new();
        decode_checked(&z[..], &content(&text), &mut out).unwrap();
        assert_eq!(out, text);
    }

    #[test]
    fn a_bomb_stops_at_the_declared_size() {
        // 64 MiB of zeros in a few kilobytes, declared as 1 KiB.
        let bomb = zstd::encode_all(std::io::repeat(0).take(64 << 20), 19).unwrap();
        assert!(bomb.len() < 64 << 10);
        let declared = ContentInfo {
            digest: Digest::of(b"whatever"),
            size: 1024,
        };
        let mut out = Vec::new();
        let e = decode_checked(&bomb[..], &declared, &mut out).unwrap_err();
        assert!(matches!(e, DecodeError::TooLarge { limit: 1024 }), "{e}");
        assert!(out.len() <= 1024, "the sink got {} bytes", out.len());
    }

    #[test]
    fn other_content_short_content_and_garbage_are_refused() {
        let z = zstd::encode_all(&b"real"[..], 3).unwrap();
        let mut sink = Vec::new();
        let e = decode_checked(&z[..], &content(b"fake"), &mut sink).unwrap_err();
        assert!(matches!(e, DecodeError::Mismatch { .. }), "{e}");
        let e = decode_checked(&z[..], &content(b"really"), &mut sink).unwrap_err();
        assert!(
            matches!(e, DecodeError::Mismatch { found_size: 4, .. }),
            "{e}"
        );
        let e = decode_checked(&b"not zstd"[..], &content(b"x"), &mut sink).unwrap_err();
        assert!(matches!(e, DecodeError::Zstd(_)) && e.is_content(), "{e}");
    }

    #[test]
    fn windows_over_8_mib_are_refused() {
        let data = Digest::of(b"seed").hex().repeat(1 << 16);
        let with_window = |log: u32| {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            enc.set_parameter(zstd::zstd_safe::CParameter::WindowLog(log))
                .unwrap();
            enc.include_contentsize(false).unwrap();
            enc.write_all(data.as_bytes()).unwrap();
            enc.finish().unwrap()
        };
        let c = content(data.as_bytes());
        decode_checked(&with_window(MAX_WINDOW_LOG)[..], &c, &mut io::sink()).unwrap();
        let e =
            decode_checked(&with_window(MAX_WINDOW_LOG + 1)[..], &c, &mut io::sink()).unwrap_err();
        assert!(matches!(e, DecodeError::Zstd(_)), "{e}");
    }
}
