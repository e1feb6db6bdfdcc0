//! Shared support for gapbundle's integration tests: real services, real
//! fixture images, and independent checks from the outside.
//!
//! Why this exists: gapbundle's job is to move OCI images between real
//! registries and hosts that have no network. Mocked registries would only
//! prove that gapbundle agrees with our own idea of the distribution API, so
//! the tests run the real implementations instead:
//!
//! * [`Registry`] starts the real CNCF distribution server (`docker-registry
//!   serve`, optionally with bcrypt htpasswd auth) on a free 127.0.0.1 port
//!   with its storage in a temporary folder, and kills it on drop.
//! * [`push_fixture_images`] pushes images built with the real `umoci` to a
//!   registry with the real `skopeo`: two images sharing one base layer and a
//!   two-platform OCI image index.
//! * [`skopeo_digest`], [`skopeo_manifest`] and friends check results with a
//!   tool that shares no code with gapbundle; [`http_request`] speaks raw
//!   HTTP/1.1 over std TCP for the same reason.
//!
//! The fixture images use fixed file contents, mtimes and creation times, so
//! with a given umoci version they have the same digests in every run; the
//! tests should still read digests from [`Fixtures`], never hard-code them.
//!
//! Tests must never skip silently: when a tool is missing, or a tool fails,
//! these helpers panic with the tool's stderr and point at
//! `scripts/install-test-deps`, which installs everything on a fresh Debian 12
//! machine. `scripts/test` also exports `GAPBUNDLE_REQUIRE_SERVICES=1` (see
//! [`services_required`]).
//!
//! Use it from an integration test (`tests/foo.rs`) with `mod support;`.
//! Only integration tests may include this module, because
//! [`gapbundle_bin`] reads `CARGO_BIN_EXE_gapbundle` and the fixture cache
//! lives under `CARGO_TARGET_TMPDIR`, which cargo sets only for them.
//! Nothing here ever talks to any address other than 127.0.0.1.

// Every test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub mod forge;

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// What to tell a developer whose machine lacks a tool.
pub const INSTALL_HINT: &str =
    "run `scripts/install-test-deps` (as root, Debian 12) to install the real services the tests need";

/// `NIX_CONFIG` value for tests that run Nix: flakes on, and no substituters,
/// so Nix does not spend ~5 s per build trying to reach cache.nixos.org.
pub const NIX_CONFIG: &str = "experimental-features = nix-command flakes\nsubstituters =";

/// OCI media type of an image index.
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// OCI media type of an image manifest.
pub const OCI_MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// True when `GAPBUNDLE_REQUIRE_SERVICES=1` (set by `scripts/test` and CI).
///
/// The helpers in this module panic on a missing tool either way; this is for
/// tests that want to state the policy explicitly.
pub fn services_required() -> bool {
    std::env::var("GAPBUNDLE_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Path of the `gapbundle` binary built by cargo for this test run.
///
/// `CARGO_BIN_EXE_gapbundle` is set at compile time only for integration
/// tests (and benches), which is where this module is compiled, so a plain
/// function works; it would not compile if included from anywhere else.
pub fn gapbundle_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gapbundle"))
}

/// A `Command` running the `gapbundle` binary under test.
pub fn gapbundle() -> Command {
    Command::new(gapbundle_bin())
}

/// `gapbundle create -f SPEC -o OUT --key KEY --cache CACHE`, the command line
/// most tests start from; callers add the rest (`--insecure-registry`,
/// `--quiet`, `--locked`, an environment).
pub fn create_cmd(spec: &Path, out: &Path, key: &Path, cache: &Path) -> Command {
    let mut c = create_unsigned_cmd(spec, out, cache);
    c.arg("--key").arg(key);
    c
}

/// `gapbundle import BUNDLE --trust KEY --k3s-root ROOT`, the import command line
/// the K3s and fleet tests start from; callers add the targets and output flags.
pub fn import_cmd(bundle: &Path, trust: &Path, k3s_root: &Path) -> Command {
    let mut c = gapbundle();
    c.arg("import")
        .arg(bundle)
        .arg("--trust")
        .arg(trust)
        .arg("--k3s-root")
        .arg(k3s_root);
    c
}

/// [`create_cmd`] without `--key`: an unsigned bundle, or a run that fails
/// before signing matters.
pub fn create_unsigned_cmd(spec: &Path, out: &Path, cache: &Path) -> Command {
    let mut c = gapbundle();
    c.arg("create")
        .arg("-f")
        .arg(spec)
        .arg("-o")
        .arg(out)
        .arg("--cache")
        .arg(cache);
    c
}

// ---------------------------------------------------------------------------
// Running tools
// ---------------------------------------------------------------------------

/// Finds `name` on `PATH`. Panics loudly (naming the tool and
/// `scripts/install-test-deps`) if it is missing: tests never skip.
pub fn require_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if let Ok(meta) = fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return candidate;
            }
        }
    }
    panic!(
        "\n\n*** required tool `{name}` is not on PATH ***\n\
         The gapbundle tests drive the real `{name}` and never skip.\n\
         Fix: {INSTALL_HINT}.\nPATH was: {}\n\n",
        path.to_string_lossy()
    );
}

/// A `Command` for the tool `name`, resolved with [`require_tool`].
pub fn tool(name: &str) -> Command {
    Command::new(require_tool(name))
}

/// Human-readable command line, for panic messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&shell_quote(arg));
    }
    s
}

fn shell_quote(arg: &OsStr) -> String {
    let a = arg.to_string_lossy();
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c))
    {
        a.into_owned()
    } else {
        format!("'{}'", a.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` to completion; `Err` carries the command line, exit status,
/// stdout and stderr when it cannot start or exits non-zero.
pub fn try_run(cmd: &mut Command) -> Result<Output, String> {
    let line = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not start `{line}`: {e}\n{INSTALL_HINT}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "`{line}` failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

/// Runs `cmd` and panics with its stdout and stderr unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    try_run(cmd).unwrap_or_else(|e| panic!("\n{e}\n"))
}

/// Runs `cmd` (must succeed) and returns its stdout as UTF-8.
pub fn run_stdout(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd).stdout).expect("tool printed non-UTF-8 output")
}

/// `sha256:<hex>` of `bytes`, the OCI digest form.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in Sha256::digest(bytes).iter() {
        write!(s, "{b:02x}").unwrap();
    }
    s
}

// ---------------------------------------------------------------------------
// Raw HTTP to the local registry
// ---------------------------------------------------------------------------

/// A response read by [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Header names (lower-cased) and values, in order.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request to `addr` ("127.0.0.1:PORT") with `Connection:
/// close`; `creds` adds a basic `Authorization` header. Plain std TCP, so it
/// shares nothing with gapbundle's HTTP stack. `Err` on connection or
/// protocol errors (e.g. the registry is down).
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    creds: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<HttpResponse, String> {
    assert!(
        addr.starts_with("127.0.0.1:"),
        "tests only talk to 127.0.0.1, not {addr}"
    );
    let timeout = Duration::from_secs(30);
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| format!("bad addr {addr}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         User-Agent: gapbundle-tests\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some((user, pass)) = creds {
        let token = base64_encode(format!("{user}:{pass}").as_bytes());
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .and_then(|_| stream.write_all(body))
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    parse_http_response(&raw, method == "HEAD").map_err(|e| format!("{method} {addr}{path}: {e}"))
}

fn parse_http_response(raw: &[u8], head: bool) -> Result<HttpResponse, String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers in response")?;
    let head_text = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if head {
        body.clear();
    } else if chunked {
        body = dechunk(&body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// Standard base64 with padding (for basic auth headers).
pub fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Registry
// ---------------------------------------------------------------------------

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
const LOG_TAIL_LINES: usize = 40;

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

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

    /// The temporary folder holding config, htpasswd, log and `data/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's filesystem storage root.
    pub fn storage_dir(&self) -> PathBuf {
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

// ---------------------------------------------------------------------------
// skopeo checks
// ---------------------------------------------------------------------------

/// A `skopeo` command with `--insecure-policy`, so a restrictive
/// `policy.json` on the developer's machine cannot change the results.
pub fn skopeo() -> Command {
    let mut cmd = tool("skopeo");
    cmd.arg("--insecure-policy");
    cmd
}

fn inspect_cmd(transport_ref: &str, creds: Option<(&str, &str)>, extra: &[&str]) -> Command {
    let mut cmd = skopeo();
    cmd.args(["inspect", "--raw"]).args(extra);
    if transport_ref.starts_with("docker://") {
        cmd.arg("--tls-verify=false");
        match creds {
            Some((u, p)) => cmd.arg(format!("--creds={u}:{p}")),
            None => cmd.arg("--no-creds"),
        };
    }
    cmd.arg(transport_ref);
    cmd
}

/// `skopeo inspect --raw` of a transport reference (`docker://…`,
/// `oci:DIR:TAG`, `oci-archive:PATH`, `docker-archive:PATH`, …), without
/// panicking: `Err` carries skopeo's stderr. `docker://` refs use plain HTTP,
/// and `creds` (or anonymous access when `None`).
pub fn try_skopeo_raw(transport_ref: &str, creds: Option<(&str, &str)>) -> Result<Vec<u8>, String> {
    try_run(&mut inspect_cmd(transport_ref, creds, &[])).map(|o| o.stdout)
}

/// Like [`try_skopeo_raw`] but panics with skopeo's stderr on failure.
pub fn skopeo_raw(transport_ref: &str, creds: Option<(&str, &str)>) -> Vec<u8> {
    try_skopeo_raw(transport_ref, creds).unwrap_or_else(|e| panic!("\n{e}\n"))
}

/// Digest (`sha256:…`) of the top-level manifest or index that skopeo sees at
/// `transport_ref`, accessed anonymously. For the docker-archive transport
/// this is the manifest skopeo synthesizes (the archive stores none).
pub fn skopeo_digest(transport_ref: &str) -> String {
    skopeo_digest_with_creds(transport_ref, None)
}

/// [`skopeo_digest`] with registry credentials.
pub fn skopeo_digest_with_creds(transport_ref: &str, creds: Option<(&str, &str)>) -> String {
    sha256_digest(&skopeo_raw(transport_ref, creds))
}

/// The raw manifest or index at `transport_ref`, parsed as JSON.
pub fn skopeo_manifest(transport_ref: &str, creds: Option<(&str, &str)>) -> Value {
    let raw = skopeo_raw(transport_ref, creds);
    serde_json::from_slice(&raw).unwrap_or_else(|e| {
        panic!(
            "skopeo returned non-JSON for {transport_ref}: {e}\n{}",
            String::from_utf8_lossy(&raw)
        )
    })
}

/// The image config (`skopeo inspect --config --raw`) at `transport_ref`.
pub fn skopeo_config(transport_ref: &str, creds: Option<(&str, &str)>) -> Value {
    let out = run(&mut inspect_cmd(transport_ref, creds, &["--config"])).stdout;
    serde_json::from_slice(&out).unwrap_or_else(|e| {
        panic!(
            "skopeo returned a non-JSON config for {transport_ref}: {e}\n{}",
            String::from_utf8_lossy(&out)
        )
    })
}

/// Layer digests of an image manifest, in order.
pub fn manifest_layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("manifest has no layers array: {manifest}"))
        .iter()
        .map(|l| str_field(l, "digest"))
        .collect()
}

/// Config digest of an image manifest.
pub fn manifest_config_digest(manifest: &Value) -> String {
    str_field(&manifest["config"], "digest")
}

/// `(os, architecture, manifest digest)` of each entry of an image index.
pub fn index_platforms(index: &Value) -> Vec<(String, String, String)> {
    index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("index has no manifests array: {index}"))
        .iter()
        .map(|m| {
            (
                str_field(&m["platform"], "os"),
                str_field(&m["platform"], "architecture"),
                str_field(m, "digest"),
            )
        })
        .collect()
}

fn str_field(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("missing string field {key:?} in {v}"))
        .to_string()
}

// ---------------------------------------------------------------------------
// Fixture images
// ---------------------------------------------------------------------------

/// Tags in the shared fixture OCI layout (see [`fixture_layout`]).
pub mod tags {
    /// linux/amd64 image: base layer + `/app/VERSION`.
    pub const APP: &str = "app-1.2";
    /// linux/amd64 image: base layer + `/tool/VERSION`.
    pub const TOOL: &str = "tool-0.3";
    /// OCI image index over [`MULTI_AMD64`] and [`MULTI_ARM64`].
    pub const MULTI: &str = "multi-1.0";
    /// linux/amd64 member of the multi-arch index.
    pub const MULTI_AMD64: &str = "multi-amd64";
    /// linux/arm64 member of the multi-arch index.
    pub const MULTI_ARM64: &str = "multi-arm64";
    /// Tiny single-layer linux/amd64 image, source of the archive fixtures.
    pub const SMALL: &str = "small";
}

/// Size of the shared base layer's payload file.
pub const BASE_BLOB_SIZE: usize = 1 << 20;

/// Fixed mtime for fixture files so umoci produces the same layer bytes
/// every time (the base layer digest is stable across test runs).
const FIXTURE_MTIME: Duration = Duration::from_secs(1_600_000_000);
/// The same instant, for the config's `created` and history entries, so the
/// configs and manifests are reproducible too (for a given umoci version).
const FIXTURE_CREATED: &str = "2020-09-13T12:26:40Z";

/// One single-platform image as pushed to a registry, with digests as the
/// registry reports them (via skopeo).
#[derive(Debug, Clone)]
pub struct FixtureImage {
    /// `127.0.0.1:PORT/team/app:1.2`.
    pub reference: String,
    /// `team/app`.
    pub repository: String,
    /// `1.2`.
    pub tag: String,
    /// Digest of the manifest (`sha256:…`).
    pub manifest_digest: String,
    /// Digest of the image config blob.
    pub config_digest: String,
    /// Layer digests, base first.
    pub layer_digests: Vec<String>,
}

impl FixtureImage {
    /// `127.0.0.1:PORT/team/app@sha256:…`.
    pub fn reference_by_digest(&self) -> String {
        let host = self.reference.split('/').next().unwrap_or_default();
        format!("{host}/{}@{}", self.repository, self.manifest_digest)
    }

    /// `docker://` + [`FixtureImage::reference`], for skopeo.
    pub fn docker_ref(&self) -> String {
        format!("docker://{}", self.reference)
    }
}

/// One platform's entry of the multi-arch fixture.
#[derive(Debug, Clone)]
pub struct PlatformImage {
    /// `linux`.
    pub os: String,
    /// `amd64` or `arm64`.
    pub architecture: String,
    /// Digest of this platform's image manifest.
    pub manifest_digest: String,
    /// Digest of this platform's config blob.
    pub config_digest: String,
    /// This platform's layer digests.
    pub layer_digests: Vec<String>,
    /// `127.0.0.1:PORT/team/multi@sha256:…` (this platform's manifest).
    pub reference_by_digest: String,
}

/// The multi-arch fixture (`team/multi:1.0`, an OCI image index).
#[derive(Debug, Clone)]
pub struct MultiArchImage {
    /// `127.0.0.1:PORT/team/multi:1.0`.
    pub reference: String,
    /// `team/multi`.
    pub repository: String,
    /// `1.0`.
    pub tag: String,
    /// Digest of the index.
    pub index_digest: String,
    /// The index's entries, in index order (amd64, then arm64).
    pub platforms: Vec<PlatformImage>,
}

impl MultiArchImage {
    /// The entry for `architecture` (panics if absent).
    pub fn platform(&self, architecture: &str) -> &PlatformImage {
        self.platforms
            .iter()
            .find(|p| p.architecture == architecture)
            .unwrap_or_else(|| panic!("no {architecture} in {:?}", self.platforms))
    }

    /// `docker://` + [`MultiArchImage::reference`], for skopeo.
    pub fn docker_ref(&self) -> String {
        format!("docker://{}", self.reference)
    }
}

/// Everything [`push_fixture_images`] put on one registry.
#[derive(Debug, Clone)]
pub struct Fixtures {
    /// `team/app:1.2` (linux/amd64).
    pub app: FixtureImage,
    /// `team/tool:0.3` (linux/amd64), sharing its base layer with `app`.
    pub tool: FixtureImage,
    /// `team/multi:1.0`, index of linux/amd64 + linux/arm64.
    pub multi: MultiArchImage,
    /// Digest of the ~1 MiB base layer shared by `app` and `tool`.
    pub base_layer_digest: String,
}

struct FixtureLayout {
    // Never dropped (it lives in a static): the next test process removes it,
    // see `prune_dead_fixture_dirs`.
    _dir: TempDir,
    layout: PathBuf,
}

const FIXTURE_DIR_PREFIX: &str = "gapbundle-fixtures-";

/// The shared fixture OCI layout, built once per test process with umoci
/// (tags in [`tags`]). Treat it as read-only: several tests use it.
/// It lives under cargo's `CARGO_TARGET_TMPDIR` (`target/tmp`), in a folder
/// named after this process's pid; folders of dead processes are removed.
pub fn fixture_layout() -> &'static Path {
    static LAYOUT: OnceLock<FixtureLayout> = OnceLock::new();
    &LAYOUT.get_or_init(build_fixture_layout).layout
}

fn fixture_tmp_root() -> PathBuf {
    let root = option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    fs::create_dir_all(&root).expect("create fixture tmp root");
    root
}

/// Statics are never dropped, so each test process leaves its fixture folder
/// behind; remove those whose process (pid in the name) is gone.
fn prune_dead_fixture_dirs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(FIXTURE_DIR_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn umoci(args: &[&str]) {
    run(tool("umoci").args(args));
}

/// Writes `bytes` to `path` with mode 0644 and a fixed mtime, so umoci
/// layers containing it are byte-for-byte reproducible.
fn write_fixture_file(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod fixture file");
    File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::UNIX_EPOCH + FIXTURE_MTIME))
        .expect("set fixture file mtime");
}

/// `len` pseudo-random (incompressible) but deterministic bytes (xorshift64*).
pub fn deterministic_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `umoci new` + set platform and a fixed creation time (`--no-history`
/// keeps the config small).
fn umoci_new_image(image: &str, arch: &str) {
    umoci(&["new", "--image", image]);
    umoci(&[
        "config",
        "--no-history",
        "--image",
        image,
        "--os",
        "linux",
        "--architecture",
        arch,
        "--created",
        FIXTURE_CREATED,
    ]);
}

/// `umoci insert` of a file with the given content at `target`.
fn umoci_insert(staging: &Path, image: &str, new_tag: Option<&str>, target: &str, content: &[u8]) {
    let src = staging.join(target.trim_start_matches('/').replace('/', "_"));
    write_fixture_file(&src, content);
    let src = src.to_str().expect("utf-8 temp path");
    let mut args = vec![
        "insert",
        "--history.created",
        FIXTURE_CREATED,
        "--history.created_by",
        "gapbundle tests/support",
        "--image",
        image,
    ];
    if let Some(t) = new_tag {
        args.extend(["--tag", t]);
    }
    args.extend([src, target]);
    umoci(&args);
}

/// Reads a layout's `index.json`.
pub fn read_layout_index(layout: &Path) -> Value {
    let path = layout.join("index.json");
    let text = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&text).expect("index.json is JSON")
}

/// Descriptor tagged `tag` (annotation `org.opencontainers.image.ref.name`)
/// in a layout's `index.json`.
pub fn layout_descriptor(layout: &Path, tag: &str) -> Value {
    let index = read_layout_index(layout);
    index["manifests"]
        .as_array()
        .expect("index.json manifests")
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .cloned()
        .unwrap_or_else(|| panic!("tag {tag} not in {}/index.json: {index}", layout.display()))
}

fn build_fixture_layout() -> FixtureLayout {
    let root = fixture_tmp_root();
    prune_dead_fixture_dirs(&root);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{FIXTURE_DIR_PREFIX}{}-", std::process::id()))
        .tempdir_in(&root)
        .expect("create fixture tempdir");
    let staging = dir.path().join("staging");
    fs::create_dir(&staging).expect("mkdir staging");
    let layout = dir.path().join("layout");
    let l = layout.to_str().expect("utf-8 temp path").to_string();
    let img = |tag: &str| format!("{l}:{tag}");

    umoci(&["init", "--layout", &l]);

    // Base: one ~1 MiB incompressible layer, built once; app and tool are both
    // derived from this tag, so their first layer is the very same blob.
    umoci_new_image(&img("base"), "amd64");
    let base_bytes = deterministic_bytes(0x6761_7062_756e_646c, BASE_BLOB_SIZE);
    umoci_insert(&staging, &img("base"), None, "/base/blob.bin", &base_bytes);
    umoci_insert(
        &staging,
        &img("base"),
        Some(tags::APP),
        "/app/VERSION",
        b"app 1.2\n",
    );
    umoci_insert(
        &staging,
        &img("base"),
        Some(tags::TOOL),
        "/tool/VERSION",
        b"tool 0.3\n",
    );

    // Multi-arch: two single-platform images with different config and layer,
    // then an OCI index over them, tagged in the same layout.
    let mut members = Vec::new();
    for (tag, arch) in [(tags::MULTI_AMD64, "amd64"), (tags::MULTI_ARM64, "arm64")] {
        umoci_new_image(&img(tag), arch);
        let content = format!("multi 1.0 for linux/{arch}\n");
        umoci_insert(
            &staging,
            &img(tag),
            None,
            "/etc/fixture-arch",
            content.as_bytes(),
        );
        let desc = layout_descriptor(&layout, tag);
        members.push(json!({
            "mediaType": OCI_MANIFEST_MEDIA_TYPE,
            "digest": desc["digest"],
            "size": desc["size"],
            "platform": {"architecture": arch, "os": "linux"},
        }));
    }
    let index_blob = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX_MEDIA_TYPE,
        "manifests": members,
    }))
    .unwrap();
    let index_digest = sha256_digest(&index_blob);
    let blob_path = layout
        .join("blobs/sha256")
        .join(index_digest.trim_start_matches("sha256:"));
    fs::write(&blob_path, &index_blob).expect("write index blob");

    // Small image for the archive fixtures.
    umoci_new_image(&img(tags::SMALL), "amd64");
    umoci_insert(
        &staging,
        &img(tags::SMALL),
        None,
        "/hello.txt",
        b"hello from gapbundle\n",
    );

    // Tag the index last: umoci is done with the layout by now.
    let mut index = read_layout_index(&layout);
    index["manifests"]
        .as_array_mut()
        .expect("index.json manifests")
        .push(json!({
            "mediaType": OCI_INDEX_MEDIA_TYPE,
            "digest": index_digest,
            "size": index_blob.len(),
            "annotations": {"org.opencontainers.image.ref.name": tags::MULTI},
        }));
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .expect("rewrite index.json");

    FixtureLayout { _dir: dir, layout }
}

/// `skopeo copy` from the fixture layout to `reg`, panicking with skopeo's
/// stderr and the registry log on failure.
fn push_tag(reg: &Registry, creds: Option<(&str, &str)>, tag: &str, dest: &str, all: bool) {
    let mut cmd = skopeo();
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    match creds {
        Some((u, p)) => cmd.arg(format!("--dest-creds={u}:{p}")),
        None => cmd.arg("--dest-no-creds"),
    };
    cmd.arg(format!("oci:{}:{tag}", fixture_layout().display()));
    cmd.arg(format!("docker://{dest}"));
    if let Err(e) = try_run(&mut cmd) {
        panic!(
            "{}",
            reg.failure(&format!("pushing fixture {tag} failed:\n{e}"))
        );
    }
}

fn inspect_pushed(
    reg: &Registry,
    creds: Option<(&str, &str)>,
    reference: &str,
) -> (Vec<u8>, Value) {
    let raw = try_skopeo_raw(&format!("docker://{reference}"), creds)
        .unwrap_or_else(|e| panic!("{}", reg.failure(&format!("inspecting {reference}:\n{e}"))));
    let v = serde_json::from_slice(&raw).expect("manifest JSON");
    (raw, v)
}

fn pushed_image(
    reg: &Registry,
    creds: Option<(&str, &str)>,
    repository: &str,
    tag: &str,
    layout_tag: &str,
) -> FixtureImage {
    let reference = format!("{}/{repository}:{tag}", reg.addr);
    push_tag(reg, creds, layout_tag, &reference, false);
    let (raw, manifest) = inspect_pushed(reg, creds, &reference);
    FixtureImage {
        reference,
        repository: repository.to_string(),
        tag: tag.to_string(),
        manifest_digest: sha256_digest(&raw),
        config_digest: manifest_config_digest(&manifest),
        layer_digests: manifest_layer_digests(&manifest),
    }
}

/// Pushes the fixture images to `reg` (pass `reg.creds()` for an htpasswd
/// registry, or other creds to test rejection):
///
/// * `team/app:1.2`, `team/tool:0.3`: linux/amd64, sharing one ~1 MiB base
///   layer, plus one small layer each;
/// * `team/multi:1.0`: OCI image index of linux/amd64 and linux/arm64
///   (different config and layer per platform), pushed with `skopeo copy --all`.
///
/// Digests are read back from the registry with skopeo. Panics (with the
/// registry log) if anything fails or the base layer is not shared.
pub fn push_fixture_images(reg: &Registry, creds: Option<(&str, &str)>) -> Fixtures {
    let app = pushed_image(reg, creds, "team/app", "1.2", tags::APP);
    let tool = pushed_image(reg, creds, "team/tool", "0.3", tags::TOOL);

    let reference = format!("{}/team/multi:1.0", reg.addr);
    push_tag(reg, creds, tags::MULTI, &reference, true);
    let (raw, index) = inspect_pushed(reg, creds, &reference);
    let platforms = index_platforms(&index)
        .into_iter()
        .map(|(os, architecture, digest)| {
            let by_digest = format!("{}/team/multi@{digest}", reg.addr);
            let (raw, manifest) = inspect_pushed(reg, creds, &by_digest);
            assert_eq!(
                sha256_digest(&raw),
                digest,
                "registry served a different manifest"
            );
            PlatformImage {
                os,
                architecture,
                manifest_digest: digest,
                config_digest: manifest_config_digest(&manifest),
                layer_digests: manifest_layer_digests(&manifest),
                reference_by_digest: by_digest,
            }
        })
        .collect();
    let multi = MultiArchImage {
        reference,
        repository: "team/multi".into(),
        tag: "1.0".into(),
        index_digest: sha256_digest(&raw),
        platforms,
    };

    let base_layer_digest = app.layer_digests[0].clone();
    assert_eq!(
        tool.layer_digests[0], base_layer_digest,
        "fixture bug: app and tool do not share their base layer"
    );
    assert_eq!(
        app.layer_digests.len(),
        2,
        "app layers: {:?}",
        app.layer_digests
    );
    assert_eq!(
        tool.layer_digests.len(),
        2,
        "tool layers: {:?}",
        tool.layer_digests
    );
    Fixtures {
        app,
        tool,
        multi,
        base_layer_digest,
    }
}

// ---------------------------------------------------------------------------
// Local layout and archive fixtures
// ---------------------------------------------------------------------------

/// A small image on disk, outside any registry.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// Layout directory or archive file.
    pub path: PathBuf,
    /// containers-transport reference: `oci:DIR:latest`,
    /// `oci-archive:PATH`, or `docker-archive:PATH`.
    pub transport_ref: String,
    /// Manifest digest as skopeo sees it. For docker-archive this is the
    /// docker schema 2 manifest skopeo synthesizes from the archive.
    pub manifest_digest: String,
}

/// Builds a fresh small OCI layout at `dir` (which must not exist, or be an
/// empty directory) with umoci: one linux/amd64 image tagged `latest` with a
/// single layer holding `/hello.txt`. Fresh per call, so tests may modify it.
pub fn oci_layout_fixture(dir: &Path) -> LocalImage {
    if dir.exists() {
        fs::remove_dir(dir).unwrap_or_else(|e| {
            panic!(
                "oci_layout_fixture: {} must be absent or empty: {e}",
                dir.display()
            )
        });
    }
    let staging = tempfile::tempdir().expect("staging tempdir");
    let l = dir.to_str().expect("utf-8 path");
    let image = format!("{l}:latest");
    umoci(&["init", "--layout", l]);
    umoci_new_image(&image, "amd64");
    umoci_insert(
        staging.path(),
        &image,
        None,
        "/hello.txt",
        b"hello from gapbundle\n",
    );
    let transport_ref = format!("oci:{l}:latest");
    LocalImage {
        path: dir.to_path_buf(),
        manifest_digest: skopeo_digest(&transport_ref),
        transport_ref,
    }
}

fn copy_small_to(path: &Path, dest: &str) {
    assert!(
        !path.exists(),
        "archive fixture destination {} already exists (skopeo refuses to \
         add to an existing docker-archive)",
        path.display()
    );
    let src = format!("oci:{}:{}", fixture_layout().display(), tags::SMALL);
    run(skopeo().args(["copy", "--quiet", &src, dest]));
}

/// Writes an oci-archive tar of a small image to `path`, which must not exist
/// (skopeo copy `oci:…` → `oci-archive:PATH`). The archive's `index.json`
/// has no tag annotation.
pub fn oci_archive_fixture(path: &Path) -> LocalImage {
    copy_small_to(path, &format!("oci-archive:{}", path.display()));
    let transport_ref = format!("oci-archive:{}", path.display());
    LocalImage {
        path: path.to_path_buf(),
        manifest_digest: skopeo_digest(&transport_ref),
        transport_ref,
    }
}

/// Writes a docker-archive (`docker save` format) tar of a small image to
/// `path`, which must not exist. Note: skopeo normalizes the name, so its
/// `manifest.json` says `"RepoTags":["docker.io/example/legacy:1.0"]` (real
/// `docker save` would write `example/legacy:1.0`), and its layers are stored
/// uncompressed.
pub fn docker_archive_fixture(path: &Path) -> LocalImage {
    copy_small_to(
        path,
        &format!("docker-archive:{}:example/legacy:1.0", path.display()),
    );
    let transport_ref = format!("docker-archive:{}", path.display());
    LocalImage {
        path: path.to_path_buf(),
        manifest_digest: skopeo_digest(&transport_ref),
        transport_ref,
    }
}

// ---------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// A work folder with a key pair
// ---------------------------------------------------------------------------

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
