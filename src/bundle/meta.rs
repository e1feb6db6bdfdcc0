//! Typed object metadata: what `meta` holds for each kind (format.md sections 5,
//! 13.2, 13.4, 14.2 and 15).
//!
//! Every reader of a bundle (the importers, `inspect`) and every writer (the
//! resolvers, `create`) needs the same few fields, and each used to read or write
//! them by hand from a map of JSON values, each with its own idea of a missing or
//! mistyped field. Here each kind has one struct, and [`Meta`] is an enum over them,
//! not a map with typed accessors: a manifest is typed once, when it is parsed
//! ([`super::manifest::Manifest::parse`]), so a field that is missing, of the wrong
//! type or malformed (a store path, a NAR hash) is an error there, naming the object
//! and the field, and no reader after that has a `Result` or a default to invent.
//! The kind and the variant must agree; [`super::manifest::Manifest::validate`]
//! checks that for manifests made in code too.
//!
//! Minor format versions only add fields. Each struct keeps the fields it does not
//! know in `extra`, so a manifest of a newer minor version parses and writes back
//! byte for byte (canonical JSON sorts keys; the tests check the round trip). Fields
//! that the format marks optional are `Option`s, so that "absent" and "empty" stay
//! apart and round-trip as they were written. Kinds without a typed meta (`spec`,
//! `lock`, kinds of a newer version) keep theirs as it is, [`Meta::Untyped`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::digest::Digest;
use super::manifest::{BlobEntry, Encoding, Kind};
use crate::nixfmt::{valid_root_name, NarHash, StorePath, NAR_ZSTD_MEDIA_TYPE};

/// Fields a struct does not know (from a newer minor version), kept as they were.
pub type Extra = BTreeMap<String, Value>;

/// The metadata of one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Meta {
    /// Of an `image`.
    Image(ImageMeta),
    /// Of a `nix-path`.
    NixPath(NixPathMeta),
    /// Of a `k8s-manifest`.
    K8sManifest(K8sManifestMeta),
    /// Of a `chart`.
    Chart(ChartMeta),
    /// Of a `file`.
    File(FileMeta),
    /// Of a `referrer`.
    Referrer(ReferrerMeta),
    /// Of a kind with no typed meta (`spec`, `lock`, a kind of a newer version), or
    /// of any object before [`Meta::typed`] ran: the fields as they were written.
    Untyped(Extra),
}

impl Default for Meta {
    fn default() -> Self {
        Meta::Untyped(Extra::new())
    }
}

/// A field of an object's meta that is missing, of the wrong type or malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaError {
    /// The field, from the object: `meta.narSize`, `meta.references[2]`, `meta`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for MetaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

impl Meta {
    /// The typed meta of an object of `kind`, from the fields as written. Kinds
    /// without a typed meta keep them as they are.
    pub fn typed(kind: &Kind, fields: Extra) -> Result<Meta, MetaError> {
        fn parse<T: serde::de::DeserializeOwned>(fields: Extra) -> Result<T, MetaError> {
            let value = Value::Object(fields.into_iter().collect());
            serde_path_to_error::deserialize(value).map_err(|e| {
                let path = e.path().to_string();
                MetaError {
                    field: if path == "." {
                        "meta".into()
                    } else {
                        format!("meta.{path}")
                    },
                    problem: e.into_inner().to_string(),
                }
            })
        }
        Ok(match kind {
            Kind::Image => Meta::Image(parse(fields)?),
            Kind::NixPath => Meta::NixPath(parse(fields)?),
            Kind::K8sManifest => Meta::K8sManifest(parse(fields)?),
            Kind::Chart => Meta::Chart(parse(fields)?),
            Kind::File => Meta::File(parse(fields)?),
            Kind::Referrer => Meta::Referrer(parse(fields)?),
            Kind::Spec | Kind::Lock | Kind::Sbom | Kind::Other(_) => Meta::Untyped(fields),
        })
    }

    /// Whether objects of `kind` have a typed meta.
    pub fn has_typed(kind: &Kind) -> bool {
        matches!(
            kind,
            Kind::Image
                | Kind::NixPath
                | Kind::K8sManifest
                | Kind::Chart
                | Kind::File
                | Kind::Referrer
        )
    }

    /// The kind a typed meta belongs to (`None` for [`Meta::Untyped`]).
    pub fn kind(&self) -> Option<Kind> {
        match self {
            Meta::Image(_) => Some(Kind::Image),
            Meta::NixPath(_) => Some(Kind::NixPath),
            Meta::K8sManifest(_) => Some(Kind::K8sManifest),
            Meta::Chart(_) => Some(Kind::Chart),
            Meta::File(_) => Some(Kind::File),
            Meta::Referrer(_) => Some(Kind::Referrer),
            Meta::Untyped(_) => None,
        }
    }

    /// Whether it is written at all (an untyped meta with no fields is left out).
    pub fn is_empty(&self) -> bool {
        matches!(self, Meta::Untyped(m) if m.is_empty())
    }

    /// The image meta, for an `image` object.
    pub fn image(&self) -> Option<&ImageMeta> {
        match self {
            Meta::Image(m) => Some(m),
            _ => None,
        }
    }

    /// The Nix path meta, for a `nix-path` object.
    pub fn nix_path(&self) -> Option<&NixPathMeta> {
        match self {
            Meta::NixPath(m) => Some(m),
            _ => None,
        }
    }

    /// The document meta, for a `k8s-manifest` object.
    pub fn k8s_manifest(&self) -> Option<&K8sManifestMeta> {
        match self {
            Meta::K8sManifest(m) => Some(m),
            _ => None,
        }
    }

    /// The chart meta, for a `chart` object.
    pub fn chart(&self) -> Option<&ChartMeta> {
        match self {
            Meta::Chart(m) => Some(m),
            _ => None,
        }
    }

    /// The file meta, for a `file` object.
    pub fn file(&self) -> Option<&FileMeta> {
        match self {
            Meta::File(m) => Some(m),
            _ => None,
        }
    }

    /// The referrer meta, for a `referrer` object.
    pub fn referrer(&self) -> Option<&ReferrerMeta> {
        match self {
            Meta::Referrer(m) => Some(m),
            _ => None,
        }
    }

    /// The meta as JSON, as the manifest writes it.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("metadata serializes")
    }
}

impl Serialize for Meta {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Meta::Image(m) => m.serialize(s),
            Meta::NixPath(m) => m.serialize(s),
            Meta::K8sManifest(m) => m.serialize(s),
            Meta::Chart(m) => m.serialize(s),
            Meta::File(m) => m.serialize(s),
            Meta::Referrer(m) => m.serialize(s),
            Meta::Untyped(m) => m.serialize(s),
        }
    }
}

/// Reads the fields as written ([`Meta::Untyped`]): which struct applies depends
/// on the object's `kind`, a sibling field, so [`Meta::typed`] is applied once the
/// object is read (by `Manifest::parse`).
impl<'de> Deserialize<'de> for Meta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Extra::deserialize(d).map(Meta::Untyped)
    }
}

/// `meta` of an `image` object (format.md section 5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageMeta {
    /// The platforms present (the index may name more: a sparse index).
    pub platforms: Vec<String>,
    /// The spec entry's lock key.
    pub source: String,
    /// The documents that run it (section 13.3), when any do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wanted_by: Option<Vec<String>>,
    /// Fields of a newer minor version.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ImageMeta {
    /// The documents that run the image (empty when none do).
    pub fn wanted_by(&self) -> &[String] {
        self.wanted_by.as_deref().unwrap_or_default()
    }
}

/// `meta` of a `referrer` object (format.md section 18).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerMeta {
    /// The root digest of the image it refers to.
    pub subject: Digest,
    /// The artifact type the registry listed it with (its `artifactType`, else its
    /// config's media type), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// The cosign tag it was found under (`sha256-<hex>.sig`, `.att`, `.sbom`);
    /// absent for a manifest that names the image as its `subject`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Fields of a newer minor version.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `meta` of a `nix-path` object (format.md section 14.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NixPathMeta {
    /// The NAR hash; the root blob's `content.digest` is the same 32 bytes.
    #[serde(with = "nar_hash")]
    pub nar_hash: NarHash,
    /// The NAR size; the root blob's `content.size`.
    pub nar_size: u64,
    /// The paths it references, sorted, itself included when it refers to itself.
    #[serde(with = "store_paths")]
    pub references: Vec<StorePath>,
    /// The derivation that built it.
    #[serde(
        default,
        with = "opt_store_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub deriver: Option<StorePath>,
    /// Its content address, as Nix writes it.
    #[serde(
        default,
        deserialize_with = "opt_ca",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca: Option<String>,
    /// Nix path signatures (`<key name>:<base64>`), sorted.
    #[serde(deserialize_with = "path_signatures")]
    pub sigs: Vec<String>,
    /// GC root names an importer creates for it.
    #[serde(
        default,
        deserialize_with = "gc_roots",
        skip_serializing_if = "Option::is_none"
    )]
    pub gc_roots: Option<Vec<String>>,
    /// Set on the one path that is a NixOS system toplevel the importer activates,
    /// and how (format.md section 14.8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activate: Option<Activation>,
    /// Fields of a newer minor version.
    #[serde(flatten)]
    pub extra: Extra,
}

/// How a NixOS system toplevel is activated on import: the action handed to its
/// `bin/switch-to-configuration`, as `nixos-rebuild` names them (format.md 14.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// A new generation of the system profile, made the boot default and started now.
    Switch,
    /// A new generation of the system profile, made the boot default; started at
    /// the next boot.
    Boot,
    /// Started now, without a new generation: the next boot starts the profile's
    /// generation as before.
    Test,
}

impl Activation {
    /// The action as `switch-to-configuration` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Activation::Switch => "switch",
            Activation::Boot => "boot",
            Activation::Test => "test",
        }
    }

    /// Whether it makes a new generation of the system profile (`switch`, `boot`);
    /// `test` does not, as with `nixos-rebuild test`.
    pub fn makes_generation(self) -> bool {
        !matches!(self, Activation::Test)
    }
}

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl NixPathMeta {
    /// The GC root names (empty when there are none).
    pub fn gc_roots(&self) -> &[String] {
        self.gc_roots.as_deref().unwrap_or_default()
    }

    /// Checks the root blob against the metadata: a zstd NAR blob whose content is
    /// the NAR hash and size (section 14.2).
    pub fn check_blob(&self, blob: &BlobEntry) -> Result<(), String> {
        let content_ok = blob.media_type == NAR_ZSTD_MEDIA_TYPE
            && blob.encoding == Some(Encoding::Zstd)
            && blob
                .content
                .as_ref()
                .is_some_and(|c| c.digest == self.nar_hash.digest() && c.size == self.nar_size);
        if content_ok {
            return Ok(());
        }
        Err(format!(
            "its blob {} is not a zstd NAR with hash {} and size {} (the metadata says one NAR, the blob another)",
            blob.digest, self.nar_hash, self.nar_size
        ))
    }
}

/// `meta` of a `k8s-manifest` object (format.md section 13.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct K8sManifestMeta {
    /// The source it was rendered from (section 13.1).
    pub source: String,
    /// The file it goes to on the target.
    pub file: String,
    /// Its index among the documents of that file, from 0.
    pub order: u64,
    /// As in the document.
    pub api_version: String,
    /// As in the document.
    pub kind: String,
    /// Its namespace; absent for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.name` (or `metadata.generateName`).
    pub name: String,
    /// The images the document runs.
    pub images: Vec<String>,
    /// Fields of a newer minor version.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `meta` of a `chart` object (format.md section 13.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartMeta {
    /// The name in its Chart.yaml.
    pub chart: String,
    /// The exact version pulled.
    pub version: String,
    /// The archive's digest, the object's own.
    pub digest: Digest,
    /// The lock key (section 13.5).
    pub source: String,
    /// Fields of a newer minor version.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Media type of a `file` object's blob: the file's bytes as they are.
pub const FILE_MEDIA_TYPE: &str = "application/vnd.gapbundle.file.v1";

/// Longest target path (Linux's `PATH_MAX`, the terminating NUL included).
const MAX_TARGET: usize = 4095;
/// Longest component of a target path (Linux's `NAME_MAX`).
const MAX_COMPONENT: usize = 255;

/// `meta` of a `file` object (format.md section 15). The object's name is the
/// absolute path it is installed at ([`target_components`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileMeta {
    /// Permission bits as four octal digits (`0644`, `0755`); no setuid, setgid
    /// or sticky bit.
    #[serde(deserialize_with = "file_mode")]
    pub mode: String,
    /// The spec entry it came from: `path:<file or folder>`, `url:<URL>`,
    /// `installable:<installable>`.
    pub source: String,
    /// Fields of a newer minor version.
    #[serde(flatten)]
    pub extra: Extra,
}

impl FileMeta {
    /// The permission bits.
    pub fn mode_bits(&self) -> u32 {
        u32::from_str_radix(&self.mode, 8).expect("checked when parsed")
    }

    /// `mode` as the meta writes it.
    pub fn mode_string(bits: u32) -> String {
        format!("{:04o}", bits & 0o777)
    }
}

/// The components of a `file` object's target path, or why it is not one: an
/// absolute path (`/` first) other than `/` itself, of components that are not
/// empty, `.` or `..`, hold no control character (NUL included), at most 255 bytes
/// each and 4095 in all, without a trailing `/`. An importer refuses a bundle with
/// any other target before it writes anything (format.md section 15).
pub fn target_components(path: &str) -> Result<Vec<&str>, String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("`{}` is not an absolute path", path.escape_debug()));
    };
    if path.len() > MAX_TARGET {
        return Err(format!(
            "is {} bytes long, more than {MAX_TARGET}",
            path.len()
        ));
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return Err(format!(
            "`{}` holds the control character {c:?}",
            path.escape_debug()
        ));
    }
    let parts: Vec<&str> = rest.split('/').collect();
    for p in &parts {
        match *p {
            "" => {
                return Err(format!(
                    "`{path}` has an empty component (`//`, a trailing `/`, or `/` alone)"
                ))
            }
            "." | ".." => return Err(format!("`{path}` has a `{p}` component")),
            p if p.len() > MAX_COMPONENT => {
                return Err(format!(
                    "`{path}` has a component of {} bytes, more than {MAX_COMPONENT}",
                    p.len()
                ))
            }
            _ => {}
        }
    }
    Ok(parts)
}

fn file_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let ok = s.len() == 4 && s.starts_with('0') && s.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if ok {
        Ok(s)
    } else {
        Err(invalid(format!(
            "`{}` is not a file mode of four octal digits without setuid, setgid or sticky bit (0644, 0755)",
            s.escape_debug()
        )))
    }
}

fn invalid<E: serde::de::Error>(what: impl std::fmt::Display) -> E {
    E::custom(what)
}

/// `sha256:<52 nix32 characters>`, exactly (section 14.1): other spellings Nix
/// accepts elsewhere would not write back as they were read.
mod nar_hash {
    use super::*;

    pub fn serialize<S: serde::Serializer>(h: &NarHash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&h.to_nix32_string())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<NarHash, D::Error> {
        let s = String::deserialize(d)?;
        match NarHash::parse(&s) {
            Ok(h) if h.to_nix32_string() == s => Ok(h),
            _ => Err(invalid(format!(
                "`{s}` is not a Nix hash (sha256:<52 nix32 characters>)"
            ))),
        }
    }
}

fn store_path<E: serde::de::Error>(s: &str) -> Result<StorePath, E> {
    StorePath::parse(s).map_err(invalid)
}

mod store_paths {
    use super::*;

    pub fn serialize<S: serde::Serializer>(v: &[StorePath], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(StorePath::as_str))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<StorePath>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter().map(|p| store_path(p)).collect()
    }
}

mod opt_store_path {
    use super::*;

    pub fn serialize<S: serde::Serializer>(p: &Option<StorePath>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => s.serialize_str(p.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<StorePath>, D::Error> {
        String::deserialize(d)
            .and_then(|p| store_path(&p))
            .map(Some)
    }
}

/// A content address as Nix writes one ([`crate::nixfmt::validate_ca`]): it
/// becomes the `CA:` line of a narinfo, so nothing else (a line break adding a
/// line of its own) may pass.
fn opt_ca<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    crate::nixfmt::validate_ca(&s).map_err(|e| invalid(e.to_string()))?;
    Ok(Some(s))
}

/// Path signatures as Nix writes them ([`crate::nixfmt::validate_path_signature`]):
/// each becomes a `Sig:` line of a narinfo.
fn path_signatures<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let sigs = Vec::<String>::deserialize(d)?;
    for s in &sigs {
        crate::nixfmt::validate_path_signature(s).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(sigs)
}

fn gc_roots<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    match v.iter().find(|r| !valid_root_name(r)) {
        Some(r) => Err(invalid(format!(
            "GC root name `{r}` is not a plain file name"
        ))),
        None => Ok(Some(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::canonical;

    const PATH: &str = "/nix/store/094qif9n4cq4fdg459qzbhg1c6wywaww-a";
    const HASH: &str = "sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic";
    /// A content address and a path signature of the grammars Nix writes.
    const CA: &str = "fixed:r:sha256:094qif9n4cq4fdg459qzbhg1c6wywawwaaivx0k0x8xhbyx4vwic";
    const SIG: &str = "k:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";

    fn fields(json: &str) -> Extra {
        serde_json::from_str(json).unwrap()
    }

    /// Canonical JSON in, typed, canonical JSON out: the same bytes.
    fn round_trip(kind: Kind, json: &str) -> Meta {
        let meta = Meta::typed(&kind, fields(json)).unwrap();
        assert_eq!(meta.kind(), Some(kind));
        let back = canonical::to_vec(&meta).unwrap();
        assert_eq!(String::from_utf8(back).unwrap(), json);
        meta
    }

    #[test]
    fn every_kind_round_trips_byte_for_byte_with_unknown_fields() {
        let m = round_trip(
            Kind::Image,
            r#"{"platforms":["linux/amd64"],"source":"registry:r/a:1","wantedBy":["chart:web Deployment apps/web"],"x-newer":{"k":[1,2]}}"#,
        );
        let i = m.image().unwrap();
        assert_eq!(i.wanted_by(), ["chart:web Deployment apps/web"]);
        assert_eq!(i.extra["x-newer"], serde_json::json!({"k": [1, 2]}));
        round_trip(Kind::Image, r#"{"platforms":[],"source":"s"}"#);
        let nix = format!(
            r#"{{"ca":"{CA}","deriver":"{PATH}.drv","gcRoots":["app"],"narHash":"{HASH}","narSize":120,"newField":true,"references":["{PATH}"],"sigs":[]}}"#
        );
        let m = round_trip(Kind::NixPath, &nix);
        let n = m.nix_path().unwrap();
        assert_eq!(n.nar_size, 120);
        assert_eq!(n.references[0].as_str(), PATH);
        assert_eq!(n.gc_roots(), ["app"]);
        // Absent and empty stay apart.
        round_trip(
            Kind::NixPath,
            &format!(
                r#"{{"gcRoots":[],"narHash":"{HASH}","narSize":0,"references":[],"sigs":["{SIG}"]}}"#
            ),
        );
        round_trip(
            Kind::K8sManifest,
            r#"{"apiVersion":"apps/v1","file":"chart-web.yaml","images":["r/a:1"],"kind":"Deployment","name":"web","namespace":"apps","order":3,"source":"chart:web","zz":null}"#,
        );
        round_trip(
            Kind::K8sManifest,
            r#"{"apiVersion":"v1","file":"f.yaml","images":[],"kind":"Namespace","name":"apps","order":0,"source":"manifests:f.yaml"}"#,
        );
        round_trip(
            Kind::Chart,
            &format!(
                r#"{{"chart":"web","digest":"{}","source":"oci:oci://r/web@0.1.0","version":"0.1.0"}}"#,
                Digest::of(b"x")
            ),
        );
        let m = round_trip(
            Kind::File,
            r#"{"mode":"0755","newer":1,"source":"path:dist/k3s"}"#,
        );
        assert_eq!(m.file().unwrap().mode_bits(), 0o755);
        // Kinds without typed meta keep theirs as written.
        let m = Meta::typed(&Kind::Other("attestation".into()), fields(r#"{"a":1}"#)).unwrap();
        assert_eq!(m, Meta::Untyped(fields(r#"{"a":1}"#)));
        assert!(Meta::typed(&Kind::Spec, Extra::new()).unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let err = |kind: Kind, json: &str| Meta::typed(&kind, fields(json)).unwrap_err();
        let nix = |narsize: &str, refs: &str| {
            format!(r#"{{"narHash":"{HASH}","narSize":{narsize},"references":{refs},"sigs":[]}}"#)
        };
        let e = err(Kind::NixPath, &nix(r#""120""#, "[]"));
        assert_eq!(e.field, "meta.narSize");
        assert!(e.problem.contains("invalid type"), "{e}");
        let e = err(
            Kind::NixPath,
            &nix("1", &format!(r#"["{PATH}","/etc/passwd"]"#)),
        );
        assert_eq!(e.field, "meta.references");
        assert!(e.problem.contains("/etc/passwd"), "{e}");
        let e = err(
            Kind::NixPath,
            &format!(
                r#"{{"narHash":"sha256:{}","narSize":1,"references":[],"sigs":[]}}"#,
                "0".repeat(64)
            ),
        );
        assert_eq!(e.field, "meta.narHash", "{e}");
        let e = err(
            Kind::NixPath,
            &format!(r#"{{"narHash":"{HASH}","references":[],"sigs":[]}}"#),
        );
        assert_eq!(e.field, "meta");
        assert!(e.problem.contains("narSize"), "{e}");
        let e = err(
            Kind::NixPath,
            &format!(
                r#"{{"gcRoots":["../x"],"narHash":"{HASH}","narSize":1,"references":[],"sigs":[]}}"#
            ),
        );
        assert_eq!(e.field, "meta.gcRoots", "{e}");
        let e = err(
            Kind::NixPath,
            &format!(
                r#"{{"narHash":"{HASH}","narSize":1,"references":[],"sigs":["k:x\nURL: evil"]}}"#
            ),
        );
        assert_eq!(e.field, "meta.sigs", "{e}");
        // `ca` and `sigs` are held to their narinfo grammar when the manifest is
        // parsed, not first when a narinfo is written.
        for (field, json) in [
            (
                "meta.ca",
                r#""ca":"fixed:r:sha256:x","sigs":[]"#.to_string(),
            ),
            (
                "meta.ca",
                format!(r#""ca":"{CA}\nNarHash: {HASH}","sigs":[]"#),
            ),
            ("meta.sigs", r#""sigs":["k:c2ln"]"#.to_string()),
            ("meta.sigs", format!(r#""sigs":["{SIG} "]"#)),
        ] {
            let e = err(
                Kind::NixPath,
                &format!(r#"{{"narHash":"{HASH}","narSize":1,"references":[],{json}}}"#),
            );
            assert_eq!(e.field, field, "{e}");
        }
        let e = err(Kind::K8sManifest, r#"{"source":"s","file":"f","order":-1}"#);
        assert_eq!(e.field, "meta.order", "{e}");
        let e = err(Kind::Image, r#"{"platforms":"linux/amd64","source":"s"}"#);
        assert_eq!(e.field, "meta.platforms", "{e}");
        let e = err(
            Kind::Chart,
            r#"{"chart":"c","version":"1","digest":"md5:x","source":"s"}"#,
        );
        assert_eq!(e.field, "meta.digest", "{e}");
        for mode in ["4755", "755", "0x55", "0644 "] {
            let e = err(Kind::File, &format!(r#"{{"mode":"{mode}","source":"s"}}"#));
            assert_eq!(e.field, "meta.mode", "{e}");
        }
    }

    #[test]
    fn file_targets_are_absolute_plain_paths() {
        assert_eq!(
            target_components("/usr/local/bin/k3s").unwrap(),
            ["usr", "local", "bin", "k3s"]
        );
        for bad in [
            "usr/bin/x",
            "/",
            "/etc//x",
            "/etc/x/",
            "/etc/../x",
            "/./x",
            "/a\nb",
            "/a\0b",
            "",
        ] {
            assert!(target_components(bad).is_err(), "{bad:?}");
        }
        assert!(target_components(&format!("/{}", "a".repeat(256))).is_err());
        assert!(target_components(&format!("/{}", "a".repeat(255))).is_ok());
    }
}
