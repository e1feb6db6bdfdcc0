//! The signature envelope: parsing and the trust decision never panic, and an
//! accepted envelope is exactly its canonical bytes.
#![no_main]

use gapbundle::bundle::keys::SecretKey;
use gapbundle::bundle::signature::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Envelope::parse(data) {
        assert_eq!(e.to_canonical(), data);
        let trusted = [
            SecretKey::from_seed("fuzz-1", [1; 32]).unwrap().public(),
            SecretKey::from_seed("fuzz-2", [1; 32]).unwrap().public(),
            SecretKey::from_seed("fuzz-3", [3; 32]).unwrap().public(),
        ];
        for threshold in 0..4 {
            if let Ok(signers) = e.check(&e.manifest_digest, &trusted, threshold) {
                // Distinct key bytes: fuzz-1 and fuzz-2 are one key.
                assert!(signers.len() <= 2 && signers.len() >= threshold.max(1));
            }
        }
    }
});
