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

/// A writer that cuts what it is given into frames of [`FRAME_CONTENT`] bytes.
/// `flush` does not cut a frame (the frames must not depend on how the content was
/// written); [`FrameWriter::finish`] writes the last one.
pub struct FrameWriter<W: Write> {
    inner: W,
    encoder: FrameEncoder,
    pending: Vec<u8>,
    wrote_frame: bool,
}

impl<W: Write> FrameWriter<W> {
    /// A writer into `inner` at zstd `level`.
    pub fn new(inner: W, level: i32) -> io::Result<Self> {
        Ok(Self {
            inner,
            encoder: FrameEncoder::new(level)?,
            pending: Vec::with_capacity(FRAME_CONTENT),
            wrote_frame: false,
        })
    }

    /// Writes the last frame (an empty one if nothing was written at all, so the
    /// result is always valid zstd) and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.pending.is_empty() || !self.wrote_frame {
            self.encoder.encode(&self.pending, &mut self.inner)?;
        }
        Ok(self.inner)
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = FRAME_CONTENT - self.pending.len();
        let n = buf.len().min(room);
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == FRAME_CONTENT {
            self.encoder.encode(&self.pending, &mut self.inner)?;
            self.pending.clear();
            self.wrote_frame = true;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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

    fn encode(data: &[u8], write_size: usize) -> Vec<u8> {
        let mut w = FrameWriter::new(Vec::new(), 3).unwrap();
        for c in data.chunks(write_size.max(1)) {
            w.write_all(c).unwrap();
            w.flush().unwrap();
        }
        w.finish().unwrap()
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
