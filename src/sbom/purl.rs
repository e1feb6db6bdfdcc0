//! Package URLs (purl) for what a bundle carries, where the purl specification has
//! a type for it.
//!
//! Only images have one: the `oci` type, `pkg:oci/<name>@<digest>?repository_url=
//! <repository>&tag=<tag>`, where the name is the last component of the repository,
//! lower-cased, and the version is the root digest. Charts and Nix paths get none:
//! the purl spec registers no `helm` type, and its `nix` type names a package by
//! its origin and attribute path (`pkg:nix/nixpkgs/hello`), which a store path does
//! not record; a guessed purl would match the wrong advisories.
//!
//! Encoding follows the spec's character-encoding rules: every character outside
//! `A-Za-z0-9.-_~` is percent-encoded, except the colon (which "shall not be
//! percent-encoded, whether used as a separator or otherwise") and, in qualifier
//! values, the `/` of a path.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::bundle::digest::Digest;
use crate::oci::Reference;

/// Characters percent-encoded in a name or version.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'~')
    .remove(b':');
/// Characters percent-encoded in a qualifier value.
const QUALIFIER: &AsciiSet = &COMPONENT.remove(b'/');

/// The `pkg:oci` purl of an image object named `name` whose root is `digest`, or
/// `None` when the name is not a normalised image reference: a local layout or
/// archive keeps the `name:` it was given as written (format.md section 8), and
/// `myapp:1` says nothing of a repository it could be fetched from.
pub fn oci(name: &str, digest: &Digest) -> Option<String> {
    let r = Reference::parse(name).ok()?;
    if r.normalized() != name {
        return None;
    }
    let repository = format!("{}/{}", r.domain(), r.path());
    let last = r.path().rsplit('/').next()?.to_ascii_lowercase();
    let mut purl = format!(
        "pkg:oci/{}@{}?repository_url={}",
        utf8_percent_encode(&last, COMPONENT),
        utf8_percent_encode(&digest.to_string(), COMPONENT),
        utf8_percent_encode(&repository, QUALIFIER)
    );
    if let Some(tag) = r.tag() {
        purl.push_str("&tag=");
        purl.push_str(&utf8_percent_encode(tag, QUALIFIER).to_string());
    }
    Some(purl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_purls_name_the_repository_and_tag() {
        let d = Digest::of(b"x");
        let hex = d.hex();
        assert_eq!(
            oci("docker.io/library/redis:8", &d).unwrap(),
            format!("pkg:oci/redis@sha256:{hex}?repository_url=docker.io/library/redis&tag=8")
        );
        assert_eq!(
            oci(&format!("localhost:5000/team/App@sha256:{hex}"), &d),
            None,
            "upper case is not a repository path"
        );
        assert_eq!(oci("myapp:1", &d), None, "a local name as written");
        assert_eq!(
            oci(&format!("localhost:5000/team/app@sha256:{hex}"), &d).unwrap(),
            format!("pkg:oci/app@sha256:{hex}?repository_url=localhost:5000/team/app")
        );
    }
}
