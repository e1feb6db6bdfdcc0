//! The bundle head and everything after it: `read_head` on arbitrary bytes, then
//! the one-pass verifier on the rest. Errors are fine; a panic, a hang or unbounded
//! memory is a bug.
#![no_main]

use gapbundle::bundle::reader::{read_head, verify_stream, NoSink};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    if let Ok(head) = read_head(&mut r) {
        // What read_head accepted is canonical: the digest is of the bytes as stored.
        assert_eq!(
            head.digest,
            gapbundle::bundle::Digest::of(&head.manifest_bytes)
        );
        let _ = verify_stream(&mut r, &head, &mut NoSink, |_| {});
    }
});
