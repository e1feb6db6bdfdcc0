//! Names: of sources, of manifest objects, and of the files an importer writes.
//!
//! A source names where documents came from (`chart:web`,
//! `kustomize:deploy/overlays/edge`, `manifests:extra/a.yaml`); every document of a
//! source goes into one file on the target, whose name is derived from the source
//! and restricted to safe characters so that a hostile or sloppy spec cannot make an
//! importer write outside its folder.

use super::Document;

/// Longest file name produced (well under every file system's limit).
const MAX_FILE_NAME: usize = 100;

/// A relative path as written in a spec, tidied for display: no leading `./`, no
/// doubled or trailing `/`.
pub fn tidy_path(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    let joined = parts.join("/");
    if p.starts_with('/') {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    }
}

/// The file an importer writes for `source`: `chart:web` gives `chart-web.yaml`.
/// Only `[A-Za-z0-9._-]`, never starting with `.` or `-`, at most 100 bytes.
pub fn file_name(source: &str) -> String {
    let stem = source
        .strip_suffix(".yaml")
        .or_else(|| source.strip_suffix(".yml"))
        .or_else(|| source.strip_suffix(".json"))
        .unwrap_or(source);
    let mut s = String::new();
    for c in stem.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
            c
        } else {
            '-'
        };
        if c == '-' && s.ends_with('-') {
            continue;
        }
        s.push(c);
    }
    let s = s
        .trim_start_matches(['.', '-'])
        .trim_end_matches(['.', '-']);
    let mut s = if s.is_empty() { "manifest" } else { s }.to_string();
    s.truncate(MAX_FILE_NAME - ".yaml".len());
    let s = s.trim_end_matches(['.', '-']);
    format!("{s}.yaml")
}

/// Whether `name` is one [`file_name`] can give, i.e. matches
/// `^[A-Za-z0-9_][A-Za-z0-9._-]{0,94}\.yaml$` (format spec 13.1). An importer only
/// ever removes files named like this from a bundle's folder, so anything else a
/// person put there (`notes.txt`, `app.yaml.skip`, a `.hidden` file) is left alone.
pub fn is_file_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".yaml") else {
        return false;
    };
    let mut chars = stem.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    stem.len() <= MAX_FILE_NAME - ".yaml".len()
        && (first.is_ascii_alphanumeric() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The object name of a document: `<source>/<Kind>/<namespace>/<name>`, with `_` as
/// the namespace of cluster-scoped objects (no namespace can be called `_`).
pub fn object_name(source: &str, doc: &Document) -> String {
    format!(
        "{source}/{}/{}/{}",
        doc.kind,
        doc.namespace.as_deref().unwrap_or("_"),
        doc.name
    )
}

/// What `wantedBy` says about a document: `chart:web Deployment apps/web`.
pub fn wanted_by(source: &str, doc: &Document) -> String {
    format!("{source} {}", doc.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_safe() {
        assert_eq!(file_name("chart:web"), "chart-web.yaml");
        assert_eq!(
            file_name("kustomize:deploy/overlays/edge"),
            "kustomize-deploy-overlays-edge.yaml"
        );
        assert_eq!(
            file_name("manifests:extra/a.yaml"),
            "manifests-extra-a.yaml"
        );
        assert_eq!(
            file_name("manifests:../../etc/passwd"),
            "manifests-..-..-etc-passwd.yaml"
        );
        assert_eq!(file_name("..."), "manifest.yaml");
        assert_eq!(file_name("chart:wéb ü"), "chart-w-b.yaml");
        let long = file_name(&format!("chart:{}", "x".repeat(300)));
        assert!(long.len() <= 100 && long.ends_with(".yaml"), "{long}");
        for n in [
            file_name("/abs/path"),
            file_name("-rf"),
            file_name(".hidden"),
        ] {
            assert!(!n.starts_with(['.', '-', '/']), "{n}");
            assert!(!n.contains('/'), "{n}");
        }
    }

    #[test]
    fn every_written_name_is_recognised_and_nothing_else() {
        for source in [
            "chart:web",
            "kustomize:deploy/overlays/edge",
            "manifests:../../etc/passwd",
            "...",
            "-rf",
            "_x",
            &format!("chart:{}", "x".repeat(300)),
        ] {
            let n = file_name(source);
            assert!(is_file_name(&n), "{source} gives {n}");
        }
        for n in [
            "",
            ".yaml",
            ".hidden.yaml",
            "-rf.yaml",
            "a.yml",
            "a.json",
            "a.yaml.skip",
            "a b.yaml",
            "a/b.yaml",
            "wéb.yaml",
            &format!("{}.yaml", "x".repeat(96)),
        ] {
            assert!(!is_file_name(n), "{n:?}");
        }
        assert!(is_file_name(&format!("{}.yaml", "x".repeat(95))));
    }

    #[test]
    fn tidy_paths() {
        assert_eq!(
            tidy_path("./deploy//overlays/edge/"),
            "deploy/overlays/edge"
        );
        assert_eq!(tidy_path("./"), ".");
        assert_eq!(tidy_path("/abs/./x"), "/abs/x");
    }
}
