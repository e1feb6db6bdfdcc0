//! The bundle head and everything after it: `read_head` on arbitrary bytes, then
//! both verifiers on the rest. Errors are fine; a panic, a hang or unbounded memory
//! is a bug, and so is a disagreement: the one-pass and the random-access reader
//! must accept exactly the same files (format.md section 12).
#![no_main]

use std::io;

use gapbundle::bundle::reader::{read_head, verify_parallel, verify_stream, NoSink, ReadAt};
use gapbundle::bundle::Digest;
use libfuzzer_sys::fuzz_target;

/// The input as a random-access source.
struct Bytes<'a>(&'a [u8]);

impl ReadAt for Bytes<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = (offset as usize).min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    if let Ok(head) = read_head(&mut r) {
        assert_eq!(head.digest, Digest::of(&head.manifest_bytes));
        let one_pass = verify_stream(&mut r, &head, &mut NoSink, |_| {});
        let parallel = verify_parallel(&Bytes(data), &head, 2, &|_| {});
        assert_eq!(
            one_pass.is_ok(),
            parallel.is_ok(),
            "one pass: {one_pass:?}, parallel: {parallel:?}"
        );
    }
});
