//! Inventory files (format.md section 10.4) come back from a site: parsing and the
//! signature check never panic on arbitrary bytes (zstd or JSON), and an accepted
//! inventory writes a file that parses back to the same document and digest.
#![no_main]

use gapbundle::bundle::inventory::InventoryFile;
use gapbundle::bundle::keys::SecretKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = InventoryFile::parse(data) {
        let key = SecretKey::from_seed("fuzz-site", [7; 32]).unwrap();
        let _ = f.check(&[key.public()]);
        let bytes = f.inventory.to_file(&[key.clone()]).expect("compresses");
        let again = InventoryFile::parse(&bytes).expect("round trip");
        assert_eq!(again.inventory.to_canonical(), f.inventory.to_canonical());
        assert!(again.check(&[key.public()]).is_ok());
    }
});
