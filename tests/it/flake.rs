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

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::{
    assert_report, cli_report, create_cmd, gapbundle, gapbundle_bin, json_stdout, nix, repo,
    require_tool, run, run_stdout, tool,
};

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
    assert_report(&v, "man");
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

// ---------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------

/// Where nixpkgs' lib is (a nix-community/nixpkgs.lib checkout, whose `lib/` is
/// imported), or None after saying loudly that the calling test did not run. The
/// message goes straight to stderr, past cargo's capture, so it shows when the test
/// "passes" too.
fn nixpkgs_lib(test: &str, what: &str) -> Option<PathBuf> {
    match std::env::var_os("NIXPKGS_LIB") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("lib/default.nix").is_file(),
                "NIXPKGS_LIB={} has no lib/default.nix: point it at a checkout of nix-community/nixpkgs.lib",
                dir.display()
            );
            Some(dir)
        }
        _ => {
            let msg = format!(
                "\n\n*** {test}: {what} test did NOT run: set NIXPKGS_LIB=/path/to/nixpkgs.lib \
                 (a checkout of github.com/nix-community/nixpkgs.lib; never commit it) ***\n\n"
            );
            let _ = std::io::stderr().write_all(msg.as_bytes());
            None
        }
    }
}

/// Every `.nix` file of the repository (not under target/ or hidden folders).
fn nix_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else if name.ends_with(".nix") {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&repo(), &mut v);
    v.sort();
    v
}

/// Copies `rel` (a file or folder of the repository) to the same place under `dst`.
fn copy_into(rel: &str, dst: &Path) {
    fn copy(src: &Path, dst: &Path) {
        if src.is_dir() {
            fs::create_dir_all(dst).unwrap();
            for e in fs::read_dir(src).unwrap() {
                let e = e.unwrap();
                copy(&e.path(), &dst.join(e.file_name()));
            }
        } else {
            fs::create_dir_all(dst.parent().unwrap()).unwrap();
            fs::copy(src, dst).unwrap();
        }
    }
    copy(&repo().join(rel), &dst.join(rel));
}

/// The repository's flake as a flake reference Nix can read offline.
///
/// The repository is a git checkout, and Nix shows a `git+file` flake only the
/// files git tracks, so a file added but not yet committed (as in a working copy
/// under review) would be invisible; `path:` on the checkout itself would copy all
/// of target/ into the store. So the files the flake's evaluation reads are copied
/// into a fresh git repository and added there, which is what a user's clone is.
/// Next to it: a stub standing in for nixpkgs (`--override-input nixpkgs`), since
/// no flake.lock is committed and nixpkgs cannot be fetched here.
struct FlakeCopy {
    dir: TempDir,
}

impl FlakeCopy {
    fn new(stub_outputs: &str, lib: Option<&Path>) -> FlakeCopy {
        let dir = tempfile::tempdir().unwrap();
        let flake = dir.path().join("flake");
        for rel in ["flake.nix", "nix", "Cargo.toml", "Cargo.lock", "tests/nix"] {
            copy_into(rel, &flake);
        }
        run(tool("git").arg("-C").arg(&flake).args(["init", "-q"]));
        run(tool("git").arg("-C").arg(&flake).args(["add", "-A"]));
        let stub = dir.path().join("nixpkgs");
        fs::create_dir_all(&stub).unwrap();
        fs::write(
            stub.join("flake.nix"),
            format!("{{ outputs = _: {stub_outputs}; }}\n"),
        )
        .unwrap();
        if let Some(lib) = lib {
            fs::copy(
                repo().join("tests/nix/stub-nixpkgs.nix"),
                stub.join("stub-nixpkgs.nix"),
            )
            .unwrap();
            // path: inputs are copied into the store, so the lib must be inside.
            run(tool("cp")
                .arg("-r")
                .arg(lib.join("lib"))
                .arg(stub.join("lib")));
        }
        FlakeCopy { dir }
    }

    fn flake(&self) -> PathBuf {
        self.dir.path().join("flake")
    }

    fn flake_ref(&self) -> String {
        format!("git+file://{}", self.flake().display())
    }

    /// `nix ARGS... --override-input nixpkgs path:STUB`, never writing a lock.
    fn nix(&self, args: &[&str]) -> Command {
        let mut c = nix("nix");
        c.args(args).args([
            "--no-write-lock-file",
            "--override-input",
            "nixpkgs",
            &format!("path:{}", self.dir.path().join("nixpkgs").display()),
        ]);
        c
    }

    /// `nix eval --json FLAKE#ATTR --apply APPLY`.
    fn eval(&self, attr: &str, apply: &str) -> Value {
        let out = run(self
            .nix(&["eval", "--json", "--impure"])
            .arg(format!("{}#{attr}", self.flake_ref()))
            .args(["--apply", apply]));
        json_stdout(&out)
    }
}

// ---------------------------------------------------------------------------
// parsing and flake metadata
// ---------------------------------------------------------------------------

#[test]
fn every_nix_file_parses() {
    let files = nix_files();
    for want in [
        "flake.nix",
        "nix/module.nix",
        "nix/package.nix",
        "tests/nix/stubs.nix",
    ] {
        assert!(
            files.contains(&repo().join(want)),
            "{want} missing from {files:?}"
        );
    }
    for f in &files {
        run(nix("nix-instantiate").arg("--parse").arg(f));
    }
}

#[test]
fn flake_metadata_offline() {
    let copy = FlakeCopy::new("{ }", None);
    let out = run(copy
        .nix(&["flake", "metadata", "--json"])
        .arg(copy.flake_ref()));
    let meta = json_stdout(&out);
    assert!(
        meta["description"].as_str().unwrap().contains("air gap"),
        "{meta}"
    );
    let nodes = &meta["locks"]["nodes"];
    assert_eq!(
        nodes["root"]["inputs"],
        json!({"nixpkgs": "nixpkgs"}),
        "nixpkgs is the only input: {meta}"
    );
    assert_eq!(
        nodes["nixpkgs"]["original"],
        json!({"type": "github", "owner": "NixOS", "repo": "nixpkgs", "ref": "nixos-unstable"}),
        "{meta}"
    );
    assert!(
        !copy.flake().join("flake.lock").exists(),
        "metadata must not write a lock file"
    );
}

// ---------------------------------------------------------------------------
// the NixOS module, with nixpkgs' own lib
// ---------------------------------------------------------------------------

/// Evaluates tests/nix/eval-module.nix: the module, the stubs, and `config` (a Nix
/// expression).
fn eval_module(lib: &Path, config: &str, pkgs_has_gapbundle: bool) -> Value {
    let out = run(nix("nix-instantiate")
        // --read-write-mode: toFile and path literals really reach the store.
        .args(["--eval", "--strict", "--json", "--read-write-mode"])
        .arg(repo().join("tests/nix/eval-module.nix"))
        .arg("--arg")
        .arg("lib")
        .arg(format!("import {}/lib", lib.display()))
        .args(["--arg", "config", config])
        .args([
            "--arg",
            "pkgsHasGapbundle",
            if pkgs_has_gapbundle { "true" } else { "false" },
        ]));
    json_stdout(&out)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn nixos_module_activate_option_evaluates_with_nixpkgs_lib() {
    let Some(lib) = nixpkgs_lib(
        "nixos_module_activate_option_evaluates_with_nixpkgs_lib",
        "module evaluation",
    ) else {
        return;
    };
    let key = "k:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    for (value, flag) in [
        ("switch", "--activation switch"),
        ("boot", "--activation boot"),
    ] {
        let v = eval_module(
            &lib,
            &format!(
                r#"{{ services.gapbundle = {{ enable = true; trustedKeys = [ "{key}" ]; activate = "{value}"; }}; }}"#
            ),
            true,
        );
        assert_eq!(v["failedAssertions"], json!([]), "{v}");
        let exec = v["service"]["serviceConfig"]["ExecStart"].as_str().unwrap();
        assert!(exec.contains(flag), "{exec}");
        // The activation it runs must not restart the service running it.
        assert_eq!(v["service"]["restartIfChanged"], false, "{v}");
    }
    let v = eval_module(
        &lib,
        &format!(
            r#"{{ services.gapbundle = {{ enable = true; trustedKeys = [ "{key}" ]; activate = "switch"; nixStore = "/mnt/target"; }}; }}"#
        ),
        true,
    );
    assert!(
        v["failedAssertions"]
            .to_string()
            .contains("only the host's own store"),
        "{v}"
    );
}

#[test]
fn nixos_module_evaluates_with_nixpkgs_lib() {
    let Some(lib) = nixpkgs_lib(
        "nixos_module_evaluates_with_nixpkgs_lib",
        "module evaluation",
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let k1 = run_stdout(
        gapbundle()
            .args(["key", "generate", "--name", "k1", "--dir"])
            .arg(tmp.path()),
    );
    let k1 = k1.lines().last().unwrap().trim().to_string();
    run(gapbundle()
        .args(["key", "generate", "--name", "k2", "--dir"])
        .arg(tmp.path()));
    let k2_file = tmp.path().join("k2.pub");

    // Enabled, K3s on, two signers required: one key as text, one as a path literal
    // (copied into the store), one runtime path used as is.
    let config = format!(
        r#"{{
          services.k3s.enable = true;
          services.gapbundle = {{
            enable = true;
            trustedKeys = [ "{k1}" {k2} "/etc/gapbundle/trusted.d" ];
            threshold = 2;
            containerdSocket = "/run/containerd/containerd.sock";
          }};
        }}"#,
        k2 = k2_file.display()
    );
    let v = eval_module(&lib, &config, true);
    assert_eq!(v["failedAssertions"], json!([]), "{v}");
    let exec = v["service"]["serviceConfig"]["ExecStart"]
        .as_str()
        .unwrap()
        .to_string();
    let words: Vec<&str> = exec.split(' ').collect();
    assert!(
        words[0].ends_with("-gapbundle-inbox/bin/gapbundle-inbox"),
        "{exec}"
    );
    for want in [
        "--inbox /var/lib/gapbundle/inbox",
        "--state-dir /var/lib/gapbundle",
        "--settle 5 --",
        "--threshold 2",
        "--containerd /run/containerd/containerd.sock",
        "--trust /etc/gapbundle/trusted.d",
    ] {
        assert!(exec.contains(want), "ExecStart lacks {want:?}: {exec}");
    }
    for absent in ["--k3s-root", "--nix-store"] {
        assert!(!exec.contains(absent), "null options add no flag: {exec}");
    }
    // By default the inbox imports a bundle's NixOS system without activating it.
    assert!(exec.contains("--activation none"), "{exec}");
    assert_eq!(v["service"]["restartIfChanged"], true, "{v}");
    let trusts: Vec<&str> = words
        .windows(2)
        .filter(|w| w[0] == "--trust")
        .map(|w| w[1])
        .collect();
    assert_eq!(trusts.len(), 3, "{exec}");
    assert!(trusts[0].ends_with("-gapbundle-trusted-keys"), "{exec}");
    assert!(
        trusts[1].starts_with("/nix/store/") && trusts[1].ends_with("-k2.pub"),
        "{exec}"
    );
    // The key text file is real (the stub's writeText is builtins.toFile), and the
    // real binary accepts it: a bundle signed by k1 verifies with it alone.
    assert_eq!(fs::read_to_string(trusts[0]).unwrap(), format!("{k1}\n"));
    assert_eq!(
        fs::read_to_string(trusts[1]).unwrap(),
        fs::read_to_string(&k2_file).unwrap()
    );
    let bundle = make_bundle(tmp.path(), &tmp.path().join("k1.sec"));
    run(gapbundle()
        .args(["verify", "--quiet", "--trust", trusts[0]])
        .arg(&bundle));

    let service = &v["service"];
    assert!(strings(&service["after"]).contains(&"k3s.service".into()));
    assert_eq!(strings(&service["wants"]), ["k3s.service"]);
    assert_eq!(service["serviceConfig"]["Type"], "oneshot");
    assert_eq!(service["serviceConfig"]["Nice"], 10);
    assert_eq!(strings(&service["path"]), ["nix-2.28.4"]);
    assert_eq!(
        v["pathUnit"]["pathConfig"]["PathExistsGlob"],
        "/var/lib/gapbundle/inbox/*.gapb"
    );
    assert_eq!(
        v["pathUnit"]["pathConfig"]["Unit"],
        "gapbundle-inbox.service"
    );
    let tmpfiles = strings(&v["tmpfiles"]);
    for dir in [
        "/var/lib/gapbundle/inbox",
        "/var/lib/gapbundle/inbox/processed",
        "/var/lib/gapbundle/inbox/failed",
        "/var/lib/gapbundle/imported",
    ] {
        assert!(
            tmpfiles.contains(&format!("d {dir} 0750 root root - -")),
            "{tmpfiles:?}"
        );
    }
    assert_eq!(strings(&v["systemPackages"]), ["gapbundle-0.1.0"]);
    // The service runs exactly the script the inbox tests below run.
    assert_eq!(
        v["script"]["text"].as_str().unwrap(),
        fs::read_to_string(repo().join("nix/gapbundle-inbox.sh")).unwrap()
    );
    assert_eq!(
        strings(&v["script"]["runtimeInputs"]),
        [
            "coreutils-9.5",
            "jq-1.7.1",
            "util-linux-2.40",
            "gapbundle-0.1.0"
        ]
    );

    // Without K3s there is no ordering on it.
    let v = eval_module(
        &lib,
        &format!(r#"{{ services.gapbundle = {{ enable = true; trustedKeys = [ "{k1}" ]; }}; }}"#),
        true,
    );
    assert!(!v["service"]["after"].to_string().contains("k3s"), "{v}");
    assert_eq!(v["service"]["wants"], json!([]));
    assert!(v["service"]["serviceConfig"]["ExecStart"]
        .as_str()
        .unwrap()
        .contains("--threshold 1"));

    // Disabled: the module sets nothing at all.
    for config in [
        "{ }".to_string(),
        format!(
            r#"{{ services.k3s.enable = true; services.gapbundle.trustedKeys = [ "{k1}" ]; }}"#
        ),
    ] {
        let v = eval_module(&lib, &config, true);
        assert_eq!(v["serviceNames"], json!([]), "{v}");
        assert_eq!(v["pathNames"], json!([]), "{v}");
        assert_eq!(v["tmpfiles"], json!([]), "{v}");
        assert_eq!(v["systemPackages"], json!([]), "{v}");
        assert_eq!(v["failedAssertions"], json!([]), "{v}");
    }

    // Every other option maps to its flag, arguments that are not plain words are
    // quoted for systemd (with % and $ doubled), and mkDefault values yield.
    let v = eval_module(
        &lib,
        &format!(
            r#"{{
              services.gapbundle = {{
                enable = true;
                trustedKeys = [ "{k1}" ];
                inbox = "/mnt/usb/gap inbox";
                nixStore = "local?root=/mnt/target";
                k3sRoot = "/srv/k3s";
                extraArgs = [ "--skip-manifests" "50% of $HOME" ];
              }};
              systemd.services.gapbundle-inbox.serviceConfig.Nice = 0;
            }}"#
        ),
        true,
    );
    let exec = v["service"]["serviceConfig"]["ExecStart"].as_str().unwrap();
    for want in [
        r#"--inbox "/mnt/usb/gap inbox""#,
        r#"--nix-store "local?root=/mnt/target""#,
        "--k3s-root /srv/k3s",
        "--skip-manifests",
        r#""50%% of $$HOME""#,
    ] {
        assert!(exec.contains(want), "ExecStart lacks {want:?}: {exec}");
    }
    assert!(!exec.contains("--containerd"), "{exec}");
    assert_eq!(
        v["service"]["serviceConfig"]["Nice"], 0,
        "a user's value wins"
    );
    assert_eq!(
        v["pathUnit"]["pathConfig"]["PathExistsGlob"],
        "/mnt/usb/gap inbox/*.gapb"
    );
    assert!(strings(&v["tmpfiles"])
        .contains(&r#"d "/mnt/usb/gap inbox/processed" 0750 root root - -"#.to_string()));

    // Misconfigurations are assertions with a way out, not evaluation errors.
    let failed = |config: &str, has_pkg: bool| -> String {
        eval_module(&lib, config, has_pkg)["failedAssertions"].to_string()
    };
    let no_pkg = failed(
        &format!(r#"{{ services.gapbundle = {{ enable = true; trustedKeys = [ "{k1}" ]; }}; }}"#),
        false,
    );
    assert!(no_pkg.contains("overlays.default"), "{no_pkg}");
    let no_keys = failed("{ services.gapbundle.enable = true; }", true);
    assert!(no_keys.contains("trustedKeys is empty"), "{no_keys}");
    let unsigned = failed(
        r#"{ services.gapbundle = { enable = true; extraArgs = [ "--allow-unsigned" ]; }; }"#,
        true,
    );
    assert_eq!(unsigned, "[]");
    let too_high = failed(
        &format!(
            r#"{{ services.gapbundle = {{ enable = true; trustedKeys = [ "{k1}" ]; threshold = 2; }}; }}"#
        ),
        true,
    );
    assert!(too_high.contains("threshold (2)"), "{too_high}");
}

#[test]
fn flake_outputs_evaluate_with_stub_nixpkgs() {
    let Some(lib) = nixpkgs_lib(
        "flake_outputs_evaluate_with_stub_nixpkgs",
        "flake outputs evaluation",
    ) else {
        return;
    };
    let copy = FlakeCopy::new(
        "import ./stub-nixpkgs.nix { lib = import ./lib; }",
        Some(&lib),
    );
    // (The package's `src` is a lib.fileset, which needs builtins.readFileType from
    // Nix 2.14; Nix 2.8 here cannot evaluate it, so it is not forced.)
    for system in ["x86_64-linux", "aarch64-linux"] {
        let p = copy.eval(
            &format!("packages.{system}.default"),
            "p: { inherit (p) name pname doCheck env; lock = baseNameOf (toString p.cargoLock.lockFile); \
             inputs = map (d: d.name) p.nativeBuildInputs; main = p.meta.mainProgram; }",
        );
        assert_eq!(
            p,
            json!({
                "name": "gapbundle-0.1.0", "pname": "gapbundle", "doCheck": false,
                "env": {"PROTOC": "/nix/store/00000000000000000000000000000000-protobuf/bin/protoc"},
                "lock": "Cargo.lock", "inputs": ["protobuf", "installShellFiles"], "main": "gapbundle",
            })
        );
        let app = copy.eval(&format!("apps.{system}.default"), "a: a");
        assert_eq!(app["type"], "app");
        assert!(app["program"]
            .as_str()
            .unwrap()
            .ends_with("-gapbundle-0.1.0/bin/gapbundle"));
        let shell = copy.eval(
            &format!("devShells.{system}.default"),
            "s: { packages = map (p: p.name) s.packages; inherit (s) PROTOC; }",
        );
        let packages = strings(&shell["packages"]);
        for tool in [
            "cargo",
            "clippy",
            "rustfmt",
            "nix",
            "containerd",
            "skopeo",
            "umoci",
            "kubernetes-helm",
            "kustomize",
            "distribution",
            "docker-registry",
            "zstd",
            "protobuf",
            "apacheHttpd",
        ] {
            assert!(packages.contains(&tool.to_string()), "{tool}: {packages:?}");
        }
        let checks = copy.eval(&format!("checks.{system}"), "builtins.attrNames");
        assert_eq!(
            strings(&checks),
            [
                "clippy",
                "fmt",
                "inbox-script",
                "nixos-module",
                "package",
                "unit-tests"
            ]
        );
    }
    // The overlay adds the package to a package set.
    let name = copy.eval(
        "overlays.default",
        &format!(
            "o: let pkgs = (import {}/stub-nixpkgs.nix {{ lib = import {}/lib; }}).legacyPackages.x86_64-linux; \
             in (o pkgs pkgs).gapbundle.name",
            repo().join("tests/nix").display(),
            lib.display()
        ),
    );
    assert_eq!(name, "gapbundle-0.1.0");
    // The flake's module works where pkgs has no gapbundle: its package is the
    // flake's own build.
    let v = copy.eval(
        "nixosModules.default",
        &format!(
            r#"m: import {}/tests/nix/eval-module.nix {{
                 lib = import {}/lib; module = m; pkgsHasGapbundle = false;
                 config.services.gapbundle = {{ enable = true; trustedKeys = [ "a:b" ]; }};
               }}"#,
            copy.flake().display(),
            lib.display()
        ),
    );
    assert_eq!(v["failedAssertions"], json!([]), "{v}");
    assert_eq!(strings(&v["systemPackages"]), ["gapbundle-0.1.0"]);
}

// ---------------------------------------------------------------------------
// the inbox script, run for real by bash
// ---------------------------------------------------------------------------

/// A signed bundle of examples/quickstart (no network needed) at DIR/hello.gapb.
fn make_bundle(dir: &Path, key: &Path) -> PathBuf {
    let out = dir.join("hello.gapb");
    run(create_cmd(
        &repo().join("examples/quickstart/bundle.yaml"),
        &out,
        key,
        &dir.join("cache"),
    )
    .arg("--lock")
    .arg(dir.join("quickstart.lock"))
    .arg("--quiet"));
    out
}

struct Inbox {
    dir: TempDir,
    bin: PathBuf,
}

impl Inbox {
    /// An inbox, a state folder, and a bin folder put first on PATH whose
    /// `gapbundle` is the real binary behind a logging wrapper.
    fn new() -> Inbox {
        require_tool("jq");
        require_tool("flock");
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir_all(dir.path().join("inbox")).unwrap();
        fs::create_dir_all(&bin).unwrap();
        let inbox = Inbox { dir, bin };
        inbox.log_imports(0);
        inbox
    }

    /// Puts a wrapper in front of the real binary that records the arguments of
    /// every `gapbundle import` (and sleeps before running it, to hold the lock).
    fn log_imports(&self, sleep_secs: u32) {
        let script = format!(
            r#"#!/bin/sh
if [ "$1" = import ]; then
    printf '%s\n' "$*" >>'{log}'
    sleep {sleep_secs}
fi
exec '{real}' "$@"
"#,
            log = self.dir.path().join("import.log").display(),
            real = gapbundle_bin().display()
        );
        let path = self.bin.join("gapbundle");
        fs::write(&path, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Import arguments trusting `key` and staging images into a K3s folder (no
    /// containerd needed), with spaces in both paths.
    fn staged_args(&self, key: &Path) -> Vec<String> {
        vec![
            "--trust".into(),
            key.display().to_string(),
            "--threshold".into(),
            "1".into(),
            "--staged".into(),
            "--k3s-root".into(),
            self.k3s_root().display().to_string(),
        ]
    }

    fn k3s_root(&self) -> PathBuf {
        self.dir.path().join("k3s root")
    }

    fn imports(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("import.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn inbox(&self) -> PathBuf {
        self.dir.path().join("inbox")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn drop_in(&self, bundle: &Path, name: &str) {
        fs::copy(bundle, self.inbox().join(name)).unwrap();
    }

    fn command<S: AsRef<std::ffi::OsStr>>(&self, import_args: &[S]) -> Command {
        let mut c = tool("bash");
        c.arg(repo().join("nix/gapbundle-inbox.sh"))
            .arg("--inbox")
            .arg(self.inbox())
            .arg("--state-dir")
            .arg(self.state())
            .args(["--settle", "0", "--"])
            .args(import_args);
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.bin.clone()];
        dirs.extend(std::env::split_paths(&path));
        c.env("PATH", std::env::join_paths(dirs).unwrap());
        // The imports' own receipts stay in the test's state folder too.
        c.env("GAPBUNDLE_STATE_DIR", self.state());
        c
    }

    fn run<S: AsRef<std::ffi::OsStr>>(&self, import_args: &[S]) -> String {
        run_stdout(&mut self.command(import_args))
    }

    fn receipt(&self, sub: &str, name: &str) -> Value {
        let p = self.inbox().join(sub).join(format!("{name}.receipt.json"));
        let text = fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}; inbox: {:?}", p.display(), self.listing()));
        serde_json::from_str(&text).unwrap()
    }

    fn listing(&self) -> Vec<String> {
        let mut v = Vec::new();
        for sub in ["", "processed", "failed"] {
            if let Ok(rd) = fs::read_dir(self.inbox().join(sub)) {
                for e in rd {
                    let e = e.unwrap();
                    v.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        v.sort();
        v
    }
}

#[test]
fn inbox_imports_each_bundle_once_and_files_it_with_a_receipt() {
    let inbox = Inbox::new();
    let keys = inbox.dir.path().join("key dir");
    run(gapbundle()
        .args(["key", "generate", "--quiet", "--name", "k1", "--dir"])
        .arg(&keys));
    let bundle = make_bundle(inbox.dir.path(), &keys.join("k1.sec"));
    let digest = cli_report(
        &run(gapbundle().args(["inspect", "--json"]).arg(&bundle)),
        "inspect",
    )["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let args = inbox.staged_args(&keys.join("k1.pub"));

    // The same bundle twice, under names with spaces and a leading dash.
    inbox.drop_in(&bundle, "first copy.gapb");
    inbox.drop_in(&bundle, "-second copy.gapb");
    inbox.run(&args);
    let imports = inbox.imports();
    assert_eq!(imports.len(), 1, "imported once: {imports:?}");
    let first_name = if imports[0].ends_with("first copy.gapb") {
        "first copy.gapb"
    } else {
        "-second copy.gapb"
    };
    let second_name = if first_name == "first copy.gapb" {
        "-second copy.gapb"
    } else {
        "first copy.gapb"
    };
    assert!(
        imports[0].starts_with(&format!("import --json {} -- ", args.join(" "))),
        "{imports:?}"
    );
    let first = inbox.receipt("processed", first_name);
    assert_eq!(first["status"], "imported", "{first}");
    assert_eq!(first["exitCode"], 0);
    assert_eq!(first["digest"], digest.as_str());
    assert_eq!(first["result"]["ok"], true, "the --json output: {first}");
    assert_report(&first["result"], "import");
    // The real import staged the image archive where K3s would load it.
    let archive = inbox.k3s_root().join("agent/images/quickstart.tar");
    assert!(archive.is_file(), "{first}");
    assert_eq!(
        first["result"]["targets"][0]["result"]["archive"],
        archive.display().to_string()
    );
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    let second = inbox.receipt("processed", second_name);
    assert_eq!(second["status"], "duplicate", "{second}");
    assert_eq!(second["previousImport"]["bundle"], first_name);
    assert!(inbox.inbox().join("processed").join(first_name).is_file());
    assert!(inbox.inbox().join("processed").join(second_name).is_file());
    let record = inbox
        .state()
        .join("imported")
        .join(format!("{}.json", digest.trim_start_matches("sha256:")));
    assert!(record.is_file(), "digest recorded outside the inbox");

    // Dropped in again later, even after processed/ was emptied (a swapped USB
    // disk): still never imported twice; the name already taken gets a timestamp.
    inbox.drop_in(&bundle, "first copy.gapb");
    inbox.run(&args);
    let renamed: Vec<String> = inbox
        .listing()
        .into_iter()
        .filter(|n| n.starts_with("processed/first copy.") && n.ends_with("Z.gapb"))
        .collect();
    assert_eq!(renamed.len(), 1, "{:?}", inbox.listing());
    let stamped = renamed[0].trim_start_matches("processed/");
    assert_eq!(inbox.receipt("processed", stamped)["status"], "duplicate");
    fs::remove_dir_all(inbox.inbox().join("processed")).unwrap();
    inbox.drop_in(&bundle, "first copy.gapb");
    inbox.run(&args);
    assert_eq!(inbox.imports().len(), 1, "{:?}", inbox.imports());
    assert_eq!(
        inbox.listing(),
        [
            "/failed",
            "/processed",
            "processed/first copy.gapb",
            "processed/first copy.gapb.receipt.json"
        ]
    );
}

#[test]
fn inbox_files_failures_and_leaves_other_files_alone() {
    let inbox = Inbox::new();
    let keys = inbox.dir.path().join("keys");
    for name in ["k1", "k2"] {
        run(gapbundle()
            .args(["key", "generate", "--quiet", "--name", name, "--dir"])
            .arg(&keys));
    }
    let bundle = make_bundle(inbox.dir.path(), &keys.join("k1.sec"));
    let k2 = keys.join("k2.pub");
    let k2 = k2.to_str().unwrap();

    inbox.drop_in(&bundle, "signed by k1.gapb");
    fs::write(inbox.inbox().join("not a bundle.gapb"), b"hello").unwrap();
    fs::create_dir(inbox.inbox().join("folder.gapb")).unwrap();
    inbox.drop_in(&bundle, ".partial.gapb");
    inbox.drop_in(&bundle, "readme.txt");

    // The real binary: a signature from an untrusted key, and a damaged file.
    let out = inbox.run(&["--trust", k2]);
    let r = inbox.receipt("failed", "signed by k1.gapb");
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["exitCode"], 3, "verification failure: {r}");
    assert_eq!(r["result"]["ok"], false);
    assert!(
        r["result"]["error"].as_str().unwrap().contains("trusted"),
        "{r}"
    );
    assert!(r["digest"].as_str().unwrap().starts_with("sha256:"));
    let r = inbox.receipt("failed", "not a bundle.gapb");
    assert_eq!(r["status"], "failed");
    assert_ne!(r["exitCode"], 0);
    assert_eq!(r["digest"], Value::Null);
    assert!(out.contains("import failed"), "{out}");
    let listing = inbox.listing();
    for left in ["/.partial.gapb", "/folder.gapb", "/readme.txt"] {
        assert!(listing.contains(&left.to_string()), "{left}: {listing:?}");
    }
    assert!(
        !inbox
            .state()
            .join("imported")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "nothing recorded as imported"
    );

    // A failed bundle is not remembered: dropped in again, now with its signer
    // trusted, it is imported.
    inbox.drop_in(&bundle, "signed by k1.gapb");
    inbox.run(&inbox.staged_args(&keys.join("k1.pub")));
    assert_eq!(inbox.imports().len(), 3, "{:?}", inbox.imports());
    assert_eq!(
        inbox.receipt("processed", "signed by k1.gapb")["status"],
        "imported"
    );

    // Bad usage of the script itself is exit code 2.
    let mut c = tool("bash");
    c.arg(repo().join("nix/gapbundle-inbox.sh"))
        .args(["--inbox"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn inbox_runs_wait_for_each_other() {
    let inbox = Inbox::new();
    let keys = inbox.dir.path().join("keys");
    run(gapbundle()
        .args(["key", "generate", "--quiet", "--name", "k1", "--dir"])
        .arg(&keys));
    let bundle = make_bundle(inbox.dir.path(), &keys.join("k1.sec"));
    inbox.log_imports(1);
    for i in 0..3 {
        inbox.drop_in(&bundle, &format!("copy {i}.gapb"));
    }
    // Two triggers at once: the second waits on the lock, then finds the bundle
    // already imported (or nothing left at all).
    let args = inbox.staged_args(&keys.join("k1.pub"));
    let spawn = || {
        inbox
            .command(&args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (spawn(), spawn());
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    assert_eq!(inbox.imports().len(), 1, "{:?}", inbox.imports());
    let listing = inbox.listing();
    let filed = listing
        .iter()
        .filter(|n| n.starts_with("processed/") && n.ends_with(".gapb"))
        .count();
    assert_eq!(filed, 3, "{listing:?}");
}

// ---------------------------------------------------------------------------
// examples/ci-nightly, run against examples/quickstart (no network)
// ---------------------------------------------------------------------------

#[test]
fn ci_nightly_example_runs() {
    require_tool("jq");
    let tmp = tempfile::tempdir().unwrap();
    copy_into("examples/quickstart", tmp.path());
    let spec = tmp.path().join("examples/quickstart/bundle.yaml");
    let keys = tmp.path().join("keys");
    run(gapbundle()
        .args(["key", "generate", "--quiet", "--name", "release", "--dir"])
        .arg(&keys));
    let nightly = |out: &str| {
        let mut c = tool("bash");
        c.arg(repo().join("examples/ci-nightly/nightly.sh"))
            .env("SPEC", &spec)
            .env("KEY", keys.join("release.sec"))
            .env("TRUST", keys.join("release.pub"))
            .env("CACHE", tmp.path().join("cache"))
            .env("OUT", tmp.path().join(out))
            .env("GAPBUNDLE", gapbundle_bin())
            .env("SOURCE_DATE_EPOCH", "1795000000")
            .env_remove("GITHUB_STEP_SUMMARY");
        c.output().unwrap()
    };

    // No committed lock yet: --locked refuses, with gapbundle's exit code 4.
    let out = nightly("out0");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("lock"));

    // With the lock (what a developer commits), the job builds and verifies.
    run(create_cmd(
        &spec,
        &tmp.path().join("first.gapb"),
        &keys.join("release.sec"),
        &tmp.path().join("cache"),
    )
    .arg("--quiet"));
    let out = nightly("out1");
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bundle = PathBuf::from(report["bundle"].as_str().unwrap());
    let file_name = bundle.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        file_name.starts_with("quickstart-1.0-") && file_name.ends_with(".gapb"),
        "{report}"
    );
    assert_eq!(report["signers"], json!(["release"]));
    assert_eq!(report["images"], json!(["example.local/hello:1.0"]));
    assert_eq!(
        report["fetched"]["blobs"], 0,
        "the cache and the lock: {report}"
    );
    let sums = fs::read_to_string(format!("{}.sha256", bundle.display())).unwrap();
    assert!(sums.ends_with(&format!("  {file_name}\n")), "{sums}");
    // The same commit (SOURCE_DATE_EPOCH), lock and key give the same bytes.
    let out = nightly("out2");
    assert!(out.status.success(), "{out:?}");
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["digest"], report["digest"]);
    assert_eq!(
        fs::read(&bundle).unwrap(),
        fs::read(again["bundle"].as_str().unwrap()).unwrap()
    );
}

// ---------------------------------------------------------------------------
// examples/flake-outputs: the part that needs no nixpkgs
// ---------------------------------------------------------------------------

/// Runs the `manifests` output's build script of examples/flake-outputs/flake.nix by
/// hand (`helm template` of chart/, then the overlay; `kubectl kustomize` stands in
/// for `kustomize build`), since the flake itself needs nixpkgs.
#[test]
fn flake_outputs_example_chart_and_overlay_render() {
    let example = repo().join("examples/flake-outputs");
    let flake = fs::read_to_string(example.join("flake.nix")).unwrap();
    for step in [
        "cp ${./overlay}/kustomization.yaml work/",
        "helm template web ${./chart} --namespace apps > work/rendered.yaml",
        "kustomize build work > $out",
    ] {
        assert!(flake.contains(step), "flake.nix no longer runs {step:?}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    fs::create_dir(&work).unwrap();
    fs::copy(
        example.join("overlay/kustomization.yaml"),
        work.join("kustomization.yaml"),
    )
    .unwrap();
    let rendered = run_stdout(
        tool("helm")
            .args(["template", "web"])
            .arg(example.join("chart"))
            .args(["--namespace", "apps"])
            .env("HOME", tmp.path()),
    );
    fs::write(work.join("rendered.yaml"), rendered).unwrap();
    let out = run_stdout(tool("kubectl").arg("kustomize").arg(&work));
    for want in [
        "kind: Deployment",
        "kind: Service",
        "namespace: apps",
        "replicas: 2",
        "site: edge",
        "image: example.local/app:1.0",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let spec = fs::read_to_string(example.join("bundle.yaml")).unwrap();
    assert!(spec.contains("name: example.local/app:1.0"), "{spec}");
}
