//! The spec file and the lock file: never a panic on any text, and a lock that
//! parses writes bytes that parse back to the same lock.
#![no_main]

use std::path::Path;

use gapbundle::spec::lock::Lock;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = gapbundle::spec::parse(Path::new("/fuzz/bundle.yaml"), text);
    }
    if let Ok(lock) = Lock::parse("bundle.lock", data) {
        let bytes = lock.to_bytes();
        let again = Lock::parse("bundle.lock", &bytes).expect("the writer's lock parses");
        assert_eq!(again.to_bytes(), bytes);
    }
});
