//! Writing a bundle.
//!
//! Writing happens in two steps. [`BundleBuilder::finish`] is pure arithmetic: it
//! orders the blobs, computes every offset and produces the manifest bytes, so the
//! bundle's identity (and its signatures) exist before a single blob is copied.
//! [`write_bundle`] then streams the blobs from wherever they are cached, hashing on
//! the way through each blob the source does not know good (hashed in this run, or
//! in an earlier one with its file unchanged since: `io::cas`), so a cache damaged
//! since an earlier run can never produce a bundle that only fails in the field,
//! and a cold-cache create still hashes every byte only once. Because the
//! offsets are fixed first, a writer with random access needs only
//! [`write_prefix`] and [`Plan::blob_header`] to put the blobs in place in any order
//! (`io::bundle_file` does, in parallel); the bytes are the same.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use super::digest::{Digest, HashingWriter};
use super::layout::{self, entry_len, END_LEN, HEADER_LEN};
use super::manifest::{
    BlobEntry, FileEntry, Manifest, ManifestError, Object, INDEX_PATH, MANIFEST_PATH,
    OCI_LAYOUT_PATH, SIGNATURES_PATH,
};
use super::oci;
use super::signature::Envelope;

/// Where the writer gets blob bytes from.
pub trait BlobSource {
    /// Opens the stored bytes of a blob.
    fn open_blob(&self, digest: &Digest) -> io::Result<Box<dyn Read + Send>>;

    /// Whether the source itself hashed this blob's bytes to its digest and knows
    /// them unchanged since (the cache: in this process, or an earlier one while
    /// the file had the same stamp), so the writer need not hash them again; sizes
    /// are still checked.
    fn known_good(&self, _digest: &Digest) -> bool {
        false
    }
}

/// Why a bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Two objects of the same kind and name disagree.
    #[error("{kind} `{name}` is listed twice with different contents ({a} and {b}); give one of them another name")]
    Conflict {
        /// Object kind.
        kind: String,
        /// Object name.
        name: String,
        /// First digest.
        a: Digest,
        /// Second digest.
        b: Digest,
    },
    /// The same digest was added with two sizes: a bug or a corrupt source.
    #[error("blob {digest} was added with sizes {a} and {b}")]
    SizeConflict {
        /// The digest.
        digest: Digest,
        /// First size.
        a: u64,
        /// Second size.
        b: u64,
    },
    /// A cached blob's bytes do not match its name.
    #[error("cached blob {expected} is damaged (its bytes hash to {found}, {size} bytes): delete it from the cache and run create again")]
    DigestMismatch {
        /// The digest it should have.
        expected: Digest,
        /// The digest it has.
        found: Digest,
        /// Bytes read.
        size: u64,
    },
    /// A blob could not be read.
    #[error("reading blob {digest}: {source}")]
    Source {
        /// The blob.
        digest: Digest,
        /// The I/O error.
        source: io::Error,
    },
    /// Writing the output failed.
    #[error("writing the bundle: {0}")]
    Io(#[from] io::Error),
    /// The manifest could not be encoded.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

impl crate::error::Classify for WriteError {
    /// Writing a bundle fails for the local machine's reasons (a full disk, a
    /// damaged cache).
    fn class(&self) -> Option<crate::error::ErrorClass> {
        Some(crate::error::ErrorClass::Other)
    }
}

/// Collects blobs and objects, then lays them out. Cloned to lay out a draft
/// (`create --sbom` describes the objects before its own object is added).
#[derive(Clone)]
pub struct BundleBuilder {
    name: String,
    version: String,
    created: u64,
    platforms: Vec<String>,
    blobs: BTreeMap<Digest, (u32, BlobEntry)>,
    objects: BTreeMap<(String, String), Object>,
}

/// A laid-out bundle, ready to sign and write.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The manifest with every offset filled in.
    pub manifest: Manifest,
    /// Its canonical bytes.
    pub manifest_bytes: Vec<u8>,
    /// The bundle's identity: sha256 of `manifest_bytes`.
    pub digest: Digest,
    index_json: Vec<u8>,
    oci_layout: Vec<u8>,
}

impl BundleBuilder {
    /// A builder for a bundle named `name` at `version`, dated `created`.
    pub fn new(name: &str, version: &str, created: u64, platforms: Vec<String>) -> Self {
        Self {
            name: name.to_string(),
            version: version.to_string(),
            created,
            platforms,
            blobs: BTreeMap::new(),
            objects: BTreeMap::new(),
        }
    }

    /// Adds a blob (offset is ignored and computed later). Adding a digest twice stores
    /// it once. `rank` orders blobs in the file (lower first, then by digest); it
    /// exists so that importers which need an order (Nix: references first) can read
    /// in one pass.
    pub fn add_blob(&mut self, mut entry: BlobEntry, rank: u32) -> Result<(), WriteError> {
        entry.offset = None;
        if let Some((r, existing)) = self.blobs.get_mut(&entry.digest) {
            if existing.size != entry.size {
                return Err(WriteError::SizeConflict {
                    digest: entry.digest,
                    a: existing.size,
                    b: entry.size,
                });
            }
            *r = (*r).min(rank);
            return Ok(());
        }
        self.blobs.insert(entry.digest, (rank, entry));
        Ok(())
    }

    /// Adds an object. The same object twice is kept once; the same kind and name with
    /// different contents is an error.
    pub fn add_object(&mut self, object: Object) -> Result<(), WriteError> {
        let key = key(&object);
        if let Some(existing) = self.objects.get(&key) {
            if existing.digest != object.digest {
                return Err(WriteError::Conflict {
                    kind: key.0,
                    name: key.1,
                    a: existing.digest,
                    b: object.digest,
                });
            }
            return Ok(());
        }
        self.objects.insert(key, object);
        Ok(())
    }

    /// Orders everything and computes offsets and the manifest.
    pub fn finish(self) -> Result<Plan, WriteError> {
        let (mut manifest, _) = self.into_draft();
        let sizes: BTreeMap<Digest, u64> =
            manifest.blobs.iter().map(|b| (b.digest, b.size)).collect();
        let index_json = oci::index_bytes(&manifest.objects, |o| {
            sizes.get(&o.digest).copied().unwrap_or(0)
        });
        let oci_layout = oci::oci_layout_bytes();

        let mut pos = 0u64;
        let mut place = |size: u64| {
            let offset = pos + HEADER_LEN;
            pos += entry_len(size);
            offset
        };
        manifest.files = vec![
            FileEntry {
                path: OCI_LAYOUT_PATH.into(),
                digest: Digest::of(&oci_layout),
                size: oci_layout.len() as u64,
                offset: place(oci_layout.len() as u64),
            },
            FileEntry {
                path: INDEX_PATH.into(),
                digest: Digest::of(&index_json),
                size: index_json.len() as u64,
                offset: place(index_json.len() as u64),
            },
        ];
        for b in &mut manifest.blobs {
            b.offset = Some(place(b.size));
        }
        manifest.validate()?;
        let manifest_bytes = manifest.to_canonical()?;
        Ok(Plan {
            digest: Digest::of(&manifest_bytes),
            manifest,
            manifest_bytes,
            index_json,
            oci_layout,
        })
    }

    /// Calls `f` with the manifest [`BundleBuilder::finish`] would make of what was
    /// added so far, its objects and blobs in the same order, but without the layout
    /// (no files, no offsets), its check or its canonical bytes: what `create
    /// --sbom` describes before the documents become objects themselves. The
    /// objects and blobs are moved into it and back, never copied: a clone of the
    /// builder, finished, was the peak of a create of 20,000 objects with SBOMs
    /// (the objects twice, the layout and 9 MiB of bytes nothing read).
    pub fn with_draft<T>(&mut self, f: impl FnOnce(&Manifest) -> T) -> T {
        let taken = std::mem::replace(self, BundleBuilder::new("", "", 0, Vec::new()));
        let (draft, ranks) = taken.into_draft();
        let out = f(&draft);
        *self = BundleBuilder {
            blobs: ranks
                .into_iter()
                .zip(draft.blobs)
                .map(|(r, b)| (b.digest, (r, b)))
                .collect(),
            objects: draft.objects.into_iter().map(|o| (key(&o), o)).collect(),
            name: draft.name,
            version: draft.version,
            created: draft.created,
            platforms: draft.platforms,
        };
        out
    }

    /// The manifest of what was added, without its layout: the objects in their
    /// order, the blobs in theirs (by rank, then digest), and each blob's rank.
    fn into_draft(self) -> (Manifest, Vec<u32>) {
        let objects: Vec<Object> = self.objects.into_values().collect();
        let mut ordered: Vec<(u32, BlobEntry)> = self.blobs.into_values().collect();
        ordered.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.digest.cmp(&b.1.digest)));
        let (ranks, blobs) = ordered.into_iter().unzip();
        let manifest = Manifest {
            format_version: Manifest::current_version(),
            name: self.name,
            version: self.version,
            created: self.created,
            generator: concat!("gapbundle ", env!("CARGO_PKG_VERSION")).to_string(),
            platforms: self.platforms,
            files: Vec::new(),
            blobs,
            objects,
            delta: None,
        };
        (manifest, ranks)
    }
}

/// Where the builder keeps an object: by kind, then name (the manifest's order).
fn key(o: &Object) -> (String, String) {
    (o.kind.as_str().to_string(), o.name.clone())
}

impl Plan {
    /// The plan for another manifest with this one's data-section files (a delta of
    /// this bundle, format.md section 10), which already carries its offsets.
    pub fn with_manifest(&self, manifest: Manifest) -> Result<Plan, WriteError> {
        manifest.validate()?;
        if manifest.files != self.manifest.files {
            return Err(WriteError::Manifest(ManifestError::Inconsistent(
                "a manifest written with this plan's files must list them as it does".into(),
            )));
        }
        let manifest_bytes = manifest.to_canonical()?;
        Ok(Plan {
            digest: Digest::of(&manifest_bytes),
            manifest,
            manifest_bytes,
            index_json: self.index_json.clone(),
            oci_layout: self.oci_layout.clone(),
        })
    }

    /// A plan for writing a bundle whose manifest bytes, `oci-layout` and
    /// `index.json` already exist (`patch` writes the full bundle a delta carries).
    /// The manifest must parse from `manifest_bytes`, and the files must be the ones
    /// it lists.
    pub fn from_parts(
        manifest_bytes: Vec<u8>,
        oci_layout: Vec<u8>,
        index_json: Vec<u8>,
    ) -> Result<Plan, WriteError> {
        let manifest = Manifest::parse(&manifest_bytes)?;
        for (f, bytes) in manifest.files.iter().zip([&oci_layout, &index_json]) {
            if f.digest != Digest::of(bytes) || f.size != bytes.len() as u64 {
                return Err(WriteError::Manifest(ManifestError::Inconsistent(format!(
                    "{} is not the file the manifest lists",
                    f.path
                ))));
            }
        }
        Ok(Plan {
            digest: Digest::of(&manifest_bytes),
            manifest,
            manifest_bytes,
            index_json,
            oci_layout,
        })
    }

    /// Bytes the whole bundle file will have with `envelope` as its signatures.
    pub fn file_len(&self, envelope: &Envelope) -> u64 {
        self.data_start(envelope) + self.manifest.data_len() + END_LEN
    }

    /// Where the data section starts with `envelope` as the signatures: blob
    /// offsets count from here.
    pub fn data_start(&self, envelope: &Envelope) -> u64 {
        entry_len(self.manifest_bytes.len() as u64)
            + entry_len(envelope.to_canonical().len() as u64)
    }

    /// The stored blobs, in file order.
    pub fn stored_blobs(&self) -> impl Iterator<Item = &BlobEntry> {
        self.manifest.blobs.iter().filter(|b| b.offset.is_some())
    }

    /// The tar header that precedes a stored blob; it sits at
    /// `data_start + offset - 512`.
    pub fn blob_header(&self, blob: &BlobEntry) -> io::Result<[u8; 512]> {
        layout::header(&blob.path(), blob.size, self.manifest.created)
    }
}

/// Writes everything before the first stored blob's header (the manifest, the
/// signatures, `oci-layout` and `index.json`) and returns the bytes written. A
/// writer with random access can put the blobs in place itself after this; the
/// bytes between them are zeros.
pub fn write_prefix<W: Write>(out: &mut W, plan: &Plan, envelope: &Envelope) -> io::Result<u64> {
    let mtime = plan.manifest.created;
    let mut n = layout::write_entry(
        out,
        MANIFEST_PATH,
        plan.manifest_bytes.len() as u64,
        mtime,
        &mut plan.manifest_bytes.as_slice(),
    )?;
    let env = envelope.to_canonical();
    n += layout::write_entry(
        out,
        SIGNATURES_PATH,
        env.len() as u64,
        mtime,
        &mut env.as_slice(),
    )?;
    for (file, bytes) in plan
        .manifest
        .files
        .iter()
        .zip([&plan.oci_layout, &plan.index_json])
    {
        n += layout::write_entry(out, &file.path, file.size, mtime, &mut bytes.as_slice())?;
    }
    Ok(n)
}

/// Copies one stored blob's bytes from `src` to `out`: as they are when the source
/// hashed them itself in this run (`hashed`, sizes still checked), otherwise hashed
/// on the way and compared with the blob's digest.
pub fn copy_blob_bytes<R: Read, W: Write>(
    src: R,
    out: &mut W,
    blob: &BlobEntry,
    hashed: bool,
) -> Result<(), WriteError> {
    let source_error = |e| WriteError::Source {
        digest: blob.digest,
        source: e,
    };
    let mut src = src.take(blob.size);
    if hashed {
        let size = io::copy(&mut src, out).map_err(source_error)?;
        if size != blob.size {
            return Err(source_error(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the cache gave {size} bytes, {} expected", blob.size),
            )));
        }
    } else {
        let mut hw = HashingWriter::new(&mut *out);
        io::copy(&mut src, &mut hw).map_err(source_error)?;
        let (_, found, size) = hw.finish();
        if found != blob.digest || size != blob.size {
            return Err(WriteError::DigestMismatch {
                expected: blob.digest,
                found,
                size,
            });
        }
    }
    Ok(())
}

/// Writes the bundle to `out` and returns the bytes written. `on_blob` is told the
/// size of each blob as it is copied (for progress).
pub fn write_bundle<W: Write>(
    out: W,
    plan: &Plan,
    envelope: &Envelope,
    source: &dyn BlobSource,
    mut on_blob: impl FnMut(&BlobEntry),
) -> Result<u64, WriteError> {
    let mut out = io::BufWriter::with_capacity(1 << 20, out);
    let mut n = write_prefix(&mut out, plan, envelope)?;
    for blob in plan.stored_blobs() {
        out.write_all(&plan.blob_header(blob)?)?;
        let src = source
            .open_blob(&blob.digest)
            .map_err(|e| WriteError::Source {
                digest: blob.digest,
                source: e,
            })?;
        copy_blob_bytes(src, &mut out, blob, source.known_good(&blob.digest))?;
        layout::write_padding(&mut out, blob.size)?;
        n += entry_len(blob.size);
        on_blob(blob);
    }
    out.write_all(&[0u8; END_LEN as usize])?;
    out.flush()?;
    Ok(n + END_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::manifest::Kind;

    /// An object of one 1-byte text blob `d`.
    fn one_blob_object(kind: Kind, name: &str, d: Digest) -> Object {
        Object {
            kind,
            name: name.into(),
            digest: d,
            media_type: "text/plain".into(),
            size: 1,
            blobs: vec![d],
            meta: Default::default(),
        }
    }

    #[test]
    fn a_draft_is_the_finished_manifest_without_its_layout_and_leaves_the_builder_as_it_was() {
        let mut b = BundleBuilder::new("n", "1", 7, vec!["linux/amd64".into()]);
        for (i, rank) in [(0u8, 3u32), (1, 0), (2, 3), (3, 1)] {
            let d = Digest::of(&[i]);
            b.add_blob(BlobEntry::new(d, 1, "text/plain"), rank)
                .unwrap();
            b.add_object(one_blob_object(Kind::Spec, &format!("o{}", 3 - i), d))
                .unwrap();
        }
        let untouched = b.clone().finish().unwrap();
        let draft = b.with_draft(|m| m.clone());
        let mut laid_out = untouched.manifest.clone();
        laid_out.files.clear();
        for blob in &mut laid_out.blobs {
            blob.offset = None;
        }
        assert_eq!(draft, laid_out);
        let after = b.finish().unwrap();
        assert_eq!(after.manifest_bytes, untouched.manifest_bytes);
    }

    #[test]
    fn objects_are_sorted_by_kind_then_name_as_format_md_says() {
        let d = Digest::of(b"x");
        let mut b = BundleBuilder::new("n", "1", 0, vec!["all".into()]);
        b.add_blob(BlobEntry::new(d, 1, "text/plain"), 0).unwrap();
        for (kind, name) in [
            (Kind::Spec, "a:1"),
            (Kind::Spec, "a/b:1"),
            (Kind::Lock, "a"),
            (Kind::Other("alpha".into()), "z"),
        ] {
            b.add_object(one_blob_object(kind, name, d)).unwrap();
        }
        let plan = b.finish().unwrap();
        let order: Vec<(&str, &str)> = plan
            .manifest
            .objects
            .iter()
            .map(|o| (o.kind.as_str(), o.name.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                ("alpha", "z"),
                ("lock", "a"),
                ("spec", "a/b:1"),
                ("spec", "a:1")
            ]
        );
    }
}
