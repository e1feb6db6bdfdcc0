//! A real containerd on a K3s-style socket of its own.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{require_tool, tool, try_run, INSTALL_HINT, LOG_TAIL_LINES};

/// A real containerd (1.6, Debian's) on a K3s-style socket in a temporary
/// folder: its own `root`, `state` and `grpc.address`, so it never touches the
/// machine's containerd. Kubernetes images live in the namespace
/// [`Containerd::NAMESPACE`] as under K3s. Killed (and its mounts undone) on drop.
pub struct Containerd {
    dir: TempDir,
    child: Option<Child>,
}

const CONTAINERD_START_TIMEOUT: Duration = Duration::from_secs(30);

impl Containerd {
    /// K3s's namespace for Kubernetes images.
    pub const NAMESPACE: &'static str = "k8s.io";

    /// Starts containerd and waits until it answers on its socket.
    pub fn start() -> Containerd {
        let bin = require_tool("containerd");
        require_tool("ctr");
        // overlayfs needs a real file system under root (not tmpfs-on-overlay);
        // the system temporary folder on / is fine on the test machines.
        let dir = tempfile::Builder::new()
            .prefix("gapbundle-containerd-")
            .tempdir()
            .expect("create containerd tempdir");
        let root = dir.path();
        let cfg = format!(
            "version = 2\nroot = \"{r}\"\nstate = \"{s}\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n\
             [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [debug]\n  address = \"\"\n  level = \"info\"\n\
             [metrics]\n  address = \"\"\n",
            r = root.join("root").display(),
            s = root.join("state").display(),
            sock = root.join("run/k3s/containerd/containerd.sock").display(),
        );
        fs::create_dir_all(root.join("run/k3s/containerd")).expect("socket dir");
        fs::write(root.join("config.toml"), cfg).expect("write containerd config");
        let log = File::create(root.join("containerd.log")).expect("containerd log");
        let log2 = log.try_clone().expect("clone log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(root.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("could not spawn containerd: {e}; {INSTALL_HINT}"));
        let mut c = Containerd {
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + CONTAINERD_START_TIMEOUT;
        loop {
            if let Some(status) = c.child.as_mut().unwrap().try_wait().expect("wait") {
                c.child = None;
                panic!(
                    "containerd exited early ({status}); log:\n{}\n{INSTALL_HINT} (containerd must run as root)",
                    c.log_tail(LOG_TAIL_LINES)
                );
            }
            if c.socket().exists() && c.try_ctr(&["version"]).is_ok() {
                return c;
            }
            if Instant::now() > deadline {
                panic!(
                    "containerd did not answer on {} within {CONTAINERD_START_TIMEOUT:?}; log:\n{}",
                    c.socket().display(),
                    c.log_tail(LOG_TAIL_LINES)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The gRPC socket (`…/run/k3s/containerd/containerd.sock`).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/k3s/containerd/containerd.sock")
    }

    /// containerd's root folder (content store under `io.containerd.content.v1.content`).
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// `ctr --address SOCK -n k8s.io ARGS…`.
    pub fn ctr(&self) -> Command {
        let mut c = tool("ctr");
        c.arg("--address")
            .arg(self.socket())
            .args(["-n", Self::NAMESPACE]);
        c
    }

    fn try_ctr(&self, args: &[&str]) -> Result<Output, String> {
        try_run(self.ctr().args(args))
    }

    /// Runs ctr and returns stdout; panics with the log on failure.
    pub fn ctr_stdout(&self, args: &[&str]) -> String {
        match self.try_ctr(args) {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => panic!("{e}\ncontainerd log:\n{}", self.log_tail(LOG_TAIL_LINES)),
        }
    }

    /// Runs containerd's garbage collector now and waits for it: a lease removed
    /// with `--sync` runs it.
    pub fn collect_garbage(&self, lease: &str) {
        self.ctr_stdout(&["leases", "create", "--id", lease]);
        self.ctr_stdout(&["leases", "rm", "--sync", lease]);
    }

    /// The last `lines` lines of containerd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let s = fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let v: Vec<&str> = s.lines().collect();
        v[v.len().saturating_sub(lines)..].join("\n")
    }

    /// Files in the content store (digest hex names).
    pub fn content_blobs(&self) -> Vec<String> {
        let dir = self
            .root()
            .join("io.containerd.content.v1.content/blobs/sha256");
        let mut v: Vec<String> = fs::read_dir(dir)
            .map(|r| {
                r.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The labels of every blob in the namespace's content store, by digest, as
    /// `ctr content ls` prints them (`k=v,k=v`, or `-` for none, last on each line).
    pub fn content_labels(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let out = self.ctr_stdout(&["content", "ls"]);
        out.lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let labels = match *f.last()? {
                    "-" => BTreeMap::new(),
                    s => s
                        .split(',')
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                            (k.to_string(), v.to_string())
                        })
                        .collect(),
                };
                Some((f.first()?.to_string(), labels))
            })
            .collect()
    }

    /// Ingests in progress (partial writes) in the content store.
    pub fn ingests(&self) -> usize {
        fs::read_dir(self.root().join("io.containerd.content.v1.content/ingest"))
            .map(|r| r.count())
            .unwrap_or(0)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Snapshots of the overlayfs snapshotter are plain folders once nothing
        // is mounted; undo any mount left under our root so the temp dir goes.
        let root = self.dir.path().to_string_lossy().into_owned();
        if let Ok(mounts) = fs::read_to_string("/proc/self/mounts") {
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                if m.starts_with(&root) {
                    let _ = Command::new("umount").arg("-l").arg(m).status();
                }
            }
        }
    }
}
