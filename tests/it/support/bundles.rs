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

/// The folder of the normative vectors, `bundle-spec/vectors`.
pub fn vectors() -> std::path::PathBuf {
    super::repo().join("bundle-spec/vectors")
}

/// One stored blob of a bundle [`forge`] lays out: its bytes, and the blob entry's
/// fields other than `digest`, `size` and `offset` (`mediaType`, and `encoding` with
/// `content` when it is encoded).
pub struct Stored {
    /// The stored bytes.
    pub bytes: Vec<u8>,
    /// `mediaType`, `encoding`, `content`.
    pub fields: Value,
}

impl Stored {
    /// The blob's digest.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.bytes)
    }
}

/// Lays out and writes to `out` a bundle from format.md's rules alone, not with the
/// library's builder (which refuses what a refusal test needs a reader to see):
/// the manifest is `manifest` (its `objects`, `name` and `version`; the other fields
/// get the usual values unless given) with `files` and `blobs` made from `blobs`, in
/// the order given, and `index.json` derived from its image objects as a writer
/// derives it; signed by `key`, and the envelope then edited with `envelope` (to add
/// entries an untrusted key claims, say). Returns the bundle's digest.
pub fn forge(
    out: &Path,
    key: &SecretKey,
    mut manifest: Value,
    blobs: &[Stored],
    envelope: impl FnOnce(&mut Value),
) -> Digest {
    let oci_layout = br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec();
    let sizes: BTreeMap<String, usize> = blobs
        .iter()
        .map(|b| (b.digest().to_string(), b.bytes.len()))
        .collect();
    let mut images: Vec<Value> = manifest["objects"]
        .as_array()
        .map(|objects| {
            objects
                .iter()
                .filter(|o| o["kind"] == "image")
                .map(|o| {
                    let name = o["name"].clone();
                    serde_json::json!({
                        "annotations": {
                            "io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name,
                        },
                        "digest": o["digest"],
                        "mediaType": o["mediaType"],
                        "size": sizes.get(o["digest"].as_str().unwrap_or("")).copied().unwrap_or(0),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    images.sort_by_key(|d| {
        (
            d["annotations"]["io.containerd.image.name"].to_string(),
            d["digest"].to_string(),
        )
    });
    let index = canonical::to_vec(&serde_json::json!({
        "manifests": images,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "schemaVersion": 2,
    }))
    .unwrap();
    // Offsets as format.md section 5 rule 6 lays them out.
    let entry = |size: usize| 512 + (size as u64).div_ceil(512) * 512;
    let mut pos = 0u64;
    let mut place = |size: usize| {
        let offset = pos + 512;
        pos += entry(size);
        offset
    };
    let files = serde_json::json!([
        {"path": "oci-layout", "digest": Digest::of(&oci_layout).to_string(), "size": oci_layout.len(), "offset": place(oci_layout.len())},
        {"path": "index.json", "digest": Digest::of(&index).to_string(), "size": index.len(), "offset": place(index.len())},
    ]);
    let entries: Vec<Value> = blobs
        .iter()
        .map(|b| {
            let mut e = b.fields.clone();
            e["digest"] = b.digest().to_string().into();
            e["size"] = b.bytes.len().into();
            e["offset"] = place(b.bytes.len()).into();
            e
        })
        .collect();
    let defaults = [
        ("formatVersion", Value::from("1.0")),
        ("created", Value::from(0)),
        ("generator", Value::from("tests/it/support")),
        ("platforms", serde_json::json!(["all"])),
    ];
    for (k, v) in defaults {
        if manifest.get(k).is_none() {
            manifest[k] = v;
        }
    }
    manifest["files"] = files;
    manifest["blobs"] = entries.into();
    let text = canonical::to_vec(&manifest).unwrap();
    let digest = Digest::of(&text);
    let mut env: Value =
        serde_json::from_slice(&Envelope::sign(digest, std::slice::from_ref(key)).to_canonical())
            .unwrap();
    envelope(&mut env);
    let env = canonical::to_vec(&env).unwrap();
    let mut f = Vec::new();
    let data: Vec<(String, &[u8])> = [
        (MANIFEST_PATH.to_string(), text.as_slice()),
        (SIGNATURES_PATH.to_string(), env.as_slice()),
        ("oci-layout".to_string(), oci_layout.as_slice()),
        ("index.json".to_string(), index.as_slice()),
    ]
    .into_iter()
    .chain(blobs.iter().map(|b| {
        (
            format!("blobs/sha256/{}", b.digest().hex()),
            b.bytes.as_slice(),
        )
    }))
    .collect();
    for (name, bytes) in data {
        layout::write_entry(&mut f, &name, bytes.len() as u64, 0, &mut &bytes[..]).unwrap();
    }
    f.extend_from_slice(&[0; 1024]);
    fs::write(out, f).unwrap();
    digest
}

/// NAR tokens (`nix-store --dump`'s framing: a length, the bytes, zero padding).
pub fn nar_tokens(ts: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    gapbundle::nixfmt::nar::write_strs(&mut v, ts).unwrap();
    v
}

/// A NAR of one regular file holding `contents`, as `nix-store --dump` writes it.
pub fn file_nar(contents: &[u8]) -> Vec<u8> {
    use gapbundle::nixfmt::nar::MAGIC;
    nar_tokens(&[
        MAGIC,
        b"(",
        b"type",
        b"regular",
        b"contents",
        contents,
        b")",
    ])
}

/// A NAR of a directory with one regular file (holding `x`) per name, in the
/// order given (whatever the names: tests give it ones Nix refuses).
pub fn dir_nar(names: &[&[u8]]) -> Vec<u8> {
    use gapbundle::nixfmt::nar::MAGIC;
    let mut v = nar_tokens(&[MAGIC, b"(", b"type", b"directory"]);
    for n in names {
        v.extend(nar_tokens(&[
            b"entry",
            b"(",
            b"name",
            n,
            b"node",
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"x",
            b")",
            b")",
        ]));
    }
    v.extend(nar_tokens(&[b")"]));
    v
}

/// A signed bundle (named `name`) of one `nix-path` object `path` whose NAR blob is
/// `nar` zstd-compressed, declared (in the blob's `content` and the meta, and so
/// in the path signature) as `declared` (NAR hash and size; the NAR's own when
/// `None`), with `edit` applied to the meta after signing. Returns the store path.
pub fn nix_path_bundle(
    out: &Path,
    key: &SecretKey,
    name: &str,
    path: &str,
    nar: &[u8],
    declared: Option<(gapbundle::nixfmt::NarHash, u64)>,
    edit: impl FnOnce(&mut Value),
) -> gapbundle::nixfmt::StorePath {
    use gapbundle::nixfmt::{fingerprint, sign_path, NarHash, StorePath, NAR_ZSTD_MEDIA_TYPE};
    let blob = zstd::encode_all(nar, 3).unwrap();
    let (nar_hash, nar_size) =
        declared.unwrap_or_else(|| (NarHash::from_digest(&Digest::of(nar)), nar.len() as u64));
    let path = StorePath::parse(path).unwrap();
    let fp = fingerprint(&path, &nar_hash, nar_size, &[]);
    let mut meta = serde_json::json!({
        "narHash": nar_hash.to_nix32_string(),
        "narSize": nar_size,
        "references": [],
        "sigs": [sign_path(key, &fp)],
    });
    edit(&mut meta);
    let stored = Stored {
        bytes: blob,
        fields: serde_json::json!({
            "mediaType": NAR_ZSTD_MEDIA_TYPE, "encoding": "zstd",
            "content": {"digest": nar_hash.digest().to_string(), "size": nar_size},
        }),
    };
    let d = stored.digest().to_string();
    let size = stored.bytes.len();
    forge(
        out,
        key,
        serde_json::json!({
            "name": name, "version": "1",
            "objects": [{
                "kind": "nix-path", "name": path.to_string(), "digest": d,
                "mediaType": NAR_ZSTD_MEDIA_TYPE, "size": size, "blobs": [d],
                "meta": meta,
            }],
        }),
        &[stored],
        |_| {},
    );
    path
}

/// A signed bundle (named `name`) of `nix-path` objects with no references, one per
/// `(path, nar)`, each signed by `key` and its NAR zstd-compressed: many small paths
/// without building any.
pub fn nix_paths_bundle(out: &Path, key: &SecretKey, name: &str, paths: &[(String, Vec<u8>)]) {
    use gapbundle::nixfmt::{fingerprint, sign_path, NarHash, StorePath, NAR_ZSTD_MEDIA_TYPE};
    let mut objects = Vec::new();
    let mut blobs = Vec::new();
    for (path, nar) in paths {
        let (nar_hash, nar_size) = (NarHash::from_digest(&Digest::of(nar)), nar.len() as u64);
        let path = StorePath::parse(path).unwrap();
        let fp = fingerprint(&path, &nar_hash, nar_size, &[]);
        let stored = Stored {
            bytes: zstd::encode_all(&nar[..], 3).unwrap(),
            fields: serde_json::json!({
                "mediaType": NAR_ZSTD_MEDIA_TYPE, "encoding": "zstd",
                "content": {"digest": nar_hash.digest().to_string(), "size": nar_size},
            }),
        };
        let d = stored.digest().to_string();
        objects.push(serde_json::json!({
            "kind": "nix-path", "name": path.to_string(), "digest": d,
            "mediaType": NAR_ZSTD_MEDIA_TYPE, "size": stored.bytes.len(), "blobs": [d],
            "meta": {
                "narHash": nar_hash.to_nix32_string(),
                "narSize": nar_size,
                "references": [],
                "sigs": [sign_path(key, &fp)],
            },
        }));
        blobs.push(stored);
    }
    objects.sort_by_key(|o| o["name"].as_str().unwrap().to_string());
    blobs.sort_by_key(|b| b.digest().to_string());
    forge(
        out,
        key,
        serde_json::json!({"name": name, "version": "1", "objects": objects}),
        &blobs,
        |_| {},
    );
}

/// A stored Kubernetes document: `stored` as the blob's bytes, declared (when
/// zstd-encoded) as `content`.
pub fn doc_blob(stored: Vec<u8>, content: Option<(&[u8], u64)>) -> Stored {
    let fields = match content {
        Some((text, size)) => serde_json::json!({
            "mediaType": "application/yaml", "encoding": "zstd",
            "content": {"digest": Digest::of(text).to_string(), "size": size},
        }),
        None => serde_json::json!({"mediaType": "application/yaml"}),
    };
    Stored {
        bytes: stored,
        fields,
    }
}

/// The `k8s-manifest` object for `blob`, going to `file` as document `order`.
pub fn doc_object(blob: &Stored, file: &str, order: u64) -> Value {
    let d = blob.digest().to_string();
    serde_json::json!({
        "kind": "k8s-manifest", "name": format!("manifests:{file}/ConfigMap/default/doc-{order}"),
        "digest": d, "mediaType": "application/yaml", "size": blob.bytes.len(), "blobs": [d],
        "meta": {
            "source": format!("manifests:{file}"), "file": file, "order": order,
            "apiVersion": "v1", "kind": "ConfigMap", "namespace": "default",
            "name": format!("doc-{order}"), "images": [],
        },
    })
}

/// A signed bundle `name` of the documents `docs`, written to `out`.
pub fn docs_bundle(
    w: &super::Work,
    out: &str,
    name: &str,
    docs: Vec<(Stored, &str)>,
) -> std::path::PathBuf {
    let objects: Vec<Value> = docs
        .iter()
        .enumerate()
        .map(|(i, (b, file))| doc_object(b, file, i as u64))
        .collect();
    let blobs: Vec<Stored> = docs.into_iter().map(|(b, _)| b).collect();
    let path = w.path(out);
    forge(
        &path,
        &w.signing_key(),
        serde_json::json!({"name": name, "version": "1", "objects": objects}),
        &blobs,
        |_| {},
    );
    path
}
