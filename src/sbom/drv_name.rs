//! A Nix store path's name split into a package name and a version, exactly as
//! Nix's `builtins.parseDrvName` splits it.
//!
//! SBOM consumers match components by name and version, and for Nix the
//! authoritative split is the one Nix itself makes (`nix-env -q`, `parseDrvName`):
//! the version starts after the first `-` that is followed by a character that is
//! not an ASCII letter; a name with no such `-` has no version. So
//! `hello-2.12.1` is `hello` and `2.12.1`, `python3.11-requests-2.31.0` is
//! `python3.11-requests` and `2.31.0`, `glibc-2.38-44-bin` is `glibc` and
//! `2.38-44-bin`, and `source` is `source` with no version. The tests compare a
//! table of names with what `nix eval` answers.

/// `(name, version)` of a derivation name; the version is empty when there is none.
pub fn parse(s: &str) -> (&str, &str) {
    let b = s.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'-' && b.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            // `-` is ASCII, so both ends are character boundaries.
            return (&s[..i], &s[i + 1..]);
        }
    }
    (s, "")
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn splits_at_the_first_dash_before_a_non_letter() {
        assert_eq!(parse("hello-2.12.1"), ("hello", "2.12.1"));
        assert_eq!(parse("source"), ("source", ""));
        assert_eq!(parse("foo-bar"), ("foo-bar", ""));
        assert_eq!(parse("foo-"), ("foo-", ""));
        assert_eq!(parse("foo--1"), ("foo", "-1"));
        assert_eq!(parse("glibc-2.38-44-bin"), ("glibc", "2.38-44-bin"));
        assert_eq!(parse("-1"), ("", "1"));
        assert_eq!(parse("a-é"), ("a", "é"));
    }
}
