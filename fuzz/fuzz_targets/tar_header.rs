//! One tar header block: the loose parse never panics, the exact check never
//! panics, and a header the writer makes for what the parse found parses back to
//! the same path and size (base-256 sizes included) and passes the exact check.
#![no_main]

use gapbundle::bundle::layout::{check_exact, header, parse_header, Block};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut block = [0u8; 512];
    let n = data.len().min(512);
    block[..n].copy_from_slice(&data[..n]);
    let mtime = data.get(512..520).map_or(0, |b| {
        u64::from_le_bytes(b.try_into().unwrap()) & ((1 << 33) - 1)
    });
    if let Ok(Block::File { path, size }) = parse_header(&block) {
        let _ = check_exact(&block, &path, size, mtime);
        if let Ok(h) = header(&path, size, mtime) {
            assert_eq!(
                parse_header(&h).unwrap(),
                Block::File {
                    path: path.clone(),
                    size
                }
            );
            check_exact(&h, &path, size, mtime).unwrap();
        }
    }
});
