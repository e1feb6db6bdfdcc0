//! Canonical JSON: `check` never panics, and bytes it accepts are exactly what the
//! writer makes of the value they hold.
#![no_main]

use gapbundle::bundle::canonical;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if canonical::check(data).is_ok() {
        let v: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert_eq!(canonical::to_vec(&v).unwrap(), data);
    }
});
