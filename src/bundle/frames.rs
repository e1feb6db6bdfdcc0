//! `encoding: zstd` content written as a sequence of zstd frames of a fixed size.
//!
//! A zstd stream may be several frames one after the other (RFC 8878, section 3.1):
//! every decoder reads them as one stream of content. Cutting a large content (a
//! NAR of hundreds of megabytes) into frames of [`FRAME_CONTENT`] bytes, each
//! compressed alone from one contiguous buffer, is what makes packing as fast as
//! zstd can be with bounded memory:
//!
//! - zstd's streaming encoder copies its input into a buffer of one window plus
//!   one block, which wraps around on anything larger than the window (2 MiB at
//!   level 3). From then on every block goes through its "external dictionary"
//!   match finder, which is much slower: on the benchmark closure it took a third
//!   of create's CPU, and one-shot frames of 4 MiB used 26% less CPU than one
//!   streamed frame (`zstd -T0` avoids it the same way: its jobs are contiguous).
//! - One-shot compression needs the whole frame's content in memory: 4 MiB, not
//!   the whole NAR.
//! - At a 2 MiB window, 4 MiB frames lose nothing measurable: the benchmark
//!   closure's 548 MiB of NAR came to 187.9 MB against 188.0 MB as one frame.
//!
//! The frames depend only on the content, [`FRAME_CONTENT`] and the level, so the
//! same content always gives the same bytes. Each frame records its content size.

use std::io::{self, Write};

/// Bytes of content in each frame but the last.
pub const FRAME_CONTENT: usize = 4 << 20;

/// Compresses one frame at a time; keeps its context and output buffer between
/// frames.
pub struct FrameEncoder {
    compressor: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
}

impl FrameEncoder {
    /// An encoder at zstd `level`.
    pub fn new(level: i32) -> io::Result<Self> {
        let mut compressor = zstd::bulk::Compressor::new(level)?;
        compressor.include_contentsize(true)?;
        compressor.include_checksum(false)?;
        Ok(Self {
            compressor,
            out: Vec::new(),
        })
    }

    /// Writes `content` (at most [`FRAME_CONTENT`] bytes; an empty one too) as one
    /// frame to `w`.
    pub fn encode(&mut self, content: &[u8], w: &mut impl Write) -> io::Result<()> {
        debug_assert!(content.len() <= FRAME_CONTENT);
        let bound = zstd::zstd_safe::compress_bound(content.len());
        if self.out.capacity() < bound {
            self.out.reserve(bound - self.out.len());
        }
        self.out.clear();
        self.compressor.compress_to_buffer(content, &mut self.out)?;
        w.write_all(&self.out)
    }
}

/// Where [`FrameCutter`] sends each frame's content: it gets a buffer of at most
/// [`FRAME_CONTENT`] bytes and returns an empty one (with room for a frame) to fill
/// next.
pub trait FrameSink {
    /// Takes one frame's content.
    fn frame(&mut self, content: Vec<u8>) -> io::Result<Vec<u8>>;
}

/// A writer that cuts what it is given into frames of exactly [`FRAME_CONTENT`]
/// bytes (the last one shorter) for a [`FrameSink`]. `flush` does not cut a frame:
/// the frames must not depend on how the content was written.
pub struct FrameCutter<S: FrameSink> {
    current: Vec<u8>,
    sink: S,
    handed: bool,
}

impl<S: FrameSink> FrameCutter<S> {
    /// A cutter filling `buffer` (cleared first) for `sink`.
    pub fn new(mut buffer: Vec<u8>, sink: S) -> Self {
        buffer.clear();
        Self {
            current: buffer,
            sink,
            handed: false,
        }
    }

    fn hand_over(&mut self) -> io::Result<()> {
        let full = std::mem::take(&mut self.current);
        self.current = self.sink.frame(full)?;
        self.current.clear();
        self.handed = true;
        Ok(())
    }

    /// Hands over the last frame (an empty one if nothing was written at all, so the
    /// result is always valid zstd); returns the sink and the buffer it gave back.
    pub fn finish(mut self) -> io::Result<(S, Vec<u8>)> {
        if !self.current.is_empty() || !self.handed {
            self.hand_over()?;
        }
        Ok((self.sink, self.current))
    }
}

impl<S: FrameSink> Write for FrameCutter<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(FRAME_CONTENT - self.current.len());
        self.current.extend_from_slice(&buf[..n]);
        if self.current.len() == FRAME_CONTENT {
            self.hand_over()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(n: usize) -> Vec<u8> {
        // Compressible but not trivial: decimal numbers.
        let mut v = Vec::with_capacity(n + 16);
        let mut i = 0u64;
        while v.len() < n {
            v.extend_from_slice(format!("{i}\n").as_bytes());
            i += 1;
        }
        v.truncate(n);
        v
    }

    /// The sizes of the frames in `z`, as their headers say.
    fn frame_sizes(mut z: &[u8]) -> Vec<u64> {
        let mut out = Vec::new();
        while !z.is_empty() {
            let len = zstd::zstd_safe::find_frame_compressed_size(z).unwrap();
            let size = zstd::zstd_safe::get_frame_content_size(&z[..len])
                .unwrap()
                .unwrap();
            out.push(size);
            z = &z[len..];
        }
        out
    }

    /// The simplest sink: each frame compressed on the spot.
    struct EncodeInto(FrameEncoder, Vec<u8>);

    impl FrameSink for EncodeInto {
        fn frame(&mut self, content: Vec<u8>) -> io::Result<Vec<u8>> {
            self.0.encode(&content, &mut self.1)?;
            Ok(content)
        }
    }

    fn encode(data: &[u8], write_size: usize) -> Vec<u8> {
        let sink = EncodeInto(FrameEncoder::new(3).unwrap(), Vec::new());
        let mut w = FrameCutter::new(Vec::new(), sink);
        for c in data.chunks(write_size.max(1)) {
            w.write_all(c).unwrap();
            w.flush().unwrap();
        }
        w.finish().unwrap().0 .1
    }

    #[test]
    fn frames_of_fixed_size_that_decode_as_one_stream() {
        let data = content(2 * FRAME_CONTENT + 12345);
        let z = encode(&data, 100_000);
        assert_eq!(
            frame_sizes(&z),
            vec![FRAME_CONTENT as u64, FRAME_CONTENT as u64, 12345]
        );
        assert_eq!(zstd::decode_all(z.as_slice()).unwrap(), data);
        // How the content was written does not change the bytes.
        assert!(encode(&data, 7) == z);
        assert!(encode(&data, 3 * FRAME_CONTENT) == z);
    }

    #[test]
    fn exact_multiples_and_empty_content() {
        let data = content(FRAME_CONTENT);
        let z = encode(&data, 1 << 20);
        assert_eq!(frame_sizes(&z), vec![FRAME_CONTENT as u64]);
        assert_eq!(zstd::decode_all(z.as_slice()).unwrap(), data);
        let empty = encode(&[], 1);
        assert_eq!(frame_sizes(&empty), vec![0]);
        assert!(zstd::decode_all(empty.as_slice()).unwrap().is_empty());
    }
}
