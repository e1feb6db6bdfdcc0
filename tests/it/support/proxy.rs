//! A real HTTP proxy on loopback: Debian's tinyproxy, on a free 127.0.0.1 port,
//! logging every request it forwards (`LogLevel Info`) to a file the tests read.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{free_port, require_tool};

/// tinyproxy in the foreground; killed on drop.
pub struct Tinyproxy {
    /// `http://127.0.0.1:PORT`, for HTTP_PROXY and HTTPS_PROXY.
    pub url: String,
    dir: TempDir,
    child: Child,
}

impl Tinyproxy {
    /// Starts tinyproxy and waits until it accepts connections.
    pub fn start() -> Tinyproxy {
        let bin = require_tool("tinyproxy");
        let dir = tempfile::Builder::new()
            .prefix("gapbundle-tinyproxy-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        // No ConnectPort line: CONNECT to every port (registries are not on 443 here).
        fs::write(
            dir.path().join("tinyproxy.conf"),
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 120\nLogFile \"{}\"\nLogLevel Info\nMaxClients 50\n",
                log.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .arg("-d")
            .arg("-c")
            .arg(dir.path().join("tinyproxy.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn tinyproxy");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "tinyproxy exited at start ({status}); its log:\n{}",
                    fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tinyproxy did not start on port {port}"
            );
            thread::sleep(Duration::from_millis(50));
        }
        Tinyproxy {
            url: format!("http://127.0.0.1:{port}"),
            dir,
            child,
        }
    }

    /// The log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("tinyproxy.log")
    }

    /// What the proxy logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
