//! `nix path-info --json` parsing: the metadata `create` bundles for each path.
//!
//! Nix 2.8 prints the NAR hash in SRI form and calls the signatures `signatures`;
//! later versions differ in small ways, so the raw shape ([`PathInfoJson`]) is
//! lenient and [`PathInfo`] holds only checked values.

use serde::Deserialize;

use super::{fingerprint, NarHash, NixFormatError, StorePath};

/// One entry of `nix path-info --json` (Nix 2.8 and later).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathInfoJson {
    /// The path.
    pub path: String,
    /// `false` for a path that is not valid (then nothing else is set).
    #[serde(default)]
    pub valid: Option<bool>,
    /// NAR hash in any of Nix's spellings (2.8 prints SRI).
    #[serde(default)]
    pub nar_hash: Option<String>,
    /// NAR size.
    #[serde(default)]
    pub nar_size: Option<u64>,
    /// References (full paths).
    #[serde(default)]
    pub references: Vec<String>,
    /// Deriver.
    #[serde(default)]
    pub deriver: Option<String>,
    /// Content address.
    #[serde(default)]
    pub ca: Option<String>,
    /// Signatures (Nix 2.8 calls the field `signatures`).
    #[serde(default, alias = "sigs")]
    pub signatures: Vec<String>,
}

/// A path's metadata, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// The path.
    pub path: StorePath,
    /// NAR hash.
    pub nar_hash: NarHash,
    /// NAR size.
    pub nar_size: u64,
    /// References, sorted, self-reference included when Nix lists it.
    pub references: Vec<StorePath>,
    /// Deriver.
    pub deriver: Option<StorePath>,
    /// Content address.
    pub ca: Option<String>,
    /// Signatures the path already carries.
    pub sigs: Vec<String>,
}

impl PathInfo {
    /// Its signature fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.path, &self.nar_hash, self.nar_size, &self.references)
    }
}

/// Why `nix path-info --json` output could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PathInfoError {
    /// Not the JSON shape Nix prints.
    #[error("unexpected `nix path-info --json` output: {0}")]
    Json(String),
    /// A path Nix says is not valid.
    #[error("`{0}` is not valid in the Nix store (build or fetch it first)")]
    Invalid(String),
    /// A field is malformed.
    #[error("`nix path-info` for `{path}`: {source}")]
    Field {
        /// The path.
        path: String,
        /// What is wrong.
        source: NixFormatError,
    },
}

impl crate::error::Classify for PathInfoError {
    /// Nix's own output that cannot be used is any other error.
    fn class(&self) -> Option<crate::error::ErrorClass> {
        None
    }
}

/// Parses `nix path-info --json` output; every path must be valid.
pub fn parse_path_info(json: &[u8]) -> Result<Vec<PathInfo>, PathInfoError> {
    let raw: Vec<PathInfoJson> =
        serde_json::from_slice(json).map_err(|e| PathInfoError::Json(e.to_string()))?;
    raw.into_iter()
        .map(|p| {
            let field = |source| PathInfoError::Field {
                path: super::shown(&p.path),
                source,
            };
            if p.valid == Some(false) {
                return Err(PathInfoError::Invalid(super::shown(&p.path)));
            }
            let path = StorePath::parse(&p.path).map_err(field)?;
            let nar_hash = NarHash::parse(p.nar_hash.as_deref().unwrap_or("")).map_err(field)?;
            let nar_size = p
                .nar_size
                .ok_or_else(|| PathInfoError::Json(format!("`{}` has no narSize", p.path)))?;
            let mut references = p
                .references
                .iter()
                .map(|r| StorePath::parse(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(field)?;
            references.sort();
            references.dedup();
            let deriver = p
                .deriver
                .as_deref()
                .filter(|d| !d.is_empty())
                .map(StorePath::parse)
                .transpose()
                .map_err(field)?;
            Ok(PathInfo {
                path,
                nar_hash,
                nar_size,
                references,
                deriver,
                ca: p.ca.clone().filter(|c| !c.is_empty()),
                sigs: p.signatures.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAR_NIX32: &str = "sha256:1xga7qa3wjdkhc71mbz9wm36q1nl7z2c95sl9529vindmjnrdn0z";

    #[test]
    fn path_info_json_from_nix_2_8() {
        let json = br#"[{"path":"/nix/store/npsly8l2kja0f1kchz7hwdkdihfg8759-base","narHash":"sha256-H9iWrazNxp1ESVSXxMQ/1AZsRuXprxoOg7NJPhQ+6vU=","narSize":120,"references":[],"deriver":"/nix/store/7wz5ipjw5ylqxz24bcf6d06j4jb97gkn-base.drv","registrationTime":1795495625,"ultimate":true},{"path":"/nix/store/hnilzb3v4y6sfd0qaclqn4plzdwrrh2y-source","narHash":"sha256-Tz8ERKjIVGVkIObT7meINV2q0FxJk88kGSP5kN+gezY=","narSize":704,"references":[],"ca":"fixed:r:sha256:0dkvl3gr1y9334jcz4s9bk8alp9mi1kyxlz641j6am68m1208gsg","signatures":["k:abc"]}]"#;
        let v = parse_path_info(json).unwrap();
        assert_eq!(v[0].nar_hash.to_string(), NAR_NIX32);
        assert_eq!(v[0].deriver.as_ref().unwrap().name(), "base.drv");
        assert_eq!(v[1].sigs, vec!["k:abc".to_string()]);
        assert!(v[1].ca.as_deref().unwrap().starts_with("fixed:r:"));
        let invalid =
            br#"[{"path":"/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-x","valid":false}]"#;
        assert!(matches!(
            parse_path_info(invalid),
            Err(PathInfoError::Invalid(_))
        ));
        assert!(parse_path_info(b"{").is_err());
    }
}
