//! Path signatures: what Nix signs for a store path and how a signature is written.
//!
//! A bundle carries, per path, the signatures Nix checks when it adds the path
//! (`trusted-public-keys`). They are Ed25519 over Nix's *fingerprint* of the path,
//! written `<key name>:<base64 of 64 bytes>`. Signature strings come from a bundle
//! and end up as `Sig:` lines of a narinfo, so [`validate_path_signature`] holds
//! them to exactly that grammar: nothing else can reach a narinfo.

use super::{shown, NarHash, NixFormatError, StorePath};
use crate::bundle::keys::{PublicKey, SecretKey, Signature};

/// The text a Nix path signature covers:
/// `1;<path>;sha256:<nix32 nar hash>;<nar size>;<comma-separated full reference paths>`,
/// references sorted (Nix keeps them in a sorted set).
pub fn fingerprint(
    path: &StorePath,
    nar_hash: &NarHash,
    nar_size: u64,
    references: &[StorePath],
) -> String {
    let mut refs: Vec<&str> = references.iter().map(|r| r.as_str()).collect();
    refs.sort_unstable();
    refs.dedup();
    format!(
        "1;{path};{};{nar_size};{}",
        nar_hash.to_nix32_string(),
        refs.join(",")
    )
}

/// Signs a path's fingerprint the way `nix store sign` does (`name:base64`).
pub fn sign_path(key: &SecretKey, fingerprint: &str) -> String {
    key.sign(fingerprint.as_bytes()).to_string()
}

/// Whether any of `sigs` is a valid signature of `fingerprint` by `key`.
pub fn verify_path(key: &PublicKey, fingerprint: &str, sigs: &[String]) -> bool {
    sigs.iter()
        .filter_map(|s| Signature::parse(s).ok())
        .any(|s| key.verify(fingerprint.as_bytes(), &s))
}

/// Checks that `s` is a path signature exactly as Nix writes one:
/// `<name>:<standard base64 with padding of 64 bytes>`, the name non-empty and
/// without `:`, white space or control characters, and nothing else around it (no
/// white space, no second line). The signature itself is not checked here.
pub fn validate_path_signature(s: &str) -> Result<(), NixFormatError> {
    let err = || NixFormatError::PathSignature(shown(s));
    if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(err());
    }
    let sig = Signature::parse(s).map_err(|_| err())?;
    // Parsing is lenient about what surrounds the text; the canonical form must be
    // the text itself.
    if sig.to_string() != s {
        return Err(err());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAR_NIX32: &str = "sha256:1xga7qa3wjdkhc71mbz9wm36q1nl7z2c95sl9529vindmjnrdn0z";

    fn sp(h: char, name: &str) -> StorePath {
        StorePath::parse(&format!("/nix/store/{}-{name}", h.to_string().repeat(32))).unwrap()
    }

    #[test]
    fn fingerprint_is_nix_shaped() {
        let p = sp('a', "app");
        let r = vec![sp('c', "lib"), sp('b', "base"), p.clone()];
        let h = NarHash::parse(NAR_NIX32).unwrap();
        assert_eq!(
            fingerprint(&p, &h, 120, &r),
            format!(
                "1;{p};{NAR_NIX32};120;{p},/nix/store/{}-base,/nix/store/{}-lib",
                "b".repeat(32),
                "c".repeat(32)
            )
        );
    }

    #[test]
    fn path_signatures_verify_with_the_public_key() {
        let k = SecretKey::from_seed("k", [3; 32]).unwrap();
        let other = SecretKey::from_seed("k", [4; 32]).unwrap();
        let fp = fingerprint(&sp('a', "x"), &NarHash([1; 32]), 5, &[]);
        let sig = sign_path(&k, &fp);
        assert!(verify_path(&k.public(), &fp, std::slice::from_ref(&sig)));
        assert!(!verify_path(
            &other.public(),
            &fp,
            std::slice::from_ref(&sig)
        ));
        assert!(!verify_path(&k.public(), &format!("{fp}x"), &[sig]));
    }

    #[test]
    fn only_nix_shaped_signature_strings_are_accepted() {
        let k = SecretKey::from_seed("cache.example-1", [3; 32]).unwrap();
        let good = sign_path(&k, "1;x");
        validate_path_signature(&good).unwrap();
        let b64 = good.split_once(':').unwrap().1.to_string();
        for bad in [
            format!("{good}\nNarHash: sha256:0000"),
            format!("{good}\n"),
            format!(" {good}"),
            format!("k\u{1b}[31m:{b64}"),
            format!("k k:{b64}"),
            format!(":{b64}"),
            "k:AAAA".to_string(),
            format!("k:{}", &b64[..b64.len() - 2]),
            "nocolon".to_string(),
        ] {
            assert!(
                matches!(
                    validate_path_signature(&bad),
                    Err(NixFormatError::PathSignature(_))
                ),
                "{bad:?}"
            );
        }
    }
}
