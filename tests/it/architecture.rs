//! The rules of docs/architecture.md, held against the source: which module may use
//! which (the page's table is read as the rule), that every error type says its
//! exit-code class, and that lib.rs lists every module. Plain text scans of
//! `src/`: cheap, and they keep the page true.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::support::repo;

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The source without comment lines (doc comments link to modules they do not use).
fn code_of(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names after `prefix` (`crate::`):
/// `crate::io::cas` gives `io`, `crate::{bundle::x, io}` gives `bundle` and `io`.
fn used_modules(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::`, `my_crate::`
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The names at the first level of the group.
            let (mut depth, mut item_start) = (0usize, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    _ if item_start && !c.is_whitespace() => {
                        used.insert(ident(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            used.insert(ident(rest));
        }
    }
    used.remove("");
    used
}

/// The rows of the table under "What each folder may import": `src/io/` (or
/// `src/time.rs`) to the modules it may use.
fn allowed() -> BTreeMap<String, BTreeSet<String>> {
    let page = fs::read_to_string(repo().join("docs/architecture.md")).unwrap();
    let section = page
        .split("## What each folder may import")
        .nth(1)
        .expect("docs/architecture.md has the section `What each folder may import`");
    let mut rows = BTreeMap::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, folder, may, _] = cells[..] else {
            continue;
        };
        let Some(folder) = folder.strip_prefix("`src/") else {
            continue;
        };
        let folder = folder.trim_end_matches('`').trim_end_matches('/');
        let may = may
            .split(',')
            .map(|m| m.trim().trim_matches('`').to_string())
            .filter(|m| !m.is_empty())
            .collect();
        rows.insert(folder.trim_end_matches(".rs").to_string(), may);
    }
    assert!(rows.len() > 10, "the table was not found: {rows:?}");
    rows
}

#[test]
fn each_folder_imports_only_what_docs_architecture_md_allows() {
    let src = repo().join("src");
    let rules = allowed();
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for file in rust_files(&src) {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == "lib.rs" {
            continue;
        }
        let top = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        seen.insert(top.clone());
        let Some(may) = rules.get(&top) else {
            wrong.push(format!(
                "src/{rel}: `{top}` has no row in docs/architecture.md's table"
            ));
            continue;
        };
        let code = code_of(&file);
        // The binary reaches the library as `gapbundle::`, the library itself as
        // `crate::`.
        let prefix = if top == "main" {
            "gapbundle::"
        } else {
            "crate::"
        };
        for m in used_modules(&code, prefix) {
            if m != top && !may.contains(&m) {
                wrong.push(format!(
                    "src/{rel} uses `{m}`, which docs/architecture.md does not allow for `{top}` (allowed: {may:?})"
                ));
            }
        }
    }
    for row in rules.keys() {
        if !seen.contains(row) {
            wrong.push(format!(
                "docs/architecture.md has a row for `{row}`, which is not in src/"
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}\n", wrong.join("\n"));
}

#[test]
fn the_scan_reads_use_lines_as_rust_does() {
    let code = "use crate::{bundle::{a, b}, io::cas::Cas,\n    error};\nlet x = crate::pool::cores();\nmacro!($crate::x)";
    let used = used_modules(code, "crate::");
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["bundle", "error", "io", "pool"]
    );
}

/// The names of the error types `src/` defines with thiserror.
fn error_types() -> Vec<(String, String)> {
    let src = repo().join("src");
    let mut out = Vec::new();
    for file in rust_files(&src) {
        let text = fs::read_to_string(&file).unwrap();
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        for (at, _) in text.match_indices("thiserror::Error") {
            let after = &text[at..];
            let Some(decl) = after.lines().find(|l| {
                l.trim_start().starts_with("pub enum ") || l.trim_start().starts_with("pub struct ")
            }) else {
                continue;
            };
            let name: String = decl
                .trim_start()
                .trim_start_matches("pub enum ")
                .trim_start_matches("pub struct ")
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                // `$name` in error.rs's marker macro: the markers are listed there.
                out.push((rel.clone(), name));
            }
        }
    }
    out
}

#[test]
fn every_error_type_says_its_exit_code_class() {
    let src = repo().join("src");
    let all: String = rust_files(&src)
        .iter()
        .map(|f| fs::read_to_string(f).unwrap())
        .collect();
    let classify = fs::read_to_string(src.join("commands/mod.rs")).unwrap();
    let list = classify
        .split("known!(")
        .nth(1)
        .expect("commands/mod.rs lists the error types in `known!(…)`");
    let list = &list[..list.find(");").unwrap()];
    let types = error_types();
    assert!(types.len() > 15, "{types:?}");
    let mut missing = Vec::new();
    for (file, name) in &types {
        if !all.contains(&format!("Classify for {name} ")) {
            missing.push(format!(
                "src/{file}: `{name}` has no `impl crate::error::Classify for {name}`"
            ));
        }
        if !list.contains(&format!("::{name},")) {
            missing.push(format!(
                "src/{file}: `{name}` is not in the list of `commands::class_of`"
            ));
        }
    }
    // The markers, as error.rs's `markers!` block names them (`Name => Class;`).
    let error_rs = fs::read_to_string(src.join("error.rs")).unwrap();
    let block = error_rs
        .split("markers! {")
        .nth(1)
        .expect("error.rs declares its markers in `markers! { … }`");
    let markers: Vec<&str> = block[..block.find("\n}").unwrap()]
        .lines()
        .filter_map(|l| l.trim().split_once(" => "))
        .map(|(name, _)| name)
        .collect();
    assert!(markers.len() >= 6, "{markers:?}");
    for marker in markers {
        if !list.contains(&format!("::{marker},")) {
            missing.push(format!(
                "the marker `{marker}` is not in the list of `commands::class_of`"
            ));
        }
    }
    assert!(missing.is_empty(), "\n{}\n", missing.join("\n"));
}

#[test]
fn lib_rs_lists_every_module() {
    let lib = fs::read_to_string(repo().join("src/lib.rs")).unwrap();
    let docs: String = lib
        .lines()
        .filter(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut missing = Vec::new();
    for line in lib.lines() {
        if let Some(m) = line.strip_prefix("pub mod ") {
            let m = m.trim_end_matches(';');
            if !docs.contains(&format!("[`{m}`]")) {
                missing.push(m.to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "src/lib.rs's module list (its //! docs) does not name: {missing:?}"
    );
}
