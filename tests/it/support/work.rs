//! The work folder every end-to-end test starts from, and a file system that is
//! really full.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use gapbundle::bundle::keys::SecretKey;
use serde_json::Value;
use tempfile::TempDir;

use super::{cli_report, create_cmd, gapbundle, run, tool};

/// The folder an end-to-end test works in: a key pair made by `gapbundle key
/// generate` under `keys/`, and by convention the spec `bundle.yaml`, the cache
/// `cache/` and a K3s root `k3s/`, each beside the bundles the test makes.
///
/// The command lines here are the ones most tests start from; a test adds its
/// own flags (`--insecure-registry`, `--locked`, a target) to the `Command`.
pub struct Work {
    dir: TempDir,
    key_name: String,
}

impl Work {
    /// A new folder with the key pair `keys/<key_name>.{sec,pub}` (signatures
    /// carry the key's name, so tests choose it); the secret key must come out
    /// private (0600).
    pub fn new(key_name: &str) -> Work {
        let w = Work {
            dir: tempfile::tempdir().unwrap(),
            key_name: key_name.to_string(),
        };
        run(gapbundle()
            .args(["key", "generate", "--name", key_name, "--dir"])
            .arg(w.path("keys")));
        let mode = fs::metadata(w.secret()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the secret key is private");
        w
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the folder (an absolute `p` is taken as it is).
    pub fn path(&self, p: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Writes `text` to `rel` inside the folder, making its parent folders.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    /// The secret key file.
    pub fn secret(&self) -> PathBuf {
        self.path(format!("keys/{}.sec", self.key_name))
    }

    /// The public key file.
    pub fn public(&self) -> PathBuf {
        self.path(format!("keys/{}.pub", self.key_name))
    }

    /// The secret key, parsed by the library (to sign bundles built with it).
    pub fn signing_key(&self) -> SecretKey {
        SecretKey::parse(&fs::read_to_string(self.secret()).unwrap()).unwrap()
    }

    /// The K3s root the imports write to (`k3s/`).
    pub fn k3s_root(&self) -> PathBuf {
        self.path("k3s")
    }

    /// `gapbundle create -f bundle.yaml -o OUT --key KEY --cache cache`, stdin
    /// closed; `out` is inside the folder unless it is absolute.
    pub fn create(&self, out: impl AsRef<Path>) -> Command {
        let mut c = create_cmd(
            &self.path("bundle.yaml"),
            &self.path(out),
            &self.secret(),
            &self.path("cache"),
        );
        c.stdin(Stdio::null());
        c
    }

    /// `gapbundle import BUNDLE --trust PUBLIC-KEY --k3s-root k3s`, stdin closed
    /// (a test that pipes the bundle in sets stdin again); callers add the
    /// targets and output flags.
    pub fn import(&self, bundle: &Path) -> Command {
        let mut c = gapbundle();
        c.arg("import")
            .arg(bundle)
            .arg("--trust")
            .arg(self.public())
            .arg("--k3s-root")
            .arg(self.k3s_root())
            .stdin(Stdio::null());
        c
    }

    /// What `gapbundle verify BUNDLE --trust PUBLIC-KEY` did, for a bundle in the
    /// folder; the caller judges the exit code.
    pub fn verify(&self, bundle: &str) -> Output {
        gapbundle()
            .arg("verify")
            .arg(self.path(bundle))
            .arg("--trust")
            .arg(self.public())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `gapbundle --json inspect BUNDLE` (must succeed), parsed.
    pub fn inspect(&self, bundle: &str) -> Value {
        cli_report(
            &run(gapbundle()
                .args(["--json", "inspect"])
                .arg(self.path(bundle))),
            "inspect",
        )
    }
}

/// A tmpfs of a given size, unmounted on drop: a small disk that can really fill
/// up (mounting needs root, which the test command runs as; it fails loudly
/// otherwise).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as mount's `size=` takes it: `64k`, `32m`) on
    /// `dir`, made if needed.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        Tmpfs::with_options(dir, &format!("size={size}"))
    }

    /// An empty tmpfs mounted with `options` (`size=256k`, `size=80m,nr_inodes=64`):
    /// a disk that fills up while something is written to it, after any check of
    /// free space passed.
    pub fn with_options(dir: &Path, options: &str) -> Tmpfs {
        fs::create_dir_all(dir).unwrap();
        run(tool("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir));
        Tmpfs(dir.to_path_buf())
    }

    /// Bytes in use on it (`df`'s view).
    pub fn used(&self) -> u64 {
        let out = run(tool("df").args(["-B1", "--output=used"]).arg(&self.0));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("df output: {}", String::from_utf8_lossy(&out.stdout)))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = tool("umount").arg(&self.0).status();
    }
}

/// A small tmpfs, filled, unmounted on drop: a file system that is really full.
pub struct FullTmpfs {
    _mount: Tmpfs,
}

impl FullTmpfs {
    pub fn mount(dir: &Path) -> FullTmpfs {
        let t = Tmpfs::mount(dir, "64k");
        // Fill it: whatever does not fit is the point.
        let _ = fs::write(dir.join("fill"), vec![0u8; 64 << 10]);
        FullTmpfs { _mount: t }
    }
}
