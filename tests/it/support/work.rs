//! The work folder every end-to-end test starts from, and a file system that is
//! really full.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::{gapbundle, run, tool};

/// A temporary folder holding a key pair made by `gapbundle key generate` under
/// `keys/`; the base of each test file's own `Work`.
pub struct Workdir {
    dir: TempDir,
    key_name: String,
}

impl Workdir {
    /// A new folder with the key pair `keys/<key_name>.{sec,pub}`; the secret key must
    /// come out private (0600).
    pub fn new(key_name: &str) -> Self {
        let w = Workdir {
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
    /// A path inside the folder.
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    /// The secret key file.
    pub fn secret(&self) -> PathBuf {
        self.path(&format!("keys/{}.sec", self.key_name))
    }
    /// The public key file.
    pub fn public(&self) -> PathBuf {
        self.path(&format!("keys/{}.pub", self.key_name))
    }
}

/// A small tmpfs, filled, unmounted on drop: a file system that is really full
/// (mounting needs root, which the test command runs as; it fails loudly otherwise).
pub struct FullTmpfs(PathBuf);

impl FullTmpfs {
    pub fn mount(dir: &Path) -> FullTmpfs {
        fs::create_dir_all(dir).unwrap();
        run(tool("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir));
        let t = FullTmpfs(dir.to_path_buf());
        // Fill it: whatever does not fit is the point.
        let _ = fs::write(dir.join("fill"), vec![0u8; 64 << 10]);
        t
    }
}

impl Drop for FullTmpfs {
    fn drop(&mut self) {
        let _ = tool("umount").arg(&self.0).status();
    }
}
