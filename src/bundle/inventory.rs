//! The inventory of a target (format.md section 10.4), pure: what a site already
//! holds, written by `gapbundle inventory` on the offline side and read by
//! `create --against` on the online side, so that a delta leaves out exactly that.
//!
//! It must travel back across the gap, often on the same small medium the bundles
//! come on, so it holds no more than a delta needs to decide: blob digests (the
//! containerd content store, the fleet registry's repositories), valid Nix paths
//! with their NAR hashes, and the bundles seen there. It is canonical JSON, so its
//! digest (what a delta names as its base) is well defined, compressed with zstd,
//! which takes the hex of the digests most of the way to their binary size (the
//! measured sizes are in format.md). A site key may sign it; the signature covers
//! the digest with its own domain prefix, so it can never pass for a bundle's.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::canonical;
use super::digest::Digest;
use super::keys::{PublicKey, SecretKey};
use super::meta::Extra;
use super::signature::{Domain, Envelope, TrustError};
use crate::nixfmt::{NarHash, StorePath};

/// Major version of the inventory document this code reads and writes.
pub const INVENTORY_MAJOR: u64 = 1;
/// Largest inventory (decompressed) a reader accepts: an inventory comes from a
/// site and is not trusted to be small.
pub const MAX_INVENTORY: u64 = 256 << 20;
/// zstd level of written inventories.
const LEVEL: i32 = 19;

/// What one target holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// `1.0`.
    pub format_version: String,
    /// The site's name (`--site`, else the host name).
    pub site: String,
    /// When it was taken: seconds since the epoch (`SOURCE_DATE_EPOCH`, else now).
    pub created: u64,
    /// The program that wrote it.
    pub generator: String,
    /// A containerd's content store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containerd: Option<ContainerdHoldings>,
    /// A Nix store or binary cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nix: Option<NixHoldings>,
    /// A fleet registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryHoldings>,
    /// Bundles known to have been imported there, sorted.
    #[serde(default)]
    pub bundles: Vec<BundleSeen>,
    /// Fields of a newer minor version, kept as they were.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The blobs of a containerd namespace's content store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerdHoldings {
    /// The socket it was read from.
    pub socket: String,
    /// The namespace.
    pub namespace: String,
    /// Committed content, by digest.
    pub blobs: BTreeSet<Digest>,
}

/// The valid paths of a Nix store or binary cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NixHoldings {
    /// The store (`local`, `local?root=/mnt`, `file:///srv/cache`).
    pub store: String,
    /// Each valid path with its NAR hash (`sha256:<nix32>`).
    #[serde(with = "paths")]
    pub paths: BTreeMap<StorePath, NarHash>,
}

/// The blobs of a fleet registry, per repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryHoldings {
    /// `HOST[:PORT]`.
    pub host: String,
    /// Repository -> the manifests, configs and layers its tags reach.
    pub repositories: BTreeMap<String, BTreeSet<Digest>>,
}

/// A bundle seen on the target.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BundleSeen {
    /// Where it was seen: `k3s-manifests` (a folder of K3s's auto-deploy folder),
    /// `k3s-staged` (an image archive in `agent/images`); import receipts add more.
    pub seen_in: String,
    /// Its name (as the folder or file is named).
    pub name: String,
    /// Its bundle digest, when what was seen records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// Its version, when what was seen records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// An inventory file: the document and, optionally, a site key's signatures.
#[derive(Debug, Clone)]
pub struct InventoryFile {
    /// The document.
    pub inventory: Inventory,
    /// sha256 of its canonical JSON: what a delta names as its base.
    pub digest: Digest,
    /// Signatures over `gapbundle-inventory-v1;<digest>` (empty when unsigned).
    pub envelope: Envelope,
}

/// Why an inventory file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// Not zstd-compressed JSON, nor JSON.
    #[error("not an inventory: {0}")]
    NotAnInventory(String),
    /// Larger than a reader accepts.
    #[error("the inventory is larger than {MAX_INVENTORY} bytes once decompressed")]
    TooLarge,
    /// A newer, incompatible inventory.
    #[error("inventory format version {0} is not supported: this gapbundle reads {INVENTORY_MAJOR}.x; upgrade gapbundle")]
    UnsupportedVersion(String),
    /// A field is missing or malformed.
    #[error("the inventory is malformed: {0}")]
    Malformed(String),
    /// The signature check failed.
    #[error("the inventory's signature: {0}")]
    Trust(#[from] TrustError),
}

impl crate::error::Classify for InventoryError {
    /// An inventory is an input file given to `create --against`: one that cannot
    /// be read is bad input; one whose signature fails decides as a trust failure
    /// (its cause).
    fn class(&self) -> Option<crate::error::ErrorClass> {
        match self {
            InventoryError::Trust(_) => None,
            _ => Some(crate::error::ErrorClass::Input),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Wire {
    inventory: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signatures: Option<Envelope>,
}

impl Inventory {
    /// A new, empty inventory of `site`.
    pub fn new(site: &str, created: u64) -> Self {
        Inventory {
            format_version: format!("{INVENTORY_MAJOR}.0"),
            site: site.to_string(),
            created,
            generator: concat!("gapbundle ", env!("CARGO_PKG_VERSION")).to_string(),
            containerd: None,
            nix: None,
            registry: None,
            bundles: Vec::new(),
            extra: Extra::new(),
        }
    }

    /// Canonical bytes of the document (`bundles` sorted).
    pub fn to_canonical(&self) -> Vec<u8> {
        canonical::to_vec(&self.normalised()).expect("an inventory has no floats")
    }

    fn normalised(&self) -> Inventory {
        let mut doc = self.clone();
        doc.bundles.sort();
        doc.bundles.dedup();
        doc
    }

    /// Its digest.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_canonical())
    }

    /// The file bytes: zstd of the canonical JSON of `{"inventory", "signatures"}`,
    /// signed by `keys` (none: unsigned, no `signatures`).
    pub fn to_file(&self, keys: &[SecretKey]) -> std::io::Result<Vec<u8>> {
        let doc = self.normalised();
        let wire = Wire {
            inventory: serde_json::to_value(&doc).expect("serializes"),
            signatures: (!keys.is_empty())
                .then(|| Envelope::sign_for(Domain::Inventory, doc.digest(), keys)),
        };
        let json = canonical::to_vec(&wire).expect("no floats");
        zstd::bulk::compress(&json, LEVEL)
    }
}

impl InventoryFile {
    /// Parses an inventory file: zstd-compressed (one or more frames) or plain JSON.
    pub fn parse(bytes: &[u8]) -> Result<Self, InventoryError> {
        let json = if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(bytes)
                .map_err(|e| InventoryError::NotAnInventory(e.to_string()))?
                .take(MAX_INVENTORY + 1)
                .read_to_end(&mut out)
                .map_err(|e| InventoryError::NotAnInventory(format!("bad zstd data: {e}")))?;
            if out.len() as u64 > MAX_INVENTORY {
                return Err(InventoryError::TooLarge);
            }
            out
        } else if bytes.first() == Some(&b'{') {
            if bytes.len() as u64 > MAX_INVENTORY {
                return Err(InventoryError::TooLarge);
            }
            bytes.to_vec()
        } else {
            return Err(InventoryError::NotAnInventory(
                "it is neither zstd data nor JSON".into(),
            ));
        };
        let wire: Wire = serde_json::from_slice(&json)
            .map_err(|e| InventoryError::NotAnInventory(e.to_string()))?;
        let version = wire
            .inventory
            .get("formatVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| InventoryError::Malformed("missing formatVersion".into()))?;
        if version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u64>().ok())
            != Some(INVENTORY_MAJOR)
        {
            return Err(InventoryError::UnsupportedVersion(version.to_string()));
        }
        let digest = Digest::of(
            &canonical::to_vec(&wire.inventory)
                .map_err(|e| InventoryError::Malformed(e.to_string()))?,
        );
        let inventory: Inventory = serde_path_to_error::deserialize(wire.inventory)
            .map_err(|e| InventoryError::Malformed(e.to_string()))?;
        let envelope = wire
            .signatures
            .unwrap_or_else(|| Envelope::sign_for(Domain::Inventory, digest, &[]));
        Ok(InventoryFile {
            inventory,
            digest,
            envelope,
        })
    }

    /// Whether any key claims to have signed it.
    pub fn is_signed(&self) -> bool {
        !self.envelope.signatures.is_empty()
    }

    /// Checks that a key of `trusted` signed it; returns the keys that did.
    pub fn check(&self, trusted: &[PublicKey]) -> Result<Vec<PublicKey>, InventoryError> {
        Ok(self
            .envelope
            .check_for(Domain::Inventory, &self.digest, trusted, 1)?)
    }
}

/// The NAR hashes of valid paths, as a map of strings.
mod paths {
    use super::*;
    use serde::de::Error;

    pub fn serialize<S: serde::Serializer>(
        m: &BTreeMap<StorePath, NarHash>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|(p, h)| (p.as_str(), h.to_nix32_string())))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<StorePath, NarHash>, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        raw.iter()
            .map(|(p, h)| {
                let path = StorePath::parse(p).map_err(D::Error::custom)?;
                let hash = NarHash::parse(h).map_err(D::Error::custom)?;
                Ok((path, hash))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nixfmt::nix32;

    fn key() -> SecretKey {
        SecretKey::from_seed("site-a", [4; 32]).unwrap()
    }

    fn store_path(i: u64) -> StorePath {
        let hash: String = nix32::encode(Digest::of(&i.to_le_bytes()).as_bytes())[..32].into();
        StorePath::parse(&format!("/nix/store/{hash}-pkg-{i}-1.2.3")).unwrap()
    }

    #[test]
    fn round_trips_signed_and_refuses_an_edit() {
        let mut inv = Inventory::new("site-a", 5);
        inv.containerd = Some(ContainerdHoldings {
            socket: "/run/k3s/containerd/containerd.sock".into(),
            namespace: "k8s.io".into(),
            blobs: [Digest::of(b"layer")].into(),
        });
        inv.nix = Some(NixHoldings {
            store: "local".into(),
            paths: [(store_path(1), NarHash::from_digest(&Digest::of(b"nar")))].into(),
        });
        let bytes = inv.to_file(&[key()]).unwrap();
        let f = InventoryFile::parse(&bytes).unwrap();
        assert_eq!(f.inventory, inv);
        assert_eq!(f.digest, inv.digest());
        assert_eq!(f.check(&[key().public()]).unwrap().len(), 1);
        // An inventory signature is not a bundle signature, nor the other way round.
        assert!(f.envelope.check(&f.digest, &[key().public()], 1).is_err());

        // An edited document (plain JSON, hand-made) no longer verifies.
        let mut json = Vec::new();
        zstd::stream::read::Decoder::new(bytes.as_slice())
            .unwrap()
            .read_to_end(&mut json)
            .unwrap();
        let mut v: Value = serde_json::from_slice(&json).unwrap();
        v["inventory"]["site"] = "site-b".into();
        let edited = InventoryFile::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(matches!(
            edited.check(&[key().public()]),
            Err(InventoryError::Trust(TrustError::WrongManifest { .. }))
        ));
        v["inventory"]["formatVersion"] = "2.0".into();
        assert!(matches!(
            InventoryFile::parse(&serde_json::to_vec(&v).unwrap()),
            Err(InventoryError::UnsupportedVersion(_))
        ));
        v["inventory"]["formatVersion"] = "1.0".into();
        v["inventory"]["nix"]["paths"] = serde_json::json!({"/etc/passwd": "sha256:x"});
        let e = InventoryFile::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.to_string().contains("nix.paths"), "{e}");
        assert!(InventoryFile::parse(b"\x7fELF").is_err());
    }

    /// The size format.md gives for a large site: 500 images of 10 layers each
    /// (5,000 layers, with a manifest and a config each) in containerd and 20,000
    /// valid Nix paths. Prints the sizes; fails if the file grows past 2 MiB.
    #[test]
    fn an_inventory_of_a_large_site_stays_small() {
        let mut inv = Inventory::new("site-a", 1_700_000_000);
        let mut blobs = BTreeSet::new();
        for i in 0u64..6_000 {
            blobs.insert(Digest::of(&i.to_be_bytes()));
        }
        inv.containerd = Some(ContainerdHoldings {
            socket: "/run/k3s/containerd/containerd.sock".into(),
            namespace: "k8s.io".into(),
            blobs,
        });
        inv.nix = Some(NixHoldings {
            store: "local".into(),
            paths: (0u64..20_000)
                .map(|i| {
                    let h = NarHash::from_digest(&Digest::of(&((i + 1) << 32).to_be_bytes()));
                    (store_path(i), h)
                })
                .collect(),
        });
        let json = inv.to_canonical().len();
        let file = inv.to_file(&[key()]).unwrap().len();
        eprintln!("inventory of 6,000 blobs and 20,000 Nix paths: {json} bytes of JSON, {file} bytes compressed");
        assert!(file < 2 << 20, "{file} bytes");
    }
}
