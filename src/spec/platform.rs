//! Platforms (`os/arch[/variant]`) and the selection a spec asks for.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One platform.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    /// `linux`, `windows`...
    pub os: String,
    /// `amd64`, `arm64`...
    pub arch: String,
    /// `v7`, `v8`... when given.
    pub variant: Option<String>,
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |x: &&str| !x.is_empty();
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if ok(os) && ok(arch) && ok(v) => Ok(Platform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => Err(format!(
                "`{s}` is not a platform (expected os/arch or os/arch/variant, e.g. linux/amd64)"
            )),
        }
    }
}

impl Platform {
    /// Whether this (requested) platform matches an image's platform. A request
    /// without a variant matches any variant.
    pub fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.arch == arch
            && (self.variant.is_none() || self.variant.as_deref() == variant)
    }
}

/// Which platforms to keep.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Platforms {
    /// Every platform an index lists.
    #[default]
    All,
    /// Only these.
    List(Vec<Platform>),
}

impl Platforms {
    /// Whether a platform is wanted.
    pub fn wants(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        match self {
            Platforms::All => true,
            Platforms::List(l) => l.iter().any(|p| p.matches(os, arch, variant)),
        }
    }
    /// As strings, for the manifest.
    pub fn to_strings(&self) -> Vec<String> {
        match self {
            Platforms::All => vec!["all".into()],
            Platforms::List(l) => l.iter().map(|p| p.to_string()).collect(),
        }
    }
}

impl<'de> Deserialize<'de> for Platforms {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("platforms must be `all` or a list like [linux/amd64]")
        })?;
        let list = match raw {
            Raw::One(s) if s == "all" => return Ok(Platforms::All),
            Raw::One(s) => vec![s],
            Raw::Many(v) if v.len() == 1 && v[0] == "all" => return Ok(Platforms::All),
            Raw::Many(v) => v,
        };
        let mut out = Vec::new();
        for s in list {
            out.push(s.parse().map_err(serde::de::Error::custom)?);
        }
        if out.is_empty() {
            return Err(serde::de::Error::custom(
                "platforms is empty: list at least one, or write `all`",
            ));
        }
        Ok(Platforms::List(out))
    }
}

impl Serialize for Platforms {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_strings().serialize(s)
    }
}
