//! `nix path-info --json` parsing and the narinfo writer: never a panic, and a
//! narinfo the writer accepts has exactly the lines it should (no value can add
//! one). The content-address and signature validators agree with the writer.
#![no_main]

use gapbundle::nixfmt::{parse_path_info, validate_ca, validate_path_signature, NarHash, NarInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(infos) = parse_path_info(data) else {
        return;
    };
    for p in infos {
        let info = NarInfo {
            url: NarInfo::nar_url(&p.nar_hash, "zst"),
            compression: "zstd".into(),
            file_hash: NarHash::from_digest(&p.nar_hash.digest()),
            file_size: p.nar_size,
            nar_hash: p.nar_hash,
            nar_size: p.nar_size,
            references: p.references.clone(),
            deriver: p.deriver.clone(),
            sigs: p.sigs.clone(),
            ca: p.ca.clone(),
            store_path: p.path.clone(),
        };
        let valid = p.sigs.iter().all(|s| validate_path_signature(s).is_ok())
            && p.ca.as_deref().is_none_or(|c| validate_ca(c).is_ok());
        match info.to_text() {
            Ok(text) => {
                assert!(valid);
                let lines = 8
                    + usize::from(p.deriver.is_some())
                    + p.sigs.len()
                    + usize::from(p.ca.is_some());
                assert_eq!(text.lines().count(), lines, "{text}");
                assert!(text.ends_with('\n') && !text.contains('\r'));
            }
            Err(_) => assert!(!valid),
        }
    }
});
