//! Property tests: random values through each writer of the format and back through
//! its reader. Where a golden vector pins one example, these pin the rule: every
//! value the writer makes, the reader reads back unchanged and accepts.
//!
//! - canonical JSON: any value (integers, any Unicode, control characters, nesting)
//!   writes bytes that pass the canonical check and parse back to the value;
//! - nix32: any 20 or 32 bytes round-trip, and no string makes decode panic;
//! - tar headers: any size (base-256 above 8 GiB) and any mtime parse back and pass
//!   the exact-header check;
//! - the manifest: any set of blobs and objects through `BundleBuilder::finish`,
//!   `write_bundle` and back through `read_head`, both verifiers and
//!   `Manifest::parse`.

use std::collections::BTreeMap;
use std::io::{self, Read};

use gapbundle::bundle::canonical;
use gapbundle::bundle::keys::SecretKey;
use gapbundle::bundle::layout::{check_exact, header, parse_header, Block};
use gapbundle::bundle::manifest::{BlobEntry, ContentInfo, Encoding, Kind, Manifest, Object};
use gapbundle::bundle::reader::{read_head, verify_parallel, verify_stream, NoSink};
use gapbundle::bundle::signature::Envelope;
use gapbundle::bundle::writer::{write_bundle, BlobSource, BundleBuilder};
use gapbundle::bundle::Digest;
use gapbundle::nixfmt::nix32;
use proptest::prelude::*;
use serde_json::Value;

fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..12).prop_map(|v| v.into_iter().collect())
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn canonical_json_round_trips(v in json()) {
        let bytes = canonical::to_vec(&v).unwrap();
        canonical::check(&bytes).unwrap();
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        prop_assert_eq!(&back, &v);
        prop_assert_eq!(canonical::to_vec(&back).unwrap(), bytes);
    }

    #[test]
    fn nix32_round_trips(b32 in any::<[u8; 32]>(), b20 in any::<[u8; 20]>(), junk in text()) {
        let s = nix32::encode(&b32);
        prop_assert_eq!(s.len(), 52);
        prop_assert_eq!(nix32::decode::<32>(&s).unwrap(), b32);
        prop_assert_eq!(nix32::decode::<20>(&nix32::encode(&b20)).unwrap(), b20);
        let _ = nix32::decode::<32>(&junk);
    }

    #[test]
    fn tar_headers_round_trip_every_size(size in any::<u64>(), small in 0u64..(1 << 40), mtime in any::<u64>()) {
        for size in [size, small] {
            let h = header("blobs/sha256/00", size, mtime).unwrap();
            prop_assert_eq!(
                parse_header(&h).unwrap(),
                Block::File { path: "blobs/sha256/00".into(), size }
            );
            check_exact(&h, "blobs/sha256/00", size, mtime).unwrap();
            // Octal while it fits 11 digits, GNU base-256 (high bit set) above.
            prop_assert_eq!(h[124] & 0x80 != 0, size >= 1 << 33);
            prop_assert!(check_exact(&h, "blobs/sha256/00", size ^ 1, mtime).is_err());
        }
    }

    #[test]
    fn builder_output_is_what_the_readers_accept(
        contents in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..1500), 0u32..4, any::<bool>()), 1..8),
        objects in proptest::collection::vec(
            (0usize..4, text(), any::<prop::sample::Index>(), proptest::collection::vec(any::<prop::sample::Index>(), 0..4)), 0..6),
        created in 0u64..(1 << 33),
    ) {
        let mut builder = BundleBuilder::new("prop", "1", created, vec!["all".into()]);
        let mut store = BTreeMap::new();
        for (bytes, rank, encoded) in &contents {
            let digest = Digest::of(bytes);
            store.insert(digest, bytes.clone());
            builder.add_blob(BlobEntry {
                digest,
                size: bytes.len() as u64,
                media_type: "application/octet-stream".into(),
                offset: None,
                encoding: encoded.then_some(Encoding::Zstd),
                content: encoded.then(|| ContentInfo { digest: Digest::of(b""), size: 0 }),
            }, *rank).unwrap();
        }
        let digests: Vec<Digest> = store.keys().copied().collect();
        // Kinds whose meta is free-form: the typed meta of the others is the meta
        // validation's own business, and has its own tests.
        let kinds = [Kind::Spec, Kind::Lock, Kind::Other("x-future".into()), Kind::Other("image-ish".into())];
        for (kind, name, root, more) in &objects {
            let root = *root.get(&digests);
            let mut blobs: Vec<Digest> = more.iter().map(|i| *i.get(&digests)).chain([root]).collect();
            blobs.sort();
            blobs.dedup();
            let size = blobs.iter().map(|d| store[d].len() as u64).sum();
            // Same kind and name twice with another root is a conflict the builder
            // refuses; the property is about what it accepts.
            let _ = builder.add_object(Object {
                kind: kinds[*kind].clone(),
                name: name.clone(),
                digest: root,
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size,
                blobs,
                meta: Default::default(),
            });
        }
        let plan = builder.finish().unwrap();
        prop_assert_eq!(&Manifest::parse(&plan.manifest_bytes).unwrap(), &plan.manifest);
        let key = SecretKey::from_seed("prop", [9; 32]).unwrap();
        let envelope = Envelope::sign(plan.digest, std::slice::from_ref(&key));
        let mut file = Vec::new();
        let n = write_bundle(&mut file, &plan, &envelope, &Store(store), |_| {}).unwrap();
        prop_assert_eq!(n, file.len() as u64);
        prop_assert_eq!(plan.file_len(&envelope), n);

        let mut r = file.as_slice();
        let head = read_head(&mut r).unwrap();
        prop_assert_eq!(head.digest, plan.digest);
        head.envelope.check(&head.digest, &[key.public()], 1).unwrap();
        verify_stream(&mut r, &head, &mut NoSink, |_| {}).unwrap();
        let mut tmp = tempfile::tempfile().unwrap();
        io::Write::write_all(&mut tmp, &file).unwrap();
        verify_parallel(&tmp, &head, 3, &|_| {}).unwrap();
    }
}

struct Store(BTreeMap<Digest, Vec<u8>>);

impl BlobSource for Store {
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.0[digest].clone())))
    }
}
