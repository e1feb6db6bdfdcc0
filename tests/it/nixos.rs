//! NixOS systems (format.md 14.8): a fixture "system" built by the real Nix 2.8 (a
//! `builtins.derivation` with a `bin/switch-to-configuration` that records each
//! call in a file outside the store and fails when told to, and a
//! `nixos-version`), bundled with `activate`, imported into the real store with a
//! temporary `--profile`; `nix-env --list-generations` is the outside witness.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::*;

/// The switch script: appends `<name> <action>` to `$GB_SWITCH_LOG`, points
/// `$GB_CURRENT_SYSTEM` at its system for `switch` and `test` (as NixOS's
/// activation script points `/run/current-system`, before it starts units),
/// records into `$GB_SWITCH_LOG.k3s` what containerd at `$GB_CTR_ADDRESS` holds
/// in k8s.io and the files under `$GB_MANIFESTS` (when set), and fails when
/// `$GB_SWITCH_FAIL/<name>` exists.
const SWITCH: &str = r#"#!/bin/sh
echo "@NAME@ $1" >> "$GB_SWITCH_LOG"
if [ "$1" != boot ]; then
  ln -sfn @OUT@ "$GB_CURRENT_SYSTEM"
fi
if [ -n "$GB_CTR_ADDRESS" ]; then
  echo "@NAME@ $1: images" >> "$GB_SWITCH_LOG.k3s"
  ctr --address "$GB_CTR_ADDRESS" -n k8s.io images ls -q >> "$GB_SWITCH_LOG.k3s" 2>&1
fi
if [ -n "$GB_MANIFESTS" ]; then
  echo "@NAME@ $1: manifests" >> "$GB_SWITCH_LOG.k3s"
  (cd "$GB_MANIFESTS" && find . -type f | sort) >> "$GB_SWITCH_LOG.k3s" 2>&1
fi
if [ -e "$GB_SWITCH_FAIL/@NAME@" ]; then
  echo "@NAME@: activation failed on purpose" >&2
  exit 1
fi
"#;

/// A flake with two systems `sys1`, `sys2` and a plain package `plain`, their
/// names tagged so that concurrent runs never share a store path.
fn flake(tag: &str) -> String {
    let sys = |n: &str| {
        format!(
            r#"    {n} = mk "gb-{n}-{tag}" "mkdir -p $out/bin; sed -e s/@NAME@/{n}/ -e s,@OUT@,$out, ${{./switch.sh}} > $out/bin/switch-to-configuration; chmod +x $out/bin/switch-to-configuration; echo 24.05.{n} > $out/nixos-version";
"#
        )
    };
    let lets = format!(
        "{}{}    plain = mk \"gb-plain-{tag}\" \"mkdir -p $out/bin; echo hi > $out/bin/hi\";",
        sys("sys1"),
        sys("sys2")
    );
    sh_flake(&lets, "inherit sys1 sys2 plain;")
}

struct Host {
    w: Work,
    paths: Vec<String>,
}

impl Host {
    fn new(name: &str) -> Host {
        let w = Work::new(name);
        let tag = format!("{}-{}", std::process::id(), name);
        fs::create_dir_all(w.path("flake")).unwrap();
        fs::write(w.path("flake/flake.nix"), flake(&tag)).unwrap();
        fs::write(w.path("flake/switch.sh"), SWITCH).unwrap();
        fs::create_dir_all(w.path("fail")).unwrap();
        fs::create_dir_all(w.path("run")).unwrap();
        Host {
            w,
            paths: Vec::new(),
        }
    }

    /// Bundles `attr` with `activate: action` as version `version` of `host`.
    fn bundle(&mut self, attr: &str, action: &str, version: &str) -> (std::path::PathBuf, String) {
        let spec = format!("{attr}-{version}.yaml");
        self.w.write(
            &spec,
            &format!(
                "name: host\nversion: \"{version}\"\nnix:\n  - installable: ./flake#packages.x86_64-linux.{attr}\n    activate: {action}\n"
            ),
        );
        let out = self.w.path(format!("{attr}-{version}.gapb"));
        ok(with_nix_config(create_cmd(
            &self.w.path(&spec),
            &out,
            &self.w.secret(),
            &self.w.path("cache"),
        ))
        .output()
        .unwrap());
        let path = nix_built(&self.w.path("flake"), attr);
        self.paths.push(path.clone());
        (out, path)
    }

    fn profile(&self) -> std::path::PathBuf {
        self.w.path("profiles/system")
    }

    /// The running system's link (`--current-system`), which the switch script
    /// points at its system.
    fn current_system(&self) -> std::path::PathBuf {
        self.w.path("run/current-system")
    }

    /// Where the running system's link points, if it exists.
    fn running(&self) -> Option<String> {
        fs::read_link(self.current_system())
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    fn env(&self, mut c: Command) -> Command {
        c.env("GB_SWITCH_LOG", self.w.path("switch.log"))
            .env("GB_SWITCH_FAIL", self.w.path("fail"))
            .env("GB_CURRENT_SYSTEM", self.current_system())
            .arg("--profile")
            .arg(self.profile())
            .arg("--current-system")
            .arg(self.current_system());
        with_nix_config(c)
    }

    fn import(&self, bundle: &Path, extra: &[&str]) -> std::process::Output {
        let mut c = self.w.import(bundle);
        c.args(extra);
        self.env(c).output().unwrap()
    }

    fn activate(&self, what: &Path, extra: &[&str]) -> std::process::Output {
        let mut c = gapbundle();
        c.arg("activate")
            .arg(what)
            .arg("--trust")
            .arg(self.w.public())
            .arg("--state-dir")
            .arg(self.w.state_dir())
            .args(extra);
        self.env(c).output().unwrap()
    }

    fn log(&self) -> Vec<String> {
        fs::read_to_string(self.w.path("switch.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn fail(&self, name: &str, on: bool) {
        let p = self.w.path("fail").join(name);
        if on {
            fs::write(p, "").unwrap();
        } else {
            fs::remove_file(p).unwrap();
        }
    }

    /// The profile's current generation and its store path, read by following the
    /// links as NixOS does.
    fn current(&self) -> (String, String) {
        let gen = fs::read_link(self.profile()).unwrap();
        let target = fs::read_link(self.w.path("profiles").join(&gen)).unwrap();
        (
            gen.to_string_lossy().into_owned(),
            target.to_string_lossy().into_owned(),
        )
    }

    /// `nix-env -p PROFILE --list-generations`: (number, current) per line.
    fn generations(&self) -> Vec<(u64, bool)> {
        run_stdout(
            nix("nix-env")
                .arg("-p")
                .arg(self.profile())
                .arg("--list-generations"),
        )
        .lines()
        .map(|l| {
            let n = l.split_whitespace().next().unwrap().parse().unwrap();
            (n, l.contains("(current)"))
        })
        .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // The profile's links are in the temporary folder; the store paths go.
        let _ = fs::remove_dir_all(self.w.path("profiles"));
        let _ = nix("nix-store")
            .arg("--delete")
            .args(&self.paths)
            .stderr(Stdio::null())
            .output();
    }
}

#[test]
fn a_system_is_switched_to_rolled_back_on_failure_and_a_rerun_does_nothing() {
    let mut h = Host::new("nixos-switch");
    let (b1, sys1) = h.bundle("sys1", "switch", "1");
    let (b2, sys2) = h.bundle("sys2", "switch", "2");

    // inspect shows the system and its activation.
    let i = cli_report(
        &ok(gapbundle()
            .arg("--json")
            .arg("inspect")
            .arg(&b1)
            .output()
            .unwrap()),
        "inspect",
    );
    assert_eq!(i["system"]["path"], sys1.as_str());
    assert_eq!(i["system"]["activate"], "switch");
    let text = output_text(&ok(gapbundle().arg("inspect").arg(&b1).output().unwrap()));
    assert!(text.contains(&format!("system    {sys1}")), "{text}");

    // The import brings the paths back into the store, then activates.
    run(nix("nix-store").arg("--delete").args([&sys1, &sys2]));

    // A dry run says which generation would be made and what runs; changes nothing.
    let dry = cli_report(&ok(h.import(&b1, &["--json", "--dry-run"])), "import-plan");
    assert_eq!(dry["system"]["newGeneration"], 1, "{dry:#}");
    assert_eq!(dry["system"]["current"], serde_json::Value::Null);
    let cmds: Vec<&str> = dry["system"]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cmds.len(), 2, "{cmds:?}");
    assert!(cmds[0].starts_with("nix-env -p ") && cmds[0].ends_with(&format!("--set {sys1}")));
    assert_eq!(
        cmds[1],
        format!("{sys1}/bin/switch-to-configuration switch")
    );
    assert!(!h.profile().exists() && h.log().is_empty());
    let text = output_text(&ok(h.import(&b1, &["--dry-run"])));
    assert!(
        text.contains("would activate with `switch` as generation 1"),
        "{text}"
    );

    // A new generation appears; the script ran with `switch`.
    let r = cli_report(&ok(h.import(&b1, &["--json"])), "import");
    assert_eq!(r["system"]["newGeneration"], 1, "{r:#}");
    assert_eq!(h.log(), ["sys1 switch"]);
    assert_eq!(h.current(), ("system-1-link".into(), sys1.clone()));
    assert_eq!(h.generations(), [(1, true)]);

    // A second import of the same bundle does nothing.
    let again = cli_report(&ok(h.import(&b1, &["--json"])), "import");
    assert_eq!(again["system"]["alreadyActive"], true, "{again:#}");
    assert_eq!(h.log(), ["sys1 switch"]);
    assert_eq!(h.generations(), [(1, true)]);

    // A failing activation: back on generation 1, which was activated again; exit 7.
    h.fail("sys2", true);
    let o = h.import(&b2, &[]);
    let err = fails(&o, 7);
    assert!(
        err.contains("went back to generation 1") && err.contains("activation failed on purpose"),
        "{err}"
    );
    assert_eq!(h.log(), ["sys1 switch", "sys2 switch", "sys1 switch"]);
    assert_eq!(h.current(), ("system-1-link".into(), sys1.clone()));
    assert_eq!(h.generations(), [(1, true), (2, false)]);

    // `activate` takes it up again from the bundle or the receipt, once it works;
    // Nix reuses generation 2, the highest, which already points at sys2.
    let plan = cli_report(&ok(h.activate(&b2, &["--json", "--dry-run"])), "activate");
    assert_eq!(plan["system"]["newGeneration"], 2, "{plan:#}");
    assert_eq!(plan["system"]["current"]["number"], 1);
    assert_eq!(h.log().len(), 3);
    h.fail("sys2", false);
    let done = cli_report(&ok(h.activate(Path::new("host"), &["--json"])), "activate");
    assert_eq!(done["system"]["newGeneration"], 2, "{done:#}");
    assert_eq!(h.log().last().unwrap(), "sys2 switch");
    assert_eq!(h.current(), ("system-2-link".into(), sys2.clone()));
    assert_eq!(h.generations(), [(1, false), (2, true)]);

    // Both fail: going back fails too, exit 8, said so.
    h.fail("sys1", true);
    h.fail("sys2", true);
    let err = fails(&h.import(&b1, &[]), 8);
    assert!(err.contains("going back failed too"), "{err}");
    assert_eq!(h.log()[4..], ["sys1 switch", "sys2 switch"]);
    assert_eq!(h.generations(), [(1, false), (2, true), (3, false)]);
}

#[test]
fn activation_none_imports_without_activating_and_activate_needs_an_import() {
    let mut h = Host::new("nixos-later");
    let (b, sys) = h.bundle("sys1", "boot", "1");
    // Not imported yet: activate refuses, changing nothing.
    let err = fails(&h.activate(&b, &[]), 4);
    assert!(err.contains("was not imported here"), "{err}");
    let o = ok(h.import(&b, &["--activation", "none"]));
    assert!(
        stderr(&o).contains("not activated (--activation none)"),
        "{}",
        stderr(&o)
    );
    assert!(!h.profile().exists() && h.log().is_empty());
    ok(h.activate(&b, &[]));
    assert_eq!(h.log(), ["sys1 boot"]);
    assert_eq!(h.current(), ("system-1-link".into(), sys));
}

#[test]
fn a_test_activation_makes_no_generation_and_a_rerun_compares_the_running_system() {
    let mut h = Host::new("nixos-test");
    let (b1, sys1) = h.bundle("sys1", "switch", "1");
    let (b2, sys2) = h.bundle("sys2", "test", "2");
    ok(h.import(&b1, &[]));
    assert_eq!(h.running().as_deref(), Some(sys1.as_str()));
    assert_eq!(h.generations(), [(1, true)]);

    // The plan: no generation, only `switch-to-configuration test`.
    let dry = cli_report(&ok(h.import(&b2, &["--json", "--dry-run"])), "import-plan");
    assert_eq!(dry["system"]["action"], "test", "{dry:#}");
    assert_eq!(dry["system"]["alreadyActive"], false, "{dry:#}");
    assert_eq!(dry["system"]["newGeneration"], serde_json::Value::Null);
    assert_eq!(
        dry["system"]["commands"],
        serde_json::json!([format!("{sys2}/bin/switch-to-configuration test")])
    );

    // A failing `test`: the generation current before is tested again, exit 7;
    // the profile was never touched.
    h.fail("sys2", true);
    let err = fails(&h.import(&b2, &[]), 7);
    assert!(
        err.contains("went back to the system that ran before"),
        "{err}"
    );
    assert_eq!(h.log(), ["sys1 switch", "sys2 test", "sys1 test"]);
    assert_eq!(h.running().as_deref(), Some(sys1.as_str()));
    assert_eq!(h.generations(), [(1, true)]);

    // It works: the running system is sys2, the profile still boots sys1.
    h.fail("sys2", false);
    let r = cli_report(&ok(h.import(&b2, &["--json"])), "import");
    assert_eq!(
        r["system"]["newGeneration"],
        serde_json::Value::Null,
        "{r:#}"
    );
    assert_eq!(h.log().last().unwrap(), "sys2 test");
    assert_eq!(h.running().as_deref(), Some(sys2.as_str()));
    assert_eq!(h.current(), ("system-1-link".into(), sys1.clone()));
    assert_eq!(h.generations(), [(1, true)]);

    // A rerun does nothing: the running system's link points at sys2.
    let again = cli_report(&ok(h.import(&b2, &["--json"])), "import");
    assert_eq!(again["system"]["alreadyActive"], true, "{again:#}");
    assert_eq!(again["system"]["commands"], serde_json::json!([]));
    assert_eq!(h.log().len(), 4);
    let text = output_text(&ok(h.activate(&b2, &[])));
    assert!(
        text.contains("already active (the running system)"),
        "{text}"
    );
    assert_eq!(h.log().len(), 4);

    // Once the link points elsewhere (a reboot into generation 1), it runs again.
    std::os::unix::fs::symlink(&sys1, h.w.path("run/next")).unwrap();
    fs::rename(h.w.path("run/next"), h.current_system()).unwrap();
    ok(h.activate(Path::new("host"), &[]));
    assert_eq!(h.log()[4..], ["sys2 test"]);
    assert_eq!(h.generations(), [(1, true)]);

    // A failing `test` goes back to what ran before it (sys2, tested a moment
    // ago), not to the profile's generation (sys1, which is the one failing here:
    // going back to it would fail too and exit 8).
    let (b3, _) = h.bundle("sys1", "test", "3");
    h.fail("sys1", true);
    let err = fails(&h.import(&b3, &[]), 7);
    assert!(
        err.contains(&format!("went back to the system that ran before ({sys2})")),
        "{err}"
    );
    assert_eq!(h.log()[5..], ["sys1 test", "sys2 test"]);
    assert_eq!(h.running().as_deref(), Some(sys2.as_str()));
    assert_eq!(h.generations(), [(1, true)]);
}

#[test]
fn activation_boot_makes_a_switch_a_boot_and_skips_a_test() {
    let mut h = Host::new("nixos-boot");
    let (b1, sys1) = h.bundle("sys1", "switch", "1");
    let (b2, sys2) = h.bundle("sys2", "test", "2");

    // `switch` asked, `boot` done: a new generation, nothing running changed.
    let dry = cli_report(
        &ok(h.import(&b1, &["--json", "--dry-run", "--activation", "boot"])),
        "import-plan",
    );
    assert_eq!(dry["system"]["action"], "boot", "{dry:#}");
    assert_eq!(
        dry["system"]["commands"][1],
        format!("{sys1}/bin/switch-to-configuration boot")
    );
    let o = ok(h.import(&b1, &["--activation", "boot"]));
    assert!(
        stderr(&o).contains("asks for `switch`; --activation boot makes it the boot default only"),
        "{}",
        stderr(&o)
    );
    assert_eq!(h.log(), ["sys1 boot"]);
    assert_eq!(h.current(), ("system-1-link".into(), sys1.clone()));
    assert_eq!(h.generations(), [(1, true)]);
    assert_eq!(h.running(), None);
    // A rerun under the same limit does nothing.
    ok(h.import(&b1, &["--activation", "boot"]));
    assert_eq!(h.log(), ["sys1 boot"]);

    // Regression: the receipt recorded the `boot` done, not the `switch` asked, and
    // a `switch` counted as done once the profile pointed at the system, so
    // `activate` could not finish the switch. It does now, in generation 1.
    let plan = cli_report(&ok(h.activate(&b1, &["--json", "--dry-run"])), "activate");
    assert_eq!(plan["system"]["action"], "switch", "{plan:#}");
    assert_eq!(plan["system"]["alreadyActive"], false, "{plan:#}");
    assert_eq!(plan["system"]["newGeneration"], 1, "{plan:#}");
    ok(h.activate(&b1, &[]));
    assert_eq!(h.log(), ["sys1 boot", "sys1 switch"]);
    assert_eq!(h.running().as_deref(), Some(sys1.as_str()));
    assert_eq!(h.generations(), [(1, true)]);

    // `test` asked: not done at all, said so. Regression: the receipt then
    // recorded no system, so the `gapbundle activate` it points at refused.
    let o = ok(h.import(&b2, &["--activation", "boot"]));
    assert!(
        stderr(&o).contains("it asks for `test`, and --activation boot allows `boot` at most")
            && stderr(&o).contains("`gapbundle activate host` does it"),
        "{}",
        stderr(&o)
    );
    assert_eq!(h.log().len(), 2);
    assert_eq!(h.running().as_deref(), Some(sys1.as_str()));
    ok(h.activate(Path::new("host"), &[]));
    assert_eq!(h.log()[2..], ["sys2 test"]);
    assert_eq!(h.running().as_deref(), Some(sys2.as_str()));
    assert_eq!(h.generations(), [(1, true)]);
}

/// A validly signed bundle carrying two systems to activate (forged: `create`
/// refuses to make one) is refused before anything is written: no path in the
/// store, no generation, no switch, no receipt.
#[test]
fn a_signed_bundle_with_two_systems_is_refused_before_anything_is_written() {
    let mut h = Host::new("nixos-two");
    h.w.write(
        "two.yaml",
        "name: host\nversion: \"1\"\nnix:\n  - installable: ./flake#packages.x86_64-linux.sys1\n    activate: switch\n  - installable: ./flake#packages.x86_64-linux.sys2\n",
    );
    let one = h.w.path("one.gapb");
    ok(with_nix_config(create_cmd(
        &h.w.path("two.yaml"),
        &one,
        &h.w.secret(),
        &h.w.path("cache"),
    ))
    .output()
    .unwrap());
    let sys1 = nix_built(&h.w.path("flake"), "sys1");
    let sys2 = nix_built(&h.w.path("flake"), "sys2");
    h.paths.extend([sys1.clone(), sys2.clone()]);
    let two = h.w.path("two.gapb");
    resign(&one, &two, &h.w.signing_key(), |m| {
        let o = m["objects"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|o| o["name"] == sys2.as_str())
            .unwrap();
        o["meta"]["activate"] = serde_json::json!("boot");
    });
    run(nix("nix-store").arg("--delete").args([&sys1, &sys2]));

    for extra in [&["--dry-run"][..], &[]] {
        let err = fails(&h.import(&two, extra), 3);
        assert!(
            err.contains("two nix-path objects ask to be activated")
                && err.contains(&sys1)
                && err.contains(&sys2),
            "{err}"
        );
    }
    assert!(!host_valid(&sys1) && !host_valid(&sys2));
    assert!(!h.profile().exists() && h.running().is_none() && h.log().is_empty());
    assert!(
        fs::read_dir(h.w.state_dir()).map_or(true, |d| d.count() == 0),
        "a receipt was written"
    );
    // The bundle as signed by create imports (and activates its one system).
    ok(h.import(&one, &[]));
    assert_eq!(h.log(), ["sys1 switch"]);
}

/// K3s on the same host (README): the bundle's image is in K3s's containerd and
/// its manifest in the auto-deploy folder by the time `switch-to-configuration`
/// runs, as the script itself sees them.
#[test]
fn images_and_manifests_are_in_place_before_the_switch() {
    let mut h = Host::new("nixos-k3s");
    let c = Containerd::start();
    oci_layout_fixture(&h.w.path("flake/img"));
    h.w.write(
        "flake/extra/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: site\n  namespace: default\ndata:\n  a: \"1\"\n",
    );
    h.w.write(
        "flake/site.yaml",
        "name: host\nversion: \"1\"\nnix:\n  - installable: .#packages.x86_64-linux.sys1\n    activate: switch\nimages:\n  - layout: ./img:latest\n    name: example.local/site:1\nmanifests:\n  - path: ./extra/cm.yaml\n",
    );
    let b = h.w.path("site.gapb");
    ok(with_nix_config(create_cmd(
        &h.w.path("flake/site.yaml"),
        &b,
        &h.w.secret(),
        &h.w.path("cache"),
    ))
    .output()
    .unwrap());
    let sys1 = nix_built(&h.w.path("flake"), "sys1");
    h.paths.push(sys1.clone());
    run(nix("nix-store").arg("--delete").arg(&sys1));
    assert!(!c
        .ctr_stdout(&["images", "ls", "-q"])
        .contains("example.local/site:1"));

    let manifests = h.w.k3s_root().join("server/manifests");
    let mut cmd = h.w.import(&b);
    cmd.arg("--containerd")
        .arg(c.socket())
        .env("GB_CTR_ADDRESS", c.socket())
        .env("GB_MANIFESTS", &manifests);
    let o = h.env(cmd).output().unwrap();
    ok(o);
    assert_eq!(h.log(), ["sys1 switch"]);
    let seen = fs::read_to_string(h.w.path("switch.log.k3s")).unwrap();
    let (images, files) = seen
        .split_once("sys1 switch: manifests\n")
        .unwrap_or_else(|| panic!("{seen}"));
    assert!(images.starts_with("sys1 switch: images\n"), "{seen}");
    assert!(
        images.lines().any(|l| l == "example.local/site:1"),
        "the image was not in containerd when the switch ran:\n{seen}"
    );
    // Regression: the manifests' staging folder (decoded documents) was still in
    // K3s's folder while the switch ran.
    let written: Vec<&str> = files.lines().collect();
    assert_eq!(written.len(), 1, "{seen}");
    assert!(written[0].starts_with("./host/"), "{seen}");
    let doc = fs::read_to_string(manifests.join(&written[0][2..])).unwrap();
    assert!(doc.contains("name: site"), "{doc}");
    assert_eq!(h.current(), ("system-1-link".into(), sys1));
}

#[test]
fn create_refuses_activate_on_what_is_not_a_system_toplevel() {
    let mut h = Host::new("nixos-plain");
    h.w.write(
        "plain.yaml",
        "name: host\nversion: \"1\"\nnix:\n  - installable: ./flake#packages.x86_64-linux.plain\n    activate: switch\n",
    );
    let o = with_nix_config(create_cmd(
        &h.w.path("plain.yaml"),
        &h.w.path("plain.gapb"),
        &h.w.secret(),
        &h.w.path("cache"),
    ))
    .output()
    .unwrap();
    h.paths.push(nix_built(&h.w.path("flake"), "plain"));
    let err = fails(&o, 4);
    assert!(
        err.contains("nix[0]: `activate` is set, but")
            && err.contains("lacks bin/switch-to-configuration and nixos-version"),
        "{err}"
    );
    assert!(!h.w.path("plain.gapb").exists());
}

#[test]
fn the_inbox_script_activates_with_the_real_binary_and_files_a_rolled_back_one_as_failed() {
    let mut h = Host::new("nixos-inbox");
    let (b1, sys1) = h.bundle("sys1", "switch", "1");
    let (b2, _) = h.bundle("sys2", "switch", "2");
    let inbox = h.w.path("inbox");
    fs::create_dir_all(inbox.join("processed")).unwrap();
    fs::create_dir_all(inbox.join("failed")).unwrap();
    let real = gapbundle_bin();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![real.parent().unwrap().to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    let path = std::env::join_paths(dirs).unwrap();
    let run_inbox = || {
        let mut c = tool("bash");
        c.arg(repo().join("nix/gapbundle-inbox.sh"))
            .arg("--inbox")
            .arg(&inbox)
            .arg("--state-dir")
            .arg(h.w.path("inbox-state"))
            .args(["--settle", "0", "--", "--trust"])
            .arg(h.w.public())
            // What the module passes for `activate = "switch"`.
            .args(["--activation", "switch", "--profile"])
            .arg(h.profile())
            .env("PATH", &path)
            .env("GAPBUNDLE_STATE_DIR", h.w.state_dir())
            .env("GB_SWITCH_LOG", h.w.path("switch.log"))
            .env("GB_SWITCH_FAIL", h.w.path("fail"))
            .env("GB_CURRENT_SYSTEM", h.current_system())
            .env("NIX_CONFIG", NIX_CONFIG);
        run_stdout(&mut c)
    };
    let receipt = |dir: &str, name: &str| -> serde_json::Value {
        let p = inbox.join(dir).join(format!("{name}.receipt.json"));
        serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .unwrap()
    };

    fs::copy(&b1, inbox.join("one.gapb")).unwrap();
    run_inbox();
    let r = receipt("processed", "one.gapb");
    assert_eq!(r["status"], "imported", "{r:#}");
    assert_eq!(r["result"]["system"]["newGeneration"], 1, "{r:#}");
    assert_eq!(h.log(), ["sys1 switch"]);
    assert_eq!(h.current(), ("system-1-link".into(), sys1.clone()));

    h.fail("sys2", true);
    fs::copy(&b2, inbox.join("two.gapb")).unwrap();
    run_inbox();
    let r = receipt("failed", "two.gapb");
    assert_eq!(r["status"], "failed", "{r:#}");
    assert_eq!(r["exitCode"], 7, "{r:#}");
    assert!(
        r["stderr"]
            .as_str()
            .unwrap()
            .contains("went back to generation 1"),
        "{r:#}"
    );
    assert_eq!(h.current(), ("system-1-link".into(), sys1));
    assert_eq!(h.generations(), [(1, true), (2, false)]);
}
