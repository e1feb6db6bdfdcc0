//! The real Nix 2.8, told never to reach the network: its commands, a key pair
//! made by Nix itself, and a `nix-daemon` of a test's own.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use super::{ok, run, run_stdout, tool};

/// `NIX_CONFIG` value for tests that run Nix: flakes on, and no substituters,
/// so Nix does not spend ~5 s per build trying to reach cache.nixos.org.
pub const NIX_CONFIG: &str = "experimental-features = nix-command flakes\nsubstituters =";

/// A Nix command (`nix`, `nix-store`, `nix-instantiate`, …) with [`NIX_CONFIG`].
pub fn nix(program: &str) -> Command {
    let mut c = tool(program);
    c.env("NIX_CONFIG", NIX_CONFIG);
    c
}

/// `c` with [`NIX_CONFIG`] and stdin closed: a gapbundle run that calls Nix.
pub fn with_nix_config(mut c: Command) -> Command {
    c.env("NIX_CONFIG", NIX_CONFIG).stdin(Stdio::null());
    c
}

/// A flake with no inputs that the real Nix builds offline: its `let` defines
/// `mk = name: script: …`, a derivation whose builder is `/bin/sh -c script` (no
/// nixpkgs needed), then `lets` (more bindings, `x = mk "name" "script";`), and it
/// outputs `packages.x86_64-linux = { packages }` (e.g. `inherit app;`).
pub fn sh_flake(lets: &str, packages: &str) -> String {
    format!(
        r#"{{
  outputs = {{ self }}: let
    mk = name: script: builtins.derivation {{
      inherit name;
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" script ];
      PATH = "/usr/bin:/bin";
    }};
{lets}
  in {{ packages.x86_64-linux = {{ {packages} }}; }};
}}
"#
    )
}

/// The store path of the flake output `packages.x86_64-linux.<attr>` of the flake in
/// `flake`, as Nix builds it.
pub fn nix_built(flake: &Path, attr: &str) -> String {
    let out = run_stdout(
        nix("nix")
            .args(["build", "--json", "--no-link"])
            .arg(format!(".#packages.x86_64-linux.{attr}"))
            .current_dir(flake),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0]["outputs"]["out"].as_str().unwrap().to_string()
}

/// Store paths a test built in the host's store, deleted (`nix-store --delete`,
/// best effort) when it ends, passed or failed: a big one left behind by a failed
/// run would fill the disk run after run.
pub struct HostPaths(pub Vec<String>);

impl Drop for HostPaths {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = nix("nix-store").arg("--delete").args(&self.0).output();
        }
    }
}

/// Whether `path` is valid in the host's own store.
pub fn host_valid(path: &str) -> bool {
    nix("nix-store")
        .args(["--check-validity", path])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A key pair made by Nix itself (`nix key generate-secret --key-name NAME`, then
/// `convert-secret-to-public`), written to `dir/nix.sec` and `dir/nix.pub`;
/// returns the public key (`NAME:BASE64`).
pub fn nix_key_pair(dir: &Path, name: &str) -> String {
    let secret = dir.join("nix.sec");
    let sec = run(nix("nix").args(["key", "generate-secret", "--key-name", name])).stdout;
    fs::write(&secret, sec).unwrap();
    // Not `run`: it closes stdin, and the secret key comes in on stdin.
    let out = ok(nix("nix")
        .args(["key", "convert-secret-to-public"])
        .stdin(fs::File::open(&secret).unwrap())
        .output()
        .unwrap());
    fs::write(dir.join("nix.pub"), &out.stdout).unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A real `nix-daemon` over a store of its own (`local?root=ROOT`), on a socket of
/// its own, that trusts `key` and requires signatures; killed when dropped.
pub struct NixDaemon {
    child: Child,
    /// `unix://SOCKET`, the store URI clients give to reach it.
    pub uri: String,
}

impl NixDaemon {
    /// Starts a daemon with the socket `dir/<name>.sock` and waits for the socket.
    pub fn start(dir: &Path, name: &str, root: &Path, key: &str) -> NixDaemon {
        let sock = dir.join(format!("{name}.sock"));
        let child = nix("nix-daemon")
            .env("NIX_DAEMON_SOCKET_PATH", &sock)
            .args([
                "--option",
                "store",
                &format!("local?root={}", root.display()),
            ])
            .args(["--option", "trusted-public-keys", key])
            .args(["--option", "require-sigs", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut d = NixDaemon {
            child,
            uri: format!("unix://{}", sock.display()),
        };
        for _ in 0..100 {
            if sock.exists() {
                return d;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("nix-daemon exited at once ({status})");
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("nix-daemon made no socket at {} in 10 s", sock.display());
    }
}

impl Drop for NixDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The URI of the chroot store at `root` (`local?root=ROOT`).
pub fn chroot_store(root: &Path) -> String {
    format!("local?root={}", root.display())
}

/// Paths of `paths` that are valid in the chroot store at `root`.
pub fn valid_in(root: &Path, paths: &[String]) -> Vec<String> {
    if !root.join("nix/var/nix/db").exists() {
        return Vec::new();
    }
    let out = run(nix("nix-store")
        .arg("--store")
        .arg(chroot_store(root))
        .args(["--check-validity", "--print-invalid"])
        .args(paths));
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let invalid: Vec<&str> = out.lines().collect();
    paths
        .iter()
        .filter(|p| !invalid.contains(&p.as_str()))
        .cloned()
        .collect()
}

/// What the chroot store at `root` holds in `nix/store`, registered or not, as full
/// store paths; Nix's own bookkeeping is left out (`.links`, and the empty
/// `<path>.lock` files its path locks leave after a failed add, which its garbage
/// collector removes).
pub fn store_entries(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root.join("nix/store"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != ".links" && !n.ends_with(".lock"))
                .map(|n| format!("/nix/store/{n}"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Panics unless every path in the chroot store at `root` is registered (`nix
/// store verify` then checks each one's contents against its NAR hash).
pub fn assert_store_sound(root: &Path) {
    let entries = store_entries(root);
    let valid = valid_in(root, &entries);
    assert_eq!(
        valid,
        entries,
        "paths in {} that Nix never registered",
        root.display()
    );
    if !entries.is_empty() {
        run(nix("nix")
            .args(["store", "verify", "--no-trust", "--store"])
            .arg(chroot_store(root))
            .args(&entries));
    }
}
