//! Manifest validation: `Manifest::parse` on arbitrary bytes never panics, and a
//! manifest it accepts writes canonical bytes that parse back to the same manifest.
#![no_main]

use gapbundle::bundle::canonical;
use gapbundle::bundle::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        let bytes = m.to_canonical().expect("a parsed manifest has no floats");
        canonical::check(&bytes).expect("the writer's bytes are canonical");
        assert_eq!(Manifest::parse(&bytes).expect("round trip"), m);
        let _ = m.data_len();
    }
});
