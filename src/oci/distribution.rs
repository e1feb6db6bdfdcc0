//! The OCI distribution-spec pull API as data, pure: which endpoint a path names, the
//! error envelope and its codes, `n`/`last` pagination with its `Link` header, the
//! referrers index, and what a manifest points at.
//!
//! `gapbundle serve` answers registry clients (containerd through a K3s mirror,
//! skopeo, crane) from a bundle, and a client that gets an answer a registry would
//! not give fails in ways that are hard to read in the field. So the answers follow
//! the distribution-spec (v1.1: end-1, end-2, end-3 for pull, end-8 for tags, end-12
//! for referrers) and, where the spec leaves room, what the CNCF distribution
//! registry 2.8 (Debian's `docker-registry`) sends, byte for byte: the same error
//! bodies (`{"errors":[{"code":…,"message":…,"detail":…}]}` and a newline, fields in
//! that order), the same JSON for tag lists and the catalog, the same `Link` form
//! (`</v2/_catalog?last=a%2Fb&n=1>; rel="next"`). The differences, on purpose:
//!
//! - `tags/list` honours `n` and `last` as the spec says (distribution 2.8 ignores
//!   them); `n=0` gives an empty list and no `Link`.
//! - A manifest is served whatever `Accept` says (distribution 2.8 answers an OCI
//!   manifest with `MANIFEST_UNKNOWN` to a client that does not list OCI types):
//!   clients that pull images all accept them, and the `Content-Type` is the one the
//!   manifest was stored with.
//! - A reference that is neither a tag nor a digest, or the digest of a blob that is
//!   not a manifest, is `MANIFEST_UNKNOWN` (distribution 2.8 answers `500`).
//! - Push, delete and upload endpoints answer `405` with the spec's `UNSUPPORTED`
//!   code in the envelope (a read-only distribution answers `405` in plain text).
//! - The referrers endpoint exists (2.8 predates it).
//!
//! The I/O (which bytes, from which bundle) is in [`crate::serve`]; the HTTP in
//! [`crate::io::serve`].

use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;
use serde_json::{Map, Value};

use super::reference;
use crate::bundle::oci::{is_index, INDEX_MEDIA_TYPE};
use crate::bundle::Digest;

/// The header every registry answer carries, and its value.
pub const API_VERSION: (&str, &str) = ("Docker-Distribution-Api-Version", "registry/2.0");
/// The media type of JSON answers (errors, tag lists, the catalog).
pub const JSON: &str = "application/json; charset=utf-8";
/// The largest manifest read to find what it points at (distribution's own limit).
pub const MAX_MANIFEST: u64 = 4 << 20;

/// A repository name as the spec's grammar has it.
static NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$",
    )
    .expect("the name grammar compiles")
});
static TAG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$").expect("the tag grammar compiles")
});

/// Whether `name` is a repository name of the spec's grammar.
pub fn valid_name(name: &str) -> bool {
    name.len() <= reference::NAME_MAX && NAME.is_match(name)
}

/// The endpoint a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v2/` (end-1).
    Base,
    /// `/v2/_catalog`.
    Catalog,
    /// `/v2/<name>/tags/list` (end-8).
    Tags(&'a str),
    /// `/v2/<name>/manifests/<reference>` (end-3).
    Manifest(&'a str, &'a str),
    /// `/v2/<name>/blobs/<digest>` (end-2).
    Blob(&'a str, &'a str),
    /// `/v2/<name>/referrers/<digest>` (end-12).
    Referrers(&'a str, &'a str),
    /// `/v2/<name>/blobs/uploads/…` (end-4 to end-6, end-11, end-13, end-14).
    Upload(&'a str),
    /// Anything else below `/v2/`.
    Unknown,
}

/// The endpoint `path` names, or `None` when it is not below `/v2`.
pub fn route(path: &str) -> Option<Route<'_>> {
    if path == "/v2" || path == "/v2/" {
        return Some(Route::Base);
    }
    let rest = path.strip_prefix("/v2/")?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some((name, _)) = rest.split_once("/blobs/uploads") {
        return Some(Route::Upload(name));
    }
    let Some((before, last)) = rest.rsplit_once('/') else {
        return Some(Route::Unknown);
    };
    let route = if let Some(name) = before.strip_suffix("/manifests") {
        Route::Manifest(name, last)
    } else if let Some(name) = before.strip_suffix("/blobs") {
        Route::Blob(name, last)
    } else if let Some(name) = before.strip_suffix("/referrers") {
        Route::Referrers(name, last)
    } else {
        Route::Unknown
    };
    Some(route)
}

/// What the `<reference>` of a manifest path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef<'a> {
    /// A tag.
    Tag(&'a str),
    /// A sha256 digest.
    Digest(Digest),
    /// A digest of another algorithm: never held here.
    OtherDigest(&'a str),
    /// Neither.
    Invalid(&'a str),
}

impl<'a> ManifestRef<'a> {
    /// Reads a manifest reference.
    pub fn parse(s: &'a str) -> ManifestRef<'a> {
        if s.contains(':') {
            return match digest(s) {
                DigestRef::Sha256(d) => ManifestRef::Digest(d),
                DigestRef::Other => ManifestRef::OtherDigest(s),
                DigestRef::Invalid => ManifestRef::Invalid(s),
            };
        }
        if TAG.is_match(s) {
            ManifestRef::Tag(s)
        } else {
            ManifestRef::Invalid(s)
        }
    }
}

/// What a digest in a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestRef {
    /// sha256, the only algorithm a bundle holds.
    Sha256(Digest),
    /// sha384 or sha512, which the image-spec registers: never held here.
    Other,
    /// Not a digest.
    Invalid,
}

/// Reads a digest given in a path: the algorithms the image-spec registers, with
/// the length of hex digits each has (as go-digest validates them).
pub fn digest(s: &str) -> DigestRef {
    if let Ok(d) = s.parse::<Digest>() {
        return DigestRef::Sha256(d);
    }
    let hex = |h: &str, n: usize| {
        h.len() == n
            && h.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    };
    match s.split_once(':') {
        Some(("sha384", h)) if hex(h, 96) => DigestRef::Other,
        Some(("sha512", h)) if hex(h, 128) => DigestRef::Other,
        _ => DigestRef::Invalid,
    }
}

/// An error the API answers with: its status and envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// `BLOB_UNKNOWN`: the digest.
    BlobUnknown(String),
    /// `MANIFEST_UNKNOWN` for a tag.
    ManifestUnknownTag(String),
    /// `MANIFEST_UNKNOWN` for a digest (or anything not a tag) in a repository.
    ManifestUnknownDigest {
        /// The repository.
        name: String,
        /// The reference asked for.
        revision: String,
    },
    /// `NAME_UNKNOWN`: the repository.
    NameUnknown(String),
    /// `DIGEST_INVALID`: a path digest that is not a digest.
    DigestInvalid,
    /// `UNSUPPORTED`: push and delete on a read-only registry.
    Unsupported,
    /// A blob or manifest this server holds but found changed on disk since it
    /// verified: the code is the one for not having it, the detail says why.
    Changed {
        /// `BLOB_UNKNOWN` or `MANIFEST_UNKNOWN`.
        code: &'static str,
        /// The digest.
        digest: Digest,
    },
}

#[derive(Serialize)]
struct Envelope<'a> {
    errors: [ErrorBody<'a>; 1],
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    detail: Value,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::DigestInvalid => 400,
            ApiError::Unsupported => 405,
            _ => 404,
        }
    }

    /// The envelope, as distribution writes it (with a trailing newline).
    pub fn body(&self) -> Vec<u8> {
        let (code, message, detail) = match self {
            ApiError::BlobUnknown(d) => (
                "BLOB_UNKNOWN",
                "blob unknown to registry",
                Value::String(d.clone()),
            ),
            ApiError::ManifestUnknownTag(t) => (
                "MANIFEST_UNKNOWN",
                "manifest unknown",
                object([("Tag", t.as_str())]),
            ),
            ApiError::ManifestUnknownDigest { name, revision } => (
                "MANIFEST_UNKNOWN",
                "manifest unknown",
                object([("Name", name.as_str()), ("Revision", revision.as_str())]),
            ),
            ApiError::NameUnknown(n) => (
                "NAME_UNKNOWN",
                "repository name not known to registry",
                object([("name", n.as_str())]),
            ),
            ApiError::DigestInvalid => (
                "DIGEST_INVALID",
                "provided digest did not match uploaded content",
                Value::Object(Map::new()),
            ),
            ApiError::Unsupported => (
                "UNSUPPORTED",
                "The operation is unsupported.",
                Value::String("this registry is a bundle served read-only by gapbundle".into()),
            ),
            ApiError::Changed { code, digest } => (
                *code,
                "changed on disk after it verified",
                Value::String(format!(
                    "{digest} changed in the bundle file after gapbundle serve verified it, and is not served; see the server's log"
                )),
            ),
        };
        json_line(&Envelope {
            errors: [ErrorBody {
                code,
                message,
                detail,
            }],
        })
    }
}

fn object<const N: usize>(pairs: [(&str, &str); N]) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

/// `value` as compact JSON and a newline (Go's `json.Encoder`).
fn json_line(value: &impl Serialize) -> Vec<u8> {
    let mut v = serde_json::to_vec(value).expect("plain values serialize");
    v.push(b'\n');
    v
}

/// The query parameters the API reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// `n`: how many entries at most (absent, or not a number: all).
    pub n: Option<usize>,
    /// `last`: entries after this one.
    pub last: Option<String>,
    /// `artifactType`: the referrers filter.
    pub artifact_type: Option<String>,
}

impl Query {
    /// Reads a query string (percent-decoded, `+` as space).
    pub fn parse(q: Option<&str>) -> Query {
        let mut out = Query::default();
        for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
            match &*k {
                "n" => out.n = v.parse().ok(),
                "last" => out.last = Some(v.into_owned()),
                "artifactType" => out.artifact_type = Some(v.into_owned()),
                _ => {}
            }
        }
        out
    }
}

/// One page of a sorted list: the entries after `last`, at most `n` of them, and
/// the `Link` header value for the next page when there is more.
pub fn page<'a>(sorted: &[&'a str], q: &Query, path: &str) -> (Vec<&'a str>, Option<String>) {
    let start = match &q.last {
        Some(l) => sorted.partition_point(|e| *e <= l.as_str()),
        None => 0,
    };
    let rest = &sorted[start..];
    match q.n {
        Some(n) if n < rest.len() => {
            let items = rest[..n].to_vec();
            let link = items.last().map(|last| {
                let enc: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("last", last)
                    .append_pair("n", &n.to_string())
                    .finish();
                format!("<{path}?{enc}>; rel=\"next\"")
            });
            (items, link)
        }
        _ => (rest.to_vec(), None),
    }
}

#[derive(Serialize)]
struct TagList<'a> {
    name: &'a str,
    tags: &'a [&'a str],
}

/// The body of `tags/list`.
pub fn tags_body(name: &str, tags: &[&str]) -> Vec<u8> {
    json_line(&TagList { name, tags })
}

#[derive(Serialize)]
struct Catalog<'a> {
    repositories: &'a [&'a str],
}

/// The body of `_catalog`.
pub fn catalog_body(repositories: &[&str]) -> Vec<u8> {
    json_line(&Catalog { repositories })
}

/// A manifest that names another as its `subject`, as the referrers API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Referrer {
    /// Its media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// Its digest.
    pub digest: Digest,
    /// Its `artifactType`, else (for an image manifest) its config's media type.
    #[serde(rename = "artifactType", skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Its annotations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
}

#[derive(Serialize)]
struct ReferrersIndex<'a> {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'a str,
    manifests: &'a [&'a Referrer],
}

/// The referrers endpoint's image index over `referrers` (empty when there are
/// none), compact JSON.
pub fn referrers_body(referrers: &[&Referrer]) -> Vec<u8> {
    serde_json::to_vec(&ReferrersIndex {
        schema_version: 2,
        media_type: INDEX_MEDIA_TYPE,
        manifests: referrers,
    })
    .expect("plain values serialize")
}

/// What a manifest or index points at, read from its bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pointers {
    /// An index's manifests (sha256 digests), with their media types.
    pub manifests: Vec<(Digest, String)>,
    /// An image manifest's config and layers (sha256 digests).
    pub blobs: Vec<Digest>,
    /// The manifest it refers to (`subject`), if any.
    pub subject: Option<Digest>,
    /// What the referrers API gives as its `artifactType`.
    pub artifact_type: Option<String>,
    /// Its annotations.
    pub annotations: Option<Map<String, Value>>,
}

/// Why a manifest could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Not a JSON object.
    #[error("it is not a JSON object: {0}")]
    Json(String),
    /// A descriptor whose digest is not sha256 as a bundle stores it.
    #[error("{field} has the digest `{digest}`, which is not a sha256 digest")]
    Digest {
        /// Where (`layers[2]`).
        field: String,
        /// What it says.
        digest: String,
    },
}

impl crate::error::Classify for ManifestError {
    /// A stored manifest that cannot be read breaks the format: the bundle fails
    /// verification (exit code 3).
    fn class(&self) -> Option<crate::error::ErrorClass> {
        Some(crate::error::ErrorClass::Verify)
    }
}

/// What the manifest or index `bytes` (stored with `media_type`) points at. An index
/// is told by its media type or, when that says neither, by a `manifests` field.
pub fn pointers(media_type: &str, bytes: &[u8]) -> Result<Pointers, ManifestError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| ManifestError::Json(e.to_string()))?;
    let Value::Object(m) = v else {
        return Err(ManifestError::Json("not an object".into()));
    };
    let descriptor_digest = |d: &Value, field: String| -> Result<Option<Digest>, ManifestError> {
        match d.get("digest") {
            None => Ok(None),
            Some(Value::String(s)) => {
                s.parse::<Digest>()
                    .map(Some)
                    .map_err(|_| ManifestError::Digest {
                        field,
                        digest: s.clone(),
                    })
            }
            Some(other) => Err(ManifestError::Digest {
                field,
                digest: other.to_string(),
            }),
        }
    };
    let mut p = Pointers::default();
    let index = is_index(media_type) || m.contains_key("manifests");
    if index {
        if let Some(Value::Array(list)) = m.get("manifests") {
            for (i, d) in list.iter().enumerate() {
                if let Some(digest) = descriptor_digest(d, format!("manifests[{i}]"))? {
                    let mt = d
                        .get("mediaType")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    p.manifests.push((digest, mt));
                }
            }
        }
    } else {
        if let Some(config) = m.get("config") {
            if let Some(d) = descriptor_digest(config, "config".into())? {
                p.blobs.push(d);
            }
        }
        if let Some(Value::Array(layers)) = m.get("layers") {
            for (i, l) in layers.iter().enumerate() {
                if let Some(d) = descriptor_digest(l, format!("layers[{i}]"))? {
                    p.blobs.push(d);
                }
            }
        }
    }
    if let Some(s) = m.get("subject") {
        p.subject = descriptor_digest(s, "subject".into())?;
    }
    let non_empty = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    p.artifact_type = non_empty(m.get("artifactType")).or_else(|| match index {
        true => None,
        false => non_empty(m.get("config").and_then(|c| c.get("mediaType"))),
    });
    p.annotations = m
        .get("annotations")
        .and_then(Value::as_object)
        .filter(|a| !a.is_empty())
        .cloned();
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_of_the_pull_api() {
        use Route::*;
        assert_eq!(route("/v2/"), Some(Base));
        assert_eq!(route("/v2"), Some(Base));
        assert_eq!(route("/v2/_catalog"), Some(Catalog));
        assert_eq!(route("/v2/team/app/tags/list"), Some(Tags("team/app")));
        assert_eq!(
            route("/v2/team/app/manifests/1.2"),
            Some(Manifest("team/app", "1.2"))
        );
        // A repository may have `blobs` or `manifests` as a component.
        assert_eq!(
            route("/v2/a/manifests/blobs/sha256:x"),
            Some(Blob("a/manifests", "sha256:x"))
        );
        assert_eq!(
            route("/v2/library/redis/referrers/sha256:x"),
            Some(Referrers("library/redis", "sha256:x"))
        );
        assert_eq!(route("/v2/a/blobs/uploads/"), Some(Upload("a")));
        assert_eq!(route("/v2/a/blobs/uploads/123-abc"), Some(Upload("a")));
        assert_eq!(route("/v2/nothing"), Some(Unknown));
        assert_eq!(route("/v2/a/b/c"), Some(Unknown));
        assert_eq!(route("/nix-cache-info"), None);
        assert_eq!(route("/v20/"), None);
        assert!(valid_name("team/app") && valid_name("a__b/c-d.e"));
        assert!(!valid_name("Team/app") && !valid_name("a//b") && !valid_name("a/"));
    }

    #[test]
    fn references_and_digests() {
        let hex = "a".repeat(64);
        let d: Digest = format!("sha256:{hex}").parse().unwrap();
        assert_eq!(ManifestRef::parse("1.2"), ManifestRef::Tag("1.2"));
        assert_eq!(
            ManifestRef::parse(&format!("sha256:{hex}")),
            ManifestRef::Digest(d)
        );
        let long = format!("sha512:{}", "b".repeat(128));
        assert_eq!(ManifestRef::parse(&long), ManifestRef::OtherDigest(&long));
        assert_eq!(
            ManifestRef::parse("sha256:bad!"),
            ManifestRef::Invalid("sha256:bad!")
        );
        assert_eq!(
            ManifestRef::parse(".hidden"),
            ManifestRef::Invalid(".hidden")
        );
        assert_eq!(digest("sha256:bad"), DigestRef::Invalid);
        assert_eq!(
            digest(&format!("sha256:{}", "A".repeat(64))),
            DigestRef::Invalid
        );
        assert_eq!(digest("nope"), DigestRef::Invalid);
    }

    #[test]
    fn error_bodies_as_distribution_writes_them() {
        // Bytes as Debian's docker-registry 2.8.2 sends them.
        assert_eq!(
            ApiError::ManifestUnknownTag("2".into()).body(),
            b"{\"errors\":[{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest unknown\",\"detail\":{\"Tag\":\"2\"}}]}\n"
        );
        let zero = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            String::from_utf8(ApiError::ManifestUnknownDigest { name: "team/app".into(), revision: zero.clone() }.body()).unwrap(),
            format!("{{\"errors\":[{{\"code\":\"MANIFEST_UNKNOWN\",\"message\":\"manifest unknown\",\"detail\":{{\"Name\":\"team/app\",\"Revision\":\"{zero}\"}}}}]}}\n")
        );
        assert_eq!(
            String::from_utf8(ApiError::BlobUnknown(zero.clone()).body()).unwrap(),
            format!("{{\"errors\":[{{\"code\":\"BLOB_UNKNOWN\",\"message\":\"blob unknown to registry\",\"detail\":\"{zero}\"}}]}}\n")
        );
        assert_eq!(
            ApiError::NameUnknown("team/nope".into()).body(),
            b"{\"errors\":[{\"code\":\"NAME_UNKNOWN\",\"message\":\"repository name not known to registry\",\"detail\":{\"name\":\"team/nope\"}}]}\n"
        );
        assert_eq!(
            ApiError::DigestInvalid.body(),
            b"{\"errors\":[{\"code\":\"DIGEST_INVALID\",\"message\":\"provided digest did not match uploaded content\",\"detail\":{}}]}\n"
        );
        assert_eq!(ApiError::Unsupported.status(), 405);
        assert!(String::from_utf8(ApiError::Unsupported.body())
            .unwrap()
            .starts_with("{\"errors\":[{\"code\":\"UNSUPPORTED\","));
        assert_eq!(
            tags_body("team/app", &["1"]),
            b"{\"name\":\"team/app\",\"tags\":[\"1\"]}\n"
        );
        assert_eq!(catalog_body(&[]), b"{\"repositories\":[]}\n");
    }

    #[test]
    fn pages_and_links() {
        let all = ["aa/b", "team/app", "zz"];
        let q = |s: &str| Query::parse(Some(s));
        assert_eq!(page(&all, &q(""), "/v2/_catalog"), (all.to_vec(), None));
        assert_eq!(
            page(&all, &q("n=1"), "/v2/_catalog"),
            (
                vec!["aa/b"],
                Some("</v2/_catalog?last=aa%2Fb&n=1>; rel=\"next\"".into())
            )
        );
        assert_eq!(
            page(&all, &q("n=1&last=aa%2Fb"), "/v2/_catalog"),
            (
                vec!["team/app"],
                Some("</v2/_catalog?last=team%2Fapp&n=1>; rel=\"next\"".into())
            )
        );
        assert_eq!(
            page(&all, &q("n=2&last=aa/b"), "/v2/_catalog"),
            (vec!["team/app", "zz"], None)
        );
        assert_eq!(
            page(&all, &q("last=aa/b"), "/v2/_catalog"),
            (vec!["team/app", "zz"], None)
        );
        assert_eq!(page(&all, &q("n=0"), "/v2/_catalog"), (vec![], None));
        assert_eq!(page(&all, &q("n=3"), "/v2/_catalog"), (all.to_vec(), None));
        assert_eq!(
            page(&all, &q("n=abc"), "/v2/_catalog"),
            (all.to_vec(), None)
        );
        assert_eq!(page(&all, &q("last=zzz"), "/v2/_catalog"), (vec![], None));
        assert_eq!(
            q("artifactType=application%2Fvnd.example%2Bjson")
                .artifact_type
                .as_deref(),
            Some("application/vnd.example+json")
        );
    }

    #[test]
    fn what_manifests_point_at() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1}}],"annotations":{{"a":"b"}}}}"#,
            d('a')
        );
        let p = pointers(INDEX_MEDIA_TYPE, index.as_bytes()).unwrap();
        assert_eq!(p.manifests.len(), 1);
        assert_eq!(
            p.manifests[0].1,
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert!(p.blobs.is_empty() && p.artifact_type.is_none());
        assert_eq!(p.annotations.unwrap()["a"], "b");
        let sbom = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.example.sbom","digest":"{}","size":2}},"layers":[{{"digest":"{}","size":3}}],"subject":{{"digest":"{}","size":4}}}}"#,
            d('b'),
            d('c'),
            d('a')
        );
        let p = pointers(
            "application/vnd.oci.image.manifest.v1+json",
            sbom.as_bytes(),
        )
        .unwrap();
        assert_eq!(p.blobs.len(), 2);
        assert_eq!(p.subject, Some(d('a').parse().unwrap()));
        assert_eq!(
            p.artifact_type.as_deref(),
            Some("application/vnd.example.sbom")
        );
        assert!(p.annotations.is_none());
        let bad = r#"{"schemaVersion":2,"config":{"digest":"sha512:00"},"layers":[]}"#;
        assert!(matches!(
            pointers("application/vnd.oci.image.manifest.v1+json", bad.as_bytes()),
            Err(ManifestError::Digest { .. })
        ));
        assert!(pointers("x", b"[1]").is_err());
        let r = Referrer {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 5,
            digest: d('e').parse().unwrap(),
            artifact_type: Some("t".into()),
            annotations: None,
        };
        assert_eq!(
            String::from_utf8(referrers_body(&[&r])).unwrap(),
            format!(
                r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":5,"digest":"{}","artifactType":"t"}}]}}"#,
                d('e')
            )
        );
        assert_eq!(
            referrers_body(&[]),
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
        );
    }
}
