//! Reading a bundle's head, and forging bundles for refusal tests: rewrite the
//! manifest and sign it again with a key the verifier trusts, keeping the data
//! section as it is. The result is validly signed, so whatever the verifier
//! refuses is refused for the edit alone.
//!
//! Unlike the rest of `support`, this uses the gapbundle library: it is a tool
//! for finding things in a bundle and making faults, not an independent check.

use std::collections::BTreeMap;
use std::fs;
use std::io::BufReader;
use std::path::Path;

use gapbundle::bundle::canonical;
use gapbundle::bundle::keys::SecretKey;
use gapbundle::bundle::layout;
use gapbundle::bundle::manifest::{MANIFEST_PATH, SIGNATURES_PATH};
use gapbundle::bundle::reader::{read_head, Head};
use gapbundle::bundle::signature::Envelope;
use gapbundle::bundle::writer::BlobSource;
use gapbundle::bundle::Digest;
use serde_json::Value;

/// The head (manifest, signatures, where the data starts) of the bundle file at
/// `bundle`, read by the library.
pub fn head_of(bundle: &Path) -> Head {
    let f = fs::File::open(bundle).unwrap_or_else(|e| panic!("{}: {e}", bundle.display()));
    read_head(&mut BufReader::new(f)).unwrap_or_else(|e| panic!("{}: {e}", bundle.display()))
}

/// Rewrites `src`'s manifest with `edit`, signs it with `key`, writes `dst`.
pub fn resign(src: &Path, dst: &Path, key: &SecretKey, edit: impl FnOnce(&mut Value)) {
    let bytes = fs::read(src).unwrap();
    let head = read_head(&mut bytes.as_slice()).unwrap();
    let mut m: Value = serde_json::from_slice(&head.manifest_bytes).unwrap();
    edit(&mut m);
    let text = canonical::to_vec(&m).unwrap();
    let env = Envelope::sign(Digest::of(&text), std::slice::from_ref(key)).to_canonical();
    let mut out = Vec::new();
    let len = text.len() as u64;
    layout::write_entry(&mut out, MANIFEST_PATH, len, 0, &mut text.as_slice()).unwrap();
    let len = env.len() as u64;
    layout::write_entry(&mut out, SIGNATURES_PATH, len, 0, &mut env.as_slice()).unwrap();
    out.extend_from_slice(&bytes[head.data_start as usize..]);
    fs::write(dst, out).unwrap();
}

/// The blobs of a bundle a test builds with the library's writer, in memory.
pub struct MemBlobs(pub BTreeMap<Digest, Vec<u8>>);

impl BlobSource for MemBlobs {
    fn open_blob(&self, d: &Digest) -> std::io::Result<Box<dyn std::io::Read + Send>> {
        Ok(Box::new(std::io::Cursor::new(self.0[d].clone())))
    }
}
