//! `manifests: - path: ./extra/*.yaml`: shell-style globs, expanded against a
//! directory listing the caller supplies (so this stays pure and testable).
//!
//! Supported: `*` (any run of characters within one path component), `?` (one
//! character), `[abc]`, `[a-z]`, `[!x]` classes, and `**` as a whole component (any
//! number of directories, including none). Names starting with `.` are only matched
//! by a pattern component that starts with `.`, as in a shell. Matches are sorted,
//! so the order of documents never depends on the file system.

use std::path::{Path, PathBuf};

/// Whether a path component has glob characters.
pub fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether `name` matches the one-component pattern `pat`.
pub fn matches(pat: &str, name: &str) -> bool {
    if name.starts_with('.') && !pat.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    match_from(&p, &n)
}

fn match_from(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| match_from(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && match_from(&p[1..], &n[1..]),
        Some('[') => {
            let Some(close) = p.iter().skip(2).position(|c| *c == ']').map(|i| i + 2) else {
                // No closing bracket: a literal `[`.
                return n.first() == Some(&'[') && match_from(&p[1..], &n[1..]);
            };
            let Some(c) = n.first() else { return false };
            let (negate, set) = match p[1] {
                '!' | '^' => (true, &p[2..close]),
                _ => (false, &p[1..close]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == '-' {
                    hit |= set[i] <= *c && *c <= set[i + 2];
                    i += 3;
                } else {
                    hit |= set[i] == *c;
                    i += 1;
                }
            }
            hit != negate && match_from(&p[close + 1..], &n[1..])
        }
        Some(c) => n.first() == Some(c) && match_from(&p[1..], &n[1..]),
    }
}

/// One entry of a directory listing: its name and whether it is a directory.
pub type Entry = (String, bool);

/// Expands `pattern` (relative components, `/`-separated) under `base`, calling
/// `list` to read a directory (an unreadable one lists as empty). Returns matching
/// files, sorted, without duplicates. A pattern without wildcards is returned as is
/// when `is_file` says it exists.
pub fn expand(
    base: &Path,
    pattern: &str,
    list: &dyn Fn(&Path) -> Vec<Entry>,
    is_file: &dyn Fn(&Path) -> bool,
) -> Vec<PathBuf> {
    let comps: Vec<&str> = pattern
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let start = if pattern.starts_with('/') {
        PathBuf::from("/")
    } else {
        base.to_path_buf()
    };
    let mut out = Vec::new();
    walk(&start, &comps, list, is_file, &mut out, 0);
    out.sort();
    out.dedup();
    out
}

fn walk(
    dir: &Path,
    comps: &[&str],
    list: &dyn Fn(&Path) -> Vec<Entry>,
    is_file: &dyn Fn(&Path) -> bool,
    out: &mut Vec<PathBuf>,
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    let Some((first, rest)) = comps.split_first() else {
        if is_file(dir) {
            out.push(dir.to_path_buf());
        }
        return;
    };
    if *first == "**" {
        walk(dir, rest, list, is_file, out, depth + 1);
        for (name, is_dir) in list(dir) {
            if is_dir && !name.starts_with('.') {
                walk(&dir.join(name), comps, list, is_file, out, depth + 1);
            }
        }
    } else if has_wildcard(first) {
        for (name, is_dir) in list(dir) {
            if matches(first, &name) && (is_dir || rest.is_empty()) {
                walk(&dir.join(name), rest, list, is_file, out, depth + 1);
            }
        }
    } else {
        walk(&dir.join(first), rest, list, is_file, out, depth + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_matching() {
        assert!(matches("*.yaml", "a.yaml"));
        assert!(!matches("*.yaml", "a.yml"));
        assert!(!matches("*.yaml", ".hidden.yaml"));
        assert!(matches(".*.yaml", ".hidden.yaml"));
        assert!(matches("a?c", "abc") && !matches("a?c", "ac"));
        assert!(matches("[ab]*", "b1") && !matches("[ab]*", "c1"));
        assert!(matches("x[0-9]", "x7") && !matches("x[!0-9]", "x7"));
        assert!(matches("[", "[") && !matches("[", "a"));
        assert!(matches("*", "") && matches("**", "x"));
    }

    #[test]
    fn expansion_is_sorted_and_recursive() {
        let tree: &[(&str, &[(&str, bool)])] = &[
            ("/b", &[("extra", true), ("top.yaml", false)]),
            (
                "/b/extra",
                &[
                    ("b.yaml", false),
                    ("a.yaml", false),
                    ("sub", true),
                    ("c.txt", false),
                ],
            ),
            ("/b/extra/sub", &[("d.yaml", false)]),
        ];
        let list = |p: &Path| -> Vec<Entry> {
            tree.iter()
                .find(|(d, _)| Path::new(d) == p)
                .map(|(_, e)| e.iter().map(|(n, d)| (n.to_string(), *d)).collect())
                .unwrap_or_default()
        };
        let files = [
            "/b/top.yaml",
            "/b/extra/a.yaml",
            "/b/extra/b.yaml",
            "/b/extra/c.txt",
            "/b/extra/sub/d.yaml",
        ];
        let is_file = |p: &Path| files.iter().any(|f| Path::new(f) == p);
        let got = |pat: &str| -> Vec<String> {
            expand(Path::new("/b"), pat, &list, &is_file)
                .iter()
                .map(|p| p.display().to_string())
                .collect()
        };
        assert_eq!(
            got("./extra/*.yaml"),
            ["/b/extra/a.yaml", "/b/extra/b.yaml"]
        );
        assert_eq!(
            got("**/*.yaml"),
            [
                "/b/extra/a.yaml",
                "/b/extra/b.yaml",
                "/b/extra/sub/d.yaml",
                "/b/top.yaml"
            ]
        );
        assert_eq!(got("top.yaml"), ["/b/top.yaml"]);
        assert!(got("missing.yaml").is_empty());
        assert!(got("extra/*.json").is_empty());
    }
}
