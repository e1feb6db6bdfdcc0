//! The NAR validator: never panics, holds no more than one short token, and gives
//! the same verdict and digest however the bytes are cut into writes.
#![no_main]

use gapbundle::bundle::Digest;
use gapbundle::nixfmt::NarChecker;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = {
        let mut c = NarChecker::new();
        let _ = c.feed(data);
        c.finish()
    };
    let cut = data.first().map_or(1, |&b| b as usize % 17 + 1);
    let chunked = {
        let mut c = NarChecker::new();
        for part in data.chunks(cut) {
            if c.feed(part).is_err() {
                break;
            }
        }
        c.finish()
    };
    assert_eq!(whole, chunked);
    if let Ok(s) = whole {
        assert_eq!(s.digest, Digest::of(data));
        assert_eq!(s.size, data.len() as u64);
    }
});
