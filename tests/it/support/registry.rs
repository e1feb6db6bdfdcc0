//! The real CNCF distribution registry (`docker-registry serve`), on a free
//! 127.0.0.1 port with its storage in a temporary folder: plain HTTP, with
//! htpasswd, or with TLS from a private CA made with openssl.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{
    http_request, require_tool, run, run_stdout, sha256_digest, skopeo, tool, HttpResponse,
    LOG_TAIL_LINES,
};

/// A real `docker-registry` (CNCF distribution 2.8) on a free 127.0.0.1 port,
/// with filesystem storage and its log in a temporary folder. The process is
/// killed when this value is dropped.
pub struct Registry {
    /// `127.0.0.1:PORT`, the registry host as used in image references.
    pub addr: String,
    creds: Option<(String, String)>,
    dir: TempDir,
    child: Option<Child>,
}

const REGISTRY_START_TIMEOUT: Duration = Duration::from_secs(30);

impl Registry {
    /// Starts a registry without authentication.
    pub fn start() -> Registry {
        Self::launch(None)
    }

    /// Starts a registry that requires HTTP basic auth for `user`/`pass`
    /// (a bcrypt entry made by `htpasswd -Bbn`; plain HTTP is fine for the
    /// registry on 127.0.0.1).
    pub fn start_with_htpasswd(user: &str, pass: &str) -> Registry {
        Self::launch(Some((user.to_string(), pass.to_string())))
    }

    fn launch(creds: Option<(String, String)>) -> Registry {
        require_tool("docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("gapbundle-registry-")
            .tempdir()
            .expect("create registry tempdir");
        if let Some((user, pass)) = &creds {
            let entry = run_stdout(tool("htpasswd").args(["-Bbn", user, pass]));
            fs::write(
                dir.path().join("htpasswd"),
                entry.trim_end().to_string() + "\n",
            )
            .expect("write htpasswd file");
        }
        let mut reg = Registry {
            addr: String::new(),
            creds,
            dir,
            child: None,
        };
        // A free port found by binding :0 can be taken by someone else before
        // the registry binds it; retry with a new port in that case.
        let mut last_err = String::new();
        for _ in 0..5 {
            reg.addr = format!("127.0.0.1:{}", free_port());
            reg.write_config();
            match reg.spawn_and_wait() {
                Ok(()) => return reg,
                Err(e) => last_err = e,
            }
        }
        panic!(
            "{}",
            reg.failure(&format!("docker-registry did not start: {last_err}"))
        );
    }

    fn write_config(&self) {
        let root = self.dir.path();
        let mut cfg = format!(
            "version: 0.1\n\
             log:\n  level: info\n  fields:\n    service: gapbundle-test-registry\n\
             storage:\n  filesystem:\n    rootdirectory: {data}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n  secret: gapbundle-test-http-secret\n",
            data = root.join("data").display(),
            addr = self.addr,
        );
        if self.creds.is_some() {
            write!(
                cfg,
                "auth:\n  htpasswd:\n    realm: gapbundle-test\n    path: {}\n",
                root.join("htpasswd").display()
            )
            .unwrap();
        }
        fs::write(self.config_path(), cfg).expect("write registry config");
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open registry log");
        let log2 = log.try_clone().expect("clone log handle");
        writeln!(
            &log,
            "==== gapbundle tests: starting registry on {} ====",
            self.addr
        )
        .ok();
        let child = Command::new(require_tool("docker-registry"))
            .arg("serve")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("could not spawn docker-registry: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + REGISTRY_START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("child just spawned");
            if let Some(status) = child.try_wait().expect("wait for registry") {
                self.child = None;
                return Err(format!("docker-registry exited early ({status})"));
            }
            if let Ok(resp) = http_request(&self.addr, "GET", "/v2/", None, &[], b"") {
                if resp.status == 200 || resp.status == 401 {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "GET /v2/ did not answer 200/401 within {REGISTRY_START_TIMEOUT:?}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the registry now (to test "registry is down"). `addr` keeps
    /// pointing at the now-closed port. Idempotent.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the registry again on the same address with the same storage,
    /// after [`Registry::stop`]. Panics if it does not come up.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(e) = self.spawn_and_wait() {
            panic!(
                "{}",
                self.failure(&format!("docker-registry did not restart: {e}"))
            );
        }
    }

    /// Whether the registry process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// Credentials if started with [`Registry::start_with_htpasswd`].
    pub fn creds(&self) -> Option<(&str, &str)> {
        self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// `127.0.0.1:PORT/<repo_and_tag>`, e.g. `reference("team/app:1.2")`.
    pub fn reference(&self, repo_and_tag: &str) -> String {
        format!("{}/{}", self.addr, repo_and_tag)
    }

    /// skopeo/containers transport form: `docker://127.0.0.1:PORT/<repo_and_tag>`.
    pub fn docker_ref(&self, repo_and_tag: &str) -> String {
        format!("docker://{}", self.reference(repo_and_tag))
    }

    /// Raw HTTP request to this registry, with its credentials (if any).
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        http_request(&self.addr, method, path, self.creds(), headers, body)
            .unwrap_or_else(|e| panic!("{}", self.failure(&e)))
    }

    /// Pushes `bytes` as a blob of `repo` as a client does (POST an upload, then PUT
    /// it with its digest); returns the digest.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256_digest(bytes);
        let started = self.http("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
        assert_eq!(started.status, 202, "{}", started.text());
        let location = started
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.clone())
            .unwrap();
        let path = location
            .strip_prefix(&format!("http://{}", self.addr))
            .unwrap_or(&location);
        let sep = if path.contains('?') { '&' } else { '?' };
        let done = self.http(
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            bytes,
        );
        assert_eq!(done.status, 201, "{}", done.text());
        digest
    }

    /// PUTs `bytes` as a manifest of `media_type` under `reference` (a tag or a
    /// digest) in `repo`, as the registry stores it (as sent).
    pub fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, bytes: &[u8]) {
        let put = self.http(
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            bytes,
        );
        assert_eq!(put.status, 201, "{}", put.text());
    }

    /// The registry's storage folder (`docker/registry/v2/…` below it).
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The registry's config file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yml")
    }

    /// File receiving the registry's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The last `lines` lines of the registry log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(cannot read registry log: {e})"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A panic message: `what`, plus where the registry is and its log tail.
    pub fn failure(&self, what: &str) -> String {
        format!(
            "\n{what}\n--- docker-registry at {} (auth: {}), last {LOG_TAIL_LINES} log lines of {} ---\n{}\n",
            self.addr,
            if self.creds.is_some() { "htpasswd" } else { "none" },
            self.log_path().display(),
            self.log_tail(LOG_TAIL_LINES)
        )
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A CNCF registry serving HTTPS on 127.0.0.1 with a certificate from a private CA
/// made here with openssl; killed on drop.
pub struct TlsRegistry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    dir: TempDir,
    child: Child,
}

impl TlsRegistry {
    /// Makes the CA and the certificate, starts the registry, and waits until it
    /// answers over TLS.
    pub fn start() -> TlsRegistry {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        private_ca(d);
        fs::create_dir(d.join("certs")).unwrap();
        fs::copy(d.join("ca.crt"), d.join("certs/ca.crt")).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        fs::write(
            d.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {data}\n\
                 http:\n  addr: {addr}\n  secret: tls-test\n  tls:\n    certificate: {crt}\n    key: {key}\n",
                data = d.join("data").display(),
                crt = d.join("srv.crt").display(),
                key = d.join("srv.key").display(),
            ),
        )
        .unwrap();
        let child = Command::new(require_tool("docker-registry"))
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(require_tool("curl"))
                .args(["-sf", "--cacert"])
                .arg(d.join("ca.crt"))
                .arg(format!("https://{addr}/v2/"))
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "TLS registry did not start");
            thread::sleep(Duration::from_millis(100));
        }
        TlsRegistry { addr, dir, child }
    }

    /// The private CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// sha256 of what skopeo, trusting only our CA, reads at `reference`.
    pub fn digest(&self, reference: &str) -> String {
        let out = run(skopeo()
            .args(["inspect", "--raw", "--no-creds", "--cert-dir"])
            .arg(self.dir.path().join("certs"))
            .arg(format!("docker://{reference}")));
        sha256_digest(&out.stdout)
    }
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private CA made with openssl in `d`: `ca.crt` (and `ca.key`), and a server
/// certificate it signed for `IP:127.0.0.1`, `srv.crt` with its key `srv.key`.
pub fn private_ca(d: &Path) {
    let openssl = |args: &[&str]| {
        run(tool("openssl").current_dir(d).args(args));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=gapbundle-test-ca",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    fs::write(
        d.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.crt",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
}
