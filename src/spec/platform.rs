//! Platforms (`os/arch[/variant]`) and the selection a spec asks for.
//!
//! A platform is checked against the operating systems and architectures Go knows
//! (`go tool dist list`, which is what image configs and indexes are written with),
//! and the variants OCI defines for them, as containerd's `platforms.Parse` does: a
//! typo such as `linux/amd46` would otherwise select nothing from an index and, for a
//! single-platform image, be found out on the far side of the air gap. The aliases
//! containerd accepts (`x86_64`, `aarch64`, `armhf`, ...) are normalised the same way.

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

/// Operating systems Go builds for (`GOOS`).
const KNOWN_OS: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];

/// Architectures Go builds for (`GOARCH`, with the ones it reserves).
const KNOWN_ARCH: &[&str] = &[
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

/// The architecture (and variant it implies) an alias containerd accepts stands
/// for; the name itself when it is not one.
fn normalize_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let v = variant.map(str::to_string);
    match arch {
        "x86_64" | "x86-64" => ("amd64".into(), v),
        "i386" | "x86" => ("386".into(), v),
        // containerd treats arm64/v8 as plain arm64 (v8 is its baseline).
        "aarch64" | "arm64" if matches!(variant, None | Some("v8") | Some("8")) => {
            ("arm64".into(), None)
        }
        "aarch64" => ("arm64".into(), v),
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        a => (a.to_string(), v),
    }
}

/// Whether `variant` is one OCI (or containerd) names for `arch`.
fn known_variant(arch: &str, variant: &str) -> bool {
    match arch {
        "arm" => matches!(variant, "v5" | "v6" | "v7" | "v8"),
        "arm64" => {
            variant == "v8"
                || variant == "v9"
                || variant
                    .strip_prefix("v8.")
                    .or_else(|| variant.strip_prefix("v9."))
                    .is_some_and(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()))
        }
        "amd64" => matches!(variant, "v1" | "v2" | "v3" | "v4"),
        "386" => matches!(variant, "sse2" | "softfloat"),
        "ppc64le" | "ppc64" => matches!(variant, "power8" | "power9" | "power10"),
        "riscv64" => matches!(variant, "rva20u64" | "rva22u64" | "rva23u64"),
        _ => false,
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let shape = || {
            format!("`{s}` is not a platform (expected os/arch or os/arch/variant, e.g. linux/amd64 or linux/arm/v7)")
        };
        let parts: Vec<String> = s
            .split('/')
            .map(|p| p.trim().to_ascii_lowercase())
            .collect();
        if parts.iter().any(String::is_empty) {
            return Err(shape());
        }
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (os.as_str(), arch.as_str(), None),
            [os, arch, v] => (os.as_str(), arch.as_str(), Some(v.as_str())),
            _ => return Err(shape()),
        };
        let os = if os == "macos" { "darwin" } else { os };
        if !KNOWN_OS.contains(&os) {
            return Err(format!(
                "`{s}`: `{os}` is not an operating system images are built for (one of {})",
                KNOWN_OS.join(", ")
            ));
        }
        let (arch, variant) = normalize_arch(arch, variant);
        if !KNOWN_ARCH.contains(&arch.as_str()) {
            return Err(format!(
                "`{s}`: `{arch}` is not an architecture images are built for (one of {})",
                KNOWN_ARCH.join(", ")
            ));
        }
        if let Some(v) = &variant {
            if !known_variant(&arch, v) {
                return Err(format!(
                    "`{s}`: `{v}` is not a variant of {arch} (e.g. linux/arm/v7, linux/arm64/v8, linux/amd64/v3)"
                ));
            }
        }
        Ok(Platform {
            os: os.to_string(),
            arch,
            variant,
        })
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
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
        // A visitor rather than an untagged enum, so that a bad entry of a list is
        // reported where it is (the parser's line and column), not as "did not
        // match any variant".
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Platforms;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`all` or a list like [linux/amd64]")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Platforms, E> {
                if s == "all" {
                    return Ok(Platforms::All);
                }
                Ok(Platforms::List(vec![s.parse().map_err(E::custom)?]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Platforms, A::Error> {
                let mut out = Vec::new();
                let mut all = false;
                while let Some(p) = seq.next_element::<PlatformOrAll>()? {
                    match p {
                        PlatformOrAll::All => all = true,
                        PlatformOrAll::One(p) => out.push(p),
                    }
                }
                match (all, out.is_empty()) {
                    (true, true) => Ok(Platforms::All),
                    (true, false) => Err(serde::de::Error::custom(
                        "platforms lists `all` beside other platforms: write `all` alone, or list the platforms",
                    )),
                    (false, true) => Err(serde::de::Error::custom(
                        "platforms is empty: list at least one, or write `all`",
                    )),
                    (false, false) => Ok(Platforms::List(out)),
                }
            }
        }
        enum PlatformOrAll {
            All,
            One(Platform),
        }
        impl<'de> Deserialize<'de> for PlatformOrAll {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                if s == "all" {
                    return Ok(PlatformOrAll::All);
                }
                s.parse()
                    .map(PlatformOrAll::One)
                    .map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Platforms {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_strings().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_are_known_ones_and_aliases_are_normalised() {
        let p = |s: &str| s.parse::<Platform>().map(|p| p.to_string());
        assert_eq!(p("linux/amd64").unwrap(), "linux/amd64");
        assert_eq!(p("linux/arm64/v8").unwrap(), "linux/arm64");
        assert_eq!(p("Linux/x86_64").unwrap(), "linux/amd64");
        assert_eq!(p("linux/armhf").unwrap(), "linux/arm/v7");
        assert_eq!(p("windows/amd64").unwrap(), "windows/amd64");
        assert_eq!(p("linux/arm64/v8.2").unwrap(), "linux/arm64/v8.2");
        for (bad, want) in [
            ("linux/amd46", "`amd46` is not an architecture"),
            ("lnux/amd64", "`lnux` is not an operating system"),
            ("linux/arm/v9", "`v9` is not a variant of arm"),
            ("linux", "expected os/arch"),
            ("linux//v7", "expected os/arch"),
            ("linux/arm/v7/x", "expected os/arch"),
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }
}
